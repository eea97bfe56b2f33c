//! The object store: loose zstd objects in fan-out dirs, written in batches.
//!
//! Layout under `snapshots/`: `objects/ab/cdef…` (a zstd frame of the canonical bytes),
//! `packs/pack-<hex>.{pack,idx}` (large batches, see [`pack`]),
//! `staging/<txn>/` (objects of an unfinished batch), `refs/`, `logs/` (reflogs), `lock`,
//! `statcache`, `device`, `FORMAT`.

mod batch;
pub mod durable;
mod export;
mod import;
pub mod lock;
pub mod pack;
pub mod refs;
pub mod statcache;
pub mod walk;

pub use batch::{Batch, BatchStats};
use batch::{BlockBuf, PackWriter};
pub use export::ExportStats;
pub use import::{IndexedPack, Packed};

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use fs_err as fs;
use objects_format::{Kind, MAX_OBJECT_SIZE, Object, ObjectId};

use crate::error::{Error, Result};

/// zstd level for stored objects.
pub const ZSTD_LEVEL: i32 = 3;

/// Batches with at most this many objects are written as loose objects (each fsynced); larger
/// ones as one pack (one fsync for all).
pub const LOOSE_MAX: usize = 64;

/// An object read and checked against its id.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its kind.
    pub kind: Kind,
    /// The canonical bytes the id covers.
    pub canonical: Vec<u8>,
}

/// Handle on the object directory (loose objects and packs).
#[derive(Debug, Clone)]
pub struct ObjectStore {
    root: PathBuf,
    packs: Arc<RwLock<pack::PackSet>>,
}

impl ObjectStore {
    /// A store rooted at `snapshots/` (the directory must exist).
    #[must_use]
    pub fn new(root: PathBuf) -> Self {
        ObjectStore {
            root,
            packs: Arc::new(RwLock::new(pack::PackSet::default())),
        }
    }

    /// The `packs/` dir.
    #[must_use]
    pub fn packs_dir(&self) -> PathBuf {
        self.root.join("packs")
    }

    /// Forgets loaded pack indexes (after packs were deleted).
    pub fn reload_packs(&self) {
        self.packs
            .write()
            .expect("no panics while held")
            .forget_all();
    }

    /// Pack indexes that could not be loaded: (path, why).
    #[must_use]
    pub fn bad_pack_indexes(&self) -> Vec<(PathBuf, String)> {
        let mut w = self.packs.write().expect("no panics while held");
        w.refresh(&self.packs_dir());
        w.bad_indexes.clone()
    }

    /// Loaded packs: (pack path, ids).
    #[must_use]
    pub fn pack_contents(&self) -> Vec<(PathBuf, Vec<ObjectId>)> {
        let mut w = self.packs.write().expect("no panics while held");
        w.refresh(&self.packs_dir());
        w.packs
            .iter()
            .map(|p| {
                let ids = (0..p.index.len()).map(|i| p.index.id_at(i)).collect();
                (p.path.clone(), ids)
            })
            .collect()
    }

