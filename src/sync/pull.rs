//! `sync pull`: fetch every device's history (verified before anything is staged), then
//! integrate each device's head into the local one: adopt, fast-forward or merge.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use objects_format::{ObjectId, Snapshot};
use serde::Serialize;

use super::remotes::open_remote_with;
use super::{Conflict, graph, merge};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::remote::verify::is_missing_on_remote;
use crate::remote::{Progress, Remote, TransferStats};
use crate::snapshot::conflicts;
use crate::snapshot::{Flat, flatten_snapshot, write_trees};
use crate::store::durable;
use crate::store::refs::HEAD;
use crate::store::refs::session_ref;

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
    /// Devices left out because the remote does not hold every object their refs reach yet (a
    /// copy of a directory remote taken while a push ran, a folder still syncing): their
    /// previous state stays here, and a later pull takes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

/// The message of the save a pull makes of unsaved live changes (then the remote's name).
pub(super) const PULL_AUTO_SAVE: &str = "auto-save before pull from ";

pub(super) fn add_shallow(cx: &Context, ids: &[ObjectId]) -> Result<()> {
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
    pull_with(cx, remote, opts, progress, None)
}

/// [`sync_pull`], opening the remote with the paper recovery key too (`key import --remote`).
pub(super) fn pull_with(
    cx: &Context,
    remote: &str,
    opts: &PullOptions,
    progress: Progress<'_>,
    recovery: Option<&age::x25519::Identity>,
) -> Result<PullReport> {
    let _lock = cx.lock("sync pull")?;
    let mut r = open_remote_with(cx, remote, false, recovery)?;
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
    match r.fetch(&cx.objects, &batch, &wants, shallow, progress) {
        Ok(got) => {
            report.received = got;
            batch.commit()?;
        }
        Err(e) if !shallow && is_missing_on_remote(&e) => {
            drop(batch);
            report.incomplete = fetch_by_device(cx, r.as_mut(), &refs, &mut report, progress)?;
        }
        Err(e) => return Err(e),
    }
    r.settle(&cx.objects)?;
    // An incomplete device is left as this store last saw it (its remote-tracking refs too).
    let left_out = |name: &str| {
        name.split_once('/')
            .is_some_and(|(d, _)| report.incomplete.iter().any(|i| i == d))
    };
    let refs: BTreeMap<String, ObjectId> = refs.into_iter().filter(|(n, _)| !left_out(n)).collect();
    heads.retain(|(d, _)| !report.incomplete.contains(d));
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
        let rel = &name[prefix.len()..];
        if !refs.contains_key(rel) && !left_out(rel) {
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

/// Fetches each device's refs on its own, committing each device whose objects are all there;
/// returns the devices whose refs reach an object the remote does not hold. A copy of a
/// directory remote taken while a push ran (rsync, Syncthing) can hold a device's new refs
/// before every object they reach: that device's new state is not there yet, and the others'
/// is. Anything else (a damaged object, a transport error) still fails the pull.
fn fetch_by_device(
    cx: &Context,
    r: &mut dyn Remote,
    refs: &BTreeMap<String, ObjectId>,
    report: &mut PullReport,
    progress: Progress<'_>,
) -> Result<Vec<String>> {
    let mut by_device: BTreeMap<&str, BTreeSet<ObjectId>> = BTreeMap::new();
    for (name, id) in refs {
        if let Some((d, _)) = name.split_once('/') {
            by_device.entry(d).or_default().insert(*id);
        }
    }
    let mut incomplete = Vec::new();
    for (d, wants) in by_device {
        let wants: Vec<ObjectId> = wants.into_iter().collect();
        let batch = cx.objects.batch()?;
        match r.fetch(&cx.objects, &batch, &wants, false, progress) {
            Ok(got) => {
                batch.commit()?;
                report.received.objects += got.objects;
                report.received.bytes += got.bytes;
            }
            Err(e) if is_missing_on_remote(&e) => incomplete.push(d.to_owned()),
            Err(e) => return Err(e),
        }
    }
    Ok(incomplete)
}

/// Refuses, before anything changes, a device whose history shares no snapshot with this
/// store's — nor with another device's that does (it would become related once that one is
/// merged). A device with no history relates to the first device it adopts.
pub(super) fn refuse_unrelated(
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
pub(super) fn live_has_files(cx: &Context) -> Result<bool> {
    Ok(crate::live::save::live_root(cx)? != write_trees(&Flat::with_roots(), None)?)
}

/// The open conflicts a snapshot carries (none for no snapshot).
pub(super) fn open_conflicts_at(
    cx: &Context,
    id: Option<ObjectId>,
) -> Result<Vec<conflicts::Conflict>> {
    match id {
        None => Ok(Vec::new()),
        Some(id) => conflicts::of(&cx.objects.read_snapshot(&id)?),
    }
}

/// Refuses to sync when the remote's ref for this device was written by another store: a
/// copied state dir (or one restored from an older backup) shares the device id, and the
/// two would overwrite each other's refs and ignore each other's snapshots.
pub(super) fn check_identity(
    cx: &Context,
    remote: &str,
    refs: &BTreeMap<String, ObjectId>,
) -> Result<()> {
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
pub(super) fn partial_wants(
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
pub(super) fn integrate(
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
        let theirs = flatten_snapshot(&cx.objects, &snap)?;
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
    let our_flat = flatten_snapshot(&cx.objects, &our_snap)?;
    let their_flat = flatten_snapshot(&cx.objects, &their_snap)?;
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
            (flatten_snapshot(&cx.objects, &s)?, conflicts::of(&s)?)
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
            let f = flatten_snapshot(&cx.objects, &cx.objects.read_snapshot(other)?)?;
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
        extra: crate::snapshot::with_modes(conflicts::extra(open), &out.flat),
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
pub(super) fn take_sessions(
    cx: &Context,
    dev: &str,
    ours: (ObjectId, &Snapshot, &Flat),
    their: (ObjectId, &Snapshot, &Flat),
    opts: &PullOptions,
    report: &mut PullReport,
) -> Result<()> {
    let base_flat = match graph::merge_base(&cx.objects, ours.0, their.0)? {
        Some(b) => flatten_snapshot(&cx.objects, &cx.objects.read_snapshot(&b)?)?,
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
pub(super) fn move_head(
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

pub(super) fn changed_sessions(a: &Flat, b: &Flat) -> Vec<String> {
    changed_session_ids(a, b)
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The ids of the sessions that differ between `a` and `b`, as the bytes of their file names:
/// a session ref is named from these ([`session_ref`]), as a save names it, so an id that is
/// not UTF-8 gets the same ref on every path (a lossy string would give `%EF%BF%BD` and make
/// different ids share one ref).
pub(super) fn changed_session_ids(a: &Flat, b: &Flat) -> Vec<Vec<u8>> {
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
