//! Bundles (`.dfb`): a whole update in one file, for devices without a network. A bundle
//! holds a release's signed index and signature exactly as published, a table of the chunks
//! it carries, and those chunks' zstd frames. Only the index is signed: the table and the
//! frames need no signature because every chunk is verified by its id before it is written,
//! so a tampered table or frame can only make an install fail, never write a wrong byte.
//!
//! All integers are little-endian.
//!
//! | offset | size | meaning |
//! |---|---|---|
//! | 0 | 8 | magic `DFOTABND` |
//! | 8 | 2 | format version: 1 (one image), 2 (a release manifest and all its images) |
//! | 10 | 2 | flags, 0 |
//! | 12 | 4 | section count S (4) |
//! | 16 | S × 20 | per section: kind (4), offset in the file (8), length (8) |
//! | … | | the sections, in any order, not overlapping, inside the file |
//!
//! Sections: 1 = release index (`.didx` bytes), 2 = its minisign signature (text),
//! 3 = chunk table, 4 = chunk data (zstd frames), 5 = notes (JSON, informational:
//! `{"to": "2.0", "from": ["1.0"]}`), 6 = delta frame table (optional). The chunk table is a
//! count (4) then per chunk: id (32), offset in the data section (8), compressed length (4).
//! The delta frame table is a count (4) then per frame: its number among the index's delta
//! frames (4), offset in the data section (8), compressed length (4); a device uses one only
//! as the index describes it (bases it must hold, chunks verified by id).
//!
//! Version 2 carries a whole release of several images (`release.json`) instead of one
//! index: sections 1, 2 and 6 give way to 7 = the release manifest, 8 = its minisign
//! signature, 9 = the image indexes and 10 = the image delta frame table (optional); 3, 4
//! and 5 are as in version 1, the chunk table holding every image's chunks once. The image
//! indexes are a count (4) then per index: its BLAKE3 (32), its length (8), its signature's
//! length (4), the index bytes and the signature text. The image delta frame table is a
//! count (4) then per frame: the BLAKE3 of the index it belongs to (32), its number among
//! that index's delta frames (4), offset in the data section (8), compressed length (4). The
//! manifest pins every index (length and BLAKE3), and each index keeps its own signature. A
//! device that reads only version 1 refuses a version 2 bundle by its version.

use std::collections::HashMap;

use crate::chunk::ChunkId;
use crate::FormatError;

pub const MAGIC: &[u8; 8] = b"DFOTABND";
/// A bundle of one image's index.
pub const FORMAT_VERSION: u16 = 1;
/// A bundle of a release manifest and every image it names.
pub const RELEASE_FORMAT_VERSION: u16 = 2;
const SECTION_RECORD: usize = 20;
/// Bytes per chunk in the chunk table, and per frame in the delta frame table.
pub const TABLE_RECORD: usize = 44;
pub const FRAME_RECORD: usize = 16;
/// Bytes per frame in the image delta frame table.
pub const IMAGE_FRAME_RECORD: usize = 48;
/// Bytes before each index in the image indexes section.
pub const IMAGE_INDEX_HEAD: usize = 44;
/// Largest index or table a bundle may declare (the decoder allocates this much at most).
pub const MAX_METADATA: u64 = 256 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SectionKind {
    Index = 1,
    Signature = 2,
    ChunkTable = 3,
    ChunkData = 4,
    Notes = 5,
    DeltaFrames = 6,
    Manifest = 7,
    ManifestSignature = 8,
    ImageIndexes = 9,
    ImageDeltaFrames = 10,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    pub offset: u64,
    pub length: u64,
}

/// The notes section: informational (only the index is signed), so every field has a
/// default and a reader ignores what it does not know.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BundleNotes {
    /// The release the bundle carries.
    #[serde(default)]
    pub to: String,
    /// The releases it was made for: a device on any of them needs nothing else.
    #[serde(default)]
    pub from: Vec<String>,
    /// The index name inside the release.
    #[serde(default = "default_name")]
    pub name: String,
}

fn default_name() -> String {
    "rootfs".to_owned()
}

