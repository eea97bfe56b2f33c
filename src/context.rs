//! The store context every command takes: paths, objects, refs, the store lock, this device's
//! id and the damage found at open (`FORMAT`, `device`). Below the commands (`save`,
//! `restore`, `sync`, `history`, `check`, `recover`, `repair`) and above the store and snapshot
//! layers; the [`crate::State`] facade holds one. See docs/architecture.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fs_err as fs;
use objects_format::{ObjectId, Snapshot};
use shelldone_migrations::{Access, StoreVersion};

use crate::error::{Error, Result};
use crate::snapshot;
use crate::store;
use crate::store::ObjectStore;
use crate::store::lock::StoreLock;
use crate::store::refs::Refs;

/// On-disk store format this version writes. A newer major is refused; a newer minor opens
/// read-only; an older major is migrated (see [`StoreVersion::access`]).
pub const STORE_FORMAT: StoreVersion = StoreVersion::new(2, 0);

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `$XDG_CONFIG_HOME/shelldone` or an override.
    pub config_dir: PathBuf,
    /// `$XDG_STATE_HOME/shelldone` or an override.
    pub state_dir: PathBuf,
}

impl Paths {
    /// The XDG defaults (`$XDG_CONFIG_HOME/shelldone`, `$XDG_STATE_HOME/shelldone`, falling back
    /// to `~/.config` and `~/.local/state`).
    ///
    /// # Errors
    /// When neither the XDG variable nor `HOME` is set.
    pub fn xdg() -> Result<Paths> {
        let home = || std::env::var_os("HOME").map(PathBuf::from);
        let pick = |var: &str, fallback: &str| -> Result<PathBuf> {
            match std::env::var_os(var).filter(|v| !v.is_empty()) {
                Some(v) => Ok(PathBuf::from(v).join("shelldone")),
                None => home()
                    .map(|h| h.join(fallback).join("shelldone"))
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "neither {var} nor HOME is set; pass --state-dir/--config-dir"
                        ))
                    }),
            }
        };
        Ok(Paths {
            config_dir: pick("XDG_CONFIG_HOME", ".config")?,
            state_dir: pick("XDG_STATE_HOME", ".local/state")?,
        })
    }
}

/// What the config file and the environment set for a store context (see [`Context::apply`]).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The config's exclude patterns (`state.exclude`).
    pub excludes: snapshot::exclude::Excludes,
    /// How long a mutating command waits for the store lock (default:
    /// `SHELLDONE_LOCK_TIMEOUT`, else 60 s).
    pub lock_timeout: Option<std::time::Duration>,
    /// `sync.push_timeout`: how long a git push may move no byte (`SHELLDONE_GIT_IDLE_TIMEOUT`
    /// wins).
    pub push_timeout: Option<std::time::Duration>,
    /// `sync.pull_timeout`: the same for a git fetch.
    pub pull_timeout: Option<std::time::Duration>,
    /// The AWS variables (and the profile files they name) S3 remotes are opened with.
    pub aws: crate::remote::s3::AwsEnv,
}

/// Gives the vault passphrase; the argument says what it is needed for.
#[derive(Clone)]
pub struct Passphrase(pub std::sync::Arc<PassphraseFn>);

