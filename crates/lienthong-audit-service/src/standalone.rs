//! A service on its own, as `lienthong audit serve` and the demo run it: its collector's store
//! and its configuration client (`lienthong-confclient`, the node's too) in one data directory.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lienthong_confclient::{ConfClient, ConfClientConfig, ConfClientError};
use lienthong_globalconf::Anchor;

use crate::collect::{CollectError, Collector};
use crate::{AuditService, Auditors, Credentials, NodeSource, ServiceHandle, ServiceSetup};

/// The service's client certificate (PEM), in its data directory.
pub const CERT_FILE: &str = "collector.pem";
/// The key of [`CERT_FILE`], in the data directory.
pub const KEY_FILE: &str = "collector.key";
/// The collector's store, in the data directory.
pub const STORE_FILE: &str = "collector.redb";
/// The configuration client's state directory, in the data directory.
pub const CONF_DIR: &str = "conf";

/// What a standalone service starts with: [`ServiceSetup`] without the store and the
/// configuration, which it opens in `data_dir`, plus how it serves and pulls.
pub struct StandaloneSetup {
    pub data_dir: PathBuf,
    pub anchor: Anchor,
    pub nodes: Vec<NodeSource>,
    pub credentials: Credentials,
    pub auditors: Auditors,
    /// Time allowed for one request to a node.
    pub node_timeout: Duration,
    /// Serve HTTPS with this (auditors may then log in with a certificate); plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// API connections open at once at most.
    pub max_connections: usize,
    /// Pull every node this often; never when zero (the caller pulls).
    pub pull_every: Duration,
}

impl std::fmt::Debug for StandaloneSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandaloneSetup")
            .field("data_dir", &self.data_dir)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// Why a standalone service did not start.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("opening the collector's store in {}: {source}", dir.display())]
    Store {
        dir: PathBuf,
        #[source]
        source: CollectError,
    },
    #[error("starting the configuration client: {0}")]
    Conf(#[source] ConfClientError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("starting the service: {0}")]
    Serve(#[source] io::Error),
}

/// A running standalone service with its configuration client.
#[derive(Debug)]
pub struct Standalone {
    handle: ServiceHandle,
    service: Arc<AuditService>,
    conf: ConfClient,
}

impl Standalone {
    /// Opens the store, starts the configuration client (it polls at once, then on its
    /// interval), binds `listen` and serves. Must be called inside a Tokio runtime.
    pub async fn start(setup: StandaloneSetup, listen: SocketAddr) -> Result<Self, StandaloneError> {
        let StandaloneSetup {
            data_dir,
            anchor,
            nodes,
            credentials,
            auditors,
            node_timeout,
            tls,
            max_connections,
            pull_every,
        } = setup;
        let collector = Collector::open(&data_dir.join(STORE_FILE))
            .map_err(|source| StandaloneError::Store { dir: data_dir.clone(), source })?;
        let conf = ConfClient::start(ConfClientConfig::new(anchor.clone(), conf_dir(&data_dir)))
            .map_err(StandaloneError::Conf)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StandaloneError::Bind { addr: listen, source })?;
        let service = AuditService::new(ServiceSetup {
            collector,
            conf: conf.subscribe(),
            anchor,
            nodes,
            credentials,
            auditors,
            node_timeout,
        });
        let handle = ServiceHandle::start(service.clone(), listener, tls, max_connections, pull_every)
            .map_err(StandaloneError::Serve)?;
        Ok(Self { handle, service, conf })
    }

    /// Where the API and the dashboard are served.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    pub fn service(&self) -> &Arc<AuditService> {
        &self.service
    }

    pub fn conf_client(&self) -> &ConfClient {
        &self.conf
    }

    /// Stops serving and pulling (requests in flight finish, bounded), then the configuration
    /// client.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
        self.conf.shutdown().await;
    }
}

fn conf_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(CONF_DIR)
}
