//! Issue #11, item 8: power loss. Saves (whole state, one session, every session at once, after
//! edits of the live files), restores (whole state, one session; some auto-saving unsaved
//! edits), ref updates (a remote-tracking ref set and deleted), gc and gc --repack (some after
//! planting unreachable objects: a pack of blobs and loose trees and snapshots above them) run
//! on a store under the power-loss simulator (`shelldone::store::durable::sim`, which forgets
//! every write not yet synced). A power cut stops an operation at one of its syncs, the state
//! dir is rewritten to what survives, and then:
//!
//! - `State::open` (startup recovery) succeeds, sometimes after a second cut during recovery;
//! - `State::check` finds no problem — but for one kind after a cut inside an operation: refs
//!   that moved (or were deleted) without their reflog lines, which startup recovery leaves for
//!   `state recover` (docs/safety.md, "Power-loss test"); then `state recover` runs and
//!   `check` must find nothing;
//! - every snapshot whose save (or restore) returned `Ok` before the cut is reachable from the
//!   refs or the reflog, and reads back with exactly the content it was saved with;
//! - every ref update that returned `Ok` is still there; the head is an acknowledged snapshot or
//!   one the interrupted operation made;
//! - no session ref is behind the head (it names the snapshot holding the head's version of
//!   that session, or a newer one the cut kept from becoming the head);
//! - every object in the store reads, and its children are present (but for the two cases
//!   invariant 1 of docs/safety.md excepts: see `Case::check_objects`);
//! - the live files are what the user last had, except that an interrupted restore leaves
//!   either all the old content or all the new content.
//!
//! Two tests: random sequences with a cut at a random sync of about half of the operations,
//! each sequence going on from the recovered store; and one scripted history in which every
//! operation is run again from the same state with a cut at each of its syncs in turn.
//!
//! `SHELLDONE_POWER_SEED` (default: time), `SHELLDONE_POWER_CASES` (default 30) and
//! `SHELLDONE_POWER_STEPS` (operations per case, default 14) set the random run; the seed is
//! printed so that a failure reproduces. Operations run on one rayon thread, so a seed replays
//! the same syncs in the same order. `SHELLDONE_POWER_SKIP_SYNC` leaves one sync out (see the
//! simulator).

#![expect(
    clippy::print_stderr,
    reason = "the test reports how many power cuts it made and at which syncs (cargo test shows it with --nocapture)"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use objects_format::{EntryKind, Object, ObjectId, Snapshot, Tree, TreeEntry};
use shelldone::check::CheckOptions;
use shelldone::demo::Rng;
use shelldone::store::durable::sim::PowerLossSim;
use shelldone::{Paths, RestoreOptions, SaveOptions, State};

/// Live files by snapshot path (`config/…`, `state/sessions/…`, `state/journal/…`).
type Files = BTreeMap<String, Vec<u8>>;

const REMOTE_REFS: [&str; 2] = [
    "remotes/origin/laptop/head",
    "remotes/origin/laptop/sessions/s001",
];

/// An operation, with every choice made.
#[derive(Debug, Clone)]
enum Plan {
    Save {
        session: Option<String>,
    },
    Restore {
        target: ObjectId,
        session: Option<String>,
    },
    SetRef {
        name: &'static str,
        new: Option<ObjectId>,
    },
    Gc {
        repack: bool,
    },
}

impl Plan {
    fn kind(&self) -> &'static str {
        match self {
            Plan::Save { .. } => "save",
            Plan::Restore { .. } => "restore",
            Plan::SetRef { .. } => "set ref",
            Plan::Gc { .. } => "gc",
        }
    }
}

/// What a power cut keeps.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Only what was synced (`PowerLossSim::power_cut`).
    Strict,
    /// Also, in about half of the directories, every unsynced change of their entries
    /// (`PowerLossSim::power_cut_keeping`).
    Keeping,
    /// Either, at random.
    Random,
}

/// What the operation in progress at a cut may leave.
enum Inflight {
    /// Nothing visible may change (a save, gc, or a finished operation).
    Quiet,
    /// A ref update: the ref is its old value or its new one.
    Ref(&'static str, Option<ObjectId>, Option<ObjectId>),
    /// A restore: the live files are all old or all new.
    Restore { old: Files, new: Files },
}

/// What the user and the store should have: the test's model.
#[derive(Debug, Clone, Default)]
struct Model {
    /// The live files as the user left them.
    live: Files,
    /// Snapshots acknowledged (or made visible as the head by recovery) and their content.
    known: BTreeMap<ObjectId, Files>,
    /// Remote-tracking refs as the last acknowledged update left them.
    refs: BTreeMap<&'static str, Option<ObjectId>>,
    /// Objects found without a child after a cut, in the two ways the code allows today (they
    /// stay so until gc deletes them).
    orphans: HashSet<ObjectId>,
    next_session: usize,
    round: u64,
}

/// Counts over a run.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    cuts: usize,
    /// Cuts after which check found the reflog behind the refs.
    reflog_gaps: usize,
    /// Objects without a child: written by an interrupted loose batch; left by a cut gc.
    orphans_written: usize,
    orphans_gc: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.cuts += o.cuts;
        self.reflog_gaps += o.reflog_gaps;
        self.orphans_written += o.orphans_written;
        self.orphans_gc += o.orphans_gc;
    }
}

