//! Faults a running topology must survive (test matrix, faults 2 to 5): the registry down, the
//! provider's backend down, slow or resetting, one of the provider's nodes down or in
//! maintenance, and a log that cannot be written. Each case checks what the client sees (status,
//! `X-Road-Error`, JSON `type`, a `detail` UUID), whether the backend was reached, and what each
//! node logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use lienthong_confclient::ConfClientError;
use lienthong_msglog::LogStore as _;
use lienthong_proto::msglog::v1::{Direction, LogRecord, Role};
use lienthong_testkit::names::*;
use lienthong_testkit::tmpfs::Tmpfs;
use lienthong_testkit::{Mode, Topology, node_id, within};

use crate::common;
use common::node::{get, hits, is_uuid, of, ok, readyz, refusal_for, refused, until, until_ready};

/// Both sides logged a failure the provider raised: each has the request and a refusal in the
/// response direction carrying `code` (the consumer's with the `detail` the client saw).
fn both_sides_logged(t: &Topology, provider: usize, message_id: &str, code: &str, detail: &str) {
    let consumer = t.records(0);
    let c = of(&consumer, message_id);
    assert_eq!(c.len(), 2, "consumer: request and refusal: {c:#?}");
    assert_eq!((c[0].direction, c[0].role), (Direction::Request as i32, Role::Consumer as i32));
    assert!(c[0].fault.is_none());
    let fault = c[1].fault.as_ref().expect("consumer refusal record");
    assert_eq!(
        (c[1].direction, fault.code.as_str(), fault.detail.as_str()),
        (Direction::Response as i32, code, detail)
    );
    assert_eq!(c[1].status, 500);
    let records = t.records(provider);
    let p = of(&records, message_id);
    assert_eq!(p.len(), 2, "provider: request and refusal: {p:#?}");
    assert_eq!((p[0].direction, p[0].role), (Direction::Request as i32, Role::Provider as i32));
    assert!(p[0].fault.is_none());
    let fault = p[1].fault.as_ref().expect("provider refusal record");
    assert_eq!((p[1].direction, fault.code.as_str()), (Direction::Response as i32, code));
    assert!(is_uuid(&fault.detail), "{fault:?}");
    assert_eq!(p[1].status, 500);
}

/// Fault 2: with the registry unreachable, nodes serve from the cached configuration until it
/// expires, then refuse with `global_conf_outdated` before anything is sent; once the registry
/// is back, the next poll restores traffic without restarting any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_serves_cached_conf_until_expiry_then_recovers() {
    let mut t = Topology::standard().await;
    // The consumer polls on its own, as in production; the providers only when told (sync).
    t.restart_polling(0, Duration::from_millis(100)).await;
    t.stop_registry().await;
    let polled = within(t.nodes[0].handle().conf_client().refresh_now()).await;
    assert!(matches!(polled, Err(ConfClientError::Unreachable { .. })), "{polled:?}");

    // Half the validity (600 s) later the cached configuration still carries traffic.
    t.clock.advance(300);
    ok(&t.call(0, get("reg-down-cached", None)).await);
    assert_eq!(readyz(&t, 0).await.0, 200);

    // Past its expiry the consumer refuses, logs the refusal, and sends nothing.
    t.clock.advance(310);
    let (before, consumer_before) = (hits(&t), t.records(0).len());
    let providers_before = (t.records(1).len(), t.records(2).len());
    let resp = t.call(0, get("reg-down-expired", None)).await;
    let detail = refused(&resp, "server.clientproxy.global_conf_outdated", 500);
    assert_eq!(hits(&t), before, "nothing reached a backend");
    assert_eq!((t.records(1).len(), t.records(2).len()), providers_before, "nothing reached a provider");
    let consumer = t.records(0);
    assert_eq!(consumer.len(), consumer_before + 1, "only the refusal was logged");
    let rec = refusal_for(&consumer, &detail);
    assert_eq!(rec.fault.as_ref().unwrap().code, "server.clientproxy.global_conf_outdated");
    assert_eq!((rec.direction, rec.status), (Direction::Request as i32, 500));
    let (status, body) = readyz(&t, 0).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("expired"), "{body}");

    // The management API is down too.
    assert!(within(t.registry.admin.list_members()).await.is_err());

    // The registry returns on the same addresses and re-signs. The consumer picks the fresh
    // configuration up by itself and sends again, but providers still on the expired one
    // refuse on their side, before their backends.
    t.restart_registry().await;
    within(until(|| t.nodes[0].handle().conf().is_some_and(|c| c.conf.expires_at > t.clock.now()))).await;
    within(t.nodes[0].handle().wait_for_conf(t.registry.version())).await;
    assert_eq!(readyz(&t, 0).await.0, 200);
    let before = hits(&t);
    let resp = t.call(0, get("reg-back-provider-stale", None)).await;
    let detail = refused(&resp, "server.serverproxy.global_conf_outdated", 500);
    assert_eq!(hits(&t), before, "nothing reached a backend");
    let consumer = t.records(0);
    let c = of(&consumer, "reg-back-provider-stale");
    assert_eq!(c.len(), 2, "request and relayed refusal: {c:#?}");
    assert_eq!(
        c[1].fault.as_ref().map(|f| (f.code.as_str(), f.detail.as_str())),
        Some(("server.serverproxy.global_conf_outdated", detail.as_str()))
    );
    let provider: Vec<LogRecord> = [1, 2].into_iter().flat_map(|i| t.records(i)).collect();
    let p = of(&provider, "reg-back-provider-stale");
    assert_eq!(p.len(), 1, "the provider logged only its refusal: {p:#?}");
    assert_eq!(p[0].direction, Direction::Request as i32);
    assert_eq!(p[0].fault.as_ref().unwrap().code, "server.serverproxy.global_conf_outdated");

    // Once the providers polled too, traffic and the management API are back; no node was
    // restarted during the outage.
    t.sync().await;
    assert!(within(t.registry.admin.list_members()).await.is_ok());
    ok(&t.call(0, get("reg-back", None)).await);
    assert_eq!(readyz(&t, 0).await.0, 200);
    within(t.shutdown()).await;
}

