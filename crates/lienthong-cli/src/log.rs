//! `lienthong log ...`: offline work on a node's message log: verify it whole, show the records
//! of an exchange, export a range as an archive and verify such an archive.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lienthong_globalconf::Anchor;
use lienthong_msglog::merkle::Hash;
use std::sync::Arc;

use lienthong_msglog::{LogStore, WitnessKey};
use lienthong_proto::convert::IntoDomain;
use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use prost::Message;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::files;

#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    /// Verify a node's whole message log offline: every record against its leaf hash, every
    /// tree node, every checkpoint's signatures and root. Exits non-zero on the first problem,
    /// naming the record or checkpoint.
    Verify(VerifyArgs),
    /// Verify an archive made by `lienthong log export`, offline.
    VerifyArchive(VerifyArchiveArgs),
    /// Print the records of one exchange (request and response), decoded. Bodies are never
    /// printed.
    Show(ShowArgs),
    /// Export records FROM..TO (TO excluded) with inclusion proofs against a signed checkpoint,
    /// as an archive anyone can verify offline.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AnchorArg {
    /// The registry's anchor file (JSON): its keys check the checkpoints' witness
    /// co-signatures. Needed when there are any.
    #[arg(long, value_name = "FILE")]
    anchor: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The node's log directory (holding msglog.redb).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    anchor: AnchorArg,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArchiveArgs {
    /// The archive file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    anchor: AnchorArg,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The node's log directory (holding msglog.redb).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The exchange's message id (X-Road-Id).
    #[arg(long, value_name = "ID")]
    exchange: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The node's log directory (holding msglog.redb).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Index of the first record to export.
    #[arg(long, value_name = "N")]
    from: u64,
    /// Index after the last record to export.
    #[arg(long, value_name = "N")]
    to: u64,
    /// The archive file to write (must not exist).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub(crate) fn run(cmd: LogCommand) -> Result<()> {
    match cmd {
        LogCommand::Verify(args) => verify(&args),
        LogCommand::VerifyArchive(args) => verify_archive(&args),
        LogCommand::Show(args) => show(&args),
        LogCommand::Export(args) => export(&args),
    }
}

/// Opens an existing log (segment files or a single redb file); never creates one where there is
/// none.
fn open_log(dir: &Path) -> Result<Arc<dyn LogStore>> {
    if !dir.is_dir() {
        bail!("{}: no message log here (not a directory); give a node's log directory", dir.display());
    }
    lienthong_msglog::open_existing(dir)
        .with_context(|| format!("opening the message log in {}", dir.display()))
}

