//! Federation end to end: the national instance `VN` (the standard topology: the Government
//! Office's node and two Ministry of Public Security nodes) and a provincial instance `VN-NA`
//! (Nghệ An's LGSP node hosting two departments), each with its own registry. The registries
//! trust each other's configuration-signing keys; VN grants one Nghệ An department the
//! population service. The granted department's call crosses instances, pinned and signed as
//! within one; the other department's call is denied by the provider; `listClients` names the
//! partner's members; both instances' audits see the exchange, each judged where it belongs.

use std::time::Duration;

use base64::Engine as _;

use lienthong_testkit::audit::{AUDIT_KEY, AuditFixture};
use lienthong_testkit::names::*;
use lienthong_testkit::{NodeSpec, Topology, node_id, service, subsystem, within};
use lienthong_types::ClientId;
use serde_json::Value;

const NA: &str = "VN-NA";
const UBND_NA: &str = "VN-NA/GOV/000.00.00.H40";
const SO_TU_PHAP: &str = "VN-NA/GOV/000.00.00.H40/so-tu-phap";
const SO_KHDT: &str = "VN-NA/GOV/000.00.00.H40/so-khdt";
const NODE_LGSP_NA: &str = "VN-NA/GOV/000.00.00.H40/lgsp-na";
const HO_TICH_NA: &str = "VN-NA/GOV/000.00.00.H40/so-tu-phap/ho-tich";

/// Nghệ An: one LGSP node hosting the Department of Justice (which provides a civil-status
/// service) and the Department of Planning and Investment.
async fn nghe_an() -> Topology {
    let specs = vec![NodeSpec {
        id: node_id(NODE_LGSP_NA),
        subsystems: vec![subsystem(SO_TU_PHAP), subsystem(SO_KHDT)],
        services: vec![(service(HO_TICH_NA), 0)],
        extra_toml: String::new(),
    }];
    let t = Topology::build_instance(
        NA,
        &[(UBND_NA, "Ủy ban nhân dân tỉnh Nghệ An", &["so-tu-phap", "so-khdt"])],
        specs,
        1,
    )
    .await;
    t.publish(&service(HO_TICH_NA), &node_id(NODE_LGSP_NA)).await;
    t.sync().await;
    t
}

/// Waits (bounded) until node `i` of `t` runs on a view that holds `instance`'s members.
async fn until_federated(t: &Topology, i: usize, instance: &str) {
    let mut rx = t.nodes[i].handle().conf_subscription();
    let federated = rx.wait_for(|c| {
        c.as_ref().is_some_and(|c| c.conf.members.keys().any(|m| m.instance.as_str() == instance))
    });
    within(async {
        let _ = tokio::time::timeout(Duration::from_secs(20), federated).await;
    })
    .await;
    let conf = t.nodes[i].handle().conf().expect("a configuration");
    assert!(
        conf.conf.members.keys().any(|m| m.instance.as_str() == instance),
        "node {} does not see {instance}'s members",
        t.nodes[i].id
    );
}

fn call_from(
    client: &str,
    path: &str,
    message_id: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = Topology::r1("GET", path, "");
    req.headers_mut().insert("x-road-client", client.parse().unwrap());
    req.headers_mut().insert("x-road-id", message_id.parse().unwrap());
    req
}

