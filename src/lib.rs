//! # shelldone state
//!
//! The state engine of the Shelldone terminal: sessions, journal and preferences stored as
//! immutable BLAKE3-addressed, zstd-compressed objects (see `objects-format`), with refs per
//! session, so that snapshots, backups and sync are all object transfers.
//!
//! [`State`] is a facade of one-line methods over the commands (`live`, `sync`, `history`,
//! `check`, `recover`, `repair`; the vault's commands, `vault`, take [`State::context`]), which take a [`context::Context`] (paths, objects, refs, the
//! store lock, the device id). Layers, each importing only downward — `cli` → [`State`] → the
//! commands → `context` → `transfer` → `snapshot` / `remote` → `store` → [`objects_format`],
//! with `error` a leaf — checked by `tests/layering.rs`; docs/architecture.md says where coming
//! features go. Nothing in the library prints.

pub mod backup;
pub mod check;
pub mod cli;
pub mod config;
pub mod context;
pub mod demo;
pub mod error;
pub mod history;
pub mod journal;
pub mod live;
pub mod merge_drivers;
pub mod migrate;
pub mod progress;
pub mod recover;
pub mod remote;
pub mod repair;
pub mod snapshot;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod transfer;
pub mod vault;

use std::collections::HashSet;
use std::path::Path;

pub use context::{Paths, STORE_FORMAT, Settings};
pub use error::{Error, ErrorKind, Result};
pub use live::{RestoreOptions, RestoreOutcome, SaveOptions, SaveOutcome};
pub use objects_format::ObjectId;
pub use recover::RecoveryReport;
pub use shelldone_migrations::StoreVersion;

use check::RefList;
use check::{CheckOptions, CheckReport};
use context::Context;
use history::{Change, LogEntry};
use objects_format::Snapshot;
use recover::GcReport;
use remote::Progress;
use repair::FileDamage;
use snapshot::conflicts::Conflict;
use store::ObjectStore;
use store::refs::Refs;
use sync::resolve::{ConflictFile, Resolution, Resolved};
use sync::{DeviceStatus, DryRunReport, PullOptions, PullReport, PushReport, RemoteConfig};

/// An open state store. Cheap to keep open; every mutating call takes the store lock itself.
///
/// A facade: each method forwards to the command that implements it, with this store's
/// [`Context`].
#[derive(Debug)]
pub struct State {
    cx: Context,
}

impl State {
    /// Opens (creating if needed) the store, then finishes or rolls back whatever an interrupted
    /// process left (see [`State::recover`]); the report says what was done.
    ///
    /// # Errors
    /// See [`recover::open`].
    pub fn open(paths: Paths) -> Result<(State, RecoveryReport)> {
        recover::open(paths).map(|(cx, report)| (State { cx }, report))
    }

    /// [`State::open`] for a whole-state save, which checks the session descriptors itself
    /// (see [`recover::open_for_save`]).
    ///
    /// # Errors
    /// As [`State::open`].
    pub fn open_for_save(paths: Paths) -> Result<(State, RecoveryReport)> {
        recover::open_for_save(paths).map(|(cx, report)| (State { cx }, report))
    }

    /// [`State::open`] for a command that only reads: a store of an older format is read
    /// through, not migrated, and nothing is written (see [`recover::open_read_through`]).
    ///
    /// # Errors
    /// As [`State::open`].
    pub fn open_read_through(paths: Paths) -> Result<(State, RecoveryReport)> {
        recover::open_read_through(paths).map(|(cx, report)| (State { cx }, report))
    }

    /// [`State::open_for_repair`] for `state check`: an older store is read through, not
    /// migrated (see [`Context::open_for_check`]).
    ///
    /// # Errors
    /// As [`State::open_for_repair`].
    pub fn open_for_check(paths: Paths) -> Result<State> {
        Context::open_for_check(paths).map(|cx| State { cx })
    }

    /// `migrate [--dry-run]` ([`migrate::run`]).
    ///
    /// # Errors
    /// See [`migrate::run`].
    pub fn migrate(&self, dry_run: bool) -> Result<migrate::MigrateReport> {
        migrate::run(&self.cx, dry_run)
    }

    /// `migrate --undo` ([`migrate::undo`]).
    ///
    /// # Errors
    /// See [`migrate::undo`].
    pub fn migrate_undo(&self, dry_run: bool) -> Result<migrate::UndoReport> {
        migrate::undo(&self.cx, dry_run)
    }

    /// `migrate --status` ([`migrate::status`]).
    ///
    /// # Errors
    /// See [`migrate::status`].
    pub fn migrate_status(&self) -> Result<migrate::Status> {
        migrate::status(&self.cx)
    }

