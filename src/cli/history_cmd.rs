//! `shelldone log` and `shelldone show`: history, newest first, and one snapshot.

use std::process::ExitCode;

use super::args::{Cli, LogArgs};
use super::open::open;
use super::{documents, out, output};
use crate::Result;
use crate::history::{Change, ChangeKind};

/// `log`.
pub(super) fn log(cli: &Cli, a: &LogArgs) -> Result<ExitCode> {
    let st = open(cli)?;
    let entries = st.log(a.rev.as_deref(), a.max_count, a.session.as_deref())?;
    if cli.json {
        let docs: Vec<documents::Logged<'_>> = entries.iter().map(Into::into).collect();
        documents::print(&docs)?;
    } else if entries.is_empty() {
        out("no snapshots yet; run 'shelldone state save'");
    } else {
        for e in &entries {
            let refs = if e.refs.is_empty() {
                String::new()
            } else {
                let shown: Vec<&str> = e.refs.iter().take(6).map(String::as_str).collect();
                let more = e.refs.len().saturating_sub(shown.len());
                if more > 0 {
                    format!(" ({}, and {more} more refs)", shown.join(", "))
                } else {
                    format!(" ({})", shown.join(", "))
                }
            };
            out(format!("snapshot {}{refs}", e.id));
            out(format!(
                "  {}  {}  +{} ~{} -{}",
                output::time(e.time_ns),
                e.device,
                e.added,
                e.modified,
                e.deleted
            ));
            if let Some(s) = &e.session {
                out(format!("  session {s}"));
            }
            if !e.message.is_empty() {
                out(format!("  {}", e.message));
            }
            if e.parents.len() > 1 {
                out(format!(
                    "  merge of {}",
                    e.parents
                        .iter()
                        .map(|p| p.short(12))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `show REV`.
pub(super) fn show(cli: &Cli, rev: &str) -> Result<ExitCode> {
    let st = open(cli)?;
    let (id, s, changes) = st.show(rev)?;
    if cli.json {
        documents::print(&documents::Shown::new(&id, &s, &changes))?;
    } else {
        out(format!(
            "snapshot {id}\n  time    {}\n  device  {}\n  tree    {}",
            output::time(s.time_ns),
            s.device,
            s.root
        ));
        for p in &s.parents {
            out(format!("  parent  {p}"));
        }
        if !s.message.is_empty() {
            out(format!("  message {}", s.message));
        }
        print_changes(&changes);
    }
    Ok(ExitCode::SUCCESS)
}

/// The changes of `show` and `state diff`, one line per file: `A PATH  (SIZE)`,
/// `M PATH  (OLD -> NEW)`, `D PATH  (SIZE)`.
pub(super) fn print_changes(changes: &[Change]) {
    for c in changes {
        let (m, sz) = match c.kind {
            ChangeKind::Added => ("A", output::bytes(c.new_size.unwrap_or(0))),
            ChangeKind::Modified => (
                "M",
                format!(
                    "{} -> {}",
                    output::bytes(c.old_size.unwrap_or(0)),
                    output::bytes(c.new_size.unwrap_or(0))
                ),
            ),
            ChangeKind::Deleted => ("D", output::bytes(c.old_size.unwrap_or(0))),
        };
        let m = match c.kind {
            ChangeKind::Added => output::paint(output::Style::Added, m),
            ChangeKind::Deleted => output::paint(output::Style::Deleted, m),
            ChangeKind::Modified => m.to_owned(),
        };
        out(format!(
            "{m} {}  ({})",
            c.path,
            output::paint(output::Style::Dim, sz)
        ));
    }
}
