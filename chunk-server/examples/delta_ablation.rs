//! Measures how the chunks a release adds compress: one frame per chunk, grouped frames, and
//! grouped frames against bases found by anchor voting. For bench/README.md's ablation table.
//!
//!     cargo run --release -p chunk-server --example delta_ablation -- OLD.img NEW.img [LEVEL]
//!
//! Settings come from the environment as lists: GROUP_KIB (default "256,1024"), MAX_BASES
//! (bases per new chunk, "8,16"), DICT_KIB (dictionary cap, "1024,4096").

use std::collections::HashSet;
use std::time::Instant;

use chunk_server::frames::anchors::{anchors, AnchorDensity};
use chunk_server::frames::bases::{AnchorIndex, VoteRule};
use chunk_server::frames::groups::{plan_groups, GroupLimits, NewChunk};
use diffota_format::frame_codec::compress_with_prefix;
use diffota_format::{ChunkId, ChunkerParams};
use rayon::prelude::*;

fn chunks_of(path: &str) -> Vec<(ChunkId, Vec<u8>)> {
    let file = std::fs::File::open(path).expect("open image");
    ChunkerParams::DEFAULT
        .chunk_stream(std::io::BufReader::with_capacity(1 << 20, file))
        .map(|chunk| {
            let chunk = chunk.expect("read image");
            (ChunkId::of(&chunk.data), chunk.data)
        })
        .collect()
}

fn list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().parse().expect("a number"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (old_path, new_path) = (&args[1], &args[2]);
    let level: i32 = args.get(3).map_or(19, |s| s.parse().expect("level"));
    let started = Instant::now();
    let old = chunks_of(old_path);
    let new = chunks_of(new_path);
    let old_ids: HashSet<ChunkId> = old.iter().map(|(id, _)| *id).collect();
    let mut seen = HashSet::new();
    let added: Vec<&Vec<u8>> = new
        .iter()
        .filter(|(id, _)| !old_ids.contains(id) && seen.insert(*id))
        .map(|(_, data)| data)
        .collect();
    let added_bytes: usize = added.iter().map(|d| d.len()).sum();
    println!(
        "old {} chunks, new {} chunks, added {} distinct chunks ({added_bytes} bytes); cut in {:.1}s; level {level}",
        old.len(),
        new.len(),
        added.len(),
        started.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let per_chunk: usize = added
        .par_iter()
        .map(|data| compress_with_prefix(data, &[], level).unwrap().len())
        .sum();
    println!(
        "| one frame per chunk | {per_chunk} | {:.1}s |",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let mut distinct_old = HashSet::new();
    let old_distinct: Vec<&Vec<u8>> = old
        .iter()
        .filter(|(id, _)| distinct_old.insert(*id))
        .map(|(_, data)| data)
        .collect();
    let index = AnchorIndex::build(
        old_distinct
            .par_iter()
            .enumerate()
            .map(|(n, data)| (n as u32, anchors(data, AnchorDensity::DEFAULT)))
            .collect::<Vec<_>>(),
        16,
    );
    println!(
        "anchor index: {} entries over {} old chunks in {:.1}s",
        index.len(),
        old_distinct.len(),
        t.elapsed().as_secs_f64()
    );
    let added_anchors: Vec<Vec<u32>> = added
        .par_iter()
        .map(|data| anchors(data, AnchorDensity::DEFAULT))
        .collect();

    for group_kib in list("GROUP_KIB", "256,1024") {
        let t = Instant::now();
        let plain = without_bases(&added);
        let groups = plan_groups(
            &plain,
            |_| 0,
            GroupLimits {
                max_group_bytes: group_kib * 1024,
                max_dictionary_bytes: 0,
            },
        );
        let bytes: usize = groups
            .par_iter()
            .map(|g| {
                let content = concat(added[g.chunks.clone()].iter().copied());
                compress_with_prefix(&content, &[], level).unwrap().len()
            })
            .sum();
        println!(
            "| {group_kib} KiB groups, no bases | {bytes} | {:.1}s | {} groups |",
            t.elapsed().as_secs_f64(),
            groups.len()
        );
        for max_bases in list("MAX_BASES", "8,16") {
            for dict_kib in list("DICT_KIB", "1024,4096") {
                let t = Instant::now();
                let rule = VoteRule {
                    min_votes: chunk_server::make::frames::VOTE_RULE.min_votes,
                    max_bases: max_bases as usize,
                };
                let planned: Vec<NewChunk> = added
                    .par_iter()
                    .zip(&added_anchors)
                    .map(|(data, anchors)| NewChunk {
                        length: data.len() as u32,
                        votes: index.vote(anchors, rule, |_| true),
                    })
                    .collect();
                let groups = plan_groups(
                    &planned,
                    |base| old_distinct[base as usize].len() as u32,
                    GroupLimits {
                        max_group_bytes: group_kib * 1024,
                        max_dictionary_bytes: dict_kib * 1024,
                    },
                );
                let (bytes, base_count, no_base_bytes): (usize, usize, usize) = groups
                    .par_iter()
                    .map(|g| {
                        let content = concat(added[g.chunks.clone()].iter().copied());
                        let prefix = concat(g.bases.iter().map(|&b| old_distinct[b as usize]));
                        let frame = compress_with_prefix(&content, &prefix, level)
                            .unwrap()
                            .len();
                        let cost = frame + 32 * g.bases.len();
                        (
                            cost,
                            g.bases.len(),
                            if g.bases.is_empty() { cost } else { 0 },
                        )
                    })
                    .reduce(|| (0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
                println!(
                    "| {group_kib} KiB groups, <= {max_bases} bases/chunk, <= {dict_kib} KiB dictionary | {bytes} | {:.1}s | {} groups, {base_count} base refs, {no_base_bytes} bytes in groups without bases |",
                    t.elapsed().as_secs_f64(),
                    groups.len()
                );
            }
        }
    }
}

fn without_bases(data: &[&Vec<u8>]) -> Vec<NewChunk> {
    data.iter()
        .map(|d| NewChunk {
            length: d.len() as u32,
            votes: Vec::new(),
        })
        .collect()
}

fn concat<'a>(parts: impl Iterator<Item = &'a Vec<u8>>) -> Vec<u8> {
    parts.flat_map(|part| part.iter().copied()).collect()
}
