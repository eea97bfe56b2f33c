//! Snapshot model: the live dirs as a flat map of paths, trees built from it and read back.
//!
//! Paths are byte strings relative to the snapshot root, `/`-separated: `config/…`,
//! `state/sessions/…`, `state/journal/…`. Only paths under [`ROOTS`] are ever read or written.

pub mod conflicts;
pub mod descriptor;
pub mod exclude;
pub mod policy;
pub mod redact;
pub mod restore;
pub mod save;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use objects_format::modes::{self, Modes};
use objects_format::{EntryKind, FLAG_EXECUTABLE, Object, ObjectId, Snapshot, Tree, TreeEntry};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::store::Batch;
use crate::store::ObjectStore;

/// The folders a snapshot covers, relative to the snapshot root. Nothing else is ever
/// snapshotted or touched by a restore (`cache/`, `logs/`, `metrics/`, `snapshots/`, `backups/`).
pub const ROOTS: &[&str] = &["config", "state/sessions", "state/journal", "state/secrets"];

/// The vault's root (`src/vault`): age ciphertext only. Unlike the others it may be emptied
/// without `--allow-empty`.
pub const VAULT_ROOT: &str = "state/secrets";

/// One file (or symlink) in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// File, chunked file or symlink.
    pub kind: EntryKind,
    /// Entry flags (executable).
    pub flags: u8,
    /// Permission bits (`objects_format::modes`): of the live file, or from the snapshot's
    /// `modes` table. 0 when not recorded (a symlink, or a snapshot without a table): a restore
    /// then creates the file with the legacy mode and leaves the mode of a live file alone.
    pub mode: u16,
    /// Size in bytes.
    pub size: u64,
    /// Content id.
    pub id: ObjectId,
}

impl Leaf {
    /// Same content and mode (what restore compares); a mode not recorded matches any.
    #[must_use]
    pub fn same_content(&self, other: &Leaf) -> bool {
        self.id == other.id
            && self.flags == other.flags
            && (self.mode == other.mode || self.mode == 0 || other.mode == 0)
            && (self.kind == EntryKind::Symlink) == (other.kind == EntryKind::Symlink)
    }
}

/// A snapshot's content as paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flat {
    /// Files and symlinks.
    pub leaves: BTreeMap<Vec<u8>, Leaf>,
    /// Every directory (including empty ones and the roots' ancestors).
    pub dirs: BTreeSet<Vec<u8>>,
}

impl Flat {
    /// An empty snapshot with just the root folders.
    #[must_use]
    pub fn with_roots() -> Self {
        let mut f = Flat::default();
        for r in ROOTS {
            f.add_dir_with_parents(r.as_bytes());
        }
        f
    }

    /// Adds a directory and all its ancestors.
    pub fn add_dir_with_parents(&mut self, p: &[u8]) {
        let mut end = 0;
        for (i, &b) in p.iter().enumerate() {
            if b == b'/' {
                self.dirs.insert(p[..i].to_vec());
            }
            end = i + 1;
        }
        if end > 0 {
            self.dirs.insert(p.to_vec());
        }
    }

    /// Keeps only paths for which `keep` is true (dirs: roots and ancestors always kept).
    #[must_use]
    pub fn filtered(&self, keep: impl Fn(&[u8]) -> bool) -> Flat {
        let mut out = Flat::with_roots();
        for (p, l) in &self.leaves {
            if keep(p) {
                out.leaves.insert(p.clone(), *l);
            }
        }
        for d in &self.dirs {
            if keep(d) {
                out.dirs.insert(d.clone());
            }
        }
        out
    }

    /// Counts (added, modified, deleted) files going from `self` to `new`.
    #[must_use]
    pub fn summary_to(&self, new: &Flat) -> objects_format::ChangeSummary {
        let mut s = objects_format::ChangeSummary::default();
        for (p, l) in &new.leaves {
            match self.leaves.get(p) {
                None => s.added += 1,
                Some(o) if !o.same_content(l) => s.modified += 1,
                Some(_) => {}
            }
        }
        s.deleted = u32::try_from(
            self.leaves
                .keys()
                .filter(|p| !new.leaves.contains_key(*p))
                .count(),
        )
        .unwrap_or(u32::MAX);
        s
    }
}

