//! Replacing a file so that a power cut leaves the old content or the new, never a mix:
//! write a temporary file beside it, fsync, rename over it, fsync the directory. The one
//! implementation for the state directory and the GRUB environment.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes`. The directory must exist: a missing one (an unmounted
/// boot partition) is an error, not something to create.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp-{}", std::process::id()));
    let temp = PathBuf::from(temp);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    sync_parent(path)
}

/// Makes a rename or removal in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}
