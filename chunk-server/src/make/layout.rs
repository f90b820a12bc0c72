//! The order of the new pack's plain frames. Chunking writes them in image order; once the
//! delta frames are written, make knows which plain frames the devices on each base still
//! fetch ([`device_fetches`]: the device's own choice of frames, run on the new index) (the chunks they lack that no frame against their base rebuilds: new content that
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
//!
//! The frames against each base lie next to the plain frames its devices fetch where they
//! can: the first base's before them all, the last base's after them. With three bases or
//! more, one base's devices fetch two stretches of the new pack whatever the order (its
//! frames cannot touch the plain frames of its devices from both sides); make weighs which
//! base that is ([`base_placements`]) by the requests each base's devices would make in all
//! ([`requests_by_base`]: with the older packs they fetch from, which a device further
//! behind needs more of) and takes the placement whose worst served base makes the fewest.

use std::collections::HashSet;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use diffota_format::frame_choice::{choose_delta_frames, with_delta_frames};
use diffota_format::index::DeltaFrame;
use diffota_format::ranges::plan_ranges;
use diffota_format::{ChunkEntry, ChunkId, Index};

use super::pack::PackWriter;
use crate::store::{io_error, StoreError};

/// What the devices on a base fetch from the release: the frames they choose (numbers in
/// the index), and the chunks they fetch plain.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceFetches {
    pub frames: HashSet<usize>,
    pub plain: HashSet<ChunkId>,
    /// What they fetch as the device plans its ranges: the plain frames (every chunk entry
    /// of the release they fetch plain) and the chosen frames.
    pub items: Vec<ChunkEntry>,
}

/// For each base (the chunks it holds, by id and length, in `base_chunks`), what its
/// devices fetch from `index` (the release with its frames) as they choose: the chunks the
/// base lacks come from the frames they choose ([`choose_delta_frames`], the device's own
/// choice), or plain.
pub(crate) fn device_fetches(
    index: &Index,
    base_chunks: &[HashSet<(ChunkId, u32)>],
) -> Vec<DeviceFetches> {
    base_chunks
        .iter()
        .map(|held| {
            let lacking: Vec<ChunkEntry> = index
                .chunks
                .iter()
                .filter(|c| !held.contains(&(c.id, c.length)))
                .copied()
                .collect();
            let chosen =
                choose_delta_frames(index, &lacking, |id, length| held.contains(&(*id, length)));
            let rebuilt: HashSet<ChunkId> = chosen
                .iter()
                .flat_map(|&f| &index.deltas.frames[f].chunks)
                .map(|&n| index.chunks[n as usize].id)
                .collect();
            DeviceFetches {
                plain: lacking
                    .iter()
                    .map(|c| c.id)
                    .filter(|id| !rebuilt.contains(id))
                    .collect(),
                items: with_delta_frames(index, &lacking, &chosen),
                frames: chosen.into_iter().collect(),
            }
        })
        .collect()
}

/// The stretch of the pack each base's delta frames lie in, for [`pack_pieces`] (`frames`:
/// those against base `n` are `frames[frame_spans[n].0]`, the last `frame_spans[n].1` of
/// them fallbacks). The first base's fallbacks leave its stretch (no frame depends on them,
/// nor they on one): those its devices take (`first_base_takes`, frame numbers) are
/// returned apart, to follow its other frames; the rest go last with what no piece covers.
/// A base with no frames has an empty stretch.
pub(crate) fn base_stretches(
    frames: &[DeltaFrame],
    frame_spans: &[(Range<usize>, usize)],
    first_base_takes: Option<&HashSet<usize>>,
) -> (Vec<Piece>, Vec<Piece>) {
    let piece_of = |frame: &DeltaFrame| Piece {
        pack_offset: frame.pack_offset,
        length: u64::from(frame.compressed_length),
    };
    let mut first_base_fallbacks = Vec::new();
    let stretches = frame_spans
        .iter()
        .enumerate()
        .map(|(base, (span, fallbacks))| {
            let mut span = span.clone();
            if base == 0 {
                let first_fallback = span.end - fallbacks;
                first_base_fallbacks.extend(
                    (first_fallback..span.end)
                        .filter(|f| first_base_takes.is_some_and(|takes| takes.contains(f)))
                        .map(|f| piece_of(&frames[f])),
                );
                span.end = first_fallback;
            }
            let written = &frames[span];
            let start = written.iter().map(|f| f.pack_offset).min().unwrap_or(0);
            let end = written
                .iter()
                .map(|f| f.pack_offset + u64::from(f.compressed_length))
                .max()
                .unwrap_or(0);
            Piece {
                pack_offset: start,
                length: end.saturating_sub(start),
            }
        })
        .collect();
    (stretches, first_base_fallbacks)
}

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
pub(crate) fn fetched_by(fetched_plain: &[&HashSet<ChunkId>], id: &ChunkId) -> u64 {
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

/// A stretch of the pack written as one: a plain frame, the delta frames against one base,
/// or what follows them (image frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub pack_offset: u64,
    pub length: u64,
}

