//! `save`: the live files hashed into objects, a snapshot written and `head` (and the
//! changed sessions' refs) moved in one transaction.

use std::collections::BTreeMap;

use objects_format::{ChangeSummary, Object, ObjectId, Snapshot};

use super::Scope;
use super::descriptors::{Quarantined, is_young, quarantine};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::snapshot::Leaf;
use crate::snapshot::conflicts;
use crate::snapshot::save::read_live;
use crate::snapshot::{
    Flat, TreeDiff, diff_to, flatten_snapshot, in_roots, same_modes, session_of, with_modes,
    write_trees, write_trees_recording,
};
use crate::store::refs::session_ref;
use crate::store::refs::{HEAD, RefTxn};
use crate::store::statcache::StatCache;
use crate::store::{Batch, BatchStats, now_ns};

/// What to save.
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Snapshot message.
    pub message: String,
    /// Only this session (the rest is taken from the current head).
    pub session: Option<String>,
    /// Save even when a root (`config/`, `state/sessions/`, `state/journal/`) that held files in
    /// the head is now missing or empty. Without it such a save is refused: a typo'd or
    /// unmounted `--config-dir` must not become a snapshot that deletes everything.
    pub allow_empty: bool,
    /// Open conflicts (by id) this save resolves: they are not carried into the new snapshot.
    pub resolved: Vec<String>,
}

/// What a save did.
#[derive(Debug, Clone)]
pub struct SaveOutcome {
    /// The head after the save (the new snapshot, or the unchanged head).
    pub id: Option<ObjectId>,
    /// False when nothing changed and no snapshot was written.
    pub created: bool,
    /// Files added/modified/deleted relative to the previous head.
    pub summary: ChangeSummary,
    /// Sessions whose ref moved.
    pub sessions: Vec<String>,
    /// New objects written.
    pub objects_written: u64,
    /// Compressed bytes written.
    pub bytes_written: u64,
    /// Corrupt descriptors found and handled.
    pub quarantined: Vec<Quarantined>,
    /// Things a person should know (e.g. the head's trees could not be read, so every file
    /// was recorded as new).
    pub warnings: Vec<String>,
}

fn sessions_digest(flat: &Flat) -> BTreeMap<Vec<u8>, blake3::Hash> {
    let mut hashers: BTreeMap<Vec<u8>, blake3::Hasher> = BTreeMap::new();
    for (p, l) in &flat.leaves {
        if let Some(s) = session_of(p) {
            let h = hashers.entry(s.to_vec()).or_default();
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
            h.update(&[l.kind.code(), l.flags]);
            h.update(&l.mode.to_le_bytes());
            h.update(&l.id.0);
        }
    }
    for d in &flat.dirs {
        if let Some(s) = session_of(d) {
            let h = hashers.entry(s.to_vec()).or_default();
            h.update(b"dir");
            h.update(d);
        }
    }
    hashers
        .into_iter()
        .map(|(k, h)| (k, h.finalize()))
        .collect()
}

/// The current head, its snapshot and its content.
pub(crate) fn head_state(cx: &Context) -> Result<Option<(ObjectId, Snapshot)>> {
    match cx.refs.get(HEAD)? {
        None => Ok(None),
        Some(id) => Ok(Some((id, cx.ref_snapshot(HEAD, id)?))),
    }
}

/// Snapshots the live state (see [`SaveOptions`]).
///
/// # Errors
/// I/O, lock or store errors. On error no ref moves.
pub fn save(cx: &Context, opts: &SaveOptions) -> Result<SaveOutcome> {
    let _lock = cx.lock("state save")?;
    save_locked(cx, opts)
}

