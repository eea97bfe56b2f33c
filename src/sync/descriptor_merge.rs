//! A session whose descriptors are at different schema versions on the sides of a merge (one
//! device ran `shelldone migrate`, the other not yet): its version-1 descriptors are upgraded
//! with the same deterministic step (`shelldone_migrations::descriptor::upgrade`) before the
//! sides are compared, so that the migration alone is not a change that conflicts with what
//! the other device did. Both devices compute the same upgraded bytes, so they converge.

use std::collections::{BTreeMap, BTreeSet};

use objects_format::ObjectId;
use shelldone_migrations::descriptor as desc;

use super::merge::read_leaf;
use crate::error::Result;
use crate::snapshot::Leaf;
use crate::snapshot::save::{content_objects, is_descriptor};
use crate::store::{Batch, ObjectStore};

/// One session's files: path → leaf.
pub(super) type Unit = BTreeMap<Vec<u8>, Leaf>;

/// The three sides of a session with their version-1 descriptors upgraded.
pub(super) struct Aligned {
    /// The base.
    pub b: Unit,
    /// The left side.
    pub l: Unit,
    /// The right side.
    pub r: Unit,
    /// The upgraded descriptors' bytes, by id: stored only for the side taken.
    new: BTreeMap<ObjectId, Vec<u8>>,
}

/// The sides of a session unit with each descriptor upgraded to version 2 where the left or
/// right side has it at version 2 and some side at version 1; None when no descriptor needs
/// it. A descriptor of a newer version on any side, or one that does not parse, is left as it
/// is (the session then merges as before: a conflict if both sides changed it).
///
/// # Errors
/// Missing or corrupt objects.
pub(super) fn align(store: &ObjectStore, b: &Unit, l: &Unit, r: &Unit) -> Result<Option<Aligned>> {
    let paths: BTreeSet<&Vec<u8>> = b
        .keys()
        .chain(l.keys())
        .chain(r.keys())
        .filter(|p| is_descriptor(p))
        .collect();
    let mut out = Aligned {
        b: b.clone(),
        l: l.clone(),
        r: r.clone(),
        new: BTreeMap::new(),
    };
    let mut changed = false;
    for p in paths {
        let Some(session) = std::str::from_utf8(p).ok().and_then(desc::session_of_path) else {
            continue;
        };
        let bytes = [
            read_leaf(store, b.get(p))?,
            read_leaf(store, l.get(p))?,
            read_leaf(store, r.get(p))?,
        ];
        let versions: Vec<Option<u64>> = bytes
            .iter()
            .map(|x| x.as_deref().and_then(|x| desc::version_of(x).ok()))
            .collect();
        let seen = |v: u64, from: usize| versions[from..].contains(&Some(v));
        if versions.iter().flatten().any(|&v| v > desc::LATEST)
            || !seen(desc::V2, 1)
            || !seen(desc::V1, 0)
        {
            continue;
        }
        for (i, side) in [&mut out.b, &mut out.l, &mut out.r].into_iter().enumerate() {
            let Some(data) = bytes[i]
                .as_deref()
                .filter(|_| versions[i] == Some(desc::V1))
            else {
                continue;
            };
            let Ok(up) = desc::upgrade(session, data) else {
                continue;
            };
            let up = up.into_owned();
            let (kind, id) = content_objects(&up, None)?;
            let leaf = side.get_mut(p).expect("a side with bytes has the leaf");
            *leaf = Leaf {
                kind,
                id,
                size: up.len() as u64,
                ..*leaf
            };
            out.new.insert(id, up);
            changed = true;
        }
    }
    Ok(changed.then_some(out))
}

impl Aligned {
    /// Stores the upgraded descriptors `taken` (one of the sides) refers to.
    ///
    /// # Errors
    /// Store errors.
    pub(super) fn store(&self, taken: &Unit, batch: &Batch<'_>) -> Result<()> {
        for leaf in taken.values() {
            if let Some(bytes) = self.new.get(&leaf.id) {
                content_objects(bytes, Some(batch))?;
            }
        }
        Ok(())
    }
}
