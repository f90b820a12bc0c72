//! Delta frames: new chunks compressed against old chunks a device already holds. The
//! make side's pure logic: content anchors, the base search by anchor voting, and how new
//! chunks are grouped into frames with their bases.

pub mod anchors;
pub mod bases;
pub mod encode;
pub mod groups;
