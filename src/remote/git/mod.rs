//! A git repository as a remote, through a local bare mirror (`<snapshots>/remotes/<name>.git`).
//!
//! Objects are mapped deterministically, so two devices produce identical git ids and the
//! remote is an ordinary repository (`git clone`, `git log refs/heads/<device>`):
//! * a blob (file content, symlink target) → a git blob of the same bytes; a chunked file → ONE
//!   git blob of the whole content (re-chunked with `chunk_lengths` on import);
//! * a tree → a git tree: file 100644 (100755 when executable), dir 040000, symlink 120000;
//! * a snapshot → a commit: tree = mapped root, parents = mapped parents in order, author =
//!   committer = `<device> <device@shelldone.invalid>` at the snapshot second, `+0000`, one
//!   extra header `shelldone-snapshot <hex of the canonical snapshot bytes>`, and a message for
//!   people: the snapshot message (or `shelldone snapshot`), `Saved by <device> at <time>.`, and
//!   one short trailer `Shelldone-Snapshot: <snapshot id>` (see [`commit_message`]). Commits of
//!   the first revision (no header; the whole canonical snapshot in hex in the trailer,
//!   [`legacy_commit_message`]) are still read, and verified in their own form.
//!
//! Entry names git refuses (`.git` and its variants; see [`crate::snapshot::policy::git_name`])
//! are escaped reversibly, so the mapping takes every tree a snapshot may hold.
//!
//! Bounds: every git object is at most [`MAX_GIT_OBJECT`] bytes, checked from its header before
//! it is inflated (and by gix's allocation limit while a fetched pack is indexed), so a small
//! pack that inflates to gigabytes is refused without holding it; a push refuses a file over that
//! size, which no puller would take. An import reads one object at a time.
//!
//! Import rebuilds every shelldone object from the git objects, checks the rebuilt root against
//! the snapshot in the trailer, each parent commit against `snapshot.parents[i]` and the commit
//! against the one this mapping would write, so the whole Merkle structure is verified before
//! the snapshot is staged.
//!
//! Remote refs: `refs/shelldone/<device>/head`, `refs/shelldone/<device>/sessions/<x>`, and
//! `refs/heads/<device>` mirroring the head for browsing. Pushes use one `git push --atomic`
//! with a `--force-with-lease` per ref (never a `+` refspec). The branch the remote's `HEAD`
//! names (`main` on a fresh repository) is created by the first device that pushes a head and
//! then follows that device's head (a separate push after the atomic one, best effort), so
//! `git clone URL` checks out a snapshot's files.
//!
//! The id mapping is cached in `<mirror>/shelldone-idmap` (52-byte records: shelldone id, git
//! id). It is derived data: only pairs this code computed itself are recorded, and deleting the
//! file only costs a re-conversion.

mod export;
mod import;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use std::time::Duration;

use fs_err as fs;
use gix::ObjectId as GitId;
use objects_format::{ObjectId, Snapshot};

use super::dir::{check_remote_ref, ref_component_ok};
use super::gitmirror::{self, GitError, PushRejection, RejectKind};
use super::verify::{Checker, Limits};
use super::{Progress, RefUpdate, Remote, TransferStats};
use crate::error::{Error, Result, chain};
use crate::store::{Batch, ObjectStore};
use export::Conv;
use import::{Import, read_commit};

/// The ref (under `refs/shelldone/`) naming the remote's mapping version `<N>`; absent means 1.
const FORMAT_REF: &str = "format/";

/// What the blob a `format/<N>` ref names holds: `shelldone-git-remote <N>` (for people; the
/// version is read from the ref's name).
const GIT_MARKER_PREFIX: &str = "shelldone-git-remote";

/// The commit-message trailer naming the snapshot (its id; in the first revision's commits, the
/// whole canonical snapshot in hex).
pub const TRAILER: &str = "Shelldone-Snapshot: ";

/// The commit header carrying the canonical snapshot (hex), out of sight of `git log`.
pub const HEADER: &str = "shelldone-snapshot";

/// The idle timeout's environment variable (seconds, fractions allowed), over
/// [`GitOptions::default`].
pub const IDLE_TIMEOUT_ENV: &str = "SHELLDONE_GIT_IDLE_TIMEOUT";

