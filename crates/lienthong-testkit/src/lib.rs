//! In-process topologies for tests, built with the product's own code paths: a registry made by
//! `RegistryHome::init` and served by `serve_on`, nodes set up by `NodeHome::init` (CSRs,
//! registration, approval) and run by `NodeHandle::start`, mock backends, all on `127.0.0.1:0`
//! with a clock the test can move.

pub mod audit;
mod backend;
pub mod browser;
pub mod faultproxy;
mod ports;
pub mod tmpfs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lienthong_globalconf::{Anchor, sign_request};
use lienthong_node::home::{InitOptions as NodeInitOptions, NodeHome};
use lienthong_node::{NodeConfig, NodeHandle, Protection, StartOptions};
use lienthong_pki::{Certificate, KeyAlgorithm};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_registry::admin::{AdminSession, GrantTo, NewGrant};
use lienthong_registry::{InitOptions, RegistryConfig, RegistryHome, RunningRegistry, serve_on};
use lienthong_runtime::{Clock as NodeClock, OffsetClock};
use lienthong_types::{ClientId, MemberId, NodeId, ServiceId, SubsystemId};

pub use backend::{MockBackend, Mode, Seen};
pub use faultproxy::{Fault, FaultProxy, Toward};

use crate::ports::{HeldPort, NodePorts, Refuser};

/// Makes management request ids unique within a test process.
static PUBLISHED: AtomicI64 = AtomicI64::new(0);

/// The longest any single step of a test may take.
pub const STEP: Duration = Duration::from_secs(30);

/// Bounds a step of a test.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("step finished in time")
}

/// A clock every component of a topology shares, so expiry and skew can be reached without
/// waiting. Nodes can be given their own offset on top.
#[derive(Clone, Default, Debug)]
pub struct TestClock(OffsetClock);

impl TestClock {
    pub fn now(&self) -> SystemTime {
        self.0.now()
    }

    pub fn advance(&self, secs: i64) {
        self.0.advance(secs);
    }

    /// The same clock, as a component sees it.
    pub fn clock(&self) -> NodeClock {
        self.0.clock()
    }

    /// The same clock, as a node sees it, shifted by `skew_secs`.
    pub fn for_node(&self, skew: Arc<AtomicI64>) -> NodeClock {
        self.0.skewed(skew)
    }
}

pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A registry served in-process.
pub struct TestRegistry {
    pub running: RunningRegistry,
    pub home: RegistryHome,
    pub admin: AdminSession,
    pub ca: Certificate,
    pub config: RegistryConfig,
    /// The configuration and management listeners, held across [`Topology::stop_registry`].
    http: HeldPort,
    grpc: HeldPort,
    /// Closes connections to them at once while the registry is stopped.
    down: Option<Refuser>,
}

impl std::fmt::Debug for TestRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistry").field("grpc", &self.running.grpc_url()).finish_non_exhaustive()
    }
}

impl TestRegistry {
    /// Creates and serves instance `VN` in `dir`, approving every request automatically when
    /// `auto` is set (as an operator who pre-approved them would).
    pub async fn start(dir: &Path, clock: &TestClock, auto: bool) -> Self {
        Self::start_instance(dir, clock, auto, "VN").await
    }

