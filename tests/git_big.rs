//! A big first push over a real `git daemon` (issue #12): `SHELLDONE_BIG_PUSH_MB` MiB of
//! incompressible live state (files of 32 MiB, under a git remote's 64 MiB per-file bound) plus
//! the demo's sessions, saved, pushed to a fresh bare repository served by `git daemon
//! --enable=receive-pack` on 127.0.0.1, fetched by a second store and restored there, byte for
//! byte. 128 MiB by default (CI); `just big-push` runs 1024 MiB in release and prints the figures
//! (times, peak memory, disk use of the store, the mirror and the server's repository). Each
//! mirror must stay under a twentieth of the store (ADR 0007: it keeps commits and trees only).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure: a panic is the test failing, with its message"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use shelldone::remote::Remote;
use shelldone::remote::git::GitRemote;
use shelldone::{Paths, RestoreOptions, SaveOptions, State};

#[path = "common/git_daemon.rs"]
mod git_daemon;

const FILE: u64 = 32 << 20;

fn quiet(_: u64, _: Option<u64>) {}

/// Disk use of everything under `dir` (allocated blocks), except under `skip`.
fn du(dir: &Path, skip: Option<&Path>) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| skip.is_none_or(|s| e.path() != s))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().blocks() * 512)
        .sum()
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
}

/// This process's peak resident memory (`VmHWM`), when /proc tells.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `(pid, ppid)` of every process, from /proc.
fn processes() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(pid), Some((_, after))) = (
            stat.split(' ').next().and_then(|p| p.parse().ok()),
            stat.rsplit_once(')'),
        ) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            out.push((pid, ppid));
        }
    }
    out
}

/// `VmHWM` of `pid` in kB.
fn hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l["VmHWM:".len()..]
                    .trim()
                    .trim_end_matches(" kB")
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// True for the git daemon (and the servers it forks, named the same).
fn is_daemon(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "git-daemon")
}

