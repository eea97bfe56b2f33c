//! `state check`: verify every object reachable from refs and reflogs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use objects_format::{EntryKind, Kind, Link, Object, ObjectId};
use rand::Rng;
use serde::Serialize;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::store::ObjectStore;
use crate::store::walk::{self, Descend, Enter, Node};

/// Options for [`check`].
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Share of data blobs (file contents, chunks) to read and verify, in percent (0–100).
    /// Trees, chunk lists and snapshots are always verified.
    pub read_data_percent: f64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            read_data_percent: 100.0,
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The object (hex).
    pub object: String,
    /// Its expected kind.
    pub kind: &'static str,
    /// What is wrong.
    pub error: String,
    /// Snapshots that reach it (hex).
    pub snapshots: Vec<String>,
    /// Paths that use it.
    pub paths: Vec<String>,
    /// Sessions whose files use it.
    pub sessions: Vec<String>,
    /// Refs whose history is affected.
    pub refs: Vec<String>,
    /// Store files involved: the file holding a damaged object (loose file or pack), the ref
    /// files and reflog lines (`path:line`) that name a damaged snapshot, or the damaged store
    /// file itself.
    pub files: Vec<String>,
}

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Snapshots verified.
    pub snapshots: usize,
    /// Objects verified (all kinds).
    pub objects_checked: usize,
    /// Data blobs skipped by `--read-data-subset`.
    pub blobs_skipped: usize,
    /// Problems.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when nothing is wrong.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every snapshot named by a ref or a reflog entry.
///
/// # Errors
/// I/O errors, a damaged ref file or `packed-refs` ([`Error::CorruptFile`]).
pub fn root_snapshots(cx: &Context) -> Result<(RefList, Vec<ObjectId>)> {
    let refs = cx.refs.list("")?;
    let mut ids: Vec<ObjectId> = refs.iter().map(|r| r.1).collect();
    ids.extend(cx.refs.all_reflog_ids()?);
    ids.sort();
    ids.dedup();
    Ok((refs, ids))
}

/// Verifies every reachable object: hash, decode, kinds, tree structure, chunk sizes; and
/// every store file that is not an object (refs, `packed-refs`, the reflog, `FORMAT`,
/// `device`, the stat cache, `restore-intent`, `shallow`, `remotes.json`, pack indexes).
/// Damaged refs and reflog lines do not stop it: what can still be read is checked.
///
/// # Errors
/// I/O errors listing files (problems are reported, not returned).
pub fn check(cx: &Context, opts: CheckOptions) -> Result<CheckReport> {
    let view = crate::repair::RefView::read(cx)?;
    let refs: RefList = view.values().into_iter().collect();
    let mut roots: Vec<ObjectId> = refs.iter().map(|r| r.1).collect();
    // Where each root is named: ref files and reflog lines.
    let mut named: BTreeMap<ObjectId, BTreeSet<String>> = BTreeMap::new();
    for (name, id) in &refs {
        named
            .entry(*id)
            .or_default()
            .insert(view.place(cx, name).display().to_string());
    }
    for l in &view.reflog.lines {
        for id in l.entry.old.iter().chain(&l.entry.new) {
            roots.push(*id);
            named.entry(*id).or_default().insert(format!(
                "{}:{}",
                view.reflog.path.display(),
                l.no
            ));
        }
    }
    roots.sort();
    roots.dedup();
    let (shallow, _) = cx.read_shallow();
    let mut w = Walker {
        // The number of objects a walk reaches is not known before it: no total.
        phase: crate::progress::Phase::begin(&*cx.progress, "check", None, None),
        st: cx,
        opts,
        shallow: &shallow,
        memo: HashMap::new(),
        sizes: HashMap::new(),
        errors: BTreeMap::new(),
        report: CheckReport::default(),
        rng: rand::rng(),
        open: Vec::new(),
        graph: BTreeMap::new(),
        owners: BTreeMap::new(),
    };
    let roots: Vec<(ObjectId, Kind)> = roots.iter().map(|r| (*r, Kind::Snapshot)).collect();
    walk::walk(&mut &cx.objects, &roots, &mut w)?;
    let Walker {
        errors,
        mut report,
        graph,
        mut owners,
        ..
    } = w;
    if opts_full(opts) {
        // The pack's name is the hash of the whole file: this also covers bytes no object
        // read touches (magic, entry headers).
        for (path, _) in cx.objects.pack_contents() {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("pack-"))
                .unwrap_or("")
                .to_owned();
            match crate::store::pack::hash_file(&path) {
                Ok(h) if h.to_hex().as_str() == name => {}
                Ok(h) => report.problems.push(Problem::file(
                    "pack",
                    path.display().to_string(),
                    format!("damaged: it hashes to {}, its name says {name}", h.to_hex()),
                )),
                Err(e) => report.problems.push(Problem::file(
                    "pack",
                    path.display().to_string(),
                    format!("unreadable: {e}"),
                )),
            }
        }
    }
    for (path, why) in cx.objects.bad_pack_indexes() {
        report.problems.push(Problem::file(
            "pack index",
            path.display().to_string(),
            format!("unusable: {why}"),
        ));
    }
    for d in crate::repair::file_damage_in(cx, &view)? {
        report
            .problems
            .push(Problem::file(d.kind, d.place(), d.why));
    }
    for (id, (kind, err)) in errors {
        let (snaps, paths) = owners.remove(&id).unwrap_or_default();
        let affected: BTreeSet<String> = refs
            .iter()
            .filter(|(_, rid)| reaches(&graph, *rid, &snaps))
            .map(|(n, _)| n.clone())
            .collect();
        let mut sessions: BTreeSet<String> = BTreeSet::new();
        for p in &paths {
            if let Some(s) = crate::snapshot::session_of(p.as_bytes()) {
                sessions.insert(String::from_utf8_lossy(s).into_owned());
            }
        }
        let mut files: Vec<String> = cx
            .objects
            .location(&id)
            .map(|p| p.display().to_string())
            .into_iter()
            .collect();
        if kind == Kind::Snapshot {
            files.extend(named.remove(&id).unwrap_or_default());
        }
        report.problems.push(Problem {
            object: id.to_hex(),
            kind: kind.name(),
            error: err,
            snapshots: snaps.iter().map(ObjectId::to_hex).collect(),
            paths: paths.into_iter().collect(),
            sessions: sessions.into_iter().collect(),
            refs: affected.into_iter().collect(),
            files,
        });
    }
    Ok(report)
}

