//! The install, as its phases: prepare (running slot, state, the verified release) → gate
//! (eligible, not pending, not failed before, not a downgrade) → begin (open the target, plan,
//! mark the slot as being written) → write local chunks → fetch the rest → verify read-back
//! → record installed → arm the trial. Each phase is a function below or a module of its own;
//! every change of device state goes through [`DeviceState`], which owns the crash ordering.
//!
//! Invariants: the running slot is only read; every chunk is verified by its id before it
//! is written; the bootloader is only pointed at a slot whose whole image was read back
//! from storage and matched the signed image hash.

mod fetch;
mod frames;
mod gate;
mod group;
mod hooks;
mod local;
mod provision;
mod report;
mod seeds;
mod single;
mod verify;

pub use fetch::BadFrame;
pub use provision::{provision, ProvisionReport};
pub use report::{BundleCheck, CheckReport, ImagePlan, InstallReport, Outcome};

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use diffota_format::{hex32, ChunkId, TrustedKeys};

use crate::boot::{BootError, Bootloader};
use crate::config::Config;
use crate::hooks::HookPoint;
use crate::plan::{InPlace, Plan};
use crate::progress::{Event, Progress};
use crate::release::{decide, fetch_release, Release, ReleaseError, ReleaseTarget, Trust};
use crate::slot::{booted_slot, Slot, SlotError, TargetSlot};
use crate::source::{FetchError, StoreSource, Traffic};
use crate::state::{
    DeviceState, InProgress, InstallRecord, InstallResult, Installed, SlotRecord, StateDir,
    StateError, TransitionError, Trial,
};
use crate::system;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("release {offered} is older than {running}, which slot {slot} runs (pass --allow-downgrade to install it anyway)")]
    Downgrade {
        offered: String,
        running: String,
        slot: Slot,
    },
    #[error("chunk {id} from {url} at offset {pack_offset}: {reason}")]
    BadChunk {
        id: ChunkId,
        url: String,
        pack_offset: u64,
        #[source]
        reason: BadFrame,
    },
    #[error("slot {slot}: read back after writing does not match the release (expected BLAKE3 {expected}, read {actual}); the slot was not activated")]
    ReadBack {
        slot: Slot,
        expected: String,
        actual: String,
    },
    #[error("single-copy target {name} ({}): read back after writing does not match the image (expected BLAKE3 {expected}, read {actual}); nothing was armed", path.display())]
    SingleCopyReadBack {
        name: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("slot {slot} does not hold release {version}: its first {length} bytes hash to BLAKE3 {actual}, the release's image to {expected} (provision with the release the slot was flashed from, or flash the image that release was made from)")]
    NotThisRelease {
        slot: Slot,
        version: String,
        length: u64,
        expected: String,
        actual: String,
    },
    #[error("{path}: reading the running slot: {source}")]
    ReadRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `Progress::cancelled` said so: stopped between two chunks; the next install of the
    /// same release resumes from what was written.
    #[error("cancelled; the next install of this release resumes where this one stopped")]
    Cancelled,
    /// A hook before arming failed: nothing was armed, and the next install runs it again.
    #[error("{0}; nothing was armed")]
    Hook(#[from] crate::hooks::HookError),
    #[error("the bundle lacks {missing} chunks this device needs: it was made for devices on {made_for}, this device runs {running}, and no store is reachable to fetch the rest")]
    BundleIncomplete {
        missing: usize,
        made_for: String,
        running: String,
    },
}

/// Everything an install needs from the device.
pub struct Device<'a> {
    pub config: &'a Config,
    pub keys: &'a TrustedKeys,
    pub state_dir: StateDir,
    pub device_id: String,
    pub bootloader: &'a mut dyn Bootloader,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct InstallOptions {
    pub allow_downgrade: bool,
    /// Reinstall the running version and ignore rollout eligibility.
    pub force: bool,
}

/// What every command starts from, read once: which slot runs (the kernel command line) and
/// what the device recorded (its state).
pub struct Running {
    pub slot: Slot,
    pub machine: DeviceState,
}

impl Running {
    pub fn load(device: &Device<'_>) -> Result<Running, InstallError> {
        let config = device.config;
        Ok(Running {
            slot: booted_slot(&config.boot.cmdline, &config.slots.a, &config.slots.b)?,
            machine: DeviceState::load(&device.state_dir)?,
        })
    }

    /// The release the running slot holds, as recorded.
    pub fn version(&self) -> Option<&str> {
        self.machine.state().version_in(self.slot)
    }
}

/// The phase every command starts with: the release verified (signature, counter, expiry,
/// compatible, rollout) against what runs.
struct Prepared {
    release: Release,
    machine: DeviceState,
    running: Slot,
}

