//! Reading the live dirs: walk, stat-cache lookup, parallel hash + compress.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use objects_format::chunk::{
    CHUNK_THRESHOLD, MAX_CHUNK, chunk_lengths, ready_lengths, zeros_never_cut,
};
use objects_format::encoding::encode_blob;
use objects_format::{ChunkList, ChunkRef, EntryKind, FLAG_EXECUTABLE, Kind, Object, ObjectId};
use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, OFlags};

use super::exclude::{Frames, IGNORE_FILE};
use super::policy::{self, Skipped};
use super::{Flat, Layout, Leaf, ROOTS};
use crate::error::{Error, Result};
use crate::progress::{Phase, Progress};
use crate::store::Batch;
use crate::store::durable::is_tmp_name;
use crate::store::statcache::{Stat, StatCache};

/// A live file found by the walk.
#[derive(Debug, Clone)]
pub struct LiveFile {
    /// Snapshot path (its filesystem path is [`Layout::abs`] of it: not kept, as 100 000 of
    /// them would cost megabytes).
    pub rel: Vec<u8>,
    /// Metadata (not following symlinks).
    pub meta: LiveMeta,
}

/// What a save needs of a file's metadata (not following symlinks): its stat, mode bits and
/// whether it is a symlink. A fifth of `std::fs::Metadata`'s size, kept for every live file.
#[derive(Debug, Clone, Copy)]
pub struct LiveMeta {
    /// Size, times, inode and device (the stat cache's key).
    pub stat: Stat,
    /// `st_mode`.
    pub mode: u32,
    /// A symlink (not followed).
    pub symlink: bool,
}

impl LiveMeta {
    /// From `lstat` metadata.
    #[must_use]
    pub fn of(m: &std::fs::Metadata) -> LiveMeta {
        use std::os::unix::fs::PermissionsExt;
        LiveMeta {
            stat: Stat::of(m),
            mode: m.permissions().mode(),
            symlink: m.file_type().is_symlink(),
        }
    }

    /// From a `stat` made relative to a folder (`fstatat`), as the walk makes them: the same
    /// values as [`LiveMeta::of`] gives for the same file.
    #[must_use]
    pub fn of_stat(st: &rustix::fs::Stat) -> LiveMeta {
        let ns = |s: i64, n: u64| {
            s.saturating_mul(1_000_000_000)
                .saturating_add(i64::try_from(n).unwrap_or(0))
        };
        LiveMeta {
            stat: Stat {
                size: u64::try_from(st.st_size).unwrap_or(0),
                mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
                ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
                ino: st.st_ino,
                dev: st.st_dev,
            },
            mode: st.st_mode,
            symlink: FileType::from_raw_mode(st.st_mode) == FileType::Symlink,
        }
    }

    /// The size in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.stat.size
    }

    /// True for an empty file.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.stat.size == 0
    }
}

/// Everything the walk found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Regular files and symlinks, a list per folder: joining the folders' lists moves them
    /// instead of copying every entry into a longer one at each level (at 100 000 files the
    /// copies held 14 MB at once).
    pub files: Vec<Vec<LiveFile>>,
    /// Directories (snapshot paths).
    pub dirs: Vec<Vec<u8>>,
    /// Entries the snapshot policy leaves out (too deep).
    pub skipped: Vec<Skipped>,
    /// Entries the user's excludes leave out (snapshot paths; a folder ends with `/`).
    pub excluded: Vec<Vec<u8>>,
}

impl Scan {
    /// Adds `other`'s entries after this one's.
    fn append(&mut self, mut other: Scan) {
        self.files.append(&mut other.files);
        self.dirs.append(&mut other.dirs);
        self.skipped.append(&mut other.skipped);
        self.excluded.append(&mut other.excluded);
    }
}

