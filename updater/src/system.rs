//! What the running system tells the updater: the time and this boot's id.

use std::path::Path;

/// Seconds since the Unix epoch; 0 if the clock is before it.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This boot's id, from the configured file (`/proc/sys/kernel/random/boot_id`); None when
/// it cannot be read.
pub fn boot_id(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
