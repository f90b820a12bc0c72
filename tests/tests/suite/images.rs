//! Releases of several images: `chunk-server make --image NAME=PATH ... --single-copy
//! NAME=PATH`, the signed manifest that pins each image's index, channels and `verify` on
//! it, and what a device does with such a release today.

use std::process::Command;

use diffota_tests::fleet::{Fleet, MIB};
use diffota_tests::*;

/// Release 1.0 of one image, and 2.0 of rootfs (the 2.0 sample image), appfs (2 MiB of which
/// the first half repeats the start of rootfs) and a single-copy firmware file.
fn fleet() -> Fleet {
    let mut fleet = Fleet::new();
    fleet.sample_release("1.0", 4 * MIB, 9, 1);
    let rootfs = fleet.sample_image("2.0", 4 * MIB, 9, 2);
    let mut appfs = std::fs::read(&rootfs).unwrap();
    appfs.truncate(MIB as usize);
    appfs.extend((0..MIB).map(|i| (i * 7 % 251) as u8));
    std::fs::write(fleet.path("appfs.img"), &appfs).unwrap();
    std::fs::write(fleet.path("mcu.bin"), b"firmware 2.0\n".repeat(1000)).unwrap();
    fleet
}

fn make_v2(fleet: &Fleet) -> serde_json::Value {
    fleet.make_images(
        "2.0",
        &[
            ("rootfs", fleet.image("2.0")),
            ("appfs", &fleet.path("appfs.img")),
        ],
        &[("mcu", &fleet.path("mcu.bin"))],
        &[],
    )
}

