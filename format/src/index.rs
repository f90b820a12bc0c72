//! The release index (`<name>.didx`): everything a device needs to rebuild an image from
//! chunks, and nothing it has to trust before the detached minisign signature over these
//! exact bytes has been checked.
//!
//! All integers are little-endian. Offsets are from the start of the file.
//!
//! | offset | size      | meaning                                                        |
//! |--------|-----------|----------------------------------------------------------------|
//! | 0      | 8         | magic `DFOTAIDX`                                               |
//! | 8      | 2         | format version, 1 or 2 (2 when the release has delta frames)   |
//! | 10     | 2         | flags, 0 (any other value is rejected)                         |
//! | 12     | 8         | creation time, unix seconds                                    |
//! | 20     | 8         | expiry, unix seconds, 0 = none                                 |
//! | 28     | 1         | chunker kind (1 = FastCDC 2020, normalization level 1)         |
//! | 29     | 4         | chunker minimum size                                           |
//! | 33     | 4         | chunker average size                                           |
//! | 37     | 4         | chunker maximum size                                           |
//! | 41     | 8         | image length in bytes                                          |
//! | 49     | 32        | BLAKE3-256 of the whole image                                  |
//! | 81     | 1         | length C of `compatible` (1..=255)                             |
//! | 82     | C         | `compatible`, UTF-8, printable ASCII                           |
//! | 82+C   | 1         | length V of `version` (1..=128)                                |
//! | 83+C   | V         | `version`, `[A-Za-z0-9._+~-]`                                  |
//! | 83+C+V | 4         | pack count P                                                   |
//! | ...    | P × 40    | per pack: BLAKE3-256 of the pack file (32), pack length (8)    |
//! | ...    | 4         | chunk count N                                                  |
//! | ...    | N × 52    | per chunk in image order: id (32), length (4), compressed      |
//! |        |           | length (4), pack number (4), offset in pack (8)                |
//!
//!
//! Version 2 goes on with the delta frames (see `Deltas`): new chunks compressed as groups
//! against old chunks, the bases, that devices on older releases already hold.
//!
//! | size      | meaning                                                                 |
//! |-----------|-------------------------------------------------------------------------|
//! | 4         | base count B                                                            |
//! | B × 36    | per base: chunk id (32), length (4)                                     |
//! | 4         | delta frame count D                                                     |
//! | D × ...   | per frame: pack number (4), offset in pack (8), compressed length (4),  |
//! |           | base count k (2), chunk count m (2), k × base number (4), m × chunk     |
//! |           | number (4)                                                              |
//!
//! A frame's content is its chunks (numbers into the chunk table) back to back; its
//! dictionary is its bases (numbers into the base table) back to back, as a raw-content
//! zstd prefix. Content is at most `MAX_DELTA_CONTENT` bytes and the dictionary at most
//! `MAX_DELTA_DICTIONARY`, which bounds what a device holds in memory for one frame.
//!
//! The file ends right after the last record; trailing bytes are rejected. A chunk's
//! offset in the image is the sum of the lengths before it. The decoder checks every count
//! against the bytes that remain before allocating, so no input makes it panic or allocate
//! more than the input's own size allows.

use crate::chunk::{ChunkId, ChunkerKind, ChunkerParams};
use crate::FormatError;

pub const MAGIC: &[u8; 8] = b"DFOTAIDX";
/// The version written for an index without delta frames (read by every device).
pub const FORMAT_VERSION: u16 = 1;
/// The version written for an index with delta frames.
pub const FORMAT_VERSION_DELTAS: u16 = 2;
const PACK_RECORD: usize = 40;
const CHUNK_RECORD: usize = 52;
const BASE_RECORD: usize = 36;
/// The smallest delta frame record: no bases, one chunk.
const MIN_FRAME_RECORD: usize = 4 + 8 + 4 + 2 + 2 + 4;
/// Most bytes a delta frame rebuilds.
pub const MAX_DELTA_CONTENT: u32 = 1024 * 1024;
/// Most bytes of bases a delta frame's dictionary holds.
pub const MAX_DELTA_DICTIONARY: u32 = 4 * 1024 * 1024;