/// Settings of a git remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GitOptions {
    /// A push is stopped once no byte moved for this long (no limit on the total time).
    pub idle_timeout: Duration,
    /// The same for a fetch.
    pub fetch_idle_timeout: Duration,
}

impl Default for GitOptions {
    fn default() -> Self {
        GitOptions {
            idle_timeout: gitmirror::DEFAULT_IDLE_TIMEOUT,
            fetch_idle_timeout: gitmirror::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl GitOptions {
    /// The defaults, with [`IDLE_TIMEOUT_ENV`] applied when it is set.
    ///
    /// # Errors
    /// [`Error::Usage`] when the variable is not a positive number of seconds.
    pub fn from_env() -> Result<GitOptions> {
        GitOptions::configured(None, None)
    }

    /// The defaults, then the config file's push and fetch timeouts, then [`IDLE_TIMEOUT_ENV`]
    /// over both.
    ///
    /// # Errors
    /// [`Error::Usage`] when the variable is not a positive number of seconds.
    pub fn configured(push: Option<Duration>, fetch: Option<Duration>) -> Result<GitOptions> {
        let mut o = GitOptions::default();
        if let Some(t) = push {
            o.idle_timeout = t;
        }
        if let Some(t) = fetch {
            o.fetch_idle_timeout = t;
        }
        if let Some(t) = crate::config::env_seconds(IDLE_TIMEOUT_ENV)? {
            if t.is_zero() {
                return Err(Error::Usage(format!(
                    "{IDLE_TIMEOUT_ENV}=0: expected more than 0 seconds"
                )));
            }
            o.idle_timeout = t;
            o.fetch_idle_timeout = t;
        }
        Ok(o)
    }
}

/// The two forms of a snapshot's commit (both are read; only [`CommitFormat::V2`] is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFormat {
    /// The first revision: the canonical snapshot in hex in the message's trailer.
    Legacy,
    /// The canonical snapshot in the `shelldone-snapshot` header; a message for people.
    V2,
}

/// File in the mirror caching the id mapping.
pub const IDMAP_FILE: &str = "shelldone-idmap";

const RECORD: usize = 32 + 20;

/// Largest git object read from or written to a git remote (blob, tree or commit), the format's
/// own bound on an object. A file stored as one git blob is therefore at most 64 MiB on a git
/// remote (a directory remote stores big files as chunks and has no such limit), and a commit's
/// trailer carries a snapshot of up to about 32 MiB.
pub const MAX_GIT_OBJECT: u64 = objects_format::MAX_OBJECT_SIZE as u64;

/// A git remote.
pub struct GitRemote {
    name: String,
    url: String,
    mirror: PathBuf,
    device: String,
    limits: Limits,
    options: GitOptions,
    repo: Option<gix::Repository>,
    map: IdMap,
    /// Remote ref name → (commit, snapshot in its trailer), from the last fetch of refs.
    tips: BTreeMap<String, (GitId, ObjectId)>,
    /// The remote's `HEAD` and branches, from the last fetch of refs.
    head: gitmirror::RemoteHead,
    /// The mirror drops blobs once the remote or the store holds them (ADR 0007): every
    /// transport but http(s), whose fetches always ask for a thin pack.
    lean: bool,
    /// The `refs/shelldone/format/<N>` refs found by the last fetch of refs: version → git id.
    formats: BTreeMap<u32, GitId>,
}

impl std::fmt::Debug for GitRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRemote")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("mirror", &self.mirror)
            .finish()
    }
}

/// shelldone id ↔ git id, persisted as appended records.
#[derive(Debug, Default)]
struct IdMap {
    path: PathBuf,
    fwd: HashMap<ObjectId, GitId>,
    rev: HashMap<GitId, ObjectId>,
    pending: Vec<u8>,
}

