//! Metaservices, as X-Road clients call them: `GET /listClients` on the consumer node, and
//! `listMethods`, `allowedMethods` and `getOpenAPI` as ordinary r1 calls that the provider node
//! answers itself.

use std::time::SystemTime;

use lienthong_globalconf::{AccessGrant, Endpoint, GlobalConf, GrantSubject, MemberStatus, ServiceType};
use lienthong_types::{ClientId, SubsystemId};
use serde::Serialize;
use serde_json::Value;

pub const LIST_METHODS: &str = "listMethods";
pub const ALLOWED_METHODS: &str = "allowedMethods";
pub const GET_OPENAPI: &str = "getOpenAPI";

/// Whether a service code names a metaservice the provider node answers itself.
pub fn is_metaservice(code: &str) -> bool {
    matches!(code, LIST_METHODS | ALLOWED_METHODS | GET_OPENAPI)
}

#[derive(Serialize)]
struct ClientIdJson<'a> {
    member_class: &'a str,
    member_code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subsystem_code: Option<&'a str>,
    object_type: &'static str,
    xroad_instance: &'a str,
}

#[derive(Serialize)]
struct ClientJson<'a> {
    id: ClientIdJson<'a>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subsystem_name: Option<&'a str>,
}

/// `listClients`: the active members and subsystems of `instance` (the node's own, or a
/// federation partner's, whose members a federated configuration also holds), as JSON.
pub fn list_clients(conf: &GlobalConf, instance: &str) -> Vec<u8> {
    let mut member = Vec::new();
    for m in conf
        .members
        .values()
        .filter(|m| m.status == MemberStatus::Active && m.id.instance.as_str() == instance)
    {
        let id = |subsystem_code: Option<&'static str>| ClientIdJson {
            member_class: m.id.class.as_str(),
            member_code: m.id.code.as_str(),
            subsystem_code,
            object_type: "MEMBER",
            xroad_instance: m.id.instance.as_str(),
        };
        member.push(ClientJson { id: id(None), name: &m.name, subsystem_name: None });
        for (code, name) in &m.subsystems {
            member.push(ClientJson {
                id: ClientIdJson {
                    subsystem_code: Some(code.as_str()),
                    object_type: "SUBSYSTEM",
                    ..id(None)
                },
                name: &m.name,
                subsystem_name: Some(name),
            });
        }
    }
    serde_json::to_vec(&serde_json::json!({ "member": member })).unwrap_or_default()
}

/// The instance named by `listClients?xRoadInstance=X`, if any.
pub fn requested_instance(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("xRoadInstance="))
}

#[derive(Serialize)]
struct EndpointJson<'a> {
    method: &'a str,
    path: &'a str,
}

#[derive(Serialize)]
struct ServiceJson<'a> {
    member_class: &'a str,
    member_code: &'a str,
    subsystem_code: &'a str,
    service_code: &'a str,
    object_type: &'static str,
    xroad_instance: &'a str,
    service_type: &'static str,
    endpoint_list: Vec<EndpointJson<'a>>,
}

fn service_type(t: ServiceType) -> &'static str {
    match t {
        ServiceType::Rest => "REST",
        ServiceType::OpenApi => "OPENAPI",
        ServiceType::Wsdl => "WSDL",
    }
}

/// Every endpoint, or `* /*` for a service that lists none.
static ANY: Endpoint = Endpoint { method: String::new(), path: String::new() };

fn endpoint_json(e: &Endpoint) -> EndpointJson<'_> {
    if e.method.is_empty() {
        EndpointJson { method: "*", path: "/*" }
    } else {
        EndpointJson { method: &e.method, path: &e.path }
    }
}

