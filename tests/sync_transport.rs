//! Sync transports against real peers: a directory remote (incl. Syncthing-style copies merged
//! back), a real `git daemon` on loopback, hostile remotes built here, and interrupted pushes.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure: a panic is the test failing, with its message"
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use objects_format::{ChangeSummary, EntryKind, Kind, Object, ObjectId, Snapshot, Tree, TreeEntry};
use shelldone::remote::dir::DirRemote as DirBackend;
use shelldone::remote::git::{CommitFormat, GitOptions, GitRemote};
use shelldone::remote::{RefUpdate, Remote, TransferStats};
use shelldone::transfer::PlainRemote;
use shelldone::{Error, Paths, SaveOptions, State};

/// A directory remote as `sync` drives it: the directory backend under the transfer module.
struct DirRemote;

impl DirRemote {
    #[expect(
        clippy::new_ret_no_self,
        reason = "the tests name a directory remote as they did before it became a backend"
    )]
    fn new(name: &str, dir: impl Into<std::path::PathBuf>) -> PlainRemote<DirBackend> {
        PlainRemote::new(DirBackend::new(name, dir))
    }
}

fn quiet(_: u64, _: Option<u64>) {}

struct Dev {
    _tmp: tempfile::TempDir,
    paths: Paths,
    state: State,
}

impl Dev {
    fn new(seed: u64) -> Dev {
        Dev::with_sessions(seed, shelldone::demo::DemoSpec::small().sessions)
    }

    /// A bigger state: more than one loose batch (stored as packs locally).
    fn with_sessions(seed: u64, sessions: usize) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: tmp.path().join("config"),
            state_dir: tmp.path().join("state"),
        };
        let mut spec = shelldone::demo::DemoSpec::small();
        spec.seed = seed;
        spec.sessions = sessions;
        shelldone::demo::generate(&paths.config_dir, &paths.state_dir, &spec).unwrap();
        let (state, _) = State::open(paths.clone()).unwrap();
        state
            .save(&SaveOptions {
                message: format!("first save of seed {seed}"),
                session: None,
                ..Default::default()
            })
            .unwrap();
        Dev {
            _tmp: tmp,
            paths,
            state,
        }
    }

    /// An empty store (no live state).
    fn empty() -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: tmp.path().join("config"),
            state_dir: tmp.path().join("state"),
        };
        let (state, _) = State::open(paths.clone()).unwrap();
        Dev {
            _tmp: tmp,
            paths,
            state,
        }
    }

    fn device(&self) -> String {
        self.state.device().to_owned()
    }

    /// This device's own refs as remote ref names.
    fn own_refs(&self) -> BTreeMap<String, ObjectId> {
        let dev = self.device();
        self.state
            .refs()
            .list("")
            .unwrap()
            .into_iter()
            .filter(|(n, _)| n == "head" || n.starts_with("sessions/"))
            .map(|(n, id)| (format!("{dev}/{n}"), id))
            .collect()
    }

    /// Updates moving every own ref on the remote from what `remote` lists to the local value.
    fn updates(&self, remote: &BTreeMap<String, ObjectId>) -> Vec<RefUpdate> {
        self.own_refs()
            .into_iter()
            .map(|(name, id)| RefUpdate {
                expected: remote.get(&name).copied(),
                name,
                new: Some(id),
            })
            .collect()
    }

    fn count(&self) -> usize {
        self.state.objects().list().unwrap().len()
    }

    fn change_and_save(&self, round: u64) -> shelldone::SaveOutcome {
        shelldone::demo::small_change(&self.paths.config_dir, &self.paths.state_dir, round)
            .unwrap();
        self.state
            .save(&SaveOptions {
                message: format!("change {round}"),
                session: None,
                ..Default::default()
            })
            .unwrap()
    }

    /// Fetches `wants` and commits the batch only on success.
    fn fetch(&self, r: &mut dyn Remote, wants: &[ObjectId]) -> shelldone::Result<TransferStats> {
        let batch = self.state.objects().batch()?;
        let st = r.fetch(self.state.objects(), &batch, wants, false, &quiet)?;
        batch.commit()?;
        Ok(st)
    }

    /// Records remote refs locally and checks every reachable object.
    fn adopt_and_check(&self, remote: &str, refs: &BTreeMap<String, ObjectId>) {
        for (n, id) in refs {
            self.state
                .refs()
                .set(&format!("remotes/{remote}/{n}"), Some(*id), "test fetch")
                .unwrap();
        }
        let rep = self
            .state
            .check(shelldone::check::CheckOptions::default())
            .unwrap();
        assert!(rep.ok(), "check found problems: {:?}", rep.problems);
        assert!(rep.snapshots >= 1);
    }
}

