//! The in-memory form of the four object kinds.

use crate::id::ObjectId;
pub use crate::kind::Kind;

/// One chunk of a big file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// Id of the blob holding the chunk.
    pub id: ObjectId,
    /// Length of the chunk in bytes (> 0).
    pub len: u32,
}

/// The ordered chunks of a big file. The file's content is the concatenation of the chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkList {
    /// Total length: the sum of all chunk lengths.
    pub total_size: u64,
    /// The chunks, in file order (at least one).
    pub chunks: Vec<ChunkRef>,
}

/// What a tree entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file whose content is one blob.
    File,
    /// A regular file whose content is a chunk list.
    ChunkedFile,
    /// A directory: the id is a tree.
    Dir,
    /// A symbolic link: the id is a blob holding the link target bytes.
    Symlink,
}

impl EntryKind {
    /// Code in the canonical tree encoding.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            EntryKind::File => 1,
            EntryKind::ChunkedFile => 2,
            EntryKind::Dir => 3,
            EntryKind::Symlink => 4,
        }
    }

    /// The entry kind for a code.
    #[must_use]
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => EntryKind::File,
            2 => EntryKind::ChunkedFile,
            3 => EntryKind::Dir,
            4 => EntryKind::Symlink,
            _ => return None,
        })
    }

    /// The object kind the entry's id must name.
    #[must_use]
    pub fn target_kind(self) -> Kind {
        match self {
            EntryKind::File | EntryKind::Symlink => Kind::Blob,
            EntryKind::ChunkedFile => Kind::ChunkList,
            EntryKind::Dir => Kind::Tree,
        }
    }

    /// True for regular files (single-blob or chunked).
    #[must_use]
    pub fn is_file(self) -> bool {
        matches!(self, EntryKind::File | EntryKind::ChunkedFile)
    }
}

/// Entry flag: the file is executable (mode 0o755 on restore instead of 0o644).
pub const FLAG_EXECUTABLE: u8 = 0b0000_0001;

/// One named entry of a [`Tree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// File name bytes: non-empty, at most 255 bytes, no `/` or NUL, not `.` or `..`.
    pub name: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Flags; only [`FLAG_EXECUTABLE`] is defined, on files.
    pub flags: u8,
    /// Content size in bytes (file length, link-target length; 0 for directories).
    pub size: u64,
    /// The object the entry names.
    pub id: ObjectId,
}

impl TreeEntry {
    /// True when [`FLAG_EXECUTABLE`] is set.
    #[must_use]
    pub fn executable(&self) -> bool {
        self.flags & FLAG_EXECUTABLE != 0
    }
}

/// A directory: entries sorted by name bytes, names unique.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    /// The entries, strictly ascending by `name` (byte order).
    pub entries: Vec<TreeEntry>,
}

impl Tree {
    /// Finds an entry by name.
    #[must_use]
    pub fn get(&self, name: &[u8]) -> Option<&TreeEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Sorts entries into canonical order (does not remove duplicates; encoding rejects them).
    pub fn sort(&mut self) {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

/// Counts of what changed relative to the first parent (informational; not verified).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ChangeSummary {
    /// Files added.
    pub added: u32,
    /// Files whose content or kind changed.
    pub modified: u32,
    /// Files removed.
    pub deleted: u32,
}

/// A snapshot of the whole state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Root tree (with `config` and `state` subtrees).
    pub root: ObjectId,
    /// Parent snapshots (first parent = previous head; more after a merge). At most 255.
    pub parents: Vec<ObjectId>,
    /// Creation time, nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    /// Id of the device that wrote the snapshot (UTF-8, at most 255 bytes).
    pub device: String,
    /// User message (UTF-8, may be empty).
    pub message: String,
    /// When the snapshot was taken for one session only (`save --session`), that session's id.
    pub session: Option<String>,
    /// What changed relative to the first parent.
    pub summary: ChangeSummary,
    /// Extension fields, keyed by name, strictly ascending; readers keep unknown keys.
    pub extra: Vec<(String, Vec<u8>)>,
}

/// Any decoded object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    /// Raw bytes.
    Blob(Vec<u8>),
    /// Chunks of a big file.
    ChunkList(ChunkList),
    /// A directory.
    Tree(Tree),
    /// A snapshot.
    Snapshot(Snapshot),
}

impl Object {
    /// The object's kind.
    #[must_use]
    pub fn kind(&self) -> Kind {
        match self {
            Object::Blob(_) => Kind::Blob,
            Object::ChunkList(_) => Kind::ChunkList,
            Object::Tree(_) => Kind::Tree,
            Object::Snapshot(_) => Kind::Snapshot,
        }
    }
}
