//! Reading the written slot back from storage, after its page cache was dropped.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use diffota_format::{hex32, Index};

use super::InstallError;
use crate::slot::{SlotError, TargetSlot};

/// Flushes the slot and checks the whole image, as the storage holds it, against the
/// release's hash: nothing is recorded or armed unless this passes.
pub(super) fn read_back(slot: &TargetSlot, index: &Index) -> Result<(), InstallError> {
    slot.sync()?;
    let actual =
        stored_image_hash(&slot.path, index.image_length).map_err(|source| SlotError::Io {
            path: slot.path.clone(),
            source,
        })?;
    if actual != index.image_hash {
        return Err(InstallError::ReadBack {
            slot: slot.slot,
            expected: hex32(&index.image_hash),
            actual: hex32(&actual),
        });
    }
    Ok(())
}

/// The hash of the running slot at `path` as [`stored_image_hash`] reads it.
pub(super) fn hash_stored_image(path: &Path, length: u64) -> Result<[u8; 32], InstallError> {
    stored_image_hash(path, length).map_err(|source| InstallError::ReadRunning {
        path: path.to_owned(),
        source,
    })
}

/// BLAKE3 of the first `length` bytes of the slot at `path` as the device stores them: read
/// with O_DIRECT, past the page cache. A mounted file system (the running root) may change
/// its blocks in the page cache without ever writing them: ext4 does so on a read-only mount
/// (a buffered read of the block device then differs from the bytes on it, which the
/// release's hash describes); a slot just written must be checked as the storage holds it.
/// Where O_DIRECT is not supported (tmpfs), a buffered read after dropping the file's cached
/// pages. A second thread reads the next block while this one hashes the last: the read-back
/// costs about the longer of the two, not their sum.
fn stored_image_hash(path: &Path, length: u64) -> std::io::Result<[u8; 32]> {
    let open = |flags: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_CLOEXEC)
            .open(path)
    };
    let (file, direct) = match open(libc::O_DIRECT) {
        Ok(file) => (file, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let file = open(0)?;
            crate::slot::drop_page_cache(&file);
            (file, false)
        }
        Err(e) => return Err(e),
    };
    let mut hasher = blake3::Hasher::new();
    std::thread::scope(|scope| {
        // Two blocks in turn: the reader fills one while the hasher reads the other.
        let (filled_tx, filled_rx) = std::sync::mpsc::sync_channel::<(AlignedBlock, usize)>(1);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<AlignedBlock>(2);
        for _ in 0..2 {
            empty_tx
                .send(AlignedBlock::new())
                .expect("the channel holds two");
        }
        let file = &file;
        let reader = scope.spawn(move || -> std::io::Result<()> {
            let mut at = 0u64;
            while at < length {
                let Ok(mut block) = empty_rx.recv() else {
                    return Ok(()); // the hasher stopped
                };
                let want = ((length - at) as usize).min(AlignedBlock::SIZE);
                read_block(file, block.bytes(), at, want, direct)?;
                if filled_tx.send((block, want)).is_err() {
                    return Ok(());
                }
                at += want as u64;
            }
            Ok(())
        });
        for (block, want) in filled_rx.iter() {
            hasher.update(&block.filled()[..want]);
            // The reader may have finished: a block it no longer needs is dropped here.
            let _ = empty_tx.send(block);
        }
        drop(empty_tx);
        reader.join().expect("the read-back reader does not panic")
    })?;
    Ok(*hasher.finalize().as_bytes())
}

/// Reads `want` bytes at `at` into `buffer`; with O_DIRECT (`direct`) in whole aligned
/// blocks, the last of which may reach past the image but never past the buffer.
fn read_block(
    file: &std::fs::File,
    buffer: &mut [u8],
    at: u64,
    want: usize,
    direct: bool,
) -> std::io::Result<()> {
    let read_length = if direct {
        want.next_multiple_of(AlignedBlock::ALIGN).min(buffer.len())
    } else {
        want
    };
    let mut filled = 0;
    while filled < want {
        let read = file.read_at(&mut buffer[filled..read_length], at + filled as u64)?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "ends at byte {}, before the image's end",
                    at + filled as u64
                ),
            ));
        }
        filled += read;
    }
    Ok(())
}

/// A buffer whose start is aligned for O_DIRECT.
struct AlignedBlock {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBlock {
    const ALIGN: usize = 4096;
    /// Two of them in flight: 1 MiB, what one buffered block took before.
    const SIZE: usize = 512 << 10;

    fn new() -> Self {
        let raw = vec![0u8; Self::SIZE + Self::ALIGN];
        let start = raw.as_ptr().align_offset(Self::ALIGN);
        AlignedBlock { raw, start }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + Self::SIZE]
    }

    fn filled(&self) -> &[u8] {
        &self.raw[self.start..self.start + Self::SIZE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_image_hash_is_the_hash_of_its_first_bytes() {
        stored_image_hash_in(tempfile::tempdir().unwrap());
    }

    /// tmpfs refuses O_DIRECT: the buffered read gives the same hashes.
    #[test]
    fn the_stored_image_hash_is_the_same_where_o_direct_is_refused() {
        match tempfile::tempdir_in("/dev/shm") {
            Ok(dir) => stored_image_hash_in(dir),
            Err(e) => eprintln!(
                "******** SKIPPED: no /dev/shm to try a buffered read-back ({e}) ********"
            ),
        }
    }

    fn stored_image_hash_in(dir: tempfile::TempDir) {
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
