//! Fetch side: commits, trees and blobs of the git mirror read back into objects, each checked by
//! the hostile-input checker (`verify.rs`) before it is staged.

use std::collections::HashMap;

use gix::ObjectId as GitId;
use objects_format::chunk::{CHUNK_THRESHOLD, chunk_lengths};
use objects_format::encoding::encode_blob;
use objects_format::{
    ChunkList, ChunkRef, EntryKind, FLAG_EXECUTABLE, Kind, Object, ObjectId, Snapshot, Tree,
    TreeEntry,
};

use super::{
    CommitFormat, HEADER, IdMap, MAX_GIT_OBJECT, TRAILER, git_error, parse_commit,
    write_snapshot_commit,
};
use crate::error::{Error, Result};
use crate::remote::gitmirror::{self, Mode};
use crate::remote::verify::{self, Checker, TreeInfo};
use crate::remote::{Progress, TransferStats};
use crate::snapshot::policy;
use crate::store::{Batch, ObjectStore};

/// A commit read from the mirror with the snapshot of its trailer.
pub(super) struct CommitInfo {
    pub(super) sid: ObjectId,
    pub(super) snapshot: Snapshot,
    pub(super) canonical: Vec<u8>,
    pub(super) tree: GitId,
    pub(super) parents: Vec<GitId>,
    /// The form the commit was written in (it is verified in that form).
    pub(super) format: CommitFormat,
}

pub(super) fn read_commit(repo: &gix::Repository, gid: GitId, remote: &str) -> Result<CommitInfo> {
    let rerr = |why: String| Error::remote(remote, why);
    let h = repo
        .find_header(gid)
        .map_err(|e| rerr(format!("commit {gid} is missing: {e}")))?;
    if h.kind() != gix::objs::Kind::Commit {
        return Err(rerr(format!("{gid} is a {}, expected a commit", h.kind())));
    }
    if h.size() > MAX_GIT_OBJECT {
        return Err(rerr(format!(
            "commit {gid} is {} bytes, over the limit of {MAX_GIT_OBJECT}",
            h.size()
        )));
    }
    let (tree, parents, parsed) = gitmirror::read_commit_parts(repo, gid, HEADER, parse_commit)
        .map_err(|e| git_error(remote, e))?;
    let (canonical, format) = parsed.ok_or_else(|| {
        rerr(format!(
            "commit {gid} has neither a valid '{HEADER}' header nor a '{}' trailer holding a snapshot; not written by shelldone",
            TRAILER.trim()
        ))
    })?;
    let (kind, _) = objects_format::encoding::split_header(&canonical)
        .map_err(|e| rerr(format!("commit {gid}: trailer: {e}")))?;
    let sid = ObjectId::compute(kind, &canonical);
    let snapshot = match verify::verify_canonical(&sid, Kind::Snapshot, &canonical) {
        Ok(Object::Snapshot(s)) => s,
        Ok(_) => unreachable!("kind checked"),
        Err(e) => return Err(rerr(format!("commit {gid}: trailer: {e}"))),
    };
    Ok(CommitInfo {
        sid,
        snapshot,
        canonical,
        tree,
        parents,
        format,
    })
}

/// git → shelldone import from the mirror into a batch.
pub(super) struct Import<'a, 'b, 'p> {
    pub(super) repo: &'a gix::Repository,
    pub(super) map: &'a mut IdMap,
    pub(super) store: &'a ObjectStore,
    pub(super) batch: &'a Batch<'b>,
    pub(super) checker: Checker,
    pub(super) remote: &'a str,
    pub(super) stats: TransferStats,
    pub(super) progress: Progress<'p>,
}

