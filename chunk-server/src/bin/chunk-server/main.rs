//! `chunk-server`: the publishing tool. A thin shell: parse arguments, run the subcommand's
//! module over the library, map the result to an exit status: 0 done (a `make` of a release
//! that exists with the same content is done too), 1 error (for `verify`: a problem found),
//! 2 usage.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    diffota_cli::init_logging(diffota_cli::LogTimes::Shown);
    let result = commands::run(cli::Cli::parse());
    diffota_cli::exit("chunk-server", result, |_| ExitCode::FAILURE)
}
