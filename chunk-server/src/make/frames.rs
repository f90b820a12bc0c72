//! Delta frames against a base release VERSION (`make --delta-from VERSION`, or a default
//! base): after the plain frames, the chunks of the release that VERSION lacks are also
//! written as delta frames, grouped with their neighbours and compressed against the chunks
//! they resemble (found by anchor voting, `crate::frames`): chunks of VERSION, and chunks of
//! this release that an earlier frame rebuilds (siblings: a device reads those back from the
//! slot it is writing; `--no-delta-siblings` leaves them out). Against the newest older
//! release those are about the chunks the release added; against an older base they also
//! hold what the releases in between added and this one kept (catch-up frames), so a
//! device on that base takes frames for everything it lacks. Each base is searched on its
//! own: that bounds make's memory (about 8 bytes per 128 bytes of its distinct content and
//! 4 per 128 of the content it lacks, plus one batch of groups) whatever the store holds.
//!
//! A frame naming a sibling is of use only to a device that rebuilds that sibling, which a
//! device two releases behind cannot once the next release drops the sibling's frame. So
//! each such frame gets a fallback frame naming old chunks only, and the next release
//! inherits the fallbacks, not the frames naming siblings. On the bench pairs siblings save
//! 1.7-1.9% one release behind, cost 1.0-1.5% two behind (the fallbacks are coded at level
//! 12), and make takes 7-14% longer (bench/README.md). Catch-up frames (against a base other
//! than the first) get no fallbacks: the devices on that base rebuild their siblings, and
//! the bench's downloads did not move without them while the store shrank by a third.
//!
//! A group whose content matches its bases with bytes changed every so often (rebuilt code
//! whose addresses moved) is also coded as a frame with covers (`crate::frames::covers`,
//! `frame_codec`), which is kept where it is smaller: on the bench's arm64-erofs pair that
//! takes 1.3% off a device's download one release behind, for about a fifth more make time.
//!
//! Every chunk is read back from its pack and checked against its id before it is used, so
//! a damaged store cannot put a wrong dictionary or content into a frame.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use diffota_format::frame_codec::{cover_list, subtract_covers};
use diffota_format::index::{DeltaBase, DeltaFrame, Deltas, COVERS_BASE, MAX_DELTA_CONTENT};
use diffota_format::{ChunkEntry, ChunkId, Index, PackRef};
use rayon::prelude::*;

use super::error::MakeError;
use super::frame_encoder::compress_frame;
use super::pack::PackWriter;
use crate::frames::anchors::{anchors, AnchorDensity};
use crate::frames::bases::{AnchorIndex, VoteRule};
use crate::frames::covers::{find_covers, worth_trying};
use crate::frames::groups::{
    group_ranges, plan_groups, with_preceding, GroupLimits, NewChunk, PlannedGroup,
};
use crate::in_order::map_in_order;
use crate::store::{io_error, read_chunk_checked, Store, StoreError};

/// Groups of up to 1 MiB of new chunks with up to 2 MiB of bases. On the bench's roll-up
/// pair (bench/README.md, "Delta frames") 4 MiB of bases saved 0.1% of the frames' bytes at
/// levels 16 and 19, while a device holds the dictionary in memory; 1 MiB cost 2.5% more.
pub const GROUP_LIMITS: GroupLimits = GroupLimits {
    max_group_bytes: MAX_DELTA_CONTENT as u64,
    max_dictionary_bytes: 2 * 1024 * 1024,
};

/// Up to 6 bases per new chunk, each sharing at least 3 anchors with it. On the bench pairs
/// 6 bases cost fewer bytes than 8 or 12 (a dictionary of fewer, better bases), 16 bought
/// nothing; with 8-byte anchor windows a third vote keeps chance matches from filling
/// dictionaries (2 votes: 0.3% fewer bytes for 20% more make time).
pub const VOTE_RULE: VoteRule = VoteRule {
    min_votes: 3,
    max_bases: 6,
};

/// The zstd level of fallback frames (at most), which serve devices further behind. On the
/// ext4 pair fallbacks at the make's level 16 add 50% to make's time, at level 12 8%; a
/// device two releases behind then downloads 1.1% more.
const FALLBACK_LEVEL: i32 = 12;

/// An anchor found in more old chunks than this names none of them in particular.
const MAX_POSTINGS: usize = 16;

/// Frames started and not yet written at most. Each worker holds one group's content and
/// dictionary while it compresses; behind a slow group, at most this many compressed
/// frames wait to be written.
const GROUPS_IN_FLIGHT: usize = 8;

