//! Torn session descriptors: found at startup, quarantined, and their last good version put
//! back.

use std::path::PathBuf;

use fs_err as fs;
use serde::Serialize;

use super::Scope;
use super::restore::reach;
use super::save::head_state;
use crate::context::Context;
use crate::error::Result;
use crate::snapshot::restore::{self, Plan, Reach, flatten_part};
use crate::snapshot::{Flat, Layout};
use crate::store::refs::HEAD;
use crate::store::statcache::{Stat, StatCache};
use crate::store::{durable, now_ns};

/// True when the file was modified less than [`DESCRIPTOR_SETTLE`] ago (or its age is unknown).
pub(super) fn is_young(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|m| m.elapsed().ok())
        .is_none_or(|age| age < DESCRIPTOR_SETTLE)
}

/// How old a changed descriptor must be before it is judged corrupt at startup.
pub const DESCRIPTOR_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

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

/// Moves a corrupt descriptor to `state/quarantine/<time>/…` and puts back its last good
/// version from the head snapshot when there is one.
pub(super) fn quarantine(
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
        restore::apply(&cx.objects, layout, &one, &plan, &crate::progress::Silent)?;
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

/// Validates every session descriptor that changed since it was last read (the stat cache, as
/// given or loaded, vouches for the others; one loaded before the lock is only older, so it
/// vouches for less); each corrupt one is moved to `state/quarantine/<time>/` and its last good
/// version put back from the head snapshot. Writes no snapshot.
///
/// # Errors
/// I/O or store errors.
///
/// `found`: the descriptors a check made before the lock was taken found corrupt; only they
/// are checked again (under the lock another process may have repaired them meanwhile), not
/// every descriptor.
pub(crate) fn repair_descriptors(
    cx: &Context,
    settle: bool,
    cache: Option<StatCache>,
    found: Option<&[Vec<u8>]>,
) -> Result<Vec<Quarantined>> {
    let mut cache = cache.unwrap_or_else(|| cx.load_statcache());
    let bad = match found {
        Some(paths) => check_descriptors(cx, &cache, settle, paths.iter().map(Vec::as_slice)),
        None => corrupt_descriptors(cx, &cache, settle)?,
    };
    let mut out = Vec::new();
    if bad.is_empty() {
        return Ok(out);
    }
    let layout = cx.layout();
    // Only the trees on the way to the bad descriptors are read, not the whole head.
    let head = match head_state(cx)? {
        Some((_, s)) => flatten_part(&cx.objects, &s, &|p| reach_any(&bad, p))?,
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
    // The cache is not written back: a descriptor put back differs from its record, so the
    // next start-up reads it (one small file) and the next save hashes it again; writing the
    // whole cache here cost more than the repair (a quarter of a one-session restore at 100 000
    // files). It is kept for the rest of this command.
    cx.keep_statcache(cache);
    Ok(out)
}

/// How `p` lies relative to the files `bad` names: inside one of them, above one, or neither.
fn reach_any(bad: &[(Vec<u8>, String)], p: &[u8]) -> Reach {
    let mut out = Reach::Outside;
    for (b, _) in bad {
        match reach(&Scope::Path(b.clone()), p) {
            Reach::Inside => return Reach::Inside,
            Reach::Above => out = Reach::Above,
            Reach::Outside => {}
        }
    }
    out
}

/// Session descriptors that do not parse, among those the last save recorded (the stat
/// cache lists them: no folder is listed, so this is one `lstat` per descriptor). Only a
/// descriptor whose stat changed since it was saved is read. A descriptor no save has seen has
/// no last good version to put back; the next save reads it and quarantines it if it is
/// corrupt.
///
/// # Errors
/// I/O errors.
pub(crate) fn corrupt_descriptors(
    cx: &Context,
    cache: &StatCache,
    settle: bool,
) -> Result<Vec<(Vec<u8>, String)>> {
    let recorded: Vec<&[u8]> = cache
        .loaded_under(b"state/sessions/")
        .filter(|p| crate::snapshot::save::is_descriptor(p))
        .collect();
    Ok(check_descriptors(cx, cache, settle, recorded.into_iter()))
}

/// The descriptors among `paths` that do not parse (see [`corrupt_descriptors`]), checked on
/// every core: one `lstat` each (at 100 000 files, 1 000 of them before every command).
fn check_descriptors<'p>(
    cx: &Context,
    cache: &StatCache,
    settle: bool,
    paths: impl Iterator<Item = &'p [u8]>,
) -> Vec<(Vec<u8>, String)> {
    use rayon::prelude::*;
    let layout = cx.layout();
    let paths: Vec<&[u8]> = paths.collect();
    paths
        .into_par_iter()
        .filter_map(|rel| {
            let path = layout.abs(rel);
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if !meta.is_file() || cache.lookup(rel, &Stat::of(&meta)).is_some() {
                return None;
            }
            // A descriptor modified in the last moments may be mid-write by the terminal:
            // leave it; it is checked again by the next command (and by every save).
            if settle
                && meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_none_or(|age| age < DESCRIPTOR_SETTLE)
            {
                return None;
            }
            let bytes = std::fs::read(&path).ok()?;
            crate::snapshot::save::validate_descriptor(&bytes)
                .err()
                .map(|why| (rel.to_vec(), why))
        })
        .collect()
}

/// Upgrades every live session descriptor under `state_dir` to the newest schema (version 1 →
/// 2: `shelldone_migrations::descriptor`), each replaced through [`durable`]: a temp file beside
/// it with the same permissions, synced, renamed over it, the folder synced. `dry_run` writes
/// nothing and reports the same. History is not touched: snapshots keep (and restore) the
/// version they saved. The caller holds the store lock (the terminal may still write a
/// descriptor meanwhile: its write wins, and the descriptor is reported as skipped).
///
/// # Errors
/// I/O errors; the descriptors replaced before stay upgraded, the others as they were, and
/// running again finishes.
pub fn migrate_live_descriptors(
    state_dir: &std::path::Path,
    dry_run: bool,
) -> Result<shelldone_migrations::descriptor::DescriptorReport> {
    shelldone_migrations::descriptor::migrate_live_descriptors_with(
        state_dir,
        dry_run,
        &mut |path, data, before| {
            shelldone_migrations::descriptor::replace_file_with(
                &durable::Durable,
                path,
                data,
                before,
            )
        },
    )
    .map_err(|source| crate::error::Error::Migration {
        path: state_dir.to_path_buf(),
        source,
    })
}
