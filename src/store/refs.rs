//! Refs: small files holding a snapshot id, updated by compare-and-swap under the store lock,
//! each update appended to a reflog.
//!
//! A ref lives in `refs/<name>` (a "loose" ref) or in `packed-refs` (one file for many, as in
//! git): a batch that moves more than [`PACK_BATCH`] refs (a first save of 1000 sessions)
//! rewrites `packed-refs` once instead of creating a file per ref. A loose ref overrides its
//! packed value; `packed-refs` is `# shelldone packed-refs 1` then sorted `<hex id> <name>`
//! lines, always replaced atomically.
//!
//! Names are `/`-separated, each component `[A-Za-z0-9._-]+` and not starting with `.`:
//! `head`, `sessions/<id>`, `remotes/<remote>/<device>/head`, `remotes/<remote>/<device>/sessions/<id>`,
//! `conflicts/<device>/sessions/<id>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fs_err as fs;
use objects_format::ObjectId;

use super::durable;
use crate::error::{Error, Result};

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

/// (inode, length, mtime ns, ctime ns) of `packed-refs`.
type PackedKey = (u64, u64, i64, i64);
/// Packed refs by name.
type Packed = BTreeMap<String, ObjectId>;
/// The last version of `packed-refs` read.
type PackedCache = Arc<Mutex<Option<(PackedKey, Arc<Packed>)>>>;

/// Batches that move more refs than this write them into `packed-refs`.
pub const PACK_BATCH: usize = 32;

const PACKED_HEADER: &str = "# shelldone packed-refs 1";

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

