//! The stat cache: (path → size, mtime, ctime, inode → content id) so an unchanged file is never
//! read again. Derived data: a missing, corrupt or old-version cache is simply rebuilt.
//!
//! Racy entries: a file changed within the same timestamp tick as it was hashed could keep its
//! mtime; an entry is trusted only if the file's mtime is older than the hashing time by more
//! than [`RACY_NS`] (git's "racy clean" problem, solved the same way).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use objects_format::{EntryKind, ObjectId};
use serde::{Deserialize, Serialize};

use super::durable;

/// Version 2 ends with a BLAKE3 checksum of everything before it: without one, a flipped byte
/// in an id would be trusted and a save would record another file's content. Version 1 (no
/// checksum) is read as empty.
const MAGIC: &[u8; 8] = b"SDSTAT\x00\x02";
const OLD_MAGICS: [&[u8; 8]; 1] = [b"SDSTAT\x00\x01"];
const CHECKSUM: usize = 32;
/// Magic of the delta file (`"SDSTDL\0"`, version `01`).
const DELTA_MAGIC: &[u8; 8] = b"SDSTDL\x00\x01";
/// A write puts its changes in the delta file while they are at most this many, or an
/// eighth of the cache file's entries.
pub const DELTA_MIN: usize = 1024;
/// Safety margin for coarse filesystem timestamps.
pub const RACY_NS: i64 = 50_000_000;

/// What we know about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// mtime, ns.
    pub mtime_ns: i64,
    /// ctime, ns.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device.
    pub dev: u64,
}

