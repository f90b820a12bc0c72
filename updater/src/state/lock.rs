//! One state-changing operation at a time on the whole device. `install`, `mark-good`,
//! `mark-bad` and `rollback` hold an exclusive lock on `<state_dir>/lock` (`flock`) while they
//! run, whoever starts them (the timer's unit, an operator, a product's own tool); a second
//! one is refused as busy, with the holder named from what it wrote into the file. The kernel
//! releases the lock when the holder ends, however it ends (a crash or SIGKILL included), so
//! a stale lock cannot wedge the device.

use std::path::PathBuf;

use diffota_files::lock::{FileLock, Refused};

use super::StateDir;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the device is busy: {holder} (it holds {path}; one install, mark-good, mark-bad or rollback at a time)")]
    Busy { path: PathBuf, holder: String },
}

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct DeviceLock {
    _lock: FileLock,
}

impl DeviceLock {
    /// Takes the lock for `operation` (e.g. "install 2.0"), or says who holds it.
    pub fn acquire(state_dir: &StateDir, operation: &str) -> Result<DeviceLock, LockError> {
        DeviceLock::acquire_at(state_dir.lock_path(), operation)
    }

    /// The same kind of lock on another file (e.g. the report spool's, so that two runs
    /// never send one report at once).
    pub fn acquire_at(path: PathBuf, operation: &str) -> Result<DeviceLock, LockError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        }
        match FileLock::try_acquire(&path, &format!("diffota {operation}")) {
            Ok(lock) => Ok(DeviceLock { _lock: lock }),
            Err(Refused::Busy(holder)) => Err(LockError::Busy { path, holder }),
            Err(Refused::Io(source)) => Err(LockError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_named_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(&dir.path().join("state"));
        let first = DeviceLock::acquire(&state_dir, "install 2.0").unwrap();
        match DeviceLock::acquire(&state_dir, "mark-good") {
            Err(LockError::Busy { holder, .. }) => {
                assert!(holder.starts_with("diffota install 2.0 (pid "), "{holder}");
                assert!(holder.contains(&std::process::id().to_string()));
            }
            other => panic!("expected busy, got {other:?}"),
        }
        drop(first);
        DeviceLock::acquire(&state_dir, "mark-good").unwrap();
    }

    #[test]
    fn a_lock_that_is_a_link_is_refused_and_its_target_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, state_dir.lock_path()).unwrap();
        let error = DeviceLock::acquire(&state_dir, "install").unwrap_err();
        assert!(
            error.to_string().contains("lock: is a symbolic link"),
            "{error}"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
