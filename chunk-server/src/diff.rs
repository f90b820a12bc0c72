//! `chunk-server diff OLD NEW`: what a device that installed OLD through diffota downloads
//! to reach NEW: the index (as its delta against OLD's when the store has one, else
//! compressed), then the
//! delta frames the device would choose and the plain frames of the rest, with the same
//! frame choice (`diffota_format::frames`) and range merging the device uses, so the
//! figures match what the server will see.

use std::collections::HashSet;

use std::path::{Path, PathBuf};

use diffota_format::frame_choice::{choose_delta_frames, with_delta_frames};
use diffota_format::index_deltas::{self, compressed_index_path, delta_path};
use diffota_format::ranges::plan_ranges;
use diffota_format::signature::signature_path;
use diffota_format::Index;

use crate::store::{io_error, StoreError};

#[derive(Debug, PartialEq, serde::Serialize)]
pub struct DiffReport {
    pub from: String,
    pub to: String,
    pub chunks: u64,
    pub reused_chunks: u64,
    pub fetched_chunks: u64,
    pub reused_bytes: u64,
    pub fetched_image_bytes: u64,
    /// Delta frames among what is fetched.
    pub delta_frames: u64,
    /// The index comes as its delta against OLD's.
    pub index_delta: bool,
    /// The index comes compressed (no delta against OLD's).
    pub index_compressed: bool,
    /// Compressed chunk bytes plus merge gaps plus the index (or its delta) and its signature.
    pub download_bytes: u64,
    /// Range requests for chunks plus one each for the index and its signature.
    pub requests: u64,
}

/// Which form of NEW's index a device fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexForm {
    /// The whole index.
    Whole,
    /// Its delta against the index the device stores.
    Delta,
    /// The compressed index (the delta format against the empty base).
    Compressed,
}

/// How a device gets NEW's index: `bytes` (the index, its delta or the compressed index,
/// plus the signature) in `form`.
#[derive(Clone, Copy, Debug)]
pub struct IndexTransfer {
    pub bytes: u64,
    pub form: IndexForm,
}

/// What the index of `new` costs a device that stores the index `old` (of release
/// `old_version`): its delta beside it when that was made against exactly `old`'s bytes,
/// else the compressed index beside it, else the whole index; plus the signature (as the
/// device tries them).
pub fn index_transfer(
    old: &Path,
    new: &Path,
    old_version: &str,
) -> Result<IndexTransfer, StoreError> {
    let signature = signature_path(new);
    let signature_bytes = fs_err::metadata(&signature).map_or(0, |m| m.len());
    let index_bytes = fs_err::metadata(new).map_err(io_error(new))?.len();
    let delta_path = PathBuf::from(delta_path(&new.to_string_lossy(), old_version));
    let compressed_path = PathBuf::from(compressed_index_path(&new.to_string_lossy()));
    if let Some(bytes) = rebuilding_file_len(&delta_path, || read_index_bytes(old), index_bytes)? {
        return Ok(IndexTransfer {
            bytes: bytes + signature_bytes,
            form: IndexForm::Delta,
        });
    }
    if let Some(bytes) = rebuilding_file_len(&compressed_path, || Ok(Vec::new()), index_bytes)? {
        return Ok(IndexTransfer {
            bytes: bytes + signature_bytes,
            form: IndexForm::Compressed,
        });
    }
    Ok(IndexTransfer {
        bytes: index_bytes + signature_bytes,
        form: IndexForm::Whole,
    })
}

fn read_index_bytes(path: &Path) -> Result<Vec<u8>, StoreError> {
    diffota_files::local_file::read_bounded(
        path,
        diffota_format::limits::INDEX,
        diffota_files::local_file::Links::Follow,
    )
    .map_err(io_error(path))
}

/// The length of the index delta (or compressed index) at `path` when it is there and
/// decodes against the base `base` returns; None when it is absent or does not decode (the
/// device then tries the next form).
fn rebuilding_file_len(
    path: &Path,
    base: impl FnOnce() -> Result<Vec<u8>, StoreError>,
    index_bytes: u64,
) -> Result<Option<u64>, StoreError> {
    let Ok(file) = read_index_bytes(path) else {
        return Ok(None);
    };
    let base = base()?;
    Ok(index_deltas::decode(&file, &base, index_bytes)
        .is_ok()
        .then_some(file.len() as u64))
}

pub fn diff(old: &Index, new: &Index, index: IndexTransfer, max_gap: u64) -> DiffReport {
    let held: HashSet<_> = old.chunks.iter().map(|c| (c.id, c.length)).collect();
    let (reused, fetched): (Vec<_>, Vec<_>) = new
        .chunks
        .iter()
        .partition(|c| held.contains(&(c.id, c.length)));
    let fetched: Vec<_> = fetched.into_iter().copied().collect();
    let frames = choose_delta_frames(new, &fetched, |id, length| held.contains(&(*id, length)));
    let ranges = plan_ranges(&with_delta_frames(new, &fetched, &frames), max_gap);
    DiffReport {
        from: old.version.clone(),
        to: new.version.clone(),
        chunks: new.chunks.len() as u64,
        reused_chunks: reused.len() as u64,
        fetched_chunks: fetched.len() as u64,
        reused_bytes: reused.iter().map(|c| u64::from(c.length)).sum(),
        fetched_image_bytes: fetched.iter().map(|c| u64::from(c.length)).sum(),
        delta_frames: frames.len() as u64,
        index_delta: index.form == IndexForm::Delta,
        index_compressed: index.form == IndexForm::Compressed,
        download_bytes: ranges.iter().map(|r| r.length()).sum::<u64>() + index.bytes,
        requests: ranges.len() as u64 + 2,
    }
}

impl std::fmt::Display for DiffReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} -> {}", self.from, self.to)?;
        writeln!(
            f,
            "  chunks           {} ({} reused, {} fetched)",
            self.chunks, self.reused_chunks, self.fetched_chunks
        )?;
        writeln!(
            f,
            "  image bytes      {} reused, {} fetched",
            self.reused_bytes, self.fetched_image_bytes
        )?;
        if self.delta_frames > 0 {
            writeln!(f, "  delta frames     {}", self.delta_frames)?;
        }
        write!(
            f,
            "  download         {} bytes in {} requests ({} included)",
            self.download_bytes,
            self.requests,
            if self.index_delta {
                "index delta"
            } else if self.index_compressed {
                "compressed index"
            } else {
                "index"
            }
        )
    }
}
