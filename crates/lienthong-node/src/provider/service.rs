//! Calling the service's backend with an admitted request, and reading its answer.

use http::Method;
use lienthong_exchange::Reject;
use lienthong_exchange::access::Admitted;
use lienthong_exchange::failure::{BodyOf, ServiceProblem, body_fault, service_fault};
use lienthong_exchange::headers::{self as xh, content_length, forwarded_response_headers};
use lienthong_exchange::provider::Served;
use lienthong_proto::exchange::v1 as ex;
use lienthong_types::Fault;

use crate::backend::{BackendError, BackendRequest};
use crate::body::{SpooledBody, spool};
use crate::state::NodeState;

/// Calls the backend of the admitted service; what it answered, its body read to the end.
pub(super) async fn call(
    state: &NodeState,
    admitted: &Admitted,
    env: &ex::RequestEnvelope,
    body: SpooledBody,
) -> Result<(Served, SpooledBody), Reject> {
    let backend = state.backends.get(&admitted.service).ok_or_else(|| {
        Reject::new(Fault::ServiceFailed, format!("service {} has no backend on this node", admitted.service))
    })?;
    let method = Method::from_bytes(env.method.as_bytes())
        .map_err(|_| Reject::new(Fault::InvalidMessage, "bad method"))?;
    let request = BackendRequest {
        method,
        url: backend.url.clone(),
        path: env.path.clone(),
        query: env.query.clone(),
        headers: xh::to_header_pairs(&env.headers),
        content_length: Some(body.len()),
        body: body.into_body(),
    };
    let response = backend.client.call(request, backend.timeout).await.map_err(|e| match e {
        BackendError::Timeout => service_fault(ServiceProblem::Timeout),
        other => {
            tracing::warn!(service = %admitted.service, error = ?other, "backend call failed");
            service_fault(ServiceProblem::Failed)
        }
    })?;
    let mut map = http::HeaderMap::new();
    for (n, v) in &response.headers {
        map.append(n.clone(), v.clone());
    }
    // HEAD, 204 and 304 answers declare a length but carry no body.
    let bodiless = env.method == "HEAD" || matches!(response.status.as_u16(), 204 | 304);
    let length = content_length(&map).ok().flatten().filter(|_| !bodiless);
    let out = spool(response.body, &state.limits, &state.spool_dir, length)
        .await
        .map_err(|e| body_fault(BodyOf::ServiceResponse, e.problem(), &e))?;
    Ok((Served { status: response.status.as_u16(), headers: forwarded_response_headers(&map) }, out))
}
