//! Which headers travel, the X-Road headers the nodes set, and the `X-Road-Request-Hash`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};
use lienthong_proto::types::v1 as pb;
use sha2::{Digest, Sha256, Sha512};

pub const X_ROAD_CLIENT: &str = "x-road-client";
pub const X_ROAD_ID: &str = "x-road-id";
pub const X_ROAD_USER_ID: &str = "x-road-userid";
pub const X_ROAD_ISSUE: &str = "x-road-issue";
pub const X_ROAD_SECURITY_SERVER: &str = "x-road-security-server";
pub const X_ROAD_REPRESENTED_PARTY: &str = "x-road-represented-party";
pub const X_ROAD_REQUEST_ID: &str = "x-road-request-id";
pub const X_ROAD_REQUEST_HASH: &str = "x-road-request-hash";
pub const X_ROAD_SERVICE: &str = "x-road-service";
pub const X_ROAD_ERROR: &str = "x-road-error";

/// Hop-by-hop or revealing headers that never cross the gateway, in either direction.
const NOT_FORWARDED: [&str; 13] = [
    "transfer-encoding",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "connection",
    "user-agent",
    "host",
    "content-length",
    "server",
    "expect",
];

/// Headers the gateway sets itself; a value sent by the other party is dropped.
const GATEWAY_SET_REQUEST: [&str; 2] = [X_ROAD_REQUEST_ID, X_ROAD_REQUEST_HASH];
const GATEWAY_SET_RESPONSE: [&str; 5] =
    [X_ROAD_ID, X_ROAD_CLIENT, X_ROAD_SERVICE, X_ROAD_REQUEST_ID, X_ROAD_REQUEST_HASH];

fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn forwarded(headers: &HeaderMap, also_dropped: &[&str]) -> Vec<pb::Header> {
    let named = connection_named(headers);
    headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            !NOT_FORWARDED.contains(&n) && !also_dropped.contains(&n) && !named.iter().any(|c| c == n)
        })
        .map(|(name, value)| pb::Header { name: name.as_str().to_owned(), value: value.as_bytes().to_vec() })
        .collect()
}

/// The client's headers that reach the provider's backend, in order: everything except the
/// hop-by-hop set, headers named in `Connection`, and the ids the consumer node sets itself.
pub fn forwarded_request_headers(headers: &HeaderMap) -> Vec<pb::Header> {
    forwarded(headers, &GATEWAY_SET_REQUEST)
}

/// The backend's response headers that travel back to the client; the X-Road ids are set by the
/// provider node instead.
pub fn forwarded_response_headers(headers: &HeaderMap) -> Vec<pb::Header> {
    forwarded(headers, &GATEWAY_SET_RESPONSE)
}

/// Rebuilds a header list for sending, in order; entries that are not valid HTTP headers are
/// skipped (they cannot have come from a real HTTP message).
pub fn to_header_pairs(headers: &[pb::Header]) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter_map(|h| {
            Some((HeaderName::from_bytes(h.name.as_bytes()).ok()?, HeaderValue::from_bytes(&h.value).ok()?))
        })
        .collect()
}

/// [`to_header_pairs`] as a map.
pub fn to_header_map(headers: &[pb::Header]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in to_header_pairs(headers) {
        map.append(name, value);
    }
    map
}

/// The first value of a header in a list (names are lower-case).
pub fn header_value<'a>(headers: &'a [pb::Header], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.name == name).map(|h| h.value.as_slice())
}

/// SHA-256 over `name:value CRLF` for each header in order: what a log record keeps of them.
pub fn headers_sha256(headers: &[pb::Header]) -> [u8; 32] {
    let mut h = Sha256::new();
    for header in headers {
        h.update(header.name.as_bytes());
        h.update(b":");
        h.update(&header.value);
        h.update(b"\r\n");
    }
    h.finalize().into()
}

