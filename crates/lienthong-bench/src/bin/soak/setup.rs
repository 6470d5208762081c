//! The soak's instance, set up the way an operator would (every step a `lienthong` command, as
//! `deploy/demo-processes.sh` does) and run as separate processes: a registry, a consumer node,
//! two provider nodes hosting one provider subsystem (so the consumer can fail over), and a
//! backend per provider. Each node's `log/` lives on its own small tmpfs when the soak may
//! mount one (root), so the disk-full fault is a real full disk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lienthong_bench::procs::{Proc, free_port};
use lienthong_testkit::tmpfs::Tmpfs;

pub(crate) const INSTANCE: &str = "SOAK";
const PROVIDER_MEMBER: &str = "SOAK/GOV/P01";
const CONSUMER_MEMBER: &str = "SOAK/GOV/C01";
pub(crate) const PROVIDER_SUBSYSTEM: &str = "SOAK/GOV/P01/data";
pub(crate) const SERVICE: &str = "SOAK/GOV/P01/data/echo";
/// The subsystem the service is granted to.
pub(crate) const CLIENT: &str = "SOAK/GOV/C01/app";
/// A subsystem of the same consumer without a grant: its calls are denied on purpose.
pub(crate) const DENIED_CLIENT: &str = "SOAK/GOV/C01/other";

/// How long a process may take to listen after it is started.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A process the soak starts, stops and starts again, with its output appended to one file.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    pub log: PathBuf,
    /// What it listens on once up.
    listens: Vec<SocketAddr>,
    proc: Option<Proc>,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// It exited by itself after SIGTERM, with this status.
    Exited(ExitStatus),
    /// It was still running after the time allowed and was killed.
    Killed,
    /// It was not running.
    NotRunning,
}

impl Daemon {
    fn new(name: &str, program: &Path, args: Vec<String>, dir: &Path, listens: Vec<SocketAddr>) -> Self {
        Self {
            name: name.to_owned(),
            program: program.to_owned(),
            args,
            log: dir.join(format!("{name}.log")),
            listens,
            proc: None,
        }
    }

    /// Starts it and waits until it listens on every address.
    pub(crate) async fn start(&mut self) -> Result<()> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut proc = Proc::start(&self.name, &self.program, &args, None, &self.log)?;
        let deadline = Instant::now() + START_LIMIT;
        for addr in &self.listens {
            loop {
                if let Err(e) = proc.check_alive() {
                    bail!("{e:#}\n{}", tail(&self.log));
                }
                let connect = tokio::net::TcpStream::connect(addr);
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), connect).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} did not listen on {addr} within {START_LIMIT:?}\n{}",
                        self.name,
                        tail(&self.log)
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// SIGKILL.
    pub(crate) async fn kill(&mut self) -> Result<()> {
        if let Some(p) = self.proc.take() {
            tokio::task::spawn_blocking(move || p.kill()).await??;
        }
        Ok(())
    }

    /// SIGTERM, then up to `limit` for it to exit by itself.
    pub(crate) async fn terminate(&mut self, limit: Duration) -> Result<Stopped> {
        let Some(p) = self.proc.take() else { return Ok(Stopped::NotRunning) };
        Ok(match tokio::task::spawn_blocking(move || p.terminate(limit)).await?? {
            Some(status) => Stopped::Exited(status),
            None => Stopped::Killed,
        })
    }

    /// Why it is not running although it should be, if so.
    pub(crate) fn died(&mut self) -> Option<String> {
        let proc = self.proc.as_mut()?;
        match proc.exited() {
            Ok(Some(status)) => Some(format!("{} exited by itself: {status}", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{}: {e:#}", self.name)),
        }
    }
}

/// The last lines of a process's output, for an error message.
pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    format!("--- last lines of {}:\n{}", log.display(), lines[from..].join("\n"))
}

/// One node: its process, where it listens, its directory and its log's file system.
#[derive(Debug)]
pub(crate) struct Node {
    /// `consumer`, `provider-a`, `provider-b`.
    pub role: &'static str,
    /// Its node id (`X-Road-Security-Server` form).
    pub id: String,
    pub daemon: Daemon,
    /// The r1 listener (and `/readyz`).
    pub http: SocketAddr,
    /// The node's directory; its log is `dir/log`.
    pub dir: PathBuf,
    /// The tmpfs holding `dir/log` (through a symbolic link, so a ballast file can sit beside
    /// the log rather than in it); `None` when the soak could not mount one.
    pub log_fs: Option<Tmpfs>,
}

impl Node {
    pub(crate) fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }
}

