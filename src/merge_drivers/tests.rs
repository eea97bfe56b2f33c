//! The rules of docs/merge-rules.md, pinned per driver.

use super::*;
use proptest::prelude::*;

fn clean(m: FileMerge) -> String {
    match m {
        FileMerge::Clean(b) => String::from_utf8(b).expect("utf-8"),
        other => panic!("expected a clean merge, got {other:?}"),
    }
}

fn partial(m: FileMerge) -> (String, Vec<String>) {
    match m {
        FileMerge::Partial { bytes, conflicts } => {
            (String::from_utf8(bytes).expect("utf-8"), conflicts)
        }
        other => panic!("expected a partial merge, got {other:?}"),
    }
}

fn merge(path: &str, b: &str, l: &str, r: &str) -> FileMerge {
    merge_file(path, Some(b.as_bytes()), l.as_bytes(), r.as_bytes())
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| (*s).to_owned()).collect()
}

// --- journals (ported from src/sync.rs, `journals_merge_as_append_only_logs`) ---

#[test]
fn journals_merge_as_append_only_logs() {
    let base = b"a\nb\n".as_slice();
    let ours = [base, b"o1\n"].concat();
    let theirs = [base, b"t1\nt2\n"].concat();
    assert_eq!(merge_journal(&ours, &theirs), b"a\nb\no1\nt1\nt2\n");
    // One side only appended: the longer one, nothing doubled.
    assert_eq!(merge_journal(base, &theirs), theirs);
    assert_eq!(merge_journal(&ours, base), ours);
    // Diverging inside a line: the shared part ends at the last full line.
    assert_eq!(merge_journal(b"a\nbX\n", b"a\nbY\n"), b"a\nbX\nbY\n");
    assert_eq!(merge_journal(b"", b"x\n"), b"x\n");
    // The same through merge_file, by path.
    let p = "state/journal/0001.jsonl";
    assert_eq!(
        merge_file(p, Some(base), &ours, &theirs),
        FileMerge::Clean(b"a\nb\no1\nt1\nt2\n".to_vec())
    );
}

#[test]
fn journal_merge_of_a_merge_doubles_nothing() {
    // A merged B's b1 after its own a1; B then appended b2 on top of its first save.
    let base = b"base\nb1\n".as_slice();
    let left = b"base\na1\nb1\n".as_slice();
    let right = b"base\nb1\nb2\n".as_slice();
    assert_eq!(
        merge_journal3(Some(base), left, right),
        b"base\na1\nb1\nb2\n"
    );
    assert_eq!(
        merge_journal3(Some(base), right, left),
        b"base\nb1\nb2\na1\n"
    );
    // A line one side removed stays removed; identical lines keep their multiplicity.
    assert_eq!(
        merge_journal3(Some(b"x\ny\nx\n"), b"y\nx\n", b"x\ny\nx\nz\n"),
        b"y\nx\nz\n"
    );
    // Both extend the base: the usual append-only merge.
    assert_eq!(
        merge_journal3(Some(b"a\n"), b"a\nl\n", b"a\nr\n"),
        b"a\nl\nr\n"
    );
}

#[test]
fn journal_left_without_final_newline_does_not_fuse_lines() {
    assert_eq!(merge_journal(b"a\nx", b"a\ny\n"), b"a\nx\ny\n");
    // Left is a prefix of right: right completes the line, nothing added.
    assert_eq!(merge_journal(b"a\nb", b"a\nbc\n"), b"a\nbc\n");
}

// --- journal segments (issue #18): event by event ---

fn event(id: &str, time: &str) -> String {
    format!("{{\"v\":1,\"id\":\"{id}\",\"time\":\"2026-12-01T00:00:{time}Z\",\"kind\":\"k\"}}\n")
}

#[test]
fn journal_segments_merge_event_by_event_deduplicated_and_ordered() {
    let p = "state/journal/seg-20261201-000001.jsonl";
    let base = event("a", "01");
    // Both devices appended; B also holds A's first event (it came with an earlier merge).
    let left = [base.clone(), event("l1", "03"), event("l2", "05")].concat();
    let right = [
        base.clone(),
        event("r1", "02"),
        event("l1", "03"),
        event("r2", "06"),
    ]
    .concat();
    let want = [
        event("a", "01"),
        event("r1", "02"),
        event("l1", "03"),
        event("l2", "05"),
        event("r2", "06"),
    ]
    .concat();
    let m = merge_file(p, Some(base.as_bytes()), left.as_bytes(), right.as_bytes());
    assert_eq!(m, FileMerge::Clean(want.clone().into_bytes()));
    // Either device computes the same bytes, with or without a base.
    let m = merge_file(p, Some(base.as_bytes()), right.as_bytes(), left.as_bytes());
    assert_eq!(m, FileMerge::Clean(want.clone().into_bytes()));
    let m = merge_file(p, None, right.as_bytes(), left.as_bytes());
    assert_eq!(m, FileMerge::Clean(want.into_bytes()));
    // Merging the merge again doubles nothing.
    let once = merge_events(None, left.as_bytes(), right.as_bytes()).expect("events");
    assert_eq!(
        merge_events(Some(base.as_bytes()), &once, left.as_bytes()).expect("events"),
        once
    );
    // An event the base had and a side removed stays removed.
    let cut = event("l1", "03");
    assert_eq!(
        merge_events(Some(left.as_bytes()), cut.as_bytes(), left.as_bytes()).expect("events"),
        cut.as_bytes()
    );
}

#[test]
fn journal_files_that_are_not_all_events_keep_the_line_rule() {
    let p = "state/journal/0001.jsonl";
    // A demo line (no v, no id) on one side: the line rule, as before.
    let base = "{\"seq\":0}\n";
    let left = format!("{base}{}", event("l1", "03"));
    let right = format!("{base}{{\"seq\":1}}\n");
    assert_eq!(
        merge_file(p, Some(base.as_bytes()), left.as_bytes(), right.as_bytes()),
        FileMerge::Clean(format!("{left}{{\"seq\":1}}\n").into_bytes())
    );
    // A torn last line on a side: not all events either.
    let torn = format!("{}{{\"v\":1,\"id", event("a", "01"));
    assert!(events(torn.as_bytes()).is_none());
}

