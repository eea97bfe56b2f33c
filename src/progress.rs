//! Progress of long operations (save, restore, check, gc, push, pull), reported to whoever
//! listens: the CLI draws a bar on a terminal or writes NDJSON events (`src/cli/progress.rs`);
//! the library only counts. A leaf: any layer may report.

/// What a long operation reports as it goes. Called from worker threads, once per file or
/// object: implementations must be cheap (count, and draw at most a few times a second).
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// A phase starts (`save`, `restore`, `check`, `gc`, `push`, `pull`), with its totals when
    /// they are known before the work (a total is never guessed: unknown is `None`).
    fn begin(&self, phase: &'static str, objects: Option<u64>, bytes: Option<u64>);
    /// Work done since the last call: objects (files) and bytes.
    fn advance(&self, objects: u64, bytes: u64);
    /// The phase ended (also when it failed).
    fn end(&self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &'static str, _: Option<u64>, _: Option<u64>) {}
    fn advance(&self, _: u64, _: u64) {}
    fn end(&self) {}
}

/// Ends the phase when dropped, so that an error return ends it too.
#[derive(Debug)]
pub struct Phase<'a>(&'a dyn Progress);

impl<'a> Phase<'a> {
    /// Begins `phase` on `p`.
    pub fn begin(
        p: &'a dyn Progress,
        phase: &'static str,
        objects: Option<u64>,
        bytes: Option<u64>,
    ) -> Phase<'a> {
        p.begin(phase, objects, bytes);
        Phase(p)
    }

    /// Work done.
    pub fn advance(&self, objects: u64, bytes: u64) {
        self.0.advance(objects, bytes);
    }
}

impl Drop for Phase<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}
