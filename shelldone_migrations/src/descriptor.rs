//! Session descriptors: their schema versions, a frozen copy of version 1, and the step 1 → 2.
//!
//! A session descriptor is the JSON file the terminal restores a session from:
//! `state/sessions/<id>.json` or `state/sessions/<id>/<name>.json` (the state dir's
//! `sessions/…`). The terminal writes it; shelldone state stores, merges and restores it.
//!
//! | version | how it is marked | what it holds |
//! |---|---|---|
//! | 1 | `"schema": 1`, or neither `schema` nor `schema_version` | any JSON object; the terminal's fields are `id`, `version`, `tabs: [{title, cwd, panes: [{cmd, rows, cols}]}]`, `active_tab` ([`v1`]) |
//! | 2 | `"schema_version": 2` (and no `schema`) | version 1's fields, unchanged, plus on every pane a stable `id` (a string unique within the descriptor) and a `restore` block: `{"kind": "shell", "cwd": …}` or `{"kind": "command", "argv": [...], "cwd": …}` |
//!
//! Version 2 only adds: a reader of version 1 (which ignores fields it does not know) reads a
//! version-2 descriptor as the same tabs and panes. A descriptor whose `schema_version` (or,
//! without one, `schema`) is a number above [`LATEST`] is newer than this code: it is never
//! rewritten ([`DescriptorError::Newer`] names both versions).
//!
//! The step ([`upgrade`]) is a pure function of the descriptor's bytes and its session id (the
//! `<id>` of its path): two devices that upgrade the same version-1 bytes get the same bytes,
//! pane ids included ([`pane_id`]: a hash of session id, tab index and pane index). It keeps
//! every key it does not know, in its place, and the file's layout (one line or indented, final
//! line break, CRLF). Run on a complete version-2 descriptor it returns the input unchanged; on
//! a version-2 descriptor some of whose panes lack `id` or `restore` (what a version-1 merge of a
//! version-2 file can leave) it fills in just those.
//!
//! [`migrate_live_descriptors`] runs the step over a state dir's live descriptors, each
//! replaced atomically (temp file, fsync, rename, fsync of the folder).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::{MigrationError, StdFs, WriteFs};

/// Version 1: no `schema_version`; `"schema": 1` or no `schema`.
pub const V1: u64 = 1;
/// Version 2: `"schema_version": 2`, panes with `id` and `restore`.
pub const V2: u64 = 2;
/// The newest version this code reads and writes.
pub const LATEST: u64 = V2;

/// A descriptor this code cannot read or upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// Not JSON (or not UTF-8).
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object at the top.
    #[error("not a JSON object")]
    NotObject,
    /// A JSON object, but a key the reader knows holds the wrong type.
    #[error("not a session descriptor: {0}")]
    Shape(String),
    /// `schema_version` (or `schema`) is not a positive whole number.
    #[error("`{key}` is not a schema version (a whole number from 1): {found}")]
    BadVersion {
        /// The key holding it.
        key: &'static str,
        /// What it holds, as JSON.
        found: String,
    },
    /// Written by a newer terminal or shelldone: left as it is.
    #[error(
        "session descriptor schema version {found} is newer than this shelldone reads \
         (versions 1 to {supported}); it is left as it is: upgrade shelldone to read it"
    )]
    Newer {
        /// The version found.
        found: u64,
        /// The newest version this code reads.
        supported: u64,
    },
}

/// The schema version of a descriptor (any version, newer ones included).
///
/// # Errors
/// Not a JSON object, or a version key that is not a positive whole number.
pub fn version_of(bytes: &[u8]) -> Result<u64, DescriptorError> {
    let root = parse(bytes)?;
    let J::Obj(m) = &root else {
        return Err(DescriptorError::NotObject);
    };
    version_in(m)
}

