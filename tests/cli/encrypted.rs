//! Issue #16 (part A): encrypted remotes and signed refs, through the real binary, a real
//! directory remote and a real `git daemon`: no known plaintext (nor its base64) anywhere on an
//! encrypted remote, dedup between two devices that share it, `git fsck --strict` clean, the
//! join flow (an untrusted device gets a clear key error and nothing changes; after `key
//! trust` and a push it pulls and decrypts), a flipped byte refused, and on a remote that
//! requires signatures an unsigned, forged, revoked or replayed ref refused with nothing
//! changed.

use std::path::Path;
use std::process::Output;

use crate::support::{GitDaemon, Sandbox, assert_same};
use crate::sync::{device, fsck};
use crate::vault::{
    KEY_EXIT, PASS, base64, contains, device as keyed_device, expect, git_objects, ok,
    readable_bytes, snapshot_of, trust,
};

const DATA_EXIT: i32 = 3;
const REMOTE_EXIT: i32 = 5;

/// Strings put into the state: none may appear on an encrypted remote.
const KNOWN: [&str; 3] = [
    "KNOWN-PLAINTEXT scrollback: the quick brown fox 4242",
    "KNOWN-PLAINTEXT journal: ssh prod-db-17",
    "KNOWN-PLAINTEXT preference: theme = solarized-midnight",
];

pub(crate) fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A device with keys and a state holding the known strings, saved.
pub(crate) fn device_with_known_state() -> Sandbox {
    let a = keyed_device();
    a.generate();
    std::fs::write(a.state().join("sessions/s001/scrollback.txt"), KNOWN[0]).unwrap();
    std::fs::create_dir_all(a.state().join("journal")).unwrap();
    std::fs::write(
        a.state().join("journal/known.jsonl"),
        format!("{{\"cmd\":\"{}\"}}\n", KNOWN[1]),
    )
    .unwrap();
    std::fs::write(a.config().join("known.toml"), KNOWN[2]).unwrap();
    a.save("known strings");
    a
}

/// Every base64 form of `s` (the three alignments it can have inside a longer encoding),
/// without the last, partial group.
fn base64_forms(s: &str) -> Vec<String> {
    (0..3)
        .map(|skip| {
            let b64 = base64(&s.as_bytes()[skip..]);
            let keep = (s.len() - skip) / 3 * 4;
            b64[..keep.min(b64.len())].to_owned()
        })
        .collect()
}

/// Asserts that no known string, nor its base64, nor this device's name occurs in `bytes`.
pub(crate) fn assert_no_plaintext(bytes: &[u8], device_name: &str, what: &str) {
    assert!(!bytes.is_empty(), "{what}: nothing to search");
    for k in KNOWN {
        assert!(!contains(bytes, k.as_bytes()), "{what} holds {k:?}");
        assert!(
            !contains(bytes, b"KNOWN-PLAINTEXT"),
            "{what} holds a marker"
        );
        for b in base64_forms(k) {
            assert!(
                !contains(bytes, b.as_bytes()),
                "{what} holds the base64 of {k:?}"
            );
        }
    }
    assert!(
        !contains(bytes, device_name.as_bytes()),
        "{what} names the device {device_name}"
    );
}

/// Every path and byte under `dir` (file names included: they could leak ids or names).
pub(crate) fn names_and_bytes(dir: &Path) -> Vec<u8> {
    let mut all = readable_bytes(dir);
    for (p, _) in snapshot_of(dir) {
        all.extend_from_slice(p.as_bytes());
        all.push(b'\n');
    }
    all
}

/// What a refused pull must leave as it was: refs, objects, tracking refs, live files.
pub(crate) fn local_state(sb: &Sandbox) -> Vec<(String, Vec<u8>)> {
    let mut v = snapshot_of(&sb.state().join("snapshots/refs"));
    v.extend(snapshot_of(&sb.state().join("snapshots/objects")));
    v.extend(snapshot_of(&sb.state().join("snapshots/packs")));
    v.extend(snapshot_of(&sb.state().join("sessions")));
    v.extend(snapshot_of(&sb.config()));
    v.retain(|(p, _)| !p.contains(".lock"));
    v
}

