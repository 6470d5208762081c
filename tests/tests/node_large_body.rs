//! A 1 GiB body streamed through two nodes: both spool it to disk (never hold it in memory),
//! hash it on the way, sign and log its digest, and the backend receives it intact. The peak
//! resident memory of this process (both nodes, the backend and the client) is reported. It
//! runs alone in a process of its own (the test binary again, with only this test), so the
//! figure is not mixed with the other tests that share the binary.

#![allow(clippy::print_stderr)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lienthong_testkit::names::*;
use lienthong_testkit::{Topology, within};
use sha2::{Digest, Sha256};

const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 1024;

/// Peak resident set size of this process so far (Linux), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Set in the process that runs the test alone.
const ALONE_ENV: &str = "LIENTHONG_TEST_ALONE";

#[test]
fn a_1_gib_body_streams_through_with_flat_memory() {
    if std::env::var_os(ALONE_ENV).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        return runtime.expect("a runtime").block_on(streams_1_gib());
    }
    // This test's name as the harness knows it: the module path without the crate.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let name = format!("{module}::a_1_gib_body_streams_through_with_flat_memory");
    let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE_ENV, "1")
        .output()
        .expect("run the test binary again");
    eprint!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the test failed alone: {}", out.status);
    let ran = String::from_utf8_lossy(&out.stdout).contains("1 passed");
    assert!(ran, "the test binary did not run `{name}`");
}

async fn streams_1_gib() {
    let t = Topology::standard().await;
    let before = peak_rss_kib();
    let chunk: Bytes = (0..CHUNK).map(|i| (i % 253) as u8).collect::<Vec<u8>>().into();
    let mut expected = Sha256::new();
    for _ in 0..CHUNKS {
        expected.update(&chunk);
    }
    let expected: [u8; 32] = expected.finalize().into();
    let c = chunk.clone();
    let frames = tokio_stream::iter((0..CHUNKS).map(move |_| Ok::<_, Infallible>(Frame::data(c.clone()))));
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("{}/r1/{CONG_DAN}/upload", t.nodes[0].url()))
        .header("x-road-client", CONG_DVC)
        .body(StreamBody::new(frames))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<StreamBody<_>>();
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(600), client.request(req))
        .await
        .expect("the upload finished in time")
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["body_len"], (CHUNK * CHUNKS) as u64);
    let seen = [&t.backends[0], &t.backends[1]].into_iter().filter_map(|b| b.last()).next().unwrap();
    assert_eq!(seen.body_sha256, expected, "the backend got the body intact");
    let records = t.records(0);
    assert!(records.iter().any(|r| r.body_length == (CHUNK * CHUNKS) as u64 && r.body_sha256 == expected));
    let after = peak_rss_kib();
    eprintln!(
        "1 GiB through consumer and provider nodes in {:.1} s; peak RSS of the whole test process {} MiB (before the upload {} MiB)",
        started.elapsed().as_secs_f64(),
        after / 1024,
        before / 1024
    );
    // Not a performance target: a guard that the body was never held in memory.
    assert!(after - before < 256 * 1024, "peak RSS grew by {} MiB", (after - before) / 1024);
    within(t.shutdown()).await;
}
