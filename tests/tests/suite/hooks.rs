//! Hooks: the integrator's executables at each documented point, with their environment,
//! their verdicts ("not now", "never"), failures that leave nothing armed, and after-boot
//! hooks that run again after a power cut until they succeeded once.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use diffota_tests::bootmodel::{init_uboot_env, EnvTool};
use diffota_tests::fleet::{Fleet, MIB};
use diffota_tests::*;

/// Releases 1.0, 2.0 and 3.0, on stable: 2.0.
fn releases() -> Fleet {
    let mut fleet = Fleet::new();
    for release in 1..=3u64 {
        fleet.sample_release(&format!("{release}.0"), 2 * MIB, 7, release);
    }
    fleet.publish("2.0");
    fleet
}

/// An executable shell script `<fleet>/hooks/<name>`.
fn hook(fleet: &Fleet, name: &str, body: &str) -> PathBuf {
    let dir = fleet.path("hooks");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A hook that appends its point and the named variables to `log`, then runs `then`.
fn logging_hook(fleet: &Fleet, name: &str, log: &Path, vars: &[&str], then: &str) -> PathBuf {
    let fields: String = vars.iter().map(|v| format!(" {v}=${v}")).collect();
    hook(
        fleet,
        name,
        &format!(
            "echo \"$DIFFOTA_HOOK{fields}\" >> {}\n{then}",
            log.display()
        ),
    )
}

fn store_url(fleet: &Fleet) -> String {
    format!("file://{}", fleet.store.display())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs `command`, which must fail with exit status 1 and `message` on stderr.
fn assert_fails(command: &mut std::process::Command, message: &str) {
    let output = run(command);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains(message), "{}", stderr(&output));
}

/// Records that slot a holds 1.0, the factory image.
fn provision(fleet: &Fleet, device: &Device) {
    run_ok(
        device
            .diffota()
            .arg("provision")
            .arg(fleet.store.join("releases/1.0/rootfs.didx")),
    );
}

fn status(device: &Device) -> serde_json::Value {
    serde_json::from_str(&run_ok(device.diffota().args(["status", "--json"]))).unwrap()
}

#[test]
fn every_point_runs_once_in_order_with_its_environment() {
    let fleet = releases();
    let log = fleet.path("hooks.log");
    let common = [
        "DIFFOTA_VERSION",
        "DIFFOTA_RUNNING_SLOT",
        "DIFFOTA_TARGET_SLOT",
    ];
    let pre_install = logging_hook(&fleet, "pre-install", &log, &common, "");
    // The post-write hook sees the whole image in the target slot, read-only.
    let post_write = logging_hook(
        &fleet,
        "post-write",
        &log,
        &["DIFFOTA_IMAGE", "DIFFOTA_IMAGE_SIZE"],
        &format!(
            "head -c \"$DIFFOTA_IMAGE_SIZE\" \"$DIFFOTA_IMAGE_DEVICE\" | cmp -s - {} && echo 'image in place' >> {}",
            fleet.image("2.0").display(),
            log.display()
        ),
    );
    let pre_arm = logging_hook(&fleet, "pre-arm", &log, &["DIFFOTA_TARGET_DEVICE"], "");
    let post_commit = logging_hook(
        &fleet,
        "post-commit",
        &log,
        &[
            "DIFFOTA_VERSION",
            "DIFFOTA_PREVIOUS_VERSION",
            "DIFFOTA_RUNNING_SLOT",
            "HOME",
        ],
        "echo 'migrating /data' >&2",
    );
    let device = fleet.device("device", "1.0", 3 * MIB, &store_url(&fleet), |config| {
        config.hooks.pre_install = vec![pre_install];
        config.hooks.post_write = vec![post_write];
        config.hooks.pre_arm = vec![pre_arm];
        config.hooks.post_commit = vec![post_commit];
    });
    provision(&fleet, &device);
    let stdout = run_ok(device.diffota().arg("install"));
    assert!(stdout.contains("installed 2.0 into slot b"), "{stdout}");
    assert_eq!(
        read(&log),
        format!(
            "pre-install DIFFOTA_VERSION=2.0 DIFFOTA_RUNNING_SLOT=a DIFFOTA_TARGET_SLOT=b\n\
             post-write DIFFOTA_IMAGE=rootfs DIFFOTA_IMAGE_SIZE={}\n\
             image in place\n\
             pre-arm DIFFOTA_TARGET_DEVICE={}\n",
            2 * MIB,
            device.slot_b.display()
        )
    );
    // The commit's hooks run on the new slot's first healthy boot, once.
    run_ok(device.diffota().arg("mark-good"));
    assert!(!read(&log).contains("post-commit"), "not before the reboot");
    device.boot_into(Slot::B);
    let output = run(device.diffota().arg("mark-good"));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        read(&log).ends_with(
            "post-commit DIFFOTA_VERSION=2.0 DIFFOTA_PREVIOUS_VERSION=1.0 DIFFOTA_RUNNING_SLOT=b HOME=\n"
        ),
        "{}",
        read(&log)
    );
    assert!(
        stderr(&output).contains("migrating /data"),
        "a hook's output goes to the log: {}",
        stderr(&output)
    );
    assert!(status(&device)["state"]["owed_hooks"].is_null());
    let before = read(&log);
    run_ok(device.diffota().arg("mark-good"));
    assert_eq!(read(&log), before, "committed hooks do not run again");
}

