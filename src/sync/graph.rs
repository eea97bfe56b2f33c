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

/// The newest common ancestor of `a` and `b` in the local store (among several best ones, the
/// newest by time then id, so every device picks the same).
///
/// # Errors
/// Corrupt snapshots.
pub fn merge_base(store: &ObjectStore, a: ObjectId, b: ObjectId) -> Result<Option<ObjectId>> {
    let parents = |id: &ObjectId| {
        store
            .read_snapshot(id)
            .map(|s| s.parents)
            .unwrap_or_default()
    };
    let (best, _, _) = best_bases(a, b, &parents);
    let mut pick: Option<(i64, ObjectId)> = None;
    for c in best {
        let t = store.read_snapshot(&c)?.time_ns;
        if pick.is_none_or(|p| (t, c) > p) {
            pick = Some((t, c));
        }
    }
    Ok(pick.map(|p| p.1))
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
