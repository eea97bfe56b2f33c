//! The agent feed: posts journal events, in order, to `shelldone-agentd` at
//! `POST /journal/event` (HTTP/1.1 on loopback, `journal.agentd` in the config file).
//!
//! A delivery pass ([`deliver`]) runs under a kernel lock (`journal-feed/lock`, so one process
//! at a time) from a durable cursor (`journal-feed/cursor`: segment and byte offset) and posts
//! every complete event after it, one request each, advancing the cursor. When the service
//! cannot be reached or answers with an error, the pass stops, and if no outage is recorded
//! yet (`journal-feed/outage`) it writes `sigma.proxy.disabled` with the reason to
//! `logs/agents.log` — once per outage, across processes. The first delivery after an outage
//! writes `sigma.proxy.restored` and removes the record, then the pass replays what was missed,
//! in order. The local event id travels inside the payload (`payload.event_id`), since the
//! daemon assigns its own ids: a retry (a crash between a post and the cursor's write) is
//! recognisable by it.
//!
//! A [`Sender`] runs passes on a background thread: woken by each append, retrying with a
//! bounded backoff while the service is down. Every wait and every network call is bounded.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fs_err as fs;

use super::{DIR, Event, io, segments};
use crate::error::{Error, Result};
use crate::store::durable;

/// The feed's folder in the state dir (outside every snapshot root).
pub const FEED_DIR: &str = "journal-feed";
/// The agents' log, relative to the state dir.
pub const AGENTS_LOG: &str = "logs/agents.log";
/// The log line of an outage.
pub const DISABLED: &str = "sigma.proxy.disabled";
/// The log line of the service coming back.
pub const RESTORED: &str = "sigma.proxy.restored";
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the service may take to answer one post.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// The cursor is written after this many deliveries (and at the end of every pass).
const CURSOR_EVERY: u64 = 64;

/// Where delivery stands: the next byte to deliver of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The segment (empty: from the first one).
    pub segment: String,
    /// Byte offset of the next event in it.
    pub offset: u64,
}

/// What one delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Events posted and acknowledged.
    pub delivered: u64,
    /// Why the pass stopped early (unreachable, an error answer); `None`: no failure.
    pub failed: Option<String>,
    /// The pass's budget ran out before the end of the journal (more is left to deliver).
    pub unfinished: bool,
    /// Another process was delivering; this pass did nothing.
    pub busy: bool,
    /// An outage ended in this pass (the recovery line was written).
    pub restored: bool,
    /// An outage began in this pass (the disabled line was written).
    pub disabled: bool,
}

fn feed_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(FEED_DIR)
}

/// Reads the cursor (none yet: the start of the journal).
///
/// # Errors
/// I/O errors; a damaged cursor is [`Error::CorruptFile`].
pub fn read_cursor(state_dir: &Path) -> Result<Cursor> {
    let p = feed_dir(state_dir).join("cursor");
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Cursor::default()),
        Err(e) => return Err(io(&p, e)),
    };
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(seg), Some(off)) if super::is_segment(seg) => Ok(Cursor {
            segment: seg.to_owned(),
            offset: off.parse().map_err(|_| Error::CorruptFile {
                path: p.clone(),
                why: "the feed cursor's offset is not a number".into(),
            })?,
        }),
        _ => Err(Error::CorruptFile {
            path: p,
            why: "not a feed cursor ('v1 SEGMENT OFFSET'); delete it to replay the whole journal"
                .into(),
        }),
    }
}

fn write_cursor(state_dir: &Path, c: &Cursor) -> Result<()> {
    let p = feed_dir(state_dir).join("cursor");
    durable::write_atomic(&p, format!("v1 {} {}\n", c.segment, c.offset).as_bytes())
        .map_err(|e| io(&p, e))
}

/// Appends one line to `logs/agents.log`.
fn log_line(state_dir: &Path, what: &str, detail: &str) -> Result<()> {
    let p = state_dir.join(AGENTS_LOG);
    if let Some(dir) = p.parent() {
        durable::create_dir_all_durable(dir).map_err(|e| io(dir, e))?;
    }
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&p)
        .map_err(|e| io(&p, e))?;
    let line = format!("{} {what} {detail}\n", super::now_rfc3339());
    f.write_all(line.as_bytes()).map_err(|e| io(&p, e))?;
    f.sync_data().map_err(|e| io(&p, e))
}

