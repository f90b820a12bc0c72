//! The device side of diffota: configuration, slots, planning and executing an install,
//! state, and the bootloader seam. `main.rs` is a thin shell over these modules.

pub mod boot;
pub mod bundle;
pub mod config;
pub mod doctor;
pub mod install;
pub mod keys;
pub mod plan;
pub mod progress;
pub mod release;
pub mod slot;
pub mod source;
pub mod state;
pub mod system;

/// The device id: the configured value, else the first line of the configured file, else
/// `/etc/machine-id`.
pub fn device_id(source: &config::DeviceIdSource) -> Result<String, String> {
    if let Some(value) = &source.value {
        return Ok(value.clone());
    }
    let path = source
        .file
        .clone()
        .unwrap_or_else(|| "/etc/machine-id".into());
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("device id from {}: {e}", path.display()))?;
    let id = text.lines().next().unwrap_or("").trim().to_owned();
    if id.is_empty() {
        return Err(format!("device id from {}: file is empty", path.display()));
    }
    Ok(id)
}
