//! store-bench: durable-write throughput and crash safety, redb vs sled.
//!
//! Backs docs/decisions/0001-embedded-store.md. Every figure it prints is for
//! writes that the engine has acknowledged as durable, because that is the
//! promise the message log makes: an acknowledged record is never lost.
//!
//!   cargo run --release -- [--records N] [--batch-records M] [--group G]
//!                          [--rounds R] [--seed S] [--dir PATH]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use redb::{Database, ReadableDatabase, TableDefinition};

const VALUE_LEN: usize = 1024;
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Keys of crash round r start at r * ROUND_STRIDE so rounds never overlap.
const ROUND_STRIDE: u64 = 1_000_000;
/// Hard caps for the child writer, so it ends by itself even if never killed.
const WRITER_MAX_RECORDS: u64 = 200_000;
const WRITER_MAX_TIME: Duration = Duration::from_secs(10);
/// The parent kills the writer after a random delay in this range (ms).
const KILL_DELAY_MS: (u64, u64) = (50, 300);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Redb,
    Sled,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Redb => "redb",
            Engine::Sled => "sled",
        }
    }
    fn parse(s: &str) -> Res<Engine> {
        match s {
            "redb" => Ok(Engine::Redb),
            "sled" => Ok(Engine::Sled),
            _ => Err(format!("unknown engine {s}").into()),
        }
    }
    /// redb is one file; sled is a directory.
    fn path_in(self, dir: &Path) -> PathBuf {
        dir.join(match self {
            Engine::Redb => "db.redb",
            Engine::Sled => "db.sled",
        })
    }
}

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// Incompressible-looking 1 KiB value, same for every record.
fn value() -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..VALUE_LEN).map(|_| rng.next() as u8).collect()
}

/// xorshift64*: enough randomness for kill delays, and reproducible via --seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// An open database that can make a batch of records durable.
enum Store {
    Redb(Database),
    Sled(sled::Db),
}

impl Store {
    fn open(engine: Engine, path: &Path) -> Res<Store> {
        Ok(match engine {
            // create() opens an existing file and runs recovery if it was not closed cleanly.
            Engine::Redb => Store::Redb(Database::create(path)?),
            Engine::Sled => Store::Sled(sled::open(path)?),
        })
    }

    /// Write keys [from, to) and return only once the engine says they are durable.
    fn put_durable(&self, from: u64, to: u64, val: &[u8]) -> Res<()> {
        match self {
            Store::Redb(db) => {
                // Default durability is Immediate: commit() returns after fsync.
                let tx = db.begin_write()?;
                {
                    let mut t = tx.open_table(TABLE)?;
                    for i in from..to {
                        t.insert(&key(i)[..], val)?;
                    }
                }
                tx.commit()?;
            }
            Store::Sled(db) => {
                for i in from..to {
                    db.insert(key(i), val)?;
                }
                // sled's only durability call: fsyncs everything written so far.
                db.flush()?;
            }
        }
        Ok(())
    }

    /// How many of `keys` are absent or carry a wrong value.
    fn count_missing(&self, keys: impl Iterator<Item = u64>, val: &[u8]) -> Res<u64> {
        let mut missing = 0;
        match self {
            Store::Redb(db) => {
                let tx = db.begin_read()?;
                let t = tx.open_table(TABLE)?;
                for i in keys {
                    if t.get(&key(i)[..])?.is_none_or(|v| v.value() != val) {
                        missing += 1;
                    }
                }
            }
            Store::Sled(db) => {
                for i in keys {
                    if db.get(key(i))?.is_none_or(|v| v.as_ref() != val) {
                        missing += 1;
                    }
                }
            }
        }
        Ok(missing)
    }
}

struct Opts {
    records: u64,
    batch_records: u64,
    group: u64,
    rounds: u32,
    seed: u64,
    dir: PathBuf,
}

