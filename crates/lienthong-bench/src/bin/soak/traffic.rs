//! The soak's traffic: concurrent r1 clients of the consumer node sending a mix of calls at a
//! bounded rate, each call recorded with its X-Road-Id and outcome. Successful calls (`200`
//! from the consumer node) are the acknowledged exchanges the logs must hold afterwards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lienthong_bench::client::BenchClient;
use serde::Serialize;

use crate::setup::{CLIENT, DENIED_CLIENT, SERVICE};
use crate::util::Rng;

/// A whole call, its answer's body included, must end within this.
const CALL_LIMIT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// GET, small answer.
    Get,
    /// POST, small body and answer.
    Post,
    /// POST, 64 KiB..2 MiB body (past 1 MiB the nodes spool it), 64 KiB..1 MiB answer.
    PostLarge,
    /// From a subsystem without a grant: must be refused.
    Denied,
    /// Malformed in one of several ways: must be refused.
    Malformed,
    /// The fault injector's calls checking that a node serves again.
    Probe,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Post => "post",
            Kind::PostLarge => "post-large",
            Kind::Denied => "denied",
            Kind::Malformed => "malformed",
            Kind::Probe => "probe",
        }
    }

    /// Calls that must never be acknowledged.
    pub(crate) fn must_fail(self) -> bool {
        matches!(self, Kind::Denied | Kind::Malformed)
    }
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `200` from the consumer node: acknowledged. `body_error` when the answer's body then
    /// broke off (the exchange is still acknowledged: the node logged it before answering).
    Ack { body_error: Option<String> },
    /// Any other status, with its `X-Road-Error` code (or `HTTP <status>` without one).
    Refused { status: u16, code: String },
    /// No HTTP answer (connection refused or cut, timeout).
    NoAnswer(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub kind: Kind,
    /// The X-Road-Id the client sent.
    pub id: String,
    /// The X-Road-Id the node answered with, when it did.
    pub answered_id: Option<String>,
    pub outcome: Outcome,
    /// Since the start of the run.
    pub at: Duration,
    pub elapsed: Duration,
}

/// Every call of the run, from the clients and the probes.
pub(crate) type CallLog = Arc<Mutex<Vec<Call>>>;

/// What a call sends.
#[derive(Debug)]
struct Request {
    method: &'static str,
    uri: String,
    body: u64,
    headers: Vec<(&'static str, String)>,
}

/// Sends one request, with `id` as its X-Road-Id, and records it.
async fn send(
    client: &BenchClient,
    kind: Kind,
    req: Request,
    id: String,
    start: Instant,
    log: &CallLog,
) -> Call {
    let mut headers: Vec<(&str, &str)> = req.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    headers.push(("x-road-id", &id));
    let t = Instant::now();
    let result = client.send(req.method, &req.uri, req.body, &headers, CALL_LIMIT).await;
    let (outcome, answered_id) = match result {
        Ok(e) => {
            let answered = e.header("x-road-id").map(str::to_owned);
            let outcome = if e.status == 200 {
                Outcome::Ack { body_error: e.body_error.clone() }
            } else {
                let code =
                    e.header("x-road-error").map_or_else(|| format!("HTTP {}", e.status), str::to_owned);
                Outcome::Refused { status: e.status, code }
            };
            (outcome, answered)
        }
        Err(e) => (Outcome::NoAnswer(no_answer_reason(&e)), None),
    };
    let call = Call { kind, id, answered_id, outcome, at: t - start, elapsed: t.elapsed() };
    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(call.clone());
    call
}

/// A short, countable reason for a call without an answer.
fn no_answer_reason(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    if text.contains("Connection refused") {
        "connection refused".into()
    } else if text.contains("no answer within") {
        "timed out".into()
    } else if text.contains("reset") || text.contains("closed") || text.contains("IncompleteMessage") {
        "connection closed".into()
    } else {
        text.chars().take(120).collect()
    }
}

fn client_headers(client: &str) -> Vec<(&'static str, String)> {
    vec![("x-road-client", client.to_owned())]
}

/// The request for one call of `kind`.
fn request(kind: Kind, url: &str, rng: &mut Rng) -> Request {
    let n = rng.range(1, 99_999);
    match kind {
        Kind::Get | Kind::Probe => Request {
            method: "GET",
            uri: format!("{url}/items/{n}?size={}", rng.range(64, 4 << 10)),
            body: 0,
            headers: client_headers(CLIENT),
        },
        Kind::Post => Request {
            method: "POST",
            uri: format!("{url}/items?size={}", rng.range(64, 4 << 10)),
            body: rng.range(64, 4 << 10),
            headers: client_headers(CLIENT),
        },
        Kind::PostLarge => Request {
            method: "POST",
            uri: format!("{url}/documents?size={}", rng.range(64 << 10, 1 << 20)),
            body: rng.range(64 << 10, 2 << 20),
            headers: client_headers(CLIENT),
        },
        Kind::Denied => Request {
            method: "GET",
            uri: format!("{url}/items/{n}"),
            body: 0,
            headers: client_headers(DENIED_CLIENT),
        },
        Kind::Malformed => malformed(url, rng),
    }
}

/// One of several malformed calls; each must be refused with a client error.
fn malformed(url: &str, rng: &mut Rng) -> Request {
    let base = url.split("/r1/").next().unwrap_or(url);
    let get = |uri: String, headers| Request { method: "GET", uri, body: 0, headers };
    match rng.range(0, 4) {
        0 => get(format!("{url}/items/1"), client_headers("not a client id")),
        1 => get(format!("{url}/items/1"), vec![]),
        2 => get(format!("{base}/r1/{SERVICE}-unknown/items/1"), client_headers(CLIENT)),
        3 => get(format!("{url}/public/..%2fsecret"), client_headers(CLIENT)),
        _ => get(format!("{base}/r1/SOAK/GOV"), client_headers(CLIENT)),
    }
}

/// The traffic's shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mix {
    pub clients: u32,
    /// Calls per second, all clients together.
    pub rate: f64,
}

