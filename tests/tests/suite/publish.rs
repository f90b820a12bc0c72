//! The publishing side end to end: `chunk-server` make, verify, diff, sign, prune and serve,
//! with the real binaries, and minisign interop with Debian's `minisign`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use diffota_tests::fleet::Fleet;
use diffota_tests::sample::write_image;
use diffota_tests::*;

fn sample(dir: &Path, name: &str, mib: u64, release: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    write_image(&path, mib << 20, 11, release).unwrap();
    path
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn pack_files(store: &Path) -> Vec<std::path::PathBuf> {
    let mut packs: Vec<_> = std::fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort();
    packs
}

#[test]
fn make_then_verify_round_trip_and_reproducible() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let image = sample(dir.path(), "v1.img", 8, 1);
    let store = &fleet.store;
    let summary = make_release(store, keys, "1.0", &image);
    assert_eq!(summary["image_bytes"], 8 << 20);
    assert_eq!(summary["new_chunks"], summary["distinct_chunks"]);
    run_ok(
        chunk_server()
            .arg("verify")
            .arg("--public-key")
            .arg(&keys.public)
            .arg(store),
    );

    let index = store.join("releases/1.0/rootfs.didx");
    let first = std::fs::read(&index).unwrap();
    let packs_before = pack_files(store);
    let again = make_release(store, keys, "1.0", &image);
    assert_eq!(
        std::fs::read(&index).unwrap(),
        first,
        "same image, same version: byte-identical index"
    );
    assert_eq!(again["new_chunks"], 0);
    assert_eq!(pack_files(store), packs_before, "no new pack");

    // A release version is immutable.
    let other = sample(dir.path(), "v2.img", 8, 2);
    let output = run(chunk_server()
        .args(["make", "--store"])
        .arg(store)
        .args([
            "--version",
            "1.0",
            "--compatible",
            "test-board",
            "--zstd-level",
            "3",
            "--key",
        ])
        .arg(&keys.secret)
        .arg(&other)
        .env("SOURCE_DATE_EPOCH", "1790000000"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&index).unwrap(), first);
}

#[test]
fn one_changed_block_adds_few_chunks_and_diff_says_so() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let v1 = sample(dir.path(), "v1.img", 16, 1);
    let mut bytes = std::fs::read(&v1).unwrap();
    let middle = bytes.len() / 2 / 4096 * 4096;
    for (i, byte) in bytes[middle..middle + 4096].iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(31) ^ 0xa5;
    }
    let v2 = dir.path().join("v2.img");
    std::fs::write(&v2, &bytes).unwrap();
    let store = &fleet.store;
    make_release(store, keys, "1.0", &v1);
    let summary = make_release(store, keys, "2.0", &v2);
    let new_chunks = summary["new_chunks"].as_u64().unwrap();
    assert!(
        (1..=3).contains(&new_chunks),
        "{new_chunks} new chunks for one changed block"
    );

    let stdout = run_ok(
        chunk_server()
            .args(["diff", "--json"])
            .arg(store.join("releases/1.0/rootfs.didx"))
            .arg(store.join("releases/2.0/rootfs.didx")),
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["fetched_chunks"], new_chunks);
    assert_eq!(
        report["requests"], 3,
        "one range for the new chunks, plus the index and its signature"
    );
    let index_size = std::fs::metadata(store.join("releases/2.0/rootfs.didx"))
        .unwrap()
        .len();
    assert!(report["download_bytes"].as_u64().unwrap() < index_size + 3 * 300 * 1024);
}

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

