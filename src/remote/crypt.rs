//! The encryption decorator: [`Encrypted`] wraps any [`Backend`] so that the backend receives
//! only ciphertext and names that reveal nothing (ADR 0010).
//!
//! * **Object names** are keyed: the id `X` of a stored object becomes
//!   `blake3::keyed_hash(names_key, X)`. Two devices that share the remote's keys compute the
//!   same name for the same object, so dedup still works; without the key a name says nothing
//!   about the content.
//! * **Contents** are sealed with XChaCha20-Poly1305 under the key of the current *epoch*;
//!   the associated data is the keyed name and the epoch, so an object cannot be moved to
//!   another name (nor a ciphertext to another epoch). The plaintext is the stored frame, its
//!   length in front, padded with zeros to a Padmé bucket (at most 12 % more), so sizes leak
//!   only their bucket. The nonce is a keyed hash of the name and the frame: the same frame
//!   under the same epoch gives the same bytes on every device (an encrypted git remote's
//!   trees converge), and a nonce never repeats for different plaintexts.
//! * **Refs**: `<device>/head` is stored as `%e<keyed device>/head`, a session ref as
//!   `%e<keyed device>/sessions/<keyed ref name>`; the value is the keyed name of a sealed
//!   record holding the real name and value. A device still writes only under its own
//!   namespace.
//! * **Key file**: `%keys/head` names the remote's key file, the data keys (one per epoch, and
//!   the names key) age-encrypted to every trusted device and the paper recovery key, and
//!   signed with the Ed25519 key of the device that wrote it (restic's key files are the
//!   model: a data key wrapped per reader). Adding a device re-wraps it; revoking one starts a
//!   new epoch, whose key the revoked device never receives (what was written before stays
//!   readable with the old keys, kept wrapped for the devices that remain).
//!
//! Byte layout of a sealed object: `0x01`, epoch (u32 LE), nonce (24 bytes), ciphertext and
//! tag. The key file: `shelldone-keys 1\n`, the signer's Ed25519 key (32 bytes), the signature
//! (64 bytes) over `shelldone-keys 1\n` and the age file, then the age file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signer, Verifier};
use objects_format::{Kind, ObjectId};
use serde::{Deserialize, Serialize};

use super::{Backend, Outgoing, RefUpdate, ref_conflict};
use crate::error::{Error, Result};

/// The ref that names the key file.
pub const KEYS_REF: &str = "%keys/head";
/// The prefix of an encrypted device namespace.
const NS_PREFIX: &str = "%e";
/// Magic of the key file.
const KEYS_MAGIC: &[u8] = b"shelldone-keys 1\n";
/// Magic of a sealed ref record's plaintext.
const REF_MAGIC: &[u8] = b"shelldone-ref 1\n";
/// Version byte of a sealed object.
const SEALED_V1: u8 = 1;
/// Header of a sealed object: version, epoch, nonce.
const HEADER: usize = 1 + 4 + 24;
/// The smallest padded plaintext: every object is at least this big on the remote.
const MIN_PADDED: usize = 256;

/// The remote's keys, as the key file holds them (its decrypted content).
#[derive(Clone, Serialize, Deserialize)]
pub struct Keyring {
    /// Key of the object and ref names (never rotated: dedup works across epochs).
    names_key: [u8; 32],
    /// One data key per epoch; the last is the one new objects are sealed with.
    epochs: Vec<[u8; 32]>,
    /// The age recipients (`age1…`) the file is wrapped for.
    pub recipients: Vec<String>,
    /// Recipients revoked once: never wrapped for again, whatever a stale trust list says.
    pub revoked: Vec<String>,
    /// The Ed25519 keys of the devices trusted when it was written (name, key): what a new
    /// device, which knows no one yet, checks signatures with.
    pub signers: Vec<(String, [u8; 32])>,
    /// Signing keys revoked once.
    pub revoked_signers: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("epochs", &self.epochs.len())
            .field("recipients", &self.recipients)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// The epoch new objects are sealed with.
    #[must_use]
    pub fn epoch(&self) -> u32 {
        u32::try_from(self.epochs.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }
}

/// What this device brings to an encrypted remote: its keys, and who it trusts (from the vault).
pub struct Access {
    /// The age identity that opens the key file: this device's, or the paper recovery key's
    /// on a device that has no keys yet (`key import --remote`, docs/keys.md).
    pub identity: age::x25519::Identity,
    /// The paper recovery key, when it was given beside this device's keys: it opens the key
    /// file too (the key file is wrapped for it), so a device whose keys are not readers yet
    /// can re-wrap it for them.
    pub recovery: Option<age::x25519::Identity>,
    /// This device's signing key (signs the key file it writes); None on a device that has no
    /// keys yet, which may only read ([`Mode::Read`]).
    pub signing: Option<ed25519_dalek::SigningKey>,
    /// Who the key file must be wrapped for: this device, every trusted unrevoked device, the
    /// paper key (`age1…`).
    pub recipients: Vec<String>,
    /// Age recipients of revoked devices.
    pub revoked: Vec<String>,
    /// Signing keys this device trusts (name, key), this device's own included.
    pub signers: Vec<(String, ed25519_dalek::VerifyingKey)>,
    /// Signing keys of revoked devices.
    pub revoked_signers: Vec<ed25519_dalek::VerifyingKey>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("identity", &self.identity.to_public().to_string())
            .field("recipients", &self.recipients)
            .finish_non_exhaustive()
    }
}

/// Whether opening may write the key file (a push) or must change nothing (pull, status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read only: an empty remote stays empty, a key file is never rewritten.
    Read,
    /// Creates the key file on a new remote; re-wraps it when devices were trusted or revoked.
    Write,
}

/// What opening did to the key file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChange {
    /// The key file was created (a new remote).
    pub created: bool,
    /// Recipients the key file was re-wrapped to include.
    pub added: Vec<String>,
    /// Recipients removed (revoked): a new epoch started.
    pub rotated: Vec<String>,
}

/// A [`Backend`] that encrypts everything it passes to `inner` (see the module docs).
pub struct Encrypted<B> {
    inner: B,
    keys: Option<Keyring>,
    change: KeyChange,
    /// The refs as this handle last read them (`list_refs`, or its own `update_refs`): outer
    /// name → (inner name, inner value, value). `update_refs` starts from them instead of
    /// reading and opening every record again; the backend's compare-and-swap on the inner
    /// values still refuses a ref that moved in between.
    last: Option<RefsInner>,
    /// The backend's refs as [`Encrypted::open`] listed them (to find the key file): the
    /// first refs read uses them instead of listing again (a push or a pull lists the refs
    /// right after opening; on S3 a listing reads every ref).
    listed: Option<BTreeMap<String, ObjectId>>,
    /// Ref records opened before, by their inner name: (ref name, value). A record's name is a
    /// keyed hash of its content, so the same name is the same record.
    opened_before: BTreeMap<ObjectId, (String, ObjectId)>,
    /// Where they are kept ([`Encrypted::with_cache`]).
    cache: Option<PathBuf>,
}

