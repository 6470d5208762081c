//! `lienthong pki ...`: the PKI steps an operator can do by hand.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lienthong_pki::{
    CertInfo, CertificateAuthority, Csr, Fingerprint, Identity, KeyAlgorithm, PrivateKey, Validity,
};
use lienthong_types::{InstanceId, MemberId, NodeId};
use serde::Serialize;

use crate::files::{self, NewKeyProtection, Passphrase};

pub(crate) const CA_CERT_FILE: &str = "ca.crt.pem";
pub(crate) const CA_KEY_FILE: &str = "ca.key.pem";

#[derive(Debug, Subcommand)]
pub(crate) enum PkiCommand {
    /// The instance CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Private keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Make a certificate signing request for a node or a member.
    Csr(CsrArgs),
    /// Issue a certificate from a request, with the CA's key.
    Issue(IssueArgs),
    /// Print a certificate's identity, fingerprint and validity, or what a request asks for.
    Show(ShowArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a new instance CA: writes DIR/ca.crt.pem and DIR/ca.key.pem.
    Init(CaInitArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Generate a new private key.
    New(KeyNewArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CaInitArgs {
    /// The instance this CA serves, e.g. VN.
    #[arg(long)]
    instance: InstanceId,
    /// Directory for the CA files (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    #[arg(long = "type", default_value = "ed25519", value_name = "ALG")]
    key_type: KeyAlgorithm,
    /// Validity of the CA certificate, in days.
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    days: u64,
    #[command(flatten)]
    protection: NewKeyProtection,
}

#[derive(Debug, Args)]
pub(crate) struct KeyNewArgs {
    /// ed25519 (default), ecdsa-p256 or rsa-pss.
    #[arg(long = "type", default_value = "ed25519", value_name = "ALG")]
    key_type: KeyAlgorithm,
    /// Where to write the key (must not exist).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    protection: NewKeyProtection,
}

/// Exactly one identity: a node (authentication certificate) or a member (signing certificate).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct Subject {
    /// A node id, INSTANCE/CLASS/MEMBER/SERVERCODE: asks for a node authentication certificate.
    #[arg(long)]
    node: Option<NodeId>,
    /// A member id, INSTANCE/CLASS/MEMBER: asks for a member signing certificate.
    #[arg(long)]
    member: Option<MemberId>,
}

impl Subject {
    fn identity(&self) -> Identity {
        match (&self.node, &self.member) {
            (Some(n), _) => Identity::Node(n.clone()),
            (None, Some(m)) => Identity::Member(m.clone()),
            (None, None) => unreachable!("clap requires one of --node, --member"),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct CsrArgs {
    /// The private key the certificate will be for.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    #[command(flatten)]
    passphrase: Passphrase,
    #[command(flatten)]
    subject: Subject,
    /// Where to write the request (PEM).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// The CA directory made by `pki ca init`.
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// Passphrase of the CA key.
    #[command(flatten)]
    passphrase: Passphrase,
    /// The certificate signing request (PEM).
    #[arg(long, value_name = "FILE")]
    csr: PathBuf,
    /// The identity the operator approved; the request must name exactly this.
    #[command(flatten)]
    subject: Subject,
    /// Validity of the certificate, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    days: u64,
    /// Where to write the certificate (PEM).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Certificate or certificate request file (PEM).
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: PkiCommand) -> Result<()> {
    match cmd {
        PkiCommand::Ca(CaCommand::Init(a)) => ca_init(a),
        PkiCommand::Key(KeyCommand::New(a)) => key_new(a),
        PkiCommand::Csr(a) => csr(a),
        PkiCommand::Issue(a) => issue(a),
        PkiCommand::Show(a) => show(a),
    }
}

fn ca_init(a: CaInitArgs) -> Result<()> {
    fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let (cert_path, key_path) = (a.dir.join(CA_CERT_FILE), a.dir.join(CA_KEY_FILE));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            bail!("{} already exists; refusing to overwrite a CA", p.display());
        }
    }
    let key = PrivateKey::generate(a.key_type)?;
    let ca = CertificateAuthority::init(a.instance, &key, Validity::days(a.days), SystemTime::now())?;
    files::write_key(&key_path, &key, &a.protection)?;
    files::write_new(&cert_path, ca.certificate().to_pem().as_bytes(), false)?;
    outln!("created CA for instance {}", ca.instance());
    print_info(&ca.certificate().info()?);
    outln!("certificate: {}\nprivate key: {}", cert_path.display(), key_path.display());
    Ok(())
}

fn key_new(a: KeyNewArgs) -> Result<()> {
    let key = PrivateKey::generate(a.key_type)?;
    files::write_key(&a.out, &key, &a.protection)?;
    outln!("wrote {} key to {}", a.key_type, a.out.display());
    Ok(())
}

fn csr(a: CsrArgs) -> Result<()> {
    let key = files::read_key(&a.key, &a.passphrase)?;
    let csr = match a.subject.identity() {
        Identity::Node(n) => Csr::for_node(&key, &n)?,
        Identity::Member(m) => Csr::for_member(&key, &m)?,
        Identity::Ca(_) | Identity::Registry(_) | Identity::Admin(_) => {
            unreachable!("Subject yields only node and member identities")
        }
    };
    files::write_new(&a.out, csr.to_pem().as_bytes(), false)?;
    outln!("wrote request for {} to {}", csr.identity()?, a.out.display());
    Ok(())
}

fn issue(a: IssueArgs) -> Result<()> {
    let ca = load_ca(&a.ca_dir, &a.passphrase)?;
    let pem =
        fs::read_to_string(&a.csr).with_context(|| format!("reading request file {}", a.csr.display()))?;
    let csr = Csr::from_pem(&pem).with_context(|| format!("request file {}", a.csr.display()))?;
    let validity = Validity::days(a.days);
    let now = SystemTime::now();
    let cert = match a.subject.identity() {
        Identity::Node(n) => ca.issue_node(&csr, &n, validity, now)?,
        Identity::Member(m) => ca.issue_member(&csr, &m, validity, now)?,
        Identity::Ca(_) | Identity::Registry(_) | Identity::Admin(_) => {
            unreachable!("Subject yields only node and member identities")
        }
    };
    files::write_new(&a.out, cert.to_pem().as_bytes(), false)?;
    print_info(&cert.info()?);
    outln!("certificate: {}", a.out.display());
    Ok(())
}

pub(crate) fn load_ca(dir: &Path, pass: &Passphrase) -> Result<CertificateAuthority> {
    let cert = files::read_cert(&dir.join(CA_CERT_FILE))?;
    let key = files::read_key(&dir.join(CA_KEY_FILE), pass)?;
    CertificateAuthority::load(cert, &key).with_context(|| format!("CA in {}", dir.display()))
}

fn show(a: ShowArgs) -> Result<()> {
    let pem = fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    if pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
        return show_request(&a, &pem);
    }
    let info = files::read_cert(&a.file)?.info()?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&CertSummary::from(&info))?);
    } else {
        print_info(&info);
    }
    Ok(())
}

