//! One benchmark run: start the four topologies, run the interleaved load rounds and the
//! body-size sweep, print the tables and the targets, write the JSON report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::client::BenchClient;
use crate::procs::{Proc, free_port, version, wait_listening};
use crate::stats::Spread;
use crate::{Mode, RunArgs, gateway, nginx, procfs, secs, work_dir, wrk};

const REQUEST_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
enum Topo {
    A,
    B,
    C,
    D,
}

const TOPOS: [Topo; 4] = [Topo::A, Topo::B, Topo::C, Topo::D];

impl Topo {
    fn label(self) -> &'static str {
        match self {
            Topo::A => "A direct",
            Topo::B => "B nginx mTLS chain",
            Topo::C => "C Lienthong transport only",
            Topo::D => "D Lienthong full",
        }
    }
}

/// Where one topology is called and which processes are its system under test.
struct Target<'a> {
    topo: Topo,
    url: String,
    headers: Vec<(&'static str, String)>,
    /// (role, process); empty for A, whose only process is the backend.
    sut: Vec<(&'static str, &'a Proc)>,
    script: PathBuf,
}

impl Target<'_> {
    fn header_refs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }
}

/// One load run of one topology.
#[derive(Debug, Clone, Serialize)]
struct LoadRun {
    concurrency: u32,
    round: u32,
    warmup: bool,
    topology: Topo,
    requests: u64,
    errors: u64,
    throughput: f64,
    p50_us: u64,
    p99_us: u64,
    /// CPU of the system under test (both proxies or nodes) per request; the backend's for A.
    cpu_us_per_request: f64,
    backend_cpu_us_per_request: f64,
    peak_rss_kib: BTreeMap<&'static str, u64>,
}

fn sut_cpu(t: &Target<'_>) -> Result<u64> {
    t.sut.iter().map(|(_, p)| procfs::cpu_us(p.pid())).sum()
}

async fn load_run(
    t: &Target<'_>,
    backend: &Proc,
    c: u32,
    round: u32,
    args: &RunArgs,
    load_cpu: Option<u32>,
) -> Result<LoadRun> {
    for (_, p) in &t.sut {
        procfs::reset_peak(p.pid())?;
    }
    let (cpu0, b0) = (sut_cpu(t)?, procfs::cpu_us(backend.pid())?);
    let (url, script, duration) = (t.url.clone(), t.script.clone(), secs(args.duration));
    let r = tokio::task::spawn_blocking(move || wrk::run(&url, &script, c, duration, load_cpu)).await??;
    let (cpu1, b1) = (sut_cpu(t)?, procfs::cpu_us(backend.pid())?);
    let n = r.requests.max(1) as f64;
    let backend_cpu = (b1 - b0) as f64 / n;
    let mut peak = BTreeMap::new();
    for (role, p) in &t.sut {
        peak.insert(*role, procfs::peak_rss_kib(p.pid())?);
    }
    Ok(LoadRun {
        concurrency: c,
        round,
        warmup: round == 0,
        topology: t.topo,
        requests: r.requests,
        errors: r.errors(),
        throughput: r.throughput(),
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        cpu_us_per_request: if t.sut.is_empty() { backend_cpu } else { (cpu1 - cpu0) as f64 / n },
        backend_cpu_us_per_request: backend_cpu,
        peak_rss_kib: peak,
    })
}

/// One topology at one body size in the sweep.
#[derive(Debug, Clone, Serialize)]
struct SizeRun {
    bytes: u64,
    topology: Topo,
    exchanges: usize,
    p50_ms: f64,
    min_ms: f64,
    max_ms: f64,
    /// Request and response bytes over the median time.
    mb_per_s: f64,
    peak_rss_kib: BTreeMap<&'static str, u64>,
}

fn reps_for(bytes: u64) -> usize {
    match bytes {
        0..=65_536 => 200,
        65_537..=4_194_304 => 20,
        _ => 3,
    }
}

