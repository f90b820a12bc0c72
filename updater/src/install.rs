//! The install, top to bottom: verify release → plan → write (local chunks, then fetched
//! ranges) → flush → read back and verify → store the index as the slot's seed → record the
//! result → point the bootloader at the new slot for one trial boot.
//!
//! Invariants: the running slot is only read; every chunk is verified by its id before it
//! is written; the bootloader is only pointed at a slot whose whole image was read back
//! from storage and matched the signed image hash.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use diffota_format::ranges::{plan_ranges, FetchRange};
use diffota_format::{
    hex32, ChunkData, ChunkEntry, ChunkId, FormatError, Index, SignedIndex, TrustedKeys,
    VerifiedChunk, VerifiedIndex,
};
use futures_util::StreamExt;

use crate::boot::{BootError, Bootloader};
use crate::config::Config;
use crate::plan::{InPlace, Plan, PlanSummary, SeedMap};
use crate::progress::{Event, Progress};
use crate::release::{
    decide, fetch_release, Decision, Release, ReleaseError, ReleaseTarget, Trust,
};
use crate::slot::{booted_slot, read_at, Slot, SlotError, TargetSlot};
use crate::source::{FetchError, RangeError, RangeSink, StoreSource, Traffic};
use crate::state::{InProgress, InstallRecord, SlotRecord, State, StateDir, StateError, Trial};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    State(#[from] StateError),
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
        reason: String,
    },
    #[error("slot {slot}: read back after writing does not match the release (expected BLAKE3 {expected}, read {actual}); the slot was not activated")]
    ReadBack {
        slot: Slot,
        expected: String,
        actual: String,
    },
    #[error("{path}: reading the running slot: {source}")]
    ReadRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Keys(String),
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

#[derive(Debug, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Installed(InstallReport),
    UpToDate {
        version: String,
    },
    NotEligible {
        version: String,
        reason: String,
    },
    PreviouslyFailed {
        version: String,
        reason: String,
    },
    /// Already installed in the other slot, waiting for the reboot into its trial.
    PendingReboot {
        version: String,
        slot: Slot,
    },
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct InstallReport {
    pub version: String,
    pub slot: Option<Slot>,
    pub image_bytes: u64,
    pub in_place_bytes: u64,
    pub copied_bytes: u64,
    pub fetched_image_bytes: u64,
    pub downloaded_bytes: u64,
    pub requests: u64,
    pub seconds: f64,
}

/// What `check` reports: the release, whether it applies, and the planned download.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    pub running_slot: Slot,
    pub running_version: Option<String>,
    pub channel: Option<String>,
    pub channel_counter: Option<u64>,
    pub version: String,
    pub eligible: bool,
    pub eligibility: String,
    pub decision: String,
    pub update_available: bool,
    pub plan: PlanSummary,
    pub metadata_bytes: u64,
    /// For a bundle: the releases it was made for and the chunks this device needs that it lacks.
    pub bundle: Option<BundleCheck>,
}

