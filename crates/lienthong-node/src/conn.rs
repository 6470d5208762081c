//! Who is on the other end of a consumer-side connection, as the listener saw it.

use std::net::SocketAddr;

use lienthong_pki::Fingerprint;

/// Who is on the other end of a consumer-side connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub remote: SocketAddr,
    pub tls: bool,
    /// SHA-256 of the client certificate presented over TLS, if any.
    pub client_cert: Option<Fingerprint>,
}
