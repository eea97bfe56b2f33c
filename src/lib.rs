//! # shelldone state
//!
//! The state engine of the Shelldone terminal: sessions, journal and preferences stored as
//! immutable BLAKE3-addressed, zstd-compressed objects (see `objects-format`), with refs per
//! session, so that snapshots, backups and sync are all object transfers.
//!
//! Layers, each importing only downward: [`objects_format`] (pure format) → [`store`] (objects,
//! refs, locks, stat cache) → [`snapshot`] (walk, hash, restore) → [`remote`] / [`sync`] →
//! [`State`] (this API) → the `shelldone` CLI. Nothing in the library prints.

pub mod check;
pub mod cli;
pub mod demo;
pub mod error;
pub mod history;
pub mod ops;
pub mod recover;
pub mod remote;
pub mod snapshot;
pub mod store;
pub mod sync;

use std::path::{Path, PathBuf};

use fs_err as fs;

pub use error::{Error, Result};
pub use objects_format::ObjectId;
pub use ops::{RestoreOptions, RestoreOutcome, SaveOptions, SaveOutcome};
pub use recover::RecoveryReport;

use store::ObjectStore;
use store::lock::StoreLock;
use store::refs::Refs;

/// On-disk store format (major, minor). A newer major is refused; a newer minor opens read-only.
pub const STORE_FORMAT: (u32, u32) = (2, 0);

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
                        Error::Invalid(format!(
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

/// An open state store. Cheap to keep open; every mutating call takes the store lock itself.
#[derive(Debug)]
pub struct State {
    paths: Paths,
    snap_dir: PathBuf,
    objects: ObjectStore,
    refs: Refs,
    device: String,
    read_only: bool,
    /// Entries the snapshot policy left out since the last [`State::take_skipped`], by what was
    /// done (`not saved`, `not restored`) and path: the CLI prints them as warnings.
    skipped: std::sync::Mutex<
        std::collections::BTreeMap<(&'static str, String), snapshot::policy::Skipped>,
    >,
}

impl State {
    /// Opens (creating if needed) the store, then finishes or rolls back whatever an interrupted
    /// process left (see [`State::recover`]); the report says what was done.
    ///
    /// # Errors
    /// I/O errors, a store from a newer shelldone, or a failed recovery.
    pub fn open(paths: Paths) -> Result<(State, RecoveryReport)> {
        let snap_dir = paths.state_dir.join("snapshots");
        fs::create_dir_all(&snap_dir)?;
        let read_only = check_format(&snap_dir)?;
        let device = device_id(&snap_dir)?;
        let st = State {
            objects: ObjectStore::new(snap_dir.clone()),
            refs: Refs::new(&snap_dir),
            snap_dir,
            paths,
            device,
            read_only,
            skipped: std::sync::Mutex::default(),
        };
        let mut report = if read_only {
            RecoveryReport::default()
        } else {
            st.recover_leftovers()?
        };
        // A corrupt session descriptor (a torn write, a crash of the terminal) is quarantined
        // and its last good version put back before anything else reads it.
        if !read_only
            && st.refs.get(store::refs::HEAD)?.is_some()
            && !st.corrupt_descriptors(true)?.is_empty()
        {
            match StoreLock::acquire(&st.snap_dir, "descriptor repair", std::time::Duration::ZERO) {
                Ok(_lock) => report.quarantined = st.repair_descriptors(true)?,
                Err(Error::Locked { .. }) => report.skipped_busy = true,
                Err(e) => return Err(e),
            }
        }
        Ok((st, report))
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

    /// Takes the store lock for a mutating operation.
    ///
    /// # Errors
    /// [`Error::Locked`] after `SHELLDONE_LOCK_TIMEOUT`; [`Error::ReadOnly`].
    pub fn lock(&self, what: &str) -> Result<StoreLock> {
        if self.read_only {
            return Err(Error::ReadOnly(self.snap_dir.clone()));
        }
        StoreLock::acquire(&self.snap_dir, what, store::lock::default_timeout())
    }

    /// The live layout.
    #[must_use]
    pub fn layout(&self) -> snapshot::Layout {
        snapshot::Layout::live(&self.paths.config_dir, &self.paths.state_dir)
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

    fn statcache_path(&self) -> PathBuf {
        self.snap_dir.join("statcache")
    }
}

fn check_format(dir: &Path) -> Result<bool> {
    let path = dir.join("FORMAT");
    let want = format!("shelldone-store {}.{}\n", STORE_FORMAT.0, STORE_FORMAT.1);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let v = s.trim().strip_prefix("shelldone-store ").unwrap_or("");
            let (maj, min) = v.split_once('.').unwrap_or(("", ""));
            let (Ok(maj), Ok(min)) = (maj.parse::<u32>(), min.parse::<u32>()) else {
                return Err(Error::Invalid(format!(
                    "{} is corrupt: {:?}",
                    path.display(),
                    s
                )));
            };
            if maj > STORE_FORMAT.0 {
                return Err(Error::NewerStore {
                    path: dir.to_path_buf(),
                    found: format!("{maj}.{min}"),
                    supported: format!("{}.{}", STORE_FORMAT.0, STORE_FORMAT.1),
                });
            }
            if maj < STORE_FORMAT.0 {
                // Under the store lock, so that no other process works on the store while its
                // format changes; another process may have migrated it while we waited.
                let _lock =
                    StoreLock::acquire(dir, "store migration", store::lock::default_timeout())?;
                let (now, _) = shelldone_migrations::read_format(dir)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                if now < STORE_FORMAT.0 {
                    shelldone_migrations::migrate(dir, now, STORE_FORMAT.0)
                        .map_err(|e| Error::Invalid(e.to_string()))?;
                }
            }
            Ok(maj == STORE_FORMAT.0 && min > STORE_FORMAT.1)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            store::durable::write_atomic(&path, want.as_bytes())?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn device_id(dir: &Path) -> Result<String> {
    let path = dir.join("device");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_owned();
        if store::refs::check_name(&s).is_ok() && !s.contains('/') {
            return Ok(s);
        }
    }
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
    let id = format!("{host}-{:08x}", rand::random::<u32>());
    store::durable::write_atomic(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}
