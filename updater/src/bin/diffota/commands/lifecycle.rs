//! After a boot and by hand: mark-good, health-failed, mark-bad, rollback.

use anyhow::Result;
use diffota::slot::{booted_slot, Slot};
use diffota::state::{DeviceState, HealthFailed};

use super::{reboot_now, show, Session};
use crate::cli::SwitchArgs;
use crate::exit::Exit;

fn running(session: &Session) -> Result<Slot> {
    let config = &session.config;
    Ok(booted_slot(
        &config.boot.cmdline,
        &config.slots.a,
        &config.slots.b,
    )?)
}

pub fn mark_good(session: &mut Session) -> Result<Exit> {
    let _lock = session.lock("mark-good")?;
    let running = running(session)?;
    let boot_id = diffota::system::boot_id(&session.config.boot.boot_id_file);
    let outcome = DeviceState::load(&session.state_dir())?.mark_good(
        running,
        session.bootloader.as_mut(),
        boot_id.as_deref(),
    )?;
    show(&outcome, session.json, false)?;
    Ok(Exit::Done)
}

/// A health check failed: reboot a trial boot so that the bootloader counts it. Writes no
/// state, so it does not wait for the device lock.
pub fn health_failed(session: &mut Session, reboot: bool) -> Result<Exit> {
    let running = running(session)?;
    let boot_id = diffota::system::boot_id(&session.config.boot.boot_id_file);
    let outcome = DeviceState::load(&session.state_dir())?.health_failed(
        running,
        session.bootloader.as_ref(),
        boot_id.as_deref(),
    )?;
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
    let running = running(session)?;
    let next_slot = DeviceState::load(&session.state_dir())?.mark_bad(
        running,
        session.bootloader.as_mut(),
        switch.force,
    )?;
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
    let running = running(session)?;
    let boot = &session.config.boot;
    let next_slot = DeviceState::load(&session.state_dir())?.rollback(
        running,
        session.bootloader.as_mut(),
        boot.boot_attempts,
        switch.force,
        diffota::system::boot_id(&boot.boot_id_file),
    )?;
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
