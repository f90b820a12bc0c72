//! `chunk-server make`: turns an image into a release of the store.
//!
//! The image is streamed: a reader thread cuts it with FastCDC and hashes the whole image,
//! batches of about 8 MiB go through a bounded channel to the main thread, which hashes the
//! chunks and compresses the ones the store lacks on all cores (rayon), then appends them in
//! image order to one new pack. Memory is bounded by the batches in flight, not the image.
//! Delta frames follow (`frames`); then the plain frames the devices on each base still
//! fetch are moved together to the start of the pack (`layout`), so that such a device's
//! plain chunks come in one range request, not one per stretch of image.
//!
//! Nothing appears under a final name before it is complete: the pack is written to a
//! temporary file and renamed to its hash at the end, then the index, then its signature.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use diffota_format::index::{DeltaFrame, Deltas};
use diffota_format::signature::signature_path;
use diffota_format::{ChunkEntry, ChunkId, ChunkerParams, Index, PackRef};
use rayon::prelude::*;

pub mod base_releases;
mod error;
mod frame_encoder;
pub mod frames;
mod layout;
mod pack;
pub mod release;

pub use error::MakeError;
pub(crate) use pack::PackWriter;

use crate::fsutil::{temp_file_beside, write_atomic, TempFile};
use crate::store::{io_error, read_index, ChunkLocation, Store};

const BATCH_BYTES: usize = 8 * 1024 * 1024;

pub struct MakeOptions<'a> {
    pub image: &'a Path,
    pub version: &'a str,
    pub compatible: &'a str,
    /// File name of the index inside `releases/<version>/` (without `.didx`).
    pub name: &'a str,
    pub chunker: ChunkerParams,
    pub zstd_level: i32,
    /// Creation time written into the index (unix seconds); pass SOURCE_DATE_EPOCH for
    /// reproducible indexes.
    pub created: u64,
    pub expires: Option<u64>,
    pub signing_key: Option<&'a minisign::SecretKey>,
    pub progress: &'a dyn Fn(u64),
    /// Also write delta frames against these releases of the store (same index name), in
    /// this order (a device considers them in it): `default_delta_bases` or the user's.
    pub delta_from: &'a [String],
    /// zstd level of the delta frames.
    pub delta_level: i32,
    /// zstd level of the image frames.
    pub image_level: i32,
    /// Delta frames may also name chunks this release added (rebuilt by an earlier frame)
    /// as bases, not only chunks of the `delta_from` release.
    pub delta_siblings: bool,
    /// Also write the whole image as image frames (1 MiB groups of its distinct chunks).
    pub image_frames: bool,
    /// Also write delta frames against these image files: releases the store does not
    /// hold (a build host without the published store keeps the previous build's image).
    pub delta_from_images: &'a [PathBuf],
}

#[derive(Debug, serde::Serialize)]
pub struct MakeSummary {
    pub version: String,
    pub index: PathBuf,
    pub signed: bool,
    pub image_bytes: u64,
    pub chunks: u64,
    pub distinct_chunks: u64,
    pub new_chunks: u64,
    pub new_compressed_bytes: u64,
    pub release_compressed_bytes: u64,
    /// The releases delta frames were written against (`delta_from`).
    pub delta_bases: Vec<String>,
    /// The image files delta frames were written against (`delta_from_images`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delta_base_images: Vec<PathBuf>,
    /// Delta frames written against them, and inherited from them.
    pub delta_frames: u64,
    /// The index as changes against older releases' indexes, for devices that store them.
    pub index_deltas: Vec<crate::index_deltas::IndexDeltaFile>,
    /// The index compressed, for devices that store none of those.
    pub compressed_index: crate::index_deltas::CompressedIndexFile,
    /// The older releases of the same name and compatible the store holds, newest first
    /// (`<name>.before.json`, which `chunk-server pull` follows).
    pub releases_before: Vec<String>,
    pub pack: Option<String>,
    pub seconds: f64,
}

impl MakeSummary {
    /// Image bytes per byte of new compressed data the release added to the store.
    pub fn dedup_ratio(&self) -> f64 {
        self.image_bytes as f64 / self.new_compressed_bytes.max(1) as f64
    }

