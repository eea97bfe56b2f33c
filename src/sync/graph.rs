//! The snapshot graph: ancestors and merge bases. Missing parents (a partial pull's cut) end
//! a walk; they are never an error here.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use objects_format::ObjectId;

use crate::error::{Error, Result};
use crate::store::ObjectStore;

/// Ancestors of `id` (inclusive) in the local store.
///
/// # Errors
/// `id` itself missing or corrupt, a corrupt ancestor.
pub fn ancestors(store: &ObjectStore, id: ObjectId) -> Result<HashSet<ObjectId>> {
    let mut seen = HashSet::new();
    let mut q = VecDeque::from([id]);
    while let Some(s) = q.pop_front() {
        if !seen.insert(s) {
            continue;
        }
        match store.read_snapshot(&s) {
            Ok(snap) => q.extend(snap.parents),
            Err(Error::MissingObject { .. }) if s != id => {}
            Err(e) => return Err(e),
        }
    }
    Ok(seen)
}

/// Ancestors (inclusive) through any parent function.
fn ancestors_by(id: ObjectId, parents: &dyn Fn(&ObjectId) -> Vec<ObjectId>) -> HashSet<ObjectId> {
    let mut seen = HashSet::new();
    let mut q = VecDeque::from([id]);
    while let Some(s) = q.pop_front() {
        if seen.insert(s) {
            q.extend(parents(&s));
        }
    }
    seen
}

/// The best common ancestors of `a` and `b`: common ancestors that are not an ancestor of
/// another common ancestor. Found by the graph, never by clocks.
fn best_bases(
    a: ObjectId,
    b: ObjectId,
    parents: &dyn Fn(&ObjectId) -> Vec<ObjectId>,
) -> (Vec<ObjectId>, HashSet<ObjectId>, HashSet<ObjectId>) {
    let aa = ancestors_by(a, parents);
    let bb = ancestors_by(b, parents);
    let common: HashSet<ObjectId> = aa.intersection(&bb).copied().collect();
    // The common set is closed under ancestry, so a common ancestor is dominated exactly when
    // it is the direct parent of another common ancestor.
    let mut dominated = HashSet::new();
    for c in &common {
        dominated.extend(parents(c).into_iter().filter(|p| common.contains(p)));
    }
    let mut best: Vec<ObjectId> = common.difference(&dominated).copied().collect();
    best.sort();
    (best, aa, bb)
}

/// The best common ancestors of `a` and `b` in the local store, newest first (by time, then
/// id, so every device orders them the same). Several after a criss-cross: two devices that
/// merged each other's heads.
///
/// # Errors
/// Corrupt snapshots.
pub fn merge_bases(store: &ObjectStore, a: ObjectId, b: ObjectId) -> Result<Vec<ObjectId>> {
    let parents = |id: &ObjectId| {
        store
            .read_snapshot(id)
            .map(|s| s.parents)
            .unwrap_or_default()
    };
    let (best, _, _) = best_bases(a, b, &parents);
    let mut timed = Vec::new();
    for c in best {
        timed.push((store.read_snapshot(&c)?.time_ns, c));
    }
    timed.sort_by(|x, y| y.cmp(x));
    Ok(timed.into_iter().map(|(_, c)| c).collect())
}

/// The newest of [`merge_bases`].
///
/// # Errors
/// Corrupt snapshots.
pub fn merge_base(store: &ObjectStore, a: ObjectId, b: ObjectId) -> Result<Option<ObjectId>> {
    Ok(merge_bases(store, a, b)?.into_iter().next())
}

