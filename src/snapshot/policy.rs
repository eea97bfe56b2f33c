//! What a snapshot may hold: one rule, used by save, restore, transfer verification and the git
//! mapping, so that what one device saves every other device can pull (docs/safety.md, "What a
//! snapshot may hold").
//!
//! Three classes:
//! * **Structural** problems are refused everywhere, as corrupt or hostile data: entry names that
//!   are empty, `.`, `..`, longer than 255 bytes or contain `/` or NUL (the object format's own
//!   rule, [`objects_format::validate_name`]); symlink targets that are empty, longer than
//!   [`MAX_SYMLINK_TARGET`] or contain NUL. A filesystem cannot produce any of these, so a save
//!   never meets them; a remote that sends one is refused.
//! * **Escaping symlinks** — an absolute target, or a relative one that could lead out of the
//!   root folder the link lives in (`config/`, `state/sessions/`, `state/journal/`) — and entries
//!   nested deeper than [`MAX_DEPTH`] are machine-specific or unrestorable. `save` leaves them out
//!   (with a warning naming the path; a live escaping link is not state, like a socket), and
//!   `restore` never materialises one that older history holds (a warning naming the path; the
//!   rest of the snapshot is restored). Transfer accepts them as data, so such history never
//!   blocks a push or a pull.
//! * Everything else is kept as is. Names git cannot hold (`.git` and its case, NTFS and HFS
//!   variants; a symlink named `.gitmodules`) are escaped reversibly by the git mapping
//!   ([`git_name`], [`from_git_name`]), so a plugin checkout's `.git` folder pushes to a git
//!   remote like any other folder.

use std::borrow::Cow;

use objects_format::EntryKind;

use super::ROOTS;

/// Longest symlink target (Linux's `PATH_MAX`; `state check` uses the same bound).
pub const MAX_SYMLINK_TARGET: usize = 4096;

/// Deepest path a snapshot holds, in components (`config/a` has 2). Trees nest at most 256
/// levels below the root tree (the bound every reader of trees applies).
pub const MAX_DEPTH: usize = 256;

/// Why an entry is left out of a save or a restore (not an error: the rest goes on).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Snapshot path (`config/…`, `state/…`).
    pub path: String,
    /// What is wrong with it, for a person.
    pub why: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.why)
    }
}

/// Checks an entry name (structural; refused everywhere).
///
/// # Errors
/// A description of the broken rule.
pub fn check_name(name: &[u8]) -> Result<(), String> {
    objects_format::validate_name(name).map_err(|e| e.to_string())
}

/// Checks a symlink target (structural; refused everywhere): non-empty, at most
/// [`MAX_SYMLINK_TARGET`] bytes, no NUL.
///
/// # Errors
/// A description of the broken rule.
pub fn check_link_target(target: &[u8]) -> Result<(), String> {
    if target.is_empty() {
        return Err("empty symlink target".into());
    }
    if target.len() > MAX_SYMLINK_TARGET {
        return Err(format!(
            "symlink target of {} bytes (limit {MAX_SYMLINK_TARGET})",
            target.len()
        ));
    }
    if target.contains(&0) {
        return Err(format!(
            "symlink target {:?} contains NUL",
            String::from_utf8_lossy(target)
        ));
    }
    Ok(())
}

/// The root folder (`config`, `state/sessions`, `state/journal`) holding `path`, and how many
/// directories lie between it and `path`'s parent.
fn root_and_depth(path: &[u8]) -> Option<(&'static str, usize)> {
    ROOTS.iter().find_map(|r| {
        let rest = path.strip_prefix(r.as_bytes())?.strip_prefix(b"/")?;
        Some((*r, rest.iter().filter(|&&b| b == b'/').count()))
    })
}

/// Why a symlink at snapshot path `path` pointing at `target` may not be materialised, if it
/// may not: the target is absolute, or could lead out of the root folder the link lives in.
///
/// A relative target is contained when its `..` components all come first and number at most
/// the link's depth below its root folder (`config/a/l -> ../x` is fine, `config/l -> ../x` is
/// not), and none follows a name. `a/../..`-style targets are refused even when they look
/// contained: `a` may itself be a symlink, and `..` after it would climb from wherever it points.
#[must_use]
pub fn link_escapes(path: &[u8], target: &[u8]) -> Option<String> {
    let show = String::from_utf8_lossy(target);
    let Some((root, depth)) = root_and_depth(path) else {
        return Some(format!(
            "symlink to {show:?} is outside the snapshotted folders"
        ));
    };
    if target.first() == Some(&b'/') {
        return Some(format!(
            "symlink to the absolute path {show:?} (outside {root}/)"
        ));
    }
    let mut ups = 0usize;
    let mut named = false;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if named => {
                return Some(format!(
                    "symlink to {show:?} climbs with '..' after a name, which may lead out of {root}/"
                ));
            }
            b".." => ups += 1,
            _ => named = true,
        }
    }
    if ups > depth {
        return Some(format!("symlink to {show:?} leads out of {root}/"));
    }
    None
}

