//! The registry's state machine driven the way nodes and members drive it: signed management
//! requests, operator decisions, and the signed configuration they end up in. Every refusal is
//! checked by its stable code and by the registry state being exactly as before.
//!
//! Hermetic: a temporary directory, Ed25519 keys made in memory, and a clock the tests move.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lienthong_globalconf::{
    Anchor, ConfError, ConfKey, MemberStatus, VerifiedConf, sign_request, to_millis, verify,
};
use lienthong_pki::{Certificate, CertificateAuthority, Csr, Identity, KeyAlgorithm, PrivateKey, Validity};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_registry::{AutoApprove, Clock, Registry, RegistryError, Settings, SigningKey};
use lienthong_types::{ClientId, InstanceId, MemberClass, MemberId, NodeId, ServiceId, SubsystemId};
use pb::management_request::Kind;
use prost::Message;

/// The tests' starting time: 2030-03-17, in milliseconds.
const T0_MS: u64 = 1_900_000_000_000;
const CONF_VALIDITY: Duration = Duration::from_secs(600);

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap_or_else(|e| panic!("{s}: {e:?}"))
}

fn key() -> PrivateKey {
    PrivateKey::generate(KeyAlgorithm::Ed25519).expect("key")
}

/// A second handle on the same key (keys are deliberately not `Clone`).
fn same_key(k: &PrivateKey) -> PrivateKey {
    PrivateKey::from_pem(&k.to_pem(), None).expect("key round trip")
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn new() -> Self {
        Self(Arc::new(AtomicU64::new(T0_MS)))
    }
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
    fn clock(&self) -> Clock {
        let t = self.0.clone();
        Clock::from_fn(move || UNIX_EPOCH + Duration::from_millis(t.load(Ordering::SeqCst)))
    }
}

fn settings() -> Settings {
    Settings {
        instance: id("VN"),
        conf_validity: CONF_VALIDITY,
        conf_urls: vec!["http://registry.test/conf".into()],
        registry_urls: vec!["https://registry.test:4443".into()],
        auto_approve: AutoApprove::default(),
        cert_validity: Validity::days(365),
    }
}

/// A private key with the certificate the registry issued for it.
struct Cred {
    key: PrivateKey,
    cert: Certificate,
}

/// A member with one subsystem, one node and a signing certificate.
struct Party {
    member: MemberId,
    subsystem: SubsystemId,
    node_id: NodeId,
    node: Cred,
    signer: Cred,
}

/// Everything observable about the registry, to show that a refusal changed nothing.
#[derive(Debug, PartialEq)]
struct State {
    version: u64,
    conf: Vec<u8>,
    members: Vec<gc::Member>,
    nodes: Vec<gc::Node>,
    services: Vec<gc::Service>,
    grants: Vec<pb::StoredGrant>,
    requests: Vec<pb::RequestSummary>,
}

struct Fixture {
    _dir: tempfile::TempDir,
    db_path: PathBuf,
    clock: TestClock,
    ca_key: PrivateKey,
    ca_cert: Certificate,
    conf_key: PrivateKey,
    conf_public: ConfKey,
    /// The anchor a node got at the start.
    anchor: Anchor,
    registry: Registry,
    g01: Party,
    g22: Party,
    seq: AtomicUsize,
}

impl Fixture {
    /// Class GOV; G01 (Ministry of Public Security, subsystem `dancu`) and G22 (Government
    /// Office, subsystem `vpcp`), each with an approved node `ss1` and a member signing certificate.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_path = dir.path().join("registry.redb");
        let clock = TestClock::new();
        let now = clock.now();
        let ca_key = key();
        let ca = CertificateAuthority::init(id("VN"), &ca_key, Validity::days(3650), now).expect("ca");
        let ca_cert = ca.certificate().clone();
        let conf_key = key();
        let conf_public = ConfKey::new(conf_key.public_key(), now, None);
        let signing = SigningKey { public: conf_public.clone(), key: same_key(&conf_key) };
        let registry =
            Registry::open(&db_path, settings(), ca, vec![signing], clock.clock()).expect("open registry");
        let anchor = registry.anchor(now);

        registry.add_member_class(&id::<MemberClass>("GOV"), "Government bodies").expect("class");
        let seq = AtomicUsize::new(0);
        let mut parties = Vec::new();
        for (code, name, sub, sub_name) in [
            ("000.00.00.G01", "Ministry of Public Security", "dancu", "Population database"),
            ("000.00.00.G22", "Government Office", "vpcp", "Government Office portal"),
        ] {
            let member: MemberId = id(&format!("VN/GOV/{code}"));
            let subsystem: SubsystemId = id(&format!("{member}/{sub}"));
            registry.add_member(&member, name, None).expect("member");
            registry.add_subsystem(&subsystem, sub_name).expect("subsystem");
            let node_id: NodeId = id(&format!("{member}/ss1"));
            let node = onboard_node(&registry, &seq, &node_id);
            let signer = onboard_signer(&registry, &seq, &member, &node_id, &node);
            parties.push(Party { member, subsystem, node_id, node, signer });
        }
        let g22 = parties.pop().expect("two parties");
        let g01 = parties.pop().expect("two parties");
        Self {
            _dir: dir,
            db_path,
            clock,
            ca_key,
            ca_cert,
            conf_key,
            conf_public,
            anchor,
            registry,
            g01,
            g22,
            seq,
        }
    }

    /// Drops the registry and opens the same store again with the same CA and signing key.
    fn restart(self) -> Self {
        let Fixture {
            _dir,
            db_path,
            clock,
            ca_key,
            ca_cert,
            conf_key,
            conf_public,
            anchor,
            registry,
            g01,
            g22,
            seq,
        } = self;
        drop(registry);
        let ca = CertificateAuthority::load(ca_cert.clone(), &ca_key).expect("ca");
        let signing = SigningKey { public: conf_public.clone(), key: same_key(&conf_key) };
        let registry =
            Registry::open(&db_path, settings(), ca, vec![signing], clock.clock()).expect("reopen registry");
        Fixture {
            _dir,
            db_path,
            clock,
            ca_key,
            ca_cert,
            conf_key,
            conf_public,
            anchor,
            registry,
            g01,
            g22,
            seq,
        }
    }

    fn next_id(&self, what: &str) -> String {
        next_request_id(&self.seq, what)
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The published configuration, verified the way a node verifies it.
    fn conf(&self) -> VerifiedConf {
        verify(&self.registry.current().bytes, &self.anchor, self.now())
            .expect("published configuration verifies")
    }

    fn state(&self) -> State {
        let r = &self.registry;
        let current = r.current();
        State {
            version: current.version,
            conf: current.bytes.clone(),
            members: r.list_members().expect("members"),
            nodes: r.list_nodes().expect("nodes"),
            services: r.list_services(None).expect("services"),
            grants: r.list_grants(None).expect("grants"),
            requests: r.list_requests(None).expect("requests"),
        }
    }

    /// Runs `op`, expects it to fail with `code`, and checks that nothing changed.
    #[track_caller]
    fn refuses<T: std::fmt::Debug>(
        &self,
        code: &str,
        op: impl FnOnce() -> Result<T, RegistryError>,
    ) -> RegistryError {
        let before = self.state();
        let err = match op() {
            Ok(v) => panic!("expected {code}, got Ok({v:?})"),
            Err(e) => e,
        };
        assert_eq!(err.code(), code, "wrong refusal: {err}");
        assert_eq!(self.state(), before, "a refused operation ({err}) changed the registry");
        err
    }

    fn request(&self, kind: Kind) -> pb::ManagementRequest {
        request(self.next_id("req"), self.now(), kind)
    }

    /// Submits `kind` signed with the member signing certificate of `party`.
    fn as_member(&self, party: &Party, kind: Kind) -> Result<pb::RequestStatus, RegistryError> {
        self.registry.submit(signed(&self.request(kind), &party.signer))
    }

    /// Submits `kind` signed with the node authentication certificate of `party`.
    fn as_node(&self, party: &Party, kind: Kind) -> Result<pb::RequestStatus, RegistryError> {
        self.registry.submit(signed(&self.request(kind), &party.node))
    }

    /// A first registration of `node`, signed by the key in its CSR.
    fn register_node(&self, node: &NodeId) -> (PrivateKey, pb::SignedManagementRequest) {
        let k = key();
        let req = self.request(register_node_kind(&k, node, "https://10.0.0.1:5500"));
        let signed = sign_request(&req, &k, None).expect("sign");
        (k, signed)
    }

    fn publish(&self, party: &Party, service: &ServiceId, endpoints: &[(&str, &str)]) -> pb::RequestStatus {
        let status = self.as_member(party, publish_kind(service, endpoints)).expect("publish service");
        assert_eq!(status.state, pb::RequestState::Approved as i32, "publishing is auto-approved");
        status
    }

    /// G01's service `tra-cuu` with a grant for G22's subsystem; returns the service and grant id.
    fn service_with_grant(&self) -> (ServiceId, String) {
        let service: ServiceId = id(&format!("{}/tra-cuu", self.g01.subsystem));
        self.publish(&self.g01, &service, &[("GET", "/citizens/*"), ("POST", "/search")]);
        let client = ClientId::Subsystem(self.g22.subsystem.clone());
        let status = self
            .as_member(&self.g01, Kind::GrantAccess(grant(&service, &client, "Decree 47/2020/ND-CP")))
            .expect("grant");
        assert_eq!(status.state, pb::RequestState::Approved as i32, "grants are auto-approved");
        let grants = self.registry.list_grants(Some(&service)).expect("grants");
        let grant_id = grants.last().and_then(|g| g.grant.as_ref()).expect("stored grant").grant_id.clone();
        (service, grant_id)
    }
}