fn fmt_opt(id: Option<&ObjectId>) -> String {
    id.map_or_else(|| "0".repeat(64), ObjectId::to_hex)
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

    /// The packed refs (empty when there is no `packed-refs`).
    ///
    /// # Errors
    /// [`Error::CorruptFile`] naming `packed-refs` when it does not parse; I/O errors.
    fn packed(&self) -> Result<Arc<Packed>> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        // Key and content from the same open file: a replacement between a stat and a read
        // cannot pair an old key with new content.
        let mut f = match fs::File::open(&self.packed) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(Packed::new()));
            }
            Err(e) => return Err(e.into()),
        };
        let meta = f.metadata()?;
        let key = (
            meta.ino(),
            meta.len(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
            meta.ctime_nsec() + meta.ctime() * 1_000_000_000,
        );
        let mut cache = self.packed_cache.lock().expect("no panics while held");
        if let Some((k, p)) = cache.as_ref()
            && *k == key
        {
            return Ok(p.clone());
        }
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        let map =
            parse_packed(&bytes).map_err(|(why, _)| Error::corrupt_file(&self.packed, why))?;
        let p = Arc::new(map);
        *cache = Some((key, p.clone()));
        Ok(p)
    }

    /// `packed-refs` as it is, without failing on damage: for `state check` and `state recover`.
    ///
    /// # Errors
    /// I/O errors other than a missing file.
    pub fn scan_packed(&self) -> Result<PackedScan> {
        match std::fs::read(&self.packed) {
            Ok(bytes) => Ok(match parse_packed(&bytes) {
                Ok(map) => PackedScan::Sound(map),
                Err((why, salvaged)) => PackedScan::Corrupt { why, salvaged },
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PackedScan::Absent),
            Err(e) => Err(Error::Io(std::io::Error::new(
                e.kind(),
                format!("{e} (reading {})", self.packed.display()),
            ))),
        }
    }

    /// The `packed-refs` path.
    #[must_use]
    pub fn packed_path(&self) -> &Path {
        &self.packed
    }

    /// The reflog path (`logs/refs.log`).
    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.logs.join(LOG_FILE)
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

    /// Replaces `packed-refs` atomically (temp, fsync, rename, fsync dir).
    fn write_packed(&self, packed: &Packed) -> Result<()> {
        let mut text = String::with_capacity(32 + packed.len() * 90);
        text.push_str(PACKED_HEADER);
        text.push('\n');
        for (name, id) in packed {
            text.push_str(&format!("{id} {name}\n"));
        }
        // Forget the cached version first: the next read goes to the file.
        *self.packed_cache.lock().expect("no panics while held") = None;
        durable::write_atomic(&self.packed, text.as_bytes())?;
        Ok(())
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

    /// The value the last reflog line for `name` set, with that line's number, when it set one
    /// (`None` when no line names it or the last one deleted it).
    ///
    /// # Errors
    /// I/O errors reading the reflog.
    pub fn last_logged(&self, name: &str) -> Result<Option<(ObjectId, usize)>> {
        Ok(self
            .scan_reflog()?
            .lines
            .iter()
            .rev()
            .find(|l| l.name == name)
            .and_then(|l| l.entry.new.map(|id| (id, l.no))))
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

    /// Drops the refs `plan` deletes from `packed-refs` (their loose files, if any, still hold
    /// the old values until the caller removes them).
    fn unpack_deleted(&self, plan: &[(&RefTxn, Option<ObjectId>)]) -> Result<()> {
        let gone: Vec<&str> = plan
            .iter()
            .filter(|(u, _)| u.new.is_none())
            .map(|(u, _)| u.name.as_str())
            .collect();
        self.drop_packed(&gone)
    }

    /// Rewrites `packed-refs` without `names` (nothing is written when none of them is packed).
    fn drop_packed(&self, names: &[&str]) -> Result<()> {
        let packed = self.packed()?;
        if !names.iter().any(|n| packed.contains_key(*n)) {
            return Ok(());
        }
        let mut p = (*packed).clone();
        for n in names {
            p.remove(*n);
        }
        self.write_packed(&p)
    }

    /// Large batches: every ref but the head goes into one new `packed-refs` (one file written
    /// and synced, not one per ref); loose files that would shadow the new values are removed;
    /// the head, the commit point, is written last as a loose ref. A crash before the head moves
    /// leaves the head at its old snapshot, like a crash between the renames of loose refs.
    fn apply_packed(&self, plan: &[(&RefTxn, Option<ObjectId>)]) -> Result<()> {
        let mut p = (*self.packed()?).clone();
        let mut head = None;
        let mut shadowing = Vec::new();
        for (u, _) in plan {
            if u.name == HEAD {
                head = Some(u.new);
                continue;
            }
            match u.new {
                Some(id) => p.insert(u.name.clone(), id),
                None => p.remove(&u.name),
            };
            let path = self.path(&u.name);
            if path.is_file() {
                shadowing.push(path);
            }
        }
        self.write_packed(&p)?;
        let mut dirs: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
        for path in shadowing {
            durable::remove_file(&path)?;
            dirs.insert(path.parent().expect("ref has a parent").to_path_buf());
        }
        for d in dirs {
            durable::sync_dir(&d)?;
        }
        if let Some(new) = head {
            let path = self.path(HEAD);
            match new {
                Some(id) => {
                    durable::create_dir_all_durable(&self.refs)?;
                    durable::write_atomic(&path, format!("{id}\n").as_bytes())?;
                }
                None => {
                    durable::remove_file(&path)?;
                    durable::sync_dir(&self.refs)?;
                }
            }
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

    /// Appends reflog lines (`<name> <old> <new> <time_ns> <message>`) to `logs/refs.log`: one
    /// file for all refs, so a batch of updates costs one append and one sync.
    fn append_log(
        &self,
        lines: &[(&str, Option<ObjectId>, Option<ObjectId>)],
        message: &str,
        sync: bool,
    ) -> Result<()> {
        durable::create_dir_all_durable(&self.logs)?;
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
        let path = self.logs.join(LOG_FILE);
        let (mut f, created) = durable::open_append(&path)?;
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
            durable::sync_data(f.file(), &path)?;
            if created || len == 0 {
                // A new reflog (a new store, or one whose first append failed): its name
                // durable too, or the lines just synced could vanish with it.
                durable::sync_dir(&self.logs)?;
            }
        }
        Ok(())
    }

    /// Reads the whole reflog, line by line, without failing on damage: lines that are not
    /// UTF-8 or do not parse are listed in [`ReflogScan::damaged`] (and skipped by every reader);
    /// a line whose only fault is bytes that are not UTF-8 is also read with those bytes
    /// replaced, so the ids it records still count.
    ///
    /// # Errors
    /// I/O errors other than a missing file.
    pub fn scan_reflog(&self) -> Result<ReflogScan> {
        let path = self.log_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", path.display()),
                )));
            }
        };
        let mut scan = ReflogScan {
            path,
            lines: Vec::new(),
            damaged: Vec::new(),
        };
        let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        if body.is_empty() && bytes.len() <= 1 {
            if bytes.len() == 1 {
                scan.damaged.push(DamagedLine {
                    no: 1,
                    raw: Vec::new(),
                    why: "empty line".into(),
                    readable: false,
                });
            }
            return Ok(scan);
        }
        for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
            let no = i + 1;
            let (text, utf8) = match std::str::from_utf8(raw) {
                Ok(t) => (std::borrow::Cow::Borrowed(t), true),
                Err(_) => (String::from_utf8_lossy(raw), false),
            };
            let parsed = parse_reflog(&text);
            match (&parsed, utf8) {
                (Some(_), true) => {}
                (Some(_), false) => scan.damaged.push(DamagedLine {
                    no,
                    raw: raw.to_vec(),
                    why: "it holds bytes that are not UTF-8".into(),
                    readable: true,
                }),
                (None, _) => scan.damaged.push(DamagedLine {
                    no,
                    raw: raw.to_vec(),
                    why: if raw.is_empty() {
                        "empty line".into()
                    } else if utf8 {
                        "not '<ref> <old id> <new id> <time> <message>'".into()
                    } else {
                        "not UTF-8, and not '<ref> <old id> <new id> <time> <message>'".into()
                    },
                    readable: false,
                }),
            }
            if let Some((name, entry)) = parsed {
                scan.lines.push(ReflogLine { no, name, entry });
            }
        }
        Ok(scan)
    }

    /// The last reflog line (that parses) for which `pred` holds, reading the file from its
    /// end: the last 64 KiB first, the whole file only when they hold no such line.
    ///
    /// # Errors
    /// I/O errors.
    pub fn find_last(
        &self,
        pred: impl Fn(&str, &ReflogEntry) -> bool,
    ) -> Result<Option<(String, ReflogEntry)>> {
        use std::io::{Read, Seek};
        const TAIL: u64 = 64 << 10;
        let path = self.log_path();
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", path.display()),
                )));
            }
        };
        let len = f.metadata()?.len();
        if len > TAIL {
            f.seek(std::io::SeekFrom::Start(len - TAIL))?;
            let mut tail = Vec::with_capacity(TAIL as usize);
            f.read_to_end(&mut tail)?;
            // The first (partial) line of the window is skipped.
            let found = tail
                .split(|b| *b == b'\n')
                .skip(1)
                .filter_map(|l| parse_reflog(&String::from_utf8_lossy(l)))
                .filter(|(n, e)| pred(n, e))
                .last();
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(self
            .scan_reflog()?
            .lines
            .into_iter()
            .rev()
            .find(|l| pred(&l.name, &l.entry))
            .map(|l| (l.name, l.entry)))
    }

    /// Reads a ref's reflog, oldest first. Lines that do not parse (a torn last line after a
    /// crash, damage) are skipped; `state check` lists them.
    ///
    /// # Errors
    /// I/O errors.
    pub fn reflog(&self, name: &str) -> Result<Vec<ReflogEntry>> {
        check_name(name)?;
        Ok(self
            .scan_reflog()?
            .lines
            .into_iter()
            .filter(|l| l.name == name)
            .map(|l| l.entry)
            .collect())
    }

    /// Every id mentioned by any reflog entry (for gc roots).
    ///
    /// # Errors
    /// I/O errors.
    pub fn all_reflog_ids(&self) -> Result<Vec<ObjectId>> {
        let mut out = Vec::new();
        for l in self.scan_reflog()?.lines {
            out.extend(l.entry.old);
            out.extend(l.entry.new);
        }
        Ok(out)
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

    /// Appends reflog lines during repair (caller holds the lock).
    ///
    /// # Errors
    /// I/O errors.
    pub fn repair_log(
        &self,
        lines: &[(&str, Option<ObjectId>, Option<ObjectId>)],
        message: &str,
    ) -> Result<()> {
        self.append_log(lines, message, true)
    }

    /// Replaces `packed-refs` with `packed` during repair (caller holds the lock). No reflog
    /// line: the caller logs each ref whose value changed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn repair_packed(&self, packed: &BTreeMap<String, ObjectId>) -> Result<()> {
        self.write_packed(packed)
    }

    /// Replaces the reflog with `text` (caller holds the lock): temp file, fsync, rename.
    ///
    /// # Errors
    /// I/O errors.
    pub fn repair_reflog(&self, text: &[u8]) -> Result<()> {
        durable::create_dir_all_durable(&self.logs)?;
        durable::write_atomic(&self.log_path(), text)?;
        Ok(())
    }
}

