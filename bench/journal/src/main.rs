//! `just bench-journal`: append latency (p50/p95/p99/max) and events per second of the
//! Continuum journal at 1 000 and 10 000 events/s offered, from several threads and from
//! several processes, every event durable within 50 ms (measured: the time from an append's
//! return to the fdatasync that covers it); compared in the same run with appending the same
//! events to SQLite in WAL mode (synchronous=FULL, so that a commit is durable when it returns,
//! as the journal's events are within its bound).
//!
//! Usage: `shelldone-bench-journal [--dir DIR] [--seconds S] [--writers N]`. Run it in a folder
//! on the disk that matters (not /tmp: docs/performance.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shelldone::journal::{Journal, NewEvent, Options};

const BOUND: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug)]
enum Engine {
    Journal,
    Sqlite,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Journal => "journal",
            Engine::Sqlite => "sqlite-wal",
        }
    }
    fn parse(s: &str) -> Engine {
        if s == "journal" {
            Engine::Journal
        } else {
            Engine::Sqlite
        }
    }
}

/// What one writer measured: append latencies (ns) and the worst append-to-durable time (ns).
#[derive(Default)]
struct Measured {
    lat: Vec<u64>,
    /// Append return to durable, per event (journal only).
    durable: Vec<u64>,
    events: u64,
}

fn event(i: u64) -> NewEvent {
    NewEvent {
        kind: "command".into(),
        session: Some(format!("s{:03}", i % 40)),
        tags: vec!["sigma::guard".into()],
        payload: serde_json::json!({"cmd": "cargo build --release", "exit": 0, "i": i}),
    }
}

fn sqlite_open(dir: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(dir.join("events.db")).expect("open sqlite");
    c.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    c.pragma_update(None, "journal_mode", "WAL").expect("wal");
    c.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, time TEXT, kind TEXT, session TEXT, tags TEXT, payload TEXT)",
    )
    .expect("table");
    c
}

