//! The central audit service over a topology's nodes, as `lienthong audit serve` runs it: each
//! node serves HTTPS with the service's client certificate listed as an auditor's, and the
//! service pulls them with one API key for the tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use lienthong_audit_service::collect::Collector;
use lienthong_audit_service::{AuditService, Auditors, Credentials, NodeSource, ServiceHandle, ServiceSetup};
use lienthong_pki::PrivateKey;
use lienthong_pki::is_client_tls::self_signed_client;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

use crate::{Topology, within};

/// The API key the fixture's service accepts (auditor `kiem-toan`).
pub const AUDIT_KEY: &str = "kiem-toan-nha-nuoc-2026";

/// The service's client certificate, listed as an auditor's on every node of a topology.
pub struct AuditCredential {
    pub chain: CertificateDer<'static>,
    pub key: PrivateKey,
}

impl std::fmt::Debug for AuditCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditCredential").finish_non_exhaustive()
    }
}

impl AuditCredential {
    /// A copy (the key re-read from its PEM), for a second service over the same store.
    pub fn duplicate(&self) -> Self {
        let key = PrivateKey::from_pem(&self.key.to_pem(), None).expect("key round-trips");
        Self { chain: self.chain.clone(), key }
    }
}

impl Topology {
    /// Opens every node's audit API over HTTPS to a new collector certificate.
    pub async fn open_audit(&mut self) -> AuditCredential {
        let (chain, pem, key) = self_signed_client("kiem-toan-trung-tam").expect("collector certificate");
        let path = self.dir.path().join("collector.pem");
        std::fs::write(&path, pem).expect("write the collector certificate");
        for i in 0..self.nodes.len() {
            let path = path.clone();
            self.reconfigure(i, move |c| {
                c.consumer.https = Some("127.0.0.1:0".parse().expect("address"));
                c.audit.certificates = vec![path];
            })
            .await;
        }
        self.sync().await;
        AuditCredential { chain, key }
    }

    /// The service's settings for pulling every node, its store at `db`, trusting what node 0
    /// trusts (the instance's configuration and anchor).
    pub fn audit_setup(&self, db: &Path, credential: AuditCredential) -> ServiceSetup {
        let nodes = (0..self.nodes.len())
            .map(|i| NodeSource {
                node: self.nodes[i].id.clone(),
                url: format!("https://{}", self.https_addr(i).expect("an HTTPS listener")),
            })
            .collect();
        let mut auditors = Auditors::default();
        auditors.add_key_digest("kiem-toan", &Auditors::key_digest(AUDIT_KEY)).expect("a key digest");
        ServiceSetup {
            collector: Collector::open(db).expect("the collector's store"),
            conf: self.nodes[0].handle().conf_client().subscribe(),
            anchor: self.registry.anchor(),
            nodes,
            credentials: Credentials { chain: vec![credential.chain], key: credential.key },
            auditors,
            node_timeout: Duration::from_secs(10),
        }
    }

    /// Where [`Topology::audit_setup`] keeps the store by default.
    pub fn audit_db(&self) -> PathBuf {
        self.dir.path().join("audit.redb")
    }
}

/// A running audit service (pulls only when asked: `POST /api/v1/pull`).
#[derive(Debug)]
pub struct AuditFixture {
    pub handle: ServiceHandle,
    pub addr: SocketAddr,
}

impl AuditFixture {
    pub async fn start(setup: ServiceSetup) -> Self {
        let service = AuditService::new(setup);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let handle = ServiceHandle::start(
            service,
            listener,
            None,
            lienthong_audit_service::DEFAULT_MAX_CONNECTIONS,
            Duration::ZERO,
        )
        .expect("the service starts");
        let addr = handle.addr;
        Self { handle, addr }
    }

    /// One call to the API; the status and the body as JSON (or its text as a JSON string).
    pub async fn api(&self, method: &str, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        let addr = self.addr;
        let exchange = async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
            tokio::spawn(conn);
            let mut req = Request::builder().method(method).uri(path).header("host", addr.to_string());
            if let Some(k) = key {
                req = req.header("authorization", format!("Bearer {k}"));
            }
            let resp = sender
                .send_request(req.body(Full::new(Bytes::new())).expect("request"))
                .await
                .expect("an answer");
            let status = resp.status();
            let body = resp.into_body().collect().await.expect("the body").to_bytes();
            let value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            (status, value)
        };
        within(exchange).await
    }

    /// Pulls every node and checks that none failed; the per-node answer.
    pub async fn pull(&self) -> Value {
        let (status, v) = self.api("POST", "/api/v1/pull", Some(AUDIT_KEY)).await;
        assert_eq!(status, 200, "{v}");
        for n in v["nodes"].as_array().expect("nodes") {
            assert!(n.get("error").is_none(), "pull failed: {n}");
        }
        v
    }

    pub async fn shutdown(self) {
        within(self.handle.shutdown()).await;
    }
}
