//! `chunk-server bundle`: one file with everything a device needs to go to a release
//! offline: the signed index as published (or, for a release of several images, its signed
//! manifest and every image's signed index), and the chunks a device on any of the given
//! releases lacks (every chunk without `--from`). Layout: `diffota_format::bundle`.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use diffota_format::bundle::{
    encode_frame_table, encode_image_frame_table, encode_image_indexes, encode_table, BundleHeader,
    BundleNotes, BundledChunk, Section, SectionKind, FORMAT_VERSION, RELEASE_FORMAT_VERSION,
};
use diffota_format::frame_choice::{choose_delta_frames, frame_entry};
use diffota_format::{ChunkEntry, ChunkId, Index, InstallKind};

use crate::fsutil::{temp_file_beside, TempFile};
use crate::make::MakeError;
use crate::store::{io_error, read_index, read_manifest, Store, StoreError};

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
    /// The images it carries (one for a bundle of one index).
    pub images: Vec<String>,
    pub chunks: u64,
    pub bundled_chunks: u64,
    /// Delta frames carried instead of the plain frames of the chunks they rebuild.
    pub bundled_delta_frames: u64,
    pub bundle_bytes: u64,
}

/// A bundle of release `to`: of every image of its manifest when the release has one and
/// no `name` is given (format version 2), else of the one image `name` (default `rootfs`).
pub fn bundle(
    store: &Store,
    to: &str,
    from: &[String],
    name: Option<&str>,
    out: &Path,
) -> Result<BundleSummary, BundleError> {
    let manifest_path = store.manifest_path(to);
    if name.is_none() && manifest_path.is_file() {
        return bundle_release(store, to, from, out);
    }
    let name = name.unwrap_or("rootfs");
    let image = BundleImage::read(store, to, from, name, false)?;
    let mut seen = HashSet::new();
    let (carried, frames) = image.carried(&mut seen);
    let data = DataLayout::of([(&image, carried, frames)]);
    let frame_table: Vec<(u32, BundledChunk)> =
        data.frames.iter().map(|(_, n, f)| (*n, *f)).collect();
    let notes = BundleNotes {
        to: to.to_owned(),
        from: from.to_vec(),
        name: name.to_owned(),
    };
    let mut metadata = vec![
        (SectionKind::Index, image.index_bytes.clone()),
        (SectionKind::Signature, image.signature.clone()),
        (SectionKind::Notes, notes.to_json()),
        (SectionKind::ChunkTable, encode_table(&data.table)),
    ];
    // Without delta frames the section is left out: the bundle stays readable by devices
    // that predate it.
    if !frame_table.is_empty() {
        metadata.push((SectionKind::DeltaFrames, encode_frame_table(&frame_table)));
    }
    let length = write_bundle(store, FORMAT_VERSION, metadata, &data, out)?;
    Ok(BundleSummary {
        path: out.to_owned(),
        to: to.to_owned(),
        from: from.to_vec(),
        images: vec![name.to_owned()],
        chunks: image.index.chunks.len() as u64,
        bundled_chunks: data.table.len() as u64,
        bundled_delta_frames: frame_table.len() as u64,
        bundle_bytes: length,
    })
}

