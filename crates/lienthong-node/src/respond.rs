//! How the node's handlers build answers: the body type every handler returns, and the X-Road
//! error response with its detail id.

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use lienthong_exchange::error_body;

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub(crate) fn new_detail() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The HTTP response for a gateway error.
pub(crate) fn error_response(
    code: &str,
    status: u16,
    message: &str,
    detail: &str,
    accept: Option<&str>,
) -> Response<Body> {
    let e = error_body::render_code(code, status, message, detail, accept);
    let mut resp = Response::new(full(e.body));
    *resp.status_mut() =
        http::StatusCode::from_u16(e.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(e.content_type));
    if let Ok(v) = HeaderValue::from_str(&e.code) {
        h.insert(lienthong_exchange::headers::X_ROAD_ERROR, v);
    }
    resp
}
