//! Sync: object transfer between the local store and a remote, then ref integration.
//!
//! Push sends what the remote lacks and moves this device's refs there (`<device>/…`, CAS).
//! Pull fetches every device's refs and objects (verified before anything is staged), records
//! them as remote-tracking refs (`remotes/<remote>/<device>/…`), then integrates each other
//! device's head into the local head: fast-forward when possible, otherwise a three-way merge
//! per session, per journal file and per preference key, never overwriting a concurrent change
//! (the other version stays under `conflicts/<device>/…` and is reported).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;

use fs_err as fs;
use objects_format::{ObjectId, Snapshot};
use serde::{Deserialize, Serialize};

use crate::State;
use crate::error::{Error, Result};
use crate::ops::session_ref;
use crate::remote::dir::DirRemote;
use crate::remote::git::GitRemote;
use crate::remote::{Progress, RefUpdate, Remote, TransferStats, is_git_url};
use crate::snapshot::save::content_objects;
use crate::snapshot::{Flat, Leaf, flatten, session_of, write_trees};
use crate::store::durable;
use crate::store::refs::HEAD;

/// A configured remote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Name (`origin`).
    pub name: String,
    /// URL or path.
    pub url: String,
    /// `git` or `dir`.
    pub kind: String,
}

/// How much history to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// All history.
    #[default]
    Full,
    /// Only the newest snapshot of each device.
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
}

/// A concurrent change that was not merged automatically.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// Other device.
    pub device: String,
    /// What: `session s001`, `file state/journal/0001.jsonl`, `key font_size in config/config.toml`.
    pub what: String,
    /// Ref under which the other version stays reachable.
    pub other_ref: String,
}

/// What a pull did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PullReport {
    /// Objects and bytes received.
    pub received: TransferStats,
    /// Devices seen on the remote.
    pub devices: Vec<String>,
    /// Devices fast-forwarded to.
    pub fast_forwarded: Vec<String>,
    /// Devices merged.
    pub merged: Vec<String>,
    /// Sessions taken from other devices.
    pub sessions_updated: Vec<String>,
    /// Conflicts (local version kept).
    pub conflicts: Vec<Conflict>,
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

fn remotes_path(st: &State) -> PathBuf {
    st.snapshots_dir().join("remotes.json")
}

impl State {
    /// Snapshots whose parents were deliberately not fetched (`--strategy partial`).
    #[must_use]
    pub fn is_shallow(&self, id: &ObjectId) -> bool {
        std::fs::read_to_string(self.snapshots_dir().join("shallow"))
            .is_ok_and(|s| s.lines().any(|l| l.trim() == id.to_hex()))
    }