/// Walks the live roots under `layout`, keeping paths for which `keep` is true.
///
/// # Errors
/// I/O errors other than a missing root (a missing root is an empty folder).
pub fn scan(layout: &Layout, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<Scan> {
    let mut out = Scan::default();
    for root in ROOTS {
        let base = layout.abs(root.as_bytes());
        let fd = match rustix::fs::open(
            &base,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => fd,
            // A missing root is an empty folder.
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => continue,
            Err(e) => return Err(Error::file(e.into(), "reading the folder", base, "save")),
        };
        let walk = Walk {
            keep,
            excludes: layout.excludes.as_deref(),
        };
        out.append(walk.dir(fd, root.as_bytes(), &base, &Frames::default())?);
    }
    Ok(out)
}

/// One walk of a live root. Every folder is read through its own descriptor and its files are
/// `lstat`ed relative to it (no path is resolved from `/` again, as git's `lstat`s from the
/// work tree's root do not), and sibling folders are read on every core.
struct Walk<'a> {
    keep: &'a (dyn Fn(&[u8]) -> bool + Sync),
    excludes: Option<&'a super::exclude::Excludes>,
}

/// One entry of a folder, read.
enum Found {
    File(LiveFile),
    /// A folder (snapshot path) and what is below it.
    Dir(Vec<u8>, Scan),
}

impl Walk<'_> {
    /// Walks the folder open as `fd` (snapshot path `rel`, filesystem path `abs`), with
    /// `frames` the `.shelldoneignore` files above it. The result lists its entries in name
    /// order, each folder's entries right after it (the order of a sorted depth-first walk).
    fn dir(&self, fd: OwnedFd, rel: &[u8], abs: &Path, frames: &Frames) -> Result<Scan> {
        let fail = |e: rustix::io::Errno| {
            Error::file(e.into(), "reading the folder", abs.to_path_buf(), "save")
        };
        let mut names: Vec<(Vec<u8>, FileType)> = Vec::new();
        {
            // One 32 KiB buffer per folder for `getdents`, as glibc's `readdir` uses (rustix's
            // `Dir` allocates its own, growing from 768 bytes).
            let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 32 * 1024];
            let mut dir = rustix::fs::RawDir::new(&fd, &mut buf);
            while let Some(entry) = dir.next() {
                let entry = entry.map_err(fail)?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." || is_tmp_name(name) {
                    continue;
                }
                names.push((name.to_vec(), entry.file_type()));
            }
        }
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut own = None;
        if self.excludes.is_some() && names.iter().any(|(n, _)| n == IGNORE_FILE.as_bytes()) {
            let mut f = frames.clone();
            f.enter(abs)?;
            own = Some(f);
        }
        let frames = own.as_ref().unwrap_or(frames);
        let mut out = Scan::default();
        let mut entries = Vec::with_capacity(names.len());
        for (name, mut ft) in names {
            let mut path = Vec::with_capacity(rel.len() + 1 + name.len());
            path.extend_from_slice(rel);
            path.push(b'/');
            path.extend_from_slice(&name);
            if ft == FileType::Unknown {
                // The filesystem does not say in its directory entries: ask.
                match rustix::fs::statat(&fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => ft = FileType::from_raw_mode(st.st_mode),
                    Err(rustix::io::Errno::NOENT) => continue, // vanished while walking
                    Err(e) => return Err(fail(e)),
                }
            }
            let is_dir = ft == FileType::Directory;
            if !(self.keep)(&path) {
                continue;
            }
            if let Some(why) = policy::depth_verdict(&path) {
                out.skipped.push(policy::skipped(&path, why));
                continue;
            }
            if let Some(ex) = self.excludes {
                let entry_abs = if frames.is_empty() {
                    std::path::PathBuf::new()
                } else {
                    abs.join(OsStr::from_bytes(&name))
                };
                if frames.excluded(ex, &entry_abs, &path, is_dir) {
                    if is_dir {
                        path.push(b'/');
                    }
                    out.excluded.push(path);
                    continue;
                }
            }
            match ft {
                FileType::Directory => entries.push((name, path, true)),
                FileType::RegularFile | FileType::Symlink => entries.push((name, path, false)),
                // sockets, fifos, devices: not state; skipped.
                _ => {}
            }
        }
        // One `lstat` per file, relative to this folder; folders walked; both on every core.
        let found: Vec<Result<Option<Found>>> = entries
            .into_par_iter()
            .map(|(name, path, is_dir)| {
                let at = || abs.join(OsStr::from_bytes(&name));
                if !is_dir {
                    return match rustix::fs::statat(&fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                    {
                        Ok(st) => Ok(Some(Found::File(LiveFile {
                            rel: path,
                            meta: LiveMeta::of_stat(&st),
                        }))),
                        Err(rustix::io::Errno::NOENT) => Ok(None), // vanished since listed
                        Err(e) => Err(Error::file(e.into(), "reading the folder", at(), "save")),
                    };
                }
                let sub = match rustix::fs::openat(
                    &fd,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                ) {
                    Ok(sub) => sub,
                    // Vanished, or replaced by a file or a link, since it was listed.
                    Err(
                        rustix::io::Errno::NOENT
                        | rustix::io::Errno::NOTDIR
                        | rustix::io::Errno::LOOP,
                    ) => return Ok(None),
                    Err(e) => {
                        return Err(Error::file(e.into(), "reading the folder", at(), "save"));
                    }
                };
                let scan = self.dir(sub, &path, &at(), frames)?;
                Ok(Some(Found::Dir(path, scan)))
            })
            .collect();
        let found = found.into_iter().collect::<Result<Vec<_>>>()?;
        // Reserved exactly: appending folder after folder would double the lists' buffers as
        // they grow.
        let (files, lists, dirs) = found
            .iter()
            .flatten()
            .fold((0, 1, 0), |(f, l, d), x| match x {
                Found::File(_) => (f + 1, l, d),
                Found::Dir(_, s) => (f, l + s.files.len(), d + 1 + s.dirs.len()),
            });
        let mut mine = Vec::with_capacity(files);
        out.files.reserve_exact(lists);
        out.dirs.reserve_exact(dirs);
        for f in found {
            match f {
                Some(Found::File(file)) => mine.push(file),
                Some(Found::Dir(path, scan)) => {
                    out.dirs.push(path);
                    out.append(scan);
                }
                None => {}
            }
        }
        if !mine.is_empty() {
            out.files.push(mine);
        }
        Ok(out)
    }
}

