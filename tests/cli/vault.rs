//! Issue #14: the secret vault and the device keys, through the real binary: the passphrase
//! path everywhere, the kernel keyring where this machine lets a process use it, the Secret
//! Service on a session bus and a GNOME Keyring daemon the test starts; two devices
//! trusting, pulling and revoking over a directory remote; a wrong key changing nothing; no
//! secret's plaintext (nor its base64) anywhere in the store or on a directory or git remote.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};

use crate::support::{GitDaemon, Sandbox, ci, exited, run_with_stdin};

pub(crate) const PASS: &str = "correct horse battery staple";
pub(crate) const KEY_EXIT: i32 = 8;

/// Runs shelldone with `pass` as SHELLDONE_VAULT_PASSPHRASE (none: unset) and `stdin` piped in.
pub(crate) fn run(sb: &Sandbox, pass: Option<&str>, stdin: &[u8], args: &[&str]) -> Output {
    let mut c = sb.cmd(args);
    match pass {
        Some(p) => c.env("SHELLDONE_VAULT_PASSPHRASE", p),
        None => c.env_remove("SHELLDONE_VAULT_PASSPHRASE"),
    };
    run_with_stdin(c, stdin)
}

/// Like [`run`], expecting exit `code`; returns stdout.
pub(crate) fn expect(
    sb: &Sandbox,
    pass: Option<&str>,
    stdin: &[u8],
    code: i32,
    args: &[&str],
) -> String {
    let o = run(sb, pass, stdin, args);
    let mut s = exited(&args, &o, code);
    if code != 0 {
        s.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    s
}

pub(crate) fn ok(sb: &Sandbox, stdin: &[u8], args: &[&str]) -> String {
    expect(sb, Some(PASS), stdin, 0, args)
}

/// A device with passphrase-protected keys.
pub(crate) fn device() -> Sandbox {
    let sb = Sandbox::new();
    ok(&sb, b"", &["key", "init", "--backend", "passphrase"]);
    sb
}

/// `key show` of `sb`: its two public keys, as another device's `key trust` takes them.
pub(crate) fn pubkeys(sb: &Sandbox) -> Vec<String> {
    ok(sb, b"", &["key", "show"])
        .lines()
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

pub(crate) fn trust(by: &Sandbox, name: &str, of: &Sandbox) {
    let keys = pubkeys(of);
    let mut args = vec!["key", "trust", name];
    args.extend(keys.iter().map(String::as_str));
    ok(by, b"", &args);
}

/// Every file under `dir` with its bytes.
pub(crate) fn snapshot_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    if !dir.exists() {
        return v;
    }
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.expect("walk");
        if e.file_type().is_file() {
            v.push((
                e.path().display().to_string(),
                std::fs::read(e.path()).expect("read"),
            ));
        }
    }
    v
}

#[test]
fn passphrase_vault_keeps_only_ciphertext_in_private_files() {
    let sb = device();
    let value = b"s3cr3t-token-value-4242";
    ok(
        &sb,
        b"s3cr3t-token-value-4242\n",
        &["secret", "set", "api_token"],
    );
    assert_eq!(
        ok(&sb, b"", &["secret", "get", "api_token"]).as_bytes(),
        value,
        "get gives the value back, without the newline stdin had"
    );
    assert_eq!(ok(&sb, b"", &["secret", "list"]), "api_token\n");
    let dir = sb.state().join("secrets");
    let f = dir.join("api_token.age");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let ct = std::fs::read(&f).unwrap();
    assert!(ct.starts_with(b"age-encryption.org/v1\n"), "an age file");
    assert!(!contains(&ct, value), "the vault file holds no plaintext");
    // The private keys are outside every snapshot root, and encrypted.
    let keyfile = std::fs::read(sb.state().join("keys/device.age")).unwrap();
    assert!(
        !contains(&keyfile, b"AGE-SECRET-KEY-"),
        "device keys are encrypted"
    );
    // A value never comes from the command line: there is no such argument.
    expect(&sb, Some(PASS), b"", 2, &["secret", "set", "x", "value"]);
    // Status says which backend, and whether the keys unlock (without asking).
    let st: serde_json::Value =
        serde_json::from_str(&ok(&sb, b"", &["--json", "vault", "status"])).unwrap();
    assert_eq!(st["backend"], "passphrase");
    assert_eq!(st["unlocked"], true);
    assert_eq!(st["secrets"], 1);
    let st: serde_json::Value =
        serde_json::from_str(&expect(&sb, None, b"", 0, &["--json", "vault", "status"])).unwrap();
    assert_eq!(st["unlocked"], false, "no passphrase given: locked");
    ok(&sb, b"", &["secret", "rm", "api_token"]);
    assert!(!f.exists());
    assert_eq!(ok(&sb, b"", &["secret", "list"]), "");
    expect(&sb, Some(PASS), b"", 2, &["secret", "get", "api_token"]);
}