    fn add_shallow(&self, ids: &[ObjectId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let path = self.snapshots_dir().join("shallow");
        let mut all: BTreeSet<String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        all.extend(ids.iter().map(ObjectId::to_hex));
        let text: String = all.into_iter().map(|l| l + "\n").collect();
        durable::write_atomic(&path, text.as_bytes())?;
        Ok(())
    }

    /// Configured remotes.
    ///
    /// # Errors
    /// Unreadable config.
    pub fn remotes(&self) -> Result<Vec<RemoteConfig>> {
        match std::fs::read(remotes_path(self)) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::corrupt_file(remotes_path(self), e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    fn write_remotes(&self, r: &[RemoteConfig]) -> Result<()> {
        durable::write_atomic(
            &remotes_path(self),
            &serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?,
        )?;
        Ok(())
    }

    /// Adds a remote. A URL git understands (or a path to a git repository, or ending in
    /// `.git`) is a git remote; any other path a directory remote.
    ///
    /// # Errors
    /// Duplicate or invalid name.
    pub fn remote_add(&self, name: &str, url: &str) -> Result<RemoteConfig> {
        if !crate::remote::dir::ref_component_ok(name) || name.contains('%') {
            return Err(Error::Invalid(format!(
                "invalid remote name '{name}': use letters, digits, '.', '_', '-'"
            )));
        }
        let _lock = self.lock("remote add")?;
        let mut all = self.remotes()?;
        if all.iter().any(|r| r.name == name) {
            return Err(Error::Invalid(format!(
                "remote '{name}' already exists; 'shelldone remote remove {name}' first"
            )));
        }
        let url = if is_git_url(url) || url.contains("://") {
            url.to_owned()
        } else {
            std::path::absolute(url).map_or_else(|_| url.to_owned(), |p| p.display().to_string())
        };
        let kind = if is_git_url(&url) { "git" } else { "dir" };
        let rc = RemoteConfig {
            name: name.to_owned(),
            url,
            kind: kind.to_owned(),
        };
        all.push(rc.clone());
        self.write_remotes(&all)?;
        Ok(rc)
    }

    /// Removes a remote (and its tracking refs and git mirror).
    ///
    /// # Errors
    /// Unknown remote.
    pub fn remote_remove(&self, name: &str) -> Result<()> {
        let _lock = self.lock("remote remove")?;
        let mut all = self.remotes()?;
        let before = all.len();
        all.retain(|r| r.name != name);
        if all.len() == before {
            return Err(Error::Invalid(format!("no remote named '{name}'")));
        }
        self.write_remotes(&all)?;
        for (r, _) in self.refs.list(&format!("remotes/{name}/"))? {
            self.refs.set(&r, None, "remote removed")?;
        }
        let mirror = self
            .snapshots_dir()
            .join("remotes")
            .join(format!("{name}.git"));
        if mirror.exists() {
            fs::remove_dir_all(mirror)?;
        }
        Ok(())
    }

    fn open_remote(&self, name: &str) -> Result<Box<dyn Remote>> {
        let rc = self
            .remotes()?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "no remote named '{name}'; add one with 'shelldone remote add {name} URL'"
                ))
            })?;
        Ok(if rc.kind == "git" {
            Box::new(GitRemote::new(
                &rc.name,
                &rc.url,
                self.snapshots_dir(),
                self.device(),
            )?)
        } else {
            Box::new(DirRemote::new(rc.name.clone(), PathBuf::from(&rc.url)))
        })
    }

    /// Sends local history to the remote and moves this device's refs there.
    ///
    /// # Errors
    /// No snapshot yet, transport errors, a lost race ([`Error::RefConflict`]).
    pub fn sync_push(&self, remote: &str, progress: Progress<'_>) -> Result<PushReport> {
        let _lock = self.lock("sync push")?;
        let mut r = self.open_remote(remote)?;
        self.push_locked(remote, r.as_mut(), progress)
    }

    fn push_locked(
        &self,
        remote_name: &str,
        r: &mut dyn Remote,
        progress: Progress<'_>,
    ) -> Result<PushReport> {
        let head = self.refs.get(HEAD)?.ok_or(Error::NoSnapshot)?;
        let current = r.list_refs()?;
        let dev = self.device().to_owned();
        let mut updates = vec![RefUpdate {
            name: format!("{dev}/head"),
            expected: current.get(&format!("{dev}/head")).copied(),
            new: Some(head),
        }];
        for (name, id) in self.refs.list("sessions/")? {
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
            report.sent = r.push(&self.objects, &updates, progress)?;
        }
        for u in &updates {
            self.refs
                .set(&format!("remotes/{remote_name}/{}", u.name), u.new, "push")?;
            report.refs_updated.push(u.name.clone());
        }
        Ok(report)
    }

    /// Fetches every device's history and integrates it (see the module docs).
    ///
    /// # Errors
    /// Transport errors, hostile or corrupt remote objects (nothing is integrated then).
    pub fn sync_pull(
        &self,
        remote: &str,
        opts: &PullOptions,
        progress: Progress<'_>,
    ) -> Result<PullReport> {
        let _lock = self.lock("sync pull")?;
        let mut r = self.open_remote(remote)?;
        let mut report = PullReport::default();
        let refs = r.list_refs()?;
        let shallow = opts.strategy == Strategy::Partial;
        let wants: Vec<ObjectId> = refs
            .iter()
            .filter(|(n, _)| !shallow || n.ends_with("/head"))
            .map(|(_, id)| *id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let batch = self.objects.batch()?;
        report.received = r.fetch(&self.objects, &batch, &wants, shallow, progress)?;
        batch.commit()?;
        if shallow {
            let mut cut = Vec::new();
            for w in &wants {
                let s = self.objects.read_snapshot(w)?;
                if s.parents.iter().any(|p| !self.objects.has(p)) {
                    cut.push(*w);
                }
            }
            self.add_shallow(&cut)?;
        }
        // Remote-tracking refs mirror the remote exactly (stale ones pruned).
        let prefix = format!("remotes/{remote}/");
        for (name, _) in self.refs.list(&prefix)? {
            if !refs.contains_key(&name[prefix.len()..]) {
                self.refs.set(&name, None, "pull: pruned")?;
            }
        }
        for (name, id) in &refs {
            if !shallow || name.ends_with("/head") {
                self.refs
                    .set(&format!("{prefix}{name}"), Some(*id), "pull")?;
            }
        }
        let mut heads: Vec<(String, ObjectId)> = refs
            .iter()
            .filter_map(|(n, id)| n.strip_suffix("/head").map(|d| (d.to_owned(), *id)))
            .collect();
        heads.sort();
        report.devices = heads.iter().map(|h| h.0.clone()).collect();
        if opts.no_restore {
            report.head = self.refs.get(HEAD)?.map(|h| h.to_hex());
            return Ok(report);
        }
        // Unsaved live changes become a snapshot first, so the merge sees them.
        self.save_locked(&crate::ops::SaveOptions {
            message: format!("auto-save before pull from {remote}"),
            session: None,
        })?;
        // From here the head may move before the live files follow: if this process dies in
        // between, recovery makes the live state equal to the head (nothing to do while they
        // are still equal, right after the auto-save).
        crate::ops::write_head_intent(self)?;
        for (dev, their) in heads {
            if dev == self.device() {
                continue;
            }
            self.integrate(&dev, their, opts, &mut report)?;
        }
        let head = self.refs.get(HEAD)?;
        report.head = head.map(|h| h.to_hex());
        if let Some(h) = head {
            let (plan, _) = self.restore_locked(h, None, false)?;
            report.files_changed = plan.create.len() + plan.update.len() + plan.delete.len();
            report.restored = true;
        }
        Ok(report)
    }

    /// Ancestors of `id` (inclusive); missing parents (shallow history) end the walk.
    fn ancestors(&self, id: ObjectId) -> Result<HashSet<ObjectId>> {
        let mut seen = HashSet::new();
        let mut q = VecDeque::from([id]);
        while let Some(s) = q.pop_front() {
            if !seen.insert(s) {
                continue;
            }
            match self.objects.read_snapshot(&s) {
                Ok(snap) => q.extend(snap.parents),
                Err(Error::MissingObject { .. }) if s != id => {}
                Err(e) => return Err(e),
            }
        }
        Ok(seen)
    }

    /// The newest common ancestor of `a` and `b`.
    fn merge_base(&self, a: ObjectId, b: ObjectId) -> Result<Option<ObjectId>> {
        let aa = self.ancestors(a)?;
        let common: HashSet<ObjectId> = self
            .ancestors(b)?
            .into_iter()
            .filter(|c| aa.contains(c))
            .collect();
        // Best common ancestors: those no other common ancestor descends from. Found by the
        // graph, not by clocks (a device whose clock runs ahead must not pick an older base).
        let mut dominated: HashSet<ObjectId> = HashSet::new();
        for c in &common {
            let mut stack: Vec<ObjectId> = match self.objects.read_snapshot(c) {
                Ok(s) => s.parents,
                Err(_) => Vec::new(),
            };
            while let Some(p) = stack.pop() {
                if dominated.insert(p)
                    && let Ok(s) = self.objects.read_snapshot(&p)
                {
                    stack.extend(s.parents);
                }
            }
        }
        let mut best: Option<(i64, ObjectId)> = None;
        for c in common.iter().filter(|c| !dominated.contains(c)) {
            if let Ok(s) = self.objects.read_snapshot(c)
                && best.is_none_or(|(t, id)| (s.time_ns, *c) > (t, id))
            {
                best = Some((s.time_ns, *c));
            }
        }
        Ok(best.map(|b| b.1))
    }

    fn integrate(
        &self,
        dev: &str,
        their: ObjectId,
        opts: &PullOptions,
        report: &mut PullReport,
    ) -> Result<()> {
        let ours = self.refs.get(HEAD)?;
        let Some(ours) = ours else {
            // A new machine: their state becomes ours.
            let snap = self.objects.read_snapshot(&their)?;
            let theirs = flatten(&self.objects, &snap.root)?;
            self.move_head(
                None,
                their,
                &Flat::with_roots(),
                &theirs,
                &format!("pull: adopt {dev}"),
            )?;
            report.fast_forwarded.push(dev.to_owned());
            return Ok(());
        };
        if ours == their || self.ancestors(ours)?.contains(&their) {
            return Ok(());
        }
        let our_snap = self.objects.read_snapshot(&ours)?;
        let their_snap = self.objects.read_snapshot(&their)?;
        let our_flat = flatten(&self.objects, &our_snap.root)?;
        let their_flat = flatten(&self.objects, &their_snap.root)?;
        if opts.sessions.is_empty() && self.ancestors(their)?.contains(&ours) {
            self.move_head(
                Some(ours),
                their,
                &our_flat,
                &their_flat,
                &format!("pull: fast-forward to {dev}"),
            )?;
            report.fast_forwarded.push(dev.to_owned());
            for s in changed_sessions(&our_flat, &their_flat) {
                report.sessions_updated.push(s);
            }
            return Ok(());
        }
        let base_flat = match self.merge_base(ours, their)? {
            Some(b) => flatten(&self.objects, &self.objects.read_snapshot(&b)?.root)?,
            None => Flat::with_roots(),
        };
        let batch = self.objects.batch()?;
        let merged = merge3(
            &base_flat,
            &our_flat,
            &their_flat,
            dev,
            &opts.sessions,
            self,
            &batch,
            report,
        )?;
        let root = write_trees(&merged, Some(&batch))?;
        let snap = Snapshot {
            root,
            parents: vec![ours, their],
            time_ns: crate::store::now_ns(),
            device: self.device().to_owned(),
            message: format!("sync: merge {dev}"),
            session: None,
            summary: our_flat.summary_to(&merged),
            extra: Vec::new(),
        };
        let id = batch.put(&objects_format::Object::Snapshot(snap))?;
        batch.commit()?;
        self.move_head(
            Some(ours),
            id,
            &our_flat,
            &merged,
            &format!("pull: merge {dev}"),
        )?;
        for c in report.conflicts.iter().filter(|c| c.device == dev) {
            self.refs.set(
                &c.other_ref,
                Some(their),
                &format!("pull: conflict with {dev}"),
            )?;
        }
        report.merged.push(dev.to_owned());
        Ok(())
    }

    /// Moves the head (CAS) and the refs of sessions that changed.
    fn move_head(
        &self,
        old: Option<ObjectId>,
        new: ObjectId,
        old_flat: &Flat,
        new_flat: &Flat,
        msg: &str,
    ) -> Result<()> {
        let mut txn: Vec<crate::store::refs::RefTxn> = changed_sessions(old_flat, new_flat)
            .into_iter()
            .map(|s| crate::store::refs::RefTxn {
                name: session_ref(s.as_bytes()),
                expected: None,
                new: Some(new),
            })
            .collect();
        txn.push(crate::store::refs::RefTxn {
            name: HEAD.to_owned(),
            expected: Some(old),
            new: Some(new),
        });
        self.refs.update_many(&txn, msg)
    }

    /// Ahead/behind per device and differing sessions, from the remote's refs.
    ///
    /// # Errors
    /// Transport errors.
    pub fn sync_status(&self, remote: &str) -> Result<Vec<DeviceStatus>> {
        let mut r = self.open_remote(remote)?;
        let refs = r.list_refs()?;
        let local = self.refs.get(HEAD)?;
        let local_anc = match local {
            Some(l) => self.ancestors(l)?,
            None => HashSet::new(),
        };
        let local_flat = match local {
            Some(l) => flatten(&self.objects, &self.objects.read_snapshot(&l)?.root)?,
            None => Flat::with_roots(),
        };
        let mut out = Vec::new();
        for (name, id) in &refs {
            let Some(dev) = name.strip_suffix("/head") else {
                continue;
            };
            let (ahead, behind, differ) = if self.objects.has(id) {
                let theirs = self.ancestors(*id)?;
                let tf = flatten(&self.objects, &self.objects.read_snapshot(id)?.root)?;
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
                is_self: dev == self.device(),
                head: id.to_hex(),
                ahead,
                behind,
                sessions_differ: differ,
            });
        }
        Ok(out)
    }
}

