//! `shelldone tour`: the product end to end on a state it makes itself; and the hidden
//! `shelldone generate`, which makes such a state for benchmarks and tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use fs_err as fs;

use crate::demo::{self, DemoSpec};
use crate::error::{Error, Result};
use crate::{Paths, RestoreOptions, SaveOptions, State};

fn tree_bytes(root: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.map_err(|e| Error::Io(e.into()))?;
        if e.file_type().is_file() {
            m.insert(
                e.path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_path_buf(),
                fs::read(e.path())?,
            );
        }
    }
    Ok(m)
}

/// Runs the tour.
///
/// # Errors
/// Any failure of the demonstrated operations.
pub fn run(dir: Option<PathBuf>, json: bool) -> Result<()> {
    // Without --dir the demo state lives in a temp dir removed at the end (also on failure).
    let temp = match dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("shelldone-tour-")
                .tempdir()?,
        ),
    };
    let kept = temp.is_none();
    let base = match (&dir, &temp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("a temp dir is made when no --dir is given"),
    };
    let mut steps: Vec<String> = Vec::new();
    let mut out = |line: String| {
        if !json {
            super::out(&line);
        }
        steps.push(line);
    };
    let result = tour(&base, kept, &mut out);
    if json {
        super::documents::print(&super::documents::Toured {
            dir: &base.to_string_lossy(),
            kept,
            ok: result.is_ok(),
            steps: &steps,
        })?;
    }
    drop(temp);
    result
}

fn tour(base: &Path, kept: bool, out: &mut impl FnMut(String)) -> Result<()> {
    let paths = Paths {
        config_dir: base.join("config"),
        state_dir: base.join("state"),
    };
    out(format!("== shelldone tour in {}", base.display()));
    let n = demo::generate(&paths.config_dir, &paths.state_dir, &DemoSpec::small())?;
    out(format!(
        "1. generated a terminal state: 5 sessions, 3 journals, preferences ({} bytes)",
        n
    ));
    let (st, _) = State::open(paths.clone())?;
    let before = (
        tree_bytes(&paths.config_dir)?,
        tree_bytes(&paths.state_dir.join("sessions"))?,
        tree_bytes(&paths.state_dir.join("journal"))?,
    );
    let t = Instant::now();
    let a = st.save(&SaveOptions {
        message: "first save".into(),
        session: None,
        ..Default::default()
    })?;
    let first = a.id.ok_or(Error::NoSnapshot)?;
    out(format!(
        "2. state save          -> {} ({} objects, {:.1} ms)",
        first.short(16),
        a.objects_written,
        t.elapsed().as_secs_f64() * 1e3
    ));
    let t = Instant::now();
    let again = st.save(&SaveOptions::default())?;
    out(format!(
        "3. state save again    -> nothing changed, no snapshot written: {} ({:.1} ms)",
        !again.created,
        t.elapsed().as_secs_f64() * 1e3
    ));
    demo::small_change(&paths.config_dir, &paths.state_dir, 0)?;
    fs::remove_file(paths.state_dir.join("sessions/s004/scrollback.bin"))?;
    fs::write(paths.config_dir.join("config.toml"), "font_size = 15\n")?;
    fs::create_dir_all(paths.state_dir.join("sessions/s099/nested/deeper"))?;
    fs::write(
        paths.state_dir.join("sessions/s099/session.json"),
        "{\"schema\":1,\"id\":\"s099\"}",
    )?;
    fs::write(paths.state_dir.join("sessions/s099/nested/empty"), b"")?;
    fs::write(
        paths.state_dir.join("sessions/s099/nested/deeper/raw.bin"),
        [0u8, 159, 146, 150, 255, 0xfe],
    )?;
    let t = Instant::now();
    let b = st.save(&SaveOptions {
        message: "after changes".into(),
        session: None,
        ..Default::default()
    })?;
    out(format!(
        "4. changed files (journal +200 lines, 2 descriptors, scrollback +100 KB, 1 deleted, 1 session added), saved -> {} (+{} ~{} -{}, {} new objects, {} bytes, {:.1} ms)",
        b.id.map(|i| i.short(16)).unwrap_or_default(),
        b.summary.added,
        b.summary.modified,
        b.summary.deleted,
        b.objects_written,
        b.bytes_written,
        t.elapsed().as_secs_f64() * 1e3
    ));
    out("5. shelldone log:".into());
    for e in st.log(None, None, None)? {
        out(format!(
            "     {}  {}  +{} ~{} -{}  {}",
            e.id.short(16),
            super::output::time(e.time_ns),
            e.added,
            e.modified,
            e.deleted,
            e.message
        ));
    }
    let t = Instant::now();
    let r = st.restore(&RestoreOptions {
        rev: Some(first.to_hex()),
        ..RestoreOptions::default()
    })?;
    out(format!(
        "6. state restore {}  -> {} created, {} updated, {} deleted ({:.1} ms)",
        first.short(16),
        r.plan.create.len(),
        r.plan.update.len(),
        r.plan.delete.len(),
        t.elapsed().as_secs_f64() * 1e3
    ));
    let after = (
        tree_bytes(&paths.config_dir)?,
        tree_bytes(&paths.state_dir.join("sessions"))?,
        tree_bytes(&paths.state_dir.join("journal"))?,
    );
    if before != after {
        return Err(Error::Internal(
            "tour: restored state differs from the first save".into(),
        ));
    }
    out("7. the live state is byte-identical to the first save".into());
    let c = st.check(crate::check::CheckOptions::default())?;
    out(format!(
        "8. state check: {} snapshots, {} objects, {} problems",
        c.snapshots,
        c.objects_checked,
        c.problems.len()
    ));
    if !c.ok() {
        return Err(Error::Internal("tour: check found problems".into()));
    }
    if kept {
        out(format!(
            "== done. Try: shelldone --state-dir {0}/state --config-dir {0}/config log",
            base.display()
        ));
    } else {
        out("== done; the demo state was removed (keep it with: shelldone tour --dir DIR)".into());
    }
    Ok(())
}

/// `generate DIR [--scale N] [--small-change N]`: a synthetic state in `DIR/config` and
/// `DIR/state`; prints the number of content bytes written.
///
/// # Errors
/// I/O errors.
pub(super) fn generate(dir: &Path, scale: usize, small_change: Option<u64>) -> Result<ExitCode> {
    let n = match small_change {
        Some(r) => demo::small_change(&dir.join("config"), &dir.join("state"), r)?,
        None => {
            let d = DemoSpec::default();
            let spec = DemoSpec {
                sessions: d.sessions * scale,
                journals: d.journals * scale,
                ..d
            };
            demo::generate(&dir.join("config"), &dir.join("state"), &spec)?
        }
    };
    super::out(n);
    Ok(ExitCode::SUCCESS)
}
