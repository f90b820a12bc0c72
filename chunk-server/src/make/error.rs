//! What can stop a make.

use std::path::PathBuf;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: image is empty")]
    EmptyImage { path: PathBuf },
    #[error("{path}: reading image: {source}")]
    ReadImage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: release {version} already exists with different content (releases are immutable; pick a new version)")]
    ReleaseExists { path: PathBuf, version: String },
    #[error("compressing chunk at offset {offset}: {source}")]
    Compress { offset: u64, source: std::io::Error },
    #[error("compressing the delta frame from chunk {first_chunk}: {source}")]
    CompressDelta {
        first_chunk: u32,
        source: std::io::Error,
    },
    #[error("{0}")]
    Format(#[from] diffota_format::FormatError),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// A release of several images that cannot be made as asked.
    #[error("{0}")]
    Images(String),
}
