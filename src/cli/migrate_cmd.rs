//! `shelldone migrate [--dry-run] [--undo] [--status]` (docs/migrations.md).

use std::process::ExitCode;

use super::args::Cli;
use super::documents;
use super::open::open;
use super::output::say;
use crate::Result;

/// `migrate …`: the store is opened read-through, so that nothing is migrated before the
/// command reports it step by step.
pub(super) fn run(cli: &Cli, dry_run: bool, undo: bool, status: bool) -> Result<ExitCode> {
    let st = open(cli)?;
    let would = if dry_run { "would " } else { "" };
    if status {
        let s = st.migrate_status()?;
        if cli.json {
            documents::print(&s)?;
            return Ok(ExitCode::SUCCESS);
        }
        say(format!(
            "store format {} (this shelldone writes {})",
            s.format, s.supported
        ));
        if s.pending.is_empty() {
            say("no migration pending");
        }
        for p in &s.pending {
            say(format!("pending: {} ({})", p.name, p.files.join(", ")));
        }
        for p in &s.restore_points {
            say(format!(
                "restore point {} ({}, {} file(s){})",
                p.name,
                p.label,
                p.files,
                if p.done { "" } else { ", migration unfinished" }
            ));
        }
    } else if undo {
        let r = st.migrate_undo(dry_run)?;
        if cli.json {
            documents::print(&r)?;
            return Ok(ExitCode::SUCCESS);
        }
        for c in &r.converted {
            say(format!("{would}convert down {c}"));
        }
        for f in &r.files {
            say(format!("{would}put back {f}"));
        }
        say(format!(
            "{} restore point {}: store format {}",
            if dry_run {
                "would go back to"
            } else {
                "went back to"
            },
            r.restore_point,
            r.to
        ));
    } else {
        let r = st.migrate(dry_run)?;
        if cli.json {
            documents::print(&r)?;
            return Ok(ExitCode::SUCCESS);
        }
        if r.steps.is_empty() {
            say(format!("nothing to migrate: store format {}", r.to));
            return Ok(ExitCode::SUCCESS);
        }
        for s in &r.steps {
            say(format!(
                "{}{} ({})",
                if dry_run { "would run: " } else { "ran: " },
                s.name,
                s.files.join(", ")
            ));
        }
        match &r.restore_point {
            Some(p) => say(format!(
                "store format {} -> {}; restore point {p} ('shelldone migrate --undo' goes back)",
                r.from, r.to
            )),
            None => say(format!(
                "store format {} -> {} (dry run: nothing written)",
                r.from, r.to
            )),
        }
    }
    Ok(ExitCode::SUCCESS)
}