/// The schema version of a descriptor this code reads ([`V1`] or [`V2`]).
///
/// # Errors
/// As [`version_of`], and [`DescriptorError::Newer`] for a version above [`LATEST`].
pub fn readable_version(bytes: &[u8]) -> Result<u64, DescriptorError> {
    let v = version_of(bytes)?;
    if v > LATEST {
        return Err(DescriptorError::Newer {
            found: v,
            supported: LATEST,
        });
    }
    Ok(v)
}

/// The session a descriptor belongs to, from its path under the state dir's sessions folder:
/// `sessions/<id>.json` → `<id>` (the name up to its first dot after the first character),
/// `sessions/<id>/<name>.json` → `<id>`. `path` may start with `state/` (a snapshot path) or
/// not (relative to the state dir). None for anything else (deeper files, other extensions).
#[must_use]
pub fn session_of_path(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("state/sessions/")
        .or_else(|| path.strip_prefix("sessions/"))?;
    if !rest.ends_with(".json") {
        return None;
    }
    match rest.split_once('/') {
        Some((dir, name)) if !dir.is_empty() && !name.is_empty() && !name.contains('/') => {
            Some(dir)
        }
        Some(_) => None,
        None => Some(session_of_name(rest)),
    }
}

/// `s001.json` → `s001`: the name up to its first dot after the first character (the rule of
/// shelldone's session units).
fn session_of_name(name: &str) -> &str {
    match name.char_indices().skip(1).find(|&(_, c)| c == '.') {
        Some((i, _)) => &name[..i],
        None => name,
    }
}

/// The id step 1 → 2 gives pane `pane` of tab `tab` (both from 0) in session `session`:
/// `p` and 16 hex digits of a BLAKE3 key derivation over the three. Pinned by a test: changing
/// it would make two devices that migrate at different times disagree.
#[must_use]
pub fn pane_id(session: &str, tab: usize, pane: usize) -> String {
    let mut h = blake3::Hasher::new_derive_key("shelldone session descriptor 2 pane id");
    h.update(&(session.len() as u64).to_le_bytes());
    h.update(session.as_bytes());
    h.update(&(tab as u64).to_le_bytes());
    h.update(&(pane as u64).to_le_bytes());
    let hex = h.finalize().to_hex();
    format!("p{}", &hex[..16])
}

/// Step 1 → 2 of one descriptor of session `session`: the version-2 bytes, or the input itself
/// ([`Cow::Borrowed`]) when it is already a complete version 2. Deterministic, idempotent, keeps
/// unknown keys (see the module docs).
///
/// # Errors
/// The input is not a JSON object, its version key is malformed, or it is newer than
/// [`LATEST`] (never rewritten).
pub fn upgrade<'a>(session: &str, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>, DescriptorError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DescriptorError::NotJson(e.to_string()))?;
    let mut root = parse(bytes)?;
    let J::Obj(m) = &mut root else {
        return Err(DescriptorError::NotObject);
    };
    let v = version_in(m)?;
    if v > LATEST {
        return Err(DescriptorError::Newer {
            found: v,
            supported: LATEST,
        });
    }
    let mut changed = false;
    if v == V1 {
        let two = J::Num(serde_json::Number::from(V2));
        match m.iter().position(|(k, _)| k == v1::SCHEMA) {
            Some(i) => m[i] = (SCHEMA_VERSION.to_owned(), two),
            None => m.insert(0, (SCHEMA_VERSION.to_owned(), two)),
        }
        changed = true;
    }
    changed |= complete_panes(session, m);
    if !changed {
        return Ok(Cow::Borrowed(bytes));
    }
    Ok(Cow::Owned(render(&root, text)))
}

/// The key that marks version 2 and later.
pub const SCHEMA_VERSION: &str = "schema_version";