/// A pack file of the store: zstd frames of chunks, back to back, named by its BLAKE3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackRef {
    pub id: [u8; 32],
    pub length: u64,
}

impl PackRef {
    /// Path of the pack relative to the store root.
    pub fn store_path(&self) -> String {
        format!("packs/{}.pack", crate::chunk::hex32(&self.id))
    }
}

/// One chunk of the image, in image order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    pub id: ChunkId,
    /// Offset in the image; derived from the lengths before it, not stored.
    pub offset: u64,
    pub length: u32,
    pub compressed_length: u32,
    pub pack: u32,
    pub pack_offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    pub created: u64,
    pub expires: Option<u64>,
    pub chunker: ChunkerParams,
    pub image_length: u64,
    pub image_hash: [u8; 32],
    pub compatible: String,
    pub version: String,
    pub packs: Vec<PackRef>,
    pub chunks: Vec<ChunkEntry>,
    pub deltas: Deltas,
}

/// The delta frames of a release: each rebuilds a run of its new chunks from one zstd frame
/// whose dictionary is old chunks (bases) a device may hold. A device uses a frame only
/// when it holds every base; otherwise the chunks' own frames serve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    pub bases: Vec<DeltaBase>,
    pub frames: Vec<DeltaFrame>,
}

/// An old chunk used as (part of) a dictionary: its id and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaBase {
    pub id: ChunkId,
    pub length: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaFrame {
    pub pack: u32,
    pub pack_offset: u64,
    pub compressed_length: u32,
    /// Numbers into `Deltas::bases`, in dictionary order.
    pub bases: Vec<u32>,
    /// Numbers into `Index::chunks`, in content order.
    pub chunks: Vec<u32>,
}

impl Deltas {
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.bases.is_empty()
    }

    /// The bases whose bytes make `frame`'s dictionary, in order: its bases without
    /// [`COVERS_BASE`].
    pub fn dictionary_bases<'a>(
        &'a self,
        frame: &'a DeltaFrame,
    ) -> impl Iterator<Item = DeltaBase> + 'a {
        frame
            .bases
            .iter()
            .map(|&number| self.bases[number as usize])
            .filter(|base| !base.marks_covers())
    }
}

/// The base a frame with covers (`frame_codec`, "Covers") names besides its real bases. No
/// chunk has this id, so a device that does not know covers never holds every base of such
/// a frame and never takes it (it takes the chunks another way); one that does counts it as
/// held and leaves it out of the dictionary. Its length is 1 because the index allows no
/// empty base.
pub const COVERS_BASE: DeltaBase = DeltaBase {
    id: ChunkId(*b"diffota frame with covers, v1\0\0\0"),
    length: 1,
};

impl DeltaBase {
    /// Whether this is [`COVERS_BASE`], which marks a frame with covers and is no chunk.
    pub fn marks_covers(&self) -> bool {
        self.id == COVERS_BASE.id
    }
}

