//! A pack held in memory (SPEC §7.2, version 2, without its index), indexed from its bytes
//! with every object verified: what a backup bundle hands to a fetch, which checks the
//! structure from it and stages its entries as they are ([`IndexedPack::stage`]).

use std::collections::HashMap;

use objects_format::pack::{self as fmt, BLOCK_MAX, Member};
use objects_format::{Kind, Object, ObjectId};
use rayon::prelude::*;

use super::{Batch, decompress, decompress_into};
use crate::error::{Error, Result};

/// One object of an [`IndexedPack`].
#[derive(Debug, Clone)]
pub struct Packed {
    /// Its kind.
    pub kind: Kind,
    /// The length of its data (canonical bytes less the header): a blob's content length.
    pub data_len: u64,
    /// Its entry: the frame's start and length in the pack.
    frame: (usize, usize),
    /// Where it lies in the frame's block (`None`: an object entry).
    member: Option<Member>,
    /// Every object but a blob, decoded (trees, snapshots and chunk lists are small, and the
    /// structure is checked from them).
    decoded: Option<Object>,
}

/// A pack's bytes and every object in it, verified.
#[derive(Debug)]
pub struct IndexedPack {
    bytes: Vec<u8>,
    objects: HashMap<ObjectId, Packed>,
    /// Entries in pack order: frame (start, length), the ids in it.
    entries: Vec<((usize, usize), Vec<ObjectId>)>,
}

/// One parsed entry before it is checked: code, frame (start, length).
type RawEntry = (u8, (usize, usize));

fn verify_member(
    canonical: &[u8],
) -> std::result::Result<(ObjectId, Kind, u64, Option<Object>), String> {
    let (kind, data) =
        objects_format::encoding::split_header(canonical).map_err(|e| e.to_string())?;
    let id = ObjectId::compute(kind, canonical);
    // The id is the hash just computed; what is left to check is the format.
    let decoded = if kind == Kind::Blob {
        None
    } else {
        Some(objects_format::decode(canonical).map_err(|e| e.to_string())?)
    };
    Ok((id, kind, data.len() as u64, decoded))
}

impl IndexedPack {
    /// Indexes `bytes`: checks the magic and every entry header, decompresses every frame
    /// (blocks at most 8 MiB, objects at most 64 MiB, as SPEC §7 bounds them), verifies every
    /// object (its id is the hash of its bytes; every object but a blob is decoded with every
    /// format rule), and refuses an id given twice.
    ///
    /// # Errors
    /// A description of the first thing wrong, with its offset.
    pub fn parse(bytes: Vec<u8>) -> std::result::Result<IndexedPack, String> {
        if bytes.get(..8) != Some(&fmt::PACK_MAGIC[..]) {
            return Err("the pack does not start with SDPACK\\0\\x02".into());
        }
        let header = usize::try_from(fmt::ENTRY_HEADER).expect("5");
        let mut raw: Vec<RawEntry> = Vec::new();
        let mut at = 8usize;
        while at < bytes.len() {
            let h = bytes
                .get(at..at + header)
                .ok_or_else(|| format!("truncated entry header at {at}"))?;
            let code = h[0];
            if code != fmt::BLOCK_CODE && Kind::from_code(code).is_none() {
                return Err(format!("bad entry code {code} at {at}"));
            }
            let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
            let start = at + header;
            if start + len > bytes.len() {
                return Err(format!("truncated entry at {at}"));
            }
            raw.push((code, (start, len)));
            at = start + len;
        }
        type Found = Vec<(ObjectId, Kind, u64, Option<Member>, Option<Object>)>;
        let found: Vec<std::result::Result<Found, String>> = raw
            .par_iter()
            .map(|&(code, (start, len))| {
                let frame = &bytes[start..start + len];
                let at = start - header;
                if code == fmt::BLOCK_CODE {
                    let content = decompress_into(frame, BLOCK_MAX, Vec::new())
                        .map_err(|why| format!("block at {at}: {why}"))?;
                    let members = fmt::parse_block(&content)
                        .map_err(|why| format!("block at {at}: {why}"))?;
                    if members.is_empty() {
                        return Err(format!("block at {at} holds no object"));
                    }
                    let mut out = Vec::with_capacity(members.len());
                    for m in members {
                        let c = fmt::block_member(&content, m)
                            .map_err(|why| format!("block at {at}: {why}"))?;
                        let (id, kind, data_len, decoded) =
                            verify_member(c).map_err(|why| format!("block at {at}: {why}"))?;
                        out.push((id, kind, data_len, Some(m), decoded));
                    }
                    Ok(out)
                } else {
                    let canonical =
                        decompress(frame).map_err(|why| format!("entry at {at}: {why}"))?;
                    let (id, kind, data_len, decoded) =
                        verify_member(&canonical).map_err(|why| format!("entry at {at}: {why}"))?;
                    if kind.code() != code {
                        return Err(format!(
                            "entry at {at} says kind {code}, holds a {}",
                            kind.name()
                        ));
                    }
                    Ok(vec![(id, kind, data_len, None, decoded)])
                }
            })
            .collect();
        let mut objects = HashMap::new();
        let mut entries = Vec::with_capacity(raw.len());
        for ((_, frame), f) in raw.iter().zip(found) {
            let members = f?;
            let mut ids = Vec::with_capacity(members.len());
            for (id, kind, data_len, member, decoded) in members {
                let dup = objects.insert(
                    id,
                    Packed {
                        kind,
                        data_len,
                        frame: *frame,
                        member,
                        decoded,
                    },
                );
                if dup.is_some() {
                    return Err(format!("object {id} is in the pack twice"));
                }
                ids.push(id);
            }
            entries.push((*frame, ids));
        }
        Ok(IndexedPack {
            bytes,
            objects,
            entries,
        })
    }