/// Every encrypted ref: outer name → (inner name, inner value, value).
type RefsInner = BTreeMap<String, (String, ObjectId, ObjectId)>;

impl<B> std::fmt::Debug for Encrypted<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encrypted")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

fn derive(context: &str, key: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(context, key)
}

/// Padmé (Nikitin et al., PETS 2019): rounds `len` up so that only O(log log len) bits of it
/// remain, at most 12 % more.
#[must_use]
pub fn padme(len: usize) -> usize {
    let len = len.max(MIN_PADDED);
    let e = usize::BITS - 1 - len.leading_zeros();
    let s = u32::BITS - e.leading_zeros();
    let last_bits = e - s;
    let mask = (1usize << last_bits) - 1;
    (len + mask) & !mask
}

impl<B: Backend> Encrypted<B> {
    /// Opens `inner`: reads and checks the key file (its signature, then opens it with this
    /// device's identity); with [`Mode::Write`], creates it on an empty remote and re-wraps it
    /// when the trust list added or revoked devices. Nothing is written before the key file
    /// opened.
    ///
    /// # Errors
    /// [`Error::VaultLocked`] when this device cannot open the key file (not trusted yet: the
    /// join flow of docs/sync.md); [`Error::Remote`] for a key file that is not signed by a
    /// trusted device or does not parse; the backend's errors.
    pub fn open(inner: B, access: &Access, mode: Mode) -> Result<Self> {
        Self::open_cached(inner, access, mode, None)
    }

    /// [`Encrypted::open`], keeping a copy of the key file in `key_cache` (a local file): the
    /// key file is an object named by a hash of its bytes, and `%keys/head` names it, so a
    /// copy whose hash is the name the ref holds now is the key file, and is not read from the
    /// remote again. Every check is made on it all the same (its signature, its signer's
    /// trust, opening it with this device's identity); a copy that does not hash to the
    /// current name (damaged, or the key file changed) is ignored and replaced. The copy is
    /// what the remote holds: signed ciphertext, no key in the clear.
    ///
    /// # Errors
    /// As [`Encrypted::open`].
    pub fn open_cached(
        mut inner: B,
        access: &Access,
        mode: Mode,
        key_cache: Option<PathBuf>,
    ) -> Result<Self> {
        let key_cache = key_cache.as_deref();
        let refs = inner.list_refs()?;
        let current = refs.get(KEYS_REF).copied();
        let mut change = KeyChange::default();
        let keys = match current {
            None => {
                if mode == Mode::Read {
                    None
                } else {
                    let k = Keyring {
                        names_key: rand::random(),
                        epochs: vec![rand::random()],
                        recipients: Vec::new(),
                        revoked: Vec::new(),
                        signers: Vec::new(),
                        revoked_signers: Vec::new(),
                    };
                    let k = rewrap(k, access, &mut change);
                    write_key_file(&mut inner, &k, access, None, key_cache)?;
                    change.created = true;
                    Some(k)
                }
            }
            Some(id) => {
                let k = read_key_file(&mut inner, id, access, key_cache)?;
                if mode == Mode::Write {
                    let before = (k.recipients.clone(), k.revoked.clone(), k.signers.clone());
                    let k2 = rewrap(k, access, &mut change);
                    if (&k2.recipients, &k2.revoked, &k2.signers)
                        != (&before.0, &before.1, &before.2)
                    {
                        write_key_file(&mut inner, &k2, access, Some(id), key_cache)?;
                    }
                    Some(k2)
                } else {
                    Some(k)
                }
            }
        };
        Ok(Encrypted {
            inner,
            keys,
            change,
            last: None,
            listed: Some(refs),
            opened_before: BTreeMap::new(),
            cache: None,
        })
    }

    /// What opening did to the key file.
    #[must_use]
    pub fn key_change(&self) -> &KeyChange {
        &self.change
    }

