//! Persistent device state in the state directory (on the data partition, outside both
//! slots): what each slot holds, the last install's result, the highest channel counter
//! seen, and for each slot the signed index it was last written with (its seed for the next
//! install). Every file is replaced atomically: write, fsync, rename, fsync the directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::slot::Slot;

pub const STATE_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt state file ({source}); move it aside to start from a clean state")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: StateFormatError,
    },
}

/// Why the bytes of a state file are not a state this build reads.
#[derive(Debug, thiserror::Error)]
pub enum StateFormatError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("format {found} is not {STATE_FORMAT}")]
    UnknownFormat { found: u32 },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    #[serde(default)]
    pub slots: BTreeMap<Slot, SlotRecord>,
    #[serde(default)]
    pub last_install: Option<InstallRecord>,
    /// Highest channel file counter accepted, per channel.
    #[serde(default)]
    pub channel_counters: BTreeMap<String, u64>,
    /// A slot handed to the bootloader for a trial boot and not yet committed.
    #[serde(default)]
    pub trial: Option<Trial>,
    /// Releases that did not come up healthy here; not installed again unless forced.
    #[serde(default)]
    pub failed_releases: Vec<FailedRelease>,
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

    pub fn failed(&self, version: &str) -> Option<&FailedRelease> {
        self.failed_releases.iter().find(|f| f.version == version)
    }
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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRecord {
    pub version: String,
    pub slot: Slot,
    pub result: String,
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
}

pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: &Path) -> StateDir {
        StateDir {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn state_path(&self) -> PathBuf {
        self.path("state.json")
    }

    pub fn seed_index_path(&self, slot: Slot) -> PathBuf {
        self.path(&format!("slot-{slot}.didx"))
    }

    pub fn load(&self) -> Result<State, StateError> {
        let path = self.state_path();
        match read_optional(&path)? {
            None => Ok(State {
                format: STATE_FORMAT,
                ..State::default()
            }),
            Some(bytes) => {
                State::decode(&bytes).map_err(|source| StateError::Corrupt { path, source })
            }
        }
    }

    pub fn save(&self, state: &State) -> Result<(), StateError> {
        self.write_json(&self.state_path(), state)
    }

    pub fn in_progress(&self) -> Result<Option<InProgress>, StateError> {
        let path = self.path("install-in-progress.json");
        match read_optional(&path)? {
            None => Ok(None),
            // A marker that does not parse only costs the in-place check; it is not fatal.
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        }
    }

    pub fn set_in_progress(&self, marker: Option<&InProgress>) -> Result<(), StateError> {
        let path = self.path("install-in-progress.json");
        match marker {
            Some(marker) => self.write_json(&path, marker),
            None => remove_optional(&path),
        }
    }

    /// The signed index bytes a slot was last written with, and their signature.
    pub fn seed_index(&self, slot: Slot) -> Result<Option<(Vec<u8>, String)>, StateError> {
        let path = self.seed_index_path(slot);
        let signature_path = with_suffix(&path, ".minisig");
        match (read_optional(&path)?, read_optional(&signature_path)?) {
            (Some(bytes), Some(signature)) => Ok(Some((
                bytes,
                String::from_utf8_lossy(&signature).into_owned(),
            ))),
            _ => Ok(None),
        }
    }

    pub fn set_seed_index(
        &self,
        slot: Slot,
        index: Option<(&[u8], &str)>,
    ) -> Result<(), StateError> {
        let path = self.seed_index_path(slot);
        let signature_path = with_suffix(&path, ".minisig");
        match index {
            Some((bytes, signature)) => {
                write_atomic(&path, bytes)?;
                write_atomic(&signature_path, signature.as_bytes())
            }
            None => {
                remove_optional(&path)?;
                remove_optional(&signature_path)
            }
        }
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec_pretty(value).expect("state serializes");
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn remove_optional(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn sync_parent(path: &Path) -> Result<(), StateError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// Replaces `path` with `bytes`: write a temporary file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let temp = with_suffix(path, &format!(".tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(io(source));
    }
    sync_parent(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let mut state = state_dir.load().unwrap();
        state.channel_counters.insert("stable".into(), 7);
        state.slots.insert(
            Slot::B,
            SlotRecord {
                version: "2".into(),
                image_hash: "00".into(),
                image_length: 1,
                installed_at: 5,
                good: false,
            },
        );
        state_dir.save(&state).unwrap();
        assert_eq!(state_dir.load().unwrap(), state);
        std::fs::write(state_dir.state_path(), b"{ not json").unwrap();
        let error = state_dir.load().unwrap_err().to_string();
        assert!(error.contains("corrupt state file"), "{error}");
    }

    #[test]
    fn seed_index_set_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        state_dir
            .set_seed_index(Slot::A, Some((b"idx", "sig")))
            .unwrap();
        assert_eq!(
            state_dir.seed_index(Slot::A).unwrap(),
            Some((b"idx".to_vec(), "sig".to_owned()))
        );
        state_dir.set_seed_index(Slot::A, None).unwrap();
        assert_eq!(state_dir.seed_index(Slot::A).unwrap(), None);
    }
}
