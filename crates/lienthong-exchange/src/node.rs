//! What the steps of both sides take from the node: who it is, the keys it signs with, how it
//! protects envelopes, and the digests of a body it read.

use std::collections::BTreeMap;
use std::sync::Arc;

use lienthong_pki::{Certificate, PrivateKey};
use lienthong_types::{MemberId, NodeId};

use crate::protection::Protection;

/// Per member this node speaks for: its signing key and certificate.
pub type SigningKeys = BTreeMap<MemberId, (Arc<PrivateKey>, Certificate)>;

/// The node itself, as the steps of both sides see it.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub id: &'a NodeId,
    pub signing: &'a SigningKeys,
    pub protection: &'a dyn Protection,
}

/// SHA-256, SHA-512 and length of a body that was read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    pub sha256: [u8; 32],
    pub sha512: [u8; 64],
    pub len: u64,
}