    /// [`TestRegistry::start`] for another instance, e.g. a provincial `VN-NA` to federate with.
    pub async fn start_instance(dir: &Path, clock: &TestClock, auto: bool, instance: &str) -> Self {
        let approve = if auto { "true" } else { "false" };
        let toml = format!(
            r#"
            instance = "{instance}"
            data_dir = "registry"
            [http]
            listen = "127.0.0.1:0"
            [grpc]
            listen = "127.0.0.1:0"
            [globalconf]
            validity_secs = 600
            refresh_secs = 60
            [auto_approve]
            register_node = {approve}
            issue_signing_cert = {approve}
            host_subsystem = {approve}
            publish_service = true
            grant_access = true
            revoke_access = true
            "#
        );
        let path = dir.join("registry.toml");
        std::fs::write(&path, toml).expect("write registry.toml");
        let config = RegistryConfig::load(&path).expect("valid registry config");
        let reg_clock = clock.clock();
        let home = RegistryHome::new(&config.data_dir);
        let opts = InitOptions {
            instance: config.instance.clone(),
            member_classes: vec![("GOV".parse().expect("class"), "Cơ quan nhà nước".into())],
            admin_name: "Quản trị viên".into(),
            key_algorithm: KeyAlgorithm::Ed25519,
            passphrase: None,
        };
        let placeholder: SocketAddr = "127.0.0.1:0".parse().expect("address");
        drop(
            home.init(&opts, config.settings(placeholder, placeholder), reg_clock.clone())
                .expect("registry init"),
        );
        let bind = |addr| HeldPort::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let (http, grpc) = (bind(config.http.listen), bind(config.grpc.listen));
        let listen = |p: &HeldPort| p.tokio().expect("a duplicate of the registry's socket");
        let running =
            serve_on(&config, listen(&http), listen(&grpc), None, reg_clock).expect("registry serves");
        let ca = Certificate::from_pem(&std::fs::read_to_string(home.ca_cert_path()).expect("CA file"))
            .expect("CA certificate");
        let admin_id = home.admin_identity(None).expect("admin identity");
        let admin = within(AdminSession::connect(
            &running.grpc_url(),
            &admin_id,
            std::slice::from_ref(&ca),
            &config.instance,
        ))
        .await
        .expect("admin session");
        Self { running, home, admin, ca, config, http, grpc, down: None }
    }

    pub fn anchor(&self) -> Anchor {
        Anchor::from_json(&std::fs::read_to_string(self.home.anchor_path()).expect("anchor file"))
            .expect("anchor")
    }

    pub fn version(&self) -> u64 {
        self.running.registry.current().version
    }
}

/// One node of a topology.
pub struct TestNode {
    pub id: NodeId,
    pub home: NodeHome,
    pub config: NodeConfig,
    pub handle: Option<NodeHandle>,
    /// Added to the topology clock for this node only.
    pub skew: Arc<AtomicI64>,
    /// The protection the node runs with instead of the default signed one (see
    /// [`Topology::restart_with_protection`]); kept across restarts.
    pub protection: Option<Arc<dyn Protection>>,
    /// The fault-injecting proxy the node is registered behind (peers reach its peer port only
    /// through it), when the topology was built with one; see [`Topology::standard_proxied`].
    pub proxy: Option<FaultProxy>,
    /// The node's listening sockets, held across restarts; closed by [`Topology::stop`].
    ports: Option<NodePorts>,
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode").field("id", &self.id).finish_non_exhaustive()
    }
}

impl TestNode {
    /// Duplicates of the node's held sockets for its next start.
    fn listeners(&mut self) -> lienthong_node::Listeners {
        let ports = self.ports.as_mut().expect("a stopped node is not started again");
        ports.listeners(&self.config).expect("the node's listeners")
    }

    pub fn handle(&self) -> &NodeHandle {
        self.handle.as_ref().expect("the node is running")
    }

    /// The consumer side's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.handle().http.expect("an HTTP listener"))
    }

    pub fn dir(&self) -> &Path {
        self.home.dir()
    }
}

/// What one node of a topology hosts and provides.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: NodeId,
    pub subsystems: Vec<SubsystemId>,
    /// Services whose backend this node calls: (service, backend index in the topology).
    pub services: Vec<(ServiceId, usize)>,
    /// Extra TOML appended to the node's configuration.
    pub extra_toml: String,
}

/// A registry, nodes and backends.
pub struct Topology {
    pub dir: tempfile::TempDir,
    pub clock: TestClock,
    pub registry: TestRegistry,
    pub nodes: Vec<TestNode>,
    pub backends: Vec<MockBackend>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology").field("nodes", &self.nodes).finish_non_exhaustive()
    }
}

pub fn member(s: &str) -> MemberId {
    s.parse().expect("member id")
}

pub fn subsystem(s: &str) -> SubsystemId {
    s.parse().expect("subsystem id")
}

pub fn service(s: &str) -> ServiceId {
    s.parse().expect("service id")
}

pub fn node_id(s: &str) -> NodeId {
    s.parse().expect("node id")
}