/// What an operator checks before issuing: who the request is for, and which key.
fn show_request(a: &ShowArgs, pem: &str) -> Result<()> {
    let csr = Csr::from_pem(pem).with_context(|| format!("request file {}", a.file.display()))?;
    let identity = csr.identity()?;
    let key = csr.public_key()?;
    let summary = RequestSummary {
        kind: "certificate request",
        requested: identity.role(),
        id: id_string(&identity),
        key_algorithm: key.algorithm().to_string(),
        key_sha256: Fingerprint::of(key.raw()).to_string(),
        signature: "verified (the requester holds the key)",
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        outln!("kind:         {} for a {}", summary.kind, summary.requested);
        outln!("id:           {}", summary.id);
        outln!("key:          {}", summary.key_algorithm);
        outln!("key sha256:   {}", summary.key_sha256);
        outln!("signature:    {}", summary.signature);
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct RequestSummary {
    kind: &'static str,
    requested: &'static str,
    id: String,
    key_algorithm: String,
    key_sha256: String,
    signature: &'static str,
}

fn id_string(identity: &Identity) -> String {
    match identity {
        Identity::Ca(x) | Identity::Registry(x) | Identity::Admin(x) => x.to_string(),
        Identity::Node(x) => x.to_string(),
        Identity::Member(x) => x.to_string(),
    }
}

/// What `pki show --json` prints; field names are a stable interface for scripts.
#[derive(Debug, Serialize)]
struct CertSummary {
    kind: &'static str,
    id: String,
    fingerprint_sha256: String,
    serial: String,
    subject: String,
    issuer: String,
    not_before: String,
    not_after: String,
    valid_now: bool,
    key_algorithm: String,
}

impl From<&CertInfo> for CertSummary {
    fn from(i: &CertInfo) -> Self {
        Self {
            kind: i.identity.role(),
            id: id_string(&i.identity),
            fingerprint_sha256: i.fingerprint.to_string(),
            serial: i.serial.clone(),
            subject: i.subject.clone(),
            issuer: i.issuer.clone(),
            not_before: rfc3339(i.not_before),
            not_after: rfc3339(i.not_after),
            valid_now: i.is_valid_at(SystemTime::now()),
            key_algorithm: i.public_key.algorithm().to_string(),
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "(out of range)".into())
}

pub(crate) fn print_info(info: &CertInfo) {
    let s = CertSummary::from(info);
    let state = if s.valid_now { "valid now" } else { "NOT valid now" };
    outln!("kind:         {}", s.kind);
    outln!("id:           {}", s.id);
    outln!("fingerprint:  {}", s.fingerprint_sha256);
    outln!("serial:       {}", s.serial);
    outln!("subject:      {}", s.subject);
    outln!("issuer:       {}", s.issuer);
    outln!("valid:        {} .. {} ({state})", s.not_before, s.not_after);
    outln!("key:          {}", s.key_algorithm);
}
