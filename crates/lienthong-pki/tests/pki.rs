//! Keys, the CA and certificates: what an operator and the registry rely on.

use std::time::{Duration, SystemTime};

use lienthong_pki::*;
use lienthong_types::{InstanceId, MemberId, NodeId};

fn node(s: &str) -> NodeId {
    s.parse().unwrap()
}

fn member(s: &str) -> MemberId {
    s.parse().unwrap()
}

fn ca(instance: &str) -> CertificateAuthority {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    CertificateAuthority::init(
        InstanceId::new(instance).unwrap(),
        &key,
        Validity::days(3650),
        SystemTime::now(),
    )
    .unwrap()
}

#[test]
fn every_algorithm_signs_and_verifies_detached() {
    for alg in KeyAlgorithm::ALL {
        let key = PrivateKey::generate(alg).unwrap();
        assert_eq!(key.algorithm(), alg);
        let msg = b"GET /r1/VN/GOV/000.00.00.G01/csdlqg/citizen";
        let sig = key.sign(msg).unwrap();
        let public = key.public_key();
        public.verify(msg, &sig).unwrap();
        assert_eq!(
            public.verify(b"GET /r1/VN/GOV/000.00.00.G01/csdlqg/citizeN", &sig),
            Err(SignatureError::Invalid),
            "{alg}"
        );
        let mut bad = sig.clone();
        bad[sig.len() / 2] ^= 0x40;
        assert_eq!(public.verify(msg, &bad), Err(SignatureError::Invalid), "{alg}");
        // A signature by another key of the same type does not verify either.
        let other = PrivateKey::generate(alg).unwrap().sign(msg).unwrap();
        assert_eq!(public.verify(msg, &other), Err(SignatureError::Invalid), "{alg}");
    }
}

#[test]
fn algorithm_names_parse_and_unknown_names_are_explained() {
    for alg in KeyAlgorithm::ALL {
        assert_eq!(alg.name().parse::<KeyAlgorithm>().unwrap(), alg);
    }
    let e = "dsa".parse::<KeyAlgorithm>().unwrap_err();
    assert!(e.to_string().contains("ed25519, ecdsa-p256, rsa-pss"), "{e}");
}

#[test]
fn keys_round_trip_through_plain_and_encrypted_pem() {
    for alg in KeyAlgorithm::ALL {
        let key = PrivateKey::generate(alg).unwrap();
        let plain = PrivateKey::from_pem(&key.to_pem(), None).unwrap();
        assert_eq!(plain.public_key(), key.public_key());

        let pem = key.to_encrypted_pem(b"correct horse").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let back = PrivateKey::from_pem(&pem, Some(b"correct horse")).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert!(matches!(PrivateKey::from_pem(&pem, Some(b"wrong horse")), Err(KeyError::WrongPassphrase)));
        assert!(matches!(PrivateKey::from_pem(&pem, None), Err(KeyError::PassphraseRequired)));
    }
}

