//! A small instance built by hand, without I/O: a CA, two members with signing certificates,
//! three nodes, a catalogue of services and grants, and a request envelope signed by the client.
//!
//! - member `VN/GOV/A` (subsystem `cons`) consumes, through node `VN/GOV/A/ss-a`;
//! - member `VN/GOV/B` (subsystem `prov`) provides, on nodes `ss-b1` and `ss-b2`; node `ss-b3`
//!   belongs to B but hosts nothing;
//! - services of `B/prov`: `pets` (REST), `spec` (OpenAPI), `soap` (WSDL), `off` (disabled), `open`
//!   (REST, granted to everyone through the global group `VN/everyone`);
//! - grants: `g-pets` (A/cons may `GET /pets/*` of `pets`), `g-spec` (all of `spec`, for A/cons),
//!   `g-soap` and `g-off` (all of those, so only the type and the switch refuse), `g-group`.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use lienthong_exchange::envelope::{self, Signer};
use lienthong_globalconf::{
    AccessGrant, Endpoint, GlobalConf, GlobalGroup, GrantSubject, Member, MemberStatus, Node, Service,
    ServiceType, to_millis,
};
use lienthong_pki::{
    Certificate, CertificateAuthority, Csr, Fingerprint, KeyAlgorithm, PrivateKey, Validity,
};
use lienthong_proto::exchange::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, InstanceId, MemberId, NodeId, ServiceId, SubsystemId};
use sha2::{Digest, Sha256};

pub fn member(s: &str) -> MemberId {
    s.parse().unwrap()
}

pub fn subsystem(s: &str) -> SubsystemId {
    s.parse().unwrap()
}

pub fn service(s: &str) -> ServiceId {
    s.parse().unwrap()
}

pub fn node(s: &str) -> NodeId {
    s.parse().unwrap()
}

pub const A: &str = "VN/GOV/A";
pub const B: &str = "VN/GOV/B";
pub const CONS: &str = "VN/GOV/A/cons";
pub const PROV: &str = "VN/GOV/B/prov";
pub const PETS: &str = "VN/GOV/B/prov/pets";
pub const SPEC: &str = "VN/GOV/B/prov/spec";
pub const SOAP: &str = "VN/GOV/B/prov/soap";
pub const OFF: &str = "VN/GOV/B/prov/off";
pub const OPEN: &str = "VN/GOV/B/prov/open";
pub const NODE_A: &str = "VN/GOV/A/ss-a";
pub const NODE_B1: &str = "VN/GOV/B/ss-b1";
pub const NODE_B2: &str = "VN/GOV/B/ss-b2";
pub const NODE_B3: &str = "VN/GOV/B/ss-b3";
pub const GROUP: &str = "VN/everyone";

/// A member's signing key and the certificate the CA issued for it.
pub struct KeyPair {
    pub key: PrivateKey,
    pub cert: Certificate,
}

impl KeyPair {
    pub fn signer(&self) -> Signer<'_> {
        Signer { key: &self.key, certificate: &self.cert }
    }
}

pub struct Fixture {
    pub ca: CertificateAuthority,
    pub now: SystemTime,
    pub conf: GlobalConf,
    pub a: KeyPair,
    pub b: KeyPair,
}

/// A signing certificate for `m`, issued at `issued` for `validity`.
pub fn issue(ca: &CertificateAuthority, m: &MemberId, issued: SystemTime, validity: Validity) -> KeyPair {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let cert = ca.issue_member(&Csr::for_member(&key, m).unwrap(), m, validity, issued).unwrap();
    KeyPair { key, cert }
}

fn registered(id: &str, name: &str, subsystems: &[&str], cert: &Certificate) -> (MemberId, Member) {
    let id = member(id);
    let m = Member {
        id: id.clone(),
        name: name.into(),
        status: MemberStatus::Active,
        status_since: SystemTime::UNIX_EPOCH,
        superseded_by: None,
        parent: None,
        subsystems: subsystems.iter().map(|s| (s.parse().unwrap(), format!("{name} / {s}"))).collect(),
        signing_certs: BTreeSet::from([cert.fingerprint()]),
    };
    (id, m)
}

fn hosting(id: &str, fill: u8, subsystems: &[&str]) -> (NodeId, Node) {
    let id = node(id);
    let n = Node {
        id: id.clone(),
        addresses: vec![],
        auth_cert: Fingerprint([fill; 32]),
        hosted_subsystems: subsystems.iter().map(|s| subsystem(s)).collect(),
        maintenance: false,
    };
    (id, n)
}

fn published(
    id: &str,
    service_type: ServiceType,
    disabled: bool,
    endpoints: Vec<Endpoint>,
) -> (ServiceId, Service) {
    let id = service(id);
    let s = Service { id: id.clone(), service_type, description: String::new(), disabled, endpoints };
    (id, s)
}

pub fn endpoint(method: &str, path: &str) -> Endpoint {
    Endpoint { method: method.into(), path: path.into() }
}

/// A grant valid from an hour before `now`, without end.
pub fn grant(
    id: &str,
    svc: &str,
    subject: GrantSubject,
    endpoints: Vec<Endpoint>,
    now: SystemTime,
) -> AccessGrant {
    AccessGrant {
        id: id.into(),
        service: service(svc),
        endpoints,
        subject,
        legal_basis: "Nghị định 47/2020/NĐ-CP".into(),
        valid_from: now - Duration::from_secs(3600),
        valid_until: None,
        granted_by: member(B),
        granted_at: now - Duration::from_secs(3600),
    }
}

pub fn cons() -> ClientId {
    ClientId::Subsystem(subsystem(CONS))
}