/// `listMethods` (every service of `subsystem`) or, with `allowed_for`, `allowedMethods` (only
/// what that client may call at that time, and only the endpoints its grants cover).
pub fn list_methods(
    conf: &GlobalConf,
    subsystem: &SubsystemId,
    allowed_for: Option<(&ClientId, SystemTime)>,
) -> Vec<u8> {
    let mut service = Vec::new();
    for s in conf.services.values().filter(|s| &s.id.subsystem == subsystem && !s.disabled) {
        let all: Vec<&Endpoint> =
            if s.endpoints.is_empty() { vec![&ANY] } else { s.endpoints.iter().collect() };
        let endpoints: Vec<&Endpoint> = match allowed_for {
            None => all,
            Some((client, now)) => {
                let grants: Vec<_> = conf
                    .grants_for(&s.id)
                    .filter(|g| g.is_valid_at(now))
                    .filter(|g| grants_client(conf, g, client))
                    .collect();
                if grants.is_empty() {
                    continue;
                }
                if grants.iter().any(|g| g.endpoints.is_empty()) {
                    all
                } else {
                    grants.iter().flat_map(|g| g.endpoints.iter()).collect()
                }
            }
        };
        service.push(ServiceJson {
            member_class: s.id.subsystem.member.class.as_str(),
            member_code: s.id.subsystem.member.code.as_str(),
            subsystem_code: s.id.subsystem.code.as_str(),
            service_code: s.id.code.as_str(),
            object_type: "SERVICE",
            xroad_instance: s.id.subsystem.member.instance.as_str(),
            service_type: service_type(s.service_type),
            endpoint_list: endpoints.into_iter().map(endpoint_json).collect(),
        });
    }
    serde_json::to_vec(&serde_json::json!({ "service": service })).unwrap_or_default()
}

/// Whether a grant's subject includes `client` (directly or through a global group).
fn grants_client(conf: &GlobalConf, g: &AccessGrant, client: &ClientId) -> bool {
    match &g.subject {
        GrantSubject::Client(c) => c == client,
        GrantSubject::Group(group) => {
            conf.global_groups.get(group).is_some_and(|gr| gr.members.contains(client))
        }
    }
}

/// The `serviceCode` parameter of `getOpenAPI`.
pub fn requested_service_code(query: &str) -> Option<&str> {
    query.split('&').find_map(|kv| kv.strip_prefix("serviceCode=")).filter(|c| !c.is_empty())
}

/// An OpenAPI description as the consumer may see it: each `servers[].url` reduced to its path,
/// so the backend's host stays private. JSON documents are rewritten structurally; YAML ones
/// line by line (`url:` entries with an absolute URL).
pub fn public_openapi(doc: &[u8]) -> Vec<u8> {
    if let Ok(mut v) = serde_json::from_slice::<Value>(doc) {
        if let Some(servers) = v.get_mut("servers").and_then(Value::as_array_mut) {
            for s in servers {
                if let Some(url) = s.get_mut("url")
                    && let Some(u) = url.as_str()
                {
                    *url = Value::String(url_path(u).to_owned());
                }
            }
        }
        return serde_json::to_vec_pretty(&v).unwrap_or_default();
    }
    let text = String::from_utf8_lossy(doc);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        let key = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        if let Some(value) = key.strip_prefix("url:") {
            let v = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if v.contains("://") {
                let indent = &line[..line.len() - trimmed.len()];
                let dash = if trimmed.starts_with("- ") { "- " } else { "" };
                out.push_str(&format!("{indent}{dash}url: {}\n", url_path(v)));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

fn url_path(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_hides_the_backend_host() {
        let json =
            br#"{"openapi":"3.0.0","servers":[{"url":"https://10.1.2.3:8443/api/v1"},{"url":"/rel"}]}"#;
        let v: Value = serde_json::from_slice(&public_openapi(json)).unwrap();
        assert_eq!(v["servers"][0]["url"], "/api/v1");
        assert_eq!(v["servers"][1]["url"], "/rel");
        let yaml =
            b"openapi: 3.0.0\nservers:\n  - url: http://backend.internal:8080/pets\n  - url: 'https://h'\n";
        let out = String::from_utf8(public_openapi(yaml)).unwrap();
        assert!(out.contains("  - url: /pets\n"), "{out}");
        assert!(out.contains("  - url: /\n"), "{out}");
        assert!(!out.contains("backend.internal"));
    }

    #[test]
    fn query_parameters() {
        assert_eq!(requested_service_code("a=1&serviceCode=pets"), Some("pets"));
        assert_eq!(requested_service_code("serviceCode="), None);
        assert_eq!(requested_instance(Some("xRoadInstance=VN-NA")), Some("VN-NA"));
        assert!(is_metaservice("listMethods") && !is_metaservice("listmethods"));
    }
}
