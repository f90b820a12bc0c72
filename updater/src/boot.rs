//! The bootloader seam: a handful of verbs, one implementation per backend. This build has
//! the `none` backend, which records nothing in a bootloader and leaves the slot switch to
//! the board; the U-Boot, GRUB and custom-script backends plug in here.

use crate::slot::Slot;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("bootloader environment {path}: {message}")]
    Environment { path: String, message: String },
}

pub trait Bootloader {
    /// The slot may be overwritten: it must not be booted until a new trial starts.
    fn forget_slot(&mut self, slot: Slot) -> Result<(), BootError>;
    /// Boot `slot` on trial, falling back after `attempts` failed boots.
    fn start_trial(&mut self, slot: Slot, attempts: u32) -> Result<(), BootError>;
}

/// Backend `none`: logs what a real backend would do.
pub struct NoBootloader;

impl Bootloader for NoBootloader {
    fn forget_slot(&mut self, _slot: Slot) -> Result<(), BootError> {
        Ok(())
    }

    fn start_trial(&mut self, slot: Slot, attempts: u32) -> Result<(), BootError> {
        tracing::info!(event = "trial_not_started", slot = %slot, attempts, "boot backend none: the bootloader was not changed");
        Ok(())
    }
}
