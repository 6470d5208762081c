//! What the command-line tests share: the real `lienthong` binary run as one-shot commands and
//! as daemons, a registry with two members and a node for each (set up through the CLI, as an
//! operator would), a mock backend and `curl`.
//!
//! Each test binary uses a part of it.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub const PROVIDER: &str = "VN/GOV/000.00.00.G01";
pub const CONSUMER: &str = "VN/GOV/000.00.00.G02";
pub const DANCU: &str = "VN/GOV/000.00.00.G01/dancu";
pub const CONG_DVC: &str = "VN/GOV/000.00.00.G02/cong-dvc";
pub const SERVICE: &str = "VN/GOV/000.00.00.G01/dancu/cong-dan";
pub const PROV_NODE: &str = "VN/GOV/000.00.00.G01/ss1";
pub const CONS_NODE: &str = "VN/GOV/000.00.00.G02/ss1";
pub const BACKEND_BODY: &str = r#"{"so_dinh_danh":"001090012345","ho_ten":"Nguyễn Văn A"}"#;
pub const CURL: &str = "/usr/bin/curl";

/// Node registration and signing certificates are approved automatically; hosting a subsystem
/// waits for the operator, so the test approves those requests by hand.
pub const REGISTRY_CONFIG: &str = r#"
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

pub fn lienthong(dir: &Path, args: &[&str]) -> Output {
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

pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lienthong(dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Where a daemon's stderr goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stderr {
    /// To a file shown when the test fails, each line also announced on `activity`.
    Captured,
    /// To `/dev/full`: every write fails with "no space left on device".
    DevFull,
    /// A pipe nobody reads, until [`Daemon::close_stderr`] closes it: then every write fails
    /// with "broken pipe".
    Unread,
}

/// A `lienthong ... serve` in the background. Its stdout lines arrive on a channel; its stderr
/// goes where [`Stderr`] says. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    pub name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
    unread: Option<ChildStderr>,
    at_exit: Vec<String>,
}

impl Daemon {
    pub fn start(name: &'static str, dir: &Path, args: &[&str], activity: &mpsc::Sender<()>) -> Self {
        Self::start_with(name, dir, args, activity, Stderr::Captured)
    }

