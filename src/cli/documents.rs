//! The `--json` documents, one type each (docs/cli.md shows every one; `tests/cli/outputs.rs`
//! snapshots them and checks their keys against the docs). Where a library report is already the
//! document (`CheckReport`, `GcReport`, `RecoveryReport`, `PullReport`, the `Vec`s of `Change`,
//! `RemoteConfig`, `DeviceStatus` and `Conflict`, `Resolved`), it is printed as it is; the types
//! here are the documents the CLI assembles itself.
//!
//! Field names are the document's keys. The order of the fields does not matter: [`print`]
//! writes keys in alphabetical order, as the documents were written before they had types.

use serde::Serialize;

use super::{out, output};
use crate::history::{Change, LogEntry};
use crate::live::Quarantined;
use crate::sync::Conflict;
use crate::sync::resolve::ConflictFile;
use crate::{Error, ObjectId, RestoreOutcome, Result, SaveOutcome};

/// Prints one document on one line of stdout.
///
/// Through [`serde_json::Value`], whose objects keep their keys sorted (serde_json without its
/// `preserve_order` feature; should a dependency turn it on, the output snapshots would show
/// it): the bytes do not depend on the order of a type's fields, a library report's included.
///
/// # Errors
/// [`Error::Internal`] when the document cannot be serialized (a path that is not UTF-8: the documents should carry lossy strings).
pub(super) fn print(doc: &impl Serialize) -> Result<()> {
    out(to_line(doc)?);
    Ok(())
}

/// One document as one line, keys sorted (see [`print`]).
pub(super) fn to_line(doc: &impl Serialize) -> Result<String> {
    serde_json::to_value(doc)
        .map(|v| v.to_string())
        .map_err(|e| Error::Internal(e.to_string()))
}

fn hex(id: &ObjectId) -> String {
    id.to_hex()
}

fn hexes(ids: &[ObjectId]) -> Vec<String> {
    ids.iter().map(ObjectId::to_hex).collect()
}

/// An error, on stderr (`{"error", "exit_code"}`).
#[derive(Debug, Serialize)]
pub(super) struct ErrorDoc {
    pub error: String,
    pub exit_code: u8,
}

/// An entry the snapshot policy left out (`not saved`) or a restore skipped (`not restored`),
/// one per line on stderr.
#[derive(Debug, Serialize)]
pub(super) struct Warning<'a> {
    pub warning: &'a str,
    pub path: &'a str,
    pub why: &'a str,
}

/// Files added, modified and deleted (a snapshot's stored summary).
#[derive(Debug, Serialize)]
pub(super) struct Changes {
    pub added: u32,
    pub modified: u32,
    pub deleted: u32,
}

/// `state save`.
#[derive(Debug, Serialize)]
pub(super) struct Saved<'a> {
    pub id: Option<String>,
    pub created: bool,
    pub changes: Changes,
    pub sessions: &'a [String],
    pub objects_written: u64,
    pub bytes_written: u64,
    pub quarantined: &'a [Quarantined],
    pub warnings: &'a [String],
}

impl<'a> From<&'a SaveOutcome> for Saved<'a> {
    fn from(o: &'a SaveOutcome) -> Self {
        Saved {
            id: o.id.as_ref().map(hex),
            created: o.created,
            changes: Changes {
                added: o.summary.added,
                modified: o.summary.modified,
                deleted: o.summary.deleted,
            },
            sessions: &o.sessions,
            objects_written: o.objects_written,
            bytes_written: o.bytes_written,
            quarantined: &o.quarantined,
            warnings: &o.warnings,
        }
    }
}

/// `tour`: each step's line, where the demo state was, whether it was kept (`--dir`).
#[derive(Debug, Serialize)]
pub(super) struct Toured<'a> {
    pub dir: &'a str,
    pub kept: bool,
    pub ok: bool,
    pub steps: &'a [String],
}