fn witness_keys(arg: &AnchorArg) -> Result<Option<Vec<WitnessKey>>> {
    let Some(path) = &arg.anchor else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading anchor file {}", path.display()))?;
    let anchor = Anchor::from_json(&text).with_context(|| format!("anchor file {}", path.display()))?;
    Ok(Some(anchor.signing_keys.iter().map(|k| (k.id, k.key.clone())).collect()))
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn time_text(ms: i64) -> String {
    let t = if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_else(|_| format!("{ms} ms"))
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let keys = witness_keys(&args.anchor)?;
    let store = open_log(&args.dir)?;
    let tty = std::io::stderr().is_terminal();
    let mut shown = None;
    let mut progress = |done: u64, total: u64| {
        if !tty || total == 0 {
            return;
        }
        let percent = done * 100 / total;
        if shown != Some(percent) {
            shown = Some(percent);
            errprint!("\rverifying: {percent:3}% ({done} of {total} records)");
        }
    };
    let result = lienthong_msglog::verify_store(&*store, keys.as_deref(), &mut progress);
    if tty && shown.is_some() {
        errln!();
    }
    let report =
        result.with_context(|| format!("the message log in {} does not verify", args.dir.display()))?;

    outln!("log:          {}", args.dir.display());
    outln!("origin:       {}", report.origin.as_deref().unwrap_or("(no checkpoint yet)"));
    if report.pruned > 0 {
        outln!(
            "records:      {} ({} pruned by retention: only their leaf hashes are left)",
            report.size,
            report.pruned
        );
    } else {
        outln!("records:      {}", report.size);
    }
    outln!("checkpoints:  {} ({} witnessed)", report.checkpoints, report.witnessed);
    if report.size > report.signed_size {
        outln!(
            "unsigned:     records {}..{} are not covered by a checkpoint yet",
            report.signed_size,
            report.size
        );
    }
    outln!("root:         {}", hex(&report.root));
    outln!("verified:     every record, tree node and checkpoint signature");
    Ok(())
}

fn verify_archive(args: &VerifyArchiveArgs) -> Result<()> {
    let keys = witness_keys(&args.anchor)?;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading archive {}", args.file.display()))?;
    let report = lienthong_msglog::verify_archive_bytes(&bytes, keys.as_deref())
        .with_context(|| format!("archive {} does not verify", args.file.display()))?;
    let end = report.first_index + report.records;
    outln!("archive:      {}", args.file.display());
    outln!("origin:       {}", report.origin);
    outln!("records:      {}..{} ({} records)", report.first_index, end, report.records);
    outln!(
        "checkpoint:   size {}, root {}, made {}",
        report.checkpoint.size,
        hex(&report.checkpoint.root),
        time_text(report.checkpoint.timestamp_ms)
    );
    outln!("log signed:   by certificate {}", report.log_certificate);
    if report.witnessed > 0 {
        outln!("witnessed:    {} co-signature(s) verified with the anchor's keys", report.witnessed);
    } else {
        outln!("witnessed:    no");
    }
    outln!("verified:     every record is in the signed checkpoint's tree");
    Ok(())
}

fn export(args: &ExportArgs) -> Result<()> {
    if args.out.exists() {
        bail!("{} already exists; refusing to overwrite it", args.out.display());
    }
    let store = open_log(&args.dir)?;
    let archive = lienthong_msglog::export(&*store, args.from, args.to)
        .with_context(|| format!("exporting records {}..{}", args.from, args.to))?;
    let size = archive.proofs.first().map_or(0, |p| p.tree_size);
    files::write_new(&args.out, &archive.encode_to_vec(), false)?;
    outln!(
        "wrote records {}..{} of {} with proofs against its checkpoint of size {} to {}",
        args.from,
        args.to,
        archive.origin,
        size,
        args.out.display()
    );
    Ok(())
}

// ----- show ----------------------------------------------------------------------------------

/// One record as printed; field names are stable for scripts.
#[derive(Debug, Serialize)]
struct ShownRecord {
    index: u64,
    /// The stored leaf hash: SHA-256(0x00 || record bytes).
    leaf_hash: Option<String>,
    /// `false` when retention dropped the record's bytes (nothing else is known then).
    kept: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<RecordView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct RecordView {
    message_id: String,
    request_id: String,
    direction: &'static str,
    role: &'static str,
    client: String,
    service: String,
    method: String,
    path: String,
    user_id: String,
    issue: String,
    node: String,
    peer_node: String,
    status: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<FaultView>,
    message_time_ms: i64,
    logged_at_ms: i64,
    headers_sha256: String,
    body_sha256: String,
    body_length: u64,
    body_policy: &'static str,
    /// What the record keeps of the body: "plain", "encrypted" (key id) or "none". The body
    /// itself is never printed.
    body_kept: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<SignatureView>,
    grant_id: String,
    /// The caller's address, on refusals of unauthenticated traffic.
    #[serde(skip_serializing_if = "String::is_empty")]
    source_address: String,
    /// Only on a refusal summary: the refusals of one source it counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal_summary: Option<SummaryView>,
}

#[derive(Debug, Serialize)]
struct SummaryView {
    kind: &'static str,
    /// Empty for all sources beyond the node's tracking limit (`other_sources`).
    source: String,
    other_sources: bool,
    interval_start_ms: i64,
    interval_end_ms: i64,
    first_seen_ms: i64,
    last_seen_ms: i64,
    recorded: u64,
    /// Fault code -> refusals counted only here.
    suppressed: std::collections::BTreeMap<String, u64>,
}

fn summary_view(s: pb::RefusalSummary) -> SummaryView {
    SummaryView {
        kind: lienthong_msglog::record::refusal_kind_name(s.kind),
        source: s.source,
        other_sources: s.other_sources,
        interval_start_ms: s.interval_start_ms,
        interval_end_ms: s.interval_end_ms,
        first_seen_ms: s.first_seen_ms,
        last_seen_ms: s.last_seen_ms,
        recorded: s.recorded,
        suppressed: s.suppressed.into_iter().map(|c| (c.code, c.count)).collect(),
    }
}

#[derive(Debug, Serialize)]
struct FaultView {
    code: String,
    message: String,
    detail: String,
}

#[derive(Debug, Serialize)]
struct SignatureView {
    algorithm: &'static str,
    /// SHA-256 of the signer's certificate.
    signer_sha256: String,
}

fn id_text<T: IntoDomain>(value: Option<T>) -> String
where
    T::Domain: std::fmt::Display,
{
    match value {
        None => String::new(),
        Some(v) => v.into_domain("id").map_or_else(|e| format!("(invalid: {e})"), |d| d.to_string()),
    }
}

fn direction(v: i32) -> &'static str {
    match pb::Direction::try_from(v) {
        Ok(pb::Direction::Request) => "request",
        Ok(pb::Direction::Response) => "response",
        _ => "unspecified",
    }
}

fn role(v: i32) -> &'static str {
    match pb::Role::try_from(v) {
        Ok(pb::Role::Consumer) => "consumer",
        Ok(pb::Role::Provider) => "provider",
        _ => "unspecified",
    }
}

