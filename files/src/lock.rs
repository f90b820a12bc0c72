//! Advisory locks on a file (`flock`), for the device (one install, mark-good, mark-bad or
//! rollback at a time) and the build host's store (one make, prune, bundle or channel set
//! at a time). The kernel releases a lock when its holder ends, however it ends, so a stale
//! lock cannot wedge anything. The holder writes a line about itself into the file, which a
//! refused or waiting caller shows. The file is ours: it is never opened through a link or
//! a second name (`local_file::open_own_for_update`), so a link planted there cannot get
//! another file truncated.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// What a holder writes about itself, and what a refused caller reads back: at most this
/// many bytes of it.
const HOLDER_LIMIT: u64 = 512;

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Why a lock was not taken at once.
#[derive(Debug)]
pub enum Refused {
    /// Another holder has it; what it wrote about itself.
    Busy(String),
    Io(io::Error),
}

impl From<io::Error> for Refused {
    fn from(error: io::Error) -> Refused {
        Refused::Io(error)
    }
}

impl FileLock {
    /// Takes the lock on `path` for `holder` (e.g. "diffota install 2.0"), or says who has it.
    pub fn try_acquire(path: &Path, holder: &str) -> Result<FileLock, Refused> {
        let mut file = crate::local_file::open_own_for_update(path)?;
        if try_lock_exclusive(&file)? {
            write_holder(&mut file, holder)?;
            Ok(FileLock { _file: file })
        } else {
            Err(Refused::Busy(read_holder(&mut file)))
        }
    }

    /// Takes the lock on `path`, waiting for the holder to let go; `waiting` is called once
    /// with the holder's line when there is a wait.
    pub fn acquire_waiting(
        path: &Path,
        holder: &str,
        waiting: impl FnOnce(&str),
    ) -> io::Result<FileLock> {
        let mut file = crate::local_file::open_own_for_update(path)?;
        if !try_lock_exclusive(&file)? {
            waiting(&read_holder(&mut file));
            lock_exclusive(&file)?;
        }
        write_holder(&mut file, holder)?;
        Ok(FileLock { _file: file })
    }
}

fn write_holder(file: &mut File, holder: &str) -> io::Result<()> {
    let line = format!(
        "{holder} (pid {}, since unix time {})\n",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(line.as_bytes())
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.take(HOLDER_LIMIT).read_to_string(&mut text);
    match text.trim() {
        "" => "another process that is starting".to_owned(),
        holder => holder.to_owned(),
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: true when taken, false when another open file holds it.
/// (`File::try_lock` needs Rust 1.89; the layer builds with older toolchains.)
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor number; the fd stays owned by `file`.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        e => Err(e),
    }
}

/// `flock(LOCK_EX)`, retried when a signal interrupts the wait.
fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock only reads the descriptor number; the fd stays owned by `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_or_waits_and_sees_the_first() {
        let dir = std::env::temp_dir().join(format!("diffota-cli-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lock");
        let first = FileLock::try_acquire(&path, "make 1.0").unwrap();
        match FileLock::try_acquire(&path, "prune") {
            Err(Refused::Busy(holder)) => assert!(holder.starts_with("make 1.0 (pid "), "{holder}"),
            other => panic!("expected busy, got {other:?}"),
        }
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut seen = String::new();
                let lock = FileLock::acquire_waiting(&path, "make 2.0", |h| seen = h.to_owned());
                (lock.is_ok(), seen)
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(first);
        let (taken, seen) = waiter.join().unwrap();
        assert!(taken);
        assert!(seen.starts_with("make 1.0"), "{seen}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
