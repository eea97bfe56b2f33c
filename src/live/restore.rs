//! `restore`: a snapshot (or one session or path of it) put back into the live files, behind
//! an intent file that startup recovery finishes if the process dies half-way.

use std::path::PathBuf;

use fs_err as fs;
use objects_format::ObjectId;
use serde::{Deserialize, Serialize};

use super::Scope;
use super::descriptors::is_young;
use super::descriptors::{Quarantined, quarantine};
use super::save::{SaveOptions, commit_part, commit_snapshot, head_state, save_locked};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::snapshot::conflicts;
use crate::snapshot::restore::{self, Plan, Reach, flatten_part, graft, graft_modes};
use crate::snapshot::same_modes;
use crate::snapshot::save::{read_live, read_live_vouched};
use crate::snapshot::{Flat, Layout, ROOTS, flatten_snapshot, in_roots, session_of, write_trees};
use crate::store::refs::HEAD;
use crate::store::statcache::{Stat, StatCache};
use crate::store::{durable, now_ns};

/// What to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Revision (default: head).
    pub rev: Option<String>,
    /// Only this session.
    pub session: Option<String>,
    /// Only this file or folder (a snapshot path such as `config/shelldone.toml`).
    pub path: Option<String>,
    /// Write into this dir (`DIR/config`, `DIR/state/…`) instead of the live dirs.
    pub to: Option<PathBuf>,
    /// Only compute the plan.
    pub dry_run: bool,
}

/// What a restore did (or would do).
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// The snapshot restored.
    pub snapshot: ObjectId,
    /// The changes.
    pub plan: Plan,
    /// Snapshot of the live state taken before restoring, if it had unsaved changes.
    pub auto_saved: Option<ObjectId>,
    /// New head recording the restore (None for `--to`, dry runs and no-ops).
    pub new_head: Option<ObjectId>,
    /// Corrupt descriptors the restore moved aside before writing the snapshot's version in
    /// their place (docs/safety.md, "Session descriptors").
    pub quarantined: Vec<Quarantined>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    /// The snapshot to make live; the literal "head" means whatever the head is at recovery
    /// (written by `sync pull` before it moves the head).
    snapshot: String,
    session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

/// Writes `restore-intent` (an `Error::File` naming it on failure).
fn write_intent(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    durable::write_atomic(path, bytes).map_err(Error::at("writing", path, "restore"))
}

/// Records that the live state must be made equal to the head, whatever it becomes: written
/// before an operation moves the head (sync pull), removed by the restore that follows. A crash
/// in between is rolled forward by recovery.
pub(crate) fn write_head_intent(st: &Context) -> Result<()> {
    durable::write_atomic(
        &st.snap_dir.join("restore-intent"),
        &serde_json::to_vec(&Intent {
            snapshot: "head".into(),
            session: None,
            path: None,
        })
        .map_err(std::io::Error::other)?,
    )?;
    Ok(())
}

/// Restores a snapshot (see [`RestoreOptions`]). Unsaved live changes are saved first, so a
/// restore never loses anything; the restore itself is recorded as a new snapshot.
///
/// # Errors
/// Unknown revision, missing/corrupt objects (nothing live is changed), lock or I/O errors.
pub fn restore(cx: &Context, opts: &RestoreOptions) -> Result<RestoreOutcome> {
    if let Some(dir) = &opts.to {
        return restore_to(cx, opts, dir);
    }
    let _lock = cx.lock("state restore")?;
    let snap_id = restore_target(cx, opts)?;
    let scope = checked_scope(cx, opts, snap_id)?;
    // One stat cache for the safety save and the restore (loading and writing it is the cost
    // of a small restore in a large state).
    let mut cache = None;
    let auto_saved = if opts.dry_run {
        None
    } else {
        // Whatever the restore overwrites is saved first (the scope, not the whole state);
        // an emptied root is saved as it is (restoring is how a user repairs it).
        save_before_restore(
            cx,
            &scope,
            &format!("auto-save before restoring {}", snap_id.short(12)),
            &mut cache,
        )?
    };
    let (plan, new_head, quarantined) =
        restore_locked_with(cx, snap_id, &scope, opts.dry_run, cache)?;
    Ok(RestoreOutcome {
        snapshot: snap_id,
        plan,
        auto_saved,
        new_head,
        quarantined,
    })
}

