//! `Batch`: new objects staged in `staging/<txn>/` and published in one commit, as loose
//! objects (small batches) or one pack (docs/safety.md, "(a) Object batches").

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use objects_format::{Kind, Object, ObjectId};

use super::{LOOSE_MAX, ObjectStore, compress_level, durable, pack};
use crate::error::{Error, Result};

/// What a batch is doing, in its I/O errors (`Error::File`).
const STORING: &str = "storing objects";

/// One entry appended to the staging pack: (id, kind, frame offset, frame length, place in
/// the block when the frame is a block).
pub(super) type Staged = (ObjectId, Kind, u64, u32, Option<pack::Member>);

#[derive(Debug)]
pub(super) struct PackWriter {
    pub(super) file: std::fs::File,
    pub(super) path: PathBuf,
    pub(super) offset: u64,
    pub(super) entries: Vec<Staged>,
    /// Blocks appended so far.
    pub(super) blocks: u64,
}

/// Objects waiting to be compressed together as one block (SPEC §7.2).
#[derive(Debug, Default)]
pub(super) struct BlockBuf {
    pub(super) content: Vec<u8>,
    pub(super) members: Vec<(ObjectId, Kind, pack::Member)>,
}

/// Objects shorter than this go first in their block (see [`small_first`]): shorter than the
/// chunker's smallest chunk, so whole small files (descriptors, pane and config files) and the
/// last chunks of big ones.
const SMALL_MEMBER: usize = objects_format::chunk::MIN_CHUNK;

/// The block with its small members moved to its start, each group in the order it was written.
/// A reader decompresses a block only as far as the member it wants ([`pack::PackSet::read`]):
/// a one-session restore that reads one descriptor then decompresses the small files at the
/// start of a block, not the megabytes of scrollback chunks written before it; a big file's
/// chunks stay together, in order, after them.
fn small_first(block: BlockBuf) -> BlockBuf {
    let small = |m: &pack::Member| (m.size as usize) < SMALL_MEMBER;
    let first_large = block.members.iter().position(|(_, _, m)| !small(m));
    let in_order = first_large.is_none_or(|i| block.members[i..].iter().all(|(_, _, m)| !small(m)));
    if in_order {
        return block;
    }
    let mut out = BlockBuf {
        content: Vec::with_capacity(block.content.len()),
        members: Vec::with_capacity(block.members.len()),
    };
    for pass_small in [true, false] {
        for &(id, kind, m) in &block.members {
            if small(&m) == pass_small {
                let bytes = &block.content[m.start as usize..][..m.size as usize];
                let at = objects_format::pack::block_push(&mut out.content, bytes);
                out.members.push((id, kind, at));
            }
        }
    }
    out
}

/// A batch of new objects. Small objects are gathered into blocks (one zstd frame for ~4 MiB of
/// objects, one per thread so each holds neighbouring chunks of the same files); larger ones and
/// already-compressed frames from remotes are appended as they come; everything goes to one
/// staging pack. On commit a small batch (no block written yet, at most [`LOOSE_MAX`] objects)
/// becomes loose objects, each compressed on its own (temp → fsync → rename, children first), and
/// a larger one is published as a pack (pack fsync → index fsync → rename pack → rename index →
/// fsync dir). Either way the objects are durable before [`Batch::commit`] returns, and only
/// then may a ref point at them; an uncommitted batch is removed by recovery.
#[derive(Debug)]
pub struct Batch<'s> {
    pub(super) store: &'s ObjectStore,
    pub(super) staging: PathBuf,
    pub(super) pack: Mutex<Option<PackWriter>>,
    /// Open blocks, one per worker thread (indexed by rayon's thread index), then one for any
    /// other thread, then the last one for metadata (trees, snapshots, chunk lists) whoever
    /// writes it: what a restore reads first to find its files then sits in blocks of its own,
    /// small ones when a save is incremental, not in 4 MiB of file data (git writes commits and
    /// trees ahead of blobs in a pack for the same reason).
    pub(super) open_blocks: Vec<Mutex<BlockBuf>>,
    pub(super) seen: Mutex<HashSet<ObjectId>>,
    pub(super) bytes: AtomicU64,
    pub(super) force: bool,
    pub(super) level: i32,
    /// Background `fdatasync` of the staging pack while it is still being written, so that the
    /// final sync in `commit` waits only for the tail (I/O overlaps compression).
    pub(super) early_sync: Mutex<(u64, Option<std::thread::JoinHandle<Result<()>>>)>,
    /// False for a scratch store deleted after use ([`Batch::unsynced`]).
    pub(super) sync: bool,
}