async fn size_run(t: &Target<'_>, client: &BenchClient, bytes: u64) -> Result<SizeRun> {
    // One untimed exchange first: connections, caches, spool files.
    let headers = t.header_refs();
    client.post(&t.url, bytes, &headers).await?;
    for (_, p) in &t.sut {
        procfs::reset_peak(p.pid())?;
    }
    let reps = reps_for(bytes);
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let e = client.post(&t.url, bytes, &headers).await?;
        if e.status != 200 || e.received != bytes {
            bail!("{}: {bytes} bytes: status {}, {} bytes back", t.topo.label(), e.status, e.received);
        }
        ms.push(e.elapsed.as_secs_f64() * 1e3);
    }
    let mut peak = BTreeMap::new();
    for (role, p) in &t.sut {
        peak.insert(*role, procfs::peak_rss_kib(p.pid())?);
    }
    let s = Spread::of(&ms).context("no exchanges")?;
    Ok(SizeRun {
        bytes,
        topology: t.topo,
        exchanges: reps,
        p50_ms: s.median,
        min_ms: s.min,
        max_ms: s.max,
        mb_per_s: 2.0 * bytes as f64 / (s.median / 1e3) / 1e6,
        peak_rss_kib: peak,
    })
}

fn make_target<'a>(
    dir: &Path,
    topo: Topo,
    url: String,
    client: Option<&str>,
    sut: Vec<(&'static str, &'a Proc)>,
) -> Result<Target<'a>> {
    let headers: Vec<(&'static str, String)> =
        client.map(|c| vec![("X-Road-Client", c.to_owned())]).unwrap_or_default();
    let script = dir.join(format!("wrk-{topo:?}.lua"));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    wrk::write_script(&script, REQUEST_BYTES, &refs)?;
    Ok(Target { topo, url, headers, sut, script })
}

fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) async fn run(
    args: RunArgs,
    exe: PathBuf,
    lienthong: PathBuf,
    pin: Option<(u32, u32)>,
) -> Result<()> {
    let (dir, _temp) = work_dir(args.keep.as_ref())?;
    let (sut_cpu_id, load_cpu) = (pin.map(|p| p.0), pin.map(|p| p.1));
    eprintln!("• work directory {}", dir.display());

    // The backend, with the load generator.
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let listen = backend_addr.to_string();
    let mut backend =
        Proc::start("backend", &exe, &["backend", "--listen", &listen], load_cpu, &dir.join("backend.log"))?;
    wait_listening(&mut backend, backend_addr, Duration::from_secs(10))?;

    eprintln!("• starting nginx (B)");
    let chain = nginx::start(&dir.join("nginx"), backend_addr, sut_cpu_id)?;
    eprintln!("• setting up and starting four Lienthong nodes (C, D)");
    let nodes = gateway::start(&lienthong, &exe, backend_addr, sut_cpu_id, &dir).await?;

    let mk = |topo, url, client, sut| make_target(&dir, topo, url, client, sut);
    let mut targets = vec![
        mk(Topo::A, format!("http://{backend_addr}/echo"), None, vec![])?,
        mk(
            Topo::B,
            format!("{}/echo", chain.url),
            None,
            vec![("consumer", &chain.consumer), ("provider", &chain.provider)],
        )?,
        mk(
            Topo::C,
            nodes.transport.url.clone(),
            Some(&nodes.transport.client),
            vec![("consumer", &nodes.transport.consumer), ("provider", &nodes.transport.provider)],
        )?,
        mk(
            Topo::D,
            nodes.full.url.clone(),
            Some(&nodes.full.client),
            vec![("consumer", &nodes.full.consumer), ("provider", &nodes.full.provider)],
        )?,
    ];
    targets.retain(|t| args.topologies.iter().any(|x| x.eq_ignore_ascii_case(&format!("{:?}", t.topo))));
    if targets.is_empty() {
        bail!("--topologies names none of A, B, C, D");
    }
    let client = BenchClient::new();
    for t in &targets {
        client
            .wait_ready(&t.url, &t.header_refs(), Duration::from_secs(60))
            .await
            .with_context(|| t.topo.label())?;
    }
    // Idle memory: after start-up and one exchange, before any load.
    let mut idle = BTreeMap::new();
    for t in &targets {
        for (role, p) in &t.sut {
            idle.insert(format!("{:?} {role}", t.topo), procfs::rss_kib(p.pid())?);
        }
    }

    let mut load = Vec::new();
    if args.mode != Mode::Sizes {
        for &c in &args.concurrency {
            for round in 0..=args.rounds {
                // Rotate the order each round, so no topology always follows another.
                for k in 0..targets.len() {
                    let t = &targets[(k + round as usize) % targets.len()];
                    let r = load_run(t, &backend, c, round, &args, load_cpu).await?;
                    eprintln!(
                        "  c={c:<3} round {round}{} {:<28} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  {:>6.1} µs CPU/req  errors {}",
                        if round == 0 { " (warm-up)" } else { "" },
                        t.topo.label(),
                        r.throughput,
                        r.p50_us as f64 / 1e3,
                        r.p99_us as f64 / 1e3,
                        r.cpu_us_per_request,
                        r.errors
                    );
                    load.push(r);
                }
            }
        }
    }
    let mut sizes = Vec::new();
    if args.mode != Mode::Load {
        for &bytes in &args.sizes {
            for t in &targets {
                let r = size_run(t, &client, bytes).await?;
                eprintln!(
                    "  {bytes:>10} B {:<28} p50 {:>9.2} ms  {:>8.1} MB/s  peak RSS {:?}",
                    t.topo.label(),
                    r.p50_ms,
                    r.mb_per_s,
                    r.peak_rss_kib
                );
                sizes.push(r);
            }
        }
    }

    let summary = summarise(&args, &load, &sizes, &idle);
    print_report(&args, &summary);
    let machine = procfs::machine();
    let report = json!({
        "machine": machine,
        "pinning": match pin { Some((s, l)) => json!({"system_under_test_cpu": s, "load_generator_cpu": l}), None => Value::Null },
        "versions": {
            "lienthong": git_revision(),
            "nginx": version(&nginx::which_nginx()?.display().to_string(), &["-v"]),
            "wrk": version("wrk", &["-v"]),
        },
        "settings": {
            "mode": format!("{:?}", args.mode).to_lowercase(),
            "rounds": args.rounds,
            "seconds_per_run": args.duration,
            "concurrency": args.concurrency,
            "request_bytes": REQUEST_BYTES,
            "response_bytes": crate::backend::DEFAULT_SIZE,
            "sizes": args.sizes,
        },
        "summary": summary,
        "load_runs": load,
        "size_runs": sizes,
    });
    let out = match &args.out {
        Some(p) => p.clone(),
        None => {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            PathBuf::from(format!("target/bench/gateway-{t}.json"))
        }
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    println!("\nJSON report: {}", out.display());
    drop(targets);
    // A run with failed requests measured something other than exchanges: say so by the exit code.
    let failed: u64 = load.iter().map(|r| r.errors).sum();
    if failed > 0 {
        bail!("{failed} requests failed during the load rounds (see the errors column)");
    }
    Ok(())
}

/// The summary the report prints: per concurrency and topology, the ratios, the sweep and the
/// targets, as JSON (also what the file holds under "summary").
fn summarise(args: &RunArgs, load: &[LoadRun], sizes: &[SizeRun], idle: &BTreeMap<String, u64>) -> Value {
    let measured = |c: u32, t: Topo| -> Vec<&LoadRun> {
        load.iter().filter(|r| r.concurrency == c && r.topology == t && !r.warmup).collect()
    };
    let spread = |v: Vec<f64>| Spread::of(&v).map_or(Value::Null, |s| json!(s));
    let mut per_c = Vec::new();
    for &c in &args.concurrency {
        let mut topos = serde_json::Map::new();
        for t in TOPOS {
            let runs = measured(c, t);
            if runs.is_empty() {
                continue;
            }
            let mut rss = serde_json::Map::new();
            for role in ["consumer", "provider"] {
                let v: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| r.peak_rss_kib.get(role))
                    .map(|k| *k as f64 / 1024.0)
                    .collect();
                if !v.is_empty() {
                    rss.insert(role.into(), spread(v));
                }
            }
            topos.insert(
                format!("{t:?}"),
                json!({
                    "label": t.label(),
                    "throughput": spread(runs.iter().map(|r| r.throughput).collect()),
                    "p50_ms": spread(runs.iter().map(|r| r.p50_us as f64 / 1e3).collect()),
                    "p99_ms": spread(runs.iter().map(|r| r.p99_us as f64 / 1e3).collect()),
                    "cpu_us_per_request": spread(runs.iter().map(|r| r.cpu_us_per_request).collect()),
                    "peak_rss_mib": rss,
                    "errors": runs.iter().map(|r| r.errors).sum::<u64>(),
                }),
            );
        }
        // Ratios of the same round: both numbers saw the same moment of this noisy machine.
        let ratio = |num: Topo, den: Topo, f: &dyn Fn(&LoadRun) -> f64| -> Value {
            let (n, d) = (measured(c, num), measured(c, den));
            spread(
                n.iter().filter_map(|a| d.iter().find(|b| b.round == a.round).map(|b| f(a) / f(b))).collect(),
            )
        };
        let added = |t: Topo| -> Value {
            let (n, d) = (measured(c, t), measured(c, Topo::A));
            spread(
                n.iter()
                    .filter_map(|a| {
                        d.iter()
                            .find(|b| b.round == a.round)
                            .map(|b| (a.p50_us as f64 - b.p50_us as f64) / 1e3)
                    })
                    .collect(),
            )
        };
        per_c.push(json!({
            "concurrency": c,
            "topologies": topos,
            "ratios": {
                "C/B throughput": ratio(Topo::C, Topo::B, &|r| r.throughput),
                "C/B cpu_per_request": ratio(Topo::C, Topo::B, &|r| r.cpu_us_per_request),
                "D/B throughput": ratio(Topo::D, Topo::B, &|r| r.throughput),
                "D/B cpu_per_request": ratio(Topo::D, Topo::B, &|r| r.cpu_us_per_request),
            },
            "p50_added_over_A_ms": { "B": added(Topo::B), "C": added(Topo::C), "D": added(Topo::D) },
        }));
    }
    let sweep: Vec<Value> = sizes.iter().map(|s| json!(s)).collect();
    let targets = targets(&per_c, sizes, idle);
    json!({ "load": per_c, "sizes": sweep, "idle_rss_kib": idle, "targets": targets })
}