/// The body agentd expects for one event (docs/journal.md, "The agent feed").
#[must_use]
pub fn request_body(e: &Event, line_len: usize) -> Vec<u8> {
    let mut payload = serde_json::json!({
        "event_id": e.id,
        "time": e.time,
        "tags": e.tags,
        "data": e.payload,
    });
    if let Some(s) = &e.session {
        payload["session"] = serde_json::Value::String(s.clone());
    }
    let mut body = serde_json::json!({
        "kind": e.kind,
        "payload": payload,
        "bytes": line_len,
    });
    if let Some(t) = e.tags.first() {
        body["spectral_tag"] = serde_json::Value::String(t.clone());
    }
    serde_json::to_vec(&body).expect("JSON values serialize")
}

/// Posts `body` to `http://addr/journal/event`; `Err` says why it was not accepted.
///
/// # Errors
/// The reason, as text for the agents' log.
pub fn post(addr: &str, body: &[u8]) -> std::result::Result<(), String> {
    let sa: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    let mut s = TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(ANSWER_TIMEOUT)))
        .and_then(|()| s.set_nodelay(true))
        .map_err(|e| format!("{addr}: {e}"))?;
    let head = format!(
        "POST /journal/event HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    // The answer, up to 64 KiB (the record agentd stored; only the status line matters).
    let mut answer = Vec::new();
    s.take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading the answer of {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{addr} did not answer HTTP ({} bytes)", answer.len()))?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body: String = body.chars().filter(|c| !c.is_control()).take(200).collect();
    Err(format!("{addr} answered HTTP {status}: {body}"))
}

/// One delivery pass (see the module docs), for at most `budget`.
///
/// # Errors
/// Local I/O errors (the service's failures are in the report, not errors).
pub fn deliver(state_dir: &Path, addr: &str, budget: Duration) -> Result<PassReport> {
    let deadline = Instant::now() + budget;
    let fd = feed_dir(state_dir);
    durable::create_dir_all_durable(&fd).map_err(|e| io(&fd, e))?;
    let lock_path = fd.join("lock");
    let lock = super::open_lock_file(&lock_path)?;
    let mut report = PassReport::default();
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            report.busy = true;
            return Ok(report);
        }
        Err(e) => return Err(io(&lock_path, e.into())),
    }
    let outage_path = fd.join("outage");
    let mut in_outage = outage_path.exists();
    let dir = state_dir.join(DIR);
    let mut cursor = read_cursor(state_dir)?;
    let segs = segments(&dir)?;
    let start = if cursor.segment.is_empty() {
        0
    } else {
        match segs.iter().position(|s| *s == cursor.segment) {
            Some(i) => i,
            None => {
                // The cursor's segment is gone (a restore replaced the journal): go on from the
                // first segment after it.
                let after = segs
                    .iter()
                    .position(|s| s.as_str() > cursor.segment.as_str())
                    .unwrap_or(segs.len());
                cursor.offset = 0;
                after
            }
        }
    };
    let mut since_write = 0u64;
    'segments: for (i, seg) in segs.iter().enumerate().skip(start) {
        if *seg != cursor.segment {
            cursor = Cursor {
                segment: seg.clone(),
                offset: 0,
            };
        }
        let path = dir.join(seg);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path, e)),
        };
        let mut at = usize::try_from(cursor.offset).unwrap_or(usize::MAX);
        if at > bytes.len() {
            // The segment was replaced by a shorter one: nothing more to read in it.
            at = bytes.len();
        }
        while let Some(nl) = bytes[at..].iter().position(|&c| c == b'\n') {
            let line = &bytes[at..at + nl];
            let next = at + nl + 1;
            if let Some(ev) = super::parse_line(line).filter(|e| e.v >= 1) {
                if Instant::now() >= deadline {
                    report.unfinished = true;
                    break 'segments;
                }
                if let Err(why) = post(addr, &request_body(&ev, line.len() + 1)) {
                    if !in_outage {
                        log_line(
                            state_dir,
                            DISABLED,
                            &format!(
                                "agentd={addr} reason={} (the journal goes on locally; missed events are replayed when the service is back)",
                                serde_json::Value::String(why.clone())
                            ),
                        )?;
                        durable::write_atomic(&outage_path, why.as_bytes())
                            .map_err(|e| io(&outage_path, e))?;
                        report.disabled = true;
                    }
                    report.failed = Some(why);
                    break 'segments;
                }
                if in_outage {
                    log_line(
                        state_dir,
                        RESTORED,
                        &format!(
                            "agentd={addr} replaying from {}:{} in order",
                            cursor.segment, cursor.offset
                        ),
                    )?;
                    fs::remove_file(&outage_path)?;
                    in_outage = false;
                    report.restored = true;
                }
                report.delivered += 1;
                since_write += 1;
            }
            at = next;
            cursor.offset = at as u64;
            if since_write >= CURSOR_EVERY {
                write_cursor(state_dir, &cursor)?;
                since_write = 0;
            }
        }
        // A sealed segment is done; the active (last) one is read again next pass.
        if i + 1 == segs.len() {
            break;
        }
    }
    write_cursor(state_dir, &cursor)?;
    Ok(report)
}

