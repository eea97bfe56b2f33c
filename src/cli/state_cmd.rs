//! `shelldone state …`: save, restore, check, gc, recover and diff of the local state.

use std::io::Write;
use std::process::ExitCode;

use super::args::{Cli, StateCmd};
use super::history_cmd::print_changes;
use super::open::{open_with_report, open_with_report_as, paths, print_skipped, quarantine_line};
use super::output::say;
use super::{documents, exit, out, output};
use crate::check::CheckOptions;
use crate::{Error, RestoreOptions, Result, SaveOptions, State};

/// `state …`.
pub(super) fn run_state(cli: &Cli, sc: &StateCmd) -> Result<ExitCode> {
    // `check` and `recover` must work on any damage: they open the store without refusing a
    // damaged FORMAT or device file, and without writing anything at open.
    let (st, opened) = match sc {
        StateCmd::Check { .. } | StateCmd::Recover => {
            let p = paths(cli)?;
            let (_, settings) = super::open::settings(cli, &p)?;
            let state_dir = p.state_dir.clone();
            let mut st = if matches!(sc, StateCmd::Check { .. }) {
                State::open_for_check(p)?
            } else {
                State::open_for_repair(p)?
            };
            super::open::audit_migration(cli, &state_dir, &st);
            st.apply(settings);
            super::progress::install(cli, &mut st)?;
            (st, crate::RecoveryReport::default())
        }
        // A whole-state save checks every descriptor in its own walk.
        StateCmd::Save {
            session: None,
            dry_run: false,
            ..
        } => open_with_report_as(cli, State::open_for_save)?,
        _ => open_with_report(cli)?,
    };
    let r = run_state_on(cli, sc, &st, opened);
    print_skipped(&st, cli.json);
    r
}

