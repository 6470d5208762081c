//! The log lines of a serving process (`node serve`, `registry serve`, `audit serve`):
//! tracing's text format on stderr, written by a thread of their own, so that logging can never
//! block or panic the code that logs. tracing-subscriber's own writer reports a failed write with
//! `eprintln!`, which panics when stderr is a full disk, `/dev/full` or a pipe whose reader died:
//! the task or thread that logged (an r1 refusal, the message log's writer) died with it.
//!
//! Here a line that cannot be queued (the writer is stuck or behind) is dropped, and a line the
//! sink refuses is lost; both are counted ([`Stats`]), and once the sink takes lines again one
//! line says how many were lost. If stderr still refuses at a normal exit, the count goes to
//! stdout.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use time::OffsetDateTime;
use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the writer thread; past this, new lines are dropped (and counted).
const QUEUE_LINES: usize = 4096;
/// How often the writer tries again to report lost lines while nothing else is logged.
const NOTICE_RETRY: Duration = Duration::from_secs(1);
/// How long a normal exit waits for the queued lines to be written.
const EXIT_FLUSH: Duration = Duration::from_secs(2);

static QUEUE: OnceLock<LineQueue> = OnceLock::new();

/// Installs the process's tracing subscriber: `info` unless `RUST_LOG` says otherwise, lines to
/// stderr through the writer thread. Keep the guard until the process ends: dropping it writes
/// what is still queued (waiting a bounded time).
pub(crate) fn init() -> Result<FlushOnDrop> {
    let queue = match QUEUE.get() {
        Some(q) => q,
        None => {
            let q = LineQueue::start(io::stderr(), QUEUE_LINES).context("starting the log writer")?;
            QUEUE.get_or_init(|| q)
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(queue.clone())
        // Its internal errors would go to `eprintln!`; the writer above never fails anyway.
        .log_internal_errors(false)
        .try_init();
    Ok(FlushOnDrop(queue))
}

/// What the process's log writer has done so far (all zero before [`init`]).
pub(crate) fn stats() -> Stats {
    QUEUE.get().map(LineQueue::stats).unwrap_or_default()
}

/// Writes the queued lines when dropped; see [`init`].
#[derive(Debug)]
#[must_use = "dropping it at once flushes the log now, not at exit"]
pub(crate) struct FlushOnDrop(&'static LineQueue);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.flush(EXIT_FLUSH);
        // Stderr still refuses: say it where it may still be read.
        let s = stats();
        if s.lost() > s.reported {
            noteln!(
                "lienthong: {} log line(s) could not be written to stderr ({} dropped, {} refused)",
                s.lost() - s.reported,
                s.dropped,
                s.failed
            );
        }
    }
}

/// Counts of lines since the writer started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Lines the sink took.
    pub(crate) written: u64,
    /// Lines dropped because the queue was full.
    pub(crate) dropped: u64,
    /// Lines the sink refused (write errors).
    pub(crate) failed: u64,
    /// Of the lost lines, those whose loss the sink has been told.
    pub(crate) reported: u64,
}

impl Stats {
    /// Lines that never reached the sink.
    pub(crate) fn lost(&self) -> u64 {
        self.dropped.saturating_add(self.failed)
    }
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    reported: AtomicU64,
}

impl Counters {
    fn stats(&self) -> Stats {
        Stats {
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            reported: self.reported.load(Ordering::Relaxed),
        }
    }
}

/// The queue between the loggers and the writer thread.
#[derive(Debug)]
struct Shared {
    state: Mutex<Queued>,
    /// Lines were queued or a flush was asked.
    work: Condvar,
    /// A flush was answered.
    flushed: Condvar,
    capacity: usize,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Queued {
    lines: VecDeque<Vec<u8>>,
    flushes_asked: u64,
    flushes_done: u64,
}

impl Shared {
    /// Nothing panics while holding the lock, but a poisoned queue must not stop logging.
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The front of the writer thread, a [`MakeWriter`] for tracing-subscriber: each event's text is
/// handed over without waiting.
#[derive(Clone, Debug)]
pub(crate) struct LineQueue {
    shared: Arc<Shared>,
}

impl LineQueue {
    /// Starts the thread that writes the queued lines into `sink`, with at most `capacity` lines
    /// waiting. The thread ends after every clone of the queue is dropped.
    pub(crate) fn start(sink: impl Write + Send + 'static, capacity: usize) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            work: Condvar::new(),
            flushed: Condvar::new(),
            capacity,
            counters: Counters::default(),
        });
        let writer = shared.clone();
        std::thread::Builder::new().name("log-writer".into()).spawn(move || write_loop(&writer, sink))?;
        Ok(Self { shared })
    }

