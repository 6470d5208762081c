//! The node's side of the message log: chooses what to keep of a body per subsystem, and turns
//! any failure to log into `logging_failed`, so nothing travels unlogged (fail-closed).

use std::collections::HashMap;
use std::sync::Arc;

use lienthong_exchange::Reject;
use lienthong_msglog::record::attach_body;
use lienthong_msglog::{Appended, BodyPolicy, MessageLog};
use lienthong_pki::BodyKey;
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::{Fault, SubsystemId};

use crate::body::SpooledBody;
use crate::config::{BodyPolicyName, NodeConfig};

/// Which side's `logging_failed` to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Consumer,
    Provider,
}

impl Side {
    pub(crate) fn logging_failed(self) -> Fault {
        match self {
            Side::Consumer => Fault::ClientLoggingFailed,
            Side::Provider => Fault::ServerLoggingFailed,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ExchangeLog {
    log: Arc<MessageLog>,
    default_policy: BodyPolicyName,
    policies: HashMap<SubsystemId, BodyPolicyName>,
    body_key: Arc<BodyKey>,
    max_logged_body: usize,
}

impl ExchangeLog {
    pub(crate) fn new(log: Arc<MessageLog>, config: &NodeConfig, body_key: Arc<BodyKey>) -> Self {
        let policies =
            config.clients.iter().filter_map(|c| Some((c.subsystem.clone(), c.body_policy?))).collect();
        Self {
            log,
            default_policy: config.log.body_policy,
            policies,
            body_key,
            max_logged_body: config.log.max_logged_body_bytes,
        }
    }

    pub(crate) fn log(&self) -> &Arc<MessageLog> {
        &self.log
    }

    fn policy(&self, subsystem: Option<&SubsystemId>) -> BodyPolicy {
        let name = subsystem.and_then(|s| self.policies.get(s)).copied().unwrap_or(self.default_policy);
        match name {
            BodyPolicyName::Full => BodyPolicy::Full,
            BodyPolicyName::Metadata => BodyPolicy::MetadataOnly,
            BodyPolicyName::Encrypted => BodyPolicy::Encrypted(self.body_key.clone()),
        }
    }

    /// Appends `record` with what `subsystem`'s policy keeps of `body`, and returns once it is
    /// durable. Bodies over the logging limit are kept by digest and length only.
    pub(crate) async fn append(
        &self,
        mut record: pb::LogRecord,
        body: Option<&SpooledBody>,
        subsystem: Option<&SubsystemId>,
        side: Side,
    ) -> Result<Appended, Reject> {
        let failed = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "message log write failed");
            Reject::new(side.logging_failed(), "the exchange could not be logged durably")
        };
        if let Some(body) = body {
            match body.bytes_if_small(self.max_logged_body) {
                Some(bytes) if !bytes.is_empty() => {
                    attach_body(&mut record, &bytes, &self.policy(subsystem)).map_err(|e| failed(&e))?
                }
                _ => {
                    record.body_sha256 = body.sha256().to_vec();
                    record.body_length = body.len();
                    record.body_policy = if body.is_empty() {
                        pb::BodyPolicy::Full as i32
                    } else {
                        pb::BodyPolicy::MetadataOnly as i32
                    };
                }
            }
        }
        self.log.append(&record).await.map_err(|e| failed(&e))
    }
}