    /// The keys, once the key file exists.
    #[must_use]
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keys.as_ref()
    }

    /// The wrapped backend.
    #[must_use]
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The wrapped backend, mutably (tests tamper with it).
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    fn keys(&self) -> Result<&Keyring> {
        self.keys.as_ref().ok_or_else(|| {
            Error::remote(
                self.inner.name(),
                "the encrypted remote has no key file yet (nothing was pushed to it)",
            )
        })
    }

    /// Every encrypted ref: outer name → (inner name, inner value, value).
    fn refs_inner(&mut self) -> Result<RefsInner> {
        let mut out = BTreeMap::new();
        let Some(keys) = self.keys.clone() else {
            return Ok(out);
        };
        let listed = match self.listed.take() {
            Some(l) => l,
            None => self.inner.list_refs()?,
        };
        let wanted: Vec<(String, ObjectId)> = listed
            .into_iter()
            .filter(|(n, _)| n.starts_with(NS_PREFIX))
            .collect();
        // A record opened before is not read again: its name is a keyed hash of its content.
        let ids: Vec<ObjectId> = wanted
            .iter()
            .map(|w| w.1)
            .filter(|v| !self.opened_before.contains_key(v))
            .collect();
        let got = self.inner.get(&ids)?;
        let mut fetched: BTreeMap<ObjectId, Option<Vec<u8>>> = ids.into_iter().zip(got).collect();
        for (iname, ivalue) in wanted {
            if let Some((name, value)) = self.opened_before.get(&ivalue)
                && inner_ref_name(&keys, name)? == iname
            {
                out.insert(name.clone(), (iname, ivalue, *value));
                continue;
            }
            let frame = fetched.remove(&ivalue).flatten().ok_or_else(|| {
                Error::remote(
                    self.inner.name(),
                    format!(
                        "encrypted ref {iname} names a record the remote does not hold; refused (nothing was changed)"
                    ),
                )
            })?;
            let plain = open_sealed(&keys, &ivalue, &frame).map_err(|why| {
                Error::remote(
                    self.inner.name(),
                    format!("encrypted ref {iname} refused: {why} (nothing was changed)"),
                )
            })?;
            let (name, value) = parse_ref_record(&plain).ok_or_else(|| {
                Error::remote(
                    self.inner.name(),
                    format!("encrypted ref {iname} holds a malformed record; refused"),
                )
            })?;
            // A record moved to another namespace (a hostile remote's swap) is refused.
            if inner_ref_name(&keys, &name)? != iname {
                return Err(Error::remote(
                    self.inner.name(),
                    format!(
                        "encrypted ref {iname} holds the record of another ref; refused (nothing was changed)"
                    ),
                ));
            }
            out.insert(name, (iname, ivalue, value));
        }
        self.keep_opened(&out);
        Ok(out)
    }

    /// Keeps the records of `refs` (every one opened) as opened, in memory and in the cache
    /// file: only the current refs' records. A cache file that cannot be written is only a
    /// cache.
    fn keep_opened(&mut self, refs: &RefsInner) {
        let now: BTreeMap<ObjectId, (String, ObjectId)> = refs
            .iter()
            .map(|(n, (_, rname, v))| (*rname, (n.clone(), *v)))
            .collect();
        if now == self.opened_before {
            return;
        }
        self.opened_before = now;
        let Some(path) = &self.cache else { return };
        let file: BTreeMap<String, (&str, String)> = self
            .opened_before
            .iter()
            .map(|(r, (n, v))| (r.to_hex(), (n.as_str(), v.to_hex())))
            .collect();
        if let Ok(bytes) = serde_json::to_vec(&file) {
            let _ = super::sign::write_cache(path, &bytes);
        }
    }

    /// Keeps the refs records this device opened in `path` (a cache, beside the remote's
    /// other local files), so that a later open reads only the records that changed since.
    #[must_use]
    pub fn with_cache(mut self, path: PathBuf) -> Self {
        self.opened_before = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, (String, String)>>(&b).ok())
            .map(|m| {
                m.into_iter()
                    .filter_map(|(r, (n, v))| {
                        Some((
                            ObjectId::from_hex(&r).ok()?,
                            (n, ObjectId::from_hex(&v).ok()?),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.cache = Some(path);
        self
    }
}

/// The keyring after this device's view of the trust list: recipients added, revoked ones
/// removed (then a new epoch begins), never re-adding one that was revoked.
fn rewrap(mut k: Keyring, access: &Access, change: &mut KeyChange) -> Keyring {
    let mut revoked: BTreeSet<String> = k.revoked.iter().cloned().collect();
    revoked.extend(access.revoked.iter().cloned());
    let mut recipients: Vec<String> = Vec::new();
    for r in k.recipients.iter().chain(access.recipients.iter()) {
        if !revoked.contains(r) && !recipients.contains(r) {
            recipients.push(r.clone());
        }
    }
    change.added = recipients
        .iter()
        .filter(|r| !k.recipients.contains(r))
        .cloned()
        .collect();
    change.rotated = k
        .recipients
        .iter()
        .filter(|r| !recipients.contains(r))
        .cloned()
        .collect();
    if !change.rotated.is_empty() {
        k.epochs.push(rand::random());
    }
    let mut revoked_signers: BTreeSet<[u8; 32]> = k.revoked_signers.iter().copied().collect();
    revoked_signers.extend(access.revoked_signers.iter().map(|v| v.to_bytes()));
    let mut signers: Vec<(String, [u8; 32])> = Vec::new();
    for (n, v) in k.signers.iter().cloned().chain(
        access
            .signers
            .iter()
            .map(|(n, v)| (n.clone(), v.to_bytes())),
    ) {
        if !revoked_signers.contains(&v) && !signers.iter().any(|s| s.1 == v) {
            signers.push((n, v));
        }
    }
    k.recipients = recipients;
    k.revoked = revoked.into_iter().collect();
    k.signers = signers;
    k.revoked_signers = revoked_signers.into_iter().collect();
    k
}

/// The name of a key file: a hash of its bytes.
fn key_file_id(file: &[u8]) -> ObjectId {
    ObjectId(
        *blake3::Hasher::new_derive_key("shelldone encrypted remote key file 1")
            .update(file)
            .finalize()
            .as_bytes(),
    )
}

fn write_key_file<B: Backend>(
    inner: &mut B,
    k: &Keyring,
    access: &Access,
    expected: Option<ObjectId>,
    cache: Option<&Path>,
) -> Result<()> {
    use std::io::Write;
    let signing = access.signing.as_ref().ok_or_else(|| {
        Error::Usage(
            "writing an encrypted remote's key file needs this device's keys: run 'shelldone key init' (or 'shelldone key import') first; nothing was changed".into(),
        )
    })?;
    let plain = postcard::to_stdvec(k).map_err(|e| Error::Internal(format!("keyring: {e}")))?;
    let parsed: Vec<age::x25519::Recipient> = k
        .recipients
        .iter()
        .map(|r| {
            r.parse::<age::x25519::Recipient>()
                .map_err(|e| Error::Usage(format!("not an age recipient: {r}: {e}")))
        })
        .collect::<Result<_>>()?;
    let enc = age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| Error::Internal(format!("age encryption: {e}")))?;
    let mut agefile = Vec::new();
    let mut w = enc.wrap_output(&mut agefile)?;
    w.write_all(&plain)?;
    w.finish()?;
    let mut signed = KEYS_MAGIC.to_vec();
    signed.extend_from_slice(&agefile);
    let sig = signing.sign(&signed);
    let mut file = KEYS_MAGIC.to_vec();
    file.extend_from_slice(signing.verifying_key().as_bytes());
    file.extend_from_slice(&sig.to_bytes());
    file.extend_from_slice(&agefile);
    let id = key_file_id(&file);
    let copy = cache.map(|c| (c, file.clone()));
    let mut one = std::iter::once(Ok(Outgoing {
        kind: Kind::Blob,
        id,
        raw: file,
    }));
    inner.put(&mut one)?;
    inner.update_refs(&[RefUpdate {
        name: KEYS_REF.into(),
        expected,
        new: Some(id),
    }])?;
    if let Some((path, file)) = copy {
        // Only a cache: one that cannot be written is read from the remote next time.
        let _ = super::sign::write_cache(path, &file);
    }
    Ok(())
}

fn read_key_file<B: Backend>(
    inner: &mut B,
    id: ObjectId,
    access: &Access,
    cache: Option<&Path>,
) -> Result<Keyring> {
    let name = inner.name().to_owned();
    let bad = |why: &str| {
        Error::remote(
            &name,
            format!("the encrypted remote's key file {why}; refused (nothing was changed)"),
        )
    };
    // The copy kept before, when it is the key file the ref names now (a damaged or older
    // copy hashes to another name): every check below is made on it as on a fresh read.
    let kept = cache
        .and_then(|c| std::fs::read(c).ok())
        .filter(|f| key_file_id(f) == id);
    let file = match kept {
        Some(f) => f,
        None => {
            let f = inner
                .get(&[id])?
                .into_iter()
                .next()
                .flatten()
                .ok_or_else(|| bad("is missing"))?;
            if key_file_id(&f) != id {
                return Err(bad("does not match its name (damaged or replaced)"));
            }
            if let Some(c) = cache {
                let _ = super::sign::write_cache(c, &f);
            }
            f
        }
    };
    if let Some(rest) = file.strip_prefix(b"shelldone-keys ".as_slice())
        && !file.starts_with(KEYS_MAGIC)
    {
        // Another version of the key file: named, never rewritten.
        let v: String = String::from_utf8_lossy(rest)
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return Err(bad(&format!(
            "is key file format {v}, this shelldone reads up to 1; upgrade shelldone"
        )));
    }
    let body = file
        .strip_prefix(KEYS_MAGIC)
        .filter(|b| b.len() > 96)
        .ok_or_else(|| bad("is not a shelldone key file"))?;
    let signer: [u8; 32] = body[..32].try_into().expect("32 bytes");
    let sig = ed25519_dalek::Signature::from_bytes(&body[32..96].try_into().expect("64 bytes"));
    let agefile = &body[96..];
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&signer)
        .map_err(|_| bad("names a signing key that is not one"))?;
    let mut signed = KEYS_MAGIC.to_vec();
    signed.extend_from_slice(agefile);
    vk.verify(&signed, &sig)
        .map_err(|_| bad("has a signature that does not verify (forged or damaged)"))?;
    if access.revoked_signers.contains(&vk) {
        return Err(bad("was signed by a revoked device"));
    }
    let plain = {
        use std::io::Read;
        let not_ours = || {
            Error::VaultLocked(if access.recovery.is_some() || access.signing.is_none() {
                format!(
                    "the paper key given does not open the key file of the encrypted remote '{name}' (a paper key of another vault, or one replaced by a newer 'key export --paper'?); nothing was changed"
                )
            } else {
                format!(
                    "this device ({}) cannot open the key file of the encrypted remote '{name}': it is not one of its readers yet. On a trusted device run 'shelldone key trust NAME <this device's keys from shelldone key show>' and 'shelldone sync push', then pull again (or, with every device lost, 'shelldone key import --remote {name}' with the paper key); nothing was changed",
                    access.identity.to_public()
                )
            })
        };
        let d = age::Decryptor::new_buffered(agefile).map_err(|_| bad("is not an age file"))?;
        let identities = std::iter::once(&access.identity)
            .chain(access.recovery.as_ref())
            .map(|i| i as &dyn age::Identity);
        let mut r = d.decrypt(identities).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::KeyDecryptionFailed => {
                not_ours()
            }
            _ => bad("does not decrypt"),
        })?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .map_err(|_| bad("does not decrypt"))?;
        out
    };
    let k: Keyring = postcard::from_bytes(&plain).map_err(|_| bad("does not parse"))?;
    if k.epochs.is_empty() {
        return Err(bad("holds no data key"));
    }
    // Who may write the key file: a device this one trusts; or, on a device that trusts no
    // one but itself yet (a device joining), one of the signers the file itself lists (trust
    // on first use: `shelldone key list` after the first pull shows whom).
    let trusted = access.signers.iter().any(|(_, v)| *v == vk);
    let knows_no_one = access.signers.len() <= 1;
    let listed = k.signers.iter().any(|(_, v)| *v == signer);
    if !(trusted || knows_no_one && listed) {
        return Err(bad("was signed by a device this one does not trust"));
    }
    Ok(k)
}

