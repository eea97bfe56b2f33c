//! Issue #10, driving the real binary: a git remote cannot make a pull hold a huge object; one
//! rule for what a snapshot may hold (escaping symlinks, `.git` folders) that save, push and
//! pull agree on, across two devices; a killed push leaves no git process behind; the stat cache
//! never decides what a restore writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use objects_format::encoding::encode_blob;
use objects_format::{ChangeSummary, EntryKind, Kind, Object, ObjectId, Snapshot};
use shelldone::snapshot::{Leaf, flatten, write_trees};
use shelldone::{Paths, State};

#[path = "common/git_daemon.rs"]
mod git_daemon;
use git_daemon::GitDaemon;
#[path = "common/ci.rs"]
mod ci;

/// One device: its own config and state dirs.
struct Dev {
    dir: tempfile::TempDir,
}

impl Dev {
    fn new() -> Dev {
        Dev {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn paths(&self) -> Paths {
        Paths {
            config_dir: self.config(),
            state_dir: self.state(),
        }
    }
    fn env(&self, c: &mut Command) {
        c.env("SHELLDONE_STATE_DIR", self.state())
            .env("SHELLDONE_CONFIG_DIR", self.config())
            .env("SHELLDONE_LOCK_TIMEOUT", "20")
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CONFIG_HOME");
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shelldone"));
        self.env(&mut c);
        c.args(args);
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn shelldone")
    }
    /// Runs and expects success; returns stderr (where warnings go).
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "shelldone {args:?} failed ({:?}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
    /// `state save -m msg`; the new head's id.
    fn save(&self, msg: &str) -> String {
        let o = self.run(&["state", "save", "-m", msg]);
        assert!(o.status.success(), "{o:?}");
        let out = String::from_utf8(o.stdout).expect("utf8");
        out.lines().last().expect("a last line").trim().to_owned()
    }
    fn write(&self, rel: &str, content: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }
    fn device(&self) -> String {
        std::fs::read_to_string(self.state().join("snapshots/device"))
            .expect("device id")
            .trim()
            .to_owned()
    }
    /// Every file (bytes), symlink (target) and directory of the snapshotted folders.
    fn live(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for (root, label) in [
            (self.config(), "config"),
            (self.state().join("sessions"), "state/sessions"),
            (self.state().join("journal"), "state/journal"),
        ] {
            if !root.exists() {
                continue;
            }
            for e in walkdir::WalkDir::new(&root)
                .min_depth(1)
                .sort_by_file_name()
            {
                let e = e.expect("walk");
                let rel = e.path().strip_prefix(&root).expect("under root");
                let v = if e.path_is_symlink() {
                    format!(
                        "link {}",
                        std::fs::read_link(e.path()).expect("readlink").display()
                    )
                } else if e.file_type().is_dir() {
                    "dir".to_owned()
                } else {
                    format!(
                        "file {}",
                        String::from_utf8_lossy(&std::fs::read(e.path()).expect("read"))
                    )
                };
                m.insert(format!("{label}/{}", rel.display()), v);
            }
        }
        m
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn git_stdin(dir: &Path, args: &[&str], envs: &[(&str, &str)], input: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = c.wait_with_output().expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Runs `dev`'s shelldone with `args`; returns its output and peak RSS in KiB. Uses GNU time
/// when installed (.ci/run installs it; CI fails without it), otherwise polls the child's
/// `VmHWM`, which can miss a short peak.
fn peak_rss(dev: &Dev, args: &[&str]) -> (Output, u64) {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        ci::cannot_run(
            "peak RSS by GNU time",
            "/usr/bin/time is missing (Debian package time); polling VmHWM instead",
        );
    }
    if time.exists() {
        let report = dev.dir.path().join("rss");
        let mut c = Command::new(time);
        dev.env(&mut c);
        c.args(["-f", "%M", "-o"])
            .arg(&report)
            .arg(env!("CARGO_BIN_EXE_shelldone"))
            .args(args);
        let out = c.output().expect("spawn time");
        let kb = std::fs::read_to_string(&report)
            .expect("time report")
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .next_back()
            .expect("a number of KiB");
        return (out, kb);
    }
    let mut child = dev
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status_file = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak = 0;
    let out_pipe = child.stdout.take().expect("stdout");
    let err_pipe = child.stderr.take().expect("stderr");
    let drain = |mut p: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            v
        })
    };
    let (o, e) = (drain(Box::new(out_pipe)), drain(Box::new(err_pipe)));
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_file)
            && let Some(l) = s.lines().find(|l| l.starts_with("VmHWM:"))
            && let Some(kb) = l.split_whitespace().nth(1).and_then(|v| v.parse().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = Output {
        status,
        stdout: o.join().expect("stdout"),
        stderr: e.join().expect("stderr"),
    };
    (out, peak)
}

/// The bomb's size: 1 GiB by default (building a 3 GiB blob takes git about a minute here);
/// `SHELLDONE_BOMB_BYTES` sets another.
fn bomb_bytes() -> u64 {
    std::env::var("SHELLDONE_BOMB_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30)
}

/// Issue #10, item 4: an all-zero blob of gigabytes (about a megabyte on the wire) in a session's
/// tree, committed with the original message of a real shelldone commit. A pull on a fresh
/// device must fail naming the remote, change nothing, and stay under 100 MB of RSS — both when
/// the blob arrives in a pack (gix refuses it from its declared size) and when the mirror
/// already holds it (the import refuses it from its header).
#[test]
fn git_bomb_is_refused_in_bounded_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let daemon = GitDaemon::start(&tmp.path().join("srv"));
    let (url, repo) = daemon.repo("bomb.git");

    let a = Dev::new();
    a.write("config/config.toml", "font = 1\n");
    a.write("state/sessions/s1.json", "{\"id\":\"s1\"}\n");
    a.ok(&["state", "save", "-m", "first"]);
    a.ok(&["remote", "add", "origin", &url]);
    a.ok(&["sync", "push"]);
    let dev = a.device();

    // The bomb, in the remote, where the session descriptor was.
    let size = bomb_bytes();
    let zero = tmp.path().join("zero");
    std::fs::File::create(&zero)
        .and_then(|f| f.set_len(size))
        .expect("sparse file");
    let t0 = Instant::now();
    let bomb = git(&repo, &["hash-object", "-w", zero.to_str().expect("utf8")])
        .trim()
        .to_owned();
    eprintln!("built a {size}-byte zero blob {bomb} in {:?}", t0.elapsed());
    std::fs::remove_file(&zero).expect("rm");
    let head = git(&repo, &["rev-parse", &format!("refs/shelldone/{dev}/head")])
        .trim()
        .to_owned();
    // Rebuild root → state → sessions with s1.json pointing at the bomb.
    let swap = |tree: &str, name: &str, new: &str| -> String {
        let listing = git(&repo, &["ls-tree", tree]);
        let mut out = String::new();
        for l in listing.lines() {
            let (meta, n) = l.split_once('\t').expect("tab");
            if n == name {
                let mut f = meta.split(' ');
                let (mode, kind) = (f.next().expect("mode"), f.next().expect("kind"));
                out.push_str(&format!("{mode} {kind} {new}\t{n}\n"));
            } else {
                out.push_str(&format!("{l}\n"));
            }
        }
        git_stdin(&repo, &["mktree"], &[], out.as_bytes())
            .trim()
            .to_owned()
    };
    let sessions = swap(&format!("{head}:state/sessions"), "s1.json", &bomb);
    let state = swap(&format!("{head}:state"), "sessions", &sessions);
    let root = swap(&format!("{head}^{{tree}}"), "state", &state);
    // The same commit with the bomb's root tree: its header (the snapshot), author and message
    // kept byte for byte.
    let raw = git(&repo, &["cat-file", "commit", &head]);
    let (first, rest) = raw.split_once('\n').expect("tree line");
    assert!(first.starts_with("tree "), "{first}");
    let evil = git_stdin(
        &repo,
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        &[],
        format!("tree {root}\n{rest}").as_bytes(),
    )
    .trim()
    .to_owned();
    git(
        &repo,
        &["update-ref", &format!("refs/shelldone/{dev}/head"), &evil],
    );
    git(&repo, &["update-ref", &format!("refs/heads/{dev}"), &evil]);

    // 1. The blob arrives in a pack.
    let b = Dev::new();
    b.ok(&["remote", "add", "origin", &url]);
    let before = b.live();
    let t0 = Instant::now();
    let (out, kb) = peak_rss(&b, &["sync", "pull"]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "pull of the bomb in a pack: {:?}, {kb} KiB peak RSS, {:?}: {err}",
        out.status,
        t0.elapsed()
    );
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("remote 'origin'") && err.contains("over the limit"),
        "{err}"
    );
    assert!(kb <= 100 * 1024, "peak RSS {kb} KiB over 100 MB");
    assert_eq!(b.live(), before, "a refused pull changes nothing live");
    let log = b.run(&["log"]);
    assert!(
        String::from_utf8_lossy(&log.stdout).contains("no snapshots yet"),
        "no snapshot: {log:?}"
    );

