//! One function per fuzz target: each takes arbitrary bytes, feeds them to a decoder that
//! reads untrusted input, and panics only when the decoder breaks a promise (a panic of its
//! own, or a decoded value that does not survive its own encoder). `fuzz/` wraps each in
//! `fuzz_target!`; `tests/corpus.rs` replays the committed corpus through the same functions
//! on every `cargo test`, so CI needs no fuzzing tool.

use std::path::Path;

use diffota::boot::{grub, uboot};
use diffota_format::bundle::{self, BundleHeader, Section, SectionKind};
use diffota_format::ranges::ContentRange;
use diffota_format::{compare_versions, Channel, Index, Manifest};

/// What a target does with one input; it panics when the decoder breaks a promise.
pub type Target = fn(&[u8]);

/// Every target by the name of its file in `fuzz/fuzz_targets/` and its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("index", index),
    ("index_delta", index_delta),
    ("delta_frame", delta_frame),
    ("bundle", bundle),
    ("channel", channel),
    ("manifest", manifest),
    ("releases_before", releases_before),
    ("uboot_env", uboot_env),
    ("grubenv", grubenv),
    ("http_range", http_range),
    ("device_config", device_config),
    ("device_state", device_state),
    ("version_order", version_order),
    ("redact_url", redact_url),
];

/// The release index (every format version this build reads): a decoded index validates,
/// and encodes back to the same bytes.
pub fn index(data: &[u8]) {
    if let Ok(index) = Index::decode(data) {
        assert_eq!(
            index.to_bytes(),
            data,
            "decode then encode changed the index"
        );
    }
}

/// An index delta as the device decodes it against its stored index. The input is the
/// base's length (2 bytes, little-endian), the base, then the delta; the delta's base hash is
/// set to the base's (a fuzzer cannot find hashes), so the zstd frame is what gets explored.
/// A decoded index has exactly the length the header promised, within the limit.
pub fn index_delta(data: &[u8]) {
    const LIMIT: u64 = 1 << 20;
    let Some(length) = data
        .get(..2)
        .map(|l| usize::from(u16::from_le_bytes([l[0], l[1]])))
    else {
        return;
    };
    let Some(base) = data.get(2..2 + length) else {
        return;
    };
    let mut delta = data[2 + length..].to_vec();
    if let Some(base_hash) = delta.get_mut(12..44) {
        base_hash.copy_from_slice(blake3::hash(base).as_bytes());
    }
    if let Ok(index) = diffota_format::index_deltas::decode(&delta, base, LIMIT) {
        let promised = u64::from_le_bytes(delta[44..52].try_into().expect("header read"));
        assert_eq!(
            index.len() as u64,
            promised,
            "decoded length differs from the header"
        );
        assert!(promised <= LIMIT);
    }
}

/// A delta frame as the device decodes it against its dictionary, with or without a cover
/// list. The input is the dictionary's length (2 bytes, little-endian), the dictionary, the
/// content's length (2 bytes), then the frame. A decoded frame has exactly that length.
pub fn delta_frame(data: &[u8]) {
    let Some(length) = data
        .get(..2)
        .map(|l| usize::from(u16::from_le_bytes([l[0], l[1]])))
    else {
        return;
    };
    let Some(dictionary) = data.get(2..2 + length) else {
        return;
    };
    let Some(content) = data
        .get(2 + length..4 + length)
        .map(|l| usize::from(u16::from_le_bytes([l[0], l[1]])))
    else {
        return;
    };
    let frame = &data[4 + length..];
    if let Ok(bytes) =
        diffota_format::frame_codec::decompress_with_prefix(frame, dictionary, content)
    {
        assert_eq!(
            bytes.len(),
            content,
            "decoded length differs from the one asked"
        );
    }
}

/// A bundle file as the device opens it: the header, then the sections it points at (the
/// index and the chunk table against the data section's length).
pub fn bundle(data: &[u8]) {
    let file_length = data.len() as u64;
    let Some(prefix) = data.get(..16).and_then(|p| <&[u8; 16]>::try_from(p).ok()) else {
        return;
    };
    let Ok(header_length) = BundleHeader::length_from_prefix(prefix) else {
        return;
    };
    let Some(header_bytes) = data.get(..header_length as usize) else {
        return;
    };
    let Ok(header) = BundleHeader::decode(header_bytes, file_length) else {
        return;
    };
    assert_eq!(header.encode(), header_bytes, "header does not round-trip");
    let bytes_of = |section: Section| {
        &data[section.offset as usize..(section.offset + section.length) as usize]
    };
    if let Some(section) = header.section(SectionKind::Index) {
        index(bytes_of(section));
    }
    if let (Some(table), Some(chunks)) = (
        header.section(SectionKind::ChunkTable),
        header.section(SectionKind::ChunkData),
    ) {
        if let Ok(table) = bundle::decode_table(bytes_of(table), chunks.length) {
            for chunk in table.values() {
                let end = chunk.offset + u64::from(chunk.compressed_length);
                assert!(end <= chunks.length, "a table entry points past the data");
            }
        }
    }
    if let (Some(frames), Some(chunks)) = (
        header.section(SectionKind::DeltaFrames),
        header.section(SectionKind::ChunkData),
    ) {
        if let Ok(table) = bundle::decode_frame_table(bytes_of(frames), chunks.length) {
            for frame in table.values() {
                let end = frame.offset + u64::from(frame.compressed_length);
                assert!(end <= chunks.length, "a frame entry points past the data");
            }
        }
    }
    if let (Some(frames), Some(chunks)) = (
        header.section(SectionKind::ImageDeltaFrames),
        header.section(SectionKind::ChunkData),
    ) {
        if let Ok(table) = bundle::decode_image_frame_table(bytes_of(frames), chunks.length) {
            for frame in table.values() {
                let end = frame.offset + u64::from(frame.compressed_length);
                assert!(
                    end <= chunks.length,
                    "an image frame entry points past the data"
                );
            }
        }
    }
    if let Some(section) = header.section(SectionKind::ImageIndexes) {
        if let Ok(indexes) = bundle::decode_image_indexes(bytes_of(section)) {
            for bundled in indexes {
                assert_eq!(
                    blake3::hash(bundled.index).as_bytes(),
                    &bundled.index_blake3
                );
                index(bundled.index);
            }
        }
    }
    if let Some(section) = header.section(SectionKind::Manifest) {
        manifest(bytes_of(section));
    }
}

