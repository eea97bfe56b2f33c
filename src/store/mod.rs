//! The object store: loose zstd objects in fan-out dirs, written in batches.
//!
//! Layout under `snapshots/`: `objects/ab/cdef…` (a zstd frame of the canonical bytes),
//! `staging/<txn>/` (objects of an unfinished batch), `refs/`, `logs/` (reflogs), `lock`,
//! `statcache`, `device`, `FORMAT`.

pub mod durable;
pub mod lock;
pub mod refs;
pub mod statcache;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use fs_err as fs;
use objects_format::{Kind, MAX_OBJECT_SIZE, Object, ObjectId};

use crate::error::{Error, Result};

/// zstd level for stored objects.
pub const ZSTD_LEVEL: i32 = 3;

/// Handle on the object directory.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    root: PathBuf,
}

impl ObjectStore {
    /// A store rooted at `snapshots/` (the directory must exist).
    #[must_use]
    pub fn new(root: PathBuf) -> Self {
        ObjectStore { root }
    }

    /// The `snapshots/` dir.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of an object's file.
    #[must_use]
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// True when the object's file exists (content not checked).
    #[must_use]
    pub fn has(&self, id: &ObjectId) -> bool {
        self.object_path(id).exists()
    }

    /// Reads the raw stored (compressed) bytes of an object.
    ///
    /// # Errors
    /// [`Error::MissingObject`] or I/O errors.
    pub fn read_raw(&self, id: &ObjectId) -> Result<Vec<u8>> {
        match std::fs::read(self.object_path(id)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::MissingObject { id: *id }),
            Err(e) => Err(Error::Io(std::io::Error::new(e.kind(), format!("{e} (reading object {id})")))),
        }
    }

    /// Reads, decompresses and verifies an object; returns its canonical bytes.
    ///
    /// # Errors
    /// Missing, corrupt (hash mismatch, bad zstd, too large) or I/O.
    pub fn read_canonical(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let raw = self.read_raw(id)?;
        let canonical = decompress(&raw).map_err(|why| Error::CorruptObject { id: *id, why })?;
        let (kind, _) = objects_format::encoding::split_header(&canonical)
            .map_err(|e| Error::CorruptObject { id: *id, why: e.to_string() })?;
        let actual = ObjectId::compute(kind, &canonical);
        if actual != *id {
            return Err(Error::CorruptObject { id: *id, why: format!("content hashes to {actual}") });
        }
        Ok(canonical)
    }

    /// Reads, verifies and decodes an object of the expected kind.
    ///
    /// # Errors
    /// As [`Self::read_canonical`], or [`Error::WrongKind`].
    pub fn read(&self, id: &ObjectId, expected: Kind) -> Result<Object> {
        let c = self.read_canonical(id)?;
        let o = objects_format::decode(&c).map_err(|e| Error::CorruptObject { id: *id, why: e.to_string() })?;
        if o.kind() != expected {
            return Err(Error::WrongKind { id: *id, expected, found: o.kind().name() });
        }
        Ok(o)
    }

    /// Reads a tree.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn read_tree(&self, id: &ObjectId) -> Result<objects_format::Tree> {
        match self.read(id, Kind::Tree)? {
            Object::Tree(t) => Ok(t),
            _ => unreachable!("kind checked by read"),
        }
    }

    /// Reads a snapshot.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn read_snapshot(&self, id: &ObjectId) -> Result<objects_format::Snapshot> {
        match self.read(id, Kind::Snapshot)? {
            Object::Snapshot(s) => Ok(s),
            _ => unreachable!("kind checked by read"),
        }
    }

    /// Reads a blob's bytes.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn read_blob(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let mut c = self.read_canonical(id)?;
        let (kind, _) = objects_format::encoding::split_header(&c).expect("verified by read_canonical");
        if kind != Kind::Blob {
            return Err(Error::WrongKind { id: *id, expected: Kind::Blob, found: kind.name() });
        }
        c.drain(..objects_format::encoding::HEADER_LEN);
        Ok(c)
    }

    /// Reads a chunk list.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn read_chunk_list(&self, id: &ObjectId) -> Result<objects_format::ChunkList> {
        match self.read(id, Kind::ChunkList)? {
            Object::ChunkList(c) => Ok(c),
            _ => unreachable!("kind checked by read"),
        }
    }

    /// Lists every object id present (loose).
    ///
    /// # Errors
    /// I/O errors.
    pub fn list(&self) -> Result<Vec<ObjectId>> {
        let mut out = Vec::new();
        let dir = self.root.join("objects");
        if !dir.exists() {
            return Ok(out);
        }
        for fan in fs::read_dir(&dir)? {
            let fan = fan?;
            let Some(prefix) = fan.file_name().to_str().map(str::to_owned) else { continue };
            if prefix.len() != 2 || !fan.file_type()?.is_dir() {
                continue;
            }
            for e in fs::read_dir(fan.path())? {
                let e = e?;
                let Some(rest) = e.file_name().to_str().map(str::to_owned) else { continue };
                if let Ok(id) = ObjectId::from_hex(&format!("{prefix}{rest}")) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    /// Starts a write batch.
    ///
    /// # Errors
    /// I/O errors creating the staging dir.
    pub fn batch(&self) -> Result<Batch<'_>> {
        let staging = self.root.join("staging").join(format!("{}-{}", std::process::id(), now_ns()));
        fs::create_dir_all(&staging)?;
        Ok(Batch {
            store: self,
            staging,
            staged: Mutex::new(Vec::new()),
            seen: Mutex::new(HashSet::new()),
            bytes: AtomicU64::new(0),
        })
    }
}

/// Decompresses one stored object, refusing anything over [`MAX_OBJECT_SIZE`]
/// and frames that do not declare their size (decompression bombs).
///
/// # Errors
/// A description of what is wrong.
pub fn decompress(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let size = match zstd::zstd_safe::get_frame_content_size(raw) {
        Ok(Some(n)) => n,
        Ok(None) => return Err("zstd frame does not declare its size".into()),
        Err(_) => return Err("not a zstd frame".into()),
    };
    if size > MAX_OBJECT_SIZE as u64 {
        return Err(format!("declares {size} bytes, over the {MAX_OBJECT_SIZE} byte limit"));
    }
    let size = usize::try_from(size).expect("bounded by MAX_OBJECT_SIZE");
    let out = zstd::bulk::decompress(raw, size).map_err(|e| format!("zstd: {e}"))?;
    if out.len() != size {
        return Err(format!("zstd frame declared {size} bytes but held {}", out.len()));
    }
    Ok(out)
}

/// Compresses canonical bytes for storage (one zstd frame with the content size).
///
/// # Errors
/// zstd errors (I/O kind).
pub fn compress(canonical: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(canonical, ZSTD_LEVEL)
}

/// Nanoseconds since the epoch.
#[must_use]
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A batch of new objects: written to `staging/`, then made durable with one filesystem sync,
/// then renamed into `objects/` children-first (blobs, chunk lists, trees, snapshots), so that an
/// object present in `objects/` always has its children present too.
#[derive(Debug)]
pub struct Batch<'s> {
    store: &'s ObjectStore,
    staging: PathBuf,
    staged: Mutex<Vec<(Kind, ObjectId)>>,
    seen: Mutex<HashSet<ObjectId>>,
    bytes: AtomicU64,
}

