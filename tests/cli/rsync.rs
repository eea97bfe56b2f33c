//! Issue #16: a directory remote copied with `rsync -a` while a push runs pulls cleanly on
//! another device — the old state or the new one, never an error (docs/recipes/rsync.md).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Sandbox, assert_same, copy_dir, exited};

fn have_rsync(test: &str) -> bool {
    let ok = Command::new("rsync")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty() || v == "0"),
            "{test}: rsync is not installed and CI is set (.ci/run installs it)"
        );
        crate::support::ci::cannot_run(test, "rsync is not installed");
    }
    ok
}

/// `rsync -a SRC/ DEST/`; exit 24 ("some files vanished": a push's temp files renamed away
/// under it) is what a copy during a push is expected to meet.
fn rsync(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let o = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dest.display()))
        .output()
        .unwrap();
    assert!(
        matches!(o.status.code(), Some(0 | 24)),
        "rsync: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A copy of `from` (its config and state dirs): the same device with the same history.
fn clone_device(from: &Sandbox) -> Sandbox {
    let c = Sandbox::new();
    copy_dir(&from.config(), &c.config());
    copy_dir(&from.state(), &c.state());
    c
}

/// Rewrites every scrollback with new content: a push of many new objects in many fan-out
/// folders.
fn change_everything(sb: &Sandbox, round: u32) {
    for e in walkdir::WalkDir::new(sb.state().join("sessions")) {
        let e = e.unwrap();
        if e.file_type().is_file() && e.file_name() != "session.json" {
            let mut data = std::fs::read(e.path()).unwrap();
            data.extend(
                format!("\nround {round} {}\n", e.path().display())
                    .repeat(50)
                    .bytes(),
            );
            std::fs::write(e.path(), data).unwrap();
        }
    }
    for i in 0..150 {
        std::fs::write(
            sb.config().join(format!("extra-{round}-{i}.toml")),
            format!("value = {i}\nround = {round}\n"),
        )
        .unwrap();
    }
}

/// Pulls `copy` on a clone of `b` and checks the result is `old` or `new`, byte for byte;
/// returns whether it is the new one, and whether the pull said it left a device out.
fn pull_copy(
    b: &Sandbox,
    copy: &Path,
    old: &crate::support::Tree,
    new: &crate::support::Tree,
) -> (bool, bool) {
    let c = clone_device(b);
    c.ok(&["remote", "add", "copy", &copy.display().to_string()]);
    let o = c.run(&["--json", "sync", "pull", "copy"]);
    let out = exited(&"pull of a copy taken mid-push", &o, 0);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let live = c.live();
    let is_new = live == *new;
    if !is_new {
        assert_same(&live, old);
    }
    assert!(c.ok(&["state", "check"]).contains("no problems"));
    let left_out = r.get("incomplete").is_some();
    assert!(
        !(left_out && is_new),
        "a pull that left a device out cannot have its new state: {r}"
    );
    (is_new, left_out)
}

#[test]
fn a_copy_with_refs_newer_than_its_objects_pulls_the_old_state() {
    // The worst order a copying tool can take: every object before the push, every ref after.
    let a = Sandbox::new();
    let b = Sandbox::new();
    let remote = a.dir.path().join("remote");
    let url = remote.display().to_string();
    a.generate();
    a.save("old");
    a.ok(&["remote", "add", "usb", &url, "--init"]);
    a.ok(&["sync", "push", "usb"]);
    b.ok(&["remote", "add", "usb", &url]);
    b.ok(&["sync", "pull", "usb"]);
    let old = b.live();
    let copy = b.dir.path().join("copy");
    copy_dir(&remote, &copy);
    change_everything(&a, 1);
    a.save("new");
    a.ok(&["sync", "push", "usb"]);
    std::fs::remove_dir_all(copy.join("refs")).unwrap();
    copy_dir(&remote.join("refs"), &copy.join("refs"));
    let new = a.live();
    assert_eq!(
        pull_copy(&b, &copy, &old, &new),
        (false, true),
        "the torn copy gives the old state and says it left the pushing device out"
    );
    // Once the copy is complete, the same device pulls the new state.
    copy_dir(&remote, &copy);
    assert_eq!(pull_copy(&b, &copy, &old, &new), (true, false));
}

#[test]
fn rsync_copies_taken_during_a_push_pull_the_old_or_the_new_state() {
    if !have_rsync("rsync_copies_taken_during_a_push_pull_the_old_or_the_new_state") {
        return;
    }
    let a = Sandbox::new();
    let b = Sandbox::new();
    let remote = a.dir.path().join("remote");
    let url = remote.display().to_string();
    a.generate();
    a.save("old");
    a.ok(&["remote", "add", "usb", &url, "--init"]);
    a.ok(&["sync", "push", "usb"]);
    b.ok(&["remote", "add", "usb", &url]);
    b.ok(&["sync", "pull", "usb"]);
    let old = b.live();
    change_everything(&a, 1);
    a.save("new");
    let new = a.live();
    // Copy the remote again and again while the push runs (bounded), then once after it.
    let copies = b.dir.path().join("copies");
    let mut push = a.cmd(&["sync", "push", "usb"]).spawn().unwrap();
    let t0 = Instant::now();
    let mut taken = Vec::new();
    loop {
        let done = push.try_wait().unwrap().is_some();
        let dest = copies.join(taken.len().to_string());
        rsync(&remote, &dest);
        taken.push(dest);
        if done || taken.len() >= 40 || t0.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let o = push.wait_with_output().unwrap();
    exited(&"the push", &o, 0);
    let last = copies.join("final");
    rsync(&remote, &last);
    taken.push(last);
    // Every copy pulls cleanly; the one taken after the push has the new state.
    let (mut news, mut torn) = (0, 0);
    for (i, copy) in taken.iter().enumerate() {
        let (is_new, left_out) = pull_copy(&b, copy, &old, &new);
        news += usize::from(is_new);
        torn += usize::from(left_out);
        if i == taken.len() - 1 {
            assert!(is_new, "the copy taken after the push has the new state");
        }
    }
    eprintln!(
        "rsync during a push: {} copies, {news} with the new state, {torn} with refs ahead of their objects",
        taken.len()
    );
}
