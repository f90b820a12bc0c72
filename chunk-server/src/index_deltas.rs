//! Index deltas (`diffota_format::index_deltas`): beside a new release's index, `make` writes
//! `<name>.didx.from-<version>` for the newest older releases of the same name in the store,
//! each the new index compressed against that release's index. A device that stores the
//! index of the release it runs (every device that installed it through diffota) fetches
//! the delta instead of the whole index; the rebuilt bytes must still verify against the
//! index's signature.
//!
//! Only the newest [`MAX_INDEX_DELTAS`] older releases get one: each costs one read of an
//! old index and one compression. Devices further behind, and devices that store no index
//! (factory-flashed, never provisioned), take the compressed index, `<name>.didx.zst`
//! (the same format against the empty base).

use std::path::{Path, PathBuf};

use diffota_format::compare_versions;
use diffota_format::index_deltas::{self, compressed_index_path, delta_path};

use crate::fsutil::write_atomic;
use crate::store::{io_error, Store, StoreError};

/// Older releases an index delta is written against, newest first.
pub const MAX_INDEX_DELTAS: usize = 4;

/// zstd level of index deltas and the compressed index: the table is small, and most of
/// what it costs is the ids of new chunks, which no level compresses; 19 still saves a few
/// percent over 12.
const INDEX_DELTA_LEVEL: i32 = 19;

/// One index delta written (or already in place).
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexDeltaFile {
    pub from: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Writes the index deltas of the release `version` (whose index is `index_bytes`) against
/// the newest older releases of `name`. One already present is left as it is (a rerun).
pub fn write_index_deltas(
    store: &Store,
    name: &str,
    version: &str,
    index_bytes: &[u8],
) -> Result<Vec<IndexDeltaFile>, StoreError> {
    let index_path = store.index_path(version, name);
    let mut older: Vec<_> = store
        .releases()?
        .into_iter()
        .filter(|r| r.name == name && compare_versions(&r.version, version).is_lt())
        .collect();
    older.reverse(); // newest first
    older.truncate(MAX_INDEX_DELTAS);
    let mut written = Vec::new();
    for base in older {
        let path = PathBuf::from(delta_path(&index_path.to_string_lossy(), &base.version));
        let bytes = write_once(&path, index_bytes, || {
            diffota_files::local_file::read_bounded(
                &base.path,
                diffota_format::limits::INDEX,
                diffota_files::local_file::Links::Follow,
            )
            .map_err(io_error(&base.path))
        })?;
        written.push(IndexDeltaFile {
            from: base.version,
            path,
            bytes,
        });
    }
    Ok(written)
}

/// The compressed index written beside a release's index (or already in place).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompressedIndexFile {
    pub path: PathBuf,
    pub bytes: u64,
}

/// Writes the compressed index of the release `version` (whose index is `index_bytes`),
/// `<name>.didx.zst`. One already present is left as it is (a rerun).
pub fn write_compressed_index(
    store: &Store,
    name: &str,
    version: &str,
    index_bytes: &[u8],
) -> Result<CompressedIndexFile, StoreError> {
    let index_path = store.index_path(version, name);
    let path = PathBuf::from(compressed_index_path(&index_path.to_string_lossy()));
    let bytes = write_once(&path, index_bytes, || Ok(Vec::new()))?;
    Ok(CompressedIndexFile { path, bytes })
}

/// Writes at `path` the index delta of `index_bytes` against the base `base` returns
/// (empty: the compressed index) unless a file is already there (a rerun); returns the
/// file's length.
fn write_once(
    path: &Path,
    index_bytes: &[u8],
    base: impl FnOnce() -> Result<Vec<u8>, StoreError>,
) -> Result<u64, StoreError> {
    if !path.exists() {
        let delta = index_deltas::encode(&base()?, index_bytes, INDEX_DELTA_LEVEL)
            .map_err(io_error(path))?;
        write_atomic(path, &delta).map_err(io_error(path))?;
    }
    Ok(fs_err::metadata(path).map_err(io_error(path))?.len())
}
