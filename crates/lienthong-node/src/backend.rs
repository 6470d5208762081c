//! The provider node's HTTP client for a service's own backend.
//!
//! The backend is called at `{service URL}{rest of the r1 path}?{query}`. The client speaks
//! HTTP/1.1 over `http://`, and HTTP/1.1 or HTTP/2 (by ALPN) over `https://`, with TLS from
//! [`lienthong_pki::tls::backend_client_config`]. Connections are pooled; clones share the pool.
//! Redirects are never followed: a 3xx goes back to the consumer like any other answer.
//!
//! Errors never name the backend (its address is internal to the provider's organisation):
//! [`BackendError`]'s message is fit for the consumer, and [`BackendError::detail`] is for the
//! provider's own log.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Scheme, Uri};
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tower::ServiceExt;

/// How long an unused pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Request headers the client sets itself or that belong to one hop only: `Host` comes from
/// the URL, the framing from [`BackendRequest::content_length`].
const NOT_FORWARDED: &[HeaderName] = &[
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Hop-by-hop headers that have no constant in `http`.
const NOT_FORWARDED_NAMES: &[&str] = &["keep-alive", "proxy-connection"];

/// How the provider node checks a backend's TLS certificate.
#[derive(Debug, Clone)]
pub struct BackendTls {
    /// Verify the certificate against the system's roots and `extra_roots`, and the host name.
    /// Turning this off is the operator's choice for one service; see
    /// [`lienthong_pki::tls::backend_client_config`].
    pub verify: bool,
    /// CAs trusted for backends besides the system's, e.g. an organisation's internal CA.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for BackendTls {
    fn default() -> Self {
        Self { verify: true, extra_roots: Vec::new() }
    }
}

/// The CA certificates in a PEM file (one or more), for [`BackendTls::extra_roots`]. Any CA
/// will do: backends use ordinary web certificates, not Lienthong ones.
pub fn roots_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, pem::Error> {
    let roots = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    if roots.is_empty() {
        return Err(pem::Error::NoItemsFound);
    }
    Ok(roots)
}

/// One call to a backend.
#[derive(Debug)]
pub struct BackendRequest {
    pub method: Method,
    /// The service's base URL as registered, e.g. `https://pets.internal:8443/api/v1`.
    pub url: String,
    /// The rest of the request path, percent-encoded: empty or starting with `/`.
    pub path: String,
    /// The query string without `?`, percent-encoded; empty for none.
    pub query: String,
    /// Sent in this order; repeated names are sent together. `Host`, the framing headers and
    /// hop-by-hop ones (`Connection`, `TE`, `Upgrade`, ...) are left out.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: BoxBody<Bytes, io::Error>,
    /// Sent as `Content-Length`; `None` sends the body chunked (or none, if it is empty).
    pub content_length: Option<u64>,
}

/// The backend's answer, headers received and the body still streaming.
#[derive(Debug)]
pub struct BackendResponse {
    pub status: StatusCode,
    /// In the order received, repeated names kept.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Incoming,
}

/// Why a backend call failed. The messages name no host or address.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The service URL cannot be called (not http(s), has a query, fragment or credentials).
    #[error("the service URL is not usable: {0}")]
    BadUrl(&'static str),
    /// The path or query from the request cannot be appended to the service URL.
    #[error("the request path is not usable: {0}")]
    BadPath(&'static str),
    /// No response: the connection or TLS failed, or it broke before the response headers.
    #[error("the service could not be reached: {reason}")]
    Failed {
        reason: &'static str,
        /// The whole error chain, for the provider's log only: it may name the backend.
        detail: String,
    },
    /// No response headers within the timeout.
    #[error("the service did not answer in time")]
    Timeout,
}

impl BackendError {
    /// What to log besides the message, if there is more.
    pub fn detail(&self) -> Option<&str> {
        match self {
            BackendError::Failed { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

/// The URL to call: the service URL (scheme, authority, optional base path) joined with the
/// request's path and query. Call it with an empty path and query to check a service URL when
/// it is configured.
///
/// Dot segments (`.`, `..`, also percent-encoded) are refused in `path`: the backend would
/// resolve them and could be led outside the service's base path.
pub fn target_uri(url: &str, path: &str, query: &str) -> Result<Uri, BackendError> {
    if url.contains('?') {
        return Err(BackendError::BadUrl("it has a query"));
    }
    if url.contains('#') {
        return Err(BackendError::BadUrl("it has a fragment"));
    }
    let base: Uri = url.parse().map_err(|_| BackendError::BadUrl("it is not a valid URL"))?;
    let scheme = match base.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        _ => return Err(BackendError::BadUrl("it must start with http:// or https://")),
    };
    let authority = base.authority().ok_or(BackendError::BadUrl("it has no host"))?;
    if authority.as_str().contains('@') {
        return Err(BackendError::BadUrl("it must not contain credentials"));
    }
    if authority.host().is_empty() {
        return Err(BackendError::BadUrl("it has no host"));
    }

    if !path.is_empty() && !path.starts_with('/') {
        return Err(BackendError::BadPath("it must start with '/'"));
    }
    // Admission refused such paths already; the same rule again where the URL is made.
    if lienthong_exchange::access::check_path(path).is_err() {
        return Err(BackendError::BadPath(
            "it breaks the path rule (dot or empty segments, encoded separators)",
        ));
    }
    if path.contains(['?', '#']) {
        return Err(BackendError::BadPath("it has a '?' or '#'"));
    }
    if query.contains('#') {
        return Err(BackendError::BadPath("the query has a '#'"));
    }

    let base_path = base.path().trim_end_matches('/');
    let mut joined = String::with_capacity(base_path.len() + path.len() + query.len() + 2);
    match (base_path.is_empty(), path.is_empty()) {
        // Nothing to append: keep the service URL's path as it is (trailing slash included).
        (_, true) => joined.push_str(base.path()),
        (_, false) => {
            joined.push_str(base_path);
            joined.push_str(path);
        }
    }
    if joined.is_empty() {
        joined.push('/');
    }
    if !query.is_empty() {
        joined.push('?');
        joined.push_str(query);
    }
    Uri::builder()
        .scheme(scheme)
        .authority(authority.clone())
        .path_and_query(joined)
        .build()
        .map_err(|_| BackendError::BadPath("it has characters that must be percent-encoded"))
}

/// A pooled HTTP client for backends. Cheap to clone.
#[derive(Clone)]
pub struct BackendClient {
    client: Client<Connector, BoxBody<Bytes, io::Error>>,
}

impl fmt::Debug for BackendClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendClient").finish_non_exhaustive()
    }
}

impl BackendClient {
    /// Builds the client. With `verify`, this reads the system's trust store (blocking file
    /// reads): build clients at start-up or on a configuration change, not per request. A
    /// missing or partly unreadable store is tolerated (logged): `extra_roots` may be all
    /// that is trusted.
    pub fn new(tls: BackendTls) -> Result<Self, rustls::Error> {
        let system_roots = if tls.verify { system_roots() } else { Vec::new() };
        let mut config =
            lienthong_pki::tls::backend_client_config(tls.verify, &system_roots, &tls.extra_roots)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let mut tcp = HttpConnector::new();
        // https:// URLs are handled by `Connector`, which wraps this one.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = Connector { tcp, tls: TlsConnector::from(Arc::new(config)) };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self { client })
    }

    /// Calls the backend. `timeout` covers connecting, TLS, sending the request and waiting
    /// for the response headers; reading the response body is the caller's to limit.
    pub async fn call(
        &self,
        req: BackendRequest,
        timeout: Duration,
    ) -> Result<BackendResponse, BackendError> {
        let uri = target_uri(&req.url, &req.path, &req.query)?;
        let mut request = Request::builder().method(req.method).uri(uri).body(req.body).map_err(|e| {
            BackendError::Failed { reason: "the request could not be built", detail: e.to_string() }
        })?;
        let headers = request.headers_mut();
        for (name, value) in req.headers {
            if !NOT_FORWARDED.contains(&name) && !NOT_FORWARDED_NAMES.contains(&name.as_str()) {
                headers.append(name, value);
            }
        }
        if let Some(len) = req.content_length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }

        let response = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => return Err(BackendError::Timeout),
            Ok(Err(e)) => return Err(BackendError::Failed { reason: classify(&e), detail: chain(&e) }),
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let headers = parts.headers.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        Ok(BackendResponse { status: parts.status, headers, body })
    }
}

fn system_roots() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "reading the system's trust store for backend TLS");
    }
    if found.certs.is_empty() {
        tracing::warn!("no system CA certificates found: backends must use a configured extra root");
    }
    found.certs
}

