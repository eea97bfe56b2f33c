//! The modules of `src/` import only downward, so the crate has no import cycle (`id.rs` and
//! `kinds.rs` once imported each other). A new module must be placed in [`ORDER`].

/// Every module of `src/` but `lib.rs`, lowest first: each may name only modules before it.
const ORDER: &[&str] = &[
    "kind", "id", "kinds", "children", "chunk", "encoding", "pack", "modes",
];

#[test]
fn modules_import_only_downward() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<String> = std::fs::read_dir(&src)
        .expect("read src/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lib.rs")
        .collect();
    files.sort();
    let mut expected: Vec<String> = ORDER.iter().map(|m| format!("{m}.rs")).collect();
    expected.sort();
    assert_eq!(files, expected, "every module of src/ is placed in ORDER");

    for (rank, module) in ORDER.iter().enumerate() {
        let text = std::fs::read_to_string(src.join(format!("{module}.rs"))).expect("read");
        for (n, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let allowed = ORDER[..rank].contains(&name.as_str());
                assert!(
                    allowed,
                    "src/{module}.rs:{}: `crate::{rest}` names `{name}`, which is not a module \
                     below `{module}` in ORDER (import each module by its own path, downward only)",
                    n + 1
                );
            }
        }
    }
}
