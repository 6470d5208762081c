//! The configuration client against a small in-test HTTP server serving really signed
//! configurations. Time is injected: no test waits for a configuration to expire.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ETAG, IF_NONE_MATCH};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lienthong_confclient::{
    CONF_FILE, ConfClient, ConfClientConfig, ConfClientError, ConfStatus, FetchFailure, LEARNED_KEYS_FILE,
    Refresh,
};
use lienthong_globalconf::{Anchor, ConfError, ConfKey, sign, to_millis};
use lienthong_pki::{KeyAlgorithm, PrivateKey};
use lienthong_proto::globalconf::v1 as pb;
use lienthong_runtime::ManualClock;
use lienthong_types::InstanceId;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The tests' "now": 2030-03-17.
const T0_SECS: u64 = 1_900_000_000;
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0_SECS)
}

/// Every await in these tests is bounded.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut).await.expect("timed out")
}

fn key() -> PrivateKey {
    PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap()
}

fn conf_key(k: &PrivateKey) -> ConfKey {
    ConfKey::new(k.public_key(), t0() - 24 * HOUR, None)
}

/// A configuration for `VN` announcing `announced` as the instance's signing keys.
fn conf(
    version: u64,
    generated_at: SystemTime,
    expires_at: SystemTime,
    announced: &[&PrivateKey],
) -> pb::GlobalConf {
    pb::GlobalConf {
        instance: "VN".into(),
        version,
        generated_at_ms: to_millis(generated_at),
        expires_at_ms: to_millis(expires_at),
        signing_keys: announced.iter().map(|k| pb::ConfSigningKey::from(&conf_key(k))).collect(),
        ..Default::default()
    }
}

fn signed(conf: &pb::GlobalConf, signers: &[&PrivateKey]) -> Vec<u8> {
    sign(conf, signers).unwrap().encode_to_vec()
}

/// Version `v`, generated at T0, valid for an hour, announcing and signed by `k`.
fn simple(v: u64, k: &PrivateKey) -> Vec<u8> {
    signed(&conf(v, t0(), t0() + HOUR, &[k]), &[k])
}

#[derive(Default)]
struct Served {
    body: Option<Bytes>,
    etag: u64,
    /// Answer every request with this status instead.
    status: Option<StatusCode>,
    /// The `If-None-Match` of every request received, in order.
    requests: Vec<Option<String>>,
    not_modified: usize,
}

/// Serves whatever the test sets, with an ETag per body and `If-None-Match` honoured.
struct TestServer {
    url: String,
    served: Arc<Mutex<Served>>,
    task: JoinHandle<()>,
}

impl TestServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/globalconf", listener.local_addr().unwrap());
        let served = Arc::new(Mutex::new(Served::default()));
        let task = tokio::spawn(accept_loop(listener, served.clone()));
        Self { url, served, task }
    }

    fn set(&self, body: Vec<u8>) {
        let mut s = self.served.lock().unwrap();
        s.body = Some(body.into());
        s.etag += 1;
    }

    fn fail_with(&self, status: StatusCode) {
        self.served.lock().unwrap().status = Some(status);
    }

    fn requests(&self) -> Vec<Option<String>> {
        self.served.lock().unwrap().requests.clone()
    }

    fn not_modified(&self) -> usize {
        self.served.lock().unwrap().not_modified
    }

    fn etag(&self) -> String {
        format!("\"{}\"", self.served.lock().unwrap().etag)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which aborts the connections.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, served: Arc<Mutex<Served>>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        while connections.try_join_next().is_some() {}
        let served = served.clone();
        connections.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(&served, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn respond(served: &Mutex<Served>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut s = served.lock().unwrap();
    let if_none_match = req.headers().get(IF_NONE_MATCH).map(|v| v.to_str().unwrap().to_owned());
    s.requests.push(if_none_match.clone());
    let reply = |status: StatusCode| Response::builder().status(status).body(Full::default()).unwrap();
    if let Some(status) = s.status {
        return reply(status);
    }
    let Some(body) = s.body.clone() else { return reply(StatusCode::NOT_FOUND) };
    let etag = format!("\"{}\"", s.etag);
    if if_none_match.as_deref() == Some(etag.as_str()) {
        s.not_modified += 1;
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(ETAG, etag)
            .body(Full::default())
            .unwrap();
    }
    Response::builder().header(ETAG, etag).body(Full::new(body)).unwrap()
}

/// A URL on which nothing listens.
async fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/globalconf")
}

fn anchor(urls: Vec<String>, keys: &[&PrivateKey]) -> Anchor {
    Anchor {
        instance: InstanceId::new("VN").unwrap(),
        conf_urls: urls,
        signing_keys: keys.iter().map(|k| conf_key(k)).collect(),
        generated_at: t0() - 24 * HOUR,
    }
}

/// The usual fixture: one server, one anchor key, a state directory and a settable clock.
struct Fixture {
    server: TestServer,
    key: PrivateKey,
    dir: tempfile::TempDir,
    clock: ManualClock,
}

impl Fixture {
    async fn new() -> Self {
        Self {
            server: TestServer::start().await,
            key: key(),
            dir: tempfile::tempdir().unwrap(),
            clock: ManualClock::new(t0()),
        }
    }

    fn config(&self) -> ConfClientConfig {
        let mut config =
            ConfClientConfig::new(anchor(vec![self.server.url.clone()], &[&self.key]), self.dir.path());
        config.clock = self.clock.clock();
        config
    }

    fn open(&self) -> ConfClient {
        ConfClient::open(self.config()).unwrap()
    }

    fn persisted(&self) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join(CONF_FILE)).ok()
    }
}

