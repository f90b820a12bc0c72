//! Finding and trusting a release: fetch the channel file (or take an index named on the
//! command line), check signatures before parsing, then freshness (channel counter, expiry),
//! `compatible`, rollout eligibility and version order.

use std::cmp::Ordering;

use diffota_format::channel::{Channel, Eligibility};
use diffota_format::index_deltas;
use diffota_format::signature::signature_of;
use diffota_format::{
    compare_versions, FormatError, InstallKind, Manifest, ManifestImage, SignedIndex, TrustedKeys,
    VerifiedIndex,
};

use std::path::PathBuf;

use crate::bundle::{BundleChunks, BundleError, BundledImage, OpenedBundle};
use crate::source::{FetchError, StoreSource, Traffic};
use crate::state::State;

use crate::limits::{CHANNEL as CHANNEL_LIMIT, INDEX as INDEX_LIMIT, SIGNATURE as SIGNATURE_LIMIT};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    OtherOrigin(#[from] crate::source::OtherOriginError),
    #[error("{what}: {source}")]
    Format { what: String, source: FormatError },
    /// A signature check's error names the file itself.
    #[error("{0}")]
    Signature(#[source] FormatError),
    #[error("channel {channel}: counter {counter} is older than {seen}, the newest this device has seen (replayed or stale channel file)")]
    Replay {
        channel: String,
        counter: u64,
        seen: u64,
    },
    #[error("channel {channel}: file expired at {expired_at} (unix time {expired_at_unix}); the server must publish a fresh one")]
    ChannelExpired {
        channel: String,
        expired_at: String,
        expired_at_unix: u64,
    },
    #[error("channel file names channel {found:?}, not {expected:?}")]
    WrongChannel { expected: String, found: String },
    #[error("release {version} expired at unix time {expired_at}")]
    IndexExpired { version: String, expired_at: u64 },
    #[error("release {version} is for {found:?}, this device is {expected:?}")]
    Incompatible {
        version: String,
        expected: String,
        found: String,
    },
    #[error("channel says release {channel_version} but its index is {index_version}")]
    VersionMismatch {
        channel_version: String,
        index_version: String,
    },
    #[error("{0:?} is not a release index (.didx), release manifest (release.json), store URL or channel")]
    UnknownTarget(String),
    #[error("release {version} does not fit this device's slot groups: {why}")]
    Images { version: String, why: String },
    #[error("release {version}: {index} is not the index its signed manifest pins (length, BLAKE3 or image differ)")]
    NotPinned { version: String, index: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Why an index delta or the compressed index was not used (the whole index is fetched
/// instead).
#[derive(Debug, thiserror::Error)]
enum IndexDeltaUnused {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Decode(#[from] index_deltas::IndexDeltaError),
    #[error("the index it rebuilds: {0}")]
    Signature(#[from] FormatError),
}

/// What to install.
#[derive(Clone, Debug)]
pub enum ReleaseTarget {
    Channel(String),
    /// An index URL or path; the store root is the part before `/releases/`.
    Index(String),
    /// A bundle file (`chunk-server bundle`).
    Bundle(PathBuf),
}

impl ReleaseTarget {
    /// What the command line names: an index URL or path (`….didx`), a bundle file (any
    /// other existing file), else the given channel, else the configured one.
    pub fn from_arguments(
        index_or_bundle: Option<&str>,
        channel: Option<&str>,
        configured_channel: &str,
    ) -> ReleaseTarget {
        match (index_or_bundle, channel) {
            (Some(file), _)
                if !file.ends_with(".didx")
                    && !diffota_format::manifest::is_manifest_path(file)
                    && std::path::Path::new(file).is_file() =>
            {
                ReleaseTarget::Bundle(file.into())
            }
            (Some(index), _) => ReleaseTarget::Index(index.to_owned()),
            (None, Some(channel)) => ReleaseTarget::Channel(channel.to_owned()),
            (None, None) => ReleaseTarget::Channel(configured_channel.to_owned()),
        }
    }

    /// Store root and index path relative to it, for an index URL or path.
    pub fn split_index_location(location: &str) -> Result<(String, String), ReleaseError> {
        if !location.ends_with(".didx") && !diffota_format::manifest::is_manifest_path(location) {
            return Err(ReleaseError::UnknownTarget(location.to_owned()));
        }
        match location.rfind("/releases/") {
            Some(at) => Ok((location[..at].to_owned(), location[at + 1..].to_owned())),
            None => match location.rfind('/') {
                Some(at) => Ok((location[..at].to_owned(), location[at + 1..].to_owned())),
                None => Ok((".".to_owned(), location.to_owned())),
            },
        }
    }
}

/// A release whose index signature, compatibility and freshness have been checked.
pub struct Release {
    pub source: StoreSource,
    /// The name of the image for `[slots]`: `rootfs`, or a manifest's only slot image.
    pub name: String,
    /// The index of its `rootfs` image (or of its only image), for `[slots]`.
    pub index: VerifiedIndex,
    /// Its other slot images, for `[images.<name>]`, each index pinned by the manifest.
    pub images: Vec<ImageRelease>,
    /// Its single-copy images, for `[single_copy.<name>]`, each index pinned likewise.
    pub single_copy: Vec<ImageRelease>,
    pub index_signature: String,
    pub channel: Option<Channel>,
    pub eligibility: Option<Eligibility>,
    /// Set when the release came from a bundle file.
    pub bundle: Option<BundleChunks>,
}

/// A slot image of a release besides `rootfs`: its verified index, pinned by the manifest.
pub struct ImageRelease {
    pub name: String,
    pub index: VerifiedIndex,
    pub index_signature: String,
    /// Set when the release came from a bundle file: its chunks and this image's frames.
    pub bundle: Option<BundleChunks>,
}

pub struct Trust<'a> {
    pub keys: &'a TrustedKeys,
    pub compatible: &'a str,
    /// The images besides `rootfs` this device installs (`[images.<name>]`): a release
    /// must carry each of them, and no other slot image.
    pub images: Vec<&'a str>,
    /// The single-copy targets this device has (`[single_copy.<name>]`): a release may
    /// carry an image for any of them, and for no other.
    pub single_copy: Vec<&'a str>,
    pub device_id: &'a str,
    pub now: u64,
}

fn format_error(what: &str) -> impl FnOnce(FormatError) -> ReleaseError + '_ {
    move |source| ReleaseError::Format {
        what: what.to_owned(),
        source,
    }
}

/// Fetches and verifies the release `target` names. `base` is the index the running slot
/// was installed from, when the device stores one: the store may then send the new index as
/// changes against it.
pub async fn fetch_release(
    store: &StoreSource,
    target: &ReleaseTarget,
    trust: &Trust<'_>,
    state: &State,
    base: Option<&VerifiedIndex>,
    traffic: &Traffic,
) -> Result<Release, ReleaseError> {
    let (source, index_path, channel) = match target {
        ReleaseTarget::Bundle(path) => {
            return match crate::bundle::open(path, trust.keys)? {
                OpenedBundle::Index(image) => {
                    let BundledImage {
                        index,
                        signature,
                        chunks,
                        ..
                    } = *image;
                    check_index(&index, trust, None)?;
                    one_image_for(&index.version, trust)?;
                    Ok(Release {
                        source: store.clone(),
                        name: crate::config::ROOTFS.to_owned(),
                        index,
                        index_signature: signature,
                        channel: None,
                        eligibility: None,
                        bundle: Some(chunks),
                        images: Vec::new(),
                        single_copy: Vec::new(),
                    })
                }
                OpenedBundle::Release { manifest, images } => {
                    release_from_bundle(store, manifest, images, trust)
                }
            };
        }
        ReleaseTarget::Channel(name) => {
            let path = format!("channels/{name}.json");
            let signature = store
                .get(&signature_of(&path), SIGNATURE_LIMIT, traffic)
                .await?;
            let bytes = store.get(&path, CHANNEL_LIMIT, traffic).await?;
            let what = store.describe(&path);
            trust
                .keys
                .verify(&what, &bytes, &String::from_utf8_lossy(&signature))
                .map_err(ReleaseError::Signature)?;
            let channel = Channel::parse(&bytes).map_err(format_error(&what))?;
            check_channel(&channel, name, trust, state)?;
            (store.clone(), channel.release.index.clone(), Some(channel))
        }
        ReleaseTarget::Index(location) => {
            let (root, relative) = ReleaseTarget::split_index_location(location)?;
            let source = if root.starts_with("http://") || root.starts_with("https://") {
                store.at_http_root(&root)?
            } else {
                StoreSource::Local {
                    root: root.strip_prefix("file://").unwrap_or(&root).into(),
                }
            };
            (source, relative, None)
        }
    };
    let manifest = if diffota_format::manifest::is_manifest_path(&index_path) {
        Some(fetch_manifest(&source, &index_path, trust, channel.as_ref(), traffic).await?)
    } else {
        None
    };
    let (name, index, signature, images, single_copy) = match &manifest {
        Some(manifest) => {
            let matched = match_images(manifest, &trust.images, &trust.single_copy)?;
            let primary =
                fetch_pinned(&source, manifest, matched.primary, base, trust, traffic).await?;
            check_index(&primary.index, trust, channel.as_ref())?;
            let (mut images, mut single_copy) = (Vec::new(), Vec::new());
            for image in matched.others {
                images.push(fetch_pinned(&source, manifest, image, None, trust, traffic).await?);
            }
            for image in matched.single_copy {
                let pinned = fetch_pinned(&source, manifest, image, None, trust, traffic).await?;
                single_copy.push(pinned);
            }
            (
                primary.name,
                primary.index,
                primary.index_signature,
                images,
                single_copy,
            )
        }
        None => {
            let signature = source
                .get(&signature_of(&index_path), SIGNATURE_LIMIT, traffic)
                .await?;
            let signature = String::from_utf8_lossy(&signature).into_owned();
            let index =
                fetch_index(&source, &index_path, &signature, base, trust.keys, traffic).await?;
            check_index(&index, trust, channel.as_ref())?;
            one_image_for(&index.version, trust)?;
            (
                crate::config::ROOTFS.to_owned(),
                index,
                signature,
                Vec::new(),
                Vec::new(),
            )
        }
    };
    let eligibility = channel
        .as_ref()
        .map(|c| c.eligibility(trust.device_id, trust.now));
    Ok(Release {
        name,
        images,
        single_copy,
        source,
        index,
        index_signature: signature,
        channel,
        eligibility,
        bundle: None,
    })
}

/// The signed manifest at `path`, verified, for this device (compatible) and the channel's
/// version.
async fn fetch_manifest(
    source: &StoreSource,
    path: &str,
    trust: &Trust<'_>,
    channel: Option<&Channel>,
    traffic: &Traffic,
) -> Result<Manifest, ReleaseError> {
    let signature = source
        .get(&signature_of(path), SIGNATURE_LIMIT, traffic)
        .await?;
    let bytes = source
        .get(
            path,
            diffota_format::manifest::MAX_MANIFEST_BYTES as u64,
            traffic,
        )
        .await?;
    let what = source.describe(path);
    trust
        .keys
        .verify(&what, &bytes, &String::from_utf8_lossy(&signature))
        .map_err(ReleaseError::Signature)?;
    let manifest = Manifest::parse(&bytes).map_err(format_error(&what))?;
    check_manifest(manifest, trust, channel)
}

/// A verified manifest is for this device (compatible) and names the channel's version.
fn check_manifest(
    manifest: Manifest,
    trust: &Trust<'_>,
    channel: Option<&Channel>,
) -> Result<Manifest, ReleaseError> {
    if manifest.compatible != trust.compatible {
        return Err(ReleaseError::Incompatible {
            version: manifest.version,
            expected: trust.compatible.to_owned(),
            found: manifest.compatible,
        });
    }
    if let Some(channel) = channel.filter(|c| c.release.version != manifest.version) {
        return Err(ReleaseError::VersionMismatch {
            channel_version: channel.release.version.clone(),
            index_version: manifest.version,
        });
    }
    Ok(manifest)
}

/// The release a bundle of several images holds, for this device's slot groups: its
/// manifest and indexes were verified and pinned when the bundle was opened.
fn release_from_bundle(
    store: &StoreSource,
    manifest: Manifest,
    images: Vec<BundledImage>,
    trust: &Trust<'_>,
) -> Result<Release, ReleaseError> {
    let manifest = check_manifest(manifest, trust, None)?;
    let matched = match_images(&manifest, &trust.images, &trust.single_copy)?;
    let mut by_name: std::collections::HashMap<String, BundledImage> =
        images.into_iter().map(|i| (i.name.clone(), i)).collect();
    let mut take = |image: &ManifestImage| {
        let bundled = by_name
            .remove(&image.name)
            .expect("the bundle opened with every image of its manifest");
        ImageRelease {
            name: bundled.name,
            index: bundled.index,
            index_signature: bundled.signature,
            bundle: Some(bundled.chunks),
        }
    };
    let primary = take(matched.primary);
    check_index(&primary.index, trust, None)?;
    let images = matched.others.into_iter().map(&mut take).collect();
    let single_copy = matched.single_copy.into_iter().map(&mut take).collect();
    Ok(Release {
        source: store.clone(),
        name: primary.name,
        index: primary.index,
        index_signature: primary.index_signature,
        images,
        single_copy,
        channel: None,
        eligibility: None,
        bundle: primary.bundle,
    })
}

/// Where a manifest's images go on this device.
pub struct MatchedImages<'m> {
    /// Into `[slots]`.
    pub primary: &'m ManifestImage,
    /// Into `[images.<name>]`.
    pub others: Vec<&'m ManifestImage>,
    /// To `[single_copy.<name>]`.
    pub single_copy: Vec<&'m ManifestImage>,
}

/// Which image of a manifest goes into `[slots]` (`rootfs`, or the release's only slot
/// image), which into `[images.<name>]` and which to `[single_copy.<name>]`: every slot
/// image must have its A/B pair on this device, and every pair of the device its image in the
/// release, or the slot groups would switch to images of different releases; a single-copy
/// image needs its target (a release may leave a target alone).
pub fn match_images<'m>(
    manifest: &'m Manifest,
    device_images: &[&str],
    device_single_copy: &[&str],
) -> Result<MatchedImages<'m>, ReleaseError> {
    let refused = |why: String| ReleaseError::Images {
        version: manifest.version.clone(),
        why,
    };
    let (slot_images, single_copy): (Vec<&ManifestImage>, Vec<&ManifestImage>) = manifest
        .images
        .iter()
        .partition(|i| i.install == InstallKind::Slot);
    if let Some(image) = single_copy
        .iter()
        .find(|i| !device_single_copy.contains(&i.name.as_str()))
    {
        return Err(refused(format!(
            "it has single-copy image {}, which this device's config has no target for (add [single_copy.{}] with a device or a handler)",
            image.name, image.name
        )));
    }
    let primary = match slot_images.as_slice() {
        [only] => *only,
        _ => *slot_images
            .iter()
            .find(|i| i.name == crate::config::ROOTFS)
            .ok_or_else(|| {
                refused(
                    "it has several images and none is named rootfs (the image for [slots])".into(),
                )
            })?,
    };
    let others: Vec<&ManifestImage> = slot_images
        .into_iter()
        .filter(|i| i.name != primary.name)
        .collect();
    if let Some(unknown) = others
        .iter()
        .find(|i| !device_images.contains(&i.name.as_str()))
    {
        return Err(refused(format!(
            "it has image {}, which this device's config does not name (add [images.{}] with its a and b slots)",
            unknown.name, unknown.name
        )));
    }
    if let Some(lacking) = device_images
        .iter()
        .find(|name| !others.iter().any(|i| i.name == **name))
    {
        return Err(refused(format!(
            "it lacks image {lacking}, which this device's config names ([images.{lacking}]): a release carries every image of the slot group"
        )));
    }
    Ok(MatchedImages {
        primary,
        others,
        single_copy,
    })
}

/// A release of one image (an index or a bundle) suits a device without `[images.<name>]`.
fn one_image_for(version: &str, trust: &Trust<'_>) -> Result<(), ReleaseError> {
    match trust.images.as_slice() {
        [] => Ok(()),
        names => Err(ReleaseError::Images {
            version: version.to_owned(),
            why: format!(
                "it is one image, and this device's config names images {} too ([images.<name>]): publish a release of every image (chunk-server make --image NAME=PATH ...)",
                names.join(", ")
            ),
        }),
    }
}

/// The index of `image`, pinned by `manifest`: signature, pin, version and compatible.
/// `base`: the index the image's running slot was written from, for an index delta.
async fn fetch_pinned(
    source: &StoreSource,
    manifest: &Manifest,
    image: &ManifestImage,
    base: Option<&VerifiedIndex>,
    trust: &Trust<'_>,
    traffic: &Traffic,
) -> Result<ImageRelease, ReleaseError> {
    let path = manifest.index_path(image);
    let signature = source
        .get(&signature_of(&path), SIGNATURE_LIMIT, traffic)
        .await?;
    let signature = String::from_utf8_lossy(&signature).into_owned();
    let index = fetch_index(source, &path, &signature, base, trust.keys, traffic).await?;
    if !manifest.pins(image, &index.to_bytes(), &index) {
        return Err(ReleaseError::NotPinned {
            version: manifest.version.clone(),
            index: source.describe(&path),
        });
    }
    Ok(ImageRelease {
        name: image.name.clone(),
        index,
        index_signature: signature,
        bundle: None,
    })
}

/// The index at `index_path`, verified against `signature`: rebuilt from its index delta
/// against `base` when the store has one that rebuilds exactly the signed bytes, else from
/// the compressed index (`<index>.zst`), else fetched whole. A missing, stale or damaged
/// delta or compressed index only costs its request.
async fn fetch_index(
    source: &StoreSource,
    index_path: &str,
    signature: &str,
    base: Option<&VerifiedIndex>,
    keys: &TrustedKeys,
    traffic: &Traffic,
) -> Result<VerifiedIndex, ReleaseError> {
    if let Some(base) = base {
        let delta_path = index_deltas::delta_path(index_path, &base.version);
        let base_bytes = base.to_bytes();
        let rebuilt = rebuild_index(source, &delta_path, &base_bytes, signature, keys, traffic);
        let url = source.describe(&delta_path);
        match rebuilt.await {
            Ok(index) => {
                tracing::info!(event = "index_delta_used", from = %base.version, %url);
                return Ok(index);
            }
            Err(problem) => {
                let problem = diffota_cli::error_chain(&problem);
                tracing::info!(event = "index_delta_unused", from = %base.version, %url, %problem);
            }
        }
    }
    let compressed_path = index_deltas::compressed_index_path(index_path);
    let rebuilt = rebuild_index(source, &compressed_path, &[], signature, keys, traffic);
    let url = source.describe(&compressed_path);
    match rebuilt.await {
        Ok(index) => {
            tracing::info!(event = "compressed_index_used", %url);
            return Ok(index);
        }
        Err(problem) => {
            let problem = diffota_cli::error_chain(&problem);
            tracing::info!(event = "compressed_index_unused", %url, %problem);
        }
    }
    let what = source.describe(index_path);
    let bytes = source.get(index_path, INDEX_LIMIT, traffic).await?;
    SignedIndex {
        bytes: &bytes,
        signature,
    }
    .verify(keys)
    .map_err(format_error(&what))
}

/// The index the file at `path` (an index delta against `base`, or with an empty `base` the
/// compressed index) rebuilds, verified against `signature`. The header says how large an
/// index it rebuilds, and that much is set aside before decoding, so the length is bounded
/// first: for a delta by the base (an index that grows more than 4 times from one release
/// to the next comes otherwise), for the compressed index by the file's own length
/// (`index_deltas::compressed_index_limit`): a hostile header cannot claim the device's
/// memory.
async fn rebuild_index(
    source: &StoreSource,
    path: &str,
    base: &[u8],
    signature: &str,
    keys: &TrustedKeys,
    traffic: &Traffic,
) -> Result<VerifiedIndex, IndexDeltaUnused> {
    let delta_limit = (base.len() as u64)
        .saturating_mul(4)
        .clamp(index_deltas::MIN_DECODE_LIMIT, INDEX_LIMIT);
    let download_limit = if base.is_empty() {
        INDEX_LIMIT
    } else {
        delta_limit
    };
    let file = source.get(path, download_limit, traffic).await?;
    let limit = if base.is_empty() {
        index_deltas::compressed_index_limit(file.len() as u64, INDEX_LIMIT)
    } else {
        delta_limit
    };
    let bytes = index_deltas::decode(&file, base, limit)?;
    Ok(SignedIndex {
        bytes: &bytes,
        signature,
    }
    .verify(keys)?)
}

/// Compatibility, expiry, and agreement with the channel that named the index.
fn check_index(
    index: &VerifiedIndex,
    trust: &Trust<'_>,
    channel: Option<&Channel>,
) -> Result<(), ReleaseError> {
    if index.compatible != trust.compatible {
        return Err(ReleaseError::Incompatible {
            version: index.version.clone(),
            expected: trust.compatible.to_owned(),
            found: index.compatible.clone(),
        });
    }
    if let Some(expired_at) = index.expires.filter(|&e| e <= trust.now) {
        return Err(ReleaseError::IndexExpired {
            version: index.version.clone(),
            expired_at,
        });
    }
    if let Some(channel) = channel {
        if channel.release.version != index.version {
            return Err(ReleaseError::VersionMismatch {
                channel_version: channel.release.version.clone(),
                index_version: index.version.clone(),
            });
        }
    }
    Ok(())
}

fn check_channel(
    channel: &Channel,
    name: &str,
    trust: &Trust<'_>,
    state: &State,
) -> Result<(), ReleaseError> {
    if channel.channel != name {
        return Err(ReleaseError::WrongChannel {
            expected: name.to_owned(),
            found: channel.channel.clone(),
        });
    }
    let seen = state.channel_counter(name);
    if channel.counter < seen {
        return Err(ReleaseError::Replay {
            channel: name.to_owned(),
            counter: channel.counter,
            seen,
        });
    }
    if channel.expires_at <= trust.now {
        return Err(ReleaseError::ChannelExpired {
            channel: name.to_owned(),
            expired_at: humanize_time(channel.expires_at),
            expired_at_unix: channel.expires_at,
        });
    }
    if channel.release.compatible != trust.compatible {
        return Err(ReleaseError::Incompatible {
            version: channel.release.version.clone(),
            expected: trust.compatible.to_owned(),
            found: channel.release.compatible.clone(),
        });
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC` for unix seconds (civil-from-days, proleptic Gregorian).
pub fn humanize_time(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let seconds = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Whether to install `offered` on a device running `running`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Install,
    UpToDate,
    Downgrade,
}

pub fn decide(
    running: Option<&str>,
    offered: &str,
    allow_downgrade: bool,
    force: bool,
) -> Decision {
    let Some(running) = running else {
        return Decision::Install;
    };
    match compare_versions(offered, running) {
        Ordering::Greater => Decision::Install,
        Ordering::Equal if force => Decision::Install,
        Ordering::Equal => Decision::UpToDate,
        Ordering::Less if allow_downgrade => Decision::Install,
        Ordering::Less => Decision::Downgrade,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(images: &[(&str, InstallKind)]) -> Manifest {
        Manifest {
            format: diffota_format::manifest::MANIFEST_FORMAT,
            version: "3.0".into(),
            compatible: "board".into(),
            created_at: 0,
            images: images
                .iter()
                .map(|(name, install)| ManifestImage {
                    name: (*name).into(),
                    install: *install,
                    index_length: 1,
                    index_blake3: "00".repeat(32),
                    image_length: 1,
                    image_blake3: "00".repeat(32),
                })
                .collect(),
        }
    }

    #[test]
    fn a_manifest_matches_the_devices_slot_groups_or_is_refused_by_image() {
        let names = |matched: MatchedImages| {
            (
                matched.primary.name.clone(),
                matched
                    .others
                    .iter()
                    .chain(&matched.single_copy)
                    .map(|i| i.name.clone())
                    .collect::<Vec<_>>(),
            )
        };
        let slot = InstallKind::Slot;
        let group = manifest(&[("appfs", slot), ("rootfs", slot)]);
        assert_eq!(
            names(match_images(&group, &["appfs"], &[]).unwrap()),
            ("rootfs".into(), vec!["appfs".into()])
        );
        // A release's only image goes into [slots], whatever its name.
        let single = manifest(&[("system", slot)]);
        assert_eq!(
            names(match_images(&single, &[], &["mcu"]).unwrap()),
            ("system".into(), vec![])
        );
        let refused = |m: &Manifest, device: &[&str]| match match_images(m, device, &[]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(refused(&group, &[])
            .contains("it has image appfs, which this device's config does not name"));
        assert!(refused(&single, &["appfs"]).contains("it lacks image appfs"));
        assert!(refused(&manifest(&[("a", slot), ("b", slot)]), &["b"])
            .contains("none is named rootfs"));
        assert!(refused(
            &manifest(&[("rootfs", slot), ("mcu", InstallKind::SingleCopy)]),
            &[]
        )
        .contains("single-copy image mcu, which this device's config has no target for"));
        let firmware = manifest(&[("rootfs", slot), ("mcu", InstallKind::SingleCopy)]);
        assert_eq!(
            names(match_images(&firmware, &[], &["mcu", "fpga"]).unwrap()),
            ("rootfs".into(), vec!["mcu".into()])
        );
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "1.0", false, false), Decision::Install);
        assert_eq!(decide(Some("1.0"), "1.1", false, false), Decision::Install);
        assert_eq!(decide(Some("1.1"), "1.1", false, false), Decision::UpToDate);
        assert_eq!(decide(Some("1.1"), "1.1", false, true), Decision::Install);
        assert_eq!(
            decide(Some("1.1"), "1.0", false, false),
            Decision::Downgrade
        );
        assert_eq!(decide(Some("1.1"), "1.0", true, false), Decision::Install);
    }

    #[test]
    fn index_locations() {
        assert_eq!(
            ReleaseTarget::split_index_location("https://x/store/releases/2.0/rootfs.didx")
                .unwrap(),
            (
                "https://x/store".to_owned(),
                "releases/2.0/rootfs.didx".to_owned()
            )
        );
        assert_eq!(
            ReleaseTarget::split_index_location("/mnt/usb/a.didx").unwrap(),
            ("/mnt/usb".to_owned(), "a.didx".to_owned())
        );
        assert!(ReleaseTarget::split_index_location("/mnt/usb/a.bin").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(humanize_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(humanize_time(1_796_083_200), "2026-12-01 00:00:00 UTC");
    }
}
