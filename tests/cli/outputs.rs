//! Issue #11 (items 5 and 8): what the commands print, as insta snapshots of the real binary's
//! stdout, stderr and exit code (`tests/cli/snapshots/`). Every `--json` document is also
//! checked against docs/cli.md (documented.rs): a top-level key the docs do not name fails.
//!
//! What differs from run to run or machine to machine is filtered before comparing: temp paths,
//! device ids, snapshot and object ids (`[ID]`, `[ID12]`, `[ID16]`), times, byte counts of
//! compressed objects, durations. Everything else — counts, paths in the state, messages, key
//! order, exit codes — is compared byte for byte. A changed output shows as a failing test;
//! `cargo insta review` (or `INSTA_UPDATE=always`) accepts it once it is meant.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::documented;
use crate::support::Sandbox;

/// The filters and the snapshot settings of one story.
struct Shots {
    settings: insta::Settings,
}

/// `s` as a regex matching itself.
pub(crate) fn literal(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Shots {
    fn new() -> Self {
        let mut settings = insta::Settings::clone_current();
        settings.set_omit_expression(true);
        Shots { settings }
    }

    /// Replaces a temp dir by `name` (added before the generic filters, so they never see it).
    fn path(&mut self, dir: &Path, name: &str) {
        let p = dir.to_str().expect("utf-8 temp path");
        self.settings.add_filter(&literal(p), name.to_owned());
        // The same dir as the kernel names it (/tmp may be a symlink).
        if let Ok(c) = dir.canonicalize()
            && c != dir
        {
            self.settings
                .add_filter(&literal(c.to_str().expect("utf-8")), name.to_owned());
        }
    }

    /// Replaces the sandbox's generated device id (`<hostname>-<8 hex>`) by `name`.
    fn device(&mut self, sb: &Sandbox, name: &str) {
        let d = std::fs::read_to_string(sb.state().join("snapshots/device")).expect("device");
        self.settings
            .add_filter(&literal(d.trim()), name.to_owned());
    }

    /// The filters for what changes from run to run, after the exact ones above.
    fn volatile(&mut self) {
        let s = &mut self.settings;
        s.add_filter(r"quarantine/\d+", "quarantine/[NS]");
        s.add_filter(r#""(\w*time_ns)":-?\d+"#, r#""$1":[TIME_NS]"#);
        s.add_filter(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", "[TIME]");
        s.add_filter(r"\b[0-9a-f]{64}\b", "[ID]");
        s.add_filter(r"\b[0-9a-f]{16}\b", "[ID16]");
        s.add_filter(r"\b[0-9a-f]{12}\b", "[ID12]");
        // Compressed sizes: a snapshot object holds its time, so its size varies by a byte or
        // two. Content sizes (diff, conflicts show) are compared as they are.
        s.add_filter(r#""(\w*bytes\w*)":\d+"#, r#""$1":[BYTES]"#);
        s.add_filter(
            r"(objects|new objects) \(\d+(\.\d)? (B|KiB|MiB|GiB)\)",
            "$1 ([SIZE])",
        );
        s.add_filter(r"\d+(\.\d)? (B|KiB|MiB|GiB) freed", "[SIZE] freed");
        s.add_filter(r"\b\d+(\.\d+)? ms\b", "[DURATION]");
    }

    /// Snapshots what `shelldone ARGS` printed and how it exited, under `name`.
    fn snap(&self, name: &str, args: &[&str], o: &Output) {
        let mut t = format!(
            "$ shelldone {}\nexit: {}\n",
            args.join(" "),
            o.status
                .code()
                .map_or_else(|| format!("{:?}", o.status), |c| c.to_string())
        );
        for (label, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            if !bytes.is_empty() {
                t.push_str(&format!(
                    "--- {label}\n{}",
                    String::from_utf8(bytes.clone()).expect("utf-8 output")
                ));
            }
        }
        // insta ignores trailing newlines; the marker makes them part of what is compared.
        t.push_str("--- end\n");
        self.settings.bind(|| insta::assert_snapshot!(name, t));
    }

    /// Runs `shelldone ARGS` in `sb`, expects exit `code`, snapshots it; returns stdout.
    fn run(&self, name: &str, sb: &Sandbox, code: i32, args: &[&str]) -> String {
        let o = sb.run(args);
        expect_code(&o, code, args);
        self.snap(name, args, &o);
        if args.contains(&"--json") {
            json_stderr(&o);
        }
        String::from_utf8(o.stdout).expect("utf-8")
    }

    /// [`Shots::run`] for a `--json` command printing one document `label` (docs/cli.md) on
    /// stdout, checked against the docs; returns it.
    fn json(&self, name: &str, label: &str, sb: &Sandbox, code: i32, args: &[&str]) -> Value {
        assert!(args.contains(&"--json"), "{args:?}");
        assert!(
            name.starts_with(&format!("json_{}", label.replace(' ', "_"))),
            "a JSON snapshot is named after its document: {name}, {label}"
        );
        let out = self.run(name, sb, code, args);
        assert_eq!(out.lines().count(), 1, "one document on one line: {out}");
        let v: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
        let n = documented::check(label, &v).unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "{label}: an empty document checks no key: {out}");
        v
    }
}

#[track_caller]
fn expect_code(o: &Output, code: i32, args: &[&str]) {
    crate::support::exited(&args, o, code);
}

/// The JSON documents on stderr (errors, warnings) of a `--json` run, each checked against the
/// docs; lines that are not JSON (a quarantine warning) are text on purpose (docs/cli.md).
fn json_stderr(o: &Output) -> Vec<Value> {
    let err = String::from_utf8_lossy(&o.stderr);
    let mut docs = Vec::new();
    for line in err.lines().filter(|l| l.starts_with('{')) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let label = if v.get("error").is_some() {
            "error"
        } else if v.get("progress").is_some() {
            "progress"
        } else {
            "warning"
        };
        documented::check(label, &v).unwrap_or_else(|e| panic!("{e}"));
        docs.push(v);
    }
    docs
}

fn write(p: impl AsRef<Path>, s: &str) {
    let p = p.as_ref();
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, s).expect("write");
}

/// Makes a file look older than the 2 s a descriptor must be left alone for (docs/cli.md).
fn age(p: &Path) {
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(p)
        .expect("open")
        .set_modified(past)
        .expect("set mtime");
}

/// A fresh sandbox with a small generated state and a fixed device name, and its filters.
fn device_named(name: &str, generate: bool) -> (Sandbox, Shots) {
    let sb = Sandbox::new();
    let mut shots = Shots::new();
    shots.path(sb.dir.path(), "[SANDBOX]");
    if generate {
        sb.generate();
    }
    sb.ok(&["device", "show"]);
    shots.device(&sb, "[DEVICE]");
    sb.ok(&["device", "rename", name]);
    shots.volatile();
    (sb, shots)
}

#[test]
fn local_state_save_log_show_diff_restore_check_gc_recover() {
    let sb = Sandbox::new();
    let mut shots = Shots::new();
    shots.path(sb.dir.path(), "[SANDBOX]");
    // The first command creates the store and says so.
    let o = sb.run(&["log"]);
    expect_code(&o, 0, &["log"]);
    shots.device(&sb, "[DEVICE]");
    shots.volatile();
    shots.snap("log_new_store", &["log"], &o);
    shots.run("json_log_empty", &sb, 0, &["--json", "log"]);
    shots.run("device_rename", &sb, 0, &["device", "rename", "first-name"]);
    shots.json(
        "json_device_rename",
        "device rename",
        &sb,
        0,
        &["--json", "device", "rename", "laptop"],
    );
    shots.run("device_show", &sb, 0, &["device", "show"]);
    shots.json(
        "json_device_show",
        "device show",
        &sb,
        0,
        &["--json", "device", "show"],
    );

    sb.generate();
    shots.run("state_save", &sb, 0, &["state", "save", "-m", "first"]);
    let v = shots.json(
        "json_state_save_unchanged",
        "state save",
        &sb,
        0,
        &["--json", "state", "save"],
    );
    assert_eq!(v["created"], false);
    // Change a preference, add and delete files, and leave a symlink out of the snapshot.
    write(sb.config().join("config.toml"), "font_size = 15\n");
    write(sb.config().join("themes/dark.toml"), "bg = \"#000\"\n");
    std::fs::remove_file(sb.state().join("journal/0002.jsonl")).expect("rm");
    write(
        sb.state().join("sessions/s001/session.json"),
        "{\"id\":\"s001\"}",
    );
    std::os::unix::fs::symlink("/etc/hostname", sb.config().join("outside")).expect("symlink");
    // Enough objects for `gc --repack` to repack (more than 64 reachable).
    for i in 0..20 {
        write(
            sb.config().join(format!("snippets/{i:02}.sh")),
            &format!("echo {i}\n"),
        );
    }
    // What a save would record, and what the excludes leave out.
    write(
        sb.config().join("shelldone.toml"),
        "[state]\nexclude = [\"*.bak\"]\n",
    );
    write(sb.config().join("themes/old.bak"), "x");
    write(sb.state().join("journal/.shelldoneignore"), "scratch/\n");
    write(sb.state().join("journal/scratch/a"), "a");
    shots.run(
        "state_save_dry_run",
        &sb,
        0,
        &["state", "save", "--dry-run"],
    );
    shots.json(
        "json_state_save_dry-run",
        "state save dry-run",
        &sb,
        0,
        &["--json", "state", "save", "--dry-run"],
    );
    let v = shots.json(
        "json_state_save_created",
        "state save",
        &sb,
        0,
        &["--json", "state", "save", "-m", "second"],
    );
    assert_eq!(v["created"], true);
    shots.run("state_save_unchanged", &sb, 0, &["state", "save"]);
    std::fs::remove_file(sb.config().join("outside")).expect("rm");

    shots.run("log", &sb, 0, &["log"]);
    let log = shots.json("json_log", "log", &sb, 0, &["--json", "log"]);
    let first = log[1]["id"].as_str().expect("id").to_owned();
    shots.run(
        "log_session",
        &sb,
        0,
        &["log", "--session", "s001", "-n", "1"],
    );
    // Issue #12: one line per snapshot, short ids by default, full ones on request.
    shots.run("log_oneline", &sb, 0, &["log", "--oneline"]);
    shots.run("log_oneline_n", &sb, 0, &["log", "--oneline", "-n", "1"]);
    shots.run("log_full", &sb, 0, &["log", "--full", "-n", "1"]);
    shots.run("show_full", &sb, 0, &["show", "--full", "head~1"]);
    // A session-id prefix several sessions share: each listed with its snapshot.
    shots.run("error_ambiguous_revision", &sb, 2, &["show", "s00"]);
    shots.run(
        "error_unknown_session",
        &sb,
        2,
        &["log", "--session", "nope"],
    );
    shots.run("show", &sb, 0, &["show", "head"]);
    shots.json("json_show", "show", &sb, 0, &["--json", "show", "head"]);
    shots.run("state_diff", &sb, 0, &["state", "diff", &first, "head"]);
    shots.json(
        "json_state_diff",
        "state diff",
        &sb,
        0,
        &["--json", "state", "diff", &first, "head"],
    );

    // An unsaved change, then restores: a plan, and a real one that saves the change first.
    write(sb.config().join("keymap.json"), "{\"unsaved\":true}");
    shots.run(
        "state_restore_dry_run",
        &sb,
        0,
        &["state", "restore", &first, "--dry-run"],
    );
    shots.json(
        "json_state_restore_dry_run",
        "state restore",
        &sb,
        0,
        &["--json", "state", "restore", &first, "--dry-run"],
    );
    shots.run("state_restore", &sb, 0, &["state", "restore", &first]);
    let v = shots.json(
        "json_state_restore",
        "state restore",
        &sb,
        0,
        &["--json", "state", "restore", "head~2", "--path", "config"],
    );
    assert!(v["new_head"].is_string(), "{v}");

    shots.run("state_check", &sb, 0, &["state", "check"]);
    shots.json(
        "json_state_check",
        "state check",
        &sb,
        0,
        &["--json", "state", "check"],
    );
    shots.run(
        "state_check_subset",
        &sb,
        0,
        &["state", "check", "--read-data-subset", "0%"],
    );
    shots.run("state_gc", &sb, 0, &["state", "gc"]);
    shots.json(
        "json_state_gc",
        "state gc",
        &sb,
        0,
        &["--json", "state", "gc"],
    );
    shots.json(
        "json_state_gc_repack",
        "state gc",
        &sb,
        0,
        &["--json", "state", "gc", "--repack"],
    );
    shots.run("state_recover_nothing", &sb, 0, &["state", "recover"]);
    shots.json(
        "json_state_recover_nothing",
        "state recover",
        &sb,
        0,
        &["--json", "state", "recover"],
    );
}

#[test]
fn damage_and_errors_with_their_exit_codes() {
    let (sb, shots) = device_named("laptop", false);
    write(sb.config().join("config.toml"), "a = 1\n");
    write(sb.state().join("sessions/s1/session.json"), "{}");
    write(sb.state().join("journal/0000.jsonl"), "{\"n\":1}\n");
    sb.save("one");
    write(sb.config().join("config.toml"), "a = 2\n");
    sb.save("two");

    // Usage errors: exit 2, as text and as JSON.
    shots.run("error_unknown_revision", &sb, 2, &["show", "nope"]);
    shots.run(
        "json_error_unknown_revision",
        &sb,
        2,
        &["--json", "show", "nope"],
    );
    shots.run(
        "error_bad_subset",
        &sb,
        2,
        &["state", "check", "--read-data-subset", "200%"],
    );
    shots.run("error_syntax", &sb, 2, &["state", "frobnicate"]);
    shots.run(
        "error_resolve_how",
        &sb,
        2,
        &["conflicts", "resolve", "ab12"],
    );
    shots.run("error_unknown_remote", &sb, 2, &["sync", "push", "nowhere"]);

    // A corrupt session descriptor, old enough to be damage and not a write in progress:
    // quarantined when the next command opens the store (stderr says so), or by recover
    // however recent.
    let d = sb.state().join("sessions/s1/session.json");
    write(&d, "{\"tabs\": [trunc");
    age(&d);
    shots.run("state_save_after_recovery", &sb, 0, &["state", "save"]);
    assert_eq!(std::fs::read_to_string(&d).expect("read"), "{}");
    write(&d, "");
    shots.run("state_recover_quarantined", &sb, 0, &["state", "recover"]);
    write(&d, "\u{0}\u{0}");
    let v = shots.json(
        "json_state_recover_quarantined",
        "state recover",
        &sb,
        0,
        &["--json", "state", "recover"],
    );
    assert_eq!(v["quarantined"].as_array().map(Vec::len), Some(1), "{v}");

    // A damaged head: commands refuse with exit 3, recover repairs it.
    let head = sb.state().join("snapshots/refs/head");
    let good = std::fs::read(&head).expect("head");
    std::fs::write(&head, b"garbage\n").expect("write");
    shots.run("error_damaged_head", &sb, 3, &["log"]);
    shots.run("state_check_damaged_head", &sb, 3, &["state", "check"]);
    shots.run("state_recover_repaired", &sb, 0, &["state", "recover"]);
    std::fs::write(&head, b"").expect("write");
    let v = shots.json(
        "json_state_recover_repaired",
        "state recover",
        &sb,
        0,
        &["--json", "state", "recover"],
    );
    assert_eq!(v["repaired"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(std::fs::read(&head).expect("head"), good);

    // A missing object: check exits 3 naming it and what uses it; restore refuses with exit 3.
    let blob = objects_format::ObjectId::compute(
        objects_format::Kind::Blob,
        &objects_format::encoding::encode_blob(b"a = 1\n"),
    )
    .to_hex();
    let obj = sb
        .state()
        .join("snapshots/objects")
        .join(&blob[..2])
        .join(&blob[2..]);
    std::fs::remove_file(&obj).expect("the blob of the first config.toml is a loose object");
    shots.run("state_check_missing_object", &sb, 3, &["state", "check"]);
    let v = shots.json(
        "json_state_check_missing_object",
        "state check",
        &sb,
        3,
        &["--json", "state", "check"],
    );
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(1), "{v}");
    shots.run(
        "error_restore_missing_object",
        &sb,
        3,
        &["state", "restore", "head~1"],
    );
    shots.run(
        "json_error_restore_missing_object",
        &sb,
        3,
        &["--json", "state", "restore", "head~1"],
    );

    // A save that would record every preference as deleted (a typo'd --config-dir).
    std::fs::remove_dir_all(sb.config()).expect("rm config");
    shots.run("error_emptied_root", &sb, 2, &["state", "save"]);
}

/// The JSON warning for a path a snapshot may not hold, on its own (the save snapshot above has
/// it too, beside the document on stdout).
#[test]
fn json_warnings_are_one_document_per_line_on_stderr() {
    let (sb, shots) = device_named("laptop", false);
    write(sb.config().join("config.toml"), "a = 1\n");
    std::os::unix::fs::symlink("/etc/hostname", sb.config().join("outside")).expect("symlink");
    std::os::unix::fs::symlink("../../x", sb.config().join("climbs")).expect("symlink");
    let o = sb.run(&["--json", "state", "save"]);
    expect_code(&o, 0, &["--json", "state", "save"]);
    let warnings = json_stderr(&o);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    shots.snap("json_warning_not_saved", &["--json", "state", "save"], &o);
}

#[test]
fn sync_remote_push_pull_status_conflicts() {
    let remotes = tempfile::tempdir().expect("tempdir");
    let (a, mut sa) = device_named("laptop", true);
    let (b, mut sb) = device_named("desk", false);
    for s in [&mut sa, &mut sb] {
        s.path(remotes.path(), "[REMOTES]");
    }
    // The other sandbox's paths may show up too (a conflict names the other device only).
    let origin = remotes.path().join("origin");
    let origin = origin.to_str().expect("utf-8");
    let spare = remotes.path().join("spare");
    let spare = spare.to_str().expect("utf-8");
    a.save("A: first");

    sa.run(
        "remote_add",
        &a,
        0,
        &["remote", "add", "origin", origin, "--init"],
    );
    sa.json(
        "json_remote_add",
        "remote add",
        &a,
        0,
        &["--json", "remote", "add", "spare", spare, "--init"],
    );
    sa.run("remote_list", &a, 0, &["remote", "list"]);
    sa.json(
        "json_remote_list",
        "remote list",
        &a,
        0,
        &["--json", "remote", "list"],
    );
    sa.json(
        "json_remote_remove",
        "remote remove",
        &a,
        0,
        &["--json", "remote", "remove", "spare"],
    );
    a.ok(&["remote", "add", "spare", spare]);
    sa.run("remote_remove", &a, 0, &["remote", "remove", "spare"]);

    sa.run("sync_status_empty_remote", &a, 0, &["sync", "status"]);
    sa.run("sync_push", &a, 0, &["sync", "push"]);
    sa.run("sync_push_up_to_date", &a, 0, &["sync", "push"]);
    write(a.config().join("config.toml"), "font_size = 12\n");
    a.save("A: font");
    sa.run("sync_push_dry_run", &a, 0, &["sync", "push", "--dry-run"]);
    sa.json(
        "json_sync_push_dry-run",
        "sync push dry-run",
        &a,
        0,
        &["--json", "sync", "push", "--dry-run"],
    );
    sa.json(
        "json_sync_push",
        "sync push",
        &a,
        0,
        &["--json", "sync", "push"],
    );

    // B is a new machine: it adopts A's state.
    b.ok(&["remote", "add", "origin", origin]);
    let v = sb.json(
        "json_sync_pull_adopted",
        "sync pull",
        &b,
        0,
        &["--json", "sync", "pull"],
    );
    assert_eq!(v["adopted"], "laptop", "{v}");
    sb.run("sync_status", &b, 0, &["sync", "status"]);
    sb.json(
        "json_sync_status",
        "sync status",
        &b,
        0,
        &["--json", "sync", "status"],
    );

    // Both change session s002; B's is newer and kept, A's set aside (one conflict at a time:
    // a list of several is ordered by id, which differs from run to run).
    write(
        a.state().join("sessions/s002/session.json"),
        "{\"by\":\"A\"}\n",
    );
    a.save("A: s002");
    write(
        b.state().join("sessions/s002/session.json"),
        "{\"by\":\"B\"}\n",
    );
    b.save("B: s002");
    b.ok(&["sync", "push"]);
    sa.run("sync_pull_conflict", &a, 7, &["sync", "pull"]);
    a.ok(&["sync", "push"]);
    let v = sb.json(
        "json_sync_pull_conflict",
        "sync pull",
        &b,
        7,
        &["--json", "sync", "pull"],
    );
    let id = v["conflicts"][0]["id"]
        .as_str()
        .expect("conflict id")
        .to_owned();
    sa.run("conflicts_list", &a, 0, &["conflicts"]);
    sa.json(
        "json_conflicts_list",
        "conflicts list",
        &a,
        0,
        &["--json", "conflicts", "list"],
    );
    sa.run("conflicts_show", &a, 0, &["conflicts", "show", &id]);
    sa.json(
        "json_conflicts_show",
        "conflicts show",
        &a,
        0,
        &["--json", "conflicts", "show", &id],
    );
    sa.run(
        "conflicts_resolve",
        &a,
        0,
        &["conflicts", "resolve", &id, "--both"],
    );
    sa.run("conflicts_list_none", &a, 0, &["conflicts"]);
    a.ok(&["sync", "push"]);
    sb.run("sync_pull_fast_forward", &b, 0, &["sync", "pull"]);

    // A key both changed: a keys conflict, resolved with the set-aside value.
    write(a.config().join("config.toml"), "font_size = 13\n");
    a.save("A: 13");
    write(b.config().join("config.toml"), "font_size = 14\n");
    b.save("B: 14");
    b.ok(&["sync", "push"]);
    let v: Value = serde_json::from_str(&a.code(7, &["--json", "sync", "pull"])).expect("json");
    let id = v["conflicts"][0]["id"]
        .as_str()
        .expect("conflict id")
        .to_owned();
    assert_eq!(v["conflicts"][0]["kind"], "keys", "{v}");
    sa.run("conflicts_list_keys", &a, 0, &["conflicts"]);
    sa.json(
        "json_conflicts_resolve",
        "conflicts resolve",
        &a,
        0,
        &["--json", "conflicts", "resolve", &id, "--theirs"],
    );

    // A directory remote that went away (an unmounted disk): exit 5, as text and as JSON.
    let gone = remotes.path().join("gone");
    a.ok(&[
        "remote",
        "add",
        "gone",
        gone.to_str().expect("utf-8"),
        "--init",
    ]);
    std::fs::remove_dir_all(&gone).expect("rm remote");
    sa.run("error_remote_gone", &a, 5, &["sync", "push", "gone"]);
    sa.run(
        "json_error_remote_gone",
        &a,
        5,
        &["--json", "sync", "pull", "gone"],
    );
}

/// Runs `sync daemon` until `--max-runtime`, changing a file once it says it is watching;
/// returns its output.
fn daemon_run(sb: &Sandbox, args: &[&str], font_size: u32) -> Output {
    let mut child = sb
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read");
    assert!(first.contains("watching"), "{first}");
    write(
        sb.config().join("config.toml"),
        &format!("font_size = {font_size}\n"),
    );
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut rest).expect("read");
    let mut o = child.wait_with_output().expect("wait");
    let mut all = first.into_bytes();
    all.extend(rest);
    o.stdout = all;
    o
}

#[test]
fn sync_daemon_events() {
    let remotes = tempfile::tempdir().expect("tempdir");
    let (sb, mut shots) = device_named("laptop", false);
    shots.path(remotes.path(), "[REMOTES]");
    // Every line starts with (human) or carries (`time`, JSON) an RFC 3339 UTC time.
    shots
        .settings
        .add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", "[RFC3339]");
    // How many event batches a change arrives in varies from run to run.
    shots
        .settings
        .add_filter(r#""wakeups":\d+"#, r#""wakeups":[N]"#);
    write(sb.config().join("config.toml"), "font_size = 11\n");
    sb.save("first");
    let origin = remotes.path().join("origin");
    sb.ok(&[
        "remote",
        "add",
        "origin",
        origin.to_str().expect("utf-8"),
        "--init",
    ]);
    // Pushes what was saved before it started at once, then saves the change; the push of
    // that waits for the stop (`--max-runtime`), which pushes what is left. No pulls: their
    // auto-save would race the change.
    let args = [
        "--json",
        "sync",
        "daemon",
        "--remote",
        "origin",
        "--poll",
        "0.05",
        "--debounce",
        "0.2",
        "--push-interval",
        "600",
        "--pull-interval",
        "0",
        "--max-runtime",
        "4",
    ];
    let human = &args[1..];
    let o = daemon_run(&sb, human, 16);
    expect_code(&o, 0, human);
    let text = String::from_utf8(o.stdout.clone()).expect("utf-8");
    assert_eq!(
        text.lines().count(),
        5,
        "watching, pushed, saved, pushed, stopped: {text}"
    );
    shots.snap("sync_daemon", human, &o);

    // The remote's disk is gone: every push fails (to be retried), so the daemon ends with
    // the push's error (exit 5).
    std::fs::remove_dir_all(&origin).expect("rm remote");
    let o = daemon_run(&sb, &args, 17);
    expect_code(&o, 5, &args);
    let text = String::from_utf8(o.stdout.clone()).expect("utf-8");
    let mut events = Vec::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        documented::check("sync daemon", &v).unwrap_or_else(|e| panic!("{e}"));
        events.push(v["event"].as_str().expect("event").to_owned());
    }
    // A retryable failure is tried again after `--push-interval` (600 s here), and once more
    // at the stop.
    assert_eq!(
        events,
        ["watching", "push-failed", "saved", "push-failed", "stopped"],
        "{text}"
    );
    shots.snap("json_sync_daemon_push_failed", &args, &o);
}

#[test]
fn progress_events_and_the_tour_document() {
    let sb = Sandbox::new();
    let mut shots = Shots::new();
    shots.path(sb.dir.path(), "[SANDBOX]");
    sb.generate();
    sb.ok(&["state", "save"]);
    shots.device(&sb, "[DEVICE]");
    shots
        .settings
        .add_filter(r#""(\w*_ms)":\d+"#, r#""$1":[MS]"#);
    shots
        .settings
        .add_filter(r"shelldone-tour-\w+", "shelldone-tour-[RANDOM]");
    shots.settings.add_filter(r"\d+\.\d ms", "[DURATION]");
    shots.settings.add_filter(r"\d+ bytes", "[N] bytes");
    shots.volatile();
    // An interval longer than the check: its first and last event only.
    let args = ["--json", "--progress", "always", "state", "check"];
    let o = sb
        .cmd(&args)
        .env("SHELLDONE_PROGRESS_INTERVAL", "1000")
        .output()
        .expect("run");
    expect_code(&o, 0, &args);
    shots.snap("json_progress_check", &args, &o);
    let events = json_stderr(&o);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["done"], true);

    let tmp = sb.dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    let args = ["--json", "tour"];
    let o = sb.cmd(&args).env("TMPDIR", &tmp).output().expect("run");
    expect_code(&o, 0, &args);
    shots.snap("json_tour", &args, &o);
    let v: Value = serde_json::from_slice(&o.stdout).expect("one document");
    documented::check("tour", &v).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn vault_documents() {
    let (sb, mut shots) = device_named("laptop", false);
    {
        let s = &mut shots.settings;
        s.add_filter(r"age1[0-9a-z]{58}", "[AGE]");
        s.add_filter(r"ssh-ed25519 [A-Za-z0-9+/=]+", "ssh-ed25519 [SSH]");
        s.add_filter(
            r#""keyring_available":(true|false)"#,
            r#""keyring_available":[BOOL]"#,
        );
        s.add_filter(
            r#""keyring_here":("secret-service"|"keyutils"|null)"#,
            r#""keyring_here":[STORE]"#,
        );
    }
    let with_pass = |args: &[&str], stdin: &[u8]| {
        let mut c = sb.cmd(args);
        c.env("SHELLDONE_VAULT_PASSPHRASE", "pw");
        expect_code(&crate::support::run_with_stdin(c, stdin), 0, args);
    };
    // No keys yet.
    shots.json(
        "json_vault_status_none",
        "vault status",
        &sb,
        0,
        &["--json", "vault", "status"],
    );
    with_pass(&["key", "init", "--backend", "passphrase"], b"");
    with_pass(&["secret", "set", "token"], b"value-1");
    shots.json(
        "json_secret_list",
        "secret list",
        &sb,
        0,
        &["--json", "secret", "list"],
    );
    let show = shots.json(
        "json_key_show",
        "key show",
        &sb,
        0,
        &["--json", "key", "show"],
    );
    let (age, ssh) = (show["age"].as_str().unwrap(), show["ssh"].as_str().unwrap());
    let ssh: Vec<&str> = ssh.split_whitespace().take(2).collect();
    with_pass(&["key", "trust", "laptop", age, ssh[0], ssh[1]], b"");
    with_pass(&["key", "export", "--paper"], b"");
    shots.json(
        "json_key_list",
        "key list",
        &sb,
        0,
        &["--json", "key", "list"],
    );
    // Locked: no passphrase given, and `status` never asks.
    shots.json(
        "json_vault_status_locked",
        "vault status",
        &sb,
        0,
        &["--json", "vault", "status"],
    );
    shots.run(
        "vault_secret_get_locked",
        &sb,
        8,
        &["secret", "get", "token"],
    );
}

#[test]
fn key_import_through_an_encrypted_remote_document() {
    let run = |sb: &Sandbox, args: &[&str], stdin: &[u8]| -> Output {
        let mut c = sb.cmd(args);
        c.env("SHELLDONE_VAULT_PASSPHRASE", "pw");
        let o = crate::support::run_with_stdin(c, stdin);
        expect_code(&o, 0, args);
        o
    };
    let (a, _) = device_named("laptop", true);
    run(&a, &["key", "init", "--backend", "passphrase"], b"");
    let paper = String::from_utf8(run(&a, &["key", "export", "--paper"], b"").stdout).unwrap();
    let paper = paper
        .lines()
        .find_map(|l| l.trim().strip_prefix("whole: "))
        .expect("the paper key")
        .to_owned();
    a.save("with a paper key");
    let remote = a.dir.path().join("remote");
    let remote = remote.to_str().unwrap();
    run(
        &a,
        &["remote", "add", "box", remote, "--init", "--encrypt"],
        b"",
    );
    run(&a, &["sync", "push", "box"], b"");
    // Every device lost: a new one gets back in with the paper key.
    let (c, mut shots) = device_named("desk", false);
    shots.settings.add_filter(r"age1[0-9a-z]{58}", "[AGE]");
    shots
        .settings
        .add_filter(r#""objects":\d+"#, r#""objects":[N]"#);
    run(&c, &["key", "init", "--backend", "passphrase"], b"");
    run(&c, &["remote", "add", "box", remote, "--encrypt"], b"");
    let args = ["--json", "key", "import", "--remote", "box"];
    let o = run(&c, &args, paper.as_bytes());
    shots.snap("json_key_import_remote", &args, &o);
    let v: Value = serde_json::from_slice(&o.stdout).expect("one document");
    assert_eq!(v["rewrapped"], true, "{v}");
    documented::check("key import", &v).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn backup_run_list_verify_restore_prune() {
    let (sb, mut shots) = device_named("laptop", true);
    shots.settings.add_filter(r"\d{8}T\d{6}Z", "[BUNDLE_TIME]");
    shots
        .settings
        .add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", "[TIME]");
    shots
        .settings
        .add_filter(r#""size":\d+"#, r#""size":[SIZE]"#);
    shots
        .settings
        .add_filter(r"\b\d{4,} bytes\b", "[SIZE] bytes");
    shots.settings.add_filter(r"  +\d+  ", "  [SIZE]  ");
    sb.ok(&["state", "save", "-m", "first"]);
    let v = shots.json(
        "json_backup_run",
        "backup run",
        &sb,
        0,
        &["--json", "backup", "run"],
    );
    assert_eq!(v["bundle"]["encrypted"], false);
    let id = v["bundle"]["id"].as_str().unwrap().to_owned();
    shots.json(
        "json_backup_list",
        "backup list",
        &sb,
        0,
        &["--json", "backup", "list"],
    );
    shots.run("backup_list", &sb, 0, &["backup", "list"]);
    shots.json(
        "json_backup_verify",
        "backup verify",
        &sb,
        0,
        &["--json", "backup", "verify", "--full", &id],
    );
    shots.json(
        "json_backup_restore",
        "backup restore",
        &sb,
        0,
        &["--json", "backup", "restore", &id],
    );
    shots.json(
        "json_backup_prune",
        "backup prune",
        &sb,
        0,
        &["--json", "backup", "prune", "--keep-last", "1", "--dry-run"],
    );
    shots.run("backup_prune_no_rule", &sb, 2, &["backup", "prune"]);
}

/// Issue #18: the journal's and telemetry's documents.
#[test]
fn journal_and_telemetry_documents() {
    let sb = Sandbox::new();
    let mut shots = Shots::new();
    shots.path(sb.dir.path(), "[SANDBOX]");
    {
        let s = &mut shots.settings;
        s.add_filter(r"\b[0-9a-f]{32}\b", "[EVENT_ID]");
        s.add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", "[TIME]");
        s.add_filter(r"seg-\d{8}-", "seg-[DATE]-");
        // Also inside `telemetry show --json`'s strings, where the quotes are escaped.
        s.add_filter(r#"(hour\\?":\\?")[0-9T-]+"#, "${1}[HOUR]");
        s.add_filter(r#"(ms\\?":)\d+"#, "${1}[MS]");
    }
    shots.volatile();
    shots.json(
        "json_journal_append",
        "journal append",
        &sb,
        0,
        &[
            "journal",
            "append",
            "command",
            "--session",
            "s1",
            "--tag",
            "sigma::guard",
            "cmd=ls",
            "--json",
        ],
    );
    shots.run("journal_append", &sb, 0, &["journal", "append", "focus"]);
    shots.json(
        "json_journal_tail",
        "journal tail",
        &sb,
        0,
        &["journal", "tail", "--json"],
    );
    shots.run("journal_tail", &sb, 0, &["journal", "tail"]);
    let v = shots.json(
        "json_journal_tail_-f",
        "journal tail -f",
        &sb,
        0,
        &[
            "journal",
            "tail",
            "-n",
            "1",
            "-f",
            "--max-runtime",
            "0",
            "--json",
        ],
    );
    assert_eq!(v["event"]["kind"], "focus");
    shots.json(
        "json_journal_status",
        "journal status",
        &sb,
        0,
        &["journal", "status", "--json"],
    );
    shots.run("journal_status", &sb, 0, &["journal", "status"]);
    shots.json(
        "json_telemetry_status",
        "telemetry status",
        &sb,
        0,
        &["telemetry", "status", "--json"],
    );
    shots.json(
        "json_telemetry_enable",
        "telemetry enable",
        &sb,
        0,
        &["telemetry", "enable", "--json"],
    );
    sb.ok(&["journal", "append", "k"]);
    shots.json(
        "json_telemetry_show",
        "telemetry show",
        &sb,
        0,
        &["telemetry", "show", "--json"],
    );
    shots.run("telemetry_show", &sb, 0, &["telemetry", "show"]);
    shots.json(
        "json_telemetry_disable",
        "telemetry disable",
        &sb,
        0,
        &["telemetry", "disable", "--json"],
    );
}

/// `migrate` (dry run, run, again, status, undo) on the frozen version-1 store, and `remote
/// upgrade` (docs/migrations.md).
#[test]
fn migrate_and_remote_upgrade_documents() {
    let sb = crate::compat::fixture("store-v1");
    let mut shots = Shots::new();
    shots.path(sb.dir.path(), "[DIR]");
    shots
        .settings
        .add_filter(r#""created":\d+"#, r#""created":[TIME]"#);
    shots.volatile();
    shots.run("migrate_dry_run", &sb, 0, &["migrate", "--dry-run"]);
    shots.run("migrate_log_read_through", &sb, 0, &["log", "--oneline"]);
    shots.json(
        "json_migrate_dry_run",
        "migrate",
        &sb,
        0,
        &["--json", "migrate", "--dry-run"],
    );
    shots.run("migrate_run", &sb, 0, &["migrate"]);
    shots.run("migrate_again", &sb, 0, &["migrate"]);
    shots.run("migrate_status", &sb, 0, &["migrate", "--status"]);
    shots.json(
        "json_migrate_status",
        "migrate status",
        &sb,
        0,
        &["--json", "migrate", "--status"],
    );
    shots.json(
        "json_migrate_undo",
        "migrate undo",
        &sb,
        0,
        &["--json", "migrate", "--undo"],
    );
    shots.json(
        "json_migrate_run",
        "migrate",
        &sb,
        0,
        &["--json", "migrate"],
    );
    shots.run("migrate_undo", &sb, 0, &["migrate", "--undo"]);
    shots.run("migrate_undo_nothing", &sb, 2, &["migrate", "--undo"]);

    let sb = Sandbox::new();
    let remote = tempfile::tempdir().expect("tempdir");
    let mut shots = Shots::new();
    shots.path(sb.dir.path(), "[DIR]");
    shots.path(remote.path(), "[REMOTE]");
    sb.ok(&["device", "show"]);
    shots.device(&sb, "[DEVICE]");
    shots.volatile();
    let url = remote.path().join("r");
    sb.ok(&[
        "remote",
        "add",
        "origin",
        url.to_str().expect("utf8"),
        "--init",
    ]);
    shots.run(
        "remote_upgrade_nothing",
        &sb,
        0,
        &["remote", "upgrade", "origin"],
    );
    let o = sb
        .cmd(&["--json", "remote", "upgrade", "origin"])
        .env("SHELLDONE_TEST_REMOTE_FORMAT", "2")
        .output()
        .expect("spawn");
    let args = ["--json", "remote", "upgrade", "origin"];
    expect_code(&o, 0, &args);
    shots.snap("json_remote_upgrade", &args, &o);
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(documented::check("remote upgrade", &v).expect("documented") > 0);
    shots.run("remote_upgrade_newer", &sb, 6, &["sync", "push"]);
}
