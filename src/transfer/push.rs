//! Push: what the backend lacks, then the refs.

use std::collections::{HashMap, HashSet};

use objects_format::{Kind, ObjectId};

use crate::error::{Error, Result};
use crate::remote::dir::check_remote_ref;
use crate::remote::{Backend, Outgoing, Progress, RefUpdate, TransferStats, verify};
use crate::store::ObjectStore;
use crate::store::walk::{self, Enter, Node, Visitor};

/// Ids asked about in one [`Backend::has`] call.
pub const HAS_BATCH: usize = 1024;

/// Sends every object reachable from the `new` ids of `updates` that the backend lacks, then
/// applies the updates with compare-and-swap. The whole local history is walked and every
/// object asked about (a folder synced by another tool may hold a tree without its children);
/// a parent snapshot this store lacks (history fetched shallow) is left out. A failure at any
/// point leaves the backend's refs unchanged.
///
/// # Errors
/// A bad ref name, a local object missing or corrupt, the backend's errors,
/// [`Error::RefConflict`] on a lost race.
pub fn push<B: Backend + ?Sized>(
    store: &ObjectStore,
    backend: &mut B,
    updates: &[RefUpdate],
    progress: Progress<'_>,
) -> Result<TransferStats> {
    for u in updates {
        check_remote_ref(&u.name)?;
    }
    let roots: Vec<(ObjectId, Kind)> = updates
        .iter()
        .filter_map(|u| u.new.map(|id| (id, Kind::Snapshot)))
        .collect();
    let mut lacking = Lacking {
        store,
        backend: &mut *backend,
        tips: roots.iter().map(|r| r.0).collect(),
        asking: Vec::new(),
        send: Vec::new(),
    };
    walk::walk(&mut &*store, &roots, &mut lacking)?;
    lacking.ask()?;
    let mut send = lacking.send;

    // Children first; within a kind, in the order the bytes lie in the store, so each pack
    // block is decompressed once.
    let rank: HashMap<ObjectId, usize> = {
        let mut ids: Vec<ObjectId> = send.iter().map(|(_, id)| *id).collect();
        store.sort_for_reading(&mut ids);
        ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect()
    };
    send.sort_by_key(|(k, id)| (k.code(), rank[id]));
    let total = send.len() as u64;
    let mut stats = TransferStats::default();
    if let Some(sink) = backend.pack_sink() {
        let e = store.export_pack(&send, sink, &|n| progress(n, Some(total)))?;
        stats.objects = e.objects;
        stats.bytes = e.bytes;
        backend.update_refs(updates)?;
        return Ok(stats);
    }
    let mut objects = send.iter().map(|&(kind, id)| -> Result<Outgoing> {
        let raw = store.read_raw(&id)?;
        verify::verify_raw(&id, kind, &raw)?;
        stats.objects += 1;
        stats.bytes += raw.len() as u64;
        progress(stats.objects, Some(total));
        Ok(Outgoing { kind, id, raw })
    });
    backend.put(&mut objects)?;
    backend.update_refs(updates)?;
    Ok(stats)
}

/// The walk of a push: every reachable object's id, asked about in batches.
struct Lacking<'a, B: ?Sized> {
    store: &'a ObjectStore,
    backend: &'a mut B,
    tips: HashSet<ObjectId>,
    /// Reached, not asked about yet.
    asking: Vec<(Kind, ObjectId)>,
    /// The backend lacks these.
    send: Vec<(Kind, ObjectId)>,
}

impl<B: Backend + ?Sized> Lacking<'_, B> {
    fn ask(&mut self) -> Result<()> {
        if self.asking.is_empty() {
            return Ok(());
        }
        let ids: Vec<ObjectId> = self.asking.iter().map(|a| a.1).collect();
        let has = self.backend.has(&ids)?;
        if has.len() != ids.len() {
            return Err(Error::remote(
                self.backend.name(),
                format!("asked about {} objects, answered {}", ids.len(), has.len()),
            ));
        }
        for (a, h) in self.asking.drain(..).zip(has) {
            if !h {
                self.send.push(a);
            }
        }
        Ok(())
    }
}

impl<'s, B: Backend + ?Sized> Visitor<&'s ObjectStore> for Lacking<'_, B> {
    fn enter(&mut self, _: &mut &'s ObjectStore, node: &Node<'_>) -> Result<Enter> {
        if node.kind == Kind::Snapshot && !self.tips.contains(&node.id) && !self.store.has(&node.id)
        {
            return Ok(Enter::Ignore);
        }
        self.asking.push((node.kind, node.id));
        if self.asking.len() >= HAS_BATCH {
            self.ask()?;
        }
        // A blob names nothing: its id is all the walk needs.
        Ok(if node.kind == Kind::Blob {
            Enter::Skip
        } else {
            Enter::Read
        })
    }
}
