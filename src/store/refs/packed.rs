//! `packed-refs`: many refs in one file (a first save of 1000 sessions writes it once), read
//! through a cache keyed by the file's identity, replaced atomically; a loose ref overrides it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fs_err as fs;
use objects_format::ObjectId;

use super::{HEAD, RefTxn, Refs, check_name};
use crate::error::{Error, Result};
use crate::store::durable;

/// (inode, length, mtime ns, ctime ns) of `packed-refs`.
pub(super) type PackedKey = (u64, u64, i64, i64);

/// Packed refs by name.
pub(super) type Packed = BTreeMap<String, ObjectId>;

/// The last version of `packed-refs` read.
pub(super) type PackedCache = Arc<Mutex<Option<(PackedKey, Arc<Packed>)>>>;

pub(super) const PACKED_HEADER: &str = "# shelldone packed-refs 1";

/// What `packed-refs` holds, damaged or not.
#[derive(Debug, Clone)]
pub enum PackedScan {
    /// There is no `packed-refs`.
    Absent,
    /// It parses.
    Sound(BTreeMap<String, ObjectId>),
    /// It does not parse: why, and the lines that still did.
    Corrupt {
        /// The first problem found.
        why: String,
        /// Refs read from the lines that parse.
        salvaged: BTreeMap<String, ObjectId>,
    },
}

/// Parses `packed-refs`; on damage, why (naming the first bad line) and the refs of the lines
/// that still parse.
pub(super) fn parse_packed(bytes: &[u8]) -> std::result::Result<Packed, (String, Packed)> {
    let mut map = Packed::new();
    let mut first: Option<String> = None;
    if bytes.is_empty() {
        return Err(("empty (no header line)".into(), map));
    }
    let body = match bytes.strip_suffix(b"\n") {
        Some(b) => b,
        None => {
            first = Some("truncated: the last line has no newline".into());
            bytes
        }
    };
    let mut lines = body.split(|b| *b == b'\n').enumerate();
    match lines.next() {
        Some((_, h)) if h == PACKED_HEADER.as_bytes() => {}
        Some((_, h)) => {
            first.get_or_insert_with(|| {
                format!(
                    "unknown header {:?}",
                    String::from_utf8_lossy(h)
                        .chars()
                        .take(80)
                        .collect::<String>()
                )
            });
        }
        None => {}
    }
    for (i, l) in lines {
        let bad = |why: &str| format!("line {}: {why}", i + 1);
        let Ok(l) = std::str::from_utf8(l) else {
            first.get_or_insert_with(|| bad("not UTF-8"));
            continue;
        };
        let parsed = l.split_once(' ').and_then(|(hex, name)| {
            let id = ObjectId::from_hex(hex).ok()?;
            check_name(name).ok()?;
            Some((name, id))
        });
        match parsed {
            Some((name, id)) => {
                if map.insert(name.to_owned(), id).is_some() {
                    first.get_or_insert_with(|| bad(&format!("ref {name} listed twice")));
                }
            }
            None => {
                first.get_or_insert_with(|| {
                    bad(&format!(
                        "not '<id> <ref>': {:?}",
                        l.chars().take(80).collect::<String>()
                    ))
                });
            }
        }
    }
    match first {
        None => Ok(map),
        Some(why) => Err((why, map)),
    }
}

