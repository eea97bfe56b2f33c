//! Ordered, idempotent, crash-safe migrations between shelldone store format versions.
//!
//! A store's version is the first line of `snapshots/FORMAT`: `shelldone-store <major>.<minor>`.
//! A binary opens stores of its own major (a newer minor read-only) and upgrades an older major
//! here, one step per major, before anything else touches the store. Each step carries whatever
//! frozen knowledge of the format it reads that it needs, so a migration keeps working after
//! the main code moves on. Derived data (the stat cache) is never migrated, only rebuilt.
//!
//! | step | what changes | what the step does |
//! |---|---|---|
//! | 1 → 2 | packs and indexes may be version 2 (blocks: many small objects in one zstd frame, SPEC §7.2); refs may live in `snapshots/packed-refs`; a version-1 binary can read neither | rewrites `FORMAT`; version-1 packs, loose objects, loose refs and logs stay as they are (a version-2 reader reads them), so the step is one atomic file replace |
//!
//! Beside the store's steps, [`live_steps`] lists steps on other persisted data under the state
//! dir (session descriptors, …). [`run_pending`] runs both kinds after copying every file they
//! will rewrite into a [`restore_point`], which [`undo`] puts back (docs/migrations.md).

pub mod fs;
pub mod restore_point;

pub use fs::{StdFs, WriteFs};

use std::fmt;
use std::path::{Path, PathBuf};

pub mod descriptor;

/// A store format version, `(major, minor)`: the one line of `snapshots/FORMAT`, shared by the
/// code that opens a store and the migrations that upgrade it.
///
/// A binary that writes version `M.m` reads and writes stores `M.x` for `x <= m`, opens `M.x`
/// for `x > m` read-only (a newer minor only adds what an older reader may ignore), refuses a
/// newer major, and migrates an older major (see [`StoreVersion::access`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreVersion {
    /// Changes that an older reader cannot read.
    pub major: u32,
    /// Changes that an older reader can read but must not write.
    pub minor: u32,
}

/// What a binary may do with a store of another version (see [`StoreVersion::access`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Same major, same or older minor: read and write.
    ReadWrite,
    /// Same major, newer minor: read only.
    ReadOnly,
    /// Older major: [`migrate`] first.
    Migrate,
    /// Newer major: refuse the store.
    Refuse,
}

/// `FORMAT` does not hold `shelldone-store <major>.<minor>`; the message says what it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseVersionError(String);

impl StoreVersion {
    /// The version `major.minor`.
    #[must_use]
    pub const fn new(major: u32, minor: u32) -> Self {
        StoreVersion { major, minor }
    }

