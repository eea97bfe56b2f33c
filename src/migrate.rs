//! `shelldone migrate`: runs every pending migration step (the store format's and the live-data
//! steps of `shelldone_migrations`) after a restore point, goes back to the newest restore point
//! (`--undo`), and says where the store stands (`--status`). docs/migrations.md.
//!
//! The command's context is opened read-through (an older store is not migrated at open), so
//! that `--dry-run` and `--status` write nothing and the run itself reports each step.

use serde::Serialize;
use shelldone_migrations::{MigrationError, restore_point};

use crate::context::{Context, STORE_FORMAT};
use crate::error::{Error, Result};
use crate::store::durable::Durable;
use crate::store::lock::StoreLock;

/// One pending (or run) step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// What it does (`store format 1 -> 2`).
    pub name: String,
    /// The files it may rewrite, relative to the state dir.
    pub files: Vec<String>,
}

/// One restore point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointInfo {
    /// Its folder under `snapshots/restore-points/`.
    pub name: String,
    /// The migration it was made for (`store-1-to-2`).
    pub label: String,
    /// When (seconds since the Unix epoch).
    pub created: u64,
    /// How many files it holds (or records as absent).
    pub files: usize,
    /// Its migration finished.
    pub done: bool,
}

impl From<&restore_point::Point> for PointInfo {
    fn from(p: &restore_point::Point) -> Self {
        PointInfo {
            name: p.name.clone(),
            label: p.label.clone(),
            created: p.created,
            files: p.files.len(),
            done: p.done,
        }
    }
}

/// What `migrate` did, or with `--dry-run` would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// The store format before.
    pub from: String,
    /// The store format after (the same for a dry run).
    pub to: String,
    /// The steps, in order (empty: nothing to do).
    pub steps: Vec<StepReport>,
    /// The restore point made (or reused), if a step ran.
    pub restore_point: Option<String>,
}

/// What `migrate --undo` did, or with `--dry-run` would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UndoReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// The restore point gone back to (deleted afterwards).
    pub restore_point: String,
    /// The files written back or removed, relative to the state dir.
    pub files: Vec<String>,
    /// What was written since the migration in a form the older store format cannot read, and
    /// was converted down first (`packs/<name> (version 2)`: its objects stored loose, the
    /// pack deleted; `packed-refs`: its refs written loose, the file deleted); empty when
    /// there was none.
    pub converted: Vec<String>,
    /// The store format after.
    pub to: String,
}

/// `migrate --status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The store's format.
    pub format: String,
    /// The newest this shelldone writes.
    pub supported: String,
    /// Steps pending.
    pub pending: Vec<StepReport>,
    /// Restore points, oldest first.
    pub restore_points: Vec<PointInfo>,
}

fn migration(cx: &Context) -> impl Fn(MigrationError) -> Error + '_ {
    |e| match e {
        MigrationError::NoRestorePoint => Error::Usage(format!(
            "{e} (no migration has run in {}, or it was undone)",
            cx.snapshots_dir().display()
        )),
        source => Error::Migration {
            path: cx.snapshots_dir().to_path_buf(),
            source,
        },
    }
}

fn steps(planned: Vec<shelldone_migrations::Planned>) -> Vec<StepReport> {
    planned
        .into_iter()
        .map(|p| StepReport {
            name: p.name,
            files: p.files.iter().map(|f| f.display().to_string()).collect(),
        })
        .collect()
}

fn format(cx: &Context) -> Result<String> {
    shelldone_migrations::read_format(cx.snapshots_dir())
        .map(|v| v.to_string())
        .map_err(migration(cx))
}

/// The store lock for a migration: refused for a store of a newer minor (read-only).
fn lock(cx: &Context, what: &str) -> Result<StoreLock> {
    if cx.read_only && cx.read_through.is_none() {
        return Err(Error::ReadOnly(cx.snapshots_dir().to_path_buf()));
    }
    StoreLock::acquire(cx.snapshots_dir(), what, cx.lock_timeout)
}