fn unit_of(p: &[u8]) -> Vec<u8> {
    match session_of(p) {
        Some(s) => [b"session:".as_slice(), s].concat(),
        None => [b"file:".as_slice(), p].concat(),
    }
}

fn units(f: &Flat) -> BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Leaf>> {
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

fn changed_sessions(a: &Flat, b: &Flat) -> Vec<String> {
    let ua = units(a);
    let ub = units(b);
    let mut out = Vec::new();
    for k in ua.keys().chain(ub.keys()).collect::<BTreeSet<_>>() {
        if let Some(s) = k.strip_prefix(b"session:")
            && ua.get(k) != ub.get(k)
        {
            out.push(String::from_utf8_lossy(s).into_owned());
        }
    }
    out
}

/// Three-way merge of whole snapshots: each unit (a session, or a file outside sessions) taken
/// from the side that changed it; both changed → journals merged as append-only logs,
/// preferences merged key by key, anything else kept local and reported as a conflict.
#[allow(clippy::too_many_arguments)]
fn merge3(
    base: &Flat,
    ours: &Flat,
    theirs: &Flat,
    dev: &str,
    only_sessions: &[String],
    st: &State,
    batch: &crate::store::Batch<'_>,
    report: &mut PullReport,
) -> Result<Flat> {
    let ub = units(base);
    let uo = units(ours);
    let ut = units(theirs);
    let mut out = Flat::with_roots();
    let empty = BTreeMap::new();
    let keys: BTreeSet<&Vec<u8>> = uo.keys().chain(ut.keys()).chain(ub.keys()).collect();
    let mut take: Vec<BTreeMap<Vec<u8>, Leaf>> = Vec::new();
    for k in keys {
        let b = ub.get(k).unwrap_or(&empty);
        let o = uo.get(k).unwrap_or(&empty);
        let t = ut.get(k).unwrap_or(&empty);
        let is_session = k.starts_with(b"session:");
        let sid = String::from_utf8_lossy(k.strip_prefix(b"session:").unwrap_or(b"")).into_owned();
        let allowed = only_sessions.is_empty() || (is_session && only_sessions.contains(&sid));
        let chosen = if t == b || t == o || !allowed {
            o.clone()
        } else if o == b {
            if is_session {
                report.sessions_updated.push(sid.clone());
            }
            t.clone()
        } else if is_session {
            report.conflicts.push(Conflict {
                device: dev.to_owned(),
                what: format!("session {sid}"),
                other_ref: format!("conflicts/{dev}/{}", session_ref(sid.as_bytes())),
            });
            o.clone()
        } else {
            // One file, changed on both sides.
            let path = String::from_utf8_lossy(&k[b"file:".len()..]).into_owned();
            let (bl, ol, tl) = (b.values().next(), o.values().next(), t.values().next());
            match merge_file(st, &path, bl, ol, tl)? {
                Merged::Content(bytes, conflicting_keys) => {
                    let (kind, id) = content_objects(&bytes, Some(batch))?;
                    let flags = ol.map_or(0, |l| l.flags);
                    for key in conflicting_keys {
                        report.conflicts.push(Conflict {
                            device: dev.to_owned(),
                            what: format!("key {key} in {path}"),
                            other_ref: format!("conflicts/{dev}/head"),
                        });
                    }
                    BTreeMap::from([(
                        k[b"file:".len()..].to_vec(),
                        Leaf {
                            kind,
                            flags,
                            size: bytes.len() as u64,
                            id,
                        },
                    )])
                }
                Merged::Conflict => {
                    report.conflicts.push(Conflict {
                        device: dev.to_owned(),
                        what: format!("file {path}"),
                        other_ref: format!("conflicts/{dev}/head"),
                    });
                    o.clone()
                }
            }
        };
        take.push(chosen);
    }
    for m in take {
        for (p, l) in m {
            if let Some(i) = p.iter().rposition(|&c| c == b'/') {
                out.add_dir_with_parents(&p[..i]);
            }
            out.leaves.insert(p, l);
        }
    }
    // Keep empty directories either side has (a directory is never content worth a conflict).
    for d in ours.dirs.iter().chain(theirs.dirs.iter()) {
        if !out.leaves.contains_key(d)
            && !out
                .leaves
                .keys()
                .any(|p| d.starts_with(p) && d.get(p.len()) == Some(&b'/'))
        {
            out.dirs.insert(d.clone());
        }
    }
    Ok(out)
}

enum Merged {
    Content(Vec<u8>, Vec<String>),
    Conflict,
}

fn blob_of(st: &State, l: Option<&Leaf>) -> Result<Option<Vec<u8>>> {
    let Some(l) = l else { return Ok(None) };
    if l.kind == objects_format::EntryKind::Symlink {
        return Ok(None);
    }
    let mut out = Vec::new();
    if l.kind == objects_format::EntryKind::File {
        out = st.objects().read_blob(&l.id)?;
    } else {
        for c in st.objects().read_chunk_list(&l.id)?.chunks {
            out.extend(st.objects().read_blob(&c.id)?);
        }
    }
    Ok(Some(out))
}

fn merge_file(
    st: &State,
    path: &str,
    b: Option<&Leaf>,
    o: Option<&Leaf>,
    t: Option<&Leaf>,
) -> Result<Merged> {
    let (Some(ob), Some(tb)) = (blob_of(st, o)?, blob_of(st, t)?) else {
        return Ok(Merged::Conflict);
    };
    let bb = blob_of(st, b)?.unwrap_or_default();
    if path.starts_with("state/journal/") {
        return Ok(Merged::Content(merge_journal(&ob, &tb), Vec::new()));
    }
    if path.ends_with(".json") {
        return Ok(merge_json(&bb, &ob, &tb).unwrap_or(Merged::Conflict));
    }
    if path.ends_with(".toml") || path.ends_with(".conf") || path.ends_with(".ini") {
        return Ok(merge_kv_lines(&bb, &ob, &tb).unwrap_or(Merged::Conflict));
    }
    Ok(Merged::Conflict)
}

/// Append-only logs: keep what both sides share once, then ours' tail, then theirs'. The shared
/// part is their common prefix cut back to a line end (at least the base when both extend it;
/// without a base, e.g. after a shallow pull, the same rule avoids doubling the shared lines).
fn merge_journal(ours: &[u8], theirs: &[u8]) -> Vec<u8> {
    let mut shared = ours.iter().zip(theirs).take_while(|(x, y)| x == y).count();
    if shared < ours.len() && shared < theirs.len() {
        shared = ours[..shared]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
    }
    let mut m = ours.to_vec();
    m.extend_from_slice(&theirs[shared..]);
    m
}

fn merge_maps<V: Clone + PartialEq>(
    b: &BTreeMap<String, V>,
    o: &BTreeMap<String, V>,
    t: &BTreeMap<String, V>,
) -> (BTreeMap<String, V>, Vec<String>) {
    let mut out = o.clone();
    let mut conflicts = Vec::new();
    for k in b
        .keys()
        .chain(o.keys())
        .chain(t.keys())
        .collect::<BTreeSet<_>>()
    {
        let (bv, ov, tv) = (b.get(k), o.get(k), t.get(k));
        if tv == bv || tv == ov {
            continue;
        }
        if ov == bv {
            match tv {
                Some(v) => {
                    out.insert(k.clone(), v.clone());
                }
                None => {
                    out.remove(k);
                }
            }
        } else {
            conflicts.push(k.clone());
        }
    }
    (out, conflicts)
}

fn merge_json(b: &[u8], o: &[u8], t: &[u8]) -> Option<Merged> {
    let parse = |x: &[u8]| -> Option<BTreeMap<String, serde_json::Value>> {
        if x.is_empty() {
            return Some(BTreeMap::new());
        }
        match serde_json::from_slice::<serde_json::Value>(x).ok()? {
            serde_json::Value::Object(m) => Some(m.into_iter().collect()),
            _ => None,
        }
    };
    let (m, c) = merge_maps(&parse(b)?, &parse(o)?, &parse(t)?);
    let v = serde_json::Value::Object(m.into_iter().collect());
    let mut bytes = serde_json::to_vec_pretty(&v).ok()?;
    bytes.push(b'\n');
    Some(Merged::Content(bytes, c))
}

/// `key = value` files (flat TOML, ini without sections): merged key by key, keeping our
/// line order and comments; a file with `[sections]` is left to the user.
fn merge_kv_lines(b: &[u8], o: &[u8], t: &[u8]) -> Option<Merged> {
    let parse = |x: &[u8]| -> Option<(Vec<String>, BTreeMap<String, String>)> {
        let s = std::str::from_utf8(x).ok()?;
        let mut lines = Vec::new();
        let mut m = BTreeMap::new();
        for l in s.lines() {
            let tl = l.trim();
            if tl.starts_with('[') {
                return None;
            }
            if let Some((k, _)) = tl.split_once('=')
                && !tl.starts_with('#')
            {
                m.insert(k.trim().to_owned(), l.to_owned());
            }
            lines.push(l.to_owned());
        }
        Some((lines, m))
    };
    let (_, bm) = parse(b)?;
    let (olines, om) = parse(o)?;
    let (tlines, tm) = parse(t)?;
    let (merged, conflicts) = merge_maps(&bm, &om, &tm);
    let mut out = String::new();
    let mut written = BTreeSet::new();
    for l in &olines {
        let tl = l.trim();
        match tl.split_once('=').filter(|_| !tl.starts_with('#')) {
            Some((k, _)) => {
                let k = k.trim().to_owned();
                if let Some(v) = merged.get(&k) {
                    out.push_str(v);
                    out.push('\n');
                }
                written.insert(k);
            }
            None => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    for l in &tlines {
        if let Some((k, _)) = l.trim().split_once('=') {
            let k = k.trim().to_owned();
            if !written.contains(&k)
                && let Some(v) = merged.get(&k)
            {
                out.push_str(v);
                out.push('\n');
                written.insert(k);
            }
        }
    }
    Some(Merged::Content(out.into_bytes(), conflicts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_preferences_merge_key_by_key() {
        let b = br#"{"font":"a","size":12,"theme":"x"}"#;
        let o = br#"{"font":"b","size":12,"theme":"x"}"#;
        let t = br#"{"font":"a","size":14,"theme":"y","new":1}"#;
        let Some(Merged::Content(m, c)) = merge_json(b, o, t) else {
            panic!("merge failed")
        };
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["font"], "b");
        assert_eq!(v["size"], 14);
        assert_eq!(v["theme"], "y");
        assert_eq!(v["new"], 1);
        assert!(c.is_empty());
        let Some(Merged::Content(_, c)) = merge_json(b, br#"{"font":"b"}"#, br#"{"font":"c"}"#)
        else {
            panic!()
        };
        assert_eq!(
            c,
            vec!["font".to_owned()],
            "both changed font: conflict reported"
        );
    }

    #[test]
    fn journals_merge_as_append_only_logs() {
        let base = b"a\nb\n".as_slice();
        let ours = [base, b"o1\n"].concat();
        let theirs = [base, b"t1\nt2\n"].concat();
        assert_eq!(merge_journal(&ours, &theirs), b"a\nb\no1\nt1\nt2\n");
        // One side only appended: the longer one, nothing doubled.
        assert_eq!(merge_journal(base, &theirs), theirs);
        assert_eq!(merge_journal(&ours, base), ours);
        // Diverging inside a line: the shared part ends at the last full line.
        assert_eq!(merge_journal(b"a\nbX\n", b"a\nbY\n"), b"a\nbX\nbY\n");
        assert_eq!(merge_journal(b"", b"x\n"), b"x\n");
    }

    #[test]
    fn kv_lines_merge_keeps_comments_and_reports_conflicts() {
        let b = b"# prefs\nfont = a\nsize = 12\n";
        let o = b"# prefs\nfont = b\nsize = 12\n";
        let t = b"# prefs\nfont = a\nsize = 14\nextra = 1\n";
        let Some(Merged::Content(m, c)) = merge_kv_lines(b, o, t) else {
            panic!()
        };
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "# prefs\nfont = b\nsize = 14\nextra = 1\n"
        );
        assert!(c.is_empty());
        assert!(
            merge_kv_lines(b"[a]\nx=1\n", b"", b"").is_none(),
            "sections are not merged"
        );
    }
}
