//! `chunk-server make`: round trips, reproducible output, few new chunks for a small change,
//! bad images, a repeated or killed make, two makes at once, delta frames.

use super::*;

#[test]
fn make_then_verify_round_trip_and_reproducible() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let image = sample(dir.path(), "v1.img", 8, 1);
    let store = &fleet.store;
    let summary = make_release(store, keys, "1.0", &image);
    assert_eq!(summary["image_bytes"], 8 << 20);
    assert_eq!(summary["new_chunks"], summary["distinct_chunks"]);
    run_ok(
        chunk_server()
            .arg("verify")
            .arg("--public-key")
            .arg(&keys.public)
            .arg(store),
    );

    let index = store.join("releases/1.0/rootfs.didx");
    let first = std::fs::read(&index).unwrap();
    let packs_before = pack_files(store);
    let again = make_release(store, keys, "1.0", &image);
    assert_eq!(
        std::fs::read(&index).unwrap(),
        first,
        "same image, same version: byte-identical index"
    );
    assert_eq!(again["new_chunks"], 0);
    assert_eq!(pack_files(store), packs_before, "no new pack");

    // A release version is immutable.
    let other = sample(dir.path(), "v2.img", 8, 2);
    let output = run(chunk_server()
        .args(["make", "--store"])
        .arg(store)
        .args([
            "--version",
            "1.0",
            "--compatible",
            "test-board",
            "--zstd-level",
            "3",
            "--key",
        ])
        .arg(&keys.secret)
        .arg(&other)
        .env("SOURCE_DATE_EPOCH", "1790000000"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&index).unwrap(), first);
}

#[test]
fn one_changed_block_adds_few_chunks_and_diff_says_so() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let v1 = sample(dir.path(), "v1.img", 16, 1);
    let mut bytes = std::fs::read(&v1).unwrap();
    let middle = bytes.len() / 2 / 4096 * 4096;
    for (i, byte) in bytes[middle..middle + 4096].iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(31) ^ 0xa5;
    }
    let v2 = dir.path().join("v2.img");
    std::fs::write(&v2, &bytes).unwrap();
    let store = &fleet.store;
    make_release(store, keys, "1.0", &v1);
    let summary = make_release(store, keys, "2.0", &v2);
    let new_chunks = summary["new_chunks"].as_u64().unwrap();
    assert!(
        (1..=3).contains(&new_chunks),
        "{new_chunks} new chunks for one changed block"
    );

    let stdout = run_ok(
        chunk_server()
            .args(["diff", "--json"])
            .arg(store.join("releases/1.0/rootfs.didx"))
            .arg(store.join("releases/2.0/rootfs.didx")),
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["fetched_chunks"], new_chunks);
    assert_eq!(
        report["requests"], 3,
        "one range for the new chunks, plus the index and its signature"
    );
    let index_size = std::fs::metadata(store.join("releases/2.0/rootfs.didx"))
        .unwrap()
        .len();
    assert!(report["download_bytes"].as_u64().unwrap() < index_size + 3 * 300 * 1024);
}

#[test]
fn bad_images_are_named_and_leave_nothing_behind() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let store = &fleet.store;
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    for (image, message) in [
        (empty.clone(), "image is empty"),
        (dir.path().join("missing.img"), "missing.img"),
    ] {
        let output = run(chunk_server()
            .args(["make", "--compatible", "c", "--version", "1", "--store"])
            .arg(store)
            .arg("--key")
            .arg(&keys.secret)
            .arg(&image));
        assert!(!output.status.success());
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(message),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The store's lock file (taken before the image is read) is all there may be.
    let leftovers: Vec<_> = walk(store)
        .into_iter()
        .filter(|p| p.is_file() && *p != store.join(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "files left: {leftovers:?}");
}

/// Making an existing release again is a no-op whatever the clock says, and completes a
/// signature that is missing; another image under the version stays refused.
#[test]
fn make_again_is_a_no_op_and_completes_a_missing_signature() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let image = sample(dir.path(), "v1.img", 4, 1);
    let store = &fleet.store;
    // 2.0 gets delta frames against 1.0, which a rerun codes again.
    let mut bytes = std::fs::read(&image).unwrap();
    for at in (0..bytes.len()).step_by(4096) {
        bytes[at] ^= 0x5a; // a rebuilt binary: the same bytes with scattered changes
    }
    let older = dir.path().join("v0.img");
    std::fs::write(&older, &bytes).unwrap();
    run_ok(&mut make_command(store, keys, "1.0", "test-board", &older));
    run_ok(&mut make_command(store, keys, "2.0", "test-board", &image));
    let index = store.join("releases/2.0/rootfs.didx");
    let published = std::fs::read(&index).unwrap();
    assert_eq!(
        &published[8..10],
        &2u16.to_le_bytes(),
        "2.0 has delta frames"
    );
    let signature = std::fs::read(store.join("releases/2.0/rootfs.didx.minisig")).unwrap();
    let packs = pack_files(store);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run_ok(&mut make_command(store, keys, "2.0", "test-board", &image));
    assert_eq!(
        std::fs::read(&index).unwrap(),
        published,
        "the published index stays"
    );
    assert_eq!(pack_files(store), packs, "no pack the index does not name");
    assert_eq!(
        std::fs::read(store.join("releases/2.0/rootfs.didx.minisig")).unwrap(),
        signature
    );

    // An interrupted run left the index without its signature: the next make signs it.
    std::fs::remove_file(store.join("releases/2.0/rootfs.didx.minisig")).unwrap();
    assert!(!verify_store(store, keys).status.success());
    run_ok(&mut make_command(store, keys, "2.0", "test-board", &image));
    assert!(verify_store(store, keys).status.success());
    assert_eq!(std::fs::read(&index).unwrap(), published);

    let other = sample(dir.path(), "v2.img", 4, 2);
    let output = run(&mut make_command(store, keys, "2.0", "test-board", &other));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("already exists with different content")
    );
}

