//! Index deltas: a release index sent as its changes against the index a device already
//! stores (the one its running slot was installed from), so that a device one release
//! behind fetches a few hundred kilobytes of index instead of the whole table.
//!
//! File `releases/<version>/<name>.didx.from-<base version>`, little-endian:
//!
//! | offset | size | meaning |
//! |---|---|---|
//! | 0 | 8 | magic `DFOTAIXD` |
//! | 8 | 2 | format version, 1 |
//! | 10 | 2 | flags, 0 |
//! | 12 | 32 | BLAKE3 of the base index's bytes |
//! | 44 | 8 | length of the index it rebuilds |
//! | 52 | … | one zstd frame: the index, with the base index as a raw-content prefix |
//!
//! The file is not signed: what it rebuilds must verify against the release index's own
//! signature before anything reads it, so a wrong, stale or tampered delta can only fail,
//! and the device then fetches the whole index.
//!
//! The compressed index, `releases/<version>/<name>.didx.zst`, is the same format against
//! the empty base: what a device that stores no index (factory-flashed and never
//! provisioned, or further behind than the deltas reach) fetches instead of the whole
//! index. The index's chunk table repeats the entries of repeated chunks (the zero runs
//! of a file system image), so it compresses to about 40% on the bench's ext4 images.

use crate::frame_codec::{compress_with_prefix, decompress_with_prefix};

pub const MAGIC: &[u8; 8] = b"DFOTAIXD";
pub const FORMAT_VERSION: u16 = 1;
const HEADER_LENGTH: usize = 52;

/// What the name of an index delta adds to the index's path: `<index>.from-<base version>`.
pub fn delta_path(index_path: &str, base_version: &str) -> String {
    format!("{index_path}.from-{base_version}")
}

/// The compressed index beside `index_path`: `<index>.zst` (an index delta against the
/// empty base).
pub fn compressed_index_path(index_path: &str) -> String {
    format!("{index_path}.zst")
}

/// Decoding a compressed index sets aside the length its header claims, at most this many
/// times the compressed file's length (and at least [`MIN_DECODE_LIMIT`]): a hostile header
/// on a small file cannot claim the device's memory.
pub const MAX_COMPRESSION_RATIO: u64 = 64;

/// The smallest decode limit for a compressed index or a delta (an index of 16 MiB is one
/// of a few hundred thousand chunks).
pub const MIN_DECODE_LIMIT: u64 = 16 * 1024 * 1024;

/// How many bytes a compressed index of `compressed_length` bytes may rebuild, given the
/// largest index the reader accepts (`index_limit`).
pub fn compressed_index_limit(compressed_length: u64, index_limit: u64) -> u64 {
    compressed_length
        .saturating_mul(MAX_COMPRESSION_RATIO)
        .clamp(MIN_DECODE_LIMIT.min(index_limit), index_limit)
}

/// Why an index delta cannot rebuild an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexDeltaError {
    #[error("index delta is {0} bytes, shorter than its header")]
    Truncated(usize),
    #[error("not an index delta (bad magic)")]
    BadMagic,
    #[error("index delta format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u16),
    #[error("index delta has unknown flags {0:#x}")]
    UnknownFlags(u16),
    #[error("index delta was made against another base index (BLAKE3 {expected})")]
    OtherBase { expected: String },
    #[error("index delta rebuilds {length} bytes, more than the limit of {limit}")]
    TooLarge { length: u64, limit: u64 },
    #[error("index delta does not decode: {0}")]
    Zstd(#[source] std::io::Error),
}