impl Stat {
    /// From file metadata.
    #[must_use]
    pub fn of(m: &std::fs::Metadata) -> Self {
        Stat {
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// One cached file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedEntry {
    /// The stat when hashed.
    pub stat: Stat,
    /// `EntryKind` code (file or chunked file).
    pub kind: u8,
    /// Content id (blob or chunk list).
    pub id: [u8; 32],
    /// When the content was read, ns.
    pub hashed_at_ns: i64,
}

/// The cache, keyed by path relative to the snapshot root (`config/…`, `state/…`).
///
/// Read as git reads its index: the file is kept as it was read, with an index of where each
/// entry starts (sorted by path: a lookup is a binary search). Nothing is allocated per entry,
/// so loading the cache of 100 000 files costs one read, one checksum and one pass of varint
/// decoding. Changes are kept beside it and merged in when the cache is written.
#[derive(Debug, Default, Clone)]
pub struct StatCache {
    /// The file's body (after the magic, before the checksum), as read.
    body: Vec<u8>,
    /// For each entry of `body`, sorted by path: where its record starts, where its path
    /// starts, where its fields start (the path ends there), where the record ends.
    index: Vec<Slot>,
    /// Open-addressing table over `index` (slot + 1; 0 is empty), sized a power of two at
    /// least twice the entries: a lookup hashes the path and compares it once or twice.
    table: Vec<u32>,
    /// Changes over `body`: a new entry, or `None` for one removed (those of the delta file
    /// read with it, then those made since loading).
    changes: BTreeMap<Vec<u8>, Option<CachedEntry>>,
    /// The checksum of the cache file `body` was read from (`None`: no file, or one that is
    /// not usable): a delta file names the file it amends by it.
    base_sum: Option<[u8; CHECKSUM]>,
    dirty: bool,
}

impl StatCache {
    /// Loads the cache; any problem yields an empty cache (it is only an accelerator).
    #[must_use]
    ///
    /// The changes of the delta file beside it (`statcache.delta`, see [`StatCache::save`])
    /// are applied when that delta amends this very file (its base checksum); a delta of
    /// another file, or a damaged one, is ignored.
    pub fn load(path: &Path) -> Self {
        let Ok(bytes) = std::fs::read(path) else {
            return Self::default();
        };
        let sum: Option<[u8; CHECKSUM]> = bytes
            .len()
            .checked_sub(CHECKSUM)
            .and_then(|at| bytes[at..].try_into().ok());
        match parse(bytes) {
            Ok(Some((body, index))) => {
                let table = build_table(&body, &index);
                let changes = std::fs::read(delta_path(path))
                    .ok()
                    .and_then(|d| parse_delta(&d).ok())
                    .filter(|(base, _)| Some(*base) == sum)
                    .map(|(_, changes)| changes)
                    .unwrap_or_default();
                StatCache {
                    body,
                    index,
                    table,
                    changes,
                    base_sum: sum,
                    dirty: false,
                }
            }
            _ => Self::default(),
        }
    }

    /// Whether the cache file is damaged (for `state check`): `Ok` when it is absent, of another
    /// version (it is then only ignored) or sound; `Err(why)` otherwise.
    ///
    /// # Errors
    /// What is wrong with the file.
    pub fn validate(path: &Path) -> std::result::Result<(), String> {
        match std::fs::read(path) {
            Ok(bytes) => parse(bytes).map(|_| ()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("unreadable: {e}")),
        }
    }

    /// Whether the delta file of the cache at `path` is damaged: `Ok` when it is absent or
    /// sound (a sound delta of another cache file is only stale: it is ignored, and replaced
    /// by the next write); `Err(why)` otherwise.
    ///
    /// # Errors
    /// What is wrong with the file.
    pub fn validate_delta(path: &Path) -> std::result::Result<(), String> {
        match std::fs::read(delta_path(path)) {
            Ok(bytes) => parse_delta(&bytes).map(|_| ()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("unreadable: {e}")),
        }
    }

    fn path_at(&self, i: usize) -> &[u8] {
        self.index[i].path(&self.body)
    }

    /// Entry `i` of `body` (checked when it was loaded).
    fn entry_at(&self, i: usize) -> Option<CachedEntry> {
        let mut r = Reader {
            bytes: &self.body,
            pos: self.index[i].fields as usize,
        };
        r.entry().ok()
    }

    /// The entry `body` holds for `rel`, if any (before the changes).
    fn stored(&self, rel: &[u8]) -> Option<CachedEntry> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut at = path_hash(rel) as usize & mask;
        loop {
            match self.table[at] {
                0 => return None,
                n if self.index[n as usize - 1].path(&self.body) == rel => {
                    return self.entry_at(n as usize - 1);
                }
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// The entry for `rel` as things stand (the changes over what was loaded).
    fn current(&self, rel: &[u8]) -> Option<CachedEntry> {
        match self.changes.get(rel) {
            Some(change) => *change,
            None => self.stored(rel),
        }
    }

    /// Looks up a trusted entry for `rel` with the current `stat`.
    #[must_use]
    pub fn lookup(&self, rel: &[u8], stat: &Stat) -> Option<(EntryKind, ObjectId)> {
        let e = self.current(rel)?;
        if e.stat != *stat || e.stat.mtime_ns + RACY_NS >= e.hashed_at_ns {
            return None;
        }
        Some((EntryKind::from_code(e.kind)?, ObjectId(e.id)))
    }

    /// Records a freshly hashed file.
    pub fn insert(
        &mut self,
        rel: Vec<u8>,
        stat: Stat,
        kind: EntryKind,
        id: ObjectId,
        hashed_at_ns: i64,
    ) {
        let e = CachedEntry {
            stat,
            kind: kind.code(),
            id: id.0,
            hashed_at_ns,
        };
        match self.current(&rel) {
            Some(c) if c == e => {}
            // The file was read again and is what the entry says, and the entry was already
            // trusted (not racy): it stays as it is, so a command that only confirmed what
            // the cache vouched for (a restore) does not rewrite the whole file.
            Some(c)
                if c.stat == e.stat
                    && c.kind == e.kind
                    && c.id == e.id
                    && c.stat.mtime_ns + RACY_NS < c.hashed_at_ns => {}
            _ => {
                self.changes.insert(rel, Some(e));
                self.dirty = true;
            }
        }
    }

    /// Drops entries for paths not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&[u8]) -> bool) {
        let mut gone = Vec::new();
        for i in 0..self.index.len() {
            let p = self.path_at(i);
            if !keep(p) && !self.changes.contains_key(p) {
                gone.push(p.to_vec());
            }
        }
        for (p, change) in &mut self.changes {
            if change.is_some() && !keep(p) {
                *change = None;
                self.dirty = true;
            }
        }
        for p in gone {
            self.changes.insert(p, None);
            self.dirty = true;
        }
    }

    /// True when there is something to write.
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Every entry as things stand, sorted by path: a loaded entry nothing changed is its
    /// record's bytes as read (copied, not decoded and encoded again).
    fn merged<'s>(
        &'s self,
        mut each: impl FnMut(Record<'s>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut changes = self.changes.iter().peekable();
        for (i, slot) in self.index.iter().enumerate() {
            let p = slot.path(&self.body);
            while let Some((cp, ce)) = changes.next_if(|(cp, _)| cp.as_slice() < p) {
                if let Some(e) = ce {
                    each(Record::New(cp, *e))?;
                }
            }
            match changes.next_if(|(cp, _)| cp.as_slice() == p) {
                Some((_, Some(e))) => each(Record::New(p, *e))?,
                Some((_, None)) => {}
                None => {
                    if self.entry_at(i).is_some() {
                        each(Record::Raw(
                            &self.body[slot.record as usize..slot.end as usize],
                        ))?;
                    }
                }
            }
        }
        for (cp, ce) in changes {
            if let Some(e) = ce {
                each(Record::New(cp, *e))?;
            }
        }
        Ok(())
    }

    /// The paths of the entries that start with `prefix`: those of the file (a binary search,
    /// then a scan of just those), in order, then those added since.
    ///
    /// With the changes over the file (its delta's among them): an entry removed is left out,
    /// one added is listed.
    pub fn loaded_under<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let start = self.index.partition_point(|s| s.path(&self.body) < prefix);
        let stored = self.index[start..]
            .iter()
            .map(|s| s.path(&self.body))
            .take_while(move |p| p.starts_with(prefix))
            .filter(|p| !self.changes.contains_key(*p));
        let changed = self
            .changes
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(p, _)| p.starts_with(prefix))
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| p.as_slice());
        stored.chain(changed)
    }

