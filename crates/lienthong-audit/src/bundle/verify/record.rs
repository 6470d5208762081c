//! One record of a side: included in the signed checkpoint, written by this node for an exchange
//! the bundle names, with the body the log kept.

use lienthong_msglog::checkpoint::Checkpoint;
use lienthong_msglog::merkle::{self, Hash, ProofError};
use lienthong_proto::audit::v1 as pb;
use lienthong_proto::msglog::v1 as log_pb;
use prost::Message;
use sha2::{Digest, Sha256};

use super::{Conf, Rec, Verifier, direction_name, id_text, ms_text, role_name};
use crate::bundle::build::ExchangeRef;

impl Verifier<'_> {
    /// One record: its inclusion in the checkpoint, what it is, and its envelope's signature.
    pub(super) fn check_record(
        &mut self,
        side: &pb::EvidenceSide,
        position: usize,
        r: &pb::EvidenceRecord,
        checkpoint: Option<&Checkpoint>,
        conf: Option<&Conf>,
        wanted: &[ExchangeRef],
    ) -> Option<Rec> {
        let decoded = log_pb::LogRecord::decode(r.record.as_slice());
        let index = r.proof.as_ref().map(|p| p.leaf_index);
        let mut subject = match index {
            Some(i) => format!("node {}, record {i}", side.node),
            None => format!("node {}, record #{} of the bundle", side.node, position + 1),
        };
        if let Ok(rec) = &decoded {
            subject.push_str(&format!(
                " ({} {} of {})",
                role_name(rec.role),
                direction_name(rec.direction),
                rec.message_id
            ));
        }
        self.check_inclusion(&subject, r, checkpoint);
        let record = match decoded {
            Ok(rec) => rec,
            Err(e) => {
                self.fail(&subject, "record", format!("does not decode as a LogRecord ({e})"));
                return None;
            }
        };

        let before = self.failed();
        let written_by = id_text(record.node.as_ref());
        if written_by != side.node {
            self.fail(&subject, "record", format!("it was written by node {written_by:?}, not by this node"));
        }
        if role_name(record.role).starts_with("unknown")
            || direction_name(record.direction).starts_with("unknown")
        {
            self.fail(&subject, "record", "its role or direction is not known");
        }
        if !wanted.iter().any(|e| e.matches(&record.message_id, &record.request_id)) {
            self.fail(
                &subject,
                "record",
                format!(
                    "it is of exchange {} (request {}), which the bundle does not name",
                    record.message_id, record.request_id
                ),
            );
        }
        if self.failed() == before {
            self.pass(
                &subject,
                "record",
                format!(
                    "logged by this node at {} as the {} side's {} of exchange {} (request {})",
                    ms_text(record.logged_at_ms),
                    role_name(record.role),
                    direction_name(record.direction),
                    record.message_id,
                    record.request_id
                ),
            );
        }
        let mut rec = Rec {
            node: side.node.clone(),
            index: index.unwrap_or_default(),
            record,
            request: None,
            response: None,
        };
        self.check_envelope(&subject, &mut rec, conf);
        self.check_body(&subject, &rec.record);
        Some(rec)
    }

    fn check_inclusion(&mut self, subject: &str, r: &pb::EvidenceRecord, checkpoint: Option<&Checkpoint>) {
        let check = "inclusion proof";
        let Some(proof) = &r.proof else {
            self.fail(subject, check, "the record has no inclusion proof");
            return;
        };
        let Some(cp) = checkpoint else {
            self.skip(subject, check, "not checked: the side's checkpoint cannot be read");
            return;
        };
        if proof.tree_size != cp.size {
            self.fail(
                subject,
                check,
                format!(
                    "the proof is for a tree of {} records, not the checkpoint's {}",
                    proof.tree_size, cp.size
                ),
            );
            return;
        }
        let mut path: Vec<Hash> = Vec::with_capacity(proof.hashes.len());
        for h in &proof.hashes {
            let Ok(h) = <Hash>::try_from(h.as_slice()) else {
                self.fail(subject, check, "the proof holds a hash that is not 32 bytes");
                return;
            };
            path.push(h);
        }
        match merkle::verify_inclusion(
            &merkle::leaf_hash(&r.record),
            proof.leaf_index,
            cp.size,
            &path,
            &cp.root,
        ) {
            Ok(()) => self.pass(
                subject,
                check,
                format!(
                    "it is record {} of the log of {} records the checkpoint signs",
                    proof.leaf_index, cp.size
                ),
            ),
            Err(ProofError::RootMismatch) => self.fail(
                subject,
                check,
                format!(
                    "it is not record {} of the log the checkpoint signs: the record's bytes (or its proof) \
                     differ from what the node had logged when it signed the checkpoint of size {}",
                    proof.leaf_index, cp.size
                ),
            ),
            Err(e) => self.fail(subject, check, format!("it is not in the log the checkpoint signs ({e})")),
        }
    }

    /// A body the log kept in full must be the one whose digest was signed.
    fn check_body(&mut self, subject: &str, r: &log_pb::LogRecord) {
        let check = "body";
        match &r.body {
            Some(log_pb::log_record::Body::PlainBody(body)) => {
                let digest: [u8; 32] = Sha256::digest(body).into();
                if digest.as_slice() == r.body_sha256 && body.len() as u64 == r.body_length {
                    self.pass(
                        subject,
                        check,
                        format!("the logged body ({} bytes) has the signed digest and length", body.len()),
                    );
                } else {
                    self.fail(subject, check, "the logged body does not have the signed digest and length");
                }
            }
            Some(log_pb::log_record::Body::EncryptedBody(e)) => self.skip(
                subject,
                check,
                format!("kept encrypted with the node's body key {}: not checkable without it", e.key_id),
            ),
            None if r.body_length > 0 => {
                self.skip(
                    subject,
                    check,
                    "the log keeps only the body's digest and length (metadata-only policy or a large body)",
                );
            }
            None => {}
        }
    }
}
