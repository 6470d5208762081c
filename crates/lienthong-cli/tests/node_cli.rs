//! The whole product from the command line: a registry, a provider node and a consumer node
//! each run by the real `lienthong` binary, set up with `node init` (one request approved by the
//! operator with `registry requests approve`), a service published with `node publish`, a grant
//! recorded with `registry grant add`, and plain `curl` calling the service over X-Road REST r1.
//! The central audit service (`audit api-key`, `audit init`, `audit serve`) pulls both nodes and
//! reports the exchange. Afterwards both nodes' message logs verify offline with `lienthong log
//! verify`.
//!
//! Everything listens on loopback; every child process is stopped when the test ends, however it
//! ends; every wait is bounded.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const PROVIDER: &str = "VN/GOV/000.00.00.G01";
const CONSUMER: &str = "VN/GOV/000.00.00.G02";
const DANCU: &str = "VN/GOV/000.00.00.G01/dancu";
const CONG_DVC: &str = "VN/GOV/000.00.00.G02/cong-dvc";
const SERVICE: &str = "VN/GOV/000.00.00.G01/dancu/cong-dan";
const PROV_NODE: &str = "VN/GOV/000.00.00.G01/ss1";
const CONS_NODE: &str = "VN/GOV/000.00.00.G02/ss1";
const BACKEND_BODY: &str = r#"{"so_dinh_danh":"001090012345","ho_ten":"Nguyễn Văn A"}"#;
const CURL: &str = "/usr/bin/curl";

/// Node registration and signing certificates are approved automatically; hosting a subsystem
/// waits for the operator, so the test approves those requests by hand.
const REGISTRY_CONFIG: &str = r#"
instance = "VN"
data_dir = "registry"
[http]
listen = "127.0.0.1:0"
[grpc]
listen = "127.0.0.1:0"
[auto_approve]
register_node = true
issue_signing_cert = true
host_subsystem = false
publish_service = true
grant_access = true
revoke_access = true
"#;

fn lienthong(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(args)
        .current_dir(dir)
        .env_remove("LIENTHONG_KEY_PASSPHRASE")
        .env_remove("LIENTHONG_REGISTRY_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run lienthong")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lienthong(dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `lienthong ... serve` in the background. Its stdout lines arrive on a channel; its stderr
/// goes to a file shown when the test fails, each line also announced on `activity`. Stopped
/// (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Daemon {
    fn start(name: &'static str, dir: &Path, args: &[&str], activity: &mpsc::Sender<()>) -> Self {
        let stderr = dir.join(format!("{name}.stderr"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_lienthong"))
            .args(args)
            .current_dir(dir)
            .env_remove("LIENTHONG_KEY_PASSPHRASE")
            .env_remove("LIENTHONG_REGISTRY_CONFIG")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().unwrap();
        let mut file = File::create(&stderr).unwrap();
        let activity = activity.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                let _ = activity.send(());
            }
        });
        Self { name, child, lines, stderr }
    }

    /// The rest of the first stdout line that starts with `prefix`.
    fn line_after(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                }
                Err(e) => panic!("{} printed no {prefix:?} line ({e}):\n{}", self.name, self.log()),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then up to `grace` for the process to exit (its stdout closes); SIGKILL after
    /// that. True if it exited with status 0.
    fn terminate(&mut self, grace: Duration) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return self.child.wait().is_ok_and(|s| s.success());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return false;
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate(Duration::from_secs(5));
        }
    }
}

/// A backend answering every request with [`BACKEND_BODY`]; remembers each request line.
fn mock_backend() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head);
            record.lock().unwrap().push(head.lines().next().unwrap_or_default().to_owned());
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BACKEND_BODY}",
                BACKEND_BODY.len()
            );
            let _ = stream.write_all(response.as_bytes());
            let _ = stream.flush();
        }
    });
    (format!("http://{addr}/api/v1"), seen)
}

/// A port nothing listens on right now: the node's address must be registered before the node
/// binds it.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The parts of an HTTP response printed by `curl -i`.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

