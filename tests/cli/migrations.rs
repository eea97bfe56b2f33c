//! Issue #17: `shelldone migrate`, restore points and `--undo`, read-through of an older store,
//! the version re-checked under the lock, migrations killed at random moments
//! (docs/migrations.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::compat::fixture;
use crate::support::Sandbox;

/// Every file under `root` (relative path → bytes); directories only through their files.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.expect("walk");
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(root).expect("under root");
            out.insert(
                rel.to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read"),
            );
        }
    }
    out
}

/// The files of the frozen fixture's store (`fixtures/store-v1/state/snapshots`).
fn fixture_store() -> BTreeMap<String, Vec<u8>> {
    files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/store-v1/state/snapshots"))
}

/// `args` ran by a device that reads remote layouts up to 1 against remote `origin` of layout
/// 2: exit 6, and the message naming both versions.
pub(crate) fn refused_as_newer_remote(args: &[&str], o: &std::process::Output) {
    assert_eq!(o.status.code(), Some(6), "{args:?}: {o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("remote origin is format 2, this shelldone reads up to 1; upgrade shelldone"),
        "{args:?}: {err}"
    );
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn format_of(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.state().join("snapshots/FORMAT")).expect("FORMAT")
}

/// The store without the files a run adds beside the migration (derived or per process).
fn store_files(sb: &Sandbox) -> BTreeMap<String, Vec<u8>> {
    let mut f = files(&sb.state().join("snapshots"));
    f.retain(|k, _| !matches!(k.as_str(), "lock" | "lock.owner" | "statcache"));
    f
}

#[test]
fn migrate_makes_a_restore_point_and_undo_gives_back_the_v1_bytes() {
    let sb = fixture("store-v1");
    let before = files(sb.dir.path());
    assert_eq!(store_files(&sb), fixture_store());

    // --dry-run and --status report the step and change no byte anywhere.
    let dry = json(&sb.ok(&["--json", "migrate", "--dry-run"]));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["from"], "1.0");
    assert_eq!(dry["to"], "2.0");
    assert_eq!(dry["steps"][0]["name"], "store format 1 -> 2");
    assert_eq!(dry["steps"][0]["files"][0], "snapshots/FORMAT");
    assert!(dry["restore_point"].is_null());
    let human = sb.ok(&["migrate", "--dry-run"]);
    assert!(human.contains("would run: store format 1 -> 2"), "{human}");
    let status = json(&sb.ok(&["--json", "migrate", "--status"]));
    assert_eq!(status["format"], "1.0");
    // The store step, then the live session descriptors 1 -> 2 (fixtures/store-v1's are v1).
    assert_eq!(status["pending"].as_array().expect("array").len(), 2);
    assert_eq!(status["restore_points"], serde_json::json!([]));
    assert_eq!(
        files(sb.dir.path()),
        before,
        "dry run and status wrote nothing"
    );

    // The run: one step, one restore point holding the old FORMAT.
    let run = json(&sb.ok(&["--json", "migrate"]));
    assert_eq!(run["dry_run"], false);
    assert_eq!((&run["from"], &run["to"]), (&"1.0".into(), &"2.0".into()));
    assert_eq!(run["restore_point"], "0001-store-1-to-2");
    assert_eq!(format_of(&sb), "shelldone-store 2.0\n");
    let point = sb
        .state()
        .join("snapshots/restore-points/0001-store-1-to-2");
    assert_eq!(
        std::fs::read_to_string(point.join("files/snapshots/FORMAT")).expect("copy"),
        "shelldone-store 1.0\n"
    );
    assert!(point.join("DONE").is_file());
    let descriptor = |sb: &Sandbox| {
        std::fs::read_to_string(sb.state().join("sessions/s001/session.json")).expect("descriptor")
    };
    let fixture_descriptor = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/store-v1/state/sessions/s001/session.json"),
    )
    .expect("fixture descriptor");
    assert!(
        descriptor(&sb).contains("\"schema_version\""),
        "{}",
        descriptor(&sb)
    );
    assert_eq!(
        std::fs::read_to_string(point.join("files/sessions/s001/session.json")).expect("copy"),
        fixture_descriptor,
        "the restore point holds the version-1 descriptor"
    );
    let migrated = store_files(&sb);

    // Again: nothing to do, nothing changes.
    let again = sb.ok(&["migrate"]);
    assert!(
        again.contains("nothing to migrate: store format 2.0"),
        "{again}"
    );
    assert_eq!(store_files(&sb), migrated, "a second run is a no-op");
    let status = json(&sb.ok(&["--json", "migrate", "--status"]));
    assert_eq!(status["pending"], serde_json::json!([]));
    assert_eq!(status["restore_points"][0]["name"], "0001-store-1-to-2");
    assert_eq!(status["restore_points"][0]["done"], true);
    assert!(sb.ok(&["state", "check"]).contains("checked 2 snapshots"));
    assert!(sb.ok(&["log"]).contains("fixture: first save (v1 pack)"));

    // Undo: the store is the frozen version-1 store again, byte for byte.
    let dry = json(&sb.ok(&["--json", "migrate", "--undo", "--dry-run"]));
    assert_eq!((&dry["dry_run"], &dry["to"]), (&true.into(), &"1.0".into()));
    assert_eq!(store_files(&sb), migrated, "undo --dry-run wrote nothing");
    let undo = json(&sb.ok(&["--json", "migrate", "--undo"]));
    assert_eq!(undo["restore_point"], "0001-store-1-to-2");
    assert_eq!(undo["to"], "1.0");
    let undone = undo["files"].as_array().expect("files");
    assert!(undone.contains(&"snapshots/FORMAT".into()), "{undo}");
    assert!(
        undone.contains(&"sessions/s001/session.json".into()),
        "{undo}"
    );
    assert_eq!(
        descriptor(&sb),
        fixture_descriptor,
        "undo gives back the v1 descriptor"
    );
    assert_eq!(
        store_files(&sb),
        fixture_store(),
        "after undo the store holds exactly the version-1 fixture's files"
    );
    // No restore point is left to go back to.
    let o = sb.run(&["migrate", "--undo"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("there is no restore point"),
        "{o:?}"
    );
}

