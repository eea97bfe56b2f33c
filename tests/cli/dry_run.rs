//! `sync push --dry-run` (issue #11 item 3): says what a push would send and which refs would
//! move, changes nothing on the remote or in the store, and agrees with the push that follows.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::{GitDaemon, Sandbox};

/// Every file (bytes) and directory under `root`, by relative path.
fn snapshot_of(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let bytes = e
                .file_type()
                .is_file()
                .then(|| std::fs::read(e.path()).unwrap());
            (rel, bytes)
        })
        .collect()
}

fn json(sb: &Sandbox, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&sb.ok(&all)).unwrap()
}

#[test]
fn dry_run_says_what_a_push_sends_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("usb");
    let url = remote.to_str().unwrap();
    let a = Sandbox::new();
    a.generate();
    a.save("from A");
    a.ok(&["remote", "add", "origin", url, "--init"]);

    let remote_before = snapshot_of(&remote);
    let store_before = snapshot_of(&a.state().join("snapshots"));
    let dry = json(&a, &["sync", "push", "--dry-run"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    let objects = dry["objects"].as_u64().unwrap();
    let bytes = dry["bytes"].as_u64().unwrap();
    assert!(objects > 10 && bytes > 0, "{dry}");
    let refs = dry["refs"].as_array().unwrap();
    assert!(refs.len() >= 2, "head and sessions: {dry}");
    assert!(
        refs.iter()
            .all(|r| r["from"].is_null() && r["to"].is_string())
    );
    let text = a.ok(&["sync", "push", "--dry-run"]);
    assert!(
        text.contains(&format!("would send {objects} objects"))
            && text.contains("/head")
            && text.contains("nothing was changed"),
        "{text}"
    );
    assert_eq!(
        snapshot_of(&remote),
        remote_before,
        "the remote is untouched"
    );
    assert_eq!(
        snapshot_of(&a.state().join("snapshots")),
        store_before,
        "the store is untouched (no remote-tracking ref, no lock owner)"
    );

    // The push sends exactly that.
    let pushed = json(&a, &["sync", "push"]);
    assert_eq!(pushed["objects_sent"], objects, "{pushed}");
    assert_eq!(pushed["bytes_sent"], bytes, "{pushed}");
    let names: Vec<&serde_json::Value> = refs.iter().map(|r| &r["name"]).collect();
    let updated: Vec<&serde_json::Value> =
        pushed["refs_updated"].as_array().unwrap().iter().collect();
    assert_eq!(names, updated);

    // Up to date: nothing would be sent.
    let dry = json(&a, &["sync", "push", "--dry-run"]);
    assert_eq!(
        (
            dry["objects"].as_u64(),
            dry["refs"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
    assert!(a.ok(&["sync", "push", "--dry-run"]).contains("up to date"));

    // After a change: only the new objects, and the head moving from the pushed value.
    std::fs::write(
        a.state().join("sessions/s001/session.json"),
        "{\"id\":\"s001\",\"changed\":true}",
    )
    .unwrap();
    let head = a.save("change");
    let remote_before = snapshot_of(&remote);
    let dry = json(&a, &["sync", "push", "--dry-run"]);
    assert_eq!(snapshot_of(&remote), remote_before);
    let moved: Vec<&serde_json::Value> = dry["refs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().unwrap().ends_with("/head"))
        .collect();
    assert_eq!(moved.len(), 1, "{dry}");
    assert_eq!(moved[0]["to"], head.as_str());
    assert!(moved[0]["from"].is_string());
    let pushed = json(&a, &["sync", "push"]);
    assert_eq!(pushed["objects_sent"], dry["objects"], "{pushed} vs {dry}");
    assert_eq!(pushed["bytes_sent"], dry["bytes"], "{pushed} vs {dry}");
}

#[test]
fn dry_run_to_a_git_remote_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = GitDaemon::start(&tmp.path().join("srv"));
    let (url, _) = d.repo("state.git");
    let a = Sandbox::new();
    a.generate();
    a.save("from A");
    a.ok(&["remote", "add", "origin", &url]);
    let store_before = snapshot_of(&a.state().join("snapshots"));
    let out = a.run(&["sync", "push", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--dry-run") && err.contains("git remote"),
        "{err}"
    );
    assert_eq!(snapshot_of(&a.state().join("snapshots")), store_before);
}
