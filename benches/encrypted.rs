//! `cargo bench --bench encrypted` (part of `just bench-inproc`): push and pull of the 1× demo
//! state and of a small change, plain vs encrypted (`remote add --encrypt`, ADR 0010), to a
//! directory remote and to a git remote (a real `git daemon` on 127.0.0.1). Prints objects
//! sent, bytes on the remote (a directory's file bytes, a git repository's growth) and time.
//! Issue #16's target: encryption costs at most 10 % more time.
//!
//! Device keys use the passphrase backend with a fixed passphrase: each command that unlocks
//! them pays one scrypt (about 0.1 s); that is part of the encrypted figures.
//! `BENCH_RUNS` (default 3) sets how many times each small-change round is repeated (median).
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

const PASS: &str = "bench passphrase";

struct Daemon(std::process::Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    let child = Command::new("git")
        .args([
            "daemon",
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

fn open(dir: &Path) -> (State, Paths) {
    let paths = Paths {
        config_dir: dir.join("config"),
        state_dir: dir.join("state"),
    };
    let (mut st, _) = State::open(paths.clone()).expect("open");
    st.set_passphrase(Passphrase(std::sync::Arc::new(|_| Ok(PASS.to_owned()))));
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
}

fn bytes_of(url: &str, repo: Option<&Path>) -> u64 {
    repo.map_or_else(|| dir_size(Path::new(url)), dir_size)
}

fn round(
    base: &Path,
    name: &'static str,
    url: &str,
    repo: Option<&Path>,
    encrypt: bool,
    runs: usize,
) -> Row {
    let work = base.join(name);
    let a_dir = work.join("a");
    let b_dir = work.join("b");
    demo::generate(
        &a_dir.join("config"),
        &a_dir.join("state"),
        &DemoSpec::default(),
    )
    .expect("generate");
    let (a, a_paths) = open(&a_dir);
    let (b, _) = open(&b_dir);
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
        init: repo.is_none(),
        encrypt,
        require_signatures: false,
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
    let before = bytes_of(url, repo);
    let t = Instant::now();
    let p = a.sync_push("r", &|_, _| {}).expect("push");
    let first_push = (t.elapsed(), p.sent.objects, bytes_of(url, repo) - before);
    let t = Instant::now();
    b.sync_pull("r", &PullOptions::default(), &|_, _| {})
        .expect("pull");
    let first_pull = t.elapsed();
    let mut pushes = Vec::new();
    let mut pulls = Vec::new();
    let mut small = (0, 0);
    for r in 0..runs {
        std::thread::sleep(Duration::from_millis(20));
        demo::small_change(&a_paths.config_dir, &a_paths.state_dir, r as u64).expect("change");
        a.save(&SaveOptions::default()).expect("save");
        let before = bytes_of(url, repo);
        let t = Instant::now();
        let p = a.sync_push("r", &|_, _| {}).expect("push");
        pushes.push(t.elapsed());
        small = (p.sent.objects, bytes_of(url, repo) - before);
        let t = Instant::now();
        b.sync_pull("r", &PullOptions::default(), &|_, _| {})
            .expect("pull");
        pulls.push(t.elapsed());
    }
    Row {
        name,
        first_push,
        first_pull,
        small_push: (median(pushes), small.0, small.1),
        small_pull: median(pulls),
    }
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
    let srv = base.join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir");
    let (_daemon, port) = git_daemon(&srv);
    let mut rows = Vec::new();
    for (name, git, encrypt) in [
        ("directory, plain", false, false),
        ("directory, encrypted", false, true),
        ("git, plain", true, false),
        ("git, encrypted", true, true),
    ] {
        let slug = name.replace([',', ' '], "");
        let (url, repo): (String, Option<PathBuf>) = if git {
            let repo = srv.join(format!("{slug}.git"));
            let o = Command::new("git")
                .args(["init", "-q", "--bare"])
                .arg(&repo)
                .status()
                .expect("git init");
            assert!(o.success());
            (format!("git://127.0.0.1:{port}/{slug}.git"), Some(repo))
        } else {
            (
                base.join(format!("{slug}-remote")).display().to_string(),
                None,
            )
        };
        rows.push(round(&base, name, &url, repo.as_deref(), encrypt, runs));
    }
    println!(
        "1x demo state (DemoSpec::default), small change = demo::small_change; median of {runs} small-change rounds"
    );
    println!();
    println!(
        "| remote | first push: time, objects, bytes on remote | first pull (new device) | small change push: time, objects, bytes | small change pull |"
    );
    println!("|---|---|---|---|---|");
    for r in &rows {
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
    println!(
        "| encrypted vs plain (time) | first push | first pull | small push | small pull | target |"
    );
    println!("|---|---|---|---|---|---|");
    for (plain, enc, what) in [(0, 1, "directory"), (2, 3, "git")] {
        let (p, e) = (&rows[plain], &rows[enc]);
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