    pub fn throughput_mib_s(&self) -> f64 {
        self.image_bytes as f64 / (1024.0 * 1024.0) / self.seconds.max(1e-9)
    }
}

struct Batch {
    chunks: Vec<diffota_format::Chunk>,
}

/// Where a chunk of this release is: in a pack already in the store, or in the new pack.
#[derive(Clone, Copy)]
enum Placed {
    Existing(ChunkLocation),
    New {
        pack_offset: u64,
        compressed_length: u32,
    },
}

/// The image chunked: every chunk in image order with where it is, and the new pack written
/// to its temporary file.
struct Chunked {
    image_length: u64,
    image_hash: [u8; 32],
    placed_chunks: Vec<(ChunkId, u32, Placed)>,
    new_chunks: u64,
}

/// Makes a release: chunk the image and write the chunks the store lacks into one new pack,
/// build the index, then publish pack, index and signature (in that order).
pub fn make(store: &Store, options: &MakeOptions) -> Result<MakeSummary, MakeError> {
    let started = Instant::now();
    diffota_format::index::validate_version(options.version)?;
    diffota_format::index::validate_compatible(options.compatible)?;
    options.chunker.validate()?;
    let packs_dir = store.packs_dir();
    fs_err::create_dir_all(&packs_dir).map_err(io_error(&packs_dir))?;
    let mut pack_file =
        temp_file_beside(&packs_dir.join("new.pack")).map_err(io_error(&packs_dir))?;
    let pack_reader = pack_file.file().try_clone().map_err(io_error(&packs_dir))?;
    let mut pack = PackWriter::new(pack_file.file(), packs_dir.clone());
    let mut chunked = chunk_image(store, options, &mut pack)?;
    if chunked.image_length == 0 {
        return Err(MakeError::EmptyImage {
            path: options.image.to_owned(),
        });
    }
    let mut frames = write_frames(store, options, &chunked, &pack_reader, &mut pack)?;
    let mut new_pack = pack.finish()?;
    if let Some(pack_ref) = new_pack {
        // What the devices on each base fetch, as they choose their frames from the index
        // with the frames in the order a laid out pack gives them (the first base's keep
        // their numbers).
        let written_order = frames.deltas.frames.clone();
        frames.deltas.frames = frames_by_base(&frames);
        let fetch_index = index_with_frames(options, &chunked, new_pack, &frames);
        let fetches = layout::device_fetches(&fetch_index, &frames.base_chunks);
        let new_pack_number = fetch_index
            .packs
            .iter()
            .position(|p| p.id == pack_ref.id)
            .map_or(u32::MAX, |n| n as u32);
        drop(fetch_index);
        frames.deltas.frames = written_order;
        if let Some(relaid) = lay_out_pack(
            &mut chunked,
            &mut frames,
            &fetches,
            new_pack_number,
            &pack_reader,
            pack_ref.length,
            &packs_dir,
        )? {
            (new_pack, pack_file) = relaid;
        }
    }
    let index = index_with_frames(options, &chunked, new_pack, &frames);
    index.validate()?;
    let (index_path, index, index_bytes) = publish(store, options, index, new_pack, pack_file)?;
    let index_deltas = crate::index_deltas::write_index_deltas(
        store,
        options.name,
        options.version,
        &index_bytes,
    )?;
    let compressed_index = crate::index_deltas::write_compressed_index(
        store,
        options.name,
        options.version,
        &index_bytes,
    )?;
    let releases_before = write_releases_before(store, options)?;
    let distinct: std::collections::HashSet<_> = index.chunks.iter().map(|c| c.id).collect();
    Ok(MakeSummary {
        version: options.version.to_owned(),
        signed: signature_path(&index_path).exists(),
        index: index_path,
        image_bytes: chunked.image_length,
        chunks: index.chunks.len() as u64,
        distinct_chunks: distinct.len() as u64,
        new_chunks: chunked.new_chunks,
        new_compressed_bytes: new_pack.map_or(0, |p| p.length),
        release_compressed_bytes: index.distinct_compressed_bytes(),
        delta_bases: options.delta_from.to_vec(),
        delta_base_images: options.delta_from_images.to_vec(),
        delta_frames: index.deltas.frames.len() as u64,
        index_deltas,
        compressed_index,
        releases_before,
        pack: new_pack.map(|p| p.store_path()),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes `releases/<version>/<name>.before.json`: the older releases a build host needs for
/// the next release's default delta bases (`diffota_format::releases_before`).
fn write_releases_before(store: &Store, options: &MakeOptions) -> Result<Vec<String>, MakeError> {
    let before =
        base_releases::releases_before(store, options.name, options.compatible, options.version)?;
    let path = store
        .root()
        .join(diffota_format::releases_before::store_path(
            options.version,
            options.name,
        ));
    let list = diffota_format::releases_before::ReleasesBefore::new(&before);
    write_atomic(&path, &list.to_json()).map_err(io_error(&path))?;
    Ok(list.before)
}

/// Reads the image in batches (on a thread of its own), hashes every chunk, and compresses
/// each chunk the store lacks once into the new pack, in image order.
fn chunk_image(
    store: &Store,
    options: &MakeOptions,
    pack: &mut PackWriter,
) -> Result<Chunked, MakeError> {
    let image_path = options.image.to_owned();
    let read_error = |source| MakeError::ReadImage {
        path: image_path.clone(),
        source,
    };
    let image = fs_err::File::open(options.image).map_err(read_error)?;
    let known = store.known_chunks()?;
    let (sender, receiver) = sync_channel::<std::io::Result<Batch>>(2);
    let chunker = options.chunker;
    let reader = std::thread::spawn(move || read_batches(image, chunker, sender));
    let mut placed_by_id: HashMap<ChunkId, Placed> = HashMap::new();
    let mut placed_chunks: Vec<(ChunkId, u32, Placed)> = Vec::new();
    let mut new_chunks = 0u64;
    let mut done_bytes = 0u64;
    for batch in receiver {
        let batch = batch.map_err(read_error)?;
        let ids: Vec<ChunkId> = batch
            .chunks
            .par_iter()
            .map(|c| ChunkId::of(&c.data))
            .collect();
        // Claim each chunk the store lacks once, in image order, then compress the claims.
        let mut claimed = std::collections::HashSet::new();
        let to_compress: Vec<usize> = (0..ids.len())
            .filter(|&position| {
                let id = &ids[position];
                !placed_by_id.contains_key(id) && !known.contains_key(id) && claimed.insert(*id)
            })
            .collect();
        let compressed = compress_claimed(&batch, &to_compress, options.zstd_level)?;
        for (position, frame) in to_compress.iter().zip(compressed) {
            let pack_offset = pack.append(&frame)?;
            placed_by_id.insert(
                ids[*position],
                Placed::New {
                    pack_offset,
                    compressed_length: frame.len() as u32,
                },
            );
            new_chunks += 1;
        }
        for (chunk, id) in batch.chunks.iter().zip(&ids) {
            let placed = *placed_by_id
                .entry(*id)
                .or_insert_with(|| Placed::Existing(known[id]));
            placed_chunks.push((*id, chunk.data.len() as u32, placed));
            done_bytes += chunk.data.len() as u64;
        }
        (options.progress)(done_bytes);
    }
    let (image_length, image_hash) = reader
        .join()
        .expect("reader thread panicked")
        .map_err(read_error)?;
    Ok(Chunked {
        image_length,
        image_hash,
        placed_chunks,
        new_chunks,
    })
}

/// The distinct chunks of the release that `from` lacks, each at its first place in the
/// image: what delta frames against `from` rebuild. Against the newest older release these
/// are about the chunks the release added; against an older one they also hold the chunks
/// the releases in between added and this one kept (catch-up frames), which a device on
/// `from` lacks too.
fn chunks_lacking(chunked: &Chunked, from: &[ChunkEntry]) -> Vec<frames::ReleaseChunk> {
    let held: std::collections::HashSet<ChunkId> = from.iter().map(|c| c.id).collect();
    distinct_chunks(chunked)
        .into_iter()
        .filter(|chunk| !held.contains(&chunk.id))
        .collect()
}

/// The frames written after the plain ones in the new pack, as the options ask: delta frames
/// against each `delta_from` release (read here), and image frames.
struct Frames {
    from_indexes: Vec<Index>,
    deltas: Deltas,
    /// With their own base table.
    image_frames: Deltas,
    /// For each base in turn (the releases, then the images), the chunks it holds.
    base_chunks: Vec<HashSet<(ChunkId, u32)>>,
    /// For each base in turn, its frames in `deltas.frames`, and how many of them (the
    /// last) are fallbacks.
    frame_spans: Vec<(std::ops::Range<usize>, usize)>,
    /// Where the frames against the bases after the first lie in the pack.
    placement: layout::BasePlacement,
}

fn write_frames(
    store: &Store,
    options: &MakeOptions,
    chunked: &Chunked,
    pack_reader: &std::fs::File,
    pack: &mut PackWriter,
) -> Result<Frames, MakeError> {
    let from_indexes = options
        .delta_from
        .iter()
        .map(|from| read_index(&store.index_path(from, options.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut deltas = Deltas::default();
    let mut base_chunks = Vec::new();
    let mut frame_spans = Vec::new();
    let settings = frames::DeltaSettings {
        level: options.delta_level,
        siblings: options.delta_siblings,
        fallbacks: true,
        preceding: 0,
        scan_length: chunked.image_length,
    };
    for (position, from_index) in from_indexes.iter().enumerate() {
        // Fallback frames serve devices that take a frame naming a sibling through
        // inheritance, further behind than its base; catch-up frames (against any base but
        // the first, the newest older release by default) need none: on the bench pairs,
        // without them every two- and three-behind download stays within 0.1% and v3 stores
        // 31% less (bench/README.md, "catch-up frames without fallbacks").
        let settings = frames::DeltaSettings {
            fallbacks: position == 0,
            ..settings
        };
        let first_frame = deltas.frames.len();
        let (held, written) = write_frames_against(
            store,
            chunked,
            frames::DeltaSource::Release(from_index),
            pack_reader,
            pack,
            settings,
            &mut deltas,
        )?;
        base_chunks.push(held);
        frame_spans.push((first_frame..deltas.frames.len(), written.fallbacks));
    }
    for path in options.delta_from_images {
        let image = chunk_base_image(path, options.chunker)?;
        let first_frame = deltas.frames.len();
        let (held, written) = write_frames_against(
            store,
            chunked,
            frames::DeltaSource::Image(&image),
            pack_reader,
            pack,
            settings,
            &mut deltas,
        )?;
        base_chunks.push(held);
        frame_spans.push((first_frame..deltas.frames.len(), written.fallbacks));
    }
    let mut image_frames = Deltas::default();
    if options.image_frames {
        pack.flush()?;
        frames::write_image_frames(
            store,
            &distinct_chunks(chunked),
            pack_reader,
            pack,
            options.image_level,
            &mut image_frames,
        )?;
    }
    Ok(Frames {
        from_indexes,
        deltas,
        image_frames,
        base_chunks,
        frame_spans,
        placement: layout::BasePlacement::default(),
    })
}

/// Writes the frames against one base (`source`) for the chunks of the release it lacks,
/// into `deltas`; returns the chunks the base holds and what was written.
fn write_frames_against(
    store: &Store,
    chunked: &Chunked,
    source: frames::DeltaSource,
    pack_reader: &std::fs::File,
    pack: &mut PackWriter,
    settings: frames::DeltaSettings,
    deltas: &mut Deltas,
) -> Result<(HashSet<(ChunkId, u32)>, frames::WrittenFrames), MakeError> {
    pack.flush()?;
    let lacking = chunks_lacking(chunked, source.chunks());
    let written =
        frames::write_delta_frames(store, source, &lacking, pack_reader, pack, settings, deltas)?;
    let held = source.chunks().iter().map(|c| (c.id, c.length)).collect();
    Ok((held, written))
}

/// Writes the new pack again laid out for the devices on the bases (`layout::pack_pieces`):
/// the plain frames each base's devices fetch together, the frames against the first base
/// just before them and those against the last just after, or with three bases or more
/// those against one between where that serves the bases' devices in fewer requests
/// (`new_pack_number`: the new pack's number in the index `fetches` were chosen from).
/// Moves the chunks' and the frames' places in `chunked` and `frames` along, and the
/// frames against each base into the order they are written in (a device decodes them in
/// pack order, and a frame naming a sibling comes after the frame rebuilding it, as in
/// index order). Returns the new pack and its temporary file; None when the pack is already
/// in that order.
fn lay_out_pack(
    chunked: &mut Chunked,
    frames: &mut Frames,
    fetches: &[layout::DeviceFetches],
    new_pack_number: u32,
    pack_reader: &std::fs::File,
    pack_length: u64,
    packs_dir: &Path,
) -> Result<Option<(Option<PackRef>, TempFile)>, MakeError> {
    let fetched_plain: Vec<&HashSet<ChunkId>> = fetches.iter().map(|f| &f.plain).collect();
    let mut seen = HashSet::new();
    let plain: Vec<layout::PlainFrame> = chunked
        .placed_chunks
        .iter()
        .filter_map(|(id, _, placed)| match *placed {
            Placed::New {
                pack_offset,
                compressed_length,
            } if seen.insert(pack_offset) => Some(layout::PlainFrame {
                pack_offset,
                compressed_length,
                fetched_by: layout::fetched_by(&fetched_plain, id),
            }),
            _ => None,
        })
        .collect();
    let order = layout::plain_frame_order(&plain).unwrap_or_else(|| (0..plain.len()).collect());
    let first_base_takes = fetches.first().map(|f| &f.frames);
    let (base_frames, first_base_fallbacks) =
        layout::base_stretches(&frames.deltas.frames, &frames.frame_spans, first_base_takes);
    let Some((placement, pieces)) = layout::best_layout(
        &layout::PackParts {
            plain: &plain,
            order: &order,
            base_frames: &base_frames,
            first_base_fallbacks: &first_base_fallbacks,
            pack_length,
        },
        fetches,
        new_pack_number,
        diffota_format::ranges::DEFAULT_MAX_GAP,
    ) else {
        return Ok(None);
    };
    if layout::in_place(&pieces) {
        return Ok(None);
    }
    frames.placement = placement;
    let mut pack_file =
        temp_file_beside(&packs_dir.join("new.pack")).map_err(io_error(packs_dir))?;
    let mut writer = PackWriter::new(pack_file.file(), packs_dir.to_owned());
    let new_starts = layout::rewrite_pack(pack_reader, &pieces, &mut writer)?;
    let new_pack = writer.finish()?;
    let relocation = layout::Relocation::new(&pieces, &new_starts);
    for (_, _, placed) in &mut chunked.placed_chunks {
        if let Placed::New { pack_offset, .. } = placed {
            *pack_offset = relocation.offset(*pack_offset);
        }
    }
    for frame in frames
        .deltas
        .frames
        .iter_mut()
        .chain(frames.image_frames.frames.iter_mut())
    {
        frame.pack_offset = relocation.offset(frame.pack_offset);
    }
    frames.deltas.frames = frames_by_base(frames);
    Ok(Some((new_pack, pack_file)))
}

/// The frames against the bases in the order the laid out pack holds them
/// ([`layout::base_order`]): a device decodes frames in pack order, and a frame naming a
/// sibling must come after the frame rebuilding it, as it does in index order.
fn frames_by_base(frames: &Frames) -> Vec<DeltaFrame> {
    let mut by_base: Vec<DeltaFrame> = Vec::with_capacity(frames.deltas.frames.len());
    for base in layout::base_order(frames.frame_spans.len(), frames.placement) {
        by_base.extend_from_slice(&frames.deltas.frames[frames.frame_spans[base].0.clone()]);
    }
    by_base
}

/// `path` chunked as `make` chunks an image: each chunk's id, offset and length (nothing of
/// its data is kept).
fn chunk_base_image(path: &Path, chunker: ChunkerParams) -> Result<frames::BaseImage, MakeError> {
    let read_error = |source| MakeError::ReadImage {
        path: path.to_owned(),
        source,
    };
    let mut file =
        std::io::BufReader::with_capacity(1 << 20, fs_err::File::open(path).map_err(read_error)?);
    let mut chunks = Vec::new();
    let mut offset = 0u64;
    for chunk in chunker.chunk_stream(&mut file) {
        let chunk = chunk.map_err(read_error)?;
        let length = chunk.data.len() as u32;
        chunks.push(ChunkEntry {
            id: ChunkId::of(&chunk.data),
            offset,
            length,
            compressed_length: length,
            pack: 0,
            pack_offset: offset,
        });
        offset += u64::from(length);
    }
    Ok(frames::BaseImage {
        path: path.to_owned(),
        chunks,
    })
}

/// The index with its frames in the order a device considers them: this release's delta
/// frames (against each base in turn), then those it inherits from the bases, then the
/// image frames.
fn index_with_frames(
    options: &MakeOptions,
    chunked: &Chunked,
    new_pack: Option<PackRef>,
    frames: &Frames,
) -> Index {
    let base_packs = frames
        .from_indexes
        .first()
        .map_or(&[][..], |i| &i.packs[..]);
    let mut index = build_index(
        options,
        chunked,
        new_pack,
        frames.deltas.clone(),
        base_packs,
    );
    for from_index in &frames.from_indexes {
        frames::inherit_frames(from_index, &mut index);
    }
    if let Some(pack) = new_pack {
        let number = index
            .packs
            .iter()
            .position(|p| p.id == pack.id)
            .expect("the new pack is in the index") as u32;
        let Deltas { bases, frames } = &frames.image_frames;
        let mut base_numbers: HashMap<ChunkId, u32> = index
            .deltas
            .bases
            .iter()
            .enumerate()
            .map(|(number, base)| (base.id, number as u32))
            .collect();
        for frame in frames {
            let bases = frame
                .bases
                .iter()
                .map(|&b| {
                    let base = bases[b as usize];
                    *base_numbers.entry(base.id).or_insert_with(|| {
                        index.deltas.bases.push(base);
                        (index.deltas.bases.len() - 1) as u32
                    })
                })
                .collect();
            index.deltas.frames.push(DeltaFrame {
                pack: number,
                bases,
                ..frame.clone()
            });
        }
    }
    index
}

/// Every distinct chunk of the release in image order, where its plain frame is.
fn distinct_chunks(chunked: &Chunked) -> Vec<frames::ReleaseChunk> {
    let mut seen = std::collections::HashSet::new();
    chunked
        .placed_chunks
        .iter()
        .enumerate()
        .filter(|(_, (id, _, _))| seen.insert(*id))
        .map(|(number, (id, length, placed))| {
            let (pack, pack_offset, compressed_length) = match *placed {
                Placed::Existing(location) => (
                    Some(location.pack),
                    location.pack_offset,
                    location.compressed_length,
                ),
                Placed::New {
                    pack_offset,
                    compressed_length,
                } => (None, pack_offset, compressed_length),
            };
            frames::ReleaseChunk {
                number: number as u32,
                id: *id,
                length: *length,
                pack,
                pack_offset,
                compressed_length,
            }
        })
        .collect()
}

/// The zstd frames of the chunks at `positions` of the batch, compressed in parallel.
fn compress_claimed(
    batch: &Batch,
    positions: &[usize],
    level: i32,
) -> Result<Vec<Vec<u8>>, MakeError> {
    positions
        .par_iter()
        .map(|&position| {
            let chunk = &batch.chunks[position];
            compress_chunk(&chunk.data, level).map_err(|source| MakeError::Compress {
                offset: chunk.offset,
                source,
            })
        })
        .collect()
}

/// The index: the packs this release uses (those already in the store, then the new one),
/// and every chunk in image order. Packs the base release (`base_packs`, the first
/// `delta_from` release) uses keep its order and come first, so that the chunk entries the two indexes
/// share are byte for byte the same and the index delta against it stays small.
fn build_index(
    options: &MakeOptions,
    chunked: &Chunked,
    new_pack: Option<PackRef>,
    mut deltas: Deltas,
    base_packs: &[PackRef],
) -> Index {
    let mut packs: Vec<PackRef> = Vec::new();
    for (_, _, placed) in &chunked.placed_chunks {
        if let Placed::Existing(location) = placed {
            if !packs.iter().any(|p| p.id == location.pack.id) {
                packs.push(location.pack);
            }
        }
    }
    packs.sort_by_key(|pack| {
        base_packs
            .iter()
            .position(|p| p.id == pack.id)
            .unwrap_or(usize::MAX)
    });
    if let Some(new_pack) = new_pack.filter(|n| !packs.iter().any(|p| p.id == n.id)) {
        packs.push(new_pack);
    }
    let pack_numbers: HashMap<[u8; 32], u32> = packs
        .iter()
        .enumerate()
        .map(|(number, pack)| (pack.id, number as u32))
        .collect();
    let mut chunks = Vec::with_capacity(chunked.placed_chunks.len());
    let mut offset = 0u64;
    for (id, length, placed) in &chunked.placed_chunks {
        let (pack, pack_offset, compressed_length) = match *placed {
            Placed::Existing(location) => (
                location.pack,
                location.pack_offset,
                location.compressed_length,
            ),
            Placed::New {
                pack_offset,
                compressed_length,
            } => (
                new_pack.expect("new chunks imply a new pack"),
                pack_offset,
                compressed_length,
            ),
        };
        chunks.push(ChunkEntry {
            id: *id,
            offset,
            length: *length,
            compressed_length,
            pack: pack_numbers[&pack.id],
            pack_offset,
        });
        offset += u64::from(*length);
    }
    if let Some(pack) = new_pack {
        let number = pack_numbers[&pack.id];
        for frame in &mut deltas.frames {
            frame.pack = number;
        }
    }
    Index {
        created: options.created,
        expires: options.expires,
        chunker: options.chunker,
        image_length: chunked.image_length,
        image_hash: chunked.image_hash,
        compatible: options.compatible.to_owned(),
        version: options.version.to_owned(),
        packs,
        chunks,
        deltas,
    }
}

/// Moves the new pack into place, then writes the index, then its signature: a store never
/// has an index whose packs are missing. Making a release that is already published is a
/// no-op whatever the clock says (a rerun of the same build): the published index stays as
/// it is with the packs it names (the rerun's pack, which holds its delta frames again, is
/// thrown away), and a signature an interrupted run did not write is completed. Another image under
/// its version is refused. Returns the index as published, and its bytes.
fn publish(
    store: &Store,
    options: &MakeOptions,
    index: Index,
    new_pack: Option<PackRef>,
    pack_file: TempFile,
) -> Result<(PathBuf, Index, Vec<u8>), MakeError> {
    let index_path = store.index_path(options.version, options.name);
    let published = read_published(&index_path, &index, options.version)?;
    if let Some(pack) = new_pack.filter(|_| published.is_none()) {
        let final_path = store.pack_path(&pack);
        if final_path.exists() {
            drop(pack_file); // an identical pack is already in place
        } else {
            pack_file
                .commit(&final_path)
                .map_err(io_error(&final_path))?;
        }
    }
    let (index, index_bytes) = match published {
        Some(published) => published,
        None => {
            let bytes = index.to_bytes();
            write_atomic(&index_path, &bytes).map_err(io_error(&index_path))?;
            (index, bytes)
        }
    };
    if let Some(key) = options.signing_key {
        if !signature_path(&index_path).exists() {
            crate::keys::sign_file(
                &index_path,
                &index_bytes,
                key,
                &format!("diffota release {} {}", options.version, options.name),
            )?;
        }
    }
    Ok((index_path, index, index_bytes))
}

/// One zstd frame for a chunk; each worker thread keeps its compression context, which
/// costs more to set up than to compress a chunk.
fn compress_chunk(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, compressor) = slot.as_mut().expect("set above");
        compressor.compress(data)
    })
}

/// The index already at `path` when it publishes the same release as `index` (with its
/// bytes); None when there is none; an error when it is another release under the version.
fn read_published(
    path: &Path,
    index: &Index,
    version: &str,
) -> Result<Option<(Index, Vec<u8>)>, MakeError> {
    let bytes = match diffota_files::local_file::read_bounded(
        path,
        diffota_format::limits::INDEX,
        diffota_files::local_file::Links::Follow,
    ) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e).into()),
    };
    match Index::decode(&bytes) {
        Ok(published) if published.is_same_release(index) => Ok(Some((published, bytes))),
        _ => Err(MakeError::ReleaseExists {
            path: path.to_owned(),
            version: version.to_owned(),
        }),
    }
}

