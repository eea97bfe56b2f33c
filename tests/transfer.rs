//! The transfer seam (issue #11 item 3): push and fetch through the transfer module over the
//! in-memory backend, the same code the directory remote runs under; a hostile backend that
//! hands out wrong bytes is refused with nothing staged; the dry-run decorator records what a
//! push would send and changes nothing.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure: a panic is the test failing, with its message"
)]

use std::collections::BTreeMap;

use objects_format::{Kind, Object, ObjectId};
use shelldone::remote::dryrun::DryRun;
use shelldone::remote::memory::MemoryBackend;
use shelldone::remote::{Backend, RefUpdate, Remote, TransferStats};
use shelldone::transfer::PlainRemote;
use shelldone::{Paths, SaveOptions, State};

fn quiet(_: u64, _: Option<u64>) {}

struct Dev {
    _tmp: tempfile::TempDir,
    paths: Paths,
    state: State,
}

impl Dev {
    fn new(seed: u64) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: tmp.path().join("config"),
            state_dir: tmp.path().join("state"),
        };
        let mut spec = shelldone::demo::DemoSpec::small();
        spec.seed = seed;
        shelldone::demo::generate(&paths.config_dir, &paths.state_dir, &spec).unwrap();
        let (state, _) = State::open(paths.clone()).unwrap();
        state
            .save(&SaveOptions {
                message: format!("first save of seed {seed}"),
                ..Default::default()
            })
            .unwrap();
        Dev {
            _tmp: tmp,
            paths,
            state,
        }
    }

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

    fn count(&self) -> usize {
        self.state.objects().list().unwrap().len()
    }

    /// Updates moving this device's refs on a remote listing `remote` to their local values.
    fn updates(&self, remote: &BTreeMap<String, ObjectId>) -> Vec<RefUpdate> {
        let dev = self.state.device().to_owned();
        self.state
            .refs()
            .list("")
            .unwrap()
            .into_iter()
            .filter(|(n, _)| n == "head" || n.starts_with("sessions/"))
            .map(|(n, id)| {
                let name = format!("{dev}/{n}");
                RefUpdate {
                    expected: remote.get(&name).copied(),
                    name,
                    new: Some(id),
                }
            })
            .collect()
    }

    fn head(&self) -> ObjectId {
        self.state.refs().get("head").unwrap().unwrap()
    }

    /// Fetches `wants` through the transfer module; commits only on success.
    fn fetch(&self, r: &mut dyn Remote, wants: &[ObjectId]) -> shelldone::Result<TransferStats> {
        let batch = self.state.objects().batch()?;
        let st = r.fetch(self.state.objects(), &batch, wants, false, &quiet)?;
        batch.commit()?;
        Ok(st)
    }
}

