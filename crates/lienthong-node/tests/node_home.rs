//! `NodeHome::init` against a real registry served in-process (TLS gRPC on 127.0.0.1:0), with
//! the operator's decisions made through the admin session the CLI uses.

use std::path::Path;
use std::time::{Duration, SystemTime};

use lienthong_confclient::CONF_FILE;
use lienthong_globalconf::{Anchor, verify};
use lienthong_node::home::{HomeError, InitOptions, InitOutcome, NodeHome, StepState, Target};
use lienthong_pki::tls::{PeerRole, TrustPolicy};
use lienthong_pki::{Certificate, Identity, KeyAlgorithm};
use lienthong_proto::registry::v1 as pb;
use lienthong_registry::admin::AdminSession;
use lienthong_registry::{RegistryConfig, RegistryHome, RunningRegistry, serve};
use lienthong_types::{MemberId, NodeId, SubsystemId};
use tokio::task::JoinHandle;

/// Bounds every step; generous for a loaded CI machine, never waited out on success.
const STEP: Duration = Duration::from_secs(20);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("step finished in time")
}

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap_or_else(|e| panic!("{s}: {e:?}"))
}

struct World {
    dir: tempfile::TempDir,
    running: RunningRegistry,
    admin: AdminSession,
    anchor: Anchor,
    member: MemberId,
    subsystem: SubsystemId,
    node: NodeId,
}

/// A registry initialised and served the way the CLI does it, with member G01 and its
/// subsystem `dancu` added by the administrator.
async fn start_registry() -> World {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
        instance = "VN"
        data_dir = "registry"
        [http]
        listen = "127.0.0.1:0"
        [grpc]
        listen = "127.0.0.1:0"
    "#;
    let path = dir.path().join("registry.toml");
    std::fs::write(&path, toml).unwrap();
    let config = RegistryConfig::load(&path).unwrap();
    let home = RegistryHome::new(&config.data_dir);
    let opts = lienthong_registry::InitOptions {
        instance: config.instance.clone(),
        member_classes: vec![(id("GOV"), "State bodies".into())],
        admin_name: "admin".into(),
        key_algorithm: KeyAlgorithm::Ed25519,
        passphrase: None,
    };
    let clock = lienthong_registry::system_clock();
    let placeholder = "127.0.0.1:0".parse().unwrap();
    drop(home.init(&opts, config.settings(placeholder, placeholder), clock.clone()).unwrap());
    // `serve` rewrites the anchor with the configuration URL it bound.
    let running = within(serve(&config, None, clock)).await.unwrap();
    let anchor = Anchor::from_json(&std::fs::read_to_string(home.anchor_path()).unwrap()).unwrap();
    let ca = Certificate::from_pem(&std::fs::read_to_string(home.ca_cert_path()).unwrap()).unwrap();
    let admin_id = home.admin_identity(None).unwrap();
    let mut admin =
        within(AdminSession::connect(&running.grpc_url(), &admin_id, &[ca], &config.instance)).await.unwrap();
    let member: MemberId = id("VN/GOV/000.00.00.G01");
    let subsystem: SubsystemId = id("VN/GOV/000.00.00.G01/dancu");
    within(admin.add_member(&member, "Ministry of Public Security", None)).await.unwrap();
    within(admin.add_subsystem(&subsystem, "Population database")).await.unwrap();
    let node = id("VN/GOV/000.00.00.G01/ss1");
    World { dir, running, admin, anchor, member, subsystem, node }
}

impl World {
    fn home(&self) -> NodeHome {
        NodeHome::new(self.dir.path().join("node"))
    }

    fn options(&self) -> InitOptions {
        let mut o =
            InitOptions::new(self.anchor.clone(), self.node.clone(), vec!["https://ss1.test:5500".into()]);
        o.subsystems = vec![self.subsystem.clone()];
        o.wait = Some(STEP);
        // Short pauses between status checks: the test approves within milliseconds.
        o.max_poll_interval = Duration::from_millis(50);
        o
    }

