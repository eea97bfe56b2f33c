//! Fetch: what this store lacks, each object verified, and the structure under it known safe,
//! before it is staged; and the snapshot graph a partial pull plans with.

use std::collections::{BTreeMap, HashMap, HashSet};

use objects_format::{EntryKind, Kind, Link, Object, ObjectId, Snapshot};

use crate::error::{Error, Result};
use crate::remote::verify::{self, Checker, Limits, TreeInfo};
use crate::remote::{Backend, MAX_GRAPH_SNAPSHOTS, Progress, TransferStats};
use crate::store::walk::{self, Descend, Enter, Node, Source, Visitor};
use crate::store::{Batch, IndexedPack, ObjectStore};

/// Brings every object reachable from `wants` (snapshots) that `store` lacks into `batch`. Each
/// object read from the backend is bounded, decompressed and verified (hash, decode, the kind
/// its link demands, the size its link states, symlink targets), and staged only after
/// everything under it, so a tree is staged only once the structure below it is known safe
/// (depth included). With `shallow`, parents are not followed. On an error nothing more is
/// staged, and the caller drops the batch.
///
/// # Errors
/// Corrupt or hostile objects, a missing object, over `limits`, the backend's errors.
pub fn fetch<B: Backend + ?Sized>(
    store: &ObjectStore,
    batch: &Batch<'_>,
    backend: &mut B,
    limits: Limits,
    wants: &[ObjectId],
    shallow: bool,
    progress: Progress<'_>,
) -> Result<TransferStats> {
    if let Some(pack) = backend.whole_pack() {
        return fetch_pack(batch, backend.name(), pack, limits, wants, progress);
    }
    let checker = Checker::new(backend.name(), limits);
    let mut src = Layered::new(store, backend, checker);
    let mut stage = Stage {
        store,
        batch,
        shallow,
        stats: TransferStats::default(),
        progress,
    };
    let roots: Vec<(ObjectId, Kind)> = wants.iter().map(|w| (*w, Kind::Snapshot)).collect();
    walk::walk(&mut src, &roots, &mut stage)?;
    Ok(stage.stats)
}

/// The snapshot objects reachable from `wants` through their parents, verified but not staged:
/// what a partial pull plans with. The walk does not go past snapshots for which `known` is
/// true (the local store has them and their history).
///
/// # Errors
/// Corrupt or hostile snapshots, more than [`MAX_GRAPH_SNAPSHOTS`], the backend's errors.
pub fn snapshot_graph<B: Backend + ?Sized>(
    store: &ObjectStore,
    backend: &mut B,
    limits: Limits,
    wants: &[ObjectId],
    known: &dyn Fn(&ObjectId) -> bool,
) -> Result<BTreeMap<ObjectId, Snapshot>> {
    let checker = Checker::new(backend.name(), limits);
    let mut src = Layered::new(store, backend, checker);
    let mut graph = Graph {
        known,
        out: BTreeMap::new(),
    };
    let roots: Vec<(ObjectId, Kind)> = wants.iter().map(|w| (*w, Kind::Snapshot)).collect();
    walk::walk(&mut src, &roots, &mut graph)?;
    Ok(graph.out)
}

/// Reads from the backend, or from the local store an object the visitor found here; what
/// comes from the backend is bounded, charged to the import budget and verified, and keeps its
/// stored bytes (the [`Source::Extra`]) for staging.
struct Layered<'a, B: ?Sized> {
    store: &'a ObjectStore,
    backend: &'a mut B,
    checker: Checker,
    /// The next read of this id is from the local store (set by the visitor, which knows; asking
    /// the store for every object read would cost a lookup each).
    from_store: Option<ObjectId>,
    /// Frames read ahead ([`Backend::get_ahead`]): the children an object just read names, asked
    /// for in one batch, taken (and verified) when the walk reaches them.
    ahead: HashMap<ObjectId, Vec<u8>>,
    /// Their bytes: at most [`READ_AHEAD_BYTES`] are asked for.
    ahead_bytes: u64,
    /// Ids this walk read from the backend: never read ahead again.
    taken: HashSet<ObjectId>,
}

