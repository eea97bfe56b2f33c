//! The library's error type: every variant carries what a person needs to act (path, id, ref).

use std::path::PathBuf;

use objects_format::{DecodeError, Kind, ObjectId};

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the state engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error; fs-err messages name the path.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An I/O error on one file, with what shelldone was doing to it: `writing /…/x.json
    /// (restore): No space left on device (os error 28)`.
    #[error("{op} {} ({during}): {source}", path.display())]
    File {
        /// The operation: `reading`, `writing`, `syncing`, `renaming`, …
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The command it happened in: `save`, `restore`, `gc`, `store write`, …
        during: &'static str,
        /// The error of the system call, kept for programs.
        #[source]
        source: std::io::Error,
    },
    /// An object is not in the store.
    #[error("object {id} is missing from the store; run 'shelldone state check'")]
    MissingObject {
        /// The missing id.
        id: ObjectId,
    },
    /// An object's bytes do not match its id, or do not decode.
    #[error("object {id} is corrupt: {why}; run 'shelldone state check'")]
    CorruptObject {
        /// The object id.
        id: ObjectId,
        /// What is wrong.
        why: String,
    },
    /// An object is of another kind than the reference to it says.
    #[error("object {id} is a {found}, expected a {}", expected.name())]
    WrongKind {
        /// The object id.
        id: ObjectId,
        /// The expected kind.
        expected: Kind,
        /// The kind found.
        found: &'static str,
    },
    /// Encoding failed (a bug or an invalid file name).
    #[error("cannot encode object: {0}")]
    Encode(#[from] DecodeError),
    /// A revision names nothing (docs/cli.md, "Revisions"); `why` says what was looked for.
    #[error("unknown revision '{rev}': {why}")]
    UnknownRevision {
        /// The revision as given.
        rev: String,
        /// Why it names nothing (outside the quotes, so the name is shown as typed).
        why: String,
    },
    /// A name that several things answer to: a snapshot id prefix, a session id (prefix), a
    /// device present on several remotes (docs/cli.md, "Revisions").
    #[error(
        "ambiguous revision '{prefix}': it matches {} names; give more characters or a full name:{}",
        candidates.len(),
        list_candidates(candidates)
    )]
    AmbiguousPrefix {
        /// The name given.
        prefix: String,
        /// Everything it matches (at least two).
        candidates: Vec<Candidate>,
    },
    /// There is no snapshot yet.
    #[error("no snapshot yet; run 'shelldone state save' first")]
    NoSnapshot,
    /// A compare-and-swap on a ref failed: someone else moved it.
    #[error("ref '{name}' was changed concurrently (expected {expected}, found {found})")]
    RefConflict {
        /// The ref.
        name: String,
        /// What we expected.
        expected: String,
        /// What was there.
        found: String,
    },
    /// An invalid ref name.
    #[error("invalid ref name '{0}'")]
    BadRefName(String),
    /// The store lock could not be taken in time.
    #[error(
        "the state store at {path} is locked by {holder}; waited {waited_s} s (set SHELLDONE_LOCK_TIMEOUT or state.lock_timeout to wait longer)"
    )]
    Locked {
        /// Lock file.
        path: PathBuf,
        /// Who holds it, e.g. "another shelldone process (pid 123 running state save)".
        holder: String,
        /// Seconds waited.
        waited_s: u64,
    },
    /// The store was written by a newer shelldone.
    #[error(
        "the state store at {path} has format {found}; this shelldone supports up to {supported}; upgrade shelldone"
    )]
    NewerStore {
        /// The store dir.
        path: PathBuf,
        /// Version found.
        found: String,
        /// Version supported.
        supported: String,
    },
    /// Something persisted (a remote's layout, a key record) was written by a newer shelldone:
    /// nothing was read from it or written to it.
    #[error("{what} is format {found}, this shelldone reads up to {supported}; upgrade shelldone")]
    NewerFormat {
        /// What it is (`remote origin`, `the device key record /…/device.json`).
        what: String,
        /// Version found.
        found: String,
        /// Newest version this binary reads.
        supported: String,
    },
    /// A store opened read-only was asked to write.
    #[error("the state store at {0} is read-only (written by a newer shelldone minor version)")]
    ReadOnly(PathBuf),
    /// A session id that does not exist.
    #[error("no session '{0}' in {1}")]
    UnknownSession(String, String),
    /// An unsafe path in a tree (e.g. from a hostile remote).
    #[error("unsafe path in snapshot: {0}")]
    UnsafePath(String),
    /// Remote/sync failure.
    #[error("remote '{remote}': {why}")]
    Remote {
        /// Remote name or URL.
        remote: String,
        /// What failed (with the messages of its sources, for people).
        why: String,
        /// The remote could not be reached for now (a timeout, a refused or reset connection,
        /// an unmounted directory remote): trying again later may succeed. False when the
        /// remote answered and what it said is wrong (hostile or corrupt data, a limit).
        transient: bool,
        /// The typed error of the remote's layer (e.g. `remote::gitmirror::GitError`), kept
        /// for programs: `std::error::Error::source` and downcasting reach it.
        #[source]
        source: Option<BoxError>,
    },
    /// A save would record a whole root as deleted (see `SaveOptions::allow_empty`).
    #[error(
        "refusing to save: {} ({root}/) {what}, but the last snapshot has files there; a wrong --config-dir/--state-dir or an unmounted disk would otherwise become a snapshot that deletes them everywhere. If you did empty it, save with --allow-empty", path.display()
    )]
    EmptiedRoot {
        /// The root (`config`, `state/sessions`, `state/journal`).
        root: String,
        /// Its live path.
        path: PathBuf,
        /// `is missing`, `is empty`, `is not a folder`.
        what: &'static str,
    },
    /// The remote's ref for this device was written by another store with the same device id.
    #[error(
        "remote '{remote}': its head for this device ({device}) is {found}, which is not in this store's history: another store uses the same device id (a copied or restored state folder?). Nothing was changed. Give this store its own name with 'shelldone device rename NEW-NAME', then sync again"
    )]
    DeviceIdInUse {
        /// The remote.
        remote: String,
        /// This device's id.
        device: String,
        /// The remote's value (hex).
        found: String,
    },
    /// A device's history shares no snapshot with this store's.
    #[error(
        "device {device}'s history (head {snapshot}) shares no snapshot with this store's: an unrelated store was pushed to this remote, or this store started on its own. Nothing was merged. To merge the two anyway: 'shelldone sync pull --allow-unrelated'"
    )]
    UnrelatedHistory {
        /// The other device.
        device: String,
        /// Its head (hex).
        snapshot: String,
    },
    /// A file of the store that is not an object (a ref, `packed-refs`, the reflog, `FORMAT`,
    /// `device`, …) is damaged or missing. `state check` lists every such file and `state
    /// recover` repairs it (docs/safety.md, "Damaged store files").
    #[error(
        "{} is corrupt: {why}; run 'shelldone state check' to see the damage and 'shelldone state recover' to repair it",
        path.display()
    )]
    CorruptFile {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// No remote of that name is configured.
    #[error("no remote named '{0}'; add one with 'shelldone remote add {0} URL'")]
    UnknownRemote(String),
    /// No open conflict has that id (or id prefix).
    #[error("no open conflict '{0}'; 'shelldone conflicts' lists them")]
    UnknownConflict(String),
    /// A conflict id prefix matches several open conflicts.
    #[error("'{prefix}' matches {} conflicts ({}); give more characters", candidates.len(), candidates.join(", "))]
    AmbiguousConflict {
        /// The prefix given.
        prefix: String,
        /// The ids it matches.
        candidates: Vec<String>,
    },
    /// A snapshot path (`--path`) that the snapshot does not have.
    #[error("no file or folder '{path}' in snapshot {snapshot}")]
    UnknownPath {
        /// The path given.
        path: String,
        /// The snapshot (short id).
        snapshot: String,
    },
    /// A value over a limit of the format or of the store (an object over 4 GiB compressed).
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A record a snapshot carries (its open conflicts) does not parse: the snapshot was
    /// written by a broken or hostile writer.
    #[error("{0}")]
    BadRecord(String),
    /// Migrating the store to this version's format failed (nothing is lost: each step is
    /// crash-safe and idempotent; see `shelldone_migrations`).
    #[error("migrating the state store at {}: {source}", path.display())]
    Migration {
        /// The store dir.
        path: PathBuf,
        /// What failed.
        #[source]
        source: shelldone_migrations::MigrationError,
    },
    /// The config file (`shelldone.toml`) cannot be read or has an unknown key or a bad value.
    #[error("{}{}: {why}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        /// The file.
        file: PathBuf,
        /// The line (1-based), when the problem has one.
        line: Option<usize>,
        /// What is wrong, and what would be right.
        why: String,
    },
    /// Anything else a user must fix in the command or its configuration (an argument, an
    /// environment variable, a remote's URL or name).
    #[error("{0}")]
    Usage(String),
    /// The vault's keys cannot be used: no keys yet, a wrong passphrase, a wrong identity, a
    /// missing keyring entry, a revoked device. Nothing was changed.
    #[error("{0}")]
    VaultLocked(String),
    /// A secret was not encrypted to any key this device holds (it is not trusted, or was
    /// revoked before the secret was set). Never garbage: the secret is not decrypted at all.
    #[error(
        "secret '{name}' was not encrypted to this device ({device}): have a trusted device run 'shelldone key trust' with this device's public keys ('shelldone key show'), then pull"
    )]
    NotRecipient {
        /// The secret.
        name: String,
        /// This device.
        device: String,
    },
    /// A backup bundle is damaged: a missing or changed file, a checksum that does not match,
    /// a manifest that does not parse, a round trip that differs.
    #[error("backup {}: damaged: {why}", bundle.display())]
    BackupDamaged {
        /// The bundle directory.
        bundle: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An encrypted bundle that no given identity can open.
    #[error("backup {}: cannot decrypt: {why}", bundle.display())]
    BackupKey {
        /// The bundle directory.
        bundle: PathBuf,
        /// Why.
        why: String,
    },
    /// A bundle's signature does not verify, or is not one the caller requires (unsigned,
    /// untrusted or revoked key with `[backup] require_signature`).
    #[error("backup {}: signature refused: {why}", bundle.display())]
    BackupSignature {
        /// The bundle directory.
        bundle: PathBuf,
        /// Why.
        why: String,
    },
    /// A broken invariant of shelldone itself (a bug): please report it.
    #[error("internal error (a bug in shelldone; please report it): {0}")]
    Internal(String),
}

