//! Import verification shared by every remote: nothing from a remote is staged before it is
//! verified (hash, decode, kind) and, for trees, before the structure under it is known safe.
//!
//! Rules, on top of [`objects_format::verify`] (which already enforces the name rules of the
//! spec: no empty names, no `/`, no NUL, not `.` or `..`):
//! * an entry names an object of the kind the entry says, with the size the entry says (checked
//!   for every object read from the remote; objects already in the local store were verified
//!   when they were stored);
//! * symlink targets pass the structural rule of [`crate::snapshot::policy`]: non-empty, at most
//!   [`MAX_SYMLINK_TARGET`] bytes, no NUL. A target that leads out of its folder (absolute, or
//!   climbing) is *data*, accepted here: restore never materialises it (the policy's rule), so
//!   such history never blocks a pull;
//! * trees nest at most [`Limits::max_depth`] levels;
//! * a whole import reads at most [`Limits::max_objects`] objects and [`Limits::max_bytes`] bytes;
//! * stored zstd frames must declare their size, at most 64 MiB ([`crate::store::decompress`]).

use std::collections::{HashMap, HashSet};

use objects_format::{EntryKind, Kind, Link, Object, ObjectId, TreeEntry};

use crate::error::{Error, Result};
use crate::store::ObjectStore;
use crate::store::walk;

/// Longest symlink target accepted (the policy's bound; `state check` uses the same).
pub const MAX_SYMLINK_TARGET: usize = crate::snapshot::policy::MAX_SYMLINK_TARGET;

/// Largest stored (compressed) object file read from a remote: a zstd frame of
/// [`objects_format::MAX_OBJECT_SIZE`] incompressible bytes plus framing overhead.
pub const MAX_RAW_OBJECT: u64 = objects_format::MAX_OBJECT_SIZE as u64 + (1 << 20);

/// Bounds on one import, so a hostile remote cannot exhaust disk or memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Objects read from the remote by one fetch.
    pub max_objects: u64,
    /// Bytes read from the remote by one fetch (the larger of stored and decoded size per object).
    pub max_bytes: u64,
    /// Deepest tree nesting (the root tree is depth 0).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_objects: 1_000_000,
            max_bytes: 64 << 30,
            max_depth: 256,
        }
    }
}

/// What the structure under a tree requires of its placement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeInfo {
    /// Levels of directories below this tree (0: no subdirectories).
    pub height: usize,
}

impl TreeInfo {
    /// Accounts for a subdirectory.
    pub fn add_subdir(&mut self, sub: TreeInfo) {
        self.height = self.height.max(sub.height + 1);
    }
}

/// Checks a symlink target read from a remote (the structural rule of
/// [`crate::snapshot::policy`]).
///
/// # Errors
/// [`Error::UnsafePath`] for empty, over-long or NUL-containing targets.
pub fn check_link_target(target: &[u8]) -> Result<()> {
    crate::snapshot::policy::check_link_target(target).map_err(Error::UnsafePath)
}

/// Counts what an import reads and remembers what it has proven about trees.
#[derive(Debug)]
pub struct Checker {
    remote: String,
    limits: Limits,
    objects: u64,
    bytes: u64,
    trees: HashMap<ObjectId, TreeInfo>,
    links: HashSet<ObjectId>,
}

/// An object a remote was asked for and does not hold (the source of the [`Error::Remote`]
/// of [`Checker::missing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingOnRemote {
    /// Its kind, as the object naming it said.
    pub kind: Kind,
    /// Its id.
    pub id: ObjectId,
}

impl std::fmt::Display for MissingOnRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} is missing on the remote",
            self.kind.name(),
            self.id
        )
    }
}

impl std::error::Error for MissingOnRemote {}

/// True when `e` says the remote lacks an object ([`MissingOnRemote`]), not that it is damaged.
#[must_use]
pub fn is_missing_on_remote(e: &Error) -> bool {
    matches!(e, Error::Remote { source: Some(s), .. } if s.downcast_ref::<MissingOnRemote>().is_some())
}

