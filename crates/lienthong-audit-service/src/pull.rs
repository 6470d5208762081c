//! Pulling nodes: `GET /audit/v1/collect` over HTTPS with the service's auditor certificate,
//! page after page from the first leaf not yet held, each batch verified and stored by the
//! [`Collector`](crate::collect::Collector) before the next is asked for.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lienthong_globalconf::{ConfKey, VerifiedConf};
use lienthong_msglog::checkpoint::Checkpoint;
use lienthong_pki::{Certificate, Fingerprint};
use lienthong_proto::audit::v1 as audit_pb;
use prost::Message;

use lienthong_audit::query::format_time;

use crate::collect::{Batch, CollectError, IngestReport, Trust};
use crate::{AuditService, NodeSource, PullStatus};

/// Records asked for per page.
const PAGE: u64 = 2_000;
/// Pages per node per round: a node far behind catches up over a few rounds, and one node
/// cannot hold a round for long.
const MAX_PAGES: usize = 50;
/// The most a node's answer may weigh (a page of metadata records with proofs).
const MAX_ANSWER: usize = 64 << 20;

/// Why pulling a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("no verified global configuration yet")]
    NoConfiguration,
    #[error("node {0} is not registered in the global configuration")]
    NotRegistered(String),
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: String, reason: String },
    #[error("node {node} answered {status}: {message}")]
    Refused { node: String, status: u16, message: String },
    #[error("node {node} sent an answer that does not decode: {reason}")]
    Malformed { node: String, reason: String },
    #[error(
        "node {node} presented certificate {presented} for its checkpoint, not the one the configuration registers ({registered})"
    )]
    WrongCertificate { node: String, presented: String, registered: String },
    /// The collector refused the batch: a forked or rewritten history among others.
    #[error(transparent)]
    Collect(#[from] CollectError),
}

impl PullError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoConfiguration => "no_configuration",
            Self::NotRegistered(_) => "not_registered",
            Self::Unreachable { .. } => "node_unreachable",
            Self::Refused { .. } => "node_refused",
            Self::Malformed { .. } | Self::WrongCertificate { .. } => "node_invalid",
            Self::Collect(CollectError::Forked { .. } | CollectError::Rewritten { .. }) => {
                "history_rewritten"
            }
            Self::Collect(_) => "collect_failed",
        }
    }
}

/// The outcome of pulling one node in a round.
#[derive(Debug)]
pub struct PullReport {
    pub node: String,
    /// Records stored, and the last ingest's report (`None` when there was nothing to pull).
    pub outcome: Result<(u64, Option<IngestReport>), PullError>,
}

impl AuditService {
    /// One round: every configured node, one after the other.
    pub async fn pull_all(&self) -> Vec<PullReport> {
        let _round = self.round.lock().await;
        let mut reports = Vec::with_capacity(self.nodes.len());
        for source in &self.nodes {
            let outcome = self.pull_node(source).await;
            let now = format_time(lienthong_globalconf::to_millis(SystemTime::now()));
            let mut status = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = status.entry(source.node.to_string()).or_default();
            entry.last_attempt.clone_from(&now);
            match &outcome {
                Ok(_) => {
                    entry.last_success = Some(now);
                    entry.error = None;
                }
                Err(e) => entry.error = Some(e.to_string()),
            }
            reports.push(PullReport { node: source.node.to_string(), outcome });
        }
        reports
    }

