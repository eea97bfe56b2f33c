//! The reflog (`logs/refs.log`): one line per ref change, appended and fdatasynced after the
//! refs move; readers skip lines that do not parse; `state recover` completes and repairs it.

use std::path::PathBuf;

use objects_format::ObjectId;

use super::{Refs, check_name};
use crate::error::{Error, Result};
use crate::store::durable;

/// One reflog line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflogEntry {
    /// Previous value (None when the ref was created).
    pub old: Option<ObjectId>,
    /// New value (None when the ref was deleted).
    pub new: Option<ObjectId>,
    /// When, ns since epoch.
    pub time_ns: i64,
    /// Why.
    pub message: String,
}

pub(super) fn fmt_opt(id: Option<&ObjectId>) -> String {
    id.map_or_else(|| "0".repeat(64), ObjectId::to_hex)
}

/// One reflog line that parses.
#[derive(Debug, Clone)]
pub struct ReflogLine {
    /// Line number, from 1.
    pub no: usize,
    /// The ref it is about.
    pub name: String,
    /// What it records.
    pub entry: ReflogEntry,
}

/// One reflog line that is not as shelldone writes it.
#[derive(Debug, Clone)]
pub struct DamagedLine {
    /// Line number, from 1.
    pub no: usize,
    /// Its bytes (without the newline).
    pub raw: Vec<u8>,
    /// What is wrong.
    pub why: String,
    /// True when it parses once its bytes that are not UTF-8 are replaced (it is then also in
    /// [`ReflogScan::lines`]).
    pub readable: bool,
}

/// The reflog as read by [`Refs::scan_reflog`].
#[derive(Debug, Clone)]
pub struct ReflogScan {
    /// `logs/refs.log`.
    pub path: PathBuf,
    /// Lines that parse, in order.
    pub lines: Vec<ReflogLine>,
    /// Lines that are damaged, in order.
    pub damaged: Vec<DamagedLine>,
}

/// The reflog file under `logs/`.
pub const LOG_FILE: &str = "refs.log";

/// Parses one reflog line: `<ref> <old> <new> <time ns> <message>`.
pub(super) fn parse_reflog(l: &str) -> Option<(String, ReflogEntry)> {
    let (name, rest) = l.split_once(' ')?;
    check_name(name).ok()?;
    Some((name.to_owned(), parse_reflog_line(rest)?))
}

pub(super) fn parse_reflog_line(l: &str) -> Option<ReflogEntry> {
    let mut it = l.splitn(4, ' ');
    let parse = |s: &str| -> Option<Option<ObjectId>> {
        if s.bytes().all(|b| b == b'0') && s.len() == 64 {
            Some(None)
        } else {
            ObjectId::from_hex(s).ok().map(Some)
        }
    };
    let old = parse(it.next()?)?;
    let new = parse(it.next()?)?;
    let time_ns = it.next()?.parse().ok()?;
    Some(ReflogEntry {
        old,
        new,
        time_ns,
        message: it.next().unwrap_or("").to_owned(),
    })
}