/// A loose ref file as [`Refs::scan_loose`] found it: name, path, value or what is wrong.
pub type LooseRef = (String, PathBuf, std::result::Result<ObjectId, String>);

/// What `packed-refs` holds, damaged or not.
#[derive(Debug, Clone)]
pub enum PackedScan {
    /// There is no `packed-refs`.
    Absent,
    /// It parses.
    Sound(BTreeMap<String, ObjectId>),
    /// It does not parse: why, and the lines that still did.
    Corrupt {
        /// The first problem found.
        why: String,
        /// Refs read from the lines that parse.
        salvaged: BTreeMap<String, ObjectId>,
    },
}

/// One reflog line that parses.
#[derive(Debug, Clone)]
pub struct ReflogLine {
    /// Line number, from 1.
    pub no: usize,
    /// The ref it is about.
    pub name: String,
    /// What it records.
    pub entry: ReflogEntry,
}

/// One reflog line that is not as shelldone writes it.
#[derive(Debug, Clone)]
pub struct DamagedLine {
    /// Line number, from 1.
    pub no: usize,
    /// Its bytes (without the newline).
    pub raw: Vec<u8>,
    /// What is wrong.
    pub why: String,
    /// True when it parses once its bytes that are not UTF-8 are replaced (it is then also in
    /// [`ReflogScan::lines`]).
    pub readable: bool,
}