/// What makes decoded index bytes not a valid index.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexProblem {
    #[error("too many packs or chunks")]
    TooMany,
    #[error("chunk {number} has length {length} outside 1..={max}")]
    ChunkLength {
        number: usize,
        length: u32,
        max: u32,
    },
    #[error("chunk {number} has compressed length {compressed_length} for {length} bytes")]
    CompressedLength {
        number: usize,
        compressed_length: u32,
        length: u32,
    },
    #[error("chunk {number} names pack {pack} of {packs}")]
    UnknownPack {
        number: usize,
        pack: u32,
        packs: usize,
    },
    #[error("chunk {number} lies beyond the end of its pack")]
    BeyondPack { number: usize },
    #[error("chunk {number} offset is not contiguous")]
    NotContiguous { number: usize },
    #[error("chunks cover {covered} bytes but the image has {image_length}")]
    Coverage { covered: u64, image_length: u64 },
    #[error("delta frame {number} names base {base} of {bases}")]
    UnknownBase {
        number: usize,
        base: u32,
        bases: usize,
    },
    #[error("delta frame {number} names chunk {chunk} of {chunks}")]
    UnknownChunk {
        number: usize,
        chunk: u32,
        chunks: usize,
    },
    #[error("delta frame {number} rebuilds {content} bytes from a {dictionary}-byte dictionary (limits {MAX_DELTA_CONTENT} and {MAX_DELTA_DICTIONARY})")]
    DeltaSize {
        number: usize,
        content: u64,
        dictionary: u64,
    },
    #[error("delta frame {number} has no chunks or a bad compressed length")]
    DeltaFrameShape { number: usize },
    #[error("delta frame {number} names pack {pack} of {packs} or lies beyond its end")]
    DeltaFramePack {
        number: usize,
        pack: u32,
        packs: usize,
    },
    #[error("base {number} has length {length} outside 1..={max}")]
    BaseLength {
        number: usize,
        length: u32,
        max: u32,
    },
    #[error("unknown flags {0:#x}")]
    UnknownFlags(u16),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
}

/// Upper bound on a zstd frame holding `length` bytes (zstd's ZSTD_COMPRESSBOUND plus slack
/// for the frame header and checksum).
pub fn max_compressed_length(length: u32) -> u32 {
    length.saturating_add(length / 128).saturating_add(1024)
}

pub fn validate_version(version: &str) -> Result<(), FormatError> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && version != "."
        && version != ".."
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(FormatError::BadVersion(version.chars().take(140).collect()))
    }
}

pub fn validate_compatible(compatible: &str) -> Result<(), FormatError> {
    let ok = !compatible.is_empty()
        && compatible.len() <= 255
        && compatible
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(())
    } else {
        Err(FormatError::BadCompatible(
            compatible.chars().take(260).collect(),
        ))
    }
}