#[test]
fn push_and_fetch_through_the_transfer_module_over_memory() {
    let a = Dev::new(1);
    let mut mem = MemoryBackend::new("mem");

    let up = a.updates(&BTreeMap::new());
    let sent = PlainRemote::new(&mut mem)
        .push(a.state.objects(), &up, &quiet)
        .unwrap();
    assert_eq!(sent.objects as usize, a.count(), "every object A has");
    assert_eq!(sent.objects as usize, mem.objects().len());
    assert_eq!(
        sent.bytes,
        mem.objects().values().map(|v| v.len() as u64).sum::<u64>()
    );
    let listed = mem.list_refs().unwrap();
    assert_eq!(listed.len(), up.len());

    // B fetches everything and checks clean; a second fetch moves nothing.
    let b = Dev::empty();
    let wants: Vec<ObjectId> = listed.values().copied().collect();
    let got = b.fetch(&mut PlainRemote::new(&mut mem), &wants).unwrap();
    assert_eq!(got.objects as usize, a.count());
    assert_eq!(b.count(), a.count());
    for (n, id) in &listed {
        b.state
            .refs()
            .set(&format!("remotes/mem/{n}"), Some(*id), "test")
            .unwrap();
    }
    let rep = b
        .state
        .check(shelldone::check::CheckOptions::default())
        .unwrap();
    assert!(rep.ok(), "{:?}", rep.problems);
    assert_eq!(
        b.fetch(&mut PlainRemote::new(&mut mem), &wants)
            .unwrap()
            .objects,
        0
    );

    // A change sends only what the backend lacks.
    shelldone::demo::small_change(&a.paths.config_dir, &a.paths.state_dir, 1).unwrap();
    let out = a
        .state
        .save(&SaveOptions {
            message: "change".into(),
            ..Default::default()
        })
        .unwrap();
    let puts = mem.puts();
    let up2 = a.updates(&listed);
    let sent2 = PlainRemote::new(&mut mem)
        .push(a.state.objects(), &up2, &quiet)
        .unwrap();
    assert_eq!(sent2.objects, out.objects_written);
    assert_eq!(mem.puts() - puts, sent2.objects);

    // A compare-and-swap against a stale value moves nothing.
    let stale = a.updates(&listed);
    assert!(matches!(
        PlainRemote::new(&mut mem).push(a.state.objects(), &stale, &quiet),
        Err(shelldone::Error::RefConflict { .. })
    ));
    assert_eq!(mem.refs_mut().get(&up2[0].name), up2[0].new.as_ref());
}

/// Stores `obj` in `mem` as a stored object frame; returns its id.
fn put(mem: &mut MemoryBackend, obj: &Object) -> ObjectId {
    let (id, canonical) = objects_format::encode_with_id(obj).unwrap();
    mem.objects_mut()
        .insert(id, zstd::bulk::compress(&canonical, 3).unwrap());
    id
}

