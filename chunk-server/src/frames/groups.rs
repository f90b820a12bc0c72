//! Grouping new chunks into frames. Neighbouring new chunks (in image order) share a frame
//! up to a size limit, since small frames compress badly; each frame's dictionary is the
//! concatenation of the bases its chunks voted for, most votes overall first, up to a size
//! cap. The device needs the dictionary and one frame in memory, so both limits bound its
//! memory.

use std::collections::HashMap;
use std::ops::Range;

use super::bases::Vote;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLimits {
    /// A group holds new chunks up to this many bytes (a chunk larger alone still forms one).
    pub max_group_bytes: u64,
    /// Bases beyond this many bytes of dictionary are left out.
    pub max_dictionary_bytes: u64,
}

/// One new chunk to place: its length and the bases it voted for.
pub struct NewChunk {
    pub length: u32,
    pub votes: Vec<Vote>,
}

/// A planned frame: a run of the new chunks and the bases of its dictionary, in dictionary
/// order (the most-voted base last, nearest the content, where zstd's offsets are cheapest).
#[derive(Debug, PartialEq, Eq)]
pub struct PlannedGroup {
    pub chunks: Range<usize>,
    pub bases: Vec<u32>,
}

/// Plans the groups of `chunks`; `base_length` gives each base's length. The groups are
/// those of [`group_ranges`]: which chunks share a frame depends on their lengths alone.
pub fn plan_groups(
    chunks: &[NewChunk],
    base_length: impl Fn(u32) -> u32,
    limits: GroupLimits,
) -> Vec<PlannedGroup> {
    group_ranges(chunks.iter().map(|c| c.length), limits)
        .into_iter()
        .map(|range| PlannedGroup {
            bases: dictionary(
                &chunks[range.clone()],
                &base_length,
                limits.max_dictionary_bytes,
            ),
            chunks: range,
        })
        .collect()
}

/// Runs of neighbouring chunks of these `lengths`, each up to the group size limit (a chunk
/// larger than the limit alone still forms one).
pub fn group_ranges(
    lengths: impl IntoIterator<Item = u32>,
    limits: GroupLimits,
) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut count, mut bytes) = (0, 0, 0u64);
    for length in lengths {
        if count > start && bytes + u64::from(length) > limits.max_group_bytes {
            ranges.push(start..count);
            (start, bytes) = (count, 0);
        }
        bytes += u64::from(length);
        count += 1;
    }
    if count > start {
        ranges.push(start..count);
    }
    ranges
}

/// A dictionary of the content just before a group (`preceding`: the chunks before it, in
/// order, as many as make up `window` bytes counting back from the group) after the voted
/// `bases` (in dictionary order, the best last) that are not among them, as many of those
/// as fit in the rest of `cap`, the best first. What a whole-image compressor has: the
/// content it just read, and the older content it matched.
pub fn with_preceding(
    bases: &[u32],
    preceding: &[u32],
    base_length: impl Fn(u32) -> u32,
    window: u64,
    cap: u64,
) -> Vec<u32> {
    let mut recent = Vec::new();
    let mut recent_bytes = 0u64;
    for &chunk in preceding.iter().rev() {
        let length = u64::from(base_length(chunk));
        if recent_bytes + length > window.min(cap) {
            break;
        }
        recent_bytes += length;
        recent.push(chunk);
    }
    recent.reverse();
    let in_window: std::collections::HashSet<u32> = recent.iter().copied().collect();
    let mut voted = Vec::new();
    let mut voted_bytes = 0u64;
    for &base in bases.iter().rev().filter(|b| !in_window.contains(b)) {
        let length = u64::from(base_length(base));
        if recent_bytes + voted_bytes + length <= cap {
            voted_bytes += length;
            voted.push(base);
        }
    }
    voted.reverse();
    voted.extend(recent);
    voted
}

fn dictionary(chunks: &[NewChunk], base_length: &impl Fn(u32) -> u32, cap: u64) -> Vec<u32> {
    let mut total: HashMap<u32, u64> = HashMap::new();
    for vote in chunks.iter().flat_map(|c| &c.votes) {
        *total.entry(vote.base).or_default() += u64::from(vote.votes);
    }
    let mut ranked: Vec<(u32, u64)> = total.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut chosen = Vec::new();
    let mut bytes = 0u64;
    for (base, _) in ranked {
        let length = u64::from(base_length(base));
        if bytes + length <= cap {
            bytes += length;
            chosen.push(base);
        }
    }
    chosen.reverse();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(length: u32, votes: &[(u32, u32)]) -> NewChunk {
        NewChunk {
            length,
            votes: votes
                .iter()
                .map(|&(base, votes)| Vote { base, votes })
                .collect(),
        }
    }

    const LIMITS: GroupLimits = GroupLimits {
        max_group_bytes: 100,
        max_dictionary_bytes: 50,
    };

    #[test]
    fn neighbours_share_a_group_up_to_the_limit() {
        let chunks = [
            chunk(40, &[]),
            chunk(40, &[]),
            chunk(40, &[]),
            chunk(300, &[]),
            chunk(10, &[]),
        ];
        let groups = plan_groups(&chunks, |_| 20, LIMITS);
        let ranges: Vec<_> = groups.iter().map(|g| g.chunks.clone()).collect();
        assert_eq!(ranges, vec![0..2, 2..3, 3..4, 4..5]);
    }

    #[test]
    fn the_preceding_window_comes_last_and_the_best_voted_bases_fill_the_rest() {
        // Chunks 0..10 of 10 bytes each precede the group; voted bases (best last): 20, 3,
        // 9, 21, 22 (30 bytes each for 20..; 3 and 9 are in the window).
        let length = |n: u32| if n >= 20 { 30 } else { 10 };
        let preceding: Vec<u32> = (0..10).collect();
        let voted = [20, 3, 9, 21, 22];
        // A 40-byte window (chunks 6..10), a 100-byte cap: 60 bytes left for 22 and 21.
        assert_eq!(
            with_preceding(&voted, &preceding, length, 40, 100),
            vec![21, 22, 6, 7, 8, 9]
        );
        // No window: the voted bases that fit the cap, best first (20 does not).
        assert_eq!(
            with_preceding(&voted, &preceding, length, 0, 100),
            vec![3, 9, 21, 22]
        );
        // Nothing before the group: the voted bases alone.
        assert_eq!(with_preceding(&[1, 2], &[], length, 40, 100), vec![1, 2]);
        // A window larger than the cap is cut to it.
        assert_eq!(
            with_preceding(&voted, &preceding, length, 1000, 30),
            vec![7, 8, 9]
        );
    }

    #[test]
    fn dictionary_takes_the_most_voted_bases_that_fit_and_puts_the_best_last() {
        let chunks = [chunk(30, &[(1, 5), (2, 3)]), chunk(30, &[(2, 4), (3, 2)])];
        // totals: base 2 = 7, base 1 = 5, base 3 = 2; lengths 20 each, cap 50: two fit.
        let groups = plan_groups(&chunks, |_| 20, LIMITS);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].bases, vec![1, 2]);
    }

    #[test]
    fn a_base_too_large_is_skipped_for_smaller_ones() {
        let chunks = [chunk(30, &[(1, 9), (2, 3)])];
        let groups = plan_groups(&chunks, |base| if base == 1 { 60 } else { 20 }, LIMITS);
        assert_eq!(groups[0].bases, vec![2]);
    }

    #[test]
    fn no_chunks_no_groups() {
        assert!(plan_groups(&[], |_| 0, LIMITS).is_empty());
    }
}
