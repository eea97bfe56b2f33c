//! Stores written by older versions (frozen in `fixtures/`) and by newer ones.

use std::path::Path;

use crate::support::{Sandbox, assert_same, copy_dir, tree};

/// A sandbox holding a copy of `fixtures/<name>`.
pub(crate) fn fixture(name: &str) -> Sandbox {
    let sb = Sandbox::new();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
        sb.dir.path(),
    );
    sb
}

fn format_of(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.state().join("snapshots/FORMAT")).expect("FORMAT")
}

fn pack_versions(sb: &Sandbox) -> Vec<u8> {
    let mut v: Vec<u8> = std::fs::read_dir(sb.state().join("snapshots/packs"))
        .expect("packs dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .map(|p| std::fs::read(p).expect("pack")[7])
        .collect();
    v.sort_unstable();
    v
}

fn restored(
    sb: &Sandbox,
    rev: &str,
    name: &str,
) -> std::collections::BTreeMap<String, crate::support::Entry> {
    let to = sb.dir.path().join(name);
    sb.ok(&["state", "restore", rev, "--to", to.to_str().expect("utf8")]);
    let mut got = tree(&to.join("config"), "config");
    got.extend(tree(&to.join("state/sessions"), "state/sessions"));
    got.extend(tree(&to.join("state/journal"), "state/journal"));
    got
}

#[test]
fn a_version_1_store_is_migrated_and_reads_back_byte_identical() {
    let sb = fixture("store-v1");
    let live = sb.live();
    assert_eq!(live.len(), 83, "fixture: 79 files and 4 dirs");
    assert_eq!(format_of(&sb), "shelldone-store 1.0\n");
    assert_eq!(
        pack_versions(&sb),
        vec![1],
        "the fixture holds one version-1 pack"
    );

    // A read-only command reads the old store through; the first command that writes
    // migrates it (1.0 → 2.0), and everything in the old store verifies.
    let check = sb.ok(&["state", "check"]);
    assert!(check.contains("checked 2 snapshots"), "{check}");
    assert_eq!(format_of(&sb), "shelldone-store 1.0\n");
    sb.ok(&["state", "gc"]);
    assert_eq!(format_of(&sb), "shelldone-store 2.0\n");
    assert!(sb.ok(&["state", "check"]).contains("checked 2 snapshots"));
    // The audit trail keeps the migration, once.
    let audit = std::fs::read_to_string(sb.state().join("logs/audit.log")).expect("audit log");
    let lines: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains(" store.migrate "))
        .collect();
    assert_eq!(lines.len(), 1, "{audit}");
    assert!(
        lines[0].ends_with(" store.migrate ok store format 1 -> 2"),
        "{audit}"
    );
    let log = sb.ok(&["log"]);
    assert!(
        log.contains("fixture: second save (loose objects)")
            && log.contains("fixture: first save (v1 pack)"),
        "{log}"
    );

    // The head is the live state, byte for byte; the first snapshot lacks the two appended lines.
    assert_same(&restored(&sb, "head", "head"), &live);
    let mut first = live.clone();
    for (path, tail) in [
        ("config/themes/t07.toml", &b"background = \"#000000\"\n"[..]),
        (
            "state/sessions/s002/scrollback.bin",
            &b"more output\r\n"[..],
        ),
    ] {
        let crate::support::Entry::File(bytes, _) = first.get_mut(path).expect(path) else {
            panic!("{path} is a file");
        };
        assert!(bytes.ends_with(tail), "{path}");
        bytes.truncate(bytes.len() - tail.len());
    }
    assert_same(&restored(&sb, "head~1", "first"), &first);

    // New saves write version-2 packs next to the old one; a repack leaves only version 2, and
    // every snapshot still restores exactly.
    for i in 0..70 {
        std::fs::write(
            sb.config().join(format!("themes/new{i}.toml")),
            format!("name = \"new {i}\"\n"),
        )
        .expect("write");
    }
    sb.save("after migration");
    assert_eq!(pack_versions(&sb), vec![1, 2]);
    sb.ok(&["state", "gc", "--repack"]);
    assert_eq!(pack_versions(&sb), vec![2]);
    assert!(sb.ok(&["state", "check"]).contains("checked 3 snapshots"));
    assert_same(&restored(&sb, "head~2", "first-again"), &first);
}

#[test]
fn stores_from_newer_versions_are_refused_or_read_only() {
    let sb = Sandbox::new();
    sb.generate();
    sb.save("one");
    let format = sb.state().join("snapshots/FORMAT");

    // A newer major: refused, exit 6, nothing changed.
    std::fs::write(&format, "shelldone-store 3.0\n").expect("write");
    for args in [&["log"][..], &["state", "save"][..]] {
        let o = sb.run(args);
        assert_eq!(o.status.code(), Some(6), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("3.0"), "{args:?}: {err}");
    }
    assert_eq!(
        std::fs::read_to_string(&format).expect("read"),
        "shelldone-store 3.0\n"
    );

    // A newer minor: readable, but nothing may write.
    std::fs::write(&format, "shelldone-store 2.9\n").expect("write");
    assert!(sb.ok(&["log"]).contains("one"));
    std::fs::write(sb.config().join("config.toml"), "changed = true\n").expect("write");
    let o = sb.run(&["state", "save"]);
    assert_eq!(o.status.code(), Some(6));
    assert!(
        sb.ok(&["log"])
            .lines()
            .filter(|l| l.starts_with("snapshot "))
            .count()
            == 1
    );
}
