//! Reading a bundle on the device (`diffota install FILE`): the signed index (or the signed
//! release manifest, then every image's signed index it pins) is verified before anything
//! else in the file is read; the chunk table and data are only ever used through chunks that
//! are verified by their ids.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::limits;
use diffota_files::local_file::{self, Links};
use diffota_format::bundle::{
    decode_frame_table, decode_image_frame_table, decode_image_indexes, decode_table,
    BundleFormatError, BundleHeader, BundleNotes, BundledChunk, Section, SectionKind, FRAME_RECORD,
    IMAGE_FRAME_RECORD, IMAGE_INDEX_HEAD, MAX_METADATA, RELEASE_FORMAT_VERSION, TABLE_RECORD,
};
use diffota_format::{
    hex32, ChunkEntry, ChunkId, FormatError, Manifest, SignedIndex, TrustedKeys, VerifiedIndex,
};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: FormatError },
    #[error(
        "{path}: the bundle lacks the index of image {image}, which its signed manifest names"
    )]
    MissingImage { path: PathBuf, image: String },
    #[error("{path}: the index of image {image} is not the one the signed manifest pins (length, BLAKE3, image, version or compatible differ)")]
    NotPinned { path: PathBuf, image: String },
}

/// The chunks a bundle carries and where they are in its file.
#[derive(Clone, Debug)]
pub struct BundleChunks {
    pub path: PathBuf,
    pub data_offset: u64,
    /// Every image's chunks of a release bundle, shared by its images.
    pub table: Arc<HashMap<ChunkId, BundledChunk>>,
    /// The delta frames it carries, by their number in the index.
    pub frames: HashMap<u32, BundledChunk>,
    /// The releases the bundle was made for (empty: any), from its unsigned notes: shown
    /// in messages, never used as a path or to decide anything.
    pub made_for: Vec<String>,
}

impl BundleChunks {
    /// `chunk` as it lies in the bundle file, numbered as pack `pack`; None when not carried.
    pub fn locate(&self, chunk: &ChunkEntry, pack: u32) -> Option<ChunkEntry> {
        self.table.get(&chunk.id).map(|bundled| ChunkEntry {
            pack,
            pack_offset: self.data_offset + bundled.offset,
            compressed_length: bundled.compressed_length,
            ..*chunk
        })
    }

    /// Delta frame `number` (`entry` as `frame_entry` describes it) as it lies in the bundle
    /// file, numbered as pack `pack`; None when not carried.
    pub fn locate_frame(&self, number: u32, entry: &ChunkEntry, pack: u32) -> Option<ChunkEntry> {
        self.frames.get(&number).map(|bundled| ChunkEntry {
            pack,
            pack_offset: self.data_offset + bundled.offset,
            compressed_length: bundled.compressed_length,
            ..*entry
        })
    }

    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    }
}

/// What a bundle holds, verified.
pub enum OpenedBundle {
    /// Format version 1: one image's index and its signature.
    Index(Box<BundledImage>),
    /// Format version 2: a release manifest, and every image's index it pins.
    Release {
        manifest: Manifest,
        images: Vec<BundledImage>,
    },
}

/// One image of a release bundle: its index, verified and pinned by the manifest.
pub struct BundledImage {
    /// Its name in the manifest (empty in a bundle of one index).
    pub name: String,
    pub index: VerifiedIndex,
    pub signature: String,
    /// The bundle's chunks, with this image's delta frames.
    pub chunks: BundleChunks,
}

