//! Starting and stopping a node: bind the listeners first (so a caller can learn the ports),
//! then start the configuration client, the message log and its checkpointer, the peer
//! transport and the consumer listeners.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use lienthong_confclient::{Clock, ConfClient, ConfClientConfig, ConfClientError};
use lienthong_exchange::{Protection, Signed};
use lienthong_globalconf::{GlobalConf, VerifiedConf, to_millis};
use lienthong_msglog::witness::{Checkpointer, Witness};
use lienthong_msglog::{CheckpointSigner, LogConfig, LogStore, MessageLog, SegmentStore};
use lienthong_pki::consumer_tls::consumer_server_config;
use lienthong_pki::tls::TlsIdentity;
use lienthong_pki::{Certificate, PrivateKey};
use lienthong_runtime::ConnectionCap;
use lienthong_types::Fault;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::federation::Federation;

use crate::backend::{BackendClient, BackendTls};
use crate::body::BodyLimits;
use crate::config::NodeConfig;
use crate::conn::ConnInfo;
use crate::exchange_log::ExchangeLog;
use crate::home::NodeKeys;
use crate::peer::{
    PeerClient, PeerClientOptions, PeerRefusal, PeerServer, PeerServerOptions, PeerTrust, RefusalSink,
};
use crate::refusal_limit::{Kind, Limits as RefusalLimits, RefusalLimiter, summary_record};
use crate::replay::ReplayGuard;
use crate::routes;
use crate::state::{Backend, NodeState};
use crate::witness::RegistryWitness;

/// Why a node could not start. Nothing stays bound after an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("global configuration client: {0}")]
    Conf(#[from] ConfClientError),
    #[error("message log: {0}")]
    Log(#[from] lienthong_msglog::LogError),
}

/// The node's sockets, bound before anything else starts.
#[derive(Debug)]
pub struct Listeners {
    http: Option<TcpListener>,
    https: Option<TcpListener>,
    peer: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &NodeConfig) -> Result<Self, StartError> {
        async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
        }
        let http = match config.consumer.http {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let https = match config.consumer.https {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        Ok(Self { http, https, peer: bind(config.peer.listen).await? })
    }

    /// Listeners the caller bound, e.g. a test kit that keeps a node's sockets across its
    /// restarts so no port is released and bound again.
    pub fn from_std(
        http: Option<std::net::TcpListener>,
        https: Option<std::net::TcpListener>,
        peer: std::net::TcpListener,
    ) -> io::Result<Self> {
        fn listener(l: std::net::TcpListener) -> io::Result<TcpListener> {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        }
        Ok(Self {
            http: http.map(listener).transpose()?,
            https: https.map(listener).transpose()?,
            peer: listener(peer)?,
        })
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.peer.local_addr()
    }
}

/// What can be swapped in for tests and tools.
#[derive(Default)]
pub struct StartOptions {
    pub clock: Option<Clock>,
    /// The log store; by default the segment store in the node directory's `log/`.
    pub log_store: Option<Arc<dyn LogStore>>,
    /// Who witnesses checkpoints; by default the registry named in the global configuration.
    pub witness: Option<Arc<dyn Witness>>,
    pub conf_poll_interval: Option<Duration>,
    /// How envelopes are proven and whether exchanges are recorded; by default
    /// [`lienthong_exchange::Signed`], what every node runs. Only a measurement tool swaps in
    /// another (the benchmark's transport-only nodes, decision 0011).
    pub protection: Option<Arc<dyn Protection>>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions").field("protection", &self.protection).finish_non_exhaustive()
    }
}

