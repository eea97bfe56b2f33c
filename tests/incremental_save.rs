//! Issue #13: the daemon's incremental save (`State::save_changed`) writes the snapshot a full
//! save writes.
//!
//! Model test: two identical live states, each with its own store, get the same random edits
//! (file creates, edits, deletes, renames of files and folders, mode changes, symlinks, empty
//! folders, `.shelldoneignore` files, session descriptors); one is saved with `save_changed`
//! given the paths a watcher reports, the other with a full `save`. After every step both
//! snapshots have the same root tree, the same `extra` (the `modes` table), the same change
//! summary and the same moved session refs. A second test counts the work of an incremental
//! save after one file changed: the same at 100 files as at 10 000.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use shelldone::{Paths, SaveOptions, State};

/// One live state and its store.
struct Live {
    _dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    st: State,
}

impl Live {
    fn new() -> Live {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config");
        let state = dir.path().join("state");
        for d in [
            config.clone(),
            state.join("sessions"),
            state.join("journal"),
        ] {
            std::fs::create_dir_all(d).expect("create roots");
        }
        let (st, _) = State::open(Paths {
            config_dir: config.clone(),
            state_dir: state.clone(),
        })
        .expect("open store");
        Live {
            _dir: dir,
            config,
            state,
            st,
        }
    }

    /// The filesystem path of a snapshot path.
    fn abs(&self, rel: &str) -> PathBuf {
        match rel {
            "config" => return self.config.clone(),
            "state" => return self.state.clone(),
            _ => {}
        }
        match rel.strip_prefix("config/") {
            Some(r) => self.config.join(r),
            None => self
                .state
                .join(rel.strip_prefix("state/").expect("a state path")),
        }
    }

    fn full(&self) -> shelldone::SaveOutcome {
        self.st
            .save(&SaveOptions {
                message: "m".into(),
                allow_empty: true,
                ..Default::default()
            })
            .expect("full save")
    }
}

/// One edit, on snapshot paths drawn from a small set so that edits meet.
#[derive(Debug, Clone)]
enum Op {
    Write(usize, u8),
    Delete(usize),
    Rename(usize, usize),
    Chmod(usize, u32),
    Symlink(usize, usize),
    Mkdir(usize),
    RemoveDir(usize),
    Ignore(usize, usize),
}

const DIRS: &[&str] = &[
    "config",
    "config/a",
    "config/a/b",
    "config/c",
    "state/sessions",
    "state/sessions/s1",
    "state/sessions/s2",
    "state/journal",
];
const NAMES: &[&str] = &["f", "g.txt", "s3.json", "h.log", "k"];

