use anyhow::{Context, Result};
use diffota::install::InstallOptions;
use diffota::outcomes::{self, Spool};
use diffota::progress::Reporter;

use super::{device, reboot_now, runtime, show, Session};
use crate::cli::ReleaseArgs;
use crate::exit::Exit;

pub fn run(
    session: &mut Session,
    release: &ReleaseArgs,
    options: InstallOptions,
    reboot: bool,
) -> Result<Exit> {
    let _lock = session.lock("install")?;
    let runtime = runtime()?;
    send_earlier_reports(session, &runtime);
    let keys = diffota::keys::trusted_keys(&session.config)?;
    let config = &session.config;
    let mut device = device(config, &keys, session.bootloader.as_mut())?;
    let reporter = Reporter::new(session.json);
    let result = runtime.block_on(diffota::lifecycle::install_recorded(
        &mut device,
        &release.target(config),
        options,
        &reporter,
    ));
    let outcome = result.context("installing")?;
    // JSON: the outcome is the last line of the event stream.
    show(&outcome, session.json, false)?;
    if outcome.installed() && reboot {
        reboot_now(&session.config)?;
    }
    Ok(Exit::from(&outcome))
}

/// Before an install, one try at the reports an earlier run could not send (the timer's
/// run is their retry); a failure here never stops the install.
fn send_earlier_reports(session: &Session, runtime: &tokio::runtime::Runtime) {
    let config = &session.config;
    if config.report.is_none() {
        return;
    }
    let spool = Spool::new(&config.state_dir);
    match runtime.block_on(outcomes::send_spooled(config, &spool, 1)) {
        Ok(summary) if summary.pending > 0 => {
            tracing::warn!(summary = %summary, "outcome reports left for a later run")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "outcome reports not sent"),
    }
}
