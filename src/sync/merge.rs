//! Three-way merge of two snapshots' content, unit by unit: a unit is a session (all of
//! `state/sessions/<id>…`) or one file outside sessions. Files changed on both sides go to the
//! drivers of [`crate::merge_drivers`]; what cannot be merged is kept from the left side and
//! recorded as a [`Conflict`], with the right side's snapshot as the set-aside version.

use std::collections::{BTreeMap, BTreeSet};

use objects_format::{EntryKind, ObjectId, Snapshot};

use crate::error::Result;
use crate::merge_drivers::{FileMerge, merge_file};
use crate::snapshot::conflicts::{Conflict, ConflictKind};
use crate::snapshot::save::content_objects;
use crate::snapshot::{Flat, Leaf, session_of};
use crate::store::{Batch, ObjectStore};

/// One side of a merge: its snapshot id, the snapshot and its content.
pub type Side<'a> = (ObjectId, &'a Snapshot, &'a Flat);

/// The merged content and the conflicts it made.
#[derive(Debug)]
pub struct MergeOut {
    /// The merged content.
    pub flat: Flat,
    /// New conflicts (left's version kept).
    pub conflicts: Vec<Conflict>,
}

fn unit_of(p: &[u8]) -> Vec<u8> {
    match session_of(p) {
        Some(s) => [b"session:".as_slice(), s].concat(),
        None => [b"file:".as_slice(), p].concat(),
    }
}

/// The content grouped by unit (`session:<id>` or `file:<path>`).
#[must_use]
pub fn units(f: &Flat) -> BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Leaf>> {
    let mut m: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Leaf>> = BTreeMap::new();
    for (p, l) in &f.leaves {
        m.entry(unit_of(p)).or_default().insert(p.clone(), *l);
    }
    for d in &f.dirs {
        if session_of(d).is_some() {
            m.entry(unit_of(d)).or_default();
        }
    }
    m
}

/// A file's bytes (None for a symlink or no file).
///
/// # Errors
/// Missing or corrupt objects.
pub fn read_leaf(store: &ObjectStore, l: Option<&Leaf>) -> Result<Option<Vec<u8>>> {
    let Some(l) = l else { return Ok(None) };
    match l.kind {
        EntryKind::File => Ok(Some(store.read_blob(&l.id)?)),
        EntryKind::ChunkedFile => {
            let mut out = Vec::new();
            for c in store.read_chunk_list(&l.id)?.chunks {
                out.extend(store.read_blob(&c.id)?);
            }
            Ok(Some(out))
        }
        _ => Ok(None),
    }
}

