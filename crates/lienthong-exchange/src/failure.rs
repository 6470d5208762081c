//! The one mapping from what went wrong while moving bytes to the fault a node answers with.
//! The I/O shell says what happened (a body too large, a peer that did not answer); which fault
//! that is, and whose, depends only on whose bytes they were.

use std::fmt;

use lienthong_types::{Fault, NodeId};

use crate::Reject;

/// Whose body was being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOf {
    /// The client's request, on the consumer node.
    ClientRequest,
    /// The provider node's response, on the consumer node.
    PeerResponse,
    /// The consumer node's request, on the provider node.
    PeerRequest,
    /// The service backend's response, on the provider node.
    ServiceResponse,
}

/// What went wrong reading a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    /// Larger than the limit.
    TooLarge,
    /// Nothing arrived in time.
    Timeout,
    /// It kept coming, but not all of it in the total time allowed.
    TooSlow,
    /// The local spool failed (a full disk): this node's fault.
    Storage,
    /// Shorter than declared, or the stream broke.
    Broken,
}

/// The fault for a body that could not be read. `error` is the shell's description, shown only
/// where it tells the sender what it did wrong.
pub fn body_fault(of: BodyOf, problem: BodyProblem, error: &dyn fmt::Display) -> Reject {
    use BodyProblem::{Storage, Timeout, TooLarge, TooSlow};
    match (of, problem) {
        (BodyOf::ClientRequest | BodyOf::PeerRequest, TooLarge) => {
            Reject::new(Fault::RequestTooLarge, error.to_string())
        }
        (BodyOf::ClientRequest, Storage) => {
            Reject::new(Fault::ClientInternalError, "the request body could not be stored")
        }
        (BodyOf::ClientRequest, _) => Reject::new(Fault::BadRequest, error.to_string()),
        (BodyOf::PeerRequest, Storage) => {
            Reject::new(Fault::ServerInternalError, "the request body could not be stored")
        }
        (BodyOf::PeerRequest, _) => Reject::new(Fault::InvalidMessage, error.to_string()),
        (BodyOf::PeerResponse, TooLarge) => {
            Reject::new(Fault::ClientNetworkError, "the response is larger than this node accepts")
        }
        (BodyOf::PeerResponse, _) => {
            Reject::new(Fault::ClientNetworkError, format!("the response could not be read: {error}"))
        }
        (BodyOf::ServiceResponse, TooLarge) => {
            Reject::new(Fault::ServiceFailed, "the service's response is larger than allowed")
        }
        (BodyOf::ServiceResponse, Timeout | TooSlow) => {
            Reject::new(Fault::ServerNetworkError, "the service's response did not arrive in time")
        }
        (BodyOf::ServiceResponse, _) => Reject::new(Fault::ServiceFailed, "the service's response broke off"),
    }
}

/// Why a request could not be handed to a provider node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProblem {
    /// Handed over, but the answer did not begin in time.
    TimedOut,
    /// The node failed TLS authentication.
    Rejected,
    /// The exchange broke off.
    Broken,
}

/// The consumer's fault for a provider node that could not be reached or broke off.
pub fn send_fault(node: &NodeId, problem: SendProblem) -> Reject {
    match problem {
        SendProblem::TimedOut => {
            Reject::new(Fault::ClientNetworkError, format!("node {node} did not answer in time"))
        }
        SendProblem::Rejected => Reject::new(
            Fault::ClientSslAuthenticationFailed,
            format!("node {node} failed TLS authentication"),
        ),
        SendProblem::Broken => {
            Reject::new(Fault::ClientNetworkError, format!("the exchange with node {node} broke off"))
        }
    }
}

/// The consumer's fault when no node of the provider could be reached at all.
pub fn unreachable_fault() -> Reject {
    Reject::new(Fault::ClientNetworkError, "no node of the provider could be reached")
}

/// Why the service backend gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceProblem {
    /// It did not answer in time.
    Timeout,
    /// It could not be reached or failed.
    Failed,
}

/// The provider's fault for a backend that gave no answer.
pub fn service_fault(problem: ServiceProblem) -> Reject {
    match problem {
        ServiceProblem::Timeout => {
            Reject::new(Fault::ServerNetworkError, "the service did not answer in time")
        }
        ServiceProblem::Failed => {
            Reject::new(Fault::ServiceFailed, "the service could not be reached or failed")
        }
    }
}
