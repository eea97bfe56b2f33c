//! One walk over the object graph, for every command that follows ids: `state check` (verify
//! each object, say which paths a damaged one breaks), gc (what is reachable), push (what the
//! other side lacks) and fetch (what this store lacks, verified before it is staged).
//!
//! The edges are the format's own ([`objects_format::Object::children`], SPEC §11). The walk is
//! iterative, enters each object once (the seen set is the only memory that grows with the
//! store, as before), and finishes an object's content (root tree, entries, chunks, depth first,
//! in order) before it leaves the object; a snapshot's parents are followed only after that, so
//! the frames held at once are one path from a snapshot down to a leaf, never a whole history.
//!
//! "Once" is per id and kind: an id fixes its kind, so a second kind only comes from a damaged or
//! hostile link, which is entered (and fails to read) on its own rather than passing for the
//! object seen before.
//!
//! What to do at each object is the [`Visitor`]'s; where objects are read from is the
//! [`Source`]'s (the local store, or a remote backend behind the transfer module).

use std::collections::HashSet;

use objects_format::{Kind, Link, Object, ObjectId};

use super::ObjectStore;
use crate::error::{Error, Result};

/// The objects a walk entered, each with the kind it was entered as.
pub type Seen = HashSet<(ObjectId, Kind)>;

/// Where a walk reads objects.
pub trait Source {
    /// What a read yields beside the decoded object: nothing for the local store, the stored
    /// bytes for a transfer that stages what it read.
    type Extra;

    /// Reads, verifies and decodes `id`, which must be of kind `kind`.
    ///
    /// # Errors
    /// Missing, corrupt or of another kind; I/O.
    fn read(&mut self, id: &ObjectId, kind: Kind) -> Result<(Object, Self::Extra)>;
}

/// The local store: every object read is verified against its id and kind.
impl Source for &ObjectStore {
    type Extra = ();

    fn read(&mut self, id: &ObjectId, kind: Kind) -> Result<(Object, ())> {
        Ok((ObjectStore::read(self, id, kind)?, ()))
    }
}

/// One object reached by the walk, and how.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// Its id.
    pub id: ObjectId,
    /// The kind the link demands of it.
    pub kind: Kind,
    /// How the object that leads here names it; `None` for a root of the walk.
    pub link: Option<Link<'a>>,
    /// The object that leads here.
    pub from: Option<ObjectId>,
    /// Tree depth: 0 for a snapshot and its root tree (and for any root of the walk), one more
    /// for each tree entry or chunk below.
    pub depth: usize,
}

impl Node<'_> {
    /// The size its link says its content has (see [`Link::size`]).
    #[must_use]
    pub fn size(&self) -> Option<u64> {
        self.link.and_then(|l| l.size())
    }
}

/// What to do with an object reached for the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enter {
    /// Read it from the source, then walk on below it.
    Read,
    /// Count it as reached (it is in the walk's seen set) but do not read it: a blob whose
    /// content is not needed, an object the other side has.
    Skip,
    /// Act as if the link were not there (a parent a shallow snapshot does not have); a later
    /// link to the same id is entered afresh.
    Ignore,
}

/// Which links of an object just read the walk follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descend {
    /// Its content, then its history.
    All,
    /// Only its history (a snapshot whose content is known to be present).
    History,
    /// Neither.
    Nothing,
}

/// What a walk does at each object. Every method has a default that walks everything and
/// stops at the first error.
pub trait Visitor<S: Source + ?Sized> {
    /// First link to `node` in this walk.
    ///
    /// # Errors
    /// Stops the walk.
    fn enter(&mut self, src: &mut S, node: &Node<'_>) -> Result<Enter> {
        let _ = (src, node);
        Ok(Enter::Read)
    }

    /// A later link to an object already entered (read or skipped) as the same kind; its first
    /// visit is finished (links cannot form a cycle).
    ///
    /// # Errors
    /// Stops the walk.
    fn again(&mut self, src: &mut S, node: &Node<'_>) -> Result<()> {
        let _ = (src, node);
        Ok(())
    }

