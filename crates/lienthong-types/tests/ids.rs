//! Identifier parsing: round trips (property tests) and every rejection naming its part.

use lienthong_types::*;
use proptest::prelude::*;

const ALLOWED: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'()+,-.=?";

fn code(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(ALLOWED.chars().collect::<Vec<_>>()), 1..=max)
        .prop_map(|cs| cs.into_iter().collect())
}

prop_compose! {
    fn member_id()(i in code(40), c in code(40), m in code(MAX_CODE_LEN)) -> MemberId {
        MemberId::new(i.parse().unwrap(), c.parse().unwrap(), m.parse().unwrap())
    }
}
prop_compose! {
    fn subsystem_id()(m in member_id(), s in code(MAX_CODE_LEN)) -> SubsystemId {
        m.subsystem(SubsystemCode::new(&s).unwrap())
    }
}
prop_compose! {
    fn service_id()(s in subsystem_id(), c in code(MAX_CODE_LEN)) -> ServiceId {
        s.service(ServiceCode::new(&c).unwrap())
    }
}

/// Percent-encodes a random subset of a code's characters: decoding must give the same id.
fn encode_some(code: &str, mask: &[bool]) -> String {
    code.chars()
        .zip(mask.iter().cycle())
        .map(|(c, &enc)| if enc { format!("%{:02X}", c as u32) } else { c.to_string() })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn member_round_trip(id in member_id()) {
        prop_assert_eq!(id.to_string().parse::<MemberId>().unwrap(), id.clone());
        prop_assert_eq!(id.to_string().parse::<ClientId>().unwrap(), ClientId::Member(id));
    }

    #[test]
    fn subsystem_round_trip(id in subsystem_id()) {
        prop_assert_eq!(id.to_string().parse::<SubsystemId>().unwrap(), id.clone());
        prop_assert_eq!(id.to_string().parse::<ClientId>().unwrap(), ClientId::Subsystem(id));
    }

    #[test]
    fn service_round_trip(id in service_id()) {
        prop_assert_eq!(id.to_string().parse::<ServiceId>().unwrap(), id.clone());
        let target = R1Target::parse(&id.r1_path()).unwrap();
        prop_assert_eq!(&target.service, &id);
        prop_assert_eq!(target.rest.as_str(), "");
        prop_assert_eq!(target.query, None);
    }

    #[test]
    fn r1_path_round_trip(id in service_id(), rest in "(/[a-z0-9%]{0,8}){0,3}", query in proptest::option::of("[a-z=&0-9]{0,12}")) {
        let target = R1Target { service: id, rest, query };
        prop_assert_eq!(R1Target::parse(&target.to_path_and_query()).unwrap(), target);
    }

    #[test]
    fn node_and_group_round_trip(m in member_id(), s in code(MAX_CODE_LEN), g in code(MAX_CODE_LEN)) {
        let node = m.node(ServerCode::new(&s).unwrap());
        prop_assert_eq!(node.to_string().parse::<NodeId>().unwrap(), node);
        let group = GlobalGroupId { instance: m.instance.clone(), code: GroupCode::new(&g).unwrap() };
        prop_assert_eq!(group.to_string().parse::<GlobalGroupId>().unwrap(), group);
    }

    #[test]
    fn percent_encoded_segments_decode_to_the_same_id(id in subsystem_id(), mask in proptest::collection::vec(any::<bool>(), 1..8)) {
        let m = &id.member;
        let encoded = [m.instance.as_str(), m.class.as_str(), m.code.as_str(), id.code.as_str()]
            .map(|c| encode_some(c, &mask))
            .join("/");
        prop_assert_eq!(encoded.parse::<SubsystemId>().unwrap(), id);
    }

    #[test]
    fn arbitrary_input_never_panics(s in "\\PC{0,80}") {
        let _ = s.parse::<ClientId>();
        let _ = s.parse::<ServiceId>();
        let _ = R1Target::parse(&s);
    }

    #[test]
    fn any_disallowed_char_is_rejected_with_its_part(prefix in code(10), bad in any::<char>().prop_filter("not allowed", |c| !is_id_char(*c) && *c != '/' && *c != '%')) {
        let member = format!("{prefix}{bad}");
        let err = format!("VN/GOV/{member}").parse::<MemberId>().unwrap_err();
        prop_assert_eq!(err.part, IdPart::MemberCode);
        prop_assert_eq!(err.kind, IdErrorKind::InvalidChar { ch: bad, at: prefix.chars().count() });
    }
}

fn err<T: std::str::FromStr<Err = IdError> + std::fmt::Debug>(s: &str) -> IdError {
    s.parse::<T>().unwrap_err()
}

#[test]
fn vietnamese_agency_codes_parse() {
    for s in ["VN/GOV/000.00.00.G22/dancu", "VN/GOV/G09.20/thue", "VN/COM/0101234567/erp"] {
        let id: SubsystemId = s.parse().unwrap();
        assert_eq!(id.to_string(), s);
    }
    let svc: ServiceId = "VN/GOV/000.00.00.G01/csdlqg/tra-cuu-cong-dan".parse().unwrap();
    assert_eq!(svc.subsystem.member.code.as_str(), "000.00.00.G01");
    assert_eq!(svc.r1_path(), "/r1/VN/GOV/000.00.00.G01/csdlqg/tra-cuu-cong-dan");
}

