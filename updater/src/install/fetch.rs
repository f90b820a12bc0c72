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
use crate::slot::TargetSlot;
use crate::source::{RangeError, RangeSink, StoreSource, Traffic};

/// What the fetch phases (delta frames, then plain chunks) share: the image's index and
/// where it comes from (the store, or a bundle), the slot being written, the settings, the
/// traffic count, the progress.
#[derive(Clone, Copy)]
pub(super) struct FetchContext<'a> {
    pub(super) index: &'a diffota_format::Index,
    pub(super) source: &'a StoreSource,
    pub(super) bundle: Option<&'a crate::bundle::BundleChunks>,
    pub(super) slot: &'a TargetSlot,
    pub(super) config: &'a Config,
    pub(super) traffic: &'a Traffic,
    pub(super) progress: &'a dyn Progress,
}

/// Fetches the chunks numbered `numbers` in the index from where the release came from: the
/// store, or for a bundle the bundle file, and what the bundle lacks from the configured
/// store.
pub(super) async fn fetch_all(
    fetching: &FetchContext<'_>,
    numbers: &[u32],
) -> Result<(), InstallError> {
    let FetchContext {
        index,
        source,
        bundle,
        slot,
        config,
        traffic,
        progress,
    } = *fetching;
    let chunks: Vec<ChunkEntry> = numbers.iter().map(|&n| index.chunks[n as usize]).collect();
    let mut pack_paths: Vec<String> = index.packs.iter().map(|p| p.store_path()).collect();
    let Some(bundle) = bundle else {
        let ranges = plan_ranges(&chunks, config.http.max_gap);
        return fetch_chunks(source, &pack_paths, ranges, slot, config, traffic, progress).await;
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
            source,
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

/// How many of the chunks `planned_fetches` names a bundle lacks (none without a bundle).
pub(super) fn missing_from_bundle(
    bundle: Option<&crate::bundle::BundleChunks>,
    planned_fetches: &[ChunkEntry],
) -> u64 {
    bundle.map_or(0, |bundle| {
        planned_fetches
            .iter()
            .filter(|c| !bundle.table.contains_key(&c.id))
            .count() as u64
    })
}

/// Before anything of an image is written: the chunks its `plan` fetches that neither the running slot nor the bundle has must
/// be reachable in the configured store, or the install stops and says what the bundle is for.
pub(super) async fn ensure_bundle_suffices(
    bundle: Option<&crate::bundle::BundleChunks>,
    plan: &crate::plan::Plan,
    (index, source): (&diffota_format::Index, &StoreSource),
    running_version: Option<&str>,
    traffic: &Traffic,
) -> Result<(), InstallError> {
    let Some(bundle) = bundle else {
        return Ok(());
    };
    let planned_fetches = plan.fetch_chunks_after_frames(index);
    let mut lacking = planned_fetches
        .iter()
        .filter(|c| !bundle.table.contains_key(&c.id));
    let Some(first) = lacking.next() else {
        return Ok(());
    };
    let missing = 1 + lacking.count();
    // Whether the store holds what the bundle lacks: one byte of the first lacking chunk's
    // pack. The path comes from the signed index only; the bundle's notes are unsigned and
    // never choose what the device asks the store for.
    let reachable = match index.packs.get(first.pack as usize) {
        Some(pack) => {
            let start = first.pack_offset;
            let path = pack.store_path();
            let mut discard = Discard;
            let probe = source.get_range(&path, start, start + 1, &mut discard, traffic);
            probe.await.is_ok()
        }
        None => false,
    };
    if reachable {
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

/// A sink that keeps nothing: for a request that only asks whether a file is there.
struct Discard;

impl RangeSink for Discard {
    type Error = std::convert::Infallible;
    fn accept(&mut self, _: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
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
        received: FrameCutter::new(start),
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
/// writes it; holds at most one frame in memory.
struct ChunkWriter<'a> {
    url: String,
    received: FrameCutter,
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
        let Self {
            url,
            received,
            chunks,
            next,
            slot,
            progress,
            last,
        } = self;
        received.feed(bytes, chunks, next, |chunk, frame| {
            if progress.cancelled() {
                return Err(InstallError::Cancelled);
            }
            // Chunks that occur at several image offsets are decoded once (they are adjacent).
            let reuse = last
                .as_ref()
                .is_some_and(|(offset, _)| *offset == chunk.pack_offset);
            if !reuse {
                *last = Some((chunk.pack_offset, decode_frame(frame, chunk, url)?));
            }
            let (_, verified) = last.as_ref().expect("decoded above");
            slot.write_chunk(verified, chunk.offset)?;
            progress.event(Event::Written {
                bytes: u64::from(chunk.length),
            });
            Ok(())
        })
    }
}

/// Cuts a range's frames out of the bytes as they arrive, in pack order, and hands each
/// complete frame to its writer. It holds at most the frame being received: the bytes of a
/// piece past that frame wait in the piece, and merge gaps are skipped as they arrive. The
/// transport hands over pieces of up to a few hundred KiB and a delta frame is up to a MiB,
/// so keeping whole pieces would hold up to both at once.
pub(super) struct FrameCutter {
    /// The pack offset of `held[0]`.
    start: u64,
    /// The pack offset of the next byte to arrive.
    arrived: u64,
    held: Vec<u8>,
}

impl FrameCutter {
    pub(super) fn new(start: u64) -> FrameCutter {
        FrameCutter {
            start,
            arrived: start,
            held: Vec::new(),
        }
    }

    /// Takes the next `bytes` of the range; calls `write(item, frame)` for each item from
    /// `items[*next]` on whose frame is complete, in order, and advances `*next` past it.
    /// `items` are in pack order, as [`plan_ranges`] makes them; bytes past the last item's
    /// frame are ignored.
    pub(super) fn feed<E>(
        &mut self,
        mut bytes: &[u8],
        items: &[ChunkEntry],
        next: &mut usize,
        mut write: impl FnMut(&ChunkEntry, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(item) = items.get(*next) {
            let end = item.pack_offset + u64::from(item.compressed_length);
            self.take_until(&mut bytes, end);
            let from = item.pack_offset.saturating_sub(self.start) as usize;
            let Some(frame) = self.held.get(from..from + item.compressed_length as usize) else {
                // The frame is still arriving: every byte of `bytes` was taken.
                return Ok(());
            };
            write(item, frame)?;
            *next += 1;
            let following = items.get(*next).map_or(end, |c| c.pack_offset);
            self.drop_before(following);
        }
        Ok(())
    }

    /// Moves the bytes of `bytes` that lie before pack offset `until` into `held`, skipping
    /// those before `start` (a gap between frames).
    fn take_until(&mut self, bytes: &mut &[u8], until: u64) {
        if self.arrived < self.start {
            let skip = (self.start - self.arrived).min(bytes.len() as u64);
            *bytes = &bytes[skip as usize..];
            self.arrived += skip;
        }
        let take = until.saturating_sub(self.arrived).min(bytes.len() as u64) as usize;
        if take == 0 {
            return;
        }
        // Room for exactly the frame being received, not the next power of two.
        let frame_left = (until - self.start) as usize - self.held.len();
        self.held.reserve_exact(frame_left);
        self.held.extend_from_slice(&bytes[..take]);
        *bytes = &bytes[take..];
        self.arrived += take as u64;
    }

    /// Drops what lies before `pack_offset`, including bytes not yet arrived.
    fn drop_before(&mut self, pack_offset: u64) {
        if pack_offset <= self.start {
            return;
        }
        let drop = ((pack_offset - self.start) as usize).min(self.held.len());
        self.held.drain(..drop);
        self.start = pack_offset;
    }
}

impl ResumableSink for ChunkWriter<'_> {
    fn finished(&self) -> usize {
        self.next
    }
}

/// Decompresses one zstd frame and verifies it against the chunk id.
pub(super) fn decode_frame(
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

#[cfg(test)]
mod tests {
    use super::*;
    use diffota_format::ChunkId;

    /// A frame of `length` bytes at `pack_offset` (the other fields do not matter here).
    fn item(pack_offset: u64, length: u32) -> ChunkEntry {
        ChunkEntry {
            id: ChunkId([0; 32]),
            offset: 0,
            length,
            compressed_length: length,
            pack: 0,
            pack_offset,
        }
    }

    /// Feeds `range` (pack offsets `start..`) in pieces of `piece` bytes; returns the frames
    /// handed over, and the most the cutter ever held.
    fn cut(start: u64, range: &[u8], items: &[ChunkEntry], piece: usize) -> (Vec<Vec<u8>>, usize) {
        let mut cutter = FrameCutter::new(start);
        let mut next = 0;
        let mut frames = Vec::new();
        let mut most_held = 0;
        for bytes in range.chunks(piece) {
            cutter
                .feed(bytes, items, &mut next, |_, frame| {
                    frames.push(frame.to_vec());
                    Ok::<(), ()>(())
                })
                .unwrap();
            most_held = most_held.max(cutter.held.capacity());
        }
        assert_eq!(next, frames.len());
        (frames, most_held)
    }

    #[test]
    fn hands_over_each_frame_whole_whatever_the_pieces_and_holds_at_most_one() {
        // Frames at 1000 (300 bytes), 1300 (50), a gap, 1400 (500); the range ends past them.
        let start = 1000;
        let range: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let items = [item(1000, 300), item(1300, 50), item(1400, 500)];
        let expected: Vec<Vec<u8>> = items
            .iter()
            .map(|c| {
                let from = (c.pack_offset - start) as usize;
                range[from..from + c.compressed_length as usize].to_vec()
            })
            .collect();
        for piece in [1, 7, 64, 299, 300, 301, 999, 1000] {
            let (frames, most_held) = cut(start, &range, &items, piece);
            assert_eq!(frames, expected, "pieces of {piece}");
            assert!(
                most_held <= 500,
                "pieces of {piece}: held {most_held} bytes"
            );
        }
    }

    #[test]
    fn a_frame_named_twice_is_handed_over_twice() {
        let range: Vec<u8> = (0..100u8).collect();
        let items = [item(0, 40), item(0, 40), item(40, 60)];
        for piece in [1, 39, 100] {
            let (frames, _) = cut(0, &range, &items, piece);
            assert_eq!(frames.len(), 3);
            assert_eq!(frames[0], frames[1]);
            assert_eq!(frames[2], range[40..]);
        }
    }

    #[test]
    fn a_failed_write_stops_at_its_frame() {
        let range = [9u8; 100];
        let items = [item(0, 10), item(10, 10), item(20, 10)];
        let mut cutter = FrameCutter::new(0);
        let mut next = 0;
        let mut calls = 0;
        let result = cutter.feed(&range, &items, &mut next, |c, _| {
            calls += 1;
            if c.pack_offset == 10 {
                Err("bad frame")
            } else {
                Ok(())
            }
        });
        assert_eq!(result, Err("bad frame"));
        assert_eq!(
            (next, calls),
            (1, 2),
            "the first frame is done, the second is not"
        );
    }
}
