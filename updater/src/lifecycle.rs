//! The transitions after a boot and by hand, as the CLI and the D-Bus service both run them:
//! mark-good (with its outcome report), health-failed, mark-bad, rollback. The caller holds
//! the device lock where one is needed and reboots when asked.

use crate::boot::{BootError, Bootloader};
use crate::config::Config;
use crate::outcomes::{self, Spool, SpoolError};
use crate::slot::{booted_slot, Slot, SlotError};
use crate::state::{
    DeviceState, HealthFailed, MarkGood, State, StateDir, StateError, TransitionError,
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
    Ok(outcome)
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
