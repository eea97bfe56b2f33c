//! `shelldone sync daemon`: save on change, push and pull on an interval, stop cleanly.
//!
//! The loop (docs/sync.md, "Daemon"):
//! - at start, a remote that is not configured is refused (exit 2) before anything happens;
//!   then what changed while no daemon ran is saved at once;
//! - it watches the live roots (inotify, the `notify` crate), keeps the set of changed paths
//!   and, once the state has been quiet for `debounce`, saves only those
//!   ([`State::save_changed`]); a lost event, a moved head or anything it cannot be sure of
//!   makes it a full save. It sleeps until an event, a signal or something due: an idle daemon
//!   wakes for nothing but its push and pull intervals;
//! - where watching cannot start (the watch limit, a file system without inotify) or with
//!   `watch = false`, it says so once and polls instead: every `poll` it computes the live
//!   root (a stat-cache walk: unchanged files are not read, nothing is written);
//! - every `pull_interval` it pulls (saving pending changes first, so a pull never meets
//!   unsaved work), and at most every `push_interval` it pushes what was saved;
//! - on SIGTERM or SIGINT (or at `max_runtime`) it lets the step under way finish, saves what
//!   is still pending, pushes what is unpushed, says `stopped` and exits. A second signal ends
//!   it at once (the default action), for a shutdown that hangs.
//!
//! The settings arrive as one [`DaemonSettings`]; the command line fills it from its options
//! ([`DaemonArgs::apply`]) over [`DaemonSettings::default`], and a config file can be one more
//! layer underneath.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use super::args::DaemonArgs;
use super::documents::{self, DaemonEvent, DaemonLine};
use super::{exit, out, output};
use crate::error::{Error, Result};
use crate::store::refs::HEAD;
use crate::sync::{PullOptions, PullReport};
use crate::{ObjectId, SaveOptions, State};

/// Everything the daemon needs to know, whatever set it (options, later the config file).
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// The remote to push to and pull from; `None`: only save.
    pub remote: Option<String>,
    /// How often the live state is checked for changes (at least 50 ms).
    pub poll: Duration,
    /// How long the state must stay unchanged before it is saved.
    pub debounce: Duration,
    /// The least time between two pushes (at least 1 s).
    pub push_interval: Duration,
    /// The time between two pulls; `None`: never pull.
    pub pull_interval: Option<Duration>,
    /// Stop (as on SIGTERM) after this long; `None`: run until stopped.
    pub max_runtime: Option<Duration>,
    /// Watch the live folders (inotify); false: poll them every `poll`.
    pub watch: bool,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            remote: None,
            poll: Duration::from_secs(2),
            debounce: Duration::from_secs(3),
            push_interval: Duration::from_secs(300),
            pull_interval: Some(Duration::from_secs(300)),
            max_runtime: None,
            watch: true,
        }
    }
}

/// Seconds as a duration; a negative, infinite or NaN value is refused, naming its option.
fn seconds(option: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        Error::Usage(format!(
            "{option} takes a number of seconds, 0 or more (got {s})"
        ))
    })
}

impl DaemonArgs {
    /// The settings `base` with every option given on the command line applied over it.
    ///
    /// # Errors
    /// [`Error::Usage`] for a negative or non-finite number of seconds.
    pub(super) fn apply(&self, base: DaemonSettings) -> Result<DaemonSettings> {
        let mut s = base;
        if let Some(r) = &self.remote {
            s.remote = Some(r.clone());
        }
        if let Some(v) = self.poll {
            s.poll = seconds("--poll", v)?;
        }
        if let Some(v) = self.debounce {
            s.debounce = seconds("--debounce", v)?;
        }
        if let Some(v) = self.push_interval {
            s.push_interval = seconds("--push-interval", v)?;
        }
        if let Some(v) = self.pull_interval {
            let d = seconds("--pull-interval", v)?;
            s.pull_interval = (!d.is_zero()).then_some(d);
        }
        if let Some(v) = self.max_runtime {
            s.max_runtime = Some(seconds("--max-runtime", v)?);
        }
        Ok(s)
    }
}

/// Now, as RFC 3339 UTC to the second: `2026-11-30T21:40:02Z`.
fn now_rfc3339() -> String {
    let ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    format!("{}Z", output::time(ns).replacen(' ', "T", 1))
}