impl Problem {
    /// A problem with a store file (not an object).
    fn file(kind: &'static str, file: String, error: String) -> Problem {
        Problem {
            object: file.clone(),
            kind,
            error,
            snapshots: Vec::new(),
            paths: Vec::new(),
            sessions: Vec::new(),
            refs: Vec::new(),
            files: vec![file],
        }
    }
}

fn opts_full(opts: CheckOptions) -> bool {
    opts.read_data_percent >= 100.0
}

type BadList = Rc<Vec<(ObjectId, String)>>;

/// Refs as (name, id).
pub type RefList = Vec<(String, ObjectId)>;

/// `state check`'s visitor: verifies every object once and records, for each damaged one,
/// the snapshots and paths that reach it.
struct Walker<'a> {
    phase: crate::progress::Phase<'a>,
    st: &'a Context,
    opts: CheckOptions,
    shallow: &'a BTreeSet<ObjectId>,
    /// The damaged objects under each object finished so far, with their paths relative to it.
    memo: HashMap<ObjectId, BadList>,
    /// Actual content sizes of blobs and chunk lists read so far.
    sizes: HashMap<ObjectId, u64>,
    errors: BTreeMap<ObjectId, (Kind, String)>,
    report: CheckReport,
    rng: rand::rngs::ThreadRng,
    /// For each object read and not yet left (the walk's open frames), the damaged objects
    /// found under it so far.
    open: Vec<Vec<(ObjectId, String)>>,
    /// Each snapshot's parents.
    graph: BTreeMap<ObjectId, BTreeSet<ObjectId>>,
    /// Damaged object -> (snapshots, paths) reaching it.
    owners: BTreeMap<ObjectId, (BTreeSet<ObjectId>, BTreeSet<String>)>,
}

impl Walker<'_> {
    /// Hands what was found under `node` to the object that links to it: a tree prefixes its
    /// entry's name; a snapshot records itself and the paths as owners.
    fn deliver(&mut self, node: &Node<'_>, bad: &BadList) {
        if bad.is_empty() {
            return;
        }
        match node.link {
            Some(Link::Root) => {
                let sid = node.from.expect("a root tree is linked from its snapshot");
                for (b, p) in bad.iter() {
                    let o = self.owners.entry(*b).or_default();
                    o.0.insert(sid);
                    o.1.insert(p.clone());
                }
            }
            Some(Link::Entry(e)) => {
                let name = String::from_utf8_lossy(&e.name);
                let into = self.open.last_mut().expect("the tree is open");
                for (b, p) in bad.iter() {
                    into.push((
                        *b,
                        if p.is_empty() {
                            name.to_string()
                        } else {
                            format!("{name}/{p}")
                        },
                    ));
                }
            }
            Some(Link::Chunk(_)) => {
                let into = self.open.last_mut().expect("the chunk list is open");
                into.extend(bad.iter().cloned());
            }
            Some(Link::Parent) | None => {}
        }
    }

    /// Records `why` against `id` and makes it the only damaged object of this link.
    fn bad(&mut self, node: &Node<'_>, why: String) -> BadList {
        self.errors.insert(node.id, (node.kind, why));
        Rc::new(vec![(node.id, String::new())])
    }
}