    /// Stores every object of each pack whose version is above `max_version` (the last byte of
    /// its magic, SPEC §7) as a loose object, unless it is loose already, then deletes those
    /// packs: afterwards a reader of packs up to `max_version` (and of loose objects, unchanged
    /// since store format 1) reads every object. Each object is verified, written (a temp file
    /// in `staging/`, which startup recovery empties; data sync; rename into its fan-out
    /// folder) and the fan-out folders synced before any pack is deleted, and the packs folder
    /// is synced after, so a crash at any point loses nothing and running again finishes. For `migrate --undo` (docs/migrations.md). Returns the packs removed and the
    /// objects written. The caller holds the store lock.
    ///
    /// # Errors
    /// A damaged object (nothing is deleted then), I/O errors.
    pub fn explode_packs_above(&self, max_version: u8) -> Result<(Vec<PathBuf>, u64)> {
        let mut packs = Vec::new();
        for (path, ids) in self.pack_contents() {
            let mut head = [0u8; 8];
            std::io::Read::read_exact(&mut fs::File::open(&path)?, &mut head)?;
            if head[..7] == *b"SDPACK\0" && head[7] > max_version {
                packs.push((path, ids));
            }
        }
        let mut written = 0;
        let mut dirs = std::collections::BTreeSet::new();
        let staging = self
            .root
            .join("staging")
            .join(format!("explode.{}", std::process::id()));
        if !packs.is_empty() {
            durable::create_dir_all(&staging)?;
        }
        for (_, ids) in &packs {
            for id in ids {
                let to = self.object_path(id);
                if to.exists() {
                    continue;
                }
                let raw = self.read_raw(id)?;
                // What the loose file holds must read back as the object.
                let canonical =
                    decompress(&raw).map_err(|why| Error::CorruptObject { id: *id, why })?;
                let (kind, _) =
                    objects_format::encoding::split_header(&canonical).map_err(|e| {
                        Error::CorruptObject {
                            id: *id,
                            why: e.to_string(),
                        }
                    })?;
                if ObjectId::compute(kind, &canonical) != *id {
                    return Err(Error::CorruptObject {
                        id: *id,
                        why: "its frame does not hash to it".to_owned(),
                    });
                }
                let dir = to.parent().expect("objects/ab/");
                durable::create_dir_all_durable(dir)?;
                let tmp = durable::tmp_path(&staging);
                let res = (|| {
                    let mut f = durable::create(&tmp)?;
                    std::io::Write::write_all(&mut f, &raw)?;
                    durable::sync_data(f.file(), &tmp)?;
                    drop(f);
                    durable::rename(&tmp, &to)
                })();
                if res.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                res?;
                dirs.insert(dir.to_path_buf());
                written += 1;
            }
        }
        for d in &dirs {
            durable::sync_dir(d)?;
        }
        let mut removed = Vec::new();
        // The index first, then the pack (as gc does): a pack without an index is ignored.
        for (path, _) in &packs {
            durable::remove_file(&path.with_extension("idx"))?;
            durable::remove_file(path)?;
            removed.push(path.clone());
        }
        if !removed.is_empty() {
            durable::sync_dir(&self.packs_dir())?;
            // Empty by now; a leftover would be removed by startup recovery.
            let _ = durable::remove_dir_all(&staging);
        }
        self.reload_packs();
        Ok((removed, written))
    }

