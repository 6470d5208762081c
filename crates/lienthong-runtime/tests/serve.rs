//! `serve` over real sockets: the cap, the handshake and header timeouts, the drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::Service;
use lienthong_runtime::{Conn, Protocols, ServeOptions, Tls, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const BOUND: Duration = Duration::from_secs(5);

/// Answers "ok" after a delay.
struct Answer(Duration);

impl Service<Request<Incoming>> for Answer {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, _req: Request<Incoming>) -> Self::Future {
        let delay = self.0;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
        })
    }
}

fn answering(delay: Duration) -> impl Fn(&Conn) -> Option<Answer> + Send + Sync + 'static {
    move |_conn: &Conn| Some(Answer(delay))
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(tls: Option<Tls>, delay: Duration, options: ServeOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            tls,
            answering(delay),
            async move {
                let _ = stopped.await;
            },
            options,
        ));
        Self { addr, stop: Some(stop), task }
    }

    /// Asks for shutdown and waits for `serve` to return; how long that took.
    async fn shutdown(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().expect("once").send(());
        timeout(BOUND, self.task).await.expect("serve returns").expect("no panic");
        started.elapsed()
    }
}

/// Sends one HTTP/1.1 request on `tcp` and reads until the answer's body "ok".
async fn get(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"ok") {
        let n = timeout(BOUND, tcp.read(&mut buf)).await.expect("answer in time").expect("read");
        assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Waits (bounded) for the server to close `tcp`; how long it took.
async fn closed(tcp: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match timeout(BOUND, tcp.read(&mut buf)).await.expect("closed in time") {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

fn options() -> ServeOptions {
    ServeOptions { name: "test", ..ServeOptions::default() }
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_a_freed_slot_is_reused() {
    let server = Server::start(None, Duration::ZERO, ServeOptions { max_connections: 2, ..options() }).await;
    let mut a = TcpStream::connect(server.addr).await.expect("a");
    let mut b = TcpStream::connect(server.addr).await.expect("b");
    // Both answered: both are open and counted.
    assert!(get(&mut a).await.starts_with("HTTP/1.1 200"));
    assert!(get(&mut b).await.starts_with("HTTP/1.1 200"));
    let mut c = TcpStream::connect(server.addr).await.expect("c connects (the kernel accepts)");
    let _ = c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(closed(&mut c).await < Duration::from_secs(1), "closed at once");
    drop(a);
    // The slot frees once the server sees `a` closed; retry briefly until it has.
    let deadline = Instant::now() + BOUND;
    loop {
        let mut d = TcpStream::connect(server.addr).await.expect("d");
        d.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        let mut buf = [0u8; 64];
        match timeout(BOUND, d.read(&mut buf)).await.expect("read in time") {
            Ok(n) if n > 0 => break,
            _ => assert!(Instant::now() < deadline, "the slot never freed"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_silent_tls_client_is_dropped_at_the_handshake_timeout() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Certificates are made only by lienthong-pki (deny.toml); any will do for a silent client.
    let (cert, _, key) = lienthong_pki::is_client_tls::self_signed_client("localhost").expect("cert");
    let config = lienthong_pki::consumer_tls::server_config_for_chain(vec![cert], &key).expect("config");
    let handshake_timeout = Duration::from_millis(300);
    let server = Server::start(
        Some(Tls::fixed(Arc::new(config))),
        Duration::ZERO,
        ServeOptions { handshake_timeout, ..options() },
    )
    .await;
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let took = closed(&mut silent).await;
    assert!(
        took >= handshake_timeout - Duration::from_millis(50) && took < Duration::from_secs(3),
        "{took:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_dropped_at_the_header_timeout() {
    let header_read_timeout = Duration::from_millis(300);
    for protocols in [Protocols::Http1, Protocols::Both] {
        let server =
            Server::start(None, Duration::ZERO, ServeOptions { header_read_timeout, protocols, ..options() })
                .await;
        let mut slow = TcpStream::connect(server.addr).await.expect("connect");
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.expect("write");
        let took = closed(&mut slow).await;
        assert!(took < Duration::from_secs(3), "{protocols:?}: {took:?}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn shutdown_lets_a_request_in_progress_finish_and_cuts_the_rest_after_the_grace() {
    let shutdown_grace = Duration::from_millis(500);
    // A request that finishes within the grace is answered.
    let server =
        Server::start(None, Duration::from_millis(200), ServeOptions { shutdown_grace, ..options() }).await;
    let addr = server.addr;
    let call = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        get(&mut tcp).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let took = server.shutdown().await;
    assert!(call.await.expect("call").starts_with("HTTP/1.1 200"));
    assert!(took < shutdown_grace, "returned once drained: {took:?}");
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");

    // One that would take longer is cut at the grace.
    let server =
        Server::start(None, Duration::from_secs(60), ServeOptions { shutdown_grace, ..options() }).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let took = server.shutdown().await;
    assert!(took >= shutdown_grace && took < shutdown_grace * 4, "{took:?}");
    closed(&mut tcp).await;
}
