//! A thin, synchronous wrapper around `gix` for a *local bare mirror repository*
//! used as a sync transport.
//!
//! * Objects (blobs, trees, commits) are written and read with `gix`.
//! * Refs are listed/updated/deleted with `gix`.
//! * Fetching uses gix's blocking network client (`git://`, `file://`, plain paths).
//! * Pushing shells out to the `git` binary with `--force-with-lease` per ref, so that
//!   a remote ref is only ever moved from a value we have seen (compare-and-swap).
//!
//! Nothing here prints; all failures are reported as [`GitError`].

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gix::ObjectId as GitId;
use gix::bstr::{BString, ByteSlice};
use gix::objs::tree::EntryKind;
use gix::refs::transaction::PreviousValue;
use gix::remote::Direction;
use gix::remote::fetch::refs::update::Mode as UpdateMode;

/// Timeout for establishing a TCP connection to a `git://` server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout for a single blocking read/write on a `git://` socket during fetch.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Default wall-clock limit for a whole `git push` invocation.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(120);
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
    #[error("{what} timed out after {timeout:?}")]
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
fn git_unreachable(stderr: &str) -> bool {
    UNREACHABLE.iter().any(|m| stderr.contains(m))
}

fn gix_err<E>(context: impl Into<String>) -> impl FnOnce(E) -> GitError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let context = context.into();
    move |source| GitError::Gix {
        context,
        source: Box::new(source),
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GitError {
    let context = context.into();
    move |source| GitError::Io { context, source }
}

fn unreachable_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GitError {
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
        extra_headers: Vec::new(),
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

/// Read the commit `oid` and decode it.
pub fn read_commit(repo: &gix::Repository, oid: GitId) -> GitResult<DecodedCommit> {
    let data = read_expecting(repo, oid, GitKind::Commit)?;
    decode_commit(repo, oid, &data)
}

// ---------------------------------------------------------------------------
// Refs
// ---------------------------------------------------------------------------

fn validate_ref_name(name: &str) -> GitResult<()> {
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

/// [`fetch_with_timeout`] with [`DEFAULT_IO_TIMEOUT`].
pub fn fetch(
    repo: &gix::Repository,
    url: &str,
    refspecs: &[&str],
) -> GitResult<Vec<(String, GitId)>> {
    fetch_with_timeout(repo, url, refspecs, DEFAULT_IO_TIMEOUT)
}

/// Fetch `refspecs` (e.g. `+refs/shelldone/*:refs/remotes/origin/shelldone/*`) from `url`
/// (`git://host:port/path`, `file://…` or a plain path) into `repo`. Tags are not fetched.
///
/// Returns `(local ref, remote object id)` for every remote ref that matched a refspec with a
/// destination. A remote without (matching) refs yields an empty list.
///
/// Bounds: for `git://`, connecting is limited to [`CONNECT_TIMEOUT`] and each socket read/write
/// to `io_timeout`. `file://` and paths run a local `git-upload-pack` and have no timeout.
///
/// Note: as with git, a refspec without `+` refuses non-fast-forward updates of its destination;
/// this yields [`GitError::FetchRejected`] (other refs are still updated).
pub fn fetch_with_timeout(
    repo: &gix::Repository,
    url: &str,
    refspecs: &[&str],
    io_timeout: Duration,
) -> GitResult<Vec<(String, GitId)>> {
    fetch_bounded(repo, url, refspecs, io_timeout, u64::MAX)
}

/// Reads at most `left` bytes from `inner`, then fails: a remote cannot make one fetch receive
/// more than the import budget.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            return Err(std::io::Error::other(format!(
                "the remote sent more than {} bytes, the limit of one fetch",
                self.limit
            )));
        }
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

