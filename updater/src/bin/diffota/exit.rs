//! The one place that decides the exit status, documented in the README:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done: installed, committed, switched, status shown, every doctor check passed |
//! | 1 | error: something failed and nothing was activated (the message says what); `check`: the install would fail before writing (the slot is too small) |
//! | 2 | usage: the command line is wrong (clap) |
//! | 3 | nothing to do: up to date, not eligible yet, already installed and waiting for the reboot, postponed by a hook ("not now"), no update to check, a health failure outside a trial |
//! | 4 | refused: a downgrade, a release that failed here before or that a hook refused ("never"), no good image to switch to |
//! | 5 | busy: another install, mark-good, mark-bad or rollback holds the device lock (named) |

use std::process::ExitCode;

use diffota::install::{CheckReport, InstallError, Outcome};
use diffota::lifecycle::LifecycleError;
use diffota::state::{LockError, TransitionError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    Error = 1,
    NothingToDo = 3,
    Refused = 4,
    Busy = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

impl From<&Outcome> for Exit {
    fn from(outcome: &Outcome) -> Exit {
        match outcome {
            Outcome::Installed(_) => Exit::Done,
            Outcome::UpToDate { .. }
            | Outcome::NotEligible { .. }
            | Outcome::PendingReboot { .. }
            | Outcome::Postponed { .. } => Exit::NothingToDo,
            Outcome::PreviouslyFailed { .. } | Outcome::Refused { .. } => Exit::Refused,
        }
    }
}

impl From<&CheckReport> for Exit {
    fn from(report: &CheckReport) -> Exit {
        if report.cannot_install.is_some() {
            Exit::Error
        } else if report.update_available {
            Exit::Done
        } else {
            Exit::NothingToDo
        }
    }
}

/// Errors that are a refusal by policy rather than a failure.
pub fn of_error(error: &anyhow::Error) -> Exit {
    let refused = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<InstallError>(),
            Some(InstallError::Downgrade { .. })
        ) || matches!(
            cause.downcast_ref::<TransitionError>(),
            Some(TransitionError::NoGoodImage { .. })
        ) || matches!(
            cause.downcast_ref::<LifecycleError>(),
            Some(LifecycleError::Transition(
                TransitionError::NoGoodImage { .. }
            ))
        )
    });
    let busy = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<LockError>(),
            Some(LockError::Busy { .. })
        )
    });
    if refused {
        Exit::Refused
    } else if busy {
        Exit::Busy
    } else {
        Exit::Error
    }
}
