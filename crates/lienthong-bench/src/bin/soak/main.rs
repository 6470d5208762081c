//! `lienthong-soak`: mixed r1 traffic for a bounded time while faults are injected at random
//! (a node SIGKILLed or SIGTERMed and restarted, a node's log disk filled and freed, the
//! registry stopped and restarted, a provider's backend killed and restarted). At the end every
//! process is stopped gracefully, every node's log is verified offline, and every acknowledged
//! exchange must be in the consumer's log and in one provider's log. Prints exchanges
//! acknowledged, lost (must be 0), logs verified, and recoveries with their times; writes JSON.
//! A benchmark-style tool, not a CI test: see `docs/soak.md`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod check;
mod faults;
mod setup;
mod summary;
mod traffic;
mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lienthong_bench::backend;
use lienthong_bench::client::BenchClient;

use crate::faults::{FaultKind, FaultPlan, Injector};
use crate::setup::{Instance, SetupOptions};
use crate::traffic::{CallLog, Mix, Outcome, Readiness};
use crate::util::{Rng, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "lienthong-soak",
    about = "Mixed traffic through a registry, a consumer node and two provider nodes (separate \
             processes) while faults are injected at random; then every log is verified and every \
             acknowledged exchange looked up in them"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A provider's backend (the soak starts two itself).
    #[command(hide = true)]
    Backend {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// How long traffic and faults run (e.g. 30s for a smoke run, 10m, 1h); setting up and
    /// checking come on top.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed of every random choice (call kinds, faults, targets, pauses); default: the time.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent r1 clients.
    #[arg(long, default_value_t = 8)]
    pub clients: u32,
    /// Calls per second, all clients together.
    #[arg(long, default_value_t = 40.0)]
    pub rate: f64,
    /// Faults to inject (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "node-sigkill,node-sigterm,disk-full,registry-down,backend-down"
    )]
    pub faults: Vec<FaultKind>,
    /// Shortest pause between one fault's recovery and the next fault.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub fault_gap_min: Duration,
    /// Longest such pause.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub fault_gap_max: Duration,
    /// Size of each node's log file system (a tmpfs; needs root, else plain directories and no
    /// disk-full fault), in MiB.
    #[arg(long, default_value_t = 256)]
    pub log_fs_mib: u64,
    /// The `lienthong` binary (default: next to this one).
    #[arg(long, value_name = "FILE")]
    pub lienthong: Option<PathBuf>,
    /// Where to write the JSON report (default: target/soak/soak-UNIXTIME.json).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Keep the work directory (configurations, keys, every process's output, copies of the
    /// logs) here. Without it a temporary one is used, and kept only when the run fails.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Backend { listen }) = cli.command {
        return backend::run(listen);
    }
    let args = cli.args;
    if args.rate <= 0.0 || args.clients == 0 {
        bail!("--rate and --clients must be positive");
    }
    if args.fault_gap_max < args.fault_gap_min {
        bail!("--fault-gap-max must not be below --fault-gap-min");
    }
    let exe = std::env::current_exe()?;
    let lienthong = args.lienthong.clone().unwrap_or_else(|| exe.with_file_name("lienthong"));
    if !lienthong.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p lienthong-cli) or pass --lienthong",
            lienthong.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let passed = rt.block_on(run(args, exe, lienthong))?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

