//! Issue #3 (part): corrupt descriptors are quarantined and restored; leftovers are cleaned.

use crate::support::Sandbox;

#[test]
fn corrupt_descriptor_is_quarantined_and_restored_from_last_good() {
    let sb = Sandbox::new();
    sb.generate();
    sb.save("good");
    let d = sb.state().join("sessions/s002/session.json");
    let good = std::fs::read(&d).unwrap();
    std::fs::write(&d, b"{\"tabs\": [trunc").unwrap();
    let out = sb.ok(&["state", "recover"]);
    assert!(
        out.contains("quarantined state/sessions/s002/session.json"),
        "{out}"
    );
    assert!(out.contains("restored the last good version"), "{out}");
    assert_eq!(std::fs::read(&d).unwrap(), good);
    let q: Vec<_> = walkdir::WalkDir::new(sb.state().join("quarantine"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    assert_eq!(q.len(), 1);
    assert_eq!(
        std::fs::read(q[0].path()).unwrap(),
        b"{\"tabs\": [trunc",
        "the bad file is kept for inspection"
    );
    // A zero-length descriptor (the tmux-resurrect failure) is handled the same way by save,
    // once it is old enough not to be a write in progress.
    std::fs::write(&d, b"").unwrap();
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(&d)
        .unwrap()
        .set_modified(past)
        .unwrap();
    let o = sb.run(&["state", "save"]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("was corrupt"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read(&d).unwrap(), good);
}

/// A descriptor torn a moment ago (a write in progress, as far as a save can tell) and then
/// restored on purpose: the restore writes the snapshot's version, keeps the torn bytes in
/// quarantine, and the snapshot recording the restore still holds the descriptor (it once
/// recorded the session without it: "-1", and the torn file stayed).
#[test]
fn restoring_a_session_right_after_its_descriptor_was_torn_writes_it_back() {
    let sb = Sandbox::new();
    sb.generate();
    let first = sb.save("good");
    let d = sb.state().join("sessions/s002/session.json");
    let good = std::fs::read(&d).unwrap();
    std::fs::write(&d, b"{").unwrap();
    let o = sb.run(&["state", "restore", "--session", "s002"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("session descriptor state/sessions/s002/session.json was corrupt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&d).unwrap(),
        good,
        "the snapshot's version is live"
    );
    let q: Vec<_> = walkdir::WalkDir::new(sb.state().join("quarantine"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        std::fs::read(q[0].path()).unwrap(),
        b"{",
        "the torn bytes are kept"
    );
    // What the head records for the session is what the first snapshot had.
    let diff = sb.ok(&["state", "diff", &first, "HEAD"]);
    assert!(!diff.contains("s002"), "{diff}");
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
}

#[test]
fn leftovers_of_a_dead_process_are_removed_on_start() {
    let sb = Sandbox::new();
    sb.generate();
    let a = sb.save("a");
    let staging = sb.state().join("snapshots/staging/99999-1");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("x"), b"half").unwrap();
    let tmp = sb.state().join("sessions/s001/.shelldone-tmp.99999.1");
    std::fs::write(&tmp, b"half-written").unwrap();
    std::fs::write(
        sb.state().join("snapshots/restore-intent"),
        format!("{{\"snapshot\":\"{a}\",\"session\":null}}"),
    )
    .unwrap();
    let o = sb.run(&["log"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("finished an interrupted restore"), "{err}");
    assert!(!staging.exists() && !tmp.exists());
    assert!(!sb.state().join("snapshots/restore-intent").exists());
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
}

#[test]
fn any_command_repairs_a_corrupt_descriptor_at_start() {
    let sb = Sandbox::new();
    sb.generate();
    sb.save("good");
    let d = sb.state().join("sessions/s004/session.json");
    let good = std::fs::read(&d).unwrap();
    std::fs::write(&d, b"\x00\x00\x00").unwrap(); // a torn write after a power cut
    // Just written: it may still be being written, so it is left alone for now…
    let o = sb.run(&["log", "-n", "1"]);
    assert!(String::from_utf8_lossy(&o.stderr).is_empty());
    // …and repaired once it has settled.
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(&d)
        .unwrap()
        .set_modified(past)
        .unwrap();
    let o = sb.run(&["log", "-n", "1"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("session descriptor state/sessions/s004/session.json was corrupt")
            && err.contains("last good version was restored"),
        "{err}"
    );
    assert_eq!(std::fs::read(&d).unwrap(), good);
    // Valid descriptors that changed are left alone.
    std::fs::write(&d, b"{\"changed\":true}").unwrap();
    let o = sb.run(&["log", "-n", "1"]);
    assert!(String::from_utf8_lossy(&o.stderr).is_empty());
    assert_eq!(std::fs::read(&d).unwrap(), b"{\"changed\":true}");
}

#[test]
fn a_pull_killed_after_moving_the_head_is_finished_by_recovery() {
    // The window a SIGKILL can hit inside `sync pull`: the head already points at the pulled
    // state, the live files do not yet, and the intent file says "make live equal the head".
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote");
    let a = Sandbox::new();
    a.generate();
    a.save("v1");
    a.ok(&[
        "remote",
        "add",
        "origin",
        remote.to_str().unwrap(),
        "--init",
    ]);
    a.ok(&["sync", "push"]);
    let b = Sandbox::new();
    b.ok(&[
        "remote",
        "add",
        "origin",
        remote.to_str().unwrap(),
        "--init",
    ]);
    b.ok(&["sync", "pull"]);
    std::fs::write(a.config().join("config.toml"), "font_size = 99\n").unwrap();
    let v2 = a.save("v2");
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull", "--no-restore"]);
    // Reproduce the state a kill leaves: head moved, live not, intent present.
    {
        let (st, _) = shelldone::State::open(shelldone::Paths {
            config_dir: b.config(),
            state_dir: b.state(),
        })
        .unwrap();
        let _lock = st.context().lock("test").unwrap();
        let v2 = shelldone::ObjectId::from_hex(&v2).unwrap();
        st.refs()
            .set("head", Some(v2), "test: simulated pull")
            .unwrap();
    }
    std::fs::write(
        b.state().join("snapshots/restore-intent"),
        "{\"snapshot\":\"head\",\"session\":null}",
    )
    .unwrap();
    assert_ne!(
        std::fs::read(b.config().join("config.toml")).unwrap(),
        b"font_size = 99\n"
    );
    let o = b.run(&["log", "-n", "1"]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("finished an interrupted restore"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(b.config().join("config.toml")).unwrap(),
        b"font_size = 99\n"
    );
    crate::support::assert_same(&b.live(), &a.live());
    assert!(b.ok(&["state", "check"]).contains("no problems"));
}
