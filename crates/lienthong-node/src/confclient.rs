//! The global configuration client: keeps the node's copy of its instance's signed global
//! configuration current, verified, and on disk.
//!
//! One poll ([`ConfClient::refresh_now`], also run by the background task every
//! `poll_interval`) tries the anchor's URLs in order until one answers 200 or 304. A 200 body is
//! verified against the trusted keys at `now` (signature, instance, expiry), refused if it would
//! roll the held configuration back, persisted atomically, and only then published. A refused or
//! unpersisted configuration changes nothing: the held configuration, the ETag and the files stay
//! as they were.
//!
//! # Trust and key rollover
//!
//! The trusted keys are the anchor's keys plus the keys *learned* from the held configuration:
//! the `signing_keys` it announces. This is safe because a configuration is only held after it
//! verified with a key that was already trusted, so every learned key was vouched for by the
//! anchor, directly or through a chain of such configurations; a key that merely signs a
//! configuration, without being announced by one signed by a trusted key, is never trusted. The
//! learned set is replaced by each accepted configuration's announcement, so a key the registry
//! stops announcing stops being trusted (the anchor's own keys always stay trusted: the operator
//! gave them out of band). Learned keys are persisted in [`LEARNED_KEYS_FILE`] (anchor JSON) so a
//! restarted node still trusts a key rolled in while it ran.
//!
//! # State directory
//!
//! - [`CONF_FILE`]: the last good `SignedGlobalConf` bytes, exactly as downloaded.
//! - [`LEARNED_KEYS_FILE`]: learned keys; absent when none are learned.
//! - `lock`: held (advisory lock) while a client uses the directory, so two clients cannot
//!   overwrite each other's rollback floor.
//!
//! The configuration is written before the learned keys. A crash between the two leaves the
//! previous learned keys, which verified the new configuration anyway; at start the learned set
//! is re-derived from the loaded configuration and rewritten.
//!
//! At start a persisted configuration that does not verify (ignoring expiry) is an **error**, not
//! skipped or moved aside: it is the rollback floor, and silently dropping it would let an
//! attacker or a stale mirror serve an older configuration. An operator who replaced the anchor
//! removes the file deliberately.

use std::fmt;
use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, ETAG, IF_NONE_MATCH, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lienthong_globalconf::{
    Anchor, AnchorError, ConfError, ConfKey, Freshness, GlobalConf, VerifiedConf, verify,
    verify_ignoring_expiry,
};
use tokio::sync::{Mutex, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

/// The persisted last good configuration, in the state directory.
pub const CONF_FILE: &str = "globalconf.bin";
/// Keys learned from the held configuration, as anchor JSON, in the state directory.
pub const LEARNED_KEYS_FILE: &str = "learned-keys.json";
const LOCK_FILE: &str = "lock";

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_WARN_BEFORE: Duration = Duration::from_secs(180);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Far above any real configuration; bounds what a misbehaving server can make us buffer.
pub const DEFAULT_MAX_CONF_BYTES: usize = 64 << 20;

const USER_AGENT_VALUE: &str = concat!("lienthong-node/", env!("CARGO_PKG_VERSION"));

/// Where the client reads the time. Injectable so tests can move time without sleeping.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(SystemTime::now))
    }

    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Settings of a [`ConfClient`].
#[derive(Debug, Clone)]
pub struct ConfClientConfig {
    pub anchor: Anchor,
    /// Holds [`CONF_FILE`], [`LEARNED_KEYS_FILE`] and a lock file; created if missing.
    pub state_dir: PathBuf,
    pub poll_interval: Duration,
    /// How long before expiry the status turns [`ConfStatus::Expiring`].
    pub warn_before: Duration,
    /// Bounds each URL attempt as a whole: connect, headers and body.
    pub request_timeout: Duration,
    /// Larger bodies are refused.
    pub max_conf_bytes: usize,
    pub clock: Clock,
}

impl ConfClientConfig {
    /// The defaults: poll every 30 s, warn 3 min before expiry, 10 s per request, 64 MiB bodies,
    /// the system clock.
    pub fn new(anchor: Anchor, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            anchor,
            state_dir: state_dir.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            warn_before: DEFAULT_WARN_BEFORE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_conf_bytes: DEFAULT_MAX_CONF_BYTES,
            clock: Clock::system(),
        }
    }
}

