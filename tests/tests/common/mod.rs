//! Shared set-up of the end-to-end tests: a registry served in-process through the same `init`
//! and `serve` the CLI runs, with a clock the test moves.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lienthong_globalconf::Anchor;
use lienthong_node::{Clock as NodeClock, ConfClient, ConfClientConfig};
use lienthong_pki::{Certificate, KeyAlgorithm};
use lienthong_proto::registry::v1 as pb;
use lienthong_registry::admin::AdminSession;
use lienthong_registry::{InitOptions, RegistryConfig, RegistryHome, RunningRegistry, serve};

pub const STEP: Duration = Duration::from_secs(20);

/// A clock both sides share, so expiry can be reached without waiting.
#[derive(Clone, Default)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.0.load(Ordering::SeqCst) as u64)
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("step finished in time")
}

pub struct World {
    pub _dir: tempfile::TempDir,
    pub clock: TestClock,
    pub running: RunningRegistry,
    pub home: RegistryHome,
    pub admin: AdminSession,
    pub ca: Certificate,
}

pub async fn start_registry() -> World {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
        instance = "VN"
        data_dir = "registry"
        [http]
        listen = "127.0.0.1:0"
        [grpc]
        listen = "127.0.0.1:0"
        [globalconf]
        validity_secs = 600
        refresh_secs = 60
    "#;
    let path = dir.path().join("registry.toml");
    std::fs::write(&path, toml).unwrap();
    let config = RegistryConfig::load(&path).unwrap();
    let clock = TestClock::default();
    let c = clock.clone();
    let reg_clock: lienthong_registry::Clock = Arc::new(move || c.now());
    let home = RegistryHome::new(&config.data_dir);
    let opts = InitOptions {
        instance: config.instance.clone(),
        member_classes: vec![("GOV".parse().unwrap(), "State bodies".into())],
        admin_name: "Quản trị viên".into(),
        key_algorithm: KeyAlgorithm::Ed25519,
        passphrase: None,
    };
    let placeholder: SocketAddr = "127.0.0.1:0".parse().unwrap();
    drop(home.init(&opts, config.settings(placeholder, placeholder), reg_clock.clone()).unwrap());
    let running = within(serve(&config, None, reg_clock)).await.unwrap();
    let ca = Certificate::from_pem(&std::fs::read_to_string(home.ca_cert_path()).unwrap()).unwrap();
    let admin_id = home.admin_identity(None).unwrap();
    let admin = within(AdminSession::connect(
        &running.grpc_url(),
        &admin_id,
        std::slice::from_ref(&ca),
        &config.instance,
    ))
    .await
    .unwrap();
    World { _dir: dir, clock, running, home, admin, ca }
}

pub fn anchor_with_urls(home: &RegistryHome, urls: Vec<String>) -> Anchor {
    let mut anchor = Anchor::from_json(&std::fs::read_to_string(home.anchor_path()).unwrap()).unwrap();
    anchor.conf_urls = urls;
    anchor
}

pub fn conf_client(anchor: Anchor, state: &std::path::Path, clock: &TestClock) -> ConfClient {
    let mut cfg = ConfClientConfig::new(anchor, state);
    let c = clock.clone();
    cfg.clock = NodeClock::from_fn(move || c.now());
    ConfClient::open(cfg).unwrap()
}

pub fn request(id: &str, kind: pb::management_request::Kind) -> pb::ManagementRequest {
    let created = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    pb::ManagementRequest { request_id: id.into(), created_at_ms: created, kind: Some(kind) }
}
