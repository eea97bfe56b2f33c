//! Repairs of refs, `packed-refs` and the reflog: a ref is only ever set to a snapshot its
//! reflog already named.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use objects_format::{Kind, ObjectId};

use super::damage::line_ranges;
use super::{Health, Judge, Quarantine, RefView, Repair};
use crate::context::Context;
use crate::error::Result;
use crate::store::refs::PackedScan;

/// The reflog: lines that do not parse, and lines naming an id that is not a stored
/// snapshot, move to a quarantine file; a line whose only fault is bytes that are not
/// UTF-8 stays, with those bytes replaced.
pub(super) fn repair_reflog(cx: &Context, q: &Quarantine, out: &mut Vec<Repair>) -> Result<()> {
    let scan = cx.refs.scan_reflog()?;
    let mut snap: HashMap<ObjectId, bool> = HashMap::new();
    let mut is_snapshot = |id: ObjectId| -> bool {
        *snap.entry(id).or_insert_with(|| {
            cx.objects
                .read_verified(&id)
                .is_ok_and(|v| v.kind == Kind::Snapshot)
        })
    };
    let mut unsound: BTreeMap<usize, String> = BTreeMap::new();
    for l in &scan.lines {
        for id in l.entry.old.iter().chain(&l.entry.new) {
            if !is_snapshot(*id) {
                unsound.insert(l.no, format!("names {id}, which is not a stored snapshot"));
            }
        }
    }
    if scan.damaged.is_empty() && unsound.is_empty() {
        return Ok(());
    }
    let damaged: BTreeMap<usize, &crate::store::refs::DamagedLine> =
        scan.damaged.iter().map(|d| (d.no, d)).collect();
    let bytes = match std::fs::read(&scan.path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let mut keep: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut set_aside: Vec<u8> = Vec::new();
    // why → line numbers
    let mut notes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut mended = 0usize;
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let no = i + 1;
        if let Some(why) = unsound.get(&no) {
            notes.entry(why.clone()).or_default().push(no);
            set_aside.extend_from_slice(raw);
            set_aside.push(b'\n');
        } else if let Some(d) = damaged.get(&no) {
            notes.entry(d.why.clone()).or_default().push(no);
            set_aside.extend_from_slice(raw);
            set_aside.push(b'\n');
            if d.readable {
                mended += 1;
                keep.extend_from_slice(String::from_utf8_lossy(raw).as_bytes());
                keep.push(b'\n');
            }
        } else {
            keep.extend_from_slice(raw);
            keep.push(b'\n');
        }
    }
    let to = q.write(&scan.path, &set_aside)?;
    cx.refs.repair_reflog(&keep)?;
    out.push(Repair {
        file: scan.path.display().to_string(),
        damage: notes
            .iter()
            .map(|(why, lines)| format!("{}: {why}", line_ranges(lines)))
            .collect::<Vec<_>>()
            .join("; "),
        action: format!(
            "rewritten without them{}; they are kept in {}",
            if mended > 0 {
                format!(
                    " ({mended} kept with the bytes that are not UTF-8 replaced, as they record ids the store has)"
                )
            } else {
                String::new()
            },
            to.display()
        ),
    });
    Ok(())
}