/// The standard topology's names: the Government Office consumes the Ministry of Public
/// Security's population service, which two of the ministry's nodes provide.
pub mod names {
    pub const BCA: &str = "VN/GOV/000.00.00.G01";
    pub const VPCP: &str = "VN/GOV/000.00.00.G02";
    pub const DANCU: &str = "VN/GOV/000.00.00.G01/dancu";
    pub const CONG_DVC: &str = "VN/GOV/000.00.00.G02/cong-dvc";
    pub const CONG_DAN: &str = "VN/GOV/000.00.00.G01/dancu/cong-dan";
    pub const HO_TICH: &str = "VN/GOV/000.00.00.G01/dancu/ho-tich";
    pub const NODE_VPCP: &str = "VN/GOV/000.00.00.G02/ss-vpcp";
    pub const NODE_BCA_1: &str = "VN/GOV/000.00.00.G01/ss-bca-1";
    pub const NODE_BCA_2: &str = "VN/GOV/000.00.00.G01/ss-bca-2";
}

impl Topology {
    /// The standard topology: node 0 hosts the consumer `CONG_DVC`; nodes 1 and 2 both host
    /// `DANCU`, with backends 0 and 1. `CONG_DAN` is granted to `CONG_DVC`; `HO_TICH` is
    /// published but not granted.
    pub async fn standard() -> Self {
        Self::standard_with("").await
    }

    /// [`Topology::standard`] with extra TOML for every node's configuration.
    pub async fn standard_with(extra_toml: &str) -> Self {
        Self::standard_behind(extra_toml, &[]).await
    }

    /// [`Topology::standard_with`], with the provider nodes 1 and 2 registered at the address of
    /// a [`FaultProxy`] in front of their peer ports ([`Topology::proxy`]), so a test can delay,
    /// cut or black-hole the consumer's connections to them. The proxy passes traffic until told
    /// otherwise; mTLS goes through it unchanged.
    pub async fn standard_proxied(extra_toml: &str) -> Self {
        Self::standard_behind(extra_toml, &[1, 2]).await
    }

    /// The proxy node `i` is registered behind (see [`Topology::standard_proxied`]).
    pub fn proxy(&self, i: usize) -> &FaultProxy {
        self.nodes[i].proxy.as_ref().expect("the node is registered behind a fault proxy")
    }

    async fn standard_behind(extra_toml: &str, proxied: &[usize]) -> Self {
        use names::*;
        let specs = vec![
            NodeSpec {
                id: node_id(NODE_VPCP),
                subsystems: vec![subsystem(CONG_DVC)],
                services: vec![],
                extra_toml: extra_toml.into(),
            },
            NodeSpec {
                id: node_id(NODE_BCA_1),
                subsystems: vec![subsystem(DANCU)],
                services: vec![(service(CONG_DAN), 0), (service(HO_TICH), 0)],
                extra_toml: extra_toml.into(),
            },
            NodeSpec {
                id: node_id(NODE_BCA_2),
                subsystems: vec![subsystem(DANCU)],
                services: vec![(service(CONG_DAN), 1), (service(HO_TICH), 1)],
                extra_toml: extra_toml.into(),
            },
        ];
        let mut t = Self::build_behind(
            "VN",
            &[(BCA, "Bộ Công an", &["dancu"]), (VPCP, "Văn phòng Chính phủ", &["cong-dvc"])],
            specs,
            2,
            proxied,
        )
        .await;
        t.publish(&service(CONG_DAN), &node_id(NODE_BCA_1)).await;
        t.publish(&service(HO_TICH), &node_id(NODE_BCA_1)).await;
        t.grant(&service(CONG_DAN), &ClientId::Subsystem(subsystem(CONG_DVC))).await;
        t.sync().await;
        t
    }

    /// Members (id, name, subsystem codes), nodes set up through `node init`, and `backends`
    /// mock backends.
    pub async fn build(members: &[(&str, &str, &[&str])], specs: Vec<NodeSpec>, backends: usize) -> Self {
        Self::build_instance("VN", members, specs, backends).await
    }

    /// [`Topology::build`] for `instance`.
    pub async fn build_instance(
        instance: &str,
        members: &[(&str, &str, &[&str])],
        specs: Vec<NodeSpec>,
        backends: usize,
    ) -> Self {
        Self::build_behind(instance, members, specs, backends, &[]).await
    }

