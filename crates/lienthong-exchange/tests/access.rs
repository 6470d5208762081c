//! Who may call what, and where a call goes: the provider's admission of a request envelope
//! (`access::admit`, refusals in their documented order) and the consumer's choice of provider
//! nodes (`route::provider_nodes`).

mod support;

use std::time::Duration;

use lienthong_exchange::access::{self, Admitted};
use lienthong_exchange::{Reject, route};
use lienthong_globalconf::{GrantSubject, ServiceType, to_millis};
use lienthong_proto::exchange::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, Fault, NodeId};
use support::*;

const SKEW: Duration = Duration::from_secs(60);

/// A change made to a request before it is signed.
type Change = fn(&mut pb::RequestEnvelope);

/// `admit` as the provider node `own` sees a message arriving from the consumer node `peer`.
fn admit_on(f: &Fixture, own: &str, peer: &str, env: &pb::RequestEnvelope) -> Result<Admitted, Reject> {
    access::admit(&f.conf, &node(own), &node(peer), env, f.now, SKEW)
}

/// The usual case: from `ss-a` to `ss-b1`.
fn admit(f: &Fixture, env: &pb::RequestEnvelope) -> Result<Admitted, Reject> {
    admit_on(f, NODE_B1, NODE_A, env)
}

#[track_caller]
fn refused(r: Result<Admitted, Reject>, fault: Fault, needle: &str) {
    match r {
        Ok(a) => panic!("admitted, expected {fault}: {a:?}"),
        Err(r) => {
            assert_eq!(r.fault, fault, "{r}");
            assert!(r.message.contains(needle), "{needle:?} in {r}");
        }
    }
}

#[test]
fn a_granted_call_is_admitted_with_its_grant() {
    let f = Fixture::new();
    let a = admit(&f, &f.request(PETS)).unwrap();
    assert_eq!(
        a,
        Admitted {
            client: cons(),
            service: service(PETS),
            grant_id: Some("g-pets".into()),
            signer: Some(f.a.cert.fingerprint()),
        }
    );
    // The other provider node admits it as well; so does a node the client pinned.
    assert!(admit_on(&f, NODE_B2, NODE_A, &f.request(PETS)).is_ok());
    let mut pinned = f.unsigned_request(PETS);
    pinned.target_node = Some((&node(NODE_B1)).into());
    f.resign(&mut pinned);
    assert_eq!(admit(&f, &pinned).unwrap().grant_id.as_deref(), Some("g-pets"));
    // An OpenAPI service is a REST service too.
    assert_eq!(admit(&f, &f.request(SPEC)).unwrap().grant_id.as_deref(), Some("g-spec"));
}

#[test]
fn a_malformed_message_is_an_invalid_message() {
    let f = Fixture::new();
    let cases: Vec<(&str, Change)> = vec![
        ("no client", |e| e.client = None),
        ("no service", |e| e.service = None),
        ("no consumer node", |e| e.consumer_node = None),
        ("no message id", |e| e.message_id.clear()),
        ("no request id", |e| e.request_id.clear()),
        ("no method", |e| e.method.clear()),
        ("a client with a bad id", |e| {
            e.client = Some(types_pb::ClientId {
                kind: Some(types_pb::client_id::Kind::Member(types_pb::MemberId {
                    instance: "VN".into(),
                    member_class: "GOV".into(),
                    member_code: "A/B".into(),
                })),
            })
        }),
        ("a target node with a bad id", |e| {
            let mut n: types_pb::NodeId = (&node(NODE_B1)).into();
            n.server_code = "ss b1".into();
            e.target_node = Some(n);
        }),
    ];
    for (what, change) in cases {
        let mut env = f.unsigned_request(PETS);
        change(&mut env);
        f.resign(&mut env);
        let r = admit(&f, &env);
        assert_eq!(r.map_err(|r| r.fault), Err(Fault::InvalidMessage), "{what}");
    }
}

#[test]
fn a_message_pinned_to_another_node_is_refused() {
    let f = Fixture::new();
    let mut env = f.unsigned_request(PETS);
    env.target_node = Some((&node(NODE_B2)).into());
    f.resign(&mut env);
    refused(admit(&f, &env), Fault::InvalidSecurityServer, "for node VN/GOV/B/ss-b2");
    assert_eq!(Fault::InvalidSecurityServer.code(), "client.invalid_security_server");
    // The node it names admits it.
    assert!(admit_on(&f, NODE_B2, NODE_A, &env).is_ok());
}