/// The function behind a [`Passphrase`].
pub type PassphraseFn = dyn Fn(&str) -> Result<String> + Send + Sync;

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// What every command works on: the paths, the object store, the refs, the store lock, this
/// device's id and the damage found at open. The [`crate::Context`] facade holds one; nothing
/// below it names `Context`.
#[derive(Debug)]
pub struct Context {
    pub(crate) paths: Paths,
    pub(crate) snap_dir: PathBuf,
    pub(crate) objects: ObjectStore,
    pub(crate) refs: Refs,
    pub(crate) device: String,
    pub(crate) read_only: bool,
    /// The store format migration this open ran, if any: (major before, major after).
    pub(crate) migrated: Option<(u32, u32)>,
    /// The restore point that migration made (its folder name).
    pub(crate) restore_point: Option<String>,
    /// The store format found at open (after a migration, the new one); `None` for a store
    /// whose `FORMAT` is damaged. Writes re-check it under the store lock.
    pub(crate) format: Option<StoreVersion>,
    /// An older store opened read-through (a read-only command): the version it has. Nothing
    /// is migrated or written; [`Context::lock`] refuses.
    pub(crate) read_through: Option<StoreVersion>,
    /// Damaged store files found at open that make writing unsafe (`FORMAT` in repair mode, a
    /// damaged `device` file in a store with history): [`Context::lock`] refuses while any is
    /// present; `state check` lists them and `state recover` repairs them.
    pub(crate) damage: Vec<(PathBuf, String)>,
    /// Entries the snapshot policy left out since the last [`Context::take_skipped`], by what was
    /// done (`not saved`, `not restored`) and path: the CLI prints them as warnings.
    pub(crate) skipped: std::sync::Mutex<
        std::collections::BTreeMap<(&'static str, String), snapshot::policy::Skipped>,
    >,
    /// The user's excludes (config file; `.shelldoneignore` files are read by the walk).
    pub(crate) excludes: std::sync::Arc<snapshot::exclude::Excludes>,
    /// How long a mutating command waits for the store lock.
    pub(crate) lock_timeout: std::time::Duration,
    /// The config file's git idle timeouts (push, fetch), when it sets them.
    pub(crate) git_timeouts: (Option<std::time::Duration>, Option<std::time::Duration>),
    /// The AWS settings S3 remotes are opened with ([`Settings::aws`]).
    pub(crate) aws: crate::remote::s3::AwsEnv,
    /// Where long operations report their progress.
    pub(crate) progress: std::sync::Arc<dyn crate::progress::Progress>,
    /// Gives the vault passphrase when a command needs this device's keys (an encrypted or
    /// signed remote); the CLI installs one that reads `SHELLDONE_VAULT_PASSPHRASE` or asks.
    pub(crate) passphrase: Option<Passphrase>,
    /// This device's keys once a command unlocked them for a remote, kept for the life of
    /// the process (the daemon pushes and pulls many times; one scrypt per unlock is 0.1 s).
    pub(crate) unlocked: std::sync::Mutex<Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>>,
    /// The stat cache as the start-up descriptor check read it, kept for the command's first
    /// user ([`Context::load_statcache`]), so that a process reads the file once.
    pub(crate) statcache: std::sync::Mutex<Option<store::statcache::StatCache>>,
}

impl Context {
    /// Opens the store for `state check` and `state recover`: a damaged `FORMAT` or `device`
    /// file is recorded instead of refused (see [`Context::damage`]), and nothing is written —
    /// no startup recovery, no descriptor repair — so that a damaged store can always be
    /// examined and repaired.
    ///
    /// # Errors
    /// I/O errors, a store from a newer shelldone.
    pub fn open_for_repair(paths: Paths) -> Result<Context> {
        Context::open_inner(paths, true)
    }

    /// [`Context::open_for_repair`] for `state check`: a store of an older format is read
    /// through, not migrated (nothing is written).
    ///
    /// # Errors
    /// As [`Context::open_for_repair`].
    pub fn open_for_check(paths: Paths) -> Result<Context> {
        Context::open_mode(paths, true, OnOlder::ReadThrough)
    }

    pub(crate) fn open_inner(paths: Paths, repair: bool) -> Result<Context> {
        Context::open_mode(paths, repair, OnOlder::Migrate)
    }

    pub(crate) fn open_mode(paths: Paths, repair: bool, on_older: OnOlder) -> Result<Context> {
        let snap_dir = paths.state_dir.join("snapshots");
        store::durable::create_dir_all_durable(&snap_dir)?;
        let mut damage = Vec::new();
        let mut opened = Opened::default();
        let read_only = match check_format(&snap_dir, on_older, &mut opened) {
            Ok(ro) => ro,
            Err(Error::CorruptFile { path, why }) if repair => {
                damage.push((path, why));
                false
            }
            Err(e) => return Err(e),
        };
        let mut st = Context {
            objects: ObjectStore::new(snap_dir.clone()),
            refs: Refs::new(&snap_dir),
            snap_dir,
            paths,
            device: String::new(),
            read_only,
            migrated: opened.migrated,
            restore_point: opened.restore_point,
            format: opened.format,
            read_through: opened.read_through,
            damage,
            skipped: std::sync::Mutex::default(),
            excludes: std::sync::Arc::default(),
            lock_timeout: store::lock::default_timeout(),
            git_timeouts: (None, None),
            aws: crate::remote::s3::AwsEnv::default(),
            progress: std::sync::Arc::new(crate::progress::Silent),
            passphrase: None,
            unlocked: std::sync::Mutex::default(),
            statcache: std::sync::Mutex::default(),
        };
        let (device, why) = st.device_id()?;
        st.device = device;
        if let Some(why) = why {
            st.damage.push((st.snap_dir.join("device"), why));
        } else if repair
            && let Some(saved) = st.device_from_history()
            && saved != st.device
        {
            // A valid id that is not the one this store saves under (a flipped or cut byte):
            // found by check (it reads the reflog, which opening for other commands does not).
            st.damage.push((
                st.snap_dir.join("device"),
                format!(
                    "it says {}, but this store's newest local save was made as {saved}",
                    st.device
                ),
            ));
            st.device = saved;
        }
        Ok(st)
    }

