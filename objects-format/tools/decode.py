#!/usr/bin/env python3
"""Independent decoder for shelldone objects, written from objects-format/SPEC.md alone.

Python 3.11 standard library only; zstd frames are decompressed by the `zstd` command-line tool.

    decode.py --vectors objects-format/tests/vectors.json
    decode.py --layout-vectors objects-format/tests/store-layout.json
    decode.py --store fixtures/store-v1/state --compare-with fixtures/store-v1 [--extract DIR]

--vectors  decodes, re-encodes and re-hashes every vector (SPEC §9), rejects every negative one
           for its stated reason, rebuilds the gear table and the chunking vector (§5).
--layout-vectors  reproduces every store layout vector (§11.15): ref names, sessions and their
           refs, FORMAT, device, loose refs, packed-refs, the reflog, the stat cache.
--store    a state directory (or its `snapshots/`): verifies every stored copy of every object
           (loose §7.1, packs and indexes v1/v2 §7.2), reads the store layout (§11: FORMAT,
           device, refs loose and packed, the reflog, session refs, shallow, remotes.json,
           restore-intent, statcache) and checks it, then walks every ref through snapshots,
           trees, chunk lists and blobs (§6) and prints a summary.
--extract  writes the files of the head snapshot's root tree to DIR.
--compare-with ROOT  checks that those files (and symlinks) equal ROOT's `config/` and `state/`
           (ignoring `state/snapshots/`), extracting to a temporary directory without --extract.

Exits 1 with a message naming the vector, object or file on the first mismatch.
"""

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from functools import lru_cache


class Bad(Exception):
    """A mismatch: the store or the vectors disagree with SPEC.md."""


# ---------------------------------------------------------------------------------------------
# BLAKE3 (hash, derive_key, extended output), after the BLAKE3 paper's reference description.

IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
PERM = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
CHUNK_START, CHUNK_END, PARENT, ROOT, DERIVE_CONTEXT, DERIVE_MATERIAL = 1, 2, 4, 8, 32, 64
M32 = 0xFFFFFFFF


SCHEDULE = [list(range(16))]  # message word order of each of the 7 rounds
for _ in range(6):
    SCHEDULE.append([SCHEDULE[-1][i] for i in PERM])


def _g(a, b, c, d, x, y):
    a = (a + b + x) & M32
    d ^= a
    d = (d >> 16 | d << 16) & M32
    c = (c + d) & M32
    b ^= c
    b = (b >> 12 | b << 20) & M32
    a = (a + b + y) & M32
    d ^= a
    d = (d >> 8 | d << 24) & M32
    c = (c + d) & M32
    b ^= c
    b = (b >> 7 | b << 25) & M32
    return a, b, c, d


def _compress(cv, m, counter, block_len, flags):
    v0, v1, v2, v3, v4, v5, v6, v7 = cv
    v8, v9, v10, v11 = IV[:4]
    v12, v13, v14, v15 = counter & M32, counter >> 32, block_len, flags
    for s in SCHEDULE:
        v0, v4, v8, v12 = _g(v0, v4, v8, v12, m[s[0]], m[s[1]])  # columns
        v1, v5, v9, v13 = _g(v1, v5, v9, v13, m[s[2]], m[s[3]])
        v2, v6, v10, v14 = _g(v2, v6, v10, v14, m[s[4]], m[s[5]])
        v3, v7, v11, v15 = _g(v3, v7, v11, v15, m[s[6]], m[s[7]])
        v0, v5, v10, v15 = _g(v0, v5, v10, v15, m[s[8]], m[s[9]])  # diagonals
        v1, v6, v11, v12 = _g(v1, v6, v11, v12, m[s[10]], m[s[11]])
        v2, v7, v8, v13 = _g(v2, v7, v8, v13, m[s[12]], m[s[13]])
        v3, v4, v9, v14 = _g(v3, v4, v9, v14, m[s[14]], m[s[15]])
    return [v0 ^ v8, v1 ^ v9, v2 ^ v10, v3 ^ v11, v4 ^ v12, v5 ^ v13, v6 ^ v14, v7 ^ v15,
            v8 ^ cv[0], v9 ^ cv[1], v10 ^ cv[2], v11 ^ cv[3],
            v12 ^ cv[4], v13 ^ cv[5], v14 ^ cv[6], v15 ^ cv[7]]


def _words(block):
    return struct.unpack("<16I", block.ljust(64, b"\0"))


