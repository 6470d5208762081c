//! What an audit query selects ([`Filter`]), parsed from text with errors that name the filter
//! and say what is accepted, and matched against decoded records.

use std::fmt;
use std::str::FromStr;

use lienthong_proto::convert::IntoDomain;
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::{ClientId, Fault, ServiceId};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::QueryError;

/// Longest filter value accepted, in bytes. Ids are at most a few hundred characters; this only
/// keeps arbitrary input out of index lookups and error messages.
const MAX_VALUE_LEN: usize = 1024;

/// Which outcomes a status filter selects. Only records that carry an outcome (a response or a
/// refusal: an HTTP status or a fault) match; a request record has none and never matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// A 2xx status and no fault.
    Ok,
    /// A fault, or a status outside 2xx.
    Failed,
    /// Refused for lack of an access grant (`server.serverproxy.access_denied`).
    Denied,
    /// Exactly this fault (older CamelCase spellings in records match too).
    Fault(Fault),
    /// Exactly this HTTP status.
    Http(u16),
}

impl StatusFilter {
    /// Whether `r` has this outcome.
    pub fn matches(&self, r: &pb::LogRecord) -> bool {
        let fault = r.fault.as_ref().filter(|f| !f.code.is_empty());
        if r.status == 0 && fault.is_none() {
            return false;
        }
        let success = (200..300).contains(&r.status) && fault.is_none();
        match self {
            StatusFilter::Ok => success,
            StatusFilter::Failed => !success,
            StatusFilter::Denied => {
                fault.is_some_and(|f| Fault::from_code(&f.code) == Some(Fault::AccessDenied))
            }
            StatusFilter::Fault(want) => fault.is_some_and(|f| Fault::from_code(&f.code) == Some(*want)),
            StatusFilter::Http(code) => r.status == u32::from(*code),
        }
    }
}

impl FromStr for StatusFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ok" => return Ok(StatusFilter::Ok),
            "failed" => return Ok(StatusFilter::Failed),
            "denied" => return Ok(StatusFilter::Denied),
            _ => {}
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u16>() {
                Ok(code @ 100..=599) => Ok(StatusFilter::Http(code)),
                _ => Err(format!("HTTP status {s} is outside 100-599")),
            };
        }
        Fault::from_code(s).map(StatusFilter::Fault).ok_or_else(|| {
            format!(
                "unknown status {s:?}: expected ok, failed, denied, an HTTP status (100-599) or a \
                 fault code such as server.serverproxy.access_denied"
            )
        })
    }
}

impl fmt::Display for StatusFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusFilter::Ok => f.write_str("ok"),
            StatusFilter::Failed => f.write_str("failed"),
            StatusFilter::Denied => f.write_str("denied"),
            StatusFilter::Fault(fault) => fault.fmt(f),
            StatusFilter::Http(code) => code.fmt(f),
        }
    }
}

/// What an audit query selects. Every field left `None` selects everything; the fields given
/// must all hold. Build it by hand (typed values) or from text with [`Filter::set`] /
/// [`Filter::from_pairs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Logged at or after this time (ms since the Unix epoch).
    pub from_ms: Option<i64>,
    /// Logged before this time (exclusive).
    pub until_ms: Option<i64>,
    pub client: Option<ClientId>,
    pub service: Option<ServiceId>,
    pub status: Option<StatusFilter>,
    /// The exchange (`X-Road-Id`): its request and response records.
    pub message_id: Option<String>,
    /// The end user (`X-Road-UserId`) the information system named.
    pub user_id: Option<String>,
    pub direction: Option<pb::Direction>,
    pub role: Option<pb::Role>,
}

/// The filter names accepted by [`Filter::set`], as the CLI and the API spell them.
pub const FILTER_NAMES: &[&str] =
    &["from", "until", "client", "service", "status", "exchange", "user", "direction", "role"];

fn invalid(field: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError::InvalidFilter { field, reason: reason.into() }
}

/// A free-text value (message id, user id): not empty, bounded, no control characters.
fn text_value(field: &'static str, value: &str) -> Result<String, QueryError> {
    if value.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid(
            field,
            format!("is {} bytes long, at most {MAX_VALUE_LEN} are allowed", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(field, format!("contains the control character {c:?}")));
    }
    Ok(value.to_owned())
}