/// Where a snapshot path stands relative to `scope` (docs/adr/0008).
pub(crate) fn reach(scope: &Scope, p: &[u8]) -> Reach {
    let above_roots = || {
        ROOTS.iter().any(|r| {
            let r = r.as_bytes();
            r.len() > p.len() && r.starts_with(p) && r[p.len()] == b'/'
        })
    };
    let under = |p: &[u8], x: &[u8]| p.len() > x.len() && p.starts_with(x) && p[x.len()] == b'/';
    match scope {
        Scope::All if in_roots(p) => Reach::Inside,
        Scope::All if above_roots() => Reach::Above,
        Scope::Session(s) if session_of(p) == Some(s.as_bytes()) => Reach::Inside,
        Scope::Session(_) if p == b"state" || p == b"state/sessions" => Reach::Above,
        Scope::Path(x) if in_roots(p) && (p == x.as_slice() || under(p, x)) => Reach::Inside,
        Scope::Path(x) if (in_roots(p) || above_roots()) && under(x, p) => Reach::Above,
        _ => Reach::Outside,
    }
}

/// The safety save before a restore of `scope` (docs/safety.md, "Restore"): the files the
/// restore may overwrite — the scope's, found through the stat cache — are saved when they
/// differ from the head, as a snapshot that reuses every other tree of the head by id. A
/// whole restore saves the whole state. Returns the snapshot written, if any.
///
/// # Errors
/// I/O, lock or store errors.
/// A scoped save leaves the stat cache it used, updated but not written, in `cache` (for the
/// restore that follows, which writes it).
pub(crate) fn save_before_restore(
    cx: &Context,
    scope: &Scope,
    message: &str,
    cache: &mut Option<StatCache>,
) -> Result<Option<ObjectId>> {
    let whole = || -> Result<Option<ObjectId>> {
        let o = save_locked(
            cx,
            &SaveOptions {
                message: message.to_owned(),
                allow_empty: true,
                ..SaveOptions::default()
            },
        )?;
        Ok(if o.created { o.id } else { None })
    };
    if *scope == Scope::All {
        return whole();
    }
    let Some((hid, hs)) = head_state(cx)? else {
        return whole();
    };
    let reach = |p: &[u8]| reach(scope, p);
    let base = match flatten_part(&cx.objects, &hs, &reach) {
        Ok(b) => b,
        // Damaged head trees: the whole save records every file as new (and says so).
        Err(e) if e.is_damage() => return whole(),
        Err(e) => return Err(e),
    };
    let cache = cache.insert(cx.load_statcache());
    let batch = cx.objects.batch()?;
    let layout = cx.layout();
    let sel = |p: &[u8]| scope.contains(p);
    let live = read_live(&layout, &sel, cache, Some(&batch), &*cx.progress)?;
    cx.note_skipped("not saved", &live.skipped);
    let mut part = live.flat;
    for (rel, why) in live.corrupt {
        // As in a save: a settled corrupt descriptor is quarantined, a young one left alone;
        // either way the head's version is what is recorded.
        if !is_young(&layout.abs(&rel)) {
            quarantine(
                cx,
                &layout,
                &rel,
                &why,
                base.leaves.get(&rel).copied(),
                cache,
            )?;
        }
        if let Some(l) = base.leaves.get(&rel) {
            part.leaves.insert(rel, *l);
        }
    }
    let modes = graft_modes(Some(&hs), &reach, &part);
    let recorded = hs
        .extra
        .iter()
        .find(|(k, _)| k == objects_format::modes::KEY)
        .cloned();
    let root = graft(&cx.objects, Some(&hs.root), &reach, &part, None)?;
    let saved = if root == hs.root && modes == recorded {
        batch.commit()?;
        None
    } else {
        let root = graft(&cx.objects, Some(&hs.root), &reach, &part, Some(&batch))?;
        Some(
            commit_part(
                cx,
                batch,
                &base,
                &part,
                (hid, &hs),
                root,
                modes,
                message,
                scope.session().map(str::to_owned),
            )?
            .0,
        )
    };
    Ok(saved)
}

