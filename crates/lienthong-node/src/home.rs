//! A node's directory, and setting a node up against its registry (`lienthong node init`).
//!
//! ```text
//! DIR/anchor.json                  the instance anchor the operator was given
//! DIR/registration.toml            node id, addresses, subsystems, and every request sent
//! DIR/keys/auth.key, auth.pem      the node authentication key and its certificate
//! DIR/keys/sign-<member>.key/.pem  a member signing key and certificate, per member hosted
//! DIR/keys/body.key                the key that encrypts logged bodies at rest
//! DIR/log/                         the message log
//! DIR/conf/                        the configuration client's state
//! ```
//!
//! Set-up is a sequence of management requests, each waiting for the registry operator: the
//! node's registration (signed by the key in its CSR), one signing certificate per member whose
//! subsystems it hosts (signed by the node's authentication certificate), and one hosting
//! request per subsystem (signed by that member's signing certificate). Every request is written
//! to `registration.toml` *before* it is sent, with its exact bytes, so an interrupted or timed
//! out `init` resumes by resending them: the registry treats the same request id with the same
//! bytes as the same request.
//!
//! Private keys are PKCS#8 PEM, encrypted when a passphrase is given, mode 0600, and never
//! overwritten. The body key is a raw AES-256 key; so that the same passphrase encryption
//! (scrypt, AES-256-CBC) protects it and no second key-file format exists, it is stored as the
//! 32-byte seed of a PKCS#8 Ed25519 key. That "Ed25519 key" is never used to sign.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper_util::rt::TokioIo;
use lienthong_confclient::{Clock, ConfClient, ConfClientConfig, ConfClientError};
use lienthong_globalconf::{Anchor, sign_request, to_millis};
use lienthong_pki::tls::{TlsIdentity, registry_client_config, registry_server_name};
use lienthong_pki::{BodyKey, CertError, Certificate, Csr, Identity, KeyAlgorithm, KeyError, PrivateKey};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_proto::registry::v1::management_service_client::ManagementServiceClient;
use lienthong_types::{MemberId, NodeId, SubsystemId};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// The registration state file, inside the node directory.
pub const STATE_FILE: &str = "registration.toml";

/// How long `init` waits between status checks at most, by default.
pub const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The first pause between status checks; doubled up to the maximum.
const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Bounds connecting to the registry and each call, so a dead registry cannot hang `init`.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What went wrong with a node directory or its set-up. Messages name the file or request
/// concerned and never include key material or passphrases.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    // Causes are part of the message rather than `source()`: `anyhow`'s `{:#}` would print
    // them twice.
    #[error("could not {action} {}: {error}", path.display())]
    Io { action: &'static str, path: PathBuf, error: io::Error },
    #[error("key file {}: {error}", path.display())]
    Key { path: PathBuf, error: KeyError },
    #[error("certificate file {}: {error}", path.display())]
    Cert { path: PathBuf, error: CertError },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{} already holds a set-up node ({node}); refusing to set it up again", dir.display())]
    AlreadyInitialised { dir: PathBuf, node: NodeId },
    #[error("{} holds no node (run `lienthong node init` first)", dir.display())]
    NotInitialised { dir: PathBuf },
    #[error(
        "the set-up of {} is not finished: {waiting}; run `lienthong node init` again to continue",
        dir.display()
    )]
    Incomplete { dir: PathBuf, waiting: String },
    #[error(
        "{} was set up with different arguments: {what}; repeat the original arguments or use a new directory",
        dir.display()
    )]
    Mismatch { dir: PathBuf, what: String },
    #[error("invalid set-up: {0}")]
    Invalid(String),
    #[error("cannot get the global configuration: {0}")]
    Conf(ConfClientError),
    #[error("the global configuration lists no registry API URL; give one explicitly")]
    NoRegistryUrl,
    #[error("cannot reach the registry at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the registry refused the request for {what}: {message}")]
    Refused { what: String, message: String },
    #[error(
        "the registry rejected request {request_id} ({what}): {reason}; fix the cause and run init again to send a new request"
    )]
    Rejected { what: String, request_id: String, reason: String },
    /// The registry withdrew an approval (e.g. it removed the node): what was built on it is
    /// void, so this directory cannot simply continue.
    #[error(
        "the registry revoked request {request_id} ({what}): {reason}; set the node up again in a new directory"
    )]
    Revoked { what: String, request_id: String, reason: String },
    #[error("{0}")]
    Crypto(String),
}

