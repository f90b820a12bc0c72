//! Delta frames: edited chunks rebuilt from the running slot, frames on frames, devices two
//! releases behind, bundles with frames, frames under faults.

use super::*;
use diffota_format::index::COVERS_BASE;

/// A release made with `--delta-from`: a device on the older release (factory-flashed, so it
/// cuts its running slot) rebuilds the changed chunks from delta frames against chunks of its
/// running slot, downloads less than the plain frames of those chunks, and `check` predicts
/// the download exactly. A second device whose running slot lacks the bases (another image)
/// takes the plain frames and installs the same bytes.
#[test]
fn delta_frames_rebuild_edited_chunks_from_the_running_slot() {
    let fixture = delta_fixture();
    let index = fixture.index("2.0");
    let plain_bytes = plain_bytes_lacking(&fixture.store, "1.0", "2.0");

    let server = fixture.serve();
    let device = fixture.device_running(
        "device",
        fixture.image("1.0"),
        10 * MIB,
        &server.url,
        |_| {},
    );
    let (fetched, check) = install_as_checked(&device, &server);
    assert!(
        check["plan"]["delta_frames"].as_u64().unwrap() > 0,
        "{check}"
    );
    assert_holds_v2(&fixture, &device);
    assert!(
        fetched * 4 < plain_bytes,
        "delta frames {fetched} bytes against plain frames {plain_bytes}"
    );

    // Without the bases (its running slot holds another image): plain and image frames, same
    // result.
    let other = fixture.dir.path().join("other.img");
    write_image(&other, 8 * MIB, 77, 1).unwrap();
    let stranger = fixture.device_running("stranger", &other, 10 * MIB, &server.url, |_| {});
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(stranger.diffota().args(["check", "--json"]))).unwrap();
    server.clear_log();
    run_ok(stranger.diffota().arg("install"));
    assert_holds_v2(&fixture, &stranger);
    let stranger_bytes = pack_bytes(&server);
    assert_eq!(
        stranger_bytes,
        check["plan"]["fetch_bytes"].as_u64().unwrap(),
        "check predicted the stranger's download (image frames, no delta frame with bases)"
    );

    // A wiped running slot: the image frames, each built on the earlier chunks of the
    // release it names (rebuilt by earlier image frames), taken as a chain (also the links
    // that do not pay alone), which cost less than the plain frames of every chunk and no
    // more than the chain with the plain frames of what it leaves out; check predicts it.
    let every_frame: Vec<usize> = (0..index.deltas.frames.len()).collect();
    let image_pass = *pass_starts(&index, &every_frame).last().unwrap();
    let image_frames = &index.deltas.frames[image_pass..];
    assert!(
        image_frames.iter().all(|f| f.bases.iter().all(|&b| index
            .chunks
            .iter()
            .any(|c| c.id == index.deltas.bases[b as usize].id))),
        "the last pass holds the image frames (bases from the release itself)"
    );
    let chain_bytes: u64 = image_frames
        .iter()
        .map(|f| u64::from(f.compressed_length))
        .sum();
    let covered: HashSet<u32> = image_frames
        .iter()
        .flat_map(|f| f.chunks.iter().copied())
        .collect();
    let plain_uncovered: u64 = {
        let mut seen = HashSet::new();
        index
            .chunks
            .iter()
            .enumerate()
            .filter(|(n, c)| seen.insert(c.id) && !covered.contains(&(*n as u32)))
            .map(|(_, c)| u64::from(c.compressed_length))
            .sum()
    };
    let plain_all: u64 = {
        let mut seen = HashSet::new();
        index
            .chunks
            .iter()
            .filter(|c| seen.insert(c.id))
            .map(|c| u64::from(c.compressed_length))
            .sum()
    };
    let zeros = fixture.dir.path().join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 8 * MIB as usize]).unwrap();
    let wiped = fixture.device_running("wiped", &zeros, 10 * MIB, &server.url, |_| {});
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(wiped.diffota().args(["check", "--json"]))).unwrap();
    assert!(
        check["plan"]["delta_frames"].as_u64().unwrap() > 0,
        "{check}"
    );
    server.clear_log();
    run_ok(wiped.diffota().arg("install"));
    assert_holds_v2(&fixture, &wiped);
    let fetched = pack_bytes(&server);
    assert_eq!(fetched, check["plan"]["fetch_bytes"].as_u64().unwrap());
    assert!(
        fetched < plain_all && fetched <= stranger_bytes,
        "wiped slot fetched {fetched}, plain frames {plain_all}, stranger {stranger_bytes}"
    );
    assert!(
        fetched <= chain_bytes + plain_uncovered,
        "wiped slot fetched {fetched}, image frames {chain_bytes} + plain frames of the \
         chunks none covers {plain_uncovered}"
    );
}

