//! The global configurations: signed with the anchor's keys (every signature checked), and the
//! federation partners' views a side carries.

use std::time::SystemTime;

use lienthong_globalconf::{Anchor, SIGNING_CONTEXT, algorithm_to_wire, from_millis, verify_ignoring_expiry};
use lienthong_pki::tls::TrustPolicy;
use lienthong_proto::audit::v1 as pb;
use lienthong_proto::globalconf::v1 as gc_pb;
use prost::Message;

use super::{Conf, Verifier, hex_id, time_text};

impl Verifier<'_> {
    /// A global configuration: the anchor's keys signed it, for the anchor's instance, and every
    /// signature it carries verifies.
    pub(super) fn check_conf(&mut self, i: usize, bytes: &[u8]) -> Option<Conf> {
        let subject = format!("global configuration {}", i + 1);
        let check = "configuration signature";
        let signed = match gc_pb::SignedGlobalConf::decode(bytes) {
            Ok(s) => s,
            Err(e) => {
                self.fail(&subject, check, format!("is not a signed global configuration ({e})"));
                return None;
            }
        };
        let before = self.failed();
        if signed.encode_to_vec() != bytes {
            self.fail(&subject, check, "its encoding is not canonical (unknown fields or altered framing)");
        }
        // Evidence does not expire: the anchor's keys are taken as of when the configuration
        // was made (the time is signed, so it cannot be moved without breaking the signature).
        let generated_at = gc_pb::GlobalConf::decode(signed.conf.as_slice())
            .map_or(SystemTime::UNIX_EPOCH, |c| from_millis(c.generated_at_ms));
        let verified = match verify_ignoring_expiry(bytes, self.anchor, generated_at) {
            Ok(v) => v,
            Err(e) => {
                self.fail(
                    &subject,
                    check,
                    format!("does not verify against the anchor of instance {}: {e}", self.anchor.instance),
                );
                return None;
            }
        };
        let mut keys = self.anchor.signing_keys.clone();
        for k in &verified.conf.signing_keys {
            if !keys.iter().any(|a| a.id == k.id) {
                keys.push(k.clone());
            }
        }
        // `verify_ignoring_expiry` skips signatures by keys the anchor does not know (a key being
        // rolled in); in evidence every signature must verify, so none is unchecked.
        let message = [SIGNING_CONTEXT, signed.conf.as_slice()].concat();
        for sig in &signed.signatures {
            match keys.iter().find(|k| k.id.0.as_slice() == sig.signer_sha256) {
                None => self.fail(
                    &subject,
                    check,
                    format!(
                        "carries a signature by key {}, which neither the anchor nor the configuration lists",
                        hex_id(&sig.signer_sha256)
                    ),
                ),
                Some(k)
                    if sig.algorithm != algorithm_to_wire(k.key.algorithm()) as i32
                        || k.key.verify(&message, &sig.value).is_err() =>
                {
                    self.fail(&subject, check, format!("its signature by key {} does not verify", k.id));
                }
                Some(_) => {}
            }
        }
        if self.failed() == before {
            self.pass(
                &subject,
                check,
                format!(
                    "version {} of instance {}, generated {}, signed by the anchor's key {}",
                    verified.conf.version,
                    verified.conf.instance,
                    time_text(verified.conf.generated_at),
                    verified.signed_by.id
                ),
            );
        }
        let trust = TrustPolicy::new(verified.conf.approved_cas.iter(), verified.conf.registered_nodes())
            .map_err(|e| e.to_string());
        Some(Conf { conf: verified.conf, trust, keys })
    }

    /// `conf` with the federation partners' views `side` carries, each verified against the keys
    /// `conf` announces for that partner; `None` when it carries none.
    pub(super) fn with_partners(
        &mut self,
        subject: &str,
        side: &pb::EvidenceSide,
        conf: &Conf,
    ) -> Option<Conf> {
        if side.partner_confs.is_empty() {
            return None;
        }
        let check = "partner configuration";
        let mut merged = conf.conf.clone();
        let mut previous: Option<String> = None;
        for bytes in &side.partner_confs {
            let inner = gc_pb::SignedGlobalConf::decode(bytes.as_slice())
                .ok()
                .filter(|s| s.encode_to_vec() == *bytes)
                .and_then(|s| gc_pb::GlobalConf::decode(s.conf.as_slice()).ok());
            let Some(inner) = inner else {
                self.fail(
                    subject,
                    check,
                    "a partner configuration is not a signed global configuration in canonical encoding",
                );
                continue;
            };
            if previous.as_ref().is_some_and(|p| *p >= inner.instance) {
                self.fail(
                    subject,
                    check,
                    "its partner configurations are not one per instance in instance order",
                );
            }
            previous = Some(inner.instance.clone());
            let Some(partner) =
                conf.conf.federation_partners.iter().find(|p| p.instance.as_str() == inner.instance)
            else {
                self.fail(
                    subject,
                    check,
                    format!(
                        "instance {:?} is not a federation partner in configuration version {}",
                        inner.instance, conf.conf.version
                    ),
                );
                continue;
            };
            let anchor = Anchor {
                instance: partner.instance.clone(),
                conf_urls: partner.conf_urls.clone(),
                signing_keys: partner.signing_keys.clone(),
                generated_at: conf.conf.generated_at,
            };
            match verify_ignoring_expiry(bytes, &anchor, from_millis(inner.generated_at_ms)) {
                Ok(v) => {
                    merged.add_partner(&v.conf);
                    self.pass(
                        subject,
                        check,
                        format!(
                            "version {} of partner instance {}, signed with a key configuration version {} announces for it",
                            v.conf.version, partner.instance, conf.conf.version
                        ),
                    );
                }
                Err(e) => self.fail(
                    subject,
                    check,
                    format!(
                        "the configuration of partner instance {} does not verify: {e}",
                        partner.instance
                    ),
                ),
            }
        }
        let trust = TrustPolicy::new(merged.approved_cas.iter(), merged.registered_nodes())
            .map_err(|e| e.to_string());
        Some(Conf { conf: merged, trust, keys: conf.keys.clone() })
    }
}
