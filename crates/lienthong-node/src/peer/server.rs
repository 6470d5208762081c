//! The provider side of the transport: the pinned mTLS accept loop, which rechecks every connection against each new configuration.

use super::*;
// Server
// ---------------------------------------------------------------------------------------------

/// Limits and timeouts of a [`PeerServer`].
#[derive(Debug, Clone)]
pub struct PeerServerOptions {
    /// From TCP accept to a verified peer.
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    /// Concurrent exchanges per connection.
    pub max_concurrent_streams: u32,
    /// The largest request header block accepted; by default the one limit both ends of a
    /// peer connection share, so every envelope a node signs arrives.
    pub max_header_list_size: u32,
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
    /// How long a connection of a peer that is no longer trusted may finish its exchanges.
    pub revoke_grace: Duration,
    /// How long open exchanges may finish once shutdown is asked for.
    pub shutdown_grace: Duration,
    /// Where refused connections are reported (for the message log's security events), as
    /// they happen: the sink decides at once what to keep, so a flood of bad handshakes queues
    /// nothing and every refusal is counted.
    pub refusals: Option<RefusalSink>,
}

/// Receives each refused peer connection; it must not block.
#[derive(Clone)]
pub struct RefusalSink(Arc<dyn Fn(PeerRefusal) + Send + Sync>);

impl RefusalSink {
    pub fn new(f: impl Fn(PeerRefusal) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for RefusalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefusalSink")
    }
}

/// A peer connection refused before any exchange: who tried and why.
#[derive(Debug, Clone)]
pub struct PeerRefusal {
    pub remote: SocketAddr,
    pub reason: String,
}

fn report_refusal(opts: &PeerServerOptions, remote: SocketAddr, reason: String) {
    if let Some(sink) = &opts.refusals {
        (sink.0)(PeerRefusal { remote, reason });
    }
}

impl Default for PeerServerOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_concurrent_streams: 256,
            max_header_list_size: MAX_PEER_HEADER_LIST_BYTES,
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
            revoke_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            refusals: None,
        }
    }
}

/// The provider side's listener. Bind first (to learn the port), then [`serve`](Self::serve).
#[derive(Debug)]
pub struct PeerServer {
    listener: TcpListener,
    opts: PeerServerOptions,
}

