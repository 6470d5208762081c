//! The bad-input matrix (`../shared/design/test-matrix.md`, bad inputs 1-4, 6-8, 13, 14) run in
//! memory against the protocol's steps: every case is a client call or a peer's envelope that
//! a step must refuse with a stable fault, on the right side, before anything is signed, logged
//! or served. The socket tests (`tests/tests/node_bad_input.rs`) keep what only sockets show.
//!
//! The world is `support`'s: node `ss-a` hosts client `A/cons`, nodes `ss-b1`/`ss-b2` host the
//! provider `B/prov`.

mod support;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use lienthong_exchange::consumer::{self, Call, ClientAuth, Connection};
use lienthong_exchange::envelope::{self, ENVELOPE_HEADER, Signer};
use lienthong_exchange::failure::{self, BodyOf, BodyProblem, SendProblem, ServiceProblem};
use lienthong_exchange::provider::{self, Served};
use lienthong_exchange::record::{Direction, Role};
use lienthong_exchange::{Digests, Node, Refused, Signed, SigningKeys};
use lienthong_globalconf::{GlobalConf, to_millis};
use lienthong_pki::{Certificate, Fingerprint, PrivateKey};
use lienthong_proto::exchange::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{Fault, MemberId};
use sha2::{Digest, Sha256, Sha512};
use support::*;

const SKEW: Duration = Duration::from_secs(60);
const BODY: &[u8] = br#"{"name":"Rex"}"#;
const ANSWER: &[u8] = br#"{"id":7}"#;

fn digests(body: &[u8]) -> Digests {
    Digests {
        sha256: Sha256::digest(body).into(),
        sha512: Sha512::digest(body).into(),
        len: body.len() as u64,
    }
}

/// The fixture's instance with each side's signing keys as a node holds them.
struct World {
    conf: GlobalConf,
    now: SystemTime,
    nodes: Vec<lienthong_types::NodeId>,
    /// `A/cons`'s request for `GET /pets/7?full=1` of `pets`, unsigned.
    template: pb::RequestEnvelope,
    keys_a: SigningKeys,
    keys_b: SigningKeys,
    a_cert: Certificate,
}

impl World {
    fn new() -> Self {
        let f = Fixture::new();
        let template = f.unsigned_request(PETS);
        let Fixture { conf, now, a, b, .. } = f;
        let a_cert = a.cert.clone();
        let keys = |m: &str, key: PrivateKey, cert: Certificate| {
            SigningKeys::from([(member(m), (Arc::new(key), cert))])
        };
        let nodes = [NODE_A, NODE_B1, NODE_B2, NODE_B3, "VN/GOV/A/ss-ghost"].map(node).to_vec();
        Self {
            conf,
            now,
            nodes,
            template,
            keys_a: keys(A, a.key, a.cert),
            keys_b: keys(B, b.key, b.cert),
            a_cert,
        }
    }

    fn node(&self, id: &str) -> &lienthong_types::NodeId {
        self.nodes.iter().find(|n| n.to_string() == id).unwrap()
    }

    fn signer(&self, keys: &SigningKeys, m: &str) -> (Arc<PrivateKey>, Certificate) {
        keys[&m.parse::<MemberId>().unwrap()].clone()
    }
}

// ----- the consumer: a client's call -----------------------------------------------------

/// Everything a consumer-side case may change.
struct ClientCase {
    method: Method,
    uri: String,
    headers: HeaderMap,
    source: IpAddr,
    tls: bool,
    cert: Option<Fingerprint>,
    auth: Auth,
    conf: Option<GlobalConf>,
    now: SystemTime,
    max_header_bytes: usize,
    own: &'static str,
}

#[derive(Clone)]
enum Auth {
    Open,
    Loopback,
    Tls,
    TlsCert(Option<HashSet<Fingerprint>>),
}

fn header(h: &mut HeaderMap, name: &str, value: &[u8]) {
    h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).unwrap());
}

impl ClientCase {
    fn new(w: &World) -> Self {
        let mut headers = HeaderMap::new();
        header(&mut headers, "x-road-client", CONS.as_bytes());
        header(&mut headers, "content-type", b"application/json");
        Self {
            method: Method::GET,
            uri: format!("/r1/{PETS}/pets/7?full=1"),
            headers,
            source: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
            tls: false,
            cert: None,
            auth: Auth::Open,
            conf: Some(w.conf.clone()),
            now: w.now,
            max_header_bytes: 16 * 1024,
            own: NODE_A,
        }
    }

    fn set(&mut self, name: &str, value: &str) {
        self.headers
            .insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }

    /// Runs [`consumer::prepare`] on this call.
    fn prepare<'a>(&'a self, w: &'a World) -> Result<consumer::Prepared<'a>, Refused> {
        let uri: Uri = self.uri.parse().unwrap();
        let connection = Connection { source: self.source, tls: self.tls, client_cert: self.cert.as_ref() };
        let call = Call { method: &self.method, uri: &uri, headers: &self.headers, connection };
        let auth = |_: &lienthong_types::ClientId| match &self.auth {
            Auth::Open => ClientAuth::Open,
            Auth::Loopback => ClientAuth::Loopback,
            Auth::Tls => ClientAuth::Tls,
            Auth::TlsCert(set) => ClientAuth::TlsCert(set.as_ref()),
        };
        let rotation = || 0;
        let cx = consumer::Context {
            node: Node { id: w.node(self.own), signing: &w.keys_a, protection: &Signed },
            conf: self.conf.as_ref(),
            now: self.now,
            max_header_bytes: self.max_header_bytes,
            client_auth: &auth,
            rotation: &rotation,
        };
        let mut n = 0;
        let mut new_id = || {
            n += 1;
            format!("00000000-0000-4000-8000-{n:012}")
        };
        consumer::prepare(&call, &cx, &mut new_id)
    }
}

/// One row of a table: what is changed, and the fault it must be refused with.
struct Row<T> {
    name: &'static str,
    change: fn(&mut T),
    fault: Fault,
}

macro_rules! rows {
    ($($name:literal => $fault:expr, $change:expr;)*) => {
        vec![$(Row { name: $name, change: $change, fault: $fault }),*]
    };
}

/// Prints a table's size and run time (`--nocapture` shows them): what the matrix reports.
#[allow(clippy::print_stderr)]
fn report(table: &str, cases: usize, started: Instant) {
    eprintln!("{table} matrix: {cases} cases in {} ms", started.elapsed().as_millis());
}

fn long(n: usize) -> String {
    "x".repeat(n)
}

