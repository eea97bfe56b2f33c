//! Three-way merges of one file's content (placeholder drivers until the full set lands).

use std::collections::{BTreeMap, BTreeSet};

/// The outcome of a file merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMerge {
    /// Merged with no conflict.
    Clean(Vec<u8>),
    /// Merged, but these items changed on both sides; `left`'s value was kept for each.
    Partial {
        /// The merged content.
        bytes: Vec<u8>,
        /// The items changed on both sides.
        conflicts: Vec<String>,
    },
    /// Cannot be merged: keep left's whole file, report the file.
    Conflict,
}

/// Merges `left` and `right`, both derived from `base`; `left` wins every conflict.
#[must_use]
pub fn merge_file(path: &str, base: Option<&[u8]>, left: &[u8], right: &[u8]) -> FileMerge {
    let b = base.unwrap_or_default();
    if path.starts_with("state/journal/") {
        return FileMerge::Clean(merge_journal(left, right));
    }
    if path.ends_with(".json") {
        return merge_json(b, left, right).unwrap_or(FileMerge::Conflict);
    }
    FileMerge::Conflict
}

/// `current` with `other`'s values for `keys`.
#[must_use]
pub fn apply_keys(path: &str, current: &[u8], other: &[u8], keys: &[String]) -> Option<Vec<u8>> {
    if !path.ends_with(".json") {
        return None;
    }
    let parse = |x: &[u8]| -> Option<serde_json::Map<String, serde_json::Value>> {
        match serde_json::from_slice::<serde_json::Value>(x).ok()? {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        }
    };
    let mut c = parse(current)?;
    let o = parse(other)?;
    for k in keys {
        match o.get(k) {
            Some(v) => {
                c.insert(k.clone(), v.clone());
            }
            None => {
                c.remove(k);
            }
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&serde_json::Value::Object(c)).ok()?;
    bytes.push(b'\n');
    Some(bytes)
}

fn merge_journal(ours: &[u8], theirs: &[u8]) -> Vec<u8> {
    let mut shared = ours.iter().zip(theirs).take_while(|(x, y)| x == y).count();
    if shared < ours.len() && shared < theirs.len() {
        shared = ours[..shared]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
    }
    let mut m = ours.to_vec();
    m.extend_from_slice(&theirs[shared..]);
    m
}

fn merge_json(b: &[u8], o: &[u8], t: &[u8]) -> Option<FileMerge> {
    let parse = |x: &[u8]| -> Option<BTreeMap<String, serde_json::Value>> {
        if x.is_empty() {
            return Some(BTreeMap::new());
        }
        match serde_json::from_slice::<serde_json::Value>(x).ok()? {
            serde_json::Value::Object(m) => Some(m.into_iter().collect()),
            _ => None,
        }
    };
    let (bm, om, tm) = (parse(b)?, parse(o)?, parse(t)?);
    let mut out = om.clone();
    let mut conflicts = Vec::new();
    for k in bm
        .keys()
        .chain(om.keys())
        .chain(tm.keys())
        .collect::<BTreeSet<_>>()
    {
        let (bv, ov, tv) = (bm.get(k), om.get(k), tm.get(k));
        if tv == bv || tv == ov {
            continue;
        }
        if ov == bv {
            match tv {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        } else {
            conflicts.push(k.clone());
        }
    }
    let v = serde_json::Value::Object(out.into_iter().collect());
    let mut bytes = serde_json::to_vec_pretty(&v).ok()?;
    bytes.push(b'\n');
    Some(if conflicts.is_empty() {
        FileMerge::Clean(bytes)
    } else {
        FileMerge::Partial { bytes, conflicts }
    })
}
