//! The config file: `shelldone.toml` in the config dir (`$XDG_CONFIG_HOME/shelldone/`).
//!
//! The file is the terminal's own config file; shelldone state owns only the tables listed in
//! [`TABLES`] (`[state]`, `[device]`, `[sync]`, `[sync.daemon]`, and `[backup]`, `[vault]`,
//! `[telemetry]` reserved for what comes next; `[vault]` and `[snapshot]` have their first keys) and never reads or changes anything else in it.
//! Inside its tables every key must be one of [`KEYS`]: an unknown key or a bad value is an
//! [`Error::Config`] naming the file and the line. docs/config.md documents each key and a test
//! checks it against [`KEYS`].
//!
//! The config dir is snapshotted and synced, so this file is the same on every device; a
//! setting that must differ per device is keyed by host name (`[device.names]`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// The file name inside the config dir.
pub const FILE_NAME: &str = "shelldone.toml";

/// The newest `state.version` this shelldone understands; a file that says a newer one is
/// refused (written for a newer shelldone) rather than half understood.
pub const VERSION: i64 = 1;

/// The tables shelldone state owns. A key inside them that [`KEYS`] does not list is an error;
/// every other table of the file belongs to the terminal and is not read.
pub const TABLES: &[&str] = &[
    "state",
    "device",
    "sync",
    "sync.daemon",
    "backup",
    "vault",
    "snapshot",
    "telemetry",
    "journal",
];

/// What a key's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A whole number.
    Integer,
    /// A number of seconds (whole or fractional, not negative).
    Seconds,
    /// A string.
    String,
    /// An array of strings.
    Strings,
    /// A table of string values (its keys are free).
    StringTable,
    /// `true` or `false`.
    Boolean,
}

/// Every key shelldone state reads, by dotted path (`sync.remote`).
pub const KEYS: &[(&str, ValueKind)] = &[
    ("state.version", ValueKind::Integer),
    ("state.exclude", ValueKind::Strings),
    ("state.lock_timeout", ValueKind::Seconds),
    ("device.names", ValueKind::StringTable),
    ("sync.remote", ValueKind::String),
    ("sync.push_timeout", ValueKind::Seconds),
    ("sync.pull_timeout", ValueKind::Seconds),
    ("sync.daemon.remote", ValueKind::String),
    ("sync.daemon.poll", ValueKind::Seconds),
    ("sync.daemon.debounce", ValueKind::Seconds),
    ("sync.daemon.push_interval", ValueKind::Seconds),
    ("sync.daemon.pull_interval", ValueKind::Seconds),
    ("sync.daemon.watch", ValueKind::Boolean),
    ("vault.backend", ValueKind::String),
    ("snapshot.redact", ValueKind::Boolean),
    ("backup.every_hours", ValueKind::Integer),
    ("backup.recipients", ValueKind::Strings),
    ("backup.require_signature", ValueKind::Boolean),
    ("backup.keep_last", ValueKind::Integer),
    ("backup.keep_hourly", ValueKind::Integer),
    ("backup.keep_daily", ValueKind::Integer),
    ("backup.keep_weekly", ValueKind::Integer),
    ("backup.keep_monthly", ValueKind::Integer),
    ("journal.agentd", ValueKind::String),
    ("journal.segment_bytes", ValueKind::Integer),
];

