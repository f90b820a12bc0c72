//! `chunk-server verify`: checks that devices will accept the store's releases: each index's
//! signature and expiry, each pack present with the length the index says and the hash its
//! name says, every chunk decompressing to bytes with its id, and the chunks in order hashing
//! to the index's whole-image hash (what a device checks when it reads the slot back). Every
//! problem is collected and named.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;

use diffota_format::{ChunkData, Index, PackRef, TrustedKeys};
use rayon::prelude::*;

use crate::store::{Store, StoreError};

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub releases: u64,
    pub packs: u64,
    pub chunks: u64,
    pub problems: Vec<String>,
}

/// Chunks decompressed at once while hashing an image in order: bounds memory to a few MiB.
const CHUNKS_PER_BATCH: usize = 64;

/// Verifies `version` (or every release) as of `now` (seconds since the epoch); `keys` = None
/// skips signature checks.
pub fn verify_store(
    store: &Store,
    version: Option<&str>,
    keys: Option<&TrustedKeys>,
    now: u64,
) -> Result<VerifyReport, StoreError> {
    let releases = match version {
        Some(version) => store.releases_of(version)?,
        None => store.releases()?,
    };
    let mut report = VerifyReport::default();
    let mut packs_seen: HashMap<[u8; 32], bool> = HashMap::new();
    let mut chunks_seen = HashSet::new();
    for release in releases {
        report.releases += 1;
        let shown = release
            .path
            .strip_prefix(store.root())
            .unwrap_or(&release.path)
            .display()
            .to_string();
        let bytes = match fs_err::read(&release.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                report.problems.push(format!("{shown}: {e}"));
                continue;
            }
        };
        if let Some(keys) = keys {
            let signature_path = format!("{}.minisig", release.path.display());
            match fs_err::read_to_string(&signature_path) {
                Err(e) => report.problems.push(format!("{shown}.minisig: {e}")),
                Ok(signature) => {
                    if let Err(e) = keys.verify(&shown, &bytes, &signature) {
                        report.problems.push(e.to_string());
                    }
                }
            }
        }
        let index = match Index::decode(&bytes) {
            Ok(index) => index,
            Err(e) => {
                report.problems.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let mut usable_packs = vec![false; index.packs.len()];
        for (number, pack) in index.packs.iter().enumerate() {
            usable_packs[number] = *packs_seen.entry(pack.id).or_insert_with(|| {
                report.packs += 1;
                match check_pack(store, pack) {
                    Ok(()) => true,
                    Err(problem) => {
                        report.problems.push(problem);
                        false
                    }
                }
            });
        }
        if let Some(expires) = index.expires.filter(|&expires| expires <= now) {
            report.problems.push(format!(
                "{shown}: expired at {} (devices refuse it)",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires)
                )
            ));
        }
        // Every chunk in image order: its bytes (checked against its id the first time the
        // store's copy is seen) feed the whole-image hash.
        let mut image = blake3::Hasher::new();
        let mut image_complete = true;
        for batch in index.chunks.chunks(CHUNKS_PER_BATCH) {
            let first_seen: Vec<bool> = batch
                .iter()
                .map(|c| {
                    usable_packs[c.pack as usize]
                        && chunks_seen.insert((index.packs[c.pack as usize].id, c.pack_offset))
                })
                .collect();
            report.chunks += first_seen.iter().filter(|&&first| first).count() as u64;
            let results: Vec<Result<Vec<u8>, String>> = batch
                .par_iter()
                .zip(first_seen.par_iter())
                .map(|(chunk, &first)| {
                    if !usable_packs[chunk.pack as usize] {
                        return Err(String::new());
                    }
                    let pack = &index.packs[chunk.pack as usize];
                    read_chunk(store, pack, chunk, first).map_err(|reason| {
                        format!(
                            "{shown}: chunk {} (image offset {}) in {} at offset {}: {reason}",
                            chunk.id,
                            chunk.offset,
                            pack.store_path(),
                            chunk.pack_offset
                        )
                    })
                })
                .collect();
            for (result, &first) in results.into_iter().zip(&first_seen) {
                match result {
                    Ok(data) => {
                        image.update(&data);
                    }
                    Err(problem) => {
                        image_complete = false;
                        if first && !problem.is_empty() {
                            report.problems.push(problem);
                        }
                    }
                }
            }
        }
        if image_complete && image.finalize().as_bytes() != &index.image_hash {
            report.problems.push(format!(
                "{shown}: its chunks in order do not hash to the index's image hash (devices reject the written slot)"
            ));
        }
    }
    Ok(report)
}

fn check_pack(store: &Store, pack: &PackRef) -> Result<(), String> {
    let path = store.pack_path(pack);
    let name = pack.store_path();
    let mut file = fs_err::File::open(&path).map_err(|e| format!("{name}: missing pack: {e}"))?;
    let mut hasher = blake3::Hasher::new();
    let length = std::io::copy(&mut file, &mut hasher).map_err(|e| format!("{name}: {e}"))?;
    if length != pack.length {
        return Err(format!(
            "{name}: length {length}, index says {}",
            pack.length
        ));
    }
    if hasher.finalize().as_bytes() != &pack.id {
        return Err(format!(
            "{name}: content does not match its name (corrupt pack)"
        ));
    }
    Ok(())
}

/// The chunk's bytes from its pack; `check_id` also checks them against the chunk's id.
fn read_chunk(
    store: &Store,
    pack: &PackRef,
    chunk: &diffota_format::ChunkEntry,
    check_id: bool,
) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(store.pack_path(pack)).map_err(|e| e.to_string())?;
    let mut frame = vec![0u8; chunk.compressed_length as usize];
    file.read_exact_at(&mut frame, chunk.pack_offset)
        .map_err(|e| e.to_string())?;
    let data =
        zstd::bulk::decompress(&frame, chunk.length as usize).map_err(|e| format!("zstd: {e}"))?;
    if data.len() != chunk.length as usize {
        return Err(format!(
            "decompressed to {} bytes, expected {}",
            data.len(),
            chunk.length
        ));
    }
    if !check_id {
        return Ok(data);
    }
    ChunkData(data)
        .verify(&chunk.id)
        .map(|verified| verified.into_bytes())
        .map_err(|_| "hash mismatch".to_owned())
}