/// A running node.
pub struct NodeHandle {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub peer: SocketAddr,
    state: Arc<NodeState>,
    conf_client: ConfClient,
    federation: Federation,
    /// The peer trust in force (both directions), as it follows the configuration.
    trust: watch::Receiver<Arc<PeerTrust>>,
    checkpointer: Option<Checkpointer>,
    /// For the last checkpoint at shutdown.
    signer: CheckpointSigner,
    witness: Arc<dyn Witness>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("node", &self.state.keys.node)
            .field("http", &self.http)
            .field("https", &self.https)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, StartError> {
    std::fs::read(path)
        .map_err(|e| StartError::Invalid(format!("cannot read {what} {}: {e}", path.display())))
}

fn backends(config: &NodeConfig) -> Result<HashMap<lienthong_types::ServiceId, Backend>, StartError> {
    let mut out = HashMap::new();
    for s in &config.services {
        let extra_roots = match &s.ca_file {
            Some(p) => crate::backend::roots_from_pem(&read(p, "CA file")?).map_err(|e| {
                StartError::Invalid(format!("service {}: CA file {}: {e}", s.id, p.display()))
            })?,
            None => Vec::new(),
        };
        let client = BackendClient::new(BackendTls { verify: s.tls_verify, extra_roots })
            .map_err(|e| StartError::Invalid(format!("service {}: {e}", s.id)))?;
        let openapi =
            s.openapi.as_ref().map(|p| read(p, "OpenAPI description").map(Bytes::from)).transpose()?;
        out.insert(
            s.id.clone(),
            Backend { client, url: s.url.clone(), timeout: config.service_timeout(s), openapi },
        );
    }
    Ok(out)
}

fn client_certs(
    config: &NodeConfig,
) -> Result<HashMap<lienthong_types::SubsystemId, HashSet<lienthong_pki::Fingerprint>>, StartError> {
    // An information system's certificate is an ordinary one (its own CA's, self-signed), not
    // one of ours with a Lienthong identity: it is pinned by fingerprint only.
    config
        .clients
        .iter()
        .map(|c| {
            Ok((
                c.subsystem.clone(),
                pinned(&c.certificates, &format!("client {} certificate", c.subsystem))?,
            ))
        })
        .collect()
}

/// Fingerprints of the PEM certificates in `paths` (pinned, whatever issued them).
fn pinned(
    paths: &[std::path::PathBuf],
    what: &str,
) -> Result<HashSet<lienthong_pki::Fingerprint>, StartError> {
    let mut set = HashSet::new();
    for p in paths {
        let certs = crate::backend::roots_from_pem(&read(p, what)?)
            .map_err(|e| StartError::Invalid(format!("{what} {}: {e}", p.display())))?;
        set.extend(certs.iter().map(|der| lienthong_pki::Fingerprint::of(der)));
    }
    Ok(set)
}

fn consumer_identity(config: &NodeConfig, keys: &NodeKeys) -> Result<TlsIdentity, StartError> {
    match (&config.consumer.tls_cert, &config.consumer.tls_key) {
        (Some(cert), Some(key)) => {
            let pem = String::from_utf8_lossy(&read(cert, "TLS certificate")?).into_owned();
            let chain =
                pem_chain(&pem).map_err(|e| StartError::Invalid(format!("{}: {e}", cert.display())))?;
            let key_pem = String::from_utf8_lossy(&read(key, "TLS key")?).into_owned();
            let key = PrivateKey::from_pem(&key_pem, None)
                .map_err(|e| StartError::Invalid(format!("{}: {e}", key.display())))?;
            Ok(TlsIdentity { chain, key: Arc::new(key) })
        }
        _ => Ok(TlsIdentity { chain: keys.tls.chain.clone(), key: keys.tls.key.clone() }),
    }
}

/// Every certificate in a PEM file, in order.
fn pem_chain(pem: &str) -> Result<Vec<Certificate>, String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut chain = Vec::new();
    for block in pem.split_inclusive(END).filter(|b| b.contains("BEGIN CERTIFICATE")) {
        chain.push(Certificate::from_pem(block).map_err(|e| e.to_string())?);
    }
    if chain.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(chain)
}

