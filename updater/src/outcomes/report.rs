//! The report of one outcome, built from what the device recorded (pure).

use serde::{Deserialize, Serialize};

use crate::slot::Slot;
use crate::state::{MarkGood, State, Trial};

/// How an update ended on this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeResult {
    /// The new slot booted, was found healthy, and is committed.
    Committed,
    /// The new slot did not come up healthy; the bootloader went back to the old one.
    Reverted,
    /// The install stopped with an error; nothing was handed to the bootloader.
    InstallFailed,
}

impl std::fmt::Display for OutcomeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutcomeResult::Committed => "committed",
            OutcomeResult::Reverted => "reverted",
            OutcomeResult::InstallFailed => "install_failed",
        })
    }
}

/// What a finished install measured, kept until its trial has an outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingInstall {
    pub from_version: Option<String>,
    pub to_version: String,
    pub slot: Slot,
    pub downloaded_bytes: u64,
    pub requests: u64,
    pub install_seconds: f64,
    pub finished_at: u64,
    /// Each image of a release of several (none for a one-image release).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageFigures>,
}

/// What an install did with one image of the release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFigures {
    pub name: String,
    /// `slot` or `single-copy`.
    pub install: String,
    pub image_bytes: u64,
    /// Of the image, what came from the store (the rest from the running slot or in place).
    pub fetched_image_bytes: u64,
    /// False for a single-copy image its target held already.
    pub written: bool,
}

/// One report, as POSTed (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeReport {
    /// Stable across re-sends: the endpoint keeps a report once by this id.
    pub id: String,
    pub device_id: String,
    pub result: OutcomeResult,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub slot: Option<Slot>,
    pub error: Option<String>,
    pub downloaded_bytes: Option<u64>,
    pub requests: Option<u64>,
    pub install_seconds: Option<f64>,
    /// From the trial being armed to this outcome (reboots included).
    pub trial_seconds: Option<u64>,
    /// Boots of the new slot the bootloader counted, and how many it allowed.
    pub boots_used: Option<u32>,
    pub boot_attempts: Option<u32>,
    /// Unix time of the outcome.
    pub at: u64,
    /// Each image of a release of several: they share the outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageFigures>,
}

/// A trial's outcome, as `mark-good` found it.
pub struct TrialOutcome<'a> {
    pub result: OutcomeResult,
    pub device_id: &'a str,
    pub to_version: &'a str,
    pub slot: Slot,
    pub from_version: Option<&'a str>,
    pub trial_started_at: u64,
    pub boots_used: u32,
    pub boot_attempts: u32,
    pub error: Option<String>,
    pub at: u64,
}

impl OutcomeReport {
    /// The report of a committed or reverted trial; `install` is what the install measured,
    /// when it was recorded for this version.
    pub fn of_trial(outcome: TrialOutcome<'_>, install: Option<&PendingInstall>) -> OutcomeReport {
        let install = install.filter(|i| i.to_version == outcome.to_version);
        let mut report = OutcomeReport {
            id: String::new(),
            device_id: outcome.device_id.to_owned(),
            result: outcome.result,
            from_version: outcome
                .from_version
                .map(str::to_owned)
                .or_else(|| install.and_then(|i| i.from_version.clone())),
            to_version: Some(outcome.to_version.to_owned()),
            slot: Some(outcome.slot),
            error: outcome.error,
            downloaded_bytes: install.map(|i| i.downloaded_bytes),
            requests: install.map(|i| i.requests),
            install_seconds: install.map(|i| i.install_seconds),
            trial_seconds: Some(outcome.at.saturating_sub(outcome.trial_started_at)),
            boots_used: Some(outcome.boots_used),
            boot_attempts: Some(outcome.boot_attempts),
            at: outcome.at,
            images: install.map(|i| i.images.clone()).unwrap_or_default(),
        };
        report.id = report.stable_id(outcome.trial_started_at);
        report
    }

    /// The report of an install that stopped with `error`.
    pub fn of_failed_install(
        device_id: &str,
        from_version: Option<&str>,
        to_version: Option<&str>,
        error: String,
        at: u64,
    ) -> OutcomeReport {
        let mut report = OutcomeReport {
            id: String::new(),
            device_id: device_id.to_owned(),
            result: OutcomeResult::InstallFailed,
            from_version: from_version.map(str::to_owned),
            to_version: to_version.map(str::to_owned),
            slot: None,
            error: Some(error),
            downloaded_bytes: None,
            requests: None,
            install_seconds: None,
            trial_seconds: None,
            boots_used: None,
            boot_attempts: None,
            images: Vec::new(),
            at,
        };
        report.id = report.stable_id(at);
        report
    }

    /// A hash of what makes this outcome this outcome: the device, the result, the versions
    /// and when the attempt began (the trial's start, or the failure's time).
    fn stable_id(&self, began_at: u64) -> String {
        let key = format!(
            "diffota outcome\n{}\n{}\n{}\n{}\n{began_at}",
            self.device_id,
            self.result,
            self.from_version.as_deref().unwrap_or(""),
            self.to_version.as_deref().unwrap_or("")
        );
        blake3::hash(key.as_bytes()).to_hex()[..32].to_owned()
    }
}

