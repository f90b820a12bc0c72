//! Deterministic sample images that behave like root filesystem images for chunking: runs
//! of 4 KiB blocks laid out as "files" of text-like (compressible) data, binary (random)
//! data and free space (zeros). Release N+1 rewrites a few percent of the files in place,
//! fills a little free space with new files and touches scattered metadata blocks, which is
//! how an ext4 image changes between releases.

use std::io::Write;
use std::path::Path;

const BLOCK: usize = 4096;
const WORDS: &[&str] = &[
    "the", "system", "service", "config", "root", "user", "lib", "usr", "share", "python3",
    "network", "device", "kernel", "module", "update", "error", "value", "return", "import",
    "struct", "static", "const", "void", "int",
];

struct Rng(u64);

impl Rng {
    fn new(parts: &[u64]) -> Rng {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(&part.to_le_bytes());
        }
        Rng(u64::from_le_bytes(hasher.finalize().as_bytes()[..8].try_into().unwrap()) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Binary,
    Free,
}

/// Writes release `release` (1, 2, …) of the sample image family `seed`, `size` bytes.
pub fn write_image(path: &Path, size: u64, seed: u64, release: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let blocks = size.div_ceil(BLOCK as u64);
    let mut layout = Rng::new(&[seed, 0xfeed]);
    let mut block = 0u64;
    let mut file_number = 0u64;
    let mut buffer = vec![0u8; BLOCK];
    while block < blocks {
        let length = (1 + layout.below(48)).min(blocks - block);
        let kind = match layout.below(10) {
            0..=4 => Kind::Text,
            5..=7 => Kind::Binary,
            _ => Kind::Free,
        };
        // The release in which this file last changed: most files never change.
        let mut generation = 1;
        for r in 2..=release {
            let mut change = Rng::new(&[seed, file_number, r, 0xc4a9]);
            let roll = change.below(1000);
            if (kind != Kind::Free && roll < 40) || (kind == Kind::Free && roll < 120) {
                generation = r;
            }
        }
        let kind = if kind == Kind::Free && generation > 1 {
            Kind::Text
        } else {
            kind
        };
        let mut content = Rng::new(&[seed, file_number, generation]);
        for b in 0..length {
            fill_block(&mut buffer, kind, &mut content);
            // Scattered metadata blocks (inode tables, bitmaps) change every release.
            if (block + b) % 509 == 0 {
                let stamp = Rng::new(&[seed, block + b, release]).next();
                buffer[..8].copy_from_slice(&stamp.to_le_bytes());
            }
            let remaining = size - (block + b) * BLOCK as u64;
            out.write_all(&buffer[..(remaining as usize).min(BLOCK)])?;
        }
        block += length;
        file_number += 1;
    }
    out.flush()
}

fn fill_block(buffer: &mut [u8], kind: Kind, rng: &mut Rng) {
    match kind {
        Kind::Free => buffer.fill(0),
        Kind::Binary => {
            for piece in buffer.chunks_mut(8) {
                let value = rng.next().to_le_bytes();
                piece.copy_from_slice(&value[..piece.len()]);
            }
        }
        Kind::Text => {
            let mut at = 0;
            while at < buffer.len() {
                let word = WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes();
                let separator: &[u8] = if rng.below(8) == 0 { b"\n" } else { b" " };
                for &byte in word.iter().chain(separator) {
                    if at < buffer.len() {
                        buffer[at] = byte;
                        at += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_mostly_shared() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        write_image(&a, 4 << 20, 7, 1).unwrap();
        write_image(&b, 4 << 20, 7, 1).unwrap();
        write_image(&c, 4 << 20, 7, 2).unwrap();
        let (a, b, c) = (
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            std::fs::read(c).unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 4 << 20);
        let same = a
            .chunks(BLOCK)
            .zip(c.chunks(BLOCK))
            .filter(|(x, y)| x == y)
            .count();
        let fraction = same as f64 / (a.len() / BLOCK) as f64;
        assert!(
            (0.80..0.99).contains(&fraction),
            "{fraction} of blocks unchanged"
        );
    }
}