impl<'s> walk::Visitor<&'s ObjectStore> for Walker<'_> {
    fn enter(&mut self, _: &mut &'s ObjectStore, node: &Node<'_>) -> Result<Enter> {
        if node.kind == Kind::Snapshot {
            // A shallow snapshot (fetched with --strategy partial) has no parents here, by design.
            if let Some(s) = node.from
                && self.shallow.contains(&s)
                && !self.st.objects.has(&node.id)
            {
                return Ok(Enter::Ignore);
            }
            self.report.snapshots += 1;
            self.report.objects_checked += 1;
            return Ok(Enter::Read);
        }
        let skip = node.kind == Kind::Blob
            && self.opts.read_data_percent < 100.0
            && self.rng.random_range(0.0..100.0) >= self.opts.read_data_percent;
        if !skip {
            self.report.objects_checked += 1;
            return Ok(Enter::Read);
        }
        let bad = if self.st.objects.has(&node.id) {
            self.report.blobs_skipped += 1;
            Rc::new(Vec::new())
        } else {
            self.bad(node, "missing".into())
        };
        self.memo.insert(node.id, bad.clone());
        self.deliver(node, &bad);
        Ok(Enter::Skip)
    }

    fn again(&mut self, _: &mut &'s ObjectStore, node: &Node<'_>) -> Result<()> {
        // Seen before, maybe through a link that gave another size.
        let bad = match (node.size(), self.sizes.get(&node.id)) {
            (Some(want), Some(&have)) if want != have => self.bad(
                node,
                format!("{have} bytes, but a reference to it says {want}"),
            ),
            _ => match self.memo.get(&node.id) {
                Some(m) => m.clone(),
                None => return Ok(()),
            },
        };
        self.deliver(node, &bad);
        Ok(())
    }

    fn read(
        &mut self,
        _: &mut &'s ObjectStore,
        node: &Node<'_>,
        obj: &Object,
        (): &(),
    ) -> Result<Descend> {
        let size = match obj {
            Object::Blob(b) => b.len() as u64,
            _ => 0,
        };
        self.phase.advance(1, size);
        let mut why = Vec::new();
        let descend = match obj {
            Object::Snapshot(s) => {
                self.graph
                    .insert(node.id, s.parents.iter().copied().collect());
                Descend::All
            }
            Object::Tree(t) if node.depth < 256 => {
                for e in &t.entries {
                    if e.kind == EntryKind::Symlink && e.size > 4096 {
                        let name = String::from_utf8_lossy(&e.name);
                        why.push(format!(
                            "a tree whose symlink {name} has a target over 4096 bytes"
                        ));
                    }
                }
                Descend::All
            }
            Object::Tree(_) => {
                why.push("nested deeper than 256 trees".into());
                Descend::Nothing
            }
            Object::ChunkList(c) => {
                self.sizes.insert(node.id, c.total_size);
                if let Some(want) = node.size().filter(|&n| n != c.total_size) {
                    why.push(format!(
                        "{} bytes in total, but its tree entry says {want}",
                        c.total_size
                    ));
                }
                Descend::All
            }
            Object::Blob(b) => {
                let have = b.len() as u64;
                self.sizes.insert(node.id, have);
                if let Some(want) = node.size().filter(|&n| n != have) {
                    why.push(format!("{have} bytes, but its reference says {want}"));
                }
                Descend::Nothing
            }
        };
        let mut found = Vec::with_capacity(why.len());
        for w in why {
            self.errors.insert(node.id, (node.kind, w));
            found.push((node.id, String::new()));
        }
        self.open.push(found);
        Ok(descend)
    }

    fn leave(&mut self, _: &mut &'s ObjectStore, node: &Node<'_>, _: Object, (): ()) -> Result<()> {
        let bad = Rc::new(self.open.pop().expect("opened by read"));
        if node.kind != Kind::Snapshot {
            self.memo.insert(node.id, bad.clone());
        }
        self.deliver(node, &bad);
        Ok(())
    }

    fn failed(&mut self, _: &mut &'s ObjectStore, node: &Node<'_>, err: Error) -> Result<()> {
        let bad = self.bad(node, short_err(&err));
        if node.kind == Kind::Snapshot {
            self.owners.entry(node.id).or_default().0.insert(node.id);
        } else {
            self.memo.insert(node.id, bad.clone());
            self.deliver(node, &bad);
        }
        Ok(())
    }
}

fn reaches(
    graph: &BTreeMap<ObjectId, BTreeSet<ObjectId>>,
    from: ObjectId,
    targets: &BTreeSet<ObjectId>,
) -> bool {
    let mut stack = vec![from];
    let mut seen = BTreeSet::new();
    while let Some(s) = stack.pop() {
        if targets.contains(&s) {
            return true;
        }
        if seen.insert(s)
            && let Some(ps) = graph.get(&s)
        {
            stack.extend(ps.iter().copied());
        }
    }
    false
}

fn short_err(e: &Error) -> String {
    match e {
        Error::MissingObject { .. } => "missing".into(),
        Error::CorruptObject { why, .. } => format!("corrupt: {why}"),
        Error::WrongKind {
            expected, found, ..
        } => format!("a {found}, not a {}", expected.name()),
        other => other.to_string(),
    }
}