#[test]
fn minisign_interop_both_ways() {
    if !require_tool("minisign", "minisign") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = sample(dir.path(), "v1.img", 2, 1);
    let store = dir.path().join("store");

    // Our key and signature, checked by the stock tool.
    let ours = Keys::generate(dir.path(), "ours");
    make_release(&store, &ours, "1.0", &image);
    let index = store.join("releases/1.0/rootfs.didx");
    run_ok(
        Command::new("minisign")
            .arg("-Vm")
            .arg(&index)
            .arg("-p")
            .arg(&ours.public),
    );

    // A key made by `minisign -G` (unencrypted with -W) signs with chunk-server, and a
    // signature made by `minisign -S` verifies with chunk-server.
    let theirs = Keys {
        secret: dir.path().join("theirs.key"),
        public: dir.path().join("theirs.pub"),
    };
    run_ok(
        Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(&theirs.public)
            .arg("-s")
            .arg(&theirs.secret),
    );
    let store2 = dir.path().join("store2");
    make_release(&store2, &theirs, "1.0", &image);
    run_ok(
        chunk_server()
            .arg("verify")
            .arg("--public-key")
            .arg(&theirs.public)
            .arg(&store2),
    );
    run_ok(
        Command::new("minisign")
            .arg("-Vm")
            .arg(store2.join("releases/1.0/rootfs.didx"))
            .arg("-p")
            .arg(&theirs.public),
    );

    let unsigned_store = dir.path().join("store3");
    run_ok(
        chunk_server()
            .args([
                "make",
                "--no-sign",
                "--zstd-level",
                "3",
                "--compatible",
                "test-board",
                "--version",
                "1.0",
                "--store",
            ])
            .arg(&unsigned_store)
            .arg(&image),
    );
    let unsigned_index = unsigned_store.join("releases/1.0/rootfs.didx");
    run_ok(
        Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(&theirs.secret)
            .arg("-m")
            .arg(&unsigned_index),
    );
    run_ok(
        chunk_server()
            .arg("verify")
            .arg("--public-key")
            .arg(&theirs.public)
            .arg(&unsigned_store),
    );
    // And an untrusted key is refused.
    let output = run(chunk_server()
        .arg("verify")
        .arg("--public-key")
        .arg(&ours.public)
        .arg(&unsigned_store));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("not trusted"));
}

#[test]
fn password_protected_keys() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "correct horse\n").unwrap();
    let (secret, public) = (dir.path().join("k.key"), dir.path().join("k.pub"));
    run_ok(
        chunk_server()
            .arg("keygen")
            .arg("--password-file")
            .arg(&password)
            .arg("--secret-key")
            .arg(&secret)
            .arg("--public-key")
            .arg(&public),
    );
    let image = sample(dir.path(), "v1.img", 1, 1);
    let store = dir.path().join("store");
    let make = |password_file: &Path| {
        run(chunk_server()
            .args([
                "make",
                "--zstd-level",
                "3",
                "--compatible",
                "c",
                "--version",
                "1",
                "--store",
            ])
            .arg(&store)
            .arg("--key")
            .arg(&secret)
            .arg("--password-file")
            .arg(password_file)
            .arg(&image))
    };
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong").unwrap();
    let output = make(&wrong);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("wrong password"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !store.join("releases/1/rootfs.didx").exists(),
        "nothing written under a final name"
    );
    assert!(make(&password).status.success());
    run_ok(
        chunk_server()
            .arg("verify")
            .arg("--public-key")
            .arg(&public)
            .arg(&store),
    );
    // keygen refuses to overwrite.
    let output = run(chunk_server()
        .arg("keygen")
        .arg("--unencrypted")
        .arg("--secret-key")
        .arg(&secret)
        .arg("--public-key")
        .arg(&public));
    assert!(!output.status.success());
}

#[test]
fn bad_images_are_named_and_leave_nothing_behind() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let store = &fleet.store;
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    for (image, message) in [
        (empty.clone(), "image is empty"),
        (dir.path().join("missing.img"), "missing.img"),
    ] {
        let output = run(chunk_server()
            .args(["make", "--compatible", "c", "--version", "1", "--store"])
            .arg(store)
            .arg("--key")
            .arg(&keys.secret)
            .arg(&image));
        assert!(!output.status.success());
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(message),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The store's lock file (taken before the image is read) is all there may be.
    let leftovers: Vec<_> = walk(store)
        .into_iter()
        .filter(|p| p.is_file() && *p != store.join(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "files left: {leftovers:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            }
            found.push(path);
        }
    }
    found
}

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

fn verify_store(store: &Path, keys: &Keys) -> std::process::Output {
    run(chunk_server()
        .arg("verify")
        .arg("--public-key")
        .arg(&keys.public)
        .arg(store))
}