/// How delta frames are coded: the zstd level, and whether a frame may name chunks this
/// release added (siblings) as bases.
#[derive(Clone, Copy, Debug)]
pub struct DeltaSettings {
    pub level: i32,
    pub siblings: bool,
    /// Whether a frame naming a sibling gets a fallback frame naming old chunks only.
    pub fallbacks: bool,
    /// How many bytes of the release's chunks just before a group its dictionary ends with
    /// (`with_preceding`; image frames), 0 for none.
    pub preceding: u64,
    /// How far a device that stores no index cuts its running slot to find the bases: the
    /// length of the release's image (`found_by_a_slot_scan`).
    pub scan_length: u64,
}

/// Writes the delta frames of `added` against the chunks of `from` into `pack` (after the
/// plain frames, readable through `new_pack`) and adds them to `deltas` (after the frames
/// against other releases, sharing its base table). The frames' pack number is left 0 for
/// the caller, who knows the pack's place in the index. A frame that does not pay (see
/// `pays`) is not written, nor one naming a chunk only such a frame would rebuild.
/// Returns how many frames were written, and how many of them (the last) are fallbacks.
pub(crate) fn write_delta_frames(
    store: &Store,
    from: DeltaSource<'_>,
    added: &[ReleaseChunk],
    new_pack: &File,
    pack: &mut PackWriter,
    settings: DeltaSettings,
    deltas: &mut Deltas,
) -> Result<WrittenFrames, MakeError> {
    let DeltaSettings {
        level,
        siblings,
        fallbacks: write_fallbacks,
        preceding,
        scan_length,
    } = settings;
    let old = match from {
        DeltaSource::Release(index) => OldChunks::open(store, index, scan_length)?,
        DeltaSource::Image(image) => OldChunks::of_image(image, scan_length)?,
        DeltaSource::Nothing => OldChunks::none(),
    };
    let reader = ChunkReader::open(store, added, new_pack, pack.path())?;
    let read_added = |chunk: &ReleaseChunk| reader.read(chunk);
    let candidates = Candidates {
        old: &old.chunks,
        added,
    };
    let added_anchors: Vec<Vec<u32>> = added
        .par_iter()
        .map(|chunk| Ok(anchors(&read_added(chunk)?, AnchorDensity::DEFAULT)))
        .collect::<Result<_, StoreError>>()?;
    let old_anchors = (0..old.chunks.len())
        .into_par_iter()
        .map(|n| Ok((n as u32, anchors(&old.read(n)?, AnchorDensity::DEFAULT))))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let sibling_anchors = added_anchors
        .iter()
        .enumerate()
        .filter(|_| siblings)
        .map(|(i, anchors)| (candidates.added_number(i), anchors.clone()));
    let anchor_index =
        AnchorIndex::build(old_anchors.into_iter().chain(sibling_anchors), MAX_POSTINGS);
    // Which chunks share a frame depends on their lengths alone, so it is known before the
    // vote: an added chunk is a candidate base for the chunks of later groups only.
    let mut group_of = vec![0; added.len()];
    for (group, range) in group_ranges(added.iter().map(|c| c.length), GROUP_LIMITS)
        .into_iter()
        .enumerate()
    {
        group_of[range].fill(group);
    }
    // Votes of the chunks `among` (the others vote for nothing), each for bases of the old
    // release and, with `siblings`, for chunks of earlier groups.
    let vote = |among: &(dyn Fn(usize) -> bool + Sync), siblings: bool| -> Vec<NewChunk> {
        added
            .par_iter()
            .zip(&added_anchors)
            .enumerate()
            .map(|(i, (chunk, anchors))| NewChunk {
                length: chunk.length,
                votes: if among(i) {
                    anchor_index.vote(anchors, VOTE_RULE, |base| match candidates.chunk(base) {
                        Candidate::Old(_) => true,
                        Candidate::Added(earlier) => siblings && group_of[earlier] < group_of[i],
                    })
                } else {
                    Vec::new()
                },
            })
            .collect()
    };
    let mut groups = plan_groups(
        &vote(&|_| true, siblings),
        |n| candidates.length(n),
        GROUP_LIMITS,
    );
    if preceding > 0 {
        // Chunks that compress barely or not at all are left out of the windows: a later
        // group rarely matches them, and a group of them that no window names is not
        // written when its frame does not pay (no producer of 1 MiB a device must receive
        // whole for nothing).
        let (window_places, window_numbers): (Vec<usize>, Vec<u32>) = added
            .iter()
            .enumerate()
            .filter(|(_, chunk)| worth_a_window(chunk))
            .map(|(i, _)| (i, candidates.added_number(i)))
            .unzip();
        for group in &mut groups {
            let before = window_places.partition_point(|&i| i < group.chunks.start);
            group.bases = with_preceding(
                &group.bases,
                &window_numbers[..before],
                |n| candidates.length(n),
                preceding,
                GROUP_LIMITS.max_dictionary_bytes,
            );
        }
    }
    // A group that names a sibling also gets a fallback frame with old bases only: a device
    // that has not rebuilt the sibling (one that takes the chunk another way, or one further
    // behind, given inherited frames) uses that instead. The fallbacks follow all the other
    // frames, in the index (a device considers frames in its order) and in the pack (so
    // that the frames a device one release behind takes lie together, in few requests).
    let names_sibling = |group: &PlannedGroup| {
        group
            .bases
            .iter()
            .any(|&b| matches!(candidates.chunk(b), Candidate::Added(_)))
    };
    let needs_fallback: Vec<bool> = groups
        .iter()
        .map(|group| write_fallbacks && names_sibling(group))
        .collect();
    let fallbacks: Vec<Option<PlannedGroup>> = if needs_fallback.contains(&true) {
        let in_fallback = |i: usize| needs_fallback[group_of[i]];
        plan_groups(
            &vote(&in_fallback, false),
            |n| candidates.length(n),
            GROUP_LIMITS,
        )
        .into_iter()
        .zip(&needs_fallback)
        .map(|(group, &needed)| needed.then_some(group))
        .collect()
    } else {
        groups.iter().map(|_| None).collect()
    };
    drop(anchor_index);
    let fallback_level = level.min(FALLBACK_LEVEL);
    let frames: Vec<(&PlannedGroup, i32)> = groups
        .iter()
        .map(|group| (group, level))
        .chain(
            fallbacks
                .iter()
                .flatten()
                .map(|group| (group, fallback_level)),
        )
        .collect();
    let mut base_numbers: HashMap<ChunkId, u32> = deltas
        .bases
        .iter()
        .enumerate()
        .map(|(number, base)| (base.id, number as u32))
        .collect();
    // Added chunks whose frame was left out: a frame naming one of them could never be
    // used (its fallback serves instead). A frame whose chunks a later frame names
    // (a producer) is written even when it does not pay on its own: a device takes it to
    // build the later one.
    let mut not_rebuilt: HashSet<usize> = HashSet::new();
    let named_siblings: HashSet<usize> = groups
        .iter()
        .flat_map(|group| &group.bases)
        .filter_map(|&b| match candidates.chunk(b) {
            Candidate::Added(n) => Some(n),
            Candidate::Old(_) => None,
        })
        .collect();
    let mut written = WrittenFrames::default();
    map_in_order(
        &frames,
        rayon::current_num_threads(),
        GROUPS_IN_FLIGHT,
        |&(group, level)| compress_group(group, &candidates, &read_added, &old, level),
        |i, CodedGroup { frame, covers }| {
            let group = frames[i].0;
            let plain: u64 = added[group.chunks.clone()]
                .iter()
                .map(|c| u64::from(c.compressed_length))
                .sum();
            let names_unbuilt = group.bases.iter().any(
                |&b| matches!(candidates.chunk(b), Candidate::Added(n) if not_rebuilt.contains(&n)),
            );
            let producer = group.chunks.clone().any(|n| named_siblings.contains(&n));
            if names_unbuilt || !(producer || pays(frame.len() as u64, plain)) {
                not_rebuilt.extend(group.chunks.clone());
                return Ok(());
            }
            let pack_offset = pack.append(&frame)?;
            let bases = group
                .bases
                .iter()
                .map(|&candidate| candidates.base(candidate))
                .chain(covers.then_some(COVERS_BASE))
                .map(|base| {
                    *base_numbers.entry(base.id).or_insert_with(|| {
                        deltas.bases.push(base);
                        (deltas.bases.len() - 1) as u32
                    })
                })
                .collect();
            deltas.frames.push(DeltaFrame {
                pack: 0,
                pack_offset,
                compressed_length: frame.len() as u32,
                bases,
                chunks: group.chunks.clone().map(|i| added[i].number).collect(),
            });
            written.frames += 1;
            if i >= groups.len() {
                written.fallbacks += 1;
            }
            Ok(())
        },
    )?;
    Ok(written)
}