#[test]
fn a_wrong_key_changes_nothing() {
    let sb = device();
    ok(&sb, b"one", &["secret", "set", "a"]);
    ok(&sb, b"two", &["secret", "set", "b"]);
    let other = device();
    let before = (
        snapshot_of(&sb.state().join("secrets")),
        snapshot_of(&sb.state().join("keys")),
    );
    let wrong = Some("wrong passphrase");
    for args in [
        &["secret", "set", "a"][..],
        &["secret", "set", "c"],
        &["secret", "get", "a"],
        &["key", "export", "--paper"],
        &["key", "revoke", "nobody"],
    ] {
        let out = expect(
            &sb,
            wrong,
            b"changed",
            if args[1] == "revoke" { 2 } else { KEY_EXIT },
            args,
        );
        if args[1] != "revoke" {
            assert!(out.contains("wrong vault passphrase"), "{args:?}: {out}");
        }
    }
    let mut args = vec!["key", "trust", "other"];
    let keys = pubkeys(&other);
    args.extend(keys.iter().map(String::as_str));
    let out = expect(&sb, wrong, b"", KEY_EXIT, &args);
    assert!(out.contains("wrong vault passphrase"), "{out}");
    // A wrong identity: another device's key file (same passphrase) in place of this one's.
    let mine = sb.state().join("keys/device.age");
    let saved = std::fs::read(&mine).unwrap();
    std::fs::copy(other.state().join("keys/device.age"), &mine).unwrap();
    let out = expect(
        &sb,
        Some(PASS),
        b"changed",
        KEY_EXIT,
        &["secret", "set", "a"],
    );
    assert!(out.contains("wrong identity"), "{out}");
    std::fs::write(&mine, &saved).unwrap();
    // No passphrase at all, and no terminal to ask on.
    let out = expect(&sb, None, b"changed", KEY_EXIT, &["secret", "set", "a"]);
    assert!(out.contains("SHELLDONE_VAULT_PASSPHRASE"), "{out}");
    let after = (
        snapshot_of(&sb.state().join("secrets")),
        snapshot_of(&sb.state().join("keys")),
    );
    assert!(before == after, "the vault and its keys are byte-identical");
    assert_eq!(ok(&sb, b"", &["secret", "get", "a"]), "one");
}

fn dir_remote() -> (tempfile::TempDir, String) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("remote").to_str().unwrap().to_owned();
    (t, p)
}

