//! A custom boot backend: a script the board integrator provides. Its interface:
//!
//! - `SCRIPT get` prints the boot variables, one `name=value` per line, exit 0;
//! - `SCRIPT set name=value [name=value …]` stores all of them at once (an empty value
//!   removes a variable), exit 0 only when they are stored durably.
//!
//! diffota uses the variables `diffota_slot`, `upgrade_available`, `bootcount` and
//! `bootlimit` with the meanings of the U-Boot backend; the script maps them onto the board.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use super::{failed, tool_error, BootError, EnvStore, ToolError};

pub struct CustomScript {
    pub script: PathBuf,
}

impl CustomScript {
    fn run(&self, args: &[String]) -> Result<String, BootError> {
        let output = Command::new(&self.script)
            .args(args)
            .output()
            .map_err(|e| tool_error(&self.script, ToolError::Spawn(e)))?;
        if !output.status.success() {
            return Err(failed(&self.script, &args.join(" "), &output));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl EnvStore for CustomScript {
    fn describe(&self) -> String {
        format!("custom boot script {}", self.script.display())
    }

    fn load(&self) -> Result<BTreeMap<String, String>, BootError> {
        let text = self.run(&["get".to_owned()])?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.trim().to_owned(), value.to_owned()))
            .collect())
    }

    fn store(&self, vars: &BTreeMap<String, String>) -> Result<(), BootError> {
        let mut args = vec!["set".to_owned()];
        args.extend(vars.iter().map(|(name, value)| format!("{name}={value}")));
        self.run(&args).map(|_| ())
    }
}
