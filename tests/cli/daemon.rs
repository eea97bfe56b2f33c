//! `sync daemon` (issue #12, "a daemon that behaves"): it saves what changed before it
//! started, stops cleanly on SIGTERM and SIGINT (saving and pushing what is left), pulls on an
//! interval, refuses an unknown remote, exits non-zero when every push failed, and stamps every
//! line with the time. The systemd units in docs/systemd/ are checked against the binary.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::documented;
use crate::support::{GitDaemon, Sandbox, assert_same};
use crate::sync::{device, fsck, two_devices_roundtrip};

/// Whether `t` is an RFC 3339 UTC time to the second (`2026-11-30T21:40:02Z`) within a day of
/// now (the daemon's clock is the test's).
fn is_utc_time(t: &str) -> bool {
    let b = t.as_bytes();
    let shape = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return false;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Days since the epoch from the date (Howard Hinnant's days-from-civil), for the check
    // that the stamp is today's (or yesterday's, just after midnight).
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let today = i64::try_from(now / 86_400).unwrap();
    days == today || days == today - 1
}

/// A running `sync daemon` (`--poll 0.1`) whose stdout lines arrive on a channel: tests wait for
/// the line they expect (bounded by a deadline) instead of for a fixed runtime, then stop it
/// with SIGTERM. Killed on drop, so a failing test leaves no process behind.
///
/// Every line is checked as it arrives: a human line must start with an RFC 3339 UTC time and a
/// space (the time is removed before the test sees the line); a `--json` line must be a
/// documented `sync daemon` event with a `time`.
struct Daemon {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    json: bool,
    /// Every line received so far, for failure messages.
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// How long a test waits for a line it expects before it fails (generous: CI shares 2 cores
/// with the other tests).
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

impl Daemon {
    /// Starts `[--json] sync daemon --poll 0.1 EXTRA…` without waiting for anything.
    fn spawn(sb: &Sandbox, json: bool, extra: &[&str]) -> Daemon {
        let mut args = vec!["sync", "daemon", "--poll", "0.1"];
        if json {
            args.insert(0, "--json");
        }
        args.extend_from_slice(extra);
        let mut child = sb
            .cmd(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        // Ends at EOF, that is when the daemon exits.
        std::thread::spawn(move || {
            for l in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        Daemon {
            child,
            lines,
            json,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Starts `sync daemon --poll 0.1 EXTRA…` and waits for its `watching` line.
    fn start(sb: &Sandbox, extra: &[&str]) -> Daemon {
        let mut d = Daemon::spawn(sb, false, extra);
        d.wait_for("the watching line", |l| l.starts_with("watching "));
        d
    }

    /// Starts `--json sync daemon --poll 0.1 EXTRA…` and waits for its `watching` event.
    fn start_json(sb: &Sandbox, extra: &[&str]) -> Daemon {
        let mut d = Daemon::spawn(sb, true, extra);
        d.wait_for("the watching event", |l| event(l) == "watching");
        d
    }

    /// A line as the daemon wrote it, checked (see [`Daemon`]); the human line without its time.
    fn checked(&self, l: &str) -> String {
        if self.json {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            documented::check("sync daemon", &v).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                v["time"].as_str().is_some_and(is_utc_time),
                "no RFC 3339 UTC `time` in {l}"
            );
            return l.to_owned();
        }
        match l.split_once(' ') {
            Some((t, rest)) if is_utc_time(t) => rest.to_owned(),
            _ => panic!("a daemon line without an RFC 3339 UTC time first: {l:?}"),
        }
    }

    /// The next line for which `pred` holds (lines before it are kept in `seen`); fails after
    /// [`EVENT_DEADLINE`] or when the daemon ends first.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + EVENT_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let l = self.checked(&l);
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(e) => panic!(
                    "waiting for {what}: {e:?} after {EVENT_DEADLINE:?}; the daemon said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line that arrives within `window` (for "nothing happens" checks).
    fn lines_within(&mut self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(self.checked(&l)),
                // Timeout: the window is over. Disconnected: the daemon ended, which the
                // caller's next step (`stop`, `wait_exit`) checks.
                Err(_) => break,
            }
        }
        self.seen.extend(got.iter().cloned());
        got
    }

    /// Sends `signal` and waits (bounded) for the clean stop it asks for: a last `stopped`
    /// line naming it, exit 0. Returns everything the daemon wrote to stderr.
    fn stop_by(mut self, signal: rustix::process::Signal) -> String {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
        let status = self.wait_exit();
        let reason = if signal == rustix::process::Signal::INT {
            "sigint"
        } else {
            "sigterm"
        };
        let last = self.seen.last().cloned().unwrap_or_default();
        let stopped = if self.json {
            event(&last) == "stopped"
                && serde_json::from_str::<Value>(&last).unwrap()["reason"] == reason
        } else {
            last == format!("stopped ({reason}), exit 0")
        };
        assert!(
            status.code() == Some(0) && stopped,
            "a clean stop on {reason}: {status:?}; it said:\n{}",
            self.seen.join("\n")
        );
        self.stderr.take().unwrap().join().unwrap()
    }

    /// Stops a `--json` daemon with SIGTERM (exit 0) and returns its `stopped` event.
    fn stopped_event(mut self) -> Value {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = self.wait_exit();
        let last: Value = serde_json::from_str(self.seen.last().unwrap()).unwrap();
        assert!(
            status.code() == Some(0) && last["event"] == "stopped",
            "a clean stop: {status:?}; it said:\n{}",
            self.seen.join("\n")
        );
        last
    }

    /// [`Daemon::stop_by`] SIGTERM.
    fn stop(self) -> String {
        self.stop_by(rustix::process::Signal::TERM)
    }

    /// Waits (bounded by [`EVENT_DEADLINE`]) for the daemon to exit; the rest of its stdout
    /// goes to `seen`.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + EVENT_DEADLINE;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {EVENT_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF; the channel then disconnects.
        while let Ok(l) = self.lines.recv_timeout(EVENT_DEADLINE) {
            let l = self.checked(&l);
            self.seen.push(l);
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `event` of a `--json` line.
fn event(l: &str) -> String {
    serde_json::from_str::<Value>(l).unwrap()["event"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The message of the newest snapshot.
fn head_message(sb: &Sandbox) -> String {
    let log: Value = serde_json::from_str(&sb.ok(&["--json", "log", "-n", "1"])).unwrap();
    log[0]["message"].as_str().unwrap().to_owned()
}

/// A directory remote `origin` that `a` (generated, saved, pushed) and `b` (pulled) share.
fn two_devices_on_a_dir_remote(remote: &Path) -> (Sandbox, Sandbox) {
    let url = remote.to_str().unwrap();
    let a = Sandbox::new();
    a.generate();
    a.save("base");
    a.ok(&["remote", "add", "origin", url, "--init"]);
    a.ok(&["sync", "push"]);
    let b = Sandbox::new();
    b.ok(&["remote", "add", "origin", url]);
    b.ok(&["sync", "pull"]);
    assert_same(&b.live(), &a.live());
    (a, b)
}

#[test]
fn daemon_saves_on_change_and_writes_nothing_when_idle() {
    let a = Sandbox::new();
    a.generate();
    a.save("base");
    let snaps_before = a.ok(&["--json", "log"]);
    let mut d = Daemon::start(&a, &["--debounce", "0.3"]);
    // Idle: ten polls see nothing changed; nothing is said and nothing is written.
    assert_eq!(d.lines_within(Duration::from_secs(1)), Vec::<String>::new());
    assert_eq!(a.ok(&["--json", "log"]), snaps_before);
    // A change while the daemon runs is saved after the debounce, once.
    std::fs::write(a.config().join("config.toml"), "font_size = 30\n").unwrap();
    let saved = d.wait_for("a save", |l| l.starts_with("saved "));
    let log: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "log", "-n", "1"])).unwrap();
    assert_eq!(log[0]["message"], "daemon: saved on change");
    let id = log[0]["id"].as_str().unwrap();
    assert!(
        id.starts_with(saved.trim_start_matches("saved ")),
        "{saved} {id}"
    );
    // Nothing else changes: the debounce and ten more polls pass without a second save.
    assert_eq!(d.lines_within(Duration::from_secs(1)), Vec::<String>::new());
    d.stop();
}

/// Issue #13: watching (inotify), an idle daemon sleeps — no poll, no walk of the live state —
/// and a change is saved re-reading only what changed; with `sync.daemon.watch = false` it
/// polls (the fallback where watching is impossible), walking the live state at every poll.
#[test]
fn daemon_watching_wakes_nothing_when_idle_and_saves_only_what_changed() {
    let a = Sandbox::new();
    a.generate();
    a.save("base");
    let mut d = Daemon::start_json(&a, &["--debounce", "0.2"]);
    let watching: Value = serde_json::from_str(&d.seen[d.seen.len() - 1]).unwrap();
    assert_eq!(watching["method"], "inotify", "{watching}");
    assert_eq!(watching["fallback"], Value::Null);
    // Idle for 1.5 s: a poll every 0.1 s would be 15 walks; watching, nothing happens.
    assert_eq!(
        d.lines_within(Duration::from_millis(1500)),
        Vec::<String>::new()
    );
    std::fs::write(a.config().join("config.toml"), "font_size = 31\n").unwrap();
    d.wait_for("a save", |l| event(l) == "saved");
    let stopped = d.stopped_event();
    assert_eq!(stopped["full_scans"], 0, "{stopped}");
    assert_eq!(stopped["incremental_saves"], 1, "{stopped}");
    // Woken by the change's events (one or a few batches), the end of its debounce and the
    // stop signal: never by a timer while idle.
    let wakeups = stopped["wakeups"].as_u64().unwrap();
    assert!((2..=8).contains(&wakeups), "{stopped}");
    let log: Value = serde_json::from_str(&a.ok(&["--json", "log", "-n", "1"])).unwrap();
    assert_eq!(log[0]["message"], "daemon: saved on change");

    // The fallback: polling, said in the `watching` event, a full walk at every poll.
    std::fs::write(
        a.config().join("shelldone.toml"),
        "[sync.daemon]\nwatch = false\n",
    )
    .unwrap();
    a.save("config");
    let mut d = Daemon::start_json(&a, &["--debounce", "0.2"]);
    let watching: Value = serde_json::from_str(&d.seen[d.seen.len() - 1]).unwrap();
    assert_eq!(watching["method"], "poll", "{watching}");
    assert_eq!(watching["fallback"], "sync.daemon.watch is false");
    assert_eq!(
        d.lines_within(Duration::from_millis(1000)),
        Vec::<String>::new()
    );
    std::fs::write(a.config().join("config.toml"), "font_size = 32\n").unwrap();
    d.wait_for("a save", |l| event(l) == "saved");
    let stopped = d.stopped_event();
    assert!(stopped["full_scans"].as_u64().unwrap() >= 5, "{stopped}");
    assert_eq!(stopped["incremental_saves"], 0, "{stopped}");
}

/// Point 1: what changed while no daemon ran is saved at start, before it watches; with
/// nothing changed, nothing is saved.
#[test]
fn daemon_saves_at_start_what_changed_before_it_started() {
    let a = Sandbox::new();
    a.generate();
    a.save("base");
    std::fs::write(a.config().join("config.toml"), "font_size = 25\n").unwrap();
    // A debounce longer than the test: the save can only be the one at start.
    let mut d = Daemon::spawn(&a, false, &["--debounce", "600"]);
    let first = d.wait_for("the first line", |_| true);
    assert!(first.starts_with("saved "), "{first}");
    d.wait_for("the watching line", |l| l.starts_with("watching "));
    assert_eq!(
        head_message(&a),
        "daemon: saved changes made while it was not running"
    );
    d.stop();
    let mut d = Daemon::spawn(&a, false, &["--debounce", "600"]);
    let first = d.wait_for("the first line", |_| true);
    assert!(first.starts_with("watching "), "nothing to save: {first}");
    d.stop();
}

/// Point 2: SIGTERM and SIGINT stop it cleanly. A change still in its debounce is saved, what
/// is saved is pushed, the last line says why, the exit code is 0, and another device pulls
/// the change.
#[test]
fn daemon_stops_on_sigterm_and_sigint_saving_and_pushing_what_is_left() {
    use rustix::process::Signal;
    for (signal, size) in [(Signal::TERM, 41), (Signal::INT, 42)] {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = two_devices_on_a_dir_remote(&tmp.path().join("remote"));
        // Nothing would be saved or pushed for ten minutes but for the stop.
        let mut d = Daemon::start(
            &a,
            &[
                "--remote",
                "origin",
                "--debounce",
                "600",
                "--push-interval",
                "600",
                "--pull-interval",
                "0",
            ],
        );
        std::fs::write(
            a.config().join("config.toml"),
            format!("font_size = {size}\n"),
        )
        .unwrap();
        // Seen by a poll (0.1 s), not saved: the debounce holds it.
        assert_eq!(
            d.lines_within(Duration::from_millis(500)),
            Vec::<String>::new()
        );
        let seen_before = d.seen.len();
        let mut tail = Vec::new();
        let err = {
            let pid = rustix::process::Pid::from_child(&d.child);
            rustix::process::kill_process(pid, signal).unwrap();
            let status = d.wait_exit();
            tail.extend(d.seen[seen_before..].iter().cloned());
            assert_eq!(status.code(), Some(0), "{}", d.seen.join("\n"));
            d.stderr.take().unwrap().join().unwrap()
        };
        assert!(err.is_empty(), "{err}");
        let reason = if signal == Signal::INT {
            "sigint"
        } else {
            "sigterm"
        };
        assert_eq!(tail.len(), 3, "saved, pushed, stopped: {tail:?}");
        assert!(tail[0].starts_with("saved "), "{tail:?}");
        assert!(tail[1].starts_with("pushed to origin: "), "{tail:?}");
        assert_eq!(tail[2], format!("stopped ({reason}), exit 0"));
        assert_eq!(head_message(&a), "daemon: saved on stop");
        b.ok(&["sync", "pull"]);
        assert_eq!(
            std::fs::read_to_string(b.config().join("config.toml")).unwrap(),
            format!("font_size = {size}\n")
        );
        assert_same(&b.live(), &a.live());
    }
}

/// Point 2: a signal that arrives while a save is under way does not cut it: the save
/// finishes, the daemon stops cleanly, and the store checks clean with the snapshot in it.
#[test]
fn daemon_finishes_the_save_under_way_when_signalled() {
    let a = Sandbox::new();
    // 64 MB never saved: the save at start takes a while (its staging dir shows it is on).
    a.generate();
    let mut d = Daemon::spawn(&a, false, &[]);
    let staging = a.state().join("snapshots/staging");
    let deadline = Instant::now() + EVENT_DEADLINE;
    while !std::fs::read_dir(&staging).is_ok_and(|mut r| r.next().is_some()) {
        assert!(
            Instant::now() < deadline && d.child.try_wait().unwrap().is_none(),
            "no save seen under way"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = rustix::process::Pid::from_child(&d.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", d.seen.join("\n"));
    assert_eq!(d.seen.len(), 3, "{:?}", d.seen);
    assert!(d.seen[0].starts_with("saved "), "{:?}", d.seen);
    assert!(d.seen[1].starts_with("watching "), "{:?}", d.seen);
    assert_eq!(d.seen[2], "stopped (sigterm), exit 0");
    assert_eq!(
        head_message(&a),
        "daemon: saved changes made while it was not running"
    );
    assert!(a.ok(&["state", "check"]).contains("no problems"));
    let again = a.ok(&["state", "save"]);
    assert!(
        again.starts_with("nothing changed"),
        "all was saved: {again}"
    );
}

/// Point 3: pulls on an interval. An edit another device pushed appears in the live files
/// while the daemon runs; an edit here that is not saved yet is saved before the next pull and
/// merged with the other device's, and the merge goes back to the remote.
#[test]
fn daemon_pulls_what_another_device_pushed_into_the_live_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = two_devices_on_a_dir_remote(&tmp.path().join("remote"));
    let mut d = Daemon::start_json(
        &a,
        &[
            "--remote",
            "origin",
            "--debounce",
            "600",
            "--push-interval",
            "1",
            "--pull-interval",
            "1",
        ],
    );
    std::fs::write(b.config().join("config.toml"), "font_size = 51\n").unwrap();
    b.save("from B");
    b.ok(&["sync", "push"]);
    let pulled = d.wait_for("B's edit pulled", |l| event(l) == "pulled");
    let v: Value = serde_json::from_str(&pulled).unwrap();
    assert_eq!(v["fast_forwarded"], serde_json::json!([device(&b)]), "{v}");
    assert_eq!(v["files_changed"], 1, "{v}");
    assert_eq!(
        std::fs::read_to_string(a.config().join("config.toml")).unwrap(),
        "font_size = 51\n"
    );
    // A's edit waits for its (long) debounce; B pushes another. The pull must not lose A's.
    std::fs::write(a.config().join("from-a.toml"), "a = 1\n").unwrap();
    std::fs::write(b.config().join("from-b.toml"), "b = 2\n").unwrap();
    b.save("from B again");
    b.ok(&["sync", "push"]);
    let merged = d.wait_for("the merge of B's second edit", |l| {
        event(l) == "pulled"
            && serde_json::from_str::<Value>(l).unwrap()["merged"] != serde_json::json!([])
    });
    assert!(merged.contains(&device(&b)), "{merged}");
    assert_eq!(
        std::fs::read_to_string(a.config().join("from-b.toml")).unwrap(),
        "b = 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(a.config().join("from-a.toml")).unwrap(),
        "a = 1\n"
    );
    let err = d.stop();
    assert!(err.is_empty(), "{err}");
    // The merge was pushed: B gets A's edit with its own.
    b.ok(&["sync", "pull"]);
    assert_same(&b.live(), &a.live());
}

/// Point 4: an unknown remote is refused at once, before anything is saved or watched.
#[test]
fn daemon_refuses_an_unknown_remote_before_doing_anything() {
    let a = Sandbox::new();
    a.generate();
    a.save("base");
    std::fs::write(a.config().join("config.toml"), "font_size = 61\n").unwrap();
    // `--max-runtime` only bounds the test should the check be gone.
    let o = a
        .cmd(&[
            "sync",
            "daemon",
            "--remote",
            "nosuch",
            "--max-runtime",
            "60",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no remote named 'nosuch'"), "{err}");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(head_message(&a), "base", "nothing was saved");
}

/// Point 5: when every push failed, the daemon ends with the push's error and exit code
/// (`--json`: the `stopped` event says which). Pull failures are reported the same way.
#[test]
fn daemon_exits_with_the_push_error_when_every_push_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("remote");
    let a = Sandbox::new();
    a.generate();
    a.save("base");
    a.ok(&["remote", "add", "origin", url.to_str().unwrap(), "--init"]);
    // The disk is gone for the whole run: every push and pull fails, each to be retried.
    std::fs::rename(&url, tmp.path().join("away")).unwrap();
    let mut d = Daemon::spawn(
        &a,
        true,
        &[
            "--remote",
            "origin",
            "--push-interval",
            "1",
            "--pull-interval",
            "1",
            "--max-runtime",
            "3",
        ],
    );
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(5), "{}", d.seen.join("\n"));
    let events: Vec<Value> = d
        .seen
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for kind in ["push-failed", "pull-failed"] {
        let failed: Vec<&Value> = events.iter().filter(|v| v["event"] == kind).collect();
        assert!(!failed.is_empty(), "{kind}: {events:?}");
        assert!(failed.iter().all(|v| v["retryable"] == true), "{failed:?}");
    }
    let last = events.last().unwrap();
    assert_eq!(last["event"], "stopped");
    assert_eq!(last["reason"], "max-runtime");
    assert_eq!(last["exit_code"], 5);
    let err = d.stderr.take().unwrap().join().unwrap();
    assert!(
        err.starts_with("{\"error\":\"remote 'origin'") && err.contains("\"exit_code\":5"),
        "{err}"
    );
}

/// Point 8: the units in docs/systemd/ parse, and every ExecStart is a command line the binary
/// accepts: run with `--help` appended, clap refuses an option or value the binary does not
/// have (shown below with a made-up option). With systemd-analyze, `verify --user` must pass
/// without a warning too.
#[test]
fn systemd_units_parse_and_name_only_options_the_binary_has() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/systemd");
    let mut units: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    units.sort();
    let names: Vec<String> = units
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "shelldone-state-backup.service",
            "shelldone-state-backup.timer",
            "shelldone-sync-once.service",
            "shelldone-sync-once.timer",
            "shelldone-sync.service"
        ]
    );
    let bin = env!("CARGO_BIN_EXE_shelldone");
    let accepts = |args: &[String]| {
        Command::new(bin)
            .args(args)
            .arg("--help")
            .output()
            .unwrap()
            .status
            .success()
    };
    let mut commands = 0;
    for (path, name) in units.iter().zip(&names) {
        let ini = parse_unit(&std::fs::read_to_string(path).unwrap(), name);
        let get = |section: &str, key: &str| -> Vec<String> {
            ini.iter()
                .filter(|(s, k, _)| s == section && k == key)
                .map(|(_, _, v)| v.clone())
                .collect()
        };
        assert_eq!(get("Unit", "Description").len(), 1, "{name}: a Description");
        if name.ends_with(".timer") {
            assert!(!get("Timer", "OnCalendar").is_empty(), "{name}");
            assert_eq!(get("Timer", "Persistent"), ["true"], "{name}");
            let unit = get("Timer", "Unit");
            assert!(
                unit.len() == 1 && names.contains(&unit[0]),
                "{name} runs a unit that is here: {unit:?}"
            );
            continue;
        }
        let execs = get("Service", "ExecStart");
        assert!(!execs.is_empty(), "{name}: an ExecStart");
        for line in execs {
            // `ExecStart=-…`: a failure that does not fail the unit.
            let words = systemd_words(line.strip_prefix('-').unwrap_or(&line));
            assert_eq!(
                words[0], "%h/.cargo/bin/shelldone",
                "{name}: runs shelldone: {line}"
            );
            let args = &words[1..];
            assert!(
                accepts(args),
                "{name}: shelldone does not accept `{}`",
                args.join(" ")
            );
            // The check can fail: the same line with an option the binary lacks is refused.
            let mut wrong = args.to_vec();
            wrong.push("--no-such-option".to_owned());
            assert!(!accepts(&wrong), "{name}: {wrong:?} accepted");
            commands += 1;
        }
        if name == "shelldone-sync.service" {
            assert_eq!(get("Service", "Restart"), ["on-failure"]);
            assert_eq!(get("Service", "KillSignal"), ["SIGTERM"]);
        }
    }
    assert_eq!(
        commands, 6,
        "the daemon; the sync timer's save and push; the backup timer's save, run and prune"
    );
    systemd_analyze_verify(&units);
}

/// `systemd-analyze --user verify` on the units, with `%h/.cargo/bin/shelldone` leading to the
/// binary under test; any warning fails.
fn systemd_analyze_verify(units: &[std::path::PathBuf]) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        crate::support::ci::cannot_run(
            "systemd_units_parse_and_name_only_options_the_binary_has (systemd-analyze verify)",
            "no systemd-analyze (apt package systemd); the units were checked as INI only",
        );
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join(".cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_shelldone"), bin.join("shelldone")).unwrap();
    let runtime = home.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .args(units)
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && said.trim().is_empty(),
        "systemd-analyze --user verify: {:?}\n{said}",
        o.status
    );
}

/// A unit file as (section, key, value) triples; a line that is none of comment, section or
/// `key=value` fails the test.
fn parse_unit(text: &str, name: &str) -> Vec<(String, String, String)> {
    let mut section = None;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = Some(s.to_owned());
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}:{}: not key=value: {line}", n + 1));
        let s = section
            .clone()
            .unwrap_or_else(|| panic!("{name}:{}: a key before any section", n + 1));
        out.push((s, k.trim().to_owned(), v.trim().to_owned()));
    }
    out
}

