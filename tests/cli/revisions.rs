//! Issue #11 item 9 and issue #12 (revisions as git users type them): revision parsing as a
//! table (docs/cli.md, "Revisions"), each row through `State::resolve` and through the binary
//! (`log -n 1 REV`, exit 2 for a usage error, the reason after the quoted revision).

use objects_format::{Object, ObjectId};
use shelldone::{Error, Paths, State};

use crate::support::Sandbox;

/// What a revision must resolve to.
#[derive(Debug, Clone)]
enum Want {
    Id(ObjectId),
    Unknown,
    Ambiguous,
}

/// Device A with a line of three snapshots s1 ← s2 ← s3 (head), s001 changed in s2 only;
/// device B pulled A's history (without restoring), so it has `remotes/origin/laptop/…`.
struct World {
    a: Sandbox,
    b: Sandbox,
    _remote: tempfile::TempDir,
    s1: ObjectId,
    s2: ObjectId,
    s3: ObjectId,
}

fn id(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex).expect("a full id")
}

fn open(sb: &Sandbox) -> State {
    State::open(Paths {
        config_dir: sb.config(),
        state_dir: sb.state(),
    })
    .expect("open the store")
    .0
}

fn world() -> World {
    let remote = tempfile::tempdir().expect("tempdir");
    let url = remote.path().join("r");
    let url = url.to_str().expect("utf-8 path");
    let a = Sandbox::in_memory();
    a.generate();
    a.ok(&["device", "rename", "laptop"]);
    let s1 = id(&a.save("one"));
    std::fs::write(
        a.state().join("sessions/s001/session.json"),
        "{\"id\":\"s001\",\"v\":2}",
    )
    .expect("write");
    let s2 = id(&a.save("two"));
    std::fs::write(a.config().join("config.toml"), "font_size = 3\n").expect("write");
    let s3 = id(&a.save("three"));
    a.ok(&["remote", "add", "origin", url, "--init"]);
    a.ok(&["sync", "push"]);
    let b = Sandbox::in_memory();
    b.ok(&["device", "rename", "desk"]);
    b.ok(&["remote", "add", "origin", url, "--init"]);
    b.ok(&["sync", "pull", "--no-restore"]);
    World {
        a,
        b,
        _remote: remote,
        s1,
        s2,
        s3,
    }
}

/// The shortest prefix (at least 4 characters) of `id` that no other of `all` shares.
fn unique_prefix(id: &ObjectId, all: &[ObjectId]) -> String {
    let hex = id.to_hex();
    (4..=64)
        .map(|n| hex[..n].to_owned())
        .find(|p| {
            all.iter()
                .filter(|o| *o != id)
                .all(|o| !o.to_hex().starts_with(p.as_str()))
        })
        .expect("ids differ")
}

/// A 4-character hex prefix that none of `all` starts with.
fn unused_prefix(all: &[ObjectId]) -> String {
    (0u32..0x10000)
        .map(|n| format!("{n:04x}"))
        .find(|p| all.iter().all(|o| !o.to_hex().starts_with(p.as_str())))
        .expect("fewer than 65536 snapshots")
}

