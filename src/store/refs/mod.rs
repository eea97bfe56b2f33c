//! Refs: small files holding a snapshot id, updated by compare-and-swap under the store lock,
//! each update appended to a reflog.
//!
//! A ref lives in `refs/<name>` (a "loose" ref) or in `packed-refs` (one file for many, as in
//! git): a batch that moves more than [`PACK_BATCH`] refs (a first save of 1000 sessions)
//! rewrites `packed-refs` once instead of creating a file per ref. A loose ref overrides its
//! packed value; `packed-refs` is `# shelldone packed-refs 1` then sorted `<hex id> <name>`
//! lines, always replaced atomically.
//!
//! Names are `/`-separated components that [`check_name`] accepts (normative: SPEC §11.6):
//! `head`, `sessions/<id>` ([`session_ref`]), `remotes/<remote>/<device>/head`,
//! `remotes/<remote>/<device>/sessions/<id>`. `packed.rs` holds `packed-refs`, `reflog.rs` the
//! reflog; this file the names, loose refs and the compare-and-swap updates.

mod packed;
mod reflog;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use objects_format::ObjectId;

use super::durable;
use crate::error::{Error, Result};

use packed::PackedCache;
pub use packed::PackedScan;
use reflog::fmt_opt;
pub use reflog::{DamagedLine, LOG_FILE, ReflogEntry, ReflogLine, ReflogScan};

/// The whole-state head.
pub const HEAD: &str = "head";

/// Ref storage under `snapshots/refs`, `snapshots/packed-refs` and `snapshots/logs`.
#[derive(Debug, Clone)]
pub struct Refs {
    refs: PathBuf,
    packed: PathBuf,
    logs: PathBuf,
    /// `packed-refs` as last read, keyed by what identifies one version of the file (it is only
    /// ever replaced by a rename, so a new version has a new inode).
    packed_cache: PackedCache,
}

/// Batches that move more refs than this write them into `packed-refs`.
pub const PACK_BATCH: usize = 32;

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

/// A loose ref file as [`Refs::scan_loose`] found it: name, path, value or what is wrong.
pub type LooseRef = (String, PathBuf, std::result::Result<ObjectId, String>);

/// Parses the bytes of a loose ref file.
fn parse_loose(b: &[u8]) -> std::result::Result<ObjectId, String> {
    if b.is_empty() {
        return Err("empty".into());
    }
    let Ok(s) = std::str::from_utf8(b) else {
        return Err("not UTF-8".into());
    };
    ObjectId::from_hex(s.trim()).map_err(|_| {
        format!(
            "not a snapshot id: {:?}",
            s.chars().take(80).collect::<String>()
        )
    })
}

/// Reads a loose ref file: `None` when there is none (or the name is a directory of refs).
/// Writes a loose ref file (temp, fsync, rename; its folder created first).
fn write_loose(path: &Path, id: ObjectId) -> Result<()> {
    durable::create_dir_all_durable(path.parent().expect("ref has a parent"))?;
    durable::write_atomic(path, format!("{id}\n").as_bytes())?;
    Ok(())
}

