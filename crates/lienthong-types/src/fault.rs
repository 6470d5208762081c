//! The catalogue of errors the gateway itself raises, in X-Road 7.8's code form.
//!
//! A code names the side that caused it: `client.*` (the information system sent something
//! wrong), `server.clientproxy.*` (the consumer node), `server.serverproxy.*` (the provider node).
//! Codes are a public contract: clients match on them, so a change must be deliberate. The
//! snapshot test in `tests/fault_catalogue.rs` makes every change a visible diff.

use std::fmt;

/// Who caused a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The calling information system (bad request, bad identifiers).
    Client,
    /// The consumer's node, facing the information system.
    ConsumerNode,
    /// The provider's node, facing peer nodes and the service backend.
    ProviderNode,
}

impl Side {
    /// The prefix every code raised on this side starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            Side::Client => "client.",
            Side::ConsumerNode => "server.clientproxy.",
            Side::ProviderNode => "server.serverproxy.",
        }
    }

    /// X-Road's status rule: 400 for `client.*`, 500 for `server.*`.
    pub fn http_status(self) -> u16 {
        match self {
            Side::Client => 400,
            Side::ConsumerNode | Side::ProviderNode => 500,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::ConsumerNode => "consumer node",
            Side::ProviderNode => "provider node",
        })
    }
}

macro_rules! faults {
    ($( $(#[$doc:meta])* $variant:ident = ($side:ident, $name:literal, $meaning:literal); )*) => {
        /// Every error code the gateway raises. Codes from the backend pass through untouched and
        /// are not in here.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Fault {
            $( $(#[$doc])* #[doc = $meaning] $variant, )*
        }

        impl Fault {
            /// The whole catalogue, in a stable order.
            pub const ALL: &'static [Fault] = &[$(Fault::$variant),*];

            pub fn side(self) -> Side {
                match self { $(Fault::$variant => Side::$side,)* }
            }

            /// The code without its side prefix, e.g. `access_denied`.
            pub fn name(self) -> &'static str {
                match self { $(Fault::$variant => $name,)* }
            }

            /// What the fault means, for documentation and default messages.
            pub fn meaning(self) -> &'static str {
                match self { $(Fault::$variant => $meaning,)* }
            }
        }
    };
}

faults! {
    BadRequest = (Client, "bad_request",
        "The request is malformed: path, protocol version, headers or body framing.");
    InvalidClientIdentifier = (Client, "invalid_client_identifier",
        "X-Road-Client is missing, repeated or not a valid client identifier.");
    InvalidServiceIdentifier = (Client, "invalid_service_identifier",
        "The service identifier in the request path is not valid.");
    InvalidHttpMethod = (Client, "invalid_http_method",
        "The HTTP method is not one the protocol allows.");
    InvalidSecurityServer = (Client, "invalid_security_server",
        "X-Road-Security-Server is malformed or names a node that does not host the service.");
    UnknownClient = (Client, "unknown_client",
        "The client is not registered, or not hosted on this node.");
    RequestTooLarge = (Client, "request_too_large",
        "The request body exceeds the configured maximum size.");
    ClientSslAuthenticationFailed = (ConsumerNode, "ssl_authentication_failed",
        "The information system or the provider node failed TLS authentication.");
    ClientUnknownMember = (ConsumerNode, "unknown_member",
        "The provider member or subsystem is not in the global configuration.");
    ClientUnknownService = (ConsumerNode, "unknown_service",
        "The service is not in the global configuration.");
    ClientNetworkError = (ConsumerNode, "network_error",
        "No node of the provider could be reached.");
    ClientInvalidSignatureValue = (ConsumerNode, "invalid_signature_value",
        "The response signature does not verify.");
    ClientMissingSignature = (ConsumerNode, "missing_signature",
        "The response carries no signature.");
    InconsistentResponse = (ConsumerNode, "inconsistent_response",
        "The response does not match the request (identifiers or request hash differ).");
    ClientGlobalConfOutdated = (ConsumerNode, "global_conf_outdated",
        "This node's global configuration has expired.");
    ClientLoggingFailed = (ConsumerNode, "logging_failed",
        "The exchange could not be logged durably, so it was not forwarded.");
    ClientMaintenanceMode = (ConsumerNode, "maintenance_mode",
        "This node, or every node of the provider, is in maintenance.");
    ClientInternalError = (ConsumerNode, "internal_error",
        "An unexpected error in the consumer node.");
    InvalidMessage = (ProviderNode, "invalid_message",
        "The message from the consumer node is malformed.");
    ServerSslAuthenticationFailed = (ProviderNode, "ssl_authentication_failed",
        "The peer node is not registered, or does not host the client it claims.");
    ServerUnknownMember = (ProviderNode, "unknown_member",
        "The client or provider member is not in the global configuration.");
    ServerUnknownService = (ProviderNode, "unknown_service",
        "The service is not published on this node.");
    ServiceDisabled = (ProviderNode, "service_disabled",
        "The service is disabled.");
    AccessDenied = (ProviderNode, "access_denied",
        "The client has no valid access grant for this service, method and path.");
    ServerInvalidSignatureValue = (ProviderNode, "invalid_signature_value",
        "The request signature does not verify.");
    ServerMissingSignature = (ProviderNode, "missing_signature",
        "The request carries no signature.");
    ReplayedMessage = (ProviderNode, "replayed_message",
        "A message with this request id was already received.");
    ClockSkew = (ProviderNode, "clock_skew",
        "The message time is outside the allowed clock skew.");
    ServerGlobalConfOutdated = (ProviderNode, "global_conf_outdated",
        "The provider node's global configuration has expired.");
    ServiceFailed = (ProviderNode, "service_failed",
        "The service backend refused the connection or returned a broken response.");
    ServerNetworkError = (ProviderNode, "network_error",
        "The service backend did not answer within the service timeout.");
    ServerLoggingFailed = (ProviderNode, "logging_failed",
        "The exchange could not be logged durably, so it was not processed.");
    ServerMaintenanceMode = (ProviderNode, "maintenance_mode",
        "The provider node is in maintenance.");
    ServerInternalError = (ProviderNode, "internal_error",
        "An unexpected error in the provider node.");
}

impl Fault {
    /// The full code, e.g. `server.serverproxy.access_denied`.
    pub fn code(self) -> String {
        format!("{}{}", self.side().prefix(), self.name())
    }

    pub fn http_status(self) -> u16 {
        self.side().http_status()
    }

    /// Finds a fault by code, ignoring case and underscores, so older X-Road CamelCase codes
    /// (`Server.ServerProxy.AccessDenied`) match too.
    pub fn from_code(code: &str) -> Option<Fault> {
        let norm =
            |s: &str| -> String { s.chars().filter(|&c| c != '_').flat_map(char::to_lowercase).collect() };
        let wanted = norm(code);
        Fault::ALL.iter().copied().find(|f| norm(&f.code()) == wanted)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.side().prefix(), self.name())
    }
}