    /// Sorts ids in the order their bytes lie in the store (loose objects first, then by pack
    /// and offset), so that reading them in turn decompresses each pack block once.
    pub fn sort_for_reading(&self, ids: &mut [ObjectId]) {
        let mut w = self.packs.write().expect("no panics while held");
        w.refresh(&self.packs_dir());
        ids.sort_by_cached_key(|id| w.locate(id).map(|l| (l.pack, l.offset)));
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

    /// True when the object is in a pack already loaded or stored loose: no rescan of `packs/`.
    /// For writers under the store lock (no other process publishes objects meanwhile); a
    /// false "no" would only store the object twice.
    fn known(&self, id: &ObjectId) -> bool {
        self.packs
            .read()
            .expect("no panics while held")
            .contains(id)
            || self.object_path(id).exists()
    }

    /// True when the object is stored, loose or packed (content not checked); rescans `packs/`
    /// when neither the loaded index nor the loose files have it.
    #[must_use]
    pub fn has(&self, id: &ObjectId) -> bool {
        // `known` asks the in-memory pack index first: a save with a warm stat cache asks this
        // for every file.
        self.known(id) || {
            let mut w = self.packs.write().expect("no panics while held");
            w.refresh(&self.packs_dir());
            w.contains(id)
        }
    }

    /// The file holding an object: its loose file, else the pack an index places it in.
    #[must_use]
    pub fn location(&self, id: &ObjectId) -> Option<PathBuf> {
        let loose = self.object_path(id);
        if loose.exists() {
            return Some(loose);
        }
        let mut w = self.packs.write().expect("no panics while held");
        w.refresh(&self.packs_dir());
        w.locate(id).map(|l| w.packs[l.pack].path.clone())
    }

    /// What the store holds for an object: a frame (loose file or packed object entry) or its
    /// place in a decompressed block. The loaded pack indexes are asked first (a lookup in
    /// memory: most objects are packed, and trying the loose path first cost a failed `open`
    /// for each), then the loose file, then the packs again after a rescan of `packs/` (a pack
    /// another process published meanwhile).
    fn read_stored(&self, id: &ObjectId) -> Result<pack::Stored> {
        // Look up and read under one guard: a refresh by another thread (a pack removed by
        // another process's gc) must not turn a location into another pack's bytes.
        let pack_of = |g: &pack::PackSet, loc: &pack::Loc| {
            g.packs
                .get(loc.pack)
                .map_or_else(String::new, |p| p.path.display().to_string())
        };
        let packed = |res: std::io::Result<pack::Stored>, pack_path: String| {
            res.map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    Error::CorruptObject {
                        id: *id,
                        why: format!("its block in {pack_path} is damaged: {e}"),
                    }
                } else {
                    Error::Io(std::io::Error::new(
                        e.kind(),
                        format!("{e} (reading packed object {id})"),
                    ))
                }
            })
        };
        let found = {
            let g = self.packs.read().expect("no panics while held");
            g.locate(id).map(|loc| (g.read(&loc), pack_of(&g, &loc)))
        };
        if let Some((res, pack_path)) = found {
            return packed(res, pack_path);
        }
        match std::fs::read(self.object_path(id)) {
            Ok(b) => Ok(pack::Stored::Frame(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (res, pack_path) = {
                    let mut w = self.packs.write().expect("no panics while held");
                    w.refresh(&self.packs_dir());
                    match w.locate(id) {
                        Some(loc) => (w.read(&loc), pack_of(&w, &loc)),
                        None => return Err(Error::MissingObject { id: *id }),
                    }
                };
                packed(res, pack_path)
            }
            Err(e) => Err(Error::Io(std::io::Error::new(
                e.kind(),
                format!("{e} (reading object {id})"),
            ))),
        }
    }

    /// The object as one stored-object frame (SPEC §7), as a loose file or a directory remote
    /// holds it: the stored frame itself, or, for an object kept in a pack block, its verified
    /// canonical bytes compressed on their own.
    ///
    /// # Errors
    /// Missing, corrupt or I/O.
    pub fn read_raw(&self, id: &ObjectId) -> Result<Vec<u8>> {
        match self.read_stored(id)? {
            pack::Stored::Frame(f) => Ok(f),
            pack::Stored::InBlock(..) => {
                let v = self.read_verified(id)?;
                Ok(compress(&v.canonical)?)
            }
        }
    }

    /// Reads, decompresses and verifies an object; returns its canonical bytes.
    ///
    /// # Errors
    /// Missing, corrupt (hash mismatch, bad zstd, too large) or I/O.
    pub fn read_canonical(&self, id: &ObjectId) -> Result<Vec<u8>> {
        self.read_verified(id).map(|v| v.canonical)
    }

    /// Reads an object and verifies its hash; returns its kind and canonical bytes — for
    /// callers that copy objects (gc, repack, transfer).
    ///
    /// # Errors
    /// Missing, corrupt (hash mismatch, bad zstd, too large) or I/O.
    pub fn read_verified(&self, id: &ObjectId) -> Result<Verified> {
        let corrupt = |why: String| Error::CorruptObject { id: *id, why };
        let canonical = match self.read_stored(id)? {
            pack::Stored::Frame(raw) => decompress(&raw).map_err(corrupt)?,
            pack::Stored::InBlock(block, member) => {
                objects_format::pack::block_member(&block, member)
                    .map_err(corrupt)?
                    .to_vec()
            }
        };
        let (kind, _) = objects_format::encoding::split_header(&canonical)
            .map_err(|e| corrupt(e.to_string()))?;
        let actual = ObjectId::compute(kind, &canonical);
        if actual != *id {
            return Err(corrupt(format!("content hashes to {actual}")));
        }
        Ok(Verified { kind, canonical })
    }

    /// Reads, verifies and decodes an object of the expected kind.
    ///
    /// # Errors
    /// As [`Self::read_canonical`], or [`Error::WrongKind`].
    pub fn read(&self, id: &ObjectId, expected: Kind) -> Result<Object> {
        let c = self.read_canonical(id)?;
        let o = objects_format::decode(&c).map_err(|e| Error::CorruptObject {
            id: *id,
            why: e.to_string(),
        })?;
        if o.kind() != expected {
            return Err(Error::WrongKind {
                id: *id,
                expected,
                found: o.kind().name(),
            });
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
        let (kind, _) =
            objects_format::encoding::split_header(&c).expect("verified by read_canonical");
        if kind != Kind::Blob {
            return Err(Error::WrongKind {
                id: *id,
                expected: Kind::Blob,
                found: kind.name(),
            });
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

    /// Lists every object id present, loose and packed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn list(&self) -> Result<Vec<ObjectId>> {
        let mut out = self.list_loose()?;
        for (_, ids) in self.pack_contents() {
            out.extend(ids);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Lists loose object ids.
    ///
    /// # Errors
    /// I/O errors.
    pub fn list_loose(&self) -> Result<Vec<ObjectId>> {
        let mut out = Vec::new();
        let dir = self.root.join("objects");
        if !dir.exists() {
            return Ok(out);
        }
        for fan in fs::read_dir(&dir)? {
            let fan = fan?;
            let Some(prefix) = fan.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if prefix.len() != 2 || !fan.file_type()?.is_dir() {
                continue;
            }
            for e in fs::read_dir(fan.path())? {
                let e = e?;
                let Some(rest) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
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
        self.new_batch(false)
    }

    /// A batch that re-stores objects even when they are already present (gc repacking).
    ///
    /// # Errors
    /// I/O errors creating the staging dir.
    pub fn batch_forced(&self) -> Result<Batch<'_>> {
        self.new_batch(true)
    }

    fn new_batch(&self, force: bool) -> Result<Batch<'_>> {
        // Load the packs once; the batch then asks only the loaded index (see `known`).
        self.packs
            .write()
            .expect("no panics while held")
            .refresh(&self.packs_dir());
        let staging =
            self.root
                .join("staging")
                .join(format!("{}-{}", std::process::id(), now_ns()));
        let during = "storing objects";
        durable::create_dir_all(&staging).map_err(Error::at("creating", &staging, during))?;
        let path = staging.join("objects.pack");
        let opened = durable::create_new_rw(&path)
            .map_err(Error::at("creating", &path, during))
            .and_then(|f| {
                let mut file = f.into_parts().0;
                std::io::Write::write_all(&mut file, pack::PACK_MAGIC)
                    .map_err(Error::at("writing", &path, during))?;
                Ok(file)
            });
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                // Not a batch yet, so nothing else removes its staging dir (a full disk).
                let _ = durable::remove_dir_all(&staging);
                return Err(e);
            }
        };
        Ok(Batch {
            store: self,
            staging,
            pack: Mutex::new(Some(PackWriter {
                file,
                path,
                offset: pack::PACK_MAGIC.len() as u64,
                entries: Vec::new(),
                blocks: 0,
            })),
            // One per worker thread, one for other threads, one for metadata.
            open_blocks: (0..rayon::current_num_threads() + 2)
                .map(|_| Mutex::new(BlockBuf::default()))
                .collect(),
            seen: Mutex::new(HashSet::new()),
            bytes: AtomicU64::new(0),
            force,
            level: ZSTD_LEVEL,
            early_sync: Mutex::new((0, None)),
            sync: true,
        })
    }
}

/// Decompresses one stored object, refusing anything over [`MAX_OBJECT_SIZE`]
/// and frames that do not declare their size (decompression bombs).
///
/// # Errors
/// A description of what is wrong.
pub fn decompress(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    decompress_bounded(raw, MAX_OBJECT_SIZE)
}

/// Decompresses one zstd frame that must declare its size, of at most `max` bytes, and must
/// be all of `raw`.
///
/// # Errors
/// A description of what is wrong.
pub fn decompress_bounded(raw: &[u8], max: usize) -> std::result::Result<Vec<u8>, String> {
    decompress_into(raw, max, Vec::new())
}

/// As [`decompress_bounded`], into `buf` (cleared first; its allocation is reused when large
/// enough, which keeps a reader of many blocks from fragmenting the heap).
///
/// # Errors
/// A description of what is wrong.
pub fn decompress_into(
    raw: &[u8],
    max: usize,
    mut buf: Vec<u8>,
) -> std::result::Result<Vec<u8>, String> {
    let size = checked_frame_size(raw, max)?;
    buf.clear();
    buf.reserve_exact(size);
    thread_local! {
        // One decompression context per thread: creating one per object showed in profiles.
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
    }
    let n = DCTX
        .with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new()?);
            }
            d.as_mut()
                .expect("just set")
                .decompress_to_buffer(raw, &mut buf)
        })
        .map_err(|e| format!("zstd: {e}"))?;
    if n != size || buf.len() != size {
        return Err(format!("zstd frame declared {size} bytes but held {n}"));
    }
    Ok(buf)
}

