//! `sync push`: send what the remote lacks and compare-and-swap this device's refs there;
//! `--dry-run` is the same push through a `DryRun` backend.

use serde::Serialize;

use super::pull::check_identity;
use super::remotes::{open_backend, open_remote, remote_config};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::remote::dryrun::DryRun;
use crate::remote::{Progress, RefUpdate, Remote, TransferStats};
use crate::store::refs::HEAD;
use crate::transfer::PlainRemote;

/// What a push did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    /// Objects and bytes sent.
    pub sent: TransferStats,
    /// Refs updated on the remote.
    pub refs_updated: Vec<String>,
}

/// One ref a push would move on the remote.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RefMove {
    /// Remote ref name, `<device>/head` or `<device>/sessions/<id>`.
    pub name: String,
    /// Its value on the remote now (hex; None: absent).
    pub from: Option<String>,
    /// The value the push would give it (hex; None: deleted).
    pub to: Option<String>,
}

/// What `sync push --dry-run` found: what a push would send and move. Nothing was changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRunReport {
    /// Objects and bytes (stored, compressed) the push would send.
    pub would_send: TransferStats,
    /// Refs the push would move, in order.
    pub refs: Vec<RefMove>,
}

/// Sends local history to the remote and moves this device's refs there.
///
/// # Errors
/// No snapshot yet, transport errors, a lost race ([`Error::RefConflict`]).
pub fn sync_push(cx: &Context, remote: &str, progress: Progress<'_>) -> Result<PushReport> {
    let _lock = cx.lock("sync push")?;
    let mut r = open_remote(cx, remote, true)?;
    let (report, updates) = push_to(cx, remote, r.as_mut(), progress)?;
    for u in &updates {
        cx.refs
            .set(&format!("remotes/{remote}/{}", u.name), u.new, "push")?;
    }
    Ok(report)
}

/// What [`sync_push`] would send and which refs it would move, found by the same push through
/// a [`DryRun`] backend (reads pass through, writes are recorded): nothing changes on the
/// remote or here (no remote-tracking ref moves; the store lock is not taken, as for any
/// command that only reads). A git remote is refused: its push converts snapshots into the
/// local git mirror as it goes, which no wrapper can hold back yet.
///
/// # Errors
/// A git remote ([`Error::Usage`]), no snapshot yet, transport errors, a ref that moved on
/// the remote since this store last saw it ([`Error::RefConflict`], as the push would meet).
pub fn sync_push_dry_run(
    cx: &Context,
    remote: &str,
    progress: Progress<'_>,
) -> Result<DryRunReport> {
    let rc = remote_config(cx, remote)?;
    if rc.encrypt || rc.require_signatures {
        return Err(Error::Usage(format!(
            "'sync push --dry-run' does not work with encrypted or signed remotes yet ('{remote}'; nothing was changed)"
        )));
    }
    if rc.kind == "git" {
        return Err(Error::Usage(format!(
            "'sync push --dry-run' works with directory and S3 remotes only; '{remote}' is a git remote, whose push converts snapshots into its local git mirror as it goes (nothing was changed)"
        )));
    }
    let mut r = PlainRemote::new(DryRun::new(open_backend(cx, &rc)?));
    push_to(cx, remote, &mut r, progress)?;
    let recorded = r.backend().recorded();
    Ok(DryRunReport {
        would_send: recorded.sent,
        refs: recorded
            .refs
            .iter()
            .map(|u| RefMove {
                name: u.name.clone(),
                from: u.expected.map(|id| id.to_hex()),
                to: u.new.map(|id| id.to_hex()),
            })
            .collect(),
    })
}

/// Pushes this device's head and session refs to `r`; returns the report and the updates
/// made (for the remote-tracking refs).
pub(super) fn push_to(
    cx: &Context,
    remote_name: &str,
    r: &mut dyn Remote,
    progress: Progress<'_>,
) -> Result<(PushReport, Vec<RefUpdate>)> {
    let head = cx.refs.get(HEAD)?.ok_or(Error::NoSnapshot)?;
    let current = r.list_refs()?;
    check_identity(cx, remote_name, &current)?;
    let dev = cx.device().to_owned();
    let mut updates = vec![RefUpdate {
        name: format!("{dev}/head"),
        expected: current.get(&format!("{dev}/head")).copied(),
        new: Some(head),
    }];
    for (name, id) in cx.refs.list("sessions/")? {
        let rname = format!("{dev}/{name}");
        updates.push(RefUpdate {
            expected: current.get(&rname).copied(),
            name: rname,
            new: Some(id),
        });
    }
    updates.retain(|u| u.expected != u.new);
    let mut report = PushReport::default();
    if !updates.is_empty() {
        report.sent = r.push(&cx.objects, &updates, progress)?;
    }
    report.refs_updated = updates.iter().map(|u| u.name.clone()).collect();
    Ok((report, updates))
}