    /// Writes the cache atomically if it changed. The records are streamed to the file (two
    /// passes: one counts them, one writes them), never assembled in memory: at 100 000 files
    /// the file and the record list had cost 21 MB.
    ///
    /// # Errors
    /// I/O errors.
    ///
    /// Git's split index, for the same reason: when the changes are few next to the file read
    /// (at most an eighth of its entries, or [`DELTA_MIN`]), only they are written, to the
    /// delta file `statcache.delta` that names the cache file it amends by its checksum; the
    /// cache file itself is left as it is. A command that changes one file of 100 000 then
    /// writes a few hundred bytes instead of 10 MB. Otherwise the whole cache is written and
    /// the delta removed (a crash in between leaves a delta of another file: ignored).
    pub fn save(&mut self, path: &Path) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(base) = self.base_sum
            && self.changes.len() <= DELTA_MIN.max(self.index.len() / 8)
        {
            let mut buf = Vec::new();
            durable::write_atomic_with(&delta_path(path), |w| {
                let mut out = Summed {
                    sum: blake3::Hasher::new(),
                    block: Vec::with_capacity(SUM_BLOCK),
                    w,
                };
                out.put(DELTA_MAGIC)?;
                out.put(&base)?;
                push_varint(&mut buf, self.changes.len() as u64);
                out.put(&buf)?;
                for (p, change) in &self.changes {
                    buf.clear();
                    push_varint(&mut buf, p.len() as u64);
                    buf.extend_from_slice(p);
                    match change {
                        None => buf.push(0),
                        Some(e) => {
                            buf.push(1);
                            buf = postcard::to_extend(e, std::mem::take(&mut buf))
                                .map_err(std::io::Error::other)?;
                        }
                    }
                    out.put(&buf)?;
                }
                out.flush()?;
                out.w.write_all(out.sum.finalize().as_bytes())
            })?;
            self.dirty = false;
            return Ok(());
        }
        self.write_whole(path)
    }

    /// Writes the whole cache to `path` and removes its delta (see [`StatCache::save`]).
    fn write_whole(&mut self, path: &Path) -> std::io::Result<()> {
        let mut count = 0u64;
        self.merged(|_| {
            count += 1;
            Ok(())
        })?;
        let mut written = None;
        durable::write_atomic_with(path, |w| {
            // The checksum is taken over a block of records at a time: blake3 hashes a long
            // input on every SIMD lane at once, but a call per ~100-byte record runs its
            // one-block path (a third of a one-session restore's CPU at 100 000 files).
            let mut out = Summed {
                sum: blake3::Hasher::new(),
                block: Vec::with_capacity(SUM_BLOCK),
                w,
            };
            out.put(MAGIC)?;
            let mut buf = Vec::new();
            push_varint(&mut buf, count);
            out.put(&buf)?;
            self.merged(|r| match r {
                Record::Raw(bytes) => out.put(bytes),
                Record::New(p, e) => {
                    buf.clear();
                    let pair: (&[u8], &CachedEntry) = (p, &e);
                    buf = postcard::to_extend(&pair, std::mem::take(&mut buf))
                        .map_err(std::io::Error::other)?;
                    out.put(&buf)
                }
            })?;
            out.flush()?;
            let sum = out.sum.finalize();
            written = Some(*sum.as_bytes());
            out.w.write_all(sum.as_bytes())
        })?;
        // The delta amended the file just replaced; the changes it held are in the new one.
        match std::fs::remove_file(delta_path(path)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Later writes from this process amend the new file: `changes` (relative to the
        // file read) applied to it give the same entries.
        self.base_sum = written;
        self.dirty = false;
        Ok(())
    }
}

/// The delta file beside the cache file at `path` (`statcache.delta`).
#[must_use]
pub fn delta_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".delta");
    path.with_file_name(name)
}

