//! After a reboot: commit a healthy trial slot, notice that the bootloader fell back, mark a
//! slot bad, roll back. `after_boot` is the pure decision; the functions below it apply it
//! to the bootloader and the state directory.

use crate::boot::{BootError, Bootloader};
use crate::install::now;
use crate::slot::Slot;
use crate::state::{FailedRelease, State, StateDir, StateError, Trial};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("slot {slot} holds no image known to be good; refusing to switch to it (pass --force to switch anyway)")]
    NoGoodImage { slot: Slot },
}

/// What to do after booting `running`, given the trial recorded before the reboot.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterBoot {
    /// Running the trial slot and healthy: keep it.
    Commit { trial: Trial },
    /// A trial was pending but the old slot is running: the bootloader fell back.
    Reverted { trial: Trial },
    /// No trial pending: the running slot is simply confirmed.
    Confirm,
    /// A trial is armed but the system has not booted since: nothing to decide yet.
    NotYetTried { trial: Trial },
}

/// `boot_id` is this boot's id; None when unknown, and then every call counts as after a reboot.
pub fn after_boot(running: Slot, trial: Option<&Trial>, boot_id: Option<&str>) -> AfterBoot {
    match trial {
        Some(trial) if boot_id.is_some() && trial.boot_id.as_deref() == boot_id => {
            AfterBoot::NotYetTried {
                trial: trial.clone(),
            }
        }
        Some(trial) if trial.slot == running => AfterBoot::Commit {
            trial: trial.clone(),
        },
        Some(trial) => AfterBoot::Reverted {
            trial: trial.clone(),
        },
        None => AfterBoot::Confirm,
    }
}

/// This boot's id, from the configured file (`/proc/sys/kernel/random/boot_id`).
pub fn current_boot_id(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What `mark-good` did, for the report.
#[derive(Debug, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MarkGood {
    Committed {
        slot: Slot,
        version: String,
    },
    Reverted {
        slot: Slot,
        failed_version: String,
        reason: String,
    },
    AlreadyGood {
        slot: Slot,
    },
    TrialPending {
        slot: Slot,
        version: String,
    },
}

pub fn mark_good(
    running: Slot,
    bootloader: &mut dyn Bootloader,
    state_dir: &StateDir,
    boot_id: Option<&str>,
) -> Result<MarkGood, LifecycleError> {
    let mut state = state_dir.load()?;
    let outcome = match after_boot(running, state.trial.as_ref(), boot_id) {
        AfterBoot::NotYetTried { trial } => {
            return Ok(MarkGood::TrialPending {
                slot: trial.slot,
                version: trial.version,
            })
        }
        AfterBoot::Commit { trial } => {
            bootloader.commit(running)?;
            if let Some(record) = state.slots.get_mut(&running) {
                record.good = true;
            }
            tracing::info!(event = "marked_good", slot = %running, version = %trial.version);
            MarkGood::Committed {
                slot: running,
                version: trial.version,
            }
        }
        AfterBoot::Reverted { trial } => {
            let reason = format!(
                "slot {} did not come up healthy within {} boot attempts; the bootloader fell back to slot {running}",
                trial.slot, trial.attempts
            );
            // The bootloader may already point here; make sure no trial stays armed.
            bootloader.commit(running)?;
            record_failure(&mut state, &trial.version, &reason);
            if let Some(record) = state.slots.get_mut(&trial.slot) {
                record.good = false;
            }
            if let Some(record) = state.slots.get_mut(&running) {
                record.good = true;
            }
            tracing::warn!(event = "release_reverted", version = %trial.version, slot = %trial.slot, reason = %reason);
            MarkGood::Reverted {
                slot: running,
                failed_version: trial.version,
                reason,
            }
        }
        AfterBoot::Confirm => {
            let boot = bootloader.state()?;
            if boot.upgrade_available
                || boot.bootcount != 0
                || boot.selected.is_some_and(|s| s != running)
            {
                bootloader.commit(running)?;
            }
            if let Some(record) = state.slots.get_mut(&running) {
                record.good = true;
            }
            MarkGood::AlreadyGood { slot: running }
        }
    };
    state.trial = None;
    state_dir.save(&state)?;
    Ok(outcome)
}

