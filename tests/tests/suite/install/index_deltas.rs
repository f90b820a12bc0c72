//! Index deltas: a device on the older release fetches the index as changes against its own.

use super::*;

/// A device that installed 1.0 through diffota stores its index; the store holds 2.0's index
/// as changes against it (`rootfs.didx.from-1.0`), and the device fetches that instead of
/// the whole index, rebuilds the signed bytes and installs 2.0. `chunk-server verify` checks
/// the delta; a damaged one is named there, and a device then falls back to the whole index.
#[test]
fn index_delta_replaces_the_whole_index_for_a_device_on_the_older_release() {
    let fixture = delta_fixture();
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
        verified.contains("1 index deltas, 2 compressed indexes, 1 channels checked: 0 problems"),
        "{verified}"
    );

    let server = fixture.serve();
    let other = fixture.dir.path().join("other.img");
    write_image(&other, 8 * MIB, 77, 1).unwrap();
    // A device that installed 1.0 through diffota and booted it: slot b runs 1.0.
    let device_on_1_0 = |name: &str| {
        let device = fixture.device_running(name, &other, 10 * MIB, &server.url, |_| {});
        run_ok(
            device
                .diffota()
                .arg("install")
                .arg(format!("{}/releases/1.0/rootfs.didx", server.url)),
        );
        device.boot_into(Slot::B);
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
        device.slot_bytes(Slot::A, v2_len(&fixture)),
        std::fs::read(fixture.image("2.0")).unwrap(),
        "slot a holds 2.0"
    );
    assert_eq!(
        index_requests(&server),
        ["/releases/2.0/rootfs.didx.from-1.0"],
        "only the index delta was fetched"
    );
    // `chunk-server diff` predicted it: index delta, delta frames and requests, to the byte.
    let diff = store_diff(&fixture.store, "1.0", "2.0");
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

    // A damaged delta: verify names it; a device takes the compressed index and installs.
    damage_and_verify(&fixture, &delta_path, "releases/2.0/rootfs.didx.from-1.0: does not rebuild the index of its release from the index of 1.0");
    let device = device_on_1_0("damaged");
    server.clear_log();
    run_ok(device.diffota().arg("install"));
    assert_eq!(
        device.slot_bytes(Slot::A, v2_len(&fixture)),
        std::fs::read(fixture.image("2.0")).unwrap()
    );
    assert_eq!(
        index_requests(&server),
        [
            "/releases/2.0/rootfs.didx.from-1.0",
            "/releases/2.0/rootfs.didx.zst"
        ],
        "the compressed index after the damaged delta"
    );
}

/// A device that stores no index (factory-flashed and never provisioned) fetches the
/// compressed index (`rootfs.didx.zst`: 75% of the index on this image of distinct files;
/// 40% on the bench's ext4 images, whose zero runs repeat one chunk) instead of the whole one, and installs; `chunk-server verify` checks it, and names a damaged one,
/// after which a device takes the whole index. A store without it (made before there were
/// compressed indexes) costs the device one request more.
#[test]
fn a_device_that_stores_no_index_fetches_it_compressed() {
    let fixture = delta_fixture();
    let index_path = fixture.store.join("releases/2.0/rootfs.didx");
    let compressed_path = fixture.store.join("releases/2.0/rootfs.didx.zst");
    let index_length = std::fs::metadata(&index_path).unwrap().len();
    let compressed_length = std::fs::metadata(&compressed_path).unwrap().len();
    assert!(
        compressed_length < index_length,
        "compressed index {compressed_length} bytes, index {index_length}"
    );
    let server = fixture.serve();
    let index_requests = |server: &StoreServer| -> Vec<(String, u64)> {
        server
            .served()
            .into_iter()
            .filter(|s| s.path.starts_with("/releases/2.0/") && !s.path.ends_with(".minisig"))
            .map(|s| (s.path, s.bytes))
            .collect()
    };
    let install_on_factory_device = |name: &str| {
        let device =
            fixture.device_running(name, fixture.image("1.0"), 10 * MIB, &server.url, |_| {});
        server.clear_log();
        run_ok(device.diffota().arg("install"));
        assert_eq!(
            device.slot_bytes(Slot::B, v2_len(&fixture)),
            std::fs::read(fixture.image("2.0")).unwrap(),
            "slot b holds 2.0"
        );
    };

    install_on_factory_device("factory");
    assert_eq!(
        index_requests(&server),
        [(
            "/releases/2.0/rootfs.didx.zst".to_owned(),
            compressed_length
        )],
        "only the compressed index was fetched"
    );

    damage_and_verify(
        &fixture,
        &compressed_path,
        "releases/2.0/rootfs.didx.zst: does not rebuild the index of its release:",
    );
    install_on_factory_device("damaged");
    assert_eq!(
        index_requests(&server),
        [
            (
                "/releases/2.0/rootfs.didx.zst".to_owned(),
                compressed_length
            ),
            ("/releases/2.0/rootfs.didx".to_owned(), index_length)
        ],
        "the whole index after the damaged compressed index"
    );

    std::fs::remove_file(&compressed_path).unwrap();
    install_on_factory_device("older-store");
    let requests = index_requests(&server);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].0, "/releases/2.0/rootfs.didx.zst", "not found");
    assert_eq!(
        requests[1],
        ("/releases/2.0/rootfs.didx".to_owned(), index_length)
    );
}

/// Flips a byte near the end of `file` (inside its zstd frame); `chunk-server verify` then
/// fails and reports `problem`.
fn damage_and_verify(fixture: &Fleet, file: &std::path::Path, problem: &str) {
    let mut damaged = std::fs::read(file).unwrap();
    let last = damaged.len() - 8;
    damaged[last] ^= 0x55;
    std::fs::write(file, &damaged).unwrap();
    let output = run(chunk_server()
        .args(["verify", "--public-key"])
        .arg(&fixture.keys.public)
        .arg(&fixture.store));
    assert!(!output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains(problem), "{report}");
}