fn next_request_id(seq: &AtomicUsize, what: &str) -> String {
    format!("{what}-{}", seq.fetch_add(1, Ordering::SeqCst))
}

fn request(request_id: String, now: SystemTime, kind: Kind) -> pb::ManagementRequest {
    pb::ManagementRequest { request_id, created_at_ms: to_millis(now), kind: Some(kind) }
}

fn signed(req: &pb::ManagementRequest, by: &Cred) -> pb::SignedManagementRequest {
    sign_request(req, &by.key, Some(&by.cert)).expect("sign")
}

fn register_node_kind(k: &PrivateKey, node: &NodeId, url: &str) -> Kind {
    Kind::RegisterNode(pb::RegisterNode {
        node: Some(node.into()),
        csr: Csr::for_node(k, node).expect("csr").der().to_vec(),
        addresses: vec![gc::NodeAddress { url: url.into(), network: "gov-network".into() }],
    })
}

fn issue_signing_cert_kind(k: &PrivateKey, member: &MemberId, node: &NodeId) -> Kind {
    Kind::IssueSigningCert(pb::IssueSigningCert {
        member: Some(member.into()),
        csr: Csr::for_member(k, member).expect("csr").der().to_vec(),
        node: Some(node.into()),
    })
}

fn publish_kind(service: &ServiceId, endpoints: &[(&str, &str)]) -> Kind {
    Kind::PublishService(pb::PublishService {
        service: Some(gc::Service {
            id: Some(service.into()),
            r#type: gc::ServiceType::Rest as i32,
            description: "Tra cuu thong tin cong dan".into(),
            disabled: false,
            endpoints: endpoints.iter().map(|(m, p)| endpoint(m, p)).collect(),
        }),
        description_document: Vec::new(),
    })
}

fn host_kind(sub: &SubsystemId, node: &NodeId) -> Kind {
    Kind::HostSubsystem(pb::HostSubsystem { subsystem: Some(sub.into()), node: Some(node.into()) })
}

fn revoke_kind(grant_id: &str, reason: &str) -> Kind {
    Kind::RevokeAccess(pb::RevokeGrantRequest { grant_id: grant_id.into(), reason: reason.into() })
}

fn endpoint(method: &str, path: &str) -> gc::Endpoint {
    gc::Endpoint { method: method.into(), path: path.into() }
}

fn grant(service: &ServiceId, client: &ClientId, legal_basis: &str) -> gc::AccessGrant {
    gc::AccessGrant {
        service: Some(service.into()),
        subject: Some(gc::access_grant::Subject::Client(client.into())),
        legal_basis: legal_basis.into(),
        ..Default::default()
    }
}

/// Registers `node` and has the operator approve it; returns its key and certificate.
fn onboard_node(registry: &Registry, seq: &AtomicUsize, node: &NodeId) -> Cred {
    let k = key();
    let req = request(
        next_request_id(seq, "register"),
        registry.now(),
        register_node_kind(&k, node, "https://10.0.0.1:5500"),
    );
    let status = registry.submit(sign_request(&req, &k, None).expect("sign")).expect("submit registration");
    assert_eq!(status.state, pb::RequestState::Pending as i32, "registration waits for the operator");
    let status = registry.decide(&req.request_id, true, "checked").expect("approve registration");
    assert_eq!(status.state, pb::RequestState::Approved as i32);
    let cert = Certificate::from_der(status.certificate).expect("node certificate");
    assert_eq!(cert.identity().expect("identity"), Identity::Node(node.clone()));
    Cred { key: k, cert }
}

/// Has `node` ask for a signing certificate for `member` and the operator approve it.
fn onboard_signer(
    registry: &Registry,
    seq: &AtomicUsize,
    member: &MemberId,
    node_id: &NodeId,
    node: &Cred,
) -> Cred {
    let k = key();
    let req = request(
        next_request_id(seq, "sign-cert"),
        registry.now(),
        issue_signing_cert_kind(&k, member, node_id),
    );
    let status = registry.submit(signed(&req, node)).expect("submit signing-cert request");
    assert_eq!(status.state, pb::RequestState::Pending as i32, "signing certificates wait for the operator");
    let status = registry.decide(&req.request_id, true, "checked").expect("approve signing cert");
    assert_eq!(status.state, pb::RequestState::Approved as i32);
    let cert = Certificate::from_der(status.certificate).expect("member certificate");
    assert_eq!(cert.identity().expect("identity"), Identity::Member(member.clone()));
    Cred { key: k, cert }
}

fn state_of(registry: &Registry, request_id: &str) -> pb::RequestState {
    let status = registry.request_status(request_id).expect("status");
    pb::RequestState::try_from(status.state).expect("known state")
}

// ----- 1. node registration ---------------------------------------------------------------

