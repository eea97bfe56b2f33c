//! The audit trail: one line per save, restore, push, pull, gc, recover, backup run, restore
//! and prune, and per store migration, in `<state>/logs/audit.log` (outside every snapshot root), rotated by size
//! (`audit.log.1` … `audit.log.3`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use fs_err as fs;

use crate::error::Result;
use crate::store::durable;

/// The log, relative to the state dir.
pub const AUDIT_LOG: &str = "logs/audit.log";
/// The size past which the log is rotated.
pub const ROTATE_BYTES: u64 = 1 << 20;
/// How many rotated files are kept.
pub const KEEP: u32 = 3;

/// Appends `TIME OP ok|failed DETAIL` to the audit log, rotating it first when it is full.
///
/// # Errors
/// I/O errors.
pub fn audit(state_dir: &Path, op: &str, ok: bool, detail: &str) -> Result<()> {
    audit_with_limit(state_dir, op, ok, detail, ROTATE_BYTES)
}

/// [`audit`] with the rotation size given (tests).
///
/// # Errors
/// I/O errors.
pub fn audit_with_limit(
    state_dir: &Path,
    op: &str,
    ok: bool,
    detail: &str,
    limit: u64,
) -> Result<()> {
    let p = state_dir.join(AUDIT_LOG);
    let dir = p.parent().expect("a file in logs/");
    durable::create_dir_all_durable(dir)?;
    if std::fs::metadata(&p).is_ok_and(|m| m.len() >= limit) {
        for n in (1..KEEP).rev() {
            let from = dir.join(format!("audit.log.{n}"));
            if from.exists() {
                fs::rename(&from, dir.join(format!("audit.log.{}", n + 1)))?;
            }
        }
        fs::rename(&p, dir.join("audit.log.1"))?;
    }
    let detail: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = format!(
        "{} {op} {} {detail}\n",
        crate::journal::now_rfc3339(),
        if ok { "ok" } else { "failed" }
    );
    let mut f = OpenOptions::new().append(true).create(true).open(&p)?;
    f.write_all(line.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_three() {
        let t = tempfile::tempdir().expect("tempdir");
        for i in 0..40 {
            audit_with_limit(t.path(), "state.save", i % 5 != 0, &format!("n={i}"), 200)
                .expect("audit");
        }
        let logs = t.path().join("logs");
        let mut names: Vec<String> = std::fs::read_dir(&logs)
            .expect("logs")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]
        );
        let last = std::fs::read_to_string(logs.join("audit.log")).expect("read");
        assert!(
            last.lines()
                .last()
                .is_some_and(|l| l.ends_with("state.save ok n=39")),
            "{last}"
        );
        assert!(
            std::fs::metadata(logs.join("audit.log.1"))
                .expect("stat")
                .len()
                <= 260
        );
    }
}
