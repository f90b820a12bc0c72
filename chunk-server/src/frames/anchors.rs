//! Content anchors: the positions where a gear hash of the last 8 bytes has its top `bits`
//! bits zero (about one position in 2^bits), each named by that hash. Two chunks that share
//! a run of content share the anchors inside it wherever the run sits in them, so anchors
//! find an old chunk that resembles a new one without any alignment.
//!
//! The window is short on purpose: a rebuilt executable differs from its old version every
//! few dozen bytes (relocated addresses, shifted offsets), so 64-byte windows rarely match
//! there while 8-byte ones still do. On the bench's roll-up pairs (bench/README.md) 8-byte
//! windows at one anchor per 128 bytes, with 3 votes for a base, made the delta frames 1.9%
//! (ext4) and 1.8% (erofs) smaller than 64-byte windows at one per 256 with 2 votes; the
//! make took 3% less time on ext4 and 10% more on erofs. Chance matches of short windows are
//! what the third vote absorbs.

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

/// The bytes an anchor's hash covers: shifting by 64 / WINDOW bits a byte leaves exactly
/// the last WINDOW bytes in the 64-bit hash.
pub const WINDOW: usize = 8;

/// How densely anchors are placed: one per 2^bits bytes on average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnchorDensity {
    pub bits: u32,
}

impl AnchorDensity {
    /// One anchor per 128 bytes: a 16 KiB chunk has about 128.
    pub const DEFAULT: AnchorDensity = AnchorDensity { bits: 7 };
}

/// The distinct anchors of `data`, sorted. Anchors are truncated to 32 bits: a chance
/// collision only costs a vote for an unrelated base, which the vote threshold absorbs.
pub fn anchors(data: &[u8], density: AnchorDensity) -> Vec<u32> {
    let shift = 64 - density.bits;
    let mut hash: u64 = 0;
    let mut found = Vec::with_capacity(data.len() >> density.bits.min(16));
    for (position, &byte) in data.iter().enumerate() {
        hash = (hash << (64 / WINDOW)).wrapping_add(GEAR[byte as usize]);
        // The hash covers a whole window only once WINDOW bytes have gone in.
        if position >= WINDOW - 1 && hash >> shift == 0 {
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
    use crate::frames::noise;

    #[test]
    fn density_is_about_one_per_128_bytes() {
        let data = noise(1, 1 << 20);
        let count = anchors(&data, AnchorDensity::DEFAULT).len();
        assert!((6500..10000).contains(&count), "{count} anchors in 1 MiB");
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
    fn content_changed_every_32_bytes_still_shares_most_anchors() {
        // What a rebuilt executable looks like next to its old version: the same bytes with
        // a small change every few dozen bytes. 64-byte windows would share none of them.
        let old = noise(8, 64 * 1024);
        let mut rebuilt = old.clone();
        for byte in rebuilt.iter_mut().step_by(32) {
            *byte ^= 0x5a;
        }
        let of_old = anchors(&old, AnchorDensity::DEFAULT);
        let of_rebuilt = anchors(&rebuilt, AnchorDensity::DEFAULT);
        let shared = of_rebuilt
            .iter()
            .filter(|a| of_old.binary_search(a).is_ok())
            .count();
        assert!(
            shared * 2 > of_old.len(),
            "{shared} of {} anchors shared",
            of_old.len()
        );
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
        assert!(anchors(&[0u8; WINDOW - 1], AnchorDensity::DEFAULT).is_empty());
    }
}
