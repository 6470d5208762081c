//! A peer node is accepted only if its chain leads to an approved CA and its certificate is the
//! one registered for the node expected; every other case is rejected with its own reason, both
//! by the verifier itself and in a real TLS handshake on loopback.

mod support;

use support::{handshake, reason};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lienthong_pki::tls::{self, PeerRole, TlsIdentity, TrustPolicy};
use lienthong_pki::*;
use lienthong_types::{InstanceId, NodeId};
use rustls::pki_types::pem::PemObject;

fn node(s: &str) -> NodeId {
    s.parse().unwrap()
}

struct Pki {
    ca: CertificateAuthority,
}

impl Pki {
    fn new(instance: &str) -> Self {
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let ca = CertificateAuthority::init(
            InstanceId::new(instance).unwrap(),
            &key,
            Validity::days(3650),
            SystemTime::now(),
        )
        .unwrap();
        Self { ca }
    }

    fn node_at(&self, id: &NodeId, alg: KeyAlgorithm, issued: SystemTime, days: u64) -> TlsIdentity {
        let key = PrivateKey::generate(alg).unwrap();
        let csr = Csr::for_node(&key, id).unwrap();
        let cert = self.ca.issue_node(&csr, id, Validity::days(days), issued).unwrap();
        TlsIdentity { chain: vec![cert], key: Arc::new(key) }
    }

    fn node(&self, id: &NodeId) -> TlsIdentity {
        self.node_at(id, KeyAlgorithm::Ed25519, SystemTime::now(), 365)
    }
}

fn fp(id: &TlsIdentity) -> Fingerprint {
    id.chain[0].fingerprint()
}

fn check(
    policy: &TrustPolicy,
    peer: &TlsIdentity,
    expected: Option<&NodeId>,
) -> Result<NodeId, PeerRejected> {
    policy
        .verify_peer(peer.chain[0].der(), &[], PeerRole::Server, expected, SystemTime::now())
        .map(|p| p.node().clone())
}

#[test]
fn each_rejection_has_its_own_reason() {
    let pki = Pki::new("VN");
    let a = node("VN/GOV/000.00.00.G01/ss1");
    let b = node("VN/GOV/000.00.00.G12/ss1");
    let peer_a = pki.node(&a);
    let peer_b = pki.node(&b);
    let policy =
        TrustPolicy::new([pki.ca.certificate()], [(a.clone(), fp(&peer_a)), (b.clone(), fp(&peer_b))])
            .unwrap();

    // Good chain, registered fingerprint, expected node: accepted, for every key type.
    assert_eq!(check(&policy, &peer_a, Some(&a)), Ok(a.clone()));
    for alg in KeyAlgorithm::ALL {
        let peer = pki.node_at(&a, alg, SystemTime::now(), 30);
        let policy = TrustPolicy::new([pki.ca.certificate()], [(a.clone(), fp(&peer))]).unwrap();
        assert_eq!(check(&policy, &peer, Some(&a)), Ok(a.clone()), "{alg}");
    }

    // A certificate from a CA that is not approved, even with a registered fingerprint.
    let rogue = Pki::new("VN").node(&a);
    let policy_rogue = TrustPolicy::new([pki.ca.certificate()], [(a.clone(), fp(&rogue))]).unwrap();
    assert_eq!(check(&policy_rogue, &rogue, Some(&a)), Err(PeerRejected::UnknownCa));

    // The right CA, but not the certificate registered for that node (e.g. a re-issued key).
    let unregistered = pki.node(&a);
    assert_eq!(
        check(&policy, &unregistered, Some(&a)),
        Err(PeerRejected::NotRegistered { fingerprint: fp(&unregistered) })
    );

    // Expired.
    let old =
        pki.node_at(&a, KeyAlgorithm::Ed25519, SystemTime::now() - Duration::from_secs(90 * 86_400), 30);
    let policy_old = TrustPolicy::new([pki.ca.certificate()], [(a.clone(), fp(&old))]).unwrap();
    assert_eq!(check(&policy_old, &old, Some(&a)), Err(PeerRejected::Expired));

    // Not valid yet.
    let future = pki.node_at(&a, KeyAlgorithm::Ed25519, SystemTime::now() + Duration::from_secs(86_400), 30);
    let policy_future = TrustPolicy::new([pki.ca.certificate()], [(a.clone(), fp(&future))]).unwrap();
    assert_eq!(check(&policy_future, &future, Some(&a)), Err(PeerRejected::NotYetValid));

    // A registered node, but not the one we meant to reach.
    assert_eq!(
        check(&policy, &peer_b, Some(&a)),
        Err(PeerRejected::WrongNode { expected: Box::new(a.clone()), presented: Box::new(b.clone()) })
    );

    // A fingerprint registered for one node on a certificate that names another.
    let policy_swapped = TrustPolicy::new([pki.ca.certificate()], [(a.clone(), fp(&peer_b))]).unwrap();
    assert_eq!(
        check(&policy_swapped, &peer_b, None),
        Err(PeerRejected::IdentityMismatch {
            registered: Box::new(a.clone()),
            presented: Box::new(b.clone())
        })
    );

    // Tampered signature: the fingerprint of the tampered bytes is even registered.
    let mut der = peer_a.chain[0].der().to_vec();
    *der.last_mut().unwrap() ^= 0x01; // the last byte is inside the signature
    let tampered = Certificate::from_der(der).unwrap();
    let policy_t = TrustPolicy::new([pki.ca.certificate()], [(a.clone(), tampered.fingerprint())]).unwrap();
    assert_eq!(
        policy_t.verify_peer(tampered.der(), &[], PeerRole::Server, Some(&a), SystemTime::now()),
        Err(PeerRejected::BadSignature)
    );

    // A member signing certificate is not a node authentication certificate.
    let m = "VN/GOV/000.00.00.G01".parse().unwrap();
    let mkey = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let mcert = pki
        .ca
        .issue_member(&Csr::for_member(&mkey, &m).unwrap(), &m, Validity::days(1), SystemTime::now())
        .unwrap();
    let r = policy.verify_peer(mcert.der(), &[], PeerRole::Client, None, SystemTime::now());
    assert!(matches!(r, Err(PeerRejected::Invalid(_)) | Err(PeerRejected::NotNodeCertificate)), "{r:?}");
}

