//! The hooks before arming (pre-install, post-write, pre-arm), as install phases: their
//! environment, and what "not now" and "never" become.

use super::{Device, InstallError, Outcome};
use crate::config::Config;
use crate::hooks::{self, HookEnv, HookPoint, Verdict};
use crate::release::Release;
use crate::slot::{Slot, TargetSlot};
use crate::state::{DeviceState, State};

/// What every hook of an install is told (see the README's "Hooks").
pub(super) fn install_env(
    config: &Config,
    release: &Release,
    state: &State,
    running: Slot,
) -> HookEnv {
    let target = running.other();
    HookEnv::new()
        .set("DIFFOTA_VERSION", release.index.version.as_str())
        .set(
            "DIFFOTA_RUNNING_VERSION",
            state.version_in(running).unwrap_or_default(),
        )
        .set("DIFFOTA_RUNNING_SLOT", running.name())
        .set_path("DIFFOTA_RUNNING_DEVICE", config.slot_path(running))
        .set("DIFFOTA_TARGET_SLOT", target.name())
        .set_path("DIFFOTA_TARGET_DEVICE", config.slot_path(target))
        .set(
            "DIFFOTA_CHANNEL",
            release
                .channel
                .as_ref()
                .map(|c| c.channel.clone())
                .unwrap_or_default(),
        )
        .set("DIFFOTA_COMPATIBLE", config.compatible.as_str())
        .set_path("DIFFOTA_STATE_DIR", &config.state_dir)
}

/// The image just written, for post-write and pre-arm: where it is and what it must hash to.
pub(super) fn image_env(
    env: HookEnv,
    name: &str,
    index: &diffota_format::Index,
    slot: &TargetSlot,
) -> HookEnv {
    env.set("DIFFOTA_IMAGE", name)
        .set_path("DIFFOTA_IMAGE_DEVICE", &slot.path)
        .set("DIFFOTA_IMAGE_SIZE", index.image_length.to_string())
        .set(
            "DIFFOTA_IMAGE_BLAKE3",
            diffota_format::hex32(&index.image_hash),
        )
}

/// Runs `work` (a hook or handler: a child process waited for) on tokio's blocking
/// threads; a panic in it goes on as a panic, a runtime shutting down is a cancel.
pub(super) async fn off_async<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, InstallError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Ok(done),
        Err(stopped) => match stopped.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(InstallError::Cancelled),
        },
    }
}

/// Runs the hooks of `point` off the async threads. None: go on. Some: the install stops
/// there with that outcome ("never" is recorded first, like a release that failed here).
pub(super) async fn run(
    device: &Device<'_>,
    machine: &mut DeviceState,
    release: &Release,
    point: HookPoint,
    env: &HookEnv,
) -> Result<Option<Outcome>, InstallError> {
    let config = &device.config.hooks;
    if point.hooks(config).is_empty() {
        return Ok(None);
    }
    let (config, env) = (config.clone(), env.clone());
    let verdict = off_async(move || hooks::run_point(&config, point, &env)).await??;
    let version = || release.index.version.clone();
    Ok(match verdict {
        Verdict::Go => None,
        Verdict::NotNow { hook, message } => Some(Outcome::Postponed {
            version: version(),
            hook: hook.display().to_string(),
            point: point.name().to_owned(),
            message,
        }),
        Verdict::Never { hook, message } => {
            let reason = format!("the {point} hook {} refused it: {message}", hook.display());
            machine.refuse_release(&version(), &reason)?;
            Some(Outcome::Refused {
                version: version(),
                hook: hook.display().to_string(),
                point: point.name().to_owned(),
                message,
            })
        }
    })
}