/// The scope of a restore, checked against the snapshot: the session or path must exist
/// there.
fn checked_scope(cx: &Context, opts: &RestoreOptions, snap_id: ObjectId) -> Result<Scope> {
    if opts.session.is_some() && opts.path.is_some() {
        return Err(Error::Usage(
            "--session and --path cannot be used together".into(),
        ));
    }
    let scope = Scope::of(opts.session.as_deref(), opts.path.as_deref());
    if scope == Scope::All {
        return Ok(scope);
    }
    if let Scope::Path(p) = &scope
        && !in_roots(p)
    {
        return Err(Error::Usage(format!(
            "--path {}: a snapshot path starts with config/, state/sessions/ or state/journal/",
            String::from_utf8_lossy(p)
        )));
    }
    let t = flatten_part(
        &cx.objects,
        &cx.objects.read_snapshot(&snap_id)?,
        &|p: &[u8]| reach(&scope, p),
    )?;
    let found = match &scope {
        Scope::Session(s) => t
            .leaves
            .keys()
            .chain(t.dirs.iter())
            .any(|p| session_of(p) == Some(s.as_bytes())),
        Scope::Path(x) => t.leaves.contains_key(x) || t.dirs.contains(x),
        Scope::All => true,
    };
    if found {
        return Ok(scope);
    }
    Err(match scope {
        Scope::Session(s) => Error::UnknownSession(s, format!("snapshot {}", snap_id.short(12))),
        Scope::Path(p) => Error::UnknownPath {
            path: String::from_utf8_lossy(&p).into_owned(),
            snapshot: snap_id.short(12),
        },
        Scope::All => unreachable!("returned above"),
    })
}

/// The restore proper, under the lock: also used to roll an interrupted restore forward.
pub(crate) fn restore_locked(
    cx: &Context,
    snap_id: ObjectId,
    scope: &Scope,
    dry_run: bool,
) -> Result<(Plan, Option<ObjectId>)> {
    restore_locked_with(cx, snap_id, scope, dry_run, None).map(|(plan, head, _)| (plan, head))
}

/// [`restore_locked`] with the stat cache a scoped safety save left (loaded when `None`).
fn restore_locked_with(
    cx: &Context,
    snap_id: ObjectId,
    scope: &Scope,
    dry_run: bool,
    cache: Option<StatCache>,
) -> Result<(Plan, Option<ObjectId>, Vec<Quarantined>)> {
    let (plan, target, quarantined) = apply_restore(cx, snap_id, scope, dry_run, cache)?;
    if dry_run {
        return Ok((plan, None, quarantined));
    }
    let sel = |p: &[u8]| scope.contains(p);
    // Record the restore as a snapshot on top of the head.
    let head = head_state(cx)?;
    if *scope != Scope::All
        && let Some((hid, hs)) = &head
    {
        // Only the scope is recorded: its part of the head is replaced, every other tree is
        // reused by id (docs/adr/0008).
        let reach = |p: &[u8]| reach(scope, p);
        let base = flatten_part(&cx.objects, hs, &reach)?;
        let modes = graft_modes(Some(hs), &reach, &target);
        let recorded = hs
            .extra
            .iter()
            .find(|(k, _)| k == objects_format::modes::KEY)
            .cloned();
        let root = graft(&cx.objects, Some(&hs.root), &reach, &target, None)?;
        let new_head = if root == hs.root && modes == recorded {
            None
        } else {
            let batch = cx.objects.batch()?;
            let root = graft(&cx.objects, Some(&hs.root), &reach, &target, Some(&batch))?;
            Some(
                commit_part(
                    cx,
                    batch,
                    &base,
                    &target,
                    (*hid, hs),
                    root,
                    modes,
                    &restore_message(scope, snap_id),
                    scope.session().map(str::to_owned),
                )?
                .0,
            )
        };
        remove_intent(cx)?;
        return Ok((plan, new_head, quarantined));
    }
    let base = match &head {
        Some((_, s)) => match flatten_snapshot(&cx.objects, s) {
            Ok(f) => f,
            // Damaged head trees: as in a save, record the restored state in full.
            Err(e) if e.is_damage() && *scope == Scope::All => Flat::with_roots(),
            Err(e) => return Err(e),
        },
        None => Flat::with_roots(),
    };
    let new_flat = match scope {
        Scope::All => target,
        _ => {
            let mut m = base.filtered(|p| !sel(p));
            m.leaves.extend(target.leaves);
            m.dirs.extend(target.dirs);
            m
        }
    };
    let root = write_trees(&new_flat, None)?;
    let new_head = if head
        .as_ref()
        .is_some_and(|(_, s)| s.root == root && same_modes(s, &new_flat))
    {
        None
    } else {
        let batch = cx.objects.batch()?;
        let root = write_trees(&new_flat, Some(&batch))?;
        let msg = restore_message(scope, snap_id);
        Some(
            commit_snapshot(
                cx,
                batch,
                &new_flat,
                &base,
                head.as_ref().map(|h| h.0),
                root,
                &msg,
                scope.session().map(str::to_owned),
                conflicts::carried(head.as_ref().map(|h| &h.1), &[])?,
            )?
            .0,
        )
    };
    remove_intent(cx)?;
    Ok((plan, new_head, quarantined))
}

