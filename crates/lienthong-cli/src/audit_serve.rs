//! `lienthong audit init | serve | api-key`: the central audit service. `init` makes the client
//! certificate the service presents to the nodes' audit APIs; `serve` keeps the instance's
//! global configuration current, pulls every listed node and serves the dashboard and the JSON
//! API; `api-key` makes an auditor's key and prints the line `audit.toml` needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use lienthong_audit_service::config::AuditConfig;
use lienthong_audit_service::{
    Auditors, CERT_FILE, Credentials, KEY_FILE, NodeSource, Standalone, StandaloneSetup,
};
use lienthong_globalconf::Anchor;
use lienthong_pki::Fingerprint;
use lienthong_pki::consumer_tls::server_config_for_chain;
use lienthong_pki::is_client_tls::self_signed_client;
use rustls::pki_types::CertificateDer;

use crate::files::{self, NewKeyProtection, Passphrase};
use crate::registry::shutdown_signal;

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The service's configuration file (see config/audit.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    protection: NewKeyProtection,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The service's configuration file (see config/audit.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    passphrase: Passphrase,
}

#[derive(Debug, Args)]
pub(crate) struct ApiKeyArgs {
    /// The auditor's name, as the service's log will show it.
    #[arg(long)]
    name: String,
}

pub(crate) fn init(a: &InitArgs) -> Result<()> {
    let config = AuditConfig::load(&a.config)?;
    // Asked before anything is written: a missing passphrase leaves nothing half made.
    a.protection.read()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (cert, key) = (config.data_dir.join(CERT_FILE), config.data_dir.join(KEY_FILE));
    if cert.exists() || key.exists() {
        bail!(
            "{} already holds a credential ({CERT_FILE}, {KEY_FILE}); nothing was changed",
            config.data_dir.display()
        );
    }
    let (_, pem, private) =
        self_signed_client("lienthong-audit-collector").context("making the certificate")?;
    files::write_key(&key, &private, &a.protection)?;
    files::write_new(&cert, pem.as_bytes(), false)?;
    outln!("wrote the audit service's client certificate {} and key {}", cert.display(), key.display());
    outln!("list the certificate in every node's node.toml: [audit] certificates = [\"{}\"]", cert.display());
    Ok(())
}

pub(crate) fn api_key(a: &ApiKeyArgs) -> Result<()> {
    if a.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    let key = Auditors::new_api_key().context("reading random bytes from /dev/urandom")?;
    outln!("API key for {} (shown once; give it to the auditor):\n  {key}", a.name);
    outln!(
        "add to audit.toml:\n[[auditors]]\nname = {:?}\napi_key_sha256 = \"{}\"",
        a.name,
        Auditors::key_digest(&key)
    );
    Ok(())
}

/// The certificates of a PEM file, leaf first: any X.509 certificate (these are pinned by
/// fingerprint or chain to an ordinary CA, not to the instance).
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading certificate file {}", path.display()))?;
    lienthong_node::backend::roots_from_pem(&pem)
        .with_context(|| format!("certificate file {}: no PEM certificate", path.display()))
}

fn read_anchor(path: &Path) -> Result<Anchor> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading anchor file {}", path.display()))?;
    Anchor::from_json(&text).with_context(|| format!("anchor file {}", path.display()))
}

pub(crate) async fn serve(a: ServeArgs) -> Result<()> {
    let _logging = crate::logging::init()?;
    // Everything is read and checked before anything binds.
    let config = AuditConfig::load(&a.config)?;
    config.check_files(&a.config)?;
    let anchor = read_anchor(&config.anchor)?;
    let (cert, key) = (config.data_dir.join(CERT_FILE), config.data_dir.join(KEY_FILE));
    if !cert.exists() {
        bail!(
            "{} has no client credential; run `lienthong audit init --config {}` first",
            config.data_dir.display(),
            a.config.display()
        );
    }
    let credentials = Credentials { chain: read_chain(&cert)?, key: files::read_key(&key, &a.passphrase)? };
    let mut auditors = Auditors::default();
    for au in &config.auditors {
        if let Some(h) = &au.api_key_sha256 {
            auditors.add_key_digest(&au.name, h).map_err(anyhow::Error::msg)?;
        }
        if let Some(path) = &au.certificate {
            auditors.add_certificate(&au.name, Fingerprint::of(&read_chain(path)?[0]));
        }
    }
    if config.auditors.is_empty() {
        errln!("warning: no [[auditors]] in {}: nobody can use the API", a.config.display());
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => {
            let server = server_config_for_chain(read_chain(c)?, &files::read_key(k, &a.passphrase)?)
                .context("the service's TLS certificate and key")?;
            Some(Arc::new(server))
        }
        _ => None,
    };
    let nodes = config.nodes.iter().map(|n| NodeSource { node: n.id.clone(), url: n.url.clone() }).collect();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let setup = StandaloneSetup {
        data_dir: config.data_dir.clone(),
        anchor,
        nodes,
        credentials,
        auditors,
        node_timeout: Duration::from_secs(config.node_timeout_secs),
        tls,
        max_connections: config.max_connections,
        pull_every: Duration::from_secs(config.pull_interval_secs),
    };
    let running = Standalone::start(setup, config.listen).await?;
    noteln!("audit dashboard: {scheme}://{}/", running.addr());
    noteln!("audit API: {scheme}://{}/api/v1/ (OpenAPI at /api/v1/openapi.json)", running.addr());
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}