/// What a committed batch wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// New objects.
    pub objects: u64,
    /// Compressed bytes written.
    pub bytes: u64,
}

impl Batch<'_> {
    /// Adds an object given as canonical bytes (already known to hash to `id`).
    /// Safe to call from many threads; objects already stored or staged are skipped.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_canonical(&self, kind: Kind, id: ObjectId, canonical: &[u8]) -> Result<bool> {
        if !self.seen.lock().expect("no panics while held").insert(id) {
            return Ok(false);
        }
        if self.store.has(&id) {
            return Ok(false);
        }
        let z = compress(canonical)?;
        let mut f = fs::File::create(self.staging.join(id.to_hex()))?;
        f.write_all(&z)?;
        self.bytes.fetch_add(z.len() as u64, Ordering::Relaxed);
        self.staged.lock().expect("no panics while held").push((kind, id));
        Ok(true)
    }

    /// Adds an object already compressed (from a remote); `canonical` must be verified by the caller.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_raw(&self, kind: Kind, id: ObjectId, raw: &[u8]) -> Result<bool> {
        if !self.seen.lock().expect("no panics while held").insert(id) || self.store.has(&id) {
            return Ok(false);
        }
        let mut f = fs::File::create(self.staging.join(id.to_hex()))?;
        f.write_all(raw)?;
        self.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
        self.staged.lock().expect("no panics while held").push((kind, id));
        Ok(true)
    }

    /// Encodes and adds an object; returns its id.
    ///
    /// # Errors
    /// Encoding or I/O errors.
    pub fn put(&self, obj: &Object) -> Result<ObjectId> {
        let (id, bytes) = objects_format::encode_with_id(obj)?;
        self.put_canonical(obj.kind(), id, &bytes)?;
        Ok(id)
    }

    /// True when the id is in the store or staged in this batch.
    #[must_use]
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.seen.lock().expect("no panics while held").contains(id) || self.store.has(id)
    }

    /// Makes every staged object durable and visible. After this returns, refs may point at them.
    ///
    /// # Errors
    /// I/O errors; objects already renamed stay (they are valid, merely unreferenced).
    pub fn commit(self) -> Result<BatchStats> {
        let mut staged = self.staged.into_inner().expect("no panics while held");
        let stats = BatchStats { objects: staged.len() as u64, bytes: self.bytes.load(Ordering::Relaxed) };
        if !staged.is_empty() {
            // 1. Content durable before any name points at it.
            durable::sync_filesystem(&self.staging)?;
            // 2. Children before parents.
            staged.sort_by_key(|(k, _)| k.code());
            let mut fan_dirs = HashSet::new();
            let objects = self.store.root.join("objects");
            for (_, id) in &staged {
                let target = self.store.object_path(id);
                let fan = target.parent().expect("fan-out dir").to_path_buf();
                if fan_dirs.insert(fan.clone()) && !fan.exists() {
                    fs::create_dir_all(&fan)?;
                }
                fs::rename(self.staging.join(id.to_hex()), &target)?;
            }
            // 3. Renames durable before the caller moves a ref.
            if fan_dirs.len() > 16 {
                durable::sync_filesystem(&objects)?;
            } else {
                for d in &fan_dirs {
                    durable::sync_dir(d)?;
                }
                durable::sync_dir(&objects)?;
            }
        }
        fs::remove_dir_all(&self.staging)?;
        Ok(stats)
    }
}
