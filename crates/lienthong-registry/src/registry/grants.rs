//! Access grants: added and revoked by the operator, or by a member through a request.

use std::time::SystemTime;

use lienthong_globalconf::to_millis;
use lienthong_proto::convert::{IntoDomain, required};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_types::{ClientId, MemberId, ServiceId};

use super::nodes::check_endpoint;
use super::{Registry, invalid, non_empty_reason, not_found};
use crate::error::RegistryError;
use crate::store::{self, Tx};

impl Registry {
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
    pub(super) fn insert_grant(
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
}

pub(super) fn revoke_grant_in(
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
