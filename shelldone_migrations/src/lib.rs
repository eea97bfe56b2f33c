//! Ordered, idempotent, crash-safe migrations between shelldone store format versions.
//!
//! A store's version is the first line of `snapshots/FORMAT`: `shelldone-store <major>.<minor>`.
//! A binary opens stores of its own major (a newer minor read-only) and upgrades an older major
//! here, one step per major, before anything else touches the store. Each step carries whatever
//! frozen knowledge of the format it reads that it needs, so a migration keeps working after
//! the main code moves on. Derived data (the stat cache) is never migrated, only rebuilt.
//!
//! | step | what changes | what the step does |
//! |---|---|---|
//! | 1 → 2 | packs and indexes may be version 2 (blocks: many small objects in one zstd frame, SPEC §7.2); refs may live in `snapshots/packed-refs`; a version-1 binary can read neither | rewrites `FORMAT`; version-1 packs, loose objects, loose refs and logs stay as they are (a version-2 reader reads them), so the step is one atomic file replace |

use std::fmt;
use std::io::Write;
use std::path::Path;

pub mod descriptor;

/// A store format version, `(major, minor)`: the one line of `snapshots/FORMAT`, shared by the
/// code that opens a store and the migrations that upgrade it.
///
/// A binary that writes version `M.m` reads and writes stores `M.x` for `x <= m`, opens `M.x`
/// for `x > m` read-only (a newer minor only adds what an older reader may ignore), refuses a
/// newer major, and migrates an older major (see [`StoreVersion::access`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreVersion {
    /// Changes that an older reader cannot read.
    pub major: u32,
    /// Changes that an older reader can read but must not write.
    pub minor: u32,
}

/// What a binary may do with a store of another version (see [`StoreVersion::access`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Same major, same or older minor: read and write.
    ReadWrite,
    /// Same major, newer minor: read only.
    ReadOnly,
    /// Older major: [`migrate`] first.
    Migrate,
    /// Newer major: refuse the store.
    Refuse,
}

/// `FORMAT` does not hold `shelldone-store <major>.<minor>`; the message says what it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseVersionError(String);

impl StoreVersion {
    /// The version `major.minor`.
    #[must_use]
    pub const fn new(major: u32, minor: u32) -> Self {
        StoreVersion { major, minor }
    }