/// Gives every pane (an object in `tabs[*].panes`) that lacks one an `id` and a `restore`
/// block. A pane keeps an `id` that is a non-empty string no pane before it has; any other
/// gets [`pane_id`] (with `-1`, `-2`… should that be taken). True when something changed.
fn complete_panes(session: &str, m: &mut [(String, J)]) -> bool {
    let Some(J::Arr(tabs)) = get_mut(m, v1::TABS) else {
        return false;
    };
    // Pass 1: the ids kept, first come first kept.
    let mut used: HashSet<String> = HashSet::new();
    let mut keep: Vec<bool> = Vec::new();
    for_each_pane(tabs, |_, _, _, pane| {
        let kept = match get(pane, "id") {
            Some(J::Str(s)) if !s.is_empty() => used.insert(s.clone()),
            _ => false,
        };
        keep.push(kept);
    });
    // Pass 2: fill in.
    let mut changed = false;
    let mut n = 0;
    for_each_pane(tabs, |ti, pi, tab_cwd, pane| {
        if !keep[n] {
            let base = pane_id(session, ti, pi);
            let mut id = base.clone();
            // Bounded: each try is a different string, and `used` holds fewer than n + 1 of
            // them, so one of the first n + 1 suffixes is free.
            for k in 1..=used.len() + 1 {
                if !used.contains(&id) {
                    break;
                }
                id = format!("{base}-{k}");
            }
            used.insert(id.clone());
            set(pane, "id", J::Str(id));
            changed = true;
        }
        n += 1;
        if get(pane, "restore").is_none() {
            let r = restore_of(pane, tab_cwd.as_deref());
            pane.push(("restore".to_owned(), r));
            changed = true;
        }
    });
    changed
}

