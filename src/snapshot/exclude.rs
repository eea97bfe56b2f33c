//! Excludes: what the user says is never saved, in gitignore syntax (the `ignore` crate).
//!
//! Two sources, with git's precedence (the deeper, more specific file wins, and a `!pattern`
//! re-includes):
//! - a `.shelldoneignore` file in any folder the save walks (the config dir, `sessions/`,
//!   `journal/` or below): its patterns are relative to that folder, as a `.gitignore`'s are;
//! - `state.exclude` in the config file: patterns relative to the snapshot root, so `cache/`
//!   matches a folder named `cache` anywhere and `config/themes/*.bak` only there.
//!
//! An excluded path is invisible to the live walk: it is not saved, a change to it does not
//! wake the daemon, and `state restore` never deletes it (it is not part of the live state).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{Error, Result};

/// The per-folder exclude file name.
pub const IGNORE_FILE: &str = ".shelldoneignore";

/// The config's exclude patterns, compiled.
#[derive(Debug, Clone)]
pub struct Excludes {
    global: Gitignore,
    patterns: Vec<String>,
}

impl Default for Excludes {
    fn default() -> Self {
        Excludes {
            global: Gitignore::empty(),
            patterns: Vec::new(),
        }
    }
}

impl Excludes {
    /// Compiles `patterns` (gitignore lines relative to the snapshot root).
    ///
    /// # Errors
    /// [`Error::Usage`] naming a pattern that does not compile.
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut b = GitignoreBuilder::new("");
        for p in patterns {
            b.add_line(None, p)
                .map_err(|e| Error::Usage(format!("bad exclude pattern '{p}': {e}")))?;
        }
        let global = b
            .build()
            .map_err(|e| Error::Usage(format!("bad exclude patterns: {e}")))?;
        Ok(Excludes {
            global,
            patterns: patterns.to_vec(),
        })
    }

    /// The patterns, as given.
    #[must_use]
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The verdict of the config's patterns on a snapshot path.
    fn global(&self, rel: &[u8], is_dir: bool) -> Match<()> {
        self.global
            .matched(Path::new(OsStr::from_bytes(rel)), is_dir)
            .map(|_| ())
    }
}

/// The `.shelldoneignore` files in force at one point of a walk: one per folder above it that
/// has one, deepest last.
#[derive(Debug, Default, Clone)]
pub(crate) struct Frames {
    frames: Vec<std::sync::Arc<Gitignore>>,
}

impl Frames {
    /// Reads `dir/.shelldoneignore`, if any, as applying below `dir` (a walk keeps one
    /// `Frames` per branch: a folder's files apply to its own entries only).
    ///
    /// # Errors
    /// A file that exists but cannot be read or holds a bad pattern.
    pub(crate) fn enter(&mut self, dir: &Path) -> Result<()> {
        let file = dir.join(IGNORE_FILE);
        if !file.is_file() {
            return Ok(());
        }
        let mut b = GitignoreBuilder::new(dir);
        if let Some(e) = b.add(&file) {
            return Err(Error::Usage(format!("{}: {e}", file.display())));
        }
        let gi = b
            .build()
            .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
        self.frames.push(std::sync::Arc::new(gi));
        Ok(())
    }

    /// True when no `.shelldoneignore` file is in force (then [`Frames::excluded`] does not look
    /// at its `abs` argument).
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// True when the entry `abs` (snapshot path `rel`) is excluded.
    pub(crate) fn excluded(&self, ex: &Excludes, abs: &Path, rel: &[u8], is_dir: bool) -> bool {
        for gi in self.frames.iter().rev() {
            match gi.matched(abs, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        ex.global(rel, is_dir).is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_patterns_match_snapshot_paths_like_gitignore() {
        let ex = Excludes::new(&[
            "cache/".into(),
            "config/themes/*.bak".into(),
            "!keep.bak".into(),
        ])
        .expect("valid");
        let f = Frames::default();
        let x = |rel: &str, dir: bool| f.excluded(&ex, Path::new("/x"), rel.as_bytes(), dir);
        assert!(x("config/cache", true));
        assert!(x("state/sessions/s1/cache", true));
        assert!(!x("config/cache", false), "cache/ names folders only");
        assert!(x("config/themes/a.bak", false));
        assert!(!x("config/a.bak", false));
        assert!(!x("config/themes/keep.bak", false));
    }

    #[test]
    fn a_deeper_file_wins_and_can_reinclude() {
        let d = tempfile::tempdir().expect("tmp");
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(d.path().join(IGNORE_FILE), "*.log\n").expect("write");
        std::fs::write(sub.join(IGNORE_FILE), "!important.log\n").expect("write");
        let ex = Excludes::default();
        let mut f = Frames::default();
        f.enter(d.path()).expect("read");
        assert!(f.excluded(&ex, &d.path().join("a.log"), b"config/a.log", false));
        let outer = f.clone();
        f.enter(&sub).expect("read");
        assert!(!f.excluded(
            &ex,
            &sub.join("important.log"),
            b"config/sub/important.log",
            false
        ));
        assert!(f.excluded(&ex, &sub.join("other.log"), b"config/sub/other.log", false));
        assert!(outer.excluded(
            &ex,
            &d.path().join("important.log"),
            b"config/important.log",
            false
        ));
    }
}