/// Why one configuration URL gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// Connection refused, reset, DNS, protocol error...
    Transport(String),
    Timeout(Duration),
    Status(StatusCode),
    BodyTooLarge {
        limit: usize,
    },
    Body(String),
}

impl fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchFailure::Transport(e) => f.write_str(e),
            FetchFailure::Timeout(d) => write!(f, "no complete answer within {}", human(*d)),
            FetchFailure::Status(s) => write!(f, "HTTP status {s}"),
            FetchFailure::BodyTooLarge { limit } => write!(f, "body is larger than the {limit}-byte limit"),
            FetchFailure::Body(e) => write!(f, "body could not be read: {e}"),
        }
    }
}

/// One URL that was tried and failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchAttempt {
    pub url: String,
    pub failure: FetchFailure,
}

impl fmt::Display for FetchAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.failure)
    }
}

fn list(attempts: &[FetchAttempt]) -> String {
    attempts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// What went wrong starting the client or during a poll.
#[derive(Debug, thiserror::Error)]
pub enum ConfClientError {
    #[error("configuration URL {url:?} is not usable: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid configuration client settings: {0}")]
    InvalidSettings(String),
    #[error("the configuration client must be started inside a Tokio runtime")]
    NoRuntime,
    #[error("state directory {} is in use by another configuration client", path.display())]
    StateDirInUse { path: PathBuf },
    /// Every URL failed; HTTP error statuses and oversized bodies are reported here, per URL,
    /// because any of them sends the client on to the next URL.
    #[error("no configuration URL answered: {}", list(attempts))]
    Unreachable { attempts: Vec<FetchAttempt> },
    /// The downloaded configuration was refused; nothing changed.
    #[error("refused the configuration from {url}: {source}")]
    Refused {
        url: String,
        #[source]
        source: ConfError,
    },
    #[error(
        "persisted configuration {} does not verify against the anchor and learned keys: {source}; \
         it is the rollback floor, so it is not discarded: remove it deliberately if the anchor was replaced",
        path.display()
    )]
    PersistedConfRefused {
        path: PathBuf,
        #[source]
        source: ConfError,
    },
    #[error("learned keys file {} is not usable: {reason}", path.display())]
    LearnedKeysInvalid { path: PathBuf, reason: String },
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ConfClientError {
    /// The verification error, for a refused configuration (downloaded or persisted).
    pub fn conf_error(&self) -> Option<&ConfError> {
        match self {
            ConfClientError::Refused { source, .. }
            | ConfClientError::PersistedConfRefused { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ConfClientError + 'a {
    move |source| ConfClientError::Io { action, path: path.to_owned(), source }
}

/// The outcome of one successful poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// A newer (or newly signed) configuration was verified, persisted and published.
    Updated { version: u64 },
    /// The server answered 304, or served exactly the bytes already held.
    NotModified,
}

/// Where the held configuration stands at some moment; `Display` is meant for operators
/// (e.g. a readiness endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfStatus {
    /// No configuration was ever obtained.
    Missing,
    Valid {
        version: u64,
        expires_at: SystemTime,
        remaining: Duration,
    },
    /// Still usable, but the registry has not been reached for a while.
    Expiring {
        version: u64,
        expires_at: SystemTime,
        remaining: Duration,
    },
    /// Kept as the rollback floor; not usable for traffic.
    Expired {
        version: u64,
        expires_at: SystemTime,
        since: Duration,
    },
}

impl ConfStatus {
    pub fn of(conf: Option<&GlobalConf>, now: SystemTime, warn_before: Duration) -> Self {
        let Some(conf) = conf else { return ConfStatus::Missing };
        let (version, expires_at) = (conf.version, conf.expires_at);
        match Freshness::of(conf, now, warn_before) {
            Freshness::Valid { remaining } => ConfStatus::Valid { version, expires_at, remaining },
            Freshness::Expiring { remaining } => ConfStatus::Expiring { version, expires_at, remaining },
            Freshness::Expired { since } => ConfStatus::Expired { version, expires_at, since },
        }
    }

    /// Whether traffic may be served from the held configuration.
    pub fn is_usable(&self) -> bool {
        matches!(self, ConfStatus::Valid { .. } | ConfStatus::Expiring { .. })
    }
}

impl fmt::Display for ConfStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfStatus::Missing => {
                f.write_str("no global configuration yet: the registry has never been reached")
            }
            ConfStatus::Valid { version, expires_at, remaining } => write!(
                f,
                "global configuration version {version} is valid until {} ({} left)",
                utc(expires_at),
                human(remaining)
            ),
            ConfStatus::Expiring { version, expires_at, remaining } => write!(
                f,
                "global configuration version {version} expires at {} ({} left): the registry has not been reached lately",
                utc(expires_at),
                human(remaining)
            ),
            ConfStatus::Expired { version, expires_at, since } => write!(
                f,
                "global configuration version {version} expired at {} ({} ago): traffic is refused until a fresh one is fetched",
                utc(expires_at),
                human(since)
            ),
        }
    }
}