/// One writer offering `rate` events/s for `secs`, paced open-loop (a late writer does not
/// sleep, so a slow engine shows as fewer events per second).
fn writer(engine: Engine, dir: &Path, rate: f64, secs: f64, salt: u64) -> Measured {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let end = Duration::from_secs_f64(secs);
    let mut m = Measured::default();
    match engine {
        Engine::Journal => {
            let j = Arc::new(
                Journal::open(
                    dir,
                    Options {
                        durability: BOUND,
                        ..Options::default()
                    },
                )
                .expect("open journal"),
            );
            // The durability monitor: when each append became durable.
            let done = Arc::new(AtomicBool::new(false));
            let synced_at = {
                let (j, done) = (Arc::clone(&j), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut at: Vec<Instant> = Vec::new();
                    let deadline = Instant::now() + end + Duration::from_secs(30);
                    while Instant::now() < deadline {
                        let (synced, written) = j.durable_count();
                        let now = Instant::now();
                        while (at.len() as u64) < synced {
                            at.push(now);
                        }
                        if done.load(Ordering::SeqCst) && synced == written {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    at
                })
            };
            let mut returned = Vec::new();
            let t0 = Instant::now();
            let mut i = 0u64;
            while t0.elapsed() < end {
                let due = t0 + interval * u32::try_from(i).expect("few events");
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let a = Instant::now();
                j.append(event(salt + i)).expect("append");
                let b = Instant::now();
                m.lat.push(u64::try_from((b - a).as_nanos()).expect("ns"));
                returned.push(b);
                i += 1;
            }
            j.flush().expect("flush");
            done.store(true, Ordering::SeqCst);
            let at = synced_at.join().expect("monitor");
            for (k, r) in returned.iter().enumerate() {
                if let Some(s) = at.get(k) {
                    let d = s.saturating_duration_since(*r);
                    m.durable.push(u64::try_from(d.as_nanos()).expect("ns"));
                }
            }
            m.events = i;
        }
        Engine::Sqlite => {
            let c = sqlite_open(dir);
            let mut st = c
                .prepare("INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .expect("prepare");
            let t0 = Instant::now();
            let mut i = 0u64;
            while t0.elapsed() < end {
                let due = t0 + interval * u32::try_from(i).expect("few events");
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let e = event(salt + i);
                let a = Instant::now();
                st.execute(rusqlite::params![
                    shelldone::journal::new_id(),
                    shelldone::journal::now_rfc3339(),
                    e.kind,
                    e.session,
                    serde_json::to_string(&e.tags).expect("tags"),
                    e.payload.to_string(),
                ])
                .expect("insert");
                m.lat
                    .push(u64::try_from(a.elapsed().as_nanos()).expect("ns"));
                i += 1;
            }
            m.events = i;
        }
    }
    m
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[k] as f64 / 1000.0
}

fn run_case(
    exe: &Path,
    engine: Engine,
    base: &Path,
    rate: f64,
    secs: f64,
    writers: usize,
    procs: bool,
) {
    let dir = base.join(format!(
        "{}-{}-{}",
        engine.name(),
        rate as u64,
        if procs { "procs" } else { "threads" }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    if let Engine::Sqlite = engine {
        drop(sqlite_open(&dir)); // the schema, before the writers race to create it
    }
    let per = rate / writers as f64;
    let t0 = Instant::now();
    let parts: Vec<Measured> = if procs {
        let kids: Vec<_> = (0..writers)
            .map(|w| {
                Command::new(exe)
                    .args([
                        "--child",
                        engine.name(),
                        dir.to_str().expect("utf-8"),
                        &per.to_string(),
                        &secs.to_string(),
                        &(w as u64 * 1_000_000_000).to_string(),
                    ])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn child")
            })
            .collect();
        kids.into_iter()
            .map(|k| {
                let out = k.wait_with_output().expect("child");
                assert!(out.status.success(), "child failed");
                let text = String::from_utf8(out.stdout).expect("utf-8");
                let mut lines = text.lines();
                let events = lines.next().expect("head").parse().expect("events");
                let mut m = Measured {
                    events,
                    ..Measured::default()
                };
                for l in lines {
                    let (kind, n) = l.split_once(' ').expect("kind and value");
                    let n = n.parse().expect("number");
                    if kind == "l" {
                        m.lat.push(n);
                    } else {
                        m.durable.push(n);
                    }
                }
                m
            })
            .collect()
    } else {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..writers)
                .map(|w| {
                    let dir = dir.clone();
                    s.spawn(move || writer(engine, &dir, per, secs, w as u64 * 1_000_000_000))
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("writer")).collect()
        })
    };
    let wall = t0.elapsed().as_secs_f64();
    let mut lat: Vec<u64> = parts.iter().flat_map(|m| m.lat.iter().copied()).collect();
    lat.sort_unstable();
    let events: u64 = parts.iter().map(|m| m.events).sum();
    let mut dur: Vec<u64> = parts
        .iter()
        .flat_map(|m| m.durable.iter().copied())
        .collect();
    dur.sort_unstable();
    let durable = match engine {
        Engine::Journal => format!(
            "{:.1} / {:.1} / {:.1}",
            pct(&dur, 0.99) / 1000.0,
            pct(&dur, 0.999) / 1000.0,
            dur.last().copied().unwrap_or(0) as f64 / 1e6
        ),
        Engine::Sqlite => "at return".into(),
    };
    println!(
        "| {} | {} | {} x {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
        engine.name(),
        rate as u64,
        writers,
        if procs { "processes" } else { "threads" },
        events,
        events as f64 / secs.min(wall),
        pct(&lat, 0.50),
        pct(&lat, 0.95),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        durable
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let engine = Engine::parse(&args[2]);
        let dir = PathBuf::from(&args[3]);
        let rate: f64 = args[4].parse().expect("rate");
        let secs: f64 = args[5].parse().expect("secs");
        let salt: u64 = args[6].parse().expect("salt");
        let m = writer(engine, &dir, rate, secs, salt);
        let mut out = format!("{}\n", m.events);
        for l in &m.lat {
            out.push_str(&format!("l {l}\n"));
        }
        for d in &m.durable {
            out.push_str(&format!("d {d}\n"));
        }
        print!("{out}");
        return;
    }
    let mut dir = PathBuf::from("bench-journal-data");
    let mut secs = 3.0;
    let mut writers = 4usize;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(it.next().expect("--dir DIR")),
            "--seconds" => secs = it.next().expect("--seconds S").parse().expect("seconds"),
            "--writers" => writers = it.next().expect("--writers N").parse().expect("writers"),
            other => panic!("unknown argument {other}"),
        }
    }
    let exe = std::env::current_exe().expect("own path");
    std::fs::create_dir_all(&dir).expect("mkdir");
    println!(
        "journal append vs SQLite WAL (synchronous=FULL): {secs} s per case, {writers} writers, in {}; latencies in µs; journal durability bound {} ms",
        dir.display(),
        BOUND.as_millis()
    );
    println!();
    println!(
        "| engine | offered ev/s | writers | events | achieved ev/s | p50 | p95 | p99 | max | durable within (ms: p99 / p99.9 / worst) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for rate in [1000.0, 10_000.0] {
        for procs in [false, true] {
            for engine in [Engine::Journal, Engine::Sqlite] {
                run_case(&exe, engine, &dir, rate, secs, writers, procs);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
