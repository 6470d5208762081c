//! What goes wrong: per URL ([`FetchFailure`]) and per start or poll ([`ConfClientError`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use lienthong_globalconf::ConfError;

use crate::text::human;

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

pub(crate) fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ConfClientError + 'a {
    move |source| ConfClientError::Io { action, path: path.to_owned(), source }
}
