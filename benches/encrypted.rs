//! `cargo bench --bench encrypted` (part of `just bench-inproc`): push and pull of the 1× demo
//! state and of a small change, plain vs encrypted (`remote add --encrypt`, ADR 0010), to a
//! directory remote, a git remote (a real `git daemon` on 127.0.0.1) and an S3 remote (moto's
//! server on 127.0.0.1 behind a counting relay; left out with a note when `moto_server` is not
//! installed). Prints objects sent, bytes (a directory's file bytes, a git repository's growth,
//! what an S3 push put on the wire) and time. Issue #16's target: encryption costs at most
//! 10 % more time.
//!
//! Device keys use the passphrase backend with a fixed passphrase. Unlocking them (scrypt) is
//! paid once per process (the daemon's case; the keyring backends pay none): each device
//! unlocks them before the timed operations (an untimed `sync status`, which every row runs, so
//! plain and encrypted rows do the same untimed work), and the bench prints one unlock's time
//! on its own. `BENCH_RUNS` (default 3) sets how many times each small-change round is repeated
//! (median); `BENCH_ONLY` (a substring of the row names, e.g. `directory`) runs some rows.
#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use shelldone::context::Passphrase;
use shelldone::demo::{self, DemoSpec};
use shelldone::sync::{PullOptions, RemoteOptions};
use shelldone::{Paths, SaveOptions, State};

#[path = "common/mod.rs"]
mod common;
use common::dir_size;

/// The S3 server of the tests (tests/common/moto.rs, which names `super::ci`).
#[path = "../tests/common/ci.rs"]
mod ci;
#[path = "../tests/common/moto.rs"]
#[expect(
    dead_code,
    reason = "the bench uses the server and the relay's counters, not its fault injection"
)]
mod moto;

const PASS: &str = "bench passphrase";

struct Daemon(std::process::Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where a row's remote is, and how its bytes are counted.
enum Place<'a> {
    /// A directory remote: its files' bytes.
    Dir(PathBuf),
    /// A git remote: its bare repository's bytes.
    Git(PathBuf),
    /// An S3 remote: the bytes clients sent through the relay.
    S3(&'a moto::Moto, &'a moto::Proxy),
}

impl Place<'_> {
    fn bytes(&self) -> u64 {
        match self {
            Place::Dir(p) | Place::Git(p) => dir_size(p),
            Place::S3(_, p) => p.sent.load(std::sync::atomic::Ordering::SeqCst),
        }
    }
}