/// True when `p` is one of the roots, or inside one.
#[must_use]
pub fn in_roots(p: &[u8]) -> bool {
    ROOTS.iter().any(|r| {
        let r = r.as_bytes();
        p == r || (p.len() > r.len() && p.starts_with(r) && p[r.len()] == b'/')
    })
}

/// The session a path belongs to: `state/sessions/<first component>`, with a file's id being
/// name up to the first `.` (`abc.json`, `abc.scrollback` and `abc/` are all session `abc`).
#[must_use]
pub fn session_of(p: &[u8]) -> Option<&[u8]> {
    let rest = p.strip_prefix(b"state/sessions/")?;
    let first = match rest.iter().position(|&b| b == b'/') {
        Some(i) => &rest[..i],
        None => rest,
    };
    match first.iter().skip(1).position(|&b| b == b'.') {
        Some(i) => Some(&first[..=i]),
        None => Some(first),
    }
}

/// Maps snapshot paths to filesystem paths: `config/…` under the config dir, `state/…` under
/// the state dir.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Where `config/` lives.
    pub config: PathBuf,
    /// Where `state/` lives.
    pub state: PathBuf,
    /// The user's excludes, for the live layout (`None`: every file counts, as under a
    /// `restore --to` folder).
    pub excludes: Option<std::sync::Arc<exclude::Excludes>>,
}

impl Layout {
    /// The live layout for a config dir and a state dir.
    #[must_use]
    pub fn live(config: &Path, state: &Path) -> Self {
        Layout {
            config: config.to_path_buf(),
            state: state.to_path_buf(),
            excludes: None,
        }
    }

    /// The `restore --to DIR` layout: `DIR/config`, `DIR/state`.
    #[must_use]
    pub fn under(dir: &Path) -> Self {
        Layout {
            config: dir.join("config"),
            state: dir.join("state"),
            excludes: None,
        }
    }

    /// Filesystem path of a snapshot path.
    #[must_use]
    pub fn abs(&self, rel: &[u8]) -> PathBuf {
        let (base, rest) = if rel == b"config" {
            (&self.config, &b""[..])
        } else if let Some(r) = rel.strip_prefix(b"config/") {
            (&self.config, r)
        } else if rel == b"state" {
            (&self.state, &b""[..])
        } else if let Some(r) = rel.strip_prefix(b"state/") {
            (&self.state, r)
        } else {
            unreachable!("paths outside config/ and state/ are filtered before use")
        };
        if rest.is_empty() {
            base.clone()
        } else {
            base.join(std::ffi::OsStr::from_bytes(rest))
        }
    }
}

/// Builds and stores the trees for `flat`; returns the root tree id.
///
/// # Errors
/// Encoding (invalid names) or I/O errors.
pub fn write_trees(flat: &Flat, batch: Option<&Batch<'_>>) -> Result<ObjectId> {
    write_trees_with(flat, batch, None)
}

/// The tree id of every folder of a [`Flat`] (`""`: the root), as [`write_trees_recording`]
/// wrote them.
pub type TreeIds = BTreeMap<Vec<u8>, ObjectId>;

/// [`write_trees`], also returning the id of every folder's tree (for the save's tree diff).
///
/// # Errors
/// As [`write_trees`].
pub fn write_trees_recording(
    flat: &Flat,
    batch: Option<&Batch<'_>>,
) -> Result<(ObjectId, TreeIds)> {
    let ids = std::sync::Mutex::new(TreeIds::new());
    let root = write_trees_with(flat, batch, Some(&ids))?;
    Ok((root, ids.into_inner().expect("no panics while held")))
}

