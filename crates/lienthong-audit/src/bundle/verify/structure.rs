//! The bundle's structure: what it names, in canonical order, every part used.

use lienthong_proto::audit::v1 as pb;

use super::Verifier;
use crate::bundle::build::ExchangeRef;

impl Verifier<'_> {
    /// The bundle's structure: what it names, in canonical order, each part used.
    pub(super) fn check_contents(&mut self, bundle: &pb::EvidenceBundle) -> Vec<ExchangeRef> {
        let subject = "bundle";
        let before = self.failed();
        let wanted: Vec<ExchangeRef> = bundle
            .exchanges
            .iter()
            .map(|e| ExchangeRef {
                message_id: e.message_id.clone(),
                request_id: (!e.request_id.is_empty()).then(|| e.request_id.clone()),
            })
            .collect();
        if wanted.is_empty() {
            self.fail(subject, "contents", "it names no exchange");
        }
        if wanted.iter().any(|e| e.message_id.is_empty()) {
            self.fail(subject, "contents", "it names an exchange without a message id");
        }
        if wanted.windows(2).any(|w| w[0] >= w[1]) {
            self.fail(subject, "contents", "its exchanges are not sorted or are named twice");
        }
        if bundle.sides.is_empty() {
            self.fail(subject, "contents", "it holds no node's log");
        }
        if bundle.sides.windows(2).any(|w| w[0].node >= w[1].node) {
            self.fail(subject, "contents", "its sides are not sorted by node or a node appears twice");
        }
        // Configurations: distinct, and numbered in the order the sides first name them, so
        // pointing a side at another configuration is never a valid alternative encoding.
        let mut next = 0usize;
        for side in &bundle.sides {
            let index = usize::try_from(side.global_conf).unwrap_or(usize::MAX);
            if index >= bundle.global_confs.len() {
                self.fail(
                    subject,
                    "contents",
                    format!(
                        "node {} names global configuration {} but the bundle holds {}",
                        side.node,
                        u64::from(side.global_conf) + 1,
                        bundle.global_confs.len()
                    ),
                );
            } else if index == next {
                next += 1;
            } else if index > next {
                self.fail(
                    subject,
                    "contents",
                    format!(
                        "node {} names global configuration {} before {}",
                        side.node,
                        index + 1,
                        next + 1
                    ),
                );
            }
        }
        if next < bundle.global_confs.len() {
            self.fail(subject, "contents", "it holds a global configuration no side uses");
        }
        let confs = &bundle.global_confs;
        if (1..confs.len()).any(|i| confs[..i].contains(&confs[i])) {
            self.fail(subject, "contents", "it holds the same global configuration twice");
        }
        if self.failed() == before {
            let records: usize = bundle.sides.iter().map(|s| s.records.len()).sum();
            self.pass(
                subject,
                "contents",
                format!(
                    "{} exchange(s), the logs of {} node(s) with {records} record(s), {} global configuration(s)",
                    wanted.len(),
                    bundle.sides.len(),
                    confs.len()
                ),
            );
        }
        wanted
    }
}
