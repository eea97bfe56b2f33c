//! Remotes: where objects and refs go for sync. One small trait, two implementations
//! ([`dir::DirRemote`], [`git::GitRemote`]); encryption and signing will wrap a remote as
//! decorators, so nothing here branches on them.
//!
//! Ref names on a remote are `<device>/head` and `<device>/sessions/<session-ref-component>`;
//! a device only ever writes refs under its own `<device>/` namespace, so two devices never race
//! for one ref (and a directory remote synced by Syncthing/NFS needs no lock files).

pub mod dir;
pub mod git;
pub mod gitmirror;
pub mod verify;

use std::collections::BTreeMap;

use objects_format::ObjectId;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::store::{Batch, ObjectStore};

/// At most this many snapshots are read by one [`Remote::snapshot_graph`] walk.
pub const MAX_GRAPH_SNAPSHOTS: usize = 1_000_000;

/// A configured remote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Name (`origin`).
    pub name: String,
    /// URL or path.
    pub url: String,
    /// `git` or `dir`.
    pub kind: String,
}

/// One ref update on the remote (compare-and-swap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// Remote ref name, `<device>/head` or `<device>/sessions/<id>`.
    pub name: String,
    /// What we believe the remote has now (None: absent). The update fails if it differs.
    pub expected: Option<ObjectId>,
    /// The new value (None: delete).
    pub new: Option<ObjectId>,
}

/// Bytes and objects moved by a transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransferStats {
    /// Objects sent or received.
    pub objects: u64,
    /// Bytes sent or received (as stored/transmitted, compressed).
    pub bytes: u64,
}

/// Progress callback: (objects done, objects total if known).
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Sync);

/// A place to sync with.
pub trait Remote {
    /// Display name (remote name or URL) for messages.
    fn name(&self) -> &str;

    /// Every ref on the remote, by remote ref name, as shelldone snapshot ids.
    ///
    /// # Errors
    /// Unreachable remote, malformed refs.
    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>>;

    /// Sends every object reachable from the `new` ids of `updates` that the remote lacks
    /// (children before parents), then applies the ref updates with compare-and-swap.
    /// A failure at any point leaves the remote's refs unchanged.
    ///
    /// # Errors
    /// [`crate::Error::RefConflict`] on a lost race; transport errors.
    fn push(
        &mut self,
        store: &ObjectStore,
        updates: &[RefUpdate],
        progress: Progress<'_>,
    ) -> Result<TransferStats>;

    /// Brings every object reachable from `wants` that `store` lacks into `batch`, verifying
    /// each one (hash, decode, kinds, names) before it is staged. With `shallow`, parents of the
    /// wanted snapshots are not followed.
    ///
    /// # Errors
    /// Corrupt/hostile objects (nothing is staged for them), transport errors.
    fn fetch(
        &mut self,
        store: &ObjectStore,
        batch: &Batch<'_>,
        wants: &[ObjectId],
        shallow: bool,
        progress: Progress<'_>,
    ) -> Result<TransferStats>;

    /// The snapshot objects reachable from `wants` through their parents, read and verified
    /// but not staged: what a partial pull plans with. The walk does not go past snapshots for
    /// which `known` is true (the local store has them and their history).
    ///
    /// # Errors
    /// Corrupt/hostile snapshots, more than [`MAX_GRAPH_SNAPSHOTS`], transport errors.
    fn snapshot_graph(
        &mut self,
        store: &ObjectStore,
        wants: &[ObjectId],
        known: &dyn Fn(&ObjectId) -> bool,
    ) -> Result<BTreeMap<ObjectId, objects_format::Snapshot>>;
}

/// What kind of remote a URL names: a git remote for URLs with a scheme git understands
/// (`git://`, `ssh://`, `http(s)://`, `file://`), `user@host:path`, a path ending in `.git`, or a
/// path to an existing git repository; a directory remote for any other path.
#[must_use]
pub fn is_git_url(url: &str) -> bool {
    let schemes = [
        "git://",
        "ssh://",
        "http://",
        "https://",
        "file://",
        "git+ssh://",
    ];
    if schemes.iter().any(|s| url.starts_with(s)) || url.trim_end_matches('/').ends_with(".git") {
        return true;
    }
    if let Some((user_host, _)) = url.split_once(':')
        && user_host.contains('@')
        && !user_host.contains('/')
    {
        return true;
    }
    let p = std::path::Path::new(url);
    p.join("HEAD").is_file() && p.join("objects").is_dir() || p.join(".git").exists()
}
