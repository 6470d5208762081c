//! `lienthong-bench`: Lienthong side by side with what a user would build by hand, as
//! `../shared/design/performance.md` asks. Run it with `bench/run` (which installs nginx and wrk
//! and builds the binaries); see `docs/performance.md` for what it measures and a recorded run.
//!
//! Topologies, all on 127.0.0.1, one backend answering 1 KiB to a 1 KiB POST:
//! A direct to the backend; B nginx -> mTLS -> nginx -> backend; C two Lienthong nodes with
//! signing and logging off (this binary's own `transport-node`, see
//! `lienthong_bench::transport_only`); D two Lienthong nodes in full (`lienthong node serve`).
//! The system under test (the two proxies or nodes) runs on CPU 0; the backend, wrk and this
//! harness on CPU 1 (`--pin none` to let the scheduler place everything).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod gateway;
mod nginx;
mod procfs;
mod report;
mod stats;
mod wrk;

use lienthong_bench::{backend, client, procs};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "lienthong-bench",
    about = "Lienthong against a hand-built nginx mTLS chain: throughput, latency, CPU and memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The benchmark backend alone (the harness starts it itself).
    #[command(hide = true)]
    Backend {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// A transport-only node of topology C (the harness starts it itself).
    #[command(hide = true)]
    TransportNode {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Load rounds at each concurrency, then the body-size sweep.
    All,
    /// Interleaved load rounds only.
    Load,
    /// The body-size sweep only.
    Sizes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Pin {
    /// System under test on CPU 0; backend, load generator and harness on CPU 1.
    Split,
    /// No pinning.
    None,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    #[arg(long, value_enum, default_value = "all")]
    pub mode: Mode,
    /// Measured rounds per concurrency (one warm-up round more is run and discarded).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Seconds per topology per round.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Connection counts of the load rounds.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<u32>,
    /// Body sizes of the sweep, in bytes (request and response alike).
    #[arg(long, value_delimiter = ',', default_value = "1024,1048576,104857600")]
    pub sizes: Vec<u64>,
    #[arg(long, value_enum, default_value = "split")]
    pub pin: Pin,
    /// Which topologies to run (ratios need B and the other one; for profiling one alone).
    #[arg(long, value_delimiter = ',', default_value = "A,B,C,D")]
    pub topologies: Vec<String>,
    /// The `lienthong` binary (default: next to this one).
    #[arg(long, value_name = "FILE")]
    pub lienthong: Option<PathBuf>,
    /// Where to write the JSON report (default: target/bench/gateway-UNIXTIME.json).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Keep the work directory (configurations, keys, logs of every process) here.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Backend { listen }) => return backend::run(listen),
        Some(Command::TransportNode { config }) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            return rt.block_on(lienthong_bench::transport_only::run_node(&config));
        }
        None => {}
    }
    let args = cli.run;
    for tool in ["wrk", "openssl", "taskset"] {
        if !procs::have(tool) {
            bail!("{tool} is not installed (bench/run installs nginx and wrk from Debian's packages)");
        }
    }
    nginx::which_nginx()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = if args.pin == Pin::Split && cores >= 2 { Some((0u32, 1u32)) } else { None };
    if let Some((_, harness_cpu)) = pin {
        // Before the runtime starts its threads: they inherit this CPU.
        let status = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &harness_cpu.to_string(), &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            bail!("could not pin the harness to CPU {harness_cpu}");
        }
    }
    let exe = std::env::current_exe()?;
    let lienthong = match &args.lienthong {
        Some(p) => p.clone(),
        None => exe.with_file_name("lienthong"),
    };
    if !lienthong.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p lienthong-cli) or pass --lienthong",
            lienthong.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(report::run(args, exe, lienthong, pin))
}

/// The temporary or kept work directory.
pub(crate) fn work_dir(keep: Option<&PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            Ok((std::fs::canonicalize(d)?, None))
        }
        None => {
            let t =
                tempfile::Builder::new().prefix("lienthong-bench-").tempdir().context("work directory")?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

/// Seconds as a `Duration`, at least one.
pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s.max(1))
}
