//! How information systems authenticate to their own node, per subsystem (`[[client]] auth`):
//! `loopback` (the default), `tls` (HTTPS required) and `tls-cert` (HTTPS with a listed client
//! certificate). The information system's side is an ordinary rustls client that trusts the
//! instance CA and checks the node id in the node's certificate (`lienthong_pki::is_client_tls`).

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use lienthong_node::config::{ClientAuth, ClientConfig};
use lienthong_pki::PrivateKey;
use lienthong_pki::is_client_tls::client_config;
use lienthong_testkit::names::*;
use lienthong_testkit::{Topology, node_id, subsystem, within};
use rustls::pki_types::CertificateDer;

const SSL_FAILED: &str = "server.clientproxy.ssl_authentication_failed";

fn call_path() -> String {
    format!("/r1/{CONG_DAN}/cong-dan/001090012345")
}

/// An information system's own certificate: self-signed, no Lienthong identity, as an
/// organisation's CA or openssl would make it.
struct IsCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKey,
    pem: String,
}

fn is_cert(name: &str) -> IsCert {
    let (der, pem, key) = lienthong_pki::is_client_tls::self_signed_client(name).unwrap();
    IsCert { chain: vec![der], key, pem }
}

/// The standard topology with an HTTPS listener on node 0 and `auth` for its subsystem.
async fn topology(auth: ClientAuth, listed: &[&IsCert]) -> Topology {
    let mut t = Topology::standard().await;
    let mut certificates: Vec<PathBuf> = vec![];
    for (i, c) in listed.iter().enumerate() {
        let path = t.dir.path().join(format!("is-{i}.pem"));
        std::fs::write(&path, &c.pem).unwrap();
        certificates.push(path);
    }
    t.reconfigure(0, move |c| {
        c.consumer.https = Some("127.0.0.1:0".parse().unwrap());
        c.clients =
            vec![ClientConfig { subsystem: subsystem(CONG_DVC), auth, certificates, body_policy: None }];
    })
    .await;
    t
}

/// The information system's TLS settings for node 0.
fn tls(t: &Topology, client: Option<&IsCert>) -> rustls::ClientConfig {
    let client = client.map(|c| (c.chain.as_slice(), &c.key));
    client_config(&t.registry.ca, &node_id(NODE_VPCP), client).unwrap()
}

/// One request over HTTPS to `addr` (HTTP/2 when `h2`, else HTTP/1.1); the whole answer.
async fn https(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    h2: bool,
    req: Request<Full<Bytes>>,
) -> Result<Response<Bytes>, String> {
    lienthong_testkit::https(addr, config, h2, req).await
}

/// A request from CONG_DVC over HTTPS; the URI is absolute for HTTP/2, origin-form for 1.1.
fn r1_over_tls(addr: SocketAddr, h2: bool) -> Request<Full<Bytes>> {
    let uri = if h2 { format!("https://{addr}{}", call_path()) } else { call_path() };
    let mut req = Topology::r1("GET", &uri, "");
    if !h2 {
        req.headers_mut().insert("host", addr.to_string().parse().unwrap());
    }
    req
}

#[track_caller]
fn refused(resp: &Response<Bytes>, code: &str) {
    let body = String::from_utf8_lossy(resp.body());
    assert_eq!(resp.status(), 500, "{body}");
    assert_eq!(resp.headers()["x-road-error"], code, "{body}");
}

#[track_caller]
fn served(resp: &Response<Bytes>) {
    let body = String::from_utf8_lossy(resp.body());
    assert_eq!(resp.status(), 200, "{body}");
    assert!(resp.headers().get("x-road-error").is_none(), "{body}");
    assert_eq!(resp.headers()["x-road-client"], CONG_DVC);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_the_default_over_http_and_https() {
    let t = topology(ClientAuth::Loopback, &[]).await;
    served(&t.call(0, Topology::r1("GET", &call_path(), "")).await);
    let addr = t.https_addr(0).expect("an HTTPS listener");
    served(&https(addr, tls(&t, None), false, r1_over_tls(addr, false)).await.unwrap());
    within(t.shutdown()).await;

    // Without any [[client]] entry, the same.
    let t = Topology::standard().await;
    served(&t.call(0, Topology::r1("GET", &call_path(), "")).await);
    within(t.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_plain_http_and_serves_https() {
    let t = topology(ClientAuth::Tls, &[]).await;
    refused(&t.call(0, Topology::r1("GET", &call_path(), "")).await, SSL_FAILED);

    let addr = t.https_addr(0).expect("an HTTPS listener");
    for h2 in [false, true] {
        served(&https(addr, tls(&t, None), h2, r1_over_tls(addr, h2)).await.unwrap());
    }
    // A client certificate is not needed, and does no harm.
    let any = is_cert("is.example");
    served(&https(addr, tls(&t, Some(&any)), false, r1_over_tls(addr, false)).await.unwrap());

    // The information system checks it reached its own node: another node id does not match.
    let wrong = client_config(&t.registry.ca, &node_id(NODE_BCA_1), None).unwrap();
    let e = https(addr, wrong, false, r1_over_tls(addr, false)).await.unwrap_err();
    assert!(e.contains("expected node VN/GOV/000.00.00.G01/ss-bca-1"), "{e}");
    within(t.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cert_requires_a_listed_client_certificate() {
    let listed = is_cert("cong-dvc.vpcp.example");
    let unlisted = is_cert("cong-dvc.vpcp.example");
    let t = topology(ClientAuth::TlsCert, &[&listed]).await;
    refused(&t.call(0, Topology::r1("GET", &call_path(), "")).await, SSL_FAILED);

    let addr = t.https_addr(0).expect("an HTTPS listener");
    let call = |client: Option<&IsCert>, h2: bool| https(addr, tls(&t, client), h2, r1_over_tls(addr, h2));
    refused(&call(None, false).await.unwrap(), SSL_FAILED);
    refused(&call(Some(&unlisted), false).await.unwrap(), SSL_FAILED);
    served(&call(Some(&listed), false).await.unwrap());
    served(&call(Some(&listed), true).await.unwrap());
    within(t.shutdown()).await;
}
