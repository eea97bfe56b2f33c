//! The commands that touch live files: `save` ([`save`]) snapshots them, `restore`
//! ([`restore`]) puts a snapshot back, and startup quarantines torn session descriptors
//! ([`descriptors`]). What part of the state an operation covers is a [`Scope`].

pub mod descriptors;
pub mod restore;
pub mod save;

pub use crate::store::refs::session_ref;
pub use descriptors::{DESCRIPTOR_SETTLE, Quarantined};
pub use restore::{RestoreOptions, RestoreOutcome};
pub use save::{SaveOptions, SaveOutcome};

use crate::snapshot::{in_roots, session_of};

/// What part of the state an operation covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Everything under the roots.
    #[default]
    All,
    /// One session's files (`state/sessions/<id>.*`, `state/sessions/<id>/…`).
    Session(String),
    /// One file or folder, by snapshot path (`config/shelldone.toml`, `state/journal`).
    Path(Vec<u8>),
}

impl Scope {
    /// From the `--session` / `--path` options (at most one of them is set).
    #[must_use]
    pub fn of(session: Option<&str>, path: Option<&str>) -> Scope {
        match (session, path) {
            (Some(s), _) => Scope::Session(s.to_owned()),
            (None, Some(p)) => Scope::Path(p.trim_end_matches('/').as_bytes().to_vec()),
            (None, None) => Scope::All,
        }
    }

    /// The session, for a session scope.
    #[must_use]
    pub fn session(&self) -> Option<&str> {
        match self {
            Scope::Session(s) => Some(s),
            _ => None,
        }
    }

    /// True for paths the scope covers. A path scope also covers the folders above it, so that
    /// a walk reaches it.
    #[must_use]
    pub fn contains(&self, p: &[u8]) -> bool {
        match self {
            Scope::All => in_roots(p),
            Scope::Session(id) => session_of(p).is_some_and(|s| s == id.as_bytes()),
            Scope::Path(x) => {
                in_roots(p)
                    && (p == x.as_slice()
                        || (p.starts_with(x) && p.get(x.len()) == Some(&b'/'))
                        || (x.starts_with(p) && x.get(p.len()) == Some(&b'/')))
            }
        }
    }
}
