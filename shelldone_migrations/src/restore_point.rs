//! Restore points: copies of every file a migration is about to rewrite, kept so that
//! `shelldone migrate --undo` can put them back.
//!
//! A point is a folder `snapshots/restore-points/<nnnn>-<label>/` holding
//!
//! * `files/<path>` — a copy of each file (paths relative to the state dir) as it was;
//! * `POINT` — written last, text:
//!
//!   ```text
//!   shelldone-restore-point 1
//!   label store-1-to-2
//!   created 1764680000
//!   file 20 snapshots/FORMAT
//!   absent sessions/s1/new.json
//!   ```
//!
//!   (`file <length> <path>`: saved; `absent <path>`: did not exist, undo removes it);
//! * `DONE` — once every step of the migration finished.
//!
//! The folder is built under a `.shelldone-tmp.` name and renamed into place, so a point either
//! exists whole or not at all. A point without `DONE` belongs to a migration that was cut off:
//! the next run reuses it instead of copying half-migrated files into a second one.

use std::path::{Component, Path, PathBuf};

use crate::{MigrationError, WriteFs};

/// The folder of the points, under the state dir.
pub const DIR: &str = "snapshots/restore-points";
/// The first line of `POINT`.
pub const MAGIC: &str = "shelldone-restore-point";
/// The version of `POINT` this crate writes.
pub const VERSION: u32 = 1;
/// The prefix of temp names (shelldone's recovery removes such files).
const TMP: &str = ".shelldone-tmp.";
/// The most files one point holds (a bound on what a `POINT` file may make us do).
const MAX_FILES: usize = 1_000_000;

/// One restore point, as [`list`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The folder name (`0001-store-1-to-2`).
    pub name: String,
    /// What the migration was (`store-1-to-2`).
    pub label: String,
    /// Seconds since the Unix epoch when it was made.
    pub created: u64,
    /// The `POINT` version.
    pub version: u32,
    /// Each file (relative to the state dir) and its saved length, `None` when it did not exist.
    pub files: Vec<(PathBuf, Option<u64>)>,
    /// Every step of its migration finished.
    pub done: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MigrationError + '_ {
    move |source| MigrationError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn unexpected(path: &Path, why: impl Into<String>) -> MigrationError {
    MigrationError::Unexpected {
        path: path.display().to_string(),
        why: why.into(),
    }
}

#[track_caller]
fn sync_dir(fs: &dyn WriteFs, dir: &Path) -> Result<(), MigrationError> {
    fs.sync_dir(dir).map_err(io(dir))
}

/// A relative path with only normal components (what a step may name).
fn check_rel(p: &Path) -> Result<(), MigrationError> {
    let ok = !p.as_os_str().is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !p.to_string_lossy().contains('\n');
    if ok {
        Ok(())
    } else {
        Err(unexpected(p, "not a plain relative path"))
    }
}

/// The number a point's folder name starts with.
fn number(name: &str) -> Option<u64> {
    name.split_once('-')?.0.parse().ok()
}

/// Every point, oldest first (an unreadable `POINT` is an error naming it).
///
/// # Errors
/// I/O errors; a `POINT` that does not parse.
pub fn list(state_dir: &Path) -> Result<Vec<Point>, MigrationError> {
    let dir = state_dir.join(DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP) || number(&name).is_none() {
            continue;
        }
        out.push(read_point(&e.path(), name)?);
    }
    out.sort_by_key(|p| number(&p.name));
    Ok(out)
}

