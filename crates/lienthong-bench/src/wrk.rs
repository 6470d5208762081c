//! One load run with wrk: a fixed number of connections for a fixed time, every request the
//! same POST; the numbers come from wrk's own `done` hook as JSON, not from its text report.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// What one run measured (latencies in microseconds).
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct WrkResult {
    pub requests: u64,
    pub duration_us: u64,
    /// Answers outside 2xx/3xx.
    pub status_errors: u64,
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl WrkResult {
    pub(crate) fn throughput(&self) -> f64 {
        self.requests as f64 * 1e6 / self.duration_us.max(1) as f64
    }

    pub(crate) fn errors(&self) -> u64 {
        self.status_errors + self.connect + self.read + self.write + self.timeout
    }
}

/// Writes the Lua script for one target: a POST of `body_bytes`, with `headers`.
pub(crate) fn write_script(path: &Path, body_bytes: usize, headers: &[(&str, &str)]) -> Result<()> {
    let mut lua = String::from("wrk.method = \"POST\"\n");
    lua.push_str(&format!("wrk.body = string.rep(\"x\", {body_bytes})\n"));
    lua.push_str("wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n");
    for (name, value) in headers {
        lua.push_str(&format!("wrk.headers[{name:?}] = {value:?}\n"));
    }
    lua.push_str(
        r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"#,
    );
    std::fs::write(path, lua).context("write the wrk script")
}

/// Runs wrk against `url` with `connections` connections on one thread for `duration`, on
/// `cpu` if given.
pub(crate) fn run(
    url: &str,
    script: &Path,
    connections: u32,
    duration: Duration,
    cpu: Option<u32>,
) -> Result<WrkResult> {
    let mut cmd = match cpu {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.arg("-c").arg(c.to_string()).arg("wrk");
            t
        }
        None => Command::new("wrk"),
    };
    cmd.arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script)
        .arg(url);
    let out = cmd.output().context("run wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed ({}): {}{}", out.status, stdout, String::from_utf8_lossy(&out.stderr));
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .with_context(|| format!("wrk printed no result: {stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("wrk's result: {line}"))
}