#[test]
fn node_registration_waits_for_the_operator_and_then_appears_in_the_signed_conf() {
    let fx = Fixture::new();
    let ss2: NodeId = id("VN/GOV/000.00.00.G01/ss2");
    let (k, submitted) = fx.register_node(&ss2);
    let request_id = pb::ManagementRequest::decode(submitted.request.as_slice()).expect("request").request_id;

    let status = fx.registry.submit(submitted).expect("submit");
    assert_eq!(status.state, pb::RequestState::Pending as i32);
    assert!(status.certificate.is_empty());
    assert_eq!(fx.registry.request_status(&request_id).expect("status"), status);
    assert!(fx.conf().conf.node(&ss2).is_none(), "a pending node is not published");
    let pending = fx.registry.list_requests(Some(pb::RequestState::Pending)).expect("list");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status.as_ref().map(|s| s.request_id.as_str()), Some(request_id.as_str()));

    fx.clock.advance(Duration::from_secs(5));
    let approved = fx.registry.decide(&request_id, true, "checked").expect("approve");
    assert_eq!(approved.state, pb::RequestState::Approved as i32);
    assert_eq!(approved.reason, "checked");
    assert_eq!(approved.updated_at_ms, to_millis(fx.now()));
    let cert = Certificate::from_der(approved.certificate.clone()).expect("certificate");
    let info = cert.info().expect("info");
    assert_eq!(info.identity, Identity::Node(ss2.clone()));
    assert_eq!(info.public_key, k.public_key(), "the certificate certifies the CSR's key");
    assert!(fx.registry.is_certificate_valid(&cert.fingerprint()).expect("valid"));
    assert_eq!(fx.registry.request_status(&request_id).expect("status"), approved, "the requester sees it");

    let conf = fx.conf();
    let node = conf.conf.node(&ss2).expect("approved node is published");
    assert_eq!(node.auth_cert, cert.fingerprint(), "peers are pinned to the issued certificate");
    assert_eq!(node.addresses.len(), 1);
    assert_eq!(node.addresses[0].url, "https://10.0.0.1:5500");
    assert!(conf.conf.registered_nodes().any(|(n, fp)| n == ss2 && fp == cert.fingerprint()));
    assert!(conf.conf.approved_cas.contains(&fx.ca_cert));

    // A rejection needs a reason, which the requester sees.
    let ss3: NodeId = id("VN/GOV/000.00.00.G01/ss3");
    let (_, submitted) = fx.register_node(&ss3);
    let rejected_id =
        pb::ManagementRequest::decode(submitted.request.as_slice()).expect("request").request_id;
    fx.registry.submit(submitted).expect("submit");
    fx.refuses("invalid_request", || fx.registry.decide(&rejected_id, false, ""));
    fx.refuses("invalid_request", || fx.registry.decide(&rejected_id, false, "   "));
    let rejected =
        fx.registry.decide(&rejected_id, false, "address is not on the government network").expect("reject");
    assert_eq!(rejected.state, pb::RequestState::Rejected as i32);
    let seen = fx.registry.request_status(&rejected_id).expect("status");
    assert_eq!(seen.state, pb::RequestState::Rejected as i32);
    assert_eq!(seen.reason, "address is not on the government network");
    assert!(seen.certificate.is_empty());
    assert!(fx.conf().conf.node(&ss3).is_none(), "a rejected node is not published");

    // Decisions are final; unknown requests are not found.
    fx.refuses("conflict", || fx.registry.decide(&rejected_id, true, "changed my mind"));
    fx.refuses("conflict", || fx.registry.decide(&request_id, false, "too late"));
    fx.refuses("not_found", || fx.registry.decide("no-such-request", true, "checked"));
    fx.refuses("not_found", || fx.registry.request_status("no-such-request"));
}

#[test]
fn malformed_registrations_are_invalid() {
    let fx = Fixture::new();
    let ss2: NodeId = id("VN/GOV/000.00.00.G01/ss2");
    let k = key();
    for url in ["http://10.0.0.1:5500", "https://", "https://10.0.0.1 :5500"] {
        let req = fx.request(register_node_kind(&k, &ss2, url));
        fx.refuses("invalid_request", || fx.registry.submit(sign_request(&req, &k, None).expect("sign")));
    }
    // The CSR names another node than the request.
    let Kind::RegisterNode(mut r) = register_node_kind(&k, &ss2, "https://10.0.0.1:5500") else {
        unreachable!()
    };
    r.node = Some((&id::<NodeId>("VN/GOV/000.00.00.G01/ss9")).into());
    let req = fx.request(Kind::RegisterNode(r));
    fx.refuses("invalid_request", || fx.registry.submit(sign_request(&req, &k, None).expect("sign")));
    // A node for a member that does not exist, or of another instance.
    let req = fx.request(register_node_kind(&k, &id("VN/GOV/000.00.00.G99/ss1"), "https://10.0.0.1:5500"));
    fx.refuses("not_found", || fx.registry.submit(sign_request(&req, &k, None).expect("sign")));
    let req = fx.request(register_node_kind(&k, &id("LA/GOV/000.00.00.G01/ss1"), "https://10.0.0.1:5500"));
    fx.refuses("invalid_request", || fx.registry.submit(sign_request(&req, &k, None).expect("sign")));
    // Bad request ids and undecodable bytes.
    for bad in ["", "has space", &"x".repeat(129)] {
        let req = request(bad.to_string(), fx.now(), register_node_kind(&k, &ss2, "https://10.0.0.1:5500"));
        fx.refuses("invalid_request", || fx.registry.submit(sign_request(&req, &k, None).expect("sign")));
    }
    let req = pb::ManagementRequest { request_id: fx.next_id("req"), created_at_ms: 0, kind: None };
    fx.refuses("invalid_request", || fx.registry.submit(signed(&req, &fx.g01.signer)));
    let mut garbage =
        signed(&fx.request(publish_kind(&id("VN/GOV/000.00.00.G01/dancu/x"), &[])), &fx.g01.signer);
    garbage.request = vec![0xff; 7];
    fx.refuses("invalid_request", || fx.registry.submit(garbage));
}

// ----- 2. authentication (test matrix case 10) --------------------------------------------

