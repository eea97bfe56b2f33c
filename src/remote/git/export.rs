//! Push side: snapshots and their objects written to the git mirror as commits, trees and blobs
//! (the mapping of ADR 0002), oldest first, each id remembered in the id map.

use gix::ObjectId as GitId;
use objects_format::{EntryKind, Kind, Object, ObjectId};

use super::{CommitFormat, IdMap, MAX_GIT_OBJECT, git_error, git_error_in, write_snapshot_commit};
use crate::error::{Error, Result};
use crate::remote::gitmirror::{self, GitError, Mode};
use crate::remote::verify;
use crate::snapshot::policy;
use crate::store::ObjectStore;

/// shelldone → git conversion into the mirror.
pub(super) struct Conv<'a> {
    pub(super) repo: &'a gix::Repository,
    pub(super) map: &'a mut IdMap,
    pub(super) store: &'a ObjectStore,
    pub(super) remote: &'a str,
    pub(super) written: u64,
    pub(super) bytes: u64,
    /// Every blob this conversion wrote to the mirror: a lean mirror drops them after the push.
    pub(super) blobs: Vec<GitId>,
}

impl Conv<'_> {
    pub(super) fn gerr(&self, e: GitError) -> Error {
        git_error(self.remote, e)
    }

    pub(super) fn known(&self, sid: &ObjectId) -> Option<GitId> {
        self.map
            .fwd
            .get(sid)
            .copied()
            .filter(|g| self.repo.has_object(g))
    }

    /// A blob the map knows is on the remote or in the mirror (a lean mirror drops blobs; the
    /// push restores what the remote lacks, see [`Conv::restore`]), so it is not looked up.
    fn known_blob(&self, sid: &ObjectId) -> Option<GitId> {
        self.map.fwd.get(sid).copied()
    }

    fn write_blob(&mut self, sid: &ObjectId, data: &[u8]) -> Result<GitId> {
        let g = gitmirror::write_blob(self.repo, data).map_err(|e| self.gerr(e))?;
        self.written += 1;
        self.bytes += data.len() as u64;
        self.blobs.push(g);
        self.map.insert(*sid, g);
        Ok(g)
    }

    pub(super) fn blob(&mut self, sid: &ObjectId) -> Result<GitId> {
        if let Some(g) = self.known_blob(sid) {
            return Ok(g);
        }
        let data = self.store.read_blob(sid)?;
        self.write_blob(sid, &data)
    }

    /// Writes blob `gid` again from the store (it maps to a stored blob or chunk list): a lean
    /// mirror dropped it, and the remote lacks it.
    pub(super) fn restore(&mut self, gid: GitId) -> Result<()> {
        let Some(sid) = self.map.rev.get(&gid).copied() else {
            return Err(Error::remote(
                self.remote.to_owned(),
                format!(
                    "the push needs git object {gid}, which neither the remote nor the mirror {} has, and the id map does not know it; delete that folder (a cache) and push again",
                    gitmirror::mirror_path(self.repo).display()
                ),
            ));
        };
        let v = self.store.read_verified(&sid)?;
        let data = match v.kind {
            Kind::Blob => v.canonical[objects_format::encoding::HEADER_LEN..].to_vec(),
            Kind::ChunkList => {
                let list = self.store.read_chunk_list(&sid)?;
                self.assemble(&sid, &list)?
            }
            other => {
                return Err(Error::Internal(format!(
                    "git blob {gid} maps to {sid}, a {}",
                    other.name()
                )));
            }
        };
        let g = self.write_blob(&sid, &data)?;
        if g != gid {
            return Err(Error::Internal(format!(
                "object {sid} converts to git blob {g}, but the id map says {gid}"
            )));
        }
        Ok(())
    }

    fn assemble(&self, sid: &ObjectId, list: &objects_format::ChunkList) -> Result<Vec<u8>> {
        let mut data = Vec::with_capacity(usize::try_from(list.total_size).unwrap_or(0));
        for c in &list.chunks {
            let b = self.store.read_blob(&c.id)?;
            if b.len() != c.len as usize {
                return Err(Error::CorruptObject {
                    id: *sid,
                    why: format!(
                        "chunk {} holds {} bytes, list says {}",
                        c.id,
                        b.len(),
                        c.len
                    ),
                });
            }
            data.extend_from_slice(&b);
        }
        Ok(data)
    }

    pub(super) fn chunked(&mut self, sid: &ObjectId, path: &[u8]) -> Result<GitId> {
        if let Some(g) = self.known_blob(sid) {
            return Ok(g);
        }
        let list = self.store.read_chunk_list(sid)?;
        if list.total_size > MAX_GIT_OBJECT {
            // Every puller would refuse the blob; refuse it here, before anything moves.
            return Err(Error::remote(
                self.remote.to_owned(),
                format!(
                    "file {} is {} bytes; a git remote takes files up to {MAX_GIT_OBJECT} bytes (a directory remote has no such limit)",
                    crate::snapshot::display(path),
                    list.total_size
                ),
            ));
        }
        let data = self.assemble(sid, &list)?;
        self.write_blob(sid, &data)
    }

    pub(super) fn tree(&mut self, sid: &ObjectId, depth: usize, path: &[u8]) -> Result<GitId> {
        if let Some(g) = self.known(sid) {
            return Ok(g);
        }
        if depth > 256 {
            return Err(Error::CorruptObject {
                id: *sid,
                why: "trees nest deeper than 256".into(),
            });
        }
        let t = self.store.read_tree(sid)?;
        let mut entries = Vec::with_capacity(t.entries.len());
        for e in &t.entries {
            let mut sub = path.to_vec();
            if !sub.is_empty() {
                sub.push(b'/');
            }
            sub.extend_from_slice(&e.name);
            let (mode, oid) = match e.kind {
                EntryKind::File => (
                    if e.executable() {
                        Mode::Executable
                    } else {
                        Mode::File
                    },
                    self.blob(&e.id)?,
                ),
                EntryKind::ChunkedFile => (
                    if e.executable() {
                        Mode::Executable
                    } else {
                        Mode::File
                    },
                    self.chunked(&e.id, &sub)?,
                ),
                EntryKind::Dir => (Mode::Dir, self.tree(&e.id, depth + 1, &sub)?),
                EntryKind::Symlink => (Mode::Symlink, self.blob(&e.id)?),
            };
            entries.push(gitmirror::GitTreeEntry {
                // `.git` and the other names git refuses, escaped (ADR 0002, reserved names).
                name: policy::git_name(&e.name, e.kind).into_owned(),
                mode,
                oid,
            });
        }
        let g = gitmirror::write_tree(self.repo, &entries)
            .map_err(|e| git_error_in(self.remote, format!("cannot map tree {sid} to git"), e))?;
        self.written += 1;
        self.map.insert(*sid, g);
        Ok(g)
    }

    /// Converts a snapshot and its history (iteratively: histories can be long).
    pub(super) fn snapshot(&mut self, sid: &ObjectId) -> Result<GitId> {
        let mut stack = vec![*sid];
        while let Some(&top) = stack.last() {
            if self.known(&top).is_some() {
                stack.pop();
                continue;
            }
            let canonical = self.store.read_canonical(&top)?;
            let Object::Snapshot(s) = verify::verify_canonical(&top, Kind::Snapshot, &canonical)?
            else {
                unreachable!("kind checked")
            };
            let missing: Vec<ObjectId> = s
                .parents
                .iter()
                .filter(|p| self.known(p).is_none())
                .copied()
                .collect();
            if let Some(p) = missing.first() {
                if stack.contains(p) {
                    return Err(Error::CorruptObject {
                        id: top,
                        why: "snapshot history has a cycle".into(),
                    });
                }
                if !self.store.has(p) {
                    return Err(Error::remote(
                        self.remote.to_owned(),
                        format!(
                            "cannot push snapshot {top}: its parent {p} is not in the local store (shallow history?)"
                        ),
                    ));
                }
                stack.extend(missing);
                continue;
            }
            let tree = self.tree(&s.root, 0, b"").map_err(|e| match e {
                Error::Remote {
                    remote,
                    why,
                    transient,
                    source,
                } => Error::Remote {
                    remote,
                    why: format!("cannot push snapshot {top}: {why}"),
                    transient,
                    source,
                },
                other => other,
            })?;
            // The header holds the snapshot in hex, the message its text once more.
            let size = canonical.len() as u64 * 2 + s.message.len() as u64 + 1024;
            if size > MAX_GIT_OBJECT {
                return Err(Error::remote(
                    self.remote.to_owned(),
                    format!(
                        "cannot push snapshot {top}: its commit would be about {size} bytes, over the limit of {MAX_GIT_OBJECT}"
                    ),
                ));
            }
            let parents: Vec<GitId> = s
                .parents
                .iter()
                .map(|p| self.known(p).expect("converted"))
                .collect();
            let g =
                write_snapshot_commit(self.repo, tree, &parents, &s, &canonical, CommitFormat::V2)
                    .map_err(|e| self.gerr(e))?;
            self.written += 1;
            self.map.insert(top, g);
            stack.pop();
        }
        Ok(self.known(sid).expect("converted"))
    }
}