    /// [`Topology::build_instance`], registering the nodes whose index is in `proxied` behind a
    /// [`FaultProxy`].
    async fn build_behind(
        instance: &str,
        members: &[(&str, &str, &[&str])],
        specs: Vec<NodeSpec>,
        backends: usize,
        proxied: &[usize],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let clock = TestClock::default();
        let mut registry = TestRegistry::start_instance(dir.path(), &clock, true, instance).await;
        for (id, name, subsystems) in members {
            within(registry.admin.add_member(&member(id), name, None)).await.expect("add member");
            for s in *subsystems {
                let sub = member(id).subsystem(s.parse().expect("subsystem code"));
                within(registry.admin.add_subsystem(&sub, &format!("{name} / {s}")))
                    .await
                    .expect("add subsystem");
            }
        }
        let mut mocks = Vec::new();
        for i in 0..backends {
            mocks.push(MockBackend::start(&format!("backend-{i}")).await);
        }
        let mut nodes = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let proxy = proxied.contains(&i);
            nodes.push(Self::init_node(dir.path(), &registry, &clock, &mocks, spec, proxy).await);
        }
        let http = Client::builder(TokioExecutor::new()).build_http();
        Self { dir, clock, registry, nodes, backends: mocks, http }
    }

    async fn init_node(
        dir: &Path,
        registry: &TestRegistry,
        clock: &TestClock,
        mocks: &[MockBackend],
        spec: NodeSpec,
        proxied: bool,
    ) -> TestNode {
        let node_dir = dir.join(spec.id.code.as_str());
        let mut toml = format!(
            "data_dir = {:?}\n[consumer]\nhttp = \"127.0.0.1:0\"\n[peer]\nlisten = \"127.0.0.1:0\"\n[log]\ncheckpoint_interval_secs = 3600\n",
            node_dir.display().to_string()
        );
        for (svc, backend) in &spec.services {
            toml.push_str(&format!("[[service]]\nid = \"{svc}\"\nurl = \"{}\"\n", mocks[*backend].url()));
        }
        toml.push_str(&spec.extra_toml);
        let config = NodeConfig::parse(&toml).unwrap_or_else(|e| panic!("node config: {e}\n{toml}"));
        let ports = NodePorts::bind(&config).expect("bind node listeners");
        let peer_addr = ports.peer_addr();
        // Restarts keep the peer port, so the proxy's upstream stays right.
        let proxy = match proxied {
            true => Some(FaultProxy::start(peer_addr).await.expect("start a fault proxy")),
            false => None,
        };
        let peer_url = proxy.as_ref().map_or_else(|| format!("https://{peer_addr}"), FaultProxy::https_url);
        let home = NodeHome::new(&node_dir);
        let mut opts = NodeInitOptions::new(registry.anchor(), spec.id.clone(), vec![peer_url]);
        opts.subsystems = spec.subsystems.clone();
        opts.wait = Some(Duration::from_secs(20));
        opts.max_poll_interval = Duration::from_millis(50);
        opts.clock = clock.clock();
        let outcome = within(home.init(&opts)).await.expect("node init");
        assert!(outcome.is_complete(), "node init incomplete: {outcome:?}");
        let skew = Arc::new(AtomicI64::new(0));
        let mut node = TestNode {
            id: spec.id,
            home,
            config,
            handle: None,
            skew,
            protection: None,
            proxy,
            ports: Some(ports),
        };
        Self::start_on(&mut node, clock).await;
        node
    }

    async fn start_on(node: &mut TestNode, clock: &TestClock) {
        let listeners = node.listeners();
        let keys = node.home.open(None).expect("open node keys");
        let options = StartOptions {
            clock: Some(clock.for_node(node.skew.clone())),
            conf_poll_interval: Some(Duration::from_secs(3600)),
            protection: node.protection.clone(),
            ..Default::default()
        };
        let handle = within(NodeHandle::start(node.config.clone(), keys, listeners, options))
            .await
            .expect("node starts");
        node.handle = Some(handle);
    }

    /// Stops node `i` and starts it again on the same ports and directory.
    pub async fn restart(&mut self, i: usize) {
        self.restart_after(i, |_| {}).await;
    }

    /// Stops node `i` (gracefully, as on SIGTERM), runs `between` on its data directory (to
    /// damage, move or remount what the restart must cope with), and starts it again on the
    /// same ports and directory.
    pub async fn restart_after(&mut self, i: usize, between: impl FnOnce(&Path)) {
        let node = &mut self.nodes[i];
        let old = node.handle.take().expect("running");
        within(old.shutdown()).await;
        between(&node.config.data_dir);
        let clock = self.clock.clone();
        Self::start_on(node, &clock).await;
        self.sync().await;
    }

    /// Restarts node `i` on the same ports and directory with `protection` in place of the
    /// default signed one (`StartOptions::protection`; `None`: back to the default); later
    /// restarts keep it.
    pub async fn restart_with_protection(&mut self, i: usize, protection: Option<Arc<dyn Protection>>) {
        self.nodes[i].protection = protection;
        self.restart(i).await;
    }

    /// Stops node `i` (its ports close; peers fail over).
    pub async fn stop(&mut self, i: usize) {
        if let Some(h) = self.nodes[i].handle.take() {
            within(h.shutdown()).await;
        }
        self.nodes[i].ports = None;
    }

    /// Publishes the registry's current configuration to every running node and waits until
    /// their peer transport uses it.
    pub async fn sync(&self) {
        let version = self.registry.running.registry.publish().expect("publish").version;
        for n in self.nodes.iter().filter(|n| n.handle.is_some()) {
            let h = n.handle();
            within(h.conf_client().refresh_now()).await.expect("refresh the configuration");
            within(h.wait_for_conf(version)).await;
        }
    }

    /// Publishes `service` (REST, every path), signed by its member's key held on `node`.
    pub async fn publish(&self, id: &ServiceId, node: &NodeId) {
        self.publish_with(id, node, false).await;
    }

    /// Grants `client` the whole of `service`; returns the grant id.
    pub async fn grant(&mut self, service: &ServiceId, client: &ClientId) -> String {
        self.grant_endpoints(service, client, &[]).await
    }

    /// Grants `client` the given (method, path pattern) pairs of `service`.
    pub async fn grant_endpoints(
        &mut self,
        service: &ServiceId,
        client: &ClientId,
        endpoints: &[(&str, &str)],
    ) -> String {
        let g = NewGrant {
            service: service.clone(),
            to: GrantTo::Client(client.clone()),
            endpoints: endpoints.iter().map(|(m, p)| ((*m).into(), (*p).into())).collect(),
            legal_basis: "Nghị định 47/2020/NĐ-CP".into(),
            valid_from_ms: millis(self.clock.now()) - 60_000,
            valid_until_ms: 0,
        };
        within(self.registry.admin.add_grant(&g)).await.expect("add grant").grant_id
    }

    pub async fn revoke(&mut self, grant_id: &str) {
        within(self.registry.admin.revoke_grant(grant_id, "test")).await.expect("revoke grant");
    }

    /// Sends `req` (URI relative to node `i`'s consumer side, e.g. `/r1/...`) and reads the whole
    /// answer.
    pub async fn call(&self, i: usize, req: Request<Full<Bytes>>) -> Response<Bytes> {
        let (mut parts, body) = req.into_parts();
        let pq = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
        parts.uri = format!("{}{pq}", self.nodes[i].url()).parse().expect("URI");
        let resp = within(self.http.request(Request::from_parts(parts, body))).await.expect("HTTP exchange");
        let (parts, body) = resp.into_parts();
        let bytes = within(body.collect()).await.expect("response body").to_bytes();
        Response::from_parts(parts, bytes)
    }

    /// A request from the standard consumer `CONG_DVC` to `path` (which starts with `/r1/`).
    pub fn r1(method: &str, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(path)
            .header("x-road-client", names::CONG_DVC)
            .body(Full::new(body.into()))
            .expect("request")
    }

    /// The records of node `i`'s log, decoded, in order.
    pub fn records(&self, i: usize) -> Vec<lienthong_proto::msglog::v1::LogRecord> {
        let log = self.nodes[i].handle().log();
        let size = log.head().size;
        (0..size)
            .map(|n| {
                let bytes = log.store().record(n).expect("record").expect("record exists");
                lienthong_msglog::record::decode_record(&bytes).expect("decodable record")
            })
            .collect()
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir().to_path_buf()
    }

    /// Stops every node and the registry.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
        let Self { registry, .. } = self;
        within(registry.running.shutdown()).await;
    }
}