/// Everything the soak runs.
#[derive(Debug)]
pub(crate) struct Instance {
    pub lienthong: PathBuf,
    pub anchor: PathBuf,
    pub registry: Daemon,
    /// The registry's configuration endpoint.
    pub registry_http: SocketAddr,
    /// Consumer first, then the two providers.
    pub nodes: Vec<Node>,
    /// The backend of each provider, in the order of `nodes[1..]`.
    pub backends: Vec<Daemon>,
    /// The service's r1 URL on the consumer node.
    pub service_url: String,
}

#[derive(Debug)]
pub(crate) struct SetupOptions {
    pub lienthong: PathBuf,
    /// This binary (it serves the backends).
    pub exe: PathBuf,
    pub dir: PathBuf,
    /// Size of each node's log tmpfs; `None`: plain directories.
    pub log_fs_bytes: Option<u64>,
}

/// Sets up and starts everything; returns once a call goes through.
pub(crate) async fn set_up(o: &SetupOptions) -> Result<Instance> {
    let dir = &o.dir;
    let setup_log = dir.join("setup.log");
    let cli = |args: &[&str]| run_cli(&o.lienthong, args, &setup_log);

    // The registry.
    let (reg_http, reg_grpc) = (local(free_port()?), local(free_port()?));
    let reg_dir = dir.join("registry");
    let reg_config = dir.join("registry.toml");
    std::fs::write(&reg_config, registry_toml(&reg_dir, reg_http, reg_grpc))?;
    let reg_config_s = path_str(&reg_config)?;
    cli(&[
        "registry",
        "init",
        "--config",
        reg_config_s,
        "--no-passphrase",
        "--admin-name",
        "soak",
        "--member-class",
        "GOV=State bodies",
    ])?;
    let mut registry = Daemon::new(
        "registry",
        &o.lienthong,
        strings(&["registry", "serve", "--config", reg_config_s]),
        dir,
        vec![reg_http, reg_grpc],
    );
    registry.start().await?;
    let anchor = reg_dir.join("anchor.json");
    let anchor_s = path_str(&anchor)?;

    for (member, name) in [(PROVIDER_MEMBER, "Soak provider"), (CONSUMER_MEMBER, "Soak consumer")] {
        cli(&["registry", "member", "add", member, "--name", name, "--config", reg_config_s])?;
    }
    for sub in [PROVIDER_SUBSYSTEM, CLIENT, DENIED_CLIENT] {
        cli(&["registry", "subsystem", "add", sub, "--name", sub, "--config", reg_config_s])?;
    }

    // The nodes: set up, then their logs moved onto file systems of their own.
    let roles: [(&'static str, String, Vec<&str>); 3] = [
        ("consumer", format!("{CONSUMER_MEMBER}/ss-consumer"), vec![CLIENT, DENIED_CLIENT]),
        ("provider-a", format!("{PROVIDER_MEMBER}/ss-a"), vec![PROVIDER_SUBSYSTEM]),
        ("provider-b", format!("{PROVIDER_MEMBER}/ss-b"), vec![PROVIDER_SUBSYSTEM]),
    ];
    let mut backends = Vec::new();
    let mut nodes = Vec::new();
    for (role, id, subsystems) in roles {
        let (http, peer) = (local(free_port()?), local(free_port()?));
        let node_dir = dir.join(role).join("node");
        let node_dir_s = path_str(&node_dir)?;
        let address = format!("https://{peer}");
        let mut args = vec![
            "node",
            "init",
            "--dir",
            node_dir_s,
            "--anchor",
            anchor_s,
            "--node",
            &id,
            "--address",
            &address,
            "--no-passphrase",
            "--wait",
            "60s",
        ];
        for s in &subsystems {
            args.extend(["--subsystem", s]);
        }
        let out = cli(&args)?;
        if !out.contains(" is set up in ") {
            bail!("node init of {id} did not finish:\n{out}");
        }
        let log_fs = match o.log_fs_bytes {
            Some(bytes) => log_on_tmpfs(&node_dir, &dir.join(format!("{role}-logfs")), bytes)?,
            None => None,
        };
        let mut services = String::new();
        if role != "consumer" {
            let backend = local(free_port()?);
            backends.push(Daemon::new(
                &format!("backend-{}", role.trim_start_matches("provider-")),
                &o.exe,
                strings(&["backend", "--listen", &backend.to_string()]),
                dir,
                vec![backend],
            ));
            services = format!("[[service]]\nid = \"{SERVICE}\"\nurl = \"http://{backend}\"\n");
        }
        let config = dir.join(format!("{role}.toml"));
        std::fs::write(&config, node_toml(&node_dir, http, peer, &services))?;
        let daemon = Daemon::new(
            role,
            &o.lienthong,
            strings(&["node", "serve", "--config", path_str(&config)?]),
            dir,
            vec![http, peer],
        );
        nodes.push(Node { role, id, daemon, http, dir: node_dir, log_fs });
    }

    // The service, published by one of its nodes (both host its subsystem), and its grant.
    cli(&["node", "publish", "--dir", path_str(&nodes[1].dir)?, "--service", SERVICE])?;
    cli(&[
        "registry",
        "grant",
        "add",
        "--service",
        SERVICE,
        "--client",
        CLIENT,
        "--legal-basis",
        "soak test",
        "--config",
        reg_config_s,
    ])?;

    for b in &mut backends {
        b.start().await?;
    }
    for n in &mut nodes {
        n.daemon.start().await?;
    }
    let service_url = format!("http://{}/r1/{SERVICE}", nodes[0].http);
    Ok(Instance {
        lienthong: o.lienthong.clone(),
        anchor,
        registry,
        registry_http: reg_http,
        nodes,
        backends,
        service_url,
    })
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn path_str(p: &Path) -> Result<&str> {
    let s = p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))?;
    if s.contains(['"', '\\']) {
        bail!("the work directory's path must not contain '\"' or '\\': {s}");
    }
    Ok(s)
}

