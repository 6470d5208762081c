//! The provider node's admission of a request: who sent it, for whom, to what, and under which
//! agreement. The order matters: identity first, then the signature, then the catalogue and the
//! grants, so nothing about the catalogue is revealed to an unauthenticated sender.

use std::time::{Duration, SystemTime};

use lienthong_globalconf::{GlobalConf, MemberStatus, ServiceType, from_millis};
use lienthong_pki::Fingerprint;
use lienthong_proto::convert::{IntoDomain, required};
use lienthong_proto::exchange::v1 as pb;
use lienthong_types::{ClientId, Fault, NodeId, ServiceId};

use crate::{Reject, envelope, meta};

/// A request the provider may serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub client: ClientId,
    pub service: ServiceId,
    /// The grant that allows it; `None` for metaservices, which need none.
    pub grant_id: Option<String>,
    /// The certificate that signed the request; `None` only from [`admit_without_signature`].
    pub signer: Option<Fingerprint>,
}

/// Whether `node` may speak for `client`: it hosts the subsystem, or for a member-level client,
/// it belongs to the member or hosts one of its subsystems.
pub fn node_hosts_client(conf: &GlobalConf, node: &NodeId, client: &ClientId) -> bool {
    let Some(n) = conf.node(node) else { return false };
    match client {
        ClientId::Subsystem(s) => n.hosted_subsystems.contains(s),
        ClientId::Member(m) => &n.id.owner == m || n.hosted_subsystems.iter().any(|s| &s.member == m),
    }
}

fn invalid(message: impl Into<String>) -> Reject {
    Reject::new(Fault::InvalidMessage, message)
}

/// Whether a request path has a `.` or `..` segment (also percent-encoded). Grants match paths
/// as text, while a backend resolves dot segments, so such a path is never admitted.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let s = segment.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    })
}

/// Admits or refuses a request envelope that arrived from `peer` (the node proven by mTLS).
pub fn admit(
    conf: &GlobalConf,
    own_node: &NodeId,
    peer: &NodeId,
    env: &pb::RequestEnvelope,
    now: SystemTime,
    max_skew: Duration,
) -> Result<Admitted, Reject> {
    admit_checking(conf, own_node, peer, env, now, max_skew, true)
}

/// [`admit`] without the request's signature check, for the node's benchmark-only
/// transport-only mode: every other check is made in the same order, but nothing proves that
/// the client member sent the request, so what is admitted this way is no evidence. Never for
/// real traffic.
pub fn admit_without_signature(
    conf: &GlobalConf,
    own_node: &NodeId,
    peer: &NodeId,
    env: &pb::RequestEnvelope,
    now: SystemTime,
    max_skew: Duration,
) -> Result<Admitted, Reject> {
    admit_checking(conf, own_node, peer, env, now, max_skew, false)
}

fn admit_checking(
    conf: &GlobalConf,
    own_node: &NodeId,
    peer: &NodeId,
    env: &pb::RequestEnvelope,
    now: SystemTime,
    max_skew: Duration,
    check_signature: bool,
) -> Result<Admitted, Reject> {
    let client: ClientId = required(env.client.clone(), "client").map_err(|e| invalid(e.to_string()))?;
    let service: ServiceId = required(env.service.clone(), "service").map_err(|e| invalid(e.to_string()))?;
    let consumer: NodeId =
        required(env.consumer_node.clone(), "consumer_node").map_err(|e| invalid(e.to_string()))?;
    if env.message_id.is_empty() || env.request_id.is_empty() || env.method.is_empty() {
        return Err(invalid("the message has no id, request id or method"));
    }
    if let Some(target) = env.target_node.clone() {
        let target: NodeId = target.into_domain("target_node").map_err(|e| invalid(e.to_string()))?;
        if &target != own_node {
            return Err(Reject::new(
                Fault::InvalidSecurityServer,
                format!("the message is for node {target}"),
            ));
        }
    }
    if &consumer != peer {
        return Err(Reject::new(
            Fault::ServerSslAuthenticationFailed,
            format!("node {peer} sent a message naming node {consumer} as its sender"),
        ));
    }
    if !node_hosts_client(conf, peer, &client) {
        return Err(Reject::new(
            Fault::ServerSslAuthenticationFailed,
            format!("node {peer} does not host client {client}"),
        ));
    }
    let member_active = conf.member(client.member()).is_some_and(|m| m.status == MemberStatus::Active);
    let client_known = match &client {
        ClientId::Subsystem(s) => conf.has_subsystem(s),
        ClientId::Member(_) => member_active,
    };
    if !client_known {
        return Err(Reject::new(Fault::ServerUnknownMember, format!("client {client} is not registered")));
    }
    let created = from_millis(env.created_at_ms);
    let skew = now.duration_since(created).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
    if skew > max_skew {
        return Err(Reject::new(
            Fault::ClockSkew,
            format!("the message time differs from this node's clock by {} s", skew.as_secs()),
        ));
    }
    let signer =
        if check_signature { Some(envelope::verify_request(env, client.member(), conf, now)?) } else { None };
    if !conf.nodes_hosting(&service.subsystem).any(|n| &n.id == own_node) {
        return Err(Reject::new(
            Fault::ServerUnknownService,
            format!("{} is not hosted on this node", service.subsystem),
        ));
    }
    if meta::is_metaservice(service.code.as_str()) {
        return Ok(Admitted { client, service, grant_id: None, signer });
    }
    let published = conf.service(&service).ok_or_else(|| {
        Reject::new(Fault::ServerUnknownService, format!("service {service} is not registered"))
    })?;
    if !matches!(published.service_type, ServiceType::Rest | ServiceType::OpenApi) {
        return Err(Reject::new(
            Fault::ServerUnknownService,
            format!("service {service} is not a REST service"),
        ));
    }
    if published.disabled {
        return Err(Reject::new(Fault::ServiceDisabled, format!("service {service} is disabled")));
    }
    let path = if env.path.is_empty() { "/" } else { env.path.as_str() };
    if has_dot_segment(path) {
        return Err(invalid("the path has a '.' or '..' segment"));
    }
    let grant_id = conf
        .allowing_grant(&client, &service, &env.method, path, now)
        .map(|g| g.id.clone())
        .ok_or_else(|| {
            Reject::new(
                Fault::AccessDenied,
                format!("client {client} may not call {} {path} on {service}", env.method),
            )
        })?;
    Ok(Admitted { client, service, grant_id: Some(grant_id), signer })
}
