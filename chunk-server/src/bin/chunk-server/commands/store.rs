//! Looking at a store: verify, diff, prune, pull.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use chunk_server::store::Store;

use diffota_cli::unix_now as now;

use super::show;

pub fn verify(
    public_keys: &[PathBuf],
    no_signature_check: bool,
    store: &Path,
    version: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let keys = if no_signature_check {
        None
    } else {
        Some(chunk_server::keys::load_public_keys(public_keys)?)
    };
    let report =
        chunk_server::verify::verify_store(&Store::new(store), version, keys.as_ref(), now())?;
    show(&report, json)?;
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn diff(old: &Path, new: &Path, max_gap: u64, json: bool) -> Result<ExitCode> {
    let old_index = chunk_server::store::read_index(old)?;
    let new_index = chunk_server::store::read_index(new)?;
    let index = chunk_server::diff::index_transfer(old, new, &old_index.version)?;
    let report = chunk_server::diff::diff(&old_index, &new_index, index, max_gap);
    show(&report, json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn prune(store: &Path, keep: usize, dry_run: bool, json: bool) -> Result<ExitCode> {
    let store = Store::new(store);
    let _lock = super::lock_store(&store, "prune")?;
    let report = chunk_server::prune::prune(&store, keep, dry_run)?;
    show(&report, json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn pull(args: crate::cli::PullArgs, json: bool) -> Result<ExitCode> {
    use anyhow::Context;
    let keys = chunk_server::keys::load_public_keys(&args.public_keys)?;
    let channels = if args.channel.is_empty() && args.release.is_empty() {
        vec!["stable".to_owned()]
    } else {
        args.channel
    };
    let store = Store::new(&args.store);
    let _lock = super::lock_store(&store, "pull")?;
    let options = chunk_server::pull::PullOptions {
        url: &args.url,
        channels: &channels,
        releases: &args.release,
        older: args.older as usize,
        name: &args.name,
        keys: &keys,
        ca_file: args.ca_file.as_deref(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = runtime
        .block_on(chunk_server::pull::pull(&store, &options))
        .with_context(|| {
            format!(
                "pulling from {}",
                diffota_cli::redact::redact_url(&args.url)
            )
        })?;
    show(&summary, json)?;
    Ok(ExitCode::SUCCESS)
}
