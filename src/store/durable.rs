//! Durability primitives. See docs/safety.md for the order of syncs and renames.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fs_err as fs;

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

/// fsyncs a directory so that renames and unlinks inside it are durable.
///
/// # Errors
/// I/O errors (with the path).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let f = fs::File::open(dir)?;
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
#[cfg(target_os = "linux")]
pub fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    let f = fs::File::open(path)?;
    rustix::fs::syncfs(&f).map_err(std::io::Error::from)
}

/// Non-Linux fallback: a global sync.
#[cfg(not(target_os = "linux"))]
pub fn sync_filesystem(_path: &Path) -> std::io::Result<()> {
    rustix::fs::sync();
    Ok(())
}

/// Writes `data` to `target` atomically: temp file in the same dir → fsync → rename → fsync dir.
///
/// # Errors
/// I/O errors; on error the target is untouched and the temp file removed.
pub fn write_atomic(target: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = tmp_path(dir);
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, target)?;
        sync_dir(dir)
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
