//! Canonical encoding: the exact bytes an id is computed over. See `SPEC.md` §3.
//!
//! All integers are little-endian and fixed width; strings are length-prefixed; containers are
//! sorted; nothing is optional in the byte stream. One object has exactly one encoding, and the
//! decoder rejects every other byte string (trailing bytes, unsorted entries, bad lengths…), so
//! `encode(decode(b)) == b` for every `b` that decodes.

use crate::id::{ID_LEN, ObjectId};
use crate::kind::Kind;
use crate::kinds::{
    ChangeSummary, ChunkList, ChunkRef, EntryKind, FLAG_EXECUTABLE, Object, Snapshot, Tree,
    TreeEntry,
};

/// First three bytes of every canonical object.
pub const MAGIC: &[u8; 3] = b"SDO";
/// The object format version written by this crate (byte 3 of every canonical object).
pub const FORMAT_VERSION: u8 = 1;
/// Largest canonical object accepted by the decoder (and so by every reader): 64 MiB.
/// Blobs are at most [`crate::chunk::MAX_CHUNK`] or [`crate::chunk::CHUNK_THRESHOLD`] bytes,
/// so only very large trees come near it; the limit bounds memory on hostile input
/// (decompression bombs).
pub const MAX_OBJECT_SIZE: usize = 64 * 1024 * 1024;

/// Length of the canonical header: magic (3) + version (1) + kind (1).
pub const HEADER_LEN: usize = 5;

/// Why bytes are not a valid canonical object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header, or the magic is wrong.
    #[error("not a shelldone object (bad magic)")]
    BadMagic,
    /// A format version this reader does not know.
    #[error("object format version {0} is not supported (this build reads up to {max})", max = FORMAT_VERSION)]
    UnsupportedVersion(u8),
    /// Unknown kind code.
    #[error("unknown object kind code {0}")]
    UnknownKind(u8),
    /// The object is of another kind than the caller expected.
    #[error("expected a {expected} object, found a {found}")]
    WrongKind {
        /// What the caller asked for.
        expected: &'static str,
        /// What the header says.
        found: &'static str,
    },
    /// The body ended early.
    #[error("truncated object: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Offset where reading failed.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes left after the last field.
    #[error("{0} trailing bytes after the object")]
    TrailingBytes(usize),
    /// The object is larger than [`MAX_OBJECT_SIZE`].
    #[error("object of {0} bytes exceeds the {max} byte limit", max = MAX_OBJECT_SIZE)]
    TooLarge(usize),
    /// A field breaks a rule of the format.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// Which rule.
        why: String,
    },
}

fn invalid(what: &'static str, why: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        what,
        why: why.into(),
    }
}

/// Why an object cannot be encoded (it breaks a rule the decoder would reject).
pub type EncodeError = DecodeError;

/// Checks a tree entry name: non-empty, ≤ 255 bytes, no `/` or NUL, not `.` or `..`.
///
/// # Errors
/// [`DecodeError::Invalid`] naming the rule.
pub fn validate_name(name: &[u8]) -> Result<(), DecodeError> {
    if name.is_empty() {
        return Err(invalid("entry name", "empty"));
    }
    if name.len() > 255 {
        return Err(invalid("entry name", "longer than 255 bytes"));
    }
    if name == b"." || name == b".." {
        return Err(invalid(
            "entry name",
            format!("{:?} is not allowed", String::from_utf8_lossy(name)),
        ));
    }
    if name.iter().any(|&b| b == b'/' || b == 0) {
        return Err(invalid(
            "entry name",
            format!("{:?} contains '/' or NUL", String::from_utf8_lossy(name)),
        ));
    }
    Ok(())
}

fn header(kind: Kind, body_len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + body_len);
    v.extend_from_slice(MAGIC);
    v.push(FORMAT_VERSION);
    v.push(kind.code());
    v
}

fn put_str8(out: &mut Vec<u8>, s: &[u8]) {
    // Callers check the length first.
    out.push(u8::try_from(s.len()).expect("length checked by caller"));
    out.extend_from_slice(s);
}

