//! Property tests of the canonical encoding (SPEC.md §3–§4):
//! decode∘encode = id, encode∘decode = id on everything that decodes, stable ids, tamper
//! detection, and a decoder that never panics.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure: a panic is the test failing, with its message"
)]

use objects_format::chunk::{self, MAX_CHUNK, MIN_CHUNK};
use objects_format::{
    ChangeSummary, ChunkList, ChunkRef, EntryKind, FLAG_EXECUTABLE, Kind, Object, ObjectId,
    Snapshot, Tree, TreeEntry, VerifyError, decode, decode_as, encode, encode_with_id,
    validate_name, verify,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Strategies for valid objects

fn arb_id() -> impl Strategy<Value = ObjectId> {
    any::<[u8; 32]>().prop_map(ObjectId)
}

/// Valid entry names: 1..=255 bytes, no '/' or NUL, not "." or "..". Mostly short, sometimes at
/// the 255-byte limit, often not UTF-8.
fn arb_name() -> impl Strategy<Value = Vec<u8>> {
    let byte = any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0);
    prop_oneof![
        4 => vec(byte.clone(), 1..12),
        1 => vec(byte, 250..=255),
        1 => Just(b"...".to_vec()),
        1 => Just(b".a".to_vec()),
    ]
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn arb_entry_body() -> impl Strategy<Value = (EntryKind, u8, u64, ObjectId)> {
    (0u8..4, any::<bool>(), any::<u64>(), arb_id()).prop_map(|(k, exec, size, id)| {
        let kind = EntryKind::from_code(k + 1).unwrap();
        let flags = if kind.is_file() && exec {
            FLAG_EXECUTABLE
        } else {
            0
        };
        let size = if kind == EntryKind::Dir { 0 } else { size };
        (kind, flags, size, id)
    })
}

fn arb_tree() -> impl Strategy<Value = Tree> {
    btree_map(arb_name(), arb_entry_body(), 0..16).prop_map(|m| Tree {
        entries: m
            .into_iter()
            .map(|(name, (kind, flags, size, id))| TreeEntry {
                name,
                kind,
                flags,
                size,
                id,
            })
            .collect(),
    })
}

fn arb_chunk_list() -> impl Strategy<Value = ChunkList> {
    vec(
        (arb_id(), prop_oneof![1u32..=200_000, 1u32..=u32::MAX]),
        1..20,
    )
    .prop_map(|cs| {
        let chunks: Vec<ChunkRef> = cs
            .into_iter()
            .map(|(id, len)| ChunkRef { id, len })
            .collect();
        ChunkList {
            total_size: chunks.iter().map(|c| u64::from(c.len)).sum(),
            chunks,
        }
    })
}

/// UTF-8 strings of at most `max_bytes` bytes.
fn arb_utf8(max_chars: usize, max_bytes: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{0,{max_chars}}}"))
        .unwrap()
        .prop_filter("byte limit", move |s| s.len() <= max_bytes)
}

fn arb_session() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(
        arb_utf8(40, 255).prop_filter("valid session id", |s| validate_name(s.as_bytes()).is_ok()),
    )
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    (
        arb_id(),
        prop_oneof![4 => vec(arb_id(), 0..4), 1 => vec(arb_id(), 250..=255)],
        any::<i64>(),
        arb_utf8(60, 255),
        arb_utf8(200, usize::MAX),
        arb_session(),
        any::<(u32, u32, u32)>(),
        btree_map(
            arb_utf8(30, 255).prop_filter("non-empty", |k| !k.is_empty()),
            vec(any::<u8>(), 0..40),
            0..6,
        ),
    )
        .prop_map(
            |(root, parents, time_ns, device, message, session, (a, m, d), extra)| Snapshot {
                root,
                parents,
                time_ns,
                device,
                message,
                session,
                summary: ChangeSummary {
                    added: a,
                    modified: m,
                    deleted: d,
                },
                extra: extra.into_iter().collect(),
            },
        )
}

fn arb_object() -> impl Strategy<Value = Object> {
    prop_oneof![
        vec(any::<u8>(), 0..600).prop_map(Object::Blob),
        arb_chunk_list().prop_map(Object::ChunkList),
        arb_tree().prop_map(Object::Tree),
        arb_snapshot().prop_map(Object::Snapshot),
    ]
}

/// A valid canonical encoding, mutated: byte flips, insertions, deletions, truncation, splices.
fn arb_mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        arb_object(),
        vec((0u8..5, any::<usize>(), any::<u8>()), 1..6),
    )
        .prop_map(|(o, muts)| {
            let mut b = encode(&o).unwrap();
            for (op, at, x) in muts {
                let i = if b.is_empty() { 0 } else { at % b.len() };
                match op {
                    0 if !b.is_empty() => b[i] ^= x.max(1),
                    1 => b.insert(i.min(b.len()), x),
                    2 if !b.is_empty() => {
                        b.remove(i);
                    }
                    3 => b.truncate(i),
                    // Overwrite 4 bytes with a small or huge little-endian count.
                    _ if b.len() >= 4 => {
                        let j = i.min(b.len() - 4);
                        let v: u32 = if x & 1 == 0 {
                            u32::from(x)
                        } else {
                            u32::MAX - u32::from(x)
                        };
                        b[j..j + 4].copy_from_slice(&v.to_le_bytes());
                    }
                    _ => {}
                }
            }
            b
        })
}