fn curl(args: &[&str]) -> Response {
    assert!(
        Path::new(CURL).exists(),
        "this test needs curl at {CURL} (the CI script installs it: apt-get install curl)"
    );
    let out = Command::new(CURL)
        .args(["-sS", "-i", "--max-time", "30"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response { status, headers, body: body.to_owned() }
}

/// Approves every pending request of `kind`; returns how many there were.
fn approve_pending(d: &Path, api: &str, kind: &str) -> usize {
    let admin = ["--config", "registry.toml", "--url", api];
    let list = ok(d, &[&["registry", "requests", "list"][..], &admin[..]].concat());
    let ids: Vec<String> = list
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(kind))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    for id in &ids {
        let out = ok(
            d,
            &[&["registry", "requests", "approve", id, "--reason", "checked"][..], &admin[..]].concat(),
        );
        assert!(out.contains("approved"), "{out}");
    }
    ids.len()
}

/// `node init` for a node hosting one subsystem: first without waiting (the hosting request stays
/// pending), then the operator approves it, then the same command again completes the set-up.
fn set_up_node(d: &Path, api: &str, dir: &str, node: &str, subsystem: &str, port: u16) {
    let address = format!("https://127.0.0.1:{port}");
    let init = |wait: bool| {
        let mut args = vec![
            "node",
            "init",
            "--dir",
            dir,
            "--anchor",
            "registry/anchor.json",
            "--node",
            node,
            "--address",
            &address,
            "--subsystem",
            subsystem,
            "--no-passphrase",
        ];
        if wait {
            args.extend(["--wait", "30s"]);
        }
        ok(d, &args)
    };
    let first = init(false);
    assert!(first.contains("waiting for the registry operator"), "{first}");
    assert!(first.contains("pending"), "{first}");
    assert_eq!(approve_pending(d, api, "host-subsystem"), 1, "one hosting request of {node}");
    let second = init(true);
    assert!(second.contains(&format!("node {node} is set up")), "{second}");
}

/// A node with r1 over HTTP, and over HTTPS on `https` for the audit service's pulls.
fn node_config(dir: &str, port: u16, https: u16, services: &str) -> String {
    format!(
        r#"data_dir = "{dir}"
[consumer]
http = "127.0.0.1:0"
https = "127.0.0.1:{https}"
[peer]
listen = "127.0.0.1:{port}"
[log]
checkpoint_interval_secs = 1
[audit]
certificates = ["audit/collector.pem"]
{services}"#
    )
}

/// The central audit service over the two nodes, with one auditor's API key; returns the key.
fn set_up_audit(d: &Path, nodes: &[(&str, u16)]) -> String {
    let mut config =
        String::from("data_dir = \"audit\"\nanchor = \"registry/anchor.json\"\nlisten = \"127.0.0.1:0\"\n");
    for (node, https) in nodes {
        config.push_str(&format!("[[nodes]]\nid = \"{node}\"\nurl = \"https://127.0.0.1:{https}\"\n"));
    }
    let made = ok(d, &["audit", "api-key", "--name", "Kiểm toán nhà nước"]);
    let key = made.lines().nth(1).map(str::trim).unwrap_or_default().to_owned();
    let snippet = made.split_once("add to audit.toml:\n").map(|(_, s)| s.to_owned()).unwrap_or_default();
    assert!(key.len() >= 40 && snippet.contains("api_key_sha256"), "{made}");
    config.push_str(&snippet);
    std::fs::write(d.join("audit.toml"), config).unwrap();
    let init = ok(d, &["audit", "init", "--config", "audit.toml", "--no-passphrase"]);
    assert!(init.contains("collector.pem"), "{init}");
    key
}

/// Pulls until both nodes reported the exchange, the provider's records included (their
/// witnessed checkpoints may still be on their way): after each try it waits for the next line any process logs (a checkpoint round
/// is logged), at most 250 ms, and for 20 s in all; returns the sharing report.
fn pull_until_collected(api: &str, key: &str, activity: &mpsc::Receiver<()>) -> serde_json::Value {
    let auth = format!("Authorization: Bearer {key}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pulled = curl(&["-X", "POST", "-H", &auth, &format!("{api}/pull")]);
        assert_eq!(pulled.status, 200, "{pulled:#?}");
        let report = curl(&["-H", &auth, &format!("{api}/sharing")]);
        assert_eq!(report.status, 200, "{report:#?}");
        let report: serde_json::Value = serde_json::from_str(&report.body).unwrap();
        let calls = report["pairs"].get(0).map(|p| p["calls"].clone());
        let coverage = curl(&["-H", &auth, &format!("{api}/coverage")]);
        let both = serde_json::from_str::<serde_json::Value>(&coverage.body).unwrap()["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|n| n["reported"] == true).count() == 2);
        // The provider's records may come a checkpoint after the consumer's: the grant's use is
        // known only from them.
        let used = report["grants"].get(0).map(|g| g["used"].clone());
        if both && calls == Some(serde_json::json!(1)) && used == Some(serde_json::json!(1)) {
            return report;
        }
        assert!(Instant::now() < deadline, "not collected in time: {pulled:#?}\n{report:#}");
        let _ = activity.recv_timeout(Duration::from_millis(250));
    }
}

/// Calls through the consumer node, again while the nodes still run on a configuration that
/// does not know each other (before their first poll after start): after each refusal it waits
/// for the next line any process logs (a configuration update is logged), at most 200 ms, and for
/// 20 s in all.
fn call_until_ready(url: &str, nodes: &[&Daemon], activity: &mpsc::Receiver<()>) -> Response {
    let transient = |r: &Response| {
        r.header("x-road-error").is_some_and(|e| {
            e.ends_with("global_conf_outdated")
                || e.contains(".unknown_")
                || e.ends_with("ssl_authentication_failed")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = curl(&["-H", &format!("X-Road-Client: {CONG_DVC}"), url]);
        if !transient(&r) || Instant::now() >= deadline {
            if r.status != 200 {
                let logs: Vec<String> =
                    nodes.iter().map(|n| format!("--- {}:\n{}", n.name, n.log())).collect();
                panic!("call failed: {r:#?}\n{}", logs.join("\n"));
            }
            return r;
        }
        let _ = activity.recv_timeout(Duration::from_millis(200));
    }
}

#[test]
fn curl_calls_a_service_through_two_nodes_run_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    // The registry, its members and subsystems.
    std::fs::write(d.join("registry.toml"), REGISTRY_CONFIG).unwrap();
    ok(d, &["registry", "init", "--config", "registry.toml", "--no-passphrase"]);
    let (activity_tx, activity) = mpsc::channel();
    let registry =
        Daemon::start("registry", d, &["registry", "serve", "--config", "registry.toml"], &activity_tx);
    let api = registry.line_after("api: ");
    let admin = ["--config", "registry.toml", "--url", api.as_str()];
    let run = |args: &[&str]| ok(d, &[args, &admin[..]].concat());
    run(&["registry", "member", "add", PROVIDER, "--name", "Bộ Công an"]);
    run(&["registry", "subsystem", "add", DANCU, "--name", "Cơ sở dữ liệu dân cư"]);
    run(&["registry", "member", "add", CONSUMER, "--name", "Văn phòng Chính phủ"]);
    run(&["registry", "subsystem", "add", CONG_DVC, "--name", "Cổng dịch vụ công"]);

    // The provider's backend and node directory; the service published and granted.
    let (backend_url, backend_seen) = mock_backend();
    let prov_port = free_port();
    set_up_node(d, &api, "prov", PROV_NODE, DANCU, prov_port);
    let published = ok(d, &["node", "publish", "--dir", "prov", "--service", SERVICE]);
    assert!(published.contains("approved"), "{published}");
    let granted = run(&[
        "registry",
        "grant",
        "add",
        "--service",
        SERVICE,
        "--client",
        CONG_DVC,
        "--legal-basis",
        "Nghị định 47/2020/NĐ-CP",
    ]);
    assert!(granted.contains("added grant"), "{granted}");
    let grants = run(&["registry", "grant", "list", "--service", SERVICE]);
    assert!(grants.contains(&format!("{CONG_DVC} -> {SERVICE}")), "{grants}");

    // The consumer's node directory.
    let cons_port = free_port();
    set_up_node(d, &api, "cons", CONS_NODE, CONG_DVC, cons_port);
    let nodes = run(&["registry", "node", "list"]);
    assert!(
        nodes.contains(&format!("hosts {DANCU}")) && nodes.contains(&format!("hosts {CONG_DVC}")),
        "{nodes}"
    );

    // Both nodes running.
    let service_section = format!("[[service]]\nid = \"{SERVICE}\"\nurl = \"{backend_url}\"\n");
    let (prov_https, cons_https) = (free_port(), free_port());
    let audit_key = set_up_audit(d, &[(PROV_NODE, prov_https), (CONS_NODE, cons_https)]);
    std::fs::write(d.join("prov.toml"), node_config("prov", prov_port, prov_https, &service_section))
        .unwrap();
    std::fs::write(d.join("cons.toml"), node_config("cons", cons_port, cons_https, "")).unwrap();
    let mut prov =
        Daemon::start("provider node", d, &["node", "serve", "--config", "prov.toml"], &activity_tx);
    prov.line_after("peers: ");
    let mut cons =
        Daemon::start("consumer node", d, &["node", "serve", "--config", "cons.toml"], &activity_tx);
    let r1 = cons.line_after("r1 (HTTP): http://");
    let r1 = r1.strip_suffix("/r1/...").unwrap_or_else(|| panic!("r1 line: {r1:?}")).to_owned();
    let url = format!("http://{r1}/r1/{SERVICE}/001090012345");

    // The call, through both nodes to the backend and back.
    let r = call_until_ready(&url, &[&prov, &cons], &activity);
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body, BACKEND_BODY, "{r:#?}");
    let message_id = r.header("x-road-id").unwrap_or_else(|| panic!("no X-Road-Id: {r:#?}")).to_owned();
    assert!(!message_id.is_empty());
    assert!(r.header("x-road-request-hash").is_some_and(|h| !h.is_empty()), "{r:#?}");
    assert_eq!(r.header("x-road-service"), Some(SERVICE), "{r:#?}");
    assert_eq!(r.header("x-road-client"), Some(CONG_DVC), "{r:#?}");
    assert!(r.header("x-road-error").is_none(), "{r:#?}");
    let seen = backend_seen.lock().unwrap().clone();
    assert_eq!(seen.last().map(String::as_str), Some("GET /api/v1/001090012345 HTTP/1.1"), "{seen:?}");

    // No client identifier: refused by the consumer node, as X-Road REST says.
    let bad = curl(&[url.as_str()]);
    assert_eq!(bad.status, 400, "{bad:#?}");
    assert_eq!(bad.header("x-road-error"), Some("client.invalid_client_identifier"), "{bad:#?}");
    assert!(bad.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{bad:#?}");
    let json: serde_json::Value = serde_json::from_str(&bad.body).unwrap_or_else(|e| panic!("{e}: {bad:#?}"));
    assert!(json.is_object(), "{json}");

    // The central audit service pulls both nodes and reports the one exchange, against its grant.
    let mut audit =
        Daemon::start("audit service", d, &["audit", "serve", "--config", "audit.toml"], &activity_tx);
    let audit_api = audit.line_after("audit API: ");
    let audit_api = audit_api.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
    let refused = curl(&[&format!("{audit_api}/sharing")]);
    assert_eq!(refused.status, 401, "{refused:#?}");
    let report = pull_until_collected(&audit_api, &audit_key, &activity);
    let pair = &report["pairs"][0];
    assert_eq!(
        (pair["consumer"].as_str(), pair["service"].as_str()),
        (Some(CONG_DVC), Some(SERVICE)),
        "{report:#}"
    );
    assert_eq!(pair["successes"], 1, "{report:#}");
    assert_eq!(report["grants"][0]["used"], 1, "{report:#}");
    assert!(
        audit.terminate(Duration::from_secs(20)),
        "the audit service did not stop cleanly:\n{}",
        audit.log()
    );

    // A clean stop on SIGTERM, then both logs verify offline and hold the exchange.
    assert!(
        cons.terminate(Duration::from_secs(20)),
        "the consumer node did not stop cleanly:\n{}",
        cons.log()
    );
    assert!(
        prov.terminate(Duration::from_secs(20)),
        "the provider node did not stop cleanly:\n{}",
        prov.log()
    );
    for (dir, role, node) in [("prov", "provider", PROV_NODE), ("cons", "consumer", CONS_NODE)] {
        let log = format!("{dir}/log");
        let verified = ok(d, &["log", "verify", &log, "--anchor", "registry/anchor.json"]);
        assert!(verified.contains("verified:"), "{verified}");
        assert!(verified.contains(&format!("origin:       {node}")), "{verified}");
        let witnessed = verified
            .lines()
            .find_map(|l| l.strip_prefix("checkpoints:"))
            .and_then(|l| l.split('(').nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok());
        assert!(witnessed.is_some_and(|n| n > 0), "{dir}: no witnessed checkpoint:\n{verified}");
        let shown = ok(d, &["log", "show", &log, "--exchange", &message_id, "--json"]);
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        let records: Vec<&serde_json::Value> =
            shown.as_array().unwrap().iter().map(|r| &r["record"]).collect();
        let directions: Vec<&str> = records.iter().map(|r| r["direction"].as_str().unwrap()).collect();
        assert_eq!(directions, ["request", "response"], "{dir}: {shown:#}");
        for r in &records {
            assert_eq!(r["role"], role, "{dir}: {r:#}");
            assert_eq!(r["client"], CONG_DVC, "{dir}: {r:#}");
            assert_eq!(r["service"], SERVICE, "{dir}: {r:#}");
            assert_eq!(r["node"], node, "{dir}: {r:#}");
        }
        assert_eq!(records[1]["status"], 200, "{dir}: {shown:#}");
    }
    drop(registry);
}
