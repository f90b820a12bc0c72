//! The edge both binaries share: printing to stdout and stderr without aborting when the
//! reader has gone away (`diffota status | head -1`), and the logging setup.

pub mod output;

/// Whether log lines carry their time: the device's journal adds its own, a build host's
/// terminal (a long `serve`) does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTimes {
    Shown,
    Left,
}

/// Logs to stderr, filtered by `$DIFFOTA_LOG` (default `warn`), coloured only on a terminal.
pub fn init_logging(times: LogTimes) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DIFFOTA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match times {
        LogTimes::Shown => builder.init(),
        LogTimes::Left => builder.without_time().init(),
    }
}

/// The end of both binaries' `main`: an error is printed as `PROGRAM: error: …` (with its
/// causes) and becomes the status `of_error` gives it; stdout is flushed, and output that
/// could not be written (other than to a reader that went away) is a failure.
pub fn exit<E: std::fmt::Display>(
    program: &str,
    result: Result<std::process::ExitCode, E>,
    of_error: impl FnOnce(&E) -> std::process::ExitCode,
) -> std::process::ExitCode {
    let code = result.unwrap_or_else(|e| {
        errln!("{program}: error: {e:#}");
        of_error(&e)
    });
    match output::finish() {
        Ok(()) => code,
        Err(e) => {
            errln!("{program}: error: writing the output: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
