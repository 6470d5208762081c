//! Wire <-> domain conversions: round trips, and untrusted values rejected with the field named.

use lienthong_proto::convert::{IntoDomain, ProtoError, decode, known_enum, required};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::types::v1 as pb;
use lienthong_types::{ClientId, IdErrorKind, IdPart, NodeId, ServiceId};
use proptest::prelude::*;
use prost::Message;

const CHARS: &str = "ABCZabcz0189'()+,-.=?";

fn code() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(CHARS.chars().collect::<Vec<_>>()), 1..12)
        .prop_map(|c| c.into_iter().collect())
}

proptest! {
    #[test]
    fn ids_survive_the_wire(i in code(), c in code(), m in code(), s in code(), v in code()) {
        let service: ServiceId = format!("{i}/{c}/{m}/{s}/{v}").parse().unwrap();
        let wire = pb::ServiceId::from(&service).encode_to_vec();
        let back = decode::<pb::ServiceId>("ServiceId", &wire).unwrap().into_domain("service").unwrap();
        prop_assert_eq!(back, service.clone());

        for client in [ClientId::Member(service.subsystem.member.clone()), ClientId::Subsystem(service.subsystem.clone())] {
            let back = pb::ClientId::from(&client).into_domain("client").unwrap();
            prop_assert_eq!(back, client);
        }
        let node: NodeId = format!("{i}/{c}/{m}/{s}").parse().unwrap();
        prop_assert_eq!(pb::NodeId::from(&node).into_domain("node").unwrap(), node);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(m) = decode::<gc::GlobalConf>("GlobalConf", &bytes) {
            for node in m.nodes {
                let _ = required(node.id, "nodes.id");
            }
        }
    }
}

#[test]
fn invalid_wire_ids_name_the_field_and_part() {
    let bad = pb::ClientId {
        kind: Some(pb::client_id::Kind::Member(pb::MemberId {
            instance: "VN".into(),
            member_class: "GOV".into(),
            member_code: "000.00.00.G22/../x".into(),
        })),
    };
    let err = bad.into_domain("client").unwrap_err();
    match &err {
        ProtoError::Id { field: "client", source } => {
            assert_eq!(source.part, IdPart::MemberCode);
            assert_eq!(source.kind, IdErrorKind::InvalidChar { ch: '/', at: 13 });
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().starts_with("client: member code"), "{err}");

    assert_eq!(
        pb::ClientId { kind: None }.into_domain("client"),
        Err(ProtoError::Missing { field: "client" })
    );
    let no_member = pb::ServiceId {
        subsystem: Some(pb::SubsystemId { member: None, subsystem_code: "s".into() }),
        service_code: "x".into(),
    };
    assert_eq!(no_member.into_domain("service"), Err(ProtoError::Missing { field: "service" }));
    assert_eq!(required::<pb::NodeId>(None, "node"), Err(ProtoError::Missing { field: "node" }));
}

#[test]
fn enums_reject_unspecified_and_unknown_values() {
    assert_eq!(known_enum::<gc::ServiceType>(1, "type"), Ok(gc::ServiceType::Rest));
    assert_eq!(known_enum::<gc::ServiceType>(0, "type"), Err(ProtoError::Missing { field: "type" }));
    assert_eq!(
        known_enum::<gc::ServiceType>(99, "type"),
        Err(ProtoError::UnknownEnum { field: "type", value: 99 })
    );
}

#[test]
fn garbage_is_a_decode_error() {
    let err = decode::<gc::SignedGlobalConf>("SignedGlobalConf", &[0xff, 0xff, 0xff]).unwrap_err();
    assert!(matches!(err, ProtoError::Decode { message: "SignedGlobalConf", .. }), "{err:?}");
}