#[test]
fn requests_not_signed_by_the_right_party_are_unauthorized() {
    let fx = Fixture::new();
    let (service, grant_id) = fx.service_with_grant();
    let g01 = &fx.g01;
    let g22 = &fx.g22;
    let other_service: ServiceId = id(&format!("{}/ho-tich", g01.subsystem));
    let client = ClientId::Subsystem(g22.subsystem.clone());

    // Signed by another member's certificate.
    fx.refuses("unauthorized", || fx.as_member(g22, host_kind(&g01.subsystem, &g01.node_id)));
    fx.refuses("unauthorized", || fx.as_member(g22, publish_kind(&other_service, &[])));
    fx.refuses("unauthorized", || {
        fx.as_member(g22, Kind::GrantAccess(grant(&service, &client, "Decree 47")))
    });
    fx.refuses("unauthorized", || fx.as_member(g22, revoke_kind(&grant_id, "not mine to revoke")));
    // A grant naming the owner as grantor but signed by someone else.
    let mut forged = grant(&service, &client, "Decree 47");
    forged.granted_by = Some((&g01.member).into());
    fx.refuses("unauthorized", || fx.as_member(g22, Kind::GrantAccess(forged.clone())));

    // Signed by a node certificate where the member must sign.
    fx.refuses("unauthorized", || fx.as_node(g01, host_kind(&g01.subsystem, &g01.node_id)));
    fx.refuses("unauthorized", || fx.as_node(g01, publish_kind(&other_service, &[])));
    fx.refuses("unauthorized", || fx.as_node(g01, Kind::GrantAccess(grant(&service, &client, "Decree 47"))));
    fx.refuses("unauthorized", || fx.as_node(g01, revoke_kind(&grant_id, "by the node")));

    // A node may ask to host another member's subsystem (the operator decides), but only for
    // itself; its owner's subsystems are asked for by the owner.
    let hosting = fx.as_node(g01, host_kind(&g22.subsystem, &g01.node_id)).unwrap();
    assert_eq!(hosting.state, pb::RequestState::Pending as i32, "{hosting:?}");
    fx.refuses("unauthorized", || fx.as_node(g22, host_kind(&g22.subsystem, &g01.node_id)));

    // Signed by a member where the node must sign, or by a node that has nothing to do with it.
    let k = key();
    fx.refuses("unauthorized", || fx.as_member(g01, issue_signing_cert_kind(&k, &g01.member, &g01.node_id)));
    fx.refuses("unauthorized", || fx.as_node(g22, issue_signing_cert_kind(&k, &g01.member, &g01.node_id)));
    fx.refuses("unauthorized", || fx.as_node(g22, issue_signing_cert_kind(&k, &g01.member, &g22.node_id)));

    // A signature that does not verify: a byte of the request or of the signature flipped.
    let req = fx.request(publish_kind(&other_service, &[]));
    let good = signed(&req, &g01.signer);
    let mut tampered = good.clone();
    let at = find(&tampered.request, b"Tra cuu thong tin");
    tampered.request[at] ^= 0x01;
    pb::ManagementRequest::decode(tampered.request.as_slice()).expect("the tampered request still decodes");
    fx.refuses("unauthorized", || fx.registry.submit(tampered));
    let mut tampered = good.clone();
    tampered.signature.as_mut().expect("signature").value[3] ^= 0x80;
    fx.refuses("unauthorized", || fx.registry.submit(tampered));
    // Signed by another key than the certificate's.
    let mut wrong_key = sign_request(&req, &g22.signer.key, Some(&g01.signer.cert)).expect("sign");
    fx.refuses("unauthorized", || fx.registry.submit(wrong_key.clone()));
    // The request id is not burnt by the refusals: the genuine request goes through.
    let status = fx.registry.submit(good).expect("the genuine request is accepted");
    assert_eq!(status.state, pb::RequestState::Approved as i32);
    assert!(fx.conf().conf.service(&other_service).is_some());
    wrong_key.request = fx.request(publish_kind(&other_service, &[])).encode_to_vec();
    fx.refuses("unauthorized", || fx.registry.submit(wrong_key));

    // A certificate for the right member and key, but from a CA this registry does not run.
    let other_ca = CertificateAuthority::init(id("VN"), &key(), Validity::days(3650), fx.now()).expect("ca");
    let csr = Csr::for_member(&g01.signer.key, &g01.member).expect("csr");
    let foreign =
        other_ca.issue_member(&csr, &g01.member, Validity::days(30), fx.now()).expect("foreign certificate");
    let foreign = Cred { key: same_key(&g01.signer.key), cert: foreign };
    fx.refuses("unauthorized", || {
        fx.registry.submit(signed(&fx.request(publish_kind(&other_service, &[])), &foreign))
    });
    // A certificate this registry issued, but for a role that cannot make requests.
    let ca = CertificateAuthority::load(fx.ca_cert.clone(), &fx.ca_key).expect("ca");
    let admin_key = key();
    let admin_csr = Csr::for_admin(&admin_key, &id::<InstanceId>("VN"), "Nguyen Van A").expect("csr");
    let admin_cert = ca.issue_admin(&admin_csr, Validity::days(30), fx.now()).expect("admin certificate");
    fx.registry.record_certificate(&admin_cert).expect("record");
    let admin = Cred { key: admin_key, cert: admin_cert };
    fx.refuses("unauthorized", || {
        fx.registry.submit(signed(&fx.request(publish_kind(&other_service, &[])), &admin))
    });

    // Unsigned, and signed without a certificate where one is needed.
    let mut unsigned = signed(&fx.request(publish_kind(&other_service, &[])), &g01.signer);
    unsigned.signature = None;
    fx.refuses("unauthorized", || fx.registry.submit(unsigned));
    let (_, mut unsigned) = fx.register_node(&id("VN/GOV/000.00.00.G01/ss2"));
    unsigned.signature = None;
    fx.refuses("unauthorized", || fx.registry.submit(unsigned));
    let no_cert =
        sign_request(&fx.request(publish_kind(&other_service, &[])), &g01.signer.key, None).expect("sign");
    fx.refuses("unauthorized", || fx.registry.submit(no_cert));
    // A first registration signed by a key other than the one in its CSR.
    let csr_key = key();
    let req =
        fx.request(register_node_kind(&csr_key, &id("VN/GOV/000.00.00.G01/ss2"), "https://10.0.0.1:5500"));
    fx.refuses("unauthorized", || fx.registry.submit(sign_request(&req, &key(), None).expect("sign")));

    // An expired signer certificate.
    fx.clock.advance(Duration::from_secs(366 * 86_400));
    let req = fx.request(publish_kind(&other_service, &[]));
    fx.refuses("unauthorized", || fx.registry.submit(signed(&req, &g01.signer)));
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).position(|w| w == needle).expect("needle in the signed bytes")
}

// ----- 3. duplicates and idempotence ------------------------------------------------------

