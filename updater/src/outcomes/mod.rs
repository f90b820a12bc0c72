//! What the fleet operator learns: one report per outcome, sent to the endpoint in the
//! config's `[report]`, and a Prometheus textfile in `[metrics]`.
//!
//! An outcome is final only when the device knows it: `mark-good` commits a trial
//! (`committed`), `mark-good` finds that the bootloader fell back (`reverted`), or an install
//! fails (`install_failed`). An install that merely finished writing is not an outcome; what
//! it measured waits in the spool (`pending-install.json`) for the outcome of its trial.
//!
//! Reports are spooled in `<state_dir>/reports/` (each file replaced atomically, so a power
//! cut keeps or loses a whole report, never half of one) and removed only after the endpoint
//! answers 2xx. Each carries a stable `id`: a report re-sent after a lost answer carries the
//! same id, so the endpoint can keep it once.
//!
//! `report` is the data and its pure construction, `spool` the files, `send` the HTTP POST
//! with its backoff, `metrics` the textfile.

pub mod metrics;
pub mod report;
pub mod send;
pub mod spool;

pub use report::{
    of_mark_good, ImageFigures, OutcomeReport, OutcomeResult, PendingInstall, TrialOutcome,
};
pub use send::{send_spooled, SendSummary};
pub use spool::{Spool, SpoolError};

use std::path::Path;

use crate::config::Config;
use crate::slot::Slot;
use crate::state::{write_atomic, State};

const LAST_OUTCOME: &str = "last-outcome.json";

/// Records an outcome: kept as the last outcome (for the metrics), and queued for the
/// endpoint when the config names one.
pub fn record(config: &Config, report: &OutcomeReport) -> Result<(), SpoolError> {
    let spool = Spool::new(&config.state_dir);
    let bytes = serde_json::to_vec_pretty(report).expect("a report serializes");
    write_atomic(&reports_dir(&config.state_dir).join(LAST_OUTCOME), &bytes)?;
    if config.report.is_some() {
        spool.enqueue(report)?;
    }
    tracing::info!(event = "outcome", result = %report.result, id = %report.id, report = %report);
    Ok(())
}

fn reports_dir(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("reports")
}

fn last_outcome(state_dir: &Path) -> Option<OutcomeReport> {
    let bytes = diffota_files::local_file::read_bounded(
        &reports_dir(state_dir).join(LAST_OUTCOME),
        crate::limits::REPORT,
        diffota_files::local_file::Links::Refuse,
    )
    .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Rewrites the metrics textfile when the config names one.
pub fn write_metrics(
    config: &Config,
    state: &State,
    running: Option<Slot>,
) -> Result<(), SpoolError> {
    let Some(path) = &config.metrics.textfile else {
        return Ok(());
    };
    let spool = Spool::new(&config.state_dir);
    let last = last_outcome(&config.state_dir);
    let text = metrics::render(&metrics::MetricsInput {
        state,
        running,
        last_outcome: last.as_ref(),
        pending_reports: spool.queued()?.len(),
    });
    Ok(write_atomic(path, text.as_bytes())?)
}