/// Removes `restore-intent` once the restore is recorded, durably; nothing when the restore
/// wrote none (its plan was empty).
fn remove_intent(cx: &Context) -> Result<()> {
    let intent_path = cx.snap_dir.join("restore-intent");
    match std::fs::remove_file(&intent_path) {
        Ok(()) => {
            durable::sync_dir(&cx.snap_dir).map_err(Error::at("syncing", &cx.snap_dir, "restore"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::at("removing", &intent_path, "restore")(e)),
    }
}

/// The message of the snapshot that records a restore.
fn restore_message(scope: &Scope, snap_id: ObjectId) -> String {
    match scope {
        Scope::Session(s) => format!("restore session {s} from {}", snap_id.short(12)),
        Scope::Path(p) => format!(
            "restore {} from {}",
            String::from_utf8_lossy(p),
            snap_id.short(12)
        ),
        Scope::All => format!("restore {}", snap_id.short(12)),
    }
}

/// The live layout for restoring `target`: the excludes in force, plus those of the target's
/// own config file (`state.exclude`), so that a restore that also puts back another version of
/// the config file deletes nothing that either version excludes (docs/config.md, "Excludes").
fn layout_for(cx: &Context, target: &Flat) -> crate::snapshot::Layout {
    let mut layout = cx.layout();
    let path = format!("config/{}", crate::config::FILE_NAME);
    let Some(leaf) = target.leaves.get(path.as_bytes()) else {
        return layout;
    };
    if leaf.kind != objects_format::EntryKind::File || leaf.size > 1 << 20 {
        return layout;
    }
    let theirs = cx
        .objects
        .read_blob(&leaf.id)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| crate::config::Config::parse(std::path::Path::new(&path), &t).ok());
    if let Some(c) = theirs
        && !c.exclude.is_empty()
    {
        let mut patterns = cx.excludes.patterns().to_vec();
        patterns.extend(c.exclude);
        if let Ok(ex) = crate::snapshot::exclude::Excludes::new(&patterns) {
            layout.excludes = Some(std::sync::Arc::new(ex));
        }
    }
    layout
}

/// Makes the live files in `scope` equal to a snapshot, under a restore intent (a crash
/// rolls it forward); records nothing. Returns the plan and the target content.
fn apply_restore(
    cx: &Context,
    snap_id: ObjectId,
    scope: &Scope,
    dry_run: bool,
    cache: Option<StatCache>,
) -> Result<(Plan, Flat, Vec<Quarantined>)> {
    let intent_path = cx.snap_dir.join("restore-intent");
    let snap = cx.objects.read_snapshot(&snap_id)?;
    let sel = |p: &[u8]| scope.contains(p);
    // Only the trees of the scope (and those above it) are read.
    let target = flatten_part(&cx.objects, &snap, &|p: &[u8]| reach(scope, p))?;
    let layout = layout_for(cx, &target);
    let mut cache = cache.unwrap_or_else(|| cx.load_statcache());
    let live = read_live_vouched(&layout, &sel, &mut cache)?;
    let mut live_flat = live.flat;
    let mut target = target;
    // What the snapshot policy does not materialise stays as it is live; what the stat cache
    // vouches for is read again before the plan trusts it (the cache never decides what a
    // restore writes).
    let skipped = restore::apply_policy(&cx.objects, &mut target, &mut live_flat)?;
    restore::confirm_vouched(
        &cx.objects,
        &layout,
        &target,
        &mut live_flat,
        &live.vouched,
        &mut cache,
    )?;
    // A corrupt descriptor is never "already equal": it is rewritten. One modified in the
    // last seconds, which a save leaves alone (it may be a write in progress), is moved to
    // quarantine first: the user asked for this path, and what it held is kept.
    for (rel, _) in &live.corrupt {
        live_flat.leaves.remove(rel);
    }
    let mut plan = restore::plan(&target, &live_flat);
    cx.note_skipped("not restored", &skipped);
    plan.skipped = skipped;
    if dry_run {
        return Ok((plan, target, Vec::new()));
    }
    let mut quarantined = Vec::new();
    for (rel, why) in &live.corrupt {
        if target.leaves.contains_key(rel) && layout.abs(rel).exists() {
            let mut q = quarantine(cx, &layout, rel, why, None, &mut cache)?;
            // The restore writes the snapshot's version in its place.
            q.restored_from = Some(snap_id.to_hex());
            quarantined.push(q);
        }
    }
    // Nothing to write live (the files already are the target's): no intent either, so no
    // syncs for it; a crash from here on loses nothing, the live files being the target's
    // already and the safety save having recorded them.
    if !plan.is_empty() {
        write_intent(
            &intent_path,
            &serde_json::to_vec(&Intent {
                snapshot: snap_id.to_hex(),
                session: scope.session().map(str::to_owned),
                path: match scope {
                    Scope::Path(p) => Some(String::from_utf8_lossy(p).into_owned()),
                    _ => None,
                },
            })
            .map_err(std::io::Error::other)?,
        )?;
        if let Err(e) = restore::apply(&cx.objects, &layout, &target, &plan, &*cx.progress) {
            // Nothing was renamed if content failed verification; a later I/O error leaves
            // each file old or new. Either way this restore is over: do not roll it forward.
            let _ = std::fs::remove_file(&intent_path);
            return Err(e);
        }
        let now = now_ns();
        for p in plan.create.iter().chain(&plan.update) {
            if let (Some(l), Ok(m)) = (
                target.leaves.get(p),
                std::fs::symlink_metadata(layout.abs(p)),
            ) && m.is_file()
            {
                cache.insert(p.clone(), Stat::of(&m), l.kind, l.id, now);
            }
        }
    }
    cache.retain(in_roots);
    let cache_path = cx.statcache_path();
    cache
        .save(&cache_path)
        .map_err(Error::at("writing", &cache_path, "restore"))?;
    Ok((plan, target, quarantined))
}

/// Makes the live files in `scope` equal to a snapshot without recording a snapshot (the
/// caller records what it did, e.g. a conflict resolution).
pub(crate) fn materialize(cx: &Context, snap_id: ObjectId, scope: &Scope) -> Result<Plan> {
    let (plan, ..) = apply_restore(cx, snap_id, scope, false, None)?;
    remove_intent(cx)?;
    Ok(plan)
}

/// The snapshot a restore is about: its revision, or the head.
fn restore_target(cx: &Context, opts: &RestoreOptions) -> Result<ObjectId> {
    match &opts.rev {
        Some(r) => crate::history::resolve(cx, r),
        None => cx.refs.get(HEAD)?.ok_or(Error::NoSnapshot),
    }
}

fn restore_to(
    cx: &Context,
    opts: &RestoreOptions,
    dir: &std::path::Path,
) -> Result<RestoreOutcome> {
    // Nothing here reads the live files' stat cache.
    cx.forget_statcache();
    let snap_id = restore_target(cx, opts)?;
    let scope = checked_scope(cx, opts, snap_id)?;
    let snap = cx.objects.read_snapshot(&snap_id)?;
    let layout = Layout::under(dir);
    if !opts.dry_run && absent_or_empty(&layout.state)? && absent_or_empty(&layout.config)? {
        // A new folder: written straight from the trees (no file lists, no temp files).
        let plan = restore::export(
            &cx.objects,
            &snap,
            &|p: &[u8]| reach(&scope, p),
            &layout,
            &*cx.progress,
        )?;
        cx.note_skipped("not restored", &plan.skipped);
        return Ok(RestoreOutcome {
            snapshot: snap_id,
            plan,
            auto_saved: None,
            new_head: None,
            quarantined: Vec::new(),
        });
    }
    let sel = |p: &[u8]| scope.contains(p);
    let target = flatten_part(&cx.objects, &snap, &|p: &[u8]| reach(&scope, p))?;
    if !opts.dry_run {
        fs::create_dir_all(&layout.state)?;
        fs::create_dir_all(&layout.config)?;
    }
    let mut cache = StatCache::default();
    let live = read_live(&layout, &sel, &mut cache, None, &crate::progress::Silent)?;
    let (mut target, mut live_flat) = (target, live.flat);
    let skipped = restore::apply_policy(&cx.objects, &mut target, &mut live_flat)?;
    let mut plan = restore::plan(&target, &live_flat);
    cx.note_skipped("not restored", &skipped);
    plan.skipped = skipped;
    if !opts.dry_run {
        // An export, like `tar -x`: nothing synced (docs/safety.md (c), "restore --to").
        restore::apply_with(
            &cx.objects,
            &layout,
            &target,
            &plan,
            &*cx.progress,
            restore::Durability::Unsynced,
        )?;
    }
    Ok(RestoreOutcome {
        snapshot: snap_id,
        plan,
        auto_saved: None,
        new_head: None,
        quarantined: Vec::new(),
    })
}

/// True when `dir` does not exist or is an empty folder.
fn absent_or_empty(dir: &std::path::Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::file(e, "reading", dir.to_path_buf(), "restore")),
    }
}