#[test]
fn duplicates_are_refused_and_identical_resubmission_is_idempotent() {
    let fx = Fixture::new();
    let ss2: NodeId = id("VN/GOV/000.00.00.G01/ss2");
    let (k, first) = fx.register_node(&ss2);
    let first_id = pb::ManagementRequest::decode(first.request.as_slice()).expect("request").request_id;
    let pending = fx.registry.submit(first.clone()).expect("submit");
    assert_eq!(pending.state, pb::RequestState::Pending as i32);

    // Resubmitting the same request is idempotent and changes nothing.
    let before = fx.state();
    assert_eq!(fx.registry.submit(first.clone()).expect("resubmit"), pending);
    assert_eq!(fx.state(), before);

    // The same node again while the first registration is pending.
    let (_, second) = fx.register_node(&ss2);
    fx.refuses("duplicate", || fx.registry.submit(second));
    // The same request id with other bytes, even properly signed.
    let other = request(first_id.clone(), fx.now(), register_node_kind(&k, &ss2, "https://10.0.0.2:5500"));
    fx.refuses("duplicate", || fx.registry.submit(sign_request(&other, &k, None).expect("sign")));
    let reused = request(first_id.clone(), fx.now(), publish_kind(&id("VN/GOV/000.00.00.G01/dancu/x"), &[]));
    fx.refuses("duplicate", || fx.registry.submit(signed(&reused, &fx.g01.signer)));

    let approved = fx.registry.decide(&first_id, true, "checked").expect("approve");
    assert_eq!(approved.state, pb::RequestState::Approved as i32);
    // After approval: the node is registered, and resubmission reports the outcome.
    let (_, third) = fx.register_node(&ss2);
    fx.refuses("duplicate", || fx.registry.submit(third));
    let before = fx.state();
    assert_eq!(
        fx.registry.submit(first).expect("resubmit"),
        approved,
        "resubmission returns the certificate"
    );
    assert_eq!(fx.state(), before);
    // The fixture's own, long-approved node.
    let (_, again) = fx.register_node(&fx.g01.node_id);
    fx.refuses("duplicate", || fx.registry.submit(again));

    // A rejected registration does not block a new one.
    let ss3: NodeId = id("VN/GOV/000.00.00.G01/ss3");
    let (_, r) = fx.register_node(&ss3);
    let r_id = pb::ManagementRequest::decode(r.request.as_slice()).expect("request").request_id;
    fx.registry.submit(r).expect("submit");
    fx.registry.decide(&r_id, false, "wrong address").expect("reject");
    let (_, retry) = fx.register_node(&ss3);
    assert_eq!(fx.registry.submit(retry).expect("retry").state, pb::RequestState::Pending as i32);

    // Members and subsystems.
    fx.refuses("duplicate", || fx.registry.add_member(&fx.g01.member, "Bo Cong an", None));
    fx.refuses("duplicate", || fx.registry.add_subsystem(&fx.g01.subsystem, "again"));
    let g33: MemberId = id("VN/GOV/000.00.00.G33");
    fx.registry.add_member(&g33, "Short-lived agency", None).expect("add");
    fx.registry.close_member(&g33, None, "merged").expect("close");
    fx.refuses("duplicate", || fx.registry.add_member(&g33, "Reborn agency", None));
    fx.refuses("conflict", || fx.registry.add_subsystem(&id(&format!("{g33}/x")), "x"));
    fx.refuses("conflict", || fx.registry.close_member(&g33, None, "again"));
    // Other refusals of add_member.
    fx.refuses("invalid_request", || fx.registry.add_member(&id("VN/GOV/000.00.00.G44"), "  ", None));
    fx.refuses("invalid_request", || {
        fx.registry.add_member(&id("VN/EDU/000.00.00.G44"), "No such class", None)
    });
    fx.refuses("invalid_request", || {
        fx.registry.add_member(&id("LA/GOV/000.00.00.G44"), "Other instance", None)
    });
    fx.refuses("conflict", || fx.registry.add_member(&id("VN/GOV/000.00.00.G44"), "Child", Some(&g33)));

    // Hosting a subsystem twice.
    let host = fx.as_member(&fx.g01, host_kind(&fx.g01.subsystem, &fx.g01.node_id)).expect("host");
    assert_eq!(host.state, pb::RequestState::Pending as i32, "hosting waits for the operator");
    fx.registry.decide(&host.request_id, true, "checked").expect("approve hosting");
    assert!(fx.conf().conf.nodes_hosting(&fx.g01.subsystem).any(|n| n.id == fx.g01.node_id));
    fx.refuses("duplicate", || fx.as_member(&fx.g01, host_kind(&fx.g01.subsystem, &fx.g01.node_id)));
}

// ----- 4. services and grants -------------------------------------------------------------

#[test]
fn grants_are_published_found_and_revoked() {
    let fx = Fixture::new();
    let now = fx.now();
    let (service, grant_id) = fx.service_with_grant();
    let client = ClientId::Subsystem(fx.g22.subsystem.clone());

    let conf = fx.conf().conf;
    let published = conf.service(&service).expect("service published");
    assert_eq!(published.endpoints.len(), 2);
    let found = conf.allowing_grant(&client, &service, "GET", "/x", now).expect("the grant allows the call");
    assert_eq!(found.id, grant_id);
    assert_eq!(found.legal_basis, "Decree 47/2020/ND-CP");
    assert_eq!(found.granted_by, fx.g01.member);
    assert_eq!(found.granted_at, now);
    let stranger = ClientId::Subsystem(fx.g01.subsystem.clone());
    assert!(conf.allowing_grant(&stranger, &service, "GET", "/x", now).is_none());
    assert!(
        conf.allowing_grant(&ClientId::Member(fx.g22.member.clone()), &service, "GET", "/x", now).is_none()
    );

    // A grant limited to some endpoints.
    let narrow_service: ServiceId = id(&format!("{}/cap-so", fx.g01.subsystem));
    fx.publish(&fx.g01, &narrow_service, &[("*", "*")]);
    let mut narrow = grant(&narrow_service, &client, "Agreement 12/TT");
    narrow.endpoints = vec![endpoint("GET", "/citizens/*")];
    fx.as_member(&fx.g01, Kind::GrantAccess(narrow)).expect("narrow grant");
    let conf = fx.conf().conf;
    assert!(conf.allowing_grant(&client, &narrow_service, "GET", "/citizens/123", now).is_some());
    assert!(conf.allowing_grant(&client, &narrow_service, "POST", "/citizens/123", now).is_none());
    assert!(conf.allowing_grant(&client, &narrow_service, "GET", "/other", now).is_none());

    // Refusals.
    let g01 = &fx.g01;
    fx.refuses("invalid_request", || fx.as_member(g01, Kind::GrantAccess(grant(&service, &client, ""))));
    fx.refuses("invalid_request", || fx.as_member(g01, Kind::GrantAccess(grant(&service, &client, "  \t"))));
    fx.refuses("unauthorized", || {
        fx.as_member(&fx.g22, Kind::GrantAccess(grant(&service, &client, "Decree 47")))
    });
    let mut by_other = grant(&service, &client, "Decree 47");
    by_other.granted_by = Some((&fx.g22.member).into());
    fx.refuses("unauthorized", || fx.as_member(g01, Kind::GrantAccess(by_other.clone())));
    fx.refuses("unauthorized", || fx.registry.add_grant(by_other));
    let unknown_sub = ClientId::Subsystem(id(&format!("{}/khong-co", fx.g22.member)));
    fx.refuses("not_found", || {
        fx.as_member(g01, Kind::GrantAccess(grant(&service, &unknown_sub, "Decree 47")))
    });
    let unknown_member = ClientId::Subsystem(id("VN/GOV/000.00.00.G99/vpcp"));
    fx.refuses("not_found", || {
        fx.as_member(g01, Kind::GrantAccess(grant(&service, &unknown_member, "Decree 47")))
    });
    let unpublished: ServiceId = id(&format!("{}/chua-co", g01.subsystem));
    fx.refuses("not_found", || {
        fx.as_member(g01, Kind::GrantAccess(grant(&unpublished, &client, "Decree 47")))
    });
    let foreign = ClientId::Subsystem(id("LA/GOV/000.00.00.G01/x"));
    fx.refuses("invalid_request", || {
        fx.as_member(g01, Kind::GrantAccess(grant(&service, &foreign, "Decree 47")))
    });
    let mut no_subject = grant(&service, &client, "Decree 47");
    no_subject.subject = None;
    fx.refuses("invalid_request", || fx.as_member(g01, Kind::GrantAccess(no_subject)));
    let mut backwards = grant(&service, &client, "Decree 47");
    backwards.valid_from_ms = to_millis(now) + 10_000;
    backwards.valid_until_ms = to_millis(now);
    fx.refuses("invalid_request", || fx.as_member(g01, Kind::GrantAccess(backwards)));

    // Endpoint patterns are checked, in grants and in published services.
    for (method, path) in [
        ("get", "/x"),
        ("", "/x"),
        ("GET", "x"),
        ("GET", ""),
        ("GET", "/a?b=1"),
        ("GET", "/a#b"),
        ("GET", "/a b"),
    ] {
        let mut bad = grant(&service, &client, "Decree 47");
        bad.endpoints = vec![endpoint(method, path)];
        fx.refuses("invalid_request", || fx.as_member(g01, Kind::GrantAccess(bad)));
        fx.refuses("invalid_request", || fx.as_member(g01, publish_kind(&service, &[(method, path)])));
    }
    let unknown_subsystem_service: ServiceId = id(&format!("{}/khong-co/x", g01.member));
    fx.refuses("not_found", || fx.as_member(g01, publish_kind(&unknown_subsystem_service, &[])));

    // Revocation: by the owner, with a reason; the version goes up and the grant leaves the conf.
    fx.refuses("invalid_request", || fx.as_member(g01, revoke_kind(&grant_id, " ")));
    fx.refuses("unauthorized", || fx.as_member(&fx.g22, revoke_kind(&grant_id, "not mine")));
    fx.refuses("not_found", || fx.as_member(g01, revoke_kind("G999999", "no such grant")));
    let version = fx.registry.current().version;
    fx.clock.advance(Duration::from_secs(1));
    let status = fx.as_member(g01, revoke_kind(&grant_id, "agreement ended")).expect("revoke");
    assert_eq!(status.state, pb::RequestState::Approved as i32, "revocations are never held back");
    assert!(fx.registry.current().version > version);
    let conf = fx.conf().conf;
    assert!(conf.allowing_grant(&client, &service, "GET", "/x", fx.now()).is_none());
    assert!(conf.grants.iter().all(|g| g.id != grant_id));
    let stored = fx.registry.list_grants(Some(&service)).expect("grants");
    let revoked =
        stored.iter().find(|g| g.grant.as_ref().is_some_and(|g| g.grant_id == grant_id)).expect("kept");
    assert_eq!(revoked.revoked_at_ms, to_millis(fx.now()));
    assert_eq!(revoked.revoked_reason, "agreement ended");
    fx.refuses("conflict", || fx.as_member(g01, revoke_kind(&grant_id, "again")));
    fx.refuses("conflict", || fx.registry.revoke_grant(&grant_id, "again"));

    // The operator can record and revoke an agreement on the owner's behalf.
    let mut on_behalf = grant(&service, &client, "Decision 1234/QD-TTg");
    on_behalf.granted_by = Some((&g01.member).into());
    let added = fx.registry.add_grant(on_behalf).expect("operator grant");
    assert_ne!(added.grant_id, grant_id, "grant ids are never reused");
    assert!(fx.conf().conf.allowing_grant(&client, &service, "GET", "/x", fx.now()).is_some());
    fx.refuses("invalid_request", || fx.registry.revoke_grant(&added.grant_id, ""));
    fx.registry.revoke_grant(&added.grant_id, "superseded").expect("operator revoke");
    assert!(fx.conf().conf.allowing_grant(&client, &service, "GET", "/x", fx.now()).is_none());
}

