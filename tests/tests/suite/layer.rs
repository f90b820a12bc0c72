//! The Yocto layer and the systemd units, checked without a Yocto build: the crates list is
//! current, the image type's shell runs on a real ext4 image, the config template renders to
//! a config diffota accepts, shell scripts pass shellcheck, units pass systemd-analyze, and
//! the recipes pass a static check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use diffota_tests::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn layer() -> PathBuf {
    root().join("meta-diffota")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

#[test]
fn crates_inc_matches_cargo_lock() {
    let expected = diffota_tests::crates_inc::generate_for_workspace(&root()).unwrap();
    let actual = std::fs::read_to_string(root().join(diffota_tests::crates_inc::INC_PATH)).unwrap();
    assert!(
        actual == expected,
        "{} is out of date with Cargo.lock: run `cargo run -p diffota-tests --bin update-crates-inc`",
        diffota_tests::crates_inc::INC_PATH
    );
}

/// The body of a bitbake shell function, e.g. `IMAGE_CMD:diffota () { … }`.
fn shell_function(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("{name} () {{\n"))
        .or_else(|| text.find(&format!("\n{name}() {{\n")).map(|at| at + 1))
        .unwrap_or_else(|| panic!("{name} not found"));
    let body = &text[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let end = body.find("\n}\n").expect("function end");
    body[..end].to_owned()
}

