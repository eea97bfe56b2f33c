//! End-to-end tests driving the real `shelldone` binary in temp dirs.

mod support;

mod compat;
mod core;
mod corruption;
mod faults;
mod recovery;
mod revisions;
mod sync;
mod sync_stories;
