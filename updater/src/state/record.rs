//! What the state file holds, and the pure transitions between states. The fields of
//! [`State`] are private to this module tree: everything outside reads them through
//! accessors, and only [`super::machine::DeviceState`] changes them, through the transitions
//! below, in the order that survives a crash.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::slot::Slot;

pub const STATE_FORMAT: u32 = 1;

/// Why the bytes of a state file are not a state this build reads.
#[derive(Debug, thiserror::Error)]
pub enum StateFormatError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("format {found} is not {STATE_FORMAT}")]
    UnknownFormat { found: u32 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    format: u32,
    #[serde(default)]
    slots: BTreeMap<Slot, SlotRecord>,
    #[serde(default)]
    last_install: Option<InstallRecord>,
    /// Highest channel file counter accepted, per channel.
    #[serde(default)]
    channel_counters: BTreeMap<String, u64>,
    /// A slot handed to the bootloader for a trial boot and not yet committed.
    #[serde(default)]
    trial: Option<Trial>,
    /// Releases that did not come up healthy here; not installed again unless forced.
    #[serde(default)]
    failed_releases: Vec<FailedRelease>,
    /// Hooks owed after a commit or a revert: written in the same step as the transition,
    /// cleared once they all succeeded, so a power cut in between runs them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owed_hooks: Option<OwedHooks>,
    /// What each single-copy target holds, as written and read back by diffota.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    single_copy: BTreeMap<String, SingleCopyRecord>,
}

/// A single-copy target's content, as written and read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SingleCopyRecord {
    pub version: String,
    pub image_hash: String,
    pub image_length: u64,
    pub written_at: u64,
}

impl Default for State {
    /// A device diffota has never written to.
    fn default() -> State {
        State {
            format: STATE_FORMAT,
            slots: BTreeMap::new(),
            last_install: None,
            channel_counters: BTreeMap::new(),
            trial: None,
            failed_releases: Vec::new(),
            owed_hooks: None,
            single_copy: BTreeMap::new(),
        }
    }
}

/// The after-boot hooks a transition owes, with what they are told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "point", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OwedHooks {
    /// `slot` was committed with `version`; `previous_version` ran before.
    PostCommit {
        slot: Slot,
        version: String,
        previous_version: Option<String>,
    },
    /// The trial of `failed_version` ended with the bootloader back on `slot`.
    PostRevert {
        slot: Slot,
        failed_version: String,
        reason: String,
    },
}

impl std::fmt::Display for OwedHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OwedHooks::PostCommit { slot, version, .. } => {
                write!(f, "post-commit hooks of {version} in slot {slot} have not succeeded yet")
            }
            OwedHooks::PostRevert {
                slot,
                failed_version,
                ..
            } => write!(
                f,
                "post-revert hooks after {failed_version} fell back to slot {slot} have not succeeded yet"
            ),
        }
    }
}

impl OwedHooks {
    /// The slot that ran when the hooks became owed: they run only there.
    pub fn slot(&self) -> Slot {
        match self {
            OwedHooks::PostCommit { slot, .. } | OwedHooks::PostRevert { slot, .. } => *slot,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    pub slot: Slot,
    pub version: String,
    pub from_slot: Slot,
    pub started_at: u64,
    pub attempts: u32,
    /// The kernel's boot id when the trial was armed: the trial has been tried only once
    /// the system has booted since.
    #[serde(default)]
    pub boot_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedRelease {
    pub version: String,
    pub reason: String,
    pub at: u64,
}

/// What a slot holds, as written and verified by diffota.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRecord {
    pub version: String,
    pub image_hash: String,
    pub image_length: u64,
    pub installed_at: u64,
    /// Booted and found healthy (`mark-good`).
    #[serde(default)]
    pub good: bool,
    /// The slot group's other images (`[images.<name>]`), written with this one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ImageRecord>,
}

/// One more image of a slot group, as written and verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    pub image_hash: String,
    pub image_length: u64,
}

/// How the last install ended, as far as the device knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallResult {
    /// Written, verified and handed to the bootloader.
    Installed,
    /// Its trial boot did not come up healthy; the device runs the old slot again.
    Reverted,
}

impl std::fmt::Display for InstallResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstallResult::Installed => "installed",
            InstallResult::Reverted => "reverted",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRecord {
    pub version: String,
    pub slot: Slot,
    pub result: InstallResult,
    pub finished_at: u64,
    pub downloaded_bytes: u64,
    pub requests: u64,
    pub image_bytes: u64,
    pub copied_bytes: u64,
}

/// An install under way: written before the target slot is touched, removed when done.
/// A later run of the same release into the same slot re-checks chunks already in place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InProgress {
    pub slot: Slot,
    pub version: String,
    pub image_hash: String,
    /// The slot group's other images being written (name, image hash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
}