    // 2. The mirror already holds every object (fetched by another means, e.g. `git fetch` for
    //    an http remote): the import reads the blob's header and refuses it without inflating.
    let mirror = b.state().join("snapshots/remotes/origin.git");
    let status = Command::new("cp")
        .args(["-a"])
        .arg(repo.join("objects/."))
        .arg(mirror.join("objects"))
        .status()
        .expect("cp");
    assert!(status.success());
    let t0 = Instant::now();
    let (out, kb) = peak_rss(&b, &["sync", "pull"]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "pull with the bomb in the mirror: {:?}, {kb} KiB peak RSS, {:?}: {err}",
        out.status,
        t0.elapsed()
    );
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("remote 'origin'")
            && err.contains(&bomb)
            && err.contains("state/sessions/s1.json")
            && err.contains("over the limit"),
        "{err}"
    );
    assert!(kb <= 100 * 1024, "peak RSS {kb} KiB over 100 MB");
    assert_eq!(b.live(), before);
    assert!(
        walkdir::WalkDir::new(b.state().join("snapshots/objects"))
            .into_iter()
            .filter_map(Result::ok)
            .all(|e| !e.file_type().is_file()),
        "no object was stored"
    );
    let packs = b.state().join("snapshots/packs");
    assert!(
        !packs.exists() || std::fs::read_dir(&packs).expect("packs").next().is_none(),
        "no pack was stored"
    );
    let (st, _) = State::open(b.paths()).expect("open");
    assert!(st.refs().list("").expect("refs").is_empty(), "no ref moved");
}