struct Case {
    seed: u64,
    rng: Rng,
    _dir: tempfile::TempDir,
    sim: PowerLossSim,
    paths: Paths,
    st: Option<State>,
    m: Model,
    stats: Stats,
    /// Objects stored before the operation in progress began, and those of them stored loose.
    stored_before: HashSet<ObjectId>,
    loose_before: HashSet<ObjectId>,
    /// The operation in progress.
    op: Option<Plan>,
    /// The cut stopped an operation (or recovery) half-way.
    interrupted: bool,
    /// The most syncs an operation of each kind made, to place random cuts.
    span: HashMap<&'static str, u64>,
    log: Vec<String>,
}

/// The one problem a power cut inside an operation may leave for `state recover`: refs that
/// moved (or were deleted) without their reflog lines.
fn is_reflog_behind_refs(p: &shelldone::check::Problem) -> bool {
    let reflog = p.kind == "reflog"
        && p.error
            .starts_with("incomplete: no line records the value of")
        && p.files
            .iter()
            .all(|f| f.ends_with("snapshots/logs/refs.log"));
    let deleted = p.kind == "ref"
        && p.error
            .starts_with("missing: neither a file nor in packed-refs, but");
    reflog || deleted
}

fn session_of(p: &str) -> Option<&str> {
    p.strip_prefix("state/sessions/")?.split('/').next()
}

fn sessions(files: &Files) -> BTreeSet<String> {
    files
        .keys()
        .filter_map(|p| session_of(p).map(str::to_owned))
        .collect()
}

fn noise(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Reads the live files (and fails on a leftover temp file: recovery removes them).
fn read_live(paths: &Paths) -> Files {
    read_live_files(paths, false)
}

/// Reads the live files; temp files are skipped when `temps` says they may be there (before
/// recovery), else they fail the test.
fn read_live_files(paths: &Paths, temps: bool) -> Files {
    let mut out = Files::new();
    for (base, label) in [
        (paths.config_dir.clone(), "config"),
        (paths.state_dir.join("sessions"), "state/sessions"),
        (paths.state_dir.join("journal"), "state/journal"),
    ] {
        if !base.exists() {
            continue;
        }
        for e in walkdir::WalkDir::new(&base).min_depth(1) {
            let e = e.expect("walk");
            let name = e.file_name().to_string_lossy();
            if temps && name.starts_with(".shelldone-tmp.") {
                continue;
            }
            assert!(
                !name.starts_with(".shelldone-tmp."),
                "a temp file survived recovery: {}",
                e.path().display()
            );
            if e.file_type().is_file() {
                let rel = e.path().strip_prefix(&base).expect("under");
                out.insert(
                    format!("{label}/{}", rel.display()),
                    std::fs::read(e.path()).expect("read"),
                );
            }
        }
    }
    out
}

fn abs(paths: &Paths, rel: &str) -> PathBuf {
    match rel.strip_prefix("config/") {
        Some(r) => paths.config_dir.join(r),
        None => paths
            .state_dir
            .join(rel.strip_prefix("state/").expect("state path")),
    }
}

/// Makes the live dirs hold exactly `want` (files only; emptied session folders removed).
fn write_live(paths: &Paths, have: &Files, want: &Files) {
    for (p, v) in want {
        if have.get(p) != Some(v) {
            let a = abs(paths, p);
            std::fs::create_dir_all(a.parent().expect("parent")).expect("mkdir");
            std::fs::write(&a, v).expect("write");
        }
    }
    for p in have.keys().filter(|p| !want.contains_key(*p)) {
        std::fs::remove_file(abs(paths, p)).expect("rm");
    }
    let left = sessions(want);
    for s in sessions(have).difference(&left) {
        let d = paths.state_dir.join("sessions").join(s);
        if d.is_dir() {
            std::fs::remove_dir_all(d).expect("rm session");
        }
    }
}

fn read_content(st: &State, kind: EntryKind, id: &ObjectId) -> Result<Vec<u8>, String> {
    let o = st.objects();
    match kind {
        EntryKind::File => o.read_blob(id).map_err(|e| e.to_string()),
        EntryKind::ChunkedFile => {
            let list = o.read_chunk_list(id).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for c in &list.chunks {
                out.extend(o.read_blob(&c.id).map_err(|e| e.to_string())?);
            }
            Ok(out)
        }
        other => Err(format!("unexpected entry kind {other:?}")),
    }
}

/// The files of a snapshot, every blob read and verified.
fn snapshot_files(
    st: &State,
    id: &ObjectId,
    cache: &mut HashMap<ObjectId, Vec<u8>>,
) -> Result<Files, String> {
    let snap = st.objects().read_snapshot(id).map_err(|e| e.to_string())?;
    let flat = shelldone::snapshot::flatten(st.objects(), &snap.root).map_err(|e| e.to_string())?;
    let mut out = Files::new();
    for (p, leaf) in &flat.leaves {
        let content = match cache.get(&leaf.id) {
            Some(c) => c.clone(),
            None => {
                let c = read_content(st, leaf.kind, &leaf.id)?;
                cache.insert(leaf.id, c.clone());
                c
            }
        };
        out.insert(String::from_utf8_lossy(p).into_owned(), content);
    }
    Ok(out)
}

fn session_part(files: &Files, s: &str) -> Files {
    files
        .iter()
        .filter(|(p, _)| session_of(p) == Some(s))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect()
}

/// `base` with session `s` replaced by its files in `from`.
fn with_session(base: &Files, from: &Files, s: &str) -> Files {
    let mut out: Files = base
        .iter()
        .filter(|(p, _)| session_of(p) != Some(s))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    out.extend(session_part(from, s));
    out
}

/// A temp dir on a tmpfs when there is one: the simulator issues no real syncs inside its
/// root, so the filesystem does not matter, and ext4 spends most of this test allocating
/// inodes for the files a power cut rewrites.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let base = std::env::var_os("SHELLDONE_POWER_DIR").map_or_else(
        || {
            if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            }
        },
        PathBuf::from,
    );
    tempfile::tempdir_in(base).expect("tempdir")
}

