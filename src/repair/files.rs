//! Repairs of `FORMAT`, packs, loose objects, `device` and the small store files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use fs_err as fs;
use objects_format::ObjectId;

use super::damage::{format_evidence, remotes_damage};
use super::refs::repair_roots;
use super::{Quarantine, Repair};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::store::durable;

/// Rewrites a damaged `FORMAT` when the store's contents are unambiguous (see
/// [`format_evidence`]); otherwise stops recovery with the manual step.
pub(crate) fn repair_format(cx: &Context, q: &Quarantine, out: &mut Vec<Repair>) -> Result<()> {
    let Some((path, why)) = cx.damage.iter().find(|(p, _)| p.ends_with("FORMAT")) else {
        return Ok(());
    };
    if let Some(evidence) = format_evidence(cx)? {
        return Err(Error::corrupt_file(
            path,
            format!(
                "{why}; it cannot be rewritten because {evidence}, so a newer shelldone may \
                 have written this store: write the line 'shelldone-store <major>.<minor>' \
                 of the shelldone that wrote it into {}, or upgrade shelldone",
                path.display()
            ),
        ));
    }
    let mut action = String::new();
    if path.exists() {
        action = format!("moved to {}; ", q.take(path)?.display());
    }
    let line = crate::context::STORE_FORMAT.format_line();
    durable::write_atomic(path, line.as_bytes())?;
    out.push(Repair {
        file: path.display().to_string(),
        damage: why.clone(),
        action: format!(
            "{action}rewritten as '{}' (every pack, index and object in the store is of a \
             version this shelldone writes)",
            line.trim()
        ),
    });
    Ok(())
}