    pub(crate) fn pull_status(&self) -> std::collections::HashMap<String, PullStatus> {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn pull_node(&self, source: &NodeSource) -> Result<(u64, Option<IngestReport>), PullError> {
        let conf = self.conf().ok_or(PullError::NoConfiguration)?;
        let name = source.node.to_string();
        let registered = conf
            .conf
            .nodes
            .get(&source.node)
            .map(|n| n.auth_cert)
            .ok_or_else(|| PullError::NotRegistered(name.clone()))?;
        let witness_keys = witness_keys(&self.anchor.signing_keys, &conf);
        let (mut from, mut held) = self.position(&source.node)?;
        let mut stored = 0;
        let mut last = None;
        for _ in 0..MAX_PAGES {
            let path = format!("/audit/v1/collect?from={from}&held={held}&limit={PAGE}");
            let body = self.get(source, &conf, &path).await?;
            let batch = audit_pb::CollectBatch::decode(body.as_ref())
                .map_err(|e| PullError::Malformed { node: name.clone(), reason: e.to_string() })?;
            let presented = Fingerprint::of(&batch.node_certificate);
            if presented != registered {
                return Err(PullError::WrongCertificate {
                    node: name.clone(),
                    presented: presented.to_string(),
                    registered: registered.to_string(),
                });
            }
            let certificate = Certificate::from_der(batch.node_certificate.clone())
                .map_err(|e| PullError::Malformed { node: name.clone(), reason: e.to_string() })?;
            let checkpoint = batch.checkpoint.clone().unwrap_or_default();
            let size = Checkpoint::decode(&checkpoint)
                .map_err(|e| PullError::Malformed { node: name.clone(), reason: e.to_string() })?
                .size;
            let next = batch.next;
            let ingest = Batch { checkpoint, consistency: batch.consistency, records: batch.records };
            let (collector, node, keys) = (self.collector.clone(), source.node.clone(), witness_keys.clone());
            let report = tokio::task::spawn_blocking(move || {
                collector.ingest(&node, ingest, Trust { node_certificate: &certificate, witness_keys: &keys })
            })
            .await
            .map_err(|e| PullError::Malformed { node: name.clone(), reason: e.to_string() })??;
            stored += report.stored;
            last = Some(report);
            held = size;
            if next >= size || next <= from {
                break;
            }
            from = next;
        }
        Ok((stored, last))
    }

    /// Where to pull from: after the last leaf held (a leaf the node pruned before it was
    /// collected stays a gap rather than being asked for again every round), and the size of the
    /// checkpoint held.
    fn position(&self, node: &lienthong_types::NodeId) -> Result<(u64, u64), PullError> {
        let held = match self.collector.held_checkpoint(node)? {
            Some(signed) => Checkpoint::decode(&signed).map(|c| c.size).unwrap_or(0),
            None => 0,
        };
        let name = node.to_string();
        let from =
            self.collector.coverage()?.into_iter().find(|c| c.node == name).map_or(0, |c| c.contiguous_until);
        Ok((from, held))
    }

    /// One GET to a node's audit API over HTTPS, the node's certificate checked against the
    /// instance CA and the node id; the whole body, or why not.
    pub(crate) async fn get(
        &self,
        source: &NodeSource,
        conf: &VerifiedConf,
        path: &str,
    ) -> Result<Bytes, PullError> {
        let name = source.node.to_string();
        let unreachable = |reason: String| PullError::Unreachable { node: name.clone(), reason };
        let authority = source
            .url
            .strip_prefix("https://")
            .map(|a| a.trim_end_matches('/'))
            .ok_or_else(|| unreachable(format!("{} is not an https:// URL", source.url)))?;
        let ca = conf
            .conf
            .approved_cas
            .first()
            .ok_or_else(|| unreachable("the configuration approves no CA".into()))?;
        let client = Some((self.credentials.chain.as_slice(), &self.credentials.key));
        let config = lienthong_pki::is_client_tls::client_config(ca, &source.node, client)
            .map_err(|e| unreachable(format!("TLS set-up: {e}")))?;
        let exchange = async {
            let tcp =
                tokio::net::TcpStream::connect(authority).await.map_err(|e| unreachable(e.to_string()))?;
            // The certificate names a node id, not a host: the verifier checks that instead.
            let server = rustls::pki_types::ServerName::try_from("node.lienthong.invalid")
                .map_err(|e| unreachable(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server, tcp)
                .await
                .map_err(|e| unreachable(format!("TLS: {e}")))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(conn);
            let req = Request::get(path)
                .header(http::header::HOST, authority)
                .body(Empty::<Bytes>::new())
                .map_err(|e| unreachable(e.to_string()))?;
            let resp = sender.send_request(req).await.map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            if status != StatusCode::OK {
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| Some(format!("{}: {}", v["code"].as_str()?, v["message"].as_str()?)))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
                return Err(PullError::Refused { node: name.clone(), status: status.as_u16(), message });
            }
            Ok(body)
        };
        match tokio::time::timeout(self.node_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(format!("no answer within {:?}", self.node_timeout))),
        }
    }
}

/// The keys that may co-sign checkpoints: the anchor's and the configuration's.
fn witness_keys(anchor: &[ConfKey], conf: &VerifiedConf) -> Vec<ConfKey> {
    let mut keys = anchor.to_vec();
    for k in &conf.conf.signing_keys {
        if !keys.iter().any(|a| a.id == k.id) {
            keys.push(k.clone());
        }
    }
    keys
}