impl Topology {
    /// Publishes `service` again like [`Topology::publish`], enabled or `disabled`: a newer
    /// publication replaces the older one, so this is how a test disables (or re-enables) a
    /// service in the next global configuration.
    pub async fn publish_with(&self, id: &ServiceId, node: &NodeId, disabled: bool) {
        let n = self.nodes.iter().find(|n| &n.id == node).expect("node in topology");
        let keys = n.home.open(None).expect("node keys");
        let (key, cert) = keys.signing.get(&id.subsystem.member).expect("the node holds the member's key");
        let service = gc::Service {
            id: Some(id.into()),
            r#type: gc::ServiceType::Rest as i32,
            description: format!("{} (test)", id.code),
            disabled,
            endpoints: vec![],
        };
        let request = pb::ManagementRequest {
            request_id: format!(
                "publish-{}-{}",
                PUBLISHED.fetch_add(1, Ordering::SeqCst),
                millis(self.clock.now())
            ),
            created_at_ms: millis(self.clock.now()),
            kind: Some(pb::management_request::Kind::PublishService(pb::PublishService {
                service: Some(service),
                description_document: Vec::new(),
            })),
        };
        let signed = sign_request(&request, key, Some(cert)).expect("sign");
        let status = self.registry.running.registry.submit(signed).expect("submit");
        assert_eq!(status.state, pb::RequestState::Approved as i32, "publication approved: {status:?}");
    }
}

