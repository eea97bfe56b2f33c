//! Startup recovery and garbage collection.

use std::collections::{BTreeSet, HashSet};

use fs_err as fs;
use objects_format::{Kind, ObjectId};
use serde::Serialize;

use crate::context::{Context, Paths};
use crate::error::{Error, Result};
use crate::live::Quarantined;
use crate::live::restore::Pending;
use crate::repair::{Quarantine, Repair};
use crate::snapshot::restore::remove_tmp_files;
use crate::store::ObjectStore;
use crate::store::walk;

/// What gc is doing, in its I/O errors (`Error::File`).
const GC: &str = "gc";

/// What recovery did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryReport {
    /// Unfinished object batches removed (their objects were never referenced).
    pub staging_removed: usize,
    /// Temp files removed (refs, live dirs).
    pub tmp_files_removed: usize,
    /// An interrupted restore that was finished: the snapshot (hex).
    pub restore_finished: Option<String>,
    /// Corrupt descriptors moved to quarantine (and restored from the last good snapshot).
    pub quarantined: Vec<Quarantined>,
    /// An interrupted restore that could not be finished (its snapshot is damaged): why.
    pub restore_abandoned: Option<String>,
    /// Whether recovery was skipped because another process holds the lock.
    pub skipped_busy: bool,
    /// Damaged store files repaired (docs/safety.md, "Damaged store files").
    pub repaired: Vec<Repair>,
}

impl RecoveryReport {
    /// True when recovery changed anything.
    #[must_use]
    pub fn did_something(&self) -> bool {
        self.staging_removed > 0
            || self.tmp_files_removed > 0
            || self.restore_finished.is_some()
            || self.restore_abandoned.is_some()
            || !self.quarantined.is_empty()
            || !self.repaired.is_empty()
    }
}

/// What gc did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Objects reachable from refs and reflogs.
    pub reachable: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Objects rewritten by `--repack`.
    pub repacked: Option<u64>,
}

/// zstd level of `state gc --repack`.
pub const REPACK_LEVEL: i32 = 12;

/// Opens (creating if needed) the store, then finishes or rolls back whatever an interrupted
/// process left (see [`recover`]); the report says what was done. A corrupt session descriptor
/// (a torn write, a crash of the terminal) is quarantined and its last good version put back
/// before anything else reads it (a damaged head is left for `state recover`; commands that
/// need it say so).
///
/// # Errors
/// I/O errors, a store from a newer shelldone, a damaged `FORMAT` ([`Error::CorruptFile`]),
/// or a failed recovery.
pub fn open(paths: Paths) -> Result<(Context, RecoveryReport)> {
    open_as(paths, true)
}

/// [`open`] without the descriptor check, for a whole-state save: its own walk reads every
/// descriptor that changed and quarantines a corrupt one the same way, so checking them first
/// would walk every session folder twice.
///
/// # Errors
/// As [`open`].
pub fn open_for_save(paths: Paths) -> Result<(Context, RecoveryReport)> {
    open_as(paths, false)
}

/// [`open`] for a command that only reads: a store of an older format is read through, not
/// migrated, and nothing is written (see [`crate::context::Context::read_through`]).
///
/// # Errors
/// As [`open`].
pub fn open_read_through(paths: Paths) -> Result<(Context, RecoveryReport)> {
    open_mode(paths, true, crate::context::OnOlder::ReadThrough)
}

fn open_as(paths: Paths, descriptors: bool) -> Result<(Context, RecoveryReport)> {
    open_mode(paths, descriptors, crate::context::OnOlder::Migrate)
}

fn open_mode(
    paths: Paths,
    descriptors: bool,
    on_older: crate::context::OnOlder,
) -> Result<(Context, RecoveryReport)> {
    let cx = Context::open_mode(paths, false, on_older)?;
    let mut report = if cx.read_only {
        RecoveryReport::default()
    } else {
        recover_leftovers(&cx)?
    };
    if descriptors
        && !cx.read_only
        && cx.damage.is_empty()
        && matches!(cx.refs.get(crate::store::refs::HEAD), Ok(Some(_)))
    {
        let cache = cx.load_statcache();
        let bad = crate::live::descriptors::corrupt_descriptors(&cx, &cache, true)?;
        if bad.is_empty() {
            cx.keep_statcache(cache);
            return Ok((cx, report));
        }
        let bad: Vec<Vec<u8>> = bad.into_iter().map(|(p, _)| p).collect();
        match cx.acquire_checked("descriptor repair", std::time::Duration::ZERO) {
            Ok(_lock) => {
                report.quarantined = crate::live::descriptors::repair_descriptors(
                    &cx,
                    true,
                    Some(cache),
                    Some(&bad),
                )?;
            }
            Err(Error::Locked { .. }) => report.skipped_busy = true,
            Err(e) => return Err(e),
        }
    }
    Ok((cx, report))
}