fn version(client: &ConfClient) -> Option<u64> {
    client.current().map(|v| v.conf.version)
}

fn refused(result: Result<Refresh, ConfClientError>) -> ConfError {
    match result {
        Err(ConfClientError::Refused { source, .. }) => source,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Serves v1, accepts it, then serves `next` and expects it refused with everything unchanged:
/// the held configuration, the file, and the ETag sent next time.
async fn refused_after_v1(f: &Fixture, next: Vec<u8>) -> ConfError {
    let client = f.open();
    let v1 = simple(1, &f.key);
    f.server.set(v1.clone());
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::Updated { version: 1 });
    let v1_etag = f.server.etag();
    let learned_before = std::fs::read(f.dir.path().join(LEARNED_KEYS_FILE)).ok();

    f.server.set(next);
    let error = refused(within(client.refresh_now()).await);
    assert_eq!(version(&client), Some(1));
    assert_eq!(f.persisted(), Some(v1.clone()));
    assert_eq!(std::fs::read(f.dir.path().join(LEARNED_KEYS_FILE)).ok(), learned_before);
    // Refused again on the next poll, which still offers v1's ETag.
    refused(within(client.refresh_now()).await);
    assert_eq!(f.server.requests().last().unwrap().as_deref(), Some(v1_etag.as_str()));
    error
}

#[tokio::test]
async fn fetches_verifies_persists_and_publishes() {
    let f = Fixture::new().await;
    let client = f.open();
    let mut updates = client.subscribe();
    assert!(updates.borrow().is_none());
    assert_eq!(client.status(t0()), ConfStatus::Missing);

    let v1 = simple(1, &f.key);
    f.server.set(v1.clone());
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::Updated { version: 1 });

    within(updates.changed()).await.unwrap();
    let published = updates.borrow_and_update().clone().unwrap();
    assert_eq!(published.conf.version, 1);
    assert_eq!(published.bytes, v1);
    assert_eq!(published.signed_by.id, conf_key(&f.key).id);
    assert_eq!(version(&client), Some(1));
    assert_eq!(f.persisted(), Some(v1));
    assert!(!f.dir.path().join(LEARNED_KEYS_FILE).exists(), "the anchor's own key is not 'learned'");
    assert!(matches!(client.status(t0()), ConfStatus::Valid { version: 1, .. }));
    // The first request had no held configuration, so no ETag.
    assert_eq!(f.server.requests(), vec![None]);
}

#[tokio::test]
async fn not_modified_when_the_server_answers_304_to_the_held_etag() {
    let f = Fixture::new().await;
    let client = f.open();
    f.server.set(simple(1, &f.key));
    within(client.refresh_now()).await.unwrap();
    let updates = client.subscribe();

    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::NotModified);
    assert_eq!(f.server.not_modified(), 1);
    assert_eq!(f.server.requests()[1].as_deref(), Some(f.server.etag().as_str()));
    assert!(!updates.has_changed().unwrap());

    f.server.set(simple(2, &f.key));
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::Updated { version: 2 });
    assert!(updates.has_changed().unwrap());
    assert_eq!(version(&client), Some(2));
}

