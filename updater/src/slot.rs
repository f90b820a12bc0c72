//! The two root filesystem slots: which one is running, and safe access to the other.
//!
//! Invariant: the running slot is never opened for writing. `TargetSlot::open` refuses the
//! running slot (same path, same device or same file), and a target that is mounted.

use std::fmt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use diffota_format::VerifiedChunk;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn parse(text: &str) -> Option<Slot> {
        match text.trim().to_ascii_lowercase().as_str() {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot tell which slot is running: no diffota.slot= in {cmdline} and the root filesystem is on neither slot device")]
    UnknownBootedSlot { cmdline: PathBuf },
    #[error("{cmdline}: diffota.slot={value} is neither a nor b")]
    BadSlotArgument { cmdline: PathBuf, value: String },
    #[error("refusing to write slot {slot} ({path}): it is the running slot")]
    TargetIsRunning { slot: Slot, path: PathBuf },
    #[error("refusing to write slot {slot} ({path}): it is mounted at {mount_point}")]
    TargetMounted {
        slot: Slot,
        path: PathBuf,
        mount_point: String,
    },
    #[error("slot {slot} ({path}) holds {capacity} bytes but the image needs {needed}")]
    TooSmall {
        slot: Slot,
        path: PathBuf,
        capacity: u64,
        needed: u64,
    },
    #[error("slot {slot} ({path}) at offset {offset}: {source}")]
    Write {
        slot: Slot,
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
}

/// What a kernel command line says about the running slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdlineSlot {
    Slot(Slot),
    /// No `diffota.slot=` on it.
    Absent,
    /// `diffota.slot=` with this value, which names no slot.
    Invalid(String),
}

/// The value of `diffota.slot=` on a kernel command line.
pub fn slot_from_cmdline(cmdline: &str) -> CmdlineSlot {
    for word in cmdline.split_whitespace() {
        if let Some(value) = word.strip_prefix("diffota.slot=") {
            return Slot::parse(value)
                .map_or_else(|| CmdlineSlot::Invalid(value.to_owned()), CmdlineSlot::Slot);
        }
    }
    CmdlineSlot::Absent
}

/// Finds the running slot: `diffota.slot=` on the kernel command line, else the slot whose
/// block device holds the root filesystem.
pub fn booted_slot(cmdline_path: &Path, slot_a: &Path, slot_b: &Path) -> Result<Slot, SlotError> {
    let cmdline = diffota_files::local_file::read_bounded_text(
        cmdline_path,
        crate::limits::SMALL_TEXT,
        diffota_files::local_file::Links::Follow,
    );
    if let Ok(cmdline) = cmdline {
        match slot_from_cmdline(&cmdline) {
            CmdlineSlot::Slot(slot) => return Ok(slot),
            CmdlineSlot::Absent => {}
            CmdlineSlot::Invalid(value) => {
                return Err(SlotError::BadSlotArgument {
                    cmdline: cmdline_path.to_owned(),
                    value,
                })
            }
        }
    }
    if let Ok(root) = std::fs::metadata("/") {
        for (slot, path) in [(Slot::A, slot_a), (Slot::B, slot_b)] {
            if let Ok(device) = std::fs::metadata(path) {
                if is_block_device(&device) && device.rdev() == root.dev() {
                    return Ok(slot);
                }
            }
        }
    }
    Err(SlotError::UnknownBootedSlot {
        cmdline: cmdline_path.to_owned(),
    })
}

fn is_block_device(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    metadata.file_type().is_block_device()
}

/// Capacity of a slot: a block device's size or a regular file's length.
pub fn capacity(file: &std::fs::File) -> std::io::Result<u64> {
    use std::io::Seek;
    let mut handle = file;
    handle.seek(std::io::SeekFrom::End(0))
}

/// Whether slot `slot` at `path` can hold `needed` bytes, without opening it for writing
/// (what `check` predicts of `TargetSlot::open`).
pub fn check_capacity(slot: Slot, path: &Path, needed: u64) -> Result<(), SlotError> {
    let file = std::fs::File::open(path).map_err(|source| SlotError::Io {
        path: path.to_owned(),
        source,
    })?;
    let capacity = capacity(&file).map_err(|source| SlotError::Io {
        path: path.to_owned(),
        source,
    })?;
    ensure_fits(slot, path, capacity, needed)
}

fn ensure_fits(slot: Slot, path: &Path, capacity: u64, needed: u64) -> Result<(), SlotError> {
    if capacity < needed {
        return Err(SlotError::TooSmall {
            slot,
            path: path.to_owned(),
            capacity,
            needed,
        });
    }
    Ok(())
}

/// Reads `length` bytes at `offset` of a slot (the running slot is opened read-only).
pub fn read_at(file: &std::fs::File, offset: u64, length: usize) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; length];
    file.read_exact_at(&mut buffer, offset)?;
    Ok(buffer)
}

/// The inactive slot, open for writing.
pub struct TargetSlot {
    pub slot: Slot,
    pub path: PathBuf,
    file: std::fs::File,
    /// Bytes written since the storage was last asked to start writing back.
    unflushed: std::sync::atomic::AtomicU64,
}