    /// Damaged store files found at open that block writing: (path, what is wrong).
    #[must_use]
    pub fn damage(&self) -> &[(PathBuf, String)] {
        &self.damage
    }

    /// The paths in use.
    #[must_use]
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// This device's id.
    #[must_use]
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The object store.
    #[must_use]
    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// The refs.
    #[must_use]
    pub fn refs(&self) -> &Refs {
        &self.refs
    }

    /// The `snapshots/` dir.
    #[must_use]
    pub fn snapshots_dir(&self) -> &Path {
        &self.snap_dir
    }

    /// Reads the snapshot a ref names; when it is missing, corrupt or not a snapshot the error
    /// names the ref's file too ([`Error::CorruptFile`]): the ref may be the damaged part, and
    /// `state recover` repairs either.
    pub(crate) fn ref_snapshot(&self, name: &str, id: ObjectId) -> Result<Snapshot> {
        self.objects.read_snapshot(&id).map_err(|e| {
            if e.is_damage() {
                let place = if self.refs.loose_path(name).is_file() {
                    self.refs.loose_path(name)
                } else {
                    self.refs.packed_path().to_path_buf()
                };
                Error::corrupt_file(
                    place,
                    format!("{name} names {id}, which cannot be read: {e}"),
                )
            } else {
                e
            }
        })
    }

