//! `chunk-server pull`: a build host that keeps no store brings the releases the fleet runs
//! from the published store (HTTPS on 127.0.0.1), makes the next release with delta frames
//! against them, uploads in the publishing order, and a device takes the frames.

use super::*;
use diffota_tests::fleet::MIB;

fn pull(local: &Path, keys: &Keys, ca: &Path, url: &str) -> std::process::Output {
    run(chunk_server()
        .args(["pull", "--json", "--store"])
        .arg(local)
        .arg("--public-key")
        .arg(&keys.public)
        .arg("--ca-file")
        .arg(ca)
        .arg(url))
}

/// Copies `from`'s files into `to` (what an upload step does), `subdir` by `subdir`.
fn upload(from: &Path, to: &Path, subdir: &str) {
    run_ok(Command::new("cp").arg("-r").arg(from.join(subdir)).arg(to));
}

#[test]
fn a_build_host_without_a_store_pulls_the_fleets_releases_and_makes_delta_frames() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let mut fleet = Fleet::new();
    fleet.sample_release("1.0", 8 * MIB, 5, 1);
    fleet.sample_release("2.0", 8 * MIB, 5, 2);
    fleet.publish("2.0");
    let ca = TestCa::create(fleet.dir.path());
    let server = fleet.serve_tls(&ca);

    // A key the releases were not signed with: nothing is kept.
    let stranger = Keys::generate(fleet.dir.path(), "stranger");
    let refused_store = fleet.path("refused");
    let output = pull(&refused_store, &stranger, &ca.ca_cert, &server.url);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("channels/stable.json"),
        "{}",
        stderr(&output)
    );
    assert!(!refused_store.join("releases").exists() && !refused_store.join("packs").exists());

    // The build host: an empty store, then the stable channel and its release.
    let local = fleet.path("build-host-store");
    let output = pull(&local, &fleet.keys, &ca.ca_cert, &server.url);
    assert!(output.status.success(), "{}", stderr(&output));
    let pulled: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(pulled["channels"], serde_json::json!(["stable"]));
    assert_eq!(pulled["releases"], serde_json::json!(["2.0"]));
    let v2 = fleet.index("2.0");
    assert_eq!(pulled["packs_fetched"], v2.packs.len() as u64, "{pulled}");
    assert_eq!(
        std::fs::read(local.join("releases/2.0/rootfs.didx")).unwrap(),
        std::fs::read(fleet.store.join("releases/2.0/rootfs.didx")).unwrap()
    );
    run_ok(
        chunk_server()
            .args(["verify", "--public-key"])
            .arg(&fleet.keys.public)
            .arg(&local),
    );
    // Again: everything is there already.
    let again: serde_json::Value =
        serde_json::from_slice(&pull(&local, &fleet.keys, &ca.ca_cert, &server.url).stdout)
            .unwrap();
    assert_eq!(again["packs_fetched"], 0, "{again}");

    // make, with no delta flag, writes frames against the pulled 2.0 and reuses its chunks.
    let v3 = fleet.sample_image("3.0", 8 * MIB, 5, 3);
    let made: serde_json::Value = serde_json::from_str(&run_ok(
        make_command(&local, &fleet.keys, "3.0", "test-board", &v3)
            .arg("--json")
            .env("SOURCE_DATE_EPOCH", "1790000000"),
    ))
    .unwrap();
    assert_eq!(made["delta_bases"], serde_json::json!(["2.0"]), "{made}");
    assert!(made["delta_frames"].as_u64().unwrap() > 0, "{made}");
    assert!(made["new_chunks"].as_u64().unwrap() < made["distinct_chunks"].as_u64().unwrap());

    // Upload packs and releases, then point the channel at 3.0 and upload it.
    upload(&local, &fleet.store, "packs");
    upload(&local, &fleet.store, "releases");
    set_channel(&local, &fleet.keys, "stable", "3.0", &[]);
    upload(&local, &fleet.store, "channels");
    run_ok(
        chunk_server()
            .args(["verify", "--public-key"])
            .arg(&fleet.keys.public)
            .arg(&fleet.store),
    );

    // A device on 2.0 takes the frames.
    let device = fleet.device("device", "2.0", 10 * MIB, &server.url, |config| {
        config.http.ca_file = Some(ca.ca_cert.clone())
    });
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    assert_eq!(check["version"], "3.0");
    assert!(
        check["plan"]["delta_frames"].as_u64().unwrap() > 0,
        "{check}"
    );
    run_ok(device.diffota().arg("install"));
    assert!(fleet.slot_holds(&device, Slot::B, "3.0"));
}

/// A pack whose bytes are not the ones the signed index names is not kept, and the index
/// that names it is not written either.
#[test]
fn a_tampered_pack_is_not_pulled() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let mut fleet = Fleet::new();
    fleet.sample_release("1.0", 4 * MIB, 5, 1);
    fleet.publish("1.0");
    let pack = fleet.store.join(fleet.index("1.0").packs[0].store_path());
    flip_byte(&pack, 100);
    let ca = TestCa::create(fleet.dir.path());
    let server = fleet.serve_tls(&ca);
    let local = fleet.path("build-host-store");
    let output = fleet.pull_into(&local, &ca, &server.url);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("the pack is not the one the index names"),
        "{}",
        stderr(&output)
    );
    assert!(!local.join("releases/1.0/rootfs.didx").exists());
    let left: Vec<_> = std::fs::read_dir(local.join("packs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|p| std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())),
        "nothing left in packs/: {left:?}"
    );
}
