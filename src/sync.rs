//! Sync: object transfer between the local store and a remote, then ref integration.