/// Makes `dev`'s head a snapshot, as an older shelldone saved it, that also holds `links`
/// (path, target): entries today's save leaves out.
fn plant_old_history(dev: &Dev, links: &[(&str, &str)]) -> ObjectId {
    let (st, _) = State::open(dev.paths()).expect("open");
    let head = st.refs().get("head").expect("refs").expect("a head");
    let snap = st.objects().read_snapshot(&head).expect("snapshot");
    let mut flat = flatten(st.objects(), &snap.root).expect("flatten");
    let batch = st.objects().batch().expect("batch");
    for (path, target) in links {
        let c = encode_blob(target.as_bytes());
        let id = ObjectId::compute(Kind::Blob, &c);
        batch.put_canonical(Kind::Blob, id, &c).expect("put");
        flat.leaves.insert(
            path.as_bytes().to_vec(),
            Leaf {
                kind: EntryKind::Symlink,
                flags: 0,
                mode: 0,
                size: target.len() as u64,
                id,
            },
        );
    }
    let root = write_trees(&flat, Some(&batch)).expect("trees");
    let id = batch
        .put(&Object::Snapshot(Snapshot {
            root,
            parents: vec![head],
            time_ns: snap.time_ns + 1,
            device: st.device().to_owned(),
            message: "saved by an older shelldone".into(),
            session: None,
            summary: ChangeSummary::default(),
            extra: vec![],
        }))
        .expect("snapshot");
    batch.commit().expect("commit");
    st.refs()
        .set("head", Some(id), "test: old history")
        .expect("head");
    id
}