/// `make` killed at several moments leaves nothing half-written under a final name, and the
/// next make completes the release.
#[test]
fn make_killed_at_any_moment_then_made_again() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let image = sample(dir.path(), "big.img", 64, 1);
    // Moments spread over a make of this image (bounded: six kills).
    for (round, delay_ms) in [0u64, 20, 60, 150, 300, 600].into_iter().enumerate() {
        let store = dir.path().join(format!("store-{round}"));
        let mut child = make_command(&store, keys, "1.0", "test-board", &image)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        // Whatever is under a final name is whole (signatures aside: the kill may fall
        // between index and signature).
        let partial = run(chunk_server()
            .args(["verify", "--no-signature-check"])
            .arg(&store));
        assert!(
            !store.exists() || partial.status.success(),
            "after a kill at {delay_ms} ms: {}",
            String::from_utf8_lossy(&partial.stdout)
        );
        run_ok(&mut make_command(&store, keys, "1.0", "test-board", &image));
        let output = verify_store(&store, keys);
        assert!(
            output.status.success(),
            "after a kill at {delay_ms} ms and a new make: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// Two makes of one version from different images, started together: the store lock makes
/// one wait for the other, so exactly one succeeds and the other is refused by name; the
/// store verifies.
#[test]
fn two_makes_of_one_version_at_once_never_both_succeed() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let store = &fleet.store;
    let first = sample(dir.path(), "a.img", 16, 1);
    let second = sample(dir.path(), "b.img", 16, 2);
    for round in 0..3 {
        let version = format!("{round}.0");
        let children: Vec<_> = [&first, &second]
            .iter()
            .map(|image| {
                make_command(store, keys, &version, "test-board", image)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let succeeded = outputs.iter().filter(|o| o.status.success()).count();
        let errors: Vec<String> = outputs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect();
        assert_eq!(succeeded, 1, "round {round}: {errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("already exists with different content")),
            "round {round}: {errors:?}"
        );
    }
    let output = verify_store(store, keys);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// `make --delta-from`: a release whose new chunks are scattered edits of old ones gets
/// delta frames (index format version 2) that `verify` decodes against their bases; a
/// damaged base is named; a device still installs the release (from the plain frames, which
/// every chunk keeps).
#[test]
fn delta_frames_are_verified_and_the_release_installs() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let v1 = sample(dir.path(), "v1.img", 4, 1);
    let mut edited = std::fs::read(&v1).unwrap();
    for at in (MIB_USIZE..3 * MIB_USIZE).step_by(4096) {
        edited[at] ^= 0x5a; // a rebuilt binary: old bytes with scattered changes
    }
    let v2 = dir.path().join("v2.img");
    std::fs::write(&v2, &edited).unwrap();
    let store = &fleet.store;
    make_release(store, keys, "1.0", &v1);
    let made = run_ok(make_command(store, keys, "2.0", "test-board", &v2).args([
        "--delta-from",
        "1.0",
        "--json",
    ]));
    let made: serde_json::Value = serde_json::from_str(&made).unwrap();
    assert!(made["delta_frames"].as_u64().unwrap() > 0, "{made}");
    let index_bytes = std::fs::read(store.join("releases/2.0/rootfs.didx")).unwrap();
    assert_eq!(index_bytes[8..10], 2u16.to_le_bytes(), "format version 2");
    let index = diffota_format::Index::decode(&index_bytes).unwrap();
    assert!(index.deltas.frames.iter().any(|f| !f.bases.is_empty()));

    let output = verify_store(store, keys);
    assert!(output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    let frames = index.deltas.frames.len();
    assert!(
        report.contains(&format!(
            "{frames} delta frames, 1 index deltas, 2 compressed indexes, 0 channels checked: 0 problems"
        )),
        "{report}"
    );

    // Damage the old pack, where the bases live: verify names the frames it cannot rebuild.
    let damaged = dir.path().join("damaged");
    run_ok(Command::new("cp").arg("-r").arg(store).arg(&damaged));
    let old_index = diffota_format::Index::decode(
        &std::fs::read(damaged.join("releases/1.0/rootfs.didx")).unwrap(),
    )
    .unwrap();
    let base = index.deltas.bases[index
        .deltas
        .frames
        .iter()
        .find(|f| !f.bases.is_empty())
        .unwrap()
        .bases[0] as usize];
    let old_chunk = old_index.chunks.iter().find(|c| c.id == base.id).unwrap();
    let old_pack = damaged.join(old_index.packs[old_chunk.pack as usize].store_path());
    flip_byte(
        &old_pack,
        old_chunk.pack_offset as usize + old_chunk.compressed_length as usize / 2,
    );
    let output = verify_store(&damaged, keys);
    assert!(!output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("delta frame") && report.contains(&format!("base {}", base.id)),
        "{report}"
    );

    // A device running 1.0 installs 2.0.
    let device = Device::new(&dir.path().join("device"), &v1, 6 * MIB_USIZE as u64);
    device.configure(
        &format!("file://{}", store.display()),
        &[&keys.public],
        |_| {},
    );
    run_ok(
        device
            .diffota()
            .arg("install")
            .arg(store.join("releases/2.0/rootfs.didx")),
    );
    assert!(
        device.slot_bytes(Slot::B, edited.len()) == edited,
        "slot b does not hold 2.0"
    );
}

/// `make` with no delta flag writes delta frames against the releases the fleet runs: the
/// three newest older releases of the same name and board (`--delta-depth` sets how many),
/// then the newest a channel points at, and a device on a channel's release takes them.
/// `--no-delta` opts out (format version 1), `--delta-from` chooses, and another board's
/// release is never a base.
#[test]
fn make_writes_delta_frames_against_the_releases_the_fleet_runs_by_default() {
    let mut fleet = Fleet::new();
    let size = 8 << 20;
    let first = fleet.sample_image("1.0", size, 5, 1);
    assert_eq!(fleet.make("1.0")["delta_bases"], serde_json::json!([]));
    fleet.publish("1.0");
    fleet.sample_image("1.1", size, 5, 2);
    assert_eq!(
        fleet.make("1.1")["delta_bases"],
        serde_json::json!(["1.0"]),
        "the newest older release"
    );
    make_release_for(&fleet.store, &fleet.keys, "1.5", "other-board", &first);

    fleet.sample_image("2.0", size, 5, 3);
    let made = fleet.make("2.0");
    assert_eq!(
        made["delta_bases"],
        serde_json::json!(["1.1", "1.0"]),
        "the newest older release, then the stable channel's: {made}"
    );
    let index = fleet.index("2.0");
    assert!(made["delta_frames"].as_u64().unwrap() > 0, "{made}");
    assert_eq!(index.format_version(), 2);

    fleet.sample_image("2.1", size, 5, 4);
    let plain = fleet.make_with("2.1", &["--no-delta"]);
    assert_eq!(plain["delta_bases"], serde_json::json!([]));
    assert_eq!(plain["delta_frames"], 0);
    assert_eq!(fleet.index("2.1").format_version(), 1);
    fleet.sample_image("2.2", size, 5, 5);
    let chosen = fleet.make_with("2.2", &["--delta-from", "1.0", "--delta-from", "1.0"]);
    assert_eq!(
        chosen["delta_bases"],
        serde_json::json!(["1.0"]),
        "named once"
    );
    let output = run(make_command(
        &fleet.store,
        &fleet.keys,
        "2.3",
        "test-board",
        fleet.image("2.2"),
    )
    .args(["--no-delta", "--delta-from", "1.0"]));
    assert!(!output.status.success(), "--no-delta with --delta-from");
    fleet.sample_image("2.4", size, 5, 6);
    let shallow = fleet.make_with("2.4", &["--delta-depth", "1"]);
    assert_eq!(
        shallow["delta_bases"],
        serde_json::json!(["2.2", "1.0"]),
        "the newest older release, then the stable channel's: {shallow}"
    );
    fleet.sample_image("2.5", size, 5, 7);
    let deep = fleet.make("2.5");
    assert_eq!(
        deep["delta_bases"],
        serde_json::json!(["2.4", "2.2", "2.1", "1.0"]),
        "the three newest older releases, then the stable channel's: {deep}"
    );

    // A device on the stable channel's 1.0 installs 2.0 through frames against 1.0.
    fleet.publish("2.0");
    let server = fleet.serve();
    let device = fleet.device("device", "1.0", size + (2 << 20), &server.url, |_| {});
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    assert!(
        check["plan"]["delta_frames"].as_u64().unwrap_or(0) > 0,
        "a device on 1.0 takes delta frames: {check}"
    );
    run_ok(device.diffota().arg("install"));
    assert!(fleet.slot_holds(&device, Slot::B, "2.0"));
}