fn json(resp: &http::Response<bytes::Bytes>) -> Value {
    serde_json::from_slice(resp.body())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(resp.body())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provincial_department_calls_a_national_service_across_instances() {
    let mut vn = Topology::standard().await;
    let mut na = nghe_an().await;
    let vn_credential = vn.open_audit().await;
    let na_credential = na.open_audit().await;

    // The operators of both registries trust each other; VN grants one department.
    within(vn.registry.admin.add_federation_partner(&na.registry.anchor())).await.expect("VN trusts VN-NA");
    within(na.registry.admin.add_federation_partner(&vn.registry.anchor())).await.expect("VN-NA trusts VN");
    let grant = vn.grant(&service(CONG_DAN), &ClientId::Subsystem(subsystem(SO_TU_PHAP))).await;
    vn.sync().await;
    na.sync().await;
    until_federated(&na, 0, "VN").await;
    for i in 0..3 {
        until_federated(&vn, i, NA).await;
    }
    // ...and the peer transports trust each other's nodes, both directions.
    for i in 1..3 {
        within(na.nodes[0].handle().wait_for_peer(&vn.nodes[i].id)).await;
        within(vn.nodes[i].handle().wait_for_peer(&na.nodes[0].id)).await;
    }
    // The partner's view carries no grants: VN's agreements stay VN's.
    let na_view = na.nodes[0].handle().conf().unwrap();
    assert!(na_view.conf.grants.iter().all(|g| g.service.subsystem.member.instance.as_str() == NA));

    // The granted department's call, through its LGSP node to a ministry node and back.
    let ok =
        na.call(0, call_from(SO_TU_PHAP, &format!("/r1/{CONG_DAN}/cong-dan/001099012345"), "na-1")).await;
    assert_eq!(ok.status(), 200, "{}", String::from_utf8_lossy(ok.body()));
    assert_eq!(ok.headers()["x-road-client"], SO_TU_PHAP);
    let hits: usize = vn.backends.iter().map(|b| b.hits()).sum();
    assert_eq!(hits, 1, "the ministry's backend answered once");

    // The other department has no grant: the provider node refuses, the backend is not reached.
    let denied = na.call(0, call_from(SO_KHDT, &format!("/r1/{CONG_DAN}/cong-dan/1"), "na-2")).await;
    assert_eq!(denied.status(), 500, "{}", String::from_utf8_lossy(denied.body()));
    assert_eq!(denied.headers()["x-road-error"], "server.serverproxy.access_denied");
    assert_eq!(vn.backends.iter().map(|b| b.hits()).sum::<usize>(), 1);

    // Both sides logged both exchanges, each with the client of the other instance.
    let consumer: Vec<_> = na.records(0).into_iter().filter(|r| r.message_id.starts_with("na-")).collect();
    assert_eq!(consumer.len(), 4, "request and outcome of each call on the LGSP node");
    let provider: Vec<_> =
        (1..3).flat_map(|i| vn.records(i)).filter(|r| r.message_id.starts_with("na-")).collect();
    assert_eq!(provider.len(), 3, "the granted call's request and response, the refusal: {provider:#?}");
    assert!(provider.iter().any(|r| r.grant_id == grant), "the provider admitted the call under the grant");

    // listClients: the partner's members on request; an unknown instance is an error.
    let list = |instance: &str| {
        http::Request::get(format!("/listClients?xRoadInstance={instance}")).body(Default::default()).unwrap()
    };
    let theirs = json(&vn.call(0, list(NA)).await);
    let ids: Vec<&str> = theirs["member"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"]["subsystem_code"].as_str())
        .collect();
    assert!(ids.contains(&"so-tu-phap") && ids.contains(&"so-khdt"), "{theirs}");
    assert!(theirs["member"].as_array().unwrap().iter().all(|m| m["id"]["xroad_instance"] == NA));
    let national = json(&na.call(0, list("VN")).await);
    assert!(
        national["member"].as_array().unwrap().iter().any(|m| m["id"]["subsystem_code"] == "dancu"),
        "{national}"
    );
    let unknown = na.call(0, list("VN-XX")).await;
    assert_eq!(unknown.headers()["x-road-error"], "server.clientproxy.unknown_member");

    // Both instances' audits see the exchange: VN's judges it against VN's grant, VN-NA's sees
    // its department's call (and does not judge a grant that is VN's to give).
    for i in 0..3 {
        vn.witness(i).await;
    }
    na.witness(0).await;
    let vn_audit = AuditFixture::start(vn.audit_setup(&vn.audit_db(), vn_credential)).await;
    let na_audit = AuditFixture::start(na.audit_setup(&na.audit_db(), na_credential)).await;
    vn_audit.pull().await;
    na_audit.pull().await;
    let (_, vn_report) = vn_audit.api("GET", "/api/v1/sharing", Some(AUDIT_KEY)).await;
    let pair = |report: &Value, client: &str| -> Value {
        report["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["consumer"] == client)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let granted = pair(&vn_report, SO_TU_PHAP);
    assert_eq!(
        (granted["calls"].as_u64(), granted["successes"].as_u64()),
        (Some(1), Some(1)),
        "{vn_report:#}"
    );
    assert_eq!(pair(&vn_report, SO_KHDT)["denials"], 1, "{vn_report:#}");
    let used = vn_report["grants"].as_array().unwrap().iter().find(|g| g["id"] == grant.as_str()).unwrap();
    assert_eq!(used["used"], 1);
    assert!(vn_report["without_grant"].as_array().unwrap().is_empty());
    let (_, na_report) = na_audit.api("GET", "/api/v1/sharing", Some(AUDIT_KEY)).await;
    let seen = pair(&na_report, SO_TU_PHAP);
    assert_eq!(
        (seen["service"].as_str(), seen["successes"].as_u64()),
        (Some(CONG_DAN), Some(1)),
        "{na_report:#}"
    );
    assert_eq!(pair(&na_report, SO_KHDT)["denials"], 1, "{na_report:#}");
    assert!(na_report["without_grant"].as_array().unwrap().is_empty(), "{na_report:#}");

    // Evidence of the cross-instance exchange from the provider's side: its request record is
    // signed by a Nghệ An member, whose certificate Nghệ An's configuration lists; the bundle
    // carries that view, checked against the keys VN's configuration announces for VN-NA.
    let (_, evidence) = vn_audit.api("GET", "/api/v1/evidence?message_id=na-1", Some(AUDIT_KEY)).await;
    assert_eq!(evidence["valid"], true, "{evidence:#}");
    let checks = evidence["report"]["checks"].as_array().unwrap();
    assert!(
        checks.iter().any(|c| c["check"] == "partner configuration" && c["outcome"] == "passed"),
        "{evidence:#}"
    );
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(evidence["bundle"].as_str().unwrap()).unwrap();
    lienthong_audit::bundle::verify(&bytes, &vn.registry.anchor()).expect("verifies offline");
    let mut changed = bytes.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    assert!(lienthong_audit::bundle::verify(&changed, &vn.registry.anchor()).is_err());

    vn_audit.shutdown().await;
    na_audit.shutdown().await;
    within(vn.shutdown()).await;
    within(na.shutdown()).await;
}