/// Issue #10, item 5, on one kind of remote: device A's config holds a plugin checkout with a
/// `.git` folder and, from an older shelldone, snapshots with an absolute and a climbing
/// symlink. A pushes; B pulls and gets everything else with a warning naming each link; pushes
/// and pulls keep working both ways afterwards.
fn policy_across_devices(url: &str, git_repo: Option<&Path>) {
    let a = Dev::new();
    a.write("config/config.toml", "font = 1\n");
    a.write("config/plugins/p/init.lua", "print('hi')\n");
    a.write("config/plugins/p/.git/HEAD", "ref: refs/heads/main\n");
    a.write("config/plugins/p/.git/config", "[core]\n\tbare = false\n");
    a.write("config/plugins/p/.GIT/odd", "case variant\n");
    a.write("state/sessions/s1.json", "{\"id\":\"s1\"}\n");
    a.write("state/journal/0001.jsonl", "{\"n\":1}\n");
    a.ok(&["state", "save", "-m", "first"]);
    // The links live on A (a dotfile manager's), and an older shelldone saved them.
    let outside = a.dir.path().join("outside");
    std::os::unix::fs::symlink("/etc/passwd", a.config().join("x")).expect("symlink");
    std::os::unix::fs::symlink("../outside", a.config().join("up")).expect("symlink");
    plant_old_history(
        &a,
        &[("config/x", "/etc/passwd"), ("config/up", "../outside")],
    );
    a.ok(&["remote", "add", "origin", url, "--init"]);
    a.ok(&["sync", "push"]);

    if let Some(repo) = git_repo {
        // `.git` is escaped in the git mapping, so the remote is a valid repository.
        let files = git(
            repo,
            &[
                "ls-tree",
                "-r",
                "--name-only",
                &format!("refs/heads/{}", a.device()),
            ],
        );
        assert!(
            files.contains("config/plugins/p/shelldone-escaped~.git/HEAD")
                && files.contains("config/plugins/p/shelldone-escaped~.GIT/odd"),
            "{files}"
        );
        assert!(
            !files
                .lines()
                .any(|f| f.split('/').any(|c| c.eq_ignore_ascii_case(".git")))
        );
        git(repo, &["fsck", "--strict", "--no-dangling"]);
    }

    let b = Dev::new();
    b.ok(&["remote", "add", "origin", url]);
    let err = b.ok(&["sync", "pull"]);
    for p in ["config/x", "config/up"] {
        assert!(
            err.contains(&format!("warning: not restored: {p}: symlink")),
            "no warning naming {p}: {err}"
        );
    }
    let mut want = a.live();
    want.remove("config/x");
    want.remove("config/up");
    assert_eq!(b.live(), want, "B has everything but the two links");
    assert!(!b.dir.path().join("outside").exists());
    assert!(!outside.exists());

    // B changes something and pushes; A pulls it (its own links stay: they are not state).
    b.write("config/config.toml", "font = 2\n");
    b.ok(&["state", "save", "-m", "on b"]);
    b.ok(&["sync", "push"]);
    let err = a.ok(&["sync", "pull"]);
    assert!(
        err.contains("warning: not saved: config/x: symlink"),
        "{err}"
    );
    let live = a.live();
    assert_eq!(live["config/config.toml"], "file font = 2\n");
    assert_eq!(live["config/x"], "link /etc/passwd");
    assert_eq!(live["config/up"], "link ../outside");
    assert_eq!(
        live["config/plugins/p/.git/HEAD"],
        "file ref: refs/heads/main\n"
    );

    // And back again.
    a.write("state/journal/0001.jsonl", "{\"n\":1}\n{\"n\":2}\n");
    a.ok(&["state", "save", "-m", "on a"]);
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull"]);
    let mut want = a.live();
    want.remove("config/x");
    want.remove("config/up");
    assert_eq!(b.live(), want);
    for d in [&a, &b] {
        d.ok(&["state", "check"]);
    }
    if let Some(repo) = git_repo {
        git(repo, &["fsck", "--strict", "--no-dangling"]);
    }
}