impl Index {
    /// Whether two indexes publish the same release: the same image (length and hash), cut
    /// the same way, for the same devices, under the same version. When the index was
    /// written (`created`, `expires`) and where its chunks sit in the store do not count.
    pub fn is_same_release(&self, other: &Index) -> bool {
        self.version == other.version
            && self.compatible == other.compatible
            && self.chunker == other.chunker
            && self.image_length == other.image_length
            && self.image_hash == other.image_hash
            && self.chunks.len() == other.chunks.len()
            && self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|(a, b)| a.id == b.id && a.length == b.length)
    }

    /// Checks the rules every index must satisfy; `decode` applies them, and `encode`
    /// callers should before publishing.
    pub fn validate(&self) -> Result<(), FormatError> {
        self.chunker.validate()?;
        validate_compatible(&self.compatible)?;
        validate_version(&self.version)?;
        if self.packs.len() > u32::MAX as usize || self.chunks.len() > u32::MAX as usize {
            return Err(IndexProblem::TooMany.into());
        }
        let mut offset = 0u64;
        for (number, chunk) in self.chunks.iter().enumerate() {
            if chunk.length == 0 || chunk.length > self.chunker.max_size {
                return Err(IndexProblem::ChunkLength {
                    number,
                    length: chunk.length,
                    max: self.chunker.max_size,
                }
                .into());
            }
            if chunk.compressed_length == 0
                || chunk.compressed_length > max_compressed_length(chunk.length)
            {
                return Err(IndexProblem::CompressedLength {
                    number,
                    compressed_length: chunk.compressed_length,
                    length: chunk.length,
                }
                .into());
            }
            let pack = self
                .packs
                .get(chunk.pack as usize)
                .ok_or(IndexProblem::UnknownPack {
                    number,
                    pack: chunk.pack,
                    packs: self.packs.len(),
                })?;
            let end = chunk
                .pack_offset
                .checked_add(u64::from(chunk.compressed_length));
            if end.is_none_or(|end| end > pack.length) {
                return Err(IndexProblem::BeyondPack { number }.into());
            }
            if chunk.offset != offset {
                return Err(IndexProblem::NotContiguous { number }.into());
            }
            offset += u64::from(chunk.length);
        }
        if offset != self.image_length {
            return Err(IndexProblem::Coverage {
                covered: offset,
                image_length: self.image_length,
            }
            .into());
        }
        self.validate_deltas()
    }

    fn validate_deltas(&self) -> Result<(), FormatError> {
        let deltas = &self.deltas;
        if deltas.bases.len() > u32::MAX as usize || deltas.frames.len() > u32::MAX as usize {
            return Err(IndexProblem::TooMany.into());
        }
        for (number, base) in deltas.bases.iter().enumerate() {
            if base.length == 0 || base.length > MAX_DELTA_DICTIONARY {
                return Err(IndexProblem::BaseLength {
                    number,
                    length: base.length,
                    max: MAX_DELTA_DICTIONARY,
                }
                .into());
            }
        }
        for (number, frame) in deltas.frames.iter().enumerate() {
            self.validate_frame(number, frame)?;
        }
        Ok(())
    }

    fn validate_frame(&self, number: usize, frame: &DeltaFrame) -> Result<(), FormatError> {
        if frame.bases.len() > usize::from(u16::MAX) || frame.chunks.len() > usize::from(u16::MAX) {
            return Err(IndexProblem::TooMany.into());
        }
        let mut dictionary = 0u64;
        for &base in &frame.bases {
            let entry = self
                .deltas
                .bases
                .get(base as usize)
                .ok_or(IndexProblem::UnknownBase {
                    number,
                    base,
                    bases: self.deltas.bases.len(),
                })?;
            dictionary += u64::from(entry.length);
        }
        let mut content = 0u64;
        for &chunk in &frame.chunks {
            let entry = self
                .chunks
                .get(chunk as usize)
                .ok_or(IndexProblem::UnknownChunk {
                    number,
                    chunk,
                    chunks: self.chunks.len(),
                })?;
            content += u64::from(entry.length);
        }
        if content > u64::from(MAX_DELTA_CONTENT) || dictionary > u64::from(MAX_DELTA_DICTIONARY) {
            return Err(IndexProblem::DeltaSize {
                number,
                content,
                dictionary,
            }
            .into());
        }
        if frame.chunks.is_empty()
            || frame.compressed_length == 0
            || frame.compressed_length > max_compressed_length(content as u32)
        {
            return Err(IndexProblem::DeltaFrameShape { number }.into());
        }
        let beyond = self.packs.get(frame.pack as usize).is_none_or(|pack| {
            frame
                .pack_offset
                .checked_add(u64::from(frame.compressed_length))
                .is_none_or(|end| end > pack.length)
        });
        if beyond {
            return Err(IndexProblem::DeltaFramePack {
                number,
                pack: frame.pack,
                packs: self.packs.len(),
            }
            .into());
        }
        Ok(())
    }

    /// The format version this index is written in: 1 unless it has delta frames, so
    /// releases without them stay readable by every device.
    pub fn format_version(&self) -> u16 {
        if self.deltas.is_empty() {
            FORMAT_VERSION
        } else {
            FORMAT_VERSION_DELTAS
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.format_version().to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.expires.unwrap_or(0).to_le_bytes());
        out.push(self.chunker.kind as u8);
        out.extend_from_slice(&self.chunker.min_size.to_le_bytes());
        out.extend_from_slice(&self.chunker.avg_size.to_le_bytes());
        out.extend_from_slice(&self.chunker.max_size.to_le_bytes());
        out.extend_from_slice(&self.image_length.to_le_bytes());
        out.extend_from_slice(&self.image_hash);
        out.push(self.compatible.len() as u8);
        out.extend_from_slice(self.compatible.as_bytes());
        out.push(self.version.len() as u8);
        out.extend_from_slice(self.version.as_bytes());
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for pack in &self.packs {
            out.extend_from_slice(&pack.id);
            out.extend_from_slice(&pack.length.to_le_bytes());
        }
        out.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        for chunk in &self.chunks {
            out.extend_from_slice(&chunk.id.0);
            out.extend_from_slice(&chunk.length.to_le_bytes());
            out.extend_from_slice(&chunk.compressed_length.to_le_bytes());
            out.extend_from_slice(&chunk.pack.to_le_bytes());
            out.extend_from_slice(&chunk.pack_offset.to_le_bytes());
        }
        if self.format_version() == FORMAT_VERSION_DELTAS {
            self.deltas.encode(out);
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            128 + self.packs.len() * PACK_RECORD + self.chunks.len() * CHUNK_RECORD,
        );
        self.encode(&mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Index, FormatError> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.take(8)? != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let format_version = reader.u16()?;
        if format_version != FORMAT_VERSION && format_version != FORMAT_VERSION_DELTAS {
            return Err(FormatError::UnsupportedVersion(format_version));
        }
        let flags = reader.u16()?;
        if flags != 0 {
            return Err(IndexProblem::UnknownFlags(flags).into());
        }
        let created = reader.u64()?;
        let expires = Some(reader.u64()?).filter(|&e| e != 0);
        let chunker = ChunkerParams {
            kind: ChunkerKind::from_byte(reader.u8()?)?,
            min_size: reader.u32()?,
            avg_size: reader.u32()?,
            max_size: reader.u32()?,
        };
        chunker.validate()?;
        let image_length = reader.u64()?;
        let image_hash = reader.array32()?;
        let compatible = reader.short_string("compatible")?;
        let version = reader.short_string("version")?;
        let pack_count = reader.count(PACK_RECORD)?;
        let mut packs = Vec::with_capacity(pack_count);
        for _ in 0..pack_count {
            packs.push(PackRef {
                id: reader.array32()?,
                length: reader.u64()?,
            });
        }
        let chunk_count = reader.count(CHUNK_RECORD)?;
        let mut chunks = Vec::with_capacity(chunk_count);
        let mut offset = 0u64;
        for _ in 0..chunk_count {
            let entry = ChunkEntry {
                id: ChunkId(reader.array32()?),
                offset,
                length: reader.u32()?,
                compressed_length: reader.u32()?,
                pack: reader.u32()?,
                pack_offset: reader.u64()?,
            };
            offset = offset.saturating_add(u64::from(entry.length));
            chunks.push(entry);
        }
        let deltas = if format_version == FORMAT_VERSION_DELTAS {
            Deltas::decode(&mut reader)?
        } else {
            Deltas::default()
        };
        if reader.at != bytes.len() {
            return Err(FormatError::TrailingBytes(bytes.len() - reader.at));
        }
        let index = Index {
            created,
            expires,
            chunker,
            image_length,
            image_hash,
            compatible,
            version,
            packs,
            chunks,
            deltas,
        };
        index.validate()?;
        if index.format_version() != format_version {
            // A version-2 index with no delta frames would have been written as version 1.
            return Err(FormatError::UnsupportedVersion(format_version));
        }
        Ok(index)
    }

    /// Total compressed bytes of all chunks, counting each distinct chunk once.
    pub fn distinct_compressed_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.chunks
            .iter()
            .filter(|c| seen.insert(c.id))
            .map(|c| u64::from(c.compressed_length))
            .sum()
    }
}

