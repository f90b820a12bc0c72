//! The device side end to end: `diffota install` with the real binaries against
//! `chunk-server serve` (HTTP and HTTPS) or a misbehaving server on 127.0.0.1, on
//! file-backed A/B devices.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use diffota_format::ranges::plan_ranges;
use diffota_format::Index;
use diffota_tests::faults::{Fault, FaultServer};
use diffota_tests::sample::write_image;
use diffota_tests::*;

const MIB: u64 = 1 << 20;

/// A store with releases 1.0 and 2.0 of an 8 MiB sample image, on channel `stable` at 2.0.
struct Fixture {
    dir: tempfile::TempDir,
    keys: Keys,
    store: PathBuf,
    v1: PathBuf,
    v2: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::generate(dir.path(), "release");
        let store = dir.path().join("store");
        let (v1, v2) = (dir.path().join("v1.img"), dir.path().join("v2.img"));
        write_image(&v1, 8 * MIB, 5, 1).unwrap();
        write_image(&v2, 8 * MIB, 5, 2).unwrap();
        make_release(&store, &keys, "1.0", &v1);
        make_release(&store, &keys, "2.0", &v2);
        set_channel(&store, &keys, "stable", "2.0", &[]);
        Fixture {
            dir,
            keys,
            store,
            v1,
            v2,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A device running 1.0 from slot A (factory-flashed: no stored index).
    fn device(&self, name: &str, slot_size: u64, server_url: &str, extra: &str) -> Device {
        let device = Device::new(&self.path(name), &self.v1, slot_size);
        device.configure(server_url, &[&self.keys.public], extra);
        device
    }

    fn index(&self, version: &str) -> Index {
        store_index(&self.store, version)
    }
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

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_installed(device: &Device, image: &Path) {
    let expected = std::fs::read(image).unwrap();
    assert!(
        device.slot_bytes("b", expected.len()) == expected,
        "slot b does not hold the image"
    );
}

fn assert_running_untouched(device: &Device, fixture: &Fixture) {
    let expected = std::fs::read(&fixture.v1).unwrap();
    assert!(
        device.slot_bytes("a", expected.len()) == expected,
        "the running slot was modified"
    );
}

/// Runs an install that must fail with `message` in its error, leaving slot A untouched
/// and no install recorded.
fn assert_install_fails(device: &Device, fixture: &Fixture, args: &[&str], message: &str) {
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

#[test]
fn v1_to_v2_fetches_exactly_the_missing_chunks() {
    let fixture = Fixture::new();
    let server = StoreServer::start(&fixture.store, &fixture.path("access.log"), None);
    let device = fixture.device("device", 10 * MIB, &server.url, "");

    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    assert_eq!(check["update_available"], true);
    assert_eq!(check["version"], "2.0");
    server.clear_log();

    let stdout = run_ok(device.diffota().arg("install"));
    assert!(stdout.contains("installed 2.0 into slot b"), "{stdout}");
    assert_installed(&device, &fixture.v2);
    assert_running_untouched(&device, &fixture);

    // The pack ranges requested are exactly the merged ranges of the v2 chunks that v1 lacks.
    let (v1, v2) = (fixture.index("1.0"), fixture.index("2.0"));
    let held: HashSet<_> = v1.chunks.iter().map(|c| c.id).collect();
    let missing: Vec<_> = v2
        .chunks
        .iter()
        .filter(|c| !held.contains(&c.id))
        .copied()
        .collect();
    assert!(!missing.is_empty() && missing.len() < v2.chunks.len() / 2);
    let expected: BTreeSet<(String, u64, u64)> =
        plan_ranges(&missing, diffota_format::ranges::DEFAULT_MAX_GAP)
            .iter()
            .map(|r| {
                (
                    format!("/{}", v2.packs[r.pack as usize].store_path()),
                    r.start,
                    r.end - 1,
                )
            })
            .collect();
    let served = server.served();
    let pack_requests: BTreeSet<(String, u64, u64)> = served
        .iter()
        .filter(|s| s.path.starts_with("/packs/"))
        .map(|s| {
            assert_eq!(s.status, 206);
            let (start, end) = s.range.expect("pack requests are range requests");
            (s.path.clone(), start, end)
        })
        .collect();
    assert_eq!(pack_requests, expected);
    assert_eq!(
        check["plan"]["fetch_requests"],
        expected.len() as u64,
        "check predicted the requests"
    );
    let metadata: Vec<_> = served
        .iter()
        .filter(|s| !s.path.starts_with("/packs/"))
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(
        metadata.len(),
        4,
        "channel, index and their signatures: {metadata:?}"
    );

    // Status reports it; installing again is a no-op (slot b now holds 2.0 but a still runs).
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["status", "--json"]))).unwrap();
    assert_eq!(status["state"]["slots"]["b"]["version"], "2.0");
    assert_eq!(status["state"]["last_install"]["result"], "installed");
    assert_eq!(status["running_slot"], "a");
}