/// Expands `${VAR}` as bitbake would, from `vars`; other `$` uses are left to the shell.
fn expand(text: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').expect("closing brace") + at;
        let name = &rest[at + 2..end];
        match vars.get(name) {
            Some(value) => out.push_str(value),
            None => panic!("the image command uses ${{{name}}}, which the test does not set"),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A shell function of the image class as bitbake would run it, with `vars` expanded.
fn class_function_script(function: &str, vars: &BTreeMap<&str, String>) -> String {
    let class =
        std::fs::read_to_string(layer().join("classes/image_types_diffota.bbclass")).unwrap();
    let body = expand(&shell_function(&class, function), vars);
    format!("#!/bin/sh\nset -e\nbbfatal() {{ echo \"ERROR: $*\" >&2; exit 1; }}\nbbnote() {{ echo \"NOTE: $*\"; }}\n{body}\n")
}

fn image_cmd_script(vars: &BTreeMap<&str, String>) -> String {
    class_function_script("IMAGE_CMD:diffota", vars)
}

#[test]
fn image_cmd_makes_a_verifiable_store_from_an_ext4_image() {
    if !require_tool("mkfs.ext4", "e2fsprogs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("rootfs");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::write(tree.join("etc/os-release"), "NAME=diffota-test\n").unwrap();
    std::fs::write(
        tree.join("usr/bin/app"),
        (0..300_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    // The class's rootfs step: the release's own fstab mounts /boot and /data.
    std::fs::write(tree.join("etc/fstab"), "/dev/root / auto defaults 1 1\n").unwrap();
    let mut fstab_vars: BTreeMap<&str, String> = BTreeMap::new();
    fstab_vars.insert("IMAGE_ROOTFS", tree.display().to_string());
    fstab_vars.insert("sysconfdir", "/etc".into());
    fstab_vars.insert(
        "DIFFOTA_FSTAB_BOOT",
        "LABEL=esp /boot vfat defaults 0 0".into(),
    );
    fstab_vars.insert(
        "DIFFOTA_FSTAB_DATA",
        "LABEL=data /data ext4 defaults 0 2".into(),
    );
    let fstab_script = dir.path().join("fstab.sh");
    std::fs::write(
        &fstab_script,
        class_function_script("diffota_fstab", &fstab_vars),
    )
    .unwrap();
    run_ok(Command::new("sh").arg(&fstab_script));
    // Run twice (a rootfs task re-run): the lines are not doubled.
    run_ok(Command::new("sh").arg(&fstab_script));
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/fstab")).unwrap(),
        "/dev/root / auto defaults 1 1\nLABEL=esp /boot vfat defaults 0 0\nLABEL=data /data ext4 defaults 0 2\n"
    );
    let deploy = dir.path().join("deploy");
    std::fs::create_dir_all(&deploy).unwrap();
    let image = deploy.join("example-image-qemux86-64.rootfs.ext4");
    // The image class's ext4: fixed UUID, hash seed and time.
    let mkfs = |image: &Path| {
        run_ok(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&tree)
                .args([
                    "-U",
                    "6f1b6c5a-5d0e-4c0e-9a4e-0d1f2a3b4c5d",
                    "-E",
                    "hash_seed=1d2c3b4a-0f9e-4d8c-8b7a-6e5d4c3b2a19",
                ])
                .arg(image)
                .arg("16M")
                .env("E2FSPROGS_FAKE_TIME", "1790000000"),
        )
    };
    mkfs(&image);
    let keys = Keys::generate(dir.path(), "release");
    let store = dir.path().join("store");
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("DIFFOTA_SIGNING_KEY", keys.secret.display().to_string());
    vars.insert("DIFFOTA_SIGNING_KEY_PASSWORD_FILE", String::new());
    vars.insert("IMGDEPLOYDIR", deploy.display().to_string());
    vars.insert("DIFFOTA_RELEASE_IMAGE", image.display().to_string());
    vars.insert("IMAGE_NAME", "example-image-qemux86-64".into());
    vars.insert("IMAGE_NAME_SUFFIX", ".rootfs".into());
    vars.insert("DIFFOTA_ROOTFS_FSTYPE", "ext4".into());
    vars.insert("DIFFOTA_STORE", store.display().to_string());
    vars.insert("DIFFOTA_VERSION", "5.0-20261128".into());
    vars.insert("DIFFOTA_COMPATIBLE", "test-board".into());
    vars.insert("DIFFOTA_IMAGE_NAME", "rootfs".into());
    vars.insert("DIFFOTA_ZSTD_LEVEL", "3".into());
    vars.insert("DIFFOTA_MAKE_ARGS", String::new());
    vars.insert("DIFFOTA_EXTRA_IMAGES", String::new());
    vars.insert("DIFFOTA_RECIPE_IMAGES", String::new());
    vars.insert("DIFFOTA_SINGLE_COPY_IMAGES", String::new());
    let script = dir.path().join("image_cmd.sh");
    std::fs::write(&script, image_cmd_script(&vars)).unwrap();
    let path = format!(
        "{}:{}",
        bin("chunk-server").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run_ok(Command::new("sh").arg(&script).env("PATH", &path));
    let verify = |version: &str| {
        run_ok(
            chunk_server()
                .arg("verify")
                .arg("--public-key")
                .arg(&keys.public)
                .arg(&store)
                .arg(version),
        )
    };
    verify("5.0-20261128");
    let summary =
        std::fs::read_to_string(deploy.join("example-image-qemux86-64.rootfs.diffota")).unwrap();
    assert!(summary.contains("release 5.0-20261128"), "{summary}");

    // The factory image: the wks files copy DIFFOTA_RELEASE_IMAGE into slot A unchanged, and
    // the data partition is made from DIFFOTA_FACTORY_DATA. A device flashed that way
    // records the factory release on its first boot, as diffota-provision.service does.
    let data = dir.path().join("factory-data");
    vars.insert("DIFFOTA_LAYERDIR", layer().display().to_string());
    vars.insert("DIFFOTA_FACTORY_DATA", data.display().to_string());
    let factory_script = dir.path().join("factory.sh");
    std::fs::write(
        &factory_script,
        class_function_script("diffota_factory_data", &vars),
    )
    .unwrap();
    run_ok(Command::new("sh").arg(&factory_script));
    let provision_env =
        std::fs::read_to_string(data.join("diffota-factory/provision.env")).unwrap();
    let factory_index = provision_env
        .trim()
        .strip_prefix("DIFFOTA_FACTORY_INDEX=/data/")
        .unwrap_or_else(|| panic!("provision.env: {provision_env}"));
    assert_eq!(
        factory_index,
        "diffota-factory/releases/5.0-20261128/rootfs.didx"
    );
    let device = diffota_tests::Device::new(&dir.path().join("device"), &image, 32 << 20);
    device.configure("https://updates.invalid/store", &[&keys.public], |_| {});
    let before = run_ok(device.diffota().arg("status"));
    assert!(before.contains("slot a: unknown"), "{before}");
    let provisioned = run_ok(
        device
            .diffota()
            .arg("provision")
            .arg(data.join(factory_index)),
    );
    assert!(
        provisioned.contains("slot a holds release 5.0-20261128"),
        "{provisioned}"
    );
    let after = run_ok(device.diffota().arg("status"));
    assert!(after.contains("5.0-20261128"), "{after}");
    assert!(!after.contains("slot a: unknown"), "{after}");
    // The release's own fstab is in the image (what slot A boots with).
    if require_tool("debugfs", "e2fsprogs") {
        let fstab = run_ok(
            Command::new("debugfs")
                .args(["-R", "cat /etc/fstab"])
                .arg(&image),
        );
        assert!(fstab.contains("LABEL=data /data ext4"), "{fstab}");
    }

    // The next build, with the store kept in the deploy directory: the class's make writes
    // delta frames against the release before, with no setting.
    let mut app = std::fs::read(tree.join("usr/bin/app")).unwrap();
    for at in (0..app.len()).step_by(1000) {
        app[at] ^= 0x5a; // a rebuilt binary
    }
    std::fs::write(tree.join("usr/bin/app"), app).unwrap();
    mkfs(&image);
    vars.insert("DIFFOTA_VERSION", "5.0-20261205".into());
    std::fs::write(&script, image_cmd_script(&vars)).unwrap();
    run_ok(Command::new("sh").arg(&script).env("PATH", &path));
    let summary =
        std::fs::read_to_string(deploy.join("example-image-qemux86-64.rootfs.diffota")).unwrap();
    assert!(
        summary.contains("release 5.0-20261205") && summary.contains("against 5.0-20261128"),
        "{summary}"
    );
    let next = diffota_format::Index::decode(
        &std::fs::read(store.join("releases/5.0-20261205/rootfs.didx")).unwrap(),
    )
    .unwrap();
    assert!(!next.deltas.frames.is_empty(), "{summary}");

    // A release of several images: an application image and a firmware file beside the
    // root file system, in one signed manifest.
    let appfs = deploy.join("app-image-qemux86-64.rootfs.ext4");
    std::fs::copy(&image, &appfs).unwrap();
    let firmware = deploy.join("mcu.bin");
    std::fs::write(&firmware, b"mcu firmware\n".repeat(5000)).unwrap();
    vars.insert("DIFFOTA_VERSION", "5.0-20261212".into());
    // appfs as DIFFOTA_IMAGE_RECIPES = "appfs:app-image" expands (the recipe's deployed link).
    vars.insert(
        "DIFFOTA_RECIPE_IMAGES",
        format!("appfs={}", appfs.display()),
    );
    vars.insert(
        "DIFFOTA_SINGLE_COPY_IMAGES",
        format!("mcu={}", firmware.display()),
    );
    std::fs::write(&script, image_cmd_script(&vars)).unwrap();
    run_ok(Command::new("sh").arg(&script).env("PATH", &path));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.join("releases/5.0-20261212/release.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rootfs", "appfs", "mcu"]);
    verify("5.0-20261212");
    // Its factory data: the manifest and every index, provision.env naming the manifest.
    let group_data = dir.path().join("factory-data-group");
    vars.insert("DIFFOTA_FACTORY_DATA", group_data.display().to_string());
    std::fs::write(
        deploy.join("example-image-qemux86-64.rootfs.diffota-version"),
        "5.0-20261212\n",
    )
    .unwrap();
    std::fs::write(
        &factory_script,
        class_function_script("diffota_factory_data", &vars),
    )
    .unwrap();
    run_ok(Command::new("sh").arg(&factory_script));
    assert_eq!(
        std::fs::read_to_string(group_data.join("diffota-factory/provision.env")).unwrap(),
        "DIFFOTA_FACTORY_INDEX=/data/diffota-factory/releases/5.0-20261212/release.json\n"
    );
    for file in [
        "release.json",
        "release.json.minisig",
        "rootfs.didx",
        "appfs.didx.minisig",
        "mcu.didx",
    ] {
        assert!(
            group_data
                .join("diffota-factory/releases/5.0-20261212")
                .join(file)
                .is_file(),
            "{file}"
        );
    }
    vars.insert("DIFFOTA_VERSION", "5.0-20261213".into());
    vars.insert("DIFFOTA_EXTRA_IMAGES", "appfs=/nonexistent/app.ext4".into());
    std::fs::write(&script, image_cmd_script(&vars)).unwrap();
    let output = run(Command::new("sh").arg(&script).env("PATH", &path));
    assert!(
        stderr(&output)
            .contains("DIFFOTA_EXTRA_IMAGES names appfs=/nonexistent/app.ext4: no such file"),
        "{}",
        stderr(&output)
    );
    vars.insert("DIFFOTA_EXTRA_IMAGES", String::new());
    vars.insert(
        "DIFFOTA_RECIPE_IMAGES",
        format!("appfs={}", deploy.join("not-built.ext4").display()),
    );
    std::fs::write(&script, image_cmd_script(&vars)).unwrap();
    let output = run(Command::new("sh").arg(&script).env("PATH", &path));
    assert!(
        stderr(&output).contains("DIFFOTA_IMAGE_RECIPES: the image appfs=")
            && stderr(&output).contains("was not deployed"),
        "{}",
        stderr(&output)
    );
    vars.insert("DIFFOTA_RECIPE_IMAGES", String::new());
    vars.insert("DIFFOTA_SINGLE_COPY_IMAGES", String::new());

    // No key: a clear bbfatal, nothing made.
    vars.insert("DIFFOTA_SIGNING_KEY", String::new());
    vars.insert("DIFFOTA_VERSION", "5.1".into());
    std::fs::write(&script, image_cmd_script(&vars)).unwrap();
    let output = run(Command::new("sh").arg(&script).env("PATH", &path));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("DIFFOTA_SIGNING_KEY is not set"));
    assert!(!store.join("releases/5.1").exists());
}

#[test]
fn config_template_renders_to_a_config_diffota_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::generate(dir.path(), "release");
    let other = Keys::generate(dir.path(), "release-next");
    let (slot_a, slot_b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    std::fs::write(&slot_a, vec![0u8; 4096]).unwrap();
    std::fs::write(&slot_b, vec![0u8; 4096]).unwrap();
    let files = layer().join("recipes-core/diffota/files");
    let out = dir.path().join("etc/diffota.toml");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let key_dir = dir.path().join("etc/diffota/keys");
    let device_id = dir.path().join("machine-id");
    std::fs::write(&device_id, "0123456789abcdef\n").unwrap();
    let example_hook = files.join("diffota-migrate-data-example");
    let (appfs_a, appfs_b) = (
        dir.path().join("appfs-a.img"),
        dir.path().join("appfs-b.img"),
    );
    std::fs::write(&appfs_a, vec![0u8; 4096]).unwrap();
    std::fs::write(&appfs_b, vec![0u8; 4096]).unwrap();
    let render = |bootloader: &str, post_commit: &Path| {
        run(Command::new("sh")
            .arg(files.join("render-config.sh"))
            .arg(files.join("diffota.toml.in"))
            .arg(&out)
            .arg(&key_dir)
            .arg(&key_dir)
            .env("DIFFOTA_SERVER_URL", "https://updates.example.com/store")
            .env("DIFFOTA_CHANNEL", "stable")
            .env("DIFFOTA_COMPATIBLE", "qemux86-64")
            .env(
                "DIFFOTA_PUBLIC_KEYS",
                format!("{} {}", keys.public.display(), other.public.display()),
            )
            .env("DIFFOTA_STATE_DIR", dir.path().join("state"))
            .env("DIFFOTA_DEVICE_ID_FILE", &device_id)
            .env("DIFFOTA_SLOT_A", &slot_a)
            .env("DIFFOTA_SLOT_B", &slot_b)
            .env("DIFFOTA_BOOTLOADER", bootloader)
            .env("DIFFOTA_BOOT_ATTEMPTS", "3")
            .env("DIFFOTA_GRUBENV", dir.path().join("grubenv"))
            .env("DIFFOTA_HOOKS_POST_COMMIT", post_commit)
            .env(
                "DIFFOTA_SLOT_GROUP",
                format!("appfs:{}:{}", appfs_a.display(), appfs_b.display()),
            ))
    };
    assert!(render("none", &example_hook).status.success());
    std::fs::write(dir.path().join("cmdline"), "diffota.slot=a\n").unwrap();
    let config = std::fs::read_to_string(&out).unwrap();
    std::fs::write(
        &out,
        config.replace(
            "[boot]\n",
            &format!(
                "[boot]\ncmdline = {:?}\n",
                dir.path().join("cmdline").display().to_string()
            ),
        ),
    )
    .unwrap();
    let stdout = run_ok(diffota().arg("--config").arg(&out).arg("doctor"));
    assert!(
        stdout.contains("2 key(s)")
            && stdout.contains(&format!(
                "ok   post-commit hook {}: executable",
                example_hook.display()
            ))
            && stdout.contains("ok   image appfs: slots a and b, 4096 bytes each")
            && stdout.contains("0 failed"),
        "{stdout}"
    );
    let bad = render("lilo", &example_hook);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("DIFFOTA_BOOTLOADER=lilo"));
    let bad = render("none", Path::new("hooks/migrate"));
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(
            "DIFFOTA_HOOKS_POST_COMMIT names hooks/migrate, which is not an absolute path"
        ),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn shell_scripts_pass_shellcheck() {
    if !require_tool("shellcheck", "shellcheck") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut scripts: Vec<PathBuf> = files_under(&layer())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.extend(
        files_under(&root().join("scripts"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "sh")),
    );
    scripts.extend([
        layer().join("recipes-core/diffota/files/diffota-migrate-data-example"),
        layer().join("recipes-core/diffota/files/diffota-mount-running"),
        root().join("demo/run.sh"),
        root().join(".ci/run"),
        root().join("tests/yocto/run.sh"),
    ]);
    // The image command, with bitbake's variables standing as shell variables.
    let class =
        std::fs::read_to_string(layer().join("classes/image_types_diffota.bbclass")).unwrap();
    let body = shell_function(&class, "IMAGE_CMD:diffota");
    let mut header = String::from("#!/bin/sh\nset -e\nbbfatal() { echo \"ERROR: $*\" >&2; exit 1; }\nbbnote() { echo \"NOTE: $*\"; }\n");
    for name in [
        "DIFFOTA_SIGNING_KEY",
        "DIFFOTA_SIGNING_KEY_PASSWORD_FILE",
        "IMGDEPLOYDIR",
        "IMAGE_NAME",
        "IMAGE_NAME_SUFFIX",
        "DIFFOTA_ROOTFS_FSTYPE",
        "DIFFOTA_STORE",
        "DIFFOTA_VERSION",
        "DIFFOTA_COMPATIBLE",
        "DIFFOTA_IMAGE_NAME",
        "DIFFOTA_ZSTD_LEVEL",
        "DIFFOTA_MAKE_ARGS",
        "DIFFOTA_EXTRA_IMAGES",
        "DIFFOTA_RECIPE_IMAGES",
        "DIFFOTA_SINGLE_COPY_IMAGES",
        "DIFFOTA_RELEASE_IMAGE",
    ] {
        header.push_str(&format!("{name}=\"${{{name}:-}}\"\n"));
    }
    let image_cmd = dir.path().join("image_cmd.sh");
    std::fs::write(&image_cmd, format!("{header}{body}\n")).unwrap();
    scripts.push(image_cmd);
    for script in scripts {
        // The shebang says which shell; the image command has `#!/bin/sh` as bitbake runs it.
        run_ok(
            Command::new("shellcheck")
                .arg("--severity=style")
                .arg(&script)
                .env("SHELLCHECK_OPTS", ""),
        );
    }
}

#[test]
fn systemd_units_pass_systemd_analyze() {
    if !require_tool("systemd-analyze", "systemd") {
        return;
    }
    let stage = tempfile::tempdir().unwrap();
    let root_dir = stage.path();
    let unit_dir = root_dir.join("etc/systemd/system");
    std::fs::create_dir_all(&unit_dir).unwrap();
    std::fs::create_dir_all(root_dir.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root_dir.join("bin")).unwrap();
    std::fs::create_dir_all(root_dir.join("usr/lib/systemd")).unwrap();
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg("/lib/systemd/system")
            .arg(root_dir.join("usr/lib/systemd/")),
    );
    std::fs::create_dir_all(root_dir.join("usr/libexec/diffota")).unwrap();
    for stub in [
        "usr/bin/diffota",
        "usr/bin/mv",
        "bin/systemctl",
        "usr/bin/umount",
        "usr/libexec/diffota/diffota-mount-running",
    ] {
        std::fs::write(root_dir.join(stub), "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(
            root_dir.join(stub),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    std::fs::write(root_dir.join("etc/diffota.toml"), "").unwrap();
    std::fs::write(
        unit_dir.join("myapp.service"),
        "[Unit]\nDescription=stand-in application\n[Service]\nExecStart=/usr/bin/diffota\n",
    )
    .unwrap();
    let mut units = Vec::new();
    for file in files_under(&root().join("systemd")) {
        let name = file.file_name().unwrap().to_owned();
        std::fs::copy(&file, unit_dir.join(&name)).unwrap();
        units.push(Path::new("/etc/systemd/system").join(name));
    }
    assert!(units.len() >= 4);
    // The slot group mount unit diffota-config renders from DIFFOTA_SLOT_GROUP_MOUNTS.
    run_ok(
        Command::new("sh")
            .arg(layer().join("recipes-core/diffota/files/render-group-mounts.sh"))
            .arg(&unit_dir)
            .arg("/usr/libexec/diffota/diffota-mount-running")
            .env("DIFFOTA_SLOT_GROUP", "appfs:/dev/mmcblk0p5:/dev/mmcblk0p6")
            .env("DIFFOTA_SLOT_GROUP_MOUNTS", "appfs:/app"),
    );
    units.push(Path::new("/etc/systemd/system").join("diffota-mount-appfs.service"));
    let output = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root_dir.display()))
        .args(&units));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.trim().is_empty(),
        "systemd-analyze verify said:\n{text}"
    );
}

