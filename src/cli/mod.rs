//! The `shelldone` command line. Exit codes: see docs/cli.md.
//!
//! `args` (clap) parses; `run` hands each command to its module (`state_cmd`, `history_cmd`,
//! `sync_cmd` for remotes, sync and conflicts, `daemon_cmd` for `sync daemon`, `device_cmd`, `vault_cmd` for secrets and keys, `tour`), which calls the
//! [`State`](crate::State) facade and prints the report it gets back: as text through
//! `output`, or with `--json` as one of the `documents`. `open` opens the store and reports on
//! stderr what opening did.
#![expect(
    clippy::disallowed_methods,
    reason = "the CLI is the one layer that writes to stdout and stderr (docs/style.md)"
)]

mod args;
mod backup_cmd;
mod daemon_cmd;
mod device_cmd;
mod documents;
pub mod exit;
mod generated;
mod history_cmd;
mod journal_cmd;
mod migrate_cmd;
mod open;
mod output;
mod progress;
mod state_cmd;
mod sync_cmd;
mod tour;
mod vault_cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;
use args::{Cmd, ConflictsCmd, RemoteCmd, StrategyArg, SyncCmd};
use open::{open, print_skipped};
use output::out;

use crate::Result;

/// Entry point used by `main`.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    output::init(&cli);
    let started = std::time::Instant::now();
    let res = run(&cli);
    output::end_pager();
    record(&cli, &res, started.elapsed());
    match res {
        // Standard output went away (`shelldone log | head -1`): quietly, as git does.
        Ok(_) if output::stdout_closed() => ExitCode::from(exit::BROKEN_PIPE),
        Ok(code) => code,
        Err(e) => {
            let code = exit::of(&e);
            if json {
                let doc = documents::ErrorDoc {
                    error: e.to_string(),
                    exit_code: code,
                };
                let line = documents::to_line(&doc).expect("a message and a number serialize");
                let _ = writeln!(std::io::stderr(), "{line}");
            } else {
                let _ = writeln!(
                    anstream::stderr(),
                    "{}: {e}",
                    output::paint(output::Style::Error, "error")
                );
            }
            ExitCode::from(code)
        }
    }
}

