//! Topology C of the benchmark: Lienthong nodes that carry exchanges without the evidence, to
//! measure what the transport costs apart from signing and logging (decisions 0009 and 0011).
//!
//! [`TransportOnly`] is a [`Protection`] that makes and checks no signatures and keeps no
//! records; every other check of the protocol (client authentication, routing, admission and
//! grants, body and response consistency) applies as in any node. It exists only in this
//! crate: the `lienthong` binary cannot run it. A normal node refuses such a node's unsigned
//! envelopes. [`run_node`] is the benchmark's own `node serve` with it.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use lienthong_exchange::Reject;
use lienthong_exchange::envelope::Signer;
use lienthong_globalconf::GlobalConf;
use lienthong_node::home::NodeHome;
use lienthong_node::{Listeners, NodeConfig, NodeHandle, Protection, StartOptions};
use lienthong_pki::{Fingerprint, SignatureError};
use lienthong_proto::exchange::v1 as ex;
use lienthong_types::MemberId;

/// No signatures made or checked, no records kept. Never for real traffic.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransportOnly;

impl Protection for TransportOnly {
    fn sign_request(
        &self,
        _env: &mut ex::RequestEnvelope,
        _signer: Signer<'_>,
    ) -> Result<(), SignatureError> {
        Ok(())
    }

    fn sign_response(
        &self,
        _env: &mut ex::ResponseEnvelope,
        _signer: Signer<'_>,
    ) -> Result<(), SignatureError> {
        Ok(())
    }

    fn verify_request(
        &self,
        _env: &ex::RequestEnvelope,
        _client_member: &MemberId,
        _conf: &GlobalConf,
        _now: SystemTime,
    ) -> Result<Option<Fingerprint>, Reject> {
        Ok(None)
    }

    fn verify_response(
        &self,
        _env: &ex::ResponseEnvelope,
        _provider_member: &MemberId,
        _conf: &GlobalConf,
        _now: SystemTime,
    ) -> Result<(), Reject> {
        Ok(())
    }

    fn keeps_records(&self) -> bool {
        false
    }
}

/// The protection to start a node with for topology C.
pub fn protection() -> Arc<dyn Protection> {
    Arc::new(TransportOnly)
}

/// Runs a transport-only node from `config` (a node directory set up as any, keys without a
/// passphrase) until SIGTERM or Ctrl-C.
pub async fn run_node(config: &Path) -> Result<()> {
    let config =
        NodeConfig::load(config).with_context(|| format!("node configuration {}", config.display()))?;
    let keys = NodeHome::new(&config.data_dir).open(None).context("opening the node's keys")?;
    let listeners = Listeners::bind(&config).await.context("binding the node's listeners")?;
    let options = StartOptions { protection: Some(protection()), ..Default::default() };
    let node = NodeHandle::start(config, keys, listeners, options).await.context("starting the node")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    node.shutdown().await;
    Ok(())
}