/// The report of what `mark-good` decided, when it ended a trial: `before` is the state and
/// `bootcount` the bootloader's count read before `mark-good` changed them.
pub fn of_mark_good(
    outcome: &MarkGood,
    before: &State,
    bootcount: Option<u32>,
    device_id: &str,
    install: Option<&PendingInstall>,
    at: u64,
) -> Option<OutcomeReport> {
    let trial: &Trial = before.trial()?;
    let (result, boots_used, error) = match outcome {
        MarkGood::Committed { .. } => (
            OutcomeResult::Committed,
            bootcount.unwrap_or(1).max(1),
            None,
        ),
        MarkGood::Reverted { reason, .. } => (
            OutcomeResult::Reverted,
            trial.attempts,
            Some(reason.clone()),
        ),
        MarkGood::AlreadyGood { .. } | MarkGood::TrialPending { .. } => return None,
    };
    Some(OutcomeReport::of_trial(
        TrialOutcome {
            result,
            device_id,
            to_version: &trial.version,
            slot: trial.slot,
            from_version: before.version_in(trial.from_slot),
            trial_started_at: trial.started_at,
            boots_used,
            boot_attempts: trial.attempts,
            error,
            at,
        },
        install,
    ))
}

impl std::fmt::Display for OutcomeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.result,
            self.from_version.as_deref().unwrap_or("?"),
            self.to_version.as_deref().unwrap_or("?")
        )?;
        if let Some(error) = &self.error {
            write!(f, " ({error})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(version: &str) -> PendingInstall {
        PendingInstall {
            from_version: Some("1.0".into()),
            to_version: version.into(),
            slot: Slot::B,
            downloaded_bytes: 1234,
            requests: 5,
            install_seconds: 2.5,
            finished_at: 100,
            images: vec![ImageFigures {
                name: "appfs".into(),
                install: "slot".into(),
                image_bytes: 4096,
                fetched_image_bytes: 512,
                written: true,
            }],
        }
    }

    fn trial(result: OutcomeResult, to: &str, at: u64) -> TrialOutcome<'static> {
        TrialOutcome {
            result,
            device_id: "dev-1",
            to_version: if to == "2.0" { "2.0" } else { "3.0" },
            slot: Slot::B,
            from_version: None,
            trial_started_at: 110,
            boots_used: 1,
            boot_attempts: 3,
            error: None,
            at,
        }
    }

    #[test]
    fn a_committed_trial_carries_what_its_install_measured() {
        let report = OutcomeReport::of_trial(
            trial(OutcomeResult::Committed, "2.0", 170),
            Some(&install("2.0")),
        );
        assert_eq!(report.from_version.as_deref(), Some("1.0"));
        assert_eq!(report.downloaded_bytes, Some(1234));
        assert_eq!(report.requests, Some(5));
        assert_eq!(report.trial_seconds, Some(60));
        assert_eq!(
            report
                .images
                .iter()
                .map(|i| (i.name.as_str(), i.fetched_image_bytes))
                .collect::<Vec<_>>(),
            [("appfs", 512)],
            "each image shares the trial's outcome"
        );
        assert_eq!(
            (report.boots_used, report.boot_attempts),
            (Some(1), Some(3))
        );
        assert_eq!(report.id.len(), 32);
    }

    #[test]
    fn an_install_of_another_version_is_not_attributed() {
        let report = OutcomeReport::of_trial(
            trial(OutcomeResult::Reverted, "3.0", 170),
            Some(&install("2.0")),
        );
        assert_eq!(report.downloaded_bytes, None);
        assert_eq!(report.from_version, None);
    }

    #[test]
    fn the_id_is_stable_for_one_outcome_and_differs_between_outcomes() {
        let a = OutcomeReport::of_trial(trial(OutcomeResult::Committed, "2.0", 170), None);
        let again = OutcomeReport::of_trial(trial(OutcomeResult::Committed, "2.0", 999), None);
        assert_eq!(a.id, again.id, "the same trial's outcome, decided later");
        let reverted = OutcomeReport::of_trial(trial(OutcomeResult::Reverted, "2.0", 170), None);
        assert_ne!(a.id, reverted.id);
        let failed = OutcomeReport::of_failed_install("dev-1", Some("1.0"), None, "x".into(), 5);
        let failed_later =
            OutcomeReport::of_failed_install("dev-1", Some("1.0"), None, "x".into(), 6);
        assert_ne!(failed.id, failed_later.id, "two failures are two reports");
    }

    #[test]
    fn reports_round_trip_as_json() {
        let report = OutcomeReport::of_trial(
            trial(OutcomeResult::Committed, "2.0", 170),
            Some(&install("2.0")),
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"result\":\"committed\""), "{json}");
        assert_eq!(
            serde_json::from_str::<OutcomeReport>(&json).unwrap(),
            report
        );
    }
}
