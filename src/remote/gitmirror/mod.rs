//! A thin, synchronous wrapper around `gix` for a *local bare mirror repository*
//! used as a sync transport.
//!
//! * Objects (blobs, trees, commits) are written and read with `gix`.
//! * Refs are listed/updated/deleted with `gix`.
//! * Fetching uses gix's blocking network client (`git://`, `ssh://`, `file://`, plain paths),
//!   never asking for a thin pack (see `lean`); http(s) goes through the `git` binary.
//! * Pushing shells out to the `git` binary with `--force-with-lease` per ref, so that
//!   a remote ref is only ever moved from a value we have seen (compare-and-swap).
//!
//! Nothing here prints; all failures are reported as [`GitError`].

mod fetch;
mod lean;
mod process;
mod push;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use fetch::{RemoteHead, fetch, fetch_bounded, fetch_full, fetch_with_timeout};
use gix::ObjectId as GitId;
use gix::bstr::{BString, ByteSlice};
use gix::objs::tree::EntryKind;
use gix::refs::transaction::PreviousValue;
pub use lean::{drop_loose, drop_packed_blobs, lean_capable, missing_for_push};
pub use push::{PushOptions, PushUpdate, push, push_with_options, push_with_timeout};

/// Timeout for establishing a TCP connection to a `git://` server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default timeout for a single blocking read/write on a `git://` socket during fetch.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Default idle timeout of a `git` child (a push, an http(s) fetch): it is stopped once no byte
/// has moved (no output, no progress report) for this long. There is no limit on the total time.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest allocation gix may make for one object of a mirror (`gitoxide.objects.allocLimit`):
/// reading an object, and resolving one entry while a fetched pack is indexed. An object that
/// would need more is refused from its declared size, before it is inflated.
pub const ALLOC_LIMIT: usize = objects_format::MAX_OBJECT_SIZE;

/// Name/email used for reflog entries when the user has no git identity configured.
const FALLBACK_COMMITTER_NAME: &str = "shelldone";

const FALLBACK_COMMITTER_EMAIL: &str = "shelldone@localhost";

pub type GitResult<T, E = GitError> = std::result::Result<T, E>;

/// Why the remote refused to update one ref during a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectKind {
    /// `--force-with-lease` failed: the remote ref was not at the expected old value.
    StaleLease,
    /// The update was not a fast-forward (or the remote has commits we don't).
    NonFastForward,
    /// The remote side (receive-pack, hooks, config) refused the update.
    RemoteRejected,
    /// Any other per-ref failure reported by `git push --porcelain`.
    Other,
}

/// One rejected ref of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRejection {
    /// Full name of the ref on the remote, e.g. `refs/shelldone/main`.
    pub remote_ref: String,
    pub kind: RejectKind,
    /// The summary text git printed, e.g. `[rejected] (stale info)`.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{context}")]
    Gix {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The remote's host could not be resolved or connected to (a `git://` remote).
    #[error("{context}")]
    Unreachable {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("object {oid} is a {actual}, expected a {expected}")]
    UnexpectedKind {
        oid: GitId,
        expected: gix::objs::Kind,
        actual: gix::objs::Kind,
    },
    #[error("unsupported tree entry mode {mode:o} for {name:?} in tree {tree}")]
    UnsupportedMode {
        tree: GitId,
        name: String,
        mode: u16,
    },
    #[error("fetch from {url} could not update local refs: {rejected:?}")]
    FetchRejected {
        url: String,
        /// `(local ref, reason)`; other refs of the same fetch were still updated.
        rejected: Vec<(String, String)>,
    },
    #[error("push to {url} rejected for {} ref(s): {rejected:?}", rejected.len())]
    PushRejected {
        url: String,
        rejected: Vec<PushRejection>,
    },
    #[error("git fetch {url} failed: {stderr}")]
    FetchFailed { url: String, stderr: String },
    #[error("git push to {url} failed ({status}): {stderr}")]
    PushFailed {
        url: String,
        status: String,
        stderr: String,
    },
    /// Nothing moved for `timeout` (the idle timeout), so the transfer was stopped.
    #[error("{what} stopped: no data moved for {} s (idle timeout); the remote accepted the connection but stalled", timeout.as_secs_f64())]
    Timeout { what: String, timeout: Duration },
}

