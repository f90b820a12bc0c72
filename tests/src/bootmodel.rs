//! The bootloader's side of a boot, for tests that cannot run U-Boot or GRUB here: an
//! executable model of the shipped scripts, `meta-diffota/recipes-bsp/u-boot/files/diffota.cmd`
//! and `meta-diffota/recipes-bsp/grub/files/diffota.cfg`. Each step below names the script
//! lines it stands for; `SCRIPT_LINES` lists them verbatim and a test checks that the shipped
//! script still contains every one, so the model and the script cannot drift apart silently.
//!
//! The model reads and writes the environment through the real tools (`fw_printenv` /
//! `fw_setenv`, `grub-editenv`), so every cycle also checks that diffota's environment
//! writes are what those tools, and therefore the bootloaders, read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run_ok;

/// The lines of `diffota.cmd` the model implements, in order.
pub const UBOOT_SCRIPT_LINES: &[&str] = &[
    "test -n \"${diffota_slot}\" || setenv diffota_slot a",
    "test -n \"${bootlimit}\" || setenv bootlimit 3",
    "test -n \"${bootcount}\" || setenv bootcount 0",
    "if test \"${upgrade_available}\" = \"1\"; then",
    "if test ${bootcount} -ge ${bootlimit}; then",
    "if test \"${diffota_slot}\" = \"a\"; then setenv diffota_slot b; else setenv diffota_slot a; fi",
    "setenv upgrade_available 0",
    "setenv bootcount 0",
    "elif test \"${bootcount}\" = \"0\"; then setenv bootcount 1",
    "run diffota_save_env",
    "setenv bootargs \"${diffota_args} root=${diffota_root} rootwait ro diffota.slot=${diffota_slot}\"",
];

/// The lines of `diffota.cfg` the model implements, in order.
pub const GRUB_SCRIPT_LINES: &[&str] = &[
    "load_env -f \"${diffota_grubenv}\" diffota_slot upgrade_available bootcount bootlimit",
    "if [ -z \"${diffota_slot}\" ]; then set diffota_slot=a; fi",
    "if [ -z \"${bootlimit}\" ]; then set bootlimit=3; fi",
    "if [ \"${upgrade_available}\" = \"1\" ]; then",
    "if [ \"${bootcount}\" -ge \"${bootlimit}\" ]; then",
    "if [ \"${diffota_slot}\" = \"a\" ]; then set diffota_slot=b; else set diffota_slot=a; fi",
    "set upgrade_available=0",
    "elif [ \"${bootcount}\" = \"0\" ]; then set bootcount=1",
    "save_env -f \"${diffota_grubenv}\" diffota_slot upgrade_available bootcount",
    "linux ${diffota_part}${diffota_kernel} ${diffota_args} root=${diffota_root} rootwait ro diffota.slot=${diffota_slot}",
];

/// One boot: applies the scripts' logic to `vars` and returns the slot the kernel is
/// started with (its `diffota.slot=`) and whether the environment was saved.
pub fn boot(vars: &mut BTreeMap<String, String>) -> (String, bool) {
    let get =
        |vars: &BTreeMap<String, String>, name: &str| vars.get(name).cloned().unwrap_or_default();
    // [defaults] `test -n "${x}" || setenv x …` / `if [ -z "${x}" ]; then set x=…; fi`
    for (name, default) in [
        ("diffota_slot", "a"),
        ("bootlimit", "3"),
        ("bootcount", "0"),
    ] {
        if get(vars, name).is_empty() {
            vars.insert(name.into(), default.into());
        }
    }
    let mut saved = false;
    // [trial] `if test "${upgrade_available}" = "1"; then`
    if get(vars, "upgrade_available") == "1" {
        let count: u32 = get(vars, "bootcount").parse().unwrap_or(0);
        let limit: u32 = get(vars, "bootlimit").parse().unwrap_or(3);
        if count >= limit {
            // `if test ${bootcount} -ge ${bootlimit}`: swap slots, end the trial
            let other = if get(vars, "diffota_slot") == "a" {
                "b"
            } else {
                "a"
            };
            vars.insert("diffota_slot".into(), other.into());
            vars.insert("upgrade_available".into(), "0".into());
            vars.insert("bootcount".into(), "0".into());
        } else {
            // the step chain: `elif test "${bootcount}" = "0"; then setenv bootcount 1` …
            vars.insert("bootcount".into(), (count + 1).to_string());
        }
        // `run diffota_save_env` (saveenv by default) / `save_env …`
        saved = true;
    }
    // [boot] `… diffota.slot=${diffota_slot}`
    (get(vars, "diffota_slot"), saved)
}

