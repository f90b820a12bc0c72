//! One module per subcommand; each turns its arguments into a library call and returns the
//! exit status of its result. What they share: the device, the runtime, printing, rebooting.

pub mod check;
pub mod doctor;
pub mod install;
pub mod lifecycle;
pub mod report;
pub mod service;
pub mod status;

use anyhow::{bail, Context, Result};
use diffota::boot::Bootloader;
use diffota::config::Config;
use diffota::install::Device;
use diffota::state::{DeviceLock, LockError, StateDir};
use diffota_cli::outln;

/// What every command starts from: the config, the bootloader it names, the output format.
pub struct Session {
    pub config: Config,
    pub bootloader: Box<dyn Bootloader>,
    pub json: bool,
}

impl Session {
    pub fn state_dir(&self) -> StateDir {
        StateDir::new(&self.config.state_dir)
    }

    /// The device lock for a state-changing command, held until the value is dropped.
    pub fn lock(&self, operation: &str) -> Result<DeviceLock, LockError> {
        DeviceLock::acquire(&self.state_dir(), operation)
    }
}

/// Prints a report: as JSON (`pretty` for reports people read, one line for event streams)
/// or as its Display.
pub fn show<T: serde::Serialize + std::fmt::Display>(
    report: &T,
    json: bool,
    pretty: bool,
) -> Result<()> {
    match (json, pretty) {
        (true, true) => outln!("{}", serde_json::to_string_pretty(report)?),
        (true, false) => outln!("{}", serde_json::to_string(report)?),
        (false, _) => outln!("{report}"),
    }
    Ok(())
}

pub fn device<'a>(
    config: &'a Config,
    keys: &'a diffota_format::TrustedKeys,
    bootloader: &'a mut dyn Bootloader,
) -> Result<Device<'a>> {
    Ok(Device {
        config,
        keys,
        state_dir: StateDir::new(&config.state_dir),
        device_id: diffota::system::device_id(&config.device_id)?,
        bootloader,
    })
}

/// One thread: the install's work (hashing, decompressing, writing) happens in the range
/// sinks on the thread that drives the runtime anyway, and worker threads only added their
/// own allocator arenas and buffers to the peak memory.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn reboot_now(config: &Config) -> Result<()> {
    let command = &config.boot.reboot_command;
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .status()
        .with_context(|| format!("running {}", command.join(" ")))?;
    if !status.success() {
        bail!("{} failed: {status}", command.join(" "));
    }
    Ok(())
}