/// Runs one parsed command; the exit code of a command that did not fail (`state check` that
/// found problems and `sync pull` that brought conflicts do not fail).
fn run(cli: &Cli) -> Result<ExitCode> {
    match &cli.cmd {
        Cmd::Tour { dir } => tour::run(dir.clone(), cli.json).map(|()| ExitCode::SUCCESS),
        Cmd::Generate {
            dir,
            scale,
            small_change,
        } => tour::generate(dir, *scale, *small_change),
        Cmd::Completions { shell } => {
            generated::completions(*shell);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man { dir } => generated::man(dir.as_deref()).map(|()| ExitCode::SUCCESS),
        Cmd::Log(a) => {
            output::start_pager(cli);
            history_cmd::log(cli, a)
        }
        Cmd::Show { rev, full } => {
            output::start_pager(cli);
            history_cmd::show(cli, rev, *full)
        }
        Cmd::State(sc) => state_cmd::run_state(cli, sc),
        Cmd::Remote(rc) => sync_cmd::run_remote(&open(cli)?, cli.json, rc),
        Cmd::Sync(sc) => {
            let st = open(cli)?;
            let r = sync_cmd::run_sync(&st, cli.json, sc);
            print_skipped(&st, cli.json);
            r
        }
        Cmd::Conflicts { cmd } => {
            let st = open(cli)?;
            let r = sync_cmd::run_conflicts(&st, cli.json, cmd.as_ref());
            print_skipped(&st, cli.json);
            r
        }
        Cmd::Device(dc) => device_cmd::run(cli, dc),
        Cmd::Secret(c) => vault_cmd::secret(cli, c),
        Cmd::Key(c) => vault_cmd::key(cli, c),
        Cmd::Vault(c) => vault_cmd::vault(cli, c),
        Cmd::Backup(bc) => backup_cmd::run(cli, bc),
        Cmd::Journal(jc) => journal_cmd::run(cli, jc),
        Cmd::Telemetry(tc) => journal_cmd::telemetry(cli, tc),
        Cmd::Migrate {
            dry_run,
            undo,
            status,
        } => migrate_cmd::run(cli, *dry_run, *undo, *status),
    }
}

/// The telemetry operation and the audit trail's operation (if it is one the trail keeps) of
/// a command; `None` for commands without a state of their own (tour, generate, …) and for
/// `telemetry` itself (disabling must leave nothing).
fn operation(cmd: &Cmd) -> Option<(&'static str, bool)> {
    use args::{JournalCmd, StateCmd};
    Some(match cmd {
        Cmd::State(StateCmd::Save { dry_run: false, .. }) => ("state.save", true),
        Cmd::State(StateCmd::Restore { dry_run: false, .. }) => ("state.restore", true),
        Cmd::State(StateCmd::Save { .. } | StateCmd::Restore { .. }) => ("other", false),
        Cmd::State(StateCmd::Check { .. }) => ("state.check", false),
        Cmd::State(StateCmd::Gc { .. }) => ("state.gc", true),
        Cmd::State(StateCmd::Recover) => ("state.recover", true),
        Cmd::State(StateCmd::Diff { .. }) => ("state.diff", false),
        Cmd::Log(_) => ("log", false),
        Cmd::Show { .. } => ("show", false),
        Cmd::Sync(SyncCmd::Push { dry_run: false, .. }) => ("sync.push", true),
        Cmd::Sync(SyncCmd::Pull { .. }) => ("sync.pull", true),
        Cmd::Sync(SyncCmd::Status { .. } | SyncCmd::Push { .. }) => ("sync.status", false),
        Cmd::Sync(SyncCmd::Daemon(_)) => ("sync.daemon", false),
        Cmd::Remote(_) => ("remote", false),
        Cmd::Conflicts { .. } => ("conflicts", false),
        Cmd::Device(_) => ("device", false),
        Cmd::Secret(_) => ("secret", false),
        Cmd::Key(_) => ("key", false),
        Cmd::Vault(_) => ("vault", false),
        Cmd::Backup(bc) => ("backup", backup_cmd::audited(bc)),
        Cmd::Journal(JournalCmd::Append { .. }) => ("journal.append", false),
        Cmd::Journal(JournalCmd::Tail { .. }) => ("journal.tail", false),
        Cmd::Journal(JournalCmd::Status) => ("journal.status", false),
        Cmd::Migrate {
            dry_run, status, ..
        } => ("migrate", !dry_run && !status),
        Cmd::Telemetry(_)
        | Cmd::Tour { .. }
        | Cmd::Generate { .. }
        | Cmd::Completions { .. }
        | Cmd::Man { .. } => return None,
    })
}

/// After a command: one telemetry record (when enabled) and one audit line (for the
/// operations the trail keeps). Neither may fail the command: an audit line that cannot be
/// written is a warning, a telemetry record that cannot be is dropped.
fn record(cli: &Cli, res: &Result<ExitCode>, took: std::time::Duration) {
    let Some((op, audited)) = operation(&cli.cmd) else {
        return;
    };
    let Ok(p) = open::paths(cli) else {
        return;
    };
    let kind = res.as_ref().err().map(|e| match e.kind() {
        crate::ErrorKind::Usage => "usage",
        crate::ErrorKind::Data => "data",
        crate::ErrorKind::Contention => "contention",
        crate::ErrorKind::Remote => "remote",
        crate::ErrorKind::NewerStore => "newer_store",
        crate::ErrorKind::Io => "io",
        crate::ErrorKind::Key => "key",
        crate::ErrorKind::Internal => "internal",
    });
    let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    if p.state_dir.is_dir() {
        let mut rec = crate::telemetry::Record::new(op, ms, res.is_ok());
        rec.error_kind = kind.map(str::to_owned);
        rec.event = journal_cmd::LAST_EVENT.get().cloned();
        if let Some(&(bytes, count)) = journal_cmd::MEASURED.get() {
            rec.bytes = Some(bytes);
            rec.count = Some(count);
        }
        let _ = crate::telemetry::record(&p.state_dir, &rec);
    }
    if audited && p.state_dir.is_dir() {
        let detail = format!(
            "ms={ms}{}",
            kind.map(|k| format!(" error={k}")).unwrap_or_default()
        );
        if let Err(e) = crate::telemetry::audit::audit(&p.state_dir, op, res.is_ok(), &detail) {
            output::warn(
                cli,
                "audit log",
                crate::telemetry::audit::AUDIT_LOG,
                &e.to_string(),
            );
        }
    }
}