/// `state save --dry-run`.
#[derive(Debug, Serialize)]
pub(super) struct SavePlanned<'a> {
    pub dry_run: bool,
    pub changes: &'a [Change],
    pub excluded: &'a [String],
    pub exclude_patterns: &'a [String],
    pub not_saved: Vec<PathWhy<'a>>,
}

/// A path and why it was left out.
#[derive(Debug, Serialize)]
pub(super) struct PathWhy<'a> {
    pub path: &'a str,
    pub why: &'a str,
}

impl<'a> From<&'a crate::live::save::SavePlan> for SavePlanned<'a> {
    fn from(p: &'a crate::live::save::SavePlan) -> Self {
        SavePlanned {
            dry_run: true,
            changes: &p.changes,
            excluded: &p.excluded,
            exclude_patterns: &p.patterns,
            not_saved: p
                .skipped
                .iter()
                .map(|(path, why)| PathWhy { path, why })
                .collect(),
        }
    }
}

/// `state restore`: the plan (snapshot paths) and what became of `head`.
#[derive(Debug, Serialize)]
pub(super) struct Restored {
    pub snapshot: String,
    pub dry_run: bool,
    pub create: Vec<String>,
    pub update: Vec<String>,
    pub delete: Vec<String>,
    pub mkdir: Vec<String>,
    pub rmdir: Vec<String>,
    pub auto_saved: Option<String>,
    pub new_head: Option<String>,
}

/// Snapshot paths as text (lossy: a path that is not UTF-8 is shown, not refused).
pub(super) fn paths(v: &[Vec<u8>]) -> Vec<String> {
    v.iter()
        .map(|x| String::from_utf8_lossy(x).into_owned())
        .collect()
}

impl Restored {
    pub(super) fn new(o: &RestoreOutcome, dry_run: bool) -> Self {
        let p = &o.plan;
        Restored {
            snapshot: o.snapshot.to_hex(),
            dry_run,
            create: paths(&p.create),
            update: paths(&p.update),
            delete: paths(&p.delete),
            mkdir: paths(&p.mkdir),
            rmdir: paths(&p.rmdir),
            auto_saved: o.auto_saved.as_ref().map(hex),
            new_head: o.new_head.as_ref().map(hex),
        }
    }
}

/// One entry of `log`.
#[derive(Debug, Serialize)]
pub(super) struct Logged<'a> {
    pub id: String,
    pub time_ns: i64,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub time: String,
    pub device: &'a str,
    pub message: &'a str,
    pub session: Option<&'a str>,
    pub parents: Vec<String>,
    pub changes: Changes,
    pub refs: &'a [String],
}

impl<'a> From<&'a LogEntry> for Logged<'a> {
    fn from(e: &'a LogEntry) -> Self {
        Logged {
            id: e.id.to_hex(),
            time_ns: e.time_ns,
            time: output::time(e.time_ns),
            device: &e.device,
            message: &e.message,
            session: e.session.as_deref(),
            parents: hexes(&e.parents),
            changes: Changes {
                added: e.added,
                modified: e.modified,
                deleted: e.deleted,
            },
            refs: &e.refs,
        }
    }
}

/// `show`: a snapshot and what it changed relative to its first parent.
#[derive(Debug, Serialize)]
pub(super) struct Shown<'a> {
    pub id: String,
    pub root: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub time: String,
    pub device: &'a str,
    pub message: &'a str,
    pub session: Option<&'a str>,
    pub parents: Vec<String>,
    pub changes: &'a [Change],
}

impl<'a> Shown<'a> {
    pub(super) fn new(
        id: &ObjectId,
        s: &'a objects_format::Snapshot,
        changes: &'a [Change],
    ) -> Self {
        Shown {
            id: id.to_hex(),
            root: s.root.to_hex(),
            time: output::time(s.time_ns),
            device: &s.device,
            message: &s.message,
            session: s.session.as_deref(),
            parents: hexes(&s.parents),
            changes,
        }
    }
}

/// `device show`.
#[derive(Debug, Serialize)]
pub(super) struct Device<'a> {
    pub device: &'a str,
}

