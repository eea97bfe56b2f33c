//! Issue #17, session descriptors v1 → v2: the frozen fixtures (`fixtures/descriptors/`,
//! `fixtures/live-v1/`, `fixtures/store-v1/`) read by today's binary, snapshots of version-1
//! descriptors restoring as they were saved, merges between a device that migrated and one that
//! did not, and one test per cell of the reader/writer matrix (docs/migrations.md, "Session descriptors").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shelldone::snapshot::descriptor as reader;
use shelldone_migrations::descriptor::{self as desc, migrate_live_descriptors, v1};

use crate::compat::fixture;
use crate::support::{Entry, Sandbox, assert_same, tree};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `fixtures/descriptors/<dir>/*.json`: name (without `.json`) → bytes.
fn samples(dir: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(fixtures().join("descriptors").join(dir)).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        out.insert(name, std::fs::read(&p).unwrap());
    }
    assert!(out.len() >= 8, "{dir}: {:?}", out.keys());
    out
}

/// The samples a version-1 terminal could have written (the frozen version-1 reader reads
/// them); `tricky` holds what no such terminal writes (a list as `cmd`, a tab that is a number)
/// but a JSON object shelldone has always stored.
fn written_by_v1(name: &str) -> bool {
    name != "tricky"
}

fn restored_to(sb: &Sandbox, rev: &str, name: &str) -> BTreeMap<String, Entry> {
    let to = sb.dir.path().join(name);
    sb.ok(&["state", "restore", rev, "--to", to.to_str().unwrap()]);
    let mut got = tree(&to.join("config"), "config");
    got.extend(tree(&to.join("state/sessions"), "state/sessions"));
    got.extend(tree(&to.join("state/journal"), "state/journal"));
    got
}

fn file<'a>(t: &'a BTreeMap<String, Entry>, path: &str) -> &'a [u8] {
    match t.get(path) {
        Some(Entry::File(b, _)) => b,
        other => panic!("{path}: {other:?}"),
    }
}

// ---- fixtures ----

#[test]
fn every_version_1_sample_upgrades_to_its_frozen_version_2() {
    let (old, new) = (samples("v1"), samples("v2"));
    assert_eq!(
        old.keys().collect::<Vec<_>>(),
        new.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &old {
        assert_eq!(desc::version_of(bytes), Ok(desc::V1), "{name}");
        let up = desc::upgrade(name, bytes).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&up),
            String::from_utf8_lossy(&new[name]),
            "{name}: the step's output is frozen"
        );
        // Version 2 is left as it is.
        assert!(
            matches!(
                desc::upgrade(name, &new[name]),
                Ok(std::borrow::Cow::Borrowed(_))
            ),
            "{name}"
        );
    }
}

