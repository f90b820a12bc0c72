//! `diffota doctor`: a provisioning self-test. Every check names what it looked at and what
//! is wrong, so a factory line can tell a device that cannot update from one that can (a
//! fleet has been lost to a U-Boot environment that was never initialised).

use crate::boot::{Bootloader, BOOTLIMIT, SLOT_VAR};
use crate::config::Config;
use crate::slot::{booted_slot, capacity, Slot};
use crate::state::StateDir;

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
    let mut checks = Vec::new();
    checks.push(check(
        "trusted public keys",
        crate::keys::trusted_keys(config)
            .map(|k| format!("{} key(s)", k.len()))
            .map_err(|e| e.to_string()),
    ));
    checks.push(check(
        "device id",
        crate::system::device_id(&config.device_id),
    ));
    let state_dir = StateDir::new(&config.state_dir);
    checks.push(check(
        format!("state directory {}", config.state_dir.display()),
        crate::state::write_atomic(&config.state_dir.join(".doctor"), b"ok")
            .and_then(|()| {
                std::fs::remove_file(config.state_dir.join(".doctor")).map_err(|source| {
                    crate::state::StateError::Io {
                        path: config.state_dir.clone(),
                        source,
                    }
                })
            })
            .map_err(|e| e.to_string())
            .and_then(|()| {
                state_dir
                    .load()
                    .map(|_| "writable, state readable".to_owned())
                    .map_err(|e| e.to_string())
            }),
    ));
    let running = booted_slot(&config.boot.cmdline, &config.slots.a, &config.slots.b);
    checks.push(check(
        "running slot",
        running
            .as_ref()
            .map(|s| s.to_string())
            .map_err(|e| e.to_string()),
    ));
    let state = state_dir.load().unwrap_or_default();
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
        checks.push(check(
            "slot sizes",
            Err(format!(
                "slot a has {} bytes, slot b {}",
                sizes[0], sizes[1]
            )),
        ));
    }
    checks.push(Check::passed(
        format!("boot backend {}", config.boot.backend),
        bootloader.describe(),
    ));
    checks.extend(bootloader.checks());
    if config.boot.backend != "none" {
        let result = bootloader.state().map_err(|e| e.to_string()).and_then(|boot| {
            let selected = boot.selected.ok_or_else(|| format!("{SLOT_VAR} is not set"))?;
            boot.bootlimit.ok_or_else(|| format!("{BOOTLIMIT} is not set"))?;
            match (&running, state.trial()) {
                (Ok(running), None) if *running != selected => Err(format!("{SLOT_VAR}={selected} but slot {running} is running and no trial is pending")),
                _ => Ok(format!("{SLOT_VAR}={selected}, upgrade_available={}, bootcount={}", u8::from(boot.upgrade_available), boot.bootcount)),
            }
        });
        checks.push(check("boot variables", result));
    }
    checks
}
