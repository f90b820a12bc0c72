//! Channel files (`channels/<name>.json`, signed like an index): which release a channel
//! points at and how far it is rolled out. They are the only store files that change, so
//! every one carries a counter that grows with each new file and an expiry: a device that
//! remembers the highest counter it saw refuses replays, and an expired file is refused
//! (freeze attack).
//!
//! Rollout: a device's bucket is a stable hash of its id and the release version, in
//! 0..10000; it is eligible when listed as a canary or when its bucket is below the current
//! percentage (in hundredths of a percent). Raising the percentage only ever adds devices.

use serde::{Deserialize, Serialize};

use crate::FormatError;

pub const CHANNEL_FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub format: u32,
    pub channel: String,
    /// Grows with every channel file published for this channel.
    pub counter: u64,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds; devices refuse the file after this.
    pub expires_at: u64,
    pub release: ReleaseRef,
    #[serde(default)]
    pub rollout: Rollout,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRef {
    pub version: String,
    pub compatible: String,
    /// Path of the index relative to the store root, e.g. `releases/2.0/rootfs.didx`.
    pub index: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Percentage of devices eligible when no stage has started yet (0 to 100).
    pub percent: f64,
    /// Time-based stages; the latest one whose time has come sets the percentage.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Device ids that are always eligible (canaries).
    #[serde(default)]
    pub devices: Vec<String>,
    /// A paused channel starts no new installs.
    #[serde(default)]
    pub paused: bool,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            percent: 100.0,
            stages: Vec::new(),
            devices: Vec::new(),
            paused: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Unix seconds.
    pub at: u64,
    pub percent: f64,
}

/// Why a device may or may not install the channel's release now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Eligibility {
    Canary,
    InRollout { bucket: u32, threshold: u32 },
    NotInRollout { bucket: u32, threshold: u32 },
    Paused,
}

impl Eligibility {
    pub fn is_eligible(&self) -> bool {
        matches!(self, Eligibility::Canary | Eligibility::InRollout { .. })
    }
}

impl std::fmt::Display for Eligibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |v: u32| v as f64 / 100.0;
        match self {
            Eligibility::Canary => write!(f, "listed as a canary device"),
            Eligibility::InRollout { bucket, threshold } => {
                write!(
                    f,
                    "in rollout (bucket {:.2}% < {:.2}%)",
                    pct(*bucket),
                    pct(*threshold)
                )
            }
            Eligibility::NotInRollout { bucket, threshold } => {
                write!(
                    f,
                    "not in rollout (bucket {:.2}% >= {:.2}%)",
                    pct(*bucket),
                    pct(*threshold)
                )
            }
            Eligibility::Paused => write!(f, "channel is paused"),
        }
    }
}

/// The device's stable bucket for a release, in 0..10000.
pub fn bucket(device_id: &str, version: &str) -> u32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"diffota-rollout-v1\0");
    hasher.update(device_id.as_bytes());
    hasher.update(b"\0");
    hasher.update(version.as_bytes());
    let hash = hasher.finalize();
    let word = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
    (word % 10_000) as u32
}

fn basis_points(percent: f64) -> u32 {
    (percent.clamp(0.0, 100.0) * 100.0).round() as u32
}

/// Why bytes are not a channel file this build accepts.
#[derive(Debug, thiserror::Error)]
pub enum ChannelProblem {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("format {0} is not supported")]
    Format(u32),
    #[error("index path {0:?} is not a relative store path")]
    IndexPath(String),
    #[error("percentage {0} outside 0..100")]
    Percent(f64),
}

impl Channel {
    pub fn parse(bytes: &[u8]) -> Result<Channel, FormatError> {
        let channel: Channel =
            serde_json::from_slice(bytes).map_err(|e| FormatError::BadChannel(e.into()))?;
        channel.validate()?;
        Ok(channel)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("channel serializes");
        out.push(b'\n');
        out
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        if self.format != CHANNEL_FORMAT {
            return Err(ChannelProblem::Format(self.format).into());
        }
        crate::index::validate_version(&self.release.version)?;
        crate::index::validate_compatible(&self.release.compatible)?;
        let path_ok = !self.release.index.is_empty()
            && !self.release.index.starts_with('/')
            && self
                .release
                .index
                .split('/')
                .all(|part| !part.is_empty() && part != "..");
        if !path_ok {
            return Err(ChannelProblem::IndexPath(self.release.index.clone()).into());
        }
        let percents = std::iter::once(self.rollout.percent)
            .chain(self.rollout.stages.iter().map(|s| s.percent));
        for percent in percents {
            if !(0.0..=100.0).contains(&percent) {
                return Err(ChannelProblem::Percent(percent).into());
            }
        }
        Ok(())
    }

