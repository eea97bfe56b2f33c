//! Damaged store files: what `state check` reports about the store's own files (everything but
//! the content of objects, which [`crate::check`] verifies) and what `state recover` does about
//! each. The table of every file, its damage and its repair is in docs/safety.md, "Damaged
//! store files"; this module is that table in code.
//!
//! Two rules run through it. Nothing is deleted: a damaged file (or line) is moved to
//! `quarantine/<ns>/snapshots/…` in the state dir before anything replaces it. And a ref is
//! only ever set to a snapshot its reflog already named, so a repair never invents history.

mod damage;
mod files;
mod refs;
mod view;

pub use damage::file_damage;
pub(crate) use damage::file_damage_in;
pub(crate) use files::{repair_format, repair_packs};
pub(crate) use refs::reflog_salvage_ids;
pub(crate) use view::{Health, Judge, RefView};

use files::{repair_device, repair_loose_objects, repair_small_files};
use refs::{repair_reflog, repair_refs};

use std::path::{Path, PathBuf};

use fs_err as fs;
use serde::Serialize;

use crate::context::Context;
use crate::error::Result;
use crate::store::durable;

/// A damaged store file found by [`file_damage`].
#[derive(Debug, Clone, Serialize)]
pub struct FileDamage {
    /// What the file is: `ref`, `packed-refs`, `reflog`, `FORMAT`, `device`, `stat cache`,
    /// `restore intent`, `shallow list`, `remotes`, `pack`.
    pub kind: &'static str,
    /// The file.
    pub file: PathBuf,
    /// The line, for files of lines (1-based).
    pub line: Option<usize>,
    /// What is wrong.
    pub why: String,
}

impl FileDamage {
    /// `path` or `path:line`.
    #[must_use]
    pub fn place(&self) -> String {
        match self.line {
            Some(n) => format!("{}:{n}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

/// One repair made by `state recover`.
#[derive(Debug, Clone, Serialize)]
pub struct Repair {
    /// The file repaired.
    pub file: String,
    /// What was wrong.
    pub damage: String,
    /// What was done.
    pub action: String,
}

/// Where `state recover` moves what it replaces: `quarantine/<ns>/snapshots/<path>` in the
/// state dir, next to the quarantined session descriptors.
pub(crate) struct Quarantine {
    root: PathBuf,
    snap_dir: PathBuf,
}

impl Quarantine {
    pub(crate) fn new(st: &Context) -> Self {
        Quarantine {
            root: st
                .paths
                .state_dir
                .join("quarantine")
                .join(crate::store::now_ns().to_string())
                .join("snapshots"),
            snap_dir: st.snap_dir.clone(),
        }
    }

    fn dest(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.snap_dir) {
            Ok(rel) => self.root.join(rel),
            Err(_) => self
                .root
                .join(path.file_name().unwrap_or(std::ffi::OsStr::new("file"))),
        }
    }

    /// Moves a store file into quarantine.
    pub(crate) fn take(&self, path: &Path) -> Result<PathBuf> {
        let dest = self.dest(path);
        fs::create_dir_all(dest.parent().expect("under the quarantine dir"))?;
        fs::rename(path, &dest)?;
        if let Some(dir) = path.parent() {
            durable::sync_dir(dir)?;
        }
        Ok(dest)
    }

    /// Writes `bytes` into quarantine under the place of `path` (a copy of a file about to be
    /// replaced, or the damaged lines of one).
    pub(crate) fn write(&self, path: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let dest = self.dest(path);
        fs::create_dir_all(dest.parent().expect("under the quarantine dir"))?;
        durable::write_atomic(&dest, bytes)?;
        Ok(dest)
    }
}

/// Everything `state recover` repairs in the store's own files, in order: packs and
/// indexes, loose objects, the reflog, refs, `device`, then small files.
pub(crate) fn repair_store(cx: &Context, q: &Quarantine, out: &mut Vec<Repair>) -> Result<()> {
    repair_packs(cx, Some(q), out)?;
    repair_loose_objects(cx, q, out)?;
    repair_reflog(cx, q, out)?;
    repair_refs(cx, q, out)?;
    repair_device(cx, out)?;
    repair_small_files(cx, q, out)?;
    Ok(())
}
