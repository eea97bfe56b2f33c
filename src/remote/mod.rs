//! Remotes: where objects and refs are sent for sync.

pub mod gitmirror;
