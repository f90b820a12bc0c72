//! The edge both binaries share: printing to stdout and stderr without aborting when the
//! reader has gone away (`diffota status | head -1`), the logging setup, crash-safe file
//! replacement (`files`), bounded reading of files others control (`local_file`) and the
//! clock.

pub mod help;
pub mod output;
pub mod redact;

/// Seconds since the Unix epoch; 0 if the clock is before it.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether log lines carry their time: the device's journal adds its own, a build host's
/// terminal (a long `serve`) does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTimes {
    Shown,
    Left,
}

/// Logs to stderr, filtered by `$DIFFOTA_LOG` (default `warn`, and `info` for hooks: what a
/// hook prints belongs in the journal), coloured only on a terminal.
pub fn init_logging(times: LogTimes) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DIFFOTA_LOG")
                .unwrap_or_else(|_| "warn,diffota::hooks=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match times {
        LogTimes::Shown => builder.init(),
        LogTimes::Left => builder.without_time().init(),
    }
}

/// An error and its causes on one line, `outer: cause: cause`. A cause whose text the line
/// already holds is left out: most of our errors name their cause in their own message and
/// also return it as their source, so that code can match on it.
///
/// URLs in it are redacted (`redact::redact_urls_in`): a transport error quotes the URL it
/// was given, which may carry a password or a token.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    redact::redact_urls_in(&error_chain_raw(error))
}

fn error_chain_raw(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The end of both binaries' `main`: an error is printed as `PROGRAM: error: …` (with its
/// causes, `error_chain`) and becomes the status `of_error` gives it; stdout is flushed, and
/// output that could not be written (other than to a reader that went away) is a failure.
pub fn exit<E: AsRef<dyn std::error::Error + 'static>>(
    program: &str,
    result: Result<std::process::ExitCode, E>,
    of_error: impl FnOnce(&E) -> std::process::ExitCode,
) -> std::process::ExitCode {
    let code = result.unwrap_or_else(|e| {
        errln!("{program}: error: {}", error_chain(e.as_ref()));
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

#[cfg(test)]
mod tests {
    use std::fmt;

    /// An error that names its cause in its message and also returns it as its source.
    #[derive(Debug)]
    struct Named(std::io::Error);

    impl fmt::Display for Named {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "outer: {}", self.0)
        }
    }

    impl std::error::Error for Named {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// An error whose message leaves its cause to the chain.
    #[derive(Debug)]
    struct Silent(Named);

    impl fmt::Display for Silent {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }

    impl std::error::Error for Silent {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_are_shown_once() {
        let named = Named(std::io::Error::other("disk on fire"));
        assert_eq!(super::error_chain(&named), "outer: disk on fire");
        let silent = Silent(named);
        assert_eq!(super::error_chain(&silent), "wrapper: outer: disk on fire");
    }
}
