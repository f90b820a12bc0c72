//! Install progress: a bar on a terminal, a log line every few seconds otherwise, JSON
//! events (one object per line) with `--json`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diffota_cli::{errln, outln};

use crate::plan::PlanSummary;
use crate::slot::Slot;

pub enum Event<'a> {
    Started {
        version: &'a str,
        slot: Slot,
        /// The plan of the `rootfs` image (of the release's only image).
        plan: &'a PlanSummary,
        /// Bytes of every image the install writes: `plan.image_bytes`, plus the slot
        /// group's other images and the single-copy images their targets lack.
        total_bytes: u64,
        /// Each image the install writes, in order, with its bytes (empty for a release of
        /// one image).
        images: &'a [(&'a str, u64)],
    },
    /// The install begins to write this image of a release of several (one of `images`).
    Image {
        name: &'a str,
    },
    Written {
        bytes: u64,
    },
    Verifying,
    Finished,
    Message(&'a str),
}

pub trait Progress: Sync {
    fn event(&self, event: Event<'_>);
    /// Asked between chunks: true stops the install (`InstallError::Cancelled`), leaving
    /// what was written for the next install of the same release to find in place.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Passes events on to `inner` and remembers the release an install began to write, for
/// the report of an install that fails after that.
pub struct VersionSeen<'a> {
    inner: &'a dyn Progress,
    version: Mutex<Option<String>>,
}

impl<'a> VersionSeen<'a> {
    pub fn new(inner: &'a dyn Progress) -> VersionSeen<'a> {
        VersionSeen {
            inner,
            version: Mutex::new(None),
        }
    }

    pub fn version(&self) -> Option<String> {
        self.version
            .lock()
            .expect("no progress holder panicked")
            .clone()
    }
}

impl Progress for VersionSeen<'_> {
    fn event(&self, event: Event<'_>) {
        if let Event::Started { version, .. } = &event {
            *self.version.lock().expect("no progress holder panicked") =
                Some((*version).to_owned());
        }
        self.inner.event(event);
    }

    fn cancelled(&self) -> bool {
        self.inner.cancelled()
    }
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn event(&self, _event: Event<'_>) {}
}

pub enum Style {
    Bar(indicatif::ProgressBar),
    Log { last: Mutex<Instant> },
    Json { last: Mutex<Instant> },
}

pub struct Reporter {
    style: Style,
    done: AtomicU64,
    total: AtomicU64,
}

impl Reporter {
    pub fn new(json: bool) -> Reporter {
        use std::io::IsTerminal;
        let style = if json {
            Style::Json {
                last: Mutex::new(Instant::now()),
            }
        } else if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            Style::Bar(bar)
        } else {
            Style::Log {
                last: Mutex::new(Instant::now()),
            }
        };
        Reporter {
            style,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    fn json(value: serde_json::Value) {
        outln!("{value}");
    }

    fn due(last: &Mutex<Instant>, every: Duration) -> bool {
        let mut last = last.lock().expect("progress lock");
        if last.elapsed() >= every {
            *last = Instant::now();
            true
        } else {
            false
        }
    }
}

impl Progress for Reporter {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started {
                version,
                slot,
                plan,
                total_bytes,
                images,
            } => {
                self.total.store(total_bytes, Ordering::Relaxed);
                let mut line = format!(
                    "installing {version} into slot {slot}: {} bytes, {} chunks local, {} to fetch ({} bytes in {} requests)",
                    plan.image_bytes, plan.local_chunks, plan.fetch_chunks, plan.fetch_bytes, plan.fetch_requests
                );
                if plan.in_place_chunks > 0 {
                    line.push_str(&format!(
                        "; {} of the local chunks are checked in place from the interrupted install, and fetched if they do not match",
                        plan.in_place_chunks
                    ));
                }
                match &self.style {
                    Style::Bar(bar) => {
                        bar.set_length(total_bytes);
                        bar.println(line);
                    }
                    Style::Log { .. } => errln!("{line}"),
                    Style::Json { .. } => {
                        let images: Vec<serde_json::Value> = images
                            .iter()
                            .map(|(name, bytes)| serde_json::json!({"name": name, "bytes": bytes}))
                            .collect();
                        Self::json(
                            serde_json::json!({"event": "install_started", "version": version, "slot": slot, "plan": plan, "total_bytes": total_bytes, "images": images}),
                        )
                    }
                }
            }
            Event::Image { name } => match &self.style {
                Style::Bar(bar) => bar.set_message(format!("image {name}")),
                Style::Log { .. } => errln!("writing image {name}"),
                Style::Json { .. } => {
                    Self::json(serde_json::json!({"event": "image", "name": name}))
                }
            },
            Event::Written { bytes } => {
                let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
                let total = self.total.load(Ordering::Relaxed);
                match &self.style {
                    Style::Bar(bar) => bar.set_position(done),
                    Style::Log { last } if Self::due(last, Duration::from_secs(5)) => {
                        errln!(
                            "progress: {done} of {total} bytes ({:.0}%)",
                            done as f64 * 100.0 / total.max(1) as f64
                        )
                    }
                    Style::Json { last } if Self::due(last, Duration::from_secs(1)) => Self::json(
                        serde_json::json!({"event": "progress", "done": done, "total": total}),
                    ),
                    _ => {}
                }
            }
            Event::Verifying => match &self.style {
                Style::Bar(bar) => bar.set_message("verifying"),
                Style::Log { .. } => errln!("verifying the written slot"),
                Style::Json { .. } => Self::json(serde_json::json!({"event": "verifying"})),
            },
            Event::Finished => {
                if let Style::Bar(bar) = &self.style {
                    bar.finish_and_clear();
                }
            }
            Event::Message(text) => match &self.style {
                Style::Bar(bar) => bar.println(text),
                Style::Log { .. } => errln!("{text}"),
                Style::Json { .. } => {
                    Self::json(serde_json::json!({"event": "message", "text": text}))
                }
            },
        }
    }
}
