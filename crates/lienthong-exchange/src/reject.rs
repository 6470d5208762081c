use std::fmt;

use lienthong_types::Fault;

/// A refusal: the stable fault code and a message safe to show the client (no internal
/// addresses, no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub fault: Fault,
    pub message: String,
}

impl Reject {
    pub fn new(fault: Fault, message: impl Into<String>) -> Self {
        Self { fault, message: message.into() }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.fault, self.message)
    }
}

impl std::error::Error for Reject {}
