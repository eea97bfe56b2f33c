//! `backup prune`: which bundles a keep policy keeps, with restic's `forget` semantics, and
//! the removal of the others without racing a process that may still use them.
//!
//! Each rule walks the bundles newest first. `keep_last` keeps the newest N. `keep_hourly`
//! (daily, weekly, monthly) keeps the newest bundle of each of the N newest hours (days, weeks
//! starting on Monday, calendar months, UTC) that hold a bundle. A bundle is kept when any rule
//! keeps it; a policy with no rule keeps everything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fs_err as fs;
use serde::Serialize;

use super::{GRACE, Listed, file_err};
use crate::error::Result;
use crate::store::durable;

/// A keep policy (`[backup] keep_*`, `backup prune --keep-*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N.
    pub last: u32,
    /// The newest in each of the newest N hours.
    pub hourly: u32,
    /// … days.
    pub daily: u32,
    /// … weeks (Monday to Sunday, UTC).
    pub weekly: u32,
    /// … calendar months (UTC).
    pub monthly: u32,
}

impl Policy {
    /// True when no rule is set (prune then keeps everything).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// The calendar month (`year * 12 + month - 1`) of a day number since 1970-01-01.
fn month_of(days: i64) -> i64 {
    let (y, m, _) = crate::history::civil_from_days(days);
    y * 12 + m - 1
}

/// For each time (seconds since the epoch, UTC), whether `policy` keeps it. `times` may be in
/// any order; ties keep the later index as the newer.
#[must_use]
pub fn keep(policy: &Policy, times: &[i64]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|&a, &b| (times[b], b).cmp(&(times[a], a)));
    let mut kept = vec![policy.is_empty(); times.len()];
    let hour = |t: i64| t.div_euclid(3600);
    let day = |t: i64| t.div_euclid(86_400);
    // 1970-01-01 was a Thursday: day + 3 counts from a Monday.
    let week = |t: i64| (day(t) + 3).div_euclid(7);
    let month = |t: i64| month_of(day(t));
    let rules: [(u32, &dyn Fn(i64) -> i64); 5] = [
        (policy.last, &|_| 0),
        (policy.hourly, &hour),
        (policy.daily, &day),
        (policy.weekly, &week),
        (policy.monthly, &month),
    ];
    for (ri, (n, bucket)) in rules.iter().enumerate() {
        let mut left = *n;
        let mut last = None;
        for &i in &order {
            if left == 0 {
                break;
            }
            if ri == 0 {
                kept[i] = true;
                left -= 1;
                continue;
            }
            let b = bucket(times[i]);
            if last != Some(b) {
                kept[i] = true;
                left -= 1;
                last = Some(b);
            }
        }
    }
    kept
}

/// What prune did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pruned {
    /// Bundles kept.
    pub kept: Vec<String>,
    /// Bundles dropped (renamed aside; deleted after the grace period).
    pub dropped: Vec<String>,
    /// Leftovers deleted: pruned or half-written bundles older than the grace period.
    pub deleted: Vec<PathBuf>,
    /// Reflog lines expired by the same policy (0 for `--dry-run`).
    pub reflog_expired: usize,
}