/// Checks everything that must hold for bytes of unknown origin, and returns whether they decode.
fn check_arbitrary(b: &[u8]) -> bool {
    match decode(b) {
        Ok(o) => {
            // Canonical: the one encoding of the decoded object is the input itself.
            assert_eq!(encode(&o).expect("a decoded object re-encodes"), b);
            let id = ObjectId::compute(o.kind(), b);
            assert_eq!(verify(&id, b), Ok(o.clone()));
            assert_eq!(decode_as(b, o.kind()), Ok(o));
            true
        }
        Err(e) => {
            let _ = e.to_string();
            for k in [Kind::Blob, Kind::ChunkList, Kind::Tree, Kind::Snapshot] {
                assert!(verify(&ObjectId::compute(k, b), b).is_err());
            }
            false
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_encode_is_identity(o in arb_object()) {
        let b = encode(&o).unwrap();
        prop_assert_eq!(decode(&b).unwrap(), o.clone());
        prop_assert_eq!(decode_as(&b, o.kind()).unwrap(), o);
    }

    #[test]
    fn encode_decode_is_identity(o in arb_object()) {
        let b = encode(&o).unwrap();
        let again = encode(&decode(&b).unwrap()).unwrap();
        prop_assert_eq!(again, b);
    }

    #[test]
    fn id_is_stable_and_kind_separated(o in arb_object()) {
        let (id1, b1) = encode_with_id(&o).unwrap();
        let (id2, b2) = encode_with_id(&o.clone()).unwrap();
        prop_assert_eq!(id1, id2);
        prop_assert_eq!(&b1, &b2);
        prop_assert_eq!(id1, ObjectId::compute(o.kind(), &b1));
        prop_assert_eq!(ObjectId::from_hex(&id1.to_hex()).unwrap(), id1);
        prop_assert_eq!(verify(&id1, &b1).unwrap(), o.clone());
        // The same bytes hashed as another kind give another id.
        for k in [Kind::Blob, Kind::ChunkList, Kind::Tree, Kind::Snapshot] {
            if k != o.kind() {
                prop_assert_ne!(ObjectId::compute(k, &b1), id1);
            }
        }
    }

    #[test]
    fn single_byte_flip_is_detected(o in arb_object(), at in any::<usize>(), x in 1u8..=255) {
        let (id, orig) = encode_with_id(&o).unwrap();
        let mut b = orig.clone();
        let i = at % b.len();
        b[i] ^= x;
        match decode(&b) {
            Err(_) => prop_assert!(verify(&id, &b).is_err()),
            Ok(o2) => {
                let id2 = ObjectId::compute(o2.kind(), &b);
                prop_assert_ne!(id2, id);
                prop_assert_ne!(o2, o);
                let rejected = matches!(verify(&id, &b), Err(VerifyError::HashMismatch { .. }));
                prop_assert!(rejected);
            }
        }
    }

    #[test]
    fn decoder_never_panics_on_random_bytes(b in vec(any::<u8>(), 0..400)) {
        check_arbitrary(&b);
    }

    #[test]
    fn decoder_never_panics_on_random_bodies(kind in 0u8..=5, body in vec(any::<u8>(), 0..400)) {
        // Valid header, random body: reaches every per-kind decoder.
        let mut b = b"SDO\x01".to_vec();
        b.push(kind);
        b.extend_from_slice(&body);
        check_arbitrary(&b);
    }

    #[test]
    fn decoder_never_panics_on_mutated_encodings(b in arb_mutated()) {
        check_arbitrary(&b);
    }

    /// The encoder accepts exactly what the decoder accepts: arbitrary (often invalid) trees
    /// either fail to encode or round-trip.
    #[test]
    fn encoder_rejects_what_decoder_rejects(
        raw in vec((vec(prop_oneof![Just(b'.'), Just(b'/'), Just(0u8), Just(b'a'), any::<u8>()], 0..4),
                    1u8..=4, any::<u8>(), 0u64..3, arb_id()), 0..5)
    ) {
        let t = Tree {
            entries: raw.into_iter().map(|(name, k, flags, size, id)| TreeEntry {
                name, kind: EntryKind::from_code(k).unwrap(), flags, size, id,
            }).collect(),
        };
        if let Ok(b) = encode(&Object::Tree(t.clone())) {
            prop_assert_eq!(decode(&b).unwrap(), Object::Tree(t));
        }
    }

    #[test]
    fn chunk_lengths_cover_input_within_bounds(seed in any::<u64>(), len in 0usize..400_000, period in 0usize..4) {
        // Random data, or low-entropy data (a short repeating pattern) that may never cut
        // before MAX_CHUNK.
        let mut x = seed | 1;
        let data: Vec<u8> = (0..len).map(|i| {
            if period > 0 { return (i % (period * 7)) as u8; }
            x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x >> 24) as u8
        }).collect();
        let lens = chunk::chunk_lengths(&data);
        prop_assert_eq!(lens.iter().sum::<usize>(), data.len());
        prop_assert!(lens.iter().all(|&n| n > 0 && n <= MAX_CHUNK));
        if let Some((_, init)) = lens.split_last() {
            prop_assert!(init.iter().all(|&n| n >= MIN_CHUNK));
        }
    }
}

#[test]
fn empty_input_has_no_chunks() {
    assert!(chunk::chunk_lengths(&[]).is_empty());
    assert_eq!(chunk::chunk_lengths(&[7; 5]), vec![5]);
    assert_eq!(chunk::chunk_lengths(&vec![0; MIN_CHUNK]), vec![MIN_CHUNK]);
}

/// Regression: the encoder once accepted objects over `MAX_OBJECT_SIZE` that every reader
/// rejects as `TooLarge`.
#[test]
fn encoder_refuses_objects_over_the_size_limit() {
    let big = Object::Blob(vec![0; objects_format::MAX_OBJECT_SIZE]);
    assert!(
        encode(&big).is_err(),
        "encode accepted a blob the decoder rejects as TooLarge"
    );
}
