//! The provider node's admission of a request: who sent it, for whom, to what, and under which
//! agreement. The order matters: identity first, then the signature, then the catalogue and the
//! grants, so nothing about the catalogue is revealed to an unauthenticated sender.

use std::time::{Duration, SystemTime};

use lienthong_globalconf::{GlobalConf, MemberStatus, ServiceType, from_millis};
use lienthong_pki::Fingerprint;
use lienthong_proto::convert::{IntoDomain, required};
use lienthong_proto::exchange::v1 as pb;
use lienthong_types::{ClientId, Fault, NodeId, ServiceId};

use crate::protection::{Protection, Signed};
use crate::{Reject, meta};

/// A request the provider may serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub client: ClientId,
    pub service: ServiceId,
    /// The grant that allows it; `None` for metaservices, which need none.
    pub grant_id: Option<String>,
    /// The certificate that signed the request; `None` only under a [`Protection`] that checks
    /// no signatures.
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

/// How many times [`check_path`] percent-decodes a segment before giving up on it.
const MAX_DECODE_ROUNDS: usize = 3;

/// Why [`check_path`] refused a request path. The messages are fit to show a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("the path has a '.' or '..' segment (percent-encoded or with ';' parameters included)")]
    DotSegment,
    #[error("the path has an empty segment ('//')")]
    EmptySegment,
    #[error("the path has an encoded '/' (%2F) in a segment")]
    EncodedSlash,
    #[error("the path has a backslash ('\\' or %5C)")]
    Backslash,
    #[error("the path has a control character (NUL, CR, LF, ...)")]
    ControlCharacter,
    #[error("the path is percent-encoded more than {MAX_DECODE_ROUNDS} times over")]
    TooDeeplyEncoded,
}

/// The one rule for request paths, applied by the consumer node to a client's r1 path and by
/// the provider node to an envelope's path, before any grant is evaluated. Grants match paths
/// as text, while backends resolve them in their own ways (Tomcat and Spring drop `;`
/// parameters, some servers decode twice or read `\` as `/`), so a path that a backend could
/// read as another path is refused rather than normalised; what passes reaches the backend as
/// it was sent.
///
/// `path` is the part after the service code, as sent (percent-encoded; empty or starting with
/// `/`); the query is not part of it. Take each segment between two `/`, percent-decode it
/// repeatedly until it no longer changes (at most [`MAX_DECODE_ROUNDS`] times; a segment still
/// changing after that is refused), so `%252e` counts as `.`. The path is refused if, for any
/// segment:
/// - the decoded segment, cut at its first `;` (path parameters), is `.` or `..`
///   (`..;/`, `%2e%2e`, `.%2E;x=1`);
/// - the decoded segment contains `/` (`%2f`: an encoded separator);
/// - the decoded segment contains `\` (`..\`, `..%5c`);
/// - the decoded segment contains an ASCII control character (`%00`, CR, LF, DEL);
/// - the segment is empty and is not the last one (`//`; a trailing `/` is allowed).
///
/// Invalid escapes (`%zz`) stay literal text. Everything else passes: `/a.b/c`, `/v1/..x`,
/// `/x%20y`, `/%E1%BB%87`, `/items;v=2`.
pub fn check_path(path: &str) -> Result<(), PathProblem> {
    let Some(rest) = path.strip_prefix('/') else {
        // The r1 parser makes `rest` empty or starting with `/`; an envelope may carry anything.
        return if path.is_empty() { Ok(()) } else { check_segments(path) };
    };
    check_segments(rest)
}

fn check_segments(rest: &str) -> Result<(), PathProblem> {
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            if segments.peek().is_some() {
                return Err(PathProblem::EmptySegment);
            }
            continue;
        }
        check_segment(segment.as_bytes())?;
    }
    Ok(())
}

fn check_segment(raw: &[u8]) -> Result<(), PathProblem> {
    let mut decoded = raw.to_vec();
    let mut rounds = 0;
    loop {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        rounds += 1;
        if rounds > MAX_DECODE_ROUNDS {
            return Err(PathProblem::TooDeeplyEncoded);
        }
        decoded = next;
    }
    if decoded.iter().any(|&b| b.is_ascii_control()) {
        return Err(PathProblem::ControlCharacter);
    }
    if decoded.contains(&b'\\') {
        return Err(PathProblem::Backslash);
    }
    if decoded.contains(&b'/') {
        return Err(PathProblem::EncodedSlash);
    }
    let name = decoded.split(|&b| b == b';').next().unwrap_or_default();
    if name == b"." || name == b".." {
        return Err(PathProblem::DotSegment);
    }
    Ok(())
}

/// One round of percent-decoding; invalid escapes are kept as they are.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) =
                (s.get(i + 1).and_then(|&b| hex(b)), s.get(i + 2).and_then(|&b| hex(b)))
        {
            // Two hex digits: at most 0xff.
            out.push(u8::try_from(h * 16 + l).unwrap_or(u8::MAX));
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Admits or refuses a request envelope that arrived from `peer` (the node proven by mTLS),
/// with its signature checked.
pub fn admit(
    conf: &GlobalConf,
    own_node: &NodeId,
    peer: &NodeId,
    env: &pb::RequestEnvelope,
    now: SystemTime,
    max_skew: Duration,
) -> Result<Admitted, Reject> {
    admit_with(conf, own_node, peer, env, now, max_skew, &Signed)
}

/// [`admit`], with the signature checked by `protection` at its place in the order.
pub fn admit_with(
    conf: &GlobalConf,
    own_node: &NodeId,
    peer: &NodeId,
    env: &pb::RequestEnvelope,
    now: SystemTime,
    max_skew: Duration,
    protection: &dyn Protection,
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
    let signer = protection.verify_request(env, client.member(), conf, now)?;
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
    check_path(path).map_err(|problem| invalid(problem.to_string()))?;
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
