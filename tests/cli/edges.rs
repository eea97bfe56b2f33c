//! Issue #12, "honest edges": a file that changes while it is saved, sparse files, file modes,
//! and I/O errors that name the path and the operation.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::Sandbox;

const MIB: u64 = 1 << 20;

/// A file appended to for the whole save: read twice, changed both times, it is reported, and
/// the snapshot holds the bytes of one read (a prefix of the file, as only appends happen) with
/// the matching size.
#[test]
fn a_file_appended_during_the_save_is_reported_and_saved_consistently() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.config()).unwrap();
    std::fs::write(sb.config().join("small.toml"), "k = 1\n").unwrap();
    let big = sb.config().join("growing.log");
    // Non-zero, varied bytes, large enough that reading it takes a while.
    let mut rng = shelldone::demo::Rng::new(7);
    let start: Vec<u8> = (0..6 * MIB)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect();
    std::fs::write(&big, &start).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let big = big.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
            let line = [b'x'; 4096];
            // Bounded: at most 100 000 appends (400 MB), ~4 KiB every 200 µs.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                f.write_all(&line).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    // The writer is running before the save starts.
    while std::fs::metadata(&big).unwrap().len() == start.len() as u64 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let o = sb.run(&["--json", "state", "save", "-m", "while growing"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let want = format!("file changed while it was saved: {}", big.display());
    assert_eq!(doc["warnings"], serde_json::json!([want]), "{err}");
    assert!(err.contains(&format!("warning: {want}")), "{err}");
    let id = doc["id"].as_str().unwrap();
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    // What was saved is one read: a prefix of the final file, at least the starting content.
    let out = tempfile::tempdir().unwrap();
    sb.ok(&["state", "restore", id, "--to", out.path().to_str().unwrap()]);
    let saved = std::fs::read(out.path().join("config/growing.log")).unwrap();
    let now = std::fs::read(&big).unwrap();
    assert!(saved.len() > start.len(), "the appends were being read");
    assert!(saved.len() < now.len(), "the save ended before the writer");
    assert!(now.starts_with(&saved), "the saved bytes are one read's");
    assert_eq!(
        std::fs::read(out.path().join("config/small.toml")).unwrap(),
        b"k = 1\n"
    );
    // Once the file is still, the next save reads it once, reports nothing and records it.
    let o = sb.run(&["--json", "state", "save"]);
    assert!(o.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["warnings"], serde_json::json!([]));
    assert_eq!(doc["changes"]["modified"], 1);
}

/// Allocated bytes of a file (`st_blocks` counts 512-byte units).
fn allocated(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// A sparse 64 MiB file with a few bytes of data comes back sparse, live and with `--to`.
#[test]
fn a_sparse_file_stays_sparse_on_restore() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.config()).unwrap();
    let p = sb.config().join("sparse.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(64 * MIB).unwrap();
    {
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 10 * MIB + 5).unwrap();
        f.write_all_at(&[7u8; 9000], 40 * MIB - 3).unwrap();
    }
    drop(f);
    let want = std::fs::read(&p).unwrap();
    assert!(
        allocated(&p) < MIB,
        "the filesystem under the temp dir keeps holes"
    );
    let id = sb.save("sparse");
    std::fs::remove_file(&p).unwrap();
    sb.ok(&["state", "restore", &id]);
    assert_eq!(std::fs::read(&p).unwrap(), want);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 64 * MIB);
    assert!(
        allocated(&p) < MIB,
        "restored sparse: {} bytes",
        allocated(&p)
    );
    let out = tempfile::tempdir().unwrap();
    sb.ok(&[
        "state",
        "restore",
        &id,
        "--to",
        out.path().to_str().unwrap(),
    ]);
    let q = out.path().join("config/sparse.img");
    assert_eq!(std::fs::read(&q).unwrap(), want);
    assert!(
        allocated(&q) < MIB,
        "restored sparse: {} bytes",
        allocated(&q)
    );
    // A file ending in data and one that is all zeros (a hole only) are right too.
    std::fs::write(sb.config().join("zeros.bin"), vec![0u8; 3 * 4096 + 17]).unwrap();
    let id = sb.save("zeros");
    std::fs::remove_file(sb.config().join("zeros.bin")).unwrap();
    sb.ok(&["state", "restore", &id]);
    assert_eq!(
        std::fs::read(sb.config().join("zeros.bin")).unwrap(),
        vec![0u8; 3 * 4096 + 17]
    );
}