#[test]
fn second_install_seeds_from_the_stored_index_and_keeps_chunks_in_place() {
    let fixture = Fixture::new();
    let server = StoreServer::start(&fixture.store, &fixture.path("access.log"), None);
    // A device with garbage in slot A installs 1.0 from nothing, boots it, then installs 2.0.
    let device = fixture.device("device", 10 * MIB, &server.url, "");
    std::fs::write(&device.slot_a, vec![0x5au8; 10 * MIB as usize]).unwrap();
    set_channel(&fixture.store, &fixture.keys, "stable", "1.0", &[]);
    run_ok(device.diffota().arg("install"));
    assert_installed(&device, &fixture.v1);

    device.boot_into("b");
    set_channel(&fixture.store, &fixture.keys, "stable", "2.0", &[]);
    server.clear_log();
    let report: serde_json::Value = serde_json::from_str(
        run_ok(device.diffota().args(["install", "--json"]))
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["outcome"], "installed");
    assert_eq!(report["slot"], "a");
    // Installed and waiting for the reboot: nothing to do (exit status 3), for check too.
    let again = run_exit(device.diffota().args(["install", "--json"]), 3);
    assert!(again.contains("\"pending_reboot\""), "{again}");
    let check = run_exit(device.diffota().arg("check"), 3);
    assert!(check.contains("update available: no"), "{check}");
    let expected = std::fs::read(&fixture.v2).unwrap();
    assert!(device.slot_bytes("a", expected.len()) == expected);
    let copied = report["copied_bytes"].as_u64().unwrap();
    assert!(
        copied > 4 * MIB,
        "most of 2.0 comes from the running slot 1.0 ({copied} bytes)"
    );

    // The running slot changed after its install: the stale stored index is caught by the
    // re-hash, and the affected chunks are fetched instead of copied.
    let v1_index = fixture.index("1.0");
    let v2_ids: HashSet<_> = fixture.index("2.0").chunks.iter().map(|c| c.id).collect();
    let shared = v1_index
        .chunks
        .iter()
        .find(|c| v2_ids.contains(&c.id) && c.offset > MIB)
        .expect("a shared chunk");
    let mut slot_b = std::fs::read(&device.slot_b).unwrap();
    slot_b[shared.offset as usize + 10] ^= 0xff;
    std::fs::write(&device.slot_b, &slot_b).unwrap();
    std::fs::write(&device.slot_a, vec![0u8; 10 * MIB as usize]).unwrap();
    server.clear_log();
    run_ok(device.diffota().args(["install", "--force"]));
    assert!(
        device.slot_bytes("a", expected.len()) == expected,
        "slot a holds 2.0 despite the modified seed"
    );
    let fetched_that_chunk = server.served().iter().any(|s| {
        s.range.is_some_and(|(start, end)| {
            let v2 = fixture.index("2.0");
            let entry = v2.chunks.iter().find(|c| c.id == shared.id).unwrap();
            start <= entry.pack_offset
                && entry.pack_offset + u64::from(entry.compressed_length) - 1 <= end
        })
    });
    assert!(
        fetched_that_chunk,
        "the chunk whose seed was modified was fetched"
    );
}

#[test]
fn https_with_a_test_ca() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let fixture = Fixture::new();
    let ca = TestCa::create(fixture.dir.path());
    let server = StoreServer::start(
        &fixture.store,
        &fixture.path("access.log"),
        Some((&ca.server_cert, &ca.server_key)),
    );
    assert!(server.url.starts_with("https://"));
    let device = fixture.device(
        "device",
        10 * MIB,
        &server.url,
        &format!("[http]\nca_file = {:?}\n", ca.ca_cert.display().to_string()),
    );
    run_ok(device.diffota().arg("install"));
    assert_installed(&device, &fixture.v2);

    // Without the CA the server is not trusted.
    let untrusting = fixture.device("untrusting", 10 * MIB, &server.url, "[http]\nretries = 0\n");
    assert_install_fails(&untrusting, &fixture, &[], "certificate");
}