impl Checker {
    /// A checker for one import from `remote`.
    #[must_use]
    pub fn new(remote: &str, limits: Limits) -> Self {
        Checker {
            remote: remote.to_owned(),
            limits,
            objects: 0,
            bytes: 0,
            trees: HashMap::new(),
            links: HashSet::new(),
        }
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// An error naming the remote.
    #[must_use]
    pub fn err(&self, why: impl Into<String>) -> Error {
        Error::remote(&self.remote, why)
    }

    /// The error of an object the remote does not hold: an [`Error::Remote`] whose source is
    /// [`MissingOnRemote`], so that a pull can tell a remote still being written (a copy of a
    /// directory remote taken mid-push) from a damaged one.
    #[must_use]
    pub fn missing(&self, kind: Kind, id: ObjectId) -> Error {
        let m = MissingOnRemote { kind, id };
        Error::Remote {
            remote: self.remote.clone(),
            why: m.to_string(),
            transient: false,
            source: Some(Box::new(m)),
        }
    }

    /// Accounts for one object of `bytes` bytes read from the remote.
    ///
    /// # Errors
    /// When a limit is exceeded.
    pub fn charge(&mut self, bytes: u64) -> Result<()> {
        self.objects += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.objects > self.limits.max_objects {
            return Err(self.err(format!(
                "fetch exceeds the limit of {} objects",
                self.limits.max_objects
            )));
        }
        if self.bytes > self.limits.max_bytes {
            return Err(self.err(format!(
                "fetch exceeds the limit of {} bytes",
                self.limits.max_bytes
            )));
        }
        Ok(())
    }

    /// Refuses `bytes` more if it would exceed the byte budget (checked before reading).
    ///
    /// # Errors
    /// When the budget would be exceeded.
    pub fn precheck(&self, bytes: u64) -> Result<()> {
        if self.bytes.saturating_add(bytes) > self.limits.max_bytes {
            return Err(self.err(format!(
                "object of {bytes} bytes would exceed the fetch limit of {} bytes",
                self.limits.max_bytes
            )));
        }
        Ok(())
    }

    /// Objects and bytes charged so far.
    #[must_use]
    pub fn counted(&self) -> (u64, u64) {
        (self.objects, self.bytes)
    }

    /// The tree info proven for `id`, if any.
    #[must_use]
    pub fn tree_info(&self, id: &ObjectId) -> Option<TreeInfo> {
        self.trees.get(id).copied()
    }

    /// Records what was proven for a tree.
    pub fn set_tree_info(&mut self, id: ObjectId, info: TreeInfo) {
        self.trees.insert(id, info);
    }

    /// True when the symlink target blob `id` was checked already.
    #[must_use]
    pub fn link_checked(&self, id: &ObjectId) -> bool {
        self.links.contains(id)
    }

    /// Checks a symlink target (structurally) and records it as checked.
    ///
    /// # Errors
    /// As [`check_link_target`], naming the blob.
    pub fn check_link(&mut self, id: ObjectId, target: &[u8]) -> Result<()> {
        check_link_target(target)
            .map_err(|e| Error::UnsafePath(format!("symlink target {id}: {e}")))?;
        self.links.insert(id);
        Ok(())
    }

    /// Checks that a tree with `info` may sit at `depth`.
    ///
    /// # Errors
    /// [`Error::UnsafePath`] when the nesting is too deep.
    pub fn check_placement(&self, id: &ObjectId, info: TreeInfo, depth: usize) -> Result<()> {
        if depth + info.height > self.limits.max_depth {
            return Err(Error::UnsafePath(format!(
                "tree {id} nests deeper than {} levels",
                self.limits.max_depth
            )));
        }
        Ok(())
    }

    /// Checks the depth before descending into a tree at `depth`.
    ///
    /// # Errors
    /// [`Error::UnsafePath`] beyond [`Limits::max_depth`].
    pub fn check_depth(&self, depth: usize) -> Result<()> {
        if depth > self.limits.max_depth {
            return Err(Error::UnsafePath(format!(
                "trees nest deeper than {} levels",
                self.limits.max_depth
            )));
        }
        Ok(())
    }

    /// Computes (and memoizes) the info of a tree already in the local store: its height and,
    /// on the way, every symlink target under it.
    ///
    /// # Errors
    /// Store errors, or an unsafe symlink.
    pub fn local_tree_info(
        &mut self,
        store: &ObjectStore,
        id: &ObjectId,
        depth: usize,
    ) -> Result<TreeInfo> {
        if let Some(i) = self.trees.get(id) {
            return Ok(*i);
        }
        walk::walk(
            &mut &*store,
            &[(*id, Kind::Tree)],
            &mut LocalTrees {
                checker: self,
                depth,
            },
        )?;
        Ok(self.trees.get(id).copied().unwrap_or_default())
    }
}

/// The walk of [`Checker::local_tree_info`]: trees and symlink targets, not file contents (a
/// local object was verified when it was stored).
struct LocalTrees<'c> {
    checker: &'c mut Checker,
    /// Depth of the walk's root tree.
    depth: usize,
}

