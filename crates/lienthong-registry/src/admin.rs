//! The administrator's session: what `lienthong registry member add` and friends call, over the
//! admin gRPC API. Tests use it too, so they exercise the CLI's code path.

use lienthong_globalconf::Anchor;
use lienthong_pki::Certificate;
use lienthong_pki::tls::TlsIdentity;
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_proto::registry::v1::admin_service_client::AdminServiceClient;
use lienthong_types::{ClientId, GlobalGroupId, InstanceId, MemberId, NodeId, ServiceId, SubsystemId};
use tonic::transport::Channel;

use crate::client::{ClientError, admin_client};

/// A failed admin call: the registry's stable code and message, or a connection problem.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Connect(#[from] ClientError),
    #[error("{0}")]
    Refused(String),
}

impl AdminError {
    /// The stable code the registry answered with (`duplicate`, `not_found`, ...), if it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            AdminError::Refused(m) => m.split(':').next(),
            AdminError::Connect(_) => None,
        }
    }
}

impl From<tonic::Status> for AdminError {
    fn from(s: tonic::Status) -> Self {
        AdminError::Refused(s.message().to_owned())
    }
}

/// Who a new grant is for.
#[derive(Debug, Clone)]
pub enum GrantTo {
    Client(ClientId),
    Group(GlobalGroupId),
}

/// A grant as the administrator enters it.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub service: ServiceId,
    pub to: GrantTo,
    /// `(method, path pattern)`; empty: the whole service.
    pub endpoints: Vec<(String, String)>,
    pub legal_basis: String,
    pub valid_from_ms: i64,
    /// 0: no end.
    pub valid_until_ms: i64,
}

#[derive(Debug, Clone)]
pub struct AdminSession {
    client: AdminServiceClient<Channel>,
}

impl AdminSession {
    pub async fn connect(
        url: &str,
        admin: &TlsIdentity,
        approved_cas: &[Certificate],
        instance: &InstanceId,
    ) -> Result<Self, AdminError> {
        Ok(Self { client: admin_client(url, admin, approved_cas, instance).await? })
    }

    pub async fn add_member(
        &mut self,
        id: &MemberId,
        name: &str,
        parent: Option<&MemberId>,
    ) -> Result<gc::Member, AdminError> {
        let req =
            pb::AddMemberRequest { id: Some(id.into()), name: name.into(), parent: parent.map(Into::into) };
        Ok(self.client.add_member(req).await?.into_inner())
    }

    pub async fn close_member(
        &mut self,
        id: &MemberId,
        superseded_by: Option<&MemberId>,
        reason: &str,
    ) -> Result<gc::Member, AdminError> {
        let req = pb::CloseMemberRequest {
            id: Some(id.into()),
            superseded_by: superseded_by.map(Into::into),
            reason: reason.into(),
        };
        Ok(self.client.close_member(req).await?.into_inner())
    }

    pub async fn list_members(&mut self) -> Result<Vec<gc::Member>, AdminError> {
        Ok(self.client.list_members(pb::ListMembersRequest::default()).await?.into_inner().members)
    }

    pub async fn add_subsystem(&mut self, id: &SubsystemId, name: &str) -> Result<gc::Member, AdminError> {
        let req = pb::AddSubsystemRequest { id: Some(id.into()), name: name.into() };
        Ok(self.client.add_subsystem(req).await?.into_inner())
    }

    pub async fn list_nodes(&mut self) -> Result<Vec<gc::Node>, AdminError> {
        Ok(self.client.list_nodes(pb::ListNodesRequest {}).await?.into_inner().nodes)
    }

    pub async fn remove_node(&mut self, id: &NodeId, reason: &str) -> Result<gc::Node, AdminError> {
        let req = pb::RemoveNodeRequest { id: Some(id.into()), reason: reason.into() };
        Ok(self.client.remove_node(req).await?.into_inner())
    }