impl BundleNotes {
    /// Notes that do not parse are no notes: they only inform.
    pub fn parse(bytes: &[u8]) -> BundleNotes {
        serde_json::from_slice(bytes).unwrap_or_else(|_| BundleNotes {
            name: default_name(),
            ..BundleNotes::default()
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("notes serialize")
    }
}

/// Why bytes are not a bundle this build reads.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleFormatError {
    #[error("not a diffota bundle (bad magic)")]
    BadMagic,
    #[error("bundle format version {0} is not supported")]
    UnsupportedVersion(u16),
    #[error("{0} sections")]
    SectionCount(usize),
    #[error("file is too short to be a bundle")]
    TooShort,
    #[error("truncated header")]
    TruncatedHeader,
    #[error("truncated: the header needs {needed} bytes, the file has {file_length}")]
    Truncated { needed: u64, file_length: u64 },
    #[error("header is {actual} bytes, expected {expected}")]
    HeaderLength { actual: usize, expected: usize },
    #[error("unknown flags")]
    UnknownFlags,
    #[error("unknown section kind {0}")]
    UnknownSection(u32),
    #[error("section {kind:?} does not belong in a version {version} bundle")]
    NotInVersion { kind: SectionKind, version: u16 },
    #[error("image indexes truncated")]
    ImageIndexesTruncated,
    #[error("an image index's BLAKE3 is not the one its record names")]
    ImageIndexHash,
    #[error("section length overflows")]
    SectionOverflow,
    #[error("section {kind:?} ({offset}..{end}) lies outside the file of {file_length} bytes (truncated?)")]
    SectionOutside {
        kind: SectionKind,
        offset: u64,
        end: u64,
        file_length: u64,
    },
    #[error("section {kind:?} declares {length} bytes")]
    SectionTooLarge { kind: SectionKind, length: u64 },
    #[error("sections overlap")]
    Overlap,
    #[error("no {0:?} section")]
    Missing(SectionKind),
    #[error("several {0:?} sections")]
    Repeated(SectionKind),
    #[error("chunk table truncated")]
    TableTruncated,
    #[error("chunk table of {bytes} bytes cannot hold {count} chunks")]
    TableLength { bytes: usize, count: usize },
    #[error("chunk {0} lies outside the chunk data")]
    ChunkOutside(ChunkId),
    #[error("delta frame {0} lies outside the chunk data")]
    FrameOutside(u32),
    #[error("delta frame {0} is not in the index or has another length there")]
    FrameNotInIndex(u32),
}

/// The header and section table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleHeader {
    /// `FORMAT_VERSION` or `RELEASE_FORMAT_VERSION`.
    pub version: u16,
    pub sections: Vec<Section>,
}