/// Merges `left` and `right` against `base`. Units in `ambiguous` have no trustworthy base (the
/// best common ancestors disagree on them, after a criss-cross): for those, unless both sides
/// agree, nothing is taken as "unchanged" — a session or file is a conflict, a journal merges as
/// a union of lines. Deterministic: the same inputs give the same content and conflicts.
///
/// # Errors
/// Missing or corrupt objects, I/O.
pub fn merge3(
    store: &ObjectStore,
    base: &Flat,
    left: Side<'_>,
    right: Side<'_>,
    ambiguous: &BTreeSet<Vec<u8>>,
    batch: &Batch<'_>,
) -> Result<MergeOut> {
    let ub = units(base);
    let ul = units(left.2);
    let ur = units(right.2);
    let empty = BTreeMap::new();
    let keys: BTreeSet<&Vec<u8>> = ul.keys().chain(ur.keys()).chain(ub.keys()).collect();
    let mut conflicts = Vec::new();
    let mut take: Vec<BTreeMap<Vec<u8>, Leaf>> = Vec::new();
    let record = |kind, path: &str, keys: Vec<String>| {
        Conflict::new(kind, path, keys, (&left.0, left.1), (&right.0, right.1))
    };
    for k in keys {
        let b = ub.get(k).unwrap_or(&empty);
        let l = ul.get(k).unwrap_or(&empty);
        let r = ur.get(k).unwrap_or(&empty);
        let known_base = !ambiguous.contains(k);
        if r == l || (known_base && r == b) {
            take.push(l.clone());
            continue;
        }
        if known_base && l == b {
            take.push(r.clone());
            continue;
        }
        // A session whose descriptors one side upgraded (schema 1 → 2) and the other did not:
        // compared again with the version-1 ones upgraded by the same step.
        if k.starts_with(b"session:")
            && let Some(a) = super::descriptor_merge::align(store, b, l, r)?
        {
            let pick = if a.r == a.l || (known_base && a.r == a.b) {
                Some(&a.l)
            } else if known_base && a.l == a.b {
                Some(&a.r)
            } else {
                None
            };
            if let Some(unit) = pick {
                a.store(unit, batch)?;
                take.push(unit.clone());
                continue;
            }
        }
        if let Some(sid) = k.strip_prefix(b"session:") {
            conflicts.push(record(
                ConflictKind::Session,
                &format!("state/sessions/{}", String::from_utf8_lossy(sid)),
                Vec::new(),
            ));
            take.push(l.clone());
            continue;
        }
        // One file changed on both sides.
        let pb = &k[b"file:".len()..];
        let path = String::from_utf8_lossy(pb).into_owned();
        let (bl, ll, rl) = (b.values().next(), l.values().next(), r.values().next());
        let journal = pb.starts_with(b"state/journal/");
        if !known_base && !journal {
            // Without a trustworthy base a key or line removed on one side would look added on
            // the other: the file is a conflict rather than a silent guess.
            conflicts.push(record(ConflictKind::File, &path, Vec::new()));
            take.push(l.clone());
            continue;
        }
        let bl = bl.filter(|_| known_base);
        let (bb, lb, rb) = (
            read_leaf(store, bl)?,
            read_leaf(store, ll)?,
            read_leaf(store, rl)?,
        );
        let merged = match (&lb, &rb) {
            (Some(lb), Some(rb)) => merge_file(&path, bb.as_deref(), lb, rb),
            _ => FileMerge::Conflict,
        };
        let (bytes, items) = match merged {
            FileMerge::Clean(bytes) => (bytes, Vec::new()),
            FileMerge::Partial { bytes, conflicts } => (bytes, conflicts),
            FileMerge::Conflict => {
                conflicts.push(record(ConflictKind::File, &path, Vec::new()));
                take.push(l.clone());
                continue;
            }
        };
        if !items.is_empty() {
            conflicts.push(record(ConflictKind::Keys, &path, items));
        }
        let (kind, id) = content_objects(&bytes, Some(batch))?;
        // The mode (and executable flag) of the side that changed it, else the left's.
        let side = match (bl, ll) {
            (Some(b), Some(l)) if (l.flags, l.mode) == (b.flags, b.mode) => rl.or(ll),
            _ => ll,
        };
        let flags = side.map_or(0, |x| x.flags);
        let mode = side.map_or(objects_format::modes::legacy(false), |x| x.mode);
        take.push(BTreeMap::from([(
            pb.to_vec(),
            Leaf {
                kind,
                flags,
                mode,
                size: bytes.len() as u64,
                id,
            },
        )]));
    }
    let mut out = Flat::with_roots();
    for m in take {
        for (p, l) in m {
            if let Some(i) = p.iter().rposition(|&c| c == b'/') {
                out.add_dir_with_parents(&p[..i]);
            }
            out.leaves.insert(p, l);
        }
    }
    // Directories (empty ones matter: a session may be a folder) merge as a set: kept when
    // both sides have them or one side added them; one side removing an unchanged one removes it.
    for d in left.2.dirs.iter().chain(right.2.dirs.iter()) {
        let (inl, inr, inb) = (
            left.2.dirs.contains(d),
            right.2.dirs.contains(d),
            base.dirs.contains(d),
        );
        let keep = (inl && inr) || !inb;
        if keep
            && !out.leaves.contains_key(d)
            && !out
                .leaves
                .keys()
                .any(|p| d.starts_with(p) && d.get(p.len()) == Some(&b'/'))
        {
            out.dirs.insert(d.clone());
        }
    }
    Ok(MergeOut {
        flat: out,
        conflicts,
    })
}
