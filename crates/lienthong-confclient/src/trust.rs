//! Which keys a configuration is checked against: the anchor's, plus the keys the held
//! configuration announces (see the crate documentation, "Trust and key rollover").

use lienthong_globalconf::{Anchor, ConfKey, GlobalConf};

/// The anchor with the learned keys added: the set a downloaded configuration is checked against.
pub(crate) fn trusted_anchor(anchor: &Anchor, learned: &[ConfKey]) -> Anchor {
    let mut trusted = anchor.clone();
    trusted.signing_keys.extend(learned.iter().cloned());
    trusted
}

/// The keys `conf` announces that the anchor does not already hold.
pub(crate) fn announced_keys(anchor: &Anchor, conf: &GlobalConf) -> Vec<ConfKey> {
    let mut keys: Vec<ConfKey> = Vec::new();
    for key in &conf.signing_keys {
        if !anchor.signing_keys.iter().chain(&keys).any(|k| k.id == key.id) {
            keys.push(key.clone());
        }
    }
    keys
}
