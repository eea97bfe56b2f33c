//! The Continuum journal: an append-only log of events (`<state>/journal/`, the snapshot root
//! `state/journal`), one JSON line per event (schema [`SCHEMA_VERSION`], [`Event`]).
//!
//! - **Segments.** Events go to `seg-YYYYMMDD-NNNNNN.jsonl`; a segment is sealed when it would
//!   pass [`Options::segment_bytes`] or the UTC day changes, and a sealed segment is never
//!   written again, so a save after appends stores only the active segment's new content.
//!   Other `*.jsonl` files in the folder (the files of earlier versions, `shelldone generate`'s
//!   demo files) are read as legacy events and merged line by line as before.
//! - **Several writers.** Processes append through one kernel `flock` on `<state>/.journal.lock`
//!   (outside every snapshot root), which also names the active segment, so a process whose
//!   segment another one sealed moves on to the new one.
//! - **Crash safety.** A line is one `write` to an `O_APPEND` file. A torn last line (power loss,
//!   a writer killed inside a large write) is found when the journal is opened or before the
//!   next append, moved to `<state>/journal-torn/` and cut off, so it never fuses with the next
//!   event and earlier lines are never touched.
//! - **Group commit.** An append returns once the line is written; a background thread
//!   `fdatasync`s batches so that every event is durable within [`Options::durability`]
//!   ([`Duration::ZERO`]: the append itself syncs). [`Journal::flush`] waits for it.
//! - **Agent feed.** With [`Options::agentd`], a background sender ([`feed`]) posts each event
//!   to `shelldone-agentd`; the append never waits for it.
//!
//! docs/journal.md describes the format, durability and the feed.

pub mod feed;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::durable;

/// The version of the event schema this shelldone writes (`"v"` of every event).
pub const SCHEMA_VERSION: u32 = 1;
/// The journal's folder in the state dir.
pub const DIR: &str = "journal";
/// The lock file (outside every snapshot root) naming the active segment.
pub const LOCK_FILE: &str = ".journal.lock";
/// Where torn lines are set aside.
pub const TORN_DIR: &str = "journal-torn";
/// The largest event line accepted (1 MiB).
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// The default size at which a segment is sealed (8 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;
/// The default durability bound of the library (the CLI's `journal append` syncs each event).
pub const DEFAULT_DURABILITY: Duration = Duration::from_millis(20);

/// One event, as stored (one JSON line; field order as here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The schema version ([`SCHEMA_VERSION`]; 0 for a legacy line).
    pub v: u32,
    /// A unique id: 32 hex digits, random (not derived from the content).
    pub id: String,
    /// When it was appended: RFC 3339 UTC with microseconds (`2026-12-01T06:40:00.123456Z`).
    pub time: String,
    /// What happened (`command`, `sigma.guard`, …; free text).
    pub kind: String,
    /// The terminal session it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Spectral tags (`sigma::guard`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Any JSON.
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// What a caller appends; the journal adds the version, id and time.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// See [`Event::kind`].
    pub kind: String,
    /// See [`Event::session`].
    pub session: Option<String>,
    /// See [`Event::tags`].
    pub tags: Vec<String>,
    /// See [`Event::payload`].
    pub payload: serde_json::Value,
}

/// How a journal is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Every event is durable (fdatasync'd) at most this long after its append returns;
    /// [`Duration::ZERO`] syncs inside the append.
    pub durability: Duration,
    /// A segment is sealed when an append would make it larger than this.
    pub segment_bytes: u64,
    /// `journal.agentd`: where the agent feed posts (`127.0.0.1:17717`); `None`: no feed.
    pub agentd: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: DEFAULT_DURABILITY,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            agentd: None,
        }
    }
}

/// The receipt of one append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appended {
    /// The event's id.
    pub id: String,
    /// Its time.
    pub time: String,
    /// The segment it went to.
    pub segment: String,
    /// This handle's append number (1, 2, …): durable once [`Journal::durable_count`]'s first
    /// value reaches it.
    pub seq: u64,
}

/// What opening found: torn lines set aside (the files they were moved to).
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// One file per torn tail cut off.
    pub set_aside: Vec<PathBuf>,
}

/// An open journal: appends from any thread; dropped, it syncs what is left and stops its
/// threads (each wait bounded).
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    syncer: Option<std::thread::JoinHandle<()>>,
    feed: Option<feed::Sender>,
    report: OpenReport,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    torn_dir: PathBuf,
    lock: File,
    w: Mutex<Writer>,
    wake: Condvar,
    synced: Condvar,
    opts: Options,
}