#[test]
fn file_store_and_explicit_index_path() {
    let fixture = Fixture::new();
    let device = fixture.device(
        "device",
        10 * MIB,
        &format!("file://{}", fixture.store.display()),
        "",
    );
    run_ok(device.diffota().arg("install"));
    assert_installed(&device, &fixture.v2);

    let plain = fixture.device("plain", 10 * MIB, "/nonexistent", "");
    let index = fixture.store.join("releases/2.0/rootfs.didx");
    run_ok(plain.diffota().arg("install").arg(&index));
    assert_installed(&plain, &fixture.v2);
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

/// One state-changing command at a time: while an install runs (held up by a stalling
/// server), a second install and a mark-good are refused as busy (exit 5) with the running
/// install named; once it is killed, the kernel has released the lock and an install runs.
#[test]
fn a_second_install_is_refused_as_busy_while_one_runs() {
    let fixture = Fixture::new();
    let stalling = FaultServer::start(&fixture.store, Fault::StallAfterBytes(0));
    let device = fixture.device(
        "busy",
        10 * MIB,
        &stalling.url,
        "[http]\nstall_timeout_secs = 600\n",
    );
    let mut first = install_until_first_pack_request(&device, &stalling);
    for command in ["install", "mark-good"] {
        let output = run(device.diffota().arg(command));
        assert_eq!(
            output.status.code(),
            Some(5),
            "{command}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains("busy") && message.contains(&format!("pid {}", first.id())),
            "{command}: {message}"
        );
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let good = StoreServer::start(&fixture.store, &fixture.path("access.log"), None);
    device.configure(&good.url, &[&fixture.keys.public], "");
    run_ok(device.diffota().arg("install"));
}

#[test]
fn sigkill_during_install_then_resume_without_downloading_again() {
    let fixture = Fixture::new();
    let good = StoreServer::start(&fixture.store, &fixture.path("access.log"), None);
    let (v1, v2) = (fixture.index("1.0"), fixture.index("2.0"));
    let held: HashSet<_> = v1.chunks.iter().map(|c| c.id).collect();
    let mut missing: Vec<_> = v2
        .chunks
        .iter()
        .filter(|c| !held.contains(&c.id))
        .copied()
        .collect();
    missing.sort_by_key(|c| c.pack_offset);
    let ranges = plan_ranges(&missing, diffota_format::ranges::DEFAULT_MAX_GAP);
    assert_eq!(
        ranges.len(),
        1,
        "the chunks 2.0 added sit together in its pack"
    );
    let (range_start, range_end) = (ranges[0].start, ranges[0].end);
    let length = (range_end - range_start) as usize;

    // Kill the updater (SIGKILL) while the server has sent none, a third, and two thirds of
    // the range; then run it again against a good server.
    for sent in [0, length / 3, length * 2 / 3] {
        let stalling = FaultServer::start(&fixture.store, Fault::StallAfterBytes(sent));
        let device = fixture.device(
            &format!("device-{sent}"),
            10 * MIB,
            &stalling.url,
            "[http]\nstall_timeout_secs = 600\n",
        );
        kill_install_midway(&device, &stalling);
        assert_running_untouched(&device, &fixture);
        // `status` says what happened to slot b, and no trial is pending.
        let status = run_ok(device.diffota().arg("status"));
        assert!(
            status.contains("slot b: being written with 2.0") && !status.contains("trial pending"),
            "{status}"
        );

        device.configure(&good.url, &[&fixture.keys.public], "");
        good.clear_log();
        let stdout = run_ok(device.diffota().arg("install"));
        assert!(stdout.contains("installed 2.0"), "{stdout}");
        assert_installed(&device, &fixture.v2);
        assert_running_untouched(&device, &fixture);

        // Chunks that arrived whole before the kill were written and are not fetched again.
        let first_unwritten = missing
            .iter()
            .find(|c| {
                (c.pack_offset + u64::from(c.compressed_length) - range_start) as usize > sent
            })
            .map(|c| c.pack_offset)
            .unwrap();
        let fetched: Vec<_> = good
            .served()
            .iter()
            .filter(|s| s.path.starts_with("/packs/"))
            .filter_map(|s| s.range)
            .collect();
        assert_eq!(
            fetched,
            vec![(first_unwritten, range_end - 1)],
            "after {sent} bytes had arrived"
        );
        if sent > 0 {
            assert!(
                first_unwritten > range_start,
                "something was kept after {sent} bytes"
            );
        }
    }
}

#[test]
fn misbehaving_servers() {
    let fixture = Fixture::new();
    let quick = "[http]\nretries = 1\nstall_timeout_secs = 1\n";

    // Tampered chunk bytes: refused, nothing activated.
    let server = FaultServer::start(&fixture.store, Fault::TamperPacks);
    assert_install_fails(
        &fixture.device("tamper", 10 * MIB, &server.url, quick),
        &fixture,
        &[],
        "chunk",
    );

    // A truncated response is retried and then reported.
    let server = FaultServer::start(&fixture.store, Fault::Truncate);
    assert_install_fails(
        &fixture.device("truncate", 10 * MIB, &server.url, quick),
        &fixture,
        &[],
        "end of file",
    );

    // A missing pack.
    let server = FaultServer::start(&fixture.store, Fault::PackNotFound);
    assert_install_fails(
        &fixture.device("404", 10 * MIB, &server.url, quick),
        &fixture,
        &[],
        "404",
    );

    // A server that stalls times out.
    let server = FaultServer::start(&fixture.store, Fault::Stall);
    assert_install_fails(
        &fixture.device("stall", 10 * MIB, &server.url, quick),
        &fixture,
        &[],
        "timed out",
    );

    // More bytes than asked: the excess is never read, the install succeeds.
    let server = FaultServer::start(&fixture.store, Fault::ExtraBytes);
    let device = fixture.device("extra", 10 * MIB, &server.url, quick);
    run_ok(device.diffota().arg("install"));
    assert_installed(&device, &fixture.v2);

    // 500 twice, then success: the retries carry it.
    let server = FaultServer::start(&fixture.store, Fault::FailFirst(2));
    let device = fixture.device(
        "retry",
        10 * MIB,
        &server.url,
        "[http]\nretries = 3\nconcurrency = 1\n",
    );
    run_ok(device.diffota().arg("install"));
    assert_installed(&device, &fixture.v2);

    // A server that ignores Range still works, with a warning.
    let server = FaultServer::start(&fixture.store, Fault::IgnoreRange);
    let device = fixture.device("norange", 10 * MIB, &server.url, quick);
    let output = run(device.diffota().arg("install"));
    assert!(output.status.success());
    assert!(stderr(&output).contains("ignores Range"));
    assert_installed(&device, &fixture.v2);
}

/// A device whose state records `version` as running in slot A.
fn record_running_version(device: &Device, version: &str) {
    std::fs::create_dir_all(&device.state).unwrap();
    std::fs::write(
        device.state.join("state.json"),
        format!(
            r#"{{"format":1,"slots":{{"a":{{"version":"{version}","image_hash":"00","image_length":1,"installed_at":0}}}}}}"#
        ),
    )
    .unwrap();
}

/// Pre-releases sort before their release: a device on 1.0~rc1 takes 1.0, a device on 1.0
/// refuses 1.0~rc1 (and 1.0-rc1) as a downgrade.
#[test]
fn pre_releases_are_older_than_their_release() {
    let fixture = Fixture::new();
    let rc = fixture.path("rc.img");
    write_image(&rc, 8 * MIB, 5, 3).unwrap();
    make_release(&fixture.store, &fixture.keys, "1.0~rc1", &rc);
    make_release(&fixture.store, &fixture.keys, "1.0-rc1", &rc);
    set_channel(&fixture.store, &fixture.keys, "final", "1.0", &[]);
    set_channel(&fixture.store, &fixture.keys, "tilde-rc", "1.0~rc1", &[]);
    set_channel(&fixture.store, &fixture.keys, "hyphen-rc", "1.0-rc1", &[]);
    let url = format!("file://{}", fixture.store.display());

    let on_rc = fixture.device("on-rc", 10 * MIB, &url, "");
    record_running_version(&on_rc, "1.0~rc1");
    run_ok(on_rc.diffota().args(["install", "--channel", "final"]));
    assert_installed(&on_rc, &fixture.v1);

    for channel in ["tilde-rc", "hyphen-rc"] {
        let on_final = fixture.device(&format!("on-final-{channel}"), 10 * MIB, &url, "");
        record_running_version(&on_final, "1.0");
        assert_install_fails(
            &on_final,
            &fixture,
            &["--channel", channel],
            "older than 1.0",
        );
    }
}

#[test]
fn refused_releases_and_bad_device_input() {
    let fixture = Fixture::new();
    let server = StoreServer::start(&fixture.store, &fixture.path("access.log"), None);
    let url = server.url.clone();

    // An index whose bytes no longer match its signature.
    let tampered_store = fixture.path("tampered-store");
    run_ok(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(&fixture.store)
            .arg(&tampered_store),
    );
    let index_path = tampered_store.join("releases/2.0/rootfs.didx");
    let mut index = std::fs::read(&index_path).unwrap();
    index[30] ^= 1;
    std::fs::write(&index_path, index).unwrap();
    let tampered = fixture.device(
        "tampered",
        10 * MIB,
        &format!("file://{}", tampered_store.display()),
        "",
    );
    assert_install_fails(&tampered, &fixture, &[], "signature does not verify");

    // Signed by a key the device does not trust.
    let other = Keys::generate(fixture.dir.path(), "other");
    let untrusting = Device::new(&fixture.path("untrusting"), &fixture.v1, 10 * MIB);
    untrusting.configure(&url, &[&other.public], "");
    assert_install_fails(&untrusting, &fixture, &[], "not trusted");

    // A release for another board behind a valid channel.
    let foreign = fixture.path("foreign.img");
    write_image(&foreign, 2 * MIB, 9, 1).unwrap();
    make_release_for(
        &fixture.store,
        &fixture.keys,
        "3.0",
        "other-board",
        &foreign,
    );
    set_channel(&fixture.store, &fixture.keys, "foreign", "3.0", &[]);
    let device = fixture.device("foreign", 10 * MIB, &url, "channel = \"foreign\"\n");
    let text = std::fs::read_to_string(&device.config)
        .unwrap()
        .replace("channel = \"foreign\"\n", "");
    std::fs::write(
        &device.config,
        text.replacen("compatible", "channel = \"foreign\"\ncompatible", 1),
    )
    .unwrap();
    assert_install_fails(&device, &fixture, &[], "other-board");

    // Downgrade: the device runs 2.0 (recorded in its state); 1.0 is refused unless allowed.
    set_channel(&fixture.store, &fixture.keys, "old", "1.0", &[]);
    let device = fixture.device("downgrade", 10 * MIB, &url, "");
    record_running_version(&device, "2.0");
    assert_install_fails(&device, &fixture, &["--channel", "old"], "older than 2.0");
    let refused = run(device.diffota().args(["install", "--channel", "old"]));
    assert_eq!(
        refused.status.code(),
        Some(4),
        "a downgrade is refused, not an error"
    );
    run_ok(
        device
            .diffota()
            .args(["install", "--channel", "old", "--allow-downgrade"]),
    );
    assert_installed(&device, &fixture.v1);

    // An image larger than the slot.
    let small = fixture.device("small", 8 * MIB - 4096, &url, "");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&small.slot_a)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    // `check` predicts it: no update available, and the decision names the slot's size.
    let output = run(small.diffota().args(["check", "--json"]));
    assert_eq!(
        output.status.code(),
        Some(1),
        "check exits 1: install would fail"
    );
    let check: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(check["update_available"], false, "{check}");
    let decision = check["decision"].as_str().unwrap();
    assert!(
        decision.starts_with("cannot install: slot b (")
            && decision.contains("but the image needs"),
        "{check}"
    );
    assert_install_fails(&small, &fixture, &[], "but the image needs");

    // The target is the running slot (slot b is a link to slot a).
    let same = fixture.device("same", 10 * MIB, &url, "");
    std::fs::remove_file(&same.slot_b).unwrap();
    std::os::unix::fs::symlink(&same.slot_a, &same.slot_b).unwrap();
    assert_install_fails(&same, &fixture, &[], "it is the running slot");

    // A corrupt state file.
    let corrupt = fixture.device("corrupt", 10 * MIB, &url, "");
    std::fs::create_dir_all(&corrupt.state).unwrap();
    std::fs::write(corrupt.state.join("state.json"), "{ truncated").unwrap();
    let output = run(corrupt.diffota().arg("install"));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("corrupt state file"),
        "{}",
        stderr(&output)
    );
    assert_running_untouched(&corrupt, &fixture);

    // A config with a typo names the key.
    let typo = fixture.device("typo", 10 * MIB, &url, "[http]\nconcurrenzy = 2\n");
    let output = run(typo.diffota().arg("check"));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("concurrenzy"),
        "{}",
        stderr(&output)
    );

    // An expired channel file is refused with its expiry named, and nothing is written.
    set_channel(
        &fixture.store,
        &fixture.keys,
        "short",
        "2.0",
        &["--expires", "1s"],
    );
    std::thread::sleep(Duration::from_millis(2100));
    let device = fixture.device("expired", 10 * MIB, &url, "");
    assert_install_fails(&device, &fixture, &["--channel", "short"], "expired at");
    assert!(
        std::fs::read(&device.slot_b)
            .unwrap()
            .iter()
            .all(|&b| b == 0),
        "slot b untouched"
    );
}

