//! Damaged store files: what `state check` reports about the store's own files (everything but
//! the content of objects, which [`crate::check`] verifies) and what `state recover` does about
//! each. The table of every file, its damage and its repair is in docs/safety.md, "Damaged
//! store files"; this module is that table in code.
//!
//! Two rules run through it. Nothing is deleted: a damaged file (or line) is moved to
//! `quarantine/<ns>/snapshots/…` in the state dir before anything replaces it. And a ref is
//! only ever set to a snapshot its reflog already named, so a repair never invents history.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use fs_err as fs;
use objects_format::{Kind, Object, ObjectId};
use serde::Serialize;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::live::restore::{IntentTarget, parse_intent};
use crate::store::durable;
use crate::store::refs::{PackedScan, ReflogScan};

/// A damaged store file found by [`file_damage`].
#[derive(Debug, Clone, Serialize)]
pub struct FileDamage {
    /// What the file is: `ref`, `packed-refs`, `reflog`, `FORMAT`, `device`, `stat cache`,
    /// `restore intent`, `shallow list`, `remotes`, `pack`.
    pub kind: &'static str,
    /// The file.
    pub file: PathBuf,
    /// The line, for files of lines (1-based).
    pub line: Option<usize>,
    /// What is wrong.
    pub why: String,
}

