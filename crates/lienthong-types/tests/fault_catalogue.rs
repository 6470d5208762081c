//! The fault catalogue is a public contract: this snapshot makes any change a reviewed diff.
//! After a deliberate change, regenerate with `LIENTHONG_BLESS=1 cargo test -p lienthong-types`.

use std::collections::HashSet;

use lienthong_types::{Fault, Side};

const SNAPSHOT: &str = "tests/snapshots/fault-catalogue.txt";

fn render() -> String {
    let mut out = String::from("# code | side | http status | meaning\n");
    for f in Fault::ALL {
        out.push_str(&format!("{} | {} | {} | {}\n", f.code(), f.side(), f.http_status(), f.meaning()));
    }
    out
}

#[test]
fn catalogue_matches_snapshot() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SNAPSHOT);
    let actual = render();
    if std::env::var_os("LIENTHONG_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "fault catalogue changed; review and bless it.\n--- snapshot\n{expected}\n+++ actual\n{actual}"
    );
}

#[test]
fn codes_are_unique_lower_case_and_prefixed_by_side() {
    let mut seen = HashSet::new();
    for f in Fault::ALL {
        let code = f.code();
        assert!(seen.insert(code.clone()), "duplicate {code}");
        assert_eq!(code, code.to_lowercase());
        assert!(code.starts_with(f.side().prefix()));
        assert_eq!(f.http_status(), if f.side() == Side::Client { 400 } else { 500 });
        assert_eq!(Fault::from_code(&code), Some(*f));
    }
}

#[test]
fn codes_the_protocol_requires_exist() {
    let required = [
        "bad_request",
        "invalid_client_identifier",
        "invalid_http_method",
        "unknown_member",
        "unknown_service",
        "service_disabled",
        "access_denied",
        "ssl_authentication_failed",
        "invalid_signature_value",
        "missing_signature",
        "inconsistent_response",
        "global_conf_outdated",
        "network_error",
        "service_failed",
        "logging_failed",
        "internal_error",
        "maintenance_mode",
        "invalid_security_server",
    ];
    for name in required {
        assert!(Fault::ALL.iter().any(|f| f.name() == name), "missing {name}");
    }
}

#[test]
fn legacy_camel_case_codes_are_recognised() {
    assert_eq!(Fault::from_code("Server.ServerProxy.AccessDenied"), Some(Fault::AccessDenied));
    assert_eq!(Fault::from_code("Client.BadRequest"), Some(Fault::BadRequest));
    assert_eq!(
        Fault::from_code("Server.ClientProxy.SslAuthenticationFailed"),
        Some(Fault::ClientSslAuthenticationFailed)
    );
    assert_eq!(Fault::from_code("server.serverproxy.no_such_thing"), None);
}
