//! Offline update files: `chunk-server bundle` and `diffota install FILE`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use diffota::boot::grub::GrubEnv;
use diffota::boot::EnvStore;
use diffota_tests::fleet::{Fleet, MIB};
use diffota_tests::*;

/// Releases 0.9, 1.0 and 2.0 of a 6 MiB sample image.
fn setup() -> Fleet {
    let mut fleet = Fleet::new();
    for (number, version) in ["0.9", "1.0", "2.0"].into_iter().enumerate() {
        fleet.sample_release(version, 6 * MIB, 21, number as u64 + 1);
    }
    fleet
}

/// A device running `running`, with a GRUB environment so "nothing written to the
/// bootloader" can be checked, and a store URL that does not exist.
fn device(setup: &Fleet, name: &str, running: &Path) -> (Device, PathBuf) {
    let device = Device::new(&setup.dir.path().join(name), running, 7 * MIB);
    let grubenv = device.dir.join("grubenv");
    let vars: BTreeMap<String, String> = [("diffota_slot", "a"), ("bootlimit", "3")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    GrubEnv {
        path: grubenv.clone(),
    }
    .store(&vars)
    .unwrap();
    device.configure("/nonexistent-store", &[&setup.keys.public], |config| {
        config.boot.backend = "grub".into();
        config.boot.grubenv = grubenv.clone();
    });
    (device, grubenv)
}

fn slot_b_holds(device: &Device, image: &Path) -> bool {
    let expected = std::fs::read(image).unwrap();
    device.slot_bytes(Slot::B, expected.len()) == expected
}

#[test]
fn delta_bundle_installs_and_reports_its_size() {
    let setup = setup();
    let (file, _) = setup.bundle("2.0", &["1.0"], "1.0-to-2.0.dfb");
    let (device, grubenv) = device(&setup, "device", setup.image("1.0"));
    let check = run_ok(device.diffota().arg("check").arg(&file));
    assert!(check.contains("bundle: applies"), "{check}");
    let stdout = run_ok(device.diffota().arg("install").arg(&file));
    assert!(stdout.contains("installed 2.0 into slot b"), "{stdout}");
    assert!(slot_b_holds(&device, setup.image("2.0")));
    assert!(std::fs::read_to_string(&grubenv)
        .unwrap()
        .contains("diffota_slot=b"));

    let size = std::fs::metadata(&file).unwrap().len();
    let full = std::fs::metadata(setup.image("2.0")).unwrap().len();
    let mut report = format!("bundle 1.0 -> 2.0: {size} bytes for a {full} byte image");
    if require_tool("zstd", "zstd") {
        let zstd = run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!("zstd -19 -q -c {:?} | wc -c", setup.image("2.0"))),
        );
        report.push_str(&format!("; zstd -19 of the image: {} bytes", zstd.trim()));
    }
    if require_tool("xdelta3", "xdelta3") {
        let delta = setup.dir.path().join("delta.vcdiff");
        run_ok(
            Command::new("xdelta3")
                .arg("-e")
                .arg("-f")
                .arg("-s")
                .arg(setup.image("1.0"))
                .arg(setup.image("2.0"))
                .arg(&delta),
        );
        report.push_str(&format!(
            "; xdelta3 -e -s v1 v2: {} bytes",
            std::fs::metadata(&delta).unwrap().len()
        ));
    }
    println!("{report}");
    eprintln!("{report}");
}

#[test]
fn full_bundle_installs_over_garbage() {
    let setup = setup();
    let (file, _) = setup.bundle("2.0", &[], "full.dfb");
    let garbage = setup.dir.path().join("garbage.img");
    std::fs::write(&garbage, vec![0x6bu8; 6 * MIB as usize]).unwrap();
    let (device, _) = device(&setup, "device", &garbage);
    run_ok(device.diffota().arg("install").arg(&file));
    assert!(slot_b_holds(&device, setup.image("2.0")));
}