    /// The restore point the migration at open made, if one ran.
    #[must_use]
    pub fn restore_point(&self) -> Option<&str> {
        self.cx.restore_point()
    }

    /// Opens the store for `state check` and `state recover`, recording damaged `FORMAT` and
    /// `device` files instead of refusing them (see [`Context::open_for_repair`]).
    ///
    /// # Errors
    /// I/O errors, a store from a newer shelldone.
    pub fn open_for_repair(paths: Paths) -> Result<State> {
        Context::open_for_repair(paths).map(|cx| State { cx })
    }

    /// The store context the commands work on.
    #[must_use]
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// Opens this store's Continuum journal ([`journal::Journal::open`]).
    ///
    /// # Errors
    /// See [`journal::Journal::open`].
    pub fn journal(&self, opts: journal::Options) -> Result<journal::Journal> {
        journal::Journal::open(&self.cx.paths().state_dir, opts)
    }

    /// `backup run` ([`backup::run`]).
    ///
    /// # Errors
    /// See [`backup::run`].
    pub fn backup_run(&self, opts: &backup::RunOptions<'_>) -> Result<backup::RunOutcome> {
        backup::run(&self.cx, opts)
    }

    /// `backup restore` ([`backup::restore`]).
    ///
    /// # Errors
    /// See [`backup::restore`].
    pub fn backup_restore(
        &self,
        bundle: &std::path::Path,
        trust: backup::Trust<'_>,
        to: Option<std::path::PathBuf>,
    ) -> Result<backup::Restored> {
        backup::restore(&self.cx, bundle, trust, to)
    }

    /// Reflog expiry by a backup keep policy ([`backup::expire_reflog`]).
    ///
    /// # Errors
    /// See [`backup::expire_reflog`].
    pub fn backup_expire_reflog(&self, policy: &backup::Policy) -> Result<usize> {
        backup::expire_reflog(&self.cx, policy)
    }

    /// The directory bundles go to by default (`state/backups/`).
    #[must_use]
    pub fn backup_dir(&self) -> std::path::PathBuf {
        backup::default_dir(&self.cx)
    }

    /// Damaged store files found at open that block writing: (path, what is wrong).
    #[must_use]
    pub fn damage(&self) -> &[(std::path::PathBuf, String)] {
        self.cx.damage()
    }

    /// The paths in use.
    #[must_use]
    pub fn paths(&self) -> &Paths {
        self.cx.paths()
    }

    /// This device's id.
    #[must_use]
    pub fn device(&self) -> &str {
        self.cx.device()
    }

    /// The store format migration opening ran, if any: (major before, major after).
    #[must_use]
    pub fn migrated(&self) -> Option<(u32, u32)> {
        self.cx.migrated()
    }

    /// The object store.
    #[must_use]
    pub fn objects(&self) -> &ObjectStore {
        self.cx.objects()
    }

    /// The refs.
    #[must_use]
    pub fn refs(&self) -> &Refs {
        self.cx.refs()
    }

    /// The `snapshots/` dir.
    #[must_use]
    pub fn snapshots_dir(&self) -> &Path {
        self.cx.snapshots_dir()
    }

    /// Entries the snapshot policy left out since the last call (see
    /// [`Context::take_skipped`]).
    pub fn take_skipped(&self) -> Vec<(&'static str, snapshot::policy::Skipped)> {
        self.cx.take_skipped()
    }

    /// Applies the config file's and the environment's settings (see [`Context::apply`]).
    pub fn apply(&mut self, s: context::Settings) {
        self.cx.apply(s);
    }

    /// Where long operations report their progress (default: nowhere).
    pub fn set_progress(&mut self, p: std::sync::Arc<dyn progress::Progress>) {
        self.cx.progress = p;
    }

    /// What a save would record and leave out; writes nothing (see [`live::save::plan`]).
    ///
    /// # Errors
    /// See [`live::save::plan`].
    pub fn save_plan(&self, opts: &SaveOptions) -> Result<live::save::SavePlan> {
        live::save::plan(&self.cx, opts)
    }

    /// Snapshots the live state (see [`SaveOptions`]).
    ///
    /// See [`live::save::save`].
    pub fn save(&self, opts: &SaveOptions) -> Result<SaveOutcome> {
        live::save::save(&self.cx, opts)
    }

    /// What [`State::save_changed`] builds on (see [`live::save::save_base`]).
    ///
    /// # Errors
    /// See [`live::save::save_base`].
    pub fn save_base(&self) -> Result<Option<live::save::SaveBase>> {
        live::save::save_base(&self.cx)
    }