/// Start a background sync of the staging pack after this many new bytes.
pub(super) const EARLY_SYNC_BYTES: u64 = 4 << 20;

/// What a committed batch wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// New objects.
    pub objects: u64,
    /// Compressed bytes written.
    pub bytes: u64,
}

impl Drop for Batch<'_> {
    /// A batch dropped without commit (an error, a full disk) removes its staging dir at once,
    /// so a failed save leaves nothing behind (recovery would remove it otherwise).
    fn drop(&mut self) {
        let _ = durable::remove_dir_all(&self.staging);
    }
}

impl Batch<'_> {
    /// Syncs nothing on commit: for a scratch store that is deleted after use (`backup
    /// verify`'s round trip), where a power cut loses nothing that matters.
    #[must_use]
    pub fn unsynced(mut self) -> Self {
        self.sync = false;
        self
    }

    /// `fdatasync`s `f` unless the batch is [`unsynced`](Batch::unsynced).
    fn sync_data(&self, f: &std::fs::File, path: &std::path::Path) -> Result<()> {
        if self.sync {
            durable::sync_data(f, path).map_err(Error::at("syncing", path, STORING))?;
        }
        Ok(())
    }

    /// `fsync`s a directory unless the batch is [`unsynced`](Batch::unsynced).
    fn sync_dir(&self, dir: &std::path::Path) -> Result<()> {
        if self.sync {
            durable::sync_dir(dir).map_err(Error::at("syncing", dir, STORING))?;
        }
        Ok(())
    }

    /// Compresses new objects at `level` instead of [`ZSTD_LEVEL`](super::ZSTD_LEVEL) (repacking).
    #[must_use]
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    fn claim(&self, id: &ObjectId) -> bool {
        // The guard must not be held across `known`'s stat: every worker would wait on it.
        let new = self.seen.lock().expect("no panics while held").insert(*id);
        new && (self.force || !self.store.known(id))
    }

    /// Appends one entry (an object's frame, or a block) to the staging pack.
    fn append(
        &self,
        header: &[u8],
        z: &[u8],
        objects: &[(ObjectId, Kind, Option<pack::Member>)],
    ) -> Result<()> {
        let len = u32::try_from(z.len()).map_err(|_| Error::TooLarge {
            what: "a pack entry".into(),
            size: z.len() as u64,
            limit: u64::from(u32::MAX),
        })?;
        let mut guard = self.pack.lock().expect("no panics while held");
        let w = guard.as_mut().expect("batch not committed");
        let off = w.offset;
        w.file
            .write_all_at(header, off)
            .map_err(Error::at("writing", &w.path, STORING))?;
        w.file
            .write_all_at(z, off + pack::ENTRY_HEADER)
            .map_err(Error::at("writing", &w.path, STORING))?;
        w.offset = off + pack::ENTRY_HEADER + u64::from(len);
        let frame = off + pack::ENTRY_HEADER;
        w.entries.extend(
            objects
                .iter()
                .map(|&(id, kind, m)| (id, kind, frame, len, m)),
        );
        if objects.first().is_some_and(|o| o.2.is_some()) {
            w.blocks += 1;
        }
        drop(guard);
        let total = self.bytes.fetch_add(u64::from(len), Ordering::Relaxed) + u64::from(len);
        let mut es = self.early_sync.lock().expect("no panics while held");
        if self.sync
            && total.saturating_sub(es.0) >= EARLY_SYNC_BYTES
            && es
                .1
                .as_ref()
                .is_none_or(std::thread::JoinHandle::is_finished)
        {
            if let Some(h) = es.1.take() {
                h.join()
                    .map_err(|_| Error::Internal("background sync thread panicked".into()))??;
            }
            es.0 = total;
            let (f, path) = {
                let g = self.pack.lock().expect("no panics while held");
                let w = g.as_ref().expect("batch not committed");
                (w.file.try_clone()?, w.path.clone())
            };
            es.1 = Some(std::thread::spawn(move || {
                durable::sync_data(&f, &path).map_err(|e| Error::file(e, "syncing", path, STORING))
            }));
        }
        Ok(())
    }

    fn append_object(&self, kind: Kind, id: ObjectId, z: &[u8]) -> Result<()> {
        let len = u32::try_from(z.len()).map_err(|_| Error::TooLarge {
            what: format!("object {id} (compressed)"),
            size: z.len() as u64,
            limit: u64::from(u32::MAX),
        })?;
        self.append(
            &objects_format::pack::entry_header(kind, len),
            z,
            &[(id, kind, None)],
        )
    }

    /// Compresses a full (or, on commit, the last) block and appends it.
    fn write_block(&self, block: BlockBuf) -> Result<()> {
        if block.members.is_empty() {
            return Ok(());
        }
        let block = small_first(block);
        let z = compress_level(&block.content, self.level)?;
        let len = u32::try_from(z.len()).map_err(|_| Error::TooLarge {
            what: "a pack block (compressed)".into(),
            size: z.len() as u64,
            limit: u64::from(u32::MAX),
        })?;
        let members: Vec<(ObjectId, Kind, Option<pack::Member>)> = block
            .members
            .iter()
            .map(|&(id, kind, m)| (id, kind, Some(m)))
            .collect();
        self.append(&objects_format::pack::block_header(len), &z, &members)
    }

    /// Adds an object given as canonical bytes (already known to hash to `id`).
    /// Safe to call from many threads; objects already stored or staged are skipped.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_canonical(&self, kind: Kind, id: ObjectId, canonical: &[u8]) -> Result<bool> {
        if !self.claim(&id) {
            return Ok(false);
        }
        if canonical.len() > objects_format::pack::BLOCK_MEMBER_MAX {
            let z = compress_level(canonical, self.level)?;
            self.append_object(kind, id, &z)?;
            return Ok(true);
        }
        let meta = self.open_blocks.len() - 1;
        let slot = if kind == Kind::Blob {
            rayon::current_thread_index()
                .unwrap_or(usize::MAX)
                .min(meta - 1)
        } else {
            meta
        };
        let full = {
            let mut b = self.open_blocks[slot].lock().expect("no panics while held");
            let m = objects_format::pack::block_push(&mut b.content, canonical);
            b.members.push((id, kind, m));
            (b.content.len() >= objects_format::pack::BLOCK_TARGET).then(|| std::mem::take(&mut *b))
        };
        if let Some(block) = full {
            self.write_block(block)?;
        }
        Ok(true)
    }

    /// Adds an object already compressed on its own (from a remote); the caller has verified it.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_raw(&self, kind: Kind, id: ObjectId, raw: &[u8]) -> Result<bool> {
        if !self.claim(&id) {
            return Ok(false);
        }
        self.append_object(kind, id, raw)?;
        Ok(true)
    }

    /// Adds a block as it is (a compressed frame from a pack, SPEC §7.2) with its members; the
    /// caller has verified every member against its id. The block is skipped when this store
    /// has every member already; else it is appended whole and indexes every member (a member
    /// also stored elsewhere is then stored twice, which SPEC §7 allows). Returns the number of
    /// members staged (0 when the block was skipped).
    ///
    /// # Errors
    /// A member staged by this batch already (a pack repeating an id), I/O errors.
    pub fn put_block_frame(
        &self,
        frame: &[u8],
        members: &[(ObjectId, Kind, pack::Member)],
    ) -> Result<u64> {
        {
            let mut seen = self.seen.lock().expect("no panics while held");
            if let Some(m) = members.iter().find(|m| seen.contains(&m.0)) {
                return Err(Error::Internal(format!(
                    "object {} given twice to one batch",
                    m.0
                )));
            }
            seen.extend(members.iter().map(|m| m.0));
        }
        // Stops at the first member not stored: one lookup per block, not per member, when
        // the store lacks them (a restore onto a new machine).
        if !self.force && members.iter().all(|m| self.store.known(&m.0)) {
            return Ok(0);
        }
        let len = u32::try_from(frame.len()).map_err(|_| Error::TooLarge {
            what: "a pack block (compressed)".into(),
            size: frame.len() as u64,
            limit: u64::from(u32::MAX),
        })?;
        let members: Vec<(ObjectId, Kind, Option<pack::Member>)> = members
            .iter()
            .map(|&(id, kind, m)| (id, kind, Some(m)))
            .collect();
        self.append(&objects_format::pack::block_header(len), frame, &members)?;
        Ok(members.len() as u64)
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

    /// True when the object is stored or already in this batch.
    #[must_use]
    pub fn contains(&self, id: &ObjectId) -> bool {
        let staged = self.seen.lock().expect("no panics while held").contains(id);
        staged || self.store.known(id)
    }

    /// Makes every staged object durable and visible. After this returns, refs may point at them.
    ///
    /// # Errors
    /// I/O errors; objects already published stay (they are valid, merely unreferenced).
    pub fn commit(self) -> Result<BatchStats> {
        use rayon::prelude::*;
        let open: Vec<BlockBuf> = self
            .open_blocks
            .iter()
            .map(|b| std::mem::take(&mut *b.lock().expect("no panics while held")))
            .filter(|b| !b.members.is_empty())
            .collect();
        let (written, blocks) = {
            let g = self.pack.lock().expect("no panics while held");
            let w = g.as_ref().expect("commit runs once");
            (w.entries.len(), w.blocks)
        };
        let pending: usize = open.iter().map(|b| b.members.len()).sum();
        let loose = blocks == 0 && written + pending <= LOOSE_MAX;
        let open = if loose {
            open
        } else {
            open.into_par_iter().try_for_each(|b| self.write_block(b))?;
            Vec::new()
        };
        let w = self
            .pack
            .lock()
            .expect("no panics while held")
            .take()
            .expect("commit runs once");
        if let Some(h) = self
            .early_sync
            .lock()
            .expect("no panics while held")
            .1
            .take()
        {
            h.join()
                .map_err(|_| Error::Internal("background sync thread panicked".into()))??;
        }
        if loose {
            self.commit_loose(&w, open)
        } else {
            self.commit_pack(w)
        }
    }

    /// Loose: every object compressed on its own into a temp file in staging → fsync → rename
    /// into its fan-out dir, children first.
    fn commit_loose(&self, w: &PackWriter, open: Vec<BlockBuf>) -> Result<BatchStats> {
        use rayon::prelude::*;
        enum Src<'a> {
            Packed(u64, u32),
            Canonical(&'a [u8]),
        }
        let mut objs: Vec<(ObjectId, Kind, Src<'_>)> = w
            .entries
            .iter()
            .map(|&(id, kind, off, len, _)| (id, kind, Src::Packed(off, len)))
            .collect();
        for b in &open {
            objs.extend(b.members.iter().map(|&(id, kind, m)| {
                let c = &b.content[m.start as usize..(m.start + m.size) as usize];
                (id, kind, Src::Canonical(c))
            }));
        }
        objs.sort_by_key(|o| o.1.code());
        let written: Vec<(PathBuf, u64)> = objs
            .par_iter()
            .map(|(id, _, src)| -> Result<(PathBuf, u64)> {
                let buf = match src {
                    Src::Packed(off, len) => {
                        let mut buf = vec![0u8; *len as usize];
                        w.file
                            .read_exact_at(&mut buf, *off)
                            .map_err(Error::at("reading", &w.path, STORING))?;
                        buf
                    }
                    Src::Canonical(c) => compress_level(c, self.level)?,
                };
                let t = self.staging.join(id.to_hex());
                let mut f = durable::create(&t).map_err(Error::at("creating", &t, STORING))?;
                f.write_all(&buf)
                    .map_err(Error::at("writing", &t, STORING))?;
                self.sync_data(f.file(), &t)?;
                Ok((t, buf.len() as u64))
            })
            .collect::<Result<_>>()?;
        let mut fan_dirs: Vec<PathBuf> = Vec::new();
        if !objs.is_empty() {
            // Once, in a new store: `objects/` itself durable in `snapshots/`.
            let objects = self.store.root.join("objects");
            durable::create_dir_all_durable(&objects)
                .map_err(Error::at("creating", &objects, STORING))?;
        }
        for ((id, ..), (t, _)) in objs.iter().zip(&written) {
            let target = self.store.object_path(id);
            let fan = target.parent().expect("fan-out dir");
            if !fan_dirs.iter().any(|d| d == fan) {
                // A new fan-out dir is made durable by the sync of `objects/` below.
                durable::create_dir_all(fan).map_err(Error::at("creating", fan, STORING))?;
                fan_dirs.push(fan.to_path_buf());
            }
            durable::rename(t, &target).map_err(Error::at("renaming into", &target, STORING))?;
        }
        if !objs.is_empty() {
            fan_dirs.par_iter().try_for_each(|d| self.sync_dir(d))?;
            self.sync_dir(&self.store.root.join("objects"))?;
        }
        self.remove_staging()?;
        Ok(BatchStats {
            objects: objs.len() as u64,
            bytes: written.iter().map(|(_, n)| n).sum(),
        })
    }

    /// Removes this batch's staging dir, and `staging/` itself when no other batch uses it (only
    /// the lock holder makes batches, so none is being created meanwhile).
    fn remove_staging(&self) -> Result<()> {
        durable::remove_dir_all(&self.staging).map_err(Error::at(
            "removing",
            &self.staging,
            STORING,
        ))?;
        if let Some(parent) = self.staging.parent() {
            let _ = durable::remove_dir(parent);
        }
        Ok(())
    }

    /// Pack: one fsync for the data, then the index publishes it.
    fn commit_pack(&self, w: PackWriter) -> Result<BatchStats> {
        let stats = BatchStats {
            objects: w.entries.len() as u64,
            bytes: self.bytes.load(Ordering::Relaxed),
        };
        self.sync_data(&w.file, &w.path)?;
        drop(w.file);
        let hash = pack::hash_file(&w.path)?;
        let name = format!("pack-{}", hash.to_hex());
        let mut index: Vec<objects_format::pack::IndexEntry> = w
            .entries
            .iter()
            .map(
                |&(id, kind, offset, len, member)| objects_format::pack::IndexEntry {
                    id,
                    kind,
                    offset,
                    len,
                    member,
                },
            )
            .collect();
        let idx = objects_format::pack::build_index(hash.as_bytes(), &mut index);
        let idx_tmp = self.staging.join("objects.idx");
        {
            let mut f =
                durable::create(&idx_tmp).map_err(Error::at("creating", &idx_tmp, STORING))?;
            f.write_all(&idx)
                .map_err(Error::at("writing", &idx_tmp, STORING))?;
            self.sync_data(f.file(), &idx_tmp)?;
        }
        let dir = self.store.packs_dir();
        durable::create_dir_all_durable(&dir).map_err(Error::at("creating", &dir, STORING))?;
        let pack_path = dir.join(format!("{name}.pack"));
        let idx_path = dir.join(format!("{name}.idx"));
        // The name is the hash of the content: an existing pack of that name holds exactly
        // these objects. Never replace it (and never delete it below).
        let existed = pack_path.exists();
        if !(existed && idx_path.exists()) {
            if !existed {
                durable::rename(&w.path, &pack_path).map_err(Error::at(
                    "renaming into",
                    &pack_path,
                    STORING,
                ))?;
            }
            if let Err(e) = durable::rename(&idx_tmp, &idx_path) {
                if !existed {
                    // Without its index the pack is invisible; do not leave it behind.
                    let _ = durable::remove_file(&pack_path);
                }
                return Err(Error::file(e, "renaming into", idx_path, STORING));
            }
        }
        self.sync_dir(&dir)?;
        self.remove_staging()?;
        Ok(stats)
    }
}