/// Fetches `want` from `mem`: must fail naming `expect`, staging nothing.
fn assert_refused(b: &Dev, mem: &mut MemoryBackend, want: ObjectId, expect: &str) {
    let before = b.count();
    let batch = b.state.objects().batch().unwrap();
    let res = PlainRemote::new(&mut *mem).fetch(b.state.objects(), &batch, &[want], false, &quiet);
    let e = match res {
        Ok(st) => panic!("hostile fetch ({expect}) succeeded: {st:?}"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(expect), "error for {expect:?} was: {e}");
    drop(batch); // never committed on error
    assert_eq!(b.count(), before, "no object may land from a refused fetch");
    assert!(!b.state.objects().has(&want));
}

#[test]
fn a_backend_handing_out_wrong_bytes_is_refused_with_nothing_staged() {
    let a = Dev::new(2);
    let mut honest = MemoryBackend::new("evil");
    PlainRemote::new(&mut honest)
        .push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    let head = a.head();
    let snap = a.state.objects().read_snapshot(&head).unwrap();
    let b = Dev::empty();

    // 1. Another object's bytes under the root tree's id.
    let mut mem = honest.clone();
    let other = mem.objects()[&head].clone();
    mem.objects_mut().insert(snap.root, other);
    assert_refused(&b, &mut mem, head, &snap.root.to_hex());

    // 2. A flipped byte in a file's blob, deep down: everything above it is refused too.
    let mut mem = honest.clone();
    let (leaf, _) = a
        .state
        .objects()
        .list()
        .unwrap()
        .into_iter()
        .filter_map(|id| {
            let v = a.state.objects().read_verified(&id).ok()?;
            (v.kind == Kind::Blob).then_some((id, v))
        })
        .next()
        .unwrap();
    let raw = mem.objects_mut().get_mut(&leaf).unwrap();
    let n = raw.len();
    raw[n / 2] ^= 0x10;
    assert_refused(&b, &mut mem, head, &leaf.to_hex());
    assert!(!b.state.objects().has(&snap.root));

    // 3. Bytes of the right object, but of another kind than the link demands: a snapshot
    //    whose root names a blob.
    let mut mem = honest.clone();
    let bid = put(&mut mem, &Object::Blob(b"not a tree".to_vec()));
    let eid = put(
        &mut mem,
        &Object::Snapshot(objects_format::Snapshot {
            root: bid,
            ..snap.clone()
        }),
    );
    assert_refused(&b, &mut mem, eid, "is a blob, expected a tree");

    // 4. A symlink whose target blob the walk met first as a file: the target is still
    //    checked (a NUL is no path).
    let mut mem = honest.clone();
    let target = put(&mut mem, &Object::Blob(b"a\0b".to_vec()));
    let entry = |name: &[u8], kind| objects_format::TreeEntry {
        name: name.to_vec(),
        kind,
        flags: 0,
        size: 3,
        id: target,
    };
    let tree = put(
        &mut mem,
        &Object::Tree(objects_format::Tree {
            entries: vec![
                entry(b"a", objects_format::EntryKind::File),
                entry(b"b", objects_format::EntryKind::Symlink),
            ],
        }),
    );
    let evil = put(
        &mut mem,
        &Object::Snapshot(objects_format::Snapshot {
            root: tree,
            ..snap.clone()
        }),
    );
    assert_refused(&b, &mut mem, evil, "symlink target");

    // 5. An object it claims to have and does not hand out.
    let mut mem = honest.clone();
    mem.objects_mut().remove(&snap.root);
    assert_refused(&b, &mut mem, head, "missing on the remote");

    // The honest backend still works into the same store.
    assert_eq!(
        b.fetch(&mut PlainRemote::new(&mut honest), &[head])
            .unwrap()
            .objects as usize,
        a.count()
    );
}

#[test]
fn dry_run_records_what_a_push_sends_and_changes_nothing() {
    let a = Dev::new(3);
    let mut mem = MemoryBackend::new("mem");
    let up = a.updates(&BTreeMap::new());

    let mut dry = PlainRemote::new(DryRun::new(&mut mem));
    let would = dry.push(a.state.objects(), &up, &quiet).unwrap();
    let recorded = dry.backend().recorded().clone();
    drop(dry);
    assert_eq!(recorded.sent, would);
    assert_eq!(recorded.refs, up);
    assert!(mem.objects().is_empty() && mem.list_refs().unwrap().is_empty());
    assert_eq!(mem.puts(), 0);

    // The real push sends exactly what the dry run said.
    let sent = PlainRemote::new(&mut mem)
        .push(a.state.objects(), &up, &quiet)
        .unwrap();
    assert_eq!(sent, recorded.sent);

    // Now up to date: a dry run of the same updates would send nothing, and meets the
    // conflict the real push would (the refs moved).
    let mut dry = PlainRemote::new(DryRun::new(&mut mem));
    assert!(matches!(
        dry.push(a.state.objects(), &up, &quiet),
        Err(shelldone::Error::RefConflict { .. })
    ));
    assert_eq!(dry.backend().recorded().sent.objects, 0);
}

/// A backend that keeps packs: a push writes into `sink`; a fetch takes `pack` whole.
#[derive(Default)]
struct PackBackend {
    sink: Vec<u8>,
    pack: Option<shelldone::store::IndexedPack>,
    refs: BTreeMap<String, ObjectId>,
}

impl Backend for PackBackend {
    fn name(&self) -> &str {
        "pack"
    }
    fn list_refs(&mut self) -> shelldone::Result<BTreeMap<String, ObjectId>> {
        Ok(self.refs.clone())
    }
    fn has(&mut self, ids: &[ObjectId]) -> shelldone::Result<Vec<bool>> {
        Ok(vec![false; ids.len()])
    }
    fn get(&mut self, _: &[ObjectId]) -> shelldone::Result<Vec<Option<Vec<u8>>>> {
        panic!("a whole pack is never asked for objects one by one")
    }
    fn put(
        &mut self,
        _: &mut dyn Iterator<Item = shelldone::Result<shelldone::remote::Outgoing>>,
    ) -> shelldone::Result<()> {
        panic!("a pack backend is never given objects one by one")
    }
    fn update_refs(&mut self, updates: &[RefUpdate]) -> shelldone::Result<()> {
        for u in updates {
            self.refs.insert(u.name.clone(), u.new.unwrap());
        }
        Ok(())
    }
    fn pack_sink(&mut self) -> Option<&mut dyn std::io::Write> {
        Some(&mut self.sink)
    }
    fn whole_pack(&self) -> Option<&shelldone::store::IndexedPack> {
        self.pack.as_ref()
    }
}

fn whole(bytes: Vec<u8>) -> PackBackend {
    PackBackend {
        pack: Some(shelldone::store::IndexedPack::parse(bytes).unwrap()),
        ..Default::default()
    }
}

/// The ids a pack holds.
fn ids_of(p: &PackBackend) -> std::collections::BTreeSet<ObjectId> {
    p.pack.as_ref().unwrap().ids().copied().collect()
}

#[test]
fn a_pack_backend_takes_a_push_whole_and_gives_it_back_whole() {
    let a = Dev::new(4);
    let mut out = PackBackend::default();
    let sent = PlainRemote::new(&mut out)
        .push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    assert_eq!(sent.objects as usize, a.count());
    assert_eq!(sent.bytes as usize, out.sink.len());
    let mut back = whole(std::mem::take(&mut out.sink));
    let all: std::collections::BTreeSet<ObjectId> =
        a.state.objects().list().unwrap().into_iter().collect();
    assert_eq!(ids_of(&back), all, "exactly the objects the push reached");

    let b = Dev::empty();
    let got = b
        .fetch(&mut PlainRemote::new(&mut back), &[a.head()])
        .unwrap();
    assert_eq!(got.objects as usize, a.count());
    assert_eq!(b.count(), a.count());
    b.state.refs().set("head", Some(a.head()), "test").unwrap();
    let rep = b
        .state
        .check(shelldone::check::CheckOptions::default())
        .unwrap();
    assert!(rep.ok(), "{:?}", rep.problems);
    // Everything is here now: its blocks are skipped.
    let again = b
        .fetch(&mut PlainRemote::new(&mut back), &[a.head()])
        .unwrap();
    assert_eq!(again.objects, 0);

    // Half of the objects: the blocks they share with the other half are not copied but made
    // anew from the wanted members, and the pack holds exactly what was asked for.
    let store = a.state.objects();
    let half: Vec<(Kind, ObjectId)> = store
        .list()
        .unwrap()
        .into_iter()
        .step_by(2)
        .map(|id| (store.read_verified(&id).unwrap().kind, id))
        .collect();
    let mut bytes = Vec::new();
    let st = store.export_pack(&half, &mut bytes, &|_| {}).unwrap();
    assert!(st.blocks_made > 0, "{st:?}");
    assert_eq!(st.objects as usize, half.len());
    let p = whole(bytes);
    assert_eq!(ids_of(&p), half.iter().map(|h| h.1).collect());
}

/// Fetches `want` from a whole pack: must fail naming `expect`, staging nothing.
fn assert_pack_refused(b: &Dev, pack: Vec<u8>, want: ObjectId, expect: &str) {
    let before = b.count();
    let e = match shelldone::store::IndexedPack::parse(pack) {
        Err(why) => why,
        Ok(p) => {
            let mut backend = PackBackend {
                pack: Some(p),
                ..Default::default()
            };
            let batch = b.state.objects().batch().unwrap();
            let res = PlainRemote::new(&mut backend).fetch(
                b.state.objects(),
                &batch,
                &[want],
                false,
                &quiet,
            );
            match res {
                Ok(st) => panic!("hostile pack ({expect}) was taken: {st:?}"),
                Err(e) => e.to_string(),
            }
        }
    };
    assert!(e.contains(expect), "error for {expect:?} was: {e}");
    assert_eq!(b.count(), before, "no object may land from a refused pack");
}

/// An object entry (SPEC §7.2) holding `obj`.
fn entry(obj: &Object) -> (ObjectId, Vec<u8>) {
    let (id, canonical) = objects_format::encode_with_id(obj).unwrap();
    let z = zstd::bulk::compress(&canonical, 3).unwrap();
    let mut e = objects_format::pack::entry_header(obj.kind(), z.len() as u32).to_vec();
    e.extend(z);
    (id, e)
}

#[test]
fn a_whole_pack_with_a_bad_structure_is_refused_with_nothing_staged() {
    let a = Dev::new(5);
    let mut out = PackBackend::default();
    PlainRemote::new(&mut out)
        .push(a.state.objects(), &a.updates(&BTreeMap::new()), &quiet)
        .unwrap();
    let honest = out.sink;
    let head = a.head();
    let snap = a.state.objects().read_snapshot(&head).unwrap();
    let b = Dev::empty();
    let with = |extra: &[&Vec<u8>]| {
        let mut p = honest.clone();
        for e in extra {
            p.extend_from_slice(e);
        }
        p
    };

    // 1. An object the snapshot does not reach.
    let (_, stray) = entry(&Object::Blob(b"nobody names me".to_vec()));
    assert_pack_refused(&b, with(&[&stray]), head, "does not reach");

    // 2. An object given twice.
    let (_, twice) = entry(&Object::Snapshot(snap.clone()));
    assert_pack_refused(&b, with(&[&twice]), head, "twice");

    // 3. A flipped byte in the last entry's frame (a block of the store).
    let mut flipped = honest.clone();
    let n = flipped.len();
    flipped[n - 3] ^= 0x40;
    assert_pack_refused(&b, flipped, head, "at ");

    // 4. A tree entry that says another size than its blob holds.
    let (blob, blob_e) = entry(&Object::Blob(b"four".to_vec()));
    let tree_of = |kind, size, id| {
        Object::Tree(objects_format::Tree {
            entries: vec![objects_format::TreeEntry {
                name: b"f".to_vec(),
                kind,
                flags: 0,
                size,
                id,
            }],
        })
    };
    let (tree, tree_e) = entry(&tree_of(objects_format::EntryKind::File, 5, blob));
    let (evil, evil_e) = entry(&Object::Snapshot(objects_format::Snapshot {
        root: tree,
        parents: vec![],
        ..snap.clone()
    }));
    let mut p = objects_format::pack::PACK_MAGIC.to_vec();
    for e in [&blob_e, &tree_e, &evil_e] {
        p.extend_from_slice(e);
    }
    assert_pack_refused(&b, p, evil, "says 5 bytes");

    // 5. A symlink target with a NUL.
    let (bad, bad_e) = entry(&Object::Blob(b"a\0b".to_vec()));
    let (tree, tree_e) = entry(&tree_of(objects_format::EntryKind::Symlink, 3, bad));
    let (evil, evil_e) = entry(&Object::Snapshot(objects_format::Snapshot {
        root: tree,
        parents: vec![],
        ..snap.clone()
    }));
    let mut p = objects_format::pack::PACK_MAGIC.to_vec();
    for e in [&bad_e, &tree_e, &evil_e] {
        p.extend_from_slice(e);
    }
    assert_pack_refused(&b, p, evil, "symlink target");

    // 6. The root tree left out.
    let (_, snap_e) = entry(&Object::Snapshot(objects_format::Snapshot {
        parents: vec![],
        ..snap.clone()
    }));
    let mut p = objects_format::pack::PACK_MAGIC.to_vec();
    p.extend_from_slice(&snap_e);
    let lone = objects_format::encode_with_id(&Object::Snapshot(objects_format::Snapshot {
        parents: vec![],
        ..snap.clone()
    }))
    .unwrap()
    .0;
    assert_pack_refused(&b, p, lone, "is missing");

    // The honest pack still goes in.
    let mut good = whole(honest);
    assert_eq!(
        b.fetch(&mut PlainRemote::new(&mut good), &[head])
            .unwrap()
            .objects as usize,
        a.count()
    );
}

/// A backend that reads ahead as S3 does (over memory), counting the reads, and that can hand
/// out a wrong frame when read ahead.
struct Ahead<'m> {
    mem: &'m mut MemoryBackend,
    gets: usize,
    batches: Vec<Vec<(ObjectId, u64)>>,
    /// Read ahead, this id gets these bytes instead of its own.
    swap: Option<(ObjectId, Vec<u8>)>,
}