/// Keeps a verified global configuration current. Dropping it (or [`ConfClient::shutdown`])
/// stops the background poll.
pub struct ConfClient {
    inner: Arc<Inner>,
    poller: Option<Poller>,
}

struct Poller {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl fmt::Debug for ConfClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfClient")
            .field("instance", &self.inner.anchor.instance)
            .field("state_dir", &self.inner.state_dir)
            .field("polling", &self.poller.is_some())
            .finish_non_exhaustive()
    }
}

impl ConfClient {
    /// [`ConfClient::open`] plus a background task that polls now and then every
    /// `poll_interval`. Must be called inside a Tokio runtime.
    pub fn start(config: ConfClientConfig) -> Result<Self, ConfClientError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfClientError::NoRuntime)?;
        let mut client = Self::open(config)?;
        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(poll_loop(client.inner.clone(), stopped));
        client.poller = Some(Poller { stop, task });
        Ok(client)
    }

    /// Checks the settings, locks the state directory and loads the persisted configuration and
    /// learned keys, without polling: refreshes happen only through [`ConfClient::refresh_now`].
    /// Does blocking file I/O (once, at start).
    pub fn open(config: ConfClientConfig) -> Result<Self, ConfClientError> {
        let ConfClientConfig {
            anchor,
            state_dir,
            poll_interval,
            warn_before,
            request_timeout,
            max_conf_bytes,
            clock,
        } = config;
        if poll_interval.is_zero() {
            return Err(ConfClientError::InvalidSettings("poll_interval must not be zero".into()));
        }
        if request_timeout.is_zero() {
            return Err(ConfClientError::InvalidSettings("request_timeout must not be zero".into()));
        }
        if max_conf_bytes == 0 {
            return Err(ConfClientError::InvalidSettings("max_conf_bytes must not be zero".into()));
        }
        if anchor.conf_urls.is_empty() {
            return Err(ConfClientError::InvalidSettings("the anchor lists no configuration URL".into()));
        }
        let urls = anchor.conf_urls.iter().map(|u| parse_url(u)).collect::<Result<Vec<_>, _>>()?;

        fs::create_dir_all(&state_dir).map_err(io_error("create the state directory", &state_dir))?;
        let lock = lock_state_dir(&state_dir)?;

        let now = clock.now();
        let mut learned = load_learned_keys(&state_dir, &anchor)?;
        let conf_path = state_dir.join(CONF_FILE);
        let held = match fs::read(&conf_path) {
            Ok(bytes) => {
                Some(verify_ignoring_expiry(&bytes, &trusted_anchor(&anchor, &learned), now).map_err(
                    |source| ConfClientError::PersistedConfRefused { path: conf_path.clone(), source },
                )?)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error("read", &conf_path)(e)),
        };
        if let Some(held) = &held {
            let announced = announced_keys(&anchor, &held.conf);
            if announced != learned {
                // Repairs a crash between writing the configuration and its learned keys.
                persist_learned_keys(&state_dir, &anchor, &announced, now)?;
                learned = announced;
            }
            let status = ConfStatus::of(Some(&held.conf), now, warn_before);
            info!(path = %conf_path.display(), %status, "loaded the persisted global configuration");
        }

        let http = {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(request_timeout));
            // No idle connections: a poll every half minute does not need them, and none outlive
            // the client.
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector)
        };
        let (published, _) = watch::channel(held.map(Arc::new));
        let inner = Inner {
            anchor,
            urls,
            state_dir,
            poll_interval,
            warn_before,
            request_timeout,
            max_conf_bytes,
            clock,
            http,
            state: Arc::new(Mutex::new(State { etag: None, learned })),
            published,
            _lock: lock,
        };
        Ok(Self { inner: Arc::new(inner), poller: None })
    }

    /// Polls once: see the module documentation. Concurrent calls (and the background poll) are
    /// serialised.
    pub async fn refresh_now(&self) -> Result<Refresh, ConfClientError> {
        self.inner.refresh().await
    }

    /// Receives every published configuration. The value is `None` until one is obtained; a
    /// published configuration may be expired (check [`ConfClient::status`] before serving).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<VerifiedConf>>> {
        self.inner.published.subscribe()
    }

    /// The held configuration, possibly expired.
    pub fn current(&self) -> Option<Arc<VerifiedConf>> {
        self.inner.published.borrow().clone()
    }

    pub fn status(&self, now: SystemTime) -> ConfStatus {
        self.inner.status(now)
    }

    /// Stops the background poll and waits for it to finish; a poll in progress is abandoned
    /// (a write already under way completes, so the files stay consistent).
    pub async fn shutdown(mut self) {
        if let Some(Poller { stop, task }) = self.poller.take() {
            // The task may already have ended; then there is no one to tell.
            let _ = stop.send(());
            if let Err(e) = task.await
                && e.is_panic()
            {
                warn!("the global configuration poller had panicked");
            }
        }
    }
}

