//! Network and clock faults between nodes (issue #14's fault-injection suite): the consumer's
//! connections to a provider node cut in the middle of a body either way, delayed, or
//! black-holed (through the test kit's `FaultProxy`, registered as the provider node's
//! address), and clocks that jump forward and back on a node. Each case checks what the client
//! saw, that every acknowledged exchange is logged on both sides and no success is logged for a
//! call the client saw fail, that the node serves again by itself once the fault ends, what the
//! health endpoints said meanwhile, and at the end that every log verifies and is witnessed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use lienthong_proto::msglog::v1::Direction;
use lienthong_testkit::names::*;
use lienthong_testkit::{Fault, Topology, Toward, within};

use crate::common;
use common::node::{Ledger, get, of, readyz, refusal_for, stop_and_verify_logs};

/// How long the consumer waits for a provider node's answer in these tests.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);

fn limits() -> String {
    format!("[limits]\nexchange_timeout_secs = {}\n", EXCHANGE_TIMEOUT.as_secs())
}

/// A POST of `body` to the echo path of the granted service, pinned to `pin`.
fn post(message_id: &str, pin: &str, body: &Bytes) -> Request<Full<Bytes>> {
    let mut req = Topology::r1("POST", &format!("/r1/{CONG_DAN}/echo"), body.clone());
    req.headers_mut().insert("x-road-id", message_id.parse().unwrap());
    req.headers_mut().insert("x-road-security-server", pin.parse().unwrap());
    req
}

/// 512 KiB that no prefix of repeats: a truncated copy cannot pass for the whole.
fn payload() -> Bytes {
    (0..512u32 << 10).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<_>>().into()
}

/// A request cut in the middle of its body on the way to the provider node, and a response cut
/// in the middle of its body on the way back: the client gets `network_error`, never a
/// truncated 200; the consumer logs the request and the refusal and releases nothing; the
/// backend never sees a partial request; the next call succeeds by itself on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_connection_cut_mid_body_fails_clearly_and_the_next_call_succeeds() {
    let mut t = Topology::standard_proxied(&limits()).await;
    let mut ledger = Ledger::default();
    let body = payload();
    // mTLS goes through the proxies unchanged.
    for (id, node) in [("cut-warm-1", NODE_BCA_1), ("cut-warm-2", NODE_BCA_2)] {
        let resp = t.call(0, post(id, node, &body)).await;
        ledger.acked(&resp, id);
        assert_eq!(resp.body(), &body);
    }

    // The request: 64 KiB of the 512 KiB body reach node 1, then the connection is cut.
    t.proxy(1).set(Fault::Cut { toward: Toward::Server, after: 64 << 10 });
    let (hits, provider_before) = (t.backends[0].hits(), t.records(1).len());
    let started = Instant::now();
    let resp = t.call(0, post("cut-request", NODE_BCA_1, &body)).await;
    let detail = ledger.failed(&resp, "cut-request", "server.clientproxy.network_error");
    assert!(started.elapsed() < EXCHANGE_TIMEOUT, "failed at once: {:?}", started.elapsed());
    assert_eq!(t.proxy(1).cuts(), 1);
    assert_eq!(t.backends[0].hits(), hits, "the backend never got the partial request");
    let consumer = t.records(0);
    let c = of(&consumer, "cut-request");
    assert_eq!(c.len(), 2, "request and refusal: {c:#?}");
    assert_eq!(c[0].direction, Direction::Request as i32);
    assert_eq!(refusal_for(&consumer, &detail).direction, Direction::Response as i32);
    // The provider logged nothing for it, or only its own failure to read the body.
    let provider = t.records(1);
    assert!(provider.len() - provider_before <= 1, "{:#?}", &provider[provider_before..]);
    assert!(of(&provider, "cut-request").iter().all(|r| r.fault.is_some()));
    t.proxy(1).set(Fault::Pass);
    let resp = t.call(0, post("cut-request-after", NODE_BCA_1, &body)).await;
    ledger.acked(&resp, "cut-request-after");
    assert_eq!(resp.body(), &body);

    // The response: node 2 serves and logs it, but only 64 KiB of it reach the consumer.
    t.proxy(2).set(Fault::Cut { toward: Toward::Client, after: 64 << 10 });
    let hits = t.backends[1].hits();
    let resp = t.call(0, post("cut-response", NODE_BCA_2, &body)).await;
    let detail = ledger.failed(&resp, "cut-response", "server.clientproxy.network_error");
    assert_eq!(t.proxy(2).cuts(), 1);
    assert_eq!(t.backends[1].hits(), hits + 1);
    let consumer = t.records(0);
    assert_eq!(of(&consumer, "cut-response").len(), 2, "request and refusal only");
    assert_eq!(refusal_for(&consumer, &detail).direction, Direction::Response as i32);
    // The provider answered in full as far as it knows; what reached the client is the
    // consumer's record.
    assert!(of(&t.records(2), "cut-response").iter().all(|r| r.fault.is_none()));
    t.proxy(2).set(Fault::Pass);
    let resp = t.call(0, post("cut-response-after", NODE_BCA_2, &body)).await;
    ledger.acked(&resp, "cut-response-after");
    assert_eq!(resp.body(), &body);

    assert_eq!(readyz(&t, 0).await.0, 200);
    ledger.check(&t);
    stop_and_verify_logs(&mut t).await;
    within(t.shutdown()).await;
}

