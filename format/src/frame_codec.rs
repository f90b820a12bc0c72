//! The delta frame codec, shared by `chunk-server make` and the device: a group of new
//! chunks compressed against its bases, the concatenated bases being a raw-content zstd
//! prefix (`ZSTD_CCtx_refPrefix`), so matches reach into old content as if it preceded the
//! group. The window covers the prefix and the group, which is what bounds the decoder.
//!
//! # Covers
//!
//! Rebuilt code whose addresses moved matches its old version in long stretches where every
//! few bytes differ by a small constant; zstd pays a literal for each such byte. A frame
//! with covers (it names `index::COVERS_BASE` among its bases) first lists stretches of the
//! content, each paired with a stretch of the dictionary, and its zstd frame holds the
//! content with each covered byte replaced by its difference from the dictionary byte
//! (new minus old, wrapping), mostly zeros and a few repeated values. The decoder adds the
//! dictionary's bytes back. The list is a zstd skippable frame in front of the zstd frame
//! (the frame's bytes stay a zstd stream), little-endian:
//!
//! | size | meaning |
//! |---|---|
//! | 4 | magic `0x184D2A5D` |
//! | 4 | length L of what follows |
//! | L | varints (LEB128): cover count N, then per cover: bytes of content since the previous cover's end (or the start), dictionary offset minus the previous cover's dictionary end (zigzag; from 0 for the first), length (at least 1) |
//!
//! Covers lie in content order without overlapping, each inside the content and the
//! dictionary; any other list, trailing bytes or more covers than bytes are rejected.

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

/// The skippable-frame magic of a cover list.
const COVERS_MAGIC: u32 = 0x184D_2A5D;
const COVERS_HEADER: usize = 8;

/// A stretch of a frame's content (`content_offset`, `length`) that is stored as its
/// difference from a stretch of the dictionary of the same length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cover {
    pub content_offset: u32,
    pub dictionary_offset: u32,
    pub length: u32,
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> std::io::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or_else(|| invalid("cover list ends inside a number".into()))?;
        *at += 1;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            break;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(invalid("cover list holds a number beyond 64 bits".into()))
}

