//! Pinned test vectors (SPEC.md §9): canonical bytes and ids of a fixed set of objects, the first
//! gear-table values, the chunk lengths of a fixed pseudo-random input, and byte strings every
//! reader must reject.
//!
//! `tests/vectors.json` is the reference. This test rebuilds every vector from the structures
//! defined below and fails if a single byte or id differs, so any change to the encoding, the id
//! derivation or the chunker fails loudly. To regenerate the file after an intentional format
//! change (which also needs a version bump, see SPEC.md §8):
//!
//! ```text
//! SHELLDONE_REGEN_VECTORS=1 cargo test -p objects-format --test vectors
//! ```
#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure: a panic is the test failing, with its message"
)]

use std::path::PathBuf;

use objects_format::chunk::{self, MAX_CHUNK, MIN_CHUNK};
use objects_format::encoding::HEADER_LEN;
use objects_format::{
    ChangeSummary, ChunkList, ChunkRef, DecodeError, EntryKind, FLAG_EXECUTABLE, Kind, Object,
    ObjectId, Snapshot, Tree, TreeEntry, decode, encode, encode_with_id, verify,
};
use serde_json::{Value, json};

#[path = "../../tests/common/ci.rs"]
mod ci;

// ---------------------------------------------------------------------------------------------
// Helpers

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The deterministic input of the chunking vector: xorshift64 (13, 7, 17) from `seed`, one
/// output byte per step = bits 24..32 of the state after the step.
fn xorshift_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

const CHUNK_INPUT_LEN: usize = 300_000;
const CHUNK_INPUT_SEED: u64 = 0x5348_454c_4c44_4f4e; // "SHELLDON"

fn id_of(o: &Object) -> ObjectId {
    encode_with_id(o).expect("vector object encodes").0
}

fn blob_id(data: &[u8]) -> ObjectId {
    id_of(&Object::Blob(data.to_vec()))
}

fn entry(name: &[u8], kind: EntryKind, flags: u8, size: u64, id: ObjectId) -> TreeEntry {
    TreeEntry {
        name: name.to_vec(),
        kind,
        flags,
        size,
        id,
    }
}

fn entry_kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::ChunkedFile => "chunked-file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
    }
}

/// A language-neutral description of an object, stored next to its bytes so another
/// implementation can rebuild the object without reading this file.
fn describe(o: &Object) -> Value {
    match o {
        Object::Blob(b) => json!({ "data_hex": hex(b) }),
        Object::ChunkList(c) => json!({
            "total_size": c.total_size,
            "chunks": c.chunks.iter().map(|ch| json!({ "id": ch.id.to_hex(), "len": ch.len })).collect::<Vec<_>>(),
        }),
        Object::Tree(t) => json!({
            "entries": t.entries.iter().map(|e| json!({
                "name_hex": hex(&e.name),
                "name_lossy": String::from_utf8_lossy(&e.name),
                "kind": entry_kind_name(e.kind),
                "flags": e.flags,
                "size": e.size,
                "id": e.id.to_hex(),
            })).collect::<Vec<_>>(),
        }),
        Object::Snapshot(s) => json!({
            "root": s.root.to_hex(),
            "parents": s.parents.iter().map(ObjectId::to_hex).collect::<Vec<_>>(),
            "time_ns": s.time_ns.to_string(),
            "device": s.device,
            "message": s.message,
            "session": s.session,
            "summary": { "added": s.summary.added, "modified": s.summary.modified, "deleted": s.summary.deleted },
            "extra": s.extra.iter().map(|(k, v)| json!({ "key": k, "value_hex": hex(v) })).collect::<Vec<_>>(),
        }),
    }
}

fn variant(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::BadMagic => "BadMagic",
        DecodeError::UnsupportedVersion(_) => "UnsupportedVersion",
        DecodeError::UnknownKind(_) => "UnknownKind",
        DecodeError::WrongKind { .. } => "WrongKind",
        DecodeError::Truncated { .. } => "Truncated",
        DecodeError::TrailingBytes(_) => "TrailingBytes",
        DecodeError::TooLarge(_) => "TooLarge",
        DecodeError::Invalid { .. } => "Invalid",
    }
}

// ---------------------------------------------------------------------------------------------
// The vectors

struct Positive {
    name: &'static str,
    note: &'static str,
    object: Object,
}

fn chunk_input() -> Vec<u8> {
    xorshift_bytes(CHUNK_INPUT_LEN, CHUNK_INPUT_SEED)
}

