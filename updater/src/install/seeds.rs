//! Where the plan finds chunks the device already has: the running slot's stored index (its
//! seed) when it still verifies, otherwise the running slot cut with the release's chunker.

use diffota_format::{ChunkId, Index, SignedIndex, VerifiedIndex};

use super::{Device, InstallError};
use crate::plan::SeedMap;
use crate::progress::{Event, Progress};
use crate::slot::Slot;

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
    if let Some(stored) = image_stored_index(device, image, running)? {
        if stored.chunker == index.chunker {
            return Ok(SeedMap::from_index(&stored));
        }
    }
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
    let mut seeds = SeedMap::default();
    // The partition is usually larger than the image it holds; cutting past the image's end
    // would change the last chunk. Without a stored index the old image's length is unknown:
    // assume it matches the new one (fixed-size filesystem images). A wrong guess only costs
    // seeds, never correctness: every seed chunk is re-hashed before use.
    let limited = std::io::Read::take(file, index.image_length);
    for chunk in index
        .chunker
        .chunk_stream(std::io::BufReader::with_capacity(1 << 20, limited))
    {
        let chunk = chunk.map_err(read_error)?;
        seeds.insert(
            ChunkId::of(&chunk.data),
            chunk.offset,
            chunk.data.len() as u32,
        );
    }
    Ok(seeds)
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
