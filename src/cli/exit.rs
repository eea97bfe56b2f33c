//! The exit codes of the command line: the one table (docs/cli.md, "Exit codes", is checked
//! against it by a test). The library classifies its errors ([`ErrorKind`]); only this file
//! turns a class into a number.

use crate::{Error, ErrorKind};

/// Success.
pub const SUCCESS: u8 = 0;
/// An I/O or encoding error.
pub const IO: u8 = 1;
/// Usage: bad arguments, revision, configuration (also clap's syntax errors).
pub const USAGE: u8 = 2;
/// Data: a missing or corrupt object or store file; `state check` found a problem.
pub const DATA: u8 = 3;
/// Contention: the store lock was not obtained in time, or a ref changed concurrently.
pub const CONTENTION: u8 = 4;
/// A remote or sync failure.
pub const REMOTE: u8 = 5;
/// The store was written by a newer shelldone.
pub const NEWER_STORE: u8 = 6;
/// Not an error: a `sync pull` finished but left conflicts for the user.
pub const CONFLICTS: u8 = 7;
/// The vault's keys cannot be used (wrong passphrase or identity, no keyring entry, no keys
/// yet, a revoked device), or a secret was not encrypted to this device.
pub const KEY: u8 = 8;
/// A bug in shelldone (a broken invariant): `EX_SOFTWARE` of sysexits.h.
pub const INTERNAL: u8 = 70;
/// Standard output was closed before everything was written (`shelldone log | head -1`): the
/// code a shell reports for a process killed by `SIGPIPE` (128 + 13), as git does.
pub const BROKEN_PIPE: u8 = 141;

/// The exit code of an error class.
#[must_use]
pub const fn of_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Io => IO,
        ErrorKind::Usage => USAGE,
        ErrorKind::Data => DATA,
        ErrorKind::Contention => CONTENTION,
        ErrorKind::Remote => REMOTE,
        ErrorKind::NewerStore => NEWER_STORE,
        ErrorKind::Key => KEY,
        ErrorKind::Internal => INTERNAL,
    }
}

