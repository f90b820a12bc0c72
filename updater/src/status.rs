//! `diffota status`: the running slot, what each slot holds, the bootloader's view, the
//! pending trial, the last install and the releases that failed here.

use std::fmt;

use crate::boot::{BootState, Bootloader};
use crate::config::Config;
use crate::release::humanize_time;
use crate::slot::{booted_slot, Slot};
use crate::state::{InProgress, State, StateDir, StateError};

#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    pub running_slot: Option<Slot>,
    pub boot: BootView,
    pub state: State,
    /// An install writing a slot now, or interrupted while writing it (the next install of
    /// the same release resumes it).
    pub writing: Option<InProgress>,
}

/// The bootloader's variables, or why they could not be read.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum BootView {
    Read(BootState),
    Unreadable { error: String },
}

pub fn status(
    config: &Config,
    bootloader: &dyn Bootloader,
    state_dir: &StateDir,
) -> Result<StatusReport, StateError> {
    Ok(StatusReport {
        running_slot: booted_slot(&config.boot.cmdline, &config.slots.a, &config.slots.b).ok(),
        boot: match bootloader.state() {
            Ok(boot) => BootView::Read(boot),
            Err(e) => BootView::Unreadable {
                error: e.to_string(),
            },
        },
        state: state_dir.load()?,
        writing: state_dir.in_progress()?,
    })
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = &self.state;
        writeln!(
            f,
            "running slot: {}",
            self.running_slot
                .map_or("unknown".into(), |s| s.to_string())
        )?;
        for slot in [Slot::A, Slot::B] {
            match state.slot(slot) {
                Some(record) => {
                    writeln!(
                        f,
                        "slot {slot}: {} ({} bytes, installed {}{})",
                        record.version,
                        record.image_length,
                        humanize_time(record.installed_at),
                        if record.good { ", good" } else { "" }
                    )?;
                    for (name, image) in &record.images {
                        writeln!(
                            f,
                            "slot {slot} image {name}: {} ({} bytes, BLAKE3 {})",
                            record.version, image.image_length, image.image_hash
                        )?;
                    }
                }
                None => match &self.writing {
                    Some(writing) if writing.slot == slot => writeln!(
                        f,
                        "slot {slot}: being written with {} (an install is running, or stopped and resumes on the next install)",
                        writing.version
                    )?,
                    _ => writeln!(f, "slot {slot}: unknown")?,
                },
            }
        }
        match &self.boot {
            BootView::Read(boot) => writeln!(
                f,
                "bootloader: next boot slot {}, upgrade_available={}, bootcount={}, bootlimit={}",
                // The boot scripts boot slot a, with a limit of 3, when the variables are
                // not set (a blank environment): say that, not "?".
                boot.selected.map_or(
                    "a (diffota_slot is not set: the boot script's default; `diffota doctor`)"
                        .into(),
                    |s| s.to_string()
                ),
                u8::from(boot.upgrade_available),
                boot.bootcount,
                boot.bootlimit
                    .map_or("3 (not set: the boot script's default)".into(), |l| l
                        .to_string())
            )?,
            BootView::Unreadable { error } => writeln!(f, "bootloader: {error}")?,
        }
        if let Some(trial) = state.trial() {
            writeln!(
                f,
                "trial pending: {} in slot {} (from slot {})",
                trial.version, trial.slot, trial.from_slot
            )?;
        }
        if let Some(owed) = state.owed_hooks() {
            writeln!(f, "hooks owed: {owed}; the next mark-good runs them again")?;
        }
        match state.last_install() {
            Some(last) => write!(
                f,
                "last install: {} {} into slot {} ({} bytes downloaded)",
                last.result, last.version, last.slot, last.downloaded_bytes
            )?,
            None => write!(f, "last install: none")?,
        }
        for failed in state.failed_releases() {
            write!(
                f,
                "\nfailed release {}: {} ({})",
                failed.version,
                failed.reason,
                humanize_time(failed.at)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_environment_shows_what_the_boot_script_will_do() {
        let report = StatusReport {
            running_slot: Some(Slot::A),
            boot: BootView::Read(BootState {
                selected: None,
                upgrade_available: false,
                bootcount: 0,
                bootlimit: None,
            }),
            state: State::default(),
            writing: None,
        };
        let text = report.to_string();
        assert!(
            text.contains("next boot slot a (diffota_slot is not set: the boot script's default"),
            "{text}"
        );
        assert!(text.contains("bootlimit=3 (not set"), "{text}");
        assert!(!text.contains('?'), "{text}");
    }

    #[test]
    fn a_slot_being_written_says_so() {
        let report = StatusReport {
            running_slot: Some(Slot::A),
            boot: BootView::Unreadable {
                error: "not read".into(),
            },
            state: State::default(),
            writing: Some(InProgress {
                slot: Slot::B,
                version: "3.0".into(),
                image_hash: "00".into(),
                images: Default::default(),
            }),
        };
        let text = report.to_string();
        assert!(text.contains("slot a: unknown"), "{text}");
        assert!(
            text.contains("slot b: being written with 3.0 (an install is running"),
            "{text}"
        );
    }
}
