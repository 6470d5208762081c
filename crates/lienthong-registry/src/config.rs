//! `registry.toml`: parsed strictly (unknown keys are errors) and checked before anything binds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lienthong_pki::Validity;
use lienthong_runtime::config::{ConfigFile, from_toml};
use lienthong_types::InstanceId;
use serde::Deserialize;

use crate::registry::{AutoApprove, Settings};
use crate::routes::CONF_PATH;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub instance: InstanceId,
    /// Relative paths are relative to the configuration file.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    #[serde(default)]
    pub globalconf: GlobalConfConfig,
    #[serde(default)]
    pub certificates: CertificatesConfig,
    #[serde(default)]
    pub auto_approve: AutoApprove,
}

/// Where the signed configuration is served (plain HTTP: the document is signed; put any web
/// server or CDN in front for TLS or caching).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The URLs nodes use to download the configuration (go into the anchor). Default: derived
    /// from `listen`.
    #[serde(default)]
    pub public_urls: Vec<String>,
    /// Open connections at most; more are closed at once. Every node polls, so the default is
    /// generous.
    #[serde(default = "default_http_connections")]
    pub max_connections: usize,
}

fn default_http_connections() -> usize {
    4096
}

/// The management and admin API (gRPC over TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    pub listen: SocketAddr,
    /// The URLs nodes and administrators use (go into the configuration). Default: from `listen`.
    #[serde(default)]
    pub public_urls: Vec<String>,
    /// Open connections at most; more are closed at once.
    #[serde(default = "default_grpc_connections")]
    pub max_connections: usize,
}

fn default_grpc_connections() -> usize {
    1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfConfig {
    /// How long a published configuration is valid.
    pub validity_secs: u64,
    /// How often it is re-signed even when nothing changed.
    pub refresh_secs: u64,
}

impl Default for GlobalConfConfig {
    fn default() -> Self {
        Self { validity_secs: 600, refresh_secs: 60 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificatesConfig {
    /// Validity of issued node authentication and member signing certificates.
    pub validity_days: u64,
}

impl Default for CertificatesConfig {
    fn default() -> Self {
        Self { validity_days: 730 }
    }
}

/// The configuration file could not be used: the runtime kit's error, shared by every loader.
pub use lienthong_runtime::config::ConfigError;

impl RegistryConfig {
    /// Reads and checks a configuration file; `data_dir` comes back absolute.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = ConfigFile::read(path)?;
        let mut config = file.parse(Self::parse)?;
        file.resolve(&mut config.data_dir);
        Ok(config)
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = from_toml(text)?;
        let g = &config.globalconf;
        if g.refresh_secs == 0 || g.validity_secs < 2 * g.refresh_secs {
            return Err(format!(
                "globalconf: validity_secs ({}) must be at least twice refresh_secs ({}), which must be positive",
                g.validity_secs, g.refresh_secs
            ));
        }
        if config.http.max_connections == 0 || config.grpc.max_connections == 0 {
            return Err("http.max_connections and grpc.max_connections must be positive".into());
        }
        if config.certificates.validity_days == 0 {
            return Err("certificates: validity_days must be positive".into());
        }
        for url in config.http.public_urls.iter() {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(format!("http.public_urls: {url:?} is not an http(s) URL"));
            }
        }
        for url in config.grpc.public_urls.iter() {
            if !url.starts_with("https://") {
                return Err(format!("grpc.public_urls: {url:?} must be an https URL (the API is TLS only)"));
            }
        }
        Ok(config)
    }

    /// What the registry publishes, given the addresses actually bound (ports may be 0).
    pub fn settings(&self, http: SocketAddr, grpc: SocketAddr) -> Settings {
        let or_default =
            |urls: &[String], default: String| if urls.is_empty() { vec![default] } else { urls.to_vec() };
        Settings {
            instance: self.instance.clone(),
            conf_validity: Duration::from_secs(self.globalconf.validity_secs),
            conf_urls: or_default(&self.http.public_urls, format!("http://{http}{CONF_PATH}")),
            registry_urls: or_default(&self.grpc.public_urls, format!("https://{grpc}")),
            auto_approve: self.auto_approve,
            cert_validity: Validity::days(self.certificates.validity_days),
        }
    }

    pub fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.globalconf.refresh_secs)
    }
}