pub(crate) fn save_locked(cx: &Context, opts: &SaveOptions) -> Result<SaveOutcome> {
    let mut cache = cx.load_statcache();
    let batch = cx.objects.batch()?;
    let layout = cx.layout();
    let scope = Scope::of(opts.session.as_deref(), None);
    let sel = |p: &[u8]| scope.contains(p);
    let live = read_live(&layout, &sel, &mut cache, Some(&batch), &*cx.progress)?;
    cx.note_skipped("not saved", &live.skipped);
    // Read twice and changed both times: what was read last is saved, and the user told.
    let mut warnings: Vec<String> = live
        .changed
        .iter()
        .map(|p| format!("file changed while it was saved: {}", p.display()))
        .collect();
    let head = head_state(cx)?;
    let mut new_flat = live.flat;
    let mut quarantined = Vec::new();
    // The head's file list, read once and only when needed (a no-change save never needs
    // it), and lent rather than copied: at 100 000 files a copy was 20 MB.
    let head_flat = HeadFlat::new(head.as_ref().map(|h| &h.1));
    if !live.corrupt.is_empty() {
        let hf = head_flat.get(cx)?;
        for (rel, why) in live.corrupt {
            // Possibly mid-write by the terminal: snapshot the last good version but leave
            // the live file alone; a later command judges it once it has settled.
            if !is_young(&layout.abs(&rel)) {
                quarantined.push(quarantine(
                    cx,
                    &layout,
                    &rel,
                    &why,
                    hf.leaves.get(&rel).copied(),
                    &mut cache,
                )?);
            }
            if let Some(l) = hf.leaves.get(&rel) {
                new_flat.leaves.insert(rel, *l);
            }
        }
    }
    if let Some(session) = &opts.session {
        // Everything outside the session comes from the head.
        let hf = head_flat.get(cx)?;
        if !new_flat
            .leaves
            .keys()
            .any(|p| session_of(p) == Some(session.as_bytes()))
            && !hf
                .leaves
                .keys()
                .any(|p| session_of(p) == Some(session.as_bytes()))
        {
            return Err(Error::UnknownSession(
                session.clone(),
                "the live state or the head".into(),
            ));
        }
        let only = Scope::Session(session.clone());
        let keep = |p: &[u8]| only.contains(p);
        let mut merged = hf.filtered(|p| !keep(p));
        merged.leaves.extend(new_flat.leaves);
        merged.dirs.extend(new_flat.dirs);
        new_flat = merged;
    }
    if !opts.allow_empty && opts.session.is_none() {
        refuse_emptied_roots(cx, &new_flat, &head_flat)?;
    }
    let extra = conflicts::carried(head.as_ref().map(|h| &h.1), &opts.resolved)?;
    let (root, tree_ids) = write_trees_recording(&new_flat, Some(&batch))?;
    // Unchanged: the same files, the same modes and the same open conflicts.
    if let Some((hid, hs)) = &head
        && hs.root == root
        && same_modes(hs, &new_flat)
        && conflicts::carried(Some(hs), &[])? == extra
    {
        batch.commit()?;
        cache.retain(in_roots);
        let cache_path = cx.statcache_path();
        cache
            .save(&cache_path)
            .map_err(Error::at("writing", &cache_path, "save"))?;
        return Ok(SaveOutcome {
            id: Some(*hid),
            created: false,
            summary: ChangeSummary::default(),
            sessions: Vec::new(),
            objects_written: 0,
            bytes_written: 0,
            quarantined,
            warnings,
        });
    }
    // What changed, from the trees whose ids differ: the head is not flattened (at 100 000
    // files its file list was ~17 MB) unless the modes differ or a flat was needed above.
    let diffed = match &head {
        Some((_, hs)) if head_flat.flat.get().is_none() => {
            match diff_to(&cx.objects, hs, &new_flat, &tree_ids) {
                Ok(d) => d,
                Err(e) if e.is_damage() => None,
                Err(e) => return Err(e),
            }
        }
        _ => None,
    };
    drop(tree_ids);
    let diff = match diffed {
        Some(d) => d,
        None => match head_flat.get(cx) {
            Ok(base) => TreeDiff::between(base, &new_flat),
            // The head's trees are damaged (docs/safety.md, "Damaged store files"): the live
            // state is still recorded, every file as new, so the save stores again whatever
            // the live files still hold instead of refusing until the objects come back.
            Err(e) if e.is_damage() => {
                warnings.push(format!(
                    "the head snapshot's file list cannot be read ({e}); this snapshot records \
                     every file as new"
                ));
                TreeDiff::between(&Flat::with_roots(), &new_flat)
            }
            Err(e) => return Err(e),
        },
    };
    let (id, stats, sessions) = commit_diffed(
        cx,
        batch,
        &new_flat,
        &diff,
        head.as_ref().map(|h| h.0),
        root,
        &opts.message,
        opts.session.clone(),
        extra,
    )?;
    cache.retain(in_roots);
    let cache_path = cx.statcache_path();
    cache
        .save(&cache_path)
        .map_err(Error::at("writing", &cache_path, "save"))?;
    Ok(SaveOutcome {
        id: Some(id),
        created: true,
        summary: diff.summary,
        sessions,
        objects_written: stats.objects,
        bytes_written: stats.bytes,
        quarantined,
        warnings,
    })
}

/// The head snapshot's file list, flattened on first use and then lent.
struct HeadFlat<'a> {
    head: Option<&'a Snapshot>,
    flat: std::cell::OnceCell<Flat>,
}

impl<'a> HeadFlat<'a> {
    fn new(head: Option<&'a Snapshot>) -> Self {
        HeadFlat {
            head,
            flat: std::cell::OnceCell::new(),
        }
    }

    /// The head's files (none without a head).
    fn get(&self, cx: &Context) -> Result<&Flat> {
        if self.flat.get().is_none() {
            let flat = match self.head {
                Some(s) => flatten_snapshot(&cx.objects, s)?,
                None => Flat::with_roots(),
            };
            let _ = self.flat.set(flat);
        }
        Ok(self.flat.get().expect("just set"))
    }
}

/// Refuses a save that would record a root (`config/`, `state/sessions/`, `state/journal/`)
/// as emptied when the head has files there: the sign of a wrong `--config-dir`, an
/// unmounted disk or a folder replaced by a file. The head is read only when a root is empty.
fn refuse_emptied_roots(cx: &Context, new_flat: &Flat, head_flat: &HeadFlat<'_>) -> Result<()> {
    // A file below `r/`: the first key from `r/` on (one lookup, not a scan of every path).
    let has_under = |flat: &Flat, r: &[u8]| {
        let mut prefix = r.to_vec();
        prefix.push(b'/');
        flat.leaves
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&prefix))
    };
    for r in crate::snapshot::ROOTS {
        let r = r.as_bytes();
        // The vault may be empty (no secrets yet, or the last one removed): never a sign of a
        // wrong folder, and not worth reading the head on every save.
        if r == crate::snapshot::VAULT_ROOT.as_bytes() || has_under(new_flat, r) {
            continue;
        }
        if has_under(head_flat.get(cx)?, r) {
            let path = cx.layout().abs(r);
            let what = if path.is_dir() {
                "is empty"
            } else if path.exists() {
                "is not a folder"
            } else {
                "is missing"
            };
            return Err(Error::EmptiedRoot {
                root: String::from_utf8_lossy(r).into_owned(),
                path,
                what,
            });
        }
    }
    Ok(())
}

/// Writes a snapshot of `new_flat` (whose root is `root`) on top of `head`, moves the head and
/// the refs of the sessions that changed.
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one snapshot commit, all needed together"
)]
pub(crate) fn commit_snapshot(
    cx: &Context,
    batch: Batch<'_>,
    new_flat: &Flat,
    base: &Flat,
    head: Option<ObjectId>,
    root: ObjectId,
    message: &str,
    session: Option<String>,
    extra: Vec<(String, Vec<u8>)>,
) -> Result<(ObjectId, BatchStats, Vec<String>)> {
    commit_diffed(
        cx,
        batch,
        new_flat,
        &TreeDiff::between(base, new_flat),
        head,
        root,
        message,
        session,
        extra,
    )
}