impl From<ConfClientError> for HomeError {
    fn from(e: ConfClientError) -> Self {
        HomeError::Conf(e)
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> HomeError + 'a {
    move |error| HomeError::Io { action, path: path.to_owned(), error }
}

fn crypto(what: &str, e: impl fmt::Display) -> HomeError {
    HomeError::Crypto(format!("{what}: {e}"))
}

/// What `init` needs beyond the directory.
#[derive(Clone)]
pub struct InitOptions {
    pub anchor: Anchor,
    pub node: NodeId,
    /// Where peers reach this node: `https://host:port`.
    pub addresses: Vec<String>,
    /// Subsystems this node will host; a signing key is made for each of their members.
    pub subsystems: Vec<SubsystemId>,
    /// For keys made by this run.
    pub key_algorithm: KeyAlgorithm,
    /// Encrypts every private key written; `None` writes them unencrypted (mode 0600). Needed
    /// again to resume, since the keys already written sign the later requests.
    pub passphrase: Option<Vec<u8>>,
    /// The registry's management API; default: the first URL in the global configuration.
    pub registry_url: Option<String>,
    /// How long to wait for the operator's decisions in all; `None`: send what can be sent,
    /// check once, and return.
    pub wait: Option<Duration>,
    /// The longest pause between status checks (they start short and back off).
    pub max_poll_interval: Duration,
    pub clock: Clock,
}

impl InitOptions {
    /// Ed25519 keys, no passphrase, the registry URL from the configuration, no waiting.
    pub fn new(anchor: Anchor, node: NodeId, addresses: Vec<String>) -> Self {
        Self {
            anchor,
            node,
            addresses,
            subsystems: Vec::new(),
            key_algorithm: KeyAlgorithm::Ed25519,
            passphrase: None,
            registry_url: None,
            wait: None,
            max_poll_interval: DEFAULT_MAX_POLL_INTERVAL,
            clock: Clock::system(),
        }
    }
}

impl fmt::Debug for InitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitOptions")
            .field("instance", &self.anchor.instance)
            .field("node", &self.node)
            .field("addresses", &self.addresses)
            .field("subsystems", &self.subsystems)
            .field("key_algorithm", &self.key_algorithm)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "(set)"))
            .field("registry_url", &self.registry_url)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// One thing the node asks the registry for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    RegisterNode(NodeId),
    SigningCert(MemberId),
    HostSubsystem(SubsystemId),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::RegisterNode(n) => write!(f, "registration of node {n}"),
            Target::SigningCert(m) => write!(f, "signing certificate of member {m}"),
            Target::HostSubsystem(s) => write!(f, "hosting of subsystem {s}"),
        }
    }
}

/// Where one request stands after `init` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Waits for an earlier request.
    NotSent,
    Pending,
    Approved,
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepState::NotSent => "not sent yet",
            StepState::Pending => "pending",
            StepState::Approved => "approved",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub target: Target,
    pub request_id: Option<String>,
    pub state: StepState,
}

/// What `init` requested and where each request stands, in order.
#[derive(Debug, Clone)]
pub struct InitOutcome {
    pub node: NodeId,
    pub registry_url: String,
    pub steps: Vec<StepReport>,
}

impl InitOutcome {
    pub fn is_complete(&self) -> bool {
        self.steps.iter().all(|s| s.state == StepState::Approved)
    }
}

/// Everything a running node needs from its directory.
#[derive(Debug)]
pub struct NodeKeys {
    pub node: NodeId,
    pub addresses: Vec<String>,
    pub anchor: Anchor,
    /// The authentication certificate (leaf only: peers hold the CA) and its key.
    pub tls: TlsIdentity,
    /// Per member: its signing key and certificate.
    pub signing: BTreeMap<MemberId, (Arc<PrivateKey>, Certificate)>,
    pub body_key: Arc<BodyKey>,
    pub subsystems: BTreeSet<SubsystemId>,
}

// ----- the state file ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RequestState {
    Pending,
    Approved,
    Rejected,
    Revoked,
}

/// A request as sent; `signed` is the base64 `SignedManagementRequest`, resent as is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    id: String,
    state: RequestState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    signed: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeState {
    node: NodeId,
    addresses: Vec<String>,
    subsystems: BTreeSet<SubsystemId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registration: Option<Request>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    signing_certs: BTreeMap<MemberId, Request>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    hosting: BTreeMap<SubsystemId, Request>,
}

impl NodeState {
    /// The members whose signing keys the node holds: the owner's first (the registry lets a
    /// node ask for its owner's certificate before it hosts anything), then by id.
    fn members(&self) -> Vec<MemberId> {
        let mut members: Vec<MemberId> = self.subsystems.iter().map(|s| s.member.clone()).collect();
        members.sort_by_key(|m| (m != &self.node.owner, m.clone()));
        members.dedup();
        members
    }

