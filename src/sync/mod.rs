//! Sync: object transfer between the local store and a remote, then ref integration.
//!
//! Push sends what the remote lacks and moves this device's refs there (`<device>/…`, CAS).
//! Pull fetches every device's refs and objects (verified before anything is staged), records
//! them as remote-tracking refs (`remotes/<remote>/<device>/…`), then integrates each other
//! device's head into the local head: fast-forward when possible, otherwise a three-way merge
//! per session, per journal file and per preference key, never overwriting a concurrent change
//! (the other version stays under `conflicts/<device>/…` and is reported).

pub mod graph;
pub mod merge;
pub mod resolve;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use fs_err as fs;
use objects_format::{ObjectId, Snapshot};
use serde::Serialize;

use crate::context::Context;
use crate::error::{Error, Result};
pub use crate::remote::RemoteConfig;
use crate::remote::dir::DirRemote;
use crate::remote::dryrun::DryRun;
use crate::remote::git::GitRemote;
use crate::remote::{Progress, RefUpdate, Remote, TransferStats, is_git_url};
use crate::snapshot::conflicts;
use crate::snapshot::{Flat, flatten, write_trees};
use crate::store::durable;
use crate::store::refs::HEAD;
use crate::store::refs::session_ref;
use crate::transfer::PlainRemote;

pub use crate::snapshot::conflicts::{Conflict, ConflictKind};

/// How much history to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// All history.
    #[default]
    Full,
    /// Each device's head and the history back to where the heads meet (their merge bases);
    /// nothing older.
    Partial,
}

/// Options for pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Only fetch; do not integrate or touch live files.
    pub no_restore: bool,
    /// History depth.
    pub strategy: Strategy,
    /// Integrate only these sessions (others keep their local version).
    pub sessions: Vec<String>,
    /// Merge a device whose history shares no snapshot with this store's.
    pub allow_unrelated: bool,
}

/// A session `pull --session` did not take.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedSession {
    /// The other device.
    pub device: String,
    /// The session.
    pub session: String,
    /// Why.
    pub why: String,
}

/// What a pull did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PullReport {
    /// Objects and bytes received.
    pub received: TransferStats,
    /// Devices seen on the remote.
    pub devices: Vec<String>,
    /// The device whose head this device (which had no history) adopted.
    pub adopted: Option<String>,
    /// Devices fast-forwarded to.
    pub fast_forwarded: Vec<String>,
    /// Devices merged.
    pub merged: Vec<String>,
    /// Sessions whose content changed here.
    pub sessions_updated: Vec<String>,
    /// Sessions `--session` did not take.
    pub skipped_sessions: Vec<SkippedSession>,
    /// Conflicts this pull brought to this device (made by this merge or by another device's):
    /// one version kept, the other set aside; `shelldone conflicts` resolves them.
    pub conflicts: Vec<Conflict>,
    /// All open conflicts after the pull.
    pub open_conflicts: usize,
    /// The new local head (hex).
    pub head: Option<String>,
    /// Whether live files were updated.
    pub restored: bool,
    /// Live files written/removed.
    pub files_changed: usize,
}

/// What a push did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    /// Objects and bytes sent.
    pub sent: TransferStats,
    /// Refs updated on the remote.
    pub refs_updated: Vec<String>,
}

/// One ref a push would move on the remote.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RefMove {
    /// Remote ref name, `<device>/head` or `<device>/sessions/<id>`.
    pub name: String,
    /// Its value on the remote now (hex; None: absent).
    pub from: Option<String>,
    /// The value the push would give it (hex; None: deleted).
    pub to: Option<String>,
}

/// What `sync push --dry-run` found: what a push would send and move. Nothing was changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRunReport {
    /// Objects and bytes (stored, compressed) the push would send.
    pub would_send: TransferStats,
    /// Refs the push would move, in order.
    pub refs: Vec<RefMove>,
}

/// Ahead/behind of one device relative to the local head.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    /// Device id.
    pub device: String,
    /// Whether this is the local device.
    pub is_self: bool,
    /// Its head on the remote (hex).
    pub head: String,
    /// Local snapshots it does not have (None: objects not fetched yet).
    pub ahead: Option<usize>,
    /// Its snapshots the local head does not have.
    pub behind: Option<usize>,
    /// Sessions whose content differs between the local head and its head.
    pub sessions_differ: Vec<String>,
}

/// The message of the save a pull makes of unsaved live changes (then the remote's name).
const PULL_AUTO_SAVE: &str = "auto-save before pull from ";

