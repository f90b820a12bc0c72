//! The bootloader seam. Every backend keeps a small set of variables, with U-Boot's
//! conventions where they exist:
//!
//! | variable | meaning |
//! |---|---|
//! | `diffota_slot` | `a` or `b`: the slot the boot script boots |
//! | `upgrade_available` | `1` while that slot is on trial |
//! | `bootcount` | boots of the trial slot so far (the boot script counts) |
//! | `bootlimit` | boots allowed before the boot script falls back to the other slot |
//!
//! The verbs (`start_trial`, `commit`, `select`) are written once here over an `EnvStore`
//! (load all variables, store all variables); each backend only knows its storage: the
//! U-Boot environment (`uboot`), the real `fw_setenv` tools (`fwtools`), GRUB's `grubenv`
//! (`grub`), or a board's own script (`custom`).

pub mod custom;
pub mod fwtools;
pub mod grub;
pub mod uboot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::check::Check;
use crate::config::BootConfig;
use crate::slot::Slot;

pub const SLOT_VAR: &str = "diffota_slot";
pub const UPGRADE_AVAILABLE: &str = "upgrade_available";
pub const BOOTCOUNT: &str = "bootcount";
pub const BOOTLIMIT: &str = "bootlimit";

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The environment (or `fw_env.config`) is not there: diffota does not create it.
    #[error("{path}: not found: the bootloader environment must be installed before diffota uses it (a U-Boot environment with the slot variables, or GRUB's grubenv on the ESP; see [boot] in the config, and run `diffota doctor`)")]
    Missing { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: reading {length} bytes at offset {offset}: {source}")]
    ReadAt {
        path: PathBuf,
        offset: u64,
        length: usize,
        #[source]
        source: std::io::Error,
    },
    /// What an environment holds, or is asked to hold, is not valid there.
    #[error("{path}: {source}")]
    Content {
        path: PathBuf,
        #[source]
        source: EnvError,
    },
    /// `fw_printenv`, `fw_setenv` or a board's boot script did not do its part.
    #[error("{program}: {source}")]
    Tool {
        program: PathBuf,
        #[source]
        source: ToolError,
    },
    #[error("boot variable {name}={value:?} is invalid")]
    BadVariable { name: String, value: String },
    #[error("boot backend {0:?} is not known (uboot, grub, custom, none)")]
    UnknownBackend(String),
}

impl BootError {
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootError + '_ {
        move |source| match source.kind() {
            std::io::ErrorKind::NotFound => BootError::Missing {
                path: path.to_owned(),
            },
            _ => BootError::Io {
                path: path.to_owned(),
                source,
            },
        }
    }

    pub fn content(path: &Path) -> impl FnOnce(EnvError) -> BootError + '_ {
        move |source| BootError::Content {
            path: path.to_owned(),
            source,
        }
    }
}

pub(crate) fn tool_error(program: &Path, source: ToolError) -> BootError {
    BootError::Tool {
        program: program.to_owned(),
        source,
    }
}

/// A program's failure, with what it wrote to stderr.
pub(crate) fn failed(program: &Path, command: &str, output: &std::process::Output) -> BootError {
    tool_error(
        program,
        ToolError::Failed {
            command: command.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        },
    )
}

/// Why the bytes or the variables of an environment do not fit its format.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("is {length} bytes, a GRUB environment block is {}", grub::BLOCK_SIZE)]
    GrubBlockSize { length: usize },
    #[error("does not start with the GRUB environment block header")]
    GrubHeader,
    #[error("variable {name:?} cannot be stored")]
    Unstorable { name: String },
    #[error("variables need {needed} bytes but the environment holds {capacity}")]
    TooLarge { needed: usize, capacity: usize },
    #[error("no copy has a valid CRC (environment never initialised?)")]
    NoValidCopy,
    #[error(transparent)]
    Config(#[from] uboot::FwEnvConfigError),
}