/// Checks `rev` against `want` through the library and through the binary.
fn check(sb: &Sandbox, st: &State, rev: &str, want: &Want) {
    let got = st.resolve(rev);
    match (want, &got) {
        (Want::Id(w), Ok(g)) => assert_eq!(g, w, "resolve({rev:?})"),
        (Want::Unknown, Err(Error::UnknownRevision { rev: r, why })) => {
            assert_eq!(r, rev, "the revision as given");
            assert!(!why.is_empty(), "resolve({rev:?}): no reason");
        }
        (Want::Ambiguous, Err(Error::AmbiguousPrefix { candidates, .. })) => {
            assert!(candidates.len() >= 2, "resolve({rev:?}): {candidates:?}");
        }
        _ => panic!("resolve({rev:?}): want {want:?}, got {got:?}"),
    }
    let o = sb.run(&["--json", "log", "-n", "1", rev]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    match want {
        Want::Id(w) => {
            assert!(o.status.success(), "log {rev:?}: {stderr}");
            let log: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
            assert_eq!(log[0]["id"], w.to_hex().as_str(), "log {rev:?}");
        }
        Want::Unknown | Want::Ambiguous => {
            assert_eq!(o.status.code(), Some(2), "log {rev:?}: {stderr}");
            // Issue #12: the reason comes after the quoted revision, never inside the quotes.
            let word = if matches!(want, Want::Unknown) {
                format!("unknown revision '{rev}': ")
            } else {
                "ambiguous revision '".to_owned()
            };
            let doc: serde_json::Value = serde_json::from_str(&stderr).expect("a JSON error");
            let message = doc["error"].as_str().expect("error message");
            assert!(message.contains(&word), "log {rev:?}: {message}");
        }
    }
}

#[test]
fn revisions_resolve_as_documented() {
    let w = world();
    let st = open(&w.a);
    let (s1, s2, s3) = (w.s1, w.s2, w.s3);
    let all = [s1, s2, s3];
    let root = st.objects().read_snapshot(&s3).expect("s3").root;
    let p3 = unique_prefix(&s3, &all);
    let none = unused_prefix(&all);
    let table: Vec<(String, Want)> = vec![
        // The head, in any case, or empty.
        ("head".into(), Want::Id(s3)),
        ("HEAD".into(), Want::Id(s3)),
        ("Head".into(), Want::Id(s3)),
        (String::new(), Want::Id(s3)),
        // First parents back: `~` alone is `~1`, `~0` is the revision itself.
        ("head~".into(), Want::Id(s2)),
        ("head~0".into(), Want::Id(s3)),
        ("head~1".into(), Want::Id(s2)),
        ("HEAD~2".into(), Want::Id(s1)),
        ("~".into(), Want::Id(s2)),
        ("~2".into(), Want::Id(s1)),
        ("head~3".into(), Want::Unknown),
        ("head~99999999999999999999999".into(), Want::Unknown),
        ("head~x".into(), Want::Unknown),
        ("head~-1".into(), Want::Unknown),
        // Suffixes chain, as in git.
        ("head~1~1".into(), Want::Id(s1)),
        ("head~~".into(), Want::Id(s1)),
        // `^N`: the Nth parent; `^` is `^1` (like `~1`), `^0` the snapshot itself.
        ("head^".into(), Want::Id(s2)),
        ("head^1".into(), Want::Id(s2)),
        ("head^0".into(), Want::Id(s3)),
        ("head^^".into(), Want::Id(s1)),
        ("head~1^".into(), Want::Id(s1)),
        ("head^2".into(), Want::Unknown),
        ("head~2^".into(), Want::Unknown),
        ("head^x".into(), Want::Unknown),
        // `@{N}`: the Nth previous value of a ref, from the reflog (three saves moved head).
        ("head@{0}".into(), Want::Id(s3)),
        ("head@{1}".into(), Want::Id(s2)),
        ("HEAD@{2}".into(), Want::Id(s1)),
        ("head@{1}~1".into(), Want::Id(s1)),
        ("@{1}".into(), Want::Id(s2)),
        ("head@{3}".into(), Want::Unknown),
        ("head@{x}".into(), Want::Unknown),
        ("head@{}".into(), Want::Unknown),
        ("head@1".into(), Want::Unknown),
        ("head~1@{1}".into(), Want::Unknown),
        (format!("{}@{{1}}", s3.to_hex()), Want::Unknown),
        ("sessions/s001@{0}".into(), Want::Id(s2)),
        ("sessions/s001@{1}".into(), Want::Id(s1)),
        ("s001@{1}".into(), Want::Id(s1)),
        ("sessions/s001@{2}".into(), Want::Unknown),
        // Full ids, any case, with `~N`.
        (s1.to_hex(), Want::Id(s1)),
        (s2.to_hex().to_uppercase(), Want::Id(s2)),
        (format!("{}~1", s3.to_hex()), Want::Id(s2)),
        ("0".repeat(64), Want::Unknown),
        // Only snapshots are revisions: a tree's id or prefix is not one.
        (root.to_hex(), Want::Unknown),
        (root.to_hex()[..12].to_owned(), Want::Unknown),
        // Abbreviations: at least 4 hex characters naming one snapshot.
        (p3.clone(), Want::Id(s3)),
        (p3.to_uppercase(), Want::Id(s3)),
        (format!("{p3}~2"), Want::Id(s1)),
        (s3.to_hex()[..3].to_owned(), Want::Unknown),
        (none.clone(), Want::Unknown),
        (format!("{none}~1"), Want::Unknown),
        (s3.to_hex()[..63].to_owned(), Want::Id(s3)),
        (format!("{}0", s3.to_hex()), Want::Unknown),
        // Session refs move only when their session changed: s001 in s2, s002 in s1.
        ("sessions/s001".into(), Want::Id(s2)),
        ("sessions/s001~1".into(), Want::Id(s1)),
        ("sessions/s002".into(), Want::Id(s1)),
        ("sessions/s002~".into(), Want::Unknown),
        ("sessions/nope".into(), Want::Unknown),
        // A session id, or a unique prefix of one, names its ref; a shared prefix is ambiguous.
        ("s001".into(), Want::Id(s2)),
        ("s001~1".into(), Want::Id(s1)),
        ("s002".into(), Want::Id(s1)),
        ("s00".into(), Want::Ambiguous),
        ("s0011".into(), Want::Unknown),
        ("sessions/".into(), Want::Unknown),
        // Not ref names at all.
        ("../head".into(), Want::Unknown),
        ("head.lock".into(), Want::Unknown),
        ("has space".into(), Want::Unknown),
        ("head\n".into(), Want::Unknown),
        // A device name names its remote-tracking head: A's push recorded origin's laptop/head.
        ("laptop".into(), Want::Id(s3)),
        ("laptop~1".into(), Want::Id(s2)),
        ("nobody".into(), Want::Unknown),
    ];
    for (rev, want) in &table {
        check(&w.a, &st, rev, want);
    }

    // Device names: B knows A's head as a remote-tracking ref, with or without `remotes/`.
    let stb = open(&w.b);
    let table: Vec<(&str, Want)> = vec![
        ("remotes/origin/laptop/head", Want::Id(s3)),
        ("origin/laptop/head", Want::Id(s3)),
        ("origin/laptop/head~2", Want::Id(s1)),
        ("origin/laptop/sessions/s001", Want::Id(s2)),
        ("remotes/origin/laptop/sessions/s002", Want::Id(s1)),
        ("origin/laptop", Want::Unknown),
        // A device name, as fetched by the pull.
        ("laptop", Want::Id(s3)),
        ("laptop^", Want::Id(s2)),
        ("laptop~2", Want::Id(s1)),
        ("laptop/head", Want::Unknown),
        ("origin/desk/head", Want::Unknown),
        ("origin/nobody/head", Want::Unknown),
        ("elsewhere/laptop/head", Want::Unknown),
        // B pulled without restoring and saved nothing: it has no head of its own.
        ("head", Want::Unknown),
        ("desk", Want::Unknown),
    ];
    for (rev, want) in &table {
        check(&w.b, &stb, rev, want);
    }

    // A device on two remotes: its name is ambiguous, and the error lists both refs.
    let second = tempfile::tempdir().expect("tempdir");
    let url = second.path().join("r");
    w.a.ok(&[
        "remote",
        "add",
        "backup",
        url.to_str().expect("utf-8"),
        "--init",
    ]);
    w.a.ok(&["sync", "push", "backup"]);
    check(&w.a, &st, "laptop", &Want::Ambiguous);
    check(&w.a, &st, "origin/laptop/head", &Want::Id(s3));
    match st.resolve("laptop") {
        Err(Error::AmbiguousPrefix { candidates, .. }) => {
            let names: Vec<(&str, &str)> = candidates
                .iter()
                .map(|c| (c.kind, c.name.as_str()))
                .collect();
            assert_eq!(
                names,
                [
                    ("device", "remotes/backup/laptop/head"),
                    ("device", "remotes/origin/laptop/head")
                ]
            );
        }
        other => panic!("laptop: {other:?}"),
    }
    let err = w.a.run(&["log", "laptop"]);
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(
        stderr.contains(&format!(
            "device   remotes/backup/laptop/head -> {}",
            s3.short(12)
        )) && stderr.contains("three"),
        "{stderr}"
    );
}

/// Issue #12: a string that is a snapshot id prefix and a session id prefix at once is
/// ambiguous, and the error lists both with their kind, short id, time and message.
#[test]
fn a_name_of_two_kinds_is_ambiguous_and_lists_both() {
    let w = world();
    let st = open(&w.a);
    let all = [w.s1, w.s2, w.s3];
    let p = unique_prefix(&w.s1, &all);
    let session = format!("{p}zz");
    std::fs::create_dir_all(w.a.state().join("sessions").join(&session)).expect("mkdir");
    std::fs::write(
        w.a.state().join(format!("sessions/{session}/session.json")),
        "{\"id\":\"x\"}",
    )
    .expect("write");
    let s4 = id(&w.a.save("four"));
    // The new snapshot's id could share the prefix too (1 in 65536): then it is one more
    // candidate, and the test still holds for the two it checks.
    let got = st.resolve(&p);
    let Err(Error::AmbiguousPrefix { prefix, candidates }) = &got else {
        panic!("{p}: {got:?}");
    };
    assert_eq!(prefix, &p);
    let snap = candidates
        .iter()
        .find(|c| c.kind == "snapshot" && c.snapshot == w.s1)
        .expect("s1 listed");
    assert_eq!(snap.message, "one");
    let sess = candidates
        .iter()
        .find(|c| c.kind == "session")
        .expect("the session listed");
    assert_eq!(
        (sess.name.as_str(), sess.snapshot, sess.message.as_str()),
        (format!("sessions/{session}").as_str(), s4, "four")
    );
    check(&w.a, &st, &p, &Want::Ambiguous);
    let o = w.a.run(&["show", &p]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    for line in [
        format!("ambiguous revision '{p}': it matches"),
        format!("\n  snapshot {}  ", w.s1.short(12)),
        format!("\n  session  sessions/{session} -> {}  ", s4.short(12)),
    ] {
        assert!(stderr.contains(&line), "{line:?} in {stderr}");
    }
    assert!(
        stderr.contains("  one\n") && stderr.contains("  four\n"),
        "{stderr}"
    );
    // The full names are not ambiguous.
    for (rev, want) in [
        (session.clone(), Want::Id(s4)),
        (format!("sessions/{session}"), Want::Id(s4)),
        (w.s1.to_hex(), Want::Id(w.s1)),
    ] {
        check(&w.a, &st, &rev, &want);
    }
}

/// Issue #12: a snapshot with two parents (a sync merge) is walked with `^2`; `~N^2` combines.
#[test]
fn the_second_parent_of_a_merge() {
    let sb = Sandbox::in_memory();
    sb.generate();
    let base = id(&sb.save("base"));
    let st = open(&sb);
    let snap = st.objects().read_snapshot(&base).expect("base");
    let mut side = snap.clone();
    side.parents = vec![base];
    side.message = "side".into();
    let mut merge = snap.clone();
    let batch = st.objects().batch().expect("batch");
    let side = batch.put(&Object::Snapshot(side)).expect("put");
    merge.parents = vec![base, side];
    merge.message = "merge".into();
    let merge = batch.put(&Object::Snapshot(merge)).expect("put");
    let mut top = snap;
    top.parents = vec![merge];
    top.message = "top".into();
    let top = batch.put(&Object::Snapshot(top)).expect("put");
    batch.commit().expect("commit");
    let t = top.to_hex();
    for (rev, want) in [
        (format!("{t}^2"), Want::Unknown),
        (format!("{t}~1"), Want::Id(merge)),
        (format!("{t}~1^1"), Want::Id(base)),
        (format!("{t}~1^2"), Want::Id(side)),
        (format!("{t}^^2"), Want::Id(side)),
        (format!("{t}~1^2~1"), Want::Id(base)),
        (format!("{t}~1^3"), Want::Unknown),
        (format!("{t}~1^2^2"), Want::Unknown),
    ] {
        check(&sb, &st, &rev, &want);
    }
    let o = sb.run(&["show", &format!("{t}~1^3")]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "unknown revision '{t}~1^3': {t}~1 ({}) has 2 parents",
            merge.short(12)
        )),
        "{stderr}"
    );
}

