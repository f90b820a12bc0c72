//! `diffota`: the device updater. A thin shell: parse arguments, load the config, call the
//! library, print results, map errors to exit codes (0 done or nothing to do, 1 error).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use diffota::boot::Bootloader;
use diffota::config::{Config, DEFAULT_PATH};
use diffota::install::{self, Device, InstallOptions, Outcome};
use diffota::release::ReleaseTarget;
use diffota::slot::{booted_slot, Slot};
use diffota::state::{DeviceState, MarkGood, StateDir};
use diffota_cli::{errln, outln};

#[derive(Parser, Debug)]
#[command(
    name = "diffota",
    version,
    about = "A/B updates from a chunk store: download only what the running slot lacks"
)]
struct Cli {
    #[arg(long, global = true, default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check whether an update applies and how much it would download
    Check {
        #[command(flatten)]
        release: ReleaseArgs,
        #[arg(long)]
        json: bool,
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
        /// JSON events on stdout, one per line
        #[arg(long)]
        json: bool,
    },
    /// After a boot: commit a healthy trial slot, or record that the bootloader fell back
    MarkGood {
        #[arg(long)]
        json: bool,
    },
    /// The running slot failed its health check: boot the other slot from the next boot on
    MarkBad {
        /// Switch even when the other slot holds no image known to be good
        #[arg(long)]
        force: bool,
        #[arg(long)]
        reboot: bool,
    },
    /// Boot the other slot (on trial) when it holds an image known to be good
    Rollback {
        #[arg(long)]
        force: bool,
        #[arg(long)]
        reboot: bool,
    },
    /// Show the running slot, what each slot holds, the boot variables and the last install
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Provisioning self-test: config, keys, state directory, slots, bootloader environment
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct ReleaseArgs {
    /// Channel to follow instead of the configured one
    #[arg(long, conflicts_with = "index")]
    channel: Option<String>,
    /// A release index URL or path (`…/releases/<version>/<name>.didx`), or a bundle file,
    /// instead of a channel
    index: Option<String>,
}

impl ReleaseArgs {
    fn target(&self, config: &Config) -> ReleaseTarget {
        match (&self.index, &self.channel) {
            (Some(index), _)
                if !index.ends_with(".didx") && std::path::Path::new(index).is_file() =>
            {
                ReleaseTarget::Bundle(index.into())
            }
            (Some(index), _) => ReleaseTarget::Index(index.clone()),
            (None, Some(channel)) => ReleaseTarget::Channel(channel.clone()),
            (None, None) => ReleaseTarget::Channel(config.channel.clone()),
        }
    }
}

fn main() -> ExitCode {
    diffota_cli::init_logging(diffota_cli::LogTimes::Left);
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            errln!("diffota: error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A reader that went away is fine; output that could not be written is a failure.
    match diffota_cli::output::finish() {
        Ok(()) => code,
        Err(e) => {
            errln!("diffota: error: writing the output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(&cli.config)?;
    let mut bootloader =
        diffota::boot::from_config(&config.boot).context("opening the bootloader environment")?;
    let state_dir = StateDir::new(&config.state_dir);
    let running = || booted_slot(&config.boot.cmdline, &config.slots.a, &config.slots.b);
    match cli.command {
        Command::Check { release, json } => {
            let keys = diffota::keys::trusted_keys(&config)?;
            let device = device(&config, &keys, bootloader.as_mut())?;
            let report = runtime()?
                .block_on(install::check(&device, &release.target(&config)))
                .context("checking for an update")?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                outln!(
                    "running slot {} ({})",
                    report.running_slot,
                    report
                        .running_version
                        .as_deref()
                        .unwrap_or("unknown version")
                );
                if let Some(channel) = &report.channel {
                    outln!(
                        "channel {channel} (counter {}) offers {}",
                        report.channel_counter.unwrap_or(0),
                        report.version
                    );
                }
                outln!("eligibility: {}", report.eligibility);
                outln!("decision: {}", report.decision);
                let plan = &report.plan;
                outln!(
                    "download: {} bytes in {} requests for a {} byte image ({} of {} chunks from the running slot)",
                    plan.fetch_bytes, plan.fetch_requests, plan.image_bytes, plan.local_chunks, plan.chunks
                );
                if let Some(bundle) = &report.bundle {
                    let made_for = if bundle.made_for.is_empty() {
                        "any release".to_owned()
                    } else {
                        bundle.made_for.join(" or ")
                    };
                    if bundle.missing_chunks == 0 {
                        outln!("bundle: applies (made for devices on {made_for}); everything missing from the running slot is in the bundle");
                    } else {
                        outln!("bundle: lacks {} chunks this device needs; it was made for devices on {made_for}", bundle.missing_chunks);
                    }
                }
                outln!(
                    "update available: {}",
                    if report.update_available { "yes" } else { "no" }
                );
            }
        }
        Command::Install {
            release,
            allow_downgrade,
            force,
            reboot,
            json,
        } => {
            let keys = diffota::keys::trusted_keys(&config)?;
            let mut device = device(&config, &keys, bootloader.as_mut())?;
            let reporter = diffota::progress::Reporter::new(json);
            let options = InstallOptions {
                allow_downgrade,
                force,
            };
            let outcome = runtime()?
                .block_on(install::install(
                    &mut device,
                    &release.target(&config),
                    options,
                    &reporter,
                ))
                .context("installing")?;
            let installed = matches!(outcome, Outcome::Installed(_));
            if json {
                outln!("{}", serde_json::to_string(&outcome)?);
            } else {
                match outcome {
                    Outcome::Installed(report) => outln!(
                        "installed {} into slot {}: {} bytes downloaded in {} requests for a {} byte image ({} copied from the running slot, {} already in place) in {:.1} s; it boots on trial next",
                        report.version,
                        report.slot.map_or("?".into(), |s| s.to_string()),
                        report.downloaded_bytes,
                        report.requests,
                        report.image_bytes,
                        report.copied_bytes,
                        report.in_place_bytes,
                        report.seconds
                    ),
                    Outcome::UpToDate { version } => outln!("up to date: {version} is already running"),
                    Outcome::NotEligible { version, reason } => outln!("not installing {version}: {reason}"),
                    Outcome::PendingReboot { version, slot } => outln!("{version} is installed in slot {slot} and boots on trial after the next reboot"),
                    Outcome::PreviouslyFailed { version, reason } => {
                        outln!("not installing {version}: it failed on this device before ({reason}); a newer release or --force will")
                    }
                }
            }
            if installed && reboot {
                reboot_now(&config)?;
            }
        }
        Command::MarkGood { json } => {
            let boot_id = diffota::system::boot_id(&config.boot.boot_id_file);
            let outcome = DeviceState::load(&state_dir)?.mark_good(
                running()?,
                bootloader.as_mut(),
                boot_id.as_deref(),
            )?;
            if json {
                outln!("{}", serde_json::to_string(&outcome)?);
            } else {
                match outcome {
                    MarkGood::Committed { slot, version } => {
                        outln!("slot {slot} ({version}) committed")
                    }
                    MarkGood::Reverted {
                        slot,
                        failed_version,
                        reason,
                    } => {
                        outln!("release {failed_version} failed: {reason}; staying on slot {slot}, and {failed_version} will not be installed again on its own")
                    }
                    MarkGood::AlreadyGood { slot } => {
                        outln!("slot {slot} is good (no trial pending)")
                    }
                    MarkGood::TrialPending { slot, version } => {
                        outln!("{version} in slot {slot} is armed for a trial boot; nothing to mark before the reboot")
                    }
                }
            }
        }
        Command::MarkBad { force, reboot } => {
            let next =
                DeviceState::load(&state_dir)?.mark_bad(running()?, bootloader.as_mut(), force)?;
            outln!("slot {next} boots next");
            if reboot {
                reboot_now(&config)?;
            }
        }
        Command::Rollback { force, reboot } => {
            let next = DeviceState::load(&state_dir)?.rollback(
                running()?,
                bootloader.as_mut(),
                config.boot.boot_attempts,
                force,
                diffota::system::boot_id(&config.boot.boot_id_file),
            )?;
            outln!("slot {next} boots next, on trial");
            if reboot {
                reboot_now(&config)?;
            }
        }
        Command::Status { json } => status(&config, bootloader.as_ref(), &state_dir, json)?,
        Command::Doctor { json } => {
            let checks = diffota::doctor::run_checks(&config, bootloader.as_ref());
            let failed = checks.iter().filter(|c| !c.ok).count();
            if json {
                outln!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                for check in &checks {
                    outln!(
                        "{} {}: {}",
                        if check.ok { "ok  " } else { "FAIL" },
                        check.name,
                        check.detail
                    );
                }
                outln!("{} checks, {failed} failed", checks.len());
            }
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(
    config: &Config,
    bootloader: &dyn Bootloader,
    state_dir: &StateDir,
    json: bool,
) -> Result<()> {
    let state = state_dir.load()?;
    let running = booted_slot(&config.boot.cmdline, &config.slots.a, &config.slots.b).ok();
    let boot = bootloader.state().map_err(|e| e.to_string());
    if json {
        let boot = match &boot {
            Ok(boot) => serde_json::to_value(boot)?,
            Err(e) => serde_json::json!({ "error": e }),
        };
        let value = serde_json::json!({ "running_slot": running, "boot": boot, "state": state });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    outln!(
        "running slot: {}",
        running.map_or("unknown".into(), |s| s.to_string())
    );
    for slot in [Slot::A, Slot::B] {
        match state.slot(slot) {
            Some(record) => outln!(
                "slot {slot}: {} ({} bytes, installed {}{})",
                record.version,
                record.image_length,
                diffota::release::humanize_time(record.installed_at),
                if record.good { ", good" } else { "" }
            ),
            None => outln!("slot {slot}: unknown"),
        }
    }
    match boot {
        Ok(boot) => outln!(
            "bootloader: next boot slot {}, upgrade_available={}, bootcount={}, bootlimit={}",
            boot.selected.map_or("?".into(), |s| s.to_string()),
            u8::from(boot.upgrade_available),
            boot.bootcount,
            boot.bootlimit.map_or("?".into(), |l| l.to_string())
        ),
        Err(e) => outln!("bootloader: {e}"),
    }
    if let Some(trial) = state.trial() {
        outln!(
            "trial pending: {} in slot {} (from slot {})",
            trial.version,
            trial.slot,
            trial.from_slot
        );
    }
    match state.last_install() {
        Some(last) => outln!(
            "last install: {} {} into slot {} ({} bytes downloaded)",
            last.result,
            last.version,
            last.slot,
            last.downloaded_bytes
        ),
        None => outln!("last install: none"),
    }
    for failed in state.failed_releases() {
        outln!(
            "failed release {}: {} ({})",
            failed.version,
            failed.reason,
            diffota::release::humanize_time(failed.at)
        );
    }
    Ok(())
}

fn reboot_now(config: &Config) -> Result<()> {
    let command = &config.boot.reboot_command;
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .status()
        .with_context(|| format!("running {}", command.join(" ")))?;
    if !status.success() {
        bail!("{} failed: {status}", command.join(" "));
    }
    Ok(())
}

fn device<'a>(
    config: &'a Config,
    keys: &'a diffota_format::TrustedKeys,
    bootloader: &'a mut dyn Bootloader,
) -> Result<Device<'a>> {
    let device_id = diffota::system::device_id(&config.device_id)?;
    Ok(Device {
        config,
        keys,
        state_dir: StateDir::new(&config.state_dir),
        device_id,
        bootloader,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            &["diffota", "mark-bad", "--reboot"],
            &["diffota", "rollback", "--force"],
            &["diffota", "status", "--json"],
            &["diffota", "doctor"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["diffota", "install", "--channel", "x", "y.didx"]).is_err());
    }
}