/// A slow network: calls still succeed, slower, within the exchange timeout; slower than the
/// timeout, the client gets `network_error` when the timeout passes, and the next call
/// succeeds by itself once the network is fast again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_peer_connection_is_slower_then_times_out_then_recovers() {
    let mut t = Topology::standard_proxied(&limits()).await;
    let mut ledger = Ledger::default();
    ledger.acked(&t.call(0, get("delay-warm", Some(NODE_BCA_1))).await, "delay-warm");

    let delay = Duration::from_millis(100);
    t.proxy(1).set(Fault::Delay(delay));
    let started = Instant::now();
    ledger.acked(&t.call(0, get("delayed", Some(NODE_BCA_1))).await, "delayed");
    let took = started.elapsed();
    assert!(took >= 2 * delay && took < EXCHANGE_TIMEOUT, "took {took:?}");

    let delay = EXCHANGE_TIMEOUT + Duration::from_millis(300);
    t.proxy(1).set(Fault::Delay(delay));
    let started = Instant::now();
    let resp = t.call(0, get("delayed-too-long", Some(NODE_BCA_1))).await;
    let took = started.elapsed();
    ledger.failed(&resp, "delayed-too-long", "server.clientproxy.network_error");
    assert!(took >= EXCHANGE_TIMEOUT && took < delay, "answered after {took:?}");

    // The network is fast again once the chunks held back are through (each waits out its
    // delay; on a loaded machine more than one may be queued on the pooled connection): node 1
    // serves again by itself within a bounded time, every failed call meanwhile a clear error.
    t.proxy(1).set(Fault::Pass);
    tokio::time::sleep(delay.saturating_sub(started.elapsed())).await;
    let deadline = Instant::now() + 3 * delay;
    let mut served = false;
    for n in 0..20 {
        let id = format!("delay-over-{n}");
        let resp = t.call(0, get(&id, Some(NODE_BCA_1))).await;
        if resp.status() == 200 {
            ledger.acked(&resp, &id);
            served = true;
            break;
        }
        ledger.failed(&resp, &id, "server.clientproxy.network_error");
        assert!(Instant::now() < deadline, "node 1 did not serve again within {:?}", 3 * delay);
    }
    assert!(served, "node 1 did not serve again");
    assert_eq!(readyz(&t, 0).await.0, 200);
    ledger.check(&t);
    stop_and_verify_logs(&mut t).await;
    within(t.shutdown()).await;
}