/// Releases 1.0 and 2.0 where 2.0 edits bytes scattered over 3 MiB of 1.0 (a rebuilt
/// binary), 2.0 made with `--delta-from 1.0 --image-frames`, on channel `stable`.
struct DeltaFixture {
    dir: tempfile::TempDir,
    keys: Keys,
    store: PathBuf,
    v1: PathBuf,
    v2: Vec<u8>,
}

impl DeltaFixture {
    fn new() -> DeltaFixture {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::generate(dir.path(), "release");
        let v1 = dir.path().join("v1.img");
        write_image(&v1, 8 * MIB, 5, 1).unwrap();
        let mut v2 = std::fs::read(&v1).unwrap();
        for at in (2 * MIB as usize..5 * MIB as usize).step_by(4096) {
            v2[at] ^= 0x5a;
        }
        let v2_path = dir.path().join("v2.img");
        std::fs::write(&v2_path, &v2).unwrap();
        let store = dir.path().join("store");
        make_release(&store, &keys, "1.0", &v1);
        run_ok(
            make_command(&store, &keys, "2.0", "test-board", &v2_path)
                .args(["--delta-from", "1.0", "--image-frames"])
                .env("SOURCE_DATE_EPOCH", "1790000000"),
        );
        set_channel(&store, &keys, "stable", "2.0", &[]);
        DeltaFixture {
            dir,
            keys,
            store,
            v1,
            v2,
        }
    }