fn read_point(path: &Path, name: String) -> Result<Point, MigrationError> {
    let file = path.join("POINT");
    let text = std::fs::read_to_string(&file).map_err(io(&file))?;
    let mut lines = text.lines();
    let version = lines
        .next()
        .and_then(|l| l.strip_prefix(MAGIC))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| unexpected(&file, format!("not '{MAGIC} <version>'")))?;
    let mut p = Point {
        name,
        label: String::new(),
        created: 0,
        version,
        files: Vec::new(),
        done: path.join("DONE").is_file(),
    };
    if version > VERSION {
        // A newer shelldone's point: listed, never interpreted.
        return Ok(p);
    }
    for line in lines {
        if p.files.len() >= MAX_FILES {
            return Err(unexpected(&file, "too many files"));
        }
        let bad = || unexpected(&file, format!("bad line {line:?}"));
        let (key, rest) = line.split_once(' ').ok_or_else(bad)?;
        match key {
            "label" => rest.clone_into(&mut p.label),
            "created" => p.created = rest.parse().map_err(|_| bad())?,
            "file" => {
                let (len, rel) = rest.split_once(' ').ok_or_else(bad)?;
                let rel = PathBuf::from(rel);
                check_rel(&rel)?;
                p.files.push((rel, Some(len.parse().map_err(|_| bad())?)));
            }
            "absent" => {
                let rel = PathBuf::from(rest);
                check_rel(&rel)?;
                p.files.push((rel, None));
            }
            _ => return Err(bad()),
        }
    }
    Ok(p)
}

/// The point a migration that was cut off left (the newest, when it has no `DONE`).
///
/// # Errors
/// As [`list`].
pub fn unfinished(state_dir: &Path) -> Result<Option<Point>, MigrationError> {
    Ok(list(state_dir)?
        .pop()
        .filter(|p| !p.done && p.version <= VERSION))
}

/// Makes a restore point holding `files` (relative to `state_dir`) as they are now, or returns
/// the unfinished one a cut-off migration left (its copies are of the files before any step
/// ran). Every write goes through `fs`. The caller holds the store lock.
///
/// # Errors
/// I/O errors (nothing is left but a temp folder the next call removes); a path that is not
/// plain and relative.
pub fn make(
    state_dir: &Path,
    label: &str,
    files: &[PathBuf],
    fs: &dyn WriteFs,
) -> Result<Point, MigrationError> {
    for rel in files {
        check_rel(rel)?;
    }
    if let Some(p) = unfinished(state_dir)? {
        return Ok(p);
    }
    let dir = state_dir.join(DIR);
    fs.create_dir_all(&dir).map_err(io(&dir))?;
    // The folder's entry in `snapshots/` (its own entries are synced after the point's rename).
    sync_dir(fs, &state_dir.join("snapshots"))?;
    // Temp folders of an earlier cut-off call: nothing refers to them.
    for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let e = e.map_err(io(&dir))?;
        if e.file_name().to_string_lossy().starts_with(TMP) {
            fs.remove_dir_all(&e.path()).map_err(io(&e.path()))?;
        }
    }
    let next = list(state_dir)?
        .iter()
        .filter_map(|p| number(&p.name))
        .max()
        .unwrap_or(0)
        + 1;
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = format!("{next:04}-{label}");
    let tmp = dir.join(format!("{TMP}point.{}", std::process::id()));
    fs.create_dir(&tmp).map_err(io(&tmp))?;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut text = format!("{MAGIC} {VERSION}\nlabel {label}\ncreated {created}\n");
    let mut saved = Vec::new();
    let mut dirs = vec![tmp.clone()];
    for rel in files {
        let src = state_dir.join(rel);
        match std::fs::read(&src) {
            Ok(bytes) => {
                let to = tmp.join("files").join(rel);
                let parent = to.parent().expect("a file under files/");
                fs.create_dir_all(parent).map_err(io(parent))?;
                let mut anc = parent;
                while anc != tmp && !dirs.iter().any(|d| d == anc) {
                    dirs.push(anc.to_path_buf());
                    anc = anc.parent().expect("under tmp");
                }
                fs.write_file(&to, &bytes, None).map_err(io(&to))?;
                text.push_str(&format!("file {} {}\n", bytes.len(), rel.display()));
                saved.push((rel.clone(), Some(bytes.len() as u64)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                text.push_str(&format!("absent {}\n", rel.display()));
                saved.push((rel.clone(), None));
            }
            Err(e) => return Err(io(&src)(e)),
        }
    }
    let point = tmp.join("POINT");
    fs.write_file(&point, text.as_bytes(), None)
        .map_err(io(&point))?;
    for d in dirs.iter().rev() {
        sync_dir(fs, d)?;
    }
    let final_path = dir.join(&name);
    fs.rename(&tmp, &final_path).map_err(io(&final_path))?;
    sync_dir(fs, &dir)?;
    Ok(Point {
        name,
        label,
        created,
        version: VERSION,
        files: saved,
        done: false,
    })
}

/// Marks `point` finished (through `fs`): every step of its migration ran.
///
/// # Errors
/// I/O errors.
pub fn finish(state_dir: &Path, point: &Point, fs: &dyn WriteFs) -> Result<(), MigrationError> {
    let dir = state_dir.join(DIR).join(&point.name);
    let done = dir.join("DONE");
    fs.write_file(&done, b"", None).map_err(io(&done))?;
    sync_dir(fs, &dir)
}

/// Removes what an undo cut off after it had put every file back leaves: its point, renamed
/// to a temp name before being deleted (through `fs`). Nothing refers to it.
///
/// # Errors
/// I/O errors.
pub fn clean_undone(state_dir: &Path, fs: &dyn WriteFs) -> Result<(), MigrationError> {
    let dir = state_dir.join(DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&dir)(e)),
    };
    for e in entries {
        let e = e.map_err(io(&dir))?;
        if e.file_name()
            .to_string_lossy()
            .starts_with(&format!("{TMP}undone."))
        {
            fs.remove_dir_all(&e.path()).map_err(io(&e.path()))?;
            sync_dir(fs, &dir)?;
        }
    }
    Ok(())
}