/// How many frames `write_delta_frames` wrote, and how many of them are fallbacks (which
/// follow the others, and name old chunks only: no frame depends on them, nor they on one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WrittenFrames {
    pub frames: usize,
    pub fallbacks: usize,
}

/// Whether a frame of `frame_bytes` is worth its place in the store instead of the plain
/// frames of its chunks (`plain_bytes`): it saves at least 1/32 of them. A frame that saves
/// less (new content that resembles nothing, or incompressible) would cost the store about
/// its chunks' size again for a device's gain of a few per cent at most.
pub(crate) fn pays(frame_bytes: u64, plain_bytes: u64) -> bool {
    u128::from(frame_bytes) * 32 <= u128::from(plain_bytes) * 31
}

/// Whether an image frame's window may hold `chunk`: its plain frame saves at least a tenth
/// of it (compressible content, which later content matches). Leaving the rest out cost no
/// bytes on the bench images and spares devices producers of incompressible content.
fn worth_a_window(chunk: &ReleaseChunk) -> bool {
    u64::from(chunk.compressed_length) * 10 <= u64::from(chunk.length) * 9
}

/// The chunks a frame may name as bases, numbered as the anchor index knows them: the old
/// release's distinct chunks first, then the chunks this release added.
struct Candidates<'a> {
    old: &'a [ChunkEntry],
    added: &'a [ReleaseChunk],
}