    /// Waits for the next pending request, checks its kind and decides it.
    async fn decide_next(&mut self, prefix: &str, approve: bool, reason: &str) -> String {
        let request_id = within(async {
            loop {
                let pending = self.admin.list_requests(Some(pb::RequestState::Pending)).await.unwrap();
                if let Some(r) = pending.first() {
                    break r.status.as_ref().unwrap().request_id.clone();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(request_id.starts_with(prefix), "expected a {prefix} request, got {request_id}");
        within(self.admin.decide(&request_id, approve, reason)).await.unwrap();
        request_id
    }
}

fn spawn_init(home: &NodeHome, opts: &InitOptions) -> JoinHandle<Result<InitOutcome, HomeError>> {
    let (home, opts) = (home.clone(), opts.clone());
    tokio::spawn(async move { home.init(&opts).await })
}

fn states(outcome: &InitOutcome) -> Vec<StepState> {
    outcome.steps.iter().map(|s| s.state).collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_waits_for_each_approval_and_open_gives_working_keys() {
    let mut w = start_registry().await;
    let home = w.home();
    let opts = w.options();
    let init = spawn_init(&home, &opts);
    for prefix in ["register-node-", "signing-cert-", "host-subsystem-"] {
        // The request is waiting for the operator, and so is init.
        let pending = within(async {
            loop {
                let p = w.admin.list_requests(Some(pb::RequestState::Pending)).await.unwrap();
                if !p.is_empty() {
                    break p;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert_eq!(pending.len(), 1);
        assert!(!init.is_finished(), "init returned before {prefix} was decided");
        w.decide_next(prefix, true, "checked").await;
    }
    let outcome = within(init).await.unwrap().expect("init completes");
    assert!(outcome.is_complete());
    assert_eq!(outcome.registry_url, w.running.grpc_url(), "the URL comes from the configuration");
    assert_eq!(
        outcome.steps.iter().map(|s| s.target.clone()).collect::<Vec<_>>(),
        [
            Target::RegisterNode(w.node.clone()),
            Target::SigningCert(w.member.clone()),
            Target::HostSubsystem(w.subsystem.clone())
        ]
    );

    let keys = home.open(None).expect("open");
    assert_eq!(keys.node, w.node);
    assert_eq!(keys.anchor, w.anchor);
    assert_eq!(keys.subsystems.iter().collect::<Vec<_>>(), [&w.subsystem]);
    let auth = &keys.tls.chain[0];
    assert_eq!(auth.identity().unwrap(), Identity::Node(w.node.clone()));
    let msg = b"lienthong test message";
    let sig = keys.tls.key.sign(msg).unwrap();
    auth.info().unwrap().public_key.verify(msg, &sig).expect("auth key matches its certificate");

    let (sign_key, sign_cert) = &keys.signing[&w.member];
    assert_eq!(sign_cert.identity().unwrap(), Identity::Member(w.member.clone()));
    let sig = sign_key.sign(msg).unwrap();
    sign_cert.info().unwrap().public_key.verify(msg, &sig).expect("signing key matches its certificate");

    let (nonce, sealed) = keys.body_key.seal(b"body", b"record 1").unwrap();
    assert_eq!(keys.body_key.open(&nonce, &sealed, b"record 1").unwrap(), b"body");

    // The registry lists the node with this certificate, hosting the subsystem.
    let nodes = within(w.admin.list_nodes()).await.unwrap();
    let listed = nodes.iter().find(|n| n.id == Some((&w.node).into())).expect("node listed");
    assert_eq!(listed.auth_cert_sha256, auth.fingerprint().0);
    assert_eq!(listed.hosted_subsystems, [(&w.subsystem).into()]);

    // The configuration left in DIR/conf already pins this node to this certificate.
    let conf_bytes = std::fs::read(home.conf_dir().join(CONF_FILE)).unwrap();
    let conf = verify(&conf_bytes, &w.anchor, SystemTime::now()).unwrap().conf;
    let policy = TrustPolicy::new(&conf.approved_cas, conf.registered_nodes()).unwrap();
    let peer = policy.verify_peer(auth.der(), &[], PeerRole::Client, None, SystemTime::now()).unwrap();
    assert_eq!(peer.node(), &w.node);

    #[cfg(unix)]
    for key in [home.auth_key_path(), home.signing_key_path(&w.member), home.body_key_path()] {
        assert_eq!(mode(&key), 0o600, "{}", key.display());
    }
    assert!(home.log_dir().is_dir());

    let again = within(home.init(&opts)).await.unwrap_err();
    assert!(matches!(again, HomeError::AlreadyInitialised { .. }), "{again}");
    assert!(again.to_string().contains("refusing to set it up again"), "{again}");
    w.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_registration_reports_the_operators_reason() {
    let mut w = start_registry().await;
    let home = w.home();
    let init = spawn_init(&home, &w.options());
    let request_id = w.decide_next("register-node-", false, "address is not on the government network").await;
    let err = within(init).await.unwrap().unwrap_err();
    match &err {
        HomeError::Rejected { request_id: r, reason, .. } => {
            assert_eq!(r, &request_id);
            assert_eq!(reason, "address is not on the government network");
        }
        other => panic!("expected a rejection, got {other}"),
    }
    assert!(err.to_string().contains("address is not on the government network"), "{err}");

    let err = home.open(None).unwrap_err();
    assert!(matches!(err, HomeError::Incomplete { .. }), "{err}");

    // Nothing was approved, so the operator may correct the arguments: a new request goes out.
    let mut corrected = w.options();
    corrected.addresses = vec!["https://ss1.gov.test:5500".into()];
    corrected.wait = None;
    let outcome = within(home.init(&corrected)).await.expect("a new registration");
    let resent = outcome.steps[0].request_id.clone().expect("sent");
    assert_ne!(resent, request_id);
    assert_eq!(outcome.steps[0].state, StepState::Pending);
    let pending = within(w.admin.list_requests(Some(pb::RequestState::Pending))).await.unwrap();
    let Some(pb::management_request::Kind::RegisterNode(r)) =
        pending[0].request.as_ref().and_then(|r| r.kind.clone())
    else {
        panic!("expected the registration");
    };
    assert_eq!(r.addresses[0].url, "https://ss1.gov.test:5500");
    w.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_that_timed_out_resumes_where_it_stopped() {
    let mut w = start_registry().await;
    let home = w.home();
    let mut opts = w.options();
    opts.passphrase = Some(b"correct horse battery staple".to_vec());
    opts.wait = Some(Duration::from_millis(300));
    let first = within(home.init(&opts)).await.expect("a timeout is not an error");
    assert!(!first.is_complete());
    assert_eq!(states(&first), [StepState::Pending, StepState::NotSent, StepState::NotSent]);
    let registration = first.steps[0].request_id.clone().expect("registration sent");
    let recorded = std::fs::read_to_string(home.state_path()).unwrap();
    assert!(recorded.contains(&registration), "the request is recorded for the next run");

    let err = home.open(opts.passphrase.as_deref()).unwrap_err();
    assert!(err.to_string().contains(&registration), "names what it waits for: {err}");
    let mut other = opts.clone();
    other.node = id("VN/GOV/000.00.00.G01/ss2");
    let err = within(home.init(&other)).await.unwrap_err();
    assert!(matches!(err, HomeError::Mismatch { .. }), "{err}");

    // Approved while no init was running; the next run picks the approval up.
    within(w.admin.decide(&registration, true, "checked")).await.unwrap();
    opts.wait = Some(STEP);
    let init = spawn_init(&home, &opts);
    w.decide_next("signing-cert-", true, "checked").await;
    w.decide_next("host-subsystem-", true, "checked").await;
    let outcome = within(init).await.unwrap().expect("resumed init completes");
    assert!(outcome.is_complete());
    assert_eq!(outcome.steps[0].request_id.as_deref(), Some(registration.as_str()), "not sent again");
    let all = within(w.admin.list_requests(None)).await.unwrap();
    assert_eq!(all.len(), 3, "one request per step");

    // The keys are encrypted: without the passphrase they do not open, and the error names the file.
    let err = home.open(None).unwrap_err();
    assert!(err.to_string().contains("auth.key"), "{err}");
    let keys = home.open(opts.passphrase.as_deref()).expect("open with the passphrase");
    assert_eq!(keys.signing.len(), 1);
    w.running.shutdown().await;
}
