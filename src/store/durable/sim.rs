//! A simulated power cut (test only; the `power-loss-sim` feature). Modelled on redb's crash
//! test backend: the durable image is kept apart from the live one, I/O fails after a
//! countdown, and what the image holds is all that survives.
//!
//! # The model
//!
//! A [`PowerLossSim`] is installed over one directory, its *root* (a test's temp dir holding
//! the state and config dirs). Inside it, the simulator keeps what a power cut would leave:
//!
//! - **File data**, per inode: the content the file had at its last [`super::sync_data`] or
//!   [`super::sync_all`] (or [`super::sync_filesystem`]). A file never synced has no durable
//!   data: it survives (if its name does) as an **empty** file. Data written after the last
//!   sync is lost, whatever it was (an append, an overwrite). There is no difference between
//!   `fdatasync` and `fsync`.
//! - **Directory entries**, per directory inode: the names it held, and which inode (or symlink
//!   target) each named, at its last [`super::sync_dir`] (or `sync_filesystem`). A directory
//!   never synced has no durable entries: it survives (if its name does) **empty**. Every
//!   create, rename, unlink, mkdir and rmdir after the directory's last sync is lost: a new
//!   file is gone, an unlinked one is back, a renamed one is back under its old name — and
//!   under its new name too when only the target directory was synced. A rename of a file
//!   whose data was never synced that is made durable by a directory sync leaves an empty file.
//! - **`sync_filesystem`** makes everything under the root durable, data and entries — or,
//!   for a path inside a folder declared a filesystem of its own
//!   ([`PowerLossSim::separate_filesystem`]), everything in that folder only.
//! - [`PowerLossSim::power_cut_keeping`] also lets chosen directories keep every change
//!   made to their entries since their last sync (as a journal may commit them unasked),
//!   each such directory wholly, as it was at the instant of the cut: a file renamed into
//!   place then survives under its new name, with its data only if that was synced (else
//!   empty). This is how a missing sync of data before a rename shows when a later sync would
//!   have covered the data.
//! - Nothing else is durable: there is no journal that commits other metadata in order, no
//!   `auto_da_alloc` that flushes a file replaced by a rename, no sync of a file that also
//!   commits its directory entry (ext4 does all three; other filesystems need not). Each sync
//!   makes exactly its object durable, so a missing sync is never covered by a later one of
//!   another file or directory. A strict cut ([`PowerLossSim::power_cut`]) keeps exactly the
//!   durable image, "every write not yet synced is forgotten": the most a power cut may take
//!   on a POSIX filesystem (ext4 with `data=ordered` or `data=writeback` takes less).
//! - Not modelled: an unsynced append or overwrite is lost whole (a torn or zero-filled tail,
//!   which ext4 with `data=writeback` may leave, is not produced); file modes are taken as
//!   they are at the cut; hard links come back as separate files; anything but regular files,
//!   directories and symlinks is dropped.
//!
//! Inodes are identified by number; the simulator keeps every inode it has recorded open, so a
//! number cannot be reused for another file while its record lives.
//!
//! Only syncs change the durable image, so a cut anywhere between two syncs leaves the same
//! state as a cut just before the second: the syncs are the cut points. (For a keeping cut a
//! point between two syncs is approximated by the next sync: each directory keeps all of the
//! changes made to it until then, or none.) [`PowerLossSim::cut_at`]
//! arms one: that sync fails (an I/O error, "simulated power cut") instead of happening, and
//! from then on every durable operation of [`super`] on a path inside the root fails too, so the
//! operation in progress stops as if the machine had died there (its error paths run, but
//! nothing they do can become durable). [`PowerLossSim::power_cut`] then rewrites the root on
//! the real filesystem to exactly the durable image, and the simulator starts again from it.
//!
//! Writes made with plain `std::fs` calls (outside this module) are seen only through the syncs
//! that follow them: a directory sync records the directory as it is, whoever changed it.
//!
//! Every sync is identified by its call site (the functions of [`super`] are `#[track_caller]`
//! in this build): [`sync_sites`] counts them, and `SHELLDONE_POWER_SKIP_SYNC=dir@src/x.rs:12`
//! (or `file@…`, `fs@…`) makes the simulator act as if that one call were not in the code,
//! to check that the test notices (docs/safety.md, "Power-loss test").
//!
//! The real syncs are not issued for paths inside the root (the image stands in for them), so
//! a simulated run is faster than a real one. Linux only (`/proc/self/fd` is used to read the
//! file being synced).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// True while at least one simulator is installed (the fast path of every durable call).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Installed simulators.
static SIMS: Mutex<Vec<Arc<Inner>>> = Mutex::new(Vec::new());

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    st: Mutex<St>,
}