/// Environment access through the real tools.
pub enum EnvTool {
    /// `fw_printenv` / `fw_setenv` with an fw_env.config.
    Uboot { config: PathBuf },
    /// `grub-editenv` on a grubenv file.
    Grub { file: PathBuf },
}

impl EnvTool {
    pub fn read(&self) -> BTreeMap<String, String> {
        let stdout = match self {
            EnvTool::Uboot { config } => run_ok(Command::new("fw_printenv").arg("-c").arg(config)),
            EnvTool::Grub { file } => run_ok(Command::new("grub-editenv").arg(file).arg("list")),
        };
        stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Sets the given variables (the bootloader saves only what it changed).
    pub fn write(&self, vars: &BTreeMap<String, String>) {
        match self {
            EnvTool::Uboot { config } => {
                let script = config.with_extension("script");
                let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                std::fs::write(&script, text).unwrap();
                run_ok(
                    Command::new("fw_setenv")
                        .arg("-c")
                        .arg(config)
                        .arg("-s")
                        .arg(&script),
                );
            }
            EnvTool::Grub { file } => {
                let mut command = Command::new("grub-editenv");
                command.arg(file).arg("set");
                for (k, v) in vars {
                    command.arg(format!("{k}={v}"));
                }
                run_ok(&mut command);
            }
        }
    }

    /// One boot through the model; returns the slot booted.
    pub fn boot(&self) -> String {
        let mut vars = self.read();
        let (slot, saved) = boot(&mut vars);
        if saved {
            let keep = ["diffota_slot", "upgrade_available", "bootcount"];
            self.write(
                &vars
                    .into_iter()
                    .filter(|(k, _)| keep.contains(&k.as_str()))
                    .collect(),
            );
        }
        slot
    }
}

/// Creates a redundant U-Boot environment (two files) initialised by `fw_setenv -f`.
pub fn init_uboot_env(dir: &Path, defaults: &[(&str, &str)], redundant: bool) -> PathBuf {
    let config = dir.join("fw_env.config");
    let mut lines = String::new();
    let copies = if redundant { 2 } else { 1 };
    for copy in 1..=copies {
        let file = dir.join(format!("uboot-env-{copy}.bin"));
        std::fs::write(&file, vec![0u8; 0x4000]).unwrap();
        lines.push_str(&format!("{} 0x0 0x4000\n", file.display()));
    }
    std::fs::write(&config, lines).unwrap();
    let defenv = dir.join("uboot-defaults.txt");
    let text: String = defaults.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&defenv, text).unwrap();
    let (first, _) = defaults[0];
    let first_value = defaults[0].1;
    let output = Command::new("fw_setenv")
        .arg("-c")
        .arg(&config)
        .arg("-f")
        .arg(&defenv)
        .arg(first)
        .arg(first_value)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fw_setenv -f failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    config
}

/// Creates a grubenv with `grub-editenv create` and sets `defaults`.
pub fn init_grubenv(dir: &Path, defaults: &[(&str, &str)]) -> PathBuf {
    let file = dir.join("grubenv");
    run_ok(Command::new("grub-editenv").arg(&file).arg("create"));
    let tool = EnvTool::Grub { file: file.clone() };
    tool.write(
        &defaults
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    file
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars;

    #[test]
    fn a_trial_gets_bootlimit_boots_then_falls_back() {
        let mut env = vars(&[
            ("diffota_slot", "b"),
            ("upgrade_available", "1"),
            ("bootcount", "0"),
            ("bootlimit", "3"),
        ]);
        assert_eq!(boot(&mut env), ("b".into(), true));
        assert_eq!(boot(&mut env), ("b".into(), true));
        assert_eq!(boot(&mut env), ("b".into(), true));
        assert_eq!(boot(&mut env), ("a".into(), true));
        assert_eq!(env["upgrade_available"], "0");
        assert_eq!(boot(&mut env), ("a".into(), false));
    }

    #[test]
    fn the_shipped_scripts_contain_what_the_model_implements() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (path, lines) in [
            (
                "meta-diffota/recipes-bsp/u-boot/files/diffota.cmd",
                UBOOT_SCRIPT_LINES,
            ),
            (
                "meta-diffota/recipes-bsp/grub/files/diffota.cfg",
                GRUB_SCRIPT_LINES,
            ),
        ] {
            let script = std::fs::read_to_string(root.join(path)).unwrap();
            let stripped: Vec<&str> = script.lines().map(str::trim).collect();
            let mut at = 0;
            for line in lines {
                let found = stripped[at..].iter().position(|l| l == line);
                assert!(
                    found.is_some(),
                    "{path} no longer contains (in order) the line the model implements: {line}"
                );
                at += found.unwrap();
            }
        }
    }
}
