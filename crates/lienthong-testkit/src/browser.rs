//! A minimal W3C WebDriver client for end-to-end tests of web pages: starts `chromedriver` on a
//! loopback port of its choosing with headless Chromium (a fresh profile each time) and drives it with JSON
//! over HTTP.
//!
//! [`Browser::start`] returns `Ok(None)` where the browser is not installed, so `cargo test`
//! passes on a machine with only the Rust toolchain; with `LIENTHONG_REQUIRE_BROWSER=1` (CI,
//! which installs Debian's `chromium` and `chromium-driver`) that is an error instead.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Set (to anything but empty or `0`) where a missing browser must fail the test, not skip it.
pub const REQUIRE_BROWSER_ENV: &str = "LIENTHONG_REQUIRE_BROWSER";

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key under which an element reference travels.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Bounds one WebDriver command over HTTP; page loads are bounded below this by `PAGE_LOAD_MS`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const PAGE_LOAD_MS: u64 = 30_000;
const SCRIPT_MS: u64 = 30_000;
const POLL: Duration = Duration::from_millis(50);

/// The machine has no internet: these flags keep Chromium from trying to reach it.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-crash-reporter",
    "--window-size=1280,1024",
];

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The WebDriver session that a browser and its elements talk to.
#[derive(Debug)]
struct Session {
    client: HttpClient,
    driver: SocketAddr,
    id: String,
}

impl Session {
    fn url(&self, path: &str) -> String {
        format!("http://{}/session/{}{path}", self.driver, self.id)
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        command(&self.client, Method::GET, &self.url(path), None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        command(&self.client, Method::POST, &self.url(path), Some(body)).await
    }
}

/// Sends one command and returns the response's `value`, or the WebDriver error as text.
async fn command(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    // Session commands are named without the address and session id, which tell a reader nothing.
    let what = match url.split_once("/session/").and_then(|(_, rest)| rest.split_once('/')) {
        Some((_, command)) => format!("{method} /{command}"),
        None => format!("{method} {url}"),
    };
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Full::new(body))
        .map_err(|e| format!("{what}: {e}"))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| format!("{what}: {e}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| format!("{what}: {e}"))?.to_bytes();
        Ok::<_, String>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{what}: no answer within {COMMAND_TIMEOUT:?}"))??;
    let mut json: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{what}: HTTP {status}, not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))?;
    let value = json.get_mut("value").map(Value::take).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let error = value.get("error").and_then(Value::as_str).unwrap_or("unknown error");
    let message = value.get("message").and_then(Value::as_str).unwrap_or("");
    Err(format!("{what}: {error}: {message}"))
}

/// A chromedriver process; killed (and reaped) when dropped.
#[derive(Debug)]
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium driven through chromedriver. Dropping it ends the session and the
/// processes; [`Browser::quit`] does the same without blocking.
#[derive(Debug)]
pub struct Browser {
    session: Arc<Session>,
    /// Set once the session was deleted, so drop does not try again.
    ended: bool,
    downloads: PathBuf,
    // Field order is drop order: the driver dies before its profile directory is removed.
    driver: Driver,
    _profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.ended {
            // Killing chromedriver leaves Chromium running, so the session is ended first; this
            // is synchronous because drop may run while a failed test unwinds.
            delete_session_blocking(self.driver.addr, &self.session.id);
        }
    }
}

/// Best effort, bounded: a `DELETE /session/ID` over a plain socket.
fn delete_session_blocking(addr: SocketAddr, id: &str) {
    let Ok(mut tcp) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(2)));
    let req = format!(
        "DELETE /session/{id} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if tcp.write_all(req.as_bytes()).is_ok() {
        // Chromedriver answers once the browser is closed, and may keep the connection open
        // after: the first bytes of the answer are all there is to wait for.
        let mut first = [0u8; 512];
        let _ = tcp.read(&mut first);
    }
}

