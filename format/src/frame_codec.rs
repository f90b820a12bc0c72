//! The delta frame codec, shared by `chunk-server make` and the device: a group of new
//! chunks compressed against its bases, the concatenated bases being a raw-content zstd
//! prefix (`ZSTD_CCtx_refPrefix`), so matches reach into old content as if it preceded the
//! group. The window covers the prefix and the group, which is what bounds the decoder.

use zstd::zstd_safe::{self, CParameter};

/// The smallest window log that covers `bytes` (zstd's minimum is 10).
pub fn window_log_for(bytes: usize) -> u32 {
    let mut log = 10;
    while (1usize << log) < bytes {
        log += 1;
    }
    log
}

fn zstd_error(code: zstd_safe::ErrorCode) -> std::io::Error {
    std::io::Error::other(zstd_safe::get_error_name(code))
}

/// From this level up zstd's match finders are the optimal parsers (btopt and up), which
/// find 3-byte matches worth their cost: against bases, where short matches between edits
/// abound, they pay. On the frames of the bench's ext4 pair at level 16 (zstd's default
/// there is 5) they cost 1.6% fewer bytes for 4% more time, 70% of what level 19 saves at a
/// fraction of its time (bench/README.md); level 19 already uses 3.
const SHORT_MATCHES_FROM_LEVEL: i32 = 16;

/// The zstd parameters of a frame of `content_len` bytes against a prefix of `prefix_len`
/// bytes at `level`: every encoder of delta frames sets exactly these, so that frames are
/// the same bytes whichever encoder made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameParameters {
    pub level: i32,
    /// zstd's minimum match length, where it differs from the level's own.
    pub min_match: Option<u32>,
    pub window_log: u32,
}

impl FrameParameters {
    pub fn new(level: i32, prefix_len: usize, content_len: usize) -> FrameParameters {
        FrameParameters {
            level,
            min_match: (level >= SHORT_MATCHES_FROM_LEVEL).then_some(3),
            window_log: window_log_for(prefix_len + content_len),
        }
    }

    /// The parameters in the order they are set (after the level; the content size is
    /// always written into the frame header).
    pub fn as_cparameters(&self) -> Vec<CParameter> {
        let mut parameters = vec![CParameter::CompressionLevel(self.level)];
        if let Some(min_match) = self.min_match {
            parameters.push(CParameter::MinMatch(min_match));
        }
        parameters.push(CParameter::WindowLog(self.window_log));
        parameters.push(CParameter::ContentSizeFlag(true));
        parameters
    }
}

/// One zstd frame of `content`, with `prefix` (the concatenated bases; may be empty) as its
/// dictionary.
pub fn compress_with_prefix(content: &[u8], prefix: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut cctx = zstd_safe::CCtx::create();
    for parameter in FrameParameters::new(level, prefix.len(), content.len()).as_cparameters() {
        cctx.set_parameter(parameter).map_err(zstd_error)?;
    }
    if !prefix.is_empty() {
        cctx.ref_prefix(prefix).map_err(zstd_error)?;
    }
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(content.len()));
    cctx.compress2(&mut out, content).map_err(zstd_error)?;
    Ok(out)
}

/// Decompresses a frame made by `compress_with_prefix` into exactly `length` bytes.
pub fn decompress_with_prefix(
    frame: &[u8],
    prefix: &[u8],
    length: usize,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    decompress_with_prefix_into(frame, prefix, length, &mut out)?;
    Ok(out)
}

/// Like [`decompress_with_prefix`], into `out` (cleared first), so that a caller decoding
/// frame after frame reuses one buffer instead of allocating one per frame.
pub fn decompress_with_prefix_into(
    frame: &[u8],
    prefix: &[u8],
    length: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    // The default window limit (2^27) covers every frame the index allows (at most 4 MiB of
    // bases and 1 MiB of content), and a one-shot decode into `length` bytes allocates no window.
    let mut dctx = zstd_safe::DCtx::create();
    if !prefix.is_empty() {
        dctx.ref_prefix(prefix).map_err(zstd_error)?;
    }
    out.clear();
    out.reserve_exact(length);
    let written = dctx.decompress(out, frame).map_err(zstd_error)?;
    if written != length {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame holds {written} bytes, expected {length}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use diffota_test_support::noise;
    #[test]
    fn a_group_like_its_base_costs_little_and_round_trips() {
        let base = noise(1, 64 * 1024);
        let mut content = base.clone();
        for i in (0..content.len()).step_by(4096) {
            content[i] ^= 0x5a; // a rebuilt binary: the same bytes with scattered changes
        }
        let plain = compress_with_prefix(&content, &[], 19).unwrap();
        let delta = compress_with_prefix(&content, &base, 19).unwrap();
        assert!(
            plain.len() > 60_000,
            "noise does not compress: {}",
            plain.len()
        );
        assert!(delta.len() < 2_000, "against its base: {}", delta.len());
        assert_eq!(
            decompress_with_prefix(&delta, &base, content.len()).unwrap(),
            content
        );
    }

    #[test]
    fn the_wrong_base_or_length_is_an_error_or_different_bytes() {
        let base = noise(2, 32 * 1024);
        let content = base[100..20_000].to_vec();
        let frame = compress_with_prefix(&content, &base, 3).unwrap();
        assert!(decompress_with_prefix(&frame, &base, content.len() + 1).is_err());
        let wrong = noise(3, 32 * 1024);
        if let Ok(bytes) = decompress_with_prefix(&frame, &wrong, content.len()) {
            assert_ne!(bytes, content);
        }
    }

    #[test]
    fn window_log_covers_the_bytes() {
        assert_eq!(window_log_for(0), 10);
        assert_eq!(window_log_for(1024), 10);
        assert_eq!(window_log_for(1025), 11);
        assert_eq!(window_log_for(5 << 20), 23);
    }
}
