//! `chunk-server pull`: a build host that keeps no store brings the releases the fleet runs
//! from the published store (HTTPS on 127.0.0.1), makes the next release with delta frames
//! against them, uploads in the publishing order, and a device takes the frames.

use super::*;
use diffota_tests::fleet::MIB;

fn pull_command(local: &Path, keys: &Keys, ca: &Path, url: &str) -> Command {
    let mut command = chunk_server();
    command
        .args(["pull", "--json", "--store"])
        .arg(local)
        .arg("--public-key")
        .arg(&keys.public)
        .arg("--ca-file")
        .arg(ca)
        .arg(url);
    command
}

fn pull(local: &Path, keys: &Keys, ca: &Path, url: &str) -> std::process::Output {
    run(&mut pull_command(local, keys, ca, url))
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
    for (n, version) in ["1.0", "2.0", "3.0", "4.0"].iter().enumerate() {
        fleet.sample_release(version, 8 * MIB, 5, n as u64 + 1);
    }
    fleet.publish("4.0");
    assert_eq!(
        std::fs::read_to_string(fleet.store.join("releases/4.0/rootfs.before.json"))
            .unwrap()
            .split_whitespace()
            .collect::<String>(),
        r#"{"format":1,"before":["3.0","2.0","1.0"]}"#,
        "make lists the releases before the one it makes, newest first"
    );
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

    // --older 0: the channel's release alone.
    let alone = fleet.path("channel-release-alone");
    let output =
        run(pull_command(&alone, &fleet.keys, &ca.ca_cert, &server.url).args(["--older", "0"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let pulled: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(pulled["releases"], serde_json::json!(["4.0"]));

    // The build host: an empty store, then the stable channel, its release and the two
    // published before it (not 1.0): the three newest releases, make's default bases.
    let local = fleet.path("build-host-store");
    let output = pull(&local, &fleet.keys, &ca.ca_cert, &server.url);
    assert!(output.status.success(), "{}", stderr(&output));
    let pulled: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(pulled["channels"], serde_json::json!(["stable"]));
    assert_eq!(pulled["releases"], serde_json::json!(["4.0", "3.0", "2.0"]));
    let packs: std::collections::HashSet<_> = ["4.0", "3.0", "2.0"]
        .iter()
        .flat_map(|v| fleet.index(v).packs.into_iter().map(|p| p.id))
        .collect();
    assert_eq!(pulled["packs_fetched"], packs.len() as u64, "{pulled}");
    for version in ["4.0", "3.0", "2.0"] {
        let index = format!("releases/{version}/rootfs.didx");
        assert_eq!(
            std::fs::read(local.join(&index)).unwrap(),
            std::fs::read(fleet.store.join(&index)).unwrap()
        );
    }
    assert!(!local.join("releases/1.0").exists());
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

    // make, with no delta flag, writes frames against the three pulled releases and reuses
    // their chunks.
    let v5 = fleet.sample_image("5.0", 8 * MIB, 5, 5);
    let made: serde_json::Value = serde_json::from_str(&run_ok(
        make_command(&local, &fleet.keys, "5.0", "test-board", &v5)
            .arg("--json")
            .env("SOURCE_DATE_EPOCH", "1790000000"),
    ))
    .unwrap();
    assert_eq!(
        made["delta_bases"],
        serde_json::json!(["4.0", "3.0", "2.0"]),
        "{made}"
    );
    assert!(made["delta_frames"].as_u64().unwrap() > 0, "{made}");
    assert!(made["new_chunks"].as_u64().unwrap() < made["distinct_chunks"].as_u64().unwrap());

    // Upload packs and releases, then point the channel at 5.0 and upload it.
    upload(&local, &fleet.store, "packs");
    upload(&local, &fleet.store, "releases");
    set_channel(&local, &fleet.keys, "stable", "5.0", &[]);
    upload(&local, &fleet.store, "channels");
    run_ok(
        chunk_server()
            .args(["verify", "--public-key"])
            .arg(&fleet.keys.public)
            .arg(&fleet.store),
    );

    // A device on 2.0, three releases behind, takes frames against what it runs.
    let device = fleet.device("device", "2.0", 10 * MIB, &server.url, |config| {
        config.http.ca_file = Some(ca.ca_cert.clone())
    });
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    assert_eq!(check["version"], "5.0");
    assert!(
        check["plan"]["delta_frames"].as_u64().unwrap() > 0,
        "{check}"
    );
    run_ok(device.diffota().arg("install"));
    assert!(fleet.slot_holds(&device, Slot::B, "5.0"));
}

/// The list of releases before one is a hint: a release it names that the published store
/// no longer holds is passed over; a list that is not one fails the pull and names its URL.
#[test]
fn a_release_listed_before_that_is_gone_is_passed_over_and_a_bad_list_is_named() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let mut fleet = Fleet::new();
    for (n, version) in ["1.0", "2.0", "3.0"].iter().enumerate() {
        fleet.sample_release(version, 4 * MIB, 5, n as u64 + 1);
    }
    fleet.publish("3.0");
    // 2.0 is no longer published (its files removed from the server).
    std::fs::remove_dir_all(fleet.store.join("releases/2.0")).unwrap();
    let ca = TestCa::create(fleet.dir.path());
    let server = fleet.serve_tls(&ca);
    let local = fleet.path("build-host-store");
    let output = pull(&local, &fleet.keys, &ca.ca_cert, &server.url);
    assert!(output.status.success(), "{}", stderr(&output));
    let pulled: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        pulled["releases"],
        serde_json::json!(["3.0", "1.0"]),
        "{pulled}"
    );
    assert_eq!(
        pulled["passed_over"],
        serde_json::json!(["2.0"]),
        "{pulled}"
    );

    std::fs::write(
        fleet.store.join("releases/3.0/rootfs.before.json"),
        r#"{"format":1,"before":["../../channels"]}"#,
    )
    .unwrap();
    let output = pull(&fleet.path("second"), &fleet.keys, &ca.ca_cert, &server.url);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("releases/3.0/rootfs.before.json") && message.contains("invalid version"),
        "{message}"
    );
    let output = run(chunk_server()
        .args(["verify", "--public-key"])
        .arg(&fleet.keys.public)
        .arg(&fleet.store));
    assert!(!output.status.success());
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output);
    assert!(
        report.contains("releases/3.0/rootfs.before.json") && report.contains("invalid version"),
        "{report}"
    );
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
