//! `shelldone journal append|tail|status`: the Continuum journal (docs/journal.md), and
//! `shelldone telemetry enable|disable|status|show`.

use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::args::{Cli, JournalCmd, TelemetryCmd};
use super::open::{config, open, paths};
use super::output::say;
use super::{documents, out};
use crate::journal::{self, Event, Filter, NewEvent, Reader, feed};
use crate::telemetry;
use crate::{Error, Result};

/// The id of the event `journal append` wrote (telemetry's cross-link).
pub(super) static LAST_EVENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The size and count a command measured (a save: bytes written, files changed), for its
/// telemetry record.
pub(super) static MEASURED: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Records what a command measured for telemetry (bytes, count).
pub(super) fn measured(bytes: u64, count: u64) {
    let _ = MEASURED.set((bytes, count));
}

/// How long `journal append` lets the feed deliver before the process ends (the event is
/// durable already; what is not delivered stays after the feed's cursor).
const FEED_BUDGET: Duration = Duration::from_millis(1500);

#[derive(Debug, Serialize)]
struct AppendDoc {
    id: String,
    time: String,
    segment: String,
    durable: bool,
    feed: &'static str,
}

#[derive(Debug, Serialize)]
struct TailDoc {
    events: Vec<Event>,
    skipped_lines: u64,
}

#[derive(Debug, Serialize)]
struct FollowDoc<'a> {
    event: &'a Event,
}

#[derive(Debug, Serialize)]
struct FeedDoc {
    agentd: Option<String>,
    pending: Option<u64>,
    outage: Option<String>,
}

#[derive(Debug, Serialize)]
struct StatusDoc {
    schema_version: u32,
    segments: usize,
    active: Option<String>,
    bytes: u64,
    feed: FeedDoc,
}

/// `journal …`.
pub(super) fn run(cli: &Cli, jc: &JournalCmd) -> Result<ExitCode> {
    match jc {
        JournalCmd::Append {
            kind,
            session,
            tags,
            stdin,
            fields,
            count,
        } => append(
            cli,
            kind,
            session.clone(),
            tags.clone(),
            (*stdin, fields),
            *count,
        ),
        JournalCmd::Tail {
            lines,
            follow,
            session,
            tag,
            since,
            max_runtime,
        } => {
            let filter = Filter {
                session: session.clone(),
                tag: tag.clone(),
                since: since.as_deref().map(journal::parse_since).transpose()?,
            };
            tail(cli, filter, *lines, *follow, *max_runtime)
        }
        JournalCmd::Status => status(cli),
    }
}

fn payload(stdin: bool, fields: &[String]) -> Result<serde_json::Value> {
    if stdin {
        if !fields.is_empty() {
            return Err(Error::Usage(
                "journal append: give the payload either as FIELD=VALUE arguments or on stdin (--stdin), not both".into(),
            ));
        }
        let mut text = String::new();
        std::io::stdin()
            .take(journal::MAX_EVENT_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::Usage(format!("journal append --stdin: {e}")))?;
        let t = text.trim();
        if t.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        // JSON is stored as it is; anything else as one string.
        return Ok(serde_json::from_str(t).unwrap_or_else(|_| serde_json::Value::String(t.into())));
    }
    let mut m = serde_json::Map::new();
    for f in fields {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "journal append: '{f}' is not FIELD=VALUE (a payload with secrets goes on stdin: --stdin)"
            ))
        })?;
        m.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
    }
    Ok(serde_json::Value::Object(m))
}

fn options() -> journal::Options {
    let cfg = config();
    journal::Options {
        // One event per process: durable before the command says it was appended.
        durability: Duration::ZERO,
        segment_bytes: cfg
            .journal
            .segment_bytes
            .unwrap_or(journal::DEFAULT_SEGMENT_BYTES),
        agentd: cfg.journal.agentd,
    }
}

fn append(
    cli: &Cli,
    kind: &str,
    session: Option<String>,
    tags: Vec<String>,
    (stdin, fields): (bool, &[String]),
    count: u64,
) -> Result<ExitCode> {
    let payload = payload(stdin, fields)?;
    let st = open(cli)?;
    let mut j = st.journal(options())?;
    for p in &j.open_report().set_aside {
        super::output::warn(
            cli,
            "torn journal line set aside",
            &p.to_string_lossy(),
            &format!(
                "the journal's last line was incomplete (a crash while writing it); it was moved to {}",
                p.display()
            ),
        );
    }
    let mut a: Option<journal::Appended> = None;
    for i in 0..count {
        let mut payload = payload.clone();
        if count > 1
            && let serde_json::Value::Object(m) = &mut payload
        {
            m.insert("i".into(), i.into());
        }
        let done = j.append(NewEvent {
            kind: kind.to_owned(),
            session: session.clone(),
            tags: tags.clone(),
            payload,
        })?;
        if count > 1 && !cli.json {
            out(&done.id);
        }
        a = Some(done);
    }
    let a = a.ok_or_else(|| Error::Usage("journal append --count 0 appends nothing".into()))?;
    let _ = LAST_EVENT.set(a.id.clone());
    let feed = match j.close_feed(FEED_BUDGET) {
        None => "off",
        Some(s) if s.drained => "sent",
        Some(_) => "queued",
    };
    if cli.json {
        documents::print(&AppendDoc {
            id: a.id,
            time: a.time,
            segment: a.segment,
            durable: true,
            feed,
        })?;
    } else if count == 1 {
        out(&a.id);
    }
    Ok(ExitCode::SUCCESS)
}