fn client_rows() -> Vec<Row<ClientCase>> {
    rows![
        // Method and size of the head.
        "method CONNECT" => Fault::InvalidHttpMethod, |c| c.method = Method::CONNECT;
        "method not in HTTP" => Fault::InvalidHttpMethod, |c| c.method = Method::from_bytes(b"BREW").unwrap();
        "too many header bytes" => Fault::BadRequest, |c| c.max_header_bytes = 40;
        // Malformed service identifiers (matrix 1).
        "not an r1 path" => Fault::BadRequest, |c| c.uri = "/pets/7".into();
        "another protocol version" => Fault::BadRequest, |c| c.uri = format!("/r2/{PETS}/x");
        "too few segments" => Fault::InvalidServiceIdentifier, |c| c.uri = "/r1/VN/GOV/B/prov".into();
        "empty segment" => Fault::InvalidServiceIdentifier, |c| c.uri = "/r1/VN/GOV//prov/pets".into();
        "character outside the set" => Fault::InvalidServiceIdentifier, |c| c.uri = "/r1/VN/GOV/B%3C/prov/pets".into();
        "control character" => Fault::InvalidServiceIdentifier, |c| c.uri = "/r1/VN/GOV/B%00/prov/pets".into();
        "invalid UTF-8" => Fault::InvalidServiceIdentifier, |c| c.uri = "/r1/VN/GOV/B%C3%28/prov/pets".into();
        "over-long code" => Fault::InvalidServiceIdentifier, |c| c.uri = format!("/r1/VN/GOV/B/prov/{}", long(256));
        // Paths a backend could read as another path (matrix 13).
        "dot-dot" => Fault::BadRequest, |c| c.uri = format!("/r1/{PETS}/pets/../admin");
        "encoded dot-dot" => Fault::BadRequest, |c| c.uri = format!("/r1/{PETS}/pets/%2e%2e/admin");
        "encoded dot-dot-slash" => Fault::BadRequest, |c| c.uri = format!("/r1/{PETS}/pets/%2e%2e%2fadmin");
        "dot-dot with parameters" => Fault::BadRequest, |c| c.uri = format!("/r1/{PETS}/pets/..;/admin");
        "dot-dot backslash" => Fault::BadRequest, |c| c.uri = format!("/r1/{PETS}/pets/..%5cadmin");
        "double-encoded dot-dot" => Fault::BadRequest, |c| c.uri = format!("/r1/{PETS}/pets/%252e%252e/admin");
        "empty path segment" => Fault::BadRequest, |c| c.uri = format!("/r1/{PETS}/pets//admin");
        "encoded NUL in the path" => Fault::BadRequest, |c| c.uri = format!("/r1/{PETS}/pets/a%00b");
        // The client (matrix 2).
        "X-Road-Client missing" => Fault::InvalidClientIdentifier, |c| { c.headers.remove("x-road-client"); };
        "X-Road-Client repeated" => Fault::InvalidClientIdentifier, |c| header(&mut c.headers, "x-road-client", CONS.as_bytes());
        "X-Road-Client malformed" => Fault::InvalidClientIdentifier, |c| c.set("x-road-client", "VN/GOV");
        "X-Road-Client not text" => Fault::InvalidClientIdentifier, |c| { c.headers.insert("x-road-client", HeaderValue::from_bytes(b"VN/GOV/A/\xff").unwrap()); };
        "client of a member this node does not speak for" => Fault::UnknownClient, |c| c.set("x-road-client", PROV);
        "subsystem not hosted here" => Fault::UnknownClient, |c| c.set("x-road-client", "VN/GOV/A/elsewhere");
        "hosted subsystem not registered" => Fault::UnknownClient, |c| {
            c.set("x-road-client", "VN/GOV/A/ghost");
            let conf = c.conf.as_mut().unwrap();
            conf.nodes.get_mut(&node(NODE_A)).unwrap().hosted_subsystems.insert(subsystem("VN/GOV/A/ghost"));
        };
        // The node's own standing.
        "no configuration yet" => Fault::ClientGlobalConfOutdated, |c| c.conf = None;
        "configuration expired" => Fault::ClientGlobalConfOutdated, |c| c.now += Duration::from_secs(3600);
        "this node is not registered" => Fault::ClientInternalError, |c| c.own = "VN/GOV/A/ss-ghost";
        "this node in maintenance" => Fault::ClientMaintenanceMode, |c| {
            c.conf.as_mut().unwrap().nodes.get_mut(&node(NODE_A)).unwrap().maintenance = true;
        };
        // Client authentication.
        "loopback only, from afar" => Fault::ClientSslAuthenticationFailed, |c| c.auth = Auth::Loopback;
        "HTTPS only, over HTTP" => Fault::ClientSslAuthenticationFailed, |c| c.auth = Auth::Tls;
        "certificate required, none shown" => Fault::ClientSslAuthenticationFailed, |c| {
            c.tls = true;
            c.auth = Auth::TlsCert(Some(HashSet::from([Fingerprint([9; 32])])));
        };
        "certificate required, another shown" => Fault::ClientSslAuthenticationFailed, |c| {
            c.tls = true;
            c.cert = Some(Fingerprint([8; 32]));
            c.auth = Auth::TlsCert(Some(HashSet::from([Fingerprint([9; 32])])));
        };
        "certificate required, none registered" => Fault::ClientSslAuthenticationFailed, |c| {
            c.tls = true;
            c.cert = Some(Fingerprint([8; 32]));
            c.auth = Auth::TlsCert(None);
        };
        // The X-Road headers.
        "X-Road-Security-Server malformed" => Fault::InvalidSecurityServer, |c| c.set("x-road-security-server", "VN/GOV");
        "X-Road-Security-Server repeated" => Fault::InvalidSecurityServer, |c| {
            header(&mut c.headers, "x-road-security-server", NODE_B1.as_bytes());
            header(&mut c.headers, "x-road-security-server", NODE_B1.as_bytes());
        };
        "X-Road-Security-Server not hosting the service" => Fault::InvalidSecurityServer, |c| c.set("x-road-security-server", NODE_B3);
        "X-Road-Security-Server in maintenance" => Fault::ClientMaintenanceMode, |c| {
            c.set("x-road-security-server", NODE_B1);
            c.conf.as_mut().unwrap().nodes.get_mut(&node(NODE_B1)).unwrap().maintenance = true;
        };
        "X-Road-Represented-Party malformed" => Fault::BadRequest, |c| c.set("x-road-represented-party", "VN");
        "X-Road-Id too long" => Fault::BadRequest, |c| c.set("x-road-id", &long(256));
        "X-Road-Id with a control character" => Fault::BadRequest, |c| { c.headers.insert("x-road-id", HeaderValue::from_bytes(b"a\tb").unwrap()); };
        "X-Road-Id repeated" => Fault::BadRequest, |c| { header(&mut c.headers, "x-road-id", b"a"); header(&mut c.headers, "x-road-id", b"b"); };
        "X-Road-UserId too long" => Fault::BadRequest, |c| c.set("x-road-userid", &long(256));
        "X-Road-Issue too long" => Fault::BadRequest, |c| c.set("x-road-issue", &long(1025));
        // The provider (matrix 3).
        "unknown member" => Fault::ClientUnknownMember, |c| c.uri = "/r1/VN/GOV/Z/prov/pets".into();
        "unknown subsystem" => Fault::ClientUnknownMember, |c| c.uri = "/r1/VN/GOV/B/nope/pets".into();
        "unknown service" => Fault::ClientUnknownService, |c| c.uri = "/r1/VN/GOV/B/prov/nope".into();
        "provider member closed" => Fault::ClientUnknownMember, |c| {
            c.conf.as_mut().unwrap().members.get_mut(&member(B)).unwrap().status = lienthong_globalconf::MemberStatus::Closed;
        };
        "every provider node in maintenance" => Fault::ClientMaintenanceMode, |c| {
            for n in [NODE_B1, NODE_B2] {
                c.conf.as_mut().unwrap().nodes.get_mut(&node(n)).unwrap().maintenance = true;
            }
        };
        // Body length declarations (matrix 4, 5).
        "Content-Length repeated" => Fault::BadRequest, |c| { header(&mut c.headers, "content-length", b"2"); header(&mut c.headers, "content-length", b"2"); };
        "Content-Length malformed" => Fault::BadRequest, |c| c.set("content-length", "2x");
        "Content-Length negative" => Fault::BadRequest, |c| c.set("content-length", "-1");
        // An envelope the provider could not accept (matrix 14).
        "query too long to carry" => Fault::BadRequest, |c| c.uri = format!("/r1/{PETS}/pets/7?q={}", long(60_000));
        "headers too large to carry" => Fault::BadRequest, |c| {
            c.max_header_bytes = 1 << 20;
            for i in 0..40 {
                c.set(&format!("x-filler-{i}"), &long(1500));
            }
        };
    ]
}