fn open_sealed(
    keys: &Keyring,
    name: &ObjectId,
    frame: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    if frame.len() >= HEADER + 16 && frame[0] > SEALED_V1 {
        return Err(format!(
            "sealed object format {}, this shelldone reads up to {SEALED_V1}; upgrade shelldone",
            frame[0]
        ));
    }
    if frame.len() < HEADER + 16 || frame[0] != SEALED_V1 {
        return Err("not an encrypted object of this format".into());
    }
    let epoch = u32::from_le_bytes(frame[1..5].try_into().expect("4 bytes"));
    let key = keys
        .epochs
        .get(epoch as usize)
        .ok_or_else(|| format!("sealed under epoch {epoch}, which the key file does not hold"))?;
    let cipher =
        XChaCha20Poly1305::new(&derive("shelldone encrypted remote 1 content", key).into());
    let nonce = XNonce::from_slice(&frame[5..HEADER]);
    let padded = cipher
        .decrypt(
            nonce,
            Payload {
                msg: &frame[HEADER..],
                aad: &aad(name, epoch),
            },
        )
        .map_err(|_| {
            "it fails authentication (changed on the remote, or put under another name)".to_owned()
        })?;
    let len =
        u32::from_le_bytes(padded.get(..4).ok_or("too short")?.try_into().expect("4")) as usize;
    padded
        .get(4..4 + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "its length is out of bounds".into())
}

fn aad(name: &ObjectId, epoch: u32) -> Vec<u8> {
    let mut a = Vec::with_capacity(37);
    a.push(SEALED_V1);
    a.extend_from_slice(&epoch.to_le_bytes());
    a.extend_from_slice(&name.0);
    a
}

fn seal(keys: &Keyring, name: &ObjectId, raw: &[u8]) -> Result<Vec<u8>> {
    let epoch = keys.epoch();
    let key = &keys.epochs[epoch as usize];
    let len = u32::try_from(raw.len()).map_err(|_| Error::Internal("object over 4 GiB".into()))?;
    // The bucket, unless it would take the object over the size every backend accepts.
    let mut to = padme(raw.len() + 4);
    if (to + HEADER + 16) as u64 > super::verify::MAX_RAW_OBJECT {
        to = raw.len() + 4;
    }
    let mut padded = Vec::with_capacity(to);
    padded.extend_from_slice(&len.to_le_bytes());
    padded.extend_from_slice(raw);
    padded.resize(to, 0);
    let nonce_key = derive("shelldone encrypted remote 1 nonce", key);
    let mut h = blake3::Hasher::new_keyed(&nonce_key);
    h.update(&name.0);
    h.update(raw);
    let mut nonce = [0u8; 24];
    h.finalize_xof().fill(&mut nonce);
    let cipher =
        XChaCha20Poly1305::new(&derive("shelldone encrypted remote 1 content", key).into());
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &padded,
                aad: &aad(name, epoch),
            },
        )
        .map_err(|_| Error::Internal("encryption failed".into()))?;
    let mut out = Vec::with_capacity(HEADER + ct.len());
    out.push(SEALED_V1);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Object `o` as the backend stores it: under its keyed name, sealed. The kind stays with us:
/// a backend that kept kinds apart would tell them.
fn sealed(keys: &Keyring, o: &Outgoing) -> Result<Outgoing> {
    let name = object_name(keys, &o.id);
    Ok(Outgoing {
        kind: Kind::Blob,
        raw: seal(keys, &name, &o.raw)?,
        id: name,
    })
}

