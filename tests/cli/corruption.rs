//! Issue #10: every damaged store file is named by `state check` and repaired by `state
//! recover` as the table in docs/safety.md ("Damaged store files") says; meanwhile other
//! commands work or refuse with a message naming the file; afterwards save and restore work
//! and every snapshot that still has its objects restores byte-identical.
//!
//! The matrix: for each kind of store file, each damage (flip a byte, truncate, empty, delete,
//! bytes that are not UTF-8, garbage, a wrong id where the file holds ids), on a copy of one
//! small store with a pack, loose objects, packed and loose refs, a reflog, a remote and a
//! shallow list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::{Entry, Sandbox, assert_same, copy_dir, tree};

/// The store every case starts from, and what each of its snapshots holds.
struct Base {
    sb: Sandbox,
    /// Snapshot ids, oldest first, with their content.
    snaps: Vec<(String, BTreeMap<String, Entry>)>,
    /// Every ref (name → id) before any damage.
    refs: BTreeMap<String, String>,
}

/// More than 32, so that the first save writes `packed-refs`; with the config files, more than
/// 64 objects, so that it writes a pack. Few files: every case restores three snapshots.
const SESSIONS: usize = 34;

fn base() -> Base {
    let sb = Sandbox::in_memory();
    std::fs::create_dir_all(sb.config().join("themes")).unwrap();
    std::fs::write(sb.config().join("config.toml"), "font_size = 12\n").unwrap();
    std::fs::write(sb.config().join("themes/dark.toml"), "name = \"dark\"\n").unwrap();
    for i in 0..SESSIONS {
        let d = sb.state().join(format!("sessions/s{i:03}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("session.json"),
            format!("{{\"id\": \"s{i:03}\", \"tabs\": [{i}]}}"),
        )
        .unwrap();
    }
    std::fs::create_dir_all(sb.state().join("journal")).unwrap();
    std::fs::write(sb.state().join("journal/0000.jsonl"), "{\"e\": 1}\n").unwrap();
    // First save: more than 64 objects (a pack) and more than 32 session refs (packed-refs).
    let first = sb.save("base");
    // Second: a few loose objects and loose session refs; a message that is not ASCII.
    std::fs::write(sb.config().join("config.toml"), "font_size = 14\n").unwrap();
    std::fs::write(
        sb.state().join("sessions/s001/session.json"),
        "{\"id\": \"s001\", \"tabs\": [1, 2]}",
    )
    .unwrap();
    std::fs::write(sb.state().join("sessions/s002/scrollback"), "new\n").unwrap();
    let second = sb.save("café ☕");
    let remote = sb.dir.path().join("remote");
    sb.ok(&[
        "remote",
        "add",
        "origin",
        remote.to_str().unwrap(),
        "--init",
    ]);
    // A valid shallow list (the first snapshot has no parents, so it changes nothing).
    std::fs::write(sb.state().join("snapshots/shallow"), format!("{first}\n")).unwrap();
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    let snaps = [first, second]
        .into_iter()
        .map(|id| {
            let want = restored(&sb, &id, "want");
            (id, want)
        })
        .collect();
    let refs = refs_of(&sb);
    assert!(refs.len() > SESSIONS, "{refs:?}");
    Base { sb, snaps, refs }
}

/// `restore ID --to DIR` in a fresh dir; the tree written.
fn restored(sb: &Sandbox, id: &str, label: &str) -> BTreeMap<String, Entry> {
    let dir = sb
        .dir
        .path()
        .join(format!("restored-{label}-{}", &id[..12]));
    let _ = std::fs::remove_dir_all(&dir);
    sb.ok(&["state", "restore", id, "--to", dir.to_str().unwrap()]);
    let m = dir_tree(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    m
}

fn dir_tree(dir: &Path) -> BTreeMap<String, Entry> {
    let mut m = tree(&dir.join("config"), "config");
    m.extend(tree(&dir.join("state/sessions"), "state/sessions"));
    m.extend(tree(&dir.join("state/journal"), "state/journal"));
    m
}

/// Every ref, read through the library.
fn refs_of(sb: &Sandbox) -> BTreeMap<String, String> {
    let st = shelldone::State::open_for_repair(shelldone::Paths {
        config_dir: sb.config(),
        state_dir: sb.state(),
    })
    .unwrap();
    st.refs()
        .list("")
        .unwrap()
        .into_iter()
        .map(|(n, id)| (n, id.to_hex()))
        .collect()
}

#[derive(Debug, Clone)]
enum Damage {
    /// XOR 0x01 into the byte at this offset (from the end when negative).
    Flip(isize),
    /// Keep the first half.
    Truncate,
    Empty,
    Delete,
    /// Two bytes that are not UTF-8 in place of the bytes at this offset.
    NonUtf8(isize),
    Garbage,
    /// These bytes instead of the file's (an id that is wrong for it).
    WrongId(Vec<u8>),
}

impl Damage {
    fn name(&self) -> &'static str {
        match self {
            Damage::Flip(_) => "flip",
            Damage::Truncate => "truncate",
            Damage::Empty => "empty",
            Damage::Delete => "delete",
            Damage::NonUtf8(_) => "non-utf8",
            Damage::Garbage => "garbage",
            Damage::WrongId(_) => "wrong id",
        }
    }

    fn apply(&self, path: &Path) {
        let at = |b: &[u8], i: isize| -> usize {
            if i < 0 {
                b.len() - i.unsigned_abs()
            } else {
                i.unsigned_abs()
            }
        };
        match self {
            Damage::Flip(i) => {
                let mut b = std::fs::read(path).unwrap();
                if b.is_empty() {
                    b.push(0);
                }
                let i = at(&b, *i).min(b.len() - 1);
                b[i] ^= 0x01;
                std::fs::write(path, b).unwrap();
            }
            Damage::Truncate => {
                let b = std::fs::read(path).unwrap();
                std::fs::write(path, &b[..b.len() / 2]).unwrap();
            }
            Damage::Empty => std::fs::write(path, b"").unwrap(),
            Damage::Delete => std::fs::remove_file(path).unwrap(),
            Damage::NonUtf8(i) => {
                let mut b = std::fs::read(path).unwrap();
                if b.len() < 2 {
                    b.resize(2, b' ');
                }
                let i = at(&b, *i).min(b.len() - 1);
                b[i] = 0xff;
                let j = (i + 1).min(b.len() - 1);
                b[j] = 0xfe;
                std::fs::write(path, b).unwrap();
            }
            Damage::Garbage => std::fs::write(
                path,
                b"this is not what shelldone writes\nat all 0123 zz\n\x00\x01",
            )
            .unwrap(),
            Damage::WrongId(b) => std::fs::write(path, b).unwrap(),
        }
    }
}

/// What `state check` must say about a damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Exit 3, naming the file.
    Named,
    /// Nothing to report: the file's content is never trusted (locks), or its absence is
    /// normal (a stat cache, a shallow list or remote list that is simply not there).
    Harmless,
}