/// Opens a bundle: header, then the signed index (version 1) or manifest and the indexes it
/// pins (version 2), verified, then the chunk table and the delta frame tables.
pub fn open(path: &Path, keys: &TrustedKeys) -> Result<OpenedBundle, BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_owned(),
        source,
    };
    let format = |source| BundleError::Format {
        path: path.to_owned(),
        source,
    };
    let (file, file_length) = local_file::open_regular(path, Links::Follow).map_err(io)?;
    let mut prefix = [0u8; 16];
    file.read_exact_at(&mut prefix, 0)
        .map_err(|_| format(BundleFormatError::TooShort.into()))?;
    let header_length = BundleHeader::length_from_prefix(&prefix).map_err(format)?;
    if header_length > file_length {
        return Err(format(
            BundleFormatError::Truncated {
                needed: header_length,
                file_length,
            }
            .into(),
        ));
    }
    let mut header_bytes = vec![0u8; header_length as usize];
    file.read_exact_at(&mut header_bytes, 0).map_err(io)?;
    let header = BundleHeader::decode(&header_bytes, file_length).map_err(format)?;
    let opened = Opened {
        path,
        file: &file,
        header: &header,
    };
    let made_for = match header.section(SectionKind::Notes) {
        Some(notes) => {
            let bytes = read_section(&file, notes, NOTES_LIMIT).map_err(io)?;
            BundleNotes::parse(&bytes).from
        }
        None => Vec::new(),
    };
    let chunks = |table, frames| BundleChunks {
        path: path.to_owned(),
        data_offset: opened.section(SectionKind::ChunkData).offset,
        table,
        frames,
        made_for: made_for.clone(),
    };
    if header.version == RELEASE_FORMAT_VERSION {
        let (manifest, indexes) = opened.manifest(keys)?;
        let chunk_count = indexes.iter().map(|i| i.index.chunks.len()).sum();
        let table = Arc::new(opened.chunk_table(chunk_count)?);
        let mut frames = opened.image_frames(&indexes)?;
        let images = indexes
            .into_iter()
            .map(|pinned| {
                let own = frames.remove(&pinned.index_blake3).unwrap_or_default();
                BundledImage {
                    name: pinned.name,
                    index: pinned.index,
                    signature: pinned.signature,
                    chunks: chunks(table.clone(), own),
                }
            })
            .collect();
        return Ok(OpenedBundle::Release { manifest, images });
    }

    let index = opened.section(SectionKind::Index);
    let signature = opened.section(SectionKind::Signature);
    // Each section is checked against its own cap before anything is allocated; the header
    // decoder has checked that every section lies inside the file.
    let signature_text =
        String::from_utf8_lossy(&read_section(&file, signature, limits::SIGNATURE).map_err(io)?)
            .into_owned();
    let index_bytes = read_section(&file, index, limits::INDEX).map_err(io)?;
    let verified = SignedIndex {
        bytes: &index_bytes,
        signature: &signature_text,
    }
    .verify(keys)
    .map_err(format)?;
    let table = opened.chunk_table(verified.chunks.len())?;
    let frames = match header.section(SectionKind::DeltaFrames) {
        Some(section) => {
            let limit = frame_table_length_limit(verified.deltas.frames.len());
            decode_frame_table(
                &read_section(&file, section, limit).map_err(io)?,
                opened.section(SectionKind::ChunkData).length,
            )
            .map_err(format)?
        }
        None => HashMap::new(),
    };
    check_frames(&verified, &frames).map_err(format)?;
    Ok(OpenedBundle::Index(Box::new(BundledImage {
        name: String::new(),
        index: verified,
        signature: signature_text,
        chunks: chunks(Arc::new(table), frames),
    })))
}

/// An image's index in a release bundle, verified and pinned by the manifest.
struct PinnedIndex {
    name: String,
    index: VerifiedIndex,
    signature: String,
    index_blake3: [u8; 32],
}

/// A bundle file being opened: its path, file and checked header.
#[derive(Clone, Copy)]
struct Opened<'a> {
    path: &'a Path,
    file: &'a std::fs::File,
    header: &'a BundleHeader,
}