/// A channel file: a parsed channel survives its own JSON.
pub fn channel(data: &[u8]) {
    if let Ok(channel) = Channel::parse(data) {
        let again = Channel::parse(&channel.to_json()).expect("a parsed channel re-parses");
        assert_eq!(again, channel);
    }
}

/// The list of releases before a release, which `chunk-server pull` reads from the published
/// store: a parsed one re-parses to itself and names valid versions, at most eight, once each.
pub fn releases_before(data: &[u8]) {
    use diffota_format::releases_before::{ReleasesBefore, MAX_LISTED};
    if let Ok(list) = ReleasesBefore::parse(data) {
        assert!(list.before.len() <= MAX_LISTED);
        let again = ReleasesBefore::parse(&list.to_json()).expect("a parsed list re-parses");
        assert_eq!(again, list);
    }
}

/// A release manifest: a parsed one validates and re-parses to itself.
pub fn manifest(data: &[u8]) {
    if let Ok(manifest) = Manifest::parse(data) {
        let again = Manifest::parse(&manifest.to_json()).expect("a parsed manifest re-parses");
        assert_eq!(again, manifest);
    }
}

/// One copy of a U-Boot environment, single and redundant, and the `fw_env.config` lines.
pub fn uboot_env(data: &[u8]) {
    for redundant in [false, true] {
        let copy = uboot::decode_copy(data, redundant);
        if copy.valid {
            let encoded = uboot::encode_copy(&copy.vars, data.len(), redundant, copy.flags);
            if let Ok(encoded) = encoded {
                let again = uboot::decode_copy(&encoded, redundant);
                assert!(again.valid, "an encoded copy has a valid checksum");
                assert_eq!(again.vars, copy.vars);
            }
        }
    }
    let _ = uboot::parse_fw_env_config(&String::from_utf8_lossy(data));
}

/// A GRUB environment block: decoded variables survive encoding.
pub fn grubenv(data: &[u8]) {
    if let Ok(vars) = grub::decode(data) {
        if let Ok(encoded) = grub::encode(&vars) {
            assert_eq!(grub::decode(&encoded).expect("re-decodes"), vars);
        }
    }
}

/// HTTP ranges: the `Content-Range` a store sends to the device, and the `Range` header
/// `chunk-server serve` takes from a client (the first 8 bytes give the file's length).
pub fn http_range(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(range) = ContentRange::parse(&text) {
        assert!(range.start < range.end);
        assert!(range
            .complete_length
            .is_none_or(|length| range.end <= length));
    }
    let (length, header) = match data.get(..8) {
        Some(prefix) => (
            u64::from_le_bytes(prefix.try_into().expect("8 bytes")),
            String::from_utf8_lossy(&data[8..]),
        ),
        None => (data.len() as u64, text),
    };
    if let chunk_server::serve::RangeRequest::Span { start, end } =
        chunk_server::serve::parse_range(Some(&header), length)
    {
        assert!(
            start < end && end <= length,
            "span {start}..{end} of {length}"
        );
    }
}

/// The device configuration file.
pub fn device_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = diffota::config::Config::parse(text, Path::new("fuzz.toml"));
    }
}

/// The device state file: a decoded state survives its own JSON.
pub fn device_state(data: &[u8]) {
    if let Ok(state) = diffota::state::State::decode(data) {
        let bytes = serde_json::to_vec(&state).expect("a state serializes");
        let again = diffota::state::State::decode(&bytes).expect("a state re-decodes");
        assert_eq!(again, state);
    }
}

/// The version order (what anti-rollback rests on): antisymmetric and consistent with
/// equality, for two versions split at the first NUL byte.
pub fn version_order(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\0').unwrap_or((&text, ""));
    assert_eq!(compare_versions(a, b), compare_versions(b, a).reverse());
    assert_eq!(compare_versions(a, a), std::cmp::Ordering::Equal);
}

/// URL redaction (what every shown URL goes through): never panics, whatever the text, and
/// a redacted URL or message redacts to itself.
pub fn redact_url(data: &[u8]) {
    use diffota_cli::redact::{redact_url, redact_urls_in};
    let text = String::from_utf8_lossy(data);
    let once = redact_url(&text);
    assert_eq!(redact_url(&once), once, "redacting twice changed the URL");
    let message = redact_urls_in(&text);
    assert_eq!(
        redact_urls_in(&message),
        message,
        "redacting twice changed the text"
    );
}
