//! Revisions, history and differences.

use std::collections::{BTreeMap, BinaryHeap, HashSet};

use objects_format::{ObjectId, Snapshot};
use serde::Serialize;

use crate::context::Context;
use crate::error::{Candidate, Error, Result};
use crate::snapshot::{Flat, flatten, session_of};
use crate::store::refs::session_ref;
use crate::store::refs::{HEAD, check_name};

/// One snapshot in `log`.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Snapshot id.
    pub id: ObjectId,
    /// Creation time, ns.
    pub time_ns: i64,
    /// Device that wrote it.
    pub device: String,
    /// Message.
    pub message: String,
    /// Session scope (`save --session`).
    pub session: Option<String>,
    /// Parents.
    pub parents: Vec<ObjectId>,
    /// Files added.
    pub added: u32,
    /// Files modified.
    pub modified: u32,
    /// Files deleted.
    pub deleted: u32,
    /// Refs pointing here.
    pub refs: Vec<String>,
}

/// How one path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second.
    Added,
    /// In both, different.
    Modified,
    /// Only in the first.
    Deleted,
}

/// A difference between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// Snapshot path (lossy UTF-8).
    pub path: String,
    /// Size before.
    pub old_size: Option<u64>,
    /// Size after.
    pub new_size: Option<u64>,
}

