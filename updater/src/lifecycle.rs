//! The transitions after a boot and by hand, as the CLI and the D-Bus service both run them:
//! mark-good (with its outcome report), health-failed, mark-bad, rollback. The caller holds
//! the device lock where one is needed and reboots when asked.

use crate::boot::{BootError, Bootloader};
use crate::config::Config;
use crate::hooks::{HookEnv, HookPoint};
use crate::outcomes::{self, Spool, SpoolError};
use crate::slot::{booted_slot, Slot, SlotError};
use crate::state::{
    DeviceState, HealthFailed, MarkGood, OwedHooks, State, StateDir, StateError, TransitionError,
};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The commit or revert is recorded; its hooks run again at the next `mark-good`.
    #[error("{done}, but a hook after it failed (it runs again at the next mark-good): {source}")]
    OwedHook {
        done: String,
        #[source]
        source: crate::hooks::HookError,
    },
}

pub fn running_slot(config: &Config) -> Result<Slot, SlotError> {
    booted_slot(&config.boot.cmdline, &config.slots.a, &config.slots.b)
}

fn machine(config: &Config) -> Result<DeviceState, StateError> {
    DeviceState::load(&StateDir::new(&config.state_dir))
}

/// `mark-good`: commits a tried trial, records a fall-back, or confirms the running slot;
/// an ended trial is recorded as an outcome to report.
pub fn mark_good(
    config: &Config,
    bootloader: &mut dyn Bootloader,
) -> Result<MarkGood, LifecycleError> {
    let running = running_slot(config)?;
    let boot_id = crate::system::boot_id(&config.boot.boot_id_file);
    let mut machine = machine(config)?;
    let before = machine.state().clone();
    let bootcount = bootloader.state().ok().map(|boot| boot.bootcount);
    let outcome = machine.mark_good(running, bootloader, boot_id.as_deref())?;
    record_trial_outcome(config, &outcome, &before, bootcount);
    refresh_metrics(config);
    run_owed_hooks(config, &mut machine, running)?;
    Ok(outcome)
}

/// The post-commit or post-revert hooks a transition owes, run where their slot runs and
/// settled once they all succeeded; a failure leaves them owed for the next `mark-good`.
fn run_owed_hooks(
    config: &Config,
    machine: &mut DeviceState,
    running: Slot,
) -> Result<(), LifecycleError> {
    let Some(owed) = machine.state().owed_hooks().cloned() else {
        return Ok(());
    };
    if owed.slot() != running {
        tracing::warn!(event = "hooks_dropped", slot = %owed.slot(), running = %running, "the hooks were owed on the other slot, which no longer runs: they are dropped");
        return Ok(machine.settle_hooks()?);
    }
    let (point, done, env) = owed_hook_env(config, machine.state(), &owed, running);
    crate::hooks::run_point(&config.hooks, point, &env)
        .map_err(|source| LifecycleError::OwedHook { done, source })?;
    Ok(machine.settle_hooks()?)
}

/// The point, what it follows (for messages) and the documented environment of owed hooks.
fn owed_hook_env(
    config: &Config,
    state: &State,
    owed: &OwedHooks,
    running: Slot,
) -> (HookPoint, String, HookEnv) {
    let env = HookEnv::new()
        .set("DIFFOTA_RUNNING_SLOT", running.name())
        .set_path("DIFFOTA_RUNNING_DEVICE", config.slot_path(running))
        .set("DIFFOTA_OTHER_SLOT", running.other().name())
        .set_path("DIFFOTA_OTHER_DEVICE", config.slot_path(running.other()))
        .set_path("DIFFOTA_STATE_DIR", &config.state_dir)
        .set("DIFFOTA_COMPATIBLE", config.compatible.as_str());
    match owed {
        OwedHooks::PostCommit {
            version,
            previous_version,
            ..
        } => (
            HookPoint::PostCommit,
            format!("slot {running} ({version}) is committed"),
            env.set("DIFFOTA_VERSION", version.as_str()).set(
                "DIFFOTA_PREVIOUS_VERSION",
                previous_version.clone().unwrap_or_default(),
            ),
        ),
        OwedHooks::PostRevert {
            failed_version,
            reason,
            ..
        } => (
            HookPoint::PostRevert,
            format!("release {failed_version} was reverted"),
            env.set("DIFFOTA_FAILED_VERSION", failed_version.as_str())
                .set("DIFFOTA_REASON", reason.as_str())
                .set(
                    "DIFFOTA_VERSION",
                    state.version_in(running).unwrap_or_default(),
                ),
        ),
    }
}

/// A committed or reverted trial is an outcome to report. The commit is already durable:
/// a failure to record its report is logged, not fatal.
fn record_trial_outcome(
    config: &Config,
    outcome: &MarkGood,
    before: &State,
    bootcount: Option<u32>,
) {
    let spool = Spool::new(&config.state_dir);
    let device_id = match crate::system::device_id(&config.device_id) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "no device id: the outcome is not reported");
            return;
        }
    };
    let install = spool.pending_install();
    let Some(report) = outcomes::of_mark_good(
        outcome,
        before,
        bootcount,
        &device_id,
        install.as_ref(),
        crate::system::now(),
    ) else {
        return;
    };
    let recorded = outcomes::record(config, &report).and_then(|()| spool.clear_pending_install());
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "the outcome could not be recorded for its report");
    }
}

