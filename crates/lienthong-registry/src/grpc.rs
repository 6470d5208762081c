//! The gRPC side: the two services on the runtime kit's `serve` (TLS, the connection cap, the
//! drain), with the peer's certificate identity attached to every request. Administrators are
//! authenticated by their client certificate; management requests by their signature (a first
//! node registration has no certificate yet).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Incoming;
use lienthong_pki::tls::{TlsIdentity, peer_certificate_identity, registry_server_config};
use lienthong_pki::{Fingerprint, Identity};
use lienthong_proto::convert::{known_enum, optional, required};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_proto::registry::v1::admin_service_server::{AdminService, AdminServiceServer};
use lienthong_proto::registry::v1::management_service_server::{ManagementService, ManagementServiceServer};
use lienthong_runtime::{Conn, Protocols, ServeOptions, Tls};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tower::ServiceExt as _;

use crate::error::RegistryError;
use crate::registry::Registry;

/// Who is on the other end of a connection, from its client certificate (if it sent one).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    identity: Option<(Identity, Fingerprint)>,
}

/// The services for one connection, with its peer attached to every request.
#[derive(Clone)]
struct Connection {
    routes: Routes,
    peer: Peer,
}

impl hyper::service::Service<http::Request<Incoming>> for Connection {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        Box::pin(self.routes.clone().oneshot(req))
    }
}

/// Builds the gRPC server future; it ends when `stopped` turns true and open calls finished
/// (within the options' grace).
pub(crate) fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    tls: &TlsIdentity,
    stopped: watch::Receiver<bool>,
    max_connections: usize,
) -> Result<impl Future<Output = ()> + Send + 'static, RegistryError> {
    let mut config = registry_server_config(tls, std::slice::from_ref(registry.ca_certificate()))
        .map_err(RegistryError::internal)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let instance = registry.settings().instance.clone();
    let admin = AdminApi { registry: registry.clone(), instance };
    let management = ManagementApi { registry };
    let routes =
        Routes::new(ManagementServiceServer::new(management)).add_service(AdminServiceServer::new(admin));
    let per_connection = move |conn: &Conn| {
        Some(Connection {
            routes: routes.clone(),
            peer: Peer { identity: peer_certificate_identity(&conn.peer_certificates) },
        })
    };
    let options = ServeOptions {
        name: "registry-grpc",
        max_connections,
        protocols: Protocols::Http2,
        ..Default::default()
    };
    let mut stopped = stopped;
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    Ok(lienthong_runtime::serve(
        listener,
        Some(Tls::fixed(Arc::new(config))),
        per_connection,
        shutdown,
        options,
    ))
}

/// Runs a blocking registry operation (redb commits fsync) off the async workers.
async fn blocking<T: Send + 'static>(
    registry: &Arc<Registry>,
    f: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
) -> Result<Response<T>, Status> {
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || f(&registry))
        .await
        .map_err(|e| Status::internal(format!("internal: {e}")))?
        .map(Response::new)
        .map_err(Status::from)
}

struct ManagementApi {
    registry: Arc<Registry>,
}

#[tonic::async_trait]
impl ManagementService for ManagementApi {
    async fn submit(
        &self,
        request: Request<pb::SignedManagementRequest>,
    ) -> Result<Response<pb::RequestStatus>, Status> {
        let signed = request.into_inner();
        blocking(&self.registry, move |r| r.submit(signed)).await
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::RequestStatus>, Status> {
        let id = request.into_inner().request_id;
        blocking(&self.registry, move |r| r.request_status(&id)).await
    }

    async fn get_global_conf(
        &self,
        request: Request<pb::GetGlobalConfRequest>,
    ) -> Result<Response<pb::GetGlobalConfResponse>, Status> {
        let known = request.into_inner().known_version;
        let published = self.registry.current();
        if published.bytes.is_empty() {
            return Err(Status::unavailable("not_ready: no configuration-signing key yet"));
        }
        if known != 0 && known == published.version {
            return Ok(Response::new(pb::GetGlobalConfResponse { not_modified: true, conf: None }));
        }
        let conf = lienthong_proto::convert::decode("SignedGlobalConf", &published.bytes)
            .map_err(RegistryError::from)?;
        Ok(Response::new(pb::GetGlobalConfResponse { not_modified: false, conf: Some(conf) }))
    }

    async fn witness_checkpoint(
        &self,
        request: Request<pb::WitnessRequest>,
    ) -> Result<Response<pb::WitnessResponse>, Status> {
        let request = request.into_inner();
        blocking(&self.registry, move |r| {
            r.witness(request).map(|checkpoint| pb::WitnessResponse { checkpoint: Some(checkpoint) })
        })
        .await
    }

    /// Public, like the checkpoints themselves: they are signed evidence, not secrets.
    async fn get_witnessed(
        &self,
        request: Request<pb::GetWitnessedRequest>,
    ) -> Result<Response<pb::WitnessResponse>, Status> {
        let node: lienthong_types::NodeId =
            lienthong_proto::convert::required(request.into_inner().node, "node")
                .map_err(RegistryError::from)?;
        blocking(&self.registry, move |r| {
            r.witnessed(&node).map(|checkpoint| pb::WitnessResponse { checkpoint })
        })
        .await
    }
}

struct AdminApi {
    registry: Arc<Registry>,
    instance: lienthong_types::InstanceId,
}

impl AdminApi {
    /// Only an administrator certificate of this instance, issued here and not revoked.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let denied = |why: &str| Status::permission_denied(format!("unauthorized: {why}"));
        let peer = request.extensions().get::<Peer>().and_then(|p| p.identity.clone());
        let Some((identity, fingerprint)) = peer else {
            return Err(denied("the admin API needs an administrator client certificate"));
        };
        if identity != Identity::Admin(self.instance.clone()) {
            return Err(denied(&format!("{identity} is not an administrator")));
        }
        if !self.registry.is_certificate_valid(&fingerprint).map_err(Status::from)? {
            return Err(denied("the administrator certificate is revoked or unknown"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<gc::Member>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let id = required(r.id, "id").map_err(RegistryError::from)?;
        let parent = optional(r.parent, "parent").map_err(RegistryError::from)?;
        blocking(&self.registry, move |reg| reg.add_member(&id, &r.name, parent.as_ref())).await
    }

    async fn close_member(
        &self,
        request: Request<pb::CloseMemberRequest>,
    ) -> Result<Response<gc::Member>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let id = required(r.id, "id").map_err(RegistryError::from)?;
        let by = optional(r.superseded_by, "superseded_by").map_err(RegistryError::from)?;
        blocking(&self.registry, move |reg| reg.close_member(&id, by.as_ref(), &r.reason)).await
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<gc::Node>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let id = required(r.id, "id").map_err(RegistryError::from)?;
        blocking(&self.registry, move |reg| reg.remove_node(&id, &r.reason)).await
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        self.authorize(&request)?;
        blocking(&self.registry, |reg| reg.list_members().map(|members| pb::ListMembersResponse { members }))
            .await
    }

    async fn add_subsystem(
        &self,
        request: Request<pb::AddSubsystemRequest>,
    ) -> Result<Response<gc::Member>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let id = required(r.id, "id").map_err(RegistryError::from)?;
        blocking(&self.registry, move |reg| reg.add_subsystem(&id, &r.name)).await
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.authorize(&request)?;
        blocking(&self.registry, |reg| reg.list_nodes().map(|nodes| pb::ListNodesResponse { nodes })).await
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        self.authorize(&request)?;
        let provider = optional(request.into_inner().provider, "provider").map_err(RegistryError::from)?;
        blocking(&self.registry, move |reg| {
            reg.list_services(provider.as_ref()).map(|services| pb::ListServicesResponse { services })
        })
        .await
    }