/// Provider node 1 black-holed (connections accepted, nothing ever answered) while node 2 is
/// reachable: a connection whose TLS handshake never completes delivered nothing, so every
/// call fails over to node 2 within the exchange timeout; a call pinned to node 1 fails with
/// `network_error` in time; the consumer stays ready (the peer is sick, not the node); and
/// once the black hole ends, node 1 serves again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_provider_node_is_failed_over_in_time_and_serves_again_after() {
    let mut t = Topology::standard_proxied(&limits()).await;
    let mut ledger = Ledger::default();
    t.proxy(1).set(Fault::BlackHole);

    // The rotation puts node 1 first for every other call.
    for n in 0..4 {
        let id = format!("black-hole-{n}");
        let started = Instant::now();
        let resp = t.call(0, get(&id, None)).await;
        let took = started.elapsed();
        ledger.acked(&resp, &id);
        assert_eq!(resp.headers()["x-backend"], "backend-1", "{id}");
        assert!(took < 2 * EXCHANGE_TIMEOUT, "{id} took {took:?}");
    }
    assert!(t.proxy(1).accepted() >= 1, "node 1 was tried");
    let (status, body) = readyz(&t, 0).await;
    assert_eq!(status, 200, "{body}");

    let started = Instant::now();
    let resp = t.call(0, get("black-hole-pinned", Some(NODE_BCA_1))).await;
    let took = started.elapsed();
    ledger.failed(&resp, "black-hole-pinned", "server.clientproxy.network_error");
    assert!(took < 2 * EXCHANGE_TIMEOUT, "took {took:?}");
    assert!(of(&t.records(1), "black-hole-pinned").is_empty());

    // The black hole ends. A handshake stuck in it is given up within the exchange timeout,
    // after which node 1 is connected to again.
    t.proxy(1).set(Fault::Pass);
    let started = Instant::now();
    let mut n = 0;
    loop {
        let id = format!("black-hole-over-{n}");
        let resp = t.call(0, get(&id, Some(NODE_BCA_1))).await;
        if resp.status() == 200 {
            ledger.acked(&resp, &id);
            break;
        }
        ledger.failed(&resp, &id, "server.clientproxy.network_error");
        n += 1;
        // Not the peer client's own handshake timeout (10 s): nothing waits on a stuck
        // connect longer than an exchange.
        let waited = started.elapsed();
        assert!(waited < EXCHANGE_TIMEOUT + Duration::from_millis(500), "{n} calls failed in {waited:?}");
    }
    assert_eq!(readyz(&t, 0).await.0, 200);

    // Refused or reset at once (open connections too): failed over without waiting.
    for fault in [Fault::Refuse, Fault::Reset] {
        t.proxy(1).set(fault);
        for n in 0..2 {
            let id = format!("{fault:?}-{n}");
            let started = Instant::now();
            let resp = t.call(0, get(&id, None)).await;
            ledger.acked(&resp, &id);
            assert_eq!(resp.headers()["x-backend"], "backend-1", "{id}");
            assert!(started.elapsed() < EXCHANGE_TIMEOUT, "{id} took {:?}", started.elapsed());
        }
        t.proxy(1).set(Fault::Pass);
        let id = format!("{fault:?}-over");
        ledger.acked(&t.call(0, get(&id, Some(NODE_BCA_1))).await, &id);
    }
    ledger.check(&t);
    stop_and_verify_logs(&mut t).await;
    within(t.shutdown()).await;
}

/// Moves node `i`'s clock to `skew_secs` from the topology's.
fn set_clock(t: &Topology, i: usize, skew_secs: i64) {
    t.nodes[i].skew.store(skew_secs, std::sync::atomic::Ordering::SeqCst);
}