fn count_files(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

// ---------------------------------------------------------------------------------------------
// Directory remote
// ---------------------------------------------------------------------------------------------

#[test]
fn dir_push_fetch_incremental_cas() {
    let a = Dev::with_sessions(1, 30);
    let tmp = tempfile::tempdir().unwrap();
    let rdir = tmp.path().join("remote");
    let mut r = DirRemote::new("usb", &rdir);
    assert!(
        r.list_refs().unwrap().is_empty(),
        "a missing dir is an empty remote"
    );

    let up = a.updates(&BTreeMap::new());
    assert!(up.len() >= 2, "head and session refs: {up:?}");
    let st1 = r.push(a.state.objects(), &up, &quiet).unwrap();
    assert_eq!(
        std::fs::read_to_string(rdir.join("shelldone-remote")).unwrap(),
        "shelldone-dir-remote 1\n"
    );
    let remote_objects = count_files(&rdir.join("objects"));
    assert_eq!(st1.objects as usize, remote_objects);
    assert!(
        remote_objects > 64,
        "big enough for packed batches: {remote_objects}"
    );
    assert_eq!(
        remote_objects,
        a.count(),
        "every object of A is reachable from its refs"
    );
    let listed = r.list_refs().unwrap();
    assert_eq!(listed, a.own_refs());

    // B fetches everything; check clean after adopting the refs.
    let b = Dev::empty();
    let wants: Vec<ObjectId> = listed.values().copied().collect();
    let stb = b.fetch(&mut r, &wants).unwrap();
    assert_eq!(stb.objects as usize, remote_objects);
    assert_eq!(b.count(), remote_objects);
    b.adopt_and_check("usb", &listed);
    // A second fetch moves nothing.
    assert_eq!(b.fetch(&mut r, &wants).unwrap().objects, 0);

    // A small change sends only the new objects.
    let out = a.change_and_save(1);
    assert!(out.created);
    let up2 = a.updates(&listed);
    let st2 = r.push(a.state.objects(), &up2, &quiet).unwrap();
    let after = count_files(&rdir.join("objects"));
    assert_eq!(st2.objects as usize, after - remote_objects);
    assert_eq!(
        st2.objects, out.objects_written,
        "exactly the objects the save wrote"
    );
    assert!(
        st2.objects > 0 && st2.objects < st1.objects,
        "incremental: {} vs {}",
        st2.objects,
        st1.objects
    );
    let listed2 = r.list_refs().unwrap();
    let stb2 = b
        .fetch(&mut r, &listed2.values().copied().collect::<Vec<_>>())
        .unwrap();
    assert_eq!(stb2.objects, st2.objects);
    b.adopt_and_check("usb", &listed2);

    // Shallow: the wanted snapshot and its content, not its parents.
    let c = Dev::empty();
    let head2 = listed2[&format!("{}/head", a.device())];
    let batch = c.state.objects().batch().unwrap();
    r.fetch(c.state.objects(), &batch, &[head2], true, &quiet)
        .unwrap();
    batch.commit().unwrap();
    let parent = c.state.objects().read_snapshot(&head2).unwrap().parents[0];
    assert!(!c.state.objects().has(&parent));
    assert!(c.count() < b.count());

    // A folder that lost some files (partial sync) gets them again: each object's file is checked.
    let mut removed = 0;
    for e in walkdir::WalkDir::new(rdir.join("objects"))
        .into_iter()
        .filter_map(Result::ok)
    {
        if e.file_type().is_file() && removed < 5 {
            std::fs::remove_file(e.path()).unwrap();
            removed += 1;
        }
    }
    let noop: Vec<RefUpdate> = a.updates(&listed2);
    let st3 = r.push(a.state.objects(), &noop, &quiet).unwrap();
    assert_eq!(st3.objects, removed);
    assert_eq!(count_files(&rdir.join("objects")), after);

    // CAS: a wrong expected value is refused and nothing moves.
    let head = format!("{}/head", a.device());
    let bad = vec![RefUpdate {
        name: head.clone(),
        expected: None,
        new: Some(listed[&head]),
    }];
    match r.push(a.state.objects(), &bad, &quiet) {
        Err(Error::RefConflict { name, .. }) => assert_eq!(name, head),
        other => panic!("expected a ref conflict, got {other:?}"),
    }
    assert_eq!(r.list_refs().unwrap(), listed2);
}

#[test]
fn dir_syncthing_copies_merge() {
    let a = Dev::new(1);
    let b = Dev::new(2);
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let mut r = DirRemote::new("sync", &base);
    r.push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();

    // Two copies of the folder; each device pushes into its own copy.
    let c1 = tmp.path().join("copy1");
    let c2 = tmp.path().join("copy2");
    for c in [&c1, &c2] {
        assert!(
            Command::new("cp")
                .arg("-r")
                .arg(&base)
                .arg(c)
                .status()
                .unwrap()
                .success()
        );
    }
    a.change_and_save(1);
    let mut r1 = DirRemote::new("sync", &c1);
    let l1 = r1.list_refs().unwrap();
    r1.push(a.state.objects(), &a.updates(&l1), &quiet).unwrap();
    let mut r2 = DirRemote::new("sync", &c2);
    let l2 = r2.list_refs().unwrap();
    r2.push(b.state.objects(), &b.updates(&l2), &quiet).unwrap();

    // Merge the copies back (what a file syncer does), plus its debris.
    let merged = tmp.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    for c in [&c1, &c2] {
        let src = format!("{}/.", c.display());
        assert!(
            Command::new("cp")
                .arg("-rn")
                .arg(src)
                .arg(&merged)
                .status()
                .unwrap()
                .success()
        );
    }
    let adev = merged.join("refs").join(a.device());
    std::fs::write(
        adev.join("head.sync-conflict-20240101-000000-ABCDEFG"),
        "garbage\n",
    )
    .unwrap();
    std::fs::write(adev.join(".syncthing.head.tmp"), "junk").unwrap();
    std::fs::write(adev.join(".shelldone-tmp.123.0"), "junk").unwrap();

    let mut rm = DirRemote::new("sync", &merged);
    let refs = rm.list_refs().unwrap();
    let mut expect = a.own_refs();
    expect.extend(b.own_refs());
    assert_eq!(refs, expect, "both devices' refs, debris ignored");

    let c = Dev::empty();
    let wants: Vec<ObjectId> = refs.values().copied().collect();
    c.fetch(&mut rm, &wants).unwrap();
    c.adopt_and_check("sync", &refs);
}

/// Writes a canonical object into a directory remote as a zstd file; returns its id.
fn put_dir_object(rdir: &Path, kind: Kind, canonical: &[u8]) -> ObjectId {
    let id = ObjectId::compute(kind, canonical);
    write_dir_file(rdir, &id, &zstd::bulk::compress(canonical, 3).unwrap());
    id
}

fn write_dir_file(rdir: &Path, id: &ObjectId, bytes: &[u8]) {
    let hex = id.to_hex();
    let p = rdir.join("objects").join(&hex[..2]);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(&hex[2..]), bytes).unwrap();
}

fn put_dir_obj(rdir: &Path, obj: &Object) -> ObjectId {
    let (id, c) = objects_format::encode_with_id(obj).unwrap();
    write_dir_file(rdir, &id, &zstd::bulk::compress(&c, 3).unwrap());
    id
}

fn set_dir_ref(rdir: &Path, name: &str, id: &ObjectId) {
    let p = rdir.join("refs").join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("{}\n", id.to_hex())).unwrap();
}

fn snapshot_of(root: ObjectId) -> Object {
    Object::Snapshot(Snapshot {
        root,
        parents: vec![],
        time_ns: 1_700_000_000_000_000_000,
        device: "evil".into(),
        message: "hostile".into(),
        session: None,
        summary: ChangeSummary::default(),
        extra: vec![],
    })
}

/// Hand-made canonical tree bytes with one file entry (names the encoder would refuse).
fn raw_tree(name: &[u8], blob: &ObjectId, size: u64) -> Vec<u8> {
    let mut t = b"SDO\x01\x03".to_vec();
    t.extend_from_slice(&1u32.to_le_bytes());
    t.push(u8::try_from(name.len()).unwrap());
    t.extend_from_slice(name);
    t.push(1);
    t.push(0);
    t.extend_from_slice(&size.to_le_bytes());
    t.extend_from_slice(&blob.0);
    t
}

