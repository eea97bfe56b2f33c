//! `save` and `restore`: the two operations that touch live files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fs_err as fs;
use objects_format::{ChangeSummary, Object, ObjectId, Snapshot};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::snapshot::conflicts;
use crate::snapshot::restore::{self, Plan};
use crate::snapshot::save::read_live;
use crate::snapshot::{Flat, Layout, flatten, in_roots, session_of, write_trees};
use crate::store::refs::{HEAD, RefTxn};
use crate::store::statcache::{Stat, StatCache};
use crate::store::{Batch, BatchStats, durable, now_ns};

/// True for errors that mean stored data is damaged (missing, corrupt or of the wrong kind).
fn is_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::MissingObject { .. } | Error::CorruptObject { .. } | Error::WrongKind { .. }
    )
}

/// True when the file was modified less than [`DESCRIPTOR_SETTLE`] ago (or its age is unknown).
fn is_young(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|m| m.elapsed().ok())
        .is_none_or(|age| age < DESCRIPTOR_SETTLE)
}

/// How old a changed descriptor must be before it is judged corrupt at startup.
pub const DESCRIPTOR_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

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

/// A descriptor that was found corrupt and moved aside.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    /// Snapshot path of the descriptor.
    pub path: String,
    /// What was wrong.
    pub why: String,
    /// Where the bad file now is.
    pub moved_to: PathBuf,
    /// Whether the last good version was put back.
    pub restored_from: Option<String>,
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

/// Encodes a session id for use as a ref name component.
#[must_use]
pub fn session_ref(session: &[u8]) -> String {
    let mut s = String::from("sessions/");
    for (i, &b) in session.iter().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// What part of the state an operation covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Everything under the roots.
    #[default]
    All,
    /// One session's files (`state/sessions/<id>.*`, `state/sessions/<id>/…`).
    Session(String),
    /// One file or folder, by snapshot path (`config/shelldone.toml`, `state/journal`).
    Path(Vec<u8>),
}

impl Scope {
    /// From the `--session` / `--path` options (at most one of them is set).
    #[must_use]
    pub fn of(session: Option<&str>, path: Option<&str>) -> Scope {
        match (session, path) {
            (Some(s), _) => Scope::Session(s.to_owned()),
            (None, Some(p)) => Scope::Path(p.trim_end_matches('/').as_bytes().to_vec()),
            (None, None) => Scope::All,
        }
    }

    /// The session, for a session scope.
    #[must_use]
    pub fn session(&self) -> Option<&str> {
        match self {
            Scope::Session(s) => Some(s),
            _ => None,
        }
    }

    /// True for paths the scope covers. A path scope also covers the folders above it, so that
    /// a walk reaches it.
    #[must_use]
    pub fn contains(&self, p: &[u8]) -> bool {
        match self {
            Scope::All => in_roots(p),
            Scope::Session(id) => session_of(p).is_some_and(|s| s == id.as_bytes()),
            Scope::Path(x) => {
                in_roots(p)
                    && (p == x.as_slice()
                        || (p.starts_with(x) && p.get(x.len()) == Some(&b'/'))
                        || (x.starts_with(p) && x.get(p.len()) == Some(&b'/')))
            }
        }
    }
}

