//! Pack files and their indexes (SPEC.md §7.2): the byte layout only, no I/O.
//!
//! Pack: magic `SDPACK\0` + version, then entries back to back, each `code u8 | len u32 LE |
//! zstd frame [len]` (enough to walk a pack without its index). An entry is either one object
//! (`code` = its kind, the frame decompresses to the object's canonical bytes) or, from version
//! 2, a **block** (`code` = [`BLOCK_CODE`]): one frame holding many small objects, each
//! `len u32 LE | canonical bytes`, so that zstd sees megabytes of context instead of one chunk.
//! Ids are not repeated: an object's id is the hash of its canonical bytes.
//!
//! Index: magic `SDPIDX\0` + version, `count u32 LE`, the pack's BLAKE3 (32 bytes), then `count`
//! entries sorted by id (strictly ascending), then BLAKE3 of everything before it (32 bytes).
//! Version 1 entry: `id [32] | kind u8 | offset u64 LE (of the frame) | len u32 LE`.
//! Version 2 adds `start u32 LE | size u32 LE`: where the object's canonical bytes lie inside
//! the decompressed block, or both 0 for an object entry.

use crate::id::ObjectId;
use crate::kind::Kind;

/// Pack file magic written today (version 2: object entries and blocks).
pub const PACK_MAGIC: &[u8; 8] = b"SDPACK\x00\x02";
/// Pack file magic of version 1 (object entries only); still read.
pub const PACK_MAGIC_V1: &[u8; 8] = b"SDPACK\x00\x01";
/// Index file magic written today (version 2).
pub const IDX_MAGIC: &[u8; 8] = b"SDPIDX\x00\x02";
/// Index file magic of version 1; still read.
pub const IDX_MAGIC_V1: &[u8; 8] = b"SDPIDX\x00\x01";
/// Per-entry header length in a pack (`code u8 | len u32`).
pub const ENTRY_HEADER: u64 = 1 + 4;
/// Entry code of a block (object entries use their kind code, 1…4).
pub const BLOCK_CODE: u8 = 0x80;
/// A writer closes a block once its content reaches this many bytes.
pub const BLOCK_TARGET: usize = 4 << 20;
/// Objects whose canonical bytes are longer than this are never put in a block.
pub const BLOCK_MEMBER_MAX: usize = 1 << 20;
/// Largest decompressed block a reader accepts (≥ `BLOCK_TARGET - 1 + 4 + BLOCK_MEMBER_MAX`).
pub const BLOCK_MAX: usize = 8 << 20;
/// One version-2 index entry's length.
pub const IDX_ENTRY: usize = 32 + 1 + 8 + 4 + 4 + 4;
/// One version-1 index entry's length.
pub const IDX_ENTRY_V1: usize = 32 + 1 + 8 + 4;
const IDX_HEAD: usize = 8 + 4 + 32;

/// Where an object's canonical bytes lie inside a decompressed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    /// Offset of the canonical bytes in the block content (after their `len u32`).
    pub start: u32,
    /// Length of the canonical bytes.
    pub size: u32,
}

/// One object's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The object.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// Offset of the entry's zstd frame in the pack.
    pub offset: u64,
    /// Frame length.
    pub len: u32,
    /// `Some` when the frame is a block holding this object among others.
    pub member: Option<Member>,
}

/// The entry header written before an object's frame.
#[must_use]
pub fn entry_header(kind: Kind, len: u32) -> [u8; ENTRY_HEADER as usize] {
    entry_header_code(kind.code(), len)
}

/// The entry header written before a block's frame.
#[must_use]
pub fn block_header(len: u32) -> [u8; ENTRY_HEADER as usize] {
    entry_header_code(BLOCK_CODE, len)
}

fn entry_header_code(code: u8, len: u32) -> [u8; ENTRY_HEADER as usize] {
    let mut h = [0u8; ENTRY_HEADER as usize];
    h[0] = code;
    h[1..5].copy_from_slice(&len.to_le_bytes());
    h
}

