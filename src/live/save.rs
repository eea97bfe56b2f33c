//! `save`: the live files hashed into objects, a snapshot written and `head` (and the
//! changed sessions' refs) moved in one transaction.

use std::collections::BTreeMap;

use objects_format::{ChangeSummary, Object, ObjectId, Snapshot};

use super::Scope;
use super::descriptors::{Quarantined, is_young, quarantine};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::snapshot::conflicts;
use crate::snapshot::save::read_live;
use crate::snapshot::{
    Flat, flatten_snapshot, in_roots, modes_extra, session_of, with_modes, write_trees,
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
    let mut cache = StatCache::load(&cx.statcache_path());
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
    let mut head_flat_cache: Option<Flat> = None;
    let mut head_flat = |st: &Context| -> Result<Flat> {
        if head_flat_cache.is_none() {
            head_flat_cache = Some(match &head {
                Some((_, s)) => flatten_snapshot(&st.objects, s)?,
                None => Flat::with_roots(),
            });
        }
        Ok(head_flat_cache.clone().expect("just set"))
    };
    if !live.corrupt.is_empty() {
        let hf = head_flat(cx)?;
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
        let hf = head_flat(cx)?;
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
        refuse_emptied_roots(cx, &new_flat, &mut head_flat)?;
    }
    let extra = conflicts::carried(head.as_ref().map(|h| &h.1), &opts.resolved)?;
    let root = write_trees(&new_flat, Some(&batch))?;
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
    let base = match head_flat(cx) {
        Ok(b) => b,
        // The head's trees are damaged (docs/safety.md, "Damaged store files"): the live
        // state is still recorded, every file as new, so the save stores again whatever
        // the live files still hold instead of refusing until the objects come back.
        Err(e) if e.is_damage() => {
            warnings.push(format!(
                "the head snapshot's file list cannot be read ({e}); this snapshot records \
                 every file as new"
            ));
            Flat::with_roots()
        }
        Err(e) => return Err(e),
    };
    let (id, stats, sessions) = commit_snapshot(
        cx,
        batch,
        &new_flat,
        &base,
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
        summary: base.summary_to(&new_flat),
        sessions,
        objects_written: stats.objects,
        bytes_written: stats.bytes,
        quarantined,
        warnings,
    })
}

/// True when `snap` records the modes `flat` has (both with the same `modes` entry, or
/// neither).
pub(crate) fn same_modes(snap: &Snapshot, flat: &Flat) -> bool {
    let recorded = snap
        .extra
        .iter()
        .find(|(k, _)| k == objects_format::modes::KEY);
    recorded.map(|(k, v)| (k.as_str(), v.as_slice()))
        == modes_extra(flat)
            .as_ref()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
}

/// Refuses a save that would record a root (`config/`, `state/sessions/`, `state/journal/`)
/// as emptied when the head has files there: the sign of a wrong `--config-dir`, an
/// unmounted disk or a folder replaced by a file. The head is read only when a root is empty.
fn refuse_emptied_roots(
    cx: &Context,
    new_flat: &Flat,
    head_flat: &mut impl FnMut(&Context) -> Result<Flat>,
) -> Result<()> {
    let under = |p: &[u8], r: &[u8]| p.starts_with(r) && p.get(r.len()) == Some(&b'/');
    for r in crate::snapshot::ROOTS {
        let r = r.as_bytes();
        if new_flat.leaves.keys().any(|p| under(p, r)) {
            continue;
        }
        if head_flat(cx)?.leaves.keys().any(|p| under(p, r)) {
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
    let snap = Snapshot {
        root,
        parents: head.into_iter().collect(),
        time_ns: now_ns(),
        device: cx.device.clone(),
        message: message.to_owned(),
        session,
        summary: base.summary_to(new_flat),
        extra: with_modes(extra, new_flat),
    };
    let id = batch.put(&Object::Snapshot(snap))?;
    let stats = batch.commit()?;
    let reflog_msg = if message.is_empty() {
        "save".to_owned()
    } else {
        format!("save: {message}")
    };
    let current = cx.refs.get(HEAD)?;
    if current != head {
        return Err(Error::RefConflict {
            name: HEAD.to_owned(),
            expected: head.map_or_else(|| "none".into(), |h| h.to_hex()),
            found: current.map_or_else(|| "none".into(), |h| h.to_hex()),
        });
    }
    // Session refs first, the head last: the head moving is the commit point, and a crash
    // in between leaves session refs ahead (pointing at the new, durable snapshot), never
    // behind the head.
    let old = sessions_digest(base);
    let new = sessions_digest(new_flat);
    let mut moved = Vec::new();
    let mut txn = Vec::new();
    for (s, d) in &new {
        if old.get(s) != Some(d) {
            txn.push(RefTxn {
                name: session_ref(s),
                expected: None,
                new: Some(id),
            });
            moved.push(String::from_utf8_lossy(s).into_owned());
        }
    }
    txn.push(RefTxn {
        name: HEAD.to_owned(),
        expected: Some(head),
        new: Some(id),
    });
    cx.refs.update_many(&txn, &reflog_msg)?;
    Ok((id, stats, moved))
}

/// The root tree id the live state would have if saved now (no object is written; unchanged
/// files are not read thanks to the stat cache). Used to detect changes cheaply.
///
/// # Errors
/// I/O errors.
pub fn live_root(cx: &Context) -> Result<ObjectId> {
    let mut cache = StatCache::load(&cx.statcache_path());
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
    let mut cache = StatCache::load(&cx.statcache_path());
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
    let mut extra = conflicts::carried(Some(head.1), &[])?;
    extra.retain(|(k, _)| k != objects_format::modes::KEY);
    extra.extend(modes);
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    let snap = Snapshot {
        root,
        parents: vec![head.0],
        time_ns: now_ns(),
        device: cx.device.clone(),
        message: message.to_owned(),
        session,
        summary: base.summary_to(new),
        extra,
    };
    let id = batch.put(&Object::Snapshot(snap))?;
    let stats = batch.commit()?;
    let current = cx.refs.get(HEAD)?;
    if current != Some(head.0) {
        return Err(Error::RefConflict {
            name: HEAD.to_owned(),
            expected: head.0.to_hex(),
            found: current.map_or_else(|| "none".into(), |h| h.to_hex()),
        });
    }
    // As in commit_snapshot: session refs first, the head last (the commit point). A session
    // outside the part is unchanged, so comparing the part's digests finds every moved one.
    let old = sessions_digest(base);
    let mut moved = Vec::new();
    let mut txn = Vec::new();
    for (s, d) in &sessions_digest(new) {
        if old.get(s) != Some(d) {
            txn.push(RefTxn {
                name: session_ref(s),
                expected: None,
                new: Some(id),
            });
            moved.push(String::from_utf8_lossy(s).into_owned());
        }
    }
    // A session the part held and no longer holds keeps its ref, as in a whole save.
    txn.push(RefTxn {
        name: HEAD.to_owned(),
        expected: Some(Some(head.0)),
        new: Some(id),
    });
    cx.refs.update_many(&txn, &format!("save: {message}"))?;
    Ok((id, stats, moved))
}