#[derive(Debug)]
struct Writer {
    file: Arc<File>,
    name: String,
    /// The segment's length after this process's last write (another writer or a torn tail
    /// makes the file's length differ).
    end: u64,
    written: u64,
    synced: u64,
    dirty_since: Option<Instant>,
    stop: bool,
    error: Option<String>,
    set_aside: Vec<PathBuf>,
}

/// Holds the cross-process journal lock; released on drop.
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn take(f: &'a File) -> std::io::Result<Flock<'a>> {
        rustix::fs::flock(f, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(Flock(f))
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0, rustix::fs::FlockOperation::Unlock);
    }
}

/// Opens (creating, never truncating) a file the journal's writers or the feed's senders
/// `flock` to take turns.
///
/// # Errors
/// I/O errors, naming the file.
pub(crate) fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io(path, e))
}

pub(crate) fn io(path: &Path, e: std::io::Error) -> Error {
    Error::File {
        op: "writing",
        path: path.to_path_buf(),
        during: "journal",
        source: e,
    }
}

impl Journal {
    /// Opens (creating if needed) the journal of `state_dir`: finds the active segment and sets
    /// aside a torn last line; starts the syncer and, with [`Options::agentd`], the feed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(state_dir: &Path, opts: Options) -> Result<Journal> {
        let dir = state_dir.join(DIR);
        durable::create_dir_all_durable(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = state_dir.join(LOCK_FILE);
        let lock = open_lock_file(&lock_path)?;
        let torn_dir = state_dir.join(TORN_DIR);
        let (file, name, end, set_aside) = {
            let _l = Flock::take(&lock).map_err(|e| io(&lock_path, e))?;
            let mut set_aside = Vec::new();
            // The segment the lock file names, if a newer one takes over: sealed from now on,
            // so its torn tail (if any) is cut now.
            if let Some(prev) = read_lock_name(&lock)
                && segments(&dir)?.last() != Some(&prev)
                && let Ok(f) = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(dir.join(&prev))
            {
                cut_torn_tail(&f, &dir.join(&prev), &torn_dir, &mut set_aside)?;
            }
            let name = active_name(&lock, &dir)?;
            let (file, name) = open_segment(&dir, &name)?;
            let end = cut_torn_tail(&file, &dir.join(&name), &torn_dir, &mut set_aside)?;
            (file, name, end, set_aside)
        };
        let shared = Arc::new(Shared {
            dir,
            torn_dir,
            lock,
            w: Mutex::new(Writer {
                file: Arc::new(file),
                name,
                end,
                written: 0,
                synced: 0,
                dirty_since: None,
                stop: false,
                error: None,
                set_aside: Vec::new(),
            }),
            wake: Condvar::new(),
            synced: Condvar::new(),
            opts: opts.clone(),
        });
        let syncer = if opts.durability.is_zero() {
            None
        } else {
            let s = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("journal-sync".into())
                    .spawn(move || s.sync_loop())
                    .map_err(|e| io(&shared.dir, e))?,
            )
        };
        let feed = opts
            .agentd
            .as_ref()
            .map(|addr| feed::Sender::start(state_dir, addr))
            .transpose()?;
        Ok(Journal {
            shared,
            syncer,
            feed,
            report: OpenReport { set_aside },
        })
    }

    /// What opening found.
    #[must_use]
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Torn lines set aside since open, before appends (another writer's torn tail).
    #[must_use]
    pub fn set_aside_since_open(&self) -> Vec<PathBuf> {
        self.shared.lock_w().set_aside.clone()
    }

    /// Appends one event. Returns once the line is written (and, with a zero durability bound,
    /// synced); never waits for the agent feed.
    ///
    /// # Errors
    /// [`Error::Usage`] for an event larger than [`MAX_EVENT_BYTES`] or an empty kind; I/O
    /// errors (a failed background sync is reported by the next append or [`Journal::flush`]).
    pub fn append(&self, ev: NewEvent) -> Result<Appended> {
        if ev.kind.trim().is_empty() {
            return Err(Error::Usage("a journal event needs a kind".into()));
        }
        let event = Event {
            v: SCHEMA_VERSION,
            id: new_id(),
            time: now_rfc3339(),
            kind: ev.kind,
            session: ev.session,
            tags: ev.tags,
            payload: ev.payload,
        };
        let mut line = serde_json::to_vec(&event)
            .map_err(|e| Error::Internal(format!("event does not serialize: {e}")))?;
        line.push(b'\n');
        if line.len() > MAX_EVENT_BYTES {
            return Err(Error::Usage(format!(
                "journal event of {} bytes: the limit is {MAX_EVENT_BYTES}",
                line.len()
            )));
        }
        let s = &self.shared;
        let (seq, segment, file) = {
            let mut w = s.lock_w();
            if let Some(e) = w.error.take() {
                return Err(io(&s.dir, std::io::Error::other(e)));
            }
            let lock_path = s.dir.with_file_name(LOCK_FILE);
            let _l = Flock::take(&s.lock).map_err(|e| io(&lock_path, e))?;
            s.prepare(&mut w, line.len() as u64)?;
            let path = s.dir.join(&w.name);
            (&*w.file).write_all(&line).map_err(|e| io(&path, e))?;
            w.end += line.len() as u64;
            w.written += 1;
            if w.dirty_since.is_none() {
                w.dirty_since = Some(Instant::now());
            }
            (w.written, w.name.clone(), Arc::clone(&w.file))
        };
        if s.opts.durability.is_zero() {
            file.sync_data().map_err(|e| io(&s.dir.join(&segment), e))?;
            let mut w = s.lock_w();
            w.synced = w.synced.max(seq);
        } else {
            s.wake.notify_one();
        }
        if let Some(f) = &self.feed {
            f.notify();
        }
        Ok(Appended {
            id: event.id,
            time: event.time,
            segment,
            seq,
        })
    }

    /// Waits until every event appended so far is durable (at most 30 s).
    ///
    /// # Errors
    /// A failed sync, or the syncer not finishing in time.
    pub fn flush(&self) -> Result<()> {
        let s = &self.shared;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut w = s.lock_w();
        let target = w.written;
        while w.synced < target {
            if let Some(e) = w.error.take() {
                return Err(io(&s.dir, std::io::Error::other(e)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io(
                    &s.dir,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "sync did not finish"),
                ));
            }
            s.wake.notify_one();
            w = s
                .synced
                .wait_timeout(w, left.min(Duration::from_millis(100)))
                .expect("no panics while held")
                .0;
        }
        Ok(())
    }

    /// How many of this handle's appends are durable, and how many were appended.
    #[must_use]
    pub fn durable_count(&self) -> (u64, u64) {
        let w = self.shared.lock_w();
        (w.synced, w.written)
    }

    /// The agent feed's sender, when one runs.
    #[must_use]
    pub fn feed(&self) -> Option<&feed::Sender> {
        self.feed.as_ref()
    }

    /// Stops the agent feed after a last delivery pass, waiting at most `budget`; its totals
    /// (`None`: no feed runs). What it did not deliver stays after the durable cursor, for the
    /// next sender.
    pub fn close_feed(&mut self, budget: Duration) -> Option<feed::SenderStats> {
        let mut f = self.feed.take()?;
        f.stop(budget);
        Some(f.stats())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        {
            let mut w = self.shared.lock_w();
            w.stop = true;
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
        if let Some(mut f) = self.feed.take() {
            f.stop(Duration::from_millis(500));
        }
    }
}

impl Shared {
    fn lock_w(&self) -> MutexGuard<'_, Writer> {
        self.w.lock().expect("no panics while held")
    }

    /// Under the journal lock, before a write of `len` bytes: follow another writer's
    /// rotation, cut a torn tail, and seal the segment when it is full or from another day.
    fn prepare(&self, w: &mut Writer, len: u64) -> Result<()> {
        let active = read_lock_name(&self.lock);
        if active.as_deref() != Some(w.name.as_str()) {
            let name = active.unwrap_or_else(|| w.name.clone());
            let (file, name) = open_segment(&self.dir, &name)?;
            // What this process wrote to the old segment was synced by the writer that sealed it.
            w.synced = w.written;
            w.file = Arc::new(file);
            w.name = name;
            w.end = u64::MAX;
        }
        let path = self.dir.join(&w.name);
        let size = w.file.metadata().map_err(|e| io(&path, e))?.len();
        if size != w.end {
            w.end = cut_torn_tail(&w.file, &path, &self.torn_dir, &mut w.set_aside)?;
        }
        let today = days_now();
        let full = w.end > 0 && w.end + len > self.opts.segment_bytes;
        if full || segment_day(&w.name) != Some(today) {
            w.file.sync_data().map_err(|e| io(&path, e))?;
            w.synced = w.written;
            let next = next_segment_name(&w.name, today);
            let p = self.dir.join(&next);
            let (f, _) = open_segment(&self.dir, &next)?;
            durable::sync_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
            write_lock_name(&self.lock, &next).map_err(|e| io(&self.dir, e))?;
            // The next segment may exist already: a writer killed between creating it and
            // naming it in the lock file, with a torn line written into it since.
            w.end = cut_torn_tail(&f, &p, &self.torn_dir, &mut w.set_aside)?;
            w.file = Arc::new(f);
            w.name = next;
        }
        Ok(())
    }

    /// The syncer: waits for unsynced appends, lets a batch gather for a quarter of the bound,
    /// then syncs it. Every wait is bounded; it ends on stop once everything is synced.
    fn sync_loop(&self) {
        let window = self.opts.durability / 4;
        loop {
            let mut w = self.lock_w();
            while w.written == w.synced && !w.stop {
                w = self
                    .wake
                    .wait_timeout(w, Duration::from_secs(1))
                    .expect("no panics while held")
                    .0;
            }
            if w.written == w.synced && w.stop {
                return;
            }
            let due = w.dirty_since.map(|t| t + window);
            drop(w);
            if let Some(due) = due {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep((due - now).min(window));
                }
            }
            let (upto, file) = {
                let w = self.lock_w();
                (w.written, Arc::clone(&w.file))
            };
            let r = file.sync_data();
            let mut w = self.lock_w();
            match r {
                Ok(()) => {
                    w.synced = w.synced.max(upto);
                    w.dirty_since = (w.synced < w.written).then(Instant::now);
                }
                Err(e) => {
                    w.error = Some(e.to_string());
                    // Nothing more can be promised; let waiters see the error.
                    w.synced = w.written;
                    w.dirty_since = None;
                }
            }
            drop(w);
            self.synced.notify_all();
        }
    }
}

