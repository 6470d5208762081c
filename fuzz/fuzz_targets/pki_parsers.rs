//! Certificates, certificate requests and PEM keys from untrusted bytes: errors, never panics.
#![no_main]

use lienthong_pki::{Certificate, Csr, PrivateKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = Certificate::from_der(data.to_vec()) {
        let _ = cert.info();
    }
    let _ = Csr::from_der(data.to_vec()).map(|c| c.identity());
    if let Ok(s) = std::str::from_utf8(data) {
        // No passphrase: an encrypted key stops before the (deliberately slow) key derivation.
        let _ = PrivateKey::from_pem(s, None);
        let _ = Certificate::from_pem(s);
        let _ = Csr::from_pem(s);
    }
});
