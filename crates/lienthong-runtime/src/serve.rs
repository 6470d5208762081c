//! One HTTP server loop for every process: accept under a [`ConnectionCap`], optional TLS with a
//! handshake timeout, a per-connection hook that sees who connected (address, TLS client
//! certificates, ALPN) and makes the connection's service or refuses it, HTTP/1 and/or HTTP/2
//! with a header-read timeout, and on shutdown a graceful drain within a bound.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::cap::{ConnectionCap, ConnectionPermit};

/// Which HTTP versions a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    Http1,
    Http2,
    /// Either, told apart by the client's first bytes (the HTTP/2 preface).
    Both,
}

/// Limits and timeouts of [`serve`]. The defaults suit a small API server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Names the listener in traces.
    pub name: &'static str,
    /// Open connections at most; more are closed at once (see [`ConnectionCap`]).
    pub max_connections: usize,
    /// From TCP accept to a finished TLS handshake.
    pub handshake_timeout: Duration,
    /// HTTP/1: from the start of a request (or of the connection) to its complete header block.
    pub header_read_timeout: Duration,
    pub protocols: Protocols,
    /// HTTP/1: the most header lines in a request.
    pub max_headers: usize,
    /// HTTP/2: concurrent requests per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2: the largest request header block.
    pub max_header_list_size: u32,
    /// How long open requests may finish once shutdown is asked for; then connections are cut.
    pub shutdown_grace: Duration,
    /// How long accepting pauses after an accept error (out of descriptors and the like), so
    /// the loop does not spin.
    pub accept_backoff: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            name: "http",
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            protocols: Protocols::Both,
            max_headers: 100,
            max_concurrent_streams: 256,
            max_header_list_size: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
            accept_backoff: Duration::from_millis(100),
        }
    }
}

/// Where a server's TLS configuration comes from.
#[derive(Clone)]
pub enum Tls {
    /// One configuration for the server's life.
    Fixed(TlsAcceptor),
    /// Asked at each accept, for trust that follows a changing configuration: a connection is
    /// authenticated with the configuration current when it arrives.
    PerConnection(Arc<dyn Fn() -> Arc<ServerConfig> + Send + Sync>),
}

impl Tls {
    pub fn fixed(config: Arc<ServerConfig>) -> Self {
        Self::Fixed(TlsAcceptor::from(config))
    }

    fn acceptor(&self) -> TlsAcceptor {
        match self {
            Self::Fixed(a) => a.clone(),
            Self::PerConnection(f) => TlsAcceptor::from(f()),
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fixed(_) => "Tls::Fixed",
            Self::PerConnection(_) => "Tls::PerConnection",
        })
    }
}

/// Who is on the other end of a connection, as the per-connection hook sees it.
#[derive(Debug, Clone)]
pub struct Conn {
    pub remote: SocketAddr,
    pub tls: bool,
    /// The client's certificate chain as sent (empty without TLS or without a certificate);
    /// verified by the TLS configuration's client verifier, if it has one.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// The protocol agreed by ALPN, if any.
    pub alpn: Option<Vec<u8>>,
}

/// Serves HTTP on `listener` until `shutdown` completes, then stops accepting, lets open
/// requests finish within [`ServeOptions::shutdown_grace`] and cuts what is left.
///
/// For each connection (after the TLS handshake, if `tls`), `service` is called with who
/// connected: it returns the connection's service, or `None` to close it at once (a refusal,
/// which the hook reports itself).
pub async fn serve<F, S, B>(
    listener: TcpListener,
    tls: Option<Tls>,
    service: F,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) where
    F: Fn(&Conn) -> Option<S> + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let options = Arc::new(options);
    let service = Arc::new(service);
    let cap = ConnectionCap::new(options.name, options.max_connections);
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    // Closed at once by dropping it: a client finds out now, not in a queue.
                    let Some(permit) = cap.admit(remote) else { continue };
                    tcp.set_nodelay(true).ok();
                    connections.spawn(connection(
                        tcp, remote, tls.clone(), service.clone(), options.clone(), stopped.clone(), permit,
                    ));
                }
                Err(e) => {
                    tracing::warn!(listener = options.name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(options.accept_backoff).await;
                }
            },
        }
    }
    drop(listener);
    stop.send_replace(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(options.shutdown_grace, drained).await.is_err() {
        tracing::debug!(
            listener = options.name,
            open = connections.len(),
            "cutting connections after the grace"
        );
        connections.shutdown().await;
    }
}

async fn connection<F, S, B>(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<Tls>,
    service: Arc<F>,
    options: Arc<ServeOptions>,
    stopped: watch::Receiver<bool>,
    _permit: ConnectionPermit,
) where
    F: Fn(&Conn) -> Option<S> + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let Some(tls) = tls else {
        let conn = Conn { remote, tls: false, peer_certificates: Vec::new(), alpn: None };
        if let Some(s) = service(&conn) {
            http(tcp, s, &conn, &options, stopped).await;
        }
        return;
    };
    let handshake = tokio::time::timeout(options.handshake_timeout, tls.acceptor().accept(tcp));
    // A connection still in its handshake has no request to finish: shutdown drops it at once.
    let mut stopping = stopped.clone();
    let handshake = tokio::select! {
        h = handshake => h,
        () = until_stopped(&mut stopping) => return,
    };
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(listener = options.name, %remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(listener = options.name, %remote, "TLS handshake timed out");
            return;
        }
    };
    let session = stream.get_ref().1;
    let conn = Conn {
        remote,
        tls: true,
        peer_certificates: session
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
    };
    if let Some(s) = service(&conn) {
        http(stream, s, &conn, &options, stopped).await;
    }
}

async fn http<I, S, B>(
    io: I,
    service: S,
    conn: &Conn,
    options: &ServeOptions,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_headers(options.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.max_concurrent_streams)
        .max_header_list_size(options.max_header_list_size)
        .max_pending_accept_reset_streams(32);
    // ALPN already settled the version over TLS; in plain text `Both` tells them apart by the
    // first bytes.
    let protocols = match (options.protocols, conn.alpn.as_deref()) {
        (Protocols::Both, Some(b"h2")) => Protocols::Http2,
        (Protocols::Both, Some(b"http/1.1")) => Protocols::Http1,
        (p, _) => p,
    };
    let builder = match protocols {
        Protocols::Http1 => builder.http1_only(),
        Protocols::Http2 => builder.http2_only(),
        Protocols::Both => builder,
    };
    let c = builder.serve_connection(TokioIo::new(io), service);
    let mut c = pin!(c);
    let result = tokio::select! {
        r = c.as_mut() => r,
        () = until_stopped(&mut stopped) => {
            c.as_mut().graceful_shutdown();
            c.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = options.name, remote = %conn.remote, error = %e, "connection ended");
    }
}

async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}
