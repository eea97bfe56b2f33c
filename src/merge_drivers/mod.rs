//! Three-way merges of one file's content, for a file changed on two devices since their merge
//! base. Pure: bytes in, bytes out; no I/O and nothing from the rest of the crate, so sync (or a
//! test) calls it with whatever blobs it has.
//!
//! A driver is chosen by path; the rules each one follows are written down in
//! `docs/merge-rules.md`, and the tests in `tests.rs` pin them:
//!
//! - `state/journal/…`: an append-only log. Journal events (lines with a schema version `v` and
//!   an `id`, the segments of `src/journal/`) merge event by event: each id once, ordered by
//!   time then id; other lines keep the line rule (shared prefix once, then left's tail, then
//!   right's).
//! - `*.json`: objects merged key by key, recursively.
//! - `*.toml`: tables merged key by key with `toml_edit`, left's comments and layout kept.
//! - `*.ini`, `*.conf`, `*.cfg`, `*.properties`: `key = value` / `key value` lines merged per
//!   (section, key); a file the key model cannot hold without losing lines goes to diff3.
//! - any other UTF-8 text: a line-based diff3, like `git merge-file`.
//! - anything else (a NUL byte, invalid UTF-8): [`FileMerge::Conflict`].
//!
//! `left` wins every conflict, and nothing here depends on hash order or the clock, so two
//! devices merging the same pair (each calling with the same `left`) compute the same bytes.
//!
//! Every structured driver works the same way: parse each side into a `Node` tree, merge the
//! trees (one function for all of them, `merge_maps`), then write the merged tree back in left's
//! formatting and parse what was written again: if it does not read back as the merged tree,
//! the file is merged as text (key = value files) or reported as a conflict (TOML) rather than
//! written wrong.

use std::collections::HashMap;

/// The outcome of merging one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMerge {
    /// Merged with no conflict.
    Clean(Vec<u8>),
    /// Merged, but these items (key paths like `font.size` or `[section] key`, or line ranges
    /// like `lines 3-5`) changed on both sides; `left`'s value was kept for each.
    Partial {
        /// The merged content.
        bytes: Vec<u8>,
        /// The items changed on both sides, in the merged file's order (left's keys, then
        /// keys only right has; lines top to bottom).
        conflicts: Vec<String>,
    },
    /// Cannot be merged (binary, unparsable on a side, structure changed): keep left's whole
    /// file, report the file.
    Conflict,
}

/// Merges one file changed on two devices since `base` (`None`: no common version, e.g. the
/// file was added on both sides or the history is shallow).
///
/// `left` wins every conflict (the caller picks left deterministically, so two devices merging
/// the same pair compute the same bytes). When only one side changed, the result is that side's
/// bytes exactly, whatever the kind of file. Text that is neither JSON, TOML nor key = value is
/// merged with diff3, and regions changed differently on both sides give `Partial` (left's
/// lines kept, named `lines A-B`), not `Conflict`. The rules: `docs/merge-rules.md`.
#[must_use]
pub fn merge_file(path: &str, base: Option<&[u8]>, left: &[u8], right: &[u8]) -> FileMerge {
    if left == right || base == Some(right) {
        return FileMerge::Clean(left.to_vec());
    }
    if base == Some(left) {
        return FileMerge::Clean(right.to_vec());
    }
    // The vault's ciphertext is opaque: two versions of a secret are a conflict that keeps
    // both (one kept, one set aside), never a merge of their bytes.
    if is_ciphertext(path) {
        return FileMerge::Conflict;
    }
    let kind = kind_of(path);
    if kind == Kind::Journal {
        if let Some(m) = merge_events(base, left, right) {
            return FileMerge::Clean(m);
        }
        return FileMerge::Clean(merge_journal3(base, left, right));
    }
    let (Some(l), Some(r)) = (as_text(left), as_text(right)) else {
        return FileMerge::Conflict;
    };
    // A base that is not text is no help for merging text: merge as if there were none.
    let b = base.and_then(as_text);
    match kind {
        Kind::Json => json::merge(b, l, r),
        Kind::Toml => toml_files::merge(b, l, r),
        Kind::KeyValue => kv::merge(b, l, r),
        Kind::Text | Kind::Journal => text::merge(b, l, r),
    }
}

