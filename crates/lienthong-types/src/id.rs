//! X-Road identifiers: parsed and validated once, printed back in the X-Road forms.
//!
//! An identifier is a `/`-separated list of codes. Each code is percent-decoded separately (so
//! `%2F` inside a segment never splits it), then checked against X-Road's character set
//! `A-Z a-z 0-9 ' ( ) + , - . = ?` and a length limit ([`MAX_CODE_LEN`]). Printing gives the plain X-Road form used in
//! headers (`VN/GOV/000.00.00.G22/dancu`); [`ServiceId::r1_path`] gives the URL path form, where
//! `?` must be escaped.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which part of an identifier an [`IdError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdPart {
    /// The identifier as a whole (for example its number of segments).
    Identifier,
    Instance,
    MemberClass,
    MemberCode,
    SubsystemCode,
    ServiceCode,
    ServerCode,
    GroupCode,
}

impl fmt::Display for IdPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdPart::Identifier => "identifier",
            IdPart::Instance => "instance",
            IdPart::MemberClass => "member class",
            IdPart::MemberCode => "member code",
            IdPart::SubsystemCode => "subsystem code",
            IdPart::ServiceCode => "service code",
            IdPart::ServerCode => "server code",
            IdPart::GroupCode => "global group code",
        })
    }
}

/// Why a part was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdErrorKind {
    Empty,
    TooLong {
        len: usize,
        max: usize,
    },
    /// A character outside the X-Road set; `at` is its character position in the decoded code.
    InvalidChar {
        ch: char,
        at: usize,
    },
    /// `%` not followed by two hex digits; `at` is the byte offset in the raw segment.
    BadPercentEncoding {
        at: usize,
    },
    /// The percent-decoded bytes are not UTF-8.
    InvalidUtf8,
    SegmentCount {
        expected: &'static str,
        found: usize,
    },
}

impl fmt::Display for IdErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdErrorKind::Empty => f.write_str("is empty"),
            IdErrorKind::TooLong { len, max } => {
                write!(f, "is {len} characters long, at most {max} are allowed")
            }
            // `{:?}` escapes control characters, so nothing raw reaches a log or a response.
            IdErrorKind::InvalidChar { ch, at } => write!(
                f,
                "character {ch:?} at position {at} is not allowed (allowed: A-Z a-z 0-9 ' ( ) + , - . = ?)"
            ),
            IdErrorKind::BadPercentEncoding { at } => {
                write!(f, "bad percent-encoding at byte {at}")
            }
            IdErrorKind::InvalidUtf8 => f.write_str("is not valid UTF-8 once percent-decoded"),
            IdErrorKind::SegmentCount { expected, found } => {
                write!(f, "has {found} segments, expected {expected}")
            }
        }
    }
}

/// An identifier or one of its parts was rejected: `part` says which, `kind` why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part} {kind}")]
pub struct IdError {
    pub part: IdPart,
    pub kind: IdErrorKind,
}

impl IdError {
    fn new(part: IdPart, kind: IdErrorKind) -> Self {
        Self { part, kind }
    }
}

/// The longest code accepted in any part. X-Road itself stores every code in 255 characters;
/// accepting the same keeps existing X-Road identifiers valid here.
pub const MAX_CODE_LEN: usize = 255;

/// True for the characters X-Road allows in an identifier code.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '\'' | '(' | ')' | '+' | ',' | '-' | '.' | '=' | '?')
}

fn validate(code: &str, part: IdPart) -> Result<(), IdError> {
    if code.is_empty() {
        return Err(IdError::new(part, IdErrorKind::Empty));
    }
    if let Some((at, ch)) = code.chars().enumerate().find(|&(_, c)| !is_id_char(c)) {
        return Err(IdError::new(part, IdErrorKind::InvalidChar { ch, at }));
    }
    // All allowed characters are ASCII, so bytes == characters here.
    if code.len() > MAX_CODE_LEN {
        return Err(IdError::new(part, IdErrorKind::TooLong { len: code.len(), max: MAX_CODE_LEN }));
    }
    Ok(())
}

/// Percent-decodes one segment. Decoded bytes must be UTF-8; validation happens afterwards.
fn percent_decode(raw: &str, part: IdPart) -> Result<String, IdError> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |k: usize| bytes.get(k).and_then(|&b| (b as char).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => {
                    return Err(IdError::new(part, IdErrorKind::BadPercentEncoding { at: i }));
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| IdError::new(part, IdErrorKind::InvalidUtf8))
}

/// Writes a code for a URL path: `?` would start the query, so it is escaped.
fn write_path_segment(out: &mut String, code: &str) {
    for c in code.chars() {
        match c {
            '?' => out.push_str("%3F"),
            c => out.push(c),
        }
    }
}

fn parse_segment<T: Code>(raw: &str) -> Result<T, IdError> {
    let decoded = percent_decode(raw, T::PART)?;
    T::new(&decoded)
}