    /// The snapshots listed in `shallow` (parents deliberately not fetched), and its damaged
    /// lines: (line, why), or (None, why) for the whole file. Lines that are not UTF-8 are
    /// read with those bytes replaced.
    pub(crate) fn read_shallow(&self) -> (BTreeSet<ObjectId>, Vec<(Option<usize>, String)>) {
        let mut ids = BTreeSet::new();
        let mut bad = Vec::new();
        let bytes = match std::fs::read(self.snap_dir.join("shallow")) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (ids, bad),
            Err(e) => {
                bad.push((None, format!("unreadable: {e}")));
                return (ids, bad);
            }
        };
        if bytes.is_empty() {
            bad.push((None, "empty".into()));
            return (ids, bad);
        }
        let body = match bytes.strip_suffix(b"\n") {
            Some(b) => b,
            None => {
                bad.push((None, "truncated: the last line has no newline".into()));
                &bytes[..]
            }
        };
        for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
            let text = String::from_utf8_lossy(raw);
            match ObjectId::from_hex(text.trim()) {
                Ok(id) if self.objects.has(&id) => {
                    ids.insert(id);
                }
                Ok(id) => bad.push((
                    Some(i + 1),
                    format!("it names {id}, which is not in the store"),
                )),
                Err(_) => bad.push((
                    Some(i + 1),
                    format!("not a snapshot id: {:?}", crate::error::short(&text)),
                )),
            }
        }
        (ids, bad)
    }

    /// `packs/*.pack` files without their `.idx`.
    pub(crate) fn packs_without_index(&self) -> Result<Vec<PathBuf>> {
        let dir = self.objects.packs_dir();
        let mut out = Vec::new();
        if !dir.is_dir() {
            return Ok(out);
        }
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "pack") && !p.with_extension("idx").exists() {
                out.push(p);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Applies the config file's and the environment's settings.
    pub fn apply(&mut self, s: Settings) {
        self.excludes = std::sync::Arc::new(s.excludes);
        if let Some(t) = s.lock_timeout {
            self.lock_timeout = t;
        }
        self.git_timeouts = (s.push_timeout, s.pull_timeout);
        self.aws = s.aws;
    }

    /// Takes the store lock for a mutating operation.
    ///
    /// # Errors
    /// [`Error::Locked`] after `SHELLDONE_LOCK_TIMEOUT`; [`Error::ReadOnly`].
    /// A damaged `FORMAT` or `device` file refuses every write with [`Error::CorruptFile`]
    /// until `state recover` repaired it.
    pub fn lock(&self, what: &str) -> Result<StoreLock> {
        if let Some((path, why)) = self.damage.first() {
            return Err(Error::corrupt_file(path, why.clone()));
        }
        // A `device` file that still holds a valid id, but not this store's (a flipped or cut
        // byte): writing under it would start another device's history on every remote.
        if let Some(saved) = self.device_from_history()
            && saved != self.device
        {
            return Err(Error::corrupt_file(
                self.snap_dir.join("device"),
                format!(
                    "it says {}, but this store's newest local save was made as {saved}",
                    self.device
                ),
            ));
        }
        self.lock_for_repair(what)
    }

    /// Takes the store lock even when [`Context::damage`] lists damaged files (for `state
    /// recover`, which repairs them).
    ///
    /// # Errors
    /// [`Error::Locked`] after `SHELLDONE_LOCK_TIMEOUT`; [`Error::ReadOnly`].
    pub fn lock_for_repair(&self, what: &str) -> Result<StoreLock> {
        if let Some(found) = self.read_through {
            return Err(Error::Usage(format!(
                "the state store at {} has format {found}, older than this shelldone's {STORE_FORMAT}, and this command only reads it; run 'shelldone migrate' (or any command that writes) to upgrade it",
                self.snap_dir.display()
            )));
        }
        if self.read_only {
            return Err(Error::ReadOnly(self.snap_dir.clone()));
        }
        self.acquire_checked(what, self.lock_timeout)
    }

    /// Takes the store lock, then re-reads `FORMAT`: another process may have migrated the
    /// store (or put an older version back) since this one opened it, and writing in the
    /// format read at open would strand what the other version wrote. The lock is released
    /// and the write refused when the version changed.
    ///
    /// # Errors
    /// [`Error::Locked`]; [`Error::NewerStore`] (a newer version now); [`Error::Migration`]
    /// (an older one); I/O errors.
    pub(crate) fn acquire_checked(
        &self,
        what: &str,
        timeout: std::time::Duration,
    ) -> Result<StoreLock> {
        let lock = StoreLock::acquire(&self.snap_dir, what, timeout)?;
        let Some(opened) = self.format else {
            // A damaged FORMAT (state recover rewrites it under this lock).
            return Ok(lock);
        };
        let path = self.snap_dir.join("FORMAT");
        let now = std::fs::read(&path)
            .ok()
            .and_then(|b| StoreVersion::parse(&b).ok());
        match now {
            Some(now) if now == opened => Ok(lock),
            Some(now) if now > opened => Err(Error::NewerStore {
                path: self.snap_dir.clone(),
                found: now.to_string(),
                supported: format!(
                    "{STORE_FORMAT} (it was {opened} when this command opened it; another process changed it)"
                ),
            }),
            now => Err(Error::Migration {
                path: self.snap_dir.clone(),
                source: shelldone_migrations::MigrationError::Unexpected {
                    path: path.display().to_string(),
                    why: format!(
                        "it says {}, but was {opened} when this command opened the store (another process changed it); run the command again",
                        now.map_or_else(|| "nothing readable".to_owned(), |v| v.to_string())
                    ),
                },
            }),
        }
    }

    /// The restore point the migration at open made, if one ran.
    #[must_use]
    pub fn restore_point(&self) -> Option<&str> {
        self.restore_point.as_deref()
    }

    /// The older store format this context reads through without migrating, if any.
    #[must_use]
    pub fn read_through(&self) -> Option<StoreVersion> {
        self.read_through
    }

    /// The live layout.
    #[must_use]
    pub fn layout(&self) -> snapshot::Layout {
        let mut l = snapshot::Layout::live(&self.paths.config_dir, &self.paths.state_dir);
        l.excludes = Some(self.excludes.clone());
        l
    }

    /// Records entries the snapshot policy left out (`what`: `not saved`, `not restored`).
    pub(crate) fn note_skipped(&self, what: &'static str, skipped: &[snapshot::policy::Skipped]) {
        if skipped.is_empty() {
            return;
        }
        let mut m = self
            .skipped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in skipped {
            m.insert((what, s.path.clone()), s.clone());
        }
    }

    /// Entries the snapshot policy left out since the last call, each with what was done
    /// (`not saved`, `not restored`), in path order; the list is emptied.
    pub fn take_skipped(&self) -> Vec<(&'static str, snapshot::policy::Skipped)> {
        let mut m = self
            .skipped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *m)
            .into_iter()
            .map(|((what, _), s)| (what, s))
            .collect()
    }

    /// The store format migration opening ran, if any: (major before, major after).
    #[must_use]
    pub fn migrated(&self) -> Option<(u32, u32)> {
        self.migrated
    }

    pub(crate) fn statcache_path(&self) -> PathBuf {
        self.snap_dir.join("statcache")
    }

    /// The stat cache: the one the start-up check read (taken: a second call reads the file),
    /// else read now. One read before the lock was taken is only older than the file, and an
    /// older cache vouches for fewer files (a file whose stat changed since is read again),
    /// never for a wrong content.
    pub(crate) fn load_statcache(&self) -> store::statcache::StatCache {
        self.statcache
            .lock()
            .expect("no panics while held")
            .take()
            .unwrap_or_else(|| store::statcache::StatCache::load(&self.statcache_path()))
    }

    /// Frees the stat cache the start-up check kept, for a command that will not use it (an
    /// export: 10 MB at 100 000 files).
    pub(crate) fn forget_statcache(&self) {
        drop(self.statcache.lock().expect("no panics while held").take());
    }

    /// Keeps a stat cache just read for [`Context::load_statcache`].
    pub(crate) fn keep_statcache(&self, cache: store::statcache::StatCache) {
        *self.statcache.lock().expect("no panics while held") = Some(cache);
    }
}