/// The keyed name of object `id`.
fn object_name(keys: &Keyring, id: &ObjectId) -> ObjectId {
    ObjectId(*blake3::keyed_hash(&keys.names_key, &id.0).as_bytes())
}

fn keyed_hex(keys: &Keyring, what: &str, bytes: &[u8], chars: usize) -> String {
    let k = derive("shelldone encrypted remote 1 ref names", &keys.names_key);
    let mut h = blake3::Hasher::new_keyed(&k);
    h.update(what.as_bytes());
    h.update(&[0]);
    h.update(bytes);
    h.finalize().to_hex()[..chars].to_owned()
}

/// The inner (encrypted) name of ref `name`.
fn inner_ref_name(keys: &Keyring, name: &str) -> Result<String> {
    let (dev, rest) = name
        .split_once('/')
        .ok_or_else(|| Error::BadRefName(name.to_owned()))?;
    let ns = format!(
        "{NS_PREFIX}{}",
        keyed_hex(keys, "device", dev.as_bytes(), 24)
    );
    Ok(if rest == "head" {
        format!("{ns}/head")
    } else {
        format!(
            "{ns}/sessions/{}",
            keyed_hex(keys, "ref", name.as_bytes(), 40)
        )
    })
}

fn ref_record(name: &str, value: ObjectId) -> Vec<u8> {
    let mut p = REF_MAGIC.to_vec();
    p.extend_from_slice(&(name.len() as u64).to_le_bytes());
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&value.0);
    p
}

fn parse_ref_record(p: &[u8]) -> Option<(String, ObjectId)> {
    let p = p.strip_prefix(REF_MAGIC)?;
    let len = usize::try_from(u64::from_le_bytes(p.get(..8)?.try_into().ok()?)).ok()?;
    let name = std::str::from_utf8(p.get(8..8 + len)?).ok()?.to_owned();
    let value: [u8; 32] = p.get(8 + len..)?.try_into().ok()?;
    Some((name, ObjectId(value)))
}

fn ref_record_name(keys: &Keyring, record: &[u8]) -> ObjectId {
    let k = derive("shelldone encrypted remote 1 ref records", &keys.names_key);
    ObjectId(*blake3::keyed_hash(&k, record).as_bytes())
}

