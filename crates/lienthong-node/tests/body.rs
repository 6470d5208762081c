//! Reading bodies under limits, spooling past the memory threshold, and sending them on.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use lienthong_node::body::{BodyError, BodyLimits, CHUNK, SpooledBody, spool};
use sha2::{Digest, Sha256, Sha512};
use tokio::sync::mpsc;

/// Every test finishes well within this, or fails.
const BOUND: Duration = Duration::from_secs(20);

/// A body of `chunks` frames of `size` bytes, each different (its index in the first bytes),
/// made as it is read. Counts the frames read and hashes what it gave out.
struct Generated {
    base: Bytes,
    chunks: usize,
    made: Arc<AtomicUsize>,
    sha256: Arc<Mutex<Sha256>>,
}

impl Generated {
    fn new(chunks: usize, size: usize) -> Self {
        let base = (0..size).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>().into();
        Self { base, chunks, made: Arc::default(), sha256: Arc::default() }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let n = self.made.load(Ordering::Relaxed);
        if n == self.chunks {
            return Poll::Ready(None);
        }
        self.made.store(n + 1, Ordering::Relaxed);
        let mut chunk = BytesMut::from(&self.base[..]);
        let tag = (n as u64).to_be_bytes();
        let k = tag.len().min(chunk.len());
        chunk[..k].copy_from_slice(&tag[..k]);
        self.sha256.lock().unwrap().update(&chunk);
        Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
    }
}

/// A body fed by the test through a channel, to stall it or break it.
struct Fed(mpsc::Receiver<io::Result<Bytes>>);

impl Body for Fed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|r| r.map(|r| r.map(Frame::data)))
    }
}

/// A body that must not be read.
struct Untouchable;

impl Body for Untouchable {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        panic!("the body was read");
    }
}

fn data(len: usize) -> Bytes {
    (0..len).map(|i| (i % 253) as u8).collect::<Vec<u8>>().into()
}

/// `data` cut into frames of uneven sizes, as a network delivers it.
fn uneven(data: &Bytes) -> Fed {
    let (tx, rx) = mpsc::channel(1024);
    let (mut at, mut step) = (0, 1);
    while at < data.len() {
        let end = (at + step).min(data.len());
        tx.try_send(Ok(data.slice(at..end))).unwrap();
        at = end;
        step = step * 3 % 10_007 + 1;
    }
    Fed(rx)
}

fn limits(memory_threshold: usize) -> BodyLimits {
    BodyLimits { memory_threshold, ..BodyLimits::default() }
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f).await.expect("the test took too long")
}

/// Sends the body on and checks the frames: none larger than a chunk, exact size hints.
async fn send_on(body: SpooledBody) -> Bytes {
    let mut out = BytesMut::new();
    let mut body = body.into_body();
    let start = body.size_hint().exact().expect("an exact size hint");
    while let Some(frame) = body.frame().await {
        let chunk = frame.unwrap().into_data().unwrap();
        assert!(!chunk.is_empty() && chunk.len() <= CHUNK, "frame of {} bytes", chunk.len());
        out.extend_from_slice(&chunk);
        assert_eq!(body.size_hint().exact(), Some(start - out.len() as u64));
    }
    assert!(body.is_end_stream());
    assert_eq!(out.len() as u64, start);
    out.freeze()
}

fn assert_digests(body: &SpooledBody, data: &[u8]) {
    assert_eq!(body.len(), data.len() as u64);
    assert_eq!(body.sha256(), <[u8; 32]>::from(Sha256::digest(data)));
    assert_eq!(body.sha512(), <[u8; 64]>::from(Sha512::digest(data)));
}

#[tokio::test]
async fn a_small_body_stays_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let body =
        bounded(spool(Full::new(Bytes::from_static(b"{\"id\":1}")), &limits(1024), dir.path(), Some(8)))
            .await
            .unwrap();
    assert!(!body.is_spooled());
    assert_digests(&body, b"{\"id\":1}");
    assert_eq!(body.bytes_if_small(8).as_deref(), Some(&b"{\"id\":1}"[..]));
    assert_eq!(body.bytes_if_small(7), None);
    assert_eq!(send_on(body.clone()).await, &b"{\"id\":1}"[..]);
    assert_eq!(body.read_all().await.unwrap(), &b"{\"id\":1}"[..]);
}

#[tokio::test]
async fn a_body_of_exactly_the_threshold_stays_in_memory_and_one_byte_more_is_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let at = data(4096);
    let body = bounded(spool(uneven(&at), &limits(4096), dir.path(), None)).await.unwrap();
    assert!(!body.is_spooled());
    assert_digests(&body, &at);

    let over = data(4097);
    let body = bounded(spool(uneven(&over), &limits(4096), dir.path(), Some(4097))).await.unwrap();
    assert!(body.is_spooled());
    assert_digests(&body, &over);
    assert_eq!(body.bytes_if_small(1 << 20), None, "spooled bodies are never read back for logging");
    assert_eq!(body.read_all().await.unwrap(), over);
}

#[tokio::test]
async fn a_large_body_is_spooled_hashed_and_sent_on_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let payload = data(3 * 1024 * 1024 + 123);
    let body = bounded(spool(uneven(&payload), &limits(64 * 1024), dir.path(), Some(payload.len() as u64)))
        .await
        .unwrap();
    assert!(body.is_spooled());
    assert_digests(&body, &payload);
    // Clones share the file and read it independently.
    let (a, b) = tokio::join!(send_on(body.clone()), send_on(body.clone()));
    assert_eq!(a, payload);
    assert_eq!(b, payload);
    assert_eq!(body.read_all().await.unwrap(), payload);
}