/// Lists files that differ between two contents.
#[must_use]
pub fn diff_flat(a: &Flat, b: &Flat) -> Vec<Change> {
    let mut out = Vec::new();
    for (p, l) in &b.leaves {
        match a.leaves.get(p) {
            None => out.push(Change {
                kind: ChangeKind::Added,
                path: crate::snapshot::display(p),
                old_size: None,
                new_size: Some(l.size),
            }),
            Some(o) if o != l => out.push(Change {
                kind: ChangeKind::Modified,
                path: crate::snapshot::display(p),
                old_size: Some(o.size),
                new_size: Some(l.size),
            }),
            Some(_) => {}
        }
    }
    for (p, l) in &a.leaves {
        if !b.leaves.contains_key(p) {
            out.push(Change {
                kind: ChangeKind::Deleted,
                path: crate::snapshot::display(p),
                old_size: Some(l.size),
                new_size: None,
            });
        }
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

#[derive(PartialEq, Eq)]
struct ByTime(i64, ObjectId);
impl Ord for ByTime {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.cmp(&o.0).then(self.1.cmp(&o.1))
    }
}
impl PartialOrd for ByTime {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// Resolves a revision (docs/cli.md, "Revisions", is the reference): a name, then `@{N}` (the
/// Nth previous value of the ref it names, from the reflog), then any number of `~N` (N first
/// parents back) and `^N` (the Nth parent; `^` is `^1`, `^0` the snapshot itself).
///
/// The name is tried in this order, and the first rule that applies decides:
/// 1. empty or `head` (any case): this device's head;
/// 2. 64 hex characters: that snapshot, without reading any ref;
/// 3. a name with a `/`: the ref of that name, or `remotes/<name>`;
/// 4. anything else is looked up as a device name (`remotes/<remote>/<name>/head`), a session
///    id or a unique prefix of one (`sessions/<id>`; an exact id wins over longer ids it
///    begins), and, with at least 4 hex characters, a snapshot id prefix, all at once: one match
///    is the answer, several are [`Error::AmbiguousPrefix`] listing them all.
///
/// # Errors
/// [`Error::UnknownRevision`] (saying why), [`Error::AmbiguousPrefix`].
pub fn resolve(cx: &Context, rev: &str) -> Result<ObjectId> {
    let unknown = |why: String| Error::UnknownRevision {
        rev: rev.to_owned(),
        why,
    };
    let (base, ops) = parse_rev(rev).map_err(unknown)?;
    let (mut id, name) = resolve_name(cx, rev, base)?;
    // The part applied so far, for messages (`head~2 (3fa2…) has no parent`).
    let mut done = if base.is_empty() { HEAD } else { base }.to_owned();
    for op in ops {
        match op {
            Op::Reflog(n) => {
                let Some(name) = &name else {
                    return Err(unknown(format!(
                        "'@{{{n}}}' reads the reflog of a ref (head, sessions/<id>, a device or session name), and '{base}' is a snapshot id"
                    )));
                };
                let values: Vec<ObjectId> = cx
                    .refs
                    .reflog(name)?
                    .into_iter()
                    .rev()
                    .filter_map(|e| e.new)
                    .collect();
                id = *values.get(n).ok_or_else(|| {
                    unknown(format!(
                        "the reflog of {name} holds {} value{}",
                        values.len(),
                        if values.len() == 1 { "" } else { "s" }
                    ))
                })?;
                done.push_str(&format!("@{{{n}}}"));
            }
            Op::Back(n) => {
                for i in 0..n {
                    let s = cx.objects.read_snapshot(&id)?;
                    id = *s.parents.first().ok_or_else(|| {
                        unknown(format!("{done}~{i} ({}) has no parent", id.short(SHORT_ID)))
                    })?;
                }
                done.push_str(&format!("~{n}"));
            }
            Op::Parent(0) => done.push_str("^0"),
            Op::Parent(n) => {
                let s = cx.objects.read_snapshot(&id)?;
                let k = s.parents.len();
                id = *s.parents.get(n - 1).ok_or_else(|| {
                    unknown(format!(
                        "{done} ({}) has {k} parent{}",
                        id.short(SHORT_ID),
                        if k == 1 { "" } else { "s" }
                    ))
                })?;
                done.push_str(&format!("^{n}"));
            }
        }
    }
    Ok(id)
}

/// Hex characters of an id in human output (`--full` shows all 64).
pub const SHORT_ID: usize = 12;

/// What follows the name of a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `@{N}`: the Nth previous value of the ref, from the reflog.
    Reflog(usize),
    /// `~N`: N first parents back.
    Back(usize),
    /// `^N`: the Nth parent (0: itself).
    Parent(usize),
}

/// Splits a revision into its name and its suffixes; the error says what is wrong with them.
/// Ref names hold none of `~^@{}` (`check_name`), so the name ends at the first of them.
fn parse_rev(rev: &str) -> std::result::Result<(&str, Vec<Op>), String> {
    let end = rev.find(['~', '^', '@']).unwrap_or(rev.len());
    let (base, mut rest) = rev.split_at(end);
    let mut ops = Vec::new();
    let number = |s: &str, what: &str| -> std::result::Result<(usize, usize), String> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Ok((1, 0));
        }
        s[..digits]
            .parse::<usize>()
            .map(|n| (n, digits))
            .map_err(|_| format!("'{what}{}' is too large a number", &s[..digits]))
    };
    while let Some(c) = rest.chars().next() {
        let after = &rest[1..];
        match c {
            '~' | '^' => {
                let (n, len) = number(after, if c == '~' { "~" } else { "^" })?;
                ops.push(if c == '~' { Op::Back(n) } else { Op::Parent(n) });
                rest = &after[len..];
            }
            '@' => {
                if !ops.is_empty() {
                    return Err(
                        "'@{N}' must follow the name directly (head@{1}~2, not head~2@{1})".into(),
                    );
                }
                let inner = after
                    .strip_prefix('{')
                    .and_then(|a| a.split_once('}'))
                    .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                let Some((n, tail)) = inner else {
                    return Err(
                        "'@' must be followed by '{N}', N a number of reflog entries back".into(),
                    );
                };
                let n = n
                    .parse::<usize>()
                    .map_err(|_| format!("'@{{{n}}}' is too large a number"))?;
                ops.push(Op::Reflog(n));
                rest = tail;
            }
            _ => {
                return Err(format!(
                    "'{rest}' is not a suffix: after a name come '@{{N}}', '~N' and '^N'"
                ));
            }
        }
    }
    Ok((base, ops))
}

