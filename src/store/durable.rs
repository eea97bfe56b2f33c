//! Durability: the one place through which the store's writes of durable significance go.
//! See docs/safety.md for the order of writes, syncs and renames each operation follows.
//!
//! Object files, packs and their indexes, refs, `packed-refs`, reflog appends, `FORMAT`,
//! `device`, the stat cache, the restore intent and the files a restore makes live are created,
//! synced, renamed and removed with these functions:
//!
//! | what | functions |
//! |---|---|
//! | create and write a file | [`create`], [`create_new_rw`], [`open_append`], [`symlink`] |
//! | make a file's data durable | [`sync_data`], [`sync_all`] |
//! | change a directory | [`rename`], [`remove_file`], [`remove_dir`], [`remove_dir_all`], [`create_dir`], [`create_dir_all`], [`create_dir_all_durable`] |
//! | make a directory's entries durable | [`sync_dir`] |
//! | make everything on a filesystem durable | [`sync_filesystem`] |
//! | all of the above for one small file | [`write_atomic`] |
//! | the same, for a migration (`shelldone_migrations::WriteFs`) | [`Durable`] |
//!
//! In a normal build every function is the plain system call (through `fs-err`, so that errors
//! name their path): nothing is added to the I/O path. Built with the `power-loss-sim` feature
//! (only the integration tests enable it), a test may install a simulated backend over a
//! directory (`sim::PowerLossSim`, in `src/store/durable/sim.rs`): it keeps the image that
//! would survive a power cut, can fail the n-th sync as if the power went out there, and can
//! then rewrite the directory to what survives. Everything outside an installed directory still
//! goes to the plain calls. In that build the sync functions are `#[track_caller]`, so that the
//! simulator knows each call site (and can leave one out).
//!
//! Why these and not everything: reads never need to be durable, and the lock file and
//! `lock.owner` (src/store/lock.rs) hold nothing that must survive (the lock is an `flock`, the
//! owner line is informational). Startup recovery and repair in other modules still unlink and
//! rename some files with plain calls; their syncs come here, which is what decides what
//! survives (see `sim`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fs_err as fs;

#[cfg(feature = "power-loss-sim")]
pub mod sim;

/// Prefix of every temporary file shelldone creates next to a file it is about to replace.
/// Startup recovery deletes these; the snapshot walk never includes them.
pub const TMP_PREFIX: &str = ".shelldone-tmp.";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temp path in `dir` (same directory, so a rename onto the target is atomic).
#[must_use]
pub fn tmp_path(dir: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TMP_PREFIX}{}.{n}", std::process::id()))
}

/// Where a sync was called from: with the simulator, the call site (the simulator counts syncs
/// by site and can leave one site out, to show what that sync guards); otherwise nothing.
#[cfg(feature = "power-loss-sim")]
type Site = &'static std::panic::Location<'static>;
#[cfg(not(feature = "power-loss-sim"))]
#[derive(Clone, Copy)]
struct Site;

/// The caller's call site (through every `#[track_caller]` function above it).
#[inline]
#[cfg_attr(feature = "power-loss-sim", track_caller)]
fn site() -> Site {
    #[cfg(feature = "power-loss-sim")]
    return std::panic::Location::caller();
    #[cfg(not(feature = "power-loss-sim"))]
    Site
}

/// With the simulator: `Err` once the simulated power of the directory holding `path` is out.
#[inline]
fn alive(path: &Path) -> std::io::Result<()> {
    #[cfg(feature = "power-loss-sim")]
    sim::alive(path)?;
    let _ = path;
    Ok(())
}

/// Creates (or truncates) a file for writing.
///
/// # Errors
/// I/O errors (with the path).
pub fn create(path: &Path) -> std::io::Result<fs::File> {
    alive(path)?;
    fs::File::create(path)
}

