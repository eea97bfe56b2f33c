//! Issue #9: each way sync used to give a silently wrong result, as the story a user lived.

use crate::support::{GitDaemon, Sandbox, assert_same};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn write(p: std::path::PathBuf, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

fn read(p: std::path::PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn head(sb: &Sandbox) -> String {
    json(&sb.ok(&["--json", "log", "-n", "1"]))[0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A and B share one state through `url` (A generated it, B adopted it).
fn shared(url: &str) -> (Sandbox, Sandbox) {
    let a = Sandbox::new();
    let b = Sandbox::new();
    a.generate();
    a.save("A: first");
    a.ok(&["remote", "add", "origin", url, "--init"]);
    a.ok(&["sync", "push"]);
    b.ok(&["remote", "add", "origin", url]);
    b.ok(&["sync", "pull"]);
    assert_same(&b.live(), &a.live());
    (a, b)
}

fn dir_remote() -> (tempfile::TempDir, String) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("remote").to_str().unwrap().to_owned();
    (t, p)
}

#[test]
fn session_pull_takes_one_session_and_a_later_full_pull_brings_the_rest() {
    let (_t, url) = dir_remote();
    let (a, b) = shared(&url);
    write(
        a.state().join("sessions/s001/session.json"),
        "{\"by\":\"A1\"}",
    );
    write(
        a.state().join("sessions/s002/session.json"),
        "{\"by\":\"A2\"}",
    );
    a.save("A: s001 and s002");
    a.ok(&["sync", "push"]);
    let r = json(&b.ok(&["--json", "sync", "pull", "--session", "s001"]));
    assert_eq!(r["sessions_updated"], serde_json::json!(["s001"]), "{r}");
    assert!(read(b.state().join("sessions/s001/session.json")).contains("A1"));
    assert!(!read(b.state().join("sessions/s002/session.json")).contains("A2"));
    // Still listed as differing, and a full pull brings it (it used to bring nothing).
    let st = json(&b.ok(&["--json", "sync", "status"]));
    let other = st
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["is_self"] == false)
        .unwrap();
    assert_eq!(
        other["sessions_differ"],
        serde_json::json!(["s002"]),
        "{st}"
    );
    let r = json(&b.ok(&["--json", "sync", "pull"]));
    assert!(r["files_changed"].as_u64().unwrap() >= 1, "{r}");
    assert!(read(b.state().join("sessions/s002/session.json")).contains("A2"));
    assert_same(&b.live(), &a.live());
}

#[test]
fn partial_pull_on_a_new_machine_matches_a_full_pull_and_keeps_deletions() {
    let (_t, url) = dir_remote();
    let (a, b) = shared(&url);
    // Some history, so that a partial pull has something to leave behind.
    for i in 0..4 {
        write(
            a.state().join("sessions/s000/scrollback.bin"),
            &format!("{i}").repeat(200_000 + i),
        );
        a.save(&format!("A: history {i}"));
    }
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull"]);
    // Then both diverge: A deletes sessions and edits a theme, B edits other sessions.
    std::fs::remove_dir_all(a.state().join("sessions/s003")).unwrap();
    std::fs::remove_dir_all(a.state().join("sessions/s004")).unwrap();
    write(
        a.config().join("themes/night.toml"),
        "background = \"#000\"\n",
    );
    a.save("A: delete s003 s004");
    write(
        b.state().join("sessions/s001/session.json"),
        "{\"by\":\"B\"}",
    );
    b.save("B: s001");
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "push"]);
    let full = Sandbox::new();
    full.ok(&["remote", "add", "origin", &url]);
    let rf = json(&full.ok(&["--json", "sync", "pull"]));
    let part = Sandbox::new();
    part.ok(&["remote", "add", "origin", &url]);
    let rp = json(&part.ok(&["--json", "sync", "pull", "--strategy", "partial"]));
    assert_eq!(rp["conflicts"], serde_json::json!([]), "{rp}");
    assert_same(&part.live(), &full.live());
    assert!(
        !part.state().join("sessions/s003").exists(),
        "deletion kept"
    );
    assert!(read(part.state().join("sessions/s001/session.json")).contains("\"B\""));
    let (bp, bf) = (
        rp["received"]["bytes"].as_u64().unwrap(),
        rf["received"]["bytes"].as_u64().unwrap(),
    );
    assert!(bp < bf, "partial received {bp} bytes, full {bf}");
    println!("partial pull: {bp} bytes, full pull: {bf} bytes");
    assert!(part.ok(&["state", "check"]).contains("no problems"));
    // The partial device syncs on normally afterwards.
    part.ok(&["sync", "push"]);
    a.ok(&["sync", "pull"]);
    assert_same(&a.live(), &part.live());
}