fn line(e: &Event) -> String {
    let mut s = format!("{} {}", e.time, e.kind);
    if let Some(x) = &e.session {
        s.push_str(&format!(" session={x}"));
    }
    for t in &e.tags {
        s.push_str(&format!(" #{t}"));
    }
    if !e.payload.is_null() {
        s.push(' ');
        s.push_str(&e.payload.to_string());
    }
    s
}

fn tail(
    cli: &Cli,
    filter: Filter,
    n: usize,
    follow: bool,
    max_runtime: Option<f64>,
) -> Result<ExitCode> {
    let p = paths(cli)?;
    let mut r = Reader::new(&p.state_dir, filter);
    let mut evs = r.poll()?;
    if n > 0 && evs.len() > n {
        evs.drain(..evs.len() - n);
    }
    let print_one = |e: &Event| -> Result<()> {
        if cli.json {
            documents::print(&FollowDoc { event: e })
        } else {
            out(line(e));
            Ok(())
        }
    };
    if !follow {
        if cli.json {
            documents::print(&TailDoc {
                events: evs,
                skipped_lines: r.skipped,
            })?;
        } else {
            for e in &evs {
                out(line(e));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    for e in &evs {
        print_one(e)?;
    }
    let end = max_runtime
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    // Until stopped (SIGINT) or --max-runtime; each wait is 200 ms.
    while end.is_none_or(|t| Instant::now() < t) && !super::output::stdout_closed() {
        std::thread::sleep(Duration::from_millis(200));
        for e in &r.poll()? {
            print_one(e)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(cli: &Cli) -> Result<ExitCode> {
    let p = paths(cli)?;
    let (cfg, _) = super::open::settings(cli, &p)?;
    let (bytes, segs) = journal::stat(&p.state_dir)?;
    let outage = std::fs::read_to_string(p.state_dir.join(feed::FEED_DIR).join("outage")).ok();
    let doc = StatusDoc {
        schema_version: journal::SCHEMA_VERSION,
        segments: segs.len(),
        active: segs.last().cloned(),
        bytes,
        feed: FeedDoc {
            pending: match cfg.journal.agentd {
                Some(_) => Some(feed::pending(&p.state_dir)?),
                None => None,
            },
            agentd: cfg.journal.agentd,
            outage,
        },
    };
    if cli.json {
        documents::print(&doc)?;
    } else {
        out(format!(
            "journal: {} segment(s), {} (schema v{}); active: {}",
            doc.segments,
            super::output::bytes(doc.bytes),
            doc.schema_version,
            doc.active.as_deref().unwrap_or("none")
        ));
        match &doc.feed.agentd {
            None => out("agent feed: off (set journal.agentd in the config file)"),
            Some(a) => out(format!(
                "agent feed: {a}, {} event(s) not delivered{}",
                doc.feed.pending.unwrap_or(0),
                doc.feed
                    .outage
                    .as_deref()
                    .map(|w| format!("; down since an outage: {w}"))
                    .unwrap_or_default()
            )),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct TelemetryDoc {
    enabled: bool,
    changed: bool,
    deleted_files: u64,
}

#[derive(Debug, Serialize)]
struct TelemetryFile {
    name: String,
    content: String,
}

#[derive(Debug, Serialize)]
struct TelemetryShow {
    enabled: bool,
    files: Vec<TelemetryFile>,
}

/// `telemetry …`.
pub(super) fn telemetry(cli: &Cli, tc: &TelemetryCmd) -> Result<ExitCode> {
    let p = paths(cli)?;
    let s = &p.state_dir;
    match tc {
        TelemetryCmd::Enable => {
            let changed = telemetry::enable(s)?;
            if cli.json {
                documents::print(&TelemetryDoc {
                    enabled: true,
                    changed,
                    deleted_files: 0,
                })?;
            } else {
                say(format!(
                    "telemetry is on: anonymous counters and timings (never paths, names, content or identifying ids) are kept in {}, never snapshotted, backed up or synced; 'shelldone telemetry show' prints them, 'shelldone telemetry disable' deletes them",
                    s.join(telemetry::DIR).display()
                ));
            }
        }
        TelemetryCmd::Disable => {
            let enabled_before = telemetry::enabled(s);
            let n = telemetry::disable(s)?;
            if cli.json {
                documents::print(&TelemetryDoc {
                    enabled: false,
                    changed: enabled_before,
                    deleted_files: n,
                })?;
            } else {
                say(format!(
                    "telemetry is off: {n} file(s) and {} deleted",
                    s.join(telemetry::DIR).display()
                ));
            }
        }
        TelemetryCmd::Status => {
            let st = telemetry::status(s)?;
            if cli.json {
                documents::print(&st)?;
            } else {
                out(format!(
                    "telemetry: {}; {} record(s), {} in {}",
                    if st.enabled { "on" } else { "off" },
                    st.records,
                    super::output::bytes(st.bytes),
                    st.dir.display()
                ));
            }
        }
        TelemetryCmd::Show => {
            let files = telemetry::show(s)?;
            if cli.json {
                documents::print(&TelemetryShow {
                    enabled: telemetry::enabled(s),
                    files: files
                        .into_iter()
                        .map(|(name, content)| TelemetryFile { name, content })
                        .collect(),
                })?;
            } else if files.is_empty() {
                say("telemetry: nothing stored");
            } else {
                for (name, content) in files {
                    out(format!("== {name} =="));
                    out(content.trim_end_matches('\n'));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
