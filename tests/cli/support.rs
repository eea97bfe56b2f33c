//! Helpers: a sandbox with its own config and state dirs, and tree comparison.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A live tree as [`tree`] reads it.
pub type Tree = BTreeMap<String, Entry>;

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    /// A sandbox on a memory filesystem (`/dev/shm`) when there is one: for tests that run
    /// hundreds of commands whose fsyncs are not what they test.
    pub fn in_memory() -> Self {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir())
        } else {
            tempfile::tempdir()
        };
        Sandbox {
            dir: dir.expect("tempdir"),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shelldone"));
        c.env("SHELLDONE_STATE_DIR", self.state())
            .env("SHELLDONE_CONFIG_DIR", self.config())
            .env("SHELLDONE_LOCK_TIMEOUT", "20")
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .args(args);
        c
    }
    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.code(0, args)
    }
    /// Runs and expects exit `code`; returns stdout.
    pub fn code(&self, code: i32, args: &[&str]) -> String {
        exited(&args, &self.run(args), code)
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn shelldone")
    }
    /// `state save`, returning the id printed on the last line.
    pub fn save(&self, msg: &str) -> String {
        let out = self.ok(&["state", "save", "-m", msg]);
        let id = out.lines().last().expect("a last line").trim().to_owned();
        assert_eq!(id.len(), 64, "last line should be a full id: {out}");
        id
    }
    pub fn generate(&self) {
        shelldone::demo::generate(
            &self.config(),
            &self.state(),
            &shelldone::demo::DemoSpec::small(),
        )
        .expect("generate");
    }
    /// The snapshotted part of the live state: every file (bytes), symlink (target) and dir.
    pub fn live(&self) -> BTreeMap<String, Entry> {
        let mut m = tree(&self.config(), "config");
        m.extend(tree(&self.state().join("sessions"), "state/sessions"));
        m.extend(tree(&self.state().join("journal"), "state/journal"));
        m
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(Vec<u8>, bool),
    Link(PathBuf),
    Dir,
}

/// Runs `c` with `stdin` written to its standard input; returns its output.
pub fn run_with_stdin(mut c: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Asserts that `o`, the output of `what`, exited with `code` (printing both streams when it
/// did not); returns its stdout.
pub fn exited(what: &dyn std::fmt::Debug, o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what:?}: expected exit {code}, got {:?}:\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf8 stdout")
}

/// Copies a directory tree (a fixture into a sandbox): folders and regular files.
pub fn copy_dir(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.expect("walk the source");
        let dest = to.join(e.path().strip_prefix(from).expect("under the source"));
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

pub fn tree(root: &Path, label: &str) -> BTreeMap<String, Entry> {
    use std::os::unix::fs::PermissionsExt;
    let mut m = BTreeMap::new();
    if !root.exists() {
        return m;
    }
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.expect("walk");
        let rel = format!(
            "{label}/{}",
            e.path()
                .strip_prefix(root)
                .expect("under")
                .to_string_lossy()
        );
        let ft = e.file_type();
        let v = if ft.is_symlink() {
            Entry::Link(std::fs::read_link(e.path()).expect("readlink"))
        } else if ft.is_dir() {
            Entry::Dir
        } else {
            let exec = e.metadata().expect("meta").permissions().mode() & 0o100 != 0;
            Entry::File(std::fs::read(e.path()).expect("read"), exec)
        };
        m.insert(rel, v);
    }
    m
}

pub fn object_files(state: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(state.join("snapshots/objects"))
        .min_depth(2)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// Asserts two trees are equal, naming only the paths that differ.
#[track_caller]
pub fn assert_same(got: &BTreeMap<String, Entry>, want: &BTreeMap<String, Entry>) {
    let mut diffs = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => diffs.push(format!("missing {k}")),
            Some(g) if g != v => diffs.push(format!("differs {k}: {}", short(g, v))),
            Some(_) => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            diffs.push(format!("extra {k}"));
        }
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

fn short(g: &Entry, w: &Entry) -> String {
    match (g, w) {
        (Entry::File(a, x), Entry::File(b, y)) => {
            format!("{} bytes exec={x} vs {} bytes exec={y}", a.len(), b.len())
        }
        _ => format!("{g:?} vs {w:?}").chars().take(200).collect(),
    }
}

#[path = "../common/git_daemon.rs"]
mod git_daemon;
pub use git_daemon::GitDaemon;

#[path = "../common/ci.rs"]
pub mod ci;

#[path = "../common/moto.rs"]
pub mod moto;