/// New content that occurs twice in a release, the second time with small edits (a new
/// library and a rebuilt copy of it): the second copy's frame names chunks of the first as
/// bases (siblings), which no old release holds. A device rebuilds the first copy, reads it
/// back from the slot it is writing, and builds the second on it: it downloads little more
/// than the first copy, `check` predicts that exactly, and the slot holds the release.
/// Rebuilt code whose addresses moved (every 16th byte of 2 MiB shifted by a constant):
/// make writes frames with covers (they name `COVERS_BASE`) where they are smaller, the
/// device on 1.0 rebuilds 2.0 from them exactly as `check` predicted, for a fraction of the
/// plain frames, and `chunk-server verify` decodes every frame of the store.
#[test]
fn frames_with_covers_rebuild_code_whose_addresses_moved() {
    let mut fleet = Fleet::new();
    let v1 = noise(11, 8 * MIB as usize);
    fleet.image_bytes("1.0", &v1);
    fleet.make("1.0");
    let mut v2 = v1;
    for byte in v2[3 * MIB as usize..5 * MIB as usize]
        .iter_mut()
        .step_by(16)
    {
        *byte = byte.wrapping_add(0x20);
    }
    fleet.image_bytes("2.0", &v2);
    fleet.make_with("2.0", &["--delta-from", "1.0"]);
    fleet.publish("2.0");
    let index = fleet.index("2.0");
    let with_covers = index
        .deltas
        .frames
        .iter()
        .filter(|frame| {
            frame
                .bases
                .iter()
                .any(|&b| index.deltas.bases[b as usize] == COVERS_BASE)
        })
        .count();
    assert!(
        with_covers > 0,
        "no frame with covers among {}",
        index.deltas.frames.len()
    );

    let plain_bytes = plain_bytes_lacking(&fleet.store, "1.0", "2.0");
    let server = fleet.serve();
    let device = fleet.device_running("device", fleet.image("1.0"), 10 * MIB, &server.url, |_| {});
    let (fetched, check) = install_as_checked(&device, &server);
    assert!(
        check["plan"]["delta_frames"].as_u64().unwrap() > 0,
        "{check}"
    );
    assert_holds_v2(&fleet, &device);
    assert!(
        fetched * 10 < plain_bytes,
        "frames with covers {fetched} bytes against plain frames {plain_bytes}"
    );
    run_ok(
        chunk_server()
            .arg("verify")
            .arg("--public-key")
            .arg(&fleet.keys.public)
            .arg(&fleet.store),
    );
}

#[test]
fn a_frame_builds_on_new_chunks_an_earlier_frame_rebuilt() {
    let mut fleet = Fleet::new();
    let v1 = fleet.sample_release("1.0", 8 * MIB, 5, 1);
    let mut v2 = std::fs::read(&v1).unwrap();
    let fresh = noise(0x2545_f491_4f6c_dd1d, MIB as usize);
    let rebuilt = edited(&edited(&fresh, 0), 2048);
    let (first, second) = (MIB as usize, 5 * MIB as usize);
    v2[first..first + fresh.len()].copy_from_slice(&fresh);
    v2[second..second + rebuilt.len()].copy_from_slice(&rebuilt);
    fleet.image_bytes("2.0", &v2);
    fleet.make_with("2.0", &["--delta-from", "1.0"]);
    fleet.publish("2.0");
    let store = &fleet.store;
    let (old, new) = (fleet.index("1.0"), fleet.index("2.0"));
    let old_ids: HashSet<_> = old.chunks.iter().map(|c| c.id).collect();
    let new_ids: HashSet<_> = new.chunks.iter().map(|c| c.id).collect();
    assert!(
        new.deltas
            .bases
            .iter()
            .any(|b| !old_ids.contains(&b.id) && new_ids.contains(&b.id)),
        "some frame builds on a chunk 2.0 added"
    );
    let plain_bytes = plain_bytes_lacking(store, "1.0", "2.0");

    let server = StoreServer::start(store, &fleet.path("access.log"), None);
    let device = fleet.device("device", "1.0", 10 * MIB, &server.url, |_| {});
    let (fetched, _) = install_as_checked(&device, &server);
    assert!(
        device.slot_bytes(Slot::B, v2.len()) == v2,
        "slot b does not hold 2.0"
    );
    // Both copies as plain frames cost over 2 MiB (the content does not compress); the first
    // copy alone 1 MiB.
    assert!(
        fetched < MIB + MIB / 4 && fetched * 3 < plain_bytes * 2,
        "fetched {fetched} bytes, plain frames {plain_bytes}"
    );
}