fn write_trees_with(
    flat: &Flat,
    batch: Option<&Batch<'_>>,
    ids: Option<&std::sync::Mutex<TreeIds>>,
) -> Result<ObjectId> {
    // Folders no entry of `dirs` names but a file lies in (a caller's `Flat` normally lists
    // them all).
    let mut unlisted = BTreeSet::new();
    for p in flat.leaves.keys() {
        let mut d = &p[..];
        while let Some(i) = d.iter().rposition(|&b| b == b'/') {
            d = &d[..i];
            if flat.dirs.contains(d) || !unlisted.insert(d.to_vec()) {
                break;
            }
        }
    }
    tree_of(flat, &unlisted, b"", batch, ids)
}

/// The paths strictly below folder `dir` (`""`: the root) are the keys in `[lo, hi)`.
fn below(dir: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    if dir.is_empty() {
        return (Vec::new(), None);
    }
    let mut lo = dir.to_vec();
    lo.push(b'/');
    let mut hi = dir.to_vec();
    hi.push(b'/' + 1);
    (lo, Some(hi))
}

/// Writes the tree of folder `dir` and every tree below it, from the files and folders of
/// `flat` (and `unlisted`) whose path starts with `dir/`: each folder's entries are gathered
/// from that range when its tree is written, so nothing but the folders on the way is held,
/// and sibling folders are written in parallel.
fn tree_of(
    flat: &Flat,
    unlisted: &BTreeSet<Vec<u8>>,
    dir: &[u8],
    batch: Option<&Batch<'_>>,
    record: Option<&std::sync::Mutex<TreeIds>>,
) -> Result<ObjectId> {
    use std::ops::Bound;
    let (lo, hi) = below(dir);
    let range = (
        Bound::Included(&lo[..]),
        hi.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
    );
    let direct = |p: &[u8]| !p[lo.len()..].contains(&b'/');
    let mut entries: Vec<TreeEntry> = flat
        .leaves
        .range::<[u8], _>(range)
        .filter(|(p, _)| direct(p))
        .map(|(p, l)| TreeEntry {
            name: p[lo.len()..].to_vec(),
            kind: l.kind,
            flags: l.flags,
            size: l.size,
            id: l.id,
        })
        .collect();
    let subs: Vec<&[u8]> = flat
        .dirs
        .range::<[u8], _>(range)
        .chain(unlisted.range::<[u8], _>(range))
        .map(Vec::as_slice)
        .filter(|p| direct(p))
        .collect();
    let ids = subs
        .par_iter()
        .map(|s| tree_of(flat, unlisted, s, batch, record))
        .collect::<Vec<_>>();
    for (s, id) in subs.iter().zip(ids) {
        entries.push(TreeEntry {
            name: s[lo.len()..].to_vec(),
            kind: EntryKind::Dir,
            flags: 0,
            size: 0,
            id: id?,
        });
    }
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = entries.windows(2).find(|w| w[0].name == w[1].name) {
        let mut p = lo;
        p.extend_from_slice(&w[0].name);
        return Err(Error::Internal(format!(
            "duplicate path {} in a tree being written",
            String::from_utf8_lossy(&p)
        )));
    }
    let obj = Object::Tree(Tree { entries });
    let (id, bytes) = objects_format::encode_with_id(&obj)?;
    if let Some(b) = batch {
        b.put_canonical(objects_format::Kind::Tree, id, &bytes)?;
    }
    if let Some(r) = record {
        r.lock()
            .expect("no panics while held")
            .insert(dir.to_vec(), id);
    }
    Ok(id)
}

/// True when `snap` records the modes `flat` has (both with the same `modes` entry, or
/// neither).
pub(crate) fn same_modes(snap: &Snapshot, flat: &Flat) -> bool {
    let recorded = snap.extra.iter().find(|(k, _)| k == modes::KEY);
    recorded.map(|(k, v)| (k.as_str(), v.as_slice()))
        == modes_extra(flat)
            .as_ref()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
}

/// What [`diff_to`] found: the change counts a snapshot's summary records, and the sessions
/// whose content moved (the session refs a snapshot moves).
#[derive(Debug, Default)]
pub(crate) struct TreeDiff {
    /// Files added, modified, deleted (as [`Flat::summary_to`] counts them).
    pub summary: objects_format::ChangeSummary,
    /// Sessions that `new` holds and whose files, folders, kinds, flags or ids differ from the
    /// head's, in order.
    pub moved: Vec<Vec<u8>>,
}