#[test]
fn a_pre_install_hook_postpones_with_not_now_and_refuses_with_never() {
    let fleet = releases();
    let busy = fleet.path("busy");
    let pre_install = hook(
        &fleet,
        "not-while-printing",
        &format!(
            "if [ -e {} ]; then echo 'a print job runs' >&2; exit 75; fi\n\
             if [ \"$DIFFOTA_VERSION\" = 3.0 ]; then echo 'needs the new print head' >&2; exit 77; fi",
            busy.display()
        ),
    );
    let device = fleet.device("device", "1.0", 3 * MIB, &store_url(&fleet), |config| {
        config.hooks.pre_install = vec![pre_install.clone()];
    });
    std::fs::write(&busy, "").unwrap();
    let stdout = run_exit(device.diffota().arg("install"), 3);
    assert!(
        stdout.contains(&format!(
            "not installing 2.0 now: the pre-install hook {} said not now (a print job runs)",
            pre_install.display()
        )),
        "{stdout}"
    );
    assert!(
        device.slot_bytes(Slot::B, 1024).iter().all(|&b| b == 0),
        "nothing was written"
    );
    // Not now is not never: the next run installs.
    std::fs::remove_file(&busy).unwrap();
    run_ok(device.diffota().arg("install"));
    assert!(fleet.slot_holds(&device, Slot::B, "2.0"));
    device.boot_into(Slot::B);
    run_ok(device.diffota().arg("mark-good"));

    // Never: refused, recorded, and not tried again on its own.
    fleet.publish("3.0");
    let stdout = run_exit(device.diffota().arg("install"), 4);
    assert!(
        stdout.contains("refused it (needs the new print head); it will not be installed here again unless forced"),
        "{stdout}"
    );
    let stdout = run_exit(device.diffota().arg("install"), 4);
    assert!(
        stdout.contains("it failed on this device before (the pre-install hook"),
        "{stdout}"
    );
    assert!(
        fleet.slot_holds(&device, Slot::A, "1.0"),
        "slot a untouched"
    );
    let state = status(&device);
    assert_eq!(state["state"]["failed_releases"][0]["version"], "3.0");
}