/// Image frames build on the release's own earlier chunks: 2.0 holds new data (noise) and,
/// further on, a copy of it with an edit per 4 KiB, both new to every device. A device with a
/// wiped slot takes the image frames: the copy's frames name the first one's chunks, which
/// the device has rebuilt by then, so it downloads about one copy, not two (as frames each
/// compressed alone would cost), `check` predicts it exactly and the slot holds 2.0.
#[test]
fn image_frames_build_on_chunks_an_earlier_image_frame_rebuilt() {
    let mut fleet = Fleet::new();
    let v1 = fleet.sample_release("1.0", 8 * MIB, 5, 1);
    let mut v2 = std::fs::read(&v1).unwrap();
    let fresh = noise(0x2545_f491_4f6c_dd1d, 3 * MIB as usize / 2);
    let copy = edited(&fresh, 1024);
    let (first, second) = (MIB as usize / 2, 5 * MIB as usize);
    v2[first..first + fresh.len()].copy_from_slice(&fresh);
    v2[second..second + copy.len()].copy_from_slice(&copy);
    fleet.image_bytes("2.0", &v2);
    fleet.make_with("2.0", &["--no-delta", "--image-frames"]);
    fleet.publish("2.0");
    let new = fleet.index("2.0");
    let new_ids: HashSet<_> = new.chunks.iter().map(|c| c.id).collect();
    assert!(
        new.deltas.frames.iter().any(|f| !f.bases.is_empty())
            && new.deltas.bases.iter().all(|b| new_ids.contains(&b.id)),
        "image frames name chunks of the release itself, and only those"
    );
    // Each image frame's dictionary ends with the compressible content just before its
    // group (its window): the distinct chunk right before a group is named when it
    // compresses by a tenth.
    let mut seen = HashSet::new();
    let first_seen: Vec<bool> = new.chunks.iter().map(|c| seen.insert(c.id)).collect();
    let before_group = |n: u32| {
        (0..n as usize)
            .rev()
            .find(|&m| first_seen[m])
            .map(|m| &new.chunks[m])
            .filter(|c| u64::from(c.compressed_length) * 10 <= u64::from(c.length) * 9)
    };
    let windows: Vec<bool> = new
        .deltas
        .frames
        .iter()
        .filter_map(|f| {
            let before = before_group(*f.chunks.first()?)?;
            Some(
                f.bases
                    .iter()
                    .any(|&b| new.deltas.bases[b as usize].id == before.id),
            )
        })
        .collect();
    assert!(
        !windows.is_empty() && windows.iter().all(|&named| named),
        "frames after compressible content that name it: {windows:?}"
    );
    let plain_all: u64 = {
        let mut seen = HashSet::new();
        new.chunks
            .iter()
            .filter(|c| seen.insert(c.id))
            .map(|c| u64::from(c.compressed_length))
            .sum()
    };

    let server = StoreServer::start(&fleet.store, &fleet.path("access.log"), None);
    let zeros = fleet.path("zeros.img");
    std::fs::write(&zeros, vec![0u8; 8 * MIB as usize]).unwrap();
    let wiped = fleet.device_running("wiped", &zeros, 10 * MIB, &server.url, |_| {});
    let (fetched, check) = install_as_checked(&wiped, &server);
    assert!(
        check["plan"]["delta_frames"].as_u64().unwrap() > 0,
        "{check}"
    );
    assert!(
        wiped.slot_bytes(Slot::B, v2.len()) == v2,
        "slot b does not hold 2.0"
    );
    // The two copies of noise cost 3 MiB as frames of their own; the second is nearly free.
    assert!(
        fetched < plain_all - 5 * MIB / 4,
        "fetched {fetched} bytes, plain frames of every chunk {plain_all}"
    );
}

/// A frame that names a sibling gets a fallback frame naming old chunks only, and only the
/// fallback is passed on to the next release. 1.0 holds a library; 2.0 holds a rebuilt copy
/// of it (1 edit per 4 KiB), new data, and a copy of that copy with more edits, whose frames
/// name the first copy's chunks; 3.0 drops the first copy. A device on 1.0 rebuilds the
/// second copy of 3.0 from the inherited fallbacks against its own library: without them
/// the frames that name the dropped copy would be useless to it, and it would fetch the copy
/// whole. (The new data keeps the first copy out of the second copy's 1 MiB groups: a frame
/// is passed on only when the next release has all of its chunks.)
#[test]
fn a_device_two_releases_behind_uses_the_fallback_of_a_frame_naming_a_sibling() {
    let mut fleet = Fleet::new();
    let (first, data, second) = (MIB as usize, 5 * MIB as usize / 2, 5 * MIB as usize);
    let library = noise(0x2545_f491_4f6c_dd1d, MIB as usize);
    let rebuilt = edited(&library, 0);
    let rebuilt_again = edited(&rebuilt, 2048);
    let new_data = noise(0x9e37_79b9_7f4a_7c15, 3 * MIB as usize / 2);
    let mut v1 = std::fs::read(fleet.sample_image("1.0", 8 * MIB, 5, 1)).unwrap();
    v1[first..first + library.len()].copy_from_slice(&library);
    fleet.image_bytes("1.0", &v1);
    let mut v3 = v1.clone();
    v3[data..data + new_data.len()].copy_from_slice(&new_data);
    v3[second..second + rebuilt_again.len()].copy_from_slice(&rebuilt_again);
    let mut v2 = v3.clone();
    v2[first..first + rebuilt.len()].copy_from_slice(&rebuilt);
    fleet.make("1.0");
    for (version, from, image) in [("2.0", "1.0", &v2), ("3.0", "2.0", &v3)] {
        fleet.image_bytes(version, image);
        fleet.make_with(version, &["--delta-from", from]);
    }
    let (v1_index, v2_index, v3_index) =
        (fleet.index("1.0"), fleet.index("2.0"), fleet.index("3.0"));
    let in_1_0: HashSet<_> = v1_index.chunks.iter().map(|c| c.id).collect();
    let names_only_1_0 = |index: &Index, frame: &diffota_format::index::DeltaFrame| {
        frame
            .bases
            .iter()
            .all(|&b| in_1_0.contains(&index.deltas.bases[b as usize].id))
    };
    let (with_sibling, fallback): (Vec<_>, Vec<_>) = v2_index
        .deltas
        .frames
        .iter()
        .partition(|f| !names_only_1_0(&v2_index, f));
    assert!(
        !with_sibling.is_empty(),
        "a 2.0 frame names a chunk 2.0 added"
    );
    for frame in &with_sibling {
        assert!(
            fallback
                .iter()
                .any(|f| f.chunks == frame.chunks && !f.bases.is_empty()),
            "the frame rebuilding chunks {:?} has a fallback with 1.0's chunks as bases",
            frame.chunks
        );
    }
    let v2_pack = v2_index.packs.last().unwrap().id;
    let inherited: Vec<_> = v3_index
        .deltas
        .frames
        .iter()
        .filter(|f| v3_index.packs[f.pack as usize].id == v2_pack)
        .collect();
    assert!(!inherited.is_empty(), "3.0 carries 2.0's frames");
    assert!(
        inherited.iter().all(|f| names_only_1_0(&v3_index, f)),
        "3.0 carries no frame naming a chunk only 2.0 had"
    );

    fleet.publish("3.0");
    let server = fleet.serve();
    let device = fleet.device("device", "1.0", 10 * MIB, &server.url, |_| {});
    let (fetched, _) = install_as_checked(&device, &server);
    assert!(
        device.slot_bytes(Slot::B, v3.len()) == v3,
        "slot b holds 3.0"
    );
    // Noise does not compress: the plain frames of what 1.0 lacks cost 2.5 MiB, and the
    // fallbacks save most of the second copy's 1 MiB.
    let plain_bytes = plain_bytes_lacking(&fleet.store, "1.0", "3.0");
    assert!(
        fetched + 3 * MIB / 4 < plain_bytes,
        "two behind: fetched {fetched} bytes, plain frames {plain_bytes}"
    );
}

