//! Opening the store for a command, and what the command says on stderr about what opening
//! (or the command) did on its own: a new store, leftover recovery, quarantined descriptors,
//! entries a snapshot may not hold.

use std::io::Write;

use super::args::Cli;
use super::documents;
use crate::{Paths, Result, State};

/// The store's paths: `--state-dir` and `--config-dir` (or their variables), else the XDG
/// defaults.
pub(super) fn paths(cli: &Cli) -> Result<Paths> {
    let mut p = match (&cli.state_dir, &cli.config_dir) {
        (Some(s), Some(c)) => Paths {
            state_dir: s.clone(),
            config_dir: c.clone(),
        },
        _ => Paths::xdg()?,
    };
    if let Some(s) = &cli.state_dir {
        p.state_dir.clone_from(s);
    }
    if let Some(c) = &cli.config_dir {
        p.config_dir.clone_from(c);
    }
    Ok(p)
}

/// Opens the store for a command ([`open_with_report`]).
pub(super) fn open(cli: &Cli) -> Result<State> {
    open_with_report(cli).map(|(st, _)| st)
}

/// Opens the store, which runs leftover recovery (docs/cli.md), and says on stderr (unless
/// `--json`) that a store was created and what recovery did; returns the recovery report too.
pub(super) fn open_with_report(cli: &Cli) -> Result<(State, crate::RecoveryReport)> {
    let p = paths(cli)?;
    let new_store = !p.state_dir.join("snapshots").exists();
    let (st, rep) = State::open(p)?;
    if new_store && !cli.json {
        // A typo'd --state-dir must not go unnoticed.
        let _ = writeln!(
            std::io::stderr(),
            "note: created a new state store in {} (device {})",
            st.paths().state_dir.display(),
            st.device()
        );
    }
    if rep.did_something() && !cli.json {
        let mut err = std::io::stderr();
        if let Some(why) = &rep.restore_abandoned {
            let _ = writeln!(
                err,
                "warning: an interrupted restore could not be finished and was abandoned: {why}"
            );
        }
        if let Some(s) = &rep.restore_finished {
            let _ = writeln!(
                err,
                "recovered: finished an interrupted restore of {}",
                &s[..12]
            );
        }
        for x in &rep.repaired {
            let _ = writeln!(err, "recovered: {} ({}): {}", x.file, x.damage, x.action);
        }
        if rep.staging_removed > 0 || rep.tmp_files_removed > 0 {
            let _ = writeln!(
                err,
                "recovered: removed {} unfinished object batch(es) and {} temp file(s) left by an interrupted process",
                rep.staging_removed, rep.tmp_files_removed
            );
        }
        for q in &rep.quarantined {
            let _ = writeln!(err, "recovered: {}", quarantine_line(q));
        }
    }
    Ok((st, rep))
}

/// One line saying what happened to a corrupt session descriptor.
pub(super) fn quarantine_line(q: &crate::live::Quarantined) -> String {
    format!(
        "session descriptor {} was corrupt ({}); moved to {}; {}",
        q.path,
        q.why,
        q.moved_to.display(),
        match &q.restored_from {
            Some(s) => format!(
                "its last good version was restored from {}",
                &s[..12.min(s.len())]
            ),
            None =>
                "no snapshot had a good version; the session is left without a descriptor".into(),
        }
    )
}

/// One warning per entry the snapshot policy left out (docs/safety.md, "What a snapshot may
/// hold"), on stderr.
pub(super) fn print_skipped(st: &State, json: bool) {
    let mut err = std::io::stderr();
    for (what, s) in st.take_skipped() {
        let _ = if json {
            let doc = documents::Warning {
                warning: what,
                path: &s.path,
                why: &s.why,
            };
            let line = documents::to_line(&doc).expect("strings serialize");
            writeln!(err, "{line}")
        } else {
            writeln!(err, "warning: {what}: {s}")
        };
    }
}
