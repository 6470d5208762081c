//! `lienthong demo`: the whole system on one machine, on embedded defaults. A national instance
//! `VN` (NDXP) and a provincial one `VN-NA` (Nghệ An's LGSP), each with its registry and audit
//! service, federated; nodes for the Ministry of Public Security (population register), the
//! Ministry of Finance (business registration), the Government Office (the public-service
//! portal, which consumes both) and Nghệ An's LGSP hosting two departments; small built-in
//! backends with sample data; grants between them, one never used. It drives traffic (one call
//! denied on purpose), then prints where everything is and what was exchanged.
//!
//! Everything goes through the product's own code paths: the registry's home and server, the
//! node's set-up (CSRs, registration, approval), publication, grants by the administrator, the
//! node runtime, the standalone audit service. With a kept directory the whole set-up is kept
//! (ports included) and a second run reuses it.
//!
//! The binary parses the arguments and supplies a [`Console`]: this library does not print.

mod backends;
mod pki;
mod world;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

pub use backends::Backends;

/// Where the demo writes; the binary decides how (a library does not print).
pub trait Console: Sync {
    /// A progress line for the person watching (stderr in the CLI); not used with `json`.
    fn progress(&self, line: &str);
    /// A line of the summary, or of where the backends listen, while things run (stdout in the
    /// CLI; if it cannot be written it is lost and the demo goes on).
    fn note(&self, line: &str);
    /// A line of the PKI walk-through's result (stdout in the CLI, which ends the process when
    /// nobody reads it).
    fn out(&self, line: &str);
}

/// What the whole-system demo does.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Keep everything in this directory (keys, logs, configurations, ports); a second run reuses
    /// it. `None`: a temporary directory, removed at the end.
    pub dir: Option<PathBuf>,
    /// How many exchanges to drive (one of them denied on purpose).
    pub exchanges: u32,
    /// Stop after the traffic: summary, stop every process, verify every node's log.
    pub exit: bool,
    /// The summary as JSON (stable field names), and no progress lines.
    pub json: bool,
}

/// The whole system: set up (or reopened), driven, summarised; it runs until `shutdown`
/// resolves, or stops at once with [`DemoOptions::exit`].
pub fn run(options: &DemoOptions, console: &dyn Console, shutdown: impl Future<Output = ()>) -> Result<()> {
    let started = Instant::now();
    let temp;
    let dir = match &options.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            std::fs::canonicalize(d).with_context(|| format!("resolving {}", d.display()))?
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    runtime()?.block_on(world::run(&dir, options, started, console, shutdown))
}

/// Only the instance PKI, step by step (the original demo); certificates kept in `keep`.
pub fn pki_walkthrough(keep: Option<&Path>, console: &dyn Console) -> Result<()> {
    pki::run(keep, console)
}

/// Only the built-in backends (population register, business registration, civil status) on
/// these loopback ports until `shutdown`, for the topology run as separate processes.
pub fn serve_backends(
    ports: [u16; 3],
    console: &dyn Console,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    runtime()?.block_on(async {
        let b = Backends::start(ports).await.context("starting the backends")?;
        console.note(&format!("population register: http://{}/cong-dan/{{so_dinh_danh}}", b.population));
        console.note(&format!("business registration: http://{}/doanh-nghiep/{{ma_so_thue}}", b.business));
        console.note(&format!("civil status: http://{}/khai-sinh/{{so}}", b.civil_status));
        shutdown.await;
        b.shutdown().await;
        Ok(())
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")
}
