//! stdout and stderr for command output. `println!` panics when a write fails, and the
//! release profile aborts on panic: `diffota check --json | true` died with SIGABRT. Here a
//! closed pipe ends the output quietly, as a reader that stopped reading asked for (the
//! command still finishes its work and exits with its own status); any other write error
//! (a full disk behind `> file`) is kept and reported by [`finish`].

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

enum Stdout {
    Open,
    ReaderGone,
    Failed(io::Error),
}

static STDOUT: Mutex<Stdout> = Mutex::new(Stdout::Open);

fn record(state: &mut Stdout, result: io::Result<()>) {
    if let Err(error) = result {
        *state = if error.kind() == io::ErrorKind::BrokenPipe {
            Stdout::ReaderGone
        } else {
            Stdout::Failed(error)
        };
    }
}

/// Writes to stdout unless an earlier write found it closed or failing.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    let mut state = STDOUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if matches!(*state, Stdout::Open) {
        let result = io::stdout().lock().write_fmt(args);
        record(&mut state, result);
    }
}

/// Writes to stderr, ignoring errors: there is nowhere left to report them.
pub fn write_stderr(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// Flushes stdout. A reader that went away is no error; any other failure to write the
/// command's output is.
pub fn finish() -> io::Result<()> {
    let mut state = STDOUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if matches!(*state, Stdout::Open) {
        let result = io::stdout().lock().flush();
        record(&mut state, result);
    }
    match std::mem::replace(&mut *state, Stdout::ReaderGone) {
        Stdout::Failed(error) => Err(error),
        Stdout::Open | Stdout::ReaderGone => Ok(()),
    }
}

/// `println!` that survives a closed stdout (see the module documentation).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that survives a closed stdout.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `eprintln!` that survives a closed stderr.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}
