//! Any other UTF-8 text: a line-based diff3, like `git merge-file`.

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