    /// `node` was read as `obj`; says which of its links to follow.
    ///
    /// # Errors
    /// Stops the walk.
    fn read(
        &mut self,
        src: &mut S,
        node: &Node<'_>,
        obj: &Object,
        extra: &S::Extra,
    ) -> Result<Descend> {
        let _ = (src, node, obj, extra);
        Ok(Descend::All)
    }

    /// Everything below `node` (its content) is finished; its history is followed next.
    ///
    /// # Errors
    /// Stops the walk.
    fn leave(&mut self, src: &mut S, node: &Node<'_>, obj: Object, extra: S::Extra) -> Result<()> {
        let _ = (src, node, obj, extra);
        Ok(())
    }

    /// Reading `node` failed. Returning `Ok` goes on as if it had no children (`state check`
    /// records the problem and checks the rest).
    ///
    /// # Errors
    /// By default `err` itself: the walk stops.
    fn failed(&mut self, src: &mut S, node: &Node<'_>, err: Error) -> Result<()> {
        let _ = (src, node);
        Err(err)
    }
}

/// An object read and not yet left.
struct Frame<X> {
    id: ObjectId,
    kind: Kind,
    depth: usize,
    from: Option<ObjectId>,
    /// Its position among the children of the frame below (None for a root or a parent
    /// snapshot, which are reached from no open frame).
    index: Option<usize>,
    obj: Object,
    extra: X,
    /// Next child to look at.
    next: usize,
    content: bool,
    history: bool,
}

/// An object to start from once the open frames are finished: a root, or a parent snapshot.
struct Later {
    id: ObjectId,
    kind: Kind,
    from: Option<ObjectId>,
}

/// Walks the graph from `roots` (id, kind), the last first, calling `visitor` at each object;
/// returns the seen set (every object entered with [`Enter::Read`] or [`Enter::Skip`]).
///
/// # Errors
/// The first error the visitor returns (by default, the first failed read).
pub fn walk<S, V>(src: &mut S, roots: &[(ObjectId, Kind)], visitor: &mut V) -> Result<Seen>
where
    S: Source + ?Sized,
    V: Visitor<S> + ?Sized,
{
    let mut seen = Seen::new();
    let mut frames: Vec<Frame<S::Extra>> = Vec::new();
    // Popped from the end: the last root first, as the walks this replaces did.
    let mut later: Vec<Later> = roots
        .iter()
        .map(|&(id, kind)| Later {
            id,
            kind,
            from: None,
        })
        .collect();
    while let Some(l) = later.pop() {
        let node = Node {
            id: l.id,
            kind: l.kind,
            link: l.from.map(|_| Link::Parent),
            from: l.from,
            depth: 0,
        };
        if let Some((obj, extra, d)) = open(src, visitor, &mut seen, &node)? {
            frames.push(frame(&node, None, obj, extra, d));
        }
        while let Some(top) = frames.last_mut() {
            let mut picked = None;
            if top.content {
                while let Some(c) = top.obj.child(top.next) {
                    top.next += 1;
                    if !c.link.is_history() {
                        picked = Some(top.next - 1);
                        break;
                    }
                }
            }
            if let Some(i) = picked {
                let parent = frames.last().expect("the frame just looked at");
                let c = parent.obj.child(i).expect("picked from this object");
                let node = Node {
                    id: c.id,
                    kind: c.kind,
                    link: Some(c.link),
                    from: Some(parent.id),
                    depth: match c.link {
                        Link::Root => parent.depth,
                        _ => parent.depth + 1,
                    },
                };
                if let Some((obj, extra, d)) = open(src, visitor, &mut seen, &node)? {
                    let f = frame(&node, Some(i), obj, extra, d);
                    frames.push(f);
                }
                continue;
            }
            let f = frames.pop().expect("the frame just looked at");
            let link = match (f.index, frames.last()) {
                (Some(i), Some(parent)) => parent.obj.child(i).map(|c| c.link),
                _ => f.from.map(|_| Link::Parent),
            };
            let node = Node {
                id: f.id,
                kind: f.kind,
                link,
                from: f.from,
                depth: f.depth,
            };
            let parents: Vec<(ObjectId, Kind)> = if f.history {
                f.obj
                    .children()
                    .filter(|c| c.link.is_history())
                    .map(|c| (c.id, c.kind))
                    .collect()
            } else {
                Vec::new()
            };
            visitor.leave(src, &node, f.obj, f.extra)?;
            later.extend(parents.into_iter().map(|(id, kind)| Later {
                id,
                kind,
                from: Some(f.id),
            }));
        }
    }
    Ok(seen)
}