impl Fixture {
    pub fn new() -> Self {
        let now = SystemTime::now();
        let ca_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let ca =
            CertificateAuthority::init(InstanceId::new("VN").unwrap(), &ca_key, Validity::days(3650), now)
                .unwrap();
        let a = issue(&ca, &member(A), now, Validity::days(365));
        let b = issue(&ca, &member(B), now, Validity::days(365));
        let members = BTreeMap::from([
            registered(A, "Agency A", &["cons", "other"], &a.cert),
            registered(B, "Agency B", &["prov"], &b.cert),
        ]);
        let nodes = BTreeMap::from([
            hosting(NODE_A, 1, &[CONS, "VN/GOV/A/other"]),
            hosting(NODE_B1, 2, &[PROV]),
            hosting(NODE_B2, 3, &[PROV]),
            hosting(NODE_B3, 4, &[]),
        ]);
        let services = BTreeMap::from([
            published(
                PETS,
                ServiceType::Rest,
                false,
                vec![endpoint("GET", "/pets/*"), endpoint("POST", "/pets")],
            ),
            published(SPEC, ServiceType::OpenApi, false, vec![]),
            published(SOAP, ServiceType::Wsdl, false, vec![]),
            published(OFF, ServiceType::Rest, true, vec![]),
            published(OPEN, ServiceType::Rest, false, vec![]),
        ]);
        let to_cons = || GrantSubject::Client(cons());
        let grants = vec![
            grant("g-pets", PETS, to_cons(), vec![endpoint("GET", "/pets/*")], now),
            grant("g-spec", SPEC, to_cons(), vec![], now),
            grant("g-soap", SOAP, to_cons(), vec![], now),
            grant("g-off", OFF, to_cons(), vec![], now),
            grant("g-group", OPEN, GrantSubject::Group(GROUP.parse().unwrap()), vec![], now),
        ];
        let group_id: lienthong_types::GlobalGroupId = GROUP.parse().unwrap();
        let global_groups = BTreeMap::from([(
            group_id.clone(),
            GlobalGroup {
                id: group_id,
                description: "every consumer".into(),
                members: BTreeSet::from([cons()]),
            },
        )]);
        let conf = GlobalConf {
            instance: InstanceId::new("VN").unwrap(),
            version: 1,
            generated_at: now,
            expires_at: now + Duration::from_secs(600),
            member_classes: BTreeSet::from(["GOV".parse().unwrap()]),
            approved_cas: vec![ca.certificate().clone()],
            members,
            nodes,
            services,
            grants,
            global_groups,
            federation_partners: vec![],
            registry_urls: vec![],
            signing_keys: vec![],
        };
        Self { ca, now, conf, a, b }
    }

    /// A request from `A/cons` on `ss-a` for `GET /pets/7?full=1` of `svc`, unsigned.
    pub fn unsigned_request(&self, svc: &str) -> pb::RequestEnvelope {
        let body = b"{}";
        pb::RequestEnvelope {
            message_id: "VN-3f6c1e2a".into(),
            request_id: "0b8e4e1c-7d1a-4a55-9d0e-2c3f4a5b6c7d".into(),
            client: Some((&cons()).into()),
            service: Some((&service(svc)).into()),
            method: "GET".into(),
            path: "/pets/7".into(),
            query: "full=1".into(),
            headers: vec![
                types_pb::Header { name: "accept".into(), value: b"application/json".to_vec() },
                types_pb::Header { name: "x-road-client".into(), value: CONS.as_bytes().to_vec() },
            ],
            user_id: "VN012345678".into(),
            issue: "HS-1".into(),
            represented_party: None,
            target_node: None,
            consumer_node: Some((&node(NODE_A)).into()),
            created_at_ms: to_millis(self.now),
            body_sha256: Sha256::digest(body).to_vec(),
            body_length: body.len() as u64,
            ..Default::default()
        }
    }

    /// [`Fixture::unsigned_request`] signed by A.
    pub fn request(&self, svc: &str) -> pb::RequestEnvelope {
        let mut env = self.unsigned_request(svc);
        envelope::sign_request(&mut env, self.a.signer()).unwrap();
        env
    }

    /// Signs `env` again with A's key (after a test changed it on purpose).
    pub fn resign(&self, env: &mut pb::RequestEnvelope) {
        envelope::sign_request(env, self.a.signer()).unwrap();
    }

    /// B's answer to [`Fixture::request`], signed by B.
    pub fn response(&self) -> pb::ResponseEnvelope {
        let req = self.request(PETS);
        let body = br#"{"name":"Rex"}"#;
        let mut env = pb::ResponseEnvelope {
            message_id: req.message_id,
            request_id: req.request_id,
            client: req.client,
            service: req.service,
            request_hash: "aGFzaA==".into(),
            status: 200,
            headers: vec![types_pb::Header {
                name: "content-type".into(),
                value: b"application/json".to_vec(),
            }],
            fault: None,
            provider_node: Some((&node(NODE_B1)).into()),
            created_at_ms: to_millis(self.now),
            body_sha256: Sha256::digest(body).to_vec(),
            body_length: body.len() as u64,
            ..Default::default()
        };
        envelope::sign_response(&mut env, self.b.signer()).unwrap();
        env
    }

    pub fn member_mut(&mut self, id: &str) -> &mut Member {
        self.conf.members.get_mut(&member(id)).unwrap()
    }

    pub fn service_mut(&mut self, id: &str) -> &mut Service {
        self.conf.services.get_mut(&service(id)).unwrap()
    }

    pub fn node_mut(&mut self, id: &str) -> &mut Node {
        self.conf.nodes.get_mut(&node(id)).unwrap()
    }
}
