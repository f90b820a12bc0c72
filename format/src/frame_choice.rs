//! Which frames a device fetches: of the chunks it lacks, those a delta frame rebuilds more
//! cheaply than their own plain frames come from that frame, when the device holds every
//! base the frame names. A base is held when the running slot has it, or when it is a chunk
//! of the new release that an earlier chosen frame rebuilds (the device reads it back from
//! the slot it is writing). Shared by the device's plan and `chunk-server diff`, so that the
//! publisher's prediction is the device's.

use std::collections::{HashMap, HashSet};

use crate::{ChunkEntry, ChunkId, Index};

/// The delta frames worth using for `wanted` (chunks to fetch): in index order, a frame
/// whose every base the running slot holds (`holds(id, length)`) or an earlier chosen frame
/// rebuilds, and whose compressed length is less than the frames of the wanted chunks it
/// rebuilds that no earlier chosen frame rebuilds.
pub fn choose_delta_frames(
    index: &Index,
    wanted: &[ChunkEntry],
    holds: impl FnMut(&ChunkId, u32) -> bool,
) -> Vec<usize> {
    let all: Vec<usize> = (0..index.deltas.frames.len()).collect();
    choose_delta_frames_among(index, wanted, &all, holds)
}

/// `choose_delta_frames` among the frames `candidates` (in index order).
pub fn choose_delta_frames_among(
    index: &Index,
    wanted: &[ChunkEntry],
    candidates: &[usize],
    mut holds: impl FnMut(&ChunkId, u32) -> bool,
) -> Vec<usize> {
    let mut cost: HashMap<ChunkId, u32> =
        wanted.iter().map(|c| (c.id, c.compressed_length)).collect();
    let mut chosen = Vec::new();
    let mut rebuilt_earlier: HashSet<ChunkId> = HashSet::new();
    for &number in candidates {
        let frame = &index.deltas.frames[number];
        let holds_bases = frame.bases.iter().all(|&b| {
            let base = &index.deltas.bases[b as usize];
            rebuilt_earlier.contains(&base.id) || holds(&base.id, base.length)
        });
        if !holds_bases {
            continue;
        }
        let rebuilt: HashSet<ChunkId> = frame
            .chunks
            .iter()
            .map(|&n| index.chunks[n as usize].id)
            .filter(|id| cost.contains_key(id))
            .collect();
        let saved: u64 = rebuilt.iter().map(|id| u64::from(cost[id])).sum();
        if saved > u64::from(frame.compressed_length) {
            for id in &rebuilt {
                cost.remove(id);
            }
            rebuilt_earlier.extend(rebuilt);
            chosen.push(number);
        }
    }
    chosen
}

/// A delta frame as a fetch item for `plan_ranges` (its id is zero: it is found again by
/// its place in the pack).
pub fn frame_entry(index: &Index, number: usize) -> ChunkEntry {
    let frame = &index.deltas.frames[number];
    ChunkEntry {
        id: ChunkId([0; 32]),
        offset: 0,
        length: frame
            .chunks
            .iter()
            .map(|&n| index.chunks[n as usize].length)
            .sum(),
        compressed_length: frame.compressed_length,
        pack: frame.pack,
        pack_offset: frame.pack_offset,
    }
}

/// The chunks of `wanted` no chosen frame rebuilds, and the chosen frames as fetch items.
pub fn with_delta_frames(
    index: &Index,
    wanted: &[ChunkEntry],
    frames: &[usize],
) -> Vec<ChunkEntry> {
    let rebuilt: HashSet<ChunkId> = frames
        .iter()
        .flat_map(|&f| &index.deltas.frames[f].chunks)
        .map(|&n| index.chunks[n as usize].id)
        .collect();
    wanted
        .iter()
        .filter(|c| !rebuilt.contains(&c.id))
        .copied()
        .chain(frames.iter().map(|&f| frame_entry(index, f)))
        .collect()
}