#[test]
fn the_device_whose_version_was_set_aside_is_told_too() {
    let (_t, url) = dir_remote();
    let (a, b) = shared(&url);
    write(
        a.state().join("sessions/s002/session.json"),
        "{\"by\":\"A\"}",
    );
    a.save("A: s002");
    write(
        b.state().join("sessions/s002/session.json"),
        "{\"by\":\"B\"}",
    );
    b.save("B: s002");
    b.ok(&["sync", "push"]);
    // A merges: B's version is newer and kept, A's is set aside — on A, reported.
    let r = json(&a.code(7, &["--json", "sync", "pull"]));
    assert_eq!(
        r["conflicts"][0]["kept_device"],
        b.ok(&["device", "show"]).trim(),
        "{r}"
    );
    a.ok(&["sync", "push"]);
    // B fast-forwards to A's merge: B's own version is kept here, but B is told as well.
    let r = json(&b.code(7, &["--json", "sync", "pull"]));
    assert_eq!(r["conflicts"].as_array().unwrap().len(), 1, "{r}");
    let id = r["conflicts"][0]["id"].as_str().unwrap().to_owned();
    let listed = json(&a.ok(&["--json", "conflicts"]));
    assert_eq!(
        listed[0]["id"],
        id.as_str(),
        "the same record on both devices"
    );
    let shown = json(&a.ok(&["--json", "conflicts", "show", &id]));
    assert!(
        shown["files"][0]["other"]
            .as_str()
            .unwrap()
            .contains("\"A\""),
        "{shown}"
    );
    // Resolving on one device settles it everywhere.
    a.ok(&["conflicts", "resolve", &id, "--both"]);
    assert!(read(a.state().join("sessions/s002/session.json")).contains("\"B\""));
    let both = a
        .state()
        .join("sessions")
        .read_dir()
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("s002-"));
    let both = both.expect("the set-aside session kept as a copy");
    assert!(read(a.state().join("sessions").join(&both).join("session.json")).contains("\"A\""));
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull"]);
    assert_eq!(b.ok(&["conflicts"]).trim(), "no open conflicts");
    assert_same(&a.live(), &b.live());
}

#[test]
fn a_pull_with_conflicts_exits_7_and_idle_rounds_write_nothing() {
    let (_t, url) = dir_remote();
    let (a, b) = shared(&url);
    write(a.config().join("notes.txt"), "A\n");
    a.save("A");
    write(b.config().join("notes.txt"), "B\n");
    b.save("B");
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "push"]);
    // Both merge at the same time: the same merge snapshot on both devices.
    a.code(7, &["sync", "pull"]);
    b.code(7, &["sync", "pull"]);
    assert_eq!(head(&a), head(&b), "both devices computed the same merge");
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "push"]);
    let (ha, hb) = (head(&a), head(&b));
    for _ in 0..3 {
        a.ok(&["sync", "pull"]);
        a.ok(&["sync", "push"]);
        b.ok(&["sync", "pull"]);
        b.ok(&["sync", "push"]);
    }
    assert_eq!(
        (head(&a), head(&b)),
        (ha, hb),
        "idle rounds wrote snapshots"
    );
}

#[test]
fn a_new_machine_adopts_the_other_head_without_an_empty_snapshot() {
    let (_t, url) = dir_remote();
    let (a, b) = shared(&url);
    let log = json(&b.ok(&["--json", "log"]));
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log[0]["id"], head(&a).as_str());
    // A new machine that already has a file of its own: the synced state wins, the local file
    // is kept aside as a conflict, nothing is lost.
    let c = Sandbox::new();
    write(c.config().join("config.toml"), "font_size = 99\n");
    c.ok(&["remote", "add", "origin", &url]);
    let r = json(&c.code(7, &["--json", "sync", "pull"]));
    assert_eq!(r["conflicts"][0]["path"], "config/config.toml", "{r}");
    assert_eq!(
        read(c.config().join("config.toml")),
        read(a.config().join("config.toml"))
    );
    let id = r["conflicts"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(r["conflicts"][0]["kind"], "keys", "{r}");
    assert_eq!(
        r["conflicts"][0]["keys"],
        serde_json::json!(["font_size"]),
        "{r}"
    );
    c.ok(&["conflicts", "resolve", &id, "--theirs"]);
    let cfg = read(c.config().join("config.toml"));
    assert!(
        cfg.contains("font_size = 99") && cfg.contains("JetBrains Mono"),
        "{cfg}"
    );
    // A first pull killed right after its auto-save leaves only that snapshot: the next pull
    // is still a first pull, not an "unrelated history".
    let d = Sandbox::new();
    write(d.config().join("config.toml"), "font_size = 5\n");
    d.ok(&["state", "save", "-m", "auto-save before pull from origin"]);
    d.ok(&["remote", "add", "origin", &url]);
    let r = json(&d.code(7, &["--json", "sync", "pull"]));
    assert_eq!(r["conflicts"][0]["path"], "config/config.toml", "{r}");
}