impl GitError {
    /// True if this is a push rejection where at least one ref failed its lease.
    pub fn is_stale_lease(&self) -> bool {
        matches!(self, GitError::PushRejected { rejected, .. }
            if rejected.iter().any(|r| r.kind == RejectKind::StaleLease))
    }

    /// True when the remote could not be reached for now, so the same call may succeed later:
    /// a timeout, a host that does not resolve or answer, a refused, reset or timed-out
    /// connection. False when the remote answered (a refusal, hostile or corrupt data, a limit)
    /// and for local failures.
    pub fn is_transient(&self) -> bool {
        match self {
            GitError::Timeout { .. } | GitError::Unreachable { .. } => true,
            GitError::Io { source, .. } => crate::error::io_transient(source),
            GitError::Gix { source, .. } => {
                let mut e: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
                while let Some(x) = e {
                    if let Some(io) = x.downcast_ref::<std::io::Error>() {
                        return crate::error::io_transient(io);
                    }
                    e = x.source();
                }
                false
            }
            GitError::FetchFailed { stderr, .. } | GitError::PushFailed { stderr, .. } => {
                git_unreachable(stderr)
            }
            GitError::InvalidInput(_)
            | GitError::UnexpectedKind { .. }
            | GitError::UnsupportedMode { .. }
            | GitError::FetchRejected { .. }
            | GitError::PushRejected { .. } => false,
        }
    }
}

/// What git, curl and ssh print (run with `LC_ALL=C`) when a remote cannot be reached for now.
/// The git binary is another process whose failures reach us only as text, so this list is the
/// one place where failures are told apart by their words.
const UNREACHABLE: &[&str] = &[
    "Could not resolve host",
    "Temporary failure in name resolution",
    "Failed to connect to",
    "Connection refused",
    "Connection timed out",
    "Connection reset",
    "Operation timed out",
    "Network is unreachable",
    "No route to host",
    "The requested URL returned error: 502",
    "The requested URL returned error: 503",
    "The requested URL returned error: 504",
];

/// True when `stderr` of a failed git fetch or push says the remote could not be reached.
pub(super) fn git_unreachable(stderr: &str) -> bool {
    UNREACHABLE.iter().any(|m| stderr.contains(m))
}

pub(super) fn gix_err<E>(context: impl Into<String>) -> impl FnOnce(E) -> GitError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let context = context.into();
    move |source| GitError::Gix {
        context,
        source: Box::new(source),
    }
}

pub(super) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GitError {
    let context = context.into();
    move |source| GitError::Io { context, source }
}

pub(super) fn unreachable_err(
    context: impl Into<String>,
) -> impl FnOnce(std::io::Error) -> GitError {
    let context = context.into();
    move |source| GitError::Unreachable { context, source }
}

// ---------------------------------------------------------------------------
// Repository
// ---------------------------------------------------------------------------

/// Open the bare repository at `path`, or initialise one if `path` is absent or an empty directory.
///
/// A fallback committer identity is configured in-memory (not written to disk) so that ref edits
/// never fail because no `user.name`/`user.email` is set.
pub fn open_or_init_bare(path: &Path) -> GitResult<gix::Repository> {
    let populated = match std::fs::read_dir(path) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err(format!("reading directory {}", path.display()))(e)),
    };
    if !populated {
        // gix doesn't create missing parent directories.
        std::fs::create_dir_all(path)
            .map_err(io_err(format!("creating directory {}", path.display())))?;
        gix::init_bare(path).map_err(gix_err(format!(
            "initialising bare repository at {}",
            path.display()
        )))?;
    }
    // Opened with a bound on what one object may allocate: a hostile remote's pack that inflates
    // to gigabytes is refused from its declared sizes (as a command-line `-c` would, over any
    // configuration file).
    let opts = gix::open::Options::default()
        .cli_overrides([format!("gitoxide.objects.allocLimit={ALLOC_LIMIT}")]);
    let mut repo = gix::open_opts(path, opts)
        .map_err(gix_err(format!("opening repository at {}", path.display())))?;
    if !repo.is_bare() {
        return Err(GitError::InvalidInput(format!(
            "{} is not a bare repository",
            path.display()
        )));
    }
    repo.committer_or_set_fallback(FALLBACK_COMMITTER_NAME, FALLBACK_COMMITTER_EMAIL)
        .map_err(gix_err("configuring fallback committer identity"))?;
    Ok(repo)
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

/// Mode of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    File,
    Executable,
    Dir,
    Symlink,
}