fn mode_of(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// File modes come back as they were saved (SPEC §6.1, ADR 0006): 0644, 0755, 0600, 0640,
/// restored live and with `--to`; setuid is never restored; a chmod alone is a change.
#[test]
fn file_modes_are_recorded_and_restored() {
    let sb = Sandbox::new();
    let files = [
        ("config/prefs.toml", 0o644),
        ("config/hooks/run.sh", 0o755),
        ("config/secret.key", 0o600),
        ("config/group.toml", 0o640),
        ("state/sessions/s1.json", 0o644),
        ("state/journal/2026.log", 0o600),
    ];
    let abs = |rel: &str| match rel.strip_prefix("config/") {
        Some(r) => sb.config().join(r),
        None => sb.state().join(rel.strip_prefix("state/").unwrap()),
    };
    for (rel, mode) in files {
        let p = abs(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("{{\"path\": \"{rel}\"}}\n")).unwrap();
        chmod(&p, mode);
    }
    let setuid = sb.config().join("setuid.sh");
    std::fs::write(&setuid, "#!/bin/sh\n").unwrap();
    chmod(&setuid, 0o4755);
    let id = sb.save("modes");
    for (rel, _) in files {
        std::fs::remove_file(abs(rel)).unwrap();
    }
    std::fs::remove_file(&setuid).unwrap();
    sb.ok(&["state", "restore", &id]);
    for (rel, mode) in files {
        assert_eq!(mode_of(&abs(rel)), mode, "{rel} restored live");
    }
    assert_eq!(mode_of(&setuid), 0o755, "setuid is never restored");
    let out = tempfile::tempdir().unwrap();
    sb.ok(&[
        "state",
        "restore",
        &id,
        "--to",
        out.path().to_str().unwrap(),
    ]);
    for (rel, mode) in files {
        assert_eq!(mode_of(&out.path().join(rel)), mode, "{rel} restored --to");
    }
    // A chmod alone is a change: saved, and undone by a restore of the earlier snapshot.
    chmod(&abs("config/secret.key"), 0o644);
    let o = sb.ok(&["--json", "state", "save"]);
    let doc: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(doc["created"], true, "{o}");
    assert_eq!(doc["changes"]["modified"], 1, "{o}");
    sb.ok(&["state", "restore", &id]);
    assert_eq!(mode_of(&abs("config/secret.key")), 0o600);
    // And an unchanged state saves nothing.
    let o = sb.ok(&["--json", "state", "save"]);
    let doc: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(doc["created"], false, "{o}");
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
}

/// A snapshot written before modes were recorded (the frozen version-1 store) restores as it
/// always did: files owner-only, 0600 or 0700 by the executable flag.
#[test]
fn an_old_snapshot_restores_owner_only_modes() {
    let sb = crate::compat::fixture("store-v1");
    let out = tempfile::tempdir().unwrap();
    sb.ok(&["state", "restore", "--to", out.path().to_str().unwrap()]);
    let mut seen = 0;
    for e in walkdir::WalkDir::new(out.path()) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let m = mode_of(e.path());
            assert!(m == 0o600 || m == 0o700, "{}: {m:o}", e.path().display());
            seen += 1;
        }
    }
    assert!(seen > 3, "the fixture has files ({seen})");
}

/// Fills the filesystem holding `dir` with a file `dir/filler` until it is full.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0x5a_u8; 64 * 1024];
    // Bounded: a tmpfs of a few MiB is full long before 4 GiB.
    for _ in 0..65_536 {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    // Fill the last partial block too.
    for _ in 0..65_536 {
        if f.write_all(&[0x5a]).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
    p
}

/// The one line of a failed command's stderr, checked to name a path under `under`, the
/// operation and "No space left on device".
fn assert_names_path_and_operation(o: &std::process::Output, under: &std::path::Path) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        err.lines().count(),
        1,
        "one line a person can act on: {err}"
    );
    assert!(
        err.trim_end()
            .ends_with("): No space left on device (os error 28)"),
        "the system's error once, after the path and the command: {err}"
    );
    let line = err.trim_end();
    let rest = line.strip_prefix("error: ").expect("an error line");
    let ops = [
        "writing ",
        "creating ",
        "syncing ",
        "renaming into ",
        "replacing ",
    ];
    let op = ops.iter().find(|op| rest.starts_with(**op));
    assert!(op.is_some(), "the operation comes first: {err}");
    let path = &rest[op.unwrap().len()..];
    assert!(
        path.starts_with(under.to_str().unwrap()),
        "the path is named: {err}"
    );
    assert!(
        !path.contains(".shelldone-tmp"),
        "the file meant, not its temp file: {err}"
    );
    err
}