/// Copies the tree at `from` into the existing folder `to` (files keep their mode).
fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from).min_depth(1) {
        let e = e.expect("walk");
        let dest = to.join(e.path().strip_prefix(from).expect("under"));
        if e.file_type().is_dir() {
            std::fs::create_dir(&dest).expect("mkdir");
        } else if e.file_type().is_symlink() {
            let t = std::fs::read_link(e.path()).expect("link");
            std::os::unix::fs::symlink(t, &dest).expect("symlink");
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// Removes everything inside `dir`.
fn empty_dir(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("read") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_dir() {
            std::fs::remove_dir_all(e.path()).expect("rm");
        } else {
            std::fs::remove_file(e.path()).expect("rm");
        }
    }
}

impl Case {
    /// A new store over `sessions` sessions (more than `PACK_BATCH` makes saves that move
    /// every session ref go through `packed-refs`).
    fn new(seed: u64, sessions: usize) -> Case {
        let dir = scratch_dir();
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let paths = Paths {
            config_dir: root.join("config"),
            state_dir: root.join("state"),
        };
        std::fs::create_dir_all(&paths.config_dir).expect("mkdir");
        std::fs::create_dir_all(paths.state_dir.join("sessions")).expect("mkdir");
        std::fs::create_dir_all(paths.state_dir.join("journal")).expect("mkdir");
        let mut case = Case {
            seed,
            rng: Rng::new(seed),
            _dir: dir,
            sim: {
                let sim = PowerLossSim::install(&root).expect("install the simulator");
                // Restore syncs the filesystem of each: keep them apart, as two disks would.
                for d in [&paths.config_dir, &paths.state_dir] {
                    sim.separate_filesystem(d).expect("separate");
                }
                sim
            },
            paths,
            st: None,
            m: Model {
                refs: REMOTE_REFS.iter().map(|r| (*r, None)).collect(),
                ..Model::default()
            },
            stats: Stats::default(),
            stored_before: HashSet::new(),
            loose_before: HashSet::new(),
            op: None,
            interrupted: false,
            span: HashMap::new(),
            log: Vec::new(),
        };
        let mut live = Files::new();
        live.insert(
            "config/config.toml".into(),
            b"font = \"JetBrains Mono\"\n".to_vec(),
        );
        live.insert("state/journal/0000.jsonl".into(), b"{\"i\":0}\n".to_vec());
        for _ in 0..sessions {
            case.add_session(&mut live);
        }
        case.apply_live(live);
        // `State::open` creates `snapshots/` durably in the state dir (it was a plain
        // `create_dir_all`, which a power cut could take with the whole store).
        let (st, _) = State::open(case.paths.clone()).expect("open");
        case.st = Some(st);
        case
    }

    fn st(&self) -> &State {
        self.st.as_ref().expect("open")
    }

    fn trail(&self) -> String {
        self.log.join("\n")
    }

    fn add_session(&mut self, live: &mut Files) {
        let s = format!("s{:03}", self.m.next_session);
        self.m.next_session += 1;
        live.insert(
            format!("state/sessions/{s}/session.json"),
            format!("{{\"id\":\"{s}\",\"v\":0}}\n").into_bytes(),
        );
        let len = self.rng.range(100, 3000);
        live.insert(
            format!("state/sessions/{s}/scrollback.bin"),
            noise(&mut self.rng, len),
        );
    }

    /// One random edit of `live`, confined to session `only` when given.
    fn edit_once(&mut self, live: &mut Files, only: Option<&str>) {
        self.m.round += 1;
        let round = self.m.round;
        let all = sessions(live);
        let pick = |rng: &mut Rng| {
            let v: Vec<&String> = all.iter().collect();
            v[rng.range(0, v.len())].clone()
        };
        let kind = if only.is_some() {
            self.rng.range(0, 2)
        } else {
            self.rng.range(0, 6)
        };
        match kind {
            0 => {
                let s = only.map_or_else(|| pick(&mut self.rng), str::to_owned);
                live.insert(
                    format!("state/sessions/{s}/session.json"),
                    format!("{{\"id\":\"{s}\",\"v\":{round}}}\n").into_bytes(),
                );
            }
            1 => {
                let s = only.map_or_else(|| pick(&mut self.rng), str::to_owned);
                // Now and then a file big enough to be stored as chunks.
                let len = if self.rng.range(0, 8) == 0 {
                    self.rng.range(70_000, 160_000)
                } else {
                    self.rng.range(50, 4000)
                };
                live.insert(
                    format!("state/sessions/{s}/scrollback.bin"),
                    noise(&mut self.rng, len),
                );
            }
            2 => {
                let j = format!("state/journal/000{}.jsonl", self.rng.range(0, 3));
                let e = live.entry(j).or_default();
                for i in 0..self.rng.range(1, 20) {
                    e.extend(format!("{{\"round\":{round},\"i\":{i}}}\n").as_bytes());
                }
            }
            3 => {
                let n = self.rng.range(0, 6);
                let p = format!("config/prefs/p{n}.toml");
                if live.contains_key(&p) && self.rng.range(0, 2) == 0 {
                    live.remove(&p);
                } else {
                    live.insert(p, format!("k = {round}\n").into_bytes());
                }
            }
            4 if all.len() < 40 => self.add_session(live),
            _ if all.len() > 3 => {
                let s = pick(&mut self.rng);
                live.retain(|p, _| session_of(p) != Some(s.as_str()));
            }
            _ => {}
        }
    }

    /// Applies 1–3 random edits to the live files.
    fn edit(&mut self, only: Option<&str>) {
        let mut live = self.m.live.clone();
        for _ in 0..self.rng.range(1, 4) {
            self.edit_once(&mut live, only);
        }
        self.apply_live(live);
    }

    /// Every session changes: the next save moves every session ref at once.
    fn edit_all_sessions(&mut self) {
        let mut live = self.m.live.clone();
        self.m.round += 1;
        for (p, v) in &mut live {
            if p.ends_with("/scrollback.bin") {
                v.extend(format!("round {}\r\n", self.m.round).as_bytes());
            }
        }
        self.apply_live(live);
    }

    /// More than `BULK_FILES` (512) files in as many folders, half in the config dir and half
    /// in the state dir, all at version `v`: a restore that changes them all syncs both
    /// filesystems instead of each file and folder.
    fn edit_bulk(&mut self, v: u32) {
        let mut live = self.m.live.clone();
        for i in 0..514 {
            let root = if i % 2 == 0 {
                "config"
            } else {
                "state/journal"
            };
            live.insert(
                format!("{root}/bulk/d{i:03}/f"),
                format!("{v} {i}\n").into_bytes(),
            );
        }
        self.apply_live(live);
    }

    /// Writes the live files and makes them durable, as the user's editor would (the live
    /// folders only: a settle of the store would hide a sync missing there).
    fn apply_live(&mut self, live: Files) {
        write_live(&self.paths, &self.m.live, &live);
        self.m.live = live;
        for d in [
            self.paths.config_dir.clone(),
            self.paths.state_dir.join("sessions"),
            self.paths.state_dir.join("journal"),
        ] {
            self.sim.settle(&d).expect("settle");
        }
    }

    fn head(&self) -> Option<ObjectId> {
        self.st()
            .refs()
            .get(shelldone::store::refs::HEAD)
            .expect("head")
    }

    fn head_files(&self) -> Files {
        self.head()
            .map(|h| self.m.known.get(&h).cloned().expect("the head is known"))
            .unwrap_or_default()
    }

    /// Records an acknowledged snapshot, checking first that the store holds what the model
    /// says it does.
    fn acknowledge(&mut self, id: ObjectId, files: Files, what: &str) {
        let got = snapshot_files(self.st(), &id, &mut HashMap::new())
            .unwrap_or_else(|e| panic!("seed {}: {what} {id} does not read: {e}", self.seed));
        assert!(
            got == files,
            "seed {}: {what} {id} does not hold what was saved",
            self.seed
        );
        self.m.known.insert(id, files);
    }

    /// Plants unreachable objects for gc: a pack of blobs, and a loose tree and snapshot above
    /// some of them (gc must delete the loose parents before the packed children).
    fn plant_garbage(&mut self) {
        let st = self.st.as_ref().expect("open");
        let _lock = st.context().lock("test: plant garbage").expect("lock");
        let round = self.m.round;
        let blobs: Vec<(ObjectId, usize)> = {
            let b = st.objects().batch().expect("batch");
            let v = (0..70)
                .map(|i| {
                    let data = format!("garbage {round} {i}\n").into_bytes();
                    (b.put(&Object::Blob(data.clone())).expect("put"), data.len())
                })
                .collect();
            b.commit().expect("commit");
            v
        };
        let b = st.objects().batch().expect("batch");
        let entries: Vec<TreeEntry> = blobs
            .iter()
            .take(3)
            .enumerate()
            .map(|(i, (id, len))| TreeEntry {
                name: format!("g{i}").into_bytes(),
                kind: EntryKind::File,
                flags: 0,
                size: *len as u64,
                id: *id,
            })
            .collect();
        let tree = b.put(&Object::Tree(Tree { entries })).expect("tree");
        b.put(&Object::Snapshot(Snapshot {
            root: tree,
            parents: Vec::new(),
            time_ns: i64::try_from(round).expect("small"),
            device: "garbage".into(),
            message: "unreachable".into(),
            session: None,
            summary: objects_format::ChangeSummary::default(),
            extra: Vec::new(),
        }))
        .expect("snapshot");
        b.commit().expect("commit");
    }

    /// Prepares a random operation (edits, garbage; never cut) and plans it.
    fn random_plan(&mut self) -> Option<Plan> {
        let known: Vec<ObjectId> = self.m.known.keys().copied().collect();
        let pick = |rng: &mut Rng, v: &[ObjectId]| v[rng.range(0, v.len())];
        Some(match self.rng.range(0, 100) {
            0..30 => {
                self.edit(None);
                Plan::Save { session: None }
            }
            30..40 => {
                let all: Vec<String> = sessions(&self.m.live).into_iter().collect();
                let s = all[self.rng.range(0, all.len())].clone();
                self.edit(Some(&s));
                Plan::Save { session: Some(s) }
            }
            40..46 => {
                self.edit_all_sessions();
                Plan::Save { session: None }
            }
            n @ 46..70 => {
                if known.is_empty() {
                    return None;
                }
                if self.rng.range(0, 3) == 0 {
                    self.edit(None);
                }
                let target = pick(&mut self.rng, &known);
                let session = if n >= 60 {
                    let all: Vec<String> = sessions(&self.m.known[&target]).into_iter().collect();
                    if all.is_empty() {
                        return None;
                    }
                    Some(all[self.rng.range(0, all.len())].clone())
                } else {
                    None
                };
                Plan::Restore { target, session }
            }
            70..80 => {
                let name = REMOTE_REFS[self.rng.range(0, REMOTE_REFS.len())];
                let new = if self.m.refs[name].is_some()
                    && (known.is_empty() || self.rng.range(0, 3) == 0)
                {
                    None
                } else if known.is_empty() {
                    return None;
                } else {
                    Some(pick(&mut self.rng, &known))
                };
                Plan::SetRef { name, new }
            }
            n => {
                if self.rng.range(0, 2) == 0 {
                    self.plant_garbage();
                }
                Plan::Gc { repack: n >= 90 }
            }
        })
    }

    /// A random operation, with a cut armed at a random sync of it about half of the time.
    fn random_step(&mut self, i: usize) {
        let Some(plan) = self.random_plan() else {
            return;
        };
        let arm = self.rng.range(0, 2) == 0;
        let span = *self.span.get(plan.kind()).unwrap_or(&40);
        let cut = arm.then(|| 1 + self.rng.range(0, span as usize + 1) as u64);
        self.log
            .push(format!("{i}: {plan:?} (cut at its sync {cut:?})"));
        let start = self.sim.syncs();
        let inflight = self.execute(&plan, cut);
        let used = self.sim.syncs() - start;
        let span = self.span.entry(plan.kind()).or_insert(0);
        *span = (*span).max(used);
        if arm {
            self.cut(&inflight, Mode::Random);
        }
    }

    /// Runs `plan` with a power cut armed at its `cut`-th sync (from 1); what a cut may leave.
    fn execute(&mut self, plan: &Plan, cut: Option<u64>) -> Inflight {
        let o = self.st.as_ref().expect("open").objects();
        let (stored, loose) = (o.list().expect("list"), o.list_loose().expect("list"));
        self.stored_before = stored.into_iter().collect();
        self.loose_before = loose.into_iter().collect();
        self.op = Some(plan.clone());
        self.sim.cut_at(cut.map(|k| self.sim.syncs() + k));
        let inflight = self.run(plan);
        self.interrupted = self.sim.is_cut();
        self.sim.cut_at(None);
        inflight
    }

    fn run(&mut self, plan: &Plan) -> Inflight {
        let seed = self.seed;
        let failed = |e: &dyn std::fmt::Display, sim: &PowerLossSim| {
            assert!(
                sim.is_cut(),
                "seed {seed}: {plan:?} failed without a power cut: {e}"
            );
        };
        let before = self.m.live.clone();
        match plan {
            Plan::Save { session } => {
                let head = self.head_files();
                let expected = match session {
                    Some(s) => with_session(&head, &before, s),
                    None => before.clone(),
                };
                let r = self.st().save(&SaveOptions {
                    message: format!("{plan:?}"),
                    session: session.clone(),
                    ..SaveOptions::default()
                });
                match r {
                    Ok(o) if o.created => {
                        self.acknowledge(o.id.expect("created"), expected, "saved snapshot");
                    }
                    Ok(_) => assert_eq!(head, expected, "seed {seed}: nothing saved, yet changed"),
                    Err(e) => failed(&e, &self.sim),
                }
                Inflight::Quiet
            }
            Plan::Restore { target, session } => {
                let t_files = self.m.known[target].clone();
                let new_live = match session {
                    Some(s) => with_session(&before, &t_files, s),
                    None => t_files.clone(),
                };
                // A session restore saves and records only the session (ADR 0008): the rest
                // of what is recorded is the head's.
                let head = self.head_files();
                let saved = match session {
                    Some(s) => with_session(&head, &before, s),
                    None => before.clone(),
                };
                let recorded = match session {
                    Some(s) => with_session(&saved, &t_files, s),
                    None => t_files.clone(),
                };
                let r = self.st().restore(&RestoreOptions {
                    rev: Some(target.to_hex()),
                    session: session.clone(),
                    ..RestoreOptions::default()
                });
                match r {
                    Ok(o) => {
                        if let Some(a) = o.auto_saved {
                            self.acknowledge(a, saved, "auto-saved snapshot");
                        }
                        // Recorded on top of the head, which (auto-saved if need be) held the
                        // live files of the restored part.
                        if let Some(h) = o.new_head {
                            self.acknowledge(h, recorded, "recorded restore");
                        }
                        let live = read_live(&self.paths);
                        assert!(
                            live == new_live,
                            "seed {seed}: restore did not reach the target"
                        );
                        self.m.live = new_live;
                        Inflight::Quiet
                    }
                    Err(e) => {
                        failed(&e, &self.sim);
                        Inflight::Restore {
                            old: before,
                            new: new_live,
                        }
                    }
                }
            }
            Plan::SetRef { name, new } => {
                let old = self.m.refs[name];
                let r = self
                    .st()
                    .context()
                    .lock("test: set ref")
                    .and_then(|_lock| self.st().refs().set(name, *new, "test: set ref"));
                match r {
                    Ok(()) => {
                        self.m.refs.insert(name, *new);
                        Inflight::Quiet
                    }
                    Err(e) => {
                        failed(&e, &self.sim);
                        Inflight::Ref(name, old, *new)
                    }
                }
            }
            Plan::Gc { repack } => {
                if let Err(e) = self.st().gc_with(*repack) {
                    failed(&e, &self.sim);
                }
                Inflight::Quiet
            }
        }
    }

    /// Runs `plan` again and again from the state it starts from, with a cut at each of its
    /// syncs in turn (the last run is the one that finished: a cut right after it).
    ///
    /// Each cut is strict; a restore's are also made keeping some directories' unsynced
    /// changes (a rename without its data synced first shows only so when a later sync
    /// covers the data, as in restores of many files).
    fn at_every_sync(&mut self, plan: &Plan) {
        let stash = scratch_dir();
        copy_tree(self.sim.root(), stash.path());
        let model = self.m.clone();
        let modes: &[Mode] = if matches!(plan, Plan::Restore { .. }) {
            &[Mode::Strict, Mode::Keeping]
        } else {
            &[Mode::Strict]
        };
        let mut first = true;
        for k in 1.. {
            let mut finished = false;
            for mode in modes {
                if !first {
                    self.st = None;
                    empty_dir(self.sim.root());
                    copy_tree(stash.path(), self.sim.root());
                    self.sim.reset().expect("reset");
                    self.m = model.clone();
                    self.st = Some(State::open(self.paths.clone()).expect("open").0);
                }
                first = false;
                self.log
                    .push(format!("{plan:?} (cut at its sync {k}, {mode:?})"));
                let inflight = self.execute(plan, Some(k));
                finished = !self.interrupted;
                self.cut(&inflight, *mode);
                self.log.pop();
            }
            if finished {
                break;
            }
            assert!(k < 2000, "{plan:?} never finishes");
        }
    }

    /// The power goes out; then the store is opened, checked and compared with the model.
    fn cut(&mut self, inflight: &Inflight, mode: Mode) {
        let seed = self.seed;
        self.stats.cuts += 1;
        self.st = None;
        let mode = match mode {
            Mode::Random if self.rng.range(0, 2) == 0 => Mode::Keeping,
            Mode::Random => Mode::Strict,
            m => m,
        };
        let report = match mode {
            Mode::Keeping => {
                let rng = &mut self.rng;
                self.sim
                    .power_cut_keeping(&mut |_| rng.range(0, 2) == 0)
                    .expect("power cut")
            }
            _ => self.sim.power_cut().expect("power cut"),
        };
        self.log.push(format!(
            "   {mode:?} cut: {} lost, {} reverted, {} back",
            report.lost.len(),
            report.reverted.len(),
            report.back.len()
        ));
        self.check_not_torn(inflight);
        // Sometimes the power goes out again during recovery.
        let mut tries = 0;
        let st = loop {
            tries += 1;
            if tries == 1 && self.rng.range(0, 4) == 0 {
                let n = self.sim.syncs() + 1 + self.rng.range(0, 12) as u64;
                self.sim.cut_at(Some(n));
            }
            let r = State::open(self.paths.clone());
            let cut = self.sim.is_cut();
            self.sim.cut_at(None);
            if cut {
                drop(r);
                self.log.push("   cut again during recovery".into());
                self.interrupted = true;
                self.sim.power_cut().expect("power cut");
                self.check_not_torn(inflight);
                continue;
            }
            match r {
                Ok((st, _)) => break st,
                Err(e) => panic!(
                    "seed {seed}: the store does not open after a power cut: {e}\n{}",
                    self.trail()
                ),
            }
        };
        self.st = Some(st);
        self.verify(inflight);
    }

    fn verify(&mut self, inflight: &Inflight) {
        let seed = self.seed;
        let st = self.st.as_ref().expect("open");
        let report = st.check(CheckOptions::default()).expect("check runs");
        if self.interrupted && !report.ok() && report.problems.iter().all(is_reflog_behind_refs) {
            // A cut after refs moved and before their reflog lines were durable: startup
            // recovery does not complete the reflog (only `state recover` does; see
            // docs/safety.md, "Power-loss test"). Everything else must be clean already.
            self.stats.reflog_gaps += 1;
            self.log
                .push("   reflog behind the refs: state recover".into());
            st.recover().expect("recover");
            let again = st.check(CheckOptions::default()).expect("check runs");
            assert!(
                again.ok(),
                "seed {seed}: check after recover: {:#?}\n{}",
                again.problems,
                self.trail()
            );
        } else {
            assert!(
                report.ok(),
                "seed {seed}: check after a power cut: {:#?}\n{}",
                report.problems,
                self.trail()
            );
        }
        // Acknowledged snapshots: reachable, and each reads back as it was saved.
        let (_, roots) = st.root_snapshots().expect("roots");
        let reachable = st.reachable(&roots).expect("reachable");
        let mut cache = HashMap::new();
        for (id, files) in &self.m.known {
            assert!(
                reachable.contains(id),
                "seed {seed}: acknowledged snapshot {id} is no longer reachable\n{}",
                self.trail()
            );
            match snapshot_files(st, id, &mut cache) {
                Ok(got) => assert!(
                    &got == files,
                    "seed {seed}: acknowledged snapshot {id} changed\n{}",
                    self.trail()
                ),
                Err(e) => panic!(
                    "seed {seed}: acknowledged snapshot {id} is lost: {e}\n{}",
                    self.trail()
                ),
            }
        }
        // Ref updates that returned Ok stayed.
        for (name, want) in &self.m.refs {
            let got = st.refs().get(name).expect("ref");
            let ok = got == *want
                || matches!(inflight, Inflight::Ref(n, old, new)
                    if n == name && (got == *old || got == *new));
            assert!(
                ok,
                "seed {seed}: {name} is {got:?}, the last update set {want:?}\n{}",
                self.trail()
            );
        }
        if let Inflight::Ref(n, _, _) = inflight {
            let got = st.refs().get(n).expect("ref");
            self.m.refs.insert(n, got);
        }
        // The head: acknowledged, or made by the interrupted operation (or by the recovery
        // that finished it), which then counts as visible from now on.
        let head = st.refs().get(shelldone::store::refs::HEAD).expect("head");
        if let Some(h) = head
            && !self.m.known.contains_key(&h)
        {
            let files = snapshot_files(st, &h, &mut cache)
                .unwrap_or_else(|e| panic!("seed {seed}: the head {h} does not read: {e}"));
            self.m.known.insert(h, files);
        }
        self.check_session_refs();
        self.check_objects();
        // Live files.
        let live = read_live(&self.paths);
        match inflight {
            Inflight::Restore { old, new } => assert!(
                live == *old || live == *new,
                "seed {seed}: after a cut during a restore the live files are neither all old \
                 nor all new\n{}",
                self.trail()
            ),
            _ => assert!(
                live == self.m.live,
                "seed {seed}: the live files changed\n{}",
                self.trail()
            ),
        }
        self.m.live = live;
        self.op = None;
        self.interrupted = false;
    }

    /// Right after a cut, before any recovery (the terminal may read its files then): every
    /// live file is the user's, or during a restore its old or its new content — never empty
    /// or half-written where it had content (docs/safety.md, invariant 4).
    fn check_not_torn(&self, inflight: &Inflight) {
        let now = read_live_files(&self.paths, true);
        let (old, new) = match inflight {
            Inflight::Restore { old, new } => (old, new),
            _ => (&self.m.live, &self.m.live),
        };
        for p in now.keys().chain(old.keys()).chain(new.keys()) {
            let got = now.get(p);
            assert!(
                got == old.get(p) || got == new.get(p),
                "seed {}: right after the cut, {p} is neither its old nor its new content \
                 ({} bytes)\n{}",
                self.seed,
                got.map_or(0, Vec::len),
                self.trail()
            );
        }
    }

    /// No session ref is behind the head: each session in the head has a ref, naming a snapshot
    /// with the head's version of the session or one that is not the head's ancestor (a newer
    /// snapshot that never became the head).
    fn check_session_refs(&self) {
        let st = self.st();
        let Some(head) = self.head() else { return };
        let head_files = &self.m.known[&head];
        let mut ancestors = HashSet::new();
        let mut stack = vec![head];
        while let Some(id) = stack.pop() {
            if ancestors.insert(id) {
                let s = st.objects().read_snapshot(&id).expect("ancestor");
                stack.extend(s.parents);
            }
        }
        let refs: BTreeMap<String, ObjectId> = st
            .refs()
            .list("sessions/")
            .expect("refs")
            .into_iter()
            .collect();
        let mut cache = HashMap::new();
        for s in sessions(head_files) {
            let Some(id) = refs.get(&format!("sessions/{s}")) else {
                panic!(
                    "seed {}: session {s} has no ref\n{}",
                    self.seed,
                    self.trail()
                );
            };
            if !ancestors.contains(id) || *id == head {
                continue;
            }
            let files = snapshot_files(st, id, &mut cache).expect("session ref reads");
            assert!(
                session_part(&files, &s) == session_part(head_files, &s),
                "seed {}: sessions/{s} is behind the head\n{}",
                self.seed,
                self.trail()
            );
        }
    }

    /// Every stored object reads, and an object present has its children present, except in the
    /// two ways docs/safety.md (invariant 1, "Power-loss test") lets a power cut break it today:
    /// - an object the interrupted operation wrote: the renames of one loose batch are made
    ///   durable by one round of directory syncs, so a cut can keep a tree and lose a blob it
    ///   names (such objects are unreachable: no ref moved to them);
    /// - a cut during gc: the loose objects it deletes are made durable by one round of
    ///   directory syncs (src/recover.rs), so a cut can keep a parent and lose a loose child.
    ///   A child that was only in a pack must be there: gc deletes a pack only after its loose
    ///   deletions are durable.
    fn check_objects(&mut self) {
        let o = self.st.as_ref().expect("open").objects();
        let (mut written, mut gc) = (Vec::new(), Vec::new());
        for id in o.list().expect("list") {
            let v = o.read_verified(&id).unwrap_or_else(|e| {
                panic!(
                    "seed {}: stored object {id}: {e}\n{}",
                    self.seed,
                    self.trail()
                )
            });
            let children: Vec<ObjectId> =
                match objects_format::decode(&v.canonical).expect("decode") {
                    Object::Snapshot(s) => vec![s.root],
                    Object::Tree(t) => t.entries.iter().map(|e| e.id).collect(),
                    Object::ChunkList(c) => c.chunks.iter().map(|c| c.id).collect(),
                    Object::Blob(_) => Vec::new(),
                };
            for c in children {
                if o.has(&c) || self.m.orphans.contains(&id) {
                    continue;
                }
                if !self.stored_before.contains(&id) {
                    written.push(id);
                } else if matches!(self.op, Some(Plan::Gc { .. })) && self.loose_before.contains(&c)
                {
                    gc.push(id);
                } else {
                    panic!(
                        "seed {}: {} {id} is stored but its child {c} is not\n{}",
                        self.seed,
                        v.kind.name(),
                        self.trail()
                    );
                }
            }
        }
        self.stats.orphans_written += written.len();
        self.stats.orphans_gc += gc.len();
        self.m.orphans.extend(written.into_iter().chain(gc));
    }
}

fn report(what: &str, stats: Stats, t: std::time::Instant) {
    // Cumulative over the tests of this binary.
    for (site, n) in shelldone::store::durable::sim::sync_sites() {
        eprintln!("power-loss test: {n:6} syncs at {site}");
    }
    eprintln!(
        "power-loss test ({what}): {} power cuts ({} left the reflog behind the refs; objects \
         without a child: {} from an interrupted batch, {} from an interrupted gc), in {:?}",
        stats.cuts,
        stats.reflog_gaps,
        stats.orphans_written,
        stats.orphans_gc,
        t.elapsed()
    );
}

fn one_thread() {
    // One worker thread: a seed then replays the same syncs in the same order.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn power_cuts_never_lose_an_acknowledged_snapshot() {
    one_thread();
    let cases = env_or("SHELLDONE_POWER_CASES", 30);
    let steps = env_or("SHELLDONE_POWER_STEPS", 14);
    let seed = env_or(
        "SHELLDONE_POWER_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64,
    );
    eprintln!(
        "power-loss test: seed {seed}, {cases} cases of {steps} steps; reproduce with \
         SHELLDONE_POWER_SEED={seed}"
    );
    let t = std::time::Instant::now();
    let mut stats = Stats::default();
    // `SHELLDONE_POWER_CASE=<case seed>` (as failures print it) runs that case alone.
    let only = std::env::var("SHELLDONE_POWER_CASE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    for c in 0..if only.is_some() { 1 } else { cases } {
        let case_seed =
            only.unwrap_or_else(|| seed.wrapping_add(c.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let mut rng = Rng::new(case_seed);
        let sessions = if rng.range(0, 3) == 0 { 36 } else { 5 };
        let mut case = Case::new(case_seed, sessions);
        for i in 0..steps {
            case.random_step(i as usize);
        }
        // A last cut after everything was acknowledged.
        case.cut(&Inflight::Quiet, Mode::Random);
        stats += case.stats;
    }
    report("random", stats, t);
}

#[test]
fn a_cut_at_every_sync_of_a_scripted_history() {
    one_thread();
    let t = std::time::Instant::now();
    let mut stats = Stats::default();
    // More sessions than `PACK_BATCH`: saves that move every session ref use `packed-refs`.
    let mut c = Case::new(7, 36);
    // A first save: a pack, and every session ref into `packed-refs`.
    c.at_every_sync(&Plan::Save { session: None });
    // A small save: loose objects, a loose session ref shadowing its packed value.
    c.edit(Some("s001"));
    c.at_every_sync(&Plan::Save { session: None });
    let second = c.head().expect("saved");
    c.edit(Some("s002"));
    c.at_every_sync(&Plan::Save {
        session: Some("s002".into()),
    });
    let third = c.head().expect("saved");
    // Every session at once: `packed-refs` again, and the loose refs that shadow it removed.
    c.edit_all_sessions();
    c.at_every_sync(&Plan::Save { session: None });
    // A remote-tracking ref in new folders, then deleted.
    c.at_every_sync(&Plan::SetRef {
        name: REMOTE_REFS[1],
        new: Some(second),
    });
    c.at_every_sync(&Plan::SetRef {
        name: REMOTE_REFS[1],
        new: None,
    });
    c.at_every_sync(&Plan::Restore {
        target: third,
        session: Some("s002".into()),
    });
    // Garbage (a pack of blobs under a loose tree and snapshot), gc, and a repack (more than
    // `LOOSE_MAX` objects are reachable).
    c.plant_garbage();
    c.at_every_sync(&Plan::Gc { repack: false });
    c.at_every_sync(&Plan::Gc { repack: true });
    stats += c.stats;

    // A restore of the whole state over unsaved edits (auto-saved first).
    let mut c = Case::new(8, 5);
    c.execute(&Plan::Save { session: None }, None);
    let first = c.head().expect("saved");
    c.edit(None);
    c.execute(&Plan::Save { session: None }, None);
    c.edit(None);
    c.at_every_sync(&Plan::Restore {
        target: first,
        session: None,
    });
    stats += c.stats;

    // A restore of more than 512 files in more than 512 folders: syncfs instead of fsyncs.
    let mut c = Case::new(9, 3);
    c.edit_bulk(1);
    c.execute(&Plan::Save { session: None }, None);
    let bulk = c.head().expect("saved");
    c.edit_bulk(2);
    c.execute(&Plan::Save { session: None }, None);
    c.at_every_sync(&Plan::Restore {
        target: bulk,
        session: None,
    });
    stats += c.stats;
    report("scripted", stats, t);
}