/// The active segment's name: the newest segment in `dir` (a writer killed between creating
/// a segment and naming it in the lock file left a newer one than the lock names: it becomes
/// active, so that no older segment is written after a newer one exists), else a new one for
/// today. Written to the lock file when it differs.
fn active_name(lock: &File, dir: &Path) -> Result<String> {
    let newest = segments(dir)?.pop();
    if let Some(n) = read_lock_name(lock)
        && newest.as_ref() == Some(&n)
    {
        return Ok(n);
    }
    let name = newest.unwrap_or_else(|| next_segment_name("", days_now()));
    write_lock_name(lock, &name).map_err(|e| io(dir, e))?;
    Ok(name)
}

fn read_lock_name(lock: &File) -> Option<String> {
    let mut buf = [0u8; 64];
    let n = lock.read_at(&mut buf, 0).ok()?;
    let s = std::str::from_utf8(&buf[..n]).ok()?.trim();
    is_segment(s).then(|| s.to_owned())
}

fn write_lock_name(lock: &File, name: &str) -> std::io::Result<()> {
    let line = format!("{name}\n");
    lock.write_all_at(line.as_bytes(), 0)?;
    lock.set_len(line.len() as u64)
}

fn open_segment(dir: &Path, name: &str) -> Result<(File, String)> {
    let p = dir.join(name);
    let f = OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .open(&p)
        .map_err(|e| io(&p, e))?;
    Ok((f, name.to_owned()))
}