#[tokio::test]
async fn the_same_bytes_again_are_not_an_update() {
    // E.g. the first poll after a restart, when no ETag is held yet.
    let f = Fixture::new().await;
    f.server.set(simple(1, &f.key));
    within(f.open().refresh_now()).await.unwrap();
    let client = f.open();
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::NotModified);
    // Its ETag was taken, so the next poll is a 304.
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::NotModified);
    assert_eq!(f.server.not_modified(), 1);
}

#[tokio::test]
async fn tampered_configuration_is_refused_and_nothing_changes() {
    let f = Fixture::new().await;
    let mut tampered = sign(&conf(2, t0(), t0() + HOUR, &[&f.key]), &[&f.key]).unwrap();
    tampered.conf.push(0x08); // one more byte: the signature no longer covers the content
    let error = refused_after_v1(&f, tampered.encode_to_vec()).await;
    assert!(matches!(error, ConfError::BadSignature { .. }), "{error:?}");
}

#[tokio::test]
async fn configuration_signed_by_an_unknown_key_is_refused() {
    let f = Fixture::new().await;
    let stranger = key();
    let error = refused_after_v1(&f, simple(2, &stranger)).await;
    assert_eq!(error, ConfError::UntrustedSigner);
}

#[tokio::test]
async fn older_version_is_refused_as_a_rollback() {
    let f = Fixture::new().await;
    let client = f.open();
    let v5 = simple(5, &f.key);
    f.server.set(v5.clone());
    within(client.refresh_now()).await.unwrap();
    f.server.set(simple(4, &f.key));
    let error = refused(within(client.refresh_now()).await);
    assert!(matches!(error, ConfError::Rollback { offered: 4, held: 5, .. }), "{error:?}");
    assert_eq!(version(&client), Some(5));
    assert_eq!(f.persisted(), Some(v5));
}

#[tokio::test]
async fn same_version_generated_earlier_is_refused() {
    let f = Fixture::new().await;
    let earlier = signed(&conf(1, t0() - MINUTE, t0() + HOUR, &[&f.key]), &[&f.key]);
    let error = refused_after_v1(&f, earlier).await;
    assert!(matches!(error, ConfError::Rollback { offered: 1, held: 1, .. }), "{error:?}");
}

#[tokio::test]
async fn expired_configuration_is_refused() {
    let f = Fixture::new().await;
    let client = f.open();
    f.server.set(signed(&conf(1, t0() - 2 * HOUR, t0() - HOUR, &[&f.key]), &[&f.key]));
    let error = refused(within(client.refresh_now()).await);
    assert!(matches!(error, ConfError::Expired { .. }), "{error:?}");
    assert_eq!(client.status(t0()), ConfStatus::Missing);
    assert_eq!(f.persisted(), None);
}

#[tokio::test]
async fn configuration_for_another_instance_is_refused() {
    let f = Fixture::new().await;
    let mut other = conf(2, t0(), t0() + HOUR, &[&f.key]);
    other.instance = "LA".into();
    let error = refused_after_v1(&f, signed(&other, &[&f.key])).await;
    assert!(matches!(error, ConfError::WrongInstance { .. }), "{error:?}");
}

#[tokio::test]
async fn persisted_copy_is_the_rollback_floor_after_a_restart_even_when_expired() {
    let f = Fixture::new().await;
    f.server.set(simple(5, &f.key));
    within(f.open().refresh_now()).await.unwrap();

    // Restart two hours later: v5 expired an hour ago.
    let later = t0() + 2 * HOUR;
    f.clock.set(later);
    let client = f.open();
    assert_eq!(version(&client), Some(5));
    assert_eq!(client.subscribe().borrow().as_ref().map(|v| v.conf.version), Some(5));
    let status = client.status(later);
    assert_eq!(status, ConfStatus::Expired { version: 5, expires_at: t0() + HOUR, since: HOUR });
    assert!(!status.is_usable());

    // A fresh, valid, but older configuration is still a rollback.
    f.server.set(signed(&conf(4, later, later + HOUR, &[&f.key]), &[&f.key]));
    let error = refused(within(client.refresh_now()).await);
    assert!(matches!(error, ConfError::Rollback { offered: 4, held: 5, .. }), "{error:?}");

    f.server.set(signed(&conf(6, later, later + HOUR, &[&f.key]), &[&f.key]));
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::Updated { version: 6 });
    assert!(client.status(later).is_usable());
}