    fn index(&self, version: &str) -> Index {
        store_index(&self.store, version)
    }

    fn plain_bytes_lacking(&self, from: &str, to: &str) -> u64 {
        plain_bytes_lacking(&self.store, from, to)
    }

    fn device(&self, name: &str, running: &Path, server_url: &str, extra: &str) -> Device {
        let device = Device::new(&self.dir.path().join(name), running, 10 * MIB);
        device.configure(server_url, &[&self.keys.public], extra);
        device
    }

    fn assert_installed(&self, device: &Device) {
        assert!(
            device.slot_bytes("b", self.v2.len()) == self.v2,
            "slot b does not hold 2.0"
        );
    }
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
/// exactly what `check` predicted, and returns that and `check`'s report.
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
    (fetched, check)
}

/// A release made with `--delta-from`: a device on the older release (factory-flashed, so it
/// cuts its running slot) rebuilds the changed chunks from delta frames against chunks of its
/// running slot, downloads less than the plain frames of those chunks, and `check` predicts
/// the download exactly. A second device whose running slot lacks the bases (another image)
/// takes the plain frames and installs the same bytes.
#[test]
fn delta_frames_rebuild_edited_chunks_from_the_running_slot() {
    let fixture = DeltaFixture::new();
    let index = fixture.index("2.0");
    let plain_bytes = fixture.plain_bytes_lacking("1.0", "2.0");

    let server = StoreServer::start(&fixture.store, &fixture.dir.path().join("access.log"), None);
    let device = fixture.device("device", &fixture.v1, &server.url, "");
    let (fetched, check) = install_as_checked(&device, &server);
    assert!(
        check["plan"]["delta_frames"].as_u64().unwrap() > 0,
        "{check}"
    );
    fixture.assert_installed(&device);
    assert!(
        fetched * 4 < plain_bytes,
        "delta frames {fetched} bytes against plain frames {plain_bytes}"
    );

    // Without the bases (its running slot holds another image): plain and image frames, same
    // result.
    let other = fixture.dir.path().join("other.img");
    write_image(&other, 8 * MIB, 77, 1).unwrap();
    let stranger = fixture.device("stranger", &other, &server.url, "");
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(stranger.diffota().args(["check", "--json"]))).unwrap();
    server.clear_log();
    run_ok(stranger.diffota().arg("install"));
    fixture.assert_installed(&stranger);
    let stranger_bytes = pack_bytes(&server);
    assert_eq!(
        stranger_bytes,
        check["plan"]["fetch_bytes"].as_u64().unwrap(),
        "check predicted the stranger's download (image frames, no delta frame with bases)"
    );

    // A wiped running slot: the image frames, which cost less than the plain frames of
    // every chunk and no more than the image frames themselves; check predicts it.
    let image_frames: u64 = index
        .deltas
        .frames
        .iter()
        .filter(|f| f.bases.is_empty())
        .map(|f| u64::from(f.compressed_length))
        .sum();
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
    let wiped = fixture.device("wiped", &zeros, &server.url, "");
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(wiped.diffota().args(["check", "--json"]))).unwrap();
    assert!(
        check["plan"]["delta_frames"].as_u64().unwrap() > 0,
        "{check}"
    );
    server.clear_log();
    run_ok(wiped.diffota().arg("install"));
    fixture.assert_installed(&wiped);
    let fetched = pack_bytes(&server);
    assert_eq!(fetched, check["plan"]["fetch_bytes"].as_u64().unwrap());
    assert!(
        fetched <= image_frames && fetched < plain_all && fetched <= stranger_bytes,
        "wiped slot fetched {fetched}, image frames {image_frames}, plain frames {plain_all}"
    );
}