/// Encodes a blob: header + the raw bytes. Does not check [`MAX_OBJECT_SIZE`]: callers pass
/// chunks (at most [`crate::chunk::MAX_CHUNK`] bytes) and small files (at most
/// [`crate::chunk::CHUNK_THRESHOLD`] bytes) or go through [`encode`].
#[must_use]
pub fn encode_blob(data: &[u8]) -> Vec<u8> {
    let mut v = header(Kind::Blob, data.len());
    v.extend_from_slice(data);
    v
}

/// The id of a blob holding `data`: [`ObjectId::compute`] of [`encode_blob`]`(data)`, hashed
/// as the canonical bytes are built, without copying `data` into them.
#[must_use]
pub fn blob_id(data: &[u8]) -> ObjectId {
    let mut h = blake3::Hasher::new_derive_key(Kind::Blob.id_context());
    h.update(&header(Kind::Blob, data.len()));
    h.update(data);
    ObjectId(*h.finalize().as_bytes())
}

/// Encodes a chunk list.
///
/// # Errors
/// When the list is empty, a chunk is empty, or the lengths do not add up to `total_size`.
pub fn encode_chunk_list(c: &ChunkList) -> Result<Vec<u8>, EncodeError> {
    check_chunk_list(c)?;
    let mut v = header(Kind::ChunkList, 12 + c.chunks.len() * (ID_LEN + 4));
    v.extend_from_slice(&c.total_size.to_le_bytes());
    v.extend_from_slice(
        &u32::try_from(c.chunks.len())
            .map_err(|_| invalid("chunk list", "too many chunks"))?
            .to_le_bytes(),
    );
    for ch in &c.chunks {
        v.extend_from_slice(&ch.id.0);
        v.extend_from_slice(&ch.len.to_le_bytes());
    }
    Ok(v)
}

fn check_chunk_list(c: &ChunkList) -> Result<(), DecodeError> {
    if c.chunks.is_empty() {
        return Err(invalid("chunk list", "no chunks"));
    }
    let mut sum: u64 = 0;
    for ch in &c.chunks {
        if ch.len == 0 {
            return Err(invalid("chunk list", "empty chunk"));
        }
        sum = sum
            .checked_add(u64::from(ch.len))
            .ok_or_else(|| invalid("chunk list", "size overflow"))?;
    }
    if sum != c.total_size {
        return Err(invalid(
            "chunk list",
            format!(
                "chunk lengths add up to {sum}, total_size says {}",
                c.total_size
            ),
        ));
    }
    Ok(())
}

/// Encodes a tree. Entries must already be in canonical order.
///
/// # Errors
/// When names are invalid, unsorted or repeated, or flags are set where not allowed.
pub fn encode_tree(t: &Tree) -> Result<Vec<u8>, EncodeError> {
    check_tree(t)?;
    let mut v = header(Kind::Tree, 4 + t.entries.len() * 64);
    v.extend_from_slice(
        &u32::try_from(t.entries.len())
            .map_err(|_| invalid("tree", "too many entries"))?
            .to_le_bytes(),
    );
    for e in &t.entries {
        put_str8(&mut v, &e.name);
        v.push(e.kind.code());
        v.push(e.flags);
        v.extend_from_slice(&e.size.to_le_bytes());
        v.extend_from_slice(&e.id.0);
    }
    Ok(v)
}

fn check_tree(t: &Tree) -> Result<(), DecodeError> {
    for (i, e) in t.entries.iter().enumerate() {
        validate_name(&e.name)?;
        if i > 0 && t.entries[i - 1].name >= e.name {
            return Err(invalid(
                "tree",
                format!(
                    "entries not strictly ascending at {:?}",
                    String::from_utf8_lossy(&e.name)
                ),
            ));
        }
        let allowed = if e.kind.is_file() { FLAG_EXECUTABLE } else { 0 };
        if e.flags & !allowed != 0 {
            return Err(invalid(
                "tree entry flags",
                format!("{:#04x} not allowed on this kind", e.flags),
            ));
        }
        if e.kind == EntryKind::Dir && e.size != 0 {
            return Err(invalid("tree entry", "directory with non-zero size"));
        }
    }
    Ok(())
}