/// `device rename`.
#[derive(Debug, Serialize)]
pub(super) struct Renamed<'a> {
    pub old: &'a str,
    pub new: &'a str,
}

/// `remote remove`.
#[derive(Debug, Serialize)]
pub(super) struct RemoteRemoved<'a> {
    pub removed: &'a str,
}

/// `sync push`.
#[derive(Debug, Serialize)]
pub(super) struct Pushed<'a> {
    pub remote: &'a str,
    pub objects_sent: u64,
    pub bytes_sent: u64,
    pub refs_updated: &'a [String],
}

/// `sync push --dry-run`: what a push would send and which refs it would move.
#[derive(Debug, Serialize)]
pub(super) struct PushDryRun<'a> {
    pub remote: &'a str,
    pub dry_run: bool,
    pub objects: u64,
    pub bytes: u64,
    pub refs: &'a [crate::sync::RefMove],
}

/// `conflicts show`: the conflict and both versions of each file that differs.
#[derive(Debug, Serialize)]
pub(super) struct ConflictShown<'a> {
    pub conflict: &'a Conflict,
    pub files: Vec<ConflictFileText<'a>>,
}

/// Both versions of one file of a conflict, as text (lossy), null where absent.
#[derive(Debug, Serialize)]
pub(super) struct ConflictFileText<'a> {
    pub path: &'a str,
    pub kept: Option<String>,
    pub other: Option<String>,
    pub kept_size: Option<u64>,
    pub other_size: Option<u64>,
}

impl<'a> ConflictShown<'a> {
    pub(super) fn new(conflict: &'a Conflict, files: &'a [ConflictFile]) -> Self {
        let text =
            |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        ConflictShown {
            conflict,
            files: files
                .iter()
                .map(|f| ConflictFileText {
                    path: &f.path,
                    kept: text(&f.kept),
                    other: text(&f.other),
                    kept_size: f.sizes.0,
                    other_size: f.sizes.1,
                })
                .collect(),
        }
    }
}

/// One line of `sync daemon --json`: an event and when it happened.
#[derive(Debug, Serialize)]
pub(super) struct DaemonLine<'a> {
    /// RFC 3339, UTC, to the second (`2026-11-30T21:40:02Z`).
    pub time: String,
    #[serde(flatten)]
    pub event: DaemonEvent<'a>,
}

/// What happened, in a line of `sync daemon --json`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub(super) enum DaemonEvent<'a> {
    /// Started (or fell back to polling): the remote it pushes to and pulls from, if any;
    /// `method` `inotify` or `poll`, and why it polls.
    Watching {
        remote: Option<&'a str>,
        method: &'a str,
        fallback: Option<&'a str>,
    },
    /// A snapshot was saved.
    Saved { id: String },
    /// A push went through.
    Pushed { remote: &'a str, objects: u64 },
    /// A pull brought something and integrated it.
    Pulled {
        remote: &'a str,
        objects: u64,
        adopted: Option<&'a str>,
        fast_forwarded: &'a [String],
        merged: &'a [String],
        sessions_updated: &'a [String],
        files_changed: usize,
        conflicts: usize,
        open_conflicts: usize,
    },
    /// A save failed (e.g. it would record an emptied root): tried again at the next change.
    SaveFailed { error: String },
    /// A push failed; `retryable` says whether it will be tried again.
    PushFailed {
        remote: &'a str,
        error: String,
        retryable: bool,
    },
    /// A pull failed; `retryable` says whether it will be tried again.
    PullFailed {
        remote: &'a str,
        error: String,
        retryable: bool,
    },
    /// A backup bundle was written (`[backup] every_hours`).
    BackedUp { id: &'a str },
    /// A due backup failed: tried again at the next check.
    BackupFailed { error: String },
    /// The daemon stopped: why (`sigterm`, `sigint`, `max-runtime`) and its exit code.
    /// With how often it woke up, walked the whole live state, and saved only what changed.
    Stopped {
        reason: &'a str,
        exit_code: u8,
        wakeups: u64,
        full_scans: u64,
        incremental_saves: u64,
    },
}
