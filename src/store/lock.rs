//! The store lock: an OS advisory lock (`flock`) on `snapshots/lock`.
//!
//! The kernel drops the lock when the holder dies, however it dies, so a crashed process can
//! never leave the store locked. The holder writes its pid and command into `lock.owner` only so
//! that a waiting process can say who it waits for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs_err as fs;

use crate::error::{Error, Result};

/// A held exclusive lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    file: std::fs::File,
    path: PathBuf,
}

impl StoreLock {
    /// Takes the exclusive lock, waiting up to `timeout`.
    ///
    /// # Errors
    /// [`Error::Locked`] after the timeout; I/O errors.
    pub fn acquire(dir: &Path, what: &str, timeout: Duration) -> Result<StoreLock> {
        let path = dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?
            .into_parts()
            .0;
        let start = Instant::now();
        let mut delay = Duration::from_millis(2);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= timeout {
                        let holder = describe_holder(dir, &file);
                        return Err(Error::Locked {
                            path,
                            holder,
                            waited_s: start.elapsed().as_secs(),
                        });
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::Io(e)),
            }
        }
        // Informational only; a stale owner file is harmless because the flock is the truth.
        let _ = std::fs::write(
            dir.join("lock.owner"),
            format!("pid {} running {what}", std::process::id()),
        );
        Ok(StoreLock { file, path })
    }

    /// The lock file path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Who holds the lock on `file`, for the message of [`Error::Locked`]: the kernel's list of
/// locks (`/proc/locks`) gives the holder's pid, so another shelldone process (named with what
/// its `lock.owner` says it runs) is told from another program that locked the file, such as
/// `flock(1)` in a script. Where the kernel does not say, `lock.owner` is all there is.
fn describe_holder(dir: &Path, file: &std::fs::File) -> String {
    let owner = std::fs::read_to_string(dir.join("lock.owner"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let Some(pid) = kernel_holder(file) else {
        return match owner {
            Some(o) => format!("another process (its lock.owner says: {o})"),
            None => "another process".to_owned(),
        };
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if comm.starts_with("shelldone") {
        match owner {
            Some(o) if o.starts_with(&format!("pid {pid} ")) => {
                format!("another shelldone process ({o})")
            }
            _ => format!("another shelldone process (pid {pid})"),
        }
    } else {
        let name = if comm.is_empty() { "?" } else { comm.as_str() };
        format!(
            "pid {pid} ({name}), which is not shelldone: another program locked this file (flock(1) in a script, for instance); stop it or wait for it"
        )
    }
}

/// The pid the kernel lists as holding a `flock` on `file`, from `/proc/locks`.
fn kernel_holder(file: &std::fs::File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 3383 fe:00:10155853 0 EOF`; a waiter's line has `->`.
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

/// The lock timeout: `SHELLDONE_LOCK_TIMEOUT` seconds, default 60.
#[must_use]
pub fn default_timeout() -> Duration {
    std::env::var("SHELLDONE_LOCK_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(Duration::from_secs(60))
}