// ----- 5. closing members and removing nodes ----------------------------------------------

#[test]
fn closing_a_member_revokes_its_nodes_certificates_grants_and_pending_requests() {
    let fx = Fixture::new();
    let (service, grant_id) = fx.service_with_grant();
    let (g01, g22) = (&fx.g01, &fx.g22);
    let client = ClientId::Subsystem(g22.subsystem.clone());

    // G01's node hosts G22's subsystem too (approved); G22 has requests waiting.
    let host = fx.as_member(g22, host_kind(&g22.subsystem, &g01.node_id)).expect("host");
    fx.registry.decide(&host.request_id, true, "checked").expect("approve");
    assert!(fx.conf().conf.nodes_hosting(&g22.subsystem).any(|n| n.id == g01.node_id));
    let waiting_host = fx.as_member(g22, host_kind(&g22.subsystem, &g22.node_id)).expect("host");
    let (_, reg) = fx.register_node(&id("VN/GOV/000.00.00.G22/ss2"));
    let waiting_node = fx.registry.submit(reg).expect("register");
    let k = key();
    let waiting_cert = fx.as_node(g22, issue_signing_cert_kind(&k, &g22.member, &g22.node_id)).expect("cert");
    for s in [&waiting_host, &waiting_node, &waiting_cert] {
        assert_eq!(s.state, pb::RequestState::Pending as i32);
    }
    let approved_before = fx.registry.list_requests(Some(pb::RequestState::Approved)).expect("list");

    fx.refuses("invalid_request", || fx.registry.close_member(&g22.member, None, " "));
    fx.refuses("invalid_request", || fx.registry.close_member(&g22.member, Some(&g22.member), "self"));
    fx.refuses("not_found", || fx.registry.close_member(&id("VN/GOV/000.00.00.G99"), None, "gone"));
    let version = fx.registry.current().version;
    let closed = fx.registry.close_member(&g22.member, None, "dissolved").expect("close");
    assert_eq!(closed.status, gc::MemberStatus::Closed as i32);
    assert!(closed.signing_cert_sha256.is_empty());
    assert!(fx.registry.current().version > version);

    let conf = fx.conf().conf;
    let member = conf.member(&g22.member).expect("closed members stay listed");
    assert_eq!(member.status, MemberStatus::Closed);
    assert!(member.signing_certs.is_empty());
    assert!(!conf.has_subsystem(&g22.subsystem));
    assert!(conf.node(&g22.node_id).is_none(), "its node left the configuration");
    assert!(conf.nodes_hosting(&g22.subsystem).next().is_none(), "no node hosts its subsystems");
    assert!(conf.node(&g01.node_id).is_some(), "other members' nodes stay");
    assert!(conf.allowing_grant(&client, &service, "GET", "/x", fx.now()).is_none(), "grants to it revoked");
    let stored = fx.registry.list_grants(Some(&service)).expect("grants");
    let g = stored.iter().find(|g| g.grant.as_ref().is_some_and(|g| g.grant_id == grant_id)).expect("grant");
    assert_ne!(g.revoked_at_ms, 0);
    assert!(g.revoked_reason.contains("dissolved"), "{}", g.revoked_reason);

    // Its certificates no longer authenticate anything.
    assert!(!fx.registry.is_certificate_valid(&g22.signer.cert.fingerprint()).expect("check"));
    assert!(!fx.registry.is_certificate_valid(&g22.node.cert.fingerprint()).expect("check"));
    let own_service: ServiceId = id(&format!("{}/x", g22.subsystem));
    fx.refuses("unauthorized", || fx.as_member(g22, publish_kind(&own_service, &[])));
    fx.refuses("unauthorized", || {
        fx.as_node(g22, issue_signing_cert_kind(&key(), &g22.member, &g22.node_id))
    });

    // Its pending requests are revoked with the reason, and can no longer be decided.
    for s in [&waiting_host, &waiting_node, &waiting_cert] {
        let now = fx.registry.request_status(&s.request_id).expect("status");
        assert_eq!(
            now.state,
            pb::RequestState::Revoked as i32,
            "pending request {} not revoked",
            s.request_id
        );
        assert!(now.reason.contains("dissolved"), "{}", now.reason);
        fx.refuses("conflict", || fx.registry.decide(&s.request_id, true, "checked"));
    }
    // Its node's registration is marked revoked; the other member's requests are untouched.
    let g22_node = Some((&g22.node_id).into());
    let g01_member = Some((&g01.member).into());
    for summary in approved_before {
        let request_id = summary.status.expect("status").request_id;
        let expected = match summary.request.and_then(|r| r.kind) {
            Some(Kind::RegisterNode(r)) if r.node == g22_node => pb::RequestState::Revoked,
            Some(Kind::IssueSigningCert(r)) if r.member == g01_member => pb::RequestState::Approved,
            Some(Kind::RegisterNode(_) | Kind::PublishService(_) | Kind::GrantAccess(_)) => {
                pb::RequestState::Approved
            }
            _ => continue, // G22's own approved requests
        };
        assert_eq!(state_of(&fx.registry, &request_id), expected, "request {request_id}");
    }
    // The other member goes on working.
    fx.publish(g01, &id(&format!("{}/ho-tich", g01.subsystem)), &[]);
    // Nothing new can be registered or granted for the closed member.
    let (_, reg) = fx.register_node(&id("VN/GOV/000.00.00.G22/ss3"));
    fx.refuses("conflict", || fx.registry.submit(reg));
    fx.refuses("conflict", || fx.as_member(g01, Kind::GrantAccess(grant(&service, &client, "Decree 47"))));
}

