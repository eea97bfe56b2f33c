//! Making a directory tree equal to a snapshot: only what differs is written, each file through
//! temp → fdatasync (or one syncfs for large restores) → rename, so every live file is at every instant either its old
//! or its new content. See docs/safety.md.

use crate::progress::{Phase, Progress};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use objects_format::{EntryKind, ObjectId, modes};
use rayon::prelude::*;

use super::policy::{self, Skipped};
use super::save::{LiveFile, hash_file};
use super::{Flat, Layout, Leaf, display};
use crate::error::{Error, Result};
use crate::store::ObjectStore;
use crate::store::durable::{self, tmp_path};
use crate::store::statcache::StatCache;

/// What a restore changes, path by path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Files created (not present live).
    pub create: Vec<Vec<u8>>,
    /// Files whose content or mode changes.
    pub update: Vec<Vec<u8>>,
    /// Files removed.
    pub delete: Vec<Vec<u8>>,
    /// Directories created.
    pub mkdir: Vec<Vec<u8>>,
    /// Directories removed.
    pub rmdir: Vec<Vec<u8>>,
    /// Entries of the snapshot that the policy does not materialise (a symlink leading out of
    /// its folder), left as they are live.
    pub skipped: Vec<Skipped>,
}

impl Plan {
    /// True when nothing would change.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.update.is_empty()
            && self.delete.is_empty()
            && self.mkdir.is_empty()
            && self.rmdir.is_empty()
    }
}

/// Computes what turns `live` into `target`.
#[must_use]
pub fn plan(target: &Flat, live: &Flat) -> Plan {
    let mut p = Plan::default();
    for (path, l) in &target.leaves {
        match live.leaves.get(path) {
            None => p.create.push(path.clone()),
            Some(cur) if !cur.same_content(l) => p.update.push(path.clone()),
            Some(_) => {}
        }
    }
    for path in live.leaves.keys() {
        if !target.leaves.contains_key(path) {
            p.delete.push(path.clone());
        }
    }
    for d in &target.dirs {
        if !live.dirs.contains(d) {
            p.mkdir.push(d.clone());
        }
    }
    for d in live.dirs.iter().rev() {
        if !target.dirs.contains(d) && !super::ROOTS.iter().any(|r| r.as_bytes() == d.as_slice()) {
            p.rmdir.push(d.clone());
        }
    }
    p
}

/// Applies the snapshot policy to a restore: every entry of `target` that may not be
/// materialised (a symlink leading out of its folder, a path nested too deep; see
/// [`policy`]) is dropped from `target`, and whatever is live at its path (a file, or a
/// directory and everything under it) from `live`, so the plan leaves that path as it is.
/// Returns what was left out.
///
/// # Errors
/// A symlink target that cannot be read from the store.
pub fn apply_policy(
    store: &ObjectStore,
    target: &mut Flat,
    live: &mut Flat,
) -> Result<Vec<Skipped>> {
    let mut out = Vec::new();
    for (path, leaf) in &target.leaves {
        let why = if leaf.kind == EntryKind::Symlink {
            let t = store.read_blob(&leaf.id)?;
            policy::leaf_verdict(path, Some(&t))
        } else {
            policy::leaf_verdict(path, None)
        };
        if let Some(why) = why {
            out.push(policy::skipped(path, why));
        }
    }
    for s in &out {
        let p = s.path.as_bytes();
        target.leaves.remove(p);
        // Whatever is live at that path stays, a directory and what it holds included.
        let at_or_under = |k: &[u8]| k == p || (k.starts_with(p) && k.get(p.len()) == Some(&b'/'));
        live.leaves.retain(|k, _| !at_or_under(k));
        live.dirs.retain(|k| !at_or_under(k));
    }
    Ok(out)
}

