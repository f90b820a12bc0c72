//! `diffota doctor`: a provisioning self-test. Every check names what it looked at and what
//! is wrong, so a factory line can tell a device that cannot update from one that can (a
//! fleet has been lost to a U-Boot environment that was never initialised).

use crate::boot::{Bootloader, BOOTLIMIT, SLOT_VAR};
use crate::config::Config;
use crate::slot::{booted_slot, capacity, Slot};
use crate::state::{State, StateDir};

pub use crate::check::Check;

fn check<E: std::fmt::Display>(name: impl Into<String>, result: Result<String, E>) -> Check {
    Check::of(name, result)
}

/// Every finding, in the order checked; serialized as the list of checks.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct DoctorReport {
    pub checks: Vec<Check>,
}

impl DoctorReport {
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok).count()
    }
}

impl std::fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for check in &self.checks {
            writeln!(
                f,
                "{} {}: {}",
                if check.ok { "ok  " } else { "FAIL" },
                check.name,
                check.detail
            )?;
        }
        write!(f, "{} checks, {} failed", self.checks.len(), self.failed())
    }
}

pub fn doctor(config: &Config, bootloader: &dyn Bootloader) -> DoctorReport {
    DoctorReport {
        checks: run_checks(config, bootloader),
    }
}

fn run_checks(config: &Config, bootloader: &dyn Bootloader) -> Vec<Check> {
    let mut checks = vec![
        check(
            "trusted public keys",
            crate::keys::trusted_keys(config).map(|k| format!("{} key(s)", k.len())),
        ),
        check("device id", crate::system::device_id(&config.device_id)),
        state_directory(config),
    ];
    let running = booted_slot(&config.boot.cmdline, &config.slots.a, &config.slots.b);
    checks.push(check(
        "running slot",
        running.as_ref().map(|s| s.to_string()),
    ));
    let state = StateDir::new(&config.state_dir).load().unwrap_or_default();
    checks.extend(slots(config, &state));
    checks.extend(group_slots(config));
    checks.extend(single_copy_targets(config));
    checks.extend(crate::hooks::checks(&config.hooks));
    if let Some(owed) = state.owed_hooks() {
        checks.push(Check::failed(
            "owed hooks",
            format!("{owed}; the next mark-good runs them again"),
        ));
    }
    checks.push(Check::passed(
        format!("boot backend {}", config.boot.backend),
        bootloader.describe(),
    ));
    checks.extend(bootloader.checks());
    if config.boot.backend != "none" {
        checks.push(boot_variables(bootloader, running.ok(), &state));
    }
    checks
}

/// The state directory takes an atomic write and holds a readable state.
fn state_directory(config: &Config) -> Check {
    let probe = config.state_dir.join(".doctor");
    let result = crate::state::write_atomic(&probe, b"ok")
        .and_then(|()| {
            std::fs::remove_file(&probe).map_err(|source| crate::state::StateError::Io {
                path: config.state_dir.clone(),
                source,
            })
        })
        .and_then(|()| StateDir::new(&config.state_dir).load())
        .map(|_| "writable, state readable".to_owned());
    check(
        format!("state directory {}", config.state_dir.display()),
        result,
    )
}

/// Each slot opens, holds its recorded image, and both have the same size.
fn slots(config: &Config, state: &State) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut sizes = Vec::new();
    for slot in [Slot::A, Slot::B] {
        let path = config.slot_path(slot);
        let result = std::fs::File::open(path)
            .and_then(|f| capacity(&f))
            .map_err(|e| e.to_string())
            .and_then(|size| {
                sizes.push(size);
                match state.slot(slot) {
                    Some(record) if record.image_length > size => Err(format!(
                        "{size} bytes, smaller than its recorded image ({})",
                        record.image_length
                    )),
                    _ => Ok(format!("{size} bytes")),
                }
            });
        checks.push(check(format!("slot {slot} ({})", path.display()), result));
    }
    if sizes.len() == 2 && sizes[0] != sizes[1] {
        checks.push(Check::failed(
            "slot sizes",
            format!("slot a has {} bytes, slot b {}", sizes[0], sizes[1]),
        ));
    }
    checks
}

/// Each `[images.<name>]` pair opens, and its two slots have the same size.
fn group_slots(config: &Config) -> Vec<Check> {
    config
        .images
        .iter()
        .map(|(name, pair)| {
            let size = |slot: Slot| {
                std::fs::File::open(pair.path(slot))
                    .and_then(|f| capacity(&f))
                    .map_err(|e| format!("slot {slot} ({}): {e}", pair.path(slot).display()))
            };
            let result = size(Slot::A).and_then(|a| {
                let b = size(Slot::B)?;
                if a == b {
                    Ok(format!("slots a and b, {a} bytes each"))
                } else {
                    Err(format!("slot a has {a} bytes, slot b {b}"))
                }
            });
            check(format!("image {name}"), result)
        })
        .collect()
}

/// Each `[single_copy.<name>]` target: its device opens for writing, or its handler is an
/// executable file.
fn single_copy_targets(config: &Config) -> Vec<Check> {
    config
        .single_copy
        .iter()
        .map(|(name, target)| {
            let result = match (&target.device, &target.handler) {
                (Some(device), _) => std::fs::OpenOptions::new()
                    .write(true)
                    .open(device)
                    .map(|_| format!("device {}", device.display()))
                    .map_err(|e| format!("device {}: {e}", device.display())),
                (None, Some(handler)) => crate::hooks::unusable(handler).map_or_else(
                    || Ok(format!("handler {}", handler.display())),
                    |problem| Err(format!("handler {}: {problem}", handler.display())),
                ),
                (None, None) => Err("neither device nor handler".to_owned()),
            };
            check(format!("single-copy target {name}"), result)
        })
        .collect()
}

/// The boot variables are set and point at the running slot unless a trial is pending.
fn boot_variables(bootloader: &dyn Bootloader, running: Option<Slot>, state: &State) -> Check {
    let result = bootloader
        .state()
        .map_err(|e| e.to_string())
        .and_then(|boot| {
            let selected = boot
                .selected
                .ok_or_else(|| format!("{SLOT_VAR} is not set"))?;
            boot.bootlimit
                .ok_or_else(|| format!("{BOOTLIMIT} is not set"))?;
            match (running, state.trial()) {
                (Some(running), None) if running != selected => Err(format!(
                    "{SLOT_VAR}={selected} but slot {running} is running and no trial is pending"
                )),
                _ => Ok(format!(
                    "{SLOT_VAR}={selected}, upgrade_available={}, bootcount={}",
                    u8::from(boot.upgrade_available),
                    boot.bootcount
                )),
            }
        });
    check("boot variables", result)
}
