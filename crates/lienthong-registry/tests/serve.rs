//! The registry's listeners hold their connection caps: beyond `max_connections` a new
//! connection is closed at once, on the HTTP and the gRPC port alike.

use std::time::Duration;

use lienthong_pki::KeyAlgorithm;
use lienthong_registry::{InitOptions, RegistryConfig, RegistryHome, system_clock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Reads until the server closes `tcp`; panics if it stays open for a second.
async fn closed_at_once(tcp: &mut TcpStream) {
    let mut buf = [0u8; 256];
    loop {
        match timeout(Duration::from_secs(1), tcp.read(&mut buf)).await.expect("closed at once") {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn connections_beyond_the_caps_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.toml");
    std::fs::write(
        &path,
        "instance = \"VN\"\ndata_dir = \"registry\"\n[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 1\n\
         [grpc]\nlisten = \"127.0.0.1:0\"\nmax_connections = 1\n",
    )
    .unwrap();
    let config = RegistryConfig::load(&path).unwrap();
    let home = RegistryHome::new(&config.data_dir);
    let opts = InitOptions {
        instance: config.instance.clone(),
        member_classes: vec![("GOV".parse().unwrap(), "Government".into())],
        admin_name: "Admin".into(),
        key_algorithm: KeyAlgorithm::Ed25519,
        passphrase: None,
    };
    drop(home.init(&opts, config.settings(config.http.listen, config.grpc.listen), system_clock()).unwrap());
    let running = timeout(Duration::from_secs(30), lienthong_registry::serve(&config, None, system_clock()))
        .await
        .unwrap()
        .unwrap();

    // HTTP: the first connection is served (and stays open), the second is closed at once.
    let mut first = TcpStream::connect(running.http_addr).await.unwrap();
    first.write_all(b"GET /anchor.json HTTP/1.1\r\nhost: r\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = timeout(Duration::from_secs(5), first.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let mut second = TcpStream::connect(running.http_addr).await.unwrap();
    let _ = second.write_all(b"GET /anchor.json HTTP/1.1\r\nhost: r\r\n\r\n").await;
    closed_at_once(&mut second).await;

    // gRPC: a connection still in its TLS handshake counts; the next one is closed at once.
    let handshaking = TcpStream::connect(running.grpc_addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut over = TcpStream::connect(running.grpc_addr).await.unwrap();
    closed_at_once(&mut over).await;

    // Shutdown drops the handshake in progress at once and lets the idle HTTP connection go.
    let started = std::time::Instant::now();
    timeout(Duration::from_secs(30), running.shutdown()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    drop((first, handshaking));
}
