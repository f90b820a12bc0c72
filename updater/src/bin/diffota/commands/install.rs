use anyhow::Result;
use diffota::install::InstallOptions;
use diffota::outcomes::{self, Spool};
use diffota::progress::{Reporter, VersionSeen};

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
    let from_version = diffota::lifecycle::running_version(config);
    let mut device = device(config, &keys, session.bootloader.as_mut())?;
    let device_id = device.device_id.clone();
    let reporter = Reporter::new(session.json);
    let watched = VersionSeen::new(&reporter);
    let result = runtime
        .block_on(diffota::install::install(
            &mut device,
            &release.target(config),
            options,
            &watched,
        ))
        .map_err(|error| anyhow::Error::from(error).context("installing"));
    let started = watched.version();
    let error = result.as_ref().err().map(|e| format!("{e:#}"));
    diffota::lifecycle::record_install(
        config,
        &device_id,
        from_version,
        started.as_deref(),
        result
            .as_ref()
            .map_err(|_| error.as_deref().unwrap_or_default()),
    );
    let outcome = result?;
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