/// Fault 3: the provider's backend down, resetting, slow beyond the service timeout, or
/// answering an error status. Node 1's backend (backend 0) is stopped; the other cases are
/// pinned to node 2 (backend 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_reset_slow_and_error_statuses() {
    let mut t = Topology::standard_with("[limits]\nservice_timeout_secs = 1\n").await;
    let (node1, node2) = (Some(NODE_BCA_1), Some(NODE_BCA_2));

    // Down: nothing listens on backend 0's port any more (no call has reached it yet, so no
    // pooled connection outlives it).
    let down = t.backends.remove(0);
    let addr = down.addr;
    drop(down);
    within(async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let live = 0; // backend-1, behind node 2, from here on
    let resp = t.call(0, get("backend-down", node1)).await;
    let detail = refused(&resp, "server.serverproxy.service_failed", 500);
    both_sides_logged(&t, 1, "backend-down", "server.serverproxy.service_failed", &detail);

    // Resets: the connection closes without an answer.
    t.backends[live].set_mode(Mode::Reset);
    let resp = t.call(0, get("backend-reset", node2)).await;
    let detail = refused(&resp, "server.serverproxy.service_failed", 500);
    both_sides_logged(&t, 2, "backend-reset", "server.serverproxy.service_failed", &detail);

    // Slower than the service timeout (1 s): network_error once the timeout passes, not when
    // the backend would have answered.
    t.backends[live].set_mode(Mode::Slow(Duration::from_secs(5)));
    let started = Instant::now();
    let resp = t.call(0, get("backend-slow", node2)).await;
    let took = started.elapsed();
    let detail = refused(&resp, "server.serverproxy.network_error", 500);
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "answered after {took:?}");
    both_sides_logged(&t, 2, "backend-slow", "server.serverproxy.network_error", &detail);

    // The backend's own errors pass through unchanged, without X-Road-Error, logged as
    // ordinary responses on both sides.
    for status in [500u16, 404] {
        t.backends[live].set_mode(Mode::Status(status));
        let id = format!("backend-status-{status}");
        let before = t.backends[live].hits();
        let resp = t.call(0, get(&id, node2)).await;
        assert_eq!(resp.status(), status);
        assert!(resp.headers().get("x-road-error").is_none(), "{:?}", resp.headers());
        assert_eq!(resp.headers()["x-backend"], "backend-1");
        assert_eq!(resp.headers()["x-road-service"], CONG_DAN);
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v, serde_json::json!({ "error": "backend says no", "status": status }));
        assert_eq!(t.backends[live].hits(), before + 1);
        for (node, role) in [(0, Role::Consumer), (2, Role::Provider)] {
            let records = t.records(node);
            let r = of(&records, &id);
            assert_eq!(r.len(), 2, "{r:#?}");
            assert!(r.iter().all(|r| r.fault.is_none() && r.role == role as i32));
            assert_eq!((r[1].direction, r[1].status), (Direction::Response as i32, u32::from(status)));
        }
    }
    within(t.shutdown()).await;
}

