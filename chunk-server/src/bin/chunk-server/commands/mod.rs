//! One module per subcommand; `run` dispatches. What they share: printing a report, the
//! clock, the signing key.

mod bundle;
mod channel;
mod make;
mod serve;
mod store;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use diffota_cli::outln;

use crate::cli::{Cli, Command, PasswordArgs};

pub fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    match cli.command {
        Command::Keygen {
            secret_key,
            public_key,
            unencrypted,
            password,
            force,
        } => make::keygen(&secret_key, &public_key, unencrypted, &password, force),
        Command::Make(args) => make::make(args, json),
        Command::Sign {
            key,
            password,
            files,
        } => make::sign(&key, &password, &files),
        Command::Verify {
            public_keys,
            no_signature_check,
            store,
            version,
        } => store::verify(
            &public_keys,
            no_signature_check,
            &store,
            version.as_deref(),
            json,
        ),
        Command::Diff { max_gap, old, new } => store::diff(&old, &new, max_gap, json),
        Command::Prune {
            store,
            keep,
            dry_run,
        } => store::prune(&store, keep, dry_run, json),
        Command::Pull(args) => store::pull(args, json),
        Command::Channel { command } => channel::run(command),
        Command::Bundle(args) => bundle::run(args, json),
        Command::Serve(args) => serve::run(args),
    }
}

/// Prints a report as pretty JSON or as its Display.
fn show<T: serde::Serialize + std::fmt::Display>(report: &T, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(report)?);
    } else {
        outln!("{report}");
    }
    Ok(())
}

/// Holds `store`'s lock for `operation`, saying so on stderr while it waits for another run.
fn lock_store(
    store: &chunk_server::store::Store,
    operation: &str,
) -> Result<diffota_files::lock::FileLock> {
    let path = store.lock_path();
    Ok(store.lock(&format!("chunk-server {operation}"), |holder| {
        diffota_cli::errln!(
            "chunk-server: waiting for the store lock {}: held by {holder}",
            path.display()
        );
    })?)
}

fn signing_key(path: &Path, password: &PasswordArgs) -> Result<minisign::SecretKey> {
    Ok(chunk_server::keys::load_signing_key(
        path,
        password.password_file.as_deref(),
    )?)
}