impl Piece {
    fn end(&self) -> u64 {
        self.pack_offset + self.length
    }
}

/// Where the frames against the bases after the first lie in the pack (see [`pack_pieces`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum BasePlacement {
    /// The last base's frames just after the plain frames, then those of the bases between.
    #[default]
    LastAfterPlain,
    /// The frames against base `n` (one between the first and the last) just after the last
    /// plain frame its devices fetch, among the plain frames; then the last base's and the
    /// others'.
    AfterItsPlain(usize),
}

/// The placements weighed for `bases` bases: the last base's frames after the plain
/// frames, or, with three bases or more, those of one base between (up to the 64th, the
/// bases whose devices shape the plain frames' order). With three bases and the plain
/// frames' sets nested, one base's devices fetch two stretches of the new pack whatever the
/// order: the placement says whose.
pub(crate) fn base_placements(bases: usize) -> Vec<BasePlacement> {
    std::iter::once(BasePlacement::LastAfterPlain)
        .chain((1..bases.saturating_sub(1).min(64)).map(BasePlacement::AfterItsPlain))
        .collect()
}

/// The order in which the bases' delta frames are written: the first base's, then as
/// `placement` says: the last base's and those between, or base `n`'s, the last's and the
/// others between (see [`pack_pieces`]).
pub(crate) fn base_order(bases: usize, placement: BasePlacement) -> Vec<usize> {
    let Some(last) = bases.checked_sub(1) else {
        return Vec::new();
    };
    let second = match placement {
        BasePlacement::AfterItsPlain(n) if n > 0 && n < last => n,
        _ => last,
    };
    let mut order = vec![0];
    if last > 0 {
        order.push(second);
    }
    if second != last {
        order.push(last);
    }
    order.extend((1..last).filter(|&n| n != second));
    order
}

