//! Refs: small files holding a snapshot id, updated by compare-and-swap under the store lock,
//! each update appended to a reflog.
//!
//! Names are `/`-separated, each component `[A-Za-z0-9._-]+` and not starting with `.`:
//! `head`, `sessions/<id>`, `remotes/<remote>/<device>/head`, `remotes/<remote>/<device>/sessions/<id>`,
//! `conflicts/<device>/sessions/<id>`.

use std::path::{Path, PathBuf};

use fs_err as fs;
use objects_format::ObjectId;

use super::durable;
use crate::error::{Error, Result};

/// The whole-state head.
pub const HEAD: &str = "head";

/// Ref storage under `snapshots/refs` and `snapshots/logs`.
#[derive(Debug, Clone)]
pub struct Refs {
    refs: PathBuf,
    logs: PathBuf,
}

/// One update of [`Refs::update_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefTxn {
    /// Ref name.
    pub name: String,
    /// `Some(v)`: the ref must currently be `v` (None inside: absent). `None`: no check.
    pub expected: Option<Option<ObjectId>>,
    /// New value (None: delete).
    pub new: Option<ObjectId>,
}

/// One reflog line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflogEntry {
    /// Previous value (None when the ref was created).
    pub old: Option<ObjectId>,
    /// New value (None when the ref was deleted).
    pub new: Option<ObjectId>,
    /// When, ns since epoch.
    pub time_ns: i64,
    /// Why.
    pub message: String,
}

/// Validates a ref name.
///
/// # Errors
/// [`Error::BadRefName`].
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 1024
        && name.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && !c.ends_with(".lock")
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'%'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::BadRefName(name.to_owned()))
    }
}

fn fmt_opt(id: Option<&ObjectId>) -> String {
    id.map_or_else(|| "0".repeat(64), ObjectId::to_hex)
}

