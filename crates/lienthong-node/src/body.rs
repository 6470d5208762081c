//! Message bodies, read once and kept for signing, logging and forwarding.
//!
//! A message is signed and logged before it is forwarded, so the node needs a body's length and
//! digests before it sends the first byte on. [`spool`] reads a body to its end under limits
//! (size, idle and total time), hashing it on the way, and keeps it in memory while it is small
//! and in an anonymous temporary file past [`BodyLimits::memory_threshold`]. The file has no
//! name, so it disappears with the last handle, whatever happens to the process.
//!
//! File writes, and the hashing of large bodies, run on tokio's blocking pool: a slow disk or a
//! large frame never stalls the runtime's threads.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use lienthong_exchange::Digests;
use lienthong_exchange::failure::BodyProblem;
use sha2::{Digest, Sha256, Sha512};
use tokio::task::JoinHandle;

/// The size of each frame [`SpooledBody::into_body`] sends.
pub const CHUNK: usize = 64 * 1024;

/// How much to collect before handing a batch to the blocking pool for writing.
const WRITE_BATCH: usize = 256 * 1024;

/// Bodies up to this size are hashed on the calling task; larger ones on the blocking pool.
const INLINE_HASH: usize = 64 * 1024;

/// Limits on reading one body.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// The largest body accepted, in bytes.
    pub max_bytes: u64,
    /// Bodies up to this many bytes stay in memory; larger ones go to a temporary file.
    pub memory_threshold: usize,
    /// The longest wait for the next piece of the body.
    pub idle_timeout: Duration,
    /// The longest time for the whole body, if limited.
    pub total_timeout: Option<Duration>,
}

impl BodyLimits {
    /// A 1 GiB payload plus room for what wraps it.
    pub const DEFAULT_MAX_BYTES: u64 = (1 << 30) + (1 << 20);
    pub const DEFAULT_MEMORY_THRESHOLD: usize = 1 << 20;
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            memory_threshold: Self::DEFAULT_MEMORY_THRESHOLD,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            total_timeout: None,
        }
    }
}

/// Why a body could not be read. The messages are fit to show a client.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than the limit of {max} bytes")]
    TooLarge { max: u64 },
    #[error("the body does not match its declared Content-Length")]
    Incomplete,
    #[error("the body was not received in time")]
    Timeout,
    /// The body kept coming, but not all of it within the total time allowed.
    #[error("the body was not complete within the limit of {secs} s")]
    TooSlow { secs: u64 },
    /// The stream broke (the connection was reset, or the peer sent malformed framing).
    #[error("the body could not be read: {0}")]
    Read(String),
    /// The local spool file failed (disk full, for instance).
    #[error("the body could not be stored: {0}")]
    Io(#[source] io::Error),
}

impl BodyError {
    /// What went wrong, for the protocol's one mapping to a fault
    /// ([`lienthong_exchange::failure::body_fault`]).
    pub fn problem(&self) -> BodyProblem {
        match self {
            BodyError::TooLarge { .. } => BodyProblem::TooLarge,
            BodyError::Timeout => BodyProblem::Timeout,
            BodyError::TooSlow { .. } => BodyProblem::TooSlow,
            BodyError::Io(_) => BodyProblem::Storage,
            BodyError::Incomplete | BodyError::Read(_) => BodyProblem::Broken,
        }
    }
}

/// SHA-256 and SHA-512 of the same bytes, updated together.
#[derive(Clone, Default)]
struct Hashes {
    sha256: Sha256,
    sha512: Sha512,
}

impl Hashes {
    fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.sha512.update(data);
    }

    fn finish(self) -> ([u8; 32], [u8; 64]) {
        (self.sha256.finalize().into(), self.sha512.finalize().into())
    }
}

/// Where a body's bytes are.
#[derive(Clone)]
enum Data {
    Memory(Bytes),
    /// Read with positional reads only, so clones never disturb one another.
    File(Arc<File>),
}

/// A body read to its end, with its length and digests. Cloning is cheap (the bytes or the
/// file are shared), so the same body can be logged and forwarded.
#[derive(Clone)]
pub struct SpooledBody {
    data: Data,
    len: u64,
    sha256: [u8; 32],
    sha512: [u8; 64],
}