fn positives() -> Vec<Positive> {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let big = chunk_input();
    let lens = chunk::chunk_lengths(&big);
    let mut pos = 0;
    let chunks: Vec<ChunkRef> = lens
        .iter()
        .map(|&n| {
            let r = ChunkRef {
                id: blob_id(&big[pos..pos + n]),
                len: u32::try_from(n).unwrap(),
            };
            pos += n;
            r
        })
        .collect();
    let chunk_list = ChunkList {
        total_size: big.len() as u64,
        chunks,
    };
    let chunk_list_id = id_of(&Object::ChunkList(chunk_list.clone()));
    let hello = blob_id(b"hello\n");
    let empty_tree = Tree::default();
    let empty_tree_id = id_of(&Object::Tree(empty_tree.clone()));

    let single = Tree {
        entries: vec![entry(b"hello.txt", EntryKind::File, 0, 6, hello)],
    };
    let full = Tree {
        entries: vec![
            entry(b"README", EntryKind::File, 0, 6, hello),
            entry(
                b"big.dat",
                EntryKind::ChunkedFile,
                0,
                big.len() as u64,
                chunk_list_id,
            ),
            entry(b"caf\xe9.txt", EntryKind::File, 0, 0, blob_id(b"")),
            entry(b"link", EntryKind::Symlink, 0, 6, blob_id(b"README")),
            entry(
                b"run.sh",
                EntryKind::File,
                FLAG_EXECUTABLE,
                256,
                blob_id(&all_bytes),
            ),
            entry(b"sub", EntryKind::Dir, 0, 0, empty_tree_id),
        ],
    };
    let full_id = id_of(&Object::Tree(full.clone()));

    let minimal = Snapshot {
        root: empty_tree_id,
        parents: vec![],
        time_ns: 0,
        device: "dev".into(),
        message: String::new(),
        session: None,
        summary: ChangeSummary::default(),
        extra: vec![],
    };
    let minimal_id = id_of(&Object::Snapshot(minimal.clone()));
    let rich = Snapshot {
        root: full_id,
        parents: vec![minimal_id, ObjectId([0xab; 32])],
        time_ns: 1_700_000_000_123_456_789,
        device: "laptop-01".into(),
        message: "before upgrade ✓".into(),
        session: Some("sess-42".into()),
        summary: ChangeSummary {
            added: 3,
            modified: 1,
            deleted: 2,
        },
        extra: vec![
            ("origin".into(), b"cli".to_vec()),
            ("tags".into(), b"a,b".to_vec()),
        ],
    };
    let pre_epoch = Snapshot {
        time_ns: -1,
        device: "d".into(),
        ..minimal.clone()
    };

    vec![
        Positive {
            name: "blob-empty",
            note: "empty blob: the header alone",
            object: Object::Blob(vec![]),
        },
        Positive {
            name: "blob-hello",
            note: "blob holding the 6 bytes \"hello\\n\"",
            object: Object::Blob(b"hello\n".to_vec()),
        },
        Positive {
            name: "blob-all-bytes",
            note: "blob holding the bytes 0x00..=0xff in order",
            object: Object::Blob(all_bytes),
        },
        Positive {
            name: "blob-symlink-target",
            note: "blob holding the symlink target \"README\"",
            object: Object::Blob(b"README".to_vec()),
        },
        Positive {
            name: "chunk-list",
            note: "chunk list of the chunking-vector input: each chunk is the blob of that slice",
            object: Object::ChunkList(chunk_list),
        },
        Positive {
            name: "tree-empty",
            note: "tree with no entries",
            object: Object::Tree(empty_tree),
        },
        Positive {
            name: "tree-single",
            note: "one file entry hello.txt -> blob-hello",
            object: Object::Tree(single),
        },
        Positive {
            name: "tree-full",
            note: "file, chunked file, non-UTF-8 name (latin-1 'café.txt'), symlink, executable file, directory",
            object: Object::Tree(full),
        },
        Positive {
            name: "snapshot-minimal",
            note: "root = tree-empty, no parents, time 0, device \"dev\", no session, no extra",
            object: Object::Snapshot(minimal),
        },
        Positive {
            name: "snapshot-rich",
            note: "root = tree-full, two parents, session, summary, two extra keys, non-ASCII message",
            object: Object::Snapshot(rich),
        },
        Positive {
            name: "snapshot-pre-epoch",
            note: "negative time_ns (-1) is two's complement",
            object: Object::Snapshot(pre_epoch),
        },
    ]
}

