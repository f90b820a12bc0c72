//! The device's state machine: the one owner of every change to the state directory and,
//! where a change involves it, of the order against the bootloader.
//!
//! ```text
//!            begin_install          record_installed          arm_trial
//!   idle ─────────────────► writing ────────────────► installed ─────────► on trial
//!    ▲  (marker, no seed,            (seed index, record,       (bootloader,   │
//!    │   slot forgotten)              marker removed)            then record)  │
//!    │                                                                         │
//!    └──── after_boot: commit (healthy trial slot), revert (bootloader fell back) ◄┘
//!          mark_bad (health check failed), rollback (arms a trial of the other slot)
//!
//!   record_provisioned: the running slot, read and matched against a signed release it
//!   was flashed with (the factory image), gets its seed index, then its record (good).
//! ```
//!
//! Invariants, each kept by the order of the writes below, so that a crash (power cut) at any
//! point leaves a state the next run handles:
//! - A slot's record and seed index describe its bytes, or are absent. `begin_install` writes
//!   the in-progress marker, removes the seed index and the slot's record, and only then tells
//!   the bootloader to forget the slot; nothing writes the slot before all four. A crash while
//!   writing leaves the marker, so the next install of the same release re-checks what is in
//!   place instead of trusting a stale index.
//! - The bootloader is pointed at a slot only after `record_installed`: its whole image was
//!   read back and matched, and its record says so.
//! - The bootloader before the trial record (`arm_trial`, `rollback`): a crash between the
//!   two leaves a trial armed in the bootloader that the next `mark-good` commits as a plain
//!   confirm, never a revert recorded for a slot that was not tried.
//! - After a boot, the bootloader is committed before the state says so: a crash between the
//!   two repeats an idempotent commit on the next run.
//! - A commit or revert owes its after-boot hooks (post-commit, post-revert) in the same
//!   state write that records it; `settle_hooks` clears them only after they all succeeded.
//!   A crash while they run leaves them owed, and the next `mark-good` runs them again: each
//!   hook runs to success once per commit, and must be safe to run again (a data migration
//!   replaces its files atomically). The hooks before arming (pre-install, post-write,
//!   pre-arm) need no state: they run before `arm_trial`, so a failure leaves nothing armed.

use crate::boot::{BootError, BootState, Bootloader};
use crate::slot::Slot;
use crate::system;

use super::dir::{StateDir, StateError};
use super::record::{InProgress, InstallRecord, OwedHooks, SlotRecord, State, Trial};

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
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

/// What a failed health check leads to. Only a trial boot is rebooted: the boot script
/// counts the boots of a trial slot and, after `bootlimit` of them, boots the old slot. A
/// committed slot would boot again after a reboot, so a failed check there is left for the
/// operator to see (rebooting it would only loop).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum HealthFailed {
    /// The running slot is on trial: reboot. `attempt` of `attempts` boots are used.
    RebootTrial {
        slot: Slot,
        version: String,
        attempt: u32,
        attempts: u32,
    },
    /// Not a trial boot (no trial, the trial not booted yet, or the bootloader no longer
    /// counts it): no reboot.
    NotOnTrial { slot: Slot },
}

/// Decides what a failed health check on `running` leads to, from the trial recorded
/// before the reboot and the bootloader's variables (both must agree that this boot is a
/// counted trial boot).
pub fn after_health_failure(
    running: Slot,
    trial: Option<&Trial>,
    boot_id: Option<&str>,
    boot: &BootState,
) -> HealthFailed {
    let counted = boot.upgrade_available && boot.selected == Some(running);
    match after_boot(running, trial, boot_id) {
        AfterBoot::Commit { trial } if counted => HealthFailed::RebootTrial {
            slot: running,
            version: trial.version,
            attempt: boot.bootcount,
            attempts: boot.bootlimit.unwrap_or(trial.attempts),
        },
        _ => HealthFailed::NotOnTrial { slot: running },
    }
}