/// Making an existing release again is a no-op whatever the clock says, and completes a
/// signature that is missing; another image under the version stays refused.
#[test]
fn make_again_is_a_no_op_and_completes_a_missing_signature() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let image = sample(dir.path(), "v1.img", 4, 1);
    let store = &fleet.store;
    run_ok(&mut make_command(store, keys, "2.0", "test-board", &image));
    let index = store.join("releases/2.0/rootfs.didx");
    let published = std::fs::read(&index).unwrap();
    let signature = std::fs::read(store.join("releases/2.0/rootfs.didx.minisig")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run_ok(&mut make_command(store, keys, "2.0", "test-board", &image));
    assert_eq!(
        std::fs::read(&index).unwrap(),
        published,
        "the published index stays"
    );
    assert_eq!(
        std::fs::read(store.join("releases/2.0/rootfs.didx.minisig")).unwrap(),
        signature
    );

    // An interrupted run left the index without its signature: the next make signs it.
    std::fs::remove_file(store.join("releases/2.0/rootfs.didx.minisig")).unwrap();
    assert!(!verify_store(store, keys).status.success());
    run_ok(&mut make_command(store, keys, "2.0", "test-board", &image));
    assert!(verify_store(store, keys).status.success());
    assert_eq!(std::fs::read(&index).unwrap(), published);

    let other = sample(dir.path(), "v2.img", 4, 2);
    let output = run(&mut make_command(store, keys, "2.0", "test-board", &other));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("already exists with different content")
    );
}

/// `make` killed at several moments leaves nothing half-written under a final name, and the
/// next make completes the release.
#[test]
fn make_killed_at_any_moment_then_made_again() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let image = sample(dir.path(), "big.img", 64, 1);
    // Moments spread over a make of this image (bounded: six kills).
    for (round, delay_ms) in [0u64, 20, 60, 150, 300, 600].into_iter().enumerate() {
        let store = dir.path().join(format!("store-{round}"));
        let mut child = make_command(&store, keys, "1.0", "test-board", &image)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        // Whatever is under a final name is whole (signatures aside: the kill may fall
        // between index and signature).
        let partial = run(chunk_server()
            .args(["verify", "--no-signature-check"])
            .arg(&store));
        assert!(
            !store.exists() || partial.status.success(),
            "after a kill at {delay_ms} ms: {}",
            String::from_utf8_lossy(&partial.stdout)
        );
        run_ok(&mut make_command(&store, keys, "1.0", "test-board", &image));
        let output = verify_store(&store, keys);
        assert!(
            output.status.success(),
            "after a kill at {delay_ms} ms and a new make: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
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

/// Sends one raw HTTP/1.1 request (paths are sent exactly as given) and returns the status,
/// the headers (lower-case names) and the body.
fn raw_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn serve_ranges_head_caching_and_traversal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("packs")).unwrap();
    std::fs::create_dir_all(root.join("channels")).unwrap();
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("packs/p.pack"), &content).unwrap();
    std::fs::write(root.join("channels/stable.json"), b"{}").unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("packs/escape")).unwrap();
    let server = StoreServer::start(&root, &dir.path().join("access.log"), None);
    let address = server.url.trim_start_matches("http://").to_owned();
    let get = |path: &str, headers: &[(&str, &str)]| raw_request(&address, "GET", path, headers);

    let (status, headers, body) = get("/packs/p.pack", &[]);
    assert_eq!(status, 200);
    assert_eq!(body, content);
    assert!(header(&headers, "cache-control")
        .unwrap()
        .contains("immutable"));
    let etag = header(&headers, "etag").unwrap().to_owned();
    assert!(header(&headers, "last-modified").is_some());

    for (range, start, end) in [
        ("bytes=0-99", 0, 100),
        ("bytes=5000-5999", 5000, 6000),
        ("bytes=-10", 9990, 10000),
        ("bytes=9990-20000", 9990, 10000),
    ] {
        let (status, headers, body) = get("/packs/p.pack", &[("Range", range)]);
        assert_eq!(status, 206, "{range}");
        assert_eq!(body, &content[start..end], "{range}");
        assert_eq!(
            header(&headers, "content-range").unwrap(),
            format!("bytes {start}-{}/10000", end - 1)
        );
    }
    let (status, headers, _) = get("/packs/p.pack", &[("Range", "bytes=10000-")]);
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-range"), Some("bytes */10000"));

    let (status, headers, body) = raw_request(&address, "HEAD", "/packs/p.pack", &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-length"), Some("10000"));
    assert!(body.is_empty());

    let (status, _, body) = get("/packs/p.pack", &[("If-None-Match", &etag)]);
    assert_eq!(status, 304);
    assert!(body.is_empty());

    let (_, headers, _) = get("/channels/stable.json", &[]);
    assert!(header(&headers, "cache-control")
        .unwrap()
        .contains("max-age=60"));

    for path in [
        "/../secret.txt",
        "/packs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/packs/%2E%2E/%2e%2e/secret.txt",
        "/packs/escape",
        "//etc/passwd",
        "/packs/",
        "/packs/..%2f..%2fsecret.txt",
    ] {
        let (status, _, body) = get(path, &[]);
        assert_eq!(status, 404, "{path} answered {status}");
        assert!(!String::from_utf8_lossy(&body).contains("secret"), "{path}");
    }
    let (status, _, _) = raw_request(&address, "POST", "/packs/p.pack", &[]);
    assert_eq!(status, 405);

    let served = server.served();
    assert!(served.iter().any(|s| s.path == "/packs/p.pack"
        && s.range == Some((0, 99))
        && s.status == 206
        && s.bytes == 100));
}

