//! Writing query results as JSON (one array), NDJSON (one object per line) or CSV (RFC 4180),
//! one record at a time to any `io::Write`, so a whole log can be exported without holding it.
//! Bodies are never written; times are UTC ISO-8601 with milliseconds.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use lienthong_msglog::LogStore;
use lienthong_proto::msglog::v1 as pb;
use serde::Serialize;
use time::OffsetDateTime;

use super::engine::{QueryOptions, QueryRecord, query_with};
use super::filter::id_string;
use super::{Cursor, Filter, QueryError};

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON array of objects.
    Json,
    /// One JSON object per line (`\n`), nothing else: each line parses on its own.
    Ndjson,
    /// RFC 4180: a header row, CRLF line ends, fields with a comma, quote, CR or LF quoted.
    Csv,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "ndjson" | "jsonl" => Ok(Format::Ndjson),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("unknown format {s:?}: expected json, ndjson or csv")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        })
    }
}

/// The CSV columns, in order; JSON and NDJSON objects carry the same names (plus `leaf_hash`
/// and `proof`).
pub const COLUMNS: &[&str] = &[
    "leaf_index",
    "logged_at",
    "message_time",
    "message_id",
    "request_id",
    "direction",
    "role",
    "client",
    "service",
    "method",
    "path",
    "user_id",
    "status",
    "fault_code",
    "fault_detail",
    "grant_id",
    "node",
    "peer_node",
    "body_sha256",
    "body_length",
    "witnessed",
    "source_address",
    "refusal_summary",
];

/// A time in UTC ISO-8601 with milliseconds, e.g. `2026-11-25T10:15:30.123Z`. Times outside
/// years 0-9999 (which no honest record has) are written as the raw millisecond count rather
/// than in a form ISO-8601 does not define.
pub fn format_time(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    if !(0..=9999).contains(&t.year()) {
        return ms.to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn direction(v: i32) -> &'static str {
    match pb::Direction::try_from(v) {
        Ok(pb::Direction::Request) => "request",
        Ok(pb::Direction::Response) => "response",
        _ => "unspecified",
    }
}

fn role(v: i32) -> &'static str {
    match pb::Role::try_from(v) {
        Ok(pb::Role::Consumer) => "consumer",
        Ok(pb::Role::Provider) => "provider",
        _ => "unspecified",
    }
}

/// An id as text: empty when absent, marked when it does not validate (the record is shown as
/// stored, not hidden).
fn id_text<T: lienthong_proto::convert::IntoDomain + Clone>(v: &Option<T>) -> String
where
    T::Domain: fmt::Display,
{
    match v {
        None => String::new(),
        Some(_) => id_string(v.clone()).unwrap_or_else(|| "(invalid id)".to_owned()),
    }
}

/// A refusal summary (see `RefusalSummary` in the msglog proto); in CSV, this object as JSON.
#[derive(Serialize)]
struct SummaryView {
    kind: &'static str,
    /// Empty for `other_sources`.
    source: String,
    other_sources: bool,
    interval_start: String,
    interval_end: String,
    first_seen: String,
    last_seen: String,
    /// Refusals of this source and kind in the interval with a record of their own.
    recorded: u64,
    /// Counted here only: in all, and per fault code.
    suppressed_total: u64,
    suppressed: std::collections::BTreeMap<String, u64>,
}

impl SummaryView {
    fn new(s: &pb::RefusalSummary) -> Self {
        let suppressed: std::collections::BTreeMap<String, u64> =
            s.suppressed.iter().map(|c| (c.code.clone(), c.count)).collect();
        SummaryView {
            kind: lienthong_msglog::record::refusal_kind_name(s.kind),
            source: s.source.clone(),
            other_sources: s.other_sources,
            interval_start: format_time(s.interval_start_ms),
            interval_end: format_time(s.interval_end_ms),
            first_seen: format_time(s.first_seen_ms),
            last_seen: format_time(s.last_seen_ms),
            recorded: s.recorded,
            suppressed_total: s.suppressed.iter().map(|c| c.count).fold(0, u64::saturating_add),
            suppressed,
        }
    }
}

#[derive(Serialize)]
struct ProofView {
    checkpoint_size: u64,
    checkpoint_root: String,
    hashes: Vec<String>,
}

/// One exported record. Field names are stable for scripts.
#[derive(Serialize)]
struct Row<'a> {
    leaf_index: u64,
    logged_at: String,
    message_time: Option<String>,
    message_id: &'a str,
    request_id: &'a str,
    direction: &'static str,
    role: &'static str,
    client: String,
    service: String,
    method: &'a str,
    path: &'a str,
    user_id: &'a str,
    /// Absent (null / empty) on records without an outcome (requests).
    status: Option<u32>,
    fault_code: &'a str,
    fault_detail: &'a str,
    grant_id: &'a str,
    node: String,
    peer_node: String,
    body_sha256: String,
    body_length: u64,
    witnessed: bool,
    /// The caller's address, on refusals of unauthenticated traffic.
    source_address: &'a str,
    /// Only on a refusal summary (no exchange): the refusals it counts.
    refusal_summary: Option<SummaryView>,
    leaf_hash: String,
    proof: Option<ProofView>,
}

