//! Diagnosis: every damaged store file, named, for `state check` (reads only).

use fs_err as fs;

use super::refs::unlogged_values;
use super::{FileDamage, RefView};
use crate::context::Context;
use crate::error::Result;
use crate::live::restore::{IntentTarget, parse_intent};
use crate::store::durable;
use crate::store::refs::PackedScan;

/// Names this version keeps directly in `snapshots/`.
pub(super) const KNOWN_NAMES: [&str; 17] = [
    "objects",
    "packs",
    "staging",
    "refs",
    "packed-refs",
    "logs",
    "lock",
    "lock.owner",
    "statcache",
    "statcache.delta",
    "device",
    "FORMAT",
    "restore-intent",
    "shallow",
    "remotes.json",
    "remotes",
    "restore-points",
];

/// `line 3` or `lines 3-5, 9`.
pub(super) fn line_ranges(lines: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        while j + 1 < lines.len() && lines[j + 1] == lines[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            lines[i].to_string()
        } else {
            format!("{}-{}", lines[i], lines[j])
        });
        i = j + 1;
    }
    format!(
        "{} {}",
        if lines.len() == 1 { "line" } else { "lines" },
        parts.join(", ")
    )
}

/// A cause as `state check` prints it after "is": `missing…` or `corrupt: …`.
pub(super) fn labelled(why: &str) -> String {
    match why.strip_prefix("the file is missing") {
        Some(rest) => format!("missing{rest}"),
        None => format!("corrupt: {why}"),
    }
}

/// Every damaged store file (objects aside): for `state check`. Reads only.
///
/// # Errors
/// I/O errors that stop a file from being read at all (reported as such).
pub fn file_damage(cx: &Context) -> Result<Vec<FileDamage>> {
    let view = RefView::read(cx)?;
    file_damage_in(cx, &view)
}

pub(crate) fn file_damage_in(cx: &Context, view: &RefView) -> Result<Vec<FileDamage>> {
    let mut out = Vec::new();
    for (path, why) in &cx.damage {
        let kind = if path.ends_with("FORMAT") {
            "FORMAT"
        } else {
            "device"
        };
        out.push(FileDamage {
            kind,
            file: path.clone(),
            line: None,
            why: labelled(why),
        });
    }
    for (path, v) in view.loose.values() {
        if let Err(why) = v {
            out.push(FileDamage {
                kind: "ref",
                file: path.clone(),
                line: None,
                why: labelled(why),
            });
        }
    }
    if let PackedScan::Corrupt { why, .. } = &view.packed {
        out.push(FileDamage {
            kind: "packed-refs",
            file: cx.refs.packed_path().to_path_buf(),
            line: None,
            why: labelled(why),
        });
    }
    for d in &view.reflog.damaged {
        out.push(FileDamage {
            kind: "reflog",
            file: view.reflog.path.clone(),
            line: Some(d.no),
            why: labelled(&d.why),
        });
    }
    let unlogged = unlogged_values(cx, view);
    if !unlogged.is_empty() {
        let shown: Vec<String> = unlogged
            .iter()
            .take(3)
            .map(|(n, id, _)| format!("{n} = {}", id.short(12)))
            .collect();
        out.push(FileDamage {
            kind: "reflog",
            file: view.reflog.path.clone(),
            line: None,
            why: format!(
                "incomplete: no line records the value of {}{} (lines lost, or a crash \
                 between moving a ref and writing its line)",
                shown.join(", "),
                if unlogged.len() > 3 {
                    format!(" and {} more refs", unlogged.len() - 3)
                } else {
                    String::new()
                }
            ),
        });
    }
    for (name, (id, newest, no)) in view.behind() {
        out.push(FileDamage {
            kind: "ref",
            file: cx.refs.loose_path(&name),
            line: None,
            why: format!(
                "behind: {name} holds {id}, an older value, but {} line {no} says it is \
                 {newest} (a newer value was lost)",
                view.reflog.path.display()
            ),
        });
    }
    for (name, id, no) in view.missing() {
        out.push(FileDamage {
            kind: "ref",
            file: cx.refs.loose_path(&name),
            line: None,
            why: format!(
                "missing: neither a file nor in packed-refs, but {} line {no} says {name} is {id}",
                view.reflog.path.display()
            ),
        });
    }
    let statcache = cx.statcache_path();
    if let Err(why) = crate::store::statcache::StatCache::validate(&statcache) {
        out.push(FileDamage {
            kind: "stat cache",
            file: statcache.clone(),
            line: None,
            why: labelled(&why),
        });
    }
    if let Err(why) = crate::store::statcache::StatCache::validate_delta(&statcache) {
        out.push(FileDamage {
            kind: "stat cache",
            file: crate::store::statcache::delta_path(&statcache),
            line: None,
            why: labelled(&why),
        });
    }
    if let Some(why) = intent_damage(cx)? {
        out.push(FileDamage {
            kind: "restore intent",
            file: cx.snap_dir.join("restore-intent"),
            line: None,
            why: labelled(&why),
        });
    }
    let (_, bad) = cx.read_shallow();
    for (line, why) in bad {
        out.push(FileDamage {
            kind: "shallow list",
            file: cx.snap_dir.join("shallow"),
            line,
            why: labelled(&why),
        });
    }
    if let Some(why) = remotes_damage(cx) {
        out.push(FileDamage {
            kind: "remotes",
            file: cx.snap_dir.join("remotes.json"),
            line: None,
            why: labelled(&why),
        });
    }
    for pack in cx.packs_without_index()? {
        out.push(FileDamage {
            kind: "pack",
            file: pack,
            line: None,
            why: "incomplete: it has no index, so its objects are invisible".into(),
        });
    }
    Ok(out)
}

