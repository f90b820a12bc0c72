use std::sync::Mutex;

use anyhow::Result;
use diffota::install::{InstallOptions, Outcome};
use diffota::outcomes::{self, OutcomeReport, PendingInstall, Spool};
use diffota::progress::{Event, Progress, Reporter};
use diffota::slot::booted_slot;
use diffota::state::StateDir;

use super::{device, reboot_now, refresh_metrics, runtime, show, Session};
use crate::cli::ReleaseArgs;
use crate::exit::Exit;

/// Passes events on, remembering the version an install started to write.
struct Watched<'a> {
    inner: &'a dyn Progress,
    version: Mutex<Option<String>>,
}

impl Progress for Watched<'_> {
    fn event(&self, event: Event<'_>) {
        if let Event::Started { version, .. } = &event {
            *self.version.lock().expect("progress lock") = Some((*version).to_owned());
        }
        self.inner.event(event);
    }
}

pub fn run(
    session: &mut Session,
    release: &ReleaseArgs,
    options: InstallOptions,
    reboot: bool,
) -> Result<Exit> {
    let _lock = session.lock("install")?;
    let runtime = runtime()?;
    send_earlier_reports(session, &runtime);
    let keys = diffota::keys::trusted_keys(&session.config)?;
    let config = &session.config;
    let running = booted_slot(&config.boot.cmdline, &config.slots.a, &config.slots.b).ok();
    let from_version = running.and_then(|slot| {
        StateDir::new(&config.state_dir)
            .load()
            .ok()
            .and_then(|state| state.version_in(slot).map(str::to_owned))
    });
    let mut device = device(config, &keys, session.bootloader.as_mut())?;
    let device_id = device.device_id.clone();
    let reporter = Reporter::new(session.json);
    let watched = Watched {
        inner: &reporter,
        version: Mutex::new(None),
    };
    let result = runtime.block_on(diffota::install::install(
        &mut device,
        &release.target(config),
        options,
        &watched,
    ));
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            let error = anyhow::Error::from(error).context("installing");
            let report = OutcomeReport::of_failed_install(
                &device_id,
                from_version.as_deref(),
                watched.version.lock().expect("progress lock").as_deref(),
                format!("{error:#}"),
                diffota::system::now(),
            );
            if let Err(e) = outcomes::record(config, &report) {
                tracing::warn!(error = %e, "the failed install could not be recorded for its report");
            }
            refresh_metrics(session);
            return Err(error);
        }
    };
    if let Outcome::Installed(installed) = &outcome {
        let pending = PendingInstall {
            from_version,
            to_version: installed.version.clone(),
            slot: installed
                .slot
                .unwrap_or_else(|| running.map_or(diffota::slot::Slot::A, |s| s.other())),
            downloaded_bytes: installed.downloaded_bytes,
            requests: installed.requests,
            install_seconds: installed.seconds,
            finished_at: diffota::system::now(),
        };
        if let Err(e) = Spool::new(&config.state_dir).set_pending_install(&pending) {
            tracing::warn!(error = %e, "the install's figures could not be kept for its report");
        }
    }
    refresh_metrics(session);
    // JSON: the outcome is the last line of the event stream.
    show(&outcome, session.json, false)?;
    if outcome.installed() && reboot {
        reboot_now(&session.config)?;
    }
    Ok(Exit::from(&outcome))
}

/// Before an install, one try at the reports an earlier run could not send (the timer's
/// run is their retry); a failure here never stops the install.
fn send_earlier_reports(session: &Session, runtime: &tokio::runtime::Runtime) {
    let config = &session.config;
    if config.report.is_none() {
        return;
    }
    let spool = Spool::new(&config.state_dir);
    match runtime.block_on(outcomes::send_spooled(config, &spool, 1)) {
        Ok(summary) if summary.pending > 0 => {
            tracing::warn!(summary = %summary, "outcome reports left for a later run")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "outcome reports not sent"),
    }
}
