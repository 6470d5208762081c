//! `lienthong audit query`: search a node's message log offline (time range, client, service,
//! status, exchange, user), with inclusion proofs against the newest witnessed checkpoint, as
//! JSON, NDJSON or CSV on stdout. Notes (next cursor, unwitnessed records) go to stderr, so
//! stdout is only the data.

use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use lienthong_audit::query::{
    self, Cursor, Filter, Format, MAX_LIMIT, Page, ProofAt, QueryOptions, RecordWriter, StreamError,
};
use lienthong_msglog::LogStore;

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// The node's log directory (holding `segments/` and `index.redb`, or `msglog.redb`).
    #[arg(long, value_name = "DIR")]
    log: PathBuf,
    /// Records logged at or after this time: RFC 3339 (2026-11-01T00:00:00Z,
    /// 2026-11-01T07:00:00+07:00) or a date (2026-11-01, midnight UTC).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Records logged before this time (same forms as --from).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// The client: INSTANCE/CLASS/MEMBER[/SUBSYSTEM], exactly (a member id does not include its
    /// subsystems).
    #[arg(long, value_name = "ID")]
    client: Option<String>,
    /// The service: INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE.
    #[arg(long, value_name = "ID")]
    service: Option<String>,
    /// ok (2xx, no fault), failed (a fault or not 2xx), denied (no access grant), an HTTP status
    /// or a fault code. Matches responses and refusals only: requests carry no outcome.
    #[arg(long, value_name = "STATUS")]
    status: Option<String>,
    /// The exchange's message id (X-Road-Id).
    #[arg(long, value_name = "ID")]
    exchange: Option<String>,
    /// The end user the information system named (X-Road-UserId).
    #[arg(long, value_name = "ID")]
    user: Option<String>,
    /// request or response.
    #[arg(long, value_name = "DIRECTION")]
    direction: Option<String>,
    /// consumer or provider: which side of the exchange this node was.
    #[arg(long, value_name = "ROLE")]
    role: Option<String>,
    /// Records per page (1-1000).
    #[arg(long, value_name = "N", default_value_t = 100)]
    limit: usize,
    /// Continue after the page that printed this cursor (same filters required).
    #[arg(long, value_name = "CURSOR")]
    cursor: Option<String>,
    /// Output format: json (one array), ndjson (one object per line) or csv (RFC 4180).
    #[arg(long, value_name = "FORMAT", default_value = "json", value_parser = parse_format)]
    format: Format,
    /// Print every page (streamed, one page in memory at a time), not just one.
    #[arg(long)]
    all: bool,
    /// Prove against the witnessed checkpoint of this tree size (one you already hold) instead
    /// of the newest.
    #[arg(long, value_name = "SIZE", conflicts_with = "no_proofs")]
    proof_size: Option<u64>,
    /// Leave out inclusion proofs.
    #[arg(long)]
    no_proofs: bool,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

impl QueryArgs {
    fn filter(&self) -> Result<Filter> {
        let mut filter = Filter::default();
        let given = [
            ("from", &self.from),
            ("until", &self.until),
            ("client", &self.client),
            ("service", &self.service),
            ("status", &self.status),
            ("exchange", &self.exchange),
            ("user", &self.user),
            ("direction", &self.direction),
            ("role", &self.role),
        ];
        for (name, value) in given {
            if let Some(value) = value {
                filter.set(name, value)?;
            }
        }
        filter.check()?;
        Ok(filter)
    }
}

/// Opens an existing log, never creating one. A running node holds the log's index locked;
/// that is said plainly rather than as a storage error.
fn open_log(dir: &Path) -> Result<Arc<dyn LogStore>> {
    if !dir.is_dir() {
        bail!("{}: no message log here (not a directory); give a node's log directory", dir.display());
    }
    lienthong_msglog::open_existing(dir).map_err(|e| {
        let text = e.to_string();
        if text.contains("already open") {
            anyhow::anyhow!(
                "{}: the message log is in use: a running node (or another tool) holds it open. Stop the \
                 node to query its log offline ({text})",
                dir.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("opening the message log in {}", dir.display()))
        }
    })
}

/// A closed stdout (`| head`) ends the output quietly, like other Unix tools.
fn quiet_pipe(e: io::Error) -> Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(anyhow::Error::new(e).context("writing the output"))
    }
}

pub(crate) fn run_query(a: QueryArgs) -> Result<()> {
    let filter = a.filter()?;
    if a.limit == 0 || a.limit > MAX_LIMIT {
        bail!("--limit: {} is outside 1-{MAX_LIMIT}", a.limit);
    }
    let cursor = a.cursor.as_deref().map(str::parse::<Cursor>).transpose().context("--cursor")?;
    let proofs = match (a.no_proofs, a.proof_size) {
        (true, _) => ProofAt::None,
        (false, Some(size)) => ProofAt::Size(size),
        (false, None) => ProofAt::Latest,
    };
    let options = QueryOptions { proofs, ..QueryOptions::default() };
    let store = open_log(&a.log)?;

    let out = BufWriter::new(io::stdout().lock());
    if a.all {
        let summary = match query::stream(&*store, &filter, cursor.as_ref(), a.limit, &options, out, a.format)
        {
            Ok((summary, _)) => summary,
            Err(StreamError::Io(e)) => return quiet_pipe(e),
            Err(StreamError::Query(e)) => return Err(e.into()),
        };
        errln!("{} record(s) in {} page(s)", summary.records, summary.pages);
        if summary.unwitnessed > 0 && proofs != ProofAt::None {
            errln!(
                "{} record(s) not yet witnessed: no inclusion proof (\"witnessed\": false)",
                summary.unwitnessed
            );
        }
        return Ok(());
    }

    // The page first, so an error is not preceded by a half-written output.
    let page = query::query_with(&*store, &filter, cursor.as_ref(), a.limit, &options)?;
    let mut writer = match RecordWriter::new(out, a.format) {
        Ok(w) => w,
        Err(e) => return quiet_pipe(e),
    };
    for record in &page.records {
        if let Err(e) = writer.write(record) {
            return quiet_pipe(e);
        }
    }
    if let Err(e) = writer.finish() {
        return quiet_pipe(e);
    }
    notes(&page, proofs, a.limit);
    Ok(())
}

fn notes(page: &Page, proofs: ProofAt, limit: usize) {
    if proofs != ProofAt::None {
        match &page.checkpoint {
            None => errln!("note: the log has no witnessed checkpoint yet: no record carries a proof"),
            Some(cp) => {
                let unwitnessed = page.records.iter().filter(|r| !r.witnessed()).count();
                if unwitnessed > 0 {
                    errln!(
                        "note: {unwitnessed} record(s) are past the witnessed checkpoint of size {}: not yet \
                         witnessed, no proof",
                        cp.size
                    );
                }
            }
        }
    }
    if page.pruned > 0 {
        errln!("note: {} matching index entries point at records retention has pruned", page.pruned);
    }
    if let Some(next) = &page.next {
        if page.records.len() < limit {
            errln!("note: this page stopped after looking at {} records; more may match", page.scanned);
        }
        errln!("next page: --cursor {next}");
    }
}
