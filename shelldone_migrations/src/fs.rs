//! The writes a migration makes, behind one small trait.
//!
//! Every step, the restore points and `undo` create, sync, rename and remove files only through
//! a [`WriteFs`] they are given, never through `std::fs` directly (reads need no durability and
//! stay plain). [`StdFs`] is the plain implementation; shelldone passes its own durable layer
//! (`shelldone::store::durable::Durable`), which its power-loss simulator observes, so a power
//! cut can be simulated at every sync of a migration without this crate knowing the store's
//! types.
//!
//! An implementation must do what the plain system calls do: a file written by
//! [`WriteFs::write_file`] has its data and metadata durable when the call returns; a rename,
//! a create or a removal is durable once its directory was given to [`WriteFs::sync_dir`].
//! The sync methods are `#[track_caller]`, so that an implementation that records where syncs
//! are made sees the line of the step, not its own.

use std::fs::Permissions;
use std::io::Write;
use std::path::Path;

/// The file system operations a migration writes with (see the module docs).
pub trait WriteFs {
    /// Creates (or truncates) `path`, writes `data`, sets `permissions` when given, and syncs
    /// the file's data and metadata.
    ///
    /// # Errors
    /// I/O errors; the file may then exist with any part of `data`.
    #[track_caller]
    fn write_file(
        &self,
        path: &Path,
        data: &[u8],
        permissions: Option<Permissions>,
    ) -> std::io::Result<()>;

    /// Renames `from` to `to` (atomic within one filesystem).
    ///
    /// # Errors
    /// I/O errors.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;

    /// Unlinks a file.
    ///
    /// # Errors
    /// I/O errors.
    fn remove_file(&self, path: &Path) -> std::io::Result<()>;

    /// Removes a directory and everything in it.
    ///
    /// # Errors
    /// I/O errors.
    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()>;

    /// Creates a directory.
    ///
    /// # Errors
    /// I/O errors (an existing one included).
    fn create_dir(&self, path: &Path) -> std::io::Result<()>;

    /// Creates a directory and its missing parents (syncing nothing).
    ///
    /// # Errors
    /// I/O errors.
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()>;

    /// Makes the entries of `dir` durable (renames, creations and removals in it).
    ///
    /// # Errors
    /// I/O errors.
    #[track_caller]
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// The plain system calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl WriteFs for StdFs {
    fn write_file(
        &self,
        path: &Path,
        data: &[u8],
        permissions: Option<Permissions>,
    ) -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        f.write_all(data)?;
        if let Some(p) = permissions {
            f.set_permissions(p)?;
        }
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn create_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }

    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}