enum Candidate {
    /// An old chunk, by its place among the old release's distinct chunks.
    Old(usize),
    /// A chunk this release added, by its place in `added`.
    Added(usize),
}

impl Candidates<'_> {
    fn added_number(&self, i: usize) -> u32 {
        (self.old.len() + i) as u32
    }

    fn chunk(&self, number: u32) -> Candidate {
        let number = number as usize;
        if number < self.old.len() {
            Candidate::Old(number)
        } else {
            Candidate::Added(number - self.old.len())
        }
    }

    fn base(&self, number: u32) -> DeltaBase {
        match self.chunk(number) {
            Candidate::Old(n) => DeltaBase {
                id: self.old[n].id,
                length: self.old[n].length,
            },
            Candidate::Added(n) => DeltaBase {
                id: self.added[n].id,
                length: self.added[n].length,
            },
        }
    }

    fn length(&self, number: u32) -> u32 {
        self.base(number).length
    }
}

fn compress_group(
    group: &PlannedGroup,
    candidates: &Candidates,
    read_added: &(impl Fn(&ReleaseChunk) -> Result<Vec<u8>, StoreError> + Sync),
    old: &OldChunks,
    level: i32,
) -> Result<CodedGroup, MakeError> {
    let added = candidates.added;
    let mut content = Vec::new();
    for chunk in &added[group.chunks.clone()] {
        content.extend_from_slice(&read_added(chunk)?);
    }
    let mut prefix = Vec::new();
    for &base in &group.bases {
        prefix.extend_from_slice(&match candidates.chunk(base) {
            Candidate::Old(n) => old.read(n)?,
            Candidate::Added(n) => read_added(&added[n])?,
        });
    }
    let error = |source| MakeError::CompressDelta {
        first_chunk: added[group.chunks.start].number,
        source,
    };
    let frame = compress_frame(&content, &prefix, level).map_err(error)?;
    let covers = find_covers(&content, &prefix);
    if !worth_trying(&content, &prefix, &covers) {
        return Ok(CodedGroup {
            frame,
            covers: false,
        });
    }
    subtract_covers(&mut content, &prefix, &covers);
    let mut with_covers = cover_list(&covers);
    with_covers.extend_from_slice(&compress_frame(&content, &prefix, level).map_err(error)?);
    Ok(if with_covers.len() < frame.len() {
        CodedGroup {
            frame: with_covers,
            covers: true,
        }
    } else {
        CodedGroup {
            frame,
            covers: false,
        }
    })
}

/// A group's frame: the delta frame, or the frame with covers where that is smaller
/// (`covers`: the frame then names `COVERS_BASE` after its bases).
struct CodedGroup {
    frame: Vec<u8>,
    covers: bool,
}