/// The outcome for one file.
#[derive(Debug)]
pub enum Hashed {
    /// Hashed or found in the stat cache.
    Ok {
        /// The snapshot leaf.
        leaf: Leaf,
        /// Stat cache update (None for cache hits and symlinks).
        fresh: Option<(Stat, i64)>,
        /// The id was taken from the stat cache, not read from the file.
        cached: bool,
        /// The file changed while it was read, twice: what was read last is recorded.
        changed: bool,
    },
    /// A session descriptor (`*.json` under `state/sessions`) that does not parse.
    CorruptDescriptor(String),
    /// Left out by the snapshot policy (a symlink leading out of its folder): why.
    Skipped(String),
    /// Vanished between walk and read.
    Gone,
}

/// True for session descriptors, which must parse as a JSON object.
#[must_use]
pub fn is_descriptor(rel: &[u8]) -> bool {
    // `sessions/<id>.json` or `sessions/<id>/<name>.json`: deeper JSON files are session data,
    // not the descriptor the terminal restores a session from.
    rel.strip_prefix(b"state/sessions/")
        .is_some_and(|r| r.ends_with(b".json") && r.iter().filter(|&&b| b == b'/').count() <= 1)
}

/// Checks a descriptor: a JSON object.
///
/// # Errors
/// A description of the problem.
pub fn validate_descriptor(bytes: &[u8]) -> std::result::Result<(), String> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// Computes the content of one file: blob or chunk list, stored into `batch` when given.
///
/// # Errors
/// Encoding or I/O errors.
pub fn content_objects(data: &[u8], batch: Option<&Batch<'_>>) -> Result<(EntryKind, ObjectId)> {
    if (data.len() as u64) <= CHUNK_THRESHOLD {
        let c = encode_blob(data);
        let id = ObjectId::compute(Kind::Blob, &c);
        if let Some(b) = batch {
            b.put_canonical(Kind::Blob, id, &c)?;
        }
        return Ok((EntryKind::File, id));
    }
    let lens = chunk_lengths(data);
    let mut offsets = Vec::with_capacity(lens.len());
    let mut pos = 0;
    for l in &lens {
        offsets.push((pos, *l));
        pos += l;
    }
    let chunks: Vec<ChunkRef> = offsets
        .par_iter()
        .map(|&(off, len)| store_chunk(&data[off..off + len], batch))
        .collect::<Result<_>>()?;
    let list = Object::ChunkList(ChunkList {
        total_size: data.len() as u64,
        chunks,
    });
    let id = match batch {
        Some(b) => b.put(&list)?,
        None => objects_format::encode_with_id(&list)?.0,
    };
    Ok((EntryKind::ChunkedFile, id))
}

