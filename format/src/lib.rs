//! The diffota wire format, shared by the publishing tool and the device: chunk ids and
//! chunking parameters, the binary release index, channel files and signature checks.
//! Pure code: no files, no network, no async.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod channel;
pub mod chunk;
pub mod frame_choice;
pub mod frame_codec;
pub mod index;
pub mod index_deltas;
pub mod limits;
pub mod manifest;
pub mod ranges;
pub mod releases_before;
pub mod signature;
pub mod version;

pub use channel::Channel;
pub use chunk::{
    hex32, parse_hex32, Chunk, ChunkData, ChunkId, ChunkerKind, ChunkerParams, VerifiedChunk,
};
pub use index::{ChunkEntry, Index, PackRef};
pub use manifest::{InstallKind, Manifest, ManifestImage};
pub use signature::{SignedIndex, TrustedKeys, VerifiedIndex};
pub use version::compare_versions;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a diffota index (bad magic)")]
    BadMagic,
    #[error("index format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u16),
    #[error("index truncated at byte {at} ({wanted} more bytes expected)")]
    Truncated { at: usize, wanted: usize },
    #[error("index has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("corrupt index: {0}")]
    Corrupt(#[from] index::IndexProblem),
    #[error("unknown chunker kind {0}")]
    UnknownChunker(u8),
    #[error("invalid chunker sizes min {min}, avg {avg}, max {max}")]
    BadChunkerParams { min: u32, avg: u32, max: u32 },
    #[error("invalid version {0:?}: 1 to 128 characters of letters, digits and ._+~-")]
    BadVersion(String),
    #[error("invalid compatible string {0:?}: 1 to 255 printable ASCII characters")]
    BadCompatible(String),
    #[error("invalid hex id {0:?}")]
    BadHex(String),
    #[error("chunk {expected}: hash mismatch (got {actual})")]
    ChunkMismatch { expected: ChunkId, actual: ChunkId },
    #[error("public key {label}: {reason}")]
    BadPublicKey {
        label: String,
        #[source]
        reason: minisign_verify::Error,
    },
    #[error("{what}: unreadable signature file: {reason}")]
    BadSignatureFile {
        what: String,
        #[source]
        reason: minisign_verify::Error,
    },
    #[error("{what}: signature does not verify: {reason}")]
    SignatureInvalid {
        what: String,
        #[source]
        reason: minisign_verify::Error,
    },
    #[error("{what}: signed by key {signed_by}, which is not trusted (trusted: {trusted}); trust its public key (public_keys in the device config, --public-key for chunk-server) or sign with a trusted key")]
    UntrustedKey {
        what: String,
        signed_by: String,
        trusted: String,
    },
    #[error("no trusted public keys configured")]
    NoTrustedKeys,
    #[error("channel file: {0}")]
    BadChannel(#[from] channel::ChannelProblem),
    #[error("bundle: {0}")]
    BadBundle(#[from] bundle::BundleFormatError),
    #[error("release manifest: {0}")]
    BadManifest(#[from] manifest::ManifestProblem),
}