/// SIGTERM and SIGINT, as flags the loop reads: the first one asks for a clean stop, a second
/// one runs the signal's default action (the process dies of it).
struct Signals {
    /// The number of the last stop signal received; 0 for none.
    received: Arc<AtomicUsize>,
}

impl Signals {
    fn register() -> Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let received = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT] {
            // Registered first, so it sees `armed` as the previous signal left it.
            signal_hook::flag::register_conditional_default(sig, Arc::clone(&armed))?;
            signal_hook::flag::register(sig, Arc::clone(&armed))?;
            signal_hook::flag::register_usize(
                sig,
                Arc::clone(&received),
                usize::try_from(sig).expect("signal numbers are small and positive"),
            )?;
        }
        Ok(Signals { received })
    }

    /// The stop reason, once a stop signal arrived.
    fn stop_reason(&self) -> Option<&'static str> {
        use signal_hook::consts::SIGINT;
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            n if i32::try_from(n).is_ok_and(|n| n == SIGINT) => Some("sigint"),
            _ => Some("sigterm"),
        }
    }
}

/// What one push or pull direction has come to.
#[derive(Default)]
struct Direction {
    /// When it was last tried (`None`: not yet).
    last: Option<Instant>,
    attempts: u32,
    successes: u32,
    /// The last failure.
    last_error: Option<Error>,
    /// Set by a failure a retry cannot fix: no more tries.
    stopped: bool,
}

impl Direction {
    fn due(&self, every: Duration) -> bool {
        !self.stopped && self.last.is_none_or(|t| t.elapsed() >= every)
    }
}

/// How often a daemon with `[backup] every_hours` looks whether a backup is due.
const BACKUP_CHECK: Duration = Duration::from_secs(60);

struct Daemon<'a> {
    st: &'a State,
    json: bool,
    s: &'a DaemonSettings,
    /// The live root when last looked at (polling).
    last_root: ObjectId,
    /// When a change was seen that is not saved yet.
    changed_at: Option<Instant>,
    /// Something was saved (or pulled) that the remote may not have.
    unpushed: bool,
    push: Direction,
    pull: Direction,
    /// Watching (`Some`), or polling every `poll`.
    watcher: Option<notify::RecommendedWatcher>,
    /// The snapshot paths the watcher reported changed since the last save.
    changed: BTreeSet<Vec<u8>>,
    /// Events were lost (a queue overflow, a watch error): the next save is a full one.
    rescan: bool,
    /// What an incremental save builds on (`None`: the next save is a full one).
    base: Option<crate::live::save::SaveBase>,
    /// When the live state was last polled.
    polled: Option<Instant>,
    /// The first pull and push: one `poll` after the start (as when it always polled), so a
    /// change made as it starts is its own save, not a pull's auto-save.
    first_sync: Instant,
    /// A root's folder was replaced or is missing: it is watched again at every wakeup, and
    /// polled meanwhile.
    rewatch: bool,
    /// When `[backup] every_hours` was last checked (a due backup is made then).
    backup_checked: Option<Instant>,
    /// Times the loop woke up, full walks of the live state, and incremental saves, since it
    /// said `watching` (reported with `stopped`).
    wakeups: u64,
    full_scans: u64,
    incremental_saves: u64,
}

/// What wakes the loop: a file system event, or a stop signal.
enum Msg {
    Fs(notify::Result<notify::Event>),
    Signal,
}

