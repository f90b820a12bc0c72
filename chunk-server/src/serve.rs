//! `chunk-server serve`: a static file server for a store, for development, demos and
//! tests. Production stores sit on any web server or CDN (see the README); this one does
//! what devices need from them: GET and HEAD, single byte ranges, ETag and Last-Modified,
//! cache lifetimes (long for immutable packs and indexes, short for channel files), HTTP/1.1
//! and HTTP/2, optional TLS, and an access log that tests read to see what was served.
//!
//! Nothing outside the served directory is ever served: `.` and `..` segments (also
//! percent-encoded), backslashes, NUL and hidden names are refused, and the resolved path
//! (symlinks followed) must still lie inside the root.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use diffota_cli::outln;
use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::pki_types::{self, pem::PemObject, CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no such directory to serve (give the store's directory, the one holding releases/ and packs/)")]
    NoStore(PathBuf),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{path}: no certificate or key found in PEM file")]
    NoPem { path: PathBuf },
    #[error("{path}: not valid PEM: {source}")]
    Pem {
        path: PathBuf,
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

pub struct ServeOptions {
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub access_log: Option<PathBuf>,
    pub limits: ConnectionLimits,
}

/// What keeps idle and slow clients from using up the server's connections and file
/// descriptors.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Time for a client to send a request's headers (and, with TLS, its handshake),
    /// counted from the accept for the first request: a client that connects and sends
    /// nothing is closed after this, not after the idle timeout.
    pub header_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

/// When a connection last moved a byte, and whether a whole request has come yet, shared
/// between its I/O, its service and its watchdogs.
struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
    requested: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            requested: AtomicBool::new(false),
        }
    }

    /// Returns when no request's headers have arrived `limit` after the accept; never
    /// once one has (later requests are hyper's header timeout's and the idle timeout's).
    async fn until_no_request_within(&self, limit: Duration) {
        tokio::time::sleep(limit).await;
        if self.requested.load(AtomicOrdering::Relaxed) {
            std::future::pending::<()>().await;
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, AtomicOrdering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(AtomicOrdering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Returns once the connection has moved no byte for `limit`.
    async fn until_idle_for(&self, limit: Duration) {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// A stream that records every byte it moves in its [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

struct Site {
    root: PathBuf,
    access_log: Option<Mutex<fs_err::File>>,
}

/// Binds, prints `listening on <url>` on stdout and serves until the process ends.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    if !options.root.is_dir() {
        return Err(ServeError::NoStore(options.root.clone()));
    }
    let root = std::fs::canonicalize(&options.root).map_err(|source| ServeError::Io {
        path: options.root.clone(),
        source,
    })?;
    let access_log = match &options.access_log {
        Some(path) => Some(Mutex::new(
            fs_err::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ServeError::Io {
                    path: path.clone(),
                    source,
                })?,
        )),
        None => None,
    };
    let tls = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let site = Arc::new(Site { root, access_log });
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: options.listen,
        source,
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    outln!("listening on {scheme}://{local}");
    let _ = std::io::stdout().flush();
    let limits = options.limits;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        // At the cap, stop accepting: new clients wait in the backlog, not in our descriptors.
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(event = "accept_failed", error = %e);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let site = site.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let activity = Arc::new(Activity::new());
            let stream = Tracked {
                inner: stream,
                activity: activity.clone(),
            };
            tokio::select! {
                () = serve_connection(site, tls, stream, limits) => {}
                () = activity.until_idle_for(limits.idle_timeout) => {
                    tracing::debug!(event = "idle_connection_closed");
                }
                () = activity.until_no_request_within(limits.header_timeout) => {
                    tracing::debug!(event = "silent_connection_closed");
                }
            }
        });
    }
}

async fn serve_connection(
    site: Arc<Site>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stream: Tracked<tokio::net::TcpStream>,
    limits: ConnectionLimits,
) {
    let activity = stream.activity.clone();
    let service = hyper::service::service_fn(move |request| {
        activity.requested.store(true, AtomicOrdering::Relaxed);
        let site = site.clone();
        async move { Ok::<_, Infallible>(site.handle(request).await) }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let result = match tls {
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(tls_stream), service)
                        .await
                }
                Ok(Err(e)) => {
                    tracing::debug!(event = "tls_handshake_failed", error = %e);
                    return;
                }
                Err(_) => {
                    tracing::debug!(event = "tls_handshake_timed_out");
                    return;
                }
            }
        }
        None => {
            builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(event = "connection_error", error = %e);
    }
}