#[test]
fn every_bad_client_call_is_refused_by_the_consumer_before_anything_is_read() {
    let w = World::new();
    let started = Instant::now();
    let rows = client_rows();
    for row in &rows {
        let mut case = ClientCase::new(&w);
        (row.change)(&mut case);
        let refused = match case.prepare(&w) {
            Ok(_) => panic!("{}: prepared, but must be refused with {}", row.name, row.fault),
            Err(r) => r,
        };
        assert_eq!(refused.reject.fault, row.fault, "{}: {}", row.name, refused.reject.message);
        assert_eq!(refused.side, Role::Consumer, "{}", row.name);
        assert!(!refused.facts.request_logged, "{}: nothing was logged", row.name);
        // Its record: a request refused, with the source of a client not yet authenticated.
        let verdict = refused.verdict("d6c0f0a4-0000-4000-8000-000000000001");
        assert_eq!(verdict.status, row.fault.http_status(), "{}", row.name);
        let rec = refused.record(&verdict, &node(NODE_A), w.now, &Signed).expect("a record");
        assert_eq!(rec.direction, Direction::Request as i32, "{}", row.name);
        assert_eq!(
            rec.fault.as_ref().map(|f| f.code.as_str()),
            Some(row.fault.code().as_str()),
            "{}",
            row.name
        );
        assert_eq!(rec.source_address.is_empty(), refused.facts.authenticated, "{}", row.name);
    }
    report("consumer", rows.len(), started);
}

#[test]
fn a_well_formed_call_is_prepared_with_the_final_ids_among_its_headers() {
    let w = World::new();
    let mut case = ClientCase::new(&w);
    case.set("x-road-id", "client-chosen-id");
    case.set("x-road-request-id", "forged");
    let prepared = case.prepare(&w).unwrap();
    assert_eq!(prepared.ids(), ("client-chosen-id", "00000000-0000-4000-8000-000000000001"));
    assert!(prepared.facts().authenticated);
    let sealed = prepared.seal(&digests(BODY), w.now).unwrap();
    assert_eq!(sealed.nodes(), [node(NODE_B1), node(NODE_B2)]);
    let (env, _): (pb::RequestEnvelope, Vec<u8>) =
        envelope::from_header(Some(sealed.header.as_bytes()), Fault::InvalidMessage).unwrap();
    let ids: Vec<_> = env
        .headers
        .iter()
        .filter(|h| h.name.starts_with("x-road-"))
        .map(|h| (h.name.as_str(), h.value.as_slice()))
        .collect();
    assert_eq!(
        ids,
        [
            ("x-road-client", CONS.as_bytes()),
            ("x-road-id", b"client-chosen-id".as_slice()),
            ("x-road-request-id", b"00000000-0000-4000-8000-000000000001".as_slice())
        ]
    );
    assert!(sealed.record.is_some(), "the signed request has its record");
}

// ----- the provider: a peer's envelope ---------------------------------------------------

/// Everything a provider-side case may change: the envelope (signed by A after `change`
/// unless the case re-signs or strips it), who sent it, and the provider's situation.
struct PeerCase {
    env: pb::RequestEnvelope,
    /// Sign with A's key after the change (false: leave as changed, e.g. tampered or unsigned).
    sign: bool,
    /// Replaces the header value altogether.
    raw_header: Option<Vec<u8>>,
    peer: &'static str,
    own: &'static str,
    conf: Option<GlobalConf>,
    now: SystemTime,
}

impl PeerCase {
    fn new(w: &World) -> Self {
        let mut env = w.template.clone();
        env.body_sha256 = Sha256::digest(BODY).to_vec();
        env.body_length = BODY.len() as u64;
        Self {
            env,
            sign: true,
            raw_header: None,
            peer: NODE_A,
            own: NODE_B1,
            conf: Some(w.conf.clone()),
            now: w.now,
        }
    }

    fn admit<'a>(
        &self,
        w: &'a World,
        conf: Option<&'a GlobalConf>,
    ) -> Result<provider::Admission<'a>, Refused> {
        let mut env = self.env.clone();
        if self.sign {
            let (key, cert) = w.signer(&w.keys_a, A);
            envelope::sign_request(&mut env, Signer { key: &key, certificate: &cert }).unwrap();
        }
        let mut head = HeaderMap::new();
        let value = self.raw_header.clone().unwrap_or_else(|| envelope::to_header(&env).into_bytes());
        if !value.is_empty() {
            head.insert(ENVELOPE_HEADER, HeaderValue::from_bytes(&value).unwrap());
        }
        let cx = provider::Context {
            node: Node { id: w.node(self.own), signing: &w.keys_b, protection: &Signed },
            conf,
            now: self.now,
            max_skew: SKEW,
        };
        provider::admit(&head, w.node(self.peer), &cx)
    }
}