fn get(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_f64()
}

/// The targets of performance.md, each with the measured value and whether it is met.
fn targets(per_c: &[Value], sizes: &[SizeRun], idle: &BTreeMap<String, u64>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut check = |name: String, value: Option<f64>, unit: &str, ok: &dyn Fn(f64) -> bool| {
        if let Some(v) = value {
            out.push(json!({"target": name, "measured": (v * 1000.0).round() / 1000.0, "unit": unit, "met": ok(v)}));
        }
    };
    let at = |c: u64| per_c.iter().find(|p| p["concurrency"].as_u64() == Some(c));
    for p in per_c {
        let c = p["concurrency"].as_u64().unwrap_or(0);
        check(
            format!("C/B throughput >= 1.0 (c={c})"),
            get(p, &["ratios", "C/B throughput", "median"]),
            "ratio",
            &|v| v >= 1.0,
        );
        check(
            format!("C/B CPU per request <= 1.0 (c={c})"),
            get(p, &["ratios", "C/B cpu_per_request", "median"]),
            "ratio",
            &|v| v <= 1.0,
        );
    }
    let best_d = per_c
        .iter()
        .filter_map(|p| get(p, &["topologies", "D", "throughput", "median"]))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    check("D >= 3000 exchanges/s".into(), best_d, "req/s", &|v| v >= 3000.0);
    if let Some(p) = at(1) {
        check(
            "D p50 added over A <= 0.5 ms (c=1)".into(),
            get(p, &["p50_added_over_A_ms", "D", "median"]),
            "ms",
            &|v| v <= 0.5,
        );
    }
    if let Some(p) = at(16) {
        check("D p99 <= 2 ms (c=16)".into(), get(p, &["topologies", "D", "p99_ms", "median"]), "ms", &|v| {
            v <= 2.0
        });
    }
    let idle_max = idle
        .iter()
        .filter(|(k, _)| k.starts_with('D') || k.starts_with('C'))
        .map(|(_, v)| *v as f64 / 1024.0)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    check("idle RSS per node <= 20 MB".into(), idle_max, "MiB", &|v| v <= 20.0 * 1e6 / 1048576.0);
    let load_max = per_c
        .iter()
        .flat_map(|p| {
            ["consumer", "provider"].map(|r| get(p, &["topologies", "D", "peak_rss_mib", r, "max"]))
        })
        .flatten()
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    check("peak RSS per node under load <= 64 MB".into(), load_max, "MiB", &|v| v <= 64.0 * 1e6 / 1048576.0);
    let d_sizes: Vec<&SizeRun> = sizes.iter().filter(|s| s.topology == Topo::D).collect();
    if let (Some(small), Some(large)) =
        (d_sizes.iter().min_by_key(|s| s.bytes), d_sizes.iter().max_by_key(|s| s.bytes))
        && large.bytes > small.bytes
    {
        let peak = |s: &SizeRun| s.peak_rss_kib.values().copied().max().unwrap_or(0) as f64 / 1024.0;
        check(
            format!(
                "memory flat as the body grows (D peak at {} B minus at {} B <= 16 MiB)",
                large.bytes, small.bytes
            ),
            Some(peak(large) - peak(small)),
            "MiB",
            &|v| v <= 16.0,
        );
    }
    out
}