const WEIGHTS: [(Kind, u32); 5] =
    [(Kind::Get, 40), (Kind::Post, 40), (Kind::PostLarge, 6), (Kind::Denied, 7), (Kind::Malformed, 7)];

/// Starts the clients; they run until `stop` is set.
pub(crate) fn spawn(
    mix: Mix,
    url: &str,
    rng: &mut Rng,
    seed: u64,
    start: Instant,
    stop: &Arc<AtomicBool>,
    log: &CallLog,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mean_gap = f64::from(mix.clients) / mix.rate.max(0.01);
    (0..mix.clients)
        .map(|c| {
            let mut rng = rng.fork(u64::from(c));
            let (url, stop, log) = (url.to_owned(), stop.clone(), log.clone());
            tokio::spawn(async move {
                let client = BenchClient::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let kind = rng.weighted(&WEIGHTS);
                    let req = request(kind, &url, &mut rng);
                    n += 1;
                    send(&client, kind, req, format!("soak-{seed}-c{c}-{n}"), start, &log).await;
                    // Uniform pauses around the mean keep the rate without lock-step clients.
                    let pause = Duration::from_secs_f64(mean_gap * 2.0 * rng.unit());
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect()
}

/// One probe through the consumer node; `pinned` makes it go to that provider node.
pub(crate) async fn probe(
    client: &BenchClient,
    url: &str,
    pinned: Option<&str>,
    id: String,
    start: Instant,
    log: &CallLog,
) -> Call {
    let mut req = request(Kind::Probe, url, &mut Rng::new(id.len() as u64));
    if let Some(node) = pinned {
        req.headers.push(("x-road-security-server", node.to_owned()));
    }
    send(client, Kind::Probe, req, id, start, log).await
}

/// What `/readyz` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    /// Its first line (the reason).
    NotReady(String),
    Unreachable,
}

/// Asks a node's `/readyz` over a plain connection (status and the body's first line).
pub(crate) async fn readyz(http: SocketAddr) -> Readiness {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(http).await.ok()?;
        let head = format!("GET /readyz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.take(64 << 10).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let ok = head.lines().next()?.split(' ').nth(1)? == "200";
        Some((ok, body.lines().next().unwrap_or_default().trim().to_owned()))
    };
    match tokio::time::timeout(Duration::from_secs(2), fetch).await {
        Ok(Some((true, _))) => Readiness::Ready,
        Ok(Some((false, reason))) => Readiness::NotReady(reason),
        _ => Readiness::Unreachable,
    }
}
