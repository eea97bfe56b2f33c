//! Issue #4: push and pull between two devices through a real git daemon and a plain directory.

use std::process::Command;

use crate::support::{GitDaemon, Sandbox, assert_same};

pub(crate) fn device(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.state().join("snapshots/device"))
        .unwrap()
        .trim()
        .to_owned()
}

pub(crate) fn fsck(repo: &std::path::Path) {
    let o = Command::new("git")
        .args(["fsck", "--strict"])
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git fsck --strict: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

pub(crate) fn two_devices_roundtrip(url: &str) -> (Sandbox, Sandbox) {
    let a = Sandbox::new();
    let b = Sandbox::new();
    a.generate();
    a.save("from A");
    a.ok(&["remote", "add", "origin", url, "--init"]);
    let pushed: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "sync", "push"])).unwrap();
    assert!(pushed["objects_sent"].as_u64().unwrap() > 10, "{pushed}");
    // B is a new machine: pull brings the whole state.
    b.ok(&["remote", "add", "origin", url, "--init"]);
    let pulled: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "sync", "pull"])).unwrap();
    assert_eq!(pulled["restored"], true, "{pulled}");
    assert_same(&b.live(), &a.live());
    assert!(b.ok(&["state", "check"]).contains("no problems"));
    // B changes a session and a preference, pushes; A pulls and sees it.
    std::fs::write(
        b.state().join("sessions/s001/session.json"),
        "{\"id\":\"s001\",\"from\":\"B\"}",
    )
    .unwrap();
    std::fs::write(b.config().join("config.toml"), "font_size = 20\n").unwrap();
    b.save("from B");
    b.ok(&["sync", "push"]);
    let out = a.ok(&["sync", "pull"]);
    assert!(out.contains("fast-forwarded"), "{out}");
    assert_same(&a.live(), &b.live());
    // Pushing again with nothing new sends nothing.
    let again: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "sync", "push"])).unwrap();
    assert_eq!(again["objects_sent"], 0, "{again}");
    (a, b)
}

#[test]
fn git_remote_two_devices_byte_identical_and_fsck_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let d = GitDaemon::start(&tmp.path().join("srv"));
    let (url, repo) = d.repo("state.git");
    let (a, b) = two_devices_roundtrip(&url);
    fsck(&repo);
    // The remote is a browsable git repository: each device's head is a branch.
    let clone = tmp.path().join("clone");
    assert!(
        Command::new("git")
            .args(["clone", "-q", &url])
            .arg(&clone)
            .status()
            .unwrap()
            .success()
    );
    let log = Command::new("git")
        .args(["log", "--format=%an %s", &format!("origin/{}", device(&b))])
        .current_dir(&clone)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.contains("from B") && log.contains("from A"), "{log}");
    let _ = a;
}

#[test]
fn dir_remote_two_devices_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("syncthing-folder");
    two_devices_roundtrip(remote.to_str().unwrap());
    assert!(remote.join("shelldone-remote").exists());
}

