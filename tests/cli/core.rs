//! Issue #2: save → change → save → log → restore, byte for byte; sessions; check; gc.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use crate::support::{Entry, Sandbox, assert_same, object_files};

fn odd_content(sb: &Sandbox) {
    let s = sb.state().join("sessions");
    std::fs::create_dir_all(s.join("s001/nested/deeper/deepest")).unwrap();
    std::fs::create_dir_all(s.join("s001/empty-dir")).unwrap();
    std::fs::write(s.join("s001/nested/empty.txt"), b"").unwrap();
    let binary: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0x00, 0xc3, 0x28]).collect();
    std::fs::write(s.join("s001/nested/deeper/deepest/binary.bin"), &binary).unwrap();
    // A file name that is not UTF-8.
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9-\xff.raw");
    std::fs::write(s.join("s001/nested").join(name), b"latin-1 name").unwrap();
    std::os::unix::fs::symlink("nested/empty.txt", s.join("s001/link")).unwrap();
    let hook = sb.config().join("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn change(sb: &Sandbox) {
    let s = sb.state().join("sessions");
    shelldone::demo::small_change(&sb.config(), &sb.state(), 0).unwrap(); // append journal, 2 descriptors, scrollback +100 KB
    std::fs::write(sb.config().join("config.toml"), "font_size = 15\n").unwrap(); // modify
    std::fs::remove_file(s.join("s004/scrollback.bin")).unwrap(); // delete
    std::fs::remove_dir_all(s.join("s001/empty-dir")).unwrap(); // delete empty dir
    std::fs::create_dir_all(s.join("s077")).unwrap(); // add a session
    std::fs::write(s.join("s077/session.json"), "{\"id\":\"s077\"}").unwrap();
    std::fs::write(s.join("s001/nested/empty.txt"), b"no longer empty").unwrap();
    std::fs::remove_file(s.join("s001/link")).unwrap();
    std::os::unix::fs::symlink("nested", s.join("s001/link")).unwrap(); // retarget a symlink
}

#[test]
fn save_change_save_log_restore_is_byte_identical() {
    let sb = Sandbox::new();
    sb.generate();
    odd_content(&sb);
    let first_tree = sb.live();
    let a = sb.save("first");
    // Nothing changed: no new snapshot, says so, prints the same id.
    let out = sb.ok(&["state", "save"]);
    assert!(out.contains("nothing changed"), "{out}");
    assert_eq!(out.lines().last().unwrap(), a);
    change(&sb);
    let second_tree = sb.live();
    assert_ne!(first_tree, second_tree);
    let b = sb.save("second");
    assert_ne!(a, b);

    let log: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "log"])).unwrap();
    let ids: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![b.as_str(), a.as_str()], "newest first");
    assert_eq!(log[0]["message"], "second");
    assert!(
        log[0]["changes"]["modified"].as_u64().unwrap() >= 4,
        "{}",
        log[0]
    );
    assert!(log[0]["changes"]["deleted"].as_u64().unwrap() >= 1);
    assert!(log[0]["changes"]["added"].as_u64().unwrap() >= 1);
    let human = sb.ok(&["log", "-n", "1", "--full"]);
    assert!(human.contains(&b) && !human.contains(&a), "{human}");

    // Caches and logs are not snapshotted and must survive a restore untouched.
    let cache = std::fs::read(sb.state().join("cache/glyphs.bin")).unwrap();
    sb.ok(&["state", "restore", &a]);
    assert_same(&sb.live(), &first_tree);
    assert_eq!(
        std::fs::read(sb.state().join("cache/glyphs.bin")).unwrap(),
        cache
    );
    assert!(sb.state().join("logs/shelldone.log").exists());

    // Restore by prefix and by REF~N.
    sb.ok(&["state", "restore", &b[..10]]);
    assert_same(&sb.live(), &second_tree);
    // History is now a ← b ← restore(a) ← restore(b) = head; head~1 holds a's tree.
    sb.ok(&["state", "restore", "head~1"]);
    assert_same(&sb.live(), &first_tree);

    let check = sb.ok(&["state", "check"]);
    assert!(check.contains("no problems"), "{check}");
}