#[test]
fn encrypted_dir_and_git_remotes_hold_only_ciphertext_and_devices_join_share_and_dedup() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = GitDaemon::start(&tmp.path().join("srv"));
    let (git_url, git_repo) = srv.repo("state.git");
    let dir_url = tmp.path().join("dir-remote").to_str().unwrap().to_owned();
    let a = device_with_known_state();
    let a_name = device(&a);
    ok(
        &a,
        b"",
        &["remote", "add", "box", &dir_url, "--init", "--encrypt"],
    );
    ok(&a, b"", &["remote", "add", "forge", &git_url, "--encrypt"]);
    let pushed = json(&ok(&a, b"", &["--json", "sync", "push", "box"]));
    assert!(pushed["objects_sent"].as_u64().unwrap() > 10, "{pushed}");
    let pushed_git = json(&ok(&a, b"", &["--json", "sync", "push", "forge"]));
    assert_eq!(
        pushed_git["objects_sent"], pushed["objects_sent"],
        "{pushed_git}"
    );

    // Known-plaintext search: every file, decompressed where it holds zstd frames, and every
    // git object decompressed.
    assert_no_plaintext(
        &names_and_bytes(Path::new(&dir_url)),
        &a_name,
        "the directory remote",
    );
    let mut git_all = git_objects(&git_repo);
    git_all.extend(names_and_bytes(&git_repo));
    assert_no_plaintext(&git_all, &a_name, "the git remote");
    // The sizes are bucketed: no object file is smaller than the smallest bucket.
    for (p, bytes) in snapshot_of(&Path::new(&dir_url).join("objects")) {
        assert!(bytes.len() >= 256, "{p} is {} bytes", bytes.len());
    }
    // An encrypted git remote is a valid git repository.
    fsck(&git_repo);

    // B joins: its keys are not on the remote's key file yet: a clear key error, nothing
    // changed (no head, no tracking ref, no object).
    let b = keyed_device();
    ok(&b, b"", &["remote", "add", "box", &dir_url, "--encrypt"]);
    ok(&b, b"", &["remote", "add", "forge", &git_url, "--encrypt"]);
    let before = local_state(&b);
    for r in ["box", "forge"] {
        let out = expect(&b, Some(PASS), b"", KEY_EXIT, &["sync", "pull", r]);
        assert!(out.contains("not one of its readers"), "{out}");
        assert!(out.contains("key trust"), "says what to do: {out}");
    }
    assert!(local_state(&b) == before, "a refused pull changes nothing");
    // A wrong passphrase is a key error too, before anything is read.
    let out = expect(&b, Some("wrong"), b"", KEY_EXIT, &["sync", "pull", "box"]);
    assert!(out.contains("passphrase"), "{out}");
    assert!(local_state(&b) == before);

    // A trusts B and pushes (the key file is re-wrapped to include B); B pulls and decrypts.
    trust(&a, "bee", &b);
    a.save("A trusts B");
    ok(&a, b"", &["sync", "push", "box"]);
    ok(&a, b"", &["sync", "push", "forge"]);
    let pulled = json(&ok(&b, b"", &["--json", "sync", "pull", "box"]));
    assert_eq!(pulled["restored"], true, "{pulled}");
    assert_same(&b.live(), &a.live());
    assert!(b.ok(&["state", "check"]).contains("no problems"));
    // Dedup: B computes the same keyed names, so its push of the same content sends nothing
    // but its ref.
    let again = json(&ok(&b, b"", &["--json", "sync", "push", "box"]));
    assert_eq!(again["objects_sent"], 0, "{again}");
    assert!(
        !again["refs_updated"].as_array().unwrap().is_empty(),
        "{again}"
    );
    ok(&b, b"", &["sync", "pull", "forge"]);
    let again = json(&ok(&b, b"", &["--json", "sync", "push", "forge"]));
    assert_eq!(again["objects_sent"], 0, "{again}");
    fsck(&git_repo);

    // B changes something; A pulls it through both remotes.
    std::fs::write(b.config().join("from-b.toml"), "font_size = 21\n").unwrap();
    b.save("B: a change");
    let small = json(&ok(&b, b"", &["--json", "sync", "push", "forge"]));
    assert!(small["objects_sent"].as_u64().unwrap() < 10, "{small}");
    let out = ok(&a, b"", &["sync", "pull", "forge"]);
    assert!(out.contains("fast-forwarded"), "{out}");
    assert_same(&a.live(), &b.live());
    fsck(&git_repo);
}