/// Two snapshots whose ids share their first 4 hex characters (found by hashing candidates,
/// then stored): the shared prefix is ambiguous, a longer one is not.
#[test]
fn an_abbreviation_two_snapshots_share_is_ambiguous() {
    let sb = Sandbox::in_memory();
    sb.generate();
    let head = id(&sb.save("base"));
    let st = open(&sb);
    let base = st.objects().read_snapshot(&head).expect("head");
    let mut by_prefix: std::collections::HashMap<String, objects_format::Snapshot> =
        std::collections::HashMap::new();
    // Two of n random ids share 16 bits after about 320 tries; 100 000 is a bound, not a hope.
    let (one, two) = (0..100_000u32)
        .find_map(|i| {
            let mut s = base.clone();
            s.parents = vec![head];
            s.message = format!("twin {i}");
            let (id, _) =
                objects_format::encode_with_id(&Object::Snapshot(s.clone())).expect("encode");
            let p = id.to_hex()[..4].to_owned();
            if p == head.to_hex()[..4] {
                return None; // a third snapshot with that prefix would make the count 3
            }
            match by_prefix.insert(p, s.clone()) {
                Some(other) if other.message != s.message => Some((other, s)),
                _ => None,
            }
        })
        .expect("a shared 4-character prefix");
    let batch = st.objects().batch().expect("batch");
    let one = batch.put(&Object::Snapshot(one)).expect("put");
    let two = batch.put(&Object::Snapshot(two)).expect("put");
    batch.commit().expect("commit");
    let shared = one.to_hex()[..4].to_owned();
    assert_eq!(&two.to_hex()[..4], shared);
    let all = [head, one, two];
    let table: Vec<(String, Want)> = vec![
        (shared.clone(), Want::Ambiguous),
        (shared.to_uppercase(), Want::Ambiguous),
        (format!("{shared}~1"), Want::Ambiguous),
        (unique_prefix(&one, &all), Want::Id(one)),
        (unique_prefix(&two, &all), Want::Id(two)),
        (format!("{}~1", unique_prefix(&two, &all)), Want::Id(head)),
        // A full id is never ambiguous.
        (one.to_hex(), Want::Id(one)),
    ];
    for (rev, want) in &table {
        check(&sb, &st, rev, want);
    }
    match st.resolve(&shared) {
        Err(Error::AmbiguousPrefix { prefix, candidates }) => {
            assert_eq!(prefix, shared);
            let mut ids: Vec<ObjectId> = candidates.iter().map(|c| c.snapshot).collect();
            ids.sort();
            let mut want = vec![one, two];
            want.sort();
            assert_eq!(ids, want);
            assert!(candidates.iter().all(|c| c.kind == "snapshot"));
        }
        other => panic!("{shared}: {other:?}"),
    }
}