/// Adds to `index` the delta frames of `from` (the `--delta-from` release) that rebuild
/// chunks a release added (not image frames) and only chunks `index` still has, renumbered for it (its chunk numbers, its packs
/// and its base table, which grows with their bases). `from`'s frames rebuild what `from`
/// added against the release before it, so a device two releases behind, which lacks those
/// chunks but holds those bases, rebuilds them from these instead of taking plain frames; a
/// release made from one that inherited frames passes them on while their chunks last, so
/// devices further behind benefit too. A chunk is added by one release and in at most one of
/// its frames, so what is inherited is bounded by the chunks of the release. Returns how many.
pub(crate) fn inherit_frames(from: &Index, index: &mut Index) -> usize {
    let mut numbers: HashMap<ChunkId, u32> = HashMap::new();
    for (number, chunk) in index.chunks.iter().enumerate() {
        numbers.entry(chunk.id).or_insert(number as u32);
    }
    let mut base_numbers: HashMap<ChunkId, u32> = index
        .deltas
        .bases
        .iter()
        .enumerate()
        .map(|(number, base)| (base.id, number as u32))
        .collect();
    // A frame already in the index (inherited from another base) is not added twice.
    let mut present: HashSet<([u8; 32], u64)> = index
        .deltas
        .frames
        .iter()
        .map(|f| (index.packs[f.pack as usize].id, f.pack_offset))
        .collect();
    let mut inherited = 0;
    // A frame whose chunks' plain frames are all in its own pack rebuilds what the release
    // that wrote it added (a delta frame, or a group of new chunks without bases); an image
    // frame mostly rebuilds older chunks, which devices behind already hold, and is left.
    let rebuilds_added = |frame: &DeltaFrame| {
        frame
            .chunks
            .iter()
            .all(|&n| from.chunks[n as usize].pack == frame.pack)
    };
    // A frame naming a sibling (a chunk `from` added, rebuilt by another of its frames) is
    // not passed on: a device two releases behind rebuilds that chunk only if the release
    // still has all of its producer's chunks, and the group's fallback frame, which names
    // old chunks only, is passed on instead.
    let siblings: HashSet<ChunkId> = from
        .deltas
        .frames
        .iter()
        .filter(|f| rebuilds_added(f))
        .flat_map(|f| &f.chunks)
        .map(|&n| from.chunks[n as usize].id)
        .collect();
    let names_sibling = |frame: &DeltaFrame| {
        frame
            .bases
            .iter()
            .any(|&b| siblings.contains(&from.deltas.bases[b as usize].id))
    };
    for frame in from
        .deltas
        .frames
        .iter()
        .filter(|f| rebuilds_added(f) && !names_sibling(f))
    {
        let Some(chunks) = frame
            .chunks
            .iter()
            .map(|&n| numbers.get(&from.chunks[n as usize].id).copied())
            .collect::<Option<Vec<u32>>>()
        else {
            continue;
        };
        let pack_ref = from.packs[frame.pack as usize];
        if !present.insert((pack_ref.id, frame.pack_offset)) {
            continue;
        }
        let pack = match index.packs.iter().position(|p| p.id == pack_ref.id) {
            Some(number) => number as u32,
            None => {
                index.packs.push(pack_ref);
                (index.packs.len() - 1) as u32
            }
        };
        let bases = frame
            .bases
            .iter()
            .map(|&b| {
                let base = from.deltas.bases[b as usize];
                *base_numbers.entry(base.id).or_insert_with(|| {
                    index.deltas.bases.push(base);
                    (index.deltas.bases.len() - 1) as u32
                })
            })
            .collect();
        index.deltas.frames.push(DeltaFrame {
            pack,
            pack_offset: frame.pack_offset,
            compressed_length: frame.compressed_length,
            bases,
            chunks,
        });
        inherited += 1;
    }
    inherited
}

/// A distinct chunk of the release that frames rebuild: its number in the index, its
/// length, and where its plain frame is (`pack` None: the new pack).
pub(crate) struct ReleaseChunk {
    pub number: u32,
    pub id: ChunkId,
    pub length: u32,
    pub pack: Option<PackRef>,
    pub pack_offset: u64,
    pub compressed_length: u32,
}

/// Writes the image frames: the release's distinct chunks in image order, in groups of up to
/// 1 MiB, after everything else in the new pack, into `deltas` (a base table of their own,
/// pack numbers left 0). A device whose plan would cost more in plain frames (a wiped slot,
/// a device far behind) takes these, so it downloads about what the compressed image costs,
/// not more. Each group is compressed against the 1 MiB of the image's distinct compressible
/// chunks just before it (`worth_a_window`) and the earlier chunks of the release it
/// resembles (siblings, found by anchor voting as for delta frames; `IMAGE_FRAME_PRECEDING`),
/// which a device taking the image frames in order has rebuilt: the context a whole-image
/// compressor has, within a frame's dictionary. A frame whose chunks a later window names is
/// written whether it pays or not (a producer), so a device lacking everything takes the
/// chain; any other is left out when it saves less than 1/32 of its
/// plain frames (`pays`). No fallbacks: a device that does not take a frame's producers
/// takes plain frames. Returns how many frames were written.
///
/// A device weighs the image frames as a chain (`choose_delta_frames_among`): taken one by
/// one in index order, a link that does not pay alone would be left out and the frames
/// naming its chunks could not be built, and delta frames it can use (groups without bases,
/// or naming only the zero chunk a wiped ext4 slot holds) would take chunks of an image
/// frame first (on the bench's ext4 pair a wiped slot then downloaded 1.36x `zstd -19` of
/// the image instead of about 1.0x).
pub(crate) fn write_image_frames(
    store: &Store,
    chunks: &[ReleaseChunk],
    new_pack: &File,
    pack: &mut PackWriter,
    level: i32,
    deltas: &mut Deltas,
) -> Result<usize, MakeError> {
    let settings = DeltaSettings {
        level,
        siblings: true,
        fallbacks: false,
        preceding: IMAGE_FRAME_PRECEDING,
        scan_length: 0, // no old chunks
    };
    let written = write_delta_frames(
        store,
        DeltaSource::Nothing,
        chunks,
        new_pack,
        pack,
        settings,
        deltas,
    )?;
    Ok(written.frames)
}