/// Fault 4: one of the provider's two nodes in maintenance or stopped: calls go to the other
/// node; a call pinned to the missing node fails with a clear error and reaches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_node_in_maintenance_or_down_fails_over() {
    let mut t = Topology::standard().await;
    let bca1 = node_id(NODE_BCA_1);

    // Maintenance: the consumer skips the node (every call lands on backend 1); pinning it is
    // refused by the consumer.
    within(t.registry.admin.set_maintenance(&bca1, true)).await.expect("maintenance on");
    t.sync().await;
    let hits0 = t.backends[0].hits();
    for n in 0..4 {
        let resp = t.call(0, get(&format!("maintenance-{n}"), None)).await;
        ok(&resp);
        assert_eq!(resp.headers()["x-backend"], "backend-1");
    }
    let resp = t.call(0, get("maintenance-pinned", Some(NODE_BCA_1))).await;
    let detail = refused(&resp, "server.clientproxy.maintenance_mode", 500);
    assert_eq!(
        refusal_for(&t.records(0), &detail).fault.as_ref().unwrap().code,
        "server.clientproxy.maintenance_mode"
    );
    assert_eq!(t.backends[0].hits(), hits0, "the node in maintenance served nothing");
    assert!(of(&t.records(1), "maintenance-pinned").is_empty());
    within(t.registry.admin.set_maintenance(&bca1, false)).await.expect("maintenance off");
    t.sync().await;

    // Down: the consumer fails over before anything was delivered (the rotation puts node 1
    // first for every other call), each call logged once on each side.
    t.stop(1).await;
    let hits0 = t.backends[0].hits();
    for n in 0..4 {
        let id = format!("node-down-{n}");
        let resp = t.call(0, get(&id, None)).await;
        ok(&resp);
        assert_eq!(resp.headers()["x-backend"], "backend-1");
        assert_eq!(of(&t.records(0), &id).len(), 2);
        assert_eq!(of(&t.records(2), &id).len(), 2);
    }
    assert_eq!(t.backends[0].hits(), hits0);

    // Pinned to the stopped node: no other node may serve it.
    let before = t.backends[1].hits();
    let resp = t.call(0, get("node-down-pinned", Some(NODE_BCA_1))).await;
    let detail = refused(&resp, "server.clientproxy.network_error", 500);
    assert_eq!(t.backends[1].hits(), before);
    assert!(of(&t.records(2), "node-down-pinned").is_empty());
    let consumer = t.records(0);
    let c = of(&consumer, "node-down-pinned");
    assert_eq!(c.len(), 2, "request and refusal: {c:#?}");
    assert_eq!(c[0].direction, Direction::Request as i32);
    let fault = c[1].fault.as_ref().expect("refusal");
    assert_eq!(
        (c[1].direction, fault.code.as_str(), fault.detail.as_str()),
        (Direction::Response as i32, "server.clientproxy.network_error", detail.as_str())
    );
    within(t.shutdown()).await;
}