/// Samples, every 50 ms until `done`, the peak memory (`VmHWM`) of every process this one started
/// outside the git daemon's tree: the `git push` and its helpers. Returns the largest, in kB.
fn watch_children(done: &std::sync::atomic::AtomicBool) -> u64 {
    use std::sync::atomic::Ordering;
    let me = std::process::id();
    let mut peak = 0;
    for _ in 0..100_000 {
        if done.load(Ordering::Relaxed) {
            break;
        }
        let procs = processes();
        let mut ours = vec![me];
        let mut i = 0;
        while i < ours.len() {
            let parent = ours[i];
            ours.extend(
                procs
                    .iter()
                    .filter(|(p, pp)| *pp == parent && !is_daemon(*p))
                    .map(|(p, _)| *p),
            );
            i += 1;
        }
        for p in &ours[1..] {
            peak = peak.max(hwm_kb(*p));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    peak
}

/// Writes `len` incompressible bytes to `path`, one MiB at a time (BLAKE3 in XOF mode).
fn write_noise(path: &Path, seed: u64, len: u64) {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    let mut xof = h.finalize_xof();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// True when the two files hold the same bytes (compared a MiB at a time).
fn same_file(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

#[test]
fn big_first_push_over_git_daemon() {
    let mb: u64 = std::env::var("SHELLDONE_BIG_PUSH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let total = mb << 20;
    let tmp = tempfile::tempdir().unwrap();
    let paths = Paths {
        config_dir: tmp.path().join("a/config"),
        state_dir: tmp.path().join("a/state"),
    };
    let mut spec = shelldone::demo::DemoSpec::small();
    spec.seed = 12;
    shelldone::demo::generate(&paths.config_dir, &paths.state_dir, &spec).unwrap();
    let big = paths.config_dir.join("big");
    std::fs::create_dir_all(&big).unwrap();
    let mut left = total;
    let mut i = 0;
    while left > 0 {
        let n = left.min(FILE);
        write_noise(&big.join(format!("f{i:03}.bin")), i, n);
        left -= n;
        i += 1;
    }
    let live = du(&paths.config_dir, None) + du(&paths.state_dir, None);

    let (a, _) = State::open(paths.clone()).unwrap();
    let t = Instant::now();
    a.save(&SaveOptions {
        message: format!("{mb} MiB of noise"),
        ..Default::default()
    })
    .unwrap();
    let save_s = t.elapsed().as_secs_f64();
    let dev = a.device().to_owned();
    let head = a.refs().get("head").unwrap().unwrap();
    let mut updates = Vec::new();
    for (n, id) in a.refs().list("").unwrap() {
        if n == "head" || n.starts_with("sessions/") {
            updates.push(shelldone::remote::RefUpdate {
                name: format!("{dev}/{n}"),
                expected: None,
                new: Some(id),
            });
        }
    }

    let daemon = git_daemon::GitDaemon::start(&tmp.path().join("srv"));
    let (url, server) = daemon.repo("big.git");
    let mut ra = GitRemote::new("origin", &url, a.snapshots_dir(), &dev).unwrap();
    let t = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (st, git_kb) = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch_children(&done));
        let st = ra.push(a.objects(), &updates, &quiet).unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (st, watcher.join().unwrap())
    });
    let push_s = t.elapsed().as_secs_f64();
    let rss_push = peak_rss();
    assert!(st.bytes >= total, "{st:?}");

    let bpaths = Paths {
        config_dir: tmp.path().join("b/config"),
        state_dir: tmp.path().join("b/state"),
    };
    let (b, _) = State::open(bpaths).unwrap();
    let mut rb = GitRemote::new("origin", &url, b.snapshots_dir(), b.device()).unwrap();
    let t = Instant::now();
    let refs = rb.list_refs().unwrap();
    assert_eq!(refs[&format!("{dev}/head")], head);
    let batch = b.objects().batch().unwrap();
    rb.fetch(b.objects(), &batch, &[head], false, &quiet)
        .unwrap();
    batch.commit().unwrap();
    rb.settle(b.objects()).unwrap();
    let fetch_s = t.elapsed().as_secs_f64();
    let out = tmp.path().join("b/restored");
    b.restore(&RestoreOptions {
        rev: Some(head.to_hex()),
        to: Some(out.clone()),
        ..Default::default()
    })
    .unwrap();
    let mut compared = 0;
    for e in walkdir::WalkDir::new(&paths.config_dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
    {
        let rel = e.path().strip_prefix(&paths.config_dir).unwrap();
        assert!(
            same_file(e.path(), &out.join("config").join(rel)),
            "{} differs after the round trip",
            rel.display()
        );
        compared += 1;
    }
    assert!(compared as u64 > total / FILE, "{compared} files compared");

    let remotes = a.snapshots_dir().join("remotes");
    let figures: BTreeMap<&str, String> = [
        ("live state", mib(live)),
        (
            "store A (without mirrors)",
            mib(du(a.snapshots_dir(), Some(&remotes))),
        ),
        ("mirror A", mib(du(&remotes, None))),
        (
            "store B (without mirrors)",
            mib(du(
                b.snapshots_dir(),
                Some(&b.snapshots_dir().join("remotes")),
            )),
        ),
        (
            "mirror B",
            mib(du(&b.snapshots_dir().join("remotes"), None)),
        ),
        ("server repository", mib(du(&server, None))),
    ]
    .into_iter()
    .collect();
    eprintln!(
        "big-push: {mb} MiB: save {save_s:.1} s, push {push_s:.1} s ({} objects, {}), fetch {fetch_s:.1} s; peak RSS of this process {rss_push} after the push, {} at the end; largest peak RSS of a git process of the push {git_kb} kB",
        st.objects,
        mib(st.bytes),
        peak_rss()
    );
    for (k, v) in &figures {
        eprintln!("big-push: disk: {k}: {v}");
    }
    // A lean mirror (ADR 0007) keeps commits and trees: no second copy of the store.
    let store_a = du(a.snapshots_dir(), Some(&remotes));
    for (name, mirror) in [
        ("A", du(&remotes, None)),
        ("B", du(&b.snapshots_dir().join("remotes"), None)),
    ] {
        assert!(
            mirror < store_a / 20,
            "mirror {name} holds {} for a store of {}",
            mib(mirror),
            mib(store_a)
        );
    }
}
