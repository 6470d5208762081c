//! The registry's state machine: membership, catalogue, grants, onboarding requests and the
//! published configuration. Every operation is one redb transaction; on success the signed
//! configuration is regenerated, so a change is visible at the next poll.
//!
//! One file per aggregate, each adding its operations to [`Registry`]: `members` (members,
//! classes, subsystems, global groups, federation partners), `nodes` (nodes, their services,
//! issued certificates), `grants`, `requests` (signed management requests: authenticated,
//! checked, decided, applied) and `publication` (the signed configuration, the anchor, the
//! signing keys). This file holds the state, opening, and the helpers they share. Imports run
//! one way: `requests` uses the others, `members` and `grants` use `nodes`, and none of
//! them is used by this file.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lienthong_globalconf::{ConfKey, to_millis};
use lienthong_pki::{Certificate, CertificateAuthority, Fingerprint, PrivateKey, Validity};
use lienthong_proto::registry::v1 as pb;
use lienthong_types::{InstanceId, MemberId};
use tokio::sync::watch;

use crate::error::RegistryError;
use crate::store::{self, Store, Tx};

mod grants;
mod members;
mod nodes;
mod publication;
mod requests;

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

    /// Commits `tx` and republishes if it changed anything.
    fn commit(&self, tx: Tx) -> Result<(), RegistryError> {
        let before = self.current().version;
        let version = tx.commit()?;
        if version != before && !self.conf_keys.lock().expect("conf keys lock").is_empty() {
            self.publish()?;
        }
        Ok(())
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
}

fn non_empty_reason(reason: &str) -> Result<&str, RegistryError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(invalid("a reason is required"));
    }
    Ok(reason)
}

/// The record of a certificate this registry issued, as of `now`.
fn issued(cert: &Certificate, now: SystemTime) -> pb::IssuedCertificate {
    pb::IssuedCertificate {
        der: cert.der().to_vec(),
        identity: cert.identity().map(|i| i.to_string()).unwrap_or_default(),
        issued_at_ms: to_millis(now),
        revoked_at_ms: 0,
        revoked_reason: String::new(),
    }
}

/// Moves a request to `state`, saying why and when.
fn set_state(r: &mut pb::StoredRequest, state: pb::RequestState, reason: &str, now: SystemTime) {
    let status = r.status.get_or_insert_with(Default::default);
    status.state = state as i32;
    status.reason = reason.into();
    status.updated_at_ms = to_millis(now);
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
