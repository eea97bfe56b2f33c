//! Opening the store for a command, and what the command says on stderr about what opening
//! (or the command) did on its own: a new store, leftover recovery, quarantined descriptors,
//! entries a snapshot may not hold.

use std::io::Write;

use super::args::Cli;
use super::documents;
use crate::config::{self, Config};
use crate::snapshot::exclude::Excludes;
use crate::{Paths, Result, Settings, State};

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

/// The config file of `paths` and the settings it and the environment give a store.
///
/// A bad `SHELLDONE_*` variable is always an error. A bad config file is an error for commands
/// that write (their excludes and timeouts must be the user's), and a warning for those that
/// only read — and for restoring the config file itself, so that a broken file can be put back.
pub(super) fn settings(cli: &Cli, paths: &Paths) -> Result<(Config, Settings)> {
    let lock_timeout = config::env_seconds("SHELLDONE_LOCK_TIMEOUT")?;
    let cfg = match Config::load(&paths.config_dir) {
        Ok(c) => c,
        Err(e) if reads_only(cli) => {
            let file = paths.config_dir.join(config::FILE_NAME);
            super::output::warn(
                cli,
                "config",
                &file.to_string_lossy(),
                &format!("{e}; this command goes on without the config file"),
            );
            Config::default()
        }
        Err(e) => return Err(e),
    };
    let excludes = Excludes::new(&cfg.exclude)?;
    if super::output::verbose() {
        match &cfg.file {
            Some(f) => super::output::note(
                cli,
                &format!(
                    "config: {} ({} exclude pattern(s))",
                    f.display(),
                    cfg.exclude.len()
                ),
            ),
            None => super::output::note(
                cli,
                &format!(
                    "config: none ({} does not exist)",
                    paths.config_dir.join(config::FILE_NAME).display()
                ),
            ),
        }
    }
    let _ = CONFIG.set(cfg.clone());
    let s = Settings {
        excludes,
        lock_timeout: lock_timeout.or(cfg.lock_timeout),
        push_timeout: cfg.push_timeout,
        pull_timeout: cfg.pull_timeout,
        aws: crate::remote::s3::AwsEnv::from_vars(|k| std::env::var(k).ok()),
    };
    Ok((cfg, s))
}

/// The config file this process read (one command per process).
static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();

/// The remote a sync command uses when none is named: `sync.remote` (for the daemon,
/// `sync.daemon.remote` first), else `origin`.
pub(super) fn remote_or_default(named: Option<&str>) -> String {
    named
        .map(str::to_owned)
        .or_else(|| CONFIG.get().and_then(|c| c.remote.clone()))
        .unwrap_or_else(|| "origin".to_owned())
}

/// The config file read by [`settings`] (the default when none was read yet).
pub(super) fn config() -> Config {
    CONFIG.get().cloned().unwrap_or_default()
}

/// Commands that do not write live files or refs from the config's settings.
fn reads_only(cli: &Cli) -> bool {
    use super::args::{
        Cmd, ConflictsCmd, DeviceCmd, KeyCmd, RemoteCmd, SecretCmd, StateCmd, SyncCmd, VaultCmd,
    };
    match &cli.cmd {
        Cmd::Log(_) | Cmd::Show { .. } => true,
        // `recover` repairs the store: a broken config file must not stand in its way.
        Cmd::State(StateCmd::Diff { .. } | StateCmd::Check { .. } | StateCmd::Recover) => true,
        Cmd::State(StateCmd::Save { dry_run, .. }) => *dry_run,
        Cmd::State(StateCmd::Restore { path, dry_run, .. }) => {
            *dry_run
                || path
                    .as_deref()
                    .is_some_and(|p| p.trim_end_matches('/') == CONFIG_FILE_PATH)
        }
        Cmd::Sync(SyncCmd::Status { .. } | SyncCmd::Push { dry_run: true, .. }) => true,
        Cmd::Conflicts { cmd } => matches!(
            cmd,
            None | Some(ConflictsCmd::List | ConflictsCmd::Show { .. })
        ),
        Cmd::Device(DeviceCmd::Show) | Cmd::Remote(RemoteCmd::List) => true,
        Cmd::Migrate {
            dry_run, status, ..
        } => *dry_run || *status,
        Cmd::Secret(SecretCmd::Get { .. } | SecretCmd::List)
        | Cmd::Key(KeyCmd::Show | KeyCmd::List)
        | Cmd::Vault(VaultCmd::Status) => true,
        _ => false,
    }
}