impl Drop for ConfClient {
    fn drop(&mut self) {
        if let Some(Poller { stop, task }) = self.poller.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}

struct State {
    /// The ETag of the held configuration's download, sent as `If-None-Match`.
    etag: Option<HeaderValue>,
    /// Keys announced by the held configuration that are not in the anchor.
    learned: Vec<ConfKey>,
}

struct Inner {
    anchor: Anchor,
    /// As written in the anchor (for messages), and parsed.
    urls: Vec<(String, Uri)>,
    state_dir: PathBuf,
    poll_interval: Duration,
    warn_before: Duration,
    request_timeout: Duration,
    max_conf_bytes: usize,
    clock: Clock,
    http: Client<HttpConnector, Empty<Bytes>>,
    /// Held across a whole poll, including the blocking write (owned guard), so polls and writes
    /// never interleave.
    state: Arc<Mutex<State>>,
    /// The held configuration; only written with `state` locked.
    published: watch::Sender<Option<Arc<VerifiedConf>>>,
    _lock: File,
}

enum Fetched {
    NotModified,
    Body { bytes: Bytes, etag: Option<HeaderValue> },
}

impl Inner {
    fn status(&self, now: SystemTime) -> ConfStatus {
        ConfStatus::of(self.published.borrow().as_ref().map(|v| &v.conf), now, self.warn_before)
    }

    async fn refresh(&self) -> Result<Refresh, ConfClientError> {
        let state = self.state.clone().lock_owned().await;
        let held = self.published.borrow().clone();
        let etag = held.as_ref().and(state.etag.clone());
        let (url, fetched) = self.fetch_any(etag.as_ref()).await?;
        let (bytes, etag) = match fetched {
            Fetched::NotModified => {
                debug!(url, "global configuration not modified");
                return Ok(Refresh::NotModified);
            }
            Fetched::Body { bytes, etag } => (bytes, etag),
        };
        if let Some(held) = &held
            && held.bytes[..] == bytes[..]
        {
            // Same bytes (e.g. the first poll after a restart, or a server without ETags).
            let mut state = state;
            state.etag = etag;
            return Ok(Refresh::NotModified);
        }

        let now = self.clock.now();
        let verified = verify(&bytes, &trusted_anchor(&self.anchor, &state.learned), now)
            .and_then(|v| match &held {
                Some(held) => v.check_not_older_than(&held.conf).map(|()| v),
                None => Ok(v),
            })
            .map_err(|source| {
                warn!(url, error = %source, "refused a global configuration");
                ConfClientError::Refused { url: url.to_owned(), source }
            })?;
        let verified = Arc::new(verified);
        let learned = announced_keys(&self.anchor, &verified.conf);

        let (mut state, written) = {
            let (dir, anchor, verified) = (self.state_dir.clone(), self.anchor.clone(), verified.clone());
            let learned = learned.clone();
            tokio::task::spawn_blocking(move || {
                let written = persist(&dir, &verified.bytes, &anchor, &state.learned, &learned, now);
                (state, written)
            })
            .await
            .map_err(|e| ConfClientError::Io {
                action: "persist the configuration in",
                path: self.state_dir.clone(),
                source: io::Error::other(e.to_string()),
            })?
        };
        written?;

        let version = verified.conf.version;
        let new_keys: Vec<String> =
            learned.iter().filter(|k| !state.learned.contains(k)).map(|k| k.id.to_string()).collect();
        if !new_keys.is_empty() {
            info!(keys = ?new_keys, "learned configuration-signing keys announced by a trusted configuration");
        }
        state.learned = learned;
        state.etag = etag;
        info!(url, version, signed_by = %verified.signed_by.id, "global configuration updated");
        self.published.send_replace(Some(verified));
        Ok(Refresh::Updated { version })
    }