impl Refs {
    /// Refs under `root` (`snapshots/`).
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Refs {
            refs: root.join("refs"),
            logs: root.join("logs"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.refs.join(name)
    }

    /// Reads a ref.
    ///
    /// # Errors
    /// Bad name, unreadable or corrupt ref file.
    pub fn get(&self, name: &str) -> Result<Option<ObjectId>> {
        check_name(name)?;
        match std::fs::read_to_string(self.path(name)) {
            Ok(s) => ObjectId::from_hex(s.trim()).map(Some).map_err(|_| {
                Error::Invalid(format!(
                    "ref file {} is corrupt: {:?}",
                    self.path(name).display(),
                    s
                ))
            }),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.kind() == std::io::ErrorKind::IsADirectory =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Compare-and-swap: sets `name` to `new` (or deletes it when `None`) if it currently
    /// equals `expected`. The caller holds the store lock.
    ///
    /// # Errors
    /// [`Error::RefConflict`] when the current value differs; I/O errors.
    pub fn cas(
        &self,
        name: &str,
        expected: Option<ObjectId>,
        new: Option<ObjectId>,
        message: &str,
    ) -> Result<()> {
        check_name(name)?;
        let cur = self.get(name)?;
        if cur != expected {
            return Err(Error::RefConflict {
                name: name.to_owned(),
                expected: fmt_opt(expected.as_ref()),
                found: fmt_opt(cur.as_ref()),
            });
        }
        if cur == new {
            return Ok(());
        }
        let path = self.path(name);
        match new {
            Some(id) => {
                let dir = path.parent().expect("ref has a parent");
                fs::create_dir_all(dir)?;
                durable::write_atomic(&path, format!("{id}\n").as_bytes())?;
            }
            None => {
                fs::remove_file(&path)?;
                durable::sync_dir(path.parent().expect("ref has a parent"))?;
            }
        }
        self.append_log(&[(name, cur, new)], message, true)?;
        Ok(())
    }

    /// Updates many refs as one batch (caller holds the lock): every compare-and-swap is checked
    /// first (nothing changes if one fails), then all new ref files are written and made durable
    /// together, renamed in the given order (put the head last: it is the commit point), their
    /// directories fsynced, and the reflog lines appended and synced. `expected: None` in an
    /// update means "whatever it is now".
    ///
    /// One fsync per ref would cost a journal commit each; a save that moves 1000 session refs
    /// spent seconds there.
    ///
    /// # Errors
    /// [`Error::RefConflict`], bad names, I/O errors.
    pub fn update_many(&self, updates: &[RefTxn], message: &str) -> Result<()> {
        use rayon::prelude::*;
        let mut plan = Vec::with_capacity(updates.len());
        for u in updates {
            check_name(&u.name)?;
            let cur = self.get(&u.name)?;
            if let Some(exp) = &u.expected
                && cur != *exp
            {
                return Err(Error::RefConflict {
                    name: u.name.clone(),
                    expected: fmt_opt(exp.as_ref()),
                    found: fmt_opt(cur.as_ref()),
                });
            }
            if cur != u.new {
                plan.push((u, cur));
            }
        }
        if plan.is_empty() {
            return Ok(());
        }
        let bulk = plan.len() > 32;
        // 1. New contents in temp files next to their refs.
        let temps: Vec<(PathBuf, PathBuf)> = plan
            .par_iter()
            .filter_map(|(u, _)| u.new.map(|id| (u, id)))
            .map(|(u, id)| -> Result<(PathBuf, PathBuf)> {
                let path = self.path(&u.name);
                let dir = path.parent().expect("ref has a parent");
                fs::create_dir_all(dir)?;
                let tmp = durable::tmp_path(dir);
                let mut f = fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes())?;
                if !bulk {
                    f.sync_data()?;
                }
                Ok((tmp, path))
            })
            .collect::<Result<_>>()?;
        if bulk {
            durable::sync_filesystem(&self.refs)?;
        }
        // 2. Renames (and deletions) in the caller's order; directories synced.
        let mut dirs: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
        let mut temps = temps.into_iter();
        for (u, _) in &plan {
            let path = self.path(&u.name);
            if u.name == HEAD {
                // The commit point: every rename before it durable first.
                for d in std::mem::take(&mut dirs) {
                    durable::sync_dir(&d)?;
                }
            }
            if u.new.is_some() {
                let (tmp, target) = temps.next().expect("one temp per new value");
                debug_assert_eq!(target, path);
                fs::rename(&tmp, &target)?;
            } else {
                fs::remove_file(&path)?;
            }
            dirs.insert(path.parent().expect("ref has a parent").to_path_buf());
        }
        for d in dirs {
            durable::sync_dir(&d)?;
        }
        // 3. One reflog line per update, one append and one sync for the batch.
        let lines: Vec<(&str, Option<ObjectId>, Option<ObjectId>)> = plan
            .iter()
            .map(|(u, cur)| (u.name.as_str(), *cur, u.new))
            .collect();
        self.append_log(&lines, message, true)?;
        Ok(())
    }

    /// Sets a ref unconditionally (caller holds the lock).
    ///
    /// # Errors
    /// I/O errors.
    pub fn set(&self, name: &str, new: Option<ObjectId>, message: &str) -> Result<()> {
        let cur = self.get(name)?;
        self.cas(name, cur, new, message)
    }

    /// Lists refs whose name starts with `prefix` (e.g. `sessions/`), sorted by name.
    ///
    /// # Errors
    /// I/O errors or corrupt ref files.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>> {
        let mut out = Vec::new();
        if !self.refs.exists() {
            return Ok(out);
        }
        for e in walkdir::WalkDir::new(&self.refs).sort_by_file_name() {
            let e = e.map_err(|e| Error::Io(e.into()))?;
            if !e.file_type().is_file() {
                continue;
            }
            let rel = e.path().strip_prefix(&self.refs).expect("under refs");
            let Some(name) = rel.to_str().map(|s| s.replace('\\', "/")) else {
                continue;
            };
            if check_name(&name).is_err() || !name.starts_with(prefix) {
                continue; // temp files and foreign names
            }
            if let Some(id) = self.get(&name)? {
                out.push((name, id));
            }
        }
        Ok(out)
    }

    /// Appends reflog lines (`<name> <old> <new> <time_ns> <message>`) to `logs/refs.log`: one
    /// file for all refs, so a batch of updates costs one append and one sync.
    fn append_log(
        &self,
        lines: &[(&str, Option<ObjectId>, Option<ObjectId>)],
        message: &str,
        sync: bool,
    ) -> Result<()> {
        fs::create_dir_all(&self.logs)?;
        let msg: String = message
            .chars()
            .map(|c| if c == '\n' { ' ' } else { c })
            .collect();
        let now = super::now_ns();
        let mut text = String::with_capacity(lines.len() * 160);
        for (name, old, new) in lines {
            text.push_str(&format!(
                "{name} {} {} {now} {msg}\n",
                fmt_opt(old.as_ref()),
                fmt_opt(new.as_ref())
            ));
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(self.logs.join(LOG_FILE))?;
        // A line torn by a crash is closed first, so the next entry starts on a line of its own.
        let len = f.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(f.file(), &mut last, len - 1)?;
            if last[0] != b'\n' {
                text.insert(0, '\n');
            }
        }
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    }

    fn log_lines(&self) -> Result<Vec<(String, ReflogEntry)>> {
        let text = match std::fs::read_to_string(self.logs.join(LOG_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        Ok(text
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.split_once(' ')?;
                Some((name.to_owned(), parse_reflog_line(rest)?))
            })
            .collect())
    }

    /// Reads a ref's reflog, oldest first. A torn last line (crash during append) is skipped.
    ///
    /// # Errors
    /// I/O errors.
    pub fn reflog(&self, name: &str) -> Result<Vec<ReflogEntry>> {
        check_name(name)?;
        Ok(self
            .log_lines()?
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, e)| e)
            .collect())
    }

    /// Every id mentioned by any reflog entry (for gc roots).
    ///
    /// # Errors
    /// I/O errors.
    pub fn all_reflog_ids(&self) -> Result<Vec<ObjectId>> {
        let mut out = Vec::new();
        for (_, l) in self.log_lines()? {
            out.extend(l.old);
            out.extend(l.new);
        }
        Ok(out)
    }
}

/// The reflog file under `logs/`.
pub const LOG_FILE: &str = "refs.log";

fn parse_reflog_line(l: &str) -> Option<ReflogEntry> {
    let mut it = l.splitn(4, ' ');
    let parse = |s: &str| -> Option<Option<ObjectId>> {
        if s.bytes().all(|b| b == b'0') && s.len() == 64 {
            Some(None)
        } else {
            ObjectId::from_hex(s).ok().map(Some)
        }
    };
    let old = parse(it.next()?)?;
    let new = parse(it.next()?)?;
    let time_ns = it.next()?.parse().ok()?;
    Some(ReflogEntry {
        old,
        new,
        time_ns,
        message: it.next().unwrap_or("").to_owned(),
    })
}
