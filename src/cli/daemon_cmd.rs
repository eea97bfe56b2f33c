//! `shelldone sync daemon`: save on change, push and pull on an interval, stop cleanly.
//!
//! The loop (docs/sync.md, "Daemon"):
//! - at start, a remote that is not configured is refused (exit 2) before anything happens;
//!   then what changed while no daemon ran is saved at once;
//! - every `poll` it computes the live root (a stat-cache walk: unchanged files are not read,
//!   nothing is written) and saves once the state has been quiet for `debounce`;
//! - every `pull_interval` it pulls (saving pending changes first, so a pull never meets
//!   unsaved work), and at most every `push_interval` it pushes what was saved;
//! - on SIGTERM or SIGINT (or at `max_runtime`) it lets the step under way finish, saves what
//!   is still pending, pushes what is unpushed, says `stopped` and exits. A second signal ends
//!   it at once (the default action), for a shutdown that hangs.
//!
//! The settings arrive as one [`DaemonSettings`]; the command line fills it from its options
//! ([`DaemonArgs::apply`]) over [`DaemonSettings::default`], and a config file can be one more
//! layer underneath.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

struct Daemon<'a> {
    st: &'a State,
    json: bool,
    s: &'a DaemonSettings,
    /// The live root when last looked at.
    last_root: ObjectId,
    /// When a change was seen that is not saved yet.
    changed_at: Option<Instant>,
    /// Something was saved (or pulled) that the remote may not have.
    unpushed: bool,
    push: Direction,
    pull: Direction,
}

/// Runs `sync daemon` until a stop signal or `--max-runtime`.
///
/// # Errors
/// An unknown remote or a bad option at start (nothing happened); at the end, the failure a
/// retry could not fix (push first, then pull), or else the last push error if every push
/// failed (docs/sync.md, "Daemon").
pub(super) fn run(st: &State, json: bool, args: &DaemonArgs) -> Result<ExitCode> {
    let s = args.apply(DaemonSettings::from_config(&super::open::config()))?;
    run_with(st, json, &s)
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
    };
    d.start()?;
    d.say(
        DaemonEvent::Watching {
            remote: s.remote.as_deref(),
        },
        format!(
            "watching {} and {} for changes",
            st.paths().config_dir.display(),
            st.paths().state_dir.display()
        ),
    )?;
    let reason = loop {
        if let Some(r) = signals.stop_reason() {
            break r;
        }
        if s.max_runtime.is_some_and(|m| started.elapsed() >= m) {
            break "max-runtime";
        }
        // In slices, so a stop signal is seen within 50 ms (a sleep is resumed after the
        // signal handler returns, not cut short).
        let mut wake = Instant::now() + s.poll.max(Duration::from_millis(50));
        if let Some(m) = s.max_runtime {
            wake = wake.min(started + m);
        }
        while signals.stop_reason().is_none()
            && let Some(left) = wake.checked_duration_since(Instant::now())
        {
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        if signals.stop_reason().is_some() {
            continue;
        }
        d.step(&signals)?;
    };
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

    /// One poll: notice a change, save after the debounce, pull and push when due. A stop
    /// asked for during the save skips the rest: the stop pushes what is left.
    fn step(&mut self, signals: &Signals) -> Result<()> {
        let root = self.st.live_root()?;
        if root != self.last_root {
            self.last_root = root;
            self.changed_at = Some(Instant::now());
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
        Ok(())
    }

    /// Saves the live state; says `saved` when that made a snapshot, `save-failed` (and goes
    /// on: retried at the next change) when it was refused. False when it failed.
    fn save(&mut self, message: &str) -> Result<bool> {
        self.changed_at = None;
        let saved = self.st.save(&SaveOptions {
            message: message.into(),
            session: None,
            ..Default::default()
        });
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
                self.last_root = self.st.live_root()?;
                self.changed_at = None;
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
        if self.changed_at.is_some() || self.st.live_root()? != self.last_root {
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
