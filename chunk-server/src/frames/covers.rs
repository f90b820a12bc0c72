//! Covers for a delta frame (`diffota_format::frame_codec`, "Covers"): stretches of the
//! content that match a stretch of the dictionary with a few bytes changed, such as rebuilt
//! code whose addresses moved. They are found as bsdiff finds them: an exact match found
//! through a table of the dictionary's 12-byte strings is taken when it beats staying on
//! the current alignment by more than 8 bytes, and each cover is then grown forward (and the
//! next one backward, up to where the previous one ends) as long as more than half of its
//! bytes keep matching.
//!
//! On the bench pairs (bench/README.md, "where the last 4-7% to HDiffPatch is") the frame
//! with covers is the smaller for about a third of the frames; trying it only where at
//! least 2% of the covered bytes differ keeps 91-93% of the gain for a third of the work.

use diffota_format::frame_codec::Cover;

/// Length of the strings the table finds exact matches by.
const SEED: usize = 12;

/// A new exact match replaces the current alignment when it matches this many bytes more.
const BETTER_BY: i64 = 8;

/// Exact matches are measured up to this length: the search steps one byte at a time while
/// the current alignment holds, and measuring a long run (a zero run) at every step would
/// take time quadratic in its length.
const MAX_MEASURED: usize = 4096;

/// Positions of the dictionary by the hash of the 12 bytes starting there (the last one
/// wins a slot).
struct SeedTable {
    slots: Vec<u32>,
    shift: u32,
}

impl SeedTable {
    const EMPTY: u32 = u32::MAX;

    fn new(dictionary: &[u8]) -> SeedTable {
        let bits = (usize::BITS - dictionary.len().leading_zeros()).clamp(10, 22);
        let mut table = SeedTable {
            slots: vec![SeedTable::EMPTY; 1 << bits],
            shift: 64 - bits,
        };
        for position in 0..dictionary.len().saturating_sub(SEED - 1) {
            let slot = table.slot(&dictionary[position..]);
            table.slots[slot] = position as u32;
        }
        table
    }

