//! `diffota report`: sends the outcome reports the spool holds.

use anyhow::{bail, Result};
use diffota::outcomes::{self, Spool};

use super::{runtime, show, Session};
use crate::exit::Exit;

pub fn run(session: &Session) -> Result<Exit> {
    let config = &session.config;
    let Some(endpoint) = &config.report else {
        diffota_cli::outln!("no [report] endpoint is configured: nothing to send");
        return Ok(Exit::NothingToDo);
    };
    let spool = Spool::new(&config.state_dir);
    let summary = runtime()?.block_on(outcomes::send_spooled(config, &spool, endpoint.attempts))?;
    diffota::lifecycle::refresh_metrics(config);
    show(&summary, session.json, false)?;
    if summary.pending > 0 {
        bail!(
            "{} outcome reports are still waiting for {}; the next run retries them",
            summary.pending,
            endpoint.url
        );
    }
    Ok(Exit::Done)
}
