//! The API holds its connection cap: beyond `max_connections` a new connection is closed at
//! once while the admitted ones are still served.

use std::time::{Duration, SystemTime};

use lienthong_audit_service::collect::Collector;
use lienthong_audit_service::{AuditService, Auditors, Credentials, ServiceHandle, ServiceSetup};
use lienthong_globalconf::Anchor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (der, _, key) = lienthong_pki::is_client_tls::self_signed_client("collector").unwrap();
    let (_conf_tx, conf) = tokio::sync::watch::channel(None);
    let service = AuditService::new(ServiceSetup {
        collector: Collector::open(&dir.path().join("collector.redb")).unwrap(),
        conf,
        anchor: Anchor {
            instance: "VN".parse().unwrap(),
            conf_urls: Vec::new(),
            signing_keys: Vec::new(),
            generated_at: SystemTime::now(),
        },
        nodes: Vec::new(),
        credentials: Credentials { chain: vec![der], key },
        auditors: Auditors::default(),
        node_timeout: Duration::from_secs(5),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = ServiceHandle::start(service, listener, None, 1, Duration::ZERO).unwrap();

    let request = b"GET /api/v1/openapi.json HTTP/1.1\r\nhost: a\r\n\r\n";
    let mut first = TcpStream::connect(handle.addr).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = [0u8; 64];
    let n = timeout(Duration::from_secs(5), first.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));

    let mut second = TcpStream::connect(handle.addr).await.unwrap();
    let _ = second.write_all(request).await;
    let mut buf = [0u8; 256];
    match timeout(Duration::from_secs(1), second.read(&mut buf)).await.expect("closed at once") {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("served beyond the cap: {}", String::from_utf8_lossy(&buf[..n])),
    }
    drop(first);
    timeout(Duration::from_secs(20), handle.shutdown()).await.unwrap();
}