    /// Every request `init` makes, in order. The registry issues a member's signing
    /// certificate only to a node that belongs to the member or hosts one of its subsystems, so
    /// the node asks to host other members' subsystems first (signed with its own key, decided
    /// by the registry operator), then for their certificates.
    fn targets(&self) -> Vec<Target> {
        let owner = &self.node.owner;
        let (own, foreign): (Vec<&SubsystemId>, Vec<&SubsystemId>) =
            self.subsystems.iter().partition(|s| &s.member == owner);
        let mut out = vec![Target::RegisterNode(self.node.clone())];
        let (owner_first, others): (Vec<MemberId>, Vec<MemberId>) =
            self.members().into_iter().partition(|m| m == owner);
        out.extend(owner_first.into_iter().map(Target::SigningCert));
        out.extend(foreign.into_iter().cloned().map(Target::HostSubsystem));
        out.extend(others.into_iter().map(Target::SigningCert));
        out.extend(own.into_iter().cloned().map(Target::HostSubsystem));
        out
    }

    fn slot(&self, t: &Target) -> Option<&Request> {
        match t {
            Target::RegisterNode(_) => self.registration.as_ref(),
            Target::SigningCert(m) => self.signing_certs.get(m),
            Target::HostSubsystem(s) => self.hosting.get(s),
        }
    }

    fn slot_mut(&mut self, t: &Target) -> Option<&mut Request> {
        match t {
            Target::RegisterNode(_) => self.registration.as_mut(),
            Target::SigningCert(m) => self.signing_certs.get_mut(m),
            Target::HostSubsystem(s) => self.hosting.get_mut(s),
        }
    }

    fn set_slot(&mut self, t: &Target, r: Option<Request>) {
        match (t, r) {
            (Target::RegisterNode(_), r) => self.registration = r,
            (Target::SigningCert(m), Some(r)) => drop(self.signing_certs.insert(m.clone(), r)),
            (Target::SigningCert(m), None) => drop(self.signing_certs.remove(m)),
            (Target::HostSubsystem(s), Some(r)) => drop(self.hosting.insert(s.clone(), r)),
            (Target::HostSubsystem(s), None) => drop(self.hosting.remove(s)),
        }
    }

    fn is_approved(&self, t: &Target) -> bool {
        self.slot(t).is_some_and(|r| r.state == RequestState::Approved)
    }

    fn report(&self) -> Vec<StepReport> {
        self.targets()
            .into_iter()
            .map(|target| {
                let (request_id, state) = match self.slot(&target) {
                    Some(r) if r.state == RequestState::Approved => (Some(r.id.clone()), StepState::Approved),
                    Some(r) if r.state == RequestState::Pending => (Some(r.id.clone()), StepState::Pending),
                    _ => (None, StepState::NotSent),
                };
                StepReport { target, request_id, state }
            })
            .collect()
    }

    /// What the set-up still waits for, for messages.
    fn waiting(&self) -> Option<String> {
        let open: Vec<String> = self
            .report()
            .into_iter()
            .filter(|s| s.state != StepState::Approved)
            .map(|s| match s.request_id {
                Some(id) => format!("{} ({} {id})", s.target, s.state),
                None => format!("{} ({})", s.target, s.state),
            })
            .collect();
        (!open.is_empty()).then(|| open.join(", "))
    }
}

// ----- the directory -------------------------------------------------------------------------

/// Paths inside a node directory.
#[derive(Debug, Clone)]
pub struct NodeHome {
    dir: PathBuf,
}

impl NodeHome {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn anchor_path(&self) -> PathBuf {
        self.dir.join("anchor.json")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.dir.join("keys")
    }

    pub fn auth_key_path(&self) -> PathBuf {
        self.keys_dir().join("auth.key")
    }

    pub fn auth_cert_path(&self) -> PathBuf {
        self.keys_dir().join("auth.pem")
    }

    /// `keys/sign-VN_GOV_000.00.00.G01.key`: `_` is not allowed in identifiers, so the name is
    /// unambiguous.
    pub fn signing_key_path(&self, member: &MemberId) -> PathBuf {
        self.keys_dir().join(format!("sign-{}.key", file_name(member)))
    }

    pub fn signing_cert_path(&self, member: &MemberId) -> PathBuf {
        self.keys_dir().join(format!("sign-{}.pem", file_name(member)))
    }

    pub fn body_key_path(&self) -> PathBuf {
        self.keys_dir().join("body.key")
    }

    /// The message log's directory.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// The configuration client's state directory.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }

