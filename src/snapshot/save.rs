//! Reading the live dirs: walk, stat-cache lookup, parallel hash + compress.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use objects_format::chunk::{CHUNK_THRESHOLD, chunk_lengths};
use objects_format::encoding::encode_blob;
use objects_format::{ChunkList, ChunkRef, EntryKind, FLAG_EXECUTABLE, Kind, Object, ObjectId};
use rayon::prelude::*;

use super::exclude::Frames;
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
    /// Snapshot path.
    pub rel: Vec<u8>,
    /// Filesystem path.
    pub abs: std::path::PathBuf,
    /// Metadata (not following symlinks).
    pub meta: std::fs::Metadata,
}

/// Everything the walk found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Regular files and symlinks.
    pub files: Vec<LiveFile>,
    /// Directories (snapshot paths).
    pub dirs: Vec<Vec<u8>>,
    /// Entries the snapshot policy leaves out (too deep).
    pub skipped: Vec<Skipped>,
    /// Entries the user's excludes leave out (snapshot paths; a folder ends with `/`).
    pub excluded: Vec<Vec<u8>>,
}

/// Walks the live roots under `layout`, keeping paths for which `keep` is true.
///
/// # Errors
/// I/O errors other than a missing root (a missing root is an empty folder).
pub fn scan(layout: &Layout, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<Scan> {
    let mut out = Scan::default();
    for root in ROOTS {
        let base = layout.abs(root.as_bytes());
        if !base.is_dir() {
            continue;
        }
        let walker = walkdir::WalkDir::new(&base)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1);
        let mut frames = Frames::default();
        if layout.excludes.is_some() {
            frames.enter(&base, 0)?;
        }
        let mut it = walker.into_iter();
        while let Some(entry) = it.next() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    if e.io_error()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
                    {
                        continue; // vanished while walking
                    }
                    return Err(Error::Io(e.into()));
                }
            };
            let name = entry.file_name().as_bytes();
            if is_tmp_name(name) {
                continue;
            }
            let rel_fs = entry
                .path()
                .strip_prefix(&base)
                .expect("walk stays under base");
            let mut rel = root.as_bytes().to_vec();
            rel.push(b'/');
            rel.extend_from_slice(rel_fs.as_os_str().as_bytes());
            if !keep(&rel) {
                if entry.file_type().is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
            if let Some(why) = policy::depth_verdict(&rel) {
                if entry.file_type().is_dir() {
                    it.skip_current_dir();
                }
                out.skipped.push(policy::skipped(&rel, why));
                continue;
            }
            let ft = entry.file_type();
            if let Some(ex) = &layout.excludes {
                frames.leave_to(entry.depth());
                if frames.excluded(ex, entry.path(), &rel, ft.is_dir()) {
                    if ft.is_dir() {
                        it.skip_current_dir();
                        rel.push(b'/');
                    }
                    out.excluded.push(rel);
                    continue;
                }
                if ft.is_dir() {
                    frames.enter(entry.path(), entry.depth())?;
                }
            }
            if ft.is_dir() {
                out.dirs.push(rel);
            } else if ft.is_file() || ft.is_symlink() {
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e)
                        if e.io_error()
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(Error::Io(e.into())),
                };
                out.files.push(LiveFile {
                    rel,
                    abs: entry.path().to_path_buf(),
                    meta,
                });
            }
            // sockets, fifos, devices: not state; skipped.
        }
    }
    Ok(out)
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
        .map(|&(off, len)| -> Result<ChunkRef> {
            let c = encode_blob(&data[off..off + len]);
            let id = ObjectId::compute(Kind::Blob, &c);
            if let Some(b) = batch {
                b.put_canonical(Kind::Blob, id, &c)?;
            }
            Ok(ChunkRef {
                id,
                len: u32::try_from(len).expect("chunks are at most MAX_CHUNK"),
            })
        })
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
pub fn hash_file(f: &LiveFile, cache: &StatCache, batch: Option<&Batch<'_>>) -> Result<Hashed> {
    use std::os::unix::fs::PermissionsExt;
    if f.meta.file_type().is_symlink() {
        let target = match std::fs::read_link(&f.abs) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Hashed::Gone),
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading link {})", f.abs.display()),
                )));
            }
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
                size: bytes.len() as u64,
                id,
            },
            fresh: None,
            cached: false,
        });
    }
    let flags = if f.meta.permissions().mode() & 0o100 != 0 {
        FLAG_EXECUTABLE
    } else {
        0
    };
    let stat = Stat::of(&f.meta);
    if let Some((kind, id)) = cache.lookup(&f.rel, &stat) {
        // Trust the cache only while the object is still stored (gc or a lost object would
        // otherwise make a snapshot point at nothing).
        if batch.is_none_or(|b| b.contains(&id)) {
            return Ok(Hashed::Ok {
                leaf: Leaf {
                    kind,
                    flags,
                    size: stat.size,
                    id,
                },
                fresh: None,
                cached: true,
            });
        }
    }
    let hashed_at = crate::store::now_ns();
    let data = match std::fs::read(&f.abs) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Hashed::Gone),
        Err(e) => {
            return Err(Error::Io(std::io::Error::new(
                e.kind(),
                format!("{e} (reading {})", f.abs.display()),
            )));
        }
    };
    if is_descriptor(&f.rel)
        && let Err(why) = validate_descriptor(&data)
    {
        return Ok(Hashed::CorruptDescriptor(why));
    }
    // The file may have changed between stat and read; stat again so the cache never pairs an
    // old stat with new content.
    let stat_after = std::fs::symlink_metadata(&f.abs)
        .map(|m| Stat::of(&m))
        .unwrap_or(stat);
    let (kind, id) = content_objects(&data, batch)?;
    let fresh = if stat_after == stat && stat.size == data.len() as u64 {
        Some((stat, hashed_at))
    } else {
        None
    };
    Ok(Hashed::Ok {
        leaf: Leaf {
            kind,
            flags,
            size: data.len() as u64,
            id,
        },
        fresh,
        cached: false,
    })
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
    /// Files whose id came from the stat cache (not read).
    pub vouched: std::collections::BTreeSet<Vec<u8>>,
    /// Entries the user's excludes leave out (snapshot paths; a folder ends with `/`).
    pub excluded: Vec<Vec<u8>>,
}

