//! The U-Boot environment through the real `fw_printenv` / `fw_setenv` (libubootenv), for
//! boards whose environment lives where only those tools can write it (raw NAND, UBI).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{failed, tool_error, BootError, EnvStore, ToolError};

pub struct FwTools {
    pub fw_printenv: PathBuf,
    pub fw_setenv: PathBuf,
    pub config: PathBuf,
}

impl EnvStore for FwTools {
    fn describe(&self) -> String {
        format!(
            "U-Boot environment via {} -c {}",
            self.fw_setenv.display(),
            self.config.display()
        )
    }

    fn load(&self) -> Result<BTreeMap<String, String>, BootError> {
        let output = Command::new(&self.fw_printenv)
            .arg("-c")
            .arg(&self.config)
            .output()
            .map_err(|e| tool_error(&self.fw_printenv, ToolError::Spawn(e)))?;
        if !output.status.success() {
            return Err(failed(&self.fw_printenv, "fw_printenv", &output));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }

    /// Sets every variable in one `fw_setenv -s` script (`name=value` lines; `name=` deletes):
    /// one environment write.
    fn store(&self, vars: &BTreeMap<String, String>) -> Result<(), BootError> {
        let current = self.load().unwrap_or_default();
        let mut script = String::new();
        for name in current.keys().filter(|name| !vars.contains_key(*name)) {
            script.push_str(&format!("{name}=\n"));
        }
        for (name, value) in vars {
            script.push_str(&format!("{name}={value}\n"));
        }
        let mut child = Command::new(&self.fw_setenv)
            .arg("-c")
            .arg(&self.config)
            .args(["-s", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| tool_error(&self.fw_setenv, ToolError::Spawn(e)))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())
            .map_err(|e| tool_error(&self.fw_setenv, ToolError::Pipe(e)))?;
        let output = child
            .wait_with_output()
            .map_err(|e| tool_error(&self.fw_setenv, ToolError::Pipe(e)))?;
        if !output.status.success() {
            return Err(failed(&self.fw_setenv, "fw_setenv -s -", &output));
        }
        Ok(())
    }
}