// ----- fault injection: a failing log store, a registry outage --------------------------------

/// The switch of a [`FailingStore`]: while set, every write to the log fails, as on a full disk.
#[derive(Debug, Clone, Default)]
pub struct LogFault(Arc<std::sync::atomic::AtomicBool>);

impl LogFault {
    pub fn set(&self, failing: bool) {
        self.0.store(failing, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A log store that delegates to a real one but refuses every write while its [`LogFault`] is
/// set, before touching the real store (as a write refused with `ENOSPC` up front would), so
/// clearing the switch is "space returned". Reads always go through.
pub struct FailingStore {
    inner: Arc<dyn lienthong_msglog::LogStore>,
    fault: LogFault,
}

impl std::fmt::Debug for FailingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailingStore").field("failing", &self.fault.is_set()).finish_non_exhaustive()
    }
}

impl FailingStore {
    pub fn new(inner: Arc<dyn lienthong_msglog::LogStore>, fault: LogFault) -> Self {
        Self { inner, fault }
    }

    fn write(&self) -> Result<(), lienthong_msglog::LogError> {
        if self.fault.is_set() {
            return Err(lienthong_msglog::LogError::Storage(
                "injected fault: no space left on device (os error 28)".into(),
            ));
        }
        Ok(())
    }
}

impl lienthong_msglog::LogStore for FailingStore {
    fn size(&self) -> Result<u64, lienthong_msglog::LogError> {
        self.inner.size()
    }

    fn append(
        &self,
        first: u64,
        entries: &[lienthong_msglog::Entry],
        nodes: &[(u8, u64, lienthong_msglog::merkle::Hash)],
    ) -> Result<(), lienthong_msglog::LogError> {
        self.write()?;
        self.inner.append(first, entries, nodes)
    }

    fn record(&self, index: u64) -> Result<Option<Vec<u8>>, lienthong_msglog::LogError> {
        self.inner.record(index)
    }

    fn node(
        &self,
        level: u8,
        index: u64,
    ) -> Result<Option<lienthong_msglog::merkle::Hash>, lienthong_msglog::LogError> {
        self.inner.node(level, index)
    }

    fn by_exchange(&self, message_id: &str) -> Result<Vec<u64>, lienthong_msglog::LogError> {
        self.inner.by_exchange(message_id)
    }

