//! The client's settings and the checks they pass before anything is opened.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use lienthong_globalconf::Anchor;

use crate::error::ConfClientError;
use lienthong_runtime::Clock;

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_WARN_BEFORE: Duration = Duration::from_secs(180);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Far above any real configuration; bounds what a misbehaving server can make us buffer.
pub const DEFAULT_MAX_CONF_BYTES: usize = 64 << 20;

/// Settings of a [`ConfClient`](crate::ConfClient).
#[derive(Debug, Clone)]
pub struct ConfClientConfig {
    pub anchor: Anchor,
    /// Holds [`CONF_FILE`](crate::CONF_FILE), [`LEARNED_KEYS_FILE`](crate::LEARNED_KEYS_FILE) and
    /// a lock file; created if missing.
    pub state_dir: PathBuf,
    pub poll_interval: Duration,
    /// How long before expiry the status turns [`ConfStatus::Expiring`](crate::ConfStatus::Expiring).
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

    /// Refuses settings no client can run with; returns the anchor's URLs, parsed.
    pub(crate) fn check(&self) -> Result<Vec<(String, Uri)>, ConfClientError> {
        if self.poll_interval.is_zero() {
            return Err(ConfClientError::InvalidSettings("poll_interval must not be zero".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfClientError::InvalidSettings("request_timeout must not be zero".into()));
        }
        if self.max_conf_bytes == 0 {
            return Err(ConfClientError::InvalidSettings("max_conf_bytes must not be zero".into()));
        }
        if self.anchor.conf_urls.is_empty() {
            return Err(ConfClientError::InvalidSettings("the anchor lists no configuration URL".into()));
        }
        self.anchor.conf_urls.iter().map(|u| parse_url(u)).collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