#[test]
fn wrong_segment_counts_are_named() {
    let e = err::<ClientId>("VN/GOV");
    assert_eq!(e.part, IdPart::Identifier);
    assert!(matches!(e.kind, IdErrorKind::SegmentCount { found: 2, .. }));
    assert!(e.to_string().contains("3 or 4"), "{e}");
    let e = err::<ClientId>("VN/GOV/M/S/X");
    assert!(matches!(e.kind, IdErrorKind::SegmentCount { found: 5, .. }));
    let e = err::<ServiceId>("VN/GOV/M/S");
    assert!(matches!(e.kind, IdErrorKind::SegmentCount { found: 4, .. }));
    assert!(matches!(err::<NodeId>("VN/GOV/M").kind, IdErrorKind::SegmentCount { found: 3, .. }));
}

#[test]
fn each_part_is_named_when_rejected() {
    let cases: [(&str, IdPart, IdErrorKind); 8] = [
        ("/GOV/M/S/svc", IdPart::Instance, IdErrorKind::Empty),
        ("VN//M/S/svc", IdPart::MemberClass, IdErrorKind::Empty),
        ("VN/GOV/M /S/svc", IdPart::MemberCode, IdErrorKind::InvalidChar { ch: ' ', at: 1 }),
        ("VN/GOV/M/S%2Fx/svc", IdPart::SubsystemCode, IdErrorKind::InvalidChar { ch: '/', at: 1 }),
        ("VN/GOV/M/S/sv%zzc", IdPart::ServiceCode, IdErrorKind::BadPercentEncoding { at: 2 }),
        ("VN/GOV/M/S/svc%", IdPart::ServiceCode, IdErrorKind::BadPercentEncoding { at: 3 }),
        ("VN/GOV/M/%FF%FE/svc", IdPart::SubsystemCode, IdErrorKind::InvalidUtf8),
        ("VN/GOV/M/S/a\u{7}b", IdPart::ServiceCode, IdErrorKind::InvalidChar { ch: '\u{7}', at: 1 }),
    ];
    for (input, part, kind) in cases {
        let e = err::<ServiceId>(input);
        assert_eq!((e.part, &e.kind), (part, &kind), "{input:?}");
    }
}

#[test]
fn over_long_codes_are_rejected() {
    let long = "A".repeat(MAX_CODE_LEN + 1);
    let e = err::<MemberId>(&format!("VN/GOV/{long}"));
    assert_eq!(e.part, IdPart::MemberCode);
    assert_eq!(e.kind, IdErrorKind::TooLong { len: 256, max: 255 });
    assert!(e.to_string().starts_with("member code is 256 characters long, at most 255"), "{e}");
    assert!("VN/GOV/".to_owned().parse::<MemberId>().is_err());
    let ok = "A".repeat(MAX_CODE_LEN);
    assert!(format!("VN/GOV/{ok}").parse::<MemberId>().is_ok());
}

#[test]
fn control_characters_are_escaped_in_messages() {
    let e = err::<MemberId>("VN/GOV/a\nb");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg:?}");
    assert!(msg.contains(r"'\n'"), "{msg}");
}

#[test]
fn question_mark_is_escaped_only_in_paths() {
    let svc: ServiceId = "VN/GOV/M?/S/svc".parse().unwrap();
    assert_eq!(svc.to_string(), "VN/GOV/M?/S/svc");
    assert_eq!(svc.r1_path(), "/r1/VN/GOV/M%3F/S/svc");
}

#[test]
fn r1_paths() {
    let t = R1Target::parse("/r1/VN/GOV/000.00.00.G01/csdlqg/citizen/pets/1%2F2?x=1&y=%20").unwrap();
    assert_eq!(t.service.to_string(), "VN/GOV/000.00.00.G01/csdlqg/citizen");
    assert_eq!(t.rest, "/pets/1%2F2");
    assert_eq!(t.query.as_deref(), Some("x=1&y=%20"));

    let t = R1Target::parse("/r1/VN/GOV/M/S/svc/").unwrap();
    assert_eq!(t.rest, "/");

    assert_eq!(R1Target::parse("/r2/VN/GOV/M/S/svc"), Err(R1PathError::UnsupportedVersion("r2".into())));
    assert_eq!(R1Target::parse("/listClients"), Err(R1PathError::NotR1));
    assert_eq!(R1Target::parse("r1/VN/GOV/M/S/svc"), Err(R1PathError::NotR1));
    assert_eq!(R1Target::parse("/r1/VN/GOV/M"), Err(R1PathError::TooFewSegments { found: 3 }));
    assert_eq!(R1Target::parse("/r1"), Err(R1PathError::TooFewSegments { found: 1 }));
    let e = R1Target::parse("/r1/VN/GOV/M/S/").unwrap_err();
    assert_eq!(e, R1PathError::Id(IdError { part: IdPart::ServiceCode, kind: IdErrorKind::Empty }));
    assert_eq!(e.to_string(), "service service code is empty");
}

#[test]
fn serde_uses_the_string_form() {
    let id: ClientId = "VN/GOV/000.00.00.G22/portal".parse().unwrap();
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, r#""VN/GOV/000.00.00.G22/portal""#);
    assert_eq!(serde_json::from_str::<ClientId>(&json).unwrap(), id);
    let e = serde_json::from_str::<NodeId>(r#""VN/GOV""#).unwrap_err();
    assert!(e.to_string().contains("segments"), "{e}");
}
