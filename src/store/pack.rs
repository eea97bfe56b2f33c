//! Pack files: many objects in one file, written when a batch is large (a first save, a sync
//! that brings many objects), so that one fsync covers thousands of objects.
//!
//! `packs/pack-<hex>.pack` and `packs/pack-<hex>.idx`, laid out as in
//! [`objects_format::pack`] (SPEC §7.2): object entries and blocks of many small objects
//! compressed together. `<hex>` is the BLAKE3 hash of the whole pack file. The index is written
//! and renamed into place after the pack: a pack is visible exactly when its index is.
//!
//! Reading a block member decompresses the whole block; the last few decompressed blocks are
//! kept ([`BlockCache`]) so that reading a file's chunks, or a restore's files, in the order they
//! were written decompresses each block once.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fs_err as fs;
use objects_format::{Kind, ObjectId};

use crate::error::{Error, Result};

pub use objects_format::pack::{ENTRY_HEADER, IDX_MAGIC, Member, PACK_MAGIC};

/// Where an object lives in a pack.
#[derive(Debug, Clone, Copy)]
pub struct Loc {
    /// Index into [`PackSet::packs`].
    pub pack: usize,
    /// Kind recorded in the index.
    pub kind: Kind,
    /// Offset of the zstd frame.
    pub offset: u64,
    /// Frame length.
    pub len: u32,
    /// Where the object lies in the frame's block (`None`: the frame is the object alone).
    pub member: Option<Member>,
}

/// What a pack holds for one object.
#[derive(Debug)]
pub enum Stored {
    /// One zstd frame of the object alone.
    Frame(Vec<u8>),
    /// A decompressed block and the object's place in it (not yet checked against the block).
    InBlock(Arc<Vec<u8>>, Member),
}

/// How many decompressed blocks a store keeps (each at most `BLOCK_MAX`, usually ~4 MiB): two
/// per worker thread (the one it reads and the one it reads next), at least 4, at most 16.
pub(crate) fn block_cache_len() -> usize {
    (2 * rayon::current_num_threads()).clamp(4, 16)
}

/// How far past the member it wants a first read of a block decompresses (see
/// [`PackSet::read`]).
const PREFIX_SLACK: usize = 128 << 10;

/// A block's key: (index into [`PackSet::packs`], frame offset).
type BlockKey = (usize, u64);

/// The most recently used decompressed blocks, least recent first, and buffers of evicted
/// blocks kept for the next decompression (a restore decompresses hundreds of ~4 MiB blocks;
/// a fresh allocation of that size each time fragmented the heap: peak RSS grew with the size
/// of the restore).
#[derive(Debug, Default)]
pub struct BlockCache {
    blocks: Vec<(BlockKey, Arc<Vec<u8>>)>,
    spare: Vec<Vec<u8>>,
}

impl BlockCache {
    /// The block, or the first part of it that was decompressed, when it holds the first
    /// `need` bytes; `Err(true)` when only a shorter part of it is kept.
    fn get(&mut self, key: BlockKey, need: usize) -> std::result::Result<Arc<Vec<u8>>, bool> {
        let i = self
            .blocks
            .iter()
            .position(|(k, _)| *k == key)
            .ok_or(false)?;
        if self.blocks[i].1.len() < need {
            return Err(true);
        }
        let hit = self.blocks.remove(i);
        let block = hit.1.clone();
        self.blocks.push(hit);
        Ok(block)
    }

    fn put(&mut self, key: BlockKey, block: Arc<Vec<u8>>) {
        if let Some(i) = self.blocks.iter().position(|(k, _)| *k == key) {
            // A longer part of the block (another thread's, or the whole of a block whose
            // start was kept) replaces a shorter one.
            if self.blocks[i].1.len() < block.len() {
                self.blocks[i].1 = block;
            }
            return;
        }
        if self.blocks.len() >= block_cache_len() {
            let (_, old) = self.blocks.remove(0);
            // Still in a reader's hands: let it go; else keep the allocation.
            if let Ok(buf) = Arc::try_unwrap(old)
                && self.spare.len() < 2
            {
                self.spare.push(buf);
            }
        }
        self.blocks.push((key, block));
    }