impl std::fmt::Display for HealthFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealthFailed::RebootTrial {
                slot,
                version,
                attempt,
                attempts,
            } => {
                write!(
                    f,
                    "{version} in slot {slot} failed its health check on trial boot {attempt} of {attempts}; rebooting: "
                )?;
                if attempt >= attempts {
                    write!(f, "the bootloader falls back to slot {}", slot.other())
                } else {
                    write!(
                        f,
                        "the bootloader tries slot {slot} again, and falls back to slot {} after boot {attempts}",
                        slot.other()
                    )
                }
            }
            HealthFailed::NotOnTrial { slot } => write!(
                f,
                "slot {slot} is not on trial: a reboot would boot it again, so nothing is done"
            ),
        }
    }
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

impl std::fmt::Display for MarkGood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MarkGood::Committed { slot, version } => write!(f, "slot {slot} ({version}) committed"),
            MarkGood::Reverted {
                slot,
                failed_version,
                reason,
            } => write!(
                f,
                "release {failed_version} failed: {reason}; staying on slot {slot}, and {failed_version} will not be installed again on its own"
            ),
            MarkGood::AlreadyGood { slot } => write!(f, "slot {slot} is good (no trial pending)"),
            MarkGood::TrialPending { slot, version } => write!(
                f,
                "{version} in slot {slot} is armed for a trial boot; nothing to mark before the reboot"
            ),
        }
    }
}

/// A written and verified slot, ready to be recorded.
pub struct Installed<'a> {
    pub slot: SlotRecord,
    pub install: InstallRecord,
    /// The signed index the slot was written from and its signature: the slot's next seed.
    pub index: &'a [u8],
    pub signature: &'a str,
    /// The same for the slot group's other images: (name, index, signature).
    pub images: Vec<(&'a str, Vec<u8>, &'a str)>,
}

/// The state of one device, loaded from its state directory; every method is one
/// transition and writes what it changed before it returns.
pub struct DeviceState {
    dir: StateDir,
    state: State,
}

