//! The secret vault and the device keys (docs/keys.md).
//!
//! Secrets are age-encrypted files, one per secret, under `state/secrets/` (a snapshot root, so
//! snapshots, backups and sync carry them — as ciphertext only — and sync merges them per
//! secret; a secret changed on two devices is a whole-file conflict, never a text merge). Each is
//! encrypted to [`recipients`]: this device, every trusted and unrevoked device, and the paper
//! recovery key. The trust list is synced too: `state/secrets/trust/<NAME>.pub` (one file per
//! device) and the paper recipient `state/secrets/paper.pub`. The private halves of this
//! device's keys are never under a snapshot root ([`keys`]).
//!
//! Every command that writes unlocks the keys first (and decrypts whatever it must re-encrypt
//! in memory), so a wrong passphrase, a wrong identity or a missing keyring entry fails before
//! a byte changes.

pub mod keys;

use std::collections::BTreeMap;
use std::path::PathBuf;

use age::secrecy::ExposeSecret;

use crate::context::Context;
use crate::error::{Error, Result};
pub use keys::{Backend, DeviceKeys, DeviceRecord, KeyringStore, Unlock, device_keys};

/// The folder of the vault under the state dir (the snapshot root `state/secrets`).
pub const SECRETS_DIR: &str = "secrets";
/// The extension of a secret's file.
const SECRET_EXT: &str = ".age";

/// One device this device has been told about (`key trust`), with its trust state.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// The name it was trusted under.
    pub name: String,
    /// Its signing key.
    pub verifying: ed25519_dalek::VerifyingKey,
    /// True once `key revoke` revoked it.
    pub revoked: bool,
}

/// One entry of the trust list, as `key list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrustEntry {
    /// The device's name.
    pub name: String,
    /// Its age recipient.
    pub age: String,
    /// Its Ed25519 key, OpenSSH form.
    pub ssh: String,
    /// Revoked (its keys no longer receive new secrets).
    pub revoked: bool,
}

/// `state/secrets`.
#[must_use]
pub fn secrets_dir(cx: &Context) -> PathBuf {
    cx.paths.state_dir.join(SECRETS_DIR)
}

fn trust_dir(cx: &Context) -> PathBuf {
    secrets_dir(cx).join("trust")
}

fn paper_path(cx: &Context) -> PathBuf {
    secrets_dir(cx).join("paper.pub")
}

/// Checks a secret's name: letters, digits, `_`, `-` and `.`, not starting with `.` or `-`, at
/// most 128 characters.
///
/// # Errors
/// [`Error::Usage`].
pub fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "invalid {what} name '{name}': use letters, digits, '_', '-' and '.', not first '.' or '-' (at most 128)"
        )))
    }
}

fn secret_path(cx: &Context, name: &str) -> PathBuf {
    secrets_dir(cx).join(format!("{name}{SECRET_EXT}"))
}

fn parse_trust(name: &str, text: &str) -> Option<TrustEntry> {
    let mut e = TrustEntry {
        name: name.to_owned(),
        age: String::new(),
        ssh: String::new(),
        revoked: false,
    };
    for l in text.lines() {
        if let Some(a) = l.strip_prefix("age ") {
            a.trim().clone_into(&mut e.age);
        } else if let Some(s) = l.strip_prefix("ssh ") {
            s.trim().clone_into(&mut e.ssh);
        } else if l.starts_with("revoked") {
            e.revoked = true;
        }
    }
    (!e.age.is_empty()).then_some(e)
}

fn trust_text(e: &TrustEntry) -> String {
    let mut s = format!(
        "# a device trusted to read this vault (docs/keys.md)\nage {}\nssh {}\n",
        e.age, e.ssh
    );
    if e.revoked {
        s.push_str("revoked\n");
    }
    s
}