fn path(i: usize) -> String {
    let d = DIRS[i % DIRS.len()];
    let n = NAMES[(i / DIRS.len()) % NAMES.len()];
    format!("{d}/{n}")
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..DIRS.len() * NAMES.len();
    prop_oneof![
        4 => (p.clone(), any::<u8>()).prop_map(|(i, v)| Op::Write(i, v)),
        2 => p.clone().prop_map(Op::Delete),
        2 => (p.clone(), p.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        2 => (p.clone(), prop::sample::select(vec![0o600, 0o644, 0o755, 0o700, 0o640]))
            .prop_map(|(i, m)| Op::Chmod(i, m)),
        1 => (p.clone(), p.clone()).prop_map(|(a, b)| Op::Symlink(a, b)),
        1 => (0..DIRS.len()).prop_map(Op::Mkdir),
        1 => (1..DIRS.len()).prop_map(Op::RemoveDir),
        1 => (0..DIRS.len(), 0..NAMES.len()).prop_map(|(d, n)| Op::Ignore(d, n)),
    ]
}

/// Applies `op` to `live`; adds what a watcher reports to `changed` (the paths created,
/// written, removed or renamed, folders included).
fn apply(live: &Live, op: &Op, changed: &mut BTreeSet<Vec<u8>>) {
    let mut note = |rel: &str| {
        changed.insert(rel.as_bytes().to_vec());
    };
    let mkparents = |rel: &str, note: &mut dyn FnMut(&str)| {
        let mut cur = String::new();
        for (i, c) in rel.split('/').enumerate() {
            if i > 0 {
                cur.push('/');
            }
            cur.push_str(c);
            let abs = live.abs(&cur);
            if cur.matches('/').count() >= if cur.starts_with("config") { 1 } else { 2 }
                && cur != rel
                && !abs.is_dir()
            {
                if abs.symlink_metadata().is_ok() {
                    let _ = std::fs::remove_file(&abs);
                }
                std::fs::create_dir(&abs).expect("mkdir");
                note(&cur);
            }
        }
    };
    match op {
        Op::Write(i, v) => {
            let rel = path(*i);
            mkparents(&rel, &mut note);
            let abs = live.abs(&rel);
            if abs.is_dir() {
                return;
            }
            let _ = std::fs::remove_file(&abs);
            let body = if rel.ends_with(".json") {
                format!("{{\"v\": {v}}}")
            } else {
                format!("content {v}\n").repeat(usize::from(*v % 4) + 1)
            };
            std::fs::write(&abs, body).expect("write");
            note(&rel);
        }
        Op::Delete(i) => {
            let rel = path(*i);
            let abs = live.abs(&rel);
            if abs.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                std::fs::remove_file(&abs).expect("delete");
                note(&rel);
            }
        }
        Op::Rename(a, b) => {
            let (ra, rb) = (path(*a), path(*b));
            let (fa, fb) = (live.abs(&ra), live.abs(&rb));
            if ra == rb
                || !fa.symlink_metadata().is_ok_and(|m| !m.is_dir())
                || fb.is_dir()
                || !fb.parent().is_some_and(Path::is_dir)
            {
                return;
            }
            std::fs::rename(&fa, &fb).expect("rename");
            note(&ra);
            note(&rb);
        }
        Op::Chmod(i, m) => {
            let rel = path(*i);
            let abs = live.abs(&rel);
            if abs.symlink_metadata().is_ok_and(|md| md.is_file()) {
                std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(*m)).expect("chmod");
                note(&rel);
            }
        }
        Op::Symlink(a, b) => {
            let (ra, rb) = (path(*a), path(*b));
            let abs = live.abs(&ra);
            if abs.symlink_metadata().is_ok() || !abs.parent().is_some_and(Path::is_dir) {
                return;
            }
            // Sometimes inside the roots (kept), sometimes out of its folder (left out).
            let target = if a % 2 == 0 {
                PathBuf::from(NAMES[b % NAMES.len()])
            } else {
                live.abs(&rb)
            };
            std::os::unix::fs::symlink(target, &abs).expect("symlink");
            note(&ra);
        }
        Op::Mkdir(d) => {
            let rel = format!("{}/e", DIRS[*d]);
            mkparents(&format!("{rel}/x"), &mut note);
        }
        Op::RemoveDir(d) => {
            let rel = DIRS[*d];
            let abs = live.abs(rel);
            if rel.matches('/').count() >= if rel.starts_with("config") { 1 } else { 2 }
                && abs.is_dir()
            {
                std::fs::remove_dir_all(&abs).expect("rm -r");
                note(rel);
            }
        }
        Op::Ignore(d, n) => {
            let rel = format!("{}/.shelldoneignore", DIRS[*d]);
            let abs = live.abs(&rel);
            if !abs.parent().is_some_and(Path::is_dir) {
                return;
            }
            std::fs::write(&abs, format!("{}\n", NAMES[*n])).expect("write ignore");
            note(&rel);
        }
    }
}

/// What two snapshots must share: the root, `extra`, the summary and the sessions moved.
fn compare(a: &Live, oa: &shelldone::SaveOutcome, b: &Live, ob: &shelldone::SaveOutcome) {
    assert_eq!(
        oa.created, ob.created,
        "one save made a snapshot, the other not"
    );
    assert_eq!(oa.sessions, ob.sessions, "sessions moved");
    assert_eq!(
        (oa.summary.added, oa.summary.modified, oa.summary.deleted),
        (ob.summary.added, ob.summary.modified, ob.summary.deleted),
        "summary"
    );
    let read = |l: &Live, o: &shelldone::SaveOutcome| {
        l.st.context()
            .objects()
            .read_snapshot(&o.id.expect("a head"))
            .expect("read snapshot")
    };
    let (sa, sb) = (read(a, oa), read(b, ob));
    assert_eq!(sa.root, sb.root, "root tree");
    assert_eq!(sa.extra, sb.extra, "extra (modes table)");
    assert_eq!(
        (sa.summary.added, sa.summary.modified, sa.summary.deleted),
        (sb.summary.added, sb.summary.modified, sb.summary.deleted)
    );
}