/// How many events after the cursor are still to deliver.
///
/// # Errors
/// I/O errors.
pub fn pending(state_dir: &Path) -> Result<u64> {
    let cursor = read_cursor(state_dir)?;
    let dir = state_dir.join(DIR);
    let mut n = 0;
    for seg in segments(&dir)? {
        if !cursor.segment.is_empty() && seg.as_str() < cursor.segment.as_str() {
            continue;
        }
        let bytes = fs::read(dir.join(&seg))?;
        let from = if seg == cursor.segment {
            usize::try_from(cursor.offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len())
        } else {
            0
        };
        n += bytes[from..].iter().filter(|&&c| c == b'\n').count() as u64;
    }
    Ok(n)
}

/// A background sender (see the module docs).
#[derive(Debug)]
pub struct Sender {
    shared: Arc<(Mutex<SenderState>, Condvar)>,
    /// Told when the thread ends (in a mutex: a `Receiver` alone would make a `Journal`, which
    /// is shared between threads, not `Sync`).
    done: Mutex<std::sync::mpsc::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SenderState {
    pending: bool,
    stop: bool,
    /// Totals over the passes.
    delivered: u64,
    last_error: Option<String>,
    passes: u64,
    /// The pass run after the stop found nothing left to deliver (see [`SenderStats::drained`]).
    drained: bool,
}

/// The sender's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Events delivered by this sender.
    pub delivered: u64,
    /// The last pass's failure, if it failed.
    pub last_error: Option<String>,
    /// Passes run.
    pub passes: u64,
    /// The last pass, run after [`Sender::stop`] (so after every append notified before it),
    /// ran to the end of the journal without a failure: every event appended before the stop
    /// is delivered. `false` while the sender runs, and when that pass failed, found the feed
    /// busy in another process until its budget ran out, or did not end within the stop's
    /// budget.
    pub drained: bool,
}