/// The snapshot a revision's name (without suffixes) names, and the ref it came from (for
/// `@{N}`); see [`resolve`] for the order of the rules.
fn resolve_name(cx: &Context, rev: &str, base: &str) -> Result<(ObjectId, Option<String>)> {
    let unknown = |why: String| Error::UnknownRevision {
        rev: rev.to_owned(),
        why,
    };
    // 1. The head.
    if base.is_empty() || base.eq_ignore_ascii_case(HEAD) {
        return match cx.refs.get(HEAD)? {
            Some(id) => Ok((id, Some(HEAD.to_owned()))),
            None => Err(unknown(
                "there is no head yet: nothing was saved or restored on this device".into(),
            )),
        };
    }
    // 2. A full id names its snapshot without reading any ref (so a damaged ref file or
    // packed-refs cannot stand in the way of `restore <id> --to DIR`).
    if base.len() == 64
        && let Ok(id) = ObjectId::from_hex(base)
    {
        return full_id(cx, id, rev).map(|id| (id, None));
    }
    // 3. Ref names: local (`sessions/<id>`, raw or encoded) or remote-tracking.
    if base.contains('/') {
        let mut names = vec![base.to_owned()];
        if let Some(s) = base.strip_prefix("sessions/")
            && !s.is_empty()
        {
            names.push(session_ref(s.as_bytes()));
        }
        names.push(format!("remotes/{base}"));
        let mut found: Vec<(String, ObjectId)> = Vec::new();
        for n in names {
            if check_name(&n).is_ok()
                && !found.iter().any(|(f, _)| *f == n)
                && let Some(id) = cx.refs.get(&n)?
            {
                found.push((n, id));
            }
        }
        return match found.len() {
            0 => Err(unknown(format!("no ref '{base}' or 'remotes/{base}'"))),
            1 => {
                let (n, id) = found.remove(0);
                Ok((id, Some(n)))
            }
            _ => Err(ambiguous(
                cx,
                base,
                found.into_iter().map(|(n, id)| ("ref", n, id)),
            )?),
        };
    }
    // 4. Devices, sessions and snapshot id prefixes, together.
    let mut refs_failed = None;
    let mut named: Vec<(&'static str, String, ObjectId)> = Vec::new();
    match cx.refs.list("remotes/") {
        Ok(list) => {
            for (n, id) in list {
                let parts: Vec<&str> = n.split('/').collect();
                if parts.len() == 4 && parts[2] == base && parts[3] == HEAD {
                    named.push(("device", n, id));
                }
            }
        }
        Err(e) => refs_failed = Some(e),
    }
    match cx.refs.list("sessions/") {
        Ok(list) => {
            let enc = session_ref(base.as_bytes());
            let mut sessions: Vec<(String, ObjectId)> = list
                .into_iter()
                .filter(|(n, _)| n.starts_with(&enc))
                .collect();
            if let Some(exact) = sessions.iter().position(|(n, _)| *n == enc) {
                sessions = vec![sessions.swap_remove(exact)];
            }
            named.extend(sessions.into_iter().map(|(n, id)| ("session", n, id)));
        }
        Err(e) => refs_failed = refs_failed.or(Some(e)),
    }
    let is_hex = base.bytes().all(|b| b.is_ascii_hexdigit());
    let mut damaged: Vec<Error> = Vec::new();
    if is_hex && base.len() >= 4 {
        for id in id_prefix(cx, base, &mut damaged) {
            named.push(("snapshot", id.to_hex(), id));
        }
    }
    match named.len() {
        1 => {
            let (kind, n, id) = named.remove(0);
            Ok((id, (kind != "snapshot").then_some(n)))
        }
        0 => {
            if damaged.len() == 1 {
                return Err(damaged.remove(0));
            }
            if let Some(e) = refs_failed {
                return Err(e);
            }
            Err(unknown(if is_hex && base.len() < 4 {
                "no ref, device or session matches, and a snapshot id prefix needs at least 4 hex characters".into()
            } else {
                "no ref, device, session or snapshot id matches".into()
            }))
        }
        _ => Err(ambiguous(cx, base, named.into_iter())?),
    }
}

/// The snapshots whose id begins with `prefix` (≥ 4 hex), loose or packed; damaged objects the
/// prefix names go to `damaged` (reported when no sound snapshot matches, as "unknown
/// revision" would send the user looking for a typo).
fn id_prefix(cx: &Context, prefix: &str, damaged: &mut Vec<Error>) -> Vec<ObjectId> {
    let prefix = prefix.to_ascii_lowercase();
    let fan = cx.objects.root().join("objects").join(&prefix[..2]);
    let mut matches = Vec::new();
    let mut consider =
        |id: ObjectId, matches: &mut Vec<ObjectId>| match cx.objects.read_snapshot(&id) {
            Ok(_) => {
                if !matches.contains(&id) {
                    matches.push(id);
                }
            }
            Err(e @ Error::CorruptObject { .. }) => damaged.push(e),
            Err(_) => {}
        };
    if let Ok(rd) = std::fs::read_dir(&fan) {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(n) = name.to_str() else { continue };
            if n.starts_with(&prefix[2..])
                && let Ok(id) = ObjectId::from_hex(&format!("{}{n}", &prefix[..2]))
            {
                // Only snapshots count as revisions.
                consider(id, &mut matches);
            }
        }
    }
    for (_, ids) in cx.objects.pack_contents() {
        for id in ids {
            if id.to_hex().starts_with(&prefix) && !matches.contains(&id) {
                consider(id, &mut matches);
            }
        }
    }
    matches
}

