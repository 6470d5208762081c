//! The gateway's own error responses, as X-Road clients expect them: status 400 for `client.*`,
//! 500 for `server.*`, `X-Road-Error: <code>`, and a JSON (or XML when asked) body with the code,
//! a message and a `detail` UUID that also appears in the node's log.

use lienthong_proto::types::v1 as pb;
use lienthong_types::Fault;
use serde::Serialize;

use crate::Reject;

/// A rendered gateway error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub status: u16,
    /// The `X-Road-Error` header value.
    pub code: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct Json<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    detail: &'a str,
}

/// Whether the `Accept` header asks for XML (`text/xml`, `application/xml` or any `text/*`) rather
/// than JSON.
fn wants_xml(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .any(|t| t == "application/xml" || t.starts_with("text/"))
            && !a.to_ascii_lowercase().contains("application/json")
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Renders a fault raised by this node, or relayed from the provider node (`code` then comes from
/// the wire and is used as given).
pub fn render_code(code: &str, status: u16, message: &str, detail: &str, accept: Option<&str>) -> ErrorBody {
    let (content_type, body) = if wants_xml(accept) {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><error><type>{}</type><message>{}</message><detail>{}</detail></error>",
            xml_escape(code),
            xml_escape(message),
            xml_escape(detail)
        );
        ("text/xml;charset=utf-8", xml.into_bytes())
    } else {
        let json = serde_json::to_vec(&Json { kind: code, message, detail }).unwrap_or_default();
        ("application/json;charset=utf-8", json)
    };
    ErrorBody { status, code: code.to_owned(), content_type, body }
}

/// Renders one of this gateway's faults.
pub fn render(reject: &Reject, detail: &str, accept: Option<&str>) -> ErrorBody {
    render_code(&reject.fault.code(), reject.fault.http_status(), &reject.message, detail, accept)
}

/// The fault as carried in envelopes and log records.
pub fn to_pb(reject: &Reject, detail: &str) -> pb::Fault {
    pb::Fault { code: reject.fault.code(), message: reject.message.clone(), detail: detail.to_owned() }
}

/// The status for a relayed fault code: 400 for `client.*`, 500 otherwise (X-Road's rule).
pub fn status_for_code(code: &str) -> u16 {
    match Fault::from_code(code) {
        Some(f) => f.http_status(),
        None if code.to_ascii_lowercase().starts_with("client.") => 400,
        None => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_by_default_xml_when_asked() {
        let r = Reject::new(Fault::AccessDenied, "no grant <for> you");
        let json = render(&r, "d-1", None);
        assert_eq!(json.status, 500);
        assert_eq!(json.code, "server.serverproxy.access_denied");
        let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
        assert_eq!(v["type"], "server.serverproxy.access_denied");
        assert_eq!(v["detail"], "d-1");
        let xml = render(&r, "d-1", Some("text/xml"));
        let text = String::from_utf8(xml.body).unwrap();
        assert!(text.contains("<type>server.serverproxy.access_denied</type>"), "{text}");
        assert!(text.contains("no grant &lt;for&gt; you"), "{text}");
        assert_eq!(render(&Reject::new(Fault::BadRequest, "x"), "d", Some("application/json")).status, 400);
        assert!(!wants_xml(Some("application/json, text/plain")));
    }

    #[test]
    fn relayed_codes_keep_their_status_rule() {
        assert_eq!(status_for_code("server.serverproxy.access_denied"), 500);
        assert_eq!(status_for_code("Client.Something"), 400);
    }
}