fn link_tree(target: &[u8]) -> (Object, Object) {
    let blob = Object::Blob(target.to_vec());
    let bid = objects_format::encode_with_id(&blob).unwrap().0;
    let t = Tree {
        entries: vec![TreeEntry {
            name: b"link".to_vec(),
            kind: EntryKind::Symlink,
            flags: 0,
            size: target.len() as u64,
            id: bid,
        }],
    };
    (blob, Object::Tree(t))
}

fn dir_tree(name: &[u8], sub: &ObjectId) -> Object {
    Object::Tree(Tree {
        entries: vec![TreeEntry {
            name: name.to_vec(),
            kind: EntryKind::Dir,
            flags: 0,
            size: 0,
            id: *sub,
        }],
    })
}

/// Restores `snap` (fetched into `dev`) into a new directory: no symlink may appear there, and
/// the one at `skipped` (a link leading out of its folder) must be reported as not restored.
fn assert_never_materialised(dev: &Dev, snap: ObjectId, skipped: Option<&str>) {
    let to = tempfile::tempdir().unwrap();
    let o = dev
        .state
        .restore(&shelldone::RestoreOptions {
            rev: Some(snap.to_hex()),
            to: Some(to.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
    let links: Vec<_> = walkdir::WalkDir::new(to.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path_is_symlink())
        .map(|e| e.path().to_path_buf())
        .collect();
    assert!(links.is_empty(), "a restore made symlinks: {links:?}");
    let names: Vec<&str> = o.plan.skipped.iter().map(|s| s.path.as_str()).collect();
    match skipped {
        Some(p) => assert_eq!(names, [p], "{:?}", o.plan.skipped),
        None => assert!(names.is_empty(), "{:?}", o.plan.skipped),
    }
}

/// Fetches `want` from a hostile remote into `b`: must fail, and `b` must gain no object.
fn assert_refused(b: &Dev, r: &mut dyn Remote, want: ObjectId, expect: &str) -> String {
    let before = b.count();
    let batch = b.state.objects().batch().unwrap();
    let res = r.fetch(b.state.objects(), &batch, &[want], false, &quiet);
    drop(batch); // never committed on error
    let e = match res {
        Ok(st) => panic!("hostile fetch ({expect}) succeeded: {st:?}"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(expect), "error for {expect:?} was: {e}");
    assert_eq!(b.count(), before, "no object may land from a refused fetch");
    assert!(!b.state.objects().has(&want));
    e
}

#[test]
fn dir_hostile_remotes() {
    let b = Dev::empty();
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(d.join("objects")).unwrap();
        std::fs::write(d.join("shelldone-remote"), "shelldone-dir-remote 1\n").unwrap();
        d
    };

    // 1. A flipped byte in an object file.
    let a = Dev::new(3);
    let d = fresh("tampered");
    let mut r = DirRemote::new("tampered", &d);
    r.push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    let head = a.own_refs()[&format!("{}/head", a.device())];
    let root = a.state.objects().read_snapshot(&head).unwrap().root;
    let rp = r.backend().object_path(&root);
    let mut bytes = std::fs::read(&rp).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&rp, &bytes).unwrap();
    assert_refused(&b, &mut r, head, &root.to_hex());

    // 2. Tree entries named `..` and `a/b` (bytes the encoder refuses, with a matching id).
    for (i, name) in [&b".."[..], b"a/b", b"."].iter().enumerate() {
        let d = fresh(&format!("badname{i}"));
        let blob = put_dir_obj(&d, &Object::Blob(b"x".to_vec()));
        let tree = put_dir_object(&d, Kind::Tree, &raw_tree(name, &blob, 1));
        let snap = put_dir_obj(&d, &snapshot_of(tree));
        set_dir_ref(&d, "evil/head", &snap);
        let mut r = DirRemote::new("badname", &d);
        assert_eq!(r.list_refs().unwrap().len(), 1);
        assert_refused(&b, &mut r, snap, &tree.to_hex());
    }

    // 3. A symlink leading out of its folder (climbing, absolute), at the root and one level
    //    down, is data (Issue #10: refusing it blocked every pull for good): the fetch takes it
    //    and no restore ever materialises it. A target no filesystem could hold is refused.
    for (i, (target, nested)) in [
        (&b"../../etc/passwd"[..], true),
        (b"../x", false),
        (b"/etc/passwd", true),
        (b"../x", true),
    ]
    .iter()
    .enumerate()
    {
        let d = fresh(&format!("symlink{i}"));
        let (blob, t) = link_tree(target);
        put_dir_obj(&d, &blob);
        let mut root = put_dir_obj(&d, &t);
        if *nested {
            root = put_dir_obj(&d, &dir_tree(b"config", &root));
        }
        let snap = put_dir_obj(&d, &snapshot_of(root));
        let got = Dev::empty();
        got.fetch(&mut DirRemote::new("symlink", &d), &[snap])
            .unwrap();
        assert_never_materialised(&got, snap, nested.then_some("config/link"));
    }
    for (i, target) in [&b""[..], b"a\0b", &[b'a'; 4097]].iter().enumerate() {
        let d = fresh(&format!("badlink{i}"));
        let (blob, t) = link_tree(target);
        put_dir_obj(&d, &blob);
        let sub = put_dir_obj(&d, &t);
        let snap = put_dir_obj(
            &d,
            &snapshot_of(put_dir_obj(&d, &dir_tree(b"config", &sub))),
        );
        let mut r = DirRemote::new("badlink", &d);
        assert_refused(&b, &mut r, snap, "symlink target");
    }
    // …while a symlink that stays inside is fine.
    let d = fresh("symlink-ok");
    let (blob, t) = link_tree(b"../state/x");
    put_dir_obj(&d, &blob);
    let sub = put_dir_obj(&d, &t);
    let root = put_dir_obj(&d, &dir_tree(b"config", &sub));
    let ok_snap = put_dir_obj(&d, &snapshot_of(root));
    let ok = Dev::empty();
    ok.fetch(&mut DirRemote::new("ok", &d), &[ok_snap]).unwrap();
    assert!(ok.state.objects().has(&ok_snap));

    // 4. A ref naming an object the remote does not have; a tree naming a missing child.
    let d = fresh("missing");
    let ghost = ObjectId([7; 32]);
    set_dir_ref(&d, "evil/head", &ghost);
    let mut r = DirRemote::new("missing", &d);
    assert_eq!(r.list_refs().unwrap()[&"evil/head".to_owned()], ghost);
    assert_refused(&b, &mut r, ghost, "missing on the remote");
    let tree = put_dir_obj(&d, &dir_tree(b"config", &ObjectId([9; 32])));
    let snap = put_dir_obj(&d, &snapshot_of(tree));
    assert_refused(&b, &mut r, snap, "missing on the remote");

    // 5. Decompression bombs: a frame declaring more than 64 MiB, and one declaring no size.
    let d = fresh("bomb");
    let big = zstd::bulk::compress(&vec![0u8; 65 << 20], 1).unwrap();
    assert!(big.len() < 1 << 20, "the bomb is small: {}", big.len());
    let bomb = ObjectId([1; 32]);
    write_dir_file(&d, &bomb, &big);
    let mut r = DirRemote::new("bomb", &d);
    assert_refused(&b, &mut r, bomb, "over the");
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.write_all(b"SDO\x01\x01hello").unwrap();
    let undeclared = enc.finish().unwrap();
    let bomb2 = ObjectId::compute(Kind::Blob, b"SDO\x01\x01hello");
    write_dir_file(&d, &bomb2, &undeclared);
    let snap = put_dir_obj(
        &d,
        &snapshot_of(put_dir_obj(
            &d,
            &Object::Tree(Tree {
                entries: vec![TreeEntry {
                    name: b"f".to_vec(),
                    kind: EntryKind::File,
                    flags: 0,
                    size: 5,
                    id: bomb2,
                }],
            }),
        )),
    );
    assert_refused(&b, &mut r, snap, "does not declare its size");

    // 6. Limits: a remote larger than the configured budget.
    let mut r = DirRemote::new("limited", tmp.path().join("symlink-ok")).with_limits(
        shelldone::remote::verify::Limits {
            max_objects: 2,
            ..Default::default()
        },
    );
    assert_refused(&b, &mut r, ok_snap, "limit of 2 objects");
}

#[test]
fn dir_interrupted_push_leaves_refs() {
    let a = Dev::new(4);
    let tmp = tempfile::tempdir().unwrap();
    let rdir = tmp.path().join("r");
    let mut r = DirRemote::new("r", &rdir);
    // Fail after the objects are written: the session refs' dir cannot be created.
    std::fs::create_dir_all(rdir.join("objects")).unwrap();
    std::fs::write(rdir.join("shelldone-remote"), "shelldone-dir-remote 1\n").unwrap();
    std::fs::create_dir_all(rdir.join("refs").join(a.device())).unwrap();
    let blocker = rdir.join("refs").join(a.device()).join("sessions");
    std::fs::write(&blocker, "not a dir").unwrap();
    let up = a.updates(&BTreeMap::new());
    assert!(r.push(a.state.objects(), &up, &quiet).is_err());
    assert!(
        count_files(&rdir.join("objects")) > 0,
        "objects were written first"
    );
    assert!(
        r.list_refs().unwrap().is_empty(),
        "no ref moved: {:?}",
        r.list_refs()
    );
    std::fs::remove_file(&blocker).unwrap();
    let st = r.push(a.state.objects(), &up, &quiet).unwrap();
    assert_eq!(st.objects, 0, "the objects were already there");
    assert_eq!(r.list_refs().unwrap(), a.own_refs());
}

const CHILD_ENV: &str = "SHELLDONE_TEST_CHILD_PUSH";

/// Runs in a child process (see `dir_push_killed`): pushes the store at `$CHILD_ENV` to a dir.
#[test]
#[ignore = "helper run as a child process by dir_push_killed"]
fn child_push_helper() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut it = spec.split('\n');
    let (cfg, st, dir) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let (state, _) = State::open(Paths {
        config_dir: cfg.into(),
        state_dir: st.into(),
    })
    .unwrap();
    let dev = state.device().to_owned();
    let mut r = DirRemote::new("r", dir);
    let listed = r.list_refs().unwrap();
    let up: Vec<RefUpdate> = state
        .refs()
        .list("")
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n == "head" || n.starts_with("sessions/"))
        .map(|(n, id)| {
            let name = format!("{dev}/{n}");
            RefUpdate {
                expected: listed.get(&name).copied(),
                name,
                new: Some(id),
            }
        })
        .collect();
    r.push(state.objects(), &up, &quiet).unwrap();
}