/// The trust list (`state/secrets/trust/*.pub`), by name.
///
/// # Errors
/// I/O.
pub fn trust_list(cx: &Context) -> Result<Vec<TrustEntry>> {
    let dir = trust_dir(cx);
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::file(e, "reading", dir, "vault")),
    };
    for ent in rd {
        let ent = ent.map_err(Error::at("reading", &dir, "vault"))?;
        let fname = ent.file_name().to_string_lossy().into_owned();
        let Some(name) = fname.strip_suffix(".pub") else {
            continue;
        };
        let p = ent.path();
        let text = std::fs::read_to_string(&p).map_err(Error::at("reading", &p, "vault"))?;
        if let Some(e) = parse_trust(name, &text) {
            out.push(e);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The paper recovery key's recipient, when one was made (`key export --paper`).
///
/// # Errors
/// I/O, a damaged file.
pub fn paper_recipient(cx: &Context) -> Result<Option<age::x25519::Recipient>> {
    let p = paper_path(cx);
    match std::fs::read_to_string(&p) {
        Ok(t) => {
            let line = t
                .lines()
                .find_map(|l| l.strip_prefix("age "))
                .ok_or_else(|| Error::corrupt_file(&p, "no 'age age1…' line"))?;
            keys::parse_recipient(line)
                .map(Some)
                .map_err(|e| Error::corrupt_file(&p, e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::file(e, "reading", p, "vault")),
    }
}

/// Everyone a new encryption must include: this device, every trusted and unrevoked device,
/// and the paper recovery key when one exists. No duplicates, in a stable order.
///
/// # Errors
/// No device keys yet ([`Error::VaultLocked`]), I/O, a damaged trust file.
pub fn recipients(cx: &Context) -> Result<Vec<age::x25519::Recipient>> {
    let me = keys::require_record(cx)?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let mut add = |s: &str| -> Result<()> {
        if seen.insert(s.to_owned()) {
            out.push(keys::parse_recipient(s)?);
        }
        Ok(())
    };
    add(&me.age)?;
    for e in trust_list(cx)? {
        if !e.revoked && e.age != me.age {
            add(&e.age)?;
        } else if e.revoked && e.age == me.age {
            return Err(Error::VaultLocked(format!(
                "this device's keys were revoked (as '{}'): it may no longer encrypt secrets for the others; make new keys with 'shelldone key init --force' and have a trusted device trust them",
                e.name
            )));
        }
    }
    if let Some(p) = paper_recipient(cx)? {
        add(&p.to_string())?;
    }
    Ok(out)
}

/// Every signing key this device has been told about, with its trust state.
///
/// # Errors
/// I/O, a trust file whose `ssh` key does not parse.
pub fn trusted_signers(cx: &Context) -> Result<Vec<TrustedKey>> {
    trust_list(cx)?
        .into_iter()
        .map(|e| {
            Ok(TrustedKey {
                verifying: keys::parse_ssh_public(&e.ssh)?,
                name: e.name,
                revoked: e.revoked,
            })
        })
        .collect()
}

/// The names of the secrets in the vault, sorted.
///
/// # Errors
/// I/O.
pub fn secret_list(cx: &Context) -> Result<Vec<String>> {
    let dir = secrets_dir(cx);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::file(e, "reading", dir, "vault")),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(Error::at("reading", &dir, "vault"))?;
        let f = ent.file_name().to_string_lossy().into_owned();
        if let Some(n) = f.strip_suffix(SECRET_EXT)
            && check_name(n, "secret").is_ok()
            && ent.file_type().is_ok_and(|t| t.is_file())
        {
            out.push(n.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn decrypt_secret(cx: &Context, name: &str, ids: &[&dyn age::Identity]) -> Result<Vec<u8>> {
    let p = secret_path(cx, name);
    let ct = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "no secret '{name}' in the vault; 'shelldone secret list' lists them"
            )));
        }
        Err(e) => return Err(Error::file(e, "reading", p, "vault")),
    };
    keys::decrypt_with(&ct, ids).map_err(|f| match f {
        keys::DecryptFailure::NotForUs => Error::NotRecipient {
            name: name.to_owned(),
            device: cx.device.clone(),
        },
        keys::DecryptFailure::Damaged(why) => {
            Error::corrupt_file(&p, format!("not a readable age file: {why}"))
        }
    })
}

/// The value of secret `name`.
///
/// # Errors
/// [`Error::VaultLocked`] (keys not unlocked), [`Error::NotRecipient`] (the secret was not
/// encrypted to this device), [`Error::Usage`] (no such secret), a damaged file.
pub fn secret_get(cx: &Context, name: &str, unlock: &Unlock) -> Result<Vec<u8>> {
    check_name(name, "secret")?;
    if !secret_path(cx, name).exists() {
        return Err(Error::Usage(format!(
            "no secret '{name}' in the vault; 'shelldone secret list' lists them"
        )));
    }
    let k = device_keys(cx, unlock)?;
    decrypt_secret(cx, name, &[&k.age as &dyn age::Identity])
}

/// Sets secret `name` to `value`, encrypted to [`recipients`]. The keys are unlocked first: a
/// wrong passphrase or identity changes nothing.
///
/// # Errors
/// [`Error::VaultLocked`], I/O.
pub fn secret_set(cx: &Context, name: &str, value: &[u8], unlock: &Unlock) -> Result<()> {
    check_name(name, "secret")?;
    let _lock = cx.lock("secret set")?;
    device_keys(cx, unlock)?;
    let rs = recipients(cx)?;
    let refs: Vec<&dyn age::Recipient> = rs.iter().map(|r| r as &dyn age::Recipient).collect();
    let ct = keys::encrypt_to(&refs, value)?;
    let dir = secrets_dir(cx);
    keys::create_private_dir(&dir)?;
    keys::write_private(&secret_path(cx, name), &ct)
}

/// Removes secret `name`; false when there was none.
///
/// # Errors
/// I/O.
pub fn secret_rm(cx: &Context, name: &str) -> Result<bool> {
    check_name(name, "secret")?;
    let _lock = cx.lock("secret rm")?;
    let p = secret_path(cx, name);
    match std::fs::remove_file(&p) {
        Ok(()) => {
            crate::store::durable::sync_dir(&secrets_dir(cx)).map_err(Error::at(
                "syncing",
                &secrets_dir(cx),
                "vault",
            ))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::file(e, "removing", p, "vault")),
    }
}

/// Every secret this device can read, by name (for redaction). Secrets not encrypted to this
/// device are left out.
///
/// # Errors
/// [`Error::VaultLocked`], I/O, a damaged file.
pub fn secret_values(cx: &Context, unlock: &Unlock) -> Result<BTreeMap<String, Vec<u8>>> {
    let names = secret_list(cx)?;
    let mut out = BTreeMap::new();
    if names.is_empty() {
        return Ok(out);
    }
    let k = device_keys(cx, unlock)?;
    for n in names {
        match decrypt_secret(cx, &n, &[&k.age as &dyn age::Identity]) {
            Ok(v) => {
                out.insert(n, v);
            }
            Err(Error::NotRecipient { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Re-encrypts every secret to [`recipients`] (after the trust list or the paper key changed),
/// decrypting with `ids`. All are decrypted before any is written: a secret `ids` cannot open
/// fails the whole rekey with nothing changed. Returns how many were re-encrypted.
fn rekey(cx: &Context, ids: &[&dyn age::Identity]) -> Result<usize> {
    let names = secret_list(cx)?;
    let mut plain = Vec::with_capacity(names.len());
    for n in &names {
        plain.push((n.clone(), decrypt_secret(cx, n, ids)?));
    }
    let rs = recipients(cx)?;
    let refs: Vec<&dyn age::Recipient> = rs.iter().map(|r| r as &dyn age::Recipient).collect();
    let mut cts = Vec::with_capacity(plain.len());
    for (n, v) in &plain {
        cts.push((n, keys::encrypt_to(&refs, v)?));
    }
    for (n, ct) in &cts {
        keys::write_private(&secret_path(cx, n), ct)?;
    }
    Ok(cts.len())
}

/// What `key init` made.
#[derive(Debug, Clone)]
pub struct Initialized {
    /// The public record.
    pub record: DeviceRecord,
}

/// `key init`: makes this device's age identity and Ed25519 signing key and keeps the private
/// halves in `backend` (with the keyring: in `store`, or the one [`keys::keyring_here`] picks).
/// Refuses when the device has keys, unless `force` (the old keys are then forgotten: secrets
/// encrypted only to them become unreadable here).
///
/// # Errors
/// [`Error::Usage`] (keys exist), [`Error::VaultLocked`] (the backend refused), I/O.
pub fn init(
    cx: &Context,
    backend: Backend,
    store: Option<KeyringStore>,
    unlock: &Unlock,
    force: bool,
) -> Result<Initialized> {
    let _lock = cx.lock("key init")?;
    let old = keys::record(cx)?;
    if let Some(rec) = &old
        && !force
    {
        return Err(Error::Usage(format!(
            "this device already has keys ({}, in the {} backend); 'shelldone key show' prints them (--force makes new ones)",
            rec.age,
            rec.backend.name()
        )));
    }
    // The new keys are stored (replacing the record) before the old ones are dropped: a
    // backend that refuses leaves the old keys working.
    let record = keys::store(cx, &keys::generate(), backend, store, unlock)?;
    if let Some(old) = &old {
        keys::drop_old(cx, old, &record);
    }
    Ok(Initialized { record })
}

fn write_trust(cx: &Context, e: &TrustEntry) -> Result<()> {
    let dir = trust_dir(cx);
    keys::create_private_dir(&secrets_dir(cx))?;
    keys::create_private_dir(&dir)?;
    keys::write_private(
        &dir.join(format!("{}.pub", e.name)),
        trust_text(e).as_bytes(),
    )
}

/// Puts this device itself on the trust list when it is not there, so that the devices it
/// trusts encrypt to it in turn.
fn trust_self(cx: &Context, me: &DeviceRecord) -> Result<()> {
    let list = trust_list(cx)?;
    if list.iter().any(|e| e.age == me.age) {
        return Ok(());
    }
    check_name(&me.name, "device")?;
    write_trust(
        cx,
        &TrustEntry {
            name: me.name.clone(),
            age: me.age.clone(),
            ssh: me.ssh.clone(),
            revoked: false,
        },
    )
}

/// `key trust NAME PUBKEYS`: trusts a device by its public keys (its `age1…` recipient and its
/// `ssh-ed25519 …` key, in any order), puts this device on the list too, and re-encrypts every
/// secret so the new device can read them. Returns the entry and how many secrets were
/// re-encrypted.
///
/// # Errors
/// Bad keys ([`Error::Usage`]), [`Error::VaultLocked`], I/O.
pub fn trust(
    cx: &Context,
    name: &str,
    pubkeys: &[String],
    unlock: &Unlock,
) -> Result<(TrustEntry, usize)> {
    check_name(name, "device")?;
    let joined = pubkeys.join(" ");
    let words: Vec<&str> = joined.split_whitespace().collect();
    let mut age_key = None;
    let mut ssh = None;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if w.starts_with("age1") {
            age_key = Some(keys::parse_recipient(w)?.to_string());
        } else if w == "ssh-ed25519" {
            let b64 = words.get(i + 1).ok_or_else(|| {
                Error::Usage("'ssh-ed25519' must be followed by the key's base64".into())
            })?;
            let vk = keys::parse_ssh_public(&format!("ssh-ed25519 {b64}"))?;
            ssh = Some(keys::ssh_public(&vk, name));
            i += 1;
        }
        i += 1;
    }
    let (Some(age_key), Some(ssh)) = (age_key, ssh) else {
        return Err(Error::Usage(
            "give both of the device's public keys, as 'shelldone key show' prints them on it: its age1… recipient and its ssh-ed25519 key".into(),
        ));
    };
    let _lock = cx.lock("key trust")?;
    let me = keys::require_record(cx)?;
    let k = device_keys(cx, unlock)?;
    // Everything to re-encrypt is read (and must decrypt) before the first write.
    let entry = TrustEntry {
        name: name.to_owned(),
        age: age_key,
        ssh,
        revoked: false,
    };
    if let Some(old) = trust_list(cx)?.into_iter().find(|e| e.name == name)
        && old.age != entry.age
        && !old.revoked
    {
        return Err(Error::Usage(format!(
            "'{name}' is already trusted with other keys ({}); revoke it first ('shelldone key revoke {name}') or use another name",
            old.age
        )));
    }
    precheck(cx, &[&k.age as &dyn age::Identity])?;
    trust_self(cx, &me)?;
    write_trust(cx, &entry)?;
    let n = rekey(cx, &[&k.age as &dyn age::Identity])?;
    Ok((entry, n))
}

/// Fails (changing nothing) unless every secret decrypts with `ids`.
fn precheck(cx: &Context, ids: &[&dyn age::Identity]) -> Result<()> {
    for n in secret_list(cx)? {
        decrypt_secret(cx, &n, ids)?;
    }
    Ok(())
}

/// `key revoke NAME`: marks the device revoked and re-encrypts every secret without it. It
/// keeps whatever it already copied: rotate those secrets (docs/keys.md). Returns how many
/// secrets were re-encrypted.
///
/// # Errors
/// No such device ([`Error::Usage`]), [`Error::VaultLocked`], I/O.
pub fn revoke(cx: &Context, name: &str, unlock: &Unlock) -> Result<usize> {
    check_name(name, "device")?;
    let _lock = cx.lock("key revoke")?;
    let Some(mut e) = trust_list(cx)?.into_iter().find(|e| e.name == name) else {
        return Err(Error::Usage(format!(
            "no trusted device '{name}'; 'shelldone key list' lists them"
        )));
    };
    let k = device_keys(cx, unlock)?;
    precheck(cx, &[&k.age as &dyn age::Identity])?;
    e.revoked = true;
    write_trust(cx, &e)?;
    rekey(cx, &[&k.age as &dyn age::Identity])
}

/// A paper recovery key: the identity a person writes down, and its recipient.
#[derive(Debug)]
pub struct PaperKey {
    /// `AGE-SECRET-KEY-1…`, the whole secret.
    pub identity: age::secrecy::SecretString,
    /// Its `age1…` recipient (kept in the synced `state/secrets/paper.pub`).
    pub recipient: String,
    /// Secrets re-encrypted to include it.
    pub rekeyed: usize,
}

/// `key export --paper`: makes a new recovery identity, records its recipient in the synced
/// vault (so every device includes it in every encryption from now on, replacing an older paper
/// key) and re-encrypts every secret to include it. The identity itself is returned, never
/// stored.
///
/// # Errors
/// [`Error::VaultLocked`], I/O.
pub fn export_paper(cx: &Context, unlock: &Unlock) -> Result<PaperKey> {
    let _lock = cx.lock("key export")?;
    let me = keys::require_record(cx)?;
    let k = device_keys(cx, unlock)?;
    precheck(cx, &[&k.age as &dyn age::Identity])?;
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    keys::create_private_dir(&secrets_dir(cx))?;
    trust_self(cx, &me)?;
    keys::write_private(
        &paper_path(cx),
        format!("# the paper recovery key's recipient (docs/keys.md)\nage {recipient}\n")
            .as_bytes(),
    )?;
    let rekeyed = rekey(cx, &[&k.age as &dyn age::Identity])?;
    Ok(PaperKey {
        identity: id.to_string(),
        recipient,
        rekeyed,
    })
}

/// A paper key in groups a person can copy: 8 lines of the identity's characters.
#[must_use]
pub fn paper_lines(identity: &age::secrecy::SecretString) -> Vec<String> {
    let s = identity.expose_secret();
    let body = s.strip_prefix("AGE-SECRET-KEY-1").unwrap_or(s);
    let groups: Vec<String> = body
        .as_bytes()
        .chunks(6)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let mut lines = vec!["AGE-SECRET-KEY-1".to_owned()];
    for row in groups.chunks(5) {
        lines.push(row.join("-"));
    }
    lines
}

/// What `key import` did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// This device's (new) key record.
    pub record: DeviceRecord,
    /// Secrets re-encrypted to include this device.
    pub rekeyed: usize,
}

/// `key import` / `vault unlock --recovery`: restores access on a device with the paper
/// recovery key. The key must be the vault's paper key (its recipient is `paper.pub`) and
/// open every secret, else nothing is changed. The device gets new keys (in `backend`) unless
/// it has working ones, is put on the trust list, and every secret is re-encrypted to include
/// it.
///
/// # Errors
/// [`Error::VaultLocked`] (a wrong or mistyped key, a locked backend), I/O.
pub fn import(
    cx: &Context,
    paper: &str,
    backend: Backend,
    store: Option<KeyringStore>,
    unlock: &Unlock,
) -> Result<Imported> {
    let id = keys::parse_identity(paper)?;
    let _lock = cx.lock("key import")?;
    match paper_recipient(cx)? {
        Some(r) if r.to_string() == id.to_public().to_string() => {}
        Some(_) => {
            return Err(Error::VaultLocked(
                "this is not the vault's paper recovery key (state/secrets/paper.pub names another); nothing was changed".into(),
            ));
        }
        None => {
            return Err(Error::VaultLocked(
                "this vault has no paper recovery key yet (no state/secrets/paper.pub): pull the state from a remote first ('shelldone sync pull'); nothing was changed".into(),
            ));
        }
    }
    precheck(cx, &[&id as &dyn age::Identity])?;
    let old = keys::record(cx)?;
    let working = old.is_some() && device_keys(cx, unlock).is_ok();
    let record = match old {
        Some(rec) if working => rec,
        old => {
            let new = keys::store(cx, &keys::generate(), backend, store, unlock)?;
            if let Some(old) = &old {
                keys::drop_old(cx, old, &new);
            }
            new
        }
    };
    trust_self(cx, &record)?;
    let rekeyed = rekey(cx, &[&id as &dyn age::Identity])?;
    Ok(Imported { record, rekeyed })
}

/// What `vault status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// `keyring`, `passphrase`, or `none` (no keys yet).
    pub backend: &'static str,
    /// The keys could be unlocked with what was given (no prompt).
    pub unlocked: bool,
    /// Why not, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// This device's age recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Secrets in the vault.
    pub secrets: usize,
    /// Trusted (unrevoked) devices.
    pub trusted: usize,
    /// A paper recovery key exists.
    pub paper_key: bool,
    /// With the keyring backend, the store that holds the keys: `secret-service` or
    /// `keyutils`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyring_store: Option<KeyringStore>,
    /// The OS keyring answers on this machine.
    pub keyring_available: bool,
    /// The store `key init --backend keyring` would use here (`None`: no keyring answers).
    pub keyring_here: Option<KeyringStore>,
}

/// `vault status`.
///
/// # Errors
/// I/O.
pub fn status(cx: &Context, unlock: &Unlock) -> Result<Status> {
    let rec = keys::record(cx)?;
    let (unlocked, why) = match &rec {
        None => (
            false,
            Some("no device keys yet: run 'shelldone key init'".to_owned()),
        ),
        Some(_) => match device_keys(cx, unlock) {
            Ok(_) => (true, None),
            Err(e) => (false, Some(e.to_string())),
        },
    };
    let here = keys::keyring_here();
    Ok(Status {
        backend: rec.as_ref().map_or("none", |r| r.backend.name()),
        keyring_store: rec.as_ref().and_then(DeviceRecord::keyring_store),
        unlocked,
        why,
        recipient: rec.map(|r| r.age),
        secrets: secret_list(cx)?.len(),
        trusted: trust_list(cx)?.iter().filter(|e| !e.revoked).count(),
        paper_key: paper_recipient(cx)?.is_some(),
        keyring_available: here.is_some(),
        keyring_here: here,
    })
}