    /// Sets the node up against its registry, or continues an interrupted set-up. Refuses a
    /// directory whose set-up is complete, or that was started with different arguments.
    ///
    /// Returns when every request is approved, or when `wait` runs out with one pending (the
    /// outcome says which; run again to continue). A rejected or revoked request is an error
    /// carrying the operator's reason; the next run sends a new one.
    pub async fn init(&self, opts: &InitOptions) -> Result<InitOutcome, HomeError> {
        check_options(opts)?;
        if let Some(state) = self.load_state()?
            && state.waiting().is_none()
        {
            return Err(HomeError::AlreadyInitialised { dir: self.dir.clone(), node: state.node });
        }
        let deadline = Instant::now() + opts.wait.unwrap_or_default();
        // The anchor kept in the directory is the one trusted; a newer copy may differ in keys.
        let anchor = if self.anchor_path().exists() { self.read_anchor()? } else { opts.anchor.clone() };
        if anchor.instance != opts.anchor.instance {
            return Err(HomeError::Mismatch {
                dir: self.dir.clone(),
                what: format!(
                    "an anchor of instance {} instead of {}",
                    opts.anchor.instance, anchor.instance
                ),
            });
        }
        // Held until the end: its lock on DIR/conf also keeps a second `init` (or a running
        // node) from working on this directory at the same time.
        let conf_client = self.conf_client(&anchor, &opts.clock)?;
        let mut state = match self.load_state()? {
            Some(state) => self.resume_state(state, opts)?,
            None => self.create(opts)?,
        };
        let (registry_url, api) = connect_registry(&conf_client, &anchor, opts).await?;
        let mut session = Session { home: self, opts, api, url: registry_url.clone(), deadline };
        let mut complete = true;
        for target in state.targets() {
            if !session.step(&mut state, &target).await? {
                complete = false;
                break;
            }
        }
        if complete {
            // Best effort: the node's first start then already sees itself in its configuration.
            if let Err(e) = conf_client.refresh_now().await {
                tracing::debug!(error = %e, "configuration not refreshed after set-up");
            }
        }
        Ok(InitOutcome { node: state.node.clone(), registry_url, steps: state.report() })
    }

    /// Loads everything a running node needs. Refuses a directory whose set-up is unfinished.
    pub fn open(&self, passphrase: Option<&[u8]>) -> Result<NodeKeys, HomeError> {
        let state = self.load_state()?.ok_or_else(|| HomeError::NotInitialised { dir: self.dir.clone() })?;
        if let Some(waiting) = state.waiting() {
            return Err(HomeError::Incomplete { dir: self.dir.clone(), waiting });
        }
        let anchor = self.read_anchor()?;
        let (auth_key, auth_cert) = self.read_credential(
            &self.auth_key_path(),
            &self.auth_cert_path(),
            &Identity::Node(state.node.clone()),
            passphrase,
        )?;
        let mut signing = BTreeMap::new();
        for member in state.members() {
            let cred = self.read_credential(
                &self.signing_key_path(&member),
                &self.signing_cert_path(&member),
                &Identity::Member(member.clone()),
                passphrase,
            )?;
            signing.insert(member, (Arc::new(cred.0), cred.1));
        }
        let body_key = read_body_key(&self.body_key_path(), passphrase)?;
        Ok(NodeKeys {
            node: state.node,
            addresses: state.addresses,
            anchor,
            tls: TlsIdentity { chain: vec![auth_cert], key: Arc::new(auth_key) },
            signing,
            body_key: Arc::new(body_key),
            subsystems: state.subsystems,
        })
    }

    // ----- set-up ----------------------------------------------------------------------------

    /// A fresh directory: writes the anchor, the body key and the state.
    fn create(&self, opts: &InitOptions) -> Result<NodeState, HomeError> {
        for sub in [self.keys_dir(), self.log_dir(), self.conf_dir()] {
            fs::create_dir_all(&sub).map_err(io_error("create", &sub))?;
        }
        let anchor_path = self.anchor_path();
        if !anchor_path.exists() {
            write_new(&anchor_path, opts.anchor.to_json().as_bytes(), false)?;
        }
        let body = self.body_key_path();
        if !body.exists() {
            let (_, raw) = BodyKey::generate().map_err(|e| crypto("body key", e))?;
            write_key(&body, &body_key_container(&raw)?, opts.passphrase.as_deref())?;
        }
        let state = NodeState {
            node: opts.node.clone(),
            addresses: opts.addresses.clone(),
            subsystems: opts.subsystems.iter().cloned().collect(),
            registration: None,
            signing_certs: BTreeMap::new(),
            hosting: BTreeMap::new(),
        };
        self.save_state(&state)?;
        Ok(state)
    }

    /// A directory with a set-up under way: the arguments must be the ones it started with,
    /// unless the registration is still to be sent (the last one was refused or rejected), in
    /// which case the new arguments replace the old.
    fn resume_state(&self, mut state: NodeState, opts: &InitOptions) -> Result<NodeState, HomeError> {
        if state.waiting().is_none() {
            return Err(HomeError::AlreadyInitialised { dir: self.dir.clone(), node: state.node });
        }
        let subsystems: BTreeSet<SubsystemId> = opts.subsystems.iter().cloned().collect();
        let unchanged =
            state.node == opts.node && state.addresses == opts.addresses && state.subsystems == subsystems;
        if unchanged {
            return Ok(state);
        }
        if state.registration.as_ref().is_none_or(|r| r.state == RequestState::Rejected) {
            // Nothing the registry holds depends on the old arguments; the keys do not either.
            state.node = opts.node.clone();
            state.addresses = opts.addresses.clone();
            state.subsystems = subsystems;
            self.save_state(&state)?;
            return Ok(state);
        }
        let what = if state.node != opts.node {
            format!("node {} instead of {}", opts.node, state.node)
        } else if state.addresses != opts.addresses {
            format!("addresses {:?} instead of {:?}", opts.addresses, state.addresses)
        } else {
            let list = |s: &BTreeSet<SubsystemId>| s.iter().map(ToString::to_string).collect::<Vec<_>>();
            format!("subsystems {:?} instead of {:?}", list(&subsystems), list(&state.subsystems))
        };
        Err(HomeError::Mismatch { dir: self.dir.clone(), what })
    }