    fn by_time(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<u64>, lienthong_msglog::LogError> {
        self.inner.by_time(from_ms, to_ms, limit)
    }

    fn by_client(&self, client: &str) -> Result<Vec<u64>, lienthong_msglog::LogError> {
        self.inner.by_client(client)
    }

    fn by_service(&self, service: &str) -> Result<Vec<u64>, lienthong_msglog::LogError> {
        self.inner.by_service(service)
    }

    fn put_checkpoint(
        &self,
        size: u64,
        signed: &lienthong_proto::msglog::v1::SignedCheckpoint,
    ) -> Result<(), lienthong_msglog::LogError> {
        self.write()?;
        self.inner.put_checkpoint(size, signed)
    }

    fn checkpoints(
        &self,
    ) -> Result<Vec<lienthong_proto::msglog::v1::SignedCheckpoint>, lienthong_msglog::LogError> {
        self.inner.checkpoints()
    }

    fn put_certificate(&self, der: &[u8]) -> Result<(), lienthong_msglog::LogError> {
        self.write()?;
        self.inner.put_certificate(der)
    }

    fn certificates(&self) -> Result<Vec<Vec<u8>>, lienthong_msglog::LogError> {
        self.inner.certificates()
    }

    fn prune(&self, before: u64) -> Result<u64, lienthong_msglog::LogError> {
        self.write()?;
        self.inner.prune(before)
    }

    /// Fails while the fault is set, as a store on a still-full disk does.
    fn repair(&self) -> Result<(), lienthong_msglog::LogError> {
        self.write()?;
        self.inner.repair()
    }
}

impl Topology {
    /// Restarts node `i` on the same ports and directory with its durable log (the same segment
    /// store it had) behind a [`FailingStore`]; returns the store's switch, initially off.
    pub async fn restart_with_log_fault(&mut self, i: usize) -> LogFault {
        let fault = LogFault::default();
        self.restart_with_options(i, Some(fault.clone()), Duration::from_secs(3600)).await;
        fault
    }

    /// Restarts node `i` on the same ports and directory with its configuration client polling
    /// the registry `every` (the test kit's nodes otherwise poll hourly and rely on
    /// [`Topology::sync`]), to watch it recover by itself.
    pub async fn restart_polling(&mut self, i: usize, every: Duration) {
        self.restart_with_options(i, None, every).await;
    }

    async fn restart_with_options(&mut self, i: usize, log_fault: Option<LogFault>, poll: Duration) {
        let node = &mut self.nodes[i];
        let old = node.handle.take().expect("running");
        within(old.shutdown()).await;
        let listeners = node.listeners();
        let log_store = log_fault.map(|fault| {
            let real = lienthong_msglog::SegmentStore::open_dir(&node.config.data_dir.join("log"))
                .expect("reopen the node's log");
            Arc::new(FailingStore::new(Arc::new(real), fault)) as Arc<dyn lienthong_msglog::LogStore>
        });
        let keys = node.home.open(None).expect("open node keys");
        let options = StartOptions {
            clock: Some(self.clock.for_node(node.skew.clone())),
            conf_poll_interval: Some(poll),
            log_store,
            protection: node.protection.clone(),
            ..Default::default()
        };
        let handle = within(NodeHandle::start(node.config.clone(), keys, listeners, options))
            .await
            .expect("node starts");
        node.handle = Some(handle);
        self.sync().await;
    }

    /// Takes the registry off the network: connections to its configuration and management
    /// addresses are closed at once, unanswered, until [`Topology::restart_registry`] (the kit
    /// holds their sockets, so no other process can take the ports meanwhile). The registry stays
    /// open in-process (`registry.running.registry` still answers, serving meanwhile on ports no
    /// node knows), so the test can change it while it is "down"; [`Topology::sync`] fails
    /// meanwhile.
    pub async fn stop_registry(&mut self) {
        let r = &mut self.registry;
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let (http, grpc) =
            (bind().await.expect("bind a loopback port"), bind().await.expect("bind a loopback port"));
        let parked = Self::serve_registry(r, http, grpc);
        let old = std::mem::replace(&mut r.running, parked);
        within(old.shutdown()).await;
        r.down = Some(Refuser::start(&[&r.http, &r.grpc]).expect("hold the registry's sockets"));
    }

