//! Persistent device state, in the state directory (on the data partition, outside both
//! slots): what each slot holds, the last install's result, the highest channel counter seen,
//! the pending trial, the releases that failed here, and for each slot the signed index it
//! was last written with (its seed for the next install).
//!
//! `record` is the data and its pure transitions, `dir` the files (each replaced
//! atomically), `machine` the one owner of every change and of its order against the
//! bootloader.

mod dir;
mod lock;
mod machine;
mod record;

pub use dir::{write_atomic, StateDir, StateError};
pub use lock::{DeviceLock, LockError};
pub use machine::{
    after_boot, after_health_failure, AfterBoot, DeviceState, HealthFailed, Installed, MarkGood,
    TransitionError,
};
pub use record::{
    FailedRelease, ImageRecord, InProgress, InstallRecord, InstallResult, OwedHooks,
    SingleCopyRecord, SlotRecord, State, StateFormatError, Trial, STATE_FORMAT,
};