    fn conf_client(&self, anchor: &Anchor, clock: &Clock) -> Result<ConfClient, HomeError> {
        let mut config = ConfClientConfig::new(anchor.clone(), self.conf_dir());
        config.clock = clock.clone();
        Ok(ConfClient::open(config)?)
    }

    fn load_state(&self) -> Result<Option<NodeState>, HomeError> {
        let path = self.state_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        toml::from_str(&text).map(Some).map_err(|e| HomeError::Corrupt { path, reason: e.to_string() })
    }

    /// Replaces the state file atomically: a crash leaves the old or the new state.
    fn save_state(&self, state: &NodeState) -> Result<(), HomeError> {
        let path = self.state_path();
        let text = toml::to_string_pretty(state)
            .map_err(|e| HomeError::Corrupt { path: path.clone(), reason: format!("cannot encode: {e}") })?;
        let tmp = path.with_extension("toml.tmp");
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, text.as_bytes(), false)?;
        fs::rename(&tmp, &path).map_err(io_error("replace", &path))?;
        #[cfg(unix)]
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_error("sync", &self.dir))?;
        Ok(())
    }

    fn read_anchor(&self) -> Result<Anchor, HomeError> {
        let path = self.anchor_path();
        let text = fs::read_to_string(&path).map_err(io_error("read", &path))?;
        Anchor::from_json(&text).map_err(|e| HomeError::Corrupt { path, reason: e.to_string() })
    }

    /// Key file, certificate file and identity of what `target` is approved with, if anything.
    fn credential_files(&self, target: &Target) -> Option<(PathBuf, PathBuf, Identity)> {
        match target {
            Target::RegisterNode(n) => {
                Some((self.auth_key_path(), self.auth_cert_path(), Identity::Node(n.clone())))
            }
            Target::SigningCert(m) => {
                Some((self.signing_key_path(m), self.signing_cert_path(m), Identity::Member(m.clone())))
            }
            Target::HostSubsystem(_) => None,
        }
    }

    /// A key and its certificate, checked to belong together and to name `identity`.
    fn read_credential(
        &self,
        key_path: &Path,
        cert_path: &Path,
        identity: &Identity,
        passphrase: Option<&[u8]>,
    ) -> Result<(PrivateKey, Certificate), HomeError> {
        let key = read_key(key_path, passphrase)?;
        let cert = read_cert(cert_path)?;
        check_cert(&cert, &key, identity)
            .map_err(|reason| HomeError::Corrupt { path: cert_path.into(), reason })?;
        Ok((key, cert))
    }
}

/// One `init` run's connection and limits.
struct Session<'a> {
    home: &'a NodeHome,
    opts: &'a InitOptions,
    api: ManagementServiceClient<Channel>,
    url: String,
    deadline: Instant,
}

