//! `lienthong audit ...`: evidence for auditors. `bundle` gathers the proof of an exchange from
//! the logs of the nodes that took part into one file; `verify` checks such a file offline with
//! nothing but the instance's anchor. The format is in `docs/audit-evidence.md`. The central
//! service (`init`, `serve`, `api-key`) is in `audit_serve.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lienthong_audit::bundle::{self, ExchangeRef, Side};
use lienthong_globalconf::Anchor;
use lienthong_msglog::LogStore;
use lienthong_node::home::NodeHome;

use crate::files;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Build an evidence bundle for an exchange from the logs of the nodes that took part (the
    /// consumer's node and the provider's node that served it): the records, their inclusion
    /// proofs against each node's latest witnessed checkpoint, the nodes' certificates and
    /// global configurations. The bundle is verified before it is written.
    Bundle(BundleArgs),
    /// Verify an evidence bundle offline against the instance's anchor: every signature, proof
    /// and cross-check, each explained. Exits non-zero unless the bundle is valid.
    Verify(VerifyArgs),
    /// Query a node's message log: records by time, client, service, status, exchange, user,
    /// direction or role, with inclusion proofs against the newest witnessed checkpoint, as
    /// JSON, NDJSON or CSV. Never bodies.
    Query(crate::audit_query::QueryArgs),
    /// Set up the central audit service: make the client certificate it presents to the nodes'
    /// audit APIs (each node lists it in its `[audit] certificates`).
    Init(crate::audit_serve::InitArgs),
    /// Run the central audit service: pull every listed node (metadata records and witnessed
    /// checkpoints, verified as they come), serve the dashboard, the JSON API and its OpenAPI
    /// description. Stops on Ctrl-C or SIGTERM.
    Serve(crate::audit_serve::ServeArgs),
    /// Make an auditor's API key; prints the key once and the line audit.toml needs.
    ApiKey(crate::audit_serve::ApiKeyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BundleArgs {
    /// A node directory (as set up by `lienthong node init`). Give the consumer's and the
    /// provider's; one alone proves only that side. The node must not be running: it holds its
    /// log open.
    #[arg(long = "node-dir", value_name = "DIR", required = true)]
    node_dirs: Vec<PathBuf>,
    /// The exchange's message id (X-Road-Id). Repeat for a few exchanges in one bundle.
    #[arg(long, value_name = "ID", required = true)]
    exchange: Vec<String>,
    /// Only this request of the exchange (X-Road-Request-Id), when a client reused a message id.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// The bundle file to write (must not exist).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The anchor to check the bundle with before writing it (default: the first node
    /// directory's anchor.json).
    #[arg(long, value_name = "FILE")]
    anchor: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The bundle file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The instance's anchor file (JSON), as the registry publishes it.
    #[arg(long, value_name = "FILE")]
    anchor: PathBuf,
    /// Print the report as JSON (field names are stable).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Bundle(args) => make_bundle(&args),
        AuditCommand::Verify(args) => verify(&args),
        AuditCommand::Query(args) => crate::audit_query::run_query(args),
        AuditCommand::Init(args) => crate::audit_serve::init(&args),
        AuditCommand::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(crate::audit_serve::serve(args)),
        AuditCommand::ApiKey(args) => crate::audit_serve::api_key(&args),
    }
}

fn read_anchor(path: &Path) -> Result<Anchor> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading anchor file {}", path.display()))?;
    Anchor::from_json(&text).with_context(|| format!("anchor file {}", path.display()))
}

/// What a node directory contributes, read from its files.
struct NodeFiles {
    store: Arc<dyn LogStore>,
    conf: Vec<u8>,
    /// The federation partners' views the node keeps (`conf/partners/INSTANCE/`).
    partner_confs: Vec<Vec<u8>>,
    certificate: Option<Vec<u8>>,
}

