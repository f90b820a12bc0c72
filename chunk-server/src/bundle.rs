//! `chunk-server bundle`: one file with everything a device needs to go to a release
//! offline: the signed index as published, and the chunks a device on any of the given
//! releases lacks (every chunk without `--from`). Layout: `diffota_format::bundle`.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use diffota_format::bundle::{
    encode_frame_table, encode_table, BundleHeader, BundleNotes, BundledChunk, Section, SectionKind,
};
use diffota_format::frame_choice::{choose_delta_frames, frame_entry};
use diffota_format::{ChunkEntry, ChunkId, Index};

use crate::fsutil::{temp_file_beside, TempFile};
use crate::make::MakeError;
use crate::store::{io_error, read_index, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Making a release from an image, for `bundle_from_images`.
    #[error(transparent)]
    Make(#[from] MakeError),
}

#[derive(Debug, serde::Serialize)]
pub struct BundleSummary {
    pub path: PathBuf,
    pub to: String,
    pub from: Vec<String>,
    pub chunks: u64,
    pub bundled_chunks: u64,
    /// Delta frames carried instead of the plain frames of the chunks they rebuild.
    pub bundled_delta_frames: u64,
    pub bundle_bytes: u64,
}

pub fn bundle(
    store: &Store,
    to: &str,
    from: &[String],
    name: &str,
    out: &Path,
) -> Result<BundleSummary, BundleError> {
    let index_path = store.index_path(to, name);
    let index_bytes = diffota_files::local_file::read_bounded(
        &index_path,
        diffota_format::limits::INDEX,
        diffota_files::local_file::Links::Follow,
    )
    .map_err(io_error(&index_path))?;
    let index = Index::decode(&index_bytes).map_err(|source| StoreError::Format {
        path: index_path.clone(),
        source,
    })?;
    let signature_path = diffota_format::signature::signature_path(&index_path);
    let signature = diffota_files::local_file::read_bounded(
        &signature_path,
        diffota_format::limits::SIGNATURE,
        diffota_files::local_file::Links::Follow,
    )
    .map_err(io_error(&signature_path))?;

    // A device on any of the from-releases holds what all of them share.
    let mut held: Option<HashSet<(ChunkId, u32)>> = None;
    for version in from {
        let ids: HashSet<(ChunkId, u32)> = read_index(&store.index_path(version, name))?
            .chunks
            .iter()
            .map(|c| (c.id, c.length))
            .collect();
        held = Some(match held {
            None => ids,
            Some(previous) => previous.intersection(&ids).copied().collect(),
        });
    }
    let held = held.unwrap_or_default();
    let mut seen = HashSet::new();
    let lacking: Vec<ChunkEntry> = index
        .chunks
        .iter()
        .filter(|c| !held.contains(&(c.id, c.length)) && seen.insert(c.id))
        .copied()
        .collect();
    // The delta frames such a device would use (the device's own choice), instead of the
    // plain frames of the chunks they rebuild.
    let frames = choose_delta_frames(&index, &lacking, |id, length| held.contains(&(*id, length)));
    let rebuilt: HashSet<ChunkId> = frames
        .iter()
        .flat_map(|&f| &index.deltas.frames[f].chunks)
        .map(|&n| index.chunks[n as usize].id)
        .collect();
    let carried: Vec<&ChunkEntry> = lacking
        .iter()
        .filter(|c| !rebuilt.contains(&c.id))
        .collect();
    let carried_frames: Vec<(u32, ChunkEntry)> = frames
        .iter()
        .map(|&f| (f as u32, frame_entry(&index, f)))
        .collect();

    let layout = Layout::of(
        &carried,
        &carried_frames,
        &index_bytes,
        &signature,
        BundleNotes {
            to: to.to_owned(),
            from: from.to_vec(),
            name: name.to_owned(),
        },
    );
    let mut temp = temp_file_beside(out).map_err(io_error(out))?;
    let frames_in_data: Vec<&ChunkEntry> = carried_frames.iter().map(|(_, e)| e).collect();
    write_bundle(
        store,
        &index,
        carried.iter().chain(&frames_in_data).copied(),
        &layout,
        &mut temp,
    )
    .map_err(io_error(out))?;
    temp.commit(out).map_err(io_error(out))?;
    Ok(BundleSummary {
        path: out.to_owned(),
        to: to.to_owned(),
        from: from.to_vec(),
        chunks: index.chunks.len() as u64,
        bundled_chunks: carried.len() as u64,
        bundled_delta_frames: carried_frames.len() as u64,
        bundle_bytes: layout.length,
    })
}

/// Where everything goes in the bundle file.
struct Layout<'a> {
    header: BundleHeader,
    index: &'a [u8],
    signature: &'a [u8],
    notes: Vec<u8>,
    table: Vec<u8>,
    frame_table: Vec<u8>,
    length: u64,
}