/// What is wrong with `restore-intent`, if anything (a sound pending intent is not damage:
/// the next command finishes it).
pub(super) fn intent_damage(cx: &Context) -> Result<Option<String>> {
    let p = cx.snap_dir.join("restore-intent");
    let b = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Ok(Some(format!("unreadable: {e}"))),
    };
    Ok(match parse_intent(&b) {
        Err(why) => Some(why),
        Ok((IntentTarget::Head, _)) => None,
        Ok((IntentTarget::Snapshot(id), _)) => match cx.objects.read_snapshot(&id) {
            Ok(_) => None,
            Err(e) => Some(format!("names snapshot {id}, which cannot be read ({e})")),
        },
    })
}

/// Why `remotes.json` does not parse, if it does not.
pub(super) fn remotes_damage(cx: &Context) -> Option<String> {
    match std::fs::read(cx.snap_dir.join("remotes.json")) {
        Ok(b) => serde_json::from_slice::<Vec<crate::remote::RemoteConfig>>(&b)
            .err()
            .map(|e| format!("not a list of remotes: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("unreadable: {e}")),
    }
}

/// Why the store's contents do not show that this version's format wrote them (the rule
/// for rewriting a damaged `FORMAT`), or `None` when they do: every entry of `snapshots/`
/// is one this version creates, every pack and index has version 1 or 2, every loose
/// object that decompresses has object format version 1, and `packed-refs` (if any) has
/// version 1. Damaged files are not evidence either way.
pub(super) fn format_evidence(cx: &Context) -> Result<Option<String>> {
    use std::io::Read;
    for e in fs::read_dir(&cx.snap_dir)? {
        let e = e?;
        let name = e.file_name();
        let ok = name
            .to_str()
            .is_some_and(|n| KNOWN_NAMES.contains(&n) || durable::is_tmp_name(n.as_bytes()));
        if !ok {
            return Ok(Some(format!(
                "{} is not a file this shelldone writes",
                e.path().display()
            )));
        }
    }
    let packs = cx.objects.packs_dir();
    if packs.is_dir() {
        for e in fs::read_dir(&packs)? {
            let p = e?.path();
            let mut magic = [0u8; 8];
            let read = std::fs::File::open(&p).and_then(|mut f| f.read_exact(&mut magic));
            if read.is_err() {
                continue;
            }
            let newer = match p.extension().and_then(|x| x.to_str()) {
                Some("pack") => magic[..7] == crate::store::pack::PACK_MAGIC[..7],
                Some("idx") => magic[..7] == crate::store::pack::IDX_MAGIC[..7],
                _ => false,
            } && magic[7] > 2;
            if newer {
                return Ok(Some(format!(
                    "{} has version {}, newer than this shelldone's",
                    p.display(),
                    magic[7]
                )));
            }
        }
    }
    for id in cx.objects.list_loose()? {
        let Ok(raw) = std::fs::read(cx.objects.object_path(&id)) else {
            continue;
        };
        let Ok(c) = crate::store::decompress(&raw) else {
            continue;
        };
        if let Err(objects_format::DecodeError::UnsupportedVersion(v)) =
            objects_format::encoding::split_header(&c)
        {
            return Ok(Some(format!(
                "object {id} has object format version {v}, newer than this shelldone's"
            )));
        }
    }
    if let Ok(b) = std::fs::read(cx.refs.packed_path())
        && b.starts_with(b"# shelldone packed-refs ")
        && !b.starts_with(b"# shelldone packed-refs 1\n")
    {
        return Ok(Some(format!(
            "{} has another version",
            cx.refs.packed_path().display()
        )));
    }
    Ok(None)
}
