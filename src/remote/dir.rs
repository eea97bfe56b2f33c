//! A plain directory as a remote (a USB disk, an NFS mount, a Syncthing folder).
//!
//! Layout:
//! * `<dir>/shelldone-remote` — marker, `shelldone-dir-remote 1\n`;
//! * `<dir>/objects/ab/cdef…` — the same zstd loose files as the local store, each written as a
//!   `.shelldone-tmp.*` file in its fan-out dir, made durable, then renamed;
//! * `<dir>/refs/<device>/head`, `<dir>/refs/<device>/sessions/<x>` — hex id + `\n`.
//!
//! Lock-free: objects are content-addressed (writing one twice is harmless) and a device only
//! writes refs under its own `refs/<device>/`, so concurrent writers and file-syncing tools
//! cannot lose data. Files that are not ours (Syncthing conflict copies, temp files) are ignored.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fs_err as fs;
use objects_format::{EntryKind, Kind, Object, ObjectId};

use super::verify::{self, Checker, Limits, TreeInfo};
use super::{Progress, RefUpdate, Remote, TransferStats};
use crate::error::{Error, Result};
use crate::store::{Batch, ObjectStore, durable};

/// Name of the marker file.
pub const MARKER: &str = "shelldone-remote";
/// Content of the marker file (format version 1).
pub const MARKER_LINE: &str = "shelldone-dir-remote 1";

/// A directory remote.
#[derive(Debug, Clone)]
pub struct DirRemote {
    name: String,
    dir: PathBuf,
    limits: Limits,
}

/// True for a ref path component this remote reads or writes: `[A-Za-z0-9._%-]+`, not starting
/// with `.` or `~` (temp files), not a Syncthing conflict copy, not a lock or temp file.
#[must_use]
pub fn ref_component_ok(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 255
        && !c.starts_with('.')
        && !c.contains(".sync-conflict")
        && !c.ends_with(".tmp")
        && !c.ends_with(".lock")
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'%'))
}

/// Checks a remote ref name: `<device>/head` or `<device>/sessions/<x>`.
///
/// # Errors
/// [`Error::BadRefName`].
pub fn check_remote_ref(name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = match parts.as_slice() {
        [dev, "head"] => ref_component_ok(dev),
        [dev, "sessions", s] => ref_component_ok(dev) && ref_component_ok(s),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::BadRefName(name.to_owned()))
    }
}

/// Parses a ref file's content: 64 hex characters and a newline (a missing newline is accepted).
fn parse_ref(content: &[u8]) -> Option<ObjectId> {
    let s = std::str::from_utf8(content).ok()?;
    let s = s.strip_suffix('\n').unwrap_or(s);
    ObjectId::from_hex(s).ok()
}

