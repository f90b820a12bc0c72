//! The state directory (on the data partition, outside both slots): the state file, the
//! install-in-progress marker and each slot's seed index. Every file is replaced atomically:
//! write, fsync, rename, fsync the directory.

use std::path::{Path, PathBuf};

use serde::Serialize;

use diffota_format::signature::signature_path;

use super::record::{InProgress, State, StateFormatError};
use crate::limits;
use crate::slot::Slot;
use diffota_files::atomic;
use diffota_files::local_file::{self, Links};

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

#[derive(Clone, Debug)]
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

    /// The device lock (`DeviceLock`).
    pub fn lock_path(&self) -> PathBuf {
        self.path("lock")
    }

    /// Where a single-copy image for a handler is assembled and verified.
    pub fn single_copy_image_path(&self, name: &str) -> PathBuf {
        self.path(&format!("single-copy-{name}.img"))
    }

    pub fn state_path(&self) -> PathBuf {
        self.path("state.json")
    }

    pub fn seed_index_path(&self, slot: Slot) -> PathBuf {
        self.image_seed_index_path(crate::config::ROOTFS, slot)
    }

    /// `slot-<slot>.didx` for `rootfs`, `slot-<slot>-<image>.didx` for the other images of a
    /// slot group.
    pub fn image_seed_index_path(&self, image: &str, slot: Slot) -> PathBuf {
        match image {
            crate::config::ROOTFS => self.path(&format!("slot-{slot}.didx")),
            _ => self.path(&format!("slot-{slot}-{image}.didx")),
        }
    }

    pub fn load(&self) -> Result<State, StateError> {
        let path = self.state_path();
        match read_optional(&path, limits::STATE)? {
            None => Ok(State::default()),
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
        match read_optional(&path, limits::STATE)? {
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
        self.image_seed_index(crate::config::ROOTFS, slot)
    }

    /// The signed index image `image`'s slot `slot` was last written with.
    pub fn image_seed_index(
        &self,
        image: &str,
        slot: Slot,
    ) -> Result<Option<(Vec<u8>, String)>, StateError> {
        let path = self.image_seed_index_path(image, slot);
        let signature_path = signature_path(&path);
        match (
            read_optional(&path, limits::INDEX)?,
            read_optional(&signature_path, limits::SIGNATURE)?,
        ) {
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
        self.set_image_seed_index(crate::config::ROOTFS, slot, index)
    }

    pub fn set_image_seed_index(
        &self,
        image: &str,
        slot: Slot,
        index: Option<(&[u8], &str)>,
    ) -> Result<(), StateError> {
        let path = self.image_seed_index_path(image, slot);
        let signature_path = signature_path(&path);
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

/// A file of the state directory, if it exists: a regular file of at most `limit` bytes,
/// not a link (the directory is ours; a link or FIFO there is an error naming the file).
fn read_optional(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, StateError> {
    match local_file::read_bounded(path, limit, Links::Refuse) {
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
        Ok(()) => atomic::sync_parent(path).map_err(|source| StateError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces `path` with `bytes` atomically (`diffota_files::atomic::replace`), creating the state
/// directory when it is missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    atomic::replace(path, bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let mut state = state_dir.load().unwrap();
        assert_eq!(state, State::default());
        state.accept_channel("stable", 7);
        state.record_installed(
            super::super::record::tests::slot_record("2"),
            super::super::record::tests::install_record("2", Slot::B),
        );
        state_dir.save(&state).unwrap();
        assert_eq!(state_dir.load().unwrap(), state);
        std::fs::write(state_dir.state_path(), b"{ not json").unwrap();
        let error = state_dir.load().unwrap_err();
        assert!(
            matches!(
                &error,
                StateError::Corrupt {
                    source: StateFormatError::Json(_),
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("corrupt state file"), "{error}");
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
