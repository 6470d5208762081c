//! What is signed and hashed between nodes: the signed envelopes (every field bound, only a
//! registered, valid certificate of the right, active member accepted), their transport in a
//! header, the body check, the `X-Road-Request-Hash` and which headers travel.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};
use lienthong_exchange::envelope::{self, ENVELOPE_HEADER, MAX_ENVELOPE_BYTES};
use lienthong_exchange::headers;
use lienthong_globalconf::MemberStatus;
use lienthong_pki::{Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_proto::exchange::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, Fault};
use proptest::prelude::*;
use prost::Message;
use sha2::{Digest, Sha256, Sha512};
use support::*;

type Change<E> = (&'static str, fn(&mut E));

/// Every change a relay could make to a signed request, each alone.
fn request_changes() -> Vec<Change<pb::RequestEnvelope>> {
    vec![
        ("message id", |e| e.message_id.push('x')),
        ("request id", |e| e.request_id = "11111111-2222-3333-4444-555555555555".into()),
        ("method", |e| e.method = "DELETE".into()),
        ("path", |e| e.path = "/pets/8".into()),
        ("query", |e| e.query = "full=0".into()),
        ("query parameter added", |e| e.query.push_str("&admin=1")),
        ("header value", |e| e.headers[0].value = b"text/html".to_vec()),
        ("header name", |e| e.headers[0].name = "accept-language".into()),
        ("header added", |e| {
            e.headers.push(types_pb::Header { name: "x-extra".into(), value: b"1".to_vec() })
        }),
        ("header removed", |e| {
            e.headers.pop();
        }),
        ("headers reordered", |e| e.headers.reverse()),
        ("body sha", |e| e.body_sha256[0] ^= 1),
        ("body length", |e| e.body_length += 1),
        // Another subsystem of the same member, so only the signature can catch it.
        ("client", |e| e.client = Some((&ClientId::Subsystem(subsystem("VN/GOV/A/other"))).into())),
        ("client widened to the member", |e| e.client = Some((&ClientId::Member(member(A))).into())),
        ("service", |e| e.service = Some((&service(OPEN)).into())),
        ("created time", |e| e.created_at_ms += 1),
        ("user id", |e| e.user_id = "VN999".into()),
        ("issue", |e| e.issue.clear()),
        ("represented party", |e| e.represented_party = Some((&ClientId::Member(member(B))).into())),
        ("target node", |e| e.target_node = Some((&node(NODE_B2)).into())),
        ("consumer node", |e| e.consumer_node = Some((&node(NODE_B3)).into())),
        ("digest version", |e| e.digest_version = 2),
    ]
}

#[test]
fn a_signed_request_verifies_and_survives_the_header() {
    let f = Fixture::new();
    let env = f.request(PETS);
    assert_eq!(env.digest_version, envelope::DIGEST_VERSION);
    let signer = envelope::verify_request(&env, &member(A), &f.conf, f.now).unwrap();
    assert_eq!(signer, f.a.cert.fingerprint());

    let header = envelope::to_header(&env);
    let (back, bytes): (pb::RequestEnvelope, _) =
        envelope::from_header(Some(header.as_bytes()), Fault::InvalidMessage).unwrap();
    assert_eq!(back, env);
    assert_eq!(bytes, env.encode_to_vec(), "the exact bytes come back for the log record");
    assert_eq!(envelope::verify_request(&back, &member(A), &f.conf, f.now), Ok(signer));
    assert!(HeaderValue::from_str(&header).is_ok(), "usable as the {ENVELOPE_HEADER} header");
}

#[test]
fn every_field_of_a_request_is_bound_by_the_signature() {
    let f = Fixture::new();
    let signed = f.request(PETS);
    for (what, change) in request_changes() {
        let mut env = signed.clone();
        change(&mut env);
        assert_ne!(env, signed, "{what}: the change changes something");
        let r = envelope::verify_request(&env, &member(A), &f.conf, f.now);
        let fault = r.as_ref().map_err(|e| e.fault);
        assert_eq!(fault, Err(Fault::ServerInvalidSignatureValue), "{what}: {r:?}");
    }
}

#[test]
fn an_unsigned_request_is_missing_its_signature() {
    let f = Fixture::new();
    let mut stripped = f.request(PETS);
    stripped.signature = None;
    let r = envelope::verify_request(&stripped, &member(A), &f.conf, f.now).unwrap_err();
    assert_eq!(r.fault, Fault::ServerMissingSignature, "{r}");
    assert_eq!(r.fault.code(), "server.serverproxy.missing_signature");

    // A signature with its value emptied is no signature either.
    let mut empty = f.request(PETS);
    empty.signature.as_mut().unwrap().value.clear();
    let r = envelope::verify_request(&empty, &member(A), &f.conf, f.now).unwrap_err();
    assert_eq!(r.fault, Fault::ServerMissingSignature, "{r}");

    // Never signed at all.
    let r = envelope::verify_request(&f.unsigned_request(PETS), &member(A), &f.conf, f.now).unwrap_err();
    assert_eq!(r.fault, Fault::ServerMissingSignature, "{r}");
}

/// The ways a request can carry a proper-looking signature by the wrong party.
#[test]
fn only_a_registered_valid_certificate_of_the_active_client_member_is_accepted() {
    let mut f = Fixture::new();
    let invalid = |f: &Fixture, env: &pb::RequestEnvelope, needle: &str| {
        let r = envelope::verify_request(env, &member(A), &f.conf, f.now).unwrap_err();
        assert_eq!(r.fault, Fault::ServerInvalidSignatureValue, "{r}");
        assert_eq!(r.fault.code(), "server.serverproxy.invalid_signature_value");
        assert!(r.message.contains(needle), "{needle:?} in {r}");
    };

    // A's own key and a certificate the CA issued, but not one registered for A.
    let unlisted = issue(&f.ca, &member(A), f.now, Validity::days(30));
    let mut env = f.unsigned_request(PETS);
    envelope::sign_request(&mut env, unlisted.signer()).unwrap();
    invalid(&f, &env, "not registered for member VN/GOV/A");

    // B's registered key, signing a request that claims client A.
    let mut env = f.unsigned_request(PETS);
    envelope::sign_request(&mut env, f.b.signer()).unwrap();
    invalid(&f, &env, "not member VN/GOV/A");

    // A's certificate from last month, registered but expired.
    let old = issue(&f.ca, &member(A), f.now - Duration::from_secs(40 * 86_400), Validity::days(30));
    f.member_mut(A).signing_certs.insert(old.cert.fingerprint());
    let mut env = f.unsigned_request(PETS);
    envelope::sign_request(&mut env, old.signer()).unwrap();
    invalid(&f, &env, "expired");

    // The signature names one certificate, the envelope carries another registered one.
    let second = issue(&f.ca, &member(A), f.now, Validity::days(30));
    f.member_mut(A).signing_certs.insert(second.cert.fingerprint());
    let mut env = f.request(PETS);
    env.signer_certificate = second.cert.der().to_vec();
    invalid(&f, &env, "names another certificate");
    // ... and with the name fixed too, the signature is by the other key.
    env.signature.as_mut().unwrap().signer_sha256 = second.cert.fingerprint().0.to_vec();
    invalid(&f, &env, "does not verify");

    // Garbage in place of the certificate.
    let mut env = f.request(PETS);
    env.signer_certificate = b"not a certificate".to_vec();
    invalid(&f, &env, "malformed");

    // A closed member signs nothing any more, with a certificate that was fine.
    let env = f.request(PETS);
    assert!(envelope::verify_request(&env, &member(A), &f.conf, f.now).is_ok());
    f.member_mut(A).status = MemberStatus::Closed;
    invalid(&f, &env, "not registered for member VN/GOV/A");
    f.member_mut(A).status = MemberStatus::Superseded;
    invalid(&f, &env, "not registered for member VN/GOV/A");
    f.conf.members.remove(&member(A));
    invalid(&f, &env, "not registered for member VN/GOV/A");
}

#[test]
fn unknown_or_mismatched_signature_algorithms_are_refused() {
    let f = Fixture::new();
    let mut env = f.request(PETS);
    env.signature.as_mut().unwrap().algorithm = types_pb::SignatureAlgorithm::Unspecified as i32;
    let r = envelope::verify_request(&env, &member(A), &f.conf, f.now).unwrap_err();
    assert_eq!(r.fault, Fault::ServerInvalidSignatureValue);
    assert!(r.message.contains("unknown signature algorithm"), "{r}");
    env.signature.as_mut().unwrap().algorithm = 999;
    let r = envelope::verify_request(&env, &member(A), &f.conf, f.now).unwrap_err();
    assert!(r.message.contains("unknown signature algorithm"), "{r}");
}

#[test]
fn responses_are_checked_the_same_way_with_the_consumer_codes() {
    let mut f = Fixture::new();
    let signed = f.response();
    assert_eq!(envelope::verify_response(&signed, &member(B), &f.conf, f.now), Ok(f.b.cert.fingerprint()));
    let fault = |f: &Fixture, env: &pb::ResponseEnvelope| {
        envelope::verify_response(env, &member(B), &f.conf, f.now).map_err(|r| r.fault)
    };

    let changes: Vec<Change<pb::ResponseEnvelope>> = vec![
        ("message id", |e| e.message_id.push('x')),
        ("request id", |e| e.request_id.push('x')),
        ("client", |e| e.client = Some((&ClientId::Subsystem(subsystem("VN/GOV/A/other"))).into())),
        ("service", |e| e.service = Some((&service(OPEN)).into())),
        ("request hash", |e| e.request_hash = "b3RoZXI=".into()),
        ("status", |e| e.status = 500),
        ("header", |e| e.headers[0].value = b"text/html".to_vec()),
        ("fault added", |e| {
            e.fault = Some(types_pb::Fault {
                code: "server.serverproxy.access_denied".into(),
                ..Default::default()
            })
        }),
        ("provider node", |e| e.provider_node = Some((&node(NODE_B2)).into())),
        ("created time", |e| e.created_at_ms -= 1),
        ("body sha", |e| e.body_sha256[31] ^= 0x80),
        ("body length", |e| e.body_length -= 1),
    ];
    for (what, change) in changes {
        let mut env = signed.clone();
        change(&mut env);
        assert_eq!(fault(&f, &env), Err(Fault::ClientInvalidSignatureValue), "{what}");
    }

    let mut stripped = signed.clone();
    stripped.signature = None;
    assert_eq!(fault(&f, &stripped), Err(Fault::ClientMissingSignature));
    assert_eq!(Fault::ClientMissingSignature.code(), "server.clientproxy.missing_signature");

    // Signed by the client member instead of the provider.
    let mut by_a = signed.clone();
    envelope::sign_response(&mut by_a, f.a.signer()).unwrap();
    assert_eq!(fault(&f, &by_a), Err(Fault::ClientInvalidSignatureValue));

    // An unregistered and an expired certificate of B.
    let unlisted = issue(&f.ca, &member(B), f.now, Validity::days(30));
    let mut env = signed.clone();
    envelope::sign_response(&mut env, unlisted.signer()).unwrap();
    assert_eq!(fault(&f, &env), Err(Fault::ClientInvalidSignatureValue));
    let old = issue(&f.ca, &member(B), f.now - Duration::from_secs(40 * 86_400), Validity::days(30));
    f.member_mut(B).signing_certs.insert(old.cert.fingerprint());
    let mut env = signed.clone();
    envelope::sign_response(&mut env, old.signer()).unwrap();
    assert_eq!(fault(&f, &env), Err(Fault::ClientInvalidSignatureValue));

    // A closed provider member signs nothing any more.
    f.member_mut(B).status = MemberStatus::Closed;
    assert_eq!(fault(&f, &signed), Err(Fault::ClientInvalidSignatureValue), "closed provider member");
    assert_eq!(Fault::ClientInvalidSignatureValue.code(), "server.clientproxy.invalid_signature_value");
}

#[test]
fn from_header_refuses_bad_transport_with_the_given_fault() {
    type Req = pb::RequestEnvelope;
    let bad = |value: Option<&[u8]>, fault: Fault| {
        envelope::from_header::<Req>(value, fault).map(|_| ()).unwrap_err()
    };

    let r = bad(None, Fault::InvalidMessage);
    assert_eq!(r.fault, Fault::InvalidMessage);
    assert!(r.message.contains("missing"), "{r}");

    let r = bad(Some(b"not base64!"), Fault::InconsistentResponse);
    assert_eq!(r.fault, Fault::InconsistentResponse);
    assert!(r.message.contains("not base64"), "{r}");

    let huge = "A".repeat(MAX_ENVELOPE_BYTES * 4 / 3 + 8);
    let r = bad(Some(huge.as_bytes()), Fault::InvalidMessage);
    assert_eq!(r.fault, Fault::InvalidMessage);
    assert!(r.message.contains("too large"), "{r}");

    // Valid base64 of bytes that are not a protobuf message: an invalid wire type, a truncated
    // varint, a length running past the end.
    for garbage in [&[0x0f][..], &[0xff, 0xff, 0xff], &[0x0a, 0x40, b'x']] {
        let value = STANDARD.encode(garbage);
        let r = bad(Some(value.as_bytes()), Fault::ClientInvalidSignatureValue);
        assert_eq!(r.fault, Fault::ClientInvalidSignatureValue, "{garbage:?}");
        assert!(r.message.contains("malformed"), "{garbage:?}: {r}");
    }

    // The largest envelope allowed still decodes.
    let f = Fixture::new();
    let mut env = f.unsigned_request(PETS);
    let room = MAX_ENVELOPE_BYTES - env.encoded_len() - 16;
    env.issue = "x".repeat(room);
    let header = envelope::to_header(&env);
    assert!(header.len() <= MAX_ENVELOPE_BYTES * 4 / 3 + 4);
    let (back, _) = envelope::from_header::<Req>(Some(header.as_bytes()), Fault::InvalidMessage).unwrap();
    assert_eq!(back, env);
}

#[test]
fn the_signed_size_is_bounded_before_signing_for_every_algorithm() {
    let f = Fixture::new();
    for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256, KeyAlgorithm::RsaPss] {
        let key = PrivateKey::generate(alg).unwrap();
        let m = member(A);
        let cert =
            f.ca.issue_member(&Csr::for_member(&key, &m).unwrap(), &m, Validity::days(1), f.now).unwrap();
        let mut req = f.unsigned_request(PETS);
        let bound = envelope::request_len_when_signed(&req, &cert);
        envelope::sign_request(&mut req, envelope::Signer { key: &key, certificate: &cert }).unwrap();
        assert!(req.encoded_len() <= bound, "{alg:?}: {} > {bound}", req.encoded_len());
        // Close enough to be useful: the slack is the room for the largest signature.
        assert!(bound - req.encoded_len() <= 1024, "{alg:?}: {} vs {bound}", req.encoded_len());

        let mut resp = f.response();
        resp.signature = None;
        resp.signer_certificate.clear();
        let bound = envelope::response_len_when_signed(&resp, &cert);
        envelope::sign_response(&mut resp, envelope::Signer { key: &key, certificate: &cert }).unwrap();
        assert!(resp.encoded_len() <= bound, "{alg:?}: {} > {bound}", resp.encoded_len());
    }
    // The peer header limit holds the largest envelope header and the other headers.
    let largest = envelope::MAX_ENVELOPE_HEADER_LEN;
    assert_eq!(largest, STANDARD.encode(vec![0u8; MAX_ENVELOPE_BYTES]).len());
    assert!(envelope::MAX_PEER_HEADER_LIST_BYTES as usize >= largest + ENVELOPE_HEADER.len() + 32 + 1024);
}

