//! Remotes: where objects and refs go for sync.
//!
//! Two shapes. A plain object store is a [`Backend`]: refs with compare-and-swap, and stored
//! objects by id (has, get, put, in batches); it knows nothing of the graph. The transfer
//! module (`crate::transfer`) walks, verifies and stages over any backend, written once, and
//! presents it as a [`Remote`]. Implementations: [`dir::DirRemote`] (a plain directory),
//! [`s3::S3Remote`] (an S3 bucket or S3-compatible service) and [`memory::MemoryBackend`] (in
//! memory, for tests); decorators wrap a backend without the
//! transfer knowing: [`dryrun::DryRun`] (`sync push --dry-run`), [`crypt::Encrypted`]
//! (`remote add --encrypt`) and [`sign::Signed`] (signed refs, `--require-signatures`). Git, whose mapping is graph-shaped (ADR 0002: a chunk list and its chunks become
//! one git blob), is a [`Remote`] of its own beside them ([`git::GitRemote`]).
//!
//! Ref names on a remote are `<device>/head` and `<device>/sessions/<session-ref-component>`;
//! a device only ever writes refs under its own `<device>/` namespace, so two devices never race
//! for one ref (and a directory remote synced by Syncthing/NFS needs no lock files).

pub mod crypt;
pub mod dir;
pub mod dryrun;
pub mod format;
pub mod git;
pub mod gitblobs;
pub mod gitmirror;
pub mod memory;
pub mod s3;
pub mod sign;
pub mod verify;

use std::collections::BTreeMap;

use objects_format::{Kind, ObjectId};
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
    /// `git`, `dir` or `s3`.
    pub kind: String,
    /// An S3 remote's endpoint (`remote add --endpoint`), over `AWS_ENDPOINT_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// An S3 remote's region (`remote add --region`), over `AWS_REGION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `remote add --encrypt`: the remote receives only ciphertext ([`crypt::Encrypted`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypt: bool,
    /// `--require-signatures` (the default with `--encrypt`): every ref is a signed record
    /// ([`sign::Signed`]), and a ref that is not signed by a trusted device is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_signatures: bool,
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

/// One stored object on its way to a backend: a zstd frame of its canonical bytes (SPEC §7),
/// the bytes a directory remote keeps in `objects/ab/cdef…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its kind (a backend may keep kinds apart; the directory remote does not).
    pub kind: Kind,
    /// Its id.
    pub id: ObjectId,
    /// The stored frame, verified against `id` by the sender.
    pub raw: Vec<u8>,
}

/// A plain object backend: refs, and stored objects by id. It does not know the object
/// graph, and it does not verify what it hands out: the transfer module walks, verifies and
/// stages (see the module docs). A backend may be hostile (a tampered folder, a test's).
pub trait Backend {
    /// Display name (remote name) for messages.
    fn name(&self) -> &str;

    /// Every ref, by remote ref name (`<device>/head`, `<device>/sessions/<x>`).
    ///
    /// # Errors
    /// Unreachable backend, malformed refs.
    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>>;

    /// For each id, whether the backend holds that object.
    ///
    /// # Errors
    /// Unreachable backend.
    fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>>;

    /// For each id, the stored frame, or `None` when the backend does not hold it. A frame
    /// over [`verify::MAX_RAW_OBJECT`] bytes is refused (not read) by a backend that can see
    /// its size first; the transfer refuses it anyway.
    ///
    /// # Errors
    /// Unreachable backend, I/O.
    fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Reads ahead of a walk: for each `(id, bound)`, the stored frame when the backend holds it
    /// and it is at most `bound` bytes, else `None` (the walk then asks [`Backend::get`], which
    /// says what is wrong). A backend whose reads cost a round trip each (S3) answers a batch
    /// at once, several requests at a time, never reading a body over its bound; the default
    /// reads nothing ahead. Errors are `None` too: the walk's own read reports them.
    fn get_ahead(&mut self, wanted: &[(ObjectId, u64)]) -> Vec<Option<Vec<u8>>> {
        vec![None; wanted.len()]
    }

