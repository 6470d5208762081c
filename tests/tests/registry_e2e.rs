//! The registry issue's end-to-end test: a registry served in-process (the same `init` and
//! `serve` the CLI runs), a node that registers from its CSR, the administrator's session the
//! CLI uses, and the node's configuration client seeing each change in a verified configuration.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lienthong_confclient::Refresh;
use lienthong_globalconf::{Anchor, ConfError, sign_request};
use lienthong_pki::{Certificate, Csr, KeyAlgorithm, PrivateKey};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::registry::v1 as pb;
use lienthong_registry::admin::{GrantTo, NewGrant};
use lienthong_registry::client::management_client;
use lienthong_types::{ClientId, MemberId, NodeId, ServiceId, SubsystemId};
use tokio::net::TcpListener;

use crate::common;

use common::{anchor_with_urls, conf_client, request, start_registry, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_and_sees_grants_through_verified_configurations() {
    let mut w = start_registry().await;
    let g01: MemberId = "VN/GOV/000.00.00.G01".parse().unwrap();
    let g22: MemberId = "VN/GOV/000.00.00.G22".parse().unwrap();
    let dancu: SubsystemId = "VN/GOV/000.00.00.G01/dancu".parse().unwrap();
    let portal: SubsystemId = "VN/GOV/000.00.00.G22/cong-dich-vu".parse().unwrap();
    within(w.admin.add_member(&g01, "Bộ Công an", None)).await.unwrap();
    within(w.admin.add_member(&g22, "Văn phòng Chính phủ", None)).await.unwrap();
    within(w.admin.add_subsystem(&dancu, "Cơ sở dữ liệu quốc gia về dân cư")).await.unwrap();
    within(w.admin.add_subsystem(&portal, "Cổng Dịch vụ công quốc gia")).await.unwrap();
    let duplicate = within(w.admin.add_member(&g01, "again", None)).await.unwrap_err();
    assert_eq!(duplicate.code(), Some("duplicate"), "{duplicate}");

    // The node starts from the anchor file alone.
    let state = tempfile::tempdir().unwrap();
    let anchor = Anchor::from_json(&std::fs::read_to_string(w.home.anchor_path()).unwrap()).unwrap();
    assert_eq!(anchor.conf_urls, vec![w.running.conf_url()]);
    let node_conf = conf_client(anchor, state.path(), &w.clock);
    assert!(matches!(within(node_conf.refresh_now()).await.unwrap(), Refresh::Updated { .. }));
    let conf = node_conf.current().unwrap().conf.clone();
    assert_eq!(conf.approved_cas, vec![w.ca.clone()]);
    assert_eq!(conf.registry_urls, vec![w.running.grpc_url()]);

    // Registration from a CSR, signed with the key in it; pending until the operator approves.
    let node_id: NodeId = "VN/GOV/000.00.00.G01/ss1".parse().unwrap();
    let auth_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let csr = Csr::for_node(&auth_key, &node_id).unwrap();
    let mut mgmt =
        within(management_client(&conf.registry_urls[0], None, &conf.approved_cas, &conf.instance))
            .await
            .unwrap();
    let register = request(
        "reg-ss1",
        pb::management_request::Kind::RegisterNode(pb::RegisterNode {
            node: Some((&node_id).into()),
            csr: csr.der().to_vec(),
            addresses: vec![gc::NodeAddress {
                url: "https://10.0.0.1:5500".into(),
                network: "gov-network".into(),
            }],
        }),
    );
    let status =
        within(mgmt.submit(sign_request(&register, &auth_key, None).unwrap())).await.unwrap().into_inner();
    assert_eq!(status.state, pb::RequestState::Pending as i32);
    let again = within(mgmt.submit(
        sign_request(&request("reg-ss1-bis", register.kind.clone().unwrap()), &auth_key, None).unwrap(),
    ))
    .await
    .unwrap_err();
    assert!(again.message().starts_with("duplicate:"), "{}", again.message());

    let pending = within(w.admin.list_requests(Some(pb::RequestState::Pending))).await.unwrap();
    assert_eq!(pending.len(), 1);
    within(w.admin.decide("reg-ss1", true, "identity checked by phone")).await.unwrap();
    let status = within(mgmt.get_status(pb::GetStatusRequest { request_id: "reg-ss1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::RequestState::Approved as i32);
    let auth_cert = Certificate::from_der(status.certificate).unwrap();
    assert_eq!(auth_cert.identity().unwrap(), lienthong_pki::Identity::Node(node_id.clone()));

    assert!(matches!(within(node_conf.refresh_now()).await.unwrap(), Refresh::Updated { .. }));
    let conf = node_conf.current().unwrap().conf.clone();
    assert_eq!(conf.node(&node_id).unwrap().auth_cert, auth_cert.fingerprint());

    // The member's signing certificate, asked for by its node, then a service it publishes.
    let sign_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let issue = request(
        "sign-g01",
        pb::management_request::Kind::IssueSigningCert(pb::IssueSigningCert {
            member: Some((&g01).into()),
            csr: Csr::for_member(&sign_key, &g01).unwrap().der().to_vec(),
            node: Some((&node_id).into()),
        }),
    );
    within(mgmt.submit(sign_request(&issue, &auth_key, Some(&auth_cert)).unwrap())).await.unwrap();
    let status = within(w.admin.decide("sign-g01", true, "")).await.unwrap();
    let member_cert = Certificate::from_der(status.certificate).unwrap();
    let service: ServiceId = "VN/GOV/000.00.00.G01/dancu/tra-cuu-cong-dan".parse().unwrap();
    let publish = request(
        "publish-tra-cuu",
        pb::management_request::Kind::PublishService(pb::PublishService {
            service: Some(gc::Service {
                id: Some((&service).into()),
                r#type: gc::ServiceType::Rest as i32,
                description: "Tra cứu thông tin công dân".into(),
                disabled: false,
                endpoints: vec![],
            }),
            description_document: Vec::new(),
        }),
    );
    let status = within(mgmt.submit(sign_request(&publish, &sign_key, Some(&member_cert)).unwrap()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::RequestState::Approved as i32, "{}", status.reason);

    // Case 10: the same request signed by a key that is not the member's is refused.
    let forged = request("publish-forged", publish.kind.clone().unwrap());
    let refused =
        within(mgmt.submit(sign_request(&forged, &auth_key, Some(&auth_cert)).unwrap())).await.unwrap_err();
    assert!(refused.message().starts_with("unauthorized:"), "{}", refused.message());

    // A grant appears within one refresh, and disappears within one refresh of its revocation.
    let client = ClientId::Subsystem(portal.clone());
    let grant = within(w.admin.add_grant(&NewGrant {
        service: service.clone(),
        to: GrantTo::Client(client.clone()),
        endpoints: vec![("GET".into(), "/cong-dan/*".into())],
        legal_basis: "Nghị định 47/2020/NĐ-CP".into(),
        valid_from_ms: 0,
        valid_until_ms: 0,
    }))
    .await
    .unwrap();
    assert!(matches!(within(node_conf.refresh_now()).await.unwrap(), Refresh::Updated { .. }));
    let held = node_conf.current().unwrap();
    let now = w.clock.now();
    let found = held.conf.allowing_grant(&client, &service, "GET", "/cong-dan/012345678901", now).unwrap();
    assert_eq!(found.id, grant.grant_id);
    assert!(held.conf.allowing_grant(&client, &service, "DELETE", "/cong-dan/1", now).is_none());
    let before_revocation = held.bytes.clone();

    within(w.admin.revoke_grant(&grant.grant_id, "agreement ended")).await.unwrap();
    assert!(matches!(within(node_conf.refresh_now()).await.unwrap(), Refresh::Updated { .. }));
    let conf = node_conf.current().unwrap().conf.clone();
    assert!(conf.allowing_grant(&client, &service, "GET", "/cong-dan/1", now).is_none());
    let listed = within(w.admin.list_grants(Some(&service))).await.unwrap();
    assert_eq!(listed[0].revoked_reason, "agreement ended");
    let current = w.running.registry.current().bytes.clone();

    // A mirror that serves a tampered, an older and (later) an expired copy: each is refused and
    // the node keeps what it held.
    // The same node, restarted with a mirror as its only source.
    node_conf.shutdown().await;
    let mirror = Mirror::start().await;
    let mirror_client = conf_client(anchor_with_urls(&w.home, vec![mirror.url()]), state.path(), &w.clock);
    let held_version = mirror_client.current().unwrap().conf.version;
    let mut tampered = current.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    for (bytes, what) in [(tampered, "tampered"), (before_revocation, "older")] {
        mirror.serve(bytes);
        let err = within(mirror_client.refresh_now()).await.unwrap_err();
        assert!(err.conf_error().is_some(), "{what}: {err}");
        if what == "older" {
            assert!(matches!(err.conf_error(), Some(ConfError::Rollback { .. })), "{err}");
        }
        assert_eq!(
            mirror_client.current().unwrap().conf.version,
            held_version,
            "{what} changed the held conf"
        );
    }
    // A re-signed copy (same version, later generation) that has expired by the time it arrives.
    mirror.serve(w.running.registry.publish().unwrap().bytes.clone());
    w.clock.advance(601);
    let err = within(mirror_client.refresh_now()).await.unwrap_err();
    assert!(matches!(err.conf_error(), Some(ConfError::Expired { .. })), "{err}");
    assert!(!mirror_client.status(w.clock.now()).is_usable());

    mirror_client.shutdown().await;
    within(w.running.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_callers_without_an_administrator_certificate() {
    let w = start_registry().await;
    let instance = w.running.registry.settings().instance.clone();
    let mut anonymous = lienthong_proto::registry::v1::admin_service_client::AdminServiceClient::new(
        lienthong_registry::client::connect(
            &w.running.grpc_url(),
            None,
            std::slice::from_ref(&w.ca),
            &instance,
        )
        .await
        .unwrap(),
    );
    let err = within(anonymous.list_members(pb::ListMembersRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), tonic_code_permission_denied());
    assert!(err.message().starts_with("unauthorized:"), "{}", err.message());
    within(w.running.shutdown()).await;
}

fn tonic_code_permission_denied() -> lienthong_registry::GrpcCode {
    lienthong_registry::GrpcCode::PermissionDenied
}

/// Serves whatever bytes the test sets, as a configuration mirror would.
struct Mirror {
    addr: SocketAddr,
    body: Arc<Mutex<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mirror {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(Bytes::new()));
        let served = body.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let served = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let bytes = served.lock().unwrap().clone();
                        async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(bytes))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, body, task }
    }

    fn url(&self) -> String {
        format!("http://{}/globalconf", self.addr)
    }

    fn serve(&self, bytes: Vec<u8>) {
        *self.body.lock().unwrap() = Bytes::from(bytes);
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}