async fn prepare(
    device: &Device<'_>,
    Running {
        slot: running,
        machine,
    }: Running,
    target: &ReleaseTarget,
    traffic: &Traffic,
) -> Result<Prepared, InstallError> {
    let config = device.config;
    let store = StoreSource::new(&config.server_url, &config.http)?;
    let trust = Trust {
        keys: device.keys,
        compatible: &config.compatible,
        images: config.images.keys().map(String::as_str).collect(),
        single_copy: config.single_copy.keys().map(String::as_str).collect(),
        device_id: &device.device_id,
        now: system::now(),
    };
    let base = match target {
        ReleaseTarget::Bundle(_) => None,
        _ => seeds::stored_index(device, running)?,
    };
    let release = fetch_release(
        &store,
        target,
        &trust,
        machine.state(),
        base.as_ref(),
        traffic,
    )
    .await?;
    drop(base);
    Ok(Prepared {
        release,
        machine,
        running,
    })
}

pub async fn check(
    device: &Device<'_>,
    target: &ReleaseTarget,
) -> Result<CheckReport, InstallError> {
    let traffic = Traffic::default();
    let Prepared {
        release,
        machine,
        running,
    } = prepare(device, Running::load(device)?, target, &traffic).await?;
    let state = machine.state();
    let index = &release.index;
    let running_version = state.version_in(running);
    let decision = decide(running_version, &index.version, false, false);
    let seeds = seeds::running_seeds(device, running, index, &crate::progress::Quiet)?;
    let mut planned = Plan::build(index, &seeds, &InPlace::Nothing);
    if let Some(bundle) = &release.bundle {
        planned.keep_delta_frames(index, |f| bundle.frames.contains_key(&(f as u32)));
    }
    let image_plans: Vec<group::ImagePlanned> = group::plan_summaries(device, &release, running)?
        .into_iter()
        .chain(single::plan_summaries(device, &release, state))
        .collect();
    let bundle = release.bundle.as_ref().map(|b| BundleCheck {
        made_for: b.made_for.clone(),
        missing_chunks: fetch::missing_from_bundle(
            Some(b),
            &planned.fetch_chunks_after_frames(index),
        ) + image_plans
            .iter()
            .map(|p| p.missing_from_bundle)
            .sum::<u64>(),
    });
    let eligibility = release.eligibility.clone();
    let eligible = eligibility.as_ref().is_none_or(|e| e.is_eligible());
    let failed = state.failed(&index.version);
    let pending = state
        .trial()
        .filter(|t| t.version == index.version && t.slot != running)
        .map(|t| t.slot);
    // What `install` checks before it writes, predicted: the inactive slot holds the image,
    // and the bootloader environment it will change is there and readable.
    let target = running.other();
    let cannot_install =
        crate::slot::check_capacity(target, device.config.slot_path(target), index.image_length)
            .err()
            .map(|problem| problem.to_string())
            .or_else(|| device.bootloader.state().err().map(|e| e.to_string()));
    Ok(CheckReport {
        running_slot: running,
        running_version: running_version.map(str::to_owned),
        channel: release.channel.as_ref().map(|c| c.channel.clone()),
        channel_counter: release.channel.as_ref().map(|c| c.counter),
        version: index.version.clone(),
        eligible,
        eligibility: eligibility.map_or_else(
            || "no channel: explicit release".to_owned(),
            |e| e.to_string(),
        ),
        decision: match (failed, pending, &cannot_install) {
            (Some(failed), _, _) => format!("previously failed here: {}", failed.reason),
            (None, Some(slot), _) => format!("installed in slot {slot}, waiting for the reboot"),
            (None, None, Some(problem)) => format!("cannot install: {problem}"),
            (None, None, None) => format!("{decision:?}").to_lowercase(),
        },
        // Exactly when `install` would go ahead.
        update_available: cannot_install.is_none()
            && matches!(
                gate::refusal(&release, state, running, InstallOptions::default()),
                Ok(None)
            ),
        cannot_install,
        plan: planned.summary(index, device.config.http.max_gap),
        metadata_bytes: traffic.bytes.load(Ordering::Relaxed),
        bundle,
        images: image_plans
            .into_iter()
            .map(|p| report::ImagePlan {
                name: p.name,
                plan: p.plan,
            })
            .collect(),
    })
}