#[test]
fn a_failing_or_meddling_post_write_hook_leaves_nothing_armed() {
    if !require_tool("fw_setenv", "libubootenv-tool") {
        return;
    }
    let fleet = releases();
    let env_dir = fleet.path("uboot");
    std::fs::create_dir_all(&env_dir).unwrap();
    let defaults = [
        ("diffota_slot", "a"),
        ("bootlimit", "3"),
        ("bootcount", "0"),
        ("upgrade_available", "0"),
    ];
    let fw_env = init_uboot_env(&env_dir, &defaults, true);
    let env = EnvTool::Uboot {
        config: fw_env.clone(),
    };
    let mode = fleet.path("mode");
    let post_write = hook(
        &fleet,
        "check-image",
        &format!(
            "case $(cat {}) in\n\
             fail) echo 'checking the image'; echo 'signature of /usr/bin/app missing' >&2; exit 1 ;;\n\
             meddle) printf garbage | dd of=\"$DIFFOTA_IMAGE_DEVICE\" bs=1 seek=4096 conv=notrunc 2>/dev/null ;;\n\
             esac",
            mode.display()
        ),
    );
    let device = fleet.device("device", "1.0", 3 * MIB, &store_url(&fleet), |config| {
        config.boot.backend = "uboot".into();
        config.boot.fw_env_config = fw_env.clone();
        config.hooks.post_write = vec![post_write.clone()];
    });
    let nothing_armed = |device: &Device| {
        let boot = env.read();
        assert_eq!(
            (
                boot["diffota_slot"].as_str(),
                boot["upgrade_available"].as_str()
            ),
            ("a", "0"),
            "the bootloader still boots a, no trial"
        );
        let state = status(device);
        assert!(state["state"]["trial"].is_null());
        assert!(
            state["state"]["slots"]["b"].is_null(),
            "slot b is not recorded as installed"
        );
        assert!(fleet.slot_holds(device, Slot::A, "1.0"), "slot a untouched");
    };

    std::fs::write(&mode, "fail").unwrap();
    assert_fails(
        device.diffota().arg("install"),
        &format!(
            "post-write hook {} exited with status 1: signature of /usr/bin/app missing; nothing was armed",
            post_write.display()
        ),
    );
    nothing_armed(&device);

    // A hook that changes the slot and exits 0 is caught by the read-back after it.
    std::fs::write(&mode, "meddle").unwrap();
    assert_fails(
        device.diffota().arg("install"),
        "read back after writing does not match",
    );
    nothing_armed(&device);

    // Fixed: the next run resumes the written slot and arms it.
    std::fs::write(&mode, "ok").unwrap();
    run_ok(device.diffota().arg("install"));
    assert_eq!(env.read()["upgrade_available"], "1");
    assert!(fleet.slot_holds(&device, Slot::B, "2.0"));
}

/// The layer's example migration hook, with its data directory pointed into the test.
fn migration_hook(fleet: &Fleet, data: &Path, before: &str) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../meta-diffota/recipes-core/diffota/files/diffota-migrate-data-example");
    hook(
        fleet,
        "migrate-data",
        &format!(
            "{before}\nDIFFOTA_EXAMPLE_DATA={} exec {}",
            data.display(),
            example.display()
        ),
    )
}

#[test]
fn a_migration_after_the_commit_runs_again_after_a_power_cut_and_then_never() {
    let fleet = releases();
    let data = fleet.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("settings"),
        "server=https://old.example.com\nvolume=7\n",
    )
    .unwrap();
    let runs = fleet.path("runs");
    let cut = fleet.path("cut-power");
    // Counts its runs; the first one loses power (the updater is killed) mid-migration.
    let post_commit = migration_hook(
        &fleet,
        &data,
        &format!(
            "echo run >> {runs}\n\
             if [ -e {cut} ]; then rm {cut}; printf 'schema=2\\nserver_u' > {data}/settings.tmp; kill -9 $PPID; exit 0; fi",
            runs = runs.display(),
            cut = cut.display(),
            data = data.display()
        ),
    );
    let device = fleet.device("device", "1.0", 3 * MIB, &store_url(&fleet), |config| {
        config.hooks.post_commit = vec![post_commit];
    });
    run_ok(device.diffota().arg("install"));
    device.boot_into(Slot::B);
    std::fs::write(&cut, "").unwrap();
    let output = run(device.diffota().arg("mark-good"));
    assert_eq!(output.status.code(), None, "killed: {}", stderr(&output));
    assert_eq!(
        status(&device)["state"]["owed_hooks"]["point"],
        "post-commit",
        "the commit is recorded, its hooks still owed"
    );
    assert!(
        read(&data.join("settings")).starts_with("server="),
        "not migrated yet"
    );

    // The next boot's mark-good runs the migration again, to the end.
    device.boot_into(Slot::B);
    let stdout = run_ok(device.diffota().arg("mark-good"));
    assert!(stdout.contains("slot b is good"), "{stdout}");
    assert_eq!(
        read(&data.join("settings")),
        "schema=2\nserver_url=https://old.example.com\nvolume=7\n"
    );
    assert!(!data.join("settings.tmp").exists());
    assert!(status(&device)["state"]["owed_hooks"].is_null());
    device.boot_into(Slot::B);
    run_ok(device.diffota().arg("mark-good"));
    assert_eq!(read(&runs), "run\nrun\n", "once to success, never again");
}