/// 3.0 made with `--delta-from 2.0` inherits 2.0's delta frames whose chunks it still has: a
/// device two releases behind (on 1.0) rebuilds what 2.0 added from them against its own
/// chunks, instead of taking those chunks' plain frames, and `chunk-server diff` says so.
#[test]
fn a_device_two_releases_behind_uses_inherited_frames() {
    let fixture = delta_fixture();
    let mut v3 = std::fs::read(fixture.image("2.0")).unwrap();
    for at in (6 * MIB as usize..7 * MIB as usize).step_by(4096) {
        v3[at] ^= 0x33;
    }
    let v3_path = fixture.dir.path().join("v3.img");
    std::fs::write(&v3_path, &v3).unwrap();
    run_ok(
        make_command(&fixture.store, &fixture.keys, "3.0", "test-board", &v3_path)
            .args(["--delta-from", "2.0"])
            .env("SOURCE_DATE_EPOCH", "1790000000"),
    );
    let (v2_index, v3_index) = (fixture.index("2.0"), fixture.index("3.0"));
    let v2_pack = v2_index.packs.last().unwrap().id;
    let inherited = v3_index
        .deltas
        .frames
        .iter()
        .filter(|f| v3_index.packs[f.pack as usize].id == v2_pack)
        .count();
    assert!(inherited > 0, "3.0 carries 2.0's frames");
    set_channel(&fixture.store, &fixture.keys, "stable", "3.0", &[]);

    let plain_bytes = plain_bytes_lacking(&fixture.store, "1.0", "3.0");
    let server = fixture.serve();
    let device = fixture.device_running(
        "two-behind",
        fixture.image("1.0"),
        10 * MIB,
        &server.url,
        |_| {},
    );
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    server.clear_log();
    run_ok(device.diffota().arg("install"));
    assert!(
        device.slot_bytes(Slot::B, v3.len()) == v3,
        "slot b holds 3.0"
    );
    let fetched = pack_bytes(&server);
    assert_eq!(fetched, check["plan"]["fetch_bytes"].as_u64().unwrap());
    assert!(
        fetched * 2 < plain_bytes,
        "two behind: {fetched} bytes against {plain_bytes} of plain frames"
    );
    let diff = store_diff(&fixture.store, "1.0", "3.0");
    assert!(diff["delta_frames"].as_u64().unwrap() > 0, "{diff}");
}