/// Reading.
impl State {
    /// Reads a state file's bytes: JSON of this build's format, no unknown fields.
    pub fn decode(bytes: &[u8]) -> Result<State, StateFormatError> {
        let state: State = serde_json::from_slice(bytes)?;
        if state.format != STATE_FORMAT {
            return Err(StateFormatError::UnknownFormat {
                found: state.format,
            });
        }
        Ok(state)
    }

    pub fn slot(&self, slot: Slot) -> Option<&SlotRecord> {
        self.slots.get(&slot)
    }

    pub fn version_in(&self, slot: Slot) -> Option<&str> {
        self.slot(slot).map(|record| record.version.as_str())
    }

    pub fn is_good(&self, slot: Slot) -> bool {
        self.slot(slot).is_some_and(|record| record.good)
    }

    pub fn trial(&self) -> Option<&Trial> {
        self.trial.as_ref()
    }

    pub fn last_install(&self) -> Option<&InstallRecord> {
        self.last_install.as_ref()
    }

    pub fn failed_releases(&self) -> &[FailedRelease] {
        &self.failed_releases
    }

    pub fn failed(&self, version: &str) -> Option<&FailedRelease> {
        self.failed_releases.iter().find(|f| f.version == version)
    }

    pub fn single_copy(&self, name: &str) -> Option<&SingleCopyRecord> {
        self.single_copy.get(name)
    }

    /// Every single-copy target's record, by name.
    pub fn single_copy_records(&self) -> impl Iterator<Item = (&str, &SingleCopyRecord)> {
        self.single_copy
            .iter()
            .map(|(name, record)| (name.as_str(), record))
    }

    pub fn owed_hooks(&self) -> Option<&OwedHooks> {
        self.owed_hooks.as_ref()
    }

    /// The highest counter accepted for `channel`; 0 when none was.
    pub fn channel_counter(&self, channel: &str) -> u64 {
        self.channel_counters.get(channel).copied().unwrap_or(0)
    }
}

/// Transitions, each one step of the machine; `machine.rs` says when each may run and what
/// is written around it.
impl State {
    pub(super) fn accept_channel(&mut self, channel: &str, counter: u64) {
        self.channel_counters.insert(channel.to_owned(), counter);
    }

    /// The target slot is about to be overwritten: it no longer holds what it held.
    pub(super) fn begin_install(&mut self, target: Slot) {
        self.slots.remove(&target);
    }

    /// The pending trial is over without an outcome (its slot is being written again).
    pub(super) fn end_trial(&mut self) {
        self.trial = None;
    }

    /// The target slot was written and read back; no trial is armed yet.
    pub(super) fn record_installed(&mut self, slot: SlotRecord, install: InstallRecord) {
        self.slots.insert(install.slot, slot);
        self.last_install = Some(install);
        self.trial = None;
    }

    /// The slot was found to hold a release it was not installed with by diffota (the
    /// factory image): it is recorded as that release, good (it is what runs).
    pub(super) fn record_provisioned(&mut self, slot: Slot, record: SlotRecord) {
        self.slots.insert(slot, record);
    }

    pub(super) fn arm_trial(&mut self, trial: Trial) {
        self.trial = Some(trial);
    }

    /// `running` came up healthy: it is good, and no trial is pending any more.
    pub(super) fn confirm(&mut self, running: Slot) {
        if let Some(record) = self.slots.get_mut(&running) {
            record.good = true;
        }
        self.trial = None;
    }

    /// The trial slot did not come up healthy and the bootloader fell back to `running`.
    pub(super) fn record_revert(&mut self, trial: &Trial, running: Slot, reason: &str, at: u64) {
        self.record_failure(&trial.version, reason, at);
        if let Some(record) = self.slots.get_mut(&trial.slot) {
            record.good = false;
        }
        self.confirm(running);
    }

    /// The running slot failed its health check; the other slot boots next.
    pub(super) fn record_bad(&mut self, running: Slot, reason: &str, at: u64) {
        if let Some(version) = self.version_in(running).map(str::to_owned) {
            self.record_failure(&version, reason, at);
        }
        if let Some(record) = self.slots.get_mut(&running) {
            record.good = false;
        }
        self.trial = None;
    }

    /// A hook refused the release on this device: it is not installed again on its own.
    pub(super) fn record_refusal(&mut self, version: &str, reason: &str, at: u64) {
        self.record_failure(version, reason, at);
    }

    /// A commit or revert owes its hooks (replacing hooks owed before, which the newer
    /// transition's hooks supersede).
    pub(super) fn owe_hooks(&mut self, owed: OwedHooks) {
        self.owed_hooks = Some(owed);
    }

    /// A single-copy target is about to be written: it no longer holds what it held.
    pub(super) fn forget_single_copy(&mut self, name: &str) {
        self.single_copy.remove(name);
    }

    pub(super) fn record_single_copy(&mut self, name: &str, record: SingleCopyRecord) {
        self.single_copy.insert(name.to_owned(), record);
    }

