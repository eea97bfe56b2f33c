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

    /// One small DAG, two heads and what their best common ancestors must be.
    struct Case {
        name: &'static str,
        edges: &'static [(u8, &'static [u8])],
        a: u8,
        b: u8,
        bases: &'static [u8],
        /// What `between_bases` must return (every snapshot on a path down to a base).
        between: &'static [u8],
    }

    const CASES: &[Case] = &[
        Case {
            name: "root only, both heads the root",
            edges: &[(1, &[])],
            a: 1,
            b: 1,
            bases: &[1],
            between: &[1],
        },
        Case {
            name: "equal heads on a line",
            edges: &[(1, &[]), (2, &[1]), (3, &[2])],
            a: 3,
            b: 3,
            bases: &[3],
            between: &[3],
        },
        Case {
            name: "linear: the older head is the base",
            edges: &[(1, &[]), (2, &[1]), (3, &[2]), (4, &[3])],
            a: 4,
            b: 2,
            bases: &[2],
            between: &[2, 3, 4],
        },
        Case {
            name: "linear: the root against the tip",
            edges: &[(1, &[]), (2, &[1]), (3, &[2])],
            a: 1,
            b: 3,
            bases: &[1],
            between: &[1, 2, 3],
        },
        Case {
            name: "fork at the root",
            edges: &[(1, &[]), (2, &[1]), (3, &[1])],
            a: 2,
            b: 3,
            bases: &[1],
            between: &[1, 2, 3],
        },
        Case {
            name: "fork after a shared line: older history is not needed",
            edges: &[
                (1, &[]),
                (2, &[1]),
                (3, &[2]),
                (4, &[3]),
                (5, &[3]),
                (6, &[5]),
            ],
            a: 4,
            b: 6,
            bases: &[3],
            between: &[3, 4, 5, 6],
        },
        Case {
            name: "one side merged the other, then both went on",
            // 1 ← 2 (A), 1 ← 3 (B); A merges B as 4, goes on to 5; B goes on to 6.
            edges: &[
                (1, &[]),
                (2, &[1]),
                (3, &[1]),
                (4, &[2, 3]),
                (5, &[4]),
                (6, &[3]),
            ],
            a: 5,
            b: 6,
            bases: &[3],
            between: &[3, 4, 5, 6],
        },
        Case {
            name: "fast-forward after a merge: the merge is the base",
            edges: &[(1, &[]), (2, &[1]), (3, &[1]), (4, &[2, 3]), (5, &[4])],
            a: 4,
            b: 5,
            bases: &[4],
            between: &[4, 5],
        },
        Case {
            name: "criss-cross: two best bases",
            // 1 ← 2 and 1 ← 3; each device merges the other's head: 4 = {2,3}, 5 = {3,2}.
            edges: &[(1, &[]), (2, &[1]), (3, &[1]), (4, &[2, 3]), (5, &[3, 2])],
            a: 4,
            b: 5,
            bases: &[2, 3],
            between: &[2, 3, 4, 5],
        },
        Case {
            name: "criss-cross with work after each merge",
            edges: &[
                (1, &[]),
                (2, &[1]),
                (3, &[1]),
                (4, &[2, 3]),
                (5, &[3, 2]),
                (6, &[4]),
                (7, &[5]),
            ],
            a: 6,
            b: 7,
            bases: &[2, 3],
            between: &[2, 3, 4, 5, 6, 7],
        },
        Case {
            name: "disjoint histories share nothing",
            edges: &[(1, &[]), (2, &[1]), (3, &[]), (4, &[3])],
            a: 2,
            b: 4,
            bases: &[],
            between: &[],
        },
        Case {
            name: "two roots joined by a merge (an --allow-unrelated pull)",
            // 1 and 2 are roots; 3 merges them; 4 goes on from 1 alone.
            edges: &[(1, &[]), (2, &[]), (3, &[1, 2]), (4, &[1])],
            a: 3,
            b: 4,
            bases: &[1],
            between: &[1, 3, 4],
        },
        Case {
            name: "a cut parent (partial pull) is still a base; the walk ends there",
            // 9 is not in the store: 2 and 3 both name it.
            edges: &[(2, &[9]), (3, &[9])],
            a: 2,
            b: 3,
            bases: &[9],
            between: &[2, 3, 9],
        },
    ];

    #[test]
    fn best_bases_and_between_bases_over_small_dags() {
        for c in CASES {
            let g = graph(c.edges);
            let parents = |x: &ObjectId| g.get(x).cloned().unwrap_or_default();
            let want: Vec<ObjectId> = c.bases.iter().map(|n| id(*n)).collect();
            let between: BTreeSet<ObjectId> = c.between.iter().map(|n| id(*n)).collect();
            for (a, b) in [(c.a, c.b), (c.b, c.a)] {
                let (best, _, _) = best_bases(id(a), id(b), &parents);
                assert_eq!(best, want, "{}: best bases of {a} and {b}", c.name);
                assert_eq!(
                    between_bases(id(a), id(b), &parents),
                    between,
                    "{}: between {a} and {b}",
                    c.name
                );
            }
        }
    }

    /// `merge_bases` reads a real store: newest first (time, then id), the same on every device.
    #[test]
    fn merge_bases_in_a_store_are_newest_first() {
        use objects_format::{ChangeSummary, Object, Snapshot};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStore::new(dir.path().to_path_buf());
        let batch = store.batch().expect("batch");
        let mut ids: HashMap<u8, ObjectId> = HashMap::new();
        // (name, parents, time): 1 ← 2 (t=20), 1 ← 3 (t=30); criss-cross 4 = {2,3}, 5 = {3,2};
        // 6 a root of its own; a second criss-cross (11, 12) whose two bases 9 and 10 have the
        // same time, so the id orders them.
        let spec: &[(u8, &[u8], i64)] = &[
            (1, &[], 10),
            (2, &[1], 20),
            (3, &[1], 30),
            (4, &[2, 3], 40),
            (5, &[3, 2], 50),
            (6, &[], 60),
            (7, &[1], 70),
            (8, &[1], 70),
            (9, &[7], 80),
            (10, &[8], 80),
            (11, &[9, 10], 90),
            (12, &[10, 9], 90),
        ];
        for (n, ps, t) in spec {
            let snap = Snapshot {
                root: id(0),
                parents: ps.iter().map(|p| ids[p]).collect(),
                time_ns: *t,
                device: "d".into(),
                message: format!("s{n}"),
                session: None,
                summary: ChangeSummary::default(),
                extra: Vec::new(),
            };
            ids.insert(*n, batch.put(&Object::Snapshot(snap)).expect("put"));
        }
        batch.commit().expect("commit");
        let mut same_time = [ids[&9], ids[&10]];
        same_time.sort_by(|x, y| y.cmp(x));
        let table: &[(u8, u8, Vec<ObjectId>)] = &[
            (1, 1, vec![ids[&1]]),
            (2, 3, vec![ids[&1]]),
            (4, 2, vec![ids[&2]]),
            (4, 5, vec![ids[&3], ids[&2]]),
            (4, 6, vec![]),
            (11, 12, same_time.to_vec()),
        ];
        for (a, b, want) in table {
            for (x, y) in [(a, b), (b, a)] {
                let got = merge_bases(&store, ids[x], ids[y]).expect("merge bases");
                assert_eq!(&got, want, "merge bases of s{x} and s{y}");
                assert_eq!(
                    merge_base(&store, ids[x], ids[y]).expect("merge base"),
                    want.first().copied(),
                    "merge base of s{x} and s{y}"
                );
            }
        }
    }
}
