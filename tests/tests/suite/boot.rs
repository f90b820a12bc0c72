//! The A/B boot flow: bootloader environments read and written by diffota and by the real
//! tools (`fw_printenv`/`fw_setenv` from libubootenv-tool, `grub-editenv` from grub-common),
//! power loss during an environment write, and whole install → boot → mark-good / revert
//! cycles with the boot script's logic played by `diffota_tests::bootmodel`.

use std::path::{Path, PathBuf};

use diffota::boot::grub::GrubEnv;
use diffota::boot::uboot::UbootEnv;
use diffota::boot::EnvStore;
use diffota::config::BootConfig;
use diffota_tests::bootmodel::{init_grubenv, init_uboot_env, EnvTool};
use diffota_tests::fleet::{Fleet, MIB};
use diffota_tests::sample::write_image;
use diffota_tests::*;

const GRUB_DEFAULTS: &[(&str, &str)] = &[
    ("diffota_slot", "a"),
    ("bootlimit", "3"),
    ("bootcount", "0"),
    ("upgrade_available", "0"),
];

const UBOOT_DEFAULTS: &[(&str, &str)] = &[
    ("diffota_slot", "a"),
    ("bootlimit", "3"),
    ("bootcount", "0"),
    ("upgrade_available", "0"),
    ("bootcmd", "run diffota_boot"),
];

#[test]
fn uboot_environment_interop_over_many_writes() {
    if !require_tool("fw_printenv", "libubootenv-tool") {
        return;
    }
    for redundant in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = init_uboot_env(dir.path(), UBOOT_DEFAULTS, redundant);
        let ours = UbootEnv::from_config_file(&config).unwrap();
        let theirs = EnvTool::Uboot {
            config: config.clone(),
        };
        // 300 rounds of one write each way: the redundant counter wraps past 255 twice.
        for round in 0..300u32 {
            let mut env = ours.load().unwrap();
            env.insert("ours".into(), round.to_string());
            ours.store(&env).unwrap();
            let read = theirs.read();
            assert_eq!(
                read.get("ours").map(String::as_str),
                Some(round.to_string().as_str()),
                "round {round}, redundant {redundant}"
            );
            assert_eq!(read["bootcmd"], "run diffota_boot");
            theirs.write(&vars(&[("theirs", &round.to_string())]));
            let env = ours.load().unwrap();
            assert_eq!(
                env.get("theirs").map(String::as_str),
                Some(round.to_string().as_str()),
                "round {round}, redundant {redundant}"
            );
            assert_eq!(
                env.get("ours").map(String::as_str),
                Some(round.to_string().as_str())
            );
        }
    }
}

#[test]
fn power_cut_during_an_environment_write_leaves_a_valid_environment() {
    if !require_tool("fw_printenv", "libubootenv-tool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = init_uboot_env(dir.path(), UBOOT_DEFAULTS, true);
    let ours = UbootEnv::from_config_file(&config).unwrap();
    let theirs = EnvTool::Uboot {
        config: config.clone(),
    };
    for round in 0..6 {
        let before = ours.load().unwrap();
        // Find the copy the next write goes to: the one that is not current.
        let copies = ours.read_copies().unwrap();
        let current = diffota::boot::uboot::current_copy(&copies).unwrap();
        let target = &ours.locations[1 - current];
        // The write is cut after `round` eighths of the copy (0: nothing written at all).
        let mut next = before.clone();
        next.insert(
            "diffota_slot".into(),
            if before["diffota_slot"] == "a" {
                "b".into()
            } else {
                "a".into()
            },
        );
        next.insert("upgrade_available".into(), "1".into());
        let flags = copies[current].flags.wrapping_add(1);
        let full = diffota::boot::uboot::encode_copy(&next, 0x4000, true, flags).unwrap();
        let mut on_flash = std::fs::read(&target.path).unwrap();
        let cut = full.len() * round / 8;
        on_flash[..cut].copy_from_slice(&full[..cut]);
        // What the interrupted write left must not be taken for the new copy.
        if round > 0 {
            on_flash[cut..].fill(0xff);
        }
        std::fs::write(&target.path, &on_flash).unwrap();
        assert_eq!(
            ours.load().unwrap(),
            before,
            "cut at {round}/8: ours reads the old environment"
        );
        assert_eq!(
            theirs.read(),
            before,
            "cut at {round}/8: fw_printenv reads the old environment"
        );
        let slot = theirs.boot();
        assert!(slot == "a" || slot == "b");
        // And the next complete write works again.
        ours.store(&next).unwrap();
        assert_eq!(theirs.read()["upgrade_available"], "1");
        let mut reset = theirs.read();
        reset.insert("upgrade_available".into(), "0".into());
        ours.store(&reset).unwrap();
    }
}

#[test]
fn grubenv_interop() {
    if !require_tool("grub-editenv", "grub-common") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = init_grubenv(dir.path(), &[("diffota_slot", "a"), ("bootlimit", "3")]);
    let ours = GrubEnv { path: file.clone() };
    let theirs = EnvTool::Grub { file: file.clone() };
    for round in 0..50u32 {
        let mut env = ours.load().unwrap();
        env.insert("ours".into(), format!("{round} with spaces"));
        ours.store(&env).unwrap();
        assert_eq!(theirs.read()["ours"], format!("{round} with spaces"));
        theirs.write(&vars(&[("theirs", &round.to_string())]));
        let env = ours.load().unwrap();
        assert_eq!(env["theirs"], round.to_string());
        assert_eq!(env["diffota_slot"], "a");
    }
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1024);
}

