//! Issue #18: the Continuum journal, its agent feed and telemetry, through the real binary.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::Sandbox;

fn config(sb: &Sandbox, text: &str) {
    std::fs::create_dir_all(sb.config()).unwrap();
    std::fs::write(sb.config().join("shelldone.toml"), text).unwrap();
}

/// Every segment's lines, by segment name.
fn segments(state: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(state.join("journal")) else {
        return m;
    };
    for e in rd {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("seg-") {
            m.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    m
}

fn ids_in(state: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for bytes in segments(state).values() {
        for line in bytes.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!("a corrupt line {:?}: {e}", String::from_utf8_lossy(line))
            });
            assert_eq!(v["v"], 1);
            ids.push(v["id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

#[test]
fn append_then_tail_filters_by_session_tag_and_time() {
    let sb = Sandbox::new();
    sb.ok(&[
        "journal",
        "append",
        "command",
        "--session",
        "s1",
        "--tag",
        "sigma::guard",
        "cmd=ls",
    ]);
    let mut c = sb.cmd(&["journal", "append", "output", "--session", "s2", "--stdin"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"token\":\"kept off argv\"}")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let all = sb.ok(&["journal", "tail"]);
    assert_eq!(all.lines().count(), 2, "{all}");
    assert!(all.contains("{\"token\":\"kept off argv\"}"), "{all}");
    let s1 = sb.ok(&["journal", "tail", "--session", "s1"]);
    assert!(
        s1.contains("command session=s1 #sigma::guard {\"cmd\":\"ls\"}"),
        "{s1}"
    );
    assert_eq!(s1.lines().count(), 1);
    assert_eq!(sb.ok(&["journal", "tail", "--tag", "nope"]), "");
    assert_eq!(sb.ok(&["journal", "tail", "--since", "2999-01-01"]), "");
    assert_eq!(
        sb.ok(&["journal", "tail", "--since", "1h"]).lines().count(),
        2
    );
    assert_eq!(sb.ok(&["journal", "tail", "-n", "1"]).lines().count(), 1);
    sb.code(2, &["journal", "tail", "--since", "yesterday"]);
    sb.code(2, &["journal", "append", "k", "not-a-field"]);
    // The demo journals of `shelldone generate` are read too.
    sb.generate();
    let n = sb.ok(&["journal", "tail", "-n", "0"]).lines().count();
    assert!(n > 2, "{n}");
}

#[test]
fn tail_follow_prints_new_events() {
    let sb = Sandbox::new();
    sb.ok(&["journal", "append", "first"]);
    let child = sb
        .cmd(&["journal", "tail", "-f", "--max-runtime", "3", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let id = sb.ok(&["journal", "append", "second"]);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[1]["event"]["id"], id.trim());
    assert_eq!(lines[1]["event"]["kind"], "second");
}

/// Issue #18: SIGKILL mid-append from several processes: no line is corrupt or fused, every
/// event a process reported durable is there once, sealed segments stay within their size, and
/// a torn tail is set aside by the next open.
#[test]
fn sigkill_mid_append_from_several_processes_loses_and_tears_nothing() {
    let sb = Sandbox::new();
    config(&sb, "[journal]\nsegment_bytes = 4096\n");
    let mut acked = Vec::new();
    for round in 0..4u64 {
        let kids: Vec<_> = (0..3)
            .map(|p| {
                sb.cmd(&[
                    "journal",
                    "append",
                    "stress",
                    "--count",
                    "100000",
                    &format!("proc={p}"),
                    &format!("round={round}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        for mut k in kids {
            k.kill().unwrap(); // SIGKILL
            let mut out = String::new();
            k.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            k.wait().unwrap();
            // A last line without its newline was being printed when the kill came.
            acked.extend(out.lines().filter(|l| l.len() == 32).map(str::to_owned));
        }
        // A writer killed inside a large write leaves a torn tail: simulate one on top.
        if round == 1 {
            // The active segment, as the lock file names it.
            let last = std::fs::read_to_string(sb.state().join(".journal.lock")).unwrap();
            let last = last.trim();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(sb.state().join("journal").join(last))
                .unwrap();
            f.write_all(b"{\"v\":1,\"id\":\"torn").unwrap();
        }
        sb.ok(&["journal", "append", "after-kill"]);
    }
    assert!(
        acked.len() > 30,
        "too few events before the kills: {}",
        acked.len()
    );
    eprintln!("{} events reported durable by killed writers", acked.len());
    let ids = ids_in(&sb.state());
    let set: HashSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), ids.len(), "an event id appears twice");
    let missing: Vec<&String> = acked.iter().filter(|a| !set.contains(a)).collect();
    assert!(missing.is_empty(), "durable events lost: {missing:?}");
    let segs = segments(&sb.state());
    for (name, bytes) in segs.iter().take(segs.len() - 1) {
        assert!(bytes.len() <= 4096, "{name}: {} bytes", bytes.len());
        assert!(bytes.ends_with(b"\n"), "{name} sealed with a torn tail");
    }
    let torn: Vec<_> = std::fs::read_dir(sb.state().join("journal-torn"))
        .unwrap()
        .collect();
    assert!(!torn.is_empty(), "the torn tail was set aside");
    // And the store saves it.
    sb.save("after the kills");
}

/// Issue #18: a save after appends stores only the new tail — the sealed segments are the
/// same objects as before, so the objects a save writes do not grow with the journal.
#[test]
fn a_save_after_appends_stores_only_the_active_segment() {
    let sb = Sandbox::new();
    config(&sb, "[journal]\nsegment_bytes = 4096\n");
    let save = |msg: &str| -> serde_json::Value {
        serde_json::from_str(&sb.ok(&["state", "save", "-m", msg, "--json"])).unwrap()
    };
    sb.ok(&["journal", "append", "k", "--count", "40", "x=1"]);
    save("first");
    let mut written = Vec::new();
    for round in 0..3 {
        // Many more sealed segments each round; then a small append and a save.
        sb.ok(&["journal", "append", "k", "--count", "150", "x=2"]);
        save(&format!("fill {round}"));
        let before = segments(&sb.state());
        sb.ok(&["journal", "append", "k", "--count", "3", "x=3"]);
        let after = segments(&sb.state());
        let changed: Vec<&String> = after
            .iter()
            .filter(|(n, b)| before.get(*n) != Some(b))
            .map(|(n, _)| n)
            .collect();
        assert!(
            changed.len() <= 2,
            "only the active segment (or a new one) changes: {changed:?}"
        );
        let doc = save(&format!("tail {round}"));
        written.push((after.len(), doc["objects_written"].as_u64().unwrap()));
    }
    eprintln!("(segments, objects written by the save): {written:?}");
    let first = written[0].1;
    assert!(written.iter().all(|(_, w)| *w == first), "{written:?}");
    assert!(written[2].0 >= written[0].0 + 8, "{written:?}");
    assert!(first <= 8, "{written:?}");
}

/// A stand-in for `shelldone-agentd` on 127.0.0.1 (see docs/journal.md): 200 and the record for
/// `POST /journal/event`; remembers `payload.event_id` in arrival order.
struct Agentd {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A port below the kernel's ephemeral range (32768 and up), so that while a test's server is
/// stopped no other test's `bind(0)` can be given its port.
fn fixed_port(offset: u16) -> u16 {
    let base = 20_000 + u16::try_from(std::process::id() % 1500).unwrap() * 8 + offset;
    (0..50)
        .map(|k| base + k * 13 % 4000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 32768")
}

impl Agentd {
    fn start(port: u16, got: Arc<Mutex<Vec<String>>>) -> (Agentd, u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let l = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "bind {port}: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut r = BufReader::new(c.try_clone().unwrap());
                let (mut len, mut line) = (0usize, String::new());
                r.read_line(&mut line).unwrap();
                assert!(line.starts_with("POST /journal/event HTTP/1.1"), "{line}");
                for _ in 0..100 {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                got.lock()
                    .unwrap()
                    .push(v["payload"]["event_id"].as_str().unwrap().to_owned());
                let rec = serde_json::json!({"event_id": "7f1c0d7e-0000-4000-8000-000000000001",
                    "kind": v["kind"], "timestamp": "2026-12-01T00:00:00Z", "payload": v["payload"]})
                .to_string();
                let mut c = c;
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{rec}",
                    rec.len()
                );
            }
        });
        (
            Agentd {
                stop,
                thread: Some(thread),
            },
            port,
        )
    }
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
    }
}

fn log_lines(state: &Path, what: &str) -> usize {
    std::fs::read_to_string(state.join("logs/agents.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

/// Issue #18: `journal append` feeds agentd; with the service stopped, appends go on (and stay
/// fast), one `sigma.proxy.disabled` line is written; when it is back, one recovery line and
/// every missed event, in order.
#[test]
fn appends_feed_agentd_and_an_outage_is_logged_once_and_replayed_in_order() {
    let sb = Sandbox::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let (server, port) = Agentd::start(fixed_port(0), Arc::clone(&got));
    config(&sb, &format!("[journal]\nagentd = \"127.0.0.1:{port}\"\n"));
    let mut ids: Vec<String> = Vec::new();
    let append = |kind: &str| -> (String, Duration) {
        let t = Instant::now();
        let doc: serde_json::Value =
            serde_json::from_str(&sb.ok(&["journal", "append", kind, "--json"])).unwrap();
        let took = t.elapsed();
        (
            doc["id"].as_str().unwrap().to_owned() + " " + doc["feed"].as_str().unwrap(),
            took,
        )
    };
    for _ in 0..5 {
        let (r, _) = append("up");
        let (id, feed) = r.split_once(' ').unwrap();
        assert_eq!(feed, "sent");
        ids.push(id.to_owned());
    }
    server.stop();
    let mut slowest = Duration::ZERO;
    for _ in 0..8 {
        let (r, took) = append("down");
        let (id, feed) = r.split_once(' ').unwrap();
        assert_eq!(feed, "queued");
        ids.push(id.to_owned());
        slowest = slowest.max(took);
    }
    assert_eq!(log_lines(&sb.state(), "sigma.proxy.disabled"), 1);
    let st: serde_json::Value =
        serde_json::from_str(&sb.ok(&["journal", "status", "--json"])).unwrap();
    // 8 down; 9 when the last "up" command ended (its 1.5 s were up, the machine loaded) after
    // posting but before its pass wrote the cursor: that event is posted again, with its id.
    let pending = st["feed"]["pending"].as_u64().unwrap();
    assert!(pending == 8 || pending == 9, "{st}");
    assert!(
        st["feed"]["outage"].as_str().unwrap().contains("connect"),
        "{st}"
    );
    let (server, _) = Agentd::start(port, Arc::clone(&got));
    let (r, _) = append("back");
    ids.push(r.split_once(' ').unwrap().0.to_owned());
    // The command gives the replay 1.5 s; on a loaded machine what is left is delivered by the
    // next sender — here the sync daemon's.
    if got.lock().unwrap().len() < ids.len() {
        sb.ok(&["sync", "daemon", "--max-runtime", "2"]);
    }
    server.stop();
    let got = got.lock().unwrap().clone();
    let mut seen = HashSet::new();
    let unique: Vec<String> = got.into_iter().filter(|i| seen.insert(i.clone())).collect();
    assert_eq!(unique, ids, "every event once, in order");
    assert_eq!(log_lines(&sb.state(), "sigma.proxy.disabled"), 1);
    assert_eq!(log_lines(&sb.state(), "sigma.proxy.restored"), 1);
    // Fast while down: a refused connection costs nothing (the command's own start-up is most
    // of this); the budget the command gives the feed is 1.5 s.
    assert!(slowest < Duration::from_millis(1500), "{slowest:?}");
}

/// Issue #18: telemetry is off by default, never leaves the device (a push to a directory
/// remote and a backup bundle carry none of it; a device pulling the state gets none), and
/// disabling leaves nothing.
#[test]
fn telemetry_stays_local_and_disable_leaves_nothing() {
    let sb = Sandbox::new();
    sb.ok(&["journal", "append", "k"]);
    assert!(!sb.state().join("metrics").exists(), "off by default");
    sb.ok(&["telemetry", "enable"]);
    let id = sb.ok(&["journal", "append", "linked"]).trim().to_owned();
    sb.save("with telemetry on");
    let remote = sb.dir.path().join("remote");
    sb.ok(&[
        "remote",
        "add",
        "origin",
        remote.to_str().unwrap(),
        "--init",
    ]);
    sb.ok(&["sync", "push"]);
    let bundles = sb.dir.path().join("bundles");
    sb.ok(&["backup", "run", "--to", bundles.to_str().unwrap()]);
    let show: serde_json::Value =
        serde_json::from_str(&sb.ok(&["telemetry", "show", "--json"])).unwrap();
    let records = show["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "records.jsonl")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    // Cross-linked to the journal event by its id; no path of the sandbox anywhere.
    assert!(
        records.contains(&format!("\"event\":\"{id}\"")),
        "{records}"
    );
    assert!(records.contains("\"op\":\"state.save\""), "{records}");
    assert!(
        records.contains("\"bytes\":") && records.contains("\"count\":"),
        "a save's sizes: {records}"
    );
    assert!(records.contains("\"op\":\"sync.push\""), "{records}");
    assert!(
        !records.contains(sb.dir.path().to_str().unwrap()),
        "{records}"
    );
    // Nothing of metrics/ in the remote or the bundle: no file named like it, no record's
    // bytes (compressed small objects keep their text as literals).
    for root in [&remote, &bundles] {
        for e in walkdir::WalkDir::new(root) {
            let e = e.unwrap();
            assert!(
                !e.path().to_string_lossy().contains("metrics"),
                "{}",
                e.path().display()
            );
            if e.file_type().is_file() {
                let b = std::fs::read(e.path()).unwrap();
                for needle in [
                    b"records.jsonl".as_slice(),
                    b"telemetry v1",
                    b"\"op\":\"state.save\"",
                ] {
                    assert!(
                        !b.windows(needle.len()).any(|w| w == needle),
                        "{} holds {:?}",
                        e.path().display(),
                        String::from_utf8_lossy(needle)
                    );
                }
            }
        }
    }
    // Another device pulls everything: the journal comes, the metrics do not.
    let other = Sandbox::new();
    other.ok(&["remote", "add", "origin", remote.to_str().unwrap()]);
    other.ok(&["sync", "pull"]);
    assert!(other.ok(&["journal", "tail"]).contains("linked"));
    assert!(!other.state().join("metrics").exists());
    // The audit trail recorded the save and the push.
    let audit = std::fs::read_to_string(sb.state().join("logs/audit.log")).unwrap();
    assert!(
        audit.contains(" state.save ok ") && audit.contains(" sync.push ok "),
        "{audit}"
    );
    // Disable: nothing left.
    let off: serde_json::Value =
        serde_json::from_str(&sb.ok(&["telemetry", "disable", "--json"])).unwrap();
    assert!(off["deleted_files"].as_u64().unwrap() >= 2, "{off}");
    assert!(!sb.state().join("metrics").exists());
    sb.ok(&["journal", "append", "k"]);
    assert!(
        !sb.state().join("metrics").exists(),
        "nothing recorded once disabled"
    );
    assert_eq!(sb.ok(&["telemetry", "show"]), "telemetry: nothing stored\n");
}

/// Issue #18: two devices append to the same segment (each numbers its own from 1); a pull
/// merges them event by event — every event once, ordered by time, the same bytes on both.
#[test]
fn sync_merges_journal_segments_event_by_event() {
    let a = Sandbox::new();
    let b = Sandbox::new();
    let remote = a.dir.path().join("remote");
    a.ok(&["journal", "append", "shared", "n=0"]);
    a.save("a0");
    a.ok(&[
        "remote",
        "add",
        "origin",
        remote.to_str().unwrap(),
        "--init",
    ]);
    a.ok(&["sync", "push"]);
    b.ok(&["remote", "add", "origin", remote.to_str().unwrap()]);
    b.ok(&["sync", "pull"]);
    for n in 1..4 {
        a.ok(&["journal", "append", "on-a", &format!("n={n}")]);
        b.ok(&["journal", "append", "on-b", &format!("n={n}")]);
    }
    a.save("a1");
    b.save("b1");
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull"]);
    b.ok(&["sync", "push"]);
    a.ok(&["sync", "pull"]);
    let ta = a.ok(&["journal", "tail", "-n", "0", "--json"]);
    let tb = b.ok(&["journal", "tail", "-n", "0", "--json"]);
    let kinds = |t: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        kinds(&ta),
        ["shared", "on-a", "on-b", "on-a", "on-b", "on-a", "on-b"],
        "{ta}"
    );
    assert_eq!(ta, tb);
    assert_eq!(segments(&a.state()), segments(&b.state()));
    assert_eq!(segments(&a.state()).len(), 1);
}

/// Issue #18: the sync daemon runs the agent feed, delivering what `journal append`s left
/// queued while agentd was down.
#[test]
fn the_sync_daemon_delivers_what_appends_left_queued() {
    let sb = Sandbox::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let (server, port) = Agentd::start(fixed_port(1), Arc::clone(&got));
    server.stop();
    config(&sb, &format!("[journal]\nagentd = \"127.0.0.1:{port}\"\n"));
    let ids: Vec<String> = (0..4)
        .map(|_| sb.ok(&["journal", "append", "queued"]).trim().to_owned())
        .collect();
    assert!(got.lock().unwrap().is_empty());
    let (server, _) = Agentd::start(port, Arc::clone(&got));
    sb.ok(&["sync", "daemon", "--max-runtime", "2"]);
    server.stop();
    assert_eq!(*got.lock().unwrap(), ids);
    assert_eq!(log_lines(&sb.state(), "sigma.proxy.restored"), 1);
}
