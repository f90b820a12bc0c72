//! Single-copy targets (`[single_copy.<name>]`): the release's images with one copy on the
//! device (a bootloader, a second processor's firmware). Written once per release, after
//! every image of the slot group read back matching and before the trial is armed; skipped
//! when the target holds that image already (its recorded hash). A `device` target is written
//! in place and read back; for a `handler` target the image is assembled and read back in
//! the state directory, then handed to the handler as a file. The record of what a target
//! holds is removed before it is written and set again after, so a crash in between never
//! leaves a record that claims the old content.

use std::os::unix::fs::OpenOptionsExt;

use diffota_format::hex32;

use super::verify;
use super::{Device, InstallError, InstallReport};
use crate::hooks::HookEnv;
use crate::plan::{InPlace, Plan, SeedMap};
use crate::progress::{Event, Progress};
use crate::release::{ImageRelease, Release};
use crate::slot::TargetSlot;
use crate::source::Traffic;
use crate::state::{DeviceState, SingleCopyRecord, State};

/// Whether the target of `image` holds it already.
pub(super) fn holds(state: &State, image: &ImageRelease) -> bool {
    state
        .single_copy(&image.name)
        .is_some_and(|held| held.image_hash == hex32(&image.index.image_hash))
}

/// What each single-copy image would download, for `check`: nothing when its target holds it.
pub(super) fn plan_summaries(
    device: &Device<'_>,
    release: &Release,
    state: &State,
) -> Vec<super::group::ImagePlanned> {
    release
        .single_copy
        .iter()
        .map(|image| {
            let in_place = if holds(state, image) {
                InPlace::Everything
            } else {
                InPlace::Nothing
            };
            let plan = Plan::build(&image.index, &SeedMap::default(), &in_place);
            super::group::ImagePlanned::of(device, image, plan)
        })
        .collect()
}

/// Records that the target of `image` holds it, as of now.
pub(super) fn record_held(
    machine: &mut DeviceState,
    image: &ImageRelease,
) -> Result<(), InstallError> {
    let index = &image.index;
    machine.record_single_copy(
        &image.name,
        SingleCopyRecord {
            version: index.version.clone(),
            image_hash: hex32(&index.image_hash),
            image_length: index.image_length,
            written_at: crate::system::now(),
        },
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn write_all(
    device: &Device<'_>,
    machine: &mut DeviceState,
    (release, running): (&Release, crate::slot::Slot),
    hook_env: &HookEnv,
    traffic: &Traffic,
    report: &mut InstallReport,
    progress: &dyn Progress,
) -> Result<(), InstallError> {
    let running_version = machine.state().version_in(running).map(str::to_owned);
    for image in &release.single_copy {
        if holds(machine.state(), image) {
            progress.event(Event::Message(&format!(
                "single-copy image {}: its target holds it already; skipped",
                image.name
            )));
            report.images.push(crate::outcomes::ImageFigures {
                name: image.name.clone(),
                install: "single-copy".into(),
                image_bytes: image.index.image_length,
                fetched_image_bytes: 0,
                written: false,
            });
            continue;
        }
        let target = &device.config.single_copy[&image.name];
        let index = &image.index;
        let path = match &target.device {
            Some(path) => path.clone(),
            None => {
                let path = device.state_dir.single_copy_image_path(&image.name);
                let io = |source| crate::slot::SlotError::Io {
                    path: path.clone(),
                    source,
                };
                // A fresh file of ours: whatever is at the name (a planted link) is removed,
                // not followed, and the new file is created exclusively, readable by root only.
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e).into()),
                    _ => {}
                }
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                file.set_len(index.image_length).map_err(io)?;
                path
            }
        };
        machine.forget_single_copy(&image.name)?;
        progress.event(Event::Message(&format!(
            "single-copy image {}: writing {}",
            image.name,
            path.display()
        )));
        // No running copy to take chunks from: every chunk is fetched.
        let slot = TargetSlot::open(
            crate::slot::Slot::A,
            &path,
            std::path::Path::new(""),
            index.image_length,
        )?;
        let plan = Plan::build(index, &SeedMap::default(), &InPlace::Nothing);
        super::group::write_planned(
            device,
            release,
            (image, "single-copy"),
            &slot,
            (&plan, &Default::default(), None),
            (slot.file(), running_version.as_deref()),
            traffic,
            report,
            progress,
        )
        .await?;
        verify::read_back(&slot, index).map_err(|e| match e {
            InstallError::ReadBack {
                expected, actual, ..
            } => InstallError::SingleCopyReadBack {
                name: image.name.clone(),
                path: path.clone(),
                expected,
                actual,
            },
            other => other,
        })?;
        drop(slot);
        if let Some(handler) = &target.handler {
            let env = hook_env
                .clone()
                .set("DIFFOTA_IMAGE", image.name.as_str())
                .set_path("DIFFOTA_IMAGE_FILE", &path)
                .set("DIFFOTA_IMAGE_SIZE", index.image_length.to_string())
                .set("DIFFOTA_IMAGE_BLAKE3", hex32(&index.image_hash));
            let (handler, timeout) = (handler.clone(), device.config.hooks.timeout_secs);
            let handled =
                super::hooks::off_async(move || crate::hooks::run_handler(&handler, &env, timeout))
                    .await;
            let _ = std::fs::remove_file(&path);
            handled??;
        }
        record_held(machine, image)?;
    }
    Ok(())
}