/// Removes a loose ref file (an absent one is fine) and syncs its folder.
fn remove_loose(path: &Path) -> Result<()> {
    match durable::remove_file(path) {
        Ok(()) => durable::sync_dir(path.parent().expect("ref has a parent"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn read_loose(path: &Path) -> Result<Option<ObjectId>> {
    match std::fs::read(path) {
        Ok(b) => parse_loose(&b)
            .map(Some)
            .map_err(|why| Error::corrupt_file(path, why)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::IsADirectory =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

impl Refs {
    /// Refs under `root` (`snapshots/`).
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Refs {
            refs: root.join("refs"),
            packed: root.join("packed-refs"),
            logs: root.join("logs"),
            packed_cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The path of a loose ref.
    #[must_use]
    pub fn loose_path(&self, name: &str) -> PathBuf {
        self.path(name)
    }

    /// Every loose ref file with what it holds, damaged ones included (for check and recover):
    /// (name, path, value or what is wrong). Temp files and foreign names are skipped.
    ///
    /// # Errors
    /// I/O errors walking `refs/`.
    pub fn scan_loose(&self) -> Result<Vec<LooseRef>> {
        let mut out = Vec::new();
        for (name, path) in self.loose_files("")? {
            let v = match std::fs::read(&path) {
                Ok(b) => parse_loose(&b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(format!("unreadable: {e}")),
            };
            out.push((name, path, v));
        }
        Ok(out)
    }

    /// The loose ref files whose name starts with `prefix`, sorted by name; temp files and
    /// foreign names are skipped.
    fn loose_files(&self, prefix: &str) -> Result<Vec<(String, PathBuf)>> {
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
                continue;
            }
            out.push((name, e.path().to_path_buf()));
        }
        Ok(out)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.refs.join(name)
    }

    /// Reads a ref.
    ///
    /// # Errors
    /// Bad name, unreadable or corrupt ref file.
    /// A missing `head` while the reflog says the head was set is damage, not an empty store:
    /// [`Error::CorruptFile`] (a save would otherwise start a new, parentless history).
    pub fn get(&self, name: &str) -> Result<Option<ObjectId>> {
        let v = self.get_raw(name)?;
        if v.is_none()
            && name == HEAD
            && let Some((id, no)) = self.last_logged(HEAD)?
        {
            return Err(Error::corrupt_file(
                self.path(HEAD),
                format!(
                    "the file is missing, but {} line {no} says head was {id}",
                    self.log_path().display()
                ),
            ));
        }
        Ok(v)
    }

    /// Reads a ref as it is stored (a missing `head` is `None` whatever the reflog says).
    ///
    /// # Errors
    /// Bad name, unreadable or corrupt ref file or `packed-refs`.
    pub fn get_raw(&self, name: &str) -> Result<Option<ObjectId>> {
        check_name(name)?;
        match read_loose(&self.path(name))? {
            Some(id) => Ok(Some(id)),
            None => Ok(self.packed()?.get(name).copied()),
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
            Some(id) => write_loose(&path, id)?,
            None => {
                // Packed value first: until the loose file goes, it still names the old value.
                self.drop_packed(&[name])?;
                remove_loose(&path)?
            }
        }
        self.append_log(&[(name, cur, new)], message, true)?;
        Ok(())
    }

    /// Updates many refs as one batch (caller holds the lock): every compare-and-swap is checked
    /// first (nothing changes if one fails), then the new values are written — up to
    /// [`PACK_BATCH`] as loose ref files (all durable before the first rename, renamed in the
    /// given order), more as one new `packed-refs` — with the head last (it is the commit
    /// point), and the reflog lines appended and synced. `expected: None` in an update means
    /// "whatever it is now".
    ///
    /// A file per ref costs an inode each: a first save of 1000 sessions spent about a third of
    /// its CPU time creating ref files (`perf`: ext4 inode allocation and directory-lock
    /// spinning); `packed-refs` makes that one file.
    ///
    /// # Errors
    /// [`Error::RefConflict`], bad names, I/O errors.
    pub fn update_many(&self, updates: &[RefTxn], message: &str) -> Result<()> {
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
        if plan.len() > PACK_BATCH {
            self.apply_packed(&plan)?;
        } else {
            self.apply_loose(&plan)?;
        }
        // 3. One reflog line per update, one append and one sync for the batch.
        let lines: Vec<(&str, Option<ObjectId>, Option<ObjectId>)> = plan
            .iter()
            .map(|(u, cur)| (u.name.as_str(), *cur, u.new))
            .collect();
        self.append_log(&lines, message, true)?;
        Ok(())
    }

    /// Small batches: every new value in its own temp file, all written and fsynced before the
    /// first rename (a full disk changes nothing), then renamed in the given order.
    fn apply_loose(&self, plan: &[(&RefTxn, Option<ObjectId>)]) -> Result<()> {
        let mut temps = Vec::with_capacity(plan.len());
        let res = (|| -> Result<()> {
            for (u, _) in plan {
                if let Some(id) = u.new {
                    let dir = self.refs.join(&u.name);
                    let dir = dir.parent().expect("ref has a parent");
                    durable::create_dir_all_durable(dir)?;
                    let tmp = durable::tmp_path(dir);
                    temps.push(tmp.clone());
                    let mut f = durable::create(&tmp)?;
                    std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes())?;
                    durable::sync_data(f.file(), &tmp)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = res.and_then(|()| self.unpack_deleted(plan)) {
            for t in &temps {
                let _ = durable::remove_file(t);
            }
            return Err(e);
        }
        let mut dirs: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
        let mut temps = temps.into_iter();
        for (u, _) in plan {
            let path = self.path(&u.name);
            if u.name == HEAD {
                // The commit point: every change before it durable first.
                for d in std::mem::take(&mut dirs) {
                    durable::sync_dir(&d)?;
                }
            }
            if u.new.is_some() {
                durable::rename(&temps.next().expect("one temp per new value"), &path)?;
            } else {
                match durable::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            dirs.insert(path.parent().expect("ref has a parent").to_path_buf());
        }
        for d in dirs {
            durable::sync_dir(&d)?;
        }
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
        // Loose refs first, then packed-refs (git's order): a writer replaces packed-refs before
        // it unlinks the loose refs the new values replace, so a reader without the lock never
        // pairs a missing loose ref with a packed value older than it.
        let mut out: BTreeMap<String, ObjectId> = BTreeMap::new();
        for (name, path) in self.loose_files(prefix)? {
            // None: unlinked since the walk saw it; its value is in packed-refs now.
            if let Some(id) = read_loose(&path)? {
                out.insert(name, id);
            }
        }
        for (n, id) in self
            .packed()?
            .range(prefix.to_owned()..)
            .take_while(|(n, _)| n.starts_with(prefix))
        {
            out.entry(n.clone()).or_insert(*id);
        }
        Ok(out.into_iter().collect())
    }

    /// Writes a ref during repair (caller holds the lock): a loose file (or none, for `None`),
    /// whatever the ref holds now, and a reflog line from `old` (what it was read as, if
    /// anything) with `message`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn repair_loose(
        &self,
        name: &str,
        old: Option<ObjectId>,
        new: Option<ObjectId>,
        message: &str,
    ) -> Result<()> {
        check_name(name)?;
        let path = self.path(name);
        match new {
            Some(id) => write_loose(&path, id)?,
            None => remove_loose(&path)?,
        }
        self.append_log(&[(name, old, new)], message, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    fn txn(name: &str, new: Option<ObjectId>) -> RefTxn {
        RefTxn {
            name: name.to_owned(),
            expected: None,
            new,
        }
    }

    #[test]
    fn large_batches_go_to_packed_refs_and_loose_refs_override_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let refs = Refs::new(dir.path());
        let mut batch: Vec<RefTxn> = (0..40)
            .map(|i| txn(&format!("sessions/s{i:03}"), Some(id(1))))
            .collect();
        batch.push(txn(HEAD, Some(id(2))));
        refs.update_many(&batch, "first save").expect("update");
        // One file for the 40 session refs; the head stays loose (it is the commit point).
        assert!(dir.path().join("packed-refs").is_file());
        assert!(!dir.path().join("refs/sessions").exists());
        assert_eq!(refs.get(HEAD).expect("get"), Some(id(2)));
        assert_eq!(refs.list("sessions/").expect("list").len(), 40);
        assert_eq!(refs.reflog("sessions/s007").expect("reflog").len(), 1);

        // A small update writes a loose ref that overrides the packed value.
        refs.update_many(&[txn("sessions/s007", Some(id(3)))], "one session")
            .expect("update");
        assert!(dir.path().join("refs/sessions/s007").is_file());
        assert_eq!(refs.get("sessions/s007").expect("get"), Some(id(3)));
        let list = refs.list("sessions/").expect("list");
        assert_eq!(list.len(), 40);
        assert_eq!(list[7], ("sessions/s007".to_owned(), id(3)));

        // Deleting a packed ref (with or without a loose override) removes it everywhere.
        refs.cas("sessions/s007", Some(id(3)), None, "drop")
            .expect("cas delete");
        refs.update_many(&[txn("sessions/s008", None)], "drop")
            .expect("delete packed");
        assert_eq!(refs.get("sessions/s007").expect("get"), None);
        assert_eq!(refs.get("sessions/s008").expect("get"), None);
        assert_eq!(refs.list("sessions/").expect("list").len(), 38);

        // A second large batch folds loose values into packed-refs and removes the loose files.
        refs.update_many(&[txn("sessions/s009", Some(id(4)))], "loose")
            .expect("update");
        let batch: Vec<RefTxn> = (10..45)
            .map(|i| txn(&format!("sessions/s{i:03}"), Some(id(5))))
            .chain([txn("sessions/s009", Some(id(6)))])
            .collect();
        refs.update_many(&batch, "second").expect("update");
        assert!(!dir.path().join("refs/sessions/s009").exists());
        assert_eq!(refs.get("sessions/s009").expect("get"), Some(id(6)));
        assert_eq!(refs.list("sessions/").expect("list").len(), 43);
        // Compare-and-swap sees packed values.
        assert!(matches!(
            refs.cas("sessions/s012", Some(id(1)), Some(id(7)), "stale"),
            Err(Error::RefConflict { .. })
        ));
    }

    #[test]
    fn a_corrupt_packed_refs_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let refs = Refs::new(dir.path());
        std::fs::write(
            dir.path().join("packed-refs"),
            "# shelldone packed-refs 1\nnot a line\n",
        )
        .expect("write");
        let err = refs.get("sessions/a").expect_err("corrupt");
        assert!(err.to_string().contains("packed-refs is corrupt"), "{err}");
        std::fs::write(
            dir.path().join("packed-refs"),
            "# shelldone packed-refs 9\n",
        )
        .expect("write");
        assert!(
            refs.list("").is_err(),
            "an unknown version is not read as empty"
        );
    }

    #[test]
    fn reflog_lines_that_are_not_utf8_or_do_not_parse_are_listed_and_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let refs = Refs::new(dir.path());
        refs.update_many(&[txn(HEAD, Some(id(1)))], "save: café ☕")
            .expect("update");
        let path = refs.log_path();
        let good = std::fs::read(&path).expect("read");
        // The same line again, cut inside the ☕ (a torn append), then a line of garbage.
        let mut bytes = good.clone();
        bytes.extend_from_slice(&good[..good.len() - 2]);
        bytes.extend_from_slice(b"\nnot a reflog line\n");
        std::fs::write(&path, &bytes).expect("write");
        let scan = refs.scan_reflog().expect("scan");
        assert_eq!(scan.lines.len(), 2, "the cut line still records its ids");
        assert_eq!(scan.damaged.len(), 2);
        assert_eq!((scan.damaged[0].no, scan.damaged[0].readable), (2, true));
        assert!(
            scan.damaged[0].why.contains("UTF-8"),
            "{}",
            scan.damaged[0].why
        );
        assert_eq!((scan.damaged[1].no, scan.damaged[1].readable), (3, false));
        assert_eq!(refs.reflog(HEAD).expect("reflog").len(), 2);
        assert_eq!(refs.last_logged(HEAD).expect("last"), Some((id(1), 2)));
        // A later append still starts on a line of its own.
        refs.update_many(&[txn(HEAD, Some(id(2)))], "save")
            .expect("update");
        assert_eq!(refs.last_logged(HEAD).expect("last"), Some((id(2), 4)));
    }

    #[test]
    fn a_missing_head_that_the_reflog_knows_is_damage_not_an_empty_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let refs = Refs::new(dir.path());
        assert_eq!(refs.get(HEAD).expect("fresh store"), None);
        refs.update_many(&[txn(HEAD, Some(id(1)))], "save")
            .expect("update");
        std::fs::remove_file(refs.loose_path(HEAD)).expect("rm");
        let err = refs.get(HEAD).expect_err("missing head");
        assert!(matches!(err, Error::CorruptFile { .. }), "{err}");
        assert_eq!(err.kind(), crate::error::ErrorKind::Data);
        assert_eq!(refs.get_raw(HEAD).expect("raw"), None);
        // Bytes that are not UTF-8 in a ref file or packed-refs name the file, exit 3.
        std::fs::write(refs.loose_path(HEAD), b"\xff\xfe\n").expect("write");
        let err = refs.get(HEAD).expect_err("corrupt head");
        assert!(
            err.to_string().contains("refs/head is corrupt: not UTF-8"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("packed-refs"),
            b"# shelldone packed-refs 1\n\xff\n",
        )
        .expect("write");
        let err = refs.get("sessions/a").expect_err("corrupt packed-refs");
        assert!(
            err.to_string()
                .contains("packed-refs is corrupt: line 2: not UTF-8"),
            "{err}"
        );
        assert_eq!(err.kind(), crate::error::ErrorKind::Data);
    }
}