impl NodeHandle {
    /// Starts a node on `listeners` with the keys from its directory.
    pub async fn start(
        config: NodeConfig,
        keys: NodeKeys,
        listeners: Listeners,
        options: StartOptions,
    ) -> Result<Self, StartError> {
        let clock = options.clock.unwrap_or_else(Clock::system);
        let clock_now = clock.now();
        let backends = backends(&config)?;
        let client_certs = client_certs(&config)?;
        let auditors = pinned(&config.audit.certificates, "auditor certificate")?;
        let consumer_tls = match listeners.https {
            Some(_) => Some(TlsAcceptor::from(Arc::new(
                consumer_server_config(&consumer_identity(&config, &keys)?)
                    .map_err(|e| StartError::Invalid(format!("consumer TLS: {e}")))?,
            ))),
            None => None,
        };
        let spool_dir = config.data_dir.join("spool");
        std::fs::create_dir_all(&spool_dir)
            .map_err(|e| StartError::Invalid(format!("cannot create {}: {e}", spool_dir.display())))?;

        let mut conf_config = ConfClientConfig::new(keys.anchor.clone(), config.data_dir.join("conf"));
        conf_config.clock = clock.clone();
        if let Some(p) = options.conf_poll_interval {
            conf_config.poll_interval = p;
        }
        let conf_client = ConfClient::start(conf_config)?;
        let own_conf = conf_client.subscribe();
        // The node runs on its own configuration merged with its federation partners'.
        let (federation, conf_rx) = Federation::start(
            own_conf.clone(),
            config.data_dir.join("conf").join("partners"),
            clock.clone(),
            options.conf_poll_interval,
        );

        let store: Arc<dyn LogStore> = match options.log_store {
            Some(s) => s,
            None => Arc::new(SegmentStore::open_dir(&config.data_dir.join("log"))?),
        };
        let log = Arc::new(MessageLog::open(store, LogConfig::default())?);
        let signer = CheckpointSigner {
            origin: keys.node.to_string(),
            key: keys.tls.key.clone(),
            certificate: keys.tls.chain[0].clone(),
        };
        let witness: Arc<dyn Witness> = match options.witness {
            Some(w) => w,
            None => Arc::new(RegistryWitness::new(own_conf.clone(), keys.anchor.clone())),
        };
        let checkpoint_clock = clock.clone();
        let checkpointer = Checkpointer::spawn(
            log.clone(),
            signer.clone(),
            Some(witness.clone()),
            Duration::from_secs(config.log.checkpoint_interval_secs),
            move || to_millis(checkpoint_clock.now()),
        );

        let initial = conf_rx
            .borrow()
            .as_ref()
            .map(|c| c.conf.clone())
            .unwrap_or_else(|| GlobalConf::empty(keys.anchor.instance.clone()));
        let trust =
            Arc::new(PeerTrust::new(&initial, &keys.tls).map_err(|e| StartError::Invalid(e.to_string()))?);
        let (trust_tx, trust_rx) = watch::channel(trust.clone());
        let trust_seen = trust_rx.clone();
        // No send waits longer than an exchange for a connection, so a connect that hangs (a
        // black hole) is given up by then and the next send tries afresh.
        let exchange_timeout = Duration::from_secs(config.limits.exchange_timeout_secs);
        let defaults = PeerClientOptions::default();
        let peer_options = PeerClientOptions {
            connect_timeout: defaults.connect_timeout.min(exchange_timeout),
            handshake_timeout: defaults.handshake_timeout.min(exchange_timeout),
            ..defaults
        };
        let peers = PeerClient::new(trust, peer_options);

        let limits = BodyLimits {
            max_bytes: config.limits.max_body_bytes,
            memory_threshold: config.limits.memory_threshold_bytes,
            idle_timeout: Duration::from_secs(config.limits.body_idle_timeout_secs),
            total_timeout: Some(Duration::from_secs(config.limits.body_total_timeout_secs)),
        };
        let skew_ms =
            i64::try_from(config.limits.max_clock_skew_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let exchange_log = ExchangeLog::new(log.clone(), &config, keys.body_key.clone());
        let http_addr = listeners
            .http
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(|e| StartError::Invalid(e.to_string()))?;
        let https_addr = listeners
            .https
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(|e| StartError::Invalid(e.to_string()))?;
        let peer_addr = listeners.peer.local_addr().map_err(|e| StartError::Invalid(e.to_string()))?;
        let r = &config.refusals;
        let refusal_limits = RefusalLimits {
            interval_ms: i64::try_from(r.interval_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            per_source: r.per_source,
            max_sources: r.max_sources,
            records_per_sec: r.records_per_sec,
            burst: r.burst,
        };
        let state = Arc::new(NodeState {
            config,
            keys,
            conf: conf_rx.clone(),
            log: exchange_log,
            peers: peers.clone(),
            backends,
            client_certs,
            auditors,
            replay: ReplayGuard::new(skew_ms, 1_000_000),
            clock,
            spool_dir,
            limits,
            next_node: AtomicUsize::new(0),
            started_at_ms: to_millis(clock_now),
            protection: options.protection.unwrap_or_else(|| Arc::new(Signed)),
            refusals: std::sync::Mutex::new(RefusalLimiter::new(refusal_limits, to_millis(clock_now))),
            witness: checkpointer.status(),
        });

        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(follow_conf(state.clone(), conf_rx, peers, trust_tx, stopped.clone()));
        // Refused peer connections become security events in the log, within the refusal
        // limit; the rest are counted into the interval's summaries, which this task writes.
        let refusals_tx = peer_refusal_sink(&state);
        tasks.spawn(write_refusal_summaries(state.clone(), stopped.clone()));
        let provider_state = state.clone();
        let max_peer_connections = state.config.limits.max_peer_connections;
        let mut peer_stop = stopped.clone();
        tasks.spawn(async move {
            let handler = move |req, peer: lienthong_pki::tls::PeerIdentity| {
                let state = provider_state.clone();
                let node = peer.node().clone();
                async move { crate::provider::handle(&state, req, node).await }
            };
            let shutdown = async move { until_stopped(&mut peer_stop).await };
            let options = PeerServerOptions {
                refusals: Some(refusals_tx),
                max_connections: max_peer_connections,
                ..Default::default()
            };
            let server = PeerServer::from_listener(listeners.peer).with_options(options);
            if let Err(e) = server.serve(trust_rx, handler, shutdown).await {
                tracing::error!(error = %e, "peer listener failed");
            }
        });
        if let Some(l) = listeners.http {
            tasks.spawn(accept_loop(state.clone(), l, None, stopped.clone()));
        }
        if let Some(l) = listeners.https {
            tasks.spawn(accept_loop(state.clone(), l, consumer_tls, stopped.clone()));
        }
        tracing::info!(node = %state.keys.node, ?http_addr, ?https_addr, %peer_addr, "node started");
        Ok(Self {
            http: http_addr,
            https: https_addr,
            peer: peer_addr,
            state,
            conf_client,
            federation,
            trust: trust_seen,
            checkpointer: Some(checkpointer),
            signer,
            witness,
            stop,
            tasks,
        })
    }

    /// The configuration client (to refresh on demand, read the status).
    pub fn conf_client(&self) -> &ConfClient {
        &self.conf_client
    }

    /// The message log.
    pub fn log(&self) -> &Arc<MessageLog> {
        self.state.log.log()
    }

    /// The configuration the node runs on, as it changes.
    pub fn conf_subscription(&self) -> watch::Receiver<Option<Arc<VerifiedConf>>> {
        self.state.conf.clone()
    }

    /// The current global configuration, if any.
    pub fn conf(&self) -> Option<Arc<VerifiedConf>> {
        self.state.conf.borrow().clone()
    }

    /// Waits until the peer transport runs on configuration `version` or newer (bounded by the
    /// caller's timeout).
    pub async fn wait_for_conf(&self, version: u64) {
        let mut rx = self.state.conf.clone();
        let _ = rx.wait_for(|c| c.as_ref().is_some_and(|c| c.conf.version >= version)).await;
        // The peer trust follows the configuration in its own task.
        while self.state.peers.trust().version() < version {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the peer transport trusts `node` (e.g. a federation partner's node, once
    /// the partner's configuration arrived), bounded by the caller's timeout.
    pub async fn wait_for_peer(&self, node: &lienthong_types::NodeId) {
        let mut trust = self.trust.clone();
        let _ = trust.wait_for(|t| t.registered(node).is_some()).await;
    }

    /// Stops accepting, lets open exchanges finish, stops the checkpointer and the log.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let grace = tokio::time::timeout(Duration::from_secs(15), async {
            while self.tasks.join_next().await.is_some() {}
        });
        if grace.await.is_err() {
            self.tasks.abort_all();
        }
        // The refusals counted in the interval in progress: its summaries are written now, so
        // the last checkpoint covers them.
        write_summaries(&self.state, true).await;
        if let Some(c) = self.checkpointer.take() {
            c.stop().await;
        }
        // A last checkpoint covers everything logged since the previous one: witnessed if the
        // registry answers soon, else signed by the node alone.
        let log = self.state.log.log().clone();
        let now_ms = to_millis(self.state.now());
        let covered = lienthong_msglog::witness::last_witnessed(&log).ok().flatten().map(|c| c.size);
        if log.head().size > covered.unwrap_or(0) {
            let witnessed = tokio::time::timeout(
                Duration::from_secs(5),
                lienthong_msglog::witness::checkpoint_and_witness(
                    &log,
                    &self.signer,
                    self.witness.as_ref(),
                    now_ms,
                ),
            )
            .await;
            if !matches!(witnessed, Ok(Ok(_)))
                && let Err(e) = log.checkpoint(&self.signer, now_ms)
            {
                tracing::warn!(error = %e, "no final checkpoint");
            }
        }
        self.federation.shutdown().await;
        self.conf_client.shutdown().await;
    }
}

/// The sink for refused peer connections: each is counted by the refusal limit at once, and
/// the ones it admits are written (in the background: the accept loop never waits for the log).
fn peer_refusal_sink(state: &Arc<NodeState>) -> RefusalSink {
    let state = state.clone();
    RefusalSink::new(move |r: PeerRefusal| {
        let fault = Fault::ServerSslAuthenticationFailed;
        if !state.admit_refusal(Kind::PeerTls, r.remote.ip(), &fault.code()) {
            return;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let detail = crate::respond::new_detail();
            let reject = lienthong_exchange::Reject::new(
                fault,
                format!("refused a peer connection from {}: {}", r.remote, r.reason),
            );
            let fault = lienthong_exchange::error_body::to_pb(&reject, &detail);
            let mut record = lienthong_exchange::record::refusal_record(
                &lienthong_exchange::record::Refusal {
                    direction: Some(lienthong_exchange::record::Direction::Request),
                    ..Default::default()
                },
                fault,
                reject.fault.http_status(),
                lienthong_exchange::record::Role::Provider,
                &state.keys.node,
                state.now(),
            );
            record.source_address = r.remote.ip().to_string();
            // A failure is already logged and marks the node not ready.
            let _ = state.log.append(record, None, None, crate::exchange_log::Side::Provider).await;
        });
    })
}

/// Writes the refusal summaries of each interval as it ends, until the node stops (the last
/// ones are written by [`NodeHandle::shutdown`]).
async fn write_refusal_summaries(state: Arc<NodeState>, mut stopped: watch::Receiver<bool>) {
    let interval = Duration::from_secs(state.config.refusals.interval_secs);
    let mut tick =
        tokio::time::interval((interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => write_summaries(&state, false).await,
            () = until_stopped(&mut stopped) => return,
        }
    }
}

/// Appends the summaries due (or all pending ones): each is one record, evidence of the
/// refusals it counts.
async fn write_summaries(state: &NodeState, all: bool) {
    for summary in state.refusal_summaries(all) {
        let record = summary_record(&summary, &state.keys.node, to_millis(state.now()));
        tracing::warn!(
            source = %summary.source.text(),
            kind = ?summary.kind,
            recorded = summary.recorded,
            counted = summary.suppressed_total(),
            "refusals of unauthenticated traffic beyond the limit, counted in a summary record"
        );
        // A failure is already logged and marks the node not ready; the counts are lost.
        let _ = state.log.append(record, None, None, crate::exchange_log::Side::Provider).await;
    }
}

/// Completes once the stop flag is raised (or its sender is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Rebuilds the peer trust whenever a new configuration arrives.
async fn follow_conf(
    state: Arc<NodeState>,
    mut conf: watch::Receiver<Option<Arc<VerifiedConf>>>,
    peers: PeerClient,
    trust_tx: watch::Sender<Arc<PeerTrust>>,
    mut stopped: watch::Receiver<bool>,
) {
    // What the trust was built from: a re-signed copy of the same configuration changes
    // nothing, a partner's new node or CA does (the merged view keeps the own version).
    let mut built_from = None;
    loop {
        let current = conf.borrow_and_update().clone();
        let key = current.as_ref().map(|c| trust_inputs(&c.conf));
        if let Some(c) = current
            && (c.conf.version != peers.trust().version() || key != built_from)
        {
            built_from = key;
            match PeerTrust::new(&c.conf, &state.keys.tls) {
                Ok(t) => {
                    let t = Arc::new(t);
                    peers.update(t.clone());
                    trust_tx.send_replace(t);
                    tracing::info!(
                        version = c.conf.version,
                        "peer trust follows the new global configuration"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot build peer trust from the global configuration")
                }
            }
        }
        tokio::select! {
            changed = conf.changed() => if changed.is_err() { return },
            () = until_stopped(&mut stopped) => return,
        }
    }
}

/// The parts of a configuration peer trust depends on: the registered nodes and approved CAs.
fn trust_inputs(
    conf: &GlobalConf,
) -> (Vec<(lienthong_types::NodeId, lienthong_pki::Fingerprint)>, Vec<lienthong_pki::Fingerprint>) {
    let nodes = conf.registered_nodes().collect();
    let cas = conf.approved_cas.iter().map(lienthong_pki::Certificate::fingerprint).collect();
    (nodes, cas)
}

/// Accepts information systems' connections (plain or TLS) and serves r1 on them.
async fn accept_loop(
    state: Arc<NodeState>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let cap = ConnectionCap::new("client", state.config.limits.max_client_connections);
    loop {
        tokio::select! {
            () = until_stopped(&mut stopped) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    // Over the cap the connection is closed at once (dropped here).
                    let Some(permit) = cap.admit(remote) else { continue };
                    tcp.set_nodelay(true).ok();
                    let serve = serve_client(state.clone(), tcp, remote, tls.clone(), stopped.clone());
                    connections.spawn(async move {
                        serve.await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_client(
    state: Arc<NodeState>,
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<TlsAcceptor>,
    stopped: watch::Receiver<bool>,
) {
    match tls {
        None => {
            let conn = ConnInfo { remote, tls: false, client_cert: None };
            serve_http(state, TokioIo::new(tcp), conn, false, stopped).await;
        }
        Some(acceptor) => {
            let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "client TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let (_, session) = stream.get_ref();
            let client_cert = session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| lienthong_pki::Fingerprint::of(c));
            let h2 = session.alpn_protocol() == Some(b"h2");
            let conn = ConnInfo { remote, tls: true, client_cert };
            serve_http(state, TokioIo::new(stream), conn, h2, stopped).await;
        }
    }
}

async fn serve_http<I>(
    state: Arc<NodeState>,
    io: I,
    conn: ConnInfo,
    h2: bool,
    mut stopped: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let (state, conn) = (state.clone(), conn.clone());
        async move { Ok::<_, std::convert::Infallible>(routes::handle(state, req, conn).await) }
    });
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .max_concurrent_streams(256)
            .max_header_list_size(64 * 1024)
            .max_pending_accept_reset_streams(32)
            .timer(TokioTimer::new());
        let c = builder.serve_connection(io, service);
        let mut c = std::pin::pin!(c);
        tokio::select! {
            _ = c.as_mut() => {}
            () = until_stopped(&mut stopped) => { c.as_mut().graceful_shutdown(); let _ = c.await; }
        }
    } else {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_headers(100)
            .max_buf_size(128 * 1024);
        let c = builder.serve_connection(io, service);
        let mut c = std::pin::pin!(c);
        tokio::select! {
            _ = c.as_mut() => {}
            () = until_stopped(&mut stopped) => { c.as_mut().graceful_shutdown(); let _ = c.await; }
        }
    }
}
