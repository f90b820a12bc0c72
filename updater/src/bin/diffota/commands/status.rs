use anyhow::Result;

use super::{show, Session};
use crate::exit::Exit;

pub fn run(session: &Session) -> Result<Exit> {
    let report = diffota::status::status(
        &session.config,
        session.bootloader.as_ref(),
        &session.state_dir(),
    )?;
    show(&report, session.json, true)?;
    Ok(Exit::Done)
}
