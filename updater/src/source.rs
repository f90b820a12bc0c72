//! Where a store's files come from: HTTP(S) (reqwest over rustls with the ring provider) or
//! a local directory (`file://` URLs and plain paths: a store or a mounted USB stick).
//!
//! Reads are bounded by what the caller asks for: small files have a size limit, ranges
//! deliver exactly the bytes asked for and the rest of a longer response is dropped
//! (endless-data attacks). A server that ignores Range is handled by skipping to the range
//! start, with a warning, since it costs bandwidth.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diffota_cli::redact::redact_url;
use diffota_files::local_file::{self, Links};
use diffota_format::ranges::ContentRange;
use rustls::pki_types::pem::PemObject;

use crate::config::HttpConfig;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Worth retrying: the server or the network may do better next time.
    #[error("{url}: {cause}")]
    Transient {
        url: String,
        #[source]
        cause: FetchProblem,
    },
    /// Retrying would get the same answer.
    #[error("{url}: {cause}")]
    Fatal {
        url: String,
        #[source]
        cause: FetchProblem,
    },
    #[error("{url}: larger than the {limit} bytes allowed")]
    TooLarge { url: String, limit: u64 },
    #[error("TLS setup: {0}")]
    Tls(#[source] HttpSetupError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What went wrong with one request.
#[derive(Debug, thiserror::Error)]
pub enum FetchProblem {
    #[error("server answered {0}")]
    Status(reqwest::StatusCode),
    #[error("response ended {remaining} bytes early")]
    EndedEarly { remaining: u64 },
    #[error("asked for bytes {start}-{last} but got Content-Range {answered:?}")]
    ContentRange {
        start: u64,
        last: u64,
        answered: String,
    },
    /// The transport's error; its causes (connection refused, timed out, ...) are its
    /// sources, shown by `diffota_cli::error_chain`.
    #[error("{0}")]
    Transport(#[source] reqwest::Error),
}

/// Why the HTTP client could not be set up from the config.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("{path}: not valid PEM: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path}: no certificates found")]
    NoCertificates { path: PathBuf },
    #[error("{path}: no private key found")]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: {source}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("header {name}: not a valid HTTP header")]
    Header { name: String },
    #[error("{0}")]
    Client(#[source] reqwest::Error),
}

impl FetchError {
    pub fn is_transient(&self) -> bool {
        matches!(self, FetchError::Transient { .. })
    }
}

/// Counts what went over the wire, for reports and tests.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes: AtomicU64,
    pub requests: AtomicU64,
}

#[derive(Clone)]
pub enum StoreSource {
    Http {
        /// Carries the configured headers and client certificate: used only for `base`'s
        /// origin (and redirects that stay on it).
        client: reqwest::Client,
        base: String,
        /// For an index URL on another origin, when `[http] allow_other_origins` allows
        /// one: a client without the configured headers and client certificate.
        other_origins: Option<reqwest::Client>,
    },
    Local {
        root: PathBuf,
    },
}

/// What receives the bytes of a range as they arrive.
pub trait RangeSink {
    type Error;
    fn accept(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// A range fetch failed either in transport or in the sink.
pub enum RangeError<E> {
    Fetch(FetchError),
    Sink(E),
}

static RANGE_IGNORED_WARNED: AtomicBool = AtomicBool::new(false);

impl StoreSource {
    /// `url` is `http(s)://…`, `file://…` or a path.
    pub fn new(url: &str, http: &HttpConfig) -> Result<StoreSource, FetchError> {
        let trimmed = url.trim_end_matches('/');
        if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
            Ok(StoreSource::Http {
                client: http_client(http, ClientFor::Store)?,
                base: trimmed.to_owned(),
                other_origins: if http.allow_other_origins {
                    Some(http_client(http, ClientFor::OtherStore)?)
                } else {
                    None
                },
            })
        } else {
            let path = trimmed.strip_prefix("file://").unwrap_or(trimmed);
            Ok(StoreSource::Local {
                root: PathBuf::from(if path.is_empty() { "/" } else { path }),
            })
        }
    }

    /// A file of the store as it may be shown (logs, errors, D-Bus, reports): a password or
    /// query token in the configured URL is redacted.
    pub fn describe(&self, relative: &str) -> String {
        redact_url(&self.request_url(relative))
    }

    /// The URL a request for `relative` goes to: never shown.
    fn request_url(&self, relative: &str) -> String {
        match self {
            StoreSource::Http { base, .. } => format!("{base}/{relative}"),
            StoreSource::Local { root } => root.join(relative).display().to_string(),
        }
    }

    /// The store rooted at `root` (an index URL's store, `http(s)://…`), reached with this
    /// store's client when it is on the same origin. Another origin gets none of the
    /// configured headers or client certificate, and only when the config allows it.
    pub fn at_http_root(&self, root: &str) -> Result<StoreSource, OtherOriginError> {
        let refused = |configured: &str| OtherOriginError {
            url: redact_url(root),
            configured: redact_url(configured),
        };
        match self {
            StoreSource::Http {
                client,
                base,
                other_origins,
            } => {
                let client = if same_origin(base, root) {
                    client.clone()
                } else {
                    other_origins.clone().ok_or_else(|| refused(base))?
                };
                Ok(StoreSource::Http {
                    client,
                    base: root.trim_end_matches('/').to_owned(),
                    other_origins: other_origins.clone(),
                })
            }
            StoreSource::Local { root: local } => Err(refused(&local.display().to_string())),
        }
    }

    /// A whole small file (channel, index, signature), at most `limit` bytes.
    pub async fn get(
        &self,
        relative: &str,
        limit: u64,
        traffic: &Traffic,
    ) -> Result<Vec<u8>, FetchError> {
        let url = self.describe(relative);
        match self {
            StoreSource::Local { root } => {
                let path = root.join(relative);
                let io = |source| FetchError::Io {
                    path: path.clone(),
                    source,
                };
                // A regular file only (a FIFO or /dev/zero under a store's name must not
                // hang or fill memory), checked against `limit` before it is read.
                let (file, length) = local_file::open_regular(&path, Links::Follow).map_err(io)?;
                if length > limit {
                    return Err(FetchError::TooLarge { url, limit });
                }
                traffic.requests.fetch_add(1, Ordering::Relaxed);
                traffic.bytes.fetch_add(length, Ordering::Relaxed);
                local_file::read_opened(file, length, limit).map_err(io)
            }
            StoreSource::Http { client, .. } => {
                traffic.requests.fetch_add(1, Ordering::Relaxed);
                let mut response = client
                    .get(self.request_url(relative))
                    .send()
                    .await
                    .map_err(|e| transport_error(&url, e))?;
                check_status(&url, response.status())?;
                if response.content_length().is_some_and(|l| l > limit) {
                    return Err(FetchError::TooLarge { url, limit });
                }
                let mut body = Vec::new();
                while let Some(piece) = response
                    .chunk()
                    .await
                    .map_err(|e| transport_error(&url, e))?
                {
                    traffic
                        .bytes
                        .fetch_add(piece.len() as u64, Ordering::Relaxed);
                    if body.len() as u64 + piece.len() as u64 > limit {
                        return Err(FetchError::TooLarge { url, limit });
                    }
                    body.extend_from_slice(&piece);
                }
                Ok(body)
            }
        }
    }

    /// Delivers exactly the bytes `start..end` of a file to `sink`, in order.
    pub async fn get_range<S: RangeSink>(
        &self,
        relative: &str,
        start: u64,
        end: u64,
        sink: &mut S,
        traffic: &Traffic,
    ) -> Result<(), RangeError<S::Error>> {
        match self {
            StoreSource::Local { root } => {
                local_range(&root.join(relative), start, end, sink, traffic)
            }
            StoreSource::Http { client, .. } => {
                let urls = (self.request_url(relative), self.describe(relative));
                http_range(client, urls, start, end, sink, traffic).await
            }
        }
    }
}

/// Bytes `start..end` of a file of a local store (a mounted medium, a bundle).
fn local_range<S: RangeSink>(
    path: &Path,
    start: u64,
    end: u64,
    sink: &mut S,
    traffic: &Traffic,
) -> Result<(), RangeError<S::Error>> {
    let io = |source| {
        RangeError::Fetch(FetchError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let (file, _) = local_file::open_regular(path, Links::Follow).map_err(io)?;
    traffic.requests.fetch_add(1, Ordering::Relaxed);
    let mut at = start;
    let mut buffer = vec![0u8; 256 * 1024];
    while at < end {
        let want = ((end - at) as usize).min(buffer.len());
        file.read_exact_at(&mut buffer[..want], at).map_err(io)?;
        traffic.bytes.fetch_add(want as u64, Ordering::Relaxed);
        sink.accept(&buffer[..want]).map_err(RangeError::Sink)?;
        at += want as u64;
    }
    Ok(())
}

/// Bytes `start..end` over HTTP: one range request; a server that ignores Range is read
/// from the start and the bytes before `start` dropped.
async fn http_range<S: RangeSink>(
    client: &reqwest::Client,
    (request_url, url): (String, String),
    start: u64,
    end: u64,
    sink: &mut S,
    traffic: &Traffic,
) -> Result<(), RangeError<S::Error>> {
    traffic.requests.fetch_add(1, Ordering::Relaxed);
    let request = client.get(&request_url).header(
        reqwest::header::RANGE,
        format!("bytes={}-{}", start, end - 1),
    );
    let mut response = request
        .send()
        .await
        .map_err(|e| RangeError::Fetch(transport_error(&url, e)))?;
    let status = response.status();
    check_status(&url, status).map_err(RangeError::Fetch)?;
    let mut skip = 0u64;
    if status == reqwest::StatusCode::PARTIAL_CONTENT {
        let content_range = response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let answered = ContentRange::parse(content_range);
        if !answered.is_some_and(|range| range.covers(start, end)) {
            return Err(RangeError::Fetch(FetchError::Fatal {
                url,
                cause: FetchProblem::ContentRange {
                    start,
                    last: end - 1,
                    answered: content_range.to_owned(),
                },
            }));
        }
    } else {
        if !RANGE_IGNORED_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(event = "range_ignored", url = %url, "server ignores Range requests; reading whole files (slower, more traffic)");
        }
        skip = start;
    }
    let mut remaining = end - start;
    while remaining > 0 {
        let piece = match response
            .chunk()
            .await
            .map_err(|e| RangeError::Fetch(transport_error(&url, e)))?
        {
            Some(piece) => piece,
            None => {
                return Err(RangeError::Fetch(FetchError::Transient {
                    url,
                    cause: FetchProblem::EndedEarly { remaining },
                }))
            }
        };
        traffic
            .bytes
            .fetch_add(piece.len() as u64, Ordering::Relaxed);
        let mut piece = &piece[..];
        if skip > 0 {
            let dropped = skip.min(piece.len() as u64);
            skip -= dropped;
            piece = &piece[dropped as usize..];
        }
        let take = remaining.min(piece.len() as u64) as usize;
        if take > 0 {
            sink.accept(&piece[..take]).map_err(RangeError::Sink)?;
            remaining -= take as u64;
        }
    }
    // Anything the server sends beyond the range is not read: the response is dropped.
    Ok(())
}

fn check_status(url: &str, status: reqwest::StatusCode) -> Result<(), FetchError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Err(FetchError::Transient {
            url: url.to_owned(),
            cause: FetchProblem::Status(status),
        })
    } else {
        Err(FetchError::Fatal {
            url: url.to_owned(),
            cause: FetchProblem::Status(status),
        })
    }
}

fn transport_error(url: &str, error: reqwest::Error) -> FetchError {
    let fatal = error.is_builder() || error.is_redirect();
    // The error would quote the request's URL, credentials included; `url` is the shown one.
    let cause = FetchProblem::Transport(error.without_url());
    let url = url.to_owned();
    if fatal {
        FetchError::Fatal { url, cause }
    } else {
        FetchError::Transient { url, cause }
    }
}

/// What a client is for, which decides whether it carries the configured credentials
/// (`[http] headers`, the client certificate) and which redirects it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFor {
    /// The configured store: credentials; redirects followed only within the origin the
    /// request started on when there are credentials, so that they never reach another host.
    Store,
    /// A store on another origin that the config allows: no credentials, redirects followed.
    OtherStore,
    /// The report endpoint: no store credentials, no redirects (a redirect is not an
    /// acknowledgement, and a report does not go to a host it was not configured for).
    Reports,
}