#[test]
fn config_files_merge_key_by_key_with_sections_and_appended_lines() {
    let (_t, url) = dir_remote();
    let (a, b) = shared(&url);
    let base = "# shelldone\n[font]\nfamily = \"Mono\"\nsize = 12\n\n[window]\nopacity = 1.0\n";
    write(a.config().join("shelldone.toml"), base);
    write(a.config().join("aliases.conf"), "ll = ls -l\n");
    a.save("base");
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull"]);
    // A changes a key in [font] and appends a line; B changes [window] and appends another.
    write(
        a.config().join("shelldone.toml"),
        &base.replace("size = 12", "size = 14"),
    );
    write(a.config().join("aliases.conf"), "ll = ls -l\nla = ls -a\n");
    a.save("A");
    write(
        b.config().join("shelldone.toml"),
        &base.replace("opacity = 1.0", "opacity = 0.9"),
    );
    write(
        b.config().join("aliases.conf"),
        "ll = ls -l\ngs = git status\n",
    );
    b.save("B");
    a.ok(&["sync", "push"]);
    let r = json(&b.ok(&["--json", "sync", "pull"]));
    assert_eq!(r["conflicts"], serde_json::json!([]), "{r}");
    let toml = read(b.config().join("shelldone.toml"));
    assert!(
        toml.contains("size = 14") && toml.contains("opacity = 0.9"),
        "{toml}"
    );
    assert!(toml.starts_with("# shelldone\n"), "comments kept: {toml}");
    let conf = read(b.config().join("aliases.conf"));
    assert!(
        conf.contains("la = ls -a") && conf.contains("gs = git status"),
        "{conf}"
    );
    // The same key on both sides is a reported conflict, not a silent pick.
    write(
        a.config().join("shelldone.toml"),
        &toml.replace("size = 14", "size = 15"),
    );
    a.ok(&["state", "save"]);
    b.ok(&["sync", "push"]);
    write(
        b.config().join("shelldone.toml"),
        &toml.replace("size = 14", "size = 16"),
    );
    b.ok(&["state", "save"]);
    b.ok(&["sync", "push"]);
    let r = json(&a.code(7, &["--json", "sync", "pull"]));
    assert_eq!(
        r["conflicts"][0]["keys"],
        serde_json::json!(["font.size"]),
        "{r}"
    );
}

#[test]
fn a_typod_config_dir_is_refused_not_saved_as_deleting_everything() {
    let a = Sandbox::new();
    a.generate();
    a.save("first");
    let cfg = a.config();
    for (what, setup) in [
        (
            "missing",
            Box::new(|_: &std::path::Path| {}) as Box<dyn Fn(&std::path::Path)>,
        ),
        (
            "a file",
            Box::new(|p: &std::path::Path| std::fs::write(p, "x").unwrap()),
        ),
        (
            "empty",
            Box::new(|p: &std::path::Path| std::fs::create_dir_all(p).unwrap()),
        ),
    ] {
        let wrong = a
            .dir
            .path()
            .join(format!("typo-{}", what.replace(' ', "-")));
        setup(&wrong);
        let o = a
            .cmd(&["state", "save"])
            .env("SHELLDONE_CONFIG_DIR", &wrong)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{what}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--allow-empty") && err.contains("config/"),
            "{err}"
        );
    }
    assert_eq!(json(&a.ok(&["--json", "log"])).as_array().unwrap().len(), 1);
    // Meant it: --allow-empty records the deletion.
    std::fs::remove_dir_all(&cfg).unwrap();
    a.ok(&["state", "save", "--allow-empty", "-m", "really"]);
    // A typo'd state dir is announced.
    let o = a
        .cmd(&["log"])
        .env("SHELLDONE_STATE_DIR", a.dir.path().join("typo-state"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("created a new state store"));
}

