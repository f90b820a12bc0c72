//! The gate: whether this release is installed at all. Every refusal that is not an error
//! is an [`Outcome`]; a downgrade is an error unless allowed.

use super::{InstallError, InstallOptions, Outcome};
use crate::release::{decide, Decision, Release};
use crate::slot::Slot;
use crate::state::State;

/// None when the install goes ahead.
pub(super) fn refusal(
    release: &Release,
    state: &State,
    running: Slot,
    options: InstallOptions,
) -> Result<Option<Outcome>, InstallError> {
    let version = release.index.version.clone();
    if let Some(eligibility) = release
        .eligibility
        .as_ref()
        .filter(|e| !e.is_eligible() && !options.force)
    {
        return Ok(Some(Outcome::NotEligible {
            version,
            reason: eligibility.to_string(),
        }));
    }
    if let Some(trial) = state
        .trial()
        .filter(|t| t.version == version && t.slot != running && !options.force)
    {
        return Ok(Some(Outcome::PendingReboot {
            version,
            slot: trial.slot,
        }));
    }
    if let Some(failed) = state.failed(&version).filter(|_| !options.force) {
        return Ok(Some(Outcome::PreviouslyFailed {
            version,
            reason: failed.reason.clone(),
        }));
    }
    let running_version = state.version_in(running);
    match decide(
        running_version,
        &version,
        options.allow_downgrade,
        options.force,
    ) {
        Decision::Install => Ok(None),
        Decision::UpToDate => Ok(Some(Outcome::UpToDate { version })),
        Decision::Downgrade => Err(InstallError::Downgrade {
            offered: version,
            running: running_version.unwrap_or_default().to_owned(),
            slot: running,
        }),
    }
}
