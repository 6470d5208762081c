//! Running a query: choosing candidates from the store's indexes, checking the rest of the
//! filter on the decoded records, and proving each result against a witnessed checkpoint.

use lienthong_msglog::LogStore;
use lienthong_msglog::checkpoint::{Checkpoint, is_witnessed};
use std::cell::RefCell;
use std::collections::HashMap;

use lienthong_msglog::merkle::{self, Hash, NodeReader, ProofError};
use lienthong_msglog::record::decode_record;
use lienthong_msglog::store::StoreNodes;
use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use prost::Message;

use super::{Cursor, Filter, QueryError};

/// Most records one page may return.
pub const MAX_LIMIT: usize = 1000;
/// Records decoded per page by default, matching or not ([`QueryOptions::max_scan`]).
pub const DEFAULT_MAX_SCAN: usize = 20_000;
/// Most time-index entries read per page to order a time range by leaf. Past this, the range is
/// scanned record by record instead (bounded by `max_scan`, possibly giving short pages).
pub const MAX_TIME_INDEX: usize = 4_000_000;
/// With key candidates at hand, the time index is read only while it is at most this many
/// times larger: reading an index entry costs far less than decoding a record, but not nothing.
/// (On the segment store, reading and decoding a record costs ~100 times an index entry.)
const TIME_ENTRIES_PER_KEY: usize = 64;
/// Key candidates few enough that the remaining key filters are checked on the records rather
/// than by reading their (possibly long) index lists.
const FEW_CANDIDATES: usize = 64;

/// Which checkpoint the page's records are proven against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProofAt {
    /// The newest witnessed checkpoint.
    #[default]
    Latest,
    /// The witnessed checkpoint of exactly this tree size (one the auditor already holds).
    Size(u64),
    /// No proofs.
    None,
}

/// Tuning of [`query_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryOptions {
    pub proofs: ProofAt,
    /// Most records decoded for one page. When it is reached before the page is full, the page
    /// is returned short with a cursor: the work per page stays bounded whatever the filter.
    pub max_scan: usize,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self { proofs: ProofAt::Latest, max_scan: DEFAULT_MAX_SCAN }
    }
}

/// A checkpoint co-signed by the witness, as read from the store (signatures not checked here:
/// an auditor checks them against the anchor; see `lienthong log verify`).
#[derive(Debug, Clone, PartialEq)]
pub struct WitnessedCheckpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub timestamp_ms: i64,
    /// The checkpoint as stored, with the node's signature and the witness co-signature.
    pub signed: pb::SignedCheckpoint,
}

/// An RFC 6962 inclusion proof of one leaf in the tree of `tree_size` leaves with root `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub tree_size: u64,
    pub root: Hash,
    /// The audit path, the leaf's sibling first.
    pub hashes: Vec<Hash>,
}

/// One record of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRecord {
    pub leaf_index: u64,
    /// SHA-256(0x00 || stored record bytes): what the proof proves.
    pub leaf_hash: Hash,
    /// The decoded record, with its body removed (audit results never carry bodies; the digest
    /// and length stay).
    pub record: pb::LogRecord,
    /// `None` when the record is not yet covered by the checkpoint used (not yet witnessed), or
    /// when no proofs were asked for.
    pub proof: Option<InclusionProof>,
}

impl QueryRecord {
    /// Whether the record is covered by the page's witnessed checkpoint (and proven against it).
    pub fn witnessed(&self) -> bool {
        self.proof.is_some()
    }
}

/// How the candidates of a page were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// From the exchange / client / service indexes (intersected); the time range, if any,
    /// checked on the decoded records.
    Keys,
    /// From the key indexes intersected with the time index.
    KeysAndTime,
    /// From the time index, ordered by leaf.
    Time,
    /// Every record after the cursor, checked one by one (no index applies, or the time range
    /// is larger than [`MAX_TIME_INDEX`]).
    Scan,
}

/// One page of results, in leaf order.
#[derive(Debug, Clone)]
pub struct Page {
    pub records: Vec<QueryRecord>,
    /// Present when more candidates remain: pass it to get the next page. A page can be short
    /// (even empty) and still have a cursor when it hit [`QueryOptions::max_scan`].
    pub next: Option<Cursor>,
    /// The checkpoint the proofs are against, if the log has a witnessed one.
    pub checkpoint: Option<WitnessedCheckpoint>,
    /// Records in the log when the page was read.
    pub log_size: u64,
    /// Records decoded for this page.
    pub scanned: u64,
    /// Candidates whose bytes retention had pruned (skipped: nothing is left to filter or show).
    pub pruned: u64,
    pub plan: Plan,
}