/// Cuts a last line without its newline off `file` (moved to a new file in `torn_dir`,
/// synced before the cut); returns the file's length after.
fn cut_torn_tail(
    file: &File,
    path: &Path,
    torn_dir: &Path,
    set_aside: &mut Vec<PathBuf>,
) -> Result<u64> {
    let size = file.metadata().map_err(|e| io(path, e))?.len();
    if size == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, size - 1)
        .map_err(|e| io(path, e))?;
    if last[0] == b'\n' {
        return Ok(size);
    }
    // Find the last newline, reading back in blocks (a line is at most MAX_EVENT_BYTES, but a
    // damaged file may have anything: read back as far as it takes).
    let mut keep = 0u64;
    let mut at = size;
    let mut buf = vec![0u8; 64 * 1024];
    while at > 0 {
        let start = at.saturating_sub(buf.len() as u64);
        let n = usize::try_from(at - start).expect("at most the buffer's length");
        file.read_exact_at(&mut buf[..n], start)
            .map_err(|e| io(path, e))?;
        if let Some(i) = buf[..n].iter().rposition(|&c| c == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        at = start;
    }
    let len = usize::try_from(size - keep)
        .map_err(|_| Error::Internal(format!("torn tail of {} too large", path.display())))?;
    let mut torn = vec![0u8; len];
    file.read_exact_at(&mut torn, keep)
        .map_err(|e| io(path, e))?;
    durable::create_dir_all_durable(torn_dir).map_err(|e| io(torn_dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = torn_dir.join(format!("{name}.{keep}.torn"));
    durable::write_atomic(&out, &torn).map_err(|e| io(&out, e))?;
    file.set_len(keep).map_err(|e| io(path, e))?;
    file.sync_data().map_err(|e| io(path, e))?;
    set_aside.push(out);
    Ok(keep)
}

/// True for a segment's file name (`seg-YYYYMMDD-NNNNNN.jsonl`).
#[must_use]
pub fn is_segment(name: &str) -> bool {
    parse_segment(name).is_some()
}

/// (day number since 1970-01-01, sequence) of a segment name.
fn parse_segment(name: &str) -> Option<(i64, u64)> {
    let rest = name.strip_prefix("seg-")?.strip_suffix(".jsonl")?;
    let (date, seq) = rest.split_once('-')?;
    if date.len() != 8
        || seq.len() < 6
        || !date.bytes().chain(seq.bytes()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let y: i64 = date[..4].parse().ok()?;
    let m: i64 = date[4..6].parse().ok()?;
    let d: i64 = date[6..].parse().ok()?;
    Some((days_from_civil(y, m, d), seq.parse().ok()?))
}

fn segment_day(name: &str) -> Option<i64> {
    parse_segment(name).map(|(d, _)| d)
}

fn next_segment_name(prev: &str, day: i64) -> String {
    let seq = parse_segment(prev).map_or(1, |(_, s)| s + 1);
    let (y, m, d) = crate::history::civil_from_days(day);
    format!("seg-{y:04}{m:02}{d:02}-{seq:06}.jsonl")
}

/// The segments of `dir`, oldest first (by sequence, then name).
///
/// # Errors
/// I/O errors reading the folder (a missing folder has none).
pub fn segments(dir: &Path) -> Result<Vec<String>> {
    let mut v: Vec<(u64, String)> = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir, e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| io(dir, e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some((_, seq)) = parse_segment(&name) {
            v.push((seq, name));
        }
    }
    v.sort();
    Ok(v.into_iter().map(|(_, n)| n).collect())
}

/// The other `*.jsonl` files of `dir` (legacy and demo journals), by name.
fn legacy_files(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(io(dir, e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| io(dir, e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.ends_with(".jsonl") && !is_segment(&name) && !name.starts_with('.') {
            v.push(name);
        }
    }
    v.sort();
    Ok(v)
}

/// Parses one line: a v1 event, or a legacy line read as an event (version 0, id
/// `legacy-` and a hash of the line, `ts`/`kind`/`session` taken where present, the whole
/// object as payload). `None` for a line that is not a JSON object.
#[must_use]
pub fn parse_line(line: &[u8]) -> Option<Event> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let obj = v.as_object()?;
    if obj
        .get("v")
        .and_then(serde_json::Value::as_u64)
        .is_some_and(|n| n >= 1)
        && obj.contains_key("id")
    {
        return serde_json::from_value(v).ok();
    }
    let s = |k: &str| {
        obj.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    Some(Event {
        v: 0,
        id: format!("legacy-{}", &blake3::hash(line).to_hex()[..24]),
        time: s("time").or_else(|| s("ts")).unwrap_or_default(),
        kind: s("kind").unwrap_or_else(|| "legacy".into()),
        session: s("session"),
        tags: Vec::new(),
        payload: v,
    })
}

/// Which events a read keeps.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this session.
    pub session: Option<String>,
    /// Only events carrying this tag.
    pub tag: Option<String>,
    /// Only events at or after this time (RFC 3339, compared as text: a prefix such as
    /// `2026-12-01` works).
    pub since: Option<String>,
}

impl Filter {
    /// True when `e` passes.
    #[must_use]
    pub fn keeps(&self, e: &Event) -> bool {
        self.session
            .as_ref()
            .is_none_or(|s| e.session.as_ref() == Some(s))
            && self.tag.as_ref().is_none_or(|t| e.tags.contains(t))
            && self
                .since
                .as_ref()
                .is_none_or(|t| e.time.as_str() >= t.as_str())
    }
}

/// Reads the journal incrementally: each [`Reader::poll`] returns the complete lines added
/// since the last one (legacy files first, then segments in order); a last line without its
/// newline is left for later.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    filter: Filter,
    offsets: std::collections::BTreeMap<String, u64>,
    /// Lines that are not JSON objects (damaged), skipped.
    pub skipped: u64,
}

impl Reader {
    /// A reader of `state_dir`'s journal keeping what `filter` keeps.
    #[must_use]
    pub fn new(state_dir: &Path, filter: Filter) -> Reader {
        Reader {
            dir: state_dir.join(DIR),
            filter,
            offsets: std::collections::BTreeMap::new(),
            skipped: 0,
        }
    }

    /// The events added since the last poll.
    ///
    /// # Errors
    /// I/O errors.
    pub fn poll(&mut self) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        let names = legacy_files(&self.dir)?
            .into_iter()
            .chain(segments(&self.dir)?);
        for name in names {
            let path = self.dir.join(&name);
            let from = self.offsets.get(&name).copied().unwrap_or(0);
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path, e)),
            };
            let len = f.metadata().map_err(|e| io(&path, e))?.len();
            if len < from {
                // The file shrank (replaced by a restore): read it again from the start.
                self.offsets.insert(name, 0);
                continue;
            }
            if len == from {
                continue;
            }
            // Only what was added since the last poll.
            let mut tail = vec![
                0u8;
                usize::try_from(len - from).map_err(|_| {
                    Error::Internal(format!("{} too large to read", path.display()))
                })?
            ];
            f.read_exact_at(&mut tail, from).map_err(|e| io(&path, e))?;
            let from = usize::try_from(from).expect("an offset within a file read into memory");
            let complete = tail.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
            for line in tail[..complete].split(|&c| c == b'\n') {
                if line.is_empty() {
                    continue;
                }
                match parse_line(line) {
                    Some(e) if self.filter.keeps(&e) => out.push(e),
                    Some(_) => {}
                    None => self.skipped += 1,
                }
            }
            self.offsets.insert(name, (from + complete) as u64);
        }
        Ok(out)
    }
}

