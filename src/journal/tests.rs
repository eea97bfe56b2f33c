use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

fn ev(kind: &str, n: u64) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        session: Some(format!("s{}", n % 3)),
        tags: if n.is_multiple_of(2) {
            vec!["sigma::guard".into()]
        } else {
            Vec::new()
        },
        payload: serde_json::json!({ "n": n }),
    }
}

fn all(state: &Path) -> Vec<Event> {
    Reader::new(state, Filter::default()).poll().expect("read")
}

/// A journal is shared between threads (the benchmark and the terminal append from several).
#[test]
fn a_journal_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Journal>();
}

#[test]
fn appends_read_back_in_order_with_the_schema() {
    let t = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(t.path(), Options::default()).expect("open");
    let ids: Vec<String> = (0..50)
        .map(|n| j.append(ev("command", n)).expect("append").id)
        .collect();
    j.flush().expect("flush");
    let evs = all(t.path());
    assert_eq!(evs.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);
    assert!(
        evs.iter()
            .all(|e| e.v == SCHEMA_VERSION && e.time.ends_with('Z'))
    );
    let ids_set: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(ids_set.len(), 50, "ids are unique");
    let f = Filter {
        session: Some("s1".into()),
        tag: Some("sigma::guard".into()),
        since: None,
    };
    let kept = Reader::new(t.path(), f).poll().expect("read");
    // n % 3 == 1 and n even: 4, 10, 16, …, 46.
    assert_eq!(kept.len(), 8);
    assert!(
        kept.iter()
            .all(|e| e.payload["n"].as_u64().is_some_and(|n| n % 6 == 4))
    );
    let (synced, written) = j.durable_count();
    assert_eq!((synced, written), (50, 50));
}

#[test]
fn a_torn_last_line_is_set_aside_on_open_and_earlier_lines_stay() {
    let t = tempfile::tempdir().expect("tempdir");
    let seg = {
        let j = Journal::open(t.path(), Options::default()).expect("open");
        for n in 0..3 {
            j.append(ev("a", n)).expect("append");
        }
        j.flush().expect("flush");
        j.append(ev("a", 3)).expect("append").segment
    };
    let path = t.path().join(DIR).join(&seg);
    let before = std::fs::read(&path).expect("read");
    // Tear the last line: drop its newline and half of it.
    let keep = before.len() - 20;
    std::fs::write(&path, &before[..keep]).expect("tear");
    let j = Journal::open(t.path(), Options::default()).expect("reopen");
    assert_eq!(j.open_report().set_aside.len(), 1);
    let torn = std::fs::read(&j.open_report().set_aside[0]).expect("set aside");
    let first3 = before
        .split_inclusive(|&c| c == b'\n')
        .take(3)
        .flatten()
        .copied()
        .collect::<Vec<u8>>();
    assert_eq!(torn, before[first3.len()..keep]);
    assert_eq!(std::fs::read(&path).expect("read"), first3);
    let id = j.append(ev("a", 9)).expect("append").id;
    j.flush().expect("flush");
    let evs = all(t.path());
    assert_eq!(evs.len(), 4);
    assert_eq!(evs[3].id, id);
}

#[test]
fn a_torn_tail_left_by_another_writer_is_cut_before_the_next_append() {
    let t = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(t.path(), Options::default()).expect("open");
    let seg = j.append(ev("a", 0)).expect("append").segment;
    let path = t.path().join(DIR).join(&seg);
    // Another process died inside a write.
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(b"{\"v\":1,\"id\":\"dead").expect("write");
    j.append(ev("a", 1)).expect("append");
    j.flush().expect("flush");
    assert_eq!(all(t.path()).len(), 2);
    assert_eq!(j.set_aside_since_open().len(), 1);
}

/// Found by the SIGKILL test: a writer killed after creating the next segment but before naming
/// it in the lock file leaves that file behind; whatever is torn in it is cut when a later
/// rotation takes it over.
#[test]
fn a_rotation_into_a_leftover_segment_cuts_its_torn_tail() {
    let t = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        segment_bytes: 1024,
        ..Options::default()
    };
    let j = Journal::open(t.path(), opts).expect("open");
    let seg = j.append(ev("a", 0)).expect("append").segment;
    let next = next_segment_name(&seg, days_now());
    std::fs::write(t.path().join(DIR).join(&next), b"{\"v\":1,\"id\":\"torn").expect("leftover");
    for n in 1..20 {
        j.append(ev("a", n)).expect("append");
    }
    j.flush().expect("flush");
    assert_eq!(all(t.path()).len(), 20);
    assert_eq!(j.set_aside_since_open().len(), 1);
}