/// Calls `f(tab index, pane index, tab's cwd, pane)` for every pane that is an object, in
/// order.
fn for_each_pane(
    tabs: &mut [J],
    mut f: impl FnMut(usize, usize, Option<String>, &mut Vec<(String, J)>),
) {
    for (ti, tab) in tabs.iter_mut().enumerate() {
        let J::Obj(tab) = tab else { continue };
        let cwd = match get(tab, v1::CWD) {
            Some(J::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let Some(J::Arr(panes)) = get_mut(tab, v1::PANES) else {
            continue;
        };
        for (pi, pane) in panes.iter_mut().enumerate() {
            if let J::Obj(pane) = pane {
                f(ti, pi, cwd.clone(), pane);
            }
        }
    }
}

/// Shells: a pane running one of these (with no arguments) is restored as a shell.
const SHELLS: &[&str] = &[
    "sh", "bash", "zsh", "fish", "dash", "ksh", "mksh", "tcsh", "csh", "nu", "elvish", "xonsh",
    "pwsh", "yash", "osh",
];

/// The `restore` block of a version-1 pane: from its `cmd` and its (or its tab's) `cwd`.
///
/// - no `cmd`, an empty one, or one that is not a string or a list of strings, or a bare shell
///   (`bash`, `/bin/zsh`, `-fish`): `{"kind": "shell"}`;
/// - a `cmd` of plain words (letters, digits, `_-./=:,@%+~`, separated by blanks): those
///   words as `argv`; any other string (quotes, `$`, `|`, …): `["sh", "-c", cmd]`, so the
///   shell reads it as it did; a list of strings: that list;
/// - `cwd` when known.
fn restore_of(pane: &[(String, J)], tab_cwd: Option<&str>) -> J {
    let argv: Option<Vec<String>> = match get(pane, v1::CMD) {
        Some(J::Str(s)) if !s.trim().is_empty() => {
            let plain = s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./=:,@%+~ \t".contains(c));
            Some(if plain {
                s.split_whitespace().map(str::to_owned).collect()
            } else {
                vec!["sh".to_owned(), "-c".to_owned(), s.clone()]
            })
        }
        Some(J::Arr(a)) if !a.is_empty() => a
            .iter()
            .map(|x| match x {
                J::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    let shell = match &argv {
        None => true,
        Some(a) => {
            a.len() == 1 && {
                let base = a[0].rsplit('/').next().unwrap_or(&a[0]);
                SHELLS.contains(&base.trim_start_matches('-'))
            }
        }
    };
    let cwd = match get(pane, v1::CWD) {
        Some(J::Str(s)) => Some(s.as_str()),
        _ => tab_cwd,
    };
    let mut out = Vec::new();
    match argv {
        Some(a) if !shell => {
            out.push(("kind".to_owned(), J::Str("command".to_owned())));
            out.push((
                "argv".to_owned(),
                J::Arr(a.into_iter().map(J::Str).collect()),
            ));
        }
        _ => out.push(("kind".to_owned(), J::Str("shell".to_owned()))),
    }
    if let Some(c) = cwd {
        out.push(("cwd".to_owned(), J::Str(c.to_owned())));
    }
    J::Obj(out)
}

fn version_in(m: &[(String, J)]) -> Result<u64, DescriptorError> {
    let whole = |key: &'static str, v: &J| match v {
        J::Num(n) => n.as_u64().filter(|&x| x >= 1).ok_or_else(|| bad(key, v)),
        _ => Err(bad(key, v)),
    };
    if let Some(v) = get(m, SCHEMA_VERSION) {
        return whole(SCHEMA_VERSION, v);
    }
    match get(m, v1::SCHEMA) {
        Some(v) => whole(v1::SCHEMA, v),
        None => Ok(V1),
    }
}

fn bad(key: &'static str, v: &J) -> DescriptorError {
    DescriptorError::BadVersion {
        key,
        found: serde_json::to_string(v).unwrap_or_default(),
    }
}

/// The frozen version-1 format: what a version-1 reader (the terminal, or shelldone before
/// version 2) understood of a descriptor. Never changed; never imports today's types.
pub mod v1 {
    use super::DescriptorError;

    /// The key that marks version 1 (optional).
    pub const SCHEMA: &str = "schema";
    /// The tabs.
    pub const TABS: &str = "tabs";
    /// A tab's panes.
    pub const PANES: &str = "panes";
    /// A tab's working directory.
    pub const CWD: &str = "cwd";
    /// A pane's command.
    pub const CMD: &str = "cmd";

    /// A version-1 descriptor; every field optional, unknown fields ignored (and not
    /// written back: a version-1 writer writes only these).
    #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
    #[serde(default)]
    pub struct Descriptor {
        /// `1` when present.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub schema: Option<u64>,
        /// The session id.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub id: Option<String>,
        /// The terminal's own counter of changes.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub version: Option<u64>,
        /// The tabs, in order.
        pub tabs: Vec<Tab>,
        /// The index of the active tab.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub active_tab: Option<u64>,
    }

    /// A tab.
    #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
    #[serde(default)]
    pub struct Tab {
        /// Its title.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub title: Option<String>,
        /// Its working directory.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub cwd: Option<String>,
        /// Its panes, in order.
        pub panes: Vec<Pane>,
    }

    /// A pane.
    #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
    #[serde(default)]
    pub struct Pane {
        /// The program it runs, as typed.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub cmd: Option<String>,
        /// Rows.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub rows: Option<u32>,
        /// Columns.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub cols: Option<u32>,
    }

    /// What a version-1 writer (the terminal before version 2) writes for `d`: its fields
    /// only, on one line.
    #[must_use]
    pub fn write(d: &Descriptor) -> Vec<u8> {
        serde_json::to_vec(d).expect("a struct of strings and numbers serializes")
    }

    /// Reads a descriptor as a version-1 reader did: the fields above, whatever else it holds
    /// (a version-2 descriptor reads as its version-1 part).
    ///
    /// # Errors
    /// Not JSON, or a field of the wrong type.
    pub fn read(bytes: &[u8]) -> Result<Descriptor, DescriptorError> {
        serde_json::from_slice(bytes).map_err(|e| super::json_error(&e))
    }
}

// ---- live descriptors -------------------------------------------------------------------

/// What [`migrate_live_descriptors`] did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DescriptorReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// Descriptors upgraded (or to upgrade), in path order.
    pub upgraded: Vec<DescriptorChange>,
    /// Descriptors already at [`LATEST`], left as they are.
    pub current: usize,
    /// Descriptors left as they are because they cannot be upgraded, in path order.
    pub skipped: Vec<DescriptorSkip>,
}

/// One descriptor upgraded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DescriptorChange {
    /// Its path under the state dir (`sessions/s001/session.json`).
    pub path: String,
    /// Its session.
    pub session: String,
    /// The version it had.
    pub from: u64,
    /// The version it has now.
    pub to: u64,
}

/// One descriptor left as it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DescriptorSkip {
    /// Its path under the state dir.
    pub path: String,
    /// Why.
    pub why: String,
}

/// Prefix of this module's temp files (shelldone's recovery and snapshot walk both know the
/// `.shelldone-tmp.` prefix).
const TMP: &str = ".shelldone-tmp.descriptor.";

/// Upgrades every live session descriptor under `state_dir` (`sessions/<id>.json`,
/// `sessions/<id>/<name>.json`) to [`LATEST`] with [`upgrade`]; `dry_run` reports what would
/// change and writes nothing.
///
/// Each file is replaced on its own, atomically and durably (a temp file beside it with the
/// same permissions, fsync, rename, fsync of the folder), so a crash at any point leaves each
/// descriptor whole, at version 1 or 2, and running again finishes the job (it first removes
/// the temp files a killed run left). A descriptor that is not a JSON object, has a malformed
/// version or a newer one, is a symlink, or changed while it was being upgraded (the terminal
/// wrote it meanwhile: its write wins) is left as it is and listed in `skipped`. The caller
/// holds the store lock; the terminal may still write descriptors meanwhile.
///
/// # Errors
/// I/O errors reading the folders or writing a descriptor; the descriptors upgraded before it
/// stay upgraded, the others as they were.
pub fn migrate_live_descriptors(
    state_dir: &Path,
    dry_run: bool,
) -> Result<DescriptorReport, MigrationError> {
    migrate_live_descriptors_with(state_dir, dry_run, &mut replace_file)
}

/// How [`migrate_live_descriptors_with`] replaces one descriptor: `(path, new bytes, metadata
/// of the file when it was read)`; false when the file changed since then (nothing replaced).
pub type Replace<'a> = &'a mut dyn FnMut(&Path, &[u8], &std::fs::Metadata) -> std::io::Result<bool>;

/// [`migrate_live_descriptors`] with each file replaced by `replace` (shelldone passes its own
/// durable layer, which its power-loss simulator observes; [`replace_file`] is the default). A
/// `replace` must be atomic and durable, write its temp file at [`temp_path`] (a later run
/// removes it) and keep the file's permissions.
///
/// # Errors
/// As [`migrate_live_descriptors`].
pub fn migrate_live_descriptors_with(
    state_dir: &Path,
    dry_run: bool,
    replace: Replace<'_>,
) -> Result<DescriptorReport, MigrationError> {
    let mut report = DescriptorReport {
        dry_run,
        ..DescriptorReport::default()
    };
    for (rel, session) in live_descriptors(state_dir, !dry_run)? {
        let path = state_dir.join(&rel);
        let shown = rel.to_string_lossy().into_owned();
        let io = |source| MigrationError::Io {
            path: path.display().to_string(),
            source,
        };
        let before = std::fs::symlink_metadata(&path).map_err(io)?;
        if !before.is_file() {
            report.skipped.push(DescriptorSkip {
                path: shown,
                why: "not a regular file".to_owned(),
            });
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io)?;
        let from = match readable_version(&bytes) {
            Ok(v) => v,
            Err(e) => {
                report.skipped.push(DescriptorSkip {
                    path: shown,
                    why: e.to_string(),
                });
                continue;
            }
        };
        let new = match upgrade(&session, &bytes) {
            Ok(Cow::Borrowed(_)) => {
                report.current += 1;
                continue;
            }
            Ok(Cow::Owned(new)) => new,
            Err(e) => {
                report.skipped.push(DescriptorSkip {
                    path: shown,
                    why: e.to_string(),
                });
                continue;
            }
        };
        if !dry_run && !replace(&path, &new, &before).map_err(io)? {
            report.skipped.push(DescriptorSkip {
                path: shown,
                why: "changed while it was being upgraded; left as the terminal wrote it (run \
                      the migration again)"
                    .to_owned(),
            });
            continue;
        }
        report.upgraded.push(DescriptorChange {
            path: shown,
            session,
            from,
            to: LATEST,
        });
    }
    Ok(report)
}

/// The live descriptors under `state_dir`: (path relative to it, session), sorted by path.
/// `clean` removes the temp files a killed run of [`migrate_live_descriptors`] left.
fn live_descriptors(
    state_dir: &Path,
    clean: bool,
) -> Result<Vec<(PathBuf, String)>, MigrationError> {
    let sessions = state_dir.join("sessions");
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source: std::io::Error| MigrationError::Io { path: p, source }
    };
    let list = |dir: &Path| -> Result<Vec<(String, std::fs::FileType)>, MigrationError> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let t = e.file_type().map_err(io(&e.path()))?;
            // A name that is not UTF-8 is not a session shelldone names (snapshot paths are
            // compared as text by the merge); it is left alone.
            if let Ok(name) = e.file_name().into_string() {
                v.push((name, t));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    };
    let mut out = Vec::new();
    if !sessions.is_dir() {
        return Ok(out);
    }
    let tidy = |dir: &Path, name: &str| -> Result<bool, MigrationError> {
        if !name.starts_with(TMP) {
            return Ok(false);
        }
        if clean {
            let p = dir.join(name);
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        Ok(true)
    };
    for (name, t) in list(&sessions)? {
        if tidy(&sessions, &name)? {
            continue;
        }
        if t.is_dir() {
            let dir = sessions.join(&name);
            for (inner, it) in list(&dir)? {
                if tidy(&dir, &inner)? || it.is_dir() || !inner.ends_with(".json") {
                    continue;
                }
                out.push((Path::new("sessions").join(&name).join(&inner), name.clone()));
            }
        } else if name.ends_with(".json") {
            let session = session_of_name(&name).to_owned();
            out.push((Path::new("sessions").join(&name), session));
        }
    }
    out.sort();
    Ok(out)
}

/// The temp file a replace of descriptor `path` writes first: beside it, named
/// `.shelldone-tmp.descriptor.<name>.<pid>`.
#[must_use]
pub fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!("{TMP}{name}.{}", std::process::id()))
}

