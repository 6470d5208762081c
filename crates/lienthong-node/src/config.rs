//! `node.toml`: parsed strictly (unknown keys and wrong types are errors) and checked before
//! anything binds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lienthong_runtime::config::{ConfigFile, check_input, from_toml};
use lienthong_types::{ServiceId, SubsystemId};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node directory made by `lienthong node init`. Relative to this file.
    pub data_dir: PathBuf,
    pub consumer: ConsumerConfig,
    pub peer: PeerConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogSettings,
    /// How each hosted subsystem's information systems authenticate, and its body policy.
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientConfig>,
    /// The backends of the services this node provides.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub refusals: RefusalsConfig,
}

/// How many refusals of unauthenticated traffic get a log record of their own; the others are
/// counted into one summary record per source and interval (see `refusal_limit`). Per interval
/// the log grows by at most `burst + records_per_sec * interval_secs` refusal records and
/// `max_sources + 3` summaries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefusalsConfig {
    /// The counting interval; each source with counted refusals gets one summary at its end.
    pub interval_secs: u64,
    /// Refusals per (source, kind) and interval that get a record of their own.
    pub per_source: u64,
    /// Sources tracked one by one per interval; beyond, they are counted together.
    pub max_sources: usize,
    /// Node-wide: refusal records of their own per second, on average...
    pub records_per_sec: u64,
    /// ...and at most this many at once.
    pub burst: u64,
}

impl Default for RefusalsConfig {
    fn default() -> Self {
        Self { interval_secs: 60, per_source: 100, max_sources: 1_000, records_per_sec: 10, burst: 200 }
    }
}

/// The node's audit API (`/audit/v1/...` on the HTTPS consumer listener).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// PEM files of the auditors' client certificates: presenting one of them over HTTPS is the
    /// auditor role. Empty: the audit API refuses everyone.
    #[serde(default)]
    pub certificates: Vec<PathBuf>,
}

/// The side facing local information systems (X-Road REST `r1`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Plain HTTP listener.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// HTTPS listener (server certificate: `tls_cert`/`tls_key`, default the node's own).
    #[serde(default)]
    pub https: Option<SocketAddr>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

/// The side facing peer nodes (pinned mTLS, HTTP/2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request or response body, in bytes.
    pub max_body_bytes: u64,
    /// Bodies up to this size stay in memory; larger ones are spooled to disk.
    pub memory_threshold_bytes: usize,
    /// A body that sends nothing for this long is abandoned.
    pub body_idle_timeout_secs: u64,
    /// A body (a client's or a peer's request, a backend's or a provider node's response) not
    /// complete this long after its reading began is abandoned, however steadily it trickles.
    pub body_total_timeout_secs: u64,
    /// Open connections per consumer listener (`http`, `https`); past it new connections are
    /// accepted and closed at once.
    pub max_client_connections: usize,
    /// Open connections from peer nodes; past it new ones are accepted and closed at once.
    pub max_peer_connections: usize,
    /// Largest allowed difference between a message's time and this node's clock.
    pub max_clock_skew_secs: u64,
    /// Per-service default backend timeout.
    pub service_timeout_secs: u64,
    /// How long the consumer waits for a provider node's answer to begin (its backend call
    /// included); the body then has `body_idle_timeout_secs` between pieces.
    pub exchange_timeout_secs: u64,
    /// Largest total size of a request's headers.
    pub max_header_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 << 30,
            memory_threshold_bytes: 1 << 20,
            body_idle_timeout_secs: 30,
            body_total_timeout_secs: 300,
            max_client_connections: 1024,
            max_peer_connections: 4096,
            max_clock_skew_secs: 60,
            service_timeout_secs: 30,
            exchange_timeout_secs: 60,
            max_header_bytes: 64 << 10,
        }
    }
}

/// What the log keeps of bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BodyPolicyName {
    Full,
    Metadata,
    Encrypted,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Policy for subsystems without their own.
    pub body_policy: BodyPolicyName,
    /// Bodies larger than this are logged by digest only, whatever the policy: the log is an
    /// evidence store, not a file store.
    pub max_logged_body_bytes: usize,
    /// How often the node signs a checkpoint and asks the registry to witness it.
    pub checkpoint_interval_secs: u64,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            body_policy: BodyPolicyName::Full,
            max_logged_body_bytes: 1 << 20,
            checkpoint_interval_secs: 60,
        }
    }
}

/// How information systems of a subsystem prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// Plain HTTP, only from loopback addresses (the default).
    #[default]
    Loopback,
    /// Plain HTTP from anywhere (a trusted network).
    None,
    /// HTTPS required.
    Tls,
    /// HTTPS with a client certificate listed in `certificates`.
    TlsCert,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub subsystem: SubsystemId,
    #[serde(default)]
    pub auth: ClientAuth,
    /// PEM files of the information systems' certificates (for `tls-cert`).
    #[serde(default)]
    pub certificates: Vec<PathBuf>,
    #[serde(default)]
    pub body_policy: Option<BodyPolicyName>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub id: ServiceId,
    /// Base URL of the backend; the rest of the r1 path and the query are appended.
    pub url: String,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Verify the backend's TLS certificate (on by default).
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// Extra CA certificates (PEM) to trust for this backend.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The OpenAPI description served by `getOpenAPI`.
    #[serde(default)]
    pub openapi: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// The configuration file could not be used: the runtime kit's error, shared by every loader.
pub use lienthong_runtime::config::ConfigError;