#[test]
fn concurrent_changes_merge_and_conflicts_keep_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let d = GitDaemon::start(&tmp.path().join("srv"));
    let (url, repo) = d.repo("state.git");
    let (a, b) = two_devices_roundtrip(&url);
    // Different sessions and different preference keys on each side.
    std::fs::write(
        a.state().join("sessions/s002/session.json"),
        "{\"id\":\"s002\",\"by\":\"A\"}",
    )
    .unwrap();
    std::fs::write(
        b.state().join("sessions/s003/session.json"),
        "{\"id\":\"s003\",\"by\":\"B\"}",
    )
    .unwrap();
    std::fs::write(
        a.config().join("keymap.json"),
        "{\"ctrl+shift+t\":\"new_tab\",\"ctrl+shift+w\":\"close_window\"}",
    )
    .unwrap();
    std::fs::write(
        b.config().join("keymap.json"),
        "{\"ctrl+shift+t\":\"new_tab\",\"ctrl+shift+w\":\"close_tab\",\"ctrl+k\":\"clear\"}",
    )
    .unwrap();
    // The same session on both: a conflict.
    std::fs::write(
        a.state().join("sessions/s004/session.json"),
        "{\"id\":\"s004\",\"by\":\"A\"}",
    )
    .unwrap();
    std::fs::write(
        b.state().join("sessions/s004/session.json"),
        "{\"id\":\"s004\",\"by\":\"B\"}",
    )
    .unwrap();
    // Journals appended on both sides.
    std::fs::OpenOptions::new()
        .append(true)
        .open(a.state().join("journal/0001.jsonl"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"a\":1}\n"))
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(b.state().join("journal/0001.jsonl"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"b\":1}\n"))
        .unwrap();
    a.save("A side");
    b.save("B side");
    a.ok(&["sync", "push"]);
    // A pull that leaves a conflict exits 7 (docs/cli.md).
    let r: serde_json::Value =
        serde_json::from_str(&b.code(7, &["--json", "sync", "pull"])).unwrap();
    let conflicts = r["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{r}");
    assert_eq!(conflicts[0]["kind"], "session");
    assert_eq!(conflicts[0]["path"], "state/sessions/s004");
    let id = conflicts[0]["id"].as_str().unwrap().to_owned();
    // The newer version (B saved last) is kept on every device; A's is set aside. B took A's
    // s002, kept its s003; keymap merged key by key; journal has both tails.
    assert!(
        std::fs::read_to_string(b.state().join("sessions/s004/session.json"))
            .unwrap()
            .contains("\"B\"")
    );
    assert!(
        std::fs::read_to_string(b.state().join("sessions/s002/session.json"))
            .unwrap()
            .contains("\"A\"")
    );
    assert!(
        std::fs::read_to_string(b.state().join("sessions/s003/session.json"))
            .unwrap()
            .contains("\"B\"")
    );
    let km: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.config().join("keymap.json")).unwrap())
            .unwrap();
    assert_eq!(km["ctrl+shift+w"], "close_window");
    assert_eq!(km["ctrl+k"], "clear");
    let j = std::fs::read_to_string(b.state().join("journal/0001.jsonl")).unwrap();
    assert!(
        j.ends_with("{\"a\":1}\n{\"b\":1}\n") || j.ends_with("{\"b\":1}\n{\"a\":1}\n"),
        "both journal tails kept"
    );
    // A's version of s004 is shown by `conflicts show`.
    let shown = b.ok(&["conflicts", "show", &id[..8]]);
    assert!(
        shown.contains("\"A\"") && shown.contains("\"B\""),
        "{shown}"
    );
    let log = b.ok(&["log", "-n", "3"]);
    assert!(log.contains("merge"), "{log}");
    // B pushes the merge; A pulls and fast-forwards to it: A's own s004 is replaced by B's,
    // and A is told (the conflict travelled with the merge), with exit 7.
    b.ok(&["sync", "push"]);
    let r: serde_json::Value =
        serde_json::from_str(&a.code(7, &["--json", "sync", "pull"])).unwrap();
    assert_eq!(r["conflicts"][0]["id"], id.as_str(), "{r}");
    assert_eq!(
        r["conflicts"][0]["other_device"],
        a.ok(&["device", "show"]).trim()
    );
    assert_same(&a.live(), &b.live());
    fsck(&repo);
    // A takes its own version back; the resolution is a snapshot that travels too.
    a.ok(&["conflicts", "resolve", &id, "--theirs"]);
    assert!(
        std::fs::read_to_string(a.state().join("sessions/s004/session.json"))
            .unwrap()
            .contains("\"A\"")
    );
    assert_eq!(a.ok(&["conflicts"]).trim(), "no open conflicts");
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull"]);
    assert_eq!(b.ok(&["conflicts"]).trim(), "no open conflicts");
    assert_same(&a.live(), &b.live());
    let status = a.ok(&["sync", "status"]);
    assert!(status.contains("(this device)"), "{status}");
}

#[test]
fn simultaneous_pushes_fifty_rounds_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = GitDaemon::start(&tmp.path().join("srv"));
    let (url, repo) = d.repo("state.git");
    let (a, b) = two_devices_roundtrip(&url);
    let rounds: usize = std::env::var("SHELLDONE_SYNC_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    for round in 0..rounds {
        std::fs::write(
            a.state().join("sessions/s000/session.json"),
            format!("{{\"round\":{round},\"by\":\"A\"}}"),
        )
        .unwrap();
        std::fs::write(
            b.state().join("sessions/s001/session.json"),
            format!("{{\"round\":{round},\"by\":\"B\"}}"),
        )
        .unwrap();
        a.save(&format!("A {round}"));
        b.save(&format!("B {round}"));
        let pa = a.cmd(&["sync", "push"]).output_spawn();
        let pb = b.cmd(&["sync", "push"]).output_spawn();
        for (p, who) in [(pa, "A"), (pb, "B")] {
            let o = p.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round}: push from {who}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        a.ok(&["sync", "pull"]);
        b.ok(&["sync", "pull"]);
        for sb in [&a, &b] {
            let s0 =
                std::fs::read_to_string(sb.state().join("sessions/s000/session.json")).unwrap();
            let s1 =
                std::fs::read_to_string(sb.state().join("sessions/s001/session.json")).unwrap();
            assert_eq!(
                s0,
                format!("{{\"round\":{round},\"by\":\"A\"}}"),
                "round {round}"
            );
            assert_eq!(
                s1,
                format!("{{\"round\":{round},\"by\":\"B\"}}"),
                "round {round}"
            );
        }
        // Push merges so the next round starts from a shared history.
        a.ok(&["sync", "push"]);
        b.ok(&["sync", "pull"]);
        b.ok(&["sync", "push"]);
        a.ok(&["sync", "pull"]);
    }
    fsck(&repo);
    assert!(a.ok(&["state", "check"]).contains("no problems"));
}

