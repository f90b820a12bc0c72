//! `chunk-server verify` names what is wrong (a flipped byte, a channel file), and publishing
//! mistakes name the problem and what to do.

use super::*;

#[test]
fn verify_names_a_flipped_byte_in_pack_index_or_signature() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let image = sample(dir.path(), "v1.img", 4, 1);
    let pristine = dir.path().join("pristine");
    make_release(&pristine, keys, "1.0", &image);
    let verify = |store: &Path| {
        run(chunk_server()
            .arg("verify")
            .arg("--public-key")
            .arg(&keys.public)
            .arg(store))
    };

    let copy = |name: &str| {
        let store = dir.path().join(name);
        run_ok(Command::new("cp").arg("-r").arg(&pristine).arg(&store));
        store
    };

    let store = copy("bad-pack");
    let pack = pack_files(&store).remove(0);
    flip_byte(&pack, 1000);
    let output = verify(&store);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stdout.contains(&pack_name) && stdout.contains("corrupt pack"),
        "{stdout}"
    );

    let store = copy("bad-index");
    flip_byte(&store.join("releases/1.0/rootfs.didx"), 100);
    let output = verify(&store);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("releases/1.0/rootfs.didx"));

    let store = copy("bad-signature");
    let signature = store.join("releases/1.0/rootfs.didx.minisig");
    let text = std::fs::read_to_string(&signature).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut sig_line: Vec<u8> = lines[1].clone().into_bytes();
    sig_line[20] = if sig_line[20] == b'A' { b'B' } else { b'A' };
    lines[1] = String::from_utf8(sig_line).unwrap();
    std::fs::write(&signature, lines.join("\n") + "\n").unwrap();
    let output = verify(&store);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("signature"));

    let store = copy("missing-pack");
    std::fs::remove_file(pack_files(&store).remove(0)).unwrap();
    let output = verify(&store);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("missing pack"));

    // Validly signed indexes that devices would still reject: a wrong whole-image hash (the
    // slot fails its read-back) and an index that has expired.
    let edit_and_resign = |name: &str, edit: &dyn Fn(&mut diffota_format::Index)| {
        let store = copy(name);
        let index_path = store.join("releases/1.0/rootfs.didx");
        let mut index =
            diffota_format::Index::decode(&std::fs::read(&index_path).unwrap()).unwrap();
        edit(&mut index);
        let mut bytes = Vec::new();
        index.encode(&mut bytes);
        std::fs::write(&index_path, bytes).unwrap();
        std::fs::remove_file(store.join("releases/1.0/rootfs.didx.minisig")).unwrap();
        run_ok(
            chunk_server()
                .arg("sign")
                .arg("--key")
                .arg(&keys.secret)
                .arg(&index_path),
        );
        verify(&store)
    };
    let output = edit_and_resign("bad-image-hash", &|index| index.image_hash[0] ^= 1);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("do not hash to the index's image hash"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let output = edit_and_resign("expired", &|index| index.expires = Some(index.created + 1));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("expired at"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    assert!(verify(&pristine).status.success());
}

/// `verify` reads the channel files as a device would: one signed by a key the device does
/// not trust, one that expired and one naming a release the store lacks are each named.
#[test]
fn verify_checks_channel_files() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let store = &fleet.store;
    for release in 1..=2 {
        let image = sample(dir.path(), &format!("v{release}.img"), 1, release);
        make_release(store, keys, &format!("{release}.0"), &image);
    }
    set_channel(store, keys, "stable", "2.0", &[]);
    let output = verify_store(store, keys);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains("1 channels checked: 0 problems"),
        "{report}"
    );

    let stranger = Keys::generate(dir.path(), "stranger");
    run_ok(
        chunk_server()
            .arg("sign")
            .arg("--key")
            .arg(&stranger.secret)
            .arg(store.join("channels/stable.json")),
    );
    set_channel(store, keys, "beta", "2.0", &["--expires", "1s"]);
    set_channel(store, keys, "old", "1.0", &[]);
    std::fs::remove_dir_all(store.join("releases/1.0")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let output = verify_store(store, keys);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{report}");
    for (channel, message) in [
        ("stable", "signature: "),
        ("beta", "expired at "),
        (
            "old",
            "names releases/1.0/rootfs.didx, which is not in the store",
        ),
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.contains(&format!("channels/{channel}.json: ")) && l.contains(message)),
            "{channel}: {report}"
        );
    }
    assert!(
        report.contains("3 channels checked: 3 problems"),
        "{report}"
    );
}

/// Mistakes on the build host get a message that names the problem and the next step.
#[test]
fn publishing_mistakes_name_the_problem_and_what_to_do() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let store = &fleet.store;
    make_release(store, keys, "1.0", &sample(dir.path(), "v1.img", 1, 1));
    let output = run(chunk_server()
        .args(["channel", "set", "stable", "--release", "9.9", "--store"])
        .arg(store)
        .arg("--key")
        .arg(&keys.secret));
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("has no release 9.9 named rootfs (it has: 1.0 (rootfs)); make it first"),
        "{error}"
    );
    assert_eq!(error.matches("9.9").count(), 1, "{error}");

    let output = run(chunk_server().arg("serve").arg(dir.path().join("nostore")));
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("nostore: no such directory to serve"),
        "{error}"
    );
}
