//! `chunk-server channel set`: writes and signs `channels/<name>.json`. Each new file gets a
//! counter one above the file it replaces, so devices can refuse replays of older files.

use diffota_format::channel::{Channel, ReleaseRef, Rollout, Stage, CHANNEL_FORMAT};

use crate::keys::{sign_file, KeyError};
use crate::store::{io_error, read_index, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the channel would be invalid")]
    Invalid(#[from] diffota_format::FormatError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

pub struct ChannelOptions<'a> {
    pub channel: &'a str,
    pub release: &'a str,
    /// Index file name inside the release (default `rootfs`).
    pub name: &'a str,
    pub percent: f64,
    pub stages: Vec<Stage>,
    pub devices: Vec<String>,
    pub paused: bool,
    pub now: u64,
    pub lifetime_seconds: u64,
    pub signing_key: &'a minisign::SecretKey,
}

/// Points the channel at the release's manifest when it has one (a release of several
/// images), else at its index named `options.name`.
pub fn set_channel(store: &Store, options: &ChannelOptions) -> Result<Channel, ChannelError> {
    let manifest_path = store.manifest_path(options.release);
    let (version, compatible, target) = if manifest_path.is_file() {
        let manifest = crate::store::read_manifest(&manifest_path)?;
        (
            manifest.version,
            manifest.compatible,
            diffota_format::Manifest::path(options.release),
        )
    } else {
        let index_path = store.index_path(options.release, options.name);
        if !index_path.is_file() {
            let release = format!("{} named {}", options.release, options.name);
            return Err(store.no_such_release(&release).into());
        }
        let index = read_index(&index_path)?;
        (
            index.version,
            index.compatible,
            format!("releases/{}/{}.didx", options.release, options.name),
        )
    };
    let path = store.channel_path(options.channel);
    let previous_counter = match diffota_files::local_file::read_bounded(
        &path,
        diffota_format::limits::CHANNEL,
        diffota_files::local_file::Links::Follow,
    ) {
        Ok(bytes) => {
            Channel::parse(&bytes)
                .map_err(|source| StoreError::Format {
                    path: path.clone(),
                    source,
                })?
                .counter
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_error(&path)(e).into()),
    };
    let channel = Channel {
        format: CHANNEL_FORMAT,
        channel: options.channel.to_owned(),
        counter: previous_counter.max(options.now) + 1,
        issued_at: options.now,
        expires_at: options.now + options.lifetime_seconds,
        release: ReleaseRef {
            version,
            compatible,
            index: target,
        },
        rollout: Rollout {
            percent: options.percent,
            stages: options.stages.clone(),
            devices: options.devices.clone(),
            paused: options.paused,
        },
    };
    channel.validate()?;
    let bytes = channel.to_json();
    crate::fsutil::write_atomic(&path, &bytes).map_err(io_error(&path))?;
    sign_file(
        &path,
        &bytes,
        options.signing_key,
        &format!(
            "diffota channel {} counter {}",
            options.channel, channel.counter
        ),
    )?;
    Ok(channel)
}

/// A `--stage TIME=PERCENT` that does not read.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("stage {0:?}: expected TIME=PERCENT")]
    Shape(String),
    #[error("stage {0:?}: bad time (RFC 3339, e.g. 2026-12-01T00:00:00Z)")]
    Time(String),
    #[error("stage {0:?}: bad percentage")]
    Percent(String),
}

/// Parses `TIME=PERCENT`, e.g. `2026-12-01T00:00:00Z=5`.
pub fn parse_stage(text: &str) -> Result<Stage, StageError> {
    let (time, percent) = text
        .rsplit_once('=')
        .ok_or_else(|| StageError::Shape(text.to_owned()))?;
    let at = humantime::parse_rfc3339_weak(time.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(time))
        .ok()
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .ok_or_else(|| StageError::Time(text.to_owned()))?
        .as_secs();
    let percent: f64 = percent
        .parse()
        .map_err(|_| StageError::Percent(text.to_owned()))?;
    Ok(Stage { at, percent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse() {
        let stage = parse_stage("2026-12-01T00:00:00Z=5").unwrap();
        assert_eq!(stage.percent, 5.0);
        assert_eq!(stage.at, 1_796_083_200);
        assert!(matches!(parse_stage("tomorrow"), Err(StageError::Shape(_))));
        assert!(matches!(
            parse_stage("tomorrow=5"),
            Err(StageError::Time(_))
        ));
        assert!(matches!(
            parse_stage("2026-12-01T00:00:00Z=five"),
            Err(StageError::Percent(_))
        ));
    }
}