#[test]
fn the_sender_must_be_the_authenticated_peer_and_host_the_client() {
    let f = Fixture::new();
    // A registered node relays a message that names ss-a as its sender.
    refused(
        admit_on(&f, NODE_B1, NODE_B2, &f.request(PETS)),
        Fault::ServerSslAuthenticationFailed,
        "naming node VN/GOV/A/ss-a",
    );
    // The peer names itself, but does not host the client it speaks for.
    let mut env = f.unsigned_request(PETS);
    env.consumer_node = Some((&node(NODE_B3)).into());
    f.resign(&mut env);
    refused(admit_on(&f, NODE_B1, NODE_B3, &env), Fault::ServerSslAuthenticationFailed, "does not host");
    // A node that is not registered at all.
    let ghost = "VN/GOV/A/ss-ghost";
    env.consumer_node = Some((&node(ghost)).into());
    f.resign(&mut env);
    refused(admit_on(&f, NODE_B1, ghost, &env), Fault::ServerSslAuthenticationFailed, "does not host");
    assert_eq!(Fault::ServerSslAuthenticationFailed.code(), "server.serverproxy.ssl_authentication_failed");
}

#[test]
fn a_member_level_client_is_hosted_by_its_own_nodes_and_by_nodes_of_its_subsystems() {
    let mut f = Fixture::new();
    let member_a = ClientId::Member(member(A));
    let mut env = f.unsigned_request(OPEN);
    env.client = Some((&member_a).into());
    f.resign(&mut env);
    // ss-a belongs to A (and hosts its subsystems).
    assert!(access::node_hosts_client(&f.conf, &node(NODE_A), &member_a));
    assert!(!access::node_hosts_client(&f.conf, &node(NODE_B1), &member_a));
    // A member has no grant for OPEN (only A/cons, through the group).
    refused(admit(&f, &env), Fault::AccessDenied, "may not call");
    f.conf.grants.push(grant("g-member", OPEN, GrantSubject::Client(member_a.clone()), vec![], f.now));
    assert_eq!(admit(&f, &env).unwrap().grant_id.as_deref(), Some("g-member"));
    // A node of another member hosting one of A's subsystems may speak for A as well.
    f.node_mut(NODE_B3).hosted_subsystems.insert(subsystem(CONS));
    assert!(access::node_hosts_client(&f.conf, &node(NODE_B3), &member_a));
    assert!(!access::node_hosts_client(&f.conf, &node("VN/GOV/A/ss-ghost"), &member_a));
}

#[test]
fn an_unregistered_client_is_an_unknown_member() {
    let mut f = Fixture::new();
    // ss-a still lists a subsystem the registry no longer has.
    let gone = "VN/GOV/A/gone";
    f.node_mut(NODE_A).hosted_subsystems.insert(subsystem(gone));
    let mut env = f.unsigned_request(PETS);
    env.client = Some((&ClientId::Subsystem(subsystem(gone))).into());
    f.resign(&mut env);
    refused(admit(&f, &env), Fault::ServerUnknownMember, "client VN/GOV/A/gone is not registered");

    // A closed member's subsystems and the member itself are unknown, before any signature check.
    f.member_mut(A).status = lienthong_globalconf::MemberStatus::Closed;
    refused(admit(&f, &f.request(PETS)), Fault::ServerUnknownMember, "is not registered");
    let mut env = f.unsigned_request(PETS);
    env.client = Some((&ClientId::Member(member(A))).into());
    f.resign(&mut env);
    refused(admit(&f, &env), Fault::ServerUnknownMember, "client VN/GOV/A is not registered");
}