impl<'a> Row<'a> {
    fn new(q: &'a QueryRecord) -> Self {
        let r = &q.record;
        let fault = r.fault.as_ref();
        Row {
            leaf_index: q.leaf_index,
            logged_at: format_time(r.logged_at_ms),
            message_time: (r.message_time_ms != 0).then(|| format_time(r.message_time_ms)),
            message_id: &r.message_id,
            request_id: &r.request_id,
            direction: direction(r.direction),
            role: role(r.role),
            client: id_text(&r.client),
            service: id_text(&r.service),
            method: &r.method,
            path: &r.path,
            user_id: &r.user_id,
            status: (r.status != 0).then_some(r.status),
            fault_code: fault.map_or("", |f| f.code.as_str()),
            fault_detail: fault.map_or("", |f| f.detail.as_str()),
            grant_id: &r.grant_id,
            node: id_text(&r.node),
            peer_node: id_text(&r.peer_node),
            body_sha256: hex::encode(&r.body_sha256),
            body_length: r.body_length,
            witnessed: q.witnessed(),
            source_address: &r.source_address,
            refusal_summary: r.refusal_summary.as_ref().map(SummaryView::new),
            leaf_hash: hex::encode(q.leaf_hash),
            proof: q.proof.as_ref().map(|p| ProofView {
                checkpoint_size: p.tree_size,
                checkpoint_root: hex::encode(p.root),
                hashes: p.hashes.iter().map(hex::encode).collect(),
            }),
        }
    }

    /// The CSV fields, in [`COLUMNS`] order.
    fn csv_fields(&self) -> [String; 23] {
        [
            self.leaf_index.to_string(),
            self.logged_at.clone(),
            self.message_time.clone().unwrap_or_default(),
            self.message_id.to_owned(),
            self.request_id.to_owned(),
            self.direction.to_owned(),
            self.role.to_owned(),
            self.client.clone(),
            self.service.clone(),
            self.method.to_owned(),
            self.path.to_owned(),
            self.user_id.to_owned(),
            self.status.map(|s| s.to_string()).unwrap_or_default(),
            self.fault_code.to_owned(),
            self.fault_detail.to_owned(),
            self.grant_id.to_owned(),
            self.node.clone(),
            self.peer_node.clone(),
            self.body_sha256.clone(),
            self.body_length.to_string(),
            self.witnessed.to_string(),
            self.source_address.to_owned(),
            self.refusal_summary.as_ref().and_then(|s| serde_json::to_string(s).ok()).unwrap_or_default(),
        ]
    }
}

/// Writes one CSV field: quoted (with quotes doubled) when it holds a comma, quote, CR or LF.
fn write_csv_field(out: &mut impl Write, field: &str) -> io::Result<()> {
    if field.contains([',', '"', '\r', '\n']) {
        out.write_all(b"\"")?;
        out.write_all(field.replace('"', "\"\"").as_bytes())?;
        out.write_all(b"\"")
    } else {
        out.write_all(field.as_bytes())
    }
}

fn write_csv_row<S: AsRef<str>>(out: &mut impl Write, fields: &[S]) -> io::Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_csv_field(out, field.as_ref())?;
    }
    out.write_all(b"\r\n")
}

/// Writes records one at a time in a [`Format`]; [`RecordWriter::finish`] closes the output
/// (the JSON array's bracket) and flushes it.
#[derive(Debug)]
pub struct RecordWriter<W: Write> {
    out: W,
    format: Format,
    written: u64,
}

impl<W: Write> RecordWriter<W> {
    /// Starts the output: the CSV header, or the JSON array's opening bracket.
    pub fn new(mut out: W, format: Format) -> io::Result<Self> {
        match format {
            Format::Json => out.write_all(b"[")?,
            Format::Csv => write_csv_row(&mut out, COLUMNS)?,
            Format::Ndjson => {}
        }
        Ok(Self { out, format, written: 0 })
    }

    pub fn write(&mut self, record: &QueryRecord) -> io::Result<()> {
        let row = Row::new(record);
        match self.format {
            Format::Json => {
                self.out.write_all(if self.written == 0 { b"\n" } else { b",\n" })?;
                serde_json::to_writer(&mut self.out, &row)?;
            }
            Format::Ndjson => {
                serde_json::to_writer(&mut self.out, &row)?;
                self.out.write_all(b"\n")?;
            }
            Format::Csv => write_csv_row(&mut self.out, &row.csv_fields())?,
        }
        self.written += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Ends the output and flushes it; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.format == Format::Json {
            self.out.write_all(if self.written == 0 { b"]\n" } else { b"\n]\n" })?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Why a streamed export stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("writing the export: {0}")]
    Io(#[from] io::Error),
}

/// What [`stream`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamSummary {
    pub records: u64,
    pub pages: u64,
    /// Records not covered by the checkpoint used for proofs.
    pub unwitnessed: u64,
}

/// Writes every page of `filter` (from `start`, or the beginning) to `out` in `format`,
/// `page_size` records per query, holding one page at a time. Nothing is written when the first
/// page fails (a malformed cursor, say), so the output is never a lone `[`; a later failure
/// leaves what was written so far. Returns the summary and the flushed writer.
pub fn stream<W: Write>(
    store: &dyn LogStore,
    filter: &Filter,
    start: Option<&Cursor>,
    page_size: usize,
    options: &QueryOptions,
    out: W,
    format: Format,
) -> Result<(StreamSummary, W), StreamError> {
    let mut summary = StreamSummary::default();
    let mut page = query_with(store, filter, start, page_size, options)?;
    // Every page proves against the checkpoint the first page used, so one export is
    // consistent even while the node gets newer checkpoints witnessed.
    let mut options = *options;
    if let Some(cp) = &page.checkpoint {
        options.proofs = super::ProofAt::Size(cp.size);
    }
    let mut writer = RecordWriter::new(out, format)?;
    loop {
        summary.pages += 1;
        for record in &page.records {
            writer.write(record)?;
            summary.records += 1;
            summary.unwitnessed += u64::from(!record.witnessed());
        }
        match page.next {
            Some(next) => page = query_with(store, filter, Some(&next), page_size, &options)?,
            None => return Ok((summary, writer.finish()?)),
        }
    }
}
