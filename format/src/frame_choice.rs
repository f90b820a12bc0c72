//! Which frames a device fetches: of the chunks it lacks, those a delta frame rebuilds more
//! cheaply than their own plain frames come from that frame, when the device holds every
//! base the frame names. A base is held when the running slot has it, or when it is a chunk
//! of the new release that an earlier chosen frame rebuilds (the device reads it back from
//! the slot it is writing). Shared by the device's plan and `chunk-server diff`, so that the
//! publisher's prediction is the device's.

use std::collections::{HashMap, HashSet};

use crate::{ChunkEntry, ChunkId, Index};

/// The delta frames worth using for `wanted` (chunks to fetch), among all of the index's
/// (`choose_delta_frames_among`), settled: choosing again among the chosen frames gives the
/// same frames, so a device that re-checks its choice before fetching (install, `check`)
/// arrives where this choice did.
pub fn choose_delta_frames(
    index: &Index,
    wanted: &[ChunkEntry],
    mut holds: impl FnMut(&ChunkId, u32) -> bool,
) -> Vec<usize> {
    let all: Vec<usize> = (0..index.deltas.frames.len()).collect();
    let mut chosen = choose_delta_frames_among(index, wanted, &all, &mut holds);
    for _ in 0..SETTLING_ROUNDS {
        let again = choose_delta_frames_among(index, wanted, &chosen, &mut holds);
        if again == chosen {
            break;
        }
        chosen = again;
    }
    chosen
}

/// Choosing again among the chosen frames never costs more (one of the choices weighed is
/// the chosen frames themselves), so this bounds only how often a cheaper one turns up.
const SETTLING_ROUNDS: usize = 4;

/// The delta frames worth using for `wanted` among `candidates` (in index order). A frame
/// is usable when the running slot holds (`holds(id, length)`) every base it names, or an
/// earlier chosen frame rebuilds it (`index::COVERS_BASE`, which marks a frame with covers,
/// counts as held: `holds` is never asked about it).
///
/// An index holds its frames in passes over the image (the frames against each base, their
/// fallbacks, the inherited frames, the image frames last). Two ways of taking frames are
/// weighed, each from the start of every pass on (`pass_starts`), and the cheapest plan
/// (`plan_cost`) is taken, the first weighed where plans cost the same:
/// - a frame when it pays: it costs less than the plain frames of the wanted chunks it
///   rebuilds that no earlier chosen frame rebuilds;
/// - every usable frame that rebuilds a wanted chunk, paying or not: a chain of frames
///   built on each other's chunks (image frames) pays as a whole where a link alone would
///   not, and a device lacking everything takes the chain.
///
/// Taken from the first frame on, a frame of an earlier pass may cover part of a frame of a
/// later one, which then no longer pays; where the later pass is the cheaper plan, it is
/// weighed from its own start.
pub fn choose_delta_frames_among(
    index: &Index,
    wanted: &[ChunkEntry],
    candidates: &[usize],
    mut holds: impl FnMut(&ChunkId, u32) -> bool,
) -> Vec<usize> {
    let mut best: Option<(u64, Vec<usize>)> = None;
    for start in pass_starts(index, candidates) {
        for rule in [Take::WhenItPays, Take::EveryUsable] {
            let chosen = take_frames(index, wanted, &candidates[start..], rule, &mut holds);
            let cost = plan_cost(index, wanted, &chosen);
            if best.as_ref().is_none_or(|(best_cost, _)| cost < *best_cost) {
                best = Some((cost, chosen));
            }
        }
    }
    best.map(|(_, chosen)| chosen).unwrap_or_default()
}

/// Where each pass over the image starts in `candidates` (positions in it): the first
/// frame, and every frame whose first chunk comes before the previous frame's (frames of one
/// pass follow the image order).
pub fn pass_starts(index: &Index, candidates: &[usize]) -> Vec<usize> {
    let first_chunk = |n: usize| index.deltas.frames[candidates[n]].chunks.first().copied();
    let mut starts = vec![0];
    for n in 1..candidates.len() {
        if first_chunk(n) < first_chunk(n - 1) {
            starts.push(n);
        }
    }
    starts
}

/// What fetching `wanted` costs with the delta frames `chosen`: the frames, and the plain
/// frames of the wanted chunks no chosen frame rebuilds.
pub fn plan_cost(index: &Index, wanted: &[ChunkEntry], chosen: &[usize]) -> u64 {
    let rebuilt: HashSet<ChunkId> = chosen
        .iter()
        .flat_map(|&f| &index.deltas.frames[f].chunks)
        .map(|&n| index.chunks[n as usize].id)
        .collect();
    let frames: u64 = chosen
        .iter()
        .map(|&f| u64::from(index.deltas.frames[f].compressed_length))
        .sum();
    let mut seen = HashSet::new();
    let plain: u64 = wanted
        .iter()
        .filter(|c| !rebuilt.contains(&c.id) && seen.insert(c.id))
        .map(|c| u64::from(c.compressed_length))
        .sum();
    frames + plain
}

#[derive(Clone, Copy)]
enum Take {
    WhenItPays,
    EveryUsable,
}

