//! The node-to-node transport: pinned mutual TLS, HTTP/2 only, one pooled connection per peer.
//!
//! A peer is trusted only if its certificate chains to an approved CA **and** is the certificate
//! registered for that node in the current global configuration ([`lienthong_pki::tls`] does
//! the checking; this module only builds on it).
//!
//! - [`PeerTrust`] is what one global configuration says about peers: the rustls configs, the
//!   registered fingerprint and the addresses of every node. Build a new one for every new
//!   configuration and hand the same `Arc` to [`PeerClient::update`] and to the server's watch.
//! - [`PeerClient`] (consumer side) keeps one HTTP/2 connection per peer node; concurrent sends
//!   share it and share a single connect. [`PeerError::is_before_send`] tells the caller whether
//!   failing over to another node is safe.
//! - [`PeerServer`] (provider side) accepts TLS with the current configuration, serves HTTP/2 to a
//!   plain async function that is given the verified [`PeerIdentity`], and closes connections of
//!   peers that a new configuration no longer trusts.
//!
//! Both sides re-verify the certificate a connection was made with against every new
//! configuration, so revocation (node removed, certificate re-registered, CA withdrawn, or the
//! certificate expired meanwhile) reaches pooled connections too, not only new handshakes.
//! TLS session resumption is off on both sides for the same reason: every handshake is a full
//! verification against the configuration it happens under.
//!
//! One file per job: `trust.rs` (what a configuration says about peers), `client.rs` (the
//! consumer side's pooled connections) and `server.rs` (the provider side's accept loop).

mod client;
mod server;
mod trust;

pub use client::*;
pub use server::*;
pub use trust::*;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http2 as client_h2;
use hyper::server::conn::http2 as server_h2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use lienthong_exchange::envelope::MAX_PEER_HEADER_LIST_BYTES;
use lienthong_globalconf::GlobalConf;
use lienthong_pki::tls::{self, PeerIdentity, PeerRole, TlsIdentity, TrustPolicy};
use lienthong_pki::{CertError, Fingerprint, PeerRejected};
use lienthong_types::NodeId;
use rustls::pki_types::CertificateDer;
use rustls::{AlertDescription, ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

/// The request body a [`PeerClient`] sends and a [`PeerServer`] handler answers with.
pub type PeerBody = BoxBody<Bytes, io::Error>;

/// The only application protocol spoken between nodes.
pub(super) const ALPN_H2: &[u8] = b"h2";

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state stays consistent between statements; a panic elsewhere must not wedge
    // the transport.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn owned_certs(certs: Option<&[CertificateDer<'_>]>) -> Vec<CertificateDer<'static>> {
    certs.unwrap_or_default().iter().map(|c| c.clone().into_owned()).collect()
}