/// Releases 1.0 (good), 2.0 (good), 3.0 (broken: never marked good), 4.0 (good).
fn releases() -> Fleet {
    let mut fleet = Fleet::new();
    for release in 1..=4u64 {
        fleet.sample_release(&format!("{release}.0"), 2 * MIB, 3, release);
    }
    fleet
}

/// A directory for a bootloader environment.
fn env_dir(fleet: &Fleet, name: &str) -> PathBuf {
    let dir = fleet.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn slot_holds(device: &Device, slot: Slot, image: &Path) -> bool {
    let expected = std::fs::read(image).unwrap();
    device.slot_bytes(slot, expected.len()) == expected
}

fn status(device: &Device) -> serde_json::Value {
    serde_json::from_str(&run_ok(device.diffota().args(["status", "--json"]))).unwrap()
}

/// The whole flow on one backend; `env` reads and writes the environment as the bootloader does.
fn cycle(releases: &Fleet, device: &Device, env: &EnvTool) {
    let reboot = |device: &Device| {
        let slot = env.boot();
        device.boot_into(Slot::parse(&slot).expect("the boot model boots a or b"));
        slot
    };
    assert_eq!(reboot(device), "a");

    // install -> trial boot -> mark-good
    releases.publish("2.0");
    let stdout = run_ok(device.diffota().arg("install"));
    assert!(stdout.contains("installed 2.0 into slot b"), "{stdout}");
    let boot = env.read();
    assert_eq!(
        (
            boot["diffota_slot"].as_str(),
            boot["upgrade_available"].as_str(),
            boot["bootcount"].as_str()
        ),
        ("b", "1", "0")
    );
    assert_eq!(boot["bootlimit"], "3");
    // mark-good again before the reboot (a second health run, an operator): not a revert.
    let stdout = run_ok(device.diffota().arg("mark-good"));
    assert!(stdout.contains("armed for a trial boot"), "{stdout}");
    assert_eq!(env.read()["upgrade_available"], "1");
    assert_eq!(reboot(device), "b");
    assert_eq!(env.read()["bootcount"], "1");
    let stdout = run_ok(device.diffota().arg("mark-good"));
    assert!(stdout.contains("slot b (2.0) committed"), "{stdout}");
    let boot = env.read();
    assert_eq!(
        (
            boot["diffota_slot"].as_str(),
            boot["upgrade_available"].as_str(),
            boot["bootcount"].as_str()
        ),
        ("b", "0", "0")
    );
    assert_eq!(reboot(device), "b", "a committed slot stays");
    run_ok(device.diffota().arg("doctor"));

    // A failed health check on a committed slot reboots nothing (exit status 3).
    let stdout = run_exit(device.diffota().arg("health-failed"), 3);
    assert!(stdout.contains("slot b is not on trial"), "{stdout}");

    // A broken release: it never reaches mark-good, its health check fails on each trial
    // boot and health-failed asks for the reboot; the bootloader tries it bootlimit times,
    // then falls back; mark-good on the old slot records the failure.
    releases.publish("3.0");
    run_ok(device.diffota().arg("install"));
    assert!(slot_holds(device, Slot::A, releases.image("3.0")));
    let stdout = run_exit(device.diffota().arg("health-failed"), 3);
    assert!(
        stdout.contains("slot b is not on trial"),
        "the boot that armed the trial is not a trial boot: {stdout}"
    );
    for attempt in 1..=3 {
        assert_eq!(
            reboot(device),
            "a",
            "attempt {attempt} boots the trial slot"
        );
        let stdout = run_ok(device.diffota().arg("health-failed"));
        assert!(
            stdout.contains(&format!(
                "3.0 in slot a failed its health check on trial boot {attempt} of 3; rebooting"
            )),
            "{stdout}"
        );
    }
    assert_eq!(
        reboot(device),
        "b",
        "past bootlimit the bootloader falls back"
    );
    run_exit(device.diffota().arg("health-failed"), 3);
    let stdout = run_ok(device.diffota().arg("mark-good"));
    assert!(stdout.contains("release 3.0 failed"), "{stdout}");
    let state = status(device);
    assert_eq!(state["state"]["failed_releases"][0]["version"], "3.0");
    assert_eq!(state["state"]["last_install"]["result"], "reverted");
    assert!(state["state"]["trial"].is_null());
    // Refused (exit status 4): the release failed here before.
    let stdout = run_exit(device.diffota().arg("install"), 4);
    assert!(
        stdout.contains("not installing 3.0: it failed on this device before"),
        "{stdout}"
    );
    assert_eq!(
        env.read()["upgrade_available"],
        "0",
        "the refused release armed nothing"
    );

    // A newer release is accepted.
    releases.publish("4.0");
    run_ok(device.diffota().arg("install"));
    assert_eq!(reboot(device), "a");
    run_ok(device.diffota().arg("mark-good"));
    assert!(slot_holds(device, Slot::A, releases.image("4.0")));

    // rollback: back to the good 2.0 in slot b, on trial, then committed.
    let stdout = run_ok(device.diffota().arg("rollback"));
    assert!(stdout.contains("slot b boots next"), "{stdout}");
    assert_eq!(reboot(device), "b");
    run_ok(device.diffota().arg("mark-good"));
    assert_eq!(env.read()["upgrade_available"], "0");

    // mark-bad on b: a (4.0, good) boots from the next boot on.
    let stdout = run_ok(device.diffota().arg("mark-bad"));
    assert!(stdout.contains("slot a boots next"), "{stdout}");
    assert_eq!(reboot(device), "a");
    run_ok(device.diffota().arg("mark-good"));
    // Slot b was marked bad: no rollback to it without --force.
    let output = run(device.diffota().arg("rollback"));
    assert_eq!(output.status.code(), Some(4), "refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no image known to be good"));
}

