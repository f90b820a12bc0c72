//! Every printing command ends quietly when its reader has gone away (`| head -1`), and
//! fails, naming the cause, when its output cannot be written at all.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use diffota_tests::fleet::{Fleet, MIB};
use diffota_tests::*;

/// The write end of a pipe whose read end is already closed: every write gets EPIPE, with
/// no race against a reader (as `| head` would have).
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors on success; each is owned exactly once below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fds[0] and fds[1] are open descriptors returned by pipe2 and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

fn assert_quiet_on_closed_pipe(mut command: Command, what: &str) {
    let output = command
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} on a closed pipe: {:?}, stderr: {stderr}",
        output.status
    );
    assert!(
        !stderr.contains("Broken pipe") && !stderr.contains("panicked"),
        "{what} on a closed pipe said: {stderr}"
    );
}

fn assert_fails_on_full_disk(mut command: Command, what: &str) {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = command
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what} > /dev/full: {stderr}"
    );
    assert!(
        stderr.contains("writing the output") && !stderr.contains("panicked"),
        "{what} > /dev/full said: {stderr}"
    );
}

#[test]
fn printing_commands_end_quietly_on_a_closed_pipe() {
    let mut fleet = Fleet::new();
    fleet.sample_release("1.0", 4 * MIB, 5, 1);
    fleet.sample_release("2.0", 4 * MIB, 5, 2);
    fleet.publish("2.0");
    let (keys, store) = (&fleet.keys, &fleet.store);
    let device = fleet.device(
        "device",
        "1.0",
        6 * MIB,
        &format!("file://{}", store.display()),
        |_| {},
    );

    let chunk_server_commands: Vec<(&str, Vec<String>)> = vec![
        (
            "chunk-server diff",
            vec![
                "diff".into(),
                store.join("releases/1.0/rootfs.didx").display().to_string(),
                store.join("releases/2.0/rootfs.didx").display().to_string(),
            ],
        ),
        (
            "chunk-server channel show",
            vec![
                "channel".into(),
                "show".into(),
                "--store".into(),
                store.display().to_string(),
                "stable".into(),
            ],
        ),
        (
            "chunk-server verify",
            vec![
                "verify".into(),
                "--public-key".into(),
                keys.public.display().to_string(),
                store.display().to_string(),
            ],
        ),
        ("chunk-server --help", vec!["--help".into()]),
    ];
    for (what, args) in &chunk_server_commands {
        let mut command = chunk_server();
        command.args(args);
        assert_quiet_on_closed_pipe(command, what);
    }
    for (what, args) in [
        ("diffota check --json", vec!["check", "--json"]),
        ("diffota check", vec!["check"]),
        ("diffota status", vec!["status"]),
        ("diffota status --json", vec!["status", "--json"]),
    ] {
        let mut command = device.diffota();
        command.args(&args);
        assert_quiet_on_closed_pipe(command, what);
    }

    // Output that cannot be written is an error, not a silent success.
    let mut command = chunk_server();
    command.args(&chunk_server_commands[0].1);
    assert_fails_on_full_disk(command, "chunk-server diff");
    let mut command = device.diffota();
    command.args(["status", "--json"]);
    assert_fails_on_full_disk(command, "diffota status --json");
}
