//! `cargo bench --bench sync` (part of `just bench-inproc`): bytes a push sends after a small change,
//! side by side with `git push` of the same files and `rsync` (delta transfer) of the same dir.
//! Git traffic goes through a counting TCP proxy in front of a real `git-daemon` on 127.0.0.1;
//! the directory remote's figure is the bytes of the files the push wrote.
//! Issue #4's target: bytes sent ≤ 1.5× the size of the new objects.
//! Issue #16: push and pull of the 1× state and of the small change through the directory, git
//! and S3 remotes (S3: moto's server on 127.0.0.1 behind a counting relay; skipped with a note
//! when `moto_server` is not installed).
#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use shelldone::demo::{self, DemoSpec};
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

fn sh(cmd: &str, dir: &Path) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn git(base: &Path, args: &str) -> String {
    sh(
        &format!("git -c user.name=b -c user.email=b@b -c gc.auto=0 {args}"),
        base,
    )
}

/// A TCP proxy on 127.0.0.1 in front of `git-daemon`, counting the bytes clients send (what a
/// push puts on the wire).
struct Proxy {
    port: u16,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    _daemon: Daemon,
}

struct Daemon(std::process::Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_proxy(base: &Path) -> Proxy {
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    let exec = String::from_utf8(
        Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git")
            .stdout,
    )
    .expect("utf8");
    let dport = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(Path::new(exec.trim()).join("git-daemon"))
        .args([
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--base-path={}", base.display()))
        .arg(format!("--port={dport}"))
        .arg(base)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git-daemon");
    let daemon = Daemon(child);
    for _ in 0..500 {
        if TcpStream::connect(("127.0.0.1", dport)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let rcounter = received.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", dport)) else {
                continue;
            };
            let (mut c_r, mut s_w) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let (mut s_r, mut c_w) = (server, client);
            let n = counter.clone();
            let rn = rcounter.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match std::io::Read::read(&mut c_r, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            n.fetch_add(k as u64, Ordering::Relaxed);
                            if std::io::Write::write_all(&mut s_w, &buf[..k]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = s_w.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match std::io::Read::read(&mut s_r, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            rn.fetch_add(k as u64, Ordering::Relaxed);
                            if std::io::Write::write_all(&mut c_w, &buf[..k]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = c_w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Proxy {
        port,
        sent,
        received,
        _daemon: daemon,
    }
}

fn main() {
    let tmp = tempfile::tempdir_in(
        std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )
    .expect("tempdir");
    let base = tmp.path().to_path_buf();
    let a = base.join("a");
    demo::generate(&a.join("config"), &a.join("state"), &DemoSpec::default()).expect("generate");
    let paths = Paths {
        config_dir: a.join("config"),
        state_dir: a.join("state"),
    };
    let (mut st, _) = State::open(paths.clone()).expect("open");
    st.save(&SaveOptions::default()).expect("save");

    // Remotes: a directory and a bare git repository (kept as packs so the size delta is the pack received).
    let dir_remote = base.join("dir-remote");
    let srv = base.join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir");
    let bare = srv.join("remote.git");
    sh(&format!("git init -q --bare {}", bare.display()), &base);
    let proxy = start_proxy(&srv);
    let git_url = format!("git://127.0.0.1:{}/remote.git", proxy.port);
    st.remote_add("dir", dir_remote.to_str().expect("utf8"), true)
        .expect("add");
    st.remote_add("git", &git_url, false).expect("add");
    let t = Instant::now();
    let first_dir = st.sync_push("dir", &|_, _| {}).expect("push dir");
    let t_first_dir = t.elapsed();
    let t = Instant::now();
    st.sync_push("git", &|_, _| {}).expect("push git");
    let t_first_git = t.elapsed();
    let mut three = Three::start(&base, &mut st, &dir_remote, &git_url);
    three.first_push(&st, first_dir.sent, t_first_dir, t_first_git, &proxy);

    // Peers: git of the plain files, rsync of the plain dir.
    let peer_bare = srv.join("peer.git");
    let peer_url = format!("git://127.0.0.1:{}/peer.git", proxy.port);
    let work_git = base.join("work.git");
    sh(
        &format!(
            "git init -q --bare {p} && git init -q --bare {w}",
            p = peer_bare.display(),
            w = work_git.display()
        ),
        &base,
    );
    let gw = format!(
        "--git-dir={} --work-tree={}",
        work_git.display(),
        a.display()
    );
    git(
        &base,
        &format!("{gw} add -A config state/sessions state/journal"),
    );
    git(&base, &format!("{gw} commit -q -m base"));
    git(
        &base,
        &format!("{gw} push -q {peer_url} HEAD:refs/heads/main"),
    );
    let have_rsync = Command::new("rsync")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let rsync_dst = base.join("rsync-dst");
    if have_rsync {
        sh(
            &format!(
                "mkdir -p {d} && rsync -a {s}/config {s}/state {d}/",
                s = a.display(),
                d = rsync_dst.display()
            ),
            &base,
        );
    }

    // The small change, saved.
    std::thread::sleep(std::time::Duration::from_millis(60));
    demo::small_change(&paths.config_dir, &paths.state_dir, 0).expect("change");
    let saved = st.save(&SaveOptions::default()).expect("save");
    let new_objects = saved.bytes_written;

    let before_dir = dir_size(&dir_remote);
    let t = Instant::now();
    let p_dir = st.sync_push("dir", &|_, _| {}).expect("push dir");
    let t_dir = t.elapsed();
    let sent_dir = dir_size(&dir_remote) - before_dir;
    assert!(
        sent_dir >= p_dir.sent.bytes,
        "dir push reports no more than it wrote"
    );
    let before_git = proxy.sent.load(std::sync::atomic::Ordering::Relaxed);
    let t = Instant::now();
    st.sync_push("git", &|_, _| {}).expect("push git");
    let t_git = t.elapsed();
    let sent_git = proxy.sent.load(std::sync::atomic::Ordering::Relaxed) - before_git;

    git(
        &base,
        &format!("{gw} add -A config state/sessions state/journal"),
    );
    git(&base, &format!("{gw} commit -q -m change"));
    let before_peer = proxy.sent.load(std::sync::atomic::Ordering::Relaxed);
    let t = Instant::now();
    git(
        &base,
        &format!("{gw} push -q {peer_url} HEAD:refs/heads/main"),
    );
    let t_peer = t.elapsed();
    let sent_peer = proxy.sent.load(std::sync::atomic::Ordering::Relaxed) - before_peer;
    let rsync = if have_rsync {
        let t = Instant::now();
        let out = sh(
            &format!(
                "rsync -a --no-whole-file --stats {s}/config {s}/state {d}/",
                s = a.display(),
                d = rsync_dst.display()
            ),
            &base,
        );
        let el = t.elapsed();
        let sent = out
            .lines()
            .find_map(|l| l.strip_prefix("Total bytes sent: "))
            .map(|v| v.replace(',', "").trim().parse::<u64>().unwrap_or(0))
            .unwrap_or(0);
        Some((sent, el))
    } else {
        None
    };

    println!(
        "first push of ~60 MB: dir remote {} objects, {} B in {:.0} ms; git remote {:.0} ms",
        first_dir.sent.objects,
        first_dir.sent.bytes,
        t_first_dir.as_secs_f64() * 1e3,
        t_first_git.as_secs_f64() * 1e3
    );
    println!(
        "small change (200 journal lines, 2 descriptors, scrollback +100 KB): new objects {new_objects} B"
    );
    println!();
    println!("| push after the small change | bytes sent | vs new objects | time | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| shelldone → directory remote | {sent_dir} B ({} objects) | {:.2}x | {:.1} ms | <= 1.5x |",
        p_dir.sent.objects,
        sent_dir as f64 / new_objects as f64,
        t_dir.as_secs_f64() * 1e3
    );
    println!(
        "| shelldone → git remote over git:// (bytes on the wire) | {sent_git} B | {:.2}x | {:.1} ms | <= 1.5x |",
        sent_git as f64 / new_objects as f64,
        t_git.as_secs_f64() * 1e3
    );
    println!(
        "| git push of the plain files over git:// (bytes on the wire) | {sent_peer} B | {:.2}x | {:.1} ms | |",
        sent_peer as f64 / new_objects as f64,
        t_peer.as_secs_f64() * 1e3
    );
    match rsync {
        Some((sent, el)) => println!(
            "| rsync --no-whole-file (Total bytes sent) | {sent} B | {:.2}x | {:.1} ms | |",
            sent as f64 / new_objects as f64,
            el.as_secs_f64() * 1e3
        ),
        None => println!("| rsync | not installed (apt-get install rsync) | | | |"),
    }

    three.small_change(&st, &proxy);
    three.print();

    partial_vs_full(&base, &st, &paths, &dir_remote, &git_url, &proxy);
}

/// One row of the three-remotes table: objects, stored bytes, bytes on the wire (None: not
/// counted), time.
type Row = (u64, u64, Option<u64>, std::time::Duration);

/// Issue #16: the 1× state and the small change, pushed and pulled (onto a new device) through
/// the directory, git and S3 remotes.
struct Three {
    /// (kind, the new device that pulls, rows: first push, first pull, change push, change pull)
    remotes: Vec<(&'static str, State, Vec<Row>)>,
    s3: Option<(moto::Moto, moto::Proxy)>,
}

fn aws_env(m: &moto::Moto) -> shelldone::Settings {
    shelldone::Settings {
        aws: m.aws_env(&m.secret, None),
        ..shelldone::Settings::default()
    }
}

impl Three {
    fn start(base: &Path, st: &mut State, dir: &Path, git_url: &str) -> Three {
        let s3 = moto::Moto::start("bench sync: S3 rows").map(|m| {
            let p = moto::Proxy::start(m.port);
            (m, p)
        });
        let mut urls = vec![
            ("dir", dir.display().to_string(), None),
            ("git", git_url.to_owned(), None),
        ];
        if let Some((m, p)) = &s3 {
            st.apply(aws_env(m));
            let opts = shelldone::sync::RemoteOptions {
                init: true,
                endpoint: Some(p.endpoint()),
                ..Default::default()
            };
            st.remote_add_with("s3", &m.url("bench"), &opts)
                .expect("add s3");
            urls.push(("s3", m.url("bench"), Some((aws_env(m), opts))));
        }
        let remotes = urls
            .into_iter()
            .map(|(kind, url, s3opts)| {
                let d = base.join(format!("three-{kind}"));
                let (mut dev, _) = State::open(Paths {
                    config_dir: d.join("config"),
                    state_dir: d.join("state"),
                })
                .expect("open");
                match s3opts {
                    Some((settings, opts)) => {
                        dev.apply(settings);
                        let opts = shelldone::sync::RemoteOptions {
                            init: false,
                            ..opts
                        };
                        dev.remote_add_with("origin", &url, &opts)
                    }
                    None => dev.remote_add("origin", &url, false),
                }
                .expect("add");
                (kind, dev, Vec::new())
            })
            .collect();
        Three { remotes, s3 }
    }

    fn wire(&self, kind: &str, proxy: &Proxy) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        match kind {
            "git" => (proxy.sent.load(Relaxed), proxy.received.load(Relaxed)),
            "s3" => self.s3.as_ref().map_or((0, 0), |(_, p)| {
                (p.sent.load(Relaxed), p.received.load(Relaxed))
            }),
            _ => (0, 0),
        }
    }

    fn pull(&mut self, i: usize, proxy: &Proxy) {
        let kind = self.remotes[i].0;
        let w = self.wire(kind, proxy).1;
        let t = Instant::now();
        let rep = self.remotes[i]
            .1
            .sync_pull(
                "origin",
                &shelldone::sync::PullOptions::default(),
                &|_, _| {},
            )
            .expect("pull");
        let el = t.elapsed();
        let w = (kind != "dir").then(|| self.wire(kind, proxy).1 - w);
        self.remotes[i]
            .2
            .push((rep.received.objects, rep.received.bytes, w, el));
    }

    fn first_push(
        &mut self,
        st: &State,
        dir: shelldone::remote::TransferStats,
        t_dir: std::time::Duration,
        t_git: std::time::Duration,
        proxy: &Proxy,
    ) {
        for i in 0..self.remotes.len() {
            let row = match self.remotes[i].0 {
                "dir" => (dir.objects, dir.bytes, None, t_dir),
                "git" => (
                    0,
                    0,
                    Some(proxy.sent.load(std::sync::atomic::Ordering::Relaxed)),
                    t_git,
                ),
                _ => self.push(st, "s3", proxy),
            };
            self.remotes[i].2.push(row);
            self.pull(i, proxy);
        }
    }

    fn push(&self, st: &State, kind: &str, proxy: &Proxy) -> Row {
        let w = self.wire(kind, proxy).0;
        let t = Instant::now();
        let rep = st.sync_push(kind, &|_, _| {}).expect("push");
        let el = t.elapsed();
        let w = (kind != "dir").then(|| self.wire(kind, proxy).0 - w);
        (rep.sent.objects, rep.sent.bytes, w, el)
    }

    /// After the small change was saved (and pushed to dir and git by the caller's rows, which
    /// are measured there): S3's push, then every new device's pull.
    fn small_change(&mut self, st: &State, proxy: &Proxy) {
        for i in 0..self.remotes.len() {
            let kind = self.remotes[i].0;
            let row = if kind == "s3" {
                self.push(st, kind, proxy)
            } else {
                // Pushed already by the caller; a second push sends nothing: the caller's
                // figures are in the first table.
                (0, 0, None, std::time::Duration::ZERO)
            };
            self.remotes[i].2.push(row);
            self.pull(i, proxy);
        }
    }

    fn print(&self) {
        let cell = |r: &Row| {
            let wire =
                r.2.map_or(String::new(), |w| format!(", {w} B on the wire"));
            format!(
                "{} objects, {} B{wire}, {:.0} ms",
                r.0,
                r.1,
                r.3.as_secs_f64() * 1e3
            )
        };
        println!();
        println!(
            "| remote | push 1x | pull 1x (new device) | push small change | pull small change |"
        );
        println!("|---|---|---|---|---|");
        for (kind, _, rows) in &self.remotes {
            let c: Vec<String> = rows.iter().map(cell).collect();
            let push_change = if *kind == "s3" {
                c[2].clone()
            } else {
                "(first table)".to_owned()
            };
            let push_first = if *kind == "git" {
                format!(
                    "{} B on the wire, {:.0} ms",
                    rows[0].2.unwrap_or(0),
                    rows[0].3.as_secs_f64() * 1e3
                )
            } else {
                c[0].clone()
            };
            println!(
                "| {kind} | {push_first} | {} | {push_change} | {} |",
                c[1], c[3]
            );
        }
        if self.s3.is_none() {
            println!("| s3 | moto_server not installed (pip install 'moto[server]') | | | |");
        }
    }
}

/// Issue #9: a new device's pull with `--strategy partial` against a full pull, after a history
/// of small changes on one device (what partial leaves behind is that history).
fn partial_vs_full(
    base: &Path,
    st: &State,
    paths: &Paths,
    dir_remote: &Path,
    git_url: &str,
    proxy: &Proxy,
) {
    use shelldone::sync::{PullOptions, Strategy};
    let rounds = 10;
    for r in 1..=rounds {
        demo::small_change(&paths.config_dir, &paths.state_dir, r).expect("change");
        st.save(&SaveOptions::default()).expect("save");
        st.sync_push("dir", &|_, _| {}).expect("push dir");
        st.sync_push("git", &|_, _| {}).expect("push git");
    }
    println!();
    println!(
        "| pull onto a new device, after {} snapshots of history | full | partial | partial / full |",
        rounds + 2
    );
    println!("|---|---|---|---|");
    for (kind, url) in [
        ("dir", dir_remote.display().to_string()),
        ("git", git_url.to_owned()),
    ] {
        let mut row = Vec::new();
        for (i, strategy) in [Strategy::Full, Strategy::Partial].into_iter().enumerate() {
            let d = base.join(format!("new-{kind}-{i}"));
            let (dev, _) = State::open(Paths {
                config_dir: d.join("config"),
                state_dir: d.join("state"),
            })
            .expect("open");
            dev.remote_add("origin", &url, false).expect("add");
            let wire = proxy.received.load(std::sync::atomic::Ordering::Relaxed);
            let t = Instant::now();
            let rep = dev
                .sync_pull(
                    "origin",
                    &PullOptions {
                        strategy,
                        ..PullOptions::default()
                    },
                    &|_, _| {},
                )
                .expect("pull");
            let el = t.elapsed();
            let wire = proxy.received.load(std::sync::atomic::Ordering::Relaxed) - wire;
            row.push((rep.received.objects, rep.received.bytes, wire, el));
        }
        let (f, p) = (row[0], row[1]);
        println!(
            "| {kind} remote: objects stored | {} objects, {} B, {:.0} ms | {} objects, {} B, {:.0} ms | {:.2} |",
            f.0,
            f.1,
            f.3.as_secs_f64() * 1e3,
            p.0,
            p.1,
            p.3.as_secs_f64() * 1e3,
            p.1 as f64 / f.1 as f64
        );
        if kind == "git" {
            println!(
                "| git remote: bytes on the wire | {} B | {} B | {:.2} |",
                f.2,
                p.2,
                p.2 as f64 / f.2.max(1) as f64
            );
        }
    }
}