/// `migrate [--dry-run]`.
///
/// # Errors
/// [`Error::Migration`] (a step failed: run again to finish it), lock and I/O errors.
pub fn run(cx: &Context, dry_run: bool) -> Result<MigrateReport> {
    let state_dir = &cx.paths().state_dir;
    let from = format(cx)?;
    let report = if dry_run {
        shelldone_migrations::run_pending(state_dir, STORE_FORMAT.major, true, &Durable)
    } else {
        let _lock = lock(cx, "migrate")?;
        shelldone_migrations::run_pending(state_dir, STORE_FORMAT.major, false, &Durable)
    }
    .map_err(migration(cx))?;
    Ok(MigrateReport {
        dry_run,
        from,
        to: if dry_run {
            // What the store steps lead to.
            if report.steps.iter().any(|s| s.name.starts_with("store ")) {
                STORE_FORMAT.to_string()
            } else {
                format(cx)?
            }
        } else {
            format(cx)?
        },
        steps: steps(report.steps),
        restore_point: report.point.map(|p| p.name),
    })
}

/// `migrate --undo [--dry-run]`: back to the newest restore point. What was written since the
/// migration in a form the older store format cannot read (version-2 packs, `packed-refs`) is
/// converted down first, durably, under the lock: each such pack's objects are stored loose
/// and the pack deleted ([`crate::store::ObjectStore::explode_packs_above`]), the packed refs
/// written loose and `packed-refs` deleted ([`crate::store::refs::Refs::unpack`]). Every step
/// leaves the store readable as it was, so a crash anywhere is finished by running it again.
///
/// # Errors
/// [`Error::Usage`] without a restore point; [`Error::Migration`] when the point is damaged;
/// lock, store and I/O errors.
pub fn undo(cx: &Context, dry_run: bool) -> Result<UndoReport> {
    let state_dir = &cx.paths().state_dir;
    let _lock = if dry_run {
        None
    } else {
        Some(lock(cx, "migrate --undo")?)
    };
    let newest = restore_point::list(state_dir).map_err(migration(cx))?.pop();
    let converted = match &newest {
        Some(p) => shelldone_migrations::undo_blockers(state_dir, p).map_err(migration(cx))?,
        None => Vec::new(),
    };
    if let (Some(p), false) = (&newest, converted.is_empty()) {
        if dry_run {
            return Ok(UndoReport {
                dry_run,
                restore_point: p.name.clone(),
                files: p
                    .files
                    .iter()
                    .map(|(f, _)| f.display().to_string())
                    .collect(),
                converted,
                to: shelldone_migrations::point_format(state_dir, p)
                    .map_or_else(|| format(cx), |v| Ok(v.to_string()))?,
            });
        }
        convert_down(cx)?;
    }
    let point = shelldone_migrations::undo(state_dir, dry_run, &Durable).map_err(migration(cx))?;
    Ok(UndoReport {
        dry_run,
        restore_point: point.name.clone(),
        files: point
            .files
            .iter()
            .map(|(f, _)| f.display().to_string())
            .collect(),
        converted,
        to: if dry_run {
            std::fs::read(
                state_dir
                    .join(restore_point::DIR)
                    .join(&point.name)
                    .join("files/snapshots/FORMAT"),
            )
            .ok()
            .and_then(|b| shelldone_migrations::StoreVersion::parse(&b).ok())
            .map_or_else(|| format(cx), |v| Ok(v.to_string()))?
        } else {
            format(cx)?
        },
    })
}

/// Converts down what store format 2 allows and format 1 cannot read: version-2 packs to loose
/// objects, `packed-refs` to loose refs (see [`undo`]). The caller holds the store lock.
fn convert_down(cx: &Context) -> Result<()> {
    cx.objects.explode_packs_above(1)?;
    cx.refs.unpack()?;
    Ok(())
}

/// `migrate --status`: the store's format, the steps pending, the restore points. Reads only.
///
/// # Errors
/// I/O errors; a damaged `FORMAT` or `POINT`.
pub fn status(cx: &Context) -> Result<Status> {
    let state_dir = &cx.paths().state_dir;
    let pending =
        shelldone_migrations::plan(state_dir, STORE_FORMAT.major).map_err(migration(cx))?;
    let points = restore_point::list(state_dir).map_err(migration(cx))?;
    Ok(Status {
        format: format(cx)?,
        supported: STORE_FORMAT.to_string(),
        pending: steps(pending),
        restore_points: points.iter().map(PointInfo::from).collect(),
    })
}