/// Hashes one live file (or takes it from the stat cache). With `batch`, new objects are stored.
///
/// # Errors
/// I/O errors other than the file vanishing.
pub fn hash_file(
    layout: &Layout,
    f: &LiveFile,
    cache: &StatCache,
    batch: Option<&Batch<'_>>,
) -> Result<Hashed> {
    if f.meta.symlink {
        let abs = layout.abs(&f.rel);
        let target = match std::fs::read_link(&abs) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Hashed::Gone),
            Err(e) => return Err(Error::file(e, "reading the link", &abs, "save")),
        };
        let bytes = target.as_os_str().as_bytes();
        if let Some(why) = policy::leaf_verdict(&f.rel, Some(bytes)) {
            return Ok(Hashed::Skipped(why));
        }
        let c = encode_blob(bytes);
        let id = ObjectId::compute(Kind::Blob, &c);
        if let Some(b) = batch {
            b.put_canonical(Kind::Blob, id, &c)?;
        }
        return Ok(Hashed::Ok {
            leaf: Leaf {
                kind: EntryKind::Symlink,
                flags: 0,
                mode: 0,
                size: bytes.len() as u64,
                id,
            },
            fresh: None,
            cached: false,
            changed: false,
        });
    }
    let st_mode = f.meta.mode;
    let flags = if st_mode & 0o100 != 0 {
        FLAG_EXECUTABLE
    } else {
        0
    };
    let mode = objects_format::modes::recorded(st_mode);
    let stat = f.meta.stat;
    // While redaction is on, the files it covers are always read (redact.rs).
    let redacting = super::redact::active().is_some() && super::redact::Redactor::applies(&f.rel);
    if let Some((kind, id)) = cache.lookup(&f.rel, &stat).filter(|_| !redacting) {
        // Trust the cache only while the object is still stored (gc or a lost object would
        // otherwise make a snapshot point at nothing).
        if batch.is_none_or(|b| b.contains(&id)) {
            return Ok(Hashed::Ok {
                leaf: Leaf {
                    kind,
                    flags,
                    mode,
                    size: stat.size,
                    id,
                },
                fresh: None,
                cached: true,
                changed: false,
            });
        }
    }
    let abs = layout.abs(&f.rel);
    let mut hashed_at = crate::store::now_ns();
    let Some(mut got) = read_content(&abs, &f.rel, stat.size, batch)? else {
        return Ok(Hashed::Gone);
    };
    // The file may have changed between stat and read; stat again so the cache never pairs an
    // old stat with new content.
    let mut before = stat;
    let mut after = stat_now(&abs, before);
    let mut steady = after == before && before.size == got.len;
    if !steady {
        // Changed while it was read (as borg does): read it once more, between two stats.
        before = after;
        hashed_at = crate::store::now_ns();
        let Some(again) = read_content(&abs, &f.rel, before.size, batch)? else {
            return Ok(Hashed::Gone);
        };
        got = again;
        after = stat_now(&abs, before);
        steady = after == before && before.size == got.len;
    }
    let (kind, id) = match got.stored {
        Ok(stored) => stored,
        Err(why) => return Ok(Hashed::CorruptDescriptor(why)),
    };
    let fresh = (steady && !got.redacted).then_some((before, hashed_at));
    Ok(Hashed::Ok {
        leaf: Leaf {
            kind,
            flags,
            mode,
            size: got.size,
            id,
        },
        fresh,
        cached: false,
        changed: !steady,
    })
}