#[derive(Debug, serde::Serialize)]
pub struct BundleCheck {
    pub made_for: Vec<String>,
    pub missing_chunks: u64,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Prepared {
    release: Release,
    state: State,
    running: Slot,
    decision: Decision,
}

async fn prepare(
    device: &Device<'_>,
    target: &ReleaseTarget,
    traffic: &Traffic,
) -> Result<Prepared, InstallError> {
    let config = device.config;
    let running = booted_slot(&config.boot.cmdline, &config.slots.a, &config.slots.b)?;
    let state = device.state_dir.load()?;
    let store = StoreSource::new(&config.server_url, &config.http)?;
    let trust = Trust {
        keys: device.keys,
        compatible: &config.compatible,
        device_id: &device.device_id,
        now: now(),
    };
    let release = fetch_release(&store, target, &trust, &state, traffic).await?;
    let running_version = state.slots.get(&running).map(|r| r.version.as_str());
    let decision = decide(running_version, &release.index.version, false, false);
    Ok(Prepared {
        release,
        state,
        running,
        decision,
    })
}

/// Seeds for the plan: the running slot's stored index when its signature still verifies
/// and its chunker matches, otherwise the running slot cut with the new chunker.
fn running_seeds(
    device: &Device<'_>,
    running: Slot,
    index: &Index,
    progress: &dyn Progress,
) -> Result<SeedMap, InstallError> {
    if let Some(stored) = stored_index(device, running)? {
        if stored.chunker == index.chunker {
            return Ok(SeedMap::from_index(&stored));
        }
    }
    let path = device.config.slot_path(running);
    progress.event(Event::Message(&format!(
        "no usable index for running slot {running}; scanning {}",
        path.display()
    )));
    let read_error = |source| InstallError::ReadRunning {
        path: path.to_owned(),
        source,
    };
    let file = fs_err::File::open(path).map_err(read_error)?;
    let mut seeds = SeedMap::default();
    // The partition is usually larger than the image it holds; cutting past the image's end
    // would change the last chunk. Without a stored index the old image's length is unknown:
    // assume it matches the new one (fixed-size filesystem images). A wrong guess only costs
    // seeds, never correctness: every seed chunk is re-hashed before use.
    let limited = std::io::Read::take(file, index.image_length);
    for chunk in index
        .chunker
        .chunk_stream(std::io::BufReader::with_capacity(1 << 20, limited))
    {
        let chunk = chunk.map_err(read_error)?;
        seeds.insert(
            ChunkId::of(&chunk.data),
            chunk.offset,
            chunk.data.len() as u32,
        );
    }
    Ok(seeds)
}

fn stored_index(device: &Device<'_>, slot: Slot) -> Result<Option<VerifiedIndex>, InstallError> {
    let Some((bytes, signature)) = device.state_dir.seed_index(slot)? else {
        return Ok(None);
    };
    match (SignedIndex {
        bytes: &bytes,
        signature: &signature,
    })
    .verify(device.keys)
    {
        Ok(index) => Ok(Some(index)),
        Err(e) => {
            tracing::warn!(event = "seed_index_rejected", slot = %slot, error = %e);
            Ok(None)
        }
    }
}

pub async fn check(
    device: &Device<'_>,
    target: &ReleaseTarget,
) -> Result<CheckReport, InstallError> {
    let traffic = Traffic::default();
    let prepared = prepare(device, target, &traffic).await?;
    let index = &prepared.release.index;
    let seeds = running_seeds(device, prepared.running, index, &crate::progress::Quiet)?;
    let planned = Plan::build(index, &seeds, &InPlace::Nothing);
    let plan = planned.summary(device.config.http.max_gap);
    let bundle = prepared.release.bundle.as_ref().map(|b| BundleCheck {
        made_for: b.made_for.clone(),
        missing_chunks: planned
            .fetch_chunks()
            .iter()
            .filter(|c| !b.table.contains_key(&c.id))
            .count() as u64,
    });
    let eligibility = prepared.release.eligibility.clone();
    let eligible = eligibility.as_ref().is_none_or(|e| e.is_eligible());
    Ok(CheckReport {
        running_slot: prepared.running,
        running_version: prepared
            .state
            .slots
            .get(&prepared.running)
            .map(|r| r.version.clone()),
        channel: prepared.release.channel.as_ref().map(|c| c.channel.clone()),
        channel_counter: prepared.release.channel.as_ref().map(|c| c.counter),
        version: index.version.clone(),
        eligible,
        eligibility: eligibility.map_or_else(
            || "no channel: explicit release".to_owned(),
            |e| e.to_string(),
        ),
        decision: match prepared.state.failed(&index.version) {
            Some(failed) => format!("previously failed here: {}", failed.reason),
            None => format!("{:?}", prepared.decision).to_lowercase(),
        },
        update_available: eligible
            && prepared.decision == Decision::Install
            && prepared.state.failed(&index.version).is_none(),
        plan,
        metadata_bytes: traffic.bytes.load(Ordering::Relaxed),
        bundle,
    })
}

pub async fn install(
    device: &mut Device<'_>,
    target: &ReleaseTarget,
    options: InstallOptions,
    progress: &dyn Progress,
) -> Result<Outcome, InstallError> {
    let started = std::time::Instant::now();
    let traffic = Arc::new(Traffic::default());
    let Prepared {
        release,
        mut state,
        running,
        ..
    } = prepare(device, target, &traffic).await?;
    let index = &release.index;
    let version = index.version.clone();

    if let Some(channel) = &release.channel {
        state
            .channel_counters
            .insert(channel.channel.clone(), channel.counter);
        device.state_dir.save(&state)?;
    }
    if let Some(eligibility) = release
        .eligibility
        .as_ref()
        .filter(|e| !e.is_eligible() && !options.force)
    {
        return Ok(Outcome::NotEligible {
            version,
            reason: eligibility.to_string(),
        });
    }
    let running_version = state.slots.get(&running).map(|r| r.version.clone());
    if let Some(trial) = state
        .trial
        .as_ref()
        .filter(|t| t.version == version && t.slot != running && !options.force)
    {
        return Ok(Outcome::PendingReboot {
            version,
            slot: trial.slot,
        });
    }
    if let Some(failed) = state.failed(&version).filter(|_| !options.force) {
        return Ok(Outcome::PreviouslyFailed {
            version,
            reason: failed.reason.clone(),
        });
    }
    match decide(
        running_version.as_deref(),
        &version,
        options.allow_downgrade,
        options.force,
    ) {
        Decision::Install => {}
        Decision::UpToDate => return Ok(Outcome::UpToDate { version }),
        Decision::Downgrade => {
            return Err(InstallError::Downgrade {
                offered: version,
                running: running_version.unwrap_or_default(),
                slot: running,
            })
        }
    }

    let target_slot = running.other();
    let config = device.config;
    let running_path = config.slot_path(running);
    let slot = TargetSlot::open(
        target_slot,
        config.slot_path(target_slot),
        running_path,
        index.image_length,
    )?;
    let image_hash = hex32(&index.image_hash);

    let marker = InProgress {
        slot: target_slot,
        version: version.clone(),
        image_hash: image_hash.clone(),
    };
    let in_place = if device.state_dir.in_progress()?.as_ref() == Some(&marker) {
        InPlace::Everything
    } else {
        stored_index(device, target_slot)?.map_or(InPlace::Nothing, |i| InPlace::from_index(&i))
    };
    let seeds = running_seeds(device, running, index, progress)?;
    let plan = Plan::build(index, &seeds, &in_place);
    if let Some(bundle) = &release.bundle {
        ensure_bundle_suffices(
            bundle,
            &plan.fetch_chunks(),
            &release,
            running_version.as_deref(),
            &traffic,
        )
        .await?;
    }
    progress.event(Event::Started {
        version: &version,
        slot: target_slot,
        plan: &plan.summary(config.http.max_gap),
    });
    tracing::info!(event = "install_started", version = %version, slot = %target_slot);

    // From here on the target no longer holds what its stored index says.
    device.state_dir.set_in_progress(Some(&marker))?;
    device.state_dir.set_seed_index(target_slot, None)?;
    state.slots.remove(&target_slot);
    device.state_dir.save(&state)?;
    device.bootloader.forget_slot(target_slot)?;

    let mut report = InstallReport {
        version: version.clone(),
        slot: Some(target_slot),
        image_bytes: index.image_length,
        ..Default::default()
    };
    let running_file =
        fs_err::File::open(running_path).map_err(|source| InstallError::ReadRunning {
            path: running_path.to_owned(),
            source,
        })?;
    let to_fetch = write_local_chunks(&plan, running_file.file(), &slot, &mut report, progress)?;
    fetch_all(&release, &to_fetch, &slot, config, &traffic, progress).await?;
    report.fetched_image_bytes = to_fetch.iter().map(|c| u64::from(c.length)).sum();

    progress.event(Event::Verifying);
    slot.sync_and_drop_cache()?;
    let actual = hash_slot(&slot, index.image_length)?;
    if actual != index.image_hash {
        return Err(InstallError::ReadBack {
            slot: target_slot,
            expected: image_hash,
            actual: hex32(&actual),
        });
    }

    report.downloaded_bytes = traffic.bytes.load(Ordering::Relaxed);
    report.requests = traffic.requests.load(Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    device
        .state_dir
        .set_seed_index(target_slot, Some((index.bytes(), &release.index_signature)))?;
    state.slots.insert(
        target_slot,
        SlotRecord {
            version: version.clone(),
            image_hash,
            image_length: index.image_length,
            installed_at: now(),
            good: false,
        },
    );
    state.last_install = Some(InstallRecord {
        version: version.clone(),
        slot: target_slot,
        result: "installed".into(),
        finished_at: now(),
        downloaded_bytes: report.downloaded_bytes,
        requests: report.requests,
        image_bytes: report.image_bytes,
        copied_bytes: report.copied_bytes + report.in_place_bytes,
    });
    state.trial = None;
    device.state_dir.save(&state)?;
    device.state_dir.set_in_progress(None)?;
    // Bootloader first, then the record of the trial: a crash between the two leaves a
    // trial the next mark-good simply commits, never a revert recorded for a slot not tried.
    device
        .bootloader
        .start_trial(target_slot, config.boot.boot_attempts)?;
    state.trial = Some(Trial {
        slot: target_slot,
        version: version.clone(),
        from_slot: running,
        started_at: now(),
        attempts: config.boot.boot_attempts,
        boot_id: crate::lifecycle::current_boot_id(&config.boot.boot_id_file),
    });
    device.state_dir.save(&state)?;
    tracing::info!(event = "install_finished", version = %version, slot = %target_slot, downloaded = report.downloaded_bytes, requests = report.requests);
    progress.event(Event::Finished);
    Ok(Outcome::Installed(report))
}

/// Takes every chunk it can from the target (already in place) or the running slot, each
/// re-hashed before use; returns the chunks that must be fetched.
fn write_local_chunks(
    plan: &Plan,
    running: &std::fs::File,
    slot: &TargetSlot,
    report: &mut InstallReport,
    progress: &dyn Progress,
) -> Result<Vec<ChunkEntry>, InstallError> {
    let mut to_fetch = Vec::new();
    let mut stale_seeds = 0u64;
    for step in &plan.steps {
        let chunk = &step.chunk;
        let length = chunk.length as usize;
        if step.check_in_place {
            if let Ok(bytes) = read_at(slot.file(), chunk.offset, length) {
                if ChunkId::of(&bytes) == chunk.id {
                    report.in_place_bytes += u64::from(chunk.length);
                    progress.event(Event::Written {
                        bytes: u64::from(chunk.length),
                    });
                    continue;
                }
            }
        }
        if let Some(seed_offset) = step.seed_offset {
            let verified = read_at(running, seed_offset, length)
                .ok()
                .and_then(|bytes| ChunkData(bytes).verify(&chunk.id).ok());
            match verified {
                Some(verified) => {
                    slot.write_chunk(&verified, chunk.offset)?;
                    report.copied_bytes += u64::from(chunk.length);
                    progress.event(Event::Written {
                        bytes: u64::from(chunk.length),
                    });
                    continue;
                }
                None => stale_seeds += 1,
            }
        }
        to_fetch.push(*chunk);
    }
    if stale_seeds > 0 {
        tracing::warn!(
            event = "seed_chunks_stale",
            count = stale_seeds,
            "running slot differs from its stored index; fetching those chunks"
        );
        progress.event(Event::Message(&format!("{stale_seeds} chunks of the running slot did not match its index; fetching them instead")));
    }
    Ok(to_fetch)
}

/// Fetches `chunks` from where the release came from: the store, or for a bundle the bundle
/// file, and what the bundle lacks from the configured store.
async fn fetch_all(
    release: &Release,
    chunks: &[ChunkEntry],
    slot: &TargetSlot,
    config: &Config,
    traffic: &Traffic,
    progress: &dyn Progress,
) -> Result<(), InstallError> {
    let mut pack_paths: Vec<String> = release.index.packs.iter().map(|p| p.store_path()).collect();
    let Some(bundle) = &release.bundle else {
        let ranges = plan_ranges(chunks, config.http.max_gap);
        return fetch_chunks(
            &release.source,
            &pack_paths,
            ranges,
            slot,
            config,
            traffic,
            progress,
        )
        .await;
    };
    let bundle_pack = pack_paths.len() as u32;
    let (carried, missing): (Vec<_>, Vec<_>) = chunks
        .iter()
        .map(|c| (bundle.locate(c, bundle_pack), *c))
        .partition(|(located, _)| located.is_some());
    let carried: Vec<ChunkEntry> = carried
        .into_iter()
        .filter_map(|(located, _)| located)
        .collect();
    let missing: Vec<ChunkEntry> = missing.into_iter().map(|(_, chunk)| chunk).collect();
    let store_paths = pack_paths.clone();
    pack_paths.push(bundle.file_name());
    let bundle_source = StoreSource::Local { root: bundle.dir() };
    fetch_chunks(
        &bundle_source,
        &pack_paths,
        plan_ranges(&carried, 0),
        slot,
        config,
        traffic,
        progress,
    )
    .await?;
    if !missing.is_empty() {
        let ranges = plan_ranges(&missing, config.http.max_gap);
        fetch_chunks(
            &release.source,
            &store_paths,
            ranges,
            slot,
            config,
            traffic,
            progress,
        )
        .await?;
    }
    Ok(())
}

/// Before anything is written: the chunks neither the running slot nor the bundle has must
/// be reachable in the configured store, or the install stops and says what the bundle is for.
async fn ensure_bundle_suffices(
    bundle: &crate::bundle::BundleChunks,
    planned_fetches: &[ChunkEntry],
    release: &Release,
    running_version: Option<&str>,
    traffic: &Traffic,
) -> Result<(), InstallError> {
    let missing = planned_fetches
        .iter()
        .filter(|c| !bundle.table.contains_key(&c.id))
        .count();
    if missing == 0 {
        return Ok(());
    }
    let index_path = format!("releases/{}/{}.didx", release.index.version, bundle.name);
    if release
        .source
        .get(&index_path, 256 * 1024 * 1024, traffic)
        .await
        .is_ok()
    {
        tracing::info!(
            event = "bundle_incomplete",
            missing,
            "fetching what the bundle lacks from the store"
        );
        return Ok(());
    }
    Err(InstallError::BundleIncomplete {
        missing,
        made_for: if bundle.made_for.is_empty() {
            "any release".into()
        } else {
            bundle.made_for.join(" or ")
        },
        running: running_version.unwrap_or("an unknown release").to_owned(),
    })
}

/// Fetches the ranges, several at a time, retrying transient failures from the first chunk
/// not yet written.
async fn fetch_chunks(
    source: &StoreSource,
    pack_paths: &[String],
    ranges: Vec<FetchRange>,
    slot: &TargetSlot,
    config: &Config,
    traffic: &Traffic,
    progress: &dyn Progress,
) -> Result<(), InstallError> {
    let mut results = futures_util::stream::iter(ranges)
        .map(|range| fetch_range(source, pack_paths, range, slot, config, traffic, progress))
        .buffer_unordered(config.http.concurrency);
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(())
}

async fn fetch_range(
    source: &StoreSource,
    pack_paths: &[String],
    mut range: FetchRange,
    slot: &TargetSlot,
    config: &Config,
    traffic: &Traffic,
    progress: &dyn Progress,
) -> Result<(), InstallError> {
    let pack_path = &pack_paths[range.pack as usize];
    let url = source.describe(pack_path);
    let mut attempt = 0;
    loop {
        let mut sink = ChunkWriter {
            url: &url,
            start: range.start,
            buffer: Vec::new(),
            chunks: &range.chunks,
            next: 0,
            slot,
            progress,
            last: None,
        };
        let result = source
            .get_range(pack_path, range.start, range.end, &mut sink, traffic)
            .await;
        let written = sink.next;
        match result {
            Ok(()) => return Ok(()),
            Err(RangeError::Sink(error)) => return Err(error),
            Err(RangeError::Fetch(error))
                if error.is_transient() && attempt < config.http.retries =>
            {
                attempt += 1;
                let delay =
                    Duration::from_millis(200u64 << attempt.min(5)).min(Duration::from_secs(5));
                tracing::warn!(event = "chunk_fetch_failed", url = %url, attempt, error = %error, "retrying in {delay:?}");
                progress.event(Event::Message(&format!(
                    "{error}; retry {attempt} of {} in {delay:?}",
                    config.http.retries
                )));
                tokio::time::sleep(delay).await;
                // Resume from the first chunk not yet written.
                range.chunks.drain(..written);
                if let Some(first) = range.chunks.first() {
                    range.start = first.pack_offset;
                } else {
                    return Ok(());
                }
            }
            Err(RangeError::Fetch(error)) => return Err(error.into()),
        }
    }
}

/// Receives a range's bytes, cuts out each chunk's zstd frame, decompresses, verifies and
/// writes it; holds at most one frame plus a merge gap in memory.
struct ChunkWriter<'a> {
    url: &'a str,
    /// Pack offset of `buffer[0]`.
    start: u64,
    buffer: Vec<u8>,
    chunks: &'a [ChunkEntry],
    /// Chunks fully written so far.
    next: usize,
    slot: &'a TargetSlot,
    progress: &'a dyn Progress,
    /// The last decoded chunk and its pack offset.
    last: Option<(u64, VerifiedChunk)>,
}

impl RangeSink for ChunkWriter<'_> {
    type Error = InstallError;

