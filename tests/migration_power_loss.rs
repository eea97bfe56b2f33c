//! Issue #17: `shelldone migrate` of the frozen store format 1 (`fixtures/store-v1`, whose
//! session descriptors are also version 1) under the power-loss simulator
//! (`shelldone::store::durable::sim`, which forgets every write not yet synced). The store step
//! 1 → 2, its restore point and the live descriptor step write through shelldone's durable
//! layer (`shelldone_migrations::WriteFs`, implemented by `store::durable::Durable`), so the
//! simulator sees each of their syncs.
//!
//! For every sync of a migration, and then of `migrate --undo`, a power cut there (strict: only
//! what was synced survives; and keeping: each folder keeps its unsynced renames, as a journal
//! may commit them) leaves a store whose `FORMAT` is whole (version 1 or 2), that `state check`
//! finds sound, and whose two snapshots restore exactly as they did before the migration. The
//! next run then gives exactly what an uninterrupted run gives (the restore point's time of
//! creation aside), which survives a power cut right after it; for undo, the store's own files
//! byte for byte as the fixture has them.

#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic is the test failing, with its message"
)]

use std::collections::BTreeMap;
use std::path::Path;

use shelldone::check::CheckOptions;
use shelldone::store::durable::sim::PowerLossSim;
use shelldone::{Paths, RestoreOptions, State};