/// Runs `filter` over `store`: the page after `page` (or the first), at most `limit` records
/// (1..=[`MAX_LIMIT`]), each proven against the newest witnessed checkpoint, or against the
/// witnessed checkpoint of size `proof_size` when given.
pub fn query(
    store: &dyn LogStore,
    filter: &Filter,
    page: Option<&Cursor>,
    limit: usize,
    proof_size: Option<u64>,
) -> Result<Page, QueryError> {
    let options =
        QueryOptions { proofs: proof_size.map_or(ProofAt::Latest, ProofAt::Size), ..QueryOptions::default() };
    query_with(store, filter, page, limit, &options)
}

/// [`query`] with explicit [`QueryOptions`].
pub fn query_with(
    store: &dyn LogStore,
    filter: &Filter,
    page: Option<&Cursor>,
    limit: usize,
    options: &QueryOptions,
) -> Result<Page, QueryError> {
    filter.check()?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(QueryError::InvalidFilter {
            field: "limit",
            reason: format!("{limit} is outside 1-{MAX_LIMIT}"),
        });
    }
    let digest = filter.digest();
    let start = match page {
        Some(c) if c.filter != digest => return Err(QueryError::CursorMismatch),
        Some(c) => c.last.checked_add(1),
        None => Some(0),
    };
    let size = store.size()?;
    let checkpoint = witnessed_checkpoint(store, options.proofs, size)?;
    let Some(start) = start.filter(|s| *s < size) else {
        return Ok(Page {
            records: Vec::new(),
            next: None,
            checkpoint,
            log_size: size,
            scanned: 0,
            pruned: 0,
            plan: Plan::Scan,
        });
    };

    let (plan, mut candidates, check_keys) = plan(store, filter, start, size)?;
    let check_time = filter.has_time() && matches!(plan, Plan::Keys | Plan::Scan);
    let nodes = PageNodes { store: StoreNodes(store), seen: RefCell::new(HashMap::new()) };
    let max_scan = options.max_scan.max(1);

    let mut records = Vec::new();
    let (mut scanned, mut pruned, mut last) = (0u64, 0u64, None);
    while records.len() < limit && scanned < max_scan as u64 {
        let Some(index) = candidates.next() else { break };
        last = Some(index);
        scanned += 1;
        let Some(bytes) = store.record(index)? else {
            pruned += 1;
            continue;
        };
        let damaged = |e: String| QueryError::Damaged(format!("record {index} does not decode: {e}"));
        // Filter on the few fields the filter reads; decode the whole record only for a match.
        let fields =
            FilterFields::decode(bytes.as_slice()).map_err(|e| damaged(e.to_string()))?.into_record();
        if (check_keys && !filter.matches_keys(&fields))
            || (check_time && !filter.in_time(fields.logged_at_ms))
            || !filter.matches_unindexed(&fields)
        {
            continue;
        }
        let mut record = decode_record(&bytes).map_err(|e| damaged(e.to_string()))?;
        let leaf_hash = merkle::leaf_hash(&bytes);
        let proof = match &checkpoint {
            Some(cp) if index < cp.size => Some(prove(&nodes, index, &leaf_hash, cp)?),
            _ => None,
        };
        record.body = None;
        records.push(QueryRecord { leaf_index: index, leaf_hash, record, proof });
    }
    let next = match last {
        Some(last) if candidates.has_next() => Some(Cursor { last, filter: digest }),
        _ => None,
    };
    Ok(Page { records, next, checkpoint, log_size: size, scanned, pruned, plan })
}

/// The fields of a `LogRecord` the filters read, decoded without the rest (envelope, signature,
/// digests, body). Same tags and types as `LogRecord`, and prost skips undeclared fields with the
/// same merge rules as the full decode, so the filter sees exactly the values it would see there.
#[derive(Clone, PartialEq, prost::Message)]
struct FilterFields {
    #[prost(string, tag = "1")]
    message_id: String,
    #[prost(int32, tag = "3")]
    direction: i32,
    #[prost(int32, tag = "4")]
    role: i32,
    #[prost(message, optional, tag = "5")]
    client: Option<types_pb::ClientId>,
    #[prost(message, optional, tag = "6")]
    service: Option<types_pb::ServiceId>,
    #[prost(string, tag = "9")]
    user_id: String,
    #[prost(int64, tag = "14")]
    logged_at_ms: i64,
    #[prost(uint32, tag = "15")]
    status: u32,
    #[prost(message, optional, tag = "16")]
    fault: Option<types_pb::Fault>,
}

