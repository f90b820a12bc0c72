//! What the running system tells the updater: the time, this boot's id, the device's id.

use std::path::{Path, PathBuf};

use crate::config::DeviceIdSource;

/// Seconds since the Unix epoch; 0 if the clock is before it.
pub use diffota_cli::unix_now as now;

/// This boot's id, from the configured file (`/proc/sys/kernel/random/boot_id`); None when
/// it cannot be read.
pub fn boot_id(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
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
    let text = std::fs::read_to_string(&path).map_err(|source| DeviceIdError::Read {
        path: path.clone(),
        source,
    })?;
    let id = text.lines().next().unwrap_or("").trim().to_owned();
    if id.is_empty() {
        return Err(DeviceIdError::Empty { path });
    }
    Ok(id)
}