impl DeviceState {
    pub fn load(dir: &StateDir) -> Result<DeviceState, StateError> {
        Ok(DeviceState {
            dir: dir.clone(),
            state: dir.load()?,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The install under way when the last run stopped, if any.
    pub fn in_progress(&self) -> Result<Option<InProgress>, StateError> {
        self.dir.in_progress()
    }

    /// A channel file was accepted: later ones must carry a higher counter.
    pub fn accept_channel(&mut self, channel: &str, counter: u64) -> Result<(), StateError> {
        self.state.accept_channel(channel, counter);
        self.dir.save(&self.state)
    }

    /// Before the first byte of `marker.slot` is written.
    pub fn begin_install(
        &mut self,
        marker: &InProgress,
        bootloader: &mut dyn Bootloader,
    ) -> Result<(), TransitionError> {
        self.dir.set_in_progress(Some(marker))?;
        self.dir.set_seed_index(marker.slot, None)?;
        for image in marker.images.keys() {
            self.dir.set_image_seed_index(image, marker.slot, None)?;
        }
        self.state.begin_install(marker.slot);
        self.dir.save(&self.state)?;
        bootloader.forget_slot(marker.slot)?;
        // A trial armed on this slot (an install that was not booted yet, now forced again)
        // ended when the bootloader forgot the slot: the state says so only after it did.
        if self.state.trial().is_some_and(|t| t.slot == marker.slot) {
            self.state.end_trial();
            self.dir.save(&self.state)?;
        }
        Ok(())
    }

    /// After the slot was written, flushed and read back matching the release.
    pub fn record_installed(&mut self, installed: Installed<'_>) -> Result<(), StateError> {
        let slot = installed.install.slot;
        self.dir
            .set_seed_index(slot, Some((installed.index, installed.signature)))?;
        for (image, index, signature) in &installed.images {
            self.dir
                .set_image_seed_index(image, slot, Some((index, signature)))?;
        }
        self.state
            .record_installed(installed.slot, installed.install);
        self.dir.save(&self.state)?;
        self.dir.set_in_progress(None)
    }

    /// The running slot was read and matched a signed release it was not installed with
    /// (the factory image): its record and seed index say so from now on. The bootloader is
    /// not involved: the slot already runs.
    pub fn record_provisioned(
        &mut self,
        slot: Slot,
        record: SlotRecord,
        index: &[u8],
        signature: &str,
        images: &[(&str, Vec<u8>, &str)],
    ) -> Result<(), StateError> {
        self.dir.set_seed_index(slot, Some((index, signature)))?;
        for (image, index, signature) in images {
            self.dir
                .set_image_seed_index(image, slot, Some((index, signature)))?;
        }
        self.state.record_provisioned(slot, record);
        self.dir.save(&self.state)
    }

    /// Hands the installed slot to the bootloader for `trial.attempts` boots.
    pub fn arm_trial(
        &mut self,
        trial: Trial,
        bootloader: &mut dyn Bootloader,
    ) -> Result<(), TransitionError> {
        bootloader.start_trial(trial.slot, trial.attempts)?;
        self.state.arm_trial(trial);
        self.dir.save(&self.state)?;
        Ok(())
    }

    /// `mark-good`: the running system is healthy. Commits a tried trial slot, records a
    /// fall-back to the old slot as a failure of the release, or confirms the running slot.
    pub fn mark_good(
        &mut self,
        running: Slot,
        bootloader: &mut dyn Bootloader,
        boot_id: Option<&str>,
    ) -> Result<MarkGood, TransitionError> {
        let outcome = match after_boot(running, self.state.trial(), boot_id) {
            AfterBoot::NotYetTried { trial } => {
                return Ok(MarkGood::TrialPending {
                    slot: trial.slot,
                    version: trial.version,
                })
            }
            AfterBoot::Commit { trial } => {
                bootloader.commit(running)?;
                self.state.owe_hooks(OwedHooks::PostCommit {
                    slot: running,
                    version: trial.version.clone(),
                    previous_version: self.state.version_in(trial.from_slot).map(str::to_owned),
                });
                self.state.confirm(running);
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
                self.state
                    .record_revert(&trial, running, &reason, system::now());
                self.state.owe_hooks(OwedHooks::PostRevert {
                    slot: running,
                    failed_version: trial.version.clone(),
                    reason: reason.clone(),
                });
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
                self.state.confirm(running);
                MarkGood::AlreadyGood { slot: running }
            }
        };
        self.dir.save(&self.state)?;
        Ok(outcome)
    }

    /// Before the first byte of single-copy target `name` is written: its record goes first,
    /// so a crash while writing never leaves a record that claims the old content.
    pub fn forget_single_copy(&mut self, name: &str) -> Result<(), StateError> {
        self.state.forget_single_copy(name);
        self.dir.save(&self.state)
    }

    /// After single-copy target `name` was written and read back matching.
    pub fn record_single_copy(
        &mut self,
        name: &str,
        record: super::record::SingleCopyRecord,
    ) -> Result<(), StateError> {
        self.state.record_single_copy(name, record);
        self.dir.save(&self.state)
    }

    /// The hooks a commit or revert owed all succeeded, or their slot no longer runs.
    pub fn settle_hooks(&mut self) -> Result<(), StateError> {
        self.state.settle_hooks();
        self.dir.save(&self.state)
    }

    /// A hook refused `version` on this device (exit 77): it is recorded like a release
    /// that failed here and not installed again unless forced.
    pub fn refuse_release(&mut self, version: &str, reason: &str) -> Result<(), StateError> {
        self.state.record_refusal(version, reason, system::now());
        self.dir.save(&self.state)
    }

    /// A health check failed on `running`: what that leads to (see `HealthFailed`). Changes
    /// nothing; the caller reboots for `RebootTrial`.
    pub fn health_failed(
        &self,
        running: Slot,
        bootloader: &dyn Bootloader,
        boot_id: Option<&str>,
    ) -> Result<HealthFailed, TransitionError> {
        let boot = bootloader.state()?;
        let outcome = after_health_failure(running, self.state.trial(), boot_id, &boot);
        match &outcome {
            HealthFailed::RebootTrial {
                version,
                attempt,
                attempts,
                ..
            } => {
                tracing::warn!(event = "trial_health_failed", slot = %running, version = %version, attempt, attempts)
            }
            HealthFailed::NotOnTrial { .. } => {
                tracing::warn!(event = "health_failed", slot = %running)
            }
        }
        Ok(outcome)
    }

    /// `mark-bad`: the running slot failed its health check; the other slot boots from the
    /// next boot on. Returns that slot.
    pub fn mark_bad(
        &mut self,
        running: Slot,
        bootloader: &mut dyn Bootloader,
        force: bool,
    ) -> Result<Slot, TransitionError> {
        let other = running.other();
        if !force && !self.state.is_good(other) {
            return Err(TransitionError::NoGoodImage { slot: other });
        }
        bootloader.commit(other)?;
        let reason = format!("marked bad by a health check while running slot {running}");
        self.state.record_bad(running, &reason, system::now());
        self.dir.save(&self.state)?;
        tracing::warn!(event = "marked_bad", slot = %running, next = %other);
        Ok(other)
    }

    /// `rollback`: boot the other slot on trial, when it holds an image known to be good.
    pub fn rollback(
        &mut self,
        running: Slot,
        bootloader: &mut dyn Bootloader,
        attempts: u32,
        force: bool,
        boot_id: Option<String>,
    ) -> Result<Slot, TransitionError> {
        let other = running.other();
        if !force && !self.state.is_good(other) {
            return Err(TransitionError::NoGoodImage { slot: other });
        }
        let trial = Trial {
            slot: other,
            version: self.state.version_in(other).unwrap_or("unknown").to_owned(),
            from_slot: running,
            started_at: system::now(),
            attempts,
            boot_id,
        };
        self.arm_trial(trial, bootloader)?;
        tracing::info!(event = "rollback_started", from = %running, to = %other);
        Ok(other)
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::{install_record, slot_record, trial};
    use super::super::record::InstallResult;
    use super::*;
    use crate::boot::BootState;

    /// A bootloader that records the verbs it was given and fails the one named in `fail`.
    #[derive(Default)]
    struct RecordingBootloader {
        calls: Vec<String>,
        fail: Option<&'static str>,
        boot: BootState,
    }

    impl RecordingBootloader {
        fn call(&mut self, verb: &'static str, slot: Slot) -> Result<(), BootError> {
            if self.fail == Some(verb) {
                return Err(BootError::Io {
                    path: "test".into(),
                    source: std::io::Error::other(format!("{verb} fails")),
                });
            }
            self.calls.push(format!("{verb} {slot}"));
            Ok(())
        }
    }

    impl Bootloader for RecordingBootloader {
        fn describe(&self) -> String {
            "recording".into()
        }
        fn state(&self) -> Result<BootState, BootError> {
            Ok(self.boot.clone())
        }
        fn start_trial(&mut self, slot: Slot, _attempts: u32) -> Result<(), BootError> {
            self.call("start_trial", slot)
        }
        fn commit(&mut self, slot: Slot) -> Result<(), BootError> {
            self.call("commit", slot)
        }
        fn forget_slot(&mut self, slot: Slot) -> Result<(), BootError> {
            self.call("forget_slot", slot)
        }
    }

    fn marker(slot: Slot, version: &str) -> InProgress {
        InProgress {
            slot,
            version: version.into(),
            image_hash: "00".into(),
            images: Default::default(),
        }
    }

    fn install(machine: &mut DeviceState, boot: &mut RecordingBootloader, version: &str) {
        let target = Slot::B;
        machine
            .begin_install(&marker(target, version), boot)
            .unwrap();
        machine
            .record_installed(Installed {
                slot: slot_record(version),
                install: install_record(version, target),
                index: b"index",
                signature: "signature",
                images: Vec::new(),
            })
            .unwrap();
    }

    #[test]
    fn an_install_then_a_healthy_trial_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let mut boot = RecordingBootloader::default();
        let mut machine = DeviceState::load(&state_dir).unwrap();
        install(&mut machine, &mut boot, "2.0");
        assert_eq!(state_dir.in_progress().unwrap(), None);
        assert!(state_dir.seed_index(Slot::B).unwrap().is_some());
        machine.arm_trial(trial(Slot::B, "2.0"), &mut boot).unwrap();
        // The next boot runs the trial slot and it is healthy.
        let mut machine = DeviceState::load(&state_dir).unwrap();
        let outcome = machine
            .mark_good(Slot::B, &mut boot, Some("boot-2"))
            .unwrap();
        assert!(matches!(outcome, MarkGood::Committed { slot: Slot::B, .. }));
        assert_eq!(
            boot.calls,
            ["forget_slot b", "start_trial b", "commit b"].map(String::from)
        );
        let state = state_dir.load().unwrap();
        assert!(state.is_good(Slot::B));
        assert_eq!(state.trial(), None);
        // The commit owes its post-commit hooks in the same write, until they are settled.
        assert_eq!(
            state.owed_hooks(),
            Some(&OwedHooks::PostCommit {
                slot: Slot::B,
                version: "2.0".into(),
                previous_version: None,
            })
        );
        machine.settle_hooks().unwrap();
        assert_eq!(state_dir.load().unwrap().owed_hooks(), None);
    }

    fn on_trial(slot: Slot, bootcount: u32) -> BootState {
        BootState {
            selected: Some(slot),
            upgrade_available: true,
            bootcount,
            bootlimit: Some(3),
        }
    }

    #[test]
    fn a_failed_health_check_reboots_only_a_counted_trial_boot() {
        let armed = trial(Slot::B, "3.0"); // armed in boot-1
                                           // The trial slot runs after the reboot and the boot script counts it: reboot.
        assert_eq!(
            after_health_failure(Slot::B, Some(&armed), Some("boot-2"), &on_trial(Slot::B, 2)),
            HealthFailed::RebootTrial {
                slot: Slot::B,
                version: "3.0".into(),
                attempt: 2,
                attempts: 3
            }
        );
        let not_on_trial = |running| HealthFailed::NotOnTrial { slot: running };
        // Still the boot that armed the trial: the old slot runs, a reboot is not ours to do.
        assert_eq!(
            after_health_failure(Slot::A, Some(&armed), Some("boot-1"), &on_trial(Slot::B, 0)),
            not_on_trial(Slot::A)
        );
        // The bootloader fell back: the old slot runs and is not counted.
        let fallen_back = BootState {
            selected: Some(Slot::A),
            ..BootState::default()
        };
        assert_eq!(
            after_health_failure(Slot::A, Some(&armed), Some("boot-5"), &fallen_back),
            not_on_trial(Slot::A)
        );
        // No trial at all: a committed slot would only boot again.
        assert_eq!(
            after_health_failure(Slot::A, None, Some("boot-9"), &fallen_back),
            not_on_trial(Slot::A)
        );
        // The state says trial but the bootloader no longer counts (committed by hand):
        // rebooting would loop on the same slot.
        let committed = BootState {
            selected: Some(Slot::B),
            ..BootState::default()
        };
        assert_eq!(
            after_health_failure(Slot::B, Some(&armed), Some("boot-2"), &committed),
            not_on_trial(Slot::B)
        );
    }

    #[test]
    fn a_fall_back_is_recorded_as_a_failed_release() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let mut boot = RecordingBootloader::default();
        let mut machine = DeviceState::load(&state_dir).unwrap();
        install(&mut machine, &mut boot, "3.0");
        machine.arm_trial(trial(Slot::B, "3.0"), &mut boot).unwrap();
        // Mark-good in the same boot that armed the trial decides nothing.
        let pending = machine
            .mark_good(Slot::A, &mut boot, Some("boot-1"))
            .unwrap();
        assert!(matches!(pending, MarkGood::TrialPending { .. }));
        // After the reboots the old slot runs: the bootloader fell back.
        let outcome = machine
            .mark_good(Slot::A, &mut boot, Some("boot-5"))
            .unwrap();
        assert!(matches!(outcome, MarkGood::Reverted { slot: Slot::A, .. }));
        let state = state_dir.load().unwrap();
        assert!(state.failed("3.0").is_some());
        assert!(matches!(
            state.owed_hooks(),
            Some(OwedHooks::PostRevert { slot: Slot::A, failed_version, .. }) if failed_version == "3.0"
        ));
        assert_eq!(
            state.last_install().map(|l| l.result),
            Some(InstallResult::Reverted)
        );
        assert_eq!(boot.calls.last().map(String::as_str), Some("commit a"));
    }

    #[test]
    fn crash_orders_hold_when_the_bootloader_write_fails() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        // The bootloader cannot forget the slot: the marker is written, the slot's record
        // and seed are gone, so nothing trusts the slot's old content.
        let mut boot = RecordingBootloader {
            fail: Some("forget_slot"),
            ..Default::default()
        };
        let mut machine = DeviceState::load(&state_dir).unwrap();
        state_dir
            .set_seed_index(Slot::B, Some((b"old", "old")))
            .unwrap();
        assert!(machine
            .begin_install(&marker(Slot::B, "2.0"), &mut boot)
            .is_err());
        assert_eq!(
            state_dir.in_progress().unwrap(),
            Some(marker(Slot::B, "2.0"))
        );
        assert_eq!(state_dir.seed_index(Slot::B).unwrap(), None);
        // The trial cannot be armed: the slot is recorded installed, but no trial is.
        let mut boot = RecordingBootloader::default();
        install(&mut machine, &mut boot, "2.0");
        let mut boot = RecordingBootloader {
            fail: Some("start_trial"),
            ..Default::default()
        };
        assert!(machine.arm_trial(trial(Slot::B, "2.0"), &mut boot).is_err());
        let state = state_dir.load().unwrap();
        assert_eq!(state.version_in(Slot::B), Some("2.0"));
        assert_eq!(state.trial(), None);
    }

    #[test]
    fn mark_bad_and_rollback_need_a_good_other_slot() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let mut boot = RecordingBootloader::default();
        let mut machine = DeviceState::load(&state_dir).unwrap();
        assert!(matches!(
            machine.mark_bad(Slot::A, &mut boot, false),
            Err(TransitionError::NoGoodImage { slot: Slot::B })
        ));
        assert!(matches!(
            machine.rollback(Slot::A, &mut boot, 3, false, None),
            Err(TransitionError::NoGoodImage { slot: Slot::B })
        ));
        install(&mut machine, &mut boot, "2.0");
        machine.arm_trial(trial(Slot::B, "2.0"), &mut boot).unwrap();
        machine.mark_good(Slot::B, &mut boot, None).unwrap();
        assert_eq!(
            machine
                .rollback(Slot::A, &mut boot, 3, false, None)
                .unwrap(),
            Slot::B
        );
        assert_eq!(machine.state().trial().map(|t| t.slot), Some(Slot::B));
        assert_eq!(
            machine.mark_bad(Slot::A, &mut boot, false).unwrap(),
            Slot::B
        );
        assert_eq!(machine.state().trial(), None);
    }