fn spawn_child_push(a: &Dev, dir: &Path) -> Child {
    let spec = format!(
        "{}\n{}\n{}",
        a.paths.config_dir.display(),
        a.paths.state_dir.display(),
        dir.display()
    );
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_push_helper",
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn dir_push_killed() {
    let a = Dev::new(5);
    let tmp = tempfile::tempdir().unwrap();
    // How long a whole child push takes, to spread the kills over it.
    let t0 = Instant::now();
    let st = spawn_child_push(&a, &tmp.path().join("reference"))
        .wait()
        .unwrap();
    assert!(st.success());
    let full = t0.elapsed();
    let c = Dev::empty();
    let n = 8u32;
    let mut interrupted = 0;
    for k in 0..n {
        let dir = tmp.path().join(format!("r{k}"));
        let mut child = spawn_child_push(&a, &dir);
        std::thread::sleep(full * k / n);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if !status.success() {
            interrupted += 1;
        }
        // Refs are absent or complete: everything they name is on the remote and verifies.
        let mut r = DirRemote::new("r", &dir);
        let refs = r.list_refs().unwrap();
        for (name, id) in &refs {
            assert_eq!(a.own_refs().get(name), Some(id));
        }
        let batch = c.state.objects().batch().unwrap();
        r.fetch(
            c.state.objects(),
            &batch,
            &refs.values().copied().collect::<Vec<_>>(),
            false,
            &quiet,
        )
        .unwrap();
        drop(batch);
        // The next push succeeds.
        let listed = r.list_refs().unwrap();
        r.push(a.state.objects(), &a.updates(&listed), &quiet)
            .unwrap();
        assert_eq!(r.list_refs().unwrap(), a.own_refs());
    }
    assert!(interrupted > 0, "at least one push was killed mid-way");
}

// ---------------------------------------------------------------------------------------------
// Git remote over a real git daemon
// ---------------------------------------------------------------------------------------------

#[path = "common/git_daemon.rs"]
mod git_daemon;
use git_daemon::GitDaemon as Daemon;

fn git(args: &[&str], dir: &Path) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn git_remote(dev: &Dev, name: &str, url: &str) -> GitRemote {
    GitRemote::new(name, url, dev.state.snapshots_dir(), &dev.device()).unwrap()
}

#[test]
fn git_push_fetch_fsck_clone_determinism() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("srv"));
    let (url, repo) = daemon.repo("state.git");
    let a = Dev::with_sessions(6, 30);
    let mut ra = git_remote(&a, "origin", &url);
    assert!(ra.list_refs().unwrap().is_empty());
    let st = ra
        .push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    assert!(st.objects > 0);
    let listed = ra.list_refs().unwrap();
    assert_eq!(listed, a.own_refs());

    // The daemon's repository is a valid git repository.
    git(&["fsck", "--strict", "--no-dangling"], &repo);
    let dev_a = a.device();
    let head_git = git(
        &["rev-parse", &format!("refs/shelldone/{dev_a}/head")],
        &repo,
    );
    assert_eq!(
        head_git,
        git(&["rev-parse", &format!("refs/heads/{dev_a}")], &repo)
    );
    let clone = tmp.path().join("clone");
    let out = Command::new("git")
        .args(["clone", "-q", &url])
        .arg(&clone)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = Command::new("git")
        .arg("-C")
        .arg(&clone)
        .args(["log", &format!("origin/{dev_a}")])
        .output()
        .unwrap();
    let log = String::from_utf8(log.stdout).unwrap();
    assert!(
        log.contains("first save of seed 6") && log.contains("Shelldone-Snapshot: "),
        "{log}"
    );
    assert!(
        log.contains(&format!("{dev_a} <{dev_a}@shelldone.invalid>")),
        "{log}"
    );
    let co = Command::new("git")
        .arg("-C")
        .arg(&clone)
        .args(["checkout", "-q", &format!("origin/{dev_a}")])
        .output()
        .unwrap();
    assert!(
        co.status.success(),
        "{}",
        String::from_utf8_lossy(&co.stderr)
    );
    let cfg = std::fs::read(clone.join("config").join("config.toml")).unwrap();
    assert_eq!(
        cfg,
        std::fs::read(a.paths.config_dir.join("config.toml")).unwrap(),
        "a browsable checkout of real files"
    );
    let big = clone.join("state/sessions");
    let biggest = walkdir::WalkDir::new(&big)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .max()
        .unwrap();
    assert!(
        biggest > 65_536,
        "a chunked file appears whole in git ({biggest} bytes)"
    );

    // B fetches: identical snapshot ids, all objects verified.
    let b = Dev::empty();
    let mut rb = git_remote(&b, "origin", &url);
    let lb = rb.list_refs().unwrap();
    assert_eq!(lb, listed);
    let stb = b
        .fetch(&mut rb, &lb.values().copied().collect::<Vec<_>>())
        .unwrap();
    assert_eq!(
        stb.objects as usize,
        a.count(),
        "B rebuilt every object of A"
    );
    b.adopt_and_check("origin", &lb);

    // Incremental push + fetch.
    a.change_and_save(1);
    ra.push(a.state.objects(), &a.updates(&listed), &quiet)
        .unwrap();
    let l2 = rb.list_refs().unwrap();
    assert_eq!(l2, a.own_refs());
    let st2 = b
        .fetch(&mut rb, &l2.values().copied().collect::<Vec<_>>())
        .unwrap();
    assert!(
        st2.objects > 0 && st2.objects < stb.objects / 2,
        "{st2:?} vs {stb:?}"
    );
    assert_eq!(b.count(), a.count());
    b.adopt_and_check("origin", &l2);
    git(&["fsck", "--strict", "--no-dangling"], &repo);

    // Shallow fetch over git: the snapshot without its parent, parent mapping still verified.
    let c = Dev::empty();
    let mut rc = git_remote(&c, "origin", &url);
    rc.list_refs().unwrap();
    let h2 = l2[&format!("{dev_a}/head")];
    let batch = c.state.objects().batch().unwrap();
    rc.fetch(c.state.objects(), &batch, &[h2], true, &quiet)
        .unwrap();
    batch.commit().unwrap();
    let parent = c.state.objects().read_snapshot(&h2).unwrap().parents[0];
    assert!(!c.state.objects().has(&parent) && c.count() < b.count());

    // Determinism: B converts the same snapshot in a fresh mirror, pushes it under its own
    // namespace, and gets the same commit id as A.
    let head_a = l2[&format!("{dev_a}/head")];
    let mut fresh = git_remote(&b, "fresh", &url);
    let up = vec![RefUpdate {
        name: format!("{}/head", b.device()),
        expected: None,
        new: Some(head_a),
    }];
    fresh.push(b.state.objects(), &up, &quiet).unwrap();
    let ga = git(
        &["rev-parse", &format!("refs/shelldone/{dev_a}/head")],
        &repo,
    );
    let gb = git(
        &["rev-parse", &format!("refs/shelldone/{}/head", b.device())],
        &repo,
    );
    assert_eq!(ga, gb, "two mirrors map one snapshot to one commit");
    assert_eq!(fresh.git_id_of(&head_a).unwrap().to_string(), ga.trim());

    // CAS: a stale lease fails, atomically for all refs of the push.
    let head = format!("{dev_a}/head");
    let sess = a
        .own_refs()
        .into_iter()
        .find(|(n, _)| n.contains("/sessions/"))
        .unwrap();
    let before = ra.list_refs().unwrap();
    let up = vec![
        RefUpdate {
            name: sess.0.clone(),
            expected: Some(sess.1),
            new: Some(before[&head]),
        },
        RefUpdate {
            name: head.clone(),
            expected: None,
            new: Some(listed[&head]),
        },
    ];
    match ra.push(a.state.objects(), &up, &quiet) {
        Err(Error::RefConflict { name, .. }) => assert_eq!(name, head),
        other => panic!("expected a ref conflict, got {other:?}"),
    }
    let after = ra.list_refs().unwrap();
    assert_eq!(
        after, before,
        "an atomic push moves no ref when one lease fails"
    );
    // Deleting a ref with the right lease works.
    let del = vec![RefUpdate {
        name: sess.0.clone(),
        expected: Some(sess.1),
        new: None,
    }];
    ra.push(a.state.objects(), &del, &quiet).unwrap();
    assert!(!ra.list_refs().unwrap().contains_key(&sess.0));
}