#[test]
fn the_message_time_must_be_within_the_allowed_skew_either_way() {
    let f = Fixture::new();
    let at = |offset_ms: i64| {
        let mut env = f.unsigned_request(PETS);
        env.created_at_ms = to_millis(f.now) + offset_ms;
        f.resign(&mut env);
        admit(&f, &env)
    };
    // Just inside the limit (the envelope keeps milliseconds; `now` has more precision).
    assert!(at(-59_999).is_ok());
    assert!(at(59_999).is_ok());
    refused(at(-61_000), Fault::ClockSkew, "differs from this node's clock");
    refused(at(61_000), Fault::ClockSkew, "differs from this node's clock");
    refused(at(-3_600_000), Fault::ClockSkew, "by 3600 s");
    // A time that cannot be represented (before 1970) is far off, not zero skew.
    let mut env = f.unsigned_request(PETS);
    env.created_at_ms = -1;
    f.resign(&mut env);
    refused(admit(&f, &env), Fault::ClockSkew, "");
    assert_eq!(Fault::ClockSkew.code(), "server.serverproxy.clock_skew");
}

#[test]
fn the_signature_is_checked_before_the_catalogue() {
    let f = Fixture::new();
    let mut tampered = f.request(PETS);
    tampered.path = "/pets/8".into();
    refused(admit(&f, &tampered), Fault::ServerInvalidSignatureValue, "does not verify");
    let mut stripped = f.request(PETS);
    stripped.signature = None;
    refused(admit(&f, &stripped), Fault::ServerMissingSignature, "no signature");
    // An unsigned request for a service that does not exist learns nothing about the catalogue.
    let mut probe = f.unsigned_request("VN/GOV/B/prov/secret");
    probe.signature = None;
    refused(admit(&f, &probe), Fault::ServerMissingSignature, "no signature");
    // Signed by B for client A.
    let mut env = f.unsigned_request(PETS);
    lienthong_exchange::envelope::sign_request(&mut env, f.b.signer()).unwrap();
    refused(admit(&f, &env), Fault::ServerInvalidSignatureValue, "not member VN/GOV/A");
}

#[test]
fn the_service_must_be_a_rest_service_hosted_here_and_enabled() {
    let f = Fixture::new();
    // ss-b3 belongs to B but does not host B/prov.
    let mut env = f.unsigned_request(PETS);
    env.target_node = Some((&node(NODE_B3)).into());
    f.resign(&mut env);
    refused(admit_on(&f, NODE_B3, NODE_A, &env), Fault::ServerUnknownService, "not hosted on this node");
    refused(admit_on(&f, NODE_B3, NODE_A, &f.request(PETS)), Fault::ServerUnknownService, "not hosted");
    // A subsystem nobody hosts (of a member that exists).
    refused(admit(&f, &f.request("VN/GOV/A/cons/pets")), Fault::ServerUnknownService, "not hosted");

    refused(admit(&f, &f.request("VN/GOV/B/prov/secret")), Fault::ServerUnknownService, "not registered");
    refused(admit(&f, &f.request(SOAP)), Fault::ServerUnknownService, "not a REST service");
    refused(admit(&f, &f.request(OFF)), Fault::ServiceDisabled, "is disabled");
    assert_eq!(Fault::ServiceDisabled.code(), "server.serverproxy.service_disabled");
}