/// Appends one object to a block's (uncompressed) content; returns where it landed.
///
/// # Panics
/// When the object is longer than [`BLOCK_MEMBER_MAX`] or the block would exceed [`BLOCK_MAX`]
/// (a writer flushes at [`BLOCK_TARGET`], so neither happens).
pub fn block_push(content: &mut Vec<u8>, canonical: &[u8]) -> Member {
    assert!(
        canonical.len() <= BLOCK_MEMBER_MAX,
        "object too large for a block"
    );
    assert!(
        content.len() + 4 + canonical.len() <= BLOCK_MAX,
        "block full"
    );
    let size = u32::try_from(canonical.len()).expect("bounded by BLOCK_MEMBER_MAX");
    content.extend_from_slice(&size.to_le_bytes());
    let start = u32::try_from(content.len()).expect("bounded by BLOCK_MAX");
    content.extend_from_slice(canonical);
    Member { start, size }
}

/// Splits a decompressed block into its members, in order. Rejects an empty block, a member of
/// length 0 or over [`BLOCK_MEMBER_MAX`], a truncated member and content over [`BLOCK_MAX`].
///
/// # Errors
/// A description of the first problem.
pub fn parse_block(content: &[u8]) -> Result<Vec<Member>, String> {
    parse_block_prefix(content, true)
}

/// As [`parse_block`], on the first bytes of a block's content (a reader that decompressed only
/// as far as the member it wanted): the members that lie wholly inside `content`, which must
/// chain from its start exactly as in a whole block; the last one may run past its end when
/// `complete` is false (the rest of the block was not decompressed), and is then left out.
///
/// # Errors
/// A description of the first problem.
pub fn parse_block_prefix(content: &[u8], complete: bool) -> Result<Vec<Member>, String> {
    if content.len() > BLOCK_MAX {
        return Err(format!(
            "block holds {} bytes, over the {BLOCK_MAX} byte limit",
            content.len()
        ));
    }
    if content.is_empty() {
        return Err("empty block".into());
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < content.len() {
        let Some(len) = content.get(at..at + 4) else {
            if !complete {
                break;
            }
            return Err(format!("block truncated in the length at {at}"));
        };
        let size = u32::from_le_bytes(len.try_into().expect("4 bytes"));
        if size == 0 || size as usize > BLOCK_MEMBER_MAX {
            return Err(format!("block member at {at} has length {size}"));
        }
        let start = at + 4;
        let end = start + size as usize;
        if end > content.len() {
            if !complete {
                break;
            }
            return Err(format!("block member at {at} runs past the block"));
        }
        out.push(Member {
            start: u32::try_from(start).expect("bounded by BLOCK_MAX"),
            size,
        });
        at = end;
    }
    Ok(out)
}

/// The canonical bytes of `member` in a decompressed block, checked against the length prefix
/// the block itself records before them.
///
/// # Errors
/// When the member lies outside the block or its length prefix disagrees.
pub fn block_member(content: &[u8], member: Member) -> Result<&[u8], String> {
    let start = member.start as usize;
    let end = start + member.size as usize;
    let prefix = start
        .checked_sub(4)
        .and_then(|p| content.get(p..start))
        .ok_or("index points before the block's first member")?;
    if u32::from_le_bytes(prefix.try_into().expect("4 bytes")) != member.size {
        return Err("index and block disagree on the member's length".into());
    }
    content
        .get(start..end)
        .ok_or_else(|| "index points past the end of the block".into())
}

/// Builds a version-2 index (sorts `entries` by id).
///
/// # Panics
/// With 2^32 or more entries.
#[must_use]
pub fn build_index(pack_hash: &[u8; 32], entries: &mut [IndexEntry]) -> Vec<u8> {
    build(IDX_MAGIC, pack_hash, entries)
}

/// Builds a version-1 index (sorts `entries` by id); for tests and tools that must produce the
/// old format. Writers use [`build_index`].
///
/// # Panics
/// With 2^32 or more entries, or an entry in a block (version 1 has none).
#[must_use]
pub fn build_index_v1(pack_hash: &[u8; 32], entries: &mut [IndexEntry]) -> Vec<u8> {
    assert!(
        entries.iter().all(|e| e.member.is_none()),
        "version 1 has no blocks"
    );
    build(IDX_MAGIC_V1, pack_hash, entries)
}

fn build(magic: &[u8; 8], pack_hash: &[u8; 32], entries: &mut [IndexEntry]) -> Vec<u8> {
    let v2 = magic == IDX_MAGIC;
    entries.sort_by_key(|e| e.id);
    let per = if v2 { IDX_ENTRY } else { IDX_ENTRY_V1 };
    let mut v = Vec::with_capacity(IDX_HEAD + entries.len() * per + 32);
    v.extend_from_slice(magic);
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
        if v2 {
            let m = e.member.unwrap_or(Member { start: 0, size: 0 });
            v.extend_from_slice(&m.start.to_le_bytes());
            v.extend_from_slice(&m.size.to_le_bytes());
        }
    }
    let sum = blake3::hash(&v);
    v.extend_from_slice(sum.as_bytes());
    v
}

