//! Pack files and their indexes (SPEC.md §7.2): the byte layout only, no I/O.
//!
//! Pack: magic `SDPACK\0\x01`, then entries back to back, each `kind u8 | len u32 LE | zstd frame
//! [len]` (enough to walk a pack without its index; an entry's id is the hash of its decompressed
//! bytes, so it is not repeated). A pack's name is `pack-<hex BLAKE3 of the whole file>`.
//!
//! Index: magic `SDPIDX\0\x01`, `count u32 LE`, the pack's BLAKE3 [32], then `count` entries
//! sorted by id (strictly ascending): `id [32] | kind u8 | offset u64 LE (of the frame) | len u32
//! LE`, then BLAKE3 of everything before it [32].

use crate::id::ObjectId;
use crate::kinds::Kind;

/// Pack file magic.
pub const PACK_MAGIC: &[u8; 8] = b"SDPACK\x00\x01";
/// Index file magic.
pub const IDX_MAGIC: &[u8; 8] = b"SDPIDX\x00\x01";
/// Per-entry header length in a pack (`kind u8 | len u32`).
pub const ENTRY_HEADER: u64 = 1 + 4;
/// One index entry's length.
pub const IDX_ENTRY: usize = 32 + 1 + 8 + 4;
const IDX_HEAD: usize = 8 + 4 + 32;

/// One object's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The object.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// Offset of its zstd frame in the pack.
    pub offset: u64,
    /// Frame length.
    pub len: u32,
}

/// The entry header written before a frame.
#[must_use]
pub fn entry_header(kind: Kind, len: u32) -> [u8; ENTRY_HEADER as usize] {
    let mut h = [0u8; ENTRY_HEADER as usize];
    h[0] = kind.code();
    h[1..5].copy_from_slice(&len.to_le_bytes());
    h
}

/// Builds an index (sorts `entries` by id).
///
/// # Panics
/// With 2^32 or more entries.
#[must_use]
pub fn build_index(pack_hash: &[u8; 32], entries: &mut [IndexEntry]) -> Vec<u8> {
    entries.sort_by_key(|e| e.id);
    let mut v = Vec::with_capacity(IDX_HEAD + entries.len() * IDX_ENTRY + 32);
    v.extend_from_slice(IDX_MAGIC);
    v.extend_from_slice(
        &u32::try_from(entries.len())
            .expect("fewer than 4G objects per pack")
            .to_le_bytes(),
    );
    v.extend_from_slice(pack_hash);
    for e in entries.iter() {
        v.extend_from_slice(&e.id.0);
        v.push(e.kind.code());
        v.extend_from_slice(&e.offset.to_le_bytes());
        v.extend_from_slice(&e.len.to_le_bytes());
    }
    let sum = blake3::hash(&v);
    v.extend_from_slice(sum.as_bytes());
    v
}

/// Parses and checks an index for a pack of `pack_len` bytes: magic, checksum, length, sorted
/// unique ids, known kinds, every frame after the pack magic and inside the pack.
///
/// # Errors
/// A description of the first problem.
pub fn parse_index(b: &[u8], pack_len: u64) -> Result<([u8; 32], Vec<IndexEntry>), String> {
    if b.len() < IDX_HEAD + 32 || &b[..8] != IDX_MAGIC {
        return Err("not a pack index".into());
    }
    let (body, sum) = b.split_at(b.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err("index checksum mismatch".into());
    }
    let count = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
    if (body.len() - IDX_HEAD) / IDX_ENTRY != count
        || !(body.len() - IDX_HEAD).is_multiple_of(IDX_ENTRY)
    {
        return Err("index length does not match its count".into());
    }
    let pack_hash: [u8; 32] = b[12..44].try_into().expect("32 bytes");
    let mut out: Vec<IndexEntry> = Vec::with_capacity(count);
    for e in body[IDX_HEAD..].chunks_exact(IDX_ENTRY) {
        let id = ObjectId(e[..32].try_into().expect("32 bytes"));
        let kind = Kind::from_code(e[32])
            .ok_or_else(|| format!("entry {id} has unknown kind {}", e[32]))?;
        let offset = u64::from_le_bytes(e[33..41].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(e[41..45].try_into().expect("4 bytes"));
        let end = offset
            .checked_add(u64::from(len))
            .ok_or_else(|| format!("entry {id} overflows"))?;
        if offset < PACK_MAGIC.len() as u64 + ENTRY_HEADER || end > pack_len {
            return Err(format!("entry {id} points outside the pack"));
        }
        if out.last().is_some_and(|p| p.id >= id) {
            return Err("index entries are not sorted by id".into());
        }
        out.push(IndexEntry {
            id,
            kind,
            offset,
            len,
        });
    }
    Ok((pack_hash, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_roundtrips_and_rejects_damage() {
        let mut entries: Vec<IndexEntry> = (0u8..5)
            .map(|i| IndexEntry {
                id: ObjectId([i.wrapping_mul(97); 32]),
                kind: Kind::Blob,
                offset: 13 + u64::from(i) * 100,
                len: 90,
            })
            .collect();
        let idx = build_index(&[7; 32], &mut entries);
        let (h, parsed) = parse_index(&idx, 1000).expect("valid");
        assert_eq!(h, [7; 32]);
        assert_eq!(parsed, entries);
        for i in 0..idx.len() {
            let mut bad = idx.clone();
            bad[i] ^= 1;
            assert!(parse_index(&bad, 1000).is_err(), "flip at {i} accepted");
        }
        assert!(
            parse_index(&idx, 400).is_err(),
            "frames past the end of the pack"
        );
        assert!(parse_index(&idx[..idx.len() - 1], 1000).is_err());
    }
}