/// Every snapshot on a path from `a` or `b` down to one of their best common ancestors, the
/// bases included: what a merge of `a` and `b` needs to find its base. Empty when they share
/// nothing.
#[must_use]
pub fn between_bases(
    a: ObjectId,
    b: ObjectId,
    parents: &dyn Fn(&ObjectId) -> Vec<ObjectId>,
) -> BTreeSet<ObjectId> {
    let (best, aa, bb) = best_bases(a, b, parents);
    if best.is_empty() {
        return BTreeSet::new();
    }
    let bases: HashSet<ObjectId> = best.into_iter().collect();
    let mut reaches: HashMap<ObjectId, bool> = HashMap::new();
    // Iterative post-order: a node reaches a base when it is one or a parent reaches one.
    for start in aa.iter().chain(bb.iter()) {
        let mut stack = vec![(*start, false)];
        while let Some((n, expanded)) = stack.pop() {
            if reaches.contains_key(&n) {
                continue;
            }
            if bases.contains(&n) {
                reaches.insert(n, true);
                continue;
            }
            let ps: Vec<ObjectId> = parents(&n)
                .into_iter()
                .filter(|p| aa.contains(p) || bb.contains(p))
                .collect();
            if expanded {
                let r = ps.iter().any(|p| reaches.get(p).copied().unwrap_or(false));
                reaches.insert(n, r);
            } else {
                stack.push((n, true));
                stack.extend(
                    ps.into_iter()
                        .filter(|p| !reaches.contains_key(p))
                        .map(|p| (p, false)),
                );
            }
        }
    }
    reaches
        .into_iter()
        .filter_map(|(n, r)| r.then_some(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    /// A graph from (child, parents) pairs.
    fn graph(edges: &[(u8, &[u8])]) -> HashMap<ObjectId, Vec<ObjectId>> {
        edges
            .iter()
            .map(|(c, ps)| (id(*c), ps.iter().map(|p| id(*p)).collect()))
            .collect()
    }

    #[test]
    fn best_bases_table() {
        // 1 ← 2 ← 3 (a line); 2 ← 4 (a fork); 3,4 ← 5 (a merge); 6 alone;
        // criss-cross: 10 ← 11, 10 ← 12, {11,12} ← 13, {12,11} ← 14.
        let g = graph(&[
            (1, &[]),
            (2, &[1]),
            (3, &[2]),
            (4, &[2]),
            (5, &[3, 4]),
            (6, &[]),
            (10, &[]),
            (11, &[10]),
            (12, &[10]),
            (13, &[11, 12]),
            (14, &[12, 11]),
        ]);
        let parents = |x: &ObjectId| g.get(x).cloned().unwrap_or_default();
        let table: &[(u8, u8, &[u8])] = &[
            (3, 3, &[3]),        // the same snapshot
            (3, 2, &[2]),        // an ancestor is the base
            (3, 4, &[2]),        // a fork
            (5, 4, &[4]),        // after a merge, the merged side
            (5, 1, &[1]),        // far back
            (3, 6, &[]),         // unrelated
            (13, 14, &[11, 12]), // criss-cross: two best bases
        ];
        for (a, b, want) in table {
            let (best, _, _) = best_bases(id(*a), id(*b), &parents);
            let want: Vec<ObjectId> = want.iter().map(|n| id(*n)).collect();
            assert_eq!(best, want, "bases of {a} and {b}");
            let (best, _, _) = best_bases(id(*b), id(*a), &parents);
            assert_eq!(best, want, "bases of {b} and {a} (symmetric)");
        }
    }

    #[test]
    fn between_bases_is_every_path_down_to_the_bases() {
        // 1 ← 2 ← 3 ← 4 (A) and 2 ← 5 ← 6 (B): base 2; 1 is older and not needed.
        let g = graph(&[
            (1, &[]),
            (2, &[1]),
            (3, &[2]),
            (4, &[3]),
            (5, &[2]),
            (6, &[5]),
        ]);
        let parents = |x: &ObjectId| g.get(x).cloned().unwrap_or_default();
        let got = between_bases(id(4), id(6), &parents);
        let want: BTreeSet<ObjectId> = [2, 3, 4, 5, 6].into_iter().map(id).collect();
        assert_eq!(got, want);
        // A missing parent (a partial pull's cut) ends the walk, it is no error.
        let g = graph(&[(3, &[2]), (4, &[3]), (5, &[2]), (6, &[5])]);
        let parents = |x: &ObjectId| g.get(x).cloned().unwrap_or_default();
        assert!(between_bases(id(4), id(6), &parents).contains(&id(2)));
        // Unrelated: nothing.
        let g = graph(&[(1, &[]), (2, &[])]);
        let parents = |x: &ObjectId| g.get(x).cloned().unwrap_or_default();
        assert!(between_bases(id(1), id(2), &parents).is_empty());
    }
}
