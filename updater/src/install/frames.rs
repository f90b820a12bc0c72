//! The install's delta phase, between the local chunks and the plain fetches: the delta
//! frames the plan chose, fetched with merged range requests one range at a time (a frame
//! needs its bases and its content in memory: at most 4 MiB and 1 MiB), each decoded against
//! its bases and each rebuilt chunk verified by its id before it is written. A base is read
//! from the running slot, or, when it is a chunk of the new release an earlier frame rebuilt,
//! from the slot being written, and re-hashed either way. A base that does not match is
//! treated as missing: its frame is not used and its chunks come as plain frames.
//! Plain frames that lie in a range of delta frames come in it too (from the store): the
//! requests are those the plan counts.

use std::collections::{HashMap, HashSet};

use std::os::unix::fs::FileExt;

use diffota_format::frame_codec::decompress_with_prefix_into;
use diffota_format::index::DeltaBase;
use diffota_format::ranges::plan_ranges;
use diffota_format::{ChunkData, ChunkEntry, ChunkId, Index, VerifiedChunk};

use super::fetch::{decode_frame, fetch_range, BadFrame, FetchContext, FrameCutter, ResumableSink};
use super::InstallError;
use crate::plan::{choose_delta_frames_among, frame_entry, SeedMap};
use crate::progress::{Event, Progress};
use crate::slot::TargetSlot;
use crate::source::{RangeSink, StoreSource};

/// Where the bases of the chosen frames are in the running slot (offset, length).
pub(super) type BaseOffsets = HashMap<ChunkId, (u64, u32)>;

/// The running-slot places of the bases of `frames`.
pub(super) fn base_offsets(index: &Index, frames: &[usize], seeds: &SeedMap) -> BaseOffsets {
    frames
        .iter()
        .flat_map(|&f| &index.deltas.frames[f].bases)
        .filter_map(|&b| {
            let base = index.deltas.bases[b as usize];
            seeds
                .get(&base.id)
                .map(|offset| (base.id, (offset, base.length)))
        })
        .collect()
}

/// Rebuilds what it can of `to_fetch` (chunk numbers in the index) from the frames `frames`;
/// returns the chunks left to fetch as plain frames, as numbers in image order.
pub(super) async fn fetch_delta_frames(
    fetching: &FetchContext<'_>,
    frames: &[usize],
    bases: &BaseOffsets,
    to_fetch: Vec<u32>,
    running: &std::fs::File,
) -> Result<Vec<u32>, InstallError> {
    let FetchContext {
        index,
        source,
        bundle,
        slot,
        config,
        traffic,
        progress,
    } = *fetching;
    if frames.is_empty() {
        return Ok(to_fetch);
    }
    // Bases the running slot does not hold may be chunks of the new release: those already
    // in the target slot (in place, or copied there by the local phase), tracked here, and
    // those an earlier usable frame rebuilds, found where `wanted` puts them (no map: on a
    // wiped slot taking image frames, every chunk of the image is named).
    let wanted = Wanted::new(&index.chunks, to_fetch);
    let named_in_place: HashSet<ChunkId> = frames
        .iter()
        .flat_map(|&f| &index.deltas.frames[f].bases)
        .map(|&b| index.deltas.bases[b as usize].id)
        .filter(|id| !bases.contains_key(id) && !wanted.holds(id))
        .collect();
    let in_target: BaseOffsets = index
        .chunks
        .iter()
        .filter(|c| named_in_place.contains(&c.id))
        .map(|c| (c.id, (c.offset, c.length)))
        .collect();
    drop(named_in_place);
    // What is really left to fetch decides (the local phase may have found chunks in place),
    // and a base counts as held only when its bytes match its id.
    let mut checked: HashMap<ChunkId, bool> = HashMap::new();
    let mut scratch = Vec::new();
    let still_wanted = wanted.entries();
    let usable = choose_delta_frames_among(index, &still_wanted, frames, |id, _| {
        *checked.entry(*id).or_insert_with(|| {
            scratch.clear();
            let place = base_place(id, bases, running, &in_target, slot);
            append_base(*id, place, &mut scratch)
        })
    });
    drop((scratch, checked));
    // Where the frames are: the store's packs, or the bundle file (as its only "pack").
    // From the store, the plain frames of the chunks no usable frame rebuilds are planned
    // with them, as the plan's summary (and `chunk-server diff`) counts requests: those in
    // a range with frames come in that range (make lays out the plain frames a base's
    // devices fetch beside the frames against it), the rest in the plain phase.
    let (source, pack_paths, entries): (StoreSource, Vec<String>, Vec<ChunkEntry>) = match bundle {
        None => {
            let rebuilt: HashSet<ChunkId> = usable
                .iter()
                .flat_map(|&f| &index.deltas.frames[f].chunks)
                .map(|&n| index.chunks[n as usize].id)
                .collect();
            let mut seen = HashSet::new();
            let plain = still_wanted
                .iter()
                .filter(|c| !rebuilt.contains(&c.id) && seen.insert(c.id))
                .copied();
            (
                source.clone(),
                index.packs.iter().map(|p| p.store_path()).collect(),
                usable
                    .iter()
                    .map(|&f| frame_entry(index, f))
                    .chain(plain)
                    .collect(),
            )
        }
        Some(bundle) => (
            StoreSource::Local { root: bundle.dir() },
            vec![bundle.file_name()],
            usable
                .iter()
                .map(|&f| {
                    bundle
                        .locate_frame(f as u32, &frame_entry(index, f), 0)
                        .expect("the plan keeps only the frames the bundle carries")
                })
                .collect(),
        ),
    };
    drop(still_wanted);
    let by_place: HashMap<(u32, u64), usize> = entries
        .iter()
        .zip(&usable)
        .map(|(entry, &f)| ((entry.pack, entry.pack_offset), f))
        .collect();
    let wanted = std::sync::Mutex::new(wanted);
    let writer = |url: &str, start: u64, items: Vec<ChunkEntry>| FrameWriter {
        received: FrameCutter::new(start),
        items,
        next: 0,
        decoder: FrameDecoder {
            url: url.to_owned(),
            index,
            by_place: &by_place,
            bases,
            in_target: &in_target,
            wanted: &wanted,
            running,
            slot,
            progress,
            buffers: FrameBuffers::default(),
        },
    };
    let with_frames = |range: &diffota_format::ranges::FetchRange| {
        range
            .chunks
            .iter()
            .any(|c| by_place.contains_key(&(c.pack, c.pack_offset)))
    };
    for range in plan_ranges(&entries, config.http.max_gap)
        .into_iter()
        .filter(with_frames)
    {
        fetch_range(
            &source,
            &pack_paths,
            range,
            config,
            traffic,
            progress,
            &writer,
        )
        .await?;
    }
    Ok(wanted.into_inner().expect("no writer panicked").into_left())
}