impl Session<'_> {
    /// Brings `target` to approved if possible. `Ok(false)`: still pending at the deadline.
    async fn step(&mut self, state: &mut NodeState, target: &Target) -> Result<bool, HomeError> {
        if state.is_approved(target) {
            return Ok(true);
        }
        let home = self.home;
        let request = match state.slot(target) {
            Some(r) if r.state == RequestState::Pending => r.clone(),
            Some(r) if r.state == RequestState::Revoked => {
                return Err(HomeError::Revoked {
                    what: target.to_string(),
                    request_id: r.id.clone(),
                    reason: r.reason.clone().unwrap_or_else(|| "no reason given".into()),
                });
            }
            // Nothing sent yet, or the operator turned the last one down: a new request.
            _ => {
                let id = format!("{}-{}", request_prefix(target), uuid::Uuid::new_v4());
                let signed = self.build(state, target, &id)?;
                let r = Request {
                    id,
                    state: RequestState::Pending,
                    reason: None,
                    signed: BASE64.encode(signed.encode_to_vec()),
                };
                // Recorded before it is sent, so a crash cannot orphan a request the registry holds.
                state.set_slot(target, Some(r.clone()));
                home.save_state(state)?;
                r
            }
        };
        let signed = BASE64
            .decode(&request.signed)
            .ok()
            .and_then(|b| pb::SignedManagementRequest::decode(b.as_slice()).ok())
            .ok_or_else(|| HomeError::Corrupt {
                path: home.state_path(),
                reason: format!("request {} is not readable", request.id),
            })?;

        // Sending a pending request again is harmless: the registry answers its current status.
        let status = match call(self.api.submit(signed)).await {
            Ok(s) => s,
            Err(e) if is_transient(&e) => {
                return Err(HomeError::Connect { url: self.url.clone(), reason: e.message().to_owned() });
            }
            Err(e) => {
                // A refused request left no trace in the registry: forget it too, so the next
                // run sends a fresh one once the cause is fixed.
                state.set_slot(target, None);
                home.save_state(state)?;
                return Err(HomeError::Refused { what: target.to_string(), message: e.message().to_owned() });
            }
        };
        let status = self.wait(&request.id, status).await?;
        let decided = match pb::RequestState::try_from(status.state) {
            Ok(pb::RequestState::Pending) => return Ok(false),
            Ok(pb::RequestState::Approved) => RequestState::Approved,
            Ok(pb::RequestState::Rejected) => RequestState::Rejected,
            Ok(pb::RequestState::Revoked) => RequestState::Revoked,
            _ => {
                return Err(HomeError::Refused {
                    what: target.to_string(),
                    message: format!("unknown request state {}", status.state),
                });
            }
        };
        if decided == RequestState::Approved
            && let Some((key_path, cert_path, identity)) = home.credential_files(target)
        {
            // Written before the state says approved, so an approved step always has its file.
            let refused = |message: String| HomeError::Refused { what: target.to_string(), message };
            let cert = Certificate::from_der(status.certificate.clone())
                .map_err(|e| refused(format!("the approval carries no usable certificate: {e}")))?;
            let key = read_key(&key_path, self.opts.passphrase.as_deref())?;
            check_cert(&cert, &key, &identity).map_err(refused)?;
            write_cert(&cert_path, &cert)?;
        }
        let reason = (!status.reason.is_empty()).then(|| status.reason.clone());
        if let Some(slot) = state.slot_mut(target) {
            slot.state = decided;
            slot.reason.clone_from(&reason);
        }
        home.save_state(state)?;
        if decided == RequestState::Approved {
            tracing::info!(request = %request.id, "{target} approved");
            return Ok(true);
        }
        let (what, request_id) = (target.to_string(), request.id);
        let reason = reason.unwrap_or_else(|| "no reason given".into());
        Err(if decided == RequestState::Revoked {
            HomeError::Revoked { what, request_id, reason }
        } else {
            HomeError::Rejected { what, request_id, reason }
        })
    }

    /// A new signed request for `target`, making its key first if it has none yet.
    fn build(
        &self,
        state: &NodeState,
        target: &Target,
        id: &str,
    ) -> Result<pb::SignedManagementRequest, HomeError> {
        use pb::management_request::Kind;
        let home = self.home;
        let pass = self.opts.passphrase.as_deref();
        let node = &state.node;
        let (kind, signer, cert) = match target {
            Target::RegisterNode(_) => {
                let key = self.key(&home.auth_key_path())?;
                let csr = Csr::for_node(&key, node).map_err(|e| crypto("node CSR", e))?;
                let addresses = state
                    .addresses
                    .iter()
                    .map(|url| gc::NodeAddress { url: url.clone(), network: String::new() })
                    .collect();
                let kind = Kind::RegisterNode(pb::RegisterNode {
                    node: Some(node.into()),
                    csr: csr.der().to_vec(),
                    addresses,
                });
                // A first registration is signed by the key in its CSR: there is no certificate yet.
                (kind, key, None)
            }
            Target::SigningCert(member) => {
                let key = self.key(&home.signing_key_path(member))?;
                let csr = Csr::for_member(&key, member).map_err(|e| crypto("member CSR", e))?;
                let kind = Kind::IssueSigningCert(pb::IssueSigningCert {
                    member: Some(member.into()),
                    csr: csr.der().to_vec(),
                    node: Some(node.into()),
                });
                let (auth_key, auth_cert) = home.read_credential(
                    &home.auth_key_path(),
                    &home.auth_cert_path(),
                    &Identity::Node(node.clone()),
                    pass,
                )?;
                (kind, auth_key, Some(auth_cert))
            }
            Target::HostSubsystem(sub) => {
                let member = &sub.member;
                // The owner's subsystems are asked for by the owner; another member's by the node.
                let (key, cert) = if member == &node.owner {
                    home.read_credential(
                        &home.signing_key_path(member),
                        &home.signing_cert_path(member),
                        &Identity::Member(member.clone()),
                        pass,
                    )?
                } else {
                    home.read_credential(
                        &home.auth_key_path(),
                        &home.auth_cert_path(),
                        &Identity::Node(node.clone()),
                        pass,
                    )?
                };
                let kind = Kind::HostSubsystem(pb::HostSubsystem {
                    subsystem: Some(sub.into()),
                    node: Some(node.into()),
                });
                (kind, key, Some(cert))
            }
        };
        let request = pb::ManagementRequest {
            request_id: id.to_owned(),
            created_at_ms: to_millis(self.opts.clock.now()),
            kind: Some(kind),
        };
        sign_request(&request, &signer, cert.as_ref()).map_err(|e| crypto("signing the request", e))
    }

    /// The key at `path`, made now if a previous run did not get that far.
    fn key(&self, path: &Path) -> Result<PrivateKey, HomeError> {
        let pass = self.opts.passphrase.as_deref();
        if path.exists() {
            return read_key(path, pass);
        }
        let key = PrivateKey::generate(self.opts.key_algorithm).map_err(|e| crypto("key generation", e))?;
        write_key(path, &key, pass)?;
        Ok(key)
    }

    /// Polls the request's status with backoff until it is decided or the deadline passes.
    async fn wait(
        &mut self,
        id: &str,
        mut status: pb::RequestStatus,
    ) -> Result<pb::RequestStatus, HomeError> {
        let mut pause = FIRST_POLL_INTERVAL.min(self.opts.max_poll_interval);
        while status.state == pb::RequestState::Pending as i32 {
            let now = Instant::now();
            if now >= self.deadline {
                break;
            }
            tokio::time::sleep(pause.min(self.deadline - now)).await;
            pause = (pause * 2).min(self.opts.max_poll_interval);
            match call(self.api.get_status(pb::GetStatusRequest { request_id: id.to_owned() })).await {
                Ok(s) => status = s,
                // The registry may be restarting; keep trying until the deadline.
                Err(e) if is_transient(&e) => tracing::debug!(error = %e.message(), "status check failed"),
                Err(e) => {
                    return Err(HomeError::Refused {
                        what: format!("the status of request {id}"),
                        message: e.message().to_owned(),
                    });
                }
            }
        }
        Ok(status)
    }
}

