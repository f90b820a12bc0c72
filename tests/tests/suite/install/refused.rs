//! Releases and device input the updater refuses: downgrades, pre-releases, failed
//! releases, other machines, bad signatures, a broken config.

use super::*;

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
    let fixture = fixture();
    let rc = fixture.path("rc.img");
    write_image(&rc, 8 * MIB, 5, 3).unwrap();
    make_release(&fixture.store, &fixture.keys, "1.0~rc1", &rc);
    make_release(&fixture.store, &fixture.keys, "1.0-rc1", &rc);
    set_channel(&fixture.store, &fixture.keys, "final", "1.0", &[]);
    set_channel(&fixture.store, &fixture.keys, "tilde-rc", "1.0~rc1", &[]);
    set_channel(&fixture.store, &fixture.keys, "hyphen-rc", "1.0-rc1", &[]);
    let url = format!("file://{}", fixture.store.display());

    let on_rc = fixture.device("on-rc", "1.0", 10 * MIB, &url, |_| {});
    record_running_version(&on_rc, "1.0~rc1");
    run_ok(on_rc.diffota().args(["install", "--channel", "final"]));
    assert_installed(&on_rc, fixture.image("1.0"));

    for channel in ["tilde-rc", "hyphen-rc"] {
        let on_final = fixture.device(
            &format!("on-final-{channel}"),
            "1.0",
            10 * MIB,
            &url,
            |_| {},
        );
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
    let fixture = fixture();
    let server = fixture.serve();
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
    std::fs::write(&index_path, &index).unwrap();
    // The compressed index beside it, which a device with no stored index fetches first,
    // rebuilds the same tampered bytes: refused there, then in the whole index.
    std::fs::write(
        tampered_store.join("releases/2.0/rootfs.didx.zst"),
        diffota_format::index_deltas::encode(&[], &index, 3).unwrap(),
    )
    .unwrap();
    let tampered = fixture.device(
        "tampered",
        "1.0",
        10 * MIB,
        &format!("file://{}", tampered_store.display()),
        |_| {},
    );
    assert_install_fails(&tampered, &fixture, &[], "signature does not verify");

    // Signed by a key the device does not trust.
    let other = Keys::generate(fixture.dir.path(), "other");
    let untrusting = Device::new(&fixture.path("untrusting"), fixture.image("1.0"), 10 * MIB);
    untrusting.configure(&url, &[&other.public], |_| {});
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
    let device = fixture.device("foreign", "1.0", 10 * MIB, &url, |config| {
        config.channel = "foreign".into()
    });
    assert_install_fails(&device, &fixture, &[], "other-board");

    // Downgrade: the device runs 2.0 (recorded in its state); 1.0 is refused unless allowed.
    set_channel(&fixture.store, &fixture.keys, "old", "1.0", &[]);
    let device = fixture.device("downgrade", "1.0", 10 * MIB, &url, |_| {});
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
    assert_installed(&device, fixture.image("1.0"));

    // An image larger than the slot.
    let small = fixture.device("small", "1.0", 8 * MIB - 4096, &url, |_| {});
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
    let same = fixture.device("same", "1.0", 10 * MIB, &url, |_| {});
    std::fs::remove_file(&same.slot_b).unwrap();
    std::os::unix::fs::symlink(&same.slot_a, &same.slot_b).unwrap();
    assert_install_fails(&same, &fixture, &[], "it is the running slot");

    // A corrupt state file.
    let corrupt = fixture.device("corrupt", "1.0", 10 * MIB, &url, |_| {});
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
    let typo = fixture.device("typo", "1.0", 10 * MIB, &url, |_| {});
    let text = std::fs::read_to_string(&typo.config).unwrap();
    typo.write_config_text(&text.replacen("[http]\n", "[http]\nconcurrenzy = 2\n", 1));
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
    let device = fixture.device("expired", "1.0", 10 * MIB, &url, |_| {});
    assert_install_fails(&device, &fixture, &["--channel", "short"], "expired at");
    assert!(
        std::fs::read(&device.slot_b)
            .unwrap()
            .iter()
            .all(|&b| b == 0),
        "slot b untouched"
    );
}
