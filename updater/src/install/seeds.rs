//! Where the plan finds chunks the device already has: the running slot's stored index (its
//! seed) when it still verifies, otherwise the running slot cut with the release's chunker.
//! An install's scan also writes each chunk of the release it finds into the target as it
//! goes, so the running slot is read once.

use diffota_format::{
    Chunk, ChunkId, ChunkerParams, Index, SignedIndex, VerifiedChunk, VerifiedIndex,
};

use super::{Device, InstallError};
use crate::plan::SeedMap;
use crate::progress::{Event, Progress};
use crate::slot::{Slot, TargetSlot};

/// Seeds for the plan: the running slot's stored index when its signature still verifies
/// and its chunker matches, otherwise the running slot cut with the new chunker.
pub(super) fn running_seeds(
    device: &Device<'_>,
    running: Slot,
    index: &Index,
    progress: &dyn Progress,
) -> Result<SeedMap, InstallError> {
    image_running_seeds(device, crate::config::ROOTFS, running, index, progress)
}

/// `running_seeds` of image `image` of the slot group (its `[images.<name>]` pair).
pub(super) fn image_running_seeds(
    device: &Device<'_>,
    image: &str,
    running: Slot,
    index: &Index,
    progress: &dyn Progress,
) -> Result<SeedMap, InstallError> {
    let (seeds, _) = image_install_seeds(device, image, running, index, None, progress)?;
    Ok(seeds)
}

/// `image_running_seeds`, where a scan writes every chunk of `index` it finds into `target`
/// (when given: open, and marked as being written) and says which.
pub(super) fn image_install_seeds(
    device: &Device<'_>,
    image: &str,
    running: Slot,
    index: &Index,
    target: Option<&TargetSlot>,
    progress: &dyn Progress,
) -> Result<(SeedMap, Option<ScanWritten>), InstallError> {
    match stored_seeds(device, image, running, index)? {
        Some(seeds) => Ok((seeds, None)),
        None => scan_running(device, image, running, index, target, progress),
    }
}

/// Seeds from the running slot's stored index, when its signature still verifies and its
/// chunker matches the new index's.
pub(super) fn stored_seeds(
    device: &Device<'_>,
    image: &str,
    running: Slot,
    index: &Index,
) -> Result<Option<SeedMap>, InstallError> {
    Ok(image_stored_index(device, image, running)?
        .filter(|stored| stored.chunker == index.chunker)
        .map(|stored| SeedMap::from_index(&stored)))
}

/// Chunks of the new index a scan wrote to the target as it found them: per chunk of the
/// index, in its order.
pub(super) struct ScanWritten(pub Vec<bool>);

/// The running slot of `image` cut with the new index's chunker, each chunk named. With a
/// `target` (open, and marked as being written), every chunk of the new index found is
/// written there as it is found, from the bytes just hashed: the slot is read once, not
/// once to plan and again to copy.
pub(super) fn scan_running(
    device: &Device<'_>,
    image: &str,
    running: Slot,
    index: &Index,
    target: Option<&TargetSlot>,
    progress: &dyn Progress,
) -> Result<(SeedMap, Option<ScanWritten>), InstallError> {
    let path = image_slot_path(device, image, running);
    progress.event(Event::Message(&format!(
        "no usable index for running slot {running}; scanning {}",
        path.display()
    )));
    let read_error = |source| InstallError::ReadRunning {
        path: path.to_owned(),
        source,
    };
    let file = fs_err::File::open(path).map_err(read_error)?;
    // The partition is usually larger than the image it holds; cutting past the image's end
    // would change the last chunk. Without a stored index the old image's length is unknown:
    // assume it matches the new one (fixed-size filesystem images). A wrong guess only costs
    // seeds, never correctness: every seed chunk is re-hashed before use. make names as delta
    // bases only the old chunks this cut finds (`found_by_a_slot_scan` in chunk-server).
    let limited = std::io::Read::take(file, index.image_length);
    let Some(target) = target else {
        let seeds = scan(&index.chunker, limited, read_error, progress, |_| Ok(()))?;
        return Ok((seeds, None));
    };
    let wanted = Wanted::of(index);
    let mut written = ScanWritten(vec![false; index.chunks.len()]);
    let seeds = scan(&index.chunker, limited, read_error, progress, |chunk| {
        for number in wanted.numbers(chunk.id()) {
            let entry = &index.chunks[number];
            if written.0[number] || entry.length as usize != chunk.bytes().len() {
                continue;
            }
            target.write_chunk(chunk, entry.offset)?;
            written.0[number] = true;
        }
        Ok(())
    })?;
    Ok((seeds, Some(written)))
}

