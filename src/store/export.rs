//! Exporting objects as one pack (SPEC §7.2, without its index): what a backup bundle holds,
//! and what any backend that keeps packs can take.
//!
//! A block of the store whose every member is wanted is copied as it is (its members verified
//! first), so a backup of a fresh state compresses nothing; the wanted members of other blocks,
//! and small loose objects, are gathered into new blocks; larger objects are copied as their
//! own frames. Every object is verified against its id before it is written.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;

use objects_format::pack::{self as fmt, BLOCK_MAX, BLOCK_MEMBER_MAX, BLOCK_TARGET, Member};
use objects_format::{Kind, ObjectId};
use rayon::prelude::*;

use super::{ObjectStore, ZSTD_LEVEL, compress_level, decompress, decompress_into};
use crate::error::{Error, Result};

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Objects written.
    pub objects: u64,
    /// Store blocks copied as they were.
    pub blocks_copied: u64,
    /// New blocks compressed.
    pub blocks_made: u64,
    /// Bytes written (the pack, magic included).
    pub bytes: u64,
}

/// A store block (pack, frame offset, frame length) and its wanted members.
type Blocks = HashMap<(usize, u64, u32), Vec<(ObjectId, Kind, Member)>>;

/// Where a wanted object is.
enum Place {
    /// A frame of its own: a loose file, or an object entry of a pack (pack, offset, len).
    Loose,
    Frame(usize, u64, u32),
}

/// One unit of work, in the order the bytes lie in the store.
enum Work {
    /// Members of one store block: (pack, frame offset, frame length), the wanted members.
    Block((usize, u64, u32), Vec<(ObjectId, Kind, Member)>),
    /// One object stored alone.
    Alone(ObjectId, Place),
}

/// What a unit of work yields for the output.
enum Piece {
    /// A block frame copied as it is, with its member count.
    Copied(Vec<u8>, u64),
    /// Canonical bytes to gather into new blocks.
    Members(Vec<Vec<u8>>),
    /// An object too large for a block: its frame, copied.
    Frame(Kind, Vec<u8>),
}

/// Units of work handled in parallel at a time (each holds at most one decompressed block).
fn window() -> usize {
    2 * rayon::current_num_threads().max(1)
}

fn corrupt(id: ObjectId) -> impl Fn(String) -> Error {
    move |why| Error::CorruptObject { id, why }
}

/// Checks that `canonical` is the object `id` (kind from its header).
fn check(id: ObjectId, canonical: &[u8]) -> Result<Kind> {
    let (kind, _) = objects_format::encoding::split_header(canonical)
        .map_err(|e| corrupt(id)(e.to_string()))?;
    let actual = ObjectId::compute(kind, canonical);
    if actual != id {
        return Err(corrupt(id)(format!("content hashes to {actual}")));
    }
    Ok(kind)
}

/// Writes entries to `out`, gathering loose members into blocks.
struct Out<'w> {
    out: &'w mut dyn Write,
    block: Vec<u8>,
    stats: ExportStats,
}

impl Out<'_> {
    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(Error::Io)?;
        self.stats.bytes += b.len() as u64;
        Ok(())
    }

    fn entry(&mut self, header: [u8; fmt::ENTRY_HEADER as usize], frame: &[u8]) -> Result<()> {
        self.write(&header)?;
        self.write(frame)
    }

    fn frame_len(frame: &[u8]) -> Result<u32> {
        u32::try_from(frame.len()).map_err(|_| Error::TooLarge {
            what: "a pack entry".into(),
            size: frame.len() as u64,
            limit: u64::from(u32::MAX),
        })
    }

    fn member(&mut self, canonical: &[u8]) -> Result<()> {
        if self.block.len() + 4 + canonical.len() > BLOCK_TARGET && !self.block.is_empty() {
            self.flush()?;
        }
        fmt::block_push(&mut self.block, canonical);
        self.stats.objects += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let z = compress_level(&self.block, ZSTD_LEVEL)?;
        self.entry(fmt::block_header(Self::frame_len(&z)?), &z)?;
        self.block.clear();
        self.stats.blocks_made += 1;
        Ok(())
    }

    fn piece(&mut self, p: Piece) -> Result<()> {
        match p {
            Piece::Copied(frame, n) => {
                self.entry(fmt::block_header(Self::frame_len(&frame)?), &frame)?;
                self.stats.objects += n;
                self.stats.blocks_copied += 1;
            }
            Piece::Members(ms) => {
                for c in ms {
                    self.member(&c)?;
                }
            }
            Piece::Frame(kind, frame) => {
                self.entry(fmt::entry_header(kind, Self::frame_len(&frame)?), &frame)?;
                self.stats.objects += 1;
            }
        }
        Ok(())
    }
}