impl Backend for Ahead<'_> {
    fn name(&self) -> &str {
        "ahead"
    }
    fn list_refs(&mut self) -> shelldone::Result<BTreeMap<String, ObjectId>> {
        self.mem.list_refs()
    }
    fn has(&mut self, ids: &[ObjectId]) -> shelldone::Result<Vec<bool>> {
        self.mem.has(ids)
    }
    fn get(&mut self, ids: &[ObjectId]) -> shelldone::Result<Vec<Option<Vec<u8>>>> {
        self.gets += 1;
        self.mem.get(ids)
    }
    fn get_ahead(&mut self, wanted: &[(ObjectId, u64)]) -> Vec<Option<Vec<u8>>> {
        self.batches.push(wanted.to_vec());
        wanted
            .iter()
            .map(|(id, bound)| {
                let raw = match &self.swap {
                    Some((s, bytes)) if s == id => bytes.clone(),
                    _ => self.mem.objects().get(id)?.clone(),
                };
                (raw.len() as u64 <= *bound).then_some(raw)
            })
            .collect()
    }
    fn put(
        &mut self,
        objects: &mut dyn Iterator<Item = shelldone::Result<shelldone::remote::Outgoing>>,
    ) -> shelldone::Result<()> {
        self.mem.put(objects)
    }
    fn update_refs(&mut self, updates: &[RefUpdate]) -> shelldone::Result<()> {
        self.mem.update_refs(updates)
    }
}

