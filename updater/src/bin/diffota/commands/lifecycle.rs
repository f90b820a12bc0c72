//! After a boot and by hand: mark-good, health-failed, mark-bad, rollback (the logic is
//! `diffota::lifecycle`, shared with the D-Bus service).

use anyhow::Result;
use diffota::lifecycle;
use diffota::slot::Slot;
use diffota::state::HealthFailed;

use super::{reboot_now, show, Session};
use crate::cli::SwitchArgs;
use crate::exit::Exit;

pub fn mark_good(session: &mut Session) -> Result<Exit> {
    let _lock = session.lock("mark-good")?;
    let outcome = lifecycle::mark_good(&session.config, session.bootloader.as_mut())?;
    show(&outcome, session.json, false)?;
    Ok(Exit::Done)
}

/// A health check failed: reboot a trial boot so that the bootloader counts it. Writes no
/// state, so it does not wait for the device lock.
pub fn health_failed(session: &mut Session, reboot: bool) -> Result<Exit> {
    let outcome = lifecycle::health_failed(&session.config, session.bootloader.as_ref())?;
    show(&outcome, session.json, false)?;
    match outcome {
        HealthFailed::RebootTrial { .. } => {
            if reboot {
                reboot_now(&session.config)?;
            }
            Ok(Exit::Done)
        }
        HealthFailed::NotOnTrial { .. } => Ok(Exit::NothingToDo),
    }
}

/// Where the device boots next after a switch by hand.
#[derive(serde::Serialize)]
struct Switched {
    next_slot: Slot,
    on_trial: bool,
}

impl std::fmt::Display for Switched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "slot {} boots next", self.next_slot)?;
        if self.on_trial {
            write!(f, ", on trial")?;
        }
        Ok(())
    }
}

pub fn mark_bad(session: &mut Session, switch: &SwitchArgs) -> Result<Exit> {
    let _lock = session.lock("mark-bad")?;
    let next_slot =
        lifecycle::mark_bad(&session.config, session.bootloader.as_mut(), switch.force)?;
    finish_switch(
        session,
        switch,
        Switched {
            next_slot,
            on_trial: false,
        },
    )
}

pub fn rollback(session: &mut Session, switch: &SwitchArgs) -> Result<Exit> {
    let _lock = session.lock("rollback")?;
    let next_slot =
        lifecycle::rollback(&session.config, session.bootloader.as_mut(), switch.force)?;
    finish_switch(
        session,
        switch,
        Switched {
            next_slot,
            on_trial: true,
        },
    )
}

fn finish_switch(session: &Session, switch: &SwitchArgs, switched: Switched) -> Result<Exit> {
    show(&switched, session.json, false)?;
    if switch.reboot {
        reboot_now(&session.config)?;
    }
    Ok(Exit::Done)
}
