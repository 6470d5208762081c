//! The example `config/node.toml` parses and validates; bad files are refused with a clear error
//! before anything binds (test matrix case 12).

use std::path::Path;

use lienthong_node::NodeConfig;
use lienthong_node::config::{BodyPolicyName, ClientAuth, RefusalsConfig};

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/node.toml")
}

#[test]
fn the_example_configuration_is_valid() {
    let config = NodeConfig::load(&example()).unwrap();
    assert!(config.data_dir.is_absolute(), "data_dir is resolved against the file");
    assert_eq!(config.consumer.http.unwrap().port(), 8080);
    assert_eq!(config.log.body_policy, BodyPolicyName::Full);
    assert_eq!(config.clients[0].auth, ClientAuth::Loopback);
    assert_eq!(config.clients[0].body_policy, Some(BodyPolicyName::Encrypted));
    let service = &config.services[0];
    assert_eq!(service.id.to_string(), "VN/GOV/000.00.00.G01/dancu/cong-dan");
    assert_eq!(config.service_timeout(service).as_secs(), 10);
    assert!(service.tls_verify);
    assert!(config.audit.certificates.is_empty(), "the audit API is closed until auditors are listed");
    assert_eq!(config.limits.body_total_timeout_secs, 300);
    assert_eq!(config.limits.max_client_connections, 1024);
    assert_eq!(config.limits.max_peer_connections, 4096);
    assert_eq!(config.refusals, RefusalsConfig::default(), "the example spells out the defaults");
}

const MINIMAL: &str =
    "data_dir = \"d\"\n[consumer]\nhttp = \"127.0.0.1:0\"\n[peer]\nlisten = \"127.0.0.1:0\"\n";

fn refused(text: &str) -> String {
    NodeConfig::parse(text).expect_err("must be refused")
}

#[test]
fn bad_configuration_files_are_refused_with_a_clear_error() {
    let ok = NodeConfig::parse(MINIMAL).unwrap();
    assert_eq!(ok.limits.max_clock_skew_secs, 60, "defaults apply");
    let unknown = refused(&format!("{MINIMAL}[limits]\nmax_body = 5\n"));
    assert!(unknown.contains("unknown field `max_body`"), "{unknown}");
    let top = refused(&format!("colour = \"red\"\n{MINIMAL}"));
    assert!(top.contains("unknown field `colour`"), "{top}");
    let wrong_type = refused(&MINIMAL.replace("\"127.0.0.1:0\"\n[peer]", "8080\n[peer]"));
    assert!(wrong_type.contains("http"), "{wrong_type}");
    let no_listener = refused("data_dir = \"d\"\n[consumer]\n[peer]\nlisten = \"127.0.0.1:0\"\n");
    assert!(no_listener.contains("consumer"), "{no_listener}");
    let bad_service =
        refused(&format!("{MINIMAL}[[service]]\nid = \"VN/GOV/X/sub/svc\"\nurl = \"ftp://x\"\n"));
    assert!(bad_service.contains("url"), "{bad_service}");
    let bad_id = refused(&format!("{MINIMAL}[[service]]\nid = \"VN/GOV/X\"\nurl = \"http://x\"\n"));
    assert!(bad_id.contains("id"), "{bad_id}");
    let twice = refused(&format!(
        "{MINIMAL}[[client]]\nsubsystem = \"VN/GOV/X/a\"\n[[client]]\nsubsystem = \"VN/GOV/X/a\"\n"
    ));
    assert!(twice.contains("twice"), "{twice}");
    let tls_without_https =
        refused(&format!("{MINIMAL}[[client]]\nsubsystem = \"VN/GOV/X/a\"\nauth = \"tls\"\n"));
    assert!(tls_without_https.contains("https"), "{tls_without_https}");
    let cert_without_list = refused(&format!(
        "{}[[client]]\nsubsystem = \"VN/GOV/X/a\"\nauth = \"tls-cert\"\n",
        MINIMAL.replace("[peer]", "https = \"127.0.0.1:0\"\n[peer]")
    ));
    assert!(cert_without_list.contains("certificates"), "{cert_without_list}");
    let audit_without_https = refused(&format!("{MINIMAL}[audit]\ncertificates = [\"a.pem\"]\n"));
    assert!(audit_without_https.contains("https"), "{audit_without_https}");
    for zero in ["body_total_timeout_secs", "max_client_connections", "max_peer_connections"] {
        let e = refused(&format!("{MINIMAL}[limits]\n{zero} = 0\n"));
        assert!(e.contains("must be positive"), "{zero}: {e}");
    }
    let refusals = NodeConfig::parse(&format!("{MINIMAL}[refusals]\ninterval_secs = 5\n")).unwrap();
    assert_eq!((refusals.refusals.interval_secs, refusals.refusals.per_source), (5, 100), "defaults fill in");
    for bad in ["interval_secs = 0", "interval_secs = 86401", "max_sources = 0"] {
        let e = refused(&format!("{MINIMAL}[refusals]\n{bad}\n"));
        assert!(e.contains("refusals"), "{bad}: {e}");
    }
    let unknown = refused(&format!("{MINIMAL}[refusals]\nrate = 5\n"));
    assert!(unknown.contains("unknown field `rate`"), "{unknown}");
    let policy = refused(&format!("{MINIMAL}[log]\nbody_policy = \"some\"\n"));
    assert!(policy.contains("body_policy") || policy.contains("unknown variant"), "{policy}");
}

#[test]
fn a_missing_file_names_the_file() {
    let e = NodeConfig::load(Path::new("/nonexistent/node.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/node.toml"), "{e}");
}