/// Makes sure the stat cache decides nothing a restore writes: every live file whose id came
/// from the stat cache (not read) and that the plan would leave alone because it already
/// matches `target` is read and hashed again. A file whose content differs gets its real id in
/// `live` (so the plan rewrites it) and a fresh cache entry. Returns how many files were read.
///
/// Files whose cached id already differs from the target need no read: they are rewritten
/// whatever they hold. A chunked file is hashed at the target's own chunk boundaries
/// (`holds_chunks`) instead of being chunked again; only a file that differs is chunked.
///
/// # Errors
/// I/O errors reading the files.
pub fn confirm_vouched(
    objects: &ObjectStore,
    layout: &Layout,
    target: &Flat,
    live: &mut Flat,
    vouched: &[Vec<u8>],
    cache: &mut StatCache,
) -> Result<usize> {
    let check: Vec<(LiveFile, Option<ObjectId>)> = vouched
        .iter()
        .filter_map(|p| match (target.leaves.get(p), live.leaves.get(p)) {
            (Some(t), Some(l)) if t.same_content(l) => {
                let chunked = (t.kind == EntryKind::ChunkedFile).then_some(t.id);
                Some((p, chunked))
            }
            _ => None,
        })
        .filter_map(|(p, chunked)| {
            let meta = std::fs::symlink_metadata(layout.abs(p)).ok()?;
            Some((
                LiveFile {
                    rel: p.clone(),
                    meta: super::save::LiveMeta::of(&meta),
                },
                chunked,
            ))
        })
        .collect();
    let empty = StatCache::default();
    let fresh: Vec<Result<super::save::Hashed>> = check
        .par_iter()
        .map(|(f, chunked)| {
            if let Some(list) = chunked
                && let Some(at) = confirm_chunked(objects, layout, f, list)
            {
                let leaf = *live.leaves.get(&f.rel).expect("checked above");
                return Ok(super::save::Hashed::Ok {
                    leaf,
                    fresh: Some((f.meta.stat, at)),
                    cached: false,
                    changed: false,
                });
            }
            hash_file(layout, f, &empty, None)
        })
        .collect();
    for ((f, _), r) in check.iter().zip(fresh) {
        match r? {
            super::save::Hashed::Ok { leaf, fresh, .. } => {
                if let Some((stat, at)) = fresh {
                    cache.insert(f.rel.clone(), stat, leaf.kind, leaf.id, at);
                }
                live.leaves.insert(f.rel.clone(), leaf);
            }
            // Vanished or changed type meanwhile: let the plan write it.
            _ => {
                live.leaves.remove(&f.rel);
            }
        }
    }
    Ok(check.len())
}

/// When the live file `f` holds exactly the chunks of the target's chunk list `list` and did
/// not change while it was read (its stat before and after equal the one it was listed with):
/// the moment its reading began, for its stat cache entry. `None` in every other case (a file
/// that differs, changed meanwhile, a redacted path, a chunk list that cannot be read): the
/// caller then hashes the file the usual way.
fn confirm_chunked(
    objects: &ObjectStore,
    layout: &Layout,
    f: &LiveFile,
    list: &ObjectId,
) -> Option<i64> {
    // While redaction is on, what is stored is not what the file holds.
    if super::redact::active().is_some() && super::redact::Redactor::applies(&f.rel) {
        return None;
    }
    let list = objects.read_chunk_list(list).ok()?;
    if list.total_size != f.meta.stat.size {
        return None;
    }
    let abs = layout.abs(&f.rel);
    let at = crate::store::now_ns();
    if !holds_chunks(&abs, &list).ok()? {
        return None;
    }
    let after = std::fs::symlink_metadata(&abs).ok()?;
    (crate::store::statcache::Stat::of(&after) == f.meta.stat).then_some(at)
}

/// Whether the file at `abs` holds exactly the chunks of `list`, in order and nothing after:
/// it is read a window at a time and each window's chunks are hashed in parallel at the
/// list's boundaries. Equal chunk ids prove equal bytes, as hashing the whole file again
/// would, without running the chunker over it (that was 40 % of a one-session restore's
/// instructions, docs/performance.md). False at the first chunk that differs.
///
/// # Errors
/// I/O errors reading the file.
fn holds_chunks(abs: &Path, list: &objects_format::ChunkList) -> std::io::Result<bool> {
    use std::io::Read;
    /// At most this many bytes of the file are held at once (a few chunks of `MAX_CHUNK`).
    const WINDOW: usize = 16 * objects_format::chunk::MAX_CHUNK;
    let mut file = std::fs::File::open(abs)?;
    let mut buf = Vec::new();
    let mut rest = list.chunks.as_slice();
    while !rest.is_empty() {
        let mut take = 0;
        let mut len = 0usize;
        for c in rest {
            if take > 0 && len + c.len as usize > WINDOW {
                break;
            }
            take += 1;
            len += c.len as usize;
        }
        let (window, after) = rest.split_at(take);
        rest = after;
        buf.resize(len, 0);
        match file.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut spans = Vec::with_capacity(window.len());
        let mut at = 0usize;
        for c in window {
            spans.push((at, c));
            at += c.len as usize;
        }
        if !spans.par_iter().all(|&(at, c)| {
            objects_format::encoding::blob_id(&buf[at..at + c.len as usize]) == c.id
        }) {
            return Ok(false);
        }
    }
    let mut one = [0u8; 1];
    Ok(file.read(&mut one)? == 0)
}

/// The snapshot paths of the directories between `rel`'s root folder and `rel` (exclusive):
/// for `config/a/b/f`, `config/a` and `config/a/b`.
fn inner_ancestors(rel: &[u8]) -> Vec<&[u8]> {
    let root_len = super::ROOTS
        .iter()
        .map(|r| r.as_bytes())
        .find(|r| rel.starts_with(r) && rel.get(r.len()) == Some(&b'/'))
        .map_or(0, <[u8]>::len);
    let mut out = Vec::new();
    for (i, &b) in rel.iter().enumerate() {
        if b == b'/' && i > root_len {
            out.push(&rel[..i]);
        }
    }
    out
}

/// Whether every directory between `rel`'s root folder and `rel` is a real directory (not a
/// symlink, not a file, present), so that a write at `rel` cannot go through a symlink. The root
/// folders themselves are the user's choice and may be symlinks.
struct RealDirs<'a> {
    layout: &'a Layout,
    memo: std::collections::HashMap<Vec<u8>, bool>,
}

