//! `shelldone log` and `shelldone show`: history, newest first, and one snapshot.

use std::process::ExitCode;

use super::args::{Cli, LogArgs};
use super::open::open;
use super::{documents, out, output};
use crate::ObjectId;
use crate::Result;
use crate::history::{Change, ChangeKind, SHORT_ID};

/// An id as human output shows it: 12 hex characters, or all 64 with `--full`.
fn id_text(id: &ObjectId, full: bool) -> String {
    if full {
        id.to_hex()
    } else {
        id.short(SHORT_ID)
    }
}

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
                let text = if more > 0 {
                    format!("({}, and {more} more refs)", shown.join(", "))
                } else {
                    format!("({})", shown.join(", "))
                };
                format!(" {}", output::paint(output::Style::Refs, text))
            };
            let id = output::paint(output::Style::Id, id_text(&e.id, a.full));
            if a.oneline {
                // git's order: id, decorations, subject; with the time and device of ours.
                let msg = e.message.lines().next().unwrap_or("");
                out(
                    format!("{id} {} {}{refs} {msg}", output::time(e.time_ns), e.device,)
                        .trim_end(),
                );
                continue;
            }
            out(format!("snapshot {id}{refs}"));
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
                        .map(|p| id_text(p, a.full))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `show REV`.
pub(super) fn show(cli: &Cli, rev: &str, full: bool) -> Result<ExitCode> {
    let st = open(cli)?;
    let (id, s, changes) = st.show(rev)?;
    if cli.json {
        documents::print(&documents::Shown::new(&id, &s, &changes))?;
    } else {
        out(format!(
            "snapshot {}\n  time    {}\n  device  {}\n  tree    {}",
            output::paint(output::Style::Id, id_text(&id, full)),
            output::time(s.time_ns),
            s.device,
            id_text(&s.root, full)
        ));
        for p in &s.parents {
            out(format!("  parent  {}", id_text(p, full)));
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
