//! Opt-in telemetry: anonymous counters and timings under `<state>/metrics/`, which is outside
//! every snapshot root, so no snapshot, backup or sync ever carries it.
//!
//! Off by default: nothing is recorded until `telemetry enable` creates `metrics/enabled`.
//! A record ([`Record`]) holds an operation from a fixed list ([`OPS`]), the hour it ran in, its
//! duration, whether it failed and the kind of error, counts and sizes — never a path, a name, a
//! message, content or an id that identifies a person or device. It may name the id of the
//! journal event it belongs to ([`Record::event`], a random id: the cross-link to the journal,
//! never by content). [`disable`] deletes every file and the folder. `logs/` keeps the audit
//! trail of what shelldone did ([`audit`]); that is local history, not telemetry, and is kept
//! whether or not telemetry is on.

pub mod audit;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::durable;

/// The folder in the state dir.
pub const DIR: &str = "metrics";
/// The marker whose presence means enabled.
pub const ENABLED: &str = "enabled";
/// The records (JSON lines).
pub const RECORDS: &str = "records.jsonl";
/// The version of [`Record`].
pub const RECORD_VERSION: u32 = 1;
/// The records file is rotated (one previous file kept) past this size.
pub const ROTATE_BYTES: u64 = 1 << 20;

/// The operations telemetry may name; [`record`] refuses anything else, so that no free text
/// reaches `metrics/`.
pub const OPS: &[&str] = &[
    "state.save",
    "state.restore",
    "state.check",
    "state.gc",
    "state.recover",
    "state.diff",
    "log",
    "show",
    "sync.push",
    "sync.pull",
    "sync.status",
    "sync.daemon",
    "remote",
    "conflicts",
    "device",
    "secret",
    "key",
    "vault",
    "backup",
    "journal.append",
    "journal.tail",
    "journal.status",
    "telemetry",
    "other",
];

/// The error kinds a record may carry (those of [`crate::ErrorKind`], by name).
pub const ERROR_KINDS: &[&str] = &[
    "usage",
    "data",
    "contention",
    "remote",
    "newer_store",
    "io",
    "key",
    "internal",
];

/// One record (one JSON line in `metrics/records.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_VERSION`].
    pub v: u32,
    /// The hour it ran in (UTC, `2026-12-01T06`): no finer, so records are not a timeline of a
    /// person's minutes.
    pub hour: String,
    /// One of [`OPS`].
    pub op: String,
    /// Duration in milliseconds.
    pub ms: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// On failure, one of [`ERROR_KINDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// A size in bytes, where the operation has one (bytes a save wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// A count, where the operation has one (files a save changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The id of the journal event it belongs to (32 hex digits, random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

impl Record {
    /// A record of `op` that took `ms`, in the current hour.
    #[must_use]
    pub fn new(op: &str, ms: u64, ok: bool) -> Record {
        Record {
            v: RECORD_VERSION,
            hour: crate::journal::now_rfc3339()[..13].to_owned(),
            op: op.to_owned(),
            ms,
            ok,
            error_kind: None,
            bytes: None,
            count: None,
            event: None,
        }
    }
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR)
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::File {
        op: "writing",
        path: path.to_path_buf(),
        during: "telemetry",
        source: e,
    }
}

/// True when telemetry is enabled.
#[must_use]
pub fn enabled(state_dir: &Path) -> bool {
    dir(state_dir).join(ENABLED).is_file()
}

/// Enables telemetry; false when it already was.
///
/// # Errors
/// I/O errors.
pub fn enable(state_dir: &Path) -> Result<bool> {
    if enabled(state_dir) {
        return Ok(false);
    }
    let d = dir(state_dir);
    durable::create_dir_all_durable(&d).map_err(|e| io(&d, e))?;
    let p = d.join(ENABLED);
    durable::write_atomic(&p, format!("telemetry v{RECORD_VERSION}\n").as_bytes())
        .map_err(|e| io(&p, e))?;
    Ok(true)
}