/// A checked pack index, read in place: its entries are fixed-size and sorted by id, so a
/// lookup is a binary search over the bytes as read (as git reads its `.idx`), and nothing is
/// allocated per entry.
#[derive(Debug, Clone)]
pub struct Index {
    bytes: Vec<u8>,
    per: usize,
    v2: bool,
    count: usize,
    /// `fanout[b]`: the first entry whose id's first byte is `b` or more (as in git's `.idx`,
    /// computed here): a lookup searches only the entries that share the first byte.
    fanout: Vec<u32>,
}

impl Index {
    /// Checks an index (version 1 or 2) for a pack of `pack_len` bytes: magic, checksum, length,
    /// sorted unique ids, known kinds, every frame after the pack magic and inside the pack,
    /// every block member inside [`BLOCK_MAX`].
    ///
    /// # Errors
    /// A description of the first problem.
    pub fn parse(bytes: Vec<u8>, pack_len: u64) -> Result<Index, String> {
        let b = &bytes;
        if b.len() < IDX_HEAD + 32 {
            return Err("not a pack index".into());
        }
        let v2 = match &b[..8] {
            m if m == IDX_MAGIC => true,
            m if m == IDX_MAGIC_V1 => false,
            m if m[..7] == IDX_MAGIC[..7] => {
                return Err(format!(
                    "pack index version {} is not supported (a newer shelldone wrote it)",
                    m[7]
                ));
            }
            _ => return Err("not a pack index".into()),
        };
        let per = if v2 { IDX_ENTRY } else { IDX_ENTRY_V1 };
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err("index checksum mismatch".into());
        }
        let count = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
        if (body.len() - IDX_HEAD) / per != count || !(body.len() - IDX_HEAD).is_multiple_of(per) {
            return Err("index length does not match its count".into());
        }
        let mut index = Index {
            bytes,
            per,
            v2,
            count,
            fanout: Vec::new(),
        };
        let mut last: Option<ObjectId> = None;
        for i in 0..count {
            let e = index.decode(i)?;
            if e.offset < PACK_MAGIC.len() as u64 + ENTRY_HEADER
                || e.offset
                    .checked_add(u64::from(e.len))
                    .is_none_or(|end| end > pack_len)
            {
                return Err(format!("entry {} points outside the pack", e.id));
            }
            if last.is_some_and(|p| p >= e.id) {
                return Err("index entries are not sorted by id".into());
            }
            last = Some(e.id);
        }
        let mut fanout = vec![0u32; 257];
        for i in 0..count {
            fanout[usize::from(index.raw(i)[0]) + 1] += 1;
        }
        for b in 1..257 {
            fanout[b] += fanout[b - 1];
        }
        index.fanout = fanout;
        Ok(index)
    }

    /// The BLAKE3 hash of the pack this index describes.
    #[must_use]
    pub fn pack_hash(&self) -> [u8; 32] {
        self.bytes[12..44].try_into().expect("32 bytes")
    }

    /// The number of objects.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// True for an index of no object.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn raw(&self, i: usize) -> &[u8] {
        let at = IDX_HEAD + i * self.per;
        &self.bytes[at..at + self.per]
    }

    /// The id of entry `i` (`i < len()`).
    #[must_use]
    pub fn id_at(&self, i: usize) -> ObjectId {
        ObjectId(self.raw(i)[..32].try_into().expect("32 bytes"))
    }

    fn decode(&self, i: usize) -> Result<IndexEntry, String> {
        let e = self.raw(i);
        let id = ObjectId(e[..32].try_into().expect("32 bytes"));
        let kind = Kind::from_code(e[32])
            .ok_or_else(|| format!("entry {id} has unknown kind {}", e[32]))?;
        let offset = u64::from_le_bytes(e[33..41].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(e[41..45].try_into().expect("4 bytes"));
        let member = if self.v2 {
            let start = u32::from_le_bytes(e[45..49].try_into().expect("4 bytes"));
            let size = u32::from_le_bytes(e[49..53].try_into().expect("4 bytes"));
            match (start, size) {
                (0, 0) => None,
                (s, n)
                    if s >= 4
                        && n > 0
                        && n as usize <= BLOCK_MEMBER_MAX
                        && s as usize + n as usize <= BLOCK_MAX =>
                {
                    Some(Member { start, size })
                }
                _ => return Err(format!("entry {id} points outside its block")),
            }
        } else {
            None
        };
        Ok(IndexEntry {
            id,
            kind,
            offset,
            len,
            member,
        })
    }

    /// Entry `i` (`i < len()`; checked when the index was parsed).
    #[must_use]
    pub fn entry(&self, i: usize) -> IndexEntry {
        self.decode(i).expect("checked by Index::parse")
    }

    /// The entry for `id`, by binary search among the ids that share its first byte. Bytes 1 to
    /// 8 are compared as one big-endian integer (the same order as the bytes), and the rest only
    /// when those are equal: a save with a warm stat cache asks this for every file, and a
    /// `memcmp` call per step was a tenth of its user time at 100 000 files.
    #[must_use]
    pub fn find(&self, id: &ObjectId) -> Option<IndexEntry> {
        let first = usize::from(id.0[0]);
        let (mut lo, mut hi) = (self.fanout[first] as usize, self.fanout[first + 1] as usize);
        let key = u64::from_be_bytes(id.0[1..9].try_into().expect("8 bytes"));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let raw = self.raw(mid);
            let here = u64::from_be_bytes(raw[1..9].try_into().expect("8 bytes"));
            match here.cmp(&key).then_with(|| raw[9..32].cmp(&id.0[9..])) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.entry(mid)),
            }
        }
        None
    }

    /// Every entry, in id order.
    pub fn entries(&self) -> impl Iterator<Item = IndexEntry> + '_ {
        (0..self.count).map(|i| self.entry(i))
    }
}