/// [`commit_snapshot`] with what changed already found (`diff`, from the head to `new_flat`).
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of a snapshot, as commit_snapshot"
)]
fn commit_diffed(
    cx: &Context,
    batch: Batch<'_>,
    new_flat: &Flat,
    diff: &TreeDiff,
    head: Option<ObjectId>,
    root: ObjectId,
    message: &str,
    session: Option<String>,
    extra: Vec<(String, Vec<u8>)>,
) -> Result<(ObjectId, BatchStats, Vec<String>)> {
    let snap = Snapshot {
        root,
        parents: head.into_iter().collect(),
        time_ns: now_ns(),
        device: cx.device.clone(),
        message: message.to_owned(),
        session,
        summary: diff.summary,
        extra: with_modes(extra, new_flat),
    };
    let (id, stats) = publish(cx, batch, snap, head, &diff.moved)?;
    Ok((id, stats, session_names(&diff.moved)))
}

impl TreeDiff {
    /// What changed from `old` to `new`, by comparing their file lists.
    fn between(old: &Flat, new: &Flat) -> TreeDiff {
        TreeDiff {
            summary: old.summary_to(new),
            moved: moved_sessions(old, new),
        }
    }
}

/// The sessions whose content differs between `old` and `new` (and that `new` holds): the
/// session refs a snapshot moving from `old` to `new` moves. A session `new` no longer holds
/// keeps its ref.
fn moved_sessions(old: &Flat, new: &Flat) -> Vec<Vec<u8>> {
    let old = sessions_digest(old);
    sessions_digest(new)
        .into_iter()
        .filter(|(s, d)| old.get(s) != Some(d))
        .map(|(s, _)| s)
        .collect()
}

fn session_names(sessions: &[Vec<u8>]) -> Vec<String> {
    sessions
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The head's `extra` (its open conflicts carried) with `modes` as its `modes` entry.
fn extra_with_modes(
    head: &Snapshot,
    modes: Option<(String, Vec<u8>)>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut extra = conflicts::carried(Some(head), &[])?;
    extra.retain(|(k, _)| k != objects_format::modes::KEY);
    extra.extend(modes);
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(extra)
}

/// Stores `snap`, commits `batch`, then moves the refs of `sessions` and the head (from `head`)
/// to it in one transaction. Session refs first, the head last: the head moving is the commit
/// point, and a crash in between leaves session refs ahead (pointing at the new, durable
/// snapshot), never behind the head. Returns the snapshot and what the batch wrote.
fn publish(
    cx: &Context,
    batch: Batch<'_>,
    snap: Snapshot,
    head: Option<ObjectId>,
    sessions: &[Vec<u8>],
) -> Result<(ObjectId, BatchStats)> {
    let reflog_msg = if snap.message.is_empty() {
        "save".to_owned()
    } else {
        format!("save: {}", snap.message)
    };
    let id = batch.put(&Object::Snapshot(snap))?;
    let stats = batch.commit()?;
    let current = cx.refs.get(HEAD)?;
    if current != head {
        return Err(Error::RefConflict {
            name: HEAD.to_owned(),
            expected: head.map_or_else(|| "none".into(), |h| h.to_hex()),
            found: current.map_or_else(|| "none".into(), |h| h.to_hex()),
        });
    }
    let mut txn: Vec<RefTxn> = sessions
        .iter()
        .map(|s| RefTxn {
            name: session_ref(s),
            expected: None,
            new: Some(id),
        })
        .collect();
    txn.push(RefTxn {
        name: HEAD.to_owned(),
        expected: Some(head),
        new: Some(id),
    });
    cx.refs.update_many(&txn, &reflog_msg)?;
    Ok((id, stats))
}

/// The root tree id the live state would have if saved now (no object is written; unchanged
/// files are not read thanks to the stat cache). Used to detect changes cheaply.
///
/// # Errors
/// I/O errors.
pub fn live_root(cx: &Context) -> Result<ObjectId> {
    let mut cache = cx.load_statcache();
    let live = read_live(
        &cx.layout(),
        &in_roots,
        &mut cache,
        None,
        &crate::progress::Silent,
    )?;
    write_trees(&live.flat, None)
}

/// What `state save --dry-run` reports: what a save would record, and what the excludes and
/// the snapshot policy leave out. Nothing is written (not even the stat cache).
#[derive(Debug, Clone, Default)]
pub struct SavePlan {
    /// Files a save would add, modify or delete, relative to the head.
    pub changes: Vec<crate::history::Change>,
    /// Snapshot paths the excludes leave out (a folder ends with `/`; what is under it is not
    /// walked).
    pub excluded: Vec<String>,
    /// The config's exclude patterns in force.
    pub patterns: Vec<String>,
    /// Entries the snapshot policy leaves out, with why.
    pub skipped: Vec<(String, String)>,
}

/// Computes a [`SavePlan`] for `opts` (the session, when given, limits it to that session).
///
/// # Errors
/// I/O errors; a damaged head.
pub fn plan(cx: &Context, opts: &SaveOptions) -> Result<SavePlan> {
    let mut cache = cx.load_statcache();
    let layout = cx.layout();
    let scope = Scope::of(opts.session.as_deref(), None);
    let sel = |p: &[u8]| scope.contains(p);
    let live = read_live(&layout, &sel, &mut cache, None, &crate::progress::Silent)?;
    let head = match head_state(cx)? {
        Some((_, s)) => flatten_snapshot(&cx.objects, &s)?,
        None => Flat::with_roots(),
    };
    let base = head.filtered(|p| sel(p));
    Ok(SavePlan {
        changes: crate::history::diff_flat(&base, &live.flat),
        excluded: live
            .excluded
            .iter()
            .map(|p| crate::snapshot::display(p))
            .collect(),
        patterns: cx.excludes.patterns().to_vec(),
        skipped: live
            .skipped
            .iter()
            .map(|s| (s.path.clone(), s.why.clone()))
            .collect(),
    })
}
/// Writes a snapshot whose root `root` was grafted from the head's (docs/adr/0008): only the
/// part that `base` (the head's) and `new` (the new content) cover changed, `modes` is the
/// grafted `modes` entry. Moves the refs of the sessions whose part changed, then the head,
/// as [`commit_snapshot`] does. The cost is the part's: nothing outside it is read.
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one snapshot commit, all needed together"
)]
pub(crate) fn commit_part(
    cx: &Context,
    batch: Batch<'_>,
    base: &Flat,
    new: &Flat,
    head: (ObjectId, &Snapshot),
    root: ObjectId,
    modes: Option<(String, Vec<u8>)>,
    message: &str,
    session: Option<String>,
) -> Result<(ObjectId, BatchStats, Vec<String>)> {
    let snap = Snapshot {
        root,
        parents: vec![head.0],
        time_ns: now_ns(),
        device: cx.device.clone(),
        message: message.to_owned(),
        session,
        summary: base.summary_to(new),
        extra: extra_with_modes(head.1, modes)?,
    };
    // A session outside the part is unchanged, so comparing the part's digests finds every
    // moved one.
    let moved = moved_sessions(base, new);
    let (id, stats) = publish(cx, batch, snap, Some(head.0), &moved)?;
    Ok((id, stats, session_names(&moved)))
}