// --- text (diff3) ---

#[test]
fn text_disjoint_changes_merge_cleanly() {
    let b = "1\n2\n3\n4\n5\n6\n";
    let l = "1\nL2\n3\n4\n5\n6\n";
    let r = "1\n2\n3\n4\nR5\n6\nR7\n";
    assert_eq!(
        clean(merge("notes.txt", b, l, r)),
        "1\nL2\n3\n4\nR5\n6\nR7\n"
    );
    // The same change on both sides is no conflict.
    assert_eq!(clean(merge("notes.txt", b, l, l)), l);
    // Deleted on one side, untouched on the other: deleted.
    let r = "1\n2\n3\n5\n6\n";
    assert_eq!(clean(merge("notes.txt", b, l, r)), "1\nL2\n3\n5\n6\n");
}

#[test]
fn text_overlapping_changes_keep_left_and_name_the_lines() {
    let b = "a\nb\nc\nd\n";
    let l = "a\nB1\nB2\nc\nd\n";
    let r = "a\nX\nc\nD\n";
    let (m, c) = partial(merge("notes.txt", b, l, r));
    assert_eq!(m, "a\nB1\nB2\nc\nD\n");
    assert_eq!(c, ["lines 2-3"]);
    // Only the lines that differ between the sides are named.
    let (_, c) = partial(merge("x", "a\nb\nc\n", "a\nL\nc\n", "a\nR\nc\n"));
    assert_eq!(c, ["lines 2-2"]);
    let (_, c) = partial(merge("x", "k\nb\nc\n", "k\nsame\nL\n", "k\nsame\nR\n"));
    assert_eq!(c, ["lines 3-3"]);
    // Deleted on left, changed on right: the place is named.
    let (m, c) = partial(merge("x", "a\nb\nc\n", "a\nc\n", "a\nB\nc\n"));
    assert_eq!(m, "a\nc\n");
    assert_eq!(c, ["after line 1"]);
}

#[test]
fn text_without_base_conflicts_where_sides_differ() {
    let m = merge_file("x", None, b"same\nl\n", b"same\nr\n");
    let (m, c) = partial(m);
    assert_eq!(m, "same\nl\n");
    assert_eq!(c, ["lines 2-2"]);
}

#[test]
fn binary_and_non_utf8_files_are_conflicts() {
    let b = b"a\x00b".as_slice();
    assert_eq!(
        merge_file("x.bin", Some(b), b"a\x00c", b"a\x00d"),
        FileMerge::Conflict
    );
    assert_eq!(
        merge_file("x.txt", Some(b"a"), b"\xff\xfe", b"b"),
        FileMerge::Conflict
    );
    assert_eq!(
        merge_file("x.json", Some(b"{}"), b"{}\xff", b"{}"),
        FileMerge::Clean(b"{}\xff".to_vec())
    );
    // One side changed: that side, even for binary.
    assert_eq!(
        merge_file("x.bin", Some(b), b, b"\x01\x02"),
        FileMerge::Clean(b"\x01\x02".to_vec())
    );
    // A base that is not text is merged as if absent.
    assert_eq!(
        clean(merge_file("x.txt", Some(b"\xff"), b"a\n", b"a\n")),
        "a\n"
    );
}

// --- JSON ---

#[test]
fn json_crlf_files_stay_crlf() {
    let b = "{\r\n  \"a\": 1,\r\n  \"b\": 1\r\n}\r\n";
    let l = b.replace("\"a\": 1", "\"a\": 2");
    let r = b.replace("\"b\": 1", "\"b\": 3");
    assert_eq!(
        clean(merge("p.json", b, &l, &r)),
        "{\r\n  \"a\": 2,\r\n  \"b\": 3\r\n}\r\n"
    );
}

#[test]
fn json_merges_key_by_key_recursively() {
    let b = r#"{"font":{"family":"a","size":12},"theme":"x","keep":true}"#;
    let l = r#"{"font":{"family":"b","size":12},"theme":"x","keep":true}"#;
    let r = r#"{"font":{"family":"a","size":14},"theme":"y","keep":true,"new":[1,2]}"#;
    let m = clean(merge("config/prefs.json", b, l, r));
    assert_eq!(
        m,
        r#"{"font":{"family":"b","size":14},"theme":"y","keep":true,"new":[1,2]}"#
    );
}

