//! The stat cache: (path → size, mtime, ctime, inode → content id) so an unchanged file is never
//! read again. Derived data: a missing, corrupt or old-version cache is simply rebuilt.
//!
//! Racy entries: a file changed within the same timestamp tick as it was hashed could keep its
//! mtime; an entry is trusted only if the file's mtime is older than the hashing time by more
//! than [`RACY_NS`] (git's "racy clean" problem, solved the same way).

use std::collections::HashMap;
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
#[derive(Debug, Default, Clone)]
pub struct StatCache {
    entries: HashMap<Vec<u8>, CachedEntry>,
    dirty: bool,
}

impl StatCache {
    /// Loads the cache; any problem yields an empty cache (it is only an accelerator).
    #[must_use]
    pub fn load(path: &Path) -> Self {
        let Ok(bytes) = std::fs::read(path) else {
            return Self::default();
        };
        match parse(&bytes) {
            Ok(Some(entries)) => StatCache {
                entries,
                dirty: false,
            },
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
            Ok(bytes) => parse(&bytes).map(|_| ()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("unreadable: {e}")),
        }
    }

    /// Looks up a trusted entry for `rel` with the current `stat`.
    #[must_use]
    pub fn lookup(&self, rel: &[u8], stat: &Stat) -> Option<(EntryKind, ObjectId)> {
        let e = self.entries.get(rel)?;
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
        if self.entries.get(&rel) != Some(&e) {
            self.entries.insert(rel, e);
            self.dirty = true;
        }
    }

    /// Drops entries for paths not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&[u8]) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|k, _| keep(k));
        if self.entries.len() != before {
            self.dirty = true;
        }
    }

    /// True when there is something to write.
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the cache atomically if it changed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&mut self, path: &Path) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut v: Vec<(&Vec<u8>, &CachedEntry)> = self.entries.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = MAGIC.to_vec();
        out.extend(postcard::to_allocvec(&v).map_err(std::io::Error::other)?);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        durable::write_atomic(path, &out)?;
        self.dirty = false;
        Ok(())
    }
}

/// Parses a cache file: `Ok(None)` for another (older) version, `Err(why)` for damage.
fn parse(bytes: &[u8]) -> std::result::Result<Option<HashMap<Vec<u8>, CachedEntry>>, String> {
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
    postcard::from_bytes::<Vec<(Vec<u8>, CachedEntry)>>(&body[MAGIC.len()..])
        .map(|v| Some(v.into_iter().collect()))
        .map_err(|e| format!("does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
