//! `chunk-server verify`: checks that devices will accept the store's releases: each index's
//! signature and expiry, each pack present with the length the index says and the hash its
//! name says, every chunk decompressing to bytes with its id, and the chunks in order hashing
//! to the index's whole-image hash (what a device checks when it reads the slot back), and
//! every delta frame decoding against its bases to chunks with their ids. Every problem is
//! collected and named.

use diffota_files::local_file::{self, Links};
use diffota_format::limits;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;

use diffota_format::index::DeltaFrame;
use diffota_format::signature::{signature_of, signature_path};
use diffota_format::{ChunkEntry, FormatError, Index, PackRef, TrustedKeys};
use rayon::prelude::*;

pub use crate::store::ChunkProblem;
use crate::store::{read_chunk_checked, read_frame, ChunkLocation, Store, StoreError};
use diffota_format::frame_codec::decompress_with_prefix;

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub releases: u64,
    pub packs: u64,
    pub chunks: u64,
    pub delta_frames: u64,
    pub channels: u64,
    /// Delta frames with a base in no release of the store: their base release was pruned.
    /// They cannot be checked here and are no problem: a device uses a frame only when it
    /// holds every base (re-hashed), so only devices still on the removed release use them,
    /// and every other device takes the chunks' plain frames.
    pub frames_on_removed_releases: u64,
    pub index_deltas: u64,
    pub compressed_indexes: u64,
    #[serde(serialize_with = "as_text")]
    pub problems: Vec<Problem>,
}