impl IdMap {
    fn load(path: PathBuf) -> Result<IdMap> {
        let mut m = IdMap {
            path,
            ..IdMap::default()
        };
        let data = match std::fs::read(&m.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(m),
            Err(e) => return Err(e.into()),
        };
        let whole = data.len() - data.len() % RECORD;
        if whole != data.len() {
            // A torn last record (crash while appending): drop it so later records stay aligned.
            fs::OpenOptions::new()
                .write(true)
                .open(&m.path)?
                .set_len(whole as u64)?;
        }
        for r in data[..whole].chunks_exact(RECORD) {
            let sid = ObjectId(r[..32].try_into().expect("32 bytes"));
            let gid = GitId::from_bytes_or_panic(&r[32..]);
            m.fwd.insert(sid, gid);
            m.rev.insert(gid, sid);
        }
        Ok(m)
    }

    fn insert(&mut self, sid: ObjectId, gid: GitId) {
        if self.fwd.insert(sid, gid) != Some(gid) {
            self.pending.extend_from_slice(&sid.0);
            self.pending.extend_from_slice(gid.as_slice());
        }
        self.rev.insert(gid, sid);
    }

    fn flush(&mut self) -> Result<()> {
        self.append(false)
    }

    /// [`IdMap::flush`], durably: before the mirror drops a blob, the record that lets it be
    /// written again from the store must be on disk.
    fn sync(&mut self) -> Result<()> {
        self.append(true)
    }

    fn append(&mut self, durable: bool) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(&self.pending)?;
        if durable {
            f.sync_data()?;
        }
        self.pending.clear();
        Ok(())
    }
}

/// The snapshot message as a commit message's first part (NUL replaced, never empty).
fn message_text(s: &Snapshot) -> String {
    if s.message.is_empty() {
        "shelldone snapshot".to_owned()
    } else {
        s.message.replace('\0', "\u{fffd}")
    }
}

/// The commit message for snapshot `sid`: the snapshot message, who saved it when, and one
/// short trailer naming the snapshot. (The snapshot itself travels in the [`HEADER`].)
#[must_use]
pub fn commit_message(s: &Snapshot, sid: &ObjectId) -> String {
    let when = gix::date::Time {
        seconds: s.time_ns.div_euclid(1_000_000_000),
        offset: 0,
    }
    .format_or_unix(gix::date::time::format::ISO8601);
    let (device, _) = ident(&s.device);
    format!(
        "{}\n\nSaved by {device} at {when}.\n\n{TRAILER}{sid}\n",
        message_text(s)
    )
}

/// The first revision's commit message: the snapshot message and the whole canonical snapshot
/// in hex as its trailer (read, never written any more).
#[must_use]
pub fn legacy_commit_message(s: &Snapshot, canonical: &[u8]) -> String {
    format!(
        "{}\n\n{TRAILER}{}\n",
        message_text(s),
        hex::encode(canonical)
    )
}

/// Writes the commit of snapshot `s` (whose canonical bytes are `canonical`) in `format`, with
/// the given tree and parents.
///
/// # Errors
/// The snapshot's commit cannot be written (see [`gitmirror::write_commit_with_header`]).
pub fn write_snapshot_commit(
    repo: &gix::Repository,
    tree: GitId,
    parents: &[GitId],
    s: &Snapshot,
    canonical: &[u8],
    format: CommitFormat,
) -> std::result::Result<GitId, GitError> {
    let (name, email) = ident(&s.device);
    let time = s.time_ns.div_euclid(1_000_000_000);
    match format {
        CommitFormat::Legacy => gitmirror::write_commit(
            repo,
            tree,
            parents,
            &legacy_commit_message(s, canonical),
            time,
            &name,
            &email,
        ),
        CommitFormat::V2 => {
            let sid = ObjectId::compute(objects_format::Kind::Snapshot, canonical);
            let value = hex::encode(canonical);
            gitmirror::write_commit_with_header(
                repo,
                tree,
                parents,
                &commit_message(s, &sid),
                time,
                (&name, &email),
                Some((HEADER, value.as_bytes())),
            )
        }
    }
}

