use anyhow::{Context, Result};

use super::{device, runtime, show, Session};
use crate::cli::ReleaseArgs;
use crate::exit::Exit;

/// `provision`: holds the device lock, like every command that changes the state.
pub fn provision(session: &mut Session, release: &ReleaseArgs) -> Result<Exit> {
    let _lock = session.lock("provision")?;
    let keys = diffota::keys::trusted_keys(&session.config)?;
    let device = device(&session.config, &keys, session.bootloader.as_mut())?;
    let report = runtime()?
        .block_on(diffota::install::provision(
            &device,
            &release.target(&session.config),
        ))
        .context("provisioning the running slot")?;
    show(&report, session.json, true)?;
    Ok(Exit::Done)
}

pub fn run(session: &mut Session, release: &ReleaseArgs) -> Result<Exit> {
    let keys = diffota::keys::trusted_keys(&session.config)?;
    let device = device(&session.config, &keys, session.bootloader.as_mut())?;
    let report = runtime()?
        .block_on(diffota::install::check(
            &device,
            &release.target(&session.config),
        ))
        .context("checking for an update")?;
    show(&report, session.json, true)?;
    Ok(Exit::from(&report))
}
