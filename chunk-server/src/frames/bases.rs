//! Choosing bases: chunks the device will hold that resemble a new chunk (old chunks, and new
//! chunks of earlier frames). Every anchor of every candidate goes into an `AnchorIndex`; a
//! new chunk's anchors vote for the candidates they occur in, and the most-voted eligible
//! ones become its bases.

use std::collections::HashMap;

/// A candidate base: an old chunk (by its number in the caller's list) and how many of the
/// new chunk's anchors it shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vote {
    pub base: u32,
    pub votes: u32,
}

/// How votes become bases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteRule {
    /// An old chunk needs at least this many shared anchors (one can be chance).
    pub min_votes: u32,
    /// At most this many bases per new chunk.
    pub max_bases: usize,
}

/// Anchor -> old chunks, as one sorted array (8 bytes per anchor occurrence: about 4 MB
/// for each 1 GiB of distinct old content at the default density).
pub struct AnchorIndex {
    entries: Vec<(u32, u32)>,
}

impl AnchorIndex {
    /// `old_chunks` yields each old chunk's number and its distinct anchors. An anchor found
    /// in more than `max_postings` old chunks (zero runs, common headers) names no chunk in
    /// particular and is left out.
    pub fn build(
        old_chunks: impl IntoIterator<Item = (u32, Vec<u32>)>,
        max_postings: usize,
    ) -> AnchorIndex {
        let mut entries: Vec<(u32, u32)> = old_chunks
            .into_iter()
            .flat_map(|(base, anchors)| anchors.into_iter().map(move |anchor| (anchor, base)))
            .collect();
        entries.sort_unstable();
        entries.dedup();
        let mut kept = Vec::with_capacity(entries.len());
        for run in entries.chunk_by(|a, b| a.0 == b.0) {
            if run.len() <= max_postings {
                kept.extend_from_slice(run);
            }
        }
        kept.shrink_to_fit();
        AnchorIndex { entries: kept }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bases for a new chunk with these (distinct) anchors, among the candidates
    /// `eligible` accepts: most votes first, ties by base number, so the choice is
    /// deterministic.
    pub fn vote(
        &self,
        anchors: &[u32],
        rule: VoteRule,
        eligible: impl Fn(u32) -> bool,
    ) -> Vec<Vote> {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &anchor in anchors {
            let start = self.entries.partition_point(|&(a, _)| a < anchor);
            for &(a, base) in &self.entries[start..] {
                if a != anchor {
                    break;
                }
                *counts.entry(base).or_default() += 1;
            }
        }
        let mut votes: Vec<Vote> = counts
            .into_iter()
            .filter(|&(base, votes)| votes >= rule.min_votes && eligible(base))
            .map(|(base, votes)| Vote { base, votes })
            .collect();
        votes.sort_unstable_by(|a, b| b.votes.cmp(&a.votes).then(a.base.cmp(&b.base)));
        votes.truncate(rule.max_bases);
        votes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: VoteRule = VoteRule {
        min_votes: 2,
        max_bases: 2,
    };

    #[test]
    fn most_shared_anchors_win_and_single_votes_do_not_count() {
        let index = AnchorIndex::build(
            [
                (0, vec![1, 2, 3, 4]),
                (1, vec![3, 4, 5]),
                (2, vec![1, 9]),
                (3, vec![4, 10, 11]),
            ],
            8,
        );
        let votes = index.vote(&[1, 2, 3, 4, 5, 10], RULE, |_| true);
        assert_eq!(
            votes,
            vec![Vote { base: 0, votes: 4 }, Vote { base: 1, votes: 3 }]
        );
        assert!(index.vote(&[9, 11], RULE, |_| true).is_empty());
    }

    #[test]
    fn anchors_common_to_many_chunks_are_ignored() {
        let index = AnchorIndex::build((0..10).map(|base| (base, vec![7, 100 + base])), 3);
        assert!(index.vote(&[7, 100], RULE, |_| true).is_empty());
        assert_eq!(index.len(), 10);
    }

    #[test]
    fn ties_are_broken_by_base_number_among_the_eligible() {
        let index = AnchorIndex::build([(5, vec![1, 2]), (3, vec![1, 2]), (4, vec![1, 2])], 8);
        let bases = |eligible: fn(u32) -> bool| -> Vec<u32> {
            index
                .vote(&[1, 2], RULE, eligible)
                .iter()
                .map(|v| v.base)
                .collect()
        };
        assert_eq!(bases(|_| true), vec![3, 4]);
        assert_eq!(
            bases(|base| base != 3),
            vec![4, 5],
            "an ineligible base leaves room"
        );
    }
}