/// True when `path` is still the file `before` described (same size and modification time):
/// nobody wrote it since it was read.
///
/// # Errors
/// I/O errors reading its metadata.
pub fn unchanged(path: &Path, before: &std::fs::Metadata) -> std::io::Result<bool> {
    let now = std::fs::symlink_metadata(path)?;
    Ok(now.len() == before.len() && now.modified()? == before.modified()?)
}

/// Replaces `path` by `data` (a temp file at [`temp_path`] with `before`'s permissions, fsync,
/// rename, fsync of the folder) unless the file changed since `before` was taken: then nothing
/// is replaced (false).
///
/// # Errors
/// I/O errors; the temp file is then removed and `path` is as it was.
pub fn replace_file(path: &Path, data: &[u8], before: &std::fs::Metadata) -> std::io::Result<bool> {
    replace_file_with(&StdFs, path, data, before)
}

/// [`replace_file`], writing through `fs`.
///
/// # Errors
/// As [`replace_file`].
pub fn replace_file_with(
    fs: &dyn WriteFs,
    path: &Path,
    data: &[u8],
    before: &std::fs::Metadata,
) -> std::io::Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let res: std::io::Result<bool> = (|| {
        fs.write_file(&tmp, data, Some(before.permissions()))?;
        if !unchanged(path, before)? {
            fs.remove_file(&tmp)?;
            return Ok(false);
        }
        fs.rename(&tmp, path)?;
        fs.sync_dir(dir)?;
        Ok(true)
    })();
    if res.is_err() {
        let _ = fs.remove_file(&tmp);
    }
    res
}

