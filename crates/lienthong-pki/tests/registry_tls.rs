//! The registry's certificates and TLS: a registry server certificate and administrator client
//! certificates, issued only when asked for by role; a registry server that lets clients in
//! without a certificate but checks any certificate they present; registry clients that accept
//! only their own instance's registry. Handshakes run on loopback.

mod support;

use support::{handshake, reason};

use std::sync::Arc;
use std::time::SystemTime;

use lienthong_pki::tls::{self, TlsIdentity};
use lienthong_pki::*;
use lienthong_types::{InstanceId, MemberId, NodeId};

fn instance(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}

fn node(s: &str) -> NodeId {
    s.parse().unwrap()
}

fn new_ca(name: &str) -> CertificateAuthority {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    CertificateAuthority::init(instance(name), &key, Validity::days(3650), SystemTime::now()).unwrap()
}

fn identity(cert: Certificate, key: PrivateKey) -> TlsIdentity {
    TlsIdentity { chain: vec![cert], key: Arc::new(key) }
}

fn registry(ca: &CertificateAuthority) -> TlsIdentity {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = Csr::for_registry(&key, ca.instance()).unwrap();
    identity(ca.issue_registry(&csr, Validity::days(30), SystemTime::now()).unwrap(), key)
}

fn admin(ca: &CertificateAuthority, name: &str) -> TlsIdentity {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let csr = Csr::for_admin(&key, ca.instance(), name).unwrap();
    identity(ca.issue_admin(&csr, Validity::days(30), SystemTime::now()).unwrap(), key)
}

fn node_identity(ca: &CertificateAuthority, id: &NodeId) -> TlsIdentity {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let csr = Csr::for_node(&key, id).unwrap();
    identity(ca.issue_node(&csr, id, Validity::days(30), SystemTime::now()).unwrap(), key)
}

#[test]
fn ca_issues_registry_and_admin_certificates() {
    let ca = new_ca("VN");
    let vn = instance("VN");

    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = Csr::from_pem(&Csr::for_registry(&key, &vn).unwrap().to_pem()).unwrap();
    assert_eq!(csr.identity().unwrap(), Identity::Registry(vn.clone()));
    let cert = ca.issue_registry(&csr, Validity::days(30), SystemTime::now()).unwrap();
    let info = Certificate::from_pem(&cert.to_pem()).unwrap().info().unwrap();
    assert_eq!(info.identity, Identity::Registry(vn.clone()));
    assert_eq!(info.public_key, key.public_key());
    assert!(!info.is_ca);
    assert_eq!(info.identity.to_string(), "registry of instance VN");
    assert_eq!(info.identity.instance(), &vn);

    // The person's name (Vietnamese, so not ASCII) is the subject CN; the identity is the role.
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let csr = Csr::for_admin(&key, &vn, "Nguyễn Văn An").unwrap();
    assert_eq!(csr.identity().unwrap(), Identity::Admin(vn.clone()));
    let cert = ca.issue_admin(&csr, Validity::days(30), SystemTime::now()).unwrap();
    let info = cert.info().unwrap();
    assert_eq!(info.identity, Identity::Admin(vn.clone()));
    assert!(info.subject.contains("CN=Nguyễn Văn An"), "{}", info.subject);
    assert_eq!(info.identity.to_string(), "registry administrator of instance VN");
    assert_ne!(Identity::Admin(vn.clone()).role(), Identity::Registry(vn).role());
}