fn body_policy(v: i32) -> &'static str {
    match pb::BodyPolicy::try_from(v) {
        Ok(pb::BodyPolicy::Full) => "full",
        Ok(pb::BodyPolicy::MetadataOnly) => "metadata-only",
        Ok(pb::BodyPolicy::Encrypted) => "encrypted",
        _ => "unspecified",
    }
}

fn algorithm(v: i32) -> &'static str {
    match types_pb::SignatureAlgorithm::try_from(v) {
        Ok(types_pb::SignatureAlgorithm::Ed25519) => "ed25519",
        Ok(types_pb::SignatureAlgorithm::EcdsaP256Sha256) => "ecdsa-p256",
        Ok(types_pb::SignatureAlgorithm::RsaPssSha256) => "rsa-pss",
        _ => "unspecified",
    }
}

fn view(r: pb::LogRecord) -> RecordView {
    let body_kept = match &r.body {
        None => "none".to_owned(),
        Some(pb::log_record::Body::PlainBody(_)) => "plain".to_owned(),
        Some(pb::log_record::Body::EncryptedBody(e)) => format!("encrypted (key {})", e.key_id),
    };
    RecordView {
        direction: direction(r.direction),
        role: role(r.role),
        client: id_text(r.client),
        service: id_text(r.service),
        node: id_text(r.node),
        peer_node: id_text(r.peer_node),
        fault: r.fault.map(|f| FaultView { code: f.code, message: f.message, detail: f.detail }),
        headers_sha256: hex(&r.headers_sha256),
        body_sha256: hex(&r.body_sha256),
        body_policy: body_policy(r.body_policy),
        body_kept,
        signature: r.signature.map(|s| SignatureView {
            algorithm: algorithm(s.algorithm),
            signer_sha256: hex(&s.signer_sha256),
        }),
        message_id: r.message_id,
        request_id: r.request_id,
        method: r.method,
        path: r.path,
        user_id: r.user_id,
        issue: r.issue,
        status: r.status,
        message_time_ms: r.message_time_ms,
        logged_at_ms: r.logged_at_ms,
        body_length: r.body_length,
        grant_id: r.grant_id,
        source_address: r.source_address,
        refusal_summary: r.refusal_summary.map(summary_view),
    }
}

