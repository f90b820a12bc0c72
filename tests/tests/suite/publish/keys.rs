//! Keys: minisign interop both ways, password-protected keys, no terminal to ask on.

use super::*;

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
