//! The order of the new pack's plain frames. Chunking writes them in image order; once the
//! delta frames are written, make knows which plain frames the devices on each base still
//! fetch (the chunks they lack that no frame against their base rebuilds: new content that
//! resembles nothing, such as a rebuilt binary blob) and writes those together at the start
//! of the pack. In image order they lie between the plain frames of the chunks frames
//! rebuild, which a device on a base never fetches, so each stretch cost a range request of
//! its own; laid out together they come in one. The frames after the plain ones keep their
//! places.
//!
//! With several bases, a plain frame is fetched by the devices on some of them. The frames
//! are ordered by that set as a reflected Gray code, the first base (the newest older
//! release) as its highest bit: what the first base's devices fetch comes first, in one
//! stretch, and so does what the second base's devices fetch (what only the first's fetch,
//! then what both fetch, then what only the second's fetch); a third base's frames lie in at
//! most two stretches, and in one where the sets nest (what no frame against the newest
//! release rebuilds, no frame against an older one does either), the usual case.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;

use diffota_format::ChunkId;

use super::pack::PackWriter;
use crate::store::{io_error, StoreError};

/// A plain frame of the new pack: where it is, and which bases' devices fetch it (bit
/// `63 - n` for base number `n`; bases after the 64th do not shape the layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlainFrame {
    pub pack_offset: u64,
    pub compressed_length: u32,
    pub fetched_by: u64,
}

/// Which bases' devices fetch chunk `id` plain: those whose `fetched_plain` set holds it,
/// as the bit mask of [`PlainFrame::fetched_by`].
pub(crate) fn fetched_by(fetched_plain: &[HashSet<ChunkId>], id: &ChunkId) -> u64 {
    fetched_plain
        .iter()
        .take(64)
        .enumerate()
        .filter(|(_, set)| set.contains(id))
        .fold(0, |mask, (base, _)| mask | 1 << (63 - base))
}

/// The order to write `frames` in (positions into it): by the set of bases whose devices
/// fetch them, in reflected Gray code order from the first base's frames on (see the module
/// documentation), frames no base's devices fetch last; image order (pack order as chunked)
/// among equals. None when that is the order they are in.
pub(crate) fn plain_frame_order(frames: &[PlainFrame]) -> Option<Vec<usize>> {
    let mut order: Vec<usize> = (0..frames.len()).collect();
    order.sort_by_key(|&n| {
        (
            std::cmp::Reverse(gray_code_rank(frames[n].fetched_by)),
            frames[n].pack_offset,
        )
    });
    let unchanged = order
        .windows(2)
        .all(|w| frames[w[0]].pack_offset < frames[w[1]].pack_offset);
    (!unchanged).then_some(order)
}

/// The place of `code` in the reflected Gray code sequence (the inverse of `n ^ (n >> 1)`).
/// Taken from the highest rank down, the codes with the highest bit set come first, and
/// within them those without the next bit before those with it, which the codes without
/// the highest bit then continue.
fn gray_code_rank(code: u64) -> u64 {
    let mut rank = code;
    let mut shifted = code >> 1;
    while shifted != 0 {
        rank ^= shifted;
        shifted >>= 1;
    }
    rank
}