/// Directory entries by directory inode.
type Dirs = HashMap<u64, BTreeMap<OsString, Entry>>;

static NO_ENTRIES: BTreeMap<OsString, Entry> = BTreeMap::new();

/// One directory entry as the durable image holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir(u64),
    Link(PathBuf),
}

#[derive(Debug, Default)]
struct St {
    /// Durable data by inode.
    files: HashMap<u64, Vec<u8>>,
    /// Durable entries by directory inode.
    dirs: Dirs,
    /// Every inode recorded, kept open so that its number is not reused.
    pins: HashMap<u64, std::fs::File>,
    /// Folders inside the root that are separate filesystems (for `sync_filesystem`).
    filesystems: Vec<PathBuf>,
    /// (length, ctime) of a file when [`record_all`] read its data.
    stamps: HashMap<u64, (u64, i64, i64)>,
    root_ino: u64,
    /// Syncs inside the root so far.
    syncs: u64,
    /// The sync (by number, from 1) that cuts the power.
    fail_at: Option<u64>,
    /// The power is out: every durable operation fails until [`PowerLossSim::power_cut`].
    cut: bool,
    /// The entries of every directory when the armed cut happened.
    at_cut: Option<Dirs>,
}

fn cut_error(path: &Path) -> std::io::Error {
    std::io::Error::other(format!("simulated power cut ({})", path.display()))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The simulator whose root holds `path`, if any.
fn find(path: &Path) -> Option<Arc<Inner>> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    let p = absolute(path);
    SIMS.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|s| p.starts_with(&s.root))
        .cloned()
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, St> {
        self.st
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `Err` when `path` is inside a root whose power is out.
pub(super) fn alive(path: &Path) -> std::io::Result<()> {
    match find(path) {
        Some(s) if s.lock().cut => Err(cut_error(path)),
        _ => Ok(()),
    }
}

/// Counts a sync inside `root`; `Err` when it is the one that cuts the power (or the power
/// is already out).
fn count(st: &mut St, root: &Path, path: &Path) -> std::io::Result<()> {
    if st.cut {
        return Err(cut_error(path));
    }
    st.syncs += 1;
    if st.fail_at == Some(st.syncs) {
        st.cut = true;
        // What the directories hold at this instant, for a cut that keeps unsynced changes:
        // what the operation's error paths do afterwards never happened on a dead machine.
        st.at_cut = Some(current_dirs(st, root)?);
        return Err(cut_error(path));
    }
    Ok(())
}

/// A call site of a sync.
type Site = &'static std::panic::Location<'static>;

/// Syncs made inside a root, by call site (`file@src/store/mod.rs:812`: a file sync there;
/// `dir@…`, `fs@…`: a directory sync, a filesystem sync). A `write_atomic` or
/// `create_dir_all_durable` counts at its caller.
static SITES: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// The syncs made inside installed roots so far, by call site: `file@src/store/mod.rs:812`
/// (a file sync there), `dir@…`, `fs@…` (a directory sync, a filesystem sync); a
/// `write_atomic` or `create_dir_all_durable` counts at its caller.
#[must_use]
pub fn sync_sites() -> BTreeMap<String, u64> {
    SITES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Counts a sync at its site; true when the environment variable `SHELLDONE_POWER_SKIP_SYNC`
/// names that site: the simulator then acts as if the call were not in the code (nothing is
/// made durable, no cut point passes), to show what the sync guards.
fn skip(kind: &str, site: Site) -> bool {
    static SKIP: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let key = format!("{kind}@{}:{}", site.file(), site.line());
    let skip = SKIP
        .get_or_init(|| std::env::var("SHELLDONE_POWER_SKIP_SYNC").ok())
        .as_deref()
        == Some(key.as_str());
    *SITES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(key)
        .or_default() += 1;
    skip
}

/// `sync_data`/`sync_all` of a file inside a root: records its current content as durable.
pub(super) fn sync_file(
    file: &std::fs::File,
    path: &Path,
    site: Site,
) -> Option<std::io::Result<()>> {
    let s = find(path)?;
    let mut st = s.lock();
    if !st.cut && skip("file", site) {
        return Some(Ok(()));
    }
    Some(count(&mut st, &s.root, path).and_then(|()| {
        let ino = file.metadata()?.ino();
        if let std::collections::hash_map::Entry::Vacant(e) = st.pins.entry(ino) {
            e.insert(reopen(file, path)?);
        }
        let data = read_all(&st.pins[&ino])?;
        st.files.insert(ino, data);
        Ok(())
    }))
}

/// `sync_dir` of a directory inside a root: records its current entries as durable.
pub(super) fn sync_dir(
    dir_file: &std::fs::File,
    dir: &Path,
    site: Site,
) -> Option<std::io::Result<()>> {
    let s = find(dir)?;
    let mut st = s.lock();
    if !st.cut && skip("dir", site) {
        return Some(Ok(()));
    }
    Some(count(&mut st, &s.root, dir).and_then(|()| {
        let ino = dir_file.metadata()?.ino();
        record_dir(&mut st, dir, ino)
    }))
}

/// `sync_filesystem` of a path inside a root: everything under the root becomes durable.
pub(super) fn sync_filesystem(path: &Path, site: Site) -> Option<std::io::Result<()>> {
    let s = find(path)?;
    let mut st = s.lock();
    if !st.cut && skip("fs", site) {
        return Some(Ok(()));
    }
    Some(count(&mut st, &s.root, path).and_then(|()| {
        // The filesystem holding `path`: the innermost separate one, or the root's.
        let p = absolute(path);
        let fs_root = st
            .filesystems
            .iter()
            .filter(|f| p.starts_with(f))
            .max_by_key(|f| f.as_os_str().len())
            .cloned()
            .unwrap_or_else(|| s.root.clone());
        let others: Vec<PathBuf> = st
            .filesystems
            .iter()
            .filter(|f| **f != fs_root && f.starts_with(&fs_root))
            .cloned()
            .collect();
        record_tree(&mut st, &fs_root, &others)
    }))
}

/// Opens the inode behind `file` for reading (through `/proc/self/fd`, so that a write-only
/// handle or a renamed file is no obstacle).
fn reopen(file: &std::fs::File, path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let ino = file.metadata()?.ino();
    let f = std::fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .or_else(|_| std::fs::File::open(path))?;
    if f.metadata()?.ino() != ino {
        return Err(std::io::Error::other(format!(
            "power-loss simulator: {} changed while it was synced",
            path.display()
        )));
    }
    Ok(f)
}

fn read_all(f: &std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Keeps inode `ino`, found at `path`, open. False when `path` no longer names it.
fn pin(st: &mut St, ino: u64, path: &Path) -> std::io::Result<bool> {
    if st.pins.contains_key(&ino) {
        return Ok(true);
    }
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if f.metadata()?.ino() != ino {
        return Ok(false);
    }
    st.pins.insert(ino, f);
    Ok(true)
}

/// Records the entries of `dir` (inode `ino`) as durable.
fn record_dir(st: &mut St, dir: &Path, ino: u64) -> std::io::Result<()> {
    let entries = list_dir(st, dir, ino)?;
    st.dirs.insert(ino, entries);
    Ok(())
}

/// The entries `dir` (inode `ino`) holds now; it and they are pinned.
fn list_dir(st: &mut St, dir: &Path, ino: u64) -> std::io::Result<BTreeMap<OsString, Entry>> {
    use std::os::unix::fs::DirEntryExt;
    pin(st, ino, dir)?;
    let mut entries = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        let entry = if ft.is_dir() {
            Entry::Dir(e.ino())
        } else if ft.is_file() {
            Entry::File(e.ino())
        } else if ft.is_symlink() {
            match std::fs::read_link(e.path()) {
                Ok(t) => Entry::Link(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        } else {
            continue;
        };
        if let Entry::Dir(i) | Entry::File(i) = entry
            && !pin(st, i, &e.path())?
        {
            continue; // gone since the listing
        }
        entries.insert(e.file_name(), entry);
    }
    Ok(entries)
}

/// The entries of every directory under `root` now, by inode.
fn current_dirs(st: &mut St, root: &Path) -> std::io::Result<Dirs> {
    let mut out = Dirs::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.map_err(std::io::Error::from)?;
        if e.file_type().is_dir() {
            let ino = e.metadata().map_err(std::io::Error::from)?.ino();
            out.insert(ino, list_dir(st, e.path(), ino)?);
        }
    }
    Ok(out)
}

/// Records everything under `root` as durable: every directory's entries, every file's data.
fn record_all(st: &mut St, root: &Path) -> std::io::Result<()> {
    record_tree(st, root, &[])
}

/// Records everything under `root` but the subtrees `exclude` as durable.
fn record_tree(st: &mut St, root: &Path, exclude: &[PathBuf]) -> std::io::Result<()> {
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| !exclude.iter().any(|x| x == e.path()));
    for e in walk {
        let e = e.map_err(std::io::Error::from)?;
        let meta = e.metadata().map_err(std::io::Error::from)?;
        let ino = meta.ino();
        if e.file_type().is_dir() {
            record_dir(st, e.path(), ino)?;
        } else if e.file_type().is_file() && pin(st, ino, e.path())? {
            // Unchanged since its data was last recorded: nothing to read again.
            let stamp = (meta.len(), meta.ctime(), meta.ctime_nsec());
            if st.stamps.get(&ino) != Some(&stamp) || !st.files.contains_key(&ino) {
                let data = read_all(&st.pins[&ino])?;
                st.files.insert(ino, data);
                st.stamps.insert(ino, stamp);
            }
        }
    }
    Ok(())
}

/// Starts again from what `root` holds now, all of it durable (the sync count goes on).
fn restart(st: &mut St, root: &Path) -> std::io::Result<()> {
    *st = St {
        root_ino: std::fs::metadata(root)?.ino(),
        syncs: st.syncs,
        filesystems: std::mem::take(&mut st.filesystems),
        ..St::default()
    };
    record_all(st, root)
}

/// What survives, as a tree.
#[derive(Debug)]
enum Node {
    File(Vec<u8>, u32),
    Dir(BTreeMap<OsString, Node>, u32),
    Link(PathBuf),
}

/// What survives of directory `ino`, at `rel` under the root: its durable entries, or when
/// `keep` says so, the entries it holds now (from `now`); `up` holds its ancestors (a cycle,
/// which records taken at different times could form if directories moved, is cut).
fn image(
    st: &St,
    ino: u64,
    rel: &Path,
    now: Option<&Dirs>,
    keep: &mut dyn FnMut(&Path) -> bool,
    up: &mut Vec<u64>,
) -> BTreeMap<OsString, Node> {
    let mode = |i: &u64, default: u32| {
        st.pins
            .get(i)
            .and_then(|f| f.metadata().ok())
            .map_or(default, |m| m.permissions().mode() & 0o7777)
    };
    let mut out = BTreeMap::new();
    let kept = now.is_some() && keep(rel);
    let entries = match now {
        Some(now) if kept => now.get(&ino),
        _ => st.dirs.get(&ino),
    }
    .unwrap_or(&NO_ENTRIES);

    up.push(ino);
    for (name, e) in entries {
        let node = match e {
            Entry::File(i) => {
                Node::File(st.files.get(i).cloned().unwrap_or_default(), mode(i, 0o600))
            }
            Entry::Dir(i) if up.contains(i) => continue,
            Entry::Dir(i) => Node::Dir(
                image(st, *i, &rel.join(name), now, keep, up),
                mode(i, 0o700),
            ),
            Entry::Link(t) => Node::Link(t.clone()),
        };
        out.insert(name.clone(), node);
    }
    up.pop();
    out
}

fn write_image(dir: &Path, tree: &BTreeMap<OsString, Node>) -> std::io::Result<()> {
    for (name, node) in tree {
        let p = dir.join(name);
        match node {
            Node::File(data, mode) => {
                std::fs::write(&p, data)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
            }
            Node::Dir(sub, mode) => {
                std::fs::create_dir(&p)?;
                write_image(&p, sub)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
            }
            Node::Link(t) => std::os::unix::fs::symlink(t, &p)?,
        }
    }
    Ok(())
}

/// Every path under `root` (relative), with a file's length.
fn listing(root: &Path) -> std::io::Result<BTreeMap<PathBuf, Option<u64>>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let e = e.map_err(std::io::Error::from)?;
        let rel = e.path().strip_prefix(root).expect("under the root");
        let len = e
            .file_type()
            .is_file()
            .then(|| e.metadata().map(|m| m.len()));
        out.insert(
            rel.to_path_buf(),
            len.transpose().map_err(std::io::Error::from)?,
        );
    }
    Ok(out)
}