/// The settings read from the file; `None` (or empty) where the file says nothing.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file read (`None`: there is none).
    pub file: Option<PathBuf>,
    /// `state.exclude`: gitignore patterns matched against snapshot paths (`config/…`).
    pub exclude: Vec<String>,
    /// `state.lock_timeout`.
    pub lock_timeout: Option<Duration>,
    /// `device.names`: host name → device name.
    pub device_names: BTreeMap<String, String>,
    /// `sync.remote`: the remote `sync push`, `pull` and `status` use when none is named.
    pub remote: Option<String>,
    /// `sync.push_timeout`: seconds a git push may go without moving a byte.
    pub push_timeout: Option<Duration>,
    /// `sync.pull_timeout`: seconds a git fetch may go without moving a byte.
    pub pull_timeout: Option<Duration>,
    /// `[sync.daemon]`.
    pub daemon: DaemonConfig,
    /// `vault.backend`: where `key init` keeps a new device's keys (`keyring`, `secret-service`,
    /// `keyutils`, `passphrase`: the values of `--backend`).
    pub vault_backend: Option<String>,
    /// `snapshot.redact`: replace secrets in the scrollback and journal that snapshots store.
    pub redact: Option<bool>,
    /// `[backup]`.
    pub backup: BackupConfig,
    /// `[journal]`.
    pub journal: JournalConfig,
}

/// `[journal]`.
#[derive(Debug, Clone, Default)]
pub struct JournalConfig {
    /// `agentd`: the `shelldone-agentd` address the agent feed posts to (`127.0.0.1:17717`);
    /// none: no feed.
    pub agentd: Option<String>,
    /// `segment_bytes`: the size at which a journal segment is sealed.
    pub segment_bytes: Option<u64>,
}

/// `[backup]`.
#[derive(Debug, Clone, Default)]
pub struct BackupConfig {
    /// `every_hours`: `backup run --if-due` (and the daemon) back up when the newest bundle is
    /// older than this.
    pub every_hours: Option<u32>,
    /// `recipients`: age public keys (`age1…`) every bundle is encrypted to.
    pub recipients: Vec<String>,
    /// `require_signature`: verify and restore refuse a bundle not signed by a trusted key.
    pub require_signature: bool,
    /// `keep_last`, `keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly` (prune).
    pub keep: [Option<u32>; 5],
}

/// `[sync.daemon]`.
#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    /// `remote`: where the daemon pushes and pulls (default: `sync.remote`).
    pub remote: Option<String>,
    /// `poll`.
    pub poll: Option<Duration>,
    /// `debounce`.
    pub debounce: Option<Duration>,
    /// `push_interval`.
    pub push_interval: Option<Duration>,
    /// `pull_interval`.
    pub pull_interval: Option<Duration>,
    /// `watch`: `false` makes the daemon poll instead of watching (inotify).
    pub watch: Option<bool>,
}

impl Config {
    /// Reads `shelldone.toml` in `config_dir`; no file is the default config.
    ///
    /// # Errors
    /// [`Error::Config`] (file and line) for a file that cannot be read, is not TOML, or has an
    /// unknown key or a bad value in shelldone's tables.
    pub fn load(config_dir: &Path) -> Result<Config> {
        let file = config_dir.join(FILE_NAME);
        let text = match std::fs::read(&file) {
            Ok(b) => b,
            // No config dir, or a config dir that is not a folder (save refuses that itself:
            // docs/sync.md, "Wrong places"): no file, the defaults.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Config::default());
            }
            Err(e) => return Err(config_error(&file, None, format!("cannot read it: {e}"))),
        };
        let text = String::from_utf8(text)
            .map_err(|e| config_error(&file, None, format!("not UTF-8 text: {e}")))?;
        Config::parse(&file, &text)
    }

    /// Parses the text of `file` (see [`Config::load`]).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(file: &Path, text: &str) -> Result<Config> {
        let doc = toml_edit::Document::parse(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            config_error(file, line, format!("not valid TOML: {}", e.message()))
        })?;
        let mut p = Parser {
            file,
            text,
            cfg: Config {
                file: Some(file.to_path_buf()),
                ..Config::default()
            },
        };
        p.table(doc.as_table(), "")?;
        Ok(p.cfg)
    }

    /// The device name `device.names` gives the host `host`, if any.
    #[must_use]
    pub fn device_name_for(&self, host: &str) -> Option<&str> {
        self.device_names.get(host).map(String::as_str)
    }
}

