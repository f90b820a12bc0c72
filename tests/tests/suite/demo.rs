//! The demo, run as a newcomer runs it (on a small image, in this test's profile): it must
//! tell the whole A/B story, in order, and every step must be what the device really did.

use std::path::PathBuf;
use std::process::Command;

use diffota_tests::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Asserts that `lines` appear in `text` in this order.
fn assert_in_order(text: &str, lines: &[&str]) {
    let mut rest = text;
    for line in lines {
        match rest.find(line) {
            Some(at) => rest = &rest[at + line.len()..],
            None => panic!("the demo did not print {line:?} (in this order); it printed:\n{text}"),
        }
    }
}

#[test]
fn the_demo_tells_the_whole_a_b_story() {
    let work = tempfile::tempdir().unwrap();
    let profile = if bin_dir().ends_with("release") {
        "release"
    } else {
        "dev"
    };
    let output = run(Command::new(root().join("demo/run.sh"))
        .arg("8")
        .env("DIFFOTA_DEMO_WORK", work.path().join("demo"))
        .env("DIFFOTA_DEMO_PROFILE", profile));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo/run.sh failed:\n{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_in_order(
        &text,
        &[
            // factory 1.0 in slot a
            "GRUB: diffota: booting slot a (try 0 of 3, upgrade_available=0)",
            // 2.0: installed, tried, committed
            "installed 2.0 into slot b",
            "GRUB: diffota: booting slot b (try 1 of 3, upgrade_available=1)",
            "(slot b == rootfs-2.0.img;",
            "bootloader: next boot slot b, upgrade_available=1, bootcount=1, bootlimit=3",
            "slot b (2.0) committed",
            "bootloader: next boot slot b, upgrade_available=0, bootcount=0, bootlimit=3",
            // 3.0: installed, fails its health check on every trial boot, falls back
            "installed 3.0 into slot a",
            "GRUB: diffota: booting slot a (try 1 of 3, upgrade_available=1)",
            "failed its health check on trial boot 1 of 3",
            "GRUB: diffota: booting slot a (try 2 of 3, upgrade_available=1)",
            "failed its health check on trial boot 2 of 3",
            "GRUB: diffota: booting slot a (try 3 of 3, upgrade_available=1)",
            "failed its health check on trial boot 3 of 3; rebooting: the bootloader falls back to slot b",
            "GRUB: diffota: slot a did not come up healthy in 3 boots; falling back",
            "GRUB: diffota: booting slot b (try 0 of 3, upgrade_available=0)",
            "release 3.0 failed: slot a did not come up healthy within 3 boot attempts",
            // refused from then on
            "not installing 3.0: it failed on this device before",
            "(exit status 4)",
            "running slot: b",
            "slot b: 2.0",
            "bootloader: next boot slot b, upgrade_available=0, bootcount=0, bootlimit=3",
            "failed release 3.0",
        ],
    );
    assert_eq!(
        text.matches("-- reboot --").count(),
        5,
        "the demo reboots into 2.0, into 3.0, then after each of 3.0's three failed health checks:\n{text}"
    );
}

/// The README's "A device by hand" block, run as written in an empty directory with the
/// built binaries on PATH: a newcomer following it gets 2.0 installed and committed.
#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split_once("<!-- walkthrough -->\n```sh\n")
        .and_then(|(_, rest)| rest.split_once("```\n<!-- /walkthrough -->"))
        .map(|(block, _)| block)
        .expect("README.md has the walkthrough block");
    let work = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = run(Command::new("sh")
        .args(["-e", "-c", block])
        .current_dir(work.path())
        .env("PATH", path));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the walkthrough failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_in_order(
        &stdout,
        &[
            "0 problems",
            "slot a holds release 1.0",
            "decision: install",
            "installed 2.0 into slot b",
            "slot b (2.0) committed",
            "slot a: 1.0",
            "slot b: 2.0",
        ],
    );
    let image = std::fs::read(work.path().join("v2.img")).unwrap();
    let slot = std::fs::read(work.path().join("slot-b.img")).unwrap();
    assert!(
        slot[..image.len()] == image[..],
        "slot b does not hold v2.img"
    );
}