/// Cheap recovery run by [`open`]: only if the lock is free (a live holder is working).
pub(crate) fn recover_leftovers(cx: &Context) -> Result<RecoveryReport> {
    let staging_busy =
        std::fs::read_dir(cx.snapshots_dir().join("staging")).is_ok_and(|mut d| d.next().is_some());
    let needs = staging_busy || cx.snapshots_dir().join("restore-intent").exists();
    if !needs {
        return Ok(RecoveryReport::default());
    }
    match cx.acquire_checked("recovery", std::time::Duration::ZERO) {
        Ok(_lock) => recover_locked(cx),
        Err(Error::Locked { .. }) => Ok(RecoveryReport {
            skipped_busy: true,
            ..RecoveryReport::default()
        }),
        Err(e) => Err(e),
    }
}

/// `state recover`: repairs damaged store files (a damaged `FORMAT` first, and only when
/// the store's contents show which version wrote it), removes leftovers, finishes
/// interrupted operations, and checks every session descriptor, quarantining corrupt ones
/// and restoring their last good version. Works on a store opened with
/// [`Context::open_for_repair`], whatever is damaged.
///
/// # Errors
/// Lock, I/O or store errors; a damaged `FORMAT` that cannot be rewritten.
pub fn recover(cx: &Context) -> Result<RecoveryReport> {
    let _lock = cx.lock_for_repair("state recover")?;
    let q = Quarantine::new(cx);
    let mut r = RecoveryReport::default();
    crate::repair::repair_format(cx, &q, &mut r.repaired)?;
    remove_leftovers(cx, &mut r)?;
    crate::repair::repair_store(cx, &q, &mut r.repaired)?;
    finish_intent(cx, &mut r, true)?;
    r.quarantined = crate::live::descriptors::repair_descriptors(cx, false, None, None)?;
    Ok(r)
}

/// Startup recovery, under the lock: leftovers, packs without an index, an interrupted
/// restore.
fn recover_locked(cx: &Context) -> Result<RecoveryReport> {
    let mut r = RecoveryReport::default();
    remove_leftovers(cx, &mut r)?;
    crate::repair::repair_packs(cx, None, &mut r.repaired)?;
    finish_intent(cx, &mut r, false)?;
    Ok(r)
}

/// Staging dirs of unfinished batches and temp files next to refs, small files and live
/// files.
fn remove_leftovers(cx: &Context, r: &mut RecoveryReport) -> Result<()> {
    let staging = cx.snapshots_dir().join("staging");
    if staging.exists() {
        for e in fs::read_dir(&staging)? {
            let e = e?;
            fs::remove_dir_all(e.path())?;
            r.staging_removed += 1;
        }
    }
    // Temp files next to refs and small files.
    for dir in [
        cx.snapshots_dir().join("refs"),
        cx.snapshots_dir().to_path_buf(),
        cx.objects.packs_dir(),
    ] {
        if !dir.exists() {
            continue;
        }
        for e in walkdir::WalkDir::new(&dir).max_depth(if dir.ends_with("refs") { 64 } else { 1 }) {
            let Ok(e) = e else { continue };
            if e.file_type().is_file()
                && crate::store::durable::is_tmp_name(std::os::unix::ffi::OsStrExt::as_bytes(
                    e.file_name(),
                ))
            {
                fs::remove_file(e.path())?;
                r.tmp_files_removed += 1;
            }
        }
    }
    r.tmp_files_removed += remove_tmp_files(&cx.layout())?;
    Ok(())
}