#[test]
fn revoking_a_device_rotates_the_key_and_a_flipped_byte_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir_url = tmp.path().join("dir-remote").to_str().unwrap().to_owned();
    let a = device_with_known_state();
    let b = keyed_device();
    trust(&a, "bee", &b);
    a.save("A trusts B");
    ok(
        &a,
        b"",
        &["remote", "add", "box", &dir_url, "--init", "--encrypt"],
    );
    ok(&a, b"", &["sync", "push", "box"]);
    ok(&b, b"", &["remote", "add", "box", &dir_url, "--encrypt"]);
    ok(&b, b"", &["sync", "pull", "box"]);
    assert_same(&b.live(), &a.live());

    // A flipped byte in a remote object: refused, nothing staged, no ref moved.
    std::fs::write(a.config().join("later.toml"), "x = 1\n").unwrap();
    a.save("A: later");
    let objects = Path::new(&dir_url).join("objects");
    let old: Vec<String> = snapshot_of(&objects).into_iter().map(|f| f.0).collect();
    ok(&a, b"", &["sync", "push", "box"]);
    let fresh: Vec<(String, Vec<u8>)> = snapshot_of(&objects)
        .into_iter()
        .filter(|f| !old.contains(&f.0))
        .collect();
    assert!(
        fresh.len() >= 4,
        "the push wrote objects and ref records: {}",
        fresh.len()
    );
    // Each object the push wrote, flipped in turn: refused (as damaged data, or as a damaged
    // ref record), nothing staged, no ref moved.
    for (path, bytes) in &fresh {
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x20;
        std::fs::write(path, &bad).unwrap();
        forget_verified_records(&b, "box");
        let before = local_state(&b);
        let o = crate::vault::run(&b, Some(PASS), b"", &["sync", "pull", "box"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            [Some(DATA_EXIT), Some(REMOTE_EXIT)].contains(&o.status.code()),
            "{path}: {:?} {err}",
            o.status
        );
        assert!(err.contains("fails authentication"), "{path}: {err}");
        assert!(local_state(&b) == before, "nothing staged, no ref moved");
        std::fs::write(path, bytes).unwrap();
    }
    ok(&b, b"", &["sync", "pull", "box"]);
    assert_same(&b.live(), &a.live());

    // A revokes B and pushes: a new epoch whose key B never receives.
    ok(&a, b"", &["key", "revoke", "bee"]);
    a.save("A revokes B");
    ok(&a, b"", &["sync", "push", "box"]);
    let out = expect(&b, Some(PASS), b"", KEY_EXIT, &["sync", "pull", "box"]);
    assert!(out.contains("not one of its readers"), "{out}");
    // A (and a new device trusted later) still reads everything, old epoch included.
    let c = keyed_device();
    trust(&a, "sea", &c);
    a.save("A trusts C");
    ok(&a, b"", &["sync", "push", "box"]);
    ok(&c, b"", &["remote", "add", "box", &dir_url, "--encrypt"]);
    ok(&c, b"", &["sync", "pull", "box"]);
    assert_same(&c.live(), &a.live());
    assert!(c.ok(&["state", "check"]).contains("no problems"));
}

/// Drops `sb`'s caches of the ref records it verified and opened on `remote`: a device does not
/// read a record it verified before again (its name is a hash of its content), so a record it
/// read in an earlier pull that failed later (at a damaged object) would not be read, nor its
/// flipped copy refused; the flipped-byte loops want every object read, as a device that has
/// never seen them reads them.
pub(crate) fn forget_verified_records(sb: &Sandbox, remote: &str) {
    for f in ["signed-refs.verified.json", "encrypted-refs.json"] {
        let _ = std::fs::remove_file(sb.state().join(format!("snapshots/remotes/{remote}.{f}")));
    }
}

