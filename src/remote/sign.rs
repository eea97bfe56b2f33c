//! Signed refs as a decorator: [`Signed`] wraps any [`Backend`]. Each ref update this device
//! publishes becomes a signed record, stored as an object of the backend, and the backend's
//! ref names that record; listing refs reads every record and verifies it before the transfer
//! sees a single value (ADR 0010).
//!
//! A record carries the remote's identity (a random id kept on the remote, so a record cannot
//! be replayed onto another remote), the ref's name, its value, its previous value, a counter
//! that only grows per device (nanoseconds since the epoch, or one more than the last), the
//! signer's Ed25519 key and the signature over all of it. A ref is refused — the whole listing
//! fails, so a pull changes nothing — when it is unsigned, its signature does not verify, its
//! signer is not trusted or was revoked, it names another ref or remote, or its counter is
//! lower than one this device already saw for that ref (an older ref replayed). The highest
//! counters seen are kept per remote in a small local file.
//!
//! Record layout: `shelldone-signed-ref 1\n`, then the postcard encoding of [`Record`]; the
//! signature is over `shelldone-signed-ref 1\n` and the postcard encoding of [`Payload`]. The
//! object's id is BLAKE3 (`derive_key` context `shelldone signed ref 1`) of the whole record.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ed25519_dalek::{Signer, Verifier};
use objects_format::{Kind, ObjectId};
use serde::{Deserialize, Serialize};

use super::{Backend, Outgoing, RefUpdate, ref_conflict};
use crate::error::{Error, Result};
use crate::store::durable;

const MAGIC: &[u8] = b"shelldone-signed-ref 1\n";
const IDENTITY_MAGIC: &[u8] = b"shelldone-remote-identity 1\n";

/// What is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The remote's identity (hex).
    pub remote: String,
    /// The ref (`<device>/head`, `<device>/sessions/<x>`).
    pub name: String,
    /// Its new value.
    pub value: [u8; 32],
    /// The value it replaced (none: it was created).
    pub prev: Option<[u8; 32]>,
    /// Grows with every update this device signs.
    pub counter: u64,
    /// The signer's Ed25519 key.
    pub signer: [u8; 32],
}

/// A payload and its signature, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// `postcard` of the [`Payload`].
    pub payload: Vec<u8>,
    /// Ed25519 over `MAGIC` and the payload bytes.
    pub signature: Vec<u8>,
}

/// A ref a push deleted from the remote because its record is signed by a revoked device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// The ref's name.
    pub name: String,
    /// The record it named.
    pub record: ObjectId,
    /// The revoked device that signed it (its name on this device's trust list).
    pub signer: String,
}

/// Verified refs (name → record id, payload), and the refs to retire.
type Verified = (BTreeMap<String, (ObjectId, Payload)>, Vec<Retired>);

/// Whom this device trusts to sign refs.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Trusted keys (name, key), this device's own included.
    pub trusted: Vec<(String, ed25519_dalek::VerifyingKey)>,
    /// Revoked keys (name, key).
    pub revoked: Vec<(String, ed25519_dalek::VerifyingKey)>,
}

/// A [`Backend`] whose refs are signed records (see the module docs).
pub struct Signed<B> {
    inner: B,
    remote_id: Option<String>,
    signing: Option<ed25519_dalek::SigningKey>,
    trust: Trust,
    /// Where the highest counters seen are kept.
    seen_path: PathBuf,
    seen: BTreeMap<String, u64>,
    /// The refs as this handle last verified them (`list_refs`, or its own `update_refs`):
    /// `update_refs` compares against them instead of reading and verifying every record again
    /// (a push lists the refs, then updates them). The backend's compare-and-swap on the
    /// record ids still refuses a ref that moved in between.
    last: Option<BTreeMap<String, (ObjectId, Payload)>>,
    /// Records whose signature verified, by id: the current refs' records as this device last
    /// verified them (kept beside the counters, [`cache_path`]), so that a pull or a push reads
    /// and verifies only the records that changed since.
    verified_before: BTreeMap<ObjectId, Payload>,
    /// The refs this handle retired ([`Signed::retired`]).
    retired: Vec<Retired>,
}

