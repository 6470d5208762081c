//! The fault injector: one fault at a time, a random pause between them; each one is held for a
//! random time, ended, and then the soak waits for its target to recover (ready, and serving a
//! call again), timing it. Faults are sequential so each recovery time belongs to one fault.
//! Also the readiness poller, which asks every node's `/readyz` once a second all run long.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use lienthong_bench::client::BenchClient;
use serde::Serialize;

use crate::setup::{Instance, Stopped};
use crate::traffic::{CallLog, Outcome, Readiness, probe, readyz};
use crate::util::Rng;

/// A target that has not recovered this long after its fault ended counts as not recovering.
pub(crate) const RECOVERY_LIMIT: Duration = Duration::from_secs(120);
/// How long a SIGTERMed process may take to stop.
pub(crate) const STOP_LIMIT: Duration = Duration::from_secs(60);
const BALLAST: &str = "ballast";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FaultKind {
    /// SIGKILL a node, restart it after a pause.
    NodeSigkill,
    /// SIGTERM a node (it must stop by itself), restart it.
    NodeSigterm,
    /// Fill a node's log file system with a ballast file, free it after a while.
    DiskFull,
    /// Stop the registry (SIGTERM), restart it later (well within the configuration's validity).
    RegistryDown,
    /// Kill a provider's backend, restart it.
    BackendDown,
}

impl FaultKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::NodeSigkill => "node-sigkill",
            FaultKind::NodeSigterm => "node-sigterm",
            FaultKind::DiskFull => "disk-full",
            FaultKind::RegistryDown => "registry-down",
            FaultKind::BackendDown => "backend-down",
        }
    }

    /// How long the fault lasts, at least and at most.
    fn hold(self) -> (Duration, Duration) {
        let s = Duration::from_secs;
        match self {
            FaultKind::NodeSigkill => (s(1), s(10)),
            FaultKind::NodeSigterm => (Duration::from_millis(200), s(5)),
            FaultKind::DiskFull => (s(3), s(20)),
            FaultKind::RegistryDown => (s(5), s(60)),
            FaultKind::BackendDown => (s(2), s(15)),
        }
    }
}

/// One injected fault and how its target came back.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FaultRecord {
    pub kind: FaultKind,
    pub target: String,
    /// Seconds since the start of the run.
    pub started_at_s: f64,
    pub held_s: f64,
    /// From the fault's end until the target was ready (its `/readyz`; for the registry and a
    /// backend: listening again).
    pub ready_after_s: Option<f64>,
    /// From the fault's end until the target served a call (a node or backend: a probe
    /// through it answered 200; the registry: it served its configuration).
    pub served_after_s: Option<f64>,
    /// What the soak saw meanwhile (the stop's exit status, what `/readyz` said).
    pub observed: Vec<String>,
    /// What went wrong: did not stop on SIGTERM, did not come back, could not restart.
    pub problem: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct FaultPlan {
    pub kinds: Vec<FaultKind>,
    pub gap_min: Duration,
    pub gap_max: Duration,
}

/// What the injector needs besides the instance.
#[derive(Debug)]
pub(crate) struct Injector {
    pub plan: FaultPlan,
    pub rng: Rng,
    pub start: Instant,
    pub calls: CallLog,
    pub client: BenchClient,
    pub probes: u64,
    pub seed: u64,
    /// Processes that exited without a fault (each restarted): always a finding.
    pub unexpected: Vec<String>,
}

/// What a fault acts on.
#[derive(Debug, Clone, Copy)]
enum Target {
    Node(usize),
    Registry,
    Backend(usize),
}

impl Injector {
    /// Injects faults until `end` (a fault begun before it is still ended and waited for).
    pub(crate) async fn run(&mut self, inst: &mut Instance, end: Instant) -> Vec<FaultRecord> {
        let mut records = Vec::new();
        loop {
            let gap = self.rng.between(self.plan.gap_min, self.plan.gap_max);
            if Instant::now() + gap >= end || self.plan.kinds.is_empty() {
                break;
            }
            tokio::time::sleep(gap).await;
            self.unexpected.extend(restart_the_dead(inst).await);
            let kind = self.plan.kinds[self.rng.range(0, self.plan.kinds.len() as u64 - 1) as usize];
            let record = self.one(inst, kind).await;
            eprintln!("{}", describe(&record));
            records.push(record);
        }
        records
    }

    fn pick(&mut self, inst: &Instance, kind: FaultKind) -> Target {
        match kind {
            FaultKind::NodeSigkill | FaultKind::NodeSigterm => {
                Target::Node(self.rng.range(0, inst.nodes.len() as u64 - 1) as usize)
            }
            FaultKind::DiskFull => {
                let with_fs: Vec<usize> =
                    (0..inst.nodes.len()).filter(|i| inst.nodes[*i].log_fs.is_some()).collect();
                Target::Node(with_fs[self.rng.range(0, with_fs.len() as u64 - 1) as usize])
            }
            FaultKind::RegistryDown => Target::Registry,
            FaultKind::BackendDown => {
                Target::Backend(self.rng.range(0, inst.backends.len() as u64 - 1) as usize)
            }
        }
    }