#[test]
fn the_live_v1_fixture_opens_checks_logs_and_restores() {
    let sb = fixture("live-v1");
    let live = sb.live();
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    let log = sb.ok(&["log"]);
    assert!(
        log.contains("fixture: live v1, second save")
            && log.contains("fixture: live v1, first save"),
        "{log}"
    );
    // The head is the live state byte for byte; its descriptors are version 1, as saved.
    let head = restored_to(&sb, "head", "head");
    assert_same(&head, &live);
    let v1s = samples("v1");
    for (path, sample) in [
        ("state/sessions/demo/session.json", "demo"),
        ("state/sessions/pretty/session.json", "pretty"),
        ("state/sessions/crlf/session.json", "crlf"),
        ("state/sessions/tricky/session.json", "tricky"),
        ("state/sessions/empty/session.json", "empty"),
        ("state/sessions/id-only.json", "id-only"),
        ("state/sessions/no-schema.json", "no-schema"),
    ] {
        assert_eq!(file(&head, path), &v1s[sample][..], "{path}");
    }
    // The first snapshot holds the descriptor the terminal rewrote after it.
    let first = restored_to(&sb, "head~1", "first");
    assert_eq!(
        file(&first, "state/sessions/no-schema.json"),
        &v1s["no-schema-before"][..]
    );

    // Upgrading the live descriptors gives the frozen version-2 samples (the session ids come
    // from the paths, which are the samples' names); the snapshots still restore version 1.
    let report = migrate_live_descriptors(&sb.state(), false).unwrap();
    assert_eq!(report.upgraded.len(), 7, "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    let v2s = samples("v2");
    for (path, sample) in [
        ("sessions/demo/session.json", "demo"),
        ("sessions/tricky/session.json", "tricky"),
        ("sessions/crlf/session.json", "crlf"),
        ("sessions/no-schema.json", "no-schema"),
    ] {
        assert_eq!(
            std::fs::read(sb.state().join(path)).unwrap(),
            v2s[sample],
            "{path}"
        );
    }
    sb.save("descriptors at version 2");
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    assert_same(&restored_to(&sb, "head~1", "head-before"), &live);
    assert_eq!(
        file(
            &restored_to(&sb, "head~2", "first-again"),
            "state/sessions/no-schema.json"
        ),
        &v1s["no-schema-before"][..]
    );
}

#[test]
fn the_store_v1_fixture_restores_its_version_1_descriptors() {
    let sb = fixture("store-v1");
    let original = |s: &str| {
        std::fs::read(fixtures().join(format!("store-v1/state/sessions/{s}/session.json"))).unwrap()
    };
    migrate_live_descriptors(&sb.state(), false).unwrap();
    sb.save("after the descriptor migration");
    for s in ["s001", "s002", "s003"] {
        let live = std::fs::read(sb.state().join(format!("sessions/{s}/session.json"))).unwrap();
        assert_eq!(desc::version_of(&live), Ok(desc::V2));
        assert_eq!(live, desc::upgrade(s, &original(s)).unwrap().into_owned());
    }
    for (rev, name) in [("head~1", "second"), ("head~2", "first")] {
        let got = restored_to(&sb, rev, name);
        for s in ["s001", "s002", "s003"] {
            let p = format!("state/sessions/{s}/session.json");
            assert_eq!(
                file(&got, &p),
                &original(s)[..],
                "{rev} {p}: as it was saved"
            );
        }
    }
    // An in-place restore of the old snapshot puts the version-1 bytes back live (history is
    // never rewritten; the next migration upgrades them again, to the same bytes).
    sb.ok(&["state", "restore", "head~1"]);
    assert_eq!(
        std::fs::read(sb.state().join("sessions/s002/session.json")).unwrap(),
        original("s002")
    );
}

// ---- merges between devices ----

/// A and B share a state whose descriptors are version 1; A upgrades its descriptors and
/// saves; B renames a tab of `s001` — at version 1, or (`b_migrates`) after upgrading its own
/// descriptors too. `b_last`: B's snapshot is the newer one (the merge keeps the newer side on
/// a conflict, so both orders are worth a test).
fn migrated_and_not(b_last: bool, b_migrates: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("remote");
    let url = url.to_str().unwrap();
    let (a, b) = (Sandbox::new(), Sandbox::new());
    a.generate();
    let shared = a.save("shared");
    a.ok(&["remote", "add", "origin", url, "--init"]);
    a.ok(&["sync", "push"]);
    b.ok(&["remote", "add", "origin", url, "--init"]);
    b.ok(&["sync", "pull"]);
    let base = std::fs::read(a.state().join("sessions/s001/session.json")).unwrap();
    assert_eq!(desc::version_of(&base), Ok(desc::V1));

    let migrate_a = || {
        let r = migrate_live_descriptors(&a.state(), false).unwrap();
        assert_eq!(r.upgraded.len(), 5, "{r:?}");
        a.save("A: descriptors to version 2");
        a.ok(&["sync", "push"]);
    };
    let renamed =
        String::from_utf8(base.clone())
            .unwrap()
            .replacen("\"tab 0\"", "\"renamed on B\"", 1);
    assert_ne!(renamed.as_bytes(), &base[..]);
    let change_b = || {
        let p = b.state().join("sessions/s001/session.json");
        if b_migrates {
            migrate_live_descriptors(&b.state(), false).unwrap();
            let v2 = String::from_utf8(std::fs::read(&p).unwrap()).unwrap();
            std::fs::write(&p, v2.replacen("\"tab 0\"", "\"renamed on B\"", 1)).unwrap();
        } else {
            std::fs::write(&p, &renamed).unwrap();
        }
        b.save("B: renamed a tab");
    };
    if b_last {
        migrate_a();
        std::thread::sleep(std::time::Duration::from_millis(20));
        change_b();
    } else {
        change_b();
        std::thread::sleep(std::time::Duration::from_millis(20));
        migrate_a();
    }
    // B pulls: no conflict (exit 0, not 7); s001 is B's rename at version 2, the other
    // sessions are A's upgraded descriptors.
    let out = b.ok(&["sync", "pull"]);
    assert!(!out.contains("conflict"), "{out}");
    let want = desc::upgrade("s001", renamed.as_bytes())
        .unwrap()
        .into_owned();
    assert_eq!(
        String::from_utf8_lossy(
            &std::fs::read(b.state().join("sessions/s001/session.json")).unwrap()
        ),
        String::from_utf8_lossy(&want)
    );
    for s in ["s000", "s002", "s003", "s004"] {
        let p = format!("sessions/{s}/session.json");
        assert_eq!(
            std::fs::read(b.state().join(&p)).unwrap(),
            std::fs::read(a.state().join(&p)).unwrap(),
            "{p}"
        );
    }
    // A pulls B's merge: both devices hold the same bytes.
    b.ok(&["sync", "push"]);
    let out = a.ok(&["sync", "pull"]);
    assert!(!out.contains("conflict"), "{out}");
    assert_same(&a.live(), &b.live());
    for sb in [&a, &b] {
        let c = sb.ok(&["conflicts"]);
        assert!(c.contains("no open conflicts"), "{c}");
    }
    // The version-1 snapshot before the migration still restores version 1.
    let old = restored_to(&b, &shared, "shared");
    assert_eq!(file(&old, "state/sessions/s001/session.json"), &base[..]);
}

#[test]
fn a_device_that_migrated_and_one_that_did_not_converge_b_newer() {
    migrated_and_not(true, false);
}

#[test]
fn two_devices_that_migrated_on_their_own_merge_without_conflict() {
    // The base is version 1, both sides version 2: the base is upgraded before comparing.
    migrated_and_not(true, true);
}

#[test]
fn a_device_that_migrated_and_one_that_did_not_converge_a_newer() {
    migrated_and_not(false, false);
}

// ---- the reader/writer matrix (docs/migrations.md, "Session descriptors") ----

/// old reader × old writer × old data: a version-1 reader reads what version-1 terminals wrote.
#[test]
fn matrix_old_reader_old_writer_old_data() {
    for (name, bytes) in samples("v1") {
        let read = v1::read(&bytes);
        assert_eq!(read.is_ok(), written_by_v1(&name), "{name}: {read:?}");
    }
}

/// old reader × new writer × old or new data: what shelldone writes over version-1 data (the
/// migration, a merge) is version 2, which a version-1 reader reads as the same tabs and panes.
#[test]
fn matrix_old_reader_new_writer() {
    let new = samples("v2");
    for (name, old) in samples("v1").iter().filter(|(n, _)| written_by_v1(n)) {
        let before = v1::read(old).unwrap();
        let after = v1::read(&new[name]).unwrap();
        assert_eq!(
            after,
            v1::Descriptor {
                schema: None,
                ..before
            },
            "{name}"
        );
    }
}

/// old writer × new data (the case easy to miss): a version-1 terminal rewrites a version-2
/// descriptor with its own fields only, dropping pane ids and restore blocks. Both readers read
/// it; the next migration (or merge) gives the panes the same ids again.
#[test]
fn matrix_old_writer_new_data() {
    let new = samples("v2");
    for (name, _) in samples("v1").iter().filter(|(n, _)| written_by_v1(n)) {
        let rewritten = v1::write(&v1::read(&new[name]).unwrap());
        assert_eq!(desc::version_of(&rewritten), Ok(desc::V1), "{name}");
        // Old reader: reads it.
        v1::read(&rewritten).unwrap();
        // New reader: reads it through the step, with the ids the migration gave.
        let got = reader::read(name, &rewritten).unwrap();
        let want = reader::read(name, &new[name]).unwrap();
        assert_eq!((got.from, want.from), (desc::V1, desc::V2));
        let ids = |d: &reader::Descriptor| -> Vec<String> {
            d.tabs
                .iter()
                .flat_map(|t| t.panes.iter().map(|p| p.id.clone()))
                .collect()
        };
        assert_eq!(ids(&got.descriptor), ids(&want.descriptor), "{name}");
    }
}

/// new reader × old writer × old data, and × new data: both versions read, to the same
/// contents.
#[test]
fn matrix_new_reader_old_and_new_data() {
    let new = samples("v2");
    for (name, old) in samples("v1") {
        let (a, b) = (reader::read(&name, &old), reader::read(&name, &new[&name]));
        if !written_by_v1(&name) {
            // Shapes no terminal writes: stored and upgraded, but not a descriptor to read.
            assert!(
                matches!(
                    (&a, &b),
                    (
                        Err(reader::DescriptorError::Shape(_)),
                        Err(reader::DescriptorError::Shape(_))
                    )
                ),
                "{name}: {a:?} {b:?}"
            );
            continue;
        }
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.from, b.from), (desc::V1, desc::V2), "{name}");
        assert_eq!(a.descriptor, b.descriptor, "{name}");
    }
}