/// True when `snapshots/` holds anything a user could lose: objects, packs, refs or a reflog
/// (a store with none of these is new, and its `FORMAT` and `device` are simply created).
pub(crate) fn store_has_contents(dir: &Path) -> bool {
    let non_empty = |p: PathBuf| match std::fs::read_dir(&p) {
        Ok(mut d) => d.next().is_some(),
        Err(_) => p.is_file(),
    };
    ["objects", "packs", "refs", "packed-refs", "logs"]
        .iter()
        .any(|n| non_empty(dir.join(n)))
}

/// What opening does with a store of an older format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnOlder {
    /// Make a restore point and migrate it (a command that writes).
    Migrate,
    /// Read it as it is, write nothing (a command that only reads).
    ReadThrough,
}

/// What [`check_format`] found and did.
#[derive(Debug, Default)]
struct Opened {
    format: Option<StoreVersion>,
    migrated: Option<(u32, u32)>,
    restore_point: Option<String>,
    read_through: Option<StoreVersion>,
}

/// Reads `FORMAT` (writing it in a new store): whether the store is read-only (a newer minor,
/// or an older store read through).
///
/// # Errors
/// [`Error::CorruptFile`] when `FORMAT` is damaged, or missing from a store that holds data;
/// [`Error::NewerStore`]; migration and I/O errors.
fn check_format(dir: &Path, on_older: OnOlder, opened: &mut Opened) -> Result<bool> {
    let path = dir.join("FORMAT");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found = StoreVersion::parse(&bytes)
                .map_err(|e| Error::corrupt_file(&path, e.to_string()))?;
            opened.format = Some(found);
            match STORE_FORMAT.access(found) {
                Access::ReadWrite => Ok(false),
                Access::ReadOnly => Ok(true),
                Access::Refuse => Err(Error::NewerStore {
                    path: dir.to_path_buf(),
                    found: found.to_string(),
                    supported: STORE_FORMAT.to_string(),
                }),
                Access::Migrate if on_older == OnOlder::ReadThrough => {
                    // Every older format reads as it is (a step only allows what the old
                    // version could not read), so a read-only command needs no migration.
                    opened.read_through = Some(found);
                    Ok(true)
                }
                Access::Migrate => {
                    // Under the store lock, so that no other process works on the store while
                    // its format changes; another process may have migrated it while we waited.
                    let _lock =
                        StoreLock::acquire(dir, "store migration", store::lock::default_timeout())?;
                    let migration = |source| Error::Migration {
                        path: dir.to_path_buf(),
                        source,
                    };
                    let state_dir = dir.parent().expect("snapshots/ is in the state dir");
                    let now = shelldone_migrations::read_format(dir).map_err(migration)?;
                    let report = shelldone_migrations::run_pending(
                        state_dir,
                        STORE_FORMAT.major,
                        false,
                        &store::durable::Durable,
                    )
                    .map_err(migration)?;
                    if now.major < STORE_FORMAT.major {
                        opened.migrated = Some((now.major, STORE_FORMAT.major));
                    }
                    opened.restore_point = report.point.map(|p| p.name);
                    opened.format =
                        Some(shelldone_migrations::read_format(dir).map_err(migration)?);
                    Ok(false)
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if store_has_contents(dir) {
                // Which version wrote this data is unknown: guessing could let this version
                // write into a newer store. `state recover` decides (docs/safety.md).
                return Err(Error::corrupt_file(
                    &path,
                    "the file is missing, and the store holds objects or refs",
                ));
            }
            store::durable::write_atomic(&path, STORE_FORMAT.format_line().as_bytes())?;
            opened.format = Some(STORE_FORMAT);
            Ok(false)
        }
        Err(e) => Err(Error::Io(std::io::Error::new(
            e.kind(),
            format!("{e} (reading {})", path.display()),
        ))),
    }
}