    /// Saves re-reading only the changed paths; `None` when a full save is needed (see
    /// [`live::save::save_changed`]).
    ///
    /// # Errors
    /// See [`live::save::save_changed`].
    pub fn save_changed(
        &self,
        message: &str,
        base: &mut live::save::SaveBase,
        changed: &std::collections::BTreeSet<Vec<u8>>,
    ) -> Result<Option<(SaveOutcome, live::save::IncrementalWork)>> {
        live::save::save_changed(&self.cx, message, base, changed)
    }

    /// The root tree id the live state would have if saved now (no object is written; unchanged
    /// files are not read thanks to the stat cache). Used to detect changes cheaply.
    ///
    /// See [`live::save::live_root`].
    pub fn live_root(&self) -> Result<ObjectId> {
        live::save::live_root(&self.cx)
    }

    /// Restores a snapshot (see [`RestoreOptions`]). Unsaved live changes are saved first, so a
    /// restore never loses anything; the restore itself is recorded as a new snapshot.
    ///
    /// See [`live::restore::restore`].
    pub fn restore(&self, opts: &RestoreOptions) -> Result<RestoreOutcome> {
        live::restore::restore(&self.cx, opts)
    }

    /// Configured remotes.
    ///
    /// See [`sync::remotes`].
    pub fn remotes(&self) -> Result<Vec<RemoteConfig>> {
        sync::remotes(&self.cx)
    }

    /// Adds a remote. A URL git understands (or a path to a git repository, or ending in
    /// `.git`) is a git remote; any other path a directory remote.
    ///
    /// See [`sync::remote_add`].
    pub fn remote_add(&self, name: &str, url: &str, init: bool) -> Result<RemoteConfig> {
        sync::remote_add(&self.cx, name, url, init)
    }

    /// Adds a remote with options (`--init`, `--encrypt`, `--require-signatures`, an S3
    /// remote's own endpoint and region).
    ///
    /// See [`sync::remote_add_with`].
    pub fn remote_add_with(
        &self,
        name: &str,
        url: &str,
        opts: &sync::RemoteOptions,
    ) -> Result<RemoteConfig> {
        sync::remote_add_with(&self.cx, name, url, opts)
    }

    /// Installs what gives the vault passphrase when a command needs this device's keys (an
    /// encrypted or signed remote).
    pub fn set_passphrase(&mut self, p: context::Passphrase) {
        self.cx.passphrase = Some(p);
    }

    /// Removes a remote (and its tracking refs and git mirror).
    ///
    /// See [`sync::remote_remove`].
    pub fn remote_remove(&self, name: &str) -> Result<()> {
        sync::remote_remove(&self.cx, name)
    }

    /// `remote upgrade NAME` ([`sync::remote_upgrade`]).
    ///
    /// # Errors
    /// See [`sync::remote_upgrade`].
    pub fn remote_upgrade(&self, name: &str) -> Result<sync::Upgraded> {
        sync::remote_upgrade(&self.cx, name)
    }

    /// Renames this device (its refs on remotes are written under the new name from the next
    /// push; the old name's refs become another device's, merged on the next pull).
    ///
    /// See [`sync::device_rename`].
    pub fn device_rename(&mut self, new: &str) -> Result<()> {
        sync::device_rename(&mut self.cx, new)
    }

    /// Sends local history to the remote and moves this device's refs there.
    ///
    /// See [`sync::sync_push`].
    pub fn sync_push(&self, remote: &str, progress: Progress<'_>) -> Result<PushReport> {
        sync::sync_push(&self.cx, remote, progress)
    }

    /// What [`State::sync_push`] would send and which refs it would move; changes nothing.
    ///
    /// See [`sync::sync_push_dry_run`].
    pub fn sync_push_dry_run(&self, remote: &str, progress: Progress<'_>) -> Result<DryRunReport> {
        sync::sync_push_dry_run(&self.cx, remote, progress)
    }

    /// Fetches every device's history and integrates it (see the module docs).
    ///
    /// See [`sync::sync_pull`].
    pub fn sync_pull(
        &self,
        remote: &str,
        opts: &PullOptions,
        progress: Progress<'_>,
    ) -> Result<PullReport> {
        sync::sync_pull(&self.cx, remote, opts, progress)
    }

    /// Ahead/behind per device and differing sessions, from the remote's refs.
    ///
    /// See [`sync::sync_status`].
    pub fn sync_status(&self, remote: &str) -> Result<Vec<DeviceStatus>> {
        sync::sync_status(&self.cx, remote)
    }