    /// Parses the contents of `FORMAT`: `shelldone-store <major>.<minor>`, surrounding white
    /// space allowed.
    ///
    /// # Errors
    /// [`ParseVersionError`] for bytes that are not UTF-8 or not that line.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseVersionError> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| ParseVersionError("not UTF-8".to_owned()))?;
        text.trim()
            .strip_prefix("shelldone-store ")
            .and_then(|v| v.split_once('.'))
            .and_then(|(a, b)| Some(StoreVersion::new(a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| {
                ParseVersionError(format!(
                    "not 'shelldone-store <major>.<minor>': {:?}",
                    text.chars().take(80).collect::<String>()
                ))
            })
    }

    /// The contents of `FORMAT` for this version, newline included.
    #[must_use]
    pub fn format_line(self) -> String {
        format!("shelldone-store {self}\n")
    }

    /// What a binary that writes version `self` may do with a store at version `found`.
    #[must_use]
    pub fn access(self, found: StoreVersion) -> Access {
        match (found.major.cmp(&self.major), found.minor > self.minor) {
            (std::cmp::Ordering::Greater, _) => Access::Refuse,
            (std::cmp::Ordering::Less, _) => Access::Migrate,
            (std::cmp::Ordering::Equal, true) => Access::ReadOnly,
            (std::cmp::Ordering::Equal, false) => Access::ReadWrite,
        }
    }
}

impl fmt::Display for StoreVersion {
    /// `major.minor`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A migration failed or is not possible.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// No step leads from `from` to `to`.
    #[error("no migration from store format {from} to {to}")]
    NoPath {
        /// Version found.
        from: u32,
        /// Version wanted.
        to: u32,
    },
    /// The store is not what the step expects (it was changed by something else).
    #[error("cannot migrate {path}: {why}")]
    Unexpected {
        /// The file in question.
        path: String,
        /// What was found.
        why: String,
    },
    /// An I/O error; the store is left at the version it had.
    #[error("migrating {path}: {source}")]
    Io {
        /// The file in question.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// One step: migrates a store at `dir` (its `snapshots/` dir) from `from()` to `from() + 1`.
/// A step must be idempotent and crash-safe: killed at any moment, the store is left readable at
/// the old or the new version, and running the step again finishes it.
pub trait Step {
    /// The version this step reads.
    fn from(&self) -> u32;
    /// Runs the step.
    ///
    /// # Errors
    /// Any failure; the store must be left readable by the old version.
    fn run(&self, dir: &Path) -> Result<(), MigrationError>;
}

/// The registered steps, in order.
#[must_use]
pub fn steps() -> Vec<Box<dyn Step>> {
    vec![Box::new(V1ToV2)]
}

/// Migrates a store from major version `from` to `to`.
///
/// # Errors
/// [`MigrationError::NoPath`] when a step is missing; any step's error.
pub fn migrate(dir: &Path, from: u32, to: u32) -> Result<(), MigrationError> {
    let steps = steps();
    let mut v = from;
    while v < to {
        let step = steps
            .iter()
            .find(|s| s.from() == v)
            .ok_or(MigrationError::NoPath { from, to })?;
        step.run(dir)?;
        v += 1;
    }
    Ok(())
}

/// Reads the version in `FORMAT` in `dir`.
///
/// # Errors
/// I/O errors, or a `FORMAT` that is not `shelldone-store <major>.<minor>`.
pub fn read_format(dir: &Path) -> Result<StoreVersion, MigrationError> {
    let path = dir.join("FORMAT");
    let bytes = std::fs::read(&path).map_err(|source| MigrationError::Io {
        path: path.display().to_string(),
        source,
    })?;
    StoreVersion::parse(&bytes).map_err(|e| MigrationError::Unexpected {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// Replaces `FORMAT` in `dir` atomically and durably: temp file, fsync, rename, fsync dir.
///
/// # Errors
/// I/O errors; `FORMAT` then still holds the old version.
pub fn write_format(dir: &Path, version: StoreVersion) -> Result<(), MigrationError> {
    let path = dir.join("FORMAT");
    let io = |source| MigrationError::Io {
        path: path.display().to_string(),
        source,
    };
    // The prefix shelldone's recovery removes, should a crash leave the temp file behind.
    let tmp = dir.join(format!(".shelldone-tmp.FORMAT.{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(version.format_line().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io)
}

/// 1 → 2: version-2 packs may hold blocks and refs may be packed. Nothing already stored
/// changes, so the step only records the new version; from then on a version-1 binary refuses
/// the store (newer major) instead of missing every object in a block pack and every packed ref.
struct V1ToV2;

impl Step for V1ToV2 {
    fn from(&self) -> u32 {
        1
    }

    fn run(&self, dir: &Path) -> Result<(), MigrationError> {
        match read_format(dir)? {
            StoreVersion { major: 1, .. } => write_format(dir, StoreVersion::new(2, 0)),
            StoreVersion { major: 2, .. } => Ok(()), // already done (a crash after the rename)
            found => Err(MigrationError::Unexpected {
                path: dir.join("FORMAT").display().to_string(),
                why: format!("expected version 1, found {found}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(version: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("FORMAT"), version).expect("write FORMAT");
        d
    }

    #[test]
    fn v1_to_v2_rewrites_format_and_is_idempotent() {
        let d = store("shelldone-store 1.0\n");
        migrate(d.path(), 1, 2).expect("migrates");
        assert_eq!(
            read_format(d.path()).expect("format"),
            StoreVersion::new(2, 0)
        );
        // Running the step again (a crash after the rename, then a restart) changes nothing.
        V1ToV2.run(d.path()).expect("idempotent");
        assert_eq!(
            std::fs::read_to_string(d.path().join("FORMAT")).expect("read"),
            "shelldone-store 2.0\n"
        );
        let left: Vec<_> = std::fs::read_dir(d.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("FORMAT")],
            "no temp file left"
        );
    }

    #[test]
    fn unexpected_versions_are_refused() {
        let d = store("shelldone-store 3.1\n");
        let err = V1ToV2.run(d.path()).expect_err("3.1 is not for this step");
        assert!(err.to_string().contains("found 3.1"), "{err}");
        let d = store("garbage");
        assert!(read_format(d.path()).is_err());
        let d = store("shelldone-store 0.9\n");
        assert!(matches!(
            migrate(d.path(), 0, 2),
            Err(MigrationError::NoPath { from: 0, to: 2 })
        ));
        assert_eq!(
            std::fs::read_to_string(d.path().join("FORMAT")).expect("read"),
            "shelldone-store 0.9\n",
            "a failed migration leaves the store as it was"
        );
    }

    #[test]
    fn format_line_parses_back_and_damage_is_named() {
        let v = StoreVersion::new(2, 0);
        assert_eq!(v.format_line(), "shelldone-store 2.0\n");
        assert_eq!(StoreVersion::parse(v.format_line().as_bytes()), Ok(v));
        assert_eq!(
            StoreVersion::parse(b"  shelldone-store 10.3 \n"),
            Ok(StoreVersion::new(10, 3))
        );
        assert_eq!(
            StoreVersion::parse(b"shelldone-store \xff.0\n")
                .expect_err("bytes")
                .to_string(),
            "not UTF-8"
        );
        for bad in [
            "",
            "shelldone-rtore 2.0",
            "shelldone-store 2",
            "shelldone-store 2.x",
        ] {
            let err = StoreVersion::parse(bad.as_bytes())
                .expect_err(bad)
                .to_string();
            assert!(
                err.starts_with("not 'shelldone-store <major>.<minor>': "),
                "{err}"
            );
        }
    }

    #[test]
    fn newer_major_is_refused_newer_minor_read_only_older_major_migrated() {
        let v = StoreVersion::new(2, 1);
        assert_eq!(v.access(StoreVersion::new(3, 0)), Access::Refuse);
        assert_eq!(v.access(StoreVersion::new(2, 2)), Access::ReadOnly);
        assert_eq!(v.access(StoreVersion::new(2, 1)), Access::ReadWrite);
        assert_eq!(v.access(StoreVersion::new(2, 0)), Access::ReadWrite);
        assert_eq!(v.access(StoreVersion::new(1, 9)), Access::Migrate);
        assert!(StoreVersion::new(1, 9) < StoreVersion::new(2, 0));
        assert!(StoreVersion::new(2, 0) < StoreVersion::new(2, 1));
    }
}