#[test]
fn json_conflicts_are_dotted_key_paths_and_left_wins() {
    let b = r#"{"font":{"size":12},"a.b":1,"list":[1]}"#;
    let l = r#"{"font":{"size":13},"a.b":2,"list":[1,2]}"#;
    let r = r#"{"font":{"size":14},"a.b":3,"list":[0,1]}"#;
    let (m, c) = partial(merge("prefs.json", b, l, r));
    assert_eq!(m, l, "every item conflicted: left's bytes");
    assert_eq!(c, [r#"font.size"#, r#""a.b""#, "list"]);
}

#[test]
fn json_deletions() {
    let b = r#"{"a":1,"b":2,"c":3}"#;
    // Deleted on one side, unchanged on the other: deleted.
    let m = clean(merge(
        "p.json",
        b,
        r#"{"a":1,"c":3,"x":0}"#,
        r#"{"a":1,"b":2,"c":4}"#,
    ));
    assert_eq!(m, r#"{"a":1,"c":4,"x":0}"#);
    // Deleted on one side, changed on the other: a conflict, left's choice kept.
    let (m, c) = partial(merge(
        "p.json",
        b,
        r#"{"a":1,"c":3}"#,
        r#"{"a":1,"b":5,"c":3}"#,
    ));
    assert_eq!(m, r#"{"a":1,"c":3}"#);
    assert_eq!(c, ["b"]);
    let (m, c) = partial(merge(
        "p.json",
        b,
        r#"{"a":1,"b":5,"c":9}"#,
        r#"{"a":1,"c":3}"#,
    ));
    assert_eq!(m, r#"{"a":1,"b":5,"c":9}"#);
    assert_eq!(c, ["b"]);
}

#[test]
fn json_keeps_formatting_of_the_side_it_equals() {
    let b = "{\n    \"a\": 1,\n    \"b\": 2\n}\n";
    let l = "{\n    \"a\": 1,\n    \"b\": 3\n}\n";
    // Right only reformatted (and reordered): semantically unchanged, left's bytes.
    let r = "{\"b\":2,\"a\":1}";
    assert_eq!(clean(merge("p.json", b, l, r)), l);
    // Left only reformatted: right's bytes.
    let l2 = "{\"b\":2,   \"a\":1}";
    assert_eq!(clean(merge("p.json", b, l2, l)), l);
}

#[test]
fn json_pretty_prints_in_left_order_with_left_indent() {
    let b = "{\n\t\"z\": 1,\n\t\"a\": {\"x\": 1}\n}\n";
    let l = "{\n\t\"z\": 2,\n\t\"a\": {\"x\": 1}\n}\n";
    let r = "{\"n2\": true, \"a\": {\"x\": 1, \"y\": [1]}, \"z\": 1, \"n1\": null}";
    let m = clean(merge("p.json", b, l, r));
    assert_eq!(
        m,
        "{\n\t\"z\": 2,\n\t\"a\": {\n\t\t\"x\": 1,\n\t\t\"y\": [\n\t\t\t1\n\t\t]\n\t},\n\t\"n2\": true,\n\t\"n1\": null\n}\n"
    );
}

#[test]
fn json_unparsable_or_non_object_sides_are_conflicts() {
    let b = r#"{"a":1}"#;
    assert_eq!(
        merge("p.json", b, r#"{"a":2"#, r#"{"a":3}"#),
        FileMerge::Conflict
    );
    assert_eq!(
        merge("p.json", b, r#"{"a":2}"#, "not json"),
        FileMerge::Conflict
    );
    assert_eq!(merge("p.json", b, "[1]", r#"{"a":3}"#), FileMerge::Conflict);
    assert_eq!(merge("p.json", "[1]", "[2]", "[3]"), FileMerge::Conflict);
    // Top level not an object but only reformatted on one side: the other side.
    assert_eq!(clean(merge("p.json", "[1]", "[ 1 ]", "[2]")), "[2]");
}

// --- TOML ---

const TOML_BASE: &str = r#"# Shelldone config
title = "t"   # the window title

[font]
family = "Mono"
size = 12

[colors]
fg = "white"
bg = "black"
"#;

#[test]
fn toml_merges_key_by_key_and_keeps_left_comments() {
    let l = TOML_BASE.replace("family = \"Mono\"", "family = \"Fira\"  # changed here");
    let r = TOML_BASE
        .replace("title = \"t\"", "title = \"T\"")
        .replace("bg = \"black\"", "bg = \"navy\"");
    let m = clean(merge("config/shelldone.toml", TOML_BASE, &l, &r));
    assert_eq!(
        m,
        l.replace("title = \"t\"   #", "title = \"T\"   #")
            .replace("bg = \"black\"", "bg = \"navy\""),
        "right's values, left's comments and spacing"
    );
}

#[test]
fn toml_inserts_right_keys_and_tables_next_to_their_neighbours() {
    let l = TOML_BASE.replace("size = 12", "size = 13");
    let r = TOML_BASE
        .replace(
            "family = \"Mono\"\n",
            "family = \"Mono\"\n# line height\nheight = 1.2\n",
        )
        .replace("[colors]", "[cursor]\nshape = \"beam\"\n\n[colors]");
    let m = clean(merge("s.toml", TOML_BASE, &l, &r));
    assert_eq!(
        m,
        r#"# Shelldone config
title = "t"   # the window title

[font]
family = "Mono"
# line height
height = 1.2
size = 13

[cursor]
shape = "beam"

[colors]
fg = "white"
bg = "black"
"#
    );
}

#[test]
fn toml_keys_appended_on_both_sides_both_survive() {
    let b = "a = 1\nb = 2\n";
    let m = clean(merge(
        "s.toml",
        b,
        "a = 1\nb = 2\nc = 3\n",
        "a = 1\nb = 2\nd = 4\n",
    ));
    assert_eq!(m, "a = 1\nb = 2\nc = 3\nd = 4\n");
}

#[test]
fn toml_inline_tables_and_dotted_keys_merge_per_key() {
    let b = "font = { family = \"a\", size = 1 }\nwin.width = 80\nwin.height = 24\n";
    let l = "font = { family = \"b\", size = 1 }\nwin.width = 100\nwin.height = 24\n";
    let r = "font = { family = \"a\", size = 2, bold = true }\nwin.width = 80\nwin.height = 30\n";
    let m = clean(merge("s.toml", b, l, r));
    assert_eq!(
        m,
        "font = { family = \"b\", size = 2, bold = true }\nwin.width = 100\nwin.height = 30\n"
    );
    // A dotted-key table on left, a [table] on right: still the same keys.
    let r = "[win]\nwidth = 80\nheight = 24\nx = 5\n";
    let b2 = "win.width = 80\nwin.height = 24\n";
    let l2 = "win.width = 90\nwin.height = 24\n";
    let m = clean(merge("s.toml", b2, l2, r));
    let v: toml_edit::DocumentMut = m.parse().expect("valid toml");
    assert_eq!(v["win"]["width"].as_integer(), Some(90));
    assert_eq!(v["win"]["x"].as_integer(), Some(5));
    assert!(
        m.starts_with("win.width = 90\n"),
        "left's dotted form kept: {m}"
    );
}

#[test]
fn toml_conflicts_and_deletions() {
    let l = TOML_BASE
        .replace("size = 12\n", "size = 13\n")
        .replace("bg = \"black\"\n", "");
    let r = TOML_BASE
        .replace("size = 12\n", "size = 14\n")
        .replace("fg = \"white\"\n", "")
        .replace("title = \"t\"", "title = \"u\"");
    let (m, c) = partial(merge("s.toml", TOML_BASE, &l, &r));
    assert_eq!(c, ["font.size"]);
    assert_eq!(
        m,
        l.replace("fg = \"white\"\n", "")
            .replace("title = \"t\"", "title = \"u\"")
    );
    // A table deleted on one side and changed on the other: the table is the conflict.
    let l = TOML_BASE.replace("[colors]\nfg = \"white\"\nbg = \"black\"\n", "");
    let r = TOML_BASE
        .replace("bg = \"black\"", "bg = \"red\"")
        .replace("size = 12", "size = 2");
    let (m, c) = partial(merge("s.toml", TOML_BASE, &l, &r));
    assert_eq!(c, ["colors"]);
    assert_eq!(m, l.replace("size = 12", "size = 2"));
}

#[test]
fn toml_new_keys_placement_and_header_comment_written_once() {
    let b = "# header\ntop = 1\n\n[t]\nk = 1\n";
    // A new first key of a table goes before its successor.
    let m = clean(merge(
        "s.toml",
        b,
        &b.replace("top = 1", "top = 2"),
        &b.replace("[t]\n", "[t]\nfirst = 0\n"),
    ));
    assert_eq!(m, "# header\ntop = 2\n\n[t]\nfirst = 0\nk = 1\n");
    // A new first key of the file goes to the end of the top level: the header comment
    // (which toml_edit attaches to the first key) stays first and is not copied again.
    let r = b.replace("# header\n", "# header\nfirst = 0\n");
    let m = clean(merge("s.toml", b, &b.replace("k = 1", "k = 2"), &r));
    assert_eq!(m, "# header\ntop = 1\nfirst = 0\n\n[t]\nk = 2\n");
}

#[test]
fn toml_value_becoming_a_table_keeps_left_comments_once() {
    let b = "# header\ntop = 1\n\n[t]\nk = 1\n";
    let r = b.replace("top = 1\n", "[top]\ninner = 1\n");
    let m = clean(merge("s.toml", b, &b.replace("k = 1", "k = 2"), &r));
    assert_eq!(m, "# header\n[top]\ninner = 1\n\n[t]\nk = 2\n");
}

#[test]
fn toml_without_base_merges_what_each_side_added() {
    let m = merge_file("s.toml", None, b"a = 1\nb = 2\n", b"a = 1\nc = 3\n");
    assert_eq!(clean(m), "a = 1\nb = 2\nc = 3\n");
    let (m, c) = partial(merge_file("s.toml", None, b"a = 1\n", b"a = 2\n"));
    assert_eq!((m.as_str(), c), ("a = 1\n", keys(&["a"])));
}

#[test]
fn toml_array_of_tables_is_one_value() {
    let b = "[[bind]]\nkey = \"a\"\n\n[[bind]]\nkey = \"b\"\n\n[x]\nv = 1\n";
    let l = b.replace("v = 1", "v = 2");
    let r = b.replace("key = \"b\"", "key = \"B\"");
    let m = clean(merge("s.toml", b, &l, &r));
    assert_eq!(
        m,
        "[[bind]]\nkey = \"a\"\n\n[[bind]]\nkey = \"B\"\n\n[x]\nv = 2\n"
    );
    let l = b.replace("key = \"a\"", "key = \"L\"");
    let (m, c) = partial(merge("s.toml", b, &l, &r));
    assert_eq!((m.as_str(), c), (l.as_str(), keys(&["bind"])));
}

#[test]
fn toml_unparsable_side_is_a_conflict() {
    assert_eq!(
        merge("s.toml", "a = 1\n", "a = \n", "a = 2\n"),
        FileMerge::Conflict
    );
    assert_eq!(
        merge("s.toml", "a = 1\n", "a = 3\n", "[[a\n"),
        FileMerge::Conflict
    );
}

// --- key = value files ---

#[test]
fn kv_flat_file_appended_on_both_sides_keeps_both_lines() {
    // Known bug: the other side's appended line was dropped without a conflict.
    let b = "font = a\nsize = 12\n";
    let m = clean(merge(
        "foot.ini",
        b,
        "font = a\nsize = 12\nl = 1\n",
        "font = a\nsize = 12\nr = 2\n",
    ));
    assert_eq!(m, "font = a\nsize = 12\nl = 1\nr = 2\n");
    // Appended the same key with different values: a conflict, not a silent choice.
    let (m, c) = partial(merge(
        "foot.ini",
        b,
        &format!("{b}x = 1\n"),
        &format!("{b}x = 2\n"),
    ));
    assert_eq!((m, c), (format!("{b}x = 1\n"), keys(&["x"])));
}

#[test]
fn kv_sections_merge_key_by_key() {
    // Known bug: a file with [sections] was never merged key by key, so a key changed only
    // on one side disappeared.
    let b = "top = 0\n[main]\nfont = a\nsize = 12\n\n[colors]\nfg = white\n";
    let l = "top = 0\n[main]\nfont = b\nsize = 12\n\n[colors]\nfg = white\n";
    let r = "top = 1\n[main]\nfont = a\nsize = 14\n\n[colors]\nfg = red\n";
    assert_eq!(
        clean(merge("foot.ini", b, l, r)),
        "top = 1\n[main]\nfont = b\nsize = 14\n\n[colors]\nfg = red\n"
    );
}

#[test]
fn kv_conflicts_are_named_by_section() {
    let b = "top = 0\n[main]\nfont = a\n";
    let (m, c) = partial(merge(
        "a.conf",
        b,
        "top = 1\n[main]\nfont = b\n",
        "top = 2\n[main]\nfont = c\n",
    ));
    assert_eq!(m, "top = 1\n[main]\nfont = b\n");
    assert_eq!(c, ["top", "[main] font"]);
}

#[test]
fn kv_deletions_and_new_sections() {
    let b = "# prefs\n[a]\nx = 1\ny = 2\n\n[b]\nz = 3\n";
    // Left deletes y, right deletes section b and adds section c after a.
    let l = "# prefs\n[a]\nx = 1\n\n[b]\nz = 3\n";
    let r = "# prefs\n[a]\nx = 1\ny = 2\n\n[c]\n# new\nw = 4\n";
    assert_eq!(
        clean(merge("x.cfg", b, l, r)),
        "# prefs\n[a]\nx = 1\n\n[c]\n# new\nw = 4\n"
    );
    // Deleted on one side, changed on the other: a conflict, left's deletion kept.
    let r = "# prefs\n[a]\nx = 1\ny = 5\n\n[b]\nz = 3\n";
    let (m, c) = partial(merge("x.cfg", b, l, r));
    assert_eq!((m.as_str(), c), (l, keys(&["[a] y"])));
    // A whole section deleted on one side, a key in it changed on the other.
    let l = "# prefs\n[a]\nx = 1\ny = 2\n";
    let r = "# prefs\n[a]\nx = 2\ny = 2\n\n[b]\nz = 4\n";
    let (m, c) = partial(merge("x.cfg", b, l, r));
    assert_eq!(
        (m.as_str(), c),
        ("# prefs\n[a]\nx = 2\ny = 2\n", keys(&["[b]"]))
    );
}

#[test]
fn kv_keeps_left_comments_and_carries_right_comments_of_new_keys() {
    let b = "# top\nfont = a   # my font\nsize = 12\n";
    let l = "# top, edited\nfont = a   # my font\nsize = 13\n";
    let r = "# top\nfont = a   # my font\nsize = 12\n# the cursor\ncursor = beam\n";
    assert_eq!(
        clean(merge("kitty.conf", b, l, r)),
        "# top, edited\nfont = a   # my font\nsize = 13\n# the cursor\ncursor = beam\n"
    );
}

#[test]
fn kv_space_separated_files_merge_per_key() {
    let b = "font_family Mono\nfont_size 12.0\n";
    let l = "font_family Fira\nfont_size 12.0\n";
    let r = "font_family Mono\nfont_size 14.0\ncursor_shape beam\n";
    assert_eq!(
        clean(merge("kitty.conf", b, l, r)),
        "font_family Fira\nfont_size 14.0\ncursor_shape beam\n"
    );
}

#[test]
fn kv_repeated_keys_fall_back_to_diff3_without_losing_lines() {
    let b = "font_size 12\nmap ctrl+a new_tab\nmap ctrl+b close_tab\n";
    let l = "font_size 13\nmap ctrl+a new_tab\nmap ctrl+b close_tab\n";
    let r = "font_size 12\nmap ctrl+a new_tab\nmap ctrl+b close_tab\nmap ctrl+c copy\n";
    assert_eq!(
        clean(merge("kitty.conf", b, l, r)),
        "font_size 13\nmap ctrl+a new_tab\nmap ctrl+b close_tab\nmap ctrl+c copy\n"
    );
    // Both append a map line: kept left, the region reported (nothing silently dropped).
    let l = format!("{b}map ctrl+l left\n");
    let r = format!("{b}map ctrl+r right\n");
    let (m, c) = partial(merge("kitty.conf", b, &l, &r));
    assert_eq!((m, c), (l.clone(), keys(&["lines 4-4"])));
    // A line that is not key/value also sends the file to diff3.
    let b = "a = 1\njust-a-word\nb = 2\n";
    let m = clean(merge(
        "x.conf",
        b,
        "a = 9\njust-a-word\nb = 2\n",
        "a = 1\njust-a-word\nb = 8\n",
    ));
    assert_eq!(m, "a = 9\njust-a-word\nb = 8\n");
}

#[test]
fn kv_crlf_and_missing_final_newline_are_kept() {
    let b = "a = 1\r\nb = 2\r\n";
    let l = "a = 3\r\nb = 2\r\n";
    let r = "a = 1\r\nb = 4\r\nc = 5\r\n";
    assert_eq!(
        clean(merge("x.ini", b, l, r)),
        "a = 3\r\nb = 4\r\nc = 5\r\n"
    );
    assert_eq!(
        clean(merge(
            "x.ini",
            "a = 1\nb = 2",
            "a = 3\nb = 2",
            "a = 1\nb = 4"
        )),
        "a = 3\nb = 4"
    );
}

#[test]
fn large_unrelated_texts_merge_in_bounded_time() {
    // Two 20 000-line files with nothing in common: O(N·M) without the diff budget.
    let b: String = (0..20_000).map(|i| format!("b{i}\n")).collect();
    let l: String = (0..20_000).map(|i| format!("l{i}\n")).collect();
    let r: String = (0..20_000).map(|i| format!("r{i}\n")).collect();
    let started = std::time::Instant::now();
    let (m, c) = partial(merge("big.txt", &b, &l, &r));
    assert_eq!((m, c), (l, keys(&["lines 1-20000"])));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

// --- determinism ---

#[test]
fn merges_are_deterministic() {
    let cases: [(&str, &str, &str, &str); 4] = [
        (
            "p.json",
            r#"{"a":1,"b":{"c":2}}"#,
            r#"{"a":2,"b":{"c":3},"x":1}"#,
            r#"{"a":3,"b":{"c":2,"d":4},"y":1}"#,
        ),
        (
            "s.toml",
            TOML_BASE,
            &TOML_BASE.replace("12", "13"),
            &TOML_BASE.replace("12", "14").replace("fg", "fg2"),
        ),
        (
            "x.ini",
            "a=1\n[s]\nb=2\n",
            "a=2\n[s]\nb=3\nq=1\n",
            "a=3\n[s]\nb=2\n[t]\nz=1\n",
        ),
        ("n.txt", "1\n2\n3\n", "1\nL\n3\n", "1\nR\n3\n4\n"),
    ];
    for (p, b, l, r) in cases {
        let first = merge(p, b, l, r);
        for _ in 0..5 {
            assert_eq!(merge(p, b, l, r), first, "{p}");
        }
    }
}

// --- apply_keys ---

#[test]
fn apply_keys_takes_the_other_sides_values_for_exactly_those_keys() {
    let b = r#"{"a":1,"b":{"c":1,"d":1},"e":1}"#;
    let l = r#"{"a":2,"b":{"c":2,"d":2},"e":2}"#;
    let r = r#"{"a":3,"b":{"c":3,"d":3}}"#;
    let (m, c) = partial(merge("p.json", b, l, r));
    assert_eq!(c, ["a", "b.c", "b.d", "e"]);
    let got = apply_keys("p.json", m.as_bytes(), r.as_bytes(), &keys(&["b.c", "e"]));
    assert_eq!(
        got.as_deref(),
        Some(br#"{"a":2,"b":{"c":3,"d":2}}"#.as_slice())
    );
    // All of them: the other side.
    let got = apply_keys("p.json", m.as_bytes(), r.as_bytes(), &c);
    assert_eq!(got.as_deref(), Some(r.as_bytes()));

    // TOML: formatting of current kept, right's value put in place.
    let l = TOML_BASE.replace("size = 12", "size = 13  # mine");
    let r = TOML_BASE
        .replace("size = 12", "size = 14")
        .replace("bg = \"black\"\n", "");
    let cur = TOML_BASE.replace("size = 12", "size = 13  # mine");
    let got = apply_keys(
        "s.toml",
        cur.as_bytes(),
        r.as_bytes(),
        &keys(&["font.size", "colors.bg"]),
    );
    assert_eq!(
        got.as_deref(),
        Some(
            l.replace("size = 13  # mine", "size = 14  # mine")
                .replace("bg = \"black\"\n", "")
                .as_bytes()
        )
    );

    // key = value with sections.
    let cur = "top = 1\n[main]\nfont = b\n";
    let other = "top = 2\n[main]\nfont = c\nnew = 1\n";
    let got = apply_keys(
        "a.conf",
        cur.as_bytes(),
        other.as_bytes(),
        &keys(&["[main] font", "[main] new"]),
    );
    assert_eq!(
        got.as_deref(),
        Some(b"top = 1\n[main]\nfont = c\nnew = 1\n".as_slice())
    );

    // Line ranges, as reported for text.
    let (b, l, r) = ("a\nb\nc\nd\ne\n", "a\nL\nc\nd\nL2\n", "a\nR\nc\nd\nR2\n");
    let (m, c) = partial(merge("n.txt", b, l, r));
    assert_eq!(c, ["lines 2-2", "lines 5-5"]);
    let got = apply_keys("n.txt", m.as_bytes(), r.as_bytes(), &keys(&["lines 5-5"]));
    assert_eq!(got.as_deref(), Some(b"a\nL\nc\nd\nR2\n".as_slice()));
    let (m, c) = partial(merge("n.txt", "a\nb\nc\n", "a\nc\n", "a\nB\nc\n"));
    let got = apply_keys("n.txt", m.as_bytes(), b"a\nB\nc\n", &c);
    assert_eq!(got.as_deref(), Some(b"a\nB\nc\n".as_slice()));
}

#[test]
fn apply_keys_not_applicable() {
    assert_eq!(
        apply_keys("state/journal/1.jsonl", b"a\n", b"b\n", &keys(&["x"])),
        None
    );
    assert_eq!(apply_keys("p.json", b"{}", b"nope", &keys(&["a"])), None);
    assert_eq!(apply_keys("p.json", b"{}", b"{}", &keys(&["a..b"])), None);
    assert_eq!(apply_keys("n.txt", b"a\n", b"b\n", &keys(&["font"])), None);
    assert_eq!(
        apply_keys("x.bin", b"\x00", b"\x01", &keys(&["lines 1-1"])),
        None
    );
    assert_eq!(
        apply_keys("a.conf", b"a = 1\n", b"a = 2\n", &keys(&["a", "lines 1-1"])),
        None
    );
}

#[test]
fn key_paths_round_trip() {
    for p in [vec!["font", "size"], vec!["a.b", "", "x\"y", "ü"]] {
        let p: Vec<String> = p.into_iter().map(str::to_owned).collect();
        assert_eq!(parse_dotted(&dotted(&p)), Some(p));
    }
}

// --- properties ---

fn lcs_len_dp(a: &[u32], b: &[u32]) -> usize {
    let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            t[i][j] = if a[i] == b[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    t[0][0]
}

/// Random line edits of `base`: keep, delete, replace or insert, over a small alphabet so
/// that lines repeat.
fn edited(base: Vec<String>) -> impl Strategy<Value = Vec<String>> {
    let n = base.len();
    (
        proptest::collection::vec(0u8..4, n),
        proptest::collection::vec("[a-e]{0,2}", n + 1),
    )
        .prop_map(move |(ops, new)| {
            let mut out = Vec::new();
            for (i, line) in base.iter().enumerate() {
                match ops[i] {
                    0 | 1 => out.push(line.clone()),
                    2 => out.push(new[i].clone()),
                    _ => {}
                }
                if ops[i] == 1 {
                    out.push(new[i + 1].clone());
                }
            }
            out
        })
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn three_files() -> impl Strategy<Value = (String, String, String)> {
    proptest::collection::vec("[a-e]{0,2}", 0..12).prop_flat_map(|base| {
        (edited(base.clone()), edited(base.clone()))
            .prop_map(move |(l, r)| (join(&base), join(&l), join(&r)))
    })
}

fn json_object() -> impl Strategy<Value = String> {
    use serde_json::Value;
    let leaf = prop_oneof![
        (0i64..3).prop_map(Value::from),
        Just(Value::Null),
        "[a-b]{0,1}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            proptest::collection::btree_map("[a-c]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    (
        proptest::collection::btree_map("[a-d]", value, 0..5),
        any::<bool>(),
    )
        .prop_map(|(m, pretty)| {
            let v = Value::Object(m.into_iter().collect());
            if pretty {
                serde_json::to_string_pretty(&v).expect("serializes")
            } else {
                v.to_string()
            }
        })
}

fn at_path<'v>(v: &'v serde_json::Value, path: &[String]) -> Option<&'v serde_json::Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn node_at<'m, S>(m: &'m [(String, Node<S>)], path: &[String]) -> Option<&'m Node<S>> {
    let (k, rest) = path.split_first()?;
    let v = get(m, k)?;
    if rest.is_empty() {
        Some(v)
    } else {
        node_at(as_map(v)?, rest)
    }
}

const TOML_PARTS: usize = 14;

/// Per part, for left then right: 1 in 4 a new (present, value), else the base's.
type TomlEdit = (u8, bool, u8, u8, bool, u8);

/// A TOML file from a fixed set of statements, each present or not, with a value: dotted
/// keys, inline tables, arrays, tables, a sub-table and an array of tables.
fn toml_text(parts: &[(bool, u8)]) -> String {
    let line = |i: usize, pattern: &str| -> String {
        if parts[i].0 {
            format!("{}\n", pattern.replace('#', &parts[i].1.to_string()))
        } else {
            String::new()
        }
    };
    let root = [
        "a = #",
        "b = \"#\"",
        "c.d = #",
        "c.e = #",
        "inl = { x = #, y = 1 }",
        "arr = [#, 2]",
    ];
    let mut s: String = root.iter().enumerate().map(|(i, p)| line(i, p)).collect();
    let t: String = ["x = #", "y = #", "s.k = #", "in = { q = # }"]
        .iter()
        .enumerate()
        .map(|(i, p)| line(6 + i, p))
        .collect();
    if !t.is_empty() {
        s += &format!("\n[t]\n{t}");
    }
    if parts[10].0 {
        s += &format!("\n[t.sub]\n{}", line(10, "z = #"));
    }
    if parts[11].0 {
        s += &format!("\n# u\n[u]\n{}", line(11, "w = #"));
    }
    for i in [12, 13] {
        if parts[i].0 {
            s += &format!("\n[[aot]]\n{}", line(i, "q = #"));
        }
    }
    s
}

proptest! {
    #[test]
    fn prop_one_side_changed_gives_that_side((b, l, _r) in three_files(), which in 0..4usize) {
        let path = ["notes.txt", "a.conf", "x.ini", "p.json"][which];
        let lb = l.as_bytes();
        prop_assert_eq!(merge(path, &b, &l, &b), FileMerge::Clean(lb.to_vec()));
        prop_assert_eq!(merge(path, &b, &b, &l), FileMerge::Clean(lb.to_vec()));
        // The same through diff3 itself, not only the shortcut in merge_file.
        let (bl, ll) = (diff::lines(&b), diff::lines(&l));
        prop_assert_eq!(text::merge_lines(&bl, &ll, &bl), (ll.clone(), vec![]));
        prop_assert_eq!(text::merge_lines(&bl, &bl, &ll), (ll.clone(), vec![]));
        prop_assert_eq!(text::merge_lines(&bl, &ll, &ll), (ll, vec![]));
    }

    #[test]
    fn prop_diff3_keeps_left_and_is_deterministic((b, l, r) in three_files()) {
        let m = merge("notes.txt", &b, &l, &r);
        prop_assert_eq!(&m, &merge("notes.txt", &b, &l, &r));
        if let FileMerge::Partial { conflicts, .. } = &m {
            prop_assert!(!conflicts.is_empty());
        }
        // Taking right for every conflict gives something both sides' clean changes are in
        // only loosely; but it must apply.
        if let FileMerge::Partial { bytes, conflicts } = m {
            prop_assert!(apply_keys("notes.txt", &bytes, r.as_bytes(), &conflicts).is_some());
        }
    }

    #[test]
    fn prop_kv_files_merge_without_panicking((b, l, r) in three_files(), sep in 0..3usize) {
        // Lines like `a = b` / `a b` / `[a]`, with repeats: every path of the kv driver.
        let shape = |s: &str| -> String {
            s.lines().map(|x| match (x.len(), sep) {
                (0, _) => "\n".to_owned(),
                (1, 0) => format!("[{x}]\n"),
                (_, 1) => format!("{} {}\n", &x[..1], &x[1..]),
                _ => format!("{} = {}\n", &x[..1], &x[1..]),
            }).collect()
        };
        let (b, l, r) = (shape(&b), shape(&l), shape(&r));
        let m = merge("x.ini", &b, &l, &r);
        prop_assert_eq!(&m, &merge("x.ini", &b, &l, &r));
        // Text in, so always a merge: what the key model cannot write back goes to diff3.
        prop_assert!(m != FileMerge::Conflict, "base:\n{b}\nleft:\n{l}\nright:\n{r}");
        if let FileMerge::Partial { bytes, conflicts } = &m {
            let _ = apply_keys("x.ini", bytes, r.as_bytes(), conflicts);
        }
    }

    #[test]
    fn prop_lcs_is_longest(a in proptest::collection::vec(0u32..4, 0..30), b in proptest::collection::vec(0u32..4, 0..30)) {
        let m = diff::matches(&a, &b);
        prop_assert_eq!(m.len(), lcs_len_dp(&a, &b));
        for w in m.windows(2) {
            prop_assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1);
        }
        for &(i, j) in &m {
            prop_assert_eq!(a[i], b[j]);
        }
    }

    #[test]
    fn prop_diff_out_of_budget_is_still_a_common_subsequence(
        a in proptest::collection::vec(0u32..4, 0..30),
        b in proptest::collection::vec(0u32..4, 0..30),
        budget in 0u64..200,
    ) {
        let m = diff::matches_within(&a, &b, budget);
        prop_assert!(m.len() <= lcs_len_dp(&a, &b));
        for w in m.windows(2) {
            prop_assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1);
        }
        for &(i, j) in &m {
            prop_assert_eq!(a[i], b[j]);
        }
    }

    #[test]
    fn prop_toml_merges_of_valid_files_never_give_up(
        base in proptest::collection::vec((any::<bool>(), 0u8..3), TOML_PARTS),
        edits in proptest::collection::vec((0u8..4, any::<bool>(), 0u8..3, 0u8..4, any::<bool>(), 0u8..3), TOML_PARTS),
    ) {
        // Both sides valid TOML: the result is always a merge (clean or with named keys),
        // never a refusal: the edited document always reads back as the merged tree.
        let side = |pick: fn(&TomlEdit) -> (u8, bool, u8)| -> Vec<(bool, u8)> {
            base.iter().zip(&edits).map(|(b, e)| {
                let (roll, present, v) = pick(e);
                if roll == 0 { (present, v) } else { *b }
            }).collect()
        };
        let (b, l, r) = (
            toml_text(&base),
            toml_text(&side(|e| (e.0, e.1, e.2))),
            toml_text(&side(|e| (e.3, e.4, e.5))),
        );
        let m = merge("s.toml", &b, &l, &r);
        prop_assert!(m != FileMerge::Conflict, "base:\n{b}\nleft:\n{l}\nright:\n{r}");
        if let FileMerge::Partial { bytes, conflicts } = &m {
            let all = apply_keys("s.toml", bytes, r.as_bytes(), conflicts);
            prop_assert!(all.is_some(), "apply_keys failed for {conflicts:?}");
            let tree = |t: &[u8]| {
                let d: toml_edit::DocumentMut =
                    std::str::from_utf8(t).expect("utf-8").parse().expect("valid TOML");
                toml_files::doc_map(&d)
            };
            let (merged, taken) = (tree(bytes), tree(&all.unwrap_or_default()));
            let (left, right) = (tree(l.as_bytes()), tree(r.as_bytes()));
            for c in conflicts {
                let path = parse_dotted(c).expect("a key path");
                prop_assert_eq!(node_at(&merged, &path), node_at(&left, &path));
                prop_assert_eq!(node_at(&taken, &path), node_at(&right, &path));
            }
        }
    }

    #[test]
    fn prop_json_objects_always_merge_and_apply_keys_takes_right(
        b in json_object(), l in json_object(), r in json_object(),
    ) {
        let m = merge("p.json", &b, &l, &r);
        prop_assert!(m != FileMerge::Conflict);
        prop_assert_eq!(&m, &merge("p.json", &b, &l, &r));
        let bytes = match &m {
            FileMerge::Clean(x) | FileMerge::Partial { bytes: x, .. } => x.clone(),
            FileMerge::Conflict => unreachable!(),
        };
        let merged: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
        let right: serde_json::Value = serde_json::from_str(&r).expect("valid JSON");
        let left: serde_json::Value = serde_json::from_str(&l).expect("valid JSON");
        if let FileMerge::Partial { conflicts, .. } = &m {
            let taken = apply_keys("p.json", &bytes, r.as_bytes(), conflicts).expect("applies");
            let taken: serde_json::Value = serde_json::from_slice(&taken).expect("valid JSON");
            for c in conflicts {
                let path = parse_dotted(c).expect("a key path");
                // Left's value in the merge, right's after apply_keys.
                prop_assert_eq!(at_path(&merged, &path), at_path(&left, &path));
                prop_assert_eq!(at_path(&taken, &path), at_path(&right, &path));
            }
        }
    }

    #[test]
    fn prop_never_panics_on_arbitrary_bytes(
        b in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        l in proptest::collection::vec(any::<u8>(), 0..64),
        r in proptest::collection::vec(any::<u8>(), 0..64),
        which in 0..6usize,
    ) {
        let path = ["state/journal/1.jsonl", "p.json", "s.toml", "a.conf", "n.txt", "x"][which];
        let m = merge_file(path, b.as_deref(), &l, &r);
        if let FileMerge::Partial { bytes, conflicts } = &m {
            let _ = apply_keys(path, bytes, &r, conflicts);
        }
        let _ = apply_keys(path, &l, &r, &[String::from("a"), String::from("lines 1-2")]);
    }

    #[test]
    fn prop_structured_text_never_panics(
        b in "[ab=\\[\\]{}\":,.# \n0-9tr]{0,40}",
        l in "[ab=\\[\\]{}\":,.# \n0-9tr]{0,40}",
        r in "[ab=\\[\\]{}\":,.# \n0-9tr]{0,40}",
        which in 0..3usize,
    ) {
        let path = ["p.json", "s.toml", "a.conf"][which];
        let m = merge(path, &b, &l, &r);
        prop_assert_eq!(&m, &merge(path, &b, &l, &r));
    }
}

#[test]
fn a_vault_secret_changed_on_both_sides_is_a_conflict_never_a_merge() {
    // Even bytes that would merge as text (age's header is text) are kept whole: one side kept,
    // the other set aside by sync.
    let base = b"age-encryption.org/v1\n-> X25519 base\n";
    let left = b"age-encryption.org/v1\n-> X25519 left\n";
    let right = b"age-encryption.org/v1\n-> X25519 base\nextra\n";
    assert_eq!(
        merge_file("state/secrets/token.age", Some(base), left, right),
        FileMerge::Conflict
    );
    assert_eq!(
        apply_keys("state/secrets/token.age", left, right, &[]),
        None
    );
    // One side changed: that side, as it is.
    assert_eq!(
        merge_file("state/secrets/token.age", Some(base), base, right),
        FileMerge::Clean(right.to_vec())
    );
    // The trust list is text: a revocation on one side merges with a change on the other.
    assert!(matches!(
        merge_file(
            "state/secrets/trust/bee.pub",
            Some(b"age a\nssh s\n"),
            b"age a\nssh s\nrevoked\n",
            b"# c\nage a\nssh s\n"
        ),
        FileMerge::Clean(_)
    ));
}