/// Clocks that jump. Within the allowed skew (60 s) calls work; beyond it the provider node
/// refuses with `clock_skew`, whichever node's clock moved; past the global configuration's
/// expiry (600 s) the node refuses with `global_conf_outdated` and says so on `/readyz`. Back
/// on time, calls work again. A node that had a checkpoint witnessed while its clock was ahead
/// keeps being witnessed after its clock went back (the registry refuses a checkpoint older
/// than the one it witnessed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jumps_forward_and_back_on_a_node() {
    let mut t = Topology::standard().await;
    let mut ledger = Ledger::default();
    let call = |id: &str, pin: &str| t.call(0, get(id, Some(pin)));
    ledger.acked(&call("clock-before", NODE_BCA_1).await, "clock-before");

    for (node, pin) in [(0, NODE_BCA_1), (1, NODE_BCA_1)] {
        // Within the skew.
        set_clock(&t, node, 30);
        let id = format!("clock-{node}-ahead-30");
        ledger.acked(&call(&id, pin).await, &id);
        set_clock(&t, node, -30);
        let id = format!("clock-{node}-behind-30");
        ledger.acked(&call(&id, pin).await, &id);

        // Beyond it, either way.
        for skew in [300, -300] {
            set_clock(&t, node, skew);
            let id = format!("clock-{node}-off-{skew}");
            let hits = t.backends[0].hits();
            let resp = call(&id, pin).await;
            let detail = ledger.failed(&resp, &id, "server.serverproxy.clock_skew");
            assert_eq!(t.backends[0].hits(), hits, "nothing reached the backend");
            let refusal = refusal_for(&t.records(1), &detail).clone();
            assert_eq!(refusal.message_id, id);
            assert_eq!(readyz(&t, node).await.0, 200, "a skewed clock is the message's problem");
        }
        set_clock(&t, node, 0);
        let id = format!("clock-{node}-back");
        ledger.acked(&call(&id, pin).await, &id);
    }

    // An hour ahead: the configuration has expired as far as the node knows.
    for (node, code) in
        [(0, "server.clientproxy.global_conf_outdated"), (1, "server.serverproxy.global_conf_outdated")]
    {
        set_clock(&t, node, 3600);
        let id = format!("clock-{node}-hour-ahead");
        ledger.failed(&call(&id, NODE_BCA_1).await, &id, code);
        let (status, body) = readyz(&t, node).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("expired"), "{body}");
        // A poll meanwhile finds the registry's configuration expired too, and keeps nothing
        // of it that outlasts the jump.
        t.registry.running.registry.publish().expect("publish");
        let polled = within(t.nodes[node].handle().conf_client().refresh_now()).await;
        assert!(polled.is_err(), "{polled:?}");
        set_clock(&t, node, 0);
        assert_eq!(readyz(&t, node).await.0, 200);
        let id = format!("clock-{node}-hour-back");
        ledger.acked(&call(&id, NODE_BCA_1).await, &id);
    }

    // An hour behind: the node's requests are too old for the provider, and the registry's
    // configuration is from its future; back on time, both are fine again.
    set_clock(&t, 0, -3600);
    ledger.failed(
        &call("clock-hour-behind", NODE_BCA_1).await,
        "clock-hour-behind",
        "server.serverproxy.clock_skew",
    );
    t.registry.running.registry.publish().expect("publish");
    let polled = within(t.nodes[0].handle().conf_client().refresh_now()).await;
    assert!(polled.is_err(), "{polled:?}");
    set_clock(&t, 0, 0);
    within(t.nodes[0].handle().conf_client().refresh_now()).await.expect("the configuration is taken again");
    ledger.acked(&call("clock-hour-behind-back", NODE_BCA_1).await, "clock-hour-behind-back");

    // Checkpoints witnessed while a clock was ahead (the final one of a graceful stop), then
    // more traffic and checkpoints after the clock went back.
    for node in [0, 1] {
        set_clock(&t, node, 300);
        t.restart(node).await;
        set_clock(&t, node, 0);
    }
    let id = "clock-after-witness";
    let resp = t.call(0, get(id, Some(NODE_BCA_1))).await;
    ledger.acked(&resp, id);
    ledger.check(&t);
    // Every node's final checkpoint, made on time, must be witnessed.
    stop_and_verify_logs(&mut t).await;
    within(t.shutdown()).await;
}