    fn push(&self, line: Vec<u8>) {
        let mut q = self.shared.lock();
        if q.lines.len() < self.shared.capacity {
            q.lines.push_back(line);
            drop(q);
            self.shared.work.notify_one();
        } else {
            drop(q);
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        self.shared.counters.stats()
    }

    /// Waits at most `wait` for the lines queued so far to be written (and lost lines to be
    /// reported); false if they were not (the sink is stuck).
    pub(crate) fn flush(&self, wait: Duration) -> bool {
        let mut q = self.shared.lock();
        q.flushes_asked += 1;
        let ticket = q.flushes_asked;
        self.shared.work.notify_one();
        let (_q, waited) = self
            .shared
            .flushed
            .wait_timeout_while(q, wait, |q| q.flushes_done < ticket)
            .unwrap_or_else(PoisonError::into_inner);
        !waited.timed_out()
    }
}

impl<'a> MakeWriter<'a> for LineQueue {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { queue: self, text: Vec::new() }
    }
}

/// One event's text, written in one or more pieces and queued as one line when dropped.
#[derive(Debug)]
pub(crate) struct Line<'a> {
    queue: &'a LineQueue,
    text: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.text.is_empty() {
            self.queue.push(std::mem::take(&mut self.text));
        }
    }
}

/// The writer thread. A write error loses that line and nothing else: the next line is tried as
/// if nothing happened, and the first one that goes through is preceded by the count of lost
/// lines (tried again every [`NOTICE_RETRY`] while nothing is logged).
fn write_loop(shared: &Arc<Shared>, mut sink: impl Write) {
    let counters = &shared.counters;
    loop {
        let (lines, flush_to) = {
            let q = shared.lock();
            let (mut q, _) = shared
                .work
                .wait_timeout_while(q, NOTICE_RETRY, |q| {
                    q.lines.is_empty() && q.flushes_asked == q.flushes_done
                })
                .unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut q.lines), q.flushes_asked)
        };
        // Every queue handle is gone (a flush would hold one).
        if lines.is_empty() && Arc::strong_count(shared) == 1 {
            break;
        }
        for text in lines {
            report_losses(&mut sink, counters);
            let counter = match sink.write_all(&text) {
                Ok(()) => &counters.written,
                Err(_) => &counters.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        report_losses(&mut sink, counters);
        let _ = sink.flush();
        let mut q = shared.lock();
        if q.flushes_done < flush_to {
            q.flushes_done = flush_to;
            shared.flushed.notify_all();
        }
    }
}

/// Writes the count of lost lines not reported yet, if any.
fn report_losses(sink: &mut impl Write, counters: &Counters) {
    let stats = counters.stats();
    if stats.lost() > stats.reported && write_notice(sink, &stats) {
        counters.reported.store(stats.lost(), Ordering::Relaxed);
    }
}

