//! `diffota service`: the device's updater on the D-Bus system bus, for a product's own
//! application (a UI, a fleet agent) to drive and watch, over the same library as the CLI.
//!
//! Bus name, object and interface: `org.diffota.Updater1` at `/org/diffota/Updater1`
//! (introspection XML in `dbus/org.diffota.Updater1.xml`). An install runs on its own
//! thread and holds the device lock, like `diffota install`: a second install, over D-Bus or
//! from the CLI, is refused as busy while it runs. Its progress is published as properties
//! (`PropertiesChanged` at most every 200 ms, and at each phase change), its end as the
//! `Completed` signal. `Cancel` stops it between two chunks (or in a wait for the network),
//! leaves what was written for the next install of the same release to find in place, and
//! never arms a trial.
//!
//! `status` is the pure model of what the properties show.

pub mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use zbus::object_server::{InterfaceRef, SignalEmitter};

use crate::boot;
use crate::config::Config;
use crate::install::{InstallError, InstallOptions, Outcome};
use crate::lifecycle;
use crate::progress::{Event, Progress};
use crate::release::ReleaseTarget;
use crate::state::{DeviceLock, LockError, StateDir, TransitionError};
use status::{Completion, ServiceStatus};

pub const BUS_NAME: &str = "org.diffota.Updater1";
pub const OBJECT_PATH: &str = "/org/diffota/Updater1";

/// Errors a caller gets, as D-Bus errors named `org.diffota.Updater1.Error.<Variant>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.diffota.Updater1.Error")]
pub enum UpdaterError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Another install, mark-good, mark-bad or rollback holds the device lock (named).
    Busy(String),
    /// Refused by policy: no image known to be good to switch to.
    Refused(String),
    /// Nothing to cancel.
    NotRunning(String),
    Failed(String),
}

/// Any URL in the message is shown redacted, as everywhere (a D-Bus error reaches the
/// caller, who may not know the store's password).
fn failed(error: impl std::fmt::Display) -> UpdaterError {
    UpdaterError::Failed(diffota_cli::redact::redact_urls_in(&error.to_string()))
}

fn lock_error(error: LockError) -> UpdaterError {
    match error {
        busy @ LockError::Busy { .. } => UpdaterError::Busy(busy.to_string()),
        other => failed(other),
    }
}

fn lifecycle_error(error: lifecycle::LifecycleError) -> UpdaterError {
    match error {
        lifecycle::LifecycleError::Transition(refusal @ TransitionError::NoGoodImage { .. }) => {
            UpdaterError::Refused(refusal.to_string())
        }
        other => failed(other),
    }
}

/// What the install thread tells the bus side.
enum Change {
    Progress,
    Phase,
    Completed {
        operation: String,
        completion: Completion,
        message: String,
    },
}

struct Shared {
    config: Config,
    status: Mutex<ServiceStatus>,
    cancel: AtomicBool,
    cancel_notify: Notify,
    changes: mpsc::UnboundedSender<Change>,
}

impl Shared {
    fn status(&self) -> std::sync::MutexGuard<'_, ServiceStatus> {
        self.status.lock().expect("no status holder panicked")
    }

    fn send(&self, change: Change) {
        // The receiver lives as long as the service; nothing to do if it is gone.
        let _ = self.changes.send(change);
    }
}

/// The install's progress, into the shared status; asks the install to stop on `Cancel`.
struct ServiceProgress {
    shared: Arc<Shared>,
    last_sent: Mutex<Instant>,
}

impl Progress for ServiceProgress {
    fn event(&self, event: Event<'_>) {
        let phase_changed = self.shared.status().apply(&event);
        if phase_changed {
            self.shared.send(Change::Phase);
        } else if matches!(event, Event::Written { .. }) {
            let mut last = self.last_sent.lock().expect("no progress holder panicked");
            if last.elapsed() >= Duration::from_millis(200) {
                *last = Instant::now();
                self.shared.send(Change::Progress);
            }
        }
    }

    fn cancelled(&self) -> bool {
        self.shared.cancel.load(Ordering::SeqCst)
    }
}