/// Forwards SIGTERM and SIGINT to the loop, so that it sleeps until something happens instead
/// of waking to look at the signal flags.
fn forward_signals(tx: Sender<Msg>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("daemon-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if tx.send(Msg::Signal).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Error::Internal(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// The live roots as (filesystem folder, snapshot path).
fn roots(st: &State) -> [(std::path::PathBuf, &'static str); 3] {
    let p = st.paths();
    [
        (p.config_dir.clone(), "config"),
        (p.state_dir.join("sessions"), "state/sessions"),
        (p.state_dir.join("journal"), "state/journal"),
    ]
}

/// The snapshot path of a file system path the watcher reported, if it is in a live root.
fn snapshot_path(
    roots: &[(std::path::PathBuf, &'static str)],
    abs: &std::path::Path,
) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    roots.iter().find_map(|(dir, rel)| {
        let rest = abs.strip_prefix(dir).ok()?;
        let mut p = rel.as_bytes().to_vec();
        if !rest.as_os_str().is_empty() {
            p.push(b'/');
            p.extend_from_slice(rest.as_os_str().as_bytes());
        }
        Some(p)
    })
}

/// Starts watching the live roots (recursively) and the state folder (for a root created
/// later). Why not, when it cannot: too many watches, a file system without inotify, a missing
/// config folder.
fn start_watcher(
    st: &State,
    tx: Sender<Msg>,
) -> std::result::Result<notify::RecommendedWatcher, String> {
    use notify::{RecursiveMode, Watcher};
    let mut w = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        // Opening and reading a file (a save reads them) is not a change.
        if let Ok(ev) = &e
            && matches!(ev.kind, notify::EventKind::Access(_))
        {
            return;
        }
        let _ = tx.send(Msg::Fs(e));
    })
    .map_err(|e| e.to_string())?;
    let state_dir = &st.paths().state_dir;
    if state_dir.is_dir() {
        w.watch(state_dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("{}: {e}", state_dir.display()))?;
    }
    for (dir, _) in roots(st) {
        if dir.is_dir() {
            w.watch(&dir, RecursiveMode::Recursive)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        } else if dir == st.paths().config_dir {
            return Err(format!("{} is not a folder", dir.display()));
        }
    }
    Ok(w)
}

/// Runs `sync daemon` until a stop signal or `--max-runtime`.
///
/// # Errors
/// An unknown remote or a bad option at start (nothing happened); at the end, the failure a
/// retry could not fix (push first, then pull), or else the last push error if every push
/// failed (docs/sync.md, "Daemon").
pub(super) fn run(st: &State, json: bool, args: &DaemonArgs) -> Result<ExitCode> {
    let cfg = super::open::config();
    let s = args.apply(DaemonSettings::from_config(&cfg))?;
    // The agent feed (journal.agentd, docs/journal.md): the daemon's sender delivers what any
    // process appended, checking every second.
    let feed = cfg
        .journal
        .agentd
        .as_deref()
        .map(|a| {
            crate::journal::feed::Sender::start_polling(
                &st.paths().state_dir,
                a,
                Some(Duration::from_secs(1)),
            )
        })
        .transpose()?;
    let r = run_with(st, json, &s);
    if let Some(mut f) = feed {
        f.stop(Duration::from_millis(500));
    }
    r
}

impl DaemonSettings {
    /// The defaults with the config file's `[sync.daemon]` (and `sync.remote`) over them.
    fn from_config(c: &crate::config::Config) -> DaemonSettings {
        let d = DaemonSettings::default();
        DaemonSettings {
            remote: c.daemon.remote.clone().or_else(|| c.remote.clone()),
            poll: c.daemon.poll.unwrap_or(d.poll),
            debounce: c.daemon.debounce.unwrap_or(d.debounce),
            push_interval: c.daemon.push_interval.unwrap_or(d.push_interval),
            pull_interval: match c.daemon.pull_interval {
                Some(p) if p.is_zero() => None,
                Some(p) => Some(p),
                None => d.pull_interval,
            },
            max_runtime: None,
            watch: c.daemon.watch.unwrap_or(d.watch),
        }
    }
}

/// [`run`] with settings from anywhere.
///
/// # Errors
/// See [`run`].
pub(super) fn run_with(st: &State, json: bool, s: &DaemonSettings) -> Result<ExitCode> {
    if let Some(r) = &s.remote
        && !st.remotes()?.iter().any(|c| &c.name == r)
    {
        return Err(Error::UnknownRemote(r.clone()));
    }
    let signals = Signals::register()?;
    let (tx, rx) = std::sync::mpsc::channel();
    forward_signals(tx.clone())?;
    let started = Instant::now();
    let mut d = Daemon {
        st,
        json,
        s,
        last_root: st.live_root()?,
        changed_at: None,
        // Whatever was saved while no daemon ran is offered to the remote once; a push that
        // finds it up to date sends nothing and says nothing.
        unpushed: s.remote.is_some(),
        push: Direction::default(),
        pull: Direction::default(),
        watcher: None,
        changed: BTreeSet::new(),
        rescan: false,
        base: None,
        polled: None,
        first_sync: started + s.poll.max(Duration::from_millis(50)),
        rewatch: false,
        wakeups: 0,
        full_scans: 0,
        incremental_saves: 0,
        backup_checked: None,
    };
    // Watching starts before the first save, so that no change falls between the two.
    let why_not = if s.watch {
        match start_watcher(st, tx) {
            Ok(w) => {
                d.watcher = Some(w);
                None
            }
            Err(why) => Some(format!("watching could not start ({why})")),
        }
    } else {
        Some("sync.daemon.watch is false".to_owned())
    };
    d.start()?;
    // The counters cover the watching, not the save at start.
    d.full_scans = 0;
    d.say_watching(why_not.as_deref())?;
    let roots = roots(st);
    let reason = loop {
        if let Some(r) = signals.stop_reason() {
            break r;
        }
        if s.max_runtime.is_some_and(|m| started.elapsed() >= m) {
            break "max-runtime";
        }
        // Sleep until an event, a signal or the next thing due: nothing wakes an idle daemon
        // but its push and pull intervals (and, polling, the poll).
        let wake = d.next_due(started);
        let got = match wake {
            Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
            None => rx
                .recv()
                .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
        };
        d.wakeups += 1;
        let mut next = got.ok();
        while let Some(m) = next {
            d.take(m, &roots)?;
            next = rx.try_recv().ok();
        }
        if signals.stop_reason().is_some() {
            continue;
        }
        d.step(&signals)?;
    };
    // Events that arrived during the last step.
    while let Ok(m) = rx.try_recv() {
        d.take(m, &roots)?;
    }
    d.finish(reason)
}

impl Daemon<'_> {
    /// Prints one event: a timestamped line, or with `--json` one document with a `time`.
    fn say(&self, event: DaemonEvent<'_>, text: String) -> Result<()> {
        let time = now_rfc3339();
        if self.json {
            let line = DaemonLine { time, event };
            documents::print(&line)
        } else {
            out(format!("{time} {text}"));
            Ok(())
        }
    }

    /// Before watching: saves what changed since the last snapshot. A store with no history
    /// that will pull leaves its files to the pull, which adopts the remote's history rather
    /// than start one of its own that no other device shares; with no history and no files
    /// there is nothing to save.
    fn start(&mut self) -> Result<()> {
        let has_head = self.st.refs().get(HEAD)?.is_some();
        let will_pull = self.s.remote.is_some() && self.s.pull_interval.is_some();
        if has_head
            || (!will_pull
                && self.last_root
                    != crate::snapshot::write_trees(&crate::snapshot::Flat::with_roots(), None)?)
        {
            self.save("daemon: saved changes made while it was not running")?;
        }
        Ok(())
    }

    /// Says `watching`, with how: inotify, or polling and why.
    fn say_watching(&self, why_not: Option<&str>) -> Result<()> {
        let method = if self.watcher.is_some() {
            "inotify"
        } else {
            "poll"
        };
        let how = match why_not {
            None => "inotify".to_owned(),
            Some(w) => format!(
                "polling every {}s: {w}",
                self.s.poll.max(Duration::from_millis(50)).as_secs_f64()
            ),
        };
        self.say(
            DaemonEvent::Watching {
                remote: self.s.remote.as_deref(),
                method,
                fallback: why_not,
            },
            format!(
                "watching {} and {} for changes ({how})",
                self.st.paths().config_dir.display(),
                self.st.paths().state_dir.display()
            ),
        )
    }

    /// When the loop must wake next without an event: the end of a debounce, a pull or push
    /// due, the next poll, `max_runtime`. `None`: only an event or a signal.
    fn next_due(&self, started: Instant) -> Option<Instant> {
        let now = Instant::now();
        let mut due: Vec<Instant> = Vec::new();
        if let Some(t) = self.changed_at {
            due.push(t + self.s.debounce);
        }
        if self.s.remote.is_some() {
            if let Some(every) = self.s.pull_interval
                && !self.pull.stopped
            {
                due.push(self.pull.last.map_or(self.first_sync, |t| t + every));
            }
            if self.unpushed && !self.push.stopped {
                let every = self.s.push_interval.max(Duration::from_secs(1));
                due.push(self.push.last.map_or(self.first_sync, |t| t + every));
            }
        }
        if self.watcher.is_none() || self.rewatch {
            due.push(
                self.polled
                    .map_or(now, |t| t + self.s.poll.max(Duration::from_millis(50))),
            );
        }
        if let Some(m) = self.s.max_runtime {
            due.push(started + m);
        }
        if super::open::config().backup.every_hours.is_some() {
            due.push(
                self.backup_checked
                    .map_or(self.first_sync, |t| t + BACKUP_CHECK),
            );
        }
        due.into_iter().min()
    }

    /// Takes in one message: the changed paths of an event; a lost event or a watch error
    /// makes the next save a full one, and a watch limit reached falls back to polling.
    fn take(&mut self, m: Msg, roots: &[(std::path::PathBuf, &'static str)]) -> Result<()> {
        let Msg::Fs(e) = m else {
            return Ok(());
        };
        match e {
            Ok(ev) => {
                if ev.need_rescan() {
                    self.rescan = true;
                    self.changed_at = Some(Instant::now());
                }
                for p in &ev.paths {
                    if let Some(rel) = snapshot_path(roots, p) {
                        // A root created, moved or replaced is watched again and read whole.
                        if roots.iter().any(|(_, r)| r.as_bytes() == rel.as_slice()) {
                            self.rewatch = true;
                        }
                        self.changed.insert(rel);
                        self.changed_at = Some(Instant::now());
                    }
                    // Anything else (the store, in the state folder) is not live state.
                }
            }
            Err(err) => {
                if matches!(err.kind, notify::ErrorKind::MaxFilesWatch) && self.watcher.is_some() {
                    self.watcher = None;
                    self.say_watching(Some(&format!("watching stopped ({err})")))?;
                }
                self.rescan = true;
                self.changed_at = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Watches each root folder again (a folder moved away and made anew is another inode);
    /// while one is missing, `rewatch` stays set and the live state is polled.
    fn watch_roots(&mut self) {
        use notify::Watcher;
        let Some(w) = &mut self.watcher else {
            self.rewatch = false;
            return;
        };
        let mut missing = false;
        for (dir, _) in roots(self.st) {
            if dir.is_dir() {
                missing |= w.watch(&dir, notify::RecursiveMode::Recursive).is_err();
            } else {
                missing = true;
            }
        }
        self.rewatch = missing;
    }

    /// One wakeup: (polling) notice a change, save after the debounce, pull and push when
    /// due. A stop asked for during the save skips the rest: the stop pushes what is left.
    fn step(&mut self, signals: &Signals) -> Result<()> {
        if self.rewatch {
            self.watch_roots();
        }
        if (self.watcher.is_none() || self.rewatch)
            && self
                .polled
                .is_none_or(|t| t.elapsed() >= self.s.poll.max(Duration::from_millis(50)))
        {
            self.polled = Some(Instant::now());
            self.full_scans += 1;
            let root = self.st.live_root()?;
            if root != self.last_root {
                self.last_root = root;
                self.changed_at = Some(Instant::now());
                self.rescan = true;
            }
        }
        if self
            .changed_at
            .is_some_and(|t| t.elapsed() >= self.s.debounce)
        {
            self.save("daemon: saved on change")?;
        }
        if signals.stop_reason().is_some() {
            return Ok(());
        }
        if Instant::now() < self.first_sync {
            return Ok(());
        }
        if let (Some(r), Some(every)) = (self.s.remote.as_deref(), self.s.pull_interval)
            && self.pull.due(every)
        {
            // Never pull over unsaved work: save it now, debounce or not; when that save is
            // refused, the pull waits for the next interval.
            if self.changed_at.is_some() && !self.save("daemon: saved before a pull")? {
                self.pull.last = Some(Instant::now());
            } else {
                self.pull_from(r)?;
            }
        }
        if let Some(r) = self.s.remote.as_deref()
            && self.unpushed
            && self
                .push
                .due(self.s.push_interval.max(Duration::from_secs(1)))
        {
            self.push_to(r)?;
        }
        if let Some(hours) = super::open::config().backup.every_hours
            && self
                .backup_checked
                .is_none_or(|t| t.elapsed() >= BACKUP_CHECK)
        {
            self.backup_checked = Some(Instant::now());
            self.backup_if_due(hours)?;
        }
        Ok(())
    }

    /// `backup run --if-due` (`[backup] every_hours`, `recipients`): says `backed-up` when it
    /// wrote a bundle, `backup-failed` (and goes on: tried again at the next check) when not.
    fn backup_if_due(&mut self, hours: u32) -> Result<()> {
        let cfg = super::open::config().backup;
        let made = cfg
            .recipients
            .iter()
            .map(|k| {
                <age::x25519::Recipient as std::str::FromStr>::from_str(k)
                    .map_err(|e| Error::Usage(format!("bad age recipient '{k}': {e}")))
            })
            .collect::<Result<Vec<_>>>()
            .and_then(|recipients| {
                self.st.backup_run(&crate::backup::RunOptions {
                    recipients: &recipients,
                    if_older_than: Some(Duration::from_secs(u64::from(hours) * 3600)),
                    ..Default::default()
                })
            });
        match made {
            Ok(o) => {
                if let Some(b) = o.bundle {
                    self.say(
                        DaemonEvent::BackedUp { id: &b.id },
                        format!("backed up to {}", b.path.display()),
                    )?;
                }
            }
            Err(e) => self.say(
                DaemonEvent::BackupFailed {
                    error: e.to_string(),
                },
                format!("backup failed (will retry): {e}"),
            )?,
        }
        Ok(())
    }

    /// Saves the live state; says `saved` when that made a snapshot, `save-failed` (and goes
    /// on: retried at the next change) when it was refused. False when it failed.
    fn save(&mut self, message: &str) -> Result<bool> {
        self.changed_at = None;
        let changed = std::mem::take(&mut self.changed);
        let rescan = std::mem::replace(&mut self.rescan, false);
        // Watching, with every change reported since a save this daemon knows: only the
        // changed paths are read again. Otherwise (or when it cannot be sure) a full save.
        let incremental = match &mut self.base {
            Some(base) if self.watcher.is_some() && !rescan => {
                self.st.save_changed(message, base, &changed)
            }
            _ => Ok(None),
        };
        let saved = match incremental {
            Ok(Some((o, _))) => {
                self.incremental_saves += 1;
                Ok(o)
            }
            Ok(None) => {
                self.full_scans += 1;
                let o = self.st.save(&SaveOptions {
                    message: message.into(),
                    session: None,
                    ..Default::default()
                });
                // What the next incremental save builds on (one pass over the new head).
                self.base = if self.watcher.is_some() {
                    self.st.save_base().ok().flatten()
                } else {
                    None
                };
                o
            }
            Err(e) => Err(e),
        };
        if saved.is_err() {
            // The changed set is gone with the failed save: the retry reads everything.
            self.rescan = true;
        }
        match saved {
            Ok(o) => {
                if o.created {
                    self.unpushed = true;
                    let id = o.id.map(|i| i.to_hex()).unwrap_or_default();
                    let short = id[..12.min(id.len())].to_owned();
                    self.say(DaemonEvent::Saved { id }, format!("saved {short}"))?;
                }
                Ok(true)
            }
            // A refused save (an emptied root) must not stop the pushes of what was saved
            // (docs/sync.md, "Daemon").
            Err(e) => {
                self.say(
                    DaemonEvent::SaveFailed {
                        error: e.to_string(),
                    },
                    format!("save failed (will retry at the next change): {e}"),
                )?;
                Ok(false)
            }
        }
    }

    fn pull_from(&mut self, r: &str) -> Result<()> {
        self.pull.last = Some(Instant::now());
        self.pull.attempts += 1;
        let before = self.st.refs().get(HEAD)?;
        let t = super::progress::Transfer::new("pull");
        let pulled = self
            .st
            .sync_pull(r, &PullOptions::default(), &|d, n| t.report(d, n));
        drop(t);
        match pulled {
            Ok(p) => {
                self.pull.successes += 1;
                // The pull rewrote live files: that is not a change to save.
                if self.watcher.is_none() {
                    self.last_root = self.st.live_root()?;
                    self.changed_at = None;
                }
                if self.st.refs().get(HEAD)? != before {
                    // A merge (or an auto-save) is news for the other devices too.
                    self.unpushed = true;
                }
                if brought_something(&p) {
                    self.say(pulled_event(r, &p), pulled_text(r, &p))?;
                }
            }
            Err(e) => {
                let retryable = e.retryable();
                self.say(
                    DaemonEvent::PullFailed {
                        remote: r,
                        error: e.to_string(),
                        retryable,
                    },
                    if retryable {
                        format!("pull from {r} failed (will retry): {e}")
                    } else {
                        format!(
                            "pull from {r} failed and will not be retried (pulling stopped; saving and pushing go on): {e}"
                        )
                    },
                )?;
                self.pull.stopped = !retryable;
                self.pull.last_error = Some(e);
            }
        }
        Ok(())
    }

    fn push_to(&mut self, r: &str) -> Result<()> {
        // Tried again after `push_interval` when it fails, not at every poll.
        self.push.last = Some(Instant::now());
        self.push.attempts += 1;
        let t = super::progress::Transfer::new("push");
        let pushed = self.st.sync_push(r, &|d, n| t.report(d, n));
        drop(t);
        match pushed {
            Ok(p) => {
                self.push.successes += 1;
                self.unpushed = false;
                if !p.refs_updated.is_empty() {
                    self.say(
                        DaemonEvent::Pushed {
                            remote: r,
                            objects: p.sent.objects,
                        },
                        format!("pushed to {r}: {} objects", p.sent.objects),
                    )?;
                }
            }
            Err(e) => {
                let retryable = e.retryable();
                self.say(
                    DaemonEvent::PushFailed {
                        remote: r,
                        error: e.to_string(),
                        retryable,
                    },
                    if retryable {
                        format!("push to {r} failed (will retry): {e}")
                    } else {
                        format!(
                            "push to {r} failed and will not be retried (pushing stopped; saving goes on): {e}"
                        )
                    },
                )?;
                self.push.stopped = !retryable;
                self.push.last_error = Some(e);
            }
        }
        Ok(())
    }

    /// The clean stop: save what is pending (debounce or not), push what is unpushed, say
    /// `stopped`, and end with the failure the run comes to, if any.
    fn finish(mut self, reason: &str) -> Result<ExitCode> {
        let pending = if self.watcher.is_some() {
            self.changed_at.is_some() || self.rescan || !self.changed.is_empty()
        } else {
            self.changed_at.is_some() || self.st.live_root()? != self.last_root
        };
        if pending {
            self.save("daemon: saved on stop")?;
        }
        if let Some(r) = self.s.remote.as_deref()
            && self.unpushed
            && !self.push.stopped
        {
            self.push_to(r)?;
        }
        let failure = if self.push.stopped {
            self.push.last_error.take()
        } else if self.pull.stopped {
            self.pull.last_error.take()
        } else if self.push.attempts > 0 && self.push.successes == 0 {
            self.push.last_error.take()
        } else {
            None
        };
        let code = failure.as_ref().map_or(exit::SUCCESS, exit::of);
        self.say(
            DaemonEvent::Stopped {
                reason,
                exit_code: code,
                wakeups: self.wakeups,
                full_scans: self.full_scans,
                incremental_saves: self.incremental_saves,
            },
            format!("stopped ({reason}), exit {code}"),
        )?;
        failure.map_or(Ok(ExitCode::SUCCESS), Err)
    }
}

/// Whether a pull fetched or integrated anything (an idle pull says nothing).
fn brought_something(p: &PullReport) -> bool {
    p.received.objects > 0
        || p.adopted.is_some()
        || !p.fast_forwarded.is_empty()
        || !p.merged.is_empty()
        || p.files_changed > 0
        || !p.conflicts.is_empty()
}

fn pulled_event<'a>(r: &'a str, p: &'a PullReport) -> DaemonEvent<'a> {
    DaemonEvent::Pulled {
        remote: r,
        objects: p.received.objects,
        adopted: p.adopted.as_deref(),
        fast_forwarded: &p.fast_forwarded,
        merged: &p.merged,
        sessions_updated: &p.sessions_updated,
        files_changed: p.files_changed,
        conflicts: p.conflicts.len(),
        open_conflicts: p.open_conflicts,
    }
}

fn pulled_text(r: &str, p: &PullReport) -> String {
    let mut t = format!(
        "pulled from {r}: {} objects, {} files changed",
        p.received.objects, p.files_changed
    );
    if let Some(d) = &p.adopted {
        t.push_str(&format!(", adopted {d}"));
    }
    for d in &p.fast_forwarded {
        t.push_str(&format!(", fast-forwarded to {d}"));
    }
    for d in &p.merged {
        t.push_str(&format!(", merged {d}"));
    }
    if !p.conflicts.is_empty() {
        t.push_str(&format!(
            ", {} new conflict(s): 'shelldone conflicts'",
            p.conflicts.len()
        ));
    }
    t
}