/// Where a connection attempt failed, so errors can be told apart without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Tcp,
    Tls,
}

#[derive(Debug)]
struct ConnectFailure {
    stage: Stage,
    source: Box<dyn StdError + Send + Sync>,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stage {
            Stage::Tcp => f.write_str("connect"),
            Stage::Tls => f.write_str("TLS handshake"),
        }
    }
}

impl StdError for ConnectFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// A fixed, host-free reason for a failed call.
fn classify(e: &hyper_util::client::legacy::Error) -> &'static str {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    let mut reason = None;
    while let Some(err) = source {
        if let Some(f) = err.downcast_ref::<ConnectFailure>()
            && f.stage == Stage::Tls
        {
            return "TLS handshake failed";
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            reason = match io.kind() {
                io::ErrorKind::ConnectionRefused => Some("connection refused"),
                io::ErrorKind::TimedOut => Some("connection timed out"),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
                    Some("connection closed before the response")
                }
                _ => reason,
            };
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                reason = reason.or(Some("connection closed before the response"));
            } else if h.is_parse() {
                reason = reason.or(Some("invalid response"));
            }
        }
        // hyper-util's resolver error displays exactly this.
        if err.to_string() == "dns error" {
            return "host name not resolved";
        }
        source = err.source();
    }
    reason.unwrap_or(if e.is_connect() { "connection failed" } else { "request failed" })
}

fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Dials TCP, then TLS for `https://`.
#[derive(Clone)]
struct Connector {
    tcp: HttpConnector,
    tls: TlsConnector,
}

impl tower::Service<Uri> for Connector {
    type Response = Stream;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectFailure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tcp, tls) = (self.tcp.clone(), self.tls.clone());
        Box::pin(async move {
            let fail = |stage, e: Box<dyn StdError + Send + Sync>| ConnectFailure { stage, source: e };
            let name = match uri.scheme() {
                Some(s) if *s == Scheme::HTTPS => {
                    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
                    Some(ServerName::try_from(host.to_owned()).map_err(|e| fail(Stage::Tls, e.into()))?)
                }
                _ => None,
            };
            let io = tcp.oneshot(uri).await.map_err(|e| fail(Stage::Tcp, e.into()))?;
            let Some(name) = name else { return Ok(Stream::Plain(io)) };
            let stream = tls.connect(name, io.into_inner()).await.map_err(|e| fail(Stage::Tls, e.into()))?;
            Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A backend connection, plain or TLS.
enum Stream {
    Plain(TokioIo<TcpStream>),
    /// Boxed: a TLS connection's state is large.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(s) => s.connected(),
            Stream::Tls(s) => {
                let (tcp, tls) = s.inner().get_ref();
                let connected = tcp.connected();
                if tls.alpn_protocol() == Some(b"h2") { connected.negotiated_h2() } else { connected }
            }
        }
    }
}

impl Read for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
}
