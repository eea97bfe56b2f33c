//! Sync: object transfer between the local store and a remote, then ref integration.
//!
//! Push sends what the remote lacks and moves this device's refs there (`<device>/…`, CAS).
//! Pull fetches every device's refs and objects (verified before anything is staged), records
//! them as remote-tracking refs (`remotes/<remote>/<device>/…`), then integrates each other
//! device's head into the local head: fast-forward when possible, otherwise a three-way merge
//! per session, per journal file and per preference key, never overwriting a concurrent change
//! (the other version is set aside, recorded as an open conflict that travels with the
//! snapshot: `snapshot/conflicts.rs`, ADR 0004).

mod descriptor_merge;
pub mod graph;
pub mod merge;
mod pull;
mod push;
mod recover;
mod remotes;
pub mod resolve;
mod status;

pub use crate::remote::RemoteConfig;
pub use crate::snapshot::conflicts::{Conflict, ConflictKind};
pub use pull::{PullOptions, PullReport, SkippedSession, Strategy, sync_pull};
pub use push::{DryRunReport, PushReport, RefMove, sync_push, sync_push_dry_run};
pub use recover::{Recovered, recover};
pub use remotes::{
    RemoteOptions, Upgraded, device_rename, remote_add, remote_add_with, remote_remove,
    remote_upgrade, remotes,
};
pub use status::{DeviceStatus, sync_status};