#[test]
fn restore_never_rewrites_matching_files() {
    let sb = Sandbox::new();
    sb.generate();
    let a = sb.save("a");
    let untouched = sb.state().join("sessions/s000/scrollback.bin");
    let ino_before = std::fs::metadata(&untouched).unwrap();
    std::fs::write(
        sb.state().join("sessions/s001/session.json"),
        "{\"changed\":true}",
    )
    .unwrap();
    let out: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "state", "restore", &a])).unwrap();
    assert_eq!(out["update"].as_array().unwrap().len(), 1, "{out}");
    assert!(
        out["auto_saved"].is_string(),
        "unsaved change was saved before restoring: {out}"
    );
    let ino_after = std::fs::metadata(&untouched).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        ino_before.ino(),
        ino_after.ino(),
        "matching file was not rewritten"
    );
    assert_eq!(ino_before.mtime_nsec(), ino_after.mtime_nsec());
}

#[test]
fn restore_one_session_touches_nothing_else() {
    let sb = Sandbox::new();
    sb.generate();
    let a = sb.save("a");
    let s1 = sb.state().join("sessions/s001/session.json");
    let s2 = sb.state().join("sessions/s002/session.json");
    let orig1 = std::fs::read(&s1).unwrap();
    std::fs::write(&s1, "{\"v\":2}").unwrap();
    std::fs::write(&s2, "{\"v\":2}").unwrap();
    std::fs::write(
        sb.state().join("sessions/s001/extra.txt"),
        "new file in session",
    )
    .unwrap();
    std::fs::write(sb.config().join("config.toml"), "changed = true\n").unwrap();
    let dry = sb.ok(&["state", "restore", &a, "--session", "s001", "--dry-run"]);
    assert!(
        dry.contains("update state/sessions/s001/session.json"),
        "{dry}"
    );
    assert!(
        dry.contains("delete state/sessions/s001/extra.txt"),
        "{dry}"
    );
    assert_eq!(
        std::fs::read(&s1).unwrap(),
        b"{\"v\":2}",
        "dry run changed nothing"
    );
    sb.ok(&["state", "restore", &a, "--session", "s001"]);
    assert_eq!(std::fs::read(&s1).unwrap(), orig1);
    assert!(!sb.state().join("sessions/s001/extra.txt").exists());
    assert_eq!(
        std::fs::read(&s2).unwrap(),
        b"{\"v\":2}",
        "other session untouched"
    );
    assert_eq!(
        std::fs::read(sb.config().join("config.toml")).unwrap(),
        b"changed = true\n",
        "config untouched"
    );
    // The restore saved and recorded s001 only (docs/adr/0008): s002's change is still
    // unsaved, so its history is the first save alone, until a save records it.
    let log: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "log", "--session", "s002"])).unwrap();
    assert_eq!(
        log.as_array().unwrap().len(),
        1,
        "s002: the first save only: {log}"
    );
    sb.save("s002 now");
    let log: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "log", "--session", "s002"])).unwrap();
    assert_eq!(
        log.as_array().unwrap().len(),
        2,
        "s002: and the save: {log}"
    );
    let unknown = sb.run(&["state", "restore", &a, "--session", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no session 'nope'"));
}

/// The files of `dir` (a live root) as `label/…` paths, for comparing with `restore --to`.
fn files_of(sb: &Sandbox, rev: &str, name: &str) -> std::collections::BTreeMap<String, Entry> {
    let dir = sb.dir.path().join(name);
    sb.ok(&["state", "restore", rev, "--to", dir.to_str().unwrap()]);
    let mut m = crate::support::tree(&dir.join("config"), "config");
    m.extend(crate::support::tree(
        &dir.join("state/sessions"),
        "state/sessions",
    ));
    m.extend(crate::support::tree(
        &dir.join("state/journal"),
        "state/journal",
    ));
    m
}

#[test]
fn session_restore_saves_the_sessions_unsaved_changes_first_and_only_them() {
    let sb = Sandbox::new();
    sb.generate();
    let a = sb.save("a");
    let at_a = sb.live();
    let s1 = sb.state().join("sessions/s001/session.json");
    let s2 = sb.state().join("sessions/s002/session.json");
    std::fs::write(&s1, "{\"unsaved\":1}").unwrap();
    std::fs::write(sb.state().join("sessions/s001/new.txt"), "new in s001").unwrap();
    std::fs::write(&s2, "{\"unsaved\":2}").unwrap();
    std::fs::write(sb.config().join("config.toml"), "outside = true\n").unwrap();
    let edited = sb.live();
    let out: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "state", "restore", &a, "--session", "s001"]))
            .unwrap();
    // (a) The session's unsaved changes were saved first, and can be got back.
    let auto = out["auto_saved"].as_str().expect("an auto-save").to_owned();
    let new_head = out["new_head"].as_str().expect("a new head").to_owned();
    let saved = files_of(&sb, &auto, "auto");
    for k in [
        "state/sessions/s001/session.json",
        "state/sessions/s001/new.txt",
    ] {
        assert_eq!(saved.get(k), edited.get(k), "{k} in the auto-save");
    }
    // (b) ... and nothing outside the session: the auto-save and the new head hold the
    // other files as the head had them, and the live ones are untouched.
    let recorded = files_of(&sb, &new_head, "new-head");
    for k in ["state/sessions/s002/session.json", "config/config.toml"] {
        assert_eq!(
            saved.get(k),
            at_a.get(k),
            "{k}: not recorded by the auto-save"
        );
        assert_eq!(
            recorded.get(k),
            at_a.get(k),
            "{k}: not recorded by the restore"
        );
    }
    assert_same(&recorded, &at_a);
    let live = sb.live();
    assert_eq!(std::fs::read(&s2).unwrap(), b"{\"unsaved\":2}");
    assert_eq!(
        std::fs::read(sb.config().join("config.toml")).unwrap(),
        b"outside = true\n"
    );
    // The session is back as it was in a.
    for (k, v) in &at_a {
        if k.starts_with("state/sessions/s001") {
            assert_eq!(live.get(k), Some(v), "{k}");
        }
    }
    assert!(!live.contains_key("state/sessions/s001/new.txt"));
    // Refs: s001's moved to the restore, s002's did not move.
    let s1_ref = sb.ok(&["log", "-n", "1", "--json", "--session", "s001"]);
    assert!(s1_ref.contains(&new_head), "{s1_ref}");
    let s2_log: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "log", "--session", "s002"])).unwrap();
    assert_eq!(s2_log.as_array().unwrap().len(), 1, "{s2_log}");
    // Getting the unsaved edit back: restore the auto-save's session.
    sb.ok(&["state", "restore", &auto, "--session", "s001"]);
    assert_eq!(std::fs::read(&s1).unwrap(), b"{\"unsaved\":1}");
    assert_eq!(
        std::fs::read(sb.state().join("sessions/s001/new.txt")).unwrap(),
        b"new in s001"
    );
    // The whole-state check still passes: the grafted snapshots are ordinary ones.
    let check = sb.ok(&["state", "check"]);
    assert!(check.contains("no problems"), "{check}");
    // And a save now records exactly what the restores left unsaved.
    let o: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "state", "save"])).unwrap();
    assert_eq!(o["created"], true, "{o}");
    assert_same(&files_of(&sb, "head", "after-save"), &sb.live());
}