fn parse_opts(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        records: 2_000,
        batch_records: 0, // 0 = records * 32, filled in below
        group: 64,
        rounds: 20,
        seed: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_nanos() as u64
            | 1,
        dir: std::env::temp_dir(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--records" => o.records = val.parse()?,
            "--batch-records" => o.batch_records = val.parse()?,
            "--group" => o.group = val.parse()?,
            "--rounds" => o.rounds = val.parse()?,
            "--seed" => o.seed = val.parse::<u64>()? | 1, // xorshift needs a non-zero state
            "--dir" => o.dir = PathBuf::from(val),
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    if o.batch_records == 0 {
        o.batch_records = o.records * 32;
    }
    if o.records == 0 || o.group == 0 || o.batch_records < o.group {
        return Err("--records, --group must be > 0 and --batch-records >= --group".into());
    }
    Ok(o)
}

struct Run {
    records: u64,
    elapsed: Duration,
    /// One entry per durable commit (per record when group = 1).
    commits: Vec<Duration>,
    missing_after_reopen: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    fn pct_us(&self, p: usize) -> u128 {
        let mut v = self.commits.clone();
        v.sort();
        v[(v.len() * p / 100).min(v.len() - 1)].as_micros()
    }
}

/// Write `total` records in durable groups of `group` on a fresh database, then
/// close, reopen and check that every record is there.
fn bench(engine: Engine, opts: &Opts, total: u64, group: u64, val: &[u8]) -> Res<Run> {
    let dir = tempfile::tempdir_in(&opts.dir)?;
    let path = engine.path_in(dir.path());
    let store = Store::open(engine, &path)?;
    let mut commits = Vec::with_capacity((total / group) as usize);
    let start = Instant::now();
    let mut i = 0;
    while i < total {
        let end = (i + group).min(total);
        let t = Instant::now();
        store.put_durable(i, end, val)?;
        commits.push(t.elapsed());
        i = end;
    }
    let elapsed = start.elapsed();
    drop(store);
    let missing_after_reopen = Store::open(engine, &path)?.count_missing(0..total, val)?;
    Ok(Run {
        records: total,
        elapsed,
        commits,
        missing_after_reopen,
    })
}

/// Child mode: append one durable record at a time and acknowledge each on
/// stdout only after the engine returned from its durability call.
fn writer(engine: Engine, path: &Path, start: u64) -> Res<()> {
    let val = value();
    let store = Store::open(engine, path)?;
    let t0 = Instant::now();
    let mut out = std::io::stdout().lock();
    for i in start..start + WRITER_MAX_RECORDS {
        if t0.elapsed() > WRITER_MAX_TIME {
            break;
        }
        store.put_durable(i, i + 1, &val)?;
        writeln!(out, "{i}")?;
        out.flush()?;
    }
    Ok(())
}

#[derive(Default)]
struct CrashReport {
    rounds: u32,
    acked: u64,
    open_failures: u32,
    lossy_rounds: u32,
    lost: u64,
    /// Writer ended before the kill (open error, caps hit): that round tested less.
    early_exits: u32,
    max_reopen: Duration,
    first_error: Option<String>,
}

/// SIGKILL a durable writer `rounds` times on one database, reopening and
/// checking every acknowledged key after each kill.
fn crash_check(engine: Engine, opts: &Opts, rng: &mut Rng, val: &[u8]) -> Res<CrashReport> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir_in(&opts.dir)?;
    let path = engine.path_in(dir.path());
    drop(Store::open(engine, &path)?); // create it, so an early kill still leaves a database
    let mut rep = CrashReport::default();
    let mut acked: Vec<u64> = Vec::new(); // all keys acknowledged and still verified present

    for round in 0..opts.rounds {
        rep.rounds += 1;
        let mut child = Command::new(&exe)
            .args(["writer", engine.name()])
            .arg(&path)
            .arg((u64::from(round) * ROUND_STRIDE).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        // Read acks on a thread so the pipe never fills while the parent sleeps.
        let reader = std::thread::spawn(move || {
            let mut keys = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            // A line cut short by the kill has no '\n' and is not an ack.
            while r.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
                if let Ok(k) = line.trim_end().parse::<u64>() {
                    keys.push(k);
                }
                line.clear();
            }
            keys
        });
        std::thread::sleep(Duration::from_millis(
            rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1),
        ));
        let exited_early = child.try_wait()?.is_some();
        let _ = child.kill(); // SIGKILL on Unix; errors only if it already exited
        child.wait()?;
        if exited_early {
            rep.early_exits += 1;
        }
        let new_keys = reader.join().map_err(|_| "ack reader panicked")?;
        rep.acked += new_keys.len() as u64;
        acked.extend(new_keys);

        let t = Instant::now();
        match Store::open(engine, &path) {
            Err(e) => {
                rep.open_failures += 1;
                rep.lost += acked.len() as u64;
                rep.first_error
                    .get_or_insert_with(|| format!("round {round}: open: {e}"));
                // Start over so later rounds still test something.
                let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
                drop(Store::open(engine, &path)?);
                acked.clear();
            }
            Ok(store) => {
                rep.max_reopen = rep.max_reopen.max(t.elapsed());
                let missing = store.count_missing(acked.iter().copied(), val)?;
                if missing > 0 {
                    rep.lossy_rounds += 1;
                    rep.lost += missing;
                    rep.first_error.get_or_insert_with(|| {
                        format!("round {round}: {missing} acknowledged records missing")
                    });
                    // Count each loss once: keep only keys still present.
                    let mut kept = Vec::with_capacity(acked.len());
                    for k in acked {
                        if store.count_missing(std::iter::once(k), val)? == 0 {
                            kept.push(k);
                        }
                    }
                    acked = kept;
                }
            }
        }
    }
    Ok(rep)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("writer") {
        let [_, engine, path, start] = args.as_slice() else {
            return Err("usage: store-bench writer <redb|sled> <path> <start-key>".into());
        };
        return writer(Engine::parse(engine)?, Path::new(path), start.parse()?);
    }
    let opts = parse_opts(&args)?;
    let val = value();
    let mut rng = Rng(opts.seed);
    println!(
        "store-bench: redb {} vs sled {}; 1 KiB values, 8-byte big-endian keys; dir {}; seed {}",
        locked_version("redb"),
        locked_version("sled"),
        opts.dir.display(),
        opts.seed
    );
    println!();
    println!(
        "{:<34} {:>8} {:>10} {:>9} {:>9} {:>8}",
        "write test (durable)", "records", "records/s", "p50 us", "p99 us", "reopen"
    );
    for engine in [Engine::Redb, Engine::Sled] {
        for (total, group) in [(opts.records, 1), (opts.batch_records, opts.group)] {
            let run = bench(engine, &opts, total, group, &val)?;
            let label = match (engine, group) {
                (Engine::Redb, 1) => "redb  1 record / commit".to_string(),
                (Engine::Redb, g) => format!("redb  {g} records / commit"),
                (Engine::Sled, 1) => "sled  insert + flush()".to_string(),
                (Engine::Sled, g) => format!("sled  {g} inserts + flush()"),
            };
            let reopen = match run.missing_after_reopen {
                0 => "OK".to_string(),
                n => format!("{n} lost"),
            };
            println!(
                "{:<34} {:>8} {:>10.0} {:>9} {:>9} {:>8}",
                label,
                run.records,
                run.rate(),
                run.pct_us(50),
                run.pct_us(99),
                reopen
            );
        }
    }
    println!("(p50/p99: latency of one durable commit; for grouped rows, one commit = one group)");
    println!();
    println!(
        "{:<6} {:>6} {:>8} {:>10} {:>12} {:>6} {:>6} {:>11}",
        "crash", "rounds", "acked", "open-fail", "lossy-rounds", "lost", "early", "max-reopen"
    );
    let mut failures = Vec::new();
    for engine in [Engine::Redb, Engine::Sled] {
        let rep = crash_check(engine, &opts, &mut rng, &val)?;
        println!(
            "{:<6} {:>6} {:>8} {:>10} {:>12} {:>6} {:>6} {:>9}ms",
            engine.name(),
            rep.rounds,
            rep.acked,
            rep.open_failures,
            rep.lossy_rounds,
            rep.lost,
            rep.early_exits,
            rep.max_reopen.as_millis()
        );
        if let Some(e) = rep.first_error {
            failures.push(format!("{}: {e}", engine.name()));
        }
    }
    println!(
        "(writer killed with SIGKILL after {}-{} ms per round)",
        KILL_DELAY_MS.0, KILL_DELAY_MS.1
    );
    for f in failures {
        println!("first failure, {f}");
    }
    Ok(())
}

/// Version of a dependency as pinned in Cargo.lock, so the header names what was measured.
fn locked_version(name: &str) -> &'static str {
    let lock = include_str!("../Cargo.lock");
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|i| lock[i + needle.len()..].split('"').next())
        .unwrap_or("?")
}