impl Mode {
    fn to_kind(self) -> EntryKind {
        match self {
            Mode::File => EntryKind::Blob,
            Mode::Executable => EntryKind::BlobExecutable,
            Mode::Dir => EntryKind::Tree,
            Mode::Symlink => EntryKind::Link,
        }
    }

    fn from_kind(kind: EntryKind) -> Option<Mode> {
        match kind {
            EntryKind::Blob => Some(Mode::File),
            EntryKind::BlobExecutable => Some(Mode::Executable),
            EntryKind::Tree => Some(Mode::Dir),
            EntryKind::Link => Some(Mode::Symlink),
            EntryKind::Commit => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitTreeEntry {
    pub name: Vec<u8>,
    pub mode: Mode,
    pub oid: GitId,
}

/// Object kind, re-exported for callers.
pub type GitKind = gix::objs::Kind;

/// Decoded commit: `(tree, parents, message)`.
pub type DecodedCommit = (GitId, Vec<GitId>, String);

pub fn write_blob(repo: &gix::Repository, data: &[u8]) -> GitResult<GitId> {
    repo.write_blob(data)
        .map(|id| id.detach())
        .map_err(gix_err("writing blob"))
}

fn validate_entry_name(name: &[u8], mode: Mode) -> GitResult<()> {
    let bad = name.is_empty()
        || name == b"."
        || name == b".."
        || crate::snapshot::policy::git_reserved(name, mode == Mode::Symlink)
        || name.contains(&b'/')
        || name.contains(&0);
    if bad {
        return Err(GitError::InvalidInput(format!(
            "invalid tree entry name {:?}",
            name.as_bstr()
        )));
    }
    Ok(())
}

/// Write a tree. `entries` may be given in any order; they are sorted in git's canonical order
/// (directories compare as if their name ended in `/`). Names must be unique, non-empty and must
/// not contain `/` or NUL, nor be `.`, `..` or a name git refuses (`.git` and its variants; see
/// [`crate::snapshot::policy::git_reserved`]; callers escape those with `policy::git_name`).
pub fn write_tree(repo: &gix::Repository, entries: &[GitTreeEntry]) -> GitResult<GitId> {
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        validate_entry_name(&e.name, e.mode)?;
        if !seen.insert(e.name.as_slice()) {
            return Err(GitError::InvalidInput(format!(
                "duplicate tree entry name {:?}",
                e.name.as_bstr()
            )));
        }
        out.push(gix::objs::tree::Entry {
            mode: e.mode.to_kind().into(),
            filename: BString::from(e.name.clone()),
            oid: e.oid,
        });
    }
    // `tree::Entry`'s `Ord` is git's tree order (see `gix::objs::tree::name_order`).
    out.sort();
    let tree = gix::objs::Tree { entries: out };
    repo.write_object(&tree)
        .map(|id| id.detach())
        .map_err(gix_err("writing tree"))
}

fn validate_ident(what: &str, value: &str) -> GitResult<()> {
    if value.contains(['<', '>', '\n', '\0']) {
        return Err(GitError::InvalidInput(format!(
            "{what} {value:?} must not contain '<', '>', newline or NUL"
        )));
    }
    Ok(())
}

/// Write a commit. Author and committer are identical, with time `time_unix_seconds` and
/// timezone `+0000`; the result only depends on the arguments (no config, no clock).
pub fn write_commit(
    repo: &gix::Repository,
    tree: GitId,
    parents: &[GitId],
    message: &str,
    time_unix_seconds: i64,
    author_name: &str,
    author_email: &str,
) -> GitResult<GitId> {
    write_commit_with_header(
        repo,
        tree,
        parents,
        message,
        time_unix_seconds,
        (author_name, author_email),
        None,
    )
}

/// [`write_commit`] with one extra header line `<name> <value>` after the committer line (git
/// keeps and ignores headers it does not know; `value` must not hold a newline).
pub fn write_commit_with_header(
    repo: &gix::Repository,
    tree: GitId,
    parents: &[GitId],
    message: &str,
    time_unix_seconds: i64,
    (author_name, author_email): (&str, &str),
    header: Option<(&str, &[u8])>,
) -> GitResult<GitId> {
    if let Some((name, value)) = header
        && (name.is_empty()
            || name.contains([' ', '\n', '\0'])
            || value.contains(&b'\n')
            || value.contains(&0))
    {
        return Err(GitError::InvalidInput(format!(
            "commit header {name:?} must be one word and its value one line"
        )));
    }
    validate_ident("author name", author_name)?;
    validate_ident("author email", author_email)?;
    let signature = gix::actor::Signature {
        name: author_name.into(),
        email: author_email.into(),
        time: gix::date::Time {
            seconds: time_unix_seconds,
            offset: 0,
        },
    };
    let commit = gix::objs::Commit {
        tree,
        parents: parents.iter().copied().collect(),
        author: signature.clone(),
        committer: signature,
        encoding: None,
        message: message.into(),
        extra_headers: header
            .map(|(n, v)| (BString::from(n), BString::from(v)))
            .into_iter()
            .collect(),
    };
    repo.write_object(&commit)
        .map(|id| id.detach())
        .map_err(gix_err("writing commit"))
}

pub fn read_object(repo: &gix::Repository, oid: GitId) -> GitResult<(GitKind, Vec<u8>)> {
    let mut obj = repo
        .find_object(oid)
        .map_err(gix_err(format!("reading object {oid}")))?;
    Ok((obj.kind, std::mem::take(&mut obj.data)))
}

fn read_expecting(repo: &gix::Repository, oid: GitId, expected: GitKind) -> GitResult<Vec<u8>> {
    let (kind, data) = read_object(repo, oid)?;
    if kind != expected {
        return Err(GitError::UnexpectedKind {
            oid,
            expected,
            actual: kind,
        });
    }
    Ok(data)
}

/// Decode raw tree bytes (as returned by [`read_object`]) into entries, in stored order.
pub fn decode_tree(
    repo: &gix::Repository,
    oid: GitId,
    data: &[u8],
) -> GitResult<Vec<GitTreeEntry>> {
    let tree = gix::objs::TreeRef::from_bytes(data, repo.object_hash())
        .map_err(gix_err(format!("decoding tree {oid}")))?;
    tree.entries
        .iter()
        .map(|e| {
            let mode = Mode::from_kind(e.mode.kind()).ok_or_else(|| GitError::UnsupportedMode {
                tree: oid,
                name: e.filename.to_str_lossy().into_owned(),
                mode: e.mode.value(),
            })?;
            Ok(GitTreeEntry {
                name: e.filename.to_vec(),
                mode,
                oid: e.oid.to_owned(),
            })
        })
        .collect()
}

/// Read the tree `oid` and decode it.
pub fn read_tree(repo: &gix::Repository, oid: GitId) -> GitResult<Vec<GitTreeEntry>> {
    let data = read_expecting(repo, oid, GitKind::Tree)?;
    decode_tree(repo, oid, &data)
}

/// Decode raw commit bytes into `(tree, parents, message)`. The message is returned verbatim
/// (lossily converted to UTF-8 if it isn't).
pub fn decode_commit(repo: &gix::Repository, oid: GitId, data: &[u8]) -> GitResult<DecodedCommit> {
    let commit = gix::objs::CommitRef::from_bytes(data, repo.object_hash())
        .map_err(gix_err(format!("decoding commit {oid}")))?;
    Ok((
        commit.tree(),
        commit.parents().collect(),
        commit.message.to_str_lossy().into_owned(),
    ))
}

/// Read the commit `oid` and decode it, handing its raw message to `message` (no copy of the
/// message is made): `(tree, parents, message(raw message))`.
pub fn read_commit_with<T>(
    repo: &gix::Repository,
    oid: GitId,
    message: impl FnOnce(&[u8]) -> T,
) -> GitResult<(GitId, Vec<GitId>, T)> {
    let data = read_expecting(repo, oid, GitKind::Commit)?;
    let commit = gix::objs::CommitRef::from_bytes(&data, repo.object_hash())
        .map_err(gix_err(format!("decoding commit {oid}")))?;
    Ok((
        commit.tree(),
        commit.parents().collect(),
        message(commit.message),
    ))
}

/// [`read_commit_with`], also handing over the value of the extra header `header`, if the
/// commit has one: `(tree, parents, parts(raw message, header value))`.
pub fn read_commit_parts<T>(
    repo: &gix::Repository,
    oid: GitId,
    header: &str,
    parts: impl FnOnce(&[u8], Option<&[u8]>) -> T,
) -> GitResult<(GitId, Vec<GitId>, T)> {
    let data = read_expecting(repo, oid, GitKind::Commit)?;
    let commit = gix::objs::CommitRef::from_bytes(&data, repo.object_hash())
        .map_err(gix_err(format!("decoding commit {oid}")))?;
    let value = commit
        .extra_headers
        .iter()
        .find(|(n, _)| n.as_bytes() == header.as_bytes())
        .map(|(_, v)| v.as_ref().as_bytes());
    Ok((
        commit.tree(),
        commit.parents().collect(),
        parts(commit.message, value),
    ))
}

/// Read the commit `oid` and decode it.
pub fn read_commit(repo: &gix::Repository, oid: GitId) -> GitResult<DecodedCommit> {
    let data = read_expecting(repo, oid, GitKind::Commit)?;
    decode_commit(repo, oid, &data)
}

// ---------------------------------------------------------------------------
// Refs
// ---------------------------------------------------------------------------

pub(super) fn validate_ref_name(name: &str) -> GitResult<()> {
    if !name.starts_with("refs/") {
        return Err(GitError::InvalidInput(format!(
            "ref name {name:?} must be a full name starting with 'refs/'"
        )));
    }
    Ok(())
}

/// Point `name` (a full ref name like `refs/shelldone/main`) at `oid`, creating it if needed.
pub fn set_ref(repo: &gix::Repository, name: &str, oid: GitId) -> GitResult<()> {
    validate_ref_name(name)?;
    repo.reference(name, oid, PreviousValue::Any, "shelldone: set ref")
        .map(|_| ())
        .map_err(gix_err(format!("setting ref {name} to {oid}")))
}

/// List direct refs whose full name starts with `prefix` (e.g. `refs/shelldone/`), sorted by name.
/// An empty prefix lists all refs. Symbolic refs are skipped.
pub fn list_refs(repo: &gix::Repository, prefix: &str) -> GitResult<Vec<(String, GitId)>> {
    let platform = repo.references().map_err(gix_err("accessing refs"))?;
    let iter = if prefix.is_empty() {
        platform.all()
    } else {
        platform.prefixed(prefix)
    }
    .map_err(gix_err(format!("listing refs with prefix {prefix:?}")))?;
    let mut out = Vec::new();
    for r in iter {
        let r = r.map_err(gix_err(format!("reading ref under {prefix:?}")))?;
        if let Some(id) = r.try_id() {
            out.push((r.name().as_bstr().to_str_lossy().into_owned(), id.detach()));
        }
    }
    out.sort();
    Ok(out)
}

/// Delete `name`. Deleting a ref that doesn't exist is not an error.
pub fn delete_ref(repo: &gix::Repository, name: &str) -> GitResult<()> {
    validate_ref_name(name)?;
    let found = repo
        .try_find_reference(name)
        .map_err(gix_err(format!("looking up ref {name}")))?;
    match found {
        None => Ok(()),
        Some(r) => r.delete().map_err(gix_err(format!("deleting ref {name}"))),
    }
}

// ---------------------------------------------------------------------------
// Fetch (gix blocking client)
// ---------------------------------------------------------------------------

/// Path helper: the mirror directory of a repository as a `PathBuf` (for callers that keep a
/// `gix::Repository` around and want to [`push`] from it).
pub fn mirror_path(repo: &gix::Repository) -> PathBuf {
    repo.git_dir().to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local port nothing listens on.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[test]
    fn a_remote_that_does_not_answer_is_transient_a_wrong_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = open_or_init_bare(&dir.path().join("m.git")).expect("init");
        let spec = ["+refs/shelldone/*:refs/remotes/o/shelldone/*"];
        // git:// (gix, our socket): connection refused.
        let e = fetch(
            &repo,
            &format!("git://127.0.0.1:{}/r.git", closed_port()),
            &spec,
        )
        .expect_err("nothing listens");
        assert!(e.is_transient(), "{e:?}");
        // http:// (the git binary): connection refused, told by curl's words.
        let e = fetch(
            &repo,
            &format!("http://127.0.0.1:{}/r.git", closed_port()),
            &spec,
        )
        .expect_err("nothing listens");
        assert!(e.is_transient(), "{e:?}");
        // A folder that is not a repository: trying again will not help.
        let e = fetch(
            &repo,
            dir.path().join("nothing").to_str().expect("utf8"),
            &spec,
        )
        .expect_err("not a repository");
        assert!(!e.is_transient(), "{e:?}");
        assert!(
            GitError::Timeout {
                what: "git push".into(),
                timeout: Duration::from_secs(1)
            }
            .is_transient()
        );
        assert!(!GitError::InvalidInput("x".into()).is_transient());
    }
}