#[test]
fn a_failing_post_commit_hook_fails_mark_good_and_runs_again() {
    let fleet = releases();
    let fail = fleet.path("fail");
    let post_commit = hook(
        &fleet,
        "flash-mcu",
        &format!(
            "if [ -e {} ]; then echo 'MCU not answering on /dev/ttyS2' >&2; exit 2; fi",
            fail.display()
        ),
    );
    let device = fleet.device("device", "1.0", 3 * MIB, &store_url(&fleet), |config| {
        config.hooks.post_commit = vec![post_commit.clone()];
    });
    run_ok(device.diffota().arg("install"));
    device.boot_into(Slot::B);
    std::fs::write(&fail, "").unwrap();
    assert_fails(
        device.diffota().arg("mark-good"),
        &format!(
            "slot b (2.0) is committed, but a hook after it failed (it runs again at the next mark-good): post-commit hook {} exited with status 2: MCU not answering on /dev/ttyS2",
            post_commit.display()
        ),
    );
    assert!(status(&device)["state"]["slots"]["b"]["good"]
        .as_bool()
        .unwrap());
    std::fs::remove_file(&fail).unwrap();
    run_ok(device.diffota().arg("mark-good"));
    assert!(status(&device)["state"]["owed_hooks"].is_null());
}

#[test]
fn a_revert_runs_the_post_revert_hooks_with_the_failed_release() {
    let fleet = releases();
    let log = fleet.path("hooks.log");
    let post_revert = logging_hook(
        &fleet,
        "post-revert",
        &log,
        &[
            "DIFFOTA_FAILED_VERSION",
            "DIFFOTA_VERSION",
            "DIFFOTA_RUNNING_SLOT",
        ],
        &format!("echo \"reason: $DIFFOTA_REASON\" >> {}", log.display()),
    );
    let post_commit = logging_hook(&fleet, "post-commit", &log, &[], "");
    let device = fleet.device("device", "1.0", 3 * MIB, &store_url(&fleet), |config| {
        config.hooks.post_revert = vec![post_revert];
        config.hooks.post_commit = vec![post_commit];
    });
    provision(&fleet, &device);
    run_ok(device.diffota().arg("install"));
    // The trial never came up healthy: after its attempts the bootloader boots a again.
    device.boot_into(Slot::A);
    let stdout = run_ok(device.diffota().arg("mark-good"));
    assert!(stdout.contains("release 2.0 failed"), "{stdout}");
    assert_eq!(
        read(&log),
        format!(
            "post-revert DIFFOTA_FAILED_VERSION=2.0 DIFFOTA_VERSION=1.0 DIFFOTA_RUNNING_SLOT=a\n\
             reason: slot b did not come up healthy within 3 boot attempts; the bootloader fell back to slot a\n"
        )
    );
    run_ok(device.diffota().arg("mark-good"));
    assert!(
        !read(&log).contains("post-commit"),
        "a confirm is no commit"
    );
    assert_eq!(read(&log).lines().count(), 2, "run once");
}