    /// Injects one fault, holds it, ends it and waits for the recovery.
    async fn one(&mut self, inst: &mut Instance, kind: FaultKind) -> FaultRecord {
        let target = self.pick(inst, kind);
        let (lo, hi) = kind.hold();
        let hold = self.rng.between(lo, hi);
        let began = Instant::now();
        let mut rec = FaultRecord {
            kind,
            target: match target {
                Target::Node(i) => inst.nodes[i].role.to_owned(),
                Target::Registry => "registry".to_owned(),
                Target::Backend(b) => inst.backends[b].name.clone(),
            },
            started_at_s: (began - self.start).as_secs_f64(),
            held_s: 0.0,
            ready_after_s: None,
            served_after_s: None,
            observed: vec![],
            problem: None,
        };
        let result = match (kind, target) {
            (FaultKind::NodeSigkill, Target::Node(i)) => {
                let d = &mut inst.nodes[i].daemon;
                match d.kill().await {
                    Ok(()) => restart_after(d, hold).await,
                    Err(e) => Err(format!("could not kill it: {e:#}")),
                }
            }
            (FaultKind::NodeSigterm, Target::Node(i)) => {
                let d = &mut inst.nodes[i].daemon;
                match d.terminate(STOP_LIMIT).await {
                    Ok(Stopped::Exited(status)) => {
                        rec.observed.push(format!("stopped on SIGTERM: {status}"));
                        if status.success() {
                            restart_after(d, hold).await
                        } else {
                            // Restart anyway, so the run goes on; the exit is the finding.
                            let _ = restart_after(d, hold).await;
                            Err(format!("exited with {status} on SIGTERM"))
                        }
                    }
                    Ok(Stopped::Killed) => {
                        let _ = restart_after(d, hold).await;
                        Err(format!("did not stop within {STOP_LIMIT:?} of SIGTERM (killed)"))
                    }
                    Ok(Stopped::NotRunning) => Err("was not running".into()),
                    Err(e) => Err(format!("{e:#}")),
                }
            }
            (FaultKind::DiskFull, Target::Node(i)) => self.disk_full(inst, i, hold, &mut rec).await,
            (FaultKind::RegistryDown, _) => match inst.registry.terminate(STOP_LIMIT).await {
                Ok(Stopped::Exited(s)) if s.success() => restart_after(&mut inst.registry, hold).await,
                Ok(other) => {
                    let _ = restart_after(&mut inst.registry, hold).await;
                    Err(format!("the registry did not stop cleanly on SIGTERM: {other:?}"))
                }
                Err(e) => Err(format!("{e:#}")),
            },
            (FaultKind::BackendDown, Target::Backend(b)) => {
                let d = &mut inst.backends[b];
                match d.kill().await {
                    Ok(()) => restart_after(d, hold).await,
                    Err(e) => Err(format!("could not kill it: {e:#}")),
                }
            }
            _ => Err("no target for this fault".into()),
        };
        match result {
            Ok(ended) => {
                rec.held_s = (ended - began).as_secs_f64();
                let (ready, served) = self.recovery(inst, target, ended).await;
                rec.ready_after_s = ready.map(|d| d.as_secs_f64());
                rec.served_after_s = served.map(|d| d.as_secs_f64());
                if served.is_none() {
                    rec.problem =
                        Some(format!("did not recover within {RECOVERY_LIMIT:?} of the fault's end"));
                }
            }
            Err(problem) => {
                rec.held_s = began.elapsed().as_secs_f64();
                rec.problem = Some(problem);
            }
        }
        rec
    }

    /// Fills the node's log file system, watches `/readyz` while it is full, frees it.
    async fn disk_full(
        &mut self,
        inst: &mut Instance,
        i: usize,
        hold: Duration,
        rec: &mut FaultRecord,
    ) -> Result<Instant, String> {
        let node = &inst.nodes[i];
        let Some(fs) = &node.log_fs else { return Err("the node's log is not on a tmpfs".into()) };
        let ballast = fs.path().join(BALLAST);
        let filled = tokio::task::block_in_place(|| fs.fill(BALLAST));
        rec.observed.push(format!("ballast of {} MiB filled the log's file system", filled >> 20));
        let until = Instant::now() + hold;
        let mut seen = BTreeMap::<String, u32>::new();
        while Instant::now() < until {
            let said = match readyz(node.http).await {
                Readiness::Ready => "ready".to_owned(),
                Readiness::NotReady(why) => why,
                Readiness::Unreachable => "unreachable".to_owned(),
            };
            *seen.entry(said).or_default() += 1;
            tokio::time::sleep(Duration::from_secs(1).min(until.saturating_duration_since(Instant::now())))
                .await;
        }
        for (said, n) in seen {
            rec.observed.push(format!("/readyz while full ({n}x): {said}"));
        }
        std::fs::remove_file(&ballast).map_err(|e| format!("could not delete {}: {e}", ballast.display()))?;
        Ok(Instant::now())
    }