struct Negative {
    name: &'static str,
    bytes: Vec<u8>,
}

fn tree_entry_bytes(name: &[u8], kind: u8, flags: u8, size: u64) -> Vec<u8> {
    let mut v = vec![u8::try_from(name.len()).unwrap()];
    v.extend_from_slice(name);
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&size.to_le_bytes());
    v.extend_from_slice(&[0x11; 32]);
    v
}

fn tree_bytes(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut v = b"SDO\x01\x03".to_vec();
    v.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_le_bytes());
    for e in entries {
        v.extend_from_slice(e);
    }
    v
}

fn chunk_list_bytes(total: u64, lens: &[u32]) -> Vec<u8> {
    let mut v = b"SDO\x01\x02".to_vec();
    v.extend_from_slice(&total.to_le_bytes());
    v.extend_from_slice(&u32::try_from(lens.len()).unwrap().to_le_bytes());
    for &l in lens {
        v.extend_from_slice(&[0x22; 32]);
        v.extend_from_slice(&l.to_le_bytes());
    }
    v
}

fn snapshot_with(tail: &[u8], session: &[u8]) -> Vec<u8> {
    // root, 0 parents, time 0, device "d", empty message, then `session`, summary 0, then `tail`.
    let mut v = b"SDO\x01\x04".to_vec();
    v.extend_from_slice(&[0x33; 32]);
    v.push(0);
    v.extend_from_slice(&0i64.to_le_bytes());
    v.extend_from_slice(b"\x01d");
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(session);
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(tail);
    v
}

