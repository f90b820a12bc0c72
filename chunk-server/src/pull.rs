//! `chunk-server pull`: brings releases of the published store (over HTTP(S)) into a local
//! store, so that `make` on a build host that keeps no store (a fresh CI runner) finds the
//! releases the fleet runs and writes delta frames against them, and reuses their chunks.
//! A static store cannot be listed: besides each channel's release and each release named,
//! `pull` takes the newest releases listed before them (`<name>.before.json`, which `make`
//! writes; `older` of them, two by default, so that the local store holds the three newest
//! releases `make` takes as default bases). The list is a hint: what it names is fetched
//! and verified like the rest, and a release it names that is no longer published is
//! passed over.
//!
//! It takes what a device would trust and nothing else: each channel file and release
//! index is checked against the trusted keys before it is kept, and each pack the release
//! index names is fetched whole and kept only when its length and BLAKE3 are the ones the
//! index gives. Files land in the publishing order (packs, index, signature, channel), each
//! under a temporary name first, so the local store is never left naming what it lacks. A
//! file the local store already has is kept: a pack of the right length, an index with the
//! same bytes; an index whose bytes differ from the published one is an error (a release
//! version is immutable).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffota_format::channel::Channel;
use diffota_format::signature::{signature_of, SignedIndex};
use diffota_format::{limits, Index, Manifest, ManifestImage, PackRef, TrustedKeys};
use futures_util::StreamExt;

use crate::fsutil::{temp_file_beside, write_atomic};
use crate::store::{io_error, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url}: longer than {limit} bytes")]
    TooLong { url: String, limit: u64 },
    #[error("{url}: {source}")]
    Untrusted {
        url: String,
        #[source]
        source: diffota_format::FormatError,
    },
    #[error("{url}: no such release in the published store (HTTP 404)")]
    NoRelease { url: String },
    #[error("{url}: {source}")]
    ReleasesBefore {
        url: String,
        #[source]
        source: diffota_format::releases_before::ReleasesBeforeError,
    },
    #[error("{url}: not the file the release's signed manifest pins")]
    NotPinned { url: String },
    #[error("{0:?} is not a channel name (letters, digits and ._+~- only)")]
    ChannelName(String),
    #[error("{url}: the file is channel {names:?}'s, not this one's")]
    OtherChannel { url: String, names: String },
    #[error("{url}: the pack is not the one the index names ({problem})")]
    WrongPack { url: String, problem: String },
    #[error(
        "release {version} ({name}) in the local store differs from the published one: a \
         version is immutable; move the local one away"
    )]
    Differs { version: String, name: String },
    #[error("{path}: {source}")]
    Certificates {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct PullOptions<'a> {
    /// The published store's root, `https://…` or `http://…`.
    pub url: &'a str,
    /// Channel files to take, with the releases they point at.
    pub channels: &'a [String],
    /// Further releases to take, by version.
    pub releases: &'a [String],
    /// How many of the releases listed before each of those (`<name>.before.json`, newest
    /// first) to take too.
    pub older: usize,
    /// The index name inside each release (`rootfs`).
    pub name: &'a str,
    pub keys: &'a TrustedKeys,
    /// PEM CAs to trust instead of the system's.
    pub ca_file: Option<&'a Path>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct PullSummary {
    pub channels: Vec<String>,
    pub releases: Vec<String>,
    /// Releases listed before a pulled one that the published store no longer holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passed_over: Vec<String>,
    pub packs_fetched: u64,
    pub packs_present: u64,
    pub bytes_fetched: u64,
}