fn run_state_on(
    cli: &Cli,
    sc: &StateCmd,
    st: &State,
    opened: crate::RecoveryReport,
) -> Result<ExitCode> {
    match sc {
        StateCmd::Save {
            message,
            session,
            allow_empty,
            dry_run,
        } => {
            let opts = SaveOptions {
                message: message.clone(),
                session: session.clone(),
                allow_empty: *allow_empty,
                ..SaveOptions::default()
            };
            if *dry_run {
                let plan = st.save_plan(&opts)?;
                print_save_plan(cli, &plan)?;
                return Ok(ExitCode::SUCCESS);
            }
            // -v lists the files; the plan is cheap (the stat cache spares reading).
            let plan = if output::verbose() && !cli.json {
                Some(st.save_plan(&opts)?)
            } else {
                None
            };
            let o = st.save(&opts)?;
            super::journal_cmd::measured(
                o.bytes_written,
                u64::from(o.summary.added)
                    + u64::from(o.summary.modified)
                    + u64::from(o.summary.deleted),
            );
            for q in &o.quarantined {
                let _ = writeln!(std::io::stderr(), "warning: {}", quarantine_line(q));
            }
            for w in &o.warnings {
                let _ = writeln!(std::io::stderr(), "warning: {w}");
            }
            if cli.json {
                documents::print(&SavedRedacted {
                    saved: documents::Saved::from(&o),
                    redacted: super::vault_cmd::redacted(),
                })?;
            } else if o.created {
                if let Some(p) = &plan {
                    super::history_cmd::print_changes(&p.changes);
                }
                if let Some(n) = super::vault_cmd::redacted() {
                    say(format!(
                        "redacted: {n} secret(s) replaced by a marker in the scrollback and journal stored"
                    ));
                }
                say(format!(
                    "saved: +{} ~{} -{} files, {} new objects ({}){}",
                    o.summary.added,
                    o.summary.modified,
                    o.summary.deleted,
                    o.objects_written,
                    output::bytes(o.bytes_written),
                    if o.sessions.is_empty() {
                        String::new()
                    } else {
                        format!(", sessions: {}", o.sessions.join(" "))
                    }
                ));
                say(o.id.map(|i| i.to_hex()).unwrap_or_default());
            } else {
                say("nothing changed since the last snapshot; no new snapshot written");
                say(o.id.map(|i| i.to_hex()).unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        StateCmd::Restore {
            rev,
            session,
            path,
            to,
            dry_run,
        } => {
            let o = st.restore(&RestoreOptions {
                rev: rev.clone(),
                session: session.clone(),
                path: path.clone(),
                to: to.clone(),
                dry_run: *dry_run,
            })?;
            let p = &o.plan;
            for q in &o.quarantined {
                let _ = writeln!(std::io::stderr(), "warning: {}", quarantine_line(q));
            }
            if cli.json {
                documents::print(&documents::Restored::new(&o, *dry_run))?;
            } else {
                if let Some(a) = o.auto_saved {
                    say(format!(
                        "unsaved changes were saved first as {}",
                        a.short(12)
                    ));
                }
                let verb = if *dry_run { "would" } else { "did" };
                for (label, v) in [
                    ("create", &p.create),
                    ("update", &p.update),
                    ("delete", &p.delete),
                ] {
                    for x in documents::paths(v) {
                        if *dry_run {
                            out(format!("{label} {x}"));
                        }
                    }
                }
                say(format!(
                    "restore of {} {verb}: {} created, {} updated, {} deleted, {} dirs created, {} dirs removed",
                    o.snapshot.short(12),
                    p.create.len(),
                    p.update.len(),
                    p.delete.len(),
                    p.mkdir.len(),
                    p.rmdir.len()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        StateCmd::Check {
            read_data: _,
            read_data_subset,
        } => {
            let pct = match read_data_subset {
                None => 100.0,
                Some(s) => s
                    .trim_end_matches('%')
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "--read-data-subset takes a percentage like 10%, got '{s}'"
                        ))
                    })?,
            };
            let r = st.check(CheckOptions {
                read_data_percent: pct,
            })?;
            if cli.json {
                documents::print(&r)?;
            } else {
                for p in &r.problems {
                    out(format!("error: {} {} is {}", p.kind, p.object, p.error));
                    if !p.paths.is_empty() {
                        out(format!("  used by: {}", p.paths.join(", ")));
                    }
                    if !p.sessions.is_empty() {
                        out(format!("  sessions: {}", p.sessions.join(", ")));
                    }
                    if !p.snapshots.is_empty() {
                        out(format!(
                            "  snapshots: {}",
                            p.snapshots
                                .iter()
                                .map(|s| &s[..12])
                                .collect::<Vec<_>>()
                                .join(" ")
                        ));
                    }
                    if !p.refs.is_empty() {
                        out(format!("  refs: {}", p.refs.join(", ")));
                    }
                    if !p.files.is_empty() && p.files != [p.object.clone()] {
                        out(format!("  files: {}", p.files.join(", ")));
                    }
                }
                out(format!(
                    "checked {} snapshots, {} objects{}: {}",
                    r.snapshots,
                    r.objects_checked,
                    if r.blobs_skipped > 0 {
                        format!(" ({} data blobs not read)", r.blobs_skipped)
                    } else {
                        String::new()
                    },
                    if r.ok() {
                        "no problems".to_owned()
                    } else {
                        format!("{} problem(s)", r.problems.len())
                    }
                ));
            }
            Ok(if r.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::DATA)
            })
        }
        StateCmd::Gc { repack } => {
            let r = st.gc_with(*repack)?;
            if cli.json {
                documents::print(&r)?;
            } else {
                say(format!(
                    "gc: {} objects reachable, {} deleted, {} freed",
                    r.reachable,
                    r.deleted,
                    output::bytes(r.bytes_freed)
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        StateCmd::Recover => {
            let mut r = st.recover()?;
            // Opening the store already did the startup part of recovery: report it too.
            let mut q = opened.quarantined.clone();
            q.append(&mut r.quarantined);
            r.quarantined = q;
            r.staging_removed += opened.staging_removed;
            r.tmp_files_removed += opened.tmp_files_removed;
            r.restore_finished = r.restore_finished.or(opened.restore_finished.clone());
            r.restore_abandoned = r.restore_abandoned.or(opened.restore_abandoned.clone());
            let mut rep = opened.repaired.clone();
            rep.append(&mut r.repaired);
            r.repaired = rep;
            if cli.json {
                documents::print(&r)?;
            } else {
                if let Some(s) = &r.restore_finished {
                    say(format!("finished an interrupted restore of {}", &s[..12]));
                }
                if let Some(why) = &r.restore_abandoned {
                    say(format!(
                        "abandoned an interrupted restore that could not be finished: {why}"
                    ));
                }
                say(format!(
                    "removed {} unfinished object batch(es), {} temp file(s)",
                    r.staging_removed, r.tmp_files_removed
                ));
                for x in &r.repaired {
                    say(format!("repaired {} ({}): {}", x.file, x.damage, x.action));
                }
                for q in &r.quarantined {
                    say(format!(
                        "quarantined {} ({}) to {}; {}",
                        q.path,
                        q.why,
                        q.moved_to.display(),
                        match &q.restored_from {
                            Some(s) => format!("restored the last good version from {}", &s[..12]),
                            None =>
                                "no good version in any snapshot; session left without descriptor"
                                    .into(),
                        }
                    ));
                }
                if !r.did_something() {
                    say("nothing to recover: the store and every session descriptor are sound");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        StateCmd::Diff { a, b } => {
            let changes = st.diff(a, b)?;
            if cli.json {
                documents::print(&changes)?;
            } else {
                print_changes(&changes);
                out(format!("{} file(s) differ", changes.len()));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `state save --json`: the save, and how many secrets the redactor replaced (`null` when
/// `[snapshot] redact` is off).
#[derive(Debug, serde::Serialize)]
struct SavedRedacted<'a> {
    #[serde(flatten)]
    saved: documents::Saved<'a>,
    redacted: Option<u64>,
}

/// `state save --dry-run`: what a save would record and what the excludes leave out.
fn print_save_plan(cli: &Cli, plan: &crate::live::save::SavePlan) -> Result<()> {
    if cli.json {
        return documents::print(&documents::SavePlanned::from(plan));
    }
    if plan.changes.is_empty() {
        out("nothing to save: the live state is the head snapshot");
    } else {
        super::history_cmd::print_changes(&plan.changes);
        out(format!(
            "would save: {} changed file(s)",
            plan.changes.len()
        ));
    }
    for p in &plan.excluded {
        out(format!("excluded: {p}"));
    }
    for (p, why) in &plan.skipped {
        out(format!("not saved: {p}: {why}"));
    }
    Ok(())
}