fn frame<X>(node: &Node<'_>, index: Option<usize>, obj: Object, extra: X, d: Descend) -> Frame<X> {
    Frame {
        id: node.id,
        kind: node.kind,
        depth: node.depth,
        from: node.from,
        index,
        obj,
        extra,
        next: 0,
        content: d == Descend::All,
        history: d != Descend::Nothing,
    }
}

/// Enters `node` once: the visitor decides, the source reads. `Some` when a frame opens.
fn open<S, V>(
    src: &mut S,
    visitor: &mut V,
    seen: &mut Seen,
    node: &Node<'_>,
) -> Result<Option<(Object, S::Extra, Descend)>>
where
    S: Source + ?Sized,
    V: Visitor<S> + ?Sized,
{
    let key = (node.id, node.kind);
    if seen.contains(&key) {
        visitor.again(src, node)?;
        return Ok(None);
    }
    match visitor.enter(src, node)? {
        Enter::Ignore => return Ok(None),
        Enter::Skip => {
            seen.insert(key);
            return Ok(None);
        }
        Enter::Read => {
            seen.insert(key);
        }
    }
    match src.read(&node.id, node.kind) {
        Ok((obj, extra)) => {
            let d = visitor.read(src, node, &obj, &extra)?;
            Ok(Some((obj, extra, d)))
        }
        Err(e) => {
            visitor.failed(src, node, e)?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use objects_format::{
        ChangeSummary, ChunkList, ChunkRef, EntryKind, Snapshot, Tree, TreeEntry,
    };

    use super::*;

    /// Objects in memory, by id.
    #[derive(Default)]
    struct Mem(BTreeMap<ObjectId, Object>);

    impl Mem {
        fn put(&mut self, o: Object) -> ObjectId {
            let (id, _) = objects_format::encode_with_id(&o).expect("encodes");
            self.0.insert(id, o);
            id
        }
    }

    impl Source for Mem {
        type Extra = ();
        fn read(&mut self, id: &ObjectId, kind: Kind) -> Result<(Object, ())> {
            match self.0.get(id) {
                Some(o) if o.kind() == kind => Ok((o.clone(), ())),
                Some(o) => Err(Error::WrongKind {
                    id: *id,
                    expected: kind,
                    found: o.kind().name(),
                }),
                None => Err(Error::MissingObject { id: *id }),
            }
        }
    }

    /// Records the order of events.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Visitor<Mem> for Log {
        fn enter(&mut self, _: &mut Mem, n: &Node<'_>) -> Result<Enter> {
            self.0.push(format!("enter {} {}", n.kind.name(), n.depth));
            Ok(if n.kind == Kind::Blob {
                Enter::Skip
            } else {
                Enter::Read
            })
        }
        fn again(&mut self, _: &mut Mem, n: &Node<'_>) -> Result<()> {
            self.0.push(format!("again {}", n.kind.name()));
            Ok(())
        }
        fn leave(&mut self, _: &mut Mem, n: &Node<'_>, _: Object, _: ()) -> Result<()> {
            self.0.push(format!("leave {}", n.kind.name()));
            Ok(())
        }
    }

    fn entry(name: &str, kind: EntryKind, size: u64, id: ObjectId) -> TreeEntry {
        TreeEntry {
            name: name.as_bytes().to_vec(),
            kind,
            flags: 0,
            size,
            id,
        }
    }

    fn snapshot(root: ObjectId, parents: Vec<ObjectId>) -> Object {
        Object::Snapshot(Snapshot {
            root,
            parents,
            time_ns: 0,
            device: "d".into(),
            message: String::new(),
            session: None,
            summary: ChangeSummary::default(),
            extra: Vec::new(),
        })
    }

    #[test]
    fn content_before_history_each_id_once() {
        let mut m = Mem::default();
        let blob = m.put(Object::Blob(b"hi".to_vec()));
        let chunks = m.put(Object::ChunkList(ChunkList {
            total_size: 4,
            chunks: vec![ChunkRef { id: blob, len: 2 }, ChunkRef { id: blob, len: 2 }],
        }));
        let sub = m.put(Object::Tree(Tree {
            entries: vec![entry("f", EntryKind::File, 2, blob)],
        }));
        let root = m.put(Object::Tree(Tree {
            entries: vec![
                entry("a", EntryKind::ChunkedFile, 4, chunks),
                entry("d", EntryKind::Dir, 0, sub),
            ],
        }));
        let first = m.put(snapshot(root, Vec::new()));
        let second = m.put(snapshot(root, vec![first]));
        let mut log = Log::default();
        let seen = walk(&mut m, &[(second, Kind::Snapshot)], &mut log).expect("walks");
        assert_eq!(
            log.0,
            [
                "enter snapshot 0",
                "enter tree 0",
                "enter chunk-list 1",
                "enter blob 2",
                "again blob",
                "leave chunk-list",
                "enter tree 1",
                "again blob",
                "leave tree",
                "leave tree",
                "leave snapshot",
                "enter snapshot 0",
                "again tree",
                "leave snapshot",
            ]
        );
        assert_eq!(seen.len(), 6);
        assert!(seen.contains(&(blob, Kind::Blob)) && seen.contains(&(first, Kind::Snapshot)));
    }

    #[test]
    fn a_failed_read_stops_the_walk_unless_the_visitor_goes_on() {
        let mut m = Mem::default();
        let ghost = ObjectId([7; 32]);
        let snap = m.put(snapshot(ghost, Vec::new()));
        let err = walk(&mut m, &[(snap, Kind::Snapshot)], &mut Log::default());
        assert!(matches!(err, Err(Error::MissingObject { id }) if id == ghost));

        struct Tolerant(usize);
        impl Visitor<Mem> for Tolerant {
            fn failed(&mut self, _: &mut Mem, _: &Node<'_>, _: Error) -> Result<()> {
                self.0 += 1;
                Ok(())
            }
        }
        let mut t = Tolerant(0);
        let seen = walk(&mut m, &[(snap, Kind::Snapshot)], &mut t).expect("goes on");
        assert_eq!((t.0, seen.len()), (1, 2));
    }

    #[test]
    fn a_link_of_another_kind_is_entered_on_its_own() {
        let mut m = Mem::default();
        let root = m.put(Object::Tree(Tree::default()));
        let snap = m.put(snapshot(root, Vec::new()));
        // A ref naming the tree as if it were a snapshot (a damaged head).
        let mut log = Log::default();
        let err = walk(
            &mut m,
            &[(root, Kind::Snapshot), (snap, Kind::Snapshot)],
            &mut log,
        );
        assert!(
            matches!(err, Err(Error::WrongKind { id, .. }) if id == root),
            "{:?}",
            log.0
        );
    }

    #[test]
    fn ignored_links_and_history_only() {
        let mut m = Mem::default();
        let root = m.put(Object::Tree(Tree::default()));
        let old = m.put(snapshot(root, Vec::new()));
        let mid = m.put(snapshot(root, vec![old]));
        let head = m.put(snapshot(root, vec![mid]));

        /// Reads only snapshots, never trees; stops history below `mid`.
        struct History(ObjectId, Vec<ObjectId>);
        impl Visitor<Mem> for History {
            fn enter(&mut self, _: &mut Mem, n: &Node<'_>) -> Result<Enter> {
                Ok(if n.from == Some(self.0) {
                    Enter::Ignore
                } else {
                    Enter::Read
                })
            }
            fn read(&mut self, _: &mut Mem, n: &Node<'_>, _: &Object, _: &()) -> Result<Descend> {
                self.1.push(n.id);
                Ok(Descend::History)
            }
        }
        let mut h = History(mid, Vec::new());
        let seen = walk(&mut m, &[(head, Kind::Snapshot)], &mut h).expect("walks");
        assert_eq!(h.1, [head, mid]);
        assert_eq!(seen.len(), 2, "the ignored parent is not seen");
    }
}
