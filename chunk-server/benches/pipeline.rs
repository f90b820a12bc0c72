//! Regression benchmarks for the hot paths, on synthetic sample images (`cargo bench`):
//! FastCDC chunking, BLAKE3 chunk ids, zstd compression at the levels in use, the device's
//! per-chunk work (decompress and verify), and for delta frames the base search (anchors,
//! the anchor index, voting) and the decode of a 1 MiB group against its bases.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diffota_format::{ChunkData, ChunkId, ChunkerParams};

fn sample(size: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.img");
    diffota_tests::sample::write_image(&path, size, 99, 1).unwrap();
    std::fs::read(path).unwrap()
}

fn pipeline(c: &mut Criterion) {
    let image = sample(32 << 20);
    let chunks: Vec<Vec<u8>> = ChunkerParams::DEFAULT
        .chunk_stream(&image[..])
        .map(|c| c.unwrap().data)
        .collect();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Bytes(image.len() as u64));
    group.sample_size(10);
    group.bench_function("fastcdc_chunking", |b| {
        b.iter(|| ChunkerParams::DEFAULT.chunk_stream(&image[..]).count())
    });
    group.bench_function("blake3_chunk_ids", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|c| ChunkId::of(c).0[0] as usize)
                .sum::<usize>()
        })
    });
    for level in [3, 12, 19] {
        group.bench_with_input(
            BenchmarkId::new("zstd_compress", level),
            &level,
            |b, &level| {
                b.iter(|| {
                    chunks
                        .iter()
                        .map(|c| zstd::bulk::compress(c, level).unwrap().len())
                        .sum::<usize>()
                })
            },
        );
    }
    let compressed: Vec<(Vec<u8>, ChunkId, usize)> = chunks
        .iter()
        .map(|c| {
            (
                zstd::bulk::compress(c, 12).unwrap(),
                ChunkId::of(c),
                c.len(),
            )
        })
        .collect();
    group.bench_function("decompress_and_verify", |b| {
        b.iter(|| {
            compressed
                .iter()
                .map(|(frame, id, length)| {
                    ChunkData(zstd::bulk::decompress(frame, *length).unwrap())
                        .verify(id)
                        .unwrap()
                        .bytes()
                        .len()
                })
                .sum::<usize>()
        })
    });
    group.finish();
}

/// The delta path on two releases of the sample image: release 2 edits release 1's chunks.
fn deltas(c: &mut Criterion) {
    use chunk_server::frames::anchors::{anchors, AnchorDensity};
    use chunk_server::frames::bases::AnchorIndex;
    use chunk_server::make::frames::VOTE_RULE;
    use diffota_format::frame_codec::{compress_with_prefix, decompress_with_prefix};

    let old = sample(32 << 20);
    let mut new = old.clone();
    for at in (0..new.len()).step_by(4096) {
        new[at] ^= 0x5a;
    }
    let cut = |image: &[u8]| -> Vec<Vec<u8>> {
        ChunkerParams::DEFAULT
            .chunk_stream(image)
            .map(|c| c.unwrap().data)
            .collect()
    };
    let (old_chunks, new_chunks) = (cut(&old), cut(&new));
    let mut group = c.benchmark_group("deltas");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(old.len() as u64));
    group.bench_function("anchors_and_index_of_old_release", |b| {
        b.iter(|| {
            AnchorIndex::build(
                old_chunks
                    .iter()
                    .enumerate()
                    .map(|(n, c)| (n as u32, anchors(c, AnchorDensity::DEFAULT))),
                16,
            )
            .len()
        })
    });
    let index = AnchorIndex::build(
        old_chunks
            .iter()
            .enumerate()
            .map(|(n, c)| (n as u32, anchors(c, AnchorDensity::DEFAULT))),
        16,
    );
    group.bench_function("vote_for_new_release", |b| {
        b.iter(|| {
            new_chunks
                .iter()
                .map(|c| {
                    index
                        .vote(&anchors(c, AnchorDensity::DEFAULT), VOTE_RULE, |_| true)
                        .len()
                })
                .sum::<usize>()
        })
    });
    // One 1 MiB group against the 4 MiB of old content around it.
    let content = &new[8 << 20..9 << 20];
    let prefix = &old[6 << 20..10 << 20];
    let frame = compress_with_prefix(content, prefix, 12).unwrap();
    group.throughput(Throughput::Bytes(content.len() as u64));
    group.bench_function("decode_1mib_group_against_4mib_of_bases", |b| {
        b.iter(|| {
            decompress_with_prefix(&frame, prefix, content.len())
                .unwrap()
                .len()
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline, deltas);
criterion_main!(benches);