fn browser_required() -> bool {
    std::env::var_os(REQUIRE_BROWSER_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// `preferred` if it exists, else `name` on `PATH`.
fn locate(preferred: &str, name: &str) -> Option<PathBuf> {
    let preferred = Path::new(preferred);
    if preferred.is_file() {
        return Some(preferred.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The port chromedriver reports it listens on (it was given port 0).
fn reported_port(log: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("ChromeDriver was started successfully on port "))?;
    line.trim_end_matches('.').trim().parse().ok()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Starts chromedriver on a port it picks and reports (`--port=0`: no port is probed, released
/// and bound again, which another process could take in between) and waits until its `/status`
/// says ready.
async fn start_driver(chromedriver: &Path, client: &HttpClient, profile: &Path) -> Result<Driver, String> {
    let log_path = profile.join("chromedriver.log");
    let log = File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| format!("{}: {e}", log_path.display()))?;
    let child = Command::new(chromedriver)
        .arg("--port=0")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("run {}: {e}", chromedriver.display()))?;
    let mut driver = Driver { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
    let deadline = Instant::now() + READY_TIMEOUT;
    let max_polls = READY_TIMEOUT.as_millis() / POLL.as_millis() + 1;
    for _ in 0..max_polls {
        if let Ok(Some(exit)) = driver.child.try_wait() {
            return Err(format!("chromedriver exited ({exit}):\n{}", log_tail(&log_path)));
        }
        if driver.addr.port() == 0 {
            match reported_port(&log_path) {
                Some(port) => driver.addr.set_port(port),
                None => {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            }
        }
        let status_url = format!("http://{}/status", driver.addr);
        let ready =
            tokio::time::timeout(Duration::from_secs(2), command(client, Method::GET, &status_url, None))
                .await;
        if let Ok(Ok(status)) = ready
            && status.get("ready").and_then(Value::as_bool) == Some(true)
        {
            return Ok(driver);
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Err(format!(
        "chromedriver on {} not ready within {READY_TIMEOUT:?}:\n{}",
        driver.addr,
        log_tail(&log_path)
    ))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile. `Ok(None)` when either
    /// is not installed and `LIENTHONG_REQUIRE_BROWSER` is not set; an error when it is.
    pub async fn start() -> Result<Option<Browser>, String> {
        let chromedriver = locate(CHROMEDRIVER, "chromedriver");
        let chromium = locate(CHROMIUM, "chromium");
        let (Some(chromedriver), Some(chromium)) = (chromedriver, chromium) else {
            if browser_required() {
                return Err(format!(
                    "{REQUIRE_BROWSER_ENV} is set but chromedriver ({CHROMEDRIVER} or on PATH) or \
                     chromium ({CHROMIUM} or on PATH) is missing: apt-get install chromium chromium-driver"
                ));
            }
            return Ok(None);
        };
        let profile = tempfile::Builder::new()
            .prefix("lienthong-browser-")
            .tempdir()
            .map_err(|e| format!("create a profile directory: {e}"))?;
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

        let driver = start_driver(&chromedriver, &client, profile.path()).await?;

        let user_data = profile.path().join("chromium");
        let downloads = profile.path().join("downloads");
        std::fs::create_dir(&downloads).map_err(|e| format!("create {}: {e}", downloads.display()))?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", user_data.display()));
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": args,
                        "prefs": {
                            "download.default_directory": downloads.display().to_string(),
                            "download.prompt_for_download": false,
                        },
                    },
                    // Lets a test read console errors through `browser_log`.
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "timeouts": { "implicit": 0, "pageLoad": PAGE_LOAD_MS, "script": SCRIPT_MS },
                }
            }
        });
        let created =
            command(&client, Method::POST, &format!("http://{}/session", driver.addr), Some(capabilities))
                .await
                .map_err(|e| format!("start a Chromium session ({}): {e}", chromium.display()))?;
        let id = created
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("new session: no sessionId in {created}"))?
            .to_owned();
        let session = Arc::new(Session { client, driver: driver.addr, id });
        Ok(Some(Browser { session, ended: false, downloads, driver, _profile: profile }))
    }

    /// Where files the page downloads land (empty at start, removed with the browser).
    pub fn download_dir(&self) -> &Path {
        &self.downloads
    }

    /// Navigates and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.session.post("/url", json!({ "url": url })).await.map(drop)
    }

    pub async fn current_url(&self) -> Result<String, String> {
        let v = self.session.get("/url").await?;
        v.as_str().map(str::to_owned).ok_or_else(|| format!("current URL: not a string: {v}"))
    }

    /// The first element matching a CSS selector; an error (`no such element`) when none does.
    pub async fn find(&self, css: &str) -> Result<Element, String> {
        let v = self.session.post("/element", by_css(css)).await.map_err(|e| format!("find `{css}`: {e}"))?;
        Element::from_json(&self.session, &v).map_err(|e| format!("find `{css}`: {e}"))
    }

    /// Every element matching a CSS selector, in document order; empty when none does.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let v = self
            .session
            .post("/elements", by_css(css))
            .await
            .map_err(|e| format!("find all `{css}`: {e}"))?;
        elements(&self.session, v).map_err(|e| format!("find all `{css}`: {e}"))
    }

    /// Polls until an element matches, for at most `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element, String> {
        let deadline = Instant::now() + timeout;
        for _ in 0..max_polls(timeout) {
            if let Some(e) = self.find_all(css).await?.into_iter().next() {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Err(format!("no element matches `{css}` after {timeout:?}"))
    }

    /// Polls a script (a function body, as for [`Browser::execute`]) until it returns something
    /// truthy, for at most `timeout`, and returns that.
    pub async fn wait_until(
        &self,
        script: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        for _ in 0..max_polls(timeout) {
            last = self.execute(script, args.clone()).await?;
            if truthy(&last) {
                return Ok(last);
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Err(format!("`{script}` still {last} after {timeout:?}"))
    }

    /// Runs `script` as the body of a function with `arguments` (pass [`Element::as_arg`] for an
    /// element) and returns what it returns; a returned Promise is awaited.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.session.post("/execute/sync", json!({ "script": script, "args": args })).await
    }

    /// The console messages logged since the last call: objects with `level` (`SEVERE` for
    /// errors, uncaught exceptions and failed loads), `message`, `source` and `timestamp`.
    pub async fn browser_log(&self) -> Result<Vec<Value>, String> {
        match self.session.post("/se/log", json!({ "type": "browser" })).await? {
            Value::Array(entries) => Ok(entries),
            other => Err(format!("browser log: not a list: {other}")),
        }
    }

    /// Resizes the window (the viewport is somewhat smaller); it starts at 1280×1024.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<(), String> {
        self.session.post("/window/rect", json!({ "width": width, "height": height })).await.map(drop)
    }

    /// A PNG of the viewport, to keep when a test fails.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        let v = self.session.get("/screenshot").await?;
        let b64 = v.as_str().ok_or_else(|| format!("screenshot: not a string: {v}"))?;
        BASE64.decode(b64).map_err(|e| format!("screenshot: not base64: {e}"))
    }

    /// Ends the session, which closes Chromium, then stops chromedriver.
    pub async fn quit(mut self) {
        let url = format!("http://{}/session/{}", self.session.driver, self.session.id);
        if command(&self.session.client, Method::DELETE, &url, None).await.is_ok() {
            self.ended = true;
        }
        // Dropping self kills chromedriver (and retries the delete if it failed).
    }
}