    /// Lengths of the kept blocks (or kept first parts), least recently used first.
    #[cfg(test)]
    pub(crate) fn kept_lens(&self) -> Vec<usize> {
        self.blocks.iter().map(|(_, b)| b.len()).collect()
    }

    fn take_spare(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }
}

/// One loaded pack.
#[derive(Debug)]
pub struct Pack {
    /// `pack-<hex>` name.
    pub name: String,
    /// Open pack file.
    pub file: Arc<std::fs::File>,
    /// Path of the pack file.
    pub path: PathBuf,
    /// Its checked index, searched in place.
    pub index: objects_format::pack::Index,
}

/// All packs of a store, loaded from their indexes.
#[derive(Debug, Default)]
pub struct PackSet {
    /// Loaded packs (an object in two packs is read from the first).
    pub packs: Vec<Pack>,
    /// mtime of `packs/` (None: absent) when last scanned, and when that scan began.
    pub scanned: Option<(Option<std::time::SystemTime>, std::time::SystemTime)>,
    /// Index files that failed to load (reported by check).
    pub bad_indexes: Vec<(PathBuf, String)>,
    /// Recently decompressed blocks.
    pub blocks: Mutex<BlockCache>,
}

impl PackSet {
    /// Loads indexes not yet loaded if `packs/` changed since the last scan.
    pub fn refresh(&mut self, dir: &Path) {
        let now = std::time::SystemTime::now();
        let mtime = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        // An unchanged mtime proves nothing changed only if the last scan began well after it:
        // two publications within one timestamp tick leave it the same, so a scan that may have
        // run in the tick of the last change must be repeated. (A save asks about every new
        // object; rescanning each time cost three syscalls per object under the write lock.)
        if let Some((seen, scan)) = self.scanned
            && seen == mtime
            && mtime.is_none_or(|m| {
                scan.duration_since(m)
                    .is_ok_and(|d| d > std::time::Duration::from_secs(2))
            })
        {
            return;
        }
        self.scanned = Some((mtime, now));
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut names: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        // A pack another process removed (gc, repack) must leave the index too, or this process
        // would take its objects for present and never write them again.
        let gone = self.packs.iter().any(|p| {
            !names
                .iter()
                .any(|n| n.strip_suffix(".idx") == Some(p.name.as_str()))
        });
        if gone {
            let keep = self.scanned;
            *self = PackSet::default();
            self.scanned = keep;
        }
        names.sort();
        for n in names {
            let Some(stem) = n.strip_suffix(".idx") else {
                continue;
            };
            if self.packs.iter().any(|p| p.name == stem)
                || self.bad_indexes.iter().any(|(p, _)| p.ends_with(&n))
            {
                continue;
            }
            let idx_path = dir.join(&n);
            let pack_path = dir.join(format!("{stem}.pack"));
            match load(&idx_path, &pack_path) {
                Ok((file, index)) => {
                    self.packs.push(Pack {
                        name: stem.to_owned(),
                        file: Arc::new(file),
                        path: pack_path,
                        index,
                    });
                }
                Err(why) => self.bad_indexes.push((idx_path, why)),
            }
        }
    }

    /// Where the loaded packs place `id` (the first pack that has it).
    #[must_use]
    pub fn locate(&self, id: &ObjectId) -> Option<Loc> {
        self.packs.iter().enumerate().find_map(|(pack, p)| {
            p.index.find(id).map(|e| Loc {
                pack,
                kind: e.kind,
                offset: e.offset,
                len: e.len,
                member: e.member,
            })
        })
    }