/// New content that occurs twice in a release, the second time with small edits (a new
/// library and a rebuilt copy of it): the second copy's frame names chunks of the first as
/// bases (siblings), which no old release holds. A device rebuilds the first copy, reads it
/// back from the slot it is writing, and builds the second on it: it downloads little more
/// than the first copy, `check` predicts that exactly, and the slot holds the release.
#[test]
fn a_frame_builds_on_new_chunks_an_earlier_frame_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::generate(dir.path(), "release");
    let v1 = dir.path().join("v1.img");
    write_image(&v1, 8 * MIB, 5, 1).unwrap();
    let mut v2 = std::fs::read(&v1).unwrap();
    let fresh = noise(MIB as usize, 0x2545_f491_4f6c_dd1d);
    let rebuilt = edited(&edited(&fresh, 0), 2048);
    let (first, second) = (MIB as usize, 5 * MIB as usize);
    v2[first..first + fresh.len()].copy_from_slice(&fresh);
    v2[second..second + rebuilt.len()].copy_from_slice(&rebuilt);
    let v2_path = dir.path().join("v2.img");
    std::fs::write(&v2_path, &v2).unwrap();
    let store = dir.path().join("store");
    make_release(&store, &keys, "1.0", &v1);
    run_ok(
        make_command(&store, &keys, "2.0", "test-board", &v2_path).args(["--delta-from", "1.0"]),
    );
    set_channel(&store, &keys, "stable", "2.0", &[]);
    let (old, new) = (store_index(&store, "1.0"), store_index(&store, "2.0"));
    let old_ids: HashSet<_> = old.chunks.iter().map(|c| c.id).collect();
    let new_ids: HashSet<_> = new.chunks.iter().map(|c| c.id).collect();
    assert!(
        new.deltas
            .bases
            .iter()
            .any(|b| !old_ids.contains(&b.id) && new_ids.contains(&b.id)),
        "some frame builds on a chunk 2.0 added"
    );
    let plain_bytes = plain_bytes_lacking(&store, "1.0", "2.0");

    let server = StoreServer::start(&store, &dir.path().join("access.log"), None);
    let device = Device::new(&dir.path().join("device"), &v1, 10 * MIB);
    device.configure(&server.url, &[&keys.public], "");
    let (fetched, _) = install_as_checked(&device, &server);
    assert!(
        device.slot_bytes("b", v2.len()) == v2,
        "slot b does not hold 2.0"
    );
    // Both copies as plain frames cost over 2 MiB (the content does not compress); the first
    // copy alone 1 MiB.
    assert!(
        fetched < MIB + MIB / 4 && fetched * 3 < plain_bytes * 2,
        "fetched {fetched} bytes, plain frames {plain_bytes}"
    );
}