/// Runs one case: `init` edits, a full save on both, then each step's edits and a save on
/// both. Returns (incremental saves, full saves `save_changed` asked for).
fn run_case(init: &[Op], steps: &[Vec<Op>]) -> (usize, usize) {
    let (a, b) = (Live::new(), Live::new());
    let mut ignored = BTreeSet::new();
    for o in init {
        apply(&a, o, &mut ignored);
        apply(&b, o, &mut ignored);
    }
    // Some files 0644, so the head has a `modes` table (else only full saves are made).
    for l in [&a, &b] {
        std::fs::write(l.abs("config/base"), "x").expect("write");
        std::fs::set_permissions(l.abs("config/base"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let (oa, ob) = (a.full(), b.full());
    compare(&a, &oa, &b, &ob);
    let mut base =
        a.st.save_base()
            .expect("save base")
            .expect("a head with a modes table");
    let (mut inc, mut full) = (0, 0);
    for step in steps {
        let mut changed = BTreeSet::new();
        for o in step {
            apply(&a, o, &mut changed);
            apply(&b, o, &mut BTreeSet::new());
        }
        let ob = b.full();
        let oa = match a
            .st
            .save_changed("m", &mut base, &changed)
            .expect("incremental save")
        {
            Some((o, _)) => {
                inc += 1;
                o
            }
            None => {
                // A full save was needed (a `modes` default changed, a root emptied...).
                full += 1;
                let o = a.full();
                base = a.st.save_base().expect("save base").expect("a head");
                o
            }
        };
        compare(&a, &oa, &b, &ob);
    }
    (inc, full)
}

#[test]
fn incremental_save_is_the_full_save() {
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let counts = std::cell::Cell::new((0, 0));
    let strategy = (
        prop::collection::vec(op(), 3..12),
        prop::collection::vec(prop::collection::vec(op(), 1..5), 1..8),
    );
    runner
        .run(&strategy, |(init, steps)| {
            let (i, f) = run_case(&init, &steps);
            let (ci, cf) = counts.get();
            counts.set((ci + i, cf + f));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let (inc, full) = counts.get();
    // The comparison means something only if most saves were incremental.
    assert!(
        inc > 3 * full,
        "{inc} incremental saves, {full} fell back to a full save"
    );
}

/// `n` files in folders of 100, all 0644.
fn populated(n: usize) -> Live {
    let l = Live::new();
    for i in 0..n {
        let d = l.config.join(format!("d{:03}", i / 100));
        std::fs::create_dir_all(&d).expect("mkdir");
        let f = d.join(format!("f{:02}", i % 100));
        std::fs::write(&f, format!("file {i}\n")).expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    l.full();
    l
}

/// A save after one file changed reads one file and the same number of trees at 100 files as
/// at 10 000; only the listing of the folders on the way grows (a readdir, no stat).
#[test]
fn one_change_costs_the_same_at_any_size() {
    let mut seen = Vec::new();
    for n in [100, 10_000] {
        let l = populated(n);
        let mut base = l.st.save_base().expect("base").expect("a head");
        std::fs::write(l.config.join("d000/f07"), "changed\n").expect("write");
        let changed: BTreeSet<Vec<u8>> = [b"config/d000/f07".to_vec()].into();
        let (o, work) =
            l.st.save_changed("m", &mut base, &changed)
                .expect("save")
                .expect("no full save needed");
        assert!(o.created);
        assert_eq!(o.summary.modified, 1);
        assert_eq!(work.files_read, 1, "only the changed file is read");
        // The entries named on the way: the roots' top level, `config`'s folders, `d000`'s files.
        assert!(
            work.entries_listed <= 2 + (n as u64).div_ceil(100) + 100,
            "{work:?}"
        );
        seen.push((work.files_read, work.trees_read, work.trees_written));
    }
    assert_eq!(seen[0], seen[1], "the same work at 100 and at 10 000 files");
}
