//! Issue #16: the S3 remote against a real S3 server on 127.0.0.1 (moto's server mode;
//! tests/common/moto.rs), with request signing checked where a test is about credentials. Under
//! CI a missing server fails the tests.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use shelldone::remote::s3::S3Remote;
use shelldone::remote::{Backend, RefUpdate};

use crate::support::moto::{Moto, Proxy};
use crate::support::{Sandbox, assert_same, exited};

/// A device whose commands reach the S3 server at `endpoint` with the server's key.
struct Dev<'m> {
    sb: Sandbox,
    moto: &'m Moto,
    endpoint: String,
}

impl<'m> Dev<'m> {
    fn new(moto: &'m Moto) -> Self {
        Dev {
            sb: Sandbox::new(),
            moto,
            endpoint: moto.endpoint.clone(),
        }
    }
    /// A device on an existing sandbox (one with keys and known strings, say).
    fn on(sb: Sandbox, moto: &'m Moto) -> Self {
        Dev {
            sb,
            moto,
            endpoint: moto.endpoint.clone(),
        }
    }
    /// The command, with the server's variables and the test passphrase (for a device with
    /// keys, as `crate::vault::ok` gives it).
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.sb.cmd(args);
        self.moto.env(&mut c, &self.endpoint);
        c.env("SHELLDONE_VAULT_PASSPHRASE", crate::vault::PASS);
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn shelldone")
    }
    fn code(&self, code: i32, args: &[&str]) -> String {
        exited(&args, &self.run(args), code)
    }
    fn ok(&self, args: &[&str]) -> String {
        self.code(0, args)
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).expect("json")
    }
    fn device(&self) -> String {
        crate::sync::device(&self.sb)
    }
    fn head(&self) -> String {
        let log = self.json(&["log", "-n", "1"]);
        log[0]["id"].as_str().expect("an id").to_owned()
    }
}

/// The S3 remote at `prefix`, opened by the library with the server's key.
fn backend(m: &Moto, prefix: &str, secret: &str) -> S3Remote {
    let env = m.aws_env(secret, Some(&m.endpoint));
    S3Remote::open("t", &m.url(prefix), None, None, &env).expect("open the S3 remote")
}

fn refs(m: &Moto, prefix: &str) -> BTreeMap<String, String> {
    backend(m, prefix, &m.secret)
        .list_refs()
        .expect("list refs")
        .into_iter()
        .map(|(k, v)| (k, v.to_hex()))
        .collect()
}