/// The file of records verified before, beside the counters file `seen_path`.
#[must_use]
pub fn cache_path(seen_path: &std::path::Path) -> PathBuf {
    seen_path.with_extension("verified.json")
}

/// Writes a cache file (temp file, then rename; no sync: a cache lost in a crash is read
/// again from the remote, and one that does not parse is ignored).
pub(crate) fn write_cache(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = durable::tmp_path(dir);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The records verified before, from the cache file; empty when it is absent or damaged.
fn read_cache(path: &std::path::Path) -> BTreeMap<ObjectId, Payload> {
    let Ok(bytes) = std::fs::read(path) else {
        return BTreeMap::new();
    };
    let Ok(file) = serde_json::from_slice::<BTreeMap<String, Payload>>(&bytes) else {
        return BTreeMap::new();
    };
    file.into_iter()
        .filter_map(|(hex, p)| Some((ObjectId::from_hex(&hex).ok()?, p)))
        .collect()
}

impl<B> std::fmt::Debug for Signed<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("remote_id", &self.remote_id)
            .field("seen_path", &self.seen_path)
            .finish_non_exhaustive()
    }
}

/// The id of the object that holds a remote's identity (the same on every remote; through an
/// encrypting backend it gets a keyed name like any other).
#[must_use]
pub fn identity_object() -> ObjectId {
    ObjectId(blake3::derive_key("shelldone remote identity 1", b""))
}

/// The remote's identity, created (with `create`) when it has none.
///
/// # Errors
/// A malformed identity object, the backend's errors.
pub fn remote_identity<B: Backend + ?Sized>(inner: &mut B, create: bool) -> Result<Option<String>> {
    let id = identity_object();
    if let Some(bytes) = inner.get(&[id])?.into_iter().next().flatten() {
        return parse_identity(inner.name(), &bytes).map(Some);
    }
    if !create {
        return Ok(None);
    }
    let hex = format!("{:032x}", rand::random::<u128>());
    let mut raw = IDENTITY_MAGIC.to_vec();
    raw.extend_from_slice(hex.as_bytes());
    raw.push(b'\n');
    let mut one = std::iter::once(Ok(Outgoing {
        kind: Kind::Blob,
        id,
        raw,
    }));
    inner.put(&mut one)?;
    Ok(Some(hex))
}

/// The remote's identity (hex) from its identity object.
fn parse_identity(remote: &str, bytes: &[u8]) -> Result<String> {
    bytes
        .strip_prefix(IDENTITY_MAGIC)
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::trim)
        .filter(|h| h.len() == 32 && h.bytes().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_owned)
        .ok_or_else(|| Error::remote(remote, "the remote's identity object is malformed"))
}

/// The object id of a stored record.
#[must_use]
pub fn record_id(bytes: &[u8]) -> ObjectId {
    ObjectId(
        *blake3::Hasher::new_derive_key("shelldone signed ref 1")
            .update(bytes)
            .finalize()
            .as_bytes(),
    )
}

/// Encodes a signed record of `payload`.
///
/// # Errors
/// Never in practice (postcard into a vector).
pub fn sign_record(key: &ed25519_dalek::SigningKey, payload: &Payload) -> Result<Vec<u8>> {
    let p = postcard::to_stdvec(payload).map_err(|e| Error::Internal(format!("record: {e}")))?;
    let mut msg = MAGIC.to_vec();
    msg.extend_from_slice(&p);
    let signature = key.sign(&msg).to_bytes().to_vec();
    let mut out = MAGIC.to_vec();
    out.extend(
        postcard::to_stdvec(&Record {
            payload: p,
            signature,
        })
        .map_err(|e| Error::Internal(format!("record: {e}")))?,
    );
    Ok(out)
}