/// What one read of a file gave.
struct Content {
    /// Bytes read.
    len: u64,
    /// Bytes stored: `len`, unless redaction replaced some ([`super::redact`]).
    size: u64,
    /// True when redaction changed what was stored.
    redacted: bool,
    /// The entry kind and id stored, or why a session descriptor does not parse (then nothing
    /// was stored).
    stored: std::result::Result<(EntryKind, ObjectId), String>,
}

/// How much of a large file is held in memory at once while it is chunked: one fixed buffer
/// per file being read (so per worker thread), whatever the file's size. 16 chunks of
/// [`MAX_CHUNK`]: enough for every worker to compress a chunk of one big file in parallel.
const WINDOW: usize = 16 * MAX_CHUNK;

/// Reads one file and stores its content (with `batch`); `None` when it is gone. A large file
/// is read and chunked a window at a time (see [`read_chunked`]); a small file and a session
/// descriptor (which must parse whole) are read whole. `size` is the size the file was seen
/// with (a hint: the buffer of a small file is allocated once, so it is read in one call).
fn read_content(
    abs: &Path,
    rel: &[u8],
    size: u64,
    batch: Option<&Batch<'_>>,
) -> Result<Option<Content>> {
    use std::io::Read;
    let fail = |e: std::io::Error| Error::file(e, "reading", abs, "save");
    let mut file = match std::fs::File::open(abs) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    // One byte more than the size seen: reading to the end then ends on that read, without
    // the small probing reads an empty buffer starts with.
    let mut buf = Vec::with_capacity(usize::try_from(size.min(CHUNK_THRESHOLD)).unwrap_or(0) + 1);
    (&mut file)
        .take(CHUNK_THRESHOLD + 1)
        .read_to_end(&mut buf)
        .map_err(fail)?;
    if let Some(r) = super::redact::active().filter(|_| super::redact::Redactor::applies(rel)) {
        // `[snapshot] redact`: the whole file, redacted, is what is stored.
        file.read_to_end(&mut buf).map_err(fail)?;
        let red = r.redact(&buf);
        let stored = red.as_deref().unwrap_or(&buf);
        return Ok(Some(Content {
            len: buf.len() as u64,
            size: stored.len() as u64,
            redacted: red.is_some(),
            stored: Ok(content_objects(stored, batch)?),
        }));
    }
    let descriptor = is_descriptor(rel);
    if descriptor {
        file.read_to_end(&mut buf).map_err(fail)?;
    }
    if buf.len() as u64 <= CHUNK_THRESHOLD || descriptor {
        if descriptor && let Err(why) = validate_descriptor(&buf) {
            return Ok(Some(Content {
                len: buf.len() as u64,
                size: buf.len() as u64,
                redacted: false,
                stored: Err(why),
            }));
        }
        return Ok(Some(Content {
            len: buf.len() as u64,
            size: buf.len() as u64,
            redacted: false,
            stored: Ok(content_objects(&buf, batch)?),
        }));
    }
    let (len, chunks) = read_chunked(&mut file, &buf, WINDOW, batch).map_err(|e| match e {
        Chunked::Io(e) => fail(e),
        Chunked::Store(e) => e,
    })?;
    let list = Object::ChunkList(ChunkList {
        total_size: len,
        chunks,
    });
    let id = match batch {
        Some(b) => b.put(&list)?,
        None => objects_format::encode_with_id(&list)?.0,
    };
    Ok(Some(Content {
        len,
        size: len,
        redacted: false,
        stored: Ok((EntryKind::ChunkedFile, id)),
    }))
}

/// Why [`read_chunked`] failed: reading the file, or storing a chunk.
enum Chunked {
    Io(std::io::Error),
    Store(Error),
}