fn sessions_digest(flat: &Flat) -> BTreeMap<Vec<u8>, blake3::Hash> {
    let mut hashers: BTreeMap<Vec<u8>, blake3::Hasher> = BTreeMap::new();
    for (p, l) in &flat.leaves {
        if let Some(s) = session_of(p) {
            let h = hashers.entry(s.to_vec()).or_default();
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
            h.update(&[l.kind.code(), l.flags]);
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
fn head_state(cx: &Context) -> Result<Option<(ObjectId, Snapshot)>> {
    match cx.refs.get(HEAD)? {
        None => Ok(None),
        Some(id) => Ok(Some((id, ref_snapshot(cx, HEAD, id)?))),
    }
}

/// Reads the snapshot a ref names; when it is missing, corrupt or not a snapshot the error
/// names the ref's file too ([`Error::CorruptFile`]): the ref may be the damaged part, and
/// `state recover` repairs either.
pub(crate) fn ref_snapshot(cx: &Context, name: &str, id: ObjectId) -> Result<Snapshot> {
    cx.objects.read_snapshot(&id).map_err(|e| {
        if is_damage(&e) {
            let place = if cx.refs.loose_path(name).is_file() {
                cx.refs.loose_path(name)
            } else {
                cx.refs.packed_path().to_path_buf()
            };
            Error::corrupt_file(
                place,
                format!("{name} names {id}, which cannot be read: {e}"),
            )
        } else {
            e
        }
    })
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
    let live = read_live(&layout, &sel, &mut cache, Some(&batch))?;
    cx.note_skipped("not saved", &live.skipped);
    let head = head_state(cx)?;
    let mut new_flat = live.flat;
    let mut quarantined = Vec::new();
    let mut head_flat_cache: Option<Flat> = None;
    let mut head_flat = |st: &Context| -> Result<Flat> {
        if head_flat_cache.is_none() {
            head_flat_cache = Some(match &head {
                Some((_, s)) => flatten(&st.objects, &s.root)?,
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
    if let Some((hid, hs)) = &head
        && hs.root == root
        && conflicts::carried(Some(hs), &[])? == extra
    {
        batch.commit()?;
        cache.retain(in_roots);
        cache.save(&cx.statcache_path())?;
        return Ok(SaveOutcome {
            id: Some(*hid),
            created: false,
            summary: ChangeSummary::default(),
            sessions: Vec::new(),
            objects_written: 0,
            bytes_written: 0,
            quarantined,
            warnings: Vec::new(),
        });
    }
    let mut warnings = Vec::new();
    let base = match head_flat(cx) {
        Ok(b) => b,
        // The head's trees are damaged (docs/safety.md, "Damaged store files"): the live
        // state is still recorded, every file as new, so the save stores again whatever
        // the live files still hold instead of refusing until the objects come back.
        Err(e) if is_damage(&e) => {
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
    cache.save(&cx.statcache_path())?;
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
#[allow(clippy::too_many_arguments)]
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
        extra,
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

/// Moves a corrupt descriptor to `state/quarantine/<time>/…` and puts back its last good
/// version from the head snapshot when there is one.
fn quarantine(
    cx: &Context,
    layout: &Layout,
    rel: &[u8],
    why: &str,
    good: Option<crate::snapshot::Leaf>,
    cache: &mut StatCache,
) -> Result<Quarantined> {
    let src = layout.abs(rel);
    let qdir = cx
        .paths
        .state_dir
        .join("quarantine")
        .join(format!("{}", now_ns()));
    let dest = qdir.join(std::ffi::OsStr::new(&*String::from_utf8_lossy(
        rel.strip_prefix(b"state/").unwrap_or(rel),
    )));
    fs::create_dir_all(dest.parent().expect("has parent"))?;
    fs::rename(&src, &dest)?;
    durable::sync_dir(src.parent().expect("has parent"))?;
    let mut restored_from = None;
    if let Some(leaf) = good {
        let mut one = Flat::with_roots();
        one.leaves.insert(rel.to_vec(), leaf);
        let mut plan = Plan::default();
        plan.create.push(rel.to_vec());
        restore::apply(&cx.objects, layout, &one, &plan)?;
        if let Ok(m) = std::fs::symlink_metadata(&src) {
            cache.insert(rel.to_vec(), Stat::of(&m), leaf.kind, leaf.id, now_ns());
        }
        restored_from = cx.refs.get(HEAD)?.map(|h| h.to_hex());
    }
    Ok(Quarantined {
        path: String::from_utf8_lossy(rel).into_owned(),
        why: why.to_owned(),
        moved_to: dest,
        restored_from,
    })
}

/// Validates every session descriptor that changed since it was last read (the stat cache
/// vouches for the others); each corrupt one is moved to `state/quarantine/<time>/` and its
/// last good version put back from the head snapshot. Writes no snapshot.
///
/// # Errors
/// I/O or store errors.
pub(crate) fn repair_descriptors(cx: &Context, settle: bool) -> Result<Vec<Quarantined>> {
    let bad = corrupt_descriptors(cx, settle)?;
    let mut out = Vec::new();
    if bad.is_empty() {
        return Ok(out);
    }
    let mut cache = StatCache::load(&cx.statcache_path());
    let layout = cx.layout();
    let head = match head_state(cx)? {
        Some((_, s)) => flatten(&cx.objects, &s.root)?,
        None => Flat::with_roots(),
    };
    for (rel, why) in bad {
        out.push(quarantine(
            cx,
            &layout,
            &rel,
            &why,
            head.leaves.get(&rel).copied(),
            &mut cache,
        )?);
    }
    cache.save(&cx.statcache_path())?;
    Ok(out)
}

/// Session descriptors (`state/sessions/**.json`) that do not parse. Only descriptors whose
/// stat changed since they were last read are read (a cached one was valid when saved), so
/// this is a directory walk and a stat per descriptor in the common case.
///
/// # Errors
/// I/O errors.
pub(crate) fn corrupt_descriptors(cx: &Context, settle: bool) -> Result<Vec<(Vec<u8>, String)>> {
    use std::os::unix::ffi::OsStrExt;
    let base = cx.paths.state_dir.join("sessions");
    let mut out = Vec::new();
    if !base.is_dir() {
        return Ok(out);
    }
    let cache = StatCache::load(&cx.statcache_path());
    for e in walkdir::WalkDir::new(&base)
        .follow_links(false)
        .min_depth(1)
        .max_depth(2)
    {
        let Ok(e) = e else { continue };
        let name = e.file_name().as_bytes();
        if !e.file_type().is_file()
            || !name.ends_with(b".json")
            || crate::store::durable::is_tmp_name(name)
        {
            continue;
        }
        let mut rel = b"state/sessions/".to_vec();
        rel.extend_from_slice(
            e.path()
                .strip_prefix(&base)
                .expect("under base")
                .as_os_str()
                .as_bytes(),
        );
        let Ok(meta) = e.metadata() else { continue };
        if cache.lookup(&rel, &Stat::of(&meta)).is_some() {
            continue;
        }
        // A descriptor modified in the last moments may be mid-write by the terminal: leave
        // it; it is checked again by the next command (and by every save).
        if settle
            && meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_none_or(|age| age < DESCRIPTOR_SETTLE)
        {
            continue;
        }
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        if let Err(why) = crate::snapshot::save::validate_descriptor(&bytes) {
            out.push((rel, why));
        }
    }
    Ok(out)
}

/// The root tree id the live state would have if saved now (no object is written; unchanged
/// files are not read thanks to the stat cache). Used to detect changes cheaply.
///
/// # Errors
/// I/O errors.
pub fn live_root(cx: &Context) -> Result<ObjectId> {
    let mut cache = StatCache::load(&cx.statcache_path());
    let live = read_live(&cx.layout(), &in_roots, &mut cache, None)?;
    write_trees(&live.flat, None)
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
    let auto_saved = if opts.dry_run {
        None
    } else {
        // Whatever the restore overwrites is saved first; an emptied root is saved as it
        // is (restoring is how a user repairs it).
        let o = save_locked(
            cx,
            &SaveOptions {
                message: format!("auto-save before restoring {}", snap_id.short(12)),
                allow_empty: true,
                ..SaveOptions::default()
            },
        )?;
        if o.created { o.id } else { None }
    };
    let (plan, new_head) = restore_locked(cx, snap_id, &scope, opts.dry_run)?;
    Ok(RestoreOutcome {
        snapshot: snap_id,
        plan,
        auto_saved,
        new_head,
    })
}

/// The scope of a restore, checked against the snapshot: the session or path must exist
/// there.
fn checked_scope(cx: &Context, opts: &RestoreOptions, snap_id: ObjectId) -> Result<Scope> {
    if opts.session.is_some() && opts.path.is_some() {
        return Err(Error::Invalid(
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
        return Err(Error::Invalid(format!(
            "--path {}: a snapshot path starts with config/, state/sessions/ or state/journal/",
            String::from_utf8_lossy(p)
        )));
    }
    let t = flatten(&cx.objects, &cx.objects.read_snapshot(&snap_id)?.root)?;
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
        Scope::Path(p) => Error::Invalid(format!(
            "no file or folder '{}' in snapshot {}",
            String::from_utf8_lossy(&p),
            snap_id.short(12)
        )),
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
    let (plan, target) = apply_restore(cx, snap_id, scope, dry_run)?;
    if dry_run {
        return Ok((plan, None));
    }
    let intent_path = cx.snap_dir.join("restore-intent");
    let sel = |p: &[u8]| scope.contains(p);
    // Record the restore as a snapshot on top of the head.
    let head = head_state(cx)?;
    let base = match &head {
        Some((_, s)) => match flatten(&cx.objects, &s.root) {
            Ok(f) => f,
            // Damaged head trees: as in a save, record the restored state in full.
            Err(e) if is_damage(&e) && *scope == Scope::All => Flat::with_roots(),
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
    let new_head = if head.as_ref().is_some_and(|(_, s)| s.root == root) {
        None
    } else {
        let batch = cx.objects.batch()?;
        let root = write_trees(&new_flat, Some(&batch))?;
        let msg = match scope {
            Scope::Session(s) => format!("restore session {s} from {}", snap_id.short(12)),
            Scope::Path(p) => format!(
                "restore {} from {}",
                String::from_utf8_lossy(p),
                snap_id.short(12)
            ),
            Scope::All => format!("restore {}", snap_id.short(12)),
        };
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
    fs::remove_file(&intent_path)?;
    durable::sync_dir(&cx.snap_dir)?;
    Ok((plan, new_head))
}

/// Makes the live files in `scope` equal to a snapshot, under a restore intent (a crash
/// rolls it forward); records nothing. Returns the plan and the target content.
fn apply_restore(
    cx: &Context,
    snap_id: ObjectId,
    scope: &Scope,
    dry_run: bool,
) -> Result<(Plan, Flat)> {
    let intent_path = cx.snap_dir.join("restore-intent");
    let snap = cx.objects.read_snapshot(&snap_id)?;
    let sel = |p: &[u8]| scope.contains(p);
    let target = flatten(&cx.objects, &snap.root)?.filtered(sel);
    let layout = cx.layout();
    let mut cache = StatCache::load(&cx.statcache_path());
    let live = read_live(&layout, &sel, &mut cache, None)?;
    let mut live_flat = live.flat;
    let mut target = target;
    // What the snapshot policy does not materialise stays as it is live; what the stat cache
    // vouches for is read again before the plan trusts it (the cache never decides what a
    // restore writes).
    let skipped = restore::apply_policy(&cx.objects, &mut target, &mut live_flat)?;
    restore::confirm_vouched(&layout, &target, &mut live_flat, &live.vouched, &mut cache)?;
    for (rel, _) in &live.corrupt {
        if is_young(&layout.abs(rel)) {
            // Possibly being written by the terminal right now: neither rewrite nor delete it.
            target.leaves.remove(rel);
            live_flat.leaves.remove(rel);
        } else {
            // A settled corrupt descriptor is never "already equal": force a rewrite.
            live_flat.leaves.remove(rel);
        }
    }
    let mut plan = restore::plan(&target, &live_flat);
    cx.note_skipped("not restored", &skipped);
    plan.skipped = skipped;
    if dry_run {
        return Ok((plan, target));
    }
    durable::write_atomic(
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
    if let Err(e) = restore::apply(&cx.objects, &layout, &target, &plan) {
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
    cache.retain(in_roots);
    cache.save(&cx.statcache_path())?;
    Ok((plan, target))
}

/// Makes the live files in `scope` equal to a snapshot without recording a snapshot (the
/// caller records what it did, e.g. a conflict resolution).
pub(crate) fn materialize(cx: &Context, snap_id: ObjectId, scope: &Scope) -> Result<Plan> {
    let (plan, _) = apply_restore(cx, snap_id, scope, false)?;
    fs::remove_file(cx.snap_dir.join("restore-intent"))?;
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
    let snap_id = restore_target(cx, opts)?;
    let scope = checked_scope(cx, opts, snap_id)?;
    let snap = cx.objects.read_snapshot(&snap_id)?;
    let sel = |p: &[u8]| scope.contains(p);
    let target = flatten(&cx.objects, &snap.root)?.filtered(sel);
    let layout = Layout::under(dir);
    if !opts.dry_run {
        fs::create_dir_all(&layout.state)?;
        fs::create_dir_all(&layout.config)?;
    }
    let mut cache = StatCache::default();
    let live = read_live(&layout, &sel, &mut cache, None)?;
    let (mut target, mut live_flat) = (target, live.flat);
    let skipped = restore::apply_policy(&cx.objects, &mut target, &mut live_flat)?;
    let mut plan = restore::plan(&target, &live_flat);
    cx.note_skipped("not restored", &skipped);
    plan.skipped = skipped;
    if !opts.dry_run {
        restore::apply(&cx.objects, &layout, &target, &plan)?;
    }
    Ok(RestoreOutcome {
        snapshot: snap_id,
        plan,
        auto_saved: None,
        new_head: None,
    })
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
