//! Checking a downloaded configuration against the anchor.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lienthong_proto::convert::decode;
use lienthong_proto::globalconf::v1 as pb;
use lienthong_types::InstanceId;

use crate::anchor::Anchor;
use crate::error::ConfError;
use crate::keys::{ConfKey, signed_message};
use crate::model::GlobalConf;

/// How far ahead of our clock a configuration's generation time may be (clock skew).
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// A configuration whose signature, instance and expiry were checked. `bytes` are the exact
/// `SignedGlobalConf` bytes, to persist and to hand on unchanged.
#[derive(Debug, Clone)]
pub struct VerifiedConf {
    pub conf: GlobalConf,
    pub bytes: Vec<u8>,
    /// The key that signed it (the first trusted one, when several did).
    pub signed_by: ConfKey,
    /// On a node's merged view (see `lienthong_node::federation`): the federation partners'
    /// verified views whose members, nodes and services were added to `conf`. Empty otherwise.
    pub partners: Vec<Arc<VerifiedConf>>,
}

/// Where a held configuration stands at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Valid {
        remaining: Duration,
    },
    /// Valid, but less than the warning margin remains: the registry has not been reached lately.
    Expiring {
        remaining: Duration,
    },
    Expired {
        since: Duration,
    },
}

impl Freshness {
    pub fn of(conf: &GlobalConf, now: SystemTime, warn_before: Duration) -> Self {
        match conf.expires_at.duration_since(now) {
            Ok(remaining) if remaining.is_zero() => Freshness::Expired { since: Duration::ZERO },
            Ok(remaining) if remaining <= warn_before => Freshness::Expiring { remaining },
            Ok(remaining) => Freshness::Valid { remaining },
            Err(e) => Freshness::Expired { since: e.duration() },
        }
    }

    pub fn is_usable(self) -> bool {
        !matches!(self, Freshness::Expired { .. })
    }
}

impl VerifiedConf {
    /// Refuses `self` if it would replace `held` with older data: a lower version, or the same
    /// version generated earlier (a replayed copy with an earlier expiry).
    pub fn check_not_older_than(&self, held: &GlobalConf) -> Result<(), ConfError> {
        let (new, old) = (&self.conf, held);
        if (new.version, new.generated_at) < (old.version, old.generated_at) {
            return Err(ConfError::Rollback {
                offered: new.version,
                offered_generated_at: new.generated_at,
                held: old.version,
                held_generated_at: old.generated_at,
            });
        }
        Ok(())
    }
}

/// Verifies downloaded `SignedGlobalConf` bytes against the anchor's keys at `now`.
///
/// At least one signature must be by a trusted key valid at `now`, and every signature by a
/// trusted key must verify; signatures by keys the anchor does not know are ignored (a key
/// being rolled in). The configuration must be for the anchor's instance and not expired.
pub fn verify(bytes: &[u8], anchor: &Anchor, now: SystemTime) -> Result<VerifiedConf, ConfError> {
    let verified = verify_ignoring_expiry(bytes, anchor, now)?;
    if verified.conf.expires_at <= now {
        return Err(ConfError::Expired { expired_at: verified.conf.expires_at });
    }
    Ok(verified)
}

/// [`verify`] without the expiry check: for a node's persisted copy at start-up, which must stay
/// the rollback floor even after it has expired (it is never used for traffic then).
pub fn verify_ignoring_expiry(
    bytes: &[u8],
    anchor: &Anchor,
    now: SystemTime,
) -> Result<VerifiedConf, ConfError> {
    verify_with_keys(bytes, &anchor.instance, &anchor.signing_keys, now)
}

fn verify_with_keys(
    bytes: &[u8],
    instance: &InstanceId,
    trusted: &[ConfKey],
    now: SystemTime,
) -> Result<VerifiedConf, ConfError> {
    let signed: pb::SignedGlobalConf = decode("SignedGlobalConf", bytes)?;
    let message = signed_message(&signed.conf);
    let mut signed_by = None;
    for sig in &signed.signatures {
        let Some(key) = trusted.iter().find(|k| k.id.0.as_slice() == sig.signer_sha256 && k.is_valid_at(now))
        else {
            continue;
        };
        key.key
            .verify(&message, &sig.value)
            .map_err(|_| ConfError::BadSignature { key_id: key.id.to_string() })?;
        signed_by.get_or_insert_with(|| key.clone());
    }
    let signed_by = signed_by.ok_or(ConfError::UntrustedSigner)?;
    let conf = GlobalConf::from_wire(decode("GlobalConf", &signed.conf)?)?;
    if &conf.instance != instance {
        return Err(ConfError::WrongInstance { expected: instance.clone(), found: conf.instance });
    }
    if conf.generated_at > now + MAX_CLOCK_SKEW {
        return Err(ConfError::FromTheFuture { generated_at: conf.generated_at });
    }
    Ok(VerifiedConf { conf, bytes: bytes.to_vec(), signed_by, partners: Vec::new() })
}