/// Parses a time for `--from` / `--until`: RFC 3339 with an offset (`2026-11-01T00:00:00Z`,
/// `2026-11-01T07:00:00+07:00`, fractions allowed) or a date (`2026-11-01`, midnight UTC).
/// Returns milliseconds since the Unix epoch.
pub fn parse_time(field: &'static str, value: &str) -> Result<i64, QueryError> {
    let parsed = if value.len() == 10 && !value.contains('T') {
        // A date alone: midnight UTC, parsed as the RFC 3339 time it stands for.
        OffsetDateTime::parse(&format!("{value}T00:00:00Z"), &Rfc3339)
    } else {
        OffsetDateTime::parse(value, &Rfc3339)
    };
    let t = parsed.map_err(|e| {
        // The most common slip: a local time without an offset.
        let hint = if OffsetDateTime::parse(&format!("{value}Z"), &Rfc3339).is_ok() {
            " (it has no offset: add Z for UTC, or one such as +07:00)"
        } else {
            ""
        };
        invalid(
            field,
            format!(
                "{:?} is not a time{hint}: {e}; expected RFC 3339 such as 2026-11-01T00:00:00Z, or a \
                 date such as 2026-11-01",
                truncate(value)
            ),
        )
    })?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000))
        .map_err(|_| invalid(field, "is out of range"))
}

fn truncate(value: &str) -> &str {
    match value.char_indices().nth(64) {
        Some((at, _)) => &value[..at],
        None => value,
    }
}