#[test]
fn slot_group_mounts_mount_the_running_group_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let files = layer().join("recipes-core/diffota/files");
    let render = |mounts: &str| {
        run(Command::new("sh")
            .arg(files.join("render-group-mounts.sh"))
            .arg(dir.path().join("units"))
            .arg("/usr/libexec/diffota/diffota-mount-running")
            .env(
                "DIFFOTA_SLOT_GROUP",
                "appfs:/dev/vda5:/dev/vda6 logs:/dev/vda7:/dev/vda8",
            )
            .env("DIFFOTA_SLOT_GROUP_MOUNTS", mounts))
    };
    let output = render("appfs:/app");
    assert!(output.status.success(), "{}", stderr(&output));
    let unit =
        std::fs::read_to_string(dir.path().join("units/diffota-mount-appfs.service")).unwrap();
    assert!(
        unit.contains(
            "ExecStart=/usr/libexec/diffota/diffota-mount-running appfs /dev/vda5 /dev/vda6 /app\n"
        ) && unit.contains("Before=diffota-mark-good.service")
            && unit.contains("WantedBy=multi-user.target"),
        "{unit}"
    );
    for (mounts, message) in [
        (
            "data:/data",
            "DIFFOTA_SLOT_GROUP_MOUNTS names data, which DIFFOTA_SLOT_GROUP",
        ),
        (
            "appfs:app",
            "expected NAME:MOUNTPOINT with an absolute mount point",
        ),
        ("appfs:/my$app", "a character a unit line cannot carry"),
    ] {
        let output = render(mounts);
        assert!(
            !output.status.success() && stderr(&output).contains(message),
            "{mounts}: {}",
            stderr(&output)
        );
    }

    // The helper mounts the device of the running group, read-only: a stand-in mount
    // records what it was asked.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let asked = dir.path().join("mount-args");
    std::fs::write(
        bin.join("mount"),
        format!("#!/bin/sh\necho \"$*\" > {}\n", asked.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("mount"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cmdline = dir.path().join("cmdline");
    let mountpoint = dir.path().join("app");
    let helper = |line: &str| {
        std::fs::write(&cmdline, line).unwrap();
        run(Command::new("sh")
            .arg(files.join("diffota-mount-running"))
            .args(["appfs", "/dev/vda5", "/dev/vda6"])
            .arg(&mountpoint)
            .env("DIFFOTA_CMDLINE", &cmdline)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            ))
    };
    for (line, device) in [
        (
            "console=ttyS0 root=/dev/vda3 diffota.slot=b rootwait\n",
            "/dev/vda6",
        ),
        ("diffota.slot=a\n", "/dev/vda5"),
    ] {
        let output = helper(line);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            std::fs::read_to_string(&asked).unwrap(),
            format!("-o ro {device} {}\n", mountpoint.display())
        );
    }
    let output = helper("console=ttyS0 xdiffota.slot=b\n");
    assert!(
        !output.status.success() && stderr(&output).contains("no diffota.slot=a or diffota.slot=b"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn layer_static_check() {
    let layer = layer();
    let layer_conf = std::fs::read_to_string(layer.join("conf/layer.conf")).unwrap();
    for needed in [
        "BBFILE_COLLECTIONS += \"diffota\"",
        "BBFILE_PATTERN_diffota",
        "LAYERDEPENDS_diffota",
        "LAYERSERIES_COMPAT_diffota",
    ] {
        assert!(layer_conf.contains(needed), "layer.conf lacks {needed}");
    }
    let compat = layer_conf
        .lines()
        .find(|l| l.starts_with("LAYERSERIES_COMPAT_diffota"))
        .unwrap();
    assert!(
        compat.contains("wrynose") && compat.contains("whinlatter"),
        "{compat}"
    );

    let recipes: Vec<PathBuf> = files_under(&layer)
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "bb" || e == "bbappend" || e == "inc" || e == "bbclass")
        })
        .collect();
    assert!(recipes.len() >= 8, "{recipes:?}");
    for recipe in &recipes {
        let text = std::fs::read_to_string(recipe).unwrap();
        let name = recipe.strip_prefix(&layer).unwrap().display().to_string();
        for line in text.lines() {
            let line = line.trim();
            assert!(
                !(line.starts_with("S =") || line.starts_with("S=")),
                "{name}: assigns S (breaks on releases with UNPACKDIR): {line}"
            );
            assert!(
                !line.contains("${WORKDIR}/git"),
                "{name}: uses ${{WORKDIR}}/git"
            );
            assert!(
                !line.contains("_append")
                    && !line.contains("_prepend")
                    && !line.contains("_remove"),
                "{name}: old override syntax: {line}"
            );
        }
        if recipe.extension().is_some_and(|e| e == "bb") {
            for needed in ["SUMMARY", "LICENSE"] {
                assert!(
                    text.contains(&format!("{needed} =")) || text.contains("require "),
                    "{name} lacks {needed}"
                );
            }
        }
        // License checksums that point into the repository must match the files.
        for checksum in text
            .split_whitespace()
            .filter(|w| w.contains("file://") && w.contains("md5="))
        {
            let checksum = checksum.trim_matches('"');
            let (file, md5) = checksum
                .trim_start_matches("file://")
                .split_once(";md5=")
                .unwrap();
            if file.starts_with("${") {
                continue;
            }
            let output = run_ok(Command::new("md5sum").arg(root().join(file)));
            assert!(
                output.starts_with(md5),
                "{name}: LIC_FILES_CHKSUM {md5} does not match {file}"
            );
        }
    }
    // wks files in files/wic/, where wrynose looks; layer.conf adds it for whinlatter.
    assert!(
        layer_conf.contains("WKS_SEARCH_PATH:append = \":${DIFFOTA_LAYERDIR}/files/wic\""),
        "layer.conf does not add files/wic to WKS_SEARCH_PATH"
    );
    assert!(
        !layer.join("wic").exists(),
        "wks files in wic/: wrynose refuses the layer"
    );
    for wks in [
        "files/wic/diffota-uboot.wks.in",
        "files/wic/diffota-efi.wks.in",
    ] {
        let text = std::fs::read_to_string(layer.join(wks)).unwrap();
        let parts: Vec<&str> = text.lines().filter(|l| l.starts_with("part ")).collect();
        assert_eq!(parts.len(), 4, "{wks}: boot, slot A, slot B, data");
        // Slot A is the release's image file, copied unchanged: a label or UUID option
        // would make wic rewrite the file system, and the factory slot would no longer be
        // the release.
        let slot_a = parts[1];
        assert!(
            slot_a.contains("--source rawcopy")
                && slot_a.contains("file=${DIFFOTA_RELEASE_IMAGE}")
                && !slot_a.contains("--label")
                && !slot_a.contains("--fsuuid")
                && !slot_a.contains("--fstype"),
            "{wks}: slot A must be a plain rawcopy of the release image: {slot_a}"
        );
        assert!(
            parts[2].contains("--label rootfs_b") && parts[2].contains("--fixed-size 1024M"),
            "{wks}: slot B as big as slot A: {}",
            parts[2]
        );
        assert!(
            parts[3].contains("--rootfs-dir=${DIFFOTA_FACTORY_DATA}")
                && parts[3].contains("--label data"),
            "{wks}: a data partition with the factory release: {}",
            parts[3]
        );
        assert!(
            !text.contains("bootimg-"),
            "{wks}: plugin names are bootimg_efi / bootimg_partition since walnascar"
        );
    }
    // A layer that is copied or vendored loses links out of it.
    for path in files_under(&layer) {
        assert!(
            !path.symlink_metadata().unwrap().is_symlink(),
            "{} is a symbolic link",
            path.display()
        );
    }
    // The layer README names every variable the recipes and classes read with ??=.
    let readme = std::fs::read_to_string(layer.join("README.md")).unwrap();
    for recipe in &recipes {
        for line in std::fs::read_to_string(recipe).unwrap().lines() {
            if let Some((name, _)) = line.split_once(" ??=") {
                assert!(
                    readme.contains(name.trim()),
                    "meta-diffota/README.md does not document {}",
                    name.trim()
                );
            }
        }
    }
    // The units the recipe installs from the fetched tree exist there.
    let recipe =
        std::fs::read_to_string(layer.join("recipes-core/diffota/diffota_git.bb")).unwrap();
    let units = recipe
        .lines()
        .find_map(|l| l.strip_prefix("DIFFOTA_UNITS = "))
        .expect("diffota_git.bb sets DIFFOTA_UNITS")
        .trim_matches('"');
    for unit in units.split_whitespace() {
        assert!(
            root().join("systemd").join(unit).exists(),
            "{unit} missing from systemd/"
        );
    }
}