impl std::fmt::Display for PullSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "pulled channels [{}] and releases [{}]: {} packs fetched ({} bytes), {} already here",
            self.channels.join(", "),
            self.releases.join(", "),
            self.packs_fetched,
            self.bytes_fetched,
            self.packs_present
        )?;
        if !self.passed_over.is_empty() {
            writeln!(
                f,
                "listed before them but no longer published, passed over: [{}]",
                self.passed_over.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Pulls `options`' channels and releases from the published store into `store`.
pub async fn pull(store: &Store, options: &PullOptions<'_>) -> Result<PullSummary, PullError> {
    let remote = Remote::new(options.url, options.ca_file)?;
    let mut summary = PullSummary::default();
    let mut wanted: Vec<String> = Vec::new();
    let mut channel_files = Vec::new();
    for channel_name in options.channels {
        if !is_channel_name(channel_name) {
            return Err(PullError::ChannelName(channel_name.clone()));
        }
        let relative = format!("channels/{channel_name}.json");
        let (bytes, signature) = remote.signed(&relative, limits::CHANNEL).await?;
        let untrusted = |source| PullError::Untrusted {
            url: remote.shown(&relative),
            source,
        };
        options
            .keys
            .verify(&relative, &bytes, &signature)
            .map_err(untrusted)?;
        let channel = Channel::parse(&bytes).map_err(untrusted)?;
        if channel.channel != *channel_name {
            return Err(PullError::OtherChannel {
                url: remote.shown(&relative),
                names: channel.channel.chars().take(80).collect(),
            });
        }
        let named = channel.release.index.strip_prefix("releases/");
        let version = named
            .and_then(|rest| rest.strip_suffix(&format!("/{}.didx", options.name)))
            .or_else(|| {
                named.and_then(|rest| {
                    rest.strip_suffix(&format!("/{}", diffota_format::manifest::MANIFEST_FILE))
                })
            });
        if let Some(version) = version {
            if !wanted.iter().any(|v| v == version) {
                wanted.push(version.to_owned());
            }
        }
        channel_files.push((store.channel_path(channel_name), bytes, signature));
        summary.channels.push(channel_name.clone());
    }
    for version in options.releases {
        if !wanted.contains(version) {
            wanted.push(version.clone());
        }
    }
    let mut older: Vec<String> = Vec::new();
    for version in &wanted {
        let names = pull_release(store, &remote, options, version, &mut summary).await?;
        summary.releases.push(version.clone());
        if options.older == 0 {
            continue;
        }
        for name in names {
            let listed = remote.releases_before(version, &name).await?;
            for before in listed.into_iter().take(options.older) {
                if !wanted.contains(&before) && !older.contains(&before) {
                    older.push(before);
                }
            }
        }
    }
    for version in older {
        match pull_release(store, &remote, options, &version, &mut summary).await {
            Ok(_) => summary.releases.push(version),
            Err(PullError::NoRelease { url }) => {
                tracing::warn!(%url, "a release listed before a pulled one is no longer published");
                summary.passed_over.push(version);
            }
            Err(e) => return Err(e),
        }
    }
    for (path, bytes, signature) in channel_files {
        write_atomic(&path, &bytes).map_err(io_error(&path))?;
        let signature_path = diffota_format::signature::signature_path(&path);
        write_atomic(&signature_path, signature.as_bytes()).map_err(io_error(&signature_path))?;
    }
    Ok(summary)
}

/// A release: its manifest when it has one (a release of several images) and every index
/// it pins, else its index named `options.name`; the packs they name; the manifest last.
/// Returns the names of the indexes pulled.
async fn pull_release(
    store: &Store,
    remote: &Remote,
    options: &PullOptions<'_>,
    version: &str,
    summary: &mut PullSummary,
) -> Result<Vec<String>, PullError> {
    diffota_format::index::validate_version(version).map_err(|source| PullError::Untrusted {
        url: remote.shown(&format!("releases/{version}")),
        source,
    })?;
    let manifest_relative = Manifest::path(version);
    let limit = diffota_format::manifest::MAX_MANIFEST_BYTES as u64;
    let manifest = match remote.signed(&manifest_relative, limit).await {
        Ok((bytes, signature)) => {
            let untrusted = |source| PullError::Untrusted {
                url: remote.shown(&manifest_relative),
                source,
            };
            options
                .keys
                .verify(&manifest_relative, &bytes, &signature)
                .map_err(untrusted)?;
            let manifest = Manifest::parse(&bytes).map_err(untrusted)?;
            if manifest.version != version {
                return Err(PullError::NotPinned {
                    url: remote.shown(&manifest_relative),
                });
            }
            Some((manifest, bytes, signature))
        }
        Err(PullError::Status { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => None,
        Err(e) => return Err(e),
    };
    let names = match &manifest {
        Some((manifest, ..)) => {
            for image in &manifest.images {
                pull_index(
                    store,
                    remote,
                    options,
                    version,
                    &image.name,
                    Some((manifest, image)),
                    summary,
                )
                .await?;
            }
            manifest.images.iter().map(|i| i.name.clone()).collect()
        }
        None => {
            pull_index(store, remote, options, version, options.name, None, summary).await?;
            vec![options.name.to_owned()]
        }
    };
    if let Some((_, bytes, signature)) = manifest {
        write_signed(&store.manifest_path(version), &bytes, &signature)?;
    }
    Ok(names)
}

/// One index of a release, checked against its signature (and against the manifest's pin
/// when it has one), and the packs it names.
async fn pull_index(
    store: &Store,
    remote: &Remote,
    options: &PullOptions<'_>,
    version: &str,
    name: &str,
    pinned: Option<(&Manifest, &ManifestImage)>,
    summary: &mut PullSummary,
) -> Result<(), PullError> {
    let relative = format!("releases/{version}/{name}.didx");
    let bytes = match remote.bounded(&relative, limits::INDEX).await {
        Err(PullError::Status { url, status }) if status == reqwest::StatusCode::NOT_FOUND => {
            return Err(PullError::NoRelease { url })
        }
        fetched => fetched?,
    };
    let signature = remote.signature(&relative).await?;
    let signed = SignedIndex {
        bytes: &bytes,
        signature: &signature,
    };
    let index: Index = signed
        .verify(options.keys)
        .map_err(|source| PullError::Untrusted {
            url: remote.shown(&relative),
            source,
        })?
        .index()
        .clone();
    if pinned.is_some_and(|(manifest, image)| !manifest.pins(image, &bytes, &index)) {
        return Err(PullError::NotPinned {
            url: remote.shown(&relative),
        });
    }
    let local_path = store.index_path(version, name);
    match std::fs::read(&local_path) {
        Ok(local) if local == bytes => {}
        Ok(_) => {
            return Err(PullError::Differs {
                version: version.to_owned(),
                name: name.to_owned(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&local_path)(e).into()),
    }
    for pack in &index.packs {
        let path = store.pack_path(pack);
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == pack.length) {
            summary.packs_present += 1;
            continue;
        }
        remote.pack(pack, &path).await?;
        summary.packs_fetched += 1;
        summary.bytes_fetched += pack.length;
    }
    write_signed(&local_path, &bytes, &signature)
}

/// A store file and its `.minisig`, each replaced atomically.
fn write_signed(path: &Path, bytes: &[u8], signature: &str) -> Result<(), PullError> {
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir).map_err(io_error(dir))?;
    }
    write_atomic(path, bytes).map_err(io_error(path))?;
    let signature_path = diffota_format::signature::signature_path(path);
    write_atomic(&signature_path, signature.as_bytes()).map_err(io_error(&signature_path))?;
    Ok(())
}

/// The published store: its root URL and a client for it.
struct Remote {
    root: String,
    client: reqwest::Client,
}

impl Remote {
    fn new(url: &str, ca_file: Option<&Path>) -> Result<Remote, PullError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = diffota_files::local_file::read_bounded(
                    path,
                    1024 * 1024,
                    diffota_files::local_file::Links::Follow,
                )
                .map_err(|source| PullError::Certificates {
                    path: path.to_owned(),
                    source,
                })?;
                use rustls::pki_types::pem::PemObject;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| PullError::Certificates {
                        path: path.to_owned(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    })?;
                    roots.add(cert)?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(std::time::Duration::from_secs(15))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(PullError::Client)?;
        Ok(Remote {
            root: url.trim_end_matches('/').to_owned(),
            client,
        })
    }

    fn url(&self, relative: &str) -> String {
        format!("{}/{relative}", self.root)
    }

    /// The URL as it may be shown (no password or query values).
    fn shown(&self, relative: &str) -> String {
        diffota_cli::redact::redact_url(&self.url(relative))
    }

    async fn get(&self, relative: &str) -> Result<reqwest::Response, PullError> {
        let http = |source: reqwest::Error| PullError::Http {
            url: self.shown(relative),
            source: source.without_url(),
        };
        let response = self
            .client
            .get(self.url(relative))
            .send()
            .await
            .map_err(http)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(PullError::Status {
                url: self.shown(relative),
                status: response.status(),
            });
        }
        Ok(response)
    }

    /// A file of at most `limit` bytes.
    async fn bounded(&self, relative: &str, limit: u64) -> Result<Vec<u8>, PullError> {
        let mut body = self.get(relative).await?.bytes_stream();
        let mut bytes = Vec::new();
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|source| PullError::Http {
                url: self.shown(relative),
                source: source.without_url(),
            })?;
            if bytes.len() as u64 + piece.len() as u64 > limit {
                return Err(PullError::TooLong {
                    url: self.shown(relative),
                    limit,
                });
            }
            bytes.extend_from_slice(&piece);
        }
        Ok(bytes)
    }

    /// A file and its `.minisig`, as fetched (not yet trusted).
    async fn signed(&self, relative: &str, limit: u64) -> Result<(Vec<u8>, String), PullError> {
        let bytes = self.bounded(relative, limit).await?;
        Ok((bytes, self.signature(relative).await?))
    }

    /// The `.minisig` of a file, as fetched (not yet trusted).
    async fn signature(&self, relative: &str) -> Result<String, PullError> {
        let signature = self
            .bounded(&signature_of(relative), limits::SIGNATURE)
            .await?;
        Ok(String::from_utf8_lossy(&signature).into_owned())
    }

    /// The releases listed before release `version`, image `name`, newest first: none when
    /// the store has no list there (a release made before `make` wrote them).
    async fn releases_before(&self, version: &str, name: &str) -> Result<Vec<String>, PullError> {
        use diffota_format::releases_before::{store_path, ReleasesBefore, MAX_BYTES};
        let relative = store_path(version, name);
        let bytes = match self.bounded(&relative, MAX_BYTES).await {
            Err(PullError::Status { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
                return Ok(Vec::new())
            }
            fetched => fetched?,
        };
        let list = ReleasesBefore::parse(&bytes).map_err(|source| PullError::ReleasesBefore {
            url: self.shown(&relative),
            source,
        })?;
        Ok(list.before)
    }

    /// Fetches `pack` into `path` (through a temporary file), checking its length and hash.
    async fn pack(&self, pack: &PackRef, path: &Path) -> Result<(), PullError> {
        use std::io::Write;
        let relative = pack.store_path();
        let dir = path.parent().unwrap_or(Path::new("."));
        fs_err::create_dir_all(dir).map_err(io_error(dir))?;
        let mut temp = temp_file_beside(path).map_err(io_error(path))?;
        let mut body = self.get(&relative).await?.bytes_stream();
        let mut hasher = blake3::Hasher::new();
        let mut length = 0u64;
        let wrong = |problem: String| PullError::WrongPack {
            url: self.shown(&relative),
            problem,
        };
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|source| PullError::Http {
                url: self.shown(&relative),
                source: source.without_url(),
            })?;
            length += piece.len() as u64;
            if length > pack.length {
                return Err(wrong(format!("longer than {} bytes", pack.length)));
            }
            hasher.update(&piece);
            temp.file().write_all(&piece).map_err(io_error(path))?;
        }
        if length != pack.length {
            return Err(wrong(format!("{length} bytes, not {}", pack.length)));
        }
        if *hasher.finalize().as_bytes() != pack.id {
            return Err(wrong("BLAKE3 differs".to_owned()));
        }
        temp.commit(path).map_err(io_error(path))?;
        Ok(())
    }
}

/// A channel name that is one file name in `channels/`: not empty, not `.` or `..`, letters,
/// digits and `._+~-` only.
fn is_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::is_channel_name;

    #[test]
    fn a_channel_name_is_one_file_name() {
        for good in ["stable", "beta-2", "rc_1.0", "a~b+c"] {
            assert!(is_channel_name(good), "{good}");
        }
        for bad in ["", ".", "..", "../stable", "a/b", "stable\n", "sta ble"] {
            assert!(!is_channel_name(bad), "{bad:?}");
        }
    }
}