impl<B: Backend> Backend for Encrypted<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        self.last = None;
        let refs = self.refs_inner()?;
        let out = refs.iter().map(|(n, (_, _, v))| (n.clone(), *v)).collect();
        self.last = Some(refs);
        Ok(out)
    }

    fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        let Some(keys) = &self.keys else {
            return Ok(vec![false; ids.len()]);
        };
        let names: Vec<ObjectId> = ids.iter().map(|id| object_name(keys, id)).collect();
        self.inner.has(&names)
    }

    fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
        let Some(keys) = self.keys.clone() else {
            // No key file: nothing was ever pushed here.
            return Ok(vec![None; ids.len()]);
        };
        let names: Vec<ObjectId> = ids.iter().map(|id| object_name(&keys, id)).collect();
        let got = self.inner.get(&names)?;
        ids.iter()
            .zip(names.iter().zip(got))
            .map(|(id, (name, frame))| {
                frame
                    .map(|f| {
                        open_sealed(&keys, name, &f).map_err(|why| Error::CorruptObject {
                            id: *id,
                            why: format!("encrypted object {name} on the remote: {why}"),
                        })
                    })
                    .transpose()
            })
            .collect()
    }

    /// Each bound grows by what sealing adds (the length, the padding, the header and tag).
    fn get_ahead(&mut self, wanted: &[(ObjectId, u64)]) -> Vec<Option<Vec<u8>>> {
        let Some(keys) = self.keys.clone() else {
            return vec![None; wanted.len()];
        };
        let named: Vec<(ObjectId, u64)> = wanted
            .iter()
            .map(|(id, bound)| {
                let plain = usize::try_from(*bound)
                    .unwrap_or(usize::MAX)
                    .saturating_add(4);
                let sealed = padme(plain).max(plain).saturating_add(HEADER + 16);
                (object_name(&keys, id), sealed as u64)
            })
            .collect();
        let got = self.inner.get_ahead(&named);
        named
            .iter()
            .zip(got)
            .map(|((name, _), frame)| open_sealed(&keys, name, &frame?).ok())
            .collect()
    }

    fn put(&mut self, objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
        let keys = self.keys()?.clone();
        let mut sealed = objects.map(|o| sealed(&keys, &o?));
        self.inner.put(&mut sealed)
    }

    fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()> {
        self.put_and_update_refs(Vec::new(), updates)
    }

    /// The records given (a signing layer's) are sealed as [`Backend::put`] seals objects, and
    /// stored with this layer's own ref records in one round.
    fn put_and_update_refs(&mut self, given: Vec<Outgoing>, updates: &[RefUpdate]) -> Result<()> {
        for u in updates {
            super::dir::check_remote_ref(&u.name)?;
        }
        let keys = self.keys()?.clone();
        let mut now = match self.last.take() {
            Some(r) => r,
            None => self.refs_inner()?,
        };
        let mut records = given
            .iter()
            .map(|o| sealed(&keys, o))
            .collect::<Result<Vec<_>>>()?;
        let mut inner_updates = Vec::new();
        for u in updates {
            let cur = now.get(&u.name);
            let found = cur.map(|c| c.2);
            if found != u.expected {
                return Err(ref_conflict(u, found));
            }
            let new = match u.new {
                Some(v) => {
                    let record = ref_record(&u.name, v);
                    let rname = ref_record_name(&keys, &record);
                    records.push(Outgoing {
                        kind: Kind::Blob,
                        raw: seal(&keys, &rname, &record)?,
                        id: rname,
                    });
                    Some(rname)
                }
                None => None,
            };
            inner_updates.push(RefUpdate {
                name: inner_ref_name(&keys, &u.name)?,
                expected: cur.map(|c| c.1),
                new,
            });
        }
        if let Err(e) = self.inner.put_and_update_refs(records, &inner_updates) {
            // Lost a race on a ref read before: say which ref, by its real name.
            let lost = match &e {
                Error::RefConflict { name, .. } => updates
                    .iter()
                    .zip(&inner_updates)
                    .find(|(_, i)| i.name == *name)
                    .map(|(u, _)| u),
                _ => None,
            };
            return Err(match lost {
                Some(u) => Error::RefConflict {
                    name: u.name.clone(),
                    expected: u.expected.map_or_else(|| "absent".into(), |i| i.to_hex()),
                    found: "a value written since this device read it".into(),
                },
                None => e,
            });
        }
        for (u, i) in updates.iter().zip(inner_updates) {
            match (u.new, i.new) {
                (Some(v), Some(rname)) => {
                    now.insert(u.name.clone(), (i.name, rname, v));
                }
                _ => {
                    now.remove(&u.name);
                }
            }
        }
        self.keep_opened(&now);
        self.last = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::MemoryBackend;

    pub(crate) fn access() -> Access {
        let identity = age::x25519::Identity::generate();
        let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random());
        Access {
            recipients: vec![identity.to_public().to_string()],
            revoked: Vec::new(),
            signers: vec![("me".into(), signing.verifying_key())],
            revoked_signers: Vec::new(),
            identity,
            recovery: None,
            signing: Some(signing),
        }
    }

    #[test]
    fn padme_buckets_cost_at_most_twelve_percent() {
        for len in [
            0,
            1,
            255,
            256,
            257,
            1000,
            4096,
            4097,
            100_000,
            1 << 20,
            12_345_678,
        ] {
            let p = padme(len);
            assert!(p >= len.max(MIN_PADDED), "{len} -> {p}");
            assert!(
                len < MIN_PADDED || p * 100 <= len * 112 + 100,
                "{len} -> {p}"
            );
        }
        assert_eq!(padme(1000), padme(999));
    }

    #[test]
    fn objects_and_refs_round_trip_and_the_backend_sees_only_ciphertext() {
        let a = access();
        let mut mem = MemoryBackend::new("m");
        let mut enc = Encrypted::open(&mut mem, &a, Mode::Write).unwrap();
        assert!(enc.key_change().created);
        let id = ObjectId([7; 32]);
        let raw = b"known plaintext known plaintext".to_vec();
        let mut one = std::iter::once(Ok(Outgoing {
            kind: Kind::Tree,
            id,
            raw: raw.clone(),
        }));
        enc.put(&mut one).unwrap();
        assert_eq!(
            enc.has(&[id, ObjectId([8; 32])]).unwrap(),
            vec![true, false]
        );
        assert_eq!(enc.get(&[id]).unwrap(), vec![Some(raw.clone())]);
        enc.update_refs(&[RefUpdate {
            name: "laptop/sessions/s1".into(),
            expected: None,
            new: Some(id),
        }])
        .unwrap();
        assert_eq!(
            enc.list_refs().unwrap().into_iter().collect::<Vec<_>>(),
            vec![("laptop/sessions/s1".to_owned(), id)]
        );
        drop(enc);
        for (n, bytes) in mem.objects() {
            assert_ne!(*n, id);
            assert!(!bytes.windows(5).any(|w| w == b"known"));
        }
        for name in mem.clone().list_refs().unwrap().keys() {
            assert!(!name.contains("laptop") && !name.contains("s1"), "{name}");
        }
        // Another device sharing the keys computes the same names: dedup works.
        let mut again = Encrypted::open(&mut mem, &a, Mode::Read).unwrap();
        assert_eq!(again.has(&[id]).unwrap(), vec![true]);
    }

    #[test]
    fn a_flipped_byte_or_a_swapped_object_is_refused() {
        let a = access();
        let mut mem = MemoryBackend::new("m");
        let mut enc = Encrypted::open(&mut mem, &a, Mode::Write).unwrap();
        let (x, y) = (ObjectId([1; 32]), ObjectId([2; 32]));
        let mut two = vec![
            Ok(Outgoing {
                kind: Kind::Blob,
                id: x,
                raw: b"x".to_vec(),
            }),
            Ok(Outgoing {
                kind: Kind::Blob,
                id: y,
                raw: b"y".to_vec(),
            }),
        ]
        .into_iter();
        enc.put(&mut two).unwrap();
        let keys = enc.keyring().unwrap().clone();
        drop(enc);
        let (nx, ny) = (object_name(&keys, &x), object_name(&keys, &y));
        let fy = mem.objects()[&ny].clone();
        mem.objects_mut().insert(nx, fy);
        let mut enc = Encrypted::open(&mut mem, &a, Mode::Read).unwrap();
        assert!(matches!(enc.get(&[x]), Err(Error::CorruptObject { .. })));
        let mut f = mem.objects()[&ny].clone();
        let last = f.len() - 1;
        f[last] ^= 1;
        mem.objects_mut().insert(ny, f);
        let mut enc = Encrypted::open(&mut mem, &a, Mode::Read).unwrap();
        assert!(matches!(enc.get(&[y]), Err(Error::CorruptObject { .. })));
    }

    #[test]
    fn trusting_rewraps_and_revoking_rotates_for_what_comes_next() {
        let a = access();
        let b = access();
        let mut mem = MemoryBackend::new("m");
        drop(Encrypted::open(&mut mem, &a, Mode::Write).unwrap());
        // B is not a reader yet: a clear key error, nothing written.
        let before = mem.objects().len();
        assert!(matches!(
            Encrypted::open(&mut mem, &b, Mode::Read),
            Err(Error::VaultLocked(_))
        ));
        assert_eq!(mem.objects().len(), before);
        // A trusts B and pushes: the key file is re-wrapped; B opens it.
        let mut a2 = access_like(&a);
        a2.recipients.push(b.identity.to_public().to_string());
        a2.signers
            .push(("b".into(), b.signing.as_ref().unwrap().verifying_key()));
        let enc = Encrypted::open(&mut mem, &a2, Mode::Write).unwrap();
        assert_eq!(enc.key_change().added.len(), 1);
        assert_eq!(enc.keyring().unwrap().epoch(), 0);
        drop(enc);
        let kb = Encrypted::open(&mut mem, &b, Mode::Read).unwrap();
        assert_eq!(kb.keyring().unwrap().epoch(), 0);
        drop(kb);
        // A revokes B: a new epoch, and B can no longer open the key file.
        let mut a3 = access_like(&a);
        a3.revoked.push(b.identity.to_public().to_string());
        a3.revoked_signers
            .push(b.signing.as_ref().unwrap().verifying_key());
        let enc = Encrypted::open(&mut mem, &a3, Mode::Write).unwrap();
        assert_eq!(enc.key_change().rotated.len(), 1);
        assert_eq!(enc.keyring().unwrap().epoch(), 1);
        drop(enc);
        assert!(matches!(
            Encrypted::open(&mut mem, &b, Mode::Read),
            Err(Error::VaultLocked(_))
        ));
        // A device with a stale trust list (B not known revoked) does not re-add B.
        let mut stale = access_like(&a);
        stale.recipients.push(b.identity.to_public().to_string());
        let enc = Encrypted::open(&mut mem, &stale, Mode::Write).unwrap();
        assert!(
            !enc.keyring()
                .unwrap()
                .recipients
                .contains(&b.identity.to_public().to_string())
        );
    }

    #[test]
    fn the_paper_key_opens_the_key_file_and_rewraps_it_for_a_new_device() {
        let paper = age::x25519::Identity::generate();
        let mut a = access();
        a.recipients.push(paper.to_public().to_string());
        let mut mem = MemoryBackend::new("m");
        let mut enc = Encrypted::open(&mut mem, &a, Mode::Write).unwrap();
        let x = ObjectId([3; 32]);
        let mut one = std::iter::once(Ok(Outgoing {
            kind: Kind::Blob,
            id: x,
            raw: b"what A wrote".to_vec(),
        }));
        enc.put(&mut one).unwrap();
        drop(enc);
        // Every device lost: a device with no keys reads with the paper key alone.
        let lost = Access {
            identity: paper.clone(),
            recovery: None,
            signing: None,
            recipients: Vec::new(),
            revoked: Vec::new(),
            signers: Vec::new(),
            revoked_signers: Vec::new(),
        };
        let mut r = Encrypted::open(&mut mem, &lost, Mode::Read).unwrap();
        assert_eq!(r.get(&[x]).unwrap(), vec![Some(b"what A wrote".to_vec())]);
        drop(r);
        // A wrong paper key: a key error that says so, nothing written.
        let before = mem.clone().list_refs().unwrap();
        let wrong = Access {
            identity: age::x25519::Identity::generate(),
            ..access_like(&lost)
        };
        let e = Encrypted::open(&mut mem, &wrong, Mode::Read).unwrap_err();
        assert!(
            matches!(&e, Error::VaultLocked(m) if m.contains("paper key given")),
            "{e}"
        );
        assert_eq!(mem.clone().list_refs().unwrap(), before);
        // The device's new keys with the paper key (after `key import`, which put A's trust
        // list here): the key file is re-wrapped for them, and from then on they open it alone.
        let mut b = access();
        b.recipients.push(paper.to_public().to_string());
        b.signers.extend(a.signers.iter().cloned());
        b.recovery = Some(paper.clone());
        let enc = Encrypted::open(&mut mem, &b, Mode::Write).unwrap();
        assert_eq!(
            enc.key_change().added,
            vec![b.identity.to_public().to_string()]
        );
        drop(enc);
        b.recovery = None;
        let mut r = Encrypted::open(&mut mem, &b, Mode::Read).unwrap();
        assert_eq!(r.get(&[x]).unwrap(), vec![Some(b"what A wrote".to_vec())]);
        // The paper key is still a reader.
        assert!(Encrypted::open(&mut mem, &lost, Mode::Read).is_ok());
    }

    #[test]
    fn ref_records_opened_before_are_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("r.encrypted-refs.json");
        let a = access();
        let mut mem = MemoryBackend::new("m");
        let mut enc = Encrypted::open(&mut mem, &a, Mode::Write)
            .unwrap()
            .with_cache(cache.clone());
        enc.update_refs(&[RefUpdate {
            name: "laptop/head".into(),
            expected: None,
            new: Some(ObjectId([5; 32])),
        }])
        .unwrap();
        drop(enc);
        let inner_value = *mem
            .clone()
            .list_refs()
            .unwrap()
            .iter()
            .find(|(n, _)| n.starts_with(NS_PREFIX))
            .unwrap()
            .1;
        let record = mem.objects_mut().remove(&inner_value).unwrap();
        // The record is gone from the remote; the cache answers (same name, same content).
        let mut enc = Encrypted::open(&mut mem, &a, Mode::Read)
            .unwrap()
            .with_cache(cache.clone());
        assert_eq!(enc.list_refs().unwrap()["laptop/head"], ObjectId([5; 32]));
        drop(enc);
        // A damaged cache is ignored: the record is read again (missing here: refused).
        std::fs::write(&cache, b"[").unwrap();
        let mut enc = Encrypted::open(&mut mem, &a, Mode::Read)
            .unwrap()
            .with_cache(cache.clone());
        assert!(enc.list_refs().is_err());
        drop(enc);
        mem.objects_mut().insert(inner_value, record);
        let mut enc = Encrypted::open(&mut mem, &a, Mode::Read)
            .unwrap()
            .with_cache(cache);
        assert_eq!(enc.list_refs().unwrap()["laptop/head"], ObjectId([5; 32]));
    }

    fn access_like(a: &Access) -> Access {
        Access {
            identity: a.identity.clone(),
            recovery: a.recovery.clone(),
            signing: a.signing.clone(),
            recipients: a.recipients.clone(),
            revoked: a.revoked.clone(),
            signers: a.signers.clone(),
            revoked_signers: a.revoked_signers.clone(),
        }
    }

    #[test]
    fn a_key_file_signed_by_a_stranger_is_refused() {
        let a = access();
        let mut mem = MemoryBackend::new("m");
        drop(Encrypted::open(&mut mem, &a, Mode::Write).unwrap());
        // A stranger replaces the key file with one wrapped for A, signed by itself.
        let mut evil = access();
        evil.recipients = a.recipients.clone();
        let id = mem.clone().list_refs().unwrap()[KEYS_REF];
        mem.refs_mut().remove(KEYS_REF);
        drop(Encrypted::open(&mut mem, &evil, Mode::Write).unwrap());
        assert_ne!(mem.clone().list_refs().unwrap()[KEYS_REF], id);
        let mut a_knows = access_like(&a);
        a_knows
            .signers
            .push(("other".into(), access().signing.unwrap().verifying_key()));
        let e = Encrypted::open(&mut mem, &a_knows, Mode::Read).unwrap_err();
        assert!(e.to_string().contains("does not trust"), "{e}");
    }

    #[test]
    fn the_key_file_is_kept_locally_and_checked_on_every_open() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("r.key-file");
        let a = access();
        let mut mem = MemoryBackend::new("m");
        drop(Encrypted::open_cached(&mut mem, &a, Mode::Write, Some(cache.clone())).unwrap());
        let id = mem.clone().list_refs().unwrap()[KEYS_REF];
        let kept = std::fs::read(&cache).unwrap();
        assert_eq!(key_file_id(&kept), id);
        assert_eq!(mem.objects()[&id], kept, "the copy is the remote's bytes");
        // The key file is gone from the remote: the copy answers (same name, same bytes).
        let file = mem.objects_mut().remove(&id).unwrap();
        assert!(Encrypted::open_cached(&mut mem, &a, Mode::Read, Some(cache.clone())).is_ok());
        let e = Encrypted::open(&mut mem, &a, Mode::Read).unwrap_err();
        assert!(e.to_string().contains("is missing"), "{e}");
        // Every check is made on the copy: a signer this device revoked is refused.
        let mut revoked = access_like(&a);
        revoked.revoked_signers = vec![a.signing.as_ref().unwrap().verifying_key()];
        let e = Encrypted::open_cached(&mut mem, &revoked, Mode::Read, Some(cache.clone()))
            .unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
        // A damaged copy is ignored (the remote's is read, missing here), then replaced.
        let mut damaged = kept.clone();
        damaged[40] ^= 1;
        std::fs::write(&cache, &damaged).unwrap();
        let e = Encrypted::open_cached(&mut mem, &a, Mode::Read, Some(cache.clone())).unwrap_err();
        assert!(e.to_string().contains("is missing"), "{e}");
        mem.objects_mut().insert(id, file);
        assert!(Encrypted::open_cached(&mut mem, &a, Mode::Read, Some(cache.clone())).is_ok());
        assert_eq!(std::fs::read(&cache).unwrap(), kept);
        // Another device re-wraps the key file: the old copy is not the key file any more;
        // the new one is read, checked and kept.
        let b = access();
        let mut a2 = access_like(&a);
        a2.recipients.push(b.identity.to_public().to_string());
        drop(Encrypted::open(&mut mem, &a2, Mode::Write).unwrap());
        let enc = Encrypted::open_cached(&mut mem, &a, Mode::Read, Some(cache.clone())).unwrap();
        assert!(
            enc.keyring()
                .unwrap()
                .recipients
                .contains(&b.identity.to_public().to_string())
        );
        let now = mem.clone().list_refs().unwrap()[KEYS_REF];
        assert_ne!(now, id);
        assert_eq!(key_file_id(&std::fs::read(&cache).unwrap()), now);
    }

    #[test]
    fn a_changed_ref_costs_its_two_records_and_nothing_else() {
        use crate::remote::memory::Counting;
        use crate::remote::sign::{Signed, Trust};
        let dir = tempfile::tempdir().unwrap();
        let a = access();
        let trust = Trust {
            trusted: a.signers.clone(),
            revoked: Vec::new(),
        };
        let mut mem = MemoryBackend::new("m");
        let up = |name: &str, expected, new| RefUpdate {
            name: name.into(),
            expected,
            new: Some(new),
        };
        let (v1, v2, v3) = (ObjectId([1; 32]), ObjectId([2; 32]), ObjectId([3; 32]));
        let enc = Encrypted::open(&mut mem, &a, Mode::Write).unwrap();
        let mut w =
            Signed::open(enc, a.signing.clone(), trust.clone(), dir.path().join("w")).unwrap();
        w.list_refs().unwrap();
        w.update_refs(&[up("x/head", None, v1), up("x/sessions/s", None, v2)])
            .unwrap();
        drop(w);
        // The reader verifies both once.
        fn open<'m>(
            mem: &'m mut MemoryBackend,
            a: &Access,
            trust: &Trust,
            dir: &Path,
        ) -> Signed<Encrypted<Counting<'m>>> {
            let counted = Counting {
                inner: mem,
                gets: 0,
            };
            let enc = Encrypted::open_cached(counted, a, Mode::Read, Some(dir.join("r.key-file")))
                .unwrap()
                .with_cache(dir.join("r.encrypted-refs.json"));
            Signed::open(enc, None, trust.clone(), dir.join("r")).unwrap()
        }
        assert_eq!(
            open(&mut mem, &a, &trust, dir.path()).list_refs().unwrap()["x/head"],
            v1
        );
        // The writer moves one ref.
        let enc = Encrypted::open(&mut mem, &a, Mode::Write).unwrap();
        let mut w =
            Signed::open(enc, a.signing.clone(), trust.clone(), dir.path().join("w")).unwrap();
        w.list_refs().unwrap();
        w.update_refs(&[up("x/head", Some(v1), v3)]).unwrap();
        drop(w);
        // The reader reads its encrypted record, then the signed record it names: two rounds;
        // the key file is its copy, the identity the one the unchanged ref's record names.
        let mut r = open(&mut mem, &a, &trust, dir.path());
        let refs = r.list_refs().unwrap();
        assert_eq!((refs["x/head"], refs["x/sessions/s"]), (v3, v2));
        assert_eq!(r.inner().inner().gets, 2);
    }

    #[test]
    fn a_push_retires_a_revoked_devices_encrypted_refs() {
        use crate::remote::sign::{Signed, Trust};
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (access(), access());
        let mut both = access_like(&a);
        both.recipients.push(b.identity.to_public().to_string());
        both.signers.extend(b.signers.iter().cloned());
        let trust = Trust {
            trusted: both.signers.clone(),
            revoked: Vec::new(),
        };
        let mut mem = MemoryBackend::new("m");
        drop(Encrypted::open(&mut mem, &both, Mode::Write).unwrap());
        // B, a reader and a signer, pushes a ref.
        let enc = Encrypted::open(&mut mem, &b, Mode::Write).unwrap();
        let mut sb = Signed::open(enc, b.signing.clone(), trust, dir.path().join("b")).unwrap();
        sb.list_refs().unwrap();
        sb.update_refs(&[RefUpdate {
            name: "b/head".into(),
            expected: None,
            new: Some(ObjectId([2; 32])),
        }])
        .unwrap();
        drop(sb);
        // A revokes B: its pull refuses B's ref, its push retires it (and rotates the key).
        let mut revoking = access_like(&a);
        let b_key = b.signing.as_ref().unwrap().verifying_key();
        revoking.revoked.push(b.identity.to_public().to_string());
        revoking.revoked_signers.push(b_key);
        let trust = Trust {
            trusted: a.signers.clone(),
            revoked: vec![("b".into(), b_key)],
        };
        let seen = dir.path().join("a");
        let enc = Encrypted::open(&mut mem, &revoking, Mode::Read).unwrap();
        let mut pull = Signed::open(enc, None, trust.clone(), seen.clone()).unwrap();
        let e = pull.list_refs().unwrap_err().to_string();
        assert!(e.contains("revoked"), "{e}");
        drop(pull);
        let enc = Encrypted::open(&mut mem, &revoking, Mode::Write).unwrap();
        assert_eq!(enc.keyring().unwrap().epoch(), 1);
        let mut push = Signed::open(enc, a.signing.clone(), trust.clone(), seen.clone()).unwrap();
        assert!(push.list_refs().unwrap().is_empty());
        assert_eq!(push.retired().len(), 1);
        drop(push);
        let inner: Vec<String> = mem.clone().list_refs().unwrap().into_keys().collect();
        assert_eq!(
            inner,
            vec![KEYS_REF.to_owned()],
            "only the key file's ref is left"
        );
        let enc = Encrypted::open(&mut mem, &revoking, Mode::Read).unwrap();
        let mut pull = Signed::open(enc, None, trust, seen).unwrap();
        assert!(pull.list_refs().unwrap().is_empty());
    }
}
