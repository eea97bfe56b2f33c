//! Ordered, idempotent, crash-safe migrations between shelldone store format versions.
//!
//! Each step carries a frozen decoder of the format it reads, so a migration keeps working after
//! the main code moves on. Version 1 is the first format: there is nothing to migrate yet, and
//! the registry below is where the first step (`v1_to_v2`) will go. Derived data (the stat cache)
//! is never migrated, only rebuilt.

use std::path::Path;

/// A migration failed or is not possible.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// No step leads from `from` to `to`.
    #[error("no migration from store format {from} to {to}")]
    NoPath {
        /// Version found.
        from: u32,
        /// Version wanted.
        to: u32,
    },
}

/// One step: migrates a store at `dir` from `from()` to `from() + 1`; must be idempotent.
pub trait Step {
    /// The version this step reads.
    fn from(&self) -> u32;
    /// Runs the step.
    ///
    /// # Errors
    /// Any failure; the store must be left readable by the old version.
    fn run(&self, dir: &Path) -> Result<(), MigrationError>;
}

/// The registered steps, in order.
#[must_use]
pub fn steps() -> Vec<Box<dyn Step>> {
    Vec::new()
}

/// Migrates a store from major version `from` to `to`.
///
/// # Errors
/// [`MigrationError::NoPath`] when a step is missing.
pub fn migrate(dir: &Path, from: u32, to: u32) -> Result<(), MigrationError> {
    let steps = steps();
    let mut v = from;
    while v < to {
        let step = steps
            .iter()
            .find(|s| s.from() == v)
            .ok_or(MigrationError::NoPath { from, to })?;
        step.run(dir)?;
        v += 1;
    }
    Ok(())
}
