//! Pushing from the mirror with the `git` binary (gix cannot push: gitoxide issue 306):
//! `--force-with-lease --atomic`, never a `+` refspec; rejections classified per ref.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::process::{run_with_timeout, supervised_git};
use super::{
    DEFAULT_IDLE_TIMEOUT, GitError, GitResult, PushRejection, RejectKind, validate_ref_name,
};
use gix::ObjectId as GitId;

/// Blobs over this size are streamed by `git push`, without a delta search (as for fetches).
pub(super) const BIG_FILE_THRESHOLD: u64 = 16 << 20;

/// One ref update for [`push`]: `(local ref or hex oid, remote ref, expected old remote value)`.
/// An empty source deletes the remote ref. `None` as expected value means "must not exist".
pub type PushUpdate<'a> = (&'a str, &'a str, Option<GitId>);

/// [`push_with_timeout`] with [`DEFAULT_IDLE_TIMEOUT`].
pub fn push(mirror_path: &Path, url: &str, updates: &[PushUpdate<'_>]) -> GitResult<()> {
    push_with_timeout(mirror_path, url, updates, DEFAULT_IDLE_TIMEOUT)
}

/// Push from the bare mirror at `mirror_path` to `url` using `git push --porcelain` with one
/// `--force-with-lease=<remote ref>:<expected>` per update (never a `+` refspec).
///
/// Per-ref refusals are returned as [`GitError::PushRejected`] (see [`RejectKind`]; other refs
/// of the same push may have been updated); anything else (unreachable remote, bad input, …) as
/// [`GitError::PushFailed`]. The push runs with `--progress`, and the `git` process is killed
/// once nothing moved for `timeout` (no output, no progress report): an idle timeout, so a big
/// push that keeps moving is never cut short.
pub fn push_with_timeout(
    mirror_path: &Path,
    url: &str,
    updates: &[PushUpdate<'_>],
    timeout: Duration,
) -> GitResult<()> {
    push_with_options(mirror_path, url, updates, timeout, PushOptions::default())
}

/// How [`push_with_options`] pushes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushOptions {
    /// `git push --atomic`: one refused ref (a stale lease) leaves every ref on the remote
    /// unchanged.
    pub atomic: bool,
    /// `git push --no-thin`: no delta against an object the remote has, which a lean mirror
    /// may have dropped (ADR 0007).
    pub no_thin: bool,
}

/// [`push_with_timeout`], with [`PushOptions`].
pub fn push_with_options(
    mirror_path: &Path,
    url: &str,
    updates: &[PushUpdate<'_>],
    timeout: Duration,
    options: PushOptions,
) -> GitResult<()> {
    if updates.is_empty() {
        return Ok(());
    }
    let mut cmd = supervised_git();
    cmd.arg("--git-dir")
        .arg(mirror_path)
        // Blobs over 16 MiB are streamed into the pack, never held whole nor searched for deltas:
        // memory stays flat, and the bytes (and so the progress the idle timeout watches) keep
        // moving instead of pausing for seconds of delta search or compression per object.
        .arg("-c")
        .arg(format!("core.bigFileThreshold={BIG_FILE_THRESHOLD}"))
        .args(["push", "--porcelain", "--no-verify", "--progress"]);
    if options.atomic {
        cmd.arg("--atomic");
    }
    if options.no_thin {
        cmd.arg("--no-thin");
    }
    for (src, dst, expected) in updates {
        validate_ref_name(dst)?;
        if src.starts_with('+') || src.contains(':') || dst.contains(':') {
            return Err(GitError::InvalidInput(format!(
                "push source {src:?} / destination {dst:?} must not contain '+' or ':'"
            )));
        }
        let expect = expected.map(|o| o.to_string()).unwrap_or_default();
        cmd.arg(format!("--force-with-lease={dst}:{expect}"));
    }
    cmd.arg("--").arg(url);
    for (src, dst, _) in updates {
        cmd.arg(format!("{src}:{dst}"));
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS", "")
        .env("LC_ALL", "C")
        .env("LANGUAGE", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let (status, stdout, stderr) = run_with_timeout(cmd, timeout, "git push")?;

    let mut seen: Vec<&str> = Vec::new();
    let mut rejected = Vec::new();
    for line in stdout.lines() {
        // Porcelain: "<flag>\t<from>:<to>\t<summary>" (+ "To <url>" and "Done" lines).
        let mut fields = line.splitn(3, '\t');
        let (Some(flag), Some(refs), Some(summary)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((_, to)) = refs.rsplit_once(':') else {
            continue;
        };
        seen.push(to);
        if flag == "!" {
            rejected.push(PushRejection {
                remote_ref: to.to_owned(),
                kind: classify_rejection(summary),
                detail: summary.to_owned(),
            });
        }
    }
    if !rejected.is_empty() {
        return Err(GitError::PushRejected {
            url: url.to_owned(),
            rejected,
        });
    }
    let all_reported = updates.iter().all(|(_, dst, _)| seen.contains(dst));
    if !status.success() || !all_reported {
        return Err(GitError::PushFailed {
            url: url.to_owned(),
            status: status.to_string(),
            stderr: without_progress(&stderr),
        });
    }
    Ok(())
}

/// `stderr` of `git push --progress` without its progress reports (the lines git rewrites with
/// `\r`), so that an error message keeps only what git said about the failure.
pub(super) fn without_progress(stderr: &str) -> String {
    const PROGRESS: &[&str] = &[
        "Enumerating objects:",
        "Counting objects:",
        "Delta compression using",
        "Compressing objects:",
        "Writing objects:",
        "Total ",
        "Receiving objects:",
        "Resolving deltas:",
    ];
    stderr
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| {
            let l = l.strip_prefix("remote: ").unwrap_or(l);
            !l.is_empty() && !PROGRESS.iter().any(|p| l.starts_with(p))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn classify_rejection(summary: &str) -> RejectKind {
    if summary.contains("[remote rejected]") {
        RejectKind::RemoteRejected
    } else if summary.contains("stale info") {
        RejectKind::StaleLease
    } else if summary.contains("non-fast-forward")
        || summary.contains("fetch first")
        || summary.contains("already exists")
    {
        RejectKind::NonFastForward
    } else {
        RejectKind::Other
    }
}