/// `X-Road-Request-Hash`: base64(SHA-512(H || SHA-512(body))), or base64(H) without a body, where
/// H = SHA-512(`METHOD CRLF path[?query] CRLF` then `Name:Value CRLF` per forwarded header).
pub fn request_hash(
    method: &str,
    path_and_query: &str,
    headers: &[pb::Header],
    body_sha512: Option<&[u8; 64]>,
) -> String {
    let mut h = Sha512::new();
    h.update(method.as_bytes());
    h.update(b"\r\n");
    h.update(path_and_query.as_bytes());
    h.update(b"\r\n");
    for header in headers {
        h.update(header.name.as_bytes());
        h.update(b":");
        h.update(&header.value);
        h.update(b"\r\n");
    }
    let head: [u8; 64] = h.finalize().into();
    match body_sha512 {
        None => STANDARD.encode(head),
        Some(body) => {
            let mut outer = Sha512::new();
            outer.update(head);
            outer.update(body);
            STANDARD.encode(outer.finalize())
        }
    }
}

/// [`request_hash`] of a request envelope for `service`, over the canonical path both nodes
/// hash: the service's r1 path, the rest of the path, and the query. The one place that path is
/// built.
pub fn envelope_request_hash(
    env: &lienthong_proto::exchange::v1::RequestEnvelope,
    service: &lienthong_types::ServiceId,
    body_sha512: Option<&[u8; 64]>,
) -> String {
    let mut path = service.r1_path();
    path.push_str(&env.path);
    if !env.query.is_empty() {
        path.push('?');
        path.push_str(&env.query);
    }
    request_hash(&env.method, &path, &env.headers, body_sha512)
}

/// Why a `Content-Length` could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Content-Length is malformed or repeated")]
pub struct BadContentLength;

/// The declared `Content-Length`, if any. The one reader: a client's request is refused for a
/// malformed or repeated one; a peer's or a backend's only loses the hint (its body is still
/// checked against what was signed or read to the end).
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, BadContentLength> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(BadContentLength);
    }
    first.to_str().ok().and_then(|s| s.parse().ok()).map(Some).ok_or(BadContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn hop_by_hop_and_gateway_headers_are_dropped_in_order() {
        let m = map(&[
            ("accept", "application/json"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "secret"),
            ("host", "10.0.0.1"),
            ("x-road-client", "VN/GOV/A/sub"),
            ("x-road-request-id", "forged"),
            ("x-road-request-hash", "forged"),
            ("user-agent", "curl"),
            ("x-custom", "1"),
        ]);
        let names: Vec<_> = forwarded_request_headers(&m).into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["accept", "x-road-client", "x-custom"]);
    }

    #[test]
    fn response_ids_are_set_by_the_node_not_the_backend() {
        let m = map(&[("content-type", "text/plain"), ("x-road-id", "forged"), ("server", "nginx")]);
        let names: Vec<_> = forwarded_response_headers(&m).into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["content-type"]);
    }

    #[test]
    fn request_hash_binds_every_part() {
        let headers = vec![pb::Header { name: "x-road-client".into(), value: b"VN/GOV/A/sub".to_vec() }];
        let body: [u8; 64] = Sha512::digest(b"{}").into();
        let base = request_hash("POST", "/r1/VN/GOV/B/sub/svc?a=1", &headers, Some(&body));
        assert_eq!(base.len(), 88, "base64 of 64 bytes");
        assert_ne!(base, request_hash("PUT", "/r1/VN/GOV/B/sub/svc?a=1", &headers, Some(&body)));
        assert_ne!(base, request_hash("POST", "/r1/VN/GOV/B/sub/svc?a=2", &headers, Some(&body)));
        assert_ne!(base, request_hash("POST", "/r1/VN/GOV/B/sub/svc?a=1", &[], Some(&body)));
        assert_ne!(base, request_hash("POST", "/r1/VN/GOV/B/sub/svc?a=1", &headers, None));
        // Without a body the hash is H itself.
        let mut h = Sha512::new();
        h.update(b"GET\r\n/x\r\n");
        assert_eq!(request_hash("GET", "/x", &[], None), STANDARD.encode(h.finalize()));
    }
}
