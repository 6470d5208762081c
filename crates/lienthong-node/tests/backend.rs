//! The backend client against small hyper backends on loopback, plain and TLS.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lienthong_node::backend::{
    BackendClient, BackendError, BackendRequest, BackendResponse, BackendTls, roots_from_pem, target_uri,
};
use lienthong_pki::{Certificate, CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_types::InstanceId;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpListener;

/// Every call in these tests finishes well within this, or the test fails.
const BOUND: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(5);

type Reply = Response<Full<Bytes>>;

/// What the echo backend saw, as text: the request line, then each header, then the body.
async fn echo(req: Request<Incoming>) -> Result<Reply, Infallible> {
    let mut seen = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
    for (name, value) in req.headers() {
        seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    seen.push('\n');
    seen.push_str(&String::from_utf8_lossy(&body));
    Ok(Response::new(Full::new(Bytes::from(seen))))
}

/// Serves `handler` over HTTP/1.1 on 127.0.0.1:0 until the test's runtime ends.
async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, Infallible>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(handler);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// A certificate from an in-memory Lienthong CA: a CA no system trusts, and a certificate that
/// names no host (ours identify by URI), so verification must refuse it either way.
fn untrusted_tls_server() -> (Certificate, rustls::ServerConfig) {
    let instance = InstanceId::new("VN").unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let (v, now) = (Validity::days(1), SystemTime::now());
    let ca = CertificateAuthority::init(instance.clone(), &key, v, now).unwrap();
    let cert = ca.issue_registry(&Csr::for_registry(&key, &instance).unwrap(), v, now).unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(lienthong_pki::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca.certificate().clone(), config)
}

/// Serves the echo backend over TLS (HTTP/1.1 or HTTP/2 by ALPN) on 127.0.0.1:0.
async fn serve_tls(config: rustls::ServerConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service_fn(echo))
                    .await;
            });
        }
    });
    addr
}

fn get(url: String, path: &str, query: &str) -> BackendRequest {
    BackendRequest {
        method: Method::GET,
        url,
        path: path.into(),
        query: query.into(),
        headers: Vec::new(),
        body: Empty::new().map_err(|never| match never {}).boxed(),
        content_length: None,
    }
}

fn plain_client() -> BackendClient {
    BackendClient::new(BackendTls::default()).unwrap()
}

async fn call(client: &BackendClient, req: BackendRequest) -> Result<BackendResponse, BackendError> {
    tokio::time::timeout(BOUND, client.call(req, TIMEOUT)).await.expect("the call took too long")
}

async fn text(response: BackendResponse) -> String {
    let body = tokio::time::timeout(BOUND, response.body.collect()).await.unwrap().unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (HeaderName::from_static(name), HeaderValue::from_static(value))
}

#[test]
fn paths_and_queries_join_the_service_url_without_double_slashes() {
    let cases = [
        ("http://h:1/api/v1", "/pets/1", "a=b", "http://h:1/api/v1/pets/1?a=b"),
        ("http://h:1/api/v1/", "/pets/1", "", "http://h:1/api/v1/pets/1"),
        ("http://h:1/api/v1/", "", "", "http://h:1/api/v1/"),
        ("http://h:1/api/v1", "", "x=%20", "http://h:1/api/v1?x=%20"),
        ("https://h", "", "", "https://h/"),
        ("http://[::1]:8080", "/x", "q", "http://[::1]:8080/x?q"),
    ];
    for (base, path, query, want) in cases {
        assert_eq!(target_uri(base, path, query).unwrap().to_string(), want, "{base} + {path} ? {query}");
    }
}

