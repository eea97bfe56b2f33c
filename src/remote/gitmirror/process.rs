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

/// Run `cmd` (a [`supervised_git`] command, stdout/stderr piped) in a new process group whose
/// stdin is the supervisor's watchdog pipe, killing the whole group once it has been **idle** for
/// `idle`: no byte arrived on its stdout or stderr for that long. A transfer that keeps moving
/// runs as long as it needs (callers make git report progress, e.g. `git push --progress`); one
/// that stalls — a server that accepted the connection and then went silent — is stopped.
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
                            last.store(ms, Ordering::Relaxed);
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
    let status = loop {
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
