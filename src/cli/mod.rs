//! The `shelldone` command line. Exit codes: see docs/cli.md.
#![expect(
    clippy::disallowed_methods,
    reason = "the CLI is the one layer that writes to stdout and stderr (docs/style.md)"
)]

pub mod exit;
mod output;
mod sync_cmd;
mod tour;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::check::CheckOptions;
use crate::history::LogEntry;
use crate::{Error, Paths, RestoreOptions, Result, SaveOptions, State};

/// Shelldone state: snapshots, restore, history and sync of terminal sessions and preferences.
#[derive(Debug, Parser)]
#[command(name = "shelldone", version, about, propagate_version = true)]
pub struct Cli {
    /// State store (default: $XDG_STATE_HOME/shelldone).
    #[arg(long, global = true, env = "SHELLDONE_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Config store (default: $XDG_CONFIG_HOME/shelldone).
    #[arg(long, global = true, env = "SHELLDONE_CONFIG_DIR", value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Machine-readable output (one JSON document on stdout; errors as JSON on stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Save, restore and maintain the local state.
    #[command(subcommand)]
    State(StateCmd),
    /// Browse history, newest first.
    Log(LogArgs),
    /// Show one snapshot and what it changed.
    Show {
        /// Revision (ref, id, id prefix, REF~N).
        rev: String,
    },
    /// Manage sync remotes.
    #[command(subcommand)]
    Remote(RemoteCmd),
    /// Sync with a remote: push, pull, status, daemon.
    #[command(subcommand)]
    Sync(SyncCmd),
    /// List, show and resolve the conflicts sync set aside (they travel with sync, so every
    /// device sees them).
    Conflicts {
        #[command(subcommand)]
        cmd: Option<ConflictsCmd>,
    },
    /// This device's name on remotes.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Generate a synthetic state (benchmarks): DIR/config and DIR/state.
    #[command(hide = true)]
    Generate {
        /// Target dir.
        dir: PathBuf,
        /// Size multiplier (1 = 48 sessions and 40 journal files: 64.3 MB in 139 files).
        #[arg(long, default_value_t = 1)]
        scale: usize,
        /// Apply the "small change" number N instead of generating.
        #[arg(long)]
        small_change: Option<u64>,
    },
    /// A guided demo on a temporary state: save, change, log, restore, verify.
    Tour {
        /// Keep the demo state in DIR instead of a temp dir.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum StateCmd {
    /// Snapshot the live state (config, sessions, journal).
    Save {
        /// Message.
        #[arg(short, long, default_value = "")]
        message: String,
        /// Save only this session (the rest is taken from the current head).
        #[arg(long)]
        session: Option<String>,
        /// Save even if config/, state/sessions/ or state/journal/ held files in the last
        /// snapshot and is now missing or empty (otherwise refused: a typo'd --config-dir
        /// would record deleting everything).
        #[arg(long)]
        allow_empty: bool,
    },
    /// Make the live state equal to a snapshot (default: head).
    Restore {
        /// Revision (ref, id, id prefix, REF~N).
        rev: Option<String>,
        /// Restore only this session.
        #[arg(long, conflicts_with = "path")]
        session: Option<String>,
        /// Restore only this file or folder (snapshot path: config/…, state/sessions/…,
        /// state/journal/…).
        #[arg(long, value_name = "PATH")]
        path: Option<String>,
        /// Write into DIR/config and DIR/state instead of the live dirs.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// List what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Verify every reachable object.
    Check {
        /// Read and verify all data (the default; kept for scripts written for restic).
        #[arg(long)]
        read_data: bool,
        /// Read only this share of the data blobs, e.g. 10%.
        #[arg(long, value_name = "P%")]
        read_data_subset: Option<String>,
    },
    /// Remove objects no ref or reflog reaches.
    Gc {
        /// Also recompress everything kept into one pack at a higher zstd level (smaller store).
        #[arg(long)]
        repack: bool,
    },
    /// Finish interrupted operations and repair corrupt session descriptors.
    Recover,
    /// List files that differ between two snapshots.
    Diff {
        /// From.
        a: String,
        /// To.
        b: String,
    },
}

#[derive(Debug, Subcommand)]
enum RemoteCmd {
    /// Add a remote: a git URL (git://, ssh://, http(s)://, file://, *.git, an existing repo) or a directory.
    Add {
        /// Name, e.g. origin.
        name: String,
        /// URL or path.
        url: String,
        /// Create the directory remote (a directory remote is never created implicitly).
        #[arg(long)]
        init: bool,
    },
    /// List remotes.
    List,
    /// Remove a remote (its tracking refs and local mirror).
    Remove {
        /// Name.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StrategyArg {
    Full,
    Partial,
}

#[derive(Debug, Subcommand)]
enum SyncCmd {
    /// Send local history and move this device's refs on the remote.
    Push {
        /// Remote name.
        #[arg(default_value = "origin")]
        remote: String,
        /// Say what would be sent (objects, bytes) and which refs would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Fetch every device's history and integrate it into the live state.
    Pull {
        /// Remote name.
        #[arg(default_value = "origin")]
        remote: String,
        /// Only fetch; do not merge or touch live files.
        #[arg(long)]
        no_restore: bool,
        /// full: all history; partial: only each device's newest snapshot.
        #[arg(long, value_enum, default_value = "full")]
        strategy: StrategyArg,
        /// Integrate only these sessions (the rest of the other devices' heads stays
        /// unintegrated until a full pull).
        #[arg(long = "session")]
        sessions: Vec<String>,
        /// Merge a device whose history shares nothing with this store's.
        #[arg(long)]
        allow_unrelated: bool,
    },
    /// Ahead/behind per device and differing sessions.
    Status {
        /// Remote name.
        #[arg(default_value = "origin")]
        remote: String,
    },
    /// Save on change (debounced) and push on an interval, until stopped.
    Daemon {
        /// Remote to push to (none: only save).
        #[arg(long)]
        remote: Option<String>,
        /// Seconds between checks for changes.
        #[arg(long, default_value_t = 2.0)]
        poll: f64,
        /// Seconds the state must stay unchanged before a save.
        #[arg(long, default_value_t = 3.0)]
        debounce: f64,
        /// Seconds between pushes (only when something new was saved).
        #[arg(long, default_value_t = 300.0)]
        push_interval: f64,
        /// Stop after this many seconds (for tests and timers); default: run until killed.
        #[arg(long)]
        max_runtime: Option<f64>,
    },
}

#[derive(Debug, Subcommand)]
enum ConflictsCmd {
    /// List the open conflicts (the default).
    List,
    /// Show both versions of a conflict's files.
    Show {
        /// Conflict id (or a unique prefix).
        id: String,
    },
    /// Resolve a conflict and record the resolution as a snapshot.
    Resolve {
        /// Conflict id (or a unique prefix).
        id: String,
        /// Keep the live version.
        #[arg(long, group = "how")]
        ours: bool,
        /// Take the set-aside version (for keys: its values of those keys).
        #[arg(long, group = "how")]
        theirs: bool,
        /// Keep both: the set-aside session as <id>-<device>, a file as <name>.conflict-<device>.<ext>.
        #[arg(long, group = "how")]
        both: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCmd {
    /// Print this device's name.
    Show,
    /// Rename this device (e.g. after copying a state folder to another machine).
    Rename {
        /// The new name.
        name: String,
    },
}

#[derive(Debug, Args)]
struct LogArgs {
    /// Start here (default: head).
    rev: Option<String>,
    /// At most N entries.
    #[arg(short = 'n', long)]
    max_count: Option<usize>,
    /// Only snapshots where this session changed.
    #[arg(long)]
    session: Option<String>,
}

/// Entry point used by `main`.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        // Standard output went away (`shelldone log | head -1`): quietly, as git does.
        Ok(_) if STDOUT_CLOSED.load(Ordering::Relaxed) => ExitCode::from(exit::BROKEN_PIPE),
        Ok(code) => code,
        Err(e) => {
            let code = exit::of(&e);
            if json {
                let _ = writeln!(
                    std::io::stderr(),
                    "{}",
                    json!({"error": e.to_string(), "exit_code": code})
                );
            } else {
                let _ = writeln!(std::io::stderr(), "error: {e}");
            }
            ExitCode::from(code)
        }
    }
}

fn paths(cli: &Cli) -> Result<Paths> {
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

fn open(cli: &Cli) -> Result<State> {
    open_with_report(cli).map(|(st, _)| st)
}

fn open_with_report(cli: &Cli) -> Result<(State, crate::RecoveryReport)> {
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
fn quarantine_line(q: &crate::live::Quarantined) -> String {
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

/// Set once standard output is a closed pipe: nothing more is written, and the command exits
/// with [`exit::BROKEN_PIPE`] when it is done.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

fn out(s: impl std::fmt::Display) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = writeln!(std::io::stdout(), "{s}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

fn log_json(e: &LogEntry) -> serde_json::Value {
    json!({
        "id": e.id.to_hex(), "time_ns": e.time_ns, "time": output::time(e.time_ns), "device": e.device,
        "message": e.message, "session": e.session,
        "parents": e.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        "changes": {"added": e.added, "modified": e.modified, "deleted": e.deleted},
        "refs": e.refs,
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.cmd {
        Cmd::Tour { dir } => tour::run(dir.clone()).map(|()| ExitCode::SUCCESS),
        Cmd::Generate {
            dir,
            scale,
            small_change,
        } => {
            let n = match small_change {
                Some(r) => crate::demo::small_change(&dir.join("config"), &dir.join("state"), *r)?,
                None => {
                    let d = crate::demo::DemoSpec::default();
                    let spec = crate::demo::DemoSpec {
                        sessions: d.sessions * scale,
                        journals: d.journals * scale,
                        ..d
                    };
                    crate::demo::generate(&dir.join("config"), &dir.join("state"), &spec)?
                }
            };
            out(n);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Log(a) => {
            let st = open(&cli)?;
            let entries = st.log(a.rev.as_deref(), a.max_count, a.session.as_deref())?;
            if cli.json {
                out(serde_json::Value::Array(
                    entries.iter().map(log_json).collect(),
                ));
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
        Cmd::Show { rev } => {
            let st = open(&cli)?;
            let (id, s, changes) = st.show(rev)?;
            if cli.json {
                out(
                    json!({"id": id.to_hex(), "root": s.root.to_hex(), "time": output::time(s.time_ns), "device": s.device,
                    "message": s.message, "session": s.session, "parents": s.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
                    "changes": changes}),
                );
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
        Cmd::State(sc) => run_state(&cli, sc),
        Cmd::Remote(rc) => sync_cmd::run_remote(&open(&cli)?, cli.json, rc),
        Cmd::Sync(sc) => {
            let st = open(&cli)?;
            let r = sync_cmd::run_sync(&st, cli.json, sc);
            print_skipped(&st, cli.json);
            r
        }
        Cmd::Conflicts { cmd } => {
            let st = open(&cli)?;
            let r = sync_cmd::run_conflicts(&st, cli.json, cmd.as_ref());
            print_skipped(&st, cli.json);
            r
        }
        Cmd::Device(dc) => {
            let mut st = open(&cli)?;
            match dc {
                DeviceCmd::Show => {
                    if cli.json {
                        out(json!({"device": st.device()}));
                    } else {
                        out(st.device());
                    }
                }
                DeviceCmd::Rename { name } => {
                    let old = st.device().to_owned();
                    st.device_rename(name)?;
                    if cli.json {
                        out(json!({"old": old, "new": name}));
                    } else {
                        out(format!(
                            "renamed this device '{old}' → '{name}'; the next push writes under the new name, and the next pull merges what '{old}' holds on the remote"
                        ));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One warning per entry the snapshot policy left out (docs/safety.md, "What a snapshot may
/// hold"), on stderr.
fn print_skipped(st: &State, json: bool) {
    let mut err = std::io::stderr();
    for (what, s) in st.take_skipped() {
        let _ = if json {
            writeln!(
                err,
                "{}",
                json!({"warning": what, "path": s.path, "why": s.why})
            )
        } else {
            writeln!(err, "warning: {what}: {s}")
        };
    }
}

fn print_changes(changes: &[crate::history::Change]) {
    use crate::history::ChangeKind;
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
        out(format!("{m} {}  ({sz})", c.path));
    }
}

fn run_state(cli: &Cli, sc: &StateCmd) -> Result<ExitCode> {
    // `check` and `recover` must work on any damage: they open the store without refusing a
    // damaged FORMAT or device file, and without writing anything at open.
    let (st, opened) = match sc {
        StateCmd::Check { .. } | StateCmd::Recover => (
            State::open_for_repair(paths(cli)?)?,
            crate::RecoveryReport::default(),
        ),
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
        } => {
            let o = st.save(&SaveOptions {
                message: message.clone(),
                session: session.clone(),
                allow_empty: *allow_empty,
                ..SaveOptions::default()
            })?;
            for q in &o.quarantined {
                let _ = writeln!(std::io::stderr(), "warning: {}", quarantine_line(q));
            }
            for w in &o.warnings {
                let _ = writeln!(std::io::stderr(), "warning: {w}");
            }
            if cli.json {
                out(json!({"id": o.id.map(|i| i.to_hex()), "created": o.created,
                    "changes": {"added": o.summary.added, "modified": o.summary.modified, "deleted": o.summary.deleted},
                    "sessions": o.sessions, "objects_written": o.objects_written, "bytes_written": o.bytes_written,
                    "quarantined": o.quarantined, "warnings": o.warnings}));
            } else if o.created {
                out(format!(
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
                out(o.id.map(|i| i.to_hex()).unwrap_or_default());
            } else {
                out("nothing changed since the last snapshot; no new snapshot written");
                out(o.id.map(|i| i.to_hex()).unwrap_or_default());
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
            let show = |v: &Vec<Vec<u8>>| {
                v.iter()
                    .map(|x| String::from_utf8_lossy(x).into_owned())
                    .collect::<Vec<_>>()
            };
            if cli.json {
                out(
                    json!({"snapshot": o.snapshot.to_hex(), "dry_run": dry_run, "create": show(&p.create), "update": show(&p.update),
                    "delete": show(&p.delete), "mkdir": show(&p.mkdir), "rmdir": show(&p.rmdir),
                    "auto_saved": o.auto_saved.map(|i| i.to_hex()), "new_head": o.new_head.map(|i| i.to_hex())}),
                );
            } else {
                if let Some(a) = o.auto_saved {
                    out(format!(
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
                    for x in show(v) {
                        if *dry_run {
                            out(format!("{label} {x}"));
                        }
                    }
                }
                out(format!(
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
                        Error::Invalid(format!(
                            "--read-data-subset takes a percentage like 10%, got '{s}'"
                        ))
                    })?,
            };
            let r = st.check(CheckOptions {
                read_data_percent: pct,
            })?;
            if cli.json {
                out(serde_json::to_value(&r).map_err(|e| Error::Invalid(e.to_string()))?);
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
                out(serde_json::to_value(&r).map_err(|e| Error::Invalid(e.to_string()))?);
            } else {
                out(format!(
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
                out(serde_json::to_value(&r).map_err(|e| Error::Invalid(e.to_string()))?);
            } else {
                if let Some(s) = &r.restore_finished {
                    out(format!("finished an interrupted restore of {}", &s[..12]));
                }
                if let Some(why) = &r.restore_abandoned {
                    out(format!(
                        "abandoned an interrupted restore that could not be finished: {why}"
                    ));
                }
                out(format!(
                    "removed {} unfinished object batch(es), {} temp file(s)",
                    r.staging_removed, r.tmp_files_removed
                ));
                for x in &r.repaired {
                    out(format!("repaired {} ({}): {}", x.file, x.damage, x.action));
                }
                for q in &r.quarantined {
                    out(format!(
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
                    out("nothing to recover: the store and every session descriptor are sound");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        StateCmd::Diff { a, b } => {
            let changes = st.diff(a, b)?;
            if cli.json {
                out(serde_json::to_value(&changes).map_err(|e| Error::Invalid(e.to_string()))?);
            } else {
                print_changes(&changes);
                out(format!("{} file(s) differ", changes.len()));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