/// The files a scoped restore read, from its progress events: the `save` phase's total (the
/// safety save's scan) and the `restore` phase's (files written).
fn restore_counts(sb: &Sandbox, args: &[&str]) -> (u64, u64) {
    let mut all = vec!["--json", "--progress", "always", "state", "restore"];
    all.extend_from_slice(args);
    let o = sb
        .cmd(&all)
        .env("SHELLDONE_PROGRESS_INTERVAL", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?}: {err}");
    let total = |phase: &str| {
        err.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["progress"] == phase && v["done"] == true)
            .map(|v| v["objects_total"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    (total("save"), total("restore"))
}

#[test]
fn a_session_restore_reads_the_session_not_the_state() {
    let sb = Sandbox::new();
    sb.generate();
    // Many more files in other sessions than in s001.
    let add_sessions = |from: usize, to: usize| {
        for i in from..to {
            let d = sb.state().join(format!("sessions/x{i:03}"));
            std::fs::create_dir_all(&d).unwrap();
            for f in 0..20 {
                std::fs::write(d.join(format!("f{f}.txt")), format!("{i} {f}")).unwrap();
            }
        }
    };
    add_sessions(0, 10);
    let a = sb.save("a");
    let session_files = sb
        .live()
        .iter()
        .filter(|(k, e)| k.starts_with("state/sessions/s001") && !matches!(e, Entry::Dir))
        .count() as u64;
    let all_files = sb
        .live()
        .values()
        .filter(|e| !matches!(e, Entry::Dir))
        .count() as u64;
    assert!(
        all_files > 10 * session_files,
        "{all_files} vs {session_files}"
    );
    let s1 = sb.state().join("sessions/s001/session.json");
    std::fs::write(&s1, "{\"v\":1}").unwrap();
    // The safety save looks at s001's files only, and the restore writes one file.
    assert_eq!(
        restore_counts(&sb, &[&a, "--session", "s001"]),
        (session_files, 1)
    );
    // Ten times the other sessions: the same counts.
    add_sessions(10, 100);
    sb.save("more");
    std::fs::write(&s1, "{\"v\":2}").unwrap();
    assert_eq!(
        restore_counts(&sb, &[&a, "--session", "s001"]),
        (session_files, 1)
    );
    // The counter counts: a whole restore's safety save looks at every file.
    std::fs::write(&s1, "{\"v\":3}").unwrap();
    let (scanned, written) = restore_counts(&sb, &["head"]);
    assert!(scanned > 100 * 20, "{scanned}");
    assert_eq!(written, 1);
    // A --path restore reads only that path.
    std::fs::write(&s1, "{\"v\":4}").unwrap();
    assert_eq!(
        restore_counts(&sb, &[&a, "--path", "state/sessions/s001/session.json"]),
        (1, 1)
    );
}

#[test]
fn restore_to_dir_leaves_live_state_alone() {
    let sb = Sandbox::new();
    sb.generate();
    let before = sb.live();
    let a = sb.save("a");
    std::fs::write(sb.config().join("config.toml"), "x = 1\n").unwrap();
    let target = sb.dir.path().join("elsewhere");
    sb.ok(&["state", "restore", &a, "--to", target.to_str().unwrap()]);
    let mut got = crate::support::tree(&target.join("config"), "config");
    got.extend(crate::support::tree(
        &target.join("state/sessions"),
        "state/sessions",
    ));
    got.extend(crate::support::tree(
        &target.join("state/journal"),
        "state/journal",
    ));
    assert_same(&got, &before);
    assert!(
        !target.join("state/cache").exists(),
        "only snapshotted folders are written"
    );
    assert_eq!(
        std::fs::read(sb.config().join("config.toml")).unwrap(),
        b"x = 1\n"
    );
}

#[test]
fn check_detects_any_flipped_byte_and_gc_keeps_what_is_reachable() {
    let sb = Sandbox::new();
    sb.generate();
    sb.save("a");
    shelldone::demo::small_change(&sb.config(), &sb.state(), 1).unwrap();
    sb.save("b");
    let files = object_files(&sb.state());
    assert!(files.len() > 20);
    for f in &files {
        let orig = std::fs::read(f).unwrap();
        let mut bad = orig.clone();
        let i = orig.len() / 2;
        bad[i] ^= 0x01;
        std::fs::write(f, &bad).unwrap();
        let o = sb.run(&["state", "check"]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "flip in {} not detected: {}",
            f.display(),
            String::from_utf8_lossy(&o.stdout)
        );
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("error:") && text.contains("problem"),
            "{text}"
        );
        // A random byte elsewhere, a truncation and a deletion are each found too.
        let j = (orig.len() * 7 + 3) % orig.len();
        let mut bad = orig.clone();
        bad[j] = bad[j].wrapping_add(1 + (j as u8 % 254));
        std::fs::write(f, &bad).unwrap();
        assert_eq!(
            sb.run(&["state", "check"]).status.code(),
            Some(3),
            "byte {j} of {}",
            f.display()
        );
        std::fs::write(f, &orig[..orig.len() - 1]).unwrap();
        assert_eq!(
            sb.run(&["state", "check"]).status.code(),
            Some(3),
            "truncated {}",
            f.display()
        );
        std::fs::remove_file(f).unwrap();
        let o = sb.run(&["state", "check"]);
        assert_eq!(o.status.code(), Some(3), "deleted {}", f.display());
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("is missing"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        std::fs::write(f, &orig).unwrap();
    }
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    // gc: an unreachable object goes, everything reachable stays.
    let before = object_files(&sb.state()).len();
    let junk = sb.state().join("snapshots/objects/00");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("a".repeat(62)), b"unreferenced").unwrap();
    let gc: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "state", "gc"])).unwrap();
    assert_eq!(gc["deleted"], 1, "{gc}");
    assert_eq!(object_files(&sb.state()).len(), before);
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
}