#[test]
fn closing_a_provider_revokes_the_grants_on_its_services() {
    let fx = Fixture::new();
    let (service, _) = fx.service_with_grant();
    let client = ClientId::Subsystem(fx.g22.subsystem.clone());
    fx.registry.close_member(&fx.g01.member, Some(&fx.g22.member), "merged into G22").expect("close");
    let conf = fx.conf().conf;
    let member = conf.member(&fx.g01.member).expect("listed");
    assert_eq!(member.status, MemberStatus::Superseded);
    assert_eq!(member.superseded_by.as_ref(), Some(&fx.g22.member));
    assert!(conf.allowing_grant(&client, &service, "GET", "/x", fx.now()).is_none());
    assert!(conf.grants.is_empty());
    assert!(fx.registry.list_grants(None).expect("grants").iter().all(|g| g.revoked_at_ms != 0));
    assert!(
        conf.service(&service).expect("still listed").disabled,
        "a closed member's services are disabled"
    );
}

#[test]
fn removing_a_node_revokes_its_certificate() {
    let fx = Fixture::new();
    let g01 = &fx.g01;
    let registration = fx
        .registry
        .list_requests(Some(pb::RequestState::Approved))
        .expect("list")
        .into_iter()
        .find(|s| matches!(s.request.as_ref().and_then(|r| r.kind.as_ref()), Some(Kind::RegisterNode(r)) if r.node == Some((&g01.node_id).into())))
        .and_then(|s| s.status)
        .expect("the node's registration");

    fx.refuses("invalid_request", || fx.registry.remove_node(&g01.node_id, ""));
    fx.refuses("not_found", || fx.registry.remove_node(&id("VN/GOV/000.00.00.G01/ss9"), "never existed"));
    let version = fx.registry.current().version;
    let removed = fx.registry.remove_node(&g01.node_id, "decommissioned").expect("remove");
    assert_eq!(removed.auth_cert_sha256, g01.node.cert.fingerprint().0.to_vec());
    assert!(fx.registry.current().version > version);

    let conf = fx.conf().conf;
    assert!(conf.node(&g01.node_id).is_none());
    assert!(conf.registered_nodes().all(|(n, _)| n != g01.node_id));
    assert!(conf.node(&fx.g22.node_id).is_some());
    assert!(!fx.registry.is_certificate_valid(&g01.node.cert.fingerprint()).expect("check"));
    let status = fx.registry.request_status(&registration.request_id).expect("status");
    assert_eq!(status.state, pb::RequestState::Revoked as i32);
    assert_eq!(status.reason, "decommissioned");
    fx.refuses("unauthorized", || {
        fx.as_node(g01, issue_signing_cert_kind(&key(), &g01.member, &g01.node_id))
    });
    fx.refuses("not_found", || fx.registry.remove_node(&g01.node_id, "again"));
    fx.refuses("not_found", || fx.registry.set_maintenance(&g01.node_id, true));

    // The member's signing certificate was not the node's: it still works. Re-registering the
    // node is possible and yields a new certificate.
    fx.publish(g01, &id(&format!("{}/tra-cuu", g01.subsystem)), &[]);
    let fresh = onboard_node(&fx.registry, &fx.seq, &g01.node_id);
    assert_ne!(fresh.cert.fingerprint(), g01.node.cert.fingerprint());
    assert_eq!(fx.conf().conf.node(&g01.node_id).expect("back").auth_cert, fresh.cert.fingerprint());
}

// ----- 6. versions and re-signing ---------------------------------------------------------

#[test]
fn every_change_bumps_the_version_and_republishing_refreshes_the_expiry() {
    let fx = Fixture::new();
    let check = |expected_version: u64| {
        let published = fx.registry.current();
        assert_eq!(published.version, expected_version);
        assert_eq!(published.generated_at, fx.now());
        assert_eq!(published.expires_at, published.generated_at + CONF_VALIDITY);
        let conf = fx.conf().conf;
        assert_eq!(conf.version, expected_version);
        assert_eq!(conf.generated_at, fx.now());
        assert_eq!(conf.expires_at, conf.generated_at + CONF_VALIDITY);
    };
    let mut v = fx.registry.current().version;
    check(v);
    let mut rx = fx.registry.subscribe();
    rx.mark_unchanged();

    let changes: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| fx.registry.add_member_class(&id("EDU"), "Education").expect("class")),
        Box::new(|| {
            fx.registry.add_member(&id("VN/EDU/000.00.00.H01"), "University", None).expect("member");
        }),
        Box::new(|| {
            fx.registry.add_subsystem(&id("VN/EDU/000.00.00.H01/dt"), "Training").expect("subsystem");
        }),
        Box::new(|| {
            fx.registry.set_maintenance(&fx.g01.node_id, true).expect("maintenance");
        }),
        Box::new(|| {
            fx.publish(&fx.g01, &id("VN/GOV/000.00.00.G01/dancu/tra-cuu"), &[]);
        }),
        Box::new(|| {
            fx.registry.close_member(&id("VN/EDU/000.00.00.H01"), None, "merged").expect("close");
        }),
    ];
    for change in changes {
        fx.clock.advance(Duration::from_millis(1500));
        change();
        v += 1;
        check(v);
        assert!(rx.has_changed().expect("sender alive"), "subscribers see every publication");
        rx.mark_unchanged();
    }
    assert!(fx.conf().conf.node(&fx.g01.node_id).expect("node").maintenance);

    // A refused operation publishes nothing.
    fx.refuses("duplicate", || fx.registry.add_member(&fx.g01.member, "again", None));
    assert!(!rx.has_changed().expect("sender alive"));

    // Re-signing without changes: same version, later generation and expiry, new entity tag.
    let before = fx.registry.current();
    fx.clock.advance(Duration::from_secs(60));
    let again = fx.registry.publish().expect("republish");
    assert_eq!(again.version, before.version);
    assert!(again.generated_at > before.generated_at);
    assert_eq!(again.expires_at, fx.now() + CONF_VALIDITY);
    assert_ne!(again.etag, before.etag);
    assert!(again.etag.starts_with('"') && again.etag.ends_with('"'), "{}", again.etag);
    assert_ne!(again.bytes, before.bytes);
    assert_eq!(fx.registry.current().etag, again.etag);
    check(v);

    // An old configuration expires; the re-signed one is still good.
    fx.clock.advance(CONF_VALIDITY - Duration::from_secs(30));
    assert!(matches!(verify(&before.bytes, &fx.anchor, fx.now()), Err(ConfError::Expired { .. })));
    assert!(verify(&again.bytes, &fx.anchor, fx.now()).is_ok());
}

// ----- 7. configuration-signing key rollover ----------------------------------------------

