//! Installs that go as planned: exactly the missing chunks fetched, the stored index
//! seeding the next install, HTTPS with a test CA, a file:// store and an explicit index.

use super::*;

#[test]
fn v1_to_v2_fetches_exactly_the_missing_chunks() {
    let fixture = fixture();
    let server = fixture.serve();
    let device = fixture.device("device", "1.0", 10 * MIB, &server.url, |_| {});

    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    assert_eq!(check["update_available"], true);
    assert_eq!(check["version"], "2.0");
    server.clear_log();

    let stdout = run_ok(device.diffota().arg("install"));
    assert!(stdout.contains("installed 2.0 into slot b"), "{stdout}");
    assert_installed(&device, fixture.image("2.0"));
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
    // With no stored index the device scanned its running slot, writing every chunk of 2.0
    // it found there as it went: each counted once, none fetched.
    let held_bytes: u64 = v2
        .chunks
        .iter()
        .filter(|c| held.contains(&c.id))
        .map(|c| u64::from(c.length))
        .sum();
    assert!(
        stdout.contains(&format!(
            "({held_bytes} copied from the running slot, 0 already in place)"
        )),
        "{stdout}"
    );
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
    let fixture = fixture();
    let server = fixture.serve();
    // A device with garbage in slot A installs 1.0 from nothing, boots it, then installs 2.0.
    let device = fixture.device("device", "1.0", 10 * MIB, &server.url, |_| {});
    std::fs::write(&device.slot_a, vec![0x5au8; 10 * MIB as usize]).unwrap();
    set_channel(&fixture.store, &fixture.keys, "stable", "1.0", &[]);
    run_ok(device.diffota().arg("install"));
    assert_installed(&device, fixture.image("1.0"));

    device.boot_into(Slot::B);
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
    let expected = std::fs::read(fixture.image("2.0")).unwrap();
    assert!(device.slot_bytes(Slot::A, expected.len()) == expected);
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
        device.slot_bytes(Slot::A, expected.len()) == expected,
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
    let fixture = fixture();
    let ca = TestCa::create(fixture.dir.path());
    let server = StoreServer::start(
        &fixture.store,
        &fixture.path("access.log"),
        Some((&ca.server_cert, &ca.server_key)),
    );
    assert!(server.url.starts_with("https://"));
    let device = fixture.device("device", "1.0", 10 * MIB, &server.url, |config| {
        config.http.ca_file = Some(ca.ca_cert.clone())
    });
    run_ok(device.diffota().arg("install"));
    assert_installed(&device, fixture.image("2.0"));

    // Without the CA the server is not trusted.
    let untrusting = fixture.device("untrusting", "1.0", 10 * MIB, &server.url, |config| {
        config.http.retries = 0
    });
    assert_install_fails(&untrusting, &fixture, &[], "certificate");
}

#[test]
fn file_store_and_explicit_index_path() {
    let fixture = fixture();
    let device = fixture.device(
        "device",
        "1.0",
        10 * MIB,
        &format!("file://{}", fixture.store.display()),
        |_| {},
    );
    run_ok(device.diffota().arg("install"));
    assert_installed(&device, fixture.image("2.0"));

    let plain = fixture.device("plain", "1.0", 10 * MIB, "/nonexistent", |_| {});
    let index = fixture.store.join("releases/2.0/rootfs.didx");
    run_ok(plain.diffota().arg("install").arg(&index));
    assert_installed(&plain, fixture.image("2.0"));
}