/// Runs `lienthong args`, its output appended to `log`; fails with the output if it fails.
pub(crate) fn run_cli(lienthong: &Path, args: &[&str], log: &Path) -> Result<String> {
    use std::io::Write;
    let out = Command::new(lienthong)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .with_context(|| format!("running {}", lienthong.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    writeln!(f, "$ lienthong {}\n{text}(exit {})\n", args.join(" "), out.status)?;
    if !out.status.success() {
        bail!("lienthong {} failed ({}):\n{text}", args.join(" "), out.status);
    }
    Ok(text)
}

fn registry_toml(dir: &Path, http: SocketAddr, grpc: SocketAddr) -> String {
    format!(
        "instance = \"{INSTANCE}\"\ndata_dir = \"{}\"\n\n[http]\nlisten = \"{http}\"\n\n\
         [grpc]\nlisten = \"{grpc}\"\n\n\
         # The registry-down fault lasts at most a minute: well within the validity.\n\
         [globalconf]\nvalidity_secs = 600\nrefresh_secs = 30\n\n\
         [auto_approve]\nregister_node = true\nissue_signing_cert = true\nhost_subsystem = true\n\
         publish_service = true\ngrant_access = true\nrevoke_access = true\n",
        dir.display()
    )
}

fn node_toml(dir: &Path, http: SocketAddr, peer: SocketAddr, services: &str) -> String {
    format!(
        "data_dir = \"{}\"\n\n[consumer]\nhttp = \"{http}\"\n\n[peer]\nlisten = \"{peer}\"\n\n\
         # Short, so checkpoints and witness rounds meet the faults often.\n\
         [log]\ncheckpoint_interval_secs = 5\n\
         # Larger bodies are logged by digest: the soak's logs must fit their small file systems.\n\
         max_logged_body_bytes = 16384\n\n{services}",
        dir.display()
    )
}

/// Puts `node_dir/log` on a new tmpfs of `bytes` mounted at `mount`: the log directory becomes
/// a link to `mount/log`. `None` (with a warning) when the tmpfs cannot be mounted.
fn log_on_tmpfs(node_dir: &Path, mount: &Path, bytes: u64) -> Result<Option<Tmpfs>> {
    let Some(fs) = Tmpfs::mount_at(mount, bytes) else {
        return Ok(None);
    };
    let log = node_dir.join("log");
    let target = fs.path().join("log");
    std::fs::create_dir(&target)?;
    // `node init` makes the directory; the log is created at the first start.
    if log.is_dir() {
        if std::fs::read_dir(&log)?.next().is_some() {
            bail!("{} is not empty after node init; cannot move it onto a tmpfs", log.display());
        }
        std::fs::remove_dir(&log)?;
    }
    std::os::unix::fs::symlink(&target, &log)
        .with_context(|| format!("linking {} to {}", log.display(), target.display()))?;
    Ok(Some(fs))
}
