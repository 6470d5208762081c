//! The registry's public HTTP surface: the paths and media type under which it serves the
//! configuration. Apart from the server so that the configuration (which derives the default
//! configuration URL from them) and the server both read them without importing each other.

/// Where the signed configuration is served.
pub const CONF_PATH: &str = "/globalconf";
/// Where the anchor is served (for operators; nodes must get it out of band to trust it).
pub const ANCHOR_PATH: &str = "/anchor.json";
/// The view of the configuration federation partners' nodes download (signed like the whole).
pub const FEDERATION_CONF_PATH: &str = "/globalconf/federation";
/// The media type of a `SignedGlobalConf`.
pub const CONF_MEDIA_TYPE: &str = "application/vnd.lienthong.globalconf.v1+protobuf";
