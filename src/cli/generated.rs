//! What is generated from the argument definitions: shell completion scripts (clap_complete)
//! and man pages (clap_mangen). `just completions` and `just man` write them to files.

use std::path::Path;

use clap::CommandFactory;

use super::args::{Cli, ShellArg};
use crate::{Error, Result};

/// `shelldone completions SHELL`: the script on stdout.
pub(super) fn completions(shell: ShellArg) {
    use clap_complete::Shell;
    let sh = match shell {
        ShellArg::Bash => Shell::Bash,
        ShellArg::Zsh => Shell::Zsh,
        ShellArg::Fish => Shell::Fish,
        ShellArg::Elvish => Shell::Elvish,
        ShellArg::Powershell => Shell::PowerShell,
    };
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(sh, &mut cmd, "shelldone", &mut script);
    super::output::raw(&script);
}

/// `shelldone man [--dir DIR]`: `shelldone.1` on stdout, or one page per command
/// (`shelldone.1`, `shelldone-state.1`, `shelldone-state-save.1`, …) written into DIR.
pub(super) fn man(dir: Option<&Path>) -> Result<()> {
    let cmd = Cli::command();
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            super::output::raw(&page);
            Ok(())
        }
        Some(d) => {
            fs_err::create_dir_all(d)?;
            clap_mangen::generate_to(cmd, d).map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", d.display()),
                ))
            })
        }
    }
}
