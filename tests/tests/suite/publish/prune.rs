//! `chunk-server prune`: what it keeps, version order, delta chains, a running make.

use super::*;

#[test]
fn prune_keeps_the_newest_and_what_channels_use() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let store = &fleet.store;
    for release in 1..=4 {
        let image = sample(dir.path(), &format!("v{release}.img"), 2, release);
        make_release(store, keys, &format!("{release}.0"), &image);
    }
    set_channel(store, keys, "old-stable", "1.0", &[]);
    let stdout = run_ok(
        chunk_server()
            .args(["prune", "--keep", "2", "--store"])
            .arg(store),
    );
    assert!(stdout.contains("removed release 2.0"), "{stdout}");
    assert!(
        store.join("releases/1.0").exists(),
        "a channel still points at 1.0"
    );
    assert!(!store.join("releases/2.0").exists());
    assert!(store.join("releases/3.0").exists() && store.join("releases/4.0").exists());
    run_ok(
        chunk_server()
            .arg("verify")
            .arg("--public-key")
            .arg(&keys.public)
            .arg(store),
    );
}

/// prune keeps the newest in the release version order, not in text order.
#[test]
fn prune_orders_pre_releases_and_builds_as_versions() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let store = &fleet.store;
    let versions = [
        "1.0-rc9",
        "1.0-rc10",
        "1.0~rc1",
        "1.0+build9",
        "1.0+build10",
    ];
    for (n, version) in versions.iter().enumerate() {
        let image = sample(dir.path(), &format!("v{n}.img"), 2, n as u64 + 1);
        make_release(store, keys, version, &image);
    }
    run_ok(
        chunk_server()
            .args(["prune", "--keep", "2", "--store"])
            .arg(store),
    );
    let mut left: Vec<String> = std::fs::read_dir(store.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["1.0+build10", "1.0+build9"]);
    let image = sample(dir.path(), "final.img", 2, 9);
    make_release(store, keys, "1.0-rc11", &image);
    run_ok(
        chunk_server()
            .args(["prune", "--keep", "1", "--store"])
            .arg(store),
    );
    assert!(
        store.join("releases/1.0+build10").exists() && !store.join("releases/1.0-rc11").exists(),
        "1.0-rc11 is a pre-release of 1.0, older than 1.0+build10"
    );
}

/// Without any race: 1.0, 2.0 with frames against 1.0, 3.0 with frames against 2.0, then
/// `prune --keep 2`. The kept 2.0's frames build on the removed 1.0: prune says so, and the
/// store still passes its own check.
#[test]
fn prune_of_a_delta_chain_leaves_a_store_that_verifies() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let store = &fleet.store;
    let v1 = sample(dir.path(), "v1.img", 4, 1);
    let (v2, v3) = (dir.path().join("v2.img"), dir.path().join("v3.img"));
    edited_copy(&v1, &v2, 1, 3, 0x5a);
    edited_copy(&v2, &v3, 2, 4, 0x33);
    make_release(store, keys, "1.0", &v1);
    run_ok(make_command(store, keys, "2.0", "test-board", &v2).args(["--delta-from", "1.0"]));
    run_ok(make_command(store, keys, "3.0", "test-board", &v3).args(["--delta-from", "2.0"]));
    let stdout = run_ok(
        chunk_server()
            .args(["prune", "--keep", "2", "--store"])
            .arg(store),
    );
    assert!(stdout.contains("removed release 1.0"), "{stdout}");
    assert!(
        stdout.contains("kept release 2.0: ")
            && stdout.contains("delta frames build on removed releases"),
        "{stdout}"
    );
    let output = verify_store(store, keys);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("0 problems"), "{report}");
    assert!(
        report.contains("build on releases no longer in the store (pruned)"),
        "{report}"
    );
    // A typo in the store path is an error, not "0 problems".
    let output = verify_store(&dir.path().join("stroe"), keys);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("stroe: no such store"));
}

/// `prune` while `make --delta-from` runs waits for it, instead of removing make's
/// temporary pack under it; both end well and the store verifies.
#[test]
fn prune_waits_for_a_running_make() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let store = &fleet.store;
    let v1 = sample(dir.path(), "v1.img", 24, 1);
    let v2 = dir.path().join("v2.img");
    edited_copy(&v1, &v2, 2, 20, 0x5a);
    make_release(store, keys, "1.0", &v1);
    let mut make = make_command(store, keys, "2.0", "test-board", &v2)
        .args(["--delta-from", "1.0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once make holds the store lock (its line is in the lock file), prune starts.
    let holder = format!("chunk-server make 2.0 (pid {}", make.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(store.join(".lock"))
        .unwrap_or_default()
        .contains(&holder)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "make never took the lock"
        );
        assert!(
            make.try_wait().unwrap().is_none(),
            "make ended before prune started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let prune = run(chunk_server()
        .args(["prune", "--keep", "1", "--store"])
        .arg(store));
    let made = make.wait_with_output().unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(prune.status.success());
    let waited = String::from_utf8_lossy(&prune.stderr);
    assert!(
        waited.contains("waiting for the store lock") && waited.contains(&holder),
        "{waited}"
    );
    // Prune ran after make: it saw 2.0 and kept it as the newest.
    assert!(String::from_utf8_lossy(&prune.stdout).contains("removed release 1.0"));
    let output = verify_store(store, keys);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
