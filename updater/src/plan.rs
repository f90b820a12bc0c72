//! Planning an install, without touching any device: for every chunk of the new image,
//! where its bytes can come from. In order of preference: already in place in the target
//! slot (an interrupted or repeated install, or an older release at the same offset), copied
//! from the running slot, or fetched. Local sources are only candidates: the executor
//! re-hashes every chunk it takes from a slot, and a mismatch turns into a fetch, so a stale
//! stored index costs a download, never a wrong byte.
//!
//! Of the chunks to fetch, those a delta frame rebuilds more cheaply than their own frames
//! come from that frame, when the running slot holds every base it names
//! (`choose_delta_frames`); the executor re-hashes each base before use as well.

use std::collections::{HashMap, HashSet};

pub use diffota_format::frame_choice::{
    choose_delta_frames, choose_delta_frames_among, frame_entry, with_delta_frames,
};
use diffota_format::ranges::{plan_ranges, FetchRange};
use diffota_format::{ChunkEntry, ChunkId, Index};

/// Chunks a slot is believed to hold, by id, with one offset each.
#[derive(Clone, Debug, Default)]
pub struct SeedMap {
    offsets: HashMap<ChunkId, (u64, u32)>,
}

impl SeedMap {
    /// What a slot holds according to the index it was last written with.
    pub fn from_index(index: &Index) -> SeedMap {
        let mut seeds = SeedMap::default();
        for chunk in &index.chunks {
            seeds.insert(chunk.id, chunk.offset, chunk.length);
        }
        seeds
    }

    pub fn insert(&mut self, id: ChunkId, offset: u64, length: u32) {
        self.offsets.entry(id).or_insert((offset, length));
    }

    pub fn get(&self, id: &ChunkId) -> Option<u64> {
        self.offsets.get(id).map(|&(offset, _)| offset)
    }

    /// Whether the slot is believed to hold the chunk `id` of `length` bytes.
    pub fn holds(&self, id: &ChunkId, length: u32) -> bool {
        self.offsets.get(id).is_some_and(|&(_, l)| l == length)
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

/// Which chunks may already be in place in the target slot.
#[derive(Clone, Debug, Default)]
pub enum InPlace {
    /// Nothing is known about the target: assume nothing is in place.
    #[default]
    Nothing,
    /// An install of this same image into this slot was interrupted: check every chunk.
    Everything,
    /// The target's stored index: chunks with the same id at the same offset.
    Known(HashSet<(ChunkId, u64)>),
}

impl InPlace {
    pub fn from_index(index: &Index) -> InPlace {
        InPlace::Known(index.chunks.iter().map(|c| (c.id, c.offset)).collect())
    }

    fn candidate(&self, chunk: &ChunkEntry) -> bool {
        match self {
            InPlace::Nothing => false,
            InPlace::Everything => true,
            InPlace::Known(set) => set.contains(&(chunk.id, chunk.offset)),
        }
    }
}

/// One chunk of the new image and its candidate local sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub chunk: ChunkEntry,
    pub check_in_place: bool,
    /// Offset of the same chunk in the running slot.
    pub seed_offset: Option<u64>,
}

impl Step {
    pub fn is_local(&self) -> bool {
        self.check_in_place || self.seed_offset.is_some()
    }
}

/// A step without its chunk, which is the index's entry of the same number: the plan holds
/// one per chunk of the image, so it does not copy the index's entries (24 bytes a chunk
/// instead of 88).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Source {
    check_in_place: bool,
    seed_offset: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// Per chunk of the index, in its order.
    sources: Vec<Source>,
    /// Numbers of the index's delta frames that rebuild chunks to fetch.
    pub delta_frames: Vec<usize>,
}

/// What a plan will cost, as reported before downloading anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlanSummary {
    pub image_bytes: u64,
    pub chunks: u64,
    pub local_chunks: u64,
    pub local_bytes: u64,
    pub fetch_chunks: u64,
    /// Local chunks the running slot lacks, believed written by an interrupted install of
    /// the same release: checked in place, fetched after all when they do not match (not
    /// counted in `fetch_bytes`).
    pub in_place_chunks: u64,
    /// Compressed bytes of the chunks to fetch, merge gaps included.
    pub fetch_bytes: u64,
    pub fetch_requests: u64,
    /// Delta frames among what is fetched.
    pub delta_frames: u64,
}

