//! Issue #17: the live migration of session descriptors (schema 1 → 2) under the power-loss
//! simulator (`shelldone::store::durable::sim`, which forgets every write not yet synced). For
//! every sync of a run, a power cut there (strict: only what was synced survives; and keeping:
//! each folder keeps its unsynced renames, as a journal may commit them) leaves every descriptor
//! whole — its version-1 bytes or its version-2 bytes, never empty or torn —, and the next run
//! gives exactly what an uninterrupted run gives, which survives a power cut right after it.

#![expect(
    clippy::unwrap_used,
    reason = "a test: a panic is the test failing, with its message"
)]

use std::collections::BTreeMap;
use std::path::Path;

use shelldone::live::descriptors::migrate_live_descriptors;
use shelldone::store::durable::sim::PowerLossSim;
use shelldone_migrations::descriptor as desc;

/// Path under the state dir → bytes, for every file under `sessions/`.
type Files = BTreeMap<String, Vec<u8>>;

fn files(state: &Path) -> Files {
    let mut out = Files::new();
    for e in walkdir::WalkDir::new(state.join("sessions")).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(state).unwrap().display().to_string();
            out.insert(rel, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

/// The state before the migration: version-1 descriptors in both places a descriptor lives,
/// one already at version 2, one newer, one that does not parse, and a scrollback.
fn initial(state: &Path) -> Files {
    let _ = std::fs::remove_dir_all(state.join("sessions"));
    let mut rng = shelldone::demo::Rng::new(5);
    let put = |rel: &str, bytes: &[u8]| {
        let p = state.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    for i in 0..5 {
        let id = format!("s{i}");
        let d = shelldone::demo::descriptor(&mut rng, &id, 1);
        put(&format!("sessions/{id}/session.json"), d.as_bytes());
    }
    put(
        "sessions/flat.json",
        b"{\"id\":\"flat\",\"tabs\":[{\"panes\":[{\"cmd\":\"htop\"}]}]}\n",
    );
    put(
        "sessions/done/session.json",
        b"{\"schema_version\":2,\"tabs\":[{\"panes\":[{\"id\":\"x\",\"restore\":{\"kind\":\"shell\"}}]}]}",
    );
    put("sessions/later/session.json", b"{\"schema_version\":3}");
    put("sessions/torn/session.json", b"{\"tabs\":[");
    put("sessions/s0/scrollback.bin", b"\x1b[1mout\x1b[0m\n");
    files(state)
}

#[test]
fn a_power_cut_at_any_sync_of_the_live_migration_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let before = initial(&state);
    let sim = PowerLossSim::install(root.path()).unwrap();

    // The uninterrupted run: what every interrupted one must end at, and how many syncs it has.
    let start = sim.syncs();
    let report = migrate_live_descriptors(&state, false).unwrap();
    let syncs = sim.syncs() - start;
    assert_eq!(report.upgraded.len(), 6, "{report:?}");
    assert_eq!(report.current, 1);
    assert_eq!(report.skipped.len(), 2);
    let done = files(&state);
    sim.power_cut().unwrap();
    assert_eq!(files(&state), done, "a finished run is durable");

    let mut cuts = 0;
    for keeping in [false, true] {
        for n in 1..=syncs {
            initial(&state);
            sim.reset().unwrap();
            let at = sim.syncs() + n;
            sim.cut_at(Some(at));
            let res = migrate_live_descriptors(&state, false);
            assert!(sim.is_cut(), "cut {n} of {syncs} fired");
            assert!(res.is_err(), "cut {n}: the run stops at the cut");
            if keeping {
                sim.power_cut_keeping(&mut |_| true).unwrap();
            } else {
                sim.power_cut().unwrap();
            }
            cuts += 1;
            let got = files(&state);
            for (p, b) in &got {
                if p.contains("/.shelldone-tmp.") {
                    continue;
                }
                assert!(
                    b == &before[p] || b == &done[p],
                    "cut {n} (keeping {keeping}): {p} is neither its old nor its new content: {:?}",
                    String::from_utf8_lossy(b)
                );
                if b == &done[p] && b != &before[p] {
                    assert_eq!(desc::version_of(b), Ok(desc::V2));
                }
            }
            for p in before.keys() {
                assert!(got.contains_key(p), "cut {n}: {p} lost");
            }
            // The next run finishes, to exactly the uninterrupted result, durably.
            migrate_live_descriptors(&state, false).unwrap();
            sim.power_cut().unwrap();
            assert_eq!(
                files(&state),
                done,
                "cut {n} (keeping {keeping}), then a run"
            );
        }
    }
    eprintln!("{cuts} power cuts, at each of the {syncs} syncs of a run, strict and keeping");
    // Each upgraded descriptor: its file synced, then its folder.
    assert_eq!(syncs, 12, "syncs of one run");
}