#[test]
fn bundle_for_another_release_names_what_it_needs() {
    let setup = setup();
    let (file, _) = setup.bundle("2.0", &["1.0"], "1.0-to-2.0.dfb");
    let (device, grubenv) = device(&setup, "device", setup.image("0.9"));
    let before = std::fs::read(&grubenv).unwrap();
    let check = run_ok(device.diffota().arg("check").arg(&file));
    assert!(check.contains("made for devices on 1.0"), "{check}");
    let output = run(device.diffota().arg("install").arg(&file));
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("made for devices on 1.0"), "{error}");
    assert_eq!(
        std::fs::read(&grubenv).unwrap(),
        before,
        "bootloader untouched"
    );
    assert!(
        std::fs::read(&device.slot_b)
            .unwrap()
            .iter()
            .all(|&b| b == 0),
        "nothing written to slot b"
    );

    // With the store reachable, what the bundle lacks is fetched from it.
    device.configure(
        &format!("file://{}", setup.store.display()),
        &[&setup.keys.public],
        |config| {
            config.boot.backend = "grub".into();
            config.boot.grubenv = grubenv.clone();
        },
    );
    run_ok(device.diffota().arg("install").arg(&file));
    assert!(slot_b_holds(&device, setup.image("2.0")));
}

#[test]
fn patch_from_two_images_without_a_store() {
    let setup = setup();
    let out = setup.dir.path().join("patch.dfb");
    run_ok(
        chunk_server()
            .arg("bundle")
            .arg("--from-image")
            .arg(setup.image("1.0"))
            .arg("--to-image")
            .arg(setup.image("2.0"))
            .args([
                "--version",
                "2.0",
                "--compatible",
                "test-board",
                "--zstd-level",
                "3",
                "--key",
            ])
            .arg(&setup.keys.secret)
            .arg(&out),
    );
    let (device, _) = device(&setup, "device", setup.image("1.0"));
    run_ok(device.diffota().arg("install").arg(&out));
    assert!(slot_b_holds(&device, setup.image("2.0")));
    let leftovers: Vec<_> = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("store-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary store left behind");
}

#[test]
fn bad_bundles_are_refused() {
    let setup = setup();
    let (good, _) = setup.bundle("2.0", &["1.0"], "good.dfb");
    let bytes = std::fs::read(&good).unwrap();
    let header_length = 16 + 5 * 20;
    let index_offset = u64::from_le_bytes(bytes[16 + 4..16 + 12].try_into().unwrap()) as usize;
    let variants: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            bytes[..bytes.len() - 100].to_vec(),
            "outside the file",
        ),
        ("header-only", bytes[..header_length - 3].to_vec(), "bundle"),
        (
            "index-flipped",
            {
                let mut b = bytes.clone();
                b[index_offset + 40] ^= 1;
                b
            },
            "signature does not verify",
        ),
        (
            "data-flipped",
            {
                let mut b = bytes.clone();
                let at = b.len() - 5000;
                b[at] ^= 0x40;
                b
            },
            "chunk",
        ),
        (
            "oversized",
            {
                let mut b = bytes.clone();
                b[16 + 12..16 + 20].copy_from_slice(&u64::MAX.to_le_bytes());
                b
            },
            "bundle",
        ),
        (
            "not-a-bundle",
            b"hello, this is not a bundle at all, just some text".to_vec(),
            "bad magic",
        ),
    ];
    for (name, content, message) in variants {
        let path = setup.dir.path().join(format!("{name}.dfb"));
        std::fs::write(&path, content).unwrap();
        let (device, grubenv) = device(&setup, name, setup.image("1.0"));
        let before = std::fs::read(&grubenv).unwrap();
        let running_before = std::fs::read(&device.slot_a).unwrap();
        let output = run(device.diffota().arg("install").arg(&path));
        assert!(!output.status.success(), "{name} was accepted");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(
            error.contains(message),
            "{name}: expected {message:?} in {error}"
        );
        assert_eq!(
            std::fs::read(&grubenv).unwrap(),
            before,
            "{name}: bootloader touched"
        );
        assert_eq!(
            std::fs::read(&device.slot_a).unwrap(),
            running_before,
            "{name}: running slot touched"
        );
    }

    // Another board's bundle, and a bundle signed by a key the device does not trust.
    let other_store = setup.dir.path().join("other-store");
    make_release_for(
        &other_store,
        &setup.keys,
        "2.0",
        "other-board",
        setup.image("2.0"),
    );
    let other = setup.dir.path().join("other.dfb");
    run_ok(
        chunk_server()
            .args(["bundle", "--to", "2.0", "--store"])
            .arg(&other_store)
            .arg(&other),
    );
    let (device, _) = device(&setup, "compatible", setup.image("1.0"));
    let output = run(device.diffota().arg("install").arg(&other));
    assert!(String::from_utf8_lossy(&output.stderr).contains("other-board"));

    let stranger = Keys::generate(setup.dir.path(), "stranger");
    let stranger_store = setup.dir.path().join("stranger-store");
    make_release(&stranger_store, &stranger, "2.0", setup.image("2.0"));
    let untrusted = setup.dir.path().join("untrusted.dfb");
    run_ok(
        chunk_server()
            .args(["bundle", "--to", "2.0", "--store"])
            .arg(&stranger_store)
            .arg(&untrusted),
    );
    let output = run(device.diffota().arg("install").arg(&untrusted));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not trusted"));
}

