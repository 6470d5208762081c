//! The consumer side of the transport: one pooled HTTP/2 connection per peer node, a single connect shared by concurrent sends, connections cut when the configuration stops trusting the peer.

use super::*;
// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A failed TLS authentication, on either side of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// We refused the peer's certificate.
    #[error("{0}")]
    Peer(PeerRejected),
    /// The peer refused our certificate (it sent this TLS alert).
    #[error("the peer refused our certificate ({0:?})")]
    ByPeer(AlertDescription),
}

/// One address that could not be connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    pub address: String,
    pub error: String,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.address, self.error)
    }
}

/// Why [`PeerClient::send`] failed. Every variant but [`PeerError::Failed`] means the request
/// never reached the peer's application, see [`PeerError::is_before_send`].
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The current global configuration does not list the node.
    #[error("node {0} is not in the global configuration")]
    UnknownNode(NodeId),
    /// No address of the node could be connected to (TCP, timeout, or a non-authentication
    /// TLS or HTTP/2 failure).
    #[error("node {node} is unreachable: {}", list(attempts))]
    Unreachable { node: NodeId, attempts: Vec<ConnectFailure> },
    /// TLS authentication failed: the peer is not the node registered at that address, or it
    /// refused us. Callers report `server.clientproxy.ssl_authentication_failed`.
    #[error("TLS authentication with node {node} at {address} failed: {reason}")]
    Rejected { node: NodeId, address: String, reason: Rejection },
    /// Our own TLS identity could not be turned into a client config.
    #[error("TLS client configuration: {0}")]
    Config(rustls::Error),
    /// The request could not be addressed to the peer (its URI).
    #[error("invalid peer request: {0}")]
    InvalidRequest(http::Error),
    /// The exchange broke after the request was handed to the connection: the peer may have
    /// processed it, so the caller must not send it to another node.
    #[error("the exchange with node {node} failed: {source}")]
    Failed {
        node: NodeId,
        #[source]
        source: hyper::Error,
    },
    /// [`PeerClient::send_within`]: no connection to the node within the time given (a connect
    /// or handshake that hangs, as into a black hole). Nothing was sent.
    #[error("no connection to node {node} within {waited:?}")]
    NotConnected { node: NodeId, waited: Duration },
    /// [`PeerClient::send_within`]: the request was handed to the connection but the answer
    /// did not begin in time; the peer may be processing it.
    #[error("node {node} did not answer within {waited:?}")]
    TimedOut { node: NodeId, waited: Duration },
}

fn list(attempts: &[ConnectFailure]) -> String {
    if attempts.is_empty() {
        return "no address".into();
    }
    attempts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl PeerError {
    /// Whether the request certainly did not reach the peer, so failing over is safe.
    pub fn is_before_send(&self) -> bool {
        !matches!(self, Self::Failed { .. } | Self::TimedOut { .. })
    }

    /// Whether this is a TLS authentication failure.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }
}

/// The outcome of a connect, shared by every send that waited for it.
#[derive(Debug, Clone)]
enum ConnectError {
    UnknownNode,
    Unreachable(Vec<ConnectFailure>),
    Rejected { address: String, reason: Rejection },
    Config(rustls::Error),
}

impl ConnectError {
    fn for_node(self, node: &NodeId) -> PeerError {
        let node = node.clone();
        match self {
            Self::UnknownNode => PeerError::UnknownNode(node),
            Self::Unreachable(attempts) => PeerError::Unreachable { node, attempts },
            Self::Rejected { address, reason } => PeerError::Rejected { node, address, reason },
            Self::Config(e) => PeerError::Config(e),
        }
    }
}

/// How one address failed.
enum AttemptError {
    Rejected(Rejection),
    Failed(String),
}

/// Classifies a TLS-level I/O error: an authentication failure, or just a failed attempt.
fn classify_tls(e: &io::Error) -> AttemptError {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls_error) => match rejection(tls_error) {
            Some(r) => AttemptError::Rejected(r),
            None => AttemptError::Failed(format!("TLS: {tls_error}")),
        },
        None => AttemptError::Failed(e.to_string()),
    }
}