/// Everything under a store's `snapshots/` but the lock and its owner note, by path: what a
/// failed command must leave as it was.
fn store_files(sb: &Sandbox) -> BTreeMap<String, Vec<u8>> {
    let root = sb.state().join("snapshots");
    walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_file() && e.file_name() != "lock" && e.file_name() != "lock.owner"
        })
        .map(|e| {
            (
                e.path().strip_prefix(&root).unwrap().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn s3_push_then_pull_on_a_second_device_is_byte_identical() {
    let Some(m) = Moto::start("s3_push_then_pull_on_a_second_device_is_byte_identical") else {
        return;
    };
    let url = m.url("team/state");
    let (a, b) = (Dev::new(&m), Dev::new(&m));
    a.sb.generate();
    a.sb.save("from A");
    // A prefix that is not a remote yet is refused without --init, and nothing is recorded.
    let out = a.run(&["remote", "add", "origin", &url]);
    exited(&"remote add without --init", &out, 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--init"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.ok(&["remote", "add", "origin", &url, "--init"]);
    let list = a.ok(&["remote", "list"]);
    assert!(
        list.contains("origin\ts3\ts3://shelldone-test/team/state"),
        "{list}"
    );
    let pushed = a.json(&["sync", "push"]);
    assert!(pushed["objects_sent"].as_u64().unwrap() > 10, "{pushed}");
    // The layout of the directory remote, key for file.
    let on_remote = refs(&m, "team/state");
    assert_eq!(
        on_remote.get(&format!("{}/head", a.device())),
        Some(&a.head())
    );
    // B is a new machine: the remote exists, so no --init; pull brings the whole state.
    b.ok(&["remote", "add", "origin", &url]);
    let pulled = b.json(&["sync", "pull"]);
    assert_eq!(pulled["restored"], true, "{pulled}");
    assert_same(&b.sb.live(), &a.sb.live());
    assert!(b.ok(&["state", "check"]).contains("no problems"));
    // B changes a session and a preference, pushes; A pulls and sees it.
    std::fs::write(
        b.sb.state().join("sessions/s001/session.json"),
        "{\"id\":\"s001\",\"from\":\"B\"}",
    )
    .unwrap();
    std::fs::write(b.sb.config().join("config.toml"), "font_size = 20\n").unwrap();
    b.sb.save("from B");
    let small = b.json(&["sync", "push"]);
    let sent = small["objects_sent"].as_u64().unwrap();
    assert!(
        sent > 0 && sent < 20,
        "a small change sends a few objects: {small}"
    );
    let out = a.ok(&["sync", "pull"]);
    assert!(out.contains("fast-forwarded"), "{out}");
    assert_same(&a.sb.live(), &b.sb.live());
    // Pushing again with nothing new sends nothing; status sees both devices.
    assert_eq!(b.json(&["sync", "push"])["objects_sent"], 0);
    let st = a.ok(&["sync", "status"]);
    assert!(st.contains(&b.device()), "{st}");
}

#[test]
fn s3_server_killed_mid_push_then_the_next_push_completes() {
    let Some(m) = Moto::start("s3_server_killed_mid_push_then_the_next_push_completes") else {
        return;
    };
    let mut proxy = Proxy::start(m.port);
    let url = m.url("p");
    let mut a = Dev::new(&m);
    a.endpoint = proxy.endpoint();
    let b = Dev::new(&m);
    a.sb.generate();
    a.sb.save("from A");
    a.ok(&["remote", "add", "origin", &url, "--init"]);
    let dry = a.json(&["sync", "push", "--dry-run"]);
    let (objects, bytes) = (
        dry["objects"].as_u64().unwrap(),
        dry["bytes"].as_u64().unwrap(),
    );
    // The server goes away a third of the way through the objects' bytes.
    proxy.die_after(bytes / 3);
    let local_before = store_files(&a.sb);
    let out = a.run(&["sync", "push"]);
    assert!(proxy.is_dead(), "the push should have met the dead server");
    assert!(
        proxy.received.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the server answered before it died"
    );
    exited(&"push to a dead server", &out, 5);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("origin"), "{err}");
    // Nothing moved: no ref on the remote, nothing here (no remote-tracking ref).
    assert!(refs(&m, "p").is_empty());
    assert_eq!(
        store_files(&a.sb),
        local_before,
        "a failed push changed the store"
    );
    // The server is back. Some objects were stored before it died, not all: a dry run finds
    // what is left.
    proxy.revive();
    let left = a.json(&["sync", "push", "--dry-run"])["objects"]
        .as_u64()
        .unwrap();
    assert!(
        left > 0 && left < objects,
        "a third of the push stored some objects, not all: {left} of {objects} left"
    );
    // The next push completes, sending only what is missing.
    let pushed = a.json(&["sync", "push"]);
    assert_eq!(pushed["objects_sent"].as_u64().unwrap(), left, "{pushed}");
    assert_eq!(
        refs(&m, "p").get(&format!("{}/head", a.device())),
        Some(&a.head())
    );
    b.ok(&["remote", "add", "origin", &url]);
    b.ok(&["sync", "pull"]);
    assert_same(&b.sb.live(), &a.sb.live());
    assert!(b.ok(&["state", "check"]).contains("no problems"));
}

#[test]
fn s3_wrong_credentials_are_a_clear_error_and_change_nothing() {
    let Some(m) = Moto::start("s3_wrong_credentials_are_a_clear_error_and_change_nothing") else {
        return;
    };
    let url = m.url("x");
    let (a, b) = (Dev::new(&m), Dev::new(&m));
    a.sb.generate();
    a.sb.save("from A");
    a.ok(&["remote", "add", "origin", &url, "--init"]);
    a.ok(&["sync", "push"]);
    b.ok(&["remote", "add", "origin", &url]);
    std::fs::write(a.sb.config().join("config.toml"), "font_size = 30\n").unwrap();
    a.sb.save("change");
    let remote_before = refs(&m, "x");
    // From here every request must be signed with a key the server knows.
    m.enforce_auth(true);
    let wrong = |d: &Dev<'_>, args: &[&str]| {
        let mut c = d.cmd(args);
        c.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
        c.output().unwrap()
    };
    // A pull with a wrong secret: exit 5, a message that says what to check, nothing here
    // changed (no live file, no ref, no object).
    let before = (b.sb.live(), store_files(&b.sb));
    let out = wrong(&b, &["sync", "pull"]);
    exited(&"pull with a wrong secret", &out, 5);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("access denied") && err.contains("AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    assert_eq!(b.sb.live(), before.0);
    assert_eq!(store_files(&b.sb), before.1);
    // A push with a wrong secret moves nothing here (nor there: checked below).
    let local_before = store_files(&a.sb);
    let out = wrong(&a, &["sync", "push"]);
    exited(&"push with a wrong secret", &out, 5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("access denied"));
    assert_eq!(store_files(&a.sb), local_before);
    // An unknown key id is refused the same way; `remote add` with it records nothing.
    let c = Dev::new(&m);
    let mut cmd = c.cmd(&["remote", "add", "origin", &url]);
    cmd.env("AWS_ACCESS_KEY_ID", "AKIANOTAKEY");
    let out = cmd.output().unwrap();
    exited(&"remote add with an unknown key", &out, 5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("access denied"));
    assert!(!c.sb.state().join("snapshots/remotes.json").exists());
    // No credentials at all: a usage error that says where they come from.
    let mut cmd = c.cmd(&["remote", "add", "origin", &url]);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let out = cmd.output().unwrap();
    exited(&"remote add without credentials", &out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no AWS credentials"));
    // The remote's refs did not move; the right key still works (its listings with signing
    // checks off: see tests/common/moto.rs).
    m.enforce_auth(false);
    assert_eq!(refs(&m, "x"), remote_before);
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull"]);
    assert_same(&b.sb.live(), &a.sb.live());
}

#[test]
fn s3_two_devices_pushing_concurrently_lose_nothing() {
    let Some(m) = Moto::start("s3_two_devices_pushing_concurrently_lose_nothing") else {
        return;
    };
    let url = m.url("c");
    let (a, b) = (Dev::new(&m), Dev::new(&m));
    a.sb.generate();
    a.sb.save("base");
    a.ok(&["remote", "add", "origin", &url, "--init"]);
    a.ok(&["sync", "push"]);
    b.ok(&["remote", "add", "origin", &url]);
    b.ok(&["sync", "pull"]);
    for round in 0..3 {
        // Each device changes its own files, with new content (new objects for both).
        std::fs::write(
            a.sb.state().join("sessions/s001/scrollback.txt"),
            format!("A round {round}\n").repeat(2000 + round),
        )
        .unwrap();
        std::fs::write(
            b.sb.state().join("sessions/s002/scrollback.txt"),
            format!("B round {round}\n").repeat(3000 + round),
        )
        .unwrap();
        a.sb.save(&format!("A {round}"));
        b.sb.save(&format!("B {round}"));
        let (pa, pb) = (
            a.cmd(&["sync", "push"]).spawn().unwrap(),
            b.cmd(&["sync", "push"]).spawn().unwrap(),
        );
        let (oa, ob) = (
            pa.wait_with_output().unwrap(),
            pb.wait_with_output().unwrap(),
        );
        exited(&"A's concurrent push", &oa, 0);
        exited(&"B's concurrent push", &ob, 0);
        let r = refs(&m, "c");
        assert_eq!(r.get(&format!("{}/head", a.device())), Some(&a.head()));
        assert_eq!(r.get(&format!("{}/head", b.device())), Some(&b.head()));
        a.ok(&["sync", "pull"]);
        b.ok(&["sync", "pull"]);
        assert_same(&a.sb.live(), &b.sb.live());
        let got =
            std::fs::read_to_string(a.sb.state().join("sessions/s002/scrollback.txt")).unwrap();
        assert!(
            got.starts_with(&format!("B round {round}\n")),
            "B's change was lost"
        );
        let got =
            std::fs::read_to_string(b.sb.state().join("sessions/s001/scrollback.txt")).unwrap();
        assert!(
            got.starts_with(&format!("A round {round}\n")),
            "A's change was lost"
        );
        // Both pulls merged; push the merges so the next round starts from one history.
        a.ok(&["sync", "push"]);
        b.ok(&["sync", "pull"]);
        b.ok(&["sync", "push"]);
    }
    assert!(a.ok(&["state", "check"]).contains("no problems"));
}

#[test]
fn s3_a_concurrent_ref_update_loses_the_race_cleanly() {
    let Some(m) = Moto::start("s3_a_concurrent_ref_update_loses_the_race_cleanly") else {
        return;
    };
    let init = Dev::new(&m);
    init.ok(&["remote", "add", "origin", &m.url("race"), "--init"]);
    let id = |n: u8| objects_format::ObjectId([n; 32]);
    let head = "laptop-1/head".to_owned();
    let upd = |expected, new| RefUpdate {
        name: head.clone(),
        expected,
        new,
    };
    // Two writers of one namespace (two copies of one store) both see the ref absent; the
    // first creates it, the second's create (If-None-Match: *) fails.
    let (mut one, mut two) = (
        backend(&m, "race", &m.secret),
        backend(&m, "race", &m.secret),
    );
    assert!(one.list_refs().unwrap().is_empty());
    assert!(two.list_refs().unwrap().is_empty());
    one.update_refs(&[upd(None, Some(id(1)))]).unwrap();
    let e = two.update_refs(&[upd(None, Some(id(2)))]).unwrap_err();
    assert!(
        matches!(e, shelldone::Error::RefConflict { .. }),
        "expected a lost race, got {e}"
    );
    assert_eq!(refs(&m, "race").get(&head), Some(&id(1).to_hex()));
    // Both read the ref at 1; the first moves it to 3; the second, whose read said 1, writes
    // with If-Match on the ETag it read and loses, instead of overwriting 3 with 4.
    assert_eq!(one.list_refs().unwrap().get(&head), Some(&id(1)));
    assert_eq!(two.list_refs().unwrap().get(&head), Some(&id(1)));
    one.update_refs(&[upd(Some(id(1)), Some(id(3)))]).unwrap();
    let e = two
        .update_refs(&[upd(Some(id(1)), Some(id(4)))])
        .unwrap_err();
    match &e {
        shelldone::Error::RefConflict { found, .. } => assert_eq!(found, &id(3).to_hex()),
        other => panic!("expected a lost race, got {other}"),
    }
    assert_eq!(refs(&m, "race").get(&head), Some(&id(3).to_hex()));
    // The loser reads again and then succeeds.
    assert_eq!(two.list_refs().unwrap().get(&head), Some(&id(3)));
    two.update_refs(&[upd(Some(id(3)), Some(id(4)))]).unwrap();
    assert_eq!(refs(&m, "race").get(&head), Some(&id(4).to_hex()));
}

/// Issue #17: an S3 remote's marker carries its layout version; a newer device writes it at the
/// version it found until `remote upgrade`, after which an older device refuses it, naming both
/// versions, and changes nothing (docs/migrations.md, "Remote versions").
#[test]
fn s3_a_newer_remote_is_refused_and_upgrade_is_on_purpose() {
    let Some(m) = Moto::start("s3_a_newer_remote_is_refused_and_upgrade_is_on_purpose") else {
        return;
    };
    let url = m.url("versions/state");
    let (new, old) = (Dev::new(&m), Dev::new(&m));
    new.sb.generate();
    new.sb.save("from the newer device");
    new.ok(&["remote", "add", "origin", &url, "--init"]);
    old.ok(&["remote", "add", "origin", &url]);
    let as_newer = |args: &[&str]| {
        new.cmd(args)
            .env("SHELLDONE_TEST_REMOTE_FORMAT", "2")
            .output()
            .expect("spawn")
    };
    let o = as_newer(&["sync", "push"]);
    assert!(o.status.success(), "{o:?}");
    old.ok(&["sync", "pull"]);
    let o = as_newer(&["--json", "remote", "upgrade", "origin"]);
    assert!(o.status.success(), "{o:?}");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        doc,
        serde_json::json!({"remote": "origin", "from": 1, "to": 2})
    );

    std::fs::write(old.sb.config().join("old.toml"), "x = 1\n").expect("write");
    old.sb.save("from the older device");
    let local_before = store_files(&old.sb);
    for args in [&["sync", "push"][..], &["sync", "pull"]] {
        crate::migrations::refused_as_newer_remote(args, &old.run(args));
    }
    assert_eq!(
        store_files(&old.sb),
        local_before,
        "the older device's store"
    );
    // (This process reads remotes up to layout 1 too: the newer device looks for it.)
    let o = as_newer(&["sync", "pull"]);
    assert!(o.status.success(), "{o:?}");
    let log = new.ok(&["log"]);
    assert!(
        log.contains("from the newer device") && !log.contains("from the older device"),
        "the older device's refused push left nothing on the remote: {log}"
    );
}

/// boto3, from the tests' Python: dumps every key of the bucket into a folder (the key as the
/// path), or puts a file's bytes under a key. Independent of the client under test.
const BUCKET_TOOL: &str = r#"
import os, sys
import boto3
ep, key, secret, bucket, mode = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1")
if mode == "dump":
    out, token, n = sys.argv[6], None, 0
    for _ in range(100000):
        kw = {"Bucket": bucket}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_objects_v2(**kw)
        for o in page.get("Contents", []):
            path = os.path.join(out, o["Key"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
            n += 1
        if not page.get("IsTruncated"):
            break
        token = page["NextContinuationToken"]
    print(n)
else:
    with open(sys.argv[7], "rb") as f:
        s3.put_object(Bucket=bucket, Key=sys.argv[6], Body=f.read())
"#;

fn bucket_tool(m: &Moto, args: &[&str]) -> String {
    let o = Command::new("python3")
        .args([
            "-c",
            BUCKET_TOOL,
            &m.endpoint,
            &m.key_id,
            &m.secret,
            &m.bucket,
        ])
        .args(args)
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "bucket tool {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every object of the bucket, read from the server: (key, bytes), and the folder it was
/// dumped into (keys as paths).
fn bucket(m: &Moto) -> (tempfile::TempDir, BTreeMap<String, Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let n: usize = bucket_tool(m, &["dump", dir.path().to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    let all: BTreeMap<String, Vec<u8>> = walkdir::WalkDir::new(dir.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path()
                    .strip_prefix(dir.path())
                    .unwrap()
                    .display()
                    .to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    assert_eq!(all.len(), n, "every key listed was dumped");
    (dir, all)
}

fn put_object(m: &Moto, key: &str, bytes: &[u8]) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    bucket_tool(m, &["put", key, f.path().to_str().unwrap()]);
}

/// Issue #16 over S3: an encrypted S3 remote holds only keyed names and padded ciphertext (no
/// known string nor its base64 in any key or object the server holds), a second device joins
/// through the key trust flow and pulls byte-identical, dedup works, and a flipped byte in any
/// object the server holds is refused with nothing changed.
#[test]
fn s3_encrypted_remote_holds_only_ciphertext_and_a_second_device_joins() {
    use crate::encrypted::{
        assert_no_plaintext, device_with_known_state, local_state, names_and_bytes,
    };
    let Some(m) =
        Moto::start("s3_encrypted_remote_holds_only_ciphertext_and_a_second_device_joins")
    else {
        return;
    };
    let url = m.url("enc/state");
    let a = Dev::on(device_with_known_state(), &m);
    let b = Dev::on(crate::vault::device(), &m);
    a.ok(&["remote", "add", "cloud", &url, "--init", "--encrypt"]);
    let pushed = a.json(&["sync", "push", "cloud"]);
    assert!(pushed["objects_sent"].as_u64().unwrap() > 10, "{pushed}");

    // Known-plaintext search over every key and every object the server holds.
    let (dump, all) = bucket(&m);
    assert!(
        all.len() as u64 > pushed["objects_sent"].as_u64().unwrap(),
        "the objects, the ref records, the key file, the marker: {}",
        all.len()
    );
    assert_no_plaintext(&names_and_bytes(dump.path()), &a.device(), "the S3 bucket");
    // Names are keyed, sizes bucketed: no object is smaller than the smallest bucket, and no
    // key names a snapshot or the device.
    let head = a.head();
    for (k, bytes) in &all {
        assert!(!k.contains(&head) && !k.contains(&a.device()), "{k}");
        if k.starts_with("enc/state/objects/") {
            assert!(bytes.len() >= 256, "{k} is {} bytes", bytes.len());
        }
    }

    // B joins: not a reader yet, a clear key error, nothing changed.
    b.ok(&["remote", "add", "cloud", &url, "--encrypt"]);
    let before = local_state(&b.sb);
    let out = b.run(&["sync", "pull", "cloud"]);
    exited(&"pull before being trusted", &out, crate::vault::KEY_EXIT);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not one of its readers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        local_state(&b.sb) == before,
        "a refused pull changes nothing"
    );
    // A trusts B and pushes (the key file re-wrapped); B pulls byte-identical.
    crate::vault::trust(&a.sb, "bee", &b.sb);
    a.sb.save("A trusts B");
    a.ok(&["sync", "push", "cloud"]);
    let pulled = b.json(&["sync", "pull", "cloud"]);
    assert_eq!(pulled["restored"], true, "{pulled}");
    assert_same(&b.sb.live(), &a.sb.live());
    assert!(b.ok(&["state", "check"]).contains("no problems"));
    // Dedup: B's push of the same content sends no object.
    let again = b.json(&["sync", "push", "cloud"]);
    assert_eq!(again["objects_sent"], 0, "{again}");

    // A flipped byte in each object a small push wrote: refused, nothing staged, no ref moved.
    std::fs::write(a.sb.config().join("later.toml"), "x = 1\n").unwrap();
    a.sb.save("A: later");
    let (_d, old) = bucket(&m);
    a.ok(&["sync", "push", "cloud"]);
    let (_d, now) = bucket(&m);
    let fresh: Vec<(&String, &Vec<u8>)> = now
        .iter()
        .filter(|(k, _)| !old.contains_key(*k) && k.starts_with("enc/state/objects/"))
        .collect();
    assert!(
        fresh.len() >= 4 && fresh.len() < 40,
        "the push wrote objects and ref records: {}",
        fresh.len()
    );
    for (key, bytes) in &fresh {
        let mut bad = (*bytes).clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x20;
        put_object(&m, key, &bad);
        crate::encrypted::forget_verified_records(&b.sb, "cloud");
        let before = local_state(&b.sb);
        let o = b.run(&["sync", "pull", "cloud"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            [Some(3), Some(5)].contains(&o.status.code()),
            "{key}: {:?} {err}",
            o.status
        );
        assert!(err.contains("fails authentication"), "{key}: {err}");
        assert!(
            local_state(&b.sb) == before,
            "{key}: nothing staged, no ref moved"
        );
        put_object(&m, key, bytes);
    }
    b.ok(&["sync", "pull", "cloud"]);
    assert_same(&b.sb.live(), &a.sb.live());
}

/// Puts every file under `root` at `<prefix>/<its path under root>` in the server's bucket
/// (`put`), or writes every key under `<prefix>/` to a file there (`get`): boto3, as moto's
/// setup uses.
fn s3_files(m: &Moto, how: &str, root: &std::path::Path, prefix: &str) {
    const SCRIPT: &str = r#"
import os, sys
import boto3
ep, bucket, key_id, secret, how, root, prefix = sys.argv[1:8]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1")
if how == "put":
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                s3.put_object(Bucket=bucket, Key=prefix + "/" + os.path.relpath(p, root), Body=f.read())
else:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            p = os.path.join(root, o["Key"][len(prefix) + 1:])
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
"#;
    let o = Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            &m.endpoint,
            &m.bucket,
            &m.key_id,
            &m.secret,
            how,
        ])
        .arg(root)
        .arg(prefix)
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "s3 {how}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every file under `root`, by path.
fn files_under(root: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(root).unwrap().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// `fixtures/s3-remote-v1` (every key a push to an S3 remote of layout version 1 wrote, made
/// once by `fixtures/make-s3-remote-v1.sh`), uploaded to moto under a prefix: a new device adds
/// it (it exists: no `--init`), pulls, and gets exactly `fixtures/store-v1`'s live files and
/// both snapshots; the pull writes nothing to the remote.
#[test]
fn a_version_1_s3_remote_still_pulls() {
    let Some(m) = Moto::start("a_version_1_s3_remote_still_pulls") else {
        return;
    };
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/s3-remote-v1");
    let want = files_under(&fixture);
    assert_eq!(
        want.get("shelldone-remote").map(Vec::as_slice),
        Some(&b"shelldone-s3-remote 1\n"[..]),
        "layout version 1"
    );
    s3_files(&m, "put", &fixture, "old/state");
    let b = Dev::new(&m);
    b.ok(&["remote", "add", "origin", &m.url("old/state")]);
    b.ok(&["sync", "pull"]);
    crate::migrations::pulled_store_v1(&b.sb);
    let back = tempfile::tempdir().unwrap();
    s3_files(&m, "get", back.path(), "old/state");
    assert!(
        files_under(back.path()) == want,
        "a pull writes nothing to the remote"
    );
}

/// Issue #16: every device lost, a new machine recovers an encrypted S3 remote with the paper
/// key (the story of `the_paper_key_opens_an_encrypted_remote_when_every_device_is_lost`, over
/// moto).
#[test]
fn the_paper_key_opens_an_encrypted_s3_remote_when_every_device_is_lost() {
    let Some(m) =
        Moto::start("the_paper_key_opens_an_encrypted_s3_remote_when_every_device_is_lost")
    else {
        return;
    };
    let keys = || {
        let (_dump, all) = bucket(&m);
        all.into_iter().collect::<Vec<_>>()
    };
    let objects = || {
        bucket(&m)
            .1
            .keys()
            .filter(|k| k.starts_with("paper/objects/"))
            .count()
    };
    let bytes = || {
        let (dump, _) = bucket(&m);
        crate::encrypted::names_and_bytes(dump.path())
    };
    crate::encrypted::paper_key_recovery(
        &m.url("paper"),
        true,
        &|c| m.env(c, &m.endpoint),
        &crate::encrypted::Seen {
            files: &keys,
            objects: Some(&objects),
            bytes: &bytes,
        },
    );
}

/// The encrypted S3 remote's key file is read once per device, then kept locally: neither a
/// later push nor a later pull asks the server for it again while `%keys/head` names it
/// (moto's request log), and both still work.
#[test]
fn s3_an_encrypted_remote_reads_its_key_file_once_per_device() {
    let Some(m) = Moto::start("s3_an_encrypted_remote_reads_its_key_file_once_per_device") else {
        return;
    };
    let url = m.url("once");
    let a = Dev::on(crate::vault::device(), &m);
    let b = Dev::on(crate::vault::device(), &m);
    a.sb.generate();
    a.sb.save("A: first");
    crate::vault::trust(&a.sb, "bee", &b.sb);
    a.sb.save("A trusts B");
    a.ok(&["remote", "add", "cloud", &url, "--init", "--encrypt"]);
    a.ok(&["sync", "push", "cloud"]);
    b.ok(&["remote", "add", "cloud", &url, "--encrypt"]);
    b.ok(&["sync", "pull", "cloud"]);
    let key_file = refs(&m, "once")["%keys/head"].clone();
    let key_file_get = format!(
        "GET /{}/once/objects/{}/{}",
        m.bucket,
        &key_file[..2],
        &key_file[2..]
    );
    let asked = |from: usize| {
        m.requests()[from..]
            .iter()
            .filter(|r| r.split('?').next() == Some(key_file_get.as_str()))
            .count()
    };
    assert!(
        asked(0) >= 1,
        "B's first pull read the key file: {key_file_get}"
    );
    let from = m.requests().len();
    std::fs::write(a.sb.config().join("later.toml"), "x = 1\n").unwrap();
    a.sb.save("A: later");
    a.ok(&["sync", "push", "cloud"]);
    b.ok(&["sync", "pull", "cloud"]);
    assert!(
        m.requests().len() > from,
        "the push and the pull were logged"
    );
    assert_eq!(asked(from), 0, "the key file was not read again");
    assert_same(&b.sb.live(), &a.sb.live());
    // A damaged copy is ignored: the key file is read again, and the copy replaced; the
    // store's check does not mind it.
    let copy = b.sb.state().join("snapshots/remotes/cloud.key-file");
    let mut bad = std::fs::read(&copy).unwrap();
    bad[20] ^= 0x01;
    std::fs::write(&copy, &bad).unwrap();
    assert!(b.ok(&["state", "check"]).contains("no problems"));
    let from = m.requests().len();
    b.ok(&["sync", "pull", "cloud"]);
    assert_eq!(asked(from), 1, "the damaged copy was not used");
    assert_ne!(std::fs::read(&copy).unwrap(), bad, "and was replaced");
}