/// The new index's chunk numbers sorted by id, for looking up each chunk a scan finds (4
/// bytes a chunk: the ids stay in the index).
struct Wanted<'a> {
    index: &'a Index,
    by_id: Vec<u32>,
}

impl Wanted<'_> {
    fn of(index: &Index) -> Wanted<'_> {
        let mut by_id: Vec<u32> = (0..index.chunks.len() as u32).collect();
        by_id.sort_unstable_by_key(|&number| index.chunks[number as usize].id);
        Wanted { index, by_id }
    }

    /// The numbers of the index's chunks named `id`.
    fn numbers(&self, id: &ChunkId) -> impl Iterator<Item = usize> + '_ {
        let id = *id;
        let id_of = |number: u32| self.index.chunks[number as usize].id;
        let start = self.by_id.partition_point(|&number| id_of(number) < id);
        self.by_id[start..]
            .iter()
            .take_while(move |&&number| id_of(number) == id)
            .map(|&number| number as usize)
    }
}

/// Chunks handed from the cutter to the hasher at a time: few enough bytes to keep the
/// device's memory small, enough chunks that the hand-overs cost nothing.
const SCAN_BATCH_BYTES: usize = 128 << 10;

/// Cuts `slot` with `chunker`, names each chunk and hands it to `found`: the cutting on this
/// thread, the hashing (the larger part) and `found` on a second one, so that a scan on two
/// cores takes about the longer of the two instead of their sum. At most three batches are
/// held at once. Read errors go through `read_error`; the first error of either side ends
/// the scan.
fn scan(
    chunker: &ChunkerParams,
    slot: impl std::io::Read,
    read_error: impl Fn(std::io::Error) -> InstallError,
    progress: &dyn Progress,
    mut found: impl FnMut(&VerifiedChunk) -> Result<(), InstallError> + Send,
) -> Result<SeedMap, InstallError> {
    std::thread::scope(|scope| {
        let (cut_tx, cut_rx) = std::sync::mpsc::sync_channel::<Vec<Chunk>>(1);
        let hasher = scope.spawn(move || -> Result<SeedMap, InstallError> {
            let mut seeds = SeedMap::default();
            for batch in cut_rx {
                for chunk in batch {
                    let chunk_offset = chunk.offset;
                    let named = VerifiedChunk::named(chunk.data);
                    seeds.insert(*named.id(), chunk_offset, named.bytes().len() as u32);
                    found(&named)?;
                }
            }
            Ok(seeds)
        });
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for chunk in chunker.chunk_stream(std::io::BufReader::with_capacity(1 << 20, slot)) {
            let chunk = chunk.map_err(&read_error)?;
            batch_bytes += chunk.data.len();
            batch.push(chunk);
            if batch_bytes >= SCAN_BATCH_BYTES {
                if progress.cancelled() {
                    return Err(InstallError::Cancelled);
                }
                batch_bytes = 0;
                if cut_tx.send(std::mem::take(&mut batch)).is_err() {
                    break; // the hasher stopped: its join says why
                }
            }
        }
        // The last batch; a hasher already stopped is reported by the join below.
        let _ = cut_tx.send(batch);
        drop(cut_tx);
        hasher.join().expect("the scan's hasher does not panic")
    })
}

pub(super) fn stored_index(
    device: &Device<'_>,
    slot: Slot,
) -> Result<Option<VerifiedIndex>, InstallError> {
    image_stored_index(device, crate::config::ROOTFS, slot)
}

/// The device (or file) of image `image` in slot `slot`; the config names every image of a
/// release the install got this far with.
pub(super) fn image_slot_path<'c>(
    device: &Device<'c>,
    image: &str,
    slot: Slot,
) -> &'c std::path::Path {
    device
        .config
        .image_slots(image)
        .expect("the release's images match the config's")
        .path(slot)
}