/// A device's head ref file on a directory remote.
fn ref_file(remote: &Path, device: &str) -> std::path::PathBuf {
    remote.join("refs").join(device).join("head")
}

#[test]
fn a_signed_remote_refuses_unsigned_forged_revoked_and_replayed_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("signed");
    let url = remote.to_str().unwrap().to_owned();
    let a = keyed_device();
    a.generate();
    a.save("A: first");
    let b = keyed_device();
    let c = keyed_device();
    // Signed-only remotes learn keys from the trust list: A and B trust each other and C.
    trust(&a, "bee", &b);
    trust(&a, "sea", &c);
    trust(&b, "ay", &a);
    trust(&b, "sea", &c);
    ok(
        &a,
        b"",
        &["remote", "add", "o", &url, "--init", "--require-signatures"],
    );
    ok(&a, b"", &["sync", "push", "o"]);
    ok(
        &b,
        b"",
        &["remote", "add", "o", &url, "--require-signatures"],
    );
    ok(&b, b"", &["sync", "pull", "o"]);
    assert_same(&b.live(), &a.live());
    let a_head = ref_file(&remote, &device(&a));
    let old_record = std::fs::read(&a_head).unwrap();

    // A pushes again; B sees the newer ref.
    std::fs::write(a.config().join("second.toml"), "y = 2\n").unwrap();
    let head_id = a.save("A: second");
    ok(&a, b"", &["sync", "push", "o"]);
    ok(&b, b"", &["sync", "pull", "o"]);
    let new_record = std::fs::read(&a_head).unwrap();

    let refused = |why: &str| {
        let before = local_state(&b);
        let out = expect(&b, Some(PASS), b"", REMOTE_EXIT, &["sync", "pull", "o"]);
        assert!(out.contains(why), "expected {why:?}: {out}");
        assert!(local_state(&b) == before, "{why}: nothing changed");
    };

    // Replayed: the remote puts back A's older (validly signed) ref.
    std::fs::write(&a_head, &old_record).unwrap();
    refused("replayed");
    std::fs::write(&a_head, &new_record).unwrap();
    ok(&b, b"", &["sync", "pull", "o"]);

    // Unsigned: a plain snapshot id as A's head.
    std::fs::write(&a_head, format!("{head_id}\n")).unwrap();
    refused("unsigned");

    // Forged: a well-formed record claiming A's key, signed by another key.
    let identity = std::fs::read(
        remote
            .join("objects")
            .join(&shelldone::remote::sign::identity_object().to_hex()[..2])
            .join(&shelldone::remote::sign::identity_object().to_hex()[2..]),
    )
    .unwrap();
    let remote_id = String::from_utf8(identity).unwrap();
    let remote_id = remote_id.trim().rsplit('\n').next().unwrap().to_owned();
    let a_key = public_signing_key(&a);
    let payload = shelldone::remote::sign::Payload {
        remote: remote_id,
        name: format!("{}/head", device(&a)),
        value: shelldone::ObjectId::from_hex(&head_id).unwrap().0,
        prev: None,
        counter: u64::MAX,
        signer: a_key,
    };
    let forger = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let forged = shelldone::remote::sign::sign_record(&forger, &payload).unwrap();
    let fid = shelldone::remote::sign::record_id(&forged).to_hex();
    let fdir = remote.join("objects").join(&fid[..2]);
    std::fs::create_dir_all(&fdir).unwrap();
    std::fs::write(fdir.join(&fid[2..]), &forged).unwrap();
    std::fs::write(&a_head, format!("{fid}\n")).unwrap();
    refused("does not verify");
    std::fs::write(&a_head, &new_record).unwrap();
    ok(&b, b"", &["sync", "pull", "o"]);

    // Revoked: C pushes a validly signed ref; once B revokes C, B refuses it.
    ok(
        &c,
        b"",
        &["remote", "add", "o", &url, "--require-signatures"],
    );
    trust(&c, "ay", &a);
    ok(&c, b"", &["sync", "pull", "o"]);
    std::fs::write(c.config().join("from-c.toml"), "z = 3\n").unwrap();
    c.save("C: change");
    ok(&c, b"", &["sync", "push", "o"]);
    ok(&b, b"", &["key", "revoke", "sea"]);
    refused("revoked device");
}