    /// The open conflicts the head carries.
    ///
    /// See [`sync::resolve::conflicts`].
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        sync::resolve::conflicts(&self.cx)
    }

    /// Both sides of every file in a conflict's unit (files that are equal are left out).
    ///
    /// See [`sync::resolve::conflict_show`].
    pub fn conflict_show(&self, id: &str) -> Result<(Conflict, Vec<ConflictFile>)> {
        sync::resolve::conflict_show(&self.cx, id)
    }

    /// Resolves an open conflict and records the resolution as a snapshot (which also saves
    /// any other unsaved live change, as every save does).
    ///
    /// See [`sync::resolve::conflict_resolve`].
    pub fn conflict_resolve(&self, id: &str, how: Resolution) -> Result<Resolved> {
        sync::resolve::conflict_resolve(&self.cx, id, how)
    }

    /// Resolves a revision (docs/cli.md, "Revisions"): a name (`head`, a full id, a ref name,
    /// a device name, a session id or prefix, a snapshot id prefix), then `@{N}`, `~N`, `^N`.
    ///
    /// See [`history::resolve`].
    pub fn resolve(&self, rev: &str) -> Result<ObjectId> {
        history::resolve(&self.cx, rev)
    }

    /// History newest first, from `rev` (default: the head; with `session`, that session's ref), following all
    /// parents; with `session`, only snapshots where that session changed.
    ///
    /// See [`history::log`].
    pub fn log(
        &self,
        rev: Option<&str>,
        limit: Option<usize>,
        session: Option<&str>,
    ) -> Result<Vec<LogEntry>> {
        history::log(&self.cx, rev, limit, session)
    }

    /// Differences between two revisions.
    ///
    /// See [`history::diff`].
    pub fn diff(&self, a: &str, b: &str) -> Result<Vec<Change>> {
        history::diff(&self.cx, a, b)
    }

    /// A snapshot and its changes relative to its first parent.
    ///
    /// See [`history::show`].
    pub fn show(&self, rev: &str) -> Result<(ObjectId, Snapshot, Vec<Change>)> {
        history::show(&self.cx, rev)
    }

    /// Every snapshot named by a ref or a reflog entry.
    ///
    /// See [`check::root_snapshots`].
    pub fn root_snapshots(&self) -> Result<(RefList, Vec<ObjectId>)> {
        check::root_snapshots(&self.cx)
    }

    /// Verifies every reachable object: hash, decode, kinds, tree structure, chunk sizes; and
    /// every store file that is not an object (refs, `packed-refs`, the reflog, `FORMAT`,
    /// `device`, the stat cache, `restore-intent`, `shallow`, `remotes.json`, pack indexes).
    /// Damaged refs and reflog lines do not stop it: what can still be read is checked.
    ///
    /// See [`check::check`].
    pub fn check(&self, opts: CheckOptions) -> Result<CheckReport> {
        check::check(&self.cx, opts)
    }

    /// `state recover`: repairs damaged store files (a damaged `FORMAT` first, and only when
    /// the store's contents show which version wrote it), removes leftovers, finishes
    /// interrupted operations, and checks every session descriptor, quarantining corrupt ones
    /// and restoring their last good version. Works on a store opened with
    /// [`Context::open_for_repair`], whatever is damaged.
    ///
    /// See [`recover::recover`].
    pub fn recover(&self) -> Result<RecoveryReport> {
        recover::recover(&self.cx)
    }

    /// Every object reachable from the given snapshots.
    ///
    /// See [`recover::reachable`].
    pub fn reachable(&self, roots: &[ObjectId]) -> Result<HashSet<ObjectId>> {
        recover::reachable(&self.cx, roots)
    }

    /// Deletes objects no ref or reflog entry reaches. Holds the store lock, so a concurrent save
    /// (which also holds it from first object write to ref update) can never lose an object.
    /// Refuses to run when a reachable tree is missing or corrupt (deleting then could lose data).
    ///
    /// See [`recover::gc`].
    pub fn gc(&self) -> Result<GcReport> {
        recover::gc(&self.cx)
    }

    /// [`State::gc`], then with `repack`, every reachable object recompressed into one pack.
    ///
    /// See [`recover::gc_with`].
    pub fn gc_with(&self, repack: bool) -> Result<GcReport> {
        recover::gc_with(&self.cx, repack)
    }

    /// Every damaged store file (objects aside): for `state check`. Reads only.
    ///
    /// See [`repair::file_damage`].
    pub fn file_damage(&self) -> Result<Vec<FileDamage>> {
        repair::file_damage(&self.cx)
    }
}