#[test]
fn a_grant_must_cover_the_client_the_time_the_method_and_the_path() {
    let mut f = Fixture::new();
    let call = |f: &Fixture, method: &str, path: &str| {
        let mut env = f.unsigned_request(PETS);
        env.method = method.into();
        env.path = path.into();
        f.resign(&mut env);
        admit(f, &env)
    };
    // g-pets allows GET /pets/* only, though the service also publishes POST /pets.
    assert!(call(&f, "GET", "/pets/7").is_ok());
    assert!(call(&f, "GET", "/pets/7/photos").is_ok(), "a trailing /* covers deeper paths");
    refused(call(&f, "POST", "/pets"), Fault::AccessDenied, "may not call POST /pets on");
    refused(call(&f, "DELETE", "/pets/7"), Fault::AccessDenied, "DELETE /pets/7");
    refused(call(&f, "GET", "/pets"), Fault::AccessDenied, "GET /pets");
    refused(call(&f, "GET", "/owners/1"), Fault::AccessDenied, "GET /owners/1");
    refused(call(&f, "GET", ""), Fault::AccessDenied, "GET / on");
    assert_eq!(Fault::AccessDenied.code(), "server.serverproxy.access_denied");

    // Another client of the same member has no grant.
    let mut other = f.unsigned_request(PETS);
    other.client = Some((&ClientId::Subsystem(subsystem("VN/GOV/A/other"))).into());
    f.resign(&mut other);
    refused(admit(&f, &other), Fault::AccessDenied, "client VN/GOV/A/other may not call");

    // The grant's validity: not yet, then no longer.
    let g = f.conf.grants.iter_mut().find(|g| g.id == "g-pets").unwrap();
    g.valid_from = f.now + Duration::from_secs(60);
    refused(call(&f, "GET", "/pets/7"), Fault::AccessDenied, "may not call");
    let g = f.conf.grants.iter_mut().find(|g| g.id == "g-pets").unwrap();
    g.valid_from = f.now - Duration::from_secs(7200);
    g.valid_until = Some(f.now - Duration::from_secs(1));
    refused(call(&f, "GET", "/pets/7"), Fault::AccessDenied, "may not call");
    // Until is exclusive, from is inclusive.
    let g = f.conf.grants.iter_mut().find(|g| g.id == "g-pets").unwrap();
    g.valid_until = Some(f.now);
    refused(call(&f, "GET", "/pets/7"), Fault::AccessDenied, "may not call");
    let g = f.conf.grants.iter_mut().find(|g| g.id == "g-pets").unwrap();
    g.valid_from = f.now;
    g.valid_until = Some(f.now + Duration::from_secs(1));
    assert!(call(&f, "GET", "/pets/7").is_ok());

    // A later, wider grant allows what the narrow one did not, and is the one recorded.
    f.conf.grants.push(grant(
        "g-pets-post",
        PETS,
        GrantSubject::Client(cons()),
        vec![endpoint("POST", "/pets")],
        f.now,
    ));
    assert_eq!(call(&f, "POST", "/pets").unwrap().grant_id.as_deref(), Some("g-pets-post"));
    assert_eq!(call(&f, "GET", "/pets/1").unwrap().grant_id.as_deref(), Some("g-pets"));
    // A method wildcard.
    f.conf.grants.push(grant(
        "g-any",
        PETS,
        GrantSubject::Client(cons()),
        vec![endpoint("*", "/owners/*")],
        f.now,
    ));
    assert_eq!(call(&f, "PATCH", "/owners/1").unwrap().grant_id.as_deref(), Some("g-any"));
}

#[test]
fn a_grant_to_a_global_group_admits_its_members_only() {
    let mut f = Fixture::new();
    assert_eq!(admit(&f, &f.request(OPEN)).unwrap().grant_id.as_deref(), Some("g-group"));
    let group = GROUP.parse().unwrap();
    f.conf.global_groups.get_mut(&group).unwrap().members.clear();
    refused(admit(&f, &f.request(OPEN)), Fault::AccessDenied, "may not call");
    // A grant to a group the configuration does not define allows nobody.
    f.conf.global_groups.clear();
    refused(admit(&f, &f.request(OPEN)), Fault::AccessDenied, "may not call");
}

#[test]
fn metaservices_need_no_grant_but_the_rest_of_the_checks() {
    let mut f = Fixture::new();
    f.conf.grants.clear();
    for code in ["listMethods", "allowedMethods", "getOpenAPI"] {
        let svc = format!("{PROV}/{code}");
        let a = admit(&f, &f.request(&svc)).unwrap();
        assert_eq!(a.grant_id, None, "{code}");
        assert_eq!(a.service, service(&svc));
        // Still only on a node hosting the subsystem, and still signed.
        refused(admit_on(&f, NODE_B3, NODE_A, &f.request(&svc)), Fault::ServerUnknownService, "not hosted");
        let mut unsigned = f.request(&svc);
        unsigned.signature = None;
        refused(admit(&f, &unsigned), Fault::ServerMissingSignature, "");
    }
    // Case matters: this is an ordinary (unregistered) service code.
    refused(
        admit(&f, &f.request(&format!("{PROV}/listmethods"))),
        Fault::ServerUnknownService,
        "not registered",
    );
}