/// Encodes a snapshot.
///
/// # Errors
/// When a string is too long, there are more than 255 parents, or `extra` is unsorted.
pub fn encode_snapshot(s: &Snapshot) -> Result<Vec<u8>, EncodeError> {
    check_snapshot(s)?;
    let mut v = header(Kind::Snapshot, 128 + s.message.len());
    v.extend_from_slice(&s.root.0);
    v.push(u8::try_from(s.parents.len()).expect("checked"));
    for p in &s.parents {
        v.extend_from_slice(&p.0);
    }
    v.extend_from_slice(&s.time_ns.to_le_bytes());
    put_str8(&mut v, s.device.as_bytes());
    v.extend_from_slice(
        &u32::try_from(s.message.len())
            .expect("checked")
            .to_le_bytes(),
    );
    v.extend_from_slice(s.message.as_bytes());
    match &s.session {
        None => v.push(0),
        Some(id) => {
            v.push(1);
            put_str8(&mut v, id.as_bytes());
        }
    }
    v.extend_from_slice(&s.summary.added.to_le_bytes());
    v.extend_from_slice(&s.summary.modified.to_le_bytes());
    v.extend_from_slice(&s.summary.deleted.to_le_bytes());
    v.extend_from_slice(&u32::try_from(s.extra.len()).expect("checked").to_le_bytes());
    for (k, val) in &s.extra {
        put_str8(&mut v, k.as_bytes());
        v.extend_from_slice(&u32::try_from(val.len()).expect("checked").to_le_bytes());
        v.extend_from_slice(val);
    }
    Ok(v)
}

fn check_snapshot(s: &Snapshot) -> Result<(), DecodeError> {
    if s.parents.len() > 255 {
        return Err(invalid("snapshot", "more than 255 parents"));
    }
    if s.device.len() > 255 {
        return Err(invalid("snapshot device", "longer than 255 bytes"));
    }
    if s.message.len() > MAX_OBJECT_SIZE {
        return Err(invalid("snapshot message", "too long"));
    }
    if let Some(id) = &s.session {
        validate_name(id.as_bytes())?;
    }
    for (i, (k, val)) in s.extra.iter().enumerate() {
        if k.is_empty() || k.len() > 255 {
            return Err(invalid(
                "snapshot extra key",
                "empty or longer than 255 bytes",
            ));
        }
        if val.len() > MAX_OBJECT_SIZE {
            return Err(invalid("snapshot extra value", "too long"));
        }
        if i > 0 && s.extra[i - 1].0 >= *k {
            return Err(invalid("snapshot extra", "keys not strictly ascending"));
        }
    }
    Ok(())
}

/// Encodes any object.
///
/// # Errors
/// As the per-kind encoders.
pub fn encode(o: &Object) -> Result<Vec<u8>, EncodeError> {
    let bytes = match o {
        Object::Blob(b) => encode_blob(b),
        Object::ChunkList(c) => encode_chunk_list(c)?,
        Object::Tree(t) => encode_tree(t)?,
        Object::Snapshot(s) => encode_snapshot(s)?,
    };
    // Never produce what no reader accepts.
    if bytes.len() > MAX_OBJECT_SIZE {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated {
                offset: self.pos,
                needed: n.saturating_sub(self.buf.len() - self.pos),
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn id(&mut self) -> Result<ObjectId, DecodeError> {
        Ok(ObjectId(self.take(ID_LEN)?.try_into().expect("32 bytes")))
    }
    fn str8(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn utf8(&mut self, bytes: &[u8], what: &'static str) -> Result<String, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid(what, "not UTF-8"))
    }
    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len() - self.pos))
        }
    }
}

/// Reads the header: returns the kind and the body.
///
/// # Errors
/// Bad magic, unsupported version, unknown kind, or an object over [`MAX_OBJECT_SIZE`].
pub fn split_header(bytes: &[u8]) -> Result<(Kind, &[u8]), DecodeError> {
    if bytes.len() > MAX_OBJECT_SIZE {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    if bytes.len() < HEADER_LEN || &bytes[..3] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[3] != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(bytes[3]));
    }
    let kind = Kind::from_code(bytes[4]).ok_or(DecodeError::UnknownKind(bytes[4]))?;
    Ok((kind, &bytes[HEADER_LEN..]))
}