    /// The first URL that answers 200 or 304, in the anchor's order.
    async fn fetch_any(&self, etag: Option<&HeaderValue>) -> Result<(&str, Fetched), ConfClientError> {
        let mut attempts = Vec::new();
        for (url, uri) in &self.urls {
            let result = match tokio::time::timeout(self.request_timeout, self.fetch(uri, etag)).await {
                Ok(result) => result,
                Err(_) => Err(FetchFailure::Timeout(self.request_timeout)),
            };
            match result {
                Ok(fetched) => return Ok((url, fetched)),
                Err(failure) => {
                    debug!(url, %failure, "configuration URL failed");
                    attempts.push(FetchAttempt { url: url.clone(), failure });
                }
            }
        }
        Err(ConfClientError::Unreachable { attempts })
    }

    async fn fetch(&self, uri: &Uri, etag: Option<&HeaderValue>) -> Result<Fetched, FetchFailure> {
        let mut request = Request::get(uri.clone()).header(USER_AGENT, USER_AGENT_VALUE);
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag.clone());
        }
        let request = request.body(Empty::new()).map_err(|e| FetchFailure::Transport(e.to_string()))?;
        let response =
            self.http.request(request).await.map_err(|e| FetchFailure::Transport(error_chain(&e)))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_MODIFIED if etag.is_some() => return Ok(Fetched::NotModified),
            status => return Err(FetchFailure::Status(status)),
        }
        let limit = self.max_conf_bytes;
        let declared =
            response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(FetchFailure::BodyTooLarge { limit });
        }
        let etag = response.headers().get(ETAG).cloned();
        let body = Limited::new(response.into_body(), limit).collect().await.map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                FetchFailure::BodyTooLarge { limit }
            } else {
                FetchFailure::Body(error_chain(&*e))
            }
        })?;
        Ok(Fetched::Body { bytes: body.to_bytes(), etag })
    }
}

async fn poll_loop(inner: Arc<Inner>, mut stop: oneshot::Receiver<()>) {
    let mut ticker = tokio::time::interval(inner.poll_interval);
    // After a slow poll, wait a full interval rather than polling in a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // A closed channel (the client was dropped) stops the loop too.
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            biased;
            _ = &mut stop => break,
            result = inner.refresh() => match result {
                Ok(_) | Err(ConfClientError::Refused { .. }) => {} // logged where it happened
                Err(e) => warn!(error = %e, "global configuration poll failed"),
            },
        }
        match inner.status(inner.clock.now()) {
            status @ (ConfStatus::Expiring { .. } | ConfStatus::Expired { .. }) => warn!(%status),
            ConfStatus::Missing | ConfStatus::Valid { .. } => {}
        }
    }
    debug!("global configuration poller stopped");
}

/// Only plain `http://` for now: the document is signed, so its integrity does not depend on the
/// transport.
fn parse_url(url: &str) -> Result<(String, Uri), ConfClientError> {
    let invalid = |reason: String| ConfClientError::InvalidUrl { url: url.to_owned(), reason };
    let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => {}
        Some(s) => return Err(invalid(format!("scheme {s:?} is not supported; only http:// is, for now"))),
        None => return Err(invalid("not an absolute http:// URL".into())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    Ok((url.to_owned(), uri))
}

fn lock_state_dir(dir: &Path) -> Result<File, ConfClientError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error("open the lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(ConfClientError::StateDirInUse { path: dir.to_owned() }),
        Err(TryLockError::Error(e)) => Err(io_error("lock", &path)(e)),
    }
}

