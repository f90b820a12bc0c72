//! The store: a directory of static files (see DESIGN.md, "Store layout"). This module
//! knows the paths and reads what is there; `make`, `verify` and `prune` change it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use diffota_format::{ChunkId, Index, PackRef};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format {
        path: PathBuf,
        source: diffota_format::FormatError,
    },
    #[error("{0}: no such store (not a directory)")]
    NotAStore(PathBuf),
    #[error("store {0} has no release {1} (it has: {2}); make it first with `chunk-server make`")]
    NoSuchRelease(PathBuf, String, String),
    #[error("{path}: frame at offset {offset}: {source}")]
    Frame {
        path: PathBuf,
        offset: u64,
        #[source]
        source: ChunkProblem,
    },
}

/// Why a chunk's frame in a pack does not give the chunk.
#[derive(Debug, thiserror::Error)]
pub enum ChunkProblem {
    #[error("{0}")]
    Unreadable(#[source] std::io::Error),
    #[error("zstd: {0}")]
    Zstd(#[source] std::io::Error),
    #[error("decompressed to {actual} bytes, expected {expected}")]
    Length { actual: usize, expected: u32 },
    #[error("hash mismatch")]
    Hash,
}

/// The `length` bytes of the zstd frame at `offset` of an open pack.
pub fn read_frame(
    pack: &std::fs::File,
    offset: u64,
    compressed_length: u32,
    length: u32,
) -> Result<Vec<u8>, ChunkProblem> {
    use std::os::unix::fs::FileExt;
    let mut frame = vec![0u8; compressed_length as usize];
    pack.read_exact_at(&mut frame, offset)
        .map_err(ChunkProblem::Unreadable)?;
    let data = zstd::bulk::decompress(&frame, length as usize).map_err(ChunkProblem::Zstd)?;
    if data.len() != length as usize {
        return Err(ChunkProblem::Length {
            actual: data.len(),
            expected: length,
        });
    }
    Ok(data)
}

/// `read_frame`, checked against the chunk's id.
pub fn read_chunk_checked(
    pack: &std::fs::File,
    id: &diffota_format::ChunkId,
    offset: u64,
    compressed_length: u32,
    length: u32,
) -> Result<Vec<u8>, ChunkProblem> {
    let data = read_frame(pack, offset, compressed_length, length)?;
    diffota_format::ChunkData(data)
        .verify(id)
        .map(|chunk| chunk.into_bytes())
        .map_err(|_| ChunkProblem::Hash)
}

pub fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a chunk's compressed bytes already live in the store.
#[derive(Clone, Copy, Debug)]
pub struct ChunkLocation {
    pub pack: PackRef,
    pub pack_offset: u64,
    pub compressed_length: u32,
}

/// One release index file in the store.
#[derive(Clone, Debug)]
pub struct ReleaseFile {
    pub version: String,
    pub name: String,
    pub path: PathBuf,
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's lock file. `make`, `prune`, `bundle --store` and `channel set` hold it
    /// for their whole run, so that two makes of one version, or a prune and a make, never
    /// interleave; readers (`verify`, `diff`, a web server) do not take it. It is an
    /// advisory `flock`: it serialises runs on one host, and on a network file system only
    /// where that file system carries `flock` between hosts (NFSv4 does; otherwise run
    /// publishing from one host).
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// Takes the store's lock for `operation`, waiting for another run to end (`waiting` is
    /// told who holds it). Creates the store directory when it is missing.
    pub fn lock(
        &self,
        operation: &str,
        waiting: impl FnOnce(&str),
    ) -> Result<diffota_files::lock::FileLock, StoreError> {
        let path = self.lock_path();
        fs_err::create_dir_all(&self.root).map_err(io_error(&self.root))?;
        diffota_files::lock::FileLock::acquire_waiting(&path, operation, waiting)
            .map_err(io_error(&path))
    }

    pub fn packs_dir(&self) -> PathBuf {
        self.root.join("packs")
    }

    pub fn pack_path(&self, pack: &PackRef) -> PathBuf {
        self.root.join(pack.store_path())
    }

    pub fn index_path(&self, version: &str, name: &str) -> PathBuf {
        self.root
            .join("releases")
            .join(version)
            .join(format!("{name}.didx"))
    }

    /// `releases/<version>/release.json`: the manifest of a release of several images.
    pub fn manifest_path(&self, version: &str) -> PathBuf {
        self.root
            .join("releases")
            .join(version)
            .join(diffota_format::manifest::MANIFEST_FILE)
    }

    pub fn channel_path(&self, channel: &str) -> PathBuf {
        self.root.join("channels").join(format!("{channel}.json"))
    }

    /// Every `releases/<version>/<name>.didx`, sorted by version (in the release version
    /// order, equal-ranking versions such as `1.0` and `1.0.0` by their text) then name.
    pub fn releases(&self) -> Result<Vec<ReleaseFile>, StoreError> {
        let releases_dir = self.root.join("releases");
        let mut found = Vec::new();
        if !releases_dir.exists() {
            return Ok(found);
        }
        for entry in fs_err::read_dir(&releases_dir).map_err(io_error(&releases_dir))? {
            let entry = entry.map_err(io_error(&releases_dir))?;
            let version = entry.file_name().to_string_lossy().into_owned();
            if version.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let dir = entry.path();
            for file in fs_err::read_dir(&dir).map_err(io_error(&dir))? {
                let path = file.map_err(io_error(&dir))?.path();
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Some(name) = file_name.strip_suffix(".didx") {
                    if !name.starts_with('.') {
                        found.push(ReleaseFile {
                            version: version.clone(),
                            name: name.to_owned(),
                            path,
                        });
                    }
                }
            }
        }
        found.sort_by(|a, b| {
            diffota_format::compare_versions(&a.version, &b.version)
                .then_with(|| a.version.cmp(&b.version))
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(found)
    }

    pub fn releases_of(&self, version: &str) -> Result<Vec<ReleaseFile>, StoreError> {
        let matching: Vec<_> = self
            .releases()?
            .into_iter()
            .filter(|r| r.version == version)
            .collect();
        if matching.is_empty() {
            return Err(self.no_such_release(version));
        }
        Ok(matching)
    }

    /// The error for a release the store lacks, listing the releases it has.
    pub fn no_such_release(&self, release: &str) -> StoreError {
        let known: Vec<String> = self
            .releases()
            .unwrap_or_default()
            .into_iter()
            .map(|r| format!("{} ({})", r.version, r.name))
            .collect();
        let known = if known.is_empty() {
            "no releases".to_owned()
        } else {
            known.join(", ")
        };
        StoreError::NoSuchRelease(self.root.clone(), release.to_owned(), known)
    }

    /// The index deltas beside a release's index (`<name>.didx.from-<version>`), as (base
    /// version, path), sorted by path.
    pub fn index_deltas_of(
        &self,
        release: &ReleaseFile,
    ) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let dir = release.path.parent().unwrap_or(&self.root);
        let prefix = format!("{}.didx.from-", release.name);
        let mut found = Vec::new();
        for entry in fs_err::read_dir(dir).map_err(io_error(dir))? {
            let path = entry.map_err(io_error(dir))?.path();
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(from) = file_name.strip_prefix(&prefix) {
                if diffota_format::index::validate_version(from).is_ok() {
                    found.push((from.to_owned(), path));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Where every chunk of every release already in the store lives.
    pub fn known_chunks(&self) -> Result<HashMap<ChunkId, ChunkLocation>, StoreError> {
        let mut known = HashMap::new();
        for release in self.releases()? {
            let index = read_index(&release.path)?;
            for chunk in &index.chunks {
                known.entry(chunk.id).or_insert(ChunkLocation {
                    pack: index.packs[chunk.pack as usize],
                    pack_offset: chunk.pack_offset,
                    compressed_length: chunk.compressed_length,
                });
            }
        }
        Ok(known)
    }
}

/// Reads and decodes an index file without checking its signature (the store's own files,
/// on the build host).
pub fn read_index(path: &Path) -> Result<Index, StoreError> {
    let bytes = diffota_files::local_file::read_bounded(
        path,
        diffota_format::limits::INDEX,
        diffota_files::local_file::Links::Follow,
    )
    .map_err(io_error(path))?;
    Index::decode(&bytes).map_err(|source| StoreError::Format {
        path: path.to_owned(),
        source,
    })
}

/// Reads and parses a release manifest without checking its signature (the store's own
/// files, on the build host).
pub fn read_manifest(path: &Path) -> Result<diffota_format::Manifest, StoreError> {
    let bytes = diffota_files::local_file::read_bounded(
        path,
        diffota_format::manifest::MAX_MANIFEST_BYTES as u64,
        diffota_files::local_file::Links::Follow,
    )
    .map_err(io_error(path))?;
    diffota_format::Manifest::parse(&bytes).map_err(|source| StoreError::Format {
        path: path.to_owned(),
        source,
    })
}
