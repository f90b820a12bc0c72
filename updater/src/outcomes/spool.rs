//! The report spool in `<state_dir>/reports/`: the measurements of the install waiting for
//! its trial (`pending-install.json`) and the reports not yet acknowledged
//! (`<unix time>-<id>.json`, sent oldest first). Every file is replaced atomically; a
//! removal is made durable by syncing the directory.

use std::path::{Path, PathBuf};

use crate::limits;
use diffota_files::atomic;
use diffota_files::local_file::{self, Links};

use super::report::{OutcomeReport, PendingInstall};
use crate::state::{write_atomic, StateError};

/// Reports kept at most; past this the oldest are dropped (and said so), so that a device
/// whose endpoint is gone for years does not fill its data partition.
pub const MAX_QUEUED: usize = 256;

const PENDING_INSTALL: &str = "pending-install.json";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn new(state_dir: &Path) -> Spool {
        Spool {
            dir: state_dir.join("reports"),
        }
    }

    pub fn set_pending_install(&self, install: &PendingInstall) -> Result<(), SpoolError> {
        let bytes = serde_json::to_vec_pretty(install).expect("a report serializes");
        Ok(write_atomic(&self.dir.join(PENDING_INSTALL), &bytes)?)
    }

    /// The install waiting for its trial's outcome. An unreadable file counts as none: its
    /// report then lacks the install's figures, which is not worth failing `mark-good` for.
    pub fn pending_install(&self) -> Option<PendingInstall> {
        let path = self.dir.join(PENDING_INSTALL);
        let bytes = read_report(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(install) => Some(install),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable pending install record; reporting without it");
                None
            }
        }
    }

    pub fn clear_pending_install(&self) -> Result<(), SpoolError> {
        remove(&self.dir.join(PENDING_INSTALL))
    }

    /// Adds `report` to the queue (once: the same id replaces itself), dropping the oldest
    /// reports beyond `MAX_QUEUED`.
    pub fn enqueue(&self, report: &OutcomeReport) -> Result<(), SpoolError> {
        let bytes = serde_json::to_vec_pretty(report).expect("a report serializes");
        write_atomic(&self.dir.join(file_name(report)), &bytes)?;
        let queued = self.queued()?;
        if queued.len() > MAX_QUEUED {
            for (path, old) in &queued[..queued.len() - MAX_QUEUED] {
                tracing::warn!(id = %old.id, report = %old, "report spool full; dropping the oldest unsent report");
                remove(path)?;
            }
        }
        Ok(())
    }

    /// The queued reports, oldest first. A file that cannot be read (not a regular file, a
    /// link, past `limits::REPORT`) or does not parse is renamed to `*.unreadable` (kept for
    /// a person to look at) so that it cannot block the queue.
    pub fn queued(&self) -> Result<Vec<(PathBuf, OutcomeReport)>, SpoolError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(io(&self.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if is_queued_name(name) {
                paths.push(path);
            }
        }
        paths.sort();
        let mut queued = Vec::new();
        for path in paths {
            let parsed = read_report(&path).and_then(|bytes| {
                serde_json::from_slice::<OutcomeReport>(&bytes).map_err(std::io::Error::other)
            });
            match parsed {
                Ok(report) => queued.push((path, report)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let aside = path.with_extension("unreadable");
                    tracing::warn!(path = %path.display(), error = %e, "unreadable report moved aside");
                    std::fs::rename(&path, &aside).map_err(io(&path))?;
                }
            }
        }
        Ok(queued)
    }

    /// Held while reports are sent: two runs (the report unit, an install) never send the
    /// same report at once.
    pub fn sending_lock(&self) -> Result<crate::state::DeviceLock, crate::state::LockError> {
        crate::state::DeviceLock::acquire_at(self.dir.join(".sending"), "report")
    }

    /// A report the endpoint acknowledged.
    pub fn remove(&self, path: &Path) -> Result<(), SpoolError> {
        remove(path)
    }
}

/// One file of the spool: ours, so a regular file and not a link, at most `limits::REPORT`.
fn read_report(path: &Path) -> std::io::Result<Vec<u8>> {
    local_file::read_bounded(path, limits::REPORT, Links::Refuse)
}

fn file_name(report: &OutcomeReport) -> String {
    format!("{:020}-{}.json", report.at, report.id)
}

/// `<20 digits>-<id>.json`: a queued report (not the pending install, the last outcome, a
/// temporary file or a file moved aside).
fn is_queued_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".json") else {
        return false;
    };
    match stem.split_once('-') {
        Some((time, id)) => {
            time.len() == 20
                && time.bytes().all(|b| b.is_ascii_digit())
                && !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        None => false,
    }
}

fn remove(path: &Path) -> Result<(), SpoolError> {
    match std::fs::remove_file(path) {
        Ok(()) => atomic::sync_parent(path).map_err(io(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcomes::report::OutcomeResult;

    fn failed(at: u64) -> OutcomeReport {
        OutcomeReport::of_failed_install("dev", None, Some("2.0"), format!("error {at}"), at)
    }

    #[test]
    fn queued_oldest_first_once_per_id_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        assert!(spool.queued().unwrap().is_empty());
        spool.enqueue(&failed(20)).unwrap();
        spool.enqueue(&failed(10)).unwrap();
        spool.enqueue(&failed(10)).unwrap();
        let queued = spool.queued().unwrap();
        assert_eq!(
            queued.iter().map(|(_, r)| r.at).collect::<Vec<_>>(),
            [10, 20]
        );
        assert_eq!(queued[0].1.result, OutcomeResult::InstallFailed);
        spool.remove(&queued[0].0).unwrap();
        assert_eq!(spool.queued().unwrap().len(), 1);
        for at in 100..100 + MAX_QUEUED as u64 {
            spool.enqueue(&failed(at)).unwrap();
        }
        let queued = spool.queued().unwrap();
        assert_eq!(queued.len(), MAX_QUEUED);
        assert_eq!(queued[0].1.at, 100, "the oldest was dropped");
    }

    #[test]
    fn an_unreadable_report_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        spool.enqueue(&failed(1)).unwrap();
        let bad = dir.path().join("reports/00000000000000000000-bad.json");
        std::fs::write(dir.path().join("reports/last-outcome.json"), b"{}").unwrap();
        std::fs::write(&bad, b"{").unwrap();
        assert_eq!(spool.queued().unwrap().len(), 1);
        assert!(bad.with_extension("unreadable").exists());
    }

    #[test]
    fn pending_install_set_read_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        assert_eq!(spool.pending_install(), None);
        let install = PendingInstall {
            from_version: None,
            to_version: "2.0".into(),
            slot: crate::slot::Slot::B,
            downloaded_bytes: 1,
            requests: 1,
            install_seconds: 0.5,
            finished_at: 3,
            images: Vec::new(),
        };
        spool.set_pending_install(&install).unwrap();
        assert_eq!(spool.pending_install(), Some(install));
        assert!(spool.queued().unwrap().is_empty(), "not a report");
        spool.clear_pending_install().unwrap();
        assert_eq!(spool.pending_install(), None);
    }
}
