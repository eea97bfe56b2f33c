//! The store layout vectors (objects-format/SPEC.md §11.15,
//! `objects-format/tests/store-layout.json`) against the code that reads and writes the store:
//! ref names (`check_name`), the sessions of a snapshot path (`session_of`) and their refs
//! (`session_ref`), `FORMAT` (`StoreVersion`), the `device` file (a store opened on it), loose
//! refs and `packed-refs` (`Refs::get_raw`, `Refs::list`), the reflog (`Refs::scan_reflog`) and
//! the stat cache (`StatCache`, byte for byte). The vectors were written from the SPEC;
//! `objects-format/tools/decode.py --layout-vectors` reproduces them from the SPEC alone, and this
//! test checks that the Rust code agrees with every one.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure: a panic is the test failing, with its message"
)]

use std::path::{Path, PathBuf};

use objects_format::{EntryKind, ObjectId};
use serde_json::Value;
use shelldone::context::Context;
use shelldone::snapshot::session_of;
use shelldone::store::refs::{Refs, check_name, session_ref};
use shelldone::store::statcache::{RACY_NS, Stat, StatCache};
use shelldone::{Error, Paths, STORE_FORMAT, StoreVersion};
use shelldone_migrations::Access;

fn vectors() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("objects-format/tests/store-layout.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The bytes of a vector: `hex` or `text`.
fn bytes(v: &Value) -> Vec<u8> {
    match v.get("hex") {
        Some(h) => hex::decode(h.as_str().unwrap()).unwrap(),
        None => v["text"].as_str().unwrap().as_bytes().to_vec(),
    }
}

fn hex_field(v: &Value, key: &str) -> Option<Vec<u8>> {
    v[key].as_str().map(|h| hex::decode(h).unwrap())
}

fn id(v: &Value) -> Option<ObjectId> {
    v.as_str().map(|h| ObjectId::from_hex(h).unwrap())
}

fn arr(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap()
}

#[test]
fn ref_names_are_checked_as_the_spec_says() {
    let v = vectors();
    for name in arr(&v["ref_names"]["valid"]) {
        let name = name.as_str().unwrap();
        assert!(check_name(name).is_ok(), "{name:?} is valid");
    }
    for name in arr(&v["ref_names"]["invalid"]) {
        let name = name.as_str().unwrap();
        assert!(check_name(name).is_err(), "{name:?} is invalid");
    }
}

#[test]
fn sessions_and_their_refs_are_named_as_the_spec_says() {
    let v = vectors();
    for c in arr(&v["session_of"]) {
        let path = hex_field(c, "path_hex").unwrap();
        assert_eq!(
            session_of(&path).map(<[u8]>::to_vec),
            hex_field(c, "session_hex"),
            "{}",
            c["note"]
        );
    }
    for c in arr(&v["session_refs"]) {
        let session = hex_field(c, "session_hex").unwrap();
        let name = session_ref(&session);
        assert_eq!(name, c["ref"].as_str().unwrap(), "{}", c["note"]);
        assert_eq!(
            check_name(&name).is_ok(),
            c["ref_valid"].as_bool().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn format_files_parse_and_give_the_access_the_spec_says() {
    let v = &vectors()["format"];
    let (major, minor) = v["writer"].as_str().unwrap().split_once('.').unwrap();
    let writer = StoreVersion::new(major.parse().unwrap(), minor.parse().unwrap());
    assert_eq!(
        writer, STORE_FORMAT,
        "the vectors are those of this version"
    );
    assert_eq!(STORE_FORMAT.format_line().as_bytes(), bytes(&v["current"]));
    for c in arr(&v["cases"]) {
        let b = bytes(c);
        let got = StoreVersion::parse(&b).ok();
        assert_eq!(
            got.map(|g| g.to_string()).as_deref(),
            c["version"].as_str(),
            "{:?}",
            String::from_utf8_lossy(&b)
        );
        let access = got.map(|g| match writer.access(g) {
            Access::ReadWrite => "read-write",
            Access::ReadOnly => "read-only",
            Access::Migrate => "migrate",
            Access::Refuse => "refuse",
        });
        assert_eq!(
            access,
            c["access"].as_str(),
            "{:?}",
            String::from_utf8_lossy(&b)
        );
    }
}

/// A state dir whose `snapshots/` holds `FORMAT` (this version) and `files`.
fn store(files: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("state/snapshots");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(snap.join("FORMAT"), STORE_FORMAT.format_line()).unwrap();
    for (rel, content) in files {
        let p = snap.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    (dir, snap)
}

#[test]
fn device_files_are_read_as_the_spec_says() {
    for c in arr(&vectors()["device"]) {
        let b = bytes(c);
        let (dir, snap) = store(&[("device", &b)]);
        let cx = Context::open_for_repair(Paths {
            config_dir: dir.path().join("config"),
            state_dir: dir.path().join("state"),
        })
        .unwrap();
        let what = String::from_utf8_lossy(&b);
        assert!(cx.damage().is_empty(), "{what:?}: {:?}", cx.damage());
        match c["device"].as_str() {
            Some(want) => assert_eq!(cx.device(), want, "{what:?}"),
            None => {
                // An empty store replaces an invalid id with a new one, written as writers do
                // (SPEC §11.4): `<host>-<8 lower-case hex>\n`.
                let new = cx.device();
                assert_ne!(new.as_bytes(), b.trim_ascii(), "{what:?}");
                let (host, tail) = new.rsplit_once('-').unwrap();
                assert!(
                    !host.is_empty()
                        && host.len() <= 32
                        && host.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-'),
                    "{new}"
                );
                assert!(
                    tail.len() == 8 && tail.bytes().all(|x| matches!(x, b'0'..=b'9' | b'a'..=b'f')),
                    "{new}"
                );
                assert_eq!(
                    std::fs::read(snap.join("device")).unwrap(),
                    format!("{new}\n").as_bytes()
                );
            }
        }
    }
}

/// What a vector expects of a ref: an id, absent (null) or `"damaged"`.
fn outcome(got: Result<Option<ObjectId>, Error>) -> Value {
    match got {
        Ok(Some(id)) => Value::from(id.to_hex()),
        Ok(None) => Value::Null,
        Err(Error::CorruptFile { .. }) => Value::from("damaged"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn loose_ref_files_are_read_as_the_spec_says() {
    for c in arr(&vectors()["loose_refs"]) {
        let b = bytes(c);
        let (_dir, snap) = store(&[("refs/head", &b)]);
        let got = outcome(Refs::new(&snap).get_raw("head"));
        let want = if c["id"].is_null() {
            Value::from("damaged")
        } else {
            c["id"].clone()
        };
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&b));
    }
}

#[test]
fn packed_refs_and_loose_refs_resolve_as_the_spec_says() {
    for c in arr(&vectors()["packed_refs"]) {
        let files: Vec<(String, Vec<u8>)> = c["files"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), bytes(v)))
            .collect();
        let files: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let (_dir, snap) = store(&files);
        let refs = Refs::new(&snap);
        let name = &c["name"];
        for (r, want) in c["resolves"].as_object().unwrap() {
            assert_eq!(&outcome(refs.get_raw(r)), want, "{name}: {r}");
        }
        let list = match refs.list("") {
            Ok(l) => Value::from(
                l.into_iter()
                    .map(|(n, id)| Value::from(vec![n, id.to_hex()]))
                    .collect::<Vec<_>>(),
            ),
            Err(Error::CorruptFile { .. }) => Value::from("damaged"),
            Err(e) => panic!("{name}: unexpected error {e}"),
        };
        assert_eq!(list, c["list"], "{name}");
    }
}

#[test]
fn reflogs_are_read_as_the_spec_says() {
    for c in arr(&vectors()["reflog"]) {
        let (_dir, snap) = store(&[("logs/refs.log", &bytes(c))]);
        let scan = Refs::new(&snap).scan_reflog().unwrap();
        let name = &c["name"];
        let lines: Vec<Value> = scan
            .lines
            .iter()
            .map(|l| {
                serde_json::json!({
                    "no": l.no,
                    "ref": l.name,
                    "old": l.entry.old.map(|i| i.to_hex()),
                    "new": l.entry.new.map(|i| i.to_hex()),
                    "time_ns": l.entry.time_ns,
                    "message": l.entry.message,
                })
            })
            .collect();
        assert_eq!(Value::from(lines), c["lines"], "{name}");
        let damaged: Vec<Value> = scan
            .damaged
            .iter()
            .map(|d| serde_json::json!({"no": d.no, "readable": d.readable}))
            .collect();
        assert_eq!(Value::from(damaged), c["damaged"], "{name}");
    }
}

#[test]
fn stat_caches_are_written_and_read_as_the_spec_says() {
    let v = &vectors()["statcache"];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statcache");
    for c in arr(&v["caches"]) {
        let name = &c["name"];
        let want = hex::decode(c["hex"].as_str().unwrap()).unwrap();
        let mut cache = StatCache::default();
        let mut entries = Vec::new();
        for e in arr(&c["entries"]) {
            let num = |k: &str| e[k].as_u64().unwrap();
            let ns = |k: &str| e[k].as_i64().unwrap();
            let stat = Stat {
                size: num("size"),
                mtime_ns: ns("mtime_ns"),
                ctime_ns: ns("ctime_ns"),
                ino: num("ino"),
                dev: num("dev"),
            };
            let kind = EntryKind::from_code(u8::try_from(num("kind")).unwrap()).unwrap();
            let oid = id(&e["id"]).unwrap();
            let rel = hex_field(e, "path_hex").unwrap();
            cache.insert(rel.clone(), stat, kind, oid, ns("hashed_at_ns"));
            entries.push((
                rel,
                stat,
                kind,
                oid,
                ns("mtime_ns") + RACY_NS < ns("hashed_at_ns"),
            ));
        }
        if entries.is_empty() {
            // Nothing inserted, nothing to write: the reader side only.
            std::fs::write(&path, &want).unwrap();
        } else {
            let _ = std::fs::remove_file(&path);
            cache.save(&path).unwrap();
            assert_eq!(
                hex::encode(std::fs::read(&path).unwrap()),
                hex::encode(&want),
                "{name}: the bytes the writer writes"
            );
        }
        assert_eq!(StatCache::validate(&path), Ok(()), "{name}");
        let read = StatCache::load(&path);
        for (rel, stat, kind, oid, trusted) in entries {
            assert_eq!(
                read.lookup(&rel, &stat),
                trusted.then_some((kind, oid)),
                "{name}: {}",
                String::from_utf8_lossy(&rel)
            );
        }
    }
    for c in arr(&v["ignored"]) {
        std::fs::write(&path, hex::decode(c["hex"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(StatCache::validate(&path), Ok(()), "{}", c["name"]);
    }
    for c in arr(&v["damaged"]) {
        std::fs::write(&path, hex::decode(c["hex"].as_str().unwrap()).unwrap()).unwrap();
        assert!(StatCache::validate(&path).is_err(), "{}", c["name"]);
    }
}