impl FilterFields {
    /// A record with only these fields set, for the filter's predicates.
    fn into_record(self) -> pb::LogRecord {
        pb::LogRecord {
            message_id: self.message_id,
            direction: self.direction,
            role: self.role,
            client: self.client,
            service: self.service,
            user_id: self.user_id,
            logged_at_ms: self.logged_at_ms,
            status: self.status,
            fault: self.fault,
            ..pb::LogRecord::default()
        }
    }
}

/// Leaf indexes still to look at, in increasing order.
enum Candidates {
    List { items: Vec<u64>, at: usize },
    Range { next: u64, end: u64 },
}

impl Candidates {
    fn next(&mut self) -> Option<u64> {
        match self {
            Candidates::List { items, at } => {
                let item = items.get(*at).copied();
                *at += 1;
                item
            }
            Candidates::Range { next, end } => (*next < *end).then(|| {
                *next += 1;
                *next - 1
            }),
        }
    }

    fn has_next(&self) -> bool {
        match self {
            Candidates::List { items, at } => *at < items.len(),
            Candidates::Range { next, end } => next < end,
        }
    }
}

/// A key index lookup.
enum Key {
    Exchange(String),
    Client(String),
    Service(String),
}

/// Sorts and dedups an index answer, keeps `[start, size)`.
fn window(mut v: Vec<u64>, start: u64, size: u64) -> Vec<u64> {
    if !v.is_sorted() {
        v.sort_unstable();
    }
    v.dedup();
    let lo = v.partition_point(|&i| i < start);
    let hi = v.partition_point(|&i| i < size);
    v.truncate(hi);
    v.drain(..lo);
    v
}

/// Sorted intersection of two sorted lists.
fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    // Galloping is not worth it here: the lists are read from the store in full anyway.
    small.iter().copied().filter(|i| large.binary_search(i).is_ok()).collect()
}

/// Picks the narrowest source of candidates; also says whether the exchange, client and service
/// must still be checked on the records. Those indexes are exact and in leaf order, so they are
/// intersected first (stopping once few candidates are left: checking a handful of records is
/// cheaper than reading a large client list). The time index is in time order, which is not
/// leaf order once a clock steps back or appenders race, so its answer is sorted by leaf, and
/// read only when it is small enough to be worth it.
fn plan(
    store: &dyn LogStore,
    filter: &Filter,
    start: u64,
    size: u64,
) -> Result<(Plan, Candidates, bool), QueryError> {
    let mut keys: Option<Vec<u64>> = None;
    let mut check_keys = false;
    // Exchange first: its list is tiny, and often makes the longer lists unnecessary.
    let lookups = [
        filter.message_id.clone().map(Key::Exchange),
        filter.client.as_ref().map(|c| Key::Client(c.to_string())),
        filter.service.as_ref().map(|s| Key::Service(s.to_string())),
    ];
    for key in lookups.into_iter().flatten() {
        if keys.as_ref().is_some_and(|k| k.len() <= FEW_CANDIDATES) {
            check_keys = true;
            break;
        }
        let found = match &key {
            Key::Exchange(id) => store.by_exchange(id)?,
            Key::Client(id) => store.by_client(id)?,
            Key::Service(id) => store.by_service(id)?,
        };
        let found = window(found, start, size);
        keys = Some(match keys {
            None => found,
            Some(k) => intersect(&k, &found),
        });
        if keys.as_ref().is_some_and(Vec::is_empty) {
            break;
        }
    }
    let from = filter.from_ms.unwrap_or(i64::MIN);
    let until = filter.until_ms.unwrap_or(i64::MAX);
    let list = |items| Candidates::List { items, at: 0 };
    let (plan, candidates) = match keys {
        Some(keys) if !filter.has_time() || keys.is_empty() => (Plan::Keys, list(keys)),
        // The first candidate is in the range (typically a later page of the same query): the
        // ones after it likely are too, so checking them one by one beats reading the range's
        // whole time index. Only the choice of plan rests on this guess, never the answer.
        Some(keys) if in_range(store, filter, keys[0])? => (Plan::Keys, list(keys)),
        Some(keys) => {
            let budget = keys.len().saturating_mul(TIME_ENTRIES_PER_KEY).min(MAX_TIME_INDEX);
            let timed = store.by_time(from, until, budget + 1)?;
            if timed.len() <= budget {
                let timed = window(timed, start, size);
                (Plan::KeysAndTime, list(intersect(&keys, &timed)))
            } else {
                (Plan::Keys, list(keys))
            }
        }
        None if filter.has_time() => {
            let timed = store.by_time(from, until, MAX_TIME_INDEX + 1)?;
            if timed.len() <= MAX_TIME_INDEX {
                (Plan::Time, list(window(timed, start, size)))
            } else {
                (Plan::Scan, Candidates::Range { next: start, end: size })
            }
        }
        None => (Plan::Scan, Candidates::Range { next: start, end: size }),
    };
    Ok((plan, candidates, check_keys || plan == Plan::Scan))
}