#[test]
fn a_fetch_reads_ahead_in_bounded_batches_and_still_verifies_each_object() {
    let a = Dev::new(3);
    let mut mem = MemoryBackend::new("mem");
    let up = a.updates(&BTreeMap::new());
    PlainRemote::new(&mut mem)
        .push(a.state.objects(), &up, &quiet)
        .unwrap();
    let wants: Vec<ObjectId> = mem.list_refs().unwrap().values().copied().collect();
    let total = mem.objects().len();

    // The same objects, far fewer single reads; every batch within its bounds.
    let b = Dev::empty();
    let mut ahead = Ahead {
        mem: &mut mem,
        gets: 0,
        batches: Vec::new(),
        swap: None,
    };
    let got = b.fetch(&mut PlainRemote::new(&mut ahead), &wants).unwrap();
    assert_eq!(got.objects as usize, total);
    assert_eq!(b.count(), a.count());
    assert!(!ahead.batches.is_empty(), "the fetch read ahead");
    assert!(
        ahead.gets * 2 < total,
        "{} single reads for {total} objects",
        ahead.gets
    );
    for batch in &ahead.batches {
        assert!((2..=64).contains(&batch.len()), "{}", batch.len());
        assert!(batch.iter().map(|w| w.1).sum::<u64>() <= 16 << 20);
    }

    // A wrong frame handed out ahead (another object's bytes) is refused as if read directly,
    // and nothing is staged.
    let victim = *ahead.batches[0].first().map(|(id, _)| id).unwrap();
    let other = ahead
        .mem
        .objects()
        .iter()
        .find(|(id, _)| **id != victim)
        .map(|(_, v)| v.clone())
        .unwrap();
    ahead.swap = Some((victim, other));
    ahead.batches.clear();
    let c = Dev::empty();
    let e = c
        .fetch(&mut PlainRemote::new(&mut ahead), &wants)
        .unwrap_err();
    assert!(
        matches!(e, shelldone::Error::CorruptObject { id, .. } if id == victim),
        "{e}"
    );
    assert_eq!(c.count(), 0, "nothing staged");
}
