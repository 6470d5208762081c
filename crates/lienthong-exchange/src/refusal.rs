//! A refusal as the protocol steps return it: the fault, the side that refused, and what was
//! known of the exchange when it was refused, which is what its log record keeps. Both nodes
//! build the record of a refusal here and only here.

use core::net::IpAddr;
use std::time::SystemTime;

use lienthong_globalconf::to_millis;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, NodeId, ServiceId, SubsystemId};

use crate::Reject;
use crate::error_body::status_for_code;
use crate::protection::Protection;
use crate::record::{self, Direction, Refusal, Role};

/// What a node knows of an exchange at some step: what a refusal's record keeps.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub message_id: String,
    pub request_id: String,
    pub client: Option<ClientId>,
    pub service: Option<ServiceId>,
    pub method: String,
    /// The path after the service code, without the query.
    pub path: String,
    pub user_id: String,
    pub peer: Option<NodeId>,
    /// The request's own time (the provider keeps the envelope's); `None`: the refusal's time.
    pub message_time_ms: Option<i64>,
    /// Where the call came from (the consumer's client).
    pub source: Option<IpAddr>,
    /// The party is proven (the client passed its authentication; a peer node always is, by
    /// pinned mTLS). Refusals of unproven parties are rate-limited by source.
    pub authenticated: bool,
    /// This node logged the request: a refusal from then on is the exchange's response.
    pub request_logged: bool,
}

/// A refused exchange.
#[derive(Debug, Clone)]
pub struct Refused {
    pub reject: Reject,
    /// The node that refuses: the consumer (for its client) or the provider (for its peer).
    pub side: Role,
    /// The provider node's own fault, when the consumer relays it: its code and detail are
    /// kept, so one id finds the records of both nodes.
    pub relayed: Option<Box<types_pb::Fault>>,
    pub facts: Box<Facts>,
}

/// What the refused party is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub code: String,
    pub status: u16,
    pub message: String,
    /// The id under which both the answer and the record can be found.
    pub detail: String,
}

impl Refused {
    pub fn new(reject: Reject, side: Role, facts: Facts) -> Self {
        Self { reject, side, relayed: None, facts: Box::new(facts) }
    }

    /// The same exchange refused for another reason (a record that could not be written).
    #[must_use]
    pub fn replaced(mut self, reject: Reject) -> Self {
        self.reject = reject;
        self.relayed = None;
        self
    }

    /// The answer, with `detail` as its id unless the relayed fault carries one of its own
    /// (used only when it is a UUID like ours: a peer's text is not shown otherwise).
    pub fn verdict(&self, detail: &str) -> Verdict {
        let message = self.reject.message.clone();
        match &self.relayed {
            None => Verdict {
                code: self.reject.fault.code(),
                status: self.reject.fault.http_status(),
                message,
                detail: detail.to_owned(),
            },
            Some(f) => {
                let uuid =
                    f.detail.len() == 36 && f.detail.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
                Verdict {
                    code: f.code.clone(),
                    status: status_for_code(&f.code),
                    message,
                    detail: if uuid { f.detail.clone() } else { detail.to_owned() },
                }
            }
        }
    }

    /// The subsystem whose log policy applies: the client's on the consumer, the service's on
    /// the provider.
    pub fn subsystem(&self) -> Option<&SubsystemId> {
        match self.side {
            Role::Provider => self.facts.service.as_ref().map(|s| &s.subsystem),
            _ => self.facts.client.as_ref().and_then(ClientId::subsystem),
        }
    }

    /// The record of this refusal, or `None` when `protection` keeps no records. An unproven
    /// party's refusal names its source address.
    pub fn record(
        &self,
        verdict: &Verdict,
        node: &NodeId,
        now: SystemTime,
        protection: &dyn Protection,
    ) -> Option<log_pb::LogRecord> {
        if !protection.keeps_records() {
            return None;
        }
        let f = &self.facts;
        let refusal = Refusal {
            message_id: &f.message_id,
            request_id: &f.request_id,
            direction: Some(if f.request_logged { Direction::Response } else { Direction::Request }),
            client: f.client.as_ref(),
            service: f.service.as_ref(),
            method: &f.method,
            path: &f.path,
            user_id: &f.user_id,
            peer: f.peer.as_ref(),
            message_time_ms: f.message_time_ms.unwrap_or_else(|| to_millis(now)),
        };
        let fault = types_pb::Fault {
            code: verdict.code.clone(),
            message: verdict.message.clone(),
            detail: verdict.detail.clone(),
        };
        let mut rec = record::refusal_record(&refusal, fault, verdict.status, self.side, node, now);
        if !f.authenticated
            && let Some(source) = f.source
        {
            rec.source_address = source.to_string();
        }
        Some(rec)
    }
}
