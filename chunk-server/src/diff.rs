//! `chunk-server diff OLD NEW`: what a device on OLD downloads to reach NEW, with the same
//! range merging the device uses, so the figures match what the server will see.

use std::collections::HashSet;

use diffota_format::ranges::plan_ranges;
use diffota_format::Index;

#[derive(Debug, PartialEq, serde::Serialize)]
pub struct DiffReport {
    pub from: String,
    pub to: String,
    pub chunks: u64,
    pub reused_chunks: u64,
    pub fetched_chunks: u64,
    pub reused_bytes: u64,
    pub fetched_image_bytes: u64,
    /// Compressed chunk bytes plus merge gaps plus the index and its signature.
    pub download_bytes: u64,
    /// Range requests for chunks plus one each for the index and its signature.
    pub requests: u64,
}

/// `index_bytes` is the size of NEW's index file plus its signature.
pub fn diff(old: &Index, new: &Index, index_bytes: u64, max_gap: u64) -> DiffReport {
    let held: HashSet<_> = old.chunks.iter().map(|c| c.id).collect();
    let (reused, fetched): (Vec<_>, Vec<_>) = new.chunks.iter().partition(|c| held.contains(&c.id));
    let fetched: Vec<_> = fetched.into_iter().copied().collect();
    let ranges = plan_ranges(&fetched, max_gap);
    DiffReport {
        from: old.version.clone(),
        to: new.version.clone(),
        chunks: new.chunks.len() as u64,
        reused_chunks: reused.len() as u64,
        fetched_chunks: fetched.len() as u64,
        reused_bytes: reused.iter().map(|c| u64::from(c.length)).sum(),
        fetched_image_bytes: fetched.iter().map(|c| u64::from(c.length)).sum(),
        download_bytes: ranges.iter().map(|r| r.length()).sum::<u64>() + index_bytes,
        requests: ranges.len() as u64 + 2,
    }
}

impl std::fmt::Display for DiffReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} -> {}", self.from, self.to)?;
        writeln!(
            f,
            "  chunks           {} ({} reused, {} fetched)",
            self.chunks, self.reused_chunks, self.fetched_chunks
        )?;
        writeln!(
            f,
            "  image bytes      {} reused, {} fetched",
            self.reused_bytes, self.fetched_image_bytes
        )?;
        write!(
            f,
            "  download         {} bytes in {} requests (index included)",
            self.download_bytes, self.requests
        )
    }
}