/// The verdict on one leaf (file or symlink) at snapshot path `path`: `None` to keep it, or why
/// it is left out. `link_target` is the target when the leaf is a symlink.
#[must_use]
pub fn leaf_verdict(path: &[u8], link_target: Option<&[u8]>) -> Option<String> {
    if let Some(why) = depth_verdict(path) {
        return Some(why);
    }
    let t = link_target?;
    if let Err(why) = check_link_target(t) {
        return Some(why);
    }
    link_escapes(path, t)
}

/// Why a path is too deep to keep, if it is.
#[must_use]
pub fn depth_verdict(path: &[u8]) -> Option<String> {
    let n = path.iter().filter(|&&b| b == b'/').count() + 1;
    (n > MAX_DEPTH).then(|| format!("nested {n} levels deep (limit {MAX_DEPTH})"))
}

/// A [`Skipped`] for `path`.
#[must_use]
pub fn skipped(path: &[u8], why: String) -> Skipped {
    Skipped {
        path: String::from_utf8_lossy(path).into_owned(),
        why,
    }
}

// ---------------------------------------------------------------------------------------------
// Git mapping of names (ADR 0002, "Reserved names")
// ---------------------------------------------------------------------------------------------

/// Put before a name git cannot hold, and before names that already start that way (so that
/// the mapping stays one-to-one). A prefix, not a suffix: git's NTFS rule refuses `.git:` followed
/// by anything, so only a change at the front of the name takes it out of every reserved form.
pub const GIT_ESCAPE: &[u8] = b"shelldone-escaped~";

/// Characters HFS+ ignores when comparing names (git's `is_hfs_dotgit`).
fn hfs_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}'
    )
}

/// True when `name`, ASCII case folded, is `prefix` followed only by spaces and dots, optionally
/// then `:` and anything (git's NTFS rule).
fn ntfs_is(name: &[u8], prefix: &[u8]) -> bool {
    if name.len() < prefix.len() || !name[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return false;
    }
    for &b in &name[prefix.len()..] {
        match b {
            b' ' | b'.' => {}
            b':' => return true,
            _ => return false,
        }
    }
    true
}

/// True when HFS+ would see `name` as `want` (ignorable code points dropped, case folded).
fn hfs_is(name: &[u8], want: &str) -> bool {
    let Ok(s) = std::str::from_utf8(name) else {
        return false;
    };
    let folded: String = s
        .chars()
        .filter(|c| !hfs_ignorable(*c))
        .collect::<String>()
        .to_lowercase();
    folded == want
}

/// True for a name git refuses in a tree (`fsck` `hasDotgit`, and `gitmodulesSymlink` for a
/// symlink): `.git` in any case, with NTFS trailing dots, spaces or stream suffix, its 8.3 short
/// name `git~1`, or HFS+ ignorable characters; for a symlink also `.gitmodules` in those forms.
#[must_use]
pub fn git_reserved(name: &[u8], is_link: bool) -> bool {
    ntfs_is(name, b".git")
        || ntfs_is(name, b"git~1")
        || hfs_is(name, ".git")
        || (is_link
            && (ntfs_is(name, b".gitmodules")
                || ntfs_is(name, b"gitmod~1")
                || hfs_is(name, ".gitmodules")))
}

/// `name` without every leading [`GIT_ESCAPE`].
fn unescaped_base(mut name: &[u8]) -> &[u8] {
    while let Some(b) = name.strip_prefix(GIT_ESCAPE) {
        name = b;
    }
    name
}

/// The name an entry gets in a git tree: a reserved name, or a reserved name preceded by one or
/// more [`GIT_ESCAPE`], gets one more [`GIT_ESCAPE`] in front; every other name is unchanged (so
/// every tree that could be pushed before this rule maps to the same git tree as before).
#[must_use]
pub fn git_name(name: &[u8], kind: EntryKind) -> Cow<'_, [u8]> {
    if git_reserved(unescaped_base(name), kind == EntryKind::Symlink) {
        let mut v = GIT_ESCAPE.to_vec();
        v.extend_from_slice(name);
        Cow::Owned(v)
    } else {
        Cow::Borrowed(name)
    }
}