/// Commands that only read the store: an older store is read through for them, not migrated
/// (docs/migrations.md). `migrate` migrates (or not) itself, step by step.
fn read_through(cli: &Cli) -> bool {
    use super::args::{Cmd, ConflictsCmd, DeviceCmd, RemoteCmd, StateCmd};
    match &cli.cmd {
        Cmd::Log(_) | Cmd::Show { .. } | Cmd::Migrate { .. } => true,
        Cmd::State(StateCmd::Diff { .. }) => true,
        Cmd::State(StateCmd::Save { dry_run, .. }) => *dry_run,
        // An export into another folder reads the store only (no lock).
        Cmd::State(StateCmd::Restore { to, .. }) => to.is_some(),
        Cmd::Conflicts { cmd } => matches!(
            cmd,
            None | Some(ConflictsCmd::List | ConflictsCmd::Show { .. })
        ),
        Cmd::Device(DeviceCmd::Show) | Cmd::Remote(RemoteCmd::List) => true,
        _ => false,
    }
}

/// Commands that may write a snapshot of the live files (`[snapshot] redact` applies to them).
fn saves(cli: &Cli) -> bool {
    use super::args::{Cmd, StateCmd, SyncCmd};
    matches!(
        &cli.cmd,
        Cmd::State(StateCmd::Save { .. } | StateCmd::Restore { .. })
            | Cmd::Sync(SyncCmd::Pull { .. } | SyncCmd::Daemon(_))
    )
}

/// The config file's snapshot path.
const CONFIG_FILE_PATH: &str = "config/shelldone.toml";

/// Opens the store, which runs leftover recovery (docs/cli.md), and says on stderr (unless
/// `--json`) that a store was created and what recovery did; returns the recovery report too.
pub(super) fn open_with_report(cli: &Cli) -> Result<(State, crate::RecoveryReport)> {
    if read_through(cli) {
        open_with_report_as(cli, State::open_read_through)
    } else {
        open_with_report_as(cli, State::open)
    }
}

/// [`open_with_report`] through `open` ([`State::open`] or [`State::open_for_save`]).
/// Writes the store format migration opening `st` ran, if any, to the audit trail
/// (docs/journal.md); a line that cannot be written is a warning, as for every operation.
pub(super) fn audit_migration(cli: &Cli, state_dir: &std::path::Path, st: &State) {
    if let Some(found) = st.context().read_through()
        && !matches!(cli.cmd, super::args::Cmd::Migrate { .. })
    {
        super::output::note(
            cli,
            &format!(
                "the state store has format {found}, older than this shelldone's {}; read as it is, nothing written ('shelldone migrate' upgrades it)",
                crate::STORE_FORMAT
            ),
        );
    }
    let Some((from, to)) = st.migrated() else {
        return;
    };
    if let Some(point) = st.restore_point() {
        super::output::note(
            cli,
            &format!(
                "upgraded the state store from format {from} to {to}; restore point {point} ('shelldone migrate --undo' goes back)"
            ),
        );
    }
    if let Err(e) = crate::telemetry::audit::audit(
        state_dir,
        "store.migrate",
        true,
        &format!("store format {from} -> {to}"),
    ) {
        super::output::warn(
            cli,
            "audit log",
            crate::telemetry::audit::AUDIT_LOG,
            &e.to_string(),
        );
    }
}

pub(super) fn open_with_report_as(
    cli: &Cli,
    open: fn(crate::Paths) -> Result<(State, crate::RecoveryReport)>,
) -> Result<(State, crate::RecoveryReport)> {
    let p = paths(cli)?;
    let (cfg, settings) = settings(cli, &p)?;
    let new_store = !p.state_dir.join("snapshots").exists();
    let state_dir = p.state_dir.clone();
    let (mut st, rep) = open(p)?;
    audit_migration(cli, &state_dir, &st);
    st.apply(settings);
    super::progress::install(cli, &mut st)?;
    // An encrypted or signed remote unlocks this device's keys as every vault command does.
    st.set_passphrase(crate::context::Passphrase(std::sync::Arc::new(|what| {
        super::vault_cmd::ask_passphrase(true, what)
    })));
    if cfg.redact == Some(true) && saves(cli) {
        super::vault_cmd::install_redactor(&st)?;
    }
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if let Some(name) = cfg.device_name_for(&host)
        && name != st.device()
    {
        if new_store {
            // A new store takes the name the config gives this host.
            st.device_rename(name)?;
        } else {
            super::output::note(
                cli,
                &format!(
                    "{} names this host ('{host}') '{name}', but this store's device is '{}'; run 'shelldone device rename {name}' to use it",
                    cfg.file
                        .as_deref()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default(),
                    st.device()
                ),
            );
        }
    }
    if new_store {
        // A typo'd --state-dir must not go unnoticed.
        super::output::note(
            cli,
            &format!(
                "created a new state store in {} (device {})",
                st.paths().state_dir.display(),
                st.device()
            ),
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