/// Packs and indexes: a pack without its index, or with an index that does not load, is
/// indexed again from its bytes when it hashes to its name; a pack that does not hash to
/// its name has every object that still verifies copied into a new pack (or loose
/// objects), then it and its index go to quarantine; an index without its pack goes to
/// quarantine. With `q` None (startup recovery) only packs without an index are looked at,
/// and only indexed again.
pub(crate) fn repair_packs(
    cx: &Context,
    q: Option<&Quarantine>,
    out: &mut Vec<Repair>,
) -> Result<()> {
    let dir = cx.objects.packs_dir();
    if !dir.is_dir() {
        return Ok(());
    }
    let mut stems: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for e in fs::read_dir(&dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".pack") {
            stems.entry(stem.to_owned()).or_default().0 = true;
        } else if let Some(stem) = name.strip_suffix(".idx") {
            stems.entry(stem.to_owned()).or_default().1 = true;
        }
    }
    let bad_indexes: BTreeMap<PathBuf, String> =
        cx.objects.bad_pack_indexes().into_iter().collect();
    let mut changed = false;
    for (stem, (has_pack, has_idx)) in stems {
        let pack = dir.join(format!("{stem}.pack"));
        let idx = dir.join(format!("{stem}.idx"));
        let idx_bad = bad_indexes.get(&idx).cloned();
        if q.is_none() && has_idx {
            continue;
        }
        if !has_pack {
            // An index without its pack: nothing to read the objects from.
            if let Some(q) = q {
                let to = q.take(&idx)?;
                out.push(Repair {
                    file: idx.display().to_string(),
                    damage: "its pack is missing".into(),
                    action: format!(
                        "moved to {}; the objects it listed are missing unless stored \
                         elsewhere ('shelldone state check' lists what is lost)",
                        to.display()
                    ),
                });
                changed = true;
            }
            continue;
        }
        let name = stem.strip_prefix("pack-").unwrap_or("");
        let hash = crate::store::pack::hash_file(&pack)?;
        let intact = hash.to_hex().as_str() == name;
        if intact && has_idx && idx_bad.is_none() {
            continue;
        }
        let damage = match (&idx_bad, has_idx, intact) {
            (_, _, false) => {
                format!("the pack hashes to {}, its name says {name}", hash.to_hex())
            }
            (Some(why), _, true) => format!("its index does not load: {why}"),
            (None, false, true) => "it has no index".into(),
            (None, true, true) => unreachable!("skipped above"),
        };
        if intact {
            let scan = crate::store::pack::scan(&pack, |_, _| Ok(()))?;
            if scan.damaged.is_empty() {
                let mut entries = scan.entries;
                let bytes = if scan.version == Some(1) {
                    objects_format::pack::build_index_v1(hash.as_bytes(), &mut entries)
                } else {
                    objects_format::pack::build_index(hash.as_bytes(), &mut entries)
                };
                let mut action = String::new();
                if has_idx && let Some(q) = q {
                    action = format!(
                        "old index moved to {}; ",
                        q.write(&idx, &fs::read(&idx)?)?.display()
                    );
                }
                durable::write_atomic(&idx, &bytes)?;
                out.push(Repair {
                    file: pack.display().to_string(),
                    damage,
                    action: format!(
                        "{action}index rebuilt from the pack ({} objects)",
                        entries.len()
                    ),
                });
                changed = true;
                continue;
            }
        }
        let Some(q) = q else { continue };
        // Damaged: keep every object that still verifies, then set the pack aside. A zstd
        // frame has no checksum, so damage inside one can decompress to other bytes, which
        // hash to an id of their own: when the index still loads, only the ids it lists
        // are kept (without it such junk is kept too, unreferenced, until `state gc`).
        let listed: Option<BTreeSet<ObjectId>> = std::fs::read(&idx).ok().and_then(|b| {
            let len = fs::metadata(&pack).ok()?.len();
            let (_, entries) = objects_format::pack::parse_index(&b, len).ok()?;
            Some(entries.into_iter().map(|e| e.id).collect())
        });
        let batch = cx.objects.batch_forced()?;
        let mut kept = 0usize;
        let scan = crate::store::pack::scan(&pack, |e, c| {
            if listed.as_ref().is_none_or(|l| l.contains(&e.id)) {
                batch.put_canonical(e.kind, e.id, c)?;
                kept += 1;
            }
            Ok(())
        })?;
        batch.commit()?;
        let mut moved = Vec::new();
        if has_idx {
            moved.push(q.take(&idx)?);
        }
        moved.push(q.take(&pack)?);
        out.push(Repair {
            file: pack.display().to_string(),
            damage: format!("{damage}; damaged: {}", scan.damaged.join("; ")),
            action: format!(
                "{kept} objects that still verify were copied into the store; the pack \
                 moved to {}; the objects it lost are missing ('shelldone state check' \
                 lists them; a sync pull or a backup may have them)",
                moved
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        });
        changed = true;
    }
    if changed {
        durable::sync_dir(&dir)?;
        cx.objects.reload_packs();
    }
    Ok(())
}

/// Loose objects whose file does not decompress to bytes hashing to its name go to
/// quarantine (a good copy in a pack, if any, is then the one read; the next save stores
/// the object again if a live file still has that content).
pub(super) fn repair_loose_objects(
    cx: &Context,
    q: &Quarantine,
    out: &mut Vec<Repair>,
) -> Result<()> {
    use rayon::prelude::*;
    let ids = cx.objects.list_loose()?;
    let bad: Vec<(ObjectId, String)> = ids
        .par_iter()
        .filter_map(|id| {
            let raw = match std::fs::read(cx.objects.object_path(id)) {
                Ok(r) => r,
                Err(e) => return Some((*id, format!("unreadable: {e}"))),
            };
            let why = match crate::store::decompress(&raw) {
                Err(why) => why,
                Ok(c) => match objects_format::encoding::split_header(&c) {
                    Err(e) => e.to_string(),
                    Ok((kind, _)) => {
                        let actual = ObjectId::compute(kind, &c);
                        if actual == *id {
                            return None;
                        }
                        format!("content hashes to {actual}")
                    }
                },
            };
            Some((*id, why))
        })
        .collect();
    for (id, why) in bad {
        let path = cx.objects.object_path(&id);
        let to = q.take(&path)?;
        let left = if cx.objects.has(&id) {
            "a sound copy in a pack is used from now on"
        } else {
            "the object is missing now ('shelldone state check' lists what uses it; the next \
             save stores it again if a live file still has that content)"
        };
        out.push(Repair {
            file: path.display().to_string(),
            damage: format!("corrupt: {why}"),
            action: format!("moved to {}; {left}", to.display()),
        });
    }
    Ok(())
}