impl Plan {
    pub fn build(index: &Index, running: &SeedMap, in_place: &InPlace) -> Plan {
        let sources: Vec<Source> = index
            .chunks
            .iter()
            .map(|chunk| Source {
                check_in_place: in_place.candidate(chunk),
                seed_offset: running.get(&chunk.id),
            })
            .collect();
        let mut plan = Plan {
            sources,
            delta_frames: Vec::new(),
        };
        plan.delta_frames = choose_delta_frames(index, &plan.unseeded(index), |id, length| {
            running.holds(id, length)
        });
        plan
    }

    /// The chunks the running slot lacks, which the delta frames are chosen against: a chunk
    /// only believed to be in place (a resumed install) may still need one.
    fn unseeded(&self, index: &Index) -> Vec<ChunkEntry> {
        index
            .chunks
            .iter()
            .zip(&self.sources)
            .filter(|(_, s)| s.seed_offset.is_none())
            .map(|(chunk, _)| *chunk)
            .collect()
    }

    /// Every chunk of `index` (the index the plan was built for) with its local sources.
    pub fn steps<'a>(&'a self, index: &'a Index) -> impl Iterator<Item = Step> + 'a {
        index
            .chunks
            .iter()
            .zip(&self.sources)
            .map(|(chunk, source)| Step {
                chunk: *chunk,
                check_in_place: source.check_in_place,
                seed_offset: source.seed_offset,
            })
    }

    /// Chunks with no local candidate.
    pub fn fetch_chunks(&self, index: &Index) -> Vec<ChunkEntry> {
        self.steps(index)
            .filter(|s| !s.is_local())
            .map(|s| s.chunk)
            .collect()
    }

    /// The plan's delta frames, the rest of it dropped.
    pub fn into_delta_frames(self) -> Vec<usize> {
        self.delta_frames
    }

    /// Chunks with no local candidate that none of the plan's delta frames rebuilds.
    pub fn fetch_chunks_after_frames(&self, index: &Index) -> Vec<ChunkEntry> {
        let rebuilt: HashSet<ChunkId> = self
            .delta_frames
            .iter()
            .flat_map(|&f| &index.deltas.frames[f].chunks)
            .map(|&n| index.chunks[n as usize].id)
            .collect();
        self.steps(index)
            .filter(|s| !s.is_local() && !rebuilt.contains(&s.chunk.id))
            .map(|s| s.chunk)
            .collect()
    }

    /// Keeps the delta frames `available` says can be had (a bundle's carried frames), and
    /// of those the ones still worth it: a frame whose base only a dropped frame rebuilt goes
    /// too.
    pub fn keep_delta_frames(&mut self, index: &Index, available: impl Fn(usize) -> bool) {
        let unseeded = self.unseeded(index);
        let lacking: HashSet<ChunkId> = unseeded.iter().map(|c| c.id).collect();
        let candidates: Vec<usize> = self
            .delta_frames
            .iter()
            .copied()
            .filter(|&f| available(f))
            .collect();
        // Every base of a chosen frame was held by the running slot or rebuilt by an earlier
        // chosen frame; the chunks the slot lacks are the latter.
        self.delta_frames =
            choose_delta_frames_among(index, &unseeded, &candidates, |id, _| !lacking.contains(id));
    }

    /// What the plan will fetch, chunks believed in place counted as in place.
    pub fn summary(&self, index: &Index, max_gap: u64) -> PlanSummary {
        let wanted = self.fetch_chunks(index);
        let frames = choose_delta_frames_among(index, &wanted, &self.delta_frames, |_, _| true);
        let ranges = plan_ranges(&with_delta_frames(index, &wanted, &frames), max_gap);
        PlanSummary {
            delta_frames: frames.len() as u64,
            ..summarize(self.steps(index), &ranges)
        }
    }
}