/// Starting from a message wrong in every way, fixing one thing at a time reveals the next
/// refusal: the order of the checks, end to end.
#[test]
fn refusals_come_in_the_documented_order() {
    let mut f = Fixture::new();
    // The client is unknown to the configuration, the service is a disabled WSDL service
    // without a grant, and the message goes to ss-b3, which does not host it.
    let gone = "VN/GOV/A/gone";
    f.node_mut(NODE_A).hosted_subsystems.insert(subsystem(gone));
    f.service_mut(OFF).service_type = ServiceType::Wsdl;
    f.conf.grants.retain(|g| g.id != "g-off");
    let mut env = f.unsigned_request(OFF);
    env.client = Some((&ClientId::Subsystem(subsystem(gone))).into());
    env.target_node = Some((&node(NODE_B2)).into());
    env.consumer_node = Some((&node(NODE_B3)).into());
    env.created_at_ms = to_millis(f.now) - 3_600_000;
    env.method.clear();
    let mut own = NODE_B3;

    let mut seen: Vec<(Result<Option<String>, Fault>, String)> = vec![];
    let mut step = |f: &Fixture, own: &str, env: &pb::RequestEnvelope| {
        seen.push(match admit_on(f, own, NODE_A, env) {
            Ok(a) => (Ok(a.grant_id), String::new()),
            Err(r) => (Err(r.fault), r.message),
        });
    };
    step(&f, own, &env);
    env.method = "GET".into();
    step(&f, own, &env);
    env.target_node = None;
    step(&f, own, &env);
    env.consumer_node = Some((&node(NODE_A)).into());
    step(&f, own, &env);
    env.client = Some((&cons()).into());
    step(&f, own, &env);
    env.created_at_ms = to_millis(f.now);
    step(&f, own, &env);
    f.resign(&mut env);
    step(&f, own, &env);
    own = NODE_B1;
    step(&f, own, &env);
    f.service_mut(OFF).service_type = ServiceType::Rest;
    step(&f, own, &env);
    f.service_mut(OFF).disabled = false;
    step(&f, own, &env);
    f.conf.grants.push(grant("g-off-2", OFF, GrantSubject::Client(cons()), vec![], f.now));
    step(&f, own, &env);

    let faults: Vec<_> = seen.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(
        faults,
        [
            Err(Fault::InvalidMessage),
            Err(Fault::InvalidSecurityServer),
            Err(Fault::ServerSslAuthenticationFailed),
            Err(Fault::ServerUnknownMember),
            Err(Fault::ClockSkew),
            Err(Fault::ServerMissingSignature),
            Err(Fault::ServerUnknownService),
            Err(Fault::ServerUnknownService),
            Err(Fault::ServiceDisabled),
            Err(Fault::AccessDenied),
            Ok(Some("g-off-2".into())),
        ],
        "{seen:#?}"
    );
    assert!(seen[6].1.contains("not hosted on this node"), "{}", seen[6].1);
    assert!(seen[7].1.contains("not a REST service"), "{}", seen[7].1);
}

// --- Routing on the consumer side ---

fn ids(nodes: Result<Vec<&lienthong_globalconf::Node>, Reject>) -> Result<Vec<String>, Fault> {
    nodes.map(|ns| ns.iter().map(|n| n.id.to_string()).collect()).map_err(|r| r.fault)
}

#[test]
fn routing_refuses_what_the_configuration_does_not_know() {
    let mut f = Fixture::new();
    let route = |f: &Fixture, svc: &str| {
        let svc = service(svc);
        route::provider_nodes(&f.conf, &svc, None, 0).map(|_| ()).map_err(|r| (r.fault, r.message))
    };
    let (fault, message) = route(&f, "VN/GOV/Z/prov/pets").unwrap_err();
    assert_eq!((fault, message.as_str()), (Fault::ClientUnknownMember, "member VN/GOV/Z is not registered"));
    let (fault, message) = route(&f, "VN/GOV/B/nope/pets").unwrap_err();
    assert_eq!(fault, Fault::ClientUnknownMember);
    assert!(message.contains("subsystem VN/GOV/B/nope"), "{message}");
    let (fault, message) = route(&f, "VN/GOV/B/prov/nope").unwrap_err();
    assert_eq!(fault, Fault::ClientUnknownService);
    assert!(message.contains("service VN/GOV/B/prov/nope"), "{message}");
    assert_eq!(Fault::ClientUnknownService.code(), "server.clientproxy.unknown_service");
    // Metaservices are not in the catalogue but route like any service of the subsystem.
    assert!(route(&f, "VN/GOV/B/prov/listMethods").is_ok());
    assert_eq!(route(&f, "VN/GOV/B/nope/listMethods").unwrap_err().0, Fault::ClientUnknownMember);
    // A registered subsystem that no node hosts.
    f.conf.services.insert(service("VN/GOV/A/other/x"), f.conf.services[&service(PETS)].clone());
    assert!(route(&f, "VN/GOV/A/other/x").is_ok(), "hosted by ss-a");
    f.node_mut(NODE_A).hosted_subsystems.remove(&subsystem("VN/GOV/A/other"));
    let (fault, message) = route(&f, "VN/GOV/A/other/x").unwrap_err();
    assert_eq!(fault, Fault::ClientUnknownService);
    assert!(message.contains("no node hosts"), "{message}");
    // A closed member provides nothing.
    f.member_mut(B).status = lienthong_globalconf::MemberStatus::Closed;
    assert_eq!(route(&f, PETS).unwrap_err().0, Fault::ClientUnknownMember);
}

