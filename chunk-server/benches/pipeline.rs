//! Regression benchmarks for the hot paths, on synthetic sample images (`cargo bench`):
//! FastCDC chunking, BLAKE3 chunk ids, zstd compression at the levels in use, and the
//! device's per-chunk work (decompress and verify).

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

criterion_group!(benches, pipeline);
criterion_main!(benches);