    /// Parses the contents of `FORMAT`: `shelldone-store <major>.<minor>`, surrounding white
    /// space allowed.
    ///
    /// # Errors
    /// [`ParseVersionError`] for bytes that are not UTF-8 or not that line.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseVersionError> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| ParseVersionError("not UTF-8".to_owned()))?;
        text.trim()
            .strip_prefix("shelldone-store ")
            .and_then(|v| v.split_once('.'))
            .and_then(|(a, b)| Some(StoreVersion::new(a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| {
                ParseVersionError(format!(
                    "not 'shelldone-store <major>.<minor>': {:?}",
                    text.chars().take(80).collect::<String>()
                ))
            })
    }

    /// The contents of `FORMAT` for this version, newline included.
    #[must_use]
    pub fn format_line(self) -> String {
        format!("shelldone-store {self}\n")
    }

    /// What a binary that writes version `self` may do with a store at version `found`.
    #[must_use]
    pub fn access(self, found: StoreVersion) -> Access {
        match (found.major.cmp(&self.major), found.minor > self.minor) {
            (std::cmp::Ordering::Greater, _) => Access::Refuse,
            (std::cmp::Ordering::Less, _) => Access::Migrate,
            (std::cmp::Ordering::Equal, true) => Access::ReadOnly,
            (std::cmp::Ordering::Equal, false) => Access::ReadWrite,
        }
    }
}

impl fmt::Display for StoreVersion {
    /// `major.minor`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A migration failed or is not possible.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// No step leads from `from` to `to`.
    #[error("no migration from store format {from} to {to}")]
    NoPath {
        /// Version found.
        from: u32,
        /// Version wanted.
        to: u32,
    },
    /// The store is not what the step expects (it was changed by something else).
    #[error("cannot migrate {path}: {why}")]
    Unexpected {
        /// The file in question.
        path: String,
        /// What was found.
        why: String,
    },
    /// `migrate --undo` without a restore point.
    #[error("there is no restore point to go back to")]
    NoRestorePoint,
    /// An I/O error; the store is left at the version it had.
    #[error("migrating {path}: {source}")]
    Io {
        /// The file in question.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// One step: migrates a store at `dir` (its `snapshots/` dir) from `from()` to `from() + 1`.
/// A step must be idempotent and crash-safe: killed at any moment, the store is left readable at
/// the old or the new version, and running the step again finishes it.
pub trait Step {
    /// The version this step reads.
    fn from(&self) -> u32;
    /// The files (relative to `snapshots/`) the step may rewrite or create: the restore point
    /// copies them before the step runs.
    fn rewrites(&self) -> Vec<PathBuf>;
    /// Runs the step, writing through `fs`.
    ///
    /// # Errors
    /// Any failure; the store must be left readable by the old version.
    fn run(&self, dir: &Path, fs: &dyn WriteFs) -> Result<(), MigrationError>;
    /// What, written since the step ran, a binary of the old version could not read (so
    /// putting the old files back would strand it); empty when undoing is safe.
    ///
    /// # Errors
    /// I/O errors.
    fn undo_blockers(&self, dir: &Path) -> Result<Vec<String>, MigrationError>;
}

/// A step on live data under the state dir (not the store's own files): session descriptors
/// and anything else that carries a schema version. Like a [`Step`] it is idempotent and
/// crash-safe, carries a frozen copy of what it needs of the old format, and rebuilds derived
/// data instead of migrating it. [`run_pending`] runs every live step whose [`LiveStep::pending`]
/// is not empty, after the store's steps, under the store lock and after a restore point.
pub trait LiveStep {
    /// A short name for reports (`session descriptors 1 -> 2`).
    fn name(&self) -> String;
    /// The files (relative to the state dir) the step would rewrite, create or delete now;
    /// empty when there is nothing to do. Reads only.
    ///
    /// # Errors
    /// I/O errors.
    fn pending(&self, state_dir: &Path) -> Result<Vec<PathBuf>, MigrationError>;
    /// Rewrites those files (each atomically), writing through `fs`.
    ///
    /// # Errors
    /// Any failure; every file is left at the old or the new version.
    fn run(&self, state_dir: &Path, fs: &dyn WriteFs) -> Result<(), MigrationError>;
}

/// The registered live-data steps, in order.
#[must_use]
pub fn live_steps() -> Vec<Box<dyn LiveStep>> {
    vec![Box::new(DescriptorStep)]
}

/// Session descriptors 1 → 2 ([`descriptor::upgrade`] on every live descriptor).
struct DescriptorStep;

impl LiveStep for DescriptorStep {
    fn name(&self) -> String {
        format!(
            "session descriptors {} -> {}",
            descriptor::LATEST - 1,
            descriptor::LATEST
        )
    }

    fn pending(&self, state_dir: &Path) -> Result<Vec<PathBuf>, MigrationError> {
        Ok(descriptor::migrate_live_descriptors(state_dir, true)?
            .upgraded
            .into_iter()
            .map(|c| PathBuf::from(c.path))
            .collect())
    }

    fn run(&self, state_dir: &Path, fs: &dyn WriteFs) -> Result<(), MigrationError> {
        descriptor::migrate_live_descriptors_with(state_dir, false, &mut |path, data, before| {
            descriptor::replace_file_with(fs, path, data, before)
        })
        .map(|_| ())
    }
}

/// One step [`plan`] found pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// What it does (`store format 1 -> 2`).
    pub name: String,
    /// The files (relative to the state dir) it may rewrite.
    pub files: Vec<PathBuf>,
}

/// The steps pending for the store under `state_dir` to reach store major `target`, store
/// steps first. Reads only.
///
/// # Errors
/// [`MigrationError::NoPath`] when a store step is missing; I/O errors; a damaged `FORMAT`.
pub fn plan(state_dir: &Path, target: u32) -> Result<Vec<Planned>, MigrationError> {
    let snap = state_dir.join("snapshots");
    let found = read_format(&snap)?;
    let steps = steps();
    let mut out = Vec::new();
    for v in found.major..target {
        let step = steps
            .iter()
            .find(|s| s.from() == v)
            .ok_or(MigrationError::NoPath {
                from: found.major,
                to: target,
            })?;
        out.push(Planned {
            name: format!("store format {v} -> {}", v + 1),
            files: step
                .rewrites()
                .into_iter()
                .map(|f| Path::new("snapshots").join(f))
                .collect(),
        });
    }
    for step in live_steps() {
        let files = step.pending(state_dir)?;
        if !files.is_empty() {
            out.push(Planned {
                name: step.name(),
                files,
            });
        }
    }
    Ok(out)
}

/// What [`run_pending`] did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The steps, in the order run.
    pub steps: Vec<Planned>,
    /// The restore point made (or reused), if any step ran.
    pub point: Option<restore_point::Point>,
}

/// Runs every pending step (store steps to major `target`, then the live steps) after making a
/// restore point of every file they rewrite; `dry_run` only plans. A migration cut off earlier
/// is finished with the restore point it made. Every write goes through `fs`. The caller holds
/// the store lock.
///
/// # Errors
/// As [`plan`], the steps and [`restore_point::make`]; whatever ran stays recorded in the
/// point, and running again finishes the migration.
pub fn run_pending(
    state_dir: &Path,
    target: u32,
    dry_run: bool,
    fs: &dyn WriteFs,
) -> Result<Report, MigrationError> {
    let planned = plan(state_dir, target)?;
    if dry_run {
        return Ok(Report {
            steps: planned,
            point: None,
        });
    }
    if planned.is_empty() {
        // Every step ran, but the point was not marked: a crash just before the end.
        let point = restore_point::unfinished(state_dir)?;
        if let Some(p) = &point {
            restore_point::finish(state_dir, p, fs)?;
        }
        return Ok(Report {
            steps: planned,
            point,
        });
    }
    let snap = state_dir.join("snapshots");
    let from = read_format(&snap)?.major;
    let label = if from < target {
        format!("store-{from}-to-{target}")
    } else {
        "live-data".to_owned()
    };
    let files: Vec<PathBuf> = planned.iter().flat_map(|p| p.files.clone()).collect();
    let point = restore_point::make(state_dir, &label, &files, fs)?;
    if from < target {
        migrate(&snap, from, target, fs)?;
    }
    for step in live_steps() {
        if !step.pending(state_dir)?.is_empty() {
            step.run(state_dir, fs)?;
        }
    }
    restore_point::finish(state_dir, &point, fs)?;
    Ok(Report {
        steps: planned,
        point: Some(point),
    })
}

/// Goes back to the newest restore point: refuses when something written since the migration
/// could not be read by the old version ([`undo_blockers`], named in the error: shelldone
/// converts them down first), else puts every saved file back
/// ([`restore_point::undo`], through `fs`). `dry_run` only checks. The caller holds the store
/// lock.
///
/// # Errors
/// [`MigrationError::NoRestorePoint`]; [`MigrationError::Unexpected`] naming what would be
/// stranded; I/O errors.
pub fn undo(
    state_dir: &Path,
    dry_run: bool,
    fs: &dyn WriteFs,
) -> Result<restore_point::Point, MigrationError> {
    if !dry_run {
        // An undo cut off after every file was put back, before its point was deleted.
        restore_point::clean_undone(state_dir, fs)?;
    }
    let point = restore_point::list(state_dir)?
        .pop()
        .ok_or(MigrationError::NoRestorePoint)?;
    let blockers = undo_blockers(state_dir, &point)?;
    if let (Some(old), false) = (point_format(state_dir, &point), blockers.is_empty()) {
        return Err(MigrationError::Unexpected {
            path: state_dir.join("snapshots").display().to_string(),
            why: format!(
                "written since the migration in a form store format {old} cannot read: {}; undoing would strand it",
                blockers.join(", ")
            ),
        });
    }
    if !dry_run {
        restore_point::undo(state_dir, &point, fs)?;
    }
    Ok(point)
}

/// The store format `point` saved (its copy of `FORMAT`), when it is a store point.
#[must_use]
pub fn point_format(state_dir: &Path, point: &restore_point::Point) -> Option<StoreVersion> {
    std::fs::read(
        state_dir
            .join(restore_point::DIR)
            .join(&point.name)
            .join("files/snapshots/FORMAT"),
    )
    .ok()
    .and_then(|b| StoreVersion::parse(&b).ok())
}

/// What, written since the migration `point` was made for, the store format it saved could not
/// read (`packed-refs`, `packs/<name> (version 2)`): what going back to `point` would strand
/// unless it is converted down first. Empty for a point of live data alone. Reads only.
///
/// # Errors
/// I/O errors; a damaged `FORMAT`.
pub fn undo_blockers(
    state_dir: &Path,
    point: &restore_point::Point,
) -> Result<Vec<String>, MigrationError> {
    let Some(old) = point_format(state_dir, point) else {
        return Ok(Vec::new());
    };
    let snap = state_dir.join("snapshots");
    let now = read_format(&snap)?;
    let mut blockers = Vec::new();
    for step in steps() {
        if step.from() >= old.major && step.from() < now.major {
            blockers.extend(step.undo_blockers(&snap)?);
        }
    }
    Ok(blockers)
}

/// The registered steps, in order.
#[must_use]
pub fn steps() -> Vec<Box<dyn Step>> {
    vec![Box::new(V1ToV2)]
}

/// Migrates a store from major version `from` to `to`, writing through `fs`.
///
/// # Errors
/// [`MigrationError::NoPath`] when a step is missing; any step's error.
pub fn migrate(dir: &Path, from: u32, to: u32, fs: &dyn WriteFs) -> Result<(), MigrationError> {
    let steps = steps();
    let mut v = from;
    while v < to {
        let step = steps
            .iter()
            .find(|s| s.from() == v)
            .ok_or(MigrationError::NoPath { from, to })?;
        step.run(dir, fs)?;
        v += 1;
    }
    Ok(())
}

/// Reads the version in `FORMAT` in `dir`.
///
/// # Errors
/// I/O errors, or a `FORMAT` that is not `shelldone-store <major>.<minor>`.
pub fn read_format(dir: &Path) -> Result<StoreVersion, MigrationError> {
    let path = dir.join("FORMAT");
    let bytes = std::fs::read(&path).map_err(|source| MigrationError::Io {
        path: path.display().to_string(),
        source,
    })?;
    StoreVersion::parse(&bytes).map_err(|e| MigrationError::Unexpected {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// Replaces `FORMAT` in `dir` atomically and durably through `fs`: temp file, fsync, rename,
/// fsync dir.
///
/// # Errors
/// I/O errors; `FORMAT` then still holds the old version.
pub fn write_format(
    dir: &Path,
    version: StoreVersion,
    fs: &dyn WriteFs,
) -> Result<(), MigrationError> {
    let path = dir.join("FORMAT");
    let io = |source| MigrationError::Io {
        path: path.display().to_string(),
        source,
    };
    // The prefix shelldone's recovery removes, should a crash leave the temp file behind; the
    // caller holds the store lock, so one left by another process is a crashed one's.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".shelldone-tmp.FORMAT.")
            {
                let _ = fs.remove_file(&e.path());
            }
        }
    }
    let tmp = dir.join(format!(".shelldone-tmp.FORMAT.{}", std::process::id()));
    let res = (|| {
        fs.write_file(&tmp, version.format_line().as_bytes(), None)?;
        fs.rename(&tmp, &path)?;
        fs.sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs.remove_file(&tmp);
    }
    res.map_err(io)
}

/// 1 → 2: version-2 packs may hold blocks and refs may be packed. Nothing already stored
/// changes, so the step only records the new version; from then on a version-1 binary refuses
/// the store (newer major) instead of missing every object in a block pack and every packed ref.
struct V1ToV2;

impl Step for V1ToV2 {
    fn from(&self) -> u32 {
        1
    }

    fn rewrites(&self) -> Vec<PathBuf> {
        vec![PathBuf::from("FORMAT")]
    }

    /// Version-2 packs (the last byte of the `SDPACK\0` magic) and `packed-refs`: version 1
    /// reads neither.
    fn undo_blockers(&self, dir: &Path) -> Result<Vec<String>, MigrationError> {
        let mut out = Vec::new();
        if dir.join("packed-refs").exists() {
            out.push("packed-refs".to_owned());
        }
        let packs = dir.join("packs");
        let entries = match std::fs::read_dir(&packs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(MigrationError::Io {
                    path: packs.display().to_string(),
                    source,
                });
            }
        };
        let mut found = Vec::new();
        for e in entries {
            let p = e
                .map_err(|source| MigrationError::Io {
                    path: packs.display().to_string(),
                    source,
                })?
                .path();
            if p.extension().is_none_or(|x| x != "pack") {
                continue;
            }
            let mut head = Vec::with_capacity(8);
            std::fs::File::open(&p)
                .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 8), &mut head))
                .map_err(|source| MigrationError::Io {
                    path: p.display().to_string(),
                    source,
                })?;
            if head.len() == 8 && &head[..7] == b"SDPACK\0" && head[7] != 1 {
                found.push(format!(
                    "packs/{} (version {})",
                    p.file_name().unwrap_or_default().to_string_lossy(),
                    head[7]
                ));
            }
        }
        found.sort();
        out.extend(found);
        Ok(out)
    }

    fn run(&self, dir: &Path, fs: &dyn WriteFs) -> Result<(), MigrationError> {
        match read_format(dir)? {
            StoreVersion { major: 1, .. } => write_format(dir, StoreVersion::new(2, 0), fs),
            StoreVersion { major: 2, .. } => Ok(()), // already done (a crash after the rename)
            found => Err(MigrationError::Unexpected {
                path: dir.join("FORMAT").display().to_string(),
                why: format!("expected version 1, found {found}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(version: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("FORMAT"), version).expect("write FORMAT");
        d
    }

    #[test]
    fn v1_to_v2_rewrites_format_and_is_idempotent() {
        let d = store("shelldone-store 1.0\n");
        migrate(d.path(), 1, 2, &StdFs).expect("migrates");
        assert_eq!(
            read_format(d.path()).expect("format"),
            StoreVersion::new(2, 0)
        );
        // Running the step again (a crash after the rename, then a restart) changes nothing.
        V1ToV2.run(d.path(), &StdFs).expect("idempotent");
        assert_eq!(
            std::fs::read_to_string(d.path().join("FORMAT")).expect("read"),
            "shelldone-store 2.0\n"
        );
        let left: Vec<_> = std::fs::read_dir(d.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("FORMAT")],
            "no temp file left"
        );
    }

    #[test]
    fn unexpected_versions_are_refused() {
        let d = store("shelldone-store 3.1\n");
        let err = V1ToV2
            .run(d.path(), &StdFs)
            .expect_err("3.1 is not for this step");
        assert!(err.to_string().contains("found 3.1"), "{err}");
        let d = store("garbage");
        assert!(read_format(d.path()).is_err());
        let d = store("shelldone-store 0.9\n");
        assert!(matches!(
            migrate(d.path(), 0, 2, &StdFs),
            Err(MigrationError::NoPath { from: 0, to: 2 })
        ));
        assert_eq!(
            std::fs::read_to_string(d.path().join("FORMAT")).expect("read"),
            "shelldone-store 0.9\n",
            "a failed migration leaves the store as it was"
        );
    }

    #[test]
    fn format_line_parses_back_and_damage_is_named() {
        let v = StoreVersion::new(2, 0);
        assert_eq!(v.format_line(), "shelldone-store 2.0\n");
        assert_eq!(StoreVersion::parse(v.format_line().as_bytes()), Ok(v));
        assert_eq!(
            StoreVersion::parse(b"  shelldone-store 10.3 \n"),
            Ok(StoreVersion::new(10, 3))
        );
        assert_eq!(
            StoreVersion::parse(b"shelldone-store \xff.0\n")
                .expect_err("bytes")
                .to_string(),
            "not UTF-8"
        );
        for bad in [
            "",
            "shelldone-rtore 2.0",
            "shelldone-store 2",
            "shelldone-store 2.x",
        ] {
            let err = StoreVersion::parse(bad.as_bytes())
                .expect_err(bad)
                .to_string();
            assert!(
                err.starts_with("not 'shelldone-store <major>.<minor>': "),
                "{err}"
            );
        }
    }

    #[test]
    fn newer_major_is_refused_newer_minor_read_only_older_major_migrated() {
        let v = StoreVersion::new(2, 1);
        assert_eq!(v.access(StoreVersion::new(3, 0)), Access::Refuse);
        assert_eq!(v.access(StoreVersion::new(2, 2)), Access::ReadOnly);
        assert_eq!(v.access(StoreVersion::new(2, 1)), Access::ReadWrite);
        assert_eq!(v.access(StoreVersion::new(2, 0)), Access::ReadWrite);
        assert_eq!(v.access(StoreVersion::new(1, 9)), Access::Migrate);
        assert!(StoreVersion::new(1, 9) < StoreVersion::new(2, 0));
        assert!(StoreVersion::new(2, 0) < StoreVersion::new(2, 1));
    }
}