/// The chunks still to write, as their numbers in the index sorted by id and offset, and
/// which of them a frame wrote: four bytes and a flag per chunk, not a copy of its entry
/// (on a wiped slot that is every chunk of the image, 0.8 MB of entries on a 1 GiB image).
struct Wanted<'a> {
    chunks: &'a [ChunkEntry],
    numbers: Vec<u32>,
    written: Vec<bool>,
}

impl<'a> Wanted<'a> {
    /// The chunks numbered `to_fetch` among `chunks`, the index's chunks.
    fn new(chunks: &'a [ChunkEntry], mut to_fetch: Vec<u32>) -> Wanted<'a> {
        to_fetch.sort_unstable_by_key(|&n| (chunks[n as usize].id, n));
        let written = vec![false; to_fetch.len()];
        Wanted {
            chunks,
            numbers: to_fetch,
            written,
        }
    }

    fn entry(&self, position: usize) -> &'a ChunkEntry {
        &self.chunks[self.numbers[position] as usize]
    }

    /// Copies of the entries to write (for weighing frames, before the fetch writes any).
    fn entries(&self) -> Vec<ChunkEntry> {
        self.numbers
            .iter()
            .map(|&n| self.chunks[n as usize])
            .collect()
    }

    /// The entries of `id` (one per image offset).
    fn span(&self, id: &ChunkId) -> std::ops::Range<usize> {
        let start = self
            .numbers
            .partition_point(|&n| self.chunks[n as usize].id < *id);
        let end =
            start + self.numbers[start..].partition_point(|&n| self.chunks[n as usize].id == *id);
        start..end
    }

    /// Whether `id` is still to write (all its offsets are written at once).
    fn holds(&self, id: &ChunkId) -> bool {
        let span = self.span(id);
        !span.is_empty() && !self.written[span.start]
    }

    /// Where `id` goes (its first image offset) and its length, written yet or not: where
    /// a later frame reads it as a base once an earlier frame rebuilt it.
    fn place(&self, id: &ChunkId) -> Option<(u64, u32)> {
        let span = self.span(id);
        (!span.is_empty()).then(|| {
            let chunk = self.entry(span.start);
            (chunk.offset, chunk.length)
        })
    }

    /// Marks `id` written and returns the image offsets it goes to (none when it was not
    /// wanted or written already).
    fn take(&mut self, id: &ChunkId) -> Vec<u64> {
        let span = self.span(id);
        if span.is_empty() || self.written[span.start] {
            return Vec::new();
        }
        self.written[span.clone()].fill(true);
        span.map(|p| self.entry(p).offset).collect()
    }