impl<B: Backend> Signed<B> {
    /// Wraps `inner`. `signing` is needed to push; `seen_path` is this device's file of the
    /// highest counters seen on this remote. The remote's identity is read when it is first
    /// needed, in the same round as the records a listing reads (or taken from the records
    /// this device verified before that the remote still lists), and created by the first
    /// update when the remote has none.
    ///
    /// # Errors
    /// A damaged counters file.
    pub fn open(
        inner: B,
        signing: Option<ed25519_dalek::SigningKey>,
        trust: Trust,
        seen_path: PathBuf,
    ) -> Result<Self> {
        let seen = match std::fs::read(&seen_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::corrupt_file(&seen_path, e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Signed {
            inner,
            remote_id: None,
            signing,
            trust,
            verified_before: read_cache(&cache_path(&seen_path)),
            seen_path,
            seen,
            last: None,
            retired: Vec::new(),
        })
    }

    /// The wrapped backend.
    #[must_use]
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The wrapped backend, mutably.
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    fn refuse(&self, name: &str, why: &str) -> Error {
        Error::remote(
            self.inner.name(),
            format!(
                "ref {name} refused: {why}; the remote requires signed refs, so nothing was changed"
            ),
        )
    }

    /// Every ref with its record id, payload, verified. With `retire` (a push), a ref whose
    /// record carries a valid signature by a revoked key is not refused but returned apart,
    /// for [`Signed::retire`].
    fn verified(&mut self, retire: bool) -> Result<Verified> {
        let listed = self.inner.list_refs()?;
        let mut out = BTreeMap::new();
        let mut retired = Vec::new();
        if listed.is_empty() {
            return Ok((out, retired));
        }
        // Records whose signature verified before (their id is the hash of their bytes) are
        // not read again; every other check below is made on them anew.
        let mut ids: Vec<ObjectId> = listed
            .values()
            .filter(|rid| !self.verified_before.contains_key(*rid))
            .copied()
            .collect();
        // The remote's identity: the one the listed records verified before name (each was
        // checked against the identity the remote had when it was verified, and the remote
        // still lists it); when there is none, read in the same round as the records (one
        // round trip, not two).
        if self.remote_id.is_none() {
            let named: std::collections::BTreeSet<&str> = listed
                .values()
                .filter_map(|rid| self.verified_before.get(rid))
                .map(|p| p.remote.as_str())
                .collect();
            if named.len() == 1 {
                self.remote_id = named.into_iter().next().map(str::to_owned);
            } else {
                ids.push(identity_object());
            }
        }
        let mut got = if ids.is_empty() {
            Vec::new()
        } else {
            self.inner.get(&ids)?
        };
        if self.remote_id.is_none() {
            ids.pop();
            if let Some(bytes) = got.pop().flatten() {
                self.remote_id = Some(parse_identity(self.inner.name(), &bytes)?);
            }
        }
        let Some(remote_id) = self.remote_id.clone() else {
            let first = listed.keys().next().cloned().unwrap_or_default();
            return Err(self.refuse(&first, "the remote has refs but no identity object"));
        };
        let mut fetched: BTreeMap<ObjectId, Option<Vec<u8>>> = ids.into_iter().zip(got).collect();
        for (name, rid) in listed {
            let (p, rec) = match self.verified_before.get(&rid) {
                Some(p) => (p.clone(), None),
                None => {
                    let (p, rec) = self.decode(&name, rid, fetched.remove(&rid).flatten())?;
                    (p, Some(rec))
                }
            };
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&p.signer)
                .map_err(|_| self.refuse(&name, "its signer is not an Ed25519 key"))?;
            let revoked = self
                .trust
                .revoked
                .iter()
                .find(|(_, k)| *k == vk)
                .map(|(w, _)| w.clone());
            let who = match &revoked {
                Some(who) if !retire => {
                    return Err(self.refuse(
                        &name,
                        &format!(
                            "it is signed by '{who}', a revoked device (a push from a device that revoked it, 'shelldone sync push {}', retires that device's refs from the remote)",
                            self.inner.name()
                        ),
                    ));
                }
                Some(who) => who.clone(),
                None => match self.trust.trusted.iter().find(|(_, k)| *k == vk) {
                    Some((who, _)) => who.clone(),
                    None => {
                        return Err(self.refuse(
                            &name,
                            "it is signed by a key that is not on this device's trust list ('shelldone key list')",
                        ));
                    }
                },
            };
            if let Some(rec) = rec {
                let sig = <[u8; 64]>::try_from(rec.signature.as_slice())
                    .map(|s| ed25519_dalek::Signature::from_bytes(&s))
                    .map_err(|_| self.refuse(&name, "its signature is malformed"))?;
                let mut msg = MAGIC.to_vec();
                msg.extend_from_slice(&rec.payload);
                if vk.verify(&msg, &sig).is_err() {
                    return Err(self.refuse(
                        &name,
                        &format!(
                            "its signature (claimed by '{who}') does not verify: forged or damaged"
                        ),
                    ));
                }
            }
            if revoked.is_some() {
                // Signed by a revoked key (the signature verified: not a forgery), on a push:
                // retired by the caller, whatever its name or counter says.
                retired.push(Retired {
                    name,
                    record: rid,
                    signer: who,
                });
                continue;
            }
            if p.name != name {
                return Err(self.refuse(&name, &format!("its record is for ref {}", p.name)));
            }
            if p.remote != remote_id {
                return Err(self.refuse(&name, "its record was signed for another remote"));
            }
            if let Some(&seen) = self.seen.get(&name)
                && p.counter < seen
            {
                return Err(self.refuse(
                    &name,
                    &format!(
                        "it is older than the one this device saw there before (counter {} < {seen}): a replayed ref",
                        p.counter
                    ),
                ));
            }
            out.insert(name, (rid, p));
        }
        Ok((out, retired))
    }

