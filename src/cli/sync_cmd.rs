//! `shelldone remote …` and `shelldone sync …` (the daemon is in `daemon_cmd`).

use std::process::ExitCode;

use super::documents;
use super::output::say;
use super::{ConflictsCmd, RemoteCmd, StrategyArg, SyncCmd, exit, out, output};
use crate::State;
use crate::error::{Error, Result};
use crate::sync::{DryRunReport, PullOptions, Strategy};

pub(super) fn run_remote(st: &State, json: bool, rc: &RemoteCmd) -> Result<ExitCode> {
    match rc {
        RemoteCmd::Add {
            name,
            url,
            init,
            endpoint,
            region,
            encrypt,
            require_signatures,
        } => {
            let r = st.remote_add_with(
                name,
                url,
                &crate::sync::RemoteOptions {
                    init: *init,
                    encrypt: *encrypt,
                    require_signatures: *require_signatures,
                    endpoint: endpoint.clone(),
                    region: region.clone(),
                },
            )?;
            if json {
                documents::print(&r)?;
            } else {
                let how = match (r.encrypt, r.require_signatures) {
                    (true, _) => "encrypted, signed ",
                    (false, true) => "signed ",
                    _ => "",
                };
                say(format!(
                    "added {how}{} remote '{}' → {}",
                    r.kind, r.name, r.url
                ));
            }
        }
        RemoteCmd::List => {
            let all = st.remotes()?;
            if json {
                documents::print(&all)?;
            } else {
                for r in all {
                    out(format!("{}\t{}\t{}", r.name, r.kind, r.url));
                }
            }
        }
        RemoteCmd::Remove { name } => {
            st.remote_remove(name)?;
            if !json {
                say(format!("removed remote '{name}'"));
            } else {
                documents::print(&documents::RemoteRemoved { removed: name })?;
            }
        }
        RemoteCmd::Upgrade { name } => {
            let u = st.remote_upgrade(name)?;
            if json {
                documents::print(&u)?;
            } else if u.from == u.to {
                say(format!(
                    "remote '{}' is format {}: nothing to upgrade",
                    u.remote, u.to
                ));
            } else {
                say(format!(
                    "upgraded remote '{}' from format {} to {}; devices whose shelldone reads only format {} must upgrade shelldone",
                    u.remote, u.from, u.to, u.from
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sync push --dry-run`: what would be sent and which refs would move.
fn print_dry_run(json: bool, remote: &str, r: &DryRunReport) -> Result<()> {
    if json {
        return documents::print(&documents::PushDryRun {
            remote,
            dry_run: true,
            objects: r.would_send.objects,
            bytes: r.would_send.bytes,
            refs: &r.refs,
        });
    }
    if r.refs.is_empty() {
        out(format!(
            "dry run: {remote} is up to date; a push would send nothing"
        ));
        return Ok(());
    }
    out(format!(
        "dry run: a push to {remote} would send {} objects ({}) and move {} refs:",
        r.would_send.objects,
        output::bytes(r.would_send.bytes),
        r.refs.len()
    ));
    let short = |v: &Option<String>| {
        v.as_deref().map_or_else(
            || "(absent)".to_owned(),
            |h| h[..h.len().min(12)].to_owned(),
        )
    };
    for m in &r.refs {
        out(format!(
            "  {}  {} -> {}",
            m.name,
            short(&m.from),
            short(&m.to)
        ));
    }
    out("nothing was changed");
    Ok(())
}

pub(super) fn run_sync(st: &State, json: bool, sc: &SyncCmd) -> Result<ExitCode> {
    match sc {
        SyncCmd::Push { remote, dry_run } => {
            let remote = &super::open::remote_or_default(remote.as_deref());
            let t = super::progress::Transfer::new("push");
            let cb = |done: u64, total: Option<u64>| t.report(done, total);
            if *dry_run {
                let r = st.sync_push_dry_run(remote, &cb)?;
                drop(t);
                print_dry_run(json, remote, &r)?;
                return Ok(ExitCode::SUCCESS);
            }
            let r = st.sync_push(remote, &cb)?;
            drop(t);
            if json {
                documents::print(&documents::Pushed {
                    remote,
                    objects_sent: r.sent.objects,
                    bytes_sent: r.sent.bytes,
                    refs_updated: &r.refs_updated,
                })?;
            } else if r.refs_updated.is_empty() {
                say(format!("{remote} is up to date"));
            } else {
                say(format!(
                    "pushed to {remote}: {} objects ({}), {} refs updated",
                    r.sent.objects,
                    output::bytes(r.sent.bytes),
                    r.refs_updated.len()
                ));
            }
        }
        SyncCmd::Pull {
            remote,
            no_restore,
            strategy,
            sessions,
            allow_unrelated,
        } => {
            let remote = &super::open::remote_or_default(remote.as_deref());
            let t = super::progress::Transfer::new("pull");
            let cb = |done: u64, total: Option<u64>| t.report(done, total);
            let opts = PullOptions {
                no_restore: *no_restore,
                strategy: match strategy {
                    StrategyArg::Full => Strategy::Full,
                    StrategyArg::Partial => Strategy::Partial,
                },
                sessions: sessions.clone(),
                allow_unrelated: *allow_unrelated,
            };
            let r = st.sync_pull(remote, &opts, &cb)?;
            drop(t);
            if json {
                documents::print(&r)?;
            } else {
                say(format!(
                    "pulled from {remote}: {} objects ({}), devices: {}",
                    r.received.objects,
                    output::bytes(r.received.bytes),
                    if r.devices.is_empty() {
                        "none".to_owned()
                    } else {
                        r.devices.join(", ")
                    }
                ));
                for d in &r.incomplete {
                    out(format!(
                        "  {d} left out: the remote does not hold every object of its refs yet (a copy taken during a push, a folder still syncing); its previous state stays"
                    ));
                }
                if let Some(d) = &r.adopted {
                    say(format!(
                        "  adopted {d}'s state (this device had no history)"
                    ));
                }
                for d in &r.fast_forwarded {
                    say(format!("  fast-forwarded to {d}"));
                }
                for d in &r.merged {
                    say(format!("  merged {d}"));
                }
                if !r.sessions_updated.is_empty() {
                    say(format!(
                        "  sessions updated: {}",
                        r.sessions_updated.join(" ")
                    ));
                }
                for s in &r.skipped_sessions {
                    out(format!(
                        "  session {} not taken from {}: {}",
                        s.session, s.device, s.why
                    ));
                }
                for c in &r.conflicts {
                    out(format!("  conflict {}", conflict_line(c)));
                }
                if r.restored {
                    out(format!(
                        "  live state updated ({} files changed)",
                        r.files_changed
                    ));
                }
                if r.open_conflicts > 0 {
                    say(format!(
                        "{} open conflict(s): 'shelldone conflicts' lists them, 'shelldone conflicts resolve ID --ours|--theirs|--both' settles one",
                        r.open_conflicts
                    ));
                }
            }
            if !r.conflicts.is_empty() || !r.skipped_sessions.is_empty() {
                return Ok(ExitCode::from(exit::CONFLICTS));
            }
        }
        SyncCmd::Status { remote } => {
            let remote = &super::open::remote_or_default(remote.as_deref());
            let s = st.sync_status(remote)?;
            if json {
                documents::print(&s)?;
            } else {
                for d in &s {
                    let ab = match (d.ahead, d.behind) {
                        (Some(a), Some(b)) => format!("{a} ahead, {b} behind"),
                        _ => "not fetched yet (run 'shelldone sync pull --no-restore')".to_owned(),
                    };
                    out(format!(
                        "{}{}  {}  {ab}",
                        d.device,
                        if d.is_self { " (this device)" } else { "" },
                        &d.head[..12]
                    ));
                    if !d.sessions_differ.is_empty() {
                        out(format!(
                            "  sessions that differ: {}",
                            d.sessions_differ.join(" ")
                        ));
                    }
                }
                if s.is_empty() {
                    out(format!(
                        "{remote} has no devices yet; run 'shelldone sync push {remote}'"
                    ));
                }
                let open = st.conflicts()?.len();
                if open > 0 {
                    out(format!(
                        "{open} open conflict(s) on this device: 'shelldone conflicts'"
                    ));
                }
            }
        }
        SyncCmd::Daemon(args) => return super::daemon_cmd::run(st, json, args),
    }
    Ok(ExitCode::SUCCESS)
}

/// One line for a conflict: what, which versions, how to settle it.
fn conflict_line(c: &crate::sync::Conflict) -> String {
    let what = match c.kind {
        crate::sync::ConflictKind::Session => {
            format!("session {}", c.path.trim_start_matches("state/sessions/"))
        }
        crate::sync::ConflictKind::File => format!("file {}", c.path),
        crate::sync::ConflictKind::Keys => format!("{} in {}", c.keys.join(", "), c.path),
    };
    format!(
        "{} [{what}]: kept {}'s version ({}), set aside {}'s ({}); resolve: shelldone conflicts resolve {} --ours|--theirs|--both",
        c.id,
        c.kept_device,
        output::time(c.kept_time_ns),
        c.other_device,
        output::time(c.other_time_ns),
        c.id
    )
}

pub(super) fn run_conflicts(
    st: &State,
    json: bool,
    cmd: Option<&ConflictsCmd>,
) -> Result<ExitCode> {
    use crate::sync::resolve::Resolution;
    match cmd.unwrap_or(&ConflictsCmd::List) {
        ConflictsCmd::List => {
            let all = st.conflicts()?;
            if json {
                documents::print(&all)?;
            } else if all.is_empty() {
                out("no open conflicts");
            } else {
                for c in &all {
                    out(conflict_line(c));
                }
            }
        }
        ConflictsCmd::Show { id } => {
            let (c, files) = st.conflict_show(id)?;
            if json {
                documents::print(&documents::ConflictShown::new(&c, &files))?;
            } else {
                out(conflict_line(&c));
                for f in &files {
                    out(format!("=== {}", f.path));
                    for (label, dev, body, size) in [
                        ("kept", &c.kept_device, &f.kept, f.sizes.0),
                        ("set aside", &c.other_device, &f.other, f.sizes.1),
                    ] {
                        match (body, size) {
                            (Some(b), _)
                                if b.len() <= 64 * 1024 && std::str::from_utf8(b).is_ok() =>
                            {
                                out(format!("--- {label} ({dev}):"));
                                out(String::from_utf8_lossy(b).trim_end());
                            }
                            (_, Some(n)) => out(format!(
                                "--- {label} ({dev}): {} (binary or large; not shown)",
                                output::bytes(n)
                            )),
                            (_, None) => out(format!("--- {label} ({dev}): absent")),
                        }
                    }
                }
            }
        }
        ConflictsCmd::Resolve {
            id,
            ours,
            theirs,
            both,
        } => {
            let how = match (ours, theirs, both) {
                (true, _, _) => Resolution::Ours,
                (_, true, _) => Resolution::Theirs,
                (_, _, true) => Resolution::Both,
                _ => {
                    return Err(Error::Usage(
                        "say how: --ours (keep the live version), --theirs (take the set-aside one) or --both".into(),
                    ));
                }
            };
            let r = st.conflict_resolve(id, how)?;
            if json {
                documents::print(&r)?;
            } else {
                out(format!(
                    "resolved {} on {} ({}){}; recorded as {}",
                    r.conflict.id,
                    r.conflict.path,
                    format!("{how:?}").to_lowercase(),
                    if r.written.is_empty() {
                        String::new()
                    } else {
                        format!(", wrote {}", r.written.join(", "))
                    },
                    &r.snapshot[..12.min(r.snapshot.len())]
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