/// Creates a new file (failing if it exists), open for reading and writing.
///
/// # Errors
/// I/O errors (with the path).
pub fn create_new_rw(path: &Path) -> std::io::Result<fs::File> {
    alive(path)?;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// Opens a file for appending (and reading), creating it if needed; the `bool` says whether it
/// was created (its directory entry is then not durable until the directory is synced).
///
/// # Errors
/// I/O errors (with the path).
pub fn open_append(path: &Path) -> std::io::Result<(fs::File, bool)> {
    alive(path)?;
    let open = |create_new: bool| {
        fs::OpenOptions::new()
            .append(true)
            .read(true)
            .create_new(create_new)
            .open(path)
    };
    match open(false) {
        Ok(f) => Ok((f, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match open(true) {
            Ok(f) => Ok((f, true)),
            // Created by someone else between the two calls.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((open(false)?, false)),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Creates a symlink `link` pointing at `target`.
///
/// # Errors
/// I/O errors (naming the link).
pub fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    alive(link)?;
    std::os::unix::fs::symlink(target, link).map_err(|e| {
        std::io::Error::new(e.kind(), format!("{e} (creating link {})", link.display()))
    })
}

/// Makes a file's data durable (`fdatasync`). `path` names the file in errors (and lets the
/// simulator find the directory it belongs to).
///
/// # Errors
/// I/O errors.
#[inline]
#[cfg_attr(feature = "power-loss-sim", track_caller)]
pub fn sync_data(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    sync_file_at(file, path, false, site())
}

/// Makes a file's data and metadata durable (`fsync`).
///
/// # Errors
/// I/O errors.
#[inline]
#[cfg_attr(feature = "power-loss-sim", track_caller)]
pub fn sync_all(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    sync_file_at(file, path, true, site())
}

#[inline]
fn sync_file_at(file: &std::fs::File, path: &Path, all: bool, site: Site) -> std::io::Result<()> {
    #[cfg(feature = "power-loss-sim")]
    if let Some(r) = sim::sync_file(file, path, site) {
        return r;
    }
    let _ = site;
    if all {
        file.sync_all()
    } else {
        file.sync_data()
    }
    .map_err(|e| with_path(e, path))
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{e} (syncing {})", path.display()))
}

/// Renames `from` to `to` (atomic within one filesystem; durable once both directories are
/// synced).
///
/// # Errors
/// I/O errors (with the paths).
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    alive(to)?;
    fs::rename(from, to)
}

/// Unlinks a file (durable once its directory is synced).
///
/// # Errors
/// I/O errors (with the path).
pub fn remove_file(path: &Path) -> std::io::Result<()> {
    alive(path)?;
    fs::remove_file(path)
}

/// Removes an empty directory.
///
/// # Errors
/// I/O errors (with the path).
pub fn remove_dir(path: &Path) -> std::io::Result<()> {
    alive(path)?;
    fs::remove_dir(path)
}

/// Removes a directory and everything in it.
///
/// # Errors
/// I/O errors (with the path).
pub fn remove_dir_all(path: &Path) -> std::io::Result<()> {
    alive(path)?;
    fs::remove_dir_all(path)
}

/// Creates a directory (its entry is durable once its parent is synced).
///
/// # Errors
/// I/O errors (with the path).
pub fn create_dir(path: &Path) -> std::io::Result<()> {
    alive(path)?;
    fs::create_dir(path)
}

/// Creates a directory and its missing parents, syncing nothing (the caller syncs the parent of
/// what it creates, or the directory is scratch space such as `staging/`).
///
/// # Errors
/// I/O errors (with the path).
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    alive(path)?;
    fs::create_dir_all(path)
}

/// Creates a directory and its missing parents, and makes each one it created durable in its
/// parent (the parent is synced). Costs nothing when the directory exists: for the store's
/// folders (`objects/`, `packs/`, `refs/…`, `logs/`), created once, whose loss would take every
/// file later written and synced inside them.
///
/// # Errors
/// I/O errors (with the path).
#[cfg_attr(feature = "power-loss-sim", track_caller)]
pub fn create_dir_all_durable(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let site = site();
    let mut missing = Vec::new();
    let mut p = path;
    while !p.as_os_str().is_empty() && !p.is_dir() {
        missing.push(p);
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        match create_dir(d) {
            Ok(()) => sync_dir_at(
                d.parent()
                    .filter(|q| !q.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
                site,
            )?,
            // Created meanwhile by another thread or process (its creator syncs it).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// fsyncs a directory so that renames, creations and unlinks inside it are durable.
///
/// # Errors
/// I/O errors (with the path).
#[inline]
#[cfg_attr(feature = "power-loss-sim", track_caller)]
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    sync_dir_at(dir, site())
}

#[inline]
fn sync_dir_at(dir: &Path, site: Site) -> std::io::Result<()> {
    let f = fs::File::open(dir)?;
    #[cfg(feature = "power-loss-sim")]
    if let Some(r) = sim::sync_dir(f.file(), dir, site) {
        return r;
    }
    let _ = site;
    f.sync_all()
}

/// Flushes everything written on the filesystem holding `path` (Linux `syncfs`).
///
/// One `syncfs` after writing many temp files costs about as much as the data itself, where an
/// fsync per file costs a journal commit each; callers use it only between "all temp files
/// written" and "renames begin", which is the ordering that matters.
///
/// # Errors
/// I/O errors.
#[cfg_attr(feature = "power-loss-sim", track_caller)]
pub fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    let f = fs::File::open(path)?;
    #[cfg(feature = "power-loss-sim")]
    if let Some(r) = sim::sync_filesystem(path, site()) {
        return r;
    }
    syncfs(f.file())
}

#[cfg(target_os = "linux")]
fn syncfs(f: &std::fs::File) -> std::io::Result<()> {
    rustix::fs::syncfs(f).map_err(std::io::Error::from)
}

/// Non-Linux fallback: a global sync.
#[cfg(not(target_os = "linux"))]
fn syncfs(_f: &std::fs::File) -> std::io::Result<()> {
    rustix::fs::sync();
    Ok(())
}

/// Writes `data` to `target` atomically: temp file in the same dir → fsync → rename → fsync dir.
///
/// # Errors
/// I/O errors; on error the target is untouched and the temp file removed.
#[cfg_attr(feature = "power-loss-sim", track_caller)]
pub fn write_atomic(target: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_with(target, |w| w.write_all(data))
}

/// [`write_atomic`] of what `fill` writes, through a 64 KiB buffer: a large file is never
/// held whole in memory.
///
/// # Errors
/// I/O errors, and `fill`'s.
pub fn write_atomic_with(
    target: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let site = site();
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = tmp_path(dir);
    let res = (|| {
        let mut f = create(&tmp)?;
        {
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, &mut f);
            fill(&mut w)?;
            w.flush()?;
        }
        sync_file_at(f.file(), &tmp, true, site)?;
        drop(f);
        rename(&tmp, target)?;
        sync_dir_at(dir, site)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// True when `name` is one of our temp files.
#[must_use]
pub fn is_tmp_name(name: &[u8]) -> bool {
    name.starts_with(TMP_PREFIX.as_bytes())
}

/// The migrations' [`shelldone_migrations::WriteFs`] over this module, so that a migration's
/// writes are the store's durable writes (and the power-loss simulator sees each of its syncs,
/// at the step's own line).
#[derive(Debug, Clone, Copy, Default)]
pub struct Durable;

impl shelldone_migrations::WriteFs for Durable {
    fn write_file(
        &self,
        path: &Path,
        data: &[u8],
        permissions: Option<std::fs::Permissions>,
    ) -> std::io::Result<()> {
        let site = site();
        let mut f = create(path)?;
        f.write_all(data)?;
        if let Some(p) = permissions {
            f.set_permissions(p)?;
        }
        sync_file_at(f.file(), path, true, site)
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        remove_dir_all(path)
    }

    fn create_dir(&self, path: &Path) -> std::io::Result<()> {
        create_dir(path)
    }

    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        create_dir_all(path)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        sync_dir_at(dir, site())
    }
}