    /// Waits until the target is ready and serves a call: times from `ended`.
    async fn recovery(
        &mut self,
        inst: &Instance,
        target: Target,
        ended: Instant,
    ) -> (Option<Duration>, Option<Duration>) {
        let deadline = ended + RECOVERY_LIMIT;
        let mut ready = None;
        while Instant::now() < deadline {
            if ready.is_none() {
                let up = match target {
                    Target::Node(i) => readyz(inst.nodes[i].http).await == Readiness::Ready,
                    // Restarted and listening already (start waits for that).
                    Target::Registry | Target::Backend(_) => true,
                };
                if up {
                    ready = Some(ended.elapsed());
                }
            }
            if ready.is_some() && self.serves(inst, target).await {
                return (ready, Some(ended.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (ready, None)
    }

    /// One call the target must serve.
    async fn serves(&mut self, inst: &Instance, target: Target) -> bool {
        let pinned = match target {
            Target::Node(0) => None,
            Target::Node(i) => Some(inst.nodes[i].id.clone()),
            Target::Backend(b) => Some(inst.nodes[b + 1].id.clone()),
            Target::Registry => {
                let url = format!("http://{}/globalconf", inst.registry_http);
                let answer = self.client.send("GET", &url, 0, &[], Duration::from_secs(5)).await;
                return answer.is_ok_and(|e| e.status == 200 && e.body_error.is_none());
            }
        };
        self.probes += 1;
        let id = format!("soak-{}-probe-{}", self.seed, self.probes);
        let call =
            probe(&self.client, &inst.service_url, pinned.as_deref(), id, self.start, &self.calls).await;
        matches!(call.outcome, Outcome::Ack { body_error: None })
    }
}

/// Restarts the process after `pause`; the fault ends when the restart is issued.
async fn restart_after(d: &mut crate::setup::Daemon, pause: Duration) -> Result<Instant, String> {
    tokio::time::sleep(pause).await;
    let ended = Instant::now();
    d.start().await.map_err(|e| format!("could not restart it: {e:#}"))?;
    Ok(ended)
}

/// Restarts processes that exited without a fault; each is a problem to report.
pub(crate) async fn restart_the_dead(inst: &mut Instance) -> Vec<String> {
    let mut problems = Vec::new();
    let daemons = std::iter::once(&mut inst.registry)
        .chain(inst.nodes.iter_mut().map(|n| &mut n.daemon))
        .chain(inst.backends.iter_mut());
    for d in daemons {
        if let Some(why) = d.died() {
            let restarted = match d.start().await {
                Ok(()) => "restarted".to_owned(),
                Err(e) => format!("could not restart it: {e:#}"),
            };
            problems.push(format!("{why}; {restarted}"));
        }
    }
    problems
}

fn describe(r: &FaultRecord) -> String {
    let t = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
    let mut line = format!(
        "[{:>6.1} s] {:<13} {:<10} held {:>4.1} s, ready after {}, served after {}",
        r.started_at_s,
        r.kind.name(),
        r.target,
        r.held_s,
        t(r.ready_after_s),
        t(r.served_after_s)
    );
    if let Some(p) = &r.problem {
        line.push_str(&format!("  PROBLEM: {p}"));
    }
    line
}

/// What one node's `/readyz` said over the run, polled once a second.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct HealthLog {
    pub samples: u64,
    pub ready: u64,
    pub unreachable: u64,
    /// Not ready, by the reason given.
    pub not_ready: BTreeMap<String, u64>,
}

/// Polls each node's `/readyz` once a second until `stop`.
pub(crate) fn spawn_poller(
    nodes: Vec<(String, std::net::SocketAddr)>,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<BTreeMap<String, HealthLog>>>, tokio::task::JoinHandle<()>) {
    let logs = Arc::new(Mutex::new(BTreeMap::<String, HealthLog>::new()));
    let out = logs.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            for (name, http) in &nodes {
                let said = readyz(*http).await;
                let mut logs = logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let log = logs.entry(name.clone()).or_default();
                log.samples += 1;
                match said {
                    Readiness::Ready => log.ready += 1,
                    Readiness::Unreachable => log.unreachable += 1,
                    Readiness::NotReady(why) => *log.not_ready.entry(why).or_default() += 1,
                }
            }
        }
    });
    (out, task)
}
