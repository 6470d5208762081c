//! `listClients`: the members and subsystems of an instance this node knows, answered by the
//! consumer node itself.

use http::{HeaderValue, Method, Request, Response};
use lienthong_exchange::{Reject, meta};
use lienthong_types::Fault;

use crate::respond::{Body, full};
use crate::state::NodeState;

pub(super) fn respond<B>(state: &NodeState, req: &Request<B>) -> Result<Response<Body>, Reject> {
    if req.method() != Method::GET {
        return Err(Reject::new(Fault::InvalidHttpMethod, "listClients takes GET"));
    }
    let conf = state.usable_conf(Fault::ClientGlobalConfOutdated)?;
    let own = conf.conf.instance.as_str();
    let wanted = meta::requested_instance(req.uri().query()).unwrap_or(own);
    // The node's own instance, or a federation partner whose configuration it holds.
    let known = wanted == own || conf.conf.members.keys().any(|m| m.instance.as_str() == wanted);
    if !known {
        return Err(Reject::new(
            Fault::ClientUnknownMember,
            format!("instance {wanted:?} is not known to this node"),
        ));
    }
    let mut resp = Response::new(full(meta::list_clients(&conf.conf, wanted)));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
