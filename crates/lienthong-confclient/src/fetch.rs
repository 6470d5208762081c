//! Downloading the configuration: the anchor's URLs in order, each attempt bounded in time and
//! size, `If-None-Match` with the held ETag.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, ETAG, IF_NONE_MATCH, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::debug;

use crate::error::{ConfClientError, FetchAttempt, FetchFailure};

const USER_AGENT_VALUE: &str = concat!("lienthong-confclient/", env!("CARGO_PKG_VERSION"));

/// What a URL answered.
pub(crate) enum Fetched {
    NotModified,
    Body { bytes: Bytes, etag: Option<HeaderValue> },
}

/// The anchor's URLs and an HTTP client bounded by the settings.
pub(crate) struct Fetcher {
    /// As written in the anchor (for messages), and parsed.
    urls: Vec<(String, Uri)>,
    request_timeout: Duration,
    max_conf_bytes: usize,
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl Fetcher {
    pub(crate) fn new(urls: Vec<(String, Uri)>, request_timeout: Duration, max_conf_bytes: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(request_timeout));
        // No idle connections: a poll every half minute does not need them, and none outlive
        // the client.
        let http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        Self { urls, request_timeout, max_conf_bytes, http }
    }

    /// The first URL that answers 200 or 304, in the anchor's order.
    pub(crate) async fn fetch_any(
        &self,
        etag: Option<&HeaderValue>,
    ) -> Result<(&str, Fetched), ConfClientError> {
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