fn remotes_path(st: &Context) -> PathBuf {
    st.snapshots_dir().join("remotes.json")
}

fn add_shallow(cx: &Context, ids: &[ObjectId]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let path = cx.snapshots_dir().join("shallow");
    let (mut all, _) = cx.read_shallow();
    all.extend(ids.iter().copied());
    let text: String = all.iter().map(|id| id.to_hex() + "\n").collect();
    durable::write_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// Configured remotes.
///
/// # Errors
/// Unreadable config.
pub fn remotes(cx: &Context) -> Result<Vec<RemoteConfig>> {
    match std::fs::read(remotes_path(cx)) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::corrupt_file(remotes_path(cx), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn write_remotes(cx: &Context, r: &[RemoteConfig]) -> Result<()> {
    durable::write_atomic(
        &remotes_path(cx),
        &serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?,
    )?;
    Ok(())
}

/// Adds a remote. A URL git understands (or a path to a git repository, or ending in
/// `.git`) is a git remote; any other path a directory remote.
///
/// # Errors
/// Duplicate or invalid name.
pub fn remote_add(cx: &Context, name: &str, url: &str, init: bool) -> Result<RemoteConfig> {
    if !crate::remote::dir::ref_component_ok(name) || name.contains('%') {
        return Err(Error::Usage(format!(
            "invalid remote name '{name}': use letters, digits, '.', '_', '-'"
        )));
    }
    let _lock = cx.lock("remote add")?;
    let mut all = remotes(cx)?;
    if all.iter().any(|r| r.name == name) {
        return Err(Error::Usage(format!(
            "remote '{name}' already exists; 'shelldone remote remove {name}' first"
        )));
    }
    let url = if is_git_url(url) || url.contains("://") {
        url.to_owned()
    } else {
        std::path::absolute(url).map_or_else(|_| url.to_owned(), |p| p.display().to_string())
    };
    let kind = if is_git_url(&url) { "git" } else { "dir" };
    if kind == "dir" {
        // A directory remote is created on purpose, so that a typo or an unmounted disk
        // is an error rather than a new, empty remote.
        let d = DirRemote::new(name.to_owned(), PathBuf::from(&url));
        if init {
            d.init()?;
        } else if !d.exists()? {
            return Err(Error::Usage(format!(
                "{url} is not a shelldone directory remote; to create one there: 'shelldone remote add {name} {url} --init'"
            )));
        }
    }
    let rc = RemoteConfig {
        name: name.to_owned(),
        url,
        kind: kind.to_owned(),
    };
    all.push(rc.clone());
    write_remotes(cx, &all)?;
    Ok(rc)
}

/// Removes a remote (and its tracking refs and git mirror).
///
/// # Errors
/// Unknown remote.
pub fn remote_remove(cx: &Context, name: &str) -> Result<()> {
    let _lock = cx.lock("remote remove")?;
    let mut all = remotes(cx)?;
    let before = all.len();
    all.retain(|r| r.name != name);
    if all.len() == before {
        return Err(Error::UnknownRemote(name.to_owned()));
    }
    write_remotes(cx, &all)?;
    for (r, _) in cx.refs.list(&format!("remotes/{name}/"))? {
        cx.refs.set(&r, None, "remote removed")?;
    }
    let mirror = cx
        .snapshots_dir()
        .join("remotes")
        .join(format!("{name}.git"));
    if mirror.exists() {
        fs::remove_dir_all(mirror)?;
    }
    Ok(())
}

fn remote_config(cx: &Context, name: &str) -> Result<RemoteConfig> {
    remotes(cx)?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| Error::UnknownRemote(name.to_owned()))
}

/// Opens a configured remote: git is a graph-shaped target of its own; a directory is a plain
/// backend, which the transfer module drives.
fn open_remote(cx: &Context, name: &str) -> Result<Box<dyn Remote>> {
    let rc = remote_config(cx, name)?;
    Ok(if rc.kind == "git" {
        clear_stale_git_locks(
            &cx.snapshots_dir()
                .join("remotes")
                .join(format!("{}.git", rc.name)),
        )?;
        Box::new(GitRemote::new(
            &rc.name,
            &rc.url,
            cx.snapshots_dir(),
            cx.device(),
        )?)
    } else {
        Box::new(PlainRemote::new(open_dir(&rc)?))
    })
}

/// A directory remote's backend; it must exist already.
fn open_dir(rc: &RemoteConfig) -> Result<DirRemote> {
    let d = DirRemote::new(rc.name.clone(), PathBuf::from(&rc.url));
    if !d.exists()? {
        return Err(Error::Remote {
            remote: rc.name.clone(),
            why: format!(
                "the directory remote at {} is missing or not initialised (an unmounted disk? a moved folder?); nothing was changed. If it really is gone: 'shelldone remote remove {}' then 'shelldone remote add {} PATH --init'",
                rc.url, rc.name, rc.name
            ),
            // An unmounted disk or an unreachable share may be back later.
            transient: true,
            source: None,
        });
    }
    Ok(d)
}

/// Renames this device (its refs on remotes are written under the new name from the next
/// push; the old name's refs become another device's, merged on the next pull).
///
/// # Errors
/// An invalid name, the current name, lock, I/O.
pub fn device_rename(cx: &mut Context, new: &str) -> Result<()> {
    if !crate::remote::dir::ref_component_ok(new) || new.contains('%') || new.len() > 64 {
        return Err(Error::Usage(format!(
            "invalid device name '{new}': use letters, digits, '.', '_', '-' (at most 64)"
        )));
    }
    if new == cx.device() {
        return Err(Error::Usage(format!(
            "this device is already named '{new}'"
        )));
    }
    let _lock = cx.lock("device rename")?;
    // The reflog first: it is what tells a renamed `device` file from a damaged one.
    if let Some(h) = cx.refs.get(HEAD)? {
        cx.refs.repair_log(
            &[(HEAD, Some(h), Some(h))],
            &format!("{}{} -> {new}", crate::context::DEVICE_RENAME, cx.device()),
        )?;
    }
    durable::write_atomic(
        &cx.snapshots_dir().join("device"),
        format!("{new}\n").as_bytes(),
    )?;
    cx.device = new.to_owned();
    Ok(())
}

/// Sends local history to the remote and moves this device's refs there.
///
/// # Errors
/// No snapshot yet, transport errors, a lost race ([`Error::RefConflict`]).
pub fn sync_push(cx: &Context, remote: &str, progress: Progress<'_>) -> Result<PushReport> {
    let _lock = cx.lock("sync push")?;
    let mut r = open_remote(cx, remote)?;
    let (report, updates) = push_to(cx, remote, r.as_mut(), progress)?;
    for u in &updates {
        cx.refs
            .set(&format!("remotes/{remote}/{}", u.name), u.new, "push")?;
    }
    Ok(report)
}

/// What [`sync_push`] would send and which refs it would move, found by the same push through
/// a [`DryRun`] backend (reads pass through, writes are recorded): nothing changes on the
/// remote or here (no remote-tracking ref moves; the store lock is not taken, as for any
/// command that only reads). A git remote is refused: its push converts snapshots into the
/// local git mirror as it goes, which no wrapper can hold back yet.
///
/// # Errors
/// A git remote ([`Error::Invalid`]), no snapshot yet, transport errors, a ref that moved on
/// the remote since this store last saw it ([`Error::RefConflict`], as the push would meet).
pub fn sync_push_dry_run(
    cx: &Context,
    remote: &str,
    progress: Progress<'_>,
) -> Result<DryRunReport> {
    let rc = remote_config(cx, remote)?;
    if rc.kind == "git" {
        return Err(Error::Usage(format!(
            "'sync push --dry-run' works with directory remotes only; '{remote}' is a git remote, whose push converts snapshots into its local git mirror as it goes (nothing was changed)"
        )));
    }
    let mut r = PlainRemote::new(DryRun::new(open_dir(&rc)?));
    push_to(cx, remote, &mut r, progress)?;
    let recorded = r.backend().recorded();
    Ok(DryRunReport {
        would_send: recorded.sent,
        refs: recorded
            .refs
            .iter()
            .map(|u| RefMove {
                name: u.name.clone(),
                from: u.expected.map(|id| id.to_hex()),
                to: u.new.map(|id| id.to_hex()),
            })
            .collect(),
    })
}

/// Pushes this device's head and session refs to `r`; returns the report and the updates
/// made (for the remote-tracking refs).
fn push_to(
    cx: &Context,
    remote_name: &str,
    r: &mut dyn Remote,
    progress: Progress<'_>,
) -> Result<(PushReport, Vec<RefUpdate>)> {
    let head = cx.refs.get(HEAD)?.ok_or(Error::NoSnapshot)?;
    let current = r.list_refs()?;
    check_identity(cx, remote_name, &current)?;
    let dev = cx.device().to_owned();
    let mut updates = vec![RefUpdate {
        name: format!("{dev}/head"),
        expected: current.get(&format!("{dev}/head")).copied(),
        new: Some(head),
    }];
    for (name, id) in cx.refs.list("sessions/")? {
        let rname = format!("{dev}/{name}");
        updates.push(RefUpdate {
            expected: current.get(&rname).copied(),
            name: rname,
            new: Some(id),
        });
    }
    updates.retain(|u| u.expected != u.new);
    let mut report = PushReport::default();
    if !updates.is_empty() {
        report.sent = r.push(&cx.objects, &updates, progress)?;
    }
    report.refs_updated = updates.iter().map(|u| u.name.clone()).collect();
    Ok((report, updates))
}

/// Fetches every device's history and integrates it (see the module docs).
///
/// # Errors
/// Transport errors, hostile or corrupt remote objects (nothing is integrated then), a
/// device id another store also uses, unrelated histories (without
/// [`PullOptions::allow_unrelated`]).
pub fn sync_pull(
    cx: &Context,
    remote: &str,
    opts: &PullOptions,
    progress: Progress<'_>,
) -> Result<PullReport> {
    let _lock = cx.lock("sync pull")?;
    let mut r = open_remote(cx, remote)?;
    let mut report = PullReport::default();
    let refs = r.list_refs()?;
    check_identity(cx, remote, &refs)?;
    let shallow = opts.strategy == Strategy::Partial;
    let mut heads: Vec<(String, ObjectId)> = refs
        .iter()
        .filter_map(|(n, id)| n.strip_suffix("/head").map(|d| (d.to_owned(), *id)))
        .collect();
    heads.sort();
    let wants: Vec<ObjectId> = if shallow {
        partial_wants(cx, r.as_mut(), &heads)?
    } else {
        refs.values()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let batch = cx.objects.batch()?;
    report.received = r.fetch(&cx.objects, &batch, &wants, shallow, progress)?;
    batch.commit()?;
    if shallow {
        let mut cut = Vec::new();
        for w in &wants {
            let s = cx.objects.read_snapshot(w)?;
            if s.parents.iter().any(|p| !cx.objects.has(p)) {
                cut.push(*w);
            }
        }
        add_shallow(cx, &cut)?;
    }
    // Remote-tracking refs mirror the remote exactly (stale ones pruned).
    let prefix = format!("remotes/{remote}/");
    for (name, _) in cx.refs.list(&prefix)? {
        if !refs.contains_key(&name[prefix.len()..]) {
            cx.refs.set(&name, None, "pull: pruned")?;
        }
    }
    for (name, id) in &refs {
        if cx.objects.has(id) {
            cx.refs.set(&format!("{prefix}{name}"), Some(*id), "pull")?;
        }
    }
    report.devices = heads.iter().map(|h| h.0.clone()).collect();
    let old_head = cx.refs.get(HEAD)?;
    if opts.no_restore {
        report.head = old_head.map(|h| h.to_hex());
        return Ok(report);
    }
    // A device with no history of its own: none at all, or only the auto-save of a first
    // pull that was interrupted before it integrated anything.
    let fresh = match old_head {
        None => true,
        Some(h) => {
            let s = cx.objects.read_snapshot(&h)?;
            s.parents.is_empty() && s.message.starts_with(PULL_AUTO_SAVE)
        }
    };
    if !opts.allow_unrelated {
        refuse_unrelated(cx, old_head.filter(|_| !fresh), &heads)?;
    }
    let old_open = open_conflicts_at(cx, old_head)?;
    // Unsaved live changes become a snapshot first, so the merge sees them. A device with
    // no history and nothing live adopts instead (no empty snapshot of its own).
    if old_head.is_some() || live_has_files(cx)? {
        crate::live::save::save_locked(
            cx,
            &crate::live::SaveOptions {
                message: format!("{PULL_AUTO_SAVE}{remote}"),
                ..crate::live::SaveOptions::default()
            },
        )?;
    }
    // From here the head may move before the live files follow: if this process dies in
    // between, recovery makes the live state equal to the head (nothing to do while they
    // are still equal, right after the auto-save).
    crate::live::restore::write_head_intent(cx)?;
    let mut first = fresh;
    for (dev, their) in heads {
        if dev == cx.device() {
            continue;
        }
        // A new device's own files (written before its first pull) never override the
        // synced state: the first device's head wins, the local versions are set aside.
        integrate(cx, &dev, their, opts, first, &mut report)?;
        first = false;
    }
    let head = cx.refs.get(HEAD)?;
    report.head = head.map(|h| h.to_hex());
    let open = open_conflicts_at(cx, head)?;
    report.open_conflicts = open.len();
    report.conflicts = open
        .into_iter()
        .filter(|c| !old_open.iter().any(|o| o.id == c.id))
        .collect();
    if let Some(h) = head {
        let (plan, _) =
            crate::live::restore::restore_locked(cx, h, &crate::live::Scope::All, false)?;
        report.files_changed = plan.create.len() + plan.update.len() + plan.delete.len();
        report.restored = true;
    }
    Ok(report)
}

/// Refuses, before anything changes, a device whose history shares no snapshot with this
/// store's — nor with another device's that does (it would become related once that one is
/// merged). A device with no history relates to the first device it adopts.
fn refuse_unrelated(
    cx: &Context,
    local: Option<ObjectId>,
    heads: &[(String, ObjectId)],
) -> Result<()> {
    let others: Vec<&(String, ObjectId)> = heads.iter().filter(|(d, _)| d != cx.device()).collect();
    let mut related: HashSet<ObjectId> = match (local, others.first()) {
        (Some(l), _) => graph::ancestors(&cx.objects, l)?,
        (None, Some((_, first))) => graph::ancestors(&cx.objects, *first)?,
        (None, None) => return Ok(()),
    };
    let mut pending: Vec<(&String, HashSet<ObjectId>)> = Vec::new();
    for (d, h) in others {
        pending.push((d, graph::ancestors(&cx.objects, *h)?));
    }
    loop {
        let before = pending.len();
        pending.retain(|(_, anc)| {
            if anc.iter().any(|a| related.contains(a)) {
                related.extend(anc.iter().copied());
                false
            } else {
                true
            }
        });
        if pending.len() == before {
            break;
        }
    }
    match pending.first() {
        None => Ok(()),
        Some((d, _)) => Err(Error::UnrelatedHistory {
            device: (*d).clone(),
            snapshot: heads
                .iter()
                .find(|(x, _)| x == *d)
                .map(|(_, h)| h.to_hex())
                .unwrap_or_default(),
        }),
    }
}

/// True when the live dirs hold at least one file.
fn live_has_files(cx: &Context) -> Result<bool> {
    Ok(crate::live::save::live_root(cx)? != write_trees(&Flat::with_roots(), None)?)
}

/// The open conflicts a snapshot carries (none for no snapshot).
fn open_conflicts_at(cx: &Context, id: Option<ObjectId>) -> Result<Vec<conflicts::Conflict>> {
    match id {
        None => Ok(Vec::new()),
        Some(id) => conflicts::of(&cx.objects.read_snapshot(&id)?),
    }
}

/// Refuses to sync when the remote's ref for this device was written by another store: a
/// copied state dir (or one restored from an older backup) shares the device id, and the
/// two would overwrite each other's refs and ignore each other's snapshots.
fn check_identity(cx: &Context, remote: &str, refs: &BTreeMap<String, ObjectId>) -> Result<()> {
    let name = format!("{}/head", cx.device());
    let Some(theirs) = refs.get(&name) else {
        return Ok(());
    };
    if cx.refs.get(&format!("remotes/{remote}/{name}"))? == Some(*theirs) {
        return Ok(());
    }
    if let Some(h) = cx.refs.get(HEAD)?
        && cx.objects.has(theirs)
        && graph::ancestors(&cx.objects, h)?.contains(theirs)
    {
        return Ok(());
    }
    Err(Error::DeviceIdInUse {
        remote: remote.to_owned(),
        device: cx.device().to_owned(),
        found: theirs.to_hex(),
    })
}

/// What a partial pull fetches: each device's head, and the history between the heads
/// (this device's included) and their merge bases — what integration needs, and nothing
/// older. The snapshot graph is read from the remote first (snapshot objects only).
fn partial_wants(
    cx: &Context,
    r: &mut dyn Remote,
    heads: &[(String, ObjectId)],
) -> Result<Vec<ObjectId>> {
    let tips: Vec<ObjectId> = heads.iter().map(|h| h.1).collect();
    let shallow: BTreeSet<String> = std::fs::read_to_string(cx.snapshots_dir().join("shallow"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_owned())
        .collect();
    let known = |id: &ObjectId| cx.objects.has(id) && !shallow.contains(&id.to_hex());
    let remote_graph = r.snapshot_graph(&cx.objects, &tips, &known)?;
    let parents = |id: &ObjectId| -> Vec<ObjectId> {
        if let Some(s) = remote_graph.get(id) {
            return s.parents.clone();
        }
        cx.objects
            .read_snapshot(id)
            .map(|s| s.parents)
            .unwrap_or_default()
    };
    let mut points = tips.clone();
    points.extend(cx.refs.get(HEAD)?);
    let mut need: BTreeSet<ObjectId> = tips.iter().copied().collect();
    for (i, x) in points.iter().enumerate() {
        for y in &points[i + 1..] {
            need.extend(graph::between_bases(*x, *y, &parents));
        }
    }
    // The versions that open conflicts set aside, so that they can be shown and taken.
    for t in &tips {
        if let Some(s) = remote_graph.get(t) {
            for c in conflicts::of(s).unwrap_or_default() {
                if let Ok(o) = c.other()
                    && remote_graph.contains_key(&o)
                {
                    need.insert(o);
                }
            }
        }
    }
    Ok(need.into_iter().filter(|id| !cx.objects.has(id)).collect())
}

/// Integrates one other device's head into the local head.
fn integrate(
    cx: &Context,
    dev: &str,
    their: ObjectId,
    opts: &PullOptions,
    fresh: bool,
    report: &mut PullReport,
) -> Result<()> {
    let Some(ours) = cx.refs.get(HEAD)? else {
        // A new machine with nothing of its own: their state becomes ours.
        let snap = cx.objects.read_snapshot(&their)?;
        let theirs = flatten(&cx.objects, &snap.root)?;
        move_head(
            cx,
            None,
            their,
            &Flat::with_roots(),
            &theirs,
            &format!("pull: adopt {dev}"),
        )?;
        report.adopted = Some(dev.to_owned());
        report
            .sessions_updated
            .extend(changed_sessions(&Flat::with_roots(), &theirs));
        return Ok(());
    };
    if ours == their || graph::ancestors(&cx.objects, ours)?.contains(&their) {
        return Ok(());
    }
    let our_snap = cx.objects.read_snapshot(&ours)?;
    let their_snap = cx.objects.read_snapshot(&their)?;
    let our_flat = flatten(&cx.objects, &our_snap.root)?;
    let their_flat = flatten(&cx.objects, &their_snap.root)?;
    // A device that had no history before this pull integrates the whole head, even with
    // `--session`: nothing of its own is older than the synced state, and a partial first
    // snapshot would make its history unrelated to everyone's.
    if !opts.sessions.is_empty() && !fresh {
        return take_sessions(
            cx,
            dev,
            (ours, &our_snap, &our_flat),
            (their, &their_snap, &their_flat),
            opts,
            report,
        );
    }
    if graph::ancestors(&cx.objects, their)?.contains(&ours) {
        move_head(
            cx,
            Some(ours),
            their,
            &our_flat,
            &their_flat,
            &format!("pull: fast-forward to {dev}"),
        )?;
        report.fast_forwarded.push(dev.to_owned());
        report
            .sessions_updated
            .extend(changed_sessions(&our_flat, &their_flat));
        return Ok(());
    }
    let bases = graph::merge_bases(&cx.objects, ours, their)?;
    if bases.is_empty() && !(opts.allow_unrelated || fresh) {
        return Err(Error::UnrelatedHistory {
            device: dev.to_owned(),
            snapshot: their.to_hex(),
        });
    }
    let (base_flat, base_conflicts) = match bases.first() {
        Some(b) => {
            let s = cx.objects.read_snapshot(b)?;
            (flatten(&cx.objects, &s.root)?, conflicts::of(&s)?)
        }
        None => (Flat::with_roots(), Vec::new()),
    };
    // After a criss-cross there are several best bases; where they disagree, no base is
    // trusted (git merges them into a virtual base; here such a unit is a conflict unless
    // both sides agree, and a journal a union of lines), so a deletion on one side is never
    // silently undone by the other base.
    let mut ambiguous = BTreeSet::new();
    if bases.len() > 1 {
        let first = merge::units(&base_flat);
        for other in &bases[1..] {
            let f = flatten(&cx.objects, &cx.objects.read_snapshot(other)?.root)?;
            let u = merge::units(&f);
            for k in first.keys().chain(u.keys()) {
                if first.get(k) != u.get(k) {
                    ambiguous.insert(k.clone());
                }
            }
        }
    }
    // The side that wins a conflict is chosen the same way on every device (the newer
    // snapshot; a new device's own files always lose), so two devices merging the same
    // pair write the same merge snapshot and sync converges instead of merging merges.
    let ours_wins = !fresh && (our_snap.time_ns, ours) > (their_snap.time_ns, their);
    let (left, right) = if ours_wins {
        (
            (ours, &our_snap, &our_flat),
            (their, &their_snap, &their_flat),
        )
    } else {
        (
            (their, &their_snap, &their_flat),
            (ours, &our_snap, &our_flat),
        )
    };
    let batch = cx.objects.batch()?;
    let out = merge::merge3(&cx.objects, &base_flat, left, right, &ambiguous, &batch)?;
    let mut open = conflicts::merge(
        &base_conflicts,
        &conflicts::of(left.1)?,
        &conflicts::of(right.1)?,
    );
    open.extend(out.conflicts);
    let root = write_trees(&out.flat, Some(&batch))?;
    let snap = Snapshot {
        root,
        parents: vec![left.0, right.0],
        time_ns: left.1.time_ns.max(right.1.time_ns),
        device: left.1.device.clone(),
        message: format!("sync: merge {} into {}", right.1.device, left.1.device),
        session: None,
        summary: left.2.summary_to(&out.flat),
        extra: conflicts::extra(open),
    };
    let id = batch.put(&objects_format::Object::Snapshot(snap))?;
    batch.commit()?;
    move_head(
        cx,
        Some(ours),
        id,
        &our_flat,
        &out.flat,
        &format!("pull: merge {dev}"),
    )?;
    report
        .sessions_updated
        .extend(changed_sessions(&our_flat, &out.flat));
    report.merged.push(dev.to_owned());
    Ok(())
}

/// `pull --session`: takes only the named sessions from `their` head, in a snapshot whose
/// only parent is the local head — it does not claim to have integrated the rest of their
/// head, so a later full pull still brings it. A session changed on both sides is not
/// taken (the full pull merges it and records the conflict); it is reported.
fn take_sessions(
    cx: &Context,
    dev: &str,
    ours: (ObjectId, &Snapshot, &Flat),
    their: (ObjectId, &Snapshot, &Flat),
    opts: &PullOptions,
    report: &mut PullReport,
) -> Result<()> {
    let base_flat = match graph::merge_base(&cx.objects, ours.0, their.0)? {
        Some(b) => flatten(&cx.objects, &cx.objects.read_snapshot(&b)?.root)?,
        None => Flat::with_roots(),
    };
    let ub = merge::units(&base_flat);
    let uo = merge::units(ours.2);
    let ut = merge::units(their.2);
    let empty = BTreeMap::new();
    let mut take = Vec::new();
    for sid in &opts.sessions {
        let k = [b"session:".as_slice(), sid.as_bytes()].concat();
        let (b, o, t) = (
            ub.get(&k).unwrap_or(&empty),
            uo.get(&k).unwrap_or(&empty),
            ut.get(&k).unwrap_or(&empty),
        );
        if t == o || t == b {
            continue;
        }
        if o == b {
            take.push(sid.clone());
        } else {
            report.skipped_sessions.push(SkippedSession {
                device: dev.to_owned(),
                session: sid.clone(),
                why:
                    "changed on both devices; a full 'sync pull' merges it and records the conflict"
                        .into(),
            });
        }
    }
    if take.is_empty() {
        return Ok(());
    }
    let sel = |p: &[u8]| {
        crate::snapshot::session_of(p).is_some_and(|s| take.iter().any(|t| t.as_bytes() == s))
    };
    let mut flat = ours.2.filtered(|p| !sel(p));
    for (p, l) in &their.2.leaves {
        if sel(p) {
            flat.leaves.insert(p.clone(), *l);
        }
    }
    for d in &their.2.dirs {
        if sel(d) {
            flat.dirs.insert(d.clone());
        }
    }
    // A conflict in their head about a session taken here comes along: it may be this
    // device's own version that their merge set aside, and this device must be told.
    let mut open = conflicts::of(ours.1)?;
    for c in conflicts::of(their.1)? {
        if c.kind == conflicts::ConflictKind::Session
            && take.iter().any(|t| c.path == format!("state/sessions/{t}"))
            && !open.iter().any(|o| o.id == c.id)
        {
            open.push(c);
        }
    }
    let batch = cx.objects.batch()?;
    let root = write_trees(&flat, Some(&batch))?;
    let msg = format!(
        "sync: take session{} {} from {dev} ({})",
        if take.len() > 1 { "s" } else { "" },
        take.join(" "),
        their.0.short(12)
    );
    crate::live::save::commit_snapshot(
        cx,
        batch,
        &flat,
        ours.2,
        Some(ours.0),
        root,
        &msg,
        None,
        conflicts::extra(open),
    )?;
    report.sessions_updated.extend(take);
    Ok(())
}

/// Moves the head (CAS) and the refs of sessions that changed.
fn move_head(
    cx: &Context,
    old: Option<ObjectId>,
    new: ObjectId,
    old_flat: &Flat,
    new_flat: &Flat,
    msg: &str,
) -> Result<()> {
    let mut txn: Vec<crate::store::refs::RefTxn> = changed_session_ids(old_flat, new_flat)
        .into_iter()
        .map(|s| crate::store::refs::RefTxn {
            name: session_ref(&s),
            expected: None,
            new: Some(new),
        })
        .collect();
    txn.push(crate::store::refs::RefTxn {
        name: HEAD.to_owned(),
        expected: Some(old),
        new: Some(new),
    });
    cx.refs.update_many(&txn, msg)
}

/// Ahead/behind per device and differing sessions, from the remote's refs.
///
/// # Errors
/// Transport errors.
pub fn sync_status(cx: &Context, remote: &str) -> Result<Vec<DeviceStatus>> {
    // Listing a git remote's refs fetches into its mirror: under the lock like every write.
    let _lock = cx.lock("sync status")?;
    let mut r = open_remote(cx, remote)?;
    let refs = r.list_refs()?;
    let local = cx.refs.get(HEAD)?;
    let local_anc = match local {
        Some(l) => graph::ancestors(&cx.objects, l)?,
        None => HashSet::new(),
    };
    let local_flat = match local {
        Some(l) => flatten(&cx.objects, &cx.objects.read_snapshot(&l)?.root)?,
        None => Flat::with_roots(),
    };
    let mut out = Vec::new();
    for (name, id) in &refs {
        let Some(dev) = name.strip_suffix("/head") else {
            continue;
        };
        let (ahead, behind, differ) = if cx.objects.has(id) {
            let theirs = graph::ancestors(&cx.objects, *id)?;
            let tf = flatten(&cx.objects, &cx.objects.read_snapshot(id)?.root)?;
            (
                Some(local_anc.difference(&theirs).count()),
                Some(theirs.difference(&local_anc).count()),
                changed_sessions(&local_flat, &tf),
            )
        } else {
            (None, None, Vec::new())
        };
        out.push(DeviceStatus {
            device: dev.to_owned(),
            is_self: dev == cx.device(),
            head: id.to_hex(),
            ahead,
            behind,
            sessions_differ: differ,
        });
    }
    Ok(out)
}

/// Removes the `*.lock` files a killed process left in a git mirror: gix and `git push` take
/// them while they move the mirror's refs, and a kill leaves them behind, blocking every later
/// sync. Only called under the store lock, which every process that touches the mirror holds,
/// so a lock file found then is stale. Only the mirror's metadata is looked at (not objects/).
fn clear_stale_git_locks(mirror: &std::path::Path) -> Result<()> {
    if !mirror.is_dir() {
        return Ok(());
    }
    let mut dirs = vec![mirror.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if d == mirror && e.file_name() == "objects" {
                    continue;
                }
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "lock") {
                fs::remove_file(&p)?;
            }
        }
    }
    Ok(())
}

fn changed_sessions(a: &Flat, b: &Flat) -> Vec<String> {
    changed_session_ids(a, b)
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The ids of the sessions that differ between `a` and `b`, as the bytes of their file names:
/// a session ref is named from these ([`session_ref`]), as a save names it, so an id that is
/// not UTF-8 gets the same ref on every path (a lossy string would give `%EF%BF%BD` and make
/// different ids share one ref).
fn changed_session_ids(a: &Flat, b: &Flat) -> Vec<Vec<u8>> {
    let ua = merge::units(a);
    let ub = merge::units(b);
    let mut out = Vec::new();
    for k in ua.keys().chain(ub.keys()).collect::<BTreeSet<_>>() {
        if let Some(s) = k.strip_prefix(b"session:")
            && ua.get(k) != ub.get(k)
        {
            out.push(s.to_vec());
        }
    }
    out
}