/// Resolving a `Partial` conflict in favour of the other side: `current` with `other`'s values
/// for exactly `keys` (as reported in `conflicts`). None when not applicable.
///
/// A key path `other` lacks is removed from `current`; one `current` lacks is added. For line
/// ranges (`lines A-B`, `after line N`, numbered as in `current`), the lines of `current` there
/// are replaced by the lines `other` has in their place (a two-way diff of `current` and `other`
/// finds them). Not applicable (None): journals, binary files, a side that does not parse, a key
/// that is not in the format `merge_file` reports, or line ranges mixed with key paths.
#[must_use]
pub fn apply_keys(path: &str, current: &[u8], other: &[u8], keys: &[String]) -> Option<Vec<u8>> {
    if is_ciphertext(path) {
        return None;
    }
    let kind = kind_of(path);
    if kind == Kind::Journal {
        return None;
    }
    let (c, o) = (as_text(current)?, as_text(other)?);
    if keys.is_empty() {
        return Some(current.to_vec());
    }
    match kind {
        Kind::Json => json::apply(c, o, keys),
        Kind::Toml => toml_files::apply(c, o, keys),
        Kind::KeyValue => kv::apply(c, o, keys),
        Kind::Text | Kind::Journal => text::apply(c, o, keys),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Journal,
    Json,
    Toml,
    KeyValue,
    Text,
}

/// A secret of the vault (`state/secrets/NAME.age`): age ciphertext, opaque.
fn is_ciphertext(path: &str) -> bool {
    path.starts_with("state/secrets/") && path.ends_with(".age")
}

fn kind_of(path: &str) -> Kind {
    if path.starts_with("state/journal/") {
        return Kind::Journal;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "json" => Kind::Json,
        "toml" => Kind::Toml,
        "ini" | "conf" | "cfg" | "properties" => Kind::KeyValue,
        _ => Kind::Text,
    }
}

/// Text is valid UTF-8 without NUL bytes (git's test for binary, over the whole file).
fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

fn outcome(bytes: Vec<u8>, conflicts: Vec<String>) -> FileMerge {
    if conflicts.is_empty() {
        FileMerge::Clean(bytes)
    } else {
        FileMerge::Partial { bytes, conflicts }
    }
}

/// Append-only logs: keep what both sides share once, then left's tail, then right's. The shared
/// part is their common prefix cut back to a line end (at least the base when both extend it;
/// without a base, e.g. after a shallow pull, the same rule avoids doubling the shared lines).
/// Append-only logs against their base. When both sides extend the base (the usual case) this
/// is [`merge_journal`]. When a side does not — an earlier merge put another device's lines
/// before this one's, or a side rewrote the log — the lines merge as a multiset: each line as
/// often as the base has it, plus what each side added, less what a side removed; in left's
/// order, then right's additions in right's order. Without a base (none, or several that
/// disagree) the lines merge as a union. A line is never doubled nor lost.
fn merge_journal3(base: Option<&[u8]>, left: &[u8], right: &[u8]) -> Vec<u8> {
    let b = base.unwrap_or_default();
    if base.is_some() && left.starts_with(b) && right.starts_with(b) {
        return merge_journal(left, right);
    }
    // Without a base, one side extending the other is the longer one (a line may be completed).
    if base.is_none() && (left.starts_with(right) || right.starts_with(left)) {
        return if left.len() >= right.len() {
            left
        } else {
            right
        }
        .to_vec();
    }
    let lines = |x: &'_ [u8]| -> Vec<Vec<u8>> {
        x.split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (bl, ll, rl) = (lines(b), lines(left), lines(right));
    let count = |v: &[Vec<u8>]| {
        let mut m: std::collections::HashMap<Vec<u8>, i64> = std::collections::HashMap::new();
        for l in v {
            *m.entry(l.clone()).or_default() += 1;
        }
        m
    };
    let (cb, cl, cr) = (count(&bl), count(&ll), count(&rl));
    // No base: a union, each line as often as the side that has it most.
    let union = base.is_none();
    let get =
        |m: &std::collections::HashMap<Vec<u8>, i64>, l: &Vec<u8>| m.get(l).copied().unwrap_or(0);
    let mut emitted: std::collections::HashMap<Vec<u8>, i64> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for l in ll.iter().chain(rl.iter()) {
        let target = if union {
            get(&cl, l).max(get(&cr, l))
        } else {
            (get(&cl, l) + get(&cr, l) - get(&cb, l)).max(0)
        };
        let e = emitted.entry(l.clone()).or_default();
        if *e < target {
            *e += 1;
            out.extend_from_slice(l);
            out.push(b'\n');
        }
    }
    out
}

/// The events of a journal file, `(time, id, line)`, when every line is one (a JSON object with
/// a schema version `v` of 1 or more, a string `id` and a string `time`) and the file ends with
/// a newline; `None` otherwise (legacy or demo lines, a torn last line).
fn events(bytes: &[u8]) -> Option<Vec<(String, String, &[u8])>> {
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        return None;
    }
    let mut out = Vec::new();
    for line in bytes.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        let o = v.as_object()?;
        o.get("v")?.as_u64().filter(|n| *n >= 1)?;
        let id = o.get("id")?.as_str()?.to_owned();
        let time = o.get("time")?.as_str()?.to_owned();
        out.push((time, id, line));
    }
    Some(out)
}

