//! `audit.toml`, the audit service's configuration: strict (unknown keys and wrong types are
//! errors) and checked whole before anything binds. Relative paths are relative to the file.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lienthong_runtime::config::{ConfigFile, check_input, from_toml};
use lienthong_types::NodeId;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The collector's store, the configuration cache and the service's client credential.
    pub data_dir: PathBuf,
    /// The instance's anchor: where the global configuration comes from and what evidence is
    /// verified against.
    pub anchor: PathBuf,
    /// The dashboard and the API.
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate and key (PEM): auditors may then log in with a listed
    /// client certificate instead of an API key.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    #[serde(default = "default_pull_interval")]
    pub pull_interval_secs: u64,
    #[serde(default = "default_node_timeout")]
    pub node_timeout_secs: u64,
    /// API connections open at once at most; more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default)]
    pub auditors: Vec<AuditorConfig>,
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
}

fn default_pull_interval() -> u64 {
    60
}

fn default_node_timeout() -> u64 {
    30
}

fn default_max_connections() -> usize {
    crate::DEFAULT_MAX_CONNECTIONS
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditorConfig {
    pub name: String,
    /// Hex SHA-256 of the auditor's API key (`lienthong audit api-key` prints it).
    #[serde(default)]
    pub api_key_sha256: Option<String>,
    /// The auditor's client certificate (PEM), presented over HTTPS.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: NodeId,
    /// The node's HTTPS consumer listener, `https://host:port`; the node lists the service's
    /// certificate (`DATA_DIR/collector.pem`) in its `[audit] certificates`.
    pub url: String,
}

/// The configuration file could not be used: the runtime kit's error, shared by every loader.
pub use lienthong_runtime::config::ConfigError;

impl AuditConfig {
    /// Reads and checks a configuration file; relative paths come back resolved against it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = ConfigFile::read(path)?;
        let mut config = file.parse(Self::parse)?;
        let resolve = |p: &mut PathBuf| file.resolve(p);
        resolve(&mut config.data_dir);
        resolve(&mut config.anchor);
        config.tls_cert.as_mut().map(resolve);
        config.tls_key.as_mut().map(resolve);
        for a in &mut config.auditors {
            a.certificate.as_mut().map(resolve);
        }
        Ok(config)
    }

    /// Checks that every file the configuration at `path` names can be read: the serving
    /// process calls it before it binds (the anchor may arrive after the file is written, so
    /// loading alone does not require it).
    pub fn check_files(&self, path: &Path) -> Result<(), ConfigError> {
        check_input(path, "anchor", &self.anchor)?;
        for (key, file) in [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)] {
            file.as_ref().map_or(Ok(()), |f| check_input(path, key, f))?;
        }
        for a in &self.auditors {
            if let Some(c) = &a.certificate {
                check_input(path, &format!("auditors.{}.certificate", a.name), c)?;
            }
        }
        Ok(())
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = from_toml(text)?;
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return Err("`tls_cert` and `tls_key` go together".into());
        }
        if config.pull_interval_secs == 0 || config.node_timeout_secs == 0 || config.max_connections == 0 {
            return Err("pull_interval_secs, node_timeout_secs and max_connections must be positive".into());
        }
        let mut names = BTreeSet::new();
        for a in &config.auditors {
            if a.name.trim().is_empty() || !names.insert(a.name.as_str()) {
                return Err(format!("auditor {:?}: names must be given and distinct", a.name));
            }
            match (&a.api_key_sha256, &a.certificate) {
                (None, None) => {
                    return Err(format!("auditor {:?}: give api_key_sha256, certificate or both", a.name));
                }
                (Some(h), _) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    return Err(format!("auditor {:?}: api_key_sha256 must be 64 hex digits", a.name));
                }
                (_, Some(_)) if config.tls_cert.is_none() => {
                    return Err(format!(
                        "auditor {:?}: certificate login needs HTTPS; set tls_cert and tls_key",
                        a.name
                    ));
                }
                _ => {}
            }
        }
        let mut ids = BTreeSet::new();
        for n in &config.nodes {
            if !ids.insert(n.id.to_string()) {
                return Err(format!("node {} is listed twice", n.id));
            }
            let rest = n.url.strip_prefix("https://").unwrap_or_default();
            if rest.is_empty() || rest.trim_end_matches('/').contains(['/', '?', '#']) {
                return Err(format!(
                    "node {}: url must be https://host:port (the node's consumer.https)",
                    n.id
                ));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::AuditConfig;

    const BASE: &str = r#"
        data_dir = "audit"
        anchor = "anchor.json"
        listen = "127.0.0.1:0"
    "#;

    #[test]
    fn the_example_configuration_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/audit.toml");
        let c = AuditConfig::load(&path).unwrap();
        assert_eq!(c.nodes.len(), 2);
        assert!(c.data_dir.ends_with("../target/audit"), "resolved against the file: {c:?}");
    }

    #[test]
    fn files_named_are_checked_before_binding_with_the_key_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.toml");
        std::fs::write(&path, format!("{BASE}\ntls_cert = \"tls.pem\"\ntls_key = \"tls.key\"\n")).unwrap();
        let c = AuditConfig::load(&path).unwrap();
        let err = c.check_files(&path).unwrap_err().to_string();
        assert!(err.contains("audit.toml") && err.contains("anchor") && err.contains("anchor.json"), "{err}");
        std::fs::write(dir.path().join("anchor.json"), "{}").unwrap();
        let err = c.check_files(&path).unwrap_err().to_string();
        assert!(err.contains("tls_cert") && err.contains("tls.pem"), "{err}");
        std::fs::write(dir.path().join("tls.pem"), "x").unwrap();
        std::fs::write(dir.path().join("tls.key"), "x").unwrap();
        c.check_files(&path).unwrap();
    }

    #[test]
    fn the_example_shape_parses_and_mistakes_are_named() {
        let ok = format!(
            "{BASE}\n[[auditors]]\nname = \"kt\"\napi_key_sha256 = \"{}\"\n[[nodes]]\nid = \"VN/GOV/1/ss\"\nurl = \"https://node.example:8443\"\n",
            "ab".repeat(32)
        );
        let c = AuditConfig::parse(&ok).unwrap();
        assert_eq!((c.pull_interval_secs, c.nodes.len(), c.auditors.len()), (60, 1, 1));
        for (extra, says) in [
            ("colour = \"red\"", "unknown field"),
            ("pull_interval_secs = 0", "must be positive"),
            ("max_connections = 0", "must be positive"),
            ("tls_cert = \"a.pem\"", "go together"),
            ("[[auditors]]\nname = \"x\"", "give api_key_sha256"),
            ("[[auditors]]\nname = \"x\"\napi_key_sha256 = \"12\"", "64 hex digits"),
            ("[[auditors]]\nname = \"x\"\ncertificate = \"x.pem\"", "needs HTTPS"),
            ("[[nodes]]\nid = \"VN/GOV\"\nurl = \"https://h:1\"", "id"),
            ("[[nodes]]\nid = \"VN/GOV/1/ss\"\nurl = \"http://h:1\"", "https://host:port"),
        ] {
            let err = AuditConfig::parse(&format!("{BASE}\n{extra}\n")).unwrap_err();
            assert!(err.contains(says), "{extra}: {err}");
        }
    }
}
