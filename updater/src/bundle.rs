//! Reading a bundle on the device (`diffota install FILE`): the signed index is verified
//! before anything else in the file is read; the chunk table and data are only ever used
//! through chunks that are verified by their ids.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::limits;
use diffota_files::local_file::{self, Links};
use diffota_format::bundle::{
    decode_frame_table, decode_table, BundleFormatError, BundleHeader, BundleNotes, BundledChunk,
    Section, SectionKind, FRAME_RECORD, MAX_METADATA, TABLE_RECORD,
};
use diffota_format::{ChunkEntry, ChunkId, FormatError, SignedIndex, TrustedKeys, VerifiedIndex};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: FormatError },
}

/// The chunks a bundle carries and where they are in its file.
#[derive(Clone, Debug)]
pub struct BundleChunks {
    pub path: PathBuf,
    pub data_offset: u64,
    pub table: HashMap<ChunkId, BundledChunk>,
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

/// Opens a bundle: header, then the index and signature, verified, then the chunk table.
pub fn open(
    path: &Path,
    keys: &TrustedKeys,
) -> Result<(VerifiedIndex, String, BundleChunks), BundleError> {
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
    let section = |kind| {
        header
            .section(kind)
            .expect("decode checked the required sections")
    };
    let index = section(SectionKind::Index);
    let signature = section(SectionKind::Signature);
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

    let table = section(SectionKind::ChunkTable);
    let data = section(SectionKind::ChunkData);
    // The tables list at most what the signed index names: a chunk table cannot usefully
    // carry more chunks, nor a frame table more frames.
    let table_limit = table_length_limit(verified.chunks.len());
    let table = decode_table(
        &read_section(&file, table, table_limit).map_err(io)?,
        data.length,
    )
    .map_err(format)?;
    let frames = match header.section(SectionKind::DeltaFrames) {
        Some(section) => {
            let limit = frame_table_length_limit(verified.deltas.frames.len());
            decode_frame_table(
                &read_section(&file, section, limit).map_err(io)?,
                data.length,
            )
            .map_err(format)?
        }
        None => HashMap::new(),
    };
    // A carried frame must be one the signed index describes, with its length.
    if let Some((&number, _)) = frames.iter().find(|(&number, bundled)| {
        verified
            .deltas
            .frames
            .get(number as usize)
            .is_none_or(|frame| frame.compressed_length != bundled.compressed_length)
    }) {
        return Err(format(BundleFormatError::FrameNotInIndex(number).into()));
    }
    let made_for = match header.section(SectionKind::Notes) {
        Some(notes) => {
            let bytes = read_section(&file, notes, NOTES_LIMIT).map_err(io)?;
            BundleNotes::parse(&bytes).from
        }
        None => Vec::new(),
    };
    Ok((
        verified,
        signature_text,
        BundleChunks {
            path: path.to_owned(),
            data_offset: data.offset,
            table,
            frames,
            made_for,
        },
    ))
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
