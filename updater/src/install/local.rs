//! The install's first writing phase: every chunk already in the target or in the running
//! slot, each re-hashed before it is trusted.

use diffota_format::{ChunkData, ChunkId, Index};

use super::seeds::ScanWritten;
use super::{InstallError, InstallReport};
use crate::plan::Plan;
use crate::progress::{Event, Progress};
use crate::slot::{read_at, TargetSlot};

/// Takes every chunk it can from the target (already in place) or the running slot, each
/// re-hashed before use; returns the chunks that must be fetched, as their numbers in the
/// index in image order (four bytes each: on a wiped slot that is every chunk of the image).
/// Chunks the scan of the running slot wrote (`scan_written`) are counted as copied and left
/// alone.
pub(super) fn write_local_chunks(
    plan: &Plan,
    scan_written: Option<&ScanWritten>,
    index: &Index,
    running: &std::fs::File,
    slot: &TargetSlot,
    report: &mut InstallReport,
    progress: &dyn Progress,
) -> Result<Vec<u32>, InstallError> {
    let mut to_fetch = Vec::new();
    let mut stale_seeds = 0u64;
    for (number, step) in plan.steps(index).enumerate() {
        let chunk = &step.chunk;
        if scan_written.is_some_and(|written| written.0[number]) {
            report.copied_bytes += u64::from(chunk.length);
            progress.event(Event::Written {
                bytes: u64::from(chunk.length),
            });
            continue;
        }
        if progress.cancelled() {
            return Err(InstallError::Cancelled);
        }
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
        to_fetch.push(number as u32);
    }
    if stale_seeds > 0 {
        tracing::warn!(
            event = "seed_chunks_stale",
            count = stale_seeds,
            "running slot differs from its stored index; fetching those chunks"
        );
        progress.event(Event::Message(&format!("{stale_seeds} chunks of the running slot did not match its index; fetching them instead")));
    }
    // Held through the fetch: no room for a growth that will not come.
    to_fetch.shrink_to_fit();
    Ok(to_fetch)
}
