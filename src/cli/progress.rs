//! Progress on stderr (docs/cli.md, "Progress"): a bar on a terminal (indicatif) with objects,
//! bytes, rate and — where the total is known — an ETA; NDJSON events with `--json`; nothing
//! with `-q`, `--progress never`, or when stderr is not a terminal (unless `--progress always`,
//! which then prints a plain line per interval).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::args::{Cli, ColorArg};
use super::output;
use crate::progress::Progress;

/// How a reporter shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An indicatif bar on the terminal.
    Bar,
    /// One plain line per interval (`--progress always` off a terminal).
    Lines,
    /// NDJSON events (`--json`).
    Json,
}

/// The state of the phase under way.
#[derive(Debug)]
struct Current {
    phase: &'static str,
    objects_total: Option<u64>,
    bytes_total: Option<u64>,
    objects: u64,
    bytes: u64,
    started: Instant,
    /// When the last event or line was written (`None`: none yet).
    last: Option<Instant>,
    bar: Option<indicatif::ProgressBar>,
}

impl Current {
    /// What the phase counts: files (save, restore) or objects.
    fn unit(&self) -> &'static str {
        match self.phase {
            "save" | "restore" => "files",
            _ => "objects",
        }
    }
}

/// The CLI's [`Progress`].
#[derive(Debug)]
pub(super) struct Reporter {
    mode: Mode,
    /// Least time between two events or lines; with `--json` and `--progress auto`, also how
    /// long a phase runs before its first event (short commands print none).
    interval: Duration,
    /// Events from the start of a phase (`--progress always`), not only after `interval`.
    eager: bool,
    cur: Mutex<Option<Current>>,
}