impl DirRemote {
    /// A remote named `name` (for messages) at `dir`.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        DirRemote {
            name: name.into(),
            dir: dir.into(),
            limits: Limits::default(),
        }
    }

    /// Replaces the import limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the remote (marker, folders) on purpose (`remote add --init`); an existing
    /// remote is left as it is.
    ///
    /// # Errors
    /// A non-empty folder that is not a remote, I/O.
    pub fn init(&self) -> Result<()> {
        self.open(true).map(|_| ())
    }

    /// True when the folder is a directory remote (its marker is there).
    ///
    /// # Errors
    /// A non-empty folder that is not a remote, a marker of another version, I/O.
    pub fn exists(&self) -> Result<bool> {
        self.open(false)
    }

    fn err(&self, why: impl Into<String>) -> Error {
        Error::remote(&self.name, why)
    }

    /// Path of an object's file on the remote.
    #[must_use]
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    fn ref_path(&self, name: &str) -> PathBuf {
        self.dir.join("refs").join(name)
    }

    /// Checks the marker. Returns false when the remote does not exist yet (no dir, or an empty
    /// one); with `create`, creates it then.
    fn open(&self, create: bool) -> Result<bool> {
        let marker = self.dir.join(MARKER);
        match std::fs::read(&marker) {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                let line = s.trim_end();
                if line == MARKER_LINE {
                    return Ok(true);
                }
                return Err(self.err(format!(
                    "{} says {line:?}; this shelldone understands {MARKER_LINE:?} (upgrade shelldone?)",
                    marker.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", marker.display()),
                )));
            }
        }
        // Empty, or holding only temp files of an interrupted creation.
        let empty = match std::fs::read_dir(&self.dir) {
            Ok(it) => it
                .filter_map(std::result::Result::ok)
                .all(|e| durable::is_tmp_name(e.file_name().as_encoded_bytes())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", self.dir.display()),
                )));
            }
        };
        if !empty {
            return Err(self.err(format!(
                "{} exists but is not a shelldone directory remote (no {MARKER} file); use an empty or new directory",
                self.dir.display()
            )));
        }
        if !create {
            return Ok(false);
        }
        // The marker first: a creation interrupted later still leaves a recognisable remote.
        fs::create_dir_all(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            let _ = durable::sync_dir(parent);
        }
        durable::write_atomic(&marker, format!("{MARKER_LINE}\n").as_bytes())?;
        fs::create_dir_all(self.dir.join("objects"))?;
        fs::create_dir_all(self.dir.join("refs"))?;
        Ok(true)
    }

    fn has_object(&self, id: &ObjectId) -> bool {
        std::fs::symlink_metadata(self.object_path(id)).is_ok_and(|m| m.is_file())
    }

    /// Reads one ref file (bounded); None when absent.
    fn read_ref(&self, name: &str) -> Result<Option<ObjectId>> {
        let p = self.ref_path(name);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", p.display()),
                )));
            }
        };
        if !meta.is_file() {
            return Err(self.err(format!(
                "ref {name} ({}) is not a regular file",
                p.display()
            )));
        }
        let mut buf = Vec::new();
        fs::File::open(&p)?.take(200).read_to_end(&mut buf)?;
        parse_ref(&buf)
            .map(Some)
            .ok_or_else(|| self.err(format!("ref {name} ({}) is malformed", p.display())))
    }

    /// Reads a stored object from the remote (bounded, regular files only).
    fn read_object_file(&self, id: &ObjectId, kind: Kind) -> Result<Vec<u8>> {
        let p = self.object_path(id);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.err(format!("{} {id} is missing on the remote", kind.name())));
            }
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", p.display()),
                )));
            }
        };
        if !meta.is_file() {
            return Err(Error::CorruptObject {
                id: *id,
                why: format!("{} is not a regular file", p.display()),
            });
        }
        if meta.len() > verify::MAX_RAW_OBJECT {
            return Err(Error::CorruptObject {
                id: *id,
                why: format!("stored file is {} bytes, over the limit", meta.len()),
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        fs::File::open(&p)?
            .take(verify::MAX_RAW_OBJECT + 1)
            .read_to_end(&mut buf)?;
        Ok(buf)
    }
}

impl Remote for DirRemote {
    fn name(&self) -> &str {
        &self.name
    }

    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        let mut out = BTreeMap::new();
        if !self.open(false)? {
            return Ok(out);
        }
        let refs = self.dir.join("refs");
        let Ok(devices) = std::fs::read_dir(&refs) else {
            return Ok(out);
        };
        for d in devices {
            let d = d?;
            let Some(dev) = d.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !ref_component_ok(&dev) || !d.file_type()?.is_dir() {
                continue;
            }
            let head = format!("{dev}/head");
            if let Some(id) = self.read_ref(&head)? {
                out.insert(head, id);
            }
            let Ok(sessions) = std::fs::read_dir(d.path().join("sessions")) else {
                continue;
            };
            for s in sessions {
                let s = s?;
                let Some(sn) = s.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !ref_component_ok(&sn) || !s.file_type()?.is_file() {
                    continue;
                }
                let name = format!("{dev}/sessions/{sn}");
                if let Some(id) = self.read_ref(&name)? {
                    out.insert(name, id);
                }
            }
        }
        Ok(out)
    }

    fn push(
        &mut self,
        store: &ObjectStore,
        updates: &[RefUpdate],
        progress: Progress<'_>,
    ) -> Result<TransferStats> {
        for u in updates {
            check_remote_ref(&u.name)?;
        }
        self.open(true)?;

        // 1. Everything reachable from the new ids that the remote lacks. Each object's file is
        //    checked: a synced copy of the folder may hold a tree without its children.
        let mut seen = HashSet::new();
        let mut send: Vec<(Kind, ObjectId)> = Vec::new();
        let mut stack: Vec<(ObjectId, Kind)> = updates
            .iter()
            .filter_map(|u| u.new.map(|id| (id, Kind::Snapshot)))
            .collect();
        let tips: HashSet<ObjectId> = stack.iter().map(|(id, _)| *id).collect();
        while let Some((id, kind)) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let on_remote = self.has_object(&id);
            match kind {
                Kind::Snapshot => {
                    // A parent missing locally (history fetched shallow) is left out.
                    if !tips.contains(&id) && !store.has(&id) {
                        continue;
                    }
                    let s = store.read_snapshot(&id)?;
                    stack.push((s.root, Kind::Tree));
                    stack.extend(s.parents.iter().map(|p| (*p, Kind::Snapshot)));
                }
                Kind::Tree => {
                    let t = store.read_tree(&id)?;
                    stack.extend(t.entries.iter().map(|e| (e.id, e.kind.target_kind())));
                }
                Kind::ChunkList => {
                    let c = store.read_chunk_list(&id)?;
                    stack.extend(c.chunks.iter().map(|c| (c.id, Kind::Blob)));
                }
                Kind::Blob => {}
            }
            if !on_remote {
                send.push((kind, id));
            }
        }

        // 2. Objects: temp files (verified local bytes), each fsynced, renames
        //    children-first, renames made durable. Only then refs.
        // Children first; within a kind, in the order the bytes lie in the store, so each pack
        // block is decompressed once.
        let rank: std::collections::HashMap<ObjectId, usize> = {
            let mut ids: Vec<ObjectId> = send.iter().map(|(_, id)| *id).collect();
            store.sort_for_reading(&mut ids);
            ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect()
        };
        send.sort_by_key(|(k, id)| (k.code(), rank[id]));
        let total = send.len() as u64;
        let mut stats = TransferStats::default();
        let mut temps: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(send.len());
        let mut fans: HashSet<PathBuf> = HashSet::new();
        let res = (|| -> Result<()> {
            for (kind, id) in &send {
                let raw = store.read_raw(id)?;
                verify::verify_raw(id, *kind, &raw)?;
                let target = self.object_path(id);
                let fan = target.parent().expect("fan-out dir").to_path_buf();
                if fans.insert(fan.clone()) {
                    fs::create_dir_all(&fan)?;
                }
                let tmp = durable::tmp_path(&fan);
                temps.push((tmp.clone(), target));
                let mut f = fs::File::create(&tmp)?;
                f.write_all(&raw)?;
                stats.objects += 1;
                stats.bytes += raw.len() as u64;
                progress(stats.objects, Some(total));
            }
            if !temps.is_empty() {
                // fsync each file (in parallel) rather than syncfs: syncfs would also flush every
                // other program's dirty data on that filesystem (see ADR 0001).
                use rayon::prelude::*;
                temps.par_iter().try_for_each(|(tmp, _)| {
                    std::fs::File::open(tmp).and_then(|f| f.sync_data())
                })?;
                for (tmp, target) in &temps {
                    fs::rename(tmp, target)?;
                }
                fans.par_iter().try_for_each(|f| durable::sync_dir(f))?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            for (tmp, _) in &temps {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(e);
        }

        // 3. Refs: compare every expected value first, then write every new value to a temp
        //    file beside its ref, and only when all are durable rename them into place. A
        //    failure before the renames leaves every ref unchanged.
        for u in updates {
            let found = self.read_ref(&u.name)?;
            if found != u.expected {
                return Err(Error::RefConflict {
                    name: u.name.clone(),
                    expected: u.expected.map_or_else(|| "absent".into(), |i| i.to_hex()),
                    found: found.map_or_else(|| "absent".into(), |i| i.to_hex()),
                });
            }
        }
        let mut prepared: Vec<(Option<PathBuf>, PathBuf)> = Vec::new();
        let res = (|| -> Result<()> {
            for u in updates {
                let target = self.ref_path(&u.name);
                match u.new {
                    Some(id) => {
                        let dir = target.parent().expect("ref dir").to_path_buf();
                        fs::create_dir_all(&dir)?;
                        let tmp = durable::tmp_path(&dir);
                        prepared.push((Some(tmp.clone()), target));
                        let mut f = fs::File::create(&tmp)?;
                        f.write_all(format!("{}\n", id.to_hex()).as_bytes())?;
                        f.sync_all()?;
                    }
                    None => prepared.push((None, target)),
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            for (tmp, _) in &prepared {
                if let Some(t) = tmp {
                    let _ = std::fs::remove_file(t);
                }
            }
            return Err(e);
        }
        let mut dirs = HashSet::new();
        for (tmp, target) in &prepared {
            match tmp {
                Some(t) => fs::rename(t, target)?,
                None => match std::fs::remove_file(target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                },
            }
            dirs.insert(target.parent().expect("ref dir").to_path_buf());
        }
        for d in &dirs {
            durable::sync_dir(d)?;
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
        if !self.open(false)? && !wants.is_empty() {
            return Err(self.err(format!(
                "{} is not a shelldone directory remote yet (nothing pushed)",
                self.dir.display()
            )));
        }
        let mut f = Fetch {
            remote: self,
            store,
            batch,
            checker: Checker::new(&self.name, self.limits),
            stats: TransferStats::default(),
            progress,
        };
        let mut seen = HashSet::new();
        let mut stack: Vec<ObjectId> = wants.to_vec();
        while let Some(sid) = stack.pop() {
            if !seen.insert(sid) {
                continue;
            }
            if batch.contains(&sid) {
                // Already here: only walk on for history this store lacks.
                if !shallow && store.has(&sid) {
                    stack.extend(store.read_snapshot(&sid)?.parents);
                }
                continue;
            }
            let (raw, obj) = f.get(&sid, Kind::Snapshot)?;
            let Object::Snapshot(s) = obj else {
                unreachable!("kind verified")
            };
            let info = f.tree(&s.root, 0)?;
            f.checker.check_placement(&s.root, info, 0)?;
            f.stage(Kind::Snapshot, sid, &raw)?;
            if !shallow {
                stack.extend(s.parents.iter().copied());
            }
        }
        Ok(f.stats)
    }

    fn snapshot_graph(
        &mut self,
        store: &ObjectStore,
        wants: &[ObjectId],
        known: &dyn Fn(&ObjectId) -> bool,
    ) -> Result<BTreeMap<ObjectId, objects_format::Snapshot>> {
        let _ = store;
        let mut out = BTreeMap::new();
        if !self.open(false)? {
            return Ok(out);
        }
        let mut checker = Checker::new(&self.name, self.limits);
        let mut stack: Vec<ObjectId> = wants.to_vec();
        while let Some(id) = stack.pop() {
            if out.contains_key(&id) || known(&id) {
                continue;
            }
            if out.len() >= super::MAX_GRAPH_SNAPSHOTS {
                return Err(self.err(format!(
                    "more than {} snapshots in the history; refusing to read more",
                    super::MAX_GRAPH_SNAPSHOTS
                )));
            }
            let raw = self.read_object_file(&id, Kind::Snapshot)?;
            checker.precheck(raw.len() as u64)?;
            let (canonical, obj) = verify::verify_raw(&id, Kind::Snapshot, &raw)?;
            checker.charge(raw.len().max(canonical.len()) as u64)?;
            let Object::Snapshot(snap) = obj else {
                unreachable!("kind verified")
            };
            stack.extend(snap.parents.iter().copied());
            out.insert(id, snap);
        }
        Ok(out)
    }
}

/// One fetch from a directory remote: depth-first, children verified and staged before the
/// object that names them.
struct Fetch<'a, 'b, 'p> {
    remote: &'a DirRemote,
    store: &'a ObjectStore,
    batch: &'a Batch<'b>,
    checker: Checker,
    stats: TransferStats,
    progress: Progress<'p>,
}

impl Fetch<'_, '_, '_> {
    /// Reads, bounds, decompresses and verifies one object of the remote.
    fn get(&mut self, id: &ObjectId, kind: Kind) -> Result<(Vec<u8>, Object)> {
        let raw = self.remote.read_object_file(id, kind)?;
        self.checker.precheck(raw.len() as u64)?;
        let (canonical, obj) = verify::verify_raw(id, kind, &raw)?;
        self.checker.charge(raw.len().max(canonical.len()) as u64)?;
        Ok((raw, obj))
    }

    fn stage(&mut self, kind: Kind, id: ObjectId, raw: &[u8]) -> Result<()> {
        if self.batch.put_raw(kind, id, raw)? {
            self.stats.objects += 1;
            self.stats.bytes += raw.len() as u64;
            (self.progress)(self.stats.objects, None);
        }
        Ok(())
    }

    fn tree(&mut self, id: &ObjectId, depth: usize) -> Result<TreeInfo> {
        self.checker.check_depth(depth)?;
        if let Some(info) = self.checker.tree_info(id) {
            return Ok(info);
        }
        if self.store.has(id) {
            return self.checker.local_tree_info(self.store, id, depth);
        }
        let (raw, obj) = self.get(id, Kind::Tree)?;
        let Object::Tree(t) = obj else {
            unreachable!("kind verified")
        };
        let mut info = TreeInfo::default();
        for e in &t.entries {
            match e.kind {
                EntryKind::Dir => {
                    let sub = self.tree(&e.id, depth + 1)?;
                    info.add_subdir(sub);
                }
                EntryKind::File => {
                    if let Some(size) = self.blob(&e.id)? {
                        verify::check_entry_size(id, e, size)?;
                    }
                }
                EntryKind::ChunkedFile => {
                    if !self.batch.contains(&e.id) {
                        let (raw, obj) = self.get(&e.id, Kind::ChunkList)?;
                        let Object::ChunkList(c) = &obj else {
                            unreachable!("kind verified")
                        };
                        verify::check_entry_size(id, e, c.total_size)?;
                        for ch in &c.chunks {
                            if let Some(size) = self.blob(&ch.id)?
                                && size != u64::from(ch.len)
                            {
                                return Err(Error::CorruptObject {
                                    id: e.id,
                                    why: format!(
                                        "chunk {} says {} bytes, holds {size}",
                                        ch.id, ch.len
                                    ),
                                });
                            }
                        }
                        self.stage(Kind::ChunkList, e.id, &raw)?;
                    }
                }
                EntryKind::Symlink if self.checker.link_checked(&e.id) => {}
                EntryKind::Symlink if self.store.has(&e.id) => {
                    let t = self.store.read_blob(&e.id)?;
                    self.checker.check_link(e.id, &t)?;
                }
                EntryKind::Symlink => {
                    let (raw, obj) = self.get(&e.id, Kind::Blob)?;
                    let Object::Blob(target) = &obj else {
                        unreachable!("kind verified")
                    };
                    verify::check_entry_size(id, e, target.len() as u64)?;
                    self.checker.check_link(e.id, target)?;
                    self.stage(Kind::Blob, e.id, &raw)?;
                }
            }
        }
        self.checker.set_tree_info(*id, info);
        self.stage(Kind::Tree, *id, &raw)?;
        Ok(info)
    }

    /// Fetches a blob unless present; returns its length when it was read from the remote.
    fn blob(&mut self, id: &ObjectId) -> Result<Option<u64>> {
        if self.batch.contains(id) {
            return Ok(None);
        }
        let (raw, obj) = self.get(id, Kind::Blob)?;
        let size = verify::object_size(&obj);
        self.stage(Kind::Blob, *id, &raw)?;
        Ok(Some(size))
    }
}