/// Fault 5: a log that cannot be written. The node refuses with `logging_failed` instead of
/// forwarding unlogged, `/readyz` says so, and both recover once writes succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_write_failure_refuses_then_recovers() {
    let mut t = Topology::standard().await;
    let consumer_fault = t.restart_with_log_fault(0).await;
    let provider_fault = t.restart_with_log_fault(1).await;

    // The consumer cannot log: nothing is sent, and not even the refusal can be logged.
    consumer_fault.set(true);
    let (before, logged) = (hits(&t), [t.records(0).len(), t.records(1).len(), t.records(2).len()]);
    let resp = t.call(0, get("consumer-log-full", None)).await;
    refused(&resp, "server.clientproxy.logging_failed", 500);
    assert_eq!(hits(&t), before, "nothing reached a backend");
    assert_eq!([t.records(0).len(), t.records(1).len(), t.records(2).len()], logged);
    let (status, body) = readyz(&t, 0).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("write failed"), "{body}");
    assert!(body.contains("not ready: the message log cannot write"), "{body}");
    consumer_fault.set(false);
    // It recovers by itself: the log repairs its store with back-off, without traffic.
    within(until_ready(&t, 0)).await;
    ok(&t.call(0, get("consumer-log-back", None)).await);
    assert_eq!(of(&t.records(0), "consumer-log-back").len(), 2);
    assert_eq!(readyz(&t, 0).await.0, 200);

    // The consumer's log fails while the backend works on the request: the response, already
    // served, is not released unlogged; the request record stays (the client saw an error).
    t.backends[1].set_mode(Mode::Slow(Duration::from_millis(500)));
    let served = t.backends[1].hits();
    let (resp, ()) = tokio::join!(t.call(0, get("consumer-log-full-mid", Some(NODE_BCA_2))), async {
        within(until(|| t.backends[1].hits() > served)).await;
        consumer_fault.set(true);
    });
    refused(&resp, "server.clientproxy.logging_failed", 500);
    let c = of(&t.records(0), "consumer-log-full-mid").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(c.len(), 1, "only the request: {c:#?}");
    assert_eq!(c[0].direction, Direction::Request as i32);
    assert_eq!(of(&t.records(2), "consumer-log-full-mid").len(), 2, "the provider served and logged it");
    consumer_fault.set(false);
    t.backends[1].set_mode(Mode::Echo);
    within(until_ready(&t, 0)).await;

    // The provider cannot log: its backend is not called; the consumer logs the relayed
    // refusal under the detail the client saw.
    provider_fault.set(true);
    let (before, provider_logged) = (t.backends[0].hits(), t.records(1).len());
    let resp = t.call(0, get("provider-log-full", Some(NODE_BCA_1))).await;
    let detail = refused(&resp, "server.serverproxy.logging_failed", 500);
    assert_eq!(t.backends[0].hits(), before, "the provider's backend was not called");
    assert_eq!(t.records(1).len(), provider_logged);
    let consumer = t.records(0);
    let c = of(&consumer, "provider-log-full");
    assert_eq!(c.len(), 2, "request and refusal: {c:#?}");
    let fault = c[1].fault.as_ref().expect("refusal");
    assert_eq!(
        (c[1].direction, fault.code.as_str(), fault.detail.as_str()),
        (Direction::Response as i32, "server.serverproxy.logging_failed", detail.as_str())
    );
    let (status, body) = readyz(&t, 1).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot write"), "{body}");
    // Liveness stays true: a restart would not free the disk.
    let live = t.call(1, Request::get("/healthz").body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(live.status(), 200);
    provider_fault.set(false);
    within(until_ready(&t, 1)).await;
    ok(&t.call(0, get("provider-log-back", Some(NODE_BCA_1))).await);
    assert_eq!(t.backends[0].hits(), before + 1);
    assert_eq!(of(&t.records(1), "provider-log-back").len(), 2);
    assert_eq!(readyz(&t, 1).await.0, 200);

    // The provider's log fails while its backend works: the backend's answer is not sent on
    // unlogged; the provider keeps the request record, the consumer the relayed refusal.
    t.backends[0].set_mode(Mode::Slow(Duration::from_millis(500)));
    let served = t.backends[0].hits();
    let (resp, ()) = tokio::join!(t.call(0, get("provider-log-full-mid", Some(NODE_BCA_1))), async {
        within(until(|| t.backends[0].hits() > served)).await;
        provider_fault.set(true);
    });
    let detail = refused(&resp, "server.serverproxy.logging_failed", 500);
    let p = of(&t.records(1), "provider-log-full-mid").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(p.len(), 1, "only the request: {p:#?}");
    assert_eq!(p[0].direction, Direction::Request as i32);
    let consumer = t.records(0);
    assert_eq!(refusal_for(&consumer, &detail).message_id, "provider-log-full-mid");
    provider_fault.set(false);
    t.backends[0].set_mode(Mode::Echo);
    within(until_ready(&t, 1)).await;
    ok(&t.call(0, get("provider-log-back-2", Some(NODE_BCA_1))).await);
    within(t.shutdown()).await;
}