fn rejection(e: &rustls::Error) -> Option<Rejection> {
    use AlertDescription as A;
    if let Some(r) = tls::peer_rejection(e) {
        return Some(Rejection::Peer(r.clone()));
    }
    match e {
        rustls::Error::AlertReceived(
            alert @ (A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired),
        ) => Some(Rejection::ByPeer(*alert)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Limits and timeouts of a [`PeerClient`].
#[derive(Debug, Clone)]
pub struct PeerClientOptions {
    /// TCP connect, per address.
    pub connect_timeout: Duration,
    /// TLS handshake plus the peer's HTTP/2 preface, per address.
    pub handshake_timeout: Duration,
    /// HTTP/2 pings on pooled connections, so a dead peer is noticed while idle.
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
    /// The largest response header block accepted; by default the one limit both ends of a
    /// peer connection share, so every envelope a node signs arrives.
    pub max_header_list_size: u32,
}

impl Default for PeerClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
            max_header_list_size: MAX_PEER_HEADER_LIST_BYTES,
        }
    }
}

/// The consumer side: one pooled HTTP/2 connection per peer node. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClient")
            .field("connections", &self.connection_count())
            .field("handshakes", &self.handshakes())
            .finish_non_exhaustive()
    }
}

struct ClientInner {
    opts: PeerClientOptions,
    state: Mutex<ClientState>,
    handshakes: AtomicU64,
}

struct ClientState {
    trust: Arc<PeerTrust>,
    /// Bumped by every [`PeerClient::update`]; a connect that started under an older one
    /// re-checks its peer before joining the pool.
    generation: u64,
    pool: HashMap<NodeId, Slot>,
}

type ConnectOutcome = Option<Result<Arc<Conn>, ConnectError>>;

enum Slot {
    /// A connect is under way; every send for this node waits for its outcome.
    Connecting(watch::Receiver<ConnectOutcome>),
    Ready(Arc<Conn>),
}

/// One pooled connection.
struct Conn {
    sender: client_h2::SendRequest<PeerBody>,
    /// hyper's dispatcher; the HTTP/2 connection itself runs on a task hyper spawns.
    task: JoinHandle<()>,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    /// What the peer presented, re-verified against each new configuration.
    certs: Vec<CertificateDer<'static>>,
    authority: Authority,
    address: String,
}

impl Conn {
    fn is_live(&self) -> bool {
        !self.sender.is_closed() && !self.task.is_finished()
    }

    /// Closes the connection now, in-flight exchanges included.
    fn close(&self) {
        if let Some(kill) = lock(&self.kill).take() {
            kill.send(()).ok();
        }
        self.task.abort();
    }
}

enum Next {
    Use(Arc<Conn>),
    Wait(watch::Receiver<ConnectOutcome>),
}

impl PeerClient {
    pub fn new(trust: Arc<PeerTrust>, opts: PeerClientOptions) -> Self {
        let state = ClientState { trust, generation: 0, pool: HashMap::new() };
        Self {
            inner: Arc::new(ClientInner { opts, state: Mutex::new(state), handshakes: AtomicU64::new(0) }),
        }
    }

    /// Switches to a new configuration. Pooled connections whose peer it no longer trusts
    /// (node removed, another certificate registered, CA withdrawn, certificate expired) are
    /// closed at once; the others stay. New connections use the new TLS configs.
    pub fn update(&self, trust: Arc<PeerTrust>) {
        let mut state = lock(&self.inner.state);
        state.trust = trust;
        state.generation += 1;
        let ClientState { trust, pool, .. } = &mut *state;
        pool.retain(|node, slot| match slot {
            Slot::Connecting(_) => true,
            Slot::Ready(conn) if !conn.is_live() => false,
            Slot::Ready(conn) => match trust.verify(&conn.certs, PeerRole::Server, Some(node)) {
                Ok(_) => true,
                Err(reason) => {
                    let version = trust.version();
                    info!(%node, %reason, version, "closing the connection to a peer no longer trusted");
                    conn.close();
                    false
                }
            },
        });
    }

