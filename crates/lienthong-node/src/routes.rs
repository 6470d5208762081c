//! What a consumer-side listener serves, by path: health, the audit API, `listClients`, and r1
//! exchanges. The one place that knows all of them, so the consumer and the audit API need not
//! know each other.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::conn::ConnInfo;
use crate::respond::Body;
use crate::state::NodeState;

/// Handles one request on a consumer-side listener.
pub(crate) async fn handle(state: Arc<NodeState>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let path = req.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return crate::health::respond(&state, path == "/readyz").await;
    }
    if path.starts_with(crate::audit_api::PREFIX) {
        return crate::audit_api::handle(state, req, conn).await;
    }
    crate::consumer::handle(&state, req, &conn).await
}