/// Rolls an interrupted restore forward, or gives it up. At startup (`full` false) an
/// intent that needs a damaged head is left for `state recover`, which repairs the head
/// first.
fn finish_intent(cx: &Context, r: &mut RecoveryReport, full: bool) -> Result<()> {
    let intent = cx.snapshots_dir().join("restore-intent");
    match crate::live::restore::pending_restore(cx)? {
        Pending::None => {}
        Pending::Corrupt(why) => {
            fs::remove_file(&intent)?;
            r.repaired.push(Repair {
                file: intent.display().to_string(),
                damage: why,
                action: "deleted: the restore it recorded cannot be finished (every live \
                         file is its old or its new content); run that restore again if \
                         one was interrupted"
                    .into(),
            });
        }
        Pending::HeadUnreadable(e) => {
            if full {
                let _ = std::fs::remove_file(&intent);
                r.restore_abandoned = Some(format!("head: {e}"));
            }
        }
        Pending::Restore(_, _) if !full && cx.refs.get(crate::store::refs::HEAD).is_err() => {}
        Pending::Restore(snap, scope) => {
            // Roll forward: the user asked for this snapshot; finish making it live. If that
            // is impossible (its objects are damaged), give up on it rather than block every
            // command. Whatever changed in the live dirs since the crash is saved first, so
            // rolling forward never overwrites edits made after it.
            // Only the scope of the restore: a session restore overwrites nothing else.
            let saved = crate::live::restore::save_before_restore(
                cx,
                &scope,
                "auto-save before finishing an interrupted restore",
                &mut None,
            );
            match saved.and_then(|_| crate::live::restore::restore_locked(cx, snap, &scope, false))
            {
                Ok(_) => r.restore_finished = Some(snap.to_hex()),
                Err(e) => {
                    let _ = std::fs::remove_file(&intent);
                    r.restore_abandoned = Some(format!("{}: {e}", snap.to_hex()));
                }
            }
        }
    }
    Ok(())
}

/// Every object reachable from the given snapshots.
///
/// # Errors
/// Missing or corrupt trees/snapshots/chunk lists (blobs are not read).
pub fn reachable(cx: &Context, roots: &[ObjectId]) -> Result<HashSet<ObjectId>> {
    let (shallow, _) = cx.read_shallow();
    let roots: Vec<(ObjectId, Kind)> = roots.iter().map(|r| (*r, Kind::Snapshot)).collect();
    let seen = walk::walk(
        &mut &cx.objects,
        &roots,
        &mut Reachable {
            cx,
            shallow: &shallow,
        },
    )?;
    Ok(seen.into_iter().map(|(id, _)| id).collect())
}

/// gc's walk: reads everything but blobs; a shallow snapshot's parents this store lacks are
/// not part of its history.
struct Reachable<'a> {
    cx: &'a Context,
    shallow: &'a BTreeSet<ObjectId>,
}

impl<'s> walk::Visitor<&'s ObjectStore> for Reachable<'_> {
    fn enter(&mut self, _: &mut &'s ObjectStore, node: &walk::Node<'_>) -> Result<walk::Enter> {
        Ok(match node.from {
            Some(s)
                if node.link.is_some_and(|l| l.is_history())
                    && self.shallow.contains(&s)
                    && !self.cx.objects.has(&node.id) =>
            {
                walk::Enter::Ignore
            }
            _ if node.kind == Kind::Blob => walk::Enter::Skip,
            _ => walk::Enter::Read,
        })
    }
}

/// Deletes objects no ref or reflog entry reaches. Holds the store lock, so a concurrent save
/// (which also holds it from first object write to ref update) can never lose an object.
/// Refuses to run when a reachable tree is missing or corrupt (deleting then could lose data).
///
/// # Errors
/// Lock, I/O errors, or an unreadable reachable object.
pub fn gc(cx: &Context) -> Result<GcReport> {
    gc_with(cx, false)
}