/// A restore that skips an escaping link leaves whatever is live at its path as it is, a
/// directory included, and never writes through a live symlink that stands where the target
/// has a directory.
#[test]
fn a_skipped_link_leaves_the_live_path_alone_and_nothing_goes_through_a_link() {
    let d = Dev::new();
    d.write("config/config.toml", "font = 1\n");
    d.write("config/sub/inner/file.txt", "inner\n");
    d.ok(&["state", "save", "-m", "first"]);
    let with_dir = d.save("second");
    let old = plant_old_history(&d, &[("config/x", "/etc/passwd")]).to_hex();
    // Live: a directory where the old snapshot has the escaping link.
    d.write("config/x/keep.txt", "mine\n");
    let err = d.ok(&["state", "restore", &old]);
    assert!(
        err.contains("warning: not restored: config/x: symlink"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.config().join("x/keep.txt")).expect("kept"),
        "mine\n"
    );
    // Live: `config/sub` replaced by a symlink to a directory outside; restoring a snapshot
    // with `config/sub/inner/file.txt` must replace the link, never write through it.
    let outside = d.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::remove_dir_all(d.config().join("sub")).expect("rm");
    std::os::unix::fs::symlink(&outside, d.config().join("sub")).expect("symlink");
    d.ok(&["state", "restore", &with_dir]);
    assert!(
        std::fs::read_dir(&outside)
            .expect("outside")
            .next()
            .is_none(),
        "something was written outside through the link"
    );
    assert_eq!(
        std::fs::read_to_string(d.config().join("sub/inner/file.txt")).expect("restored"),
        "inner\n"
    );
    assert!(!d.config().join("sub").is_symlink());
}

#[test]
fn escaping_links_and_dot_git_sync_through_a_directory_remote() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("remote");
    policy_across_devices(dir.to_str().expect("utf8"), None);
}

#[test]
fn escaping_links_and_dot_git_sync_through_a_git_remote() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let daemon = GitDaemon::start(&tmp.path().join("srv"));
    let (url, repo) = daemon.repo("policy.git");
    policy_across_devices(&url, Some(&repo));
}

/// Pids of live processes whose environment holds `mark`.
fn marked_processes(mark: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        // A zombie has an empty environment; it is dead already.
        if env.split(|&b| b == 0).any(|v| v == mark.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Issue #10, item 6: a SIGKILLed `sync push` must not leave its `git push` (or anything git
/// started) running under PID 1. The remote is a local repository whose pre-receive hook
/// hangs, so the push is caught mid-way.
#[test]
fn a_killed_push_leaves_no_git_process() {
    let a = Dev::new();
    a.write("config/config.toml", "font = 1\n");
    a.write("state/sessions/s1.json", "{\"id\":\"s1\"}\n");
    a.ok(&["state", "save", "-m", "first"]);
    let remote = a.dir.path().join("slow.git");
    let status = Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&remote)
        .status()
        .expect("git init");
    assert!(status.success());
    let started = a.dir.path().join("started");
    let hook = remote.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\ntouch '{}'\nsleep 600\n", started.display()),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    a.ok(&[
        "remote",
        "add",
        "origin",
        remote.to_str().expect("utf8"),
        "--init",
    ]);

    let mark = format!("SHELLDONE_ORPHAN_MARK={}", rand_mark());
    let (k, v) = mark.split_once('=').expect("=");
    let mut push = a
        .cmd(&["sync", "push"])
        .env(k, v)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn push");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(
            Instant::now() < deadline,
            "the push never reached the remote's hook"
        );
        assert!(
            push.try_wait().expect("wait").is_none(),
            "the push ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = marked_processes(&mark);
    assert!(
        during.len() > 2,
        "git, receive-pack and the hook run under the push: {during:?}"
    );
    push.kill().expect("SIGKILL shelldone");
    push.wait().expect("reap");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = marked_processes(&mark);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = marked_processes(&mark);
    }
    if !left.is_empty() {
        let names: Vec<String> = left
            .iter()
            .map(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .unwrap_or_default()
            })
            .collect();
        for p in &left {
            // Clean up what the test started (by pid, nothing else).
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        panic!("processes left after the push was killed: {names:?}");
    }
    assert!(
        git(&remote, &["for-each-ref"]).trim().is_empty(),
        "no ref moved on the remote"
    );
}