impl Sender {
    /// Starts a sender for `state_dir`'s journal posting to `addr`.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(state_dir: &Path, addr: &str) -> Result<Sender> {
        Sender::start_polling(state_dir, addr, None)
    }

    /// [`Sender::start`] that also runs a pass every `poll` when no append woke it (the sync
    /// daemon's sender, which delivers what other processes appended).
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start_polling(state_dir: &Path, addr: &str, poll: Option<Duration>) -> Result<Sender> {
        let shared = Arc::new((Mutex::new(SenderState::default()), Condvar::new()));
        let (tx, done) = std::sync::mpsc::channel();
        let s = Arc::clone(&shared);
        let state_dir = state_dir.to_path_buf();
        let addr = addr.to_owned();
        let thread = std::thread::Builder::new()
            .name("journal-feed".into())
            .spawn(move || {
                run(&state_dir, &addr, &s, poll);
                let _ = tx.send(());
            })
            .map_err(|e| io(Path::new(FEED_DIR), e))?;
        // The first pass delivers what earlier processes left.
        shared.0.lock().expect("no panics while held").pending = true;
        shared.1.notify_one();
        Ok(Sender {
            shared,
            done: Mutex::new(done),
            thread: Some(thread),
        })
    }

    /// Wakes the sender (an event was appended). Never blocks on the network.
    pub fn notify(&self) {
        self.shared.0.lock().expect("no panics while held").pending = true;
        self.shared.1.notify_one();
    }

    /// The totals so far.
    #[must_use]
    pub fn stats(&self) -> SenderStats {
        let g = self.shared.0.lock().expect("no panics while held");
        SenderStats {
            delivered: g.delivered,
            last_error: g.last_error.clone(),
            passes: g.passes,
            drained: g.drained,
        }
    }

    /// Stops the sender after a last pass that starts after this call (so it covers every
    /// event appended before it), waiting at most `budget` (a sender still busy then is left
    /// to end with the process; what it did not deliver stays after the cursor).
    pub fn stop(&mut self, budget: Duration) {
        {
            let mut g = self.shared.0.lock().expect("no panics while held");
            g.stop = true;
        }
        self.shared.1.notify_all();
        let ended = self
            .done
            .lock()
            .expect("no panics while held")
            .recv_timeout(budget)
            .is_ok();
        if ended && let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    state_dir: &Path,
    addr: &str,
    shared: &(Mutex<SenderState>, Condvar),
    poll: Option<Duration>,
) {
    let (m, cv) = shared;
    let mut backoff = Duration::from_millis(50);
    let mut retry_at: Option<Instant> = None;
    loop {
        let stopping = {
            let mut g = m.lock().expect("no panics while held");
            loop {
                if g.stop || g.pending {
                    break;
                }
                if let Some(t) = retry_at
                    && Instant::now() >= t
                {
                    break;
                }
                let wait = retry_at.map_or(Duration::from_secs(1), |t| {
                    t.saturating_duration_since(Instant::now())
                });
                g = cv
                    .wait_timeout(g, wait.min(Duration::from_secs(1)))
                    .expect("no panics while held")
                    .0;
            }
            g.pending = false;
            g.stop
        };
        if stopping {
            final_pass(state_dir, addr, m);
            return;
        }
        let r = deliver(state_dir, addr, Duration::from_secs(5));
        let mut g = m.lock().expect("no panics while held");
        g.passes += 1;
        match r {
            Ok(rep) => {
                g.delivered += rep.delivered;
                if rep.busy {
                    retry_at = Some(Instant::now() + Duration::from_millis(100));
                } else if let Some(why) = rep.failed {
                    g.last_error = Some(why);
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                } else {
                    g.last_error = None;
                    backoff = Duration::from_millis(50);
                    retry_at = if rep.unfinished {
                        Some(Instant::now())
                    } else {
                        poll.map(|p| Instant::now() + p)
                    };
                }
            }
            Err(e) => {
                g.last_error = Some(e.to_string());
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        // A stop asked for during this pass is served by the next turn's final pass: this
        // one may have read the journal before the last append.
    }
}

/// The pass after a stop: runs once (waiting, up to a second, for a pass another process is
/// running to end), and records whether it drained the journal.
fn final_pass(state_dir: &Path, addr: &str, m: &Mutex<SenderState>) {
    let give_up = Instant::now() + Duration::from_secs(1);
    loop {
        let r = deliver(state_dir, addr, Duration::from_millis(400));
        let mut g = m.lock().expect("no panics while held");
        g.passes += 1;
        match r {
            Ok(rep) if rep.busy => {
                if Instant::now() >= give_up {
                    return;
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(rep) => {
                g.delivered += rep.delivered;
                g.drained = rep.failed.is_none() && !rep.unfinished;
                g.last_error = rep.failed;
                return;
            }
            Err(e) => {
                g.last_error = Some(e.to_string());
                return;
            }
        }
    }
}
