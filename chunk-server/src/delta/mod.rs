//! Delta frames: new chunks compressed against old chunks a device already holds. The
//! make side's pure logic: content anchors, the base search by anchor voting, and how new
//! chunks are grouped into frames with their bases. The codec both sides share is
//! `diffota_format::delta`.

pub mod anchors;
pub mod bases;
pub mod groups;

/// Deterministic incompressible test bytes (xorshift64).
#[cfg(test)]
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
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
