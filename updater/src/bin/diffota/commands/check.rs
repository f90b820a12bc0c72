use anyhow::{Context, Result};

use super::{device, runtime, show, Session};
use crate::cli::ReleaseArgs;
use crate::exit::Exit;

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