/// An offline bundle for devices on 1.0 carries the delta frames such a device uses instead
/// of the plain frames of the chunks they rebuild: it is smaller than those plain frames, and
/// a device on 1.0 with no store reachable installs 2.0 from it alone.
#[test]
fn bundle_for_the_older_release_carries_delta_frames() {
    let fixture = delta_fixture();
    let plain_bytes = plain_bytes_lacking(&fixture.store, "1.0", "2.0");
    let (out, summary) = fixture.bundle("2.0", &["1.0"], "update.dfb");
    assert!(
        summary["bundled_delta_frames"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let bundle_bytes = std::fs::metadata(&out).unwrap().len();
    assert!(
        bundle_bytes < plain_bytes,
        "bundle {bundle_bytes} bytes, plain frames of the added chunks {plain_bytes}"
    );
    let device = fixture.device_running(
        "offline",
        fixture.image("1.0"),
        10 * MIB,
        "/nonexistent-store",
        |_| {},
    );
    let check: serde_json::Value = serde_json::from_str(&run_ok(
        device.diffota().args(["check", "--json"]).arg(&out),
    ))
    .unwrap();
    assert_eq!(check["bundle"]["missing_chunks"], 0, "{check}");
    assert!(
        check["plan"]["delta_frames"].as_u64().unwrap() > 0,
        "{check}"
    );
    run_ok(device.diffota().arg("install").arg(&out));
    assert_holds_v2(&fixture, &device);
}

/// With delta frames in play: a SIGKILL halfway through the frames, then a resume that
/// fetches less than the whole again; tampered frames refused with nothing activated; a
/// truncated answer retried and reported; 500s carried by retries.
#[test]
fn delta_frames_survive_sigkill_and_misbehaving_servers() {
    let fixture = delta_fixture();
    let good = fixture.serve();
    // What a device on 1.0 fetches: the delta frames it chooses (not the image frames).
    let planner =
        fixture.device_running("planner", fixture.image("1.0"), 10 * MIB, &good.url, |_| {});
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(planner.diffota().args(["check", "--json"]))).unwrap();
    let frames_bytes = check["plan"]["fetch_bytes"].as_u64().unwrap();

    let stalling = FaultServer::start(
        &fixture.store,
        Fault::StallAfterBytes(frames_bytes as usize * 2 / 3),
    );
    let device = fixture.device_running(
        "killed",
        fixture.image("1.0"),
        10 * MIB,
        &stalling.url,
        |config| config.http.stall_timeout_secs = 600,
    );
    kill_install_midway(&device, &stalling);
    assert!(
        device.slot_bytes(Slot::A, 8 * MIB as usize)
            == std::fs::read(fixture.image("1.0")).unwrap()
    );
    device.configure(&good.url, &[&fixture.keys.public], |_| {});
    good.clear_log();
    run_ok(device.diffota().arg("install"));
    assert_holds_v2(&fixture, &device);
    let resumed = pack_bytes(&good);
    assert!(
        resumed > 0 && resumed < frames_bytes,
        "resumed with {resumed} bytes of {frames_bytes}"
    );

    let quick = |config: &mut Config| {
        config.http.retries = 1;
        config.http.stall_timeout_secs = 1;
    };
    for (name, fault, message) in [
        ("tamper", Fault::TamperPacks, "chunk"),
        ("truncate", Fault::Truncate, "end of file"),
    ] {
        let server = FaultServer::start(&fixture.store, fault);
        let device =
            fixture.device_running(name, fixture.image("1.0"), 10 * MIB, &server.url, quick);
        let output = run(device.diffota().arg("install"));
        assert!(!output.status.success(), "{name}");
        assert!(
            stderr(&output).contains(message),
            "{name}: {}",
            stderr(&output)
        );
        let status: serde_json::Value =
            serde_json::from_str(&run_ok(device.diffota().args(["status", "--json"]))).unwrap();
        assert!(
            status["state"]["trial"].is_null(),
            "{name}: nothing armed: {status}"
        );
    }
    let server = FaultServer::start(&fixture.store, Fault::FailFirst(2));
    let device = fixture.device_running(
        "retry",
        fixture.image("1.0"),
        10 * MIB,
        &server.url,
        |config| {
            config.http.retries = 3;
            config.http.concurrency = 1;
        },
    );
    run_ok(device.diffota().arg("install"));
    assert_holds_v2(&fixture, &device);
}

/// 3.0 made with no delta flag is made against 2.0 and 1.0 (the newest older releases, as
/// `--delta-from 2.0 --delta-from 1.0` would; `--delta-depth 1` takes 2.0 alone) and carries catch-up frames: against 1.0,
/// for everything 1.0 lacks, including what 2.0 added and 3.0 kept. A device on 1.0 takes them (the
/// download `check` predicted, less than with frames against 2.0 alone), and a device on
/// 2.0 takes the frames against 2.0 first.
#[test]
fn frames_against_an_older_release_catch_up_a_device_two_releases_behind() {
    let mut fleet = Fleet::new();
    let v1 = std::fs::read(fleet.sample_image("1.0", 8 * MIB, 5, 1)).unwrap();
    fleet.make("1.0");
    // 2.0 rebuilds a binary (scattered edits over old bytes), 3.0 rebuilds it again: 3.0's
    // frames against 2.0 name chunks 2.0 added, which a device on 1.0 lacks.
    let mut v2 = v1.clone();
    for at in (MIB as usize..2 * MIB as usize).step_by(4096) {
        v2[at] ^= 0x5a;
    }
    let mut v3 = v2.clone();
    for at in (MIB as usize + 2048..2 * MIB as usize).step_by(4096) {
        v3[at] ^= 0xa5;
    }
    fleet.image_bytes("2.0", &v2);
    fleet.make("2.0");
    fleet.image_bytes("3.0", &v3);
    let only_2 = fleet.path("store-3.0-against-2.0");
    run_ok(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&fleet.store)
            .arg(&only_2),
    );
    run_ok(
        make_command(
            &only_2,
            &fleet.keys,
            "3.0",
            "test-board",
            fleet.image("3.0"),
        )
        .args(["--delta-depth", "1"])
        .env("SOURCE_DATE_EPOCH", "1790000000"),
    );
    let made = fleet.make("3.0");
    assert_eq!(made["delta_bases"], serde_json::json!(["2.0", "1.0"]));

    let predicted = |store: &Path| -> u64 {
        let diff: serde_json::Value = serde_json::from_str(&run_ok(
            chunk_server()
                .args(["diff", "--json"])
                .arg(store.join("releases/1.0/rootfs.didx"))
                .arg(store.join("releases/3.0/rootfs.didx")),
        ))
        .unwrap();
        diff["download_bytes"].as_u64().unwrap()
    };
    let (with_catch_up, against_2_only) = (predicted(&fleet.store), predicted(&only_2));
    assert!(
        with_catch_up < against_2_only,
        "1.0 -> 3.0: {with_catch_up} bytes with catch-up frames, {against_2_only} without"
    );

    fleet.publish("3.0");
    let server = fleet.serve();
    let behind = fleet.device("behind", "1.0", 10 * MIB, &server.url, |_| {});
    let (fetched, check) = install_as_checked(&behind, &server);
    assert!(
        behind.slot_bytes(Slot::B, v3.len()) == v3,
        "slot b holds 3.0"
    );
    let plain = plain_bytes_lacking(&fleet.store, "1.0", "3.0");
    assert!(
        fetched < plain / 2,
        "two behind: fetched {fetched} bytes, plain frames {plain}: {check}"
    );
    let one_behind = fleet.device("one-behind", "2.0", 10 * MIB, &server.url, |_| {});
    let (fetched_one_behind, _) = install_as_checked(&one_behind, &server);
    assert!(one_behind.slot_bytes(Slot::B, v3.len()) == v3);
    assert!(fetched_one_behind < plain_bytes_lacking(&fleet.store, "2.0", "3.0") / 2);
}