/// What changed from the head snapshot `head` to `new`, whose trees `new_ids` lists
/// ([`write_trees_recording`]): the head's trees are read only where their id differs from the
/// new one, so a change to one file reads the few trees on its way instead of the whole head.
/// `None` when the two snapshots' file modes differ (modes live in the snapshot, not in the
/// trees, so equal tree ids would not say the modes are equal): the caller compares flattened
/// snapshots then, as [`Flat::summary_to`] does.
///
/// # Errors
/// Missing or corrupt head trees.
pub(crate) fn diff_to(
    store: &ObjectStore,
    head: &Snapshot,
    new: &Flat,
    new_ids: &TreeIds,
) -> Result<Option<TreeDiff>> {
    if !same_modes(head, new) {
        return Ok(None);
    }
    let mut d = Differ {
        store,
        new,
        new_ids,
        out: TreeDiff::default(),
        sessions: BTreeSet::new(),
    };
    d.tree(&head.root, b"", 0)?;
    let Differ {
        mut out, sessions, ..
    } = d;
    // A session the new snapshot no longer holds keeps its ref (as `moved_sessions`).
    out.moved = sessions
        .into_iter()
        .filter(|s| holds_session(new, s))
        .collect();
    Ok(Some(out))
}

/// True when `flat` has a file or folder of session `s`.
fn holds_session(flat: &Flat, s: &[u8]) -> bool {
    let mut prefix = b"state/sessions/".to_vec();
    prefix.extend_from_slice(s);
    let of = |p: &&Vec<u8>| session_of(p) == Some(s);
    flat.dirs
        .range::<[u8], _>((
            std::ops::Bound::Included(prefix.as_slice()),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|p| p.starts_with(&prefix))
        .any(|p| of(&p))
        || flat
            .leaves
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix.as_slice()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(p, _)| p.starts_with(&prefix))
            .any(|(p, _)| of(&p))
}

/// The walk of [`diff_to`].
struct Differ<'a> {
    store: &'a ObjectStore,
    new: &'a Flat,
    new_ids: &'a TreeIds,
    out: TreeDiff,
    /// Sessions with a difference (some may be gone from `new`).
    sessions: BTreeSet<Vec<u8>>,
}