impl Deltas {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.bases.len() as u32).to_le_bytes());
        for base in &self.bases {
            out.extend_from_slice(&base.id.0);
            out.extend_from_slice(&base.length.to_le_bytes());
        }
        out.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        for frame in &self.frames {
            out.extend_from_slice(&frame.pack.to_le_bytes());
            out.extend_from_slice(&frame.pack_offset.to_le_bytes());
            out.extend_from_slice(&frame.compressed_length.to_le_bytes());
            out.extend_from_slice(&(frame.bases.len() as u16).to_le_bytes());
            out.extend_from_slice(&(frame.chunks.len() as u16).to_le_bytes());
            for number in frame.bases.iter().chain(&frame.chunks) {
                out.extend_from_slice(&number.to_le_bytes());
            }
        }
    }

    fn decode(reader: &mut Reader<'_>) -> Result<Deltas, FormatError> {
        let base_count = reader.count(BASE_RECORD)?;
        let mut bases = Vec::with_capacity(base_count);
        for _ in 0..base_count {
            bases.push(DeltaBase {
                id: ChunkId(reader.array32()?),
                length: reader.u32()?,
            });
        }
        let frame_count = reader.count(MIN_FRAME_RECORD)?;
        let mut frames = Vec::with_capacity(frame_count);
        for _ in 0..frame_count {
            let pack = reader.u32()?;
            let pack_offset = reader.u64()?;
            let compressed_length = reader.u32()?;
            let base_count = usize::from(reader.u16()?);
            let chunk_count = usize::from(reader.u16()?);
            // Both lists are checked against the remaining bytes before allocating.
            let wanted = (base_count + chunk_count) * 4;
            if reader.bytes.len() - reader.at < wanted {
                return Err(FormatError::Truncated {
                    at: reader.at,
                    wanted,
                });
            }
            let bases = (0..base_count)
                .map(|_| reader.u32())
                .collect::<Result<_, _>>()?;
            let chunks = (0..chunk_count)
                .map(|_| reader.u32())
                .collect::<Result<_, _>>()?;
            frames.push(DeltaFrame {
                pack,
                pack_offset,
                compressed_length,
                bases,
                chunks,
            });
        }
        Ok(Deltas { bases, frames })
    }
}

