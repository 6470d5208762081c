//! Conversions between wire messages and domain types.
//!
//! Domain -> wire is infallible (`From`). Wire -> domain is where untrusted bytes become typed
//! values: every identifier is re-validated and a missing field is an error naming the field.

use lienthong_types::{ClientId, GlobalGroupId, IdError, MemberId, NodeId, ServiceId, SubsystemId};

use crate::types::v1 as pb;

/// A wire message could not become a domain value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtoError {
    #[error("{field} is missing")]
    Missing { field: &'static str },
    #[error("{field}: {source}")]
    Id {
        field: &'static str,
        #[source]
        source: IdError,
    },
    #[error("{field}: unknown value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("cannot decode {message}: {reason}")]
    Decode { message: &'static str, reason: String },
}

/// Decodes a message from untrusted bytes, naming it in the error.
pub fn decode<M: prost::Message + Default>(message: &'static str, bytes: &[u8]) -> Result<M, ProtoError> {
    M::decode(bytes).map_err(|e| ProtoError::Decode { message, reason: e.to_string() })
}

/// A wire value that converts into a validated domain value. `field` names it in errors.
pub trait IntoDomain {
    type Domain;
    fn into_domain(self, field: &'static str) -> Result<Self::Domain, ProtoError>;
}

/// Converts a message field that must be present.
pub fn required<T: IntoDomain>(value: Option<T>, field: &'static str) -> Result<T::Domain, ProtoError> {
    value.ok_or(ProtoError::Missing { field })?.into_domain(field)
}

/// Converts a message field that may be absent.
pub fn optional<T: IntoDomain>(
    value: Option<T>,
    field: &'static str,
) -> Result<Option<T::Domain>, ProtoError> {
    value.map(|v| v.into_domain(field)).transpose()
}

fn code<T: lienthong_types::Code>(s: &str, field: &'static str) -> Result<T, ProtoError> {
    T::new(s).map_err(|source| ProtoError::Id { field, source })
}

impl IntoDomain for pb::MemberId {
    type Domain = MemberId;
    fn into_domain(self, field: &'static str) -> Result<MemberId, ProtoError> {
        Ok(MemberId::new(
            code(&self.instance, field)?,
            code(&self.member_class, field)?,
            code(&self.member_code, field)?,
        ))
    }
}

impl IntoDomain for pb::SubsystemId {
    type Domain = SubsystemId;
    fn into_domain(self, field: &'static str) -> Result<SubsystemId, ProtoError> {
        let member = required(self.member, field)?;
        Ok(member.subsystem(code(&self.subsystem_code, field)?))
    }
}

impl IntoDomain for pb::ClientId {
    type Domain = ClientId;
    fn into_domain(self, field: &'static str) -> Result<ClientId, ProtoError> {
        match self.kind.ok_or(ProtoError::Missing { field })? {
            pb::client_id::Kind::Member(m) => m.into_domain(field).map(ClientId::Member),
            pb::client_id::Kind::Subsystem(s) => s.into_domain(field).map(ClientId::Subsystem),
        }
    }
}

impl IntoDomain for pb::ServiceId {
    type Domain = ServiceId;
    fn into_domain(self, field: &'static str) -> Result<ServiceId, ProtoError> {
        let subsystem = required(self.subsystem, field)?;
        Ok(subsystem.service(code(&self.service_code, field)?))
    }
}

impl IntoDomain for pb::NodeId {
    type Domain = NodeId;
    fn into_domain(self, field: &'static str) -> Result<NodeId, ProtoError> {
        let owner = required(self.owner, field)?;
        Ok(owner.node(code(&self.server_code, field)?))
    }
}

impl IntoDomain for pb::GlobalGroupId {
    type Domain = GlobalGroupId;
    fn into_domain(self, field: &'static str) -> Result<GlobalGroupId, ProtoError> {
        Ok(GlobalGroupId { instance: code(&self.instance, field)?, code: code(&self.group_code, field)? })
    }
}

impl From<&MemberId> for pb::MemberId {
    fn from(m: &MemberId) -> Self {
        Self {
            instance: m.instance.to_string(),
            member_class: m.class.to_string(),
            member_code: m.code.to_string(),
        }
    }
}

impl From<&SubsystemId> for pb::SubsystemId {
    fn from(s: &SubsystemId) -> Self {
        Self { member: Some((&s.member).into()), subsystem_code: s.code.to_string() }
    }
}

impl From<&ClientId> for pb::ClientId {
    fn from(c: &ClientId) -> Self {
        let kind = match c {
            ClientId::Member(m) => pb::client_id::Kind::Member(m.into()),
            ClientId::Subsystem(s) => pb::client_id::Kind::Subsystem(s.into()),
        };
        Self { kind: Some(kind) }
    }
}

impl From<&ServiceId> for pb::ServiceId {
    fn from(s: &ServiceId) -> Self {
        Self { subsystem: Some((&s.subsystem).into()), service_code: s.code.to_string() }
    }
}

impl From<&NodeId> for pb::NodeId {
    fn from(n: &NodeId) -> Self {
        Self { owner: Some((&n.owner).into()), server_code: n.code.to_string() }
    }
}

impl From<&GlobalGroupId> for pb::GlobalGroupId {
    fn from(g: &GlobalGroupId) -> Self {
        Self { instance: g.instance.to_string(), group_code: g.code.to_string() }
    }
}

/// Reads a proto enum field, rejecting values this version does not know and the unspecified 0.
pub fn known_enum<E: TryFrom<i32>>(value: i32, field: &'static str) -> Result<E, ProtoError> {
    if value == 0 {
        return Err(ProtoError::Missing { field });
    }
    E::try_from(value).map_err(|_| ProtoError::UnknownEnum { field, value })
}
