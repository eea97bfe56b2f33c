//! Object ids: BLAKE3 of an object's canonical (uncompressed) bytes, keyed per kind.

use std::fmt;
use std::str::FromStr;

use crate::kind::Kind;

/// Length of an [`ObjectId`] in bytes.
pub const ID_LEN: usize = 32;

/// The id of an object: `blake3::derive_key(kind context, canonical bytes)`.
///
/// Because the id covers the canonical bytes and not the stored (compressed) bytes,
/// changing compression settings never changes an id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; ID_LEN]);

impl ObjectId {
    /// Computes the id of `canonical` (the full canonical bytes, header included) as an object of `kind`.
    #[must_use]
    pub fn compute(kind: Kind, canonical: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(kind.id_context());
        h.update(canonical);
        ObjectId(*h.finalize().as_bytes())
    }

    /// Lower-case hex, 64 characters.
    #[must_use]
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(ID_LEN * 2);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }

    /// The first `n` hex characters (for display).
    #[must_use]
    pub fn short(&self, n: usize) -> String {
        let mut s = self.to_hex();
        s.truncate(n.min(ID_LEN * 2));
        s
    }

    /// Parses exactly 64 hex characters (either case).
    ///
    /// # Errors
    /// [`ParseIdError`] when the length or a character is wrong.
    pub fn from_hex(s: &str) -> Result<Self, ParseIdError> {
        let b = s.as_bytes();
        if b.len() != ID_LEN * 2 {
            return Err(ParseIdError(s.to_owned()));
        }
        let mut out = [0u8; ID_LEN];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(|| ParseIdError(s.to_owned()))?;
            let lo = hex_val(pair[1]).ok_or_else(|| ParseIdError(s.to_owned()))?;
            out[i] = (hi << 4) | lo;
        }
        Ok(ObjectId(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A string that is not a 64-character hex id.
#[derive(Debug, thiserror::Error)]
#[error("not a 64-character hex object id: {0:?}")]
pub struct ParseIdError(pub String);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.short(16))
    }
}

impl FromStr for ObjectId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}