fn peer_rows() -> Vec<Row<PeerCase>> {
    rows![
        // The envelope itself.
        "no envelope" => Fault::InvalidMessage, |c| c.raw_header = Some(vec![]);
        "envelope not base64" => Fault::InvalidMessage, |c| c.raw_header = Some(b"%%%".to_vec());
        "envelope not protobuf" => Fault::InvalidMessage, |c| c.raw_header = Some(b"//////////8=".to_vec());
        "envelope over the limit" => Fault::InvalidMessage, |c| c.raw_header = Some(vec![b'A'; envelope::MAX_ENVELOPE_HEADER_LEN + 4]);
        "no client" => Fault::InvalidMessage, |c| c.env.client = None;
        "no service" => Fault::InvalidMessage, |c| c.env.service = None;
        "no consumer node" => Fault::InvalidMessage, |c| c.env.consumer_node = None;
        "no message id" => Fault::InvalidMessage, |c| c.env.message_id.clear();
        "no request id" => Fault::InvalidMessage, |c| c.env.request_id.clear();
        "no method" => Fault::InvalidMessage, |c| c.env.method.clear();
        // The provider's own standing.
        "no configuration yet" => Fault::ServerGlobalConfOutdated, |c| c.conf = None;
        "configuration expired" => Fault::ServerGlobalConfOutdated, |c| c.now += Duration::from_secs(3600);
        "this node in maintenance" => Fault::ServerMaintenanceMode, |c| {
            c.conf.as_mut().unwrap().nodes.get_mut(&node(NODE_B1)).unwrap().maintenance = true;
        };
        // Who sent it (matrix 6).
        "for another node" => Fault::InvalidSecurityServer, |c| c.env.target_node = Some((&node(NODE_B2)).into());
        "sender names another node" => Fault::ServerSslAuthenticationFailed, |c| c.peer = NODE_B2;
        "sender does not host the client" => Fault::ServerSslAuthenticationFailed, |c| {
            c.env.consumer_node = Some((&node(NODE_B2)).into());
            c.peer = NODE_B2;
        };
        "client not registered" => Fault::ServerUnknownMember, |c| {
            c.env.client = Some((&lienthong_types::ClientId::Subsystem(subsystem("VN/GOV/A/ghost"))).into());
            let conf = c.conf.as_mut().unwrap();
            conf.nodes.get_mut(&node(NODE_A)).unwrap().hosted_subsystems.insert(subsystem("VN/GOV/A/ghost"));
        };
        // Time (fault 7 of the matrix).
        "too old" => Fault::ClockSkew, |c| c.env.created_at_ms -= 120_000;
        "from the future" => Fault::ClockSkew, |c| c.env.created_at_ms += 120_000;
        // Signatures (matrix 7).
        "unsigned" => Fault::ServerMissingSignature, |c| c.sign = false;
        "signed, then its path altered" => Fault::ServerInvalidSignatureValue, |c| {
            c.sign = false;
            sign_then(c, |e| e.path = "/pets/8".into());
        };
        "signed, then its ids swapped" => Fault::ServerInvalidSignatureValue, |c| {
            c.sign = false;
            sign_then(c, |e| std::mem::swap(&mut e.message_id, &mut e.request_id));
        };
        "signed, then its body digest altered" => Fault::ServerInvalidSignatureValue, |c| {
            c.sign = false;
            sign_then(c, |e| e.body_length += 1);
        };
        "signature names another certificate" => Fault::ServerInvalidSignatureValue, |c| {
            c.sign = false;
            sign_then(c, |e| e.signature.as_mut().unwrap().signer_sha256 = vec![0; 32]);
        };
        "signed by the wrong member" => Fault::ServerInvalidSignatureValue, |c| {
            c.sign = false;
            let w = World::new();
            let (key, cert) = w.signer(&w.keys_b, B);
            envelope::sign_request(&mut c.env, Signer { key: &key, certificate: &cert }).unwrap();
        };
        "signer's certificate no longer registered" => Fault::ServerInvalidSignatureValue, |c| {
            c.conf.as_mut().unwrap().members.get_mut(&member(A)).unwrap().signing_certs.clear();
        };
        // The service (matrix 3).
        "service not hosted on this node" => Fault::ServerUnknownService, |c| c.own = NODE_B3;
        "service not registered" => Fault::ServerUnknownService, |c| c.env.service = Some((&service("VN/GOV/B/prov/nope")).into());
        "not a REST service" => Fault::ServerUnknownService, |c| c.env.service = Some((&service(SOAP)).into());
        "service disabled" => Fault::ServiceDisabled, |c| c.env.service = Some((&service(OFF)).into());
        // The path rule (matrix 13), on what the envelope carries.
        "dot-dot in the envelope" => Fault::InvalidMessage, |c| c.env.path = "/pets/../admin".into();
        "encoded slash in the envelope" => Fault::InvalidMessage, |c| c.env.path = "/pets/a%2fb".into();
        "backslash in the envelope" => Fault::InvalidMessage, |c| c.env.path = "/pets/..\\admin".into();
        // Grants (matrix 8).
        "method not granted" => Fault::AccessDenied, |c| c.env.method = "POST".into();
        "path not granted" => Fault::AccessDenied, |c| c.env.path = "/owners/1".into();
        "grant revoked in a newer configuration" => Fault::AccessDenied, |c| {
            c.conf.as_mut().unwrap().grants.retain(|g| g.id != "g-pets");
        };
        "grant not yet valid" => Fault::AccessDenied, |c| {
            let now = c.now;
            for g in &mut c.conf.as_mut().unwrap().grants {
                g.valid_from = now + Duration::from_secs(30);
            }
        };
    ]
}