#[test]
fn check_body_compares_digest_and_length() {
    let body = b"{\"ho_ten\":\"Nguyen Van A\"}";
    let sha: [u8; 32] = Sha256::digest(body).into();
    let len = body.len() as u64;
    assert_eq!(envelope::check_body(&sha, len, &sha, len, Fault::ServerInvalidSignatureValue), Ok(()));

    let other: [u8; 32] = Sha256::digest(b"{}").into();
    let r = envelope::check_body(&sha, len, &other, len, Fault::ServerInvalidSignatureValue).unwrap_err();
    assert_eq!(r.fault, Fault::ServerInvalidSignatureValue);
    assert!(r.message.contains("altered"), "{r}");
    let r = envelope::check_body(&sha, len, &sha, len + 1, Fault::ClientInvalidSignatureValue).unwrap_err();
    assert_eq!(r.fault, Fault::ClientInvalidSignatureValue);
    // A digest of the wrong size never matches.
    let r = envelope::check_body(&sha[..31], len, &sha, len, Fault::ServerInvalidSignatureValue);
    assert!(r.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Flipping any bits of any one byte of a signed request never yields a different request
    /// that still verifies: either it no longer decodes, or it decodes to the same request, or
    /// verification fails.
    #[test]
    fn no_single_byte_change_of_a_signed_request_verifies(
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let f = fixture();
        let signed = f.request(PETS);
        let mut bytes = signed.encode_to_vec();
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(changed) = pb::RequestEnvelope::decode(bytes.as_slice())
            && changed != signed
        {
            let r = envelope::verify_request(&changed, &member(A), &f.conf, f.now);
            prop_assert!(r.is_err(), "byte {} ^ {:#04x} verified: {:?}", i, flip, changed);
        }
    }
}

/// The same property checked at every byte, with the lowest and the highest bit, so no
/// position is left to chance.
#[test]
fn no_byte_of_a_signed_request_can_be_changed_unnoticed() {
    let f = fixture();
    let signed = f.request(PETS);
    let bytes = signed.encode_to_vec();
    for i in 0..bytes.len() {
        for flip in [0x01, 0x80] {
            let mut changed = bytes.clone();
            changed[i] ^= flip;
            if let Ok(env) = pb::RequestEnvelope::decode(changed.as_slice())
                && env != signed
            {
                let r = envelope::verify_request(&env, &member(A), &f.conf, f.now);
                assert!(r.is_err(), "byte {i} ^ {flip:#04x} verified");
            }
        }
    }
}

/// One fixture for all proptest cases: making a CA and keys per case would dominate the time.
fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(Fixture::new)
}