/// Chunks the rest of `file` (SPEC §5), whose first bytes `head` were already read, through
/// one buffer of `window` bytes (at least [`MAX_CHUNK`]): fill it, cut the chunks the bytes held
/// decide ([`ready_lengths`]: the same chunks as cutting the whole file), hash, compress and
/// store them in parallel, keep the uncut tail, refill. Only the chunk list grows with the file
/// (36 bytes a chunk in the object, 36 bytes per ~56 KiB here).
///
/// A sparse file's holes are not read: where the bytes held are zeros and the file has a hole
/// reaching at least [`MAX_CHUNK`] past the chunk's start, the chunk is `MAX_CHUNK` zeros
/// ([`zeros_never_cut`]), stored once, and the reader seeks past it.
fn read_chunked(
    file: &mut std::fs::File,
    head: &[u8],
    window: usize,
    batch: Option<&Batch<'_>>,
) -> std::result::Result<(u64, Vec<ChunkRef>), Chunked> {
    use std::io::{Read, Seek};
    assert!(
        window >= MAX_CHUNK,
        "a window holds at least one whole chunk"
    );
    let mut win = vec![0u8; window.max(head.len())];
    win[..head.len()].copy_from_slice(head);
    let mut held = head.len();
    // Bytes of the file before the window: chunked and stored.
    let mut done = 0u64;
    let mut chunks = Vec::new();
    let mut eof = false;
    let skip_holes = zeros_never_cut();
    loop {
        if skip_holes && !eof && win[..held].iter().all(|&b| b == 0) {
            let zeros = hole_after(file, done + held as u64).map_err(Chunked::Io)?;
            let n = (held as u64 + zeros) / MAX_CHUNK as u64;
            if n > 0 {
                let zero = store_chunk(&ZERO_CHUNK[..], batch).map_err(Chunked::Store)?;
                chunks.extend(std::iter::repeat_n(zero, usize::try_from(n).expect("fits")));
                done += n * MAX_CHUNK as u64;
                file.seek(std::io::SeekFrom::Start(done))
                    .map_err(Chunked::Io)?;
                held = 0;
            }
        }
        while !eof && held < window {
            match file.read(&mut win[held..window]) {
                Ok(0) => eof = true,
                Ok(n) => held += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Chunked::Io(e)),
            }
        }
        let lens = ready_lengths(&win[..held], eof);
        let mut ranges = Vec::with_capacity(lens.len());
        let mut pos = 0;
        for n in lens {
            ranges.push((pos, n));
            pos += n;
        }
        let bytes = &win;
        let stored: Vec<ChunkRef> = ranges
            .par_iter()
            .map(|&(off, n)| store_chunk(&bytes[off..off + n], batch))
            .collect::<Result<_>>()
            .map_err(Chunked::Store)?;
        chunks.extend(stored);
        win.copy_within(pos..held, 0);
        held -= pos;
        done += pos as u64;
        if eof {
            debug_assert_eq!(held, 0, "the end cuts everything held");
            return Ok((done, chunks));
        }
    }
}