/// A version 2 bundle: the signed manifest, every image's signed index, and the chunks and
/// delta frames a device on any of `from` lacks, each chunk carried once.
fn bundle_release(
    store: &Store,
    to: &str,
    from: &[String],
    out: &Path,
) -> Result<BundleSummary, BundleError> {
    let manifest_path = store.manifest_path(to);
    let manifest_bytes = read_small(
        &manifest_path,
        diffota_format::manifest::MAX_MANIFEST_BYTES as u64,
    )?;
    let manifest = read_manifest(&manifest_path)?;
    let manifest_signature = read_small(
        &diffota_format::signature::signature_path(&manifest_path),
        diffota_format::limits::SIGNATURE,
    )?;
    let images = manifest
        .images
        .iter()
        .map(|image| {
            // A single-copy image has no running copy to take chunks from.
            let single_copy = image.install == InstallKind::SingleCopy;
            BundleImage::read(store, to, from, &image.name, single_copy)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = HashSet::new();
    let parts: Vec<_> = images
        .iter()
        .map(|image| {
            let (carried, frames) = image.carried(&mut seen);
            (image, carried, frames)
        })
        .collect();
    let data = DataLayout::of(parts);
    let indexes: Vec<(&[u8], &[u8])> = images
        .iter()
        .map(|i| (i.index_bytes.as_slice(), i.signature.as_slice()))
        .collect();
    let notes = BundleNotes {
        to: to.to_owned(),
        from: from.to_vec(),
        name: String::new(),
    };
    let mut metadata = vec![
        (SectionKind::Manifest, manifest_bytes),
        (SectionKind::ManifestSignature, manifest_signature),
        (SectionKind::Notes, notes.to_json()),
        (SectionKind::ImageIndexes, encode_image_indexes(&indexes)),
        (SectionKind::ChunkTable, encode_table(&data.table)),
    ];
    if !data.frames.is_empty() {
        metadata.push((
            SectionKind::ImageDeltaFrames,
            encode_image_frame_table(&data.frames),
        ));
    }
    let length = write_bundle(store, RELEASE_FORMAT_VERSION, metadata, &data, out)?;
    Ok(BundleSummary {
        path: out.to_owned(),
        to: to.to_owned(),
        from: from.to_vec(),
        images: images.iter().map(|i| i.name.clone()).collect(),
        chunks: images.iter().map(|i| i.index.chunks.len() as u64).sum(),
        bundled_chunks: data.table.len() as u64,
        bundled_delta_frames: data.frames.len() as u64,
        bundle_bytes: length,
    })
}

fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>, BundleError> {
    Ok(diffota_files::local_file::read_bounded(
        path,
        limit,
        diffota_files::local_file::Links::Follow,
    )
    .map_err(io_error(path))?)
}

/// One image of the bundle: its signed index as published, and the chunks a device on any
/// of the from-releases holds in that image's running slot.
struct BundleImage {
    name: String,
    index_bytes: Vec<u8>,
    index_blake3: [u8; 32],
    signature: Vec<u8>,
    index: Index,
    held: HashSet<(ChunkId, u32)>,
}

impl BundleImage {
    fn read(
        store: &Store,
        to: &str,
        from: &[String],
        name: &str,
        single_copy: bool,
    ) -> Result<BundleImage, BundleError> {
        let index_path = store.index_path(to, name);
        let index_bytes = read_small(&index_path, diffota_format::limits::INDEX)?;
        let index = Index::decode(&index_bytes).map_err(|source| StoreError::Format {
            path: index_path.clone(),
            source,
        })?;
        let signature = read_small(
            &diffota_format::signature::signature_path(&index_path),
            diffota_format::limits::SIGNATURE,
        )?;
        // A device on any of the from-releases holds what all of them share; a from-release
        // without this image (added since) gives it nothing.
        let mut held: Option<HashSet<(ChunkId, u32)>> = None;
        for version in from.iter().filter(|_| !single_copy) {
            let path = store.index_path(version, name);
            let ids: HashSet<(ChunkId, u32)> = if path.is_file() {
                read_index(&path)?
                    .chunks
                    .iter()
                    .map(|c| (c.id, c.length))
                    .collect()
            } else {
                HashSet::new()
            };
            held = Some(match held {
                None => ids,
                Some(previous) => previous.intersection(&ids).copied().collect(),
            });
        }
        Ok(BundleImage {
            name: name.to_owned(),
            index_blake3: *blake3::hash(&index_bytes).as_bytes(),
            index_bytes,
            signature,
            index,
            held: held.unwrap_or_default(),
        })
    }

    /// The chunks this image needs carried (those not in `seen`, which it extends), and the
    /// delta frames a device would use instead of the plain frames of the chunks they
    /// rebuild (the device's own choice).
    fn carried(&self, seen: &mut HashSet<ChunkId>) -> (Vec<ChunkEntry>, Vec<(u32, ChunkEntry)>) {
        let index = &self.index;
        let mut own = HashSet::new();
        let lacking: Vec<ChunkEntry> = index
            .chunks
            .iter()
            .filter(|c| !self.held.contains(&(c.id, c.length)) && own.insert(c.id))
            .copied()
            .collect();
        let frames = choose_delta_frames(index, &lacking, |id, length| {
            self.held.contains(&(*id, length))
        });
        let rebuilt: HashSet<ChunkId> = frames
            .iter()
            .flat_map(|&f| &index.deltas.frames[f].chunks)
            .map(|&n| index.chunks[n as usize].id)
            .collect();
        let carried = lacking
            .into_iter()
            .filter(|c| !rebuilt.contains(&c.id) && seen.insert(c.id))
            .collect();
        let frames = frames
            .iter()
            .map(|&f| (f as u32, frame_entry(index, f)))
            .collect();
        (carried, frames)
    }
}

/// The data section: every carried chunk's frame, then every delta frame, each with the
/// index whose packs hold it.
struct DataLayout<'a> {
    table: Vec<(ChunkId, BundledChunk)>,
    /// (BLAKE3 of the image's index, frame number in it, where it is in the data).
    frames: Vec<([u8; 32], u32, BundledChunk)>,
    /// What to copy, in order: the index whose packs hold it, and where.
    copies: Vec<(&'a Index, ChunkEntry)>,
    length: u64,
}

impl<'a> DataLayout<'a> {
    fn of(
        parts: impl IntoIterator<Item = (&'a BundleImage, Vec<ChunkEntry>, Vec<(u32, ChunkEntry)>)>,
    ) -> DataLayout<'a> {
        let mut layout = DataLayout {
            table: Vec::new(),
            frames: Vec::new(),
            copies: Vec::new(),
            length: 0,
        };
        let mut frame_copies = Vec::new();
        for (image, carried, frames) in parts {
            for chunk in carried {
                let placed = layout.place(&chunk);
                layout.table.push((chunk.id, placed));
                layout.copies.push((&image.index, chunk));
            }
            frame_copies.extend(frames.into_iter().map(|(n, f)| (image, n, f)));
        }
        for (image, number, frame) in frame_copies {
            let placed = layout.place(&frame);
            layout.frames.push((image.index_blake3, number, placed));
            layout.copies.push((&image.index, frame));
        }
        layout
    }

    fn place(&mut self, entry: &ChunkEntry) -> BundledChunk {
        let placed = BundledChunk {
            offset: self.length,
            compressed_length: entry.compressed_length,
        };
        self.length += u64::from(entry.compressed_length);
        placed
    }
}

/// Writes the header, the `metadata` sections in their order, then the data section (its
/// frames copied from their packs) to a temporary file committed at `out`; returns the
/// bundle's length.
fn write_bundle(
    store: &Store,
    version: u16,
    metadata: Vec<(SectionKind, Vec<u8>)>,
    data: &DataLayout<'_>,
    out: &Path,
) -> Result<u64, BundleError> {
    let mut offset = BundleHeader::encoded_length(metadata.len() + 1);
    let mut sections = Vec::new();
    for (kind, length) in metadata
        .iter()
        .map(|(kind, bytes)| (*kind, bytes.len() as u64))
        .chain([(SectionKind::ChunkData, data.length)])
    {
        sections.push(Section {
            kind,
            offset,
            length,
        });
        offset += length;
    }
    let header = BundleHeader { version, sections };
    let mut temp = temp_file_beside(out).map_err(io_error(out))?;
    write_sections(store, &header, &metadata, data, &mut temp).map_err(io_error(out))?;
    temp.commit(out).map_err(io_error(out))?;
    Ok(offset)
}

fn write_sections(
    store: &Store,
    header: &BundleHeader,
    metadata: &[(SectionKind, Vec<u8>)],
    data: &DataLayout<'_>,
    temp: &mut TempFile,
) -> std::io::Result<()> {
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, temp.file());
    writer.write_all(&header.encode())?;
    for (_, bytes) in metadata {
        writer.write_all(bytes)?;
    }
    let mut open_pack: Option<(PathBuf, std::fs::File)> = None;
    let mut frame = Vec::new();
    for (index, chunk) in &data.copies {
        let path = store.pack_path(&index.packs[chunk.pack as usize]);
        if open_pack.as_ref().is_none_or(|(open, _)| *open != path) {
            let file = std::fs::File::open(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            open_pack = Some((path, file));
        }
        let (_, file) = open_pack.as_ref().expect("opened above");
        frame.resize(chunk.compressed_length as usize, 0);
        file.read_exact_at(&mut frame, chunk.pack_offset)?;
        writer.write_all(&frame)?;
    }
    writer.flush()
}

impl std::fmt::Display for BundleSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: release {}{} with {} of its {} chunks{} ({} bytes), for devices on {}",
            self.path.display(),
            self.to,
            if self.images.len() > 1 {
                format!(" (images {})", self.images.join(", "))
            } else {
                String::new()
            },
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
                image_level: images.zstd_level,
                delta_siblings: false,
                image_frames: false,
                delta_from_images: &[],
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
        bundle(&store, images.version, &from, Some("rootfs"), out)
    })();
    let _ = std::fs::remove_dir_all(&store_dir);
    result
}