/// One line in the fmt layer's layout (UTC, microseconds); true if the sink took it.
fn write_notice(sink: &mut impl Write, totals: &Stats) -> bool {
    let lost = totals.lost() - totals.reported;
    let t = OffsetDateTime::now_utc();
    let line = format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z  WARN lienthong::logging: {lost} log line(s) lost since the \
         last report (since start: {} dropped while the writer was behind or stuck, {} refused by stderr)\n",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond(),
        totals.dropped,
        totals.failed
    );
    sink.write_all(line.as_bytes()).and_then(|()| sink.flush()).is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{self, Receiver};
    use std::time::Instant;

    use super::*;

    /// A sink that refuses writes while `broken` is set, and keeps what it took.
    #[derive(Clone, Default)]
    struct Flaky {
        broken: Arc<std::sync::atomic::AtomicBool>,
        taken: Arc<Mutex<Vec<u8>>>,
    }

    impl Flaky {
        fn text(&self) -> String {
            String::from_utf8(self.taken.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the reader is gone"));
            }
            self.taken.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A sink whose writes say they started on `entered`, then wait until `open` receives (or
    /// is dropped).
    struct Stuck {
        entered: mpsc::Sender<()>,
        open: Receiver<()>,
        taken: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.open.recv();
            self.taken.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log(queue: &LineQueue, text: &str) {
        let mut line = queue.make_writer();
        // tracing writes an event in pieces sometimes: they stay one line.
        let (a, b) = text.split_at(text.len() / 2);
        line.write_all(a.as_bytes()).unwrap();
        line.write_all(b.as_bytes()).unwrap();
    }

    #[test]
    fn a_failing_sink_costs_lines_not_the_caller_and_the_loss_is_reported_when_it_works_again() {
        let sink = Flaky::default();
        let queue = LineQueue::start(sink.clone(), 16).unwrap();
        log(&queue, "before\n");
        assert!(queue.flush(Duration::from_secs(5)));

        sink.broken.store(true, Ordering::SeqCst);
        for i in 0..3 {
            log(&queue, &format!("lost {i}\n"));
        }
        assert!(queue.flush(Duration::from_secs(5)));
        assert_eq!(queue.stats(), Stats { written: 1, dropped: 0, failed: 3, reported: 0 });
        assert_eq!(sink.text(), "before\n");

        sink.broken.store(false, Ordering::SeqCst);
        log(&queue, "after\n");
        assert!(queue.flush(Duration::from_secs(5)));
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!((lines[0], lines[2]), ("before", "after"), "{text}");
        assert!(lines[1].contains("WARN lienthong::logging: 3 log line(s) lost"), "{text}");
        assert!(lines[1].contains("3 refused by stderr"), "{text}");
        assert_eq!(queue.stats(), Stats { written: 2, dropped: 0, failed: 3, reported: 3 });

        // Reported once only.
        log(&queue, "later\n");
        assert!(queue.flush(Duration::from_secs(5)));
        assert_eq!(sink.text(), format!("{text}later\n"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_without_waiting() {
        let (open, opened) = mpsc::channel();
        let (entered, writing) = mpsc::channel();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let queue = LineQueue::start(Stuck { entered, open: opened, taken: taken.clone() }, 2).unwrap();
        log(&queue, "line 0\n");
        writing.recv_timeout(Duration::from_secs(5)).expect("the writer takes the first line");
        // The writer is stuck on line 0; the queue holds two more.
        let started = Instant::now();
        for i in 1..50 {
            log(&queue, &format!("line {i}\n"));
        }
        assert!(started.elapsed() < Duration::from_secs(2), "logging waited: {:?}", started.elapsed());
        assert_eq!(queue.stats(), Stats { written: 0, dropped: 47, failed: 0, reported: 0 });
        assert!(!queue.flush(Duration::from_millis(100)), "a stuck sink cannot be flushed");

        drop(open);
        assert!(queue.flush(Duration::from_secs(5)));
        assert_eq!(queue.stats(), Stats { written: 3, dropped: 47, failed: 0, reported: 47 });
        let text = String::from_utf8(taken.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!((lines[0], lines[2], lines[3]), ("line 0", "line 1", "line 2"), "{text}");
        assert!(lines[1].contains("WARN lienthong::logging: 47 log line(s) lost"), "{text}");
        assert!(lines[1].contains("47 dropped while"), "{text}");
    }

    #[test]
    fn tracing_events_into_a_broken_sink_do_not_panic() {
        let sink = Flaky::default();
        sink.broken.store(true, Ordering::SeqCst);
        let queue = LineQueue::start(sink.clone(), 16).unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(queue.clone())
            .with_ansi(false)
            .log_internal_errors(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(reason = "disk full", "the log writer could not write");
            tracing::info!("still here");
        });
        assert!(queue.flush(Duration::from_secs(5)));
        assert_eq!(queue.stats(), Stats { written: 0, dropped: 0, failed: 2, reported: 0 });

        sink.broken.store(false, Ordering::SeqCst);
        tracing::subscriber::with_default(
            tracing_subscriber::fmt().with_writer(queue.clone()).with_ansi(false).finish(),
            || tracing::info!(n = 1, "back"),
        );
        assert!(queue.flush(Duration::from_secs(5)));
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("  WARN lienthong::logging: 2 log line(s) lost"), "{text}");
        assert!(lines[1].contains(" INFO ") && lines[1].ends_with("back n=1"), "{text}");
        // The notice's time looks like the fmt layer's: 2026-01-02T03:04:05.123456Z.
        let times: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(times[0].len(), times[1].len(), "{text}");
        assert!(
            times.iter().all(|t| t.len() == 27 && t.ends_with('Z') && t.as_bytes()[19] == b'.'),
            "{text}"
        );
    }
}