/// `bytes` with section `kind` moved to the end of the file, `length` bytes long, holding
/// `content` (the rest zero): what a hostile bundle declares.
fn with_section_at_end(bytes: &[u8], kind: u32, content: &[u8], length: u64) -> Vec<u8> {
    let count = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut out = bytes.to_vec();
    let offset = out.len() as u64;
    let record = (0..count)
        .map(|n| 16 + n * 20)
        .find(|&at| u32::from_le_bytes(out[at..at + 4].try_into().unwrap()) == kind)
        .expect("the bundle has that section");
    out[record + 4..record + 12].copy_from_slice(&offset.to_le_bytes());
    out[record + 12..record + 20].copy_from_slice(&length.to_le_bytes());
    out.extend_from_slice(content);
    out.resize((offset + length) as usize, 0);
    out
}

#[test]
fn huge_bundle_sections_are_refused_before_they_are_read() {
    let setup = setup();
    let (good, _) = setup.bundle("2.0", &["1.0"], "good.dfb");
    let bytes = std::fs::read(&good).unwrap();
    // Signature (2), chunk table (3) and notes (5) sections of 64 MiB each; the real
    // signature and index stay, so only the section's length is wrong.
    for (kind, name, content) in [
        (2u32, "Signature", &b""[..]),
        (3, "ChunkTable", b""),
        (5, "Notes", b"{}"),
    ] {
        let path = setup.dir.path().join(format!("huge-{name}.dfb"));
        let mut hostile = with_section_at_end(&bytes, kind, content, 64 * MIB);
        if kind == 2 {
            // Keep a verifiable signature in the first bytes so that the cap, not the
            // signature check, is what refuses it.
            let signature = setup.store.join("releases/2.0/rootfs.didx.minisig");
            let text = std::fs::read(signature).unwrap();
            let at = bytes.len();
            hostile[at..at + text.len()].copy_from_slice(&text);
        }
        std::fs::write(&path, &hostile).unwrap();
        let (device, grubenv) = device(&setup, &format!("huge-{name}"), setup.image("1.0"));
        let before = std::fs::read(&grubenv).unwrap();
        let output = run(device.diffota().arg("install").arg(&path));
        assert!(!output.status.success(), "{name}: accepted");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(
            error.contains(&format!(
                "bundle section {name} is 67108864 bytes, more than the"
            )),
            "{name}: {error}"
        );
        assert_eq!(
            std::fs::read(&grubenv).unwrap(),
            before,
            "{name}: bootloader touched"
        );
    }
}

#[test]
fn bundle_notes_never_choose_what_the_device_asks_the_store_for() {
    let setup = setup();
    let (file, _) = setup.bundle("2.0", &["1.0"], "1.0-to-2.0.dfb");
    let bytes = std::fs::read(&file).unwrap();
    let notes = br#"{"to": "2.0", "from": ["1.0"], "name": "../../../../outside"}"#;
    let hostile = with_section_at_end(&bytes, 5, notes, notes.len() as u64);
    let path = setup.dir.path().join("hostile-notes.dfb");
    std::fs::write(&path, hostile).unwrap();
    // A device on 0.9 lacks chunks the bundle does not carry: it asks the store.
    let log = setup.dir.path().join("access.log");
    let server = StoreServer::start(&setup.store, &log, None);
    let (device, grubenv) = device(&setup, "device", setup.image("0.9"));
    device.configure(&server.url, &[&setup.keys.public], |config| {
        config.boot.backend = "grub".into();
        config.boot.grubenv = grubenv.clone();
    });
    run_ok(device.diffota().arg("install").arg(&path));
    assert!(slot_b_holds(&device, setup.image("2.0")));
    let served = server.served();
    assert!(
        !served.is_empty(),
        "the store was asked for what the bundle lacks"
    );
    for request in served {
        assert!(
            request.path.starts_with("/packs/"),
            "the device asked for {}: only packs named by the signed index",
            request.path
        );
    }
}