/// new writer × new data: the migration run again changes nothing.
#[test]
fn matrix_new_writer_new_data() {
    let sb = fixture("live-v1");
    migrate_live_descriptors(&sb.state(), false).unwrap();
    let once = sb.live();
    let again = migrate_live_descriptors(&sb.state(), false).unwrap();
    assert!(again.upgraded.is_empty(), "{again:?}");
    assert_eq!(again.current, 7);
    assert_same(&sb.live(), &once);
}

/// new reader × newer data (a descriptor of a version this binary does not know): refused by
/// the reader with both versions named, never rewritten by the migration, and stored and
/// restored byte for byte.
#[test]
fn matrix_new_reader_newer_data() {
    let sb = Sandbox::new();
    sb.generate();
    let newer = b"{\"schema_version\":3,\"layout\":{\"kind\":\"tiling\"},\"tabs\":\"v3 knows\"}\n";
    let p = sb.state().join("sessions/s001/session.json");
    std::fs::write(&p, newer).unwrap();
    let err = reader::read("s001", newer).unwrap_err().to_string();
    assert!(
        err.contains("version 3") && err.contains("versions 1 to 2"),
        "{err}"
    );
    let saved = sb.save("a newer descriptor");
    let r = migrate_live_descriptors(&sb.state(), false).unwrap();
    assert_eq!(r.skipped.len(), 1, "{r:?}");
    assert!(r.skipped[0].why.contains("version 3 is newer"), "{r:?}");
    assert_eq!(std::fs::read(&p).unwrap(), newer);
    std::fs::write(&p, "{\"schema\":1}").unwrap();
    sb.save("overwritten");
    let got = restored_to(&sb, &saved, "newer");
    assert_eq!(file(&got, "state/sessions/s001/session.json"), newer);
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
}

