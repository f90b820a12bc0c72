//! One state-changing operation at a time on the whole device. `install`, `mark-good`,
//! `mark-bad` and `rollback` hold an exclusive lock on `<state_dir>/lock` (`flock`) while they
//! run, whoever starts them (the timer's unit, an operator, a product's own tool); a second
//! one is refused as busy, with the holder named from what it wrote into the file. The kernel
//! releases the lock when the holder ends, however it ends (a crash or SIGKILL included), so
//! a stale lock cannot wedge the device.

use std::io::{Read, Seek, Write};
use std::path::PathBuf;

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
    _file: std::fs::File,
}

/// What a holder writes about itself, and what a refused caller reads back: at most this
/// many bytes of it.
const HOLDER_LIMIT: u64 = 512;

impl DeviceLock {
    /// Takes the lock for `operation` (e.g. "install 2.0"), or says who holds it.
    pub fn acquire(state_dir: &StateDir, operation: &str) -> Result<DeviceLock, LockError> {
        DeviceLock::acquire_at(state_dir.lock_path(), operation)
    }

    /// The same kind of lock on another file (e.g. the report spool's, so that two runs
    /// never send one report at once).
    pub fn acquire_at(path: PathBuf, operation: &str) -> Result<DeviceLock, LockError> {
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Never through a link or a second name: a link to another file must not get that
        // file truncated and overwritten with our holder line.
        let mut file = diffota_cli::local_file::open_own_for_update(&path).map_err(io)?;
        match try_lock_exclusive(&file) {
            Ok(true) => {
                let holder = format!(
                    "diffota {operation} (pid {}, since unix time {})\n",
                    std::process::id(),
                    diffota_cli::unix_now()
                );
                file.set_len(0).map_err(io)?;
                file.rewind().map_err(io)?;
                file.write_all(holder.as_bytes()).map_err(io)?;
                Ok(DeviceLock { _file: file })
            }
            Ok(false) => {
                let mut text = String::new();
                let _ = (&mut file).take(HOLDER_LIMIT).read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "another diffota that is starting".to_owned(),
                    holder => holder.to_owned(),
                };
                Err(LockError::Busy { path, holder })
            }
            Err(e) => Err(io(e)),
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: true when taken, false when another open file holds it.
/// (`File::try_lock` needs Rust 1.89; the layer builds with older toolchains.)
fn try_lock_exclusive(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor number; the fd stays owned by `file`.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        return Ok(true);
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        e => Err(e),
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
