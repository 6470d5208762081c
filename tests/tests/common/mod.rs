//! Shared set-up of the end-to-end tests. Here, the registry tests': the testkit's registry
//! (served in-process through the same `init` and `serve` the CLI runs), with a clock the test
//! moves; in `node`, the fault tests' helpers for a running topology.

#![allow(dead_code, unreachable_pub)]

pub mod node;

use std::time::{SystemTime, UNIX_EPOCH};

use lienthong_confclient::{Clock as NodeClock, ConfClient, ConfClientConfig};
use lienthong_globalconf::Anchor;
use lienthong_pki::Certificate;
use lienthong_proto::registry::v1 as pb;
use lienthong_registry::admin::AdminSession;
use lienthong_registry::{RegistryHome, RunningRegistry};
use lienthong_testkit::TestRegistry;

#[allow(unused_imports)] // Not every test that uses this module needs both.
pub use lienthong_testkit::{TestClock, within};

pub struct World {
    pub _dir: tempfile::TempDir,
    pub clock: TestClock,
    pub running: RunningRegistry,
    pub home: RegistryHome,
    pub admin: AdminSession,
    pub ca: Certificate,
}

/// A registry whose identity-bearing requests wait for the operator (the defaults).
pub async fn start_registry() -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::default();
    let r = TestRegistry::start(dir.path(), &clock, false).await;
    World { _dir: dir, clock, running: r.running, home: r.home, admin: r.admin, ca: r.ca }
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