/// The content size a zstd frame declares, once checked: declared, at most `max`, and the
/// frame is all of `raw`.
fn checked_frame_size(raw: &[u8], max: usize) -> std::result::Result<usize, String> {
    let size = match zstd::zstd_safe::get_frame_content_size(raw) {
        Ok(Some(n)) => n,
        Ok(None) => return Err("zstd frame does not declare its size".into()),
        Err(_) => return Err("not a zstd frame".into()),
    };
    if size > max as u64 {
        return Err(format!("declares {size} bytes, over the {max} byte limit"));
    }
    // Exactly one frame (SPEC §7): bytes after it — another frame, a skippable frame — would
    // otherwise pass unnoticed by `state check`.
    match zstd::zstd_safe::find_frame_compressed_size(raw) {
        Ok(n) if n == raw.len() => {}
        Ok(n) => {
            return Err(format!(
                "{} bytes follow the zstd frame",
                raw.len().saturating_sub(n)
            ));
        }
        Err(_) => return Err("not a complete zstd frame".into()),
    }
    Ok(usize::try_from(size).expect("bounded by max"))
}

/// The start of a block's content: at least its first `want` bytes, checked as
/// [`decompress_into`] checks a frame, and whether that is all of it. A reader that needs one
/// member near the start of a 4 MiB block (a one-session restore: the snapshot's trees, one
/// descriptor) stops there instead of decompressing the rest. When `want` reaches past half of
/// the content, stopping early saves little and the whole frame is decompressed in one go.
///
/// # Errors
/// A description of what is wrong (the same as [`decompress_into`], or a frame that ends
/// before the size it declares).
pub fn decompress_prefix_into(
    raw: &[u8],
    max: usize,
    want: usize,
    mut buf: Vec<u8>,
) -> std::result::Result<(Vec<u8>, bool), String> {
    let size = checked_frame_size(raw, max)?;
    if want.saturating_mul(2) >= size {
        return decompress_into(raw, max, buf).map(|b| (b, true));
    }
    thread_local! {
        // A streaming context per thread, reset for each frame: it keeps its window buffer.
        static DSTREAM: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { std::cell::RefCell::new(None) };
    }
    buf.clear();
    buf.resize(want, 0);
    let filled = DSTREAM.with(|d| -> std::result::Result<usize, String> {
        use zstd::zstd_safe::{DCtx, InBuffer, OutBuffer, ResetDirective, get_error_name};
        let mut d = d.borrow_mut();
        let d = d.get_or_insert_with(DCtx::create);
        d.reset(ResetDirective::SessionOnly)
            .map_err(|c| format!("zstd: {}", get_error_name(c)))?;
        let mut input = InBuffer::around(raw);
        let mut out = OutBuffer::around(&mut buf[..]);
        // Each call either fills the output or moves the input on (the frame is whole and
        // declares more than `want`); one that does neither is refused, so this ends.
        loop {
            let (was_in, was_out) = (input.pos(), out.pos());
            let left = d
                .decompress_stream(&mut out, &mut input)
                .map_err(|c| format!("zstd: {}", get_error_name(c)))?;
            if out.pos() == want {
                return Ok(want);
            }
            if left == 0 || (input.pos() == was_in && out.pos() == was_out) {
                return Err(format!(
                    "zstd frame declared {size} bytes but held {}",
                    out.pos()
                ));
            }
        }
    })?;
    buf.truncate(filled);
    Ok((buf, false))
}

