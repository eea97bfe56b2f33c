//! Session descriptors as this version reads them: schema versions 1 and 2, a newer one
//! refused (never rewritten). A version-1 descriptor is read through the step 1 → 2 of
//! `shelldone_migrations::descriptor`, in memory: reading writes nothing.
//!
//! Saving a descriptor only requires a JSON object ([`super::save::validate_descriptor`]):
//! the terminal owns its contents, and a descriptor this version cannot read (a newer one) is
//! still stored, restored and synced byte for byte. The versions, the step and the merge rule
//! are written down in `docs/migrations.md` (section "Session descriptors").

use serde::{Deserialize, Serialize};
pub use shelldone_migrations::descriptor::{
    DescriptorError, LATEST, SCHEMA_VERSION, V1, V2, pane_id, readable_version, session_of_path,
    upgrade, version_of,
};

/// A session descriptor, version 2 (the newest this version reads and writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Always [`V2`] (a version-1 file is read through the step).
    pub schema_version: u64,
    /// The session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The terminal's own counter of changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The tabs, in order.
    #[serde(default)]
    pub tabs: Vec<Tab>,
    /// The index of the active tab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_tab: Option<u64>,
}

/// A tab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tab {
    /// Its title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Its panes, in order.
    #[serde(default)]
    pub panes: Vec<Pane>,
}

/// A pane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pane {
    /// Stable within the descriptor; given by the step 1 → 2 ([`pane_id`]) or by the terminal.
    pub id: String,
    /// The program it runs, as typed (version 1's field, kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u32>,
    /// Columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u32>,
    /// How to resume it.
    pub restore: Restore,
}

/// How to resume a pane's program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Restore {
    /// Start the user's shell.
    Shell {
        /// In this folder.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
    /// Run this program.
    Command {
        /// Program and arguments (not through a shell, unless `argv` says `sh -c`).
        argv: Vec<String>,
        /// In this folder.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
}

/// A descriptor read, and the version its bytes had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// [`V1`] or [`V2`]: the version of the bytes (a version-1 file was upgraded in memory).
    pub from: u64,
    /// Its contents at version 2.
    pub descriptor: Descriptor,
}

/// Reads a descriptor of session `session` (the `<id>` of its path, which the step's pane ids
/// derive from) of version 1 or 2. Unknown keys are accepted and ignored.
///
/// # Errors
/// Not a JSON object, a malformed version key, a version above [`LATEST`]
/// ([`DescriptorError::Newer`], naming both versions), or a known key holding the wrong type
/// ([`DescriptorError::NotJson`], naming it).
pub fn read(session: &str, bytes: &[u8]) -> Result<Read, DescriptorError> {
    let from = readable_version(bytes)?;
    let v2 = upgrade(session, bytes)?;
    let descriptor = serde_json::from_slice(&v2)
        .map_err(|e| shelldone_migrations::descriptor::json_error(&e))?;
    Ok(Read { from, descriptor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_1_and_2_alike_and_refuses_a_newer_one() {
        let v1 = br#"{"schema":1,"id":"s1","tabs":[{"cwd":"/w","panes":[{"cmd":"vim x","rows":3,"cols":4}]}],"active_tab":0}"#;
        let r1 = read("s1", v1).expect("v1");
        assert_eq!(r1.from, V1);
        assert_eq!(
            r1.descriptor.tabs[0].panes[0],
            Pane {
                id: pane_id("s1", 0, 0),
                cmd: Some("vim x".into()),
                rows: Some(3),
                cols: Some(4),
                restore: Restore::Command {
                    argv: vec!["vim".into(), "x".into()],
                    cwd: Some("/w".into())
                },
            }
        );
        let v2 = upgrade("s1", v1).expect("upgrade").into_owned();
        let r2 = read("s1", &v2).expect("v2");
        assert_eq!(r2.from, V2);
        assert_eq!(r2.descriptor, r1.descriptor);
        // What this version writes reads back the same.
        let written = serde_json::to_vec(&r2.descriptor).expect("json");
        assert_eq!(
            read("s1", &written).expect("again").descriptor,
            r2.descriptor
        );

        let err =
            read("s1", br#"{"schema_version":3,"tabs":"whatever v3 means"}"#).expect_err("newer");
        assert_eq!(
            err.to_string(),
            "session descriptor schema version 3 is newer than this shelldone reads (versions 1 \
             to 2); it is left as it is: upgrade shelldone to read it"
        );
        assert!(matches!(
            read("s1", br#"{"tabs":[{"panes":[{"rows":"many"}]}]}"#),
            Err(DescriptorError::Shape(_))
        ));
        // Anything a version-1 terminal wrote that is an object reads (tests write `{}`).
        assert_eq!(read("s", b"{}").expect("empty").descriptor.tabs, vec![]);
    }
}
