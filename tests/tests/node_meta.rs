//! Metaservices end to end, as an X-Road client calls them through its own node (node 0 of the
//! standard topology): `listClients` on the consumer node, and `listMethods`, `allowedMethods`
//! and `getOpenAPI` answered by the provider node over the ordinary signed exchange.

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use lienthong_testkit::names::*;
use lienthong_testkit::{Topology, within};
use serde_json::{Value, json};

fn get(uri: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method("GET")
        .uri(uri)
        .header("accept", "application/json")
        .header("x-road-client", CONG_DVC)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn json_body(resp: &Response<Bytes>) -> Value {
    serde_json::from_slice(resp.body())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(resp.body())))
}

/// A gateway error: the status, `X-Road-Error` and the JSON body agree on the code.
#[track_caller]
fn gateway_error(resp: &Response<Bytes>, code: &str, status: u16) -> String {
    let body = json_body(resp);
    assert_eq!(resp.status(), status, "{body}");
    assert_eq!(resp.headers()["x-road-error"], code, "{body}");
    assert_eq!(body["type"], code);
    assert!(body["detail"].as_str().is_some_and(|d| d.len() == 36), "a UUID detail: {body}");
    body["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_clients_shows_members_and_subsystems_of_the_instance() {
    let t = Topology::standard().await;
    for uri in ["/listClients", "/listClients?xRoadInstance=VN"] {
        let resp = t.call(0, get(uri)).await;
        assert_eq!(resp.status(), 200, "{uri}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v = json_body(&resp);
        let mut clients = v["member"].as_array().unwrap().clone();
        clients.sort_by_key(|c| c["id"].to_string());
        let expected = [
            json!({"id": {"member_class": "GOV", "member_code": "000.00.00.G01",
                          "object_type": "MEMBER", "xroad_instance": "VN"},
                   "name": "Bộ Công an"}),
            json!({"id": {"member_class": "GOV", "member_code": "000.00.00.G01", "subsystem_code": "dancu",
                          "object_type": "SUBSYSTEM", "xroad_instance": "VN"},
                   "name": "Bộ Công an", "subsystem_name": "Bộ Công an / dancu"}),
            json!({"id": {"member_class": "GOV", "member_code": "000.00.00.G02",
                          "object_type": "MEMBER", "xroad_instance": "VN"},
                   "name": "Văn phòng Chính phủ"}),
            json!({"id": {"member_class": "GOV", "member_code": "000.00.00.G02", "subsystem_code": "cong-dvc",
                          "object_type": "SUBSYSTEM", "xroad_instance": "VN"},
                   "name": "Văn phòng Chính phủ", "subsystem_name": "Văn phòng Chính phủ / cong-dvc"}),
        ];
        let mut expected = expected.to_vec();
        expected.sort_by_key(|c| c["id"].to_string());
        assert_eq!(clients, expected, "{uri}");
    }

    // Another instance is not known to this node: a clear error, not an empty list.
    let resp = t.call(0, get("/listClients?xRoadInstance=LA")).await;
    let message = gateway_error(&resp, "server.clientproxy.unknown_member", 500);
    assert!(message.contains("\"LA\"") && message.contains("not known"), "{message}");

    // listClients takes GET only.
    let mut post = get("/listClients");
    *post.method_mut() = http::Method::POST;
    let resp = t.call(0, post).await;
    gateway_error(&resp, "client.invalid_http_method", 400);
    within(t.shutdown()).await;
}

/// The entry for one service of the standard topology's provider subsystem.
fn rest_service(code: &str, endpoints: Value) -> Value {
    json!({
        "member_class": "GOV",
        "member_code": "000.00.00.G01",
        "subsystem_code": "dancu",
        "service_code": code,
        "object_type": "SERVICE",
        "xroad_instance": "VN",
        "service_type": "REST",
        "endpoint_list": endpoints,
    })
}

fn services(resp: &Response<Bytes>) -> Vec<Value> {
    assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(resp.body()));
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut list = json_body(resp)["service"].as_array().unwrap().clone();
    list.sort_by_key(|s| s["service_code"].to_string());
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_methods_lists_every_service_and_allowed_methods_only_the_granted_ones() {
    let mut t = Topology::standard().await;
    let any = json!([{"method": "*", "path": "/*"}]);

    let resp = t.call(0, get(&format!("/r1/{DANCU}/listMethods"))).await;
    assert_eq!(resp.headers()["x-road-service"], format!("{DANCU}/listMethods").as_str());
    assert!(resp.headers().get("x-road-request-hash").is_some(), "an ordinary signed exchange");
    assert_eq!(
        services(&resp),
        [rest_service("cong-dan", any.clone()), rest_service("ho-tich", any.clone())]
    );

    // CONG_DVC holds a grant for cong-dan only.
    let resp = t.call(0, get(&format!("/r1/{DANCU}/allowedMethods"))).await;
    assert_eq!(services(&resp), [rest_service("cong-dan", any.clone())]);

    // A grant limited to some endpoints shows just those.
    let client = lienthong_types::ClientId::Subsystem(lienthong_testkit::subsystem(CONG_DVC));
    t.grant_endpoints(&lienthong_testkit::service(HO_TICH), &client, &[("GET", "/so-ho/*")]).await;
    t.sync().await;
    let resp = t.call(0, get(&format!("/r1/{DANCU}/allowedMethods"))).await;
    assert_eq!(
        services(&resp),
        [
            rest_service("cong-dan", any.clone()),
            rest_service("ho-tich", json!([{"method": "GET", "path": "/so-ho/*"}]))
        ]
    );

    // Metaservices need no grant, but are read-only.
    let mut post = get(&format!("/r1/{DANCU}/listMethods"));
    *post.method_mut() = http::Method::POST;
    let resp = t.call(0, post).await;
    gateway_error(&resp, "server.serverproxy.invalid_message", 500);
    within(t.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_openapi_serves_the_description_without_the_backend_host() {
    let mut t = Topology::standard().await;
    let doc = json!({
        "openapi": "3.0.3",
        "info": {"title": "Cơ sở dữ liệu quốc gia về dân cư", "version": "1.0"},
        "servers": [{"url": "https://10.20.30.40:8443/api/v1/dancu"}, {"url": "/relative"}],
        "paths": {"/cong-dan/{so_dinh_danh}": {"get": {"responses": {"200": {"description": "OK"}}}}},
    });
    let path = t.dir.path().join("cong-dan.openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    // Both provider nodes describe the service; either may answer.
    for i in [1, 2] {
        let path = path.clone();
        t.reconfigure(i, move |c| {
            let svc = lienthong_testkit::service(CONG_DAN);
            let s = c.services.iter_mut().find(|s| s.id == svc).expect("cong-dan is served here");
            s.openapi = Some(path);
        })
        .await;
    }

    for _ in 0..2 {
        let resp = t.call(0, get(&format!("/r1/{DANCU}/getOpenAPI?serviceCode=cong-dan"))).await;
        assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(resp.body()));
        assert_eq!(resp.headers()["content-type"], "application/json");
        let text = String::from_utf8_lossy(resp.body()).into_owned();
        assert!(!text.contains("10.20.30.40"), "the backend host stays private: {text}");
        let served: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(served["servers"], json!([{"url": "/api/v1/dancu"}, {"url": "/relative"}]));
        assert_eq!(served["info"], doc["info"]);
        assert_eq!(served["paths"], doc["paths"]);
    }

    // A published service without a description, an unknown one, and no service code at all.
    let resp = t.call(0, get(&format!("/r1/{DANCU}/getOpenAPI?serviceCode=ho-tich"))).await;
    let message = gateway_error(&resp, "server.serverproxy.unknown_service", 500);
    assert!(message.contains("ho-tich has no OpenAPI description"), "{message}");
    let resp = t.call(0, get(&format!("/r1/{DANCU}/getOpenAPI?serviceCode=khong-co"))).await;
    let message = gateway_error(&resp, "server.serverproxy.unknown_service", 500);
    assert!(message.contains("khong-co has no OpenAPI description"), "{message}");
    let resp = t.call(0, get(&format!("/r1/{DANCU}/getOpenAPI"))).await;
    let message = gateway_error(&resp, "server.serverproxy.invalid_message", 500);
    assert!(message.contains("serviceCode"), "{message}");
    within(t.shutdown()).await;
}