/// Journal segments merged event by event: every event of either side once (deduplicated by
/// id, left's line kept when the sides differ), less the events the base had that a side
/// removed, ordered by time then id — so both devices compute the same bytes whichever is
/// left. `None` when a side is not all events (the line rules apply).
fn merge_events(base: Option<&[u8]>, left: &[u8], right: &[u8]) -> Option<Vec<u8>> {
    let l = events(left)?;
    let r = events(right)?;
    // A base that is not all events is no help: merge as if there were none.
    let b = base.and_then(events).unwrap_or_default();
    let ids = |v: &[(String, String, &[u8])]| -> std::collections::HashSet<String> {
        v.iter().map(|(_, id, _)| id.clone()).collect()
    };
    let (li, ri) = (ids(&l), ids(&r));
    let removed: std::collections::HashSet<&str> = b
        .iter()
        .filter(|(_, id, _)| !li.contains(id) || !ri.contains(id))
        .map(|(_, id, _)| id.as_str())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut all: Vec<&(String, String, &[u8])> = l
        .iter()
        .chain(r.iter())
        .filter(|(_, id, _)| !removed.contains(id.as_str()) && seen.insert(id.clone()))
        .collect();
    all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut out = Vec::with_capacity(left.len().max(right.len()));
    for (_, _, line) in all {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    Some(out)
}

fn merge_journal(left: &[u8], right: &[u8]) -> Vec<u8> {
    let mut shared = left.iter().zip(right).take_while(|(x, y)| x == y).count();
    let diverged = shared < left.len() && shared < right.len();
    if diverged {
        shared = left[..shared]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
    }
    let mut m = left.to_vec();
    // Left's last line unterminated and right's tail starting a new line: without a line break
    // the two would fuse into one line.
    if diverged && !m.ends_with(b"\n") {
        m.push(b'\n');
    }
    m.extend_from_slice(&right[shared..]);
    m
}

// ---------------------------------------------------------------------------------------------
// The tree every structured driver merges.

/// A parsed document: maps merge key by key; arrays and scalars are single values. Map equality
/// ignores key order (reordering keys is not a change); keys are unique (parsers keep the last).
#[derive(Debug, Clone)]
enum Node<S> {
    Map(Vec<(String, Node<S>)>),
    Array(Vec<Node<S>>),
    Scalar(S),
}

type Map<S> = Vec<(String, Node<S>)>;

impl<S: PartialEq> PartialEq for Node<S> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Node::Map(a), Node::Map(b)) => maps_equal(a, b),
            (Node::Array(a), Node::Array(b)) => a == b,
            (Node::Scalar(a), Node::Scalar(b)) => a == b,
            _ => false,
        }
    }
}

fn maps_equal<S: PartialEq>(a: &[(String, Node<S>)], b: &[(String, Node<S>)]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.iter()
        .zip(b)
        .all(|((ka, va), (kb, vb))| ka == kb && va == vb)
    {
        return true;
    }
    let bi = index(b);
    a.iter()
        .all(|(k, v)| bi.get(k.as_str()).is_some_and(|w| *w == v))
}

fn index<S>(m: &[(String, Node<S>)]) -> HashMap<&str, &Node<S>> {
    m.iter().map(|(k, v)| (k.as_str(), v)).collect()
}

fn get<'a, S>(m: &'a [(String, Node<S>)], k: &str) -> Option<&'a Node<S>> {
    m.iter().find(|(kk, _)| kk == k).map(|(_, v)| v)
}