fn show(args: &ShowArgs) -> Result<()> {
    let store = open_log(&args.dir)?;
    let indices = store.by_exchange(&args.exchange)?;
    if indices.is_empty() {
        bail!("the log in {} has no records of exchange {:?}", args.dir.display(), args.exchange);
    }
    let mut shown = Vec::with_capacity(indices.len());
    for index in indices {
        let leaf_hash = store.node(0, index)?.map(|h: Hash| hex(&h));
        let mut s = ShownRecord { index, leaf_hash, kept: false, record: None, error: None };
        if let Some(bytes) = store.record(index)? {
            s.kept = true;
            match pb::LogRecord::decode(bytes.as_slice()) {
                Ok(r) => s.record = Some(view(r)),
                Err(e) => s.error = Some(format!("does not decode as a LogRecord: {e}")),
            }
        }
        shown.push(s);
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    for (i, s) in shown.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        print_record(s);
    }
    Ok(())
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn print_record(s: &ShownRecord) {
    outln!("record {}", s.index);
    outln!("  leaf hash:      {}", s.leaf_hash.as_deref().unwrap_or("(missing)"));
    if !s.kept {
        outln!("  (pruned by retention: only its leaf hash is left)");
        return;
    }
    let Some(r) = &s.record else {
        outln!("  {}", s.error.as_deref().unwrap_or("unreadable"));
        return;
    };
    outln!("  direction:      {} ({})", r.direction, r.role);
    outln!("  message id:     {}", r.message_id);
    outln!("  request id:     {}", or_dash(&r.request_id));
    outln!("  client:         {}", or_dash(&r.client));
    outln!("  service:        {}", or_dash(&r.service));
    outln!("  method, path:   {} {}", r.method, r.path);
    outln!("  user:           {}", or_dash(&r.user_id));
    outln!("  issue:          {}", or_dash(&r.issue));
    outln!("  node:           {}", or_dash(&r.node));
    outln!("  peer node:      {}", or_dash(&r.peer_node));
    if r.status != 0 {
        outln!("  status:         {}", r.status);
    }
    if let Some(f) = &r.fault {
        outln!("  fault:          {}: {} (detail {})", f.code, f.message, or_dash(&f.detail));
    }
    outln!("  message time:   {}", time_text(r.message_time_ms));
    outln!("  logged at:      {}", time_text(r.logged_at_ms));
    outln!("  headers sha256: {}", or_dash(&r.headers_sha256));
    outln!("  body sha256:    {} ({} bytes)", or_dash(&r.body_sha256), r.body_length);
    outln!("  body policy:    {} (kept: {}; not shown)", r.body_policy, r.body_kept);
    match &r.signature {
        Some(sig) => outln!("  signature:      {} by certificate {}", sig.algorithm, sig.signer_sha256),
        None => outln!("  signature:      -"),
    }
    outln!("  grant:          {}", or_dash(&r.grant_id));
    if !r.source_address.is_empty() {
        outln!("  source:         {}", r.source_address);
    }
    if let Some(s) = &r.refusal_summary {
        let source = if s.other_sources { "other sources" } else { s.source.as_str() };
        outln!("  refusals of:    {source} ({}), {} recorded one by one", s.kind, s.recorded);
        outln!(
            "  interval:       {} to {} (seen {} to {})",
            time_text(s.interval_start_ms),
            time_text(s.interval_end_ms),
            time_text(s.first_seen_ms),
            time_text(s.last_seen_ms)
        );
        for (code, count) in &s.suppressed {
            outln!("  counted only:   {count} x {code}");
        }
    }
}