/// Refs: a ref file that does not parse, a ref the reflog says exists but no file holds,
/// and a ref whose snapshot is not sound (unreadable, or a tree or chunk list under it
/// missing or corrupt) are set to the newest value its reflog records whose snapshot is
/// complete (else sound, else readable), or removed when there is none; a damaged
/// `packed-refs` is rewritten from the lines that parse and those values. Every change is
/// logged in the reflog (`recover: …`).
pub(super) fn repair_refs(cx: &Context, q: &Quarantine, out: &mut Vec<Repair>) -> Result<()> {
    let view = RefView::read(cx)?;
    let mut judge = Judge::new(cx);
    let mut history: BTreeMap<&str, Vec<ObjectId>> = BTreeMap::new();
    for l in view.reflog.lines.iter().rev() {
        if let Some(id) = l.entry.new {
            let h = history.entry(l.name.as_str()).or_default();
            if !h.contains(&id) {
                h.push(id);
            }
        }
    }
    let packed = view.packed_map();
    let missing: BTreeMap<String, (ObjectId, usize)> = view
        .missing()
        .into_iter()
        .map(|(n, id, no)| (n, (id, no)))
        .collect();
    let behind = view.behind();
    let names: BTreeSet<String> = view
        .loose
        .keys()
        .chain(packed.keys())
        .chain(missing.keys())
        .cloned()
        .collect();
    let mut new_packed = packed.clone();
    let mut packed_dirty = matches!(view.packed, PackedScan::Corrupt { .. });
    // (damage, action) → (ref, place): refs repaired alike are reported together.
    let mut done: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    // Reflog lines of refs repaired in packed-refs: (name, old, new, message).
    type LogLine = (String, Option<ObjectId>, Option<ObjectId>, String);
    let mut packed_log: Vec<LogLine> = Vec::new();
    for name in names {
        let place = view.place(cx, &name);
        let (current, damage) = match view.loose.get(&name) {
            Some((_, Ok(id))) if behind.contains_key(&name) => (
                Some(*id),
                Some(format!(
                    "behind: it holds {id}, an older value than its reflog's last"
                )),
            ),
            Some((_, Ok(id))) => (Some(*id), None),
            Some((_, Err(why))) => (None, Some(format!("corrupt: {why}"))),
            None => match (packed.get(&name), missing.get(&name)) {
                (Some(id), _) if behind.contains_key(&name) => (
                    Some(*id),
                    Some(format!(
                        "behind: it holds {id} from packed-refs, an older value than its \
                         reflog's last (its loose file was lost)"
                    )),
                ),
                (Some(id), _) => (Some(*id), None),
                (None, Some((id, _))) => (
                    None,
                    Some(format!("missing, but the reflog says it is {id}")),
                ),
                (None, None) => continue,
            },
        };
        let now = current.map(|id| (id, judge.snapshot(id)));
        if damage.is_none() && now.is_some_and(|(_, h)| h >= Health::Sound) {
            continue;
        }
        let damage = damage.unwrap_or_else(|| {
            let (id, h) = now.expect("a value when not damaged");
            match h {
                Health::Unreadable => {
                    format!("points at {id}, which is missing or not a readable snapshot")
                }
                _ => format!(
                    "points at snapshot {id}, a tree or chunk list of which is missing or corrupt"
                ),
            }
        });
        // Newest first, the best health wins; the current value last.
        let mut best: Option<(Health, ObjectId)> = None;
        for id in history
            .get(name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .chain(current)
        {
            let h = judge.snapshot(id);
            if best.is_none_or(|(bh, _)| h > bh) {
                best = Some((h, id));
            }
            if h == Health::Complete {
                break;
            }
        }
        let target = best.filter(|(h, _)| *h > Health::Unreadable);
        if target.map(|t| t.1) == current && view.loose.get(&name).is_none_or(|l| l.1.is_ok()) {
            // Nothing better is known: leave it for the manual step check describes.
            continue;
        }
        let mut action = String::new();
        if let Some((_, Err(_))) = view.loose.get(&name) {
            action = format!("moved to {}; ", q.take(&place)?.display());
        }
        let msg = format!("recover: {name} was {damage}");
        // The reflog line records the old value only if it names a snapshot the store has
        // (a line naming a missing one would itself be reported as damage).
        let old = now
            .filter(|(_, h)| *h > Health::Unreadable)
            .map(|(id, _)| id);
        if view.loose.contains_key(&name) || name == crate::store::refs::HEAD {
            cx.refs
                .repair_loose(&name, old, target.map(|t| t.1), &msg)?;
        } else {
            // Kept in packed-refs (or lost from it): the new value goes there, written once
            // below; its reflog line after that.
            packed_dirty = true;
            match target {
                Some((_, id)) => new_packed.insert(name.clone(), id),
                None => new_packed.remove(&name),
            };
            packed_log.push((name.clone(), old, target.map(|t| t.1), msg));
        }
        match target {
            Some((h, id)) => {
                if new_packed.contains_key(&name) {
                    new_packed.insert(name.clone(), id);
                }
                action.push_str(&format!(
                    "set to {id}, the newest {} snapshot its reflog records",
                    match h {
                        Health::Complete => "complete",
                        Health::Sound => "sound (some blob of it is missing)",
                        _ => "readable (a tree or chunk list of it is missing)",
                    }
                ));
            }
            None => {
                if new_packed.remove(&name).is_some() {
                    packed_dirty = true;
                }
                action.push_str("removed: no snapshot its reflog records can be read");
            }
        }
        done.entry((damage, action))
            .or_default()
            .push((name, place.display().to_string()));
    }
    for ((damage, action), refs) in done {
        let (file, damage) = match refs.as_slice() {
            [(name, place)] => (place.clone(), format!("{name}: {damage}")),
            [(first, place), .., (last, _)] => (
                if refs.iter().all(|r| r.1 == *place) {
                    place.clone()
                } else {
                    cx.snap_dir.join("refs").display().to_string()
                },
                format!("{} refs ({first} … {last}): {damage}", refs.len()),
            ),
            [] => continue,
        };
        out.push(Repair {
            file,
            damage,
            action,
        });
    }
    if packed_dirty {
        let path = cx.refs.packed_path().to_path_buf();
        let mut action = String::new();
        let damage = match &view.packed {
            PackedScan::Corrupt { why, .. } => {
                if let Ok(b) = std::fs::read(&path) {
                    action = format!("a copy is in {}; ", q.write(&path, &b)?.display());
                }
                action.push_str(&format!(
                    "rewritten with the {} refs read from the lines that parse (a ref lost \
                     with a damaged line is restored from the reflog, as reported)",
                    new_packed.len()
                ));
                format!("corrupt: {why}")
            }
            _ => {
                action = format!(
                    "rewritten with the repaired values reported above ({} refs)",
                    new_packed.len()
                );
                "holds refs that had to be repaired".into()
            }
        };
        cx.refs.repair_packed(&new_packed)?;
        for (name, old, new, msg) in &packed_log {
            cx.refs.repair_log(&[(name.as_str(), *old, *new)], msg)?;
        }
        out.push(Repair {
            file: path.display().to_string(),
            damage,
            action,
        });
    }
    complete_reflog(cx, out)
}

/// Refs whose value no reflog line records (a crash between moving a ref and writing its
/// line, or lines lost to damage): `(name, value, last value logged)`. Only values the
/// store has count: a ref naming a missing snapshot is damage of the ref, not the reflog.
pub(super) fn unlogged_values(
    cx: &Context,
    view: &RefView,
) -> Vec<(String, ObjectId, Option<ObjectId>)> {
    let logged = view.logged();
    let behind = view.behind();
    view.values()
        .into_iter()
        .filter(|(name, id)| cx.objects.has(id) && !behind.contains_key(name))
        .filter_map(|(name, id)| {
            let last = logged.get(&name).and_then(|l| l.0);
            (last != Some(id)).then_some((name, id, last))
        })
        .collect()
}

/// Appends a reflog line for every ref whose value the reflog does not record.
pub(super) fn complete_reflog(cx: &Context, out: &mut Vec<Repair>) -> Result<()> {
    let view = RefView::read(cx)?;
    let missing = unlogged_values(cx, &view);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<(&str, Option<ObjectId>, Option<ObjectId>)> = missing
        .iter()
        .map(|(n, id, last)| {
            let old = last.filter(|l| cx.objects.has(l));
            (n.as_str(), old, Some(*id))
        })
        .collect();
    cx.refs
        .repair_log(&lines, "recover: the reflog had no line for this value")?;
    let names: Vec<&str> = missing.iter().map(|m| m.0.as_str()).collect();
    out.push(Repair {
        file: view.reflog.path.display().to_string(),
        damage: format!(
            "no line records the current value of {}",
            match names.as_slice() {
                [one] => (*one).to_owned(),
                [first, .., last] => format!("{} refs ({first} … {last})", names.len()),
                [] => String::new(),
            }
        ),
        action: "appended a line for each, recording the value the ref holds".into(),
    });
    Ok(())
}

/// Refs and reflog ids as far as they can be read (damaged files aside).
pub(crate) fn repair_roots(cx: &Context) -> Result<(BTreeMap<String, ObjectId>, Vec<ObjectId>)> {
    let view = RefView::read(cx)?;
    let refs = view.values();
    let mut ids: Vec<ObjectId> = refs.values().copied().collect();
    for l in &view.reflog.lines {
        ids.extend(l.entry.old);
        ids.extend(l.entry.new);
    }
    ids.sort();
    ids.dedup();
    Ok((refs, ids))
}

/// Ids in reflog lines that do not parse, that name stored objects: `state gc` keeps what
/// they name until `state recover` has dealt with the lines.
pub(crate) fn reflog_salvage_ids(cx: &Context) -> Result<Vec<ObjectId>> {
    let scan = cx.refs.scan_reflog()?;
    let mut out = Vec::new();
    for d in scan.damaged.iter().filter(|d| !d.readable) {
        for tok in String::from_utf8_lossy(&d.raw).split(' ') {
            if let Ok(id) = ObjectId::from_hex(tok)
                && cx.objects.has(&id)
            {
                out.push(id);
            }
        }
    }
    Ok(out)
}