#[test]
fn routing_skips_nodes_in_maintenance_and_rotates() {
    let mut f = Fixture::new();
    let pets = service(PETS);
    let route = |f: &Fixture, start| ids(route::provider_nodes(&f.conf, &pets, None, start));
    assert_eq!(route(&f, 0), Ok(vec![NODE_B1.to_owned(), NODE_B2.to_owned()]));
    assert_eq!(route(&f, 1), Ok(vec![NODE_B2.to_owned(), NODE_B1.to_owned()]));
    assert_eq!(route(&f, 2), route(&f, 0));
    assert_eq!(route(&f, usize::MAX), route(&f, 1), "usize::MAX is odd");
    f.node_mut(NODE_B1).maintenance = true;
    assert_eq!(route(&f, 0), Ok(vec![NODE_B2.to_owned()]));
    assert_eq!(route(&f, 1), Ok(vec![NODE_B2.to_owned()]));
    f.node_mut(NODE_B2).maintenance = true;
    assert_eq!(route(&f, 0), Err(Fault::ClientMaintenanceMode));
    assert_eq!(Fault::ClientMaintenanceMode.code(), "server.clientproxy.maintenance_mode");
}

#[test]
fn a_pinned_node_must_host_the_service_and_be_open() {
    let mut f = Fixture::new();
    let pets = service(PETS);
    let pinned = |f: &Fixture, n: &str| {
        let n: NodeId = node(n);
        ids(route::provider_nodes(&f.conf, &pets, Some(&n), 1))
    };
    assert_eq!(
        pinned(&f, NODE_B1),
        Ok(vec![NODE_B1.to_owned()]),
        "only the pinned node, whatever the rotation"
    );
    assert_eq!(pinned(&f, NODE_B3), Err(Fault::InvalidSecurityServer));
    assert_eq!(pinned(&f, NODE_A), Err(Fault::InvalidSecurityServer));
    assert_eq!(pinned(&f, "VN/GOV/B/ss-ghost"), Err(Fault::InvalidSecurityServer));
    f.node_mut(NODE_B1).maintenance = true;
    assert_eq!(pinned(&f, NODE_B1), Err(Fault::ClientMaintenanceMode));
    assert_eq!(pinned(&f, NODE_B2), Ok(vec![NODE_B2.to_owned()]));
}

/// A protection that checks no signatures, as the benchmark's transport-only nodes run.
#[derive(Debug)]
struct Unsigned;

impl lienthong_exchange::Protection for Unsigned {
    fn sign_request(
        &self,
        _: &mut pb::RequestEnvelope,
        _: lienthong_exchange::envelope::Signer<'_>,
    ) -> Result<(), lienthong_pki::SignatureError> {
        Ok(())
    }
    fn sign_response(
        &self,
        _: &mut pb::ResponseEnvelope,
        _: lienthong_exchange::envelope::Signer<'_>,
    ) -> Result<(), lienthong_pki::SignatureError> {
        Ok(())
    }
    fn verify_request(
        &self,
        _: &pb::RequestEnvelope,
        _: &lienthong_types::MemberId,
        _: &lienthong_globalconf::GlobalConf,
        _: std::time::SystemTime,
    ) -> Result<Option<lienthong_pki::Fingerprint>, lienthong_exchange::Reject> {
        Ok(None)
    }
    fn verify_response(
        &self,
        _: &pb::ResponseEnvelope,
        _: &lienthong_types::MemberId,
        _: &lienthong_globalconf::GlobalConf,
        _: std::time::SystemTime,
    ) -> Result<(), lienthong_exchange::Reject> {
        Ok(())
    }
    fn keeps_records(&self) -> bool {
        false
    }
}