impl fmt::Debug for SpooledBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpooledBody")
            .field("len", &self.len)
            .field("spooled", &self.is_spooled())
            .finish_non_exhaustive()
    }
}

impl SpooledBody {
    /// A body the node made itself (an error page, an envelope). It is hashed on the calling
    /// thread: such bodies are small.
    pub fn from_bytes(bytes: Bytes) -> Self {
        let mut hashes = Hashes::default();
        hashes.update(&bytes);
        Self::in_memory(bytes, hashes)
    }

    fn in_memory(bytes: Bytes, hashes: Hashes) -> Self {
        let (sha256, sha512) = hashes.finish();
        Self { len: bytes.len() as u64, data: Data::Memory(bytes), sha256, sha512 }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    pub fn sha512(&self) -> [u8; 64] {
        self.sha512
    }

    /// What the protocol steps check and sign of the body.
    pub fn digests(&self) -> Digests {
        Digests { sha256: self.sha256, sha512: self.sha512, len: self.len }
    }

    /// True when the body is in a temporary file rather than in memory.
    pub fn is_spooled(&self) -> bool {
        matches!(self.data, Data::File(_))
    }

    /// The whole body, if it is in memory and at most `max` bytes; `None` otherwise. This never
    /// reads the disk, so a body over the memory threshold is always `None`.
    pub fn bytes_if_small(&self, max: usize) -> Option<Bytes> {
        match &self.data {
            Data::Memory(b) if b.len() <= max => Some(b.clone()),
            _ => None,
        }
    }

    /// The body as a stream of frames of at most [`CHUNK`] bytes, with an exact size hint.
    /// A spooled body is read from its file as it is sent (on the blocking pool, one chunk
    /// ahead), so memory stays bounded whatever the length. Must be polled within a tokio
    /// runtime.
    pub fn into_body(self) -> BoxBody<Bytes, io::Error> {
        match self.data {
            Data::Memory(rest) => MemoryBody { rest }.boxed(),
            Data::File(file) => FileBody { file, offset: 0, remaining: self.len, reading: None }.boxed(),
        }
    }

    /// The whole body in memory: only for bodies known to be small (metaservices, tests).
    pub async fn read_all(self) -> io::Result<Bytes> {
        match self.data {
            Data::Memory(b) => Ok(b),
            Data::File(file) => {
                let len =
                    usize::try_from(self.len).map_err(|_| io::Error::other("body too large for memory"))?;
                blocking(move || read_exact_at(&file, len, 0)).await
            }
        }
    }
}

/// Runs `f` on the blocking pool; a panic there becomes an I/O error.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| Err(io::Error::other("spool task failed")))
}

/// Reads exactly `len` bytes at `offset`; a short file is an error (it was truncated under us).
fn read_exact_at(file: &File, len: usize, offset: u64) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let mut done = 0;
    while done < len {
        match pread(file, &mut buf[done..], offset + done as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf.freeze())
}

#[cfg(unix)]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

struct MemoryBody {
    rest: Bytes,
}

impl Body for MemoryBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(CHUNK);
        Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

