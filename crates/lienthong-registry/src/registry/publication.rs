//! Publishing: building and signing the global configuration from the store, the anchor, and
//! the configuration-signing keys.

use std::sync::Arc;
use std::time::SystemTime;

use lienthong_globalconf::{ConfKey, sign, to_millis};
use lienthong_pki::{Fingerprint, PrivateKey};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use prost::Message;
use tokio::sync::watch;

use super::{Published, Registry, SigningKey, not_found};
use crate::error::RegistryError;
use crate::store::{self, Snapshot};

impl Registry {
    /// The anchor nodes of this instance start from.
    pub fn anchor(&self, now: SystemTime) -> lienthong_globalconf::Anchor {
        lienthong_globalconf::Anchor {
            instance: self.settings.instance.clone(),
            conf_urls: self.settings.conf_urls.clone(),
            signing_keys: self
                .conf_keys()
                .into_iter()
                .filter(|k| k.valid_until.is_none_or(|u| u > now))
                .collect(),
            generated_at: now,
        }
    }

    /// The latest published configuration; changes as soon as something is committed.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.published.subscribe()
    }

    pub fn current(&self) -> Arc<Published> {
        self.published.borrow().clone()
    }

    /// Builds, signs and publishes the configuration from the current store state. Called after
    /// every change and on a timer (a fresh expiry even when nothing changed).
    pub fn publish(&self) -> Result<Arc<Published>, RegistryError> {
        let _serial = self.publish_lock.lock().expect("publish lock");
        let now = self.now();
        let snap = self.store.read()?;
        let conf = self.build_conf(&snap, now)?;
        let keys = self.conf_keys.lock().expect("conf keys lock");
        let signers: Vec<&PrivateKey> =
            keys.iter().filter(|k| k.public.is_valid_at(now)).map(|k| &k.key).collect();
        if signers.is_empty() {
            return Err(RegistryError::Conflict("no configuration-signing key is valid now".into()));
        }
        let signed = sign(&conf, &signers).map_err(RegistryError::internal)?;
        let bytes = signed.encode_to_vec();
        let partner = partner_view(conf.clone());
        let partner_bytes = sign(&partner, &signers).map_err(RegistryError::internal)?.encode_to_vec();
        // From the content: distinct bytes never share a tag (ECDSA signatures differ per run).
        let etag = |b: &[u8]| format!("\"v{}-{}\"", conf.version, &Fingerprint::of(b).to_string()[..16]);
        let published = Arc::new(Published {
            version: conf.version,
            generated_at: now,
            expires_at: now + self.settings.conf_validity,
            etag: etag(&bytes),
            partner_etag: etag(&partner_bytes),
            bytes,
            partner_bytes,
        });
        self.published.send_replace(published.clone());
        tracing::debug!(version = conf.version, "published global configuration");
        Ok(published)
    }

    fn build_conf(&self, snap: &Snapshot, now: SystemTime) -> Result<gc::GlobalConf, RegistryError> {
        let grants: Vec<pb::StoredGrant> = snap.values(store::GRANTS)?;
        let keys: Vec<pb::StoredConfKey> = snap.values(store::CONF_KEYS)?;
        let cas: Vec<pb::IssuedCertificate> = snap.values(store::APPROVED_CAS)?;
        Ok(gc::GlobalConf {
            instance: self.settings.instance.to_string(),
            version: snap.version()?,
            generated_at_ms: to_millis(now),
            expires_at_ms: to_millis(now + self.settings.conf_validity),
            member_classes: snap.all_bytes(store::MEMBER_CLASSES)?.into_iter().map(|(k, _)| k).collect(),
            approved_cas: cas.into_iter().filter(|c| c.revoked_at_ms == 0).map(|c| c.der).collect(),
            members: snap.values(store::MEMBERS)?,
            nodes: snap.values(store::NODES)?,
            services: snap.values(store::SERVICES)?,
            grants: grants.into_iter().filter(|g| g.revoked_at_ms == 0).filter_map(|g| g.grant).collect(),
            global_groups: snap.values(store::GROUPS)?,
            federation_partners: snap.values(store::PARTNERS)?,
            registry_urls: self.settings.registry_urls.clone(),
            signing_keys: keys
                .into_iter()
                .filter_map(|k| k.key)
                .filter(|k| k.valid_until_ms == 0 || k.valid_until_ms > to_millis(now))
                .collect(),
        })
    }

    /// Starts a key rollover: from now on `key` signs too, and configurations announce it.
    pub fn add_conf_key(&self, key: SigningKey, key_file: &str) -> Result<(), RegistryError> {
        let mut tx = self.store.write()?;
        let stored = pb::StoredConfKey { key: Some((&key.public).into()), key_file: key_file.into() };
        tx.put(store::CONF_KEYS, &key.public.id.to_string(), &stored)?;
        self.conf_keys.lock().expect("conf keys lock").push(key);
        self.commit(tx)
    }

    /// Ends a rollover: the key stops signing at `at` and is no longer announced after it.
    pub fn retire_conf_key(&self, id: &Fingerprint, at: SystemTime) -> Result<(), RegistryError> {
        // Same lock order as add_conf_key: the store first, then the keys.
        let mut tx = self.store.write()?;
        let mut keys = self.conf_keys.lock().expect("conf keys lock");
        if !keys.iter().any(|k| &k.public.id != id && k.public.valid_until.is_none()) {
            return Err(RegistryError::Conflict("add the new key before retiring the last one".into()));
        }
        let mut stored: pb::StoredConfKey = tx
            .get(store::CONF_KEYS, &id.to_string())?
            .ok_or_else(|| not_found(format!("signing key {id}")))?;
        if let Some(k) = stored.key.as_mut() {
            k.valid_until_ms = to_millis(at);
        }
        tx.put(store::CONF_KEYS, &id.to_string(), &stored)?;
        for k in keys.iter_mut().filter(|k| &k.public.id == id) {
            k.public.valid_until = Some(at);
        }
        drop(keys);
        self.commit(tx)
    }

    /// The public configuration-signing keys, for the anchor.
    pub fn conf_keys(&self) -> Vec<ConfKey> {
        self.conf_keys.lock().expect("conf keys lock").iter().map(|k| k.public.clone()).collect()
    }
}

/// What a federation partner may see of `conf`: members, nodes, services, CAs and signing keys
/// (enough to route to this instance's nodes, pin them and check its members' signatures), not
/// who is granted what here, the global groups, this instance's other partners or where its
/// management API listens.
fn partner_view(mut conf: gc::GlobalConf) -> gc::GlobalConf {
    conf.grants.clear();
    conf.global_groups.clear();
    conf.federation_partners.clear();
    conf.registry_urls.clear();
    conf
}