// --- X-Road-Request-Hash and forwarded headers ---

fn header(name: &str, value: &str) -> types_pb::Header {
    types_pb::Header { name: name.into(), value: value.as_bytes().to_vec() }
}

/// The protocol text, followed literally: H = SHA-512(METHOD CRLF path?query CRLF then
/// `Name:Value CRLF` per header); the hash is base64(SHA-512(H || SHA-512(body))), or base64(H)
/// without a body.
fn by_the_book(method: &str, path_and_query: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> String {
    let mut serialised = format!("{method}\r\n{path_and_query}\r\n").into_bytes();
    for (n, v) in headers {
        serialised.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
    }
    let h = Sha512::digest(&serialised);
    match body {
        None => STANDARD.encode(h),
        Some(b) => {
            let mut both = h.to_vec();
            both.extend_from_slice(&Sha512::digest(b));
            STANDARD.encode(Sha512::digest(&both))
        }
    }
}

#[test]
fn request_hash_matches_the_protocol_text() {
    let pq = "/r1/VN/GOV/000.00.00.G01/dancu/cong-dan/001090012345?fields=ho_ten&x=%2F";
    let pairs = [
        ("accept", "application/json"),
        ("x-road-client", "VN/GOV/000.00.00.G02/cong-dvc"),
        ("x-road-id", "VN-1"),
        ("x-road-request-id", "0b8e4e1c-7d1a-4a55-9d0e-2c3f4a5b6c7d"),
        ("x-custom", "giữ nguyên"),
    ];
    let hs: Vec<_> = pairs.iter().map(|(n, v)| header(n, v)).collect();

    let body = "{\"ho_ten\":\"Nguyễn Văn A\"}".as_bytes();
    let body_sha: [u8; 64] = Sha512::digest(body).into();
    let with_body = headers::request_hash("POST", pq, &hs, Some(&body_sha));
    assert_eq!(with_body, by_the_book("POST", pq, &pairs, Some(body)));

    let without = headers::request_hash("GET", pq, &hs, None);
    assert_eq!(without, by_the_book("GET", pq, &pairs, None));
    assert_eq!(STANDARD.decode(&without).unwrap().len(), 64);

    // An empty body hashed as a body is not the same as no body.
    let empty: [u8; 64] = Sha512::digest(b"").into();
    assert_eq!(
        headers::request_hash("GET", pq, &hs, Some(&empty)),
        by_the_book("GET", pq, &pairs, Some(b""))
    );
    assert_ne!(headers::request_hash("GET", pq, &hs, Some(&empty)), without);

    // No headers at all: just the request line.
    assert_eq!(
        headers::request_hash("DELETE", "/r1/a", &[], None),
        by_the_book("DELETE", "/r1/a", &[], None)
    );

    // The header order counts.
    let mut reversed = hs.clone();
    reversed.reverse();
    assert_ne!(headers::request_hash("GET", pq, &reversed, None), without);
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    m
}

fn names(hs: &[types_pb::Header]) -> Vec<String> {
    hs.iter().map(|h| format!("{}={}", h.name, String::from_utf8_lossy(&h.value))).collect()
}

#[test]
fn hop_by_hop_and_revealing_headers_do_not_travel_and_the_rest_keeps_its_order() {
    let not_forwarded = [
        "transfer-encoding",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "connection",
        "user-agent",
        "host",
        "content-length",
        "server",
        "expect",
    ];
    let mut pairs: Vec<(&str, &str)> = vec![("accept", "application/json")];
    pairs.extend(not_forwarded.iter().map(|n| (*n, "v")));
    pairs.extend([
        ("x-road-client", "VN/GOV/A/cons"),
        ("x-road-userid", "VN012"),
        ("x-road-issue", "HS-1"),
        ("x-road-represented-party", "VN/GOV/C"),
        ("x-road-security-server", "VN/GOV/B/ss-b1"),
        ("x-road-id", "VN-1"),
        ("x-road-request-id", "forged"),
        ("x-road-request-hash", "forged"),
        ("x-multi", "1"),
        ("content-type", "application/json"),
        ("x-multi", "2"),
    ]);
    let out = headers::forwarded_request_headers(&header_map(&pairs));
    // HeaderMap groups repeated names at the first occurrence; order is otherwise kept.
    assert_eq!(
        names(&out),
        [
            "accept=application/json",
            "x-road-client=VN/GOV/A/cons",
            "x-road-userid=VN012",
            "x-road-issue=HS-1",
            "x-road-represented-party=VN/GOV/C",
            "x-road-security-server=VN/GOV/B/ss-b1",
            "x-road-id=VN-1",
            "x-multi=1",
            "x-multi=2",
            "content-type=application/json",
        ]
    );

    // Headers named in Connection are hop-by-hop too, whatever their case and spacing.
    let out = headers::forwarded_request_headers(&header_map(&[
        ("connection", " X-Private ,keep-alive,, x-other"),
        ("x-private", "secret"),
        ("x-other", "secret"),
        ("x-kept", "1"),
    ]));
    assert_eq!(names(&out), ["x-kept=1"]);

    // In responses the node sets the X-Road ids itself; the backend's pass only otherwise.
    let out = headers::forwarded_response_headers(&header_map(&[
        ("content-type", "application/json"),
        ("x-road-id", "forged"),
        ("x-road-client", "forged"),
        ("x-road-service", "forged"),
        ("x-road-request-id", "forged"),
        ("x-road-request-hash", "forged"),
        ("x-road-userid", "kept"),
        ("location", "/pets/8"),
        ("server", "nginx"),
        ("content-length", "2"),
        ("transfer-encoding", "chunked"),
    ]));
    assert_eq!(names(&out), ["content-type=application/json", "x-road-userid=kept", "location=/pets/8"]);
}

#[test]
fn header_lists_turn_back_into_http_headers() {
    let list = vec![
        header("accept", "a"),
        header("x-multi", "1"),
        types_pb::Header { name: "bad name".into(), value: b"v".to_vec() },
        types_pb::Header { name: "x-bad-value".into(), value: b"a\r\nb".to_vec() },
        header("x-multi", "2"),
    ];
    let pairs = headers::to_header_pairs(&list);
    let got: Vec<_> = pairs.iter().map(|(n, v)| format!("{n}={}", v.to_str().unwrap())).collect();
    assert_eq!(got, ["accept=a", "x-multi=1", "x-multi=2"]);
    let map = headers::to_header_map(&list);
    let multi: Vec<_> = map.get_all("x-multi").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(multi, ["1", "2"]);
    assert_eq!(headers::header_value(&list, "x-multi"), Some(&b"1"[..]));
    assert_eq!(headers::header_value(&list, "x-none"), None);

    // The log keeps a digest of the headers in order, in the same `name:value CRLF` form.
    let expected: [u8; 32] = Sha256::digest(b"accept:a\r\nx-multi:1\r\n").into();
    assert_eq!(headers::headers_sha256(&list[..2]), expected);
}