/// A store whose only file is `packs/p.pack`: 100,000 bytes of 7.
fn store_with_one_pack() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("packs")).unwrap();
    std::fs::write(root.join("packs/p.pack"), vec![7u8; 100_000]).unwrap();
    (dir, root)
}

/// A request for the first 1000 bytes of that pack, closing the connection after it.
fn range_request(address: &str) -> String {
    format!("GET /packs/p.pack HTTP/1.1\r\nHost: {address}\r\nRange: bytes=0-999\r\nConnection: close\r\n\r\n")
}

#[test]
fn serve_handles_hundreds_of_concurrent_connections() {
    let (dir, root) = store_with_one_pack();
    let server = StoreServer::start(&root, &dir.path().join("access.log"), None);
    let address = server.url.trim_start_matches("http://").to_owned();
    // Open 300 connections first, then send a request on each.
    let mut streams: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    for stream in &mut streams {
        stream
            .write_all(range_request(&address).as_bytes())
            .unwrap();
    }
    for mut stream in streams {
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        assert!(response.starts_with(b"HTTP/1.1 206"));
        assert!(response.ends_with(&[7u8; 1000]));
    }
}

/// Idle and slow clients cannot lock honest ones out: 200 connections that send nothing, on
/// a server limited to 128 file descriptors and 100 connections, are closed after the idle
/// timeout; a client that trickles its headers is closed after the header timeout; an
/// honest client is served throughout.
#[test]
fn serve_sheds_idle_and_slow_clients() {
    use std::os::unix::process::CommandExt;
    let (dir, root) = store_with_one_pack();
    let server = StoreServer::start_with(&root, &dir.path().join("access.log"), None, |command| {
        command.args([
            "--idle-timeout",
            "1s",
            "--header-timeout",
            "1s",
            "--max-connections",
            "100",
        ]);
        // SAFETY: setrlimit is async-signal-safe and touches only the child being started.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 128,
                    rlim_max: 128,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    });
    let address = server.url.trim_start_matches("http://").to_owned();
    let patience = std::time::Duration::from_secs(30);

    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    let mut slow = TcpStream::connect(&address).unwrap();

    // An honest client is served while the idle ones are held (it may wait for a slot).
    let mut honest = TcpStream::connect(&address).unwrap();
    honest.set_read_timeout(Some(patience)).unwrap();
    honest
        .write_all(range_request(&address).as_bytes())
        .unwrap();
    let mut response = Vec::new();
    honest.read_to_end(&mut response).unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 206"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert!(response.ends_with(&[7u8; 1000]));

    // Every idle connection is closed by the server (end of stream, or a reset), not left open.
    for (number, mut stream) in idle.into_iter().enumerate() {
        stream.set_read_timeout(Some(patience)).unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("idle connection {number} was not closed: {other:?}"),
        }
    }

    // A client sending one header byte every 200 ms is closed by the header timeout.
    slow.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let request = format!(
        "GET /packs/p.pack HTTP/1.1\r\nHost: {address}\r\nX-Slow: {}",
        "a".repeat(200)
    );
    let mut closed = false;
    for byte in request.as_bytes() {
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buffer = [0u8; 512];
        match slow.read(&mut buffer) {
            Ok(_) => {
                closed = true; // an answer (408) or the end of the stream
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "a client trickling its headers for 40 s was never closed"
    );
}

/// `make --delta-from`: a release whose new chunks are scattered edits of old ones gets
/// delta frames (index format version 2) that `verify` decodes against their bases; a
/// damaged base is named; a device still installs the release (from the plain frames, which
/// every chunk keeps).
#[test]
fn delta_frames_are_verified_and_the_release_installs() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let v1 = sample(dir.path(), "v1.img", 4, 1);
    let mut edited = std::fs::read(&v1).unwrap();
    for at in (MIB_USIZE..3 * MIB_USIZE).step_by(4096) {
        edited[at] ^= 0x5a; // a rebuilt binary: old bytes with scattered changes
    }
    let v2 = dir.path().join("v2.img");
    std::fs::write(&v2, &edited).unwrap();
    let store = &fleet.store;
    make_release(store, keys, "1.0", &v1);
    let made = run_ok(make_command(store, keys, "2.0", "test-board", &v2).args([
        "--delta-from",
        "1.0",
        "--json",
    ]));
    let made: serde_json::Value = serde_json::from_str(&made).unwrap();
    assert!(made["delta_frames"].as_u64().unwrap() > 0, "{made}");
    let index_bytes = std::fs::read(store.join("releases/2.0/rootfs.didx")).unwrap();
    assert_eq!(index_bytes[8..10], 2u16.to_le_bytes(), "format version 2");
    let index = diffota_format::Index::decode(&index_bytes).unwrap();
    assert!(index.deltas.frames.iter().any(|f| !f.bases.is_empty()));

    let output = verify_store(store, keys);
    assert!(output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    let frames = index.deltas.frames.len();
    assert!(
        report.contains(&format!(
            "{frames} delta frames, 1 index deltas, 0 channels checked: 0 problems"
        )),
        "{report}"
    );

    // Damage the old pack, where the bases live: verify names the frames it cannot rebuild.
    let damaged = dir.path().join("damaged");
    run_ok(Command::new("cp").arg("-r").arg(store).arg(&damaged));
    let old_index = diffota_format::Index::decode(
        &std::fs::read(damaged.join("releases/1.0/rootfs.didx")).unwrap(),
    )
    .unwrap();
    let base = index.deltas.bases[index
        .deltas
        .frames
        .iter()
        .find(|f| !f.bases.is_empty())
        .unwrap()
        .bases[0] as usize];
    let old_chunk = old_index.chunks.iter().find(|c| c.id == base.id).unwrap();
    let old_pack = damaged.join(old_index.packs[old_chunk.pack as usize].store_path());
    flip_byte(
        &old_pack,
        old_chunk.pack_offset as usize + old_chunk.compressed_length as usize / 2,
    );
    let output = verify_store(&damaged, keys);
    assert!(!output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("delta frame") && report.contains(&format!("base {}", base.id)),
        "{report}"
    );

    // A device running 1.0 installs 2.0.
    let device = Device::new(&dir.path().join("device"), &v1, 6 * MIB_USIZE as u64);
    device.configure(&format!("file://{}", store.display()), &[&keys.public], "");
    run_ok(
        device
            .diffota()
            .arg("install")
            .arg(store.join("releases/2.0/rootfs.didx")),
    );
    assert!(
        device.slot_bytes("b", edited.len()) == edited,
        "slot b does not hold 2.0"
    );
}

const MIB_USIZE: usize = 1 << 20;

/// `image` with a byte changed every 4 KiB from `first` to `last` MiB: a rebuilt binary, the
/// kind of change delta frames exist for.
fn edited_copy(image: &Path, out: &Path, first: usize, last: usize, xor: u8) {
    let mut bytes = std::fs::read(image).unwrap();
    for at in (first * MIB_USIZE..last * MIB_USIZE).step_by(4096) {
        bytes[at] ^= xor;
    }
    std::fs::write(out, bytes).unwrap();
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

/// Two makes of one version from different images, started together: the store lock makes
/// one wait for the other, so exactly one succeeds and the other is refused by name; the
/// store verifies.
#[test]
fn two_makes_of_one_version_at_once_never_both_succeed() {
    let fleet = Fleet::new();
    let (dir, keys) = (&fleet.dir, &fleet.keys);
    let store = &fleet.store;
    let first = sample(dir.path(), "a.img", 16, 1);
    let second = sample(dir.path(), "b.img", 16, 2);
    for round in 0..3 {
        let version = format!("{round}.0");
        let children: Vec<_> = [&first, &second]
            .iter()
            .map(|image| {
                make_command(store, keys, &version, "test-board", image)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let succeeded = outputs.iter().filter(|o| o.status.success()).count();
        let errors: Vec<String> = outputs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect();
        assert_eq!(succeeded, 1, "round {round}: {errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("already exists with different content")),
            "round {round}: {errors:?}"
        );
    }
    let output = verify_store(store, keys);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
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

/// Clients that connect and send nothing are closed by the header timeout counted from the
/// accept, long before the idle timeout; a client that sends its request in time is served.
#[test]
fn serve_closes_silent_connections_after_the_header_timeout() {
    let (dir, root) = store_with_one_pack();
    let server = StoreServer::start_with(&root, &dir.path().join("access.log"), None, |command| {
        command.args(["--idle-timeout", "600s", "--header-timeout", "1s"]);
    });
    let address = server.url.trim_start_matches("http://").to_owned();
    let silent: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    let patience = std::time::Duration::from_secs(60);
    for (number, mut stream) in silent.into_iter().enumerate() {
        stream.set_read_timeout(Some(patience)).unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("silent connection {number} was not closed: {other:?}"),
        }
    }
    let mut honest = TcpStream::connect(&address).unwrap();
    honest.set_read_timeout(Some(patience)).unwrap();
    honest
        .write_all(range_request(&address).as_bytes())
        .unwrap();
    let mut response = Vec::new();
    honest.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 206"));
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

/// A password-protected key where nothing can be asked (no terminal: a bitbake task, a CI
/// job) gets a message that says what to give, for keygen and for make; an unencrypted
/// key needs no terminal.
#[test]
fn a_password_without_a_terminal_is_asked_for_by_name() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let detached = |command: &mut Command| {
        // SAFETY: setsid is async-signal-safe and only detaches the child being started.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        command
            .stdin(std::process::Stdio::null())
            .env_remove("DIFFOTA_KEY_PASSWORD");
    };
    let mut keygen = chunk_server();
    keygen
        .arg("keygen")
        .arg("--secret-key")
        .arg(dir.path().join("k.key"))
        .arg("--public-key")
        .arg(dir.path().join("k.pub"));
    detached(&mut keygen);
    let output = run(&mut keygen);
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains(
            "no terminal to ask on: give --password-file FILE or set DIFFOTA_KEY_PASSWORD"
        ),
        "{error}"
    );

    let password = dir.path().join("password");
    std::fs::write(&password, "correct horse\n").unwrap();
    run_ok(
        chunk_server()
            .arg("keygen")
            .arg("--secret-key")
            .arg(dir.path().join("k.key"))
            .arg("--public-key")
            .arg(dir.path().join("k.pub"))
            .arg("--password-file")
            .arg(&password),
    );
    let image = sample(dir.path(), "v1.img", 1, 1);
    let mut make = chunk_server();
    make.args(["make", "--version", "1.0", "--compatible", "c", "--store"])
        .arg(dir.path().join("store"))
        .arg("--key")
        .arg(dir.path().join("k.key"))
        .arg(&image);
    detached(&mut make);
    let output = run(&mut make);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no terminal to ask on"));

    let keys = Keys::generate(dir.path(), "unencrypted");
    let mut make = make_command(&dir.path().join("store"), &keys, "1.0", "c", &image);
    detached(&mut make);
    let output = run(&mut make);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
