//! Crash-safe file replacement: write a temporary file beside the target, fsync it, rename
//! it over the final name, fsync the directory. A reader sees the old file or the new one,
//! never a half-written one, and a crash leaves at most a `.tmp-*` file that `prune` removes.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary file that is deleted on drop unless `commit` renamed it into place.
pub struct TempFile {
    path: PathBuf,
    file: Option<fs_err::File>,
}

impl TempFile {
    pub fn create_beside(final_path: &Path) -> std::io::Result<TempFile> {
        let dir = parent_dir(final_path);
        fs_err::create_dir_all(dir)?;
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file");
        let path = dir.join(format!(
            ".tmp-{}-{}-{name}",
            std::process::id(),
            unique_suffix()
        ));
        let file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    pub fn file(&mut self) -> &mut fs_err::File {
        self.file.as_mut().expect("temp file open until commit")
    }

    /// fsync, rename over `final_path`, fsync the directory.
    pub fn commit(mut self, final_path: &Path) -> std::io::Result<()> {
        let file = self.file.take().expect("temp file open until commit");
        file.sync_all()?;
        drop(file);
        fs_err::rename(&self.path, final_path)?;
        sync_dir(parent_dir(final_path))?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
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

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp = TempFile::create_beside(path)?;
    temp.file().write_all(bytes)?;
    temp.commit(path)
}
