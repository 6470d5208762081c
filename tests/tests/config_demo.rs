//! The demo topology's configuration files (`config/demo/`, run by `deploy/demo-processes.sh`)
//! load with the same strict loaders the processes use, and describe the topology
//! `lienthong demo` runs: every node's services point at the built-in backends' ports, every
//! node lists its instance's audit certificate, every audit service pulls its instance's nodes.

use std::path::{Path, PathBuf};

use lienthong_audit_service::config::AuditConfig;
use lienthong_node::NodeConfig;
use lienthong_registry::RegistryConfig;

fn file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo").join(name)
}

#[test]
fn the_demo_topology_configurations_load() {
    for (name, instance) in [("registry-vn.toml", "VN"), ("registry-na.toml", "VN-NA")] {
        let c = RegistryConfig::load(&file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.instance.as_str(), instance);
    }
    let mut https = Vec::new();
    for (name, audit) in [
        ("node-bca.toml", "vn"),
        ("node-btc.toml", "vn"),
        ("node-vpcp.toml", "vn"),
        ("node-lgsp-na.toml", "na"),
    ] {
        let c = NodeConfig::load(&file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let listed = c.audit.certificates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
        assert!(listed.iter().all(|p| p.contains(&format!("/{audit}/audit/"))), "{name}: {listed:?}");
        for s in &c.services {
            assert!(["7001", "7002", "7003"].iter().any(|p| s.url.contains(p)), "{name}: {}", s.url);
        }
        https.push(c.consumer.https.expect("an HTTPS listener for the audit service").port());
    }
    let mut pulled = Vec::new();
    for name in ["audit-vn.toml", "audit-na.toml"] {
        let c = AuditConfig::load(&file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        pulled.extend(c.nodes.iter().map(|n| n.url.rsplit(':').next().unwrap().parse::<u16>().unwrap()));
    }
    pulled.sort_unstable();
    https.sort_unstable();
    assert_eq!(pulled, https, "the audit services pull exactly the nodes' HTTPS listeners");
}
