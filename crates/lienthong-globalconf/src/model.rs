//! The typed global configuration and the questions a node asks of it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use lienthong_pki::{Certificate, Fingerprint};
use lienthong_proto::ProtoError;
use lienthong_proto::convert::{IntoDomain, known_enum, optional, required};
use lienthong_proto::globalconf::v1 as pb;
use lienthong_types::{
    ClientId, GlobalGroupId, InstanceId, MemberClass, MemberId, NodeId, ServiceId, SubsystemCode, SubsystemId,
};

use crate::error::ConfError;
use crate::keys::ConfKey;
use crate::time_ms::{from_millis, optional_millis};

/// A verified instance configuration. Build one with [`crate::verify`].
#[derive(Debug, Clone)]
pub struct GlobalConf {
    pub instance: InstanceId,
    pub version: u64,
    pub generated_at: SystemTime,
    pub expires_at: SystemTime,
    pub member_classes: BTreeSet<MemberClass>,
    pub approved_cas: Vec<Certificate>,
    pub members: BTreeMap<MemberId, Member>,
    pub nodes: BTreeMap<NodeId, Node>,
    pub services: BTreeMap<ServiceId, Service>,
    pub grants: Vec<AccessGrant>,
    pub global_groups: BTreeMap<GlobalGroupId, GlobalGroup>,
    pub federation_partners: Vec<FederationPartner>,
    pub registry_urls: Vec<String>,
    pub signing_keys: Vec<ConfKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Active,
    Closed,
    Superseded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    pub name: String,
    pub status: MemberStatus,
    pub status_since: SystemTime,
    pub superseded_by: Option<MemberId>,
    pub parent: Option<MemberId>,
    /// Subsystem code -> display name.
    pub subsystems: BTreeMap<SubsystemCode, String>,
    pub signing_certs: BTreeSet<Fingerprint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    pub url: String,
    pub network: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub addresses: Vec<NodeAddress>,
    /// The registered authentication certificate: peers are pinned to it.
    pub auth_cert: Fingerprint,
    pub hosted_subsystems: BTreeSet<SubsystemId>,
    pub maintenance: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    Rest,
    OpenApi,
    Wsdl,
}

/// A method and path pattern. Method `*` matches any method; in the path, a `*` segment matches
/// one segment and a trailing `/*` matches one or more remaining segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub method: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: ServiceId,
    pub service_type: ServiceType,
    pub description: String,
    pub disabled: bool,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSubject {
    Client(ClientId),
    Group(GlobalGroupId),
}