/// Whether record `index` was logged in the filter's time range (`false` if pruned).
fn in_range(store: &dyn LogStore, filter: &Filter, index: u64) -> Result<bool, QueryError> {
    let Some(bytes) = store.record(index)? else { return Ok(false) };
    let fields = FilterFields::decode(bytes.as_slice())
        .map_err(|e| QueryError::Damaged(format!("record {index} does not decode: {e}")))?;
    Ok(filter.in_time(fields.logged_at_ms))
}

/// The witnessed checkpoint to prove against, checked to be within the log.
fn witnessed_checkpoint(
    store: &dyn LogStore,
    at: ProofAt,
    size: u64,
) -> Result<Option<WitnessedCheckpoint>, QueryError> {
    if at == ProofAt::None {
        return Ok(None);
    }
    let mut best: Option<WitnessedCheckpoint> = None;
    for signed in store.checkpoints()?.into_iter().filter(is_witnessed) {
        let c = Checkpoint::decode(&signed)
            .map_err(|e| QueryError::Damaged(format!("a stored witnessed checkpoint is unreadable: {e}")))?;
        let better = match at {
            ProofAt::Size(n) => c.size == n,
            _ => best.as_ref().is_none_or(|b| c.size > b.size),
        };
        if better {
            best = Some(WitnessedCheckpoint {
                origin: c.origin,
                size: c.size,
                root: c.root,
                timestamp_ms: c.timestamp_ms,
                signed,
            });
        }
    }
    if let ProofAt::Size(n) = at
        && best.is_none()
    {
        return Err(QueryError::NoCheckpoint(n));
    }
    if let Some(cp) = &best
        && cp.size > size
    {
        return Err(QueryError::Damaged(format!(
            "the witnessed checkpoint of size {} covers more records than the log holds ({size})",
            cp.size
        )));
    }
    Ok(best)
}

/// The tree nodes read for one page, kept: the proofs of nearby leaves share most of their
/// path, and every proof recomputes the same right edge of the checkpoint's tree.
struct PageNodes<'a> {
    store: StoreNodes<'a, dyn LogStore>,
    seen: RefCell<HashMap<(u8, u64), Hash>>,
}

impl NodeReader for PageNodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        if let Some(hash) = self.seen.borrow().get(&(level, index)) {
            return Ok(*hash);
        }
        let hash = self.store.node(level, index)?;
        self.seen.borrow_mut().insert((level, index), hash);
        Ok(hash)
    }
}

/// The inclusion proof of `index` against `cp`, checked before it is handed out: a proof that
/// does not verify means the stored record or tree differs from what the witness signed.
fn prove(
    nodes: &PageNodes<'_>,
    index: u64,
    leaf: &Hash,
    cp: &WitnessedCheckpoint,
) -> Result<InclusionProof, QueryError> {
    let damaged = |e: ProofError| {
        QueryError::Damaged(format!(
            "record {index} cannot be proven against the witnessed checkpoint of size {}: {e}; run \
             `lienthong log verify`",
            cp.size
        ))
    };
    let hashes = merkle::inclusion_proof(nodes, index, cp.size).map_err(damaged)?;
    merkle::verify_inclusion(leaf, index, cp.size, &hashes, &cp.root).map_err(damaged)?;
    Ok(InclusionProof { tree_size: cp.size, root: cp.root, hashes })
}