#[test]
fn segments_rotate_by_size_and_sealed_ones_never_change() {
    let t = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        segment_bytes: 2000,
        ..Options::default()
    };
    let j = Journal::open(t.path(), opts.clone()).expect("open");
    for n in 0..60 {
        j.append(ev("command", n)).expect("append");
    }
    j.flush().expect("flush");
    let dir = t.path().join(DIR);
    let segs = segments(&dir).expect("segments");
    assert!(segs.len() >= 4, "{segs:?}");
    let sealed: Vec<Vec<u8>> = segs[..segs.len() - 1]
        .iter()
        .map(|s| std::fs::read(dir.join(s)).expect("read"))
        .collect();
    assert!(sealed.iter().all(|b| b.len() as u64 <= 2000));
    // A second handle (another process's) appends to the active one, then both go on.
    let j2 = Journal::open(t.path(), opts).expect("open 2");
    for n in 60..120 {
        j2.append(ev("command", n)).expect("append");
        j.append(ev("command", n + 1000)).expect("append");
    }
    j.flush().expect("flush");
    j2.flush().expect("flush");
    for (s, b) in segs.iter().zip(&sealed) {
        assert_eq!(&std::fs::read(dir.join(s)).expect("read"), b, "{s} changed");
    }
    let evs = all(t.path());
    assert_eq!(evs.len(), 180);
    // Every segment but the last is within the bound.
    let segs = segments(&dir).expect("segments");
    for s in &segs[..segs.len() - 1] {
        assert!(std::fs::metadata(dir.join(s)).expect("stat").len() <= 2000);
    }
}

/// A segment begun on an earlier day is sealed by the first append of a new day.
#[test]
fn segments_rotate_by_date() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join(DIR);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let old = "seg-20261130-000004.jsonl";
    let line = format!(
        "{{\"v\":1,\"id\":\"{}\",\"time\":\"2026-11-30T23:59:59.000000Z\",\"kind\":\"a\"}}\n",
        new_id()
    );
    std::fs::write(dir.join(old), &line).expect("yesterday's segment");
    let j = Journal::open(t.path(), Options::default()).expect("open");
    let a = j.append(ev("a", 1)).expect("append");
    j.flush().expect("flush");
    assert_eq!(a.segment, next_segment_name(old, days_now()));
    assert!(a.segment.ends_with("-000005.jsonl"), "{}", a.segment);
    assert_eq!(std::fs::read_to_string(dir.join(old)).expect("read"), line);
    assert_eq!(all(t.path()).len(), 2);
}

#[test]
fn legacy_lines_read_as_events() {
    let t = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(t.path().join(DIR)).expect("mkdir");
    std::fs::write(
        t.path().join(DIR).join("0000.jsonl"),
        "{\"seq\":0,\"ts\":\"2026-11-02T00:00:00Z\",\"session\":\"s001\",\"kind\":\"focus\"}\nnot json\n",
    )
    .expect("write");
    let mut r = Reader::new(t.path(), Filter::default());
    let evs = r.poll().expect("read");
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].v, 0);
    assert_eq!(evs[0].kind, "focus");
    assert_eq!(evs[0].session.as_deref(), Some("s001"));
    assert_eq!(r.skipped, 1);
}

#[test]
fn since_takes_times_and_ages() {
    assert_eq!(parse_since("2026-12-01").expect("date"), "2026-12-01");
    let t = parse_since("2h").expect("age");
    assert!(t < now_rfc3339());
    assert!(parse_since("yesterday").is_err());
    assert_eq!(
        rfc3339_micros(Duration::from_micros(86_400_000_000 + 1)),
        "1970-01-02T00:00:00.000001Z"
    );
    assert_eq!(days_from_civil(2026, 12, 1), 20_788);
    assert_eq!(
        next_segment_name("seg-20261130-000007.jsonl", 20_788),
        "seg-20261201-000008.jsonl"
    );
}

// --- the agent feed, against a real HTTP server on 127.0.0.1 ---

/// A stand-in for `shelldone-agentd`: answers `POST /journal/event` with 200 and the record,
/// and remembers the local event ids (`payload.event_id`) in the order it got them.
struct Agentd {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agentd {
    fn start(port: u16, got: Arc<Mutex<Vec<String>>>) -> Agentd {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
            }
        };
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => serve(conn, &got),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Agentd {
            addr,
            stop,
            thread: Some(thread),
        }
    }
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
    }
}