/// Decodes canonical bytes into an object.
///
/// # Errors
/// Any [`DecodeError`]: the bytes are not exactly one canonical object.
pub fn decode(bytes: &[u8]) -> Result<Object, DecodeError> {
    let (kind, body) = split_header(bytes)?;
    let mut r = Reader { buf: body, pos: 0 };
    let obj = match kind {
        Kind::Blob => {
            r.pos = body.len();
            Object::Blob(body.to_vec())
        }
        Kind::ChunkList => {
            let total_size = r.u64()?;
            let n = r.u32()? as usize;
            if n > body.len() / (ID_LEN + 4) {
                return Err(DecodeError::Truncated {
                    offset: r.pos,
                    needed: n * (ID_LEN + 4),
                });
            }
            let mut chunks = Vec::with_capacity(n);
            for _ in 0..n {
                chunks.push(ChunkRef {
                    id: r.id()?,
                    len: r.u32()?,
                });
            }
            let c = ChunkList { total_size, chunks };
            check_chunk_list(&c)?;
            Object::ChunkList(c)
        }
        Kind::Tree => {
            let n = r.u32()? as usize;
            // Each entry takes at least 1+1+1+1+8+32 bytes; refuse counts the body cannot hold.
            if n > body.len() / 44 {
                return Err(DecodeError::Truncated {
                    offset: r.pos,
                    needed: n * 44,
                });
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.str8()?.to_vec();
                let code = r.u8()?;
                let kind = EntryKind::from_code(code)
                    .ok_or_else(|| invalid("tree entry kind", format!("code {code}")))?;
                let flags = r.u8()?;
                let size = r.u64()?;
                let id = r.id()?;
                entries.push(TreeEntry {
                    name,
                    kind,
                    flags,
                    size,
                    id,
                });
            }
            let t = Tree { entries };
            check_tree(&t)?;
            Object::Tree(t)
        }
        Kind::Snapshot => {
            let root = r.id()?;
            let np = r.u8()?;
            let mut parents = Vec::with_capacity(usize::from(np));
            for _ in 0..np {
                parents.push(r.id()?);
            }
            let time_ns = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
            let dev = r.str8()?;
            let device = r.utf8(dev, "snapshot device")?;
            let mlen = r.u32()? as usize;
            let m = r.take(mlen)?;
            let message = r.utf8(m, "snapshot message")?;
            let session = match r.u8()? {
                0 => None,
                1 => {
                    let s = r.str8()?;
                    Some(r.utf8(s, "snapshot session")?)
                }
                other => return Err(invalid("snapshot session flag", format!("{other}"))),
            };
            let summary = ChangeSummary {
                added: r.u32()?,
                modified: r.u32()?,
                deleted: r.u32()?,
            };
            let ne = r.u32()? as usize;
            if ne > body.len() / 6 {
                return Err(DecodeError::Truncated {
                    offset: r.pos,
                    needed: ne * 6,
                });
            }
            let mut extra = Vec::with_capacity(ne);
            for _ in 0..ne {
                let k = r.str8()?;
                let k = r.utf8(k, "snapshot extra key")?;
                let vl = r.u32()? as usize;
                extra.push((k, r.take(vl)?.to_vec()));
            }
            let s = Snapshot {
                root,
                parents,
                time_ns,
                device,
                message,
                session,
                summary,
                extra,
            };
            check_snapshot(&s)?;
            Object::Snapshot(s)
        }
    };
    r.finish()?;
    Ok(obj)
}

/// Decodes and checks the kind.
///
/// # Errors
/// As [`decode`], or [`DecodeError::WrongKind`].
pub fn decode_as(bytes: &[u8], expected: Kind) -> Result<Object, DecodeError> {
    let o = decode(bytes)?;
    if o.kind() != expected {
        return Err(DecodeError::WrongKind {
            expected: expected.name(),
            found: o.kind().name(),
        });
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_id_without_its_canonical_bytes_is_the_same_id() {
        for len in [0usize, 1, 63, 64, 1000, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            assert_eq!(
                blob_id(&data),
                ObjectId::compute(Kind::Blob, &encode_blob(&data)),
                "{len} bytes"
            );
        }
        assert_ne!(blob_id(b"a"), blob_id(b"b"));
    }
}
