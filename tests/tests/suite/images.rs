//! Releases of several images: `chunk-server make --image NAME=PATH ... --single-copy
//! NAME=PATH`, the signed manifest that pins each image's index, channels and `verify` on
//! it, and what a device does with such a release today.

use std::path::{Path, PathBuf};
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
fn a_device_installs_a_one_image_manifest_and_refuses_images_its_config_lacks() {
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

    // 3.0 of several images: refused by a device whose config lacks them, naming them.
    let mut fleet = fleet;
    let rootfs3 = fleet.sample_image("3.0", 4 * MIB, 9, 3);
    fleet.make_images(
        "3.0",
        &[("rootfs", &rootfs3), ("appfs", &fleet.path("appfs.img"))],
        &[],
        &[],
    );
    fleet.publish("3.0");
    let device = fleet.device("device3", "1.0", 5 * MIB, &server.url, |_| {});
    let output = run(device.diffota().arg("install"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("release 3.0 does not fit this device's slot groups: it has image appfs, which this device's config does not name (add [images.appfs] with its a and b slots)"),
        "{}",
        stderr(&output)
    );
    assert!(device.slot_bytes(Slot::B, 4096).iter().all(|&b| b == 0));
    // A single-copy image needs its target in the config.
    let rootfs4 = fleet.sample_image("4.0", 4 * MIB, 9, 4);
    fleet.make_images(
        "4.0",
        &[("rootfs", &rootfs4)],
        &[("mcu", &fleet.path("mcu.bin"))],
        &[],
    );
    fleet.publish("4.0");
    let output = run(device.diffota().arg("install"));
    assert!(
        stderr(&output)
            .contains("it has single-copy image mcu, which this device's config has no target for (add [single_copy.mcu] with a device or a handler)"),
        "{}",
        stderr(&output)
    );
}

/// Pack bytes the server sent.
fn pack_bytes(server: &StoreServer) -> u64 {
    server
        .served()
        .iter()
        .filter(|s| s.path.starts_with("/packs/"))
        .map(|s| s.range.map_or(s.bytes, |(a, b)| b + 1 - a))
        .sum()
}

/// A device with a rootfs pair and an appfs pair ([images.appfs]), running group a with
/// release `running`'s images; the b slots are zeros.
fn group_device(
    fleet: &Fleet,
    name: &str,
    url: &str,
    rootfs: &str,
    appfs: &Path,
) -> (Device, PathBuf, PathBuf) {
    let appfs_a = fleet.path(&format!("{name}-appfs-a.img"));
    let appfs_b = fleet.path(&format!("{name}-appfs-b.img"));
    std::fs::copy(appfs, &appfs_a).unwrap();
    std::fs::File::create(&appfs_b)
        .unwrap()
        .set_len(3 * MIB)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&appfs_a)
        .unwrap()
        .set_len(3 * MIB)
        .unwrap();
    let device = fleet.device(name, rootfs, 5 * MIB, url, |config| {
        config.images.insert(
            "appfs".into(),
            diffota::config::SlotsConfig {
                a: appfs_a.clone(),
                b: appfs_b.clone(),
            },
        );
    });
    (device, appfs_a, appfs_b)
}

/// The image file of release `version`'s rootfs (a path to hand to `group_device` as a
/// wrong appfs).
fn rootfs_of(fleet: &Fleet, version: &str) -> PathBuf {
    fleet.image(version).to_owned()
}

fn starts_with_file(path: &Path, image: &Path) -> bool {
    let expected = std::fs::read(image).unwrap();
    let mut held = std::fs::read(path).unwrap();
    held.truncate(expected.len());
    held == expected
}

