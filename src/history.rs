//! Revisions, history and differences.

use std::collections::{BTreeMap, BinaryHeap, HashSet};

use objects_format::{ObjectId, Snapshot};
use serde::Serialize;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::snapshot::{Flat, flatten, session_of};
use crate::store::refs::session_ref;
use crate::store::refs::{HEAD, check_name};

/// One snapshot in `log`.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Snapshot id.
    pub id: ObjectId,
    /// Creation time, ns.
    pub time_ns: i64,
    /// Device that wrote it.
    pub device: String,
    /// Message.
    pub message: String,
    /// Session scope (`save --session`).
    pub session: Option<String>,
    /// Parents.
    pub parents: Vec<ObjectId>,
    /// Files added.
    pub added: u32,
    /// Files modified.
    pub modified: u32,
    /// Files deleted.
    pub deleted: u32,
    /// Refs pointing here.
    pub refs: Vec<String>,
}

/// How one path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second.
    Added,
    /// In both, different.
    Modified,
    /// Only in the first.
    Deleted,
}

/// A difference between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// Snapshot path (lossy UTF-8).
    pub path: String,
    /// Size before.
    pub old_size: Option<u64>,
    /// Size after.
    pub new_size: Option<u64>,
}

/// Lists files that differ between two contents.
#[must_use]
pub fn diff_flat(a: &Flat, b: &Flat) -> Vec<Change> {
    let mut out = Vec::new();
    for (p, l) in &b.leaves {
        match a.leaves.get(p) {
            None => out.push(Change {
                kind: ChangeKind::Added,
                path: crate::snapshot::display(p),
                old_size: None,
                new_size: Some(l.size),
            }),
            Some(o) if o != l => out.push(Change {
                kind: ChangeKind::Modified,
                path: crate::snapshot::display(p),
                old_size: Some(o.size),
                new_size: Some(l.size),
            }),
            Some(_) => {}
        }
    }
    for (p, l) in &a.leaves {
        if !b.leaves.contains_key(p) {
            out.push(Change {
                kind: ChangeKind::Deleted,
                path: crate::snapshot::display(p),
                old_size: Some(l.size),
                new_size: None,
            });
        }
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

#[derive(PartialEq, Eq)]
struct ByTime(i64, ObjectId);
impl Ord for ByTime {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.cmp(&o.0).then(self.1.cmp(&o.1))
    }
}
impl PartialOrd for ByTime {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// Resolves a revision: `head`, a ref name (`sessions/ID`, `remotes/…`), a full or unique
/// abbreviated snapshot id (≥ 4 hex chars), each optionally followed by `~N` (N first parents back).
///
/// # Errors
/// [`Error::UnknownRevision`], [`Error::AmbiguousPrefix`].
pub fn resolve(cx: &Context, rev: &str) -> Result<ObjectId> {
    let (base, back) = match rev.rsplit_once('~') {
        Some((b, n)) => (
            b,
            if n.is_empty() {
                1
            } else {
                n.parse::<usize>()
                    .map_err(|_| Error::UnknownRevision(rev.to_owned()))?
            },
        ),
        None => (rev, 0),
    };
    let mut id = resolve_base(cx, base)?;
    for _ in 0..back {
        let s = cx.objects.read_snapshot(&id)?;
        id = *s.parents.first().ok_or_else(|| {
            Error::UnknownRevision(format!("{rev} (history has fewer than {back} parents)"))
        })?;
    }
    Ok(id)
}

fn resolve_base(cx: &Context, base: &str) -> Result<ObjectId> {
    let base = if base.eq_ignore_ascii_case("HEAD") || base.is_empty() {
        HEAD
    } else {
        base
    };
    // A full id names its snapshot without reading any ref (so a damaged ref file or
    // packed-refs cannot stand in the way of `restore <id> --to DIR`).
    if base.len() == 64
        && let Ok(id) = ObjectId::from_hex(base)
    {
        return full_id(cx, id, base);
    }
    if check_name(base).is_ok() {
        if let Some(id) = cx.refs.get(base)? {
            return Ok(id);
        }
        if let Some(id) = cx.refs.get(&session_ref(
            base.strip_prefix("sessions/").unwrap_or(base).as_bytes(),
        ))? && base.starts_with("sessions/")
        {
            return Ok(id);
        }
        if let Some(id) = cx.refs.get(&format!("remotes/{base}"))? {
            return Ok(id);
        }
    }
    if base.len() >= 4 && base.bytes().all(|b| b.is_ascii_hexdigit()) {
        let prefix = base.to_ascii_lowercase();
        let fan = cx.objects.root().join("objects").join(&prefix[..2]);
        let mut matches = Vec::new();
        // Damaged objects the prefix names: reported when no sound snapshot matches, as
        // "unknown revision" would send the user looking for a typo.
        let mut damaged: Vec<Error> = Vec::new();
        let mut consider =
            |id: ObjectId, matches: &mut Vec<ObjectId>| match cx.objects.read_snapshot(&id) {
                Ok(_) => {
                    if !matches.contains(&id) {
                        matches.push(id);
                    }
                }
                Err(e @ Error::CorruptObject { .. }) => damaged.push(e),
                Err(_) => {}
            };
        if let Ok(rd) = std::fs::read_dir(&fan) {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(n) = name.to_str() else { continue };
                if n.starts_with(&prefix[2..])
                    && let Ok(id) = ObjectId::from_hex(&format!("{}{n}", &prefix[..2]))
                {
                    // Only snapshots count as revisions.
                    consider(id, &mut matches);
                }
            }
        }
        for (_, ids) in cx.objects.pack_contents() {
            for id in ids {
                if id.to_hex().starts_with(&prefix) && !matches.contains(&id) {
                    consider(id, &mut matches);
                }
            }
        }
        if matches.is_empty() && damaged.len() == 1 {
            return Err(damaged.remove(0));
        }
        return match matches.len() {
            0 => Err(Error::UnknownRevision(base.to_owned())),
            1 => Ok(matches[0]),
            n => Err(Error::AmbiguousPrefix {
                prefix: base.to_owned(),
                count: n,
            }),
        };
    }
    Err(Error::UnknownRevision(base.to_owned()))
}

/// A full id as a revision: its snapshot, or why it cannot be one. A damaged snapshot is
/// damage (exit 3), not an unknown revision; so is an id that may be in a pack whose index
/// does not load.
fn full_id(cx: &Context, id: ObjectId, base: &str) -> Result<ObjectId> {
    match cx.objects.read_snapshot(&id) {
        Ok(_) => Ok(id),
        Err(Error::MissingObject { .. }) => {
            if let Some((idx, why)) = cx.objects.bad_pack_indexes().into_iter().next() {
                return Err(Error::corrupt_file(
                    idx,
                    format!("{why} (snapshot {id} may be in its pack)"),
                ));
            }
            if let Some(pack) = cx.packs_without_index()?.into_iter().next() {
                return Err(Error::corrupt_file(
                    pack,
                    format!("it has no index (snapshot {id} may be in it)"),
                ));
            }
            Err(Error::UnknownRevision(base.to_owned()))
        }
        // Only snapshots are revisions (a tree or blob id is not).
        Err(Error::WrongKind { .. }) => Err(Error::UnknownRevision(base.to_owned())),
        Err(e) => Err(e),
    }
}

/// History newest first, from `rev` (default: the head; with `session`, that session's ref), following all
/// parents; with `session`, only snapshots where that session changed.
///
/// # Errors
/// Unknown revision, missing/corrupt snapshots.
pub fn log(
    cx: &Context,
    rev: Option<&str>,
    limit: Option<usize>,
    session: Option<&str>,
) -> Result<Vec<LogEntry>> {
    let mut refs_at: BTreeMap<ObjectId, Vec<String>> = BTreeMap::new();
    for (name, id) in cx.refs.list("")? {
        refs_at.entry(id).or_default().push(name);
    }
    // (id, the ref it came from)
    let starts: Vec<(ObjectId, Option<String>)> = match rev {
        Some(r) => vec![(resolve(cx, r)?, None)],
        None => {
            let name = match session {
                Some(s) => session_ref(s.as_bytes()),
                None => HEAD.to_owned(),
            };
            cx.refs
                .get(&name)?
                .into_iter()
                .map(|id| (id, Some(name.clone())))
                .collect()
        }
    };
    let (shallow_ids, _) = cx.read_shallow();
    let mut heap = BinaryHeap::new();
    let mut seen = HashSet::new();
    let mut snaps: BTreeMap<ObjectId, Snapshot> = BTreeMap::new();
    for (s, name) in starts {
        if seen.insert(s) {
            let snap = match &name {
                Some(n) => cx.ref_snapshot(n, s)?,
                None => cx.objects.read_snapshot(&s)?,
            };
            heap.push(ByTime(snap.time_ns, s));
            snaps.insert(s, snap);
        }
    }
    let mut out = Vec::new();
    let limit = limit.unwrap_or(usize::MAX);
    let mut flat_cache: BTreeMap<ObjectId, Flat> = BTreeMap::new();
    while let Some(ByTime(_, id)) = heap.pop() {
        if out.len() >= limit {
            break;
        }
        let snap = snaps.remove(&id).expect("inserted with the heap entry");
        let shallow = shallow_ids.contains(&id);
        for p in snap
            .parents
            .iter()
            .filter(|p| !shallow || cx.objects.has(p))
        {
            if seen.insert(*p) {
                let ps = cx.objects.read_snapshot(p)?;
                heap.push(ByTime(ps.time_ns, *p));
                snaps.insert(*p, ps);
            }
        }
        if let Some(sess) = session {
            let digest = |st: &Context,
                          root: &ObjectId,
                          cache: &mut BTreeMap<ObjectId, Flat>|
             -> Result<Vec<(Vec<u8>, crate::snapshot::Leaf)>> {
                if !cache.contains_key(root) {
                    cache.insert(*root, flatten(&st.objects, root)?);
                }
                Ok(cache[root]
                    .leaves
                    .iter()
                    .filter(|(p, _)| session_of(p) == Some(sess.as_bytes()))
                    .map(|(p, l)| (p.clone(), *l))
                    .collect())
            };
            let mine = digest(cx, &snap.root, &mut flat_cache)?;
            let parent = match snap.parents.first() {
                Some(p) => {
                    let ps = cx.objects.read_snapshot(p)?;
                    digest(cx, &ps.root, &mut flat_cache)?
                }
                None => Vec::new(),
            };
            if mine == parent {
                continue;
            }
        }
        out.push(LogEntry {
            id,
            time_ns: snap.time_ns,
            device: snap.device,
            message: snap.message,
            session: snap.session,
            parents: snap.parents,
            added: snap.summary.added,
            modified: snap.summary.modified,
            deleted: snap.summary.deleted,
            refs: refs_at.get(&id).cloned().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Differences between two revisions.
///
/// # Errors
/// Unknown revisions, missing/corrupt objects.
pub fn diff(cx: &Context, a: &str, b: &str) -> Result<Vec<Change>> {
    let fa = flatten(
        &cx.objects,
        &cx.objects.read_snapshot(&resolve(cx, a)?)?.root,
    )?;
    let fb = flatten(
        &cx.objects,
        &cx.objects.read_snapshot(&resolve(cx, b)?)?.root,
    )?;
    Ok(diff_flat(&fa, &fb))
}

/// A snapshot and its changes relative to its first parent.
///
/// # Errors
/// Unknown revision, missing/corrupt objects.
pub fn show(cx: &Context, rev: &str) -> Result<(ObjectId, Snapshot, Vec<Change>)> {
    let id = resolve(cx, rev)?;
    let s = cx.objects.read_snapshot(&id)?;
    let now = flatten(&cx.objects, &s.root)?;
    let before = match s.parents.first() {
        Some(p) => flatten(&cx.objects, &cx.objects.read_snapshot(p)?.root)?,
        None => Flat::with_roots(),
    };
    Ok((id, s, diff_flat(&before, &now)))
}
