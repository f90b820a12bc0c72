//! Reading the written slot back from storage, after its page cache was dropped.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

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

/// BLAKE3 of the first `length` bytes of the slot at `path` as the device stores them: read
/// with O_DIRECT, past the page cache. A mounted file system (the running root) may change
/// its blocks in the page cache without ever writing them: ext4 does so on a read-only mount
/// (a buffered read of the block device then differs from the bytes on it, which the
/// release's hash describes). Where O_DIRECT is not supported (tmpfs), a buffered read.
pub(super) fn hash_stored_image(path: &Path, length: u64) -> Result<[u8; 32], InstallError> {
    const ALIGN: usize = 4096;
    const CHUNK: usize = 1 << 20;
    let open = |flags: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_CLOEXEC)
            .open(path)
    };
    let read_error = |source| InstallError::ReadRunning {
        path: path.to_owned(),
        source,
    };
    let file = match open(libc::O_DIRECT) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return hash_image(&open(0).map_err(read_error)?, path, length)
        }
        Err(e) => return Err(read_error(e)),
    };
    let mut raw = vec![0u8; CHUNK + ALIGN];
    let start = raw.as_ptr().align_offset(ALIGN);
    let buffer = &mut raw[start..start + CHUNK];
    let mut hasher = blake3::Hasher::new();
    let mut at = 0u64;
    while at < length {
        let want = ((length - at) as usize).min(CHUNK);
        // Whole aligned blocks: the last one may reach past the image, never past CHUNK.
        let read_length = want.next_multiple_of(ALIGN).min(CHUNK);
        let mut filled = 0;
        while filled < want {
            let read = file
                .read_at(&mut buffer[filled..read_length], at + filled as u64)
                .map_err(read_error)?;
            if read == 0 {
                return Err(read_error(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "ends at byte {}, before the image's {length}",
                        at + filled as u64
                    ),
                )));
            }
            filled += read;
        }
        hasher.update(&buffer[..want]);
        at += want as u64;
    }
    Ok(*hasher.finalize().as_bytes())
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
        file.read_exact_at(&mut buffer[..want], at)
            .map_err(|source| SlotError::Io {
                path: path.to_owned(),
                source,
            })?;
        hasher.update(&buffer[..want]);
        at += want as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_image_hash_is_the_hash_of_its_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot.img");
        // Longer than one read, not a multiple of the alignment, inside a larger slot.
        let bytes: Vec<u8> = (0..(3 << 20) + 1234u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut slot = bytes.clone();
        slot.extend(std::iter::repeat_n(0xee, 8192));
        std::fs::write(&path, &slot).unwrap();
        let length = bytes.len() as u64;
        assert_eq!(
            hash_stored_image(&path, length).unwrap(),
            *blake3::hash(&bytes).as_bytes()
        );
        // The whole file, up to its end.
        assert_eq!(
            hash_stored_image(&path, slot.len() as u64).unwrap(),
            *blake3::hash(&slot).as_bytes()
        );
        // Past its end: an error naming where it ended.
        let error = hash_stored_image(&path, slot.len() as u64 + 1).unwrap_err();
        assert!(error.to_string().contains("slot.img"), "{error}");
    }
}