#[test]
fn read_only_commands_read_a_v1_store_through_without_writing() {
    let sb = fixture("store-v1");
    let before = files(sb.dir.path());
    let head = sb.ok(&["log", "--oneline", "-n", "1"]);
    assert!(head.contains("fixture: second save"), "{head}");
    let o = sb.run(&["log"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("read as it is, nothing written"),
        "a note says the store was read through: {o:?}"
    );
    sb.ok(&["show", "head"]);
    assert!(sb.ok(&["state", "check"]).contains("checked 2 snapshots"));
    let diff = sb.ok(&["state", "diff", "head~1", "head"]);
    assert!(diff.contains("config/themes/t07.toml"), "{diff}");
    sb.ok(&["state", "save", "--dry-run"]);
    assert_eq!(
        files(sb.dir.path()),
        before,
        "log, show, state check, state diff and save --dry-run wrote no byte"
    );
    // A write the read-through open cannot do is refused with what to run.
    assert_eq!(format_of(&sb), "shelldone-store 1.0\n");

    // An ordinary write command migrates, after the same restore point.
    let o = sb.run(&["state", "gc"]);
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "upgraded the state store from format 1 to 2; restore point 0001-store-1-to-2"
        ),
        "{err}"
    );
    assert_eq!(format_of(&sb), "shelldone-store 2.0\n");
    sb.ok(&["migrate", "--undo"]);
    assert_eq!(store_files(&sb), fixture_store());
}

