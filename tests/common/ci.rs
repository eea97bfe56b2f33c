//! Tests that need what a machine may lack (root to mount a tmpfs, GNU time) say so and go on
//! without it on a developer's machine, but fail in CI: `.ci/run` sets `SHELLDONE_CI=1`, runs
//! as root and installs every tool the tests use, so there a test that cannot run (or a setting
//! that makes it check less) is a broken CI, never a silent pass. Shared by the test binaries
//! (`#[path]` include).

/// For a test that cannot do all it should here (`why`): panics under `SHELLDONE_CI` (set to
/// anything but `0`); elsewhere says so on stderr, and the caller returns or does what it can.
#[track_caller]
#[expect(
    clippy::print_stderr,
    reason = "a test that does not run says so where the test runner shows it"
)]
pub fn cannot_run(what: &str, why: &str) {
    let in_ci = std::env::var_os("SHELLDONE_CI").is_some_and(|v| v != "0");
    assert!(
        !in_ci,
        "{what} cannot run: {why}. SHELLDONE_CI is set, so this fails instead of skipping \
         (.ci/run runs as root and installs what the tests need)"
    );
    eprintln!("SKIPPED: {what}: {why} (under SHELLDONE_CI=1 this fails)");
}