/// What an incremental save ([`save_changed`]) builds on: the head it was made from and how
/// many of the head's files have each mode (the `modes` table's defaults are the most frequent
/// mode of each class, so a save must know the counts to write the table a full save would).
#[derive(Debug, Clone)]
pub struct SaveBase {
    /// The head the counts describe.
    head: ObjectId,
    /// Per class (0: not executable, 1: executable), permission bits → number of files.
    counts: [BTreeMap<u16, u64>; 2],
}

/// What an incremental save looked at: the changed set plus bounded directory work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncrementalWork {
    /// Files stat'ed and read (the changed files, and the files of folders that appeared).
    pub files_read: u64,
    /// Entries the walk named on its way to the changed paths (a readdir, no stat).
    pub entries_listed: u64,
    /// Trees read from the store.
    pub trees_read: u64,
    /// Trees written.
    pub trees_written: u64,
}

/// The head's `modes` table, when it has one this reader accepts.
fn modes_table(snap: &Snapshot) -> Option<objects_format::modes::Modes> {
    snap.extra
        .iter()
        .find(|(k, _)| k == objects_format::modes::KEY)
        .and_then(|(_, v)| objects_format::modes::Modes::decode(v))
}

/// The class of a file for the `modes` table: 1 with the executable flag, 0 without.
fn class(l: &Leaf) -> usize {
    usize::from(l.flags & objects_format::FLAG_EXECUTABLE != 0)
}

/// The [`SaveBase`] of the current head (one pass over its file list); `None` when there is no
/// head, or the head has no `modes` table (then only a full save writes what a full save would).
///
/// # Errors
/// Store errors.
pub fn save_base(cx: &Context) -> Result<Option<SaveBase>> {
    let Some((head, snap)) = head_state(cx)? else {
        return Ok(None);
    };
    if modes_table(&snap).is_none() {
        return Ok(None);
    }
    let flat = flatten_snapshot(&cx.objects, &snap)?;
    let mut counts = [BTreeMap::new(), BTreeMap::new()];
    for l in flat.leaves.values() {
        if l.kind != objects_format::EntryKind::Symlink {
            *counts[class(l)]
                .entry(l.mode & objects_format::modes::PERMISSION_BITS)
                .or_default() += 1;
        }
    }
    Ok(Some(SaveBase { head, counts }))
}

/// Trees by id: the ones this save wrote, then the store's (each read counted).
struct Trees<'a> {
    store: &'a crate::store::ObjectStore,
    known: std::collections::HashMap<ObjectId, objects_format::Tree>,
    work: IncrementalWork,
}

impl Trees<'_> {
    fn get(&mut self, id: ObjectId) -> Result<objects_format::Tree> {
        if let Some(t) = self.known.get(&id) {
            return Ok(t.clone());
        }
        self.work.trees_read += 1;
        let t = self.store.read_tree(&id)?;
        self.known.insert(id, t.clone());
        Ok(t)
    }

    fn put(
        &mut self,
        entries: BTreeMap<Vec<u8>, objects_format::TreeEntry>,
        batch: &Batch<'_>,
    ) -> Result<ObjectId> {
        let t = objects_format::Tree {
            entries: entries.into_values().collect(),
        };
        let obj = Object::Tree(t);
        let (id, bytes) = objects_format::encode_with_id(&obj)?;
        if !self.known.contains_key(&id) {
            self.work.trees_written += 1;
            batch.put_canonical(objects_format::Kind::Tree, id, &bytes)?;
            let Object::Tree(t) = obj else {
                unreachable!("built as a tree")
            };
            self.known.insert(id, t);
        }
        Ok(id)
    }
}

