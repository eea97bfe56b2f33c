//! Writing to standard output, and the formats human output shares (times, sizes). The CLI is
//! the only place that prints; JSON documents are in `documents`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI8, Ordering};

use super::args::{Cli, ColorArg};

/// Set once standard output is a closed pipe: nothing more is written, and the command exits
/// with [`super::exit::BROKEN_PIPE`] when it is done.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// `-q` (−1), nothing (0), `-v` (1), `-vv` (2).
static VERBOSITY: AtomicI8 = AtomicI8::new(0);

/// The pager `log` writes through on a terminal (see [`start_pager`]).
static PAGER: Mutex<Option<std::process::Child>> = Mutex::new(None);

/// Sets what the global options say about output: verbosity and colour. Colour follows
/// `--color`, else `NO_COLOR` / `CLICOLOR_FORCE` and whether the stream is a terminal
/// (anstream's rules), and is never used with `--json`.
pub(super) fn init(cli: &Cli) {
    let v = i8::try_from(cli.verbose).unwrap_or(i8::MAX);
    VERBOSITY.store(if cli.quiet { -1 } else { v }, Ordering::Relaxed);
    let choice = match cli.color {
        _ if cli.json => anstream::ColorChoice::Never,
        ColorArg::Auto => anstream::ColorChoice::Auto,
        ColorArg::Always => anstream::ColorChoice::Always,
        ColorArg::Never => anstream::ColorChoice::Never,
    };
    choice.write_global();
}

/// True with `-q`.
pub(super) fn quiet() -> bool {
    VERBOSITY.load(Ordering::Relaxed) < 0
}

/// True with `-v` (or more).
pub(super) fn verbose() -> bool {
    VERBOSITY.load(Ordering::Relaxed) > 0
}

/// Prints one line on stdout (or into the pager), unless stdout was found closed. Styles in
/// `s` ([`paint`]) are kept on a terminal and stripped elsewhere.
pub(super) fn out(s: impl std::fmt::Display) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let line = format!("{s}\n");
    let mut pager = PAGER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (res, paged) = match pager.as_mut().and_then(|c| c.stdin.as_mut()) {
        // The pager is only started on a terminal, which shows colour.
        Some(stdin) => (stdin.write_all(line.as_bytes()), true),
        None => (anstream::stdout().write_all(line.as_bytes()), false),
    };
    if let Err(e) = res
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        if paged {
            // The person quit the pager: nothing more to show, and nothing went wrong.
            PAGER_QUIT.store(true, Ordering::Relaxed);
        }
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes `bytes` as they are on stdout (a generated script or page), unless stdout was found
/// closed.
pub(super) fn raw(bytes: &[u8]) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(bytes).and_then(|()| o.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Prints a summary line of a command that did something (`saved: …`), unless `-q`.
pub(super) fn say(s: impl std::fmt::Display) {
    if !quiet() {
        out(s);
    }
}

/// `note: …` on stderr, unless `--json` or `-q`.
pub(super) fn note(cli: &Cli, msg: &str) {
    if !cli.json && !quiet() {
        let _ = writeln!(anstream::stderr(), "{}: {msg}", paint(Style::Note, "note"));
    }
}

/// A warning on stderr: `warning: WHY`, or with `--json` the documented warning line
/// (`{"warning": WHAT, "path": PATH, "why": WHY}`). Shown with `-q` too.
pub(super) fn warn(cli: &Cli, what: &str, path: &str, why: &str) {
    if cli.json {
        let doc = super::documents::Warning {
            warning: what,
            path,
            why,
        };
        let line = super::documents::to_line(&doc).expect("strings serialize");
        let _ = writeln!(std::io::stderr(), "{line}");
    } else {
        let _ = writeln!(
            anstream::stderr(),
            "{}: {why}",
            paint(Style::Warning, "warning")
        );
    }
}

/// What a piece of human output is, for its colour.
#[derive(Debug, Clone, Copy)]
pub(super) enum Style {
    /// A snapshot id (yellow, as git's).
    Id,
    /// Ref names next to an id (cyan).
    Refs,
    /// `error` (bold red).
    Error,
    /// `warning` (bold yellow).
    Warning,
    /// `note` (bold cyan).
    Note,
    /// An added file (green).
    Added,
    /// A deleted file (red).
    Deleted,
    /// Less important text: times, sizes (dimmed).
    Dim,
}

/// `text` in the colour of `style`. The escape codes are stripped on output that is not a
/// terminal, with `NO_COLOR` or `--color never` (see [`init`]).
pub(super) fn paint(style: Style, text: impl std::fmt::Display) -> String {
    use anstyle::{AnsiColor, Effects};
    let st = match style {
        Style::Id => AnsiColor::Yellow.on_default(),
        Style::Refs => AnsiColor::Cyan.on_default() | Effects::BOLD,
        Style::Error => AnsiColor::Red.on_default() | Effects::BOLD,
        Style::Warning => AnsiColor::Yellow.on_default() | Effects::BOLD,
        Style::Note => AnsiColor::Cyan.on_default() | Effects::BOLD,
        Style::Added => AnsiColor::Green.on_default(),
        Style::Deleted => AnsiColor::Red.on_default(),
        Style::Dim => anstyle::Style::new() | Effects::DIMMED,
    };
    format!("{st}{text}{st:#}")
}

/// Pages what follows through `$SHELLDONE_PAGER`, else `$PAGER`, else `less` (with `LESS=FRX`
/// when `LESS` is unset, as git does: one screen is just printed), when stdout is a terminal
/// and `--no-pager`/`--json` are not given. An empty pager or `cat` means none.
pub(super) fn start_pager(cli: &Cli) {
    if cli.json || cli.no_pager || !std::io::stdout().is_terminal() {
        return;
    }
    let cmd = std::env::var("SHELLDONE_PAGER")
        .or_else(|_| std::env::var("PAGER"))
        .unwrap_or_else(|_| "less".into());
    let cmd = cmd.trim();
    if cmd.is_empty() || cmd == "cat" {
        return;
    }
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(cmd).stdin(std::process::Stdio::piped());
    if std::env::var_os("LESS").is_none() {
        c.env("LESS", "FRX");
    }
    // Colour goes through: the pager shows it on the terminal.
    if matches!(cli.color, ColorArg::Auto) && std::env::var_os("NO_COLOR").is_none() {
        anstream::ColorChoice::Always.write_global();
    }
    if let Ok(child) = c.spawn() {
        *PAGER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child);
    }
}

/// Closes the pager's input and waits until the person quits it.
pub(super) fn end_pager() {
    let child = PAGER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut c) = child {
        drop(c.stdin.take());
        let _ = c.wait();
    }
}

/// Set when the pager was quit before the output ended.
static PAGER_QUIT: AtomicBool = AtomicBool::new(false);

/// Whether a write found standard output closed (`shelldone log | head -1`); quitting the
/// pager early is not that.
pub(super) fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed) && !PAGER_QUIT.load(Ordering::Relaxed)
}

/// Formats ns since epoch as `YYYY-MM-DD HH:MM:SS` UTC ([`crate::history::utc`]).
#[must_use]
pub fn time(ns: i64) -> String {
    crate::history::utc(ns)
}

/// Human-readable byte count.
#[must_use]
pub fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_formats_known_instants() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00");
        assert_eq!(
            super::time(1_796_000_000 * 1_000_000_000),
            "2026-11-30 00:53:20"
        );
        assert_eq!(
            super::time(951_782_400 * 1_000_000_000),
            "2000-02-29 00:00:00"
        );
    }
}