impl<'s> walk::Visitor<&'s ObjectStore> for LocalTrees<'_> {
    fn enter(&mut self, _: &mut &'s ObjectStore, node: &walk::Node<'_>) -> Result<walk::Enter> {
        Ok(match node.link {
            Some(Link::Entry(e)) if e.kind == EntryKind::Symlink => {
                if self.checker.links.contains(&node.id) {
                    walk::Enter::Ignore
                } else {
                    walk::Enter::Read
                }
            }
            Some(Link::Entry(e)) if e.kind.is_file() => walk::Enter::Ignore,
            _ if self.checker.trees.contains_key(&node.id) => walk::Enter::Skip,
            _ => {
                self.checker.check_depth(self.depth + node.depth)?;
                walk::Enter::Read
            }
        })
    }

    fn read(
        &mut self,
        _: &mut &'s ObjectStore,
        node: &walk::Node<'_>,
        obj: &Object,
        (): &(),
    ) -> Result<walk::Descend> {
        if let Object::Blob(target) = obj {
            self.checker.check_link(node.id, target)?;
        }
        Ok(walk::Descend::All)
    }

    fn leave(
        &mut self,
        _: &mut &'s ObjectStore,
        node: &walk::Node<'_>,
        obj: Object,
        (): (),
    ) -> Result<()> {
        if let Object::Tree(t) = obj {
            let mut info = TreeInfo::default();
            for e in t.entries.iter().filter(|e| e.kind == EntryKind::Dir) {
                info.add_subdir(self.checker.trees.get(&e.id).copied().unwrap_or_default());
            }
            self.checker.trees.insert(node.id, info);
        }
        Ok(())
    }
}

/// Verifies canonical bytes against the id they were requested by and the kind the reference
/// expects (`objects_format::verify`: BLAKE3, decode with every format rule, then the kind).
///
/// # Errors
/// [`Error::CorruptObject`] or [`Error::WrongKind`].
pub fn verify_canonical(id: &ObjectId, expected: Kind, canonical: &[u8]) -> Result<Object> {
    let obj = objects_format::verify(id, canonical).map_err(|e| Error::CorruptObject {
        id: *id,
        why: e.to_string(),
    })?;
    if obj.kind() != expected {
        return Err(Error::WrongKind {
            id: *id,
            expected,
            found: obj.kind().name(),
        });
    }
    Ok(obj)
}

/// Decompresses a stored object (size declared, at most 64 MiB) and verifies it.
///
/// # Errors
/// As [`verify_canonical`]; a bad or oversized zstd frame is [`Error::CorruptObject`].
pub fn verify_raw(id: &ObjectId, expected: Kind, raw: &[u8]) -> Result<(Vec<u8>, Object)> {
    let canonical =
        crate::store::decompress(raw).map_err(|why| Error::CorruptObject { id: *id, why })?;
    let obj = verify_canonical(id, expected, &canonical)?;
    Ok((canonical, obj))
}

/// Checks that an entry's recorded size matches the object it names (`actual`: blob data
/// length, chunk list total size).
///
/// # Errors
/// [`Error::CorruptObject`] naming the entry.
pub fn check_entry_size(tree: &ObjectId, e: &TreeEntry, actual: u64) -> Result<()> {
    if e.size != actual {
        return Err(Error::CorruptObject {
            id: *tree,
            why: format!(
                "entry {:?} says {} bytes, its object holds {actual}",
                String::from_utf8_lossy(&e.name),
                e.size
            ),
        });
    }
    Ok(())
}

/// The data length of a blob object.
#[must_use]
pub fn object_size(obj: &Object) -> u64 {
    match obj {
        Object::Blob(b) => b.len() as u64,
        Object::ChunkList(c) => c.total_size,
        Object::Tree(_) | Object::Snapshot(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets() {
        // Structure only: where a target leads is the restore's business (snapshot::policy).
        assert!(check_link_target(b"x").is_ok());
        assert!(check_link_target(b"../../etc/passwd").is_ok());
        assert!(check_link_target(b"/etc/passwd").is_ok());
        assert!(check_link_target(b"").is_err());
        assert!(check_link_target(b"a\0b").is_err());
        assert!(check_link_target(&[b'a'; MAX_SYMLINK_TARGET + 1]).is_err());
    }

    #[test]
    fn placement() {
        let c = Checker::new("r", Limits::default());
        let id = ObjectId([0; 32]);
        let mut mid = TreeInfo::default();
        mid.add_subdir(TreeInfo::default());
        assert_eq!(mid.height, 1);
        assert!(c.check_placement(&id, mid, 0).is_ok());
        let deep = TreeInfo { height: 300 };
        assert!(c.check_placement(&id, deep, 0).is_err());
    }

    #[test]
    fn budget() {
        let mut c = Checker::new(
            "r",
            Limits {
                max_objects: 2,
                max_bytes: 100,
                max_depth: 256,
            },
        );
        c.charge(10).unwrap();
        c.charge(10).unwrap();
        assert!(c.charge(1).is_err());
        let mut c = Checker::new(
            "r",
            Limits {
                max_objects: 10,
                max_bytes: 100,
                max_depth: 256,
            },
        );
        assert!(c.charge(101).is_err());
    }
}