/// `xorshift` noise: content no release shares by chance.
fn noise(length: usize, mut state: u64) -> Vec<u8> {
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// `content` with one byte changed every 4 KiB from `first`.
fn edited(content: &[u8], first: usize) -> Vec<u8> {
    let mut out = content.to_vec();
    for at in (first..out.len()).step_by(4096) {
        out[at] ^= 0x5a;
    }
    out
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
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::generate(dir.path(), "release");
    let (first, data, second) = (MIB as usize, 5 * MIB as usize / 2, 5 * MIB as usize);
    let library = noise(MIB as usize, 0x2545_f491_4f6c_dd1d);
    let rebuilt = edited(&library, 0);
    let rebuilt_again = edited(&rebuilt, 2048);
    let new_data = noise(3 * MIB as usize / 2, 0x9e37_79b9_7f4a_7c15);
    let v1_path = dir.path().join("v1.img");
    write_image(&v1_path, 8 * MIB, 5, 1).unwrap();
    let mut v1 = std::fs::read(&v1_path).unwrap();
    v1[first..first + library.len()].copy_from_slice(&library);
    std::fs::write(&v1_path, &v1).unwrap();
    let mut v3 = v1.clone();
    v3[data..data + new_data.len()].copy_from_slice(&new_data);
    v3[second..second + rebuilt_again.len()].copy_from_slice(&rebuilt_again);
    let mut v2 = v3.clone();
    v2[first..first + rebuilt.len()].copy_from_slice(&rebuilt);
    let store = dir.path().join("store");
    make_release(&store, &keys, "1.0", &v1_path);
    for (version, from, image) in [("2.0", "1.0", &v2), ("3.0", "2.0", &v3)] {
        let path = dir.path().join(format!("{version}.img"));
        std::fs::write(&path, image).unwrap();
        run_ok(
            make_command(&store, &keys, version, "test-board", &path).args(["--delta-from", from]),
        );
    }
    let (v1_index, v2_index, v3_index) = (
        store_index(&store, "1.0"),
        store_index(&store, "2.0"),
        store_index(&store, "3.0"),
    );
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

    set_channel(&store, &keys, "stable", "3.0", &[]);
    let server = StoreServer::start(&store, &dir.path().join("access.log"), None);
    let device = Device::new(&dir.path().join("device"), &v1_path, 10 * MIB);
    device.configure(&server.url, &[&keys.public], "");
    let (fetched, _) = install_as_checked(&device, &server);
    assert!(device.slot_bytes("b", v3.len()) == v3, "slot b holds 3.0");
    // Noise does not compress: the plain frames of what 1.0 lacks cost 2.5 MiB, and the
    // fallbacks save most of the second copy's 1 MiB.
    let plain_bytes = plain_bytes_lacking(&store, "1.0", "3.0");
    assert!(
        fetched + 3 * MIB / 4 < plain_bytes,
        "two behind: fetched {fetched} bytes, plain frames {plain_bytes}"
    );
}

/// A device that installed 1.0 through diffota stores its index; the store holds 2.0's index
/// as changes against it (`rootfs.didx.from-1.0`), and the device fetches that instead of
/// the whole index, rebuilds the signed bytes and installs 2.0. `chunk-server verify` checks
/// the delta; a damaged one is named there, and a device then falls back to the whole index.
#[test]
fn index_delta_replaces_the_whole_index_for_a_device_on_the_older_release() {
    let fixture = DeltaFixture::new();
    let delta_path = fixture.store.join("releases/2.0/rootfs.didx.from-1.0");
    let index_length = std::fs::metadata(fixture.store.join("releases/2.0/rootfs.didx"))
        .unwrap()
        .len();
    let delta_length = std::fs::metadata(&delta_path).unwrap().len();
    assert!(
        delta_length * 3 < index_length,
        "index delta {delta_length} bytes, index {index_length}"
    );
    let verified = run_ok(
        chunk_server()
            .args(["verify", "--public-key"])
            .arg(&fixture.keys.public)
            .arg(&fixture.store),
    );
    assert!(
        verified.contains("1 index deltas, 1 channels checked: 0 problems"),
        "{verified}"
    );

    let server = StoreServer::start(&fixture.store, &fixture.dir.path().join("access.log"), None);
    let other = fixture.dir.path().join("other.img");
    write_image(&other, 8 * MIB, 77, 1).unwrap();
    // A device that installed 1.0 through diffota and booted it: slot b runs 1.0.
    let device_on_1_0 = |name: &str| {
        let device = fixture.device(name, &other, &server.url, "");
        run_ok(
            device
                .diffota()
                .arg("install")
                .arg(format!("{}/releases/1.0/rootfs.didx", server.url)),
        );
        device.boot_into("b");
        run_ok(device.diffota().arg("mark-good"));
        device
    };
    let index_requests = |server: &StoreServer| -> Vec<String> {
        server
            .served()
            .into_iter()
            .filter(|s| s.path.starts_with("/releases/2.0/") && !s.path.ends_with(".minisig"))
            .map(|s| s.path)
            .collect()
    };

    let device = device_on_1_0("device");
    server.clear_log();
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    assert!(
        check["metadata_bytes"].as_u64().unwrap() < index_length,
        "{check}"
    );
    server.clear_log();
    run_ok(device.diffota().arg("install"));
    assert_eq!(
        device.slot_bytes("a", fixture.v2.len()),
        fixture.v2,
        "slot a holds 2.0"
    );
    assert_eq!(
        index_requests(&server),
        ["/releases/2.0/rootfs.didx.from-1.0"],
        "only the index delta was fetched"
    );
    // `chunk-server diff` predicted it: index delta, delta frames and requests, to the byte.
    let diff: serde_json::Value = serde_json::from_str(&run_ok(
        chunk_server()
            .args(["diff", "--json"])
            .arg(fixture.store.join("releases/1.0/rootfs.didx"))
            .arg(fixture.store.join("releases/2.0/rootfs.didx")),
    ))
    .unwrap();
    let served: Vec<Served> = server
        .served()
        .into_iter()
        .filter(|s| !s.path.starts_with("/channels/"))
        .collect();
    assert_eq!(diff["index_delta"], true, "{diff}");
    assert!(diff["delta_frames"].as_u64().unwrap() > 0, "{diff}");
    assert_eq!(
        diff["download_bytes"].as_u64().unwrap(),
        served.iter().map(|s| s.bytes).sum::<u64>(),
        "{diff}"
    );
    assert_eq!(diff["requests"].as_u64().unwrap(), served.len() as u64);

    // A damaged delta: verify names it; a device takes the whole index and installs.
    let mut damaged = std::fs::read(&delta_path).unwrap();
    let last = damaged.len() - 8;
    damaged[last] ^= 0x55;
    std::fs::write(&delta_path, &damaged).unwrap();
    let output = run(chunk_server()
        .args(["verify", "--public-key"])
        .arg(&fixture.keys.public)
        .arg(&fixture.store));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("rootfs.didx.from-1.0")
            || stderr(&output).contains("rootfs.didx.from-1.0"),
        "{}",
        stderr(&output)
    );
    let device = device_on_1_0("damaged");
    server.clear_log();
    run_ok(device.diffota().arg("install"));
    assert_eq!(device.slot_bytes("a", fixture.v2.len()), fixture.v2);
    assert_eq!(
        index_requests(&server),
        [
            "/releases/2.0/rootfs.didx.from-1.0",
            "/releases/2.0/rootfs.didx"
        ],
        "the whole index after the damaged delta"
    );
}