/// Reads a restore intent left by an interrupted restore (without changing anything).
///
/// # Errors
/// I/O errors reading the file.
pub(crate) fn pending_restore(cx: &Context) -> Result<Pending> {
    let p = cx.snap_dir.join("restore-intent");
    match std::fs::read(&p) {
        Ok(b) => match parse_intent(&b) {
            Ok((IntentTarget::Snapshot(id), scope)) => Ok(Pending::Restore(id, scope)),
            // Written by `sync pull` before it moves the head: whatever the head is now.
            Ok((IntentTarget::Head, _)) => match cx.refs.get(HEAD) {
                Ok(Some(h)) => Ok(Pending::Restore(h, Scope::All)),
                Ok(None) => Ok(Pending::Corrupt(
                    "it asks for the head, and there is no head".into(),
                )),
                Err(e) => Ok(Pending::HeadUnreadable(e)),
            },
            Err(why) => Ok(Pending::Corrupt(why)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Pending::None),
        Err(e) => Err(Error::Io(std::io::Error::new(
            e.kind(),
            format!("{e} (reading {})", p.display()),
        ))),
    }
}

/// What `restore-intent` asks for.
#[derive(Debug)]
pub(crate) enum Pending {
    /// No intent.
    None,
    /// Make this snapshot (or this part of it) live.
    Restore(ObjectId, Scope),
    /// The intent does not parse: why. (`write_atomic` wrote it, so a crash cannot tear it:
    /// something else damaged it.)
    Corrupt(String),
    /// It asks for the head, which cannot be read now (damaged: left for `state recover`).
    HeadUnreadable(Error),
}

/// The snapshot an intent names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntentTarget {
    /// A snapshot id.
    Snapshot(ObjectId),
    /// The word `head`.
    Head,
}