    /// The configuration in use.
    pub fn trust(&self) -> Arc<PeerTrust> {
        lock(&self.inner.state).trust.clone()
    }

    /// Live pooled connections.
    pub fn connection_count(&self) -> usize {
        lock(&self.inner.state).pool.values().filter(|s| matches!(s, Slot::Ready(c) if c.is_live())).count()
    }

    /// TLS handshakes started since this client was made (one per TCP connection).
    pub fn handshakes(&self) -> u64 {
        self.inner.handshakes.load(Ordering::Relaxed)
    }

    /// Sends `req` to `node` over its pooled connection, connecting first if there is none.
    ///
    /// The URI's scheme and authority are replaced by the peer address connected to; only its
    /// path and query are kept. A connection found closed before the request could be handed
    /// to it is replaced once. No overall deadline: wrap the call in a timeout, or use
    /// [`PeerClient::send_within`].
    pub async fn send(&self, node: &NodeId, req: Request<PeerBody>) -> Result<Response<Incoming>, PeerError> {
        self.send_by(node, req, None).await
    }

    /// [`PeerClient::send`], with the answer to begin within `timeout`. Running out of time
    /// while still connecting is [`PeerError::NotConnected`] (nothing sent: another node may be
    /// tried), after the request was handed over [`PeerError::TimedOut`] (it may have arrived).
    /// An outer timeout could not tell the two apart.
    pub async fn send_within(
        &self,
        node: &NodeId,
        req: Request<PeerBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, PeerError> {
        self.send_by(node, req, Some((tokio::time::Instant::now() + timeout, timeout))).await
    }

    async fn send_by(
        &self,
        node: &NodeId,
        mut req: Request<PeerBody>,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<Response<Incoming>, PeerError> {
        let mut reconnected = false;
        loop {
            let conn = match deadline {
                None => self.connection(node).await?,
                Some((at, waited)) => tokio::time::timeout_at(at, self.connection(node))
                    .await
                    .map_err(|_| PeerError::NotConnected { node: node.clone(), waited })??,
            };
            address(&mut req, &conn.authority).map_err(PeerError::InvalidRequest)?;
            let sent = conn.sender.clone().try_send_request(req);
            let sent = match deadline {
                None => sent.await,
                Some((at, waited)) => tokio::time::timeout_at(at, sent)
                    .await
                    .map_err(|_| PeerError::TimedOut { node: node.clone(), waited })?,
            };
            match sent {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    // The connection went away before taking the request: nothing was sent.
                    Some(back) if !reconnected => {
                        debug!(%node, address = %conn.address, "pooled connection closed, reconnecting");
                        self.forget(node, &conn);
                        reconnected = true;
                        req = back;
                    }
                    Some(_) => {
                        let error = format!("connection closed before sending: {}", e.into_error());
                        let attempts = vec![ConnectFailure { address: conn.address.clone(), error }];
                        return Err(PeerError::Unreachable { node: node.clone(), attempts });
                    }
                    None => return Err(PeerError::Failed { node: node.clone(), source: e.into_error() }),
                },
            }
        }
    }

    /// The live pooled connection to `node`, or the outcome of the one connect that all
    /// concurrent callers share.
    async fn connection(&self, node: &NodeId) -> Result<Arc<Conn>, PeerError> {
        loop {
            let next = {
                let mut state = lock(&self.inner.state);
                match state.pool.get(node) {
                    Some(Slot::Ready(conn)) if conn.is_live() => Next::Use(conn.clone()),
                    Some(Slot::Connecting(rx)) => Next::Wait(rx.clone()),
                    _ => {
                        if state.trust.addresses(node).is_none() {
                            return Err(PeerError::UnknownNode(node.clone()));
                        }
                        let (tx, rx) = watch::channel(None);
                        state.pool.insert(node.clone(), Slot::Connecting(rx.clone()));
                        // Its own task: a caller giving up must not abort a connect others await.
                        let (trust, generation) = (state.trust.clone(), state.generation);
                        tokio::spawn(self.clone().connect_and_pool(node.clone(), trust, generation, tx));
                        Next::Wait(rx)
                    }
                }
            };
            match next {
                Next::Use(conn) => return Ok(conn),
                Next::Wait(mut rx) => {
                    let outcome = rx.wait_for(Option::is_some).await.ok().and_then(|outcome| outcome.clone());
                    if let Some(outcome) = outcome {
                        return outcome.map_err(|e| e.for_node(node));
                    }
                    // The connect task died without an outcome (a panic): clear it and retry.
                    let mut state = lock(&self.inner.state);
                    if let Some(Slot::Connecting(pending)) = state.pool.get(node)
                        && pending.same_channel(&rx)
                    {
                        state.pool.remove(node);
                    }
                }
            }
        }
    }

    /// Removes `conn` from the pool if it is still the pooled one.
    fn forget(&self, node: &NodeId, conn: &Arc<Conn>) {
        let mut state = lock(&self.inner.state);
        if let Some(Slot::Ready(pooled)) = state.pool.get(node)
            && Arc::ptr_eq(pooled, conn)
        {
            state.pool.remove(node);
        }
        conn.close();
    }

    async fn connect_and_pool(
        self,
        node: NodeId,
        trust: Arc<PeerTrust>,
        generation: u64,
        tx: watch::Sender<ConnectOutcome>,
    ) {
        let mut outcome = self.connect(&node, &trust).await.map(Arc::new);
        {
            let mut state = lock(&self.inner.state);
            if let Ok(conn) = &outcome
                && state.generation != generation
            {
                // The configuration changed while we connected: the peer must pass the new one.
                if let Err(reason) = state.trust.verify(&conn.certs, PeerRole::Server, Some(&node)) {
                    conn.close();
                    outcome = Err(ConnectError::Rejected {
                        address: conn.address.clone(),
                        reason: Rejection::Peer(reason),
                    });
                }
            }
            match &outcome {
                Ok(conn) => state.pool.insert(node.clone(), Slot::Ready(conn.clone())),
                Err(_) => state.pool.remove(&node),
            };
        }
        tx.send_replace(Some(outcome));
    }

    /// Tries the node's addresses in order. An authentication failure is reported over a
    /// merely unreachable address, since it is the one that needs an operator.
    async fn connect(&self, node: &NodeId, trust: &PeerTrust) -> Result<Conn, ConnectError> {
        let addresses = trust.addresses(node).ok_or(ConnectError::UnknownNode)?;
        let config = trust.client_config(node).map_err(ConnectError::Config)?;
        let mut failures = Vec::new();
        let mut rejected = None;
        for address in addresses {
            match self.connect_one(address, config.clone()).await {
                Ok(conn) => {
                    debug!(%node, %address, "connected to peer");
                    return Ok(conn);
                }
                Err(AttemptError::Rejected(reason)) => {
                    warn!(%node, %address, %reason, "peer TLS authentication failed");
                    rejected.get_or_insert((address.clone(), reason));
                }
                Err(AttemptError::Failed(error)) => {
                    debug!(%node, %address, %error, "peer address unreachable");
                    failures.push(ConnectFailure { address: address.clone(), error });
                }
            }
        }
        Err(match rejected {
            Some((address, reason)) => ConnectError::Rejected { address, reason },
            None => ConnectError::Unreachable(failures),
        })
    }

    async fn connect_one(&self, address: &str, config: Arc<ClientConfig>) -> Result<Conn, AttemptError> {
        let opts = &self.inner.opts;
        let (host, port, authority) = parse_address(address).map_err(AttemptError::Failed)?;
        let tcp = tokio::time::timeout(opts.connect_timeout, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| AttemptError::Failed("connect timed out".into()))?
            .map_err(|e| AttemptError::Failed(e.to_string()))?;
        tcp.set_nodelay(true).ok();

        self.inner.handshakes.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + opts.handshake_timeout;
        let timed_out = || AttemptError::Failed("TLS/HTTP2 handshake timed out".into());
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = tokio::time::timeout_at(deadline, connector.connect(tls::peer_server_name(), tcp))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| classify_tls(&e))?;
        let certs = owned_certs(tls.get_ref().1.peer_certificates());

        let (first_read, first_read_rx) = oneshot::channel();
        let (kill, killed) = oneshot::channel();
        let io =
            TokioIo::new(PeerIo { inner: tls, first_read: Some(first_read), kill: Some(killed), cut: false });
        let (sender, connection) = client_h2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(opts.keep_alive_interval)
            .keep_alive_timeout(opts.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .max_header_list_size(opts.max_header_list_size)
            .handshake(io)
            .await
            .map_err(|e| AttemptError::Failed(format!("HTTP/2: {e}")))?;
        let peer = address.to_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(address = %peer, error = %e, "peer connection ended");
            }
        });

        // With TLS 1.3 the server checks our certificate after our side of the handshake is
        // done, so its refusal only shows on the first read. Waiting for the peer's first bytes
        // (its HTTP/2 SETTINGS) makes a refused connection fail here, before any request is on
        // it, instead of failing the first exchange as "maybe delivered".
        let confirmed = match tokio::time::timeout_at(deadline, first_read_rx).await {
            Err(_) => Err(timed_out()),
            Ok(Err(_)) => Err(AttemptError::Failed("connection closed before the peer spoke".into())),
            Ok(Ok(result)) => result,
        };
        let conn = Conn {
            sender,
            task,
            kill: Mutex::new(Some(kill)),
            certs,
            authority,
            address: address.to_owned(),
        };
        if let Err(e) = confirmed {
            conn.close();
            return Err(e);
        }
        Ok(conn)
    }
}