/// Compresses canonical bytes for storage (one zstd frame with the content size).
///
/// # Errors
/// zstd errors (I/O kind).
pub fn compress(canonical: &[u8]) -> std::io::Result<Vec<u8>> {
    compress_level(canonical, ZSTD_LEVEL)
}

/// Compresses bytes as one zstd frame with the content size, at `level`.
///
/// # Errors
/// zstd errors (I/O kind).
pub fn compress_level(bytes: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    thread_local! {
        // One compression context per thread: creating a context per object costs more than
        // compressing a 40 KiB chunk.
        static CCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    }
    CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            let mut z = zstd::bulk::Compressor::new(level)?;
            z.include_contentsize(true)?;
            z.include_checksum(false)?;
            *c = Some((level, z));
        }
        c.as_mut().expect("just set").1.compress(bytes)
    })
}

/// Nanoseconds since the epoch.
#[must_use]
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_object_is_exactly_one_frame() {
        let one = compress(b"hello").unwrap();
        assert_eq!(decompress(&one).unwrap(), b"hello");
        // A skippable frame, a second frame or garbage after it: refused, never ignored.
        let skippable = [0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        for tail in [&skippable[..], &compress(b"x").unwrap(), b"junk"] {
            let raw = [one.as_slice(), tail].concat();
            let e = decompress(&raw).unwrap_err();
            assert!(e.contains("follow the zstd frame"), "{e}");
        }
        assert!(decompress(&one[..one.len() - 1]).is_err(), "truncated");
    }

    /// Deterministic bytes that zstd cannot shrink much (so blocks fill at their target).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn blocks_read_back_in_any_order_through_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStore::new(dir.path().to_path_buf());
        // 200 KiB blobs filling three blocks more than the cache holds, so reading them in a
        // scattered order evicts, recycles and decompresses blocks again.
        let count = ((pack::block_cache_len() + 3) * objects_format::pack::BLOCK_TARGET
            / (200 << 10)) as u64;
        let blobs: Vec<(ObjectId, Vec<u8>)> = (0..count)
            .map(|i| {
                let obj = Object::Blob(noise(i, 200 << 10));
                let (id, canonical) = objects_format::encode_with_id(&obj).expect("encode");
                (id, canonical)
            })
            .collect();
        let batch = store.batch().expect("batch");
        for (id, c) in &blobs {
            assert!(batch.put_canonical(Kind::Blob, *id, c).expect("put"));
        }
        let stats = batch.commit().expect("commit");
        assert_eq!(stats.objects, count);
        let packs = store.pack_contents();
        assert_eq!(packs.len(), 1);
        let pack = std::fs::read(&packs[0].0).expect("pack");
        assert_eq!(&pack[..8], pack::PACK_MAGIC);
        let blocks = {
            let mut n = 0;
            let mut at = 8usize;
            while at < pack.len() {
                assert_eq!(
                    pack[at],
                    objects_format::pack::BLOCK_CODE,
                    "every entry a block"
                );
                let len = u32::from_le_bytes(pack[at + 1..at + 5].try_into().expect("4"));
                at += 5 + len as usize;
                n += 1;
            }
            n
        };
        assert!(blocks > pack::block_cache_len(), "{blocks} blocks");
        for step in [1usize, 7, 31, 97] {
            for k in 0..blobs.len() {
                let (id, c) = &blobs[(k * step) % blobs.len()];
                assert_eq!(&store.read_canonical(id).expect("read"), c);
            }
        }
        // A loose copy of a block member is one frame of the object alone.
        let (id, c) = &blobs[5];
        assert_eq!(
            &decompress(&store.read_raw(id).expect("raw")).expect("frame"),
            c
        );
    }

    /// Bytes of the blocks the store keeps decompressed now.
    fn kept_block_bytes(store: &ObjectStore) -> Vec<usize> {
        let g = store.packs.read().expect("no panics");
        let c = g.blocks.lock().expect("no panics");
        c.kept_lens()
    }

    #[test]
    fn a_first_read_decompresses_a_block_only_as_far_as_it_needs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStore::new(dir.path().to_path_buf());
        // 64 KiB blobs filling one block and part of a second, and a tree in a block of its own.
        let blobs: Vec<(ObjectId, Vec<u8>)> = (0..80u64)
            .map(|i| {
                objects_format::encode_with_id(&Object::Blob(noise(i, 64 << 10))).expect("encode")
            })
            .collect();
        // A small file written among them goes to the start of its block.
        let small = objects_format::encode_with_id(&Object::Blob(b"{\"id\": \"s005\"}".to_vec()))
            .expect("encode");
        let tree = Object::Tree(objects_format::Tree::default());
        let (tree_id, tree_c) = objects_format::encode_with_id(&tree).expect("encode");
        let batch = store.batch().expect("batch");
        for (i, (id, c)) in blobs.iter().enumerate() {
            batch.put_canonical(Kind::Blob, *id, c).expect("put");
            if i == 40 {
                batch
                    .put_canonical(Kind::Blob, small.0, &small.1)
                    .expect("put");
            }
        }
        batch
            .put_canonical(Kind::Tree, tree_id, &tree_c)
            .expect("put");
        batch.commit().expect("commit");
        // The first block: the blobs up to the one that took it to its target size.
        let mut whole = 4 + small.1.len();
        let mut last = 0;
        for (i, (_, c)) in blobs.iter().enumerate() {
            whole += 4 + c.len();
            last = i;
            if whole >= objects_format::pack::BLOCK_TARGET {
                break;
            }
        }
        assert!(last + 1 < blobs.len(), "the blobs fill more than one block");

        let fresh = ObjectStore::new(dir.path().to_path_buf());
        // The tree sits alone in the metadata block: reading it decompresses nothing else.
        assert_eq!(fresh.read_canonical(&tree_id).expect("tree"), tree_c);
        assert_eq!(kept_block_bytes(&fresh), vec![4 + tree_c.len()]);
        // The small file, written after 40 big blobs: its block decompressed a little past
        // it, not to the end; then the first blob, from the part already kept.
        assert_eq!(fresh.read_canonical(&small.0).expect("small"), small.1);
        let part = kept_block_bytes(&fresh)[1];
        assert!(
            part < whole / 2 && part >= 8 + small.1.len() + blobs[0].1.len(),
            "kept {part} of {whole} bytes"
        );
        assert_eq!(
            fresh.read_canonical(&blobs[0].0).expect("first"),
            blobs[0].1
        );
        assert_eq!(kept_block_bytes(&fresh)[1], part, "read from the kept part");
        // A blob further on: the whole block, once, kept in place of its first part.
        assert_eq!(
            fresh.read_canonical(&blobs[last].0).expect("last"),
            blobs[last].1
        );
        assert_eq!(kept_block_bytes(&fresh), vec![4 + tree_c.len(), whole]);
        for (id, c) in blobs[..=last].iter().chain([&small]) {
            assert_eq!(&fresh.read_canonical(id).expect("read"), c);
        }
        assert_eq!(
            kept_block_bytes(&fresh).len(),
            2,
            "no block decompressed twice"
        );
    }

    #[test]
    fn a_damaged_block_gives_integrity_errors_never_wrong_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStore::new(dir.path().to_path_buf());
        let text: Vec<(ObjectId, Vec<u8>)> = (0..100u64)
            .map(|i| {
                let obj = Object::Blob(format!("line {i}\n").repeat(300 + i as usize).into_bytes());
                objects_format::encode_with_id(&obj).expect("encode")
            })
            .collect();
        let batch = store.batch().expect("batch");
        for (id, c) in &text {
            batch.put_canonical(Kind::Blob, *id, c).expect("put");
        }
        batch.commit().expect("commit");
        let path = store.pack_contents()[0].0.clone();
        let mut bytes = std::fs::read(&path).expect("pack");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&path, &bytes).expect("write");
        let fresh = ObjectStore::new(dir.path().to_path_buf());
        let mut corrupt = 0;
        for (id, c) in &text {
            // Never wrong bytes: each read is either the object or a clear integrity error.
            match fresh.read_canonical(id) {
                Ok(got) => assert_eq!(&got, c),
                Err(Error::CorruptObject { id: bad, .. }) => {
                    assert_eq!(bad, *id);
                    corrupt += 1;
                }
                Err(other) => panic!("expected CorruptObject, got {other:?}"),
            }
        }
        assert!(corrupt > 0, "a flipped byte in the block went unnoticed");
    }

    #[test]
    fn a_pack_is_indexed_again_from_its_bytes_and_a_damaged_one_yields_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStore::new(dir.path().to_path_buf());
        // Big objects get entries of their own, small ones share blocks.
        let objs: Vec<(ObjectId, Vec<u8>)> = (0..40u64)
            .map(|i| {
                let len = if i % 8 == 0 {
                    (1 << 20) + 10
                } else {
                    300 << 10
                };
                objects_format::encode_with_id(&Object::Blob(noise(i, len))).expect("encode")
            })
            .collect();
        let batch = store.batch().expect("batch");
        for (id, c) in &objs {
            batch.put_canonical(Kind::Blob, *id, c).expect("put");
        }
        batch.commit().expect("commit");
        let (pack, _) = store.pack_contents().remove(0);
        let idx = std::fs::read(pack.with_extension("idx")).expect("idx");
        let len = std::fs::metadata(&pack).expect("meta").len();
        let (_, mut want) = objects_format::pack::parse_index(&idx, len).expect("parse");
        let scan = pack::scan(&pack, |_, _| Ok(())).expect("scan");
        assert!(scan.damaged.is_empty(), "{:?}", scan.damaged);
        assert_eq!(scan.version, Some(2));
        want.sort_by_key(|e| e.id);
        assert_eq!(scan.entries, want, "the same index, from the pack alone");

        // Damage in the middle: the entries before and after it are still found and verified.
        let mut bytes = std::fs::read(&pack).expect("pack");
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 64] {
            *b = 0xff;
        }
        std::fs::write(&pack, &bytes).expect("write");
        let mut seen = Vec::new();
        let scan = pack::scan(&pack, |e, c| {
            assert_eq!(ObjectId::compute(e.kind, c), e.id);
            seen.push(e.id);
            Ok(())
        })
        .expect("scan");
        // zstd frames carry no checksum: damage inside one may decompress to other bytes
        // (which hash to an id the index does not list) rather than fail.
        let listed: HashSet<ObjectId> = want.iter().map(|e| e.id).collect();
        assert!(!scan.damaged.is_empty() || seen.iter().any(|id| !listed.contains(id)));
        let kept = seen.iter().filter(|id| listed.contains(id)).count();
        assert!(kept < objs.len(), "something was lost");
        assert!(
            want.iter()
                .any(|e| e.offset > mid as u64 + 64 && seen.contains(&e.id)),
            "objects after the damage are found"
        );
    }
}