    /// Objects in the pack.
    #[must_use]
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when the pack holds no object.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// What the pack says of `id`.
    #[must_use]
    pub fn get(&self, id: &ObjectId) -> Option<&Packed> {
        self.objects.get(id)
    }

    /// Every id in the pack.
    pub fn ids(&self) -> impl Iterator<Item = &ObjectId> {
        self.objects.keys()
    }

    /// The object `id`, decoded: from the index for all but blobs; a blob is decompressed
    /// again (the structure check reads only symlink targets so).
    ///
    /// # Errors
    /// [`Error::MissingObject`] when the pack lacks it; a damaged frame cannot happen (the
    /// pack was verified when parsed) but is reported as [`Error::CorruptObject`].
    pub fn read(&self, id: &ObjectId) -> Result<Object> {
        let p = self
            .objects
            .get(id)
            .ok_or(Error::MissingObject { id: *id })?;
        if let Some(o) = &p.decoded {
            return Ok(o.clone());
        }
        let corrupt = |why: String| Error::CorruptObject { id: *id, why };
        let frame = &self.bytes[p.frame.0..p.frame.0 + p.frame.1];
        let canonical = match p.member {
            None => decompress(frame).map_err(corrupt)?,
            Some(m) => {
                let content = decompress_into(frame, BLOCK_MAX, Vec::new()).map_err(corrupt)?;
                fmt::block_member(&content, m).map_err(corrupt)?.to_vec()
            }
        };
        objects_format::verify(id, &canonical).map_err(|e| corrupt(e.to_string()))
    }

    /// Stages every entry into `batch` as it is (blocks whole, objects as their frames).
    /// Returns (objects new to the store, bytes of the entries staged).
    ///
    /// # Errors
    /// The batch's errors.
    pub fn stage(&self, batch: &Batch<'_>) -> Result<(u64, u64)> {
        let (mut new, mut bytes) = (0u64, 0u64);
        for ((start, len), ids) in &self.entries {
            let frame = &self.bytes[*start..*start + *len];
            let first = &self.objects[&ids[0]];
            let added = match first.member {
                None => u64::from(batch.put_raw(first.kind, ids[0], frame)?),
                Some(_) => {
                    let members: Vec<(ObjectId, Kind, Member)> = ids
                        .iter()
                        .map(|id| {
                            let p = &self.objects[id];
                            (
                                *id,
                                p.kind,
                                p.member.expect("a block's members all have one"),
                            )
                        })
                        .collect();
                    batch.put_block_frame(frame, &members)?
                }
            };
            if added > 0 {
                new += added;
                bytes += *len as u64;
            }
        }
        Ok((new, bytes))
    }
}
