//! Catalogue requests a node's operator sends on behalf of a member it holds the signing key of:
//! publishing (or disabling) a service. The registry URL and CA come from the node's last
//! verified global configuration, read without taking the running node's lock.

use std::time::SystemTime;

use lienthong_confclient::CONF_FILE;
use lienthong_globalconf::{Anchor, sign_request, to_millis, verify_ignoring_expiry};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_proto::registry::v1::management_service_client::ManagementServiceClient;
use lienthong_types::ServiceId;

use crate::home::{HomeError, NodeHome, NodeKeys};

/// A service as its owner publishes it.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub id: ServiceId,
    pub openapi: bool,
    /// `(method, path pattern)`; empty: any method on any path.
    pub endpoints: Vec<(String, String)>,
    pub description: String,
    pub disabled: bool,
    /// The OpenAPI description, stored by the registry.
    pub document: Vec<u8>,
}

/// Sends the publication, signed by the service member's key held in `keys`, and returns the
/// registry's answer (approved at once unless the registry holds such requests for review).
pub async fn publish_service(
    home: &NodeHome,
    keys: &NodeKeys,
    spec: &ServiceSpec,
    registry_url: Option<&str>,
    now: SystemTime,
) -> Result<pb::RequestStatus, HomeError> {
    let member = &spec.id.subsystem.member;
    let (key, cert) = keys.signing.get(member).ok_or_else(|| {
        HomeError::Invalid(format!(
            "this node holds no signing key of member {member}, which owns the service"
        ))
    })?;
    let service = gc::Service {
        id: Some((&spec.id).into()),
        r#type: if spec.openapi { gc::ServiceType::Openapi } else { gc::ServiceType::Rest } as i32,
        description: spec.description.clone(),
        disabled: spec.disabled,
        endpoints: spec
            .endpoints
            .iter()
            .map(|(m, p)| gc::Endpoint { method: m.clone(), path: p.clone() })
            .collect(),
    };
    let request = pb::ManagementRequest {
        request_id: format!("publish-{}", uuid::Uuid::new_v4()),
        created_at_ms: to_millis(now),
        kind: Some(pb::management_request::Kind::PublishService(pb::PublishService {
            service: Some(service),
            description_document: spec.document.clone(),
        })),
    };
    let signed = sign_request(&request, key, Some(cert)).map_err(|e| HomeError::Crypto(e.to_string()))?;
    let (url, cas) = registry(home, &keys.anchor, registry_url, now)?;
    let channel = crate::home::connect(&url, &cas, &keys.anchor).await?;
    let mut api = ManagementServiceClient::new(channel);
    api.submit(signed).await.map(tonic::Response::into_inner).map_err(|e| HomeError::Refused {
        what: format!("publication of {}", spec.id),
        message: e.message().to_owned(),
    })
}

/// The registry's URL (or `url`) and the approved CAs, from the last verified configuration.
fn registry(
    home: &NodeHome,
    anchor: &Anchor,
    url: Option<&str>,
    now: SystemTime,
) -> Result<(String, Vec<lienthong_pki::Certificate>), HomeError> {
    let path = home.conf_dir().join(CONF_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        HomeError::Invalid(format!("cannot read the node's global configuration {}: {e}", path.display()))
    })?;
    let conf = verify_ignoring_expiry(&bytes, anchor, now)
        .map_err(|e| HomeError::Invalid(format!("the node's global configuration does not verify: {e}")))?;
    let url = match url {
        Some(u) => u.to_owned(),
        None => conf.conf.registry_urls.first().cloned().ok_or(HomeError::NoRegistryUrl)?,
    };
    Ok((url, conf.conf.approved_cas))
}