#[test]
fn two_devices_trust_pull_read_and_revoke() {
    let (_t, url) = dir_remote();
    let a = device();
    a.save("A: first");
    a.ok(&["remote", "add", "origin", &url, "--init"]);
    ok(&a, b"set-before-trust", &["secret", "set", "early"]);
    a.save("A: a secret");
    a.ok(&["sync", "push"]);
    let b = device();
    b.ok(&["remote", "add", "origin", &url]);
    b.ok(&["sync", "pull"]);
    assert_eq!(ok(&b, b"", &["secret", "list"]), "early\n");
    // B is not trusted yet: a clear error, never garbage.
    let out = expect(&b, Some(PASS), b"", KEY_EXIT, &["secret", "get", "early"]);
    assert!(out.contains("was not encrypted to this device"), "{out}");
    // A trusts B: the existing secret is re-encrypted to include it.
    trust(&a, "bee", &b);
    ok(&a, b"set-after-trust", &["secret", "set", "later"]);
    a.save("A: trusts B");
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull"]);
    assert_eq!(ok(&b, b"", &["secret", "get", "early"]), "set-before-trust");
    assert_eq!(ok(&b, b"", &["secret", "get", "later"]), "set-after-trust");
    let list = ok(&b, b"", &["key", "list"]);
    assert!(list.contains("bee "), "B learnt the trust list: {list}");
    // B's own secrets reach A (A put itself on the list when it trusted B).
    ok(&b, b"from-b", &["secret", "set", "bs"]);
    b.save("B: a secret");
    b.ok(&["sync", "push"]);
    a.ok(&["sync", "pull"]);
    assert_eq!(ok(&a, b"", &["secret", "get", "bs"]), "from-b");
    // A revokes B: what A sets afterwards B cannot read.
    ok(&a, b"", &["key", "revoke", "bee"]);
    ok(&a, b"after-revoke", &["secret", "set", "newest"]);
    a.save("A: revokes B");
    a.ok(&["sync", "push"]);
    b.ok(&["sync", "pull"]);
    let out = expect(&b, Some(PASS), b"", KEY_EXIT, &["secret", "get", "newest"]);
    assert!(out.contains("was not encrypted to this device"), "{out}");
    assert!(ok(&b, b"", &["key", "list"]).contains("bee (revoked)"));
}

#[test]
fn a_paper_key_restores_access_on_a_new_device() {
    let (_t, url) = dir_remote();
    let a = device();
    ok(&a, b"kept-safe", &["secret", "set", "tok"]);
    let paper = ok(&a, b"", &["key", "export", "--paper"]);
    let grouped: String = paper
        .lines()
        .skip_while(|l| !l.trim().starts_with("AGE-SECRET-KEY-1"))
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    assert!(grouped.starts_with("AGE-SECRET-KEY-1\n"), "{paper}");
    a.save("A");
    a.ok(&["remote", "add", "origin", &url, "--init"]);
    a.ok(&["sync", "push"]);
    let c = Sandbox::new();
    c.ok(&["remote", "add", "origin", &url]);
    c.ok(&["sync", "pull"]);
    // A key that is not the vault's: refused, nothing written.
    let stranger = device();
    let wrong = ok(&stranger, b"", &["key", "export", "--paper"]);
    let wrong = wrong
        .lines()
        .find_map(|l| l.trim().strip_prefix("whole: "))
        .unwrap()
        .to_owned();
    let before = snapshot_of(&c.state().join("secrets"));
    let out = expect(
        &c,
        Some(PASS),
        wrong.as_bytes(),
        KEY_EXIT,
        &["key", "import"],
    );
    assert!(out.contains("not the vault's paper recovery key"), "{out}");
    assert!(snapshot_of(&c.state().join("secrets")) == before);
    assert!(!c.state().join("keys/device.json").exists());
    // The paper key, typed back in its groups: this device gets keys and reads the vault.
    ok(&c, grouped.as_bytes(), &["vault", "unlock", "--recovery"]);
    assert_eq!(ok(&c, b"", &["secret", "get", "tok"]), "kept-safe");
}

/// Runs `shelldone ARGS` (or another program) in the kernel session keyring `session`
/// (`keyctl session NAME`, keyutils), as a login session has one: a process without one (a
/// container's shell, cron) cannot keep keys in the kernel keyring (docs/keys.md).
fn in_session(sb: &Sandbox, session: &str, stdin: &[u8], prog: &[&str]) -> Output {
    let mut c = std::process::Command::new("keyctl");
    c.args(["session", session]);
    if prog[0] == "shelldone" {
        c.arg(env!("CARGO_BIN_EXE_shelldone")).args(&prog[1..]);
    } else {
        c.args(prog);
    }
    // No session bus: the keyring backend then picks the kernel keyutils store.
    c.env("SHELLDONE_STATE_DIR", sb.state())
        .env("SHELLDONE_CONFIG_DIR", sb.config())
        .env_remove("SHELLDONE_VAULT_PASSPHRASE")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    run_with_stdin(c, stdin)
}