impl BundleHeader {
    pub fn encoded_length(sections: usize) -> u64 {
        16 + (sections * SECTION_RECORD) as u64
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::encoded_length(self.sections.len()) as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(self.sections.len() as u32).to_le_bytes());
        for section in &self.sections {
            out.extend_from_slice(&(section.kind as u32).to_le_bytes());
            out.extend_from_slice(&section.offset.to_le_bytes());
            out.extend_from_slice(&section.length.to_le_bytes());
        }
        out
    }

    /// How many bytes the header occupies, from its first 16 bytes.
    pub fn length_from_prefix(prefix: &[u8; 16]) -> Result<u64, FormatError> {
        if &prefix[..8] != MAGIC {
            return Err(BundleFormatError::BadMagic.into());
        }
        let version = u16::from_le_bytes([prefix[8], prefix[9]]);
        if version != FORMAT_VERSION && version != RELEASE_FORMAT_VERSION {
            return Err(BundleFormatError::UnsupportedVersion(version).into());
        }
        let count = u32::from_le_bytes(prefix[12..16].try_into().expect("4 bytes")) as usize;
        if count == 0 || count > 16 {
            return Err(BundleFormatError::SectionCount(count).into());
        }
        Ok(Self::encoded_length(count))
    }

    /// Decodes the header of a file of `file_length` bytes and checks every section lies
    /// inside the file, without overlaps, each kind at most once, and the required ones present.
    pub fn decode(bytes: &[u8], file_length: u64) -> Result<BundleHeader, FormatError> {
        let bad = FormatError::BadBundle;
        let prefix: &[u8; 16] = bytes
            .get(..16)
            .and_then(|p| p.try_into().ok())
            .ok_or(bad(BundleFormatError::TruncatedHeader))?;
        let length = Self::length_from_prefix(prefix)? as usize;
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if bytes.len() != length {
            return Err(bad(BundleFormatError::HeaderLength {
                actual: bytes.len(),
                expected: length,
            }));
        }
        if u16::from_le_bytes([bytes[10], bytes[11]]) != 0 {
            return Err(bad(BundleFormatError::UnknownFlags));
        }
        let mut sections = Vec::new();
        for record in bytes[16..].chunks_exact(SECTION_RECORD) {
            let kind = match u32::from_le_bytes(record[..4].try_into().expect("4 bytes")) {
                1 => SectionKind::Index,
                2 => SectionKind::Signature,
                3 => SectionKind::ChunkTable,
                4 => SectionKind::ChunkData,
                5 => SectionKind::Notes,
                6 => SectionKind::DeltaFrames,
                7 => SectionKind::Manifest,
                8 => SectionKind::ManifestSignature,
                9 => SectionKind::ImageIndexes,
                10 => SectionKind::ImageDeltaFrames,
                other => return Err(bad(BundleFormatError::UnknownSection(other))),
            };
            let offset = u64::from_le_bytes(record[4..12].try_into().expect("8 bytes"));
            let length = u64::from_le_bytes(record[12..20].try_into().expect("8 bytes"));
            let end = offset
                .checked_add(length)
                .ok_or(bad(BundleFormatError::SectionOverflow))?;
            if offset < bytes.len() as u64 || end > file_length {
                return Err(bad(BundleFormatError::SectionOutside {
                    kind,
                    offset,
                    end,
                    file_length,
                }));
            }
            if kind != SectionKind::ChunkData && length > MAX_METADATA {
                return Err(bad(BundleFormatError::SectionTooLarge { kind, length }));
            }
            sections.push(Section {
                kind,
                offset,
                length,
            });
        }
        let mut sorted = sections.clone();
        sorted.sort_by_key(|s| s.offset);
        for pair in sorted.windows(2) {
            if pair[0].offset + pair[0].length > pair[1].offset {
                return Err(bad(BundleFormatError::Overlap));
            }
        }
        for (kind, presence) in Self::sections_of(version) {
            match (sections.iter().filter(|s| s.kind == kind).count(), presence) {
                (0, Presence::Optional | Presence::Absent)
                | (1, Presence::Optional | Presence::Required) => {}
                (0, Presence::Required) => return Err(bad(BundleFormatError::Missing(kind))),
                (_, Presence::Absent) => {
                    return Err(bad(BundleFormatError::NotInVersion { kind, version }))
                }
                _ => return Err(bad(BundleFormatError::Repeated(kind))),
            }
        }
        Ok(BundleHeader { version, sections })
    }

    /// Which sections a bundle of `version` has.
    fn sections_of(version: u16) -> [(SectionKind, Presence); 10] {
        use Presence::*;
        use SectionKind::*;
        let (one, release) = if version == RELEASE_FORMAT_VERSION {
            (Absent, Required)
        } else {
            (Required, Absent)
        };
        let optional_if = |p: Presence| if p == Absent { Absent } else { Optional };
        [
            (Index, one),
            (Signature, one),
            (DeltaFrames, optional_if(one)),
            (Manifest, release),
            (ManifestSignature, release),
            (ImageIndexes, release),
            (ImageDeltaFrames, optional_if(release)),
            (ChunkTable, Required),
            (ChunkData, Required),
            (Notes, Optional),
        ]
    }

    pub fn section(&self, kind: SectionKind) -> Option<Section> {
        self.sections.iter().copied().find(|s| s.kind == kind)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    Required,
    Optional,
    Absent,
}

/// One image's index and its signature in a version 2 bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundledIndex<'a> {
    pub index_blake3: [u8; 32],
    pub index: &'a [u8],
    pub signature: &'a [u8],
}

/// The image indexes section: each (index bytes, signature) with its BLAKE3 and lengths.
pub fn encode_image_indexes(indexes: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = (indexes.len() as u32).to_le_bytes().to_vec();
    for (index, signature) in indexes {
        out.extend_from_slice(blake3::hash(index).as_bytes());
        out.extend_from_slice(&(index.len() as u64).to_le_bytes());
        out.extend_from_slice(&(signature.len() as u32).to_le_bytes());
        out.extend_from_slice(index);
        out.extend_from_slice(signature);
    }
    out
}

