//! After a boot and by hand: mark-good, health-failed, mark-bad, rollback.

use anyhow::Result;
use diffota::outcomes::{self, Spool};
use diffota::slot::{booted_slot, Slot};
use diffota::state::{DeviceState, HealthFailed, MarkGood, State};

use super::{reboot_now, refresh_metrics, show, Session};
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
    let mut machine = DeviceState::load(&session.state_dir())?;
    let before = machine.state().clone();
    let bootcount = session.bootloader.state().ok().map(|boot| boot.bootcount);
    let outcome = machine.mark_good(running, session.bootloader.as_mut(), boot_id.as_deref())?;
    record_trial_outcome(session, &outcome, &before, bootcount);
    refresh_metrics(session);
    show(&outcome, session.json, false)?;
    Ok(Exit::Done)
}

/// A committed or reverted trial is an outcome to report. The commit is already durable:
/// a failure to record its report is logged, not fatal.
fn record_trial_outcome(
    session: &Session,
    outcome: &MarkGood,
    before: &State,
    bootcount: Option<u32>,
) {
    let config = &session.config;
    let spool = Spool::new(&config.state_dir);
    let device_id = match diffota::system::device_id(&config.device_id) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "no device id: the outcome is not reported");
            return;
        }
    };
    let install = spool.pending_install();
    let Some(report) = outcomes::of_mark_good(
        outcome,
        before,
        bootcount,
        &device_id,
        install.as_ref(),
        diffota::system::now(),
    ) else {
        return;
    };
    let recorded = outcomes::record(config, &report).and_then(|()| spool.clear_pending_install());
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "the outcome could not be recorded for its report");
    }
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
    refresh_metrics(session);
    show(&switched, session.json, false)?;
    if switch.reboot {
        reboot_now(&session.config)?;
    }
    Ok(Exit::Done)
}