/// The paths of an image (relative), with a file's length.
fn image_listing(
    tree: &BTreeMap<OsString, Node>,
    at: &Path,
    out: &mut BTreeMap<PathBuf, Option<u64>>,
) {
    for (name, node) in tree {
        let p = at.join(name);
        match node {
            Node::File(data, _) => {
                out.insert(p, Some(data.len() as u64));
            }
            Node::Dir(sub, _) => {
                image_listing(sub, &p, out);
                out.insert(p, None);
            }
            Node::Link(_) => {
                out.insert(p, None);
            }
        }
    }
}

/// What a power cut changed, relative to the root.
#[derive(Debug, Clone, Default)]
pub struct CutReport {
    /// Paths that existed before the cut and are gone.
    pub lost: Vec<PathBuf>,
    /// Files whose length changed (reverted to older content, or emptied).
    pub reverted: Vec<PathBuf>,
    /// Paths that are back (unlinked or renamed away before the cut, without a sync).
    pub back: Vec<PathBuf>,
}

/// A simulated power-loss backend over one directory; removed on drop. See the module docs.
#[derive(Debug)]
pub struct PowerLossSim {
    inner: Arc<Inner>,
}

impl PowerLossSim {
    /// Installs a simulator over `root` (an existing directory, not inside another simulator's
    /// root); everything in it now is durable.
    ///
    /// # Errors
    /// I/O errors reading `root`; a root that overlaps an installed one.
    pub fn install(root: &Path) -> std::io::Result<PowerLossSim> {
        let root = std::fs::canonicalize(root)?;
        let mut st = St {
            root_ino: std::fs::metadata(&root)?.ino(),
            ..St::default()
        };
        record_all(&mut st, &root)?;
        let inner = Arc::new(Inner {
            root: root.clone(),
            st: Mutex::new(st),
        });
        let mut sims = SIMS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sims
            .iter()
            .any(|s| s.root.starts_with(&root) || root.starts_with(&s.root))
        {
            return Err(std::io::Error::other(format!(
                "a power-loss simulator already covers {}",
                root.display()
            )));
        }
        sims.push(inner.clone());
        ACTIVE.store(true, Ordering::Relaxed);
        Ok(PowerLossSim { inner })
    }