fn tls_acceptor(
    cert_path: &Path,
    key_path: &Path,
) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ServeError::Io { path, source }
    };
    let pem = |path: &Path| {
        let path = path.to_owned();
        move |source| ServeError::Pem { path, source }
    };
    let cert_pem = diffota_files::local_file::read_bounded(
        cert_path,
        1024 * 1024,
        diffota_files::local_file::Links::Follow,
    )
    .map_err(io(cert_path))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(pem(cert_path))?;
    if certs.is_empty() {
        return Err(ServeError::NoPem {
            path: cert_path.to_owned(),
        });
    }
    let key_pem = diffota_files::local_file::read_bounded(
        key_path,
        1024 * 1024,
        diffota_files::local_file::Links::Follow,
    )
    .map_err(io(key_path))?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(pki_types::pem::Error::NoItemsFound) => {
            return Err(ServeError::NoPem {
                path: key_path.to_owned(),
            })
        }
        Err(source) => return Err(pem(key_path)(source)),
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The byte span a Range header asks for, resolved against the file length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Whole,
    Span { start: u64, end: u64 },
    Unsatisfiable,
}

/// Parses a `Range` header for a file of `length` bytes. Malformed headers and multiple
/// ranges are answered with the whole file, as RFC 9110 allows.
pub fn parse_range(header: Option<&str>, length: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Ok(suffix) = last.parse::<u64>() else {
            return RangeRequest::Whole;
        };
        if suffix == 0 || length == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Span {
            start: length.saturating_sub(suffix),
            end: length,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeRequest::Whole;
    };
    let end = if last.is_empty() {
        length
    } else {
        match last.parse::<u64>() {
            Ok(last) if last >= start => last.saturating_add(1).min(length),
            _ => return RangeRequest::Whole,
        }
    };
    if start >= length {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Span { start, end }
    }
}

/// Maps a request path to a file below `root`, or None when it must not be served.
pub fn resolve_path(root: &Path, request_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(request_path)
        .decode_utf8()
        .ok()?;
    let mut path = root.to_path_buf();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment.starts_with('.') || segment.contains('\\') || segment.contains('\0') {
            return None;
        }
        path.push(segment);
    }
    let resolved = std::fs::canonicalize(&path).ok()?;
    (resolved.starts_with(root) && resolved.is_file()).then_some(resolved)
}

fn cache_control(request_path: &str) -> &'static str {
    if request_path.starts_with("/channels/") {
        "public, max-age=60, must-revalidate"
    } else if request_path.starts_with("/packs/") || request_path.starts_with("/releases/") {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300"
    }
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

impl Site {
    async fn handle(&self, request: Request<hyper::body::Incoming>) -> Response<Body> {
        let range_header = request
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (response, body_bytes) = self.respond(&request, range_header.as_deref()).await;
        if let Some(log) = &self.access_log {
            let line = format!(
                "{} {} {} {} {}\n",
                request.method(),
                request.uri().path(),
                range_header.as_deref().unwrap_or("-").replace(' ', ""),
                response.status().as_u16(),
                body_bytes
            );
            if let Ok(mut file) = log.lock() {
                let _ = file.write_all(line.as_bytes());
            }
        }
        response
    }