/// Decodes the image indexes section; each index must hash to the BLAKE3 its record names.
pub fn decode_image_indexes(bytes: &[u8]) -> Result<Vec<BundledIndex<'_>>, FormatError> {
    fn take<'a>(rest: &mut &'a [u8], n: u64) -> Result<&'a [u8], FormatError> {
        let truncated = || FormatError::BadBundle(BundleFormatError::ImageIndexesTruncated);
        let n = usize::try_from(n).map_err(|_| truncated())?;
        if rest.len() < n {
            return Err(truncated());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    let mut rest = bytes;
    let count = u32::from_le_bytes(take(&mut rest, 4)?.try_into().expect("4 bytes"));
    let mut indexes = Vec::new();
    for _ in 0..count {
        let head = take(&mut rest, IMAGE_INDEX_HEAD as u64)?;
        let index_blake3: [u8; 32] = head[..32].try_into().expect("32 bytes");
        let index_length = u64::from_le_bytes(head[32..40].try_into().expect("8 bytes"));
        let signature_length = u32::from_le_bytes(head[40..44].try_into().expect("4 bytes"));
        let index = take(&mut rest, index_length)?;
        let signature = take(&mut rest, u64::from(signature_length))?;
        if blake3::hash(index).as_bytes() != &index_blake3 {
            return Err(FormatError::BadBundle(BundleFormatError::ImageIndexHash));
        }
        indexes.push(BundledIndex {
            index_blake3,
            index,
            signature,
        });
    }
    if !rest.is_empty() {
        return Err(FormatError::BadBundle(BundleFormatError::TableLength {
            bytes: bytes.len(),
            count: count as usize,
        }));
    }
    Ok(indexes)
}

/// The image delta frame table: (BLAKE3 of the image's index, frame number in it, where its
/// bytes are).
pub fn encode_image_frame_table(frames: &[([u8; 32], u32, BundledChunk)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + frames.len() * IMAGE_FRAME_RECORD);
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for (index_blake3, number, frame) in frames {
        out.extend_from_slice(index_blake3);
        out.extend_from_slice(&number.to_le_bytes());
        out.extend_from_slice(&frame.offset.to_le_bytes());
        out.extend_from_slice(&frame.compressed_length.to_le_bytes());
    }
    out
}

/// Decodes an image delta frame table whose frames must lie within `data_length` bytes.
#[allow(clippy::type_complexity)]
pub fn decode_image_frame_table(
    bytes: &[u8],
    data_length: u64,
) -> Result<HashMap<([u8; 32], u32), BundledChunk>, FormatError> {
    decode_records(bytes, IMAGE_FRAME_RECORD, data_length, |key| {
        let index_blake3: [u8; 32] = key[..32].try_into().expect("32 bytes");
        let number = u32::from_le_bytes(key[32..].try_into().expect("4 bytes"));
        (
            (index_blake3, number),
            BundleFormatError::FrameOutside(number),
        )
    })
}

/// Where a chunk's frame lies in the data section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundledChunk {
    pub offset: u64,
    pub compressed_length: u32,
}

pub fn encode_table(chunks: &[(ChunkId, BundledChunk)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + chunks.len() * TABLE_RECORD);
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for (id, chunk) in chunks {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&chunk.offset.to_le_bytes());
        out.extend_from_slice(&chunk.compressed_length.to_le_bytes());
    }
    out
}

/// The delta frame table: (frame number in the index, where its bytes are).
pub fn encode_frame_table(frames: &[(u32, BundledChunk)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + frames.len() * FRAME_RECORD);
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for (number, frame) in frames {
        out.extend_from_slice(&number.to_le_bytes());
        out.extend_from_slice(&frame.offset.to_le_bytes());
        out.extend_from_slice(&frame.compressed_length.to_le_bytes());
    }
    out
}

/// Decodes a delta frame table whose frames must lie within `data_length` bytes; the frame
/// numbers are checked against the index by the reader.
pub fn decode_frame_table(
    bytes: &[u8],
    data_length: u64,
) -> Result<HashMap<u32, BundledChunk>, FormatError> {
    decode_records(bytes, FRAME_RECORD, data_length, |key| {
        let number = u32::from_le_bytes(key.try_into().expect("4 bytes"));
        (number, BundleFormatError::FrameOutside(number))
    })
}