/// New content that resembles nothing (rebuilt binary blobs) at two places of 2.0, amid
/// edits that frames rebuild: a device on 1.0 fetches the frames and the blobs' plain frames
/// in one range request from the start of the new pack, where make lays out the frames
/// against the base and just after them what the base's devices fetch plain (in image order
/// the edited region's plain frames lie between the blobs', and the frames after all plain
/// frames: three ranges), as `check` predicted; the slot holds 2.0.
#[test]
fn the_frames_and_plain_frames_a_device_on_the_base_fetches_come_in_one_range() {
    let mut fleet = Fleet::new();
    let v1 = std::fs::read(fleet.sample_image("1.0", 8 * MIB, 5, 1)).unwrap();
    fleet.make("1.0");
    let mut v2 = v1.clone();
    for at in (MIB as usize..7 * MIB as usize).step_by(4096) {
        v2[at] ^= 0x5a;
    }
    // Each blob fills whole frame groups (1 MiB), whose frames would not pay.
    for (seed, at) in [(7, MIB as usize), (8, 5 * MIB as usize)] {
        let blob = noise(seed, 3 * MIB as usize / 2);
        v2[at..at + blob.len()].copy_from_slice(&blob);
    }
    fleet.image_bytes("2.0", &v2);
    let made = fleet.make("2.0");
    assert_eq!(made["delta_bases"], serde_json::json!(["1.0"]));
    fleet.publish("2.0");

    let server = fleet.serve();
    let device = fleet.device("device", "1.0", 10 * MIB, &server.url, |_| {});
    let (fetched, check) = install_as_checked(&device, &server);
    assert!(
        device.slot_bytes(Slot::B, v2.len()) == v2,
        "slot b holds 2.0"
    );
    let mut ranges: Vec<(u64, u64)> = server
        .served()
        .iter()
        .filter(|s| s.path.starts_with("/packs/"))
        .map(|s| s.range.expect("a range request"))
        .collect();
    ranges.sort();
    assert_eq!(
        ranges.len(),
        1,
        "frames and plain frames together: {ranges:?}"
    );
    assert_eq!(ranges[0].0, 0, "they lie at the start: {ranges:?}");
    assert!(
        ranges[0].1 + 1 >= 3 * MIB,
        "both blobs' plain frames (about 1.5 MiB each) in the range: {ranges:?}"
    );
    assert_eq!(
        check["plan"]["fetch_requests"], 1,
        "check predicted the requests: {check}"
    );
    let plain_bytes = plain_bytes_lacking(&fleet.store, "1.0", "2.0");
    assert!(
        fetched < plain_bytes,
        "fetched {fetched} bytes, plain frames {plain_bytes}: {check}"
    );
}