/// A device's Ed25519 public key, from `key show` (OpenSSH form).
fn public_signing_key(sb: &Sandbox) -> [u8; 32] {
    let show = ok(sb, b"", &["key", "show"]);
    let line = show.lines().find(|l| l.starts_with("ssh-ed25519")).unwrap();
    let vk = shelldone::vault::keys::parse_ssh_public(line).unwrap();
    vk.to_bytes()
}

/// The paper key printed by `key export --paper` on `sb`: (its grouped lines, its whole form).
pub(crate) fn export_paper(sb: &Sandbox) -> (String, String) {
    let paper = ok(sb, b"", &["key", "export", "--paper"]);
    let grouped: String = paper
        .lines()
        .skip_while(|l| !l.trim().starts_with("AGE-SECRET-KEY-1"))
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let whole = paper
        .lines()
        .find_map(|l| l.trim().strip_prefix("whole: "))
        .unwrap()
        .to_owned();
    assert!(grouped.starts_with("AGE-SECRET-KEY-1\n"), "{paper}");
    (grouped, whole)
}

/// How a story's commands reach its remote: the variables they need (an S3 server's), none
/// for a directory or a `git daemon`.
pub(crate) type Env<'a> = &'a dyn Fn(&mut std::process::Command);

/// Where a story's remote is, as the tests look at it from outside.
pub(crate) struct Seen<'a> {
    /// Every name and byte the remote holds (a folder, a bucket's keys and objects, a git
    /// repository's files), to tell that nothing changed.
    pub files: &'a dyn Fn() -> Vec<(String, Vec<u8>)>,
    /// How many stored objects it holds, where a key file is one object (directory, S3).
    pub objects: Option<&'a dyn Fn() -> usize>,
    /// Everything a known-plaintext search reads.
    pub bytes: &'a dyn Fn() -> Vec<u8>,
}

/// [`crate::vault::run`] with the remote's variables.
fn run_in(env: Env<'_>, sb: &Sandbox, pass: Option<&str>, stdin: &[u8], args: &[&str]) -> Output {
    let mut c = sb.cmd(args);
    env(&mut c);
    match pass {
        Some(p) => c.env("SHELLDONE_VAULT_PASSPHRASE", p),
        None => c.env_remove("SHELLDONE_VAULT_PASSPHRASE"),
    };
    crate::support::run_with_stdin(c, stdin)
}