#[test]
fn unusable_service_urls_and_paths_are_refused() {
    for base in ["http://h/api?x=1", "http://h/api#top", "ftp://h/", "h/api", "/api", "http://u:p@h/", ""] {
        let r = target_uri(base, "", "");
        assert!(matches!(r, Err(BackendError::BadUrl(_))), "{base}: {r:?}");
    }
    for path in
        ["pets", "/a/../b", "/..", "/a/%2E%2e/b", "/a/./b", "/a/..;/b", "/a%2Fb/c", "/a b", "/a?b", "/a#b"]
    {
        let r = target_uri("http://h/api", path, "");
        assert!(matches!(r, Err(BackendError::BadPath(_))), "{path}: {r:?}");
    }
    let r = target_uri("http://h/api", "/a", "x=1#frag");
    assert!(matches!(r, Err(BackendError::BadPath(_))), "{r:?}");
    // Dots inside a segment are ordinary characters.
    assert!(target_uri("http://h/api", "/a..b/.well-known", "").is_ok());
}

#[tokio::test]
async fn the_backend_gets_the_joined_path_the_headers_in_order_and_the_body() {
    let addr = serve(echo).await;
    let mut req = get(format!("http://{addr}/api/v1/"), "/pets/1", "a=b&c=%20d");
    req.method = Method::POST;
    req.headers = vec![
        header("x-first", "1"),
        header("host", "consumer.example"),
        header("x-second", "2"),
        header("connection", "close"),
        header("content-length", "999"),
        header("x-third", "3"),
        header("transfer-encoding", "chunked"),
    ];
    req.body = Full::new(Bytes::from_static(b"hello")).map_err(|never| match never {}).boxed();
    req.content_length = Some(5);
    let response = call(&plain_client(), req).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let seen = text(response).await;
    let (head, body) = seen.split_once("\n\n").unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("POST /api/v1/pets/1?a=b&c=%20d HTTP/1.1"));
    let headers: Vec<&str> = lines.collect();
    let ours: Vec<&str> = headers.iter().copied().filter(|h| h.starts_with("x-")).collect();
    assert_eq!(ours, ["x-first: 1", "x-second: 2", "x-third: 3"]);
    assert!(headers.contains(&format!("host: {addr}").as_str()), "{headers:?}");
    assert!(headers.contains(&"content-length: 5"), "{headers:?}");
    assert!(!headers.iter().any(|h| h.starts_with("connection") || h.starts_with("transfer-encoding")));
    assert_eq!(body, "hello");
}

#[tokio::test]
async fn response_headers_come_back_in_order() {
    let addr = serve(|_| async {
        let r = Response::builder()
            .header("x-z", "1")
            .header("set-cookie", "a=1")
            .header("x-y", "2")
            .header("set-cookie", "b=2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        Ok(r)
    })
    .await;
    let response = call(&plain_client(), get(format!("http://{addr}"), "", "")).await.unwrap();
    let seen: Vec<String> = response
        .headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-") || n == "set-cookie")
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
        .collect();
    // Repeated names are kept, in their order; distinct names keep theirs.
    assert_eq!(seen, ["x-z: 1", "set-cookie: a=1", "set-cookie: b=2", "x-y: 2"]);
}

#[tokio::test]
async fn redirects_and_errors_are_passed_back_not_followed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let addr = serve(move |req: Request<Incoming>| {
        let hits = counted.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let (status, body) = match req.uri().path() {
                "/moved" => (StatusCode::FOUND, "see elsewhere"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "backend broke"),
            };
            let r = Response::builder()
                .status(status)
                .header("location", "/elsewhere")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            Ok(r)
        }
    })
    .await;
    let client = plain_client();
    let moved = call(&client, get(format!("http://{addr}"), "/moved", "")).await.unwrap();
    assert_eq!(moved.status, StatusCode::FOUND);
    assert!(moved.headers.iter().any(|(n, v)| n == "location" && v == "/elsewhere"));
    assert_eq!(text(moved).await, "see elsewhere");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let broke = call(&client, get(format!("http://{addr}"), "/x", "")).await.unwrap();
    assert_eq!(broke.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(text(broke).await, "backend broke");
}