/// The image frames' dictionaries end with the 1 MiB of the image's distinct compressible
/// chunks just before their group, after the voted bases that fit the other 1 MiB
/// (`with_preceding`): the context a whole-image compressor has, the content it just read as
/// well as the older content it matched. A wiped slot installing the bench's v2 downloaded
/// 0.9924x `zstd -19` of the image plus the index (ext4), 0.9989x (arm64-erofs), 1.0127x
/// (arm64-ext4) with voted bases alone at level 19, and 0.9808x, 0.9883x and 0.9912x with the
/// preceding 1 MiB (512 KiB: 1.0024x, 1.5 MiB: 1.0043x on arm64-ext4 at level 16; the whole
/// 2 MiB and no votes: 1.0356x; bench/README.md).
pub const IMAGE_FRAME_PRECEDING: u64 = 1024 * 1024;

/// What delta frames are made against: a release of the store, or the image file of a
/// release the store does not hold (chunked as a release of it would be: a device that
/// runs that release holds exactly these chunks).
#[derive(Clone, Copy)]
pub(crate) enum DeltaSource<'a> {
    Release(&'a Index),
    Image(&'a BaseImage),
    /// Nothing old: the image frames, whose bases are earlier chunks of the release.
    Nothing,
}

impl DeltaSource<'_> {
    /// The chunks the base holds; none for `Nothing`.
    pub(crate) fn chunks(&self) -> &[ChunkEntry] {
        match self {
            DeltaSource::Release(index) => &index.chunks,
            DeltaSource::Image(image) => &image.chunks,
            DeltaSource::Nothing => &[],
        }
    }
}

/// An image file chunked with the release's chunker: each chunk's id, offset and length.
pub struct BaseImage {
    pub path: PathBuf,
    pub chunks: Vec<ChunkEntry>,
}

/// The distinct chunks of the release deltas are made against, with their packs open (or
/// the image file they are in, raw).
struct OldChunks {
    chunks: Vec<ChunkEntry>,
    packs: Vec<(PathBuf, File)>,
    image: Option<(PathBuf, File)>,
}

impl OldChunks {
    fn open(store: &Store, from: &Index, scan_length: u64) -> Result<OldChunks, StoreError> {
        let packs = from
            .packs
            .iter()
            .map(|pack| {
                let path = store.pack_path(pack);
                let file = File::open(&path).map_err(io_error(&path))?;
                Ok((path, file))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(OldChunks {
            chunks: Self::found_by_a_slot_scan(&from.chunks, scan_length),
            packs,
            image: None,
        })
    }

    /// No old chunks: frames name only chunks of the release itself (image frames).
    fn none() -> OldChunks {
        OldChunks {
            chunks: Vec::new(),
            packs: Vec::new(),
            image: None,
        }
    }

    fn of_image(image: &BaseImage, scan_length: u64) -> Result<OldChunks, StoreError> {
        let file = File::open(&image.path).map_err(io_error(&image.path))?;
        Ok(OldChunks {
            chunks: Self::found_by_a_slot_scan(&image.chunks, scan_length),
            packs: Vec::new(),
            image: Some((image.path.clone(), file)),
        })
    }

    /// The chunks of an image (`chunks`, in image order) that a device running it finds by
    /// cutting its running slot up to `scan_length` (the new image's length: what it reads
    /// when it stores no index, factory-flashed and never provisioned), each once at its
    /// first such place. The partition goes on past the image, so the chunk cut at the
    /// image's end ends elsewhere in a longer scan, and a shorter one stops before the
    /// chunks past its end: a frame naming one of those as a base would be of no use to such
    /// a device (on the bench's erofs pairs, whose images grow, one such frame cost it about
    /// 200 KB). The others lose little: a base less to choose from.
    fn found_by_a_slot_scan(chunks: &[ChunkEntry], scan_length: u64) -> Vec<ChunkEntry> {
        let mut seen = std::collections::HashSet::new();
        let last = chunks.len().saturating_sub(1);
        chunks
            .iter()
            .enumerate()
            .filter(|&(n, chunk)| {
                let end = chunk.offset + u64::from(chunk.length);
                end <= scan_length && (n < last || end == scan_length)
            })
            .filter(|(_, chunk)| seen.insert(chunk.id))
            .map(|(_, chunk)| *chunk)
            .collect()
    }

    /// Chunk `number`'s bytes, checked against its id.
    fn read(&self, number: usize) -> Result<Vec<u8>, StoreError> {
        let entry = &self.chunks[number];
        if let Some((path, file)) = &self.image {
            use std::os::unix::fs::FileExt;
            let mut data = vec![0u8; entry.length as usize];
            file.read_exact_at(&mut data, entry.offset)
                .map_err(io_error(path))?;
            if ChunkId::of(&data) != entry.id {
                return Err(io_error(path)(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "changed while make read it: the chunk at offset {} is no longer the one it was",
                        entry.offset
                    ),
                )));
            }
            return Ok(data);
        }
        let (path, file) = &self.packs[entry.pack as usize];
        read_checked(
            file,
            path,
            &entry.id,
            entry.pack_offset,
            entry.compressed_length,
            entry.length,
        )
    }
}