    pub fn start_with(
        name: &'static str,
        dir: &Path,
        args: &[&str],
        activity: &mpsc::Sender<()>,
        to: Stderr,
    ) -> Self {
        let stderr = dir.join(format!("{name}.stderr"));
        let target = match to {
            Stderr::Captured | Stderr::Unread => Stdio::piped(),
            Stderr::DevFull => File::options().write(true).open("/dev/full").expect("/dev/full").into(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_lienthong"))
            .args(args)
            .current_dir(dir)
            .env_remove("LIENTHONG_KEY_PASSPHRASE")
            .env_remove("LIENTHONG_REGISTRY_CONFIG")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(target)
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
        let mut unread = None;
        match to {
            Stderr::Captured => {
                let err = child.stderr.take().unwrap();
                let mut file = File::create(&stderr).unwrap();
                let activity = activity.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        let _ = writeln!(file, "{line}");
                        let _ = activity.send(());
                    }
                });
            }
            Stderr::Unread => unread = child.stderr.take(),
            Stderr::DevFull => {}
        }
        Self { name, child, lines, stderr, unread, at_exit: Vec::new() }
    }

    /// Closes the read end of an [`Stderr::Unread`] pipe: the reader died.
    pub fn close_stderr(&mut self) {
        assert!(self.unread.take().is_some(), "{}: stderr is not an unread pipe", self.name);
    }

    /// The process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and waits for the exit: a crash, nothing flushed or closed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The stdout lines read by [`Daemon::terminate`] while the process stopped.
    pub fn printed_at_exit(&self) -> &[String] {
        &self.at_exit
    }

    /// The rest of the first stdout line that starts with `prefix`.
    pub fn line_after(&self, prefix: &str) -> String {
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

    /// What it wrote to stderr ([`Stderr::Captured`] only).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then up to `grace` for the process to exit (its stdout closes); SIGKILL after
    /// that. True if it exited with status 0.
    pub fn terminate(&mut self, grace: Duration) -> bool {
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
                Ok(line) => self.at_exit.push(line),
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
pub fn mock_backend() -> (String, Arc<Mutex<Vec<String>>>) {
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
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The parts of an HTTP response printed by `curl -i`.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

pub fn curl(args: &[&str]) -> Response {
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
pub fn approve_pending(d: &Path, api: &str, kind: &str) -> usize {
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
pub fn set_up_node(d: &Path, api: &str, dir: &str, node: &str, subsystem: &str, port: u16) {
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

/// Calls through the consumer node, again while the nodes still run on a configuration that
/// does not know each other (before their first poll after start): after each refusal it waits
/// for the next line any process logs (a configuration update is logged), at most 200 ms, and for
/// 20 s in all.
pub fn call_until_ready(url: &str, nodes: &[&Daemon], activity: &mpsc::Receiver<()>) -> Response {
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

/// An instance set up from the command line: its registry serving, both members with a
/// subsystem each, the provider's service published and granted to the consumer, and both node
/// directories (`prov` and `cons`) initialised for their peer ports.
pub struct Instance {
    pub registry: Daemon,
    /// The registry's management API.
    pub api: String,
    pub prov_port: u16,
    pub cons_port: u16,
}

pub fn set_up_instance(d: &Path, activity: &mpsc::Sender<()>, registry_stderr: Stderr) -> Instance {
    std::fs::write(d.join("registry.toml"), REGISTRY_CONFIG).unwrap();
    ok(d, &["registry", "init", "--config", "registry.toml", "--no-passphrase"]);
    let registry = Daemon::start_with(
        "registry",
        d,
        &["registry", "serve", "--config", "registry.toml"],
        activity,
        registry_stderr,
    );
    let api = registry.line_after("api: ");
    let admin = ["--config", "registry.toml", "--url", api.as_str()];
    let run = |args: &[&str]| ok(d, &[args, &admin[..]].concat());
    run(&["registry", "member", "add", PROVIDER, "--name", "Bộ Công an"]);
    run(&["registry", "subsystem", "add", DANCU, "--name", "Cơ sở dữ liệu dân cư"]);
    run(&["registry", "member", "add", CONSUMER, "--name", "Văn phòng Chính phủ"]);
    run(&["registry", "subsystem", "add", CONG_DVC, "--name", "Cổng dịch vụ công"]);

    // The provider's node directory; the service published and granted.
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
    Instance { registry, api, prov_port, cons_port }
}

/// A node with r1 over HTTP; `services` is appended.
pub fn node_config(dir: &str, port: u16, services: &str) -> String {
    format!(
        r#"data_dir = "{dir}"
[consumer]
http = "127.0.0.1:0"
[peer]
listen = "127.0.0.1:{port}"
[log]
checkpoint_interval_secs = 1
{services}"#
    )
}

/// `http://127.0.0.1:PORT` of the node's r1 listener, from what `node serve` prints.
pub fn r1_base(node: &Daemon) -> String {
    let r1 = node.line_after("r1 (HTTP): http://");
    let r1 = r1.strip_suffix("/r1/...").unwrap_or_else(|| panic!("r1 line: {r1:?}"));
    format!("http://{r1}")
}

/// `prov.toml` (serving [`SERVICE`] from a new mock backend) and `cons.toml` for the instance's
/// two nodes.
pub fn write_node_configs(d: &Path, instance: &Instance) {
    let (backend_url, _) = mock_backend();
    let service = format!("[[service]]\nid = \"{SERVICE}\"\nurl = \"{backend_url}\"\n");
    std::fs::write(d.join("prov.toml"), node_config("prov", instance.prov_port, &service)).unwrap();
    std::fs::write(d.join("cons.toml"), node_config("cons", instance.cons_port, "")).unwrap();
}