/// The index delta that rebuilds `index` from `base`.
pub fn encode(base: &[u8], index: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let frame = compress_with_prefix(index, base, level)?;
    let mut out = Vec::with_capacity(HEADER_LENGTH + frame.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(blake3::hash(base).as_bytes());
    out.extend_from_slice(&(index.len() as u64).to_le_bytes());
    out.extend_from_slice(&frame);
    Ok(out)
}

/// The index bytes `delta` rebuilds from `base`, at most `limit` bytes. The result is not
/// trusted yet: it must verify against the index's signature.
pub fn decode(delta: &[u8], base: &[u8], limit: u64) -> Result<Vec<u8>, IndexDeltaError> {
    if delta.len() < HEADER_LENGTH {
        return Err(IndexDeltaError::Truncated(delta.len()));
    }
    let u16_at = |at: usize| u16::from_le_bytes([delta[at], delta[at + 1]]);
    if &delta[..8] != MAGIC {
        return Err(IndexDeltaError::BadMagic);
    }
    if u16_at(8) != FORMAT_VERSION {
        return Err(IndexDeltaError::UnsupportedVersion(u16_at(8)));
    }
    if u16_at(10) != 0 {
        return Err(IndexDeltaError::UnknownFlags(u16_at(10)));
    }
    if delta[12..44] != *blake3::hash(base).as_bytes() {
        return Err(IndexDeltaError::OtherBase {
            expected: crate::hex32(delta[12..44].try_into().expect("32 bytes")),
        });
    }
    let length = u64::from_le_bytes(delta[44..52].try_into().expect("8 bytes"));
    if length > limit {
        return Err(IndexDeltaError::TooLarge { length, limit });
    }
    decompress_with_prefix(&delta[HEADER_LENGTH..], base, length as usize)
        .map_err(IndexDeltaError::Zstd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_index_is_a_delta_against_the_empty_base() {
        let mut index = table(1, 1000);
        // Repeated entries, as the zero chunks of an image repeat in its chunk table.
        let repeated = index[..36].to_vec();
        for _ in 0..2000 {
            index.extend_from_slice(&repeated);
        }
        let compressed = encode(&[], &index, 19).unwrap();
        assert!(
            compressed.len() < 36 * 1000 + 400,
            "{} bytes",
            compressed.len()
        );
        let limit = compressed_index_limit(compressed.len() as u64, 256 << 20);
        assert_eq!(decode(&compressed, &[], limit).unwrap(), index);
        assert!(matches!(
            decode(&compressed, &table(1, 1), limit),
            Err(IndexDeltaError::OtherBase { .. })
        ));
        assert_eq!(
            compressed_index_path("releases/2/rootfs.didx"),
            "releases/2/rootfs.didx.zst"
        );
    }

    #[test]
    fn a_small_compressed_index_may_not_claim_much_memory() {
        assert_eq!(compressed_index_limit(1000, 256 << 20), MIN_DECODE_LIMIT);
        assert_eq!(compressed_index_limit(1 << 20, 256 << 20), 64 << 20);
        assert_eq!(compressed_index_limit(u64::MAX, 256 << 20), 256 << 20);
        assert_eq!(
            compressed_index_limit(10, 1 << 20),
            1 << 20,
            "never above the index limit"
        );
    }

    fn table(seed: u8, rows: usize) -> Vec<u8> {
        (0..rows)
            .flat_map(|row| {
                let id = blake3::hash(&[seed, row as u8, (row >> 8) as u8]);
                let mut entry = id.as_bytes().to_vec();
                entry.extend_from_slice(&(row as u32).to_le_bytes());
                entry
            })
            .collect()
    }

    #[test]
    fn rebuilds_the_index_and_costs_little_when_most_of_it_is_in_the_base() {
        let base = table(1, 4000);
        let mut index = base.clone();
        index.splice(36 * 100..36 * 100, table(2, 20));
        let delta = encode(&base, &index, 19).unwrap();
        assert!(delta.len() < 36 * 20 + 400, "{} bytes", delta.len());
        assert_eq!(decode(&delta, &base, 1 << 20).unwrap(), index);
    }

    #[test]
    fn refuses_another_base_a_bad_header_and_an_oversized_result() {
        let base = table(1, 100);
        let index = table(2, 100);
        let delta = encode(&base, &index, 3).unwrap();
        assert!(matches!(
            decode(&delta, &table(3, 100), 1 << 20),
            Err(IndexDeltaError::OtherBase { .. })
        ));
        assert!(matches!(
            decode(&delta, &base, 100),
            Err(IndexDeltaError::TooLarge { .. })
        ));
        assert!(matches!(
            decode(&delta[..20], &base, 1 << 20),
            Err(IndexDeltaError::Truncated(20))
        ));
        let mut bad = delta.clone();
        bad[0] ^= 1;
        assert!(matches!(
            decode(&bad, &base, 1 << 20),
            Err(IndexDeltaError::BadMagic)
        ));
        let mut bad = delta.clone();
        bad[8] = 2;
        assert!(matches!(
            decode(&bad, &base, 1 << 20),
            Err(IndexDeltaError::UnsupportedVersion(2))
        ));
        let mut bad = delta.clone();
        bad[44] ^= 1; // the length no longer matches the frame
        assert!(matches!(
            decode(&bad, &base, 1 << 20),
            Err(IndexDeltaError::Zstd(_))
        ));
        let truncated = &delta[..delta.len() - 3];
        assert!(decode(truncated, &base, 1 << 20).is_err());
    }
}