#[tokio::test]
async fn the_spool_file_goes_in_the_spool_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let small = bounded(spool(Full::new(data(100)), &limits(1024), &missing, None)).await.unwrap();
    assert!(!small.is_spooled());
    let large = bounded(spool(Full::new(data(2048)), &limits(1024), &missing, None)).await;
    assert!(matches!(large, Err(BodyError::Io(_))), "{large:?}");
    // Anonymous: nothing is left behind, even while the body is alive.
    let kept = bounded(spool(Full::new(data(2048)), &limits(1024), dir.path(), None)).await.unwrap();
    assert!(kept.is_spooled());
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test]
async fn an_empty_body() {
    let dir = tempfile::tempdir().unwrap();
    let body =
        bounded(spool(http_body_util::Empty::<Bytes>::new(), &limits(0), dir.path(), Some(0))).await.unwrap();
    assert!(!body.is_spooled() && body.is_empty());
    assert_digests(&body, b"");
    let sent = body.into_body();
    assert!(sent.is_end_stream());
    assert_eq!(sent.size_hint().exact(), Some(0));
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let limits = BodyLimits { max_bytes: 1000, ..BodyLimits::default() };
    let r = bounded(spool(Untouchable, &limits, dir.path(), Some(1001))).await;
    assert!(matches!(r, Err(BodyError::TooLarge { max: 1000 })), "{r:?}");
    assert_eq!(r.unwrap_err().to_string(), "the body is larger than the limit of 1000 bytes");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_stops_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let limits = BodyLimits { max_bytes: 10 * 1024, memory_threshold: 1024, ..BodyLimits::default() };
    let body = Generated::new(1_000_000, 1024);
    let made = body.made.clone();
    let r = bounded(spool(body, &limits, dir.path(), None)).await;
    assert!(matches!(r, Err(BodyError::TooLarge { max: 10240 })), "{r:?}");
    assert_eq!(made.load(Ordering::Relaxed), 11, "stops at the first chunk past the limit");
}

#[tokio::test]
async fn a_body_that_does_not_match_its_content_length_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let short = bounded(spool(Full::new(data(99)), &limits(1024), dir.path(), Some(100))).await;
    assert!(matches!(short, Err(BodyError::Incomplete)), "{short:?}");

    let body = Generated::new(1_000_000, 100);
    let made = body.made.clone();
    let long = bounded(spool(body, &limits(1024), dir.path(), Some(250))).await;
    assert!(matches!(long, Err(BodyError::Incomplete)), "{long:?}");
    assert_eq!(made.load(Ordering::Relaxed), 3, "stops as soon as it is longer than declared");
}

#[tokio::test]
async fn a_stalled_body_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(Ok(data(10))).await.unwrap();
    let limits = BodyLimits { idle_timeout: Duration::from_millis(100), ..BodyLimits::default() };
    let started = Instant::now();
    let r = bounded(spool(Fed(rx), &limits, dir.path(), None)).await;
    assert!(matches!(r, Err(BodyError::Timeout)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(tx);
}

#[tokio::test]
async fn a_trickling_body_hits_the_total_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(4);
    // Never idle for long, but never done: bounded so the feeder ends by itself.
    let feeder = tokio::spawn(async move {
        for _ in 0..200 {
            if tx.send(Ok(data(10))).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let limits = BodyLimits {
        idle_timeout: Duration::from_secs(2),
        total_timeout: Some(Duration::from_millis(300)),
        ..BodyLimits::default()
    };
    let r = bounded(spool(Fed(rx), &limits, dir.path(), None)).await;
    assert!(matches!(r, Err(BodyError::TooSlow { .. })), "{r:?}");
    bounded(feeder).await.unwrap();
}

#[tokio::test]
async fn a_broken_stream_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(Ok(data(10))).await.unwrap();
    tx.send(Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset"))).await.unwrap();
    let r = bounded(spool(Fed(rx), &limits(1024), dir.path(), None)).await;
    match r {
        Err(e @ BodyError::Read(_)) => {
            assert_eq!(e.to_string(), "the body could not be read: connection reset")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_local_body_is_hashed_and_sent_in_chunks() {
    let payload = data(2 * CHUNK + 100);
    let body = SpooledBody::from_bytes(payload.clone());
    assert!(!body.is_spooled());
    assert_digests(&body, &payload);
    let mut sent = body.into_body();
    let mut sizes = Vec::new();
    while let Some(frame) = sent.frame().await {
        sizes.push(frame.unwrap().into_data().unwrap().len());
    }
    assert_eq!(sizes, [CHUNK, CHUNK, 100]);
}

/// 200 MiB, made as it is read, spooled and sent on: never held whole in memory (each frame
/// is at most a chunk; the spool keeps at most two write batches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_body_round_trips_through_the_spool() {
    const LEN: usize = 200 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let body = Generated::new(LEN / CHUNK, CHUNK);
    let made = body.sha256.clone();
    let limits = BodyLimits { max_bytes: LEN as u64, ..BodyLimits::default() };
    let spooled = bounded(spool(body, &limits, dir.path(), Some(LEN as u64))).await.unwrap();
    assert!(spooled.is_spooled());
    assert_eq!(spooled.len(), LEN as u64);
    let made: [u8; 32] = made.lock().unwrap().clone().finalize().into();
    assert_eq!(spooled.sha256(), made);

    let mut sent = spooled.into_body();
    assert_eq!(sent.size_hint().exact(), Some(LEN as u64));
    let (mut hash, mut len) = (Sha256::new(), 0);
    let consume = async {
        while let Some(frame) = sent.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= CHUNK);
            len += chunk.len();
            hash.update(&chunk);
        }
    };
    bounded(consume).await;
    assert_eq!(len, LEN);
    assert_eq!(<[u8; 32]>::from(hash.finalize()), made);
}
