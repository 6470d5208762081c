//! The opaque page cursor: where the previous page stopped, bound to the filter it was made for.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::QueryError;

const VERSION: u8 = 1;
/// Version byte, last leaf index (big-endian), filter digest.
const LEN: usize = 1 + 8 + 16;

/// Where a page stopped: the next page starts after leaf `last`. It carries a digest of the
/// filter so a cursor used with another filter is refused instead of silently skipping or
/// repeating records. Printed as URL-safe base64 (no padding), safe in a query string.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub(crate) last: u64,
    pub(crate) filter: [u8; 16],
}

impl Cursor {
    /// The last leaf index the page looked at (every later page starts after it).
    pub fn last_leaf(&self) -> u64 {
        self.last
    }

    fn encode(&self) -> String {
        let mut bytes = [0u8; LEN];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&self.last.to_be_bytes());
        bytes[9..].copy_from_slice(&self.filter);
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({})", self.encode())
    }
}

impl FromStr for Cursor {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, QueryError> {
        let bad =
            |why: &str| QueryError::InvalidCursor(format!("{why}; use the cursor a previous page returned"));
        if s.len() > 64 {
            return Err(bad("too long"));
        }
        let bytes = URL_SAFE_NO_PAD.decode(s.trim()).map_err(|_| bad("not a cursor (bad encoding)"))?;
        let bytes: [u8; LEN] = bytes.as_slice().try_into().map_err(|_| bad("not a cursor (wrong length)"))?;
        if bytes[0] != VERSION {
            return Err(bad("a cursor of an unknown version"));
        }
        let mut last = [0u8; 8];
        last.copy_from_slice(&bytes[1..9]);
        let mut filter = [0u8; 16];
        filter.copy_from_slice(&bytes[9..]);
        Ok(Self { last: u64::from_be_bytes(last), filter })
    }
}