/// A hand-written commit in the mapping's format.
fn hostile_commit(
    repo: &gix::Repository,
    tree: gix::ObjectId,
    snap: &Object,
) -> (gix::ObjectId, ObjectId) {
    snapshot_commit(repo, tree, &[], snap, CommitFormat::V2)
}

/// A snapshot's commit written by hand in `format`.
fn snapshot_commit(
    repo: &gix::Repository,
    tree: gix::ObjectId,
    parents: &[gix::ObjectId],
    snap: &Object,
    format: CommitFormat,
) -> (gix::ObjectId, ObjectId) {
    let (sid, canonical) = objects_format::encode_with_id(snap).unwrap();
    let Object::Snapshot(s) = snap else { panic!() };
    let c =
        shelldone::remote::git::write_snapshot_commit(repo, tree, parents, s, &canonical, format)
            .unwrap();
    (c, sid)
}

#[test]
fn git_hostile_remotes() {
    use shelldone::remote::gitmirror::{self as gm, GitTreeEntry as GEntry, Mode};
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("srv"));
    let b = Dev::empty();

    // 1. Tampered content: the commit's tree does not rebuild to its snapshot's root.
    let a = Dev::new(7);
    let (url, path) = daemon.repo("tampered.git");
    git_remote(&a, "t", &url)
        .push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    let head = a.own_refs()[&format!("{}/head", a.device())];
    let canonical = a.state.objects().read_canonical(&head).unwrap();
    let snap = objects_format::decode(&canonical).unwrap();
    let repo = gm::open_or_init_bare(&path).unwrap();
    let evil_blob = gm::write_blob(&repo, b"evil").unwrap();
    let cfg = gm::write_tree(
        &repo,
        &[GEntry {
            name: b"config.toml".to_vec(),
            mode: Mode::File,
            oid: evil_blob,
        }],
    )
    .unwrap();
    let root = gm::write_tree(
        &repo,
        &[GEntry {
            name: b"config".to_vec(),
            mode: Mode::Dir,
            oid: cfg,
        }],
    )
    .unwrap();
    let (c, sid) = hostile_commit(&repo, root, &snap);
    assert_eq!(sid, head);
    gm::set_ref(&repo, "refs/shelldone/evil/head", c).unwrap();
    let mut r = git_remote(&b, "tampered", &url);
    assert_eq!(r.list_refs().unwrap()[&"evil/head".to_owned()], head);
    assert_refused(&b, &mut r, head, "rebuilds to");

    // 2. A tree entry named `..` / containing `/` (git refuses to write these; craft raw bytes).
    for (i, name) in [&b".."[..], b"a/b"].iter().enumerate() {
        let (url, path) = daemon.repo(&format!("badname{i}.git"));
        let repo = gm::open_or_init_bare(&path).unwrap();
        let blob = gm::write_blob(&repo, b"x").unwrap();
        let mut raw = b"100644 ".to_vec();
        raw.extend_from_slice(name);
        raw.push(0);
        raw.extend_from_slice(blob.as_slice());
        let rawf = tmp.path().join(format!("tree{i}"));
        std::fs::write(&rawf, &raw).unwrap();
        let t = git(
            &[
                "hash-object",
                "-t",
                "tree",
                "--literally",
                "-w",
                rawf.to_str().unwrap(),
            ],
            &path,
        );
        let t = gix::ObjectId::from_hex(t.trim().as_bytes()).unwrap();
        let empty = objects_format::encode_with_id(&Object::Tree(Tree::default()))
            .unwrap()
            .0;
        let (c, sid) = hostile_commit(&repo, t, &snapshot_of(empty));
        gm::set_ref(&repo, "refs/shelldone/evil/head", c).unwrap();
        let mut r = git_remote(&b, &format!("badname{i}"), &url);
        let refs = r.list_refs().unwrap();
        assert_eq!(refs.len(), 1);
        assert_refused(&b, &mut r, sid, "entry named");
    }

    // 3. A symlink `../../etc/passwd` one level down, with a snapshot that matches the tree: data
    //    (Issue #10), fetched, and never materialised by a restore.
    let (url, path) = daemon.repo("symlink.git");
    let repo = gm::open_or_init_bare(&path).unwrap();
    let target = b"../../etc/passwd";
    let gl = gm::write_blob(&repo, target).unwrap();
    let gsub = gm::write_tree(
        &repo,
        &[GEntry {
            name: b"link".to_vec(),
            mode: Mode::Symlink,
            oid: gl,
        }],
    )
    .unwrap();
    let groot = gm::write_tree(
        &repo,
        &[GEntry {
            name: b"config".to_vec(),
            mode: Mode::Dir,
            oid: gsub,
        }],
    )
    .unwrap();
    let (_, t) = link_tree(target);
    let sub = objects_format::encode_with_id(&t).unwrap().0;
    let root = objects_format::encode_with_id(&dir_tree(b"config", &sub))
        .unwrap()
        .0;
    let (c, sid) = hostile_commit(&repo, groot, &snapshot_of(root));
    gm::set_ref(&repo, "refs/shelldone/evil/head", c).unwrap();
    let got = Dev::empty();
    let mut r = git_remote(&got, "symlink", &url);
    r.list_refs().unwrap();
    got.fetch(&mut r, &[sid]).unwrap();
    assert_never_materialised(&got, sid, Some("config/link"));

    // 4. A ref naming a commit whose tree the remote does not have.
    let (url, path) = daemon.repo("missing.git");
    let repo = gm::open_or_init_bare(&path).unwrap();
    let ghost_tree = gix::ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
    let empty = objects_format::encode_with_id(&Object::Tree(Tree::default()))
        .unwrap()
        .0;
    let (c, sid) = hostile_commit(&repo, ghost_tree, &snapshot_of(empty));
    gm::set_ref(&repo, "refs/shelldone/evil/head", c).unwrap();
    let mut r = git_remote(&b, "ghost", &url);
    let before = b.count();
    let e = match r.list_refs() {
        Err(e) => e.to_string(),
        Ok(_) => assert_refused(&b, &mut r, sid, "missing"),
    };
    assert!(e.contains("fetching from") || e.contains("missing"), "{e}");
    eprintln!("ref to a missing git object: {e}");
    assert_eq!(b.count(), before);
}