/// Reads the live state under `layout` into a [`Flat`], storing new objects in `batch` when given
/// and updating `cache`; reports the files read to `progress` (phase `save`).
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
    let scan = scan(layout, keep)?;
    let results: Vec<Result<Hashed>> = {
        let cache_ref = &*cache;
        let phase = Phase::begin(
            progress,
            "save",
            Some(scan.files.len() as u64),
            Some(scan.files.iter().map(|f| f.meta.len()).sum()),
        );
        scan.files
            .par_iter()
            .map(|f| {
                let r = hash_file(f, cache_ref, batch);
                phase.advance(1, f.meta.len());
                r
            })
            .collect()
    };
    let mut out = LiveState {
        flat: Flat::with_roots(),
        corrupt: Vec::new(),
        skipped: scan.skipped,
        vouched: std::collections::BTreeSet::new(),
        excluded: scan.excluded,
    };
    for d in scan.dirs {
        out.flat.dirs.insert(d);
    }
    for (f, r) in scan.files.into_iter().zip(results) {
        match r? {
            Hashed::Ok {
                leaf,
                fresh,
                cached,
            } => {
                if let Some((stat, at)) = fresh {
                    cache.insert(f.rel.clone(), stat, leaf.kind, leaf.id, at);
                }
                if cached {
                    out.vouched.insert(f.rel.clone());
                }
                out.flat.leaves.insert(f.rel, leaf);
            }
            Hashed::CorruptDescriptor(why) => out.corrupt.push((f.rel, why)),
            Hashed::Skipped(why) => out.skipped.push(policy::skipped(&f.rel, why)),
            Hashed::Gone => {}
        }
    }
    Ok(out)
}

/// The path of a live file for messages.
#[must_use]
pub fn show(p: &Path) -> String {
    p.display().to_string()
}