#[tokio::test]
async fn persisted_copy_that_does_not_verify_is_an_error_at_start() {
    let f = Fixture::new().await;
    let path = f.dir.path().join(CONF_FILE);
    std::fs::write(&path, simple(3, &key())).unwrap();
    let error = ConfClient::open(f.config()).unwrap_err();
    assert!(
        matches!(&error, ConfClientError::PersistedConfRefused { source: ConfError::UntrustedSigner, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(CONF_FILE), "{error}");
    assert!(path.exists(), "the floor is not discarded");

    std::fs::write(&path, b"not a configuration").unwrap();
    let error = ConfClient::open(f.config()).unwrap_err();
    assert!(matches!(error.conf_error(), Some(ConfError::Malformed(_))), "{error:?}");
}

#[tokio::test]
async fn rolled_in_key_is_learned_and_still_trusted_after_a_restart() {
    let f = Fixture::new().await;
    let (old, new) = (&f.key, &key());
    let client = f.open();

    // v2: both keys sign, both are announced.
    f.server.set(signed(&conf(2, t0(), t0() + HOUR, &[old, new]), &[old, new]));
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::Updated { version: 2 });
    let learned = std::fs::read_to_string(f.dir.path().join(LEARNED_KEYS_FILE)).unwrap();
    let learned = Anchor::from_json(&learned).unwrap();
    assert_eq!(learned.signing_keys, vec![conf_key(new)]);

    // v3: only the new key signs.
    f.server.set(signed(&conf(3, t0(), t0() + HOUR, &[new]), &[new]));
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::Updated { version: 3 });
    assert_eq!(client.current().unwrap().signed_by.id, conf_key(new).id);
    drop(client);

    // After a restart v3 still verifies, and v4 by the new key alone is accepted.
    let client = f.open();
    assert_eq!(version(&client), Some(3));
    f.server.set(signed(&conf(4, t0(), t0() + HOUR, &[new]), &[new]));
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::Updated { version: 4 });
    drop(client);

    // The trust came from learning: a node with only the anchor refuses v4.
    let fresh_dir = tempfile::tempdir().unwrap();
    let mut config = f.config();
    config.state_dir = fresh_dir.path().to_owned();
    let error = refused(within(ConfClient::open(config).unwrap().refresh_now()).await);
    assert_eq!(error, ConfError::UntrustedSigner);
}

#[tokio::test]
async fn learned_keys_are_rederived_from_the_persisted_copy_at_start() {
    // As after a crash between writing the configuration and writing its learned keys.
    let f = Fixture::new().await;
    let (old, new) = (&f.key, &key());
    f.server.set(signed(&conf(2, t0(), t0() + HOUR, &[old, new]), &[old, new]));
    within(f.open().refresh_now()).await.unwrap();
    let learned_path = f.dir.path().join(LEARNED_KEYS_FILE);
    std::fs::remove_file(&learned_path).unwrap();

    let client = f.open();
    assert!(learned_path.exists());
    f.server.set(signed(&conf(3, t0(), t0() + HOUR, &[new]), &[new]));
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::Updated { version: 3 });
}

#[tokio::test]
async fn a_key_that_signs_without_being_announced_is_not_learned() {
    let f = Fixture::new().await;
    let (old, new) = (&f.key, &key());
    let client = f.open();
    // v2 carries the new key's signature but announces only the old key.
    f.server.set(signed(&conf(2, t0(), t0() + HOUR, &[old]), &[old, new]));
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::Updated { version: 2 });
    assert!(!f.dir.path().join(LEARNED_KEYS_FILE).exists());
    f.server.set(signed(&conf(3, t0(), t0() + HOUR, &[new]), &[new]));
    assert_eq!(refused(within(client.refresh_now()).await), ConfError::UntrustedSigner);
}