#[test]
fn conf_key_rollover_signs_with_both_then_only_the_new_key() {
    let fx = Fixture::new();
    let old_anchor = fx.anchor.clone();
    let old_id = fx.conf_public.id;
    fx.clock.advance(Duration::from_secs(10));

    // Retiring the only key is refused.
    fx.refuses("conflict", || fx.registry.retire_conf_key(&old_id, fx.now()));

    let new_key = key();
    let new_public = ConfKey::new(new_key.public_key(), fx.now(), None);
    let new_id = new_public.id;
    let version = fx.registry.current().version;
    fx.registry
        .add_conf_key(SigningKey { public: new_public.clone(), key: new_key }, "conf-new.key")
        .expect("add key");
    assert_eq!(fx.registry.current().version, version + 1);

    // During the rollover both keys sign and both are announced.
    let published = fx.registry.current();
    let signed = gc::SignedGlobalConf::decode(published.bytes.as_slice()).expect("signed conf");
    let signers: Vec<&[u8]> = signed.signatures.iter().map(|s| s.signer_sha256.as_slice()).collect();
    assert_eq!(signers.len(), 2);
    assert!(signers.contains(&old_id.0.as_slice()) && signers.contains(&new_id.0.as_slice()));
    let conf =
        verify(&published.bytes, &old_anchor, fx.now()).expect("a node with the old anchor still verifies");
    let announced: Vec<_> = conf.conf.signing_keys.iter().map(|k| k.id).collect();
    assert!(announced.contains(&old_id) && announced.contains(&new_id), "{announced:?}");
    let new_only = Anchor { signing_keys: vec![new_public.clone()], ..old_anchor.clone() };
    verify(&published.bytes, &new_only, fx.now()).expect("a node with the new anchor verifies");
    assert_eq!(fx.registry.anchor(fx.now()).signing_keys.len(), 2);

    // Retirement: from then on only the new key signs and is announced.
    fx.clock.advance(Duration::from_secs(10));
    fx.refuses("not_found", || fx.registry.retire_conf_key(&lienthong_pki::Fingerprint([7; 32]), fx.now()));
    fx.registry.retire_conf_key(&old_id, fx.now()).expect("retire old key");
    fx.registry.publish().expect("republish");
    let published = fx.registry.current();
    let signed = gc::SignedGlobalConf::decode(published.bytes.as_slice()).expect("signed conf");
    assert_eq!(signed.signatures.len(), 1);
    assert_eq!(signed.signatures[0].signer_sha256, new_id.0.to_vec());
    let conf = verify(&published.bytes, &new_only, fx.now()).expect("the new anchor verifies");
    assert_eq!(conf.conf.signing_keys.iter().map(|k| k.id).collect::<Vec<_>>(), vec![new_id]);
    assert_eq!(verify(&published.bytes, &old_anchor, fx.now()).err(), Some(ConfError::UntrustedSigner));
    let anchor = fx.registry.anchor(fx.now());
    assert_eq!(anchor.signing_keys.iter().map(|k| k.id).collect::<Vec<_>>(), vec![new_id]);
    verify(&published.bytes, &anchor, fx.now()).expect("the registry's current anchor verifies");

    // The new key is now the last one: it cannot be retired.
    fx.refuses("conflict", || fx.registry.retire_conf_key(&new_id, fx.now()));
}

// ----- 8. restart -------------------------------------------------------------------------

#[test]
fn state_and_version_survive_a_restart() {
    let fx = Fixture::new();
    let (service, grant_id) = fx.service_with_grant();
    let ss2: NodeId = id("VN/GOV/000.00.00.G01/ss2");
    let (_, pending) = fx.register_node(&ss2);
    let pending_id = fx.registry.submit(pending).expect("submit").request_id;
    let before = fx.state();
    assert!(before.version > 1);

    fx.clock.advance(Duration::from_secs(30));
    let fx = fx.restart();
    let after = fx.state();
    assert_eq!(after.version, before.version, "the version is not reset");
    assert_eq!(after.members, before.members);
    assert_eq!(after.nodes, before.nodes);
    assert_eq!(after.services, before.services);
    assert_eq!(after.grants, before.grants);
    assert_eq!(after.requests, before.requests);
    assert_ne!(after.conf, before.conf, "re-signed at start-up");
    let conf = fx.conf().conf;
    assert_eq!(conf.version, before.version);
    assert_eq!(conf.generated_at, fx.now());
    let client = ClientId::Subsystem(fx.g22.subsystem.clone());
    assert_eq!(
        conf.allowing_grant(&client, &service, "GET", "/x", fx.now()).map(|g| g.id.clone()),
        Some(grant_id)
    );

    // Certificates issued before the restart still authenticate; pending requests can be decided.
    fx.publish(&fx.g01, &id(&format!("{}/ho-tich", fx.g01.subsystem)), &[]);
    assert_eq!(fx.registry.current().version, before.version + 1);
    fx.registry.decide(&pending_id, true, "checked").expect("approve after restart");
    assert!(fx.conf().conf.node(&ss2).is_some());
    assert_eq!(fx.registry.current().version, before.version + 2);
}

#[test]
fn stored_signing_keys_are_reloaded_after_a_rollover() {
    let fx = Fixture::new();
    let new_key = key();
    let new_pem = new_key.to_pem();
    let new_public = ConfKey::new(new_key.public_key(), fx.now(), None);
    fx.registry
        .add_conf_key(SigningKey { public: new_public.clone(), key: new_key }, "conf-2.key")
        .expect("add");
    fx.clock.advance(Duration::from_secs(1));
    fx.registry.retire_conf_key(&fx.conf_public.id, fx.now()).expect("retire");
    let version = fx.registry.current().version;

    let Fixture { _dir, db_path, clock, ca_key, ca_cert, conf_key, registry, .. } = fx;
    drop(registry);
    clock.advance(Duration::from_secs(1));
    let asked = std::sync::Mutex::new(Vec::new());
    let load = |file: &str| {
        asked.lock().expect("lock").push(file.to_owned());
        match file {
            "conf-2.key" => {
                PrivateKey::from_pem(&new_pem, None).map_err(|e| RegistryError::Invalid(e.to_string()))
            }
            "" => Ok(same_key(&conf_key)),
            other => Err(RegistryError::NotFound(other.into())),
        }
    };
    let ca = CertificateAuthority::load(ca_cert.clone(), &ca_key).expect("ca");
    let registry =
        Registry::open_with_stored_keys(&db_path, settings(), ca, &load, clock.clock()).expect("reopen");
    assert_eq!(asked.lock().expect("lock").as_slice(), ["conf-2.key"], "the retired key is not loaded");
    assert_eq!(registry.conf_keys(), vec![new_public.clone()]);
    assert_eq!(registry.current().version, version);
    let anchor = registry.anchor(clock.now());
    assert_eq!(anchor.signing_keys, vec![new_public]);
    verify(&registry.current().bytes, &anchor, clock.now()).expect("signed with the reloaded key");
    drop(registry);

    // A key file that does not hold the stored key is refused.
    let wrong = |_: &str| -> Result<PrivateKey, RegistryError> { Ok(key()) };
    let ca = CertificateAuthority::load(ca_cert, &ca_key).expect("ca");
    let err = Registry::open_with_stored_keys(&db_path, settings(), ca, &wrong, clock.clock())
        .expect_err("wrong key");
    assert_eq!(err.code(), "invalid_request", "{err}");
}
