//! Line diffs (the longest common subsequence of lines) for diff3 and the key = value driver.

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