// ---- crash safety of the live migration ----

/// The child process of `a_migration_killed_at_any_moment_is_finished_by_the_next_run`:
/// migrates the state dir it is given. Not a test of its own.
#[test]
#[ignore = "run only as the child of a_migration_killed_at_any_moment_is_finished_by_the_next_run"]
fn migration_child() {
    let dir = std::env::var_os("SHELLDONE_DESCRIPTOR_CHILD").expect("a state dir to migrate");
    // The function `shelldone migrate` calls: each file replaced through the durable layer.
    shelldone::live::descriptors::migrate_live_descriptors(Path::new(&dir), false).unwrap();
}

/// A state dir with `n` version-1 descriptors.
fn many_descriptors(root: &Path, n: usize) -> BTreeMap<String, Vec<u8>> {
    let mut rng = shelldone::demo::Rng::new(17);
    let mut v1s = BTreeMap::new();
    for i in 0..n {
        let id = format!("s{i:03}");
        let d = shelldone::demo::descriptor(&mut rng, &id, 1);
        let rel = format!("sessions/{id}/session.json");
        std::fs::create_dir_all(root.join(format!("sessions/{id}"))).unwrap();
        std::fs::write(root.join(&rel), &d).unwrap();
        v1s.insert(rel, d.into_bytes());
    }
    v1s
}

