//! What `check` and `install` report: serialized for `--json`, displayed for people.

use std::fmt;

use crate::plan::PlanSummary;
use crate::slot::Slot;

#[derive(Debug, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Installed(InstallReport),
    UpToDate {
        version: String,
    },
    NotEligible {
        version: String,
        reason: String,
    },
    PreviouslyFailed {
        version: String,
        reason: String,
    },
    /// Already installed in the other slot, waiting for the reboot into its trial.
    PendingReboot {
        version: String,
        slot: Slot,
    },
    /// A hook said "not now" (exit 75): nothing is armed, the next run tries again.
    Postponed {
        version: String,
        hook: String,
        point: String,
        message: String,
    },
    /// A hook said "never" (exit 77): this device refuses the release for good.
    Refused {
        version: String,
        hook: String,
        point: String,
        message: String,
    },
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct InstallReport {
    pub version: String,
    pub slot: Option<Slot>,
    pub image_bytes: u64,
    pub in_place_bytes: u64,
    pub copied_bytes: u64,
    pub fetched_image_bytes: u64,
    pub downloaded_bytes: u64,
    pub requests: u64,
    pub seconds: f64,
    /// Each image of a release of several, in the order installed (empty for one image).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<crate::outcomes::ImageFigures>,
}

/// What `check` reports: the release, whether it applies, and the planned download.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    pub running_slot: Slot,
    pub running_version: Option<String>,
    pub channel: Option<String>,
    pub channel_counter: Option<u64>,
    pub version: String,
    pub eligible: bool,
    pub eligibility: String,
    pub decision: String,
    pub update_available: bool,
    /// What would make `install` fail before it writes (the inactive slot too small for
    /// the image): `check` exits 1 with it.
    pub cannot_install: Option<String>,
    pub plan: PlanSummary,
    pub metadata_bytes: u64,
    /// For a bundle: the releases it was made for and the chunks this device needs that it lacks.
    pub bundle: Option<BundleCheck>,
    /// The slot group's other images (`[images.<name>]`): each one's planned download
    /// (`plan` is `rootfs`'s).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImagePlan>,
}

#[derive(Debug, serde::Serialize)]
pub struct ImagePlan {
    pub name: String,
    pub plan: PlanSummary,
}

#[derive(Debug, serde::Serialize)]
pub struct BundleCheck {
    pub made_for: Vec<String>,
    pub missing_chunks: u64,
}

impl Outcome {
    /// Whether a slot was written: the only outcome that can be followed by a reboot.
    pub fn installed(&self) -> bool {
        matches!(self, Outcome::Installed(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Installed(report) => write!(
                f,
                "installed {} into slot {}: {} bytes downloaded in {} requests for a {} byte image ({} copied from the running slot, {} already in place) in {:.1} s; it boots on trial next",
                report.version,
                report.slot.map_or("?".into(), |s| s.to_string()),
                report.downloaded_bytes,
                report.requests,
                report.image_bytes,
                report.copied_bytes,
                report.in_place_bytes,
                report.seconds
            ),
            Outcome::UpToDate { version } => write!(f, "up to date: {version} is already running"),
            Outcome::NotEligible { version, reason } => write!(f, "not installing {version}: {reason}"),
            Outcome::PendingReboot { version, slot } => write!(
                f,
                "{version} is installed in slot {slot} and boots on trial after the next reboot"
            ),
            Outcome::PreviouslyFailed { version, reason } => write!(
                f,
                "not installing {version}: it failed on this device before ({reason}); a newer release or --force will"
            ),
            Outcome::Postponed {
                version,
                hook,
                point,
                message,
            } => write!(
                f,
                "not installing {version} now: the {point} hook {hook} said not now{}; nothing is armed, and the next run tries again",
                said(message)
            ),
            Outcome::Refused {
                version,
                hook,
                point,
                message,
            } => write!(
                f,
                "not installing {version}: the {point} hook {hook} refused it{}; it will not be installed here again unless forced",
                said(message)
            ),
        }
    }
}

fn said(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "running slot {} ({})",
            self.running_slot,
            self.running_version.as_deref().unwrap_or("unknown version")
        )?;
        if let Some(channel) = &self.channel {
            writeln!(
                f,
                "channel {channel} (counter {}) offers {}",
                self.channel_counter.unwrap_or(0),
                self.version
            )?;
        }
        writeln!(f, "eligibility: {}", self.eligibility)?;
        writeln!(f, "decision: {}", self.decision)?;
        let plan = &self.plan;
        writeln!(
            f,
            "download: {} bytes in {} requests for a {} byte image ({} of {} chunks from the running slot)",
            plan.fetch_bytes, plan.fetch_requests, plan.image_bytes, plan.local_chunks, plan.chunks
        )?;
        for image in &self.images {
            let plan = &image.plan;
            writeln!(
                f,
                "image {}: {} bytes in {} requests for a {} byte image ({} of {} chunks from the running slot)",
                image.name, plan.fetch_bytes, plan.fetch_requests, plan.image_bytes, plan.local_chunks, plan.chunks
            )?;
        }
        if let Some(bundle) = &self.bundle {
            let made_for = if bundle.made_for.is_empty() {
                "any release".to_owned()
            } else {
                bundle.made_for.join(" or ")
            };
            if bundle.missing_chunks == 0 {
                writeln!(f, "bundle: applies (made for devices on {made_for}); everything missing from the running slot is in the bundle")?;
            } else {
                writeln!(f, "bundle: lacks {} chunks this device needs; it was made for devices on {made_for}", bundle.missing_chunks)?;
            }
        }
        write!(
            f,
            "update available: {}",
            if self.update_available { "yes" } else { "no" }
        )
    }
}