// ---- an order-keeping JSON tree ------------------------------------------------------------

/// A JSON value whose objects keep their keys' order (`serde_json`'s own `Map` sorts them
/// unless a crate-wide feature is on, which would change every other JSON the workspace
/// writes). A key repeated in one object keeps its first place and its last value.
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

/// A `serde_json` error as a [`DescriptorError`]: a wrong type is [`DescriptorError::Shape`].
#[must_use]
pub fn json_error(e: &serde_json::Error) -> DescriptorError {
    match e.classify() {
        serde_json::error::Category::Data => DescriptorError::Shape(e.to_string()),
        _ => DescriptorError::NotJson(e.to_string()),
    }
}

fn parse(bytes: &[u8]) -> Result<J, DescriptorError> {
    serde_json::from_slice(bytes).map_err(|e| DescriptorError::NotJson(e.to_string()))
}

fn get<'a>(m: &'a [(String, J)], key: &str) -> Option<&'a J> {
    m.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn get_mut<'a>(m: &'a mut [(String, J)], key: &str) -> Option<&'a mut J> {
    m.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn set(m: &mut Vec<(String, J)>, key: &str, v: J) {
    match get_mut(m, key) {
        Some(x) => *x = v,
        None => m.push((key.to_owned(), v)),
    }
}