#[tokio::test]
async fn mutual_tls_between_registered_nodes() {
    let pki = Pki::new("VN");
    let consumer = node("VN/GOV/000.00.00.G22/ss1");
    let provider = node("VN/GOV/000.00.00.G01/ss1");
    let c = pki.node_at(&consumer, KeyAlgorithm::EcdsaP256, SystemTime::now(), 30);
    let p = pki.node_at(&provider, KeyAlgorithm::RsaPss, SystemTime::now(), 30);
    let policy = Arc::new(
        TrustPolicy::new([pki.ca.certificate()], [(consumer.clone(), fp(&c)), (provider.clone(), fp(&p))])
            .unwrap(),
    );

    // Both registered, client expects the provider: the exchange goes through.
    let (client, server) = handshake(
        tls::server_config(&p, policy.clone()).unwrap(),
        tls::client_config(&c, policy.clone(), provider.clone()).unwrap(),
    )
    .await;
    assert_eq!((client, server.map(|_| ())), (Ok(()), Ok(())));

    // The client expected another node: it refuses the provider's certificate.
    let (client, _) = handshake(
        tls::server_config(&p, policy.clone()).unwrap(),
        tls::client_config(&c, policy.clone(), consumer.clone()).unwrap(),
    )
    .await;
    assert_eq!(
        reason(&client),
        Some(PeerRejected::WrongNode {
            expected: Box::new(consumer.clone()),
            presented: Box::new(provider.clone())
        })
    );

    // An unregistered client certificate: the provider refuses it.
    let stranger = pki.node(&consumer);
    let (_, server) = handshake(
        tls::server_config(&p, policy.clone()).unwrap(),
        tls::client_config(&stranger, policy.clone(), provider.clone()).unwrap(),
    )
    .await;
    assert_eq!(reason(&server), Some(PeerRejected::NotRegistered { fingerprint: fp(&stranger) }));

    // A new configuration that no longer lists the provider: new connections fail.
    let revoked = Arc::new(TrustPolicy::new([pki.ca.certificate()], [(consumer.clone(), fp(&c))]).unwrap());
    let (client, _) = handshake(
        tls::server_config(&p, policy.clone()).unwrap(),
        tls::client_config(&c, revoked, provider.clone()).unwrap(),
    )
    .await;
    assert_eq!(reason(&client), Some(PeerRejected::NotRegistered { fingerprint: fp(&p) }));
}

/// Accepts any server certificate: stands in for an older TLS 1.2-only peer stack, so the test
/// exercises our *server* config's TLS 1.2 path and client-certificate check.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        tls::crypto_provider().signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn tls12_peers_are_accepted_and_still_verified() {
    let pki = Pki::new("VN");
    let a = node("VN/GOV/000.00.00.G22/ss1");
    let b = node("VN/GOV/000.00.00.G01/ss1");
    let ia = pki.node_at(&a, KeyAlgorithm::EcdsaP256, SystemTime::now(), 30);
    let ib = pki.node_at(&b, KeyAlgorithm::EcdsaP256, SystemTime::now(), 30);
    let policy = Arc::new(
        TrustPolicy::new([pki.ca.certificate()], [(a.clone(), fp(&ia)), (b.clone(), fp(&ib))]).unwrap(),
    );
    let tls12_client = |id: &TlsIdentity| {
        rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer))
            .with_client_auth_cert(
                vec![id.chain[0].der().clone()],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(id.key.to_pem().as_bytes()).unwrap(),
            )
            .unwrap()
    };
    let (c, s) = handshake(tls::server_config(&ib, policy.clone()).unwrap(), tls12_client(&ia)).await;
    assert_eq!((c, s.map(|_| ())), (Ok(()), Ok(())));

    // Over TLS 1.2 too, an unregistered client is refused by the provider.
    let stranger = pki.node_at(&a, KeyAlgorithm::EcdsaP256, SystemTime::now(), 30);
    let (_, s) = handshake(tls::server_config(&ib, policy).unwrap(), tls12_client(&stranger)).await;
    assert_eq!(reason(&s), Some(PeerRejected::NotRegistered { fingerprint: fp(&stranger) }));
}