/// [`Error::AmbiguousPrefix`] for `base`, each candidate with its snapshot's time and message.
fn ambiguous(
    cx: &Context,
    base: &str,
    named: impl Iterator<Item = (&'static str, String, ObjectId)>,
) -> Result<Error> {
    let mut candidates = Vec::new();
    for (kind, name, id) in named {
        let s = cx.objects.read_snapshot(&id)?;
        candidates.push(Candidate {
            kind,
            name,
            snapshot: id,
            time: utc(s.time_ns),
            message: s.message,
        });
    }
    Ok(Error::AmbiguousPrefix {
        prefix: base.to_owned(),
        candidates,
    })
}

/// The calendar date (year, month 1–12, day 1–31) of a day number since 1970-01-01
/// (Howard Hinnant's civil-from-days).
#[must_use]
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats ns since epoch as `YYYY-MM-DD HH:MM:SS` UTC.
#[must_use]
pub fn utc(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A full id as a revision: its snapshot, or why it cannot be one. A damaged snapshot is
/// damage (exit 3), not an unknown revision; so is an id that may be in a pack whose index
/// does not load.
fn full_id(cx: &Context, id: ObjectId, rev: &str) -> Result<ObjectId> {
    match cx.objects.read_snapshot(&id) {
        Ok(_) => Ok(id),
        Err(Error::MissingObject { .. }) => {
            if let Some((idx, why)) = cx.objects.bad_pack_indexes().into_iter().next() {
                return Err(Error::corrupt_file(
                    idx,
                    format!("{why} (snapshot {id} may be in its pack)"),
                ));
            }
            if let Some(pack) = cx.packs_without_index()?.into_iter().next() {
                return Err(Error::corrupt_file(
                    pack,
                    format!("it has no index (snapshot {id} may be in it)"),
                ));
            }
            Err(Error::UnknownRevision {
                rev: rev.to_owned(),
                why: "no snapshot has this id".into(),
            })
        }
        // Only snapshots are revisions (a tree or blob id is not).
        Err(Error::WrongKind { found, .. }) => Err(Error::UnknownRevision {
            rev: rev.to_owned(),
            why: format!("this id names a {found}, not a snapshot"),
        }),
        Err(e) => Err(e),
    }
}

/// History newest first, from `rev` (default: the head; with `session`, that session's ref), following all
/// parents; with `session`, only snapshots where that session changed.
///
/// # Errors
/// Unknown revision, missing/corrupt snapshots.
pub fn log(
    cx: &Context,
    rev: Option<&str>,
    limit: Option<usize>,
    session: Option<&str>,
) -> Result<Vec<LogEntry>> {
    let mut refs_at: BTreeMap<ObjectId, Vec<String>> = BTreeMap::new();
    for (name, id) in cx.refs.list("")? {
        refs_at.entry(id).or_default().push(name);
    }
    // (id, the ref it came from)
    let (starts, from): (Vec<(ObjectId, Option<String>)>, String) = match rev {
        Some(r) => (vec![(resolve(cx, r)?, None)], r.to_owned()),
        None => {
            // A session's own ref, else the head (a session deleted since keeps its history).
            let mut name = HEAD.to_owned();
            if let Some(s) = session {
                let own = session_ref(s.as_bytes());
                if cx.refs.get(&own)?.is_some() {
                    name = own;
                }
            }
            let starts = cx
                .refs
                .get(&name)?
                .into_iter()
                .map(|id| (id, Some(name.clone())))
                .collect();
            (starts, name)
        }
    };
    let (shallow_ids, _) = cx.read_shallow();
    let mut heap = BinaryHeap::new();
    let mut seen = HashSet::new();
    let mut snaps: BTreeMap<ObjectId, Snapshot> = BTreeMap::new();
    for (s, name) in starts {
        if seen.insert(s) {
            let snap = match &name {
                Some(n) => cx.ref_snapshot(n, s)?,
                None => cx.objects.read_snapshot(&s)?,
            };
            heap.push(ByTime(snap.time_ns, s));
            snaps.insert(s, snap);
        }
    }
    let mut out = Vec::new();
    let limit = limit.unwrap_or(usize::MAX);
    let mut flat_cache: BTreeMap<ObjectId, Flat> = BTreeMap::new();
    while let Some(ByTime(_, id)) = heap.pop() {
        if out.len() >= limit {
            break;
        }
        let snap = snaps.remove(&id).expect("inserted with the heap entry");
        let shallow = shallow_ids.contains(&id);
        for p in snap
            .parents
            .iter()
            .filter(|p| !shallow || cx.objects.has(p))
        {
            if seen.insert(*p) {
                let ps = cx.objects.read_snapshot(p)?;
                heap.push(ByTime(ps.time_ns, *p));
                snaps.insert(*p, ps);
            }
        }
        if let Some(sess) = session {
            let digest = |st: &Context,
                          root: &ObjectId,
                          cache: &mut BTreeMap<ObjectId, Flat>|
             -> Result<Vec<(Vec<u8>, crate::snapshot::Leaf)>> {
                if !cache.contains_key(root) {
                    cache.insert(*root, flatten(&st.objects, root)?);
                }
                Ok(cache[root]
                    .leaves
                    .iter()
                    .filter(|(p, _)| session_of(p) == Some(sess.as_bytes()))
                    .map(|(p, l)| (p.clone(), *l))
                    .collect())
            };
            let mine = digest(cx, &snap.root, &mut flat_cache)?;
            let parent = match snap.parents.first() {
                Some(p) => {
                    let ps = cx.objects.read_snapshot(p)?;
                    digest(cx, &ps.root, &mut flat_cache)?
                }
                None => Vec::new(),
            };
            if mine == parent {
                continue;
            }
        }
        out.push(LogEntry {
            id,
            time_ns: snap.time_ns,
            device: snap.device,
            message: snap.message,
            session: snap.session,
            parents: snap.parents,
            added: snap.summary.added,
            modified: snap.summary.modified,
            deleted: snap.summary.deleted,
            refs: refs_at.get(&id).cloned().unwrap_or_default(),
        });
    }
    // A session no snapshot of this history holds (the filter keeps the one each session
    // appears in first) and that is not live either is a typo, not an empty history.
    if let Some(s) = session
        && out.is_empty()
        && limit > 0
        && !session_is_live(cx, s)
    {
        return Err(Error::UnknownSession(
            s.to_owned(),
            format!("the history of {from} or the live state"),
        ));
    }
    Ok(out)
}

/// Whether `state/sessions/` holds a file or folder of session `session`.
fn session_is_live(cx: &Context, session: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = std::fs::read_dir(cx.layout().state.join("sessions")) else {
        return false;
    };
    rd.flatten().any(|e| {
        let mut p = b"state/sessions/".to_vec();
        p.extend_from_slice(e.file_name().as_bytes());
        session_of(&p) == Some(session.as_bytes())
    })
}

/// Differences between two revisions.
///
/// # Errors
/// Unknown revisions, missing/corrupt objects.
pub fn diff(cx: &Context, a: &str, b: &str) -> Result<Vec<Change>> {
    let fa = flatten(
        &cx.objects,
        &cx.objects.read_snapshot(&resolve(cx, a)?)?.root,
    )?;
    let fb = flatten(
        &cx.objects,
        &cx.objects.read_snapshot(&resolve(cx, b)?)?.root,
    )?;
    Ok(diff_flat(&fa, &fb))
}

/// A snapshot and its changes relative to its first parent.
///
/// # Errors
/// Unknown revision, missing/corrupt objects.
pub fn show(cx: &Context, rev: &str) -> Result<(ObjectId, Snapshot, Vec<Change>)> {
    let id = resolve(cx, rev)?;
    let s = cx.objects.read_snapshot(&id)?;
    let now = flatten(&cx.objects, &s.root)?;
    let before = match s.parents.first() {
        Some(p) => flatten(&cx.objects, &cx.objects.read_snapshot(p)?.root)?,
        None => Flat::with_roots(),
    };
    Ok((id, s, diff_flat(&before, &now)))
}
