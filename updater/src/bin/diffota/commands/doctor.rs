use anyhow::Result;

use super::{show, Session};
use crate::exit::Exit;

pub fn run(session: &Session) -> Result<Exit> {
    let report = diffota::doctor::doctor(&session.config, session.bootloader.as_ref());
    show(&report, session.json, true)?;
    Ok(if report.failed() > 0 {
        Exit::Error
    } else {
        Exit::Done
    })
}