#[test]
fn show_and_diff_list_changes_and_bad_revisions_fail_clearly() {
    let sb = Sandbox::new();
    sb.generate();
    let a = sb.save("a");
    std::fs::write(sb.config().join("new.toml"), "k = 1\n").unwrap();
    let b = sb.save("b");
    let diff = sb.ok(&["state", "diff", &a, &b]);
    assert!(diff.contains("A config/new.toml"), "{diff}");
    let show = sb.ok(&["show", "--full", "head"]);
    assert!(
        show.contains(&b) && show.contains("A config/new.toml"),
        "{show}"
    );
    let o = sb.run(&["state", "restore", "deadbeef"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: unknown revision 'deadbeef'"));
    let o = sb.run(&["--json", "show", "nope"]);
    let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(e["exit_code"], 2);
}

#[test]
fn log_of_empty_store_and_entry_kinds() {
    let sb = Sandbox::new();
    assert!(sb.ok(&["log"]).contains("no snapshots yet"));
    let o = sb.run(&["state", "restore"]);
    assert_eq!(o.status.code(), Some(2));
    // An empty state still saves (the root folders exist as empty trees).
    let id = sb.save("empty");
    assert_eq!(id.len(), 64);
    let _ = Entry::Dir;
}

#[test]
fn check_detects_flips_and_truncations_in_packs() {
    let sb = Sandbox::new();
    // Big enough that the first save is written as a pack.
    let spec = shelldone::demo::DemoSpec {
        sessions: 6,
        journals: 2,
        journal_lines: 800,
        min_scrollback: 200_000,
        max_scrollback: 400_000,
        seed: 5,
    };
    shelldone::demo::generate(&sb.config(), &sb.state(), &spec).unwrap();
    sb.save("packed");
    let packs: Vec<_> = std::fs::read_dir(sb.state().join("snapshots/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(packs.len(), 2, "one pack and its index: {packs:?}");
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    for p in &packs {
        let orig = std::fs::read(p).unwrap();
        // Start, middle, end, and a few spread positions.
        let n = orig.len();
        for pos in [0, 9, 20, n / 3, n / 2, n - 40, n - 1] {
            let mut bad = orig.clone();
            bad[pos] ^= 0x40;
            std::fs::write(p, &bad).unwrap();
            let o = sb.run(&["state", "check"]);
            assert_eq!(
                o.status.code(),
                Some(3),
                "flip at {pos} of {} not detected",
                p.display()
            );
        }
        std::fs::write(p, &orig[..n - 7]).unwrap();
        assert_eq!(
            sb.run(&["state", "check"]).status.code(),
            Some(3),
            "truncation of {} not detected",
            p.display()
        );
        std::fs::write(p, &orig).unwrap();
    }
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    // A restore from the pack is byte-identical, and gc of a store with packs keeps everything.
    let before = sb.live();
    std::fs::remove_dir_all(sb.state().join("sessions/s002")).unwrap();
    sb.ok(&["state", "restore"]);
    assert_same(&sb.live(), &before);
    sb.ok(&["state", "gc"]);
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    // gc --repack recompresses everything into one smaller pack; nothing is lost.
    let size = |sb: &Sandbox| -> u64 {
        walkdir::WalkDir::new(sb.state().join("snapshots"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_type().is_file()
                    && e.path()
                        .components()
                        .any(|c| c.as_os_str() == "packs" || c.as_os_str() == "objects")
            })
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let before_size = size(&sb);
    let r: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "state", "gc", "--repack"])).unwrap();
    assert!(r["repacked"].as_u64().unwrap() > 64, "{r}");
    assert!(
        size(&sb) < before_size,
        "repacked store is smaller: {} vs {before_size}",
        size(&sb)
    );
    assert_eq!(
        std::fs::read_dir(sb.state().join("snapshots/packs"))
            .unwrap()
            .count(),
        2,
        "one pack + index"
    );
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    std::fs::remove_dir_all(sb.state().join("sessions")).unwrap();
    sb.ok(&["state", "restore"]);
    assert_same(&sb.live(), &before);
}

#[test]
fn restore_from_a_damaged_snapshot_changes_nothing_and_blocks_nothing() {
    let sb = Sandbox::new();
    sb.generate();
    let a = sb.save("a");
    // Change every descriptor so the restore must write them, then damage one object it needs.
    for s in 0..5 {
        std::fs::write(
            sb.state().join(format!("sessions/s{s:03}/session.json")),
            format!("{{\"v\":{s}}}"),
        )
        .unwrap();
    }
    std::fs::create_dir_all(sb.state().join("sessions/s001/new-dir")).unwrap();
    sb.save("b");
    let live_before = sb.live();
    // Find the object file of s003's descriptor in snapshot a and delete it.
    let show: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "show", &a])).unwrap();
    assert!(show["id"].is_string());
    let mut removed = 0;
    for f in object_files(&sb.state()) {
        let raw = std::fs::read(&f).unwrap();
        let plain = zstd::bulk::decompress(&raw, 1 << 20).unwrap_or_default();
        if plain.ends_with(b"\"id\":\"s003\",\"version\":1,")
            || String::from_utf8_lossy(&plain).contains("\"id\":\"s003\"")
        {
            std::fs::remove_file(&f).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 1, "found s003's descriptor blob");
    let o = sb.run(&["state", "restore", &a]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing from the store"));
    assert_same(&sb.live(), &live_before);
    assert!(!sb.state().join("snapshots/restore-intent").exists());
    let log = sb.run(&["log"]);
    assert!(log.status.success(), "later commands are not blocked");
    assert_eq!(sb.run(&["state", "check"]).status.code(), Some(3));
}

#[test]
fn dry_run_to_dir_creates_nothing() {
    let sb = Sandbox::new();
    sb.generate();
    sb.save("a");
    let to = sb.dir.path().join("nowhere");
    let out = sb.ok(&[
        "state",
        "restore",
        "--to",
        to.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(out.contains("would"), "{out}");
    assert!(!to.exists());
}

#[test]
fn a_closed_stdout_ends_the_command_quietly_with_141() {
    let sb = Sandbox::new();
    sb.generate();
    sb.save("one");
    std::fs::write(sb.config().join("new.toml"), "k = 1\n").unwrap();
    sb.save("two");
    // `shelldone log | head -0`: the reader is gone before the first line is written.
    for args in [&["log"][..], &["--json", "log"], &["show", "head"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = sb.cmd(args).stdout(writer).output().unwrap();
        assert_eq!(o.status.code(), Some(141), "{args:?}: {o:?}");
        assert!(o.stderr.is_empty(), "{args:?}: {o:?}");
    }
}