    /// Serves the registry again on the sockets it had before [`Topology::stop_registry`], with
    /// a freshly signed configuration (as a registry opening its store publishes one). Nodes are
    /// not told: their next poll (or [`Topology::sync`]) reaches it.
    pub async fn restart_registry(&mut self) {
        let r = &mut self.registry;
        if let Some(down) = r.down.take() {
            within(down.stop()).await;
        }
        let listen = |p: &HeldPort| p.tokio().expect("a duplicate of the registry's socket");
        let back = Self::serve_registry(r, listen(&r.http), listen(&r.grpc));
        back.registry.publish().expect("publish");
        let parked = std::mem::replace(&mut r.running, back);
        within(parked.shutdown()).await;
    }

    fn serve_registry(
        r: &TestRegistry,
        http: tokio::net::TcpListener,
        grpc: tokio::net::TcpListener,
    ) -> RunningRegistry {
        let keys = r.home.dir().join("keys");
        let read = |name: &str| std::fs::read_to_string(keys.join(name)).expect("registry TLS file");
        let tls = lienthong_pki::tls::TlsIdentity {
            chain: vec![Certificate::from_pem(&read("tls.pem")).expect("TLS certificate"), r.ca.clone()],
            key: Arc::new(lienthong_pki::PrivateKey::from_pem(&read("tls.key"), None).expect("TLS key")),
        };
        lienthong_registry::start(r.running.registry.clone(), tls, http, grpc, &r.config)
            .expect("registry serves")
    }
}

impl Topology {
    /// Changes node `i`'s configuration and restarts it with it, on the same HTTP and peer ports
    /// and directory: for what `extra_toml` cannot express, such as an HTTPS listener (the
    /// `[consumer]` table is already written) or settings of a `[[service]]` the topology made
    /// (`openapi`). Settings are not re-validated; set them as `NodeConfig::parse` would accept.
    pub async fn reconfigure(&mut self, i: usize, change: impl FnOnce(&mut NodeConfig)) {
        change(&mut self.nodes[i].config);
        self.restart(i).await;
    }

    /// Node `i`'s HTTPS consumer address, when it has one.
    pub fn https_addr(&self, i: usize) -> Option<SocketAddr> {
        self.nodes[i].handle().https
    }
}

/// One request over HTTPS to `addr` (HTTP/2 when `h2`, else HTTP/1.1), as an information system
/// or an auditor makes it with `config` (see `lienthong_pki::is_client_tls`); the whole answer,
/// or what failed (a refused handshake reads `rejected: ...`).
pub async fn https(
    addr: SocketAddr,
    mut config: rustls::ClientConfig,
    h2: bool,
    req: Request<Full<Bytes>>,
) -> Result<Response<Bytes>, String> {
    use hyper_util::rt::TokioIo;
    if h2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    let exchange = async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // Any syntactically valid name: the verifier checks the node id instead.
        let name =
            rustls::pki_types::ServerName::try_from("node.lienthong.invalid").map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(
            |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(r) => lienthong_pki::tls::peer_rejection(r)
                    .map_or_else(|| r.to_string(), |p| format!("rejected: {p}")),
                None => e.to_string(),
            },
        )?;
        let io = TokioIo::new(stream);
        let resp = if h2 {
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(req).await
        } else {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(req).await
        }
        .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Response::from_parts(parts, bytes))
    };
    within(exchange).await
}

impl Topology {
    /// One checkpoint round of node `i`: signed by the node and witnessed by the registry
    /// through the node's own `RegistryWitness`, as its checkpointer does (hourly here).
    pub async fn witness(&self, i: usize) -> lienthong_proto::msglog::v1::SignedCheckpoint {
        let node = &self.nodes[i];
        let keys = node.home.open(None).expect("node keys");
        let signer = lienthong_msglog::CheckpointSigner {
            origin: keys.node.to_string(),
            key: keys.tls.key.clone(),
            certificate: keys.tls.chain[0].clone(),
        };
        let witness =
            lienthong_node::RegistryWitness::new(node.handle().conf_subscription(), keys.anchor.clone());
        within(lienthong_msglog::witness::checkpoint_and_witness(
            node.handle().log(),
            &signer,
            &witness,
            millis(self.clock.now()),
        ))
        .await
        .expect("a witnessed checkpoint")
    }
}