    pub async fn list_services(
        &mut self,
        provider: Option<&SubsystemId>,
    ) -> Result<Vec<gc::Service>, AdminError> {
        let req = pb::ListServicesRequest { provider: provider.map(Into::into) };
        Ok(self.client.list_services(req).await?.into_inner().services)
    }

    pub async fn list_requests(
        &mut self,
        state: Option<pb::RequestState>,
    ) -> Result<Vec<pb::RequestSummary>, AdminError> {
        let req = pb::ListRequestsRequest { state: state.map_or(0, |s| s as i32) };
        Ok(self.client.list_requests(req).await?.into_inner().requests)
    }

    pub async fn decide(
        &mut self,
        request_id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<pb::RequestStatus, AdminError> {
        let req = pb::DecideRequest { request_id: request_id.into(), approve, reason: reason.into() };
        Ok(self.client.decide(req).await?.into_inner())
    }

    /// Records an agreement on behalf of the service's owner.
    pub async fn add_grant(&mut self, g: &NewGrant) -> Result<gc::AccessGrant, AdminError> {
        let subject = match &g.to {
            GrantTo::Client(c) => gc::access_grant::Subject::Client(c.into()),
            GrantTo::Group(gr) => gc::access_grant::Subject::Group(gr.into()),
        };
        let grant = gc::AccessGrant {
            grant_id: String::new(),
            service: Some((&g.service).into()),
            endpoints: g
                .endpoints
                .iter()
                .map(|(m, p)| gc::Endpoint { method: m.clone(), path: p.clone() })
                .collect(),
            subject: Some(subject),
            legal_basis: g.legal_basis.clone(),
            valid_from_ms: g.valid_from_ms,
            valid_until_ms: g.valid_until_ms,
            granted_by: Some((&g.service.subsystem.member).into()),
            granted_at_ms: 0,
        };
        Ok(self.client.add_grant(grant).await?.into_inner())
    }

    pub async fn revoke_grant(
        &mut self,
        grant_id: &str,
        reason: &str,
    ) -> Result<gc::AccessGrant, AdminError> {
        let req = pb::RevokeGrantRequest { grant_id: grant_id.into(), reason: reason.into() };
        Ok(self.client.revoke_grant(req).await?.into_inner())
    }

    pub async fn list_grants(
        &mut self,
        service: Option<&ServiceId>,
    ) -> Result<Vec<pb::StoredGrant>, AdminError> {
        let req = pb::ListGrantsRequest { service: service.map(Into::into) };
        Ok(self.client.list_grants(req).await?.into_inner().grants)
    }

    pub async fn set_maintenance(&mut self, id: &NodeId, maintenance: bool) -> Result<gc::Node, AdminError> {
        let req = pb::SetMaintenanceRequest { id: Some(id.into()), maintenance };
        Ok(self.client.set_maintenance(req).await?.into_inner())
    }

    /// Creates or replaces a global group.
    pub async fn put_global_group(
        &mut self,
        id: &GlobalGroupId,
        description: &str,
        members: &[ClientId],
    ) -> Result<gc::GlobalGroup, AdminError> {
        let group = gc::GlobalGroup {
            id: Some(id.into()),
            description: description.into(),
            members: members.iter().map(Into::into).collect(),
        };
        Ok(self.client.put_global_group(group).await?.into_inner())
    }

    pub async fn list_global_groups(&mut self) -> Result<Vec<gc::GlobalGroup>, AdminError> {
        Ok(self.client.list_global_groups(pb::ListGlobalGroupsRequest {}).await?.into_inner().groups)
    }

    /// Trusts another instance's configuration, given its anchor.
    pub async fn add_federation_partner(
        &mut self,
        anchor: &Anchor,
    ) -> Result<gc::FederationPartner, AdminError> {
        Ok(self.client.add_federation_partner(gc::Anchor::from(anchor)).await?.into_inner())
    }

    pub async fn list_federation_partners(&mut self) -> Result<Vec<gc::FederationPartner>, AdminError> {
        Ok(self
            .client
            .list_federation_partners(pb::ListFederationPartnersRequest {})
            .await?
            .into_inner()
            .partners)
    }
}
