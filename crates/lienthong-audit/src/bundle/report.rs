//! What verifying a bundle found: the exchanges and sides it proves, and every check with its
//! outcome in plain words. Field names are stable for scripts (`lienthong audit verify --json`).

use std::fmt;

use serde::Serialize;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    /// Not checkable with what the bundle holds (e.g. a body the log did not keep), or not
    /// checked because something it depends on failed. Says nothing against the bundle.
    Skipped,
}

/// One check: what was checked (`subject`: the bundle, a configuration, a side, a record or an
/// exchange), which check, and the outcome explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub subject: String,
    pub check: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

/// One exchange as the records show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExchangeSummary {
    pub message_id: String,
    pub request_id: String,
    pub client: String,
    pub service: String,
    pub method: String,
    pub path: String,
    /// The response's status, if a response record is in the bundle.
    pub status: Option<u32>,
    /// The fault code, if a node refused or failed the exchange.
    pub fault: Option<String>,
    pub consumer_node: Option<String>,
    pub provider_node: Option<String>,
    /// Which records the bundle holds, e.g. `consumer request`, `provider response`.
    pub records: Vec<String>,
}

/// What one node's log contributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SideSummary {
    pub node: String,
    /// The version of the global configuration this node held (if it could be read).
    pub global_conf_version: Option<u64>,
    /// SHA-256 of the node's authentication certificate.
    pub node_certificate: String,
    pub checkpoint_size: u64,
    pub checkpoint_root: String,
    /// When the node made the checkpoint (RFC 3339, UTC).
    pub checkpoint_time: String,
    /// Key ids of the registry keys whose co-signatures verified.
    pub witnessed_by: Vec<String>,
    /// Leaf indexes of the records in the bundle.
    pub records: Vec<u64>,
}

/// Everything a verification found. Valid exactly when no check failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub valid: bool,
    pub format: String,
    /// The anchor's instance.
    pub instance: String,
    pub exchanges: Vec<ExchangeSummary>,
    pub sides: Vec<SideSummary>,
    pub checks: Vec<Check>,
}

impl Report {
    /// The checks that failed, in the order they were made.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.outcome == Outcome::Failed)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.outcome {
            Outcome::Passed => "ok  ",
            Outcome::Failed => "FAIL",
            Outcome::Skipped => "skip",
        };
        write!(f, "{mark}  {}: {}: {}", self.subject, self.check, self.detail)
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        if self.valid {
            writeln!(f, "evidence bundle ({}), instance {}: VALID", or_dash(&self.format), self.instance)?;
        } else {
            writeln!(
                f,
                "evidence bundle ({}), instance {}: NOT VALID ({failed} check{} failed)",
                or_dash(&self.format),
                self.instance,
                if failed == 1 { "" } else { "s" }
            )?;
        }
        for e in &self.exchanges {
            writeln!(f)?;
            writeln!(f, "exchange {} (request {})", e.message_id, or_dash(&e.request_id))?;
            writeln!(f, "  client:        {}", or_dash(&e.client))?;
            writeln!(f, "  service:       {}", or_dash(&e.service))?;
            writeln!(f, "  call:          {} {}", e.method, e.path)?;
            match (&e.status, &e.fault) {
                (_, Some(fault)) => writeln!(f, "  outcome:       fault {fault}")?,
                (Some(status), None) => writeln!(f, "  outcome:       status {status}")?,
                (None, None) => writeln!(f, "  outcome:       (no response record)")?,
            }
            writeln!(f, "  consumer node: {}", e.consumer_node.as_deref().unwrap_or("-"))?;
            writeln!(f, "  provider node: {}", e.provider_node.as_deref().unwrap_or("-"))?;
            writeln!(f, "  records:       {}", e.records.join(", "))?;
        }
        for s in &self.sides {
            writeln!(f)?;
            writeln!(f, "log of node {}", s.node)?;
            match s.global_conf_version {
                Some(v) => writeln!(f, "  configuration: version {v}")?,
                None => writeln!(f, "  configuration: (unreadable)")?,
            }
            writeln!(f, "  certificate:   {}", or_dash(&s.node_certificate))?;
            writeln!(
                f,
                "  checkpoint:    size {}, root {}, made {}",
                s.checkpoint_size,
                or_dash(&s.checkpoint_root),
                or_dash(&s.checkpoint_time)
            )?;
            if s.witnessed_by.is_empty() {
                writeln!(f, "  witnessed by:  (no verified co-signature)")?;
            } else {
                writeln!(f, "  witnessed by:  registry key {}", s.witnessed_by.join(", "))?;
            }
            let records: Vec<String> = s.records.iter().map(u64::to_string).collect();
            writeln!(f, "  records:       {}", records.join(", "))?;
        }
        writeln!(f)?;
        writeln!(f, "checks:")?;
        for c in &self.checks {
            writeln!(f, "  {c}")?;
        }
        if !self.valid {
            writeln!(f)?;
            writeln!(f, "failed:")?;
            for c in self.failures() {
                writeln!(f, "  {}: {}: {}", c.subject, c.check, c.detail)?;
            }
        }
        Ok(())
    }
}
