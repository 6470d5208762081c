//! The runtime kit: what every Lienthong process needs around its own logic, written once.
//!
//! - [`serve`]: one HTTP server loop (connection cap, optional TLS with a handshake timeout,
//!   header-read timeout, HTTP/1 and/or HTTP/2, graceful drain on shutdown, accept back-off).
//! - [`ConnectionCap`]: the cap on its own, for servers whose loop belongs to another library.
//! - [`Clock`], with [`OffsetClock`] and [`ManualClock`] for tests: where processes read the
//!   time; tests move it without sleeping.
//! - [`config`]: the strict configuration loader (bounded read, unknown keys refused, paths
//!   resolved against the file and checked before anything binds).

mod cap;
mod clock;
pub mod config;
mod serve;

pub use cap::{ConnectionCap, ConnectionPermit};
pub use clock::{Clock, ManualClock, OffsetClock};
pub use serve::{Conn, Protocols, ServeOptions, Tls, serve};