    /// The owed hooks all succeeded, or their slot no longer runs.
    pub(super) fn settle_hooks(&mut self) {
        self.owed_hooks = None;
    }

    fn record_failure(&mut self, version: &str, reason: &str, at: u64) {
        self.failed_releases.retain(|f| f.version != version);
        self.failed_releases.push(FailedRelease {
            version: version.to_owned(),
            reason: reason.to_owned(),
            at,
        });
        if let Some(last) = self.last_install.as_mut().filter(|l| l.version == version) {
            last.result = InstallResult::Reverted;
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn slot_record(version: &str) -> SlotRecord {
        SlotRecord {
            version: version.into(),
            image_hash: "00".into(),
            image_length: 1,
            installed_at: 5,
            good: false,
            images: Default::default(),
        }
    }

    pub fn install_record(version: &str, slot: Slot) -> InstallRecord {
        InstallRecord {
            version: version.into(),
            slot,
            result: InstallResult::Installed,
            finished_at: 6,
            downloaded_bytes: 10,
            requests: 2,
            image_bytes: 1,
            copied_bytes: 0,
        }
    }

    pub fn trial(slot: Slot, version: &str) -> Trial {
        Trial {
            slot,
            version: version.into(),
            from_slot: slot.other(),
            started_at: 7,
            attempts: 3,
            boot_id: Some("boot-1".into()),
        }
    }

    /// A device on 1.0 in slot A, good.
    fn factory() -> State {
        let mut state = State::default();
        state.record_installed(slot_record("1.0"), install_record("1.0", Slot::A));
        state.confirm(Slot::A);
        state
    }

    #[test]
    fn install_trial_commit() {
        let mut state = factory();
        state.begin_install(Slot::B);
        assert_eq!(state.slot(Slot::B), None);
        state.record_installed(slot_record("2.0"), install_record("2.0", Slot::B));
        assert_eq!(state.version_in(Slot::B), Some("2.0"));
        assert!(!state.is_good(Slot::B));
        assert_eq!(
            state.trial(),
            None,
            "no trial before the bootloader has one"
        );
        state.arm_trial(trial(Slot::B, "2.0"));
        state.confirm(Slot::B);
        assert!(state.is_good(Slot::B) && state.is_good(Slot::A));
        assert_eq!(state.trial(), None);
        assert_eq!(
            state.last_install().map(|l| l.result),
            Some(InstallResult::Installed)
        );
        assert!(state.failed_releases().is_empty());
    }

    #[test]
    fn install_trial_revert_is_remembered() {
        let mut state = factory();
        state.begin_install(Slot::B);
        state.record_installed(slot_record("2.0"), install_record("2.0", Slot::B));
        let armed = trial(Slot::B, "2.0");
        state.arm_trial(armed.clone());
        state.record_revert(&armed, Slot::A, "no health", 9);
        assert_eq!(state.trial(), None);
        assert!(!state.is_good(Slot::B));
        assert!(state.is_good(Slot::A));
        assert_eq!(state.failed("2.0").map(|f| f.at), Some(9));
        assert_eq!(
            state.last_install().map(|l| l.result),
            Some(InstallResult::Reverted)
        );
        // Failing the same release again replaces its record, it does not pile up.
        state.record_revert(&armed, Slot::A, "again", 10);
        assert_eq!(state.failed_releases().len(), 1);
        assert_eq!(
            state.failed("2.0").map(|f| f.reason.as_str()),
            Some("again")
        );
    }

    #[test]
    fn marked_bad_running_slot() {
        let mut state = factory();
        state.arm_trial(trial(Slot::B, "1.0"));
        state.record_bad(Slot::A, "health check", 11);
        assert!(!state.is_good(Slot::A));
        assert_eq!(state.failed("1.0").map(|f| f.at), Some(11));
        assert_eq!(state.trial(), None);
    }

    #[test]
    fn channel_counters_and_results_as_text() {
        let mut state = State::default();
        assert_eq!(state.channel_counter("stable"), 0);
        state.accept_channel("stable", 7);
        assert_eq!(state.channel_counter("stable"), 7);
        state.record_installed(slot_record("2.0"), install_record("2.0", Slot::B));
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains("\"result\":\"installed\""), "{json}");
        assert_eq!(State::decode(json.as_bytes()).unwrap(), state);
        let reverted = json.replace("\"installed\"", "\"reverted\"");
        assert_eq!(
            State::decode(reverted.as_bytes())
                .unwrap()
                .last_install()
                .map(|l| l.result),
            Some(InstallResult::Reverted)
        );
        let unknown = json.replace("\"installed\"", "\"exploded\"");
        assert!(matches!(
            State::decode(unknown.as_bytes()),
            Err(StateFormatError::Json(_))
        ));
        let future = json.replace("\"format\":1", "\"format\":2");
        assert!(matches!(
            State::decode(future.as_bytes()),
            Err(StateFormatError::UnknownFormat { found: 2 })
        ));
    }
}
