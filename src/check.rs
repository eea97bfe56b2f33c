//! `state check`: verify every object reachable from refs and reflogs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use objects_format::{EntryKind, Kind, Object, ObjectId};
use rand::Rng;
use serde::Serialize;

use crate::context::Context;
use crate::error::{Error, Result};

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
    let (shallow_ids, _) = cx.read_shallow();
    let mut w = Walker {
        st: cx,
        opts,
        memo: HashMap::new(),
        sizes: HashMap::new(),
        errors: BTreeMap::new(),
        report: CheckReport::default(),
        rng: rand::rng(),
    };
    let mut queue: Vec<ObjectId> = roots;
    let mut seen_snaps = BTreeSet::new();
    let mut graph: BTreeMap<ObjectId, BTreeSet<ObjectId>> = BTreeMap::new();
    // bad object -> (snapshots, paths)
    let mut owners: BTreeMap<ObjectId, (BTreeSet<ObjectId>, BTreeSet<String>)> = BTreeMap::new();
    while let Some(sid) = queue.pop() {
        if !seen_snaps.insert(sid) {
            continue;
        }
        w.report.snapshots += 1;
        w.report.objects_checked += 1;
        let snap = match cx.objects.read(&sid, Kind::Snapshot) {
            Ok(Object::Snapshot(s)) => s,
            Ok(_) => unreachable!("kind checked"),
            Err(e) => {
                w.errors.insert(sid, (Kind::Snapshot, short_err(&e)));
                owners.entry(sid).or_default().0.insert(sid);
                continue;
            }
        };
        graph.insert(sid, snap.parents.iter().copied().collect());
        // A shallow snapshot (fetched with --strategy partial) has no parents here, by design.
        let shallow = shallow_ids.contains(&sid);
        queue.extend(
            snap.parents
                .iter()
                .copied()
                .filter(|p| !shallow || cx.objects.has(p)),
        );
        for (bad, path) in w.visit(snap.root, Kind::Tree, None, 0).iter() {
            let o = owners.entry(*bad).or_default();
            o.0.insert(sid);
            o.1.insert(path.clone());
        }
    }
    let Walker {
        errors, mut report, ..
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

struct Walker<'a> {
    st: &'a Context,
    opts: CheckOptions,
    memo: HashMap<ObjectId, BadList>,
    /// Actual content sizes of blobs and chunk lists read so far.
    sizes: HashMap<ObjectId, u64>,
    errors: BTreeMap<ObjectId, (Kind, String)>,
    report: CheckReport,
    rng: rand::rngs::ThreadRng,
}

impl Walker<'_> {
    /// Verifies `id` and everything under it once; returns the bad objects beneath it with their
    /// paths relative to it.
    fn visit(&mut self, id: ObjectId, kind: Kind, size: Option<u64>, depth: usize) -> BadList {
        if let Some(m) = self.memo.get(&id) {
            // Seen before, maybe through an entry that gave another size.
            if let (Some(want), Some(&have)) = (size, self.sizes.get(&id))
                && want != have
            {
                self.errors.insert(
                    id,
                    (
                        kind,
                        format!("{have} bytes, but a reference to it says {want}"),
                    ),
                );
                return Rc::new(vec![(id, String::new())]);
            }
            return m.clone();
        }
        let mut bad: Vec<(ObjectId, String)> = Vec::new();
        let skip = kind == Kind::Blob
            && self.opts.read_data_percent < 100.0
            && self.rng.random_range(0.0..100.0) >= self.opts.read_data_percent;
        if skip {
            if self.st.objects.has(&id) {
                self.report.blobs_skipped += 1;
            } else {
                self.errors.insert(id, (kind, "missing".into()));
                bad.push((id, String::new()));
            }
        } else {
            self.report.objects_checked += 1;
            match self.st.objects.read(&id, kind) {
                Ok(Object::Tree(t)) if depth < 256 => {
                    for e in &t.entries {
                        let name = String::from_utf8_lossy(&e.name).into_owned();
                        if e.kind == EntryKind::Symlink && e.size > 4096 {
                            self.errors.insert(
                                id,
                                (
                                    kind,
                                    format!(
                                        "a tree whose symlink {name} has a target over 4096 bytes"
                                    ),
                                ),
                            );
                            bad.push((id, String::new()));
                        }
                        for (b, p) in self
                            .visit(
                                e.id,
                                e.kind.target_kind(),
                                (e.kind != EntryKind::Dir).then_some(e.size),
                                depth + 1,
                            )
                            .iter()
                        {
                            bad.push((
                                *b,
                                if p.is_empty() {
                                    name.clone()
                                } else {
                                    format!("{name}/{p}")
                                },
                            ));
                        }
                    }
                }
                Ok(Object::Tree(_)) => {
                    self.errors
                        .insert(id, (kind, "nested deeper than 256 trees".into()));
                    bad.push((id, String::new()));
                }
                Ok(Object::ChunkList(c)) => {
                    self.sizes.insert(id, c.total_size);
                    if size.is_some_and(|n| n != c.total_size) {
                        self.errors.insert(
                            id,
                            (
                                kind,
                                format!(
                                    "{} bytes in total, but its tree entry says {}",
                                    c.total_size,
                                    size.unwrap_or(0)
                                ),
                            ),
                        );
                        bad.push((id, String::new()));
                    }
                    for ch in &c.chunks {
                        for (b, p) in self
                            .visit(ch.id, Kind::Blob, Some(u64::from(ch.len)), depth + 1)
                            .iter()
                        {
                            bad.push((*b, p.clone()));
                        }
                    }
                }
                Ok(Object::Blob(b)) => {
                    let have = b.len() as u64;
                    self.sizes.insert(id, have);
                    if let Some(want) = size.filter(|&n| n != have) {
                        self.errors.insert(
                            id,
                            (kind, format!("{have} bytes, but its reference says {want}")),
                        );
                        bad.push((id, String::new()));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.errors.insert(id, (kind, short_err(&e)));
                    bad.push((id, String::new()));
                }
            }
        }
        let rc = Rc::new(bad);
        self.memo.insert(id, rc.clone());
        rc
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