    /// The numbers of the chunks no frame wrote, in image order.
    fn into_left(self) -> Vec<u32> {
        let mut left: Vec<u32> = self
            .numbers
            .into_iter()
            .zip(self.written)
            .filter_map(|(n, written)| (!written).then_some(n))
            .collect();
        left.sort_unstable();
        left
    }
}

/// Where the base `id` is read from: the running slot, else the slot being written.
fn base_place<'f>(
    id: &ChunkId,
    bases: &BaseOffsets,
    running: &'f std::fs::File,
    in_target: &BaseOffsets,
    slot: &'f TargetSlot,
) -> Option<(&'f std::fs::File, u64, u32)> {
    match (bases.get(id), in_target.get(id)) {
        (Some(&(offset, length)), _) => Some((running, offset, length)),
        (None, Some(&(offset, length))) => Some((slot.file(), offset, length)),
        (None, None) => None,
    }
}

/// Appends the base `id`'s bytes from `place` (a slot, an offset, a length) to `prefix` when
/// they can be read and hash to `id`; otherwise leaves `prefix` as it was and returns false.
fn append_base(
    id: ChunkId,
    place: Option<(&std::fs::File, u64, u32)>,
    prefix: &mut Vec<u8>,
) -> bool {
    let Some((file, offset, length)) = place else {
        return false;
    };
    let start = prefix.len();
    prefix.resize(start + length as usize, 0);
    let matches = file.read_exact_at(&mut prefix[start..], offset).is_ok()
        && ChunkId::of(&prefix[start..]) == id;
    if !matches {
        prefix.truncate(start);
    }
    matches
}

/// Receives a range of delta frames (and plain frames amid them) and hands each complete
/// frame to its decoder.
struct FrameWriter<'a, 'i> {
    received: FrameCutter,
    items: Vec<ChunkEntry>,
    /// Frames fully handled so far.
    next: usize,
    decoder: FrameDecoder<'a, 'i>,
}

/// Decodes a delta frame against its bases and writes the chunks it rebuilds wherever the
/// image needs them.
struct FrameDecoder<'a, 'i> {
    url: String,
    index: &'a Index,
    by_place: &'a HashMap<(u32, u64), usize>,
    bases: &'a BaseOffsets,
    /// Bases that are chunks of the new release the target slot held before this phase.
    in_target: &'a BaseOffsets,
    /// Where each chunk still to write goes in the image (and a base an earlier frame
    /// rebuilt is read from).
    wanted: &'a std::sync::Mutex<Wanted<'i>>,
    running: &'a std::fs::File,
    slot: &'a TargetSlot,
    progress: &'a dyn Progress,
    buffers: FrameBuffers,
}

/// A frame's bases and its content, reused from frame to frame: allocating them anew for
/// every frame let the allocator's heap grow well past their size.
#[derive(Default)]
struct FrameBuffers {
    prefix: Vec<u8>,
    content: Vec<u8>,
}

impl FrameDecoder<'_, '_> {
    /// Writes what `item` rebuilds: a delta frame's chunks, or a plain frame's chunk.
    fn write_item(&mut self, item: &ChunkEntry, compressed: &[u8]) -> Result<(), InstallError> {
        match self.by_place.get(&(item.pack, item.pack_offset)) {
            Some(&frame) => self.write_frame(frame, item, compressed),
            None => self.write_plain(item, compressed),
        }
    }

    /// A plain frame planned into a range of delta frames: verified and written wherever the
    /// image needs its chunk, unless a frame wrote it already.
    fn write_plain(&mut self, item: &ChunkEntry, compressed: &[u8]) -> Result<(), InstallError> {
        let wanted = || self.wanted.lock().expect("no writer panicked");
        if !wanted().holds(&item.id) {
            return Ok(());
        }
        if self.progress.cancelled() {
            return Err(InstallError::Cancelled);
        }
        let verified = decode_frame(compressed, item, &self.url)?;
        write_wanted(self.wanted, self.slot, self.progress, item, &verified)
    }

