//! Issue #15: a backup cut by a power loss at each of its syncs (the simulator of
//! `shelldone::store::durable::sim`, which forgets every write not yet synced; and a second
//! pass in which every directory keeps its unsynced entry changes, as a journal may) never
//! leaves a bundle that `backup list` shows and `backup verify` refuses, and the next backup
//! succeeds.

use std::path::Path;

use shelldone::backup::{self, RunOptions, Trust};
use shelldone::store::durable::sim::PowerLossSim;
use shelldone::{Paths, SaveOptions, State};

/// Every listed bundle verifies; returns how many there are.
fn listed_all_verify(st: &State, scratch: &Path) -> usize {
    let dir = st.backup_dir();
    let list = backup::list(&dir, &[]).expect("list");
    for b in &list {
        backup::verify(&b.path, Trust::default(), scratch, true)
            .unwrap_or_else(|e| panic!("{} is listed, but: {e}", b.id));
    }
    list.len()
}

#[test]
fn a_power_cut_at_any_sync_of_a_backup_never_lists_a_bad_bundle() {
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir())
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    let paths = Paths {
        state_dir: root.join("state"),
        config_dir: root.join("config"),
    };
    shelldone::demo::generate(
        &paths.config_dir,
        &paths.state_dir,
        &shelldone::demo::DemoSpec::small(),
    )
    .expect("generate");
    let scratch = tmp.path().join("verify");
    let sim = PowerLossSim::install(&root).expect("install the simulator");
    let (st, _) = State::open(paths.clone()).expect("open");
    st.save(&SaveOptions {
        message: "first".into(),
        ..SaveOptions::default()
    })
    .expect("save");
    // How many syncs one backup makes.
    let start = sim.syncs();
    st.backup_run(&RunOptions::default()).expect("a backup");
    let per_backup = sim.syncs() - start;
    assert!(per_backup >= 4, "data, manifest, dir, parent: {per_backup}");
    drop(st);
    let mut cuts = 0;
    for keeping in [false, true] {
        for k in 1..=per_backup {
            let (st, _) = State::open(paths.clone()).expect("open after a cut");
            let before = listed_all_verify(&st, &scratch);
            sim.cut_at(Some(sim.syncs() + k));
            let r = st.backup_run(&RunOptions::default());
            let was_cut = sim.is_cut();
            assert!(r.is_err() == was_cut, "cut at sync {k}: {r:?}");
            drop(st);
            if keeping {
                sim.power_cut_keeping(&mut |_| true).expect("power cut");
            } else {
                sim.power_cut().expect("power cut");
            }
            cuts += u32::from(was_cut);
            let (st, _) = State::open(paths.clone()).expect("open after the cut");
            let after = listed_all_verify(&st, &scratch);
            assert!(
                after == before || after == before + 1,
                "cut at sync {k} (keeping: {keeping}): {before} → {after} bundles"
            );
            // The next backup succeeds, and is listed.
            st.backup_run(&RunOptions::default())
                .expect("the next backup succeeds");
            assert_eq!(listed_all_verify(&st, &scratch), after + 1);
        }
    }
    assert!(cuts as u64 >= 2 * per_backup - 2, "{cuts} cuts");
}
