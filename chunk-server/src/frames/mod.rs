//! Delta frames: new chunks compressed against old chunks a device already holds. The
//! make side's pure logic: content anchors, the base search by anchor voting, and how new
//! chunks are grouped into frames with their bases. The codec both sides share is
//! `diffota_format::frame_codec`.

pub mod anchors;
pub mod bases;
pub mod covers;
pub mod groups;

/// Deterministic incompressible test bytes, shared with the other crates' tests.
#[cfg(test)]
pub(crate) use diffota_test_support::noise;