    #[test]
    fn reinstalling_an_armed_slot_ends_its_trial_after_the_bootloader_forgot_it() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let mut boot = RecordingBootloader::default();
        let mut machine = DeviceState::load(&state_dir).unwrap();
        install(&mut machine, &mut boot, "3.0");
        machine.arm_trial(trial(Slot::B, "3.0"), &mut boot).unwrap();
        machine
            .begin_install(&marker(Slot::B, "3.0"), &mut boot)
            .unwrap();
        assert_eq!(machine.state().trial(), None);
        assert_eq!(machine.state().slot(Slot::B), None);
        assert_eq!(StateDir::new(dir.path()).load().unwrap().trial(), None);
        assert_eq!(boot.calls.last().map(String::as_str), Some("forget_slot b"));
    }

    #[test]
    fn decisions_after_boot() {
        let next_boot = Some("boot-2");
        assert_eq!(
            after_boot(Slot::B, Some(&trial(Slot::B, "2.0")), next_boot),
            AfterBoot::Commit {
                trial: trial(Slot::B, "2.0")
            }
        );
        assert_eq!(
            after_boot(Slot::A, Some(&trial(Slot::B, "2.0")), next_boot),
            AfterBoot::Reverted {
                trial: trial(Slot::B, "2.0")
            }
        );
        assert_eq!(after_boot(Slot::A, None, next_boot), AfterBoot::Confirm);
        assert_eq!(after_boot(Slot::A, None, None), AfterBoot::Confirm);
    }

    #[test]
    fn regression_mark_good_before_the_reboot_is_not_a_revert() {
        // mark-good run again in the boot that armed the trial must not record a failure.
        assert_eq!(
            after_boot(Slot::A, Some(&trial(Slot::B, "2.0")), Some("boot-1")),
            AfterBoot::NotYetTried {
                trial: trial(Slot::B, "2.0")
            }
        );
        // Without a boot id the old behaviour stays: treated as after a reboot.
        assert_eq!(
            after_boot(Slot::A, Some(&trial(Slot::B, "2.0")), None),
            AfterBoot::Reverted {
                trial: trial(Slot::B, "2.0")
            }
        );
    }
}