/// A bounds-checked cursor: every read checks the remaining length first.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let remaining = self.bytes.len() - self.at;
        if n > remaining {
            return Err(FormatError::Truncated {
                at: self.at,
                wanted: n,
            });
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    fn array32(&mut self) -> Result<[u8; 32], FormatError> {
        Ok(self.take(32)?.try_into().expect("took 32 bytes"))
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("took 2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("took 4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("took 8 bytes"),
        ))
    }

    /// A record count, refused when the records could not fit in what remains.
    fn count(&mut self, record_size: usize) -> Result<usize, FormatError> {
        let count = self.u32()? as usize;
        let remaining = self.bytes.len() - self.at;
        if count > remaining / record_size {
            return Err(FormatError::Truncated {
                at: self.at,
                wanted: count.saturating_mul(record_size),
            });
        }
        Ok(count)
    }

    fn short_string(&mut self, field: &'static str) -> Result<String, FormatError> {
        let length = self.u8()? as usize;
        let bytes = self.take(length)?;
        let text = std::str::from_utf8(bytes).map_err(|_| IndexProblem::NotUtf8(field))?;
        Ok(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample_index() -> Index {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let chunker = ChunkerParams::with_average(8192).unwrap();
        let mut chunks = Vec::new();
        let mut pack_offset = 0;
        for chunk in chunker.chunk_stream(&data[..]) {
            let chunk = chunk.unwrap();
            let compressed_length = chunk.data.len() as u32 / 2 + 1;
            chunks.push(ChunkEntry {
                id: ChunkId::of(&chunk.data),
                offset: chunk.offset,
                length: chunk.data.len() as u32,
                compressed_length,
                pack: 0,
                pack_offset,
            });
            pack_offset += u64::from(compressed_length);
        }
        Index {
            created: 1_790_000_000,
            expires: Some(1_800_000_000),
            chunker,
            image_length: data.len() as u64,
            image_hash: *blake3::hash(&data).as_bytes(),
            compatible: "acme-board-v1".into(),
            version: "1.2.3".into(),
            packs: vec![PackRef {
                id: [7; 32],
                length: pack_offset,
            }],
            chunks,
            deltas: Default::default(),
        }
    }

    /// The sample with two delta frames (version 2): the pack grows by their bytes.
    pub(crate) fn sample_index_with_deltas() -> Index {
        let mut index = sample_index();
        let frames_at = index.packs[0].length;
        index.packs[0].length += 3000;
        index.deltas = Deltas {
            bases: vec![
                DeltaBase {
                    id: ChunkId::of(b"old chunk one"),
                    length: 9000,
                },
                DeltaBase {
                    id: ChunkId::of(b"old chunk two"),
                    length: 12000,
                },
            ],
            frames: vec![
                DeltaFrame {
                    pack: 0,
                    pack_offset: frames_at,
                    compressed_length: 1000,
                    bases: vec![1, 0],
                    chunks: vec![2, 3],
                },
                DeltaFrame {
                    pack: 0,
                    pack_offset: frames_at + 1000,
                    compressed_length: 2000,
                    bases: vec![],
                    chunks: vec![5],
                },
            ],
        };
        index
    }

    #[test]
    fn version_follows_the_delta_frames_and_both_round_trip() {
        let plain = sample_index();
        assert_eq!(plain.to_bytes()[8..10], FORMAT_VERSION.to_le_bytes());
        let with_deltas = sample_index_with_deltas();
        let bytes = with_deltas.to_bytes();
        assert_eq!(bytes[8..10], FORMAT_VERSION_DELTAS.to_le_bytes());
        assert_eq!(Index::decode(&bytes).unwrap(), with_deltas);
        for cut in 0..bytes.len() {
            assert!(
                Index::decode(&bytes[..cut]).is_err(),
                "truncation at {cut} accepted"
            );
        }
    }

    #[test]
    fn version_2_without_delta_frames_is_refused() {
        let mut bytes = sample_index().to_bytes();
        bytes[8..10].copy_from_slice(&FORMAT_VERSION_DELTAS.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            Index::decode(&bytes),
            Err(FormatError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn bad_delta_frames_are_named() {
        let problem = |change: fn(&mut Index)| {
            let mut index = sample_index_with_deltas();
            change(&mut index);
            match Index::decode(&index.to_bytes()) {
                Err(FormatError::Corrupt(problem)) => problem,
                other => panic!("expected an index problem, got {other:?}"),
            }
        };
        assert!(matches!(
            problem(|i| i.deltas.frames[0].bases[0] = 9),
            IndexProblem::UnknownBase {
                number: 0,
                base: 9,
                ..
            }
        ));
        assert!(matches!(
            problem(|i| i.deltas.frames[1].chunks[0] = 100_000),
            IndexProblem::UnknownChunk { number: 1, .. }
        ));
        assert!(matches!(
            problem(|i| i.deltas.bases[0].length = MAX_DELTA_DICTIONARY),
            IndexProblem::DeltaSize { number: 0, .. }
        ));
        assert!(matches!(
            problem(|i| i.deltas.frames[1].chunks.clear()),
            IndexProblem::DeltaFrameShape { number: 1 }
        ));
        assert!(matches!(
            problem(|i| i.deltas.frames[1].pack_offset += 1),
            IndexProblem::DeltaFramePack { number: 1, .. }
        ));
        assert!(matches!(
            problem(|i| i.deltas.bases[1].length = 0),
            IndexProblem::BaseLength { number: 1, .. }
        ));
    }

    #[test]
    fn same_release_ignores_when_and_where_but_not_what() {
        let index = sample_index();
        let mut rewritten = index.clone();
        rewritten.created += 60;
        rewritten.expires = None;
        rewritten.packs[0].id = [8; 32];
        rewritten.chunks[1].pack_offset += 1;
        assert!(index.is_same_release(&rewritten));
        let changes: [fn(&mut Index); 5] = [
            |i| i.image_hash[0] ^= 1,
            |i| i.compatible.push('x'),
            |i| i.version.push('1'),
            |i| i.chunks[0].id = ChunkId::of(b"other"),
            |i| {
                i.chunks.pop();
            },
        ];
        for change in changes {
            let mut other = index.clone();
            change(&mut other);
            assert!(!index.is_same_release(&other));
        }
    }

    #[test]
    fn round_trip() {
        let index = sample_index();
        index.validate().unwrap();
        let bytes = index.to_bytes();
        assert_eq!(Index::decode(&bytes).unwrap(), index);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = sample_index().to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                Index::decode(&bytes[..cut]).is_err(),
                "truncation at {cut} accepted"
            );
        }
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = sample_index().to_bytes();
        bytes.push(0);
        assert!(matches!(
            Index::decode(&bytes),
            Err(FormatError::TrailingBytes(1))
        ));
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let mut bytes = sample_index().to_bytes();
        let pack_count_at = 83 + "acme-board-v1".len() + "1.2.3".len();
        bytes[pack_count_at..pack_count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Index::decode(&bytes).is_err());
    }

    #[test]
    fn old_and_corrupt_fixtures() {
        // Fixtures kept forever: a valid version-1 index and corrupt variants of it.
        let fixture = include_bytes!("../fixtures/v1-sample.didx");
        let index = Index::decode(fixture).expect("version 1 fixture must stay readable");
        assert_eq!(index.version, "1.2.3");
        assert_eq!(index.compatible, "acme-board-v1");
        for corrupt in [
            &include_bytes!("../fixtures/v1-bad-magic.didx")[..],
            &include_bytes!("../fixtures/v1-truncated.didx")[..],
            &include_bytes!("../fixtures/v2-truncated.didx")[..],
        ] {
            assert!(Index::decode(corrupt).is_err());
        }
        let fixture = include_bytes!("../fixtures/v2-sample.didx");
        let index = Index::decode(fixture).expect("version 2 fixture must stay readable");
        assert_eq!(index.deltas.frames.len(), 2);
        assert_eq!(index.deltas.frames[0].bases, vec![1, 0]);
    }

    #[test]
    #[ignore = "writes the fixtures; run once with --ignored when the format version changes"]
    fn write_fixtures() {
        let bytes = sample_index().to_bytes();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/v1-sample.didx"), &bytes).unwrap();
        let mut bad = bytes.clone();
        bad[0] = b'X';
        std::fs::write(format!("{dir}/v1-bad-magic.didx"), &bad).unwrap();
        std::fs::write(
            format!("{dir}/v1-truncated.didx"),
            &bytes[..bytes.len() - 7],
        )
        .unwrap();
        let bytes = sample_index_with_deltas().to_bytes();
        std::fs::write(format!("{dir}/v2-sample.didx"), &bytes).unwrap();
        std::fs::write(
            format!("{dir}/v2-truncated.didx"),
            &bytes[..bytes.len() - 3],
        )
        .unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_mutations_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = sample_index().to_bytes();
            let len = bytes.len();
            for (at, value) in flips {
                bytes[at % len] = value;
            }
            let _ = Index::decode(&bytes);
        }

        #[test]
        fn random_mutations_of_delta_frames_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = sample_index_with_deltas().to_bytes();
            let len = bytes.len();
            let deltas_at = sample_index().to_bytes().len();
            for (at, value) in flips {
                bytes[deltas_at + at % (len - deltas_at)] = value;
            }
            let _ = Index::decode(&bytes);
        }

        #[test]
        fn valid_delta_tables_round_trip(
            frames in proptest::collection::vec(
                (proptest::collection::vec(0u32..3, 0..4), proptest::collection::vec(0u32..30, 1..6), 1u32..500),
                1..6,
            ),
            base_lengths in proptest::collection::vec(1u32..100_000, 3),
        ) {
            let mut index = sample_index();
            let mut at = index.packs[0].length;
            index.deltas.bases = base_lengths
                .iter()
                .enumerate()
                .map(|(n, &length)| DeltaBase { id: ChunkId::of(&[n as u8]), length })
                .collect();
            for (bases, chunks, compressed_length) in frames {
                index.deltas.frames.push(DeltaFrame { pack: 0, pack_offset: at, compressed_length, bases, chunks });
                at += u64::from(compressed_length);
            }
            index.packs[0].length = at;
            index.validate().unwrap();
            prop_assert_eq!(Index::decode(&index.to_bytes()).unwrap(), index);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Index::decode(&bytes);
        }

        #[test]
        fn random_headers_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&1u16.to_le_bytes());
            bytes.extend_from_slice(&tail);
            let _ = Index::decode(&bytes);
        }
    }
}