/// A sharing agreement: who may call what, on which legal basis, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    pub id: String,
    pub service: ServiceId,
    /// Empty: the whole service.
    pub endpoints: Vec<Endpoint>,
    pub subject: GrantSubject,
    pub legal_basis: String,
    pub valid_from: SystemTime,
    pub valid_until: Option<SystemTime>,
    pub granted_by: MemberId,
    pub granted_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalGroup {
    pub id: GlobalGroupId,
    pub description: String,
    pub members: BTreeSet<ClientId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationPartner {
    pub instance: InstanceId,
    pub signing_keys: Vec<ConfKey>,
    pub conf_urls: Vec<String>,
}

impl Endpoint {
    /// Whether this pattern allows `method` on `path` (the service-relative path, `/...`).
    pub fn matches(&self, method: &str, path: &str) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method)) && path_matches(&self.path, path)
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    if pattern == "*" || pattern == "/*" {
        return true;
    }
    let mut pat = pattern.trim_start_matches('/').split('/');
    let mut segs = path.trim_start_matches('/').split('/');
    loop {
        match (pat.next(), segs.next()) {
            (None, None) => return true,
            (Some("*"), None) => return false,
            (Some("*"), Some(_)) => {
                // A trailing `*` after a `/` matches the whole rest.
                if pat.clone().next().is_none() && pattern.ends_with("/*") {
                    return true;
                }
            }
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

impl AccessGrant {
    pub fn is_valid_at(&self, t: SystemTime) -> bool {
        self.valid_from <= t && self.valid_until.is_none_or(|until| t < until)
    }

    fn covers(&self, method: &str, path: &str) -> bool {
        self.endpoints.is_empty() || self.endpoints.iter().any(|e| e.matches(method, path))
    }
}

impl GlobalConf {
    /// Adds what a federation partner's configuration says of its own instance: its members,
    /// nodes, services and its own CA (a partner speaks for no one else). Version, expiry,
    /// grants, groups, keys and everything else stay this configuration's: a provider's
    /// instance alone decides who may call it.
    pub fn add_partner(&mut self, partner: &GlobalConf) {
        let theirs = &partner.instance;
        let mine = |i: &InstanceId| i == theirs;
        self.members.extend(
            partner.members.iter().filter(|(id, _)| mine(&id.instance)).map(|(k, v)| (k.clone(), v.clone())),
        );
        self.nodes.extend(
            partner
                .nodes
                .iter()
                .filter(|(id, _)| mine(&id.owner.instance))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        self.services.extend(
            partner
                .services
                .iter()
                .filter(|(id, _)| mine(&id.subsystem.member.instance))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        for ca in &partner.approved_cas {
            let own_ca = matches!(ca.identity(), Ok(lienthong_pki::Identity::Ca(i)) if i == *theirs);
            if own_ca && !self.approved_cas.contains(ca) {
                self.approved_cas.push(ca.clone());
            }
        }
    }

    /// A configuration with nothing in it (version 0, expired at the epoch): what a node trusts
    /// before its first real one, and a base for configurations built by hand in tests.
    pub fn empty(instance: InstanceId) -> Self {
        Self {
            instance,
            version: 0,
            generated_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH,
            member_classes: BTreeSet::new(),
            approved_cas: Vec::new(),
            members: BTreeMap::new(),
            nodes: BTreeMap::new(),
            services: BTreeMap::new(),
            grants: Vec::new(),
            global_groups: BTreeMap::new(),
            federation_partners: Vec::new(),
            registry_urls: Vec::new(),
            signing_keys: Vec::new(),
        }
    }

    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members.get(id)
    }

    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn service(&self, id: &ServiceId) -> Option<&Service> {
        self.services.get(id)
    }

    /// Whether the subsystem is registered under an active member.
    pub fn has_subsystem(&self, id: &SubsystemId) -> bool {
        self.members
            .get(&id.member)
            .is_some_and(|m| m.status == MemberStatus::Active && m.subsystems.contains_key(&id.code))
    }

    /// The nodes that host a subsystem, in a stable order.
    pub fn nodes_hosting<'a>(&'a self, subsystem: &'a SubsystemId) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.values().filter(move |n| n.hosted_subsystems.contains(subsystem))
    }

    /// Every registered node with the fingerprint its peers must present.
    pub fn registered_nodes(&self) -> impl Iterator<Item = (NodeId, Fingerprint)> + '_ {
        self.nodes.values().map(|n| (n.id.clone(), n.auth_cert))
    }

    pub fn grants_for<'a>(&'a self, service: &'a ServiceId) -> impl Iterator<Item = &'a AccessGrant> + 'a {
        self.grants.iter().filter(move |g| &g.service == service)
    }

    /// The grant that allows `client` to call `method path` on `service` at `now`, if any.
    pub fn allowing_grant<'a>(
        &'a self,
        client: &ClientId,
        service: &'a ServiceId,
        method: &str,
        path: &str,
        now: SystemTime,
    ) -> Option<&'a AccessGrant> {
        self.grants_for(service).find(|g| {
            g.is_valid_at(now)
                && g.covers(method, path)
                && match &g.subject {
                    GrantSubject::Client(c) => c == client,
                    GrantSubject::Group(group) => {
                        self.global_groups.get(group).is_some_and(|gr| gr.members.contains(client))
                    }
                }
        })
    }

    /// Converts and cross-checks a decoded wire configuration.
    pub(crate) fn from_wire(c: pb::GlobalConf) -> Result<Self, ConfError> {
        let instance = InstanceId::new(&c.instance)
            .map_err(|source| ProtoError::Id { field: "GlobalConf.instance", source })?;
        let member_classes = c
            .member_classes
            .iter()
            .map(|s| MemberClass::new(s).map_err(|source| ProtoError::Id { field: "member_classes", source }))
            .collect::<Result<_, _>>()?;
        let approved_cas = c
            .approved_cas
            .into_iter()
            .map(|der| {
                Certificate::from_der(der).map_err(|e| ConfError::Inconsistent(format!("approved CA: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let mut members = BTreeMap::new();
        for m in c.members {
            let m = member(m)?;
            if members.insert(m.id.clone(), m).is_some() {
                return Err(ConfError::Inconsistent("a member is listed twice".into()));
            }
        }
        let mut nodes = BTreeMap::new();
        for n in c.nodes {
            let n = node(n)?;
            if nodes.insert(n.id.clone(), n).is_some() {
                return Err(ConfError::Inconsistent("a node is listed twice".into()));
            }
        }
        let mut services = BTreeMap::new();
        for s in c.services {
            let s = service(s)?;
            services.insert(s.id.clone(), s);
        }
        let grants = c.grants.into_iter().map(grant).collect::<Result<_, _>>()?;
        let mut global_groups = BTreeMap::new();
        for g in c.global_groups {
            let id = required(g.id, "GlobalGroup.id")?;
            let group_members = g
                .members
                .into_iter()
                .map(|m| m.into_domain("GlobalGroup.members"))
                .collect::<Result<_, _>>()?;
            global_groups
                .insert(id.clone(), GlobalGroup { id, description: g.description, members: group_members });
        }
        let federation_partners = c
            .federation_partners
            .into_iter()
            .map(|p| {
                Ok(FederationPartner {
                    instance: InstanceId::new(&p.instance)
                        .map_err(|source| ProtoError::Id { field: "FederationPartner.instance", source })?,
                    signing_keys: p
                        .signing_keys
                        .into_iter()
                        .map(|k| ConfKey::from_wire(k, "FederationPartner.signing_keys"))
                        .collect::<Result<_, _>>()?,
                    conf_urls: p.conf_urls,
                })
            })
            .collect::<Result<_, ProtoError>>()?;
        let signing_keys = c
            .signing_keys
            .into_iter()
            .map(|k| ConfKey::from_wire(k, "GlobalConf.signing_keys"))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            instance,
            version: c.version,
            generated_at: from_millis(c.generated_at_ms),
            expires_at: from_millis(c.expires_at_ms),
            member_classes,
            approved_cas,
            members,
            nodes,
            services,
            grants,
            global_groups,
            federation_partners,
            registry_urls: c.registry_urls,
            signing_keys,
        })
    }
}

fn fingerprint(bytes: &[u8], field: &'static str) -> Result<Fingerprint, ProtoError> {
    <[u8; 32]>::try_from(bytes)
        .map(Fingerprint)
        .map_err(|_| ProtoError::Decode { message: field, reason: "not a SHA-256 digest".into() })
}

fn member(m: pb::Member) -> Result<Member, ProtoError> {
    let status = match known_enum::<pb::MemberStatus>(m.status, "Member.status")? {
        pb::MemberStatus::Active => MemberStatus::Active,
        pb::MemberStatus::Closed => MemberStatus::Closed,
        pb::MemberStatus::Superseded | pb::MemberStatus::Unspecified => MemberStatus::Superseded,
    };
    Ok(Member {
        id: required(m.id, "Member.id")?,
        name: m.name,
        status,
        status_since: from_millis(m.status_since_ms),
        superseded_by: optional(m.superseded_by, "Member.superseded_by")?,
        parent: optional(m.parent, "Member.parent")?,
        subsystems: m
            .subsystems
            .into_iter()
            .map(|s| {
                SubsystemCode::new(&s.code)
                    .map(|code| (code, s.name))
                    .map_err(|source| ProtoError::Id { field: "Subsystem.code", source })
            })
            .collect::<Result<_, _>>()?,
        signing_certs: m
            .signing_cert_sha256
            .iter()
            .map(|b| fingerprint(b, "Member.signing_cert_sha256"))
            .collect::<Result<_, _>>()?,
    })
}

fn node(n: pb::Node) -> Result<Node, ProtoError> {
    Ok(Node {
        id: required(n.id, "Node.id")?,
        addresses: n.addresses.into_iter().map(|a| NodeAddress { url: a.url, network: a.network }).collect(),
        auth_cert: fingerprint(&n.auth_cert_sha256, "Node.auth_cert_sha256")?,
        hosted_subsystems: n
            .hosted_subsystems
            .into_iter()
            .map(|s| s.into_domain("Node.hosted_subsystems"))
            .collect::<Result<_, _>>()?,
        maintenance: n.maintenance,
    })
}

fn endpoints(e: Vec<pb::Endpoint>) -> Vec<Endpoint> {
    e.into_iter().map(|e| Endpoint { method: e.method, path: e.path }).collect()
}

fn service(s: pb::Service) -> Result<Service, ProtoError> {
    let service_type = match known_enum::<pb::ServiceType>(s.r#type, "Service.type")? {
        pb::ServiceType::Rest => ServiceType::Rest,
        pb::ServiceType::Openapi => ServiceType::OpenApi,
        pb::ServiceType::Wsdl | pb::ServiceType::Unspecified => ServiceType::Wsdl,
    };
    Ok(Service {
        id: required(s.id, "Service.id")?,
        service_type,
        description: s.description,
        disabled: s.disabled,
        endpoints: endpoints(s.endpoints),
    })
}

fn grant(g: pb::AccessGrant) -> Result<AccessGrant, ProtoError> {
    let subject = match g.subject.ok_or(ProtoError::Missing { field: "AccessGrant.subject" })? {
        pb::access_grant::Subject::Client(c) => GrantSubject::Client(c.into_domain("AccessGrant.client")?),
        pb::access_grant::Subject::Group(gr) => GrantSubject::Group(gr.into_domain("AccessGrant.group")?),
    };
    Ok(AccessGrant {
        id: g.grant_id,
        service: required(g.service, "AccessGrant.service")?,
        endpoints: endpoints(g.endpoints),
        subject,
        legal_basis: g.legal_basis,
        valid_from: from_millis(g.valid_from_ms),
        valid_until: optional_millis(g.valid_until_ms),
        granted_by: required(g.granted_by, "AccessGrant.granted_by")?,
        granted_at: from_millis(g.granted_at_ms),
    })
}