/// 4.0 made by default has frames against the three newest older releases, 3.0, 2.0 and
/// 1.0 (a device off for two release cycles is three behind), with no channel naming 1.0,
/// and make lays its pack out for the devices on all three: one base's devices fetch two
/// stretches of it whatever the order, and make picks whose by the requests each base's
/// devices make in all. Here 2.0 dropped content of 1.0 that 3.0 brought back, so a device
/// on 2.0 fetches three stretches of 1.0's pack besides, more than a device on 1.0 fetches
/// from older packs: the frames against 2.0 follow its plain frames, and the device on 1.0
/// fetches two stretches of the new pack. A device on each installs 4.0's bytes in the
/// requests `check` predicted, for less than the plain frames it lacks.
#[test]
fn a_release_made_by_default_installs_on_a_device_up_to_three_releases_behind() {
    let mut fleet = Fleet::new();
    // Three stretches of 1.0 resemble nothing else (compressed data, say): 2.0 overwrites
    // them, 3.0 restores them.
    let dropped = [0, 6 * MIB as usize, 15 * MIB as usize / 2];
    let mut v1 = std::fs::read(fleet.sample_image("1.0", 8 * MIB, 5, 1)).unwrap();
    for (n, &at) in dropped.iter().enumerate() {
        v1[at..at + 256 * 1024].copy_from_slice(&noise(30 + n as u64, 256 * 1024));
    }
    fleet.image_bytes("1.0", &v1);
    fleet.make("1.0");
    // Each release rebuilds a binary (scattered edits, which frames rebuild) and adds a blob
    // (new content that resembles nothing, fetched plain).
    let mut image = v1.clone();
    for (version, seed) in [("2.0", 7u64), ("3.0", 8), ("4.0", 9)] {
        for at in (MIB as usize + seed as usize * 32..3 * MIB as usize).step_by(256) {
            image[at] ^= seed as u8;
        }
        let blob = noise(seed, MIB as usize / 2);
        let at = (seed as usize - 4) * MIB as usize;
        image[at..at + blob.len()].copy_from_slice(&blob);
        for (n, &at) in dropped.iter().enumerate() {
            let stretch = at..at + 256 * 1024;
            match version {
                "2.0" => image[stretch].copy_from_slice(&noise(20 + n as u64, 256 * 1024)),
                "3.0" => image[stretch.clone()].copy_from_slice(&v1[stretch]),
                _ => {}
            }
        }
        fleet.image_bytes(version, &image);
        if version != "4.0" {
            fleet.make(version);
        }
    }
    let made = fleet.make("4.0");
    assert_eq!(
        made["delta_bases"],
        serde_json::json!(["3.0", "2.0", "1.0"])
    );
    fleet.publish("4.0");
    let older_packs = fleet.index("3.0").packs;
    let new_pack = fleet
        .index("4.0")
        .packs
        .into_iter()
        .find(|p| !older_packs.contains(p))
        .expect("4.0 wrote a pack")
        .store_path();
    let server = fleet.serve();
    // Requests for the new pack: one for the devices on 3.0 and 2.0, two at most on 1.0.
    for (running, most) in [("3.0", 1), ("2.0", 1), ("1.0", 2)] {
        let device = fleet.device(
            &format!("on-{running}"),
            running,
            10 * MIB,
            &server.url,
            |_| {},
        );
        let (fetched, check) = install_as_checked(&device, &server);
        assert!(
            fleet.slot_holds(&device, Slot::B, "4.0"),
            "the device on {running} holds 4.0 in slot b"
        );
        let plain = plain_bytes_lacking(&fleet.store, running, "4.0");
        assert!(
            fetched < plain,
            "on {running}: fetched {fetched} bytes, plain frames {plain}: {check}"
        );
        let new_pack_requests = server
            .served()
            .iter()
            .filter(|s| s.path.ends_with(&new_pack))
            .count();
        assert!(
            (1..=most).contains(&new_pack_requests),
            "on {running}: {new_pack_requests} requests for the new pack: {:?}",
            server.served()
        );
    }
}