impl FileDamage {
    /// `path` or `path:line`.
    #[must_use]
    pub fn place(&self) -> String {
        match self.line {
            Some(n) => format!("{}:{n}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

/// One repair made by `state recover`.
#[derive(Debug, Clone, Serialize)]
pub struct Repair {
    /// The file repaired.
    pub file: String,
    /// What was wrong.
    pub damage: String,
    /// What was done.
    pub action: String,
}

/// The refs as stored, damage included.
#[derive(Debug)]
pub(crate) struct RefView {
    /// Loose ref files: name → (path, value or what is wrong).
    pub loose: BTreeMap<String, (PathBuf, std::result::Result<ObjectId, String>)>,
    /// `packed-refs`.
    pub packed: PackedScan,
    /// The reflog.
    pub reflog: ReflogScan,
}

impl RefView {
    pub(crate) fn read(st: &Context) -> Result<RefView> {
        Ok(RefView {
            loose: st
                .refs
                .scan_loose()?
                .into_iter()
                .map(|(n, p, v)| (n, (p, v)))
                .collect(),
            packed: st.refs.scan_packed()?,
            reflog: st.refs.scan_reflog()?,
        })
    }

    /// The packed refs that could be read (all of them, or those of the lines that parse).
    pub(crate) fn packed_map(&self) -> BTreeMap<String, ObjectId> {
        match &self.packed {
            PackedScan::Absent => BTreeMap::new(),
            PackedScan::Sound(m) => m.clone(),
            PackedScan::Corrupt { salvaged, .. } => salvaged.clone(),
        }
    }

    /// What each ref holds as far as it can be read: the loose value, else the packed one.
    pub(crate) fn values(&self) -> BTreeMap<String, ObjectId> {
        let mut out = self.packed_map();
        for (n, (_, v)) in &self.loose {
            if let Ok(id) = v {
                out.insert(n.clone(), *id);
            }
        }
        out
    }

    /// Where a ref's value is kept: its loose file, or `packed-refs`.
    pub(crate) fn place(&self, st: &Context, name: &str) -> PathBuf {
        match self.loose.get(name) {
            Some((p, _)) => p.clone(),
            None if self.packed_map().contains_key(name) => st.refs.packed_path().to_path_buf(),
            None => st.refs.loose_path(name),
        }
    }

    /// The last value the reflog set for each ref (None: deleted), with that line's number.
    pub(crate) fn logged(&self) -> BTreeMap<String, (Option<ObjectId>, usize)> {
        let mut out = BTreeMap::new();
        for l in &self.reflog.lines {
            out.insert(l.name.clone(), (l.entry.new, l.no));
        }
        out
    }

    /// Refs that hold a value their reflog records before its last line: a ref cannot move
    /// back without a line saying so, so the newer value was lost (a deleted loose file
    /// uncovers the older packed value): name → (value held, last value logged, its line).
    pub(crate) fn behind(&self) -> BTreeMap<String, (ObjectId, ObjectId, usize)> {
        let mut earlier: BTreeMap<&str, BTreeSet<ObjectId>> = BTreeMap::new();
        let mut last: BTreeMap<&str, (Option<ObjectId>, usize)> = BTreeMap::new();
        for l in &self.reflog.lines {
            if let Some((Some(prev), _)) = last.get(l.name.as_str()) {
                earlier.entry(l.name.as_str()).or_default().insert(*prev);
            }
            last.insert(l.name.as_str(), (l.entry.new, l.no));
        }
        self.values()
            .into_iter()
            .filter_map(|(name, id)| {
                let (Some(newest), no) = *last.get(name.as_str())? else {
                    return None;
                };
                (newest != id && earlier.get(name.as_str())?.contains(&id))
                    .then_some((name, (id, newest, no)))
            })
            .collect()
    }

    /// Refs the reflog says exist that no file holds: (name, last value, line).
    pub(crate) fn missing(&self) -> Vec<(String, ObjectId, usize)> {
        let packed = self.packed_map();
        self.logged()
            .into_iter()
            .filter_map(|(n, (v, no))| {
                let id = v?;
                (!self.loose.contains_key(&n) && !packed.contains_key(&n)).then_some((n, id, no))
            })
            .collect()
    }
}

/// How usable a snapshot is as the value of a ref, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Health {
    /// Its snapshot object is missing, corrupt or not a snapshot.
    Unreadable,
    /// The snapshot object reads, but a tree or chunk list under it does not.
    Readable,
    /// The snapshot, its trees and chunk lists read and verify (what `log`, `save` and
    /// restore planning read); some blob may be missing.
    Sound,
    /// Sound, and every blob it names is present.
    Complete,
}

/// Judges snapshots, remembering what it read.
pub(crate) struct Judge<'a> {
    st: &'a Context,
    /// Tree or chunk list → (sound, complete).
    memo: HashMap<ObjectId, (bool, bool)>,
}

impl<'a> Judge<'a> {
    pub(crate) fn new(st: &'a Context) -> Self {
        Judge {
            st,
            memo: HashMap::new(),
        }
    }

    pub(crate) fn snapshot(&mut self, id: ObjectId) -> Health {
        let Ok(s) = self.st.objects.read_snapshot(&id) else {
            return Health::Unreadable;
        };
        match self.node(s.root, Kind::Tree, 0) {
            (false, _) => Health::Readable,
            (true, false) => Health::Sound,
            (true, true) => Health::Complete,
        }
    }

    fn node(&mut self, id: ObjectId, kind: Kind, depth: usize) -> (bool, bool) {
        if kind == Kind::Blob {
            return (true, self.st.objects.has(&id));
        }
        if let Some(r) = self.memo.get(&id) {
            return *r;
        }
        let children: Option<Vec<(ObjectId, Kind)>> = match self.st.objects.read(&id, kind) {
            Ok(Object::Tree(t)) if depth < 256 => Some(
                t.entries
                    .iter()
                    .map(|e| (e.id, e.kind.target_kind()))
                    .collect(),
            ),
            Ok(Object::ChunkList(c)) => Some(c.chunks.iter().map(|c| (c.id, Kind::Blob)).collect()),
            _ => None,
        };
        let r = match children {
            None => (false, false),
            Some(ch) => ch.into_iter().fold((true, true), |(s, c), (id, k)| {
                let (cs, cc) = self.node(id, k, depth + 1);
                (s && cs, c && cc)
            }),
        };
        self.memo.insert(id, r);
        r
    }
}

/// Where `state recover` moves what it replaces: `quarantine/<ns>/snapshots/<path>` in the
/// state dir, next to the quarantined session descriptors.
pub(crate) struct Quarantine {
    root: PathBuf,
    snap_dir: PathBuf,
}

impl Quarantine {
    pub(crate) fn new(st: &Context) -> Self {
        Quarantine {
            root: st
                .paths
                .state_dir
                .join("quarantine")
                .join(crate::store::now_ns().to_string())
                .join("snapshots"),
            snap_dir: st.snap_dir.clone(),
        }
    }

    fn dest(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.snap_dir) {
            Ok(rel) => self.root.join(rel),
            Err(_) => self
                .root
                .join(path.file_name().unwrap_or(std::ffi::OsStr::new("file"))),
        }
    }

    /// Moves a store file into quarantine.
    pub(crate) fn take(&self, path: &Path) -> Result<PathBuf> {
        let dest = self.dest(path);
        fs::create_dir_all(dest.parent().expect("under the quarantine dir"))?;
        fs::rename(path, &dest)?;
        if let Some(dir) = path.parent() {
            durable::sync_dir(dir)?;
        }
        Ok(dest)
    }

    /// Writes `bytes` into quarantine under the place of `path` (a copy of a file about to be
    /// replaced, or the damaged lines of one).
    pub(crate) fn write(&self, path: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let dest = self.dest(path);
        fs::create_dir_all(dest.parent().expect("under the quarantine dir"))?;
        durable::write_atomic(&dest, bytes)?;
        Ok(dest)
    }
}

/// Names this version keeps directly in `snapshots/`.
const KNOWN_NAMES: [&str; 15] = [
    "objects",
    "packs",
    "staging",
    "refs",
    "packed-refs",
    "logs",
    "lock",
    "lock.owner",
    "statcache",
    "device",
    "FORMAT",
    "restore-intent",
    "shallow",
    "remotes.json",
    "remotes",
];

/// `line 3` or `lines 3-5, 9`.
fn line_ranges(lines: &[usize]) -> String {
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
fn labelled(why: &str) -> String {
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
            file: statcache,
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
fn intent_damage(cx: &Context) -> Result<Option<String>> {
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
fn remotes_damage(cx: &Context) -> Option<String> {
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
fn format_evidence(cx: &Context) -> Result<Option<String>> {
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
fn repair_loose_objects(cx: &Context, q: &Quarantine, out: &mut Vec<Repair>) -> Result<()> {
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

/// The reflog: lines that do not parse, and lines naming an id that is not a stored
/// snapshot, move to a quarantine file; a line whose only fault is bytes that are not
/// UTF-8 stays, with those bytes replaced.
fn repair_reflog(cx: &Context, q: &Quarantine, out: &mut Vec<Repair>) -> Result<()> {
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
fn repair_refs(cx: &Context, q: &Quarantine, out: &mut Vec<Repair>) -> Result<()> {
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
fn unlogged_values(cx: &Context, view: &RefView) -> Vec<(String, ObjectId, Option<ObjectId>)> {
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
fn complete_reflog(cx: &Context, out: &mut Vec<Repair>) -> Result<()> {
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

/// `device`: rewritten with the id the reflog's newest local save records.
fn repair_device(cx: &Context, out: &mut Vec<Repair>) -> Result<()> {
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
fn repair_small_files(cx: &Context, q: &Quarantine, out: &mut Vec<Repair>) -> Result<()> {
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

/// Everything `state recover` repairs in the store's own files, in order: packs and
/// indexes, loose objects, the reflog, refs, `device`, then small files.
pub(crate) fn repair_store(cx: &Context, q: &Quarantine, out: &mut Vec<Repair>) -> Result<()> {
    repair_packs(cx, Some(q), out)?;
    repair_loose_objects(cx, q, out)?;
    repair_reflog(cx, q, out)?;
    repair_refs(cx, q, out)?;
    repair_device(cx, out)?;
    repair_small_files(cx, q, out)?;
    Ok(())
}