/// One call, bounded in time.
async fn call<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("the registry did not answer in time")),
    }
}

/// Checks what can be checked before anything is written or sent.
fn check_options(opts: &InitOptions) -> Result<(), HomeError> {
    if opts.passphrase.as_deref().is_some_and(<[u8]>::is_empty) {
        return Err(HomeError::Invalid("the passphrase is empty".into()));
    }
    let instance = &opts.anchor.instance;
    if &opts.node.owner.instance != instance {
        return Err(HomeError::Invalid(format!(
            "node {} is not in instance {instance} of the anchor",
            opts.node
        )));
    }
    if opts.addresses.is_empty() {
        return Err(HomeError::Invalid("a node needs at least one address (https://host:port)".into()));
    }
    for a in &opts.addresses {
        let host = a.strip_prefix("https://").unwrap_or_default();
        if host.is_empty() || a.contains(char::is_whitespace) {
            return Err(HomeError::Invalid(format!("address {a:?} must be an https:// URL")));
        }
    }
    if let Some(s) = opts.subsystems.iter().find(|s| &s.member.instance != instance) {
        return Err(HomeError::Invalid(format!("subsystem {s} is not in instance {instance} of the anchor")));
    }
    if opts.max_poll_interval.is_zero() {
        return Err(HomeError::Invalid("max_poll_interval must not be zero".into()));
    }
    Ok(())
}

fn request_prefix(t: &Target) -> &'static str {
    match t {
        Target::RegisterNode(_) => "register-node",
        Target::SigningCert(_) => "signing-cert",
        Target::HostSubsystem(_) => "host-subsystem",
    }
}

/// Errors worth retrying: the registry could not be reached or did not answer.
fn is_transient(s: &tonic::Status) -> bool {
    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown)
}

fn file_name(member: &MemberId) -> String {
    member.to_string().replace('/', "_")
}

/// The certificate names `identity` and certifies `key`.
fn check_cert(cert: &Certificate, key: &PrivateKey, identity: &Identity) -> Result<(), String> {
    let info = cert.info().map_err(|e| e.to_string())?;
    if &info.identity != identity {
        return Err(format!("the certificate is for {}, not {identity}", info.identity));
    }
    if info.public_key != key.public_key() {
        return Err("the certificate is not for this node's key".into());
    }
    Ok(())
}

// ----- TLS to the registry -------------------------------------------------------------------