/// A health check failed: what that leads to (the caller reboots for `RebootTrial`).
pub fn health_failed(
    config: &Config,
    bootloader: &dyn Bootloader,
) -> Result<HealthFailed, LifecycleError> {
    let running = running_slot(config)?;
    let boot_id = crate::system::boot_id(&config.boot.boot_id_file);
    Ok(machine(config)?.health_failed(running, bootloader, boot_id.as_deref())?)
}

/// `mark-bad`: the other slot boots from the next boot on; returns it.
pub fn mark_bad(
    config: &Config,
    bootloader: &mut dyn Bootloader,
    force: bool,
) -> Result<Slot, LifecycleError> {
    let running = running_slot(config)?;
    let next = machine(config)?.mark_bad(running, bootloader, force)?;
    refresh_metrics(config);
    Ok(next)
}

/// `rollback`: the other slot boots on trial; returns it.
pub fn rollback(
    config: &Config,
    bootloader: &mut dyn Bootloader,
    force: bool,
) -> Result<Slot, LifecycleError> {
    let running = running_slot(config)?;
    let next = machine(config)?.rollback(
        running,
        bootloader,
        config.boot.boot_attempts,
        force,
        crate::system::boot_id(&config.boot.boot_id_file),
    )?;
    refresh_metrics(config);
    Ok(next)
}

/// Rewrites the metrics textfile, when configured, after the state changed. The metrics
/// never fail a command.
pub fn refresh_metrics(config: &Config) {
    if config.metrics.textfile.is_none() {
        return;
    }
    let written = StateDir::new(&config.state_dir)
        .load()
        .map_err(SpoolError::from)
        .and_then(|state| outcomes::write_metrics(config, &state, running_slot(config).ok()));
    if let Err(e) = written {
        tracing::warn!(error = %e, "metrics textfile not written");
    }
}

/// An install and what the device keeps of it, for the CLI and the D-Bus service alike: the
/// release running before, the install itself, then (unless it was cancelled, which the
/// next install resumes) its figures for the trial's report or its failure as an outcome
/// to report, and the metrics. The caller holds the device lock.
pub async fn install_recorded(
    device: &mut crate::install::Device<'_>,
    target: &crate::release::ReleaseTarget,
    options: crate::install::InstallOptions,
    progress: &dyn crate::progress::Progress,
) -> Result<crate::install::Outcome, crate::install::InstallError> {
    let running = crate::install::Running::load(device);
    let from_version = running
        .as_ref()
        .ok()
        .and_then(|r| r.version().map(str::to_owned));
    let running_slot = running.as_ref().ok().map(|r| r.slot);
    let watched = crate::progress::VersionSeen::new(progress);
    let result = match running {
        Ok(running) => crate::install::install(device, running, target, options, &watched).await,
        Err(e) => Err(e),
    };
    if !matches!(result, Err(crate::install::InstallError::Cancelled)) {
        let error = result
            .as_ref()
            .err()
            .map(|e| format!("installing: {}", diffota_cli::error_chain(e)));
        record_install(
            device.config,
            &device.device_id,
            running_slot,
            from_version,
            watched.version().as_deref(),
            result
                .as_ref()
                .map_err(|_| error.as_deref().unwrap_or_default()),
        );
    }
    result
}

/// After an install: a finished one keeps its figures for its trial's report, a failed one
/// is an outcome to report. `started_version` is the release it began writing, if it got
/// that far. Never fails the install's own result.
fn record_install(
    config: &Config,
    device_id: &str,
    running_slot: Option<Slot>,
    from_version: Option<String>,
    started_version: Option<&str>,
    result: Result<&crate::install::Outcome, &str>,
) {
    match result {
        Ok(crate::install::Outcome::Installed(installed)) => {
            let pending = outcomes::PendingInstall {
                from_version,
                to_version: installed.version.clone(),
                slot: installed
                    .slot
                    .unwrap_or_else(|| running_slot.map_or(Slot::B, Slot::other)),
                downloaded_bytes: installed.downloaded_bytes,
                requests: installed.requests,
                install_seconds: installed.seconds,
                finished_at: crate::system::now(),
                images: installed.images.clone(),
            };
            if let Err(e) = Spool::new(&config.state_dir).set_pending_install(&pending) {
                tracing::warn!(error = %e, "the install's figures could not be kept for its report");
            }
        }
        Ok(_) => {}
        Err(error) => {
            let report = outcomes::OutcomeReport::of_failed_install(
                device_id,
                from_version.as_deref(),
                started_version,
                error.to_owned(),
                crate::system::now(),
            );
            if let Err(e) = outcomes::record(config, &report) {
                tracing::warn!(error = %e, "the failed install could not be recorded for its report");
            }
        }
    }
    refresh_metrics(config);
}