impl Refs {
    /// The reflog path (`logs/refs.log`).
    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.logs.join(LOG_FILE)
    }

    /// The value the last reflog line for `name` set, with that line's number, when it set one
    /// (`None` when no line names it or the last one deleted it).
    ///
    /// # Errors
    /// I/O errors reading the reflog.
    pub fn last_logged(&self, name: &str) -> Result<Option<(ObjectId, usize)>> {
        Ok(self
            .scan_reflog()?
            .lines
            .iter()
            .rev()
            .find(|l| l.name == name)
            .and_then(|l| l.entry.new.map(|id| (id, l.no))))
    }

    /// Appends reflog lines (`<name> <old> <new> <time_ns> <message>`) to `logs/refs.log`: one
    /// file for all refs, so a batch of updates costs one append and one sync.
    pub(super) fn append_log(
        &self,
        lines: &[(&str, Option<ObjectId>, Option<ObjectId>)],
        message: &str,
        sync: bool,
    ) -> Result<()> {
        durable::create_dir_all_durable(&self.logs)?;
        let msg: String = message
            .chars()
            .map(|c| if c == '\n' { ' ' } else { c })
            .collect();
        let now = crate::store::now_ns();
        let mut text = String::with_capacity(lines.len() * 160);
        for (name, old, new) in lines {
            text.push_str(&format!(
                "{name} {} {} {now} {msg}\n",
                fmt_opt(old.as_ref()),
                fmt_opt(new.as_ref())
            ));
        }
        let path = self.logs.join(LOG_FILE);
        let (mut f, created) = durable::open_append(&path)?;
        // A line torn by a crash is closed first, so the next entry starts on a line of its own.
        let len = f.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(f.file(), &mut last, len - 1)?;
            if last[0] != b'\n' {
                text.insert(0, '\n');
            }
        }
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        if sync {
            durable::sync_data(f.file(), &path)?;
            if created || len == 0 {
                // A new reflog (a new store, or one whose first append failed): its name
                // durable too, or the lines just synced could vanish with it.
                durable::sync_dir(&self.logs)?;
            }
        }
        Ok(())
    }

    /// Reads the whole reflog, line by line, without failing on damage: lines that are not
    /// UTF-8 or do not parse are listed in [`ReflogScan::damaged`] (and skipped by every reader);
    /// a line whose only fault is bytes that are not UTF-8 is also read with those bytes
    /// replaced, so the ids it records still count.
    ///
    /// # Errors
    /// I/O errors other than a missing file.
    pub fn scan_reflog(&self) -> Result<ReflogScan> {
        let path = self.log_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", path.display()),
                )));
            }
        };
        let mut scan = ReflogScan {
            path,
            lines: Vec::new(),
            damaged: Vec::new(),
        };
        let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        if body.is_empty() && bytes.len() <= 1 {
            if bytes.len() == 1 {
                scan.damaged.push(DamagedLine {
                    no: 1,
                    raw: Vec::new(),
                    why: "empty line".into(),
                    readable: false,
                });
            }
            return Ok(scan);
        }
        for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
            let no = i + 1;
            let (text, utf8) = match std::str::from_utf8(raw) {
                Ok(t) => (std::borrow::Cow::Borrowed(t), true),
                Err(_) => (String::from_utf8_lossy(raw), false),
            };
            let parsed = parse_reflog(&text);
            match (&parsed, utf8) {
                (Some(_), true) => {}
                (Some(_), false) => scan.damaged.push(DamagedLine {
                    no,
                    raw: raw.to_vec(),
                    why: "it holds bytes that are not UTF-8".into(),
                    readable: true,
                }),
                (None, _) => scan.damaged.push(DamagedLine {
                    no,
                    raw: raw.to_vec(),
                    why: if raw.is_empty() {
                        "empty line".into()
                    } else if utf8 {
                        "not '<ref> <old id> <new id> <time> <message>'".into()
                    } else {
                        "not UTF-8, and not '<ref> <old id> <new id> <time> <message>'".into()
                    },
                    readable: false,
                }),
            }
            if let Some((name, entry)) = parsed {
                scan.lines.push(ReflogLine { no, name, entry });
            }
        }
        Ok(scan)
    }

    /// The last reflog line (that parses) for which `pred` holds, reading the file from its
    /// end: the last 64 KiB first, the whole file only when they hold no such line.
    ///
    /// # Errors
    /// I/O errors.
    pub fn find_last(
        &self,
        pred: impl Fn(&str, &ReflogEntry) -> bool,
    ) -> Result<Option<(String, ReflogEntry)>> {
        use std::io::{Read, Seek};
        const TAIL: u64 = 64 << 10;
        let path = self.log_path();
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", path.display()),
                )));
            }
        };
        let len = f.metadata()?.len();
        if len > TAIL {
            f.seek(std::io::SeekFrom::Start(len - TAIL))?;
            let mut tail = Vec::with_capacity(TAIL as usize);
            f.read_to_end(&mut tail)?;
            // The first (partial) line of the window is skipped; the others are read newest
            // first, up to the first that matches (a cold save of 1 000 sessions writes 1 000
            // lines before the head's).
            let whole = tail
                .iter()
                .position(|b| *b == b'\n')
                .map_or(&[][..], |i| &tail[i + 1..]);
            let found = whole
                .rsplit(|b| *b == b'\n')
                .filter_map(|l| parse_reflog(&String::from_utf8_lossy(l)))
                .find(|(n, e)| pred(n, e));
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(self
            .scan_reflog()?
            .lines
            .into_iter()
            .rev()
            .find(|l| pred(&l.name, &l.entry))
            .map(|l| (l.name, l.entry)))
    }

    /// Reads a ref's reflog, oldest first. Lines that do not parse (a torn last line after a
    /// crash, damage) are skipped; `state check` lists them.
    ///
    /// # Errors
    /// I/O errors.
    pub fn reflog(&self, name: &str) -> Result<Vec<ReflogEntry>> {
        check_name(name)?;
        Ok(self
            .scan_reflog()?
            .lines
            .into_iter()
            .filter(|l| l.name == name)
            .map(|l| l.entry)
            .collect())
    }

    /// Every id mentioned by any reflog entry (for gc roots).
    ///
    /// # Errors
    /// I/O errors.
    pub fn all_reflog_ids(&self) -> Result<Vec<ObjectId>> {
        let mut out = Vec::new();
        for l in self.scan_reflog()?.lines {
            out.extend(l.entry.old);
            out.extend(l.entry.new);
        }
        Ok(out)
    }

    /// Appends reflog lines during repair (caller holds the lock).
    ///
    /// # Errors
    /// I/O errors.
    pub fn repair_log(
        &self,
        lines: &[(&str, Option<ObjectId>, Option<ObjectId>)],
        message: &str,
    ) -> Result<()> {
        self.append_log(lines, message, true)
    }

    /// Replaces the reflog with `text` (caller holds the lock): temp file, fsync, rename.
    ///
    /// # Errors
    /// I/O errors.
    pub fn repair_reflog(&self, text: &[u8]) -> Result<()> {
        durable::create_dir_all_durable(&self.logs)?;
        durable::write_atomic(&self.log_path(), text)?;
        Ok(())
    }

    /// Expires reflog lines (caller holds the lock): for each ref, `keep` is given the times
    /// (seconds since the epoch) of its lines, oldest first, and says which stay; the last line
    /// of each ref always stays (it records the ref's value). A reflog with damaged lines is
    /// left alone (`state recover` repairs it first). Returns the number of lines dropped.
    ///
    /// # Errors
    /// I/O errors.
    pub fn expire_reflog(&self, keep: &dyn Fn(&[i64]) -> Vec<bool>) -> Result<usize> {
        let scan = self.scan_reflog()?;
        if !scan.damaged.is_empty() || scan.lines.is_empty() {
            return Ok(0);
        }
        let mut by_ref: std::collections::BTreeMap<&str, Vec<usize>> =
            std::collections::BTreeMap::new();
        for (i, l) in scan.lines.iter().enumerate() {
            by_ref.entry(l.name.as_str()).or_default().push(i);
        }
        let mut stays = vec![false; scan.lines.len()];
        for idx in by_ref.values() {
            let times: Vec<i64> = idx
                .iter()
                .map(|&i| scan.lines[i].entry.time_ns.div_euclid(1_000_000_000))
                .collect();
            for (&i, k) in idx.iter().zip(keep(&times)) {
                stays[i] = k;
            }
            if let Some(&last) = idx.last() {
                stays[last] = true;
            }
        }
        let dropped = stays.iter().filter(|k| !**k).count();
        if dropped == 0 {
            return Ok(0);
        }
        let mut text = String::new();
        for (l, _) in scan.lines.iter().zip(&stays).filter(|(_, k)| **k) {
            let e = &l.entry;
            text.push_str(&format!(
                "{} {} {} {} {}\n",
                l.name,
                fmt_opt(e.old.as_ref()),
                fmt_opt(e.new.as_ref()),
                e.time_ns,
                e.message
            ));
        }
        self.repair_reflog(text.as_bytes())?;
        Ok(dropped)
    }
}
