//! Shared by the TLS tests: one handshake on loopback, bounded in time.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use lienthong_pki::tls;
use lienthong_pki::{Fingerprint, Identity, PeerRejected};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server saw: the identity of the client certificate, if any.
pub type Seen = Option<(Identity, Fingerprint)>;

/// Runs one handshake and a ping/pong; returns what the client and the server saw. The TLS
/// server name is not used for verification by any of our configs.
pub async fn handshake(
    server_cfg: rustls::ServerConfig,
    client_cfg: rustls::ClientConfig,
) -> (Result<(), rustls::Error>, Result<Seen, rustls::Error>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    let to_rustls = |e: std::io::Error| -> rustls::Error {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .cloned()
            .unwrap_or_else(|| rustls::Error::General(e.to_string()))
    };
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(to_rustls)?;
        let seen = tls.get_ref().1.peer_certificates().and_then(tls::peer_certificate_identity);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(to_rustls)?;
        tls.write_all(b"pong").await.map_err(to_rustls)?;
        tls.shutdown().await.ok();
        Ok::<_, rustls::Error>(seen)
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect(tls::peer_server_name(), tcp).await.map_err(to_rustls)?;
        tls.write_all(b"ping").await.map_err(to_rustls)?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(to_rustls)?;
        assert_eq!(&buf, b"pong");
        Ok::<_, rustls::Error>(())
    };
    let limit = Duration::from_secs(10);
    let client = tokio::time::timeout(limit, client).await.expect("client timed out");
    let server = tokio::time::timeout(limit, server).await.expect("server timed out").unwrap();
    (client, server)
}

/// Why a side refused the handshake, if it was our verifier.
pub fn reason<T>(r: &Result<T, rustls::Error>) -> Option<PeerRejected> {
    r.as_ref().err().and_then(tls::peer_rejection).cloned()
}
