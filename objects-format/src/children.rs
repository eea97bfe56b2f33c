//! What each object names: its children in the object graph (`SPEC.md` §11).
//!
//! A snapshot names its root tree and its parent snapshots, a tree the object of each entry, a
//! chunk list its chunks, a blob nothing. Every walk over stored objects (check, gc, push,
//! fetch) follows exactly these links, so they are said once, here.
//!
//! Two sorts of link: *content* links (root tree, tree entries, chunks), below which an
//! object's whole content lies, and *history* links (a snapshot's parents), which lead to other
//! snapshots. A walk finishes an object's content before it follows its history, and a store
//! that keeps a snapshot keeps its content but may cut its history (a shallow fetch).

use crate::id::ObjectId;
use crate::kind::Kind;
use crate::kinds::{ChunkRef, EntryKind, Object, TreeEntry};

/// How an object names one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link<'a> {
    /// A snapshot's root tree.
    Root,
    /// One of a snapshot's parents (a history link).
    Parent,
    /// A tree entry naming a blob, a chunk list or a tree.
    Entry(&'a TreeEntry),
    /// One chunk of a chunk list.
    Chunk(&'a ChunkRef),
}

impl Link<'_> {
    /// True for a snapshot's parents: the links that lead to other snapshots, not into the
    /// object's content.
    #[must_use]
    pub fn is_history(&self) -> bool {
        matches!(self, Link::Parent)
    }

    /// The content size the link says the child has: an entry's `size` (blob length, symlink
    /// target length, chunk list `total_size`; none for a directory), a chunk's `len`.
    #[must_use]
    pub fn size(&self) -> Option<u64> {
        match self {
            Link::Entry(e) if e.kind != EntryKind::Dir => Some(e.size),
            Link::Chunk(c) => Some(u64::from(c.len)),
            Link::Entry(_) | Link::Root | Link::Parent => None,
        }
    }
}

/// One child of an object: its id, the kind the link demands, and the link itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Child<'a> {
    /// The child's id.
    pub id: ObjectId,
    /// The kind the child must have (a child of another kind is corruption).
    pub kind: Kind,
    /// How the parent names it.
    pub link: Link<'a>,
}

impl Object {
    /// The `i`-th child, in the order of [`Object::children`]. For walkers that keep a
    /// position in an object rather than a borrow of it.
    #[must_use]
    pub fn child(&self, i: usize) -> Option<Child<'_>> {
        match self {
            Object::Blob(_) => None,
            Object::ChunkList(c) => c.chunks.get(i).map(|ch| Child {
                id: ch.id,
                kind: Kind::Blob,
                link: Link::Chunk(ch),
            }),
            Object::Tree(t) => t.entries.get(i).map(|e| Child {
                id: e.id,
                kind: e.kind.target_kind(),
                link: Link::Entry(e),
            }),
            Object::Snapshot(s) => match i {
                0 => Some(Child {
                    id: s.root,
                    kind: Kind::Tree,
                    link: Link::Root,
                }),
                _ => s.parents.get(i - 1).map(|p| Child {
                    id: *p,
                    kind: Kind::Snapshot,
                    link: Link::Parent,
                }),
            },
        }
    }

    /// Every child, in order: a snapshot's root tree then its parents (first parent first), a
    /// tree's entries, a chunk list's chunks; a blob has none.
    #[must_use]
    pub fn children(&self) -> Children<'_> {
        Children { obj: self, next: 0 }
    }
}

/// The children of `obj` (see [`Object::children`]).
#[must_use]
pub fn children(obj: &Object) -> Children<'_> {
    obj.children()
}

/// Iterator over an object's children.
#[derive(Clone, Debug)]
pub struct Children<'a> {
    obj: &'a Object,
    next: usize,
}

impl<'a> Iterator for Children<'a> {
    type Item = Child<'a>;

    fn next(&mut self) -> Option<Child<'a>> {
        let c = self.obj.child(self.next)?;
        self.next += 1;
        Some(c)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let total = match self.obj {
            Object::Blob(_) => 0,
            Object::ChunkList(c) => c.chunks.len(),
            Object::Tree(t) => t.entries.len(),
            Object::Snapshot(s) => 1 + s.parents.len(),
        };
        let left = total.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Children<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{ChangeSummary, ChunkList, Snapshot, Tree};

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    #[test]
    fn each_kind_names_its_children_in_order() {
        assert_eq!(Object::Blob(b"x".to_vec()).children().count(), 0);

        let cl = Object::ChunkList(ChunkList {
            total_size: 5,
            chunks: vec![
                ChunkRef { id: id(1), len: 2 },
                ChunkRef { id: id(2), len: 3 },
            ],
        });
        let got: Vec<(ObjectId, Kind, Option<u64>)> = cl
            .children()
            .map(|c| (c.id, c.kind, c.link.size()))
            .collect();
        assert_eq!(
            got,
            [(id(1), Kind::Blob, Some(2)), (id(2), Kind::Blob, Some(3))]
        );

        let entry = |name: &[u8], kind, n| TreeEntry {
            name: name.to_vec(),
            kind,
            flags: 0,
            size: if kind == EntryKind::Dir { 0 } else { 7 },
            id: id(n),
        };
        let tree = Object::Tree(Tree {
            entries: vec![
                entry(b"a", EntryKind::File, 3),
                entry(b"b", EntryKind::ChunkedFile, 4),
                entry(b"c", EntryKind::Dir, 5),
                entry(b"d", EntryKind::Symlink, 6),
            ],
        });
        let got: Vec<(ObjectId, Kind, Option<u64>)> = tree
            .children()
            .map(|c| (c.id, c.kind, c.link.size()))
            .collect();
        assert_eq!(
            got,
            [
                (id(3), Kind::Blob, Some(7)),
                (id(4), Kind::ChunkList, Some(7)),
                (id(5), Kind::Tree, None),
                (id(6), Kind::Blob, Some(7)),
            ]
        );

        let snap = Object::Snapshot(Snapshot {
            root: id(9),
            parents: vec![id(10), id(11)],
            time_ns: 0,
            device: "d".into(),
            message: String::new(),
            session: None,
            summary: ChangeSummary::default(),
            extra: Vec::new(),
        });
        let kids = snap.children();
        assert_eq!(kids.len(), 3);
        let got: Vec<(ObjectId, Kind, bool)> =
            kids.map(|c| (c.id, c.kind, c.link.is_history())).collect();
        assert_eq!(
            got,
            [
                (id(9), Kind::Tree, false),
                (id(10), Kind::Snapshot, true),
                (id(11), Kind::Snapshot, true),
            ]
        );
        assert_eq!(snap.child(3), None);
        assert_eq!(children(&snap).nth(1).map(|c| c.id), Some(id(10)));
    }
}
