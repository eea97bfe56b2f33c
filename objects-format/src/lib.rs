//! # objects-format
//!
//! The shelldone object format: four immutable object kinds (blob, chunk list, tree, snapshot),
//! their canonical encoding, and their BLAKE3 ids. Pure: no I/O, no allocation behind the
//! caller's back beyond the returned buffers. `SPEC.md` in this crate is the normative
//! description; `tests/vectors.rs` pins ids so an accidental format change fails loudly.
//!
//! Modules import only downward, in this order (`tests/layering.rs` checks it): [`kind`] →
//! [`id`] → [`kinds`] → [`children`](mod@children) → [`chunk`] → [`encoding`] → [`pack`] →
//! [`modes`]; this root only
//! re-exports them.

pub mod children;
pub mod chunk;
pub mod encoding;
pub mod id;
pub mod kind;
pub mod kinds;
pub mod modes;
pub mod pack;

pub use children::{Child, Children, Link, children};
pub use encoding::{
    DecodeError, FORMAT_VERSION, MAGIC, MAX_OBJECT_SIZE, decode, decode_as, encode, validate_name,
};
pub use id::{ID_LEN, ObjectId, ParseIdError};
pub use kind::Kind;
pub use kinds::{
    ChangeSummary, ChunkList, ChunkRef, EntryKind, FLAG_EXECUTABLE, Object, Snapshot, Tree,
    TreeEntry,
};

/// Encodes `obj` and computes its id.
///
/// # Errors
/// When `obj` breaks a format rule (see [`encode`]).
pub fn encode_with_id(obj: &Object) -> Result<(ObjectId, Vec<u8>), DecodeError> {
    let bytes = encode(obj)?;
    Ok((ObjectId::compute(obj.kind(), &bytes), bytes))
}

/// Verifies that `canonical` is a valid object whose id is `expected`, and decodes it.
///
/// # Errors
/// [`VerifyError::Decode`] or [`VerifyError::HashMismatch`].
pub fn verify(expected: &ObjectId, canonical: &[u8]) -> Result<Object, VerifyError> {
    let (kind, _) = encoding::split_header(canonical)?;
    let actual = ObjectId::compute(kind, canonical);
    if actual != *expected {
        return Err(VerifyError::HashMismatch {
            expected: *expected,
            actual,
        });
    }
    Ok(decode(canonical)?)
}

/// An object failed verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The bytes do not hash to the id they were stored under.
    #[error("hash mismatch: stored as {expected}, content hashes to {actual}")]
    HashMismatch {
        /// Id the object was looked up by.
        expected: ObjectId,
        /// Id of the bytes found.
        actual: ObjectId,
    },
    /// The bytes hash correctly but do not decode (only possible for a hash collision or a writer bug).
    #[error(transparent)]
    Decode(#[from] DecodeError),
}