struct Case {
    /// Path under the state dir.
    file: PathBuf,
    damage: Damage,
    verdict: Verdict,
    /// What check's output and a refusing command's message must contain.
    needle: String,
    /// Object damage: data may be lost for good (snapshots that lost objects may no longer
    /// restore; every problem check still reports after recover must be a missing object).
    objects: bool,
}

fn case(file: impl Into<PathBuf>, damage: Damage, verdict: Verdict) -> Case {
    let file = file.into();
    let needle = file.to_string_lossy().into_owned();
    Case {
        file,
        damage,
        verdict,
        needle,
        objects: false,
    }
}

fn run(base: &Base, cases: Vec<Case>) {
    let started = std::time::Instant::now();
    let n = cases.len();
    for c in cases {
        let label = format!("{} {}", c.file.display(), c.damage.name());
        let sb = Sandbox::in_memory();
        copy_dir(&base.sb.state(), &sb.state());
        copy_dir(&base.sb.config(), &sb.config());
        c.damage.apply(&sb.state().join(&c.file));

        // 1. check names it (or, for harmless damage, passes).
        let o = sb.run(&["state", "check"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        match c.verdict {
            Verdict::Named => {
                assert_eq!(
                    o.status.code(),
                    Some(3),
                    "{label}: check should fail:\n{out}"
                );
                assert!(
                    out.contains(&c.needle),
                    "{label}: check should name {}:\n{out}",
                    c.needle
                );
            }
            Verdict::Harmless => assert!(
                o.status.success(),
                "{label}: check should pass:\n{out}{}",
                String::from_utf8_lossy(&o.stderr)
            ),
        }

        // 2. Meanwhile another command works, or refuses naming what is damaged.
        let o = sb.run(&["log", "-n", "1"]);
        let err = String::from_utf8_lossy(&o.stderr);
        // Object damage is named by the object (and, for a damaged pack block, the pack).
        let named = err.contains(&c.needle) || (c.objects && err.contains("object "));
        assert!(
            o.status.success() || (o.status.code() == Some(3) && named),
            "{label}: log must work or refuse naming {} (exit 3): {:?} {err}",
            c.needle,
            o.status
        );

        // 3. recover repairs it.
        let o = sb.run(&["state", "recover"]);
        assert!(
            o.status.success(),
            "{label}: recover failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let o = sb.run(&["state", "check"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if c.objects {
            // What is left is only what was lost: missing objects, never a damaged file.
            for l in out.lines().filter(|l| l.starts_with("error: ")) {
                assert!(
                    l.ends_with(" is missing"),
                    "{label}: after recover: {l}\n{out}"
                );
            }
        } else {
            assert!(o.status.success(), "{label}: check after recover:\n{out}");
            // History is intact: every snapshot is still reachable from the refs and reflog.
            let log = sb.ok(&["log", "--full"]);
            for (id, _) in &base.snaps {
                assert!(
                    log.contains(id.as_str()),
                    "{label}: {id} left the history:\n{log}"
                );
            }
            let refs = refs_of(&sb);
            for (name, id) in &base.refs {
                assert_eq!(
                    refs.get(name),
                    Some(id),
                    "{label}: ref {name} after recover"
                );
            }
        }

        // 4. The next save and restore work.
        std::fs::write(
            sb.config().join("config.toml"),
            format!("case = \"{label}\"\n"),
        )
        .unwrap();
        let id = sb.save("after recover");
        assert_same(&restored(&sb, &id, "new"), &sb.live());
        if !c.objects {
            let o = sb.run(&["state", "check"]);
            assert!(
                o.status.success(),
                "{label}: check after save:\n{}",
                String::from_utf8_lossy(&o.stdout)
            );
        }

        // 5. Every snapshot that still has its objects restores byte-identical.
        for (id, want) in &base.snaps {
            let dir = sb.dir.path().join("old");
            let _ = std::fs::remove_dir_all(&dir);
            let o = sb.run(&["state", "restore", id, "--to", dir.to_str().unwrap()]);
            if o.status.success() {
                assert_same(&dir_tree(&dir), want);
            } else {
                assert!(
                    c.objects && matches!(o.status.code(), Some(2 | 3)),
                    "{label}: snapshot {id} no longer restores: {:?} {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
    eprintln!("{n} corruption cases in {:?}", started.elapsed());
}

/// The damages every text file gets.
fn text_damages(wrong: Option<Vec<u8>>, flip_at: isize, utf8_at: isize) -> Vec<Damage> {
    let mut v = vec![
        Damage::Flip(flip_at),
        Damage::Truncate,
        Damage::Empty,
        Damage::Delete,
        Damage::NonUtf8(utf8_at),
        Damage::Garbage,
    ];
    v.extend(wrong.map(Damage::WrongId));
    v
}

/// An id the store has, of a tree (exists, but is not a snapshot).
fn a_tree_id(base: &Base) -> String {
    let st = shelldone::State::open_for_repair(shelldone::Paths {
        config_dir: base.sb.config(),
        state_dir: base.sb.state(),
    })
    .unwrap();
    let head = shelldone::ObjectId::from_hex(&base.snaps[1].0).unwrap();
    st.objects().read_snapshot(&head).unwrap().root.to_hex()
}

#[test]
fn refs_packed_refs_and_the_reflog_are_named_and_rebuilt_from_each_other() {
    let b = base();
    let tree = a_tree_id(&b);
    let mut cases = Vec::new();
    // The head (loose) and a loose session ref: the reflog knows their values.
    for file in ["snapshots/refs/head", "snapshots/refs/sessions/s001"] {
        for d in text_damages(Some(format!("{tree}\n").into_bytes()), 10, 10) {
            cases.push(case(file, d, Verdict::Named));
        }
    }
    // packed-refs: rebuilt from the lines that parse and the reflog.
    for d in text_damages(
        Some(format!("# shelldone packed-refs 1\n{tree} sessions/s003\n").into_bytes()),
        40,
        40,
    ) {
        let mut c = case("snapshots/packed-refs", d, Verdict::Named);
        c.needle = "packed-refs".into();
        cases.push(c);
    }
    // The reflog: the flip and the wrong id hit an id of the last line (the head's).
    let log = std::fs::read(b.sb.state().join("snapshots/logs/refs.log")).unwrap();
    let mut wrong = log.clone();
    let last_new = wrong.len() - 1 - "x save: café ☕".len() - 20 - 64;
    for (i, c) in "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        .bytes()
        .enumerate()
    {
        wrong[last_new + i] = c;
    }
    for d in text_damages(Some(wrong), last_new as isize + 5, -3) {
        cases.push(case("snapshots/logs/refs.log", d, Verdict::Named));
    }
    run(&b, cases);
}

#[test]
fn small_store_files_are_named_and_repaired_or_harmless() {
    let b = base();
    let mut cases = Vec::new();
    // FORMAT: the flip hits a letter ("shelldone-rtore"; a flipped digit would say "a newer
    // store", which is refused as such, exit 6).
    for d in text_damages(None, 11, 5) {
        cases.push(case("snapshots/FORMAT", d, Verdict::Named));
    }
    // device: rewritten from the device of the newest local save.
    for d in text_damages(None, 1, 1) {
        cases.push(case("snapshots/device", d, Verdict::Named));
    }
    // The stat cache: derived; a missing one is normal.
    for d in text_damages(None, 20, 20) {
        let v = if matches!(d, Damage::Delete) {
            Verdict::Harmless
        } else {
            Verdict::Named
        };
        cases.push(case("snapshots/statcache", d, v));
    }
    // Its delta (the changes of the saves since the cache was written whole): derived too.
    assert!(
        b.sb.state().join("snapshots/statcache.delta").exists(),
        "the later saves of the base wrote their changes to the delta"
    );
    for d in text_damages(None, 20, 20) {
        let v = if matches!(d, Damage::Delete) {
            Verdict::Harmless
        } else {
            Verdict::Named
        };
        cases.push(case("snapshots/statcache.delta", d, v));
    }
    // The lock and its owner note: their content is never trusted.
    for file in ["snapshots/lock", "snapshots/lock.owner"] {
        for d in text_damages(None, 1, 1) {
            cases.push(case(file, d, Verdict::Harmless));
        }
    }
    // shallow: a listed id flipped names nothing; a missing list is an empty one.
    for d in text_damages(
        Some(b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n".to_vec()),
        3,
        3,
    ) {
        let v = if matches!(d, Damage::Delete) {
            Verdict::Harmless
        } else {
            Verdict::Named
        };
        cases.push(case("snapshots/shallow", d, v));
    }
    // remotes.json: set aside (with the manual step: add the remotes again).
    for d in text_damages(None, 0, 2) {
        let v = if matches!(d, Damage::Delete) {
            Verdict::Harmless
        } else {
            Verdict::Named
        };
        cases.push(case("snapshots/remotes.json", d, v));
    }
    run(&b, cases);
}

#[test]
fn intents_left_damaged_are_named_and_dropped() {
    let b = base();
    // No restore is pending in the base store: plant the two kinds of intent first.
    let intent = b.sb.state().join("snapshots/restore-intent");
    let mut cases = Vec::new();
    for planted in [
        format!("{{\"snapshot\":\"{}\",\"session\":null}}", b.snaps[0].0),
        "{\"snapshot\":\"head\",\"session\":null}".to_owned(),
    ] {
        std::fs::write(&intent, &planted).unwrap();
        let ds = vec![
            Damage::Flip(2),
            Damage::Truncate,
            Damage::Empty,
            Damage::NonUtf8(14),
            Damage::Garbage,
            Damage::WrongId(
                b"{\"snapshot\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\"session\":null}".to_vec(),
            ),
        ];
        for d in ds {
            cases.push(case("snapshots/restore-intent", d, Verdict::Named));
        }
        let one = Base {
            sb: Sandbox::in_memory(),
            snaps: b.snaps.clone(),
            refs: b.refs.clone(),
        };
        copy_dir(&b.sb.state(), &one.sb.state());
        copy_dir(&b.sb.config(), &one.sb.config());
        run(&one, std::mem::take(&mut cases));
    }
    std::fs::remove_file(&intent).unwrap();
}

#[test]
fn objects_packs_and_indexes_are_named_salvaged_and_healed_by_the_next_save() {
    let b = base();
    let st = shelldone::State::open_for_repair(shelldone::Paths {
        config_dir: b.sb.config(),
        state_dir: b.sb.state(),
    })
    .unwrap();
    let loose = st.objects().list_loose().unwrap();
    let of_kind = |k: objects_format::Kind| {
        *loose
            .iter()
            .find(|id| st.objects().read_verified(id).unwrap().kind == k)
            .expect("a loose object of that kind")
    };
    let mut cases = Vec::new();
    let other = loose[0];
    for kind in [
        objects_format::Kind::Blob,
        objects_format::Kind::Tree,
        objects_format::Kind::Snapshot,
    ] {
        let id = of_kind(kind);
        let hex = id.to_hex();
        let file = PathBuf::from(format!("snapshots/objects/{}/{}", &hex[..2], &hex[2..]));
        let wrong = if id == other { loose[1] } else { other };
        let wrong = std::fs::read(st.objects().object_path(&wrong)).unwrap();
        for d in [
            Damage::Flip(-8),
            Damage::Truncate,
            Damage::Empty,
            Damage::Delete,
            Damage::NonUtf8(12),
            Damage::Garbage,
            Damage::WrongId(wrong.clone()),
        ] {
            let mut c = case(&file, d, Verdict::Named);
            c.needle = hex.clone();
            c.objects = true;
            cases.push(c);
        }
    }
    let packs: Vec<PathBuf> = std::fs::read_dir(b.sb.state().join("snapshots/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(packs.len(), 2, "one pack and its index: {packs:?}");
    for p in packs {
        let file = p.strip_prefix(b.sb.state()).unwrap().to_path_buf();
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        for d in [
            Damage::Flip(-100),
            Damage::Flip(30),
            Damage::Truncate,
            Damage::Empty,
            Damage::Delete,
            Damage::NonUtf8(20),
            Damage::Garbage,
        ] {
            let mut c = case(&file, d, Verdict::Named);
            c.needle = stem.clone();
            c.objects = true;
            cases.push(c);
        }
    }
    drop(st);
    run(&b, cases);
}

// Regression tests for the cases issue #10 reported, one by one.

fn small() -> (Sandbox, String, String) {
    let sb = Sandbox::in_memory();
    std::fs::create_dir_all(sb.config()).unwrap();
    std::fs::write(sb.config().join("config.toml"), "a = 1\n").unwrap();
    std::fs::create_dir_all(sb.state().join("sessions/s1")).unwrap();
    std::fs::write(sb.state().join("sessions/s1/session.json"), "{}").unwrap();
    let one = sb.save("one");
    std::fs::write(sb.config().join("config.toml"), "a = 2\n").unwrap();
    let two = sb.save("café ☕");
    (sb, one, two)
}

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_reflog_line_cut_inside_a_multibyte_character_is_skipped_named_and_set_aside() {
    let (sb, _, two) = small();
    let log = sb.state().join("snapshots/logs/refs.log");
    let bytes = std::fs::read(&log).unwrap();
    let last = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    // The last line again, cut inside the 3 bytes of ☕ (and no newline: a torn append).
    let mut damaged = bytes.clone();
    damaged.extend_from_slice(&bytes[last..bytes.len() - 2]);
    std::fs::write(&log, &damaged).unwrap();
    let line = damaged.iter().filter(|b| **b == b'\n').count() + 1;

    let o = sb.run(&["state", "check"]);
    assert_eq!(code(&o), Some(3), "{}", text(&o.stdout));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("refs.log:{line} is corrupt")),
        "{out}"
    );
    // Readers skip it; gc keeps working.
    assert!(sb.ok(&["log", "--full"]).contains(&two));
    sb.ok(&["state", "gc"]);
    let out = sb.ok(&["state", "recover"]);
    assert!(out.contains("refs.log"), "{out}");
    let now = std::fs::read(&log).unwrap();
    assert!(
        std::str::from_utf8(&now).is_ok(),
        "the reflog is UTF-8 again"
    );
    let q: Vec<PathBuf> = walkdir::WalkDir::new(sb.state().join("quarantine"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        std::fs::read(&q[0]).unwrap(),
        [&bytes[last..bytes.len() - 2], b"\n"].concat(),
        "the damaged line is kept as it was"
    );
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    std::fs::write(sb.config().join("config.toml"), "a = 3\n").unwrap();
    sb.save("after");
}

#[test]
fn bytes_that_are_not_utf8_in_packed_refs_or_format_name_the_file_with_exit_3() {
    for (file, bytes) in [
        (
            "packed-refs",
            &b"# shelldone packed-refs 1\n\xff\xfe sessions/x\n"[..],
        ),
        ("FORMAT", &b"shelldone-store \xff.0\n"[..]),
    ] {
        let (sb, one, _) = small();
        let path = sb.state().join("snapshots").join(file);
        std::fs::write(&path, bytes).unwrap();
        for args in [&["log"][..], &["state", "save"], &["remote", "list"]] {
            let o = sb.run(args);
            let err = text(&o.stderr);
            // packed-refs is only read where a ref may be in it; FORMAT at every open.
            if file == "FORMAT" || !o.status.success() {
                assert_eq!(code(&o), Some(3), "{file} {args:?}: {err}");
                assert!(
                    err.contains(&format!("{} is corrupt: ", path.display())),
                    "{file} {args:?}: {err}"
                );
            }
        }
        let o = sb.run(&["--json", "log"]);
        if file == "packed-refs" {
            let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
            assert_eq!(e["exit_code"], 3, "{e}");
        }
        let o = sb.run(&["state", "check"]);
        assert_eq!(code(&o), Some(3), "{file}");
        assert!(text(&o.stdout).contains(&path.display().to_string()));
        let out = sb.ok(&["state", "recover"]);
        assert!(
            out.contains(&format!("repaired {}", path.display())),
            "{out}"
        );
        assert!(sb.ok(&["state", "check"]).contains("no problems"), "{file}");
        assert!(sb.ok(&["log", "--full"]).contains(&one), "{file}");
    }
}

#[test]
fn a_deleted_head_is_named_a_save_refuses_to_detach_history_and_recover_restores_it() {
    let (sb, _, two) = small();
    let head = sb.state().join("snapshots/refs/head");
    std::fs::remove_file(&head).unwrap();
    let o = sb.run(&["state", "check"]);
    assert_eq!(code(&o), Some(3));
    let out = text(&o.stdout);
    assert!(
        out.contains(&head.display().to_string()) && out.contains(&two),
        "{out}"
    );
    std::fs::write(sb.config().join("config.toml"), "a = 3\n").unwrap();
    let before = std::fs::read(sb.state().join("snapshots/logs/refs.log")).unwrap();
    for args in [&["state", "save"][..], &["log"], &["state", "restore"]] {
        let o = sb.run(args);
        assert_eq!(code(&o), Some(3), "{args:?}");
        let err = text(&o.stderr);
        assert!(
            err.contains("refs/head is corrupt") && err.contains("state recover"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(sb.state().join("snapshots/logs/refs.log")).unwrap(),
        before,
        "no parentless snapshot was made"
    );
    let out = sb.ok(&["state", "recover"]);
    assert!(out.contains(&format!("set to {two}")), "{out}");
    assert_eq!(std::fs::read_to_string(&head).unwrap().trim(), two);
    let three = sb.save("three");
    assert!(
        sb.ok(&["show", "--full", &three])
            .contains(&format!("parent  {two}"))
    );
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
}

#[test]
fn an_empty_or_garbage_head_still_restores_by_id_and_is_repaired() {
    for bad in [&b""[..], b"garbage\n", b"\xff\xfe\n"] {
        let (sb, one, two) = small();
        let want = restored(&sb, &one, "before");
        let head = sb.state().join("snapshots/refs/head");
        std::fs::write(&head, bad).unwrap();
        assert_same(&restored(&sb, &one, "after"), &want);
        let o = sb.run(&["state", "check"]);
        assert_eq!(code(&o), Some(3));
        assert!(text(&o.stdout).contains(&head.display().to_string()));
        let o = sb.run(&["log"]);
        assert_eq!(code(&o), Some(3), "{}", text(&o.stderr));
        sb.ok(&["state", "recover"]);
        assert_eq!(std::fs::read_to_string(&head).unwrap().trim(), two);
        assert!(sb.ok(&["state", "check"]).contains("no problems"));
    }
}

#[test]
fn a_head_naming_a_missing_snapshot_is_reset_to_the_newest_complete_one() {
    let (sb, _, two) = small();
    let head = sb.state().join("snapshots/refs/head");
    let missing = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(&head, format!("{missing}\n")).unwrap();
    std::fs::write(sb.config().join("config.toml"), "a = 3\n").unwrap();
    let o = sb.run(&["state", "save"]);
    assert_eq!(code(&o), Some(3));
    assert!(
        text(&o.stderr).contains("refs/head is corrupt"),
        "{}",
        text(&o.stderr)
    );
    let o = sb.run(&["state", "check"]);
    assert_eq!(code(&o), Some(3));
    assert!(text(&o.stdout).contains(missing));
    let out = sb.ok(&["state", "recover"]);
    assert!(
        out.contains(&format!("set to {two}, the newest complete snapshot")),
        "{out}"
    );
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    let three = sb.save("three");
    assert!(
        sb.ok(&["show", "--full", &three])
            .contains(&format!("parent  {two}"))
    );
}

#[test]
fn a_snapshot_in_a_damaged_pack_block_is_damage_not_an_unknown_revision() {
    let b = base();
    let first = &b.snaps[0].0;
    let packs = b.sb.state().join("snapshots/packs");
    let idx = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "idx"))
        .unwrap();
    let pack = idx.with_extension("pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    let (_, entries) =
        objects_format::pack::parse_index(&std::fs::read(&idx).unwrap(), bytes.len() as u64)
            .unwrap();
    let e = entries.iter().find(|e| e.id.to_hex() == *first).unwrap();
    // Break the zstd frame header of the snapshot's block.
    bytes[e.offset as usize + 4] ^= 0xff;
    std::fs::write(&pack, &bytes).unwrap();
    for args in [
        &["show", first.as_str()][..],
        &["state", "restore", first.as_str(), "--to", "unused"],
    ] {
        let o = b.sb.run(args);
        assert_eq!(code(&o), Some(3), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(
            err.contains("is corrupt") && err.contains(first.as_str()),
            "{err}"
        );
    }
    assert!(!b.sb.dir.path().join("unused").exists());
}

#[test]
fn check_says_how_many_bytes_without_stuttering() {
    // A blob named twice in one tree with two sizes: the second reference is wrong.
    let sb = Sandbox::in_memory();
    sb.save("empty");
    let st = shelldone::State::open(shelldone::Paths {
        config_dir: sb.config(),
        state_dir: sb.state(),
    })
    .unwrap()
    .0;
    {
        use objects_format::{EntryKind, Object, Snapshot, Tree, TreeEntry};
        let _lock = st.context().lock("test").unwrap();
        let batch = st.objects().batch().unwrap();
        let blob = batch.put(&Object::Blob(b"hello".to_vec())).unwrap();
        let entry = |name: &str, size| TreeEntry {
            name: name.as_bytes().to_vec(),
            kind: EntryKind::File,
            flags: 0,
            size,
            id: blob,
        };
        let config = batch
            .put(&Object::Tree(Tree {
                entries: vec![entry("a", 5), entry("b", 6)],
            }))
            .unwrap();
        let root = batch
            .put(&Object::Tree(Tree {
                entries: vec![TreeEntry {
                    name: b"config".to_vec(),
                    kind: EntryKind::Dir,
                    flags: 0,
                    size: 0,
                    id: config,
                }],
            }))
            .unwrap();
        let snap = batch
            .put(&Object::Snapshot(Snapshot {
                root,
                parents: Vec::new(),
                time_ns: 1,
                device: "test".into(),
                message: "sizes".into(),
                session: None,
                summary: Default::default(),
                extra: Vec::new(),
            }))
            .unwrap();
        batch.commit().unwrap();
        st.refs().set("sessions/sizes", Some(snap), "test").unwrap();
    }
    let o = sb.run(&["state", "check"]);
    assert_eq!(code(&o), Some(3));
    let out = text(&o.stdout);
    assert!(out.contains(" is 5 bytes, but "), "{out}");
    assert!(!out.contains(" is is "), "{out}");
}