/// `a/b` → (`a`, `b`).
fn parent_of(p: &[u8]) -> Option<&[u8]> {
    p.iter().rposition(|&b| b == b'/').map(|i| &p[..i])
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn leaf_entry(name: &[u8], l: &Leaf) -> objects_format::TreeEntry {
    objects_format::TreeEntry {
        name: name.to_vec(),
        kind: l.kind,
        flags: l.flags,
        size: l.size,
        id: l.id,
    }
}

fn dir_entry(name: &[u8], id: ObjectId) -> objects_format::TreeEntry {
    objects_format::TreeEntry {
        name: name.to_vec(),
        kind: objects_format::EntryKind::Dir,
        flags: 0,
        size: 0,
        id,
    }
}

/// The folders above the roots (`""`, `state`) and the roots: always in a snapshot's tree.
fn is_fixed_dir(p: &[u8]) -> bool {
    p == b"state" || crate::snapshot::ROOTS.iter().any(|r| r.as_bytes() == p)
}

/// One incremental save's inputs and what it found.
struct Incremental<'a, 'b> {
    changed: &'a std::collections::BTreeSet<Vec<u8>>,
    leaves: BTreeMap<Vec<u8>, Leaf>,
    dirs: std::collections::BTreeSet<Vec<u8>>,
    excluded: std::collections::BTreeSet<Vec<u8>>,
    trees: Trees<'a>,
    batch: &'a Batch<'b>,
}

impl Incremental<'_, '_> {
    /// The new tree of the folder `rel`, whose tree in the head is `head`: the head's entries
    /// with the changed ones read again. `None`: the live state does not match what the
    /// changed set says (events were lost), so only a full save can be trusted.
    fn patch(&mut self, rel: &[u8], head: ObjectId) -> Result<Option<ObjectId>> {
        let t = self.trees.get(head)?;
        let mut entries: BTreeMap<Vec<u8>, objects_format::TreeEntry> =
            t.entries.into_iter().map(|e| (e.name.clone(), e)).collect();
        let prefix = join(rel, b"");
        let prefix = if rel.is_empty() { Vec::new() } else { prefix };
        let mut names = std::collections::BTreeSet::new();
        for c in self.changed.range(prefix.clone()..) {
            if !c.starts_with(&prefix) {
                break;
            }
            let rest = &c[prefix.len()..];
            let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
            names.insert(rest[..end].to_vec());
        }
        for n in names {
            let q = join(rel, &n);
            if self.changed.contains(&q) {
                entries.remove(&n);
                if let Some(l) = self.leaves.get(&q) {
                    entries.insert(n.clone(), leaf_entry(&n, l));
                } else if self.dirs.contains(&q) || is_fixed_dir(&q) {
                    let id = self.fresh(&q)?;
                    entries.insert(n.clone(), dir_entry(&n, id));
                }
                continue;
            }
            let head_dir = entries
                .get(&n)
                .filter(|e| e.kind == objects_format::EntryKind::Dir)
                .map(|e| e.id);
            let live_dir = self.dirs.contains(&q) || is_fixed_dir(&q);
            match head_dir {
                Some(id) if live_dir => match self.patch(&q, id)? {
                    Some(new) => {
                        entries.insert(n.clone(), dir_entry(&n, new));
                    }
                    None => return Ok(None),
                },
                // Not in the head and not visible live (gone, excluded, too deep): nothing to do.
                None if !live_dir && !entries.contains_key(&n) && !self.leaves.contains_key(&q) => {
                }
                // Excluded now and not in the head.
                _ if self.excluded.contains(&join(&q, b"")) && !entries.contains_key(&n) => {}
                _ => return Ok(None),
            }
        }
        self.trees.put(entries, self.batch).map(Some)
    }

    /// The tree of a folder read whole (it appeared, or was replaced, or its excludes changed).
    fn fresh(&mut self, rel: &[u8]) -> Result<ObjectId> {
        let prefix = join(rel, b"");
        let mut entries = BTreeMap::new();
        let direct = |p: &[u8]| !p[prefix.len()..].contains(&b'/');
        for (p, l) in self.leaves.range(prefix.clone()..) {
            if !p.starts_with(&prefix) {
                break;
            }
            if direct(p) {
                let n = &p[prefix.len()..];
                entries.insert(n.to_vec(), leaf_entry(n, l));
            }
        }
        let subdirs: Vec<Vec<u8>> = self
            .dirs
            .range(prefix.clone()..)
            .take_while(|p| p.starts_with(&prefix))
            .filter(|p| direct(p))
            .cloned()
            .collect();
        for d in subdirs {
            let id = self.fresh(&d)?;
            let n = &d[prefix.len()..];
            entries.insert(n.to_vec(), dir_entry(n, id));
        }
        self.trees.put(entries, self.batch)
    }

    /// True when the tree `id` holds a file anywhere below it.
    fn has_leaf(&mut self, id: ObjectId) -> Result<bool> {
        let t = self.trees.get(id)?;
        if t.entries
            .iter()
            .any(|e| e.kind != objects_format::EntryKind::Dir)
        {
            return Ok(true);
        }
        for e in &t.entries {
            if self.has_leaf(e.id)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The id of the folder at `rel` under the root tree `root`, if it is one.
    fn dir_at(&mut self, root: ObjectId, rel: &[u8]) -> Result<Option<ObjectId>> {
        let mut id = root;
        for comp in rel.split(|&b| b == b'/') {
            let t = self.trees.get(id)?;
            match t.get(comp) {
                Some(e) if e.kind == objects_format::EntryKind::Dir => id = e.id,
                _ => return Ok(None),
            }
        }
        Ok(Some(id))
    }

    /// The files and folders that differ between the trees `old` and `new` (both folders at
    /// `rel`), with the modes each side records: `old_mode` gives the head's.
    #[expect(
        clippy::too_many_arguments,
        reason = "one recursive walk over two trees, with its four outputs"
    )]
    fn diff(
        &mut self,
        rel: &[u8],
        old: Option<ObjectId>,
        new: Option<ObjectId>,
        old_mode: &dyn Fn(&[u8], &Leaf) -> u16,
        out_old: &mut BTreeMap<Vec<u8>, Leaf>,
        out_new: &mut BTreeMap<Vec<u8>, Leaf>,
        dirs: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        if old == new {
            return Ok(());
        }
        let o = match old {
            Some(id) => self.trees.get(id)?.entries,
            None => Vec::new(),
        };
        let n = match new {
            Some(id) => self.trees.get(id)?.entries,
            None => Vec::new(),
        };
        let mut names: std::collections::BTreeSet<&[u8]> =
            o.iter().map(|e| e.name.as_slice()).collect();
        names.extend(n.iter().map(|e| e.name.as_slice()));
        let find = |v: &[objects_format::TreeEntry], name: &[u8]| {
            v.iter().find(|e| e.name == name).cloned()
        };
        for name in names {
            let p = join(rel, name);
            let (eo, en) = (find(&o, name), find(&n, name));
            let is_dir = |e: &Option<objects_format::TreeEntry>| {
                e.as_ref()
                    .is_some_and(|e| e.kind == objects_format::EntryKind::Dir)
            };
            let same = match (&eo, &en) {
                (Some(a), Some(b)) => a.kind == b.kind && a.flags == b.flags && a.id == b.id,
                _ => false,
            };
            if same {
                continue;
            }
            if is_dir(&eo) != is_dir(&en) {
                dirs.push(p.clone());
            }
            let (od, nd) = (
                eo.as_ref().filter(|_| is_dir(&eo)).map(|e| e.id),
                en.as_ref().filter(|_| is_dir(&en)).map(|e| e.id),
            );
            if od.is_some() || nd.is_some() {
                self.diff(&p, od, nd, old_mode, out_old, out_new, dirs)?;
            }
            if let Some(e) = eo.filter(|e| e.kind != objects_format::EntryKind::Dir) {
                let mut l = Leaf {
                    kind: e.kind,
                    flags: e.flags,
                    mode: 0,
                    size: e.size,
                    id: e.id,
                };
                l.mode = old_mode(&p, &l);
                out_old.insert(p.clone(), l);
            }
            if let Some(e) = en.filter(|e| e.kind != objects_format::EntryKind::Dir) {
                let l = self.leaves.get(&p).copied().unwrap_or(Leaf {
                    kind: e.kind,
                    flags: e.flags,
                    mode: 0,
                    size: e.size,
                    id: e.id,
                });
                out_new.insert(p, l);
            }
        }
        Ok(())
    }
}

/// The default mode of each class, as [`objects_format::modes::Modes::of`] picks it: the most
/// frequent (ties: the lower), the legacy mode for a class with no file.
fn defaults(counts: &[BTreeMap<u16, u64>; 2]) -> [u16; 2] {
    let pick = |c: &BTreeMap<u16, u64>, exec: bool| {
        c.iter()
            .filter(|(_, n)| **n > 0)
            .rev()
            .max_by_key(|(_, n)| **n)
            .map_or(objects_format::modes::legacy(exec), |(m, _)| *m)
    };
    [pick(&counts[0], false), pick(&counts[1], true)]
}

/// Saves the live state re-reading only `changed` (snapshot paths: `config/…`,
/// `state/sessions/…`, `state/journal/…`, as a watcher reported them) and the folders on the
/// way to them; every other subtree is the head's, reused by id. The snapshot is byte for byte
/// the one [`save`] would write (the same root, `modes` table, summary and moved session refs).
///
/// `Ok(None)` when it cannot be sure of that, and a full save is needed: `base` is not of the
/// current head (another save, a pull), the head has no `modes` table, the live state does not
/// match the changed set (events lost), a session descriptor does not parse (quarantine is the
/// full save's), a `modes` default would change, or a root would be emptied (the full save
/// refuses it).
///
/// # Errors
/// I/O, lock or store errors. On error no ref moves.
pub fn save_changed(
    cx: &Context,
    message: &str,
    base: &mut SaveBase,
    changed: &std::collections::BTreeSet<Vec<u8>>,
) -> Result<Option<(SaveOutcome, IncrementalWork)>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let _lock = cx.lock("state save")?;
    let Some((hid, hs)) = head_state(cx)? else {
        return Ok(None);
    };
    if hid != base.head {
        return Ok(None);
    }
    let Some(table) = modes_table(&hs) else {
        return Ok(None);
    };
    // The paths to read again: a changed `.shelldoneignore` re-reads its whole folder.
    let mut set: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
    for p in changed {
        if !in_roots(p)
            || p.split(|&b| b == b'/')
                .any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            continue;
        }
        if p.ends_with(crate::snapshot::exclude::IGNORE_FILE.as_bytes())
            && let Some(dir) = parent_of(p)
            && in_roots(dir)
        {
            set.insert(dir.to_vec());
        }
        set.insert(p.clone());
    }
    let batch = cx.objects.batch()?;
    let layout = cx.layout();
    let listed = AtomicU64::new(0);
    // The walk enters only the folders on the way to a changed path, and whatever is under a
    // changed path (a folder that appeared is read whole).
    let keep = |p: &[u8]| {
        listed.fetch_add(1, Ordering::Relaxed);
        if set.contains(p)
            || p.iter()
                .enumerate()
                .any(|(i, &b)| b == b'/' && set.contains(&p[..i]))
        {
            return true;
        }
        let prefix = join(p, b"");
        set.range(prefix.clone()..)
            .next()
            .is_some_and(|c| c.starts_with(&prefix))
    };
    let scan = crate::snapshot::save::scan(&layout, &keep)?;
    let files: Vec<_> = scan.files.into_iter().flatten().collect();
    let empty = StatCache::default();
    let hashed: Vec<Result<crate::snapshot::save::Hashed>> = {
        use rayon::prelude::*;
        files
            .par_iter()
            .map(|f| crate::snapshot::save::hash_file(&layout, f, &empty, Some(&batch)))
            .collect()
    };
    let mut work = IncrementalWork {
        files_read: files.len() as u64,
        entries_listed: listed.load(Ordering::Relaxed),
        ..IncrementalWork::default()
    };
    let mut warnings = Vec::new();
    let mut skipped = scan.skipped;
    let mut leaves = BTreeMap::new();
    for (f, h) in files.into_iter().zip(hashed) {
        match h? {
            crate::snapshot::save::Hashed::Ok { leaf, changed, .. } => {
                if changed {
                    warnings.push(format!(
                        "file changed while it was saved: {}",
                        layout.abs(&f.rel).display()
                    ));
                }
                leaves.insert(f.rel, leaf);
            }
            crate::snapshot::save::Hashed::CorruptDescriptor(_) => return Ok(None),
            crate::snapshot::save::Hashed::Skipped(why) => {
                skipped.push(crate::snapshot::policy::skipped(&f.rel, why));
            }
            crate::snapshot::save::Hashed::Gone => {}
        }
    }
    let mut inc = Incremental {
        changed: &set,
        leaves,
        dirs: scan.dirs.into_iter().collect(),
        excluded: scan.excluded.into_iter().collect(),
        trees: Trees {
            store: &cx.objects,
            known: std::collections::HashMap::new(),
            work: IncrementalWork::default(),
        },
        batch: &batch,
    };
    // The trees above the roots must be exactly what a full save writes.
    let top = inc.trees.get(hs.root)?;
    let names = |t: &objects_format::Tree| -> Vec<Vec<u8>> {
        t.entries
            .iter()
            .filter(|e| e.kind == objects_format::EntryKind::Dir)
            .map(|e| e.name.clone())
            .collect()
    };
    if names(&top) != [b"config".to_vec(), b"state".to_vec()] || top.entries.len() != 2 {
        return Ok(None);
    }
    let Some(state) = inc.dir_at(hs.root, b"state")? else {
        return Ok(None);
    };
    let st = inc.trees.get(state)?;
    let want: Vec<Vec<u8>> = crate::snapshot::ROOTS
        .iter()
        .filter_map(|r| r.strip_prefix("state/"))
        .map(|r| r.as_bytes().to_vec())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if names(&st) != want || st.entries.len() != want.len() {
        return Ok(None);
    }
    let Some(root) = inc.patch(b"", hs.root)? else {
        return Ok(None);
    };
    // A root emptied of files: the full save decides (it refuses, naming the root).
    for r in crate::snapshot::ROOTS {
        let (o, n) = (
            inc.dir_at(hs.root, r.as_bytes())?,
            inc.dir_at(root, r.as_bytes())?,
        );
        if o != n
            && let (Some(o), Some(n)) = (o, n)
            && !inc.has_leaf(n)?
            && inc.has_leaf(o)?
        {
            return Ok(None);
        }
    }
    // What differs, with the modes each side records.
    let old_mode = |p: &[u8], l: &Leaf| {
        if l.kind == objects_format::EntryKind::Symlink {
            0
        } else {
            table.mode(p, l.flags & objects_format::FLAG_EXECUTABLE != 0)
        }
    };
    let (mut out_old, mut out_new, mut dirs) = (BTreeMap::new(), BTreeMap::new(), Vec::new());
    inc.diff(
        b"",
        Some(hs.root),
        Some(root),
        &old_mode,
        &mut out_old,
        &mut out_new,
        &mut dirs,
    )?;
    // A file read again whose entry is the same may still have a new mode.
    for (p, l) in &inc.leaves {
        if out_new.contains_key(p) {
            continue;
        }
        let m = old_mode(p, l);
        if m != l.mode {
            out_old.insert(p.clone(), Leaf { mode: m, ..*l });
            out_new.insert(p.clone(), *l);
        }
    }
    // The `modes` table a full save would write.
    let mut counts = base.counts.clone();
    let bits = |l: &Leaf| l.mode & objects_format::modes::PERMISSION_BITS;
    for l in out_old.values() {
        if l.kind != objects_format::EntryKind::Symlink {
            let c = counts[class(l)].entry(bits(l)).or_default();
            *c = c.saturating_sub(1);
        }
    }
    for l in out_new.values() {
        if l.kind != objects_format::EntryKind::Symlink {
            *counts[class(l)].entry(bits(l)).or_default() += 1;
        }
    }
    counts.iter_mut().for_each(|c| c.retain(|_, n| *n > 0));
    let [plain, exec] = defaults(&counts);
    if [plain, exec] != [table.plain, table.exec] {
        return Ok(None);
    }
    let mut modes = table.clone();
    for p in out_old.keys() {
        modes.paths.remove(p);
    }
    for (p, l) in &out_new {
        if l.kind != objects_format::EntryKind::Symlink {
            let default = if class(l) == 1 { exec } else { plain };
            if bits(l) != default {
                modes.paths.insert(p.clone(), bits(l));
            }
        }
    }
    let modes_entry =
        (!modes.is_legacy()).then(|| (objects_format::modes::KEY.to_owned(), modes.encode()));
    let recorded = hs
        .extra
        .iter()
        .find(|(k, _)| k == objects_format::modes::KEY)
        .cloned();
    cx.note_skipped("not saved", &skipped);
    work.trees_read = inc.trees.work.trees_read;
    work.trees_written = inc.trees.work.trees_written;
    if root == hs.root && modes_entry == recorded {
        batch.commit()?;
        base.counts = counts;
        return Ok(Some((
            SaveOutcome {
                id: Some(hid),
                created: false,
                summary: ChangeSummary::default(),
                sessions: Vec::new(),
                objects_written: 0,
                bytes_written: 0,
                quarantined: Vec::new(),
                warnings,
            },
            work,
        )));
    }
    // The summary and the sessions that moved, as `commit_snapshot` finds them from two flats.
    let mut summary = ChangeSummary::default();
    let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    summary.added = as_u32(out_new.keys().filter(|p| !out_old.contains_key(*p)).count());
    summary.modified = as_u32(
        out_new
            .iter()
            .filter(|(p, l)| out_old.get(*p).is_some_and(|o| !o.same_content(l)))
            .count(),
    );
    summary.deleted = as_u32(out_old.keys().filter(|p| !out_new.contains_key(*p)).count());
    let sessions_tree = inc.dir_at(root, b"state/sessions")?;
    let live_sessions: std::collections::BTreeSet<Vec<u8>> = match sessions_tree {
        Some(id) => inc
            .trees
            .get(id)?
            .entries
            .iter()
            .filter_map(|e| session_of(&join(b"state/sessions", &e.name)).map(<[u8]>::to_vec))
            .collect(),
        None => std::collections::BTreeSet::new(),
    };
    let moved: std::collections::BTreeSet<Vec<u8>> = out_old
        .keys()
        .chain(out_new.keys())
        .chain(dirs.iter())
        .filter_map(|p| session_of(p))
        .filter(|s| live_sessions.contains(*s))
        .map(<[u8]>::to_vec)
        .collect();
    let snap = Snapshot {
        root,
        parents: vec![hid],
        time_ns: now_ns(),
        device: cx.device.clone(),
        message: message.to_owned(),
        session: None,
        summary,
        extra: extra_with_modes(&hs, modes_entry)?,
    };
    let moved: Vec<Vec<u8>> = moved.into_iter().collect();
    let (id, stats) = publish(cx, batch, snap, Some(hid), &moved)?;
    base.head = id;
    base.counts = counts;
    Ok(Some((
        SaveOutcome {
            id: Some(id),
            created: true,
            summary,
            sessions: session_names(&moved),
            objects_written: stats.objects,
            bytes_written: stats.bytes,
            quarantined: Vec::new(),
            warnings,
        },
        work,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Leaf, flatten, write_trees_recording};
    use crate::store::ObjectStore;
    use objects_format::EntryKind;
    use proptest::prelude::*;

    /// A flat of files named by small numbers: `(folder, session, file) → content byte`.
    fn flat_of(files: &BTreeMap<(u8, u8, u8), (u8, bool)>, dirs: &[(u8, u8)]) -> Flat {
        let mut f = Flat::with_roots();
        for (&(kind, s, n), &(content, exec)) in files {
            let p = match kind % 4 {
                0 => format!("config/c{n}.toml"),
                1 => format!("state/sessions/s{s}/f{n}"),
                2 => format!("state/sessions/s{s}/tabs/t{}/p{n}.json", n % 3),
                _ => format!("state/sessions/s{s}.json"),
            };
            let mut d = p.as_str();
            while let Some(i) = d.rfind('/') {
                d = &d[..i];
                f.dirs.insert(d.as_bytes().to_vec());
            }
            f.leaves.insert(
                p.into_bytes(),
                Leaf {
                    kind: EntryKind::File,
                    flags: u8::from(exec),
                    mode: 0,
                    size: 1,
                    id: ObjectId([content; 32]),
                },
            );
        }
        for &(s, t) in dirs {
            for d in [
                format!("state/sessions/s{s}"),
                format!("state/sessions/s{s}/empty{t}"),
            ] {
                f.dirs.insert(d.into_bytes());
            }
        }
        f
    }

    fn files() -> impl Strategy<Value = BTreeMap<(u8, u8, u8), (u8, bool)>> {
        proptest::collection::btree_map((0u8..4, 0u8..4, 0u8..6), (0u8..3, any::<bool>()), 0..40)
    }

    proptest! {
        /// The tree diff counts and moves what comparing the two flattened snapshots does.
        #[test]
        fn the_tree_diff_agrees_with_the_flat_comparison(
            old in files(),
            new in files(),
            keep in proptest::collection::vec(any::<bool>(), 40),
            old_dirs in proptest::collection::vec((0u8..4, 0u8..2), 0..3),
            new_dirs in proptest::collection::vec((0u8..4, 0u8..2), 0..3),
        ) {
            // The new state shares part of the old one (so that trees are equal in places).
            let mut mixed: BTreeMap<(u8, u8, u8), (u8, bool)> = old
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|((p, c), _)| (*p, *c))
                .collect();
            mixed.extend(new.iter().take(6).map(|(p, c)| (*p, *c)));
            let dir = tempfile::tempdir().expect("tempdir");
            let store = ObjectStore::new(dir.path().to_path_buf());
            let a = flat_of(&old, &old_dirs);
            let b = flat_of(&mixed, &new_dirs);
            let batch = store.batch().expect("batch");
            let (root_a, _) = write_trees_recording(&a, Some(&batch)).expect("trees");
            batch.commit().expect("commit");
            let head = Snapshot {
                root: root_a,
                parents: Vec::new(),
                time_ns: 1,
                device: "d".into(),
                message: String::new(),
                session: None,
                summary: ChangeSummary::default(),
                extra: with_modes(Vec::new(), &a),
            };
            let (_, ids) = write_trees_recording(&b, None).expect("trees");
            let diff = diff_to(&store, &head, &b, &ids).expect("diff").expect("same modes");
            let base = flatten(&store, &root_a).expect("flatten");
            prop_assert_eq!(diff.summary, base.summary_to(&b));
            prop_assert_eq!(diff.moved, moved_sessions(&base, &b));
        }
    }
}
