//! `lienthong demo`: the arguments, and a terminal for the demo world (`lienthong-demo`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lienthong_demo::{Console, DemoOptions};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Keep everything in this directory (keys, logs, configurations, ports); a second run
    /// reuses it. Default: a temporary directory, removed at the end.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// How many exchanges to drive (one of them denied on purpose).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    exchanges: u32,
    /// Stop after the traffic: print the summary, stop every process, verify every node's log,
    /// and exit (for scripts and tests). Without it the demo keeps running until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// Print the summary as JSON (field names are stable).
    #[arg(long)]
    json: bool,
    /// Only walk through the instance PKI step by step (the original demo).
    #[arg(long, conflicts_with_all = ["exchanges", "exit", "json", "backends"])]
    pki: bool,
    /// Only serve the built-in backends (population register, business registration, civil
    /// status) on these loopback ports until Ctrl-C, for the topology run as separate processes
    /// (`deploy/demo-processes.sh`).
    #[arg(long, value_name = "PORT,PORT,PORT", value_delimiter = ',', conflicts_with_all = ["exchanges", "exit", "json"])]
    backends: Option<Vec<u16>>,
}

/// Progress on stderr, the summary and results on stdout, never panicking.
struct Terminal;

impl Console for Terminal {
    fn progress(&self, line: &str) {
        errln!("{line}");
    }

    fn note(&self, line: &str) {
        noteln!("{line}");
    }

    fn out(&self, line: &str) {
        outln!("{line}");
    }
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    if args.pki {
        return lienthong_demo::pki_walkthrough(args.dir.as_deref(), &Terminal);
    }
    if let Some(ports) = args.backends {
        let [population, business, civil_status] = ports[..] else {
            anyhow::bail!(
                "--backends takes three ports: population, business, civil status (e.g. 7001,7002,7003)"
            );
        };
        let ports = [population, business, civil_status];
        return lienthong_demo::serve_backends(ports, &Terminal, crate::registry::shutdown_signal());
    }
    let options = DemoOptions { dir: args.dir, exchanges: args.exchanges, exit: args.exit, json: args.json };
    lienthong_demo::run(&options, &Terminal, crate::registry::shutdown_signal())
}
