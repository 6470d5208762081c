//! What one global configuration says about peers: the TLS configs and addresses of every node.

use super::*;
// ---------------------------------------------------------------------------------------------
// Trust
// ---------------------------------------------------------------------------------------------

/// What one global configuration says about peers, with the TLS configs built from it.
///
/// Client configs are per target node (the verifier pins the node we mean to reach) and are
/// built on first use, so a configuration with many nodes costs nothing for nodes never called.
pub struct PeerTrust {
    version: u64,
    policy: Arc<TrustPolicy>,
    own: TlsIdentity,
    server: Arc<ServerConfig>,
    clients: Mutex<HashMap<NodeId, Arc<ClientConfig>>>,
    registered: HashMap<NodeId, Fingerprint>,
    addresses: HashMap<NodeId, Vec<String>>,
}

/// Why a [`PeerTrust`] could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("approved CA certificates: {0}")]
    Cas(#[from] CertError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl fmt::Debug for PeerTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTrust")
            .field("version", &self.version)
            .field("registered_nodes", &self.registered.len())
            .finish_non_exhaustive()
    }
}

impl PeerTrust {
    /// Builds the trust of `conf` for this node, presenting `own` to peers.
    pub fn new(conf: &GlobalConf, own: &TlsIdentity) -> Result<Self, TrustError> {
        let registered: HashMap<NodeId, Fingerprint> = conf.registered_nodes().collect();
        let policy = Arc::new(TrustPolicy::new(&conf.approved_cas, registered.clone())?);
        let own = TlsIdentity { chain: own.chain.clone(), key: own.key.clone() };
        let mut server = tls::server_config(&own, policy.clone())?;
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        // No resumption: a resumed session skips the verifier, and the identity of every
        // connection must come from a full check against the configuration it is made under.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        let addresses = conf
            .nodes
            .values()
            .map(|n| (n.id.clone(), n.addresses.iter().map(|a| a.url.clone()).collect()))
            .collect();
        Ok(Self {
            version: conf.version,
            policy,
            own,
            server: Arc::new(server),
            clients: Mutex::default(),
            registered,
            addresses,
        })
    }

    /// The version of the global configuration this was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The fingerprint `node` must present, if it is registered.
    pub fn registered(&self, node: &NodeId) -> Option<Fingerprint> {
        self.registered.get(node).copied()
    }

    /// The addresses (`https://host:port`) of `node`, in the order to try them.
    pub fn addresses(&self, node: &NodeId) -> Option<&[String]> {
        self.addresses.get(node).map(Vec::as_slice)
    }

    /// The provider side's TLS config (client certificate required, ALPN `h2`).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The consumer side's TLS config for connections to `node` only (ALPN `h2`).
    pub fn client_config(&self, node: &NodeId) -> Result<Arc<ClientConfig>, rustls::Error> {
        let mut clients = lock(&self.clients);
        if let Some(config) = clients.get(node) {
            return Ok(config.clone());
        }
        let mut config = tls::client_config(&self.own, self.policy.clone(), node.clone())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        let config = Arc::new(config);
        clients.insert(node.clone(), config.clone());
        Ok(config)
    }

    /// Checks a chain a peer presented under this configuration: `expected` is the node we
    /// connected to (`role` = [`PeerRole::Server`]), `None` for a client that connected to us.
    pub fn verify(
        &self,
        certs: &[CertificateDer<'_>],
        role: PeerRole,
        expected: Option<&NodeId>,
    ) -> Result<PeerIdentity, PeerRejected> {
        let (end_entity, intermediates) = certs.split_first().ok_or(PeerRejected::NoCertificate)?;
        self.policy.verify_peer(end_entity, intermediates, role, expected, SystemTime::now())
    }
}