/// The registry's URL and CA come from the verified configuration, so the anchor is all a node
/// needs out of band (decision 0004).
async fn connect_registry(
    conf_client: &ConfClient,
    anchor: &Anchor,
    opts: &InitOptions,
) -> Result<(String, ManagementServiceClient<Channel>), HomeError> {
    let refreshed = conf_client.refresh_now().await;
    // A held copy that is still valid will do if the download failed.
    let conf = match (conf_client.current(), refreshed) {
        (Some(c), _) if c.conf.expires_at > opts.clock.now() => c,
        (_, Err(e)) => return Err(e.into()),
        (_, Ok(_)) => return Err(HomeError::Invalid("the held global configuration is expired".into())),
    };
    let url = match &opts.registry_url {
        Some(u) => u.clone(),
        None => conf.conf.registry_urls.first().cloned().ok_or(HomeError::NoRegistryUrl)?,
    };
    let channel = connect(&url, &conf.conf.approved_cas, anchor).await?;
    Ok((url, ManagementServiceClient::new(channel)))
}

/// A channel to the registry at `url` (`https://host:port`) that accepts only the anchor
/// instance's registry certificate from an approved CA (both from the verified configuration).
/// No client certificate: management requests are authenticated by their signatures. Bounded
/// in time; calls on the channel are too.
pub(crate) async fn connect(
    url: &str,
    approved_cas: &[Certificate],
    anchor: &Anchor,
) -> Result<Channel, HomeError> {
    let failed = |reason: String| HomeError::Connect { url: url.to_owned(), reason };
    let authority = url
        .strip_prefix("https://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| failed("the URL must look like https://host:port".into()))?
        .to_owned();
    let mut config = registry_client_config(None, approved_cas, &anchor.instance)
        .map_err(|e| failed(format!("TLS set-up: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    // tonic sees plain http; the connector does TLS.
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| failed(e.to_string()))?
        .timeout(CALL_TIMEOUT);
    let connecting = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let (connector, authority) = (connector.clone(), authority.clone());
        async move {
            let tcp = TcpStream::connect(authority.as_str()).await?;
            let tls = connector.connect(registry_server_name(), tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    }));
    match tokio::time::timeout(CALL_TIMEOUT, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(failed(error_chain(&e))),
        Err(_) => Err(failed("timed out".into())),
    }
}

/// tonic's transport errors say little at the top ("transport error"); the causes say why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

// ----- files ---------------------------------------------------------------------------------

/// The DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410); the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The body key carried as an Ed25519 seed (see the module documentation).
fn body_key_container(raw: &[u8]) -> Result<PrivateKey, HomeError> {
    let mut der = [ED25519_PKCS8_PREFIX.as_slice(), raw].concat();
    let key = PrivateKey::from_pkcs8_der(&der).map_err(|e| crypto("body key", e));
    wipe(&mut der);
    key
}

fn read_body_key(path: &Path, passphrase: Option<&[u8]>) -> Result<BodyKey, HomeError> {
    let container = read_key(path, passphrase)?;
    let corrupt = || HomeError::Corrupt { path: path.to_owned(), reason: "not a body key".into() };
    let pem = container.to_pem();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = BASE64.decode(b64.as_bytes()).map_err(|_| corrupt())?;
    let key = match der.strip_prefix(ED25519_PKCS8_PREFIX.as_slice()) {
        Some(seed) => BodyKey::from_bytes(seed).map_err(|_| corrupt()),
        None => Err(corrupt()),
    };
    wipe(&mut der);
    key
}

/// Best-effort wipe of secret bytes this module copied (the node does not depend on zeroize).
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

fn read_cert(path: &Path) -> Result<Certificate, HomeError> {
    let pem = fs::read_to_string(path).map_err(io_error("read", path))?;
    Certificate::from_pem(&pem).map_err(|error| HomeError::Cert { path: path.to_owned(), error })
}

fn read_key(path: &Path, passphrase: Option<&[u8]>) -> Result<PrivateKey, HomeError> {
    let pem = fs::read_to_string(path).map_err(io_error("read", path))?;
    PrivateKey::from_pem(&pem, passphrase).map_err(|error| HomeError::Key { path: path.to_owned(), error })
}

fn write_key(path: &Path, key: &PrivateKey, passphrase: Option<&[u8]>) -> Result<(), HomeError> {
    let pem = match passphrase {
        Some(p) => {
            key.to_encrypted_pem(p).map_err(|error| HomeError::Key { path: path.to_owned(), error })?
        }
        None => key.to_pem(),
    };
    write_new(path, pem.as_bytes(), true)
}

/// Writes a certificate, accepting an identical file left by an interrupted run.
fn write_cert(path: &Path, cert: &Certificate) -> Result<(), HomeError> {
    let pem = cert.to_pem();
    match fs::read_to_string(path) {
        Ok(existing) if existing == pem => Ok(()),
        Ok(_) => Err(HomeError::Corrupt {
            path: path.to_owned(),
            reason: "holds a different certificate than the registry issued".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_new(path, pem.as_bytes(), false),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// Creates a file that must not exist yet, durably; secrets get mode 0600.
fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), HomeError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error("create", path))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_error("write", path))
}
