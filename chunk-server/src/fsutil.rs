//! The store's files are replaced crash-safely by `diffota_files::atomic`; the store creates
//! the directories it writes into.

use std::path::Path;

pub use diffota_files::atomic::TempFile;

/// A temporary file beside `final_path`, creating its directory when missing.
pub fn temp_file_beside(final_path: &Path) -> std::io::Result<TempFile> {
    if let Some(dir) = final_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir)?;
    }
    TempFile::create_beside(final_path)
}

/// Replaces `path` with `bytes` atomically, creating its directory when missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir)?;
    }
    diffota_files::atomic::replace(path, bytes)
}