/// Parses `restore-intent`: `{"snapshot": "<hex>" | "head", "session": null | "<id>"}`.
pub(crate) fn parse_intent(bytes: &[u8]) -> std::result::Result<(IntentTarget, Scope), String> {
    let i: Intent = serde_json::from_slice(bytes).map_err(|e| format!("not an intent: {e}"))?;
    let target = if i.snapshot == "head" {
        IntentTarget::Head
    } else {
        IntentTarget::Snapshot(ObjectId::from_hex(&i.snapshot).map_err(|_| {
            format!(
                "names {:?}, which is not a snapshot id",
                i.snapshot.chars().take(80).collect::<String>()
            )
        })?)
    };
    Ok((target, Scope::of(i.session.as_deref(), i.path.as_deref())))
}

#[cfg(test)]
mod tests {
    use objects_format::{EntryKind, ObjectId, Snapshot};

    use super::*;
    use crate::snapshot::Leaf;
    use crate::store::ObjectStore;

    fn leaf(n: u8, mode: u16) -> Leaf {
        Leaf {
            kind: EntryKind::File,
            flags: 0,
            mode,
            size: u64::from(n),
            id: ObjectId([n; 32]),
        }
    }

    fn flat(files: &[(&str, u8, u16)], dirs: &[&str]) -> Flat {
        let mut f = Flat::with_roots();
        for (p, n, m) in files {
            let (parent, _) = p.rsplit_once('/').unwrap();
            f.add_dir_with_parents(parent.as_bytes());
            f.leaves.insert(p.as_bytes().to_vec(), leaf(*n, *m));
        }
        for d in dirs {
            f.add_dir_with_parents(d.as_bytes());
        }
        f
    }

