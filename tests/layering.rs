//! The import rule of docs/architecture.md, checked so that it cannot regress: every top-level
//! module of `src/` names (`crate::…`) only modules listed before it in [`ORDER`], and nothing
//! below the facade (`lib.rs`) names `State`. A new module must be placed in [`ORDER`].

use std::path::{Path, PathBuf};

/// The top-level modules of `src/`, lowest first, by layer. Each may name only the modules
/// listed before it (a leaf names nothing of the crate).
const ORDER: &[(&str, &[&str])] = &[
    ("leaves", &["error", "config", "progress", "merge_drivers"]),
    ("store", &["store"]),
    ("snapshot", &["snapshot"]),
    ("remote backends", &["remote"]),
    ("transfer", &["transfer"]),
    ("store context", &["context"]),
    (
        "commands",
        &[
            "history",
            "live",
            "vault",
            "repair",
            "check",
            "recover",
            "backup",
            "sync",
            "journal",
            "telemetry",
            "migrate",
        ],
    ),
    ("facade", &["lib"]),
    ("command line", &["demo", "cli", "main"]),
];

/// The layers at and below which `State` must not be named (everything under the facade).
const BELOW_FACADE: &str = "facade";

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level module of a file under `src/` (`src/sync/merge.rs` → `sync`).
fn module_of(rel: &Path) -> String {
    let first = rel.components().next().expect("non-empty path");
    let s = first.as_os_str().to_string_lossy();
    s.strip_suffix(".rs").unwrap_or(&s).to_owned()
}

/// The code of a line, without a `//` comment (doc comments name modules in links; those are
/// not imports). A `//` inside a string literal is rare enough in this crate to ignore.
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

/// Every module a line names: `crate::name` and each name of `crate::{a, b::c}`.
fn named(line: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        // `my_crate::x` is not this crate.
        if line[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            out.extend(group.split(',').map(ident).filter(|n| !n.is_empty()));
        } else {
            out.push(ident(rest));
        }
    }
    out
}

fn rank_of(module: &str) -> Option<(usize, usize)> {
    ORDER.iter().enumerate().find_map(|(layer, (_, mods))| {
        mods.iter()
            .position(|m| *m == module)
            .map(|within| (layer, within))
    })
}

#[test]
fn modules_import_only_downward_and_nothing_below_the_facade_names_state() {
    let src = src();
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(&src).sort_by_file_name() {
        let e = e.expect("walk src/");
        if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rs") {
            files.push(
                e.path()
                    .strip_prefix(&src)
                    .expect("under src")
                    .to_path_buf(),
            );
        }
    }
    assert!(files.len() > 20, "found the sources: {files:?}");
    let facade = ORDER
        .iter()
        .position(|(name, _)| *name == BELOW_FACADE)
        .expect("the facade layer");

    let mut violations = Vec::new();
    for rel in &files {
        let module = module_of(rel);
        let Some((layer, within)) = rank_of(&module) else {
            violations.push(format!(
                "src/{}: module `{module}` is not placed in ORDER (tests/layering.rs)",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(src.join(rel)).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let line = code(line);
            for name in named(line) {
                if name == module {
                    continue;
                }
                let ok = match rank_of(&name) {
                    // Lower layer, or earlier in the same layer.
                    Some((l, w)) => l < layer || (l == layer && w < within),
                    // `crate::Result`, `crate::Error`… re-exported by lib.rs from a leaf: only
                    // the facade and above may use the crate root's re-exports.
                    None => layer > facade,
                };
                if !ok {
                    violations.push(format!(
                        "src/{}:{}: `{module}` ({}) names `crate::{name}`, which is not below it",
                        rel.display(),
                        n + 1,
                        ORDER[layer].0,
                    ));
                }
            }
            if layer < facade && contains_word(line, "State") {
                violations.push(format!(
                    "src/{}:{}: `{module}` is below the facade but names `State`",
                    rel.display(),
                    n + 1
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the import rule of docs/architecture.md is broken:\n{}",
        violations.join("\n")
    );
}

fn contains_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().last();
        let after = line[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| !c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        boundary(before) && boundary(after)
    })
}

/// The checker itself: a line that breaks the rule is found, one that keeps it is not.
#[test]
fn the_checker_sees_imports_and_groups() {
    assert_eq!(named("use crate::store::refs::HEAD;"), ["store"]);
    assert_eq!(
        named("use crate::{snapshot::Flat, error::Result};"),
        ["snapshot", "error"]
    );
    assert_eq!(
        named("let x = crate::sync::pull(cx); // crate::cli"),
        ["sync", "cli"]
    );
    assert_eq!(named(code("x(); // see crate::cli")), Vec::<String>::new());
    assert!(named("my_crate::x").is_empty());
    assert!(contains_word("fn f(st: &State)", "State"));
    assert!(!contains_word("LiveState { }", "State"));
    assert_eq!(rank_of("store").map(|r| r.0), Some(1));
    assert!(rank_of("sync") > rank_of("live"));
    assert_eq!(rank_of("nope"), None);
}
