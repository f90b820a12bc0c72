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