#[test]
fn registry_and_admin_requests_are_checked_by_role_instance_and_name() {
    let ca = new_ca("VN");
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let (v, now) = (Validity::days(1), SystemTime::now());
    let node_csr = Csr::for_node(&key, &node("VN/GOV/G01/ss1")).unwrap();
    let registry_csr = Csr::for_registry(&key, &instance("VN")).unwrap();
    let admin_csr = Csr::for_admin(&key, &instance("VN"), "An").unwrap();

    // Each role only through its own door.
    assert!(matches!(ca.issue_registry(&node_csr, v, now), Err(CertError::WrongRole { .. })));
    assert!(matches!(ca.issue_registry(&admin_csr, v, now), Err(CertError::WrongRole { .. })));
    assert!(matches!(ca.issue_admin(&registry_csr, v, now), Err(CertError::WrongRole { .. })));
    let member: MemberId = "VN/GOV/G01".parse().unwrap();
    assert!(matches!(
        ca.issue_admin(&Csr::for_member(&key, &member).unwrap(), v, now),
        Err(CertError::WrongRole { .. })
    ));
    assert!(matches!(
        ca.issue_node(&admin_csr, &node("VN/GOV/G01/ss1"), v, now),
        Err(CertError::WrongRole { .. })
    ));
    // The generic door does not open for the privileged roles.
    assert!(matches!(ca.issue(&registry_csr, v, now), Err(CertError::WrongRole { .. })));
    assert!(matches!(ca.issue(&admin_csr, v, now), Err(CertError::WrongRole { .. })));

    // Only for this CA's own instance.
    let foreign_registry = Csr::for_registry(&key, &instance("HN")).unwrap();
    assert!(matches!(ca.issue_registry(&foreign_registry, v, now), Err(CertError::IdentityMismatch { .. })));
    let foreign_admin = Csr::for_admin(&key, &instance("HN"), "An").unwrap();
    assert!(matches!(ca.issue_admin(&foreign_admin, v, now), Err(CertError::IdentityMismatch { .. })));

    // Names that would mislead whoever reads them.
    for bad in ["", "   ", "An\nroot", "An\u{1b}[2J", &"x".repeat(65)] {
        let r = Csr::for_admin(&key, &instance("VN"), bad);
        assert!(matches!(r, Err(CertError::BadAdminName(_))), "{bad:?}: {r:?}");
    }
    assert!(Csr::for_admin(&key, &instance("VN"), &"ễ".repeat(64)).is_ok());
}

#[tokio::test]
async fn registry_lets_in_clients_without_a_certificate() {
    let ca = new_ca("VN");
    let cas = [ca.certificate().clone()];
    let server = tls::registry_server_config(&registry(&ca), &cas).unwrap();
    let client = tls::registry_client_config(None, &cas, &instance("VN")).unwrap();
    let (client, server) = handshake(server, client).await;
    assert_eq!(client, Ok(()));
    assert_eq!(server, Ok(None));
}

#[tokio::test]
async fn registry_reads_the_client_identity_after_the_handshake() {
    let ca = new_ca("VN");
    let cas = [ca.certificate().clone()];
    let reg = registry(&ca);

    let an = admin(&ca, "Nguyễn Văn An");
    let (client, server) = handshake(
        tls::registry_server_config(&reg, &cas).unwrap(),
        tls::registry_client_config(Some(&an), &cas, &instance("VN")).unwrap(),
    )
    .await;
    assert_eq!(client, Ok(()));
    assert_eq!(server, Ok(Some((Identity::Admin(instance("VN")), an.chain[0].fingerprint()))));

    let id = node("VN/GOV/000.00.00.G01/ss1");
    let n = node_identity(&ca, &id);
    let (client, server) = handshake(
        tls::registry_server_config(&reg, &cas).unwrap(),
        tls::registry_client_config(Some(&n), &cas, &instance("VN")).unwrap(),
    )
    .await;
    assert_eq!(client, Ok(()));
    assert_eq!(server, Ok(Some((Identity::Node(id), n.chain[0].fingerprint()))));

    // A member signing certificate has no extended key usage, so it may serve as a client
    // certificate too (RFC 5280: no EKU extension means no restriction).
    let m: MemberId = "VN/GOV/000.00.00.G01".parse().unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let csr = Csr::for_member(&key, &m).unwrap();
    let member = identity(ca.issue_member(&csr, &m, Validity::days(30), SystemTime::now()).unwrap(), key);
    let (client, server) = handshake(
        tls::registry_server_config(&reg, &cas).unwrap(),
        tls::registry_client_config(Some(&member), &cas, &instance("VN")).unwrap(),
    )
    .await;
    assert_eq!(client, Ok(()));
    assert_eq!(server, Ok(Some((Identity::Member(m), member.chain[0].fingerprint()))));
}