fn by_css(css: &str) -> Value {
    json!({ "using": "css selector", "value": css })
}

fn max_polls(timeout: Duration) -> u128 {
    timeout.as_millis() / POLL.as_millis() + 1
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn elements(session: &Arc<Session>, v: Value) -> Result<Vec<Element>, String> {
    match v {
        Value::Array(items) => items.iter().map(|i| Element::from_json(session, i)).collect(),
        other => Err(format!("not a list of elements: {other}")),
    }
}

/// An element of the current page. It goes stale when the page replaces it.
#[derive(Debug, Clone)]
pub struct Element {
    session: Arc<Session>,
    id: String,
}

impl Element {
    fn from_json(session: &Arc<Session>, v: &Value) -> Result<Element, String> {
        let id = v.get(ELEMENT_KEY).and_then(Value::as_str).ok_or_else(|| format!("not an element: {v}"))?;
        Ok(Element { session: session.clone(), id: id.to_owned() })
    }

    /// The element as an argument of [`Browser::execute`].
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    /// The rendered text, as a user sees it (hidden parts excluded).
    pub async fn text(&self) -> Result<String, String> {
        let v = self.session.get(&self.path("/text")).await?;
        v.as_str().map(str::to_owned).ok_or_else(|| format!("element text: not a string: {v}"))
    }

    /// An HTML attribute as written in the document; `None` when absent.
    pub async fn attribute(&self, name: &str) -> Result<Option<String>, String> {
        let v = self.session.get(&self.path(&format!("/attribute/{name}"))).await?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// A DOM property, such as an input's current `value` or a checkbox's `checked`.
    pub async fn property(&self, name: &str) -> Result<Value, String> {
        self.session.get(&self.path(&format!("/property/{name}"))).await
    }

    pub async fn is_displayed(&self) -> Result<bool, String> {
        let v = self.session.get(&self.path("/displayed")).await?;
        v.as_bool().ok_or_else(|| format!("element displayed: not a boolean: {v}"))
    }

    /// Clicks the element's centre, after scrolling it into view; fails if something covers it.
    pub async fn click(&self) -> Result<(), String> {
        self.session.post(&self.path("/click"), json!({})).await.map(drop)
    }

    /// Types into the element (appending to what an input holds; see [`Element::clear`]).
    pub async fn send_keys(&self, text: &str) -> Result<(), String> {
        self.session.post(&self.path("/value"), json!({ "text": text })).await.map(drop)
    }

    /// Empties an input or text area.
    pub async fn clear(&self) -> Result<(), String> {
        self.session.post(&self.path("/clear"), json!({})).await.map(drop)
    }

    /// The first descendant matching a CSS selector.
    pub async fn find(&self, css: &str) -> Result<Element, String> {
        let v = self
            .session
            .post(&self.path("/element"), by_css(css))
            .await
            .map_err(|e| format!("find `{css}`: {e}"))?;
        Element::from_json(&self.session, &v).map_err(|e| format!("find `{css}`: {e}"))
    }

    /// Every descendant matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let v = self
            .session
            .post(&self.path("/elements"), by_css(css))
            .await
            .map_err(|e| format!("find all `{css}`: {e}"))?;
        elements(&self.session, v).map_err(|e| format!("find all `{css}`: {e}"))
    }
}