impl Import<'_, '_, '_> {
    pub(super) fn rerr(&self, why: String) -> Error {
        Error::remote(self.remote, why)
    }

    pub(super) fn put(&mut self, kind: Kind, id: ObjectId, canonical: &[u8]) -> Result<()> {
        if self.batch.put_canonical(kind, id, canonical)? {
            self.stats.objects += 1;
            self.stats.bytes += canonical.len() as u64;
            (self.progress)(self.stats.objects, None);
        }
        Ok(())
    }

    /// Reads a git object of `kind` after checking its declared size against `max` and the budget.
    pub(super) fn read(
        &mut self,
        gid: GitId,
        kind: gix::objs::Kind,
        max: u64,
    ) -> Result<(u64, Vec<u8>)> {
        let h = self
            .repo
            .find_header(gid)
            .map_err(|e| self.rerr(format!("object {gid} is missing: {e}")))?;
        if h.kind() != kind {
            return Err(self.rerr(format!("{gid} is a {}, expected a {kind}", h.kind())));
        }
        if h.size() > max {
            let over = Error::TooLarge {
                what: format!("{kind} {gid}"),
                size: h.size(),
                limit: max,
            };
            return Err(Error::Remote {
                remote: self.remote.to_owned(),
                why: over.to_string(),
                transient: false,
                source: Some(Box::new(over)),
            });
        }
        self.checker.precheck(h.size())?;
        let (_, data) =
            gitmirror::read_object(self.repo, gid).map_err(|e| git_error(self.remote, e))?;
        self.checker.charge(data.len() as u64)?;
        Ok((h.size(), data))
    }

    /// The store's copy of a blob a lean mirror dropped (ADR 0007): its id and size, read from
    /// the store. `None` when the id map does not know `gid` or the store lacks its object.
    fn stored(&self, gid: GitId) -> Result<Option<(ObjectId, u64)>> {
        let Some(sid) = self.map.rev.get(&gid).copied() else {
            return Ok(None);
        };
        if !self.store.has(&sid) {
            return Ok(None);
        }
        let v = self.store.read_verified(&sid)?;
        let size = match v.kind {
            Kind::Blob => (v.canonical.len() - objects_format::encoding::HEADER_LEN) as u64,
            Kind::ChunkList => self.store.read_chunk_list(&sid)?.total_size,
            _ => return Ok(None),
        };
        Ok(Some((sid, size)))
    }

    /// A blob the mirror does not hold and the store cannot stand in for.
    fn missing_blob(&self, gid: GitId, e: impl std::fmt::Display) -> Error {
        self.rerr(format!(
            "blob {gid} is missing: {e}; the mirror {} dropped it and the local store no longer holds it (delete that folder, a cache, and pull again)",
            gitmirror::mirror_path(self.repo).display()
        ))
    }

    pub(super) fn file(&mut self, gid: GitId, path: &[u8]) -> Result<(EntryKind, ObjectId, u64)> {
        let kind_of = |size: u64| {
            if size > CHUNK_THRESHOLD {
                EntryKind::ChunkedFile
            } else {
                EntryKind::File
            }
        };
        let h = match self.repo.find_header(gid) {
            Ok(h) => h,
            Err(e) => {
                // Dropped by a lean mirror: the store has it (from a push or an earlier pull).
                return match self.stored(gid)? {
                    Some((sid, size)) => Ok((kind_of(size), sid, size)),
                    None => Err(self.missing_blob(gid, e)),
                };
            }
        };
        let size = h.size();
        if size > MAX_GIT_OBJECT {
            // Decided from the object's header: the content is never inflated.
            return Err(self.rerr(format!(
                "blob {gid} (file {}) is {size} bytes, over the limit of {MAX_GIT_OBJECT}; refused without reading it",
                crate::snapshot::display(path)
            )));
        }
        let kind = kind_of(size);
        if let Some(sid) = self.map.rev.get(&gid).copied()
            && self.batch.contains(&sid)
        {
            return Ok((kind, sid, size));
        }
        let (_, data) = self.read(gid, gix::objs::Kind::Blob, MAX_GIT_OBJECT)?;
        let id = if kind == EntryKind::File {
            let c = encode_blob(&data);
            let id = ObjectId::compute(Kind::Blob, &c);
            self.put(Kind::Blob, id, &c)?;
            id
        } else {
            let mut chunks = Vec::new();
            let mut pos = 0;
            for len in chunk_lengths(&data) {
                let c = encode_blob(&data[pos..pos + len]);
                let id = ObjectId::compute(Kind::Blob, &c);
                self.put(Kind::Blob, id, &c)?;
                chunks.push(ChunkRef {
                    id,
                    len: u32::try_from(len).expect("chunks are at most MAX_CHUNK"),
                });
                pos += len;
            }
            let list = Object::ChunkList(ChunkList {
                total_size: data.len() as u64,
                chunks,
            });
            let (id, c) = objects_format::encode_with_id(&list)?;
            self.put(Kind::ChunkList, id, &c)?;
            id
        };
        self.map.insert(id, gid);
        Ok((kind, id, size))
    }

    pub(super) fn link(&mut self, gid: GitId) -> Result<(ObjectId, u64)> {
        if let Some(sid) = self.map.rev.get(&gid).copied()
            && self.checker.link_checked(&sid)
        {
            let size = match self.repo.find_header(gid) {
                Ok(h) => h.size(),
                Err(e) => match self.stored(gid)? {
                    Some((_, size)) => size,
                    None => return Err(self.missing_blob(gid, e)),
                },
            };
            return Ok((sid, size));
        }
        if let Err(e) = self.repo.find_header(gid) {
            // Dropped by a lean mirror: checked again from the store's copy.
            let Some((sid, _)) = self.stored(gid)? else {
                return Err(self.missing_blob(gid, e));
            };
            let data = self.store.read_blob(&sid)?;
            self.checker.check_link(sid, &data)?;
            return Ok((sid, data.len() as u64));
        }
        let (_, data) = self
            .read(
                gid,
                gix::objs::Kind::Blob,
                verify::MAX_SYMLINK_TARGET as u64,
            )
            .map_err(|e| match e {
                Error::Remote {
                    why,
                    source: Some(s),
                    ..
                } if matches!(s.downcast_ref::<Error>(), Some(Error::TooLarge { .. })) => {
                    Error::UnsafePath(format!("symlink target {gid}: {why}"))
                }
                other => other,
            })?;
        let c = encode_blob(&data);
        let id = ObjectId::compute(Kind::Blob, &c);
        self.checker.check_link(id, &data)?;
        self.put(Kind::Blob, id, &c)?;
        self.map.insert(id, gid);
        Ok((id, data.len() as u64))
    }

    pub(super) fn tree(
        &mut self,
        gid: GitId,
        depth: usize,
        path: &[u8],
    ) -> Result<(ObjectId, TreeInfo)> {
        self.checker.check_depth(depth)?;
        if let Some(sid) = self.map.rev.get(&gid).copied() {
            if let Some(info) = self.checker.tree_info(&sid) {
                return Ok((sid, info));
            }
            if self.store.has(&sid) {
                return Ok((sid, self.checker.local_tree_info(self.store, &sid, depth)?));
            }
        }
        let (_, data) = self.read(gid, gix::objs::Kind::Tree, MAX_GIT_OBJECT)?;
        let gentries =
            gitmirror::decode_tree(self.repo, gid, &data).map_err(|e| git_error(self.remote, e))?;
        let mut info = TreeInfo::default();
        let mut entries = Vec::with_capacity(gentries.len());
        for ge in gentries {
            let name_kind = match ge.mode {
                Mode::Dir => EntryKind::Dir,
                Mode::Symlink => EntryKind::Symlink,
                Mode::File | Mode::Executable => EntryKind::File,
            };
            // Names git cannot hold were escaped by the pushing device (ADR 0002).
            let name = policy::from_git_name(&ge.name, name_kind).to_vec();
            policy::check_name(&name).map_err(|e| {
                Error::UnsafePath(format!(
                    "git tree {gid} has an entry named {:?}: {e}",
                    String::from_utf8_lossy(&ge.name)
                ))
            })?;
            let mut sub_path = path.to_vec();
            if !sub_path.is_empty() {
                sub_path.push(b'/');
            }
            sub_path.extend_from_slice(&name);
            let (kind, flags, size, id) = match ge.mode {
                Mode::Dir => {
                    let (id, sub) = self.tree(ge.oid, depth + 1, &sub_path)?;
                    info.add_subdir(sub);
                    (EntryKind::Dir, 0, 0, id)
                }
                Mode::File | Mode::Executable => {
                    let (k, id, size) = self.file(ge.oid, &sub_path)?;
                    (
                        k,
                        if ge.mode == Mode::Executable {
                            FLAG_EXECUTABLE
                        } else {
                            0
                        },
                        size,
                        id,
                    )
                }
                Mode::Symlink => {
                    let (id, size) = self.link(ge.oid)?;
                    (EntryKind::Symlink, 0, size, id)
                }
            };
            entries.push(TreeEntry {
                name,
                kind,
                flags,
                size,
                id,
            });
        }
        let mut t = Tree { entries };
        t.sort();
        let (id, c) = objects_format::encode_with_id(&Object::Tree(t))
            .map_err(|e| self.rerr(format!("git tree {gid}: {e}")))?;
        self.put(Kind::Tree, id, &c)?;
        self.checker.set_tree_info(id, info);
        self.map.insert(id, gid);
        Ok((id, info))
    }

    /// Imports commits from `wants` (commit, the snapshot it must hold) and their history.
    pub(super) fn run(&mut self, wants: Vec<(GitId, ObjectId)>, shallow: bool) -> Result<()> {
        let mut done: HashMap<GitId, ObjectId> = HashMap::new();
        let mut stack = wants;
        while let Some((gid, expect)) = stack.pop() {
            if let Some(s) = done.get(&gid) {
                if *s != expect {
                    return Err(self.rerr(format!(
                        "commit {gid} holds snapshot {s}, expected {expect}"
                    )));
                }
                continue;
            }
            let c = read_commit(self.repo, gid, self.remote)?;
            self.checker.charge(c.canonical.len() as u64 * 2)?;
            if c.sid != expect {
                return Err(self.rerr(format!(
                    "commit {gid} holds snapshot {}, expected {expect}",
                    c.sid
                )));
            }
            done.insert(gid, c.sid);
            if c.parents.len() != c.snapshot.parents.len() {
                return Err(self.rerr(format!(
                    "commit {gid} has {} parents, its snapshot {}",
                    c.parents.len(),
                    c.snapshot.parents.len()
                )));
            }
            let parents: Vec<(GitId, ObjectId)> = c
                .parents
                .iter()
                .copied()
                .zip(c.snapshot.parents.iter().copied())
                .collect();
            if shallow {
                for (pg, ps) in &parents {
                    let pc = read_commit(self.repo, *pg, self.remote)?;
                    if pc.sid != *ps {
                        return Err(self.rerr(format!(
                            "parent commit {pg} holds snapshot {}, expected {ps}",
                            pc.sid
                        )));
                    }
                }
            } else {
                stack.extend(parents.iter().copied());
            }
            if self.map.rev.get(&gid) == Some(&c.sid) && self.batch.contains(&c.sid) {
                continue;
            }
            let (root, info) = self.tree(c.tree, 0, b"")?;
            if root != c.snapshot.root {
                return Err(self.rerr(format!(
                    "commit {gid}: its tree rebuilds to {root}, but its snapshot {} names root {}",
                    c.sid, c.snapshot.root
                )));
            }
            self.checker.check_placement(&root, info, 0)?;
            let canon = write_snapshot_commit(
                self.repo,
                c.tree,
                &c.parents,
                &c.snapshot,
                &c.canonical,
                c.format,
            )
            .map_err(|e| git_error(self.remote, e))?;
            if canon != gid {
                return Err(self.rerr(format!(
                    "commit {gid} is not in shelldone's canonical form (expected {canon})"
                )));
            }
            self.put(Kind::Snapshot, c.sid, &c.canonical)?;
            self.map.insert(c.sid, gid);
        }
        Ok(())
    }
}
