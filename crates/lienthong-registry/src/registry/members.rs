//! Members, their classes and subsystems, global groups and federation partners.

use lienthong_globalconf::to_millis;
use lienthong_proto::convert::{IntoDomain, required};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_types::{ClientId, MemberClass, MemberId, NodeId, SubsystemId};
use prost::Message;

use super::nodes::{remove_node_in, revoke_cert};
use super::{Registry, invalid, non_empty_reason, not_found, request_concerns, set_state};
use crate::error::RegistryError;
use crate::store::{self, Tx};

impl Registry {
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
    pub(super) fn check_client_exists(&self, tx: &Tx, client: &ClientId) -> Result<(), RegistryError> {
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
}

pub(super) fn active_member(tx: &Tx, id: &MemberId) -> Result<gc::Member, RegistryError> {
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
