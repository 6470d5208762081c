//! The harness's own HTTP client, for readiness checks, the body-size sweep (wrk cannot
//! stream a 100 MiB body) and the soak's traffic: the body generated and the answer counted as
//! they stream, so the client holds neither.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::backend::Repeat;

#[derive(Debug, Clone)]
pub struct BenchClient {
    http: Client<HttpConnector, Repeat>,
}

/// One exchange: status, response headers, bytes received, time from sending the head to the
/// last byte (or to the body's failure).
#[derive(Debug, Clone)]
pub struct Exchange {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub received: u64,
    /// Why the answer's body did not arrive whole, when it did not (the head did).
    pub body_error: Option<String>,
    pub elapsed: Duration,
}

impl Exchange {
    /// A response header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Default for BenchClient {
    fn default() -> Self {
        Self::new()
    }
}

impl BenchClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self { http: Client::builder(TokioExecutor::new()).build(connector) }
    }

    /// POSTs `size` bytes to `url?size=size` (the backend answers as many) with `headers`.
    pub async fn post(&self, url: &str, size: u64, headers: &[(&str, &str)]) -> Result<Exchange> {
        let e =
            self.send("POST", &format!("{url}?size={size}"), size, headers, Duration::from_secs(600)).await?;
        match &e.body_error {
            Some(why) => bail!("POST {url}: {why}"),
            None => Ok(e),
        }
    }

    /// Sends `method uri` with a generated body of `body` bytes and `headers`; the whole
    /// exchange, the answer's body included, must end within `limit`.
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        body: u64,
        headers: &[(&str, &str)],
        limit: Duration,
    ) -> Result<Exchange> {
        let mut req = Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        if body > 0 || method == "POST" {
            req = req.header(http::header::CONTENT_LENGTH, body);
        }
        let req = req.body(Repeat::new(body))?;
        let start = Instant::now();
        let resp = tokio::time::timeout(limit, self.http.request(req))
            .await
            .with_context(|| format!("no answer within {limit:?}"))?
            .with_context(|| format!("{method} {uri}"))?;
        let status = resp.status().as_u16();
        let (parts, mut body) = resp.into_parts();
        let mut received = 0u64;
        let read = async {
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame?.data_ref() {
                    received += data.len() as u64;
                }
            }
            Ok::<_, hyper::Error>(())
        };
        let body_error = match tokio::time::timeout(limit, read).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("the answer's body broke off: {e}")),
            Err(_) => Some(format!("the answer's body did not end within {limit:?}")),
        };
        Ok(Exchange { status, headers: parts.headers, received, body_error, elapsed: start.elapsed() })
    }

    /// Retries a 1 KiB exchange until it answers 200 with the full body, for up to `limit`.
    pub async fn wait_ready(&self, url: &str, headers: &[(&str, &str)], limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.post(url, 1024, headers).await {
                Ok(e) if e.status == 200 && e.received == 1024 => return Ok(()),
                Ok(e) => format!("status {}, {} bytes", e.status, e.received),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("{url} did not answer an exchange within {limit:?} (last: {last})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