#[test]
fn admission_under_a_protection_without_signatures_makes_every_other_check() {
    // The benchmark's transport-only protection: an unsigned request is admitted, with no
    // signer, but sender, hosting, clock and grant are checked as always, in the same order.
    let f = Fixture::new();
    let without = |own: &str, peer: &str, env: &pb::RequestEnvelope| {
        access::admit_with(&f.conf, &node(own), &node(peer), env, f.now, SKEW, &Unsigned)
    };
    let unsigned = f.unsigned_request(PETS);
    assert_eq!(unsigned.signature, None);
    let a = without(NODE_B1, NODE_A, &unsigned).unwrap();
    assert_eq!((a.grant_id.as_deref(), a.signer), (Some("g-pets"), None));
    // `admit` itself (the signed protection) still refuses it.
    refused(admit(&f, &unsigned), Fault::ServerMissingSignature, "no signature");

    refused(without(NODE_B1, NODE_B2, &unsigned), Fault::ServerSslAuthenticationFailed, "as its sender");
    refused(without(NODE_B3, NODE_A, &unsigned), Fault::ServerUnknownService, "not hosted on this node");
    let mut late = f.unsigned_request(PETS);
    late.created_at_ms = to_millis(f.now) - 3_600_000;
    refused(without(NODE_B1, NODE_A, &late), Fault::ClockSkew, "by 3600 s");
    let mut post = f.unsigned_request(PETS);
    post.method = "POST".into();
    post.path = "/pets".into();
    refused(without(NODE_B1, NODE_A, &post), Fault::AccessDenied, "may not call POST /pets");
}

// --- The path rule ---

#[test]
fn the_path_rule_refuses_every_form_a_backend_could_read_as_another_path() {
    use access::PathProblem::*;
    let refused = [
        ("/public/..;/secret", DotSegment),
        ("/public/..;jsessionid=1/secret", DotSegment),
        ("/public/.;/x", DotSegment),
        ("/public/..", DotSegment),
        ("/public/./x", DotSegment),
        ("/public/%2e%2e/secret", DotSegment),
        ("/public/%2E./secret", DotSegment),
        ("/public/%252e%252e/secret", DotSegment),
        ("/public/%25252e%25252e/secret", DotSegment),
        ("/public/..%3b/secret", DotSegment),
        ("..", DotSegment),
        ("/public/%2e%2e%2fsecret", EncodedSlash),
        ("/public%2fsecret", EncodedSlash),
        ("/public/%252Fsecret", EncodedSlash),
        ("/public/..%5csecret", Backslash),
        ("/public/..\\secret", Backslash),
        ("/public/%5c", Backslash),
        ("/public//secret", EmptySegment),
        ("//public", EmptySegment),
        ("/public/%00", ControlCharacter),
        ("/public/a%0d%0aX-Injected:%201", ControlCharacter),
        ("/public/%7f", ControlCharacter),
        ("/public/%2525252e", TooDeeplyEncoded),
    ];
    for (path, problem) in refused {
        assert_eq!(access::check_path(path), Err(problem), "{path}");
    }
    let allowed = [
        "",
        "/",
        "/public/",
        "/a.b/c",
        "/v1/..x",
        "/v1/x..",
        "/v1/...",
        "/.well-known/openapi",
        "/x%20y",
        "/%E1%BB%87",
        "/items;v=2/x",
        "/100%",
        "/a%zz",
        "/a%2",
        "/%2525",
    ];
    for path in allowed {
        assert_eq!(access::check_path(path), Ok(()), "{path}");
    }
}

#[test]
fn the_provider_applies_the_path_rule_before_the_grant() {
    let f = Fixture::new();
    for path in ["/pets/..;/owners", "/pets/%2e%2e%2fowners", "/pets/..%5cowners", "/pets//7"] {
        let mut env = f.unsigned_request(PETS);
        env.method = "GET".into();
        env.path = path.into();
        f.resign(&mut env);
        // Each of these matches g-pets (GET /pets/*) as text.
        refused(admit(&f, &env), Fault::InvalidMessage, "the path has");
    }
}