impl Differ<'_> {
    fn touch(&mut self, p: &[u8]) {
        if let Some(s) = session_of(p) {
            self.sessions.insert(s.to_vec());
        }
    }

    /// Compares the head's tree `id` of folder `dir` with the new snapshot's folder.
    fn tree(&mut self, id: &ObjectId, dir: &[u8], depth: usize) -> Result<()> {
        if self.new_ids.get(dir) == Some(id) {
            return Ok(());
        }
        if depth > 256 {
            return Err(Error::CorruptObject {
                id: *id,
                why: "tree nesting deeper than 256".into(),
            });
        }
        let head = self.store.read_tree(id)?;
        let join = |name: &[u8]| {
            let mut p = dir.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            p
        };
        // The new folder's direct entries: files, then folders.
        let (lo, hi) = below(dir);
        let range = (
            std::ops::Bound::Included(&lo[..]),
            hi.as_deref()
                .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
        );
        let direct = |p: &[u8]| !p[lo.len()..].contains(&b'/');
        let mut names: BTreeSet<Vec<u8>> = self
            .new
            .leaves
            .range::<[u8], _>(range)
            .filter(|(p, _)| direct(p))
            .map(|(p, _)| p[lo.len()..].to_vec())
            .collect();
        names.extend(
            self.new_ids
                .range::<[u8], _>(range)
                .filter(|(p, _)| direct(p))
                .map(|(p, _)| p[lo.len()..].to_vec()),
        );
        for e in &head.entries {
            names.remove(&e.name);
            let p = join(&e.name);
            if !relevant(&p) {
                continue;
            }
            let new_leaf = self.new.leaves.get(&p);
            let new_dir = self.new_ids.contains_key(&p);
            if e.kind == EntryKind::Dir {
                if new_dir {
                    self.tree(&e.id, &p, depth + 1)?;
                    continue;
                }
                // The folder is gone: its files are deleted.
                self.touch(&p);
                self.out.summary.deleted = self
                    .out
                    .summary
                    .deleted
                    .saturating_add(self.count_files(&e.id, &p, depth + 1)?);
                if new_leaf.is_some() {
                    self.out.summary.added = self.out.summary.added.saturating_add(1);
                }
                continue;
            }
            match new_leaf {
                Some(l) => {
                    let old = Leaf {
                        kind: e.kind,
                        flags: e.flags,
                        mode: 0,
                        size: e.size,
                        id: e.id,
                    };
                    if !old.same_content(l) {
                        self.out.summary.modified = self.out.summary.modified.saturating_add(1);
                    }
                    if (old.kind, old.flags, old.id) != (l.kind, l.flags, l.id) {
                        self.touch(&p);
                    }
                }
                None => {
                    self.touch(&p);
                    self.out.summary.deleted = self.out.summary.deleted.saturating_add(1);
                    if new_dir {
                        self.added_below(&p);
                    }
                }
            }
        }
        // What only the new folder has.
        for name in names {
            let p = join(&name);
            if !relevant(&p) {
                continue;
            }
            self.touch(&p);
            if self.new.leaves.contains_key(&p) {
                self.out.summary.added = self.out.summary.added.saturating_add(1);
            } else {
                self.added_below(&p);
            }
        }
        Ok(())
    }

    /// Counts the new files below folder `p` as added (and touches their sessions).
    fn added_below(&mut self, p: &[u8]) {
        let (lo, hi) = below(p);
        let range = (
            std::ops::Bound::Included(&lo[..]),
            hi.as_deref()
                .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
        );
        let n = self.new.leaves.range::<[u8], _>(range).count();
        self.touch(p);
        self.out.summary.added = self
            .out
            .summary
            .added
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// The number of files below the head's tree `id` (folder `p`).
    fn count_files(&mut self, id: &ObjectId, p: &[u8], depth: usize) -> Result<u32> {
        if depth > 256 {
            return Err(Error::CorruptObject {
                id: *id,
                why: "tree nesting deeper than 256".into(),
            });
        }
        let t = self.store.read_tree(id)?;
        let mut n = 0u32;
        for e in &t.entries {
            if e.kind == EntryKind::Dir {
                let mut sub = p.to_vec();
                sub.push(b'/');
                sub.extend_from_slice(&e.name);
                n = n.saturating_add(self.count_files(&e.id, &sub, depth + 1)?);
            } else {
                n = n.saturating_add(1);
            }
        }
        Ok(n)
    }
}

/// Whether a path of a head tree counts in a diff: inside the roots, or a folder above one
/// (what [`flatten`] reads).
fn relevant(p: &[u8]) -> bool {
    in_roots(p)
        || ROOTS
            .iter()
            .any(|r| r.as_bytes().starts_with(p) && r.as_bytes().get(p.len()) == Some(&b'/'))
}

/// Reads a snapshot back into a [`Flat`] (see [`flatten`]), with the file modes its `modes`
/// table records (SPEC §6.1).
///
/// # Errors
/// Missing or corrupt objects.
pub fn flatten_snapshot(store: &ObjectStore, snap: &Snapshot) -> Result<Flat> {
    let mut f = flatten(store, &snap.root)?;
    apply_modes(snap, &mut f);
    Ok(f)
}

/// Gives `f`'s files (read from `snap`'s trees) the modes `snap`'s `modes` table records.
pub(crate) fn apply_modes(snap: &Snapshot, f: &mut Flat) {
    if let Some(table) = snap
        .extra
        .iter()
        .find(|(k, _)| k == modes::KEY)
        .and_then(|(_, v)| Modes::decode(v))
    {
        for (p, l) in &mut f.leaves {
            if l.kind != EntryKind::Symlink {
                l.mode = table.mode(p, l.flags & FLAG_EXECUTABLE != 0);
            }
        }
    }
}