/// Puts back every file `point` saved (temp file, fsync, rename) and removes those it records
/// as absent, then deletes the point, writing through `fs`. Idempotent: cut off anywhere,
/// running it again gives the same files. The caller holds the store lock and has checked that
/// nothing written since the migration would be stranded.
///
/// # Errors
/// A point of a newer version or whose copies do not have the recorded lengths (nothing is
/// changed then); I/O errors.
pub fn undo(state_dir: &Path, point: &Point, fs: &dyn WriteFs) -> Result<(), MigrationError> {
    let dir = state_dir.join(DIR).join(&point.name);
    if point.version > VERSION {
        return Err(unexpected(
            &dir,
            format!(
                "restore point version {} (this shelldone reads up to {VERSION}); upgrade shelldone",
                point.version
            ),
        ));
    }
    // Every copy is checked before the first file is written back.
    let mut copies = Vec::new();
    for (rel, len) in &point.files {
        let Some(len) = len else {
            copies.push((rel, None));
            continue;
        };
        let from = dir.join("files").join(rel);
        let bytes = std::fs::read(&from).map_err(io(&from))?;
        if bytes.len() as u64 != *len {
            return Err(unexpected(
                &from,
                format!(
                    "holds {} bytes, the point recorded {len}; the restore point is damaged",
                    bytes.len()
                ),
            ));
        }
        copies.push((rel, Some(bytes)));
    }
    for (rel, bytes) in copies {
        let to = state_dir.join(rel);
        let parent = to.parent().expect("a file under the state dir");
        match bytes {
            Some(bytes) => {
                fs.create_dir_all(parent).map_err(io(parent))?;
                let tmp = parent.join(format!("{TMP}undo.{}", std::process::id()));
                let res = fs
                    .write_file(&tmp, &bytes, None)
                    .and_then(|()| fs.rename(&tmp, &to));
                if res.is_err() {
                    let _ = fs.remove_file(&tmp);
                }
                res.map_err(io(&to))?;
            }
            None => match fs.remove_file(&to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&to)(e)),
            },
        }
        sync_dir(fs, parent)?;
    }
    let gone = state_dir
        .join(DIR)
        .join(format!("{TMP}undone.{}", point.name));
    fs.rename(&dir, &gone).map_err(io(&dir))?;
    sync_dir(fs, &state_dir.join(DIR))?;
    fs.remove_dir_all(&gone).map_err(io(&gone))?;
    // Without this sync a power cut brings the renamed folder back (nothing refers to it, but
    // it would stay).
    sync_dir(fs, &state_dir.join(DIR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StdFs;

    fn state() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("snapshots")).expect("mkdir");
        std::fs::write(d.path().join("snapshots/FORMAT"), "shelldone-store 1.0\n").expect("w");
        d
    }

    #[test]
    fn restore_point_round_trips_and_undo_is_idempotent() {
        let d = state();
        let files = [
            PathBuf::from("snapshots/FORMAT"),
            PathBuf::from("sessions/s1/new.json"),
        ];
        let p = make(d.path(), "store-1-to-2", &files, &StdFs).expect("make");
        assert_eq!(p.name, "0001-store-1-to-2");
        assert_eq!(
            list(d.path()).expect("list"),
            vec![p.clone()],
            "POINT reads back"
        );
        // A cut-off migration's point is reused, not copied again over migrated files.
        std::fs::write(d.path().join("snapshots/FORMAT"), "shelldone-store 2.0\n").expect("w");
        std::fs::create_dir_all(d.path().join("sessions/s1")).expect("mkdir");
        std::fs::write(d.path().join("sessions/s1/new.json"), "{}").expect("w");
        assert_eq!(
            make(d.path(), "store-1-to-2", &files, &StdFs).expect("again"),
            p
        );
        finish(d.path(), &p, &StdFs).expect("finish");
        let done = list(d.path()).expect("list").pop().expect("one");
        assert!(done.done);
        // Undo twice (a crash after the files were written back, before the point went).
        undo(d.path(), &done, &StdFs).expect("undo");
        assert_eq!(
            std::fs::read_to_string(d.path().join("snapshots/FORMAT")).expect("r"),
            "shelldone-store 1.0\n"
        );
        assert!(!d.path().join("sessions/s1/new.json").exists());
        assert!(list(d.path()).expect("list").is_empty());
        let left: Vec<_> = std::fs::read_dir(d.path().join(DIR))
            .expect("dir")
            .collect();
        assert!(left.is_empty(), "nothing left: {left:?}");
        // A second point gets the next number.
        let q = make(d.path(), "x y", &files[..1], &StdFs).expect("make");
        assert_eq!(q.name, "0001-x-y");
    }

    #[test]
    fn a_damaged_or_newer_point_changes_nothing() {
        let d = state();
        let p = make(
            d.path(),
            "store-1-to-2",
            &[PathBuf::from("snapshots/FORMAT")],
            &StdFs,
        )
        .expect("m");
        std::fs::write(d.path().join("snapshots/FORMAT"), "shelldone-store 2.0\n").expect("w");
        let copy = d
            .path()
            .join(DIR)
            .join(&p.name)
            .join("files/snapshots/FORMAT");
        std::fs::write(&copy, "short").expect("w");
        let err = undo(d.path(), &p, &StdFs).expect_err("damaged");
        assert!(err.to_string().contains("damaged"), "{err}");
        assert_eq!(
            std::fs::read_to_string(d.path().join("snapshots/FORMAT")).expect("r"),
            "shelldone-store 2.0\n"
        );
        let newer = Point { version: 9, ..p };
        let err = undo(d.path(), &newer, &StdFs).expect_err("newer");
        assert!(err.to_string().contains("version 9"), "{err}");
        assert!(
            make(d.path(), "a", &[PathBuf::from("/etc/passwd")], &StdFs).is_err(),
            "absolute paths are refused"
        );
    }
}