/// One of the things an ambiguous revision matches ([`Error::AmbiguousPrefix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `snapshot` (an id prefix), `session` (a session id or prefix), `device` (a device's
    /// remote-tracking head), `ref` (a name with a `/` that is a ref both as given and under
    /// `remotes/`).
    pub kind: &'static str,
    /// The unambiguous name: the full id of a snapshot, else the ref (`sessions/<id>`,
    /// `remotes/<remote>/<device>/head`).
    pub name: String,
    /// The snapshot it names.
    pub snapshot: ObjectId,
    /// That snapshot's time (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub time: String,
    /// That snapshot's message.
    pub message: String,
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.snapshot.short(12);
        if self.kind == "snapshot" {
            write!(f, "snapshot {id}")?;
        } else {
            write!(f, "{:<8} {} -> {id}", self.kind, self.name)?;
        }
        write!(f, "  {}  {}", self.time, short(&self.message))
    }
}

/// The lines of [`Error::AmbiguousPrefix`]: the first 10 candidates, then how many more.
fn list_candidates(c: &[Candidate]) -> String {
    const SHOWN: usize = 10;
    let mut s: String = c.iter().take(SHOWN).map(|c| format!("\n  {c}")).collect();
    if c.len() > SHOWN {
        s.push_str(&format!("\n  and {} more", c.len() - SHOWN));
    }
    s
}