impl Context {
    /// This device's id from `snapshots/device`, created in a new store. In a store with
    /// history a missing or damaged file is not replaced by a new id (this device would start
    /// writing under another name on every remote): the id is taken from the newest local save
    /// the reflog records, and the damage is returned for [`Context::lock`] to refuse writes
    /// until `state recover` rewrites the file.
    fn device_id(&self) -> Result<(String, Option<String>)> {
        let path = self.snap_dir.join("device");
        let why = match std::fs::read(&path) {
            Ok(b) => match std::str::from_utf8(&b).map(str::trim) {
                Ok(s) if valid_device(s) => return Ok((s.to_owned(), None)),
                Ok("") => "empty".to_owned(),
                Ok(s) => format!(
                    "not a device id: {:?}",
                    s.chars().take(80).collect::<String>()
                ),
                Err(_) => "not UTF-8".to_owned(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "the file is missing".to_owned(),
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", path.display()),
                )));
            }
        };
        if store_has_contents(&self.snap_dir) {
            if let Some(id) = self.device_from_history() {
                return Ok((
                    id.clone(),
                    Some(format!("{why}; the reflog says this device is {id}")),
                ));
            }
            if !self.damage.is_empty() || self.read_only {
                return Ok((new_device_id(), Some(why)));
            }
            // History, but no local save to take the id from (only pulled snapshots): a new id
            // loses nothing.
        }
        if self.read_only {
            return Ok((new_device_id(), None));
        }
        let id = new_device_id();
        store::durable::write_atomic(&path, format!("{id}\n").as_bytes())?;
        Ok((id, None))
    }

    /// The device of the newest snapshot a local save made (a reflog line of `head` whose
    /// message starts with `save`), if its snapshot reads.
    pub(crate) fn device_from_history(&self) -> Option<String> {
        let (_, e) = self
            .refs
            .find_last(|n, e| {
                n == store::refs::HEAD
                    && e.new.is_some()
                    && (e.message.starts_with("save") || e.message.starts_with(DEVICE_RENAME))
            })
            .ok()??;
        // `device rename` records the new name in the reflog before it writes `device`.
        if let Some(names) = e.message.strip_prefix(DEVICE_RENAME) {
            let new = names.rsplit(" -> ").next()?.trim();
            return valid_device(new).then(|| new.to_owned());
        }
        let s = self.objects.read_snapshot(&e.new?).ok()?;
        valid_device(&s.device).then_some(s.device)
    }
}

/// The reflog message prefix of `device rename` (`device rename: OLD -> NEW`).
pub(crate) const DEVICE_RENAME: &str = "device rename: ";

fn valid_device(s: &str) -> bool {
    store::refs::check_name(s).is_ok() && !s.contains('/')
}

fn new_device_id() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    let host = if host.is_empty() {
        "device".to_owned()
    } else {
        host
    };
    format!("{host}-{:08x}", rand::random::<u32>())
}
