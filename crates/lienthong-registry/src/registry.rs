//! The registry's state machine: membership, catalogue, grants, onboarding requests and the
//! published configuration. Every operation is one redb transaction; on success the signed
//! configuration is regenerated, so a change is visible at the next poll.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lienthong_globalconf::{ConfKey, request_signed_message, sign, to_millis};
use lienthong_pki::{Certificate, CertificateAuthority, Csr, Fingerprint, Identity, PrivateKey, Validity};
use lienthong_proto::convert::{IntoDomain, decode, known_enum, required};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_types::{ClientId, InstanceId, MemberClass, MemberId, NodeId, ServiceId, SubsystemId};
use prost::Message;
use tokio::sync::watch;

use crate::error::RegistryError;
use crate::store::{self, Snapshot, Store, Tx};

pub use lienthong_runtime::Clock;

/// The system clock.
pub fn system_clock() -> Clock {
    Clock::system()
}

/// Which management requests take effect without an operator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoApprove {
    pub register_node: bool,
    pub issue_signing_cert: bool,
    pub host_subsystem: bool,
    pub publish_service: bool,
    pub grant_access: bool,
    pub revoke_access: bool,
}

impl Default for AutoApprove {
    /// Identity-bearing requests wait for the operator; catalogue changes by an authenticated
    /// member take effect at once; a revocation is never held back.
    fn default() -> Self {
        Self {
            register_node: false,
            issue_signing_cert: false,
            host_subsystem: false,
            publish_service: true,
            grant_access: true,
            revoke_access: true,
        }
    }
}

/// Settings that shape what the registry publishes.
#[derive(Debug, Clone)]
pub struct Settings {
    pub instance: InstanceId,
    /// How long a published configuration stays valid.
    pub conf_validity: Duration,
    /// Where this registry's configuration can be downloaded (goes into the anchor).
    pub conf_urls: Vec<String>,
    /// Where its management API listens (goes into the configuration).
    pub registry_urls: Vec<String>,
    pub auto_approve: AutoApprove,
    /// Validity of issued node and member certificates.
    pub cert_validity: Validity,
}

/// One published configuration.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    pub generated_at: SystemTime,
    pub expires_at: SystemTime,
    /// The `SignedGlobalConf` bytes.
    pub bytes: Vec<u8>,
    /// A strong HTTP entity tag, quotes included.
    pub etag: String,
    /// The view federation partners get (`SignedGlobalConf`, same version and signers): the
    /// configuration without the access grants, global groups, partners and registry URLs,
    /// which are this instance's own business.
    pub partner_bytes: Vec<u8>,
    pub partner_etag: String,
}

/// A configuration-signing key in use.
#[derive(Debug)]
pub struct SigningKey {
    pub public: ConfKey,
    pub key: PrivateKey,
}

/// The registry service.
pub struct Registry {
    settings: Settings,
    store: Store,
    ca: CertificateAuthority,
    conf_keys: Mutex<Vec<SigningKey>>,
    clock: Clock,
    published: watch::Sender<Arc<Published>>,
    publish_lock: Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("instance", &self.settings.instance).finish_non_exhaustive()
    }
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::Invalid(msg.into())
}

fn not_found(what: impl std::fmt::Display) -> RegistryError {
    RegistryError::NotFound(what.to_string())
}

/// Who signed a management request, established from the signature.
#[derive(Debug)]
enum Signer {
    /// A first node registration: the key in the request's CSR signed it.
    NewNode,
    Node(NodeId),
    Member(MemberId),
}

impl Registry {
    /// Opens (creating if needed) the store at `db_path` with the given signing keys, and
    /// publishes a first configuration if there is a key to sign it.
    pub fn open(
        db_path: &std::path::Path,
        settings: Settings,
        ca: CertificateAuthority,
        conf_keys: Vec<SigningKey>,
        clock: Clock,
    ) -> Result<Self, RegistryError> {
        let store = Store::open(db_path)?;
        Self::build(store, settings, ca, conf_keys, clock)
    }

    /// Opens the store and loads the configuration-signing keys it lists (not yet retired)
    /// through `load`, which reads a key file by name.
    pub fn open_with_stored_keys(
        db_path: &std::path::Path,
        settings: Settings,
        ca: CertificateAuthority,
        load: &dyn Fn(&str) -> Result<PrivateKey, RegistryError>,
        clock: Clock,
    ) -> Result<Self, RegistryError> {
        let store = Store::open(db_path)?;
        let now = clock();
        let mut keys = Vec::new();
        for stored in store.read()?.values::<pb::StoredConfKey>(store::CONF_KEYS)? {
            let wire =
                stored.key.ok_or_else(|| RegistryError::Invalid("stored signing key is empty".into()))?;
            let public = ConfKey::try_from(wire)
                .map_err(|e| RegistryError::Invalid(format!("stored signing key: {e}")))?;
            if public.valid_until.is_some_and(|until| until <= now) {
                continue;
            }
            let key = load(&stored.key_file)?;
            if key.public_key() != public.key {
                return Err(RegistryError::Invalid(format!(
                    "key file {} does not hold signing key {}",
                    stored.key_file, public.id
                )));
            }
            keys.push(SigningKey { public, key });
        }
        Self::build(store, settings, ca, keys, clock)
    }

    fn build(
        store: Store,
        settings: Settings,
        ca: CertificateAuthority,
        conf_keys: Vec<SigningKey>,
        clock: Clock,
    ) -> Result<Self, RegistryError> {
        if ca.instance() != &settings.instance {
            return Err(invalid(format!(
                "the CA is for instance {}, the registry for {}",
                ca.instance(),
                settings.instance
            )));
        }
        let (published, _) = watch::channel(Arc::new(Published {
            version: 0,
            generated_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH,
            bytes: Vec::new(),
            etag: String::new(),
            partner_bytes: Vec::new(),
            partner_etag: String::new(),
        }));
        let registry = Self {
            settings,
            store,
            ca,
            conf_keys: Mutex::new(conf_keys),
            clock,
            published,
            publish_lock: Mutex::new(()),
        };
        registry.bootstrap()?;
        if !registry.conf_keys.lock().expect("conf keys lock").is_empty() {
            registry.publish()?;
        }
        Ok(registry)
    }

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