fn negatives() -> Vec<Negative> {
    let good_tree = encode(&Object::Tree(Tree {
        entries: vec![entry(b"a", EntryKind::File, 0, 1, ObjectId([0x11; 32]))],
    }))
    .unwrap();
    let mut truncated = good_tree.clone();
    truncated.pop();
    let mut trailing = good_tree.clone();
    trailing.push(0);
    let f = |n: &[u8]| tree_entry_bytes(n, 1, 0, 0);
    let n = |name: &'static str, bytes: Vec<u8>| Negative { name, bytes };
    vec![
        n("empty-input", vec![]),
        n("short-header", b"SDO\x01".to_vec()),
        n("bad-magic", b"SDX\x01\x01hello".to_vec()),
        n("version-0", b"SDO\x00\x01".to_vec()),
        n("version-2", b"SDO\x02\x01hello".to_vec()),
        n("kind-0", b"SDO\x01\x00".to_vec()),
        n("kind-5", b"SDO\x01\x05".to_vec()),
        n("truncated-tree", truncated),
        n("tree-trailing-byte", trailing),
        n("chunk-list-trailing-byte", {
            let mut v = chunk_list_bytes(5, &[5]);
            v.push(0);
            v
        }),
        n(
            "tree-count-too-large",
            tree_bytes(&[])
                .into_iter()
                .take(HEADER_LEN)
                .chain([0xff; 4])
                .collect(),
        ),
        n("tree-unsorted", tree_bytes(&[f(b"b"), f(b"a")])),
        n("tree-duplicate-name", tree_bytes(&[f(b"a"), f(b"a")])),
        n("tree-name-dot", tree_bytes(&[f(b".")])),
        n("tree-name-dotdot", tree_bytes(&[f(b"..")])),
        n("tree-name-slash", tree_bytes(&[f(b"a/b")])),
        n("tree-name-nul", tree_bytes(&[f(b"a\0")])),
        n("tree-name-empty", tree_bytes(&[f(b"")])),
        n(
            "tree-entry-kind-5",
            tree_bytes(&[tree_entry_bytes(b"a", 5, 0, 0)]),
        ),
        n(
            "tree-file-unknown-flag",
            tree_bytes(&[tree_entry_bytes(b"a", 1, 0x02, 0)]),
        ),
        n(
            "tree-dir-executable",
            tree_bytes(&[tree_entry_bytes(b"a", 3, 0x01, 0)]),
        ),
        n(
            "tree-symlink-executable",
            tree_bytes(&[tree_entry_bytes(b"a", 4, 0x01, 0)]),
        ),
        n(
            "tree-dir-nonzero-size",
            tree_bytes(&[tree_entry_bytes(b"a", 3, 0, 1)]),
        ),
        n("chunk-list-sum-mismatch", chunk_list_bytes(10, &[4, 5])),
        n("chunk-list-empty", chunk_list_bytes(0, &[])),
        n("chunk-list-zero-length-chunk", chunk_list_bytes(4, &[4, 0])),
        n("snapshot-session-flag-2", snapshot_with(&[0; 4], &[2])),
        n(
            "snapshot-session-dotdot",
            snapshot_with(&[0; 4], b"\x01\x02.."),
        ),
        n("snapshot-device-not-utf8", {
            let mut v = snapshot_with(&[0; 4], &[0]);
            v[HEADER_LEN + 32 + 1 + 8 + 1] = 0xff; // the device byte "d"
            v
        }),
        n(
            "snapshot-extra-unsorted",
            snapshot_with(
                b"\x02\x00\x00\x00\x01b\x00\x00\x00\x00\x01a\x00\x00\x00\x00",
                &[0],
            ),
        ),
        n(
            "snapshot-extra-empty-key",
            snapshot_with(b"\x01\x00\x00\x00\x00\x00\x00\x00\x00", &[0]),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Building and checking the file

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("vectors.json")
}

fn build() -> Value {
    let objects: Vec<Value> = positives()
        .iter()
        .map(|p| {
            let (id, bytes) = encode_with_id(&p.object).expect("vector encodes");
            json!({
                "name": p.name,
                "kind": p.object.kind().name(),
                "note": p.note,
                "object": describe(&p.object),
                "canonical_hex": hex(&bytes),
                "id": id.to_hex(),
            })
        })
        .collect();
    let negatives: Vec<Value> = negatives()
        .iter()
        .map(|n| {
            let err = decode(&n.bytes).expect_err(n.name);
            json!({ "name": n.name, "hex": hex(&n.bytes), "error_variant": variant(&err), "error": err.to_string() })
        })
        .collect();
    let g = chunk::gear();
    let input = chunk_input();
    json!({
        "format_version": objects_format::FORMAT_VERSION,
        "about": "Shelldone object format test vectors (SPEC.md §9). Hex is lower-case; ids are BLAKE3 derive_key(kind context, canonical bytes). Regenerate only with a format version bump: SHELLDONE_REGEN_VECTORS=1 cargo test -p objects-format --test vectors",
        "objects": objects,
        "gear_table": {
            "context": chunk::GEAR_CONTEXT,
            "first_4_u64_hex": g[..4].iter().map(|x| format!("{x:016x}")).collect::<Vec<_>>(),
        },
        "chunking": {
            "input": "xorshift64 with shifts (13, 7, 17) starting from seed; per byte: x ^= x << 13; x ^= x >> 7; x ^= x << 17; emit (x >> 24) & 0xff",
            "seed_hex": format!("{CHUNK_INPUT_SEED:016x}"),
            "len": CHUNK_INPUT_LEN,
            "input_first_16_hex": hex(&input[..16]),
            "input_blob_id": blob_id(&input).to_hex(),
            "chunk_lengths": chunk::chunk_lengths(&input),
        },
        "negative": negatives,
    })
}

#[test]
fn vectors_match_file() {
    let built = build();
    let path = vectors_path();
    if std::env::var_os("SHELLDONE_REGEN_VECTORS").is_some_and(|v| v == "1") {
        // Regenerating compares nothing: never in CI.
        ci::cannot_run(
            "vectors_match_file",
            "SHELLDONE_REGEN_VECTORS=1 rewrites the vectors instead of checking them",
        );
        let mut s = serde_json::to_string_pretty(&built).unwrap();
        s.push('\n');
        std::fs::write(&path, s).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let text = std::fs::read_to_string(&path)
        .expect("tests/vectors.json exists (see SHELLDONE_REGEN_VECTORS)");
    let file: Value = serde_json::from_str(&text).unwrap();

    // Compare piece by piece for readable failures, then as a whole.
    let fo = file["objects"].as_array().unwrap();
    let bo = built["objects"].as_array().unwrap();
    assert_eq!(fo.len(), bo.len(), "number of object vectors");
    for (f, b) in fo.iter().zip(bo) {
        let name = &b["name"];
        assert_eq!(f["name"], *name);
        assert_eq!(
            f["canonical_hex"], b["canonical_hex"],
            "canonical bytes of {name} changed: the encoding changed"
        );
        assert_eq!(
            f["id"], b["id"],
            "id of {name} changed: the id derivation changed"
        );
        assert_eq!(f["object"], b["object"], "description of {name}");
    }
    assert_eq!(
        file["gear_table"], built["gear_table"],
        "gear table changed"
    );
    assert_eq!(
        file["chunking"], built["chunking"],
        "chunk boundaries changed"
    );
    assert_eq!(
        file["negative"], built["negative"],
        "negative vectors changed (bytes, error class or message text)"
    );
    assert_eq!(file, built);
}

#[test]
fn file_objects_decode_to_the_described_objects() {
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    let objs = file["objects"].as_array().unwrap();
    let expected = positives();
    assert_eq!(objs.len(), expected.len());
    for (v, p) in objs.iter().zip(&expected) {
        let bytes = unhex(v["canonical_hex"].as_str().unwrap());
        let id = ObjectId::from_hex(v["id"].as_str().unwrap()).unwrap();
        let o = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        assert_eq!(o, p.object, "{}", p.name);
        assert_eq!(o.kind().name(), v["kind"].as_str().unwrap());
        assert_eq!(ObjectId::compute(o.kind(), &bytes), id, "{}", p.name);
        assert_eq!(verify(&id, &bytes).unwrap(), p.object, "{}", p.name);
        assert_eq!(encode(&o).unwrap(), bytes, "{}: re-encoding", p.name);
    }
}

#[test]
fn file_negatives_are_rejected_with_the_stated_error() {
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    let negs = file["negative"].as_array().unwrap();
    assert!(negs.len() >= 9);
    for v in negs {
        let name = v["name"].as_str().unwrap();
        let bytes = unhex(v["hex"].as_str().unwrap());
        let err = decode(&bytes).expect_err(name);
        assert_eq!(
            variant(&err),
            v["error_variant"].as_str().unwrap(),
            "{name}: {err}"
        );
        assert_eq!(err.to_string(), v["error"].as_str().unwrap(), "{name}");
        // verify() under the id the bytes hash to must reject them too.
        if let Some(kind) = bytes.get(4).copied().and_then(Kind::from_code) {
            assert!(
                verify(&ObjectId::compute(kind, &bytes), &bytes).is_err(),
                "{name}"
            );
        }
    }
}

#[test]
fn chunking_vector_properties() {
    let input = chunk_input();
    let lens = chunk::chunk_lengths(&input);
    assert_eq!(lens.iter().sum::<usize>(), input.len());
    assert!(
        lens.len() > 2,
        "300 KB of noise should cut more than twice: {lens:?}"
    );
    for &n in &lens[..lens.len() - 1] {
        assert!((MIN_CHUNK..=MAX_CHUNK).contains(&n));
    }
    // The spec's boundary rule, implemented naively (hash from each chunk start).
    let g = chunk::gear();
    let mut naive = Vec::new();
    let mut start = 0;
    while start < input.len() {
        let rest = &input[start..];
        let end = rest.len().min(MAX_CHUNK);
        let mut cut = end;
        let mut h = 0u64;
        for (i, &b) in rest[..end].iter().enumerate() {
            h = (h << 1).wrapping_add(g[usize::from(b)]);
            if i + 1 >= MIN_CHUNK && h >> (64 - chunk::MASK_BITS) == 0 {
                cut = i + 1;
                break;
            }
        }
        naive.push(cut);
        start += cut;
    }
    assert_eq!(lens, naive);
}

#[test]
fn gear_table_is_blake3_xof() {
    let mut bytes = [0u8; 2048];
    blake3_xof(&mut bytes);
    let g = chunk::gear();
    for i in 0..256 {
        assert_eq!(
            g[i],
            u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap())
        );
    }
}

fn blake3_xof(out: &mut [u8]) {
    // Via the public API only: derive_key gives the first 32 bytes; the XOF must agree.
    let first = blake3::derive_key(chunk::GEAR_CONTEXT, b"");
    blake3::Hasher::new_derive_key(chunk::GEAR_CONTEXT)
        .finalize_xof()
        .fill(out);
    assert_eq!(&out[..32], &first);
}

#[test]
fn id_contexts_are_the_spec_strings() {
    let ctx = [
        (Kind::Blob, "shelldone objects v1 blob"),
        (Kind::ChunkList, "shelldone objects v1 chunk-list"),
        (Kind::Tree, "shelldone objects v1 tree"),
        (Kind::Snapshot, "shelldone objects v1 snapshot"),
    ];
    for (k, c) in ctx {
        assert_eq!(k.id_context(), c);
        let bytes = [b"SDO\x01".as_slice(), &[k.code()]].concat();
        assert_eq!(
            ObjectId::compute(k, &bytes).0,
            blake3::derive_key(c, &bytes)
        );
    }
}