fn record_failure(state: &mut State, version: &str, reason: &str) {
    state.failed_releases.retain(|f| f.version != version);
    state.failed_releases.push(FailedRelease {
        version: version.to_owned(),
        reason: reason.to_owned(),
        at: now(),
    });
    if let Some(last) = state.last_install.as_mut().filter(|l| l.version == version) {
        last.result = "reverted".into();
    }
}

/// The running slot failed its health check: boot the other slot from the next boot on.
pub fn mark_bad(
    running: Slot,
    bootloader: &mut dyn Bootloader,
    state_dir: &StateDir,
    force: bool,
) -> Result<Slot, LifecycleError> {
    let mut state = state_dir.load()?;
    let other = running.other();
    if !force && !state.slots.get(&other).is_some_and(|r| r.good) {
        return Err(LifecycleError::NoGoodImage { slot: other });
    }
    bootloader.commit(other)?;
    if let Some(version) = state.slots.get(&running).map(|r| r.version.clone()) {
        record_failure(
            &mut state,
            &version,
            &format!("marked bad by a health check while running slot {running}"),
        );
    }
    if let Some(record) = state.slots.get_mut(&running) {
        record.good = false;
    }
    state.trial = None;
    state_dir.save(&state)?;
    tracing::warn!(event = "marked_bad", slot = %running, next = %other);
    Ok(other)
}

/// Boot the other slot on trial, when it holds an image known to be good.
pub fn rollback(
    running: Slot,
    bootloader: &mut dyn Bootloader,
    state_dir: &StateDir,
    attempts: u32,
    force: bool,
    boot_id: Option<String>,
) -> Result<Slot, LifecycleError> {
    let mut state = state_dir.load()?;
    let other = running.other();
    let record = state.slots.get(&other).cloned();
    if !force && !record.as_ref().is_some_and(|r| r.good) {
        return Err(LifecycleError::NoGoodImage { slot: other });
    }
    bootloader.start_trial(other, attempts)?;
    state.trial = Some(Trial {
        slot: other,
        version: record.map_or_else(|| "unknown".into(), |r| r.version),
        from_slot: running,
        started_at: now(),
        attempts,
        boot_id,
    });
    state_dir.save(&state)?;
    tracing::info!(event = "rollback_started", from = %running, to = %other);
    Ok(other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(slot: Slot) -> Trial {
        Trial {
            slot,
            version: "2.0".into(),
            from_slot: slot.other(),
            started_at: 0,
            attempts: 3,
            boot_id: Some("boot-1".into()),
        }
    }

    #[test]
    fn decisions_after_boot() {
        let next_boot = Some("boot-2");
        assert_eq!(
            after_boot(Slot::B, Some(&trial(Slot::B)), next_boot),
            AfterBoot::Commit {
                trial: trial(Slot::B)
            }
        );
        assert_eq!(
            after_boot(Slot::A, Some(&trial(Slot::B)), next_boot),
            AfterBoot::Reverted {
                trial: trial(Slot::B)
            }
        );
        assert_eq!(after_boot(Slot::A, None, next_boot), AfterBoot::Confirm);
        assert_eq!(after_boot(Slot::A, None, None), AfterBoot::Confirm);
    }

    #[test]
    fn regression_mark_good_before_the_reboot_is_not_a_revert() {
        // mark-good run again in the boot that armed the trial must not record a failure.
        assert_eq!(
            after_boot(Slot::A, Some(&trial(Slot::B)), Some("boot-1")),
            AfterBoot::NotYetTried {
                trial: trial(Slot::B)
            }
        );
        // Without a boot id the old behaviour stays: treated as after a reboot.
        assert_eq!(
            after_boot(Slot::A, Some(&trial(Slot::B)), None),
            AfterBoot::Reverted {
                trial: trial(Slot::B)
            }
        );
    }
}
