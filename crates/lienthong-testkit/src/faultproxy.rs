//! A fault-injecting TCP proxy: listens on `127.0.0.1:0` in front of one address and forwards
//! bytes both ways, or fails the way a network does, switchable while connections are open. It
//! only moves bytes, so TLS (mTLS between nodes included) goes through it unchanged.
//!
//! The kernel's `netem` is not available everywhere tests run; this is its stand-in for the
//! faults a peer connection meets: delay, a cut in the middle of a body, a black hole, a refused
//! or reset connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The longest a proxied connection lives, whatever its peers do: bounds every loop below.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(300);
/// Connecting to the upstream address.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest chunk read and forwarded at once.
const CHUNK: usize = 16 * 1024;

/// Which way bytes travel, seen from the connecting client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    /// Client to server (a request).
    Server,
    /// Server to client (a response).
    Client,
}

/// What the proxy does with traffic. A change applies to open connections at their next chunk
/// (and at once for [`Fault::Refuse`] and [`Fault::Reset`]) and to every new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Forward every chunk after this delay.
    Delay(Duration),
    /// Forward `after` bytes in direction `toward` (counted per connection from the moment the
    /// fault is set, or from the connection's start), then close both sides.
    Cut { toward: Toward, after: u64 },
    /// Accept and read, never forward or answer: new connections are never even connected
    /// upstream.
    BlackHole,
    /// Close new connections at once (and open ones).
    Refuse,
    /// Reset new connections at once (and open ones), with an RST rather than a FIN.
    Reset,
}

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Close,
    Reset,
}

#[derive(Debug)]
struct Shared {
    fault: watch::Sender<Fault>,
    /// Bumped by [`FaultProxy::close_all`]: connections of an older epoch end.
    epoch: watch::Sender<u64>,
    accepted: AtomicU64,
    cuts: AtomicU64,
}