    fn accept(&mut self, bytes: &[u8]) -> Result<(), InstallError> {
        self.buffer.extend_from_slice(bytes);
        while let Some(chunk) = self.chunks.get(self.next) {
            let frame_start = (chunk.pack_offset - self.start) as usize;
            let frame_end = frame_start + chunk.compressed_length as usize;
            if frame_end > self.buffer.len() {
                break;
            }
            // Chunks that occur at several image offsets are decoded once (they are adjacent).
            let reuse = self
                .last
                .as_ref()
                .is_some_and(|(offset, _)| *offset == chunk.pack_offset);
            if !reuse {
                let verified = decode_frame(&self.buffer[frame_start..frame_end], chunk, self.url)?;
                self.last = Some((chunk.pack_offset, verified));
            }
            let (_, verified) = self.last.as_ref().expect("decoded above");
            self.slot.write_chunk(verified, chunk.offset)?;
            self.progress.event(Event::Written {
                bytes: u64::from(chunk.length),
            });
            self.next += 1;
            // Keep only the bytes from the next chunk's frame on.
            let keep_from = self
                .chunks
                .get(self.next)
                .map_or(frame_end, |c| (c.pack_offset - self.start) as usize)
                .min(self.buffer.len());
            self.buffer.drain(..keep_from);
            self.start += keep_from as u64;
        }
        Ok(())
    }
}