#[tokio::test]
async fn a_key_no_longer_announced_is_forgotten() {
    let f = Fixture::new().await;
    let (old, new) = (&f.key, &key());
    let client = f.open();
    f.server.set(signed(&conf(2, t0(), t0() + HOUR, &[old, new]), &[old, new]));
    within(client.refresh_now()).await.unwrap();
    assert!(f.dir.path().join(LEARNED_KEYS_FILE).exists());
    // v3 (by the anchor key) withdraws the new key.
    f.server.set(signed(&conf(3, t0(), t0() + HOUR, &[old]), &[old]));
    within(client.refresh_now()).await.unwrap();
    assert!(!f.dir.path().join(LEARNED_KEYS_FILE).exists());
    f.server.set(signed(&conf(4, t0(), t0() + HOUR, &[new]), &[new]));
    assert_eq!(refused(within(client.refresh_now()).await), ConfError::UntrustedSigner);
}

#[tokio::test]
async fn the_second_url_is_used_when_the_first_is_down() {
    let f = Fixture::new().await;
    f.server.set(simple(1, &f.key));
    let mut config = f.config();
    config.anchor.conf_urls = vec![closed_url().await, f.server.url.clone()];
    let client = ConfClient::open(config).unwrap();
    assert_eq!(within(client.refresh_now()).await.unwrap(), Refresh::Updated { version: 1 });
    assert_eq!(f.server.requests().len(), 1);
}

#[tokio::test]
async fn every_url_failing_is_reported_with_each_reason() {
    let f = Fixture::new().await;
    f.server.fail_with(StatusCode::SERVICE_UNAVAILABLE);
    let down = closed_url().await;
    let mut config = f.config();
    config.anchor.conf_urls = vec![down.clone(), f.server.url.clone()];
    let client = ConfClient::open(config).unwrap();
    let error = within(client.refresh_now()).await.unwrap_err();
    let ConfClientError::Unreachable { attempts } = &error else { panic!("{error:?}") };
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].url, down);
    assert!(matches!(attempts[0].failure, FetchFailure::Transport(_)), "{:?}", attempts[0]);
    assert_eq!(attempts[1].url, f.server.url);
    assert_eq!(attempts[1].failure, FetchFailure::Status(StatusCode::SERVICE_UNAVAILABLE));
    let message = error.to_string();
    assert!(
        message.contains(&down) && message.contains(&f.server.url) && message.contains("503"),
        "{message}"
    );
    assert_eq!(client.status(t0()), ConfStatus::Missing);
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let f = Fixture::new().await;
    f.server.set(simple(1, &f.key));
    let mut config = f.config();
    config.max_conf_bytes = 64;
    let client = ConfClient::open(config).unwrap();
    let error = within(client.refresh_now()).await.unwrap_err();
    let ConfClientError::Unreachable { attempts } = &error else { panic!("{error:?}") };
    assert_eq!(attempts[0].failure, FetchFailure::BodyTooLarge { limit: 64 });
    assert!(error.to_string().contains("64-byte limit"), "{error}");
    assert_eq!(f.persisted(), None);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts connections but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/globalconf", listener.local_addr().unwrap());
    let f = Fixture::new().await;
    let mut config = f.config();
    config.anchor.conf_urls = vec![url];
    config.request_timeout = Duration::from_millis(200);
    let client = ConfClient::open(config).unwrap();
    let error = within(client.refresh_now()).await.unwrap_err();
    let ConfClientError::Unreachable { attempts } = &error else { panic!("{error:?}") };
    assert_eq!(attempts[0].failure, FetchFailure::Timeout(Duration::from_millis(200)));
    drop(listener);
}

#[tokio::test]
async fn urls_other_than_http_are_rejected_at_start() {
    let f = Fixture::new().await;
    for url in
        ["https://registry.example/globalconf", "ftp://registry.example/globalconf", "registry.example/conf"]
    {
        let mut config = f.config();
        config.anchor.conf_urls = vec![f.server.url.clone(), url.to_owned()];
        let error = ConfClient::start(config).unwrap_err();
        let ConfClientError::InvalidUrl { url: bad, .. } = &error else { panic!("{error:?}") };
        assert_eq!(bad, url);
        assert!(error.to_string().contains(url), "{error}");
    }
}

