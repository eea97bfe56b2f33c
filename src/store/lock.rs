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
                        let holder = std::fs::read_to_string(dir.join("lock.owner"))
                            .map(|s| format!(" ({})", s.trim()))
                            .unwrap_or_default();
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

/// The lock timeout: `SHELLDONE_LOCK_TIMEOUT` seconds, default 60.
#[must_use]
pub fn default_timeout() -> Duration {
    std::env::var("SHELLDONE_LOCK_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(Duration::from_secs(60))
}