/// A boxed error from a lower layer, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    /// True for errors that mean stored data is damaged (missing, corrupt or of the wrong kind).
    #[must_use]
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::MissingObject { .. } | Error::CorruptObject { .. } | Error::WrongKind { .. }
        )
    }

    /// An [`Error::File`]: `source` happened while doing `op` to `path` during `during`.
    pub fn file(
        source: std::io::Error,
        op: &'static str,
        path: impl Into<PathBuf>,
        during: &'static str,
    ) -> Error {
        Error::File {
            op,
            path: path.into(),
            during,
            source: bare(source),
        }
    }

    /// For `map_err`: an I/O error doing `op` to `path` during `during` as an [`Error::File`].
    pub fn at<'a>(
        op: &'static str,
        path: &'a std::path::Path,
        during: &'static str,
    ) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |e| Error::file(e, op, path, during)
    }

    /// A [`Error::CorruptFile`] for `path`.
    pub fn corrupt_file(path: impl Into<PathBuf>, why: impl Into<String>) -> Error {
        Error::CorruptFile {
            path: path.into(),
            why: why.into(),
        }
    }

    /// A [`Error::Remote`] that trying again later will not fix (see [`Error::retryable`]).
    pub fn remote(remote: impl Into<String>, why: impl Into<String>) -> Error {
        Error::Remote {
            remote: remote.into(),
            why: why.into(),
            transient: false,
            source: None,
        }
    }

    /// A [`Error::Remote`] caused by `source` (kept): its message, with the messages of its own
    /// sources, is the `why`; `transient` says whether a later try may succeed.
    pub fn remote_from(
        remote: impl Into<String>,
        transient: bool,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Remote {
            remote: remote.into(),
            why: chain(&source),
            transient,
            source: Some(Box::new(source)),
        }
    }

    /// What kind of failure this is; the CLI maps kinds to exit codes (docs/cli.md).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnknownRevision { .. }
            | Error::AmbiguousPrefix { .. }
            | Error::NoSnapshot
            | Error::BadRefName(_)
            | Error::UnknownSession(..)
            | Error::EmptiedRoot { .. }
            | Error::UnknownRemote(_)
            | Error::UnknownConflict(_)
            | Error::AmbiguousConflict { .. }
            | Error::UnknownPath { .. }
            | Error::TooLarge { .. }
            | Error::Config { .. }
            | Error::Usage(_) => ErrorKind::Usage,
            Error::MissingObject { .. }
            | Error::CorruptObject { .. }
            | Error::WrongKind { .. }
            | Error::UnsafePath(_)
            | Error::CorruptFile { .. }
            | Error::BadRecord(_)
            | Error::Migration { .. }
            | Error::BackupDamaged { .. }
            | Error::BackupSignature { .. } => ErrorKind::Data,
            Error::Locked { .. } | Error::RefConflict { .. } => ErrorKind::Contention,
            Error::Remote { .. } | Error::DeviceIdInUse { .. } | Error::UnrelatedHistory { .. } => {
                ErrorKind::Remote
            }
            Error::NewerStore { .. } | Error::NewerFormat { .. } | Error::ReadOnly(_) => {
                ErrorKind::NewerStore
            }
            Error::Io(_) | Error::File { .. } | Error::Encode(_) => ErrorKind::Io,
            Error::VaultLocked(_) | Error::NotRecipient { .. } | Error::BackupKey { .. } => {
                ErrorKind::Key
            }
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// True when the same operation, tried again later unchanged, may succeed: the store lock
    /// was held, a ref moved under us, or a remote could not be reached (a timeout, a refused
    /// or reset connection). False for everything a retry cannot fix: hostile or corrupt data,
    /// usage errors, a newer store, a device id used by another store, an unrelated history.
    #[must_use]
    pub fn retryable(&self) -> bool {
        match self {
            Error::Locked { .. } | Error::RefConflict { .. } => true,
            Error::Remote { transient, .. } => *transient,
            Error::Io(e) | Error::File { source: e, .. } => io_transient(e),
            _ => false,
        }
    }
}

