//! `chunk-server verify`: checks that a store can serve its releases: each index's signature,
//! each pack present with the length the index says and the hash its name says, and every
//! chunk decompressing to bytes with its id. Every problem is collected and named.

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

/// Verifies `version` (or every release); `keys` = None skips signature checks.
pub fn verify_store(
    store: &Store,
    version: Option<&str>,
    keys: Option<&TrustedKeys>,
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
        let to_check: Vec<_> = index
            .chunks
            .iter()
            .filter(|c| {
                usable_packs[c.pack as usize]
                    && chunks_seen.insert((index.packs[c.pack as usize].id, c.pack_offset))
            })
            .collect();
        report.chunks += to_check.len() as u64;
        let problems: Vec<String> = to_check
            .par_iter()
            .filter_map(|chunk| {
                let pack = &index.packs[chunk.pack as usize];
                check_chunk(store, pack, chunk).err().map(|reason| {
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
        report.problems.extend(problems);
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

fn check_chunk(
    store: &Store,
    pack: &PackRef,
    chunk: &diffota_format::ChunkEntry,
) -> Result<(), String> {
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
    ChunkData(data)
        .verify(&chunk.id)
        .map(|_| ())
        .map_err(|_| "hash mismatch".to_owned())
}
