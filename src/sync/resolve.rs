//! `shelldone conflicts`: list, show and resolve the open conflicts the head carries.

use objects_format::ObjectId;
use serde::Serialize;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::live::{SaveOptions, Scope};
use crate::merge_drivers::apply_keys;
use crate::snapshot::conflicts::{self, Conflict, ConflictKind};
use crate::snapshot::{Flat, flatten_snapshot};
use crate::store::durable;
use crate::store::refs::HEAD;

use super::merge::read_leaf;

/// How to resolve a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// Keep the version that is live now (the kept one, or whatever was made of it since).
    Ours,
    /// Take the set-aside version (for keys: its values of the conflicting keys).
    Theirs,
    /// Keep both: the set-aside session as `<id>-<device>`, a set-aside file beside the live
    /// one as `<name>.conflict-<device>[.ext]`.
    Both,
}

/// One file of a conflict, both sides.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictFile {
    /// Snapshot path.
    pub path: String,
    /// The version in the head (None: absent there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<Vec<u8>>,
    /// The set-aside version (None: absent there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<Vec<u8>>,
    /// Sizes (kept, other).
    pub sizes: (Option<u64>, Option<u64>),
}

/// What a resolution did.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// The conflict.
    pub conflict: Conflict,
    /// How.
    pub how: Resolution,
    /// Live paths written.
    pub written: Vec<String>,
    /// The snapshot that records the resolution.
    pub snapshot: String,
}

/// The open conflicts the head carries.
///
/// # Errors
/// A corrupt head.
pub fn conflicts(cx: &Context) -> Result<Vec<Conflict>> {
    match cx.refs.get(HEAD)? {
        None => Ok(Vec::new()),
        Some(h) => conflicts::of(&cx.objects.read_snapshot(&h)?),
    }
}

/// Finds one open conflict by id or unique id prefix.
fn conflict(cx: &Context, id: &str) -> Result<(ObjectId, Conflict)> {
    let head = cx.refs.get(HEAD)?.ok_or(Error::NoSnapshot)?;
    let all = conflicts::of(&cx.objects.read_snapshot(&head)?)?;
    let hits: Vec<Conflict> = all.into_iter().filter(|c| c.id.starts_with(id)).collect();
    match hits.len() {
        1 => Ok((head, hits.into_iter().next().expect("one"))),
        0 => Err(Error::UnknownConflict(id.to_owned())),
        _ => Err(Error::AmbiguousConflict {
            prefix: id.to_owned(),
            candidates: hits.into_iter().map(|c| c.id).collect(),
        }),
    }
}

/// Both sides of every file in a conflict's unit (files that are equal are left out).
///
/// # Errors
/// Unknown conflict; the set-aside snapshot is missing (a partial pull) or corrupt.
pub fn conflict_show(cx: &Context, id: &str) -> Result<(Conflict, Vec<ConflictFile>)> {
    let (head, c) = conflict(cx, id)?;
    let kept = flatten_snapshot(&cx.objects, &cx.objects.read_snapshot(&head)?)?;
    let other = other_flat(cx, &c)?;
    let mut paths: Vec<&Vec<u8>> = kept
        .leaves
        .keys()
        .chain(other.leaves.keys())
        .filter(|p| c.covers(p))
        .collect();
    paths.sort();
    paths.dedup();
    let mut files = Vec::new();
    for p in paths {
        let (k, o) = (kept.leaves.get(p), other.leaves.get(p));
        if k.zip(o).is_some_and(|(a, b)| a.same_content(b)) {
            continue;
        }
        files.push(ConflictFile {
            path: String::from_utf8_lossy(p).into_owned(),
            kept: read_leaf(&cx.objects, k)?,
            other: read_leaf(&cx.objects, o)?,
            sizes: (k.map(|l| l.size), o.map(|l| l.size)),
        });
    }
    Ok((c, files))
}

fn other_flat(cx: &Context, c: &Conflict) -> Result<Flat> {
    let o = c.other()?;
    let s = cx.objects.read_snapshot(&o).map_err(|e| match e {
        Error::MissingObject { .. } => Error::Usage(format!(
            "the set-aside version of conflict {} (snapshot {}) is not in this store (a partial pull?); run 'shelldone sync pull' with the full strategy",
            c.id,
            o.short(12)
        )),
        e => e,
    })?;
    flatten_snapshot(&cx.objects, &s)
}