fn device_for(releases: &Fleet, name: &str, boot: impl FnOnce(&mut BootConfig)) -> Device {
    let device = Device::new(
        &releases.dir.path().join(name),
        releases.image("1.0"),
        3 * MIB,
    );
    device.configure(
        &format!("file://{}", releases.store.display()),
        &[&releases.keys.public],
        |config| boot(&mut config.boot),
    );
    device
}

#[test]
fn uboot_cycle_direct_environment() {
    if !require_tool("fw_printenv", "libubootenv-tool") {
        return;
    }
    let releases = releases();
    let config = init_uboot_env(&env_dir(&releases, "uboot-direct"), UBOOT_DEFAULTS, true);
    let device = device_for(&releases, "direct", |boot| {
        boot.backend = "uboot".into();
        boot.fw_env_config = config.clone();
    });
    cycle(&releases, &device, &EnvTool::Uboot { config });
}

#[test]
fn uboot_cycle_through_fw_tools() {
    if !require_tool("fw_setenv", "libubootenv-tool") {
        return;
    }
    let releases = releases();
    let config = init_uboot_env(&env_dir(&releases, "uboot-tools"), UBOOT_DEFAULTS, false);
    let device = device_for(&releases, "tools", |boot| {
        boot.backend = "uboot".into();
        boot.use_fw_tools = true;
        boot.fw_env_config = config.clone();
    });
    cycle(&releases, &device, &EnvTool::Uboot { config });
}

#[test]
fn grub_cycle() {
    if !require_tool("grub-editenv", "grub-common") {
        return;
    }
    let releases = releases();
    let file = init_grubenv(&env_dir(&releases, "grub"), GRUB_DEFAULTS);
    let device = device_for(&releases, "grub", |boot| {
        boot.backend = "grub".into();
        boot.grubenv = file.clone();
    });
    cycle(&releases, &device, &EnvTool::Grub { file });
}

#[test]
fn custom_script_backend() {
    if !require_tool("grub-editenv", "grub-common") {
        return;
    }
    // A board script that keeps its variables in a grubenv through grub-editenv: the
    // documented get/set interface, exercised by a whole cycle.
    let releases = releases();
    let env_dir = env_dir(&releases, "custom");
    let file = init_grubenv(&env_dir, GRUB_DEFAULTS);
    let script = env_dir.join("boot-custom");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\nenv={env:?}\ncase \"$1\" in\n  get) grub-editenv \"$env\" list ;;\n  set) shift; grub-editenv \"$env\" set \"$@\" ;;\n  *) echo \"usage: $0 get|set name=value...\" >&2; exit 2 ;;\nesac\n",
            env = file.display().to_string()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&script).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let device = device_for(&releases, "custom", |boot| {
        boot.backend = "custom".into();
        boot.script = script.clone();
    });
    cycle(&releases, &device, &EnvTool::Grub { file });
}