    async fn respond(
        &self,
        request: &Request<hyper::body::Incoming>,
        range_header: Option<&str>,
    ) -> (Response<Body>, u64) {
        let head = request.method() == Method::HEAD;
        if request.method() != Method::GET && !head {
            return (method_not_allowed(), 0);
        }
        let request_path = request.uri().path();
        let Some(path) = resolve_path(&self.root, request_path) else {
            return (text(StatusCode::NOT_FOUND, "not found"), 0);
        };
        // Non-blocking open: a FIFO in the store must not hold a thread until a writer comes.
        let opened = tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .await;
        let Ok(mut file) = opened else {
            return (text(StatusCode::NOT_FOUND, "not found"), 0);
        };
        let Ok(metadata) = file.metadata().await else {
            return (
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot stat file"),
                0,
            );
        };
        // Only regular files are served: a FIFO or device under a store name would hang or
        // never end the response.
        if !metadata.is_file() {
            return (text(StatusCode::NOT_FOUND, "not found"), 0);
        }
        let length = metadata.len();
        let Validators {
            modified,
            etag,
            last_modified,
        } = Validators::of(&metadata);

        let mut builder = Response::builder()
            .header(header::ETAG, &etag)
            .header(header::LAST_MODIFIED, &last_modified)
            .header(header::CACHE_CONTROL, cache_control(request_path))
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_TYPE, "application/octet-stream");
        if not_modified(request, &etag, modified) {
            let response = builder
                .status(StatusCode::NOT_MODIFIED)
                .body(empty())
                .expect("valid response");
            return (response, 0);
        }
        let range = effective_range(request, range_header, &etag, &last_modified, length);
        let (status, start, end) = match range {
            RangeRequest::Whole => (StatusCode::OK, 0, length),
            RangeRequest::Span { start, end } => {
                builder = builder.header(
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{length}", end - 1),
                );
                (StatusCode::PARTIAL_CONTENT, start, end)
            }
            RangeRequest::Unsatisfiable => {
                let response = builder
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{length}"))
                    .body(empty())
                    .expect("valid response");
                return (response, 0);
            }
        };
        let count = end - start;
        builder = builder.status(status).header(header::CONTENT_LENGTH, count);
        if head {
            return (builder.body(empty()).expect("valid response"), 0);
        }
        if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return (text(StatusCode::INTERNAL_SERVER_ERROR, "seek failed"), 0);
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), 64 * 1024)
            .map_ok(Frame::data);
        (
            builder
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("valid response"),
            count,
        )
    }
}

fn method_not_allowed() -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

/// What a client can revalidate a file against.
struct Validators {
    modified: SystemTime,
    etag: String,
    last_modified: String,
}

impl Validators {
    fn of(metadata: &std::fs::Metadata) -> Validators {
        let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let mtime_nanos = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Validators {
            modified,
            etag: format!("\"{:x}-{mtime_nanos:x}\"", metadata.len()),
            last_modified: httpdate::fmt_http_date(modified),
        }
    }
}

/// The Range to answer: the whole file when `If-Range` names another version of it.
fn effective_range(
    request: &Request<hyper::body::Incoming>,
    range_header: Option<&str>,
    etag: &str,
    last_modified: &str,
    length: u64,
) -> RangeRequest {
    let if_range_fails = request
        .headers()
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != etag && v != last_modified);
    if if_range_fails {
        RangeRequest::Whole
    } else {
        parse_range(range_header, length)
    }
}

fn not_modified(
    request: &Request<hyper::body::Incoming>,
    etag: &str,
    modified: SystemTime,
) -> bool {
    if let Some(tags) = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        return tags.split(',').any(|t| t.trim() == etag || t.trim() == "*");
    }
    request
        .headers()
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| {
            let whole_seconds = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            };
            whole_seconds(modified) <= whole_seconds(since)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 100), RangeRequest::Whole);
        assert_eq!(
            parse_range(Some("bytes=0-9"), 100),
            RangeRequest::Span { start: 0, end: 10 }
        );
        assert_eq!(
            parse_range(Some("bytes=50-"), 100),
            RangeRequest::Span {
                start: 50,
                end: 100
            }
        );
        assert_eq!(
            parse_range(Some("bytes=-10"), 100),
            RangeRequest::Span {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            parse_range(Some("bytes=-1000"), 100),
            RangeRequest::Span { start: 0, end: 100 }
        );
        assert_eq!(
            parse_range(Some("bytes=90-1000"), 100),
            RangeRequest::Span {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            parse_range(Some("bytes=100-"), 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=5-2"), 100), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), RangeRequest::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), RangeRequest::Whole);
    }

    #[test]
    fn traversal_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir_all(root.join("packs")).unwrap();
        std::fs::write(root.join("packs/a.pack"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("packs/link")).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        assert!(resolve_path(&root, "/packs/a.pack").is_some());
        for bad in [
            "/../secret",
            "/packs/../../secret",
            "/%2e%2e/secret",
            "/packs/%2E%2E/%2e%2e/secret",
            "/packs/link",
            "/packs",
            "/.tmp-x",
            "/packs/..%5c..%5csecret",
        ] {
            assert!(resolve_path(&root, bad).is_none(), "{bad} was served");
        }
    }
}