/// Disables telemetry: deletes every file under `metrics/` and the folder. Returns how many
/// files were deleted.
///
/// # Errors
/// I/O errors; [`Error::Internal`] if anything is left.
pub fn disable(state_dir: &Path) -> Result<u64> {
    let d = dir(state_dir);
    if !d.exists() {
        return Ok(0);
    }
    let files = walkdir::WalkDir::new(&d)
        .into_iter()
        .filter_map(std::result::Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .count() as u64;
    fs::remove_dir_all(&d)?;
    durable::sync_dir(state_dir).map_err(|e| io(state_dir, e))?;
    if d.exists() {
        return Err(Error::Internal(format!(
            "{} still exists after it was deleted",
            d.display()
        )));
    }
    Ok(files)
}

/// What `telemetry status` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Whether telemetry is on.
    pub enabled: bool,
    /// The folder.
    pub dir: PathBuf,
    /// Records stored.
    pub records: u64,
    /// Bytes stored (every file).
    pub bytes: u64,
}

/// The state of telemetry.
///
/// # Errors
/// I/O errors.
pub fn status(state_dir: &Path) -> Result<Status> {
    let d = dir(state_dir);
    let mut st = Status {
        enabled: enabled(state_dir),
        dir: d.clone(),
        ..Status::default()
    };
    for (_, text) in show(state_dir)? {
        st.bytes += text.len() as u64;
    }
    st.records = records(state_dir)?.len() as u64;
    Ok(st)
}

/// Every file stored under `metrics/`, by name, with its exact content.
///
/// # Errors
/// I/O errors.
pub fn show(state_dir: &Path) -> Result<Vec<(String, String)>> {
    let d = dir(state_dir);
    let mut out = Vec::new();
    if !d.exists() {
        return Ok(out);
    }
    for e in walkdir::WalkDir::new(&d).sort_by_file_name() {
        let e = e.map_err(|e| Error::Io(e.into()))?;
        if e.file_type().is_dir() {
            continue;
        }
        let name = e
            .path()
            .strip_prefix(&d)
            .unwrap_or(e.path())
            .to_string_lossy()
            .into_owned();
        let bytes = fs::read(e.path())?;
        out.push((name, String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(out)
}

/// The records stored (the rotated file's first).
///
/// # Errors
/// I/O errors.
pub fn records(state_dir: &Path) -> Result<Vec<Record>> {
    let d = dir(state_dir);
    let mut out = Vec::new();
    for name in [format!("{RECORDS}.1"), RECORDS.to_owned()] {
        let text = match std::fs::read_to_string(d.join(&name)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&d.join(&name), e)),
        };
        out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    Ok(out)
}

/// Stores `rec` when telemetry is enabled (false: it is off, nothing was written).
///
/// # Errors
/// [`Error::Internal`] for an operation or error kind not in the fixed lists; I/O errors.
pub fn record(state_dir: &Path, rec: &Record) -> Result<bool> {
    if !enabled(state_dir) {
        return Ok(false);
    }
    if !OPS.contains(&rec.op.as_str())
        || rec
            .error_kind
            .as_deref()
            .is_some_and(|k| !ERROR_KINDS.contains(&k))
        || rec
            .event
            .as_deref()
            .is_some_and(|e| e.len() != 32 || !e.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(Error::Internal(format!(
            "telemetry record outside the fixed lists: {rec:?}"
        )));
    }
    let d = dir(state_dir);
    let p = d.join(RECORDS);
    if std::fs::metadata(&p).is_ok_and(|m| m.len() >= ROTATE_BYTES) {
        fs::rename(&p, d.join(format!("{RECORDS}.1")))?;
    }
    let mut line = serde_json::to_vec(rec).expect("a record serializes");
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&p)
        .map_err(|e| io(&p, e))?;
    f.write_all(&line).map_err(|e| io(&p, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_on_records_off_purges() {
        let t = tempfile::tempdir().expect("tempdir");
        let s = t.path();
        assert!(!record(s, &Record::new("state.save", 3, true)).expect("record"));
        assert!(!s.join(DIR).exists());
        assert!(enable(s).expect("enable"));
        let mut r = Record::new("journal.append", 1, true);
        r.event = Some("0123456789abcdef0123456789abcdef".into());
        assert!(record(s, &r).expect("record"));
        assert_eq!(records(s).expect("records"), vec![r]);
        let mut bad = Record::new("/home/me/secret", 1, true);
        assert!(record(s, &bad).is_err());
        bad.op = "state.save".into();
        bad.error_kind = Some("No such file: /home/me".into());
        assert!(record(s, &bad).is_err());
        assert_eq!(disable(s).expect("disable"), 2);
        assert!(!s.join(DIR).exists());
        assert!(!enabled(s));
    }
}