    /// Records the CA, its certificate and the signing keys' public halves, once.
    fn bootstrap(&self) -> Result<(), RegistryError> {
        let mut tx = self.store.write()?;
        let ca = self.ca.certificate();
        let fp = ca.fingerprint().to_string();
        if tx.get::<pb::IssuedCertificate>(store::APPROVED_CAS, &fp)?.is_none() {
            tx.put(store::APPROVED_CAS, &fp, &issued(ca, self.now()))?;
        }
        for k in self.conf_keys.lock().expect("conf keys lock").iter() {
            let id = k.public.id.to_string();
            if tx.get::<pb::StoredConfKey>(store::CONF_KEYS, &id)?.is_none() {
                let stored = pb::StoredConfKey { key: Some((&k.public).into()), key_file: String::new() };
                tx.put(store::CONF_KEYS, &id, &stored)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn ca_certificate(&self) -> &Certificate {
        self.ca.certificate()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Signs with the key that co-signs checkpoints: the newest configuration-signing key valid
    /// now, so anyone holding the anchor can check a co-signature offline.
    pub(crate) fn with_witness_key<T>(
        &self,
        now: SystemTime,
        f: impl FnOnce(&PrivateKey, Fingerprint) -> T,
    ) -> Result<T, RegistryError> {
        let keys = self.conf_keys.lock().expect("conf keys lock");
        let k = keys
            .iter()
            .rev()
            .find(|k| k.public.is_valid_at(now))
            .ok_or_else(|| RegistryError::Conflict("no configuration-signing key is valid now".into()))?;
        Ok(f(&k.key, k.public.id))
    }

    /// The registry's clock.
    pub fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// The latest published configuration; changes as soon as something is committed.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.published.subscribe()
    }

    pub fn current(&self) -> Arc<Published> {
        self.published.borrow().clone()
    }

    // ----- publishing ---------------------------------------------------------------------

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

    /// Commits `tx` and republishes if it changed anything.
    fn commit(&self, tx: Tx) -> Result<(), RegistryError> {
        let before = self.current().version;
        let version = tx.commit()?;
        if version != before && !self.conf_keys.lock().expect("conf keys lock").is_empty() {
            self.publish()?;
        }
        Ok(())
    }

    // ----- keys ---------------------------------------------------------------------------

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

    // ----- members ------------------------------------------------------------------------

    pub fn add_member_class(&self, class: &MemberClass, description: &str) -> Result<(), RegistryError> {
        let mut tx = self.store.write()?;
        tx.put_bytes(store::MEMBER_CLASSES, class.as_str(), description.as_bytes())?;
        self.commit(tx)
    }

    pub fn add_member(
        &self,
        id: &MemberId,
        name: &str,
        parent: Option<&MemberId>,
    ) -> Result<gc::Member, RegistryError> {
        self.check_instance(&id.instance, "member")?;
        if name.trim().is_empty() {
            return Err(invalid("a member needs a name"));
        }
        let mut tx = self.store.write()?;
        if tx.get_bytes(store::MEMBER_CLASSES, id.class.as_str())?.is_none() {
            return Err(invalid(format!(
                "member class {} is not defined in instance {}",
                id.class, id.instance
            )));
        }
        if tx.get::<gc::Member>(store::MEMBERS, &id.to_string())?.is_some() {
            return Err(RegistryError::Duplicate(format!("member {id}")));
        }
        if let Some(p) = parent {
            active_member(&tx, p)?;
        }
        let member = gc::Member {
            id: Some(id.into()),
            name: name.trim().into(),
            status: gc::MemberStatus::Active as i32,
            status_since_ms: to_millis(self.now()),
            parent: parent.map(Into::into),
            ..Default::default()
        };
        tx.put(store::MEMBERS, &id.to_string(), &member)?;
        self.commit(tx)?;
        Ok(member)
    }

    pub fn add_subsystem(&self, id: &SubsystemId, name: &str) -> Result<gc::Member, RegistryError> {
        let mut tx = self.store.write()?;
        let mut member = active_member(&tx, &id.member)?;
        if member.subsystems.iter().any(|s| s.code == id.code.as_str()) {
            return Err(RegistryError::Duplicate(format!("subsystem {id}")));
        }
        member.subsystems.push(gc::Subsystem { code: id.code.to_string(), name: name.trim().into() });
        tx.put(store::MEMBERS, &id.member.to_string(), &member)?;
        self.commit(tx)?;
        Ok(member)
    }

    /// Closes a member (optionally superseded by another, e.g. merged provinces): its signing
    /// certificates, nodes, hosted subsystems, grants and pending requests are revoked with it.
    pub fn close_member(
        &self,
        id: &MemberId,
        superseded_by: Option<&MemberId>,
        reason: &str,
    ) -> Result<gc::Member, RegistryError> {
        let now = self.now();
        let reason = non_empty_reason(reason)?;
        let mut tx = self.store.write()?;
        let mut member = active_member(&tx, id)?;
        if let Some(s) = superseded_by {
            if s == id {
                return Err(invalid("a member cannot supersede itself"));
            }
            active_member(&tx, s)?;
        }
        member.status =
            if superseded_by.is_some() { gc::MemberStatus::Superseded } else { gc::MemberStatus::Closed }
                as i32;
        member.status_since_ms = to_millis(now);
        member.superseded_by = superseded_by.map(Into::into);
        for fp in std::mem::take(&mut member.signing_cert_sha256) {
            revoke_cert(&mut tx, &hex::encode(fp), now, reason)?;
        }
        tx.put(store::MEMBERS, &id.to_string(), &member)?;
        for (key, node) in tx.all::<gc::Node>(store::NODES)? {
            let node_id: NodeId = required(node.id.clone(), "node")?;
            if &node_id.owner == id {
                remove_node_in(&mut tx, &key, node, now, reason)?;
            } else {
                let mut node = node;
                let before = node.hosted_subsystems.len();
                node.hosted_subsystems.retain(|s| s.member.as_ref() != Some(&id.into()));
                if node.hosted_subsystems.len() != before {
                    tx.put(store::NODES, &key, &node)?;
                }
            }
        }
        for (key, mut g) in tx.all::<pb::StoredGrant>(store::GRANTS)? {
            let Some(grant) = &g.grant else { continue };
            let concerns = grant
                .service
                .as_ref()
                .and_then(|s| s.subsystem.as_ref())
                .and_then(|s| s.member.as_ref())
                == Some(&id.into())
                || matches!(&grant.subject, Some(gc::access_grant::Subject::Client(c)) if client_member(c) == Some(id.into()));
            if concerns && g.revoked_at_ms == 0 {
                g.revoked_at_ms = to_millis(now);
                g.revoked_reason = format!("member {id} closed: {reason}");
                tx.put(store::GRANTS, &key, &g)?;
            }
        }
        for (key, mut s) in tx.all::<gc::Service>(store::SERVICES)? {
            let owner = s.id.as_ref().and_then(|i| i.subsystem.as_ref()).and_then(|sub| sub.member.as_ref());
            if owner == Some(&id.into()) && !s.disabled {
                s.disabled = true;
                tx.put(store::SERVICES, &key, &s)?;
            }
        }
        for (key, mut r) in tx.all::<pb::StoredRequest>(store::REQUESTS)? {
            let state = r.status.as_ref().map_or(0, |s| s.state);
            let request =
                r.signed.as_ref().and_then(|s| pb::ManagementRequest::decode(s.request.as_slice()).ok());
            let concerns = request.as_ref().is_some_and(|q| request_concerns(q, id));
            // Pending requests die with the member; approved ones whose effect was just revoked
            // (its nodes, its signing certificates) say so.
            let revoke = concerns
                && (state == pb::RequestState::Pending as i32
                    || (state == pb::RequestState::Approved as i32
                        && matches!(
                            request.as_ref().and_then(|q| q.kind.as_ref()),
                            Some(
                                pb::management_request::Kind::RegisterNode(_)
                                    | pb::management_request::Kind::IssueSigningCert(_)
                            )
                        )));
            if revoke {
                set_state(&mut r, pb::RequestState::Revoked, &format!("member {id} closed: {reason}"), now);
                tx.put(store::REQUESTS, &key, &r)?;
            }
        }
        self.commit(tx)?;
        Ok(member)
    }

    pub fn list_members(&self) -> Result<Vec<gc::Member>, RegistryError> {
        self.store.read()?.values(store::MEMBERS)
    }

    // ----- nodes --------------------------------------------------------------------------

    /// Removes a node: it leaves the configuration and its authentication certificate is revoked.
    pub fn remove_node(&self, id: &NodeId, reason: &str) -> Result<gc::Node, RegistryError> {
        let reason = non_empty_reason(reason)?;
        let mut tx = self.store.write()?;
        let key = id.to_string();
        let node: gc::Node = tx.get(store::NODES, &key)?.ok_or_else(|| not_found(format!("node {id}")))?;
        remove_node_in(&mut tx, &key, node.clone(), self.now(), reason)?;
        self.commit(tx)?;
        Ok(node)
    }

    /// A node in maintenance stays registered but consumers route around it.
    pub fn set_maintenance(&self, id: &NodeId, maintenance: bool) -> Result<gc::Node, RegistryError> {
        let mut tx = self.store.write()?;
        let mut node: gc::Node =
            tx.get(store::NODES, &id.to_string())?.ok_or_else(|| not_found(format!("node {id}")))?;
        node.maintenance = maintenance;
        tx.put(store::NODES, &id.to_string(), &node)?;
        self.commit(tx)?;
        Ok(node)
    }

    pub fn list_nodes(&self) -> Result<Vec<gc::Node>, RegistryError> {
        self.store.read()?.values(store::NODES)
    }

    pub fn list_services(&self, provider: Option<&SubsystemId>) -> Result<Vec<gc::Service>, RegistryError> {
        let all: Vec<gc::Service> = self.store.read()?.values(store::SERVICES)?;
        let Some(p) = provider else { return Ok(all) };
        let p: lienthong_proto::types::v1::SubsystemId = p.into();
        Ok(all.into_iter().filter(|s| s.id.as_ref().and_then(|i| i.subsystem.as_ref()) == Some(&p)).collect())
    }

    /// A published service's OpenAPI or WSDL document.
    pub fn service_description(&self, id: &ServiceId) -> Result<Option<Vec<u8>>, RegistryError> {
        self.store.read()?.get_bytes(store::DESCRIPTIONS, &id.to_string())
    }

    // ----- global groups and federation ---------------------------------------------------

    /// Creates a global group or replaces it. Members of this instance must exist; members
    /// of other instances must belong to a federation partner.
    pub fn put_global_group(&self, group: gc::GlobalGroup) -> Result<gc::GlobalGroup, RegistryError> {
        let id: lienthong_types::GlobalGroupId = required(group.id.clone(), "group")?;
        self.check_instance(&id.instance, "global group")?;
        let mut tx = self.store.write()?;
        let mut seen = std::collections::BTreeSet::new();
        for m in &group.members {
            let client: ClientId = m.clone().into_domain("group member")?;
            self.check_client_exists(&tx, &client)?;
            if !seen.insert(client.clone()) {
                return Err(invalid(format!("{client} is listed twice")));
            }
        }
        tx.put(store::GROUPS, &id.to_string(), &group)?;
        self.commit(tx)?;
        Ok(group)
    }

    pub fn list_global_groups(&self) -> Result<Vec<gc::GlobalGroup>, RegistryError> {
        self.store.read()?.values(store::GROUPS)
    }

    pub fn list_federation_partners(&self) -> Result<Vec<gc::FederationPartner>, RegistryError> {
        self.store.read()?.values(store::PARTNERS)
    }

    /// A client of this instance must be an active member (and subsystem); a client of another
    /// instance must belong to a federation partner.
    fn check_client_exists(&self, tx: &Tx, client: &ClientId) -> Result<(), RegistryError> {
        if client.member().instance == self.settings.instance {
            let member = active_member(tx, client.member())?;
            if let Some(sub) = client.subsystem()
                && !member.subsystems.iter().any(|s| s.code == sub.code.as_str())
            {
                return Err(not_found(format!("subsystem {sub}")));
            }
        } else if tx
            .get::<gc::FederationPartner>(store::PARTNERS, client.member().instance.as_str())?
            .is_none()
        {
            return Err(invalid(format!(
                "instance {} is not a federation partner of {}",
                client.member().instance,
                self.settings.instance
            )));
        }
        Ok(())
    }

    /// Trusts another instance's configuration (its anchor), e.g. the national NDXP for a province.
    pub fn add_federation_partner(
        &self,
        anchor: &lienthong_globalconf::Anchor,
    ) -> Result<gc::FederationPartner, RegistryError> {
        if anchor.instance == self.settings.instance {
            return Err(invalid("an instance cannot federate with itself"));
        }
        let partner = gc::FederationPartner {
            instance: anchor.instance.to_string(),
            signing_keys: anchor.signing_keys.iter().map(Into::into).collect(),
            conf_urls: anchor.conf_urls.clone(),
        };
        let mut tx = self.store.write()?;
        tx.put(store::PARTNERS, anchor.instance.as_str(), &partner)?;
        self.commit(tx)?;
        Ok(partner)
    }

    // ----- grants (operator) --------------------------------------------------------------

    /// The operator records an agreement on the service owner's behalf (`granted_by` must be
    /// the owner).
    pub fn add_grant(&self, grant: gc::AccessGrant) -> Result<gc::AccessGrant, RegistryError> {
        let mut tx = self.store.write()?;
        let grant = self.insert_grant(&mut tx, grant, None)?;
        self.commit(tx)?;
        Ok(grant)
    }

    pub fn revoke_grant(&self, grant_id: &str, reason: &str) -> Result<gc::AccessGrant, RegistryError> {
        let reason = non_empty_reason(reason)?;
        let mut tx = self.store.write()?;
        let grant = revoke_grant_in(&mut tx, grant_id, None, reason, self.now())?;
        self.commit(tx)?;
        Ok(grant)
    }

    pub fn list_grants(&self, service: Option<&ServiceId>) -> Result<Vec<pb::StoredGrant>, RegistryError> {
        let all: Vec<pb::StoredGrant> = self.store.read()?.values(store::GRANTS)?;
        let Some(s) = service else { return Ok(all) };
        let s: lienthong_proto::types::v1::ServiceId = s.into();
        Ok(all
            .into_iter()
            .filter(|g| g.grant.as_ref().and_then(|g| g.service.as_ref()) == Some(&s))
            .collect())
    }

    /// Validates and stores a grant. `owner`: the authenticated member, when a member asked.
    fn insert_grant(
        &self,
        tx: &mut Tx,
        mut grant: gc::AccessGrant,
        owner: Option<&MemberId>,
    ) -> Result<gc::AccessGrant, RegistryError> {
        let now = self.now();
        let service: ServiceId = required(grant.service.clone(), "grant service")?;
        let granted_by: MemberId = match (grant.granted_by.clone(), owner) {
            (Some(g), _) => g.into_domain("granted_by")?,
            (None, Some(o)) => o.clone(),
            (None, None) => return Err(invalid("granted_by is missing")),
        };
        if granted_by != service.subsystem.member || owner.is_some_and(|o| o != &granted_by) {
            return Err(RegistryError::Unauthorized(format!(
                "only the owner of {service} ({}) may grant access to it",
                service.subsystem.member
            )));
        }
        if tx.get::<gc::Service>(store::SERVICES, &service.to_string())?.is_none() {
            return Err(not_found(format!("service {service}")));
        }
        match &grant.subject {
            None => return Err(invalid("a grant needs a client or a global group")),
            Some(gc::access_grant::Subject::Client(c)) => {
                let client: ClientId = c.clone().into_domain("client")?;
                self.check_client_exists(tx, &client)?;
            }
            Some(gc::access_grant::Subject::Group(g)) => {
                let g: lienthong_types::GlobalGroupId = g.clone().into_domain("group")?;
                if tx.get::<gc::GlobalGroup>(store::GROUPS, &g.to_string())?.is_none() {
                    return Err(not_found(format!("global group {g}")));
                }
            }
        }
        if grant.legal_basis.trim().is_empty() {
            return Err(invalid("a grant needs its legal basis (the agreement or regulation it rests on)"));
        }
        if grant.valid_until_ms != 0 && grant.valid_until_ms <= grant.valid_from_ms {
            return Err(invalid("valid_until must be after valid_from"));
        }
        for e in &grant.endpoints {
            check_endpoint(e)?;
        }
        if grant.valid_from_ms == 0 {
            grant.valid_from_ms = to_millis(now);
        }
        grant.granted_by = Some((&granted_by).into());
        grant.granted_at_ms = to_millis(now);
        grant.grant_id = format!("G{:06}", tx.all::<pb::StoredGrant>(store::GRANTS)?.len() + 1);
        tx.put(
            store::GRANTS,
            &grant.grant_id,
            &pb::StoredGrant { grant: Some(grant.clone()), revoked_at_ms: 0, revoked_reason: String::new() },
        )?;
        Ok(grant)
    }

    // ----- management requests ------------------------------------------------------------

    /// Accepts a signed management request. Resubmitting the same request is idempotent.
    pub fn submit(&self, signed: pb::SignedManagementRequest) -> Result<pb::RequestStatus, RegistryError> {
        let request: pb::ManagementRequest = decode("ManagementRequest", &signed.request)?;
        check_request_id(&request.request_id)?;
        let mut tx = self.store.write()?;
        if let Some(existing) = tx.get::<pb::StoredRequest>(store::REQUESTS, &request.request_id)? {
            if existing.signed.as_ref().map(|s| &s.request) == Some(&signed.request) {
                return Ok(existing.status.unwrap_or_default());
            }
            return Err(RegistryError::Duplicate(format!(
                "request id {:?} is already used",
                request.request_id
            )));
        }
        let kind = request.kind.clone().ok_or_else(|| invalid("the request has no kind"))?;
        let signer = self.authenticate(&tx, &signed, &kind)?;
        let requester = self.check_request(&tx, &request.request_id, &kind, &signer)?;
        let now = self.now();
        let mut stored = pb::StoredRequest {
            signed: Some(signed),
            status: Some(pb::RequestStatus {
                request_id: request.request_id.clone(),
                state: pb::RequestState::Pending as i32,
                reason: String::new(),
                updated_at_ms: to_millis(now),
                certificate: Vec::new(),
            }),
            requester,
        };
        if self.auto_approved(&kind) {
            let certificate = self.apply(&mut tx, &kind, &signer)?;
            let status = stored.status.as_mut().expect("set above");
            status.state = pb::RequestState::Approved as i32;
            status.reason = "approved by policy".into();
            status.certificate = certificate;
        }
        tx.put(store::REQUESTS, &request.request_id, &stored)?;
        self.commit(tx)?;
        tracing::info!(request = %request.request_id, requester = %stored.requester, "management request accepted");
        Ok(stored.status.unwrap_or_default())
    }

    pub fn request_status(&self, request_id: &str) -> Result<pb::RequestStatus, RegistryError> {
        let stored: pb::StoredRequest = self
            .store
            .read()?
            .get(store::REQUESTS, request_id)?
            .ok_or_else(|| not_found(format!("request {request_id:?}")))?;
        Ok(stored.status.unwrap_or_default())
    }

    pub fn list_requests(
        &self,
        state: Option<pb::RequestState>,
    ) -> Result<Vec<pb::RequestSummary>, RegistryError> {
        let mut out = Vec::new();
        for (_, r) in self.store.read()?.all::<pb::StoredRequest>(store::REQUESTS)? {
            let status = r.status.unwrap_or_default();
            if state.is_some_and(|s| s as i32 != status.state) {
                continue;
            }
            let request =
                r.signed.as_ref().and_then(|s| pb::ManagementRequest::decode(s.request.as_slice()).ok());
            out.push(pb::RequestSummary { status: Some(status), request });
        }
        Ok(out)
    }

    /// The operator approves or rejects a pending request; a rejection needs a reason, which the
    /// requester sees.
    pub fn decide(
        &self,
        request_id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<pb::RequestStatus, RegistryError> {
        let mut tx = self.store.write()?;
        let mut stored: pb::StoredRequest = tx
            .get(store::REQUESTS, request_id)?
            .ok_or_else(|| not_found(format!("request {request_id:?}")))?;
        let state = stored.status.as_ref().map_or(0, |s| s.state);
        if state != pb::RequestState::Pending as i32 {
            return Err(RegistryError::Conflict(format!("request {request_id:?} is not pending")));
        }
        let now = self.now();
        if approve {
            let signed = stored.signed.clone().unwrap_or_default();
            let request: pb::ManagementRequest = decode("ManagementRequest", &signed.request)?;
            let kind = request.kind.ok_or_else(|| invalid("the request has no kind"))?;
            // The world may have changed since submission: check again, as at submission.
            let signer = self.authenticate(&tx, &signed, &kind)?;
            self.check_request(&tx, request_id, &kind, &signer)?;
            let certificate = self.apply(&mut tx, &kind, &signer)?;
            set_state(&mut stored, pb::RequestState::Approved, reason, now);
            stored.status.as_mut().expect("present").certificate = certificate;
        } else {
            set_state(&mut stored, pb::RequestState::Rejected, non_empty_reason(reason)?, now);
        }
        tx.put(store::REQUESTS, request_id, &stored)?;
        self.commit(tx)?;
        Ok(stored.status.unwrap_or_default())
    }

    fn auto_approved(&self, kind: &pb::management_request::Kind) -> bool {
        use pb::management_request::Kind;
        let a = &self.settings.auto_approve;
        match kind {
            Kind::RegisterNode(_) => a.register_node,
            Kind::IssueSigningCert(_) => a.issue_signing_cert,
            Kind::HostSubsystem(_) => a.host_subsystem,
            Kind::PublishService(_) => a.publish_service,
            Kind::GrantAccess(_) => a.grant_access,
            Kind::RevokeAccess(_) => a.revoke_access,
        }
    }

    /// Checks the signature and establishes who made it.
    fn authenticate(
        &self,
        tx: &Tx,
        signed: &pb::SignedManagementRequest,
        kind: &pb::management_request::Kind,
    ) -> Result<Signer, RegistryError> {
        let sig = signed
            .signature
            .as_ref()
            .ok_or_else(|| RegistryError::Unauthorized("the request is not signed".into()))?;
        let message = request_signed_message(&signed.request);
        let bad_signature = || RegistryError::Unauthorized("the request signature does not verify".into());
        if signed.signer_certificate.is_empty() {
            // Only a node's first registration is signed by a key without a certificate: the key
            // in its CSR, which proves possession of it.
            let pb::management_request::Kind::RegisterNode(r) = kind else {
                return Err(RegistryError::Unauthorized("the request carries no signer certificate".into()));
            };
            let csr = Csr::from_der(r.csr.clone()).map_err(|e| invalid(format!("csr: {e}")))?;
            let key = csr.public_key().map_err(|e| invalid(format!("csr: {e}")))?;
            key.verify(&message, &sig.value).map_err(|_| bad_signature())?;
            return Ok(Signer::NewNode);
        }
        let fp = Fingerprint::of(&signed.signer_certificate);
        let record: pb::IssuedCertificate = tx.get(store::CERTS, &fp.to_string())?.ok_or_else(|| {
            RegistryError::Unauthorized("the signer certificate was not issued by this registry".into())
        })?;
        if record.revoked_at_ms != 0 {
            return Err(RegistryError::Unauthorized(format!(
                "the signer certificate was revoked: {}",
                record.revoked_reason
            )));
        }
        let cert = Certificate::from_der(record.der).map_err(RegistryError::internal)?;
        let info = cert.info().map_err(RegistryError::internal)?;
        if !info.is_valid_at(self.now()) {
            return Err(RegistryError::Unauthorized(
                "the signer certificate is expired or not yet valid".into(),
            ));
        }
        info.public_key.verify(&message, &sig.value).map_err(|_| bad_signature())?;
        match info.identity {
            Identity::Node(n) => Ok(Signer::Node(n)),
            Identity::Member(m) => Ok(Signer::Member(m)),
            other => Err(RegistryError::Unauthorized(format!(
                "a {} cannot sign management requests",
                other.role()
            ))),
        }
    }

    /// Checks that the request is well-formed, allowed for its signer and possible now. Returns
    /// the requester's description.
    fn check_request(
        &self,
        tx: &Tx,
        request_id: &str,
        kind: &pb::management_request::Kind,
        signer: &Signer,
    ) -> Result<String, RegistryError> {
        use pb::management_request::Kind;
        let must_be_member = |m: &MemberId| match signer {
            Signer::Member(s) if s == m => Ok(format!("member {m}")),
            _ => Err(RegistryError::Unauthorized(format!("the request must be signed by member {m}"))),
        };
        match kind {
            Kind::RegisterNode(r) => {
                let node: NodeId = required(r.node.clone(), "node")?;
                self.check_instance(&node.owner.instance, "node")?;
                active_member(tx, &node.owner)?;
                let csr = Csr::from_der(r.csr.clone()).map_err(|e| invalid(format!("csr: {e}")))?;
                if csr.identity().map_err(|e| invalid(format!("csr: {e}")))? != Identity::Node(node.clone()) {
                    return Err(invalid(format!("the CSR is not for node {node}")));
                }
                check_addresses(&r.addresses)?;
                if tx.get::<gc::Node>(store::NODES, &node.to_string())?.is_some() {
                    return Err(RegistryError::Duplicate(format!("node {node} is already registered")));
                }
                if let Some(other) = pending_registration(tx, &node, request_id)? {
                    return Err(RegistryError::Duplicate(format!(
                        "node {node} already has a pending registration ({other})"
                    )));
                }
                Ok(format!("node {node}"))
            }
            Kind::IssueSigningCert(r) => {
                let member: MemberId = required(r.member.clone(), "member")?;
                let node: NodeId = required(r.node.clone(), "node")?;
                match signer {
                    Signer::Node(n) if n == &node => {}
                    _ => {
                        return Err(RegistryError::Unauthorized(format!(
                            "the request must be signed by node {node}"
                        )));
                    }
                }
                active_member(tx, &member)?;
                let held: gc::Node = tx
                    .get(store::NODES, &node.to_string())?
                    .ok_or_else(|| not_found(format!("node {node}")))?;
                let hosts_member =
                    held.hosted_subsystems.iter().any(|s| s.member.as_ref() == Some(&(&member).into()));
                if node.owner != member && !hosts_member {
                    return Err(RegistryError::Unauthorized(format!(
                        "node {node} neither belongs to member {member} nor hosts any of its subsystems"
                    )));
                }
                let csr = Csr::from_der(r.csr.clone()).map_err(|e| invalid(format!("csr: {e}")))?;
                if csr.identity().map_err(|e| invalid(format!("csr: {e}")))?
                    != Identity::Member(member.clone())
                {
                    return Err(invalid(format!("the CSR is not for member {member}")));
                }
                Ok(format!("node {node} for member {member}"))
            }
            Kind::HostSubsystem(r) => {
                let sub: SubsystemId = required(r.subsystem.clone(), "subsystem")?;
                let node: NodeId = required(r.node.clone(), "node")?;
                // The member itself, or the node that will host it: a provincial node hosting
                // departments of other members asks with its own key, and the operator decides
                // (confirming the member's consent as X-Road's central server does).
                let who = match signer {
                    Signer::Node(n) if n == &node && node.owner != sub.member => {
                        format!("node {node} to host {sub}")
                    }
                    _ => must_be_member(&sub.member)?,
                };
                let member = active_member(tx, &sub.member)?;
                if !member.subsystems.iter().any(|s| s.code == sub.code.as_str()) {
                    return Err(not_found(format!("subsystem {sub}")));
                }
                let held: gc::Node = tx
                    .get(store::NODES, &node.to_string())?
                    .ok_or_else(|| not_found(format!("node {node}")))?;
                if held.hosted_subsystems.contains(&(&sub).into()) {
                    return Err(RegistryError::Duplicate(format!("node {node} already hosts {sub}")));
                }
                Ok(who)
            }
            Kind::PublishService(r) => {
                let service = r.service.as_ref().ok_or_else(|| invalid("service is missing"))?;
                let id: ServiceId = required(service.id.clone(), "service id")?;
                let who = must_be_member(&id.subsystem.member)?;
                let member = active_member(tx, &id.subsystem.member)?;
                if !member.subsystems.iter().any(|s| s.code == id.subsystem.code.as_str()) {
                    return Err(not_found(format!("subsystem {}", id.subsystem)));
                }
                known_enum::<gc::ServiceType>(service.r#type, "service type")?;
                for e in &service.endpoints {
                    check_endpoint(e)?;
                }
                Ok(who)
            }
            Kind::GrantAccess(g) => {
                let service: ServiceId = required(g.service.clone(), "grant service")?;
                must_be_member(&service.subsystem.member)
            }
            Kind::RevokeAccess(r) => {
                let stored: pb::StoredGrant = tx
                    .get(store::GRANTS, &r.grant_id)?
                    .ok_or_else(|| not_found(format!("grant {:?}", r.grant_id)))?;
                let service: ServiceId = required(stored.grant.and_then(|g| g.service), "grant service")?;
                must_be_member(&service.subsystem.member)
            }
        }
    }

    /// Carries out an approved request. Returns the issued certificate, if any.
    fn apply(
        &self,
        tx: &mut Tx,
        kind: &pb::management_request::Kind,
        signer: &Signer,
    ) -> Result<Vec<u8>, RegistryError> {
        use pb::management_request::Kind;
        let now = self.now();
        match kind {
            Kind::RegisterNode(r) => {
                let node: NodeId = required(r.node.clone(), "node")?;
                let csr = Csr::from_der(r.csr.clone()).map_err(|e| invalid(format!("csr: {e}")))?;
                let cert = self
                    .ca
                    .issue_node(&csr, &node, self.settings.cert_validity, now)
                    .map_err(|e| invalid(format!("cannot issue: {e}")))?;
                tx.put(store::CERTS, &cert.fingerprint().to_string(), &issued(&cert, now))?;
                let record = gc::Node {
                    id: Some((&node).into()),
                    addresses: r.addresses.clone(),
                    auth_cert_sha256: cert.fingerprint().0.to_vec(),
                    hosted_subsystems: Vec::new(),
                    maintenance: false,
                };
                tx.put(store::NODES, &node.to_string(), &record)?;
                Ok(cert.der().to_vec())
            }
            Kind::IssueSigningCert(r) => {
                let member: MemberId = required(r.member.clone(), "member")?;
                let csr = Csr::from_der(r.csr.clone()).map_err(|e| invalid(format!("csr: {e}")))?;
                let cert = self
                    .ca
                    .issue_member(&csr, &member, self.settings.cert_validity, now)
                    .map_err(|e| invalid(format!("cannot issue: {e}")))?;
                tx.put(store::CERTS, &cert.fingerprint().to_string(), &issued(&cert, now))?;
                let mut record = active_member(tx, &member)?;
                record.signing_cert_sha256.push(cert.fingerprint().0.to_vec());
                tx.put(store::MEMBERS, &member.to_string(), &record)?;
                Ok(cert.der().to_vec())
            }
            Kind::HostSubsystem(r) => {
                let node: NodeId = required(r.node.clone(), "node")?;
                let mut held: gc::Node = tx
                    .get(store::NODES, &node.to_string())?
                    .ok_or_else(|| not_found(format!("node {node}")))?;
                held.hosted_subsystems.push(r.subsystem.clone().unwrap_or_default());
                tx.put(store::NODES, &node.to_string(), &held)?;
                Ok(Vec::new())
            }
            Kind::PublishService(r) => {
                let service = r.service.clone().unwrap_or_default();
                let id: ServiceId = required(service.id.clone(), "service id")?;
                tx.put(store::SERVICES, &id.to_string(), &service)?;
                if !r.description_document.is_empty() {
                    tx.put_bytes(store::DESCRIPTIONS, &id.to_string(), &r.description_document)?;
                }
                Ok(Vec::new())
            }
            Kind::GrantAccess(g) => {
                let owner = match signer {
                    Signer::Member(m) => Some(m),
                    _ => None,
                };
                self.insert_grant(tx, g.clone(), owner)?;
                Ok(Vec::new())
            }
            Kind::RevokeAccess(r) => {
                let owner = match signer {
                    Signer::Member(m) => Some(m),
                    _ => None,
                };
                revoke_grant_in(tx, &r.grant_id, owner, non_empty_reason(&r.reason)?, now)?;
                Ok(Vec::new())
            }
        }
    }

    fn check_instance(&self, instance: &InstanceId, what: &str) -> Result<(), RegistryError> {
        if instance != &self.settings.instance {
            return Err(invalid(format!(
                "{what} belongs to instance {instance}; this registry serves {}",
                self.settings.instance
            )));
        }
        Ok(())
    }

    /// Records a certificate this registry issued outside the request flow (its own TLS
    /// certificate, an administrator's), so it can be checked and revoked like any other.
    pub fn record_certificate(&self, cert: &Certificate) -> Result<(), RegistryError> {
        let mut tx = self.store.write()?;
        tx.put(store::CERTS, &cert.fingerprint().to_string(), &issued(cert, self.now()))?;
        tx.commit()?;
        Ok(())
    }

    /// Whether `fp` is a certificate this registry issued and has not revoked.
    pub fn is_certificate_valid(&self, fp: &Fingerprint) -> Result<bool, RegistryError> {
        let record: Option<pb::IssuedCertificate> = self.store.read()?.get(store::CERTS, &fp.to_string())?;
        Ok(record.is_some_and(|r| r.revoked_at_ms == 0))
    }
}

fn issued(cert: &Certificate, now: SystemTime) -> pb::IssuedCertificate {
    pb::IssuedCertificate {
        der: cert.der().to_vec(),
        identity: cert.identity().map(|i| i.to_string()).unwrap_or_default(),
        issued_at_ms: to_millis(now),
        revoked_at_ms: 0,
        revoked_reason: String::new(),
    }
}

fn active_member(tx: &Tx, id: &MemberId) -> Result<gc::Member, RegistryError> {
    let member: gc::Member =
        tx.get(store::MEMBERS, &id.to_string())?.ok_or_else(|| not_found(format!("member {id}")))?;
    if member.status != gc::MemberStatus::Active as i32 {
        return Err(RegistryError::Conflict(format!("member {id} is closed")));
    }
    Ok(member)
}

fn client_member(c: &lienthong_proto::types::v1::ClientId) -> Option<lienthong_proto::types::v1::MemberId> {
    use lienthong_proto::types::v1::client_id::Kind;
    match c.kind.as_ref()? {
        Kind::Member(m) => Some(m.clone()),
        Kind::Subsystem(s) => s.member.clone(),
    }
}

/// Whether a request is about `member`: its nodes, certificates, subsystems, services or grants.
fn request_concerns(request: &pb::ManagementRequest, member: &MemberId) -> bool {
    use pb::management_request::Kind;
    let m: lienthong_proto::types::v1::MemberId = member.into();
    let of_service = |s: &Option<lienthong_proto::types::v1::ServiceId>| {
        s.as_ref().and_then(|s| s.subsystem.as_ref()).and_then(|s| s.member.as_ref()) == Some(&m)
    };
    match &request.kind {
        Some(Kind::RegisterNode(r)) => r.node.as_ref().and_then(|n| n.owner.as_ref()) == Some(&m),
        Some(Kind::IssueSigningCert(r)) => r.member.as_ref() == Some(&m),
        Some(Kind::HostSubsystem(r)) => r.subsystem.as_ref().and_then(|s| s.member.as_ref()) == Some(&m),
        Some(Kind::PublishService(r)) => of_service(&r.service.as_ref().and_then(|s| s.id.clone())),
        Some(Kind::GrantAccess(g)) => of_service(&g.service),
        Some(Kind::RevokeAccess(_)) | None => false,
    }
}

fn revoke_cert(tx: &mut Tx, fp: &str, now: SystemTime, reason: &str) -> Result<(), RegistryError> {
    if let Some(mut c) = tx.get::<pb::IssuedCertificate>(store::CERTS, fp)?
        && c.revoked_at_ms == 0
    {
        c.revoked_at_ms = to_millis(now);
        c.revoked_reason = reason.into();
        tx.put(store::CERTS, fp, &c)?;
    }
    Ok(())
}

fn remove_node_in(
    tx: &mut Tx,
    key: &str,
    node: gc::Node,
    now: SystemTime,
    reason: &str,
) -> Result<(), RegistryError> {
    revoke_cert(tx, &hex::encode(&node.auth_cert_sha256), now, reason)?;
    tx.remove(store::NODES, key)?;
    for (rk, mut r) in tx.all::<pb::StoredRequest>(store::REQUESTS)? {
        let approved = r.status.as_ref().is_some_and(|s| s.state == pb::RequestState::Approved as i32);
        if approved && r.requester == format!("node {key}") {
            set_state(&mut r, pb::RequestState::Revoked, reason, now);
            tx.put(store::REQUESTS, &rk, &r)?;
        }
    }
    Ok(())
}

fn revoke_grant_in(
    tx: &mut Tx,
    grant_id: &str,
    owner: Option<&MemberId>,
    reason: &str,
    now: SystemTime,
) -> Result<gc::AccessGrant, RegistryError> {
    let mut stored: pb::StoredGrant =
        tx.get(store::GRANTS, grant_id)?.ok_or_else(|| not_found(format!("grant {grant_id:?}")))?;
    let grant = stored.grant.clone().unwrap_or_default();
    if let Some(o) = owner {
        let service: ServiceId = required(grant.service.clone(), "grant service")?;
        if &service.subsystem.member != o {
            return Err(RegistryError::Unauthorized(format!(
                "only the owner of {service} may revoke its grants"
            )));
        }
    }
    if stored.revoked_at_ms != 0 {
        return Err(RegistryError::Conflict(format!("grant {grant_id:?} is already revoked")));
    }
    stored.revoked_at_ms = to_millis(now);
    stored.revoked_reason = reason.into();
    tx.put(store::GRANTS, grant_id, &stored)?;
    Ok(grant)
}

/// Another pending registration of `node` than `request_id`, if any.
fn pending_registration(tx: &Tx, node: &NodeId, request_id: &str) -> Result<Option<String>, RegistryError> {
    let target: lienthong_proto::types::v1::NodeId = node.into();
    for (id, r) in tx.all::<pb::StoredRequest>(store::REQUESTS)? {
        if id == request_id || r.status.as_ref().is_none_or(|s| s.state != pb::RequestState::Pending as i32) {
            continue;
        }
        let Some(signed) = r.signed else { continue };
        if let Ok(pb::ManagementRequest {
            kind: Some(pb::management_request::Kind::RegisterNode(reg)), ..
        }) = pb::ManagementRequest::decode(signed.request.as_slice())
            && reg.node.as_ref() == Some(&target)
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn set_state(r: &mut pb::StoredRequest, state: pb::RequestState, reason: &str, now: SystemTime) {
    let status = r.status.get_or_insert_with(Default::default);
    status.state = state as i32;
    status.reason = reason.into();
    status.updated_at_ms = to_millis(now);
}

fn non_empty_reason(reason: &str) -> Result<&str, RegistryError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(invalid("a reason is required"));
    }
    Ok(reason)
}

fn check_request_id(id: &str) -> Result<(), RegistryError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !ok {
        return Err(invalid("request_id must be 1-128 characters of A-Z a-z 0-9 - _ . :"));
    }
    Ok(())
}

fn check_addresses(addresses: &[gc::NodeAddress]) -> Result<(), RegistryError> {
    if addresses.is_empty() {
        return Err(invalid("a node needs at least one address"));
    }
    for a in addresses {
        let ok = a.url.starts_with("https://")
            && a.url.len() > "https://".len()
            && !a.url.contains(char::is_whitespace);
        if !ok {
            return Err(invalid(format!("node address {:?} must be an https:// URL", a.url)));
        }
    }
    Ok(())
}

fn check_endpoint(e: &gc::Endpoint) -> Result<(), RegistryError> {
    let method_ok =
        e.method == "*" || (!e.method.is_empty() && e.method.chars().all(|c| c.is_ascii_uppercase()));
    let path_ok = e.path == "*" || (e.path.starts_with('/') && !e.path.contains(['?', '#', ' ']));
    if !method_ok || !path_ok {
        return Err(invalid(format!(
            "endpoint {} {:?}: method must be * or an upper-case HTTP method, path * or /...",
            e.method, e.path
        )));
    }
    Ok(())
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