/// Relative path → bytes.
type Files = BTreeMap<String, Vec<u8>>;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn files(root: &Path) -> Files {
    let mut out = Files::new();
    if !root.exists() {
        return out;
    }
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            out.insert(rel, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from).sort_by_file_name() {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// `root` holds exactly the fixture's `config/` and `state/` again.
fn put_back(root: &Path, name: &str) {
    for d in ["config", "state"] {
        let _ = std::fs::remove_dir_all(root.join(d));
    }
    copy_tree(&fixture(name), root);
}

fn paths(root: &Path) -> Paths {
    Paths {
        config_dir: root.join("config"),
        state_dir: root.join("state"),
    }
}

/// The state dir as a migration leaves it, comparable between runs: the derived and
/// per-process files left out, and what startup recovery removes (`snapshots/staging/`, temp
/// files in `snapshots/`, `refs/` and `packs/`: a keeping cut may leave a temp file's name),
/// and the restore point's `created` line (seconds of the clock) blanked.
fn state_files(root: &Path) -> Files {
    let mut f = files(&root.join("state"));
    f.retain(|k, _| {
        !matches!(
            k.as_str(),
            "snapshots/lock" | "snapshots/lock.owner" | "snapshots/statcache"
        ) && !k.starts_with("logs/")
            && !k.starts_with("snapshots/staging/")
            && !(recovery_removes(k))
    });
    for (k, v) in &mut f {
        if k.ends_with("/POINT") {
            let text = String::from_utf8(v.clone()).unwrap();
            *v = text
                .lines()
                .map(|l| {
                    if l.starts_with("created ") {
                        "created -"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes();
        }
    }
    f
}

/// Panics naming every path whose bytes differ (the bytes themselves are too long to show).
#[track_caller]
fn same(got: &Files, want: &Files, what: &str) {
    let differ: std::collections::BTreeSet<&String> = got
        .keys()
        .chain(want.keys())
        .filter(|k| got.get(*k) != want.get(*k))
        .collect();
    assert!(differ.is_empty(), "{what}: these differ: {differ:?}");
}

/// A temp file startup recovery removes (src/recover.rs): in `snapshots/` itself, under
/// `snapshots/refs/`, or in `snapshots/packs/`.
fn recovery_removes(k: &str) -> bool {
    let Some((dir, name)) = k.rsplit_once('/') else {
        return false;
    };
    name.starts_with(".shelldone-tmp.")
        && (dir == "snapshots" || dir == "snapshots/packs" || dir.starts_with("snapshots/refs"))
}

/// Each snapshot (by id) and the files it restores to, through a store opened read-through.
fn snapshots(root: &Path, out: &Path) -> BTreeMap<String, Files> {
    let (st, _) = State::open_read_through(paths(root)).unwrap();
    let mut found = BTreeMap::new();
    for (i, e) in st.log(None, None, None).unwrap().into_iter().enumerate() {
        let to = out.join(format!("r{i}"));
        let _ = std::fs::remove_dir_all(&to);
        st.restore(&RestoreOptions {
            rev: Some(e.id.to_hex()),
            to: Some(to.clone()),
            ..RestoreOptions::default()
        })
        .unwrap();
        found.insert(e.id.to_hex(), files(&to));
    }
    found
}

/// What must hold after any cut: `FORMAT` whole at version 1 or 2; every file the migration
/// rewrites is its old or its new content, and once one is not its old content a restore point
/// holds the old content of every such file (so `migrate --undo` can put it back); `state
/// check` clean; both snapshots restoring as before.
fn readable(
    root: &Path,
    out: &Path,
    (before, done): (&Files, &Files),
    want: &BTreeMap<String, Files>,
    what: &str,
) {
    let format = std::fs::read(root.join("state/snapshots/FORMAT")).unwrap();
    assert!(
        format == b"shelldone-store 1.0\n" || format == b"shelldone-store 2.0\n",
        "{what}: FORMAT holds {:?}",
        String::from_utf8_lossy(&format)
    );
    let now = state_files(root);
    let rewritten: Vec<&String> = before
        .keys()
        .filter(|k| !k.starts_with("snapshots/restore-points/") && done.get(*k) != before.get(*k))
        .collect();
    assert!(
        !rewritten.is_empty(),
        "{what}: the migration rewrites something"
    );
    let changed = rewritten.iter().any(|k| now.get(*k) != before.get(*k));
    for k in &rewritten {
        assert!(
            now.get(*k) == before.get(*k) || now.get(*k) == done.get(*k),
            "{what}: {k} is neither its old nor its new content"
        );
    }
    if changed {
        let points: Vec<&String> = now
            .keys()
            .filter(|k| k.starts_with("snapshots/restore-points/0") && k.ends_with("/POINT"))
            .collect();
        assert_eq!(points.len(), 1, "{what}: one restore point: {points:?}");
        let dir = points[0].trim_end_matches("POINT");
        for k in &rewritten {
            assert_eq!(
                now.get(&format!("{dir}files/{k}")),
                before.get(*k),
                "{what}: the restore point holds the old {k}"
            );
        }
    }
    let st = State::open_for_check(paths(root)).unwrap();
    let report = st.check(CheckOptions::default()).unwrap();
    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
    assert_eq!(report.snapshots, 2, "{what}");
    drop(st);
    assert_eq!(&snapshots(root, out), want, "{what}: the snapshots restore");
}

fn migrate(root: &Path) -> shelldone::Result<()> {
    let (st, _) = State::open_read_through(paths(root))?;
    st.migrate(false).map(|_| ())
}

fn undo(root: &Path) -> shelldone::Result<()> {
    let (st, _) = State::open_read_through(paths(root))?;
    st.migrate_undo(false).map(|_| ())
}

/// What a cut keeps.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Only what was synced.
    Strict,
    /// Every folder keeps its unsynced changes.
    KeepAll,
    /// About half of the folders (chosen by a hash of their path and the seed) keep them.
    KeepSome(u64),
}

fn cut(sim: &PowerLossSim, mode: Mode) {
    match mode {
        Mode::Strict => sim.power_cut().map(|_| ()),
        Mode::KeepAll => sim.power_cut_keeping(&mut |_| true).map(|_| ()),
        Mode::KeepSome(seed) => sim
            .power_cut_keeping(&mut |p| {
                let h = blake3::hash(format!("{seed} {}", p.display()).as_bytes());
                h.as_bytes()[0] & 1 == 1
            })
            .map(|_| ()),
    }
    .unwrap();
}

/// For every sync of a migration of fixture `name`, then of its undo, in every mode: a cut
/// there, the checks of [`readable`], a run again. Returns (cuts, syncs of a migration, syncs
/// of an undo).
fn cut_everywhere(name: &str) -> (usize, u64, u64) {
    // In memory when it can be: the simulator rewrites the tree at every cut.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir())
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&root).unwrap();
    put_back(&root, name);
    let v1 = state_files(&root);
    let want = snapshots(&root, &out);
    assert_eq!(want.len(), 2, "{name} holds two snapshots");
    let sim = PowerLossSim::install(&root).unwrap();

    // The uninterrupted run: what every interrupted one must end at, and how many syncs it has.
    let start = sim.syncs();
    migrate(&root).unwrap();
    let syncs = sim.syncs() - start;
    let done = state_files(&root);
    assert_eq!(
        done["snapshots/FORMAT"], b"shelldone-store 2.0\n",
        "{name}: migrated"
    );
    sim.power_cut().unwrap();
    same(
        &state_files(&root),
        &done,
        &format!("{name}: a finished migration is durable"),
    );
    readable(
        &root,
        &out,
        (&v1, &done),
        &want,
        &format!("{name}: migrated"),
    );

    // The uninterrupted undo: the fixture's bytes back.
    let start = sim.syncs();
    undo(&root).unwrap();
    let undo_syncs = sim.syncs() - start;
    sim.power_cut().unwrap();
    same(
        &state_files(&root),
        &v1,
        &format!("{name}: a finished undo is durable"),
    );

    let mut cuts = 0;
    for mode in [Mode::Strict, Mode::KeepAll, Mode::KeepSome(0)] {
        for n in 1..=syncs {
            let mode = match mode {
                Mode::KeepSome(_) => Mode::KeepSome(n),
                m => m,
            };
            let what = format!("{name}: migrate, cut at sync {n} of {syncs} ({mode:?})");
            put_back(&root, name);
            sim.reset().unwrap();
            sim.cut_at(Some(sim.syncs() + n));
            let res = migrate(&root);
            assert!(sim.is_cut(), "{what}: fired");
            assert!(res.is_err(), "{what}: the run stops at the cut");
            cut(&sim, mode);
            cuts += 1;
            readable(&root, &out, (&v1, &done), &want, &what);
            // The next run finishes, to exactly the uninterrupted result, durably.
            migrate(&root).unwrap();
            sim.power_cut().unwrap();
            same(&state_files(&root), &done, &format!("{what}, then a run"));
        }
        for n in 1..=undo_syncs {
            let mode = match mode {
                Mode::KeepSome(_) => Mode::KeepSome(n),
                m => m,
            };
            let what = format!("{name}: undo, cut at sync {n} of {undo_syncs} ({mode:?})");
            put_back(&root, name);
            sim.reset().unwrap();
            migrate(&root).unwrap();
            sim.cut_at(Some(sim.syncs() + n));
            let res = undo(&root);
            assert!(sim.is_cut(), "{what}: fired");
            assert!(res.is_err(), "{what}: the undo stops at the cut");
            cut(&sim, mode);
            cuts += 1;
            readable(&root, &out, (&v1, &done), &want, &what);
            // Run again, it finishes; cut after the point was renamed away (every file put
            // back), it finds no point left, says so, and removes the leftover.
            if let Err(e) = undo(&root) {
                assert!(
                    e.to_string().contains("no restore point"),
                    "{what}, then an undo: {e}"
                );
            }
            sim.power_cut().unwrap();
            same(&state_files(&root), &v1, &format!("{what}, then an undo"));
        }
    }
    (cuts, syncs, undo_syncs)
}

/// The store step 1 → 2 with its restore point and the descriptor step (`fixtures/store-v1`:
/// store format 1.0, version-1 descriptors).
#[test]
fn a_power_cut_at_any_sync_of_migrate_and_undo_loses_nothing() {
    let (cuts, syncs, undo_syncs) = cut_everywhere("store-v1");
    eprintln!(
        "store-v1: {cuts} power cuts, at each of the {syncs} syncs of a migration and the \
         {undo_syncs} of an undo, strict, keeping and keeping some; sync sites so far: {:?}",
        shelldone::store::durable::sim::sync_sites()
    );
}

/// A migration of live data alone (`fixtures/live-v1`: store format 2.0, version-1
/// descriptors): no `FORMAT` replace syncs `snapshots/` for the restore point.
#[test]
fn a_power_cut_at_any_sync_of_a_live_data_migration_keeps_its_restore_point() {
    let (cuts, syncs, undo_syncs) = cut_everywhere("live-v1");
    eprintln!(
        "live-v1: {cuts} power cuts, at each of the {syncs} syncs of a migration and the \
         {undo_syncs} of an undo, strict, keeping and keeping some"
    );
}

/// The store is whole and sound: `FORMAT` at 1.0 or 2.0, `state check` clean with `checked`
/// snapshots, and every snapshot restoring as `want` says.
fn sound(root: &Path, out: &Path, want: &BTreeMap<String, Files>, checked: usize, what: &str) {
    let format = std::fs::read(root.join("state/snapshots/FORMAT")).unwrap();
    assert!(
        format == b"shelldone-store 1.0\n" || format == b"shelldone-store 2.0\n",
        "{what}: FORMAT holds {:?}",
        String::from_utf8_lossy(&format)
    );
    let st = State::open_for_check(paths(root)).unwrap();
    let report = st.check(CheckOptions::default()).unwrap();
    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
    assert_eq!(report.snapshots, checked, "{what}");
    drop(st);
    assert_eq!(&snapshots(root, out), want, "{what}: the snapshots restore");
}

/// The pack versions (last byte of the magic) in `snapshots/packs/`.
fn pack_versions(root: &Path) -> Vec<u8> {
    let mut v: Vec<u8> = std::fs::read_dir(root.join("state/snapshots/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .map(|p| std::fs::read(p).unwrap()[7])
        .collect();
    v.sort_unstable();
    v
}

/// `migrate --undo` of `fixtures/store-v1` after a save that wrote what store format 1 cannot
/// read (a version-2 pack, `packed-refs`), which undo converts down first (loose objects, loose
/// refs): a power cut at each of its syncs, in every mode, leaves a sound store whose every
/// snapshot restores as before; undo run again ends at exactly the uninterrupted result, which
/// holds only what format 1 reads.
#[test]
fn a_power_cut_at_any_sync_of_an_undo_that_converts_down_loses_nothing() {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir())
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let (root, out, pre) = (
        dir.path().join("root"),
        dir.path().join("out"),
        dir.path().join("pre"),
    );
    std::fs::create_dir_all(&root).unwrap();
    put_back(&root, "store-v1");
    migrate(&root).unwrap();
    for i in 0..70 {
        std::fs::write(
            root.join(format!("config/themes/new{i}.toml")),
            format!("name = \"new {i}\"\n"),
        )
        .unwrap();
    }
    for i in 0..40 {
        let d = root.join(format!("state/sessions/n{i:03}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("session.json"), format!("{{\"id\":\"n{i:03}\"}}")).unwrap();
    }
    let (st, _) = State::open(paths(&root)).unwrap();
    st.save(&shelldone::SaveOptions {
        message: "after migration".into(),
        ..shelldone::SaveOptions::default()
    })
    .unwrap();
    drop(st);
    assert!(
        root.join("state/snapshots/packed-refs").is_file(),
        "packed refs"
    );
    assert!(pack_versions(&root).contains(&2), "a version-2 pack");
    copy_tree(&root, &pre);
    let want = snapshots(&root, &out);
    assert_eq!(want.len(), 3, "the fixture's two snapshots and the new one");
    let checked = {
        let st = State::open_for_check(paths(&root)).unwrap();
        st.check(CheckOptions::default()).unwrap().snapshots
    };
    let sim = PowerLossSim::install(&root).unwrap();

    let start = sim.syncs();
    undo(&root).unwrap();
    let syncs = sim.syncs() - start;
    let done = state_files(&root);
    sim.power_cut().unwrap();
    same(&state_files(&root), &done, "a finished undo is durable");
    assert_eq!(done["snapshots/FORMAT"], b"shelldone-store 1.0\n");
    assert!(!done.contains_key("snapshots/packed-refs"));
    assert!(
        pack_versions(&root).iter().all(|v| *v == 1),
        "{:?}",
        pack_versions(&root)
    );
    sound(&root, &out, &want, checked, "undone");

    // One sync per object written loose: a cut at each of the first and last 40 (the last
    // ones delete the packs, unpack the refs and put the files back) and at every 25th between.
    let points: Vec<u64> = (1..=syncs)
        .filter(|n| *n <= 40 || n % 25 == 0 || n + 40 > syncs)
        .collect();
    let mut cuts = 0;
    for mode in [Mode::Strict, Mode::KeepAll, Mode::KeepSome(0)] {
        for &n in &points {
            let mode = match mode {
                Mode::KeepSome(_) => Mode::KeepSome(n),
                m => m,
            };
            let what = format!("undo converting down, cut at sync {n} of {syncs} ({mode:?})");
            for d in ["config", "state"] {
                std::fs::remove_dir_all(root.join(d)).unwrap();
            }
            copy_tree(&pre, &root);
            sim.reset().unwrap();
            sim.cut_at(Some(sim.syncs() + n));
            let res = undo(&root);
            assert!(sim.is_cut(), "{what}: fired");
            assert!(res.is_err(), "{what}: the undo stops at the cut");
            cut(&sim, mode);
            cuts += 1;
            sound(&root, &out, &want, checked, &what);
            if let Err(e) = undo(&root) {
                assert!(
                    e.to_string().contains("no restore point"),
                    "{what}, then an undo: {e}"
                );
            }
            sim.power_cut().unwrap();
            same(&state_files(&root), &done, &format!("{what}, then an undo"));
        }
    }
    eprintln!(
        "undo converting down: {cuts} power cuts, at {} of its {syncs} syncs, in 3 modes",
        points.len()
    );
}