/// Decompresses one zstd frame and verifies it against the chunk id.
fn decode_frame(
    frame: &[u8],
    chunk: &ChunkEntry,
    url: &str,
) -> Result<VerifiedChunk, InstallError> {
    let bad = |reason: String| InstallError::BadChunk {
        id: chunk.id,
        url: url.to_owned(),
        pack_offset: chunk.pack_offset,
        reason,
    };
    let data = zstd::bulk::decompress(frame, chunk.length as usize)
        .map_err(|e| bad(format!("zstd: {e}")))?;
    ChunkData(data).verify(&chunk.id).map_err(|e| match e {
        FormatError::ChunkMismatch { .. } => bad("hash mismatch (tampered or corrupt data)".into()),
        other => bad(other.to_string()),
    })
}

/// BLAKE3 of the first `length` bytes of the slot, read from storage.
fn hash_slot(slot: &TargetSlot, length: u64) -> Result<[u8; 32], InstallError> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < length {
        let want = ((length - at) as usize).min(buffer.len());
        std::os::unix::fs::FileExt::read_exact_at(slot.file(), &mut buffer[..want], at).map_err(
            |source| SlotError::Io {
                path: slot.path.clone(),
                source,
            },
        )?;
        hasher.update(&buffer[..want]);
        at += want as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Loads the trusted keys named in the config.
pub fn trusted_keys(config: &Config) -> Result<TrustedKeys, InstallError> {
    let mut keys = TrustedKeys::new();
    for path in &config.public_keys {
        let text = fs_err::read_to_string(path).map_err(|e| InstallError::Keys(e.to_string()))?;
        keys.add(&path.display().to_string(), &text)
            .map_err(|e| InstallError::Keys(e.to_string()))?;
    }
    for (number, text) in config.public_keys_inline.iter().enumerate() {
        keys.add(&format!("public_keys_inline[{number}]"), text)
            .map_err(|e| InstallError::Keys(e.to_string()))?;
    }
    Ok(keys)
}
