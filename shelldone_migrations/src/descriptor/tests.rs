use super::*;
use proptest::prelude::*;

fn up(session: &str, s: &str) -> String {
    String::from_utf8(
        upgrade(session, s.as_bytes())
            .expect("upgrades")
            .into_owned(),
    )
    .expect("utf8")
}

fn value(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("json")
}

/// Every pane's `id`, in order.
fn ids(s: &str) -> Vec<String> {
    let v = value(s);
    let mut out = Vec::new();
    for t in v["tabs"].as_array().into_iter().flatten() {
        for p in t["panes"].as_array().into_iter().flatten() {
            out.push(p["id"].as_str().expect("id").to_owned());
        }
    }
    out
}

#[test]
fn pane_ids_are_pinned() {
    // Two devices that migrate the same descriptor at different times (different binaries)
    // must give the same ids: this is part of the frozen step.
    assert_eq!(pane_id("s001", 0, 0), PINNED_S001_0_0);
    assert_ne!(pane_id("s001", 0, 1), pane_id("s001", 1, 0));
    assert_ne!(pane_id("s001", 0, 0), pane_id("s002", 0, 0));
    // The lengths are part of the input: ("ab", …) is not ("a", …) with another tail.
    assert_ne!(pane_id("s0010", 0, 0), pane_id("s001", 0, 0));
    assert_eq!(pane_id("s001", 0, 0).len(), 17);
}

const PINNED_S001_0_0: &str = "p23f232274f84a6e5";

#[test]
fn a_demo_descriptor_upgrades_to_the_expected_bytes() {
    let v1 = "{\"schema\":1,\"id\":\"s001\",\"version\":1,\"tabs\":[{\"title\":\"tab 0\",\"cwd\":\"/home/user/p41\",\"panes\":[{\"cmd\":\"vim notes.md\",\"rows\":70,\"cols\":195},{\"cmd\":\"bash\",\"rows\":10,\"cols\":80}]}],\"active_tab\":0}\n";
    let got = up("s001", v1);
    let want = format!(
        "{{\"schema_version\":2,\"id\":\"s001\",\"version\":1,\"tabs\":[{{\"title\":\"tab 0\",\"cwd\":\"/home/user/p41\",\"panes\":[{{\"cmd\":\"vim notes.md\",\"rows\":70,\"cols\":195,\"id\":\"{}\",\"restore\":{{\"kind\":\"command\",\"argv\":[\"vim\",\"notes.md\"],\"cwd\":\"/home/user/p41\"}}}},{{\"cmd\":\"bash\",\"rows\":10,\"cols\":80,\"id\":\"{}\",\"restore\":{{\"kind\":\"shell\",\"cwd\":\"/home/user/p41\"}}}}]}}],\"active_tab\":0}}\n",
        pane_id("s001", 0, 0),
        pane_id("s001", 0, 1)
    );
    assert_eq!(got, want);
    assert_eq!(version_of(got.as_bytes()), Ok(V2));
    assert_eq!(version_of(v1.as_bytes()), Ok(V1));
}

#[test]
fn a_version_2_descriptor_is_returned_as_it_is() {
    let v1 = "{\"tabs\":[{\"panes\":[{\"cmd\":\"top\"}]}]}";
    let v2 = up("s", v1);
    assert!(matches!(
        upgrade("s", v2.as_bytes()),
        Ok(Cow::Borrowed(b)) if b == v2.as_bytes()
    ));
    // Whatever session it is given: ids already there are kept.
    assert!(matches!(
        upgrade("other", v2.as_bytes()),
        Ok(Cow::Borrowed(_))
    ));
    // A version 2 the terminal wrote itself, with its own ids and layout, is left alone.
    let own = "{ \"schema_version\": 2, \"tabs\": [ { \"panes\": [ { \"id\": \"x\", \"restore\": {\"kind\": \"shell\"} } ] } ] }";
    assert!(matches!(upgrade("s", own.as_bytes()), Ok(Cow::Borrowed(_))));
}

#[test]
fn no_schema_key_is_version_1_and_schema_version_goes_first() {
    assert_eq!(up("s1", "{}"), "{\"schema_version\":2}");
    assert_eq!(
        up("s1", "{\"id\":\"s1\"}\n"),
        "{\"schema_version\":2,\"id\":\"s1\"}\n"
    );
    // `schema` is replaced in its place.
    assert_eq!(
        up("s1", "{\"a\":1,\"schema\":1,\"b\":2}"),
        "{\"a\":1,\"schema_version\":2,\"b\":2}"
    );
}

