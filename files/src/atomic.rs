//! Replacing a file so that a power cut leaves the old content or the new, never a mix:
//! write a temporary file beside it, fsync it, rename it over the final name, fsync the
//! directory. The one implementation for the store (packs, indexes, channels, keys,
//! signatures, bundles), the device's state directory and the GRUB environment. A crash
//! leaves at most a `.tmp-*` file beside the target (`chunk-server prune` removes those in a
//! store).
//!
//! The directory must exist: for the device a missing one (an unmounted boot partition) is
//! an error, not something to create; the store creates its directories itself.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary file beside its final name, deleted on drop unless `commit` renamed it
/// into place.
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub fn create_beside(final_path: &Path) -> std::io::Result<TempFile> {
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file");
        let path = parent_dir(final_path).join(format!(
            ".tmp-{}-{}-{name}",
            std::process::id(),
            unique_suffix()
        ));
        // Readable too: `chunk-server make` reads its new pack back for delta frames.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("temp file open until commit")
    }

    /// fsync, rename over `final_path`, fsync the directory.
    pub fn commit(mut self, final_path: &Path) -> std::io::Result<()> {
        let file = self.file.take().expect("temp file open until commit");
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.path, final_path)?;
        self.path = PathBuf::new();
        sync_parent(final_path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Replaces `path` with `bytes` atomically.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp = TempFile::create_beside(path)?;
    temp.file().write_all(bytes)?;
    temp.commit(path)
}

/// Makes a rename or removal in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    File::open(parent_dir(path))?.sync_all()
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (u64::from(nanos) << 16) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_leaves_only_the_new_content() {
        let dir = std::env::temp_dir().join(format!("diffota-cli-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        replace(&path, b"old").unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropped_temp_file_is_removed_and_missing_directory_is_an_error() {
        let dir = std::env::temp_dir().join(format!("diffota-cli-drop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let temp = TempFile::create_beside(&dir.join("pack")).unwrap();
        drop(temp);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(replace(&dir.join("missing/file"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