/// Copies a directory tree (the node's log into its new file system).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Restarts node `i` with its log directory on a small tmpfs of its own (what it held is copied
/// over). `None` where no tmpfs can be mounted (not root, and not required).
async fn log_on_tmpfs(t: &mut Topology, i: usize, bytes: u64) -> Option<Tmpfs> {
    let mut mounted = None;
    let mut possible = true;
    t.restart_after(i, |dir| {
        let (log, moved) = (dir.join("log"), dir.join("log.before-tmpfs"));
        std::fs::rename(&log, &moved).unwrap();
        mounted = Tmpfs::mount_at(&log, bytes);
        match &mounted {
            Some(_) => copy_tree(&moved, &log),
            None => {
                std::fs::remove_dir(&log).ok();
                std::fs::rename(&moved, &log).unwrap();
                possible = false;
            }
        }
    })
    .await;
    mounted.filter(|_| possible)
}

/// Sends calls until the consumer refuses with `logging_failed` (bounded); returns the message
/// ids it acknowledged with a success.
async fn call_until_log_full(t: &Topology, tag: &str) -> Vec<String> {
    let mut acked = Vec::new();
    for n in 0..2_000 {
        let id = format!("{tag}-{n}");
        let resp = t.call(0, get(&id, None)).await;
        if resp.status() == 200 {
            acked.push(id);
            continue;
        }
        refused(&resp, "server.clientproxy.logging_failed", 500);
        return acked;
    }
    panic!("the log's disk never filled");
}

/// Issue #14, items 1 and 3, on a real full disk: the consumer node's log fills its file system.
/// It refuses with `logging_failed` (nothing forwarded unlogged), says so on `/readyz` while
/// `/healthz` stays alive, recovers by itself once space returns (no traffic, no restart), and
/// restarts after a graceful stop taken after the disk was full; every acknowledged exchange
/// stays logged, the log verifies, and the registry keeps witnessing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_log_refuses_recovers_by_itself_and_restarts() {
    let mut t = Topology::standard().await;
    let Some(fs) = log_on_tmpfs(&mut t, 0, 8 << 20).await else { return };
    ok(&t.call(0, get("before-full", None)).await);

    // The disk fills (a ballast takes all the room left): the next call is refused, unlogged
    // and unsent; readiness says why, liveness stays true.
    fs.fill("ballast");
    let before = hits(&t);
    let acked = call_until_log_full(&t, "full-1").await;
    assert_eq!(hits(&t), before + acked.len(), "nothing unlogged reached a backend");
    let (status, body) = readyz(&t, 0).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the message log cannot write"), "{body}");
    assert!(body.contains("No space left") || body.contains("os error 28"), "{body}");
    let live = t.call(0, Request::get("/healthz").body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(live.status(), 200, "a restart would not free the disk");

    // Space returns: ready again by itself, without a call or a restart.
    fs.free_ballast("ballast");
    within(until_ready(&t, 0)).await;
    ok(&t.call(0, get("after-free", None)).await);

    // Full again; space returns; then a graceful stop and a start (this used to fail: "the
    // index says acknowledged records end at ..."), with the registry witnessing throughout.
    fs.fill("ballast");
    let acked_2 = call_until_log_full(&t, "full-2").await;
    fs.free_ballast("ballast");
    t.restart(0).await;
    ok(&t.call(0, get("after-restart", None)).await);
    assert_eq!(readyz(&t, 0).await.0, 200);

    let node = node_id(NODE_VPCP);
    let registry = t.registry.running.registry.clone();
    let keys: Vec<_> = t.registry.anchor().signing_keys.iter().map(|k| (k.id, k.key.clone())).collect();
    let log_dir = t.node_dir(0).join("log");
    t.stop(0).await;
    let store = lienthong_msglog::SegmentStore::open_dir(&log_dir).expect("the log opens");
    let report =
        lienthong_msglog::verify_store(&store, Some(&keys), &mut |_, _| {}).expect("the log verifies");
    for id in ["before-full", "after-free", "after-restart"]
        .iter()
        .map(|s| s.to_string())
        .chain(acked)
        .chain(acked_2)
    {
        assert_eq!(store.by_exchange(&id).unwrap().len(), 2, "exchange {id}: request and response");
    }
    let witnessed = registry.witnessed(&node).unwrap().expect("witnessed");
    let witnessed = lienthong_msglog::checkpoint::Checkpoint::decode(&witnessed).unwrap();
    assert_eq!(witnessed.size, report.size, "the registry witnessed the whole log at the stop");
    drop(store);
    within(t.shutdown()).await;
    drop(fs);
}