#[tokio::test]
async fn registry_refuses_client_certificates_it_cannot_trust() {
    let ca = new_ca("VN");
    let cas = [ca.certificate().clone()];
    let reg = registry(&ca);

    // An administrator certificate from a CA that is not approved, though it names VN.
    let rogue = admin(&new_ca("VN"), "Mallory");
    let (client, server) = handshake(
        tls::registry_server_config(&reg, &cas).unwrap(),
        tls::registry_client_config(Some(&rogue), &cas, &instance("VN")).unwrap(),
    )
    .await;
    assert!(client.is_err());
    assert_eq!(reason(&server), Some(PeerRejected::UnknownCa));

    // The registry's own certificate is for servers only (no clientAuth usage).
    let (client, server) = handshake(
        tls::registry_server_config(&reg, &cas).unwrap(),
        tls::registry_client_config(Some(&registry(&ca)), &cas, &instance("VN")).unwrap(),
    )
    .await;
    assert!(client.is_err());
    assert!(matches!(reason(&server), Some(PeerRejected::Invalid(_))), "{server:?}");
}

#[tokio::test]
async fn registry_clients_accept_only_their_instance_registry() {
    let vn = new_ca("VN");
    let hn = new_ca("HN");
    let both = [vn.certificate().clone(), hn.certificate().clone()];
    let an = admin(&vn, "An");

    // Sanity: the real registry of VN is accepted with both CAs approved.
    let (client, server) = handshake(
        tls::registry_server_config(&registry(&vn), &both).unwrap(),
        tls::registry_client_config(Some(&an), &both, &instance("VN")).unwrap(),
    )
    .await;
    assert_eq!((client, server.map(|s| s.is_some())), (Ok(()), Ok(true)));

    // A node certificate can serve TLS, but it is not the registry.
    let posing = node_identity(&vn, &node("VN/GOV/000.00.00.G01/ss1"));
    let (client, _) = handshake(
        tls::registry_server_config(&posing, &both).unwrap(),
        tls::registry_client_config(Some(&an), &both, &instance("VN")).unwrap(),
    )
    .await;
    assert_eq!(
        reason(&client),
        Some(PeerRejected::WrongRole {
            presented: "node authentication certificate",
            expected: "registry server certificate"
        })
    );

    // The registry of another instance.
    let (client, _) = handshake(
        tls::registry_server_config(&registry(&hn), &both).unwrap(),
        tls::registry_client_config(None, &both, &instance("VN")).unwrap(),
    )
    .await;
    assert_eq!(
        reason(&client),
        Some(PeerRejected::WrongInstance {
            presented: Box::new(Identity::Registry(instance("HN"))),
            expected: instance("VN")
        })
    );

    // A registry certificate from a CA that is not approved.
    let (client, _) = handshake(
        tls::registry_server_config(&registry(&new_ca("VN")), &both).unwrap(),
        tls::registry_client_config(None, &both, &instance("VN")).unwrap(),
    )
    .await;
    assert_eq!(reason(&client), Some(PeerRejected::UnknownCa));
}

#[test]
fn registry_configs_need_lienthong_ca_certificates() {
    let vn = new_ca("VN");
    let not_a_ca = registry(&vn).chain[0].clone();
    let r = tls::registry_client_config(None, &[not_a_ca], &instance("VN"));
    assert!(matches!(r, Err(rustls::Error::General(_))), "{r:?}");
}

#[test]
fn peer_certificate_identity_reads_the_end_entity() {
    let ca = new_ca("VN");
    let an = admin(&ca, "An");
    let ders = [an.chain[0].der().clone(), ca.certificate().der().clone()];
    assert_eq!(
        tls::peer_certificate_identity(&ders),
        Some((Identity::Admin(instance("VN")), an.chain[0].fingerprint()))
    );
    assert_eq!(tls::peer_certificate_identity(&[]), None);
}