// ---------------------------------------------------------------------------------------------
// Git remote: idle timeout, HEAD for `git clone`, the commit format
// ---------------------------------------------------------------------------------------------

/// A git remote with an idle timeout of `idle`.
fn git_remote_idle(dev: &Dev, name: &str, url: &str, idle: std::time::Duration) -> GitRemote {
    git_remote(dev, name, url).with_options(GitOptions {
        idle_timeout: idle,
        fetch_idle_timeout: idle,
    })
}

/// Incompressible bytes (BLAKE3 in XOF mode).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

/// A server on 127.0.0.1 that accepts connections and then never reads or answers; returns its
/// port. It stops accepting after 60 s.
fn silent_server() -> u16 {
    use std::time::Duration;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match l.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    port
}

/// A proxy on 127.0.0.1 to `target` that passes what the client sends at about `rate` bytes/s
/// (the answers unthrottled); returns its port. It stops accepting after 120 s.
fn throttled_proxy(target: u16, rate: usize) -> u16 {
    use std::io::Read;
    use std::net::{Shutdown, TcpStream};
    use std::time::Duration;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let Ok((client, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            client.set_nonblocking(false).unwrap();
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                // Answers: as fast as they come.
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let (mut client, mut server) = (client, server);
                let mut buf = vec![0u8; rate / 20];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = server.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn git_idle_timeout_stops_a_stalled_remote() {
    use shelldone::remote::gitmirror::{self as gm, GitError};
    use std::time::Duration;
    let idle = Duration::from_secs(2);
    let url = format!("git://127.0.0.1:{}/x", silent_server());

    // The git binary (push): killed once nothing moved for `idle`.
    let tmp = tempfile::tempdir().unwrap();
    let repo = gm::open_or_init_bare(&tmp.path().join("m.git")).unwrap();
    let blob = gm::write_blob(&repo, b"x").unwrap();
    let t0 = Instant::now();
    let e = gm::push_with_timeout(
        repo.git_dir(),
        &url,
        &[(&blob.to_string(), "refs/heads/x", None)],
        idle,
    )
    .expect_err("the server never answers");
    let took = t0.elapsed();
    assert!(matches!(e, GitError::Timeout { .. }), "{e:?}");
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("idle timeout"), "{e}");
    assert!(took >= idle && took < idle * 8, "{took:?}");

    // Through the remote (its first step lists refs with gix): a retryable error, in time.
    let a = Dev::new(21);
    let mut r = git_remote_idle(&a, "stalled", &url, idle);
    let t0 = Instant::now();
    let e = r
        .push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .expect_err("the server never answers");
    let took = t0.elapsed();
    assert!(e.retryable(), "{e:?}");
    assert!(e.to_string().contains("idle timeout"), "{e}");
    assert!(took >= idle && took < idle * 8, "{took:?}");
}

#[test]
fn git_slow_push_that_keeps_moving_is_not_stopped() {
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("srv"));
    let (direct, repo) = daemon.repo("slow.git");
    let port: u16 = direct
        .trim_start_matches("git://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let url = format!(
        "git://127.0.0.1:{}/slow.git",
        throttled_proxy(port, 1 << 20)
    );
    let a = Dev::new(22);
    let big = a.paths.config_dir.join("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..2 {
        std::fs::write(big.join(format!("f{i}.bin")), noise(i, 4 << 20)).unwrap();
    }
    a.state.save(&SaveOptions::default()).unwrap();
    // Once every byte is sent, the server indexes the pack with nothing to see from here: the
    // timeout must stay above that stretch (small for 8 MiB, even on a loaded machine).
    let idle = Duration::from_secs(3);
    let mut r = git_remote_idle(&a, "origin", &url, idle);
    let t0 = Instant::now();
    r.push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    let took = t0.elapsed();
    eprintln!("8 MiB through a 1 MiB/s proxy: {took:?} with an idle timeout of {idle:?}");
    assert!(
        took > idle,
        "the push took longer than the idle timeout ({took:?})"
    );
    let dev = a.device();
    assert_eq!(
        git(&["rev-parse", &format!("refs/shelldone/{dev}/head")], &repo).trim(),
        r.git_id_of(&a.own_refs()[&format!("{dev}/head")])
            .unwrap()
            .to_string()
    );
}

#[test]
fn git_clone_checks_out_a_device_head() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("srv"));
    let (url, repo) = daemon.repo("clone.git");
    // As a hosting service would: every pushed object is checked by git fsck.
    git(&["config", "receive.fsckObjects", "true"], &repo);
    let a = Dev::new(31);
    let b = Dev::new(32);
    let mut ra = git_remote(&a, "origin", &url);
    ra.push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    let mut rb = git_remote(&b, "origin", &url);
    rb.list_refs().unwrap();
    rb.push(b.state.objects(), &b.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    let head_branch = git(&["symbolic-ref", "HEAD"], &repo);
    let head_branch = head_branch.trim();
    let a_commit = git(&["rev-parse", &format!("refs/heads/{}", a.device())], &repo);
    assert_eq!(
        git(&["rev-parse", head_branch], &repo),
        a_commit,
        "{head_branch} is the first pusher's head"
    );

    let clone = |dir: &str| {
        let dir = tmp.path().join(dir);
        let out = Command::new("git")
            .args(["clone", &url])
            .arg(&dir)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("warning"), "{stderr}");
        dir
    };
    let dir = clone("clone1");
    assert_eq!(
        std::fs::read(dir.join("config/config.toml")).unwrap(),
        std::fs::read(a.paths.config_dir.join("config.toml")).unwrap()
    );
    assert!(dir.join("state/sessions").is_dir());
    let log = Command::new("git")
        .arg("-C")
        .arg(&dir)
        .args(["log", "-1", "--format=%s%n%b"])
        .output()
        .unwrap();
    assert!(log.status.success());
    let log = String::from_utf8(log.stdout).unwrap();
    let head_a = a.own_refs()[&format!("{}/head", a.device())];
    assert!(log.starts_with("first save of seed 31\n"), "{log}");
    assert!(
        log.contains(&format!("Saved by {} at ", a.device())),
        "{log}"
    );
    // The trailer: one short line naming the snapshot.
    let trailer: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("Shelldone-Snapshot: "))
        .collect();
    assert_eq!(trailer, [format!("Shelldone-Snapshot: {head_a}")], "{log}");
    assert!(log.len() < 300, "a short message: {log}");

    // The branch follows the first pusher's head; the other device's push leaves it alone.
    let before = a.own_refs();
    a.change_and_save(1);
    ra.push(a.state.objects(), &a.updates(&before), &quiet)
        .unwrap();
    let before_b = b.own_refs();
    b.change_and_save(1);
    rb.push(b.state.objects(), &b.updates(&before_b), &quiet)
        .unwrap();
    assert_eq!(
        git(&["rev-parse", head_branch], &repo),
        git(&["rev-parse", &format!("refs/heads/{}", a.device())], &repo)
    );
    assert_ne!(git(&["rev-parse", head_branch], &repo), a_commit);
    let dir = clone("clone2");
    assert!(dir.join("config/config.toml").is_file());
}