/// Releases 1.0 and 2.0 of rootfs (sample images) and appfs (2 MiB; 2.0's is 1.0's changed
/// by `change`), as manifests; returns the fleet and the two appfs images.
fn group_releases(change: impl FnOnce(&mut Vec<u8>)) -> (Fleet, PathBuf, PathBuf) {
    let mut fleet = Fleet::new();
    let rootfs1 = fleet.sample_image("1.0", 4 * MIB, 9, 1);
    let appfs1 = fleet.path("appfs1.img");
    let mut appfs: Vec<u8> = (0..2 * MIB).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(&appfs1, &appfs).unwrap();
    fleet.make_images("1.0", &[("rootfs", &rootfs1), ("appfs", &appfs1)], &[], &[]);
    let rootfs2 = fleet.sample_image("2.0", 4 * MIB, 9, 2);
    let appfs2 = fleet.path("appfs2.img");
    change(&mut appfs);
    std::fs::write(&appfs2, &appfs).unwrap();
    fleet.make_images("2.0", &[("rootfs", &rootfs2), ("appfs", &appfs2)], &[], &[]);
    (fleet, appfs1, appfs2)
}

#[test]
fn a_slot_group_switches_rootfs_and_appfs_together_and_fetches_only_what_changed() {
    let (fleet, appfs1, appfs2) = group_releases(|appfs| {
        appfs[MIB as usize..MIB as usize + 4096].fill(0xAA);
    });
    let mut fleet = fleet;
    let rootfs2 = fleet.image("2.0").to_owned();
    let mut bytes = std::fs::read(&appfs2).unwrap();
    fleet.publish("2.0");
    let server = fleet.serve();
    let (device, appfs_a, appfs_b) = group_device(&fleet, "device", &server.url, "1.0", &appfs1);

    // A release of one image does not fit this device's group.
    let output = run(device
        .diffota()
        .arg("install")
        .arg(fleet.store.join("releases/1.0/rootfs.didx")));
    assert!(
        stderr(&output)
            .contains("it is one image, and this device's config names images appfs too"),
        "{}",
        stderr(&output)
    );

    // The factory group is provisioned from the release's manifest: every image is checked.
    let manifest = fleet.store.join("releases/1.0/release.json");
    let (other, _, _) = group_device(
        &fleet,
        "other",
        &server.url,
        "1.0",
        &rootfs_of(&fleet, "1.0"),
    );
    let output = run(other.diffota().arg("provision").arg(&manifest));
    assert!(
        stderr(&output).contains("does not hold release 1.0 (image appfs"),
        "{}",
        stderr(&output)
    );
    let doctor = run_ok(device.diffota().arg("doctor"));
    assert!(
        doctor.contains(&format!(
            "ok   image appfs: slots a and b, {} bytes each",
            3 * MIB
        )),
        "{doctor}"
    );
    let stdout = run_ok(device.diffota().arg("provision").arg(&manifest));
    assert!(stdout.contains("slot a holds release 1.0"), "{stdout}");
    let text = run_ok(device.diffota().arg("status"));
    assert!(text.contains("slot a image appfs: 1.0"), "{text}");
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    assert_eq!(check["images"][0]["name"], "appfs", "{check}");
    let predicted = check["plan"]["fetch_bytes"].as_u64().unwrap()
        + check["images"][0]["plan"]["fetch_bytes"].as_u64().unwrap();
    server.clear_log();
    let stdout = run_ok(device.diffota().args(["install", "--json"]));
    let outcome: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(outcome["outcome"], "installed", "{outcome}");
    let figures: Vec<(&str, u64)> = outcome["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap(),
                i["image_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        figures,
        [("rootfs", 4 * MIB), ("appfs", 2 * MIB)],
        "{outcome}"
    );
    let started: serde_json::Value = stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| event["event"] == "install_started")
        .unwrap();
    assert_eq!(
        started["total_bytes"],
        6 * MIB,
        "progress counts every image: {started}"
    );
    assert_eq!(
        started["images"],
        serde_json::json!([{"name": "rootfs", "bytes": 4 * MIB}, {"name": "appfs", "bytes": 2 * MIB}])
    );
    let began: Vec<String> = stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["event"] == "image")
        .map(|event| event["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(began, ["rootfs", "appfs"], "an image event as each begins");
    assert!(fleet.slot_holds(&device, Slot::B, "2.0"));
    assert!(
        starts_with_file(&appfs_b, &appfs2),
        "appfs b holds 2.0's appfs"
    );
    assert!(
        starts_with_file(&appfs_a, &appfs1),
        "the running appfs is untouched"
    );
    assert_eq!(
        pack_bytes(&server),
        predicted,
        "what check predicted, for both images"
    );
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["status", "--json"]))).unwrap();
    assert_eq!(
        status["state"]["slots"]["b"]["images"]["appfs"]["image_hash"],
        blake3::hash(&std::fs::read(&appfs2).unwrap())
            .to_hex()
            .as_str()
    );

    let text = run_ok(device.diffota().arg("status"));
    assert!(text.contains("slot b image appfs: 2.0"), "{text}");
    // The group boots, is committed; 3.0 changes appfs only: rootfs comes from the running
    // slot, and only appfs's changed chunks are downloaded.
    device.boot_into(Slot::B);
    run_ok(device.diffota().arg("mark-good"));
    let appfs3 = fleet.path("appfs3.img");
    bytes[100..200].fill(0x11);
    std::fs::write(&appfs3, &bytes).unwrap();
    fleet.image_bytes("3.0", &std::fs::read(&rootfs2).unwrap());
    fleet.make_images(
        "3.0",
        &[("rootfs", fleet.image("3.0")), ("appfs", &appfs3)],
        &[],
        &[],
    );
    fleet.publish("3.0");
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    assert_eq!(
        check["plan"]["fetch_bytes"], 0,
        "rootfs is unchanged: {check}"
    );
    let appfs_fetch = check["images"][0]["plan"]["fetch_bytes"].as_u64().unwrap();
    assert!(appfs_fetch > 0 && appfs_fetch < 100_000, "{check}");
    server.clear_log();
    run_ok(device.diffota().arg("install"));
    assert_eq!(pack_bytes(&server), appfs_fetch);
    assert!(fleet.slot_holds(&device, Slot::A, "3.0"));
    assert!(starts_with_file(&appfs_a, &appfs3));
    assert!(
        starts_with_file(&appfs_b, &appfs2),
        "the running group's appfs is untouched"
    );
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
    let pulled: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        pulled["releases"],
        serde_json::json!(["2.0", "1.0"]),
        "{pulled}"
    );
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
    // rootfs also against 1.0 (a one-image release), which pull brought as the release
    // its list names before 2.0; appfs, which 1.0 lacks, against 2.0 alone.
    let bases: Vec<(String, serde_json::Value)> = made["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|image| {
            (
                image["name"].as_str().unwrap().to_owned(),
                image["delta_bases"].clone(),
            )
        })
        .collect();
    assert_eq!(
        bases,
        [
            ("rootfs".to_owned(), serde_json::json!(["2.0", "1.0"])),
            ("appfs".to_owned(), serde_json::json!(["2.0"]))
        ],
        "{made}"
    );
}