/// Reads a node directory: its log (never created here), the configuration it holds and its
/// authentication certificate. The only file access of `audit bundle`.
fn read_node_dir(dir: &Path) -> Result<NodeFiles> {
    let home = NodeHome::new(dir);
    let log_dir = home.log_dir();
    if !log_dir.is_dir() {
        bail!(
            "{}: no message log here ({} is missing); give a node directory",
            dir.display(),
            log_dir.display()
        );
    }
    let store = lienthong_msglog::open_existing(&log_dir).map_err(|e| {
        let text = e.to_string();
        // redb locks its file: a running node holds it for as long as it runs.
        if text.contains("already open") || text.contains("lock") {
            anyhow::anyhow!(
                "{}: the message log is held open by a running node ({text}); stop the node \
                 (`lienthong node serve` stops cleanly on Ctrl-C or SIGTERM, after a last \
                 checkpoint) and run this again",
                log_dir.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("opening the message log in {}", log_dir.display()))
        }
    })?;
    let conf_path = home.conf_dir().join(lienthong_confclient::CONF_FILE);
    let conf = std::fs::read(&conf_path).with_context(|| {
        format!("reading the node's global configuration {} (has the node run yet?)", conf_path.display())
    })?;
    // The log keeps the certificates that signed its checkpoints; this one is a fallback.
    let cert_path = home.auth_cert_path();
    let certificate =
        if cert_path.is_file() { Some(files::read_cert(&cert_path)?.der().to_vec()) } else { None };
    let mut partner_confs = Vec::new();
    let partners = home.conf_dir().join("partners");
    if let Ok(entries) = std::fs::read_dir(&partners) {
        for entry in entries {
            let file = entry?.path().join(lienthong_confclient::CONF_FILE);
            if file.is_file() {
                partner_confs
                    .push(std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
            }
        }
    }
    Ok(NodeFiles { store, conf, partner_confs, certificate })
}

fn make_bundle(args: &BundleArgs) -> Result<()> {
    if args.out.exists() {
        bail!("{} already exists; refusing to overwrite it", args.out.display());
    }
    let anchor_path = match &args.anchor {
        Some(p) => p.clone(),
        None => NodeHome::new(&args.node_dirs[0]).anchor_path(),
    };
    let anchor = read_anchor(&anchor_path)?;
    let nodes = args.node_dirs.iter().map(|d| read_node_dir(d)).collect::<Result<Vec<_>>>()?;
    let sides: Vec<Side<'_>> = nodes
        .iter()
        .map(|n| Side {
            store: &*n.store,
            conf: &n.conf,
            node_certificate: n.certificate.as_deref(),
            partner_confs: &n.partner_confs,
        })
        .collect();
    let exchanges: Vec<ExchangeRef> = args
        .exchange
        .iter()
        .map(|id| ExchangeRef { message_id: id.clone(), request_id: args.request_id.clone() })
        .collect();
    let bytes = bundle::build(&sides, &exchanges).context("building the evidence bundle")?;
    // A bundle that does not verify proves nothing: say why instead of writing it.
    let report = match bundle::verify(&bytes, &anchor) {
        Ok(report) => report,
        Err(invalid) => {
            errprint!("{}", invalid.0);
            bail!(
                "the bundle built from these logs does not verify against {}; nothing was written \
                 (check the logs with `lienthong log verify DIR/log --anchor FILE`)",
                anchor_path.display()
            );
        }
    };
    files::write_new(&args.out, &bytes, false)?;
    let records: usize = report.sides.iter().map(|s| s.records.len()).sum();
    outln!(
        "wrote an evidence bundle of {} exchange(s), {records} record(s) from {} node log(s), {} bytes, to {}",
        report.exchanges.len(),
        report.sides.len(),
        bytes.len(),
        args.out.display()
    );
    outln!("check it anywhere with: lienthong audit verify {} --anchor anchor.json", args.out.display());
    Ok(())
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let anchor = read_anchor(&args.anchor)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("reading evidence bundle {}", args.file.display()))?;
    let (report, valid) = match bundle::verify(&bytes, &anchor) {
        Ok(report) => (report, true),
        Err(invalid) => (*invalid.0, false),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{report}");
    }
    if !valid {
        let failed = report.failures().count();
        bail!(
            "evidence bundle {} is NOT valid: {failed} check(s) failed (listed above)",
            args.file.display()
        );
    }
    Ok(())
}
