//! The slot group's other images (`[images.<name>]`): after `rootfs` is written and read
//! back, each is written into the same slot letter the same way — planned against its own
//! running slot and stored index, local chunks copied, delta frames and plain chunks
//! fetched, post-write hooks run, then read back. Nothing is recorded or armed until every
//! image of the group read back matching.

use diffota_format::{hex32, Index};

use super::{fetch, frames, hooks, local, seeds, verify};
use super::{Device, InstallError, InstallReport, Outcome};
use crate::hooks::{HookEnv, HookPoint};
use crate::outcomes::ImageFigures;
use crate::plan::{InPlace, Plan};
use crate::progress::{Event, Progress};
use crate::release::{ImageRelease, Release};
use crate::slot::{Slot, TargetSlot};
use crate::source::Traffic;
use crate::state::{DeviceState, ImageRecord};

/// Where each other image's chunks already are in the target slot, decided before the
/// install marks the slot as being written (which forgets its stored indexes): everything
/// when resuming this very install, else what the slot's stored index says.
pub(super) fn in_place(
    device: &Device<'_>,
    release: &Release,
    target: Slot,
    resuming: bool,
) -> Result<Vec<InPlace>, InstallError> {
    release
        .images
        .iter()
        .map(|image| {
            Ok(if resuming {
                InPlace::Everything
            } else {
                seeds::image_stored_index(device, &image.name, target)?
                    .map_or(InPlace::Nothing, |i| InPlace::from_index(&i))
            })
        })
        .collect()
}

/// The marker's list of the group's other images: name and image hash.
pub(super) fn marker_images(release: &Release) -> std::collections::BTreeMap<String, String> {
    release
        .images
        .iter()
        .map(|image| (image.name.clone(), hex32(&image.index.image_hash)))
        .collect()
}

/// The slot record's entries for the group's other images.
pub(super) fn records(release: &Release) -> std::collections::BTreeMap<String, ImageRecord> {
    release
        .images
        .iter()
        .map(|image| {
            (
                image.name.clone(),
                ImageRecord {
                    image_hash: hex32(&image.index.image_hash),
                    image_length: image.index.image_length,
                },
            )
        })
        .collect()
}

/// The seed indexes of the group's other images: (name, index bytes, signature).
pub(super) fn seed_indexes(release: &Release) -> Vec<(&str, Vec<u8>, &str)> {
    release
        .images
        .iter()
        .map(|image| {
            (
                image.name.as_str(),
                image.index.to_bytes(),
                image.index_signature.as_str(),
            )
        })
        .collect()
}

/// What `check` says of one more image: its plan, and what of it a bundle lacks.
pub(super) struct ImagePlanned {
    pub(super) name: String,
    pub(super) plan: crate::plan::PlanSummary,
    pub(super) missing_from_bundle: u64,
}

impl ImagePlanned {
    /// `image` planned as `plan`, restricted to the delta frames its bundle carries.
    pub(super) fn of(device: &Device<'_>, image: &ImageRelease, mut plan: Plan) -> ImagePlanned {
        let index = &image.index;
        if let Some(bundle) = &image.bundle {
            plan.keep_delta_frames(index, |f| bundle.frames.contains_key(&(f as u32)));
        }
        ImagePlanned {
            name: image.name.clone(),
            plan: plan.summary(index, device.config.http.max_gap),
            missing_from_bundle: fetch::missing_from_bundle(
                image.bundle.as_ref(),
                &plan.fetch_chunks_after_frames(index),
            ),
        }
    }
}

/// What the plan of each other image of the group is, for `check`.
pub(super) fn plan_summaries(
    device: &Device<'_>,
    release: &Release,
    running: Slot,
) -> Result<Vec<ImagePlanned>, InstallError> {
    release
        .images
        .iter()
        .map(|image| {
            let seeds = seeds::image_running_seeds(
                device,
                &image.name,
                running,
                &image.index,
                &crate::progress::Quiet,
            )?;
            let plan = Plan::build(&image.index, &seeds, &InPlace::Nothing);
            Ok(ImagePlanned::of(device, image, plan))
        })
        .collect()
}