#[test]
fn git_reads_first_revision_commits() {
    use shelldone::remote::gitmirror as gm;
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("srv"));
    let (url, path) = daemon.repo("old.git");
    // A's head as the first revision wrote it: the whole snapshot in the trailer, no header.
    let a = Dev::new(41);
    git_remote(&a, "origin", &url)
        .push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    let dev = a.device();
    let head = a.own_refs()[&format!("{dev}/head")];
    let canonical = a.state.objects().read_canonical(&head).unwrap();
    let snap = objects_format::decode(&canonical).unwrap();
    assert!(matches!(&snap, Object::Snapshot(s) if s.parents.is_empty()));
    let tree = git(&["rev-parse", &format!("refs/heads/{dev}^{{tree}}")], &path);
    let tree = gix::ObjectId::from_hex(tree.trim().as_bytes()).unwrap();
    let repo = gm::open_or_init_bare(&path).unwrap();
    let (old, sid) = snapshot_commit(&repo, tree, &[], &snap, CommitFormat::Legacy);
    assert_eq!(sid, head);
    let body = git(&["cat-file", "commit", &old.to_string()], &path);
    assert!(
        body.contains(&format!("Shelldone-Snapshot: {}", hex::encode(&canonical)))
            && !body.contains("shelldone-snapshot "),
        "{body}"
    );
    gm::set_ref(&repo, "refs/shelldone/old/head", old).unwrap();
    for r in gm::list_refs(&repo, &format!("refs/shelldone/{dev}/")).unwrap() {
        gm::delete_ref(&repo, &r.0).unwrap();
    }

    // B reads it, verified in its own form, and builds on it.
    let b = Dev::empty();
    let mut rb = git_remote(&b, "origin", &url);
    let refs = rb.list_refs().unwrap();
    assert_eq!(refs[&"old/head".to_owned()], head);
    b.fetch(&mut rb, &[head]).unwrap();
    b.adopt_and_check("origin", &refs);
    assert_eq!(rb.git_id_of(&head), Some(old));

    // A snapshot B pushes on top of it names the old commit as its parent, and C reads both.
    let child = Object::Snapshot(Snapshot {
        parents: vec![head],
        message: "on top of an old commit".into(),
        ..match &snap {
            Object::Snapshot(s) => s.clone(),
            _ => unreachable!(),
        }
    });
    let (cid, ccanon) = objects_format::encode_with_id(&child).unwrap();
    let batch = b.state.objects().batch().unwrap();
    batch.put_canonical(Kind::Snapshot, cid, &ccanon).unwrap();
    batch.commit().unwrap();
    let up = vec![RefUpdate {
        name: format!("{}/head", b.device()),
        expected: None,
        new: Some(cid),
    }];
    rb.push(b.state.objects(), &up, &quiet).unwrap();
    let new = git(
        &["rev-parse", &format!("refs/heads/{}^", b.device())],
        &path,
    );
    assert_eq!(new.trim(), old.to_string());
    let c = Dev::empty();
    let mut rc = git_remote(&c, "origin", &url);
    rc.list_refs().unwrap();
    c.fetch(&mut rc, &[cid]).unwrap();
    assert!(c.state.objects().has(&head) && c.state.objects().has(&cid));
    git(&["fsck", "--strict", "--no-dangling"], &path);
}