/// The cover list of `covers` as the skippable frame that goes in front of the zstd frame.
/// `covers` must be valid for the content and dictionary they describe (as `decode_covers`
/// checks).
pub fn cover_list(covers: &[Cover]) -> Vec<u8> {
    let mut body = Vec::new();
    push_varint(&mut body, covers.len() as u64);
    let (mut content_end, mut dictionary_end) = (0i64, 0i64);
    for cover in covers {
        push_varint(
            &mut body,
            (i64::from(cover.content_offset) - content_end) as u64,
        );
        let step = i64::from(cover.dictionary_offset) - dictionary_end;
        push_varint(&mut body, ((step << 1) ^ (step >> 63)) as u64);
        push_varint(&mut body, u64::from(cover.length));
        content_end = i64::from(cover.content_offset) + i64::from(cover.length);
        dictionary_end = i64::from(cover.dictionary_offset) + i64::from(cover.length);
    }
    let mut out = Vec::with_capacity(COVERS_HEADER + body.len());
    out.extend_from_slice(&COVERS_MAGIC.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Splits a frame's bytes into its cover list's body, if it has one, and its zstd frame.
fn split_covers(frame: &[u8]) -> std::io::Result<(Option<&[u8]>, &[u8])> {
    if frame.len() < COVERS_HEADER || frame[..4] != COVERS_MAGIC.to_le_bytes() {
        return Ok((None, frame));
    }
    let length = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes")) as usize;
    let rest = &frame[COVERS_HEADER..];
    if length > rest.len() {
        return Err(invalid(format!(
            "cover list of {length} bytes in a frame of {} bytes",
            frame.len()
        )));
    }
    Ok((Some(&rest[..length]), &rest[length..]))
}

/// The covers of a cover list's body, checked against a content of `content_length` bytes
/// and a dictionary of `dictionary_length` bytes.
pub fn decode_covers(
    body: &[u8],
    content_length: usize,
    dictionary_length: usize,
) -> std::io::Result<Vec<Cover>> {
    let mut at = 0;
    let count = read_varint(body, &mut at)?;
    // Every cover takes at least three bytes, which bounds the allocation by the input.
    if count > (body.len() / 3) as u64 {
        return Err(invalid(format!(
            "cover list of {} bytes claims {count} covers",
            body.len()
        )));
    }
    let mut covers = Vec::with_capacity(count as usize);
    let (mut content_end, mut dictionary_end) = (0u64, 0i128);
    for _ in 0..count {
        let gap = read_varint(body, &mut at)?;
        let zigzag = read_varint(body, &mut at)?;
        let length = read_varint(body, &mut at)?;
        let step = i128::from((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64));
        let content_offset = content_end.saturating_add(gap);
        let dictionary_offset = dictionary_end + step;
        let fits = |offset: u64, limit: usize| {
            length >= 1 && offset.saturating_add(length) <= (limit as u64).min(u32::MAX.into())
        };
        if dictionary_offset < 0
            || !fits(content_offset, content_length)
            || !fits(dictionary_offset as u64, dictionary_length)
        {
            return Err(invalid(format!(
                "cover of {length} bytes at content offset {content_offset}, dictionary \
                 offset {dictionary_offset} lies outside a {content_length}-byte content or \
                 a {dictionary_length}-byte dictionary"
            )));
        }
        covers.push(Cover {
            content_offset: content_offset as u32,
            dictionary_offset: dictionary_offset as u32,
            length: length as u32,
        });
        content_end = content_offset + length;
        dictionary_end = dictionary_offset + i128::from(length);
    }
    if at != body.len() {
        return Err(invalid(format!(
            "cover list has {} bytes after its last cover",
            body.len() - at
        )));
    }
    Ok(covers)
}

/// Replaces each covered byte of `content` by its difference from the dictionary byte
/// (what `make` compresses); `add_covers` undoes it.
pub fn subtract_covers(content: &mut [u8], dictionary: &[u8], covers: &[Cover]) {
    combine_covered(content, dictionary, covers, u8::wrapping_sub);
}

/// Adds the dictionary's bytes back under each cover of a decoded content.
fn add_covers(content: &mut [u8], dictionary: &[u8], covers: &[Cover]) {
    combine_covered(content, dictionary, covers, u8::wrapping_add);
}

/// Sets each covered byte of `content` to `combine(it, its dictionary byte)`.
fn combine_covered(
    content: &mut [u8],
    dictionary: &[u8],
    covers: &[Cover],
    combine: fn(u8, u8) -> u8,
) {
    for cover in covers {
        let (c, d, n) = (
            cover.content_offset as usize,
            cover.dictionary_offset as usize,
            cover.length as usize,
        );
        for (byte, &old) in content[c..c + n].iter_mut().zip(&dictionary[d..d + n]) {
            *byte = combine(*byte, old);
        }
    }
}

/// A frame with covers of `content` against `prefix` at `level`: the cover list, then the
/// zstd frame of the content with the covers subtracted.
pub fn compress_with_covers(
    content: &[u8],
    prefix: &[u8],
    level: i32,
    covers: &[Cover],
) -> std::io::Result<Vec<u8>> {
    let mut differences = content.to_vec();
    subtract_covers(&mut differences, prefix, covers);
    let mut out = cover_list(covers);
    out.extend_from_slice(&compress_with_prefix(&differences, prefix, level)?);
    Ok(out)
}

/// Decompresses a frame made by `compress_with_prefix` (or `compress_with_covers`) into
/// exactly `length` bytes.
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
    let (covers, frame) = split_covers(frame)?;
    let covers = covers
        .map(|body| decode_covers(body, length, prefix.len()))
        .transpose()?;
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
    if let Some(covers) = covers {
        add_covers(out, prefix, &covers);
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

    /// Old content whose every 16th byte moved by a constant, as rebuilt code's addresses do.
    fn moved(base: &[u8]) -> Vec<u8> {
        let mut content = base.to_vec();
        for byte in content.iter_mut().step_by(16) {
            *byte = byte.wrapping_add(0x40);
        }
        content
    }

    #[test]
    fn covers_round_trip_and_pay_where_bytes_moved_by_a_constant() {
        let base = noise(4, 256 * 1024);
        let mut content = noise(5, 1000);
        content.extend_from_slice(&moved(&base[10_000..200_000]));
        let covers = [Cover {
            content_offset: 1000,
            dictionary_offset: 10_000,
            length: 190_000,
        }];
        let with = compress_with_covers(&content, &base, 16, &covers).unwrap();
        let without = compress_with_prefix(&content, &base, 16).unwrap();
        assert!(
            with.len() * 4 < without.len(),
            "covers {} against {}",
            with.len(),
            without.len()
        );
        assert_eq!(
            decompress_with_prefix(&with, &base, content.len()).unwrap(),
            content
        );
        // Without its dictionary's bytes added back, the content does not come out.
        assert_ne!(
            decompress_with_prefix(&with[cover_list(&covers).len()..], &base, content.len())
                .unwrap(),
            content
        );
    }

    #[test]
    fn hostile_cover_lists_are_errors() {
        let base = noise(6, 4096);
        let content = moved(&base[..2048]);
        let frame = compress_with_prefix(&content, &base, 3).unwrap();
        let with_list = |body: &[u8]| {
            let mut bytes = COVERS_MAGIC.to_le_bytes().to_vec();
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(body);
            bytes.extend_from_slice(&frame);
            decompress_with_prefix(&bytes, &base, content.len())
        };
        for (body, what) in [
            (&[1, 0, 0, 0x90, 0x10][..], "a cover past the content's end"),
            (
                &[1, 0, 0x80, 0x40, 8][..],
                "a cover past the dictionary's end",
            ),
            (&[1, 0, 1, 8][..], "a negative dictionary offset"),
            (&[1, 0, 0, 0][..], "an empty cover"),
            (&[2, 0, 0, 8][..], "more covers than the list holds"),
            (&[1, 0, 0, 8, 0][..], "a byte after the last cover"),
            (&[1, 0, 0][..], "a list ending inside a cover"),
            (&[0xff; 11][..], "a count beyond 64 bits"),
            (&[0x80][..], "a list ending inside a number"),
        ] {
            assert!(with_list(body).is_err(), "{what}");
        }
        // A list longer than the frame that carries it.
        let mut bytes = COVERS_MAGIC.to_le_bytes().to_vec();
        bytes.extend_from_slice(&1000u32.to_le_bytes());
        bytes.push(0);
        assert!(decompress_with_prefix(&bytes, &base, content.len()).is_err());
        // An empty list is a frame without covers.
        assert_eq!(with_list(&[0]).unwrap(), content);
    }

    proptest::proptest! {
        #[test]
        fn any_valid_covers_round_trip(
            seed in 0u64..1000,
            stretches in proptest::collection::vec((0u32..300, 0u32..3000, 1u32..400), 0..12),
        ) {
            let base = noise(seed, 4000);
            let mut covers = Vec::new();
            let mut end = 0;
            for (gap, dictionary_offset, length) in stretches {
                let length = length.min(4000 - dictionary_offset.min(3999));
                covers.push(Cover { content_offset: end + gap, dictionary_offset, length });
                end += gap + length;
            }
            let content = noise(seed + 1, end as usize + 50);
            let frame = compress_with_covers(&content, &base, 3, &covers).unwrap();
            let body = &frame[COVERS_HEADER..cover_list(&covers).len()];
            proptest::prop_assert_eq!(decode_covers(body, content.len(), base.len()).unwrap(), covers);
            proptest::prop_assert_eq!(decompress_with_prefix(&frame, &base, content.len()).unwrap(), content);
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