impl ObjectStore {
    /// Writes `objects` (each once) as one pack into `out`: the magic, then entries (SPEC §7.2,
    /// version 2; no index). `progress` is told the objects written so far.
    ///
    /// # Errors
    /// A missing or corrupt object, I/O errors of the store or of `out`.
    pub fn export_pack(
        &self,
        objects: &[(Kind, ObjectId)],
        out: &mut dyn Write,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<ExportStats> {
        let mut w = Out {
            out,
            block: Vec::new(),
            stats: ExportStats::default(),
        };
        w.write(fmt::PACK_MAGIC)?;
        {
            let mut g = self.packs.write().expect("no panics while held");
            g.refresh(&self.packs_dir());
        }
        let packs = self.packs.read().expect("no panics while held");
        // Group by place: block members by their block, the rest alone, in store order.
        let mut blocks: Blocks = HashMap::new();
        let mut work: Vec<((usize, u64), Work)> = Vec::new();
        for &(kind, id) in objects {
            if self.object_path(&id).exists() {
                work.push(((usize::MAX, 0), Work::Alone(id, Place::Loose)));
                continue;
            }
            let loc = packs.locate(&id).ok_or(Error::MissingObject { id })?;
            match loc.member {
                Some(m) => blocks
                    .entry((loc.pack, loc.offset, loc.len))
                    .or_default()
                    .push((id, kind, m)),
                None => work.push((
                    (loc.pack, loc.offset),
                    Work::Alone(id, Place::Frame(loc.pack, loc.offset, loc.len)),
                )),
            }
        }
        work.extend(
            blocks
                .into_iter()
                .map(|(k, ms)| ((k.0, k.1), Work::Block(k, ms))),
        );
        work.sort_by_key(|w| w.0);
        let read_at = |pack: usize, offset: u64, len: u32| -> Result<Vec<u8>> {
            let p = packs.packs.get(pack).ok_or_else(|| {
                Error::Internal("a pack went away while it was being exported".into())
            })?;
            let mut buf = vec![0u8; len as usize];
            p.file.read_exact_at(&mut buf, offset).map_err(Error::at(
                "reading",
                &p.path,
                "exporting objects",
            ))?;
            Ok(buf)
        };
        let one = |w: &Work| -> Result<Piece> {
            match w {
                Work::Block((pack, offset, len), wanted) => {
                    let frame = read_at(*pack, *offset, *len)?;
                    let first = wanted[0].0;
                    let content = decompress_into(&frame, BLOCK_MAX, Vec::new())
                        .map_err(|why| corrupt(first)(format!("its block is damaged: {why}")))?;
                    let all = fmt::parse_block(&content)
                        .map_err(|why| corrupt(first)(format!("its block is damaged: {why}")))?;
                    let mut got = Vec::with_capacity(wanted.len());
                    for &(id, _, m) in wanted {
                        let c = fmt::block_member(&content, m).map_err(corrupt(id))?;
                        check(id, c)?;
                        got.push(c);
                    }
                    Ok(if all.len() == wanted.len() {
                        Piece::Copied(frame, wanted.len() as u64)
                    } else {
                        Piece::Members(got.into_iter().map(<[u8]>::to_vec).collect())
                    })
                }
                Work::Alone(id, place) => {
                    let frame = match place {
                        Place::Loose => {
                            let p = self.object_path(id);
                            fs_err::read(&p).map_err(|e| {
                                Error::file(e, "reading", p.clone(), "exporting objects")
                            })?
                        }
                        Place::Frame(pack, offset, len) => read_at(*pack, *offset, *len)?,
                    };
                    let canonical = decompress(&frame).map_err(corrupt(*id))?;
                    let kind = check(*id, &canonical)?;
                    Ok(if canonical.len() > BLOCK_MEMBER_MAX {
                        Piece::Frame(kind, frame)
                    } else {
                        Piece::Members(vec![canonical])
                    })
                }
            }
        };
        for chunk in work.chunks(window()) {
            let pieces: Vec<Result<Piece>> = chunk.par_iter().map(|(_, w)| one(w)).collect();
            for p in pieces {
                w.piece(p?)?;
            }
            progress(w.stats.objects);
        }
        w.flush()?;
        progress(w.stats.objects);
        Ok(w.stats)
    }
}
