//! The four object kinds: their header codes, names and id contexts. A leaf module: ids and
//! the in-memory objects both build on it (the layering is checked by `tests/layering.rs`).

/// Object kind, as stored in byte 4 of every canonical object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// File content (or one chunk of a big file, or a symlink target).
    Blob,
    /// The ordered chunks of a big file.
    ChunkList,
    /// A directory.
    Tree,
    /// A snapshot: root tree, parents and metadata.
    Snapshot,
}

impl Kind {
    /// The kind's code in the canonical header.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Kind::Blob => 1,
            Kind::ChunkList => 2,
            Kind::Tree => 3,
            Kind::Snapshot => 4,
        }
    }

    /// The kind for a header code.
    #[must_use]
    pub fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::Blob,
            2 => Kind::ChunkList,
            3 => Kind::Tree,
            4 => Kind::Snapshot,
            _ => return None,
        })
    }

    /// The BLAKE3 `derive_key` context that separates this kind's ids from every other kind's.
    #[must_use]
    pub fn id_context(self) -> &'static str {
        match self {
            Kind::Blob => "shelldone objects v1 blob",
            Kind::ChunkList => "shelldone objects v1 chunk-list",
            Kind::Tree => "shelldone objects v1 tree",
            Kind::Snapshot => "shelldone objects v1 snapshot",
        }
    }

    /// Lower-case name, as used in the spec and in messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::ChunkList => "chunk-list",
            Kind::Tree => "tree",
            Kind::Snapshot => "snapshot",
        }
    }
}
