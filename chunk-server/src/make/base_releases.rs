//! Which releases a make writes delta frames against when it is not told (`make` without
//! `--delta-from` or `--no-delta`): the ones the fleet runs when the new release ships. That
//! is the three newest older releases of the same name and compatible in the store (what most
//! devices installed last, and what a device that was off for one or two release cycles still
//! runs; `--delta-depth` sets how many), then the releases the store's channels point at (a
//! stable channel further behind a beta one), newest first, one more at most. Each base costs
//! make time and store space (its own frames, which hold everything the base lacks); devices
//! on any other release take inherited frames or plain frames. On the bench pairs a device two
//! or three releases behind with frames against its own release downloads 1.04-1.08x
//! HDiffPatch's patch for its pair, and 1.6-3.5x with only the newer releases' frames
//! (bench/README.md).

use std::cmp::Ordering;

use diffota_format::channel::Channel;
use diffota_format::compare_versions;

use super::error::MakeError;
use crate::store::{io_error, read_index, Store, StoreError};

/// How many of the newest older releases are bases by default (`--delta-depth`): a device
/// up to three releases behind (off for two release cycles) takes frames against what it
/// runs.
pub const DEFAULT_DELTA_DEPTH: usize = 3;

/// The most newest older releases `--delta-depth` may ask for: each is a search of its own
/// and frames of their own, so this bounds make's time and memory whatever the store holds.
/// As many as `<name>.before.json` lists, so that `pull` can bring a build host all of them.
pub const MAX_DELTA_DEPTH: usize = diffota_format::releases_before::MAX_LISTED;

/// A release of the store that could be a base: its version, whether its name and compatible
/// match the new release's, and whether a channel points at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseCandidate {
    pub version: String,
    pub same_name_and_compatible: bool,
    pub on_channel: bool,
}

/// The default bases of release `version` among `candidates` (see the module's comment):
/// the `depth` newest older ones, then one channel target at most.
pub fn choose_default_bases(
    version: &str,
    candidates: &[BaseCandidate],
    depth: usize,
) -> Vec<String> {
    let older = newest_older(version, candidates);
    let mut chosen: Vec<String> = older
        .iter()
        .take(depth)
        .map(|c| c.version.clone())
        .collect();
    let channel_target = older
        .iter()
        .filter(|c| c.on_channel)
        .find(|c| !chosen.contains(&c.version));
    if let Some(target) = channel_target {
        chosen.push(target.version.clone());
    }
    chosen
}

/// The candidates of the same name and compatible older than `version`, newest first.
fn newest_older<'a>(version: &str, candidates: &'a [BaseCandidate]) -> Vec<&'a BaseCandidate> {
    let mut older: Vec<&BaseCandidate> = candidates
        .iter()
        .filter(|c| c.same_name_and_compatible)
        .filter(|c| compare_versions(&c.version, version) == Ordering::Less)
        .collect();
    older.sort_by(|a, b| compare_versions(&b.version, &a.version).then(b.version.cmp(&a.version)));
    older
}

/// `choose_default_bases` for a release `name` of `compatible` about to be made in `store`:
/// reads the store's release indexes of that name (not their chunks) and its channel files.
/// A channel file that cannot be read is passed over: it only adds a base.
pub fn default_delta_bases(
    store: &Store,
    name: &str,
    compatible: &str,
    version: &str,
    depth: usize,
) -> Result<Vec<String>, MakeError> {
    let channel_indexes = channel_targets(store);
    let mut candidates = Vec::new();
    for release in store.releases()? {
        if release.name != name || release.version == version {
            continue;
        }
        let index = read_index(&release.path)?;
        let index_path = format!("releases/{}/{name}.didx", release.version);
        candidates.push(BaseCandidate {
            same_name_and_compatible: index.compatible == compatible,
            on_channel: channel_indexes.contains(&index_path),
            version: release.version,
        });
    }
    Ok(choose_default_bases(version, &candidates, depth))
}