/// The classes of [`Error`], each with its own exit code in the CLI (docs/cli.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bad arguments, revisions, configuration: the user must change the command.
    Usage,
    /// Missing or corrupt objects or store files.
    Data,
    /// The store lock or a ref was held or moved by another process.
    Contention,
    /// A remote failed or refused.
    Remote,
    /// The store was written by a newer shelldone.
    NewerStore,
    /// An I/O or encoding error.
    Io,
    /// The vault's keys cannot be used, or a secret is not for this device.
    Key,
    /// A bug in shelldone.
    Internal,
}

/// True for the I/O errors of a network or a peer that may be gone for now (a timeout, a
/// refused, reset or aborted connection, an unreachable host), never for local file errors.
#[must_use]
pub fn io_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::TimedOut
            | K::WouldBlock
            | K::Interrupted
            | K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
    )
}

/// The system's error without the path `fs-err` adds to its message (the caller names the path
/// itself): `No space left on device (os error 28)`. `fs-err` keeps the original error private
/// (it exposes it only with a feature that drops it from the message everywhere else), so the
/// OS error code is read back from the end of the message.
fn bare(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error().is_some() || e.get_ref().is_none() {
        return e;
    }
    let msg = e.to_string();
    let code = msg
        .strip_suffix(')')
        .and_then(|m| m.rsplit_once("(os error "))
        .and_then(|(_, n)| n.parse::<i32>().ok());
    match code {
        Some(c) => std::io::Error::from_raw_os_error(c),
        None => e,
    }
}

/// The first 80 characters of `s` (with `…` when cut), for messages that quote damaged bytes.
pub(crate) fn short(s: &str) -> String {
    let mut t: String = s.chars().take(80).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

/// `e`'s message followed by the messages of its sources (`a: b: c`).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}
