//! End-to-end tests driving the real `shelldone` binary in temp dirs.
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "test helpers panic on failure: a panic is the test failing, with its message"
)]

mod support;

mod backup;
mod compat;
mod config;
mod core;
mod corruption;
mod daemon;
mod descriptors;
mod documented;
mod dry_run;
mod edges;
mod encrypted;
mod faults;
mod journal;
mod migrations;
mod outputs;
mod recovery;
mod revisions;
mod rsync;
mod s3;
mod sync;
mod sync_stories;
mod terminal;
mod vault;
