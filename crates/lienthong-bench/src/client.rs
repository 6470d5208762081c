//! The harness's own HTTP client, for readiness checks and the body-size sweep (wrk cannot
//! stream a 100 MiB body): one request at a time, the body generated and the answer counted
//! as they stream, so the client holds neither.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::backend::Repeat;

#[derive(Debug, Clone)]
pub(crate) struct BenchClient {
    http: Client<HttpConnector, Repeat>,
}

/// One exchange: status, bytes received, time from sending the head to the last byte.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub status: u16,
    pub received: u64,
    pub elapsed: Duration,
}

impl BenchClient {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self { http: Client::builder(TokioExecutor::new()).build(connector) }
    }

    /// POSTs `size` bytes to `url?size=size` (the backend answers as many) with `headers`.
    pub(crate) async fn post(&self, url: &str, size: u64, headers: &[(&str, &str)]) -> Result<Exchange> {
        let mut req = Request::builder().method("POST").uri(format!("{url}?size={size}"));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.header(http::header::CONTENT_LENGTH, size).body(Repeat::new(size))?;
        let start = Instant::now();
        let resp = tokio::time::timeout(Duration::from_secs(600), self.http.request(req))
            .await
            .context("no answer within 10 minutes")?
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                received += data.len() as u64;
            }
        }
        Ok(Exchange { status, received, elapsed: start.elapsed() })
    }

    /// Retries a 1 KiB exchange until it answers 200 with the full body, for up to `limit`.
    pub(crate) async fn wait_ready(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        limit: Duration,
    ) -> Result<()> {
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
