//! The peer transport on loopback with an in-memory CA: one pooled HTTP/2 connection per peer,
//! pinned identities on both sides, address failover, and revocation by a new configuration
//! reaching connections that are already open.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use lienthong_exchange::envelope::{ENVELOPE_HEADER, MAX_ENVELOPE_HEADER_LEN};
use lienthong_globalconf::{GlobalConf, Node, NodeAddress};
use lienthong_node::peer::{
    PeerBody, PeerClient, PeerClientOptions, PeerError, PeerServer, PeerServerOptions, PeerTrust, Rejection,
};
use lienthong_pki::tls::{PeerIdentity, TlsIdentity};
use lienthong_pki::{
    CertificateAuthority, Csr, Fingerprint, KeyAlgorithm, PeerRejected, PrivateKey, Validity,
};
use lienthong_types::{InstanceId, NodeId};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

const LIMIT: Duration = Duration::from_secs(10);

/// Every await in these tests is bounded.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut).await.expect("timed out")
}

/// Polls `cond` until it holds, for at most [`LIMIT`].
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(s: &str) -> NodeId {
    s.parse().unwrap()
}

struct Ca(CertificateAuthority);

impl Ca {
    fn new() -> Self {
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let instance = InstanceId::new("VN").unwrap();
        Self(CertificateAuthority::init(instance, &key, Validity::days(3650), SystemTime::now()).unwrap())
    }

    fn issue(&self, id: &NodeId) -> TlsIdentity {
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let csr = Csr::for_node(&key, id).unwrap();
        let cert = self.0.issue_node(&csr, id, Validity::days(30), SystemTime::now()).unwrap();
        TlsIdentity { chain: vec![cert], key: Arc::new(key) }
    }
}

fn fp(id: &TlsIdentity) -> Fingerprint {
    id.chain[0].fingerprint()
}

/// A minimal global configuration: the approved CA and the given nodes.
fn conf(version: u64, ca: &Ca, nodes: &[(&NodeId, Fingerprint, Vec<String>)]) -> GlobalConf {
    let now = SystemTime::now();
    let nodes = nodes
        .iter()
        .map(|(id, auth_cert, urls)| {
            let addresses =
                urls.iter().map(|url| NodeAddress { url: url.clone(), network: "public".into() }).collect();
            let node = Node {
                id: (*id).clone(),
                addresses,
                auth_cert: *auth_cert,
                hosted_subsystems: BTreeSet::new(),
                maintenance: false,
            };
            ((*id).clone(), node)
        })
        .collect();
    GlobalConf {
        version,
        generated_at: now,
        expires_at: now + Duration::from_secs(3600),
        approved_cas: vec![ca.0.certificate().clone()],
        nodes,
        ..GlobalConf::empty(InstanceId::new("VN").unwrap())
    }
}

fn trust(conf: &GlobalConf, own: &TlsIdentity) -> Arc<PeerTrust> {
    Arc::new(PeerTrust::new(conf, own).unwrap())
}

fn url(addr: std::net::SocketAddr) -> String {
    format!("https://{addr}")
}

/// An address where nothing listens.
async fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    url(listener.local_addr().unwrap())
}

fn body(text: &'static str) -> PeerBody {
    Full::new(Bytes::from_static(text.as_bytes())).map_err(|never: Infallible| match never {}).boxed()
}

fn request(path: &str) -> Request<PeerBody> {
    Request::post(path).body(body("ping")).unwrap()
}

async fn text(response: Response<Incoming>) -> String {
    let bytes = within(response.into_body().collect()).await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A response body that never ends: an exchange still in flight.
struct Endless;

impl Body for Endless {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Pending
    }
}

/// A provider node on 127.0.0.1:0. Its handler answers with the node id of the verified peer;
/// `/endless` starts a response that never finishes; `/silent` does not answer for 30 s;
/// `/echo-envelope` sends the request's envelope header back.
struct Provider {
    url: String,
    trust: watch::Sender<Arc<PeerTrust>>,
    handled: Arc<AtomicUsize>,
    peers: Arc<Mutex<BTreeSet<NodeId>>>,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<io::Result<()>>,
}