impl PeerServer {
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Ok(Self::from_listener(TcpListener::bind(addr).await?))
    }

    pub fn from_listener(listener: TcpListener) -> Self {
        Self { listener, opts: PeerServerOptions::default() }
    }

    pub fn with_options(mut self, opts: PeerServerOptions) -> Self {
        self.opts = opts;
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves peers until `shutdown` completes, then lets open exchanges finish (at most
    /// [`PeerServerOptions::shutdown_grace`]).
    ///
    /// Each connection is authenticated with the configuration current when it is accepted,
    /// and closed (gracefully, then after [`PeerServerOptions::revoke_grace`] for good) once a
    /// configuration arrives under which its certificate no longer verifies. Every request goes
    /// to `handler` with the verified identity of the peer node; the handler answers every
    /// request itself (errors included), so it cannot fail.
    pub async fn serve<H, F>(
        self,
        trust: watch::Receiver<Arc<PeerTrust>>,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        H: Fn(Request<Incoming>, PeerIdentity) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<PeerBody>> + Send + 'static,
    {
        let Self { listener, opts } = self;
        let opts = Arc::new(opts);
        let (stop, stopped) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        let cap = lienthong_runtime::ConnectionCap::new("peer", opts.max_connections);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((tcp, remote)) => {
                        // Over the cap the connection is closed at once (dropped here).
                        let Some(permit) = cap.admit(remote) else { continue };
                        tcp.set_nodelay(true).ok();
                        let conn = serve_connection(
                            tcp, remote, trust.clone(), stopped.clone(), handler.clone(), opts.clone(),
                        );
                        connections.spawn(async move {
                            conn.await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accepting a peer connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        stop.send_replace(true);
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(opts.shutdown_grace, drained).await.is_err() {
            connections.shutdown().await;
        }
        Ok(())
    }
}

/// Why a served connection is being closed.
enum Closing {
    Revoked(PeerRejected),
    Shutdown,
}

async fn serve_connection<H, F>(
    tcp: TcpStream,
    remote: SocketAddr,
    mut trust_rx: watch::Receiver<Arc<PeerTrust>>,
    mut stopped: watch::Receiver<bool>,
    handler: H,
    opts: Arc<PeerServerOptions>,
) where
    H: Fn(Request<Incoming>, PeerIdentity) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<PeerBody>> + Send + 'static,
{
    // The handshake uses the configuration current at accept.
    let trust = trust_rx.borrow_and_update().clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(trust.server_config());
    let tls = match tokio::time::timeout(opts.handshake_timeout, acceptor.accept(tcp).into_fallible()).await {
        Err(_) => {
            warn!(%remote, "peer TLS handshake timed out");
            report_refusal(&opts, remote, "the TLS handshake timed out".into());
            return;
        }
        Ok(Err((e, tcp))) => {
            let reason = tls_reason(&e);
            warn!(%remote, %reason, "refused a peer TLS connection");
            report_refusal(&opts, remote, reason);
            close_after_alert(tcp).await;
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    let certs = owned_certs(tls.get_ref().1.peer_certificates());
    // The handshake verified the chain already; verifying again yields the `PeerIdentity`
    // (which only the policy can make), under the latest configuration in case one arrived
    // during the handshake.
    let trust = trust_rx.borrow_and_update().clone();
    let peer = match trust.verify(&certs, PeerRole::Client, None) {
        Ok(peer) => peer,
        Err(reason) => {
            warn!(%remote, %reason, "refused a peer TLS connection");
            report_refusal(&opts, remote, reason.to_string());
            return;
        }
    };
    debug!(%remote, node = %peer.node(), "peer connected");

    let service = {
        let peer = peer.clone();
        service_fn(move |req| {
            let (handler, peer) = (handler.clone(), peer.clone());
            async move { Ok::<_, Infallible>(handler(req, peer).await) }
        })
    };
    let mut builder = server_h2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.max_concurrent_streams)
        .max_header_list_size(opts.max_header_list_size)
        .keep_alive_interval(opts.keep_alive_interval)
        .keep_alive_timeout(opts.keep_alive_timeout);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(tls), service));

    let mut trust_open = true;
    let closing = loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(%remote, node = %peer.node(), error = %e, "peer connection ended");
                }
                return;
            }
            changed = trust_rx.changed(), if trust_open => {
                if changed.is_err() {
                    // No more configurations will come; keep the last one.
                    trust_open = false;
                    continue;
                }
                let trust = trust_rx.borrow_and_update().clone();
                if let Err(reason) = trust.verify(&certs, PeerRole::Client, None) {
                    break Closing::Revoked(reason);
                }
            }
            _ = stopped.wait_for(|stop| *stop) => break Closing::Shutdown,
        }
    };
    let grace = match closing {
        Closing::Revoked(reason) => {
            info!(%remote, node = %peer.node(), %reason, "closing the connection of a peer no longer trusted");
            opts.revoke_grace
        }
        Closing::Shutdown => opts.shutdown_grace,
    };
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(grace, conn.as_mut()).await.is_err() {
        debug!(%remote, node = %peer.node(), "peer connection did not finish in time, dropping it");
    }
}

/// The reason a server-side handshake failed, for the log.
/// Closes a refused connection so that the TLS alert already sent reaches the peer: with TLS
/// 1.3 the client may have sent data the server never reads, and closing a socket with unread
/// data sends a reset that can overtake the alert. So: half-close, then drain briefly.
async fn close_after_alert(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    let drain = async {
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

fn tls_reason(e: &io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls_error) => match tls::peer_rejection(tls_error) {
            Some(reason) => reason.to_string(),
            None => tls_error.to_string(),
        },
        None => e.to_string(),
    }
}
