//! A plain directory as a remote (a USB disk, an NFS mount, a Syncthing folder).
//!
//! Layout:
//! * `<dir>/shelldone-remote` — marker, `shelldone-dir-remote 1\n`;
//! * `<dir>/objects/ab/cdef…` — the same zstd loose files as the local store, each written as a
//!   `.shelldone-tmp.*` file in its fan-out dir, made durable, then renamed;
//! * `<dir>/refs/<device>/head`, `<dir>/refs/<device>/sessions/<x>` — hex id + `\n`.
//!
//! Lock-free: objects are content-addressed (writing one twice is harmless) and a device only
//! writes refs under its own `refs/<device>/`, so concurrent writers and file-syncing tools
//! cannot lose data. Files that are not ours (Syncthing conflict copies, temp files) are ignored.
//!
//! A plain [`Backend`]: the transfer module (`crate::transfer`) walks, verifies and stages; this
//! file only reads and writes the folder.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fs_err as fs;
use objects_format::ObjectId;

use super::{Backend, Outgoing, RefUpdate, ref_conflict, verify};
use crate::error::{Error, Result};
use crate::store::durable;

/// Name of the marker file.
pub const MARKER: &str = "shelldone-remote";
/// Content of the marker file (format version 1, what a new remote is created at).
pub const MARKER_LINE: &str = "shelldone-dir-remote 1";
/// The marker line without its version (`<prefix> <N>`, see [`super::format`]).
pub const MARKER_PREFIX: &str = "shelldone-dir-remote";

/// A directory remote.
#[derive(Debug, Clone)]
pub struct DirRemote {
    name: String,
    dir: PathBuf,
    /// The marker was found (or written) by this handle: objects can be read without asking
    /// again for each one.
    opened: bool,
}

/// True for a ref path component this remote reads or writes: `[A-Za-z0-9._%-]+`, not starting
/// with `.` or `~` (temp files), not a Syncthing conflict copy, not a lock or temp file.
#[must_use]
pub fn ref_component_ok(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 255
        && !c.starts_with('.')
        && !c.contains(".sync-conflict")
        && !c.ends_with(".tmp")
        && !c.ends_with(".lock")
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'%'))
}

/// Checks a remote ref name: `<device>/head` or `<device>/sessions/<x>`.
///
/// # Errors
/// [`Error::BadRefName`].
pub fn check_remote_ref(name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = match parts.as_slice() {
        [dev, "head"] => ref_component_ok(dev),
        [dev, "sessions", s] => ref_component_ok(dev) && ref_component_ok(s),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::BadRefName(name.to_owned()))
    }
}

/// Parses a ref file's content: 64 hex characters and a newline (a missing newline is accepted).
fn parse_ref(content: &[u8]) -> Option<ObjectId> {
    let s = std::str::from_utf8(content).ok()?;
    let s = s.strip_suffix('\n').unwrap_or(s);
    ObjectId::from_hex(s).ok()
}

