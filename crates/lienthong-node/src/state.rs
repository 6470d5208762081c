//! What both sides of a running node share.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lienthong_confclient::Clock;
use lienthong_exchange::{Protection, Reject};
use lienthong_globalconf::{VerifiedConf, to_millis};
use lienthong_pki::Fingerprint;
use lienthong_types::{Fault, ServiceId, SubsystemId};
use tokio::sync::watch;

use crate::backend::BackendClient;
use crate::body::BodyLimits;
use crate::config::NodeConfig;
use crate::exchange_log::ExchangeLog;
use crate::home::NodeKeys;
use crate::peer::PeerClient;
use crate::refusal_limit::{Kind, RefusalLimiter, Summary};
use crate::replay::ReplayGuard;

/// A backend of a service this node provides.
#[derive(Debug)]
pub(crate) struct Backend {
    pub client: BackendClient,
    pub url: String,
    pub timeout: Duration,
    pub openapi: Option<Bytes>,
}

#[derive(Debug)]
pub(crate) struct NodeState {
    pub config: NodeConfig,
    pub keys: NodeKeys,
    pub conf: watch::Receiver<Option<Arc<VerifiedConf>>>,
    pub log: ExchangeLog,
    pub peers: PeerClient,
    pub backends: HashMap<ServiceId, Backend>,
    pub client_certs: HashMap<SubsystemId, HashSet<Fingerprint>>,
    /// Certificates that carry the auditor role on the audit API.
    pub auditors: HashSet<Fingerprint>,
    pub replay: ReplayGuard,
    pub clock: Clock,
    pub spool_dir: PathBuf,
    pub limits: BodyLimits,
    /// Spreads calls across a provider's nodes.
    pub next_node: AtomicUsize,
    /// When this process started serving: the replay memory is empty before then.
    pub started_at_ms: i64,
    /// How envelopes are proven and whether exchanges are recorded: [`lienthong_exchange::Signed`]
    /// unless a tool swapped in another ([`crate::StartOptions::protection`]).
    pub protection: Arc<dyn Protection>,
    /// Which refusals of unauthenticated traffic get a record of their own.
    pub refusals: Mutex<RefusalLimiter>,
    /// What the checkpointer last achieved with the registry's witness (for `/readyz`).
    pub witness: Arc<Mutex<lienthong_msglog::witness::WitnessStatus>>,
}

impl NodeState {
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The current global configuration if it may be used now; `fault` otherwise.
    pub(crate) fn usable_conf(&self, fault: Fault) -> Result<Arc<VerifiedConf>, Reject> {
        let conf = self.conf.borrow().clone();
        lienthong_exchange::conf::usable(conf.as_deref().map(|c| &c.conf), self.now(), fault)?;
        conf.ok_or_else(|| Reject::new(fault, "this node has no global configuration yet"))
    }

    /// The node as the protocol steps see it.
    pub(crate) fn node(&self) -> lienthong_exchange::Node<'_> {
        lienthong_exchange::Node {
            id: &self.keys.node,
            signing: &self.keys.signing,
            protection: self.protection.as_ref(),
        }
    }

    /// Counts a refusal of unauthenticated traffic (see [`crate::refusal_limit`]); true when it
    /// gets a record of its own, false when only its interval's summary will count it.
    pub(crate) fn admit_refusal(&self, kind: Kind, source: IpAddr, code: &str) -> bool {
        let now = to_millis(self.now());
        self.refusals.lock().unwrap_or_else(PoisonError::into_inner).admit(now, kind, source, code)
    }

    /// The refusal summaries due now, or all of them (at shutdown).
    pub(crate) fn refusal_summaries(&self, all: bool) -> Vec<Summary> {
        let now = to_millis(self.now());
        let mut limiter = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        if all { limiter.take_all(now) } else { limiter.take_due(now) }
    }

    pub(crate) fn rotation(&self) -> usize {
        self.next_node.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn max_skew(&self) -> Duration {
        Duration::from_secs(self.config.limits.max_clock_skew_secs)
    }
}
