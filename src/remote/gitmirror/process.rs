//! Supervised `git` children: their own process group, killed with it when idle for too long or
//! when shelldone dies, so no git process outlives us.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{GitError, GitResult, io_err};

/// The supervisor every `git` child runs under (POSIX `sh`, argv: `git …`). It starts git in
/// the background, in the supervisor's own process group, and watches its stdin, a pipe whose
/// only writer is this process: when that pipe reaches end-of-file — this process exited,
/// however it died, `kill -9` included — it kills its whole process group (git and every
/// helper git started: `pack-objects`, `ssh`, a local `receive-pack`). So no git process outlives
/// shelldone, and no `unsafe` `pre_exec` is needed. When git exits first, the supervisor
/// stops its watcher and exits with git's status.
pub(super) const SUPERVISOR: &str = r#"exec 3<&0 0</dev/null
"$@" 3<&- &
child=$!
{ while read -r _ <&3; do :; done; kill -s KILL 0; } &
watcher=$!
wait "$child"
status=$?
kill "$watcher" 2>/dev/null
exit "$status""#;

/// A `git` command under [`SUPERVISOR`]; arguments added to it go to git. Run it with
/// [`run_with_timeout`], which gives it its own process group and the watchdog pipe.
pub(super) fn supervised_git() -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", SUPERVISOR, "shelldone-git-supervisor", "git"]);
    cmd
}

/// Kills the supervised process group of a child still running when dropped (an error or a
/// timeout in this process), so that git never outlives the call.
pub(super) struct GroupGuard {
    pub(super) pid: Option<rustix::process::Pid>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // The group may be gone already; nothing else to do then.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The send and receive queues of every TCP socket the processes of group `pgid` hold (Linux:
/// `/proc`), sorted: when they change, bytes are moving on the network even though git says
/// nothing (the end of a push, while the kernel still sends what git wrote). Empty elsewhere.
fn socket_queues(pgid: i32) -> Vec<(u64, String)> {
    let mut inodes = std::collections::HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for p in procs.filter_map(std::result::Result::ok) {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        if after.split_whitespace().nth(2) != Some(&pgid.to_string()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(std::result::Result::ok) {
            if let Ok(t) = std::fs::read_link(fd.path())
                && let Some(i) = t
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
            {
                inodes.insert(i);
            }
        }
    }
    let mut out = Vec::new();
    if inodes.is_empty() {
        return out;
    }
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(queues), Some(inode)) = (f.get(4), f.get(9).and_then(|i| i.parse().ok()))
                && inodes.contains(&inode)
            {
                out.push((inode, (*queues).to_owned()));
            }
        }
    }
    out.sort();
    out
}

/// Run `cmd` (a [`supervised_git`] command, stdout/stderr piped) in a new process group whose
/// stdin is the supervisor's watchdog pipe, killing the whole group once it has been **idle** for
/// `idle`: no byte arrived on its stdout or stderr, and (on Linux) the send and receive queues of
/// its TCP sockets did not change, for that long. A transfer that keeps moving runs as long as it
/// needs (callers make git report progress, e.g. `git push --progress`); one that stalls — a
/// server that accepted the connection and then went silent — is stopped.
pub(super) fn run_with_timeout(
    mut cmd: Command,
    idle: Duration,
    what: &str,
) -> GitResult<(std::process::ExitStatus, String, String)> {
    use std::os::unix::process::CommandExt;
    // Its own group: the supervisor's `kill 0` must reach git and its helpers, never this
    // process or its caller's group.
    cmd.process_group(0).stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(io_err(format!("spawning {what}")))?;
    let mut guard = GroupGuard {
        pid: Some(rustix::process::Pid::from_child(&child)),
    };
    // Held open until the child is reaped; dropping it (or dying) tells the supervisor to kill.
    let watchdog = child.stdin.take();
    let start = Instant::now();
    // Milliseconds after `start` of the last byte read from the child.
    let last = Arc::new(AtomicU64::new(0));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let last = Arc::clone(&last);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let mut chunk = [0u8; 8192];
                loop {
                    match p.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            buf.extend_from_slice(&chunk[..n]);
                            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                            last.fetch_max(ms, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        // A read error just truncates the captured output.
                        Err(_) => break,
                    }
                }
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    let mut queues = Vec::new();
    let mut looked = Instant::now();
    let status = loop {
        if looked.elapsed() >= Duration::from_millis(250) {
            looked = Instant::now();
            let now = socket_queues(pgid);
            if now != queues {
                let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                last.fetch_max(ms, Ordering::Relaxed);
                queues = now;
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None)
                if start.elapsed()
                    >= Duration::from_millis(last.load(Ordering::Relaxed)) + idle =>
            {
                drop(guard); // kills the whole group, git's helpers included
                let _ = child.wait();
                drop(watchdog);
                // The readers finish once the pipes close; don't wait on them.
                return Err(GitError::Timeout {
                    what: what.to_owned(),
                    timeout: idle,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                drop(guard);
                let _ = child.wait();
                return Err(io_err(format!("waiting for {what}"))(e));
            }
        }
    };
    // The supervisor exits only after git did and after stopping its watcher, so the group is
    // empty; once the leader is reaped its id may be reused, so it is not signalled again.
    guard.pid = None;
    drop(watchdog);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok((status, stdout, stderr))
}