fn as_map<S>(n: &Node<S>) -> Option<&[(String, Node<S>)]> {
    match n {
        Node::Map(m) => Some(m),
        _ => None,
    }
}

/// One value three ways; `None` is "absent". Unchanged on a side → the other side's; changed the
/// same way → that; maps changed on both → merged key by key; anything else changed on both
/// sides (including deleted on one, changed on the other) → left's, and `path` is a conflict.
fn merge_value<S: Clone + PartialEq>(
    b: Option<&Node<S>>,
    l: Option<&Node<S>>,
    r: Option<&Node<S>>,
    path: &mut Vec<String>,
    conflicts: &mut Vec<Vec<String>>,
) -> Option<Node<S>> {
    if r == b || l == r {
        return l.cloned();
    }
    if l == b {
        return r.cloned();
    }
    if let (Some(Node::Map(lm)), Some(Node::Map(rm))) = (l, r) {
        let bm = b.and_then(as_map);
        return Some(Node::Map(merge_maps(bm, lm, rm, path, conflicts)));
    }
    conflicts.push(path.clone());
    l.cloned()
}

/// Key by key; the result has left's keys in left's order, then keys only right has in right's.
fn merge_maps<S: Clone + PartialEq>(
    b: Option<&[(String, Node<S>)]>,
    l: &[(String, Node<S>)],
    r: &[(String, Node<S>)],
    path: &mut Vec<String>,
    conflicts: &mut Vec<Vec<String>>,
) -> Map<S> {
    let bi = b.map(index).unwrap_or_default();
    let li = index(l);
    let ri = index(r);
    let mut out = Vec::with_capacity(l.len());
    let l_then_r = l.iter().map(|(k, v)| (k, Some(v))).chain(
        r.iter()
            .filter(|(k, _)| !li.contains_key(k.as_str()))
            .map(|(k, _)| (k, None)),
    );
    for (k, lv) in l_then_r {
        path.push(k.clone());
        let (bv, rv) = (bi.get(k.as_str()).copied(), ri.get(k.as_str()).copied());
        if let Some(v) = merge_value(bv, lv, rv, path, conflicts) {
            out.push((k.clone(), v));
        }
        path.pop();
    }
    out
}

/// Sets `path` in `m` to what `other` has there: removed when `other` lacks it, `other`'s whole
/// subtree when `m` has no map on the way.
fn set_path<S: Clone>(m: &mut Map<S>, path: &[String], other: Option<&[(String, Node<S>)]>) {
    let Some((k, rest)) = path.split_first() else {
        return;
    };
    let ov = other.and_then(|o| get(o, k));
    if rest.is_empty() {
        match ov {
            Some(v) => upsert(m, k, v.clone()),
            None => m.retain(|(kk, _)| kk != k),
        }
        return;
    }
    let om = ov.and_then(as_map);
    match m.iter_mut().find(|(kk, _)| kk == k) {
        Some((_, Node::Map(cm))) => set_path(cm, rest, om),
        _ => {
            if let Some(v) = ov {
                upsert(m, k, v.clone());
            }
        }
    }
}

fn upsert<S>(m: &mut Map<S>, k: &str, v: Node<S>) {
    match m.iter_mut().find(|(kk, _)| kk == k) {
        Some(slot) => slot.1 = v,
        None => m.push((k.to_owned(), v)),
    }
}

/// `font.size`; a segment that is not `[A-Za-z0-9_-]+` is written as a JSON string
/// (`plugins."a.b".on`), which is also how TOML quotes keys.
fn dotted(path: &[String]) -> String {
    path.iter()
        .map(|s| {
            if is_bare(s) {
                s.clone()
            } else {
                serde_json::to_string(s).expect("a string always serializes")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn is_bare(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// The inverse of [`dotted`].
fn parse_dotted(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if let Some(q) = rest.strip_prefix('"') {
            let mut escaped = false;
            let end = q.char_indices().find_map(|(i, c)| {
                let closes = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                closes.then_some(i)
            })?;
            out.push(serde_json::from_str::<String>(&rest[..end + 2]).ok()?);
            rest = &q[end + 1..];
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            if !is_bare(&rest[..end]) {
                return None;
            }
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix('.')?;
    }
}

mod diff;

mod text;

mod json;

mod toml_files;

mod kv;

#[cfg(test)]
mod tests;