async fn run(args: Args, exe: PathBuf, lienthong: PathBuf) -> Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
    });
    let mut rng = Rng::new(seed);
    let (dir, temp) = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (std::fs::canonicalize(d)?, None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("lienthong-soak-").tempdir().context("work directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let mut kinds = args.faults.clone();
    kinds.sort();
    kinds.dedup();
    let log_fs_bytes = if is_root() {
        Some(args.log_fs_mib << 20)
    } else {
        eprintln!(
            "WARNING: not root: the nodes' logs are plain directories, and the disk-full fault is skipped"
        );
        None
    };
    eprintln!("• seed {seed}; work directory {}", dir.display());
    eprintln!("• setting up the registry, the consumer node, two provider nodes and their backends");
    let opts = SetupOptions { lienthong: lienthong.clone(), exe, dir: dir.clone(), log_fs_bytes };
    let mut inst = setup::set_up(&opts).await?;
    if inst.nodes.iter().any(|n| n.log_fs.is_none()) && kinds.contains(&FaultKind::DiskFull) {
        if log_fs_bytes.is_some() {
            eprintln!("WARNING: a node's log is not on a tmpfs: the disk-full fault is skipped");
        }
        kinds.retain(|k| *k != FaultKind::DiskFull);
    }
    let client = BenchClient::new();
    let calls: CallLog = Arc::new(Mutex::new(Vec::new()));
    wait_serving(&inst, &client, &calls).await?;
    calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();

    eprintln!(
        "• running for {:?}: {} clients, {} calls/s, faults: {}",
        args.duration,
        args.clients,
        args.rate,
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    );
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (health, poller) =
        faults::spawn_poller(inst.nodes.iter().map(|n| (n.role.to_owned(), n.http)).collect(), stop.clone());
    let mix = Mix { clients: args.clients, rate: args.rate };
    let clients = traffic::spawn(mix, &inst.service_url, &mut rng, seed, start, &stop, &calls);
    let plan = FaultPlan { kinds: kinds.clone(), gap_min: args.fault_gap_min, gap_max: args.fault_gap_max };
    let mut injector = Injector {
        plan,
        rng: rng.fork(0xFA17),
        start,
        calls: calls.clone(),
        client: client.clone(),
        probes: 0,
        seed,
        unexpected: vec![],
    };
    let fault_records = injector.run(&mut inst, start + args.duration).await;
    // Traffic runs its full time even when no fault fits in it any more.
    tokio::time::sleep(args.duration.saturating_sub(start.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        // Each call is bounded; a client stops after its current one.
        let _ = tokio::time::timeout(Duration::from_secs(120), c).await;
    }
    let _ = poller.await;
    let ran = start.elapsed();
    injector.unexpected.extend(faults::restart_the_dead(&mut inst).await);

    eprintln!("• stopping everything (SIGTERM), verifying the logs, looking up every acknowledged exchange");
    let stops = check::stop_all(&mut inst).await;
    let setup_log = dir.join("setup.log");
    let logs = check::verify_logs(&inst, &setup_log);
    let calls = std::mem::take(&mut *calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let acked: Vec<&traffic::Call> =
        calls.iter().filter(|c| matches!(c.outcome, Outcome::Ack { .. })).collect();
    let loss = check::check_losses(&inst, &acked);
    let health = std::mem::take(&mut *health.lock().unwrap_or_else(std::sync::PoisonError::into_inner));

    let report = summary::Report::new(summary::Inputs {
        args: &args,
        seed,
        kinds: &kinds,
        ran,
        log_fs_bytes,
        calls: &calls,
        faults: fault_records,
        unexpected: injector.unexpected,
        stops,
        logs,
        loss,
        health,
    });
    print!("{}", report.text());
    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            PathBuf::from(format!("target/soak/soak-{t}.json"))
        }
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    println!("JSON report: {}", out.display());

    // The logs live on the tmpfs mounts, which go with the instance: copy them first when the
    // work directory is kept.
    let passed = report.passed();
    if args.keep.is_some() || !passed {
        copy_logs(&inst);
    }
    drop(inst);
    if let Some(t) = temp {
        if passed {
            drop(t);
        } else {
            let kept = t.keep();
            println!("work directory kept for inspection: {}", kept.display());
        }
    }
    Ok(passed)
}

/// Waits until every node is ready and a call goes through (bounded).
async fn wait_serving(inst: &Instance, client: &BenchClient, calls: &CallLog) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    for n in &inst.nodes {
        loop {
            let said = traffic::readyz(n.http).await;
            if said == Readiness::Ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} is not ready: {said:?}\n{}", n.role, setup::tail(&n.daemon.log));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let start = Instant::now();
    for pinned in inst.nodes[1..].iter().map(|n| Some(n.id.as_str())) {
        loop {
            let id = format!("soak-warmup-{}", uuid_like());
            let call = traffic::probe(client, &inst.service_url, pinned, id, start, calls).await;
            if matches!(call.outcome, Outcome::Ack { body_error: None }) {
                break;
            }
            if Instant::now() > deadline {
                bail!("no call went through to {pinned:?} (last: {:?})", call.outcome);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// A unique enough suffix for warm-up call ids.
fn uuid_like() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{t:x}")
}

/// Copies each node's log off its tmpfs into the work directory (`<role>/log-copy`).
fn copy_logs(inst: &Instance) {
    for n in inst.nodes.iter().filter(|n| n.log_fs.is_some()) {
        let to = n.dir.parent().map_or_else(|| n.dir.join("log-copy"), |p| p.join("log-copy"));
        let _ = std::fs::create_dir_all(&to);
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", n.log_dir().display()))
            .arg(&to)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("could not copy {}'s log to {}", n.role, to.display());
        }
    }
}