/// A node whose log index is deleted (the documented repair) rebuilds it from its segments and
/// takes its witnessed checkpoint back from the registry, so the registry keeps witnessing its
/// log. It used to refuse it for good: "no consistency proof from the witnessed size N".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_log_index_keeps_being_witnessed() {
    let mut t = Topology::standard().await;
    for n in 0..5 {
        ok(&t.call(0, get(&format!("before-rebuild-{n}"), None)).await);
    }
    let node = node_id(NODE_VPCP);
    let registry = t.registry.running.registry.clone();
    let size_of = |c: lienthong_proto::msglog::v1::SignedCheckpoint| {
        lienthong_msglog::checkpoint::Checkpoint::decode(&c).unwrap().size
    };
    // Stopped gracefully (its last checkpoint witnessed); then records are logged past that
    // checkpoint (as a node killed before its next one leaves them), and the index is deleted.
    t.restart_after(0, |dir| {
        let log_dir = dir.join("log");
        let store = Arc::new(lienthong_msglog::SegmentStore::open_dir(&log_dir).unwrap());
        let log = lienthong_msglog::MessageLog::open(store, lienthong_msglog::LogConfig::default()).unwrap();
        // On a thread of its own: this closure runs inside the test's runtime.
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                for n in 0..3 {
                    let record =
                        LogRecord { message_id: format!("past-checkpoint-{n}"), ..Default::default() };
                    rt.block_on(log.append(&record)).unwrap();
                }
            });
        });
        log.close();
        std::fs::remove_file(log_dir.join(lienthong_msglog::segment::INDEX_FILE)).unwrap();
    })
    .await;
    let first = size_of(registry.witnessed(&node).unwrap().expect("witnessed at the stop"));
    assert!(first >= 10);
    for n in 0..5 {
        ok(&t.call(0, get(&format!("after-rebuild-{n}"), None)).await);
    }
    let log_dir = t.node_dir(0).join("log");
    t.stop(0).await;
    let store = lienthong_msglog::SegmentStore::open_dir(&log_dir).unwrap();
    let size = store.size().unwrap();
    assert!(size > first + 3);
    assert_eq!(
        size_of(registry.witnessed(&node).unwrap().unwrap()),
        size,
        "the registry witnessed the grown log"
    );
    drop(store);
    within(t.shutdown()).await;
}

/// A node whose log lost acknowledged records (its last segment cut short, its index rebuilt)
/// cannot be witnessed any more: the registry refuses the shorter history. The node keeps serving
/// (exchanges are still logged) and `/readyz` tells the operator what happened and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_lost_witnessed_records_says_what_to_do() {
    let mut t = Topology::standard().await;
    for n in 0..6 {
        ok(&t.call(0, get(&format!("before-loss-{n}"), None)).await);
    }
    let (status, body) = readyz(&t, 0).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("witness: "), "{body}");
    // Stopped gracefully (its whole log witnessed), then the newest records are lost.
    t.restart_after(0, |dir| {
        let log = dir.join("log");
        std::fs::remove_file(log.join(lienthong_msglog::segment::INDEX_FILE)).unwrap();
        let segments = log.join(lienthong_msglog::segment::SEGMENTS_DIR);
        let newest = std::fs::read_dir(&segments).unwrap().map(|e| e.unwrap().path()).max().unwrap();
        let len = std::fs::metadata(&newest).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&newest).unwrap();
        file.set_len(len / 2).unwrap();
    })
    .await;
    within(async {
        loop {
            let (_, body) = readyz(&t, 0).await;
            if body.contains("the last round failed") {
                assert!(body.contains("acknowledged records are missing. Restore"), "{body}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(readyz(&t, 0).await.0, 200, "exchanges go on: they are still logged");
    ok(&t.call(0, get("after-loss", None)).await);
    within(t.shutdown()).await;
}