/// Splits `https://host[:port]` into what to connect to and the request authority.
fn parse_address(address: &str) -> Result<(String, u16, Authority), String> {
    let uri: Uri = address.parse().map_err(|e| format!("invalid address: {e}"))?;
    if uri.scheme() != Some(&Scheme::HTTPS) {
        return Err("invalid address: not an https URL".into());
    }
    let authority = uri.authority().ok_or("invalid address: no host")?.clone();
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok((host, authority.port_u16().unwrap_or(443), authority))
}

/// Points `req` at the peer: HTTP/2 needs the scheme and authority pseudo-headers.
fn address(req: &mut Request<PeerBody>, authority: &Authority) -> Result<(), http::Error> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() =
        Uri::builder().scheme(Scheme::HTTPS).authority(authority.clone()).path_and_query(path).build()?;
    Ok(())
}

/// The client's connection I/O: reports the outcome of the first read from the peer (bytes:
/// the connection is accepted; or the error or end of stream that ended it), and can be cut.
///
/// Cutting is done here because hyper runs the HTTP/2 connection on a task of its own that
/// lives on while any response is in flight: failing the I/O is what ends it.
struct PeerIo<T> {
    inner: T,
    first_read: Option<oneshot::Sender<Result<(), AttemptError>>>,
    /// Fires when the connection must close; dropped unsent, it never fires.
    kill: Option<oneshot::Receiver<()>>,
    cut: bool,
}

impl<T> PeerIo<T> {
    fn killed(&mut self, cx: &mut Context<'_>) -> bool {
        if self.cut {
            return true;
        }
        let Some(kill) = &mut self.kill else { return false };
        match Pin::new(kill).poll(cx) {
            Poll::Pending => return false,
            Poll::Ready(fired) => self.cut = fired.is_ok(),
        }
        // A oneshot must not be polled again once it is ready.
        self.kill = None;
        self.cut
    }
}

fn cut() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the peer is no longer trusted")
}

impl<T: AsyncRead + Unpin> AsyncRead for PeerIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed(cx) {
            return Poll::Ready(Err(cut()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(result) = &polled
            && let Some(first_read) = self.first_read.take()
        {
            let outcome = match result {
                Ok(()) if buf.filled().len() > before => Ok(()),
                Ok(()) => Err(AttemptError::Failed("the peer closed the connection".into())),
                Err(e) => Err(classify_tls(e)),
            };
            first_read.send(outcome).ok();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PeerIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.killed(cx) {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.killed(cx) {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// ---------------------------------------------------------------------------------------------