/// A delta file's records, by path: `None` for a removed entry.
type Delta = BTreeMap<Vec<u8>, Option<CachedEntry>>;

/// Parses a delta file (SPEC §11.13): the checksum of the cache file it amends and its
/// changes; `Err(why)` for damage.
fn parse_delta(bytes: &[u8]) -> std::result::Result<([u8; CHECKSUM], Delta), String> {
    if bytes.len() < DELTA_MAGIC.len() + 2 * CHECKSUM || &bytes[..DELTA_MAGIC.len()] != DELTA_MAGIC
    {
        return Err("not a stat cache delta (unknown header or too short)".into());
    }
    let (head, sum) = bytes.split_at(bytes.len() - CHECKSUM);
    if blake3::hash(head).as_bytes() != sum {
        return Err("checksum mismatch".into());
    }
    let base: [u8; CHECKSUM] = head[DELTA_MAGIC.len()..DELTA_MAGIC.len() + CHECKSUM]
        .try_into()
        .expect("32 bytes");
    let body = &head[DELTA_MAGIC.len() + CHECKSUM..];
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    let n = r.varint()?;
    let mut out = Delta::new();
    for _ in 0..n {
        let (start, len) = r.path()?;
        let path = body[start..start + len].to_vec();
        let change = match r.byte()? {
            0 => None,
            1 => Some(r.entry()?),
            t => return Err(format!("does not decode: record tag {t}")),
        };
        out.insert(path, change);
    }
    if r.pos != body.len() {
        return Err("does not decode: bytes after the last record".into());
    }
    Ok((base, out))
}

/// How many bytes [`Summed`] gathers before it hashes and writes them.
const SUM_BLOCK: usize = 256 * 1024;

/// A writer that checksums what it writes, a block at a time.
struct Summed<'w> {
    sum: blake3::Hasher,
    block: Vec<u8>,
    w: &'w mut dyn Write,
}

impl Summed<'_> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.block.len() + bytes.len() > SUM_BLOCK {
            self.flush()?;
        }
        self.block.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sum.update(&self.block);
        self.w.write_all(&self.block)?;
        self.block.clear();
        Ok(())
    }
}

