//! The command line's arguments (clap): every command, subcommand and option.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Shelldone state: snapshots, restore, history and sync of terminal sessions and preferences.
#[derive(Debug, Parser)]
#[command(name = "shelldone", version, about, propagate_version = true)]
pub struct Cli {
    /// State store (default: $XDG_STATE_HOME/shelldone).
    #[arg(long, global = true, env = "SHELLDONE_STATE_DIR", value_name = "DIR")]
    pub(super) state_dir: Option<PathBuf>,
    /// Config store (default: $XDG_CONFIG_HOME/shelldone).
    #[arg(long, global = true, env = "SHELLDONE_CONFIG_DIR", value_name = "DIR")]
    pub(super) config_dir: Option<PathBuf>,
    /// Machine-readable output (one JSON document on stdout; errors as JSON on stderr).
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// Say less: no progress, no notes, no summary of what a command did (errors, warnings and
    /// what a command is asked to show are still printed).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(super) quiet: bool,
    /// Say more: the config file read, each file a save or restore changed (-vv: timings).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(super) verbose: u8,
    /// Colour: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub(super) color: ColorArg,
    /// Do not page `log` and `show` on a terminal.
    #[arg(long, global = true)]
    pub(super) no_pager: bool,
    /// Progress on stderr: auto (on a terminal; NDJSON events with --json), always, never.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub(super) progress: ColorArg,
    #[command(subcommand)]
    pub(super) cmd: Cmd,
}

/// `--color` and `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ColorArg {
    /// When stdout (stderr for progress) is a terminal.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// `completions SHELL`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum ShellArg {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

