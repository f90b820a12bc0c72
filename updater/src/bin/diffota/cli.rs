//! The command line, as clap structs. Options that several commands take are one argument
//! group each (`ReleaseArgs`, `SwitchArgs`); `--json` and `--config` are global.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use diffota::config::{Config, DEFAULT_PATH};
use diffota::release::ReleaseTarget;

#[derive(Parser, Debug)]
#[command(
    name = "diffota",
    version,
    about = "A/B updates from a chunk store: download only what the running slot lacks",
    after_help = "Exit status: 0 done, 1 error, 2 usage, 3 nothing to do, 4 refused, 5 busy (another install, mark-good, mark-bad or rollback holds the device lock)."
)]
pub struct Cli {
    /// The device configuration (TOML; README, "The device")
    #[arg(long, global = true, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Print the result as JSON (for install: JSON events on stdout, one per line)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check whether an update applies and how much it would download
    Check {
        #[command(flatten)]
        release: ReleaseArgs,
    },
    /// Install the release into the inactive slot, verify it and boot it on trial next
    Install {
        #[command(flatten)]
        release: ReleaseArgs,
        /// Install even when the release is older than the running one
        #[arg(long)]
        allow_downgrade: bool,
        /// Reinstall the running version or a release that failed here; ignore rollout
        #[arg(long)]
        force: bool,
        /// Reboot into the new slot when done
        #[arg(long)]
        reboot: bool,
    },
    /// Record which release the running slot holds when diffota did not write it (the
    /// factory image): the slot must match the signed release byte for byte
    Provision {
        #[command(flatten)]
        release: ReleaseArgs,
    },
    /// After a boot: commit a healthy trial slot, or record that the bootloader fell back
    MarkGood,
    /// A health check failed (run by diffota-health-failed.service): on a trial boot, reboot
    /// so that the bootloader counts the attempt and falls back after boot_attempts; on a
    /// committed slot, do nothing (exit 3)
    HealthFailed {
        /// Run the configured reboot_command when the running slot is on trial
        #[arg(long)]
        reboot: bool,
    },
    /// The running slot failed its health check: boot the other slot from the next boot on
    MarkBad {
        #[command(flatten)]
        switch: SwitchArgs,
    },
    /// Boot the other slot (on trial) when it holds an image known to be good
    Rollback {
        #[command(flatten)]
        switch: SwitchArgs,
    },
    /// Send the outcome reports waiting in the state directory to the [report] endpoint
    Report,
    /// Serve the org.diffota.Updater1 D-Bus API on the system bus (diffota-service.service)
    Service,
    /// Show the running slot, what each slot holds, the boot variables and the last install
    Status,
    /// Provisioning self-test: config, keys, state directory, slots, bootloader environment
    Doctor,
}

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    /// Channel to follow instead of the configured one
    #[arg(long, conflicts_with = "index")]
    pub channel: Option<String>,
    /// A release index URL or path (`…/releases/<version>/<name>.didx`), or a bundle file,
    /// instead of a channel
    pub index: Option<String>,
}

impl ReleaseArgs {
    pub fn target(&self, config: &Config) -> ReleaseTarget {
        ReleaseTarget::from_arguments(
            self.index.as_deref(),
            self.channel.as_deref(),
            &config.channel,
        )
    }
}

/// Switching to the other slot by hand.
#[derive(clap::Args, Debug)]
pub struct SwitchArgs {
    /// Switch even when the other slot holds no image known to be good
    #[arg(long)]
    pub force: bool,
    /// Reboot when done
    #[arg(long)]
    pub reboot: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every subcommand says what it is in `--help`.
    #[test]
    fn every_argument_is_described() {
        let missing =
            diffota_cli::help::undescribed_arguments(&<Cli as clap::CommandFactory>::command());
        assert!(missing.is_empty(), "without a description: {missing:?}");
    }

    #[test]
    fn parses_every_subcommand() {
        for args in [
            &["diffota", "check"][..],
            &["diffota", "check", "--json", "--channel", "beta"],
            &["diffota", "--config", "x.toml", "install"],
            &[
                "diffota",
                "install",
                "https://h/store/releases/2/rootfs.didx",
                "--allow-downgrade",
            ],
            &["diffota", "install", "--force", "--json", "--reboot"],
            &["diffota", "mark-good"],
            &["diffota", "mark-good", "--json"],
            &["diffota", "mark-bad", "--reboot"],
            &["diffota", "rollback", "--force"],
            &["diffota", "status", "--json"],
            &["diffota", "--json", "doctor"],
            &["diffota", "provision"],
            &["diffota", "provision", "--channel", "factory"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["diffota", "install", "--channel", "x", "y.didx"]).is_err());
    }
}
