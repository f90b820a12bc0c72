use anyhow::{Context, Result};
use diffota::install::InstallOptions;
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
    let keys = diffota::keys::trusted_keys(&session.config)?;
    let mut device = device(&session.config, &keys, session.bootloader.as_mut())?;
    let reporter = Reporter::new(session.json);
    let outcome = runtime()?
        .block_on(diffota::install::install(
            &mut device,
            &release.target(&session.config),
            options,
            &reporter,
        ))
        .context("installing")?;
    // JSON: the outcome is the last line of the event stream.
    show(&outcome, session.json, false)?;
    if outcome.installed() && reboot {
        reboot_now(&session.config)?;
    }
    Ok(Exit::from(&outcome))
}