/// A full disk under the state dir: save and restore fail naming the file and the operation,
/// and change nothing (the store checks clean, the live files are as they were).
#[test]
fn a_full_disk_names_the_file_and_the_operation_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(m) = crate::faults::Mount::tmpfs(
        "a_full_disk_names_the_file_and_the_operation_and_changes_nothing",
        &tmp.path().join("small"),
        "4m",
    ) else {
        return;
    };
    let sb = crate::faults::sandbox_with_state_on(&m.0);
    std::fs::create_dir_all(sb.config()).unwrap();
    std::fs::create_dir_all(sb.state().join("sessions")).unwrap();
    let noise = |seed: u64, n: usize| -> Vec<u8> {
        let mut rng = shelldone::demo::Rng::new(seed);
        (0..n.div_ceil(8))
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .take(n)
            .collect()
    };
    let session = sb.state().join("sessions/s1.json");
    // The session held 600 KB of scrollback-like data, then was cleared (the head).
    let big = format!(r#"{{"v": 1, "scrollback": "{}"}}"#, "x".repeat(600_000));
    std::fs::write(&session, &big).unwrap();
    std::fs::write(sb.config().join("a.toml"), "a = 1\n").unwrap();
    let first = sb.save("first");
    std::fs::write(&session, br#"{"v": 2}"#).unwrap();
    let second = sb.save("second");
    let filler = fill(&m.0);
    // Nearly full: room for a small file (a batch's first page, the stat cache, the restore
    // intent), none for the content below.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    f.set_len(f.metadata().unwrap().len() - 128 * 1024).unwrap();
    drop(f);

    // Save: new incompressible content in config/ (not on the small disk) cannot be stored.
    std::fs::write(sb.config().join("noise.bin"), noise(3, 400_000)).unwrap();
    let o = sb.run(&["state", "save"]);
    let err = assert_names_path_and_operation(&o, &sb.state());
    assert!(err.contains("(storing objects)"), "{err}");
    std::fs::remove_file(sb.config().join("noise.bin")).unwrap();

    // Restore of the first snapshot: the session's 600 KB must be written next to it.
    let before = sb.live();
    let o = sb.run(&["state", "restore", &first]);
    let err = assert_names_path_and_operation(&o, &sb.state());
    assert!(
        err.contains(&format!("{} (restore)", session.display())),
        "{err}"
    );
    assert_eq!(sb.live(), before, "the live files are as they were");
    std::fs::remove_file(&filler).unwrap();
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    let log: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "log"])).unwrap();
    assert_eq!(log[0]["id"], second.as_str(), "nothing was recorded");
    // With room again, the same restore works.
    sb.ok(&["state", "restore", &first]);
    assert_eq!(std::fs::read(&session).unwrap(), big.as_bytes());
}

/// `restore --to` a full disk names the file it was restoring.
#[test]
fn restore_to_a_full_disk_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(m) = crate::faults::Mount::tmpfs(
        "restore_to_a_full_disk_names_the_file",
        &tmp.path().join("target"),
        "2m",
    ) else {
        return;
    };
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.config()).unwrap();
    let mut rng = shelldone::demo::Rng::new(5);
    let data: Vec<u8> = (0..400_000)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect();
    std::fs::write(sb.config().join("big.bin"), &data).unwrap();
    let id = sb.save("big");
    let out = m.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    fill(&m.0);
    let o = sb.run(&["state", "restore", &id, "--to", out.to_str().unwrap()]);
    let err = assert_names_path_and_operation(&o, &out);
    assert!(
        err.contains(&format!(
            "{} (restore)",
            out.join("config/big.bin").display()
        )),
        "{err}"
    );
    let left: Vec<_> = walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".shelldone-tmp")
        })
        .collect();
    assert!(left.is_empty(), "temp files removed: {left:?}");
    // The folder was empty: the export that failed takes back everything it wrote.
    let written: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        written.is_empty(),
        "a failed export leaves nothing: {written:?}"
    );
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
}