/// Parses and checks an index (see [`Index::parse`]) into its pack hash and entries.
///
/// # Errors
/// A description of the first problem.
pub fn parse_index(b: &[u8], pack_len: u64) -> Result<([u8; 32], Vec<IndexEntry>), String> {
    let index = Index::parse(b.to_vec(), pack_len)?;
    Ok((index.pack_hash(), index.entries().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<IndexEntry> {
        (0u8..5)
            .map(|i| IndexEntry {
                id: ObjectId([i.wrapping_mul(97); 32]),
                kind: Kind::Blob,
                offset: 13 + u64::from(i) * 100,
                len: 90,
                member: (i % 2 == 1).then_some(Member {
                    start: 4 + u32::from(i),
                    size: 7,
                }),
            })
            .collect()
    }

    #[test]
    fn an_index_finds_every_id_it_holds_and_no_other() {
        // Ids sharing a first byte, and first bytes 0 and 255 (the fanout's ends).
        let mut entries: Vec<IndexEntry> = [0u8, 0, 7, 7, 7, 200, 255, 255]
            .iter()
            .enumerate()
            .map(|(i, first)| {
                let mut id = [u8::try_from(i).expect("small"); 32];
                id[0] = *first;
                IndexEntry {
                    id: ObjectId(id),
                    kind: Kind::Tree,
                    offset: 13 + 10 * i as u64,
                    len: 5,
                    member: None,
                }
            })
            .collect();
        let idx = build_index(&[1; 32], &mut entries);
        let index = Index::parse(idx, 1000).expect("valid");
        for e in &entries {
            assert_eq!(index.find(&e.id), Some(*e), "{}", e.id);
        }
        for first in [0u8, 1, 7, 199, 200, 254, 255] {
            let mut absent = [0xee; 32];
            absent[0] = first;
            assert_eq!(index.find(&ObjectId(absent)).map(|e| e.id), None);
        }
    }

    #[test]
    fn ids_equal_in_their_first_nine_bytes_are_told_apart_by_the_rest() {
        // `find` compares bytes 1..9 as an integer, then the rest: ids that differ only after
        // byte 8 (and one differing only in byte 8) must each be found, and their neighbours not.
        let id = |tail: u8, b8: u8| {
            let mut id = [0x42; 32];
            id[8] = b8;
            id[31] = tail;
            ObjectId(id)
        };
        let mut entries: Vec<IndexEntry> = [(1, 0x42), (5, 0x42), (9, 0x42), (5, 0x43), (0, 0x41)]
            .iter()
            .enumerate()
            .map(|(i, &(tail, b8))| IndexEntry {
                id: id(tail, b8),
                kind: Kind::Blob,
                offset: 13 + 10 * i as u64,
                len: 5,
                member: None,
            })
            .collect();
        let idx = build_index(&[1; 32], &mut entries);
        let index = Index::parse(idx, 1000).expect("valid");
        for e in &entries {
            assert_eq!(index.find(&e.id), Some(*e), "{}", e.id);
        }
        for (tail, b8) in [(0, 0x42), (3, 0x42), (10, 0x42), (1, 0x43), (1, 0x41)] {
            assert_eq!(index.find(&id(tail, b8)), None);
        }
    }

    #[test]
    fn index_roundtrips_and_rejects_damage() {
        let mut entries = entries();
        let idx = build_index(&[7; 32], &mut entries);
        assert_eq!(idx.len(), 76 + 53 * 5);
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

    #[test]
    fn version_1_index_still_reads() {
        let mut entries: Vec<IndexEntry> = entries()
            .into_iter()
            .map(|e| IndexEntry { member: None, ..e })
            .collect();
        let idx = build_index_v1(&[9; 32], &mut entries);
        assert_eq!(idx.len(), 76 + 45 * 5);
        assert_eq!(&idx[..8], IDX_MAGIC_V1);
        let (_, parsed) = parse_index(&idx, 1000).expect("valid v1");
        assert_eq!(parsed, entries);
        let mut newer = build_index(&[9; 32], &mut entries);
        newer[7] = 3;
        let err = parse_index(&newer, 1000).expect_err("version 3");
        assert!(err.contains("version 3"), "{err}");
    }

    #[test]
    fn block_members_roundtrip_and_damage_is_caught() {
        let mut content = Vec::new();
        let a = block_push(&mut content, b"first object");
        let b = block_push(&mut content, b"second");
        assert_eq!((a.start, a.size, b.start, b.size), (4, 12, 20, 6));
        assert_eq!(parse_block(&content).expect("valid"), vec![a, b]);
        assert_eq!(block_member(&content, b).expect("in block"), b"second");
        // An index whose member disagrees with the block's own length prefix is caught.
        assert!(block_member(&content, Member { start: 20, size: 5 }).is_err());
        assert!(block_member(&content, Member { start: 2, size: 6 }).is_err());
        assert!(
            block_member(
                &content,
                Member {
                    start: 20,
                    size: 60
                }
            )
            .is_err()
        );
        assert!(parse_block(&content[..content.len() - 1]).is_err());
        assert!(parse_block(&[]).is_err());
        assert!(parse_block(&[0, 0, 0, 0]).is_err(), "zero-length member");
    }

    #[test]
    fn a_block_prefix_gives_the_members_inside_it_and_still_catches_damage() {
        let mut content = Vec::new();
        let a = block_push(&mut content, b"first object");
        let b = block_push(&mut content, b"second");
        // Cut inside b's bytes or inside b's length: a alone (and, taken for the whole block,
        // refused). Cut right after a: a alone either way.
        assert_eq!(parse_block_prefix(&content[..16], false), Ok(vec![a]));
        assert_eq!(parse_block_prefix(&content[..16], true), Ok(vec![a]));
        for cut in [23, 18, 17] {
            assert_eq!(
                parse_block_prefix(&content[..cut], false).expect("a prefix"),
                vec![a],
                "cut at {cut}"
            );
            assert!(parse_block_prefix(&content[..cut], true).is_err());
        }
        assert_eq!(
            parse_block_prefix(&content, false).expect("all of it"),
            vec![a, b]
        );
        // Damage inside the prefix is still refused: a zero length, an oversized length.
        let mut zero = content.clone();
        zero[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert!(parse_block_prefix(&zero[..23], false).is_err());
        let mut huge = content.clone();
        huge[16..20].copy_from_slice(&(BLOCK_MEMBER_MAX as u32 + 1).to_le_bytes());
        assert!(parse_block_prefix(&huge[..23], false).is_err());
        assert!(parse_block_prefix(&[], false).is_err(), "empty");
    }
}