/// The chunk `id` from the frame at `offset` of an open pack, checked against its id.
/// Reads chunks of the release from their plain frames, checked against their ids: in the
/// store's packs, or in the new pack being written.
struct ChunkReader<'a> {
    packs: HashMap<[u8; 32], (PathBuf, File)>,
    new_pack: &'a File,
    new_pack_path: PathBuf,
}

impl<'a> ChunkReader<'a> {
    fn open(
        store: &Store,
        chunks: &[ReleaseChunk],
        new_pack: &'a File,
        new_pack_path: &Path,
    ) -> Result<ChunkReader<'a>, StoreError> {
        let mut packs: HashMap<[u8; 32], (PathBuf, File)> = HashMap::new();
        for pack_ref in chunks.iter().filter_map(|c| c.pack) {
            if let std::collections::hash_map::Entry::Vacant(entry) = packs.entry(pack_ref.id) {
                let path = store.pack_path(&pack_ref);
                let file = File::open(&path).map_err(io_error(&path))?;
                entry.insert((path, file));
            }
        }
        Ok(ChunkReader {
            packs,
            new_pack,
            new_pack_path: new_pack_path.to_owned(),
        })
    }

    fn read(&self, chunk: &ReleaseChunk) -> Result<Vec<u8>, StoreError> {
        let (file, path) = match chunk.pack {
            Some(pack_ref) => {
                let (path, file) = &self.packs[&pack_ref.id];
                (file, path)
            }
            None => (self.new_pack, &self.new_pack_path),
        };
        read_checked(
            file,
            path,
            &chunk.id,
            chunk.pack_offset,
            chunk.compressed_length,
            chunk.length,
        )
    }
}