impl NodeConfig {
    /// Reads and checks a configuration file; relative paths come back resolved against it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = ConfigFile::read(path)?;
        let mut config = file.parse(Self::parse)?;
        let resolve = |p: &mut PathBuf| file.resolve(p);
        resolve(&mut config.data_dir);
        config.consumer.tls_cert.as_mut().map(resolve);
        config.consumer.tls_key.as_mut().map(resolve);
        for c in &mut config.clients {
            c.certificates.iter_mut().for_each(resolve);
        }
        for s in &mut config.services {
            s.ca_file.as_mut().map(resolve);
            s.openapi.as_mut().map(resolve);
        }
        config.audit.certificates.iter_mut().for_each(resolve);
        Ok(config)
    }

    /// Checks that every file the configuration at `path` names can be read: `node run` calls
    /// it before it binds (the auditors' certificates may arrive after the file is written, so
    /// loading alone does not require them).
    pub fn check_files(&self, path: &Path) -> Result<(), ConfigError> {
        let c = &self.consumer;
        for (key, file) in [("consumer.tls_cert", &c.tls_cert), ("consumer.tls_key", &c.tls_key)] {
            file.as_ref().map_or(Ok(()), |f| check_input(path, key, f))?;
        }
        for client in &self.clients {
            for f in &client.certificates {
                check_input(path, &format!("client.{}.certificates", client.subsystem), f)?;
            }
        }
        for s in &self.services {
            let files = [("ca_file", &s.ca_file), ("openapi", &s.openapi)];
            for (key, file) in files.into_iter().filter_map(|(k, f)| f.as_ref().map(|f| (k, f))) {
                check_input(path, &format!("service.{}.{key}", s.id), file)?;
            }
        }
        for f in &self.audit.certificates {
            check_input(path, "audit.certificates", f)?;
        }
        Ok(())
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = from_toml(text)?;
        if config.consumer.http.is_none() && config.consumer.https.is_none() {
            return Err("consumer: set `http`, `https` or both".into());
        }
        if config.consumer.tls_cert.is_some() != config.consumer.tls_key.is_some() {
            return Err("consumer: `tls_cert` and `tls_key` go together".into());
        }
        let l = &config.limits;
        if l.max_body_bytes == 0
            || l.memory_threshold_bytes == 0
            || l.body_idle_timeout_secs == 0
            || l.body_total_timeout_secs == 0
            || l.max_client_connections == 0
            || l.max_peer_connections == 0
        {
            return Err("limits: sizes, timeouts and connection counts must be positive".into());
        }
        if l.service_timeout_secs == 0 || l.max_header_bytes < 1024 {
            return Err(
                "limits: service_timeout_secs must be positive and max_header_bytes at least 1024".into()
            );
        }
        let r = &config.refusals;
        if r.interval_secs == 0 || r.interval_secs > 86_400 || r.max_sources == 0 {
            return Err("refusals: interval_secs must be 1 to 86400 and max_sources positive".into());
        }
        if config.log.checkpoint_interval_secs == 0 {
            return Err("log: checkpoint_interval_secs must be positive".into());
        }
        let mut seen = BTreeMap::new();
        for c in &config.clients {
            if seen.insert(c.subsystem.clone(), ()).is_some() {
                return Err(format!("client: {} is listed twice", c.subsystem));
            }
            if c.auth == ClientAuth::TlsCert && c.certificates.is_empty() {
                return Err(format!("client {}: auth = \"tls-cert\" needs `certificates`", c.subsystem));
            }
            if matches!(c.auth, ClientAuth::Tls | ClientAuth::TlsCert) && config.consumer.https.is_none() {
                return Err(format!("client {}: TLS authentication needs consumer.https", c.subsystem));
            }
        }
        if !config.audit.certificates.is_empty() && config.consumer.https.is_none() {
            return Err("audit: auditors authenticate over HTTPS; set consumer.https".into());
        }
        let mut services = BTreeMap::new();
        for s in &config.services {
            if services.insert(s.id.clone(), ()).is_some() {
                return Err(format!("service: {} is listed twice", s.id));
            }
            let u = s.url.as_str();
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.contains('?') || u.contains('#')
            {
                return Err(format!(
                    "service {}: url must be http(s)://host[:port][/path] without query",
                    s.id
                ));
            }
            if s.timeout_secs == Some(0) {
                return Err(format!("service {}: timeout_secs must be positive", s.id));
            }
        }
        Ok(config)
    }

    pub fn client(&self, subsystem: &SubsystemId) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| &c.subsystem == subsystem)
    }

    pub fn service(&self, id: &ServiceId) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| &s.id == id)
    }

    pub fn service_timeout(&self, s: &ServiceConfig) -> Duration {
        Duration::from_secs(s.timeout_secs.unwrap_or(self.limits.service_timeout_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::NodeConfig;

    #[test]
    fn files_named_are_checked_before_binding_with_the_key_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        let text = "data_dir = \"node\"\n[consumer]\nhttp = \"127.0.0.1:0\"\n[peer]\nlisten = \"127.0.0.1:0\"\n\
                    [[service]]\nid = \"VN/GOV/1/ss/s\"\nurl = \"http://backend.invalid\"\nopenapi = \"s.json\"\n";
        std::fs::write(&path, text).expect("write");
        let c = NodeConfig::load(&path).expect("loads without the file");
        let err = c.check_files(&path).expect_err("missing").to_string();
        assert!(err.contains("node.toml") && err.contains("service.VN/GOV/1/ss/s.openapi"), "{err}");
        std::fs::write(dir.path().join("s.json"), "{}").expect("write");
        c.check_files(&path).expect("readable");
    }
}