/// SRCREV is a fixed commit of this repository whose Cargo.lock has exactly the registry
/// crates of diffota-crates.inc: a build of that commit finds every crate it needs.
#[test]
fn srcrev_is_a_commit_with_this_cargo_lock() {
    let inc = std::fs::read_to_string(layer().join("recipes-core/diffota/diffota.inc")).unwrap();
    let srcrev = inc
        .lines()
        .find_map(|l| l.strip_prefix("SRCREV ?= "))
        .expect("diffota.inc sets SRCREV ?=")
        .trim_matches('"')
        .to_string();
    assert!(
        srcrev.len() == 40 && srcrev.bytes().all(|b| b.is_ascii_hexdigit()),
        "SRCREV {srcrev} is not a commit id (AUTOREV needs the network while parsing)"
    );
    let output = run(Command::new("git")
        .arg("-C")
        .arg(root())
        .args(["show", &format!("{srcrev}:Cargo.lock")]));
    assert!(
        output.status.success(),
        "SRCREV {srcrev} is not a commit of this repository: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let crates_at_srcrev =
        diffota_tests::crates_inc::generate(&String::from_utf8_lossy(&output.stdout)).unwrap();
    let crates_inc =
        std::fs::read_to_string(root().join(diffota_tests::crates_inc::INC_PATH)).unwrap();
    assert!(
        crates_at_srcrev == crates_inc,
        "the crates of Cargo.lock changed since SRCREV {srcrev}: commit, then move SRCREV in diffota.inc to that commit"
    );
    // Every unit the recipe installs from the fetched tree is in that tree.
    let recipe =
        std::fs::read_to_string(layer().join("recipes-core/diffota/diffota_git.bb")).unwrap();
    let units = recipe
        .lines()
        .find_map(|l| l.strip_prefix("DIFFOTA_UNITS = "))
        .expect("diffota_git.bb sets DIFFOTA_UNITS")
        .trim_matches('"');
    for unit in units.split_whitespace() {
        let output = run(Command::new("git").arg("-C").arg(root()).args([
            "cat-file",
            "-e",
            &format!("{srcrev}:systemd/{unit}"),
        ]));
        assert!(
            output.status.success(),
            "SRCREV {srcrev} has no systemd/{unit}"
        );
    }
}

/// The kas machine files carry exactly the layer README's local.conf blocks.
#[test]
fn kas_files_carry_the_readme_settings() {
    let readme = std::fs::read_to_string(layer().join("README.md")).unwrap();
    let block = |name: &str| -> String {
        let tag = format!("<!-- local.conf: {name} -->\n```\n");
        let start = readme
            .find(&tag)
            .unwrap_or_else(|| panic!("README lacks {tag}"))
            + tag.len();
        let len = readme[start..].find("```").unwrap();
        readme[start..start + len].to_string()
    };
    for (file, bootloader) in [
        ("qemuarm64-uboot.yml", "uboot"),
        ("qemux86-64-efi.yml", "grub"),
    ] {
        let kas = std::fs::read_to_string(layer().join("kas").join(file)).unwrap();
        for (key, name) in [
            ("diffota-common", "common"),
            ("diffota-bootloader", bootloader),
        ] {
            let start = kas
                .find(&format!("  {key}: |\n"))
                .unwrap_or_else(|| panic!("{file} lacks {key}"))
                + key.len()
                + 6;
            let body: String = kas[start..]
                .lines()
                .take_while(|l| l.starts_with("    "))
                .map(|l| format!("{}\n", &l[4..]))
                .collect();
            assert_eq!(
                body,
                block(name),
                "{file}: {key} differs from the README's {name} block"
            );
        }
    }
    for release in ["wrynose", "whinlatter"] {
        let kas =
            std::fs::read_to_string(layer().join("kas").join(format!("{release}.yml"))).unwrap();
        assert!(kas.contains(&format!("branch: {release}")), "{release}.yml");
        assert!(
            readme.contains(&format!("kas/{release}.yml")),
            "README does not show kas/{release}.yml"
        );
    }
}
