//! A hostile local user, a buggy script or a confused operator against the device's own
//! files: links, FIFOs, devices and huge files where the state directory, a local store or
//! the report spool hold a file. Each is refused (or passed over, where the file only saves
//! work) with a message naming the file, promptly, and nothing is lost: the running slot is
//! untouched, no trial is armed on a failure, the victim of a link keeps its content.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use diffota_tests::fleet::{Fleet, MIB};
use diffota_tests::*;

/// Releases 1.0 and 2.0 of a 4 MiB image in a local store, channel `stable` at 2.0.
fn store() -> Fleet {
    let mut fleet = Fleet::new();
    fleet.sample_release("1.0", 4 * MIB, 7, 1);
    fleet.sample_release("2.0", 4 * MIB, 7, 2);
    fleet.publish("2.0");
    fleet
}

/// Runs `command`, failing the test if it has not ended after a minute (a hang on a FIFO
/// is what some of these cases used to do; the bound is far above any normal run).
fn run_bounded(command: &mut Command) -> Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    eprintln!(
        "$ {command:?}\n  exit: {}\n  stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim_end()
    );
    output
}

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
}

/// A sparse file of `length` bytes: huge to a reader, free on disk.
fn sparse(path: &Path, length: u64) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(length)
        .unwrap();
}

fn assert_running_untouched(device: &Device, image: &Path) {
    let expected = std::fs::read(image).unwrap();
    assert!(
        device.slot_bytes(Slot::A, expected.len()) == expected,
        "the running slot was modified"
    );
}

#[test]
fn a_stored_index_that_is_a_link_fifo_or_huge_is_passed_over() {
    let store = store();
    let url = store.store.display().to_string();
    for (name, plant) in [("dev-zero", 0), ("fifo", 1), ("huge", 2)] {
        let device = store.device(name, "1.0", 5 * MIB, &url, |_| {});
        // The install of 1.0 into slot A left a stored index for A: put something hostile
        // in its place.
        std::fs::create_dir_all(&device.state).unwrap();
        let stored = device.state.join("slot-a.didx");
        std::fs::write(device.state.join("slot-a.didx.minisig"), "x").unwrap();
        match plant {
            0 => std::os::unix::fs::symlink("/dev/zero", &stored).unwrap(),
            1 => mkfifo(&stored),
            _ => sparse(&stored, 1 << 30),
        }
        let output = run_bounded(device.diffota().arg("install"));
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        let expected = std::fs::read(store.image("2.0")).unwrap();
        assert!(
            device.slot_bytes(Slot::B, expected.len()) == expected,
            "{name}"
        );
        assert_running_untouched(&device, store.image("1.0"));
    }
}

#[test]
fn a_local_store_file_that_is_a_fifo_or_device_is_refused_at_once() {
    let store = store();
    let signature = store.store.join("releases/2.0/rootfs.didx.minisig");
    for (name, plant, message) in [
        ("fifo", 1, "is a FIFO, not a regular file"),
        ("dev-zero", 0, "is a character device, not a regular file"),
    ] {
        let _ = std::fs::remove_file(&signature);
        match plant {
            0 => std::os::unix::fs::symlink("/dev/zero", &signature).unwrap(),
            _ => mkfifo(&signature),
        }
        let device = store.device(
            name,
            "1.0",
            5 * MIB,
            &store.store.display().to_string(),
            |_| {},
        );
        let output = run_bounded(device.diffota().arg("install"));
        assert!(!output.status.success(), "{name}: accepted");
        assert!(
            stderr(&output).contains(message) && stderr(&output).contains("rootfs.didx.minisig"),
            "{name}: {}",
            stderr(&output)
        );
        assert_running_untouched(&device, store.image("1.0"));
        let status = run_ok(device.diffota().args(["status", "--json"]));
        assert!(!status.contains("\"installed\""), "{name}: {status}");
    }
}