fn split_exact<'a, const N: usize>(s: &'a str, expected: &'static str) -> Result<[&'a str; N], IdError> {
    let parts: Vec<&str> = s.split('/').collect();
    <[&str; N]>::try_from(parts).map_err(|parts| {
        IdError::new(IdPart::Identifier, IdErrorKind::SegmentCount { expected, found: parts.len() })
    })
}

/// A single validated code (one segment of an identifier).
pub trait Code: Sized + AsRef<str> {
    const PART: IdPart;
    /// Validates a code that is already percent-decoded.
    fn new(code: &str) -> Result<Self, IdError>;
}

macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident, $part:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Box<str>);

        impl $name {
            /// Validates a plain (already decoded) code.
            pub fn new(code: &str) -> Result<Self, IdError> {
                <Self as Code>::new(code)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Code for $name {
            const PART: IdPart = $part;

            fn new(code: &str) -> Result<Self, IdError> {
                validate(code, $part)?;
                Ok(Self(code.into()))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_segment(s)
            }
        }

        string_serde!($name);
    };
}

macro_rules! string_serde {
    ($name:ident) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

code_type!(
    /// An X-Road instance, such as `VN` (national) or a provincial instance.
    InstanceId, IdPart::Instance
);
code_type!(
    /// A member class: `GOV` for state bodies, `COM` for companies.
    MemberClass, IdPart::MemberClass
);
code_type!(
    /// A member code: the agency's electronic code, `000.00.00.G22` or `G09.20`.
    MemberCode, IdPart::MemberCode
);
code_type!(
    /// A subsystem code: one information system of a member.
    SubsystemCode, IdPart::SubsystemCode
);
code_type!(
    /// A service code, the last segment of a service id.
    ServiceCode, IdPart::ServiceCode
);
code_type!(
    /// A node's (security server's) code, unique within its owner member.
    ServerCode, IdPart::ServerCode
);
code_type!(
    /// A global group's code.
    GroupCode, IdPart::GroupCode
);

/// `INSTANCE/CLASS/MEMBER`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    pub instance: InstanceId,
    pub class: MemberClass,
    pub code: MemberCode,
}

/// `INSTANCE/CLASS/MEMBER/SUBSYSTEM`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubsystemId {
    pub member: MemberId,
    pub code: SubsystemCode,
}

/// A client of an exchange: a member or one of its subsystems (3 or 4 segments).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientId {
    Member(MemberId),
    Subsystem(SubsystemId),
}

/// `INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICECODE`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub subsystem: SubsystemId,
    pub code: ServiceCode,
}

/// A node (security server): `INSTANCE/CLASS/MEMBER/SERVERCODE`, the member being its owner.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    pub owner: MemberId,
    pub code: ServerCode,
}

/// A global group: `INSTANCE/GROUPCODE`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlobalGroupId {
    pub instance: InstanceId,
    pub code: GroupCode,
}

/// X-Road's `object_type` names, as used in metaservice JSON and in proto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ObjectType {
    Member,
    Subsystem,
    Service,
    Server,
    GlobalGroup,
}

impl MemberId {
    pub fn new(instance: InstanceId, class: MemberClass, code: MemberCode) -> Self {
        Self { instance, class, code }
    }

    pub fn subsystem(&self, code: SubsystemCode) -> SubsystemId {
        SubsystemId { member: self.clone(), code }
    }

    pub fn node(&self, code: ServerCode) -> NodeId {
        NodeId { owner: self.clone(), code }
    }

    fn from_segments(i: &str, c: &str, m: &str) -> Result<Self, IdError> {
        Ok(Self { instance: parse_segment(i)?, class: parse_segment(c)?, code: parse_segment(m)? })
    }
}

impl SubsystemId {
    pub fn service(&self, code: ServiceCode) -> ServiceId {
        ServiceId { subsystem: self.clone(), code }
    }
}

impl ClientId {
    pub fn member(&self) -> &MemberId {
        match self {
            ClientId::Member(m) => m,
            ClientId::Subsystem(s) => &s.member,
        }
    }

    pub fn subsystem(&self) -> Option<&SubsystemId> {
        match self {
            ClientId::Member(_) => None,
            ClientId::Subsystem(s) => Some(s),
        }
    }

    pub fn object_type(&self) -> ObjectType {
        match self {
            ClientId::Member(_) => ObjectType::Member,
            ClientId::Subsystem(_) => ObjectType::Subsystem,
        }
    }
}

impl From<MemberId> for ClientId {
    fn from(m: MemberId) -> Self {
        ClientId::Member(m)
    }
}

impl From<SubsystemId> for ClientId {
    fn from(s: SubsystemId) -> Self {
        ClientId::Subsystem(s)
    }
}