/// The reader thread: cuts the image into batches and hashes the whole image on the way.
fn read_batches(
    image: fs_err::File,
    chunker: ChunkerParams,
    sender: std::sync::mpsc::SyncSender<std::io::Result<Batch>>,
) -> std::io::Result<(u64, [u8; 32])> {
    let mut hashing = HashingReader {
        inner: image,
        hasher: blake3::Hasher::new(),
        read: 0,
    };
    let mut batch = Batch { chunks: Vec::new() };
    let mut batch_bytes = 0;
    for chunk in chunker.chunk_stream(&mut hashing) {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let kind = e.kind();
                let _ = sender.send(Err(e));
                return Err(std::io::Error::new(kind, "image read failed"));
            }
        };
        batch_bytes += chunk.data.len();
        batch.chunks.push(chunk);
        if batch_bytes >= BATCH_BYTES {
            if sender
                .send(Ok(std::mem::replace(
                    &mut batch,
                    Batch { chunks: Vec::new() },
                )))
                .is_err()
            {
                return Err(std::io::Error::other("make stopped"));
            }
            batch_bytes = 0;
        }
    }
    if !batch.chunks.is_empty() {
        let _ = sender.send(Ok(batch));
    }
    Ok((hashing.read, *hashing.hasher.finalize().as_bytes()))
}

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    read: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