/// Written in `input`'s layout: indented (with the leading white space of its first indented
/// line) if it spans lines, else on one line; a final line break and CRLF if it had them.
fn render(v: &J, input: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let written = if input.trim().contains('\n') {
        let indent = input
            .split('\n')
            .skip(1)
            .map(|l| &l[..l.len() - l.trim_start_matches([' ', '\t']).len()])
            .find(|i| !i.is_empty())
            .unwrap_or("  ");
        let f = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
        v.serialize(&mut serde_json::Serializer::with_formatter(&mut out, f))
    } else {
        v.serialize(&mut serde_json::Serializer::new(&mut out))
    };
    written.expect("writing JSON to a Vec cannot fail");
    if input.ends_with('\n') {
        out.push(b'\n');
    }
    if input.contains("\r\n") {
        // serde_json writes `\n`; a raw line break cannot occur inside a JSON string.
        let s = String::from_utf8(out).expect("serde_json writes UTF-8");
        return s.replace('\n', "\r\n").into_bytes();
    }
    out
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<J, E> {
        Ok(J::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<J, E> {
        Ok(J::Num(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<J, E> {
        Ok(J::Num(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<J, E> {
        serde_json::Number::from_f64(v)
            .map(J::Num)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }
    fn visit_str<E>(self, v: &str) -> Result<J, E> {
        Ok(J::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<J, E> {
        Ok(J::Str(v))
    }
    fn visit_unit<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
        let mut v = Vec::new();
        while let Some(e) = seq.next_element()? {
            v.push(e);
        }
        Ok(J::Arr(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
        let mut m: Vec<(String, J)> = Vec::new();
        let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        while let Some(k) = map.next_key::<String>()? {
            let v: J = map.next_value()?;
            match at.get(&k) {
                Some(&i) => m[i].1 = v,
                None => {
                    at.insert(k.clone(), m.len());
                    m.push((k, v));
                }
            }
        }
        Ok(J::Obj(m))
    }
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Num(n) => n.serialize(s),
            J::Str(x) => s.serialize_str(x),
            J::Arr(a) => s.collect_seq(a),
            J::Obj(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests;