/// At most this many objects are read ahead at once.
const READ_AHEAD_COUNT: usize = 64;
/// At most this many bytes (by the sizes the links state) are held read ahead.
const READ_AHEAD_BYTES: u64 = 16 << 20;

/// The largest stored frame of an object whose content is `size` bytes: zstd adds a few bytes
/// per block to data it cannot compress, the canonical encoding a short header. A frame over
/// it is not read ahead (the walk's own read then judges it).
fn frame_bound(size: u64) -> u64 {
    size.saturating_add(size / 64).saturating_add(1024)
}

impl<'a, B: Backend + ?Sized> Layered<'a, B> {
    fn new(store: &'a ObjectStore, backend: &'a mut B, checker: Checker) -> Self {
        Layered {
            store,
            backend,
            checker,
            from_store: None,
            ahead: HashMap::new(),
            ahead_bytes: 0,
            taken: HashSet::new(),
        }
    }

    /// Asks the backend, in one batch, for the children of `obj` the walk will read from it:
    /// those whose link states a size (blobs, chunk lists, chunks; trees are read when reached),
    /// not here, not read or read ahead already, within [`READ_AHEAD_BYTES`].
    fn read_ahead(&mut self, obj: &Object) {
        let mut budget = READ_AHEAD_BYTES.saturating_sub(self.ahead_bytes);
        let mut want: Vec<(ObjectId, u64)> = Vec::new();
        for c in obj.children() {
            if want.len() >= READ_AHEAD_COUNT {
                break;
            }
            let Some(size) = c.link.size() else { continue };
            let bound = frame_bound(size);
            if bound > budget
                || self.ahead.contains_key(&c.id)
                || self.taken.contains(&c.id)
                || want.iter().any(|w| w.0 == c.id)
                || self.store.has(&c.id)
            {
                continue;
            }
            budget -= bound;
            want.push((c.id, bound));
        }
        if want.len() < 2 {
            return;
        }
        let got = self.backend.get_ahead(&want);
        for ((id, bound), raw) in want.into_iter().zip(got) {
            if let Some(raw) = raw.filter(|r| r.len() as u64 <= bound) {
                self.ahead_bytes += raw.len() as u64;
                self.ahead.insert(id, raw);
            }
        }
    }

    /// Reads `id` from the local store when it has it, else from the backend.
    fn here_or_there(&mut self, id: &ObjectId, kind: Kind) -> Result<(Object, Option<Vec<u8>>)> {
        if self.store.has(id) {
            self.from_store = Some(*id);
        }
        self.read(id, kind)
    }

    fn get(&mut self, id: &ObjectId, kind: Kind) -> Result<(Vec<u8>, Object)> {
        self.taken.insert(*id);
        let raw = if let Some(raw) = self.ahead.remove(id) {
            self.ahead_bytes -= raw.len() as u64;
            raw
        } else {
            let mut got = self.backend.get(std::slice::from_ref(id))?;
            if got.len() != 1 {
                return Err(self
                    .checker
                    .err(format!("asked for 1 object, answered {}", got.len())));
            }
            got.pop()
                .flatten()
                .ok_or_else(|| self.checker.missing(kind, *id))?
        };
        if raw.len() as u64 > verify::MAX_RAW_OBJECT {
            return Err(Error::CorruptObject {
                id: *id,
                why: format!("stored file is {} bytes, over the limit", raw.len()),
            });
        }
        self.checker.precheck(raw.len() as u64)?;
        let (canonical, obj) = verify::verify_raw(id, kind, &raw)?;
        self.checker.charge(raw.len().max(canonical.len()) as u64)?;
        self.read_ahead(&obj);
        Ok((raw, obj))
    }
}

impl<B: Backend + ?Sized> Source for Layered<'_, B> {
    /// The stored bytes of an object read from the backend; `None` for a local one.
    type Extra = Option<Vec<u8>>;

    fn read(&mut self, id: &ObjectId, kind: Kind) -> Result<(Object, Option<Vec<u8>>)> {
        if self.from_store.take() == Some(*id) {
            return Ok((self.store.read(id, kind)?, None));
        }
        let (raw, obj) = self.get(id, kind)?;
        Ok((obj, Some(raw)))
    }
}

