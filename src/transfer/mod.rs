//! One transfer over any plain backend, written once: push walks the local store from the new
//! heads, asks the backend which objects it lacks (in batches), sends those (children first,
//! each read back and verified) and only then moves the refs with compare-and-swap; fetch walks
//! the backend from the wanted snapshots, gets what this store lacks, verifies each object
//! (`crate::remote::verify`: hash, decode, kind, entry sizes, symlink targets, depth, budget)
//! and the structure under it before staging it into the caller's batch; the caller commits the
//! batch and moves its own refs.
//!
//! The walk is the store's ([`crate::store::walk`]); the backends are `crate::remote`'s
//! ([`Backend`]: a directory, memory, and decorators such as [`crate::remote::dryrun::DryRun`]).
//! [`PlainRemote`] presents a backend driven by this module as the [`Remote`] `sync` uses, beside
//! the git remote, whose mapping is graph-shaped and has its own transfer.
//!
//! Layer: above `remote` and `store`, below the commands.

pub mod fetch;
pub mod push;

use std::collections::BTreeMap;

use objects_format::{ObjectId, Snapshot};

use crate::error::Result;
pub use crate::remote::Backend;
use crate::remote::verify::Limits;
use crate::remote::{Progress, RefUpdate, Remote, TransferStats};
use crate::store::{Batch, ObjectStore};

/// A plain backend, seen as a [`Remote`] through this module.
#[derive(Debug)]
pub struct PlainRemote<B> {
    backend: B,
    limits: Limits,
}

impl<B: Backend> PlainRemote<B> {
    /// `backend`, with the default import limits.
    pub fn new(backend: B) -> Self {
        PlainRemote {
            backend,
            limits: Limits::default(),
        }
    }

    /// Replaces the import limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Gives the backend back.
    pub fn into_backend(self) -> B {
        self.backend
    }
}

impl<B: Backend> Remote for PlainRemote<B> {
    fn name(&self) -> &str {
        self.backend.name()
    }

    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        self.backend.list_refs()
    }

    fn push(
        &mut self,
        store: &ObjectStore,
        updates: &[RefUpdate],
        progress: Progress<'_>,
    ) -> Result<TransferStats> {
        push::push(store, &mut self.backend, updates, progress)
    }

    fn fetch(
        &mut self,
        store: &ObjectStore,
        batch: &Batch<'_>,
        wants: &[ObjectId],
        shallow: bool,
        progress: Progress<'_>,
    ) -> Result<TransferStats> {
        fetch::fetch(
            store,
            batch,
            &mut self.backend,
            self.limits,
            wants,
            shallow,
            progress,
        )
    }

    fn snapshot_graph(
        &mut self,
        store: &ObjectStore,
        wants: &[ObjectId],
        known: &dyn Fn(&ObjectId) -> bool,
    ) -> Result<BTreeMap<ObjectId, Snapshot>> {
        fetch::snapshot_graph(store, &mut self.backend, self.limits, wants, known)
    }
}