fn session_ok(sb: &Sandbox, session: &str, stdin: &[u8], prog: &[&str]) -> String {
    exited(&prog, &in_session(sb, session, stdin, prog), 0)
}

#[test]
fn the_kernel_keyring_backend_when_this_machine_has_one() {
    if std::process::Command::new("keyctl")
        .arg("--version")
        .output()
        .is_err()
    {
        ci::cannot_run(
            "the keyring backend test",
            "keyctl (apt package keyutils) is not installed",
        );
        return;
    }
    let sb = Sandbox::new();
    let session = format!("shelldone-test-{}", std::process::id());
    let st: serde_json::Value = serde_json::from_str(&session_ok(
        &sb,
        &session,
        b"",
        &["shelldone", "--json", "vault", "status"],
    ))
    .unwrap();
    if st["keyring_available"] != true {
        ci::cannot_run(
            "the keyring backend test",
            "the kernel keyring (keyctl) cannot be used here, even in a session keyring (a seccomp profile, as Docker's default, blocks it)",
        );
        return;
    }
    // No passphrase anywhere: the keyring holds the keys.
    session_ok(
        &sb,
        &session,
        b"",
        &["shelldone", "key", "init", "--backend", "keyring"],
    );
    session_ok(
        &sb,
        &session,
        b"in-the-keyring",
        &["shelldone", "secret", "set", "k"],
    );
    assert_eq!(
        session_ok(&sb, &session, b"", &["shelldone", "secret", "get", "k"]),
        "in-the-keyring"
    );
    let st: serde_json::Value = serde_json::from_str(&session_ok(
        &sb,
        &session,
        b"",
        &["shelldone", "--json", "vault", "status"],
    ))
    .unwrap();
    assert_eq!(st["backend"], "keyring");
    assert_eq!(st["keyring_store"], "keyutils", "no session bus: keyutils");
    assert_eq!(st["unlocked"], true);
    assert!(!sb.state().join("keys/device.age").exists(), "no key file");
    // The keyring entry gone (a reboot): a clear error, and nothing changed.
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sb.state().join("keys/device.json")).unwrap())
            .unwrap();
    let desc = format!(
        "keyring-rs:device-key {}@shelldone",
        rec["age"].as_str().unwrap()
    );
    // The key outlives each command's session through the user's persistent keyring: find it
    // there and invalidate it, as `keyring`'s delete does.
    session_ok(
        &sb,
        &session,
        b"",
        &[
            "sh",
            "-c",
            "keyctl get_persistent @s >/dev/null && id=$(keyctl search @s user \"$1\") && keyctl invalidate \"$id\"",
            "sh",
            &desc,
        ],
    );
    let before = snapshot_of(&sb.state().join("secrets"));
    let o = in_session(&sb, &session, b"x", &["shelldone", "secret", "set", "k"]);
    assert_eq!(o.status.code(), Some(KEY_EXIT));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("keyring has no key"), "{err}");
    assert!(snapshot_of(&sb.state().join("secrets")) == before);
}

/// A Secret Service of the test's own: a session bus (`dbus-daemon` with a config of its own:
/// no service activation, so a stopped keyring daemon stays gone) and a real
/// `gnome-keyring-daemon` on it whose login keyring is made and unlocked with a password given
/// on stdin. Both processes are killed when it is dropped.
struct SecretService {
    dir: tempfile::TempDir,
    bus: std::process::Child,
    keyring: Option<std::process::Child>,
    address: String,
}

