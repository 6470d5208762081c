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

//!
//! One file per job: this one holds the directory's layout, `init` and `open`; `state.rs` the
//! registration state file, `session.rs` the conversation with the registry, `registry_tls.rs`
//! the TLS connection to it, `files.rs` the key and certificate files.

mod files;
mod registry_tls;
mod session;
mod state;

use files::*;
pub(crate) use registry_tls::connect;
use registry_tls::*;
use session::*;
use state::*;

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

use lienthong_confclient::{Clock, ConfClient, ConfClientConfig, ConfClientError};

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