pub(super) fn image_stored_index(
    device: &Device<'_>,
    image: &str,
    slot: Slot,
) -> Result<Option<VerifiedIndex>, InstallError> {
    // The stored index only saves downloads: one that cannot be read (a link, a FIFO, a
    // file past the index limit) is passed over like one that does not verify, and the
    // install replaces it.
    let (bytes, signature) = match device.state_dir.image_seed_index(image, slot) {
        Ok(Some(stored)) => stored,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(event = "seed_index_rejected", slot = %slot, error = %e);
            return Ok(None);
        }
    };
    match (SignedIndex {
        bytes: &bytes,
        signature: &signature,
    })
    .verify(device.keys)
    {
        Ok(index) => Ok(Some(index)),
        Err(e) => {
            tracing::warn!(event = "seed_index_rejected", slot = %slot, error = %e);
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::progress::Quiet;

    fn read_error(source: std::io::Error) -> InstallError {
        InstallError::ReadRunning {
            path: "slot-a".into(),
            source,
        }
    }

    /// What one thread cutting and hashing in turn finds, for comparison.
    fn scanned_in_one_thread(chunker: &ChunkerParams, bytes: &[u8]) -> Vec<(ChunkId, u64, u32)> {
        chunker
            .chunk_stream(bytes)
            .map(|chunk| {
                let chunk = chunk.unwrap();
                (
                    ChunkId::of(&chunk.data),
                    chunk.offset,
                    chunk.data.len() as u32,
                )
            })
            .collect()
    }

    #[test]
    fn the_scan_names_every_chunk_as_one_thread_would_across_many_batches() {
        let chunker = ChunkerParams::DEFAULT;
        // Many batches of SCAN_BATCH_BYTES, and a repeated stretch whose chunks keep their
        // first offset.
        let mut bytes = diffota_test_support::noise(7, 3 << 20);
        bytes.extend_from_within(..1 << 20);
        let mut found = Vec::new();
        let seeds = scan(&chunker, &bytes[..], read_error, &Quiet, |chunk| {
            found.push(*chunk.id());
            Ok(())
        })
        .unwrap();
        let expected = scanned_in_one_thread(&chunker, &bytes);
        // Every chunk handed over once, in the slot's order.
        assert_eq!(found, expected.iter().map(|e| e.0).collect::<Vec<_>>());
        assert!(expected.len() > 100);
        for (id, offset, length) in &expected {
            assert!(seeds.holds(id, *length));
            assert!(seeds.get(id).unwrap() <= *offset);
        }
        let distinct: std::collections::HashSet<_> = expected.iter().map(|e| e.0).collect();
        assert_eq!(seeds.len(), distinct.len());
        assert!(scan(&chunker, &[][..], read_error, &Quiet, |_| Ok(()))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_error_of_the_hasher_side_ends_the_scan_and_is_returned() {
        let bytes = diffota_test_support::noise(10, 4 << 20);
        let mut handed = 0;
        let error = scan(
            &ChunkerParams::DEFAULT,
            &bytes[..],
            read_error,
            &Quiet,
            |_| {
                handed += 1;
                if handed == 3 {
                    return Err(InstallError::Cancelled);
                }
                Ok(())
            },
        )
        .err()
        .unwrap();
        assert!(matches!(error, InstallError::Cancelled), "{error}");
        assert_eq!(handed, 3);
    }

    #[test]
    fn wanted_finds_every_number_of_an_id_and_none_of_an_absent_one() {
        let chunker = ChunkerParams::DEFAULT;
        let entry = |content: &[u8], offset: u64| diffota_format::ChunkEntry {
            id: ChunkId::of(content),
            offset,
            length: content.len() as u32,
            pack: 0,
            pack_offset: 0,
            compressed_length: 1,
        };
        let index = Index {
            created: 0,
            expires: None,
            chunker,
            image_length: 5,
            image_hash: [0; 32],
            compatible: "test".into(),
            version: "1".into(),
            packs: Vec::new(),
            chunks: vec![
                entry(b"a", 0),
                entry(b"b", 1),
                entry(b"a", 2),
                entry(b"c", 3),
                entry(b"a", 4),
            ],
            deltas: Default::default(),
        };
        let wanted = Wanted::of(&index);
        let mut a: Vec<_> = wanted.numbers(&ChunkId::of(b"a")).collect();
        a.sort_unstable();
        assert_eq!(a, [0, 2, 4]);
        assert_eq!(wanted.numbers(&ChunkId::of(b"c")).collect::<Vec<_>>(), [3]);
        assert_eq!(wanted.numbers(&ChunkId::of(b"d")).count(), 0);
    }

    /// A slot that fails after `good` bytes.
    struct FailingAfter {
        bytes: Vec<u8>,
        at: usize,
    }

    impl std::io::Read for FailingAfter {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.bytes.len() {
                return Err(std::io::Error::other("the slot's storage failed"));
            }
            let n = buffer.len().min(self.bytes.len() - self.at);
            buffer[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_mid_scan_is_returned_and_the_hasher_stops() {
        let slot = FailingAfter {
            bytes: diffota_test_support::noise(8, 2 << 20),
            at: 0,
        };
        let error = scan(
            &ChunkerParams::DEFAULT,
            slot,
            read_error,
            &Quiet,
            |_| Ok(()),
        )
        .err()
        .unwrap();
        assert!(
            error.to_string().contains("the slot's storage failed"),
            "{error}"
        );
    }
}