fn rand_mark() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{}-{t}", std::process::id())
}

/// Issue #10, item 6: a hand-edited stat cache entry (matching stat, another id) must not make a
/// restore leave wrong live files.
#[test]
fn a_lying_stat_cache_never_decides_a_restore() {
    use shelldone::store::statcache::{Stat, StatCache};
    let d = Dev::new();
    d.write("config/a.toml", "AAAA\n");
    d.write("state/sessions/s1.json", "{\"id\":\"s1\"}\n");
    let one = d.save("one");
    // Same size, other bytes.
    d.write("config/a.toml", "BBBB\n");
    d.save("two");
    let id_of = |s: &str| -> ObjectId { ObjectId::compute(Kind::Blob, &encode_blob(s.as_bytes())) };
    // The hand edit: a.toml's current stat, but the id of its first version.
    let cache_path = d.state().join("snapshots/statcache");
    let mut cache = StatCache::load(&cache_path);
    let file = d.config().join("a.toml");
    let stat = Stat::of(&std::fs::symlink_metadata(&file).expect("stat"));
    cache.insert(
        b"config/a.toml".to_vec(),
        stat,
        EntryKind::File,
        id_of("AAAA\n"),
        stat.mtime_ns + 10_000_000_000,
    );
    cache.save(&cache_path).expect("save cache");
    assert_eq!(
        StatCache::load(&cache_path).lookup(b"config/a.toml", &stat),
        Some((EntryKind::File, id_of("AAAA\n"))),
        "the lie is in place"
    );
    // Restore the first snapshot: a.toml must really be its first version afterwards.
    d.ok(&["state", "restore", &one]);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "AAAA\n");
    d.ok(&["state", "check"]);
}

/// The same for chunked files, which a restore confirms at the snapshot's own chunk boundaries
/// instead of chunking them again: a file that differs from the snapshot in one byte, in its
/// first, a middle or its last chunk, at the same size and under a stat cache entry that
/// vouches for the snapshot's version, is rewritten.
#[test]
fn a_lying_stat_cache_never_decides_a_restore_of_a_chunked_file() {
    use shelldone::store::statcache::{Stat, StatCache};
    let first: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (kind, first_id) =
        shelldone::snapshot::save::content_objects(&first, None).expect("chunk list id");
    assert_eq!(kind, EntryKind::ChunkedFile);
    for at in [0usize, 150_000, 299_999] {
        let d = Dev::new();
        d.write("config/a.toml", "a = 1\n");
        let path = d.state().join("sessions/s1/scrollback.bin");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &first).expect("write");
        let one = d.save("one");
        let mut second = first.clone();
        second[at] ^= 0x40;
        std::fs::write(&path, &second).expect("write");
        d.save("two");
        let cache_path = d.state().join("snapshots/statcache");
        let mut cache = StatCache::load(&cache_path);
        let stat = Stat::of(&std::fs::symlink_metadata(&path).expect("stat"));
        cache.insert(
            b"state/sessions/s1/scrollback.bin".to_vec(),
            stat,
            EntryKind::ChunkedFile,
            first_id,
            stat.mtime_ns + 10_000_000_000,
        );
        cache.save(&cache_path).expect("save cache");
        d.ok(&["state", "restore", &one, "--session", "s1"]);
        assert!(
            std::fs::read(&path).expect("read") == first,
            "byte {at} that differs was left as it was"
        );
        d.ok(&["state", "check"]);
    }
}
