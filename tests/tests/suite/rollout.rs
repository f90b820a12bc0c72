//! Phased rollout and release security end to end: a fleet of file-backed devices against
//! a real server, replayed and expired channel files, key rotation.

use std::collections::BTreeSet;

use diffota_format::channel::bucket;
use diffota_tests::fleet::Fleet;
use diffota_tests::*;

const KIB: u64 = 1024;

/// Releases 1.0 and 2.0 of a 256 KiB sample image, no channel yet.
fn store() -> Fleet {
    let mut fleet = Fleet::new();
    fleet.sample_release("1.0", 256 * KIB, 8, 1);
    fleet.sample_release("2.0", 256 * KIB, 8, 2);
    fleet
}

fn device(s: &Fleet, name: &str, url: &str, id: &str, keys: &[&std::path::Path]) -> Device {
    let device = Device::new(&s.dir.path().join(name), s.image("1.0"), 512 * KIB);
    device.configure(url, keys, |_| {});
    let config = std::fs::read_to_string(&device.config)
        .unwrap()
        .replace("test-device", id);
    std::fs::write(&device.config, config).unwrap();
    device
}

#[test]
fn fleet_of_200_at_10_then_50_percent() {
    let s = store();
    let server = s.serve();
    let ids: Vec<String> = (0..200).map(|i| format!("device_{i:03}")).collect();
    let devices: Vec<Device> = ids
        .iter()
        .map(|id| device(&s, id, &server.url, id, &[&s.keys.public]))
        .collect();
    let round = |percent: &str| -> BTreeSet<String> {
        set_channel(&s.store, &s.keys, "stable", "2.0", &["--percent", percent]);
        let mut installed = BTreeSet::new();
        for (id, device) in ids.iter().zip(&devices) {
            let output = run(device.diffota().arg("install"));
            let stdout = String::from_utf8_lossy(&output.stdout);
            if stdout.contains("installed 2.0") {
                assert_eq!(output.status.code(), Some(0), "{id}: {stdout}");
                installed.insert(id.clone());
            } else if stdout.contains("boots on trial after the next reboot") {
                assert_eq!(
                    output.status.code(),
                    Some(3),
                    "{id}: nothing to do: {stdout}"
                );
                installed.insert(id.clone());
            } else {
                assert!(stdout.contains("not in rollout"), "{id}: {stdout}");
                assert_eq!(
                    output.status.code(),
                    Some(3),
                    "{id}: nothing to do: {stdout}"
                );
            }
        }
        installed
    };
    let at_10 = round("10");
    let at_50 = round("50");
    let expected = |percent: u32| -> BTreeSet<String> {
        ids.iter()
            .filter(|id| bucket(id, "2.0") < percent * 100)
            .cloned()
            .collect()
    };
    println!(
        "fleet: {} of 200 devices installed at 10%, {} at 50%",
        at_10.len(),
        at_50.len()
    );
    assert_eq!(at_10, expected(10));
    assert_eq!(at_50, expected(50));
    assert!(
        (8..=35).contains(&at_10.len()),
        "{} of 200 at 10%",
        at_10.len()
    );
    assert!(
        (70..=130).contains(&at_50.len()),
        "{} of 200 at 50%",
        at_50.len()
    );
    assert!(
        at_10.is_subset(&at_50),
        "raising the percentage removed devices"
    );

    // A canary outside the rollout is always eligible; a paused channel starts nothing.
    let outside = ids.iter().position(|id| !at_50.contains(id)).unwrap();
    set_channel(
        &s.store,
        &s.keys,
        "stable",
        "2.0",
        &["--percent", "0", "--device", &ids[outside]],
    );
    let check = run_ok(devices[outside].diffota().arg("check"));
    assert!(check.contains("canary"), "{check}");
    assert!(run_ok(devices[outside].diffota().arg("install")).contains("installed 2.0"));
    set_channel(
        &s.store,
        &s.keys,
        "stable",
        "2.0",
        &["--pause", "--device", &ids[outside]],
    );
    let fresh = device(&s, "fresh", &server.url, "device_fresh", &[&s.keys.public]);
    assert!(run_exit(fresh.diffota().arg("install"), 3).contains("channel is paused"));

    // `channel show --devices` counts the eligible devices of a list.
    set_channel(&s.store, &s.keys, "stable", "2.0", &["--percent", "50"]);
    let list = s.dir.path().join("devices.txt");
    std::fs::write(&list, ids.join("\n")).unwrap();
    let shown = run_ok(
        chunk_server()
            .args(["channel", "show", "stable", "--store"])
            .arg(&s.store)
            .arg("--devices")
            .arg(&list),
    );
    assert!(
        shown.contains(&format!(
            "{} of 200 listed devices are eligible now",
            at_50.len()
        )),
        "{shown}"
    );
}