/// An index URL on another origin than the configured store's, with no
/// `allow_other_origins`.
#[derive(Debug, thiserror::Error)]
#[error("{url} is not on the configured store's origin ({configured}): set allow_other_origins = true under [http] to allow other stores (the configured headers and client certificate are never sent to them)")]
pub struct OtherOriginError {
    pub url: String,
    pub configured: String,
}

/// Whether two `http(s)://` URLs share scheme, host and port.
pub fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// The redirect rule: at most 10 hops, and with credentials only within the origin the
/// request started on.
fn redirect_policy(keep_origin: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else if keep_origin
            && attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() != attempt.url().origin())
        {
            attempt.error("redirect to another origin refused: the configured headers and client certificate go only to the configured store")
        } else {
            attempt.follow()
        }
    })
}

pub(crate) fn http_client(
    http: &HttpConfig,
    purpose: ClientFor,
) -> Result<reqwest::Client, FetchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &http.ca_file {
        Some(path) => {
            for cert in read_pem_certs(path)? {
                roots.add(cert).map_err(|source| {
                    FetchError::Tls(HttpSetupError::Certificate {
                        path: path.clone(),
                        source,
                    })
                })?;
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            for cert in loaded.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Tls(e.into()))?
        .with_root_certificates(roots);
    let client_cert = match purpose {
        ClientFor::Store => (&http.client_cert, &http.client_key),
        ClientFor::OtherStore | ClientFor::Reports => (&None, &None),
    };
    let mut tls = match client_cert {
        (Some(cert_path), Some(key_path)) => {
            let certs = read_pem_certs(cert_path)?;
            let key_pem =
                local_file::read_bounded(key_path, crate::limits::SMALL_TEXT, Links::Follow)
                    .map_err(|source| FetchError::Io {
                        path: key_path.clone(),
                        source,
                    })?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                FetchError::Tls(match e {
                    rustls::pki_types::pem::Error::NoItemsFound => HttpSetupError::NoPrivateKey {
                        path: key_path.clone(),
                    },
                    source => HttpSetupError::Pem {
                        path: key_path.clone(),
                        source,
                    },
                })
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| FetchError::Tls(e.into()))?
        }
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut headers = reqwest::header::HeaderMap::new();
    let configured_headers = match purpose {
        ClientFor::Store => http.headers.iter().collect(),
        ClientFor::OtherStore | ClientFor::Reports => Vec::new(),
    };
    let has_credentials = !configured_headers.is_empty() || client_cert.0.is_some();
    for (name, value) in configured_headers {
        let bad = || FetchError::Tls(HttpSetupError::Header { name: name.clone() });
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| bad())?;
        headers.insert(name, value);
    }
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .default_headers(headers)
        .redirect(match purpose {
            ClientFor::Reports => reqwest::redirect::Policy::none(),
            ClientFor::Store | ClientFor::OtherStore => redirect_policy(has_credentials),
        })
        .user_agent(concat!("diffota/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(http.connect_timeout_secs))
        .read_timeout(Duration::from_secs(http.stall_timeout_secs))
        .build()
        .map_err(|e| FetchError::Tls(HttpSetupError::Client(e)))
}

fn read_pem_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, FetchError> {
    let pem = local_file::read_bounded(path, crate::limits::SMALL_TEXT, Links::Follow).map_err(
        |source| FetchError::Io {
            path: path.to_owned(),
            source,
        },
    )?;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|source| {
            FetchError::Tls(HttpSetupError::Pem {
                path: path.to_owned(),
                source,
            })
        })?;
    if certs.is_empty() {
        return Err(FetchError::Tls(HttpSetupError::NoCertificates {
            path: path.to_owned(),
        }));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        let store = "https://updates.example.com/store";
        assert!(same_origin(
            store,
            "https://updates.example.com/other/releases"
        ));
        assert!(same_origin(
            store,
            "https://fleet:pw@updates.example.com:443/x"
        ));
        assert!(!same_origin(store, "http://updates.example.com/store"));
        assert!(!same_origin(
            store,
            "https://updates.example.com:8443/store"
        ));
        assert!(!same_origin(store, "https://evil.example.com/store"));
        assert!(!same_origin(store, "not a url"));
    }

    #[test]
    fn another_origin_is_refused_unless_allowed_and_then_without_credentials() {
        let mut http = HttpConfig::default();
        http.headers
            .insert("Authorization".into(), "Bearer fleet-token".into());
        let store = StoreSource::new("https://fleet:pw@updates.example.com/store", &http).unwrap();
        assert!(store
            .at_http_root("https://updates.example.com/mirror")
            .is_ok());
        let refused = store
            .at_http_root("https://evil.example.com/store")
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("allow_other_origins"), "{refused}");
        assert!(
            refused.contains("fleet:***@updates.example.com"),
            "{refused}"
        );
        assert!(!refused.contains("pw"), "{refused}");
        http.allow_other_origins = true;
        let store = StoreSource::new("https://updates.example.com/store", &http).unwrap();
        assert!(store.at_http_root("https://evil.example.com/store").is_ok());
        assert_eq!(
            store.describe("channels/stable.json"),
            "https://updates.example.com/store/channels/stable.json"
        );
    }
}