pub fn summarize(steps: impl Iterator<Item = Step>, ranges: &[FetchRange]) -> PlanSummary {
    let mut summary = PlanSummary {
        fetch_bytes: ranges.iter().map(|r| r.length()).sum(),
        fetch_requests: ranges.len() as u64,
        ..PlanSummary::default()
    };
    for step in steps {
        let length = u64::from(step.chunk.length);
        summary.chunks += 1;
        summary.image_bytes += length;
        if step.is_local() {
            summary.local_chunks += 1;
            summary.local_bytes += length;
            if step.seed_offset.is_none() {
                summary.in_place_chunks += 1;
            }
        } else {
            summary.fetch_chunks += 1;
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffota_format::{ChunkerParams, PackRef};

    fn index_of(parts: &[&[u8]]) -> Index {
        let mut chunks = Vec::new();
        let (mut offset, mut pack_offset) = (0u64, 0u64);
        for part in parts {
            chunks.push(ChunkEntry {
                id: ChunkId::of(part),
                offset,
                length: part.len() as u32,
                compressed_length: part.len() as u32,
                pack: 0,
                pack_offset,
            });
            offset += part.len() as u64;
            pack_offset += part.len() as u64;
        }
        Index {
            created: 0,
            expires: None,
            chunker: ChunkerParams::DEFAULT,
            image_length: offset,
            image_hash: [0; 32],
            compatible: "c".into(),
            version: "1".into(),
            packs: vec![PackRef {
                id: [1; 32],
                length: pack_offset,
            }],
            chunks,
            deltas: Default::default(),
        }
    }

    #[test]
    fn copies_what_the_running_slot_has_and_fetches_the_rest() {
        let old = index_of(&[b"aaaa", b"bbbb", b"cccc"]);
        let new = index_of(&[b"aaaa", b"xxxx", b"cccc", b"yyyy"]);
        let plan = Plan::build(&new, &SeedMap::from_index(&old), &InPlace::Nothing);
        let sources: Vec<_> = plan.steps(&new).map(|s| s.seed_offset).collect();
        assert_eq!(sources, vec![Some(0), None, Some(8), None]);
        let summary = plan.summary(&new, 0);
        assert_eq!((summary.local_chunks, summary.fetch_chunks), (2, 2));
        assert_eq!(summary.fetch_requests, 2);
        assert_eq!(
            plan.summary(&new, 4).fetch_requests,
            1,
            "a 4-byte gap merges the two fetches"
        );
    }

    #[test]
    fn in_place_from_the_targets_index_only_at_the_same_offset() {
        let target_old = index_of(&[b"xxxx", b"aaaa"]);
        let new = index_of(&[b"xxxx", b"zzzz", b"aaaa"]);
        let plan = Plan::build(&new, &SeedMap::default(), &InPlace::from_index(&target_old));
        let checks: Vec<_> = plan.steps(&new).map(|s| s.check_in_place).collect();
        assert_eq!(checks, vec![true, false, false]);
    }

    /// `new` with one delta frame rebuilding its chunks `chunks` from base `base`.
    fn with_frame(mut new: Index, base: &[u8], chunks: Vec<u32>, compressed_length: u32) -> Index {
        use diffota_format::index::{DeltaBase, DeltaFrame};
        let base_number = new.deltas.bases.len() as u32;
        new.deltas.bases.push(DeltaBase {
            id: ChunkId::of(base),
            length: base.len() as u32,
        });
        new.deltas.frames.push(DeltaFrame {
            pack: 0,
            pack_offset: new.packs[0].length,
            compressed_length,
            bases: vec![base_number],
            chunks,
        });
        new.packs[0].length += u64::from(compressed_length);
        new
    }

    #[test]
    fn a_delta_frame_is_used_when_its_bases_are_held_and_it_is_cheaper() {
        let old = index_of(&[b"aaaa", b"bbbb", b"cccc"]);
        // Chunks 1 and 3 (8 bytes of plain frames) come from one 3-byte frame against "bbbb".
        let new = with_frame(
            index_of(&[b"aaaa", b"bbbx", b"cccc", b"bbby"]),
            b"bbbb",
            vec![1, 3],
            3,
        );
        let plan = Plan::build(&new, &SeedMap::from_index(&old), &InPlace::Nothing);
        assert_eq!(plan.delta_frames, vec![0]);
        let summary = plan.summary(&new, 0);
        assert_eq!(
            (
                summary.delta_frames,
                summary.fetch_bytes,
                summary.fetch_requests
            ),
            (1, 3, 1)
        );

        // Without the base the plain frames serve.
        let stranger = Plan::build(
            &new,
            &SeedMap::from_index(&index_of(&[b"zzzz"])),
            &InPlace::Nothing,
        );
        assert!(stranger.delta_frames.is_empty());
        assert_eq!(
            stranger.summary(&new, 0).fetch_bytes,
            16,
            "all four chunks, plain"
        );

        // A frame dearer than the plain frames it replaces is not used.
        let dear = with_frame(index_of(&[b"aaaa", b"bbbx"]), b"bbbb", vec![1], 5);
        assert!(
            Plan::build(&dear, &SeedMap::from_index(&old), &InPlace::Nothing)
                .delta_frames
                .is_empty()
        );
    }

    #[test]
    fn a_frame_may_build_on_a_chunk_an_earlier_frame_rebuilds() {
        let old = index_of(&[b"aaaa", b"bbbb"]);
        // Frame 0 rebuilds "bbbx" from the old "bbbb"; frame 1 "bbxy" from the new "bbbx".
        let new = with_frame(
            with_frame(index_of(&[b"aaaa", b"bbbx", b"bbxy"]), b"bbbb", vec![1], 2),
            b"bbbx",
            vec![2],
            2,
        );
        let plan = Plan::build(&new, &SeedMap::from_index(&old), &InPlace::Nothing);
        assert_eq!(plan.delta_frames, vec![0, 1]);
        assert_eq!(plan.summary(&new, 0).fetch_bytes, 4, "two 2-byte frames");

        // Without the first frame (a bundle that does not carry it) the second lacks its base.
        let mut bundled = plan.clone();
        bundled.keep_delta_frames(&new, |f| f == 1);
        assert!(bundled.delta_frames.is_empty());
        let mut whole = plan.clone();
        whole.keep_delta_frames(&new, |_| true);
        assert_eq!(whole.delta_frames, vec![0, 1]);

        // A device without "bbbb" uses neither.
        let stranger = Plan::build(
            &new,
            &SeedMap::from_index(&index_of(&[b"zzzz"])),
            &InPlace::Nothing,
        );
        assert!(stranger.delta_frames.is_empty());
    }

    #[test]
    fn frames_are_candidates_on_resume_and_chosen_by_what_is_left() {
        let old = index_of(&[b"aaaa", b"bbbb"]);
        let new = with_frame(
            index_of(&[b"aaaa", b"bbbx", b"bbby"]),
            b"bbbb",
            vec![1, 2],
            3,
        );
        let plan = Plan::build(&new, &SeedMap::from_index(&old), &InPlace::Everything);
        assert_eq!(
            plan.delta_frames,
            vec![0],
            "a resumed install may still need the frame"
        );
        let left = [new.chunks[2]];
        assert_eq!(
            choose_delta_frames_among(&new, &left, &plan.delta_frames, |_, _| true),
            vec![0]
        );
        let cheap_left = [ChunkEntry {
            compressed_length: 2,
            ..new.chunks[2]
        }];
        assert!(
            choose_delta_frames_among(&new, &cheap_left, &plan.delta_frames, |_, _| true)
                .is_empty()
        );
    }

    #[test]
    fn resumed_install_checks_everything() {
        let new = index_of(&[b"xxxx", b"zzzz"]);
        let plan = Plan::build(&new, &SeedMap::default(), &InPlace::Everything);
        assert!(plan.steps(&new).all(|s| s.check_in_place));
        let summary = plan.summary(&new, 0);
        assert_eq!(summary.fetch_requests, 0);
        assert_eq!(
            (summary.local_chunks, summary.in_place_chunks),
            (2, 2),
            "both are local only if they are in place: the report says so"
        );
    }
}
