//! What the tests of several crates share: deterministic bytes to chunk, compress and
//! patch. Used by the unit tests of `diffota-format` and `chunk-server` and by the
//! end-to-end suite (`diffota-tests`), so that "noise" means the same bytes everywhere.

/// `len` deterministic, incompressible bytes (xorshift64 from `seed`): content that no other
/// seed shares by chance, so chunks of it are never found elsewhere.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// `content` with one byte flipped every 4 KiB from `first`: a rebuilt binary, changed in
/// place all over.
pub fn edited(content: &[u8], first: usize) -> Vec<u8> {
    let mut out = content.to_vec();
    for at in (first..out.len()).step_by(4096) {
        out[at] ^= 0x5a;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_and_seeds_differ() {
        assert_eq!(noise(1, 4096), noise(1, 4096));
        assert_ne!(noise(1, 4096), noise(2, 4096));
        let bytes = noise(3, 1 << 16);
        let distinct = bytes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        assert_eq!(distinct, 256);
    }

    #[test]
    fn edits_one_byte_every_4_kib_from_first() {
        let content = vec![0u8; 10_000];
        let out = edited(&content, 100);
        let changed: Vec<usize> = (0..out.len()).filter(|&i| out[i] != 0).collect();
        assert_eq!(changed, vec![100, 4196, 8292]);
    }
}