#[derive(Debug, Subcommand)]
pub(super) enum Cmd {
    /// Save, restore and maintain the local state.
    #[command(subcommand)]
    State(StateCmd),
    /// Browse history, newest first.
    Log(LogArgs),
    /// Show one snapshot and what it changed.
    #[command(after_long_help = SHOW_EXAMPLES)]
    Show {
        /// Revision: head, an id or a prefix of one, a session id, a device name, a ref;
        /// then @{N}, ~N, ^N (see EXAMPLES).
        rev: String,
        /// Full 64-hex ids (default: 12).
        #[arg(long)]
        full: bool,
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
    /// The secret vault: values age-encrypted under state/secrets (docs/keys.md).
    #[command(subcommand)]
    Secret(SecretCmd),
    /// This device's keys and the devices it trusts (docs/keys.md).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Where the vault's keys are kept, and whether they unlock.
    #[command(subcommand)]
    Vault(VaultCmd),
    /// Backups: self-contained bundles of a snapshot (checksummed, optionally encrypted and
    /// signed) in state/backups/ or a folder of your choice.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// The Continuum journal: append events and read them (docs/journal.md).
    #[command(subcommand)]
    Journal(JournalCmd),
    /// Opt-in anonymous telemetry, kept in the state dir's metrics/ and never synced
    /// (docs/journal.md).
    #[command(subcommand)]
    Telemetry(TelemetryCmd),
    /// Upgrade the store and the other data it keeps to this shelldone's formats, after a
    /// restore point; or go back to that point (docs/migrations.md).
    Migrate {
        /// Say what would be done (or undone); write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Go back to the newest restore point: the files the migration rewrote, as they were.
        #[arg(long, conflicts_with = "status")]
        undo: bool,
        /// Show the store's format, the steps pending and the restore points; write nothing.
        #[arg(long, conflicts_with = "dry_run")]
        status: bool,
    },
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_long_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: ShellArg,
    },
    /// Print the man page (roff), or write one page per command into DIR.
    #[command(hide = true)]
    Man {
        /// Write shelldone.1, shelldone-state.1, … into DIR instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// A guided demo on a temporary state: save, change, log, restore, verify.
    Tour {
        /// Keep the demo state in DIR instead of a temp dir.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum StateCmd {
    /// Snapshot the live state (config, sessions, journal).
    #[command(after_long_help = SAVE_EXAMPLES)]
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
        /// List what a save would record (added, modified, deleted files) and what the excludes
        /// leave out; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Make the live state equal to a snapshot (default: head).
    #[command(after_long_help = RESTORE_EXAMPLES)]
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
pub(super) enum JournalCmd {
    /// Append one event; prints its id. The payload is FIELD=VALUE arguments (strings) or, with
    /// --stdin, JSON read from stdin — use stdin for anything secret (arguments are visible to
    /// every user in the process list).
    Append {
        /// What happened (command, sigma.guard, …).
        kind: String,
        /// The terminal session it belongs to.
        #[arg(long)]
        session: Option<String>,
        /// A spectral tag (sigma::guard, …); repeatable.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Read the payload from stdin (JSON; other text is stored as one string).
        #[arg(long)]
        stdin: bool,
        /// The payload's fields.
        #[arg(value_name = "FIELD=VALUE")]
        fields: Vec<String>,
        /// Append this many events (the payload gains "i": 0, 1, …), printing each id once it
        /// is durable (tests).
        #[arg(long, hide = true, default_value_t = 1)]
        count: u64,
    },
    /// Print the last events, oldest first (-f: then follow new ones).
    Tail {
        /// How many (0: all).
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Keep printing events as they are appended, until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Only this session's events.
        #[arg(long)]
        session: Option<String>,
        /// Only events with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only events at or after this time: RFC 3339 (or a prefix, 2026-12-01) or an age
        /// (90s, 15m, 2h, 7d).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// With -f, stop after this many seconds (scripts, tests).
        #[arg(long, value_name = "S", requires = "follow")]
        max_runtime: Option<f64>,
    },
    /// Segments, size, and the agent feed's state.
    Status,
}

#[derive(Debug, Subcommand)]
pub(super) enum TelemetryCmd {
    /// Start recording anonymous counters and timings in metrics/.
    Enable,
    /// Stop, and delete every file of metrics/ and the folder.
    Disable,
    /// Whether it is on, and how much is stored.
    Status,
    /// Print exactly what is stored.
    Show,
}

#[derive(Debug, Subcommand)]
pub(super) enum RemoteCmd {
    /// Add a remote: a git URL (git://, ssh://, http(s)://, file://, *.git, an existing repo), an S3 URL (s3://bucket/prefix) or a directory.
    #[command(after_long_help = REMOTE_ADD_EXAMPLES)]
    Add {
        /// Name, e.g. origin.
        name: String,
        /// URL or path.
        url: String,
        /// Create the directory or S3 remote (neither is ever created implicitly).
        #[arg(long)]
        init: bool,
        /// S3 remotes: the endpoint of an S3-compatible service (over AWS_ENDPOINT_URL).
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// S3 remotes: the region (over AWS_REGION, AWS_DEFAULT_REGION and the profile's).
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
        /// Encrypt everything the remote receives (object names, contents, refs); the data
        /// key is wrapped for every trusted device and the paper key. Implies
        /// --require-signatures. Needs this device's keys ('shelldone key init').
        #[arg(long)]
        encrypt: bool,
        /// Sign every ref this device publishes and refuse, on pull, a ref that is not signed
        /// by a trusted, unrevoked device or that is older than one seen before.
        #[arg(long)]
        require_signatures: bool,
    },
    /// List remotes.
    List,
    /// Remove a remote (its tracking refs and local mirror).
    Remove {
        /// Name.
        name: String,
    },
    /// Raise a directory or S3 remote's layout to this shelldone's version on purpose: devices
    /// with an older shelldone then refuse it until they upgrade (docs/migrations.md).
    Upgrade {
        /// Name.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum StrategyArg {
    Full,
    Partial,
}

#[derive(Debug, Subcommand)]
pub(super) enum SyncCmd {
    /// Send local history and move this device's refs on the remote.
    #[command(after_long_help = PUSH_EXAMPLES)]
    Push {
        /// Remote name (default: `sync.remote` in the config file, else origin).
        remote: Option<String>,
        /// Say what would be sent (objects, bytes) and which refs would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Fetch every device's history and integrate it into the live state.
    #[command(after_long_help = PULL_EXAMPLES)]
    Pull {
        /// Remote name (default: `sync.remote` in the config file, else origin).
        remote: Option<String>,
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
        /// Remote name (default: `sync.remote` in the config file, else origin).
        remote: Option<String>,
    },
    /// Save on change (debounced), push and pull on an interval, until stopped (SIGTERM or
    /// SIGINT: it finishes the step under way, saves and pushes what is left, and exits).
    Daemon(DaemonArgs),
}

/// `sync daemon`'s options. None has a clap default: an option not given keeps the value of
/// the settings it is applied to (`DaemonSettings::default()`, later the config file), so the
/// defaults are written once, in `daemon_cmd`.
#[derive(Debug, Args)]
pub(super) struct DaemonArgs {
    /// Remote to push to and pull from (none: only save).
    #[arg(long)]
    pub(super) remote: Option<String>,
    /// Seconds between checks for changes when polling (where watching cannot start, or
    /// `sync.daemon.watch = false`) [default: 2].
    #[arg(long, value_name = "S")]
    pub(super) poll: Option<f64>,
    /// Seconds the state must stay unchanged before a save [default: 3].
    #[arg(long, value_name = "S")]
    pub(super) debounce: Option<f64>,
    /// Seconds between pushes (only when something new was saved) [default: 300].
    #[arg(long, value_name = "S")]
    pub(super) push_interval: Option<f64>,
    /// Seconds between pulls from the remote; 0 disables pulling [default: 300].
    #[arg(long, value_name = "S")]
    pub(super) pull_interval: Option<f64>,
    /// Stop after this many seconds, as on SIGTERM (for tests and timers); default: run until
    /// stopped.
    #[arg(long, value_name = "S")]
    pub(super) max_runtime: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub(super) enum ConflictsCmd {
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
pub(super) enum DeviceCmd {
    /// Print this device's name.
    Show,
    /// Rename this device (e.g. after copying a state folder to another machine).
    Rename {
        /// The new name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum SecretCmd {
    /// Store a secret: the value is read from standard input (one trailing newline dropped), or
    /// asked for without echo on a terminal; never from the command line.
    Set {
        /// The secret's name (letters, digits, '_', '-', '.').
        name: String,
    },
    /// Print a secret's value on standard output.
    Get {
        /// The secret's name.
        name: String,
    },
    /// List the secrets' names.
    List,
    /// Remove a secret.
    Rm {
        /// The secret's name.
        name: String,
    },
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum BackendArg {
    /// The OS keyring: the Secret Service when a session bus answers, else kernel keyutils.
    Keyring,
    /// The OS keyring's Secret Service (the desktop keyring over D-Bus: survives reboots).
    SecretService,
    /// The OS keyring's kernel keyutils store (works headless: forgotten at reboot).
    Keyutils,
    /// A file encrypted with a passphrase (SHELLDONE_VAULT_PASSPHRASE, or asked for).
    Passphrase,
}

#[derive(Debug, Subcommand)]
pub(super) enum KeyCmd {
    /// Make this device's keys: an age X25519 identity and an Ed25519 signing key.
    Init {
        /// Where to keep the private halves (default: vault.backend, else passphrase).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Replace existing keys (secrets encrypted only to them become unreadable here).
        #[arg(long)]
        force: bool,
    },
    /// Print this device's public keys (age1… and ssh-ed25519 …) to trust it elsewhere.
    Show,
    /// Trust a device: new secrets are encrypted to it, and existing ones re-encrypted.
    Trust {
        /// The name to trust it under.
        name: String,
        /// Its public keys as 'key show' prints them on it: age1… and ssh-ed25519 AAAA….
        #[arg(required = true, num_args = 1..)]
        pubkeys: Vec<String>,
    },
    /// List the trusted devices.
    List,
    /// Revoke a device: secrets are re-encrypted without it.
    Revoke {
        /// The device's name.
        name: String,
    },
    /// Print a new paper recovery key (and include it in every encryption from now on).
    Export {
        /// The paper form: a recovery identity a person can write down.
        #[arg(long, required = true)]
        paper: bool,
    },
    /// Restore access on this device with the paper recovery key (read from standard input,
    /// or asked for without echo on a terminal).
    Import {
        /// Where to keep this device's new keys (default: vault.backend, else passphrase).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Pull this remote first, reading it with the paper key (an encrypted remote's key
        /// file is wrapped for it), then re-wrap its key file for this device's new keys.
        #[arg(long, value_name = "REMOTE")]
        remote: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum VaultCmd {
    /// Which backend holds this device's keys, and whether they unlock (without asking).
    Status,
    /// Restore access with the paper recovery key (the same as 'key import').
    Unlock {
        /// Read the paper recovery key (required: a keyring or passphrase unlocks by itself).
        #[arg(long, required = true)]
        recovery: bool,
        /// Where to keep this device's new keys (default: vault.backend, else passphrase).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Pull this remote first with the paper key (as 'key import --remote').
        #[arg(long, value_name = "REMOTE")]
        remote: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum BackupCmd {
    /// Write a bundle of a snapshot (default: head).
    Run {
        /// The revision to back up.
        #[arg(long = "ref", value_name = "REV")]
        rev: Option<String>,
        /// Bundle folder (default: state/backups/).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Only when the newest bundle is older than `[backup] every_hours`.
        #[arg(long)]
        if_due: bool,
        /// Encrypt to this age public key (age1…); repeatable; added to `[backup] recipients`.
        #[arg(long, value_name = "AGE1…")]
        recipient: Vec<String>,
        /// Sign with the raw Ed25519 key in FILE (64 hex) instead of this device's vault key.
        #[arg(long, hide = true, value_name = "FILE")]
        signing_key: Option<PathBuf>,
    },
    /// List the good bundles: time, size, snapshot, encrypted, signed by.
    List {
        /// Bundle folder (default: state/backups/).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        keys: BackupKeys,
    },
    /// Check bundles: checksums, signature, and a round trip through a temporary folder.
    Verify {
        /// Bundle id (or unique prefix) or folder.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Every bundle in the folder.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Round-trip every file of the snapshot (default: a sample of about one in eight,
        /// another on each run; every object is checked either way).
        #[arg(long)]
        full: bool,
        /// Bundle folder (default: state/backups/).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        keys: BackupKeys,
    },
    /// Restore a bundle into the live state (or into DIR).
    Restore {
        /// Bundle id (or unique prefix) in state/backups/, or a bundle folder.
        bundle: String,
        /// Write into DIR (DIR/config, DIR/state) instead of the live folders.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Bundle folder for ids (default: state/backups/).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        keys: BackupKeys,
    },
    /// Drop bundles the keep policy does not keep (restic's `forget` rules).
    Prune {
        /// Bundle folder (default: state/backups/).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Keep the newest N (default: `[backup] keep_last`).
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// Keep the newest of each of the N newest hours.
        #[arg(long, value_name = "N")]
        keep_hourly: Option<u32>,
        /// … days.
        #[arg(long, value_name = "N")]
        keep_daily: Option<u32>,
        /// … weeks.
        #[arg(long, value_name = "N")]
        keep_weekly: Option<u32>,
        /// … months.
        #[arg(long, value_name = "N")]
        keep_monthly: Option<u32>,
        /// Only list what would go.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Keys for reading bundles.
#[derive(Debug, Args)]
pub(super) struct BackupKeys {
    /// An age identity file (AGE-SECRET-KEY-1… lines) that may decrypt; repeatable.
    #[arg(long, value_name = "FILE")]
    pub(super) identity: Vec<PathBuf>,
    /// Judge signatures against these keys (one `NAME HEX [revoked]` a line) instead of the
    /// vault's trust list.
    #[arg(long, hide = true, value_name = "FILE")]
    pub(super) trusted_keys: Option<PathBuf>,
}

/// Revision examples shared by `log --help` and `show --help` (docs/cli.md, "Revisions"): a
/// macro, so that `concat!` can join it to each command's own examples.
macro_rules! revision_examples {
    () => {
        "  head                  this device's newest snapshot (also HEAD, or nothing)
  head~2                two first parents back (head~ is head~1)
  head^2                the second parent of a merge (head^ is head^1, like head~1)
  head~2^2              combined: the second parent of head~2
  head@{1}              what head was before its last move (from the reflog)
  3fa2c1d0              a snapshot id, or a unique prefix of one (4 hex characters or more)
  s001                  a session id, or a unique prefix of one: the last snapshot that
                        changed that session (sessions/s001)
  sessions/s001@{2}     a session's ref, two moves ago
  laptop                a device's head as the last pull fetched it
                        (remotes/<remote>/laptop/head)
  origin/laptop/head~1  a remote-tracking ref (remotes/ may be left out)

Names are tried in this order: head; a full 64-hex id; with a '/', a ref name; else device
names, session ids and snapshot id prefixes together. A name matching several things (an id
prefix that also begins a session id, a device on two remotes) is an error that lists them,
exit 2; so is a name matching nothing (docs/cli.md, \"Revisions\").
"
    };
}

const LOG_EXAMPLES: &str = concat!(
    "EXAMPLES:\n",
    "  shelldone log --oneline -n 5     the last five snapshots, one line each\n",
    "  shelldone log laptop             the history of device laptop's head\n",
    "  shelldone log --session s001     the snapshots in which session s001 changed\n",
    "  shelldone log --full head@{1}    from head's previous value, with full ids\n",
    "\nREVISIONS:\n",
    revision_examples!(),
);

const SHOW_EXAMPLES: &str = concat!(
    "EXAMPLES:\n",
    "  shelldone show head^2            the other side of the last merge\n",
    "  shelldone show s001              the snapshot where session s001 last changed\n",
    "  shelldone show --full head@{1}   head's previous value, with full ids\n",
    "\nREVISIONS:\n",
    revision_examples!(),
);

#[derive(Debug, Args)]
#[command(after_long_help = LOG_EXAMPLES)]
pub(super) struct LogArgs {
    /// Start here (default: head; with --session, that session's ref). See EXAMPLES.
    pub(super) rev: Option<String>,
    /// At most N entries.
    #[arg(short = 'n', long)]
    pub(super) max_count: Option<usize>,
    /// Only snapshots where this session changed (exit 2 when no snapshot from the start holds
    /// it and it is not live).
    #[arg(long)]
    pub(super) session: Option<String>,
    /// One line per snapshot: short id, time, device, refs, message.
    #[arg(long)]
    pub(super) oneline: bool,
    /// Full 64-hex ids (default: 12).
    #[arg(long)]
    pub(super) full: bool,
}

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  # bash: load now, and in every new shell
  source <(shelldone completions bash)
  shelldone completions bash > ~/.local/share/bash-completion/completions/shelldone
  # zsh: a file named _shelldone in a folder of $fpath
  shelldone completions zsh > ~/.zfunc/_shelldone
  # fish
  shelldone completions fish > ~/.config/fish/completions/shelldone.fish";

const SAVE_EXAMPLES: &str = "\
Examples:
  shelldone state save -m 'before the upgrade'
  shelldone state save --dry-run          # what would be recorded, what is excluded
  shelldone state save --session s001     # only that session
Excludes: state.exclude in shelldone.toml and .shelldoneignore files (docs/config.md).";

const RESTORE_EXAMPLES: &str = "\
Examples:
  shelldone state restore                 # back to head (undo unsaved changes)
  shelldone state restore head~2 --dry-run
  shelldone state restore head@{1}        # where head was before the last move
  shelldone state restore laptop --session s001   # one session from another device
  shelldone state restore --path config/keymap.json head^
  shelldone state restore 3f2a --to /tmp/old      # write a snapshot elsewhere
Unsaved live changes are saved first, so a restore can always be undone.";

const PUSH_EXAMPLES: &str = "\
Examples:
  shelldone sync push                     # to sync.remote (shelldone.toml), else origin
  shelldone sync push backup --dry-run    # what would be sent";

const PULL_EXAMPLES: &str = "\
Examples:
  shelldone sync pull                     # fetch every device, merge, update live files
  shelldone sync pull --no-restore        # fetch only; see 'shelldone sync status'
  shelldone sync pull --session s001      # integrate one session for now
Conflicts are set aside, never lost: 'shelldone conflicts' lists them.";

const REMOTE_ADD_EXAMPLES: &str = "\
Examples:
  shelldone remote add origin git@github.com:me/terminal-state.git
  shelldone remote add nas /mnt/nas/shelldone --init   # a plain directory
  shelldone remote add usb file:///media/usb/state.git
  shelldone remote add cloud s3://my-bucket/shelldone --init   # AWS_* variables or AWS_PROFILE
  shelldone remote add minio s3://state/laptop --endpoint http://nas:9000 --region us-east-1 --init";