    /// Makes `dir`, a folder inside the root, a filesystem of its own: a `sync_filesystem` of
    /// a path inside it makes only it durable, and one of a path outside it does not reach it
    /// (the state and the config dirs may be on two filesystems, and restore syncs each).
    ///
    /// # Errors
    /// `dir` does not exist or is not inside the root.
    pub fn separate_filesystem(&self, dir: &Path) -> std::io::Result<()> {
        let dir = std::fs::canonicalize(dir)?;
        if !dir.starts_with(&self.inner.root) {
            return Err(std::io::Error::other(format!(
                "{} is not inside {}",
                dir.display(),
                self.inner.root.display()
            )));
        }
        self.inner.lock().filesystems.push(dir);
        Ok(())
    }

    /// The root (canonical).
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Syncs inside the root so far (the cut points passed).
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.inner.lock().syncs
    }

    /// Arms a power cut at sync number `n` (counted as [`Self::syncs`] counts, from 1), or
    /// disarms it.
    pub fn cut_at(&self, n: Option<u64>) {
        self.inner.lock().fail_at = n;
    }

    /// True once the armed cut happened (and until [`Self::power_cut`]).
    #[must_use]
    pub fn is_cut(&self) -> bool {
        self.inner.lock().cut
    }

    /// Makes everything under `dir` (inside the root) durable — the entries of every directory,
    /// the data of every file — without counting a sync: for the test's own writes (a user's
    /// editor that synced what it saved).
    ///
    /// # Errors
    /// I/O errors reading `dir`.
    pub fn settle(&self, dir: &Path) -> std::io::Result<()> {
        let mut st = self.inner.lock();
        record_all(&mut st, dir)
    }

    /// Everything under the root now is durable (as after [`Self::power_cut`]); no cut armed.
    /// For a test that rewrote the root itself (a copy of an earlier state put back).
    ///
    /// # Errors
    /// I/O errors reading the root.
    pub fn reset(&self) -> std::io::Result<()> {
        restart(&mut self.inner.lock(), &self.inner.root)
    }

    /// The power goes out now (whether or not an armed cut happened): the root is rewritten to
    /// exactly its durable image, and the simulator starts again from it (everything is
    /// durable, no cut armed). Nothing may be writing inside the root meanwhile.
    ///
    /// # Errors
    /// I/O errors rewriting the root.
    pub fn power_cut(&self) -> std::io::Result<CutReport> {
        self.cut(false, &mut |_| false)
    }

    /// As [`Self::power_cut`], except that each directory for which `keep` (given its path
    /// under the root) says so keeps every change made to its entries since its last sync —
    /// the creates, renames and unlinks a journal may commit without being asked to — as they
    /// were at the instant of the cut (the armed sync; now, when none fired): what the
    /// interrupted operation's error paths did afterwards never happened. File data not
    /// synced is lost all the same: a file renamed into place without a sync of its data
    /// survives empty.
    ///
    /// # Errors
    /// I/O errors rewriting the root.
    pub fn power_cut_keeping(
        &self,
        keep: &mut dyn FnMut(&Path) -> bool,
    ) -> std::io::Result<CutReport> {
        self.cut(true, keep)
    }

    fn cut(
        &self,
        keeping: bool,
        keep: &mut dyn FnMut(&Path) -> bool,
    ) -> std::io::Result<CutReport> {
        let root = &self.inner.root;
        let mut st = self.inner.lock();
        let before = listing(root)?;
        let now = match (keeping, st.at_cut.take()) {
            (false, _) => None,
            (true, Some(at_cut)) => Some(at_cut),
            (true, None) => Some(current_dirs(&mut st, root)?),
        };
        let tree = image(
            &st,
            st.root_ino,
            Path::new(""),
            now.as_ref(),
            keep,
            &mut Vec::new(),
        );
        for e in std::fs::read_dir(root)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
        }
        write_image(root, &tree)?;
        let mut after = BTreeMap::new();
        image_listing(&tree, Path::new(""), &mut after);
        let mut report = CutReport::default();
        for (p, v) in &before {
            match after.get(p) {
                None => report.lost.push(p.clone()),
                Some(a) if a != v => report.reverted.push(p.clone()),
                Some(_) => {}
            }
        }
        report.back = after
            .keys()
            .filter(|p| !before.contains_key(*p))
            .cloned()
            .collect();
        restart(&mut st, root)?;
        Ok(report)
    }
}

impl Drop for PowerLossSim {
    fn drop(&mut self) {
        let mut sims = SIMS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sims.retain(|s| !Arc::ptr_eq(s, &self.inner));
        ACTIVE.store(!sims.is_empty(), Ordering::Relaxed);
    }
}
