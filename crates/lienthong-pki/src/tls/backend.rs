//! TLS from a provider node to a service's own backend (its HTTPS URL): ordinary web PKI, not
//! Lienthong identities.

use std::time::SystemTime;

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;

use super::verifier::{ChainCheck, Presented, ServerVerifier};
use super::{VERSIONS, crypto_provider};
use crate::error::PeerRejected;

/// TLS from a provider node to a service's own backend (its HTTPS URL), not to another node.
///
/// With `verify`, the backend must present a certificate that chains to `system_roots` (the
/// host's trust store, loaded by the caller: this crate does no I/O) or `extra_roots` (CAs the
/// operator configured for internal backends) and names the host that was dialled. Unusable
/// system roots are skipped, as trust stores often hold a few; an unusable extra root is an error.
///
/// Without `verify`, any certificate is accepted and the roots are ignored. It exists because
/// some organisations run backends on self-signed certificates on a network they control; the
/// operator opts out per service, it is off by default, and the connection is still encrypted.
/// Handshake signatures are checked either way.
pub fn backend_client_config(
    verify: bool,
    system_roots: &[CertificateDer<'_>],
    extra_roots: &[CertificateDer<'_>],
) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(crypto_provider()).with_protocol_versions(VERSIONS)?;
    if !verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(ServerVerifier::new(AnyServerCert))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(system_roots.iter().map(|c| c.clone().into_owned()));
    for (i, root) in extra_roots.iter().enumerate() {
        roots
            .add(root.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("extra backend root {}: {e}", i + 1)))?;
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Accepts any server certificate; used only by [`backend_client_config`] without `verify`.
#[derive(Debug)]
struct AnyServerCert;

impl ChainCheck for AnyServerCert {
    fn check(&self, _: Presented<'_>, _: SystemTime) -> Result<(), PeerRejected> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{CertificateError, ServerConfig};

    use super::*;

    /// A CA and a server certificate for `names`, made with rcgen: backends use ordinary web
    /// certificates, which our CA does not issue.
    fn web_pki(ca_name: &str, names: &[&str]) -> (CertificateDer<'static>, ServerConfig) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        (ca.der().clone(), server)
    }

    /// One handshake in memory (this crate does no I/O); the client's verdict.
    fn handshake(client: ClientConfig, server: ServerConfig, name: &str) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut server = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut wire.as_slice()).unwrap();
            // A server-side failure shows up as an alert the client reports.
            let _ = server.process_new_packets();
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn backend_tls_verifies_chain_and_name_unless_the_operator_opts_out() {
        let (ca, server) = web_pki("Backend CA", &["127.0.0.1", "backend.test"]);
        let (other_ca, _) = web_pki("Other CA", &["127.0.0.1"]);
        let trusted =
            || backend_client_config(true, std::slice::from_ref(&other_ca), std::slice::from_ref(&ca));

        assert_eq!(handshake(trusted().unwrap(), server.clone(), "127.0.0.1"), Ok(()));
        assert_eq!(handshake(trusted().unwrap(), server.clone(), "backend.test"), Ok(()));
        // Our CA as a system root works the same.
        let system = backend_client_config(true, std::slice::from_ref(&ca), &[]).unwrap();
        assert_eq!(handshake(system, server.clone(), "backend.test"), Ok(()));

        let unknown = backend_client_config(true, &[], std::slice::from_ref(&other_ca)).unwrap();
        assert_eq!(
            handshake(unknown, server.clone(), "127.0.0.1"),
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
        );
        let r = handshake(trusted().unwrap(), server.clone(), "other.test");
        assert!(
            matches!(
                r,
                Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }))
            ),
            "{r:?}"
        );

        let any = backend_client_config(false, &[], &[]).unwrap();
        assert_eq!(handshake(any, server, "other.test"), Ok(()));
    }

    #[test]
    fn unusable_roots_are_skipped_from_the_system_store_and_refused_when_configured() {
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(backend_client_config(true, std::slice::from_ref(&junk), &[]).is_ok());
        let e = backend_client_config(true, &[], std::slice::from_ref(&junk)).unwrap_err();
        assert!(e.to_string().contains("extra backend root 1"), "{e}");
    }
}