/// A build host without the published store: `make --delta-from-image` chunks the image file
/// of the release the devices run (a Yocto deploy directory keeps the previous build's), and
/// a device that runs that release, factory-flashed, takes the frames: the download `check`
/// predicted, under half of a plain make's.
#[test]
fn frames_against_an_image_file_serve_devices_that_run_it() {
    let mut fleet = Fleet::new();
    let v1 = std::fs::read(fleet.sample_image("1.0", 8 * MIB, 5, 1)).unwrap();
    let mut v2 = v1.clone();
    for at in (MIB as usize..3 * MIB as usize).step_by(4096) {
        v2[at] ^= 0x5a;
    }
    fleet.image_bytes("2.0", &v2);
    let make_2 = |store: &Path, extra: &[&std::ffi::OsStr]| -> serde_json::Value {
        serde_json::from_str(&run_ok(
            make_command(store, &fleet.keys, "2.0", "test-board", fleet.image("2.0"))
                .arg("--json")
                .args(extra)
                .env("SOURCE_DATE_EPOCH", "1790000000"),
        ))
        .unwrap()
    };
    let (fresh, plain) = (fleet.path("fresh-store"), fleet.path("plain-store"));
    let made = make_2(
        &fresh,
        &[
            "--delta-from-image".as_ref(),
            fleet.image("1.0").as_os_str(),
        ],
    );
    assert!(made["delta_frames"].as_u64().unwrap() > 0, "{made}");
    assert_eq!(
        made["delta_base_images"],
        serde_json::json!([fleet.image("1.0")])
    );
    make_2(&plain, &[]);
    run_ok(
        chunk_server()
            .args(["verify", "--public-key"])
            .arg(&fleet.keys.public)
            .arg(&fresh),
    );
    // A changed base image is an error naming it, never a frame against other bytes.
    let output = run(chunk_server()
        .args([
            "make",
            "--no-sign",
            "--compatible",
            "x",
            "--version",
            "3.0",
            "--store",
        ])
        .arg(fleet.path("bad-store"))
        .arg("--delta-from-image")
        .arg(fleet.path("missing.img"))
        .arg(fleet.image("2.0")));
    assert!(
        !output.status.success() && stderr(&output).contains("missing.img"),
        "{}",
        stderr(&output)
    );

    let fetch_bytes = |store: &Path| -> (u64, u64) {
        let log = fleet.path(&format!(
            "{}.log",
            store.file_name().unwrap().to_string_lossy()
        ));
        let server = StoreServer::start(store, &log, None);
        let device = fleet.device(
            &format!("device-{}", store.file_name().unwrap().to_string_lossy()),
            "1.0",
            10 * MIB,
            &server.url,
            |_| {},
        );
        let index = format!("{}/releases/2.0/rootfs.didx", server.url);
        let check: serde_json::Value = serde_json::from_str(&run_ok(
            device.diffota().args(["check", "--json"]).arg(&index),
        ))
        .unwrap();
        server.clear_log();
        run_ok(device.diffota().arg("install").arg(&index));
        assert!(
            device.slot_bytes(Slot::B, v2.len()) == v2,
            "slot b holds 2.0"
        );
        (
            pack_bytes(&server),
            check["plan"]["fetch_bytes"].as_u64().unwrap(),
        )
    };
    let (with_frames, predicted) = fetch_bytes(&fresh);
    assert_eq!(with_frames, predicted, "check predicted the download");
    let (without, _) = fetch_bytes(&plain);
    assert!(
        with_frames * 2 < without,
        "against the image file {with_frames} bytes, plain {without}"
    );
}

/// A factory-flashed device cuts its running slot as far as the new image goes, and the
/// partition goes on past the image it was flashed with: where the new image is longer, the
/// chunk the old one ended with (cut at its end) ends elsewhere in that cut, so the device
/// does not find it. make names no such chunk as a base: a release that edits the end of the
/// image and grows it still gets its frames, and the device (on a partition 2 MiB larger than
/// its image) takes every frame a device holding 1.0's chunks takes, downloading from the
/// packs exactly what `chunk-server diff` predicts for 1.0.
#[test]
fn a_factory_flashed_device_on_a_larger_partition_takes_every_frame() {
    let mut fleet = Fleet::new();
    // Content that resembles only itself (noise), so that the edited end of 2.0 has one old
    // chunk to build on: the one 1.0 ends with. An edit in the middle gets a frame too.
    let v1 = noise(29, 8 * MIB as usize);
    fleet.image_bytes("1.0", &v1);
    fleet.make("1.0");
    let mut v2 = v1.clone();
    let old_length = v1.len();
    for at in
        (2 * MIB as usize..2 * MIB as usize + 64 * 1024).chain(old_length - 16 * 1024..old_length)
    {
        if at % 512 == 0 {
            v2[at] ^= 0x5a;
        }
    }
    v2.extend(v1[..64 * 1024].iter().map(|byte| byte.rotate_left(3)));
    let length = v2.len();
    fleet.image_bytes("2.0", &v2);
    fleet.make_with("2.0", &["--delta-from", "1.0"]);
    fleet.publish("2.0");

    let (old, new) = (fleet.index("1.0"), fleet.index("2.0"));
    let last = old.chunks.last().unwrap();
    assert!(
        old.chunks[..old.chunks.len() - 1]
            .iter()
            .all(|c| c.id != last.id),
        "1.0's last chunk lies only at its end"
    );
    assert!(!new.deltas.frames.is_empty(), "2.0 has delta frames");
    assert!(
        new.deltas.bases.iter().all(|b| b.id != last.id),
        "no frame names the chunk 1.0 ends with"
    );

    let diff = store_diff(&fleet.store, "1.0", "2.0");
    let index_bytes: u64 = ["rootfs.didx.from-1.0", "rootfs.didx.minisig"]
        .iter()
        .map(|file| {
            std::fs::metadata(fleet.store.join("releases/2.0").join(file))
                .unwrap()
                .len()
        })
        .sum();
    let server = fleet.serve();
    // Slot A: 1.0 as the factory flashed it, on a partition 2 MiB larger (erased: zeros).
    let flashed = fleet.path("flashed.img");
    let mut partition = v1.clone();
    partition.resize(old_length + 2 * MIB as usize, 0);
    std::fs::write(&flashed, &partition).unwrap();
    let device = fleet.device_running("factory", &flashed, 10 * MIB, &server.url, |_| {});
    let (fetched, check) = install_as_checked(&device, &server);
    assert!(device.slot_bytes(Slot::B, length) == v2, "slot b holds 2.0");
    assert_eq!(
        check["plan"]["delta_frames"], diff["delta_frames"],
        "the frames a device holding 1.0 takes: {check} {diff}"
    );
    assert_eq!(
        fetched,
        diff["download_bytes"].as_u64().unwrap() - index_bytes,
        "diff's prediction for 1.0, less the index delta and its signature: {diff}"
    );
}
