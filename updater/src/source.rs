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

use diffota_format::ranges::ContentRange;
use rustls::pki_types::pem::PemObject;

use crate::config::HttpConfig;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {message}")]
    Transient { url: String, message: String },
    #[error("{url}: {message}")]
    Fatal { url: String, message: String },
    #[error("{url}: larger than the {limit} bytes allowed")]
    TooLarge { url: String, limit: u64 },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
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
        client: reqwest::Client,
        base: String,
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
                client: http_client(http)?,
                base: trimmed.to_owned(),
            })
        } else {
            let path = trimmed.strip_prefix("file://").unwrap_or(trimmed);
            Ok(StoreSource::Local {
                root: PathBuf::from(if path.is_empty() { "/" } else { path }),
            })
        }
    }

    pub fn describe(&self, relative: &str) -> String {
        match self {
            StoreSource::Http { base, .. } => format!("{base}/{relative}"),
            StoreSource::Local { root } => root.join(relative).display().to_string(),
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
                let length = std::fs::metadata(&path).map_err(io)?.len();
                if length > limit {
                    return Err(FetchError::TooLarge { url, limit });
                }
                traffic.requests.fetch_add(1, Ordering::Relaxed);
                traffic.bytes.fetch_add(length, Ordering::Relaxed);
                std::fs::read(&path).map_err(io)
            }
            StoreSource::Http { client, .. } => {
                traffic.requests.fetch_add(1, Ordering::Relaxed);
                let mut response = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| transport_error(&url, &e))?;
                check_status(&url, response.status())?;
                if response.content_length().is_some_and(|l| l > limit) {
                    return Err(FetchError::TooLarge { url, limit });
                }
                let mut body = Vec::new();
                while let Some(piece) = response
                    .chunk()
                    .await
                    .map_err(|e| transport_error(&url, &e))?
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
                http_range(client, self.describe(relative), start, end, sink, traffic).await
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
    let file = std::fs::File::open(path).map_err(io)?;
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
    url: String,
    start: u64,
    end: u64,
    sink: &mut S,
    traffic: &Traffic,
) -> Result<(), RangeError<S::Error>> {
    traffic.requests.fetch_add(1, Ordering::Relaxed);
    let request = client.get(&url).header(
        reqwest::header::RANGE,
        format!("bytes={}-{}", start, end - 1),
    );
    let mut response = request
        .send()
        .await
        .map_err(|e| RangeError::Fetch(transport_error(&url, &e)))?;
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
                message: format!(
                    "asked for bytes {start}-{} but got Content-Range {content_range:?}",
                    end - 1
                ),
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
            .map_err(|e| RangeError::Fetch(transport_error(&url, &e)))?
        {
            Some(piece) => piece,
            None => {
                return Err(RangeError::Fetch(FetchError::Transient {
                    url,
                    message: format!("response ended {remaining} bytes early"),
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
            message: format!("server answered {status}"),
        })
    } else {
        Err(FetchError::Fatal {
            url: url.to_owned(),
            message: format!("server answered {status}"),
        })
    }
}

fn transport_error(url: &str, error: &reqwest::Error) -> FetchError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    if error.is_builder() || error.is_redirect() {
        FetchError::Fatal {
            url: url.to_owned(),
            message,
        }
    } else {
        FetchError::Transient {
            url: url.to_owned(),
            message,
        }
    }
}

fn http_client(http: &HttpConfig) -> Result<reqwest::Client, FetchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &http.ca_file {
        Some(path) => {
            for cert in read_pem_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| FetchError::Tls(format!("{}: {e}", path.display())))?;
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
        .map_err(|e| FetchError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut tls = match (&http.client_cert, &http.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let certs = read_pem_certs(cert_path)?;
            let key_pem = std::fs::read(key_path).map_err(|source| FetchError::Io {
                path: key_path.clone(),
                source,
            })?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                FetchError::Tls(match e {
                    rustls::pki_types::pem::Error::NoItemsFound => {
                        format!("{}: no private key found", key_path.display())
                    }
                    e => format!("{}: not valid PEM: {e}", key_path.display()),
                })
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| FetchError::Tls(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &http.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| FetchError::Tls(format!("header {name}: {e}")))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|e| FetchError::Tls(format!("header {name}: {e}")))?;
        headers.insert(name, value);
    }
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .default_headers(headers)
        .user_agent(concat!("diffota/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(http.connect_timeout_secs))
        .read_timeout(Duration::from_secs(http.stall_timeout_secs))
        .build()
        .map_err(|e| FetchError::Tls(e.to_string()))
}

fn read_pem_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, FetchError> {
    let pem = std::fs::read(path).map_err(|source| FetchError::Io {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| FetchError::Tls(format!("{}: not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(FetchError::Tls(format!(
            "{}: no certificates found",
            path.display()
        )));
    }
    Ok(certs)
}
