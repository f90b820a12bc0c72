//! Reading the written slot back from storage, after its page cache was dropped.

use diffota_format::{hex32, Index};

use super::InstallError;
use crate::slot::{SlotError, TargetSlot};

/// Flushes the slot, drops its page cache and checks the whole image against the release's
/// hash: nothing is recorded or armed unless this passes.
pub(super) fn read_back(slot: &TargetSlot, index: &Index) -> Result<(), InstallError> {
    slot.sync_and_drop_cache()?;
    let actual = hash_image(slot.file(), &slot.path, index.image_length)?;
    if actual != index.image_hash {
        return Err(InstallError::ReadBack {
            slot: slot.slot,
            expected: hex32(&index.image_hash),
            actual: hex32(&actual),
        });
    }
    Ok(())
}

/// BLAKE3 of the first `length` bytes of a slot's `file` (at `path`), read from storage.
pub(super) fn hash_image(
    file: &std::fs::File,
    path: &std::path::Path,
    length: u64,
) -> Result<[u8; 32], InstallError> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < length {
        let want = ((length - at) as usize).min(buffer.len());
        std::os::unix::fs::FileExt::read_exact_at(file, &mut buffer[..want], at).map_err(
            |source| SlotError::Io {
                path: path.to_owned(),
                source,
            },
        )?;
        hasher.update(&buffer[..want]);
        at += want as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}