/// Every file under `root/sessions`: path → bytes.
fn session_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(&root.join("sessions"), "sessions")
        .into_iter()
        .filter_map(|(k, v)| match v {
            Entry::File(b, _) => Some((k, b)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_migration_killed_at_any_moment_is_finished_by_the_next_run() {
    const N: usize = 150;
    let child = |dir: &Path| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "descriptors::migration_child",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env("SHELLDONE_DESCRIPTOR_CHILD", dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long a child takes here, start-up and fsyncs included: the kills fall within it.
    let calib = tempfile::tempdir().unwrap();
    let v1s = many_descriptors(calib.path(), N);
    let start = std::time::Instant::now();
    assert!(child(calib.path()).wait().unwrap().success());
    let full = start.elapsed();
    let done = session_files(calib.path());
    assert_eq!(done.len(), N);
    for (p, b) in &done {
        assert_eq!(
            desc::version_of(b),
            Ok(desc::V2),
            "{p}: {}",
            String::from_utf8_lossy(b)
        );
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}, a child takes {full:?}");
    let mut rng = shelldone::demo::Rng::new(seed);
    let (mut cut_short, mut finished) = (0, 0);
    let mut window = full;
    for _ in 0..12 {
        let d = tempfile::tempdir().unwrap();
        many_descriptors(d.path(), N);
        let mut c = child(d.path());
        std::thread::sleep(std::time::Duration::from_nanos(
            rng.range(0, window.as_nanos() as usize) as u64,
        ));
        let _ = c.kill(); // SIGKILL
        if c.wait().unwrap().success() {
            finished += 1;
            // The child ran faster than the first one (a warm start): kill sooner.
            window = window * 2 / 3;
        } else {
            cut_short += 1;
        }
        // Every descriptor whole: its version-1 bytes or its version-2 bytes; nothing else but
        // at most one temp file of the dead run.
        let got = session_files(d.path());
        let mut upgraded = 0;
        for (p, b) in &got {
            if p.contains("/.shelldone-tmp.") {
                continue;
            }
            assert!(b == &v1s[p] || b == &done[p], "{p} is torn");
            upgraded += usize::from(b == &done[p]);
        }
        assert!(got.len() <= N + 1, "{:?}", got.keys());
        eprintln!("killed with {upgraded} of {N} upgraded");
        // The next run finishes: exactly the result of an uninterrupted one.
        migrate_live_descriptors(d.path(), false).unwrap();
        assert_eq!(session_files(d.path()), done);
    }
    eprintln!("{cut_short} runs killed, {finished} finished before the kill");
    assert!(
        cut_short > 0,
        "no run was cut short: the test proved nothing"
    );
}