/// Writes the pack `old` (of `old_length` bytes, its plain frames `frames` first, from
/// offset 0 on) into `new` with its plain frames in `order`, then the rest of it as it was.
/// Returns each plain frame's new offset by its old one.
pub(crate) fn rewrite_pack(
    old: &std::fs::File,
    old_length: u64,
    frames: &[PlainFrame],
    order: &[usize],
    new: &mut PackWriter,
) -> Result<HashMap<u64, u64>, StoreError> {
    let plain_end: u64 = frames.iter().map(|f| u64::from(f.compressed_length)).sum();
    let pack_path = new.path().to_owned();
    let read_error = |e| io_error(&pack_path)(e);
    let mut moved = HashMap::with_capacity(frames.len());
    let mut buffer = Vec::new();
    for &n in order {
        let frame = frames[n];
        buffer.resize(frame.compressed_length as usize, 0);
        old.read_exact_at(&mut buffer, frame.pack_offset)
            .map_err(read_error)?;
        moved.insert(frame.pack_offset, new.append(&buffer)?);
    }
    let mut at = plain_end;
    buffer.resize(1 << 20, 0);
    while at < old_length {
        let length = (old_length - at).min(buffer.len() as u64) as usize;
        old.read_exact_at(&mut buffer[..length], at)
            .map_err(read_error)?;
        new.append(&buffer[..length])?;
        at += length as u64;
    }
    new.flush()?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pack_offset: u64, fetched_by: u64) -> PlainFrame {
        PlainFrame {
            pack_offset,
            compressed_length: 10,
            fetched_by,
        }
    }

    const FIRST: u64 = 1 << 63;
    const SECOND: u64 = 1 << 62;

    #[test]
    fn the_first_bases_plain_frames_come_first_those_both_fetch_between_the_bases() {
        let frames = [
            frame(0, 0),
            frame(10, SECOND),
            frame(20, FIRST | SECOND),
            frame(30, 0),
            frame(40, FIRST),
            frame(50, FIRST | SECOND),
        ];
        let order = plain_frame_order(&frames).expect("reordered");
        assert_eq!(order, [4, 2, 5, 1, 0, 3]);
    }

    #[test]
    fn the_gray_code_rank_inverts_the_gray_code() {
        for n in [0u64, 1, 2, 3, 7, 8, 1000, u64::MAX >> 1, u64::MAX] {
            assert_eq!(gray_code_rank(n ^ (n >> 1)), n);
        }
    }

    /// Stretches of consecutive places in `order` whose frames `base`'s devices fetch.
    fn stretches(frames: &[PlainFrame], order: &[usize], base: u64) -> usize {
        let fetched: Vec<bool> = order
            .iter()
            .map(|&n| frames[n].fetched_by & base != 0)
            .collect();
        fetched
            .iter()
            .enumerate()
            .filter(|&(place, &f)| f && (place == 0 || !fetched[place - 1]))
            .count()
    }

    #[test]
    fn the_first_two_bases_fetch_one_stretch_each_and_a_third_two_at_most() {
        // Every set of bases, several times over, in a shuffled image order.
        let third = 1u64 << 61;
        let frames: Vec<PlainFrame> = (0..64u64)
            .map(|n| frame((n * 37 % 64) * 10, (n % 8) << 61))
            .collect();
        let order = plain_frame_order(&frames).expect("reordered");
        assert_eq!(stretches(&frames, &order, FIRST), 1);
        assert_eq!(stretches(&frames, &order, SECOND), 1);
        assert_eq!(stretches(&frames, &order, third), 2);
        assert!(order[..8].iter().all(|&n| frames[n].fetched_by == FIRST));
        assert!(order[56..].iter().all(|&n| frames[n].fetched_by == 0));
    }

    #[test]
    fn frames_already_in_order_are_left_as_they_are() {
        assert_eq!(plain_frame_order(&[frame(0, FIRST), frame(10, 0)]), None);
        assert_eq!(plain_frame_order(&[frame(0, 0), frame(10, 0)]), None);
        assert_eq!(plain_frame_order(&[]), None);
    }

    #[test]
    fn nested_sets_lie_together_for_every_base() {
        // What no frame against the first base rebuilds, none against the second does
        // either: each base's devices fetch one stretch from the start of the pack.
        let frames: Vec<PlainFrame> = (0..12u64)
            .map(|n| {
                let fetched_by = match n % 3 {
                    0 => FIRST | SECOND,
                    1 => SECOND,
                    _ => 0,
                };
                frame(n * 10, fetched_by)
            })
            .collect();
        let order = plain_frame_order(&frames).expect("reordered");
        for base in [FIRST, SECOND] {
            let places: Vec<usize> = order
                .iter()
                .enumerate()
                .filter(|(_, &n)| frames[n].fetched_by & base != 0)
                .map(|(place, _)| place)
                .collect();
            assert_eq!(places, (0..places.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn fetched_by_sets_one_bit_per_base_from_the_top() {
        let id = |n: u8| ChunkId([n; 32]);
        let sets = vec![
            HashSet::from([id(1), id(2)]),
            HashSet::new(),
            HashSet::from([id(2)]),
        ];
        assert_eq!(fetched_by(&sets, &id(1)), FIRST);
        assert_eq!(fetched_by(&sets, &id(2)), FIRST | 1 << 61);
        assert_eq!(fetched_by(&sets, &id(3)), 0);
    }

    #[test]
    fn the_rewritten_pack_holds_every_frame_at_its_new_offset_and_the_rest_unmoved() {
        let dir = tempfile::tempdir().unwrap();
        let old_path = dir.path().join("old.pack");
        // Three plain frames of 3, 2 and 4 bytes, then 5 bytes of delta frames.
        std::fs::write(&old_path, b"aaabbccccDDDDD").unwrap();
        let old = std::fs::File::open(&old_path).unwrap();
        let frames = [
            PlainFrame {
                pack_offset: 0,
                compressed_length: 3,
                fetched_by: 0,
            },
            PlainFrame {
                pack_offset: 3,
                compressed_length: 2,
                fetched_by: FIRST,
            },
            PlainFrame {
                pack_offset: 5,
                compressed_length: 4,
                fetched_by: FIRST,
            },
        ];
        let order = plain_frame_order(&frames).unwrap();
        let mut new_file = std::fs::File::create(dir.path().join("new.pack")).unwrap();
        let mut writer = PackWriter::new(&mut new_file, dir.path().to_owned());
        let moved = rewrite_pack(&old, 14, &frames, &order, &mut writer).unwrap();
        let pack = writer.finish().unwrap().unwrap();
        assert_eq!(pack.length, 14);
        assert_eq!(moved, HashMap::from([(3, 0), (5, 2), (0, 6)]));
        assert_eq!(
            std::fs::read(dir.path().join("new.pack")).unwrap(),
            b"bbccccaaaDDDDD"
        );
        assert_eq!(pack.id, *blake3::hash(b"bbccccaaaDDDDD").as_bytes());
    }
}
