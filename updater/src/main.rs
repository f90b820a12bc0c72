//! `diffota`: the device updater. A thin shell: parse arguments, load the config, call the
//! library, print results, map errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use diffota::config::{Config, DEFAULT_PATH};
use diffota::install::{self, Device, InstallOptions, Outcome};
use diffota::release::ReleaseTarget;
use diffota::slot::booted_slot;
use diffota::state::StateDir;

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
    /// Install the release into the inactive slot and verify it
    Install {
        #[command(flatten)]
        release: ReleaseArgs,
        /// Install even when the release is older than the running one
        #[arg(long)]
        allow_downgrade: bool,
        /// Reinstall the running version, and ignore rollout eligibility
        #[arg(long)]
        force: bool,
        /// JSON events on stdout, one per line
        #[arg(long)]
        json: bool,
    },
    /// Show the running slot, what each slot holds and the last install
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct ReleaseArgs {
    /// Channel to follow instead of the configured one
    #[arg(long, conflicts_with = "index")]
    channel: Option<String>,
    /// A release index URL or path (`…/releases/<version>/<name>.didx`) instead of a channel
    index: Option<String>,
}

impl ReleaseArgs {
    fn target(&self, config: &Config) -> ReleaseTarget {
        match (&self.index, &self.channel) {
            (Some(index), _) => ReleaseTarget::Index(index.clone()),
            (None, Some(channel)) => ReleaseTarget::Channel(channel.clone()),
            (None, None) => ReleaseTarget::Channel(config.channel.clone()),
        }
    }
}

/// Exit codes: 0 done (or nothing to do), 1 error.
fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DIFFOTA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diffota: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Check { release, json } => {
            let keys = install::trusted_keys(&config)?;
            let mut bootloader = diffota::boot::NoBootloader;
            let device = device(&config, &keys, &mut bootloader)?;
            let report = runtime()?
                .block_on(install::check(&device, &release.target(&config)))
                .context("checking for an update")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "running slot {} ({})",
                    report.running_slot,
                    report
                        .running_version
                        .as_deref()
                        .unwrap_or("unknown version")
                );
                if let Some(channel) = &report.channel {
                    println!(
                        "channel {channel} (counter {}) offers {}",
                        report.channel_counter.unwrap_or(0),
                        report.version
                    );
                }
                println!("eligibility: {}", report.eligibility);
                println!("decision: {}", report.decision);
                let plan = &report.plan;
                println!(
                    "download: {} bytes in {} requests for a {} byte image ({} of {} chunks from the running slot)",
                    plan.fetch_bytes, plan.fetch_requests, plan.image_bytes, plan.local_chunks, plan.chunks
                );
                println!(
                    "update available: {}",
                    if report.update_available { "yes" } else { "no" }
                );
            }
        }
        Command::Install {
            release,
            allow_downgrade,
            force,
            json,
        } => {
            let keys = install::trusted_keys(&config)?;
            let mut bootloader = diffota::boot::NoBootloader;
            let mut device = device(&config, &keys, &mut bootloader)?;
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
            if json {
                println!("{}", serde_json::to_string(&outcome)?);
            } else {
                match outcome {
                    Outcome::Installed(report) => {
                        println!(
                            "installed {} into slot {}: {} bytes downloaded in {} requests for a {} byte image ({} copied from the running slot, {} already in place) in {:.1} s",
                            report.version,
                            report.slot.map_or("?".into(), |s| s.to_string()),
                            report.downloaded_bytes,
                            report.requests,
                            report.image_bytes,
                            report.copied_bytes,
                            report.in_place_bytes,
                            report.seconds
                        );
                    }
                    Outcome::UpToDate { version } => {
                        println!("up to date: {version} is already running")
                    }
                    Outcome::NotEligible { version, reason } => {
                        println!("not installing {version}: {reason}")
                    }
                }
            }
        }
        Command::Status { json } => {
            let state = StateDir::new(&config.state_dir).load()?;
            let running = booted_slot(&config.boot.cmdline, &config.slots.a, &config.slots.b).ok();
            if json {
                let value = serde_json::json!({ "running_slot": running, "state": state });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!(
                    "running slot: {}",
                    running.map_or("unknown".into(), |s| s.to_string())
                );
                for slot in [diffota::slot::Slot::A, diffota::slot::Slot::B] {
                    match state.slots.get(&slot) {
                        Some(record) => println!(
                            "slot {slot}: {} ({} bytes, installed at {})",
                            record.version,
                            record.image_length,
                            diffota::release::humanize_time(record.installed_at)
                        ),
                        None => println!("slot {slot}: unknown"),
                    }
                }
                match &state.last_install {
                    Some(last) => println!(
                        "last install: {} {} into slot {} ({} bytes downloaded)",
                        last.result, last.version, last.slot, last.downloaded_bytes
                    ),
                    None => println!("last install: none"),
                }
            }
        }
    }
    Ok(())
}

fn device<'a>(
    config: &'a Config,
    keys: &'a diffota_format::TrustedKeys,
    bootloader: &'a mut dyn diffota::boot::Bootloader,
) -> Result<Device<'a>> {
    let device_id = diffota::device_id(&config.device_id).map_err(anyhow::Error::msg)?;
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
            &["diffota", "install", "--force", "--json"],
            &["diffota", "status", "--json"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["diffota", "install", "--channel", "x", "y.didx"]).is_err());
    }
}