/// Decodes a chunk table whose frames must lie within `data_length` bytes.
pub fn decode_table(
    bytes: &[u8],
    data_length: u64,
) -> Result<HashMap<ChunkId, BundledChunk>, FormatError> {
    decode_records(bytes, TABLE_RECORD, data_length, |key| {
        let id = ChunkId(key.try_into().expect("32 bytes"));
        (id, BundleFormatError::ChunkOutside(id))
    })
}

/// A table of a count (4) then `record` bytes per entry: a key (`record - 12` bytes, read by
/// `key`, which also names the entry for an error), an offset in the data section (8) and a
/// compressed length (4); every frame must lie within `data_length` bytes.
fn decode_records<K: std::hash::Hash + Eq>(
    bytes: &[u8],
    record: usize,
    data_length: u64,
    key: impl Fn(&[u8]) -> (K, BundleFormatError),
) -> Result<HashMap<K, BundledChunk>, FormatError> {
    let bad = FormatError::BadBundle;
    let count = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or(bad(BundleFormatError::TableTruncated))?;
    if bytes.len() - 4 != count.saturating_mul(record) {
        return Err(bad(BundleFormatError::TableLength {
            bytes: bytes.len(),
            count,
        }));
    }
    let key_length = record - 12;
    let mut table = HashMap::with_capacity(count);
    for entry in bytes[4..].chunks_exact(record) {
        let (key, outside) = key(&entry[..key_length]);
        let offset = u64::from_le_bytes(
            entry[key_length..key_length + 8]
                .try_into()
                .expect("8 bytes"),
        );
        let compressed_length =
            u32::from_le_bytes(entry[key_length + 8..].try_into().expect("4 bytes"));
        if offset
            .checked_add(u64::from(compressed_length))
            .is_none_or(|end| end > data_length)
            || compressed_length == 0
        {
            return Err(bad(outside));
        }
        table.insert(
            key,
            BundledChunk {
                offset,
                compressed_length,
            },
        );
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BundleHeader {
        BundleHeader {
            version: FORMAT_VERSION,
            sections: vec![
                Section {
                    kind: SectionKind::Index,
                    offset: 96,
                    length: 10,
                },
                Section {
                    kind: SectionKind::Signature,
                    offset: 106,
                    length: 5,
                },
                Section {
                    kind: SectionKind::ChunkTable,
                    offset: 111,
                    length: 4,
                },
                Section {
                    kind: SectionKind::ChunkData,
                    offset: 115,
                    length: 0,
                },
            ],
        }
    }

    #[test]
    fn header_round_trip_and_bounds() {
        let bytes = header().encode();
        assert_eq!(bytes.len() as u64, BundleHeader::encoded_length(4));
        assert_eq!(BundleHeader::decode(&bytes, 115).unwrap(), header());
        assert!(matches!(
            BundleHeader::decode(&bytes, 114),
            Err(FormatError::BadBundle(
                BundleFormatError::SectionOutside { .. }
            ))
        ));
        for cut in 0..bytes.len() {
            assert!(BundleHeader::decode(&bytes[..cut], 115).is_err());
        }
        let mut overlapping = header();
        overlapping.sections[1].offset = 100;
        assert!(matches!(
            BundleHeader::decode(&overlapping.encode(), 115),
            Err(FormatError::BadBundle(BundleFormatError::Overlap))
        ));
        let mut missing = header();
        let dropped = missing.sections.pop().unwrap().kind;
        assert!(matches!(
            BundleHeader::decode(&missing.encode(), 115),
            Err(FormatError::BadBundle(BundleFormatError::Missing(kind))) if kind == dropped
        ));
    }

    #[test]
    fn table_round_trip_and_bounds() {
        let chunks = vec![
            (
                ChunkId([1; 32]),
                BundledChunk {
                    offset: 0,
                    compressed_length: 10,
                },
            ),
            (
                ChunkId([2; 32]),
                BundledChunk {
                    offset: 10,
                    compressed_length: 5,
                },
            ),
        ];
        let bytes = encode_table(&chunks);
        let table = decode_table(&bytes, 15).unwrap();
        assert_eq!(table[&ChunkId([2; 32])], chunks[1].1);
        assert!(matches!(
            decode_table(&bytes, 14),
            Err(FormatError::BadBundle(BundleFormatError::ChunkOutside(id))) if id == ChunkId([2; 32])
        ));
        assert!(matches!(
            decode_table(&bytes[..bytes.len() - 1], 15),
            Err(FormatError::BadBundle(
                BundleFormatError::TableLength { .. }
            ))
        ));
    }

    #[test]
    fn frame_table_round_trips_and_stays_inside_the_data() {
        let frames = [(
            7u32,
            BundledChunk {
                offset: 3,
                compressed_length: 9,
            },
        )];
        let bytes = encode_frame_table(&frames);
        assert_eq!(decode_frame_table(&bytes, 12).unwrap()[&7], frames[0].1);
        assert!(matches!(
            decode_frame_table(&bytes, 11),
            Err(FormatError::BadBundle(BundleFormatError::FrameOutside(7)))
        ));
        assert!(matches!(
            decode_frame_table(&bytes[..5], 12),
            Err(FormatError::BadBundle(
                BundleFormatError::TableLength { .. }
            ))
        ));
    }

    #[test]
    fn a_release_bundle_has_the_manifest_sections_and_none_of_one_image() {
        let section = |kind, offset, length| Section {
            kind,
            offset,
            length,
        };
        let release = BundleHeader {
            version: RELEASE_FORMAT_VERSION,
            sections: vec![
                section(SectionKind::Manifest, 116, 10),
                section(SectionKind::ManifestSignature, 126, 5),
                section(SectionKind::ImageIndexes, 131, 4),
                section(SectionKind::ChunkTable, 135, 4),
                section(SectionKind::ChunkData, 139, 0),
            ],
        };
        let bytes = release.encode();
        assert_eq!(bytes.len(), 116);
        assert_eq!(BundleHeader::decode(&bytes, 139).unwrap(), release);
        let mut mixed = release.clone();
        mixed.sections[2] = section(SectionKind::Index, 131, 4);
        assert!(matches!(
            BundleHeader::decode(&mixed.encode(), 139),
            Err(FormatError::BadBundle(BundleFormatError::NotInVersion {
                kind: SectionKind::Index,
                version: 2
            }))
        ));
        // A version 1 bundle with a manifest section is refused the same way.
        let one = BundleHeader {
            version: FORMAT_VERSION,
            sections: vec![
                section(SectionKind::Index, 116, 10),
                section(SectionKind::Signature, 126, 5),
                section(SectionKind::Manifest, 131, 4),
                section(SectionKind::ChunkTable, 135, 4),
                section(SectionKind::ChunkData, 139, 0),
            ],
        };
        assert!(matches!(
            BundleHeader::decode(&one.encode(), 139),
            Err(FormatError::BadBundle(BundleFormatError::NotInVersion {
                kind: SectionKind::Manifest,
                version: 1
            }))
        ));
    }

    #[test]
    fn image_indexes_round_trip_and_are_checked_by_hash() {
        let bytes = encode_image_indexes(&[(b"index one", b"sig 1"), (b"index two!", b"")]);
        let decoded = decode_image_indexes(&bytes).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[1].index, b"index two!");
        assert_eq!(decoded[0].signature, b"sig 1");
        assert_eq!(
            &decoded[0].index_blake3,
            blake3::hash(b"index one").as_bytes()
        );
        for cut in 0..bytes.len() {
            assert!(decode_image_indexes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_image_indexes(&longer).is_err());
        let mut tampered = bytes.clone();
        tampered[4 + IMAGE_INDEX_HEAD] ^= 1;
        assert!(matches!(
            decode_image_indexes(&tampered),
            Err(FormatError::BadBundle(BundleFormatError::ImageIndexHash))
        ));
        // A length beyond the section is truncation, never an allocation.
        let mut huge = bytes.clone();
        huge[4 + 32..4 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_image_indexes(&huge).is_err());
    }

    #[test]
    fn image_frame_table_round_trips_and_stays_inside_the_data() {
        let frames = [(
            [9u8; 32],
            4u32,
            BundledChunk {
                offset: 2,
                compressed_length: 8,
            },
        )];
        let bytes = encode_image_frame_table(&frames);
        assert_eq!(bytes.len(), 4 + IMAGE_FRAME_RECORD);
        assert_eq!(
            decode_image_frame_table(&bytes, 10).unwrap()[&([9u8; 32], 4)],
            frames[0].2
        );
        assert!(decode_image_frame_table(&bytes, 9).is_err());
    }
}
