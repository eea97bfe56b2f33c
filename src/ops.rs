//! `save` and `restore`: the two operations that touch live files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fs_err as fs;
use objects_format::{ChangeSummary, Object, ObjectId, Snapshot};
use serde::{Deserialize, Serialize};

use crate::State;
use crate::error::{Error, Result};
use crate::snapshot::restore::{self, Plan};
use crate::snapshot::save::read_live;
use crate::snapshot::{Flat, Layout, flatten, in_roots, session_of, write_trees};
use crate::store::refs::{HEAD, RefTxn};
use crate::store::statcache::{Stat, StatCache};
use crate::store::{Batch, BatchStats, durable, now_ns};

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
}

/// What to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Revision (default: head).
    pub rev: Option<String>,
    /// Only this session.
    pub session: Option<String>,
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
}

/// Records that the live state must be made equal to the head, whatever it becomes: written
/// before an operation moves the head (sync pull), removed by the restore that follows. A crash
/// in between is rolled forward by recovery.
pub(crate) fn write_head_intent(st: &State) -> Result<()> {
    durable::write_atomic(
        &st.snap_dir.join("restore-intent"),
        &serde_json::to_vec(&Intent {
            snapshot: "head".into(),
            session: None,
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

/// A predicate selecting one session's paths (or everything).
pub fn scope(session: Option<&str>) -> impl Fn(&[u8]) -> bool + Sync + '_ {
    move |p: &[u8]| match session {
        None => in_roots(p),
        Some(id) => session_of(p).is_some_and(|s| s == id.as_bytes()),
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

impl State {
    /// The current head, its snapshot and its content.
    fn head_state(&self) -> Result<Option<(ObjectId, Snapshot)>> {
        match self.refs.get(HEAD)? {
            None => Ok(None),
            Some(id) => Ok(Some((id, self.objects.read_snapshot(&id)?))),
        }
    }

    /// Snapshots the live state (see [`SaveOptions`]).
    ///
    /// # Errors
    /// I/O, lock or store errors. On error no ref moves.
    pub fn save(&self, opts: &SaveOptions) -> Result<SaveOutcome> {
        let _lock = self.lock("state save")?;
        self.save_locked(opts)
    }

    pub(crate) fn save_locked(&self, opts: &SaveOptions) -> Result<SaveOutcome> {
        let mut cache = StatCache::load(&self.statcache_path());
        let batch = self.objects.batch()?;
        let layout = self.layout();
        let sel = scope(opts.session.as_deref());
        let live = read_live(&layout, &sel, &mut cache, Some(&batch))?;
        self.note_skipped("not saved", &live.skipped);
        let head = self.head_state()?;
        let mut new_flat = live.flat;
        let mut quarantined = Vec::new();
        let mut head_flat_cache: Option<Flat> = None;
        let mut head_flat = |st: &State| -> Result<Flat> {
            if head_flat_cache.is_none() {
                head_flat_cache = Some(match &head {
                    Some((_, s)) => flatten(&st.objects, &s.root)?,
                    None => Flat::with_roots(),
                });
            }
            Ok(head_flat_cache.clone().expect("just set"))
        };
        if !live.corrupt.is_empty() {
            let hf = head_flat(self)?;
            for (rel, why) in live.corrupt {
                // Possibly mid-write by the terminal: snapshot the last good version but leave
                // the live file alone; a later command judges it once it has settled.
                if !is_young(&layout.abs(&rel)) {
                    quarantined.push(self.quarantine(
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
            let hf = head_flat(self)?;
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
            let keep = scope(Some(session));
            let mut merged = hf.filtered(|p| !keep(p));
            merged.leaves.extend(new_flat.leaves);
            merged.dirs.extend(new_flat.dirs);
            new_flat = merged;
        }
        let root = write_trees(&new_flat, Some(&batch))?;
        if let Some((hid, hs)) = &head
            && hs.root == root
        {
            batch.commit()?;
            cache.retain(in_roots);
            cache.save(&self.statcache_path())?;
            return Ok(SaveOutcome {
                id: Some(*hid),
                created: false,
                summary: ChangeSummary::default(),
                sessions: Vec::new(),
                objects_written: 0,
                bytes_written: 0,
                quarantined,
            });
        }
        let base = head_flat(self)?;
        let (id, stats, sessions) = self.commit_snapshot(
            batch,
            &new_flat,
            &base,
            head.as_ref().map(|h| h.0),
            root,
            &opts.message,
            opts.session.clone(),
        )?;
        cache.retain(in_roots);
        cache.save(&self.statcache_path())?;
        Ok(SaveOutcome {
            id: Some(id),
            created: true,
            summary: base.summary_to(&new_flat),
            sessions,
            objects_written: stats.objects,
            bytes_written: stats.bytes,
            quarantined,
        })
    }

    /// Writes a snapshot of `new_flat` (whose root is `root`) on top of `head`, moves the head and
    /// the refs of the sessions that changed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn commit_snapshot(
        &self,
        batch: Batch<'_>,
        new_flat: &Flat,
        base: &Flat,
        head: Option<ObjectId>,
        root: ObjectId,
        message: &str,
        session: Option<String>,
    ) -> Result<(ObjectId, BatchStats, Vec<String>)> {
        let snap = Snapshot {
            root,
            parents: head.into_iter().collect(),
            time_ns: now_ns(),
            device: self.device.clone(),
            message: message.to_owned(),
            session,
            summary: base.summary_to(new_flat),
            extra: Vec::new(),
        };
        let id = batch.put(&Object::Snapshot(snap))?;
        let stats = batch.commit()?;
        let reflog_msg = if message.is_empty() {
            "save".to_owned()
        } else {
            format!("save: {message}")
        };
        let current = self.refs.get(HEAD)?;
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
        self.refs.update_many(&txn, &reflog_msg)?;
        Ok((id, stats, moved))
    }

    /// Moves a corrupt descriptor to `state/quarantine/<time>/…` and puts back its last good
    /// version from the head snapshot when there is one.
    fn quarantine(
        &self,
        layout: &Layout,
        rel: &[u8],
        why: &str,
        good: Option<crate::snapshot::Leaf>,
        cache: &mut StatCache,
    ) -> Result<Quarantined> {
        let src = layout.abs(rel);
        let qdir = self
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
            restore::apply(&self.objects, layout, &one, &plan)?;
            if let Ok(m) = std::fs::symlink_metadata(&src) {
                cache.insert(rel.to_vec(), Stat::of(&m), leaf.kind, leaf.id, now_ns());
            }
            restored_from = self.refs.get(HEAD)?.map(|h| h.to_hex());
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
    pub(crate) fn repair_descriptors(&self, settle: bool) -> Result<Vec<Quarantined>> {
        let bad = self.corrupt_descriptors(settle)?;
        let mut out = Vec::new();
        if bad.is_empty() {
            return Ok(out);
        }
        let mut cache = StatCache::load(&self.statcache_path());
        let layout = self.layout();
        let head = match self.head_state()? {
            Some((_, s)) => flatten(&self.objects, &s.root)?,
            None => Flat::with_roots(),
        };
        for (rel, why) in bad {
            out.push(self.quarantine(
                &layout,
                &rel,
                &why,
                head.leaves.get(&rel).copied(),
                &mut cache,
            )?);
        }
        cache.save(&self.statcache_path())?;
        Ok(out)
    }

    /// Session descriptors (`state/sessions/**.json`) that do not parse. Only descriptors whose
    /// stat changed since they were last read are read (a cached one was valid when saved), so
    /// this is a directory walk and a stat per descriptor in the common case.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn corrupt_descriptors(&self, settle: bool) -> Result<Vec<(Vec<u8>, String)>> {
        use std::os::unix::ffi::OsStrExt;
        let base = self.paths.state_dir.join("sessions");
        let mut out = Vec::new();
        if !base.is_dir() {
            return Ok(out);
        }
        let cache = StatCache::load(&self.statcache_path());
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
    pub fn live_root(&self) -> Result<ObjectId> {
        let mut cache = StatCache::load(&self.statcache_path());
        let live = read_live(&self.layout(), &scope(None), &mut cache, None)?;
        write_trees(&live.flat, None)
    }

    /// Restores a snapshot (see [`RestoreOptions`]). Unsaved live changes are saved first, so a
    /// restore never loses anything; the restore itself is recorded as a new snapshot.
    ///
    /// # Errors
    /// Unknown revision, missing/corrupt objects (nothing live is changed), lock or I/O errors.
    pub fn restore(&self, opts: &RestoreOptions) -> Result<RestoreOutcome> {
        if let Some(dir) = &opts.to {
            return self.restore_to(opts, dir);
        }
        let _lock = self.lock("state restore")?;
        let snap_id = self.restore_target(opts)?;
        if let Some(s) = &opts.session {
            let t = flatten(&self.objects, &self.objects.read_snapshot(&snap_id)?.root)?;
            if !t
                .leaves
                .keys()
                .chain(t.dirs.iter())
                .any(|p| session_of(p) == Some(s.as_bytes()))
            {
                return Err(Error::UnknownSession(
                    s.clone(),
                    format!("snapshot {}", snap_id.short(12)),
                ));
            }
        }
        let auto_saved = if opts.dry_run {
            None
        } else {
            let o = self.save_locked(&SaveOptions {
                message: format!("auto-save before restoring {}", snap_id.short(12)),
                session: None,
            })?;
            if o.created { o.id } else { None }
        };
        let (plan, new_head) =
            self.restore_locked(snap_id, opts.session.as_deref(), opts.dry_run)?;
        Ok(RestoreOutcome {
            snapshot: snap_id,
            plan,
            auto_saved,
            new_head,
        })
    }

    /// The restore proper, under the lock: also used to roll an interrupted restore forward.
    pub(crate) fn restore_locked(
        &self,
        snap_id: ObjectId,
        session: Option<&str>,
        dry_run: bool,
    ) -> Result<(Plan, Option<ObjectId>)> {
        let snap = self.objects.read_snapshot(&snap_id)?;
        let sel = scope(session);
        let target = flatten(&self.objects, &snap.root)?.filtered(&sel);
        let layout = self.layout();
        let mut cache = StatCache::load(&self.statcache_path());
        let live = read_live(&layout, &sel, &mut cache, None)?;
        let mut live_flat = live.flat;
        let mut target = target;
        // What the snapshot policy does not materialise stays as it is live; what the stat cache
        // vouches for is read again before the plan trusts it (the cache never decides what a
        // restore writes).
        let skipped = restore::apply_policy(&self.objects, &mut target, &mut live_flat)?;
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
        self.note_skipped("not restored", &skipped);
        plan.skipped = skipped;
        if dry_run {
            return Ok((plan, None));
        }
        let intent_path = self.snap_dir.join("restore-intent");
        durable::write_atomic(
            &intent_path,
            &serde_json::to_vec(&Intent {
                snapshot: snap_id.to_hex(),
                session: session.map(str::to_owned),
            })
            .map_err(std::io::Error::other)?,
        )?;
        if let Err(e) = restore::apply(&self.objects, &layout, &target, &plan) {
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
        cache.save(&self.statcache_path())?;
        // Record the restore as a snapshot on top of the head.
        let head = self.head_state()?;
        let base = match &head {
            Some((_, s)) => flatten(&self.objects, &s.root)?,
            None => Flat::with_roots(),
        };
        let new_flat = match session {
            None => target,
            Some(_) => {
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
            let batch = self.objects.batch()?;
            let root = write_trees(&new_flat, Some(&batch))?;
            let msg = match session {
                Some(s) => format!("restore session {s} from {}", snap_id.short(12)),
                None => format!("restore {}", snap_id.short(12)),
            };
            Some(
                self.commit_snapshot(
                    batch,
                    &new_flat,
                    &base,
                    head.map(|h| h.0),
                    root,
                    &msg,
                    session.map(str::to_owned),
                )?
                .0,
            )
        };
        fs::remove_file(&intent_path)?;
        durable::sync_dir(&self.snap_dir)?;
        Ok((plan, new_head))
    }

    /// The snapshot a restore is about: its revision, or the head.
    fn restore_target(&self, opts: &RestoreOptions) -> Result<ObjectId> {
        match &opts.rev {
            Some(r) => self.resolve(r),
            None => self.refs.get(HEAD)?.ok_or(Error::NoSnapshot),
        }
    }

    fn restore_to(&self, opts: &RestoreOptions, dir: &std::path::Path) -> Result<RestoreOutcome> {
        let snap_id = self.restore_target(opts)?;
        let snap = self.objects.read_snapshot(&snap_id)?;
        let sel = scope(opts.session.as_deref());
        let target = flatten(&self.objects, &snap.root)?.filtered(&sel);
        let layout = Layout::under(dir);
        if !opts.dry_run {
            fs::create_dir_all(&layout.state)?;
            fs::create_dir_all(&layout.config)?;
        }
        let mut cache = StatCache::default();
        let live = read_live(&layout, &sel, &mut cache, None)?;
        let (mut target, mut live_flat) = (target, live.flat);
        let skipped = restore::apply_policy(&self.objects, &mut target, &mut live_flat)?;
        let mut plan = restore::plan(&target, &live_flat);
        self.note_skipped("not restored", &skipped);
        plan.skipped = skipped;
        if !opts.dry_run {
            restore::apply(&self.objects, &layout, &target, &plan)?;
        }
        Ok(RestoreOutcome {
            snapshot: snap_id,
            plan,
            auto_saved: None,
            new_head: None,
        })
    }

    /// Reads a restore intent left by an interrupted restore.
    pub(crate) fn pending_restore(&self) -> Result<Option<(ObjectId, Option<String>)>> {
        let p = self.snap_dir.join("restore-intent");
        match std::fs::read(&p) {
            Ok(b) => match serde_json::from_slice::<Intent>(&b) {
                Ok(i) if ObjectId::from_hex(&i.snapshot).is_ok() => Ok(Some((
                    ObjectId::from_hex(&i.snapshot).expect("checked"),
                    i.session,
                ))),
                Ok(i) if i.snapshot == "head" => match self.refs.get(HEAD)? {
                    Some(h) => Ok(Some((h, None))),
                    None => {
                        fs::remove_file(&p)?;
                        Ok(None)
                    }
                },
                // A torn intent means the restore had not started writing live files.
                _ => {
                    fs::remove_file(&p)?;
                    Ok(None)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