    /// True when a loaded pack has `id`.
    #[must_use]
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.packs.iter().any(|p| p.index.find(id).is_some())
    }

    /// Reads what a pack holds for an object: its own frame, or its block (decompressed, or
    /// from the cache).
    ///
    /// # Errors
    /// I/O errors; a block that does not decompress (kind `InvalidData`).
    pub fn read(&self, loc: &Loc) -> std::io::Result<Stored> {
        let key = (loc.pack, loc.offset);
        let mut kept_part = false;
        if let Some(member) = loc.member {
            let need = member.start as usize + member.size as usize;
            match self
                .blocks
                .lock()
                .expect("no panics while held")
                .get(key, need)
            {
                Ok(block) => return Ok(Stored::InBlock(block, member)),
                Err(part) => kept_part = part,
            }
        }
        let pack = self.packs.get(loc.pack).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "pack no longer loaded")
        })?;
        let mut buf = vec![0u8; loc.len as usize];
        pack.file.read_exact_at(&mut buf, loc.offset)?;
        let Some(member) = loc.member else {
            return Ok(Stored::Frame(buf));
        };
        let spare = self
            .blocks
            .lock()
            .expect("no panics while held")
            .take_spare();
        let invalid = |why| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        // The first read of a block decompresses it only as far as this member and a little
        // beyond (the neighbours a reader of one file or one session asks for next); a read past
        // that part decompresses the whole block, once.
        let want = if kept_part {
            usize::MAX
        } else {
            member.start as usize + member.size as usize + PREFIX_SLACK
        };
        let (block, complete) = crate::store::decompress_prefix_into(
            &buf,
            objects_format::pack::BLOCK_MAX,
            want,
            spare,
        )
        .map_err(invalid)?;
        // What was decompressed must split into members (SPEC §7.2), not only the bytes this
        // index entry points at: the whole block, or its first part up to the last member
        // wholly inside it.
        objects_format::pack::parse_block_prefix(&block, complete).map_err(invalid)?;
        let block = Arc::new(block);
        self.blocks
            .lock()
            .expect("no panics while held")
            .put(key, block.clone());
        Ok(Stored::InBlock(block, member))
    }

    /// Forgets a pack (after gc deleted it): rebuilds the index without it.
    pub fn forget_all(&mut self) {
        *self = PackSet::default();
    }
}

fn load(
    idx_path: &Path,
    pack_path: &Path,
) -> std::result::Result<(std::fs::File, objects_format::pack::Index), String> {
    let b = std::fs::read(idx_path).map_err(|e| e.to_string())?;
    let file =
        std::fs::File::open(pack_path).map_err(|e| format!("{e} ({})", pack_path.display()))?;
    let pack_len = file.metadata().map_err(|e| e.to_string())?.len();
    let index = objects_format::pack::Index::parse(b, pack_len)?;
    Ok((file, index))
}

/// Hashes a file (the pack name).
///
/// # Errors
/// I/O errors.
pub fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(fs::File::open(path)?).map_err(Error::Io)?;
    Ok(h.finalize())
}

/// What [`scan`] found in a pack file.
#[derive(Debug, Default)]
pub struct Scan {
    /// Pack version from the magic (`None` when the magic is damaged).
    pub version: Option<u8>,
    /// Every object read and verified, with its place (as an index would record it).
    pub entries: Vec<objects_format::pack::IndexEntry>,
    /// Byte ranges that could not be read, with why.
    pub damaged: Vec<String>,
}

/// Largest entry frame [`scan`] reads: an object entry holds one stored object (at most
/// `MAX_OBJECT_SIZE` decompressed; zstd never expands data by more than a small margin).
const SCAN_FRAME_MAX: u64 = objects_format::MAX_OBJECT_SIZE as u64 + (1 << 20);

