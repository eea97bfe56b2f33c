//! The layout version of a directory or S3 remote: the number on its marker's line
//! (`shelldone-dir-remote 1`, `shelldone-s3-remote 1`). A binary reads and writes remotes up to
//! [`supported`], writes a remote at the version it found (never higher), and refuses a newer
//! one before it writes anything; `remote upgrade` raises the marker on purpose
//! (docs/migrations.md, "Remote versions").

use crate::error::Error;

/// The newest remote layout this shelldone reads and writes.
pub const REMOTE_FORMAT: u32 = 1;

/// The version new remotes are created at: the oldest every supported binary reads.
pub const CREATE_FORMAT: u32 = 1;

/// Test hook (documented in docs/migrations.md, not for users): makes this binary act as one
/// whose newest remote layout is the given number. Layouts 2 and up are, today, the same bytes
/// as 1; tests use it to play a newer device.
pub const TEST_FORMAT_VAR: &str = "SHELLDONE_TEST_REMOTE_FORMAT";

/// The newest remote layout this process reads and writes ([`REMOTE_FORMAT`], or the test
/// hook's number).
#[must_use]
pub fn supported() -> u32 {
    std::env::var(TEST_FORMAT_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|v| *v >= 1)
        .unwrap_or(REMOTE_FORMAT)
}

/// The version on a marker line `<prefix> <N>`; `None` for a line that is not one.
#[must_use]
pub fn parse_marker(line: &str, prefix: &str) -> Option<u32> {
    line.trim_end()
        .strip_prefix(prefix)?
        .strip_prefix(' ')?
        .parse()
        .ok()
}

/// The marker line of version `v`.
#[must_use]
pub fn marker_line(prefix: &str, v: u32) -> String {
    format!("{prefix} {v}\n")
}

/// The error for a remote newer than this binary: it names both versions.
#[must_use]
pub fn newer(remote: &str, found: u32) -> Error {
    Error::NewerFormat {
        what: format!("remote {remote}"),
        found: found.to_string(),
        supported: supported().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_lines_parse_back() {
        for v in [1, 2, 17] {
            let line = marker_line("shelldone-dir-remote", v);
            assert_eq!(parse_marker(&line, "shelldone-dir-remote"), Some(v));
            assert_eq!(parse_marker(&line, "shelldone-s3-remote"), None);
        }
        for bad in [
            "shelldone-dir-remote",
            "shelldone-dir-remote x",
            "shelldone-dir-remote2",
        ] {
            assert_eq!(parse_marker(bad, "shelldone-dir-remote"), None, "{bad}");
        }
        assert_eq!(
            newer("origin", 2).to_string(),
            format!(
                "remote origin is format 2, this shelldone reads up to {}; upgrade shelldone",
                supported()
            )
        );
    }
}