impl std::fmt::Display for MakeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "release {} -> {}{}",
            self.version,
            self.index.display(),
            if self.signed { "" } else { " (unsigned)" }
        )?;
        writeln!(f, "  image            {} bytes", self.image_bytes)?;
        writeln!(
            f,
            "  chunks           {} ({} distinct)",
            self.chunks, self.distinct_chunks
        )?;
        writeln!(
            f,
            "  new chunks       {} ({} compressed bytes{})",
            self.new_chunks,
            self.new_compressed_bytes,
            self.pack
                .as_deref()
                .map(|p| format!(" in {p}"))
                .unwrap_or_default()
        )?;
        let bases: Vec<String> = self
            .delta_bases
            .iter()
            .cloned()
            .chain(
                self.delta_base_images
                    .iter()
                    .map(|p| format!("image {}", p.display())),
            )
            .collect();
        if bases.is_empty() {
            writeln!(
                f,
                "  delta frames     none (no older release of this name, or --no-delta)"
            )?;
        } else {
            writeln!(
                f,
                "  delta frames     {} against {}",
                self.delta_frames,
                bases.join(", ")
            )?;
        }
        writeln!(
            f,
            "  compressed index {} bytes",
            self.compressed_index.bytes
        )?;
        for delta in &self.index_deltas {
            writeln!(
                f,
                "  index delta      from {}: {} bytes",
                delta.from, delta.bytes
            )?;
        }
        writeln!(
            f,
            "  release size     {} compressed bytes",
            self.release_compressed_bytes
        )?;
        writeln!(
            f,
            "  dedup ratio      {:.2}x (image bytes per new stored byte)",
            self.dedup_ratio()
        )?;
        write!(
            f,
            "  throughput       {:.1} MiB/s ({:.2} s)",
            self.throughput_mib_s(),
            self.seconds
        )
    }
}

/// `SOURCE_DATE_EPOCH` is not a number of seconds.
#[derive(Debug, thiserror::Error)]
#[error("SOURCE_DATE_EPOCH {0:?} is not a number of seconds")]
pub struct BadSourceDateEpoch(pub String);

/// The creation time to write into an index: `SOURCE_DATE_EPOCH` when set (reproducible
/// builds), else `now`.
pub fn creation_time(source_date_epoch: Option<&str>, now: u64) -> Result<u64, BadSourceDateEpoch> {
    match source_date_epoch {
        Some(epoch) => epoch
            .trim()
            .parse()
            .map_err(|_| BadSourceDateEpoch(epoch.to_owned())),
        None => Ok(now),
    }
}