impl RealDirs<'_> {
    fn new(layout: &Layout) -> RealDirs<'_> {
        RealDirs {
            layout,
            memo: std::collections::HashMap::new(),
        }
    }

    /// True when every inner ancestor of `rel` is a real directory. Checked parent-first, so
    /// each `lstat` resolves through real directories only.
    fn chain_ok(&mut self, rel: &[u8]) -> bool {
        for a in inner_ancestors(rel) {
            let ok = match self.memo.get(a) {
                Some(ok) => *ok,
                None => {
                    let ok = std::fs::symlink_metadata(self.layout.abs(a))
                        .is_ok_and(|m| m.file_type().is_dir());
                    self.memo.insert(a.to_vec(), ok);
                    ok
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Forgets what was learnt (directories changed).
    fn reset(&mut self) {
        self.memo.clear();
    }
}

fn through_symlink(rel: &[u8]) -> Error {
    Error::UnsafePath(format!(
        "restore would write {} through a symlink or a file in its path; nothing is written there",
        display(rel)
    ))
}

/// Writes one file's verified content to `tmp`.
/// `shown` is the file the temp file will become, named in error messages.
fn materialize(
    store: &ObjectStore,
    leaf: &Leaf,
    tmp: &Path,
    shown: &Path,
    sync: bool,
) -> Result<()> {
    materialize_as(store, leaf, tmp, shown, sync, false)
}

/// [`materialize`]; with `exclusive`, the file must not exist yet (an export writes the final
/// path itself, and never opens what is there).
fn materialize_as(
    store: &ObjectStore,
    leaf: &Leaf,
    tmp: &Path,
    shown: &Path,
    sync: bool,
    exclusive: bool,
) -> Result<()> {
    let fail = |op: &'static str| move |e: std::io::Error| Error::file(e, op, shown, RESTORE);
    match leaf.kind {
        EntryKind::Symlink => {
            let target = store.read_blob(&leaf.id)?;
            // SPEC §3.4: a symlink's size is its target's length.
            if target.len() as u64 != leaf.size {
                return Err(Error::CorruptObject {
                    id: leaf.id,
                    why: format!(
                        "link target is {} bytes, its tree entry says {}",
                        target.len(),
                        leaf.size
                    ),
                });
            }
            durable::symlink(Path::new(std::ffi::OsStr::from_bytes_ext(&target)), tmp)
                .map_err(fail("creating the link"))?;
        }
        EntryKind::File | EntryKind::ChunkedFile => {
            let f = if exclusive {
                durable::create_new_rw(tmp)
            } else {
                durable::create(tmp)
            }
            .map_err(fail("creating"))?;
            let mut sparse = Sparse::new(shown);
            if leaf.kind == EntryKind::File {
                let data = store.read_blob(&leaf.id)?;
                if data.len() as u64 != leaf.size {
                    return Err(Error::CorruptObject {
                        id: leaf.id,
                        why: format!(
                            "blob is {} bytes, its tree entry says {}",
                            data.len(),
                            leaf.size
                        ),
                    });
                }
                sparse.write(f.file(), &data)?;
            } else {
                let list = store.read_chunk_list(&leaf.id)?;
                if list.total_size != leaf.size {
                    return Err(Error::CorruptObject {
                        id: leaf.id,
                        why: format!(
                            "chunk list totals {} bytes, its tree entry says {}",
                            list.total_size, leaf.size
                        ),
                    });
                }
                for c in &list.chunks {
                    let data = store.read_blob(&c.id)?;
                    if data.len() != c.len as usize {
                        return Err(Error::CorruptObject {
                            id: c.id,
                            why: format!("chunk is {} bytes, list says {}", data.len(), c.len),
                        });
                    }
                    sparse.write(f.file(), &data)?;
                }
            }
            sparse.finish(f.file())?;
            // The recorded permission bits (SPEC §6.1), never setuid, setgid or sticky; without
            // a record, owner-only.
            let exec = leaf.flags & objects_format::FLAG_EXECUTABLE != 0;
            let mode = u32::from(match leaf.mode & objects_format::modes::PERMISSION_BITS {
                0 => objects_format::modes::legacy(exec),
                m => m,
            });
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(fail("setting the mode of"))?;
            // Content durable before the rename makes it the live file (never a zero-length
            // file after a power cut). Large restores sync the whole filesystem once instead.
            if sync {
                durable::sync_data(f.file(), tmp).map_err(fail("syncing"))?;
            }
        }
        EntryKind::Dir => unreachable!("leaves are never directories"),
    }
    Ok(())
}

/// The block a run of zero bytes must cover to become a hole: the usual filesystem block.
pub const HOLE_BLOCK: u64 = 4096;

/// Writes a file's content in order, leaving every 4 KiB-aligned block of zero bytes as a hole
/// (not written) so that a sparse file comes back sparse; [`Sparse::finish`] sets the length,
/// which covers trailing holes. Only for a file created empty: a hole reads as zeros.
struct Sparse<'a> {
    path: &'a Path,
    pos: u64,
}

impl<'a> Sparse<'a> {
    fn new(path: &'a Path) -> Self {
        Sparse { path, pos: 0 }
    }

    /// Appends `data` at the current position.
    fn write(&mut self, f: &std::fs::File, data: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let start = self.pos;
        // Runs of non-zero blocks, written with one positioned write each.
        let mut run: Option<usize> = None;
        let mut i = 0usize;
        while i < data.len() {
            let abs = start + i as u64;
            let block_end = (abs / HOLE_BLOCK + 1) * HOLE_BLOCK;
            let end = usize::try_from(block_end - start).map_or(data.len(), |e| e.min(data.len()));
            let zero = data[i..end].iter().all(|&b| b == 0);
            match (zero, run) {
                (true, Some(r)) => {
                    f.write_all_at(&data[r..i], start + r as u64)
                        .map_err(|e| Error::file(e, "writing", self.path, RESTORE))?;
                    run = None;
                }
                (false, None) => run = Some(i),
                _ => {}
            }
            i = end;
        }
        if let Some(r) = run {
            f.write_all_at(&data[r..], start + r as u64)
                .map_err(|e| Error::file(e, "writing", self.path, RESTORE))?;
        }
        self.pos = start + data.len() as u64;
        Ok(())
    }

    /// Sets the file's length to everything written, holes included.
    fn finish(&self, f: &std::fs::File) -> Result<()> {
        f.set_len(self.pos)
            .map_err(|e| Error::file(e, "setting the length of", self.path, RESTORE))
    }
}

trait FromBytesExt {
    fn from_bytes_ext(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytesExt for std::ffi::OsStr {
    fn from_bytes_ext(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

/// Removes whatever is at `p` (file, symlink or directory tree) if it is not a real directory.
fn clear_non_dir(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => durable::remove_file(p).map_err(Error::at("removing", p, RESTORE)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes whatever is at `p` if it is a directory (a file is about to take its place).
fn clear_dir(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            durable::remove_dir_all(p).map_err(Error::at("removing", p, RESTORE))
        }
        _ => Ok(()),
    }
}

/// What a restore is doing, in its I/O errors (`Error::File`).
const RESTORE: &str = "restore";

/// One `syncfs` for the filesystem of each root folder.
fn sync_roots(layout: &Layout) -> Result<()> {
    for root in [&layout.state, &layout.config] {
        durable::sync_filesystem(root).map_err(Error::at("syncing", root, RESTORE))?;
    }
    Ok(())
}

/// Restores writing more files than this use one `syncfs` per root between writing the temp
/// files and renaming them, instead of one fsync per file (which costs a journal commit each).
pub const BULK_FILES: usize = 512;

/// Writes every path's verified content to a temp file next to its target (in parallel).
/// On error every temp file is removed.
fn stage(
    store: &ObjectStore,
    layout: &Layout,
    target: &Flat,
    paths: &[&Vec<u8>],
    sync: bool,
    phase: &Phase<'_>,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let staged: Vec<Result<(PathBuf, PathBuf)>> = paths
        .par_iter()
        .map(|p| {
            let abs = layout.abs(p);
            let dir = abs.parent().expect("file has a parent").to_path_buf();
            let tmp = tmp_path(&dir);
            let leaf = target.leaves.get(*p).expect("planned from target");
            let res = materialize(store, leaf, &tmp, &abs, sync);
            phase.advance(1, leaf.size);
            match res {
                Ok(()) => Ok((tmp, abs)),
                Err(e) => {
                    let _ = durable::remove_file(&tmp);
                    Err(e)
                }
            }
        })
        .collect();
    let mut ok = Vec::with_capacity(staged.len());
    let mut first_err = None;
    for r in staged {
        match r {
            Ok(pair) => ok.push(pair),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        for (tmp, _) in &ok {
            let _ = durable::remove_file(tmp);
        }
        return Err(e);
    }
    Ok(ok)
}

/// Applies `plan` under `layout`, taking content from `store`. All content is read and verified
/// into temp files before the first rename, so a corrupt or missing object changes nothing.
///
/// # Errors
/// Missing/corrupt objects (nothing live changed), I/O errors.
pub fn apply(
    store: &ObjectStore,
    layout: &Layout,
    target: &Flat,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<()> {
    apply_with(store, layout, target, plan, progress, Durability::Synced)
}

/// Whether [`apply_with`] makes what it writes durable before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Content synced before each rename, directories synced after (the live files: each is
    /// its old or its new content across a power cut).
    Synced,
    /// Nothing synced: the kernel writes it back, as `tar -x` leaves it (`restore --to`, an
    /// export whose folder a crash leaves partial in any case: docs/safety.md (c)).
    Unsynced,
}

/// [`apply`], with or without syncing (see [`Durability`]).
///
/// # Errors
/// Missing/corrupt objects (nothing changed), I/O errors.
pub fn apply_with(
    store: &ObjectStore,
    layout: &Layout,
    target: &Flat,
    plan: &Plan,
    progress: &dyn Progress,
    durability: Durability,
) -> Result<()> {
    let synced = durability == Durability::Synced;
    let writes = || plan.create.iter().chain(&plan.update);
    let phase = Phase::begin(
        progress,
        "restore",
        Some(writes().count() as u64),
        Some(
            writes()
                .filter_map(|p| target.leaves.get(p))
                .map(|l| l.size)
                .sum(),
        ),
    );
    for r in super::ROOTS {
        let root = layout.abs(r.as_bytes());
        durable::create_dir_all_durable(&root).map_err(Error::at("creating", &root, RESTORE))?;
    }
    // Nothing is ever written through a symlink: every directory between a root folder and a
    // path written, created or removed is checked to be a real directory first (`RealDirs`).
    // A path below a symlink or a file that the target replaces by a directory waits for phase
    // B, which clears the way parent-first and checks again.
    let mut real = RealDirs::new(layout);
    // Phase A changes nothing a user had: it only creates missing directories and writes temp
    // files. Content is verified while it is written, so a missing or corrupt object ends the
    // restore here and everything done so far is undone.
    let mut created: Vec<PathBuf> = Vec::new();
    let mut blocked: Vec<&Vec<u8>> = Vec::new();
    for d in &plan.mkdir {
        if !real.chain_ok(d) {
            blocked.push(d);
            continue;
        }
        let abs = layout.abs(d);
        match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => blocked.push(d),
            Err(_) => match durable::create_dir(&abs) {
                Ok(()) => {
                    created.push(abs);
                    real.memo.insert(d.clone(), true);
                }
                Err(_) => blocked.push(d), // a parent is blocked too
            },
        }
    }
    let writes: Vec<&Vec<u8>> = plan.create.iter().chain(&plan.update).collect();
    let is_real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let (ready, deferred): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) = writes
        .iter()
        .partition(|p| real.chain_ok(p) && !is_real_dir(&layout.abs(p)));
    let per_file_sync = synced && writes.len() <= BULK_FILES;
    let staged = match stage(store, layout, target, &ready, per_file_sync, &phase) {
        Ok(s) => s,
        Err(e) => {
            for d in created.iter().rev() {
                let _ = durable::remove_dir(d);
            }
            return Err(e);
        }
    };
    // Phase B: type conflicts (a file where a directory must be, or the reverse) are cleared —
    // the only removals before the renames — then the writes that waited on them are staged.
    let mut renames = staged;
    if !blocked.is_empty() || !deferred.is_empty() {
        real.reset();
        let res = (|| -> Result<()> {
            for d in &blocked {
                // Parents come first (`plan.mkdir` is sorted), so each was made real already.
                if !real.chain_ok(d) {
                    return Err(through_symlink(d));
                }
                let abs = layout.abs(d);
                clear_non_dir(&abs)?;
                if !is_real_dir(&abs) {
                    durable::create_dir(&abs).map_err(Error::at("creating", &abs, RESTORE))?;
                }
                real.memo.insert((*d).clone(), true);
            }
            for p in &deferred {
                if !real.chain_ok(p) {
                    return Err(through_symlink(p));
                }
                clear_dir(&layout.abs(p))?;
            }
            Ok(())
        })();
        let res = res.and_then(|()| stage(store, layout, target, &deferred, per_file_sync, &phase));
        match res {
            Ok(more) => renames.extend(more),
            Err(e) => {
                for (tmp, _) in &renames {
                    let _ = durable::remove_file(tmp);
                }
                return Err(e);
            }
        }
    }
    if synced && !per_file_sync {
        // Thousands of files: one filesystem sync (per root) costs less than one fsync each.
        sync_roots(layout)?;
    }
    // 2. Atomic replacement, file by file (content was fsynced when written).
    for (tmp, abs) in &renames {
        durable::rename(tmp, abs).map_err(Error::at("replacing", abs, RESTORE))?;
    }
    // 3. Files and folders the target does not have (never below a symlink: such a path was
    //    not found by the walk, which does not follow links, and is not touched).
    real.reset();
    for p in &plan.delete {
        if !real.chain_ok(p) {
            continue;
        }
        let abs = layout.abs(p);
        match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => durable::remove_file(&abs).map_err(Error::at("removing", &abs, RESTORE))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::file(e, "reading", abs, RESTORE)),
        }
    }
    for d in &plan.rmdir {
        if !real.chain_ok(d) {
            continue;
        }
        let abs = layout.abs(d);
        match durable::remove_dir(&abs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::file(e, "removing the folder", abs, RESTORE)),
        }
    }
    if !synced {
        return Ok(());
    }
    // 5. Renames and unlinks durable: fsync every directory that changed.
    let mut dirs: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
    for (_, abs) in &renames {
        dirs.insert(abs.parent().expect("has parent").to_path_buf());
    }
    for p in plan.delete.iter().chain(&plan.rmdir).chain(&plan.mkdir) {
        if let Some(d) = layout.abs(p).parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    if dirs.len() > BULK_FILES {
        sync_roots(layout)?;
    } else {
        dirs.par_iter()
            .filter(|d| d.is_dir())
            .try_for_each(|d| durable::sync_dir(d).map_err(Error::at("syncing", d, RESTORE)))?;
    }
    Ok(())
}

/// Removes leftover temp files under the live roots (after a crash during restore).
///
/// # Errors
/// I/O errors.
pub fn remove_tmp_files(layout: &Layout) -> Result<usize> {
    let mut n = 0;
    for root in super::ROOTS {
        let base = layout.abs(root.as_bytes());
        if !base.is_dir() {
            continue;
        }
        for e in walkdir::WalkDir::new(&base).follow_links(false) {
            let Ok(e) = e else { continue };
            if durable::is_tmp_name(std::os::unix::ffi::OsStrExt::as_bytes(e.file_name()))
                && !e.file_type().is_dir()
            {
                durable::remove_file(e.path())?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Where a snapshot path stands relative to the part of the state an operation covers (one
/// session, one path): the part is read and rewritten, the rest is reused by tree id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Not covered, and nothing covered is below it: reused as it is.
    Outside,
    /// A folder with covered paths below it (`state`, `state/sessions` for a session).
    Above,
    /// Covered, with everything below it.
    Inside,
}

/// A snapshot's content within a part ([`Reach::Inside`] paths, the folders above them that
/// are in the roots, and the roots themselves), with the file modes its `modes` table records.
/// Only the trees on the way to the part and inside it are read, so the cost is the part's,
/// not the snapshot's. Equal to `flatten_snapshot(..).filtered(covered)`.
///
/// # Errors
/// Missing or corrupt objects.
pub fn flatten_part(
    store: &ObjectStore,
    snap: &objects_format::Snapshot,
    reach: &dyn Fn(&[u8]) -> Reach,
) -> Result<Flat> {
    let mut f = super::flatten_within(store, &snap.root, reach)?;
    super::apply_modes(snap, &mut f);
    Ok(f)
}

/// Writes the part of `snap` that `reach` covers into `layout`, whose two folders are absent or
/// empty: an export (`restore --to` a new folder), straight from the trees. Each folder's
/// entries are written in parallel as its tree is read, to their final paths (created new,
/// never opened if something is there), unsynced as [`Durability::Unsynced`] says; no file
/// list of the whole snapshot is built, so memory is a folder's width times the tree's depth
/// (plus the paths the returned plan names), whatever the number of files. The same policy as
/// [`apply_policy`] leaves entries out ([`Plan::skipped`]). When anything fails, what the
/// export wrote is removed again: the two folders are as they were.
///
/// # Errors
/// Missing or corrupt objects, I/O errors.
pub fn export(
    store: &ObjectStore,
    snap: &objects_format::Snapshot,
    reach: &(dyn Fn(&[u8]) -> Reach + Sync),
    layout: &Layout,
    progress: &dyn Progress,
) -> Result<Plan> {
    let existed = [&layout.state, &layout.config].map(|d| d.exists());
    let phase = Phase::begin(progress, "restore", None, None);
    let ex = Export {
        store,
        layout,
        reach,
        modes: snap
            .extra
            .iter()
            .find(|(k, _)| k == modes::KEY)
            .and_then(|(_, v)| modes::Modes::decode(v)),
        roots: Flat::with_roots().dirs,
        phase: &phase,
    };
    let res = (|| {
        for r in super::ROOTS {
            let root = layout.abs(r.as_bytes());
            std::fs::create_dir_all(&root).map_err(Error::at("creating", &root, RESTORE))?;
        }
        ex.tree(&snap.root, b"", false, 0)
    })();
    match res {
        Ok(mut plan) => {
            // As [`plan`] lists them: by path.
            plan.create.sort_unstable();
            plan.mkdir.sort_unstable();
            Ok(plan)
        }
        Err(e) => {
            for (dir, existed) in [&layout.state, &layout.config].into_iter().zip(existed) {
                let _ = empty_export_folder(dir, existed);
            }
            Err(e)
        }
    }
}

/// Removes what an export put in `dir` (absent or empty before it): `dir` itself when it did
/// not exist, else everything in it.
fn empty_export_folder(dir: &Path, existed: bool) -> std::io::Result<()> {
    if !existed {
        return match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        };
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// What [`export`] walks with.
struct Export<'a> {
    store: &'a ObjectStore,
    layout: &'a Layout,
    reach: &'a (dyn Fn(&[u8]) -> Reach + Sync),
    modes: Option<modes::Modes>,
    /// The root folders and the folders above them, made before the walk.
    roots: std::collections::BTreeSet<Vec<u8>>,
    phase: &'a Phase<'a>,
}

impl Export<'_> {
    /// Writes what `reach` covers of tree `id` at snapshot path `prefix` (`inside`: all of it).
    fn tree(
        &self,
        id: &objects_format::ObjectId,
        prefix: &[u8],
        inside: bool,
        depth: usize,
    ) -> Result<Plan> {
        if depth > 256 {
            return Err(Error::CorruptObject {
                id: *id,
                why: "tree nesting deeper than 256".into(),
            });
        }
        let t = self.store.read_tree(id)?;
        let parts = t
            .entries
            .par_iter()
            .map(|e| {
                let mut p = Vec::with_capacity(prefix.len() + 1 + e.name.len());
                p.extend_from_slice(prefix);
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&e.name);
                let r = if inside {
                    Reach::Inside
                } else {
                    (self.reach)(&p)
                };
                self.entry(e, p, r, depth)
            })
            .collect::<Vec<Result<Plan>>>();
        let mut out = Plan::default();
        for part in parts {
            out = merge(out, part?);
        }
        Ok(out)
    }

    fn entry(
        &self,
        e: &objects_format::TreeEntry,
        p: Vec<u8>,
        r: Reach,
        depth: usize,
    ) -> Result<Plan> {
        let mut out = Plan::default();
        match (r, e.kind) {
            (Reach::Outside, _)
            | (Reach::Above, EntryKind::File | EntryKind::ChunkedFile | EntryKind::Symlink) => {}
            (_, EntryKind::Dir) => {
                if (r == Reach::Inside || super::in_roots(&p)) && !self.roots.contains(&p) {
                    let abs = self.layout.abs(&p);
                    std::fs::create_dir(&abs).map_err(Error::at("creating", &abs, RESTORE))?;
                    out.mkdir.push(p.clone());
                }
                out = merge(out, self.tree(&e.id, &p, r == Reach::Inside, depth + 1)?);
            }
            (Reach::Inside, kind) => {
                let mode = match &self.modes {
                    Some(t) if kind != EntryKind::Symlink => {
                        t.mode(&p, e.flags & objects_format::FLAG_EXECUTABLE != 0)
                    }
                    _ => 0,
                };
                let leaf = Leaf {
                    kind,
                    flags: e.flags,
                    mode,
                    size: e.size,
                    id: e.id,
                };
                let why = if kind == EntryKind::Symlink {
                    policy::leaf_verdict(&p, Some(&self.store.read_blob(&leaf.id)?))
                } else {
                    policy::leaf_verdict(&p, None)
                };
                if let Some(why) = why {
                    out.skipped.push(policy::skipped(&p, why));
                } else {
                    let abs = self.layout.abs(&p);
                    materialize_as(self.store, &leaf, &abs, &abs, false, true)?;
                    self.phase.advance(1, leaf.size);
                    out.create.push(p);
                }
            }
        }
        Ok(out)
    }
}

/// `a`'s lists followed by `b`'s.
fn merge(mut a: Plan, b: Plan) -> Plan {
    a.create.extend(b.create);
    a.mkdir.extend(b.mkdir);
    a.skipped.extend(b.skipped);
    a
}

/// The root tree of `base_root` with its part replaced by `part`'s [`Reach::Inside`] content:
/// every tree outside the part is reused by id (not read), only the trees above the part are
/// read and written again. Stores the new trees in `batch` when given. With the same content
/// the id equals what [`super::write_trees`] gives for the whole state.
///
/// # Errors
/// Missing or corrupt trees above the part; encoding errors.
pub fn graft(
    store: &ObjectStore,
    base_root: Option<&objects_format::ObjectId>,
    reach: &dyn Fn(&[u8]) -> Reach,
    part: &Flat,
    batch: Option<&crate::store::Batch<'_>>,
) -> Result<objects_format::ObjectId> {
    use objects_format::{Object, Tree, TreeEntry};
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct Dir {
        entries: BTreeMap<Vec<u8>, Node>,
    }
    enum Node {
        Leaf(Leaf),
        Dir(Dir),
        Kept(TreeEntry),
    }
    fn dir_at<'a>(root: &'a mut Dir, path: &[u8]) -> Result<&'a mut Dir> {
        let mut cur = root;
        if path.is_empty() {
            return Ok(cur);
        }
        for comp in path.split(|&b| b == b'/') {
            let n = cur
                .entries
                .entry(comp.to_vec())
                .or_insert_with(|| Node::Dir(Dir::default()));
            if matches!(n, Node::Kept(_)) {
                *n = Node::Dir(Dir::default());
            }
            cur = match n {
                Node::Dir(d) => d,
                _ => {
                    return Err(Error::Internal(format!(
                        "{} is both a file and a folder in a tree being written",
                        display(path)
                    )));
                }
            };
        }
        Ok(cur)
    }
    fn merge(
        store: &ObjectStore,
        into: &mut Dir,
        id: &objects_format::ObjectId,
        prefix: &[u8],
        reach: &dyn Fn(&[u8]) -> Reach,
        depth: usize,
    ) -> Result<()> {
        if depth > 256 {
            return Err(Error::CorruptObject {
                id: *id,
                why: "tree nesting deeper than 256".into(),
            });
        }
        for e in store.read_tree(id)?.entries {
            let mut p = prefix.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            match reach(&p) {
                // Replaces the empty root folder a part always has.
                Reach::Outside => {
                    into.entries.insert(e.name.clone(), Node::Kept(e));
                }
                Reach::Inside => {}
                Reach::Above if e.kind == EntryKind::Dir => {
                    let n = into
                        .entries
                        .entry(e.name.clone())
                        .or_insert_with(|| Node::Dir(Dir::default()));
                    if let Node::Dir(d) = n {
                        merge(store, d, &e.id, &p, reach, depth + 1)?;
                    }
                }
                // A file where the part has a folder: the part decides.
                Reach::Above => {}
            }
        }
        Ok(())
    }
    fn split(p: &[u8]) -> (&[u8], &[u8]) {
        match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (&b""[..], p),
        }
    }
    fn write(d: Dir, batch: Option<&crate::store::Batch<'_>>) -> Result<objects_format::ObjectId> {
        let mut t = Tree::default();
        for (name, n) in d.entries {
            t.entries.push(match n {
                Node::Kept(e) => e,
                Node::Leaf(l) => TreeEntry {
                    name,
                    kind: l.kind,
                    flags: l.flags,
                    size: l.size,
                    id: l.id,
                },
                Node::Dir(sub) => TreeEntry {
                    name,
                    kind: EntryKind::Dir,
                    flags: 0,
                    size: 0,
                    id: write(sub, batch)?,
                },
            });
        }
        let (id, bytes) = objects_format::encode_with_id(&Object::Tree(t))?;
        if let Some(b) = batch {
            b.put_canonical(objects_format::Kind::Tree, id, &bytes)?;
        }
        Ok(id)
    }
    let mut root = Dir::default();
    // Every snapshot has the roots; the base's replace them where it has them.
    for d in &Flat::with_roots().dirs {
        dir_at(&mut root, d)?;
    }
    for d in &part.dirs {
        if reach(d) != Reach::Outside {
            dir_at(&mut root, d)?;
        }
    }
    for (p, l) in &part.leaves {
        if reach(p) == Reach::Inside {
            let (parent, name) = split(p);
            dir_at(&mut root, parent)?
                .entries
                .insert(name.to_vec(), Node::Leaf(*l));
        }
    }
    if let Some(id) = base_root {
        merge(store, &mut root, id, b"", reach, 0)?;
    }
    write(root, batch)
}

/// The `modes` entry of a snapshot whose part was replaced by `part`: the base's table (its
/// defaults kept) with the part's files listed where they differ from them; `None` when that
/// says what no table says.
#[must_use]
pub fn graft_modes(
    base: Option<&objects_format::Snapshot>,
    reach: &dyn Fn(&[u8]) -> Reach,
    part: &Flat,
) -> Option<(String, Vec<u8>)> {
    let mut t = base
        .and_then(|s| s.extra.iter().find(|(k, _)| k == modes::KEY))
        .and_then(|(_, v)| modes::Modes::decode(v))
        .unwrap_or_else(modes::Modes::legacy);
    t.paths.retain(|p, _| reach(p) != Reach::Inside);
    for (p, l) in &part.leaves {
        if l.kind == EntryKind::Symlink || reach(p) != Reach::Inside {
            continue;
        }
        let exec = l.flags & objects_format::FLAG_EXECUTABLE != 0;
        let m = if l.mode == 0 {
            modes::legacy(exec)
        } else {
            l.mode
        } & modes::PERMISSION_BITS;
        if m != if exec { t.exec } else { t.plain } {
            t.paths.insert(p.clone(), m);
        }
    }
    (!t.is_legacy()).then(|| (modes::KEY.to_owned(), t.encode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes the chunker cuts into several chunks.
    fn varied(len: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn a_file_holds_a_chunk_list_only_when_every_byte_matches() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Over one window, so the file is read in several windows.
        let data = varied(20 * objects_format::chunk::MAX_CHUNK + 12_345);
        let (kind, _) = super::super::save::content_objects(&data, None).expect("chunk");
        assert_eq!(kind, EntryKind::ChunkedFile);
        let lens = objects_format::chunk::chunk_lengths(&data);
        assert!(lens.len() > 20, "{} chunks", lens.len());
        let mut at = 0;
        let chunks = lens
            .iter()
            .map(|&l| {
                let c = objects_format::ChunkRef {
                    id: objects_format::encoding::blob_id(&data[at..at + l]),
                    len: u32::try_from(l).expect("small"),
                };
                at += l;
                c
            })
            .collect();
        let list = objects_format::ChunkList {
            total_size: data.len() as u64,
            chunks,
        };
        let path = dir.path().join("f");
        let holds = |bytes: &[u8]| {
            std::fs::write(&path, bytes).expect("write");
            holds_chunks(&path, &list).expect("read")
        };
        assert!(holds(&data));
        for i in [0, data.len() / 2, data.len() - 1] {
            let mut other = data.clone();
            other[i] ^= 1;
            assert!(!holds(&other), "byte {i} flipped");
        }
        assert!(!holds(&data[..data.len() - 1]), "one byte short");
        assert!(!holds(&[data.as_slice(), b"x"].concat()), "one byte more");
        assert!(!holds(b""), "empty");
    }
}
