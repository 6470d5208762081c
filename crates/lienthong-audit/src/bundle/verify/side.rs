//! One node's side: its checkpoint, signed by the node with the certificate the configuration
//! registers for it and co-signed by the registry.

use std::time::SystemTime;

use lienthong_globalconf::{algorithm_to_wire, from_millis};
use lienthong_msglog::checkpoint::{Checkpoint, verify_log_signature, verify_witness_signatures};
use lienthong_pki::tls::PeerRole;
use lienthong_pki::{CertInfo, Certificate, Fingerprint};
use lienthong_proto::audit::v1 as pb;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_types::NodeId;

use super::{Conf, Rec, Verifier, hex_id, ms_text, time_text};
use crate::bundle::build::ExchangeRef;
use crate::bundle::report::SideSummary;

impl Verifier<'_> {
    pub(super) fn check_side(
        &mut self,
        side: &pb::EvidenceSide,
        confs: &[Option<Conf>],
        wanted: &[ExchangeRef],
    ) -> Vec<Rec> {
        let subject = format!("node {}", side.node);
        let mut summary = SideSummary {
            node: side.node.clone(),
            node_certificate: Fingerprint::of(&side.node_certificate).to_string(),
            ..SideSummary::default()
        };
        let conf = usize::try_from(side.global_conf).ok().and_then(|i| confs.get(i)).and_then(Option::as_ref);
        summary.global_conf_version = conf.map(|c| c.conf.version);
        let node: Option<NodeId> = match side.node.parse() {
            Ok(n) => Some(n),
            Err(e) => {
                self.fail(&subject, "contents", format!("{:?} is not a node id: {e}", side.node));
                None
            }
        };
        let checkpoint = self.check_checkpoint(&subject, side, node.as_ref(), conf, &mut summary);
        // Records may carry signatures of a federation partner's members: checked against the
        // side's configuration with the partners' views it carries added, as the node had them.
        let federated = conf.and_then(|c| self.with_partners(&subject, side, c));
        let conf = federated.as_ref().or(conf);

        let mut out = Vec::with_capacity(side.records.len());
        let mut previous: Option<u64> = None;
        for (position, r) in side.records.iter().enumerate() {
            let index = r.proof.as_ref().map(|p| p.leaf_index);
            if let (Some(prev), Some(index)) = (previous, index)
                && index <= prev
            {
                self.fail(
                    &subject,
                    "contents",
                    "its records are not in increasing log order, or one appears twice",
                );
            }
            previous = index.or(previous);
            summary.records.extend(index);
            out.extend(self.check_record(side, position, r, checkpoint.as_ref(), conf, wanted));
        }
        if side.records.is_empty() {
            self.fail(&subject, "contents", "it holds no record");
        }
        self.sides.push(summary);
        out
    }

    /// The checkpoint: the node signed it with the certificate the configuration registers for
    /// it, and the registry co-signed it. Returns the statement (even if a signature failed, so
    /// the records can still be placed; the failure is recorded).
    fn check_checkpoint(
        &mut self,
        subject: &str,
        side: &pb::EvidenceSide,
        node: Option<&NodeId>,
        conf: Option<&Conf>,
        summary: &mut SideSummary,
    ) -> Option<Checkpoint> {
        let check = "checkpoint signature";
        let Some(signed) = &side.checkpoint else {
            self.fail(subject, check, "the side has no checkpoint");
            return None;
        };
        let checkpoint = match Checkpoint::decode(signed) {
            Ok(c) => c,
            Err(e) => {
                self.fail(subject, check, format!("the checkpoint cannot be read ({e})"));
                return None;
            }
        };
        summary.checkpoint_size = checkpoint.size;
        summary.checkpoint_root = hex::encode(checkpoint.root);
        summary.checkpoint_time = ms_text(checkpoint.timestamp_ms);
        let before = self.failed();
        if checkpoint.origin != side.node {
            self.fail(
                subject,
                check,
                format!("the checkpoint is of node {}'s log, not of this node's", checkpoint.origin),
            );
        }
        let log_role = log_pb::SignerRole::Log as i32;
        let witness_role = log_pb::SignerRole::Witness as i32;
        if let Some(other) = signed.signatures.iter().find(|s| s.role != log_role && s.role != witness_role) {
            self.fail(
                subject,
                check,
                format!("a signature by {:?} has the unknown role {}", other.signer, other.role),
            );
        }
        let logs: Vec<&log_pb::CheckpointSignature> =
            signed.signatures.iter().filter(|s| s.role == log_role).collect();
        let [log] = logs.as_slice() else {
            self.fail(subject, check, format!("it has {} log signatures, not exactly one", logs.len()));
            self.check_witnesses(subject, signed, conf, summary);
            return Some(checkpoint);
        };
        let signed_at = from_millis(log.signed_at_ms);
        match self.check_node_certificate(subject, side, node, conf, signed_at) {
            None => self.skip(subject, check, "not checked: the node certificate is not accepted"),
            Some(info) => {
                let algorithm = log.signature.as_ref().map_or(0, |s| s.algorithm);
                if algorithm != algorithm_to_wire(info.public_key.algorithm()) as i32 {
                    self.fail(
                        subject,
                        check,
                        format!(
                            "the log signature claims algorithm {algorithm}, not the certificate's {}",
                            info.public_key.algorithm()
                        ),
                    );
                } else if log.signer != checkpoint.origin {
                    self.fail(
                        subject,
                        check,
                        format!("the log signature is by {:?}, not by the log's node", log.signer),
                    );
                } else {
                    match verify_log_signature(signed, info.fingerprint, &info.public_key) {
                        Err(e) => {
                            self.fail(subject, check, format!("the node's signature does not verify ({e})"))
                        }
                        Ok(_) if self.failed() == before => self.pass(
                            subject,
                            check,
                            format!(
                                "the node signed, at {}, that its log had {} records with root {}",
                                time_text(signed_at),
                                checkpoint.size,
                                hex::encode(checkpoint.root)
                            ),
                        ),
                        Ok(_) => {}
                    }
                }
            }
        }
        self.check_witnesses(subject, signed, conf, summary);
        Some(checkpoint)
    }

    /// The node's certificate chains to an approved CA of the configuration, is the one it
    /// registers for the node, and was valid when the node signed the checkpoint.
    fn check_node_certificate(
        &mut self,
        subject: &str,
        side: &pb::EvidenceSide,
        node: Option<&NodeId>,
        conf: Option<&Conf>,
        at: SystemTime,
    ) -> Option<CertInfo> {
        let check = "node certificate";
        let Some(conf) = conf else {
            self.skip(subject, check, "not checked: the node's global configuration does not verify");
            return None;
        };
        let node = node?;
        let fingerprint = Fingerprint::of(&side.node_certificate);
        let cert = match Certificate::from_der(side.node_certificate.clone())
            .and_then(|c| c.info().map(|i| (c, i)))
        {
            Ok(c) => c,
            Err(e) => {
                self.fail(subject, check, format!("it is not a readable certificate ({e})"));
                return None;
            }
        };
        let policy = match &conf.trust {
            Ok(p) => p,
            Err(e) => {
                self.fail(subject, check, format!("the configuration's approved CAs cannot be used ({e})"));
                return None;
            }
        };
        match policy.verify_peer(cert.0.der(), &[], PeerRole::Client, Some(node), at) {
            Ok(_) => {
                self.pass(
                    subject,
                    check,
                    format!(
                        "certificate {fingerprint} is the one configuration version {} registers for the node, \
                         issued by an approved CA and valid when it signed the checkpoint",
                        conf.conf.version
                    ),
                );
                Some(cert.1)
            }
            Err(e) => {
                self.fail(
                    subject,
                    check,
                    format!(
                        "certificate {fingerprint} is not accepted for the node by configuration version {} at {}: {e}",
                        conf.conf.version,
                        time_text(at)
                    ),
                );
                None
            }
        }
    }

    /// Every witness co-signature: by the instance's registry, with a key of the anchor or of
    /// the verified configuration valid when it signed; at least one.
    fn check_witnesses(
        &mut self,
        subject: &str,
        signed: &log_pb::SignedCheckpoint,
        conf: Option<&Conf>,
        summary: &mut SideSummary,
    ) {
        let check = "witness co-signature";
        let witness_role = log_pb::SignerRole::Witness as i32;
        let cosigs: Vec<&log_pb::CheckpointSignature> =
            signed.signatures.iter().filter(|s| s.role == witness_role).collect();
        if cosigs.is_empty() {
            self.fail(
                subject,
                check,
                "the checkpoint carries no witness co-signature: the registry never vouched for this history",
            );
            return;
        }
        let keys = conf.map_or_else(|| self.anchor.signing_keys.clone(), |c| c.keys.clone());
        let instance = self.anchor.instance.to_string();
        for cosig in cosigs {
            let at = from_millis(cosig.signed_at_ms);
            let id = cosig.signature.as_ref().map(|s| s.signer_sha256.as_slice()).unwrap_or_default();
            let algorithm = cosig.signature.as_ref().map_or(0, |s| s.algorithm);
            let Some(key) = keys.iter().find(|k| k.id.0.as_slice() == id) else {
                self.fail(
                    subject,
                    check,
                    format!(
                        "a co-signature by key {}, which neither the anchor nor the configuration lists",
                        hex_id(id)
                    ),
                );
                continue;
            };
            if cosig.signer != instance {
                self.fail(
                    subject,
                    check,
                    format!(
                        "a co-signature by {:?}, not by the registry of instance {instance}",
                        cosig.signer
                    ),
                );
            } else if !key.is_valid_at(at) {
                self.fail(
                    subject,
                    check,
                    format!("registry key {} was not valid when it co-signed ({})", key.id, time_text(at)),
                );
            } else if algorithm != algorithm_to_wire(key.key.algorithm()) as i32 {
                self.fail(
                    subject,
                    check,
                    format!("the co-signature claims algorithm {algorithm}, not key {}'s", key.id),
                );
            } else {
                // One co-signature at a time, so each is known to be checked.
                let one = log_pb::SignedCheckpoint {
                    checkpoint: signed.checkpoint.clone(),
                    signatures: vec![cosig.clone()],
                };
                match verify_witness_signatures(&one, &[(key.id, key.key.clone())]) {
                    Ok(1) => {
                        summary.witnessed_by.push(key.id.to_string());
                        self.pass(
                            subject,
                            check,
                            format!(
                                "the registry of instance {instance} co-signed the checkpoint at {} with key {}, \
                                 vouching that this history extends the one it witnessed before",
                                time_text(at),
                                key.id
                            ),
                        );
                    }
                    Ok(_) | Err(_) => {
                        self.fail(
                            subject,
                            check,
                            format!("the registry's co-signature with key {} does not verify", key.id),
                        );
                    }
                }
            }
        }
    }
}