/// Applies `policy` to the good bundles of `dir` (with `dry_run`, only says what would go).
/// A dropped bundle is renamed to `<id>.pruned-<unix seconds>`; those, and `.partial`
/// directories (a backup that did not finish), are deleted once older than [`GRACE`]
/// (`grace` in tests). No lock: a writer is never blocked, and a crashed one leaves nothing
/// that stops prune.
///
/// # Errors
/// I/O on `dir`.
pub fn prune(
    dir: &Path,
    bundles: &[Listed],
    policy: &Policy,
    dry_run: bool,
    grace: Option<Duration>,
) -> Result<Pruned> {
    let grace = grace.unwrap_or(GRACE);
    let times: Vec<i64> = bundles
        .iter()
        .map(|b| b.created_ns.div_euclid(1_000_000_000))
        .collect();
    let k = keep(policy, &times);
    let mut out = Pruned::default();
    let now = std::time::SystemTime::now();
    let now_secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (b, keep) in bundles.iter().zip(k) {
        if keep {
            out.kept.push(b.id.clone());
            continue;
        }
        out.dropped.push(b.id.clone());
        if !dry_run {
            let aside = dir.join(format!("{}.pruned-{now_secs}", b.id));
            durable::rename(&b.path, &aside).map_err(file_err("renaming", &b.path))?;
        }
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let old = if let Some((_, t)) = name.split_once(".pruned-") {
                t.parse::<u64>()
                    .is_ok_and(|t| now_secs.saturating_sub(t) >= grace.as_secs())
            } else if name.ends_with(".partial") {
                e.metadata()?
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age >= grace)
            } else {
                false
            };
            if old {
                if !dry_run {
                    durable::remove_dir_all(&e.path()).map_err(file_err("removing", &e.path()))?;
                }
                out.deleted.push(e.path());
            }
        }
    }
    if !dry_run {
        durable::sync_dir(dir).map_err(file_err("syncing", dir))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::{Policy, keep};

    /// Days in a month of a year (the model's own calendar).
    fn month_len(y: i64, m: i64) -> i64 {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ][m as usize]
    }

    /// (year, month) of seconds since the epoch, by walking the calendar from 1970 (times in
    /// the tests are after 1970).
    fn model_month(t: i64) -> (i64, i64) {
        let mut days = t / 86_400;
        let (mut y, mut m) = (1970, 0);
        while days >= month_len(y, m) {
            days -= month_len(y, m);
            m += 1;
            if m == 12 {
                m = 0;
                y += 1;
            }
        }
        (y, m)
    }

    /// An independent model of restic's `forget`: for each rule, group the backups by period,
    /// take the newest N periods, keep the newest backup of each.
    fn model(policy: &Policy, times: &[i64]) -> BTreeSet<usize> {
        let newer = |a: usize, b: usize| (times[a], a) > (times[b], b);
        let mut kept = BTreeSet::new();
        if *policy == Policy::default() {
            return (0..times.len()).collect();
        }
        let mut by_age: Vec<usize> = (0..times.len()).collect();
        by_age.sort_by(|&a, &b| (times[b], b).cmp(&(times[a], a)));
        kept.extend(by_age.iter().take(policy.last as usize));
        type Period = Box<dyn Fn(i64) -> (i64, i64)>;
        let periods: [(u32, Period); 4] = [
            (policy.hourly, Box::new(|t| (t / 3600, 0))),
            (policy.daily, Box::new(|t| (t / 86_400, 0))),
            // Monday 1970-01-05 is day 4.
            (
                policy.weekly,
                Box::new(|t| ((t / 86_400 - 4).div_euclid(7), 0)),
            ),
            (policy.monthly, Box::new(model_month)),
        ];
        for (n, period) in &periods {
            let mut groups: BTreeMap<(i64, i64), usize> = BTreeMap::new();
            for (i, &t) in times.iter().enumerate() {
                let g = groups.entry(period(t)).or_insert(i);
                if newer(i, *g) {
                    *g = i;
                }
            }
            kept.extend(groups.values().rev().take(*n as usize));
        }
        kept
    }

    fn policy() -> impl Strategy<Value = Policy> {
        (0u32..6, 0u32..8, 0u32..8, 0u32..6, 0u32..6).prop_map(|(l, h, d, w, m)| Policy {
            last: l,
            hourly: h,
            daily: d,
            weekly: w,
            monthly: m,
        })
    }

    /// 200 backups: gaps from seconds to weeks, some at the same second, not in order.
    fn timeline() -> impl Strategy<Value = Vec<i64>> {
        (
            1_600_000_000i64..1_800_000_000,
            prop::collection::vec(
                prop_oneof![
                    Just(0i64),
                    1i64..600,
                    600i64..10_000,
                    10_000i64..400_000,
                    400_000i64..3_000_000
                ],
                200,
            ),
            any::<u64>(),
        )
            .prop_map(|(start, gaps, shuffle)| {
                let mut t = start;
                let mut out: Vec<i64> = gaps
                    .into_iter()
                    .map(|g| {
                        t += g;
                        t
                    })
                    .collect();
                // A deterministic shuffle: list order is not time order.
                let n = out.len();
                let mut s = shuffle;
                for i in (1..n).rev() {
                    s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    out.swap(i, (s >> 33) as usize % (i + 1));
                }
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn prune_keeps_exactly_what_the_policy_says(p in policy(), times in timeline()) {
            let got: BTreeSet<usize> = keep(&p, &times)
                .iter()
                .enumerate()
                .filter_map(|(i, k)| k.then_some(i))
                .collect();
            prop_assert_eq!(got, model(&p, &times));
        }
    }

    #[test]
    fn leftovers_go_only_after_the_grace_period() {
        let d = tempfile::tempdir().expect("tempdir");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        for name in [
            "a.partial".to_owned(),
            "b.pruned-0".to_owned(),
            format!("c.pruned-{now}"),
        ] {
            std::fs::create_dir(d.path().join(name)).expect("mkdir");
        }
        let policy = Policy {
            last: 1,
            ..Policy::default()
        };
        let p = super::prune(d.path(), &[], &policy, false, None).expect("prune");
        assert_eq!(p.deleted, [d.path().join("b.pruned-0")]);
        let p = super::prune(
            d.path(),
            &[],
            &policy,
            true,
            Some(std::time::Duration::ZERO),
        )
        .expect("dry run");
        assert_eq!(p.deleted.len(), 2, "{p:?}");
        assert!(
            d.path().join("a.partial").exists(),
            "a dry run deletes nothing"
        );
    }

    #[test]
    fn the_calendar_agrees_on_known_dates() {
        // 2024-02-29T23:59:59Z and 2024-03-01T00:00:00Z.
        assert_eq!(model_month(1_709_251_199), (2024, 1));
        assert_eq!(super::month_of(1_709_251_199 / 86_400), 2024 * 12 + 1);
        assert_eq!(super::month_of(1_709_251_200 / 86_400), 2024 * 12 + 2);
        // keep_last 2 of three: the two newest.
        assert_eq!(
            keep(
                &Policy {
                    last: 2,
                    ..Policy::default()
                },
                &[10, 30, 20]
            ),
            [false, true, true]
        );
    }
}
