//! Turning a set of chunks to fetch into HTTP range requests. Chunks of one pack that lie
//! close together are merged into one request when the gap between them is at most
//! `max_gap` bytes: the gap bytes are downloaded and thrown away, which costs less than a
//! request round trip. Both `chunk-server diff` and the device use this, so the figure the
//! publisher reports is the figure the device will see.

use crate::index::ChunkEntry;

/// Default merge gap: a round trip costs more than 16 KiB on most links.
pub const DEFAULT_MAX_GAP: u64 = 16 * 1024;

/// One range request: a byte span of one pack and the chunks inside it, in pack order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRange {
    pub pack: u32,
    pub start: u64,
    pub end: u64,
    pub chunks: Vec<ChunkEntry>,
}

impl FetchRange {
    pub fn length(&self) -> u64 {
        self.end - self.start
    }
}

/// Groups `chunks` (any order, duplicates by id allowed) into merged range requests.
/// Each distinct (pack, offset) is fetched once; every chunk entry is still returned, so the
/// caller can write a chunk that occurs at several image offsets from one download.
pub fn plan_ranges(chunks: &[ChunkEntry], max_gap: u64) -> Vec<FetchRange> {
    let mut sorted: Vec<ChunkEntry> = chunks.to_vec();
    sorted.sort_by_key(|c| (c.pack, c.pack_offset, c.offset));
    let mut ranges: Vec<FetchRange> = Vec::new();
    for chunk in sorted {
        let chunk_end = chunk.pack_offset + u64::from(chunk.compressed_length);
        match ranges.last_mut() {
            Some(range)
                if range.pack == chunk.pack
                    && chunk.pack_offset <= range.end.saturating_add(max_gap) =>
            {
                range.end = range.end.max(chunk_end);
                range.chunks.push(chunk);
            }
            _ => ranges.push(FetchRange {
                pack: chunk.pack,
                start: chunk.pack_offset,
                end: chunk_end,
                chunks: vec![chunk],
            }),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChunkId;

    fn entry(pack: u32, pack_offset: u64, clen: u32, offset: u64) -> ChunkEntry {
        ChunkEntry {
            id: ChunkId([pack_offset as u8; 32]),
            offset,
            length: 100,
            compressed_length: clen,
            pack,
            pack_offset,
        }
    }

    #[test]
    fn neighbours_merge_and_gaps_split() {
        let chunks = [
            entry(0, 0, 10, 0),
            entry(0, 10, 10, 100),
            entry(0, 100, 10, 200),
            entry(1, 0, 5, 300),
        ];
        let ranges = plan_ranges(&chunks, 0);
        assert_eq!(ranges.len(), 3);
        assert_eq!((ranges[0].start, ranges[0].end), (0, 20));
        let merged = plan_ranges(&chunks, 80);
        assert_eq!(merged.len(), 2);
        assert_eq!(
            (merged[0].start, merged[0].end, merged[0].chunks.len()),
            (0, 110, 3)
        );
    }

    #[test]
    fn duplicate_chunks_share_a_range() {
        let chunks = [entry(0, 0, 10, 0), entry(0, 0, 10, 500)];
        let ranges = plan_ranges(&chunks, 0);
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0].length(), 10);
        assert_eq!(ranges[0].chunks.len(), 2);
    }
}