fn aws_settings(m: &moto::Moto) -> shelldone::Settings {
    shelldone::Settings {
        aws: m.aws_env(&m.secret, None),
        ..shelldone::Settings::default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn git_daemon(base: &Path) -> (Daemon, u16) {
    let port = free_port();
    let exec = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git is installed");
    let exec = PathBuf::from(String::from_utf8(exec.stdout).expect("utf8").trim());
    // git-daemon itself (not the `git daemon` wrapper), so that killing it ends the server.
    let child = Command::new(exec.join("git-daemon"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .args([
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        .spawn()
        .expect("git daemon");
    let d = Daemon(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (d, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("git daemon did not start");
}

fn open(dir: &Path, s3: Option<&moto::Moto>) -> (State, Paths) {
    let paths = Paths {
        config_dir: dir.join("config"),
        state_dir: dir.join("state"),
    };
    let (mut st, _) = State::open(paths.clone()).expect("open");
    st.set_passphrase(Passphrase(std::sync::Arc::new(|_| Ok(PASS.to_owned()))));
    if let Some(m) = s3 {
        st.apply(aws_settings(m));
    }
    (st, paths)
}

fn key_init(st: &State) {
    shelldone::vault::init(
        st.context(),
        shelldone::vault::Backend::Passphrase,
        None,
        &shelldone::vault::Unlock::with_passphrase(PASS),
        false,
    )
    .expect("key init");
}

fn keys_of(st: &State) -> Vec<String> {
    let r = shelldone::vault::keys::require_record(st.context()).expect("record");
    vec![r.age, r.ssh]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// What one remote kind measured.
struct Row {
    name: &'static str,
    first_push: (Duration, u64, u64),
    first_pull: Duration,
    small_push: (Duration, u64, u64),
    small_pull: Duration,
    /// S3: the requests the server answered for the last small push and pull.
    requests: Option<(usize, usize)>,
}

/// The requests the S3 server logged since `from` (none for other places).
fn requests_since(place: &Place<'_>, from: usize) -> Vec<String> {
    match place {
        Place::S3(m, _) => m.requests().split_off(from),
        _ => Vec::new(),
    }
}

fn round(
    base: &Path,
    name: &'static str,
    url: &str,
    place: &Place<'_>,
    encrypt: bool,
    runs: usize,
) -> Row {
    let s3 = match place {
        Place::S3(m, _) => Some(*m),
        _ => None,
    };
    let work = base.join(name);
    let a_dir = work.join("a");
    let b_dir = work.join("b");
    demo::generate(
        &a_dir.join("config"),
        &a_dir.join("state"),
        &DemoSpec::default(),
    )
    .expect("generate");
    let (a, a_paths) = open(&a_dir, s3);
    let (b, _) = open(&b_dir, s3);
    key_init(&a);
    key_init(&b);
    shelldone::vault::trust(
        a.context(),
        "b",
        &keys_of(&b),
        &shelldone::vault::Unlock::with_passphrase(PASS),
    )
    .expect("trust");
    a.save(&SaveOptions::default()).expect("save");
    let opts = RemoteOptions {
        init: !matches!(place, Place::Git(_)),
        encrypt,
        require_signatures: false,
        endpoint: match place {
            Place::S3(_, p) => Some(p.endpoint()),
            _ => None,
        },
        ..RemoteOptions::default()
    };
    a.remote_add_with("r", url, &opts).expect("add");
    b.remote_add_with(
        "r",
        url,
        &RemoteOptions {
            init: false,
            ..opts.clone()
        },
    )
    .expect("add");
    // Untimed, on every row: each device unlocks its keys (encrypted rows) and opens the
    // remote once, as a daemon does before its first sync.
    a.sync_status("r").expect("status");
    b.sync_status("r").expect("status");
    let before = place.bytes();
    let t = Instant::now();
    let p = a.sync_push("r", &|_, _| {}).expect("push");
    let first_push = (t.elapsed(), p.sent.objects, place.bytes() - before);
    let t = Instant::now();
    b.sync_pull("r", &PullOptions::default(), &|_, _| {})
        .expect("pull");
    let first_pull = t.elapsed();
    let mut pushes = Vec::new();
    let mut pulls = Vec::new();
    let mut small = (0, 0);
    let mut requests = None;
    let show = std::env::var_os("BENCH_REQUESTS").is_some();
    for r in 0..runs {
        std::thread::sleep(Duration::from_millis(20));
        demo::small_change(&a_paths.config_dir, &a_paths.state_dir, r as u64).expect("change");
        a.save(&SaveOptions::default()).expect("save");
        let before = place.bytes();
        let logged = requests_since(place, 0).len();
        let t = Instant::now();
        let p = a.sync_push("r", &|_, _| {}).expect("push");
        pushes.push(t.elapsed());
        small = (p.sent.objects, place.bytes() - before);
        let push_requests = requests_since(place, logged);
        let logged = logged + push_requests.len();
        let t = Instant::now();
        b.sync_pull("r", &PullOptions::default(), &|_, _| {})
            .expect("pull");
        pulls.push(t.elapsed());
        let pull_requests = requests_since(place, logged);
        if matches!(place, Place::S3(..)) {
            requests = Some((push_requests.len(), pull_requests.len()));
            if show && r + 1 == runs {
                println!(
                    "{name}: small push requests:\n  {}",
                    push_requests.join("\n  ")
                );
                println!(
                    "{name}: small pull requests:\n  {}",
                    pull_requests.join("\n  ")
                );
            }
        }
    }
    Row {
        name,
        first_push,
        first_pull,
        small_push: (median(pushes), small.0, small.1),
        small_pull: median(pulls),
        requests,
    }
}

/// One unlock of the passphrase backend's keys (scrypt), on its own.
fn unlock_time(base: &Path) -> Duration {
    let (st, _) = open(&base.join("unlock"), None);
    key_init(&st);
    let t = Instant::now();
    shelldone::vault::device_keys(
        st.context(),
        &shelldone::vault::Unlock::with_passphrase(PASS),
    )
    .expect("unlock");
    t.elapsed()
}

fn main() {
    let tmp = tempfile::tempdir_in(
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )
    .expect("tempdir");
    let base = tmp.path().to_path_buf();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let srv = base.join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir");
    let (_daemon, port) = git_daemon(&srv);
    let s3 = moto::Moto::start("bench encrypted: S3 rows").map(|m| {
        let p = moto::Proxy::start(m.port);
        (m, p)
    });
    let mut rows = Vec::new();
    for (name, kind, encrypt) in [
        ("directory, plain", "dir", false),
        ("directory, encrypted", "dir", true),
        ("git, plain", "git", false),
        ("git, encrypted", "git", true),
        ("S3, plain", "s3", false),
        ("S3, encrypted", "s3", true),
    ] {
        if !name.contains(only.as_str()) {
            continue;
        }
        let slug = name.replace([',', ' '], "");
        let (url, place) = match kind {
            "git" => {
                let repo = srv.join(format!("{slug}.git"));
                let o = Command::new("git")
                    .args(["init", "-q", "--bare"])
                    .arg(&repo)
                    .status()
                    .expect("git init");
                assert!(o.success());
                (
                    format!("git://127.0.0.1:{port}/{slug}.git"),
                    Place::Git(repo),
                )
            }
            "s3" => {
                let Some((m, p)) = &s3 else {
                    println!("({name}: moto_server is not installed: pip install 'moto[server]')");
                    continue;
                };
                (m.url(&slug), Place::S3(m, p))
            }
            _ => {
                let dir = base.join(format!("{slug}-remote"));
                (dir.display().to_string(), Place::Dir(dir))
            }
        };
        rows.push((
            kind,
            encrypt,
            round(&base, name, &url, &place, encrypt, runs),
        ));
    }
    let unlock = unlock_time(&base);
    println!(
        "1x demo state (DemoSpec::default), small change = demo::small_change; median of {runs} small-change rounds; keys unlocked before the timed operations (one unlock, scrypt: {})",
        ms(unlock)
    );
    println!();
    println!(
        "| remote | first push: time, objects, bytes (S3: sent on the wire) | first pull (new device) | small change push: time, objects, bytes | small change pull |"
    );
    println!("|---|---|---|---|---|");
    let requests: Vec<String> = rows
        .iter()
        .filter_map(|(_, _, r)| {
            let (push, pull) = r.requests?;
            Some(format!("{}: small push {push}, small pull {pull}", r.name))
        })
        .collect();
    for (_, _, r) in &rows {
        println!(
            "| {} | {}, {} objects, {} B | {} | {}, {} objects, {} B | {} |",
            r.name,
            ms(r.first_push.0),
            r.first_push.1,
            r.first_push.2,
            ms(r.first_pull),
            ms(r.small_push.0),
            r.small_push.1,
            r.small_push.2,
            ms(r.small_pull)
        );
    }
    println!();
    if !requests.is_empty() {
        println!(
            "S3 requests the server answered (last round): {}",
            requests.join("; ")
        );
        println!();
    }
    println!(
        "| encrypted vs plain (time) | first push | first pull | small push | small pull | target |"
    );
    println!("|---|---|---|---|---|---|");
    for what in ["dir", "git", "s3"] {
        let find = |e: bool| rows.iter().find(|r| r.0 == what && r.1 == e).map(|r| &r.2);
        let (Some(p), Some(e)) = (find(false), find(true)) else {
            continue;
        };
        let x = |a: Duration, b: Duration| {
            format!(
                "{:+.0} %",
                (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0
            )
        };
        println!(
            "| {what} | {} | {} | {} | {} | <= +10 % |",
            x(p.first_push.0, e.first_push.0),
            x(p.first_pull, e.first_pull),
            x(p.small_push.0, e.small_push.0),
            x(p.small_pull, e.small_pull)
        );
    }
}