    /// A graft gives the ids, content and modes a whole rebuild gives, for every kind of
    /// scope; `flatten_part` reads what `flatten_snapshot(..).filtered(..)` reads.
    #[test]
    fn a_graft_equals_the_whole_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::new(dir.path().to_path_buf());
        let head = flat(
            &[
                ("config/a.toml", 1, 0o644),
                ("config/themes/x.toml", 2, 0o644),
                ("state/sessions/s1.json", 3, 0o600),
                ("state/sessions/s1/tabs/t1.json", 4, 0o644),
                ("state/sessions/s10/x", 5, 0o644),
                ("state/sessions/s2/y", 6, 0o640),
                ("state/journal/0001.jsonl", 7, 0o644),
            ],
            &["state/sessions/s1/empty", "config/emptydir"],
        );
        let batch = store.batch().unwrap();
        let root = write_trees(&head, Some(&batch)).unwrap();
        batch.commit().unwrap();
        let snap = Snapshot {
            root,
            parents: vec![],
            time_ns: 0,
            device: "d".into(),
            message: String::new(),
            session: None,
            summary: objects_format::ChangeSummary::default(),
            extra: crate::snapshot::with_modes(Vec::new(), &head),
        };
        let new = flat(
            &[
                ("config/a.toml", 11, 0o600),
                ("config/new/b.toml", 12, 0o644),
                ("state/sessions/s1.scrollback", 13, 0o644),
                ("state/sessions/s1/tabs/t2.json", 14, 0o640),
                ("state/sessions/s2/y", 15, 0o640),
                ("state/sessions/s3/z", 16, 0o644),
                ("state/journal/0002.jsonl", 17, 0o644),
            ],
            &["state/sessions/s1/other-empty"],
        );
        for scope in [
            Scope::Session("s1".into()),
            Scope::Session("s3".into()),
            Scope::Session("s10".into()),
            Scope::Path(b"config".to_vec()),
            Scope::Path(b"config/themes".to_vec()),
            Scope::Path(b"state/sessions/s1/tabs".to_vec()),
            Scope::Path(b"state/journal/0001.jsonl".to_vec()),
        ] {
            let sel = |p: &[u8]| scope.contains(p);
            let r = |p: &[u8]| reach(&scope, p);
            assert_eq!(
                flatten_part(&store, &snap, &r).unwrap(),
                flatten_snapshot(&store, &snap).unwrap().filtered(sel),
                "{scope:?}"
            );
            // What a whole save of the head with the scope's part replaced records.
            let part = new.filtered(sel);
            let mut whole = head.filtered(|p| !sel(p));
            whole.leaves.extend(part.leaves.clone());
            whole.dirs.extend(part.dirs.clone());
            assert_eq!(
                graft(&store, Some(&root), &r, &part, None).unwrap(),
                write_trees(&whole, None).unwrap(),
                "{scope:?}"
            );
            // The grafted modes table gives every file of the whole its mode.
            let modes = graft_modes(Some(&snap), &r, &part);
            let table = modes
                .map(|(_, v)| objects_format::modes::Modes::decode(&v).unwrap())
                .unwrap_or_default();
            for (p, l) in &whole.leaves {
                assert_eq!(table.mode(p, false), l.mode | 0o400, "{scope:?} {p:?}");
            }
        }
    }
}