#[test]
fn replayed_channel_files_are_refused() {
    let s = store();
    let server = s.serve();
    set_channel(&s.store, &s.keys, "stable", "1.0", &[]);
    let channel = s.store.join("channels/stable.json");
    let signature = s.store.join("channels/stable.json.minisig");
    let old = (
        std::fs::read(&channel).unwrap(),
        std::fs::read(&signature).unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    set_channel(&s.store, &s.keys, "stable", "2.0", &[]);
    let dev = device(&s, "dev", &server.url, "replay-1", &[&s.keys.public]);
    run_ok(dev.diffota().arg("check"));
    run_ok(dev.diffota().arg("install"));
    // A mirror serves the older, validly signed file.
    std::fs::write(&channel, &old.0).unwrap();
    std::fs::write(&signature, &old.1).unwrap();
    let output = run(dev.diffota().arg("install"));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is older than"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn key_rotation() {
    let s = store();
    let server = s.serve();
    let new_keys = Keys::generate(s.dir.path(), "release-2027");
    set_channel(&s.store, &s.keys, "stable", "2.0", &[]);
    let resign = |keys: &Keys| {
        run_ok(
            chunk_server()
                .arg("sign")
                .arg("--key")
                .arg(&keys.secret)
                .arg(s.store.join("releases/2.0/rootfs.didx"))
                .arg(s.store.join("channels/stable.json")),
        );
    };

    // Step 1: devices trust both keys; the store is signed with the new key.
    resign(&new_keys);
    let both = device(
        &s,
        "both",
        &server.url,
        "rot-1",
        &[&s.keys.public, &new_keys.public],
    );
    assert!(run_ok(both.diffota().arg("install")).contains("installed 2.0"));

    // A device that still trusts only the old key refuses the new signatures.
    let old_only = device(&s, "old-only", &server.url, "rot-2", &[&s.keys.public]);
    let output = run(old_only.diffota().arg("install"));
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("not trusted"), "{error}");
    // The message names the key that signed and the keys trusted (as minisign prints key
    // ids), says what to do, and names the channel file once.
    let id_of = |path: &std::path::Path| {
        diffota_format::signature::key_id(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    assert!(
        error.contains(&format!(
            "signed by key {}, which is not trusted",
            id_of(&new_keys.public)
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("(trusted: {} (", id_of(&s.keys.public))),
        "{error}"
    );
    assert!(error.contains("trust its public key"), "{error}");
    assert_eq!(error.matches("channels/stable.json").count(), 1, "{error}");

    // Step 2: the old key is removed from the config; releases signed only with it are refused.
    resign(&s.keys);
    let new_only = device(&s, "new-only", &server.url, "rot-3", &[&new_keys.public]);
    let output = run(new_only.diffota().arg("install"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not trusted"));
    assert!(
        std::fs::read(&new_only.slot_b)
            .unwrap()
            .iter()
            .all(|&b| b == 0),
        "nothing written"
    );
}