impl<'a> Layout<'a> {
    /// The data section holds the `carried` chunks' frames, then the `frames`' (delta frame
    /// number, where it is in its pack).
    fn of(
        carried: &[&ChunkEntry],
        frames: &[(u32, ChunkEntry)],
        index: &'a [u8],
        signature: &'a [u8],
        notes: BundleNotes,
    ) -> Layout<'a> {
        let mut table = Vec::with_capacity(carried.len());
        let mut data_length = 0u64;
        for chunk in carried {
            table.push((
                chunk.id,
                BundledChunk {
                    offset: data_length,
                    compressed_length: chunk.compressed_length,
                },
            ));
            data_length += u64::from(chunk.compressed_length);
        }
        let table = encode_table(&table);
        let mut frame_table = Vec::with_capacity(frames.len());
        for (number, frame) in frames {
            frame_table.push((
                *number,
                BundledChunk {
                    offset: data_length,
                    compressed_length: frame.compressed_length,
                },
            ));
            data_length += u64::from(frame.compressed_length);
        }
        // Without delta frames the section is left out: the bundle stays readable by devices
        // that predate it.
        let frame_table = if frames.is_empty() {
            Vec::new()
        } else {
            encode_frame_table(&frame_table)
        };
        let notes = notes.to_json();
        let mut parts: Vec<(SectionKind, u64)> = vec![
            (SectionKind::Index, index.len() as u64),
            (SectionKind::Signature, signature.len() as u64),
            (SectionKind::Notes, notes.len() as u64),
            (SectionKind::ChunkTable, table.len() as u64),
        ];
        if !frame_table.is_empty() {
            parts.push((SectionKind::DeltaFrames, frame_table.len() as u64));
        }
        parts.push((SectionKind::ChunkData, data_length));
        let mut offset = BundleHeader::encoded_length(parts.len());
        let mut sections = Vec::new();
        for (kind, length) in parts {
            sections.push(Section {
                kind,
                offset,
                length,
            });
            offset += length;
        }
        Layout {
            header: BundleHeader { sections },
            index,
            signature,
            notes,
            table,
            frame_table,
            length: offset,
        }
    }
}

/// Writes the sections in their order, the frames of `data` (chunks, then delta frames)
/// copied from their packs.
fn write_bundle<'e>(
    store: &Store,
    index: &Index,
    data: impl Iterator<Item = &'e ChunkEntry>,
    layout: &Layout<'_>,
    temp: &mut TempFile,
) -> std::io::Result<()> {
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, temp.file());
    writer.write_all(&layout.header.encode())?;
    writer.write_all(layout.index)?;
    writer.write_all(layout.signature)?;
    writer.write_all(&layout.notes)?;
    writer.write_all(&layout.table)?;
    writer.write_all(&layout.frame_table)?;
    let mut open_pack: Option<(u32, std::fs::File)> = None;
    for chunk in data {
        if open_pack
            .as_ref()
            .is_none_or(|(number, _)| *number != chunk.pack)
        {
            let path = store.pack_path(&index.packs[chunk.pack as usize]);
            let file = std::fs::File::open(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            open_pack = Some((chunk.pack, file));
        }
        let (_, file) = open_pack.as_ref().expect("opened above");
        let mut frame = vec![0u8; chunk.compressed_length as usize];
        file.read_exact_at(&mut frame, chunk.pack_offset)?;
        writer.write_all(&frame)?;
    }
    writer.flush()
}

impl std::fmt::Display for BundleSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: release {} with {} of its {} chunks{} ({} bytes), for devices on {}",
            self.path.display(),
            self.to,
            self.bundled_chunks,
            self.chunks,
            if self.bundled_delta_frames > 0 {
                format!(" and {} delta frames", self.bundled_delta_frames)
            } else {
                String::new()
            },
            self.bundle_bytes,
            if self.from.is_empty() {
                "any release".to_owned()
            } else {
                self.from.join(", ")
            }
        )
    }
}

/// A bundle made straight from images, without a store (the "generate a patch" path).
pub struct ImageBundle<'a> {
    pub from_images: &'a [PathBuf],
    pub to_image: &'a Path,
    pub version: &'a str,
    pub compatible: &'a str,
    pub signing_key: &'a minisign::SecretKey,
    pub zstd_level: i32,
    pub created: u64,
}

/// Makes the releases in a throwaway store beside `out`, then the bundle from it; the store
/// is removed whatever happens.
pub fn bundle_from_images(
    images: &ImageBundle<'_>,
    out: &Path,
) -> Result<BundleSummary, BundleError> {
    let store_dir = PathBuf::from(format!(
        "{}.store-tmp-{}",
        out.display(),
        std::process::id()
    ));
    let result = (|| {
        let store = Store::new(&store_dir);
        let make = |image: &Path, version: &str| {
            let options = crate::make::MakeOptions {
                image,
                version,
                compatible: images.compatible,
                name: "rootfs",
                chunker: diffota_format::ChunkerParams::DEFAULT,
                zstd_level: images.zstd_level,
                created: images.created,
                expires: None,
                signing_key: Some(images.signing_key),
                progress: &|_| {},
                delta_from: &[],
                delta_level: images.zstd_level,
                delta_siblings: false,
                image_frames: false,
            };
            crate::make::make(&store, &options).map(|_| ())
        };
        let mut from = Vec::new();
        for (number, image) in images.from_images.iter().enumerate() {
            let from_version = format!("from-image-{}", number + 1);
            make(image, &from_version)?;
            from.push(from_version);
        }
        make(images.to_image, images.version)?;
        bundle(&store, images.version, &from, "rootfs", out)
    })();
    let _ = std::fs::remove_dir_all(&store_dir);
    result
}