/// [`fetch_with_timeout`], receiving at most `max_bytes` from a `git://` remote (other transports
/// are bounded per object by [`ALLOC_LIMIT`] only).
pub fn fetch_bounded(
    repo: &gix::Repository,
    url: &str,
    refspecs: &[&str],
    io_timeout: Duration,
    max_bytes: u64,
) -> GitResult<Vec<(String, GitId)>> {
    if refspecs.is_empty() {
        return Err(GitError::InvalidInput(
            "fetch needs at least one refspec".into(),
        ));
    }
    let remote = repo
        .remote_at(url)
        .map_err(gix_err(format!("parsing remote url {url:?}")))?
        .with_refspecs(refspecs.iter().copied(), Direction::Fetch)
        .map_err(gix_err(format!("parsing fetch refspecs {refspecs:?}")))?
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let (parsed, version) = remote
        .sanitized_url_and_version(Direction::Fetch)
        .map_err(gix_err(format!("preparing connection to {url}")))?;

    if matches!(
        parsed.scheme,
        gix::url::Scheme::Http | gix::url::Scheme::Https
    ) {
        // This build keeps gix to the transports it links without an HTTP stack; http(s) fetches
        // go through the `git` binary, as pushes do.
        return fetch_with_git_binary(repo, url, refspecs, io_timeout);
    }
    if parsed.scheme == gix::url::Scheme::Git {
        // Build the git:// transport ourselves so the socket gets read/write timeouts
        // (gix only applies a connect timeout).
        let host = parsed
            .host()
            .ok_or_else(|| GitError::InvalidInput(format!("url {url:?} has no host")))?
            .to_owned();
        let port = parsed.port;
        let addr = (host.as_str(), port.unwrap_or(9418))
            .to_socket_addrs()
            .map_err(unreachable_err(format!("resolving {host}")))?
            .next()
            .ok_or_else(|| GitError::InvalidInput(format!("{host} resolved to no address")))?;
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(unreachable_err(format!("connecting to {addr} for {url}")))?;
        stream
            .set_read_timeout(Some(io_timeout))
            .and_then(|()| stream.set_write_timeout(Some(io_timeout)))
            .map_err(io_err("setting socket timeouts"))?;
        let write = stream
            .try_clone()
            .map_err(io_err("cloning socket handle"))?;
        let read = Capped {
            inner: stream,
            left: max_bytes,
            limit: max_bytes,
        };
        let transport = gix::protocol::transport::client::git::blocking_io::Connection::new(
            read,
            write,
            version,
            parsed.path.clone(),
            Some((host, port)),
            gix::protocol::transport::client::git::ConnectMode::Daemon,
            false,
        );
        run_fetch(remote.to_connection_with_transport(transport), url)
    } else {
        let connection = remote
            .connect(Direction::Fetch)
            .map_err(gix_err(format!("connecting to {url}")))?;
        run_fetch(connection, url)
    }
}