/// Signs the case's envelope with A's key, then applies `after` (a change after signing).
fn sign_then(c: &mut PeerCase, after: fn(&mut pb::RequestEnvelope)) {
    let w = World::new();
    let (key, cert) = w.signer(&w.keys_a, A);
    envelope::sign_request(&mut c.env, Signer { key: &key, certificate: &cert }).unwrap();
    after(&mut c.env);
}

#[test]
fn every_bad_envelope_is_refused_by_the_provider_before_the_backend() {
    let w = World::new();
    let started = Instant::now();
    let rows = peer_rows();
    for row in &rows {
        let mut case = PeerCase::new(&w);
        (row.change)(&mut case);
        let conf = case.conf.clone();
        let refused = match case.admit(&w, conf.as_ref()) {
            Ok(_) => panic!("{}: admitted, but must be refused with {}", row.name, row.fault),
            Err(r) => r,
        };
        assert_eq!(refused.reject.fault, row.fault, "{}: {}", row.name, refused.reject.message);
        assert_refusal_answer(&w, &refused, row.name);
    }
    report("provider", rows.len(), started);
}

/// A provider's refusal: recorded as a request refused, answered with a fault envelope the
/// consumer relays under the same detail.
fn assert_refusal_answer(w: &World, refused: &Refused, name: &str) {
    assert_eq!(refused.side, Role::Provider, "{name}");
    let verdict = refused.verdict("d6c0f0a4-0000-4000-8000-000000000002");
    let rec = refused.record(&verdict, &node(NODE_B1), w.now, &Signed).expect("a record");
    assert_eq!(rec.role, Role::Provider as i32, "{name}");
    assert!(rec.source_address.is_empty(), "{name}: a peer node is proven, no source kept");
    let node_b1 = node(NODE_B1);
    let me = Node { id: &node_b1, signing: &w.keys_b, protection: &Signed };
    let header = provider::refusal(refused, &verdict, me, w.now);
    let (env, _): (pb::ResponseEnvelope, Vec<u8>) =
        envelope::from_header(Some(header.as_bytes()), Fault::InconsistentResponse).unwrap();
    let fault = env.fault.expect("a fault envelope");
    assert_eq!(
        (fault.code.as_str(), fault.detail.as_str()),
        (refused.reject.fault.code().as_str(), verdict.detail.as_str()),
        "{name}"
    );
}