    /// Stores every object the iterator yields, in that order (children before the objects
    /// that name them); all of them are durable when this returns. An error from the iterator
    /// is returned as it is. Objects are content-addressed, so a put interrupted half-way
    /// leaves only harmless extra objects, never a damaged one.
    ///
    /// # Errors
    /// The iterator's errors, I/O.
    fn put(&mut self, objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()>;

    /// Applies `updates` with compare-and-swap: when any ref's current value is not its
    /// `expected`, nothing moves ([`crate::error::Error::RefConflict`]). The transfer calls it
    /// only once every object the new values reach is stored.
    ///
    /// # Errors
    /// A lost race, a bad ref name, I/O.
    fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()>;

    /// Stores `records` (objects the new values name), then applies `updates` as
    /// [`Backend::update_refs`] does. A decorator that keeps each ref's value in a record
    /// (signing, encryption) calls this on the backend it wraps, and one that is wrapped hands
    /// its own records down with the ones it was given: a stack of them stores every record in
    /// one round (one set of syncs, one round of requests) instead of one round each. The
    /// default: [`Backend::put`], then [`Backend::update_refs`].
    ///
    /// # Errors
    /// As [`Backend::put`] and [`Backend::update_refs`].
    fn put_and_update_refs(&mut self, records: Vec<Outgoing>, updates: &[RefUpdate]) -> Result<()> {
        let mut it = records.into_iter().map(Ok);
        self.put(&mut it)?;
        self.update_refs(updates)
    }

    /// A backend that keeps packs (a backup bundle) takes what a push sends as one pack the
    /// store writes ([`ObjectStore::export_pack`]: whole blocks copied as they are) instead of
    /// object by object through [`Backend::put`]. `None`, the default: one by one.
    fn pack_sink(&mut self) -> Option<&mut dyn std::io::Write> {
        None
    }

    /// A backend that is one whole pack, read and verified (a backup bundle), hands it over:
    /// the fetch then checks the structure from its index and stages its entries as they are
    /// instead of asking for objects one by one. `None`, the default.
    fn whole_pack(&self) -> Option<&crate::store::IndexedPack> {
        None
    }
}

/// A backend behind a pointer is a backend: `&mut B` (a test keeps its in-memory backend
/// between transfers) and `Box<B>` (`sync` opens a directory or an S3 remote by its config, and
/// a decorator stack chosen at run time), both through this one forwarding.
impl<P> Backend for P
where
    P: std::ops::DerefMut,
    P::Target: Backend,
{
    fn name(&self) -> &str {
        (**self).name()
    }
    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        (**self).list_refs()
    }
    fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        (**self).has(ids)
    }
    fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
        (**self).get(ids)
    }
    fn get_ahead(&mut self, wanted: &[(ObjectId, u64)]) -> Vec<Option<Vec<u8>>> {
        (**self).get_ahead(wanted)
    }
    fn put(&mut self, objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
        (**self).put(objects)
    }
    fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()> {
        (**self).update_refs(updates)
    }
    fn put_and_update_refs(&mut self, records: Vec<Outgoing>, updates: &[RefUpdate]) -> Result<()> {
        (**self).put_and_update_refs(records, updates)
    }
    fn pack_sink(&mut self) -> Option<&mut dyn std::io::Write> {
        (**self).pack_sink()
    }
    fn whole_pack(&self) -> Option<&crate::store::IndexedPack> {
        (**self).whole_pack()
    }
}

/// A place to sync with, seen as a graph: what `sync` drives. A plain [`Backend`] becomes one
/// through the transfer module; git implements it directly.
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

    /// Called once the objects [`Remote::fetch`] staged are committed to `store`: a remote
    /// that keeps a local cache (a git remote's mirror) may now drop what the store holds.
    ///
    /// # Errors
    /// I/O on the cache.
    fn settle(&mut self, store: &ObjectStore) -> Result<()> {
        let _ = store;
        Ok(())
    }

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

/// The error of a compare-and-swap that found `found` where `update` expected otherwise.
#[must_use]
pub fn ref_conflict(update: &RefUpdate, found: Option<ObjectId>) -> crate::error::Error {
    crate::error::Error::RefConflict {
        name: update.name.clone(),
        expected: update
            .expected
            .map_or_else(|| "absent".into(), |i| i.to_hex()),
        found: found.map_or_else(|| "absent".into(), |i| i.to_hex()),
    }
}
