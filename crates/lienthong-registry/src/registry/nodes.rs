//! Nodes, the services they provide, and the certificates this registry issued.

use std::time::SystemTime;

use lienthong_globalconf::to_millis;
use lienthong_pki::{Certificate, Fingerprint};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_types::{NodeId, ServiceId, SubsystemId};

use super::{Registry, invalid, issued, non_empty_reason, not_found, set_state};
use crate::error::RegistryError;
use crate::store::{self, Tx};

impl Registry {
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

pub(super) fn revoke_cert(tx: &mut Tx, fp: &str, now: SystemTime, reason: &str) -> Result<(), RegistryError> {
    if let Some(mut c) = tx.get::<pb::IssuedCertificate>(store::CERTS, fp)?
        && c.revoked_at_ms == 0
    {
        c.revoked_at_ms = to_millis(now);
        c.revoked_reason = reason.into();
        tx.put(store::CERTS, fp, &c)?;
    }
    Ok(())
}

pub(super) fn remove_node_in(
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

pub(super) fn check_addresses(addresses: &[gc::NodeAddress]) -> Result<(), RegistryError> {
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

pub(super) fn check_endpoint(e: &gc::Endpoint) -> Result<(), RegistryError> {
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