/// Where one entry lies in a cache body.
#[derive(Debug, Clone, Copy)]
struct Slot {
    record: u32,
    path: u32,
    fields: u32,
    end: u32,
}

impl Slot {
    fn path<'b>(&self, body: &'b [u8]) -> &'b [u8] {
        &body[self.path as usize..self.fields as usize]
    }
}

/// One entry on its way to the file.
enum Record<'a> {
    /// A loaded entry's bytes, unchanged.
    Raw(&'a [u8]),
    /// A new or changed entry.
    New(&'a [u8], CachedEntry),
}

/// FNV-1a (64 bits) of a path: the stat cache's lookup table.
fn path_hash(p: &[u8]) -> u64 {
    p.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The lookup table of `index` (see [`StatCache::table`]).
fn build_table(body: &[u8], index: &[Slot]) -> Vec<u32> {
    if index.is_empty() {
        return Vec::new();
    }
    let size = (index.len() * 2).next_power_of_two();
    let mask = size - 1;
    let mut table = vec![0u32; size];
    for (i, slot) in index.iter().enumerate() {
        let mut at = path_hash(slot.path(body)) as usize & mask;
        while table[at] != 0 {
            at = (at + 1) & mask;
        }
        // Fewer than 2^31 entries: the body is under 4 GiB.
        table[at] = i as u32 + 1;
    }
    table
}

/// Unsigned LEB128, as postcard writes a length.
fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over a cache body: the postcard encoding of §11.13 of the SPEC, decoded by hand so
/// that nothing is allocated per entry.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> std::result::Result<u8, String> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| "does not decode: the body ends inside an entry".to_owned())?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| "does not decode: the body ends inside an entry".to_owned())?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Unsigned LEB128, at most 10 bytes, no bits past 64.
    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err("does not decode: a varint overflows 64 bits".into());
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("does not decode: a varint overflows 64 bits".into())
    }

    fn zigzag(&mut self) -> std::result::Result<i64, String> {
        let u = self.varint()?;
        #[expect(
            clippy::cast_possible_wrap,
            reason = "zigzag decoding: the bits are the value"
        )]
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    fn path(&mut self) -> std::result::Result<(usize, usize), String> {
        let len = usize::try_from(self.varint()?)
            .map_err(|_| "does not decode: a path length overflows".to_owned())?;
        let start = self.pos;
        self.take(len)?;
        Ok((start, len))
    }

    fn entry(&mut self) -> std::result::Result<CachedEntry, String> {
        let stat = Stat {
            size: self.varint()?,
            mtime_ns: self.zigzag()?,
            ctime_ns: self.zigzag()?,
            ino: self.varint()?,
            dev: self.varint()?,
        };
        let kind = self.byte()?;
        let id: [u8; 32] = self.take(32)?.try_into().expect("32 bytes taken");
        Ok(CachedEntry {
            stat,
            kind,
            id,
            hashed_at_ns: self.zigzag()?,
        })
    }
}

/// The body and its entry index.
type Parsed = (Vec<u8>, Vec<Slot>);

