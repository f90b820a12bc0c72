//! The device side of diffota: configuration, slots, planning and executing an install,
//! state, and the bootloader seam. `main.rs` is a thin shell over these modules.

pub mod boot;
pub mod bundle;
pub mod check;
pub mod config;
pub mod doctor;
pub mod hooks;
pub mod install;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod outcomes;
pub mod plan;
pub mod progress;
pub mod release;
pub mod service;
pub mod slot;
pub mod source;
pub mod state;
pub mod status;
pub mod system;