#[test]
fn a_group_install_stopped_by_a_hook_on_appfs_arms_nothing_and_resumes_in_place() {
    let (fleet, appfs1, appfs2) = group_releases(|appfs| {
        appfs.iter_mut().for_each(|b| *b = b.wrapping_mul(7));
    });
    fleet.publish("2.0");
    let server = fleet.serve();
    let (device, appfs_a, appfs_b) = group_device(&fleet, "device", &server.url, "1.0", &appfs1);
    let hooks = fleet.path("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let log = fleet.path("hook.log");
    let busy = fleet.path("busy");
    let post_write = hooks.join("check");
    std::fs::write(
        &post_write,
        format!(
            "#!/bin/sh\necho \"$DIFFOTA_IMAGE $DIFFOTA_IMAGE_DEVICE\" >> {log}\nif [ \"$DIFFOTA_IMAGE\" = appfs ] && [ -e {busy} ]; then echo 'app still running' >&2; exit 75; fi\n",
            log = log.display(),
            busy = busy.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &post_write,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut config = device.base_config(&server.url, &[&fleet.keys.public]);
    config.images.insert(
        "appfs".into(),
        diffota::config::SlotsConfig {
            a: appfs_a.clone(),
            b: appfs_b.clone(),
        },
    );
    config.hooks.post_write = vec![post_write];
    device.write_config(&config);

    std::fs::write(&busy, "").unwrap();
    let stdout = run_exit(device.diffota().arg("install"), 3);
    assert!(
        stdout.contains("said not now (app still running)"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!(
            "rootfs {}\nappfs {}\n",
            device.slot_b.display(),
            appfs_b.display()
        ),
        "post-write runs for each image, with its own device"
    );
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["status", "--json"]))).unwrap();
    assert!(status["state"]["trial"].is_null(), "nothing armed");
    assert!(status["state"]["slots"]["b"].is_null());
    assert!(
        starts_with_file(&appfs_a, &appfs1),
        "the running group is untouched"
    );
    assert!(fleet.slot_holds(&device, Slot::A, "1.0"));

    // The next run finds both images in place (re-checked, not fetched again) and arms.
    std::fs::remove_file(&busy).unwrap();
    server.clear_log();
    run_ok(device.diffota().arg("install"));
    assert_eq!(pack_bytes(&server), 0, "both images were in place");
    assert!(fleet.slot_holds(&device, Slot::B, "2.0"));
    assert!(starts_with_file(&appfs_b, &appfs2));
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["status", "--json"]))).unwrap();
    assert_eq!(status["state"]["trial"]["slot"], "b");
}