/// 3.0 made with `--delta-from 2.0` inherits 2.0's delta frames whose chunks it still has: a
/// device two releases behind (on 1.0) rebuilds what 2.0 added from them against its own
/// chunks, instead of taking those chunks' plain frames, and `chunk-server diff` says so.
#[test]
fn a_device_two_releases_behind_uses_inherited_frames() {
    let fixture = DeltaFixture::new();
    let mut v3 = fixture.v2.clone();
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

    let plain_bytes = fixture.plain_bytes_lacking("1.0", "3.0");
    let server = StoreServer::start(&fixture.store, &fixture.dir.path().join("access.log"), None);
    let device = fixture.device("two-behind", &fixture.v1, &server.url, "");
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    server.clear_log();
    run_ok(device.diffota().arg("install"));
    assert!(device.slot_bytes("b", v3.len()) == v3, "slot b holds 3.0");
    let fetched = pack_bytes(&server);
    assert_eq!(fetched, check["plan"]["fetch_bytes"].as_u64().unwrap());
    assert!(
        fetched * 2 < plain_bytes,
        "two behind: {fetched} bytes against {plain_bytes} of plain frames"
    );
    let diff: serde_json::Value = serde_json::from_str(&run_ok(
        chunk_server()
            .args(["diff", "--json"])
            .arg(fixture.store.join("releases/1.0/rootfs.didx"))
            .arg(fixture.store.join("releases/3.0/rootfs.didx")),
    ))
    .unwrap();
    assert!(diff["delta_frames"].as_u64().unwrap() > 0, "{diff}");
}

/// An offline bundle for devices on 1.0 carries the delta frames such a device uses instead
/// of the plain frames of the chunks they rebuild: it is smaller than those plain frames, and
/// a device on 1.0 with no store reachable installs 2.0 from it alone.
#[test]
fn bundle_for_the_older_release_carries_delta_frames() {
    let fixture = DeltaFixture::new();
    let plain_bytes = fixture.plain_bytes_lacking("1.0", "2.0");
    let out = fixture.dir.path().join("update.dfb");
    let summary: serde_json::Value = serde_json::from_str(&run_ok(
        chunk_server()
            .args([
                "bundle", "--json", "--to", "2.0", "--from", "1.0", "--store",
            ])
            .arg(&fixture.store)
            .arg(&out),
    ))
    .unwrap();
    assert!(
        summary["bundled_delta_frames"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let bundle_bytes = std::fs::metadata(&out).unwrap().len();
    assert!(
        bundle_bytes < plain_bytes,
        "bundle {bundle_bytes} bytes, plain frames of the added chunks {plain_bytes}"
    );
    let device = fixture.device("offline", &fixture.v1, "/nonexistent-store", "");
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
    fixture.assert_installed(&device);
}

/// With delta frames in play: a SIGKILL halfway through the frames, then a resume that
/// fetches less than the whole again; tampered frames refused with nothing activated; a
/// truncated answer retried and reported; 500s carried by retries.
#[test]
fn delta_frames_survive_sigkill_and_misbehaving_servers() {
    let fixture = DeltaFixture::new();
    let good = StoreServer::start(&fixture.store, &fixture.dir.path().join("access.log"), None);
    // What a device on 1.0 fetches: the delta frames it chooses (not the image frames).
    let planner = fixture.device("planner", &fixture.v1, &good.url, "");
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(planner.diffota().args(["check", "--json"]))).unwrap();
    let frames_bytes = check["plan"]["fetch_bytes"].as_u64().unwrap();

    let stalling = FaultServer::start(
        &fixture.store,
        Fault::StallAfterBytes(frames_bytes as usize * 2 / 3),
    );
    let device = fixture.device(
        "killed",
        &fixture.v1,
        &stalling.url,
        "[http]\nstall_timeout_secs = 600\n",
    );
    kill_install_midway(&device, &stalling);
    assert!(device.slot_bytes("a", 8 * MIB as usize) == std::fs::read(&fixture.v1).unwrap());
    device.configure(&good.url, &[&fixture.keys.public], "");
    good.clear_log();
    run_ok(device.diffota().arg("install"));
    fixture.assert_installed(&device);
    let resumed = pack_bytes(&good);
    assert!(
        resumed > 0 && resumed < frames_bytes,
        "resumed with {resumed} bytes of {frames_bytes}"
    );

    let quick = "[http]\nretries = 1\nstall_timeout_secs = 1\n";
    for (name, fault, message) in [
        ("tamper", Fault::TamperPacks, "chunk"),
        ("truncate", Fault::Truncate, "end of file"),
    ] {
        let server = FaultServer::start(&fixture.store, fault);
        let device = fixture.device(name, &fixture.v1, &server.url, quick);
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
    let device = fixture.device(
        "retry",
        &fixture.v1,
        &server.url,
        "[http]\nretries = 3\nconcurrency = 1\n",
    );
    run_ok(device.diffota().arg("install"));
    fixture.assert_installed(&device);
}