/// The new pack's pieces in order, given its plain frames `frames` in `order`
/// ([`plain_frame_order`]), the stretch of delta frames against each base (`base_frames`,
/// empty where a base got none) and the first base's fallback frames its devices take
/// (`first_base_fallbacks`), in a pack of `pack_length` bytes:
/// - the frames against the first base and those fallbacks, just before the plain frames
///   its devices fetch, which come first: a device one release behind fetches one range
///   from the new pack;
/// - the plain frames some base's devices fetch, in `order`;
/// - the frames against the last base, just after the plain frames its devices fetch last
///   (the lowest bit of the Gray code ends the sequence): one range more for them, not two;
/// - the frames against the bases between, in their order;
/// - the plain frames no base's devices fetch (those of devices on no base: a wiped slot);
/// - the rest as it was (the first base's other fallbacks, image frames).
///
/// With `placement` [`BasePlacement::AfterItsPlain`]`(n)`, the frames against base `n`
/// come just after the last plain frame its devices fetch instead, and the last base's
/// after the plain frames as above: base `n`'s devices fetch one stretch, the last base's
/// may fetch two.
///
/// None when the pieces would not cover the pack exactly once (then it stays as it is).
pub(crate) fn pack_pieces(
    frames: &[PlainFrame],
    order: &[usize],
    base_frames: &[Piece],
    first_base_fallbacks: &[Piece],
    pack_length: u64,
    placement: BasePlacement,
) -> Option<Vec<Piece>> {
    let plain = |n: &usize| Piece {
        pack_offset: frames[*n].pack_offset,
        length: u64::from(frames[*n].compressed_length),
    };
    let (fetched, nobody): (Vec<usize>, Vec<usize>) =
        order.iter().partition(|&&n| frames[n].fetched_by != 0);
    let bases = base_order(base_frames.len(), placement);
    let mut pieces: Vec<Piece> = Vec::with_capacity(frames.len() + base_frames.len() + 1);
    pieces.extend(bases.first().map(|&b| base_frames[b]));
    pieces.extend_from_slice(first_base_fallbacks);
    match placement {
        BasePlacement::AfterItsPlain(n) if bases.get(1) == Some(&n) => {
            let bit = 1u64 << (63 - n);
            let split = fetched
                .iter()
                .rposition(|&f| frames[f].fetched_by & bit != 0)
                .map_or(fetched.len(), |last| last + 1);
            pieces.extend(fetched[..split].iter().map(plain));
            pieces.push(base_frames[n]);
            pieces.extend(fetched[split..].iter().map(plain));
        }
        _ => {
            pieces.extend(fetched.iter().map(plain));
            pieces.extend(bases.get(1).map(|&b| base_frames[b]));
        }
    }
    pieces.extend(bases.iter().skip(2).map(|&b| base_frames[b]));
    pieces.extend(nobody.iter().map(plain));
    pieces.retain(|piece| piece.length > 0);
    // What no piece covers (the image frames after the delta frames) follows as it was.
    let mut covered: Vec<Piece> = pieces.clone();
    covered.sort_unstable_by_key(|piece| piece.pack_offset);
    let mut at = 0;
    let mut rest = Vec::new();
    for piece in &covered {
        if piece.pack_offset < at {
            return None; // overlapping pieces
        }
        if piece.pack_offset > at {
            rest.push(Piece {
                pack_offset: at,
                length: piece.pack_offset - at,
            });
        }
        at = piece.end();
    }
    if at > pack_length {
        return None;
    }
    if at < pack_length {
        rest.push(Piece {
            pack_offset: at,
            length: pack_length - at,
        });
    }
    pieces.extend(rest);
    Some(pieces)
}

/// What the new pack is laid out from (see [`pack_pieces`]).
pub(crate) struct PackParts<'a> {
    pub plain: &'a [PlainFrame],
    pub order: &'a [usize],
    pub base_frames: &'a [Piece],
    pub first_base_fallbacks: &'a [Piece],
    pub pack_length: u64,
}

/// Of the [`base_placements`], the one whose worst served base's devices make the fewest
/// requests ([`requests_by_base`]), then the fewest in all; the first weighed where they
/// tie. None when no placement covers the pack exactly once.
pub(crate) fn best_layout(
    parts: &PackParts,
    fetches: &[DeviceFetches],
    new_pack: u32,
    max_gap: u64,
) -> Option<(BasePlacement, Vec<Piece>)> {
    let mut best: Option<((usize, usize), BasePlacement, Vec<Piece>)> = None;
    for placement in base_placements(parts.base_frames.len()) {
        let Some(pieces) = pack_pieces(
            parts.plain,
            parts.order,
            parts.base_frames,
            parts.first_base_fallbacks,
            parts.pack_length,
            placement,
        ) else {
            continue;
        };
        let requests = requests_by_base(&pieces, fetches, new_pack, max_gap);
        let cost = (
            requests.iter().copied().max().unwrap_or(0),
            requests.iter().sum(),
        );
        if best
            .as_ref()
            .is_none_or(|(best_cost, _, _)| cost < *best_cost)
        {
            best = Some((cost, placement, pieces));
        }
    }
    best.map(|(_, placement, pieces)| (placement, pieces))
}

/// Whether `pieces` lie in the order they are in: writing them would copy the pack as it is.
pub(crate) fn in_place(pieces: &[Piece]) -> bool {
    pieces.windows(2).all(|w| w[0].end() == w[1].pack_offset)
}

/// How many range requests the devices on each base make (`fetches`, by
/// [`DeviceFetches::items`]) with the new pack (number `new_pack` in their index) written
/// as `pieces`, the device's range merging with `max_gap`: the ranges in older packs, which
/// no layout changes, and those in the new pack.
pub(crate) fn requests_by_base(
    pieces: &[Piece],
    fetches: &[DeviceFetches],
    new_pack: u32,
    max_gap: u64,
) -> Vec<usize> {
    let starts: Vec<u64> = pieces
        .iter()
        .scan(0, |at, piece| {
            let start = *at;
            *at += piece.length;
            Some(start)
        })
        .collect();
    let relocation = Relocation::new(pieces, &starts);
    fetches
        .iter()
        .map(|fetches| {
            let moved: Vec<ChunkEntry> = fetches
                .items
                .iter()
                .map(|item| ChunkEntry {
                    pack_offset: if item.pack == new_pack {
                        relocation.offset(item.pack_offset)
                    } else {
                        item.pack_offset
                    },
                    ..*item
                })
                .collect();
            plan_ranges(&moved, max_gap).len()
        })
        .collect()
}

