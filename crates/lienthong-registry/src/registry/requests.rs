//! Management requests: submitted signed, authenticated, checked, decided (by an operator or
//! the auto-approval policy) and applied.

use lienthong_globalconf::{request_signed_message, to_millis};
use lienthong_pki::{Certificate, Csr, Fingerprint, Identity};
use lienthong_proto::convert::{decode, known_enum, required};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_types::{MemberId, NodeId, ServiceId, SubsystemId};
use prost::Message;

use super::grants::revoke_grant_in;
use super::members::active_member;
use super::nodes::{check_addresses, check_endpoint};
use super::{Registry, invalid, issued, non_empty_reason, not_found, set_state};
use crate::error::RegistryError;
use crate::store::{self, Tx};

/// Who signed a management request, established from the signature.
#[derive(Debug)]
enum Signer {
    /// A first node registration: the key in the request's CSR signed it.
    NewNode,
    Node(NodeId),
    Member(MemberId),
}

impl Registry {
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

fn check_request_id(id: &str) -> Result<(), RegistryError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !ok {
        return Err(invalid("request_id must be 1-128 characters of A-Z a-z 0-9 - _ . :"));
    }
    Ok(())
}
