use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chunk_server::channel::{parse_stage, ChannelOptions};
use chunk_server::store::Store;
use diffota_cli::{out, outln};

use diffota_cli::unix_now as now;

use super::signing_key;
use crate::cli::ChannelCommand;

pub fn run(command: ChannelCommand) -> Result<ExitCode> {
    match command {
        ChannelCommand::Set {
            store,
            channel,
            release,
            name,
            key,
            password,
            percent,
            stages,
            mut devices,
            devices_file,
            pause,
            expires,
        } => {
            if let Some(path) = devices_file {
                devices.extend(read_lines(&path)?);
            }
            let stages = stages
                .iter()
                .map(|s| parse_stage(s))
                .collect::<Result<Vec<_>, _>>()?;
            let signing_key = signing_key(&key, &password)?;
            let options = ChannelOptions {
                channel: &channel,
                release: &release,
                name: &name,
                percent,
                stages,
                devices,
                paused: pause,
                now: now(),
                lifetime_seconds: expires.as_secs(),
                signing_key: &signing_key,
            };
            let store = Store::new(&store);
            let _lock = super::lock_store(&store, &format!("channel set {channel}"))?;
            let written = chunk_server::channel::set_channel(&store, &options)?;
            out!("{}", String::from_utf8_lossy(&written.to_json()));
        }
        ChannelCommand::Show {
            store,
            channel,
            devices,
        } => {
            let path = Store::new(&store).channel_path(&channel);
            let bytes = diffota_files::local_file::read_bounded(
                &path,
                diffota_format::limits::CHANNEL,
                diffota_files::local_file::Links::Follow,
            )
            .with_context(|| format!("reading {}", path.display()))?;
            let parsed = diffota_format::Channel::parse(&bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            out!("{}", String::from_utf8_lossy(&parsed.to_json()));
            if let Some(devices) = devices {
                let ids = read_lines(&devices)?;
                let eligible = ids
                    .iter()
                    .filter(|id| parsed.eligibility(id, now()).is_eligible())
                    .count();
                outln!(
                    "{eligible} of {} listed devices are eligible now",
                    ids.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    use diffota_files::local_file::{read_bounded_text, Links};
    let text = read_bounded_text(path, 16 * 1024 * 1024, Links::Follow)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}
