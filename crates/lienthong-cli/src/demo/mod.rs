//! `lienthong demo`: the whole system on one machine, on embedded defaults. A national instance
//! `VN` (NDXP) and a provincial one `VN-NA` (Nghệ An's LGSP), each with its registry and audit
//! service, federated; nodes for the Ministry of Public Security (population register), the
//! Ministry of Finance (business registration), the Government Office (the public-service
//! portal, which consumes both) and Nghệ An's LGSP hosting two departments; small built-in
//! backends with sample data; grants between them, one never used. It drives traffic (one call
//! denied on purpose), then prints where everything is and what was exchanged.
//!
//! Everything goes through the product's own code paths: `registry init`/`serve`, `node init`
//! (CSRs, registration, approval), `node publish`, grants by the administrator, `node serve`,
//! `audit serve`. With `--dir` the whole set-up is kept (ports included) and a second run
//! reuses it.

mod backends;
mod pki;
mod world;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

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

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    if args.pki {
        return pki::run(args.dir.as_deref());
    }
    if let Some(ports) = args.backends {
        let [population, business, civil_status] = ports[..] else {
            anyhow::bail!(
                "--backends takes three ports: population, business, civil status (e.g. 7001,7002,7003)"
            );
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        return rt.block_on(async {
            let b = backends::Backends::start([population, business, civil_status])
                .await
                .context("starting the backends")?;
            noteln!("population register: http://{}/cong-dan/{{so_dinh_danh}}", b.population);
            noteln!("business registration: http://{}/doanh-nghiep/{{ma_so_thue}}", b.business);
            noteln!("civil status: http://{}/khai-sinh/{{so}}", b.civil_status);
            crate::registry::shutdown_signal().await;
            b.shutdown().await;
            Ok(())
        });
    }
    let started = Instant::now();
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            std::fs::canonicalize(d).with_context(|| format!("resolving {}", d.display()))?
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(world::run(&dir, args.dir.is_some(), args.exchanges, args.exit, args.json, started))
}