/// The fetch's visitor: decides what to read, checks what the links state, stages.
struct Stage<'a, 'b, 'p> {
    store: &'a ObjectStore,
    batch: &'a Batch<'b>,
    shallow: bool,
    stats: TransferStats,
    progress: Progress<'p>,
}

impl Stage<'_, '_, '_> {
    fn stage(&mut self, kind: Kind, id: ObjectId, raw: &[u8]) -> Result<()> {
        if self.batch.put_raw(kind, id, raw)? {
            self.stats.objects += 1;
            self.stats.bytes += raw.len() as u64;
            (self.progress)(self.stats.objects, None);
        }
        Ok(())
    }

    /// What a blob's link states: its size (checked for what the backend sent; local objects
    /// were verified when stored) and, for a symlink, a safe target.
    fn check_blob(checker: &mut Checker, node: &Node<'_>, data: &[u8], remote: bool) -> Result<()> {
        let size = data.len() as u64;
        let from = node.from.unwrap_or(node.id);
        match node.link {
            Some(Link::Entry(e)) => {
                if remote {
                    verify::check_entry_size(&from, e, size)?;
                }
                if e.kind == EntryKind::Symlink {
                    checker.check_link(node.id, data)?;
                }
            }
            Some(Link::Chunk(ch)) if remote && size != u64::from(ch.len) => {
                return Err(Error::CorruptObject {
                    id: from,
                    why: format!("chunk {} says {} bytes, holds {size}", ch.id, ch.len),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

fn is_symlink(node: &Node<'_>) -> bool {
    matches!(node.link, Some(Link::Entry(e)) if e.kind == EntryKind::Symlink)
}

impl<B: Backend + ?Sized> Visitor<Layered<'_, B>> for Stage<'_, '_, '_> {
    fn enter(&mut self, src: &mut Layered<'_, B>, node: &Node<'_>) -> Result<Enter> {
        // Stored, or staged by this fetch already.
        let here = |s: &Self| s.batch.contains(&node.id);
        Ok(match node.kind {
            Kind::Snapshot if self.shallow && node.link.is_some_and(|l| l.is_history()) => {
                Enter::Ignore
            }
            // Already here: read (locally) only to walk on for history this store lacks.
            Kind::Snapshot if here(self) => {
                if !self.shallow && self.store.has(&node.id) {
                    src.from_store = Some(node.id);
                    Enter::Read
                } else {
                    Enter::Skip
                }
            }
            Kind::Snapshot => Enter::Read,
            Kind::Tree => {
                src.checker.check_depth(node.depth)?;
                if self.store.has(&node.id) {
                    // Its content is here; what it requires of its placement is computed.
                    src.checker
                        .local_tree_info(self.store, &node.id, node.depth)?;
                    Enter::Skip
                } else {
                    Enter::Read
                }
            }
            Kind::Blob if is_symlink(node) => {
                if src.checker.link_checked(&node.id) {
                    Enter::Skip
                } else {
                    if self.store.has(&node.id) {
                        src.from_store = Some(node.id);
                    }
                    Enter::Read
                }
            }
            Kind::Blob | Kind::ChunkList if here(self) => Enter::Skip,
            Kind::Blob | Kind::ChunkList => Enter::Read,
        })
    }

    fn again(&mut self, src: &mut Layered<'_, B>, node: &Node<'_>) -> Result<()> {
        if node.kind == Kind::Tree {
            src.checker.check_depth(node.depth)?;
        }
        // A blob first reached as a file is a symlink target here too: its target is checked.
        if is_symlink(node) && !src.checker.link_checked(&node.id) {
            let (obj, raw) = src.here_or_there(&node.id, Kind::Blob)?;
            if let Object::Blob(data) = &obj {
                Stage::check_blob(&mut src.checker, node, data, raw.is_some())?;
            }
            if let Some(raw) = raw {
                self.stage(Kind::Blob, node.id, &raw)?;
            }
        }
        Ok(())
    }

    fn read(
        &mut self,
        src: &mut Layered<'_, B>,
        node: &Node<'_>,
        obj: &Object,
        raw: &Option<Vec<u8>>,
    ) -> Result<Descend> {
        descend(&mut src.checker, node, obj, raw.is_some())
    }

    fn leave(
        &mut self,
        src: &mut Layered<'_, B>,
        node: &Node<'_>,
        obj: Object,
        raw: Option<Vec<u8>>,
    ) -> Result<()> {
        finish(&mut src.checker, node, &obj, raw.is_some())?;
        if let Some(raw) = raw {
            self.stage(node.kind, node.id, &raw)?;
        }
        Ok(())
    }
}

/// What a fetch checks of an object it read, and where its walk goes next: a chunk list's
/// total against its entry, a blob's size and symlink target; a snapshot from the other side
/// is walked whole, a local one (`remote` false) only through its history.
fn descend(checker: &mut Checker, node: &Node<'_>, obj: &Object, remote: bool) -> Result<Descend> {
    Ok(match obj {
        Object::Snapshot(_) if remote => Descend::All,
        Object::Snapshot(_) => Descend::History,
        Object::Tree(_) => Descend::All,
        Object::ChunkList(c) => {
            if let (Some(Link::Entry(e)), Some(tree)) = (node.link, node.from) {
                verify::check_entry_size(&tree, e, c.total_size)?;
            }
            Descend::All
        }
        Object::Blob(data) => {
            Stage::check_blob(checker, node, data, remote)?;
            Descend::Nothing
        }
    })
}

/// What a fetch checks once everything under an object is walked: a tree's height (from its
/// subtrees'), and where a snapshot from the other side (`remote`) places its root tree.
fn finish(checker: &mut Checker, node: &Node<'_>, obj: &Object, remote: bool) -> Result<()> {
    match obj {
        Object::Tree(t) => {
            let mut info = TreeInfo::default();
            for e in t.entries.iter().filter(|e| e.kind == EntryKind::Dir) {
                info.add_subdir(
                    checker
                        .tree_info(&e.id)
                        .expect("a subtree is finished before its tree"),
                );
            }
            checker.set_tree_info(node.id, info);
        }
        Object::Snapshot(s) if remote => {
            let info = checker
                .tree_info(&s.root)
                .expect("the root tree is finished before its snapshot");
            checker.check_placement(&s.root, info, 0)?;
        }
        _ => {}
    }
    Ok(())
}

/// The walk of [`snapshot_graph`]: snapshots only, through their parents.
struct Graph<'k> {
    known: &'k dyn Fn(&ObjectId) -> bool,
    out: BTreeMap<ObjectId, Snapshot>,
}

impl<B: Backend + ?Sized> Visitor<Layered<'_, B>> for Graph<'_> {
    fn enter(&mut self, src: &mut Layered<'_, B>, node: &Node<'_>) -> Result<Enter> {
        if (self.known)(&node.id) {
            return Ok(Enter::Ignore);
        }
        if self.out.len() >= MAX_GRAPH_SNAPSHOTS {
            return Err(src.checker.err(format!(
                "more than {MAX_GRAPH_SNAPSHOTS} snapshots in the history; refusing to read more"
            )));
        }
        Ok(Enter::Read)
    }

    fn read(
        &mut self,
        _: &mut Layered<'_, B>,
        _: &Node<'_>,
        _: &Object,
        _: &Option<Vec<u8>>,
    ) -> Result<Descend> {
        Ok(Descend::History)
    }

    fn leave(
        &mut self,
        _: &mut Layered<'_, B>,
        node: &Node<'_>,
        obj: Object,
        _: Option<Vec<u8>>,
    ) -> Result<()> {
        if let Object::Snapshot(s) = obj {
            self.out.insert(node.id, s);
        }
        Ok(())
    }
}

/// The fetch from a backend that is one whole pack, already read and verified object by
/// object ([`IndexedPack::parse`]): every check the object-by-object fetch makes (each link's
/// kind and size, symlink targets, nesting, the budget of `limits`) is made from the pack's
/// index, which holds every object but the blobs decoded, so no blob is decompressed again.
/// Every object of the pack must be reached from `wants`, through history included. Then the
/// pack's entries are staged as they are (blocks whole).
fn fetch_pack(
    batch: &Batch<'_>,
    name: &str,
    pack: &IndexedPack,
    limits: Limits,
    wants: &[ObjectId],
    progress: Progress<'_>,
) -> Result<TransferStats> {
    let mut src = PackSource {
        pack,
        checker: Checker::new(name, limits),
    };
    let roots: Vec<(ObjectId, Kind)> = wants.iter().map(|w| (*w, Kind::Snapshot)).collect();
    let seen = walk::walk(&mut src, &roots, &mut PackChecks)?;
    if seen.len() != pack.len() {
        return Err(src.checker.err(format!(
            "it holds {} objects that its snapshot does not reach",
            pack.len().saturating_sub(seen.len())
        )));
    }
    let (objects, bytes) = pack.stage(batch)?;
    progress(objects, Some(objects));
    Ok(TransferStats { objects, bytes })
}

/// A verified pack as the walk's source.
struct PackSource<'a> {
    pack: &'a IndexedPack,
    checker: Checker,
}

impl PackSource<'_> {
    /// What the pack says of `id`, which must be of `kind`.
    fn entry(&self, id: &ObjectId, kind: Kind) -> Result<&crate::store::Packed> {
        let p = self
            .pack
            .get(id)
            .ok_or_else(|| self.checker.err(format!("{} {id} is missing", kind.name())))?;
        if p.kind != kind {
            return Err(Error::WrongKind {
                id: *id,
                expected: kind,
                found: p.kind.name(),
            });
        }
        Ok(p)
    }
}

impl Source for PackSource<'_> {
    type Extra = ();

    fn read(&mut self, id: &ObjectId, kind: Kind) -> Result<(Object, ())> {
        self.entry(id, kind)?;
        Ok((self.pack.read(id)?, ()))
    }
}

/// The checks of [`fetch_pack`]'s walk.
struct PackChecks;

impl Visitor<PackSource<'_>> for PackChecks {
    fn enter(&mut self, src: &mut PackSource<'_>, node: &Node<'_>) -> Result<Enter> {
        let data_len = src.entry(&node.id, node.kind)?.data_len;
        src.checker.charge(data_len)?;
        Ok(match node.kind {
            Kind::Snapshot | Kind::ChunkList => Enter::Read,
            Kind::Tree => {
                src.checker.check_depth(node.depth)?;
                Enter::Read
            }
            Kind::Blob if is_symlink(node) => Enter::Read,
            Kind::Blob => {
                let from = node.from.unwrap_or(node.id);
                match node.link {
                    Some(Link::Entry(e)) => verify::check_entry_size(&from, e, data_len)?,
                    Some(Link::Chunk(ch)) if data_len != u64::from(ch.len) => {
                        return Err(Error::CorruptObject {
                            id: from,
                            why: format!("chunk {} says {} bytes, holds {data_len}", ch.id, ch.len),
                        });
                    }
                    _ => {}
                }
                Enter::Skip
            }
        })
    }

    fn again(&mut self, src: &mut PackSource<'_>, node: &Node<'_>) -> Result<()> {
        if node.kind == Kind::Tree {
            src.checker.check_depth(node.depth)?;
        }
        if is_symlink(node)
            && !src.checker.link_checked(&node.id)
            && let Object::Blob(data) = src.pack.read(&node.id)?
        {
            Stage::check_blob(&mut src.checker, node, &data, true)?;
        }
        Ok(())
    }

    fn read(
        &mut self,
        src: &mut PackSource<'_>,
        node: &Node<'_>,
        obj: &Object,
        (): &(),
    ) -> Result<Descend> {
        descend(&mut src.checker, node, obj, true)
    }

    fn leave(
        &mut self,
        src: &mut PackSource<'_>,
        node: &Node<'_>,
        obj: Object,
        (): (),
    ) -> Result<()> {
        finish(&mut src.checker, node, &obj, true)
    }
}