fn fetch_with_git_binary(
    repo: &gix::Repository,
    url: &str,
    refspecs: &[&str],
    io_timeout: Duration,
) -> GitResult<Vec<(String, GitId)>> {
    let mut cmd = supervised_git();
    cmd.arg("--git-dir")
        .arg(repo.git_dir())
        .args(["-c", "http.lowSpeedLimit=1", "-c"])
        .arg(format!("http.lowSpeedTime={}", io_timeout.as_secs().max(1)))
        // The same bound as gix's: big blobs are streamed to disk by index-pack (never held),
        // and no single allocation may exceed the per-object limit.
        .arg("-c")
        .arg(format!("core.bigFileThreshold={}", 16 << 20))
        .env("GIT_ALLOC_LIMIT", ALLOC_LIMIT.to_string())
        .args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--prune",
            "--no-write-fetch-head",
            "--",
            url,
        ])
        .args(refspecs)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, _, stderr) = run_with_timeout(cmd, io_timeout * 2, &format!("git fetch {url}"))?;
    if !status.success() {
        // An empty remote is "nothing yet", as with the gix transports.
        if stderr.contains("couldn't find remote ref") || stderr.trim().is_empty() {
            return Ok(Vec::new());
        }
        return Err(GitError::FetchFailed {
            url: url.to_owned(),
            stderr: stderr.trim().to_owned(),
        });
    }
    let mut out = Vec::new();
    for spec in refspecs {
        let dst = spec
            .trim_start_matches('+')
            .split_once(':')
            .map_or("", |(_, d)| d);
        let prefix = dst.trim_end_matches('*');
        if !prefix.is_empty() {
            out.extend(list_refs(repo, prefix)?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn run_fetch<T>(
    connection: gix::remote::Connection<'_, '_, '_, T>,
    url: &str,
) -> GitResult<Vec<(String, GitId)>>
where
    T: gix::protocol::transport::client::blocking_io::Transport,
{
    let prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(gix_err(format!("listing refs of {url}")))?;
    // Empty remote, or nothing matches our refspecs: gix's `receive()` would report an error
    // ("None of the refspec(s) … matched"), but for a sync transport that's simply "nothing yet".
    if prepare.ref_map().mappings.is_empty() {
        return Ok(Vec::new());
    }
    let interrupt = AtomicBool::new(false);
    let outcome = prepare
        .receive(gix::progress::Discard, &interrupt)
        .map_err(gix_err(format!("fetching from {url}")))?;
    let update_refs = match &outcome.status {
        gix::remote::fetch::Status::NoPackReceived { update_refs, .. }
        | gix::remote::fetch::Status::Change { update_refs, .. } => update_refs,
    };
    let map = &outcome.ref_map;
    let mut fetched = Vec::new();
    let mut rejected = Vec::new();
    for (update, mapping, _spec, _edit) in
        update_refs.iter_mapping_updates(&map.mappings, &map.refspecs, &map.extra_refspecs)
    {
        let Some(local) = mapping.local.as_ref() else {
            continue;
        };
        let local = local.to_str_lossy().into_owned();
        match &update.mode {
            UpdateMode::NoChangeNeeded
            | UpdateMode::FastForward
            | UpdateMode::Forced
            | UpdateMode::New
            | UpdateMode::ImplicitTagNotSentByRemote => {
                if let Some(id) = mapping.remote.as_id() {
                    fetched.push((local, id.to_owned()));
                }
            }
            rejected_mode => rejected.push((local, rejected_mode.to_string())),
        }
    }
    if !rejected.is_empty() {
        return Err(GitError::FetchRejected {
            url: url.to_owned(),
            rejected,
        });
    }
    fetched.sort();
    Ok(fetched)
}

// ---------------------------------------------------------------------------
// Push (git binary)
// ---------------------------------------------------------------------------

/// One ref update for [`push`]: `(local ref or hex oid, remote ref, expected old remote value)`.
/// An empty source deletes the remote ref. `None` as expected value means "must not exist".
pub type PushUpdate<'a> = (&'a str, &'a str, Option<GitId>);

/// [`push_with_timeout`] with [`DEFAULT_PUSH_TIMEOUT`].
pub fn push(mirror_path: &Path, url: &str, updates: &[PushUpdate<'_>]) -> GitResult<()> {
    push_with_timeout(mirror_path, url, updates, DEFAULT_PUSH_TIMEOUT)
}

/// Push from the bare mirror at `mirror_path` to `url` using `git push --porcelain` with one
/// `--force-with-lease=<remote ref>:<expected>` per update (never a `+` refspec).
///
/// Per-ref refusals are returned as [`GitError::PushRejected`] (see [`RejectKind`]; other refs
/// of the same push may have been updated); anything else (unreachable remote, bad input, …) as
/// [`GitError::PushFailed`]. The `git` process is killed after `timeout`.
pub fn push_with_timeout(
    mirror_path: &Path,
    url: &str,
    updates: &[PushUpdate<'_>],
    timeout: Duration,
) -> GitResult<()> {
    push_with_options(mirror_path, url, updates, timeout, false)
}

/// [`push_with_timeout`], with `atomic`: `git push --atomic`, so that one refused ref (a stale
/// lease) leaves every ref on the remote unchanged.
pub fn push_with_options(
    mirror_path: &Path,
    url: &str,
    updates: &[PushUpdate<'_>],
    timeout: Duration,
    atomic: bool,
) -> GitResult<()> {
    if updates.is_empty() {
        return Ok(());
    }
    let mut cmd = supervised_git();
    cmd.arg("--git-dir")
        .arg(mirror_path)
        .args(["push", "--porcelain", "--no-verify"]);
    if atomic {
        cmd.arg("--atomic");
    }
    for (src, dst, expected) in updates {
        validate_ref_name(dst)?;
        if src.starts_with('+') || src.contains(':') || dst.contains(':') {
            return Err(GitError::InvalidInput(format!(
                "push source {src:?} / destination {dst:?} must not contain '+' or ':'"
            )));
        }
        let expect = expected.map(|o| o.to_string()).unwrap_or_default();
        cmd.arg(format!("--force-with-lease={dst}:{expect}"));
    }
    cmd.arg("--").arg(url);
    for (src, dst, _) in updates {
        cmd.arg(format!("{src}:{dst}"));
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS", "")
        .env("LC_ALL", "C")
        .env("LANGUAGE", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let (status, stdout, stderr) = run_with_timeout(cmd, timeout, "git push")?;

    let mut seen: Vec<&str> = Vec::new();
    let mut rejected = Vec::new();
    for line in stdout.lines() {
        // Porcelain: "<flag>\t<from>:<to>\t<summary>" (+ "To <url>" and "Done" lines).
        let mut fields = line.splitn(3, '\t');
        let (Some(flag), Some(refs), Some(summary)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((_, to)) = refs.rsplit_once(':') else {
            continue;
        };
        seen.push(to);
        if flag == "!" {
            rejected.push(PushRejection {
                remote_ref: to.to_owned(),
                kind: classify_rejection(summary),
                detail: summary.to_owned(),
            });
        }
    }
    if !rejected.is_empty() {
        return Err(GitError::PushRejected {
            url: url.to_owned(),
            rejected,
        });
    }
    let all_reported = updates.iter().all(|(_, dst, _)| seen.contains(dst));
    if !status.success() || !all_reported {
        return Err(GitError::PushFailed {
            url: url.to_owned(),
            status: status.to_string(),
            stderr: stderr.trim().to_owned(),
        });
    }
    Ok(())
}

fn classify_rejection(summary: &str) -> RejectKind {
    if summary.contains("[remote rejected]") {
        RejectKind::RemoteRejected
    } else if summary.contains("stale info") {
        RejectKind::StaleLease
    } else if summary.contains("non-fast-forward")
        || summary.contains("fetch first")
        || summary.contains("already exists")
    {
        RejectKind::NonFastForward
    } else {
        RejectKind::Other
    }
}

/// The supervisor every `git` child runs under (POSIX `sh`, argv: `git …`). It starts git in
/// the background, in the supervisor's own process group, and watches its stdin, a pipe whose
/// only writer is this process: when that pipe reaches end-of-file — this process exited,
/// however it died, `kill -9` included — it kills its whole process group (git and every
/// helper git started: `pack-objects`, `ssh`, a local `receive-pack`). So no git process outlives
/// shelldone, and no `unsafe` `pre_exec` is needed. When git exits first, the supervisor
/// stops its watcher and exits with git's status.
const SUPERVISOR: &str = r#"exec 3<&0 0</dev/null
"$@" 3<&- &
child=$!
{ while read -r _ <&3; do :; done; kill -s KILL 0; } &
watcher=$!
wait "$child"
status=$?
kill "$watcher" 2>/dev/null
exit "$status""#;

/// A `git` command under [`SUPERVISOR`]; arguments added to it go to git. Run it with
/// [`run_with_timeout`], which gives it its own process group and the watchdog pipe.
fn supervised_git() -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", SUPERVISOR, "shelldone-git-supervisor", "git"]);
    cmd
}

/// Kills the supervised process group of a child still running when dropped (an error or a
/// timeout in this process), so that git never outlives the call.
struct GroupGuard {
    pid: Option<rustix::process::Pid>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // The group may be gone already; nothing else to do then.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Run `cmd` (a [`supervised_git`] command, stdout/stderr piped) in a new process group whose
/// stdin is the supervisor's watchdog pipe, killing the whole group if it doesn't finish within
/// `timeout`.
fn run_with_timeout(
    mut cmd: Command,
    timeout: Duration,
    what: &str,
) -> GitResult<(std::process::ExitStatus, String, String)> {
    use std::os::unix::process::CommandExt;
    // Its own group: the supervisor's `kill 0` must reach git and its helpers, never this
    // process or its caller's group.
    cmd.process_group(0).stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(io_err(format!("spawning {what}")))?;
    let mut guard = GroupGuard {
        pid: Some(rustix::process::Pid::from_child(&child)),
    };
    // Held open until the child is reaped; dropping it (or dying) tells the supervisor to kill.
    let watchdog = child.stdin.take();
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                // A read error just truncates the captured output.
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                drop(guard); // kills the whole group, git's helpers included
                let _ = child.wait();
                drop(watchdog);
                // The readers finish once the pipes close; don't wait on them.
                return Err(GitError::Timeout {
                    what: what.to_owned(),
                    timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                drop(guard);
                let _ = child.wait();
                return Err(io_err(format!("waiting for {what}"))(e));
            }
        }
    };
    // The supervisor exits only after git did and after stopping its watcher, so the group is
    // empty; once the leader is reaped its id may be reused, so it is not signalled again.
    guard.pid = None;
    drop(watchdog);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok((status, stdout, stderr))
}

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