/// Walks a pack from its bytes alone (SPEC §7.2: "a pack can be indexed again from its bytes
/// alone"), calling `each` with every object whose canonical bytes hash to their id. A damaged
/// entry is skipped: the walk looks for the next entry header followed by a zstd frame, so the
/// objects after the damage are found too. Used to index a pack again and to salvage the sound
/// objects of a damaged one.
///
/// # Errors
/// I/O errors, or an error from `each`.
pub fn scan(
    path: &Path,
    mut each: impl FnMut(&objects_format::pack::IndexEntry, &[u8]) -> Result<()>,
) -> Result<Scan> {
    use objects_format::pack::{BLOCK_CODE, BLOCK_MAX, IndexEntry, PACK_MAGIC_V1};
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut out = Scan::default();
    let mut magic = [0u8; 8];
    if len < 8 || file.file().read_exact_at(&mut magic, 0).is_err() {
        out.damaged.push("shorter than the pack magic".into());
        return Ok(out);
    }
    out.version = match &magic {
        m if m == PACK_MAGIC => Some(2),
        m if m == PACK_MAGIC_V1 => Some(1),
        _ => {
            out.damaged.push("bytes 0..8: not a pack magic".into());
            None
        }
    };
    let header_ok = |h: &[u8; 9], at: u64| -> Option<u32> {
        let code = h[0];
        let n = u32::from_le_bytes(h[1..5].try_into().expect("4 bytes"));
        let known = (1..=4).contains(&code) || code == BLOCK_CODE;
        (known
            && n >= 4
            && u64::from(n) <= SCAN_FRAME_MAX
            && at + ENTRY_HEADER + u64::from(n) <= len
            && h[5..9] == ZSTD_MAGIC)
            .then_some(n)
    };
    let read_header = |at: u64| -> Option<[u8; 9]> {
        let mut h = [0u8; 9];
        (at + 9 <= len && file.file().read_exact_at(&mut h, at).is_ok()).then_some(h)
    };
    // Resynchronise after damage: the next offset from `from` holding a plausible entry header
    // and the start of a zstd frame, read a window at a time.
    let find_next = |from: u64| -> u64 {
        const STEP: u64 = 1 << 20;
        let mut base = from;
        while base < len {
            let end = (base + STEP + 8).min(len);
            let mut buf = vec![0u8; usize::try_from(end - base).expect("at most a window")];
            if file.file().read_exact_at(&mut buf, base).is_err() {
                return len;
            }
            for (i, w) in buf.windows(9).enumerate() {
                let h: [u8; 9] = w.try_into().expect("9 bytes");
                if header_ok(&h, base + i as u64).is_some() {
                    return base + i as u64;
                }
            }
            base += STEP;
        }
        len
    };
    let mut at = 8u64;
    while at < len {
        let entry = read_header(at).and_then(|h| header_ok(&h, at).map(|n| (h[0], n)));
        let Some((code, n)) = entry else {
            let from = at;
            at = find_next(at + 1);
            out.damaged
                .push(format!("bytes {from}..{at}: not a pack entry"));
            continue;
        };
        let offset = at + ENTRY_HEADER;
        let mut frame = vec![0u8; n as usize];
        file.file().read_exact_at(&mut frame, offset)?;
        let next = offset + u64::from(n);
        let mut found = Vec::new();
        let res: std::result::Result<(), String> = (|| {
            if code == BLOCK_CODE {
                let block = crate::store::decompress_bounded(&frame, BLOCK_MAX)?;
                for m in objects_format::pack::parse_block(&block)? {
                    let c = objects_format::pack::block_member(&block, m)?;
                    let (kind, _) =
                        objects_format::encoding::split_header(c).map_err(|e| e.to_string())?;
                    found.push((
                        IndexEntry {
                            id: ObjectId::compute(kind, c),
                            kind,
                            offset,
                            len: n,
                            member: Some(m),
                        },
                        c.to_vec(),
                    ));
                }
            } else {
                let c = crate::store::decompress(&frame)?;
                let (kind, _) =
                    objects_format::encoding::split_header(&c).map_err(|e| e.to_string())?;
                if kind.code() != code {
                    return Err(format!(
                        "entry says kind {code}, object is a {}",
                        kind.name()
                    ));
                }
                found.push((
                    IndexEntry {
                        id: ObjectId::compute(kind, &c),
                        kind,
                        offset,
                        len: n,
                        member: None,
                    },
                    c,
                ));
            }
            Ok(())
        })();
        match res {
            Ok(()) => {
                for (e, c) in found {
                    each(&e, &c)?;
                    out.entries.push(e);
                }
                at = next;
            }
            Err(why) => {
                out.damaged.push(format!("entry at byte {at}: {why}"));
                // The length may be the damaged part: look for the next entry from here.
                at = find_next(at + 1);
            }
        }
    }
    out.entries.sort_by_key(|e| e.id);
    out.entries.dedup_by_key(|e| e.id);
    Ok(out)
}