fn read_checked(
    file: &File,
    path: &Path,
    id: &ChunkId,
    offset: u64,
    compressed_length: u32,
    length: u32,
) -> Result<Vec<u8>, StoreError> {
    read_chunk_checked(file, id, offset, compressed_length, length).map_err(|source| {
        StoreError::Frame {
            path: path.to_owned(),
            offset,
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_scan_finds_the_chunks_within_it_and_the_last_only_where_the_image_ends_there() {
        // An image of chunks a (0..10), b (10..20), a (20..30), c (30..40).
        let image: Vec<ChunkEntry> = [&b"a"[..], b"b", b"a", b"c"]
            .iter()
            .enumerate()
            .map(|(n, content)| ChunkEntry {
                offset: n as u64 * 10,
                length: 10,
                ..chunk(content, 0)
            })
            .collect();
        let found = |scan_length| -> Vec<(u64, ChunkId)> {
            OldChunks::found_by_a_slot_scan(&image, scan_length)
                .iter()
                .map(|c| (c.offset, c.id))
                .collect()
        };
        let (a, b, c) = (ChunkId::of(b"a"), ChunkId::of(b"b"), ChunkId::of(b"c"));
        assert_eq!(
            found(40),
            [(0, a), (10, b), (30, c)],
            "the same length: all"
        );
        assert_eq!(found(50), [(0, a), (10, b)], "longer: not the last");
        assert_eq!(found(25), [(0, a), (10, b)], "shorter: what ends within it");
        assert_eq!(found(5), []);
        assert_eq!(
            OldChunks::found_by_a_slot_scan(&image[..3], 50),
            [image[0], image[1]],
            "a last chunk that lies earlier too is found there"
        );
    }

    #[test]
    fn a_frame_pays_when_it_saves_a_thirty_second() {
        assert!(pays(31, 32));
        assert!(pays(0, 1));
        assert!(!pays(32, 32));
        assert!(!pays(3100, 3199), "saves 3.1% minus a byte");
        assert!(!pays(u64::MAX, u64::MAX));
    }

    #[test]
    fn a_window_holds_chunks_whose_plain_frames_save_a_tenth() {
        let chunk = |length, compressed_length| ReleaseChunk {
            number: 0,
            id: ChunkId::of(b"x"),
            length,
            pack: None,
            pack_offset: 0,
            compressed_length,
        };
        assert!(worth_a_window(&chunk(1000, 900)));
        assert!(!worth_a_window(&chunk(1000, 901)));
        assert!(
            !worth_a_window(&chunk(1000, 1009)),
            "stored, not compressed"
        );
        assert!(worth_a_window(&chunk(u32::MAX, 0)));
    }
    use diffota_format::index::DeltaBase;
    use diffota_format::ChunkerParams;

    fn pack(byte: u8) -> PackRef {
        PackRef {
            id: [byte; 32],
            length: 1 << 20,
        }
    }

    fn chunk(content: &[u8], pack: u32) -> ChunkEntry {
        ChunkEntry {
            id: ChunkId::of(content),
            offset: 0,
            length: content.len() as u32,
            compressed_length: 10,
            pack,
            pack_offset: 0,
        }
    }

    fn index(chunks: Vec<ChunkEntry>, packs: Vec<PackRef>, deltas: Deltas) -> Index {
        Index {
            created: 0,
            expires: None,
            chunker: ChunkerParams::DEFAULT,
            image_length: 0,
            image_hash: [0; 32],
            compatible: "c".into(),
            version: "v".into(),
            packs,
            chunks,
            deltas,
        }
    }

    fn frame(pack: u32, pack_offset: u64, bases: Vec<u32>, chunks: Vec<u32>) -> DeltaFrame {
        DeltaFrame {
            pack,
            pack_offset,
            compressed_length: 5,
            bases,
            chunks,
        }
    }

    #[test]
    fn frames_whose_chunks_remain_are_inherited_renumbered() {
        let base = DeltaBase {
            id: ChunkId::of(b"old"),
            length: 3,
        };
        // 2.0: chunks a (from an older pack), x, y, z (added, in its pack); frame 0 rebuilds
        // x and y against "old", frame 1 is an image frame (a and x, no bases), frame 2
        // rebuilds y and z against "old".
        let from = index(
            vec![
                chunk(b"a", 0),
                chunk(b"x", 1),
                chunk(b"y", 1),
                chunk(b"z", 1),
            ],
            vec![pack(1), pack(2)],
            Deltas {
                bases: vec![base],
                frames: vec![
                    frame(1, 100, vec![0], vec![1, 2]),
                    frame(1, 200, vec![], vec![0, 1]),
                    frame(1, 300, vec![0], vec![2, 3]),
                ],
            },
        );
        // 3.0 keeps a, x and y (x and y in another order) but not z, and has a frame of its
        // own.
        let own_base = DeltaBase {
            id: ChunkId::of(b"y"),
            length: 1,
        };
        let mut new = index(
            vec![
                chunk(b"q", 0),
                chunk(b"y", 1),
                chunk(b"x", 1),
                chunk(b"a", 0),
            ],
            vec![pack(3), pack(1)],
            Deltas {
                bases: vec![own_base],
                frames: vec![frame(0, 0, vec![0], vec![0])],
            },
        );
        assert_eq!(inherit_frames(&from, &mut new), 1);
        assert_eq!(
            new.deltas.frames.len(),
            2,
            "its own frame, then the inherited one"
        );
        let inherited = &new.deltas.frames[1];
        assert_eq!(inherited.chunks, vec![2, 1], "x then y, in 3.0's numbering");
        assert_eq!(
            new.packs[inherited.pack as usize],
            pack(2),
            "2.0's pack, added"
        );
        assert_eq!(inherited.pack_offset, 100);
        assert_eq!(
            inherited
                .bases
                .iter()
                .map(|&b| new.deltas.bases[b as usize])
                .collect::<Vec<_>>(),
            vec![base]
        );
        assert_eq!(
            new.deltas.bases.len(),
            2,
            "3.0's base, then the inherited one"
        );
        // The same frame offered again (by a second base release that inherited it too)
        // is not listed twice.
        assert_eq!(inherit_frames(&from, &mut new), 0);
        assert_eq!(new.deltas.frames.len(), 2);
    }

    #[test]
    fn a_frame_naming_a_sibling_is_not_inherited_its_fallback_is() {
        let old = DeltaBase {
            id: ChunkId::of(b"old"),
            length: 3,
        };
        let x = DeltaBase {
            id: ChunkId::of(b"x"),
            length: 1,
        };
        // 2.0 added x and w (pack 1): frame 0 rebuilds x against "old", frame 1 rebuilds w
        // against x (a sibling), frame 2 is frame 1's fallback (w against "old").
        let from = index(
            vec![chunk(b"x", 1), chunk(b"w", 1)],
            vec![pack(1), pack(2)],
            Deltas {
                bases: vec![old, x],
                frames: vec![
                    frame(1, 100, vec![0], vec![0]),
                    frame(1, 200, vec![1], vec![1]),
                    frame(1, 300, vec![0], vec![1]),
                ],
            },
        );
        // 3.0 keeps w but not x: the sibling frame would need x rebuilt by a frame 3.0 lacks.
        let mut new = index(vec![chunk(b"w", 0)], vec![pack(3)], Deltas::default());
        assert_eq!(inherit_frames(&from, &mut new), 1);
        assert_eq!(new.deltas.frames[0].pack_offset, 300, "the fallback");
        assert_eq!(new.deltas.bases, vec![old]);
        // Even where 3.0 keeps x too, only frames without siblings are passed on.
        let mut new = index(
            vec![chunk(b"w", 0), chunk(b"x", 0)],
            vec![pack(3)],
            Deltas::default(),
        );
        assert_eq!(inherit_frames(&from, &mut new), 2);
        let offsets: Vec<u64> = new.deltas.frames.iter().map(|f| f.pack_offset).collect();
        assert_eq!(offsets, vec![100, 300]);
    }
}