/// `device`: rewritten with the id the reflog's newest local save records.
pub(super) fn repair_device(cx: &Context, out: &mut Vec<Repair>) -> Result<()> {
    let Some((path, why)) = cx.damage.iter().find(|(p, _)| p.ends_with("device")) else {
        return Ok(());
    };
    let id = cx
        .device_from_history()
        .unwrap_or_else(|| cx.device.clone());
    durable::write_atomic(path, format!("{id}\n").as_bytes())?;
    out.push(Repair {
        file: path.display().to_string(),
        damage: why.clone(),
        action: format!("rewritten as {id}, the device of this store's newest local save"),
    });
    Ok(())
}

/// Small files: a damaged stat cache is deleted (derived data), a damaged `shallow` list is
/// rewritten, a damaged `remotes.json` goes to quarantine.
pub(super) fn repair_small_files(
    cx: &Context,
    q: &Quarantine,
    out: &mut Vec<Repair>,
) -> Result<()> {
    let statcache = cx.statcache_path();
    if let Err(why) = crate::store::statcache::StatCache::validate(&statcache) {
        fs::remove_file(&statcache)?;
        out.push(Repair {
            file: statcache.display().to_string(),
            damage: why,
            action: "deleted: it is derived data; the next save reads every file once and \
                     writes it again"
                .into(),
        });
    }
    if let Err(why) = crate::store::statcache::StatCache::validate_delta(&statcache) {
        let delta = crate::store::statcache::delta_path(&statcache);
        fs::remove_file(&delta)?;
        out.push(Repair {
            file: delta.display().to_string(),
            damage: why,
            action: "deleted: it is derived data; the files it covered are read again by the \
                     next save"
                .into(),
        });
    }
    let (mut ids, bad) = cx.read_shallow();
    if !bad.is_empty() {
        let path = cx.snap_dir.join("shallow");
        // Snapshots pulled from another device whose parents are not here are the cuts a
        // partial pull makes; the damaged lines may have named them.
        let before = ids.len();
        let (_, roots) = repair_roots(cx)?;
        let mut seen = BTreeSet::new();
        let mut stack = roots;
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let Ok(s) = cx.objects.read_snapshot(&id) else {
                continue;
            };
            for p in &s.parents {
                if cx.objects.has(p) {
                    stack.push(*p);
                } else if s.device != cx.device {
                    ids.insert(id);
                }
            }
        }
        let to = q.take(&path)?;
        if !ids.is_empty() {
            let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
            durable::write_atomic(&path, text.as_bytes())?;
        }
        out.push(Repair {
            file: path.display().to_string(),
            damage: bad
                .iter()
                .map(|(l, why)| match l {
                    Some(n) => format!("line {n}: {why}"),
                    None => why.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
            action: format!(
                "moved to {}; rewritten with the {before} sound line(s) and {} pulled \
                 snapshot(s) whose parents are not in the store",
                to.display(),
                ids.len() - before
            ),
        });
    }
    if let Some(why) = remotes_damage(cx) {
        let path = cx.snap_dir.join("remotes.json");
        let names: BTreeSet<String> = cx
            .refs
            .list("remotes/")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(n, _)| n.split('/').nth(1).map(str::to_owned))
            .collect();
        let to = q.take(&path)?;
        out.push(Repair {
            file: path.display().to_string(),
            damage: why,
            action: format!(
                "moved to {}; URLs are kept nowhere else: add each remote again with \
                 'shelldone remote add NAME URL'{}",
                to.display(),
                if names.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (remote-tracking refs name: {})",
                        names.into_iter().collect::<Vec<_>>().join(", ")
                    )
                }
            ),
        });
    }
    Ok(())
}