/// The versions of the packs in `snapshots/packs/` (the last byte of their magic).
fn pack_versions(sb: &Sandbox) -> Vec<u8> {
    let mut v: Vec<u8> = std::fs::read_dir(sb.state().join("snapshots/packs"))
        .expect("packs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .map(|p| {
            let head = std::fs::read(&p).expect("read pack");
            assert_eq!(&head[..7], b"SDPACK\0", "{}", p.display());
            head[7]
        })
        .collect();
    v.sort_unstable();
    v
}

/// The live files `state restore head --to` writes, by path.
fn exported(sb: &Sandbox, to: &Path) -> BTreeMap<String, crate::support::Entry> {
    sb.ok(&[
        "state",
        "restore",
        "head",
        "--to",
        to.to_str().expect("utf8"),
    ]);
    let mut got = crate::support::tree(&to.join("config"), "config");
    got.extend(crate::support::tree(&to.join("state"), "state"));
    got
}

/// After a migration the store is written with what store format 1 cannot read: a version-2
/// pack (more than `LOOSE_MAX` new objects) and `packed-refs` (more than `PACK_BATCH` session
/// refs moved at once). `migrate --undo` converts them down first (their objects loose, their
/// refs loose), then goes back: the store holds only what format 1 reads (loose objects,
/// version-1 packs, loose refs), with the same history, and restores the same files.
#[test]
fn undo_converts_down_what_the_old_version_cannot_read() {
    let sb = fixture("store-v1");
    sb.ok(&["migrate"]);
    for i in 0..70 {
        std::fs::write(
            sb.config().join(format!("themes/new{i}.toml")),
            format!("name = \"new {i}\"\n"),
        )
        .expect("write");
    }
    for i in 0..40 {
        let dir = sb.state().join(format!("sessions/n{i:03}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("session.json"), format!("{{\"id\":\"n{i:03}\"}}")).expect("write");
    }
    sb.save("after migration");
    let snap = sb.state().join("snapshots");
    assert!(
        snap.join("packed-refs").is_file(),
        "the save packed its refs"
    );
    assert!(
        pack_versions(&sb).contains(&2),
        "the save wrote a version-2 pack"
    );
    let log = sb.ok(&["log"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let files_before = exported(&sb, &tmp.path().join("before"));
    assert!(files_before.contains_key("state/sessions/n039/session.json"));

    // A dry run says what it would convert and changes nothing.
    let before = store_files(&sb);
    let dry = sb.ok(&["migrate", "--undo", "--dry-run"]);
    assert!(
        dry.contains("would convert down packed-refs")
            && dry.contains("would convert down packs/pack-")
            && dry.contains("(version 2)")
            && dry.contains("would go back to restore point 0001-store-1-to-2: store format 1.0"),
        "{dry}"
    );
    assert_eq!(store_files(&sb), before, "a dry run changes nothing");

    let o = sb.run(&["--json", "migrate", "--undo"]);
    assert!(o.status.success(), "{o:?}");
    let doc = json(&String::from_utf8_lossy(&o.stdout));
    let converted: Vec<&str> = doc["converted"]
        .as_array()
        .expect("converted")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect();
    assert!(
        converted.contains(&"packed-refs") && converted.iter().any(|c| c.ends_with("(version 2)")),
        "{doc}"
    );
    assert_eq!(doc["to"], "1.0", "{doc}");
    assert_eq!(format_of(&sb), "shelldone-store 1.0\n");
    // Only what a store format 1 reader reads: version-1 packs, loose objects, loose refs.
    assert!(!snap.join("packed-refs").exists());
    assert!(
        pack_versions(&sb).iter().all(|v| *v == 1),
        "{:?}",
        pack_versions(&sb)
    );
    for i in 0..40 {
        assert!(
            snap.join(format!("refs/sessions/n{i:03}")).is_file(),
            "session ref n{i:03} is loose"
        );
    }
    // The same history, sound, restoring the same files (read through as format 1).
    assert_eq!(sb.ok(&["log"]), log);
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    crate::support::assert_same(&exported(&sb, &tmp.path().join("after")), &files_before);
    assert!(
        !sb.state()
            .join("snapshots/restore-points/0001-store-1-to-2")
            .exists(),
        "the point is gone"
    );
    // Migrating again brings it back up.
    sb.ok(&["migrate"]);
    assert_eq!(format_of(&sb), "shelldone-store 2.0\n");
}

#[test]
fn a_store_migrated_after_open_is_not_written_by_the_old_opener() {
    let sb = Sandbox::new();
    sb.generate();
    sb.save("one");
    let paths = shelldone::Paths {
        config_dir: sb.config(),
        state_dir: sb.state(),
    };
    let format = sb.state().join("snapshots/FORMAT");
    std::fs::write(sb.config().join("changed.toml"), "x = 1\n").expect("write");
    let opts = shelldone::SaveOptions {
        message: "two".into(),
        ..shelldone::SaveOptions::default()
    };
    // Another process migrates the store to a newer format (or undoes a migration) between
    // this process's open and its write: the write is refused and nothing is written.
    for (other, want) in [
        ("shelldone-store 3.0\n", shelldone::ErrorKind::NewerStore),
        ("shelldone-store 2.1\n", shelldone::ErrorKind::NewerStore),
        ("shelldone-store 1.0\n", shelldone::ErrorKind::Data),
    ] {
        let (st, _) = shelldone::State::open(paths.clone()).expect("open");
        std::fs::write(&format, other).expect("write FORMAT");
        let before = store_files(&sb);
        let err = st.save(&opts).expect_err(other);
        assert_eq!(err.kind(), want, "{other}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(other.trim().trim_start_matches("shelldone-store "))
                && msg.contains("2.0"),
            "both versions are named: {msg}"
        );
        assert_eq!(store_files(&sb), before, "{other}: nothing written");
        std::fs::write(&format, "shelldone-store 2.0\n").expect("put back");
    }
    let (st, _) = shelldone::State::open(paths).expect("open");
    st.save(&opts)
        .expect("the same write with the version unchanged");
}

/// Seconds-seeded xorshift: the seed is printed so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn killed_migrations_rerun_to_the_same_result() {
    let iterations: u64 = std::env::var("SHELLDONE_MIGRATE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let seed = std::env::var("SHELLDONE_MIGRATE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("killed_migrations_rerun_to_the_same_result: SHELLDONE_MIGRATE_SEED={seed}");
    let mut rng = Rng(seed);

    // The result of a run left alone, and how long one takes.
    let clean = fixture("store-v1");
    let t = Instant::now();
    clean.ok(&["migrate"]);
    let span = t.elapsed();
    let want = store_files(&clean);
    let point_of = |f: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        f.iter()
            .filter(|(k, _)| k.starts_with("restore-points/") && !k.ends_with("/POINT"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let without_points = |f: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        f.iter()
            .filter(|(k, _)| !k.starts_with("restore-points/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };

    let mut cut = 0;
    let mut stages: BTreeMap<&str, u32> = BTreeMap::new();
    for i in 0..iterations {
        let sb = fixture("store-v1");
        let delay = Duration::from_micros(
            rng.next() % u64::try_from(span.as_micros() * 2).unwrap_or(1).max(1),
        );
        let mut child = sb.cmd(&["migrate"]).spawn().expect("spawn");
        let end = Instant::now() + delay;
        let finished = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status.success();
            }
            if Instant::now() >= end {
                let _ = child.kill(); // SIGKILL
                let _ = child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        if !finished {
            cut += 1;
        }
        // Where the kill left the migration (reported, so that a run that never cut one
        // mid-way shows it).
        let points = sb.state().join("snapshots/restore-points");
        let stage = match std::fs::read_dir(&points) {
            Err(_) => "not started",
            Ok(d) => {
                let names: Vec<String> = d
                    .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect();
                let done = points.join("0001-store-1-to-2/DONE").is_file();
                let v2 = format_of(&sb) == "shelldone-store 2.0\n";
                if names.iter().any(|n| n.starts_with(".shelldone-tmp.")) {
                    "restore point half made"
                } else if names.is_empty() {
                    "not started"
                } else if done {
                    "finished"
                } else if v2 {
                    "step run, point not marked done"
                } else {
                    "restore point made, step not run"
                }
            }
        };
        *stages.entry(stage).or_insert(0u32) += 1;
        // Re-run: the same store, one finished restore point holding the old FORMAT.
        sb.ok(&["migrate"]);
        let got = store_files(&sb);
        assert_eq!(
            without_points(&got),
            without_points(&want),
            "iteration {i} (delay {delay:?}, seed {seed})"
        );
        assert_eq!(
            point_of(&got),
            point_of(&want),
            "iteration {i} (seed {seed})"
        );
        let leftovers: Vec<_> = std::fs::read_dir(sb.state().join("snapshots/restore-points"))
            .expect("points")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from("0001-store-1-to-2")],
            "iteration {i}: one point, no temp folder (seed {seed})"
        );
        sb.ok(&["migrate", "--undo"]);
        assert_eq!(
            store_files(&sb),
            fixture_store(),
            "iteration {i} (seed {seed})"
        );
    }
    eprintln!(
        "killed_migrations_rerun_to_the_same_result: {cut} of {iterations} runs killed before they finished; left at: {stages:?}"
    );
}

/// Runs `args` in `sb` as a binary whose newest remote layout is `format` (the documented test
/// hook); `None` runs it as it is.
fn run_as(sb: &Sandbox, format: Option<u32>, args: &[&str]) -> std::process::Output {
    let mut c = sb.cmd(args);
    match format {
        Some(v) => c.env("SHELLDONE_TEST_REMOTE_FORMAT", v.to_string()),
        None => c.env_remove("SHELLDONE_TEST_REMOTE_FORMAT"),
    };
    c.output().expect("spawn shelldone")
}

#[test]
fn a_newer_remote_is_refused_and_upgrade_is_on_purpose() {
    let remote = tempfile::tempdir().expect("tempdir");
    let url = remote.path().join("r");
    let url = url.to_str().expect("utf8");
    let marker = remote.path().join("r/shelldone-remote");
    let (new, old) = (Sandbox::new(), Sandbox::new());
    new.generate();
    new.save("from the newer device");
    new.ok(&["remote", "add", "origin", url, "--init"]);
    old.ok(&["remote", "add", "origin", url]);
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker"),
        "shelldone-dir-remote 1\n"
    );

    // A newer device writes the remote at the version it found: the older one still reads it.
    let o = run_as(&new, Some(2), &["sync", "push"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker"),
        "shelldone-dir-remote 1\n",
        "no upgrade without 'remote upgrade'"
    );
    old.ok(&["sync", "pull"]);
    assert!(old.ok(&["log"]).contains("from the newer device"));

    // Upgrading is on purpose; this binary (layout 1) has nothing to upgrade to.
    let same = old.ok(&["remote", "upgrade", "origin"]);
    assert!(
        same.contains("remote 'origin' is format 1: nothing to upgrade"),
        "{same}"
    );
    let o = run_as(&new, Some(2), &["--json", "remote", "upgrade", "origin"]);
    assert!(o.status.success(), "{o:?}");
    let doc = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(
        doc,
        serde_json::json!({"remote": "origin", "from": 1, "to": 2})
    );
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker"),
        "shelldone-dir-remote 2\n"
    );

    // The older device is told, and changes nothing on either side.
    std::fs::write(old.config().join("old.toml"), "x = 1\n").expect("write");
    old.save("from the older device");
    let remote_before = files(remote.path());
    let local_before = store_files(&old);
    for args in [
        &["sync", "push"][..],
        &["sync", "pull"],
        &["remote", "upgrade", "origin"],
    ] {
        refused_as_newer_remote(args, &old.run(args));
        assert_eq!(files(remote.path()), remote_before, "{args:?}: the remote");
        assert_eq!(store_files(&old), local_before, "{args:?}: the local store");
    }
    // The newer device goes on reading and writing it.
    let o = run_as(&new, Some(2), &["sync", "pull"]);
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn a_newer_device_key_record_is_refused_and_left_alone() {
    let sb = Sandbox::new();
    sb.generate();
    sb.save("one");
    let keys = sb.state().join("keys");
    std::fs::create_dir_all(&keys).expect("mkdir");
    let record = br#"{"version":2,"name":"x","shape":"a later one"}"#;
    std::fs::write(keys.join("device.json"), record).expect("write");
    let o = sb.run(&["key", "show"]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("device.json is format 2, this shelldone reads up to 1; upgrade shelldone"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(keys.join("device.json")).expect("read"),
        record
    );
}

#[test]
fn health_check_is_read_only_and_round_trips() {
    let sb = fixture("store-v1");
    let before = files(sb.dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/health-check");
    let o = std::process::Command::new("bash")
        .arg(&script)
        .env("SHELLDONE_BIN", env!("CARGO_BIN_EXE_shelldone"))
        .env("SHELLDONE_STATE_DIR", sb.state())
        .env("SHELLDONE_CONFIG_DIR", sb.config())
        .env("SHELLDONE_HEALTH_SUBSET", "50")
        .output()
        .expect("bash");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        out.contains("restored to a temp dir and read back identical"),
        "{out}"
    );
    let mut after = files(sb.dir.path());
    // The restore's audit line is the only new file, outside the store and the live roots.
    after.remove("state/logs/audit.log");
    assert_eq!(
        after, before,
        "the health check wrote nothing to the store or the live files"
    );
    assert_eq!(
        format_of(&sb),
        "shelldone-store 1.0\n",
        "an older store is read through"
    );

    // The comparison is not vacuous: a byte changed in the export is seen.
    let export = sb.dir.path().join("export");
    let to = export.to_str().expect("utf8");
    sb.ok(&["state", "restore", "head", "--to", to]);
    let theme = export.join("config/themes/t07.toml");
    let mut bytes = std::fs::read(&theme).expect("read");
    bytes[0] ^= 1;
    std::fs::write(&theme, bytes).expect("write");
    let plan = json(&sb.ok(&[
        "--json",
        "state",
        "restore",
        "head",
        "--to",
        to,
        "--dry-run",
    ]));
    assert_eq!(
        plan["update"],
        serde_json::json!(["config/themes/t07.toml"]),
        "{plan}"
    );

    // A store that does not exist is skipped, not created.
    let none = Sandbox::new();
    let o = std::process::Command::new("bash")
        .arg(&script)
        .env("SHELLDONE_BIN", env!("CARGO_BIN_EXE_shelldone"))
        .env("SHELLDONE_STATE_DIR", none.state())
        .env("SHELLDONE_CONFIG_DIR", none.config())
        .output()
        .expect("bash");
    assert!(o.status.success(), "{o:?}");
    assert!(!none.state().exists(), "nothing created");
}

/// `sb` pulled a remote that `fixtures/store-v1`'s device pushed: `log` shows both of its
/// snapshots, the live files are exactly the fixture's (bytes and modes), and `state check`
/// finds no problem.
pub(crate) fn pulled_store_v1(sb: &Sandbox) {
    let log = sb.ok(&["log"]);
    assert!(
        log.contains("fixture: second save (loose objects)")
            && log.contains("fixture: first save (v1 pack)"),
        "{log}"
    );
    let want = fixture("store-v1");
    let mut got = crate::support::tree(&sb.config(), "config");
    let mut live = crate::support::tree(&want.config(), "config");
    for part in ["sessions", "journal"] {
        got.extend(crate::support::tree(
            &sb.state().join(part),
            &format!("state/{part}"),
        ));
        live.extend(crate::support::tree(
            &want.state().join(part),
            &format!("state/{part}"),
        ));
    }
    assert!(!live.is_empty(), "the fixture has live files");
    crate::support::assert_same(&got, &live);
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
}

#[test]
fn a_version_1_directory_remote_still_pulls() {
    let remote = tempfile::tempdir().expect("tempdir");
    crate::support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dir-remote-v1"),
        remote.path(),
    );
    let before = files(remote.path());
    let sb = Sandbox::new();
    sb.ok(&[
        "remote",
        "add",
        "origin",
        remote.path().to_str().expect("utf8"),
    ]);
    sb.ok(&["sync", "pull"]);
    pulled_store_v1(&sb);
    assert_eq!(
        files(remote.path()),
        before,
        "a pull writes nothing to the remote"
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(o.status.success(), "git {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A git remote's mapping version is the ref `refs/shelldone/format/<N>` (absent: 1): a newer
/// one is refused by pull and push before anything moves on the remote.
#[test]
fn a_newer_git_remote_is_refused_before_anything_moves() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("state.git");
    git(tmp.path(), &["init", "-q", "--bare", "state.git"]);
    let sb = Sandbox::new();
    sb.generate();
    sb.save("one");
    sb.ok(&["remote", "add", "origin", repo.to_str().expect("utf8")]);
    sb.ok(&["sync", "push"]);
    let head = git(
        &repo,
        &["for-each-ref", "--format=%(objectname)", "refs/shelldone/"],
    );
    let head = head.lines().next().expect("a pushed ref").to_owned();

    // Version 1 said out loud is version 1.
    git(&repo, &["update-ref", "refs/shelldone/format/1", &head]);
    sb.ok(&["sync", "pull"]);

    git(&repo, &["update-ref", "refs/shelldone/format/2", &head]);
    std::fs::write(sb.config().join("two.toml"), "x = 2\n").expect("write");
    sb.save("two");
    let refs_before = git(&repo, &["show-ref"]);
    for args in [&["sync", "pull"][..], &["sync", "push"]] {
        refused_as_newer_remote(args, &sb.run(args));
        assert_eq!(
            git(&repo, &["show-ref"]),
            refs_before,
            "{args:?}: the remote's refs"
        );
    }
    let o = sb
        .cmd(&["sync", "push"])
        .env("SHELLDONE_TEST_REMOTE_FORMAT", "2")
        .output()
        .expect("spawn");
    assert!(
        o.status.success(),
        "a binary that reads format 2 pushes: {o:?}"
    );
}

/// `remote upgrade` on a git remote (served by a real `git daemon` on 127.0.0.1): a binary
/// whose newest mapping is 2 (the test hook) pushes `refs/shelldone/format/2`; before that it
/// wrote the remote at version 1. Afterwards a binary that reads only version 1 refuses pull,
/// push and upgrade, naming both versions, and nothing moves on either side; the newer one
/// goes on syncing, and the repository stays `git fsck --strict` clean.
#[test]
fn a_git_remote_is_upgraded_on_purpose_and_the_older_device_is_told() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let srv = crate::support::GitDaemon::start(&tmp.path().join("srv"));
    let (url, repo) = srv.repo("state.git");
    let (new, old) = (Sandbox::new(), Sandbox::new());
    new.generate();
    new.save("from the newer device");
    new.ok(&["remote", "add", "origin", &url]);
    old.ok(&["remote", "add", "origin", &url]);
    let format_refs = || {
        git(
            &repo,
            &[
                "for-each-ref",
                "--format=%(refname)",
                "refs/shelldone/format/",
            ],
        )
    };

    // A newer device writes the remote at the version it found: no format ref, version 1.
    let o = run_as(&new, Some(2), &["sync", "push"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(format_refs(), "", "no upgrade without 'remote upgrade'");
    old.ok(&["sync", "pull"]);
    assert!(old.ok(&["log"]).contains("from the newer device"));

    // This binary (mapping 1) has nothing to upgrade to, and pushes nothing.
    let same = old.ok(&["remote", "upgrade", "origin"]);
    assert!(
        same.contains("remote 'origin' is format 1: nothing to upgrade"),
        "{same}"
    );
    assert_eq!(format_refs(), "");

    let o = run_as(&new, Some(2), &["--json", "remote", "upgrade", "origin"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        json(&String::from_utf8_lossy(&o.stdout)),
        serde_json::json!({"remote": "origin", "from": 1, "to": 2})
    );
    assert_eq!(format_refs(), "refs/shelldone/format/2\n");
    assert_eq!(
        git(&repo, &["cat-file", "-p", "refs/shelldone/format/2"]),
        "shelldone-git-remote 2\n"
    );
    // Again: already at 2, nothing pushed.
    let o = run_as(&new, Some(2), &["remote", "upgrade", "origin"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("is format 2: nothing to upgrade"),
        "{o:?}"
    );

    // The older device is told, and changes nothing on either side.
    std::fs::write(old.config().join("old.toml"), "x = 1\n").expect("write");
    old.save("from the older device");
    let remote_before = git(&repo, &["show-ref"]);
    let without_mirror = |mut f: BTreeMap<String, Vec<u8>>| {
        f.retain(|k, _| !k.starts_with("remotes/origin.git/"));
        f
    };
    let local_before = without_mirror(store_files(&old));
    for args in [
        &["sync", "push"][..],
        &["sync", "pull"],
        &["remote", "upgrade", "origin"],
    ] {
        refused_as_newer_remote(args, &old.run(args));
        assert_eq!(
            git(&repo, &["show-ref"]),
            remote_before,
            "{args:?}: the remote"
        );
        // The refs are fetched into the mirror (derived data, `remotes/origin.git`) before
        // the version is known; nothing else changes.
        let local = without_mirror(store_files(&old));
        let differ: Vec<&String> = local
            .keys()
            .chain(local_before.keys())
            .filter(|k| local.get(*k) != local_before.get(*k))
            .collect();
        assert!(
            differ.is_empty(),
            "{args:?}: the local store changed: {differ:?}"
        );
    }
    // The newer device goes on syncing with it; a binary of mapping 3 would upgrade from 2.
    std::fs::write(new.config().join("new.toml"), "y = 2\n").expect("write");
    new.save("after the upgrade");
    for args in [&["sync", "pull"][..], &["sync", "push"]] {
        let o = run_as(&new, Some(2), args);
        assert!(o.status.success(), "{args:?}: {o:?}");
    }
    let o = run_as(&new, Some(3), &["--json", "remote", "upgrade", "origin"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        json(&String::from_utf8_lossy(&o.stdout)),
        serde_json::json!({"remote": "origin", "from": 2, "to": 3})
    );
    assert_eq!(
        format_refs(),
        "refs/shelldone/format/3\n",
        "the older format ref goes in the same push"
    );
    git(&repo, &["fsck", "--strict", "--no-dangling"]);
}

/// `fixtures/git-remote-v1` (a bare repository a push of mapping version 1 wrote, made once by
/// `fixtures/make-git-remote-v1.sh`), served by a real `git daemon` on 127.0.0.1: a new device
/// pulls it and gets exactly `fixtures/store-v1`'s live files and both snapshots; the pull
/// writes nothing to the repository, which stays `git fsck --strict` clean.
#[test]
fn a_version_1_git_remote_still_pulls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let srv = crate::support::GitDaemon::start(&tmp.path().join("srv"));
    let (url, repo) = srv.repo("state.git");
    std::fs::remove_dir_all(&repo).expect("rm");
    crate::support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/git-remote-v1"),
        &repo,
    );
    let before = files(&repo);
    assert!(
        git(&repo, &["for-each-ref", "refs/shelldone/format/"]).is_empty(),
        "mapping version 1: no format ref"
    );
    let sb = Sandbox::new();
    sb.ok(&["remote", "add", "origin", &url]);
    sb.ok(&["sync", "pull"]);
    pulled_store_v1(&sb);
    assert_eq!(files(&repo), before, "a pull writes nothing to the remote");
    git(&repo, &["fsck", "--strict", "--no-dangling"]);
}
