//! A simulated reboot for the demo, on a file-backed device with a GRUB environment block:
//! runs the shipped GRUB fragment's logic (`diffota_tests::bootmodel`, checked line by line
//! against `meta-diffota/recipes-bsp/grub/files/diffota.cfg`) and "starts the kernel" by
//! writing the kernel command line (`diffota.slot=`) and a new boot id.
//!
//! `boot-sim factory GRUBENV`: a factory environment (slot a, no trial, 3 boot attempts).
//! `boot-sim boot GRUBENV CMDLINE BOOT_ID`: one boot; prints what the boot script echoes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use diffota::boot::grub;

/// What GRUB's `save_env` in the fragment writes back.
const SAVED: [&str; 3] = ["diffota_slot", "upgrade_available", "bootcount"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["factory", env] => factory(Path::new(env)),
        ["boot", env, cmdline, boot_id] => {
            boot(Path::new(env), Path::new(cmdline), Path::new(boot_id))
        }
        _ => Err("usage: boot-sim factory GRUBENV | boot-sim boot GRUBENV CMDLINE BOOT_ID".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boot-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn factory(env: &Path) -> Result<(), String> {
    let vars = [
        ("diffota_slot", "a"),
        ("upgrade_available", "0"),
        ("bootcount", "0"),
        ("bootlimit", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    store(env, &vars)
}

fn boot(env: &Path, cmdline: &Path, boot_id: &Path) -> Result<(), String> {
    let bytes = std::fs::read(env).map_err(|e| format!("{}: {e}", env.display()))?;
    let stored = grub::decode(&bytes).map_err(|e| format!("{}: {e}", env.display()))?;
    let mut vars = stored.clone();
    let before = vars.get("diffota_slot").cloned().unwrap_or_default();
    let (slot, saved) = diffota_tests::bootmodel::boot(&mut vars);
    let get = |name: &str| vars.get(name).cloned().unwrap_or_default();
    if saved {
        if !before.is_empty() && slot != before {
            println!(
                "diffota: slot {before} did not come up healthy in {} boots; falling back",
                get("bootlimit")
            );
        }
        let mut next = stored;
        for name in SAVED {
            next.insert(name.to_owned(), get(name));
        }
        store(env, &next)?;
    }
    println!(
        "diffota: booting slot {slot} (try {} of {}, upgrade_available={})",
        get("bootcount"),
        get("bootlimit"),
        get("upgrade_available")
    );
    write(cmdline, format!("diffota.slot={slot}\n").as_bytes())?;
    let id = blake3::hash(
        format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
    );
    write(boot_id, format!("{}\n", &id.to_hex()[..32]).as_bytes())
}

fn store(env: &Path, vars: &BTreeMap<String, String>) -> Result<(), String> {
    let bytes = grub::encode(vars).map_err(|e| format!("{}: {e}", env.display()))?;
    write(env, &bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    diffota::state::write_atomic(path, bytes).map_err(|e| e.to_string())
}
