//! Issue #17: everything persisted carries a version and has a round-trip test. The table of
//! docs/migrations.md ("What is persisted") is the list: this test parses it and fails when a row
//! has no version, names no round-trip test, or names one that no `fn` in the workspace defines;
//! [`PERSISTED`] keeps the table from losing a row unnoticed. The reader/writer matrix's tests
//! must exist too. Cheap (reads text files only), so `just verify` runs it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The rows docs/migrations.md must have, in its order (first column).
const PERSISTED: &[&str] = &[
    "store layout",
    "object encoding",
    "file modes extra",
    "loose objects",
    "packs and indexes",
    "loose refs, `packed-refs`, reflog",
    "`device`, `shallow`, `restore-intent`, `remotes.json`",
    "stat cache",
    "session descriptor",
    "config file",
    "journal events",
    "telemetry",
    "audit log",
    "vault secrets",
    "device key record",
    "directory remote layout",
    "S3 remote layout",
    "git remote mapping",
    "git id map",
    "git blobs remote (encrypted)",
    "sealed objects",
    "key files",
    "signed ref records",
    "backup bundles",
    "migration restore points",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cells of a markdown table row (`| a | b |`), trimmed; a `|` inside backticks is kept.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut code = false;
    for c in inner.chars() {
        match c {
            '`' => {
                code = !code;
                out.last_mut().expect("one cell").push(c);
            }
            '|' if !code => out.push(String::new()),
            c => out.last_mut().expect("one cell").push(c),
        }
    }
    out.iter().map(|c| c.trim().to_owned()).collect()
}

/// The rows of the first table after the heading `heading` (header and rule skipped).
fn table(md: &str, heading: &str) -> Vec<Vec<String>> {
    let mut lines = md.lines().skip_while(|l| l.trim() != heading).skip(1);
    let mut rows = Vec::new();
    let mut started = false;
    for l in lines.by_ref() {
        if l.trim_start().starts_with('|') {
            started = true;
            rows.push(cells(l));
        } else if started || l.starts_with("## ") {
            break;
        }
    }
    assert!(rows.len() > 2, "no table under {heading:?}");
    rows.drain(..2); // header, rule
    rows
}

/// Every `fn name(` (and `fn name<`) in the workspace's Rust files.
fn functions() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<PathBuf> = [
        "src",
        "tests",
        "objects-format",
        "shelldone_migrations",
        "benches",
    ]
    .iter()
    .map(|d| root().join(d))
    .collect();
    // Bounded: the workspace has a few hundred files.
    let mut seen = 0usize;
    while let Some(p) = stack.pop() {
        seen += 1;
        assert!(seen < 100_000, "runaway walk");
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            for e in std::fs::read_dir(&p).expect("read dir") {
                stack.push(e.expect("entry").path());
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).expect("read");
            for part in text.split("fn ").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && part[name.len()..].starts_with(['(', '<']) {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// The backticked names in a cell.
fn names(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn doc() -> String {
    std::fs::read_to_string(root().join("docs/migrations.md")).expect("docs/migrations.md")
}

#[test]
fn every_persisted_format_has_a_version_and_a_round_trip_test() {
    let md = doc();
    let rows = table(&md, "## What is persisted");
    let fns = functions();
    let what: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(what, PERSISTED, "the table's rows (keep PERSISTED in sync)");
    let mut problems = Vec::new();
    for r in &rows {
        assert_eq!(r.len(), 7, "seven columns: {r:?}");
        let version = r[1].to_lowercase();
        if version.is_empty() || ["none", "-", "—", "?", "tbd"].contains(&version.as_str()) {
            problems.push(format!("{}: no version", r[0]));
        }
        let tests = names(&r[6]);
        if tests.is_empty() {
            problems.push(format!("{}: no round-trip test named", r[0]));
        }
        for t in tests {
            if !fns.contains(&t) {
                problems.push(format!("{}: no fn {t} in the workspace", r[0]));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_cell_of_the_reader_writer_matrix_names_a_test_that_exists() {
    let md = doc();
    let rows = table(&md, "## Reader/writer matrix");
    let fns = functions();
    for r in &rows {
        let tests = names(&r[4]);
        assert!(!tests.is_empty(), "no test named: {r:?}");
        for t in tests {
            assert!(fns.contains(&t), "no fn {t}: {r:?}");
        }
    }
}

#[test]
fn the_table_parser_sees_code_spans_and_missing_tests() {
    assert_eq!(
        cells("| a | `x|y` | b |"),
        vec!["a".to_owned(), "`x|y`".to_owned(), "b".to_owned()]
    );
    assert_eq!(names("`a` and `b`"), vec!["a".to_owned(), "b".to_owned()]);
    let md = "## T\n\n| a | b |\n|---|---|\n| x | `y` |\n\nafter\n";
    assert_eq!(
        table(md, "## T"),
        vec![vec!["x".to_owned(), "`y`".to_owned()]]
    );
    let fns = functions();
    assert!(fns.contains("the_table_parser_sees_code_spans_and_missing_tests"));
    assert!(!fns.contains("no_such_round_trip_test_anywhere"));
    assert!(Path::new(&root().join("docs/migrations.md")).is_file());
}