/// An external program of a boot backend failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("talking to it: {0}")]
    Pipe(#[source] std::io::Error),
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Where a backend keeps its variables.
pub trait EnvStore {
    fn describe(&self) -> String;
    fn load(&self) -> Result<BTreeMap<String, String>, BootError>;
    /// Stores the complete set of variables in one durable write.
    fn store(&self, vars: &BTreeMap<String, String>) -> Result<(), BootError>;
    /// Storage-specific findings for `diffota doctor` (name, problem or detail).
    fn checks(&self) -> Vec<Check> {
        Vec::new()
    }
}

/// The boot variables that matter to diffota.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BootState {
    pub selected: Option<Slot>,
    pub upgrade_available: bool,
    pub bootcount: u32,
    pub bootlimit: Option<u32>,
}

impl BootState {
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<BootState, BootError> {
        let number = |name: &str| -> Result<Option<u32>, BootError> {
            match vars.get(name) {
                None => Ok(None),
                Some(value) if value.is_empty() => Ok(None),
                Some(value) => value
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| BootError::BadVariable {
                        name: name.into(),
                        value: value.clone(),
                    }),
            }
        };
        let selected = match vars.get(SLOT_VAR) {
            None => None,
            Some(value) => Some(Slot::parse(value).ok_or_else(|| BootError::BadVariable {
                name: SLOT_VAR.into(),
                value: value.clone(),
            })?),
        };
        Ok(BootState {
            selected,
            upgrade_available: number(UPGRADE_AVAILABLE)?.unwrap_or(0) != 0,
            bootcount: number(BOOTCOUNT)?.unwrap_or(0),
            bootlimit: number(BOOTLIMIT)?,
        })
    }
}

/// Variable changes that put `slot` on trial for `attempts` boots.
pub fn trial_changes(slot: Slot, attempts: u32) -> Vec<(&'static str, String)> {
    vec![
        (SLOT_VAR, slot.name().into()),
        (UPGRADE_AVAILABLE, "1".into()),
        (BOOTCOUNT, "0".into()),
        (BOOTLIMIT, attempts.to_string()),
    ]
}

/// Variable changes that make `slot` the one booted from now on, with no trial pending.
pub fn commit_changes(slot: Slot) -> Vec<(&'static str, String)> {
    vec![
        (SLOT_VAR, slot.name().into()),
        (UPGRADE_AVAILABLE, "0".into()),
        (BOOTCOUNT, "0".into()),
    ]
}

pub trait Bootloader {
    fn describe(&self) -> String;
    /// Storage-specific findings for `diffota doctor`.
    fn checks(&self) -> Vec<Check> {
        Vec::new()
    }
    fn state(&self) -> Result<BootState, BootError>;
    /// Boot `slot` on trial; the boot script falls back after `attempts` failed boots.
    fn start_trial(&mut self, slot: Slot, attempts: u32) -> Result<(), BootError>;
    /// Boot `slot` from now on, with no trial pending.
    fn commit(&mut self, slot: Slot) -> Result<(), BootError>;
    /// `slot` is about to be overwritten: make sure it is not the one booted next.
    fn forget_slot(&mut self, slot: Slot) -> Result<(), BootError> {
        let state = self.state()?;
        if state.selected == Some(slot) {
            self.commit(slot.other())?;
        }
        Ok(())
    }
}

/// A bootloader whose variables live in an `EnvStore`.
pub struct EnvBootloader<S: EnvStore> {
    pub store: S,
}

impl<S: EnvStore> EnvBootloader<S> {
    fn change(&mut self, changes: Vec<(&'static str, String)>) -> Result<(), BootError> {
        let mut vars = self.store.load()?;
        let before = vars.clone();
        for (name, value) in changes {
            vars.insert(name.to_owned(), value);
        }
        if vars != before {
            self.store.store(&vars)?;
        }
        Ok(())
    }
}

impl<S: EnvStore> Bootloader for EnvBootloader<S> {
    fn describe(&self) -> String {
        self.store.describe()
    }

    fn checks(&self) -> Vec<Check> {
        self.store.checks()
    }

    fn state(&self) -> Result<BootState, BootError> {
        BootState::from_vars(&self.store.load()?)
    }

