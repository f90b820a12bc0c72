//! Content anchors: the positions where a gear rolling hash over the last 64 bytes has its
//! top `bits` bits zero (about one position in 2^bits), each named by that hash. Two chunks
//! that share a run of content share the anchors inside it wherever the run sits in them,
//! so anchors find an old chunk that resembles a new one without any alignment.

/// The gear table: 256 fixed pseudo-random words (splitmix64 from a fixed seed), so
/// anchors are the same on every build host.
const GEAR: [u64; 256] = gear_table();

const fn gear_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x6469_6666_6f74_6121; // "diffota!"
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
}

/// How densely anchors are placed: one per 2^bits bytes on average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnchorDensity {
    pub bits: u32,
}

impl AnchorDensity {
    /// One anchor per 256 bytes: a 16 KiB chunk has about 64.
    pub const DEFAULT: AnchorDensity = AnchorDensity { bits: 8 };
}

/// The distinct anchors of `data`, sorted. Anchors are truncated to 32 bits: a chance
/// collision only costs a vote for an unrelated base, which the vote threshold absorbs.
pub fn anchors(data: &[u8], density: AnchorDensity) -> Vec<u32> {
    let shift = 64 - density.bits;
    let mut hash: u64 = 0;
    let mut found = Vec::with_capacity(data.len() >> density.bits.min(16));
    for (position, &byte) in data.iter().enumerate() {
        hash = (hash << 1).wrapping_add(GEAR[byte as usize]);
        // The hash covers the last 64 bytes only once 64 bytes have gone in.
        if position >= 63 && hash >> shift == 0 {
            found.push((hash & 0xffff_ffff) as u32 ^ (hash >> 32) as u32);
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::noise;

    #[test]
    fn density_is_about_one_per_256_bytes() {
        let data = noise(1, 1 << 20);
        let count = anchors(&data, AnchorDensity::DEFAULT).len();
        assert!((3000..5200).contains(&count), "{count} anchors in 1 MiB");
    }

    #[test]
    fn shared_content_shares_anchors_wherever_it_sits() {
        let shared = noise(2, 16 * 1024);
        let mut first = noise(3, 777);
        first.extend_from_slice(&shared);
        let mut second = shared.clone();
        second.extend_from_slice(&noise(4, 5000));
        let of_shared = anchors(&shared, AnchorDensity::DEFAULT);
        let of_first = anchors(&first, AnchorDensity::DEFAULT);
        let of_second = anchors(&second, AnchorDensity::DEFAULT);
        assert!(of_shared.len() > 20);
        for anchor in &of_shared {
            assert!(of_first.binary_search(anchor).is_ok());
            assert!(of_second.binary_search(anchor).is_ok());
        }
    }

    #[test]
    fn unrelated_content_shares_almost_none() {
        let a = anchors(&noise(5, 64 * 1024), AnchorDensity::DEFAULT);
        let b = anchors(&noise(6, 64 * 1024), AnchorDensity::DEFAULT);
        let shared = a.iter().filter(|x| b.binary_search(x).is_ok()).count();
        assert!(shared <= 1, "{shared} shared anchors");
    }

    #[test]
    fn short_and_empty_inputs_have_no_anchors() {
        assert!(anchors(&[], AnchorDensity::DEFAULT).is_empty());
        assert!(anchors(&[0u8; 63], AnchorDensity::DEFAULT).is_empty());
    }
}
