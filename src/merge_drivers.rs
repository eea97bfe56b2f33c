//! Three-way merges of one file's content, for a file changed on two devices since their merge
//! base. Pure: bytes in, bytes out; no I/O and nothing from the rest of the crate, so sync (or a
//! test) calls it with whatever blobs it has.
//!
//! A driver is chosen by path; the rules each one follows are written down in
//! `docs/merge-rules.md`, and the tests at the bottom of this file pin them:
//!
//! - `state/journal/…`: an append-only log (shared prefix once, then left's tail, then right's).
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
    let kind = kind_of(path);
    if kind == Kind::Journal {
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

// ---------------------------------------------------------------------------------------------
// Line diffs.

mod diff {
    use std::collections::HashMap;

    /// Lines with their terminators, so that a last line without `\n` differs from one with it.
    pub(super) fn lines(s: &str) -> Vec<&str> {
        s.split_inclusive('\n').collect()
    }

    /// Steps allowed per diff (diagonals visited plus lines followed along them): about a
    /// second's work.
    const BUDGET: u64 = 50_000_000;

    /// Each distinct line gets a number, so that the diff compares integers.
    pub(super) fn intern<'a>(seqs: &[&[&'a str]]) -> Vec<Vec<u32>> {
        let mut ids: HashMap<&'a str, u32> = HashMap::new();
        seqs.iter()
            .map(|s| {
                s.iter()
                    .map(|l| {
                        let n = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                        *ids.entry(l).or_insert(n)
                    })
                    .collect()
            })
            .collect()
    }

    /// A longest common subsequence of `a` and `b` as matched index pairs, increasing in both:
    /// Myers' O((N+M)·D) algorithm in linear space (split at a middle snake, no recursion).
    ///
    /// Two large files with little in common would cost O(N·M); past a budget of work the
    /// regions left are taken as entirely different (still a common subsequence, only not the
    /// longest), which makes diff3 coarser (more conflicts), never wrong.
    pub(super) fn matches(a: &[u32], b: &[u32]) -> Vec<(usize, usize)> {
        matches_within(a, b, BUDGET)
    }

    pub(super) fn matches_within(a: &[u32], b: &[u32], mut budget: u64) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut todo = vec![(0, a.len(), 0, b.len())];
        while let Some((mut a0, mut a1, mut b0, mut b1)) = todo.pop() {
            while a0 < a1 && b0 < b1 && a[a0] == b[b0] {
                out.push((a0, b0));
                a0 += 1;
                b0 += 1;
            }
            while a0 < a1 && b0 < b1 && a[a1 - 1] == b[b1 - 1] {
                a1 -= 1;
                b1 -= 1;
                out.push((a1, b1));
            }
            if a0 == a1 || b0 == b1 {
                continue;
            }
            // With common ends stripped there are at least two edits, so the split point is
            // strictly inside and both halves are smaller; the guard only makes that explicit.
            if let Some((x, y)) = middle_split(&a[a0..a1], &b[b0..b1], &mut budget)
                && (x, y) != (0, 0)
                && (x, y) != (a1 - a0, b1 - b0)
            {
                todo.push((a0, a0 + x, b0, b0 + y));
                todo.push((a0 + x, a1, b0 + y, b1));
            }
        }
        out.sort_unstable();
        out
    }

    /// A point on an optimal edit path, found by searching from both ends until the paths meet.
    /// Only points inside the edit graph are ever stored (`NONE` marks an unreachable diagonal),
    /// so every index stays in bounds whatever the lengths.
    fn middle_split(a: &[u32], b: &[u32], budget: &mut u64) -> Option<(usize, usize)> {
        const NONE: isize = -1;
        let (n, m) = (a.len() as isize, b.len() as isize);
        let delta = n - m;
        let odd = delta & 1 != 0;
        let max = (n + m + 1) / 2;
        let off = max + 1;
        let at = |k: isize| (k + off) as usize;
        let mut vf = vec![NONE; (2 * off + 1) as usize];
        let mut vb = vec![NONE; (2 * off + 1) as usize];
        // Furthest x on diagonal k after one more edit, from the neighbours' previous values.
        let step = |v: &[isize], k: isize, d: isize| -> isize {
            if d == 0 {
                return 0;
            }
            let down = v[at(k + 1)]; // an insertion: same x, y + 1
            let down = if down >= 0 && down - k <= m {
                down
            } else {
                NONE
            };
            let right = v[at(k - 1)]; // a deletion: x + 1
            let right = if right >= 0 && right < n {
                right + 1
            } else {
                NONE
            };
            down.max(right)
        };
        for d in 0..=max {
            // A round visits 2·(d+1) diagonals; the snakes followed are charged as they go.
            let cost = 2 * (d as u64 + 1);
            if *budget < cost {
                return None;
            }
            *budget -= cost;
            let mut k = -d;
            while k <= d {
                let x0 = step(&vf, k, d);
                if x0 < 0 {
                    vf[at(k)] = NONE;
                    k += 2;
                    continue;
                }
                let y0 = x0 - k;
                let (mut x, mut y) = (x0, y0);
                while x < n && y < m && a[x as usize] == b[y as usize] {
                    x += 1;
                    y += 1;
                }
                *budget = budget.saturating_sub((x - x0) as u64);
                vf[at(k)] = x;
                let kr = delta - k;
                if odd && (-(d - 1)..=d - 1).contains(&kr) {
                    let xr = vb[at(kr)];
                    if xr >= 0 && x + xr >= n {
                        return Some((x0 as usize, y0 as usize));
                    }
                }
                k += 2;
            }
            let mut k = -d;
            while k <= d {
                let x0 = step(&vb, k, d);
                if x0 < 0 {
                    vb[at(k)] = NONE;
                    k += 2;
                    continue;
                }
                let y0 = x0 - k;
                let (mut x, mut y) = (x0, y0);
                while x < n && y < m && a[(n - x - 1) as usize] == b[(m - y - 1) as usize] {
                    x += 1;
                    y += 1;
                }
                *budget = budget.saturating_sub((x - x0) as u64);
                vb[at(k)] = x;
                let kf = delta - k;
                if !odd && (-d..=d).contains(&kf) {
                    let xf = vf[at(kf)];
                    if xf >= 0 && x + xf >= n {
                        return Some(((n - x0) as usize, (m - y0) as usize));
                    }
                }
                k += 2;
            }
        }
        None
    }

    /// For each element of `a`, the element of `b` it is matched with.
    pub(super) fn match_map(a: &[u32], b: &[u32]) -> Vec<Option<usize>> {
        let mut m = vec![None; a.len()];
        for (i, j) in matches(a, b) {
            m[i] = Some(j);
        }
        m
    }

    /// The differing regions of a two-way diff: `(a_start, a_end, b_start, b_end)`.
    pub(super) fn hunks(a: &[u32], b: &[u32]) -> Vec<(usize, usize, usize, usize)> {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        for (x, y) in matches(a, b).into_iter().chain([(a.len(), b.len())]) {
            if x > i || y > j {
                out.push((i, x, j, y));
            }
            (i, j) = (x + 1, y + 1);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Any other text: diff3.

mod text {
    use super::{FileMerge, diff, outcome};

    pub(super) fn merge(base: Option<&str>, left: &str, right: &str) -> FileMerge {
        let (b, l, r) = (
            diff::lines(base.unwrap_or("")),
            diff::lines(left),
            diff::lines(right),
        );
        let (out, conflicts) = merge_lines(&b, &l, &r);
        outcome(out.concat().into_bytes(), conflicts)
    }

    /// diff3 over lines, as `git merge-file` does: lines matched in all three files are stable;
    /// between them, a region changed on one side takes that side, changed identically on both
    /// takes either, changed differently keeps left's lines and names them. Adjacent changes
    /// (no stable line between) count as overlapping, as in git.
    pub(super) fn merge_lines<'a>(
        b: &[&'a str],
        l: &[&'a str],
        r: &[&'a str],
    ) -> (Vec<&'a str>, Vec<String>) {
        let ids = diff::intern(&[b, l, r]);
        let ml = diff::match_map(&ids[0], &ids[1]);
        let mr = diff::match_map(&ids[0], &ids[2]);
        let (mut i, mut j, mut k) = (0, 0, 0);
        let mut out = Vec::with_capacity(l.len().max(r.len()));
        let mut conflicts = Vec::new();
        while i < b.len() || j < l.len() || k < r.len() {
            let mut n = 0;
            while i + n < b.len() && ml[i + n] == Some(j + n) && mr[i + n] == Some(k + n) {
                n += 1;
            }
            if n > 0 {
                out.extend_from_slice(&l[j..j + n]);
                (i, j, k) = (i + n, j + n, k + n);
                continue;
            }
            let next = (i..b.len()).find_map(|o| Some((o, ml[o]?, mr[o]?)));
            let (o, lj, rk) = next.unwrap_or((b.len(), l.len(), r.len()));
            let (bc, lc, rc) = (&b[i..o], &l[j..lj], &r[k..rk]);
            if lc == bc {
                out.extend_from_slice(rc);
            } else if rc == bc || lc == rc {
                out.extend_from_slice(lc);
            } else {
                // Name only the lines that differ between the sides, not their shared edges.
                let pre = lc.iter().zip(rc).take_while(|(x, y)| x == y).count();
                let suf = lc[pre..]
                    .iter()
                    .rev()
                    .zip(rc[pre..].iter().rev())
                    .take_while(|(x, y)| x == y)
                    .count();
                let first = out.len() + pre + 1;
                let last = out.len() + lc.len() - suf;
                conflicts.push(if first <= last {
                    format!("lines {first}-{last}")
                } else {
                    format!("after line {last}")
                });
                out.extend_from_slice(lc);
            }
            (i, j, k) = (o, lj, rk);
        }
        (out, conflicts)
    }

    /// `lines A-B` → `(A-1, B)`; `after line N` → `(N, N)`: a half-open range of lines.
    pub(super) fn parse_item(s: &str) -> Option<(usize, usize)> {
        if let Some(n) = s.strip_prefix("after line ") {
            let n = n.parse().ok()?;
            return Some((n, n));
        }
        let (a, b) = s.strip_prefix("lines ")?.split_once('-')?;
        let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
        (a >= 1 && b >= a).then_some((a - 1, b))
    }

    pub(super) fn is_item(s: &str) -> bool {
        parse_item(s).is_some()
    }

    /// Replaces the differing regions of a two-way diff of `current` and `other` that overlap
    /// the named lines (or, for an empty range, touch its position) with `other`'s lines.
    pub(super) fn apply(current: &str, other: &str, keys: &[String]) -> Option<Vec<u8>> {
        let ranges = keys
            .iter()
            .map(|k| parse_item(k))
            .collect::<Option<Vec<_>>>()?;
        let (c, o) = (diff::lines(current), diff::lines(other));
        let ids = diff::intern(&[c.as_slice(), o.as_slice()]);
        let mut out: Vec<&str> = Vec::with_capacity(c.len());
        let mut at = 0;
        for (cs, ce, os, oe) in diff::hunks(&ids[0], &ids[1]) {
            let picked = ranges.iter().any(|&(s, e)| {
                if s < e {
                    (cs < e && ce > s) || (cs == ce && s <= cs && cs <= e)
                } else {
                    cs <= s && s <= ce
                }
            });
            if picked {
                out.extend_from_slice(&c[at..cs]);
                out.extend_from_slice(&o[os..oe]);
                at = ce;
            }
        }
        out.extend_from_slice(&c[at..]);
        Some(out.concat().into_bytes())
    }
}

// ---------------------------------------------------------------------------------------------
// JSON.

mod json {
    use std::collections::HashMap;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::ser::{Serialize, SerializeMap, Serializer};
    use serde_json::Value;

    use super::{FileMerge, Node, maps_equal, merge_value, outcome, parse_dotted, set_path};

    // serde_json's own `Map` is sorted unless its `preserve_order` feature is on, and that
    // feature would also reorder every `json!` the CLI prints; a tree of our own keeps the
    // order with no effect elsewhere.
    type JNode = Node<Value>;

    impl<'de> Deserialize<'de> for Node<Value> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(NodeVisitor)
        }
    }

    struct NodeVisitor;

    impl<'de> Visitor<'de> for NodeVisitor {
        type Value = JNode;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<JNode, E> {
            Ok(Node::Scalar(Value::Bool(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<JNode, E> {
            Ok(Node::Scalar(Value::from(v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<JNode, E> {
            Ok(Node::Scalar(Value::from(v)))
        }
        fn visit_f64<E>(self, v: f64) -> Result<JNode, E> {
            Ok(Node::Scalar(Value::from(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<JNode, E> {
            Ok(Node::Scalar(Value::from(v)))
        }
        fn visit_string<E>(self, v: String) -> Result<JNode, E> {
            Ok(Node::Scalar(Value::from(v)))
        }
        fn visit_unit<E>(self) -> Result<JNode, E> {
            Ok(Node::Scalar(Value::Null))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JNode, A::Error> {
            let mut v = Vec::new();
            while let Some(e) = seq.next_element()? {
                v.push(e);
            }
            Ok(Node::Array(v))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JNode, A::Error> {
            // A repeated key keeps its first position and its last value, like serde_json.
            let mut m: Vec<(String, JNode)> = Vec::new();
            let mut at: HashMap<String, usize> = HashMap::new();
            while let Some(k) = map.next_key::<String>()? {
                let v = map.next_value()?;
                match at.get(&k) {
                    Some(&i) => m[i].1 = v,
                    None => {
                        at.insert(k.clone(), m.len());
                        m.push((k, v));
                    }
                }
            }
            Ok(Node::Map(m))
        }
    }

    impl Serialize for Node<Value> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Node::Map(m) => {
                    let mut map = s.serialize_map(Some(m.len()))?;
                    for (k, v) in m {
                        map.serialize_entry(k, v)?;
                    }
                    map.end()
                }
                Node::Array(a) => s.collect_seq(a),
                Node::Scalar(v) => v.serialize(s),
            }
        }
    }

    fn parse(s: &str) -> Option<JNode> {
        serde_json::from_str(s).ok()
    }

    pub(super) fn merge(base: Option<&str>, left: &str, right: &str) -> FileMerge {
        let (Some(l), Some(r)) = (parse(left), parse(right)) else {
            return FileMerge::Conflict;
        };
        let b = base.and_then(parse);
        let mut conflicts = Vec::new();
        let merged = merge_value(
            b.as_ref(),
            Some(&l),
            Some(&r),
            &mut Vec::new(),
            &mut conflicts,
        );
        // A conflict at the root: the top level is not an object on both sides.
        let Some(merged) = merged.filter(|_| conflicts.iter().all(|p| !p.is_empty())) else {
            return FileMerge::Conflict;
        };
        let names = conflicts.iter().map(|p| super::dotted(p)).collect();
        let bytes = if merged == l {
            left.as_bytes().to_vec()
        } else if merged == r {
            right.as_bytes().to_vec()
        } else {
            render(&merged, left, right)
        };
        outcome(bytes, names)
    }

    pub(super) fn apply(current: &str, other: &str, keys: &[String]) -> Option<Vec<u8>> {
        let Node::Map(c) = parse(current)? else {
            return None;
        };
        let o = parse(other)?;
        let mut want = c.clone();
        for k in keys {
            set_path(&mut want, &parse_dotted(k)?, super::as_map(&o));
        }
        if maps_equal(&want, &c) {
            return Some(current.as_bytes().to_vec());
        }
        let want = Node::Map(want);
        if want == o {
            return Some(other.as_bytes().to_vec());
        }
        Some(render(&want, current, other))
    }

    /// Pretty-printed with left's indentation (the first indented line's leading whitespace); a
    /// left written on one line gets one line, unless right is the one with line breaks.
    fn render(v: &JNode, left: &str, right: &str) -> Vec<u8> {
        let style = if left.trim().contains('\n') || !right.trim().contains('\n') {
            left
        } else {
            right
        };
        let mut out = Vec::new();
        let written = if style.trim().contains('\n') {
            let indent = indent_of(style);
            let f = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
            v.serialize(&mut serde_json::Serializer::with_formatter(&mut out, f))
        } else {
            v.serialize(&mut serde_json::Serializer::new(&mut out))
        };
        written.expect("writing JSON to a Vec cannot fail");
        if style.ends_with('\n') {
            out.push(b'\n');
        }
        if style.contains("\r\n") {
            // serde_json writes `\n`; a raw line break cannot occur inside a JSON string.
            return String::from_utf8_lossy(&out)
                .replace('\n', "\r\n")
                .into_bytes();
        }
        out
    }

    fn indent_of(s: &str) -> &str {
        s.split('\n')
            .skip(1)
            .map(|l| &l[..l.len() - l.trim_start_matches([' ', '\t']).len()])
            .find(|i| !i.is_empty())
            .unwrap_or("  ")
    }
}

// ---------------------------------------------------------------------------------------------
// TOML.

mod toml_files {
    use std::collections::HashSet;

    use toml_edit::{
        Decor, DocumentMut, InlineTable, Item, Key, RawString, Table, TableLike, Value,
    };

    use super::{FileMerge, Map, Node, index, maps_equal, merge_maps, outcome, set_path};

    /// TOML scalars compared by value, not by how they are written (`0x10` is `16`).
    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Scalar {
        Str(String),
        Int(i64),
        /// The bits, so that `nan` equals itself.
        Float(u64),
        Bool(bool),
        Datetime(String),
    }

    type TNode = Node<Scalar>;

    fn like_node(t: &dyn TableLike) -> Map<Scalar> {
        t.iter()
            .filter_map(|(k, i)| item_node(i).map(|n| (k.to_owned(), n)))
            .collect()
    }

    /// Tables, inline tables and dotted keys are all maps; arrays of tables are arrays.
    fn item_node(i: &Item) -> Option<TNode> {
        match i {
            Item::None => None,
            Item::Value(v) => Some(value_node(v)),
            Item::Table(t) => Some(Node::Map(like_node(t))),
            Item::ArrayOfTables(a) => Some(Node::Array(
                a.iter().map(|t| Node::Map(like_node(t))).collect(),
            )),
        }
    }

    fn value_node(v: &Value) -> TNode {
        match v {
            Value::String(s) => Node::Scalar(Scalar::Str(s.value().clone())),
            Value::Integer(i) => Node::Scalar(Scalar::Int(*i.value())),
            Value::Float(f) => Node::Scalar(Scalar::Float(f.value().to_bits())),
            Value::Boolean(b) => Node::Scalar(Scalar::Bool(*b.value())),
            Value::Datetime(d) => Node::Scalar(Scalar::Datetime(d.value().to_string())),
            Value::Array(a) => Node::Array(a.iter().map(value_node).collect()),
            Value::InlineTable(t) => Node::Map(like_node(t)),
        }
    }

    pub(super) fn doc_map(d: &DocumentMut) -> Map<Scalar> {
        like_node(d.as_table())
    }

    pub(super) fn merge(base: Option<&str>, left: &str, right: &str) -> FileMerge {
        let (Ok(mut ldoc), Ok(rdoc)) = (left.parse::<DocumentMut>(), right.parse::<DocumentMut>())
        else {
            return FileMerge::Conflict;
        };
        let (l, r) = (doc_map(&ldoc), doc_map(&rdoc));
        let b = base
            .and_then(|s| s.parse::<DocumentMut>().ok())
            .map(|d| doc_map(&d));
        let mut conflicts = Vec::new();
        let want = merge_maps(b.as_deref(), &l, &r, &mut Vec::new(), &mut conflicts);
        let names = conflicts.iter().map(|p| super::dotted(p)).collect();
        let bytes = if maps_equal(&want, &l) {
            left.as_bytes().to_vec()
        } else if maps_equal(&want, &r) {
            right.as_bytes().to_vec()
        } else {
            let known = [left, base.unwrap_or("")];
            match render(&mut ldoc, &l, &want, &rdoc, b.as_deref(), &known) {
                Some(s) => s.into_bytes(),
                None => return FileMerge::Conflict,
            }
        };
        outcome(bytes, names)
    }

    pub(super) fn apply(current: &str, other: &str, keys: &[String]) -> Option<Vec<u8>> {
        let mut cdoc = current.parse::<DocumentMut>().ok()?;
        let odoc = other.parse::<DocumentMut>().ok()?;
        let (c, o) = (doc_map(&cdoc), doc_map(&odoc));
        let mut want = c.clone();
        for k in keys {
            set_path(&mut want, &super::parse_dotted(k)?, Some(o.as_slice()));
        }
        if maps_equal(&want, &c) {
            return Some(current.as_bytes().to_vec());
        }
        render(&mut cdoc, &c, &want, &odoc, None, &[current]).map(String::into_bytes)
    }

    /// Edits `doc` (which reads as `have`) until it reads as `want`, taking whatever it lacks
    /// from `right`; then checks that the text written reads back as `want`. `known` is the
    /// text already in the result's history (left, base): comment lines from it are not copied
    /// again with right's items.
    fn render(
        doc: &mut DocumentMut,
        have: &[(String, TNode)],
        want: &[(String, TNode)],
        right: &DocumentMut,
        base: Option<&[(String, TNode)]>,
        known: &[&str],
    ) -> Option<String> {
        let cx = Cx {
            known: known
                .iter()
                .flat_map(|t| t.lines())
                .map(str::trim)
                .filter(|l| l.starts_with('#'))
                .collect(),
        };
        let src = Src {
            t: right.as_table(),
            inline: false,
        };
        let root = &mut Tab::Table(doc.as_table_mut());
        patch(root, have, want, Some(src), base, &cx, true)?;
        let out = doc.to_string();
        let back = out.parse::<DocumentMut>().ok()?;
        maps_equal(&without_empty(&doc_map(&back)), &without_empty(want)).then_some(out)
    }

    /// Tables with no keys left out: a dotted-key table whose keys were all deleted is not
    /// written at all (`c.d = 1` gone leaves no `c`), which is what a person would expect.
    fn without_empty(m: &[(String, TNode)]) -> Map<Scalar> {
        m.iter()
            .filter_map(|(k, v)| match v {
                Node::Map(c) => {
                    let c = without_empty(c);
                    (!c.is_empty()).then(|| (k.clone(), Node::Map(c)))
                }
                _ => Some((k.clone(), v.clone())),
            })
            .collect()
    }

    struct Cx<'a> {
        /// Comment lines (trimmed) the result already has.
        known: HashSet<&'a str>,
    }

    /// In `toml_edit` the comments above a key belong to that key (those above a header to the
    /// table), so an item copied from right brings them; the ones left already has would be
    /// there twice (a file's header comment is the first key's).
    fn drop_known_comments(key: &mut Key, item: &mut Item, cx: &Cx<'_>) {
        let strip = |d: &mut Decor| {
            let Some(p) = d.prefix().and_then(RawString::as_str) else {
                return;
            };
            let kept: String = p
                .split_inclusive('\n')
                .filter(|l| !cx.known.contains(l.trim()))
                .collect();
            if kept.len() != p.len() {
                d.set_prefix(kept);
            }
        };
        strip(key.leaf_decor_mut());
        match item {
            Item::Table(t) => strip(t.decor_mut()),
            Item::ArrayOfTables(a) => {
                if let Some(t) = a.get_mut(0) {
                    strip(t.decor_mut());
                }
            }
            _ => {}
        }
    }

    /// A table being edited in place.
    enum Tab<'a> {
        Table(&'a mut Table),
        Inline(&'a mut InlineTable),
    }

    /// A table items are copied from, and whether it is written inline.
    #[derive(Clone, Copy)]
    struct Src<'a> {
        t: &'a dyn TableLike,
        inline: bool,
    }

    fn src_of(i: &Item) -> Option<Src<'_>> {
        match i {
            Item::Table(t) => Some(Src { t, inline: false }),
            Item::Value(Value::InlineTable(t)) => Some(Src { t, inline: true }),
            _ => None,
        }
    }

    fn tab_of(i: &mut Item) -> Option<Tab<'_>> {
        match i {
            Item::Table(t) => Some(Tab::Table(t)),
            Item::Value(Value::InlineTable(t)) => Some(Tab::Inline(t)),
            _ => None,
        }
    }

    impl Tab<'_> {
        fn like(&self) -> &dyn TableLike {
            match self {
                Tab::Table(t) => &**t,
                Tab::Inline(t) => &**t,
            }
        }
        fn like_mut(&mut self) -> &mut dyn TableLike {
            match self {
                Tab::Table(t) => &mut **t,
                Tab::Inline(t) => &mut **t,
            }
        }
        fn inline(&self) -> bool {
            matches!(self, Tab::Inline(_))
        }
        fn slot(&mut self, k: &str) -> Option<&mut Item> {
            self.like_mut().get_key_value_mut(k).map(|(_, i)| i)
        }
        fn keys(&self) -> Vec<String> {
            self.like().iter().map(|(k, _)| k.to_owned()).collect()
        }
        /// `toml_edit` has no positional insert: take the tail off, insert, put the tail back
        /// (keys keep their formatting).
        fn insert_at(&mut self, at: usize, key: Key, item: Item) -> Option<()> {
            let tail: Vec<String> = self.keys().split_off(at.min(self.like().len()));
            match self {
                Tab::Table(t) => {
                    let moved: Vec<_> = tail.iter().filter_map(|k| t.remove_entry(k)).collect();
                    t.insert_formatted(&key, item);
                    for (k, v) in moved {
                        t.insert_formatted(&k, v);
                    }
                }
                Tab::Inline(t) => {
                    let value = item.into_value().ok()?;
                    let moved: Vec<_> = tail.iter().filter_map(|k| t.remove_entry(k)).collect();
                    t.insert_formatted(&key, value);
                    for (k, v) in moved {
                        t.insert_formatted(&k, v);
                    }
                }
            }
            Some(())
        }
    }

    /// Removes what `want` lacks, recurses into tables changed on both sides, replaces changed
    /// values with right's (keeping left's decoration: the comment after a value stays), and
    /// inserts right's new keys after their predecessor in right (past keys only left added),
    /// else before their successor, else at the end of the table (always the end at the top
    /// level, where the first key carries the file's header comment).
    fn patch(
        t: &mut Tab<'_>,
        have: &[(String, TNode)],
        want: &[(String, TNode)],
        right: Option<Src<'_>>,
        base: Option<&[(String, TNode)]>,
        cx: &Cx<'_>,
        root: bool,
    ) -> Option<()> {
        let end_space = match t {
            Tab::Inline(it) => last_suffix(it),
            Tab::Table(_) => None,
        };
        patch_entries(t, have, want, right, base, cx, root)?;
        if let (Tab::Inline(it), Some(end)) = (t, end_space) {
            tidy_inline(it, &end);
        }
        Some(())
    }

    /// The space before an inline table's `}`, which belongs to its last value.
    fn last_suffix(t: &InlineTable) -> Option<String> {
        let (_, v) = t.iter().last()?;
        let s = v.decor().suffix()?.as_str()?;
        s.trim().is_empty().then(|| s.to_owned())
    }

    /// After entries moved in or out of an inline table, the space before `}` goes to the new
    /// last value, and no other value keeps it (`{ a = 1 , b = 2 }` otherwise).
    fn tidy_inline(t: &mut InlineTable, end: &str) {
        let n = t.len();
        for (i, (_, v)) in t.iter_mut().enumerate() {
            let space = v
                .decor()
                .suffix()
                .and_then(RawString::as_str)
                .is_none_or(|s| s.trim().is_empty());
            if space {
                v.decor_mut().set_suffix(if i + 1 == n { end } else { "" });
            }
        }
    }

    fn patch_entries(
        t: &mut Tab<'_>,
        have: &[(String, TNode)],
        want: &[(String, TNode)],
        right: Option<Src<'_>>,
        base: Option<&[(String, TNode)]>,
        cx: &Cx<'_>,
        root: bool,
    ) -> Option<()> {
        let (hi, wi) = (index(have), index(want));
        for (k, _) in have {
            if !wi.contains_key(k.as_str()) {
                t.like_mut().remove(k);
            }
        }
        for (k, w) in want {
            let Some(h) = hi.get(k.as_str()) else {
                continue;
            };
            if *h == w {
                continue;
            }
            let r_item = right.and_then(|r| r.t.get(k));
            let r_sub = r_item.and_then(src_of);
            if let (Node::Map(hm), Node::Map(wm)) = (*h, w) {
                let b_sub = base.and_then(|b| super::get(b, k)).and_then(super::as_map);
                if let Some(mut sub) = t.slot(k).and_then(tab_of) {
                    patch(&mut sub, hm, wm, r_sub, b_sub, cx, false)?;
                    continue;
                }
            }
            let inline = t.inline();
            let key_comments = t
                .like()
                .key(k)
                .and_then(|x| x.leaf_decor().prefix().cloned());
            let slot = t.slot(k)?;
            let mut new = adopt(Some(&*slot), r_item?.clone(), inline)?;
            if slot.is_value() == new.is_value() {
                *slot = new;
            } else {
                // A value became a table or the other way round: left's comments above it
                // move from the key to the header (or back), so that they stay written once.
                let comments = match &*slot {
                    Item::Table(o) => o.decor().prefix().cloned(),
                    Item::ArrayOfTables(o) => o.get(0).and_then(|o| o.decor().prefix().cloned()),
                    _ => key_comments,
                };
                let mut key = right?.t.key(k)?.clone();
                key.fmt();
                if let Some(c) = comments {
                    match &mut new {
                        Item::Table(n) => n.decor_mut().set_prefix(c),
                        Item::ArrayOfTables(n) => {
                            if let Some(n) = n.get_mut(0) {
                                n.decor_mut().set_prefix(c);
                            }
                        }
                        _ => key.leaf_decor_mut().set_prefix(c),
                    }
                }
                let at = t.keys().iter().position(|x| x == k)?;
                t.like_mut().remove(k);
                t.insert_at(at, key, new)?;
            }
            fix_up(t.slot(k)?, w, r_sub, cx)?;
        }
        let Some(r) = right else {
            // Nothing to copy from: fine as long as nothing new was wanted.
            return want
                .iter()
                .all(|(k, _)| hi.contains_key(k.as_str()))
                .then_some(());
        };
        let r_keys: Vec<&str> = r.t.iter().map(|(k, _)| k).collect();
        let r_set: HashSet<&str> = r_keys.iter().copied().collect();
        let base_set: Option<HashSet<&str>> =
            base.map(|b| b.iter().map(|(k, _)| k.as_str()).collect());
        for (k, w) in want {
            if hi.contains_key(k.as_str()) {
                continue;
            }
            let (r_key, r_item) = r.t.get_key_value(k)?;
            let keys = t.keys();
            let pos = r_keys.iter().position(|rk| rk == k)?;
            let find = |names: &[&str], backwards: bool| {
                let found = |p: &&str| keys.iter().position(|x| x == p);
                if backwards {
                    names.iter().rev().find_map(found)
                } else {
                    names.iter().find_map(found)
                }
            };
            let at = match find(&r_keys[..pos], true) {
                Some(p) => {
                    // Past the keys left added after the same predecessor: left's new lines
                    // first, then right's.
                    let left_added = |x: &String| {
                        !r_set.contains(x.as_str())
                            && !base_set.as_ref().is_some_and(|s| s.contains(x.as_str()))
                    };
                    p + 1 + keys[p + 1..].iter().take_while(|x| left_added(x)).count()
                }
                None if !root => find(&r_keys[pos + 1..], false).unwrap_or(keys.len()),
                None => keys.len(),
            };
            let mut key = r_key.clone();
            if r.inline != t.inline() {
                key.fmt();
            }
            let mut item = adopt(None, r_item.clone(), t.inline())?;
            if r.inline
                && !t.inline()
                && let Item::Value(v) = &mut item
            {
                v.decor_mut().clear();
            }
            drop_known_comments(&mut key, &mut item, cx);
            t.insert_at(at, key, item)?;
            fix_up(t.slot(k)?, w, r_item_src(r, k), cx)?;
        }
        Some(())
    }

    fn r_item_src<'a>(r: Src<'a>, k: &str) -> Option<Src<'a>> {
        r.t.get(k).and_then(src_of)
    }

    /// An item copied from right, made fit for its new place: a value inside an inline table,
    /// left's decoration when it replaces left's item, table positions left to follow their
    /// neighbours (or the replaced table's position).
    fn adopt(old: Option<&Item>, mut new: Item, inline: bool) -> Option<Item> {
        if inline {
            let mut v = new.into_value().ok()?;
            if old.is_none() {
                v.decor_mut().clear();
            }
            new = Item::Value(v);
        }
        clear_positions(&mut new);
        match (old, &mut new) {
            (Some(Item::Value(o)), Item::Value(n)) => *n.decor_mut() = o.decor().clone(),
            (Some(Item::Table(o)), Item::Table(n)) => {
                *n.decor_mut() = o.decor().clone();
                n.set_position(o.position());
            }
            (Some(Item::ArrayOfTables(o)), Item::ArrayOfTables(n)) => {
                let first = o.iter().next().and_then(Table::position);
                if let Some(t) = n.get_mut(0) {
                    t.set_position(first);
                }
            }
            _ => {}
        }
        Some(new)
    }

    /// Positions come from right's document, where they mean nothing: without one, a table is
    /// written after the table before it in the document tree.
    fn clear_positions(i: &mut Item) {
        match i {
            Item::Table(t) => {
                t.set_position(None);
                for (_, c) in t.iter_mut() {
                    clear_positions(c);
                }
            }
            Item::ArrayOfTables(a) => {
                for t in a.iter_mut() {
                    t.set_position(None);
                    for (_, c) in t.iter_mut() {
                        clear_positions(c);
                    }
                }
            }
            _ => {}
        }
    }

    /// After copying right's item: if the wanted value is not right's whole item (only when
    /// applying some keys of a table), edit it down.
    fn fix_up(slot: &mut Item, want: &TNode, right: Option<Src<'_>>, cx: &Cx<'_>) -> Option<()> {
        let now = item_node(slot)?;
        if now == *want {
            return Some(());
        }
        match (&now, want) {
            (Node::Map(nm), Node::Map(wm)) => {
                patch(&mut tab_of(slot)?, nm, wm, right, None, cx, false)
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `key = value` / `key value` files with `[sections]`.

mod kv {
    use std::collections::{HashMap, HashSet};
    use std::ops::Range;

    use super::{FileMerge, Map, Node, maps_equal, merge_maps, outcome, set_path, text};

    /// A value compared by its text after the separator, trimmed (`a=1` and `a = 1` are the
    /// same value); the line it came from is what gets written.
    #[derive(Debug, Clone)]
    pub(super) struct Val {
        norm: String,
        raw: String,
    }

    impl PartialEq for Val {
        fn eq(&self, o: &Self) -> bool {
            self.norm == o.norm
        }
    }

    type KMap = Map<Val>;

    #[derive(Debug, PartialEq)]
    enum LineKind {
        Blank,
        Comment,
        Section(String),
        Pair(String),
    }

    struct Line<'a> {
        text: &'a str,
        kind: LineKind,
    }

    /// A section's lines, its header included; the first block is the preamble (name "").
    struct Block {
        name: String,
        lines: Range<usize>,
    }

    struct File<'a> {
        lines: Vec<Line<'a>>,
        blocks: Vec<Block>,
        /// `[("", preamble keys), (section, keys)…]`, in file order.
        tree: KMap,
        crlf: bool,
        final_eol: bool,
    }

    /// `key = value` when the text before the first `=` is one word, else `key value` (first
    /// word, rest): kitty's `map ctrl+a launch --env X=1` is key `map`.
    fn split_pair(t: &str) -> Option<(&str, &str)> {
        if let Some((k, v)) = t.split_once('=') {
            let k = k.trim();
            if !k.is_empty() && !k.contains(char::is_whitespace) {
                return Some((k, v.trim()));
            }
        }
        let (k, v) = t.split_once(char::is_whitespace)?;
        (!k.starts_with('=')).then_some((k, v.trim()))
    }

    fn classify(t: &str) -> Option<(LineKind, &str)> {
        let s = t.trim();
        if s.is_empty() {
            return Some((LineKind::Blank, ""));
        }
        if s.starts_with('#') || s.starts_with(';') {
            return Some((LineKind::Comment, ""));
        }
        if let Some(inner) = s.strip_prefix('[') {
            let name = inner.strip_suffix(']')?.trim();
            return (!name.is_empty()).then(|| (LineKind::Section(name.to_owned()), ""));
        }
        split_pair(s).map(|(k, v)| (LineKind::Pair(k.to_owned()), v))
    }

    /// None when the key model would lose or misplace lines: a line that is neither blank, a
    /// comment, a section header nor a pair; a key twice in one section; a section twice.
    fn parse(text: &str) -> Option<File<'_>> {
        let mut f = File {
            lines: Vec::new(),
            blocks: vec![Block {
                name: String::new(),
                lines: 0..0,
            }],
            tree: vec![(String::new(), Node::Map(Vec::new()))],
            crlf: false,
            final_eol: text.ends_with('\n'),
        };
        let mut sections = HashSet::new();
        let mut keys = HashSet::new();
        for raw in text.split_inclusive('\n') {
            let mut t = raw.strip_suffix('\n').unwrap_or(raw);
            if raw.ends_with('\n')
                && let Some(s) = t.strip_suffix('\r')
            {
                f.crlf = true;
                t = s;
            }
            let (kind, value) = classify(t)?;
            let i = f.lines.len();
            match &kind {
                LineKind::Section(name) => {
                    if !sections.insert(name.clone()) {
                        return None;
                    }
                    f.tree.push((name.clone(), Node::Map(Vec::new())));
                    f.blocks.push(Block {
                        name: name.clone(),
                        lines: i..i,
                    });
                }
                LineKind::Pair(key) => {
                    if !keys.insert((f.blocks.len(), key.clone())) {
                        return None;
                    }
                    if let Some((_, Node::Map(m))) = f.tree.last_mut() {
                        let v = Val {
                            norm: value.to_owned(),
                            raw: t.to_owned(),
                        };
                        m.push((key.clone(), Node::Scalar(v)));
                    }
                }
                LineKind::Blank | LineKind::Comment => {}
            }
            if let Some(b) = f.blocks.last_mut() {
                b.lines.end = i + 1;
            }
            f.lines.push(Line { text: t, kind });
        }
        Some(f)
    }

    fn name(path: &[String]) -> String {
        match path {
            [s] => format!("[{s}]"),
            [s, k] if s.is_empty() => k.clone(),
            [s, k] => format!("[{s}] {k}"),
            _ => path.join(" "),
        }
    }

    fn parse_name(s: &str) -> Option<Vec<String>> {
        let Some(rest) = s.strip_prefix('[') else {
            return Some(vec![String::new(), s.to_owned()]);
        };
        match rest.split_once("] ") {
            Some((sec, key)) if !key.is_empty() => Some(vec![sec.to_owned(), key.to_owned()]),
            _ => Some(vec![rest.strip_suffix(']')?.to_owned()]),
        }
    }

    pub(super) fn merge(base: Option<&str>, left: &str, right: &str) -> FileMerge {
        let b = match base.map(parse) {
            Some(None) => return text::merge(base, left, right),
            Some(Some(b)) => Some(b),
            None => None,
        };
        let (Some(l), Some(r)) = (parse(left), parse(right)) else {
            return text::merge(base, left, right);
        };
        let mut conflicts = Vec::new();
        let bt = b.as_ref().map(|b| b.tree.as_slice());
        let want = merge_maps(bt, &l.tree, &r.tree, &mut Vec::new(), &mut conflicts);
        let names = conflicts.iter().map(|p| name(p)).collect();
        let bytes = if maps_equal(&want, &l.tree) {
            left.as_bytes().to_vec()
        } else if maps_equal(&want, &r.tree) {
            right.as_bytes().to_vec()
        } else {
            let out = render(&l, &r, b.as_ref(), &want);
            if !parse(&out).is_some_and(|f| maps_equal(&f.tree, &want)) {
                // Not expected (the tests look for it); lines are safer with diff3.
                return text::merge(base, left, right);
            }
            out.into_bytes()
        };
        outcome(bytes, names)
    }

    pub(super) fn apply(current: &str, other: &str, keys: &[String]) -> Option<Vec<u8>> {
        let line_items = keys.iter().filter(|k| text::is_item(k)).count();
        if line_items == keys.len() {
            return text::apply(current, other, keys);
        }
        if line_items > 0 {
            return None;
        }
        let (c, o) = (parse(current)?, parse(other)?);
        let mut want = c.tree.clone();
        for k in keys {
            set_path(&mut want, &parse_name(k)?, Some(o.tree.as_slice()));
        }
        if maps_equal(&want, &c.tree) {
            return Some(current.as_bytes().to_vec());
        }
        let out = render(&c, &o, None, &want);
        parse(&out)
            .is_some_and(|f| maps_equal(&f.tree, &want))
            .then(|| out.into_bytes())
    }

    type Sections<'t> = HashMap<&'t str, HashMap<&'t str, &'t Val>>;

    fn sections(tree: &KMap) -> Sections<'_> {
        tree.iter()
            .filter_map(|(s, n)| {
                let Node::Map(m) = n else { return None };
                let keys = m
                    .iter()
                    .filter_map(|(k, v)| match v {
                        Node::Scalar(v) => Some((k.as_str(), v)),
                        _ => None,
                    })
                    .collect();
                Some((s.as_str(), keys))
            })
            .collect()
    }

    fn pair_key<'l>(l: &'l Line<'_>) -> Option<&'l str> {
        match &l.kind {
            LineKind::Pair(k) => Some(k),
            _ => None,
        }
    }

    /// Left's lines, with values from `want`, deleted keys and sections left out, and what only
    /// right has put in: a key after its predecessor in right's section (past the keys only left
    /// added there, so both sides' new lines survive, left's first), or before the section's
    /// first key when it has none, with the comment lines right wrote just above it; a section
    /// after the section before it in right, else after the preamble.
    fn render(l: &File<'_>, r: &File<'_>, b: Option<&File<'_>>, want: &KMap) -> String {
        let (ws, ls, rs) = (sections(want), sections(&l.tree), sections(&r.tree));
        let bs = b.map(|b| sections(&b.tree));
        let known: HashSet<&str> = l
            .lines
            .iter()
            .chain(b.iter().flat_map(|b| &b.lines))
            .map(|x| x.text.trim())
            .collect();
        let empty = HashMap::new();
        let mut after: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
        let mut first: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut new_sections: HashMap<&str, Vec<&str>> = HashMap::new();
        for (sec, node) in want {
            let Node::Map(keys) = node else { continue };
            let rblock = r.blocks.iter().find(|x| &x.name == sec);
            let Some(lkeys) = ls.get(sec.as_str()) else {
                let at = r.blocks.iter().position(|x| &x.name == sec).unwrap_or(0);
                let prev = r.blocks[..at]
                    .iter()
                    .rev()
                    .map(|x| x.name.as_str())
                    .find(|x| ls.contains_key(x) && ws.contains_key(x))
                    .unwrap_or("");
                new_sections.entry(prev).or_default().push(sec.as_str());
                continue;
            };
            let wkeys = ws.get(sec.as_str()).unwrap_or(&empty);
            for (key, v) in keys {
                let Node::Scalar(v) = v else { continue };
                if lkeys.contains_key(key.as_str()) {
                    continue;
                }
                let mut lines = Vec::new();
                let mut anchor = None;
                if let Some(rb) = rblock {
                    let rl = &r.lines[rb.lines.clone()];
                    if let Some(at) = rl.iter().position(|x| pair_key(x) == Some(key.as_str())) {
                        let above = rl[..at]
                            .iter()
                            .rev()
                            .take_while(|x| x.kind == LineKind::Comment)
                            .count();
                        lines.extend(
                            rl[at - above..at]
                                .iter()
                                .map(|x| x.text)
                                .filter(|t| !known.contains(t.trim())),
                        );
                        anchor = rl[..at]
                            .iter()
                            .rev()
                            .filter_map(pair_key)
                            .find(|p| lkeys.contains_key(p) && wkeys.contains_key(p));
                    }
                }
                lines.push(v.raw.as_str());
                match anchor {
                    Some(p) => after.entry((sec.as_str(), p)).or_default().extend(lines),
                    None => first.entry(sec.as_str()).or_default().extend(lines),
                }
            }
        }

        let mut out: Vec<&str> = Vec::new();
        for block in &l.blocks {
            let name = block.name.as_str();
            let Some(wkeys) = ws.get(name) else { continue };
            let lines = &l.lines[block.lines.clone()];
            let first_pair = lines.iter().position(|x| pair_key(x).is_some());
            let last_text = lines.iter().rposition(|x| x.kind != LineKind::Blank);
            let firsts = first.get(name).map(Vec::as_slice).unwrap_or_default();
            let in_right = rs.get(name);
            let in_base = bs.as_ref().and_then(|bs| bs.get(name));
            let mut pending: Vec<&str> = Vec::new();
            if first_pair.is_none() && last_text.is_none() {
                out.extend_from_slice(firsts);
            }
            for (i, line) in lines.iter().enumerate() {
                if Some(i) == first_pair {
                    out.extend_from_slice(firsts);
                }
                match pair_key(line) {
                    Some(k) => {
                        let left_added = !in_right.is_some_and(|s| s.contains_key(k))
                            && !in_base.is_some_and(|s| s.contains_key(k));
                        if !left_added {
                            out.append(&mut pending);
                        }
                        if let Some(v) = wkeys.get(k) {
                            out.push(&v.raw);
                        }
                        if let Some(ins) = after.get(&(name, k)) {
                            pending.extend_from_slice(ins);
                        }
                    }
                    None => {
                        out.append(&mut pending);
                        out.push(line.text);
                    }
                }
                if first_pair.is_none() && Some(i) == last_text {
                    out.extend_from_slice(firsts);
                }
            }
            out.append(&mut pending);
            for sec in new_sections
                .get(name)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                section_from_right(r, sec, &ws, want, &mut out);
            }
        }
        let (eol, final_eol) = if l.lines.is_empty() {
            (if r.crlf { "\r\n" } else { "\n" }, r.final_eol)
        } else {
            (if l.crlf { "\r\n" } else { "\n" }, l.final_eol)
        };
        let mut s = out.join(eol);
        if final_eol && !out.is_empty() {
            s.push_str(eol);
        }
        s
    }

    /// A section only right has, as right wrote it (a blank line before it if right had one).
    fn section_from_right<'a>(
        r: &'a File<'_>,
        sec: &str,
        ws: &Sections<'a>,
        want: &'a KMap,
        out: &mut Vec<&'a str>,
    ) {
        let Some(wkeys) = ws.get(sec) else { return };
        let mut written = HashSet::new();
        if let Some(block) = r.blocks.iter().find(|x| x.name == sec) {
            let blank_before =
                block.lines.start > 0 && r.lines[block.lines.start - 1].kind == LineKind::Blank;
            if blank_before && out.last().is_some_and(|x| !x.trim().is_empty()) {
                out.push("");
            }
            for line in &r.lines[block.lines.clone()] {
                match pair_key(line) {
                    Some(k) => {
                        if let Some(v) = wkeys.get(k) {
                            out.push(&v.raw);
                            written.insert(k);
                        }
                    }
                    None => out.push(line.text),
                }
            }
        }
        if let Some(Node::Map(keys)) = super::get(want, sec) {
            for (k, v) in keys {
                if let Node::Scalar(v) = v
                    && !written.contains(k.as_str())
                {
                    out.push(&v.raw);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clean(m: FileMerge) -> String {
        match m {
            FileMerge::Clean(b) => String::from_utf8(b).expect("utf-8"),
            other => panic!("expected a clean merge, got {other:?}"),
        }
    }

    fn partial(m: FileMerge) -> (String, Vec<String>) {
        match m {
            FileMerge::Partial { bytes, conflicts } => {
                (String::from_utf8(bytes).expect("utf-8"), conflicts)
            }
            other => panic!("expected a partial merge, got {other:?}"),
        }
    }

    fn merge(path: &str, b: &str, l: &str, r: &str) -> FileMerge {
        merge_file(path, Some(b.as_bytes()), l.as_bytes(), r.as_bytes())
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| (*s).to_owned()).collect()
    }

    // --- journals (ported from src/sync.rs, `journals_merge_as_append_only_logs`) ---

    #[test]
    fn journals_merge_as_append_only_logs() {
        let base = b"a\nb\n".as_slice();
        let ours = [base, b"o1\n"].concat();
        let theirs = [base, b"t1\nt2\n"].concat();
        assert_eq!(merge_journal(&ours, &theirs), b"a\nb\no1\nt1\nt2\n");
        // One side only appended: the longer one, nothing doubled.
        assert_eq!(merge_journal(base, &theirs), theirs);
        assert_eq!(merge_journal(&ours, base), ours);
        // Diverging inside a line: the shared part ends at the last full line.
        assert_eq!(merge_journal(b"a\nbX\n", b"a\nbY\n"), b"a\nbX\nbY\n");
        assert_eq!(merge_journal(b"", b"x\n"), b"x\n");
        // The same through merge_file, by path.
        let p = "state/journal/0001.jsonl";
        assert_eq!(
            merge_file(p, Some(base), &ours, &theirs),
            FileMerge::Clean(b"a\nb\no1\nt1\nt2\n".to_vec())
        );
    }

    #[test]
    fn journal_merge_of_a_merge_doubles_nothing() {
        // A merged B's b1 after its own a1; B then appended b2 on top of its first save.
        let base = b"base\nb1\n".as_slice();
        let left = b"base\na1\nb1\n".as_slice();
        let right = b"base\nb1\nb2\n".as_slice();
        assert_eq!(
            merge_journal3(Some(base), left, right),
            b"base\na1\nb1\nb2\n"
        );
        assert_eq!(
            merge_journal3(Some(base), right, left),
            b"base\nb1\nb2\na1\n"
        );
        // A line one side removed stays removed; identical lines keep their multiplicity.
        assert_eq!(
            merge_journal3(Some(b"x\ny\nx\n"), b"y\nx\n", b"x\ny\nx\nz\n"),
            b"y\nx\nz\n"
        );
        // Both extend the base: the usual append-only merge.
        assert_eq!(
            merge_journal3(Some(b"a\n"), b"a\nl\n", b"a\nr\n"),
            b"a\nl\nr\n"
        );
    }

    #[test]
    fn journal_left_without_final_newline_does_not_fuse_lines() {
        assert_eq!(merge_journal(b"a\nx", b"a\ny\n"), b"a\nx\ny\n");
        // Left is a prefix of right: right completes the line, nothing added.
        assert_eq!(merge_journal(b"a\nb", b"a\nbc\n"), b"a\nbc\n");
    }

    // --- text (diff3) ---

    #[test]
    fn text_disjoint_changes_merge_cleanly() {
        let b = "1\n2\n3\n4\n5\n6\n";
        let l = "1\nL2\n3\n4\n5\n6\n";
        let r = "1\n2\n3\n4\nR5\n6\nR7\n";
        assert_eq!(
            clean(merge("notes.txt", b, l, r)),
            "1\nL2\n3\n4\nR5\n6\nR7\n"
        );
        // The same change on both sides is no conflict.
        assert_eq!(clean(merge("notes.txt", b, l, l)), l);
        // Deleted on one side, untouched on the other: deleted.
        let r = "1\n2\n3\n5\n6\n";
        assert_eq!(clean(merge("notes.txt", b, l, r)), "1\nL2\n3\n5\n6\n");
    }

    #[test]
    fn text_overlapping_changes_keep_left_and_name_the_lines() {
        let b = "a\nb\nc\nd\n";
        let l = "a\nB1\nB2\nc\nd\n";
        let r = "a\nX\nc\nD\n";
        let (m, c) = partial(merge("notes.txt", b, l, r));
        assert_eq!(m, "a\nB1\nB2\nc\nD\n");
        assert_eq!(c, ["lines 2-3"]);
        // Only the lines that differ between the sides are named.
        let (_, c) = partial(merge("x", "a\nb\nc\n", "a\nL\nc\n", "a\nR\nc\n"));
        assert_eq!(c, ["lines 2-2"]);
        let (_, c) = partial(merge("x", "k\nb\nc\n", "k\nsame\nL\n", "k\nsame\nR\n"));
        assert_eq!(c, ["lines 3-3"]);
        // Deleted on left, changed on right: the place is named.
        let (m, c) = partial(merge("x", "a\nb\nc\n", "a\nc\n", "a\nB\nc\n"));
        assert_eq!(m, "a\nc\n");
        assert_eq!(c, ["after line 1"]);
    }

    #[test]
    fn text_without_base_conflicts_where_sides_differ() {
        let m = merge_file("x", None, b"same\nl\n", b"same\nr\n");
        let (m, c) = partial(m);
        assert_eq!(m, "same\nl\n");
        assert_eq!(c, ["lines 2-2"]);
    }

    #[test]
    fn binary_and_non_utf8_files_are_conflicts() {
        let b = b"a\x00b".as_slice();
        assert_eq!(
            merge_file("x.bin", Some(b), b"a\x00c", b"a\x00d"),
            FileMerge::Conflict
        );
        assert_eq!(
            merge_file("x.txt", Some(b"a"), b"\xff\xfe", b"b"),
            FileMerge::Conflict
        );
        assert_eq!(
            merge_file("x.json", Some(b"{}"), b"{}\xff", b"{}"),
            FileMerge::Clean(b"{}\xff".to_vec())
        );
        // One side changed: that side, even for binary.
        assert_eq!(
            merge_file("x.bin", Some(b), b, b"\x01\x02"),
            FileMerge::Clean(b"\x01\x02".to_vec())
        );
        // A base that is not text is merged as if absent.
        assert_eq!(
            clean(merge_file("x.txt", Some(b"\xff"), b"a\n", b"a\n")),
            "a\n"
        );
    }

    // --- JSON ---

    #[test]
    fn json_crlf_files_stay_crlf() {
        let b = "{\r\n  \"a\": 1,\r\n  \"b\": 1\r\n}\r\n";
        let l = b.replace("\"a\": 1", "\"a\": 2");
        let r = b.replace("\"b\": 1", "\"b\": 3");
        assert_eq!(
            clean(merge("p.json", b, &l, &r)),
            "{\r\n  \"a\": 2,\r\n  \"b\": 3\r\n}\r\n"
        );
    }

    #[test]
    fn json_merges_key_by_key_recursively() {
        let b = r#"{"font":{"family":"a","size":12},"theme":"x","keep":true}"#;
        let l = r#"{"font":{"family":"b","size":12},"theme":"x","keep":true}"#;
        let r = r#"{"font":{"family":"a","size":14},"theme":"y","keep":true,"new":[1,2]}"#;
        let m = clean(merge("config/prefs.json", b, l, r));
        assert_eq!(
            m,
            r#"{"font":{"family":"b","size":14},"theme":"y","keep":true,"new":[1,2]}"#
        );
    }

    #[test]
    fn json_conflicts_are_dotted_key_paths_and_left_wins() {
        let b = r#"{"font":{"size":12},"a.b":1,"list":[1]}"#;
        let l = r#"{"font":{"size":13},"a.b":2,"list":[1,2]}"#;
        let r = r#"{"font":{"size":14},"a.b":3,"list":[0,1]}"#;
        let (m, c) = partial(merge("prefs.json", b, l, r));
        assert_eq!(m, l, "every item conflicted: left's bytes");
        assert_eq!(c, [r#"font.size"#, r#""a.b""#, "list"]);
    }

    #[test]
    fn json_deletions() {
        let b = r#"{"a":1,"b":2,"c":3}"#;
        // Deleted on one side, unchanged on the other: deleted.
        let m = clean(merge(
            "p.json",
            b,
            r#"{"a":1,"c":3,"x":0}"#,
            r#"{"a":1,"b":2,"c":4}"#,
        ));
        assert_eq!(m, r#"{"a":1,"c":4,"x":0}"#);
        // Deleted on one side, changed on the other: a conflict, left's choice kept.
        let (m, c) = partial(merge(
            "p.json",
            b,
            r#"{"a":1,"c":3}"#,
            r#"{"a":1,"b":5,"c":3}"#,
        ));
        assert_eq!(m, r#"{"a":1,"c":3}"#);
        assert_eq!(c, ["b"]);
        let (m, c) = partial(merge(
            "p.json",
            b,
            r#"{"a":1,"b":5,"c":9}"#,
            r#"{"a":1,"c":3}"#,
        ));
        assert_eq!(m, r#"{"a":1,"b":5,"c":9}"#);
        assert_eq!(c, ["b"]);
    }

    #[test]
    fn json_keeps_formatting_of_the_side_it_equals() {
        let b = "{\n    \"a\": 1,\n    \"b\": 2\n}\n";
        let l = "{\n    \"a\": 1,\n    \"b\": 3\n}\n";
        // Right only reformatted (and reordered): semantically unchanged, left's bytes.
        let r = "{\"b\":2,\"a\":1}";
        assert_eq!(clean(merge("p.json", b, l, r)), l);
        // Left only reformatted: right's bytes.
        let l2 = "{\"b\":2,   \"a\":1}";
        assert_eq!(clean(merge("p.json", b, l2, l)), l);
    }

    #[test]
    fn json_pretty_prints_in_left_order_with_left_indent() {
        let b = "{\n\t\"z\": 1,\n\t\"a\": {\"x\": 1}\n}\n";
        let l = "{\n\t\"z\": 2,\n\t\"a\": {\"x\": 1}\n}\n";
        let r = "{\"n2\": true, \"a\": {\"x\": 1, \"y\": [1]}, \"z\": 1, \"n1\": null}";
        let m = clean(merge("p.json", b, l, r));
        assert_eq!(
            m,
            "{\n\t\"z\": 2,\n\t\"a\": {\n\t\t\"x\": 1,\n\t\t\"y\": [\n\t\t\t1\n\t\t]\n\t},\n\t\"n2\": true,\n\t\"n1\": null\n}\n"
        );
    }

    #[test]
    fn json_unparsable_or_non_object_sides_are_conflicts() {
        let b = r#"{"a":1}"#;
        assert_eq!(
            merge("p.json", b, r#"{"a":2"#, r#"{"a":3}"#),
            FileMerge::Conflict
        );
        assert_eq!(
            merge("p.json", b, r#"{"a":2}"#, "not json"),
            FileMerge::Conflict
        );
        assert_eq!(merge("p.json", b, "[1]", r#"{"a":3}"#), FileMerge::Conflict);
        assert_eq!(merge("p.json", "[1]", "[2]", "[3]"), FileMerge::Conflict);
        // Top level not an object but only reformatted on one side: the other side.
        assert_eq!(clean(merge("p.json", "[1]", "[ 1 ]", "[2]")), "[2]");
    }

    // --- TOML ---

    const TOML_BASE: &str = r#"# Shelldone config
title = "t"   # the window title

[font]
family = "Mono"
size = 12

[colors]
fg = "white"
bg = "black"
"#;

    #[test]
    fn toml_merges_key_by_key_and_keeps_left_comments() {
        let l = TOML_BASE.replace("family = \"Mono\"", "family = \"Fira\"  # changed here");
        let r = TOML_BASE
            .replace("title = \"t\"", "title = \"T\"")
            .replace("bg = \"black\"", "bg = \"navy\"");
        let m = clean(merge("config/shelldone.toml", TOML_BASE, &l, &r));
        assert_eq!(
            m,
            l.replace("title = \"t\"   #", "title = \"T\"   #")
                .replace("bg = \"black\"", "bg = \"navy\""),
            "right's values, left's comments and spacing"
        );
    }

    #[test]
    fn toml_inserts_right_keys_and_tables_next_to_their_neighbours() {
        let l = TOML_BASE.replace("size = 12", "size = 13");
        let r = TOML_BASE
            .replace(
                "family = \"Mono\"\n",
                "family = \"Mono\"\n# line height\nheight = 1.2\n",
            )
            .replace("[colors]", "[cursor]\nshape = \"beam\"\n\n[colors]");
        let m = clean(merge("s.toml", TOML_BASE, &l, &r));
        assert_eq!(
            m,
            r#"# Shelldone config
title = "t"   # the window title

[font]
family = "Mono"
# line height
height = 1.2
size = 13

[cursor]
shape = "beam"

[colors]
fg = "white"
bg = "black"
"#
        );
    }

    #[test]
    fn toml_keys_appended_on_both_sides_both_survive() {
        let b = "a = 1\nb = 2\n";
        let m = clean(merge(
            "s.toml",
            b,
            "a = 1\nb = 2\nc = 3\n",
            "a = 1\nb = 2\nd = 4\n",
        ));
        assert_eq!(m, "a = 1\nb = 2\nc = 3\nd = 4\n");
    }

    #[test]
    fn toml_inline_tables_and_dotted_keys_merge_per_key() {
        let b = "font = { family = \"a\", size = 1 }\nwin.width = 80\nwin.height = 24\n";
        let l = "font = { family = \"b\", size = 1 }\nwin.width = 100\nwin.height = 24\n";
        let r =
            "font = { family = \"a\", size = 2, bold = true }\nwin.width = 80\nwin.height = 30\n";
        let m = clean(merge("s.toml", b, l, r));
        assert_eq!(
            m,
            "font = { family = \"b\", size = 2, bold = true }\nwin.width = 100\nwin.height = 30\n"
        );
        // A dotted-key table on left, a [table] on right: still the same keys.
        let r = "[win]\nwidth = 80\nheight = 24\nx = 5\n";
        let b2 = "win.width = 80\nwin.height = 24\n";
        let l2 = "win.width = 90\nwin.height = 24\n";
        let m = clean(merge("s.toml", b2, l2, r));
        let v: toml_edit::DocumentMut = m.parse().expect("valid toml");
        assert_eq!(v["win"]["width"].as_integer(), Some(90));
        assert_eq!(v["win"]["x"].as_integer(), Some(5));
        assert!(
            m.starts_with("win.width = 90\n"),
            "left's dotted form kept: {m}"
        );
    }

    #[test]
    fn toml_conflicts_and_deletions() {
        let l = TOML_BASE
            .replace("size = 12\n", "size = 13\n")
            .replace("bg = \"black\"\n", "");
        let r = TOML_BASE
            .replace("size = 12\n", "size = 14\n")
            .replace("fg = \"white\"\n", "")
            .replace("title = \"t\"", "title = \"u\"");
        let (m, c) = partial(merge("s.toml", TOML_BASE, &l, &r));
        assert_eq!(c, ["font.size"]);
        assert_eq!(
            m,
            l.replace("fg = \"white\"\n", "")
                .replace("title = \"t\"", "title = \"u\"")
        );
        // A table deleted on one side and changed on the other: the table is the conflict.
        let l = TOML_BASE.replace("[colors]\nfg = \"white\"\nbg = \"black\"\n", "");
        let r = TOML_BASE
            .replace("bg = \"black\"", "bg = \"red\"")
            .replace("size = 12", "size = 2");
        let (m, c) = partial(merge("s.toml", TOML_BASE, &l, &r));
        assert_eq!(c, ["colors"]);
        assert_eq!(m, l.replace("size = 12", "size = 2"));
    }

    #[test]
    fn toml_new_keys_placement_and_header_comment_written_once() {
        let b = "# header\ntop = 1\n\n[t]\nk = 1\n";
        // A new first key of a table goes before its successor.
        let m = clean(merge(
            "s.toml",
            b,
            &b.replace("top = 1", "top = 2"),
            &b.replace("[t]\n", "[t]\nfirst = 0\n"),
        ));
        assert_eq!(m, "# header\ntop = 2\n\n[t]\nfirst = 0\nk = 1\n");
        // A new first key of the file goes to the end of the top level: the header comment
        // (which toml_edit attaches to the first key) stays first and is not copied again.
        let r = b.replace("# header\n", "# header\nfirst = 0\n");
        let m = clean(merge("s.toml", b, &b.replace("k = 1", "k = 2"), &r));
        assert_eq!(m, "# header\ntop = 1\nfirst = 0\n\n[t]\nk = 2\n");
    }

    #[test]
    fn toml_value_becoming_a_table_keeps_left_comments_once() {
        let b = "# header\ntop = 1\n\n[t]\nk = 1\n";
        let r = b.replace("top = 1\n", "[top]\ninner = 1\n");
        let m = clean(merge("s.toml", b, &b.replace("k = 1", "k = 2"), &r));
        assert_eq!(m, "# header\n[top]\ninner = 1\n\n[t]\nk = 2\n");
    }

    #[test]
    fn toml_without_base_merges_what_each_side_added() {
        let m = merge_file("s.toml", None, b"a = 1\nb = 2\n", b"a = 1\nc = 3\n");
        assert_eq!(clean(m), "a = 1\nb = 2\nc = 3\n");
        let (m, c) = partial(merge_file("s.toml", None, b"a = 1\n", b"a = 2\n"));
        assert_eq!((m.as_str(), c), ("a = 1\n", keys(&["a"])));
    }

    #[test]
    fn toml_array_of_tables_is_one_value() {
        let b = "[[bind]]\nkey = \"a\"\n\n[[bind]]\nkey = \"b\"\n\n[x]\nv = 1\n";
        let l = b.replace("v = 1", "v = 2");
        let r = b.replace("key = \"b\"", "key = \"B\"");
        let m = clean(merge("s.toml", b, &l, &r));
        assert_eq!(
            m,
            "[[bind]]\nkey = \"a\"\n\n[[bind]]\nkey = \"B\"\n\n[x]\nv = 2\n"
        );
        let l = b.replace("key = \"a\"", "key = \"L\"");
        let (m, c) = partial(merge("s.toml", b, &l, &r));
        assert_eq!((m.as_str(), c), (l.as_str(), keys(&["bind"])));
    }

    #[test]
    fn toml_unparsable_side_is_a_conflict() {
        assert_eq!(
            merge("s.toml", "a = 1\n", "a = \n", "a = 2\n"),
            FileMerge::Conflict
        );
        assert_eq!(
            merge("s.toml", "a = 1\n", "a = 3\n", "[[a\n"),
            FileMerge::Conflict
        );
    }

    // --- key = value files ---

    #[test]
    fn kv_flat_file_appended_on_both_sides_keeps_both_lines() {
        // Known bug: the other side's appended line was dropped without a conflict.
        let b = "font = a\nsize = 12\n";
        let m = clean(merge(
            "foot.ini",
            b,
            "font = a\nsize = 12\nl = 1\n",
            "font = a\nsize = 12\nr = 2\n",
        ));
        assert_eq!(m, "font = a\nsize = 12\nl = 1\nr = 2\n");
        // Appended the same key with different values: a conflict, not a silent choice.
        let (m, c) = partial(merge(
            "foot.ini",
            b,
            &format!("{b}x = 1\n"),
            &format!("{b}x = 2\n"),
        ));
        assert_eq!((m, c), (format!("{b}x = 1\n"), keys(&["x"])));
    }

    #[test]
    fn kv_sections_merge_key_by_key() {
        // Known bug: a file with [sections] was never merged key by key, so a key changed only
        // on one side disappeared.
        let b = "top = 0\n[main]\nfont = a\nsize = 12\n\n[colors]\nfg = white\n";
        let l = "top = 0\n[main]\nfont = b\nsize = 12\n\n[colors]\nfg = white\n";
        let r = "top = 1\n[main]\nfont = a\nsize = 14\n\n[colors]\nfg = red\n";
        assert_eq!(
            clean(merge("foot.ini", b, l, r)),
            "top = 1\n[main]\nfont = b\nsize = 14\n\n[colors]\nfg = red\n"
        );
    }

    #[test]
    fn kv_conflicts_are_named_by_section() {
        let b = "top = 0\n[main]\nfont = a\n";
        let (m, c) = partial(merge(
            "a.conf",
            b,
            "top = 1\n[main]\nfont = b\n",
            "top = 2\n[main]\nfont = c\n",
        ));
        assert_eq!(m, "top = 1\n[main]\nfont = b\n");
        assert_eq!(c, ["top", "[main] font"]);
    }

    #[test]
    fn kv_deletions_and_new_sections() {
        let b = "# prefs\n[a]\nx = 1\ny = 2\n\n[b]\nz = 3\n";
        // Left deletes y, right deletes section b and adds section c after a.
        let l = "# prefs\n[a]\nx = 1\n\n[b]\nz = 3\n";
        let r = "# prefs\n[a]\nx = 1\ny = 2\n\n[c]\n# new\nw = 4\n";
        assert_eq!(
            clean(merge("x.cfg", b, l, r)),
            "# prefs\n[a]\nx = 1\n\n[c]\n# new\nw = 4\n"
        );
        // Deleted on one side, changed on the other: a conflict, left's deletion kept.
        let r = "# prefs\n[a]\nx = 1\ny = 5\n\n[b]\nz = 3\n";
        let (m, c) = partial(merge("x.cfg", b, l, r));
        assert_eq!((m.as_str(), c), (l, keys(&["[a] y"])));
        // A whole section deleted on one side, a key in it changed on the other.
        let l = "# prefs\n[a]\nx = 1\ny = 2\n";
        let r = "# prefs\n[a]\nx = 2\ny = 2\n\n[b]\nz = 4\n";
        let (m, c) = partial(merge("x.cfg", b, l, r));
        assert_eq!(
            (m.as_str(), c),
            ("# prefs\n[a]\nx = 2\ny = 2\n", keys(&["[b]"]))
        );
    }

    #[test]
    fn kv_keeps_left_comments_and_carries_right_comments_of_new_keys() {
        let b = "# top\nfont = a   # my font\nsize = 12\n";
        let l = "# top, edited\nfont = a   # my font\nsize = 13\n";
        let r = "# top\nfont = a   # my font\nsize = 12\n# the cursor\ncursor = beam\n";
        assert_eq!(
            clean(merge("kitty.conf", b, l, r)),
            "# top, edited\nfont = a   # my font\nsize = 13\n# the cursor\ncursor = beam\n"
        );
    }

    #[test]
    fn kv_space_separated_files_merge_per_key() {
        let b = "font_family Mono\nfont_size 12.0\n";
        let l = "font_family Fira\nfont_size 12.0\n";
        let r = "font_family Mono\nfont_size 14.0\ncursor_shape beam\n";
        assert_eq!(
            clean(merge("kitty.conf", b, l, r)),
            "font_family Fira\nfont_size 14.0\ncursor_shape beam\n"
        );
    }

    #[test]
    fn kv_repeated_keys_fall_back_to_diff3_without_losing_lines() {
        let b = "font_size 12\nmap ctrl+a new_tab\nmap ctrl+b close_tab\n";
        let l = "font_size 13\nmap ctrl+a new_tab\nmap ctrl+b close_tab\n";
        let r = "font_size 12\nmap ctrl+a new_tab\nmap ctrl+b close_tab\nmap ctrl+c copy\n";
        assert_eq!(
            clean(merge("kitty.conf", b, l, r)),
            "font_size 13\nmap ctrl+a new_tab\nmap ctrl+b close_tab\nmap ctrl+c copy\n"
        );
        // Both append a map line: kept left, the region reported (nothing silently dropped).
        let l = format!("{b}map ctrl+l left\n");
        let r = format!("{b}map ctrl+r right\n");
        let (m, c) = partial(merge("kitty.conf", b, &l, &r));
        assert_eq!((m, c), (l.clone(), keys(&["lines 4-4"])));
        // A line that is not key/value also sends the file to diff3.
        let b = "a = 1\njust-a-word\nb = 2\n";
        let m = clean(merge(
            "x.conf",
            b,
            "a = 9\njust-a-word\nb = 2\n",
            "a = 1\njust-a-word\nb = 8\n",
        ));
        assert_eq!(m, "a = 9\njust-a-word\nb = 8\n");
    }

    #[test]
    fn kv_crlf_and_missing_final_newline_are_kept() {
        let b = "a = 1\r\nb = 2\r\n";
        let l = "a = 3\r\nb = 2\r\n";
        let r = "a = 1\r\nb = 4\r\nc = 5\r\n";
        assert_eq!(
            clean(merge("x.ini", b, l, r)),
            "a = 3\r\nb = 4\r\nc = 5\r\n"
        );
        assert_eq!(
            clean(merge(
                "x.ini",
                "a = 1\nb = 2",
                "a = 3\nb = 2",
                "a = 1\nb = 4"
            )),
            "a = 3\nb = 4"
        );
    }

    #[test]
    fn large_unrelated_texts_merge_in_bounded_time() {
        // Two 20 000-line files with nothing in common: O(N·M) without the diff budget.
        let b: String = (0..20_000).map(|i| format!("b{i}\n")).collect();
        let l: String = (0..20_000).map(|i| format!("l{i}\n")).collect();
        let r: String = (0..20_000).map(|i| format!("r{i}\n")).collect();
        let started = std::time::Instant::now();
        let (m, c) = partial(merge("big.txt", &b, &l, &r));
        assert_eq!((m, c), (l, keys(&["lines 1-20000"])));
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    // --- determinism ---

    #[test]
    fn merges_are_deterministic() {
        let cases: [(&str, &str, &str, &str); 4] = [
            (
                "p.json",
                r#"{"a":1,"b":{"c":2}}"#,
                r#"{"a":2,"b":{"c":3},"x":1}"#,
                r#"{"a":3,"b":{"c":2,"d":4},"y":1}"#,
            ),
            (
                "s.toml",
                TOML_BASE,
                &TOML_BASE.replace("12", "13"),
                &TOML_BASE.replace("12", "14").replace("fg", "fg2"),
            ),
            (
                "x.ini",
                "a=1\n[s]\nb=2\n",
                "a=2\n[s]\nb=3\nq=1\n",
                "a=3\n[s]\nb=2\n[t]\nz=1\n",
            ),
            ("n.txt", "1\n2\n3\n", "1\nL\n3\n", "1\nR\n3\n4\n"),
        ];
        for (p, b, l, r) in cases {
            let first = merge(p, b, l, r);
            for _ in 0..5 {
                assert_eq!(merge(p, b, l, r), first, "{p}");
            }
        }
    }

    // --- apply_keys ---

    #[test]
    fn apply_keys_takes_the_other_sides_values_for_exactly_those_keys() {
        let b = r#"{"a":1,"b":{"c":1,"d":1},"e":1}"#;
        let l = r#"{"a":2,"b":{"c":2,"d":2},"e":2}"#;
        let r = r#"{"a":3,"b":{"c":3,"d":3}}"#;
        let (m, c) = partial(merge("p.json", b, l, r));
        assert_eq!(c, ["a", "b.c", "b.d", "e"]);
        let got = apply_keys("p.json", m.as_bytes(), r.as_bytes(), &keys(&["b.c", "e"]));
        assert_eq!(
            got.as_deref(),
            Some(br#"{"a":2,"b":{"c":3,"d":2}}"#.as_slice())
        );
        // All of them: the other side.
        let got = apply_keys("p.json", m.as_bytes(), r.as_bytes(), &c);
        assert_eq!(got.as_deref(), Some(r.as_bytes()));

        // TOML: formatting of current kept, right's value put in place.
        let l = TOML_BASE.replace("size = 12", "size = 13  # mine");
        let r = TOML_BASE
            .replace("size = 12", "size = 14")
            .replace("bg = \"black\"\n", "");
        let cur = TOML_BASE.replace("size = 12", "size = 13  # mine");
        let got = apply_keys(
            "s.toml",
            cur.as_bytes(),
            r.as_bytes(),
            &keys(&["font.size", "colors.bg"]),
        );
        assert_eq!(
            got.as_deref(),
            Some(
                l.replace("size = 13  # mine", "size = 14  # mine")
                    .replace("bg = \"black\"\n", "")
                    .as_bytes()
            )
        );

        // key = value with sections.
        let cur = "top = 1\n[main]\nfont = b\n";
        let other = "top = 2\n[main]\nfont = c\nnew = 1\n";
        let got = apply_keys(
            "a.conf",
            cur.as_bytes(),
            other.as_bytes(),
            &keys(&["[main] font", "[main] new"]),
        );
        assert_eq!(
            got.as_deref(),
            Some(b"top = 1\n[main]\nfont = c\nnew = 1\n".as_slice())
        );

        // Line ranges, as reported for text.
        let (b, l, r) = ("a\nb\nc\nd\ne\n", "a\nL\nc\nd\nL2\n", "a\nR\nc\nd\nR2\n");
        let (m, c) = partial(merge("n.txt", b, l, r));
        assert_eq!(c, ["lines 2-2", "lines 5-5"]);
        let got = apply_keys("n.txt", m.as_bytes(), r.as_bytes(), &keys(&["lines 5-5"]));
        assert_eq!(got.as_deref(), Some(b"a\nL\nc\nd\nR2\n".as_slice()));
        let (m, c) = partial(merge("n.txt", "a\nb\nc\n", "a\nc\n", "a\nB\nc\n"));
        let got = apply_keys("n.txt", m.as_bytes(), b"a\nB\nc\n", &c);
        assert_eq!(got.as_deref(), Some(b"a\nB\nc\n".as_slice()));
    }

    #[test]
    fn apply_keys_not_applicable() {
        assert_eq!(
            apply_keys("state/journal/1.jsonl", b"a\n", b"b\n", &keys(&["x"])),
            None
        );
        assert_eq!(apply_keys("p.json", b"{}", b"nope", &keys(&["a"])), None);
        assert_eq!(apply_keys("p.json", b"{}", b"{}", &keys(&["a..b"])), None);
        assert_eq!(apply_keys("n.txt", b"a\n", b"b\n", &keys(&["font"])), None);
        assert_eq!(
            apply_keys("x.bin", b"\x00", b"\x01", &keys(&["lines 1-1"])),
            None
        );
        assert_eq!(
            apply_keys("a.conf", b"a = 1\n", b"a = 2\n", &keys(&["a", "lines 1-1"])),
            None
        );
    }

    #[test]
    fn key_paths_round_trip() {
        for p in [vec!["font", "size"], vec!["a.b", "", "x\"y", "ü"]] {
            let p: Vec<String> = p.into_iter().map(str::to_owned).collect();
            assert_eq!(parse_dotted(&dotted(&p)), Some(p));
        }
    }

    // --- properties ---

    fn lcs_len_dp(a: &[u32], b: &[u32]) -> usize {
        let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                t[i][j] = if a[i] == b[j] {
                    t[i + 1][j + 1] + 1
                } else {
                    t[i + 1][j].max(t[i][j + 1])
                };
            }
        }
        t[0][0]
    }

    /// Random line edits of `base`: keep, delete, replace or insert, over a small alphabet so
    /// that lines repeat.
    fn edited(base: Vec<String>) -> impl Strategy<Value = Vec<String>> {
        let n = base.len();
        (
            proptest::collection::vec(0u8..4, n),
            proptest::collection::vec("[a-e]{0,2}", n + 1),
        )
            .prop_map(move |(ops, new)| {
                let mut out = Vec::new();
                for (i, line) in base.iter().enumerate() {
                    match ops[i] {
                        0 | 1 => out.push(line.clone()),
                        2 => out.push(new[i].clone()),
                        _ => {}
                    }
                    if ops[i] == 1 {
                        out.push(new[i + 1].clone());
                    }
                }
                out
            })
    }

    fn join(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn three_files() -> impl Strategy<Value = (String, String, String)> {
        proptest::collection::vec("[a-e]{0,2}", 0..12).prop_flat_map(|base| {
            (edited(base.clone()), edited(base.clone()))
                .prop_map(move |(l, r)| (join(&base), join(&l), join(&r)))
        })
    }

    fn json_object() -> impl Strategy<Value = String> {
        use serde_json::Value;
        let leaf = prop_oneof![
            (0i64..3).prop_map(Value::from),
            Just(Value::Null),
            "[a-b]{0,1}".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(3, 24, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                proptest::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        (
            proptest::collection::btree_map("[a-d]", value, 0..5),
            any::<bool>(),
        )
            .prop_map(|(m, pretty)| {
                let v = Value::Object(m.into_iter().collect());
                if pretty {
                    serde_json::to_string_pretty(&v).expect("serializes")
                } else {
                    v.to_string()
                }
            })
    }

    fn at_path<'v>(v: &'v serde_json::Value, path: &[String]) -> Option<&'v serde_json::Value> {
        path.iter().try_fold(v, |v, k| v.get(k))
    }

    fn node_at<'m, S>(m: &'m [(String, Node<S>)], path: &[String]) -> Option<&'m Node<S>> {
        let (k, rest) = path.split_first()?;
        let v = get(m, k)?;
        if rest.is_empty() {
            Some(v)
        } else {
            node_at(as_map(v)?, rest)
        }
    }

    const TOML_PARTS: usize = 14;

    /// Per part, for left then right: 1 in 4 a new (present, value), else the base's.
    type TomlEdit = (u8, bool, u8, u8, bool, u8);

    /// A TOML file from a fixed set of statements, each present or not, with a value: dotted
    /// keys, inline tables, arrays, tables, a sub-table and an array of tables.
    fn toml_text(parts: &[(bool, u8)]) -> String {
        let line = |i: usize, pattern: &str| -> String {
            if parts[i].0 {
                format!("{}\n", pattern.replace('#', &parts[i].1.to_string()))
            } else {
                String::new()
            }
        };
        let root = [
            "a = #",
            "b = \"#\"",
            "c.d = #",
            "c.e = #",
            "inl = { x = #, y = 1 }",
            "arr = [#, 2]",
        ];
        let mut s: String = root.iter().enumerate().map(|(i, p)| line(i, p)).collect();
        let t: String = ["x = #", "y = #", "s.k = #", "in = { q = # }"]
            .iter()
            .enumerate()
            .map(|(i, p)| line(6 + i, p))
            .collect();
        if !t.is_empty() {
            s += &format!("\n[t]\n{t}");
        }
        if parts[10].0 {
            s += &format!("\n[t.sub]\n{}", line(10, "z = #"));
        }
        if parts[11].0 {
            s += &format!("\n# u\n[u]\n{}", line(11, "w = #"));
        }
        for i in [12, 13] {
            if parts[i].0 {
                s += &format!("\n[[aot]]\n{}", line(i, "q = #"));
            }
        }
        s
    }

    proptest! {
        #[test]
        fn prop_one_side_changed_gives_that_side((b, l, _r) in three_files(), which in 0..4usize) {
            let path = ["notes.txt", "a.conf", "x.ini", "p.json"][which];
            let lb = l.as_bytes();
            prop_assert_eq!(merge(path, &b, &l, &b), FileMerge::Clean(lb.to_vec()));
            prop_assert_eq!(merge(path, &b, &b, &l), FileMerge::Clean(lb.to_vec()));
            // The same through diff3 itself, not only the shortcut in merge_file.
            let (bl, ll) = (diff::lines(&b), diff::lines(&l));
            prop_assert_eq!(text::merge_lines(&bl, &ll, &bl), (ll.clone(), vec![]));
            prop_assert_eq!(text::merge_lines(&bl, &bl, &ll), (ll.clone(), vec![]));
            prop_assert_eq!(text::merge_lines(&bl, &ll, &ll), (ll, vec![]));
        }

        #[test]
        fn prop_diff3_keeps_left_and_is_deterministic((b, l, r) in three_files()) {
            let m = merge("notes.txt", &b, &l, &r);
            prop_assert_eq!(&m, &merge("notes.txt", &b, &l, &r));
            if let FileMerge::Partial { conflicts, .. } = &m {
                prop_assert!(!conflicts.is_empty());
            }
            // Taking right for every conflict gives something both sides' clean changes are in
            // only loosely; but it must apply.
            if let FileMerge::Partial { bytes, conflicts } = m {
                prop_assert!(apply_keys("notes.txt", &bytes, r.as_bytes(), &conflicts).is_some());
            }
        }

        #[test]
        fn prop_kv_files_merge_without_panicking((b, l, r) in three_files(), sep in 0..3usize) {
            // Lines like `a = b` / `a b` / `[a]`, with repeats: every path of the kv driver.
            let shape = |s: &str| -> String {
                s.lines().map(|x| match (x.len(), sep) {
                    (0, _) => "\n".to_owned(),
                    (1, 0) => format!("[{x}]\n"),
                    (_, 1) => format!("{} {}\n", &x[..1], &x[1..]),
                    _ => format!("{} = {}\n", &x[..1], &x[1..]),
                }).collect()
            };
            let (b, l, r) = (shape(&b), shape(&l), shape(&r));
            let m = merge("x.ini", &b, &l, &r);
            prop_assert_eq!(&m, &merge("x.ini", &b, &l, &r));
            // Text in, so always a merge: what the key model cannot write back goes to diff3.
            prop_assert!(m != FileMerge::Conflict, "base:\n{b}\nleft:\n{l}\nright:\n{r}");
            if let FileMerge::Partial { bytes, conflicts } = &m {
                let _ = apply_keys("x.ini", bytes, r.as_bytes(), conflicts);
            }
        }

        #[test]
        fn prop_lcs_is_longest(a in proptest::collection::vec(0u32..4, 0..30), b in proptest::collection::vec(0u32..4, 0..30)) {
            let m = diff::matches(&a, &b);
            prop_assert_eq!(m.len(), lcs_len_dp(&a, &b));
            for w in m.windows(2) {
                prop_assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1);
            }
            for &(i, j) in &m {
                prop_assert_eq!(a[i], b[j]);
            }
        }

        #[test]
        fn prop_diff_out_of_budget_is_still_a_common_subsequence(
            a in proptest::collection::vec(0u32..4, 0..30),
            b in proptest::collection::vec(0u32..4, 0..30),
            budget in 0u64..200,
        ) {
            let m = diff::matches_within(&a, &b, budget);
            prop_assert!(m.len() <= lcs_len_dp(&a, &b));
            for w in m.windows(2) {
                prop_assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1);
            }
            for &(i, j) in &m {
                prop_assert_eq!(a[i], b[j]);
            }
        }

        #[test]
        fn prop_toml_merges_of_valid_files_never_give_up(
            base in proptest::collection::vec((any::<bool>(), 0u8..3), TOML_PARTS),
            edits in proptest::collection::vec((0u8..4, any::<bool>(), 0u8..3, 0u8..4, any::<bool>(), 0u8..3), TOML_PARTS),
        ) {
            // Both sides valid TOML: the result is always a merge (clean or with named keys),
            // never a refusal: the edited document always reads back as the merged tree.
            let side = |pick: fn(&TomlEdit) -> (u8, bool, u8)| -> Vec<(bool, u8)> {
                base.iter().zip(&edits).map(|(b, e)| {
                    let (roll, present, v) = pick(e);
                    if roll == 0 { (present, v) } else { *b }
                }).collect()
            };
            let (b, l, r) = (
                toml_text(&base),
                toml_text(&side(|e| (e.0, e.1, e.2))),
                toml_text(&side(|e| (e.3, e.4, e.5))),
            );
            let m = merge("s.toml", &b, &l, &r);
            prop_assert!(m != FileMerge::Conflict, "base:\n{b}\nleft:\n{l}\nright:\n{r}");
            if let FileMerge::Partial { bytes, conflicts } = &m {
                let all = apply_keys("s.toml", bytes, r.as_bytes(), conflicts);
                prop_assert!(all.is_some(), "apply_keys failed for {conflicts:?}");
                let tree = |t: &[u8]| {
                    let d: toml_edit::DocumentMut =
                        std::str::from_utf8(t).expect("utf-8").parse().expect("valid TOML");
                    toml_files::doc_map(&d)
                };
                let (merged, taken) = (tree(bytes), tree(&all.unwrap_or_default()));
                let (left, right) = (tree(l.as_bytes()), tree(r.as_bytes()));
                for c in conflicts {
                    let path = parse_dotted(c).expect("a key path");
                    prop_assert_eq!(node_at(&merged, &path), node_at(&left, &path));
                    prop_assert_eq!(node_at(&taken, &path), node_at(&right, &path));
                }
            }
        }

        #[test]
        fn prop_json_objects_always_merge_and_apply_keys_takes_right(
            b in json_object(), l in json_object(), r in json_object(),
        ) {
            let m = merge("p.json", &b, &l, &r);
            prop_assert!(m != FileMerge::Conflict);
            prop_assert_eq!(&m, &merge("p.json", &b, &l, &r));
            let bytes = match &m {
                FileMerge::Clean(x) | FileMerge::Partial { bytes: x, .. } => x.clone(),
                FileMerge::Conflict => unreachable!(),
            };
            let merged: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
            let right: serde_json::Value = serde_json::from_str(&r).expect("valid JSON");
            let left: serde_json::Value = serde_json::from_str(&l).expect("valid JSON");
            if let FileMerge::Partial { conflicts, .. } = &m {
                let taken = apply_keys("p.json", &bytes, r.as_bytes(), conflicts).expect("applies");
                let taken: serde_json::Value = serde_json::from_slice(&taken).expect("valid JSON");
                for c in conflicts {
                    let path = parse_dotted(c).expect("a key path");
                    // Left's value in the merge, right's after apply_keys.
                    prop_assert_eq!(at_path(&merged, &path), at_path(&left, &path));
                    prop_assert_eq!(at_path(&taken, &path), at_path(&right, &path));
                }
            }
        }

        #[test]
        fn prop_never_panics_on_arbitrary_bytes(
            b in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            l in proptest::collection::vec(any::<u8>(), 0..64),
            r in proptest::collection::vec(any::<u8>(), 0..64),
            which in 0..6usize,
        ) {
            let path = ["state/journal/1.jsonl", "p.json", "s.toml", "a.conf", "n.txt", "x"][which];
            let m = merge_file(path, b.as_deref(), &l, &r);
            if let FileMerge::Partial { bytes, conflicts } = &m {
                let _ = apply_keys(path, bytes, &r, conflicts);
            }
            let _ = apply_keys(path, &l, &r, &[String::from("a"), String::from("lines 1-2")]);
        }

        #[test]
        fn prop_structured_text_never_panics(
            b in "[ab=\\[\\]{}\":,.# \n0-9tr]{0,40}",
            l in "[ab=\\[\\]{}\":,.# \n0-9tr]{0,40}",
            r in "[ab=\\[\\]{}\":,.# \n0-9tr]{0,40}",
            which in 0..3usize,
        ) {
            let path = ["p.json", "s.toml", "a.conf"][which];
            let m = merge(path, &b, &l, &r);
            prop_assert_eq!(&m, &merge(path, &b, &l, &r));
        }
    }
}
