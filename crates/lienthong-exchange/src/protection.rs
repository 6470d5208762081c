//! What proves who sent a message, and whether an exchange leaves evidence.
//!
//! The protocol steps ([`crate::consumer`], [`crate::provider`]) take a [`Protection`]: every
//! node runs [`Signed`], which signs and verifies every envelope and writes a log record of every
//! request, response and refusal. The trait exists so that a measurement of the transport alone
//! (the benchmark's topology C, decision 0009) is a type the benchmark crate owns, not a switch
//! the node's security path reads: nothing in the node or in this crate implements another.

use std::time::SystemTime;

use lienthong_globalconf::GlobalConf;
use lienthong_pki::{Fingerprint, SignatureError};
use lienthong_proto::exchange::v1 as ex;
use lienthong_types::MemberId;

use crate::Reject;
use crate::envelope::{self, Signer};

/// How envelopes are proven and whether exchanges are recorded.
pub trait Protection: Send + Sync + std::fmt::Debug {
    /// Signs a request envelope for the client member.
    fn sign_request(&self, env: &mut ex::RequestEnvelope, signer: Signer<'_>) -> Result<(), SignatureError>;
    /// Signs a response envelope for the provider member.
    fn sign_response(&self, env: &mut ex::ResponseEnvelope, signer: Signer<'_>)
    -> Result<(), SignatureError>;
    /// The provider's check that the client member signed the request; the signer's certificate.
    fn verify_request(
        &self,
        env: &ex::RequestEnvelope,
        client_member: &MemberId,
        conf: &GlobalConf,
        now: SystemTime,
    ) -> Result<Option<Fingerprint>, Reject>;
    /// The consumer's check that the provider member signed the response.
    fn verify_response(
        &self,
        env: &ex::ResponseEnvelope,
        provider_member: &MemberId,
        conf: &GlobalConf,
        now: SystemTime,
    ) -> Result<(), Reject>;
    /// Whether the steps produce log records (requests, responses and refusals).
    fn keeps_records(&self) -> bool;
}

/// The protection of every node: signed envelopes, checked signatures, every exchange recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signed;

impl Protection for Signed {
    fn sign_request(&self, env: &mut ex::RequestEnvelope, signer: Signer<'_>) -> Result<(), SignatureError> {
        envelope::sign_request(env, signer)
    }

    fn sign_response(
        &self,
        env: &mut ex::ResponseEnvelope,
        signer: Signer<'_>,
    ) -> Result<(), SignatureError> {
        envelope::sign_response(env, signer)
    }

    fn verify_request(
        &self,
        env: &ex::RequestEnvelope,
        client_member: &MemberId,
        conf: &GlobalConf,
        now: SystemTime,
    ) -> Result<Option<Fingerprint>, Reject> {
        envelope::verify_request(env, client_member, conf, now).map(Some)
    }

    fn verify_response(
        &self,
        env: &ex::ResponseEnvelope,
        provider_member: &MemberId,
        conf: &GlobalConf,
        now: SystemTime,
    ) -> Result<(), Reject> {
        envelope::verify_response(env, provider_member, conf, now).map(|_| ())
    }

    fn keeps_records(&self) -> bool {
        true
    }
}