def _node(key, data, start, end, flags):
    """The output (inputs of the last compression) of the subtree over data[start:end]."""
    n = end - start
    if n <= 1024:  # one chunk, counter = chunk index
        cv, pos = key, start
        f = flags | CHUNK_START
        while end - pos > 64:
            cv = _compress(cv, _words(data[pos : pos + 64]), start // 1024, 64, f)[:8]
            pos, f = pos + 64, flags
        return (cv, _words(data[pos:end]), start // 1024, end - pos, f | CHUNK_END)
    left = 1024 << (((n - 1) // 1024).bit_length() - 1)  # largest power-of-2 chunks < n
    lcv = _compress(*_node(key, data, start, start + left, flags))[:8]
    rcv = _compress(*_node(key, data, start + left, end, flags))[:8]
    return (key, lcv + rcv, 0, 64, flags | PARENT)


def _root(out, length):
    cv, m, _, block_len, flags = out
    res = b"".join(
        struct.pack("<16I", *_compress(cv, m, c, block_len, flags | ROOT))
        for c in range((length + 63) // 64)
    )
    return res[:length]


def blake3(data, length=32):
    return _root(_node(IV, data, 0, len(data), 0), length)


@lru_cache
def _context_key(context):
    return _words(_root(_node(IV, context.encode(), 0, len(context), DERIVE_CONTEXT), 32))[:8]


def derive_key(context, material, length=32):
    return _root(_node(_context_key(context), material, 0, len(material), DERIVE_MATERIAL), length)


def self_test_blake3():
    # Official vectors (BLAKE3-team/BLAKE3 test_vectors/test_vectors.json): input = bytes
    # i % 251; derive_key context "BLAKE3 2019-12-27 16:29:52 test vectors context".
    ctx = "BLAKE3 2019-12-27 16:29:52 test vectors context"
    cases = [  # (input_len, hash[:32], derive_key[:32])
        (0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
         "2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d"),
        (1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
         "effaa245f065fbf82ac186839a249707c3bddf6d3fdda22d1b95a3c970379bcb"),
        (3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3",
         "72613c9ec9ff7e40f8f5c173784c532ad852e827dba2bf85b2ab4b76f7079081"),
        (7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817",
         "554b0a5efea9ef183f2f9b931b7497995d9eb26f5c5c6dad2b97d62fc5ac31d9"),
    ]
    for n, h, dk in cases:
        data = bytes(i % 251 for i in range(n))
        if blake3(data).hex() != h or derive_key(ctx, data).hex() != dk:
            raise Bad(f"BLAKE3 self-test failed for the official vector of length {n}")
    xof = ("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262e00f03e7b69af26b7faaf0"
           "9fcd333050338ddfe085b8cc869ca98b206c08243a26f5487789e8f660afe6c99ef9e0c52b92e7393024a8"
           "0459cf91f476f9ffdbda7001c22e159b402631f277ca96f2defdf1078282314e763699a31c5363165421cc"
           "e14d")
    if blake3(b"", 131).hex() != xof:
        raise Bad("BLAKE3 self-test failed: extended output of the empty input")


# ---------------------------------------------------------------------------------------------
# Objects: SPEC §2 ids, §3 encoding, §4 validity. Decoded objects use the vectors' JSON form
# (ids and raw bytes as lower-case hex, time_ns as a decimal string), so a vector's `object`
# compares with decode() directly and encode() takes it as it is.

MAX_OBJECT = 64 << 20
KINDS = {1: "blob", 2: "chunk-list", 3: "tree", 4: "snapshot"}
KIND_CODE = {v: k for k, v in KINDS.items()}
ENTRY_KINDS = {1: "file", 2: "chunked-file", 3: "dir", 4: "symlink"}
ENTRY_CODE = {v: k for k, v in ENTRY_KINDS.items()}


class Reject(Exception):
    """A reader MUST reject these bytes (§4); `variant` names the rule, as in the vectors."""

    def __init__(self, variant, msg):
        super().__init__(msg)
        self.variant, self.msg = variant, msg


def invalid(subject, why):
    return Reject("Invalid", f"invalid {subject}: {why}")


def object_id(canonical):
    return derive_key(f"shelldone objects v1 {KINDS[canonical[4]]}", canonical).hex()


class Reader:
    def __init__(self, b):
        self.b, self.pos = b, 5

    def take(self, n):
        if n > len(self.b) - self.pos:
            raise Reject("Truncated", f"truncated: {n} bytes needed at offset {self.pos}")
        self.pos += n
        return self.b[self.pos - n : self.pos]

    def int(self, n, signed=False):
        return int.from_bytes(self.take(n), "little", signed=signed)

    def room(self, count, min_size):
        # §4.1 rule 7: check a count before using it. "The body" is all bytes after the 5-byte
        # header, the count field and the fields before it included (as the Rust does; the
        # vector tree-name-empty, whose one entry is 43 bytes, needs this reading: counting only
        # the bytes after the count would reject it as Truncated instead of Invalid).
        if count * min_size > len(self.b) - 5:
            raise Reject("Truncated", f"truncated: {count} elements cannot fit")

    def utf8(self, raw, subject):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid(subject, "not UTF-8") from None


def check_name(name):  # §4.3 name rules
    if not name:
        raise invalid("entry name", "empty")
    if name in (b".", b".."):
        raise invalid("entry name", f"{name!r} is not allowed")
    if b"/" in name or b"\0" in name:
        raise invalid("entry name", f"{name!r} contains '/' or NUL")


def decode(b):
    """Returns (kind name, object); raises Reject for bytes SPEC §4 rejects."""
    if len(b) > MAX_OBJECT:
        raise Reject("TooLarge", f"{len(b)} bytes, over 64 MiB")
    if len(b) < 5 or b[:3] != b"SDO":
        raise Reject("BadMagic", "bad magic")
    if b[3] != 1:
        raise Reject("UnsupportedVersion", f"format version {b[3]}")
    if b[4] not in KINDS:
        raise Reject("UnknownKind", f"kind code {b[4]}")
    kind, r = KINDS[b[4]], Reader(b)
    if kind == "blob":
        return kind, {"data_hex": b[5:].hex()}
    if kind == "chunk-list":
        total, count = r.int(8), r.int(4)
        r.room(count, 36)
        if count == 0:
            raise invalid("chunk list", "no chunks")
        chunks = []
        for _ in range(count):
            cid, n = r.take(32).hex(), r.int(4)
            if n == 0:
                raise invalid("chunk list", "empty chunk")
            chunks.append({"id": cid, "len": n})
        if sum(c["len"] for c in chunks) != total:
            raise invalid("chunk list", f"chunk lengths do not add up to total_size {total}")
        obj = {"chunks": chunks, "total_size": total}
    elif kind == "tree":
        count = r.int(4)
        r.room(count, 44)
        entries, prev = [], None
        for _ in range(count):
            name = r.take(r.int(1))
            check_name(name)
            code, flags, size, eid = r.int(1), r.int(1), r.int(8), r.take(32).hex()
            if code not in ENTRY_KINDS:
                raise invalid("tree entry kind", f"code {code}")
            allowed = 1 if code in (1, 2) else 0
            if flags & ~allowed:
                raise invalid("tree entry flags", f"{flags:#04x} not allowed on this kind")
            if code == 3 and size != 0:
                raise invalid("tree entry", "directory with non-zero size")
            if prev is not None and not prev < name:  # bytes compare unsigned lexicographically
                raise invalid("tree", f"entries not strictly ascending at {name!r}")
            prev = name
            entries.append({"flags": flags, "id": eid, "kind": ENTRY_KINDS[code],
                            "name_hex": name.hex(), "size": size})
        obj = {"entries": entries}
    else:
        root, parents = r.take(32).hex(), [r.take(32).hex() for _ in range(r.int(1))]
        time_ns = r.int(8, signed=True)
        device = r.utf8(r.take(r.int(1)), "snapshot device")
        message = r.utf8(r.take(r.int(4)), "snapshot message")
        flag, session = r.int(1), None
        if flag == 1:
            raw = r.take(r.int(1))
            check_name(raw)
            session = r.utf8(raw, "snapshot session")
        elif flag != 0:
            raise invalid("snapshot session flag", str(flag))
        added, modified, deleted = r.int(4), r.int(4), r.int(4)
        count = r.int(4)
        r.room(count, 6)
        extra, prev = [], None
        for _ in range(count):
            raw = r.take(r.int(1))
            if not raw:
                raise invalid("snapshot extra key", "empty")
            key = r.utf8(raw, "snapshot extra key")
            value = r.take(r.int(4))
            if prev is not None and not prev < raw:
                raise invalid("snapshot extra", "keys not strictly ascending")
            prev = raw
            extra.append({"key": key, "value_hex": value.hex()})
        obj = {"device": device, "extra": extra, "message": message, "parents": parents,
               "root": root, "session": session, "time_ns": str(time_ns),
               "summary": {"added": added, "deleted": deleted, "modified": modified}}
    if r.pos != len(b):
        raise Reject("TrailingBytes", f"{len(b) - r.pos} trailing bytes")
    return kind, obj


def encode(kind, obj):
    """Canonical bytes of a decoded object (the writer side of §3)."""
    u8, u32, u64 = (lambda n: n.to_bytes(1, "little")), (lambda n: n.to_bytes(4, "little")), \
        (lambda n: n.to_bytes(8, "little"))
    out = [b"SDO\x01", u8(KIND_CODE[kind])]
    if kind == "blob":
        out.append(bytes.fromhex(obj["data_hex"]))
    elif kind == "chunk-list":
        out += [u64(obj["total_size"]), u32(len(obj["chunks"]))]
        for c in obj["chunks"]:
            out += [bytes.fromhex(c["id"]), u32(c["len"])]
    elif kind == "tree":
        out.append(u32(len(obj["entries"])))
        for e in sorted(obj["entries"], key=lambda e: bytes.fromhex(e["name_hex"])):
            name = bytes.fromhex(e["name_hex"])
            out += [u8(len(name)), name, u8(ENTRY_CODE[e["kind"]]), u8(e["flags"]),
                    u64(e["size"]), bytes.fromhex(e["id"])]
    else:
        str8 = lambda s: u8(len(s.encode())) + s.encode()  # noqa: E731
        out += [bytes.fromhex(obj["root"]), u8(len(obj["parents"]))]
        out += [bytes.fromhex(p) for p in obj["parents"]]
        out += [int(obj["time_ns"]).to_bytes(8, "little", signed=True), str8(obj["device"]),
                u32(len(obj["message"].encode())), obj["message"].encode()]
        out.append(b"\0" if obj["session"] is None else b"\1" + str8(obj["session"]))
        s = obj["summary"]
        out += [u32(s["added"]), u32(s["modified"]), u32(s["deleted"]), u32(len(obj["extra"]))]
        for x in sorted(obj["extra"], key=lambda x: x["key"].encode()):
            v = bytes.fromhex(x["value_hex"])
            out += [str8(x["key"]), u32(len(v)), v]
    b = b"".join(out)
    if len(b) > MAX_OBJECT:
        raise Bad(f"refusing to encode a {kind} of {len(b)} bytes (over 64 MiB)")
    return b


def decode_canonical(b, where):
    """decode() that also checks encode(decode(b)) == b (§1: one valid byte string)."""
    try:
        kind, obj = decode(b)
    except Reject as e:
        raise Bad(f"{where}: rejected ({e.variant}: {e.msg})") from None
    if encode(kind, obj) != b:
        raise Bad(f"{where}: re-encoding differs from the stored canonical bytes")
    return kind, obj


# ---------------------------------------------------------------------------------------------
# Chunking (§5).

MIN_CHUNK, MAX_CHUNK, MASK_BITS = 24576, 262144, 15
M64 = (1 << 64) - 1


@lru_cache
def gear():
    x = derive_key("shelldone cdc gear table v1", b"", 2048)
    return struct.unpack("<256Q", x)


def chunk_lengths(data):
    g, out, pos = gear(), [], 0
    while pos < len(data):
        end = min(len(data) - pos, MAX_CHUNK)
        cut, h = end, 0
        for i in range(end):
            h = ((h << 1) + g[data[pos + i]]) & M64
            if i + 1 >= MIN_CHUNK and h >> (64 - MASK_BITS) == 0:
                cut = i + 1
                break
        out.append(cut)
        pos += cut
    return out


# ---------------------------------------------------------------------------------------------
# Vectors (§9).


def check_vectors(path):
    with open(path, encoding="utf-8") as f:
        vec = json.load(f)
    if vec["format_version"] != 1:
        raise Bad(f"{path}: format_version {vec['format_version']}, this decoder reads 1")
    objects = {}
    for v in vec["objects"]:
        where = f"vector {v['name']}"
        b = bytes.fromhex(v["canonical_hex"])
        kind, obj = decode_canonical(b, where)
        want = json.loads(json.dumps(v["object"]))
        for e in want.get("entries", []):
            e.pop("name_lossy", None)
        if kind != v["kind"] or obj != want:
            raise Bad(f"{where}: decodes to {kind} {obj}, the vector says {v['kind']} {want}")
        if encode(v["kind"], v["object"]) != b:
            raise Bad(f"{where}: encoding the described object does not give canonical_hex")
        if object_id(b) != v["id"]:
            raise Bad(f"{where}: id {object_id(b)}, the vector says {v['id']}")
        objects[v["name"]] = (kind, obj, v["id"])
    for v in vec.get("negative", []):
        where = f"negative vector {v['name']}"
        try:
            decode(bytes.fromhex(v["hex"]))
        except Reject as e:
            if e.variant != v["error_variant"]:
                raise Bad(f"{where}: rejected as {e.variant} ({e.msg}), "
                          f"the vector says {v['error_variant']} ({v['error']})") from None
            # For Invalid, also the rule: the subject before ':' ("invalid tree entry flags").
            if e.variant == "Invalid" and e.msg.split(":")[0] != v["error"].split(":")[0]:
                raise Bad(f"{where}: rejected for '{e.msg}', the vector says '{v['error']}'")
        else:
            raise Bad(f"{where}: accepted, but every reader MUST reject it ({v['error']})")
    g = vec["gear_table"]
    if [f"{x:016x}" for x in gear()[:4]] != g["first_4_u64_hex"]:
        raise Bad(f"gear table: {[f'{x:016x}' for x in gear()[:4]]} != {g['first_4_u64_hex']}")
    c = vec["chunking"]
    x, data = int(c["seed_hex"], 16), bytearray(c["len"])
    for i in range(c["len"]):
        x ^= (x << 13) & M64
        x ^= x >> 7
        x ^= (x << 17) & M64
        data[i] = (x >> 24) & 0xFF
    data = bytes(data)
    if data[:16].hex() != c["input_first_16_hex"]:
        raise Bad(f"chunking input starts {data[:16].hex()}, the vector says "
                  f"{c['input_first_16_hex']}")
    blob = b"SDO\x01\x01" + data
    if object_id(blob) != c["input_blob_id"]:
        raise Bad(f"chunking input blob id {object_id(blob)} != {c['input_blob_id']}")
    lens = chunk_lengths(data)
    if lens != c["chunk_lengths"]:
        raise Bad(f"chunk boundaries {lens}, the vector says {c['chunk_lengths']}")
    # The chunk-list vector names the blobs of these chunks (§6).
    _, clist, _ = objects["chunk-list"]
    pos, ids = 0, []
    for n in lens:
        ids.append({"id": object_id(b"SDO\x01\x01" + data[pos : pos + n]), "len": n})
        pos += n
    if clist != {"chunks": ids, "total_size": len(data)}:
        raise Bad("vector chunk-list does not list the blobs of the chunking input's chunks")
    return f"{len(vec['objects'])} objects, {len(vec.get('negative', []))} negative, gear " \
        f"table, {len(lens)} chunks of the chunking input"


# ---------------------------------------------------------------------------------------------
# Stored objects (§7): zstd frames, loose files, packs and indexes.


def zstd_frame(raw, limit, where):
    """Decompresses one zstd frame that declares its size (<= limit) and is all of `raw`."""
    # RFC 8878 §3.1.1: the declared size is read (and refused) before decompressing.
    if len(raw) < 6 or raw[:4] != b"\x28\xb5\x2f\xfd":
        raise Bad(f"{where}: not a zstd frame")
    fhd, pos = raw[4], 5
    single = fhd >> 5 & 1
    pos += (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    fcs_len = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    if fcs_len == 0:
        raise Bad(f"{where}: zstd frame does not declare its content size")
    if pos + fcs_len > len(raw):
        raise Bad(f"{where}: truncated zstd frame header")
    size = int.from_bytes(raw[pos : pos + fcs_len], "little") + (256 if fcs_len == 2 else 0)
    if size > limit:
        raise Bad(f"{where}: zstd frame declares {size} bytes, over the {limit} byte limit")
    pos += fcs_len
    while True:  # walk the blocks to find where the frame ends
        if pos + 3 > len(raw):
            raise Bad(f"{where}: truncated zstd frame")
        hdr = int.from_bytes(raw[pos : pos + 3], "little")
        pos += 3 + (1 if hdr >> 1 & 3 == 1 else hdr >> 3)
        if hdr & 1:
            break
    pos += 4 if fhd >> 2 & 1 else 0
    if pos > len(raw):
        raise Bad(f"{where}: truncated zstd frame")
    if pos < len(raw):  # §7: exactly one frame (the Rust reader tolerates skippable frames here)
        raise Bad(f"{where}: {len(raw) - pos} bytes after the end of its zstd frame")
    p = subprocess.run(["zstd", "-d", "-c", "-q"], input=raw, capture_output=True)
    if p.returncode != 0:
        raise Bad(f"{where}: zstd -d failed: {p.stderr.decode(errors='replace').strip()}")
    if len(p.stdout) != size:
        raise Bad(f"{where}: zstd frame declared {size} bytes but held {len(p.stdout)}")
    return p.stdout


HEX64 = re.compile(r"[0-9a-f]{64}")


class Store:
    def __init__(self, path):
        for d in (path, os.path.join(path, "snapshots"), os.path.join(path, "state", "snapshots")):
            if os.path.isfile(os.path.join(d, "FORMAT")):
                self.dir = d
                break
        else:
            raise Bad(f"{path}: no snapshots/FORMAT: not a shelldone state directory")
        with open(os.path.join(self.dir, "FORMAT"), "rb") as f:
            raw = f.read()
        try:
            major, minor = parse_format(raw)  # §11.3; check_layout checks the rest
        except Damaged as e:
            raise Bad(f"{self.dir}: {e}") from None
        if major not in (1, 2):
            raise Bad(f"{self.dir}/FORMAT: {raw!r}, this decoder reads store formats 1, 2")
        self.format = f"{major}.{minor}"
        self.objects = {}  # id -> canonical bytes, each verified (§2) and canonical
        self.kinds = {}
        self.copies = {"loose": 0, "packed": 0}
        self.packs = []

    def add(self, canonical, where, want_id=None, want_kind=None):
        if len(canonical) < 5 or canonical[4] not in KINDS:
            decode_canonical(canonical, where)  # raises with the reason
        oid = object_id(canonical)
        if want_id is not None and oid != want_id:
            raise Bad(f"{where}: id mismatch: its content hashes to {oid}")
        where = f"{where} (object {oid})"
        kind, _ = decode_canonical(canonical, where)
        if want_kind is not None and KIND_CODE[kind] != want_kind:
            raise Bad(f"{where}: is a {kind}, its pack entry says kind {want_kind}")
        self.objects[oid], self.kinds[oid] = canonical, kind
        return oid

    def load_loose(self):
        root = os.path.join(self.dir, "objects")
        for fan in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            if not re.fullmatch(r"[0-9a-f]{2}", fan):
                continue  # not an object directory (§7.1)
            for rest in sorted(os.listdir(os.path.join(root, fan))):
                if not re.fullmatch(r"[0-9a-f]{62}", rest):
                    continue  # temp files
                oid, path = fan + rest, os.path.join(root, fan, rest)
                where = f"loose object {oid} ({path})"
                with open(path, "rb") as f:
                    self.add(zstd_frame(f.read(), MAX_OBJECT, where), where, want_id=oid)
                self.copies["loose"] += 1

    def load_packs(self):
        root = os.path.join(self.dir, "packs")
        for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            m = re.fullmatch(r"pack-([0-9a-f]{64})\.idx", name)
            if m:
                self.load_pack(os.path.join(root, name[:-4]), m[1])

    def load_pack(self, base, h):
        # §7.2 also says a reader ignores a .pack without its .idx: such packs are not read here.
        with open(base + ".idx", "rb") as f:
            idx = f.read()
        with open(base + ".pack", "rb") as f:  # §7.2: an index without its pack is an error here
            pack = f.read()
        w = f"index {base}.idx"
        if len(idx) < 76 or idx[:7] != b"SDPIDX\0" or idx[7] not in (1, 2):
            raise Bad(f"{w}: bad magic or too short (version byte {idx[7:8].hex() or 'none'})")
        ver, esize = idx[7], (45, 53)[idx[7] - 1]
        if blake3(idx[:-32]) != idx[-32:]:
            raise Bad(f"{w}: checksum mismatch")
        count = int.from_bytes(idx[8:12], "little")
        if len(idx) != 76 + esize * count:
            raise Bad(f"{w}: {len(idx)} bytes, {count} entries need {76 + esize * count}")
        index, prev = {}, b""
        for i in range(count):
            e = idx[44 + esize * i : 44 + esize * (i + 1)]
            oid, kind = e[:32], e[32]
            off, ln = int.from_bytes(e[33:41], "little"), int.from_bytes(e[41:45], "little")
            start, size = (int.from_bytes(e[45:49], "little"), int.from_bytes(e[49:53], "little")) \
                if ver == 2 else (0, 0)
            ew = f"{w}: entry {i} ({oid.hex()})"
            if kind not in KINDS:
                raise Bad(f"{ew}: kind {kind}")
            if off < 13 or off + ln > len(pack):
                raise Bad(f"{ew}: frame {off}+{ln} outside the {len(pack)}-byte pack")
            if (start, size) != (0, 0) and not (4 <= start and 1 <= size <= 1 << 20
                                                and start + size <= 8 << 20):
                raise Bad(f"{ew}: bad block place start={start} size={size}")
            if oid <= prev:
                raise Bad(f"{ew}: ids not strictly ascending")
            prev = oid
            index[oid.hex()] = (kind, off, ln, start, size)
        at = {(off, start): oid for oid, (_, off, _, start, _) in index.items()}
        # Read the pack front to back: every object in it must be indexed exactly where it is.
        w = f"pack {base}.pack"
        # SPEC §7.2 does not say that a pack and its index have the same version, nor that a
        # reader checks the pack's magic (the Rust reader does not); the writer always pairs them.
        if pack[:7] != b"SDPACK\0" or pack[7] != ver:
            raise Bad(f"{w}: magic {pack[:8].hex()}, its index is version {ver}")
        pos, seen = 8, {}
        while pos < len(pack):
            if pos + 5 > len(pack):
                raise Bad(f"{w}: truncated entry header at offset {pos}")
            code, ln = pack[pos], int.from_bytes(pack[pos + 1 : pos + 5], "little")
            off, pos = pos + 5, pos + 5 + ln
            if pos > len(pack):
                raise Bad(f"{w}: entry at offset {off - 5} runs past the end")
            ew = f"{w}: entry at offset {off - 5}"
            if code in KINDS:
                want = at.get((off, 0))
                ew += f" (indexed as object {want})" if want else " (not in the index)"
                canonical = zstd_frame(pack[off:pos], MAX_OBJECT, ew)
                oid = self.add(canonical, ew, want_id=want, want_kind=code)
                seen[oid] = (code, off, ln, 0, 0)
                self.copies["packed"] += 1
            elif code == 0x80 and ver == 2:
                block = zstd_frame(pack[off:pos], 8 << 20, ew + " (block)")
                bpos = 0
                if not block:
                    raise Bad(f"{ew}: empty block")
                while bpos < len(block):
                    s = int.from_bytes(block[bpos : bpos + 4], "little")
                    if bpos + 4 > len(block) or not 1 <= s <= 1 << 20 or bpos + 4 + s > len(block):
                        raise Bad(f"{ew}: block does not split into members at {bpos}")
                    member = block[bpos + 4 : bpos + 4 + s]
                    want = at.get((off, bpos + 4))
                    oid = self.add(member, f"{ew}, block member at {bpos}"
                                   + (f" (indexed as object {want})" if want else ""), want_id=want)
                    seen[oid] = (member[4], off, ln, bpos + 4, s)
                    self.copies["packed"] += 1
                    bpos += 4 + s
            else:
                raise Bad(f"{ew}: entry code {code:#04x} in a version-{ver} pack")
        # Also compares each index entry's kind with its object's kind byte: SPEC §7.2 does not
        # say they must agree (the Rust reader ignores the index kind), but they always do.
        if seen != index:
            bad = sorted(set(seen.items()) ^ set(index.items()))[0][0]
            raise Bad(f"{base}.idx: index and pack disagree about object {bad} "
                      f"(index {index.get(bad)}, pack {seen.get(bad)})")
        # Last, so that damage inside a frame is reported above with the object it hits.
        ph = blake3(pack).hex()
        if idx[12:44].hex() != h or ph != h:
            raise Bad(f"{w}: pack_hash {idx[12:44].hex()} in the index, the pack file hashes to "
                      f"{ph}, its name says {h}")
        self.packs.append((os.path.basename(base), ver, count))

    def get(self, oid, kind, where):
        if oid not in self.objects:
            raise Bad(f"{where}: object {oid} is missing from the store")
        if self.kinds[oid] != kind:
            raise Bad(f"{where}: object {oid} is a {self.kinds[oid]}, expected a {kind}")
        return decode(self.objects[oid])[1]

    def walk(self, refs, shallow):
        """Checks everything reachable from the refs (§6), not past the parents of `shallow`
        snapshots (§11.10); returns the reachable ids."""
        seen, todo = set(), [(oid, "snapshot", f"ref {name}") for name, oid in refs.items()]
        while todo:
            oid, kind, where = todo.pop()
            if oid in seen:
                continue
            obj = self.get(oid, kind, where)
            seen.add(oid)
            here = f"{kind} {oid}"
            if kind == "snapshot":
                todo.append((obj["root"], "tree", f"root of {here}"))
                if oid not in shallow:
                    todo += [(p, "snapshot", f"parent of {here}") for p in obj["parents"]]
            elif kind == "tree":
                for e in obj["entries"]:
                    ew = f"entry {bytes.fromhex(e['name_hex'])!r} of {here}"
                    if e["kind"] == "dir":
                        todo.append((e["id"], "tree", ew))
                    elif e["kind"] == "chunked-file":
                        self.content(e, ew)
                        seen.add(e["id"])
                        seen.update(c["id"] for c in self.get(e["id"], "chunk-list", ew)["chunks"])
                    else:
                        self.content(e, ew)
                        seen.add(e["id"])
        return seen

    def content(self, e, where):
        """The bytes of a file or symlink entry, checked against its size (§6)."""
        if e["kind"] in ("file", "symlink"):
            data = bytes.fromhex(self.get(e["id"], "blob", where)["data_hex"])
        else:
            cl = self.get(e["id"], "chunk-list", where)
            if cl["total_size"] != e["size"]:
                raise Bad(f"{where}: chunk list totals {cl['total_size']}, entry size {e['size']}")
            parts = []
            for i, c in enumerate(cl["chunks"]):
                part = bytes.fromhex(self.get(c["id"], "blob", f"chunk {i} of {where}")["data_hex"])
                if len(part) != c["len"]:
                    raise Bad(f"{where}: chunk {i} ({c['id']}) holds {len(part)} bytes, "
                              f"the list says {c['len']}")
                parts.append(part)
            data = b"".join(parts)
        if len(data) != e["size"]:  # §3.4: for a symlink too, size is the target's length
            raise Bad(f"{where}: content is {len(data)} bytes, the entry says {e['size']}")
        return data

    def extract(self, tree_id, dest, where="root tree", modes=None, prefix=b""):
        """Writes a tree to dest; returns the number of files and symlinks written. modes is a
        snapshot's decoded `modes` table (§6.1) or None."""
        n = 0
        os.makedirs(dest, exist_ok=True)
        for e in self.get(tree_id, "tree", where)["entries"]:
            name = bytes.fromhex(e["name_hex"])
            path = os.path.join(os.fsencode(dest), name)
            snap_path = prefix + b"/" + name if prefix else name
            ew = f"entry {name!r} of tree {tree_id}"
            if e["kind"] == "dir":
                n += self.extract(e["id"], path, ew, modes, snap_path)
            elif e["kind"] == "symlink":
                os.symlink(self.content(e, ew), path)
                n += 1
            else:
                with open(path, "wb") as f:
                    f.write(self.content(e, ew))
                os.chmod(path, file_mode(modes, snap_path, bool(e["flags"] & 1)))
                n += 1
        return n


def decode_modes(value):
    """§6.1: a `modes` extra value as (plain, exec, {path: mode}), or None when this reader
    does not accept it (the snapshot then restores as if it had no table)."""
    r, at = value, 0

    def take(n):
        nonlocal at
        if at + n > len(r):
            raise ValueError("truncated")
        at += n
        return r[at - n:at]
    try:
        if take(1) != b"\x01":
            return None
        plain, exec_ = struct.unpack("<HH", take(4))
        (count,) = struct.unpack("<I", take(4))
        paths, prev = {}, None
        for _ in range(count):
            (n,) = struct.unpack("<I", take(4))
            p = take(n)
            (m,) = struct.unpack("<H", take(2))
            if not p or (prev is not None and prev >= p) or m > 0o777:
                return None
            paths[p], prev = m, p
    except ValueError:
        return None
    if at != len(r) or plain > 0o777 or exec_ > 0o777:
        return None
    return plain, exec_, paths


def file_mode(modes, path, executable):
    """§6 "Mode" and §6.1: the mode a file is restored with."""
    if modes is None:
        return 0o700 if executable else 0o600
    plain, exec_, paths = modes
    m = paths.get(path, exec_ if executable else plain)
    return (m & 0o677) | (0o100 if executable else 0) | 0o400


# ---------------------------------------------------------------------------------------------
# Store layout (§11): FORMAT, device, refs, packed-refs, the reflog, sessions and the small files.

# §11 intro: "white space" is Unicode White_Space (what Rust's str::trim strips). Python's
# str.strip() alone would also strip U+001C..U+001F, which are not White_Space.
WHITE_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) \
    + "\u2028\u2029\u202f\u205f\u3000"
ANY_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
ZERO_ID = "0" * 64
REF_COMPONENT = re.compile(r"[A-Za-z0-9._%-]+")
KNOWN_NAMES = {"FORMAT", "device", "objects", "packs", "refs", "packed-refs", "logs", "shallow",
               "remotes.json", "remotes", "restore-intent", "statcache", "statcache.delta", "staging", "lock",
               "lock.owner"}
TMP_PREFIX = ".shelldone-tmp."
PACKED_HEADER = b"# shelldone packed-refs 1"


class Damaged(Exception):
    """A store file breaks a MUST of §11: what `state check` reports as damage."""


def trim(s):
    return s.strip(WHITE_SPACE)


def utf8_text(b, where):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise Damaged(f"{where}: not UTF-8") from None


def parse_id(s):
    """§2: 64 hex digits, upper case accepted; the id in lower case, or None."""
    return s.lower() if ANY_HEX64.fullmatch(s) else None


def ref_name_ok(name):  # §11.6
    return 0 < len(name.encode("utf-8", "surrogateescape")) <= 1024 and all(
        REF_COMPONENT.fullmatch(c) and not c.startswith(".") and not c.endswith(".lock")
        for c in name.split("/"))


def parse_format(b):  # §11.3
    m = re.fullmatch(r"shelldone-store ([0-9]+)\.([0-9]+)", trim(utf8_text(b, "FORMAT")))
    if not m or int(m[1]) >= 1 << 32 or int(m[2]) >= 1 << 32:
        raise Damaged(f"FORMAT: not 'shelldone-store <major>.<minor>': {b[:80]!r}")
    return int(m[1]), int(m[2])


def format_access(writer, found):  # §11.3, the table
    if found[0] != writer[0]:
        return "refuse" if found[0] > writer[0] else "migrate"
    return "read-only" if found[1] > writer[1] else "read-write"


def parse_device(b):  # §11.4: the id, or None when the file does not hold a valid one
    try:
        s = trim(b.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return s if "/" not in s and ref_name_ok(s) else None


SESSIONS = b"state/sessions/"
KEPT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def session_of(path):  # §11.7: the session a snapshot path belongs to, or None
    if not path.startswith(SESSIONS):
        return None
    first = path[len(SESSIONS):].split(b"/")[0]
    dot = first.find(b".", 1)
    return first if dot < 0 else first[:dot]


def session_ref(sid):  # §11.7: enc()
    return "sessions/" + "".join(
        chr(b) if b in KEPT or (b == 0x2E and i > 0) else f"%{b:02X}" for i, b in enumerate(sid))


def session_of_ref(name):
    """The session id a ref `sessions/<enc(s)>` names, or None when the name is not enc() of one."""
    comp = name[len("sessions/"):]
    if not name.startswith("sessions/") or \
            not re.fullmatch(r"(?:[A-Za-z0-9_.-]|%[0-9A-F]{2})+", comp):
        return None
    sid = bytes(int(t[1:], 16) if t[0] == "%" else ord(t)
                for t in re.findall(r"%[0-9A-F]{2}|[A-Za-z0-9_.-]", comp))
    return sid if session_ref(sid) == name else None  # canonical: nothing escaped that is kept


def parse_loose_ref(b, where):  # §11.5
    s = trim(utf8_text(b, where))
    oid = parse_id(s)
    if oid is None:
        raise Damaged(f"{where}: not a snapshot id: {s[:80]!r}")
    return oid


def parse_packed(b, where):  # §11.8
    if not b:
        raise Damaged(f"{where}: empty (no header line)")
    if not b.endswith(b"\n"):
        raise Damaged(f"{where}: truncated: the last line has no LF")
    lines = b[:-1].split(b"\n")
    if lines[0] != PACKED_HEADER:
        raise Damaged(f"{where}: unknown header {lines[0][:80]!r}")
    out = {}
    for no, raw in enumerate(lines[1:], 2):
        hexid, sp, name = utf8_text(raw, f"{where} line {no}").partition(" ")
        oid = parse_id(hexid)
        if not sp or oid is None or not ref_name_ok(name):
            raise Damaged(f"{where} line {no}: not '<id> <ref>': {raw[:80]!r}")
        if name in out:
            raise Damaged(f"{where} line {no}: ref {name} listed twice")
        out[name] = oid
    return out


def read_file(path):
    """The bytes of a regular file, or None when there is none (absent, a directory)."""
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def read_packed(snap):
    b = read_file(os.path.join(snap, "packed-refs"))
    return {} if b is None else parse_packed(b, f"packed-refs {os.path.join(snap, 'packed-refs')}")


def loose_ref_files(snap):
    """name -> path of every file under refs/ whose relative path is a valid ref name."""
    out, root = {}, os.path.join(snap, "refs")
    for d, _, files in os.walk(root):
        for fn in files:
            path = os.path.join(d, fn)
            name = "/".join(os.path.relpath(path, root).split(os.sep))
            if ref_name_ok(name) and not os.path.islink(path):  # else temp or foreign: ignored
                out[name] = path
    return out


def resolve_ref(snap, name):
    """§11.8 resolution: the loose file when there is one, else packed-refs, else None."""
    if not ref_name_ok(name):
        raise Damaged(f"{name!r}: not a valid ref name")
    path = os.path.join(snap, "refs", *name.split("/"))
    b = read_file(path)
    if b is not None:
        return parse_loose_ref(b, f"ref file {path}")
    return read_packed(snap).get(name)


def list_refs(snap):
    """Every ref (name -> id), loose over packed; raises Damaged if any ref file is damaged."""
    out = {name: parse_loose_ref(read_file(p), f"ref file {p}")
           for name, p in loose_ref_files(snap).items()}
    for name, oid in read_packed(snap).items():
        out.setdefault(name, oid)
    return dict(sorted(out.items()))


def parse_reflog_line(t):
    """§11.9: (ref, old, new, time_ns, message) with None for a 64-zero id, or None."""
    name, sp, rest = t.partition(" ")
    if not sp or not ref_name_ok(name):
        return None
    parts = rest.split(" ", 3)
    if len(parts) < 3:
        return None
    ids = [None if s == ZERO_ID else parse_id(s) or "bad" for s in parts[:2]]
    # A decimal i64. (Rust's i64 parser also takes a leading '+'; writers never write one.)
    if "bad" in ids or not re.fullmatch(r"-?[0-9]+", parts[2]) or \
            not -(1 << 63) <= int(parts[2]) < 1 << 63:
        return None
    return name, ids[0], ids[1], int(parts[2]), parts[3] if len(parts) == 4 else ""


def scan_reflog(b):
    """(lines, damaged): lines (no, ref, old, new, time_ns, message) that parse, and (no,
    readable) of the damaged ones; a line that parses only with U+FFFD for its bytes that are not
    UTF-8 is in both. A last line without LF is parsed like any other (§11.9)."""
    lines, damaged = [], []
    body = b[:-1] if b.endswith(b"\n") else b
    if not body:
        return lines, ([(1, False)] if b else [])
    for no, raw in enumerate(body.split(b"\n"), 1):
        try:
            t, utf8 = raw.decode("utf-8"), True
        except UnicodeDecodeError:
            t, utf8 = raw.decode("utf-8", "replace"), False
        p = parse_reflog_line(t)
        if p is None:
            damaged.append((no, False))
            continue
        lines.append((no, *p))
        if not utf8:
            damaged.append((no, True))
    return lines, damaged


def varint(b, pos, where, limit=1 << 64):
    n = shift = 0
    while True:
        if pos >= len(b) or shift > 63:
            raise Damaged(f"{where}: does not decode (varint at {pos})")
        n |= (b[pos] & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not b[pos - 1] & 0x80:
            break
    if n >= limit:
        raise Damaged(f"{where}: does not decode (varint {n} too large)")
    return n, pos


def unzigzag(v):
    return (v >> 1) ^ -(v & 1)


def zigzag_bytes(v):
    return varint_bytes(((v << 1) ^ (v >> 63)) & ((1 << 64) - 1))


def varint_bytes(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


STAT_FIELDS = ("size", "mtime_ns", "ctime_ns", "ino", "dev")


def parse_statcache(b, where="statcache"):
    """§11.13: the entries, None for an older version (ignored); raises Damaged."""
    if not b:
        raise Damaged(f"{where}: empty")
    if b[:8] == b"SDSTAT\x00\x01":
        return None
    if len(b) < 40 or b[:8] != b"SDSTAT\x00\x02":
        raise Damaged(f"{where}: not a stat cache (unknown header or too short)")
    body = b[:-32]
    if blake3(body) != b[-32:]:
        raise Damaged(f"{where}: checksum mismatch")
    count, pos = varint(body, 8, where)
    entries = []
    for _ in range(count):
        e, pos = stat_path(body, pos, where)
        pos = stat_fields(body, pos, e, where)
        entries.append(e)
    return entries  # §11.13: bytes after the last entry are ignored (writers write none)


def stat_path(body, pos, where):
    n, pos = varint(body, pos, where)
    if pos + n > len(body):
        raise Damaged(f"{where}: does not decode (truncated path)")
    return {"path_hex": body[pos : pos + n].hex()}, pos + n


def stat_fields(body, pos, e, where):
    """The fields of a stat cache entry after its path, into e; returns the position after."""
    for field in STAT_FIELDS:
        v, pos = varint(body, pos, where)
        e[field] = unzigzag(v) if field.endswith("_ns") else v
    if pos + 33 > len(body):
        raise Damaged(f"{where}: does not decode (truncated entry)")
    e["kind"], e["id"] = body[pos], body[pos + 1 : pos + 33].hex()
    v, pos = varint(body, pos + 33, where)
    e["hashed_at_ns"] = unzigzag(v)
    return pos


def parse_statcache_delta(b, where="statcache.delta"):
    """§11.13, the delta file: (base checksum, records: an entry or {"path_hex", "removed"});
    raises Damaged."""
    if len(b) < 8 + 64 or b[:8] != b"SDSTDL\x00\x01":
        raise Damaged(f"{where}: not a stat cache delta (unknown header or too short)")
    head = b[:-32]
    if blake3(head) != b[-32:]:
        raise Damaged(f"{where}: checksum mismatch")
    base = head[8:40]
    count, pos = varint(head, 40, where)
    records = []
    for _ in range(count):
        e, pos = stat_path(head, pos, where)
        if pos >= len(head) or head[pos] not in (0, 1):
            raise Damaged(f"{where}: does not decode (record tag)")
        tag, pos = head[pos], pos + 1
        if tag == 0:
            e["removed"] = True
        else:
            pos = stat_fields(head, pos, e, where)
        records.append(e)
    if pos != len(head):
        raise Damaged(f"{where}: does not decode (bytes after the last record)")
    return base, records


def encode_statcache(entries):
    body = bytearray(b"SDSTAT\x00\x02" + varint_bytes(len(entries)))
    for e in sorted(entries, key=lambda e: bytes.fromhex(e["path_hex"])):
        p = bytes.fromhex(e["path_hex"])
        body += varint_bytes(len(p)) + p
        for field in STAT_FIELDS:
            body += zigzag_bytes(e[field]) if field.endswith("_ns") else varint_bytes(e[field])
        body += bytes([e["kind"]]) + bytes.fromhex(e["id"]) + zigzag_bytes(e["hashed_at_ns"])
    return bytes(body) + blake3(bytes(body))


def vector_bytes(v):
    return bytes.fromhex(v["hex"]) if "hex" in v else v["text"].encode("utf-8")


def check_layout_vectors(path):
    """Reproduces every vector of tests/store-layout.json (§11.15) from §11 alone."""
    with open(path, encoding="utf-8") as f:
        vec = json.load(f)
    n = 0

    def want(ok, what):
        nonlocal n
        n += 1
        if not ok:
            raise Bad(f"layout vector {what}")

    for name in vec["ref_names"]["valid"]:
        want(ref_name_ok(name), f"ref_names: {name[:40]!r} is valid")
    for name in vec["ref_names"]["invalid"]:
        want(not ref_name_ok(name), f"ref_names: {name[:40]!r} is invalid")
    for v in vec["session_of"]:
        got = session_of(bytes.fromhex(v["path_hex"]))
        want((got.hex() if got is not None else None) == v["session_hex"],
             f"session_of {v['note']!r}: got {got!r}")
    for v in vec["session_refs"]:
        sid = bytes.fromhex(v["session_hex"])
        got = session_ref(sid)
        want(got == v["ref"] and ref_name_ok(got) == v["ref_valid"] and session_of_ref(got) == sid,
             f"session_refs {v['note']!r}: got {got!r}")
    writer = tuple(map(int, vec["format"]["writer"].split(".")))
    want(vector_bytes(vec["format"]["current"]) == f"shelldone-store {writer[0]}.{writer[1]}\n"
         .encode(), "format: current is the writer's line")
    for v in vec["format"]["cases"]:
        try:
            got = parse_format(vector_bytes(v))
            got = (f"{got[0]}.{got[1]}", format_access(writer, got))
        except Damaged:
            got = (None, None)
        want(got == (v["version"], v["access"]), f"format {vector_bytes(v)!r}: got {got}")
    for v in vec["device"]:
        got = parse_device(vector_bytes(v))
        want(got == v["device"], f"device {vector_bytes(v)!r}: got {got!r}")
    for v in vec["loose_refs"]:
        try:
            got = parse_loose_ref(vector_bytes(v), "ref")
        except Damaged:
            got = None
        want(got == v["id"], f"loose_refs {vector_bytes(v)[:70]!r}: got {got}")
    for v in vec["packed_refs"]:
        with tempfile.TemporaryDirectory() as snap:
            for rel, content in v["files"].items():
                p = os.path.join(snap, *rel.split("/"))
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(vector_bytes(content))
            for name, expect in v["resolves"].items():
                try:
                    got = resolve_ref(snap, name)
                except Damaged:
                    got = "damaged"
                want(got == expect, f"packed_refs {v['name']!r}: {name} resolves to {got}")
            try:
                got = [list(x) for x in list_refs(snap).items()]
            except Damaged:
                got = "damaged"
            want(got == v["list"], f"packed_refs {v['name']!r}: list is {got}")
    for v in vec["reflog"]:
        lines, damaged = scan_reflog(vector_bytes(v))
        keys = ("no", "ref", "old", "new", "time_ns", "message")
        want([dict(zip(keys, x)) for x in lines] == v["lines"],
             f"reflog {v['name']!r}: lines {lines}")
        want([{"no": a, "readable": b} for a, b in damaged] == v["damaged"],
             f"reflog {v['name']!r}: damaged {damaged}")
    sc = vec["statcache"]
    for v in sc["caches"]:
        b = bytes.fromhex(v["hex"])
        want(encode_statcache(v["entries"]) == b, f"statcache {v['name']!r}: encoding differs")
        got = parse_statcache(b)
        want(got == sorted(v["entries"], key=lambda e: bytes.fromhex(e["path_hex"])),
             f"statcache {v['name']!r}: decodes to {got}")
    for v in sc["ignored"]:
        want(parse_statcache(bytes.fromhex(v["hex"])) is None, f"statcache {v['name']!r}: ignored")
    for v in sc["damaged"]:
        try:
            parse_statcache(bytes.fromhex(v["hex"]))
            ok = False
        except Damaged:
            ok = True
        want(ok, f"statcache {v['name']!r}: damaged")
    return f"{n} checks ({len(vec['session_refs'])} session refs, {len(vec['format']['cases'])} " \
        f"FORMAT, {len(vec['packed_refs'])} ref stores, {len(vec['reflog'])} reflogs, " \
        f"{len(sc['caches']) + len(sc['ignored']) + len(sc['damaged'])} stat caches)"


def session_contents(st, snap_id, where):
    """§11.7: session id -> its content, as the entries of `state/sessions/` that belong to it
    (name, kind, flags, id): a directory's id covers everything under it."""
    tree = st.get(snap_id, "snapshot", where)["root"]
    for comp in (b"state", b"sessions"):
        e = next((e for e in st.get(tree, "tree", where)["entries"]
                  if bytes.fromhex(e["name_hex"]) == comp), None)
        if e is None or e["kind"] != "dir":
            return {}
        tree = e["id"]
    out = {}
    for e in st.get(tree, "tree", where)["entries"]:
        name = bytes.fromhex(e["name_hex"])
        out.setdefault(session_of(SESSIONS + name), []).append(
            (name, e["kind"], e["flags"], e["id"]))
    return {s: tuple(v) for s, v in out.items()}


def check_layout(st):
    """§11 on a store whose objects are loaded: returns (refs, shallow ids, report lines).
    Stricter than a reader must be: every file must be exactly as writers write it, and a
    damaged reflog line (which readers skip) is a failure, as `state check` reports it."""
    snap, report, absent = st.dir, [], []

    def damaged(f):
        try:
            return f()
        except Damaged as e:
            raise Bad(f"{snap}: {e}") from None

    # §11.1: names in snapshots/.
    names = sorted(os.listdir(snap))
    unknown = [n for n in names if n not in KNOWN_NAMES and not n.startswith(TMP_PREFIX)]
    if unknown:
        report.append(f"names this version does not write (ignored, §11.1): {unknown}")
    staging = os.path.join(snap, "staging")
    if os.path.isdir(staging) and os.listdir(staging):
        report.append(f"staging/ holds unfinished batches (ignored, §11.2): {os.listdir(staging)}")
    # §11.3 FORMAT: the version, and exactly the writer's line.
    raw = read_file(os.path.join(snap, "FORMAT"))
    version = damaged(lambda: parse_format(raw))
    if raw != f"shelldone-store {version[0]}.{version[1]}\n".encode():
        raise Bad(f"{snap}/FORMAT: {raw!r} is not exactly what a writer writes")
    if version[0] not in (1, 2):
        raise Bad(f"{snap}/FORMAT: store format {version[0]}.{version[1]}: this decoder reads "
                  f"majors 1 and 2 (§11.3: a newer major is refused)")
    if version[0] == 1:
        v2 = [name for name, v, _ in st.packs if v != 1]
        if os.path.exists(os.path.join(snap, "packed-refs")) or v2:
            raise Bad(f"{snap}: store format 1.x holds packed-refs or version-2 packs {v2} "
                      f"(§11.3)")
    # §11.5, §11.8: refs, each a stored snapshot.
    loose = loose_ref_files(snap)
    for name, path in loose.items():
        b = read_file(path)
        oid = damaged(lambda: parse_loose_ref(b, f"ref file {path}"))
        if b != f"{oid}\n".encode():
            raise Bad(f"ref file {path}: {b!r} is not exactly '<64 lower-case hex>\\n'")
    packed_path = os.path.join(snap, "packed-refs")
    packed = damaged(lambda: read_packed(snap))
    if os.path.exists(packed_path):
        if list(packed) != sorted(packed) or "head" in packed:
            raise Bad(f"{packed_path}: lines not sorted by name, or holds head (§11.8)")
    else:
        absent.append("packed-refs")
    refs = damaged(lambda: list_refs(snap))
    for name, oid in refs.items():
        if damaged(lambda: resolve_ref(snap, name)) != oid:
            raise Bad(f"ref {name}: resolves differently from the listing")
        st.get(oid, "snapshot", f"ref {name}")
    shadowed = sorted(set(loose) & set(packed))
    spaces = {}  # §11.6 namespaces
    for name in refs:
        space = name.split("/")[0] if name.split("/")[0] in ("head", "sessions", "remotes") \
            else "other"
        spaces[space] = spaces.get(space, 0) + 1
    shadow = f", {len(shadowed)} shadowed by loose" if shadowed else ""
    report.append(f"FORMAT {version[0]}.{version[1]}; {len(refs)} refs ({len(loose)} loose, "
                  f"{len(packed)} packed{shadow}: "
                  f"{', '.join(f'{n} {k}' for k, n in sorted(spaces.items()))}), "
                  f"each a stored snapshot")
    # §11.9: the reflog, exactly as written, and consistent with the refs.
    log_path = os.path.join(snap, "logs", "refs.log")
    raw = read_file(log_path)
    lines, bad = scan_reflog(raw or b"")
    if bad:
        raise Bad(f"reflog {log_path}: damaged lines {bad} (§11.9: readers skip them)")
    if raw and not raw.endswith(b"\n"):
        raise Bad(f"reflog {log_path}: a torn last line")
    rebuilt = "".join(f"{r} {o or ZERO_ID} {n or ZERO_ID} {t} {m}\n" for _, r, o, n, t, m in lines)
    if raw is not None and rebuilt.encode() != raw:
        raise Bad(f"reflog {log_path}: not exactly as a writer writes it")
    last = {}
    for no, name, old, new, _, _ in lines:
        if old != last.get(name, (None,))[0]:
            raise Bad(f"reflog {log_path}:{no}: {name}'s old value {old} is not the previous "
                      f"line's new value {last.get(name, (None,))[0]}")
        for oid in (old, new):
            if oid is not None:
                st.get(oid, "snapshot", f"reflog {log_path}:{no}")
        last[name] = (new, no)
    for name, oid in refs.items():
        if last.get(name, (None,))[0] != oid:
            raise Bad(f"reflog {log_path}: incomplete: no last line records {name} = {oid}")
    for name, (new, no) in last.items():
        if new is not None and name not in refs:
            raise Bad(f"ref {name} is missing: {log_path}:{no} says it is {new}")
    if "head" not in refs and (refs or st.objects):
        raise Bad(f"{snap}: objects or refs but no head")
    report.append(f"reflog: {len(lines)} lines, none damaged or torn; the last line of each ref "
                  f"gives its value, each line's old value is the previous one's new, every id "
                  f"is a stored snapshot")
    # §11.4 device, and the device of the newest local save.
    raw = read_file(os.path.join(snap, "device"))
    device = parse_device(raw) if raw is not None else None
    if device is None or raw != f"{device}\n".encode() or \
            not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", device):
        raise Bad(f"{snap}/device: {raw!r}: not '<id>\\n' with an id a writer writes (§11.4)")
    newest = next(((m, n) for _, r, _, n, _, m in reversed(lines) if r == "head" and n
                   and (m.startswith("save") or m.startswith("device rename: "))), None)
    if newest:
        m, n = newest
        saved = m.rsplit(" -> ", 1)[-1].strip(WHITE_SPACE) if m.startswith("device rename: ") \
            else st.get(n, "snapshot", "the newest local save")["device"]
        if saved != device:
            raise Bad(f"{snap}/device: says {device}, the newest local save was made as {saved}")
    report.append(f"device {device}" + (", the device of the newest local save" if newest else
                                        " (no local save recorded)"))
    # §11.7: session refs are the encoding of the head's sessions and have the head's content.
    head_sessions = session_contents(st, refs["head"], "ref head") if "head" in refs else {}
    deleted = []
    for name in (n for n in refs if n.startswith("sessions/")):
        sid = session_of_ref(name)
        if sid is None:
            raise Bad(f"ref {name}: not sessions/<enc(s)> of any session id (§11.7)")
        if sid not in head_sessions:
            deleted.append(name)
    for sid, content in head_sessions.items():
        name = session_ref(sid)
        if name not in refs:
            raise Bad(f"session {sid!r} of the head has no ref {name}")
        theirs = session_contents(st, refs[name], f"ref {name}").get(sid)
        if theirs != content:
            raise Bad(f"ref {name}: names {refs[name]}, whose session {sid!r} differs from the "
                      f"head's")
    report.append(f"sessions of the head: {len(head_sessions)} "
                  f"({', '.join(s.decode(errors='backslashreplace') for s in head_sessions)}); "
                  f"each has its ref sessions/<enc(s)>, naming a snapshot with the head's content"
                  + (f"; refs of sessions not in the head: {deleted}" if deleted else ""))
    # §11.10 – §11.13: the other files, when present.
    shallow = set()
    raw = read_file(os.path.join(snap, "shallow"))
    if raw is None:
        absent.append("shallow")
    else:
        if not raw.endswith(b"\n"):
            raise Bad(f"{snap}/shallow: empty, or the last line has no LF")
        for no, line in enumerate(raw[:-1].split(b"\n"), 1):
            oid = parse_id(trim(line.decode("utf-8", "replace")))
            if oid is None or oid not in st.objects:
                raise Bad(f"{snap}/shallow:{no}: not the id of a stored object: {line[:80]!r}")
            shallow.add(oid)
        report.append(f"shallow: {len(shallow)} snapshots whose parents are not followed")
    raw = read_file(os.path.join(snap, "remotes.json"))
    if raw is None:
        absent.append("remotes.json")
    else:
        try:
            remotes = json.loads(raw)
            ok = isinstance(remotes, list) and all(
                isinstance(r, dict) and all(isinstance(r.get(k), str)
                                            for k in ("name", "url", "kind"))
                for r in remotes)
        except ValueError:
            ok = False
        if not ok:
            raise Bad(f"{snap}/remotes.json: not a list of remotes (§11.11)")
        report.append(f"remotes.json: {[r['name'] for r in remotes]}")
    raw = read_file(os.path.join(snap, "restore-intent"))
    if raw is None:
        absent.append("restore-intent")
    else:
        try:
            intent = json.loads(raw)
            target = intent["snapshot"]
            ok = isinstance(intent, dict) and (target == "head" or parse_id(target) is not None) \
                and isinstance(intent.get("session"), (str, type(None))) \
                and isinstance(intent.get("path"), (str, type(None)))
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise Bad(f"{snap}/restore-intent: not a restore intent (§11.12)")
        report.append(f"restore-intent: an unfinished restore of {target} (a writer finishes it)")
    raw = read_file(os.path.join(snap, "statcache"))
    if raw is None:
        absent.append("statcache")
    else:
        entries = damaged(lambda: parse_statcache(raw, f"{snap}/statcache"))
        report.append("statcache: an older version (ignored)" if entries is None else
                      f"statcache: {len(entries)} entries (a cache: not used here)")
    delta = read_file(os.path.join(snap, "statcache.delta"))
    if delta is not None:
        base, records = damaged(lambda: parse_statcache_delta(delta, f"{snap}/statcache.delta"))
        current = raw is not None and len(raw) >= 32 and raw[-32:] == base
        report.append(f"statcache.delta: {len(records)} changes "
                      f"({'amending statcache' if current else 'stale: ignored'})")
    if absent:
        report.append(f"absent (nothing to check): {', '.join(absent)}")
    return refs, shallow, report


# ---------------------------------------------------------------------------------------------
# The head snapshot's files against a live directory.


def listing(root, skip=()):
    """Relative path -> ('l', target) | ('f', owner-executable, bytes) of files and symlinks."""
    out = {}
    root = os.fsencode(root)
    for d, dirs, files in os.walk(root):
        rel_d = os.path.relpath(d, root)
        dirs[:] = [x for x in dirs if os.path.normpath(os.path.join(rel_d, x)) not in skip]
        for fn in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, fn)
            rel = os.path.normpath(os.path.join(rel_d, fn))
            if os.path.islink(p):
                out[rel] = ("l", os.readlink(p))
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", bool(os.stat(p).st_mode & 0o100), f.read())
    return out


def compare(extracted, live):
    a, b = listing(extracted), listing(live, skip={os.fsencode(os.path.join("state", "snapshots"))})
    for rel in sorted(set(a) | set(b)):
        if a.get(rel) != b.get(rel):
            what = "missing from the snapshot" if rel not in a else \
                "not in the live directory" if rel not in b else "content or mode differs"
            raise Bad(f"head snapshot vs {live}: {os.fsdecode(rel)}: {what}")
    return len(a)


def check_store(path, extract_dir, compare_with):
    t = time.monotonic()
    st = Store(path)
    st.load_packs()
    st.load_loose()
    refs, shallow, layout = check_layout(st)
    reachable = st.walk(refs, shallow)
    by_kind = {k: sum(1 for o in st.kinds.values() if o == k) for k in KINDS.values()}
    packs = ", ".join(f"{name[:17]}… (v{v}, {n} objects)" for name, v, n in st.packs)
    print(f"store {st.dir}: format {st.format}, {len(st.packs)} pack(s) {packs}")
    print(f"  {st.copies['loose']} loose + {st.copies['packed']} packed copies of "
          f"{len(st.objects)} objects ({', '.join(f'{n} {k}' for k, n in by_kind.items())}): "
          f"every id verified, every object canonical")
    for line in layout:
        print(f"  layout (§11): {line}")
    for name, oid in refs.items():
        s = st.get(oid, "snapshot", f"ref {name}")
        print(f"  ref {name:<24} {oid[:16]}  {s['message']!r}")
    print(f"  {len(reachable)} objects reachable from the refs, "
          f"{len(st.objects) - len(reachable)} unreachable; every file's content checked")
    if extract_dir or compare_with:
        if "head" not in refs:
            raise Bad(f"{st.dir}: no head ref to extract")
        head = st.get(refs["head"], "snapshot", "ref head")
        root = head["root"]
        modes = next((decode_modes(bytes.fromhex(x["value_hex"])) for x in head["extra"]
                      if x["key"] == "modes"), None)
        with tempfile.TemporaryDirectory() as tmp:
            dest = extract_dir or tmp
            if os.path.exists(dest) and os.listdir(dest):
                raise Bad(f"--extract {dest}: not empty")
            n = st.extract(root, dest, modes=modes)
            print(f"  head {refs['head'][:16]}: {n} files extracted to {dest}")
            if compare_with:
                compare(dest, compare_with)
                print(f"  they equal the live files under {compare_with} (config/, state/)")
    print(f"  store checked in {time.monotonic() - t:.1f} s")


def check_bundle_pack(path, root, extract_dir):
    """§13.2: a backup bundle's pack (decrypted with `age -d`; a version-1 bundle's also
    decompressed with `zstd -d`): object entries and blocks (§7.2), no index; every object
    checked, every object reached from the snapshot `root`, and, with `extract_dir`, its files
    written there."""
    st = Store.__new__(Store)
    st.dir, st.format, st.objects, st.kinds = path, "bundle", {}, {}
    st.copies, st.packs = {"loose": 0, "packed": 0}, []
    with open(path, "rb") as f:
        pack = f.read()
    if pack[:8] != b"SDPACK\0\x02":
        raise Bad(f"{path}: magic {pack[:8].hex()}, not a version-2 pack (§13.2)")
    pos, seen_ids = 8, set()
    while pos < len(pack):
        if pos + 5 > len(pack):
            raise Bad(f"{path}: truncated entry header at offset {pos}")
        code, ln = pack[pos], int.from_bytes(pack[pos + 1 : pos + 5], "little")
        off, pos = pos + 5, pos + 5 + ln
        ew = f"{path}: entry at offset {off - 5}"
        if pos > len(pack):
            raise Bad(f"{ew}: runs past the end")
        if code in KINDS:
            found = [st.add(zstd_frame(pack[off:pos], MAX_OBJECT, ew), ew, want_kind=code)]
        elif code == 0x80:
            block = zstd_frame(pack[off:pos], 8 << 20, ew + " (block)")
            if not block:
                raise Bad(f"{ew}: empty block")
            found, bpos = [], 0
            while bpos < len(block):
                s = int.from_bytes(block[bpos : bpos + 4], "little")
                if bpos + 4 > len(block) or not 1 <= s <= 1 << 20 or bpos + 4 + s > len(block):
                    raise Bad(f"{ew}: block does not split into members at {bpos}")
                found.append(st.add(block[bpos + 4 : bpos + 4 + s], f"{ew}, block member at {bpos}"))
                bpos += 4 + s
        else:
            raise Bad(f"{ew}: entry code {code:#04x}")
        for oid in found:
            if oid in seen_ids:
                raise Bad(f"{ew}: object {oid} appears twice")
            seen_ids.add(oid)
            st.copies["packed"] += 1
    reachable = st.walk({"bundle": root}, set())
    if len(reachable) != len(st.objects):
        raise Bad(f"{path}: {len(st.objects) - len(reachable)} objects the snapshot does not reach")
    print(f"bundle pack {path}: {len(st.objects)} objects, every id verified; "
          f"{len(reachable)} reachable from snapshot {root[:16]}")
    if extract_dir:
        head = st.get(root, "snapshot", "bundle snapshot")
        modes = next((decode_modes(bytes.fromhex(x["value_hex"])) for x in head["extra"]
                      if x["key"] == "modes"), None)
        if os.path.exists(extract_dir) and os.listdir(extract_dir):
            raise Bad(f"--extract {extract_dir}: not empty")
        n = st.extract(head["root"], extract_dir, modes=modes)
        print(f"  snapshot {root[:16]}: {n} files extracted to {extract_dir}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vectors", help="objects-format/tests/vectors.json")
    ap.add_argument("--layout-vectors", help="objects-format/tests/store-layout.json (§11.15)")
    ap.add_argument("--store", action="append", default=[], help="a state directory")
    ap.add_argument("--extract", metavar="DIR", help="write the head snapshot's files to DIR")
    ap.add_argument("--compare-with", metavar="ROOT", help="directory holding config/ and state/")
    ap.add_argument("--bundle-pack", metavar="FILE",
                    help="a backup bundle's pack, decrypted (version 1: and decompressed; SPEC §13.2)")
    ap.add_argument("--root", metavar="ID", help="with --bundle-pack: the manifest's snapshot")
    a = ap.parse_args()
    if not a.vectors and not a.layout_vectors and not a.store and not a.bundle_pack:
        ap.error("nothing to do: give --vectors, --layout-vectors, --store and/or --bundle-pack")
    if a.bundle_pack and (not a.root or a.compare_with or a.store):
        ap.error("--bundle-pack needs --root, and goes without --store and --compare-with")
    if (a.extract or a.compare_with) and len(a.store) != 1 and not a.bundle_pack:
        ap.error("--extract and --compare-with need exactly one --store")
    try:
        t = time.monotonic()
        self_test_blake3()
        print("BLAKE3: official test vectors (hash, derive_key, extended output) OK")
        if a.vectors:
            print(f"vectors {a.vectors}: {check_vectors(a.vectors)}: all OK "
                  f"({time.monotonic() - t:.1f} s)")
        if a.layout_vectors:
            print(f"layout vectors {a.layout_vectors}: {check_layout_vectors(a.layout_vectors)}: "
                  f"all OK")
        for s in a.store:
            check_store(s, a.extract, a.compare_with)
        if a.bundle_pack:
            check_bundle_pack(a.bundle_pack, a.root, a.extract)
    except Bad as e:
        print(f"decode.py: FAIL: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"decode.py: FAIL: {e}", file=sys.stderr)
        return 1
    print("decode.py: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