/// A new event id: 128 random bits, 32 hex digits.
#[must_use]
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn days_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs / 86_400).unwrap_or(0)
}

/// Now as RFC 3339 UTC with microseconds.
#[must_use]
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_micros(d)
}

/// `d` since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
#[must_use]
pub fn rfc3339_micros(d: Duration) -> String {
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
    let (y, m, day) = crate::history::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's days-from-civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `--since`: an RFC 3339 time (or a prefix of one, `2026-12-01`), or an age (`90s`,
/// `15m`, `2h`, `7d`) before now.
///
/// # Errors
/// [`Error::Usage`] for anything else.
pub fn parse_since(s: &str) -> Result<String> {
    let s = s.trim();
    if let Some(unit) = s.chars().last()
        && let Ok(n) = s[..s.len() - unit.len_utf8()].parse::<u64>()
    {
        let secs = match unit {
            's' => Some(n),
            'm' => n.checked_mul(60),
            'h' => n.checked_mul(3600),
            'd' => n.checked_mul(86_400),
            _ => None,
        };
        if let Some(secs) = secs {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            return Ok(rfc3339_micros(
                now.saturating_sub(Duration::from_secs(secs)),
            ));
        }
    }
    let b = s.as_bytes();
    let ok = b.len() >= 4
        && b[..4].iter().all(u8::is_ascii_digit)
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b':' | b'T' | b'.' | b'Z'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(Error::Usage(format!(
            "--since {s}: expected an RFC 3339 time (2026-12-01T06:00:00Z, or a prefix of one) or an age (90s, 15m, 2h, 7d)"
        )))
    }
}

/// The size of the journal on disk (segment and legacy files, bytes) and the segments.
///
/// # Errors
/// I/O errors.
pub fn stat(state_dir: &Path) -> Result<(u64, Vec<String>)> {
    let dir = state_dir.join(DIR);
    let segs = segments(&dir)?;
    let mut bytes = 0;
    for n in legacy_files(&dir)?.iter().chain(&segs) {
        bytes += fs::metadata(dir.join(n)).map(|m| m.len()).unwrap_or(0);
    }
    Ok((bytes, segs))
}

#[cfg(test)]
mod tests;