/// Author/committer name and email for a device.
#[must_use]
pub fn ident(device: &str) -> (String, String) {
    let name: String = device
        .chars()
        .map(|c| {
            if matches!(c, '<' | '>' | '\n' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let name = name.trim();
    let name = if name.is_empty() {
        "unknown".to_owned()
    } else {
        name.to_owned()
    };
    let local: String = device
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let local = if local.is_empty() {
        "unknown".to_owned()
    } else {
        local
    };
    (name, format!("{local}@shelldone.invalid"))
}

/// The canonical snapshot bytes of a commit and the form it was written in: from its
/// [`HEADER`], or else (a first-revision commit) from its message's trailer.
fn parse_commit(message: &[u8], header: Option<&[u8]>) -> Option<(Vec<u8>, CommitFormat)> {
    match header {
        Some(h) => hex::decode(h).ok().map(|c| (c, CommitFormat::V2)),
        None => parse_trailer(message).map(|c| (c, CommitFormat::Legacy)),
    }
}

/// Extracts the canonical snapshot bytes from a first-revision commit message's trailer (read
/// in place: the message is not copied).
fn parse_trailer(message: &[u8]) -> Option<Vec<u8>> {
    let needle = format!("\n\n{TRAILER}");
    let at = message
        .windows(needle.len())
        .rposition(|w| w == needle.as_bytes())?;
    let rest = &message[at + needle.len()..];
    let hex_part = rest.strip_suffix(b"\n")?;
    hex::decode(hex_part).ok()
}

/// A [`GitError`] as an [`Error::Remote`] of `remote` (kept as its source), transient when git
/// could not reach it.
fn git_error(remote: &str, e: GitError) -> Error {
    let transient = e.is_transient();
    Error::remote_from(remote, transient, e)
}

/// A [`GitError`] as an [`Error::Remote`] of `remote` whose message starts with `context`.
fn git_error_in(remote: &str, context: String, e: GitError) -> Error {
    let transient = e.is_transient();
    Error::Remote {
        remote: remote.to_owned(),
        why: format!("{context}: {}", chain(&e)),
        transient,
        source: Some(Box::new(e)),
    }
}

impl GitRemote {
    /// A remote named `name` at `url`, mirrored in `<snapshots_dir>/remotes/<name>.git`, used by
    /// device `device`.
    ///
    /// The idle timeout is [`GitOptions::from_env`]'s; [`GitRemote::with_options`] replaces it.
    ///
    /// # Errors
    /// An invalid remote name or [`IDLE_TIMEOUT_ENV`] value; I/O errors reading the id map.
    pub fn new(name: &str, url: &str, snapshots_dir: &Path, device: &str) -> Result<GitRemote> {
        if !ref_component_ok(name) {
            return Err(Error::Usage(format!("invalid remote name {name:?}")));
        }
        let mirror = snapshots_dir.join("remotes").join(format!("{name}.git"));
        let map = IdMap::load(mirror.join(IDMAP_FILE))?;
        Ok(GitRemote {
            name: name.to_owned(),
            url: url.to_owned(),
            mirror,
            device: device.to_owned(),
            limits: Limits::default(),
            options: GitOptions::from_env()?,
            repo: None,
            map,
            tips: BTreeMap::new(),
            head: gitmirror::RemoteHead::default(),
            lean: gitmirror::lean_capable(url),
            formats: BTreeMap::new(),
        })
    }

    /// Raises the remote's mapping version to this shelldone's (`remote upgrade`;
    /// docs/migrations.md, "Remote versions"): pushes `refs/shelldone/format/<N>`, naming a
    /// blob that holds `shelldone-git-remote <N>`, and deletes an older `format/<M>` ref in the
    /// same atomic push, each with a lease on the value just fetched (another device that
    /// upgrades meanwhile makes it fail, changing nothing). From then on a binary that reads
    /// only older mappings refuses the remote, naming both versions. Returns (version before,
    /// version after); nothing is pushed when the remote is already at this version.
    ///
    /// # Errors
    /// A remote newer than this binary ([`Error::NewerFormat`], before anything is pushed);
    /// fetch and push errors.
    pub fn upgrade(&mut self) -> Result<(u32, u32)> {
        self.refresh()?;
        let from = self.formats.keys().next_back().copied().unwrap_or(1);
        let to = crate::remote::format::supported();
        if to <= from {
            return Ok((from, from));
        }
        let repo = self.repo.as_ref().expect("opened by refresh");
        let blob = gitmirror::write_blob(
            repo,
            crate::remote::format::marker_line(GIT_MARKER_PREFIX, to).as_bytes(),
        )
        .map_err(|e| self.git_err(e))?;
        let mut plan = vec![(
            blob.to_string(),
            format!("refs/shelldone/{FORMAT_REF}{to}"),
            None,
        )];
        for (v, gid) in &self.formats {
            plan.push((
                String::new(),
                format!("refs/shelldone/{FORMAT_REF}{v}"),
                Some(*gid),
            ));
        }
        push_atomic(
            &self.mirror,
            &self.url,
            &plan,
            self.options.idle_timeout,
            self.lean,
        )
        .map_err(|e| self.git_err(e))?;
        Ok((from, to))
    }

    /// Replaces the settings (the idle timeout).
    #[must_use]
    pub fn with_options(mut self, options: GitOptions) -> Self {
        self.options = options;
        self
    }

    /// The settings in use.
    #[must_use]
    pub fn options(&self) -> GitOptions {
        self.options
    }

    /// Replaces the import limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The bare mirror.
    #[must_use]
    pub fn mirror(&self) -> &Path {
        &self.mirror
    }

    /// The git commit a snapshot maps to, when known (pushed or fetched through this mirror).
    #[must_use]
    pub fn git_id_of(&self, snapshot: &ObjectId) -> Option<GitId> {
        self.map.fwd.get(snapshot).copied()
    }

    fn err(&self, why: impl Into<String>) -> Error {
        Error::remote(&self.name, why)
    }

    fn git_err(&self, e: GitError) -> Error {
        git_error(&self.name, e)
    }

    fn ensure_repo(&mut self) -> Result<()> {
        if self.repo.is_none() {
            if let Some(p) = self.mirror.parent() {
                fs::create_dir_all(p)?;
            }
            let repo = gitmirror::open_or_init_bare(&self.mirror).map_err(|e| self.git_err(e))?;
            self.repo = Some(repo);
        }
        Ok(())
    }

    fn tracking_prefix(&self) -> String {
        format!("refs/remotes/{}/shelldone/", self.name)
    }

    /// Fetches the remote's shelldone refs into the mirror and maps them to snapshots.
    fn refresh(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        self.ensure_repo()?;
        let track = self.tracking_prefix();
        let spec = format!("+refs/shelldone/*:{track}*");
        let repo = self.repo.as_ref().expect("opened");
        let (fetched, head) = gitmirror::fetch_full(
            repo,
            &self.url,
            &[&spec],
            self.options.fetch_idle_timeout,
            self.limits.max_bytes,
        )
        .map_err(|e| {
            let why = chain(&e);
            if why.contains("too large to fit in memory") {
                // gix refused from the declared sizes, before inflating anything.
                self.err(format!(
                    "fetch from {} refused: the remote sent an object (or a pack) over the limit of {} bytes per object; nothing was stored ({why})",
                    self.url,
                    gitmirror::ALLOC_LIMIT
                ))
            } else {
                self.git_err(e)
            }
        })?;
        let present: HashSet<&str> = fetched.iter().map(|(l, _)| l.as_str()).collect();
        for (r, _) in gitmirror::list_refs(repo, &track).map_err(|e| self.git_err(e))? {
            if !present.contains(r.as_str()) {
                gitmirror::delete_ref(repo, &r).map_err(|e| self.git_err(e))?;
            }
        }
        let mut tips = BTreeMap::new();
        let mut formats = BTreeMap::new();
        for (local, gid) in &fetched {
            let name = local.strip_prefix(&track).unwrap_or(local);
            // The mapping's version: `refs/shelldone/format/<N>`, absent for version 1 (no
            // device ref has this shape). A newer one is refused before anything is read or
            // pushed (docs/migrations.md, "Remote versions").
            if let Some(v) = name
                .strip_prefix(FORMAT_REF)
                .and_then(|v| v.parse::<u32>().ok())
            {
                if v > crate::remote::format::supported() {
                    return Err(crate::remote::format::newer(&self.name, v));
                }
                formats.insert(v, *gid);
                continue;
            }
            check_remote_ref(name).map_err(|_| {
                self.err(format!(
                    "remote ref refs/shelldone/{name} is not a shelldone ref name"
                ))
            })?;
            let sid = match self.map.rev.get(gid) {
                Some(s) => *s,
                None => read_commit(repo, *gid, &self.name)?.sid,
            };
            tips.insert(name.to_owned(), (*gid, sid));
        }
        let out = tips.iter().map(|(n, (_, s))| (n.clone(), *s)).collect();
        self.tips = tips;
        self.formats = formats;
        self.head = head;
        Ok(out)
    }

    /// A failed `git push` as shelldone's error: a stale lease is the [`Error::RefConflict`] of
    /// the first ref it names (the caller fetches, merges and tries again).
    fn push_error(&self, updates: &[RefUpdate], e: GitError) -> Error {
        let GitError::PushRejected { rejected, .. } = &e else {
            return self.git_err(e);
        };
        let stale: Vec<&PushRejection> = rejected
            .iter()
            .filter(|r| r.kind == RejectKind::StaleLease)
            .collect();
        let Some(r) = stale
            .iter()
            .find(|r| r.remote_ref.starts_with("refs/shelldone/"))
            .or(stale.first())
        else {
            return self.git_err(e);
        };
        let name = match r.remote_ref.strip_prefix("refs/shelldone/") {
            Some(n) => n.to_owned(),
            None => format!(
                "{}/head",
                r.remote_ref
                    .strip_prefix("refs/heads/")
                    .unwrap_or(&r.remote_ref)
            ),
        };
        let u = updates.iter().find(|u| u.name == name);
        Error::RefConflict {
            name,
            expected: u
                .and_then(|u| u.expected)
                .map_or_else(|| "absent".into(), |s| s.to_hex()),
            found: "a different value on the remote".into(),
        }
    }

    /// After this device's head moved on the remote from `old` to `new` (git ids): creates the
    /// branch the remote's `HEAD` names when it does not exist yet, or moves it along when it
    /// was at `old` (it follows this device), so that `git clone` checks out a snapshot. Best
    /// effort, in a push of its own: the branch is for browsing, and a failure here (another
    /// device claimed it first, someone moved it by hand) changes nothing shelldone reads.
    fn follow_head(&mut self, old: Option<GitId>, new: GitId) {
        let Some(target) = self.head.target.clone() else {
            return;
        };
        if !target.starts_with("refs/heads/") || target == format!("refs/heads/{}", self.device) {
            return;
        }
        let current = self.head.branches.get(&target).copied();
        if current.is_some() && current != old {
            return;
        }
        let plan = [(new.to_string(), target.clone(), current)];
        if push_atomic(
            &self.mirror,
            &self.url,
            &plan,
            self.options.idle_timeout,
            self.lean,
        )
        .is_ok()
        {
            self.head.branches.insert(target, new);
        }
    }
}

/// `git push --porcelain --atomic` with one `--force-with-lease` per ref (see `gitmirror`), and
/// `--no-thin` from a lean mirror.
fn push_atomic(
    mirror: &Path,
    url: &str,
    updates: &[(String, String, Option<GitId>)],
    timeout: Duration,
    lean: bool,
) -> std::result::Result<(), GitError> {
    let refs: Vec<gitmirror::PushUpdate<'_>> = updates
        .iter()
        .map(|(src, dst, old)| (src.as_str(), dst.as_str(), *old))
        .collect();
    let options = gitmirror::PushOptions {
        atomic: true,
        no_thin: lean,
    };
    gitmirror::push_with_options(mirror, url, &refs, timeout, options)
}

impl Remote for GitRemote {
    fn name(&self) -> &str {
        &self.name
    }

    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        self.refresh()
    }

    fn push(
        &mut self,
        store: &ObjectStore,
        updates: &[RefUpdate],
        progress: Progress<'_>,
    ) -> Result<TransferStats> {
        let own = format!("{}/", self.device);
        for u in updates {
            check_remote_ref(&u.name)?;
            if !u.name.starts_with(&own) {
                return Err(Error::Internal(format!(
                    "ref {} is outside this device's namespace {own}",
                    u.name
                )));
            }
        }
        if updates.is_empty() {
            return Ok(TransferStats::default());
        }
        self.ensure_repo()?;
        if self.tips.is_empty() {
            self.refresh()?;
        }
        let repo = self.repo.as_ref().expect("opened");
        let mut conv = Conv {
            repo,
            map: &mut self.map,
            store,
            remote: &self.name,
            written: 0,
            bytes: 0,
            blobs: Vec::new(),
        };
        let res = (|| -> Result<Vec<(String, String, Option<GitId>)>> {
            let mut out = Vec::new();
            for u in updates {
                let new = match u.new {
                    Some(s) => conv.snapshot(&s)?.to_string(),
                    None => String::new(),
                };
                progress(conv.written, None);
                let lease = match u.expected {
                    None => None,
                    Some(s) => Some(match self.tips.get(&u.name) {
                        Some((g, ts)) if *ts == s => *g,
                        _ if store.has(&s) => conv.snapshot(&s)?,
                        _ => {
                            return Err(Error::RefConflict {
                                name: u.name.clone(),
                                expected: s.to_hex(),
                                found: self
                                    .tips
                                    .get(&u.name)
                                    .map_or_else(|| "absent".into(), |t| t.1.to_hex()),
                            });
                        }
                    }),
                };
                out.push((new.clone(), format!("refs/shelldone/{}", u.name), lease));
                if let Some(dev) = u.name.strip_suffix("/head") {
                    out.push((new, format!("refs/heads/{dev}"), lease));
                }
            }
            // What the remote lacks and the mirror dropped is written again from the store.
            let tips: Vec<GitId> = out
                .iter()
                .filter_map(|(src, _, _)| GitId::from_hex(src.as_bytes()).ok())
                .collect();
            let remote_has: Vec<GitId> = self.tips.values().map(|(g, _)| *g).collect();
            let missing = gitmirror::missing_for_push(
                &self.mirror,
                &tips,
                &remote_has,
                self.options.idle_timeout,
            )
            .map_err(|e| git_error(&self.name, e))?;
            for gid in missing {
                conv.restore(gid)?;
            }
            Ok(out)
        })();
        let stats = TransferStats {
            objects: conv.written,
            bytes: conv.bytes,
        };
        let blobs = std::mem::take(&mut conv.blobs);
        self.map.sync()?;
        let outcome = res.and_then(|plan| {
            push_atomic(
                &self.mirror,
                &self.url,
                &plan,
                self.options.idle_timeout,
                self.lean,
            )
            .map(|()| plan)
            .map_err(|e| self.push_error(updates, e))
        });
        // The blobs this push wrote are on the remote now, or written again by the next push:
        // a lean mirror never keeps them. After a failure, the push's own error is the one told.
        let plan = match outcome {
            Ok(plan) => plan,
            Err(e) => {
                if self.lean {
                    let repo = self.repo.as_ref().expect("opened");
                    let _ = gitmirror::drop_loose(repo, &blobs);
                }
                return Err(e);
            }
        };
        let track = self.tracking_prefix();
        let own_head = format!("refs/heads/{}", self.device);
        if let Some((src, _, old)) = plan.iter().find(|p| p.1 == own_head)
            && let Ok(new) = GitId::from_hex(src.as_bytes())
        {
            self.head.branches.insert(own_head.clone(), new);
            self.follow_head(*old, new);
        }
        let repo = self.repo.as_ref().expect("opened");
        for (u, (src, _, _)) in updates
            .iter()
            .zip(plan.iter().filter(|p| p.1.starts_with("refs/shelldone/")))
        {
            let local = format!("{track}{}", u.name);
            match u.new {
                Some(s) => {
                    let g = GitId::from_hex(src.as_bytes()).map_err(|e| self.err(e.to_string()))?;
                    gitmirror::set_ref(repo, &local, g).map_err(|e| self.git_err(e))?;
                    self.tips.insert(u.name.clone(), (g, s));
                }
                None => {
                    gitmirror::delete_ref(repo, &local).map_err(|e| self.git_err(e))?;
                    self.tips.remove(&u.name);
                }
            }
        }
        if self.lean {
            // Only after the tracking refs say what the remote now has.
            let repo = self.repo.as_ref().expect("opened");
            gitmirror::drop_loose(repo, &blobs).map_err(|e| self.git_err(e))?;
        }
        Ok(stats)
    }

    fn fetch(
        &mut self,
        store: &ObjectStore,
        batch: &Batch<'_>,
        wants: &[ObjectId],
        shallow: bool,
        progress: Progress<'_>,
    ) -> Result<TransferStats> {
        if wants.is_empty() {
            return Ok(TransferStats::default());
        }
        self.ensure_repo()?;
        let find = |tips: &BTreeMap<String, (GitId, ObjectId)>, w: &ObjectId| {
            tips.values().find(|(_, s)| s == w).map(|(g, _)| *g)
        };
        if wants.iter().any(|w| find(&self.tips, w).is_none()) {
            self.refresh()?;
        }
        let mut resolved = Vec::new();
        for w in wants {
            let g = find(&self.tips, w)
                .or_else(|| {
                    self.map
                        .fwd
                        .get(w)
                        .copied()
                        .filter(|g| self.repo.as_ref().expect("opened").has_object(g))
                })
                .ok_or_else(|| self.err(format!("snapshot {w} is not on the remote")))?;
            resolved.push((g, *w));
        }
        let repo = self.repo.as_ref().expect("opened");
        let mut imp = Import {
            repo,
            map: &mut self.map,
            store,
            batch,
            checker: Checker::new(&self.name, self.limits),
            remote: &self.name,
            stats: TransferStats::default(),
            progress,
        };
        let res = imp.run(resolved, shallow);
        let stats = imp.stats;
        self.map.flush()?;
        res.map(|()| stats)
    }

    fn settle(&mut self, store: &ObjectStore) -> Result<()> {
        if !self.lean || self.repo.is_none() {
            return Ok(());
        }
        self.map.sync()?;
        let repo = self.repo.as_ref().expect("checked");
        let map = &self.map;
        let droppable = |g: &GitId| map.rev.get(g).is_some_and(|s| store.has(s));
        gitmirror::drop_packed_blobs(repo, &droppable).map_err(|e| self.git_err(e))?;
        // The open repository still maps the packs just deleted, and would take a dropped blob
        // for present (and not write it again); the next use opens the mirror afresh.
        self.repo = None;
        Ok(())
    }

    fn snapshot_graph(
        &mut self,
        store: &ObjectStore,
        wants: &[ObjectId],
        known: &dyn Fn(&ObjectId) -> bool,
    ) -> Result<BTreeMap<ObjectId, Snapshot>> {
        let _ = store;
        let mut out = BTreeMap::new();
        if wants.is_empty() {
            return Ok(out);
        }
        self.ensure_repo()?;
        let find = |tips: &BTreeMap<String, (GitId, ObjectId)>, w: &ObjectId| {
            tips.values().find(|(_, s)| s == w).map(|(g, _)| *g)
        };
        if wants.iter().any(|w| find(&self.tips, w).is_none()) {
            self.refresh()?;
        }
        let mut stack = Vec::new();
        for w in wants {
            let g = find(&self.tips, w)
                .ok_or_else(|| self.err(format!("snapshot {w} is not on the remote")))?;
            stack.push((g, *w));
        }
        let repo = self.repo.as_ref().expect("opened");
        while let Some((gid, expect)) = stack.pop() {
            if out.contains_key(&expect) || known(&expect) {
                continue;
            }
            if out.len() >= super::MAX_GRAPH_SNAPSHOTS {
                return Err(Error::remote(
                    self.name.clone(),
                    format!(
                        "more than {} snapshots in the history; refusing to read more",
                        super::MAX_GRAPH_SNAPSHOTS
                    ),
                ));
            }
            let c = read_commit(repo, gid, &self.name)?;
            if c.sid != expect || c.parents.len() != c.snapshot.parents.len() {
                return Err(Error::remote(
                    self.name.clone(),
                    format!("commit {gid} does not hold snapshot {expect} with its parents"),
                ));
            }
            stack.extend(
                c.parents
                    .iter()
                    .copied()
                    .zip(c.snapshot.parents.iter().copied()),
            );
            // The mapping is a verified fact about the commit; fetch resolves history by it.
            self.map.insert(c.sid, gid);
            out.insert(c.sid, c.snapshot);
        }
        self.map.flush()?;
        Ok(out)
    }
}