/// The `modes` entry of a snapshot's `extra` for `flat`'s files, or `None` when the legacy rule
/// says the same (SPEC §6.1).
#[must_use]
pub fn modes_extra(flat: &Flat) -> Option<(String, Vec<u8>)> {
    let table = Modes::of(
        flat.leaves
            .iter()
            .filter(|(_, l)| l.kind != EntryKind::Symlink)
            .map(|(p, l)| {
                let exec = l.flags & FLAG_EXECUTABLE != 0;
                let mode = if l.mode == 0 {
                    modes::legacy(exec)
                } else {
                    l.mode
                };
                (p.as_slice(), exec, mode)
            }),
    );
    (!table.is_legacy()).then(|| (modes::KEY.to_owned(), table.encode()))
}

/// `extra` with its `modes` entry replaced by `flat`'s (sorted by key, as the format wants).
#[must_use]
pub fn with_modes(mut extra: Vec<(String, Vec<u8>)>, flat: &Flat) -> Vec<(String, Vec<u8>)> {
    extra.retain(|(k, _)| k != modes::KEY);
    extra.extend(modes_extra(flat));
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    extra
}

/// Reads a root tree back into a [`Flat`], keeping only paths in [`ROOTS`]. Modes are not
/// recorded in trees (0; [`flatten_snapshot`] applies a snapshot's).
///
/// # Errors
/// Missing or corrupt objects.
pub fn flatten(store: &ObjectStore, root: &ObjectId) -> Result<Flat> {
    flatten_within(store, root, &|p: &[u8]| {
        if in_roots(p) {
            restore::Reach::Inside
        } else if ROOTS
            .iter()
            .any(|r| r.as_bytes().starts_with(p) && r.as_bytes().get(p.len()) == Some(&b'/'))
        {
            restore::Reach::Above
        } else {
            restore::Reach::Outside
        }
    })
}

/// A root tree's content within a part ([`restore::Reach::Inside`] paths, the folders above
/// them that are in the roots, and the roots themselves). Only the trees on the way to the part
/// and inside it are read. Modes are not recorded in trees (0; see [`apply_modes`]).
///
/// # Errors
/// Missing or corrupt objects.
pub(crate) fn flatten_within(
    store: &ObjectStore,
    root: &ObjectId,
    reach: &dyn Fn(&[u8]) -> restore::Reach,
) -> Result<Flat> {
    use restore::Reach;
    fn walk(
        store: &ObjectStore,
        id: &ObjectId,
        prefix: &[u8],
        reach: &dyn Fn(&[u8]) -> Reach,
        inside: bool,
        out: &mut Flat,
        depth: usize,
    ) -> Result<()> {
        if depth > 256 {
            return Err(Error::CorruptObject {
                id: *id,
                why: "tree nesting deeper than 256".into(),
            });
        }
        let t = store.read_tree(id)?;
        for e in &t.entries {
            let mut p = prefix.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            let r = if inside { Reach::Inside } else { reach(&p) };
            match (r, e.kind) {
                (Reach::Outside, _)
                | (Reach::Above, EntryKind::File | EntryKind::ChunkedFile | EntryKind::Symlink) => {
                }
                (_, EntryKind::Dir) => {
                    if r == Reach::Inside || in_roots(&p) {
                        out.dirs.insert(p.clone());
                    }
                    walk(store, &e.id, &p, reach, r == Reach::Inside, out, depth + 1)?;
                }
                (Reach::Inside, _) => {
                    out.leaves.insert(
                        p,
                        Leaf {
                            kind: e.kind,
                            flags: e.flags,
                            mode: 0,
                            size: e.size,
                            id: e.id,
                        },
                    );
                }
            }
        }
        Ok(())
    }
    let mut f = Flat::with_roots();
    walk(store, root, b"", reach, false, &mut f, 0)?;
    Ok(f)
}

/// The filesystem path of a name component list (for messages).
#[must_use]
pub fn display(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}