    /// The percentage in force at `now`, in hundredths of a percent.
    pub fn threshold_at(&self, now: u64) -> u32 {
        let staged = self
            .rollout
            .stages
            .iter()
            .filter(|s| s.at <= now)
            .max_by_key(|s| s.at);
        basis_points(staged.map_or(self.rollout.percent, |s| s.percent))
    }

    pub fn eligibility(&self, device_id: &str, now: u64) -> Eligibility {
        if self.rollout.paused {
            return Eligibility::Paused;
        }
        if self.rollout.devices.iter().any(|d| d == device_id) {
            return Eligibility::Canary;
        }
        let bucket = bucket(device_id, &self.release.version);
        let threshold = self.threshold_at(now);
        if bucket < threshold {
            Eligibility::InRollout { bucket, threshold }
        } else {
            Eligibility::NotInRollout { bucket, threshold }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(percent: f64) -> Channel {
        Channel {
            format: 1,
            channel: "stable".into(),
            counter: 1,
            issued_at: 100,
            expires_at: 1000,
            release: ReleaseRef {
                version: "2.0".into(),
                compatible: "board".into(),
                index: "releases/2.0/rootfs.didx".into(),
            },
            rollout: Rollout {
                percent,
                ..Rollout::default()
            },
        }
    }

    #[test]
    fn json_round_trip_and_unknown_keys() {
        let c = channel(10.0);
        assert_eq!(Channel::parse(&c.to_json()).unwrap(), c);
        let text = String::from_utf8(c.to_json())
            .unwrap()
            .replace("\"format\"", "\"formta\"");
        assert!(Channel::parse(text.as_bytes()).is_err());
    }

    #[test]
    fn fractions_match_percentages() {
        for percent in [1.0, 5.0, 25.0, 50.0, 100.0] {
            let c = channel(percent);
            let n = 100_000;
            let eligible = (0..n)
                .filter(|i| c.eligibility(&format!("device-{i}"), 0).is_eligible())
                .count();
            let fraction = eligible as f64 * 100.0 / n as f64;
            assert!(
                (fraction - percent).abs() <= 1.0,
                "{percent}% gave {fraction}%"
            );
        }
    }

    #[test]
    fn canary_pause_and_stages() {
        let mut c = channel(0.0);
        c.rollout.devices.push("canary-1".into());
        assert_eq!(c.eligibility("canary-1", 0), Eligibility::Canary);
        assert!(!c.eligibility("other", 0).is_eligible());
        c.rollout.stages = vec![Stage {
            at: 50,
            percent: 100.0,
        }];
        assert!(c.eligibility("other", 60).is_eligible());
        assert!(!c.eligibility("other", 40).is_eligible());
        c.rollout.paused = true;
        assert_eq!(c.eligibility("canary-1", 60), Eligibility::Paused);
    }

    #[test]
    fn bad_index_paths_refused() {
        for path in ["/etc/passwd", "releases/../../x", "", "a//b"] {
            let mut c = channel(1.0);
            c.release.index = path.into();
            assert!(
                matches!(
                    c.validate(),
                    Err(FormatError::BadChannel(ChannelProblem::IndexPath(p))) if p == path
                ),
                "{path}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn raising_the_percentage_only_adds(id in "[a-z0-9]{1,20}", low in 0.0f64..100.0, extra in 0.0f64..100.0) {
            let high = (low + extra).min(100.0);
            if channel(low).eligibility(&id, 0).is_eligible() {
                proptest::prop_assert!(channel(high).eligibility(&id, 0).is_eligible());
            }
        }
    }
}