impl SecretService {
    /// Starts the bus and the keyring daemon; `Err` says why it could not.
    fn start() -> Result<SecretService, String> {
        use std::io::BufRead;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        for d in ["run", "data", "home"] {
            std::fs::create_dir(dir.path().join(d)).map_err(|e| e.to_string())?;
        }
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}/run/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.path().display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut bus = std::process::Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("dbus-daemon: {e}"))?;
        // The first line is the address; EOF (the daemon exited) ends the wait.
        let mut address = String::new();
        let read =
            std::io::BufReader::new(bus.stdout.take().expect("piped")).read_line(&mut address);
        let address = address.trim().to_owned();
        let mut ss = SecretService {
            dir,
            bus,
            keyring: None,
            address,
        };
        if read.is_err() || ss.address.is_empty() {
            return Err("dbus-daemon printed no address".into());
        }
        let mut keyring = ss
            .env(std::process::Command::new("gnome-keyring-daemon"))
            .args(["--foreground", "--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(ss.dir.path().join("keyring.err"))
                    .map_err(|e| e.to_string())?,
            ))
            .spawn()
            .map_err(|e| format!("gnome-keyring-daemon: {e}"))?;
        // `--unlock` reads the login keyring's password from stdin (and creates that keyring,
        // the default collection, when there is none).
        let mut stdin = keyring.stdin.take().expect("piped");
        ss.keyring = Some(keyring);
        stdin
            .write_all(b"the login password")
            .map_err(|e| e.to_string())?;
        drop(stdin);
        Ok(ss)
    }

    /// `c` with this bus and the keyring daemon's folders.
    fn env(&self, mut c: std::process::Command) -> std::process::Command {
        let d = self.dir.path();
        c.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("XDG_DATA_HOME", d.join("data"))
            .env("HOME", d.join("home"));
        c
    }

    /// What the keyring daemon said on stderr (for a failure's message).
    fn keyring_stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keyring.err")).unwrap_or_default()
    }

    /// Stops the keyring daemon (the bus stays: the service is gone from it).
    fn stop_keyring(&mut self) {
        if let Some(mut k) = self.keyring.take() {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        self.stop_keyring();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// Runs shelldone on `ss`'s bus (none: with no session bus), without a passphrase.
fn on_bus(sb: &Sandbox, ss: Option<&SecretService>, stdin: &[u8], args: &[&str]) -> Output {
    let mut c = sb.cmd(args);
    c.env_remove("SHELLDONE_VAULT_PASSPHRASE")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    if let Some(ss) = ss {
        c.env("DBUS_SESSION_BUS_ADDRESS", &ss.address);
    }
    run_with_stdin(c, stdin)
}

fn bus_ok(sb: &Sandbox, ss: &SecretService, stdin: &[u8], args: &[&str]) -> String {
    exited(&args, &on_bus(sb, Some(ss), stdin, args), 0)
}

#[test]
fn the_secret_service_backend_on_a_session_bus() {
    for tool in ["dbus-daemon", "gnome-keyring-daemon"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            ci::cannot_run(
                "the Secret Service test",
                &format!("{tool} is not installed (apt packages dbus-daemon, gnome-keyring)"),
            );
            return;
        }
    }
    let mut ss = match SecretService::start() {
        Ok(ss) => ss,
        Err(why) => {
            ci::cannot_run("the Secret Service test", &why);
            return;
        }
    };
    let sb = Sandbox::new();
    // The service answers once the daemon has taken its name on the bus: wait, bounded.
    let mut st = serde_json::Value::Null;
    for _ in 0..100 {
        st = serde_json::from_str(&bus_ok(&sb, &ss, b"", &["--json", "vault", "status"]))
            .expect("status json");
        if st["keyring_here"] == "secret-service" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if st["keyring_here"] != "secret-service" {
        ci::cannot_run(
            "the Secret Service test",
            &format!(
                "gnome-keyring-daemon did not answer on the test's bus within 10 s ({st}): {}",
                ss.keyring_stderr()
            ),
        );
        return;
    }
    // `--backend keyring` picks the Secret Service when a session bus answers; no passphrase.
    let said = bus_ok(&sb, &ss, b"", &["key", "init", "--backend", "keyring"]);
    assert!(said.contains("keyring (Secret Service)"), "{said}");
    bus_ok(&sb, &ss, b"kept-by-gnome-keyring", &["secret", "set", "k"]);
    assert_eq!(
        bus_ok(&sb, &ss, b"", &["secret", "get", "k"]),
        "kept-by-gnome-keyring"
    );
    let st: serde_json::Value =
        serde_json::from_str(&bus_ok(&sb, &ss, b"", &["--json", "vault", "status"])).unwrap();
    assert_eq!(st["backend"], "keyring");
    assert_eq!(st["keyring_store"], "secret-service");
    assert_eq!(st["unlocked"], true, "{st}");
    let text = bus_ok(&sb, &ss, b"", &["vault", "status"]);
    assert!(
        text.contains("backend: keyring (Secret Service)") && text.contains("unlocked: yes"),
        "{text}"
    );
    // The record says where the keys are; no file holds them.
    let keys = sb.state().join("keys");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(keys.join("device.json")).unwrap()).unwrap();
    assert_eq!(rec["store"], "secret-service");
    let names: Vec<String> = snapshot_of(&keys).into_iter().map(|(p, _)| p).collect();
    assert_eq!(names, [keys.join("device.json").display().to_string()]);
    assert!(!contains(&readable_bytes(&sb.state()), b"AGE-SECRET-KEY-"));
    // The keyring daemon gone (the bus stays), then no session bus at all: a clear exit 8,
    // never a fall back to another store, and nothing changed.
    ss.stop_keyring();
    let before = (snapshot_of(&sb.state().join("secrets")), snapshot_of(&keys));
    for (bus, why) in [
        (Some(&ss), "does not answer here"),
        (None, "DBUS_SESSION_BUS_ADDRESS is not set"),
    ] {
        for (args, stdin) in [
            (&["secret", "get", "k"][..], &b""[..]),
            (&["secret", "set", "k"], b"changed"),
        ] {
            let o = on_bus(&sb, bus, stdin, args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(KEY_EXIT), "{args:?}: {err}");
            assert!(
                err.contains("Secret Service")
                    && err.contains(why)
                    && err.contains("nothing was changed"),
                "{args:?}: {err}"
            );
            assert!(o.stdout.is_empty(), "no value printed");
        }
        let st: serde_json::Value =
            serde_json::from_slice(&on_bus(&sb, bus, b"", &["--json", "vault", "status"]).stdout)
                .unwrap();
        assert_eq!(st["unlocked"], false, "{st}");
        assert_eq!(st["keyring_store"], "secret-service");
    }
    let after = (snapshot_of(&sb.state().join("secrets")), snapshot_of(&keys));
    assert!(before == after, "the vault and its keys are byte-identical");
    // Forcing the Secret Service with no session bus: refused (libdbus is not left to
    // autolaunch one), and no record is written.
    let fresh = Sandbox::new();
    let o = on_bus(
        &fresh,
        None,
        b"",
        &["key", "init", "--backend", "secret-service"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(KEY_EXIT), "{err}");
    assert!(err.contains("DBUS_SESSION_BUS_ADDRESS is not set"), "{err}");
    assert!(!fresh.state().join("keys/device.json").exists());
}

/// True when `needle` occurs in `hay`.
pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every byte under `dir` as stored, plus the content of every zstd frame in it (objects are
/// compressed, so a plaintext search of the raw files alone would prove nothing).
pub(crate) fn readable_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for (_, bytes) in snapshot_of(dir) {
        for at in 0..bytes.len().saturating_sub(4) {
            if bytes[at..at + 4] == [0x28, 0xb5, 0x2f, 0xfd] {
                let mut dec = Vec::new();
                if let Ok(d) = zstd::stream::read::Decoder::new(&bytes[at..]) {
                    let d = d.single_frame();
                    let _ =
                        std::io::Read::read_to_end(&mut std::io::Read::take(d, 64 << 20), &mut dec);
                }
                all.extend(dec);
            }
        }
        all.extend(bytes);
    }
    all
}

/// Every object of a git repository, decompressed (`git cat-file --batch-all-objects`).
pub(crate) fn git_objects(repo: &Path) -> Vec<u8> {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .output()
        .expect("git cat-file");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!o.stdout.is_empty(), "the git remote has objects");
    o.stdout
}

pub(crate) fn base64(b: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    s
}

#[test]
fn a_stored_secret_is_nowhere_in_the_store_or_on_the_remotes() {
    let secret = b"ghp_Zq8TkY3vN1pX7wR2mL5sD9fH4jC6bA0eK1uQ";
    let tmp = tempfile::tempdir().unwrap();
    let srv = GitDaemon::start(&tmp.path().join("srv"));
    let (git_url, git_repo) = srv.repo("state.git");
    let dir_url = tmp.path().join("dir-remote").to_str().unwrap().to_owned();
    let a = device();
    std::fs::create_dir_all(a.config()).unwrap();
    std::fs::write(
        a.config().join("shelldone.toml"),
        "[snapshot]\nredact = true\n",
    )
    .unwrap();
    let mut stdin = secret.to_vec();
    stdin.push(b'\n');
    ok(&a, &stdin, &["secret", "set", "github"]);
    // The secret in a scrollback file and a journal line (as a terminal would have it).
    let sess = a.state().join("sessions/s1");
    std::fs::create_dir_all(&sess).unwrap();
    let mut scroll = b"$ export GH_TOKEN=".to_vec();
    scroll.extend_from_slice(secret);
    scroll.extend_from_slice(b"\n$ echo done\n");
    std::fs::write(sess.join("scrollback.txt"), &scroll).unwrap();
    std::fs::create_dir_all(a.state().join("journal")).unwrap();
    let mut line = b"{\"cmd\":\"curl -H 'Authorization: Bearer ".to_vec();
    line.extend_from_slice(secret);
    line.extend_from_slice(b"' https://example.invalid\"}\n");
    std::fs::write(a.state().join("journal/0000.jsonl"), &line).unwrap();
    let saved = ok(&a, b"", &["--json", "state", "save", "-m", "with a secret"]);
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["created"], true, "{saved}");
    assert_eq!(
        saved["redacted"], 2,
        "save reports the redactions (the scrollback's and the journal line's): {saved}"
    );
    // Nothing changed: a second save says so (the redacted blob differs from the live file).
    let again = ok(&a, b"", &["--json", "state", "save"]);
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["created"], false, "{again}");
    // The live files are as they were.
    assert_eq!(std::fs::read(sess.join("scrollback.txt")).unwrap(), scroll);
    a.ok(&["remote", "add", "dir", &dir_url, "--init"]);
    a.ok(&["remote", "add", "git", &git_url]);
    a.ok(&["sync", "push", "dir"]);
    a.ok(&["sync", "push", "git"]);
    let b64 = base64(secret);
    let places = [
        ("the store", readable_bytes(&a.state().join("snapshots"))),
        ("the directory remote", readable_bytes(Path::new(&dir_url))),
        ("the git remote", git_objects(&git_repo)),
    ];
    for (what, bytes) in &places {
        assert!(
            bytes.len() > 1000,
            "{what} was searched ({} bytes)",
            bytes.len()
        );
        assert!(!contains(bytes, secret), "the secret is in {what}");
        assert!(!contains(bytes, b64.as_bytes()), "its base64 is in {what}");
        assert!(
            contains(bytes, b"[redacted: vault secret github]"),
            "{what} holds the marker instead"
        );
    }
    // Restoring the snapshot shows the marker, not the token.
    let shown = a.ok(&["show", "head"]);
    assert!(!shown.contains(std::str::from_utf8(secret).unwrap()));
    // The human output says it too.
    line.extend_from_slice(b"{\"cmd\":\"echo again\"}\n");
    std::fs::write(a.state().join("journal/0000.jsonl"), &line).unwrap();
    let saved = ok(&a, b"", &["state", "save"]);
    assert!(saved.contains("redacted: "), "{saved}");
}