/// Resolves an open conflict and records the resolution as a snapshot (which also saves
/// any other unsaved live change, as every save does).
///
/// # Errors
/// Unknown conflict, missing set-aside version, a key resolution on a file the drivers
/// cannot edit, I/O, lock.
pub fn conflict_resolve(cx: &Context, id: &str, how: Resolution) -> Result<Resolved> {
    let _lock = cx.lock("conflicts resolve")?;
    let (_, c) = conflict(cx, id)?;
    let layout = cx.layout();
    let mut written = Vec::new();
    match (how, c.kind) {
        (Resolution::Ours, _) => {}
        (Resolution::Theirs, ConflictKind::Session | ConflictKind::File) => {
            let scope = match c.kind {
                ConflictKind::Session => {
                    Scope::Session(c.path.trim_start_matches("state/sessions/").to_owned())
                }
                _ => Scope::Path(c.path.as_bytes().to_vec()),
            };
            let plan = crate::live::restore::materialize(cx, c.other()?, &scope)?;
            written.extend(
                plan.create
                    .iter()
                    .chain(&plan.update)
                    .chain(&plan.delete)
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
            );
        }
        (Resolution::Theirs, ConflictKind::Keys) => {
            let other = other_flat(cx, &c)?;
            let theirs =
                read_leaf(&cx.objects, other.leaves.get(c.path.as_bytes()))?.unwrap_or_default();
            let abs = layout.abs(c.path.as_bytes());
            let current = fs_err::read(&abs)?;
            let merged = apply_keys(&c.path, &current, &theirs, &c.keys).ok_or_else(|| {
                Error::Usage(format!(
                    "cannot set the keys of {} from the other version; resolve with --both and edit by hand",
                    c.path
                ))
            })?;
            durable::write_atomic(&abs, &merged)?;
            written.push(c.path.clone());
        }
        (Resolution::Both, _) => {
            let other = other_flat(cx, &c)?;
            let dev = sanitize(&c.other_device);
            for (p, l) in other.leaves.iter().filter(|(p, _)| c.covers(p)) {
                // Symlinks are not copied: a link's meaning depends on where it stands.
                if l.kind == objects_format::EntryKind::Symlink {
                    continue;
                }
                let to = both_path(&c, p, &dev);
                let abs = layout.abs(&to);
                if let Some(parent) = abs.parent() {
                    fs_err::create_dir_all(parent)?;
                }
                let bytes = read_leaf(&cx.objects, Some(l))?.unwrap_or_default();
                durable::write_atomic(&abs, &bytes)?;
                written.push(String::from_utf8_lossy(&to).into_owned());
            }
        }
    }
    let saved = crate::live::save::save_locked(
        cx,
        &SaveOptions {
            message: format!("resolve conflict {} on {} ({how:?})", c.id, c.path).to_lowercase(),
            resolved: vec![c.id.clone()],
            allow_empty: true,
            ..SaveOptions::default()
        },
    )?;
    Ok(Resolved {
        conflict: c,
        how,
        written,
        snapshot: saved.id.map(|i| i.to_hex()).unwrap_or_default(),
    })
}

/// Keeps device names usable in file names.
fn sanitize(d: &str) -> String {
    d.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where `--both` puts the set-aside version of `p`.
fn both_path(c: &Conflict, p: &[u8], dev: &str) -> Vec<u8> {
    if c.kind == ConflictKind::Session {
        let sid = c.path.trim_start_matches("state/sessions/");
        let rest = &p[c.path.len()..];
        return format!("state/sessions/{sid}-{dev}")
            .into_bytes()
            .into_iter()
            .chain(rest.iter().copied())
            .collect();
    }
    let (dir, name) = match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..=i], &p[i + 1..]),
        None => (&b""[..], p),
    };
    let (stem, ext) = match name.iter().rposition(|&b| b == b'.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, &b""[..]),
    };
    [dir, stem, format!(".conflict-{dev}").as_bytes(), ext].concat()
}