#[test]
fn single_copy_images_are_written_once_after_the_group_and_skipped_when_held() {
    let mut fleet = Fleet::new();
    fleet.sample_release("1.0", 4 * MIB, 9, 1);
    let rootfs2 = fleet.sample_image("2.0", 4 * MIB, 9, 2);
    let mcu = fleet.path("mcu.bin");
    std::fs::write(&mcu, b"mcu firmware 7\n".repeat(20_000)).unwrap();
    let fpga = fleet.path("fpga.bit");
    std::fs::write(
        &fpga,
        (0..300_000u32).map(|i| (i % 239) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    fleet.make_images(
        "2.0",
        &[("rootfs", &rootfs2)],
        &[("mcu", &mcu), ("fpga", &fpga)],
        &[],
    );
    fleet.publish("2.0");
    let server = fleet.serve();
    let flash = fleet.path("mcu-flash.bin");
    std::fs::File::create(&flash).unwrap().set_len(MIB).unwrap();
    let log = fleet.path("handler.log");
    let loaded = fleet.path("fpga-loaded.bit");
    let handler = fleet.path("load-fpga");
    std::fs::write(
        &handler,
        format!(
            "#!/bin/sh\nset -e\necho \"$DIFFOTA_IMAGE $DIFFOTA_VERSION $DIFFOTA_IMAGE_SIZE\" >> {log}\ncp \"$DIFFOTA_IMAGE_FILE\" {loaded}\n",
            log = log.display(),
            loaded = loaded.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &handler,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let device = fleet.device("device", "1.0", 5 * MIB, &server.url, |config| {
        config.single_copy.insert(
            "mcu".into(),
            diffota::config::SingleCopyConfig {
                device: Some(flash.clone()),
                handler: None,
            },
        );
        config.single_copy.insert(
            "fpga".into(),
            diffota::config::SingleCopyConfig {
                device: None,
                handler: Some(handler.clone()),
            },
        );
    });
    let doctor = run_ok(device.diffota().arg("doctor"));
    assert!(
        doctor.contains(&format!(
            "ok   single-copy target fpga: handler {}",
            handler.display()
        )),
        "{doctor}"
    );
    // A link planted where the handler's file is assembled is replaced, not followed.
    let victim = fleet.path("victim");
    std::fs::write(&victim, "keep me").unwrap();
    std::fs::create_dir_all(&device.state).unwrap();
    std::os::unix::fs::symlink(&victim, device.state.join("single-copy-fpga.img")).unwrap();
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    let planned: Vec<(String, u64)> = check["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["plan"]["fetch_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        planned.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["mcu", "fpga"]
    );
    assert!(planned.iter().all(|(_, bytes)| *bytes > 0), "{check}");
    let stdout = run_ok(device.diffota().arg("install"));
    assert!(stdout.contains("installed 2.0 into slot b"), "{stdout}");
    assert!(
        starts_with_file(&flash, &mcu),
        "the mcu target holds the image"
    );
    assert_eq!(
        std::fs::read(&loaded).unwrap(),
        std::fs::read(&fpga).unwrap()
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "fpga 2.0 300000\n");
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["status", "--json"]))).unwrap();
    assert_eq!(
        status["state"]["single_copy"]["mcu"]["image_hash"],
        blake3::hash(&std::fs::read(&mcu).unwrap())
            .to_hex()
            .as_str()
    );
    assert_eq!(status["state"]["trial"]["slot"], "b");
    assert!(
        !device.state.join("single-copy-fpga.img").exists(),
        "the handler's file is removed"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");

    // 3.0 keeps both firmware images: their targets hold them, nothing is fetched or run.
    device.boot_into(Slot::B);
    run_ok(device.diffota().arg("mark-good"));
    let rootfs3 = fleet.sample_image("3.0", 4 * MIB, 9, 3);
    fleet.make_images(
        "3.0",
        &[("rootfs", &rootfs3)],
        &[("mcu", &mcu), ("fpga", &fpga)],
        &[],
    );
    fleet.publish("3.0");
    let check: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["check", "--json"]))).unwrap();
    assert_eq!(check["images"][0]["plan"]["fetch_bytes"], 0, "{check}");
    assert_eq!(check["images"][1]["plan"]["fetch_bytes"], 0, "{check}");
    let rootfs_fetch = check["plan"]["fetch_bytes"].as_u64().unwrap();
    server.clear_log();
    // Zeroed behind diffota's back: only the record decides, so it stays zero.
    std::fs::write(&flash, vec![0u8; MIB as usize]).unwrap();
    run_ok(device.diffota().arg("install"));
    assert_eq!(pack_bytes(&server), rootfs_fetch, "only rootfs's chunks");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "fpga 2.0 300000\n",
        "not run again"
    );
    assert!(
        std::fs::read(&flash).unwrap().iter().all(|&b| b == 0),
        "a target that holds the image is not written (the record says so)"
    );
}

