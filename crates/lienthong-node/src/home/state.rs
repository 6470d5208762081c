//! The registration state file: what `init` has requested and received so far, so a run can resume.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RequestState {
    Pending,
    Approved,
    Rejected,
    Revoked,
}

/// A request as sent; `signed` is the base64 `SignedManagementRequest`, resent as is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Request {
    pub(super) id: String,
    pub(super) state: RequestState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    pub(super) signed: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeState {
    pub(super) node: NodeId,
    pub(super) addresses: Vec<String>,
    pub(super) subsystems: BTreeSet<SubsystemId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) registration: Option<Request>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) signing_certs: BTreeMap<MemberId, Request>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) hosting: BTreeMap<SubsystemId, Request>,
}

impl NodeState {
    /// The members whose signing keys the node holds: the owner's first (the registry lets a
    /// node ask for its owner's certificate before it hosts anything), then by id.
    pub(super) fn members(&self) -> Vec<MemberId> {
        let mut members: Vec<MemberId> = self.subsystems.iter().map(|s| s.member.clone()).collect();
        members.sort_by_key(|m| (m != &self.node.owner, m.clone()));
        members.dedup();
        members
    }

    /// Every request `init` makes, in order. The registry issues a member's signing
    /// certificate only to a node that belongs to the member or hosts one of its subsystems, so
    /// the node asks to host other members' subsystems first (signed with its own key, decided
    /// by the registry operator), then for their certificates.
    pub(super) fn targets(&self) -> Vec<Target> {
        let owner = &self.node.owner;
        let (own, foreign): (Vec<&SubsystemId>, Vec<&SubsystemId>) =
            self.subsystems.iter().partition(|s| &s.member == owner);
        let mut out = vec![Target::RegisterNode(self.node.clone())];
        let (owner_first, others): (Vec<MemberId>, Vec<MemberId>) =
            self.members().into_iter().partition(|m| m == owner);
        out.extend(owner_first.into_iter().map(Target::SigningCert));
        out.extend(foreign.into_iter().cloned().map(Target::HostSubsystem));
        out.extend(others.into_iter().map(Target::SigningCert));
        out.extend(own.into_iter().cloned().map(Target::HostSubsystem));
        out
    }

    pub(super) fn slot(&self, t: &Target) -> Option<&Request> {
        match t {
            Target::RegisterNode(_) => self.registration.as_ref(),
            Target::SigningCert(m) => self.signing_certs.get(m),
            Target::HostSubsystem(s) => self.hosting.get(s),
        }
    }

    pub(super) fn slot_mut(&mut self, t: &Target) -> Option<&mut Request> {
        match t {
            Target::RegisterNode(_) => self.registration.as_mut(),
            Target::SigningCert(m) => self.signing_certs.get_mut(m),
            Target::HostSubsystem(s) => self.hosting.get_mut(s),
        }
    }

    pub(super) fn set_slot(&mut self, t: &Target, r: Option<Request>) {
        match (t, r) {
            (Target::RegisterNode(_), r) => self.registration = r,
            (Target::SigningCert(m), Some(r)) => drop(self.signing_certs.insert(m.clone(), r)),
            (Target::SigningCert(m), None) => drop(self.signing_certs.remove(m)),
            (Target::HostSubsystem(s), Some(r)) => drop(self.hosting.insert(s.clone(), r)),
            (Target::HostSubsystem(s), None) => drop(self.hosting.remove(s)),
        }
    }

    pub(super) fn is_approved(&self, t: &Target) -> bool {
        self.slot(t).is_some_and(|r| r.state == RequestState::Approved)
    }

    pub(super) fn report(&self) -> Vec<StepReport> {
        self.targets()
            .into_iter()
            .map(|target| {
                let (request_id, state) = match self.slot(&target) {
                    Some(r) if r.state == RequestState::Approved => (Some(r.id.clone()), StepState::Approved),
                    Some(r) if r.state == RequestState::Pending => (Some(r.id.clone()), StepState::Pending),
                    _ => (None, StepState::NotSent),
                };
                StepReport { target, request_id, state }
            })
            .collect()
    }

    /// What the set-up still waits for, for messages.
    pub(super) fn waiting(&self) -> Option<String> {
        let open: Vec<String> = self
            .report()
            .into_iter()
            .filter(|s| s.state != StepState::Approved)
            .map(|s| match s.request_id {
                Some(id) => format!("{} ({} {id})", s.target, s.state),
                None => format!("{} ({})", s.target, s.state),
            })
            .collect();
        (!open.is_empty()).then(|| open.join(", "))
    }
}