/// The kinds of every object in a git repository (loose and packed).
fn object_kinds(repo: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let listed = git(
        &[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objecttype)",
        ],
        repo,
    );
    for kind in listed.lines() {
        *out.entry(kind.to_owned()).or_insert(0) += 1;
    }
    out
}

/// `file` (under the config dir) as snapshot `rev` holds it, restored into a scratch folder.
fn restored_file(dev: &Dev, rev: ObjectId, file: &str) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    dev.state
        .restore(&shelldone::RestoreOptions {
            rev: Some(rev.to_hex()),
            to: Some(out.path().to_owned()),
            ..Default::default()
        })
        .unwrap();
    std::fs::read(out.path().join("config").join(file)).unwrap()
}

/// ADR 0007: a git remote's mirror keeps commits and trees only, yet every transfer still
/// works: a pull of a file another device changed (what a thin pack would have sent as a delta
/// against the dropped blob), a push that reuses dropped blobs, and a push to a remote that lost
/// everything (the blobs are written again from the store).
#[test]
fn git_lean_mirror_keeps_no_blobs_and_every_transfer_still_works() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("srv"));
    let (url, server) = daemon.repo("lean.git");
    let scrollback = "scrollback.log";
    let a = Dev::new(31);
    let v1 = noise(1, 300_000);
    std::fs::write(a.paths.config_dir.join(scrollback), &v1).unwrap();
    a.change_and_save(1);
    let mut ra = git_remote(&a, "origin", &url);
    let listed = ra.list_refs().unwrap();
    ra.push(a.state.objects(), &a.updates(&listed), &quiet)
        .unwrap();
    let mirror_a = ra.mirror().to_owned();
    assert_eq!(object_kinds(&mirror_a).get("blob"), None, "after a push");
    assert!(object_kinds(&mirror_a)["tree"] > 0);
    let server_blobs = object_kinds(&server)["blob"];
    assert!(server_blobs > 3, "{server_blobs} blobs on the server");

    // B pulls A's state, appends to the big file, and pushes: B's commit has A's for parent,
    // so a server asked for a thin pack would send the new version as a delta against the old.
    let b = Dev::empty();
    b.state.remote_add("origin", &url, false).unwrap();
    b.state
        .sync_pull("origin", &shelldone::sync::PullOptions::default(), &quiet)
        .unwrap();
    let mirror_b = b.state.snapshots_dir().join("remotes/origin.git");
    assert_eq!(object_kinds(&mirror_b).get("blob"), None, "after a pull");
    let live_b = b.paths.config_dir.join(scrollback);
    assert_eq!(std::fs::read(&live_b).unwrap(), v1);
    let mut v2 = v1.clone();
    v2.extend_from_slice(b"one more line\n");
    std::fs::write(&live_b, &v2).unwrap();
    b.state
        .save(&SaveOptions {
            message: "B appends".into(),
            ..Default::default()
        })
        .unwrap();
    b.state.sync_push("origin", &quiet).unwrap();
    assert_eq!(object_kinds(&mirror_b).get("blob"), None);

    // A pulls B's version: the server must send it whole, as A dropped the version it pushed.
    a.state.remote_add("origin", &url, false).unwrap();
    a.state
        .sync_pull("origin", &shelldone::sync::PullOptions::default(), &quiet)
        .unwrap();
    assert_eq!(object_kinds(&mirror_a).get("blob"), None);
    assert_eq!(
        std::fs::read(a.paths.config_dir.join(scrollback)).unwrap(),
        v2
    );

    // The server loses everything; A pushes again, and a new device gets it all.
    std::fs::remove_dir_all(&server).unwrap();
    git(&["init", "-q", "--bare"], &server);
    std::fs::write(server.join("git-daemon-export-ok"), b"").unwrap();
    let mut ra = git_remote(&a, "origin", &url);
    assert!(ra.list_refs().unwrap().is_empty());
    ra.push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    assert_eq!(object_kinds(&mirror_a).get("blob"), None);
    git(&["fsck", "--strict", "--no-dangling"], &server);
    let c = Dev::empty();
    let mut rc = git_remote(&c, "origin", &url);
    let head_a2 = rc.list_refs().unwrap()[&format!("{}/head", a.device())];
    c.fetch(&mut rc, &[head_a2]).unwrap();
    assert_eq!(restored_file(&c, head_a2, scrollback), v2);
}