    fn write_frame(
        &mut self,
        number: usize,
        item: &ChunkEntry,
        compressed: &[u8],
    ) -> Result<(), InstallError> {
        let frame = &self.index.deltas.frames[number];
        let FrameBuffers { prefix, content } = &mut self.buffers;
        let deltas = &self.index.deltas;
        let dictionary: usize = deltas
            .dictionary_bases(frame)
            .map(|base| base.length as usize)
            .sum();
        prefix.clear();
        // Exactly what the largest dictionary so far needs, not the next power of two.
        prefix.reserve_exact(dictionary);
        for DeltaBase { id, .. } in deltas.dictionary_bases(frame) {
            let place = base_place(&id, self.bases, self.running, self.in_target, self.slot)
                .or_else(|| {
                    let wanted = self.wanted.lock().expect("no writer panicked");
                    let (offset, length) = wanted.place(&id)?;
                    Some((self.slot.file(), offset, length))
                });
            if !append_base(id, place, prefix) {
                // A base was checked before fetching or written by an earlier frame; if it
                // no longer matches its id, this frame's chunks come plain.
                return Ok(());
            }
        }
        let chunks: Vec<&ChunkEntry> = frame
            .chunks
            .iter()
            .map(|&n| &self.index.chunks[n as usize])
            .collect();
        let bad = |chunk: &ChunkEntry, reason: BadFrame| InstallError::BadChunk {
            id: chunk.id,
            url: self.url.clone(),
            pack_offset: item.pack_offset,
            reason,
        };
        decompress_with_prefix_into(compressed, prefix, item.length as usize, content)
            .map_err(|e| bad(chunks[0], BadFrame::DeltaZstd(e)))?;
        if self.progress.cancelled() {
            return Err(InstallError::Cancelled);
        }
        let mut at = 0;
        for chunk in chunks {
            let bytes = &content[at..at + chunk.length as usize];
            at += chunk.length as usize;
            // A chunk the image does not need here (an image frame's, one written already)
            // is skipped; a needed one leaves `wanted` once it is verified.
            let wanted = || self.wanted.lock().expect("no writer panicked");
            if !wanted().holds(&chunk.id) {
                continue;
            }
            let verified = ChunkData(bytes.to_vec())
                .verify(&chunk.id)
                .map_err(|_| bad(chunk, BadFrame::Hash))?;
            write_wanted(self.wanted, self.slot, self.progress, chunk, &verified)?;
        }
        Ok(())
    }
}

/// Writes `chunk`'s verified bytes at every image offset it is still wanted at.
fn write_wanted(
    wanted: &std::sync::Mutex<Wanted<'_>>,
    slot: &TargetSlot,
    progress: &dyn Progress,
    chunk: &ChunkEntry,
    verified: &VerifiedChunk,
) -> Result<(), InstallError> {
    let offsets = wanted.lock().expect("no writer panicked").take(&chunk.id);
    for offset in offsets {
        slot.write_chunk(verified, offset)?;
        progress.event(Event::Written {
            bytes: u64::from(chunk.length),
        });
    }
    Ok(())
}

impl RangeSink for FrameWriter<'_, '_> {
    type Error = InstallError;

    fn accept(&mut self, bytes: &[u8]) -> Result<(), InstallError> {
        let Self {
            received,
            items,
            next,
            decoder,
        } = self;
        received.feed(bytes, items, next, |item, frame| {
            decoder.write_item(item, frame)
        })
    }
}

impl ResumableSink for FrameWriter<'_, '_> {
    fn finished(&self) -> usize {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &[u8], offset: u64) -> ChunkEntry {
        ChunkEntry {
            id: ChunkId::of(content),
            offset,
            length: content.len() as u32,
            compressed_length: content.len() as u32,
            pack: 0,
            pack_offset: offset,
        }
    }

    #[test]
    fn wanted_chunks_are_written_at_every_offset_once_and_the_rest_is_left_in_image_order() {
        let index_chunks = vec![
            chunk(b"a", 0),
            chunk(b"x", 5),
            chunk(b"b", 10),
            chunk(b"a", 20),
            chunk(b"c", 30),
        ];
        // All but x (in place already), by their numbers in the index.
        let mut wanted = Wanted::new(&index_chunks, vec![0, 2, 3, 4]);
        assert_eq!(wanted.entries().len(), 4);
        assert!(!wanted.holds(&ChunkId::of(b"x")));
        let a = ChunkId::of(b"a");
        assert!(wanted.holds(&a));
        assert!(!wanted.holds(&ChunkId::of(b"z")));
        assert_eq!(wanted.place(&a), Some((0, 1)));
        assert_eq!(wanted.take(&a), vec![0, 20]);
        assert!(!wanted.holds(&a));
        assert_eq!(
            wanted.place(&a),
            Some((0, 1)),
            "still where a later frame reads it"
        );
        assert_eq!(wanted.place(&ChunkId::of(b"z")), None);
        assert_eq!(wanted.take(&a), Vec::<u64>::new(), "written once");
        assert_eq!(wanted.take(&ChunkId::of(b"z")), Vec::<u64>::new());
        assert_eq!(wanted.into_left(), vec![2, 4]);
    }
}