/// Writes every other image of the group into slot `running.other()`; Some when a hook
/// stopped the install there.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_images(
    device: &Device<'_>,
    machine: &mut DeviceState,
    release: &Release,
    running: Slot,
    in_place: &[InPlace],
    hook_env: &HookEnv,
    traffic: &Traffic,
    report: &mut InstallReport,
    progress: &dyn Progress,
) -> Result<Option<Outcome>, InstallError> {
    let running_version = machine.state().version_in(running).map(str::to_owned);
    for (image, in_place) in release.images.iter().zip(in_place) {
        let slot = write_image(
            device,
            release,
            image,
            (running, running_version.as_deref()),
            in_place,
            traffic,
            report,
            progress,
        )
        .await?;
        let env = hooks::image_env(hook_env.clone(), &image.name, &image.index, &slot);
        if let Some(stop) = hooks::run(device, machine, release, HookPoint::PostWrite, &env).await?
        {
            return Ok(Some(stop));
        }
        verify::read_back(&slot, &image.index)?;
    }
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
async fn write_image(
    device: &Device<'_>,
    release: &Release,
    image: &ImageRelease,
    (running, running_version): (Slot, Option<&str>),
    in_place: &InPlace,
    traffic: &Traffic,
    report: &mut InstallReport,
    progress: &dyn Progress,
) -> Result<TargetSlot, InstallError> {
    let index: &Index = &image.index;
    let target = running.other();
    let running_path = seeds::image_slot_path(device, &image.name, running);
    let slot = TargetSlot::open(
        target,
        seeds::image_slot_path(device, &image.name, target),
        running_path,
        index.image_length,
    )?;
    // As for the root file system: a scan with no bundle to check first writes every chunk
    // of the image it finds as it goes (the install marked the group's targets as being
    // written before it wrote any image).
    let written_by_scan = image.bundle.is_none().then_some(&slot);
    let (seeds, scan_written) = seeds::image_install_seeds(
        device,
        &image.name,
        running,
        index,
        written_by_scan,
        progress,
    )?;
    let mut plan = Plan::build(index, &seeds, in_place);
    if let Some(bundle) = &image.bundle {
        plan.keep_delta_frames(index, |f| bundle.frames.contains_key(&(f as u32)));
    }
    let delta_bases = frames::base_offsets(index, &plan.delta_frames, &seeds);
    drop(seeds);
    progress.event(Event::Message(&format!(
        "image {}: writing slot {target} ({})",
        image.name,
        slot.path.display()
    )));
    let running_file =
        fs_err::File::open(running_path).map_err(|source| InstallError::ReadRunning {
            path: running_path.to_owned(),
            source,
        })?;
    write_planned(
        device,
        release,
        (image, "slot"),
        &slot,
        (&plan, &delta_bases, scan_written.as_ref()),
        (running_file.file(), running_version),
        traffic,
        report,
        progress,
    )
    .await?;
    Ok(slot)
}

/// Writes one image into `slot` as `plan` says: local chunks from `running` (but those the
/// scan wrote already, `scan_written`), then its delta frames (their bases at `delta_bases`)
/// and plain chunks from the release's store (or its bundle, which must carry or leave
/// reachable what the plan fetches), counted into `report`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_planned(
    device: &Device<'_>,
    release: &Release,
    (image, install): (&ImageRelease, &str),
    slot: &TargetSlot,
    (plan, delta_bases, scan_written): (&Plan, &frames::BaseOffsets, Option<&seeds::ScanWritten>),
    (running, running_version): (&std::fs::File, Option<&str>),
    traffic: &Traffic,
    report: &mut InstallReport,
    progress: &dyn Progress,
) -> Result<(), InstallError> {
    let index: &Index = &image.index;
    fetch::ensure_bundle_suffices(
        image.bundle.as_ref(),
        plan,
        (index, &release.source),
        running_version,
        traffic,
    )
    .await?;
    report.image_bytes += index.image_length;
    progress.event(Event::Image { name: &image.name });
    let to_fetch =
        local::write_local_chunks(plan, scan_written, index, running, slot, report, progress)?;
    let fetched_image_bytes = to_fetch
        .iter()
        .map(|&n| u64::from(index.chunks[n as usize].length))
        .sum::<u64>();
    report.fetched_image_bytes += fetched_image_bytes;
    report.images.push(ImageFigures {
        name: image.name.clone(),
        install: install.to_owned(),
        image_bytes: index.image_length,
        fetched_image_bytes,
        written: true,
    });
    let fetching = fetch::FetchContext {
        index,
        source: &release.source,
        bundle: image.bundle.as_ref(),
        slot,
        config: device.config,
        traffic,
        progress,
    };
    let to_fetch = frames::fetch_delta_frames(
        &fetching,
        &plan.delta_frames,
        delta_bases,
        to_fetch,
        running,
    )
    .await?;
    fetch::fetch_all(&fetching, &to_fetch).await
}