impl Reporter {
    /// The reporter the global options ask for, or `None` for no progress at all.
    ///
    /// # Errors
    /// A bad `SHELLDONE_PROGRESS_INTERVAL`.
    pub(super) fn for_cli(cli: &Cli) -> crate::Result<Option<Reporter>> {
        let interval = crate::config::env_seconds("SHELLDONE_PROGRESS_INTERVAL")?
            .unwrap_or(Duration::from_secs(1));
        let tty = std::io::stderr().is_terminal();
        let mode = match (cli.progress, cli.json) {
            (ColorArg::Never, _) => return Ok(None),
            _ if output::quiet() => return Ok(None),
            (_, true) => Mode::Json,
            (_, false) if tty => Mode::Bar,
            (ColorArg::Always, false) => Mode::Lines,
            (ColorArg::Auto, false) => return Ok(None),
        };
        Ok(Some(Reporter {
            mode,
            interval,
            eager: cli.progress == ColorArg::Always,
            cur: Mutex::new(None),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.cur
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `12/340 files, 3.1 MiB/80.0 MiB`, without a total that is not known.
fn counts(c: &Current) -> String {
    let of = |n: u64, t: Option<u64>, f: &dyn Fn(u64) -> String| match t {
        Some(t) => format!("{}/{}", f(n), f(t)),
        None => f(n),
    };
    let what = c.unit();
    let mut s = format!(
        "{} {what}",
        of(c.objects, c.objects_total, &|n| n.to_string())
    );
    if c.bytes > 0 || c.bytes_total.is_some_and(|b| b > 0) {
        s.push_str(&format!(", {}", of(c.bytes, c.bytes_total, &output::bytes)));
    }
    s
}

/// Bytes (or objects) per second and the time left, when a total says how much is left.
fn rate_eta(c: &Current) -> (f64, f64, Option<Duration>) {
    let secs = c.started.elapsed().as_secs_f64().max(1e-3);
    let (bps, ops) = (c.bytes as f64 / secs, c.objects as f64 / secs);
    let eta = match (c.bytes_total, c.objects_total) {
        (Some(t), _) if t > 0 && c.bytes > 0 => Some(Duration::from_secs_f64(
            (t.saturating_sub(c.bytes)) as f64 / bps,
        )),
        (_, Some(t)) if t > 0 && c.objects > 0 => Some(Duration::from_secs_f64(
            (t.saturating_sub(c.objects)) as f64 / ops,
        )),
        _ => None,
    };
    (bps, ops, eta)
}

/// What follows the bar's numbers: the count of files or objects (with its total when the bar
/// moves with bytes), or the bytes when the bar counts objects.
fn bar_message(c: &Current) -> String {
    let files = c.unit();
    if c.bytes_total.is_some_and(|t| t > 0) {
        let total = c.objects_total.map_or(String::new(), |t| format!("/{t}"));
        format!("{}{total} {files}", c.objects)
    } else if c.bytes > 0 {
        format!("{files}, {}", output::bytes(c.bytes))
    } else {
        files.to_owned()
    }
}

fn event(c: &Current, done: bool) -> String {
    let (bps, _, eta) = rate_eta(c);
    let doc = serde_json::json!({
        "progress": c.phase,
        "objects": c.objects,
        "objects_total": c.objects_total,
        "bytes": c.bytes,
        "bytes_total": c.bytes_total,
        "elapsed_ms": u64::try_from(c.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "bytes_per_second": bps.round() as u64,
        "eta_ms": eta.map(|e| u64::try_from(e.as_millis()).unwrap_or(u64::MAX)),
        "done": done,
    });
    doc.to_string()
}

fn line(c: &Current) -> String {
    let (bps, ops, eta) = rate_eta(c);
    let rate = if c.bytes > 0 {
        format!("{}/s", output::bytes(bps as u64))
    } else {
        format!("{ops:.0} {}/s", c.unit())
    };
    let eta = eta.map_or(String::new(), |e| format!(", ETA {}s", e.as_secs()));
    format!("{}: {} ({rate}{eta})", c.phase, counts(c))
}

impl Progress for Reporter {
    fn begin(&self, phase: &'static str, objects: Option<u64>, bytes: Option<u64>) {
        let mut cur = self.lock();
        // A phase inside a phase (a pull's restore): the outer one's bar gives way.
        if let Some(c) = cur.take()
            && let Some(b) = c.bar
        {
            b.finish_and_clear();
        }
        let bar = (self.mode == Mode::Bar).then(|| {
            let (len, tmpl) = match (bytes, objects) {
                // Bytes known: the bar moves with bytes (big files weigh what they weigh).
                (Some(b), _) if b > 0 => (
                    Some(b),
                    "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {msg} ({bytes_per_sec}, ETA {eta})",
                ),
                (_, Some(o)) if o > 0 => (
                    Some(o),
                    "{prefix:>8} [{bar:30}] {pos}/{len} {msg} ({per_sec}, ETA {eta})",
                ),
                // No total: a spinner with counts and rate, never `148/0`.
                _ => (None, "{prefix:>8} {spinner} {pos} {msg} ({per_sec}, {elapsed})"),
            };
            // Drawn only once it is complete: prefix, style and message first, then the terminal.
            let pb = indicatif::ProgressBar::with_draw_target(
                len,
                indicatif::ProgressDrawTarget::hidden(),
            );
            pb.set_style(
                indicatif::ProgressStyle::with_template(tmpl)
                    .expect("static template")
                    .progress_chars("=> "),
            );
            pb.set_prefix(phase);
            pb
        });
        let c = Current {
            phase,
            objects_total: objects,
            bytes_total: bytes,
            objects: 0,
            bytes: 0,
            started: Instant::now(),
            last: None,
            bar,
        };
        // The first frame already says what is counted.
        if let Some(b) = &c.bar {
            b.set_message(bar_message(&c));
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(8));
        }
        if self.eager {
            self.emit(&c, false);
        }
        *cur = Some(Current {
            last: self.eager.then(Instant::now),
            ..c
        });
    }

    fn advance(&self, objects: u64, bytes: u64) {
        let mut cur = self.lock();
        let Some(c) = cur.as_mut() else { return };
        c.objects += objects;
        c.bytes += bytes;
        if let Some(b) = &c.bar {
            let by_bytes = c.bytes_total.is_some_and(|t| t > 0);
            b.set_position(if by_bytes { c.bytes } else { c.objects });
            b.set_message(bar_message(c));
            return;
        }
        let due = match c.last {
            Some(t) => t.elapsed() >= self.interval,
            None => c.started.elapsed() >= self.interval,
        };
        if due {
            c.last = Some(Instant::now());
            self.emit(c, false);
        }
    }

    fn end(&self) {
        let Some(c) = self.lock().take() else { return };
        match &c.bar {
            Some(b) => b.finish_and_clear(),
            // The last event says it is done, when any event was written for this phase.
            None if c.last.is_some() || self.eager => self.emit(&c, true),
            None => {}
        }
    }
}

impl Reporter {
    fn emit(&self, c: &Current, done: bool) {
        let text = match self.mode {
            Mode::Json => event(c, done),
            Mode::Lines => line(c),
            Mode::Bar => return,
        };
        let _ = writeln!(std::io::stderr(), "{text}");
    }
}

/// The reporter of this process, once the store is open (one command per process).
static REPORTER: std::sync::OnceLock<std::sync::Arc<Reporter>> = std::sync::OnceLock::new();

/// Installs the reporter the global options ask for on `st`.
///
/// # Errors
/// A bad `SHELLDONE_PROGRESS_INTERVAL`.
pub(super) fn install(cli: &Cli, st: &mut crate::State) -> crate::Result<()> {
    if let Some(r) = Reporter::for_cli(cli)? {
        let r = REPORTER.get_or_init(|| std::sync::Arc::new(r)).clone();
        st.set_progress(r);
    }
    Ok(())
}

/// Adapts a remote's progress callback (objects done, total if known) to the reporter, as
/// phase `phase`; ends the phase when dropped.
#[derive(Debug)]
pub(super) struct Transfer {
    phase: &'static str,
    seen: std::sync::atomic::AtomicU64,
    begun: std::sync::atomic::AtomicBool,
}

impl Transfer {
    pub(super) fn new(phase: &'static str) -> Transfer {
        Transfer {
            phase,
            seen: std::sync::atomic::AtomicU64::new(0),
            begun: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The callback body.
    pub(super) fn report(&self, done: u64, total: Option<u64>) {
        use std::sync::atomic::Ordering;
        let Some(r) = REPORTER.get() else { return };
        if !self.begun.swap(true, Ordering::Relaxed) {
            r.begin(self.phase, total, None);
        }
        let before = self.seen.swap(done, Ordering::Relaxed);
        r.advance(done.saturating_sub(before), 0);
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if self.begun.load(std::sync::atomic::Ordering::Relaxed)
            && let Some(r) = REPORTER.get()
        {
            r.end();
        }
    }
}