/// The section (offset, length) of `kind` in a bundle file's header.
fn bundle_section(bytes: &[u8], kind: u32) -> (usize, usize) {
    let count = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    (0..count)
        .map(|n| &bytes[16 + n * 20..16 + (n + 1) * 20])
        .find(|record| u32::from_le_bytes(record[..4].try_into().unwrap()) == kind)
        .map(|record| {
            (
                u64::from_le_bytes(record[4..12].try_into().unwrap()) as usize,
                u64::from_le_bytes(record[12..20].try_into().unwrap()) as usize,
            )
        })
        .expect("section present")
}

#[test]
fn a_bundle_of_a_release_of_several_images_installs_every_image_offline() {
    let (mut fleet, appfs1, appfs2) = group_releases(|appfs| {
        appfs[MIB as usize..MIB as usize + 8192].fill(0x5A);
    });
    // 3.0: rootfs and appfs as 2.0's, with a single-copy firmware file.
    let rootfs2 = fleet.image("2.0").to_owned();
    fleet.image_bytes("3.0", &std::fs::read(&rootfs2).unwrap());
    let mcu = fleet.path("mcu.bin");
    std::fs::write(&mcu, b"mcu firmware 3\n".repeat(10_000)).unwrap();
    fleet.make_images(
        "3.0",
        &[("rootfs", fleet.image("3.0")), ("appfs", &appfs2)],
        &[("mcu", &mcu)],
        &[],
    );
    let (update, summary) = fleet.bundle("2.0", &["1.0"], "group-1.0-to-2.0.dfb");
    assert_eq!(
        summary["images"],
        serde_json::json!(["rootfs", "appfs"]),
        "{summary}"
    );
    assert!(
        summary["bundled_delta_frames"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(std::fs::read(&update).unwrap()[8], 2, "format version 2");
    let (full, _) = fleet.bundle("2.0", &[], "group-full-2.0.dfb");
    let (update_size, full_size) = (
        std::fs::metadata(&update).unwrap().len(),
        std::fs::metadata(&full).unwrap().len(),
    );
    assert!(
        update_size * 2 < full_size,
        "what 1.0 lacks, {update_size} bytes, against every chunk, {full_size}"
    );
    // The one-image form stays, for devices that read only format version 1.
    let (rootfs_only, summary) = {
        let out = fleet.path("rootfs-only.dfb");
        let summary = run_ok(
            chunk_server()
                .args(["bundle", "--json", "--to", "2.0", "--name", "rootfs"])
                .arg("--store")
                .arg(&fleet.store)
                .arg(&out),
        );
        (
            out,
            serde_json::from_str::<serde_json::Value>(&summary).unwrap(),
        )
    };
    assert_eq!(summary["images"], serde_json::json!(["rootfs"]));
    assert_eq!(std::fs::read(&rootfs_only).unwrap()[8], 1);

    // A device with the group, on 1.0, with no store to reach: everything comes from the
    // bundle, the delta frames of each image included.
    let (device, appfs_a, appfs_b) =
        group_device(&fleet, "device", "/nonexistent-store", "1.0", &appfs1);
    run_ok(
        device
            .diffota()
            .arg("provision")
            .arg(fleet.store.join("releases/1.0/release.json")),
    );
    let output = run(device.diffota().arg("install").arg(&rootfs_only));
    assert!(
        stderr(&output).contains("it is one image, and this device's config names images appfs"),
        "{}",
        stderr(&output)
    );
    let check = run_ok(device.diffota().arg("check").arg(&update));
    assert!(check.contains("bundle: applies"), "{check}");
    let stdout = run_ok(device.diffota().arg("install").arg(&update));
    assert!(stdout.contains("installed 2.0 into slot b"), "{stdout}");
    assert!(fleet.slot_holds(&device, Slot::B, "2.0"));
    assert!(starts_with_file(&appfs_b, &appfs2));
    assert!(
        starts_with_file(&appfs_a, &appfs1),
        "running appfs untouched"
    );

    // A device without the group refuses the release by name, before anything is written.
    let single = fleet.device("single", "1.0", 5 * MIB, "/nonexistent-store", |_| {});
    let output = run(single.diffota().arg("install").arg(&update));
    assert!(
        stderr(&output).contains("it has image appfs, which this device's config does not name"),
        "{}",
        stderr(&output)
    );
    assert!(!fleet.slot_holds(&single, Slot::B, "2.0"));

    // Tampering with the signed parts is refused by name.
    let bytes = std::fs::read(&update).unwrap();
    let (manifest_at, _) = bundle_section(&bytes, 7);
    let (indexes_at, _) = bundle_section(&bytes, 9);
    let (frames_at, _) = bundle_section(&bytes, 10);
    for (name, at, message) in [
        ("manifest", manifest_at + 20, "signature"),
        ("index", indexes_at + 4 + 44 + 30, "BLAKE3"),
        ("index-hash", indexes_at + 4 + 5, "BLAKE3"),
        ("frame-image", frames_at + 4 + 3, "is not in the index"),
    ] {
        let mut tampered = bytes.clone();
        tampered[at] ^= 1;
        let path = fleet.path(&format!("tampered-{name}.dfb"));
        std::fs::write(&path, &tampered).unwrap();
        let output = run(device.diffota().arg("install").arg(&path));
        assert!(
            !output.status.success() && stderr(&output).contains(message),
            "{name}: {}",
            stderr(&output)
        );
    }

    // 3.0 adds a single-copy image: its bundle carries it whole, and the target is written.
    device.boot_into(Slot::B);
    run_ok(device.diffota().arg("mark-good"));
    let flash = fleet.path("mcu-flash.bin");
    std::fs::File::create(&flash).unwrap().set_len(MIB).unwrap();
    let mut config: diffota::config::Config =
        toml::from_str(&std::fs::read_to_string(&device.config).unwrap()).unwrap();
    config.single_copy.insert(
        "mcu".into(),
        diffota::config::SingleCopyConfig {
            device: Some(flash.clone()),
            handler: None,
        },
    );
    device.write_config(&config);
    let (next, summary) = fleet.bundle("3.0", &["2.0"], "group-2.0-to-3.0.dfb");
    assert_eq!(
        summary["images"],
        serde_json::json!(["rootfs", "appfs", "mcu"])
    );
    let stdout = run_ok(device.diffota().arg("install").arg(&next));
    assert!(stdout.contains("installed 3.0 into slot a"), "{stdout}");
    assert!(
        starts_with_file(&flash, &mcu),
        "the mcu target holds 3.0's firmware"
    );
    assert!(starts_with_file(&appfs_a, &appfs2));
}

#[test]
fn provision_records_single_copy_targets_that_hold_their_image() {
    let mut fleet = Fleet::new();
    let rootfs = fleet.sample_image("1.0", 4 * MIB, 9, 1);
    let mcu = fleet.path("mcu.bin");
    std::fs::write(&mcu, b"mcu firmware 1\n".repeat(10_000)).unwrap();
    let fpga = fleet.path("fpga.bit");
    std::fs::write(&fpga, b"bitstream 1\n".repeat(5_000)).unwrap();
    fleet.make_images(
        "1.0",
        &[("rootfs", &rootfs)],
        &[("mcu", &mcu), ("fpga", &fpga)],
        &[],
    );
    // The factory flashed the mcu with 1.0's firmware (and more bytes after it).
    let flash = fleet.path("mcu-flash.bin");
    let mut flashed = std::fs::read(&mcu).unwrap();
    flashed.resize(MIB as usize, 0xff);
    std::fs::write(&flash, &flashed).unwrap();
    let handler = fleet.path("load-fpga");
    std::fs::write(&handler, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        &handler,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // A device with both targets, provisioned from the factory release's manifest.
    let provisioned = |name: &str| {
        let device = fleet.device(name, "1.0", 5 * MIB, "/nonexistent-store", |config| {
            config.single_copy.insert(
                "mcu".into(),
                diffota::config::SingleCopyConfig {
                    device: Some(flash.clone()),
                    handler: None,
                },
            );
            config.single_copy.insert(
                "fpga".into(),
                diffota::config::SingleCopyConfig {
                    device: None,
                    handler: Some(handler.clone()),
                },
            );
        });
        let stdout = run_ok(
            device
                .diffota()
                .arg("provision")
                .arg(fleet.store.join("releases/1.0/release.json")),
        );
        (device, stdout)
    };
    let (device, stdout) = provisioned("device");
    assert!(
        stdout.contains("single-copy target mcu holds its image of 1.0: recorded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("single-copy target fpga: not recorded"),
        "{stdout}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(device.diffota().args(["status", "--json"]))).unwrap();
    assert_eq!(status["state"]["single_copy"]["mcu"]["version"], "1.0");
    assert!(status["state"]["single_copy"]["fpga"].is_null());
    // A target that does not hold the image is not recorded.
    std::fs::write(&flash, vec![0u8; MIB as usize]).unwrap();
    let (_, stdout) = provisioned("other");
    assert!(
        stdout.contains("single-copy target mcu: not recorded"),
        "{stdout}"
    );
}