fn serve(conn: std::net::TcpStream, got: &Mutex<Vec<String>>) {
    conn.set_nonblocking(false).expect("blocking");
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut r = BufReader::new(conn.try_clone().expect("clone"));
    let mut len = 0usize;
    let mut first = String::new();
    r.read_line(&mut first).expect("request line");
    assert!(first.starts_with("POST /journal/event HTTP/1.1"), "{first}");
    for _ in 0..100 {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json body");
    assert!(v["kind"].is_string());
    got.lock().expect("lock").push(
        v["payload"]["event_id"]
            .as_str()
            .expect("event_id")
            .to_owned(),
    );
    let answer = serde_json::json!({
        "event_id": "00000000-0000-4000-8000-000000000000",
        "kind": v["kind"], "timestamp": "2026-12-01T00:00:00Z",
        "payload": v["payload"], "spectral_tag": v.get("spectral_tag"), "bytes": v.get("bytes"),
    })
    .to_string();
    let mut w = conn;
    let _ = write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn log_count(state: &Path, what: &str) -> usize {
    std::fs::read_to_string(state.join(feed::AGENTS_LOG))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

/// Issue #18: the service stopped and restarted mid-stream — no event lost or reordered, one
/// disabled and one restored line per outage, appends fast while it is down.
#[test]
fn the_feed_survives_outages_in_order_and_logs_each_once() {
    let t = tempfile::tempdir().expect("tempdir");
    let got = Arc::new(Mutex::new(Vec::new()));
    // A port below the kernel's ephemeral range (32768 and up): while the server is stopped no
    // other test's `bind(0)` can be given it.
    let base = 24_000 + u16::try_from(std::process::id() % 1000).expect("small") * 8;
    let port = (0..50u16)
        .map(|k| base + k * 13 % 4000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 32768");
    let server = Agentd::start(port, Arc::clone(&got));
    let j = Journal::open(
        t.path(),
        Options {
            agentd: Some(server.addr.to_string()),
            ..Options::default()
        },
    )
    .expect("open");
    let mut ids = Vec::new();
    let wait_delivered = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.lock().expect("lock").len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    for n in 0..40 {
        ids.push(j.append(ev("command", n)).expect("append").id);
    }
    wait_delivered(40);
    let mut server = Some(server);
    assert_eq!(server.as_ref().map(|s| s.addr.port()), Some(port));
    let mut slowest_down = Duration::ZERO;
    for outage in 0..2 {
        server.take().expect("running").stop();
        for n in 0..60 {
            let t0 = Instant::now();
            ids.push(
                j.append(ev("command", 100 * (outage + 1) + n))
                    .expect("append")
                    .id,
            );
            slowest_down = slowest_down.max(t0.elapsed());
        }
        // Let the sender notice (it retries with a backoff of at most 2 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_count(t.path(), feed::DISABLED) < outage as usize + 1 && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        server = Some(Agentd::start(port, Arc::clone(&got)));
        for n in 0..20 {
            ids.push(
                j.append(ev("after", 100 * (outage + 1) + 60 + n))
                    .expect("append")
                    .id,
            );
        }
        wait_delivered(ids.len());
    }
    drop(j);
    server.take().expect("running").stop();
    let got = got.lock().expect("lock").clone();
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<String> = got
        .iter()
        .filter(|i| seen.insert((*i).clone()))
        .cloned()
        .collect();
    assert_eq!(unique, ids, "every event once, in order");
    assert_eq!(log_count(t.path(), feed::DISABLED), 2);
    assert_eq!(log_count(t.path(), feed::RESTORED), 2);
    assert_eq!(feed::pending(t.path()).expect("pending"), 0);
    // "Fast" here only means the append never waited for the network (a connect timeout is
    // 500 ms); the benchmark measures latency.
    assert!(
        slowest_down < Duration::from_millis(400),
        "{slowest_down:?}"
    );
}

#[test]
fn an_error_answer_is_an_outage_too() {
    let t = tempfile::tempdir().expect("tempdir");
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let th = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut c, _) = l.accept().expect("accept");
            c.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = "{\"error\":\"journal disabled\"}";
            let _ = write!(
                c,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let j = Journal::open(t.path(), Options::default()).expect("open");
    j.append(ev("a", 0)).expect("append");
    j.flush().expect("flush");
    let r = feed::deliver(t.path(), &addr, Duration::from_secs(5)).expect("pass");
    assert!(r.disabled);
    assert!(
        r.failed
            .as_deref()
            .is_some_and(|w| w.contains("HTTP 503") && w.contains("journal disabled")),
        "{r:?}"
    );
    let r = feed::deliver(t.path(), &addr, Duration::from_secs(5)).expect("pass");
    assert!(!r.disabled && r.failed.is_some(), "once per outage: {r:?}");
    th.join().expect("server");
    assert_eq!(log_count(t.path(), feed::DISABLED), 1);
    assert_eq!(feed::pending(t.path()).expect("pending"), 1);
}
