//! Issue #3: a full disk and a read-only store give a clear error and lose nothing.
//! These need a small tmpfs, so they mount one: root only. Elsewhere they say so and return; in
//! CI (`SHELLDONE_CI=1`, run as root) not being able to mount fails them.

use std::path::Path;
use std::process::Command;

use crate::support::Sandbox;
use crate::support::ci::cannot_run;

pub(crate) struct Mount(pub(crate) std::path::PathBuf);

impl Mount {
    /// A `size` tmpfs at `at`, or `None` (after [`cannot_run`], which fails in CI) when this
    /// machine will not mount one.
    pub(crate) fn tmpfs(test: &str, at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Mount(at.to_path_buf())),
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                cannot_run(
                    test,
                    &format!("mount -t tmpfs failed (needs root): {}", err.trim()),
                );
                None
            }
            Err(e) => {
                cannot_run(test, &format!("cannot run mount: {e}"));
                None
            }
        }
    }
    fn remount(&self, opt: &str) {
        assert!(
            Command::new("mount")
                .args(["-o", &format!("remount,{opt}")])
                .arg(&self.0)
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

pub(crate) fn sandbox_with_state_on(m: &Path) -> Sandbox {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.dir.path()).unwrap();
    // The state dir lives on the small filesystem; the config dir does not.
    std::os::unix::fs::symlink(m, sb.state()).unwrap();
    sb
}

#[test]
fn full_disk_fails_clearly_and_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(m) = Mount::tmpfs(
        "full_disk_fails_clearly_and_publishes_nothing",
        &tmp.path().join("small"),
        "3m",
    ) else {
        return;
    };
    let sb = sandbox_with_state_on(&m.0);
    sb.generate();
    let a = sb.save("fits");
    // 6 MB of incompressible preferences cannot fit in what is left.
    let mut rng = shelldone::demo::Rng::new(9);
    let noise: Vec<u8> = (0..6_000_000u32)
        .map(|_| (rng.next_u64() >> 56) as u8)
        .collect();
    std::fs::write(sb.config().join("huge.bin"), &noise).unwrap();
    let o = sb.run(&["state", "save"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.lines().count() == 1,
        "one line a person can act on: {err}"
    );
    // Nothing was published and nothing is left behind.
    let log: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "log"])).unwrap();
    assert_eq!(log[0]["id"], a.as_str());
    let staging = m.0.join("snapshots/staging");
    assert!(
        std::fs::read_dir(&staging).map_or(true, |mut d| d.next().is_none()),
        "staging cleaned up"
    );
    assert!(sb.ok(&["state", "check"]).contains("no problems"));
    // Once there is room again, the same save works.
    std::fs::remove_file(sb.config().join("huge.bin")).unwrap();
    std::fs::write(sb.config().join("small.toml"), "k = 1\n").unwrap();
    sb.save("after freeing space");
}

#[test]
fn read_only_store_fails_clearly_and_still_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(m) = Mount::tmpfs(
        "read_only_store_fails_clearly_and_still_reads",
        &tmp.path().join("ro"),
        "16m",
    ) else {
        return;
    };
    let sb = sandbox_with_state_on(&m.0);
    sb.generate();
    let a = sb.save("a");
    std::fs::write(sb.config().join("new.toml"), "k = 1\n").unwrap();
    m.remount("ro");
    let o = sb.run(&["state", "save"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    m.remount("rw");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    m.remount("ro");
    let log = sb.run(&["--json", "log"]);
    m.remount("rw");
    assert!(
        log.status.success(),
        "reading history works on a read-only store: {}",
        String::from_utf8_lossy(&log.stderr)
    );
    assert!(String::from_utf8_lossy(&log.stdout).contains(&a));
}