impl Provider {
    async fn start(initial: Arc<PeerTrust>) -> Self {
        let opts = PeerServerOptions { revoke_grace: Duration::from_millis(200), ..Default::default() };
        let server = PeerServer::bind("127.0.0.1:0").await.unwrap().with_options(opts);
        let url = url(server.local_addr().unwrap());
        let (trust, trust_rx) = watch::channel(initial);
        let handled = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(BTreeSet::new()));
        let handler = {
            let (handled, peers) = (handled.clone(), peers.clone());
            move |req: Request<Incoming>, peer: PeerIdentity| {
                handled.fetch_add(1, Ordering::SeqCst);
                peers.lock().unwrap().insert(peer.node().clone());
                async move {
                    if req.uri().path() == "/endless" {
                        return Response::new(Endless.boxed());
                    }
                    if req.uri().path() == "/silent" {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    if req.uri().path() == "/echo-envelope" {
                        let mut resp = Response::new(body("echoed"));
                        if let Some(v) = req.headers().get(ENVELOPE_HEADER) {
                            resp.headers_mut().insert(ENVELOPE_HEADER, v.clone());
                        }
                        return resp;
                    }
                    let text = peer.node().to_string();
                    Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed())
                }
            }
        };
        let (stop, stopped) = oneshot::channel();
        let served = tokio::spawn(server.serve(trust_rx, handler, async {
            stopped.await.ok();
        }));
        Self { url, trust, handled, peers, stop: Some(stop), served }
    }

    fn handled(&self) -> usize {
        self.handled.load(Ordering::SeqCst)
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        within(self.served).await.unwrap().unwrap();
    }
}