    fn slot(&self, bytes: &[u8]) -> usize {
        let low = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let high = u64::from(u32::from_le_bytes(
            bytes[8..12].try_into().expect("4 bytes"),
        ));
        let mixed = (low.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ high.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        .wrapping_mul(0x1656_67B1_9E37_79F9);
        (mixed >> self.shift) as usize
    }

    /// The longest exact match of `content`'s start the table knows (dictionary position,
    /// length), if it is at least a seed long.
    fn longest_match(&self, dictionary: &[u8], content: &[u8]) -> Option<(usize, usize)> {
        if content.len() < SEED {
            return None;
        }
        let position = self.slots[self.slot(content)];
        if position == SeedTable::EMPTY {
            return None;
        }
        let position = position as usize;
        let length = common_prefix(
            &dictionary[position..],
            &content[..content.len().min(MAX_MEASURED)],
        );
        (length >= SEED).then_some((position, length))
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The covers of `content` against `dictionary`, in content order, without overlaps.
pub fn find_covers(content: &[u8], dictionary: &[u8]) -> Vec<Cover> {
    let mut covers = Vec::new();
    if dictionary.len() < SEED || content.len() < SEED {
        return covers;
    }
    let table = SeedTable::new(dictionary);
    let same_at = |content_at: usize, dictionary_at: i64| {
        dictionary_at >= 0
            && (dictionary_at as usize) < dictionary.len()
            && dictionary[dictionary_at as usize] == content[content_at]
    };
    // The previous cover's start (content, dictionary) and the alignment it set.
    let (mut last_scan, mut last_position, mut last_offset) = (0usize, 0usize, 0i64);
    let (mut scan, mut length, mut position) = (0usize, 0usize, 0usize);
    while scan < content.len() {
        // Find the next exact match that beats the current alignment.
        let mut old_score = 0i64;
        scan += length;
        let mut scored_to = scan;
        // A match passed over one byte ago goes on one byte later, one byte shorter: taking
        // it as it is keeps a long run from being measured again at every step.
        let mut passed: Option<(usize, usize)> = None;
        while scan < content.len() {
            (position, length) = match passed {
                Some((from, run)) if run > SEED => (from + 1, run - 1),
                _ => table
                    .longest_match(dictionary, &content[scan..])
                    .unwrap_or((0, 0)),
            };
            while scored_to < scan + length {
                if same_at(scored_to, scored_to as i64 + last_offset) {
                    old_score += 1;
                }
                scored_to += 1;
            }
            if (length as i64 == old_score && length != 0) || length as i64 > old_score + BETTER_BY
            {
                break;
            }
            if same_at(scan, scan as i64 + last_offset) {
                old_score -= 1;
            }
            passed = (length > 0).then_some((position, length));
            scan += 1;
        }
        if length as i64 == old_score && scan != content.len() {
            continue;
        }
        // Grow the previous cover forward while more than half of its bytes match.
        let (mut matched, mut best, mut forward) = (0i64, 0i64, 0usize);
        let mut i = 0;
        while last_scan + i < scan && last_position + i < dictionary.len() {
            if dictionary[last_position + i] == content[last_scan + i] {
                matched += 1;
            }
            i += 1;
            if matched * 2 - i as i64 > best * 2 - forward as i64 {
                best = matched;
                forward = i;
            }
        }
        // Grow the new match backward the same way, down to where the previous cover now
        // ends (letting it reach further back would make the search quadratic on content
        // that matches anywhere, such as zero-filled tables).
        let covered_to = last_scan + forward;
        let mut backward = 0usize;
        if scan < content.len() {
            let (mut matched, mut best) = (0i64, 0i64);
            let mut i = 1;
            while scan >= covered_to + i && position >= i {
                if dictionary[position - i] == content[scan - i] {
                    matched += 1;
                }
                if matched * 2 - i as i64 > best * 2 - backward as i64 {
                    best = matched;
                    backward = i;
                }
                i += 1;
            }
        }
        if forward > 0 {
            covers.push(Cover {
                content_offset: last_scan as u32,
                dictionary_offset: last_position as u32,
                length: forward as u32,
            });
        }
        last_scan = scan - backward;
        last_position = position - backward;
        last_offset = position as i64 - scan as i64;
    }
    covers
}

/// Whether a frame with `covers` may be smaller than the plain delta frame: when at least
/// 1 in 20 of the covered bytes differ from the dictionary (with fewer, zstd matches the
/// stretches nearly as well as the covers do; on the arm64-erofs pair that threshold tries
/// 34 of 216 frames and keeps 87% of what trying every frame with a cover saves).
pub fn worth_trying(content: &[u8], dictionary: &[u8], covers: &[Cover]) -> bool {
    let (mut covered, mut differing) = (0u64, 0u64);
    for cover in covers {
        let (c, d, n) = (
            cover.content_offset as usize,
            cover.dictionary_offset as usize,
            cover.length as usize,
        );
        covered += n as u64;
        differing += content[c..c + n]
            .iter()
            .zip(&dictionary[d..d + n])
            .filter(|(a, b)| a != b)
            .count() as u64;
    }
    covered > 0 && differing * 20 >= covered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::noise;
    use diffota_format::frame_codec::{compress_with_covers, compress_with_prefix, decode_covers};

    /// Old bytes with every 16th byte moved by a constant (addresses of rebuilt code).
    fn moved(old: &[u8]) -> Vec<u8> {
        let mut new = old.to_vec();
        for byte in new.iter_mut().step_by(16) {
            *byte = byte.wrapping_add(0x20);
        }
        new
    }

    fn valid(covers: &[Cover], content: usize, dictionary: usize) {
        let mut end = 0;
        for cover in covers {
            assert!(cover.length >= 1);
            assert!(cover.content_offset >= end, "in order, without overlaps");
            end = cover.content_offset + cover.length;
            assert!(end as usize <= content);
            assert!((cover.dictionary_offset + cover.length) as usize <= dictionary);
        }
    }

    #[test]
    fn moved_stretches_are_covered_where_they_came_from() {
        let dictionary = noise(1, 300_000);
        let mut content = noise(2, 5_000);
        content.extend_from_slice(&moved(&dictionary[200_000..260_000]));
        content.extend_from_slice(&noise(3, 5_000));
        content.extend_from_slice(&moved(&dictionary[10_000..90_000]));
        let covers = find_covers(&content, &dictionary);
        valid(&covers, content.len(), dictionary.len());
        let covered_from = |start: usize, length: usize, from: usize| {
            covers
                .iter()
                .filter(|c| {
                    let c_start = c.content_offset as usize;
                    c_start >= start
                        && c_start < start + length
                        && c.dictionary_offset as usize == from + (c_start - start)
                })
                .map(|c| c.length as usize)
                .sum::<usize>()
        };
        assert!(covered_from(5_000, 60_000, 200_000) > 59_000);
        assert!(covered_from(70_000, 80_000, 10_000) > 79_000);
        assert!(worth_trying(&content, &dictionary, &covers));
        let with = compress_with_covers(&content, &dictionary, 16, &covers).unwrap();
        let without = compress_with_prefix(&content, &dictionary, 16).unwrap();
        // 10,000 bytes of noise cost what they cost either way; the moved stretches cost
        // zstd a literal every 16 bytes, and the covers almost nothing.
        assert!(
            with.len() + 8_000 < without.len(),
            "{} against {}",
            with.len(),
            without.len()
        );
    }

    #[test]
    fn exact_copies_are_not_worth_covers_and_noise_gets_none() {
        let dictionary = noise(4, 100_000);
        let copy = dictionary[20_000..80_000].to_vec();
        let covers = find_covers(&copy, &dictionary);
        valid(&covers, copy.len(), dictionary.len());
        assert!(!worth_trying(&copy, &dictionary, &covers));
        let unrelated = noise(5, 50_000);
        assert!(find_covers(&unrelated, &dictionary).is_empty());
        assert!(find_covers(&unrelated, &[]).is_empty());
        assert!(find_covers(&[], &dictionary).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn covers_are_always_a_valid_list(
            seed in 0u64..500,
            pieces in proptest::collection::vec((0usize..20_000, 1usize..3_000, proptest::bool::ANY), 1..8),
        ) {
            let dictionary = noise(seed, 24_000);
            let mut content = Vec::new();
            for (from, length, shifted) in pieces {
                let piece = &dictionary[from..(from + length).min(dictionary.len())];
                content.extend_from_slice(&if shifted { moved(piece) } else { piece.to_vec() });
                content.extend_from_slice(&noise(seed + from as u64, 7));
            }
            let covers = find_covers(&content, &dictionary);
            valid(&covers, content.len(), dictionary.len());
            let list = diffota_format::frame_codec::cover_list(&covers);
            proptest::prop_assert_eq!(decode_covers(&list[8..], content.len(), dictionary.len()).unwrap(), covers);
        }
    }
}