/// One reason a device would reject a release of the store, named by the file it is in.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{file}: {source}")]
    Unreadable {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Signature(#[source] FormatError),
    #[error("{file}: {source}")]
    Index {
        file: String,
        #[source]
        source: FormatError,
    },
    #[error("{pack}: {source}")]
    Pack {
        pack: String,
        #[source]
        source: PackProblem,
    },
    #[error("{file}: expired at {} (devices refuse it)", humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*.at)))]
    Expired { file: String, at: u64 },
    #[error(
        "{file}: chunk {id} (image offset {offset}) in {pack} at offset {pack_offset}: {source}"
    )]
    Chunk {
        file: String,
        id: diffota_format::ChunkId,
        offset: u64,
        pack: String,
        pack_offset: u64,
        #[source]
        source: ChunkProblem,
    },
    #[error("{file}: its chunks in order do not hash to the index's image hash (devices reject the written slot)")]
    ImageHash { file: String },
    #[error(
        "{file}: does not rebuild the index of its release from the index of {from}: {problem}"
    )]
    IndexDelta {
        file: String,
        from: String,
        problem: IndexDeltaProblem,
    },
    #[error("{file}: does not rebuild the index of its release: {problem}")]
    CompressedIndex {
        file: String,
        problem: IndexDeltaProblem,
    },
    #[error("{file}: {problem} (chunk-server pull fails on it)")]
    ReleasesBefore { file: String, problem: String },
    #[error("{file}: {problem}")]
    Channel {
        file: String,
        problem: Box<ChannelProblem>,
    },
    #[error("{file}: {problem}")]
    Manifest { file: String, problem: String },
    #[error("{file}: delta frame {frame} in {pack} at offset {pack_offset}: {source}")]
    DeltaFrame {
        file: String,
        frame: usize,
        pack: String,
        pack_offset: u64,
        #[source]
        source: DeltaProblem,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DeltaProblem {
    #[error("base {0} is in no release of the store, so the frame cannot be checked")]
    BaseMissing(diffota_format::ChunkId),
    #[error("base {id}: {source}")]
    Base {
        id: diffota_format::ChunkId,
        #[source]
        source: ChunkProblem,
    },
    #[error("{0}")]
    Unreadable(#[source] std::io::Error),
    #[error("zstd against its bases: {0}")]
    Zstd(#[source] std::io::Error),
    #[error("rebuilds chunk {0} wrongly (hash mismatch)")]
    Hash(diffota_format::ChunkId),
}

/// Why devices would refuse a channel file.
#[derive(Debug, thiserror::Error)]
pub enum ChannelProblem {
    #[error("{0}")]
    Unreadable(#[source] std::io::Error),
    #[error("signature: {0} (devices refuse the channel)")]
    Signature(#[source] FormatError),
    #[error("{0}")]
    Format(#[source] FormatError),
    #[error("expired at {} (devices refuse it; publish it again with `chunk-server channel set`)", humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*.0)))]
    Expired(u64),
    #[error("names {index}, which is not in the store")]
    MissingRelease { index: String },
    #[error(
        "names release {named} ({named_compatible}), but {index} is {actual} ({actual_compatible})"
    )]
    Mismatch {
        index: String,
        named: String,
        named_compatible: String,
        actual: String,
        actual_compatible: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum IndexDeltaProblem {
    #[error("{0}")]
    Unreadable(#[source] std::io::Error),
    #[error("{0}")]
    Decode(#[source] diffota_format::index_deltas::IndexDeltaError),
    #[error("it rebuilds other bytes")]
    Differs,
}

#[derive(Debug, thiserror::Error)]
pub enum PackProblem {
    #[error("missing pack: {0}")]
    Missing(#[source] std::io::Error),
    #[error("{0}")]
    Unreadable(#[source] std::io::Error),
    #[error("length {actual}, index says {expected}")]
    Length { actual: u64, expected: u64 },
    #[error("content does not match its name (corrupt pack)")]
    Content,
}

fn as_text<S: serde::Serializer>(problems: &[Problem], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(problems.iter().map(|p| p.to_string()))
}

/// Chunks decompressed at once while hashing an image in order: bounds memory to a few MiB.
const CHUNKS_PER_BATCH: usize = 64;

/// What has been checked already across the releases of one run: each pack and each stored
/// chunk is checked once, however many releases use it.
#[derive(Default)]
struct Seen {
    packs: HashMap<[u8; 32], bool>,
    chunks: HashSet<([u8; 32], u64)>,
}

/// Verifies `version` (or every release) as of `now` (seconds since the epoch); `keys` = None
/// skips signature checks.
pub fn verify_store(
    store: &Store,
    version: Option<&str>,
    keys: Option<&TrustedKeys>,
    now: u64,
) -> Result<VerifyReport, StoreError> {
    // A path that is not a store (a typo in a CI script) is an error, not "0 problems".
    if !store.root().is_dir() {
        return Err(StoreError::NotAStore(store.root().to_owned()));
    }
    let releases = match version {
        Some(version) => store.releases_of(version)?,
        None => store.releases()?,
    };
    let mut report = VerifyReport::default();
    let mut seen = Seen::default();
    let mut known = None;
    for release in releases {
        report.releases += 1;
        let file = release
            .path
            .strip_prefix(store.root())
            .unwrap_or(&release.path)
            .display()
            .to_string();
        let Some(index) = read_index(&release.path, &file, keys, &mut report.problems) else {
            continue;
        };
        if let Some(at) = index.expires.filter(|&expires| expires <= now) {
            report.problems.push(Problem::Expired {
                file: file.clone(),
                at,
            });
        }
        let usable_packs = check_packs(store, &index, &mut seen, &mut report);
        check_image(store, &index, &file, &usable_packs, &mut seen, &mut report);
        if !index.deltas.frames.is_empty() {
            let known = known.get_or_insert(store.known_chunks()?);
            check_deltas(store, &index, &file, &usable_packs, known, &mut report);
        }
        check_index_deltas(store, &release, &mut report)?;
        check_releases_before(store, &release, &mut report);
    }
    check_manifests(store, version, keys, &mut report)?;
    if version.is_none() {
        check_channels(store, keys, now, &mut report);
    }
    Ok(report)
}

/// Each `releases/<version>/release.json`: signed, and pinning indexes that are there with
/// the length, hash, version and compatible it says (what a device checks before it acts).
fn check_manifests(
    store: &Store,
    version: Option<&str>,
    keys: Option<&TrustedKeys>,
    report: &mut VerifyReport,
) -> Result<(), StoreError> {
    let mut versions: Vec<String> = store.releases()?.into_iter().map(|r| r.version).collect();
    versions.dedup();
    for release in versions
        .iter()
        .filter(|v| version.is_none_or(|want| want == *v))
    {
        let path = store.manifest_path(release);
        if !path.exists() {
            continue;
        }
        let file = diffota_format::Manifest::path(release);
        if let Err(problem) = check_manifest(store, &path, keys) {
            report.problems.push(Problem::Manifest { file, problem });
        }
    }
    Ok(())
}

fn check_manifest(
    store: &Store,
    path: &std::path::Path,
    keys: Option<&TrustedKeys>,
) -> Result<(), String> {
    let limit = diffota_format::manifest::MAX_MANIFEST_BYTES as u64;
    let bytes = read_store_file(path, limit).map_err(|e| e.to_string())?;
    if let Some(keys) = keys {
        let signature = read_store_file(&signature_path(path), limits::SIGNATURE)
            .map_err(|e| format!("signature: {e}"))?;
        keys.verify(
            "release manifest",
            &bytes,
            &String::from_utf8_lossy(&signature),
        )
        .map_err(|e| format!("{e} (devices refuse the release)"))?;
    }
    let manifest = diffota_format::Manifest::parse(&bytes).map_err(|e| e.to_string())?;
    for image in &manifest.images {
        let index_file = manifest.index_path(image);
        let index_bytes = read_store_file(&store.root().join(&index_file), limits::INDEX)
            .map_err(|e| format!("image {}: {index_file}: {e}", image.name))?;
        let index = Index::decode(&index_bytes)
            .map_err(|e| format!("image {}: {index_file}: {e}", image.name))?;
        if !manifest.pins(image, &index_bytes, &index) {
            return Err(format!(
                "image {}: {index_file} is not the index the manifest pins (length, BLAKE3, image, version or compatible differ; devices refuse the release)",
                image.name
            ));
        }
    }
    Ok(())
}

/// Each `<name>.didx.from-<version>` beside the index must rebuild the index's exact bytes
/// from the index of that release, and `<name>.didx.zst` from nothing. A delta whose base
/// release is no longer in the store (pruned) cannot be checked; devices still running that
/// release may use it.
fn check_index_deltas(
    store: &Store,
    release: &crate::store::ReleaseFile,
    report: &mut VerifyReport,
) -> Result<(), StoreError> {
    let compressed = std::path::PathBuf::from(diffota_format::index_deltas::compressed_index_path(
        &release.path.to_string_lossy(),
    ));
    let mut files: Vec<(std::path::PathBuf, IndexBase)> = Vec::new();
    if compressed.exists() {
        files.push((compressed, IndexBase::Empty));
    }
    for (from, path) in store.index_deltas_of(release)? {
        let base_path = store.index_path(&from, &release.name);
        if base_path.exists() {
            files.push((path, IndexBase::Release { from, base_path }));
        }
    }
    for (path, base) in files {
        match base {
            IndexBase::Empty => report.compressed_indexes += 1,
            IndexBase::Release { .. } => report.index_deltas += 1,
        }
        let base_bytes = match &base {
            IndexBase::Release { base_path, .. } => read_store_file(base_path, limits::INDEX),
            IndexBase::Empty => Ok(Vec::new()),
        };
        let problem = match (
            read_store_file(&path, limits::INDEX),
            base_bytes,
            read_store_file(&release.path, limits::INDEX),
        ) {
            (Ok(delta), Ok(base), Ok(index)) => {
                match diffota_format::index_deltas::decode(&delta, &base, index.len() as u64) {
                    Ok(rebuilt) if rebuilt == index => None,
                    Ok(_) => Some(IndexDeltaProblem::Differs),
                    Err(e) => Some(IndexDeltaProblem::Decode(e)),
                }
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                Some(IndexDeltaProblem::Unreadable(e))
            }
        };
        if let Some(problem) = problem {
            let file = path
                .strip_prefix(store.root())
                .unwrap_or(&path)
                .display()
                .to_string();
            report.problems.push(match base {
                IndexBase::Release { from, .. } => Problem::IndexDelta {
                    file,
                    from,
                    problem,
                },
                IndexBase::Empty => Problem::CompressedIndex { file, problem },
            });
        }
    }
    Ok(())
}

/// `<name>.before.json` beside the index, when there is one (releases made before `make`
/// wrote it have none), must be a list `chunk-server pull` reads. The releases it names may
/// be gone (pruned): pull passes those over.
fn check_releases_before(
    store: &Store,
    release: &crate::store::ReleaseFile,
    report: &mut VerifyReport,
) {
    let relative = diffota_format::releases_before::store_path(&release.version, &release.name);
    let path = store.root().join(&relative);
    if !path.exists() {
        return;
    }
    let problem = match read_store_file(&path, diffota_format::releases_before::MAX_BYTES) {
        Ok(bytes) => diffota_format::releases_before::ReleasesBefore::parse(&bytes)
            .err()
            .map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(problem) = problem {
        report.problems.push(Problem::ReleasesBefore {
            file: relative,
            problem,
        });
    }
}

/// What an index delta file rebuilds its release's index from.
enum IndexBase {
    /// Nothing: the compressed index.
    Empty,
    /// The index of the release `from`, at `base_path`.
    Release {
        from: String,
        base_path: std::path::PathBuf,
    },
}

/// Every channel file as a device would take it: its signature (with `keys`), its format,
/// its expiry as of `now`, and the release it names present, with that version and
/// compatible.
fn check_channels(store: &Store, keys: Option<&TrustedKeys>, now: u64, report: &mut VerifyReport) {
    let dir = store.root().join("channels");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut paths: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for path in paths {
        report.channels += 1;
        let file = path
            .strip_prefix(store.root())
            .unwrap_or(&path)
            .display()
            .to_string();
        if let Err(problem) = check_channel(store, &path, &file, keys, now) {
            report.problems.push(Problem::Channel {
                file,
                problem: Box::new(problem),
            });
        }
    }
}

fn check_channel(
    store: &Store,
    path: &std::path::Path,
    file: &str,
    keys: Option<&TrustedKeys>,
    now: u64,
) -> Result<(), ChannelProblem> {
    let bytes = read_store_file(path, limits::CHANNEL).map_err(ChannelProblem::Unreadable)?;
    if let Some(keys) = keys {
        let signature = read_store_file(&signature_path(path), limits::SIGNATURE)
            .map_err(ChannelProblem::Unreadable)?;
        keys.verify(file, &bytes, &String::from_utf8_lossy(&signature))
            .map_err(ChannelProblem::Signature)?;
    }
    let channel = diffota_format::Channel::parse(&bytes).map_err(ChannelProblem::Format)?;
    if channel.expires_at <= now {
        return Err(ChannelProblem::Expired(channel.expires_at));
    }
    let named = &channel.release;
    let index_path = store.root().join(&named.index);
    let index = match read_store_file(&index_path, limits::INDEX) {
        Ok(bytes) if diffota_format::manifest::is_manifest_path(&named.index) => {
            let manifest =
                diffota_format::Manifest::parse(&bytes).map_err(ChannelProblem::Format)?;
            (manifest.version, manifest.compatible)
        }
        Ok(bytes) => {
            let index = Index::decode(&bytes).map_err(ChannelProblem::Format)?;
            (index.version, index.compatible)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ChannelProblem::MissingRelease {
                index: named.index.clone(),
            })
        }
        Err(e) => return Err(ChannelProblem::Unreadable(e)),
    };
    let (actual, actual_compatible) = index;
    if actual != named.version || actual_compatible != named.compatible {
        return Err(ChannelProblem::Mismatch {
            index: named.index.clone(),
            named: named.version.clone(),
            named_compatible: named.compatible.clone(),
            actual,
            actual_compatible,
        });
    }
    Ok(())
}

/// A small file of the store: a regular file within its cap (a FIFO or device under a store
/// name must not hang or fill memory).
fn read_store_file(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    local_file::read_bounded(path, limit, Links::Follow)
}

/// The release's index, its signature checked when `keys` are given; None when unusable.
fn read_index(
    path: &std::path::Path,
    file: &str,
    keys: Option<&TrustedKeys>,
    problems: &mut Vec<Problem>,
) -> Option<Index> {
    let unreadable = |file: String| move |source| Problem::Unreadable { file, source };
    let bytes = match read_store_file(path, limits::INDEX) {
        Ok(bytes) => bytes,
        Err(e) => {
            problems.push(unreadable(file.to_owned())(e));
            return None;
        }
    };
    if let Some(keys) = keys {
        let signature_path = signature_path(path);
        match read_store_file(&signature_path, limits::SIGNATURE)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        {
            Err(e) => problems.push(unreadable(signature_of(file))(e)),
            Ok(signature) => {
                if let Err(e) = keys.verify(file, &bytes, &signature) {
                    problems.push(Problem::Signature(e));
                }
            }
        }
    }
    Index::decode(&bytes)
        .map_err(|source| {
            problems.push(Problem::Index {
                file: file.to_owned(),
                source,
            })
        })
        .ok()
}

/// Checks each pack of the index not seen before; returns, per pack, whether it is usable.
fn check_packs(
    store: &Store,
    index: &Index,
    seen: &mut Seen,
    report: &mut VerifyReport,
) -> Vec<bool> {
    index
        .packs
        .iter()
        .map(|pack| {
            *seen.packs.entry(pack.id).or_insert_with(|| {
                report.packs += 1;
                check_pack(store, pack)
                    .map_err(|source| {
                        report.problems.push(Problem::Pack {
                            pack: pack.store_path(),
                            source,
                        })
                    })
                    .is_ok()
            })
        })
        .collect()
}

/// Every chunk in image order: its bytes (checked against its id the first time the store's
/// copy is seen) feed the whole-image hash, which must be the index's.
fn check_image(
    store: &Store,
    index: &Index,
    file: &str,
    usable_packs: &[bool],
    seen: &mut Seen,
    report: &mut VerifyReport,
) {
    let mut image = blake3::Hasher::new();
    let mut image_complete = true;
    for batch in index.chunks.chunks(CHUNKS_PER_BATCH) {
        let first_seen: Vec<bool> = batch
            .iter()
            .map(|c| {
                usable_packs[c.pack as usize]
                    && seen
                        .chunks
                        .insert((index.packs[c.pack as usize].id, c.pack_offset))
            })
            .collect();
        report.chunks += first_seen.iter().filter(|&&first| first).count() as u64;
        let results: Vec<Option<Result<Vec<u8>, Problem>>> = batch
            .par_iter()
            .zip(first_seen.par_iter())
            .map(|(chunk, &first)| {
                let pack = &index.packs[chunk.pack as usize];
                usable_packs[chunk.pack as usize].then(|| {
                    read_chunk(store, pack, chunk, first).map_err(|source| Problem::Chunk {
                        file: file.to_owned(),
                        id: chunk.id,
                        offset: chunk.offset,
                        pack: pack.store_path(),
                        pack_offset: chunk.pack_offset,
                        source,
                    })
                })
            })
            .collect();
        for (result, &first) in results.into_iter().zip(&first_seen) {
            match result {
                Some(Ok(data)) => {
                    image.update(&data);
                }
                Some(Err(problem)) => {
                    image_complete = false;
                    if first {
                        report.problems.push(problem);
                    }
                }
                // The pack's own problem is reported already.
                None => image_complete = false,
            }
        }
    }
    if image_complete && image.finalize().as_bytes() != &index.image_hash {
        report.problems.push(Problem::ImageHash {
            file: file.to_owned(),
        });
    }
}

/// Every delta frame decoded against its bases (each read from the store and checked
/// against its id), and every chunk it rebuilds checked against its id, as a device would.
fn check_deltas(
    store: &Store,
    index: &Index,
    file: &str,
    usable_packs: &[bool],
    known: &HashMap<diffota_format::ChunkId, ChunkLocation>,
    report: &mut VerifyReport,
) {
    let on_removed = |frame: &DeltaFrame| {
        index
            .deltas
            .dictionary_bases(frame)
            .any(|base| !known.contains_key(&base.id))
    };
    report.frames_on_removed_releases +=
        index.deltas.frames.iter().filter(|f| on_removed(f)).count() as u64;
    let problems: Vec<Problem> = index
        .deltas
        .frames
        .par_iter()
        .enumerate()
        .filter(|(_, frame)| usable_packs[frame.pack as usize] && !on_removed(frame))
        .filter_map(|(number, frame)| {
            let pack = &index.packs[frame.pack as usize];
            check_delta_frame(store, index, frame, known)
                .err()
                .map(|source| Problem::DeltaFrame {
                    file: file.to_owned(),
                    frame: number,
                    pack: pack.store_path(),
                    pack_offset: frame.pack_offset,
                    source,
                })
        })
        .collect();
    report.delta_frames += index.deltas.frames.len() as u64;
    report.problems.extend(problems);
}

fn check_delta_frame(
    store: &Store,
    index: &Index,
    frame: &DeltaFrame,
    known: &HashMap<diffota_format::ChunkId, ChunkLocation>,
) -> Result<(), DeltaProblem> {
    let mut prefix = Vec::new();
    for base in index.deltas.dictionary_bases(frame) {
        let location = known
            .get(&base.id)
            .ok_or(DeltaProblem::BaseMissing(base.id))?;
        let data = std::fs::File::open(store.pack_path(&location.pack))
            .map_err(ChunkProblem::Unreadable)
            .and_then(|pack| {
                read_chunk_checked(
                    &pack,
                    &base.id,
                    location.pack_offset,
                    location.compressed_length,
                    base.length,
                )
            })
            .map_err(|source| DeltaProblem::Base {
                id: base.id,
                source,
            })?;
        prefix.extend_from_slice(&data);
    }
    let pack = &index.packs[frame.pack as usize];
    let file = std::fs::File::open(store.pack_path(pack)).map_err(DeltaProblem::Unreadable)?;
    let mut compressed = vec![0u8; frame.compressed_length as usize];
    file.read_exact_at(&mut compressed, frame.pack_offset)
        .map_err(DeltaProblem::Unreadable)?;
    let chunks: Vec<&ChunkEntry> = frame
        .chunks
        .iter()
        .map(|&n| &index.chunks[n as usize])
        .collect();
    let length: usize = chunks.iter().map(|c| c.length as usize).sum();
    let content =
        decompress_with_prefix(&compressed, &prefix, length).map_err(DeltaProblem::Zstd)?;
    let mut at = 0;
    for chunk in chunks {
        let data = &content[at..at + chunk.length as usize];
        at += chunk.length as usize;
        if diffota_format::ChunkId::of(data) != chunk.id {
            return Err(DeltaProblem::Hash(chunk.id));
        }
    }
    Ok(())
}

fn check_pack(store: &Store, pack: &PackRef) -> Result<(), PackProblem> {
    let path = store.pack_path(pack);
    let mut file = std::fs::File::open(&path).map_err(PackProblem::Missing)?;
    let mut hasher = blake3::Hasher::new();
    let length = std::io::copy(&mut file, &mut hasher).map_err(PackProblem::Unreadable)?;
    if length != pack.length {
        return Err(PackProblem::Length {
            actual: length,
            expected: pack.length,
        });
    }
    if hasher.finalize().as_bytes() != &pack.id {
        return Err(PackProblem::Content);
    }
    Ok(())
}

/// The chunk's bytes from its pack; `check_id` also checks them against the chunk's id.
fn read_chunk(
    store: &Store,
    pack: &PackRef,
    chunk: &ChunkEntry,
    check_id: bool,
) -> Result<Vec<u8>, ChunkProblem> {
    let file = std::fs::File::open(store.pack_path(pack)).map_err(ChunkProblem::Unreadable)?;
    let (offset, compressed, length) = (chunk.pack_offset, chunk.compressed_length, chunk.length);
    if check_id {
        read_chunk_checked(&file, &chunk.id, offset, compressed, length)
    } else {
        read_frame(&file, offset, compressed, length)
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for problem in &self.problems {
            writeln!(f, "BAD {problem}")?;
        }
        if self.frames_on_removed_releases > 0 {
            writeln!(
                f,
                "{} delta frames build on releases no longer in the store (pruned): not checked; only devices still on those releases use them, every other device takes the plain frames",
                self.frames_on_removed_releases
            )?;
        }
        write!(
            f,
            "{} releases, {} packs, {} chunks, {} delta frames, {} index deltas, {} compressed indexes, {} channels checked: {} problems",
            self.releases,
            self.packs,
            self.chunks,
            self.delta_frames - self.frames_on_removed_releases,
            self.index_deltas,
            self.compressed_indexes,
            self.channels,
            self.problems.len()
        )
    }
}