impl Opened<'_> {
    fn section(&self, kind: SectionKind) -> Section {
        self.header
            .section(kind)
            .expect("decode checked the required sections")
    }

    fn io(&self) -> impl Fn(std::io::Error) -> BundleError + '_ {
        |source| BundleError::Io {
            path: self.path.to_owned(),
            source,
        }
    }

    fn format(&self) -> impl Fn(FormatError) -> BundleError + '_ {
        |source| BundleError::Format {
            path: self.path.to_owned(),
            source,
        }
    }

    /// The chunk table: it lists at most what the signed indexes name (`chunks`).
    fn chunk_table(&self, chunks: usize) -> Result<HashMap<ChunkId, BundledChunk>, BundleError> {
        let section = self.section(SectionKind::ChunkTable);
        let bytes =
            read_section(self.file, section, table_length_limit(chunks)).map_err(self.io())?;
        decode_table(&bytes, self.section(SectionKind::ChunkData).length).map_err(self.format())
    }

    /// The signed manifest, verified, and each image's index it names: found by its BLAKE3,
    /// its own signature verified, and pinned by the manifest.
    fn manifest(&self, keys: &TrustedKeys) -> Result<(Manifest, Vec<PinnedIndex>), BundleError> {
        let (io, format) = (self.io(), self.format());
        let signature = read_section(
            self.file,
            self.section(SectionKind::ManifestSignature),
            limits::SIGNATURE,
        )
        .map_err(&io)?;
        let bytes = read_section(
            self.file,
            self.section(SectionKind::Manifest),
            diffota_format::manifest::MAX_MANIFEST_BYTES as u64,
        )
        .map_err(&io)?;
        keys.verify(
            "release manifest",
            &bytes,
            &String::from_utf8_lossy(&signature),
        )
        .map_err(&format)?;
        let manifest = Manifest::parse(&bytes).map_err(&format)?;
        // The signed manifest bounds the indexes section: its indexes and their signatures.
        let limit = manifest.images.iter().fold(4u64, |sum, image| {
            sum.saturating_add(IMAGE_INDEX_HEAD as u64 + limits::SIGNATURE)
                .saturating_add(image.index_length.min(limits::INDEX))
        });
        let section =
            read_section(self.file, self.section(SectionKind::ImageIndexes), limit).map_err(&io)?;
        let bundled = decode_image_indexes(&section).map_err(&format)?;
        let mut indexes = Vec::new();
        for image in &manifest.images {
            let missing = || BundleError::MissingImage {
                path: self.path.to_owned(),
                image: image.name.clone(),
            };
            let found = bundled
                .iter()
                .find(|b| hex32(&b.index_blake3) == image.index_blake3)
                .ok_or_else(missing)?;
            let signature = String::from_utf8_lossy(found.signature).into_owned();
            let index = SignedIndex {
                bytes: found.index,
                signature: &signature,
            }
            .verify(keys)
            .map_err(&format)?;
            if !manifest.pins(image, found.index, &index) {
                return Err(BundleError::NotPinned {
                    path: self.path.to_owned(),
                    image: image.name.clone(),
                });
            }
            indexes.push(PinnedIndex {
                name: image.name.clone(),
                index,
                signature,
                index_blake3: found.index_blake3,
            });
        }
        Ok((manifest, indexes))
    }

    /// The image delta frame table, by the BLAKE3 of the index each frame belongs to; every
    /// frame must be one of that index's, with its length.
    fn image_frames(
        &self,
        indexes: &[PinnedIndex],
    ) -> Result<HashMap<[u8; 32], HashMap<u32, BundledChunk>>, BundleError> {
        let Some(section) = self.header.section(SectionKind::ImageDeltaFrames) else {
            return Ok(HashMap::new());
        };
        let frames: usize = indexes.iter().map(|i| i.index.deltas.frames.len()).sum();
        let limit = 4 + (IMAGE_FRAME_RECORD * frames) as u64;
        let bytes = read_section(self.file, section, limit).map_err(self.io())?;
        let table = decode_image_frame_table(&bytes, self.section(SectionKind::ChunkData).length)
            .map_err(self.format())?;
        let by_hash: HashMap<[u8; 32], &VerifiedIndex> = indexes
            .iter()
            .map(|pinned| (pinned.index_blake3, &pinned.index))
            .collect();
        let mut per_image: HashMap<[u8; 32], HashMap<u32, BundledChunk>> = HashMap::new();
        for ((hash, number), frame) in table {
            let Some(index) = by_hash.get(&hash) else {
                return Err((self.format())(
                    BundleFormatError::FrameNotInIndex(number).into(),
                ));
            };
            let own = per_image.entry(hash).or_default();
            own.insert(number, frame);
            check_frames(index, &HashMap::from([(number, frame)])).map_err(self.format())?;
        }
        Ok(per_image)
    }
}

/// A carried frame must be one the signed index describes, with its length.
fn check_frames(
    index: &VerifiedIndex,
    frames: &HashMap<u32, BundledChunk>,
) -> Result<(), FormatError> {
    match frames.iter().find(|(&number, bundled)| {
        index
            .deltas
            .frames
            .get(number as usize)
            .is_none_or(|frame| frame.compressed_length != bundled.compressed_length)
    }) {
        Some((&number, _)) => Err(BundleFormatError::FrameNotInIndex(number).into()),
        None => Ok(()),
    }
}

/// The notes are a few names; anything longer is not a bundle `chunk-server` made.
const NOTES_LIMIT: u64 = 64 * 1024;

fn table_length_limit(chunks: usize) -> u64 {
    4 + (TABLE_RECORD * chunks) as u64
}

fn frame_table_length_limit(frames: usize) -> u64 {
    4 + (FRAME_RECORD * frames) as u64
}

/// A section's bytes, refused before allocation when longer than `limit`.
fn read_section(file: &std::fs::File, section: Section, limit: u64) -> std::io::Result<Vec<u8>> {
    let limit = limit.min(MAX_METADATA);
    if section.length > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "bundle section {:?} is {} bytes, more than the {limit} it may be",
                section.kind, section.length
            ),
        ));
    }
    let mut bytes = vec![0u8; section.length as usize];
    file.read_exact_at(&mut bytes, section.offset)?;
    Ok(bytes)
}