#[test]
fn a_replayed_request_and_an_altered_body_are_refused_after_admission() {
    let w = World::new();
    let case = PeerCase::new(&w);
    // The replay decision is the shell's memory; the refusal is the protocol's.
    let replayed = case.admit(&w, Some(&w.conf)).unwrap().replayed();
    assert_eq!(replayed.reject.fault, Fault::ReplayedMessage);
    assert_refusal_answer(&w, &replayed, "replayed");
    // Predates: only a request older than the process is looked up in the log.
    let admission = case.admit(&w, Some(&w.conf)).unwrap();
    assert!(admission.predates(to_millis(w.now) + 1) && !admission.predates(to_millis(w.now)));
    // A body other than the signed one.
    for (name, body) in
        [("altered body", br#"{"name":"Max"}"#.as_slice()), ("truncated body", &BODY[..3]), ("no body", b"")]
    {
        let refused = case.admit(&w, Some(&w.conf)).unwrap().received(&digests(body), w.now).unwrap_err();
        assert_eq!(refused.reject.fault, Fault::ServerInvalidSignatureValue, "{name}");
        assert!(!refused.facts.request_logged, "{name}");
    }
}

// ----- the round trip, and the consumer's check of the answer ----------------------------

/// A call prepared and sealed on `ss-a`, admitted, received and answered on `ss-b1`: the
/// response envelope's header, for the consumer's checks.
fn round_trip(w: &World, served: Served, answer_body: &[u8]) -> (String, String) {
    let case = ClientCase::new(w);
    let sealed = case.prepare(w).unwrap().seal(&digests(BODY), w.now).unwrap();
    let mut head = HeaderMap::new();
    head.insert(ENVELOPE_HEADER, HeaderValue::from_str(&sealed.header).unwrap());
    let node_b1 = node(NODE_B1);
    let cx = provider::Context {
        node: Node { id: &node_b1, signing: &w.keys_b, protection: &Signed },
        conf: Some(&w.conf),
        now: w.now,
        max_skew: SKEW,
    };
    let admission = provider::admit(&head, &node(NODE_A), &cx).unwrap();
    assert_eq!(admission.admitted().grant_id.as_deref(), Some("g-pets"));
    let mut received = admission.received(&digests(BODY), w.now).unwrap();
    assert!(received.record.take().is_some());
    received.logged();
    let answer = received.answer(served, &digests(answer_body), w.now).unwrap();
    assert!(answer.record.is_some());
    (sealed.header, answer.header)
}

fn json_served() -> Served {
    Served {
        status: 200,
        headers: vec![types_pb::Header { name: "content-type".into(), value: b"application/json".to_vec() }],
    }
}

/// What a consumer-side response case may change: the response envelope (re-signed by B
/// after the change unless `resign` is false), or the whole header value.
struct AnswerCase {
    env: pb::ResponseEnvelope,
    resign: bool,
    raw: Option<Vec<u8>>,
    peer: &'static str,
    body: &'static [u8],
}

fn answer_rows() -> Vec<Row<AnswerCase>> {
    rows![
        "no envelope" => Fault::InconsistentResponse, |c| c.raw = Some(vec![]);
        "envelope not base64" => Fault::InconsistentResponse, |c| c.raw = Some(b"%%%".to_vec());
        "for another message" => Fault::InconsistentResponse, |c| c.env.message_id = "other".into();
        "for another request" => Fault::InconsistentResponse, |c| c.env.request_id = "other".into();
        "for another client" => Fault::InconsistentResponse, |c| c.env.client = Some((&lienthong_types::ClientId::Subsystem(subsystem("VN/GOV/A/other"))).into());
        "for another service" => Fault::InconsistentResponse, |c| c.env.service = Some((&service(OPEN)).into());
        "request hash differs" => Fault::InconsistentResponse, |c| c.env.request_hash = "b3RoZXI=".into();
        "names another provider node" => Fault::InconsistentResponse, |c| c.env.provider_node = Some((&node(NODE_B2)).into());
        "from another node than it names" => Fault::InconsistentResponse, |c| c.peer = NODE_B2;
        "unsigned" => Fault::ClientMissingSignature, |c| { c.env.signature = None; c.resign = false; };
        "altered after signing" => Fault::ClientInvalidSignatureValue, |c| { c.env.status = 201; c.resign = false; };
        "headers added after signing" => Fault::ClientInvalidSignatureValue, |c| {
            c.env.headers.push(types_pb::Header { name: "set-cookie".into(), value: b"a=b".to_vec() });
            c.resign = false;
        };
        "body altered" => Fault::ClientInvalidSignatureValue, |c| c.body = br#"{"id":8}"#;
        "body truncated" => Fault::ClientInvalidSignatureValue, |c| c.body = b"{";
    ]
}

#[test]
fn every_bad_answer_is_refused_by_the_consumer_and_nothing_is_released() {
    let w = World::new();
    let started = Instant::now();
    let rows = answer_rows();
    let (b_key, b_cert) = w.signer(&w.keys_b, B);
    for row in &rows {
        let (_, header) = round_trip(&w, json_served(), ANSWER);
        let (env, _): (pb::ResponseEnvelope, Vec<u8>) =
            envelope::from_header(Some(header.as_bytes()), Fault::InconsistentResponse).unwrap();
        let mut case = AnswerCase { env, resign: true, raw: None, peer: NODE_B1, body: ANSWER };
        (row.change)(&mut case);
        if case.resign {
            envelope::sign_response(&mut case.env, Signer { key: &b_key, certificate: &b_cert }).unwrap();
        }
        // The consumer's side of the same exchange, up to the answer.
        let client = ClientCase::new(&w);
        let mut sealed = client.prepare(&w).unwrap().seal(&digests(BODY), w.now).unwrap();
        sealed.logged();
        let mut head = HeaderMap::new();
        let value = case.raw.clone().unwrap_or_else(|| envelope::to_header(&case.env).into_bytes());
        if !value.is_empty() {
            head.insert(ENVELOPE_HEADER, HeaderValue::from_bytes(&value).unwrap());
        }
        let refused = match sealed.accept_response(&node(case.peer), &head, w.now) {
            Err(r) => r,
            Ok(accepted) => match accepted.finish(&digests(case.body), w.now) {
                Err(r) => r,
                Ok(_) => panic!("{}: released, but must be refused with {}", row.name, row.fault),
            },
        };
        assert_eq!(refused.reject.fault, row.fault, "{}: {}", row.name, refused.reject.message);
        assert_eq!(refused.side, Role::Consumer);
        // The request was logged: the refusal is the exchange's response, naming the peer.
        let verdict = refused.verdict("d6c0f0a4-0000-4000-8000-000000000003");
        let rec = refused.record(&verdict, &node(NODE_A), w.now, &Signed).unwrap();
        assert_eq!(rec.direction, Direction::Response as i32, "{}", row.name);
        assert!(rec.peer_node.is_some(), "{}", row.name);
    }
    report("answer", rows.len(), started);
}

#[test]
fn a_round_trip_in_memory_releases_the_answer_with_the_x_road_ids() {
    let w = World::new();
    let client = ClientCase::new(&w);
    let sealed = client.prepare(&w).unwrap().seal(&digests(BODY), w.now).unwrap();
    let mut head = HeaderMap::new();
    head.insert(ENVELOPE_HEADER, HeaderValue::from_str(&sealed.header).unwrap());
    let node_b1 = node(NODE_B1);
    let cx = provider::Context {
        node: Node { id: &node_b1, signing: &w.keys_b, protection: &Signed },
        conf: Some(&w.conf),
        now: w.now,
        max_skew: SKEW,
    };
    let received =
        provider::admit(&head, &node(NODE_A), &cx).unwrap().received(&digests(BODY), w.now).unwrap();
    let answer = received.answer(json_served(), &digests(ANSWER), w.now).unwrap();
    let mut head = HeaderMap::new();
    head.insert(ENVELOPE_HEADER, HeaderValue::from_str(&answer.header).unwrap());
    let release =
        sealed.accept_response(&node_b1, &head, w.now).unwrap().finish(&digests(ANSWER), w.now).unwrap();
    assert_eq!(release.status, 200);
    let h = &release.headers;
    assert_eq!(h["x-road-client"], CONS);
    assert_eq!(h["x-road-service"], PETS);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["content-length"], ANSWER.len().to_string().as_str());
    assert!(h.contains_key("x-road-request-hash") && h.contains_key("x-road-request-id"));
    assert!(release.record.is_some());
    let _ = &w.a_cert;
}

#[test]
fn a_provider_refusal_is_relayed_with_its_code_and_detail() {
    let w = World::new();
    let client = ClientCase::new(&w);
    let sealed = client.prepare(&w).unwrap().seal(&digests(BODY), w.now).unwrap();
    let mut case = PeerCase::new(&w);
    case.env.method = "POST".into();
    let refused = case.admit(&w, Some(&w.conf)).unwrap_err();
    let detail = "5b0c8a52-1111-4222-8333-944455556666";
    let node_b1 = node(NODE_B1);
    let me = Node { id: &node_b1, signing: &w.keys_b, protection: &Signed };
    let header = provider::refusal(&refused, &refused.verdict(detail), me, w.now);
    let mut head = HeaderMap::new();
    head.insert(ENVELOPE_HEADER, HeaderValue::from_str(&header).unwrap());
    let relayed = sealed.accept_response(&node_b1, &head, w.now).unwrap_err();
    let verdict = relayed.verdict("ours-not-used");
    assert_eq!(
        (verdict.code.as_str(), verdict.status, verdict.detail.as_str()),
        ("server.serverproxy.access_denied", 500, detail)
    );
}

#[test]
fn a_response_whose_headers_could_not_reach_the_consumer_is_refused_before_signing() {
    let w = World::new();
    let case = PeerCase::new(&w);
    let received = case.admit(&w, Some(&w.conf)).unwrap().received(&digests(BODY), w.now).unwrap();
    let headers =
        (0..40).map(|i| types_pb::Header { name: format!("x-big-{i}"), value: vec![b'v'; 1500] }).collect();
    let refused = received.answer(Served { status: 200, headers }, &digests(ANSWER), w.now).unwrap_err();
    assert_eq!(refused.reject.fault, Fault::ServiceFailed);
    assert!(refused.reject.message.contains("40 headers"), "{}", refused.reject.message);
}

// ----- the one mapping of I/O failures to faults -----------------------------------------

#[test]
fn each_io_failure_maps_to_its_sides_fault() {
    use BodyProblem::*;
    let e = "the body does not match its declared Content-Length";
    let table = [
        (BodyOf::ClientRequest, TooLarge, Fault::RequestTooLarge),
        (BodyOf::ClientRequest, Storage, Fault::ClientInternalError),
        (BodyOf::ClientRequest, Broken, Fault::BadRequest),
        (BodyOf::ClientRequest, Timeout, Fault::BadRequest),
        (BodyOf::ClientRequest, TooSlow, Fault::BadRequest),
        (BodyOf::PeerRequest, TooLarge, Fault::RequestTooLarge),
        (BodyOf::PeerRequest, Storage, Fault::ServerInternalError),
        (BodyOf::PeerRequest, Broken, Fault::InvalidMessage),
        (BodyOf::PeerResponse, TooLarge, Fault::ClientNetworkError),
        (BodyOf::PeerResponse, Broken, Fault::ClientNetworkError),
        (BodyOf::ServiceResponse, TooLarge, Fault::ServiceFailed),
        (BodyOf::ServiceResponse, Timeout, Fault::ServerNetworkError),
        (BodyOf::ServiceResponse, TooSlow, Fault::ServerNetworkError),
        (BodyOf::ServiceResponse, Broken, Fault::ServiceFailed),
        (BodyOf::ServiceResponse, Storage, Fault::ServiceFailed),
    ];
    for (of, problem, fault) in table {
        assert_eq!(failure::body_fault(of, problem, &e).fault, fault, "{of:?} {problem:?}");
    }
    let n = node(NODE_B1);
    assert_eq!(failure::send_fault(&n, SendProblem::TimedOut).fault, Fault::ClientNetworkError);
    assert_eq!(failure::send_fault(&n, SendProblem::Rejected).fault, Fault::ClientSslAuthenticationFailed);
    assert_eq!(failure::send_fault(&n, SendProblem::Broken).fault, Fault::ClientNetworkError);
    assert_eq!(failure::unreachable_fault().fault, Fault::ClientNetworkError);
    assert_eq!(failure::service_fault(ServiceProblem::Timeout).fault, Fault::ServerNetworkError);
    assert_eq!(failure::service_fault(ServiceProblem::Failed).fault, Fault::ServiceFailed);
}
