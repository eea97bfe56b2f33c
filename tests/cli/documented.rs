//! Issue #11 (item 5): every `--json` document is documented. docs/cli.md shows each one in a
//! code block whose info string names it (```` ```json state save ````); a document printed with a
//! top-level key its block does not name fails the output test that printed it
//! (`tests/cli/outputs.rs` calls [`check`] on every JSON document it snapshots).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

/// docs/cli.md's documents: label → the top-level keys its blocks name.
pub fn documented() -> &'static BTreeMap<String, BTreeSet<String>> {
    static DOCS: OnceLock<BTreeMap<String, BTreeSet<String>>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md"))
            .expect("docs/cli.md");
        parse(&md)
    })
}

/// The labelled `json` blocks of a markdown text: label → top-level keys (the union over the
/// blocks with that label, as the daemon's events share one).
pub fn parse(md: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut docs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut lines = md.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line.trim().strip_prefix("```json ") else {
            continue;
        };
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        docs.entry(label.trim().to_owned())
            .or_default()
            .extend(top_level_keys(&body));
    }
    docs
}

/// The keys of the first object in `body` (an array's element when the block is an array), read
/// from the pseudo-JSON the docs write: `"<hex>" | null`, `/* as in diff */`, `…`.
fn top_level_keys(body: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut depth = 0usize;
    let mut object = None;
    let mut last_string: Option<String> = None;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut s = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => s.extend(chars.next()),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                last_string = Some(s);
                continue;
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '{' | '[' => {
                depth += 1;
                if c == '{' && object.is_none() {
                    object = Some(depth);
                }
            }
            '}' | ']' => {
                if object == Some(depth) {
                    break;
                }
                depth = depth.saturating_sub(1);
            }
            ':' if object == Some(depth) => keys.extend(last_string.take()),
            c if c.is_whitespace() => continue,
            _ => {}
        }
        last_string = None;
    }
    keys
}

/// Checks one document printed by `shelldone … --json` against docs/cli.md's block `label`: an
/// object's keys, or every element's of an array, must all be documented. Returns how many
/// objects were checked (an empty array checks nothing, which the caller must not mistake for a
/// pass).
pub fn check(label: &str, doc: &Value) -> Result<usize, String> {
    check_against(documented(), label, doc)
}

fn check_against(
    docs: &BTreeMap<String, BTreeSet<String>>,
    label: &str,
    doc: &Value,
) -> Result<usize, String> {
    let known = docs
        .get(label)
        .ok_or_else(|| format!("docs/cli.md has no ```json {label} block"))?;
    let objects: Vec<&serde_json::Map<String, Value>> = match doc {
        Value::Object(m) => vec![m],
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_object()
                    .ok_or_else(|| format!("{label}: an element is not an object: {i}"))
            })
            .collect::<Result<_, _>>()?,
        other => return Err(format!("{label}: not an object or array: {other}")),
    };
    for o in &objects {
        let extra: Vec<&String> = o.keys().filter(|k| !known.contains(*k)).collect();
        if !extra.is_empty() {
            return Err(format!(
                "{label}: key(s) {extra:?} are not documented in docs/cli.md (```json {label}: {known:?})"
            ));
        }
    }
    Ok(objects.len())
}

#[test]
fn an_undocumented_top_level_key_fails() {
    let docs = parse(
        "x\n\n```json state gc\n{\"reachable\": 0, \"nested\": {\"inner\": 1},\n \"repacked\": 0 | null, /* \"not\": 1 */ \"list\": [\"a\", \"b\"]}\n```\n",
    );
    let gc = &docs["state gc"];
    assert_eq!(
        gc.iter().map(String::as_str).collect::<Vec<_>>(),
        ["list", "nested", "reachable", "repacked"],
        "top-level keys only; comments and values are not keys"
    );
    let good = serde_json::json!({"reachable": 1, "repacked": null});
    assert_eq!(check_against(&docs, "state gc", &good), Ok(1));
    let bad = serde_json::json!({"reachable": 1, "surprise": true});
    let err = check_against(&docs, "state gc", &bad).unwrap_err();
    assert!(err.contains("surprise"), "{err}");
    let bad_element = serde_json::json!([{"reachable": 1}, {"inner": 1}]);
    assert!(check_against(&docs, "state gc", &bad_element).is_err());
    assert!(check_against(&docs, "state frobnicate", &good).is_err());
}

#[test]
fn every_documented_document_has_a_snapshot() {
    // An output snapshot of a JSON document is named `json_<label>…` (outputs.rs); a documented
    // document nothing prints would be a claim no test holds the CLI to.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli/snapshots");
    let names: Vec<String> = std::fs::read_dir(dir)
        .expect("tests/cli/snapshots")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snap"))
        .collect();
    assert!(documented().len() >= 20, "{:?}", documented().keys());
    for label in documented().keys() {
        let prefix = format!("cli__outputs__json_{}", label.replace(' ', "_"));
        assert!(
            names.iter().any(|n| n.starts_with(&prefix)),
            "no snapshot {prefix}*.snap for the documented document '{label}'"
        );
    }
}