/// Validates a `SHELLDONE_*` variable that holds seconds: unset is `None`, anything but a
/// non-negative number is an error naming the variable.
///
/// # Errors
/// [`Error::Usage`] naming the variable and its value.
pub fn env_seconds(var: &str) -> Result<Option<Duration>> {
    match std::env::var(var) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(Error::Usage(format!(
            "{var}={}: expected a number of seconds (e.g. 60 or 0.5)",
            v.to_string_lossy()
        ))),
        Ok(v) => seconds(v.trim().parse::<f64>().ok())
            .map(Some)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "{var}={v}: expected a number of seconds (e.g. 60 or 0.5)"
                ))
            }),
    }
}

/// A finite, non-negative number of seconds as a [`Duration`].
fn seconds(v: Option<f64>) -> Option<Duration> {
    v.filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

fn config_error(file: &Path, line: Option<usize>, why: String) -> Error {
    Error::Config {
        file: file.to_path_buf(),
        line,
        why,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Parser<'a> {
    file: &'a Path,
    text: &'a str,
    cfg: Config,
}

impl Parser<'_> {
    fn err(&self, span: Option<Range<usize>>, why: String) -> Error {
        config_error(self.file, span.map(|s| line_of(self.text, s.start)), why)
    }

    /// Checks and reads a table (header, inline or dotted) whose dotted path is `path` (`""`
    /// for the root, where only [`TABLES`] are looked at).
    fn table(&mut self, t: &dyn toml_edit::TableLike, path: &str) -> Result<()> {
        let join = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        // Unknown keys first, so that the first error is the one a reader fixes first.
        for (key, item) in t.iter() {
            let full = join(key);
            if TABLES.contains(&full.as_str()) || path.is_empty() {
                continue;
            }
            if !KEYS.iter().any(|(k, _)| *k == full) {
                let span = t
                    .key(key)
                    .and_then(toml_edit::Key::span)
                    .or_else(|| item.span());
                let known: Vec<&str> = KEYS
                    .iter()
                    .filter_map(|(k, _)| k.strip_prefix(path)?.strip_prefix('.'))
                    .filter(|k| !k.contains('.'))
                    .collect();
                let hint = if known.is_empty() {
                    format!("[{path}] has no keys in this version of shelldone")
                } else {
                    format!("known keys in [{path}]: {}", known.join(", "))
                };
                return Err(self.err(
                    span,
                    format!("unknown key '{full}' ({hint}; see docs/config.md)"),
                ));
            }
        }
        for (key, item) in t.iter() {
            let full = join(key);
            if path.is_empty() && !TABLES.contains(&full.as_str()) {
                continue; // the terminal's own settings
            }
            let span = item
                .span()
                .or_else(|| t.key(key).and_then(toml_edit::Key::span));
            if TABLES.contains(&full.as_str()) {
                match item.as_table_like() {
                    Some(sub) => self.table(sub, &full)?,
                    None => {
                        return Err(self.err(
                            span,
                            format!(
                                "'{full}' must be a table ([{full}]), found {}",
                                item.type_name()
                            ),
                        ));
                    }
                }
                continue;
            }
            let kind = KEYS
                .iter()
                .find(|(k, _)| *k == full)
                .map(|&(_, k)| k)
                .expect("checked above");
            self.value(&full, kind, item, span)?;
        }
        Ok(())
    }

    fn value(
        &mut self,
        key: &str,
        kind: ValueKind,
        item: &toml_edit::Item,
        span: Option<Range<usize>>,
    ) -> Result<()> {
        let bad = |this: &Self, want: &str| {
            this.err(
                span.clone(),
                format!("'{key}' must be {want}, found {}", describe(item)),
            )
        };
        match kind {
            ValueKind::Integer => {
                let v = item
                    .as_integer()
                    .ok_or_else(|| bad(self, "a whole number"))?;
                if key == "state.version" {
                    if v < 1 {
                        return Err(bad(self, "1 or more"));
                    }
                    if v > VERSION {
                        return Err(self.err(
                            span,
                            format!(
                                "'state.version' is {v}: this file was written for a newer shelldone (this one reads version {VERSION}); upgrade shelldone"
                            ),
                        ));
                    }
                } else if key == "journal.segment_bytes" {
                    let n = u64::try_from(v)
                        .ok()
                        .filter(|n| *n >= 1024)
                        .ok_or_else(|| bad(self, "a number of bytes, 1024 or more"))?;
                    self.cfg.journal.segment_bytes = Some(n);
                } else {
                    let min = i64::from(key == "backup.every_hours");
                    let n = u32::try_from(v)
                        .ok()
                        .filter(|n| i64::from(*n) >= min)
                        .ok_or_else(|| bad(self, &format!("a whole number, {min} or more")))?;
                    let b = &mut self.cfg.backup;
                    match key {
                        "backup.every_hours" => b.every_hours = Some(n),
                        "backup.keep_last" => b.keep[0] = Some(n),
                        "backup.keep_hourly" => b.keep[1] = Some(n),
                        "backup.keep_daily" => b.keep[2] = Some(n),
                        "backup.keep_weekly" => b.keep[3] = Some(n),
                        "backup.keep_monthly" => b.keep[4] = Some(n),
                        other => unreachable!("integer key {other} has no slot"),
                    }
                }
            }
            ValueKind::Seconds => {
                let n = item
                    .as_float()
                    .or_else(|| item.as_integer().map(|i| i as f64));
                let d = seconds(n).ok_or_else(|| {
                    bad(self, "a number of seconds, not negative (e.g. 60 or 0.5)")
                })?;
                if d.is_zero() && matches!(key, "sync.push_timeout" | "sync.pull_timeout") {
                    return Err(bad(self, "more than 0 seconds"));
                }
                let slot = match key {
                    "state.lock_timeout" => &mut self.cfg.lock_timeout,
                    "sync.push_timeout" => &mut self.cfg.push_timeout,
                    "sync.pull_timeout" => &mut self.cfg.pull_timeout,
                    "sync.daemon.poll" => &mut self.cfg.daemon.poll,
                    "sync.daemon.debounce" => &mut self.cfg.daemon.debounce,
                    "sync.daemon.push_interval" => &mut self.cfg.daemon.push_interval,
                    "sync.daemon.pull_interval" => &mut self.cfg.daemon.pull_interval,
                    other => unreachable!("seconds key {other} has no slot"),
                };
                *slot = Some(d);
            }
            ValueKind::Boolean => {
                let v = item.as_bool().ok_or_else(|| bad(self, "true or false"))?;
                match key {
                    "sync.daemon.watch" => self.cfg.daemon.watch = Some(v),
                    "snapshot.redact" => self.cfg.redact = Some(v),
                    "backup.require_signature" => self.cfg.backup.require_signature = v,
                    other => unreachable!("boolean key {other} has no slot"),
                }
            }
            ValueKind::String => {
                let s = item
                    .as_str()
                    .ok_or_else(|| bad(self, "a string"))?
                    .to_owned();
                if key == "vault.backend" {
                    if !matches!(
                        s.as_str(),
                        "keyring" | "secret-service" | "keyutils" | "passphrase"
                    ) {
                        return Err(bad(
                            self,
                            "'keyring', 'secret-service', 'keyutils' or 'passphrase'",
                        ));
                    }
                    self.cfg.vault_backend = Some(s);
                    return Ok(());
                }
                if key == "journal.agentd" {
                    if s.parse::<std::net::SocketAddr>().is_err() {
                        return Err(bad(self, "an address HOST:PORT (e.g. \"127.0.0.1:17717\")"));
                    }
                    self.cfg.journal.agentd = Some(s);
                    return Ok(());
                }
                if s.is_empty() || s.contains(['/', '\\']) || s.chars().any(char::is_control) {
                    return Err(bad(self, "a remote name (no '/', not empty)"));
                }
                match key {
                    "sync.remote" => self.cfg.remote = Some(s),
                    "sync.daemon.remote" => self.cfg.daemon.remote = Some(s),
                    other => unreachable!("string key {other} has no slot"),
                }
            }
            ValueKind::Strings if key == "backup.recipients" => {
                let arr = item
                    .as_array()
                    .ok_or_else(|| bad(self, "an array of age public keys"))?;
                let mut out = Vec::new();
                for v in arr {
                    match v.as_str() {
                        Some(s) if s.starts_with("age1") => out.push(s.to_owned()),
                        _ => return Err(bad(self, "an array of age public keys (age1…)")),
                    }
                }
                self.cfg.backup.recipients = out;
            }
            ValueKind::Strings => {
                let arr = item
                    .as_array()
                    .ok_or_else(|| bad(self, "an array of strings"))?;
                let mut out = Vec::new();
                for v in arr {
                    let s = v.as_str().ok_or_else(|| bad(self, "an array of strings"))?;
                    if let Err(e) = ignore::gitignore::GitignoreBuilder::new("")
                        .add_line(None, s)
                        .and_then(|b| b.build())
                    {
                        return Err(self.err(
                            v.span().or(span.clone()),
                            format!("'{key}': bad pattern '{s}': {e}"),
                        ));
                    }
                    out.push(s.to_owned());
                }
                debug_assert_eq!(key, "state.exclude");
                self.cfg.exclude = out;
            }
            ValueKind::StringTable => {
                let t = item
                    .as_table_like()
                    .ok_or_else(|| bad(self, "a table of host name = device name"))?;
                for (host, v) in t.iter() {
                    let name = v
                        .as_str()
                        .ok_or_else(|| bad(self, "a table of host name = device name (strings)"))?;
                    let ok = !name.is_empty()
                        && name.len() <= 64
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                        && !name.starts_with('.');
                    if !ok {
                        return Err(self.err(
                            v.span().or(span.clone()),
                            format!(
                                "'{key}.{host}': device name '{name}' must be 1 to 64 of A-Z a-z 0-9 - _ . (not starting with '.')"
                            ),
                        ));
                    }
                    self.cfg
                        .device_names
                        .insert(host.to_owned(), name.to_owned());
                }
            }
        }
        Ok(())
    }
}

fn describe(item: &toml_edit::Item) -> String {
    match item.as_value() {
        Some(v) => format!("{} {}", v.type_name(), v.to_string().trim()),
        None => item.type_name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("/cfg/shelldone.toml"), text)
    }

    fn message(text: &str) -> String {
        parse(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn reads_every_table_and_leaves_the_terminals_keys_alone() {
        let c = parse(
            r#"
font_size = 14
[theme]
anything = "goes"

[state]
version = 1
exclude = ["cache/", "*.tmp"]
lock_timeout = 2.5

[device.names]
"my-laptop" = "laptop"

[sync]
remote = "home"
push_timeout = 300

[sync.daemon]
poll = 1
pull_interval = 0
"#,
        )
        .expect("valid");
        assert_eq!(c.exclude, ["cache/", "*.tmp"]);
        assert_eq!(c.lock_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.device_name_for("my-laptop"), Some("laptop"));
        assert_eq!(c.remote.as_deref(), Some("home"));
        assert_eq!(c.push_timeout, Some(Duration::from_secs(300)));
        assert_eq!(c.daemon.poll, Some(Duration::from_secs(1)));
        assert_eq!(c.daemon.pull_interval, Some(Duration::ZERO));
        assert_eq!(c.daemon.debounce, None);
    }

    #[test]
    fn the_vault_backend_takes_the_values_of_backend() {
        for b in ["keyring", "secret-service", "keyutils", "passphrase"] {
            let c = parse(&format!("[vault]\nbackend = \"{b}\"\n")).expect("valid");
            assert_eq!(c.vault_backend.as_deref(), Some(b));
        }
        let m = message("[vault]\nbackend = \"kwallet\"\n");
        assert!(m.contains("'secret-service', 'keyutils'"), "{m}");
    }

    #[test]
    fn inline_and_dotted_tables_are_read_too() {
        let c = parse("sync = { remote = \"a\", daemon = { poll = 3 } }\n").expect("valid");
        assert_eq!(c.remote.as_deref(), Some("a"));
        assert_eq!(c.daemon.poll, Some(Duration::from_secs(3)));
        let c = parse("[sync]\ndaemon.debounce = 4\n").expect("valid");
        assert_eq!(c.daemon.debounce, Some(Duration::from_secs(4)));
    }

    #[test]
    fn an_unknown_key_names_the_file_the_line_and_the_known_keys() {
        let m = message("a = 1\n\n[sync]\nremote = \"x\"\npush_timout = 3\n");
        assert!(
            m.starts_with("/cfg/shelldone.toml:5: unknown key 'sync.push_timout'"),
            "{m}"
        );
        assert!(m.contains("push_timeout"), "{m}");
        let m = message("[backup]\nkeep = 3\n");
        assert!(m.contains(":2: unknown key 'backup.keep'"), "{m}");
        assert!(m.contains("known keys in [backup]: every_hours"), "{m}");
        let c = parse("[backup]\nevery_hours = 6\nkeep_daily = 7\nrequire_signature = true\nrecipients = [\"age1x\"]\n")
            .expect("a valid [backup] table");
        assert_eq!(c.backup.every_hours, Some(6));
        assert_eq!(c.backup.keep[2], Some(7));
        assert!(c.backup.require_signature);
        assert_eq!(c.backup.recipients, ["age1x"]);
        let m = message("[backup]\nevery_hours = 0\n");
        assert!(m.contains("1 or more"), "{m}");
        let m = message("sync = { remot = \"x\" }\n");
        assert!(m.contains(":1: unknown key 'sync.remot'"), "{m}");
    }

    #[test]
    fn bad_values_name_the_line_and_what_was_expected() {
        let m = message("[state]\n\nlock_timeout = \"abc\"\n");
        assert!(
            m.starts_with(
                "/cfg/shelldone.toml:3: 'state.lock_timeout' must be a number of seconds"
            ),
            "{m}"
        );
        let m = message("[state]\nlock_timeout = -1\n");
        assert!(m.contains(":2:"), "{m}");
        let m = message("[state]\nexclude = \"cache/\"\n");
        assert!(m.contains("must be an array of strings"), "{m}");
        let m = message("[state]\nexclude = [\"a\",\n  \"b[z-a]\"]\n");
        assert!(
            m.contains(":3: 'state.exclude': bad pattern 'b[z-a]'"),
            "{m}"
        );
        let m = message("[sync]\nremote = \"a/b\"\n");
        assert!(m.contains(":2: 'sync.remote' must be a remote name"), "{m}");
        let m = message("sync = 3\n");
        assert!(m.contains(":1: 'sync' must be a table"), "{m}");
        let m = message("[device.names]\nhost = \"bad name\"\n");
        assert!(m.contains(":2: 'device.names.host'"), "{m}");
    }

    #[test]
    fn the_journal_table_names_the_agent_and_the_segment_size() {
        let c = parse("[journal]\nagentd = \"127.0.0.1:17717\"\nsegment_bytes = 4096\n")
            .expect("valid");
        assert_eq!(c.journal.agentd.as_deref(), Some("127.0.0.1:17717"));
        assert_eq!(c.journal.segment_bytes, Some(4096));
        let m = message("[journal]\nagentd = \"localhost\"\n");
        assert!(m.contains(":2: 'journal.agentd' must be an address"), "{m}");
        let m = message("[journal]\nsegment_bytes = 10\n");
        assert!(m.contains("1024 or more"), "{m}");
    }

    #[test]
    fn a_newer_version_is_refused_and_broken_toml_names_its_line() {
        let m = message("[state]\nversion = 2\n");
        assert!(m.contains("written for a newer shelldone"), "{m}");
        let m = message("a = 1\nb = = 2\n");
        assert!(
            m.starts_with("/cfg/shelldone.toml:2: not valid TOML"),
            "{m}"
        );
    }
}
