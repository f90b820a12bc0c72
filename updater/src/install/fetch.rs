//! The install's second writing phase: the chunks nothing local has, fetched with merged
//! range requests from the store (or the bundle file, and what it lacks from the store),
//! several at a time, each frame decompressed and verified by its id before it is written.

use std::time::Duration;

use diffota_format::ranges::{plan_ranges, FetchRange};
use diffota_format::{ChunkData, ChunkEntry, FormatError, VerifiedChunk};
use futures_util::StreamExt;

use super::InstallError;
use crate::config::Config;
use crate::progress::{Event, Progress};
use crate::release::Release;
use crate::slot::TargetSlot;
use crate::source::{RangeError, RangeSink, StoreSource, Traffic};

/// Fetches `chunks` from where the release came from: the store, or for a bundle the bundle
/// file, and what the bundle lacks from the configured store.
pub(super) async fn fetch_all(
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
pub(super) async fn ensure_bundle_suffices(
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
    let writer = |url: &str, start: u64, chunks: Vec<ChunkEntry>| ChunkWriter {
        url: url.to_owned(),
        received: RangeBuffer::new(start),
        chunks,
        next: 0,
        slot,
        progress,
        last: None,
    };
    let mut results = futures_util::stream::iter(ranges)
        .map(|range| {
            fetch_range(
                source, pack_paths, range, config, traffic, progress, &writer,
            )
        })
        .buffer_unordered(config.http.concurrency);
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(())
}

/// A range's receiver that can say how many of its items (frames) it has finished, so that a
/// retry resumes from the next one.
pub(super) trait ResumableSink: RangeSink<Error = InstallError> {
    fn finished(&self) -> usize;
}

/// Fetches one range into the sink `make_sink(url, start, items)` makes, retrying transient
/// failures from the first item not yet finished.
pub(super) async fn fetch_range<S: ResumableSink>(
    source: &StoreSource,
    pack_paths: &[String],
    mut range: FetchRange,
    config: &Config,
    traffic: &Traffic,
    progress: &dyn Progress,
    make_sink: &impl Fn(&str, u64, Vec<ChunkEntry>) -> S,
) -> Result<(), InstallError> {
    let pack_path = &pack_paths[range.pack as usize];
    let url = source.describe(pack_path);
    let mut attempt = 0;
    loop {
        let mut sink = make_sink(&url, range.start, range.chunks.clone());
        let result = source
            .get_range(pack_path, range.start, range.end, &mut sink, traffic)
            .await;
        let written = sink.finished();
        match result {
            Ok(()) => return Ok(()),
            Err(RangeError::Sink(error)) => return Err(error),
            Err(RangeError::Fetch(error))
                if error.is_transient() && attempt < config.http.retries =>
            {
                attempt += 1;
                let delay =
                    Duration::from_millis(200u64 << attempt.min(5)).min(Duration::from_secs(5));
                let error = diffota_cli::error_chain(&error);
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
    url: String,
    received: RangeBuffer,
    chunks: Vec<ChunkEntry>,
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
        self.received.push(bytes);
        while let Some(chunk) = self.chunks.get(self.next).copied() {
            if self.progress.cancelled() {
                return Err(InstallError::Cancelled);
            }
            let Some(frame) = self
                .received
                .frame(chunk.pack_offset, chunk.compressed_length)
            else {
                break;
            };
            // Chunks that occur at several image offsets are decoded once (they are adjacent).
            let reuse = self
                .last
                .as_ref()
                .is_some_and(|(offset, _)| *offset == chunk.pack_offset);
            if !reuse {
                let verified = decode_frame(frame, &chunk, &self.url)?;
                self.last = Some((chunk.pack_offset, verified));
            }
            let (_, verified) = self.last.as_ref().expect("decoded above");
            self.slot.write_chunk(verified, chunk.offset)?;
            self.progress.event(Event::Written {
                bytes: u64::from(chunk.length),
            });
            self.next += 1;
            self.received
                .drop_before(next_frame_at(&self.chunks, self.next, &chunk));
        }
        Ok(())
    }
}

/// The pack offset of item `next` of a range, or where the current item's frame ends.
pub(super) fn next_frame_at(items: &[ChunkEntry], next: usize, current: &ChunkEntry) -> u64 {
    items.get(next).map_or(
        current.pack_offset + u64::from(current.compressed_length),
        |c| c.pack_offset,
    )
}

/// The bytes of a range received so far, from pack offset `start` on: frames are cut from
/// it in pack order and dropped once handled, so it holds at most one frame and a merge gap.
pub(super) struct RangeBuffer {
    start: u64,
    bytes: Vec<u8>,
}

impl RangeBuffer {
    pub(super) fn new(start: u64) -> RangeBuffer {
        RangeBuffer {
            start,
            bytes: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        // Grown to what is held at once, not to the next power of two: the transport hands
        // over up to a MiB at a time and a delta frame is up to a MiB, so doubling would keep
        // room for twice what is ever used. The buffer drains as frames complete, so it
        // reallocates only while it grows to that size.
        if self.bytes.len() + bytes.len() > self.bytes.capacity() {
            self.bytes.reserve_exact(bytes.len());
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// The frame at `pack_offset`, once all its `length` bytes have arrived.
    pub(super) fn frame(&self, pack_offset: u64, length: u32) -> Option<&[u8]> {
        let from = (pack_offset - self.start) as usize;
        self.bytes.get(from..from + length as usize)
    }

    /// Drops what lies before `pack_offset` (as far as it has arrived).
    pub(super) fn drop_before(&mut self, pack_offset: u64) {
        let keep_from = ((pack_offset - self.start) as usize).min(self.bytes.len());
        self.bytes.drain(..keep_from);
        self.start += keep_from as u64;
    }
}

impl ResumableSink for ChunkWriter<'_> {
    fn finished(&self) -> usize {
        self.next
    }
}

/// Decompresses one zstd frame and verifies it against the chunk id.
fn decode_frame(
    frame: &[u8],
    chunk: &ChunkEntry,
    url: &str,
) -> Result<VerifiedChunk, InstallError> {
    let bad = |reason: BadFrame| InstallError::BadChunk {
        id: chunk.id,
        url: url.to_owned(),
        pack_offset: chunk.pack_offset,
        reason,
    };
    let data =
        zstd::bulk::decompress(frame, chunk.length as usize).map_err(|e| bad(BadFrame::Zstd(e)))?;
    ChunkData(data).verify(&chunk.id).map_err(|e| match e {
        FormatError::ChunkMismatch { .. } => bad(BadFrame::Hash),
        other => bad(BadFrame::Other(Box::new(other))),
    })
}

/// Why a fetched frame was not written.
#[derive(Debug, thiserror::Error)]
pub enum BadFrame {
    #[error("zstd: {0}")]
    Zstd(#[source] std::io::Error),
    #[error("delta frame: zstd against its bases: {0}")]
    DeltaZstd(#[source] std::io::Error),
    #[error("hash mismatch (tampered or corrupt data)")]
    Hash,
    #[error(transparent)]
    Other(Box<FormatError>),
}