    async fn list_requests(
        &self,
        request: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        self.authorize(&request)?;
        let state = request.into_inner().state;
        let state = if state == 0 {
            None
        } else {
            Some(known_enum::<pb::RequestState>(state, "state").map_err(RegistryError::from)?)
        };
        blocking(&self.registry, move |reg| {
            reg.list_requests(state).map(|requests| pb::ListRequestsResponse { requests })
        })
        .await
    }

    async fn decide(
        &self,
        request: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::RequestStatus>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        blocking(&self.registry, move |reg| reg.decide(&r.request_id, r.approve, &r.reason)).await
    }

    async fn add_grant(
        &self,
        request: Request<gc::AccessGrant>,
    ) -> Result<Response<gc::AccessGrant>, Status> {
        self.authorize(&request)?;
        let grant = request.into_inner();
        blocking(&self.registry, move |reg| reg.add_grant(grant)).await
    }

    async fn revoke_grant(
        &self,
        request: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<gc::AccessGrant>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        blocking(&self.registry, move |reg| reg.revoke_grant(&r.grant_id, &r.reason)).await
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        self.authorize(&request)?;
        let service = optional(request.into_inner().service, "service").map_err(RegistryError::from)?;
        blocking(&self.registry, move |reg| {
            reg.list_grants(service.as_ref()).map(|grants| pb::ListGrantsResponse { grants })
        })
        .await
    }

    async fn set_maintenance(
        &self,
        request: Request<pb::SetMaintenanceRequest>,
    ) -> Result<Response<gc::Node>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let id = required(r.id, "id").map_err(RegistryError::from)?;
        blocking(&self.registry, move |reg| reg.set_maintenance(&id, r.maintenance)).await
    }

    async fn put_global_group(
        &self,
        request: Request<gc::GlobalGroup>,
    ) -> Result<Response<gc::GlobalGroup>, Status> {
        self.authorize(&request)?;
        let group = request.into_inner();
        blocking(&self.registry, move |reg| reg.put_global_group(group)).await
    }

    async fn list_global_groups(
        &self,
        request: Request<pb::ListGlobalGroupsRequest>,
    ) -> Result<Response<pb::ListGlobalGroupsResponse>, Status> {
        self.authorize(&request)?;
        blocking(&self.registry, |reg| {
            reg.list_global_groups().map(|groups| pb::ListGlobalGroupsResponse { groups })
        })
        .await
    }

    async fn add_federation_partner(
        &self,
        request: Request<gc::Anchor>,
    ) -> Result<Response<gc::FederationPartner>, Status> {
        self.authorize(&request)?;
        let anchor = lienthong_globalconf::Anchor::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(format!("invalid_request: {e}")))?;
        blocking(&self.registry, move |reg| reg.add_federation_partner(&anchor)).await
    }

    async fn list_federation_partners(
        &self,
        request: Request<pb::ListFederationPartnersRequest>,
    ) -> Result<Response<pb::ListFederationPartnersResponse>, Status> {
        self.authorize(&request)?;
        blocking(&self.registry, |reg| {
            reg.list_federation_partners().map(|partners| pb::ListFederationPartnersResponse { partners })
        })
        .await
    }
}
