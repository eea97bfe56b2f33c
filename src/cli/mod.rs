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
    let res = run(&cli);
    output::end_pager();
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
    }
}