/// An ExecStart command line split into words as systemd does for the simple cases the units
/// use: spaces separate, double quotes group.
fn systemd_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "an unclosed quote in {line}");
    if any {
        words.push(cur);
    }
    words
}

/// The commit a git remote's branch for `device` points at (`git ls-remote`), if any.
fn remote_branch(url: &str, device: &str) -> Option<String> {
    let o = Command::new("git")
        .args(["ls-remote", url, &format!("refs/heads/{device}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

#[test]
fn daemon_pushes_a_change_and_another_device_pulls_it() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = GitDaemon::start(&tmp.path().join("srv"));
    let (url, repo) = srv.repo("state.git");
    let (a, b) = two_devices_roundtrip(&url);
    let dev = device(&a);
    // A's branch is up to date before the daemon starts, so what moves it is the change.
    a.ok(&["sync", "push"]);
    let before = remote_branch(&url, &dev).expect("A's branch after the round trip");
    let mut d = Daemon::start(
        &a,
        &[
            "--remote",
            "origin",
            "--debounce",
            "0.1",
            "--push-interval",
            "1",
        ],
    );
    std::fs::write(a.config().join("config.toml"), "font_size = 32\n").unwrap();
    // The event that matters is on the remote: A's branch moves. Polled, with a deadline.
    let deadline = Instant::now() + EVENT_DEADLINE;
    let after = loop {
        match remote_branch(&url, &dev) {
            Some(c) if c != before => break c,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the remote branch {dev} did not move within {EVENT_DEADLINE:?}; the daemon said:\n{}",
            d.lines_within(Duration::ZERO).join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The daemon says what it did, in order: a save, then the push.
    d.wait_for("the save", |l| l.starts_with("saved "));
    d.wait_for("the push", |l| l.starts_with("pushed to origin: "));
    let err = d.stop();
    assert!(err.is_empty(), "{err}");
    fsck(&repo);
    assert_eq!(remote_branch(&url, &dev), Some(after));
    b.ok(&["sync", "pull"]);
    assert_eq!(
        std::fs::read_to_string(b.config().join("config.toml")).unwrap(),
        "font_size = 32\n"
    );
    assert_same(&b.live(), &a.live());
}

/// `sync daemon --remote origin --push-interval 1 --pull-interval 0` with the state changed once it watches.
fn daemon_pushing_one_change(sb: &Sandbox, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--remote",
        "origin",
        "--debounce",
        "0.1",
        "--push-interval",
        "1",
        "--pull-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    let d = Daemon::start(sb, &args);
    std::fs::write(sb.config().join("config.toml"), "font_size = 31\n").unwrap();
    d
}

#[test]
fn daemon_retries_a_push_to_a_remote_that_is_away() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("remote");
    let a = Sandbox::new();
    a.generate();
    a.save("base");
    a.ok(&["remote", "add", "origin", url.to_str().unwrap(), "--init"]);
    // The disk is unmounted: a retry may succeed once it is back.
    std::fs::rename(&url, tmp.path().join("away")).unwrap();
    let mut d = daemon_pushing_one_change(&a, &[]);
    let retry = |l: &str| l.starts_with("push to origin failed (will retry)");
    d.wait_for("a failed push", retry);
    d.wait_for("a second try", retry);
    // The disk is back: the next try pushes.
    std::fs::rename(tmp.path().join("away"), &url).unwrap();
    d.wait_for("the push", |l| l.starts_with("pushed to origin: "));
    let err = d.stop();
    assert!(err.is_empty(), "{err}");
    let b = Sandbox::new();
    b.ok(&["remote", "add", "origin", url.to_str().unwrap()]);
    b.ok(&["sync", "pull"]);
    assert_same(&b.live(), &a.live());
}

#[test]
fn daemon_stops_pushing_after_a_failure_a_retry_cannot_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("remote");
    let a = Sandbox::new();
    a.generate();
    a.save("base");
    a.ok(&["remote", "add", "origin", url.to_str().unwrap(), "--init"]);
    a.ok(&["sync", "push"]);
    // A copy of A's state folder (the same device id) pushes first.
    let copy = Sandbox::new();
    for (from, to) in [(a.config(), copy.config()), (a.state(), copy.state())] {
        let o = std::process::Command::new("cp")
            .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(o.success());
    }
    std::fs::write(copy.config().join("config.toml"), "font_size = 9\n").unwrap();
    copy.save("copy");
    copy.ok(&["sync", "push"]);
    // `--max-runtime` is what this test is about at its end: a daemon that stopped pushing
    // exits, when its time is up, with the error's code (docs/sync.md). Everything before that
    // is waited for as events.
    let mut d = daemon_pushing_one_change(&a, &["--max-runtime", "6"]);
    let failed = d.wait_for("the failed push", |l| {
        l.starts_with("push to origin failed")
    });
    assert!(
        failed.contains("will not be retried") && failed.contains("device rename"),
        "{failed}"
    );
    // Saving goes on, pushing does not: a second change is saved, and a push interval later
    // there is still no second try.
    std::fs::write(a.config().join("config.toml"), "font_size = 33\n").unwrap();
    d.wait_for("a save after the failure", |l| l.starts_with("saved "));
    let quiet = d.lines_within(Duration::from_millis(1500));
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(5), "{}", d.seen.join("\n"));
    let text = d.seen.join("\n");
    assert_eq!(
        text.matches("push to origin failed").count(),
        1,
        "one try, then no more pushes: {text} (after the save: {quiet:?})"
    );
    assert!(!text.contains("will retry"), "{text}");
    let err = d.stderr.take().unwrap().join().unwrap();
    assert!(
        err.starts_with("error: remote 'origin'") && err.contains("device rename"),
        "{err}"
    );
}

/// A save the daemon cannot make (the config folder emptied: a save would record deleting it
/// everywhere) is reported and tried again at the next change; the daemon goes on and saves
/// once the folder has files again (docs/sync.md, "Daemon").
#[test]
fn daemon_reports_a_refused_save_and_goes_on() {
    let a = Sandbox::new();
    a.generate();
    a.save("base");
    let mut d = Daemon::start(&a, &["--debounce", "0.1"]);
    let cfg = a.config();
    let kept = tempfile::tempdir().unwrap();
    std::fs::rename(&cfg, kept.path().join("config")).unwrap();
    std::fs::create_dir(&cfg).unwrap();
    let failed = d.wait_for("a refused save", |l| l.starts_with("save failed"));
    assert!(failed.contains("--allow-empty"), "{failed}");
    std::fs::write(cfg.join("config.toml"), "font_size = 32\n").unwrap();
    d.wait_for("the save after the fix", |l| l.starts_with("saved "));
    let err = d.stop();
    assert!(err.is_empty(), "{err}");
    let log: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "log", "-n", "1"])).unwrap();
    assert_eq!(log[0]["message"], "daemon: saved on change");
}