#[tokio::test]
async fn status_moves_from_valid_to_expiring_to_expired() {
    let f = Fixture::new().await;
    let client = f.open();
    let missing = client.status(t0());
    assert_eq!(missing, ConfStatus::Missing);
    assert!(missing.to_string().contains("no global configuration"), "{missing}");

    f.server.set(simple(7, &f.key));
    within(client.refresh_now()).await.unwrap();
    let expires_at = t0() + HOUR;

    let valid = client.status(t0());
    assert_eq!(valid, ConfStatus::Valid { version: 7, expires_at, remaining: HOUR });
    assert!(valid.is_usable());
    assert_eq!(
        valid.to_string(),
        "global configuration version 7 is valid until 2030-03-17T18:46:40Z (1h 0m left)"
    );

    // The default warning margin is 3 minutes.
    let expiring = client.status(expires_at - 2 * MINUTE);
    assert_eq!(expiring, ConfStatus::Expiring { version: 7, expires_at, remaining: 2 * MINUTE });
    assert!(expiring.is_usable());
    assert!(expiring.to_string().contains("expires at 2030-03-17T18:46:40Z (2m 0s left)"), "{expiring}");

    let expired = client.status(expires_at);
    assert!(matches!(expired, ConfStatus::Expired { version: 7, .. }));
    assert!(!expired.is_usable());
    let expired = client.status(expires_at + 90 * MINUTE);
    assert_eq!(expired, ConfStatus::Expired { version: 7, expires_at, since: 90 * MINUTE });
    assert!(expired.to_string().contains("expired at 2030-03-17T18:46:40Z (1h 30m ago)"), "{expired}");
}

#[tokio::test]
async fn the_background_poller_publishes_and_stops_on_shutdown() {
    let f = Fixture::new().await;
    f.server.set(simple(1, &f.key));
    let mut config = f.config();
    config.poll_interval = Duration::from_millis(20);
    let client = ConfClient::start(config).unwrap();
    let mut updates = client.subscribe();

    within(updates.wait_for(|c| c.as_ref().is_some_and(|c| c.conf.version == 1))).await.unwrap();
    f.server.set(simple(2, &f.key));
    within(updates.wait_for(|c| c.as_ref().is_some_and(|c| c.conf.version == 2))).await.unwrap();

    within(client.shutdown()).await;
    let polls = f.server.requests().len();
    f.server.set(simple(3, &f.key));
    // No waiting for a poll that does not come: every poll runs on the client's shared state
    // (publisher, HTTP client, directory lock), and once `shutdown` returns nothing holds it any
    // more. The publisher is gone (the channel is closed, with v2 the last value), so no poll can
    // ever publish again...
    assert!(within(updates.changed()).await.is_err(), "the poller still holds the publisher");
    assert_eq!(updates.borrow().as_ref().map(|c| c.conf.version), Some(2));
    // ...the state directory is free again...
    drop(f.open());
    // ...and no request was made after the shutdown.
    assert_eq!(f.server.requests().len(), polls);
}

#[tokio::test]
async fn dropping_the_client_stops_the_poller() {
    let f = Fixture::new().await;
    f.server.set(simple(1, &f.key));
    let mut config = f.config();
    config.poll_interval = Duration::from_millis(20);
    let client = ConfClient::start(config).unwrap();
    let mut updates = client.subscribe();
    within(updates.wait_for(Option::is_some)).await.unwrap();
    drop(client);
    // The publisher lives in the task's share of the client: it closes once the task is gone.
    within(async { while updates.changed().await.is_ok() {} }).await;
}

#[tokio::test]
async fn one_state_directory_serves_one_client() {
    let f = Fixture::new().await;
    let first = f.open();
    let error = ConfClient::open(f.config()).unwrap_err();
    assert!(matches!(error, ConfClientError::StateDirInUse { .. }), "{error:?}");
    drop(first);
    drop(f.open());
}

#[tokio::test]
async fn zero_poll_interval_is_refused() {
    let f = Fixture::new().await;
    let mut config = f.config();
    config.poll_interval = Duration::ZERO;
    assert!(matches!(ConfClient::start(config), Err(ConfClientError::InvalidSettings(_))));
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        ConfClientConfig::new(anchor(vec!["http://registry.example/conf".into()], &[&key()]), dir.path());
    assert!(matches!(ConfClient::start(config), Err(ConfClientError::NoRuntime)));
}