/// Issue #12: `log --help` and `show --help` end with examples of revisions (clap's long help);
/// `-h` stays short.
#[test]
fn long_help_shows_revision_examples() {
    let sb = Sandbox::in_memory();
    for cmd in ["log", "show"] {
        let long = sb.ok(&[cmd, "--help"]);
        for line in [
            "EXAMPLES:\n",
            "REVISIONS:\n",
            "REVISIONS:\n  head ",
            "\n  head^2 ",
            "\n  head@{1} ",
            "\n  laptop ",
            "\n  s001 ",
        ] {
            assert!(long.contains(line), "{cmd} --help lacks {line:?}:\n{long}");
        }
        assert!(long.contains(&format!("  shelldone {cmd} ")), "{long}");
        let short = sb.ok(&[cmd, "-h"]);
        assert!(!short.contains("EXAMPLES:"), "{cmd} -h:\n{short}");
    }
    assert!(sb.ok(&["log", "--help"]).contains("--oneline"));
}

/// Issue #12: `log --session ID` exits 2 for a session that no snapshot from the start
/// revision holds and that is not live; a live session never saved lists nothing (exit 0);
/// a session deleted since keeps its history.
#[test]
fn log_session_unknown_exits_2() {
    let w = world();
    let a = &w.a;
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--json", "log"];
        all.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&a.ok(&all)).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids(&["--session", "s001"]), [w.s2.to_hex(), w.s1.to_hex()]);
    assert_eq!(ids(&["--session", "s001", &w.s1.to_hex()]), [w.s1.to_hex()]);
    let o = a.run(&["log", "--session", "nope"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("error: no session 'nope' in the history of head or the live state"),
        "{o:?}"
    );
    // Live, never saved: nothing to list, and not an error.
    let fresh = a.state().join("sessions/fresh");
    std::fs::create_dir_all(&fresh).expect("mkdir");
    std::fs::write(fresh.join("session.json"), "{\"id\":\"fresh\"}").expect("write");
    assert!(ids(&["--session", "fresh"]).is_empty());
    // Saved, then gone from the live state: known from its own ref, unknown from s3.
    let s4 = a.save("fresh");
    std::fs::remove_dir_all(&fresh).expect("rm");
    assert_eq!(ids(&["--session", "fresh"]), std::slice::from_ref(&s4));
    let o = a.run(&["log", "--session", "fresh", &w.s3.to_hex()]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // Deleted by a save: from head, the deletion and the save before it are listed.
    let s5 = a.save("gone");
    assert_eq!(ids(&["--session", "fresh", "head"]), [s5, s4]);
}
