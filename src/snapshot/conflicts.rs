//! Open conflicts travel inside snapshots.
//!
//! When a merge cannot combine two versions of a unit (a session, a file, keys of a preference
//! file), it keeps one and records the other as a [`Conflict`] in the merge snapshot's `extra`
//! (key [`KEY`], a JSON array sorted by id). Every later snapshot on top of it carries the same
//! list, less what was resolved, so the record reaches every device that pulls the merge — the
//! device whose version was set aside included — and `shelldone conflicts` can list, show and
//! resolve it anywhere. The set-aside version stays reachable: its snapshot is a parent of the
//! merge.

use objects_format::{ObjectId, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `extra` key of a snapshot's open conflicts.
pub const KEY: &str = "conflicts";

/// What kind of unit conflicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictKind {
    /// A whole session (`state/sessions/<id>…`).
    Session,
    /// A whole file that could not be merged.
    File,
    /// Some keys (or lines) of a file that was otherwise merged.
    Keys,
}

/// One open conflict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Conflict {
    /// Stable id (hex): the same conflict computed on two devices has the same id.
    pub id: String,
    /// What kind of unit.
    pub kind: ConflictKind,
    /// The unit: `state/sessions/<id>` for a session, else the file's snapshot path.
    pub path: String,
    /// For [`ConflictKind::Keys`]: the keys (or line ranges) changed on both sides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// The device whose version was kept.
    pub kept_device: String,
    /// The snapshot the kept version comes from (hex).
    pub kept_snapshot: String,
    /// When the kept version was saved (ns since the epoch).
    pub kept_time_ns: i64,
    /// The device whose version was set aside.
    pub other_device: String,
    /// The snapshot holding the set-aside version (hex); a parent of the merge.
    pub other_snapshot: String,
    /// When the set-aside version was saved.
    pub other_time_ns: i64,
}

impl Conflict {
    /// A new record; its id is derived from the unit and both snapshots.
    #[must_use]
    pub fn new(
        kind: ConflictKind,
        path: &str,
        keys: Vec<String>,
        kept: (&ObjectId, &Snapshot),
        other: (&ObjectId, &Snapshot),
    ) -> Conflict {
        let mut h = blake3::Hasher::new_derive_key("shelldone 2026 conflict id");
        h.update(path.as_bytes());
        h.update(&[0]);
        h.update(&kept.0.0);
        h.update(&other.0.0);
        for k in &keys {
            h.update(k.as_bytes());
            h.update(&[0]);
        }
        Conflict {
            id: h.finalize().to_hex()[..16].to_owned(),
            kind,
            path: path.to_owned(),
            keys,
            kept_device: kept.1.device.clone(),
            kept_snapshot: kept.0.to_hex(),
            kept_time_ns: kept.1.time_ns,
            other_device: other.1.device.clone(),
            other_snapshot: other.0.to_hex(),
            other_time_ns: other.1.time_ns,
        }
    }

    /// The set-aside version's snapshot.
    ///
    /// # Errors
    /// A malformed id (the record is corrupt).
    pub fn other(&self) -> Result<ObjectId> {
        ObjectId::from_hex(&self.other_snapshot)
            .map_err(|_| Error::BadRecord(format!("conflict {}: bad snapshot id", self.id)))
    }

    /// True for snapshot paths inside this conflict's unit.
    #[must_use]
    pub fn covers(&self, p: &[u8]) -> bool {
        match self.kind {
            ConflictKind::Session => crate::snapshot::session_of(p)
                .is_some_and(|s| self.path.as_bytes().strip_prefix(b"state/sessions/") == Some(s)),
            _ => p == self.path.as_bytes(),
        }
    }
}

/// The open conflicts a snapshot carries.
///
/// # Errors
/// The list does not parse (the snapshot was written by a broken or hostile writer).
pub fn of(s: &Snapshot) -> Result<Vec<Conflict>> {
    match s.extra.iter().find(|(k, _)| k == KEY) {
        None => Ok(Vec::new()),
        Some((_, v)) => serde_json::from_slice(v).map_err(|e| {
            Error::BadRecord(format!(
                "the conflict list of snapshot by {} ({}) does not parse: {e}",
                s.device, s.message
            ))
        }),
    }
}

/// The `extra` entries for a list of open conflicts (sorted, duplicates removed).
#[must_use]
pub fn extra(mut list: Vec<Conflict>) -> Vec<(String, Vec<u8>)> {
    if list.is_empty() {
        return Vec::new();
    }
    list.sort();
    list.dedup_by(|a, b| a.id == b.id);
    vec![(
        KEY.to_owned(),
        serde_json::to_vec(&list).expect("plain data serialises"),
    )]
}

/// What a new snapshot on top of `head` carries: the head's open conflicts less `resolved`.
/// A conflict list that does not parse is carried unchanged (never dropped silently).
///
/// # Errors
/// `resolved` names a conflict the head does not have.
pub fn carried(head: Option<&Snapshot>, resolved: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
    let Some(h) = head else {
        return Ok(Vec::new());
    };
    if resolved.is_empty() {
        return Ok(h.extra.iter().filter(|(k, _)| k == KEY).cloned().collect());
    }
    let list = of(h)?;
    for r in resolved {
        if !list.iter().any(|c| &c.id == r) {
            return Err(Error::UnknownConflict(r.clone()));
        }
    }
    Ok(extra(
        list.into_iter()
            .filter(|c| !resolved.contains(&c.id))
            .collect(),
    ))
}

/// Three-way merge of conflict lists: a record either side added is kept; a record in the
/// base that one side dropped was resolved there and is dropped.
#[must_use]
pub fn merge(base: &[Conflict], left: &[Conflict], right: &[Conflict]) -> Vec<Conflict> {
    let in_ = |l: &[Conflict], c: &Conflict| l.iter().any(|x| x.id == c.id);
    left.iter()
        .chain(right)
        .filter(|c| (in_(left, c) && in_(right, c)) || !in_(base, c))
        .cloned()
        .collect()
}
