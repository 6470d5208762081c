//! The client: opens the state directory, holds and publishes the verified configuration, and
//! runs one poll at a time (on demand or from the background task).

use std::fmt;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use lienthong_globalconf::{Anchor, ConfKey, VerifiedConf, verify, verify_ignoring_expiry};
use tokio::sync::{Mutex, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use crate::error::ConfClientError;
use crate::fetch::{Fetched, Fetcher};
use crate::settings::ConfClientConfig;
use crate::status::ConfStatus;
use crate::store::{self, CONF_FILE};
use crate::trust::{announced_keys, trusted_anchor};
use lienthong_runtime::Clock;

/// The outcome of one successful poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// A newer (or newly signed) configuration was verified, persisted and published.
    Updated { version: u64 },
    /// The server answered 304, or served exactly the bytes already held.
    NotModified,
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
        let urls = config.check()?;
        let ConfClientConfig {
            anchor,
            state_dir,
            poll_interval,
            warn_before,
            request_timeout,
            max_conf_bytes,
            clock,
        } = config;
        let lock = store::lock_state_dir(&state_dir)?;

        let now = clock.now();
        let mut learned = store::load_learned_keys(&state_dir, &anchor)?;
        let held = match store::load_conf(&state_dir)? {
            Some(bytes) => {
                Some(verify_ignoring_expiry(&bytes, &trusted_anchor(&anchor, &learned), now).map_err(
                    |source| ConfClientError::PersistedConfRefused {
                        path: state_dir.join(CONF_FILE),
                        source,
                    },
                )?)
            }
            None => None,
        };
        if let Some(held) = &held {
            let announced = announced_keys(&anchor, &held.conf);
            if announced != learned {
                // Repairs a crash between writing the configuration and its learned keys.
                store::persist_learned_keys(&state_dir, &anchor, &announced, now)?;
                learned = announced;
            }
            let status = ConfStatus::of(Some(&held.conf), now, warn_before);
            info!(path = %state_dir.join(CONF_FILE).display(), %status, "loaded the persisted global configuration");
        }

        let (published, _) = watch::channel(held.map(Arc::new));
        let inner = Inner {
            anchor,
            fetcher: Fetcher::new(urls, request_timeout, max_conf_bytes),
            state_dir,
            poll_interval,
            warn_before,
            clock,
            state: Arc::new(Mutex::new(State { etag: None, learned })),
            published,
            _lock: lock,
        };
        Ok(Self { inner: Arc::new(inner), poller: None })
    }

    /// Polls once: see the crate documentation. Concurrent calls (and the background poll) are
    /// serialised.
    pub async fn refresh_now(&self) -> Result<Refresh, ConfClientError> {
        self.inner.refresh().await
    }

    /// Receives every published configuration. The value is `None` until one is obtained; a
    /// published configuration may be expired (check [`ConfClient::status`] before serving).
    /// The channel closes once the client and its poller are gone.
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
    fetcher: Fetcher,
    state_dir: PathBuf,
    poll_interval: Duration,
    warn_before: Duration,
    clock: Clock,
    /// Held across a whole poll, including the blocking write (owned guard), so polls and writes
    /// never interleave.
    state: Arc<Mutex<State>>,
    /// The held configuration; only written with `state` locked.
    published: watch::Sender<Option<Arc<VerifiedConf>>>,
    _lock: File,
}

impl Inner {
    fn status(&self, now: SystemTime) -> ConfStatus {
        ConfStatus::of(self.published.borrow().as_ref().map(|v| &v.conf), now, self.warn_before)
    }

    async fn refresh(&self) -> Result<Refresh, ConfClientError> {
        let state = self.state.clone().lock_owned().await;
        let held = self.published.borrow().clone();
        let etag = held.as_ref().and(state.etag.clone());
        let (url, fetched) = self.fetcher.fetch_any(etag.as_ref()).await?;
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
                let written = store::persist(&dir, &verified.bytes, &anchor, &state.learned, &learned, now);
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