#[test]
fn key_loading_errors_are_distinct() {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    assert!(matches!(key.to_encrypted_pem(b""), Err(KeyError::EmptyPassphrase)));
    let cert_pem = ca("VN").certificate().to_pem();
    match PrivateKey::from_pem(&cert_pem, None) {
        Err(KeyError::NotAKey { found }) => assert_eq!(found, "CERTIFICATE"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(PrivateKey::from_pem("not pem at all", None), Err(KeyError::Malformed(_))));
    // The Debug form never shows key material.
    assert_eq!(format!("{key:?}"), "PrivateKey { alg: Ed25519, .. }");
}

#[test]
fn ca_issues_node_and_member_certificates_that_carry_the_id() {
    let ca = ca("VN");
    let info = ca.certificate().info().unwrap();
    assert!(info.is_ca);
    assert_eq!(info.identity, Identity::Ca(InstanceId::new("VN").unwrap()));

    for alg in KeyAlgorithm::ALL {
        let node_id = node("VN/GOV/000.00.00.G22/ss1");
        let key = PrivateKey::generate(alg).unwrap();
        let csr = Csr::for_node(&key, &node_id).unwrap();
        let csr = Csr::from_pem(&csr.to_pem()).unwrap();
        assert_eq!(csr.identity().unwrap(), Identity::Node(node_id.clone()));
        assert_eq!(csr.public_key().unwrap(), key.public_key());
        let cert = ca.issue_node(&csr, &node_id, Validity::days(365), SystemTime::now()).unwrap();
        let info = Certificate::from_pem(&cert.to_pem()).unwrap().info().unwrap();
        assert_eq!(info.identity, Identity::Node(node_id));
        assert_eq!(info.public_key, key.public_key());
        assert_eq!(info.fingerprint, Fingerprint::of(cert.der()));
        assert_eq!(info.fingerprint.to_string().len(), 64);
        assert!(!info.is_ca);
        assert!(info.is_valid_at(SystemTime::now()));
        assert!(!info.is_valid_at(SystemTime::now() + Duration::from_secs(366 * 86_400)));
    }

    let m = member("VN/GOV/000.00.00.G01");
    let key = PrivateKey::generate(KeyAlgorithm::RsaPss).unwrap();
    let cert = ca
        .issue_member(&Csr::for_member(&key, &m).unwrap(), &m, Validity::days(365), SystemTime::now())
        .unwrap();
    let info = cert.info().unwrap();
    assert_eq!(info.identity, Identity::Member(m));
    // A detached signature by the member key verifies with the certificate's public key.
    info.public_key.verify(b"body", &key.sign(b"body").unwrap()).unwrap();
}

#[test]
fn identities_with_question_marks_survive_the_certificate() {
    let ca = ca("VN");
    let node_id = node("VN/GOV/odd?code/ss?1");
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let cert =
        ca.issue(&Csr::for_node(&key, &node_id).unwrap(), Validity::days(1), SystemTime::now()).unwrap();
    assert_eq!(cert.identity().unwrap(), Identity::Node(node_id));
}

#[test]
fn ca_refuses_requests_it_should_not_sign() {
    let ca = ca("VN");
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let now = SystemTime::now();
    let v = Validity::days(1);

    let foreign = Csr::for_node(&key, &node("HN/GOV/000.00.00.H01/ss1")).unwrap();
    assert!(matches!(ca.issue(&foreign, v, now), Err(CertError::WrongInstance { .. })));

    let member_csr = Csr::for_member(&key, &member("VN/GOV/G01")).unwrap();
    assert!(matches!(
        ca.issue_node(&member_csr, &node("VN/GOV/G01/ss1"), v, now),
        Err(CertError::WrongRole { .. })
    ));

    let other_node = Csr::for_node(&key, &node("VN/GOV/G01/ss2")).unwrap();
    assert!(matches!(
        ca.issue_node(&other_node, &node("VN/GOV/G01/ss1"), v, now),
        Err(CertError::IdentityMismatch { .. })
    ));

    // A request whose signature no longer matches its content (proof of possession fails).
    let mut der = other_node.der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    assert!(matches!(Csr::from_der(der), Err(CertError::MalformedCsr(_))));
}

#[test]
fn ca_reloads_only_with_its_own_key() {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let ca = CertificateAuthority::init(
        InstanceId::new("VN").unwrap(),
        &key,
        Validity::days(10),
        SystemTime::now(),
    )
    .unwrap();
    let cert = ca.certificate().clone();
    let reloaded =
        CertificateAuthority::load(cert.clone(), &PrivateKey::from_pem(&key.to_pem(), None).unwrap())
            .unwrap();
    let node_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let issued = reloaded
        .issue(
            &Csr::for_node(&node_key, &node("VN/GOV/G01/ss1")).unwrap(),
            Validity::days(1),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(issued.info().unwrap().issuer, cert.info().unwrap().subject);

    let stranger = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    assert!(matches!(CertificateAuthority::load(cert, &stranger), Err(CertError::KeyMismatch)));
    assert!(matches!(CertificateAuthority::load(issued, &node_key), Err(CertError::NotCa)));
}

#[test]
fn fingerprints_parse_in_both_forms() {
    let fp = Fingerprint::of(b"x");
    let colons = fp.0.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    assert_eq!(colons.parse::<Fingerprint>().unwrap(), fp);
    assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
    assert!("abcd".parse::<Fingerprint>().is_err());
}

mod identity_round_trip {
    use super::*;
    use proptest::prelude::*;

    const CHARS: &str = "ABCZabcz0189'()+,-.=?";

    fn code(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(CHARS.chars().collect::<Vec<_>>()), 1..=max)
            .prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        // Each case issues a real certificate, so keep the count modest.
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever valid id a request names, the issued certificate names exactly it.
        #[test]
        fn any_id_survives_request_and_certificate(class in code(16), member_code in code(64), server in code(64)) {
            let ca = ca("VN");
            let node: NodeId = format!("VN/{class}/{member_code}/{server}").parse().unwrap();
            let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
            let csr = Csr::from_pem(&Csr::for_node(&key, &node).unwrap().to_pem()).unwrap();
            let cert = ca.issue_node(&csr, &node, Validity::days(1), SystemTime::now()).unwrap();
            prop_assert_eq!(cert.identity().unwrap(), Identity::Node(node.clone()));
            let member = node.owner.clone();
            let csr = Csr::for_member(&key, &member).unwrap();
            let cert = ca.issue_member(&csr, &member, Validity::days(1), SystemTime::now()).unwrap();
            prop_assert_eq!(cert.identity().unwrap(), Identity::Member(member));
        }
    }
}

#[test]
fn absurd_validity_is_an_error_not_a_panic() {
    let ca = ca("VN");
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let csr = Csr::for_node(&key, &node("VN/GOV/G01/ss1")).unwrap();
    for days in [u64::MAX, 10_000_000] {
        let r = ca.issue(&csr, Validity::days(days), SystemTime::now());
        assert!(matches!(r, Err(CertError::ValidityOutOfRange { .. })), "{days}: {r:?}");
    }
}

#[test]
fn bodies_sealed_at_rest_open_only_with_the_same_key_and_record() {
    use lienthong_pki::{BodyKey, SealError};
    let (key, raw) = BodyKey::generate().unwrap();
    let again = BodyKey::from_bytes(&raw).unwrap();
    assert_eq!(key.id(), again.id());
    let (nonce, sealed) = key.seal(b"{\"cccd\":\"012345678901\"}", b"record-1").unwrap();
    assert_eq!(again.open(&nonce, &sealed, b"record-1").unwrap(), b"{\"cccd\":\"012345678901\"}");
    assert_eq!(key.open(&nonce, &sealed, b"record-2"), Err(SealError::Open), "bound to its record");
    let mut flipped = sealed.clone();
    flipped[0] ^= 1;
    assert_eq!(key.open(&nonce, &flipped, b"record-1"), Err(SealError::Open));
    let (other, _) = BodyKey::generate().unwrap();
    assert_ne!(other.id(), key.id());
    assert_eq!(other.open(&nonce, &sealed, b"record-1"), Err(SealError::Open));
    assert_eq!(BodyKey::from_bytes(&[0; 16]).unwrap_err(), SealError::KeyLength(16));
    let (nonce2, _) = key.seal(b"x", b"").unwrap();
    assert_ne!(nonce, nonce2, "a fresh nonce per body");
}