impl Refs {
    /// The packed refs (empty when there is no `packed-refs`).
    ///
    /// # Errors
    /// [`Error::CorruptFile`] naming `packed-refs` when it does not parse; I/O errors.
    pub(super) fn packed(&self) -> Result<Arc<Packed>> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        // Key and content from the same open file: a replacement between a stat and a read
        // cannot pair an old key with new content.
        let mut f = match fs::File::open(&self.packed) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(Packed::new()));
            }
            Err(e) => return Err(e.into()),
        };
        let meta = f.metadata()?;
        let key = (
            meta.ino(),
            meta.len(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
            meta.ctime_nsec() + meta.ctime() * 1_000_000_000,
        );
        let mut cache = self.packed_cache.lock().expect("no panics while held");
        if let Some((k, p)) = cache.as_ref()
            && *k == key
        {
            return Ok(p.clone());
        }
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        let map =
            parse_packed(&bytes).map_err(|(why, _)| Error::corrupt_file(&self.packed, why))?;
        let p = Arc::new(map);
        *cache = Some((key, p.clone()));
        Ok(p)
    }

    /// `packed-refs` as it is, without failing on damage: for `state check` and `state recover`.
    ///
    /// # Errors
    /// I/O errors other than a missing file.
    pub fn scan_packed(&self) -> Result<PackedScan> {
        match std::fs::read(&self.packed) {
            Ok(bytes) => Ok(match parse_packed(&bytes) {
                Ok(map) => PackedScan::Sound(map),
                Err((why, salvaged)) => PackedScan::Corrupt { why, salvaged },
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PackedScan::Absent),
            Err(e) => Err(Error::Io(std::io::Error::new(
                e.kind(),
                format!("{e} (reading {})", self.packed.display()),
            ))),
        }
    }

    /// The `packed-refs` path.
    #[must_use]
    pub fn packed_path(&self) -> &Path {
        &self.packed
    }

    /// Writes every ref of `packed-refs` that no loose file overrides as a loose ref (each
    /// durable, its folders created durably), then removes `packed-refs` and syncs its folder:
    /// the refs read the same at every moment, and afterwards a reader that knows only loose
    /// refs (store format 1) reads them all. For `migrate --undo` (docs/migrations.md).
    /// Returns how many refs were written; 0 without `packed-refs`. The caller holds the
    /// store lock.
    ///
    /// # Errors
    /// A `packed-refs` that does not parse (nothing is changed then), I/O errors (what was
    /// written stays; running again finishes).
    pub fn unpack(&self) -> Result<usize> {
        let map = match self.scan_packed()? {
            PackedScan::Absent => return Ok(0),
            PackedScan::Sound(map) => map,
            PackedScan::Corrupt { why, .. } => {
                return Err(Error::corrupt_file(&self.packed, why));
            }
        };
        let mut written = 0;
        for (name, id) in &map {
            check_name(name)?;
            let path = self.path(name);
            // A loose file, whatever it holds, is what the ref reads as: it stays.
            if std::fs::symlink_metadata(&path).is_ok() {
                continue;
            }
            super::write_loose(&path, *id)?;
            written += 1;
        }
        durable::remove_file(&self.packed)?;
        durable::sync_dir(self.packed.parent().expect("packed-refs is in snapshots/"))?;
        *self.packed_cache.lock().expect("no panics while held") = None;
        Ok(written)
    }

    /// Replaces `packed-refs` atomically (temp, fsync, rename, fsync dir).
    pub(super) fn write_packed(&self, packed: &Packed) -> Result<()> {
        let mut text = String::with_capacity(32 + packed.len() * 90);
        text.push_str(PACKED_HEADER);
        text.push('\n');
        for (name, id) in packed {
            text.push_str(&format!("{id} {name}\n"));
        }
        // Forget the cached version first: the next read goes to the file.
        *self.packed_cache.lock().expect("no panics while held") = None;
        durable::write_atomic(&self.packed, text.as_bytes())?;
        Ok(())
    }

    /// Drops the refs `plan` deletes from `packed-refs` (their loose files, if any, still hold
    /// the old values until the caller removes them).
    pub(super) fn unpack_deleted(&self, plan: &[(&RefTxn, Option<ObjectId>)]) -> Result<()> {
        let gone: Vec<&str> = plan
            .iter()
            .filter(|(u, _)| u.new.is_none())
            .map(|(u, _)| u.name.as_str())
            .collect();
        self.drop_packed(&gone)
    }

    /// Rewrites `packed-refs` without `names` (nothing is written when none of them is packed).
    pub(super) fn drop_packed(&self, names: &[&str]) -> Result<()> {
        let packed = self.packed()?;
        if !names.iter().any(|n| packed.contains_key(*n)) {
            return Ok(());
        }
        let mut p = (*packed).clone();
        for n in names {
            p.remove(*n);
        }
        self.write_packed(&p)
    }

    /// Large batches: every ref but the head goes into one new `packed-refs` (one file written
    /// and synced, not one per ref); loose files that would shadow the new values are removed;
    /// the head, the commit point, is written last as a loose ref. A crash before the head moves
    /// leaves the head at its old snapshot, like a crash between the renames of loose refs.
    pub(super) fn apply_packed(&self, plan: &[(&RefTxn, Option<ObjectId>)]) -> Result<()> {
        let mut p = (*self.packed()?).clone();
        let mut head = None;
        let mut shadowing = Vec::new();
        for (u, _) in plan {
            if u.name == HEAD {
                head = Some(u.new);
                continue;
            }
            match u.new {
                Some(id) => p.insert(u.name.clone(), id),
                None => p.remove(&u.name),
            };
            let path = self.path(&u.name);
            if path.is_file() {
                shadowing.push(path);
            }
        }
        self.write_packed(&p)?;
        let mut dirs: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
        for path in shadowing {
            durable::remove_file(&path)?;
            dirs.insert(path.parent().expect("ref has a parent").to_path_buf());
        }
        for d in dirs {
            durable::sync_dir(&d)?;
        }
        if let Some(new) = head {
            let path = self.path(HEAD);
            match new {
                Some(id) => {
                    durable::create_dir_all_durable(&self.refs)?;
                    durable::write_atomic(&path, format!("{id}\n").as_bytes())?;
                }
                None => {
                    durable::remove_file(&path)?;
                    durable::sync_dir(&self.refs)?;
                }
            }
        }
        Ok(())
    }

    /// Replaces `packed-refs` with `packed` during repair (caller holds the lock). No reflog
    /// line: the caller logs each ref whose value changed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn repair_packed(&self, packed: &BTreeMap<String, ObjectId>) -> Result<()> {
        self.write_packed(packed)
    }
}
