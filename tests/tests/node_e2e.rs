//! The node end to end: an information system calls another agency's service through its own
//! node, over the X-Road REST r1 protocol, in the standard in-process topology.

use lienthong_testkit::names::*;
use lienthong_testkit::{Topology, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_travels_signed_and_logged_on_both_sides() {
    let t = Topology::standard().await;
    let path = format!("/r1/{CONG_DAN}/cong-dan/001090012345?fields=ho_ten");
    let resp = t.call(0, Topology::r1("GET", &path, "")).await;
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    assert_eq!(resp.status(), 200, "{body} {:?}", resp.headers());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "/cong-dan/001090012345?fields=ho_ten");
    assert!(resp.headers().get("x-road-request-hash").is_some());
    assert_eq!(resp.headers()["x-road-service"], CONG_DAN);
    assert_eq!(resp.headers()["x-road-client"], CONG_DVC);
    let consumer = t.records(0);
    assert_eq!(consumer.len(), 2, "{consumer:#?}");
    within(t.shutdown()).await;
}