#[test]
fn doctor_finds_an_uninitialised_environment() {
    let releases_dir = tempfile::tempdir().unwrap();
    let dir = releases_dir.path();
    let env_file = dir.join("env.bin");
    std::fs::write(&env_file, vec![0u8; 0x4000]).unwrap();
    let config = dir.join("fw_env.config");
    std::fs::write(&config, format!("{} 0x0 0x4000\n", env_file.display())).unwrap();
    let image = dir.join("v1.img");
    write_image(&image, MIB, 1, 1).unwrap();
    let keys = Keys::generate(dir, "k");
    let device = Device::new(&dir.join("device"), &image, 2 * MIB);
    device.configure("/nonexistent", &[&keys.public], |device_config| {
        device_config.boot.backend = "uboot".into();
        device_config.boot.fw_env_config = config.clone();
    });
    let output = run(device.diffota().arg("doctor"));
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("FAIL U-Boot environment copy 1") && stdout.contains("CRC invalid"),
        "{stdout}"
    );

    // Initialised, it passes.
    let store = UbootEnv::from_config_file(&config).unwrap();
    store
        .store(&vars(&[("diffota_slot", "a"), ("bootlimit", "3")]))
        .unwrap();
    let stdout = run_ok(device.diffota().arg("doctor"));
    assert!(stdout.contains("0 failed"), "{stdout}");
}

/// The factory image: slot a was flashed with 1.0, not written by diffota. `provision`
/// checks it byte for byte against the signed release and records it (good), so `status`
/// names it and, after 2.0 is installed, `rollback` to it needs no --force. A slot that
/// does not hold the named release is refused and nothing is recorded.
#[test]
fn a_factory_slot_is_provisioned_and_can_be_rolled_back_to() {
    let releases = releases();
    let device = device_for(&releases, "factory", |_| {});
    let grubenv = device.dir.join("grubenv");
    run_ok(
        std::process::Command::new(bin("boot-sim"))
            .arg("factory")
            .arg(&grubenv),
    );
    device.configure(
        &format!("file://{}", releases.store.display()),
        &[&releases.keys.public],
        |config| {
            config.boot.backend = "grub".into();
            config.boot.grubenv = grubenv.clone();
        },
    );
    let reboot = || {
        run_ok(
            std::process::Command::new(bin("boot-sim"))
                .arg("boot")
                .args([&grubenv, &device.cmdline, &device.dir.join("boot_id")]),
        );
    };
    assert!(
        status(&device)["state"]["slots"]["a"].is_null(),
        "unknown before"
    );

    let wrong = releases.store.join("releases/2.0/rootfs.didx");
    let output = run(device.diffota().arg("provision").arg(&wrong));
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("slot a does not hold release 2.0"),
        "{error}"
    );
    assert!(
        status(&device)["state"]["slots"]["a"].is_null(),
        "nothing recorded"
    );

    releases.publish("1.0");
    let stdout = run_ok(device.diffota().arg("provision"));
    assert!(stdout.contains("slot a holds release 1.0"), "{stdout}");
    let stdout = run_ok(device.diffota().arg("provision"));
    assert!(stdout.contains("already recorded as 1.0"), "{stdout}");
    let slot_a = &status(&device)["state"]["slots"]["a"];
    assert_eq!(slot_a["version"], "1.0");
    assert_eq!(slot_a["good"], true);

    releases.publish("2.0");
    run_ok(device.diffota().arg("install"));
    reboot();
    run_ok(device.diffota().arg("mark-good"));
    assert_eq!(status(&device)["running_slot"], "b");
    let stdout = run_ok(device.diffota().arg("rollback"));
    assert!(stdout.contains("slot a boots next"), "{stdout}");
    reboot();
    run_ok(device.diffota().arg("mark-good"));
    assert_eq!(status(&device)["running_slot"], "a");
    assert!(slot_holds(&device, Slot::A, releases.image("1.0")));
}

/// A configured bootloader environment that is not there: `check` says so before anything
/// happens (exit 1), and `install` stops with the same hint before it writes the slot.
#[test]
fn a_missing_bootloader_environment_is_named_with_what_to_do() {
    let releases = releases();
    let missing = releases.dir.path().join("esp/EFI/diffota/grubenv");
    let device = device_for(&releases, "no-env", |boot| {
        boot.backend = "grub".into();
        boot.grubenv = missing.clone();
    });
    releases.publish("2.0");
    let hint = "not found: the bootloader environment must be installed before diffota uses it";
    let output = run(device.diffota().arg("check"));
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("cannot install: {}: {hint}", missing.display())),
        "{stdout}"
    );
    let output = run(device.diffota().arg("install"));
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains(hint), "{error}");
    assert!(
        std::fs::read(&device.slot_b)
            .unwrap()
            .iter()
            .all(|&b| b == 0),
        "slot b was written"
    );
}
