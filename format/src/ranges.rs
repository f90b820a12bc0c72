//! Turning a set of chunks to fetch into HTTP range requests. Chunks of one pack that lie
//! close together are merged into one request when the gap between them is at most
//! `max_gap` bytes: the gap bytes are downloaded and thrown away, which costs less than a
//! request round trip. Both `chunk-server diff` and the device use this, so the figure the
//! publisher reports is the figure the device will see.

use crate::index::ChunkEntry;

/// Default merge gap: what a request costs in bytes. A round trip on a device's link costs
/// more than 64 KiB of transfer (50 ms at 10 Mbit/s is 62 KB), and merging two ranges whose
/// gap is smaller than a request's cost is always cheaper. On the bench's fleet store a
/// device three releases behind fetches 2 ranges fewer than at 16 KiB for 0.3% more bytes
/// (bench/README.md, "merge gap").
pub const DEFAULT_MAX_GAP: u64 = 64 * 1024;

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

/// A `Content-Range` answer to a range request (RFC 9110 section 14.4): bytes `start..end`
/// of a representation of `complete_length` bytes, when the server knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    pub complete_length: Option<u64>,
}

impl ContentRange {
    /// Parses `bytes first-last/complete` (complete may be `*`). Anything else, an
    /// unsatisfied-range answer (`bytes */length`), `last < first` or a range past the
    /// complete length is None: the device then cannot trust which bytes it got.
    pub fn parse(value: &str) -> Option<ContentRange> {
        let spec = value.trim().strip_prefix("bytes ")?.trim_start();
        let (span, complete) = spec.split_once('/')?;
        let (first, last) = span.split_once('-')?;
        let start = parse_decimal(first)?;
        let last = parse_decimal(last)?;
        let complete_length = match complete {
            "*" => None,
            digits => Some(parse_decimal(digits)?),
        };
        let end = last.checked_add(1)?;
        if last < start || complete_length.is_some_and(|length| end > length) {
            return None;
        }
        Some(ContentRange {
            start,
            end,
            complete_length,
        })
    }

    /// Whether this answer holds all of `start..end`, from `start` on.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        self.start == start && self.end >= end
    }
}

/// Digits only: no sign, no spaces inside, as the HTTP grammar has it.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
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

    #[test]
    fn content_range_answers() {
        let parsed = |v: &str| ContentRange::parse(v).map(|r| (r.start, r.end, r.complete_length));
        assert_eq!(parsed("bytes 0-99/1000"), Some((0, 100, Some(1000))));
        assert_eq!(parsed("bytes 10-10/*"), Some((10, 11, None)));
        assert_eq!(parsed("bytes 999-999/1000"), Some((999, 1000, Some(1000))));
        for bad in [
            "",
            "bytes */1000",
            "bytes 5-4/1000",
            "bytes 0-1000/1000",
            "bytes 0-99",
            "bytes +0-99/1000",
            "bytes 0- 99/1000",
            "items 0-99/1000",
            "bytes 0-18446744073709551615/*",
            "bytes 0-99999999999999999999/*",
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
        let range = ContentRange::parse("bytes 100-299/1000").unwrap();
        assert!(range.covers(100, 300));
        assert!(range.covers(100, 200));
        assert!(!range.covers(100, 301));
        assert!(!range.covers(0, 200));
    }
}
