//! Fetching into the mirror: gix for `git://`, `file://` and paths (bounded: connect and I/O
//! timeouts, a cap on received bytes) and `ssh://`, never asking for a thin pack; the `git`
//! binary for http(s).

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::lean::NoThin;
use super::process::{run_with_timeout, supervised_git};
use super::{
    ALLOC_LIMIT, CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, GitError, GitResult, gix_err, io_err,
    list_refs, unreachable_err,
};
use gix::ObjectId as GitId;
use gix::bstr::ByteSlice;
use gix::remote::Direction;
use gix::remote::fetch::refs::update::Mode as UpdateMode;

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
pub(super) struct Capped<R> {
    pub(super) inner: R,
    pub(super) left: u64,
    pub(super) limit: u64,
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

/// A fetch that failed because a socket read or write waited `io_timeout` for nothing, as a
/// [`GitError::Timeout`] saying so (not the bare "Resource temporarily unavailable").
fn stalled(e: GitError, url: &str, io_timeout: Duration) -> GitError {
    let GitError::Gix { source, .. } = &e else {
        return e;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(x) = cause {
        if let Some(io) = x.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        {
            return GitError::Timeout {
                what: format!("git fetch {url}"),
                timeout: io_timeout,
            };
        }
        cause = x.source();
    }
    e
}

/// The remote's `HEAD` and branches, as its ref advertisement shows them (gix transports only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteHead {
    /// The branch `HEAD` names (`refs/heads/main`), whether or not it exists yet; `None` when the
    /// remote did not say (a detached `HEAD`, a transport without the information).
    pub target: Option<String>,
    /// Every `refs/heads/*` branch and its commit.
    pub branches: std::collections::BTreeMap<String, GitId>,
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
    fetch_full(repo, url, refspecs, io_timeout, max_bytes).map(|(f, _)| f)
}

/// [`fetch_bounded`], also returning the remote's `HEAD` and branches (listed from the same ref
/// advertisement; nothing outside `refspecs` is fetched).
pub fn fetch_full(
    repo: &gix::Repository,
    url: &str,
    refspecs: &[&str],
    io_timeout: Duration,
    max_bytes: u64,
) -> GitResult<(Vec<(String, GitId)>, RemoteHead)> {
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
        return fetch_with_git_binary(repo, url, refspecs, io_timeout)
            .map(|f| (f, RemoteHead::default()));
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
        run_fetch(remote.to_connection_with_transport(NoThin(transport)), url)
            .map_err(|e| stalled(e, url, io_timeout))
    } else {
        let options = gix::protocol::transport::client::blocking_io::connect::Options {
            version,
            ..Default::default()
        };
        let transport = gix::protocol::transport::client::blocking_io::connect::connect(
            parsed.clone(),
            options,
        )
        .map_err(gix_err(format!("connecting to {url}")))?;
        run_fetch(remote.to_connection_with_transport(NoThin(transport)), url)
    }
}

pub(super) fn fetch_with_git_binary(
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
        .arg(format!(
            "core.bigFileThreshold={}",
            super::push::BIG_FILE_THRESHOLD
        ))
        .env("GIT_ALLOC_LIMIT", ALLOC_LIMIT.to_string())
        .args([
            "fetch",
            "--progress",
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
    let (status, _, stderr) = run_with_timeout(cmd, io_timeout, &format!("git fetch {url}"))?;
    let stderr = super::push::without_progress(&stderr);
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

pub(super) fn run_fetch<T>(
    connection: gix::remote::Connection<'_, '_, '_, T>,
    url: &str,
) -> GitResult<(Vec<(String, GitId)>, RemoteHead)>
where
    T: gix::protocol::transport::client::blocking_io::Transport,
{
    // Every ref is listed (not only those under the refspecs' prefixes), so that `HEAD` and the
    // branches are seen; only what the refspecs match is fetched.
    let options = gix::remote::ref_map::Options {
        prefix_from_spec_as_filter_on_remote: false,
        ..Default::default()
    };
    let prepare = connection
        .prepare_fetch(gix::progress::Discard, options)
        .map_err(gix_err(format!("listing refs of {url}")))?;
    let mut head = RemoteHead::default();
    for r in &prepare.ref_map().remote_refs {
        use gix::protocol::handshake::Ref;
        match r {
            Ref::Symbolic {
                full_ref_name,
                target,
                ..
            }
            | Ref::Unborn {
                full_ref_name,
                target,
            } if full_ref_name == "HEAD" => {
                head.target = Some(target.to_str_lossy().into_owned());
            }
            Ref::Direct {
                full_ref_name,
                object,
            } if full_ref_name.starts_with(b"refs/heads/") => {
                head.branches
                    .insert(full_ref_name.to_str_lossy().into_owned(), *object);
            }
            _ => {}
        }
    }
    // Empty remote, or nothing matches our refspecs: gix's `receive()` would report an error
    // ("None of the refspec(s) … matched"), but for a sync transport that's simply "nothing yet".
    if prepare.ref_map().mappings.is_empty() {
        return Ok((Vec::new(), head));
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
    Ok((fetched, head))
}

// ---------------------------------------------------------------------------
// Push (git binary)
// ---------------------------------------------------------------------------