/// The frames of `candidates` taken in order by `rule`.
fn take_frames(
    index: &Index,
    wanted: &[ChunkEntry],
    candidates: &[usize],
    rule: Take,
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
            base.marks_covers()
                || rebuilt_earlier.contains(&base.id)
                || holds(&base.id, base.length)
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
        let taken = match rule {
            Take::WhenItPays => saved > u64::from(frame.compressed_length),
            Take::EveryUsable => !rebuilt.is_empty(),
        };
        if taken {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{DeltaBase, DeltaFrame, Deltas};
    use crate::ChunkerParams;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    /// Chunks 1..=6 of 1000 bytes (plain frames of 500) and the frames given, with a base
    /// table of the old chunk 100 and the release's chunks.
    fn index_with(frames: Vec<DeltaFrame>) -> Index {
        let chunks = (1..=6u8)
            .map(|n| ChunkEntry {
                id: id(n),
                offset: u64::from(n - 1) * 1000,
                length: 1000,
                compressed_length: 500,
                pack: 0,
                pack_offset: u64::from(n - 1) * 500,
            })
            .collect();
        let bases = std::iter::once(100u8)
            .chain(1..=6)
            .map(|n| DeltaBase {
                id: id(n),
                length: 1000,
            })
            .collect();
        Index {
            created: 0,
            expires: None,
            chunker: ChunkerParams::DEFAULT,
            image_length: 6000,
            image_hash: [0; 32],
            compatible: "test".into(),
            version: "2".into(),
            packs: Vec::new(),
            chunks,
            deltas: Deltas { bases, frames },
        }
    }

    fn frame(chunks: &[u32], bases: &[u32], compressed_length: u32) -> DeltaFrame {
        DeltaFrame {
            pack: 0,
            pack_offset: 0,
            compressed_length,
            bases: bases.to_vec(),
            chunks: chunks.to_vec(),
        }
    }

    #[test]
    fn a_pass_starts_where_the_first_chunk_goes_back() {
        let index = index_with(vec![
            frame(&[0, 1], &[0], 300),
            frame(&[3], &[0], 200),
            frame(&[1], &[], 200),
            frame(&[0, 1, 2], &[], 900),
            frame(&[3, 4, 5], &[1], 600),
        ]);
        assert_eq!(pass_starts(&index, &[0, 1, 2, 3, 4]), vec![0, 2, 3]);
        assert_eq!(pass_starts(&index, &[1, 3, 4]), vec![0, 1]);
        assert_eq!(pass_starts(&index_with(Vec::new()), &[]), vec![0]);
    }

    /// A wiped slot (it holds nothing): a frame without bases (chunk 2) comes first and takes
    /// a chunk of the first image frame, which then does not pay, and the second image frame
    /// names that frame's chunks. In index order the device would take the first frame and
    /// plain frames for the rest; the image frames alone cost less, and are chosen.
    #[test]
    fn a_device_that_lacks_everything_takes_the_image_frames_when_they_cost_less() {
        let index = index_with(vec![
            frame(&[2], &[], 450),
            frame(&[0, 1, 2], &[], 1000),
            frame(&[3, 4, 5], &[1, 2, 3], 200),
        ]);
        assert_eq!(pass_starts(&index, &[0, 1, 2]), vec![0, 1]);
        let wanted = index.chunks.clone();
        let greedy = take_frames(&index, &wanted, &[0, 1, 2], Take::WhenItPays, |_, _| false);
        assert_eq!(greedy, vec![0]);
        assert_eq!(plan_cost(&index, &wanted, &greedy), 450 + 5 * 500);
        let chosen = choose_delta_frames(&index, &wanted, |_, _| false);
        assert_eq!(chosen, vec![1, 2]);
        assert_eq!(plan_cost(&index, &wanted, &chosen), 1200);
    }

    /// A device one release behind holds the old chunk and lacks chunks 1 and 2 only: the
    /// delta frame against the old chunk costs less than an image frame, and is chosen.
    #[test]
    fn a_device_behind_keeps_its_delta_frames_when_they_cost_less() {
        let index = index_with(vec![
            frame(&[0, 1], &[0], 300),
            frame(&[0, 1, 2], &[], 1000),
            frame(&[3, 4, 5], &[1, 2, 3], 200),
        ]);
        let wanted: Vec<ChunkEntry> = index.chunks[..2].to_vec();
        let chosen = choose_delta_frames(&index, &wanted, |id, _| *id == ChunkId([100; 32]));
        assert_eq!(chosen, vec![0]);
        assert_eq!(plan_cost(&index, &wanted, &chosen), 300);
    }

    /// Image frames in a chain: the first costs more than the plain frames of its chunks,
    /// the second is built on those chunks and costs little. Taken one by one neither is
    /// taken (the first does not pay, the second lacks its bases); the chain costs less
    /// than every plain frame, and a device lacking everything takes it, also when it
    /// chooses again among the chosen frames.
    #[test]
    fn a_chain_of_frames_is_taken_when_it_pays_as_a_whole() {
        let index = index_with(vec![
            frame(&[0, 1, 2], &[], 1600),
            frame(&[3, 4, 5], &[1, 2, 3], 100),
        ]);
        let wanted = index.chunks.clone();
        let one_by_one = take_frames(&index, &wanted, &[0, 1], Take::WhenItPays, |_, _| false);
        assert!(one_by_one.is_empty());
        let chosen = choose_delta_frames(&index, &wanted, |_, _| false);
        assert_eq!(chosen, vec![0, 1]);
        assert_eq!(plan_cost(&index, &wanted, &chosen), 1700);
        assert_eq!(
            choose_delta_frames_among(&index, &wanted, &chosen, |_, _| false),
            chosen
        );
        // A device lacking only the first three chunks: the chain's first link alone costs
        // more than their plain frames, and it takes plain frames.
        let first_three = &index.chunks[..3];
        assert!(choose_delta_frames(&index, first_three, |id, _| {
            index.chunks[3..].iter().any(|c| c.id == *id)
        })
        .is_empty());
    }
}