/// The inverse of [`git_name`]. A reserved name that a git tree holds unescaped (written by
/// another tool) is taken as it is.
#[must_use]
pub fn from_git_name(name: &[u8], kind: EntryKind) -> &[u8] {
    match name.strip_prefix(GIT_ESCAPE) {
        Some(b) if git_reserved(unescaped_base(b), kind == EntryKind::Symlink) => b,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn links() {
        assert!(link_escapes(b"config/x", b"/etc/passwd").is_some());
        assert!(link_escapes(b"config/x", b"../x").is_some());
        assert!(link_escapes(b"config/a/x", b"../x").is_none());
        assert!(link_escapes(b"config/a/x", b"../../x").is_some());
        assert!(link_escapes(b"config/x", b"theme/dark.toml").is_none());
        assert!(link_escapes(b"config/x", b"./y").is_none());
        assert!(link_escapes(b"config/a/y", b"x/..").is_some());
        assert!(link_escapes(b"config/a/b/y", b"../x/../z").is_some());
        assert!(link_escapes(b"state/sessions/s/l", b"../s2/f").is_none());
        assert!(link_escapes(b"state/sessions/l", b"../journal/f").is_some());
        assert!(link_escapes(b"state/other/l", b"x").is_some());
        assert!(leaf_verdict(b"config/x", Some(b"")).is_some());
        assert!(leaf_verdict(b"config/x", Some(b"a\0b")).is_some());
        assert!(leaf_verdict(b"config/x", None).is_none());
        let deep = format!("config{}", "/d".repeat(MAX_DEPTH));
        assert!(leaf_verdict(deep.as_bytes(), None).is_some());
    }

    #[test]
    fn reserved() {
        for n in [
            &b".git"[..],
            b".GIT",
            b".Git",
            b".git.",
            b".git ",
            b".git. .",
            b".git::$INDEX_ALLOCATION",
            b"git~1",
            b"GIT~1",
            ".g\u{200c}it".as_bytes(),
            "\u{feff}.GIT".as_bytes(),
        ] {
            assert!(git_reserved(n, false), "{:?}", String::from_utf8_lossy(n));
        }
        for n in [
            &b".gitignore"[..],
            b"git",
            b"shelldone-escaped~.git",
            b"x.git",
            b".gitx",
            b"git~2",
            b".gitmodules",
        ] {
            assert!(!git_reserved(n, false), "{:?}", String::from_utf8_lossy(n));
        }
        assert!(git_reserved(b".gitmodules", true));
        assert!(git_reserved(b".GITMODULES.", true));
    }

    #[test]
    fn escaping() {
        let f = EntryKind::Dir;
        assert_eq!(&*git_name(b".git", f), b"shelldone-escaped~.git");
        assert_eq!(
            &*git_name(b"shelldone-escaped~.git", f),
            b"shelldone-escaped~shelldone-escaped~.git"
        );
        assert_eq!(&*git_name(b".git:x", f), b"shelldone-escaped~.git:x");
        assert_eq!(&*git_name(b"plugins", f), b"plugins");
        assert_eq!(
            &*git_name(b"shelldone-escaped~x", f),
            b"shelldone-escaped~x"
        );
        assert_eq!(&*git_name(b".gitmodules", EntryKind::File), b".gitmodules");
        assert_eq!(
            &*git_name(b".gitmodules", EntryKind::Symlink),
            b"shelldone-escaped~.gitmodules"
        );
        assert_eq!(from_git_name(b"shelldone-escaped~.git", f), b".git");
        assert_eq!(from_git_name(b".git", f), b".git");
        assert_eq!(
            from_git_name(b"shelldone-escaped~x", f),
            b"shelldone-escaped~x"
        );
    }

    fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b".git".to_vec()),
            Just(b".GiT".to_vec()),
            Just(b"git~1".to_vec()),
            Just(b".gitmodules".to_vec()),
            Just(GIT_ESCAPE.to_vec()),
            Just(b".".to_vec()),
            Just(b" ".to_vec()),
            Just(b":".to_vec()),
            Just(b"~".to_vec()),
            Just("\u{200c}".as_bytes().to_vec()),
            proptest::collection::vec(1u8..=255, 1..4),
        ];
        proptest::collection::vec(piece, 1..5).prop_map(|v| v.concat())
    }

    proptest! {
        /// One-to-one, never yields a name git refuses, and leaves alone every name that was
        /// pushable before the rule.
        #[test]
        fn git_names_round_trip(name in name_strategy(), link in any::<bool>()) {
            let kind = if link { EntryKind::Symlink } else { EntryKind::File };
            let g = git_name(&name, kind);
            prop_assert!(!git_reserved(&g, link));
            prop_assert_eq!(from_git_name(&g, kind), &name[..]);
            if !git_reserved(unescaped_base(&name), link) {
                prop_assert_eq!(&*g, &name[..]);
            }
        }

        #[test]
        fn escape_is_injective(a in name_strategy(), b in name_strategy()) {
            if a != b {
                prop_assert_ne!(git_name(&a, EntryKind::Dir), git_name(&b, EntryKind::Dir));
            }
        }
    }
}