trait SpawnOut {
    fn output_spawn(&mut self) -> std::process::Child;
}
impl SpawnOut for Command {
    fn output_spawn(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[test]
fn partial_strategy_fetches_only_the_newest_snapshot_and_checks_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote");
    let a = Sandbox::new();
    a.generate();
    a.save("one");
    std::fs::write(a.config().join("x.toml"), "x = 1\n").unwrap();
    a.save("two");
    std::fs::write(a.config().join("x.toml"), "x = 2\n").unwrap();
    a.save("three");
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
    b.ok(&["sync", "pull", "--strategy", "partial"]);
    assert_same(&b.live(), &a.live());
    let log: serde_json::Value = serde_json::from_str(&b.ok(&["--json", "log"])).unwrap();
    let msgs: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        msgs.contains(&"three") && !msgs.contains(&"one"),
        "only the newest snapshot came: {msgs:?}"
    );
    assert!(b.ok(&["state", "check"]).contains("no problems"));
    b.ok(&["state", "gc"]);
    // A full pull later brings the rest of the history.
    b.ok(&["sync", "pull"]);
    let log: serde_json::Value = serde_json::from_str(&b.ok(&["--json", "log"])).unwrap();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"] == "one"),
        "{log}"
    );
}

#[test]
fn pull_of_selected_sessions_leaves_the_others_alone_and_no_restore_only_fetches() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote");
    let (a, b) = {
        let a = Sandbox::new();
        a.generate();
        a.save("base");
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
        (a, b)
    };
    // B saves something of its own so that A's next change cannot fast-forward.
    std::fs::write(b.config().join("b.toml"), "b = 1\n").unwrap();
    b.save("b local");
    std::fs::write(
        a.state().join("sessions/s001/session.json"),
        "{\"by\":\"A\",\"s\":1}",
    )
    .unwrap();
    std::fs::write(
        a.state().join("sessions/s002/session.json"),
        "{\"by\":\"A\",\"s\":2}",
    )
    .unwrap();
    a.save("a changes two sessions");
    a.ok(&["sync", "push"]);
    let before = std::fs::read(b.state().join("sessions/s001/session.json")).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "sync", "pull", "--no-restore"])).unwrap();
    assert_eq!(r["restored"], false, "{r}");
    assert_eq!(
        std::fs::read(b.state().join("sessions/s001/session.json")).unwrap(),
        before,
        "--no-restore touches no live file"
    );
    b.ok(&["sync", "pull", "--session", "s002"]);
    assert_eq!(
        std::fs::read(b.state().join("sessions/s001/session.json")).unwrap(),
        before,
        "s001 not selected"
    );
    assert!(
        std::fs::read_to_string(b.state().join("sessions/s002/session.json"))
            .unwrap()
            .contains("\"A\"")
    );
}

/// `git http-backend` behind Python's CGI server on 127.0.0.1, killed on drop.
struct HttpGit {
    child: std::process::Child,
    port: u16,
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn git_remote_over_smart_http() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(srv.join("cgi-bin")).unwrap();
    assert!(
        Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(srv.join("state.git"))
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("git")
            .args(["config", "http.receivepack", "true"])
            .current_dir(srv.join("state.git"))
            .status()
            .unwrap()
            .success()
    );
    let cgi = srv.join("cgi-bin/git");
    std::fs::write(
        &cgi,
        "#!/bin/sh\nexec \"$(git --exec-path)/git-http-backend\"\n",
    )
    .unwrap();
    // The CGI server drops to `nobody` when run as root: let it read and write the repository.
    assert!(
        Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(&srv)
            .status()
            .unwrap()
            .success()
    );
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--cgi",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&srv)
        .env("GIT_PROJECT_ROOT", &srv)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", "*")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let server = HttpGit { child, port };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let url = format!("http://127.0.0.1:{}/cgi-bin/git/state.git", server.port);
    let a = Sandbox::new();
    let b = Sandbox::new();
    // Small enough that git sends one request body (Python's CGI server does not take chunked ones).
    std::fs::create_dir_all(a.state().join("sessions/s1")).unwrap();
    std::fs::write(
        a.state().join("sessions/s1/session.json"),
        "{\"id\":\"s1\"}",
    )
    .unwrap();
    std::fs::create_dir_all(a.config()).unwrap();
    std::fs::write(a.config().join("config.toml"), "font_size = 13\n").unwrap();
    a.save("over http");
    a.ok(&["remote", "add", "origin", &url, "--init"]);
    a.ok(&["sync", "push"]);
    b.ok(&["remote", "add", "origin", &url, "--init"]);
    b.ok(&["sync", "pull"]);
    assert_same(&b.live(), &a.live());
    fsck(&srv.join("state.git"));
}