/// Parses a cache file: `Ok(None)` for another (older) version, `Err(why)` for damage.
fn parse(mut bytes: Vec<u8>) -> std::result::Result<Option<Parsed>, String> {
    if bytes.is_empty() {
        return Err("empty".into());
    }
    if bytes.len() >= MAGIC.len() && OLD_MAGICS.iter().any(|m| &bytes[..m.len()] == *m) {
        return Ok(None);
    }
    if bytes.len() < MAGIC.len() + CHECKSUM || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a stat cache (unknown header or too short)".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM);
    if blake3::hash(body).as_bytes() != sum {
        return Err("checksum mismatch".into());
    }
    bytes.truncate(bytes.len() - CHECKSUM);
    bytes.drain(..MAGIC.len());
    if u32::try_from(bytes.len()).is_err() {
        return Err("too large (over 4 GiB)".into());
    }
    let mut r = Reader {
        bytes: &bytes,
        pos: 0,
    };
    let n = r.varint()?;
    let mut index = Vec::with_capacity(usize::try_from(n.min(1 << 24)).unwrap_or(0));
    for _ in 0..n {
        let record = r.pos;
        let (start, _) = r.path()?;
        let fields = r.pos;
        r.entry()?;
        // Offsets fit: the body is under 4 GiB (checked above).
        index.push(Slot {
            record: record as u32,
            path: start as u32,
            fields: fields as u32,
            end: r.pos as u32,
        });
    }
    // Writers sort by path; a cache that is not sorted is put in order (the last of equal
    // paths wins, as when entries were inserted one by one).
    let path = |s: &Slot| s.path(&bytes);
    if !index.windows(2).all(|w| path(&w[0]) < path(&w[1])) {
        index.reverse();
        index.sort_by(|a, b| path(a).cmp(path(b)));
        index.dedup_by(|a, b| path(a) == path(b));
    }
    Ok(Some((bytes, index)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn stat(n: u64) -> Stat {
        Stat {
            size: n,
            mtime_ns: i64::try_from(n).expect("small") - 5,
            ctime_ns: -(i64::try_from(n).expect("small")),
            ino: n * 3,
            dev: u64::MAX - n,
        }
    }

    proptest! {
        /// The cache read back from its file (and changed again after loading) answers every
        /// lookup as a plain map of the same operations does, and writes the bytes postcard
        /// writes for that map (the SPEC's encoding).
        #[test]
        fn the_cache_behaves_as_a_map_across_saves_and_loads(
            ops in proptest::collection::vec((0u8..3, 0u8..40, 0u64..1000), 1..120),
            reload_at in 0usize..120,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("statcache");
            let mut model: BTreeMap<Vec<u8>, CachedEntry> = BTreeMap::new();
            let mut c = StatCache::default();
            for (i, (op, key, n)) in ops.iter().enumerate() {
                if i == reload_at {
                    c.save(&path).expect("save");
                    c = StatCache::load(&path);
                }
                let rel = format!("config/f{key:02}").into_bytes();
                match op {
                    0 | 1 => {
                        let st = stat(*n);
                        let at = 1_000_000_000 + i64::try_from(*n).expect("small");
                        c.insert(rel.clone(), st, EntryKind::File, ObjectId([*key; 32]), at);
                        model.insert(rel, CachedEntry { stat: st, kind: EntryKind::File.code(), id: [*key; 32], hashed_at_ns: at });
                    }
                    _ => {
                        let cut = *key;
                        c.retain(|p| p.last().is_none_or(|l| *l % 7 != cut % 7));
                        model.retain(|p, _| p.last().is_none_or(|l| *l % 7 != cut % 7));
                    }
                }
            }
            for key in 0u8..40 {
                let rel = format!("config/f{key:02}").into_bytes();
                prop_assert_eq!(c.current(&rel), model.get(&rel).copied());
            }
            // Written as it is now (a delta when the changes since the reload are few), read
            // back: the same answers.
            c.dirty = true;
            c.save(&path).expect("save");
            let back = StatCache::load(&path);
            for key in 0u8..40 {
                let rel = format!("config/f{key:02}").into_bytes();
                prop_assert_eq!(back.current(&rel), model.get(&rel).copied());
            }
            // Written back as loaded plus changes, then as a whole: the same bytes.
            c.write_whole(&path).expect("save");
            prop_assert!(!delta_path(&path).exists());
            let want: Vec<(&Vec<u8>, &CachedEntry)> = model.iter().collect();
            let mut bytes = MAGIC.to_vec();
            bytes.extend(postcard::to_allocvec(&want).expect("encode"));
            bytes.extend_from_slice(blake3::hash(&bytes).as_bytes());
            prop_assert_eq!(std::fs::read(&path).expect("read"), bytes);
            let back = StatCache::load(&path);
            for (rel, e) in &model {
                prop_assert_eq!(back.current(rel), Some(*e));
            }
        }
    }

    fn entry(n: u64) -> CachedEntry {
        CachedEntry {
            stat: stat(n),
            kind: EntryKind::File.code(),
            id: [n as u8; 32],
            hashed_at_ns: 9_000_000_000,
        }
    }

    fn put(c: &mut StatCache, rel: &str, n: u64) {
        let e = entry(n);
        c.insert(
            rel.as_bytes().to_vec(),
            e.stat,
            EntryKind::File,
            ObjectId(e.id),
            e.hashed_at_ns,
        );
    }

    #[test]
    fn few_changes_go_to_the_delta_many_rewrite_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("statcache");
        let mut c = StatCache::default();
        for i in 0..3000 {
            put(&mut c, &format!("state/sessions/s{i:04}/f"), i);
        }
        c.save(&path).expect("save");
        assert!(!delta_path(&path).exists(), "a new cache is written whole");
        let base = std::fs::read(&path).expect("read");

        // One change, one removal, one new descriptor: the cache file is left as it was.
        let mut c = StatCache::load(&path);
        put(&mut c, "state/sessions/s0007/f", 77_777);
        c.retain(|p| p != b"state/sessions/s0008/f");
        put(&mut c, "state/sessions/s9999/session.json", 5);
        c.save(&path).expect("save");
        assert_eq!(std::fs::read(&path).expect("read"), base);
        let delta = std::fs::metadata(delta_path(&path)).expect("delta").len();
        assert!(
            delta < 600,
            "the delta holds only the changes: {delta} bytes"
        );
        assert_eq!(StatCache::validate_delta(&path), Ok(()));

        let back = StatCache::load(&path);
        assert_eq!(back.current(b"state/sessions/s0007/f"), Some(entry(77_777)));
        assert_eq!(back.current(b"state/sessions/s0008/f"), None);
        assert_eq!(back.current(b"state/sessions/s0009/f"), Some(entry(9)));
        assert_eq!(
            back.current(b"state/sessions/s9999/session.json"),
            Some(entry(5))
        );
        let listed: Vec<&[u8]> = back.loaded_under(b"state/sessions/s999").collect();
        assert_eq!(listed, vec![&b"state/sessions/s9999/session.json"[..]]);
        assert!(!back.loaded_under(b"state/sessions/s0008").any(|_| true));

        // Changes past DELTA_MIN (and an eighth of the entries): the whole cache again, and
        // no delta.
        let mut c = back;
        for i in 0..=DELTA_MIN as u64 {
            put(&mut c, &format!("state/sessions/s{i:04}/f"), i + 10_000);
        }
        c.save(&path).expect("save");
        assert!(!delta_path(&path).exists());
        let whole = StatCache::load(&path);
        assert_eq!(
            whole.current(b"state/sessions/s0007/f"),
            Some(entry(10_007))
        );
        assert_eq!(
            whole.current(b"state/sessions/s0008/f"),
            Some(entry(10_008))
        );
        assert_eq!(
            whole.current(b"state/sessions/s9999/session.json"),
            Some(entry(5))
        );

        // The same process writes again after a whole write: a delta of the new file.
        let mut c = whole;
        put(&mut c, "config/new", 3);
        c.save(&path).expect("save");
        let mut again = StatCache::load(&path);
        assert_eq!(again.current(b"config/new"), Some(entry(3)));
        put(&mut again, "config/newer", 4);
        again.save(&path).expect("save");
        assert_eq!(
            StatCache::load(&path).current(b"config/new"),
            Some(entry(3))
        );
        assert_eq!(
            StatCache::load(&path).current(b"config/newer"),
            Some(entry(4))
        );
    }

    #[test]
    fn a_stale_or_damaged_delta_is_ignored_and_a_damaged_one_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("statcache");
        let mut c = StatCache::default();
        for i in 0..100 {
            put(&mut c, &format!("config/f{i:03}"), i);
        }
        c.save(&path).expect("save");
        let mut c = StatCache::load(&path);
        put(&mut c, "config/f001", 500);
        c.save(&path).expect("save");
        let delta = std::fs::read(delta_path(&path)).expect("delta");
        assert_eq!(
            StatCache::load(&path).current(b"config/f001"),
            Some(entry(500))
        );

        // Every flipped byte: reported as damage, and never applied.
        for i in [0, 9, 40, delta.len() / 2, delta.len() - 1] {
            let mut b = delta.clone();
            b[i] ^= 0x01;
            std::fs::write(delta_path(&path), &b).expect("write");
            assert!(StatCache::validate_delta(&path).is_err(), "flip at {i}");
            assert_eq!(
                StatCache::load(&path).current(b"config/f001"),
                Some(entry(1))
            );
        }

        // A sound delta of another cache file (the cache was rewritten by another writer,
        // which crashed before removing it): not damage, not applied.
        std::fs::write(delta_path(&path), &delta).expect("write");
        let mut other = StatCache::default();
        put(&mut other, "config/f001", 2);
        other.write_whole(&path).expect("write");
        std::fs::write(delta_path(&path), &delta).expect("write");
        assert_eq!(StatCache::validate_delta(&path), Ok(()));
        assert_eq!(
            StatCache::load(&path).current(b"config/f001"),
            Some(entry(2))
        );
    }

    #[test]
    fn an_unsorted_cache_is_read_in_order_the_last_of_equal_paths_winning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("statcache");
        let e = |n: u8| CachedEntry {
            stat: stat(u64::from(n)),
            kind: 1,
            id: [n; 32],
            hashed_at_ns: 9_000_000_000,
        };
        let v: Vec<(Vec<u8>, CachedEntry)> = vec![
            (b"state/b".to_vec(), e(1)),
            (b"config/a".to_vec(), e(2)),
            (b"state/b".to_vec(), e(3)),
        ];
        let mut bytes = MAGIC.to_vec();
        bytes.extend(postcard::to_allocvec(&v).expect("encode"));
        bytes.extend_from_slice(blake3::hash(&bytes).as_bytes());
        std::fs::write(&path, &bytes).expect("write");
        let c = StatCache::load(&path);
        assert_eq!(c.current(b"state/b"), Some(e(3)));
        assert_eq!(c.current(b"config/a"), Some(e(2)));
        assert_eq!(c.current(b"config/zz"), None);
        // A body cut inside an entry is damage, whatever its checksum says.
        let mut cut = MAGIC.to_vec();
        cut.extend(&postcard::to_allocvec(&v).expect("encode")[..20]);
        cut.extend_from_slice(blake3::hash(&cut).as_bytes());
        std::fs::write(&path, &cut).expect("write");
        assert!(StatCache::validate(&path).is_err());
    }

    #[test]
    fn a_damaged_cache_is_never_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("statcache");
        let mut c = StatCache::default();
        let stat = Stat {
            size: 5,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: 7,
            dev: 1,
        };
        c.insert(
            b"config/a".to_vec(),
            stat,
            EntryKind::File,
            ObjectId([9; 32]),
            1_000_000_000,
        );
        c.save(&path).expect("save");
        assert!(StatCache::validate(&path).is_ok());
        assert!(StatCache::load(&path).lookup(b"config/a", &stat).is_some());
        // Any flipped byte (an id, a size) is caught by the checksum: the cache reads as empty.
        let good = std::fs::read(&path).expect("read");
        for i in [9, good.len() / 2, good.len() - 40, good.len() - 1] {
            let mut b = good.clone();
            b[i] ^= 0x01;
            std::fs::write(&path, &b).expect("write");
            assert!(StatCache::validate(&path).is_err(), "flip at {i}");
            assert!(StatCache::load(&path).lookup(b"config/a", &stat).is_none());
        }
        // An older version is not damage: it is ignored.
        std::fs::write(&path, b"SDSTAT\x00\x01anything").expect("write");
        assert!(StatCache::validate(&path).is_ok());
        std::fs::remove_file(&path).expect("rm");
        assert!(
            StatCache::validate(&path).is_ok(),
            "a missing cache is normal"
        );
    }
}