/// The reflog as read by [`Refs::scan_reflog`].
#[derive(Debug, Clone)]
pub struct ReflogScan {
    /// `logs/refs.log`.
    pub path: PathBuf,
    /// Lines that parse, in order.
    pub lines: Vec<ReflogLine>,
    /// Lines that are damaged, in order.
    pub damaged: Vec<DamagedLine>,
}

/// Parses `packed-refs`; on damage, why (naming the first bad line) and the refs of the lines
/// that still parse.
fn parse_packed(bytes: &[u8]) -> std::result::Result<Packed, (String, Packed)> {
    let mut map = Packed::new();
    let mut first: Option<String> = None;
    if bytes.is_empty() {
        return Err(("empty (no header line)".into(), map));
    }
    let body = match bytes.strip_suffix(b"\n") {
        Some(b) => b,
        None => {
            first = Some("truncated: the last line has no newline".into());
            bytes
        }
    };
    let mut lines = body.split(|b| *b == b'\n').enumerate();
    match lines.next() {
        Some((_, h)) if h == PACKED_HEADER.as_bytes() => {}
        Some((_, h)) => {
            first.get_or_insert_with(|| {
                format!(
                    "unknown header {:?}",
                    String::from_utf8_lossy(h)
                        .chars()
                        .take(80)
                        .collect::<String>()
                )
            });
        }
        None => {}
    }
    for (i, l) in lines {
        let bad = |why: &str| format!("line {}: {why}", i + 1);
        let Ok(l) = std::str::from_utf8(l) else {
            first.get_or_insert_with(|| bad("not UTF-8"));
            continue;
        };
        let parsed = l.split_once(' ').and_then(|(hex, name)| {
            let id = ObjectId::from_hex(hex).ok()?;
            check_name(name).ok()?;
            Some((name, id))
        });
        match parsed {
            Some((name, id)) => {
                if map.insert(name.to_owned(), id).is_some() {
                    first.get_or_insert_with(|| bad(&format!("ref {name} listed twice")));
                }
            }
            None => {
                first.get_or_insert_with(|| {
                    bad(&format!(
                        "not '<id> <ref>': {:?}",
                        l.chars().take(80).collect::<String>()
                    ))
                });
            }
        }
    }
    match first {
        None => Ok(map),
        Some(why) => Err((why, map)),
    }
}

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

/// The reflog file under `logs/`.
pub const LOG_FILE: &str = "refs.log";

/// Parses one reflog line: `<ref> <old> <new> <time ns> <message>`.
fn parse_reflog(l: &str) -> Option<(String, ReflogEntry)> {
    let (name, rest) = l.split_once(' ')?;
    check_name(name).ok()?;
    Some((name.to_owned(), parse_reflog_line(rest)?))
}

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