impl Filter {
    /// Sets one filter from text, by its name in [`FILTER_NAMES`]. A value that does not parse
    /// is an [`QueryError::InvalidFilter`] naming the filter and what it accepts.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), QueryError> {
        if value.len() > MAX_VALUE_LEN {
            let field = FILTER_NAMES.iter().find(|n| **n == name).copied().unwrap_or("filter");
            return Err(invalid(
                field,
                format!("is {} bytes long, at most {MAX_VALUE_LEN} are allowed", value.len()),
            ));
        }
        match name {
            "from" => self.from_ms = Some(parse_time("from", value)?),
            "until" => self.until_ms = Some(parse_time("until", value)?),
            "client" => {
                self.client = Some(value.parse().map_err(|e| {
                    invalid(
                        "client",
                        format!(
                            "{:?} is not a client id (INSTANCE/CLASS/MEMBER[/SUBSYSTEM]): {e}",
                            truncate(value)
                        ),
                    )
                })?);
            }
            "service" => {
                self.service = Some(value.parse().map_err(|e| {
                    invalid(
                        "service",
                        format!(
                            "{:?} is not a service id (INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE): {e}",
                            truncate(value)
                        ),
                    )
                })?);
            }
            "status" => self.status = Some(value.parse().map_err(|e: String| invalid("status", e))?),
            "exchange" => self.message_id = Some(text_value("exchange", value)?),
            "user" => self.user_id = Some(text_value("user", value)?),
            "direction" => {
                self.direction = Some(match value.to_ascii_lowercase().as_str() {
                    "request" => pb::Direction::Request,
                    "response" => pb::Direction::Response,
                    _ => {
                        return Err(invalid(
                            "direction",
                            format!("{:?}: expected request or response", truncate(value)),
                        ));
                    }
                });
            }
            "role" => {
                self.role = Some(match value.to_ascii_lowercase().as_str() {
                    "consumer" => pb::Role::Consumer,
                    "provider" => pb::Role::Provider,
                    _ => {
                        return Err(invalid(
                            "role",
                            format!("{:?}: expected consumer or provider", truncate(value)),
                        ));
                    }
                });
            }
            _ => {
                return Err(QueryError::InvalidFilter {
                    field: "filter",
                    reason: format!(
                        "unknown filter {:?}; known: {}",
                        truncate(name),
                        FILTER_NAMES.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// A filter from `(name, value)` pairs (an API query string, say). A name given twice is
    /// refused rather than one value silently winning.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, QueryError> {
        let mut filter = Filter::default();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            if seen.contains(&name) {
                let field = FILTER_NAMES.iter().find(|n| **n == name).copied().unwrap_or("filter");
                return Err(invalid(field, "is given more than once"));
            }
            seen.push(name);
            filter.set(name, value)?;
        }
        filter.check()?;
        Ok(filter)
    }

    /// Checks what single fields cannot: the time range is not empty or reversed, and typed
    /// text values are well formed (for filters built by hand).
    pub fn check(&self) -> Result<(), QueryError> {
        if let (Some(from), Some(until)) = (self.from_ms, self.until_ms)
            && until <= from
        {
            return Err(invalid("until", "must be later than from (the range is [from, until))"));
        }
        if let Some(id) = &self.message_id {
            text_value("exchange", id)?;
        }
        if let Some(user) = &self.user_id {
            text_value("user", user)?;
        }
        Ok(())
    }

    pub(crate) fn has_time(&self) -> bool {
        self.from_ms.is_some() || self.until_ms.is_some()
    }

    pub(crate) fn in_time(&self, logged_at_ms: i64) -> bool {
        self.from_ms.is_none_or(|f| logged_at_ms >= f) && self.until_ms.is_none_or(|u| logged_at_ms < u)
    }

    /// The predicates no index answers: status, user, direction, role.
    pub(crate) fn matches_unindexed(&self, r: &pb::LogRecord) -> bool {
        self.status.is_none_or(|s| s.matches(r))
            && self.user_id.as_ref().is_none_or(|u| *u == r.user_id)
            && self.direction.is_none_or(|d| r.direction == d as i32)
            && self.role.is_none_or(|x| r.role == x as i32)
    }

    /// The indexed predicates (exchange, client, service), checked on the record itself for
    /// candidates that did not come from those indexes.
    pub(crate) fn matches_keys(&self, r: &pb::LogRecord) -> bool {
        self.message_id.as_ref().is_none_or(|m| *m == r.message_id)
            && self
                .client
                .as_ref()
                .is_none_or(|c| id_string(r.client.clone()).is_some_and(|s| s == c.to_string()))
            && self
                .service
                .as_ref()
                .is_none_or(|c| id_string(r.service.clone()).is_some_and(|s| s == c.to_string()))
    }

    /// A digest of the filter's canonical form, so a cursor can be tied to the filter it was
    /// made for. Each field is tagged and length-prefixed, so no two filters share an encoding.
    pub(crate) fn digest(&self) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(b"lienthong.audit.query.filter.v1\0");
        let mut field = |tag: u8, value: Option<String>| {
            if let Some(v) = value {
                h.update([tag]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
        };
        field(1, self.from_ms.map(|v| v.to_string()));
        field(2, self.until_ms.map(|v| v.to_string()));
        field(3, self.client.as_ref().map(ToString::to_string));
        field(4, self.service.as_ref().map(ToString::to_string));
        field(5, self.status.map(|s| s.to_string()));
        field(6, self.message_id.clone());
        field(7, self.user_id.clone());
        field(8, self.direction.map(|d| (d as i32).to_string()));
        field(9, self.role.map(|r| (r as i32).to_string()));
        let full: [u8; 32] = h.finalize().into();
        let mut out = [0; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

/// An id field of a record in X-Road string form, as the store's indexes key it.
pub(crate) fn id_string<T: IntoDomain>(v: Option<T>) -> Option<String>
where
    T::Domain: fmt::Display,
{
    v.and_then(|v| v.into_domain("id").ok()).map(|d| d.to_string())
}

/// Decodes `%XX` and `+` in a query-string component; `None` if it is not valid UTF-8 after.
pub fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod decode_tests {
    use super::decode_component;

    #[test]
    fn query_components_decode() {
        assert_eq!(decode_component("VN%2FGOV%2F000.00.00.G01").as_deref(), Some("VN/GOV/000.00.00.G01"));
        assert_eq!(decode_component("a+b").as_deref(), Some("a b"));
        assert_eq!(decode_component("%ZZ"), None);
        assert_eq!(decode_component("%C3%28"), None);
        assert_eq!(decode_component("%4"), None);
    }
}