#[test]
fn unknown_keys_stay_in_their_places_at_every_level() {
    let v1 = r#"{"zeta":{"q":[1,2.5,"x",null,true]},"schema":1,"alpha":"keep","tabs":[{"panes":[{"zz":1,"cmd":"htop","aa":{"deep":[{}]}}],"title":"t","extra":false},7,"not a tab"],"tail":-3}"#;
    let got = up("s", v1);
    let want = format!(
        r#"{{"zeta":{{"q":[1,2.5,"x",null,true]}},"schema_version":2,"alpha":"keep","tabs":[{{"panes":[{{"zz":1,"cmd":"htop","aa":{{"deep":[{{}}]}},"id":"{}","restore":{{"kind":"command","argv":["htop"]}}}}],"title":"t","extra":false}},7,"not a tab"],"tail":-3}}"#,
        pane_id("s", 0, 0)
    );
    assert_eq!(got, want);
}

#[test]
fn restore_blocks_say_how_to_resume_the_pane() {
    let restore = |pane: &str, tab_cwd: Option<&str>| -> serde_json::Value {
        let tab = match tab_cwd {
            Some(c) => format!("{{\"cwd\":\"{c}\",\"panes\":[{pane}]}}"),
            None => format!("{{\"panes\":[{pane}]}}"),
        };
        let out = up("s", &format!("{{\"tabs\":[{tab}]}}"));
        value(&out)["tabs"][0]["panes"][0]["restore"].clone()
    };
    let shell = serde_json::json!({"kind": "shell", "cwd": "/w"});
    for p in [
        "{}",
        "{\"cmd\":\"\"}",
        "{\"cmd\":\"  \"}",
        "{\"cmd\":null}",
        "{\"cmd\":42}",
        "{\"cmd\":\"bash\"}",
        "{\"cmd\":\"/bin/zsh\"}",
        "{\"cmd\":\"-fish\"}",
        "{\"cmd\":[\"nu\"]}",
        "{\"cmd\":[]}",
        "{\"cmd\":[\"vim\", 3]}",
    ] {
        assert_eq!(restore(p, Some("/w")), shell, "{p}");
    }
    assert_eq!(
        restore("{\"cmd\":\"ssh -p 2222 me@host.example\"}", Some("/w")),
        serde_json::json!({"kind": "command", "argv": ["ssh", "-p", "2222", "me@host.example"], "cwd": "/w"})
    );
    // Anything a shell would read differently from plain words runs through `sh -c`.
    let tricky = "git log | less \"$X\"";
    assert_eq!(
        restore(&format!("{{\"cmd\":{}}}", serde_json::json!(tricky)), None),
        serde_json::json!({"kind": "command", "argv": ["sh", "-c", tricky]})
    );
    assert_eq!(
        restore("{\"cmd\":[\"vim\",\"a b.txt\"]}", None),
        serde_json::json!({"kind": "command", "argv": ["vim", "a b.txt"]})
    );
    assert_eq!(
        restore("{\"cmd\":\"bash -l\"}", None),
        serde_json::json!({"kind": "command", "argv": ["bash", "-l"]})
    );
    // A pane's own cwd wins over its tab's.
    assert_eq!(
        restore("{\"cmd\":\"make\",\"cwd\":\"/p\"}", Some("/w")),
        serde_json::json!({"kind": "command", "argv": ["make"], "cwd": "/p"})
    );
}

