//! `diffota`: the device updater. A thin shell: parse arguments, load the config, run the
//! subcommand's module over the library, map the result to an exit status (`exit.rs`).

mod cli;
mod commands;
mod exit;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use diffota::config::Config;
use diffota::install::InstallOptions;

use cli::{Cli, Command};
use commands::Session;
use exit::Exit;

fn main() -> ExitCode {
    diffota::system::keep_large_allocations_returnable();
    diffota_cli::init_logging(diffota_cli::LogTimes::Left);
    let result = run(Cli::parse()).map(ExitCode::from);
    diffota_cli::exit("diffota", result, |e| exit::of_error(e).into())
}

fn run(cli: Cli) -> Result<Exit> {
    let config = Config::load(&cli.config)?;
    let bootloader =
        diffota::boot::from_config(&config.boot).context("opening the bootloader environment")?;
    let mut session = Session {
        config,
        bootloader,
        json: cli.json,
    };
    match &cli.command {
        Command::Check { release } => commands::check::run(&mut session, release),
        Command::Install {
            release,
            allow_downgrade,
            force,
            reboot,
        } => {
            let options = InstallOptions {
                allow_downgrade: *allow_downgrade,
                force: *force,
            };
            commands::install::run(&mut session, release, options, *reboot)
        }
        Command::Provision { release } => commands::check::provision(&mut session, release),
        Command::MarkGood => commands::lifecycle::mark_good(&mut session),
        Command::HealthFailed { reboot } => {
            commands::lifecycle::health_failed(&mut session, *reboot)
        }
        Command::MarkBad { switch } => commands::lifecycle::mark_bad(&mut session, switch),
        Command::Rollback { switch } => commands::lifecycle::rollback(&mut session, switch),
        Command::Report => commands::report::run(&session),
        Command::Service => commands::service::run(&session),
        Command::Status => commands::status::run(&session),
        Command::Doctor => commands::doctor::run(&session),
    }
}
