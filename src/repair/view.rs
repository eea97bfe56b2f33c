//! Reading the refs as they are (loose, packed, reflog) and judging which snapshots are whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use objects_format::{Kind, Object, ObjectId};

use crate::context::Context;
use crate::error::Result;
use crate::store::refs::{PackedScan, ReflogScan};

/// The refs as stored, damage included.
#[derive(Debug)]
pub(crate) struct RefView {
    /// Loose ref files: name → (path, value or what is wrong).
    pub loose: BTreeMap<String, (PathBuf, std::result::Result<ObjectId, String>)>,
    /// `packed-refs`.
    pub packed: PackedScan,
    /// The reflog.
    pub reflog: ReflogScan,
}

impl RefView {
    pub(crate) fn read(st: &Context) -> Result<RefView> {
        Ok(RefView {
            loose: st
                .refs
                .scan_loose()?
                .into_iter()
                .map(|(n, p, v)| (n, (p, v)))
                .collect(),
            packed: st.refs.scan_packed()?,
            reflog: st.refs.scan_reflog()?,
        })
    }

    /// The packed refs that could be read (all of them, or those of the lines that parse).
    pub(crate) fn packed_map(&self) -> BTreeMap<String, ObjectId> {
        match &self.packed {
            PackedScan::Absent => BTreeMap::new(),
            PackedScan::Sound(m) => m.clone(),
            PackedScan::Corrupt { salvaged, .. } => salvaged.clone(),
        }
    }

    /// What each ref holds as far as it can be read: the loose value, else the packed one.
    pub(crate) fn values(&self) -> BTreeMap<String, ObjectId> {
        let mut out = self.packed_map();
        for (n, (_, v)) in &self.loose {
            if let Ok(id) = v {
                out.insert(n.clone(), *id);
            }
        }
        out
    }

    /// Where a ref's value is kept: its loose file, or `packed-refs`.
    pub(crate) fn place(&self, st: &Context, name: &str) -> PathBuf {
        match self.loose.get(name) {
            Some((p, _)) => p.clone(),
            None if self.packed_map().contains_key(name) => st.refs.packed_path().to_path_buf(),
            None => st.refs.loose_path(name),
        }
    }

    /// The last value the reflog set for each ref (None: deleted), with that line's number.
    pub(crate) fn logged(&self) -> BTreeMap<String, (Option<ObjectId>, usize)> {
        let mut out = BTreeMap::new();
        for l in &self.reflog.lines {
            out.insert(l.name.clone(), (l.entry.new, l.no));
        }
        out
    }

    /// Refs that hold a value their reflog records before its last line: a ref cannot move
    /// back without a line saying so, so the newer value was lost (a deleted loose file
    /// uncovers the older packed value): name → (value held, last value logged, its line).
    pub(crate) fn behind(&self) -> BTreeMap<String, (ObjectId, ObjectId, usize)> {
        let mut earlier: BTreeMap<&str, BTreeSet<ObjectId>> = BTreeMap::new();
        let mut last: BTreeMap<&str, (Option<ObjectId>, usize)> = BTreeMap::new();
        for l in &self.reflog.lines {
            if let Some((Some(prev), _)) = last.get(l.name.as_str()) {
                earlier.entry(l.name.as_str()).or_default().insert(*prev);
            }
            last.insert(l.name.as_str(), (l.entry.new, l.no));
        }
        self.values()
            .into_iter()
            .filter_map(|(name, id)| {
                let (Some(newest), no) = *last.get(name.as_str())? else {
                    return None;
                };
                (newest != id && earlier.get(name.as_str())?.contains(&id))
                    .then_some((name, (id, newest, no)))
            })
            .collect()
    }

    /// Refs the reflog says exist that no file holds: (name, last value, line).
    pub(crate) fn missing(&self) -> Vec<(String, ObjectId, usize)> {
        let packed = self.packed_map();
        self.logged()
            .into_iter()
            .filter_map(|(n, (v, no))| {
                let id = v?;
                (!self.loose.contains_key(&n) && !packed.contains_key(&n)).then_some((n, id, no))
            })
            .collect()
    }
}

/// How usable a snapshot is as the value of a ref, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Health {
    /// Its snapshot object is missing, corrupt or not a snapshot.
    Unreadable,
    /// The snapshot object reads, but a tree or chunk list under it does not.
    Readable,
    /// The snapshot, its trees and chunk lists read and verify (what `log`, `save` and
    /// restore planning read); some blob may be missing.
    Sound,
    /// Sound, and every blob it names is present.
    Complete,
}

/// Judges snapshots, remembering what it read.
pub(crate) struct Judge<'a> {
    st: &'a Context,
    /// Tree or chunk list → (sound, complete).
    memo: HashMap<ObjectId, (bool, bool)>,
}

impl<'a> Judge<'a> {
    pub(crate) fn new(st: &'a Context) -> Self {
        Judge {
            st,
            memo: HashMap::new(),
        }
    }

    pub(crate) fn snapshot(&mut self, id: ObjectId) -> Health {
        let Ok(s) = self.st.objects.read_snapshot(&id) else {
            return Health::Unreadable;
        };
        match self.node(s.root, Kind::Tree, 0) {
            (false, _) => Health::Readable,
            (true, false) => Health::Sound,
            (true, true) => Health::Complete,
        }
    }

    fn node(&mut self, id: ObjectId, kind: Kind, depth: usize) -> (bool, bool) {
        if kind == Kind::Blob {
            return (true, self.st.objects.has(&id));
        }
        if let Some(r) = self.memo.get(&id) {
            return *r;
        }
        let children: Option<Vec<(ObjectId, Kind)>> = match self.st.objects.read(&id, kind) {
            Ok(Object::Tree(t)) if depth < 256 => Some(
                t.entries
                    .iter()
                    .map(|e| (e.id, e.kind.target_kind()))
                    .collect(),
            ),
            Ok(Object::ChunkList(c)) => Some(c.chunks.iter().map(|c| (c.id, Kind::Blob)).collect()),
            _ => None,
        };
        let r = match children {
            None => (false, false),
            Some(ch) => ch.into_iter().fold((true, true), |(s, c), (id, k)| {
                let (cs, cc) = self.node(id, k, depth + 1);
                (s && cs, c && cc)
            }),
        };
        self.memo.insert(id, r);
        r
    }
}