#[test]
fn a_lock_file_that_is_a_link_is_refused_and_its_target_kept() {
    let store = store();
    let device = store.device(
        "device",
        "1.0",
        5 * MIB,
        &store.store.display().to_string(),
        |_| {},
    );
    std::fs::create_dir_all(&device.state).unwrap();
    let victim = store.dir.path().join("victim.conf");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, device.state.join("lock")).unwrap();
    for command in [&["install"][..], &["mark-good"]] {
        let output = run_bounded(device.diffota().args(command));
        assert!(!output.status.success(), "{command:?} ran through the link");
        assert!(
            stderr(&output).contains("lock: is a symbolic link"),
            "{command:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_running_untouched(&device, store.image("1.0"));
}

/// Everything a device shows or keeps: its outputs and every file of its state directory.
fn assert_secret_kept(device: &Device, outputs: &[&Output], secret: &str) {
    for output in outputs {
        for stream in [&output.stdout, &output.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(!text.contains(secret), "{secret:?} shown: {text}");
        }
    }
    for entry in walk(&device.state) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{secret:?} kept in {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.is_file() {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_password_in_the_store_url_is_never_shown_or_kept() {
    let store = store();
    let log = store.dir.path().join("access.log");
    let server = StoreServer::start(&store.store, &log, None);
    let with_password = server.url.replacen("://", "://fleet:hunter2@", 1);
    let device = store.device("device", "1.0", 5 * MIB, &with_password, |_| {});
    // A failure that quotes the URL: a channel that does not exist.
    let missing = run(device.diffota().args(["check", "--channel", "nightly"]));
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("fleet:***@"),
        "{}",
        stderr(&missing)
    );
    let check = run(device.diffota().args(["check", "--json"]));
    let install = run(device.diffota().arg("install"));
    assert!(install.status.success(), "{}", stderr(&install));
    let status = run(device.diffota().args(["status", "--json"]));
    assert_secret_kept(&device, &[&missing, &check, &install, &status], "hunter2");
    // A server that is not there: the transport error quotes no password either.
    let gone = store.device(
        "gone",
        "1.0",
        5 * MIB,
        "http://fleet:hunter2@127.0.0.1:9/store",
        |_| {},
    );
    let output = run(gone.diffota().arg("check"));
    assert!(!output.status.success());
    assert_secret_kept(&gone, &[&output], "hunter2");
}

#[test]
fn store_headers_go_only_to_the_configured_origin() {
    use diffota_tests::report_endpoint::ReportEndpoint;
    let store = store();
    let log = store.dir.path().join("access.log");
    let server = StoreServer::start(&store.store, &log, None);
    // Another host (another origin: another port), recording what it is sent.
    let other = ReportEndpoint::start(0);
    let other_index = other.url.replace("/reports", "/releases/2.0/rootfs.didx");
    let headers = |config: &mut Config| {
        config
            .http
            .headers
            .insert("Authorization".into(), "Bearer fleet-token".into());
    };
    let device = Device::new(
        &store.dir.path().join("device"),
        store.image("1.0"),
        5 * MIB,
    );
    device.configure(&server.url, &[&store.keys.public], headers);

    let output = run(device.diffota().arg("check").arg(&other_index));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is not on the configured store's origin"),
        "{}",
        stderr(&output)
    );
    assert!(other.received().is_empty(), "the other host was asked");

    // Allowed by the config: the other host is asked, without the store's token.
    device.configure(&server.url, &[&store.keys.public], |config| {
        headers(config);
        config.http.allow_other_origins = true;
    });
    let output = run(device.diffota().arg("check").arg(&other_index));
    assert!(!output.status.success(), "the other host serves no store");
    let received = other.received();
    assert!(!received.is_empty(), "the other host was not asked");
    assert!(
        received.iter().all(|r| r.authorization.is_none()),
        "the store's token went to another host"
    );
    // The configured store still gets its token: an install from it works.
    run_ok(device.diffota().arg("install"));
}
