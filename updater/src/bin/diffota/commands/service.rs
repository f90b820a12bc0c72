//! `diffota service`: the D-Bus service (`diffota::service`), until stopped.

use anyhow::{Context, Result};

use super::{runtime, Session};
use crate::exit::Exit;

pub fn run(session: &Session) -> Result<Exit> {
    runtime()?
        .block_on(diffota::service::serve(session.config.clone()))
        .context("D-Bus service")?;
    Ok(Exit::Done)
}