/// Expects exit `code`; returns stdout, and stderr after it when the code is not 0.
fn expect_in(
    env: Env<'_>,
    sb: &Sandbox,
    pass: Option<&str>,
    stdin: &[u8],
    code: i32,
    args: &[&str],
) -> String {
    let o = run_in(env, sb, pass, stdin, args);
    let mut s = crate::support::exited(&args, &o, code);
    if code != 0 {
        s.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    s
}

/// Every device is lost; a new machine recovers the encrypted remote at `url` with the paper
/// key (`key import --remote`): a wrong paper key changes nothing on either side, the right
/// one pulls the state and its secrets and re-wraps the key file for the new keys, and a
/// device the new one trusts joins as usual. The remote holds no plaintext at the end.
/// `init`: the remote is created by `remote add --init` (directory, S3), not there already.
pub(crate) fn paper_key_recovery(url: &str, init: bool, env: Env<'_>, remote: &Seen<'_>) {
    let ok =
        |sb: &Sandbox, stdin: &[u8], args: &[&str]| expect_in(env, sb, Some(PASS), stdin, 0, args);
    let a = device_with_known_state();
    ok(&a, b"kept-safe", &["secret", "set", "tok"]);
    let (paper, _) = export_paper(&a);
    a.save("A: a secret and a paper key");
    let mut add = vec!["remote", "add", "box", url, "--encrypt"];
    if init {
        add.push("--init");
    }
    ok(&a, b"", &add);
    ok(&a, b"", &["sync", "push", "box"]);
    // A is lost. A new machine C has new keys that are nobody's readers: a plain pull is a key
    // error that names the way back in.
    let c = keyed_device();
    ok(&c, b"", &["remote", "add", "box", url, "--encrypt"]);
    let out = expect_in(env, &c, Some(PASS), b"", KEY_EXIT, &["sync", "pull", "box"]);
    assert!(out.contains("key import --remote box"), "{out}");
    // Another vault's paper key: refused before anything is written, here or on the remote.
    let (_, wrong) = export_paper(&keyed_device());
    let (here, there) = (local_state(&c), (remote.files)());
    let out = expect_in(
        env,
        &c,
        Some(PASS),
        wrong.as_bytes(),
        KEY_EXIT,
        &["key", "import", "--remote", "box"],
    );
    assert!(out.contains("paper key given does not open"), "{out}");
    assert!(
        local_state(&c) == here,
        "a refused recovery changes nothing here"
    );
    assert!(
        snapshot_of(&c.state().join("secrets")).is_empty(),
        "no vault pulled"
    );
    assert!((remote.files)() == there, "nor on the remote");
    // The paper key, typed back in its groups: C pulls A's state, reads A's secret, and the
    // remote's key file is re-wrapped for C's keys.
    let objects_before = remote.objects.map(|n| n());
    let out = json(&ok(
        &c,
        paper.as_bytes(),
        &["--json", "key", "import", "--remote", "box"],
    ));
    assert_eq!(out["rewrapped"], true, "{out}");
    assert!(out["received"]["objects"].as_u64().unwrap() > 10, "{out}");
    assert_same(&c.live(), &a.live());
    assert_eq!(ok(&c, b"", &["secret", "get", "tok"]), "kept-safe");
    if let (Some(before), Some(n)) = (objects_before, remote.objects) {
        assert_eq!(
            n(),
            before + 1,
            "the re-wrap wrote one object, the new key file"
        );
    }
    // From now on C's own keys open the remote: pull, then push what the import changed.
    ok(&c, b"", &["sync", "pull", "box"]);
    std::fs::write(c.config().join("after.toml"), "recovered = true\n").unwrap();
    c.save("C: recovered");
    let pushed = json(&ok(&c, b"", &["--json", "sync", "push", "box"]));
    assert!(pushed["objects_sent"].as_u64().unwrap() > 0, "{pushed}");
    // A device C trusts joins through the remote as usual.
    let d = keyed_device();
    trust(&c, "dee", &d);
    c.save("C trusts D");
    ok(&c, b"", &["sync", "push", "box"]);
    ok(&d, b"", &["remote", "add", "box", url, "--encrypt"]);
    ok(&d, b"", &["sync", "pull", "box"]);
    assert_same(&d.live(), &c.live());
    assert_eq!(ok(&d, b"", &["secret", "get", "tok"]), "kept-safe");
    assert_no_plaintext(
        &(remote.bytes)(),
        &device(&c),
        "the remote after the recovery",
    );
}

#[test]
fn the_paper_key_opens_an_encrypted_remote_when_every_device_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir-remote");
    let objects = || snapshot_of(&dir.join("objects")).len();
    paper_key_recovery(
        dir.to_str().unwrap(),
        true,
        &|_| {},
        &Seen {
            files: &|| snapshot_of(&dir),
            objects: Some(&objects),
            bytes: &|| names_and_bytes(&dir),
        },
    );
}