    /// Deletes the refs a push found signed by revoked keys (compare-and-swap on the record
    /// each was found with), and keeps them for [`Signed::retired`].
    fn retire(&mut self, refs: Vec<Retired>) -> Result<()> {
        if refs.is_empty() {
            return Ok(());
        }
        let deletes: Vec<RefUpdate> = refs
            .iter()
            .map(|r| RefUpdate {
                name: r.name.clone(),
                expected: Some(r.record),
                new: None,
            })
            .collect();
        self.inner.update_refs(&deletes)?;
        self.retired.extend(refs);
        Ok(())
    }

    /// The refs this handle deleted from the remote because a revoked device signed them
    /// (a push retires them; a pull refuses them).
    #[must_use]
    pub fn retired(&self) -> &[Retired] {
        &self.retired
    }

    /// A ref's record, read and decoded (its signature is checked by the caller).
    fn decode(
        &self,
        name: &str,
        rid: ObjectId,
        bytes: Option<Vec<u8>>,
    ) -> Result<(Payload, Record)> {
        let Some(bytes) = bytes else {
            return Err(self.refuse(name, "it names no signed record (unsigned)"));
        };
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            return Err(self.refuse(
                name,
                "it is unsigned (it names an object that is not a signed record)",
            ));
        };
        if record_id(&bytes) != rid {
            return Err(self.refuse(name, "its record does not match its id"));
        }
        let rec: Record = postcard::from_bytes(body)
            .map_err(|_| self.refuse(name, "its signed record is malformed"))?;
        let p: Payload = postcard::from_bytes(&rec.payload)
            .map_err(|_| self.refuse(name, "its signed record is malformed"))?;
        Ok((p, rec))
    }

    /// Keeps the records of `refs` (every one verified) as verified, in memory and in the
    /// cache file beside the counters: only the current refs' records, so it stays as small
    /// as the list of refs. A cache file that cannot be written is only a cache.
    fn keep_verified(&mut self, refs: &BTreeMap<String, (ObjectId, Payload)>) {
        let now: BTreeMap<ObjectId, Payload> =
            refs.values().map(|(rid, p)| (*rid, p.clone())).collect();
        if now == self.verified_before {
            return;
        }
        self.verified_before = now;
        let file: BTreeMap<String, &Payload> = self
            .verified_before
            .iter()
            .map(|(rid, p)| (rid.to_hex(), p))
            .collect();
        if let Ok(bytes) = serde_json::to_vec(&file) {
            let _ = write_cache(&cache_path(&self.seen_path), &bytes);
        }
    }

    /// Remembers the highest counters of `refs` (only once every ref verified).
    fn remember(&mut self, refs: &BTreeMap<String, (ObjectId, Payload)>) -> Result<()> {
        let mut changed = false;
        for (name, (_, p)) in refs {
            let e = self.seen.entry(name.clone()).or_insert(0);
            if p.counter > *e {
                *e = p.counter;
                changed = true;
            }
        }
        if changed {
            if let Some(dir) = self.seen_path.parent() {
                fs_err::create_dir_all(dir)?;
            }
            durable::write_atomic(
                &self.seen_path,
                &serde_json::to_vec_pretty(&self.seen).map_err(std::io::Error::other)?,
            )?;
        }
        Ok(())
    }
}