/// The exit code of an error.
#[must_use]
pub fn of(e: &Error) -> u8 {
    of_kind(e.kind())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    use objects_format::{Kind, ObjectId};

    use super::*;

    /// The name of a variant: a `match` without a wildcard, so a new variant cannot be added
    /// without a name here (and then a row in docs/cli.md).
    fn name(e: &Error) -> &'static str {
        match e {
            Error::Io(_) => "Io",
            Error::File { .. } => "File",
            Error::MissingObject { .. } => "MissingObject",
            Error::CorruptObject { .. } => "CorruptObject",
            Error::WrongKind { .. } => "WrongKind",
            Error::Encode(_) => "Encode",
            Error::UnknownRevision { .. } => "UnknownRevision",
            Error::AmbiguousPrefix { .. } => "AmbiguousPrefix",
            Error::NoSnapshot => "NoSnapshot",
            Error::RefConflict { .. } => "RefConflict",
            Error::BadRefName(_) => "BadRefName",
            Error::Locked { .. } => "Locked",
            Error::NewerStore { .. } => "NewerStore",
            Error::NewerFormat { .. } => "NewerFormat",
            Error::ReadOnly(_) => "ReadOnly",
            Error::UnknownSession(..) => "UnknownSession",
            Error::UnsafePath(_) => "UnsafePath",
            Error::Remote { .. } => "Remote",
            Error::EmptiedRoot { .. } => "EmptiedRoot",
            Error::DeviceIdInUse { .. } => "DeviceIdInUse",
            Error::UnrelatedHistory { .. } => "UnrelatedHistory",
            Error::CorruptFile { .. } => "CorruptFile",
            Error::UnknownRemote(_) => "UnknownRemote",
            Error::UnknownConflict(_) => "UnknownConflict",
            Error::AmbiguousConflict { .. } => "AmbiguousConflict",
            Error::UnknownPath { .. } => "UnknownPath",
            Error::TooLarge { .. } => "TooLarge",
            Error::BadRecord(_) => "BadRecord",
            Error::Migration { .. } => "Migration",
            Error::Config { .. } => "Config",
            Error::Usage(_) => "Usage",
            Error::VaultLocked(_) => "VaultLocked",
            Error::NotRecipient { .. } => "NotRecipient",
            Error::BackupDamaged { .. } => "BackupDamaged",
            Error::BackupKey { .. } => "BackupKey",
            Error::BackupSignature { .. } => "BackupSignature",
            Error::Internal(_) => "Internal",
        }
    }

    /// One error of every variant (the count is checked against the names in `name`).
    fn one_of_each() -> Vec<Error> {
        let id = ObjectId::compute(Kind::Blob, b"x");
        let s = String::new;
        vec![
            Error::Io(std::io::Error::other("x")),
            Error::file(std::io::Error::other("x"), "writing", "x", "save"),
            Error::MissingObject { id },
            Error::CorruptObject { id, why: s() },
            Error::WrongKind {
                id,
                expected: Kind::Tree,
                found: "blob",
            },
            Error::Encode(objects_format::DecodeError::BadMagic),
            Error::UnknownRevision { rev: s(), why: s() },
            Error::AmbiguousPrefix {
                prefix: s(),
                candidates: Vec::new(),
            },
            Error::NoSnapshot,
            Error::RefConflict {
                name: s(),
                expected: s(),
                found: s(),
            },
            Error::BadRefName(s()),
            Error::Locked {
                path: PathBuf::new(),
                holder: s(),
                waited_s: 0,
            },
            Error::NewerStore {
                path: PathBuf::new(),
                found: s(),
                supported: s(),
            },
            Error::NewerFormat {
                what: s(),
                found: s(),
                supported: s(),
            },
            Error::ReadOnly(PathBuf::new()),
            Error::UnknownSession(s(), s()),
            Error::UnsafePath(s()),
            Error::remote("r", "x"),
            Error::EmptiedRoot {
                root: s(),
                path: PathBuf::new(),
                what: "is empty",
            },
            Error::DeviceIdInUse {
                remote: s(),
                device: s(),
                found: s(),
            },
            Error::UnrelatedHistory {
                device: s(),
                snapshot: s(),
            },
            Error::corrupt_file("x", "y"),
            Error::UnknownRemote(s()),
            Error::UnknownConflict(s()),
            Error::AmbiguousConflict {
                prefix: s(),
                candidates: vec![s(), s()],
            },
            Error::UnknownPath {
                path: s(),
                snapshot: s(),
            },
            Error::TooLarge {
                what: s(),
                size: 1,
                limit: 0,
            },
            Error::BadRecord(s()),
            Error::Migration {
                path: PathBuf::new(),
                source: shelldone_migrations::MigrationError::NoPath { from: 1, to: 2 },
            },
            Error::Config {
                file: PathBuf::new(),
                line: Some(1),
                why: s(),
            },
            Error::Usage(s()),
            Error::VaultLocked(s()),
            Error::NotRecipient {
                name: s(),
                device: s(),
            },
            Error::BackupDamaged {
                bundle: PathBuf::new(),
                why: s(),
            },
            Error::BackupKey {
                bundle: PathBuf::new(),
                why: s(),
            },
            Error::BackupSignature {
                bundle: PathBuf::new(),
                why: s(),
            },
            Error::Internal(s()),
        ]
    }

    /// docs/cli.md's "Exit codes" table: code → the variant names of its last column.
    fn documented() -> BTreeMap<u8, BTreeSet<String>> {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md"))
            .expect("docs/cli.md");
        let section = doc
            .split("\n## Exit codes\n")
            .nth(1)
            .expect("docs/cli.md has an '## Exit codes' section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut rows = BTreeMap::new();
        for line in section.lines().filter(|l| l.starts_with('|')) {
            let line = line.replace("\\|", "/"); // an escaped `|` inside a cell
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let Ok(code) = cells[0].parse::<u8>() else {
                continue; // the header and the separator
            };
            let names: BTreeSet<String> = cells
                .last()
                .expect("a row has cells")
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            assert!(
                rows.insert(code, names).is_none(),
                "code {code} has two rows"
            );
        }
        rows
    }

    #[test]
    fn docs_exit_code_table_matches_the_cli() {
        let doc = documented();
        let all = one_of_each();
        let names: BTreeSet<&str> = all.iter().map(name).collect();
        assert_eq!(names.len(), all.len(), "one error of each variant, once");
        // Every variant is documented in the row of its code, and nowhere else.
        let mut want: BTreeMap<u8, BTreeSet<String>> = [
            SUCCESS,
            IO,
            USAGE,
            DATA,
            CONTENTION,
            REMOTE,
            NEWER_STORE,
            CONFLICTS,
            KEY,
            INTERNAL,
            BROKEN_PIPE,
        ]
        .into_iter()
        .map(|c| (c, BTreeSet::new()))
        .collect();
        for e in &all {
            want.get_mut(&of(e))
                .expect("an error's code is in the table")
                .insert(name(e).to_owned());
        }
        assert_eq!(doc, want, "docs/cli.md 'Exit codes' vs src/cli/exit.rs");
    }

    #[test]
    fn retryable_is_what_a_later_try_can_fix() {
        let retry: BTreeSet<&str> = one_of_each()
            .iter()
            .filter(|e| e.retryable())
            .map(name)
            .collect();
        assert_eq!(retry, BTreeSet::from(["Locked", "RefConflict"]));
        let transient = Error::remote_from(
            "r",
            true,
            std::io::Error::from(std::io::ErrorKind::TimedOut),
        );
        assert!(transient.retryable());
        // The typed source is kept for programs (the daemon, a decorator).
        let src = std::error::Error::source(&transient).expect("a source");
        assert!(src.downcast_ref::<std::io::Error>().is_some());
        assert!(Error::Io(std::io::ErrorKind::ConnectionReset.into()).retryable());
        assert!(!Error::Io(std::io::ErrorKind::PermissionDenied.into()).retryable());
    }
}