/// The same recovery over an encrypted git remote (a real `git daemon`), which stays a valid
/// git repository throughout.
#[test]
fn the_paper_key_opens_an_encrypted_git_remote_when_every_device_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = GitDaemon::start(&tmp.path().join("srv"));
    let (url, repo) = daemon.repo("paper.git");
    paper_key_recovery(
        &url,
        false,
        &|_| {},
        &Seen {
            files: &|| snapshot_of(&repo),
            objects: None,
            bytes: &|| {
                let mut all = git_objects(&repo);
                all.extend(names_and_bytes(&repo));
                all
            },
        },
    );
    fsck(&repo);
}
/// Refs signed by a device that was revoked later block every pull of a device that knows of
/// the revocation (refused, nothing changed locally); the error names the way out, and a push
/// from such a device retires them (deletes refs whose records carry a valid signature by a
/// revoked key, and nothing else): then every device pulls cleanly. A revoked device that
/// pushes again is refused again.
#[test]
fn a_push_retires_a_revoked_devices_refs_and_then_every_device_pulls() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("signed");
    let url = remote.to_str().unwrap().to_owned();
    let (a, b, c) = (keyed_device(), keyed_device(), keyed_device());
    a.generate();
    a.save("A: first");
    for (by, others) in [
        (&a, [("bee", &b), ("sea", &c)]),
        (&b, [("ay", &a), ("sea", &c)]),
        (&c, [("ay", &a), ("bee", &b)]),
    ] {
        for (name, of) in others {
            trust(by, name, of);
        }
    }
    ok(
        &a,
        b"",
        &["remote", "add", "o", &url, "--init", "--require-signatures"],
    );
    ok(&a, b"", &["sync", "push", "o"]);
    for d in [&b, &c] {
        ok(
            d,
            b"",
            &["remote", "add", "o", &url, "--require-signatures"],
        );
        ok(d, b"", &["sync", "pull", "o"]);
    }
    std::fs::write(b.config().join("from-b.toml"), "b = 1\n").unwrap();
    b.save("B: change");
    ok(&b, b"", &["sync", "push", "o"]);
    ok(&c, b"", &["sync", "pull", "o"]);
    let b_refs = remote.join("refs").join(device(&b));
    assert!(ref_file(&remote, &device(&b)).exists());

    // A and C revoke B: each pull refuses B's refs, names the way out, changes nothing.
    let refused = |sb: &Sandbox| {
        let before = local_state(sb);
        let out = expect(sb, Some(PASS), b"", REMOTE_EXIT, &["sync", "pull", "o"]);
        assert!(out.contains("revoked device"), "{out}");
        assert!(out.contains("'shelldone sync push o'"), "{out}");
        assert!(local_state(sb) == before, "a refused pull changes nothing");
    };
    ok(&a, b"", &["key", "revoke", "bee"]);
    ok(&c, b"", &["key", "revoke", "bee"]);
    refused(&a);
    refused(&c);
    // A pushes: B's refs are retired, A's own are written.
    a.save("A revokes B");
    ok(&a, b"", &["sync", "push", "o"]);
    let left: Vec<(String, Vec<u8>)> = snapshot_of(&b_refs);
    assert!(left.is_empty(), "B's refs were retired: {left:?}");
    assert!(ref_file(&remote, &device(&a)).exists());
    // Every device that revoked B pulls cleanly; C pushes and A pulls C's change.
    ok(&c, b"", &["sync", "pull", "o"]);
    std::fs::write(c.config().join("from-c.toml"), "c = 1\n").unwrap();
    c.save("C: change");
    ok(&c, b"", &["sync", "push", "o"]);
    ok(&a, b"", &["sync", "pull", "o"]);
    assert!(a.ok(&["state", "check"]).contains("no problems"));

    // B, revoked, pushes again: refused again until the next push from A or C retires it.
    std::fs::write(b.config().join("again.toml"), "b = 2\n").unwrap();
    b.save("B: again");
    ok(&b, b"", &["sync", "push", "o"]);
    assert!(ref_file(&remote, &device(&b)).exists());
    refused(&a);
    ok(&c, b"", &["sync", "push", "o"]);
    assert!(snapshot_of(&b_refs).is_empty(), "retired again");
    ok(&a, b"", &["sync", "pull", "o"]);
}