impl DirRemote {
    /// A remote named `name` (for messages) at `dir`.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        DirRemote {
            name: name.into(),
            dir: dir.into(),
            opened: false,
        }
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the remote (marker, folders) on purpose (`remote add --init`); an existing
    /// remote is left as it is.
    ///
    /// # Errors
    /// A non-empty folder that is not a remote, I/O.
    pub fn init(&self) -> Result<()> {
        self.open(true).map(|_| ())
    }

    /// True when the folder is a directory remote (its marker is there).
    ///
    /// # Errors
    /// A non-empty folder that is not a remote, a marker of another version, I/O.
    pub fn exists(&self) -> Result<bool> {
        self.open(false)
    }

    /// Raises the remote's layout version to this binary's ([`super::format::supported`]) on
    /// purpose (`remote upgrade`): (version before, version after). Devices whose shelldone
    /// reads only the old version refuse the remote from then on.
    ///
    /// # Errors
    /// A missing remote, one newer than this binary, I/O.
    pub fn upgrade(&self) -> Result<(u32, u32)> {
        if !self.open(false)? {
            return Err(self.err(format!(
                "{} is not a directory remote (no {MARKER}); nothing to upgrade",
                self.dir.display()
            )));
        }
        let marker = self.dir.join(MARKER);
        let found = super::format::parse_marker(
            &String::from_utf8_lossy(&fs::read(&marker)?),
            MARKER_PREFIX,
        )
        .ok_or_else(|| self.err(format!("{} changed while it was read", marker.display())))?;
        let to = super::format::supported();
        if found < to {
            durable::write_atomic(
                &marker,
                super::format::marker_line(MARKER_PREFIX, to).as_bytes(),
            )?;
        }
        Ok((found, found.max(to)))
    }

    fn err(&self, why: impl Into<String>) -> Error {
        Error::remote(&self.name, why)
    }

    /// Path of an object's file on the remote.
    #[must_use]
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    fn ref_path(&self, name: &str) -> PathBuf {
        self.dir.join("refs").join(name)
    }

    /// Checks the marker. Returns false when the remote does not exist yet (no dir, or an empty
    /// one); with `create`, creates it then.
    fn open(&self, create: bool) -> Result<bool> {
        let marker = self.dir.join(MARKER);
        match std::fs::read(&marker) {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                let line = s.trim_end();
                return match super::format::parse_marker(line, MARKER_PREFIX) {
                    // Read and written at its own version: nothing this binary writes is newer.
                    Some(v) if v <= super::format::supported() => Ok(true),
                    Some(v) => Err(super::format::newer(&self.name, v)),
                    None => Err(self.err(format!(
                        "{} says {line:?}; this shelldone understands {MARKER_LINE:?} (upgrade shelldone?)",
                        marker.display()
                    ))),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", marker.display()),
                )));
            }
        }
        // Empty, or holding only temp files of an interrupted creation.
        let empty = match std::fs::read_dir(&self.dir) {
            Ok(it) => it
                .filter_map(std::result::Result::ok)
                .all(|e| durable::is_tmp_name(e.file_name().as_encoded_bytes())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", self.dir.display()),
                )));
            }
        };
        if !empty {
            return Err(self.err(format!(
                "{} exists but is not a shelldone directory remote (no {MARKER} file); use an empty or new directory",
                self.dir.display()
            )));
        }
        if !create {
            return Ok(false);
        }
        // The marker first: a creation interrupted later still leaves a recognisable remote.
        fs::create_dir_all(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            let _ = durable::sync_dir(parent);
        }
        durable::write_atomic(&marker, format!("{MARKER_LINE}\n").as_bytes())?;
        fs::create_dir_all(self.dir.join("objects"))?;
        fs::create_dir_all(self.dir.join("refs"))?;
        Ok(true)
    }

    fn has_object(&self, id: &ObjectId) -> bool {
        std::fs::symlink_metadata(self.object_path(id)).is_ok_and(|m| m.is_file())
    }

    /// Reads one ref file (bounded); None when absent.
    fn read_ref(&self, name: &str) -> Result<Option<ObjectId>> {
        let p = self.ref_path(name);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", p.display()),
                )));
            }
        };
        if !meta.is_file() {
            return Err(self.err(format!(
                "ref {name} ({}) is not a regular file",
                p.display()
            )));
        }
        let mut buf = Vec::new();
        fs::File::open(&p)?.take(200).read_to_end(&mut buf)?;
        parse_ref(&buf)
            .map(Some)
            .ok_or_else(|| self.err(format!("ref {name} ({}) is malformed", p.display())))
    }

    /// Reads a stored object from the remote (bounded, regular files only); None when absent.
    fn read_object_file(&self, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        let p = self.object_path(id);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{e} (reading {})", p.display()),
                )));
            }
        };
        if !meta.is_file() {
            return Err(Error::CorruptObject {
                id: *id,
                why: format!("{} is not a regular file", p.display()),
            });
        }
        if meta.len() > verify::MAX_RAW_OBJECT {
            return Err(Error::CorruptObject {
                id: *id,
                why: format!("stored file is {} bytes, over the limit", meta.len()),
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        fs::File::open(&p)?
            .take(verify::MAX_RAW_OBJECT + 1)
            .read_to_end(&mut buf)?;
        Ok(Some(buf))
    }

    /// Checks the marker once per handle, creating the remote with `create`.
    fn ensure_open(&mut self, create: bool) -> Result<bool> {
        if !self.opened {
            self.opened = self.open(create)?;
        }
        Ok(self.opened)
    }
}

impl Backend for DirRemote {
    fn name(&self) -> &str {
        &self.name
    }

    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        let mut out = BTreeMap::new();
        if !self.open(false)? {
            return Ok(out);
        }
        let refs = self.dir.join("refs");
        let Ok(devices) = std::fs::read_dir(&refs) else {
            return Ok(out);
        };
        for d in devices {
            let d = d?;
            let Some(dev) = d.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !ref_component_ok(&dev) || !d.file_type()?.is_dir() {
                continue;
            }
            let head = format!("{dev}/head");
            if let Some(id) = self.read_ref(&head)? {
                out.insert(head, id);
            }
            let Ok(sessions) = std::fs::read_dir(d.path().join("sessions")) else {
                continue;
            };
            for s in sessions {
                let s = s?;
                let Some(sn) = s.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !ref_component_ok(&sn) || !s.file_type()?.is_file() {
                    continue;
                }
                let name = format!("{dev}/sessions/{sn}");
                if let Some(id) = self.read_ref(&name)? {
                    out.insert(name, id);
                }
            }
        }
        Ok(out)
    }

    /// Each object's file is checked: a synced copy of the folder may hold a tree without its
    /// children.
    fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        Ok(ids.iter().map(|id| self.has_object(id)).collect())
    }

    fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if !self.ensure_open(false)? {
            return Err(self.err(format!(
                "{} is not a shelldone directory remote yet (nothing pushed)",
                self.dir.display()
            )));
        }
        ids.iter().map(|id| self.read_object_file(id)).collect()
    }

    /// Temp files (the sender's verified bytes) in their fan-out dirs, each fsynced (in
    /// parallel), then renamed in the order given (children first), then the fan-out dirs
    /// made durable.
    fn put(&mut self, objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
        self.ensure_open(true)?;
        let mut temps: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut fans: HashSet<PathBuf> = HashSet::new();
        let res = (|| -> Result<()> {
            for o in objects {
                let o = o?;
                let target = self.object_path(&o.id);
                let fan = target.parent().expect("fan-out dir").to_path_buf();
                if fans.insert(fan.clone()) {
                    fs::create_dir_all(&fan)?;
                }
                let tmp = durable::tmp_path(&fan);
                temps.push((tmp.clone(), target));
                let mut f = fs::File::create(&tmp)?;
                f.write_all(&o.raw)?;
            }
            if !temps.is_empty() {
                // fsync each file (in parallel) rather than syncfs: syncfs would also flush every
                // other program's dirty data on that filesystem (see ADR 0001).
                use rayon::prelude::*;
                temps.par_iter().try_for_each(|(tmp, _)| {
                    std::fs::File::open(tmp).and_then(|f| f.sync_data())
                })?;
                for (tmp, target) in &temps {
                    fs::rename(tmp, target)?;
                }
                fans.par_iter().try_for_each(|f| durable::sync_dir(f))?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            for (tmp, _) in &temps {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Compares every expected value first, then writes every new value to a temp file beside
    /// its ref, and only when all are durable renames them into place. A failure before the
    /// renames leaves every ref unchanged.
    fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()> {
        for u in updates {
            check_remote_ref(&u.name)?;
        }
        self.ensure_open(true)?;
        for u in updates {
            let found = self.read_ref(&u.name)?;
            if found != u.expected {
                return Err(ref_conflict(u, found));
            }
        }
        let mut prepared: Vec<(Option<PathBuf>, PathBuf)> = Vec::new();
        let res = (|| -> Result<()> {
            for u in updates {
                let target = self.ref_path(&u.name);
                match u.new {
                    Some(id) => {
                        let dir = target.parent().expect("ref dir").to_path_buf();
                        fs::create_dir_all(&dir)?;
                        let tmp = durable::tmp_path(&dir);
                        prepared.push((Some(tmp.clone()), target));
                        let mut f = fs::File::create(&tmp)?;
                        f.write_all(format!("{}\n", id.to_hex()).as_bytes())?;
                        f.sync_all()?;
                    }
                    None => prepared.push((None, target)),
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            for (tmp, _) in &prepared {
                if let Some(t) = tmp {
                    let _ = std::fs::remove_file(t);
                }
            }
            return Err(e);
        }
        let mut dirs = HashSet::new();
        for (tmp, target) in &prepared {
            match tmp {
                Some(t) => fs::rename(t, target)?,
                None => match std::fs::remove_file(target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                },
            }
            dirs.insert(target.parent().expect("ref dir").to_path_buf());
        }
        for d in &dirs {
            durable::sync_dir(d)?;
        }
        Ok(())
    }
}
