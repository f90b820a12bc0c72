//! The device side end to end: `diffota install` with the real binaries against
//! `chunk-server serve` (HTTP and HTTPS) or a misbehaving server on 127.0.0.1, on
//! file-backed A/B devices.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use diffota_format::frame_choice::pass_starts;
use diffota_format::ranges::plan_ranges;
use diffota_format::Index;
use diffota_test_support::{edited, noise};
use diffota_tests::faults::{Fault, FaultServer};
use diffota_tests::fleet::{Fleet, MIB};
use diffota_tests::sample::write_image;
use diffota_tests::*;

mod fetch;
mod frames;
mod index_deltas;
mod interrupted;
mod refused;

/// Releases 1.0 and 2.0 of an 8 MiB sample image, on channel `stable` at 2.0; 2.0 in plain
/// frames only (`--no-delta`), for the tests of what a device fetches chunk by chunk.
fn fixture() -> Fleet {
    let mut fleet = Fleet::new();
    fleet.sample_release("1.0", 8 * MIB, 5, 1);
    fleet.sample_image("2.0", 8 * MIB, 5, 2);
    fleet.make_with("2.0", &["--no-delta"]);
    fleet.publish("2.0");
    fleet
}

/// Release `version`'s index in `store`.
fn store_index(store: &Path, version: &str) -> Index {
    Index::decode(&std::fs::read(store.join(format!("releases/{version}/rootfs.didx"))).unwrap())
        .unwrap()
}

/// The plain frames, counted once per chunk, of the chunks of `to` that `from` lacks.
fn plain_bytes_lacking(store: &Path, from: &str, to: &str) -> u64 {
    let held: HashSet<_> = store_index(store, from)
        .chunks
        .iter()
        .map(|c| c.id)
        .collect();
    let mut seen = HashSet::new();
    store_index(store, to)
        .chunks
        .iter()
        .filter(|c| !held.contains(&c.id) && seen.insert(c.id))
        .map(|c| u64::from(c.compressed_length))
        .sum()
}

fn assert_installed(device: &Device, image: &Path) {
    let expected = std::fs::read(image).unwrap();
    assert!(
        device.slot_bytes(Slot::B, expected.len()) == expected,
        "slot b does not hold the image"
    );
}

fn assert_running_untouched(device: &Device, fixture: &Fleet) {
    let expected = std::fs::read(fixture.image("1.0")).unwrap();
    assert!(
        device.slot_bytes(Slot::A, expected.len()) == expected,
        "the running slot was modified"
    );
}

/// Runs an install that must fail with `message` in its error, leaving slot A untouched
/// and no install recorded.
fn assert_install_fails(device: &Device, fixture: &Fleet, args: &[&str], message: &str) {
    let output = run(device.diffota().arg("install").args(args));
    assert!(
        !output.status.success(),
        "install should have failed with {message:?}"
    );
    let error = stderr(&output);
    assert!(
        error.to_lowercase().contains(&message.to_lowercase()),
        "expected {message:?} in: {error}"
    );
    assert_running_untouched(device, fixture);
    let status = run_ok(device.diffota().args(["status", "--json"]));
    assert!(
        !status.contains("\"installed\""),
        "an install was recorded: {status}"
    );
}

/// Releases 1.0 and 2.0 where 2.0 edits bytes scattered over 3 MiB of 1.0 (a rebuilt
/// binary), 2.0 made with `--delta-from 1.0 --image-frames`, on channel `stable`.
fn delta_fixture() -> Fleet {
    let mut fleet = Fleet::new();
    let v1 = fleet.sample_release("1.0", 8 * MIB, 5, 1);
    let mut v2 = std::fs::read(v1).unwrap();
    for at in (2 * MIB as usize..5 * MIB as usize).step_by(4096) {
        v2[at] ^= 0x5a;
    }
    fleet.image_bytes("2.0", &v2);
    fleet.make_with("2.0", &["--delta-from", "1.0", "--image-frames"]);
    fleet.publish("2.0");
    fleet
}

/// `chunk-server diff --json` from release `from` to release `to` of `store`.
fn store_diff(store: &Path, from: &str, to: &str) -> serde_json::Value {
    let index = |version: &str| store.join(format!("releases/{version}/rootfs.didx"));
    serde_json::from_str(&run_ok(
        chunk_server()
            .args(["diff", "--json"])
            .arg(index(from))
            .arg(index(to)),
    ))
    .unwrap()
}

fn v2_len(fleet: &Fleet) -> usize {
    std::fs::metadata(fleet.image("2.0")).unwrap().len() as usize
}

fn assert_holds_v2(fleet: &Fleet, device: &Device) {
    assert!(
        fleet.slot_holds(device, Slot::B, "2.0"),
        "slot b does not hold 2.0"
    );
}

fn pack_bytes(server: &StoreServer) -> u64 {
    server
        .served()
        .iter()
        .filter(|s| s.path.starts_with("/packs/"))
        .map(|s| s.range.map_or(0, |(a, b)| b + 1 - a))
        .sum()
}

/// Runs `check` then `install` on `device`; asserts the install fetched from the packs
/// exactly what `check` predicted, in as many requests, and returns that and `check`'s
/// report.
fn install_as_checked(device: &Device, server: &StoreServer) -> (u64, serde_json::Value) {
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    server.clear_log();
    run_ok(device.diffota().arg("install"));
    let fetched = pack_bytes(server);
    assert_eq!(
        fetched,
        check["plan"]["fetch_bytes"].as_u64().unwrap(),
        "check predicted the download"
    );
    let requests = server
        .served()
        .iter()
        .filter(|s| s.path.starts_with("/packs/"))
        .count() as u64;
    assert_eq!(
        requests,
        check["plan"]["fetch_requests"].as_u64().unwrap(),
        "check predicted the requests: {check}"
    );
    (fetched, check)
}

/// Starts `diffota install` on `device` and returns once `server` has seen a pack request.
fn install_until_first_pack_request(device: &Device, server: &FaultServer) -> std::process::Child {
    let child = device
        .diffota()
        .arg("install")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.pack_requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "the install never requested a pack"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// Starts `diffota install` on `device`, waits until `server` has seen a pack request, lets
/// 300 ms of the answer flow, then kills the updater (SIGKILL).
fn kill_install_midway(device: &Device, server: &FaultServer) {
    let mut child = install_until_first_pack_request(device, server);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
}
