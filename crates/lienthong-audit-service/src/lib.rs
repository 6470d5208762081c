//! The central audit service (`lienthong audit serve`): it pulls metadata records and witnessed
//! checkpoints from every node's audit API into a [`Collector`], and serves the auditors' JSON
//! API (sharing report against the agreements, coverage, drill-down, evidence bundles fetched
//! from both nodes and verified against the anchor), its OpenAPI description and the dashboard.
//!
//! What it computes over the records (the sharing report, bundles, queries) is the audit library
//! `lienthong-audit`, which the node links too; this crate adds the collector's store, the
//! network (pulling nodes, serving auditors) and the service's settings. It never links the node.
//!
//! The global configuration comes in on a watch channel ([`ServiceSetup::conf`]); a standalone
//! service runs its own `lienthong-confclient` client ([`Standalone`]), the same client the
//! node runs, and nothing here trusts a node the verified configuration does not register.

mod api;
mod auditors;
pub mod collect;
pub mod config;
mod pull;
mod standalone;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lienthong_globalconf::{Anchor, VerifiedConf};
use lienthong_pki::PrivateKey;
use lienthong_types::NodeId;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

pub use auditors::Auditors;
pub use pull::{PullError, PullReport};
pub use standalone::{
    CERT_FILE, CONF_DIR, KEY_FILE, STORE_FILE, Standalone, StandaloneError, StandaloneSetup,
};

use crate::collect::Collector;

/// The OpenAPI description of the JSON API, served at [`OPENAPI_PATH`].
pub const OPENAPI: &str = include_str!("openapi.json");
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
/// The dashboard page, served at `/`.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// Where the service pulls one node from: its audit API (the node's HTTPS consumer listener).
#[derive(Debug, Clone)]
pub struct NodeSource {
    pub node: NodeId,
    /// `https://host:port` (no path).
    pub url: String,
}

/// The client certificate the service presents to the nodes' audit APIs; each node lists it in
/// its `[audit] certificates`.
pub struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKey,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("chain", &self.chain.len()).finish_non_exhaustive()
    }
}

/// Everything the service needs, set up by the caller.
pub struct ServiceSetup {
    pub collector: Collector,
    pub conf: watch::Receiver<Option<Arc<VerifiedConf>>>,
    /// Trust for evidence bundles and, with the configuration's keys, for co-signatures.
    pub anchor: Anchor,
    pub nodes: Vec<NodeSource>,
    pub credentials: Credentials,
    pub auditors: Auditors,
    /// Time allowed for one request to a node.
    pub node_timeout: Duration,
}

impl std::fmt::Debug for ServiceSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSetup").field("nodes", &self.nodes).finish_non_exhaustive()
    }
}

/// The running service's shared state.
pub struct AuditService {
    collector: Arc<Collector>,
    conf: watch::Receiver<Option<Arc<VerifiedConf>>>,
    anchor: Anchor,
    nodes: Vec<NodeSource>,
    credentials: Credentials,
    auditors: Auditors,
    node_timeout: Duration,
    /// One pull round at a time: rounds from the timer and from the API never interleave.
    round: Mutex<()>,
    /// The last pull of each node; read by coverage while a round runs.
    status: std::sync::Mutex<HashMap<String, PullStatus>>,
}

/// The last pull of one node, for coverage.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullStatus {
    /// RFC 3339 time of the last attempt.
    pub last_attempt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// Why the last attempt failed; absent when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl std::fmt::Debug for AuditService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditService").field("nodes", &self.nodes).finish_non_exhaustive()
    }
}

impl AuditService {
    pub fn new(setup: ServiceSetup) -> Arc<Self> {
        Arc::new(Self {
            collector: Arc::new(setup.collector),
            conf: setup.conf,
            anchor: setup.anchor,
            nodes: setup.nodes,
            credentials: setup.credentials,
            auditors: setup.auditors,
            node_timeout: setup.node_timeout,
            round: Mutex::new(()),
            status: std::sync::Mutex::new(HashMap::new()),
        })
    }

    pub fn collector(&self) -> &Collector {
        &self.collector
    }

    fn conf(&self) -> Option<Arc<VerifiedConf>> {
        self.conf.borrow().clone()
    }
}

/// A running service: its address and what stops it.
#[derive(Debug)]
pub struct ServiceHandle {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl ServiceHandle {
    /// Serves the API on `listener` (HTTPS when `tls` is given, which lets auditors log in with a
    /// certificate; at most `max_connections` open at once) and pulls every node each
    /// `pull_every` (never, when zero: the caller pulls).
    pub fn start(
        service: Arc<AuditService>,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        max_connections: usize,
        pull_every: Duration,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(api::serve(service.clone(), listener, tls, max_connections, stopped.clone()));
        if !pull_every.is_zero() {
            let mut stopped = stopped;
            tasks.spawn(async move {
                loop {
                    for report in service.pull_all().await {
                        if let Err(e) = report.outcome {
                            tracing::warn!(node = %report.node, error = %e, "pulling a node failed");
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pull_every) => {}
                        () = until_stopped(&mut stopped) => break,
                    }
                }
            });
        }
        Ok(Self { addr, stop, tasks })
    }

    /// Stops accepting, lets requests in flight finish (bounded) and waits for the tasks.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

/// How many API connections may be open at once unless configured (`max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Resolves once `stopped` is set (or its sender is gone).
pub(crate) async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    while !*stopped.borrow_and_update() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}