fn client(trust: Arc<PeerTrust>) -> PeerClient {
    let opts = PeerClientOptions {
        connect_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    PeerClient::new(trust, opts)
}

/// Two registered nodes: a consumer `a` and a provider `b`.
struct Pair {
    ca: Ca,
    a: NodeId,
    b: NodeId,
    ia: TlsIdentity,
    ib: TlsIdentity,
}

impl Pair {
    fn new() -> Self {
        let ca = Ca::new();
        let a = node("VN/GOV/000.00.00.G22/ss1");
        let b = node("VN/GOV/000.00.00.G01/ss1");
        let (ia, ib) = (ca.issue(&a), ca.issue(&b));
        Self { ca, a, b, ia, ib }
    }

    /// Both nodes registered, `b` at `b_urls`.
    fn conf(&self, version: u64, b_urls: Vec<String>) -> GlobalConf {
        conf(version, &self.ca, &[(&self.a, fp(&self.ia), vec![]), (&self.b, fp(&self.ib), b_urls)])
    }
}

#[tokio::test]
async fn concurrent_exchanges_share_one_pooled_connection() {
    let p = Pair::new();
    let provider = Provider::start(trust(&p.conf(1, vec![]), &p.ib)).await;
    let consumer = client(trust(&p.conf(1, vec![provider.url.clone()]), &p.ia));

    let mut sends = JoinSet::new();
    for i in 0..50 {
        let (consumer, b) = (consumer.clone(), p.b.clone());
        sends.spawn(async move { consumer.send(&b, request(&format!("/r/{i}"))).await });
    }
    let mut answers = 0;
    while let Some(sent) = within(sends.join_next()).await {
        let response = sent.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // The provider saw the consumer's node id, verified by the pinned handshake.
        assert_eq!(text(response).await, p.a.to_string());
        answers += 1;
    }
    assert_eq!(answers, 50);
    assert_eq!(consumer.handshakes(), 1, "one single-flight connect for 50 concurrent sends");
    assert_eq!(consumer.connection_count(), 1);
    assert_eq!(provider.handled(), 50);
    assert_eq!(*provider.peers.lock().unwrap(), BTreeSet::from([p.a.clone()]));

    // Later exchanges reuse the same connection.
    let response = within(consumer.send(&p.b, request("/again"))).await.unwrap();
    assert_eq!(text(response).await, p.a.to_string());
    assert_eq!(consumer.handshakes(), 1);

    provider.shutdown().await;
}

/// Both ends share one header limit, made for the largest envelope a node signs: such an
/// envelope reaches the provider, and one as large comes back.
#[tokio::test]
async fn the_largest_envelope_header_crosses_in_both_directions() {
    let p = Pair::new();
    let provider = Provider::start(trust(&p.conf(1, vec![]), &p.ib)).await;
    let consumer = client(trust(&p.conf(1, vec![provider.url.clone()]), &p.ia));
    let largest = "A".repeat(MAX_ENVELOPE_HEADER_LEN);
    let req = Request::post("/echo-envelope").header(ENVELOPE_HEADER, &largest).body(body("x")).unwrap();
    let response = within(consumer.send(&p.b, req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response.headers().get(ENVELOPE_HEADER).map(|v| v.len());
    assert_eq!(echoed, Some(largest.len()));
    assert_eq!(text(response).await, "echoed");
    provider.shutdown().await;
}

#[tokio::test]
async fn the_provider_refuses_unknown_cas_and_unregistered_certificates() {
    let p = Pair::new();
    let provider = Provider::start(trust(&p.conf(1, vec![]), &p.ib)).await;
    let consumer_conf = p.conf(1, vec![provider.url.clone()]);

    // Node a's id, from a CA the configuration does not approve.
    let rogue = Ca::new().issue(&p.a);
    // Node a's id, from the approved CA, but not the registered certificate.
    let unregistered = p.ca.issue(&p.a);
    for own in [&rogue, &unregistered] {
        let consumer = client(trust(&consumer_conf, own));
        let err = within(consumer.send(&p.b, request("/"))).await.unwrap_err();
        assert!(err.is_before_send(), "{err}");
        assert!(
            matches!(&err, PeerError::Rejected { reason: Rejection::ByPeer(_), .. }),
            "the provider's refusal surfaces at connect: {err:?}"
        );
        assert_eq!(consumer.connection_count(), 0);
    }
    assert_eq!(provider.handled(), 0);

    // The registered certificate still gets through.
    let consumer = client(trust(&consumer_conf, &p.ia));
    within(consumer.send(&p.b, request("/"))).await.unwrap();
    assert_eq!(provider.handled(), 1);
    provider.shutdown().await;
}

#[tokio::test]
async fn the_consumer_refuses_a_server_that_is_not_the_registered_node() {
    let p = Pair::new();
    let c = node("VN/GOV/000.00.00.G33/ss1");
    let ic = p.ca.issue(&c);
    // At b's address: a certificate for b from the approved CA that is not the registered one,
    // and then node c's registered certificate.
    let impostor = p.ca.issue(&p.b);
    let server_conf = conf(1, &p.ca, &[(&p.a, fp(&p.ia), vec![])]);
    for (own, expected) in [
        (&impostor, PeerRejected::NotRegistered { fingerprint: fp(&impostor) }),
        (&ic, PeerRejected::WrongNode { expected: Box::new(p.b.clone()), presented: Box::new(c.clone()) }),
    ] {
        let provider = Provider::start(trust(&server_conf, own)).await;
        let consumer_conf = conf(
            1,
            &p.ca,
            &[
                (&p.a, fp(&p.ia), vec![]),
                (&p.b, fp(&p.ib), vec![provider.url.clone()]),
                (&c, fp(&ic), vec![]),
            ],
        );
        let consumer = client(trust(&consumer_conf, &p.ia));
        match within(consumer.send(&p.b, request("/"))).await {
            Err(PeerError::Rejected { node, address, reason }) => {
                assert_eq!(
                    (node, address, reason),
                    (p.b.clone(), provider.url.clone(), Rejection::Peer(expected))
                );
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(provider.handled(), 0);
        provider.shutdown().await;
    }
}

#[tokio::test]
async fn an_unreachable_address_fails_over_to_the_next() {
    let p = Pair::new();
    let provider = Provider::start(trust(&p.conf(1, vec![]), &p.ib)).await;
    let dead = dead_address().await;
    let consumer = client(trust(&p.conf(1, vec![dead.clone(), provider.url.clone()]), &p.ia));
    let response = within(consumer.send(&p.b, request("/"))).await.unwrap();
    assert_eq!(text(response).await, p.a.to_string());
    assert_eq!(consumer.handshakes(), 1, "no TLS on the dead address");

    // Nothing reachable: every address is reported, and failing over elsewhere is safe.
    let dead2 = dead_address().await;
    let consumer = client(trust(&p.conf(1, vec![dead.clone(), dead2.clone()]), &p.ia));
    match within(consumer.send(&p.b, request("/"))).await {
        Err(err @ PeerError::Unreachable { .. }) => {
            assert!(err.is_before_send());
            let PeerError::Unreachable { attempts, .. } = err else { unreachable!() };
            let addresses: Vec<_> = attempts.iter().map(|a| a.address.clone()).collect();
            assert_eq!(addresses, [dead, dead2]);
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
    provider.shutdown().await;
}

/// With a deadline, a connection that cannot be made in time (accepted, never answered: a
/// black hole) is "nothing sent", so another node may be tried; an answer that does not begin
/// in time after the request was handed over is not.
#[tokio::test]
async fn send_within_tells_a_hanging_connect_from_a_late_answer() {
    let p = Pair::new();
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = url(hole.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = hole.accept().await {
            held.push(tcp);
        }
    });
    let consumer = client(trust(&p.conf(1, vec![hole_url]), &p.ia));
    let waited = Duration::from_millis(300);
    match within(consumer.send_within(&p.b, request("/"), waited)).await {
        Err(err @ PeerError::NotConnected { .. }) => assert!(err.is_before_send(), "{err}"),
        other => panic!("expected not connected, got {other:?}"),
    }
    held.abort();

    let provider = Provider::start(trust(&p.conf(1, vec![]), &p.ib)).await;
    let consumer = client(trust(&p.conf(1, vec![provider.url.clone()]), &p.ia));
    match within(consumer.send_within(&p.b, request("/silent"), waited)).await {
        Err(err @ PeerError::TimedOut { .. }) => assert!(!err.is_before_send(), "{err}"),
        other => panic!("expected timed out, got {other:?}"),
    }
    assert_eq!(provider.handled(), 1, "the request arrived");
    let response = within(consumer.send_within(&p.b, request("/"), waited)).await.unwrap();
    assert_eq!(text(response).await, p.a.to_string());
    drop(provider);
}

#[tokio::test]
async fn a_new_configuration_closes_pooled_connections_to_revoked_peers() {
    let p = Pair::new();
    let provider = Provider::start(trust(&p.conf(1, vec![]), &p.ib)).await;
    let consumer = client(trust(&p.conf(1, vec![provider.url.clone()]), &p.ia));
    within(consumer.send(&p.b, request("/"))).await.unwrap();
    assert_eq!(consumer.connection_count(), 1);

    // A new configuration that still registers b keeps the connection.
    consumer.update(trust(&p.conf(2, vec![provider.url.clone()]), &p.ia));
    within(consumer.send(&p.b, request("/"))).await.unwrap();
    assert_eq!((consumer.connection_count(), consumer.handshakes()), (1, 1));

    // An exchange in flight when b is removed: it is cut, not left to finish.
    let in_flight = within(consumer.send(&p.b, request("/endless"))).await.unwrap();
    consumer.update(trust(&conf(3, &p.ca, &[(&p.a, fp(&p.ia), vec![])]), &p.ia));
    assert_eq!(consumer.connection_count(), 0);
    assert!(within(in_flight.into_body().collect()).await.is_err());
    let err = within(consumer.send(&p.b, request("/"))).await.unwrap_err();
    assert!(matches!(&err, PeerError::UnknownNode(n) if n == &p.b), "{err:?}");

    // b listed again, but with another certificate registered: b's own is now refused.
    let reissued = p.ca.issue(&p.b);
    let moved =
        conf(4, &p.ca, &[(&p.a, fp(&p.ia), vec![]), (&p.b, fp(&reissued), vec![provider.url.clone()])]);
    consumer.update(trust(&moved, &p.ia));
    match within(consumer.send(&p.b, request("/"))).await {
        Err(PeerError::Rejected {
            reason: Rejection::Peer(PeerRejected::NotRegistered { fingerprint }),
            ..
        }) => {
            assert_eq!(fingerprint, fp(&p.ib));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(consumer.connection_count(), 0);
    provider.shutdown().await;
}

#[tokio::test]
async fn a_new_configuration_closes_served_connections_of_revoked_peers() {
    let p = Pair::new();
    let provider = Provider::start(trust(&p.conf(1, vec![]), &p.ib)).await;
    let consumer = client(trust(&p.conf(1, vec![provider.url.clone()]), &p.ia));
    within(consumer.send(&p.b, request("/"))).await.unwrap();
    assert_eq!(consumer.connection_count(), 1);

    // Still registered: the connection stays.
    provider.trust.send_replace(trust(&p.conf(2, vec![]), &p.ib));
    within(consumer.send(&p.b, request("/"))).await.unwrap();
    assert_eq!((consumer.connection_count(), consumer.handshakes()), (1, 1));

    // a is no longer registered at the provider: its open connection is closed, an exchange
    // in flight after a short grace.
    let in_flight = within(consumer.send(&p.b, request("/endless"))).await.unwrap();
    provider.trust.send_replace(trust(&conf(3, &p.ca, &[(&p.b, fp(&p.ib), vec![])]), &p.ib));
    eventually("the provider closes a's connection", || consumer.connection_count() == 0).await;
    assert!(within(in_flight.into_body().collect()).await.is_err());

    // And a new connection is refused, before anything is sent.
    let handled = provider.handled();
    let err = within(consumer.send(&p.b, request("/"))).await.unwrap_err();
    assert!(matches!(&err, PeerError::Rejected { reason: Rejection::ByPeer(_), .. }), "{err:?}");
    assert_eq!(consumer.handshakes(), 2);
    assert_eq!(provider.handled(), handled);

    // Registered again: a new connection is accepted.
    provider.trust.send_replace(trust(&p.conf(4, vec![]), &p.ib));
    let response = within(consumer.send(&p.b, request("/"))).await.unwrap();
    assert_eq!(text(response).await, p.a.to_string());
    assert_eq!(consumer.handshakes(), 3);
    provider.shutdown().await;
}
