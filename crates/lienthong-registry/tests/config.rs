//! The example `config/registry.toml` parses and validates; bad files are refused with a clear
//! error before anything binds (test matrix case 12).

use std::path::Path;

use lienthong_registry::RegistryConfig;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/registry.toml")
}

#[test]
fn the_example_configuration_is_valid() {
    let config = RegistryConfig::load(&example()).unwrap();
    assert_eq!(config.instance.as_str(), "VN");
    assert!(config.data_dir.is_absolute(), "data_dir is resolved against the file");
    assert_eq!(config.globalconf.validity_secs, 600);
    assert!(!config.auto_approve.register_node);
    assert_eq!((config.http.max_connections, config.grpc.max_connections), (4096, 1024));
    let settings = config.settings(config.http.listen, config.grpc.listen);
    // The example's public URLs name the addresses it listens on.
    assert_eq!(settings.conf_urls, vec![format!("http://{}/globalconf", config.http.listen)]);
    assert_eq!(settings.registry_urls, vec![format!("https://{}", config.grpc.listen)]);
}

fn refused(text: &str) -> String {
    RegistryConfig::parse(text).expect_err("must be refused")
}

const MINIMAL: &str = "instance = \"VN\"\ndata_dir = \"d\"\n[http]\nlisten = \"127.0.0.1:0\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn bad_configuration_files_are_refused_with_a_clear_error() {
    RegistryConfig::parse(MINIMAL).unwrap();
    let unknown = refused(&format!("{MINIMAL}[globalconf]\nvalidity = 600\n"));
    assert!(unknown.contains("unknown field `validity`"), "{unknown}");
    let top = refused(&format!("colour = \"red\"\n{MINIMAL}"));
    assert!(top.contains("unknown field `colour`"), "{top}");
    let wrong_type = refused(&MINIMAL.replace("\"127.0.0.1:0\"\n[grpc]", "5580\n[grpc]"));
    assert!(wrong_type.contains("listen"), "{wrong_type}");
    let bad_instance = refused(&MINIMAL.replace("\"VN\"", "\"V N\""));
    assert!(bad_instance.contains("instance"), "{bad_instance}");
    let short = refused(&format!("{MINIMAL}[globalconf]\nvalidity_secs = 60\nrefresh_secs = 60\n"));
    assert!(short.contains("at least twice"), "{short}");
    let plain_api = refused(&MINIMAL.replace(
        "[grpc]\nlisten = \"127.0.0.1:0\"\n",
        "[grpc]\nlisten = \"127.0.0.1:0\"\npublic_urls = [\"http://x:1\"]\n",
    ));
    assert!(plain_api.contains("https"), "{plain_api}");
    let missing = refused("instance = \"VN\"\n");
    assert!(missing.contains("missing field"), "{missing}");
}

#[test]
fn connection_caps_default_and_must_be_positive() {
    let c = RegistryConfig::parse(MINIMAL).unwrap();
    assert_eq!((c.http.max_connections, c.grpc.max_connections), (4096, 1024));
    let zero = refused(&MINIMAL.replace("[grpc]", "max_connections = 0\n[grpc]"));
    assert!(zero.contains("max_connections"), "{zero}");
}