/// The anchor with the learned keys added: the set a downloaded configuration is checked against.
fn trusted_anchor(anchor: &Anchor, learned: &[ConfKey]) -> Anchor {
    let mut trusted = anchor.clone();
    trusted.signing_keys.extend(learned.iter().cloned());
    trusted
}

/// The keys `conf` announces that the anchor does not already hold.
fn announced_keys(anchor: &Anchor, conf: &GlobalConf) -> Vec<ConfKey> {
    let mut keys: Vec<ConfKey> = Vec::new();
    for key in &conf.signing_keys {
        if !anchor.signing_keys.iter().chain(&keys).any(|k| k.id == key.id) {
            keys.push(key.clone());
        }
    }
    keys
}

fn load_learned_keys(dir: &Path, anchor: &Anchor) -> Result<Vec<ConfKey>, ConfClientError> {
    let path = dir.join(LEARNED_KEYS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("read", &path)(e)),
    };
    let invalid = |reason: String| ConfClientError::LearnedKeysInvalid { path: path.clone(), reason };
    let file = Anchor::from_json(&text).map_err(|e: AnchorError| invalid(e.to_string()))?;
    if file.instance != anchor.instance {
        return Err(invalid(format!(
            "it is for instance {}, the anchor for {}",
            file.instance, anchor.instance
        )));
    }
    Ok(file.signing_keys.into_iter().filter(|k| !anchor.signing_keys.iter().any(|a| a.id == k.id)).collect())
}

/// Writes the configuration, then the learned keys if they changed. Blocking.
fn persist(
    dir: &Path,
    conf: &[u8],
    anchor: &Anchor,
    old_learned: &[ConfKey],
    learned: &[ConfKey],
    now: SystemTime,
) -> Result<(), ConfClientError> {
    write_atomically(dir, CONF_FILE, conf)?;
    if learned != old_learned {
        persist_learned_keys(dir, anchor, learned, now)?;
    }
    Ok(())
}

fn persist_learned_keys(
    dir: &Path,
    anchor: &Anchor,
    learned: &[ConfKey],
    now: SystemTime,
) -> Result<(), ConfClientError> {
    if learned.is_empty() {
        // Anchor JSON cannot hold an empty key list; no file means no learned key.
        let path = dir.join(LEARNED_KEYS_FILE);
        return match fs::remove_file(&path) {
            Ok(()) => sync_dir(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path)(e)),
        };
    }
    let file = Anchor {
        instance: anchor.instance.clone(),
        conf_urls: anchor.conf_urls.clone(),
        signing_keys: learned.to_vec(),
        generated_at: now,
    };
    write_atomically(dir, LEARNED_KEYS_FILE, file.to_json().as_bytes())
}

/// Temporary file, fsync, rename, fsync of the directory: after a crash the file is either the
/// old or the new content, never a mix. The fixed temporary name is safe because writes are
/// serialised (state lock, directory lock).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ConfClientError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(io_error("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_error("rename into place", &path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), ConfClientError> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("sync the directory", dir))?;
    Ok(())
}

/// hyper's errors say little at the top ("client error (Connect)"); the causes say why.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `2030-01-01T00:00:00Z`, UTC, whole seconds.
fn utc(t: SystemTime) -> String {
    let Ok(since_epoch) = t.duration_since(UNIX_EPOCH) else { return "(before 1970)".into() };
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a proleptic Gregorian date, counting in 400-year eras that start
    // on 1 March (so the leap day is the last day of a year).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `1h 5m`, `2m 30s`, `45s`: two units at most, enough for an operator.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(1_893_456_000 + 3_723)), "2030-01-01T01:02:03Z");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(4_107_542_399)), "2100-02-28T23:59:59Z");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(4_107_542_400)), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(999)), "0s");
        assert_eq!(human(Duration::from_secs(150)), "2m 30s");
        assert_eq!(human(Duration::from_secs(3900)), "1h 5m");
        assert_eq!(human(Duration::from_secs(90_000)), "1d 1h");
    }

    #[test]
    fn only_http_urls() {
        assert!(parse_url("http://registry.example/globalconf").is_ok());
        for bad in ["https://registry.example/globalconf", "ftp://x/y", "/relative", "http://", "not a url"] {
            assert!(
                matches!(parse_url(bad), Err(ConfClientError::InvalidUrl { .. })),
                "{bad} should be refused"
            );
        }
    }
}