fn fmt_spread(v: &Value, digits: usize) -> String {
    match (
        v.get("median").and_then(Value::as_f64),
        v.get("min").and_then(Value::as_f64),
        v.get("max").and_then(Value::as_f64),
    ) {
        (Some(m), Some(lo), Some(hi)) => format!("{m:.digits$} [{lo:.digits$}–{hi:.digits$}]"),
        _ => "–".into(),
    }
}

fn print_report(args: &RunArgs, summary: &Value) {
    if args.mode != Mode::Sizes {
        println!(
            "\nLoad: {} measured rounds of {} s per topology (after one warm-up round); median [min–max]",
            args.rounds, args.duration
        );
        for p in summary["load"].as_array().into_iter().flatten() {
            println!("\nconcurrency {}", p["concurrency"]);
            println!(
                "  {:<28} {:>24} {:>22} {:>22} {:>22} {:>18} {:>18} {:>6}",
                "topology",
                "req/s",
                "p50 ms",
                "p99 ms",
                "CPU µs/req",
                "consumer MiB",
                "provider MiB",
                "errors"
            );
            for t in TOPOS {
                let Some(v) = p["topologies"].get(format!("{t:?}")) else { continue };
                println!(
                    "  {:<28} {:>24} {:>22} {:>22} {:>22} {:>18} {:>18} {:>6}",
                    t.label(),
                    fmt_spread(&v["throughput"], 0),
                    fmt_spread(&v["p50_ms"], 3),
                    fmt_spread(&v["p99_ms"], 3),
                    fmt_spread(&v["cpu_us_per_request"], 1),
                    v["peak_rss_mib"].get("consumer").map_or("–".into(), |s| fmt_spread(s, 1)),
                    v["peak_rss_mib"].get("provider").map_or("–".into(), |s| fmt_spread(s, 1)),
                    v["errors"],
                );
            }
            let r = &p["ratios"];
            println!(
                "  C/B throughput {}   C/B CPU {}   D/B throughput {}   D/B CPU {}",
                fmt_spread(&r["C/B throughput"], 2),
                fmt_spread(&r["C/B cpu_per_request"], 2),
                fmt_spread(&r["D/B throughput"], 2),
                fmt_spread(&r["D/B cpu_per_request"], 2)
            );
            let a = &p["p50_added_over_A_ms"];
            println!(
                "  p50 added over A (ms): B {}   C {}   D {}",
                fmt_spread(&a["B"], 3),
                fmt_spread(&a["C"], 3),
                fmt_spread(&a["D"], 3)
            );
        }
        println!("\nIdle RSS (KiB): {}", summary["idle_rss_kib"]);
    }
    if args.mode != Mode::Load {
        println!(
            "\nBody sizes (request and response alike, one exchange at a time): p50 ms, MB/s, peak RSS MiB"
        );
        println!(
            "  {:>11}  {:<28} {:>10} {:>9} {:>14} {:>14}",
            "bytes", "topology", "p50 ms", "MB/s", "consumer MiB", "provider MiB"
        );
        for s in summary["sizes"].as_array().into_iter().flatten() {
            let mib = |role: &str| {
                s["peak_rss_kib"]
                    .get(role)
                    .and_then(Value::as_f64)
                    .map_or("–".into(), |k| format!("{:.1}", k / 1024.0))
            };
            let topo = s["topology"].as_str().unwrap_or("?");
            let label = TOPOS.iter().find(|t| format!("{t:?}") == topo).map_or(topo, |t| t.label());
            println!(
                "  {:>11}  {:<28} {:>10.2} {:>9.1} {:>14} {:>14}",
                s["bytes"],
                label,
                s["p50_ms"].as_f64().unwrap_or(0.0),
                s["mb_per_s"].as_f64().unwrap_or(0.0),
                mib("consumer"),
                mib("provider")
            );
        }
    }
    println!("\nTargets (performance.md):");
    for t in summary["targets"].as_array().into_iter().flatten() {
        println!(
            "  [{}] {}: {} {}",
            if t["met"].as_bool() == Some(true) { "met" } else { "NOT met" },
            t["target"].as_str().unwrap_or(""),
            t["measured"],
            t["unit"].as_str().unwrap_or("")
        );
    }
}