/// [`gc`], then with `repack`, every reachable object recompressed at zstd level
/// [`REPACK_LEVEL`] into one pack (loose objects and old packs removed after the new pack
/// is published). Saves stay fast at level 3; a repack trades CPU once for a smaller store.
///
/// # Errors
/// As [`gc`].
pub fn gc_with(cx: &Context, repack: bool) -> Result<GcReport> {
    let _lock = cx.lock("state gc")?;
    let (_, mut roots) = crate::check::root_snapshots(cx)?;
    // Ids in reflog lines too damaged to parse: kept until `state recover` has set the
    // lines aside, so gc never deletes what such a line may have named.
    for id in crate::repair::reflog_salvage_ids(cx)? {
        if cx.objects.read_snapshot(&id).is_ok() {
            roots.push(id);
        }
    }
    let keep = reachable(cx, &roots)?;
    let mut report = GcReport {
        reachable: keep.len(),
        ..GcReport::default()
    };
    let mut doomed: Vec<(u8, ObjectId)> = Vec::new();
    for id in cx.objects.list_loose()? {
        if !keep.contains(&id) {
            // Parents before children, so "an object present ⇒ its children present" holds
            // at every instant, even if gc is killed half-way.
            let rank = match cx.objects.read_verified(&id).ok().map(|v| v.kind) {
                Some(Kind::Snapshot) => 0,
                Some(Kind::Tree) => 1,
                Some(Kind::ChunkList) => 2,
                _ => 3,
            };
            doomed.push((rank, id));
        }
    }
    doomed.sort();
    let mut dirs = std::collections::BTreeSet::new();
    let phase = crate::progress::Phase::begin(&*cx.progress, "gc", Some(doomed.len() as u64), None);
    for (_, id) in doomed {
        let p = cx.objects.object_path(&id);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&p).map_err(Error::at("removing", &p, GC))?;
        dirs.insert(p.parent().expect("fan-out dir").to_path_buf());
        report.deleted += 1;
        report.bytes_freed += len;
        phase.advance(1, len);
    }
    for d in dirs {
        crate::store::durable::sync_dir(&d).map_err(Error::at("syncing", &d, GC))?;
    }
    // Then packs, after the loose parents are gone: a pack with dead objects has its live ones re-stored (as a new pack or
    // loose objects) before the old pack goes, so a live object is always stored somewhere.
    for (pack_path, ids) in cx.objects.pack_contents() {
        let dead = ids.iter().filter(|id| !keep.contains(id)).count();
        if dead == 0 {
            continue;
        }
        let mut live: Vec<ObjectId> = ids.iter().filter(|id| keep.contains(id)).copied().collect();
        if !live.is_empty() {
            cx.objects.sort_for_reading(&mut live);
            let batch = cx.objects.batch_forced()?;
            for id in &live {
                // Verified, so a damaged object is never copied into the new pack.
                let v = cx.objects.read_verified(id)?;
                batch.put_canonical(v.kind, *id, &v.canonical)?;
            }
            batch.commit()?;
        }
        let len = std::fs::metadata(&pack_path).map(|m| m.len()).unwrap_or(0);
        let idx = pack_path.with_extension("idx");
        fs::remove_file(&idx).map_err(Error::at("removing", &idx, GC))?;
        fs::remove_file(&pack_path).map_err(Error::at("removing", &pack_path, GC))?;
        let packs = cx.objects.packs_dir();
        crate::store::durable::sync_dir(&packs).map_err(Error::at("syncing", &packs, GC))?;
        report.deleted += dead;
        report.bytes_freed += len;
    }
    cx.objects.reload_packs();
    // Small stores stay loose (a batch of up to LOOSE_MAX objects is written loose).
    if repack && keep.len() > crate::store::LOOSE_MAX {
        let old_packs: Vec<std::path::PathBuf> = cx
            .objects
            .pack_contents()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let old_loose = cx.objects.list_loose()?;
        let mut ids: Vec<ObjectId> = keep
            .iter()
            .copied()
            .filter(|id| cx.objects.has(id))
            .collect();
        // In the order they are stored: each block is decompressed once, and neighbours
        // (chunks of one file) land in the same new block.
        cx.objects.sort_for_reading(&mut ids);
        let batch = cx.objects.batch_forced()?.with_level(REPACK_LEVEL);
        {
            use rayon::prelude::*;
            ids.par_iter().try_for_each(|id| -> Result<()> {
                let v = cx.objects.read_verified(id)?;
                batch.put_canonical(v.kind, *id, &v.canonical)?;
                Ok(())
            })?;
        }
        let before_bytes: u64 = old_packs
            .iter()
            .chain(
                old_loose
                    .iter()
                    .map(|id| cx.objects.object_path(id))
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        let stats = batch.commit()?;
        let now: Vec<std::path::PathBuf> =
            crate::store::ObjectStore::new(cx.snapshots_dir().to_path_buf())
                .pack_contents()
                .into_iter()
                .map(|(p, _)| p)
                .collect();
        if now.iter().all(|p| old_packs.contains(p)) {
            // The new pack is byte-identical to one we have: nothing to replace.
            report.repacked = Some(0);
            return Ok(report);
        }
        // The new pack is published; the old copies can go (index first, then the pack).
        for p in &old_packs {
            fs::remove_file(p.with_extension("idx"))?;
            fs::remove_file(p)?;
        }
        crate::store::durable::sync_dir(&cx.objects.packs_dir())?;
        for id in &old_loose {
            fs::remove_file(cx.objects.object_path(id))?;
        }
        cx.objects.reload_packs();
        report.repacked = Some(stats.objects);
        report.bytes_freed += before_bytes.saturating_sub(stats.bytes);
    }
    Ok(report)
}
