//! What the running system tells the updater: the time, this boot's id, the device's id.

use std::path::{Path, PathBuf};

use crate::config::DeviceIdSource;

/// Seconds since the Unix epoch; 0 if the clock is before it.
pub use diffota_cli::unix_now as now;

/// Keeps the allocator from holding on to freed megabytes: glibc raises its mmap threshold
/// each time a large block is freed, after which the install's large buffers (the index,
/// a delta frame's bases and content, a range's bytes) come from a heap that does not give
/// memory back, and peak RSS grows past what is live. A fixed threshold keeps blocks of
/// 128 KiB and more in their own mappings, returned when freed: on the bench's 1 GiB ext4
/// pair, peak RSS one release behind went from 16.5-18.7 to 15.1-15.8 MiB, factory-flashed
/// from 18.7-20.5 to 15.1-16.1 MiB. Other C libraries (musl) return large blocks by
/// themselves.
pub fn keep_large_allocations_returnable() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called once, at start, before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// This boot's id, from the configured file (`/proc/sys/kernel/random/boot_id`); None when
/// it cannot be read.
pub fn boot_id(path: &Path) -> Option<String> {
    diffota_files::local_file::read_bounded_text(
        path,
        crate::limits::SMALL_TEXT,
        diffota_files::local_file::Links::Follow,
    )
    .ok()
    .map(|s| s.trim().to_owned())
    .filter(|s| !s.is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceIdError {
    #[error("device id from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("device id from {path}: file is empty")]
    Empty { path: PathBuf },
}

/// The device id: the configured value, else the first line of the configured file, else
/// `/etc/machine-id`.
pub fn device_id(source: &DeviceIdSource) -> Result<String, DeviceIdError> {
    if let Some(value) = &source.value {
        return Ok(value.clone());
    }
    let path = source
        .file
        .clone()
        .unwrap_or_else(|| "/etc/machine-id".into());
    let text = diffota_files::local_file::read_bounded_text(
        &path,
        crate::limits::SMALL_TEXT,
        diffota_files::local_file::Links::Follow,
    )
    .map_err(|source| DeviceIdError::Read {
        path: path.clone(),
        source,
    })?;
    let id = text.lines().next().unwrap_or("").trim().to_owned();
    if id.is_empty() {
        return Err(DeviceIdError::Empty { path });
    }
    Ok(id)
}