/// How many bytes from `at` on are a hole (0 when `at` is in data; to the end of the file when
/// no data follows). A filesystem without `SEEK_DATA` reports no holes.
fn hole_after(file: &std::fs::File, at: u64) -> std::io::Result<u64> {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(at)) {
        Ok(data) => Ok(data.saturating_sub(at)),
        Err(rustix::io::Errno::NXIO) => Ok(file.metadata()?.len().saturating_sub(at)),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// A chunk of [`MAX_CHUNK`] zero bytes: what a sparse file's holes are cut into.
static ZERO_CHUNK: [u8; MAX_CHUNK] = [0; MAX_CHUNK];

/// Stores one chunk as a blob. A chunk of MAX_CHUNK zero bytes (a sparse file's holes) is
/// encoded and hashed once per process.
fn store_chunk(data: &[u8], batch: Option<&Batch<'_>>) -> Result<ChunkRef> {
    static ZEROS: std::sync::OnceLock<(ObjectId, Vec<u8>)> = std::sync::OnceLock::new();
    let len = u32::try_from(data.len()).expect("chunks are at most MAX_CHUNK");
    let fresh;
    let (id, c) = if data.len() == MAX_CHUNK && data.iter().all(|&b| b == 0) {
        let (id, c) = ZEROS.get_or_init(|| {
            let c = encode_blob(data);
            (ObjectId::compute(Kind::Blob, &c), c)
        });
        (*id, c.as_slice())
    } else {
        fresh = encode_blob(data);
        (ObjectId::compute(Kind::Blob, &fresh), fresh.as_slice())
    };
    if let Some(b) = batch {
        b.put_canonical(Kind::Blob, id, c)?;
    }
    Ok(ChunkRef { id, len })
}

/// The file's stat now (`or` when it cannot be taken: the caller then compares with itself).
fn stat_now(abs: &Path, or: Stat) -> Stat {
    std::fs::symlink_metadata(abs)
        .map(|m| Stat::of(&m))
        .unwrap_or(or)
}

/// Result of reading the live state.
#[derive(Debug, Default)]
pub struct LiveState {
    /// The content.
    pub flat: Flat,
    /// Descriptors that failed validation: (path, why).
    pub corrupt: Vec<(Vec<u8>, String)>,
    /// Entries the snapshot policy leaves out (a symlink leading out of its folder, too deep).
    pub skipped: Vec<Skipped>,
    /// Files whose id came from the stat cache (not read), in walk order; only collected when
    /// asked for (a restore confirms them; a save does not need them).
    pub vouched: Vec<Vec<u8>>,
    /// Entries the user's excludes leave out (snapshot paths; a folder ends with `/`).
    pub excluded: Vec<Vec<u8>>,
    /// Files that changed while they were read, and again when read a second time: their
    /// filesystem paths (the content recorded is the second read's).
    pub changed: Vec<std::path::PathBuf>,
}

/// Reads the live state under `layout` into a [`Flat`], storing new objects in `batch` when given
/// and updating `cache`; reports the files read to `progress` (phase `save`).
/// [`LiveState::vouched`] stays empty: see [`read_live_vouched`].
///
/// # Errors
/// I/O or encoding errors.
pub fn read_live(
    layout: &Layout,
    keep: &(dyn Fn(&[u8]) -> bool + Sync),
    cache: &mut StatCache,
    batch: Option<&Batch<'_>>,
    progress: &dyn Progress,
) -> Result<LiveState> {
    read_live_as(layout, keep, cache, batch, progress, false)
}

/// [`read_live`] without a batch or progress, also listing the files whose id the stat cache
/// vouched for ([`LiveState::vouched`]), as a restore needs to confirm them.
///
/// # Errors
/// I/O or encoding errors.
pub fn read_live_vouched(
    layout: &Layout,
    keep: &(dyn Fn(&[u8]) -> bool + Sync),
    cache: &mut StatCache,
) -> Result<LiveState> {
    read_live_as(layout, keep, cache, None, &crate::progress::Silent, true)
}

/// Files hashed at once by [`read_live`] before their outcomes are recorded.
const HASH_SLICE: usize = 4096;

fn read_live_as(
    layout: &Layout,
    keep: &(dyn Fn(&[u8]) -> bool + Sync),
    cache: &mut StatCache,
    batch: Option<&Batch<'_>>,
    progress: &dyn Progress,
    collect_vouched: bool,
) -> Result<LiveState> {
    let scan = scan(layout, keep)?;
    let phase = Phase::begin(
        progress,
        "save",
        Some(scan.files.iter().map(Vec::len).sum::<usize>() as u64),
        Some(scan.files.iter().flatten().map(|f| f.meta.len()).sum()),
    );
    let mut out = LiveState {
        flat: Flat::with_roots(),
        corrupt: Vec::new(),
        skipped: scan.skipped,
        vouched: Vec::new(),
        excluded: scan.excluded,
        changed: Vec::new(),
    };
    for d in scan.dirs {
        out.flat.dirs.insert(d);
    }
    // Hashed a slice at a time, so that the outcomes held at once stay a few hundred kilobytes
    // whatever the number of files (an outcome per file for 100 000 files was 11 MB).
    let mut files = scan.files.into_iter().flatten();
    loop {
        let slice: Vec<LiveFile> = files.by_ref().take(HASH_SLICE).collect();
        if slice.is_empty() {
            break;
        }
        let results: Vec<Result<Hashed>> = {
            let cache_ref = &*cache;
            slice
                .par_iter()
                .map(|f| {
                    let r = hash_file(layout, f, cache_ref, batch);
                    phase.advance(1, f.meta.len());
                    r
                })
                .collect()
        };
        for (f, r) in slice.into_iter().zip(results) {
            match r? {
                Hashed::Ok {
                    leaf,
                    fresh,
                    cached,
                    changed,
                } => {
                    if changed {
                        out.changed.push(layout.abs(&f.rel));
                    }
                    if let Some((stat, at)) = fresh {
                        cache.insert(f.rel.clone(), stat, leaf.kind, leaf.id, at);
                    }
                    if cached && collect_vouched {
                        out.vouched.push(f.rel.clone());
                    }
                    out.flat.leaves.insert(f.rel, leaf);
                }
                Hashed::CorruptDescriptor(why) => out.corrupt.push((f.rel, why)),
                Hashed::Skipped(why) => out.skipped.push(policy::skipped(&f.rel, why)),
                Hashed::Gone => {}
            }
        }
    }
    Ok(out)
}

/// The path of a live file for messages.
#[must_use]
pub fn show(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading a large file a window at a time cuts it where the whole file is cut (SPEC §5):
    /// the same chunk list id, across several windows, with runs of zeros and of data.
    #[test]
    fn windowed_read_equals_whole_file_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut data = Vec::with_capacity(2 * WINDOW + 12_345);
        while data.len() < 2 * WINDOW + 12_345 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Stretches of zeros (holes) between stretches of data.
            if (x >> 60) < 3 {
                data.resize(data.len() + 300_000, 0);
            } else {
                data.extend_from_slice(&x.to_le_bytes());
            }
        }
        data.truncate(2 * WINDOW + 12_345);
        let abs = dir.path().join("big");
        std::fs::write(&abs, &data).unwrap();
        let got = read_content(&abs, b"config/big", 0, None).unwrap().unwrap();
        assert_eq!(got.len, data.len() as u64);
        assert_eq!(got.stored.unwrap(), content_objects(&data, None).unwrap());
    }

    /// A sparse file's holes are stepped over (SEEK_DATA), and the chunks are still those of
    /// the whole file: holes at the start, between data at odd offsets, and up to the end.
    #[test]
    fn sparse_file_chunks_equal_whole_file_chunking() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let abs = dir.path().join("sparse");
        let size = 5 * WINDOW as u64 + 777;
        let mut data = vec![0u8; usize::try_from(size).unwrap()];
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for (at, n) in [(1_000_003usize, 300_000usize), (3 * WINDOW + 5, 70_000)] {
            for b in &mut data[at..at + n] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = (x >> 24) as u8;
            }
        }
        let file = std::fs::File::create(&abs).unwrap();
        file.set_len(size).unwrap();
        for (at, n) in [(1_000_003usize, 300_000usize), (3 * WINDOW + 5, 70_000)] {
            file.write_all_at(&data[at..at + n], at as u64).unwrap();
        }
        drop(file);
        let got = read_content(&abs, b"config/sparse", 0, None)
            .unwrap()
            .unwrap();
        assert_eq!(got.len, size);
        assert_eq!(got.stored.unwrap(), content_objects(&data, None).unwrap());
    }

    /// The smallest window (one chunk) cuts as the whole file does.
    #[test]
    fn one_chunk_window_equals_whole_file_chunking() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let data: Vec<u8> = (0..3_000_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 400_000) % 2 == 1 {
                    0
                } else {
                    (x >> 24) as u8
                }
            })
            .collect();
        let abs = dir.path().join("big");
        std::fs::write(&abs, &data).unwrap();
        let mut file = std::fs::File::open(&abs).unwrap();
        let mut head = vec![0u8; 70_000];
        file.read_exact(&mut head).unwrap();
        let Ok((len, chunks)) = read_chunked(&mut file, &head, MAX_CHUNK, None) else {
            panic!("reading a plain file fails");
        };
        assert_eq!(len, data.len() as u64);
        let lens: Vec<usize> = chunks.iter().map(|c| c.len as usize).collect();
        assert_eq!(lens, chunk_lengths(&data));
    }
}