/// Installs `target` into the slot that does not run, from what `Running::load` read.
pub async fn install(
    device: &mut Device<'_>,
    running: Running,
    target: &ReleaseTarget,
    options: InstallOptions,
    progress: &dyn Progress,
) -> Result<Outcome, InstallError> {
    let started = Instant::now();
    let traffic = Arc::new(Traffic::default());
    let Prepared {
        release,
        mut machine,
        running,
    } = prepare(device, running, target, &traffic).await?;
    if let Some(channel) = &release.channel {
        machine.accept_channel(&channel.channel, channel.counter)?;
    }
    if let Some(refusal) = gate::refusal(&release, machine.state(), running, options)? {
        return Ok(refusal);
    }
    let hook_env = hooks::install_env(device.config, &release, machine.state(), running);
    if let Some(stop) = hooks::run(
        device,
        &mut machine,
        &release,
        HookPoint::PreInstall,
        &hook_env,
    )
    .await?
    {
        return Ok(stop);
    }
    let job = begin(device, &mut machine, &release, running, &traffic, progress).await?;
    let mut report = InstallReport {
        version: release.index.version.clone(),
        slot: Some(job.slot.slot),
        image_bytes: release.index.image_length,
        ..Default::default()
    };
    let to_fetch = local::write_local_chunks(
        &job.plan,
        job.scan_written.as_ref(),
        &release.index,
        job.running_file.file(),
        &job.slot,
        &mut report,
        progress,
    )?;
    // Past the local phase only the plan's delta frames are needed: its per-chunk sources
    // are freed before the frames' buffers are.
    let delta_frames = job.plan.into_delta_frames();
    let fetched_image_bytes = to_fetch
        .iter()
        .map(|&n| u64::from(release.index.chunks[n as usize].length))
        .sum();
    let fetching = fetch::FetchContext {
        index: &release.index,
        source: &release.source,
        bundle: release.bundle.as_ref(),
        slot: &job.slot,
        config: device.config,
        traffic: &traffic,
        progress,
    };
    let to_fetch = frames::fetch_delta_frames(
        &fetching,
        &delta_frames,
        &job.delta_bases,
        to_fetch,
        job.running_file.file(),
    )
    .await?;
    fetch::fetch_all(&fetching, &to_fetch).await?;
    report.fetched_image_bytes = fetched_image_bytes;
    if !(release.images.is_empty() && release.single_copy.is_empty()) {
        report.images.push(crate::outcomes::ImageFigures {
            name: crate::config::ROOTFS.into(),
            install: "slot".into(),
            image_bytes: release.index.image_length,
            fetched_image_bytes,
            written: true,
        });
    }
    // Before the read-back, so that whatever a post-write hook did to the slot is caught.
    let image_env = hooks::image_env(
        hook_env.clone(),
        crate::config::ROOTFS,
        &release.index,
        &job.slot,
    );
    if let Some(stop) = hooks::run(
        device,
        &mut machine,
        &release,
        HookPoint::PostWrite,
        &image_env,
    )
    .await?
    {
        return Ok(stop);
    }
    progress.event(Event::Verifying);
    verify::read_back(&job.slot, &release.index)?;
    if let Some(stop) = group::write_images(
        device,
        &mut machine,
        &release,
        running,
        &job.others_in_place,
        &hook_env,
        &traffic,
        &mut report,
        progress,
    )
    .await?
    {
        return Ok(stop);
    }
    single::write_all(
        device,
        &mut machine,
        (&release, running),
        &hook_env,
        &traffic,
        &mut report,
        progress,
    )
    .await?;
    if let Some(stop) = hooks::run(
        device,
        &mut machine,
        &release,
        HookPoint::PreArm,
        &image_env,
    )
    .await?
    {
        return Ok(stop);
    }
    report.downloaded_bytes = traffic.bytes.load(Ordering::Relaxed);
    report.requests = traffic.requests.load(Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    record_installed(&mut machine, &release, job.slot.slot, &report)?;
    arm_trial(device, &mut machine, job.slot.slot, job.running)?;
    tracing::info!(event = "install_finished", version = %report.version, slot = %job.slot.slot, downloaded = report.downloaded_bytes, requests = report.requests);
    progress.event(Event::Finished);
    Ok(Outcome::Installed(report))
}

/// An install past its gate: the target slot open for writing, the running slot open for
/// reading, and the plan of where each chunk comes from.
struct Job {
    slot: TargetSlot,
    running: Slot,
    running_file: fs_err::File,
    plan: Plan,
    /// What the scan of the running slot wrote to the target already, if it did.
    scan_written: Option<seeds::ScanWritten>,
    /// Where the bases of the plan's delta frames are in the running slot.
    delta_bases: frames::BaseOffsets,
    /// What of the slot group's other images is in place in the target slot already.
    others_in_place: Vec<InPlace>,
}

/// Opens the target, plans every chunk, checks a bundle suffices, and marks the target as
/// being written (from here on it no longer holds what its stored index says).
async fn begin(
    device: &mut Device<'_>,
    machine: &mut DeviceState,
    release: &Release,
    running: Slot,
    traffic: &Traffic,
    progress: &dyn Progress,
) -> Result<Job, InstallError> {
    let index = &release.index;
    let config = device.config;
    let target = running.other();
    let running_path = config.slot_path(running);
    let slot = TargetSlot::open(
        target,
        config.slot_path(target),
        running_path,
        index.image_length,
    )?;
    let marker = InProgress {
        slot: target,
        version: index.version.clone(),
        image_hash: hex32(&index.image_hash),
        images: group::marker_images(release),
    };
    let resuming = machine.in_progress()?.as_ref() == Some(&marker);
    let in_place = if resuming {
        InPlace::Everything
    } else {
        seeds::stored_index(device, target)?.map_or(InPlace::Nothing, |i| InPlace::from_index(&i))
    };
    let others_in_place = group::in_place(device, release, target, resuming)?;
    let rootfs = crate::config::ROOTFS;
    let mut begun = false;
    let (seeds, scan_written) = match seeds::stored_seeds(device, rootfs, running, index)? {
        Some(seeds) => (seeds, None),
        // The running slot must be scanned: with no bundle to check against the plan first,
        // the target is marked as being written before the scan, which writes every chunk
        // of the release it finds as it finds it (the slot is read once, not twice).
        None if release.bundle.is_none() => {
            machine.begin_install(&marker, device.bootloader)?;
            begun = true;
            seeds::scan_running(device, rootfs, running, index, Some(&slot), progress)?
        }
        None => seeds::scan_running(device, rootfs, running, index, None, progress)?,
    };
    let mut plan = Plan::build(index, &seeds, &in_place);
    if let Some(bundle) = &release.bundle {
        plan.keep_delta_frames(index, |f| bundle.frames.contains_key(&(f as u32)));
    }
    let delta_bases = frames::base_offsets(index, &plan.delta_frames, &seeds);
    drop(seeds);
    fetch::ensure_bundle_suffices(
        release.bundle.as_ref(),
        &plan,
        (index, &release.source),
        machine.state().version_in(running),
        traffic,
    )
    .await?;
    // A release of several images lists each it writes (the single-copy images whose
    // targets hold them already are skipped), for per-image progress.
    let images: Vec<(&str, u64)> = if release.images.is_empty() && release.single_copy.is_empty() {
        Vec::new()
    } else {
        std::iter::once((release.name.as_str(), index.image_length))
            .chain(
                release
                    .images
                    .iter()
                    .chain(
                        release
                            .single_copy
                            .iter()
                            .filter(|image| !single::holds(machine.state(), image)),
                    )
                    .map(|image| (image.name.as_str(), image.index.image_length)),
            )
            .collect()
    };
    progress.event(Event::Started {
        version: &index.version,
        slot: target,
        plan: &plan.summary(index, config.http.max_gap),
        total_bytes: images
            .iter()
            .map(|(_, bytes)| bytes)
            .sum::<u64>()
            .max(index.image_length),
        images: &images,
    });
    if !images.is_empty() {
        progress.event(Event::Image {
            name: &release.name,
        });
    }
    tracing::info!(event = "install_started", version = %index.version, slot = %target);
    if !begun {
        machine.begin_install(&marker, device.bootloader)?;
    }
    let running_file =
        fs_err::File::open(running_path).map_err(|source| InstallError::ReadRunning {
            path: running_path.to_owned(),
            source,
        })?;
    Ok(Job {
        slot,
        running,
        running_file,
        plan,
        scan_written,
        delta_bases,
        others_in_place,
    })
}

/// The slot read back matching: it becomes the slot's record and its seed for next time.
fn record_installed(
    machine: &mut DeviceState,
    release: &Release,
    target: Slot,
    report: &InstallReport,
) -> Result<(), StateError> {
    let index = &release.index;
    let finished_at = system::now();
    machine.record_installed(Installed {
        slot: SlotRecord {
            version: index.version.clone(),
            image_hash: hex32(&index.image_hash),
            image_length: index.image_length,
            installed_at: finished_at,
            good: false,
            images: group::records(release),
        },
        install: InstallRecord {
            version: index.version.clone(),
            slot: target,
            result: InstallResult::Installed,
            finished_at,
            downloaded_bytes: report.downloaded_bytes,
            requests: report.requests,
            image_bytes: report.image_bytes,
            copied_bytes: report.copied_bytes + report.in_place_bytes,
        },
        index: &index.to_bytes(),
        signature: &release.index_signature,
        images: group::seed_indexes(release),
    })
}

/// Points the bootloader at the new slot for `boot_attempts` trial boots.
fn arm_trial(
    device: &mut Device<'_>,
    machine: &mut DeviceState,
    target: Slot,
    running: Slot,
) -> Result<(), TransitionError> {
    let boot = &device.config.boot;
    let trial = Trial {
        slot: target,
        version: machine
            .state()
            .version_in(target)
            .unwrap_or_default()
            .to_owned(),
        from_slot: running,
        started_at: system::now(),
        attempts: boot.boot_attempts,
        boot_id: system::boot_id(&boot.boot_id_file),
    };
    machine.arm_trial(trial, device.bootloader)
}