#[test]
fn newer_and_malformed_versions_are_refused_and_name_both_versions() {
    for newer in [
        "{\"schema_version\":3,\"tabs\":[]}",
        "{\"schema\":7}",
        "{\"schema\":1,\"schema_version\":9}",
    ] {
        let err = upgrade("s", newer.as_bytes()).expect_err(newer);
        assert!(
            matches!(err, DescriptorError::Newer { supported: 2, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        let found = version_of(newer.as_bytes()).expect("version");
        assert!(msg.contains(&format!("version {found} is newer")), "{msg}");
        assert!(msg.contains("versions 1 to 2"), "{msg}");
        assert_eq!(readable_version(newer.as_bytes()), Err(err));
    }
    for bad in [
        "{\"schema_version\":0}",
        "{\"schema_version\":\"2\"}",
        "{\"schema_version\":2.5}",
        "{\"schema\":-1}",
    ] {
        assert!(
            matches!(
                upgrade("s", bad.as_bytes()),
                Err(DescriptorError::BadVersion { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(
        upgrade("s", b"[1,2]").expect_err("array"),
        DescriptorError::NotObject
    );
    assert!(matches!(
        upgrade("s", b"{\"tabs\":"),
        Err(DescriptorError::NotJson(_))
    ));
    assert!(matches!(
        upgrade("s", b"{\"a\":\"\xff\"}"),
        Err(DescriptorError::NotJson(_))
    ));
}

#[test]
fn the_layout_of_the_file_is_kept() {
    let pretty = "{\n    \"schema\": 1,\n    \"tabs\": [\n        {\n            \"panes\": [\n                {\n                    \"cmd\": \"top\"\n                }\n            ]\n        }\n    ]\n}\n";
    let got = up("s", pretty);
    assert!(
        got.starts_with("{\n    \"schema_version\": 2,\n    \"tabs\": [\n"),
        "{got}"
    );
    assert!(got.ends_with("}\n"));
    let crlf = pretty.replace('\n', "\r\n");
    let got = up("s", &crlf);
    assert_eq!(got, up("s", pretty).replace('\n', "\r\n"));
    assert_eq!(
        up("s", "{}"),
        "{\"schema_version\":2}",
        "no final line break added"
    );
}

#[test]
fn half_upgraded_descriptors_are_completed_and_ids_are_unique() {
    // What a merge by a version-1 binary can leave: version 2, a pane without id or restore.
    let mixed = r#"{"schema_version":2,"tabs":[{"panes":[{"cmd":"a","id":"keep","restore":{"kind":"shell"}},{"cmd":"b"}]}]}"#;
    let got = up("s", mixed);
    assert_eq!(ids(&got), vec!["keep".to_owned(), pane_id("s", 0, 1)]);
    assert_eq!(
        value(&got)["tabs"][0]["panes"][1]["restore"],
        serde_json::json!({"kind": "command", "argv": ["b"]})
    );
    // Repeated, empty or non-string ids are replaced; the first of a repeated id keeps it.
    let dup = r#"{"tabs":[{"panes":[{"id":"x"},{"id":"x"},{"id":""},{"id":5}]},{"panes":[{}]}]}"#;
    let got = up("s", dup);
    assert_eq!(
        ids(&got),
        vec![
            "x".to_owned(),
            pane_id("s", 0, 1),
            pane_id("s", 0, 2),
            pane_id("s", 0, 3),
            pane_id("s", 1, 0)
        ]
    );
    // A pane that already carries the id another pane would get: the later one gets a suffix.
    let taken = format!(
        r#"{{"tabs":[{{"panes":[{{}},{{"id":"{}"}}]}}]}}"#,
        pane_id("s", 0, 0)
    );
    let got = up("s", &taken);
    assert_eq!(
        ids(&got),
        vec![format!("{}-1", pane_id("s", 0, 0)), pane_id("s", 0, 0)]
    );
}

#[test]
fn a_version_1_reader_reads_version_2_as_the_same_tabs_and_panes() {
    let v1 = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/store-v1/state/sessions/s002/session.json"),
    )
    .expect("fixture");
    let old = v1::read(&v1).expect("v1 reads v1");
    assert_eq!(old.tabs.len(), 4);
    let v2 = upgrade("s002", &v1).expect("upgrade").into_owned();
    assert_eq!(
        v1::read(&v2).expect("v1 reads v2"),
        Descriptor {
            schema: None,
            ..old
        }
    );
}

use v1::Descriptor;

#[test]
fn session_ids_come_from_the_path() {
    for (p, want) in [
        ("state/sessions/s001/session.json", Some("s001")),
        ("sessions/s001/session.json", Some("s001")),
        ("state/sessions/s1.json", Some("s1")),
        ("state/sessions/a.b.json", Some("a")),
        ("state/sessions/.h.json", Some(".h")),
        ("state/sessions/s1/deep/x.json", None),
        ("state/sessions/s1/scrollback.bin", None),
        ("state/journal/x.json", None),
        ("config/keymap.json", None),
    ] {
        assert_eq!(session_of_path(p), want, "{p}");
    }
}

// ---- live descriptors ----

fn write(root: &Path, rel: &str, s: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

/// Every file under `root`, with its bytes.
fn files(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

const V1_DEMO: &str = "{\"schema\":1,\"id\":\"s001\",\"version\":3,\"tabs\":[{\"title\":\"tab 0\",\"cwd\":\"/w\",\"panes\":[{\"cmd\":\"top\",\"rows\":20,\"cols\":80}]}],\"active_tab\":0}\n";

fn live_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(r, "sessions/s001/session.json", V1_DEMO);
    write(r, "sessions/s001/scrollback.bin", "\x1b[0mbytes");
    write(
        r,
        "sessions/s002.json",
        "{\"id\":\"s002\",\"tabs\":[{\"panes\":[{}]}]}",
    );
    write(r, "sessions/s003/session.json", &up("s003", V1_DEMO));
    write(r, "sessions/s004/session.json", "{\"schema_version\":3}");
    write(r, "sessions/s005/session.json", "{\"torn\":");
    write(r, "sessions/s006/deep/x.json", "{}");
    write(r, "journal/0000.jsonl", "{}\n");
    std::os::unix::fs::symlink("../s001/session.json", r.join("sessions/s006/link.json")).unwrap();
    d
}

#[test]
fn live_descriptors_are_upgraded_in_place_and_a_dry_run_writes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let d = live_dir();
    let r = d.path();
    std::fs::set_permissions(
        r.join("sessions/s001/session.json"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let before = files(r);

    let dry = migrate_live_descriptors(r, true).unwrap();
    assert_eq!(files(r), before, "a dry run writes nothing");
    assert!(dry.dry_run);
    let paths = |v: &[DescriptorChange]| v.iter().map(|c| c.path.clone()).collect::<Vec<_>>();
    assert_eq!(
        paths(&dry.upgraded),
        vec!["sessions/s001/session.json", "sessions/s002.json"]
    );
    assert_eq!(dry.current, 1);
    let skipped: Vec<_> = dry.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        skipped,
        vec![
            "sessions/s004/session.json",
            "sessions/s005/session.json",
            "sessions/s006/link.json"
        ]
    );
    assert!(
        dry.skipped[0].why.contains("version 3 is newer"),
        "{:?}",
        dry.skipped
    );
    assert!(
        dry.skipped[1].why.starts_with("not valid JSON"),
        "{:?}",
        dry.skipped
    );

    let done = migrate_live_descriptors(r, false).unwrap();
    assert_eq!(
        DescriptorReport {
            dry_run: true,
            ..done.clone()
        },
        dry,
        "the dry run said what the run does"
    );
    let after = files(r);
    assert_eq!(
        after["sessions/s001/session.json"],
        up("s001", V1_DEMO).into_bytes()
    );
    assert_eq!(
        after["sessions/s002.json"],
        up("s002", "{\"id\":\"s002\",\"tabs\":[{\"panes\":[{}]}]}").into_bytes()
    );
    // Nothing else changed; no temp file left.
    for (p, b) in &before {
        if !p.ends_with("s001/session.json") && !p.ends_with("s002.json") {
            assert_eq!(&after[p], b, "{p}");
        }
    }
    assert_eq!(after.len(), before.len(), "{:?}", after.keys());
    let mode = std::fs::metadata(r.join("sessions/s001/session.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "permissions kept");

    // Again: nothing to do, same bytes.
    let again = migrate_live_descriptors(r, false).unwrap();
    assert!(again.upgraded.is_empty());
    assert_eq!(again.current, 3);
    assert_eq!(files(r), after);
}

#[test]
fn a_run_killed_after_writing_its_temp_file_is_finished_by_the_next() {
    let d = live_dir();
    let r = d.path();
    // What a run killed before its rename leaves: a temp file beside an untouched descriptor.
    let tmp = r.join(format!("sessions/s001/{TMP}session.json.99999"));
    std::fs::write(&tmp, "{\"half\":").unwrap();
    let dry = migrate_live_descriptors(r, true).unwrap();
    assert!(tmp.exists(), "a dry run removes nothing");
    assert_eq!(dry.upgraded.len(), 2);
    migrate_live_descriptors(r, false).unwrap();
    assert!(!tmp.exists());
    let clean = live_dir();
    migrate_live_descriptors(clean.path(), false).unwrap();
    assert_eq!(
        files(r),
        files(clean.path()),
        "same result as an uninterrupted run"
    );
}

#[test]
fn a_state_dir_without_sessions_has_nothing_to_upgrade() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(
        migrate_live_descriptors(d.path(), false).unwrap(),
        DescriptorReport::default()
    );
}

#[test]
fn a_descriptor_the_terminal_rewrites_meanwhile_is_left_to_the_terminal() {
    let d = live_dir();
    let p = d.path().join("sessions/s001/session.json");
    let before = std::fs::symlink_metadata(&p).unwrap();
    std::fs::write(&p, "{\"schema\":1,\"tabs\":[],\"new\":\"by the terminal\"}").unwrap();
    assert!(!replace_file(&p, b"{}", &before).unwrap());
    assert!(
        std::fs::read_to_string(&p)
            .unwrap()
            .contains("by the terminal")
    );
    assert_eq!(files(p.parent().unwrap()).len(), 2, "temp file removed");
}

// ---- properties ----

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("bash".to_owned()),
        Just("/usr/bin/zsh".to_owned()),
        "[a-z]{1,6}( [a-z./-]{1,6}){0,3}",
        "[ -~]{0,12}",
        "\\PC{0,8}",
    ]
}

fn extra() -> impl Strategy<Value = Vec<(String, serde_json::Value)>> {
    proptest::collection::vec(
        (
            "x[a-z]{0,4}",
            prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                "\\PC{0,6}".prop_map(serde_json::Value::from),
                Just(serde_json::json!({"n": [1, {"m": null}]})),
            ],
        ),
        0..3,
    )
}

fn pane() -> impl Strategy<Value = serde_json::Value> {
    (
        proptest::option::of(word()),
        proptest::option::of(0u32..300),
        proptest::option::of("/[a-z]{1,5}"),
        extra(),
        proptest::option::of(prop_oneof![
            Just(serde_json::json!("fixed")),
            Just(serde_json::json!(3))
        ]),
    )
        .prop_map(|(cmd, rows, cwd, extra, id)| {
            let mut m = serde_json::Map::new();
            if let Some(c) = cmd {
                m.insert("cmd".into(), c.into());
            }
            if let Some(r) = rows {
                m.insert("rows".into(), r.into());
            }
            if let Some(c) = cwd {
                m.insert("cwd".into(), c.into());
            }
            if let Some(i) = id {
                m.insert("id".into(), i);
            }
            m.extend(extra);
            serde_json::Value::Object(m)
        })
}

fn descriptor_v1() -> impl Strategy<Value = String> {
    let tab = (
        proptest::option::of("[a-z ]{0,8}"),
        proptest::option::of("/[a-z]{1,5}"),
        proptest::collection::vec(pane(), 0..4),
        extra(),
    )
        .prop_map(|(title, cwd, panes, extra)| {
            let mut m = serde_json::Map::new();
            if let Some(t) = title {
                m.insert("title".into(), t.into());
            }
            if let Some(c) = cwd {
                m.insert("cwd".into(), c.into());
            }
            m.insert("panes".into(), panes.into());
            m.extend(extra);
            serde_json::Value::Object(m)
        });
    (
        any::<bool>(),
        proptest::collection::vec(tab, 0..4),
        extra(),
        any::<bool>(),
    )
        .prop_map(|(schema, tabs, extra, pretty)| {
            let mut m = serde_json::Map::new();
            if schema {
                m.insert("schema".into(), 1.into());
            }
            m.insert("tabs".into(), tabs.into());
            m.extend(extra);
            let v = serde_json::Value::Object(m);
            if pretty {
                serde_json::to_string_pretty(&v).unwrap() + "\n"
            } else {
                v.to_string()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_step_is_deterministic_idempotent_and_gives_unique_ids(
        d in descriptor_v1(),
        session in "[a-z0-9]{1,6}",
    ) {
        let once = upgrade(&session, d.as_bytes()).unwrap().into_owned();
        // Deterministic: another device, the same bytes.
        prop_assert_eq!(&upgrade(&session, d.as_bytes()).unwrap().into_owned(), &once);
        // Idempotent: version 2 is returned as it is.
        let twice = upgrade(&session, &once).unwrap();
        prop_assert!(matches!(twice, Cow::Borrowed(_)));
        prop_assert_eq!(version_of(&once), Ok(V2));
        let text = String::from_utf8(once.clone()).unwrap();
        let all = ids(&text);
        let unique: HashSet<&String> = all.iter().collect();
        prop_assert_eq!(unique.len(), all.len(), "ids unique within a descriptor: {:?}", all);
        // Every pane can be resumed; nothing else changed in meaning.
        let (mut before, after) = (value(&d), value(&text));
        for (t, tab) in after["tabs"].as_array().unwrap().iter().enumerate() {
            for (p, pane) in tab["panes"].as_array().unwrap().iter().enumerate() {
                let kind = pane["restore"]["kind"].as_str().unwrap();
                prop_assert!(kind == "shell" || kind == "command");
                let b = before["tabs"][t]["panes"][p].as_object_mut().unwrap();
                b.insert("id".into(), pane["id"].clone());
                b.insert("restore".into(), pane["restore"].clone());
            }
        }
        let b = before.as_object_mut().unwrap();
        b.remove("schema");
        b.insert("schema_version".into(), 2.into());
        prop_assert_eq!(before, after);
        // The layout is kept: one line stays one line.
        prop_assert_eq!(text.trim().contains('\n'), d.trim().contains('\n'));
        prop_assert_eq!(text.ends_with('\n'), d.ends_with('\n'));
    }
}