struct FileBody {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    /// The next chunk, being read on the blocking pool.
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    fn start_read(&mut self) {
        let (file, offset) = (self.file.clone(), self.offset);
        let len = self.remaining.min(CHUNK as u64) as usize;
        self.reading = Some(tokio::task::spawn_blocking(move || read_exact_at(&file, len, offset)));
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if self.reading.is_none() {
            self.start_read();
        }
        let reading = self.reading.as_mut().expect("a read was just started");
        let result = ready!(Pin::new(reading).poll(cx));
        self.reading = None;
        let chunk = match result {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(_) => return Poll::Ready(Some(Err(io::Error::other("spool task failed")))),
        };
        self.offset += chunk.len() as u64;
        self.remaining -= chunk.len() as u64;
        // Read ahead, so the disk works while the chunk is sent.
        if self.remaining > 0 {
            self.start_read();
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The spool file and the digests so far, owned by whichever blocking task is writing.
struct Sink {
    file: Option<File>,
    hashes: Hashes,
}

/// Writes one batch, creating the file first if there is none yet; hashes as it writes.
fn write_batch(mut sink: Sink, dir: &Path, batch: Vec<Bytes>) -> io::Result<Sink> {
    let file = match &mut sink.file {
        Some(file) => file,
        None => sink.file.insert(tempfile::tempfile_in(dir)?),
    };
    for chunk in &batch {
        sink.hashes.update(chunk);
        file.write_all(chunk)?;
    }
    Ok(sink)
}

/// The blocking task writing the latest batch; it hands the sink back when done, so reading
/// goes on while the disk works.
struct Writer(JoinHandle<io::Result<Sink>>);

impl Writer {
    fn start(sink: Sink, dir: &Path, batch: Vec<Bytes>) -> Self {
        let dir: PathBuf = dir.to_owned();
        Writer(tokio::task::spawn_blocking(move || write_batch(sink, &dir, batch)))
    }

    async fn finish(self) -> Result<Sink, BodyError> {
        match self.0.await {
            Ok(r) => r.map_err(BodyError::Io),
            Err(_) => Err(BodyError::Io(io::Error::other("spool task failed"))),
        }
    }
}

/// Reads `body` to its end under `limits`, in memory or spooled to an anonymous file in
/// `spool_dir`. `content_length` is the declared length, if any: a larger one is refused
/// before reading, and the body must match it exactly.
pub async fn spool<B>(
    body: B,
    limits: &BodyLimits,
    spool_dir: &Path,
    content_length: Option<u64>,
) -> Result<SpooledBody, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: fmt::Display,
{
    if content_length.is_some_and(|n| n > limits.max_bytes) {
        return Err(BodyError::TooLarge { max: limits.max_bytes });
    }
    let read = read_body(body, limits, spool_dir, content_length);
    match limits.total_timeout {
        Some(total) => tokio::time::timeout(total, read)
            .await
            .map_err(|_| BodyError::TooSlow { secs: total.as_secs() })?,
        None => read.await,
    }
}

async fn read_body<B>(
    body: B,
    limits: &BodyLimits,
    dir: &Path,
    content_length: Option<u64>,
) -> Result<SpooledBody, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: fmt::Display,
{
    let mut body = pin!(body);
    let mut total: u64 = 0;
    // Until the threshold is passed: the chunks in memory. After: the batch being collected.
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len: usize = 0;
    let mut writer: Option<Writer> = None;

    loop {
        let frame = match tokio::time::timeout(limits.idle_timeout, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing we sign or forward.
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        total = total.saturating_add(data.len() as u64);
        if total > limits.max_bytes {
            return Err(BodyError::TooLarge { max: limits.max_bytes });
        }
        if content_length.is_some_and(|n| total > n) {
            return Err(BodyError::Incomplete);
        }
        pending_len += data.len();
        pending.push(data);
        let full = match writer {
            None => pending_len > limits.memory_threshold,
            Some(_) => pending_len >= WRITE_BATCH,
        };
        if full {
            let sink = match writer.take() {
                Some(previous) => previous.finish().await?,
                None => Sink { file: None, hashes: Hashes::default() },
            };
            writer = Some(Writer::start(sink, dir, std::mem::take(&mut pending)));
            pending_len = 0;
        }
    }
    if content_length.is_some_and(|n| total != n) {
        return Err(BodyError::Incomplete);
    }

    let Some(writer) = writer else {
        let bytes = concat(pending, pending_len);
        let hash = move || {
            let mut hashes = Hashes::default();
            hashes.update(&bytes);
            SpooledBody::in_memory(bytes, hashes)
        };
        if pending_len <= INLINE_HASH {
            return Ok(hash());
        }
        return blocking(move || Ok(hash())).await.map_err(BodyError::Io);
    };
    let mut sink = writer.finish().await?;
    if !pending.is_empty() {
        sink = Writer::start(sink, dir, pending).finish().await?;
    }
    let file = sink.file.expect("a spooled body has a file");
    let (sha256, sha512) = sink.hashes.finish();
    Ok(SpooledBody { data: Data::File(Arc::new(file)), len: total, sha256, sha512 })
}

/// One contiguous buffer; no copy for a body that came as a single frame.
fn concat(chunks: Vec<Bytes>, len: usize) -> Bytes {
    match <[Bytes; 1]>::try_from(chunks) {
        Ok([one]) => one,
        Err(chunks) => {
            let mut buf = BytesMut::with_capacity(len);
            for c in &chunks {
                buf.extend_from_slice(c);
            }
            buf.freeze()
        }
    }
}
