//! `sync status`: each device's head on the remote, ahead/behind the local head.

use std::collections::HashSet;

use serde::Serialize;

use super::graph;
use super::pull::changed_sessions;
use super::remotes::open_remote;
use crate::context::Context;
use crate::error::Result;
use crate::snapshot::{Flat, flatten};
use crate::store::refs::HEAD;

/// Ahead/behind of one device relative to the local head.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    /// Device id.
    pub device: String,
    /// Whether this is the local device.
    pub is_self: bool,
    /// Its head on the remote (hex).
    pub head: String,
    /// Local snapshots it does not have (None: objects not fetched yet).
    pub ahead: Option<usize>,
    /// Its snapshots the local head does not have.
    pub behind: Option<usize>,
    /// Sessions whose content differs between the local head and its head.
    pub sessions_differ: Vec<String>,
}

/// Ahead/behind per device and differing sessions, from the remote's refs.
///
/// # Errors
/// Transport errors.
pub fn sync_status(cx: &Context, remote: &str) -> Result<Vec<DeviceStatus>> {
    // Listing a git remote's refs fetches into its mirror: under the lock like every write.
    let _lock = cx.lock("sync status")?;
    let mut r = open_remote(cx, remote, false)?;
    let refs = r.list_refs()?;
    let local = cx.refs.get(HEAD)?;
    let local_anc = match local {
        Some(l) => graph::ancestors(&cx.objects, l)?,
        None => HashSet::new(),
    };
    let local_flat = match local {
        Some(l) => flatten(&cx.objects, &cx.objects.read_snapshot(&l)?.root)?,
        None => Flat::with_roots(),
    };
    let mut out = Vec::new();
    for (name, id) in &refs {
        let Some(dev) = name.strip_suffix("/head") else {
            continue;
        };
        let (ahead, behind, differ) = if cx.objects.has(id) {
            let theirs = graph::ancestors(&cx.objects, *id)?;
            let tf = flatten(&cx.objects, &cx.objects.read_snapshot(id)?.root)?;
            (
                Some(local_anc.difference(&theirs).count()),
                Some(theirs.difference(&local_anc).count()),
                changed_sessions(&local_flat, &tf),
            )
        } else {
            (None, None, Vec::new())
        };
        out.push(DeviceStatus {
            device: dev.to_owned(),
            is_self: dev == cx.device(),
            head: id.to_hex(),
            ahead,
            behind,
            sessions_differ: differ,
        });
    }
    Ok(out)
}
