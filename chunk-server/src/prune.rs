//! `chunk-server prune --keep N`: removes all but the newest N releases (a release a channel
//! file points at is always kept), then the packs no kept release uses, then leftover
//! temporary files of interrupted runs.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::store::{io_error, read_index, Store, StoreError};

#[derive(Debug, Default, serde::Serialize)]
pub struct PruneReport {
    /// Nothing was removed: this is what would have been.
    pub dry_run: bool,
    pub removed_releases: Vec<String>,
    pub removed_packs: Vec<String>,
    pub freed_bytes: u64,
    /// Kept releases whose delta frames build on chunks of removed releases, and how many
    /// such frames each has: they stay (signed, in the kept packs) for devices still on a
    /// removed release; every other device takes the plain frames, and `verify` counts them
    /// as not checkable rather than as problems.
    pub frames_on_removed_releases: Vec<(String, u64)>,
}

pub fn prune(store: &Store, keep: usize, dry_run: bool) -> Result<PruneReport, StoreError> {
    let releases = store.releases()?;
    let mut versions: Vec<String> = releases.iter().map(|r| r.version.clone()).collect();
    versions.dedup();
    let pinned = channel_versions(store);
    let keep_versions: HashSet<&String> = versions
        .iter()
        .rev()
        .take(keep)
        .chain(versions.iter().filter(|v| pinned.contains(*v)))
        .collect();
    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    let mut used_packs = HashSet::new();
    let mut kept = Vec::new();
    for release in &releases {
        if keep_versions.contains(&release.version) {
            let index = read_index(&release.path)?;
            used_packs.extend(index.packs.iter().map(|p| p.id));
            kept.push((release.version.clone(), index));
        }
    }
    let kept_chunks: HashSet<_> = kept
        .iter()
        .flat_map(|(_, index)| index.chunks.iter().map(|c| c.id))
        .collect();
    for (version, index) in &kept {
        let on_removed = index
            .deltas
            .frames
            .iter()
            .filter(|frame| {
                index
                    .deltas
                    .dictionary_bases(frame)
                    .any(|base| !kept_chunks.contains(&base.id))
            })
            .count() as u64;
        if on_removed > 0 {
            report
                .frames_on_removed_releases
                .push((version.clone(), on_removed));
        }
    }
    for version in versions.iter().filter(|v| !keep_versions.contains(v)) {
        let dir = store.root().join("releases").join(version);
        report.removed_releases.push(version.clone());
        if !dry_run {
            fs_err::remove_dir_all(&dir).map_err(io_error(&dir))?;
        }
    }
    let packs_dir = store.packs_dir();
    if packs_dir.exists() {
        for entry in fs_err::read_dir(&packs_dir).map_err(io_error(&packs_dir))? {
            let path: PathBuf = entry.map_err(io_error(&packs_dir))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let in_use = name
                .strip_suffix(".pack")
                .and_then(|hex| diffota_format::parse_hex32(hex).ok())
                .is_some_and(|id| used_packs.contains(&id));
            let stale_temp = name.starts_with(".tmp-");
            if in_use || (!stale_temp && !name.ends_with(".pack")) {
                continue;
            }
            report.freed_bytes += fs_err::metadata(&path).map(|m| m.len()).unwrap_or(0);
            report.removed_packs.push(name);
            if !dry_run {
                fs_err::remove_file(&path).map_err(io_error(&path))?;
            }
        }
    }
    Ok(report)
}

/// Versions named by channel files (read without signature checks: this only decides what
/// not to delete).
fn channel_versions(store: &Store) -> HashSet<String> {
    let dir = store.root().join("channels");
    let mut versions = HashSet::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "json") {
            let bytes = diffota_files::local_file::read_bounded(
                &entry.path(),
                diffota_format::limits::CHANNEL,
                diffota_files::local_file::Links::Follow,
            );
            if let Ok(channel) = bytes
                .map_err(|_| ())
                .and_then(|b| diffota_format::Channel::parse(&b).map_err(|_| ()))
            {
                versions.insert(channel.release.version);
            }
        }
    }
    versions
}

impl std::fmt::Display for PruneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for release in &self.removed_releases {
            writeln!(f, "{verb} release {release}")?;
        }
        for pack in &self.removed_packs {
            writeln!(f, "{verb} pack {pack}")?;
        }
        for (version, frames) in &self.frames_on_removed_releases {
            writeln!(f, "kept release {version}: {frames} delta frames build on removed releases; only devices still on those use them, others take the plain frames")?;
        }
        write!(f, "{verb} {} bytes", self.freed_bytes)
    }
}
