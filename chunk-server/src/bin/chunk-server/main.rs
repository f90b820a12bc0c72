//! `chunk-server`: the publishing tool. A thin shell: parse arguments, run the subcommand's
//! module over the library, map the result to an exit status: 0 done (a `make` of a release
//! that exists with the same content is done too), 1 error (for `verify`: a problem found),
//! 2 usage.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use diffota_cli::errln;

fn main() -> ExitCode {
    diffota_cli::init_logging(diffota_cli::LogTimes::Shown);
    let cli = cli::Cli::parse();
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            errln!("chunk-server: error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A reader that went away is fine; output that could not be written is a failure.
    match diffota_cli::output::finish() {
        Ok(()) => code,
        Err(e) => {
            errln!("chunk-server: error: writing the output: {e}");
            ExitCode::FAILURE
        }
    }
}