/// Written bytes after which the slot asks the storage to start writing them back: the
/// storage writes while the install fetches and decodes, instead of all at the final sync,
/// and dirty pages never pile up in a small device's memory.
const WRITEBACK_EVERY: u64 = 4 << 20;

impl TargetSlot {
    /// Opens `path` for writing after checking it is neither the running slot nor mounted
    /// and that it can hold `needed` bytes.
    pub fn open(
        slot: Slot,
        path: &Path,
        running_path: &Path,
        needed: u64,
    ) -> Result<TargetSlot, SlotError> {
        let io = |source| SlotError::Io {
            path: path.to_owned(),
            source,
        };
        let target_meta = fs_err::metadata(path).map_err(io)?;
        if let Ok(running_meta) = std::fs::metadata(running_path) {
            let same_device =
                is_block_device(&target_meta) && target_meta.rdev() == running_meta.rdev();
            let same_file =
                target_meta.dev() == running_meta.dev() && target_meta.ino() == running_meta.ino();
            if same_device || same_file {
                return Err(SlotError::TargetIsRunning {
                    slot,
                    path: path.to_owned(),
                });
            }
        }
        if is_block_device(&target_meta) {
            if let Some(mount_point) = mount_point_of(target_meta.rdev()) {
                return Err(SlotError::TargetMounted {
                    slot,
                    path: path.to_owned(),
                    mount_point,
                });
            }
        }
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?
            .into();
        ensure_fits(slot, path, capacity(&file).map_err(io)?, needed)?;
        Ok(TargetSlot {
            slot,
            path: path.to_owned(),
            file,
            unflushed: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Positioned write of verified bytes; nothing else can be written to a slot.
    pub fn write_chunk(&self, chunk: &VerifiedChunk, offset: u64) -> Result<(), SlotError> {
        self.file
            .write_all_at(chunk.bytes(), offset)
            .map_err(|source| SlotError::Write {
                slot: self.slot,
                path: self.path.clone(),
                offset,
                source,
            })?;
        let written = chunk.bytes().len() as u64;
        let unflushed = self
            .unflushed
            .fetch_add(written, std::sync::atomic::Ordering::Relaxed)
            + written;
        if unflushed >= WRITEBACK_EVERY {
            self.unflushed
                .store(0, std::sync::atomic::Ordering::Relaxed);
            start_writeback(&self.file);
        }
        Ok(())
    }

    /// Flushes the slot to stable storage.
    pub fn sync(&self) -> Result<(), SlotError> {
        self.file.sync_all().map_err(|source| SlotError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Asks the kernel to start writing `file`'s dirty pages back without waiting for them (best
/// effort: `sync` still waits for all of them).
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor number; the fd stays owned by `file`.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Asks the kernel to forget cached pages of `file` (best effort).
pub fn drop_page_cache(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads the descriptor number; the fd stays owned by `file`.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// The mount point of a block device, from /proc/self/mountinfo.
fn mount_point_of(rdev: u64) -> Option<String> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let wanted = format!("{major}:{minor}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(2) == Some(&wanted.as_str())).then(|| fields.get(4).unwrap_or(&"?").to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_slot() {
        assert_eq!(
            slot_from_cmdline("console=ttyS0 diffota.slot=b root=/dev/vda3"),
            CmdlineSlot::Slot(Slot::B)
        );
        assert_eq!(slot_from_cmdline("console=ttyS0"), CmdlineSlot::Absent);
        assert_eq!(
            slot_from_cmdline("diffota.slot=c"),
            CmdlineSlot::Invalid("c".to_owned())
        );
    }

    #[test]
    fn running_slot_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.img");
        std::fs::write(&a, vec![0u8; 4096]).unwrap();
        let link = dir.path().join("b.img");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert!(matches!(
            TargetSlot::open(Slot::B, &link, &a, 10),
            Err(SlotError::TargetIsRunning { .. })
        ));
    }

    #[test]
    fn writes_past_several_writeback_starts_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"x").unwrap();
        let image = diffota_test_support::noise(9, 3 * WRITEBACK_EVERY as usize + 12345);
        std::fs::write(&b, vec![0u8; image.len()]).unwrap();
        let slot = TargetSlot::open(Slot::B, &b, &a, image.len() as u64).unwrap();
        // Back to front, in pieces that do not divide WRITEBACK_EVERY.
        let pieces: Vec<(usize, &[u8])> = image
            .chunks(1_000_003)
            .enumerate()
            .map(|(n, piece)| (n * 1_000_003, piece))
            .collect();
        for (offset, piece) in pieces.into_iter().rev() {
            let id = diffota_format::ChunkId::of(piece);
            let verified = diffota_format::ChunkData(piece.to_vec())
                .verify(&id)
                .unwrap();
            slot.write_chunk(&verified, offset as u64).unwrap();
        }
        slot.sync().unwrap();
        assert!(std::fs::read(&b).unwrap() == image);
    }

    #[test]
    fn small_slot_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, vec![0u8; 100]).unwrap();
        assert!(matches!(
            TargetSlot::open(Slot::B, &b, &a, 101),
            Err(SlotError::TooSmall { .. })
        ));
        assert!(TargetSlot::open(Slot::B, &b, &a, 100).is_ok());
    }
}