/// The releases before `version` of `name` and `compatible` in `store` that a build host
/// needs for the next release's default bases: the newest older ones, at most
/// `releases_before::MAX_LISTED`, what `make` writes into `<name>.before.json` for
/// `chunk-server pull` to follow. Reads indexes newest first until it has them.
pub fn releases_before(
    store: &Store,
    name: &str,
    compatible: &str,
    version: &str,
) -> Result<Vec<String>, MakeError> {
    let others: Vec<BaseCandidate> = store
        .releases()?
        .into_iter()
        .filter(|r| r.name == name && r.version != version)
        .map(|r| BaseCandidate {
            version: r.version,
            same_name_and_compatible: true,
            on_channel: false,
        })
        .collect();
    let mut before = Vec::new();
    for candidate in newest_older(version, &others) {
        if before.len() == diffota_format::releases_before::MAX_LISTED {
            break;
        }
        let index = read_index(&store.index_path(&candidate.version, name))?;
        if index.compatible == compatible {
            before.push(candidate.version.clone());
        }
    }
    Ok(before)
}

/// The index paths (`releases/<version>/<name>.didx`) the store's channel files name.
fn channel_targets(store: &Store) -> Vec<String> {
    let dir = store.root().join("channels");
    let Ok(entries) = fs_err::read_dir(&dir) else {
        return Vec::new();
    };
    let mut targets = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let read = diffota_files::local_file::read_bounded(
            &path,
            diffota_format::limits::CHANNEL,
            diffota_files::local_file::Links::Refuse,
        )
        .map_err(io_error(&path))
        .and_then(|bytes| {
            Channel::parse(&bytes).map_err(|source| StoreError::Format {
                path: path.clone(),
                source,
            })
        });
        match read {
            Ok(channel) => targets.push(channel.release.index),
            Err(e) => tracing::warn!(error = %e, "channel file passed over for delta bases"),
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: &str, same: bool, on_channel: bool) -> BaseCandidate {
        BaseCandidate {
            version: version.into(),
            same_name_and_compatible: same,
            on_channel,
        }
    }

    #[test]
    fn the_newest_older_releases_come_first() {
        let candidates = [
            release("1.0", true, false),
            release("1.10", true, false),
            release("1.9", true, false),
            release("1.2", true, false),
            release("3.0", true, false),
        ];
        assert_eq!(
            choose_default_bases("2.0", &candidates, DEFAULT_DELTA_DEPTH),
            ["1.10", "1.9", "1.2"]
        );
        assert_eq!(choose_default_bases("2.0", &candidates, 2), ["1.10", "1.9"]);
        assert_eq!(choose_default_bases("2.0", &candidates, 1), ["1.10"]);
        assert_eq!(choose_default_bases("1.5", &candidates, 3), ["1.2", "1.0"]);
    }

    #[test]
    fn one_channel_target_follows_newest_first() {
        let candidates = [
            release("1.0", true, true),
            release("1.1", true, true),
            release("1.2", true, true),
            release("1.3", true, false),
            release("1.4", true, true),
            release("1.5", true, false),
        ];
        assert_eq!(
            choose_default_bases("2.0", &candidates, 3),
            ["1.5", "1.4", "1.3", "1.2"],
            "the three newest, then the newest channel target not among them"
        );
        assert_eq!(choose_default_bases("2.0", &candidates, 1), ["1.5", "1.4"]);
        assert_eq!(
            choose_default_bases("1.3.5", &candidates, 3),
            ["1.3", "1.2", "1.1", "1.0"]
        );
        assert_eq!(
            choose_default_bases("1.1.5", &candidates, 3),
            ["1.1", "1.0"],
            "no channel target beyond the older releases there are"
        );
    }

    #[test]
    fn other_boards_names_and_newer_releases_are_never_bases() {
        let candidates = [
            release("1.0", false, true),
            release("2.0", true, true),
            release("2.1", true, true),
        ];
        assert!(choose_default_bases("2.0", &candidates, 3).is_empty());
        assert!(choose_default_bases("1.0", &[], 3).is_empty());
    }

    #[test]
    fn prereleases_order_before_their_release() {
        let candidates = [release("2.0~rc1", true, false), release("1.9", true, false)];
        assert_eq!(
            choose_default_bases("2.0", &candidates, 3),
            ["2.0~rc1", "1.9"]
        );
        assert_eq!(choose_default_bases("2.0~rc1", &candidates, 3), ["1.9"]);
    }
}