/// Where the byte at `old_offset` of the old pack lies in the pack written as `pieces`
/// (which start in the new pack at `new_starts`): the pieces sorted by old offset,
/// searched.
pub(crate) struct Relocation {
    /// (old offset, new offset, length), by old offset.
    moves: Vec<(u64, u64, u64)>,
}

impl Relocation {
    pub(crate) fn new(pieces: &[Piece], new_starts: &[u64]) -> Self {
        let mut moves: Vec<(u64, u64, u64)> = pieces
            .iter()
            .zip(new_starts)
            .map(|(piece, &new)| (piece.pack_offset, new, piece.length))
            .collect();
        moves.sort_unstable();
        Relocation { moves }
    }

    /// The new offset of `old_offset`; it lies in one of the pieces.
    pub(crate) fn offset(&self, old_offset: u64) -> u64 {
        let place = self.moves.partition_point(|&(old, _, _)| old <= old_offset);
        let (old, new, length) = self.moves[place.checked_sub(1).expect("offset in a piece")];
        debug_assert!(old_offset < old + length, "offset in a piece");
        new + (old_offset - old)
    }
}

/// Writes the pack `old` into `new` as `pieces` in their order; returns where each piece
/// starts in the new pack.
pub(crate) fn rewrite_pack(
    old: &std::fs::File,
    pieces: &[Piece],
    new: &mut PackWriter,
) -> Result<Vec<u64>, StoreError> {
    let pack_path = new.path().to_owned();
    let read_error = |e| io_error(&pack_path)(e);
    let mut starts = Vec::with_capacity(pieces.len());
    let mut buffer = vec![0u8; 1 << 20];
    for piece in pieces {
        let mut at = piece.pack_offset;
        let mut start = None;
        while at < piece.end() {
            let length = (piece.end() - at).min(buffer.len() as u64) as usize;
            old.read_exact_at(&mut buffer[..length], at)
                .map_err(read_error)?;
            let written_at = new.append(&buffer[..length])?;
            start.get_or_insert(written_at);
            at += length as u64;
        }
        starts.push(start.unwrap_or(0));
    }
    new.flush()?;
    Ok(starts)
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
        let sets = [
            HashSet::from([id(1), id(2)]),
            HashSet::new(),
            HashSet::from([id(2)]),
        ];
        let sets: Vec<&HashSet<ChunkId>> = sets.iter().collect();
        assert_eq!(fetched_by(&sets, &id(1)), FIRST);
        assert_eq!(fetched_by(&sets, &id(2)), FIRST | 1 << 61);
        assert_eq!(fetched_by(&sets, &id(3)), 0);
    }

    fn piece(pack_offset: u64, length: u64) -> Piece {
        Piece {
            pack_offset,
            length,
        }
    }

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn delta_frame(
        pack_offset: u64,
        compressed_length: u32,
        bases: &[u32],
        chunks: &[u32],
    ) -> DeltaFrame {
        DeltaFrame {
            pack: 0,
            pack_offset,
            compressed_length,
            bases: bases.to_vec(),
            chunks: chunks.to_vec(),
        }
    }

    #[test]
    fn devices_fetch_the_frames_their_base_can_decode_and_the_rest_plain() {
        use diffota_format::index::{DeltaBase, Deltas};
        // Chunks 1..=4 of 1000 bytes (plain frames of 500); one frame of chunks 1 and 2
        // (300 bytes) against old chunk 100.
        let index = Index {
            created: 0,
            expires: None,
            chunker: diffota_format::ChunkerParams::DEFAULT,
            image_length: 4000,
            image_hash: [0; 32],
            compatible: "test".into(),
            version: "2".into(),
            packs: Vec::new(),
            chunks: (1..=4u8)
                .map(|n| ChunkEntry {
                    id: id(n),
                    offset: u64::from(n - 1) * 1000,
                    length: 1000,
                    compressed_length: 500,
                    pack: 0,
                    pack_offset: u64::from(n - 1) * 500,
                })
                .collect(),
            deltas: Deltas {
                bases: vec![DeltaBase {
                    id: id(100),
                    length: 1000,
                }],
                frames: vec![delta_frame(2000, 300, &[0], &[0, 1])],
            },
        };
        let holding = |ids: &[u8]| ids.iter().map(|&n| (id(n), 1000)).collect();
        let fetches = device_fetches(
            &index,
            &[holding(&[100, 4]), holding(&[4]), holding(&[1, 2, 3, 4])],
        );
        assert_eq!(
            fetches[0],
            DeviceFetches {
                frames: HashSet::from([0]),
                plain: HashSet::from([id(3)]),
                items: vec![
                    index.chunks[2],
                    ChunkEntry {
                        id: ChunkId([0; 32]),
                        offset: 0,
                        length: 2000,
                        compressed_length: 300,
                        pack: 0,
                        pack_offset: 2000,
                    }
                ],
            },
            "on the frame's base: the frame, and the chunk no frame rebuilds"
        );
        assert_eq!(
            fetches[1],
            DeviceFetches {
                frames: HashSet::new(),
                plain: HashSet::from([id(1), id(2), id(3)]),
                items: index.chunks[..3].to_vec(),
            },
            "without the frame's base: plain only"
        );
        assert_eq!(fetches[2], DeviceFetches::default(), "holding the release");
    }

    #[test]
    fn each_bases_stretch_spans_its_frames_and_the_first_bases_fallbacks_leave_it() {
        // Base 0: frames at 100 and 200, fallbacks at 300 and 400; base 1: frames at 500
        // and 600; base 2: none.
        let frames = [
            delta_frame(100, 100, &[], &[]),
            delta_frame(200, 100, &[], &[]),
            delta_frame(300, 100, &[], &[]),
            delta_frame(400, 50, &[], &[]),
            delta_frame(500, 100, &[], &[]),
            delta_frame(600, 70, &[], &[]),
        ];
        let spans = [(0..4, 2), (4..6, 0), (6..6, 0)];
        let (stretches, fallbacks) = base_stretches(&frames, &spans, Some(&HashSet::from([0, 3])));
        assert_eq!(
            stretches,
            vec![piece(100, 200), piece(500, 170), piece(0, 0)]
        );
        assert_eq!(
            fallbacks,
            vec![piece(400, 50)],
            "only the fallback its devices take"
        );
        let (_, fallbacks) = base_stretches(&frames, &spans, None);
        assert!(fallbacks.is_empty());
    }

    #[test]
    fn the_frames_against_the_first_base_lead_the_last_bases_follow_its_plain_frames() {
        const THIRD: u64 = 1 << 61;
        // Plain frames of 10 bytes: fetched by the third base only, by nobody, by the first
        // only, by the second only. Then the frames against each base (20, 30, 40 bytes),
        // then 5 bytes of image frames.
        let frames = [
            frame(0, THIRD),
            frame(10, 0),
            frame(20, FIRST),
            frame(30, SECOND),
        ];
        let order = plain_frame_order(&frames).expect("reordered");
        assert_eq!(order, [2, 3, 0, 1]);
        let bases = [piece(40, 20), piece(60, 30), piece(90, 40)];
        let pieces = pack_pieces(
            &frames,
            &order,
            &bases,
            &[],
            135,
            BasePlacement::LastAfterPlain,
        )
        .expect("laid out");
        assert_eq!(
            pieces,
            [
                piece(40, 20), // against the first base
                piece(20, 10), // its devices' plain frames
                piece(30, 10), // the second's
                piece(0, 10),  // the third's
                piece(90, 40), // against the third (last) base
                piece(60, 30), // against the second
                piece(10, 10), // nobody's
                piece(130, 5), // the rest
            ]
        );
        // Each base's devices fetch one stretch but the second's (its frames come after the
        // last base's).
        assert_eq!(base_order(3, BasePlacement::LastAfterPlain), [0, 2, 1]);
        assert_eq!(base_order(2, BasePlacement::LastAfterPlain), [0, 1]);
        assert_eq!(base_order(1, BasePlacement::LastAfterPlain), [0]);
        assert_eq!(base_order(0, BasePlacement::LastAfterPlain), [0; 0]);
    }

    #[test]
    fn the_fallbacks_the_first_bases_devices_take_follow_its_frames_the_others_go_last() {
        // One plain frame the first base's devices fetch, one nobody fetches; frames against
        // the first base at 20..50 of which 50..55 and 60..65 are fallbacks, the devices
        // taking the second; image frames at 65..70.
        let frames = [frame(0, 0), frame(10, FIRST)];
        let order = plain_frame_order(&frames).expect("reordered");
        let pieces = pack_pieces(
            &frames,
            &order,
            &[piece(20, 30)],
            &[piece(55, 5)],
            70,
            BasePlacement::LastAfterPlain,
        )
        .expect("laid out");
        assert_eq!(
            pieces,
            [
                piece(20, 30), // the frames against the first base
                piece(55, 5),  // the fallback its devices take
                piece(10, 10), // its devices' plain frames
                piece(0, 10),  // nobody's
                piece(50, 5),  // the other fallback
                piece(60, 10), // the other fallback and the image frames
            ]
        );
    }

    #[test]
    fn pieces_that_overlap_or_reach_past_the_pack_leave_it_as_it_is() {
        let lay_out = |frames: &[PlainFrame], order: &[usize], bases: &[Piece], length| {
            pack_pieces(
                frames,
                order,
                bases,
                &[],
                length,
                BasePlacement::LastAfterPlain,
            )
        };
        let frames = [frame(0, 0), frame(10, FIRST)];
        let order = [1, 0];
        assert_eq!(lay_out(&frames, &order, &[piece(15, 10)], 40), None);
        assert_eq!(lay_out(&frames, &order, &[piece(20, 30)], 40), None);
        // Already in order: frames against the only base first, its plain frames, nobody's.
        let frames = [frame(10, FIRST), frame(20, 0)];
        let pieces = lay_out(&frames, &[0, 1], &[piece(0, 10)], 30).expect("covers the pack");
        assert!(in_place(&pieces));
        // A base without frames takes no place.
        let pieces =
            lay_out(&frames, &[0, 1], &[piece(0, 10), piece(0, 0)], 30).expect("covers the pack");
        assert!(in_place(&pieces));
    }

    #[test]
    fn a_base_between_the_first_and_the_last_can_have_its_frames_follow_its_plain_frames() {
        const THIRD: u64 = 1 << 61;
        assert_eq!(
            base_placements(3),
            [
                BasePlacement::LastAfterPlain,
                BasePlacement::AfterItsPlain(1)
            ]
        );
        assert_eq!(base_placements(2), [BasePlacement::LastAfterPlain]);
        assert_eq!(base_order(3, BasePlacement::AfterItsPlain(1)), [0, 1, 2]);
        assert_eq!(base_order(4, BasePlacement::AfterItsPlain(2)), [0, 2, 3, 1]);
        // A placement naming the first or the last base is the usual one.
        assert_eq!(base_order(3, BasePlacement::AfterItsPlain(2)), [0, 2, 1]);
        // Nested sets, as three releases usually give: what the first base's devices fetch
        // plain all fetch, the second's the third's also fetch. Plain frames of 10 bytes at
        // 0 (all), 10 (second and third), 20 (third only); frames against the bases at 30
        // (20 bytes), 50 (30) and 80 (40).
        let frames = [
            frame(0, FIRST | SECOND | THIRD),
            frame(10, SECOND | THIRD),
            frame(20, THIRD),
        ];
        let order = plain_frame_order(&frames).unwrap_or_else(|| vec![0, 1, 2]);
        assert_eq!(order, [0, 1, 2]);
        let bases = [piece(30, 20), piece(50, 30), piece(80, 40)];
        let second = pack_pieces(
            &frames,
            &order,
            &bases,
            &[],
            120,
            BasePlacement::AfterItsPlain(1),
        )
        .expect("laid out");
        assert_eq!(
            second,
            [
                piece(30, 20), // against the first base
                piece(0, 10),  // fetched by all
                piece(10, 10), // by the second's and the third's devices
                piece(50, 30), // against the second base
                piece(20, 10), // by the third's
                piece(80, 40), // against the third
            ]
        );
        let last = pack_pieces(
            &frames,
            &order,
            &bases,
            &[],
            120,
            BasePlacement::LastAfterPlain,
        )
        .expect("laid out");
        // The devices on each base fetch their plain frames and the frames against it (one
        // item per frame stretch here), ranges merging no gap.
        let entry = |pack_offset, compressed_length| ChunkEntry {
            id: ChunkId([0; 32]),
            offset: 0,
            length: compressed_length,
            compressed_length,
            pack: 0,
            pack_offset,
        };
        let fetching = |items: Vec<ChunkEntry>| DeviceFetches {
            items,
            ..DeviceFetches::default()
        };
        let fetches = [
            fetching(vec![entry(0, 10), entry(30, 20)]),
            fetching(vec![entry(0, 10), entry(10, 10), entry(50, 30)]),
            fetching(vec![
                entry(0, 10),
                entry(10, 10),
                entry(20, 10),
                entry(80, 40),
            ]),
        ];
        assert_eq!(requests_by_base(&last, &fetches, 0, 0), [1, 2, 1]);
        assert_eq!(requests_by_base(&second, &fetches, 0, 0), [1, 1, 2]);
        // The last base's devices fetching one range elsewhere, the second's three: the
        // second base's frames follow its plain frames (3 + 1 against 1 + 2, not 3 + 2).
        let parts = PackParts {
            plain: &frames,
            order: &order,
            base_frames: &bases,
            first_base_fallbacks: &[],
            pack_length: 120,
        };
        let elsewhere = |n: u64| {
            (0..n).map(move |k| ChunkEntry {
                pack: 1,
                ..entry(k * 1000, 10)
            })
        };
        let mut fetches = fetches;
        fetches[1].items.extend(elsewhere(3));
        fetches[2].items.extend(elsewhere(1));
        assert_eq!(
            best_layout(&parts, &fetches, 0, 0),
            Some((BasePlacement::AfterItsPlain(1), second.clone()))
        );
        fetches[2].items.extend(elsewhere(3).skip(1));
        assert_eq!(
            best_layout(&parts, &fetches, 0, 0),
            Some((BasePlacement::LastAfterPlain, last.clone())),
            "five requests for one base either way: the usual placement"
        );
        // Items of other packs keep their offsets.
        let elsewhere = [fetching(vec![ChunkEntry {
            pack: 1,
            ..entry(1000, 10)
        }])];
        assert_eq!(requests_by_base(&last, &elsewhere, 0, 0), [1]);
    }

    #[test]
    fn the_rewritten_pack_holds_every_piece_at_its_new_offset() {
        let dir = tempfile::tempdir().unwrap();
        let old_path = dir.path().join("old.pack");
        // Three plain frames of 3, 2 and 4 bytes, 5 bytes of delta frames, 2 of image frames.
        std::fs::write(&old_path, b"aaabbccccDDDDDii").unwrap();
        let old = std::fs::File::open(&old_path).unwrap();
        let frames = [frame(0, 0), frame(3, FIRST), frame(5, FIRST)];
        let frames = frames.map(|f| PlainFrame {
            compressed_length: [3, 2, 4][f.pack_offset as usize / 2],
            ..f
        });
        let order = plain_frame_order(&frames).unwrap();
        let pieces = pack_pieces(
            &frames,
            &order,
            &[piece(9, 5)],
            &[],
            16,
            BasePlacement::LastAfterPlain,
        )
        .unwrap();
        let mut new_file = std::fs::File::create(dir.path().join("new.pack")).unwrap();
        let mut writer = PackWriter::new(&mut new_file, dir.path().to_owned());
        let starts = rewrite_pack(&old, &pieces, &mut writer).unwrap();
        let pack = writer.finish().unwrap().unwrap();
        assert_eq!(pack.length, 16);
        assert_eq!(
            std::fs::read(dir.path().join("new.pack")).unwrap(),
            b"DDDDDbbccccaaaii"
        );
        assert_eq!(pack.id, *blake3::hash(b"DDDDDbbccccaaaii").as_bytes());
        let relocation = Relocation::new(&pieces, &starts);
        let moved: Vec<u64> = [9, 3, 5, 0, 14, 11]
            .map(|old| relocation.offset(old))
            .to_vec();
        assert_eq!(moved, [0, 5, 7, 11, 14, 2]);
    }
}
