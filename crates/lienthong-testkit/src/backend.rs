//! A mock service backend: answers on 127.0.0.1:0 in the way a test sets, and remembers what it
//! was asked, so tests can assert that a refused request never reached it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the backend answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200 with a JSON summary of the request; a request to `/echo...` gets its body back.
    Echo,
    /// This status with a short JSON body.
    Status(u16),
    /// Waits this long before answering.
    Slow(Duration),
    /// Closes new connections without answering.
    Reset,
    /// 200 with about this many bytes of extra response headers (`x-big-N`, 1 KiB each).
    LargeHeaders(usize),
}

/// What the backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: [u8; 32],
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    mode: Mutex<Mode>,
    seen: Mutex<Vec<Seen>>,
}

/// A running mock backend; stops when dropped.
#[derive(Debug)]
pub struct MockBackend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for MockBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockBackend {
    /// Starts a backend that names itself `name` in its answers (`x-backend` header).
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let shared =
            Arc::new(Shared { name: name.into(), mode: Mutex::new(Mode::Echo), seen: Mutex::default() });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                if *s.mode.lock().expect("mode lock") == Mode::Reset {
                    // Closes the connection without answering.
                    drop(tcp);
                    continue;
                }
                let s = s.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(s.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { addr, shared, task }
    }

    /// The base URL to configure as the service URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode lock") = mode;
    }

    /// How many requests reached this backend.
    pub fn hits(&self) -> usize {
        self.shared.seen.lock().expect("seen lock").len()
    }

    pub fn last(&self) -> Option<Seen> {
        self.shared.seen.lock().expect("seen lock").last().cloned()
    }
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let mode = shared.mode.lock().expect("mode lock").clone();
    let (parts, mut body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let echo = parts.uri.path().starts_with("/echo");
    // Streams through the body without keeping it, unless it is echoed back.
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            len += data.len() as u64;
            if echo {
                kept.extend_from_slice(&data);
            }
        }
    }
    let seen = Seen {
        method: parts.method.to_string(),
        path_and_query: path_and_query.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body_len: len,
        body_sha256: hasher.finalize().into(),
    };
    shared.seen.lock().expect("seen lock").push(seen);
    let json = |status: u16, v: serde_json::Value| {
        let mut resp = Response::new(Full::new(Bytes::from(v.to_string())));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert("content-type", "application/json".parse().expect("valid"));
        resp.headers_mut().insert("x-backend", shared.name.parse().expect("valid"));
        resp
    };
    match mode {
        // A service error makes hyper close the connection without an answer.
        Mode::Reset => return Err(std::io::Error::other("mock backend resets the connection")),
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Status(code) => {
            return Ok(json(code, serde_json::json!({ "error": "backend says no", "status": code })));
        }
        Mode::LargeHeaders(total) => {
            let mut resp = json(200, serde_json::json!({ "large": "headers" }));
            let value = http::HeaderValue::from_str(&"h".repeat(1024)).expect("valid");
            for i in 0..total.div_ceil(1024) {
                let name = http::HeaderName::try_from(format!("x-big-{i}")).expect("valid");
                resp.headers_mut().insert(name, value.clone());
            }
            return Ok(resp);
        }
        Mode::Echo => {}
    }
    if echo {
        let mut resp = Response::new(Full::new(Bytes::from(kept)));
        resp.headers_mut().insert("x-backend", shared.name.parse().expect("valid"));
        resp.headers_mut().insert("content-type", "application/octet-stream".parse().expect("valid"));
        return Ok(resp);
    }
    Ok(json(
        200,
        serde_json::json!({
            "backend": shared.name,
            "method": parts.method.as_str(),
            "path": path_and_query,
            "body_len": len,
            "ho_ten": "Nguyễn Văn An",
            "so_dinh_danh": "001090012345",
        }),
    ))
}