impl ServiceId {
    /// The r1 path that calls this service: `/r1/I/C/M/S/CODE`, `?` escaped in every segment.
    pub fn r1_path(&self) -> String {
        let m = &self.subsystem.member;
        let mut out = String::from("/r1");
        for code in [
            m.instance.as_str(),
            m.class.as_str(),
            m.code.as_str(),
            self.subsystem.code.as_str(),
            self.code.as_str(),
        ] {
            out.push('/');
            write_path_segment(&mut out, code);
        }
        out
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.instance, self.class, self.code)
    }
}

impl fmt::Display for SubsystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.member, self.code)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::Member(m) => m.fmt(f),
            ClientId::Subsystem(s) => s.fmt(f),
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.subsystem, self.code)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.code)
    }
}

impl fmt::Display for GlobalGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.instance, self.code)
    }
}

macro_rules! debug_as_display {
    ($($name:ident),*) => {$(
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }
        string_serde!($name);
    )*};
}
debug_as_display!(MemberId, SubsystemId, ClientId, ServiceId, NodeId, GlobalGroupId);

impl FromStr for MemberId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let [i, c, m] = split_exact(s, "3 (INSTANCE/CLASS/MEMBER)")?;
        Self::from_segments(i, c, m)
    }
}

impl FromStr for SubsystemId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let [i, c, m, sub] = split_exact(s, "4 (INSTANCE/CLASS/MEMBER/SUBSYSTEM)")?;
        Ok(Self { member: MemberId::from_segments(i, c, m)?, code: parse_segment(sub)? })
    }
}

impl FromStr for ClientId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s.split('/').count() {
            3 => s.parse().map(ClientId::Member),
            4 => s.parse().map(ClientId::Subsystem),
            found => Err(IdError::new(
                IdPart::Identifier,
                IdErrorKind::SegmentCount { expected: "3 or 4 (INSTANCE/CLASS/MEMBER[/SUBSYSTEM])", found },
            )),
        }
    }
}

impl FromStr for ServiceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let [i, c, m, sub, svc] = split_exact(s, "5 (INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICECODE)")?;
        Self::from_segments([i, c, m, sub, svc])
    }
}

impl ServiceId {
    fn from_segments([i, c, m, sub, svc]: [&str; 5]) -> Result<Self, IdError> {
        let member = MemberId::from_segments(i, c, m)?;
        Ok(Self { subsystem: SubsystemId { member, code: parse_segment(sub)? }, code: parse_segment(svc)? })
    }
}

impl FromStr for NodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let [i, c, m, srv] = split_exact(s, "4 (INSTANCE/CLASS/MEMBER/SERVERCODE)")?;
        Ok(Self { owner: MemberId::from_segments(i, c, m)?, code: parse_segment(srv)? })
    }
}

impl FromStr for GlobalGroupId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let [i, g] = split_exact(s, "2 (INSTANCE/GROUPCODE)")?;
        Ok(Self { instance: parse_segment(i)?, code: parse_segment(g)? })
    }
}

/// The target of an X-Road REST call, parsed from `/r1/I/C/M/S/SERVICE[/rest][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct R1Target {
    pub service: ServiceId,
    /// Everything after the service code, as sent (still percent-encoded); empty or starts with `/`.
    pub rest: String,
    /// The query string without its `?`, as sent.
    pub query: Option<String>,
}

/// Why an r1 request path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum R1PathError {
    #[error("the path must start with /r1/ (X-Road REST protocol version r1)")]
    NotR1,
    #[error("protocol version {0:?} is not supported, only r1")]
    UnsupportedVersion(String),
    #[error(
        "the path has {found} identifier segments after /r1/, expected 5 (INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICECODE)"
    )]
    TooFewSegments { found: usize },
    #[error("service {0}")]
    Id(#[from] IdError),
}

impl R1Target {
    /// Parses a request target (path and optional query) in the r1 form.
    pub fn parse(path_and_query: &str) -> Result<Self, R1PathError> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (path_and_query, None),
        };
        let Some(after_slash) = path.strip_prefix('/') else {
            return Err(R1PathError::NotR1);
        };
        let (version, ids) = after_slash.split_once('/').unwrap_or((after_slash, ""));
        if version != "r1" {
            let looks_like_version = version.len() <= 8
                && version.starts_with('r')
                && version[1..].bytes().all(|b| b.is_ascii_digit());
            return Err(if looks_like_version && version.len() > 1 {
                R1PathError::UnsupportedVersion(version.to_owned())
            } else {
                R1PathError::NotR1
            });
        }
        let mut segments = ids.splitn(6, '/');
        let mut ids = [""; 5];
        for (n, slot) in ids.iter_mut().enumerate() {
            *slot = segments.next().ok_or(R1PathError::TooFewSegments { found: n })?;
        }
        let service = ServiceId::from_segments(ids)?;
        let rest = segments.next().map(|r| format!("/{r}")).unwrap_or_default();
        Ok(Self { service, rest, query })
    }

    /// Prints the target back as a request path and query.
    pub fn to_path_and_query(&self) -> String {
        let mut out = self.service.r1_path();
        out.push_str(&self.rest);
        if let Some(q) = &self.query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}