/// A running proxy; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub upstream: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its `JoinSet`, which aborts every connection.
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream`, passing traffic.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            fault: watch::channel(Fault::Pass).0,
            epoch: watch::channel(0).0,
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(Self { addr, upstream, shared, task })
    }

    /// Switches the fault.
    pub fn set(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.shared.fault.borrow()
    }

    /// Closes every open connection now (new ones are handled by the current fault), as a
    /// network that loses its state does.
    pub fn close_all(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections ended by a [`Fault::Cut`] so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// The address as a peer node would be registered at.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    // Out of descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                connections.spawn(async move {
                    let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, handle(tcp, upstream, &shared)).await;
                });
            }
        }
    }
}

async fn handle(mut client: TcpStream, upstream: SocketAddr, shared: &Shared) {
    client.set_nodelay(true).ok();
    let mut epoch = shared.epoch.subscribe();
    epoch.borrow_and_update();
    let fault = *shared.fault.borrow();
    match fault {
        Fault::Refuse => return,
        Fault::Reset => {
            client.set_zero_linger().ok();
            return;
        }
        Fault::BlackHole => {
            let mut buf = vec![0u8; CHUNK];
            let swallow = async { while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {} };
            tokio::select! {
                () = swallow => {}
                _ = epoch.changed() => {}
            }
            return;
        }
        Fault::Pass | Fault::Delay(_) | Fault::Cut { .. } => {}
    }
    let Ok(Ok(mut server)) =
        tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream)).await
    else {
        return;
    };
    server.set_nodelay(true).ok();
    let (end_tx, end_rx) = watch::channel(None);
    let end = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let up = pump(&mut cr, &mut sw, Toward::Server, shared, &end_tx, end_rx.clone());
        let down = pump(&mut sr, &mut cw, Toward::Client, shared, &end_tx, end_rx.clone());
        tokio::select! {
            _ = async { tokio::join!(up, down) } => {}
            _ = epoch.changed() => {}
        }
        *end_rx.borrow()
    };
    if end == Some(End::Reset) {
        client.set_zero_linger().ok();
        server.set_zero_linger().ok();
    }
}

/// Forwards one direction under the current fault until end of stream or until the connection
/// must end (then says how in `end`).
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    dir: Toward,
    shared: &Shared,
    end: &watch::Sender<Option<End>>,
    mut ended: watch::Receiver<Option<End>>,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut fault_rx = shared.fault.subscribe();
    let mut fault = *fault_rx.borrow_and_update();
    // Bytes forwarded this way since `fault` took effect.
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            _ = ended.wait_for(Option::is_some) => return,
            changed = fault_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                fault = *fault_rx.borrow_and_update();
                sent = 0;
                match fault {
                    Fault::Refuse => { end.send_replace(Some(End::Close)); return; }
                    Fault::Reset => { end.send_replace(Some(End::Reset)); return; }
                    _ => continue,
                }
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                // Half-close: the other direction may still carry an answer.
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let chunk = match fault {
            Fault::Pass => &buf[..n],
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                &buf[..n]
            }
            Fault::Cut { toward, after } if toward == dir => {
                let allowed = usize::try_from(after.saturating_sub(sent)).unwrap_or(usize::MAX).min(n);
                if allowed < n || sent + n as u64 >= after {
                    if allowed > 0 {
                        let _ = to.write_all(&buf[..allowed]).await;
                        let _ = to.flush().await;
                    }
                    shared.cuts.fetch_add(1, Ordering::SeqCst);
                    end.send_replace(Some(End::Close));
                    return;
                }
                &buf[..n]
            }
            Fault::Cut { .. } => &buf[..n],
            Fault::BlackHole => continue,
            Fault::Refuse => {
                end.send_replace(Some(End::Close));
                return;
            }
            Fault::Reset => {
                end.send_replace(Some(End::Reset));
                return;
            }
        };
        sent += n as u64;
        if to.write_all(chunk).await.is_err() {
            end.send_replace(Some(End::Close));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back, bounded by the test's runtime.
    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut tcp, _)) = listener.accept().await {
                conns.spawn(async move {
                    let (mut r, mut w) = tcp.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (addr, task)
    }

    async fn round_trip(proxy: &FaultProxy, payload: &[u8]) -> io::Result<Vec<u8>> {
        let mut tcp = TcpStream::connect(proxy.addr).await?;
        tcp.write_all(payload).await?;
        tcp.shutdown().await?;
        let mut back = Vec::new();
        tcp.read_to_end(&mut back).await?;
        Ok(back)
    }

    async fn bounded<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f).await.expect("in time")
    }

    #[tokio::test]
    async fn passes_delays_cuts_and_refuses() {
        let (upstream, _echo) = echo_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let payload = vec![7u8; 100_000];
        assert_eq!(bounded(round_trip(&proxy, &payload)).await.unwrap(), payload);

        proxy.set(Fault::Delay(Duration::from_millis(50)));
        let started = std::time::Instant::now();
        assert_eq!(bounded(round_trip(&proxy, b"slow")).await.unwrap(), b"slow");
        assert!(started.elapsed() >= Duration::from_millis(100), "one delay each way");

        // Cut after 1000 bytes toward the server: the echo gets at most those back.
        proxy.set(Fault::Cut { toward: Toward::Server, after: 1000 });
        let back = bounded(round_trip(&proxy, &payload)).await.unwrap_or_default();
        assert!(back.len() <= 1000, "{}", back.len());
        assert_eq!(proxy.cuts(), 1);
        proxy.set(Fault::Cut { toward: Toward::Client, after: 5000 });
        let back = bounded(round_trip(&proxy, &payload)).await.unwrap_or_default();
        assert!(back.len() <= 5000, "{}", back.len());
        assert_eq!(proxy.cuts(), 2);

        proxy.set(Fault::Refuse);
        let back = bounded(round_trip(&proxy, b"x")).await;
        assert!(back.is_err() || back.unwrap().is_empty());
        proxy.set(Fault::Reset);
        let back = bounded(round_trip(&proxy, b"x")).await;
        assert!(back.is_err() || back.unwrap().is_empty());

        proxy.set(Fault::Pass);
        assert_eq!(bounded(round_trip(&proxy, b"back")).await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn a_black_hole_swallows_and_close_all_ends_open_connections() {
        let (upstream, _echo) = echo_server().await;
        let proxy = FaultProxy::start(upstream).await.unwrap();
        proxy.set(Fault::BlackHole);
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(b"anyone there?").await.unwrap();
        let mut buf = [0u8; 16];
        let silent = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await;
        assert!(silent.is_err(), "no answer from a black hole");
        proxy.close_all();
        let n = bounded(tcp.read(&mut buf)).await.unwrap_or(0);
        assert_eq!(n, 0, "closed");

        // An open connection that passed traffic is held by a later fault too.
        proxy.set(Fault::Pass);
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(b"ping").await.unwrap();
        bounded(tcp.read_exact(&mut buf[..4])).await.unwrap();
        proxy.set(Fault::Refuse);
        let n = bounded(tcp.read(&mut buf)).await.unwrap_or(0);
        assert_eq!(n, 0, "an open connection is closed by Refuse");
        assert_eq!(proxy.accepted(), 2);
    }
}