/// The consumer-facing message must not reveal the backend's address.
fn assert_no_address(e: &BackendError, addr: SocketAddr) {
    let message = e.to_string();
    assert!(!message.contains("127.0.0.1") && !message.contains(&addr.port().to_string()), "{message}");
}

#[tokio::test]
async fn a_refused_connection_fails_without_naming_the_backend() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let e = call(&plain_client(), get(format!("http://{addr}/api"), "/x", "")).await.unwrap_err();
    assert!(matches!(e, BackendError::Failed { reason: "connection refused", .. }), "{e:?}");
    assert_eq!(e.to_string(), "the service could not be reached: connection refused");
    assert_no_address(&e, addr);
    assert!(e.detail().is_some_and(|d| !d.is_empty()));
}

#[tokio::test]
async fn a_connection_closed_before_the_response_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Accept one connection, read a little of the request, hang up.
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 16];
        let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
    });
    let e = call(&plain_client(), get(format!("http://{addr}"), "", "")).await.unwrap_err();
    assert!(
        matches!(e, BackendError::Failed { reason: "connection closed before the response", .. }),
        "{e:?}"
    );
    assert_no_address(&e, addr);
}

#[tokio::test]
async fn a_slow_backend_times_out_within_the_bound() {
    let addr = serve(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(Response::new(Full::new(Bytes::new())))
    })
    .await;
    let started = Instant::now();
    let r = plain_client().call(get(format!("http://{addr}"), "", ""), Duration::from_millis(300)).await;
    assert!(matches!(r, Err(BackendError::Timeout)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_bad_service_url_is_refused_before_connecting() {
    let r = call(&plain_client(), get("http://127.0.0.1:0/api?debug=1".into(), "", "")).await;
    assert!(matches!(r, Err(BackendError::BadUrl(_))), "{r:?}");
}

#[tokio::test]
async fn tls_verification_refuses_a_certificate_from_an_unknown_ca() {
    let (_, config) = untrusted_tls_server();
    let addr = serve_tls(config).await;
    let e = call(&plain_client(), get(format!("https://{addr}"), "/x", "")).await.unwrap_err();
    assert!(matches!(e, BackendError::Failed { reason: "TLS handshake failed", .. }), "{e:?}");
    assert_no_address(&e, addr);
}

#[tokio::test]
async fn tls_verification_checks_the_host_name_even_for_a_trusted_ca() {
    let (ca, config) = untrusted_tls_server();
    let addr = serve_tls(config).await;
    let roots = roots_from_pem(ca.to_pem().as_bytes()).unwrap();
    let client = BackendClient::new(BackendTls { verify: true, extra_roots: roots }).unwrap();
    let e = call(&client, get(format!("https://{addr}"), "", "")).await.unwrap_err();
    assert!(matches!(e, BackendError::Failed { reason: "TLS handshake failed", .. }), "{e:?}");
    assert!(e.detail().unwrap().contains("not valid for name"), "{:?}", e.detail());
}

#[tokio::test]
async fn without_verification_any_certificate_is_accepted_and_h2_is_negotiated() {
    let (_, config) = untrusted_tls_server();
    let addr = serve_tls(config).await;
    let client = BackendClient::new(BackendTls { verify: false, extra_roots: Vec::new() }).unwrap();
    let response = call(&client, get(format!("https://{addr}/api/"), "/pets", "id=1")).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let seen = text(response).await;
    let first = seen.lines().next().unwrap();
    assert!(first.starts_with("GET ") && first.ends_with("/api/pets?id=1 HTTP/2.0"), "{first}");
}

#[test]
fn pem_roots_must_hold_a_certificate() {
    assert!(roots_from_pem(b"no certificate here").is_err());
    let (ca, _) = untrusted_tls_server();
    let two = format!("{}{}", ca.to_pem(), ca.to_pem());
    assert_eq!(roots_from_pem(two.as_bytes()).unwrap().len(), 2);
}