#[test]
fn make_writes_each_image_and_a_signed_manifest_that_pins_them() {
    let fleet = fleet();
    let made = make_v2(&fleet);
    let images = made["images"].as_array().unwrap();
    assert_eq!(
        images
            .iter()
            .map(|i| (i["name"].as_str().unwrap(), i["install"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("rootfs", "slot"),
            ("appfs", "slot"),
            ("mcu", "single-copy")
        ]
    );
    // rootfs has delta frames against 1.0 (same name); appfs and mcu have no older release.
    assert_eq!(images[0]["delta_bases"], serde_json::json!(["1.0"]));
    assert_eq!(images[1]["delta_bases"], serde_json::json!([]));
    // Chunks dedup across the images of a release: appfs's first MiB is rootfs's.
    let appfs_chunks = images[1]["chunks"].as_u64().unwrap();
    let appfs_new = images[1]["new_chunks"].as_u64().unwrap();
    assert!(
        appfs_new * 3 < appfs_chunks * 2,
        "appfs reuses rootfs's chunks: {appfs_new} new of {appfs_chunks}"
    );

    let manifest_path = fleet.store.join("releases/2.0/release.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["version"], "2.0");
    assert_eq!(manifest["compatible"], "test-board");
    for (pinned, name) in manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["rootfs", "appfs", "mcu"])
    {
        let index = std::fs::read(fleet.store.join(format!("releases/2.0/{name}.didx"))).unwrap();
        assert_eq!(pinned["name"], name);
        assert_eq!(pinned["index_length"], index.len() as u64);
        assert_eq!(
            pinned["index_blake3"],
            blake3::hash(&index).to_hex().as_str()
        );
    }
    // The manifest's signature is plain minisign.
    if require_tool("minisign", "minisign") {
        run_ok(
            Command::new("minisign")
                .arg("-Vm")
                .arg(&manifest_path)
                .arg("-p")
                .arg(&fleet.keys.public),
        );
    }
    // Made again the same: nothing changes.
    let before = std::fs::read(&manifest_path).unwrap();
    make_v2(&fleet);
    assert_eq!(std::fs::read(&manifest_path).unwrap(), before);

    // verify checks the manifest; a channel points at it.
    let verify = |fleet: &Fleet| {
        run(chunk_server()
            .arg("verify")
            .arg("--public-key")
            .arg(&fleet.keys.public)
            .arg(&fleet.store))
    };
    fleet.publish("2.0");
    let channel: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fleet.store.join("channels/stable.json")).unwrap())
            .unwrap();
    assert_eq!(channel["release"]["index"], "releases/2.0/release.json");
    let output = verify(&fleet);
    assert!(output.status.success(), "{}", stderr(&output));
    // An index replaced after the manifest pinned it (re-signed, so only the pin catches it).
    let mut other = Fleet::new();
    other.keys = Keys {
        secret: fleet.keys.secret.clone(),
        public: fleet.keys.public.clone(),
    };
    let mut changed = std::fs::read(fleet.path("appfs.img")).unwrap();
    changed[0] ^= 1;
    other.image_bytes("2.0", &changed);
    other.make_with("2.0", &["--name", "appfs", "--no-delta"]);
    for file in ["appfs.didx", "appfs.didx.minisig"] {
        std::fs::copy(
            other.store.join("releases/2.0").join(file),
            fleet.store.join("releases/2.0").join(file),
        )
        .unwrap();
    }
    let output = verify(&fleet);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("releases/2.0/release.json: image appfs: releases/2.0/appfs.didx is not the index the manifest pins"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn image_names_are_checked_before_anything_is_made() {
    let fleet = fleet();
    let mcu = fleet.path("mcu.bin");
    let root = fleet.image("2.0");
    for (args, message) in [
        (
            vec!["--image".to_owned(), format!("Root={}", root.display())],
            "image name \"Root\"",
        ),
        (
            vec![
                "--image".to_owned(),
                format!("rootfs={}", root.display()),
                "--single-copy".to_owned(),
                format!("rootfs={}", mcu.display()),
            ],
            "image rootfs is given twice",
        ),
        (
            vec!["--image".to_owned(), root.display().to_string()],
            "expected NAME=PATH",
        ),
    ] {
        let output = run(chunk_server()
            .args([
                "make",
                "--no-sign",
                "--compatible",
                "b",
                "--version",
                "3.0",
                "--store",
            ])
            .arg(&fleet.store)
            .args(&args));
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(stderr(&output).contains(message), "{}", stderr(&output));
    }
    assert!(!fleet.store.join("releases/3.0/release.json").exists());
}

#[test]
fn a_device_installs_a_one_image_manifest_and_refuses_several_images_by_name() {
    let fleet = fleet();
    // 2.0 as a manifest of one image: installed like an index.
    fleet.make_images("2.0", &[("rootfs", fleet.image("2.0"))], &[], &[]);
    fleet.publish("2.0");
    let server = fleet.serve();
    let device = fleet.device("device", "1.0", 5 * MIB, &server.url, |_| {});
    let stdout = run_ok(device.diffota().arg("install"));
    assert!(stdout.contains("installed 2.0 into slot b"), "{stdout}");
    assert!(fleet.slot_holds(&device, Slot::B, "2.0"));
    let fetched: Vec<String> = server.served().into_iter().map(|s| s.path).collect();
    assert!(
        fetched
            .iter()
            .any(|p| p.ends_with("/releases/2.0/release.json")),
        "{fetched:?}"
    );

    // 3.0 of several images: refused, naming them, nothing written.
    let mut fleet = fleet;
    let rootfs3 = fleet.sample_image("3.0", 4 * MIB, 9, 3);
    fleet.make_images(
        "3.0",
        &[("rootfs", &rootfs3), ("appfs", &fleet.path("appfs.img"))],
        &[("mcu", &fleet.path("mcu.bin"))],
        &[],
    );
    fleet.publish("3.0");
    let device = fleet.device("device3", "1.0", 5 * MIB, &server.url, |_| {});
    let output = run(device.diffota().arg("install"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("release 3.0 has several images (rootfs, appfs, mcu (single-copy)); this diffota installs a release of one image only"),
        "{}",
        stderr(&output)
    );
    assert!(device.slot_bytes(Slot::B, 4096).iter().all(|&b| b == 0));
}

#[test]
fn pull_brings_a_release_of_several_images_and_the_next_make_has_frames_per_image() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let mut fleet = fleet();
    make_v2(&fleet);
    fleet.publish("2.0");
    let ca = TestCa::create(fleet.dir.path());
    let server = fleet.serve_tls(&ca);
    let local = fleet.path("build-host-store");
    let output = fleet.pull_into(&local, &ca, &server.url);
    assert!(output.status.success(), "{}", stderr(&output));
    for file in [
        "release.json",
        "release.json.minisig",
        "rootfs.didx",
        "appfs.didx",
        "mcu.didx",
    ] {
        assert_eq!(
            std::fs::read(local.join("releases/2.0").join(file)).unwrap(),
            std::fs::read(fleet.store.join("releases/2.0").join(file)).unwrap(),
            "{file}"
        );
    }
    run_ok(
        chunk_server()
            .arg("verify")
            .arg("--public-key")
            .arg(&fleet.keys.public)
            .arg(&local),
    );
    // The next release, made on the build host with no flag: frames against 2.0, per image.
    let rootfs3 = fleet.sample_image("3.0", 4 * MIB, 9, 3);
    let mut appfs3 = std::fs::read(fleet.path("appfs.img")).unwrap();
    appfs3[MIB as usize + 100..MIB as usize + 200].fill(0x55);
    std::fs::write(fleet.path("appfs3.img"), &appfs3).unwrap();
    fleet.store = local.clone();
    let made = fleet.make_images(
        "3.0",
        &[("rootfs", &rootfs3), ("appfs", &fleet.path("appfs3.img"))],
        &[],
        &[],
    );
    for image in made["images"].as_array().unwrap() {
        assert_eq!(image["delta_bases"], serde_json::json!(["2.0"]), "{image}");
    }
}