#[test]
fn a_missing_directory_remote_is_an_error_and_nothing_is_created() {
    let t = tempfile::tempdir().unwrap();
    let usb = t.path().join("media/usb/shelldone");
    let a = Sandbox::new();
    a.generate();
    a.save("first");
    let o = a.run(&["remote", "add", "usb", usb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--init"));
    a.ok(&["remote", "add", "usb", usb.to_str().unwrap(), "--init"]);
    a.ok(&["sync", "push", "usb"]);
    // The disk is unmounted: push and pull fail, nothing is written there.
    std::fs::remove_dir_all(t.path().join("media")).unwrap();
    let before = head(&a);
    for args in [["sync", "push", "usb"], ["sync", "pull", "usb"]] {
        let o = a.run(&args);
        assert_eq!(o.status.code(), Some(5), "{args:?}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("missing"),
            "{o:?}"
        );
    }
    assert!(!t.path().join("media").exists(), "push created the path");
    assert_eq!(head(&a), before);
}

#[test]
fn an_unrelated_store_pushed_to_the_remote_is_not_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let d = GitDaemon::start(&tmp.path().join("srv"));
    let (url, _repo) = d.repo("state.git");
    let (a, _b) = shared(&url);
    let stranger = Sandbox::new();
    write(stranger.config().join("config.toml"), "font_size = 7\n");
    write(stranger.state().join("sessions/zzz/session.json"), "{}");
    stranger.save("a different store");
    stranger.ok(&["remote", "add", "origin", &url]);
    stranger.ok(&["sync", "push"]);
    let live = a.live();
    let before = head(&a);
    let o = a.run(&["sync", "pull"]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--allow-unrelated"));
    assert_same(&a.live(), &live);
    assert_eq!(head(&a), before);
    // On purpose, it merges.
    a.code(7, &["sync", "pull", "--allow-unrelated"]);
    assert!(a.state().join("sessions/zzz/session.json").exists());
}

#[test]
fn a_copied_device_id_is_detected_and_rename_keeps_both_histories() {
    let (_t, url) = dir_remote();
    let (a, _b) = shared(&url);
    // A's state folder copied to a new laptop: the same device id.
    let copy = Sandbox::new();
    for (from, to) in [(a.config(), copy.config()), (a.state(), copy.state())] {
        let o = std::process::Command::new("cp")
            .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(o.success());
    }
    write(
        copy.state().join("sessions/s001/session.json"),
        "{\"by\":\"laptop\"}",
    );
    copy.save("laptop");
    copy.ok(&["sync", "push"]);
    write(
        a.state().join("sessions/s002/session.json"),
        "{\"by\":\"desktop\"}",
    );
    a.save("desktop");
    let before = head(&a);
    for args in [["sync", "push"], ["sync", "pull"]] {
        let o = a.run(&args);
        assert_eq!(o.status.code(), Some(5), "{args:?}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("device rename"),
            "{o:?}"
        );
    }
    assert_eq!(head(&a), before, "nothing changed");
    a.ok(&["device", "rename", "desktop"]);
    a.ok(&["sync", "pull"]);
    a.ok(&["sync", "push"]);
    assert!(read(a.state().join("sessions/s001/session.json")).contains("laptop"));
    assert!(read(a.state().join("sessions/s002/session.json")).contains("desktop"));
    copy.ok(&["sync", "pull"]);
    assert_same(&copy.live(), &a.live());
}

/// A session whose id is not UTF-8 gets the same ref on the device that pulls it as on the one
/// that saved it (`sessions/%FF`), not the ref of a lossy string (`sessions/%EF%BF%BD`, which
/// different ids would share). Found by the independent decoder (objects-format SPEC §11.7).
#[test]
fn a_session_id_that_is_not_utf8_has_the_same_ref_after_a_pull() {
    use std::os::unix::ffi::OsStrExt;
    let (_t, url) = dir_remote();
    let (a, b) = shared(&url);
    let name = std::ffi::OsStr::from_bytes(b"\xff.json");
    std::fs::write(a.state().join("sessions").join(name), b"{\"by\":\"A\"}").unwrap();
    a.save("A: a session named by a non-UTF-8 byte");
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull"]);
    for sb in [&a, &b] {
        let refs = sb.state().join("snapshots/refs/sessions");
        assert!(
            refs.join("%FF").is_file(),
            "sessions/%FF in {}",
            refs.display()
        );
        assert!(!refs.join("%EF%BF%BD").exists(), "no lossy ref");
    }
    assert_same(&b.live(), &a.live());
}