    fn start_trial(&mut self, slot: Slot, attempts: u32) -> Result<(), BootError> {
        self.change(trial_changes(slot, attempts))?;
        tracing::info!(event = "trial_started", slot = %slot, attempts, backend = %self.store.describe());
        Ok(())
    }

    fn commit(&mut self, slot: Slot) -> Result<(), BootError> {
        self.change(commit_changes(slot))
    }
}

/// Backend `none`: records nothing in a bootloader, for boards that switch slots otherwise.
pub struct NoBootloader;

impl Bootloader for NoBootloader {
    fn describe(&self) -> String {
        "no bootloader backend".into()
    }

    fn state(&self) -> Result<BootState, BootError> {
        Ok(BootState::default())
    }

    fn start_trial(&mut self, slot: Slot, attempts: u32) -> Result<(), BootError> {
        tracing::info!(event = "trial_not_started", slot = %slot, attempts, "boot backend none: the bootloader was not changed");
        Ok(())
    }

    fn commit(&mut self, _slot: Slot) -> Result<(), BootError> {
        Ok(())
    }

    fn forget_slot(&mut self, _slot: Slot) -> Result<(), BootError> {
        Ok(())
    }
}

/// The backend the config asks for.
pub fn from_config(config: &BootConfig) -> Result<Box<dyn Bootloader>, BootError> {
    match config.backend.as_str() {
        "none" => Ok(Box::new(NoBootloader)),
        "uboot" if config.use_fw_tools => Ok(Box::new(EnvBootloader {
            store: fwtools::FwTools {
                fw_printenv: config.fw_printenv.clone(),
                fw_setenv: config.fw_setenv.clone(),
                config: config.fw_env_config.clone(),
            },
        })),
        "uboot" => Ok(Box::new(EnvBootloader {
            store: uboot::UbootEnv::from_config_file(&config.fw_env_config)?,
        })),
        "grub" => Ok(Box::new(EnvBootloader {
            store: grub::GrubEnv {
                path: config.grubenv.clone(),
            },
        })),
        "custom" => Ok(Box::new(EnvBootloader {
            store: custom::CustomScript {
                script: config.script.clone(),
            },
        })),
        other => Err(BootError::UnknownBackend(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct MemoryStore(RefCell<BTreeMap<String, String>>, RefCell<u32>);

    impl EnvStore for MemoryStore {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn load(&self) -> Result<BTreeMap<String, String>, BootError> {
            Ok(self.0.borrow().clone())
        }
        fn store(&self, vars: &BTreeMap<String, String>) -> Result<(), BootError> {
            *self.1.borrow_mut() += 1;
            *self.0.borrow_mut() = vars.clone();
            Ok(())
        }
    }

    #[test]
    fn trial_then_commit() {
        let mut boot = EnvBootloader {
            store: MemoryStore(
                RefCell::new(BTreeMap::from([("bootcmd".into(), "x".into())])),
                RefCell::new(0),
            ),
        };
        boot.start_trial(Slot::B, 3).unwrap();
        assert_eq!(
            boot.state().unwrap(),
            BootState {
                selected: Some(Slot::B),
                upgrade_available: true,
                bootcount: 0,
                bootlimit: Some(3)
            }
        );
        boot.commit(Slot::B).unwrap();
        assert_eq!(
            boot.state().unwrap(),
            BootState {
                selected: Some(Slot::B),
                upgrade_available: false,
                bootcount: 0,
                bootlimit: Some(3)
            }
        );
        assert_eq!(
            boot.store.0.borrow()["bootcmd"],
            "x",
            "other variables are kept"
        );
        let writes = *boot.store.1.borrow();
        boot.commit(Slot::B).unwrap();
        assert_eq!(
            *boot.store.1.borrow(),
            writes,
            "no write when nothing changes"
        );
        boot.forget_slot(Slot::B).unwrap();
        assert_eq!(boot.state().unwrap().selected, Some(Slot::A));
    }

    #[test]
    fn bad_variables_are_named() {
        let vars = BTreeMap::from([(SLOT_VAR.to_owned(), "c".to_owned())]);
        assert!(BootState::from_vars(&vars)
            .unwrap_err()
            .to_string()
            .contains("diffota_slot"));
    }
}