pub struct Updater {
    shared: Arc<Shared>,
}

/// `""`: the configured channel; `channel:NAME`: that channel; anything else: an index URL
/// or path, or a bundle file.
fn target(config: &Config, source: &str) -> ReleaseTarget {
    match source.strip_prefix("channel:") {
        _ if source.is_empty() => ReleaseTarget::from_arguments(None, None, &config.channel),
        Some(channel) => ReleaseTarget::from_arguments(None, Some(channel), &config.channel),
        None => ReleaseTarget::from_arguments(Some(source), None, &config.channel),
    }
}

#[zbus::interface(name = "org.diffota.Updater1")]
impl Updater {
    /// What an install of `source` would do: whether it applies, the version, and the
    /// planned download.
    #[zbus(out_args(
        "update_available",
        "version",
        "download_bytes",
        "requests",
        "decision"
    ))]
    async fn check(&self, source: &str) -> Result<(bool, String, u64, u64, String), UpdaterError> {
        let config = self.shared.config.clone();
        let source = source.to_owned();
        let report = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let keys = crate::keys::trusted_keys(&config).map_err(|e| e.to_string())?;
            let mut bootloader = boot::from_config(&config.boot).map_err(|e| e.to_string())?;
            let device = crate::install::Device {
                config: &config,
                keys: &keys,
                state_dir: StateDir::new(&config.state_dir),
                device_id: crate::system::device_id(&config.device_id)
                    .map_err(|e| e.to_string())?,
                bootloader: bootloader.as_mut(),
            };
            let runtime = current_thread().map_err(|e| e.to_string())?;
            runtime
                .block_on(crate::install::check(&device, &target(&config, &source)))
                .map_err(|e| diffota_cli::error_chain(&e))
        })
        .await
        .map_err(failed)?
        .map_err(UpdaterError::Failed)?;
        Ok((
            report.update_available,
            report.version,
            report.plan.fetch_bytes,
            report.plan.fetch_requests,
            report.decision,
        ))
    }

    /// Starts installing `source` into the inactive slot and returns; `Completed` says how
    /// it ended. Refused as `Busy` while any install runs on the device.
    async fn install(&self, source: &str, force: bool) -> Result<(), UpdaterError> {
        let shared = self.shared.clone();
        let lock = DeviceLock::acquire(&StateDir::new(&shared.config.state_dir), "install (D-Bus)")
            .map_err(lock_error)?;
        shared.cancel.store(false, Ordering::SeqCst);
        shared.status().start("install");
        shared.send(Change::Phase);
        let target = target(&shared.config, source);
        let options = InstallOptions {
            allow_downgrade: false,
            force,
        };
        let on_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("install".into())
            .spawn(move || {
                let (completion, message) = run_install(&on_thread, &target, options);
                drop(lock);
                on_thread.status().finish(completion, &message);
                on_thread.send(Change::Completed {
                    operation: "install".into(),
                    completion,
                    message,
                });
            });
        if let Err(e) = spawned {
            shared.status().finish(Completion::Failed, &e.to_string());
            shared.send(Change::Phase);
            return Err(failed(e));
        }
        Ok(())
    }

    /// Stops the running install between two chunks; its `Completed` says `cancelled`.
    async fn cancel(&self) -> Result<(), UpdaterError> {
        if !self.shared.status().busy() {
            return Err(UpdaterError::NotRunning("no install is running".into()));
        }
        self.shared.cancel.store(true, Ordering::SeqCst);
        self.shared.cancel_notify.notify_waiters();
        Ok(())
    }

    /// Commits a tried trial slot, or records that the bootloader fell back.
    async fn mark_good(&self) -> Result<String, UpdaterError> {
        self.switch("mark-good", |config, bootloader| {
            lifecycle::mark_good(config, bootloader).map(|outcome| outcome.to_string())
        })
        .await
    }

    /// The running slot failed its health check: boot the other slot from the next boot on.
    async fn mark_bad(&self, force: bool) -> Result<String, UpdaterError> {
        self.switch("mark-bad", move |config, bootloader| {
            lifecycle::mark_bad(config, bootloader, force)
                .map(|slot| format!("slot {slot} boots next"))
        })
        .await
    }

    /// Boot the other slot on trial, when it holds an image known to be good.
    async fn rollback(&self, force: bool) -> Result<String, UpdaterError> {
        self.switch("rollback", move |config, bootloader| {
            lifecycle::rollback(config, bootloader, force)
                .map(|slot| format!("slot {slot} boots next, on trial"))
        })
        .await
    }

    /// `install` while one runs, empty otherwise.
    #[zbus(property)]
    fn operation(&self) -> String {
        self.shared.status().operation.clone()
    }

    /// idle, preparing, writing, verifying, done, failed or cancelled.
    #[zbus(property)]
    fn phase(&self) -> String {
        self.shared.status().phase.name().into()
    }

    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        self.shared.status().bytes_done
    }

    #[zbus(property)]
    fn bytes_total(&self) -> u64 {
        self.shared.status().bytes_total
    }

    /// Of the image written; rises within an operation, 100 once it succeeded.
    #[zbus(property)]
    fn percent(&self) -> u32 {
        self.shared.status().percent()
    }

    #[zbus(property)]
    fn last_error(&self) -> String {
        self.shared.status().last_error.clone()
    }

    /// Each image of a release of several, in the order written: name, bytes done, bytes
    /// total (empty for a release of one image; the totals are `BytesDone`/`BytesTotal`).
    #[zbus(property)]
    fn images(&self) -> Vec<(String, u64, u64)> {
        self.shared
            .status()
            .images
            .iter()
            .map(|i| (i.name.clone(), i.bytes_done, i.bytes_total))
            .collect()
    }

    /// `a` or `b`, empty when unknown.
    #[zbus(property)]
    fn running_slot(&self) -> String {
        lifecycle::running_slot(&self.shared.config)
            .map(|slot| slot.to_string())
            .unwrap_or_default()
    }

    /// The version each slot holds (`a`, `b`), empty when unknown.
    #[zbus(property)]
    fn slot_versions(&self) -> std::collections::HashMap<String, String> {
        let state = StateDir::new(&self.shared.config.state_dir)
            .load()
            .unwrap_or_default();
        [crate::slot::Slot::A, crate::slot::Slot::B]
            .into_iter()
            .map(|slot| {
                (
                    slot.to_string(),
                    state.version_in(slot).unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The bootloader's view: next slot (empty when unknown), on trial, boots counted,
    /// boots allowed (0 when unknown).
    #[zbus(property)]
    fn boot_state(&self) -> (String, bool, u32, u32) {
        match boot::from_config(&self.shared.config.boot).and_then(|b| b.state()) {
            Ok(state) => (
                state.selected.map(|s| s.to_string()).unwrap_or_default(),
                state.upgrade_available,
                state.bootcount,
                state.bootlimit.unwrap_or(0),
            ),
            Err(_) => (String::new(), false, 0, 0),
        }
    }

    /// An operation ended: its name, `success`, `nothing-to-do`, `refused`, `failed` or
    /// `cancelled`, and what happened in words.
    #[zbus(signal)]
    async fn completed(
        emitter: &SignalEmitter<'_>,
        operation: &str,
        result: &str,
        message: &str,
    ) -> zbus::Result<()>;
}

impl Updater {
    /// A state-changing command by hand, under the device lock.
    async fn switch<F>(&self, operation: &'static str, run: F) -> Result<String, UpdaterError>
    where
        F: FnOnce(&Config, &mut dyn boot::Bootloader) -> Result<String, lifecycle::LifecycleError>
            + Send
            + 'static,
    {
        let config = self.shared.config.clone();
        tokio::task::spawn_blocking(move || {
            let _lock = DeviceLock::acquire(&StateDir::new(&config.state_dir), operation)
                .map_err(lock_error)?;
            let mut bootloader = boot::from_config(&config.boot).map_err(failed)?;
            run(&config, bootloader.as_mut()).map_err(lifecycle_error)
        })
        .await
        .map_err(failed)?
    }
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// One install, on its own thread and runtime; the bus side stays responsive.
fn run_install(
    shared: &Arc<Shared>,
    target: &ReleaseTarget,
    options: InstallOptions,
) -> (Completion, String) {
    let config = &shared.config;
    let prepared = (|| -> Result<_, String> {
        let keys = crate::keys::trusted_keys(config).map_err(|e| e.to_string())?;
        let bootloader = boot::from_config(&config.boot).map_err(|e| e.to_string())?;
        let device_id = crate::system::device_id(&config.device_id).map_err(|e| e.to_string())?;
        let runtime = current_thread().map_err(|e| e.to_string())?;
        Ok((keys, bootloader, device_id, runtime))
    })();
    let (keys, mut bootloader, device_id, runtime) = match prepared {
        Ok(prepared) => prepared,
        Err(message) => return (Completion::Failed, message),
    };
    let progress = ServiceProgress {
        shared: shared.clone(),
        last_sent: Mutex::new(Instant::now()),
    };
    let mut device = crate::install::Device {
        config,
        keys: &keys,
        state_dir: StateDir::new(&config.state_dir),
        device_id,
        bootloader: bootloader.as_mut(),
    };
    let result = runtime.block_on(async {
        let cancelled = shared.cancel_notify.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        if shared.cancel.load(Ordering::SeqCst) {
            return Err(InstallError::Cancelled);
        }
        tokio::select! {
            result = lifecycle::install_recorded(&mut device, target, options, &progress) => result,
            () = cancelled => Err(InstallError::Cancelled),
        }
    });
    let error = result.as_ref().err().map(|e| diffota_cli::error_chain(e));
    match result {
        Ok(outcome @ Outcome::Installed(_)) => (Completion::Success, outcome.to_string()),
        Ok(outcome @ (Outcome::PreviouslyFailed { .. } | Outcome::Refused { .. })) => {
            (Completion::Refused, outcome.to_string())
        }
        Ok(outcome) => (Completion::NothingToDo, outcome.to_string()),
        Err(InstallError::Cancelled) => {
            (Completion::Cancelled, InstallError::Cancelled.to_string())
        }
        Err(InstallError::Downgrade { .. }) => (Completion::Refused, error.unwrap_or_default()),
        Err(_) => (Completion::Failed, error.unwrap_or_default()),
    }
}

/// Publishes what the install thread changed: properties, then the `Completed` signal.
async fn publish(iface: InterfaceRef<Updater>, mut changes: mpsc::UnboundedReceiver<Change>) {
    while let Some(change) = changes.recv().await {
        let emitter = iface.signal_emitter();
        let updater = iface.get().await;
        let published = async {
            updater.bytes_done_changed(emitter).await?;
            updater.percent_changed(emitter).await?;
            updater.images_changed(emitter).await?;
            if !matches!(change, Change::Progress) {
                updater.operation_changed(emitter).await?;
                updater.phase_changed(emitter).await?;
                updater.bytes_total_changed(emitter).await?;
                updater.last_error_changed(emitter).await?;
            }
            if let Change::Completed {
                operation,
                completion,
                message,
            } = &change
            {
                updater.slot_versions_changed(emitter).await?;
                updater.boot_state_changed(emitter).await?;
                Updater::completed(emitter, operation, completion.name(), message).await?;
            }
            zbus::Result::Ok(())
        }
        .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "D-Bus signal not sent");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
}

/// Serves on the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else the standard socket) until
/// the process is stopped.
pub async fn serve(config: Config) -> Result<(), ServiceError> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let updater = Updater {
        shared: Arc::new(Shared {
            config,
            status: Mutex::new(ServiceStatus::default()),
            cancel: AtomicBool::new(false),
            cancel_notify: Notify::new(),
            changes: sender,
        }),
    };
    let connection = zbus::connection::Builder::system()?
        .name(BUS_NAME)?
        .serve_at(OBJECT_PATH, updater)?
        .build()
        .await?;
    tracing::info!(
        event = "service_started",
        name = BUS_NAME,
        path = OBJECT_PATH
    );
    let iface = connection
        .object_server()
        .interface::<_, Updater>(OBJECT_PATH)
        .await?;
    publish(iface, receiver).await;
    Ok(())
}