impl<B: Backend> Backend for Signed<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        self.last = None;
        // Only a push retires: it is the one that signs (`signing` is given).
        let (v, retired) = self.verified(self.signing.is_some())?;
        self.retire(retired)?;
        self.remember(&v)?;
        self.keep_verified(&v);
        let out = v
            .iter()
            .map(|(n, (_, p))| (n.clone(), ObjectId(p.value)))
            .collect();
        self.last = Some(v);
        Ok(out)
    }

    fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        self.inner.has(ids)
    }

    fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.get(ids)
    }

    fn get_ahead(&mut self, wanted: &[(ObjectId, u64)]) -> Vec<Option<Vec<u8>>> {
        self.inner.get_ahead(wanted)
    }

    fn put(&mut self, objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
        self.inner.put(objects)
    }

    fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()> {
        let key = self.signing.clone().ok_or_else(|| {
            Error::Internal("a signed remote was opened for reading and then pushed to".into())
        })?;
        let mut now = match self.last.take() {
            Some(v) => v,
            None => {
                let (v, retired) = self.verified(true)?;
                self.retire(retired)?;
                v
            }
        };
        if self.remote_id.is_none() {
            // No ref was listed, so the identity was not needed yet: read it, or create it.
            self.remote_id = remote_identity(&mut self.inner, true)?;
        }
        let remote_id = self
            .remote_id
            .clone()
            .ok_or_else(|| Error::Internal("a signed remote without identity".into()))?;
        let mut counter = self.seen.values().copied().max().unwrap_or(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        counter = counter.saturating_add(1).max(nanos);
        let mut records = Vec::new();
        let mut inner_updates = Vec::new();
        let mut mine = BTreeMap::new();
        for u in updates {
            let cur = now.get(&u.name);
            let found = cur.map(|c| ObjectId(c.1.value));
            if found != u.expected {
                return Err(ref_conflict(u, found));
            }
            let new = match u.new {
                Some(v) => {
                    let p = Payload {
                        remote: remote_id.clone(),
                        name: u.name.clone(),
                        value: v.0,
                        prev: u.expected.map(|e| e.0),
                        counter,
                        signer: key.verifying_key().to_bytes(),
                    };
                    let bytes = sign_record(&key, &p)?;
                    let rid = record_id(&bytes);
                    records.push(Outgoing {
                        kind: Kind::Blob,
                        id: rid,
                        raw: bytes,
                    });
                    mine.insert(u.name.clone(), (rid, p));
                    Some(rid)
                }
                None => None,
            };
            inner_updates.push(RefUpdate {
                name: u.name.clone(),
                expected: cur.map(|c| c.0),
                new,
            });
        }
        self.inner.put_and_update_refs(records, &inner_updates)?;
        self.remember(&mine)?;
        for u in updates.iter().filter(|u| u.new.is_none()) {
            now.remove(&u.name);
        }
        now.extend(mine);
        self.keep_verified(&now);
        self.last = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::{Counting, MemoryBackend};

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&rand::random())
    }

    fn up(name: &str, expected: Option<ObjectId>, new: ObjectId) -> RefUpdate {
        RefUpdate {
            name: name.into(),
            expected,
            new: Some(new),
        }
    }

    #[test]
    fn records_verified_before_are_not_read_again_but_still_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = key();
        let trust = Trust {
            trusted: vec![("a".into(), a.verifying_key())],
            revoked: Vec::new(),
        };
        let mut mem = MemoryBackend::new("m");
        let seen = dir.path().join("a.signed-refs.json");
        let mut sa = Signed::open(&mut mem, Some(a.clone()), trust.clone(), seen.clone()).unwrap();
        sa.update_refs(&[up("a/head", None, ObjectId([1; 32]))])
            .unwrap();
        drop(sa);
        let rid = mem.clone().list_refs().unwrap()["a/head"];
        let record = mem.objects_mut().remove(&rid).unwrap();
        // The record is gone from the remote: the cache answers for it (same id, same bytes).
        let mut s = Signed::open(&mut mem, None, trust.clone(), seen.clone()).unwrap();
        assert_eq!(s.list_refs().unwrap()["a/head"], ObjectId([1; 32]));
        drop(s);
        // Trust is checked anew: a revoked signer is refused even from the cache.
        let revoked = Trust {
            trusted: Vec::new(),
            revoked: vec![("a".into(), a.verifying_key())],
        };
        let mut s = Signed::open(&mut mem, None, revoked, seen.clone()).unwrap();
        let e = s.list_refs().unwrap_err().to_string();
        assert!(e.contains("revoked"), "{e}");
        drop(s);
        // A damaged cache is ignored: the record is read again (and here it is missing).
        std::fs::write(cache_path(&seen), b"{not json").unwrap();
        let mut s = Signed::open(&mut mem, None, trust.clone(), seen.clone()).unwrap();
        let e = s.list_refs().unwrap_err().to_string();
        assert!(e.contains("unsigned"), "{e}");
        drop(s);
        mem.objects_mut().insert(rid, record);
        let mut s = Signed::open(&mut mem, None, trust, seen).unwrap();
        assert_eq!(s.list_refs().unwrap()["a/head"], ObjectId([1; 32]));
    }

    #[test]
    fn refused_unsigned_forged_untrusted_revoked_and_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(), key());
        let trust = Trust {
            trusted: vec![
                ("a".into(), a.verifying_key()),
                ("b".into(), b.verifying_key()),
            ],
            revoked: Vec::new(),
        };
        let mut mem = MemoryBackend::new("m");
        let seen_a = dir.path().join("a.json");
        let seen_b = dir.path().join("b.json");
        let (v1, v2) = (ObjectId([1; 32]), ObjectId([2; 32]));
        let mut sa =
            Signed::open(&mut mem, Some(a.clone()), trust.clone(), seen_a.clone()).unwrap();
        sa.update_refs(&[up("a/head", None, v1)]).unwrap();
        let old_record = sa.inner_mut().clone().list_refs().unwrap()["a/head"];
        sa.update_refs(&[up("a/head", Some(v1), v2)]).unwrap();
        drop(sa);
        // B reads it.
        let mut sb = Signed::open(&mut mem, None, trust.clone(), seen_b.clone()).unwrap();
        assert_eq!(sb.list_refs().unwrap()["a/head"], v2);
        drop(sb);
        // Replayed: the remote puts back the older record.
        let mut replayed = mem.clone();
        replayed.refs_mut().insert("a/head".into(), old_record);
        let mut sb = Signed::open(&mut replayed, None, trust.clone(), seen_b.clone()).unwrap();
        let e = sb.list_refs().unwrap_err().to_string();
        assert!(e.contains("replayed"), "{e}");
        // Unsigned: a plain id.
        let mut plain = mem.clone();
        plain.refs_mut().insert("a/head".into(), v1);
        let mut s = Signed::open(&mut plain, None, trust.clone(), dir.path().join("c")).unwrap();
        assert!(s.list_refs().unwrap_err().to_string().contains("unsigned"));
        // Forged: a record claiming A's key, signed by another.
        let mut forged = mem.clone();
        let rid = identity_object();
        let remote = String::from_utf8(forged.objects()[&rid].clone()).unwrap();
        let remote = remote.trim().rsplit('\n').next().unwrap().to_owned();
        let p = Payload {
            remote,
            name: "a/head".into(),
            value: [9; 32],
            prev: None,
            counter: u64::MAX,
            signer: a.verifying_key().to_bytes(),
        };
        let bytes = sign_record(&key(), &p).unwrap();
        let fid = record_id(&bytes);
        forged.objects_mut().insert(fid, bytes);
        forged.refs_mut().insert("a/head".into(), fid);
        let mut s = Signed::open(&mut forged, None, trust.clone(), dir.path().join("d")).unwrap();
        let e = s.list_refs().unwrap_err().to_string();
        assert!(e.contains("does not verify"), "{e}");
        // Revoked: A's key revoked on this device.
        let revoked = Trust {
            trusted: vec![("b".into(), b.verifying_key())],
            revoked: vec![("a".into(), a.verifying_key())],
        };
        let mut s = Signed::open(&mut mem, None, revoked, dir.path().join("e")).unwrap();
        let e = s.list_refs().unwrap_err().to_string();
        assert!(e.contains("revoked"), "{e}");
        // Untrusted: nobody told this device about A.
        let stranger = Trust {
            trusted: vec![("b".into(), b.verifying_key())],
            revoked: Vec::new(),
        };
        let mut s = Signed::open(&mut mem, None, stranger, dir.path().join("f")).unwrap();
        assert!(
            s.list_refs()
                .unwrap_err()
                .to_string()
                .contains("trust list")
        );
    }

    #[test]
    fn the_identity_is_read_with_the_records_or_taken_from_the_verified_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(), key());
        let trust = Trust {
            trusted: vec![
                ("a".into(), a.verifying_key()),
                ("b".into(), b.verifying_key()),
            ],
            revoked: Vec::new(),
        };
        let mut mem = MemoryBackend::new("m");
        // A push to an empty remote creates the identity with its first update.
        let seen_a = dir.path().join("a.json");
        let mut sa = Signed::open(&mut mem, Some(a.clone()), trust.clone(), seen_a).unwrap();
        assert!(sa.list_refs().unwrap().is_empty());
        sa.update_refs(&[up("a/head", None, ObjectId([1; 32]))])
            .unwrap();
        drop(sa);
        assert!(mem.objects().contains_key(&identity_object()));
        // B reads A's new record and the identity in one round.
        let seen_b = dir.path().join("b.json");
        let mut counted = Counting {
            inner: &mut mem,
            gets: 0,
        };
        let mut sb = Signed::open(&mut counted, None, trust.clone(), seen_b.clone()).unwrap();
        assert_eq!(sb.list_refs().unwrap()["a/head"], ObjectId([1; 32]));
        drop(sb);
        assert_eq!(counted.gets, 1, "records and identity in one round");
        // Nothing new: no read at all; B's push signs for the identity the records named.
        counted.gets = 0;
        let mut sb = Signed::open(&mut counted, Some(b.clone()), trust.clone(), seen_b).unwrap();
        sb.list_refs().unwrap();
        sb.update_refs(&[up("b/head", None, ObjectId([2; 32]))])
            .unwrap();
        drop(sb);
        assert_eq!(counted.gets, 0, "everything was verified before");
        // A third device, which verified nothing, accepts B's record: it names this remote.
        let mut sc = Signed::open(&mut mem, None, trust, dir.path().join("c.json")).unwrap();
        let refs = sc.list_refs().unwrap();
        assert_eq!(refs["b/head"], ObjectId([2; 32]));
        assert_eq!(refs.len(), 2);
    }

    #[test]
    fn a_push_retires_refs_a_revoked_key_signed_and_refuses_forged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(), key());
        let both = Trust {
            trusted: vec![
                ("a".into(), a.verifying_key()),
                ("b".into(), b.verifying_key()),
            ],
            revoked: Vec::new(),
        };
        let mut mem = MemoryBackend::new("m");
        let mut sa = Signed::open(
            &mut mem,
            Some(a.clone()),
            both.clone(),
            dir.path().join("a"),
        )
        .unwrap();
        sa.update_refs(&[up("a/head", None, ObjectId([1; 32]))])
            .unwrap();
        drop(sa);
        let mut sb = Signed::open(&mut mem, Some(b.clone()), both, dir.path().join("b")).unwrap();
        sb.list_refs().unwrap();
        sb.update_refs(&[
            up("b/head", None, ObjectId([2; 32])),
            up("b/sessions/x", None, ObjectId([3; 32])),
        ])
        .unwrap();
        drop(sb);
        // A revokes B: a pull refuses B's refs and names the way out; nothing is deleted.
        let revoked = Trust {
            trusted: vec![("a".into(), a.verifying_key())],
            revoked: vec![("b".into(), b.verifying_key())],
        };
        let seen_a = dir.path().join("a2");
        let mut pull = Signed::open(&mut mem, None, revoked.clone(), seen_a.clone()).unwrap();
        let e = pull.list_refs().unwrap_err().to_string();
        assert!(e.contains("revoked") && e.contains("sync push m"), "{e}");
        drop(pull);
        assert_eq!(mem.clone().list_refs().unwrap().len(), 3);
        // A record that claims B's key but does not verify is a forgery: a push refuses it
        // and deletes nothing.
        let mut forged_remote = mem.clone();
        let remote = remote_identity(&mut forged_remote, false).unwrap().unwrap();
        let p = Payload {
            remote,
            name: "a/sessions/y".into(),
            value: [9; 32],
            prev: None,
            counter: 1,
            signer: b.verifying_key().to_bytes(),
        };
        let bytes = sign_record(&key(), &p).unwrap();
        let fid = record_id(&bytes);
        forged_remote.objects_mut().insert(fid, bytes);
        forged_remote.refs_mut().insert("a/sessions/y".into(), fid);
        let mut push = Signed::open(
            &mut forged_remote,
            Some(a.clone()),
            revoked.clone(),
            seen_a.clone(),
        )
        .unwrap();
        let e = push.list_refs().unwrap_err().to_string();
        assert!(e.contains("does not verify"), "{e}");
        drop(push);
        assert_eq!(forged_remote.clone().list_refs().unwrap().len(), 4);
        // A's push retires B's two refs and keeps its own.
        let mut push = Signed::open(&mut mem, Some(a.clone()), revoked.clone(), seen_a).unwrap();
        let refs = push.list_refs().unwrap();
        assert_eq!(refs.keys().collect::<Vec<_>>(), vec!["a/head"]);
        let retired: Vec<(&str, &str)> = push
            .retired()
            .iter()
            .map(|r| (r.name.as_str(), r.signer.as_str()))
            .collect();
        assert_eq!(retired, vec![("b/head", "b"), ("b/sessions/x", "b")]);
        push.update_refs(&[up("a/head", Some(ObjectId([1; 32])), ObjectId([4; 32]))])
            .unwrap();
        drop(push);
        let left = mem.clone().list_refs().unwrap();
        assert_eq!(left.keys().collect::<Vec<_>>(), vec!["a/head"]);
        // A device that revoked B too now pulls cleanly.
        let mut pull = Signed::open(&mut mem, None, revoked, dir.path().join("c")).unwrap();
        assert_eq!(pull.list_refs().unwrap()["a/head"], ObjectId([4; 32]));
    }
}
