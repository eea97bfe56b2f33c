//! This device's private keys and where they are kept: the OS keyring (through the `keyring`
//! crate: the desktop Secret Service where a session bus answers, else the kernel keyutils
//! store) or an age file protected by a passphrase (scrypt). Either way they live under
//! `state/keys/` or in the keyring, never under a snapshot root, so no snapshot, backup or sync
//! carries them (docs/keys.md).

use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Error, Result};

/// The keyring service name of every entry shelldone keeps there.
pub const KEYRING_SERVICE: &str = "shelldone";

/// The scrypt work factor (log2 N) of the passphrase-protected identity: about 0.1 s and
/// 64 MiB, paid once per command that unlocks.
const SCRYPT_LOG_N: u8 = 16;

/// Where this device's private keys are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The OS keyring: the Secret Service or the kernel keyutils store ([`KeyringStore`]).
    Keyring,
    /// `state/keys/device.age`, encrypted with a passphrase (age scrypt).
    Passphrase,
}

impl Backend {
    /// `keyring` or `passphrase`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Backend::Keyring => "keyring",
            Backend::Passphrase => "passphrase",
        }
    }

    /// From its name (config `vault.backend`, `--backend`).
    ///
    /// # Errors
    /// [`Error::Usage`] for another name.
    pub fn parse(s: &str) -> Result<Backend> {
        match s {
            "keyring" => Ok(Backend::Keyring),
            "passphrase" => Ok(Backend::Passphrase),
            _ => Err(Error::Usage(format!(
                "unknown vault backend '{s}' (known: keyring, passphrase)"
            ))),
        }
    }
}

/// Which store of the OS keyring holds the keys of the keyring backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyringStore {
    /// The desktop keyring over D-Bus (GNOME Keyring, KWallet, KeePassXC): on disk, encrypted
    /// with the login password, so it survives a reboot. Needs a session bus.
    SecretService,
    /// The kernel keyutils store (the session keyring, linked to the user's persistent
    /// keyring): works headless, forgotten at reboot.
    Keyutils,
}

impl KeyringStore {
    /// `secret-service` or `keyutils` (the key record, `vault status --json`, `--backend`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            KeyringStore::SecretService => "secret-service",
            KeyringStore::Keyutils => "keyutils",
        }
    }

    /// `Secret Service` or `kernel keyutils`, for people.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            KeyringStore::SecretService => "Secret Service",
            KeyringStore::Keyutils => "kernel keyutils",
        }
    }
}

/// The variable that names the session bus, on which the Secret Service answers.
const SESSION_BUS_VAR: &str = "DBUS_SESSION_BUS_ADDRESS";

fn session_bus_set() -> bool {
    std::env::var_os(SESSION_BUS_VAR).is_some_and(|v| !v.is_empty())
}

/// This device's private keys, unlocked.
pub struct DeviceKeys {
    /// Receives what is encrypted to this device (secrets, backups, encrypted remotes).
    pub age: age::x25519::Identity,
    /// Signs what this device publishes (backup manifests, ref updates).
    pub signing: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("age", &self.age.to_public().to_string())
            .finish_non_exhaustive()
    }
}

/// Asks for a passphrase (the CLI prompts on the terminal or reads `SHELLDONE_VAULT_PASSPHRASE`);
/// the argument says what for.
pub type Prompt = dyn Fn(&str) -> Result<String>;

/// How to unlock the device's keys.
#[derive(Default)]
pub struct Unlock {
    /// Gives the passphrase of the passphrase backend, asked only when it is needed.
    pub passphrase: Option<Box<Prompt>>,
}

impl std::fmt::Debug for Unlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlock")
            .field("passphrase", &self.passphrase.is_some())
            .finish()
    }
}

impl Unlock {
    /// An unlock that gives `passphrase` whenever one is asked for.
    #[must_use]
    pub fn with_passphrase(passphrase: &str) -> Unlock {
        let p = passphrase.to_owned();
        Unlock {
            passphrase: Some(Box::new(move |_| Ok(p.clone()))),
        }
    }

    fn ask(&self, what: &str) -> Result<String> {
        match &self.passphrase {
            Some(f) => f(what),
            None => Err(Error::VaultLocked(format!(
                "{what} needs the vault passphrase: set SHELLDONE_VAULT_PASSPHRASE or run on a terminal"
            ))),
        }
    }
}

/// The version of [`DeviceRecord`] this shelldone writes; a newer one is refused
/// ([`Error::NewerFormat`]), never rewritten.
pub const RECORD_VERSION: u32 = 1;

fn record_v1() -> u32 {
    1
}

/// The public record of this device's keys (`state/keys/device.json`, never synced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// [`RECORD_VERSION`]; a record written before records had one is version 1.
    #[serde(default = "record_v1")]
    pub version: u32,
    /// The name other devices trust this one under (the device id when the keys were made).
    pub name: String,
    /// Where the private halves are.
    pub backend: Backend,
    /// With the keyring backend: which store holds them (a record made before there was a
    /// choice has none: the kernel keyutils store, the only one then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<KeyringStore>,
    /// The age recipient (`age1…`).
    pub age: String,
    /// The Ed25519 public key in OpenSSH form (`ssh-ed25519 AAAA… NAME`).
    pub ssh: String,
}

/// `state/keys/`: this device's key record and (passphrase backend) its encrypted keys.
#[must_use]
pub fn keys_dir(cx: &Context) -> PathBuf {
    cx.paths.state_dir.join("keys")
}

fn record_path(cx: &Context) -> PathBuf {
    keys_dir(cx).join("device.json")
}

fn identity_path(cx: &Context) -> PathBuf {
    keys_dir(cx).join("device.age")
}

/// This device's key record, if `key init` (or `key import`) made one.
///
/// # Errors
/// A record that cannot be read or parsed.
pub fn record(cx: &Context) -> Result<Option<DeviceRecord>> {
    let p = record_path(cx);
    match std::fs::read(&p) {
        Ok(b) => {
            // The version first: a newer record may not parse as this one at all.
            #[derive(Deserialize)]
            struct Version {
                #[serde(default = "record_v1")]
                version: u32,
            }
            if let Ok(v) = serde_json::from_slice::<Version>(&b)
                && v.version > RECORD_VERSION
            {
                return Err(Error::NewerFormat {
                    what: format!("the device key record {}", p.display()),
                    found: v.version.to_string(),
                    supported: RECORD_VERSION.to_string(),
                });
            }
            serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::corrupt_file(&p, format!("not a device key record: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::file(e, "reading", p, "vault")),
    }
}

/// This device's key record, or the error that says to run `key init`.
///
/// # Errors
/// [`Error::VaultLocked`] when the device has no keys.
pub fn require_record(cx: &Context) -> Result<DeviceRecord> {
    record(cx)?.ok_or_else(|| {
        Error::VaultLocked(
            "this device has no keys yet: run 'shelldone key init' (or 'shelldone key import' with a paper recovery key)".into(),
        )
    })
}

/// The OpenSSH form of an Ed25519 public key: `ssh-ed25519 <base64> <comment>`.
#[must_use]
pub fn ssh_public(key: &ed25519_dalek::VerifyingKey, comment: &str) -> String {
    use base64::Engine;
    let mut blob = Vec::with_capacity(51);
    for part in [b"ssh-ed25519".as_slice(), key.as_bytes()] {
        blob.extend_from_slice(&u32::try_from(part.len()).unwrap_or(0).to_be_bytes());
        blob.extend_from_slice(part);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    if comment.is_empty() {
        format!("ssh-ed25519 {b64}")
    } else {
        format!("ssh-ed25519 {b64} {comment}")
    }
}

/// Parses the OpenSSH form of an Ed25519 public key (the comment is ignored).
///
/// # Errors
/// [`Error::Usage`] for anything else.
pub fn parse_ssh_public(s: &str) -> Result<ed25519_dalek::VerifyingKey> {
    use base64::Engine;
    let bad = || Error::Usage(format!("not an OpenSSH Ed25519 public key: '{s}'"));
    let mut parts = s.split_whitespace();
    if parts.next() != Some("ssh-ed25519") {
        return Err(bad());
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(parts.next().ok_or_else(bad)?)
        .map_err(|_| bad())?;
    let prefix = [&[0, 0, 0, 11][..], b"ssh-ed25519", &[0, 0, 0, 32]].concat();
    let key = blob.strip_prefix(prefix.as_slice()).ok_or_else(bad)?;
    let key: [u8; 32] = key.try_into().map_err(|_| bad())?;
    ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| bad())
}

/// Parses an age recipient (`age1…`).
///
/// # Errors
/// [`Error::Usage`] for anything else.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient> {
    s.trim()
        .parse()
        .map_err(|e| Error::Usage(format!("not an age recipient: '{s}': {e}")))
}

/// Parses an age identity (`AGE-SECRET-KEY-1…`), ignoring spaces, dashes between groups and
/// case, as a person copies a paper key back.
///
/// # Errors
/// [`Error::VaultLocked`] for anything else (a typo breaks the bech32 checksum).
pub fn parse_identity(s: &str) -> Result<age::x25519::Identity> {
    let compact: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let compact = match compact.strip_prefix("AGE-SECRET-KEY-1") {
        Some(rest) => format!("AGE-SECRET-KEY-1{}", rest.replace('-', "")),
        None => compact,
    };
    compact.parse().map_err(|_| {
        Error::VaultLocked(
            "not an age identity (AGE-SECRET-KEY-1…): a character is wrong or missing (the key has a checksum)".into(),
        )
    })
}

/// The secret text the backends keep: the age identity, then the Ed25519 seed in hex.
fn encode(keys: &DeviceKeys) -> SecretString {
    SecretString::from(format!(
        "{}\ned25519 {}\n",
        keys.age.to_string().expose_secret(),
        hex::encode(keys.signing.to_bytes())
    ))
}

fn decode(text: &str, from: &str) -> Result<DeviceKeys> {
    let bad = || Error::VaultLocked(format!("{from} does not hold shelldone device keys"));
    let mut lines = text.lines();
    let age: age::x25519::Identity = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(bad)?;
    let seed = lines
        .next()
        .and_then(|l| l.strip_prefix("ed25519 "))
        .and_then(|h| hex::decode(h.trim()).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(bad)?;
    Ok(DeviceKeys {
        age,
        signing: ed25519_dalek::SigningKey::from_bytes(&seed),
    })
}

/// New random device keys.
#[must_use]
pub fn generate() -> DeviceKeys {
    let seed: [u8; 32] = rand::random();
    DeviceKeys {
        age: age::x25519::Identity::generate(),
        signing: ed25519_dalek::SigningKey::from_bytes(&seed),
    }
}

/// The entry `user` of shelldone's service in `store`, chosen explicitly (never the crate's
/// default store).
fn entry_in(store: KeyringStore, user: &str) -> keyring::Result<keyring::Entry> {
    let cred: Box<keyring::credential::Credential> = match store {
        KeyringStore::SecretService => Box::new(
            keyring::secret_service::SsCredential::new_with_target(None, KEYRING_SERVICE, user)?,
        ),
        KeyringStore::Keyutils => Box::new(keyring::keyutils::KeyutilsCredential::new_with_target(
            None,
            KEYRING_SERVICE,
            user,
        )?),
    };
    Ok(keyring::Entry::new_with_credential(cred))
}

fn keyring_entry(store: KeyringStore, rec_age: &str) -> Result<keyring::Entry> {
    entry_in(store, &format!("device-key {rec_age}")).map_err(|e| {
        Error::VaultLocked(format!(
            "the OS keyring ({}) cannot be used here: {e}; use the passphrase backend ('shelldone key init --backend passphrase')",
            store.label()
        ))
    })
}

/// True when `store` answers here. The kernel store: a probe entry is written, read back and
/// deleted. The Secret Service (only when a session bus is set): a probe entry is looked up,
/// which a running service answers (with "no such entry") without writing anything, so without
/// asking to unlock a locked keyring (`vault status` never asks).
#[must_use]
pub fn store_works(store: KeyringStore) -> bool {
    if store == KeyringStore::SecretService {
        if !session_bus_set() {
            return false;
        }
        return match entry_in(store, &format!("probe {}", std::process::id())) {
            Ok(e) => matches!(e.get_password(), Ok(_) | Err(keyring::Error::NoEntry)),
            Err(_) => false,
        };
    }
    let probe = || -> std::result::Result<bool, keyring::Error> {
        let e = entry_in(store, &format!("probe {}", std::process::id()))?;
        let ok = e
            .set_password("probe")
            .and_then(|()| e.get_password())
            .map(|p| p == "probe");
        // Removed even when a step failed (a refused link leaves the key added).
        let _ = e.delete_credential();
        ok
    };
    probe().unwrap_or(false)
}

/// The store the keyring backend uses here for new keys: the Secret Service when a session bus
/// is set and the service answers, else the kernel keyutils store when it answers; `None` when
/// neither does.
#[must_use]
pub fn keyring_here() -> Option<KeyringStore> {
    [KeyringStore::SecretService, KeyringStore::Keyutils]
        .into_iter()
        .find(|s| store_works(*s))
}

/// The store that holds the keys of a keyring-backend record.
fn store_of(rec: &DeviceRecord) -> KeyringStore {
    rec.store.unwrap_or(KeyringStore::Keyutils)
}

impl DeviceRecord {
    /// The keyring store that holds this device's keys; `None` with the passphrase backend.
    #[must_use]
    pub fn keyring_store(&self) -> Option<KeyringStore> {
        (self.backend == Backend::Keyring).then(|| store_of(self))
    }
}

/// Keeps `keys` in `backend` for this device and writes its record. With the keyring backend,
/// `store` forces the store; `None` picks it as [`keyring_here`] does (the Secret Service when
/// a session bus answers, else keyutils). Nothing is written to the record before the private
/// halves are safely stored (and read back).
///
/// # Errors
/// The keyring refusing, a passphrase not given, I/O.
pub fn store(
    cx: &Context,
    keys: &DeviceKeys,
    backend: Backend,
    store: Option<KeyringStore>,
    unlock: &Unlock,
) -> Result<DeviceRecord> {
    let dir = keys_dir(cx);
    create_private_dir(&dir)?;
    let age_pub = keys.age.to_public().to_string();
    let store = match backend {
        Backend::Passphrase => None,
        Backend::Keyring => Some(store.unwrap_or_else(|| {
            if store_works(KeyringStore::SecretService) {
                KeyringStore::SecretService
            } else {
                KeyringStore::Keyutils
            }
        })),
    };
    let rec = DeviceRecord {
        version: RECORD_VERSION,
        name: cx.device.clone(),
        backend,
        store,
        age: age_pub.clone(),
        ssh: ssh_public(&keys.signing.verifying_key(), &cx.device),
    };
    let secret = encode(keys);
    match backend {
        Backend::Keyring => {
            let st = store_of(&rec);
            // Without a session bus libdbus would try to autolaunch one: refused here instead.
            if st == KeyringStore::SecretService && !session_bus_set() {
                return Err(Error::VaultLocked(format!(
                    "the Secret Service cannot keep this device's keys here: {SESSION_BUS_VAR} is not set (no desktop session bus); use '--backend keyutils' or '--backend passphrase'"
                )));
            }
            let e = keyring_entry(st, &age_pub)?;
            e.set_password(secret.expose_secret()).map_err(|e| {
                Error::VaultLocked(match st {
                    KeyringStore::Keyutils => format!(
                        "the OS keyring (kernel keyutils) refused to keep this device's keys ({e}); the kernel keyring needs a session keyring (a login session, or run under 'keyctl session'); else use '--backend passphrase'"
                    ),
                    KeyringStore::SecretService => format!(
                        "the Secret Service refused to keep this device's keys ({e}); {SESSION_BUS_VAR} must name a session bus on which a keyring daemon (GNOME Keyring, KWallet) answers, unlocked; else use '--backend keyutils' or '--backend passphrase'"
                    ),
                })
            })?;
            let back = e.get_password().map_err(|e| keyring_error(st, &e))?;
            if back != secret.expose_secret() {
                return Err(Error::VaultLocked(
                    "the OS keyring did not give back the key it was given".into(),
                ));
            }
        }
        Backend::Passphrase => {
            let pass = unlock.ask("a new passphrase for this device's keys")?;
            if pass.is_empty() {
                return Err(Error::Usage(
                    "the vault passphrase must not be empty".into(),
                ));
            }
            let mut r = age::scrypt::Recipient::new(SecretString::from(pass));
            r.set_work_factor(SCRYPT_LOG_N);
            let ct = encrypt_to(
                &[&r as &dyn age::Recipient],
                secret.expose_secret().as_bytes(),
            )?;
            write_private(&identity_path(cx), &ct)?;
        }
    }
    let json = serde_json::to_vec_pretty(&rec).map_err(|e| Error::Internal(e.to_string()))?;
    write_private(&record_path(cx), &json)?;
    Ok(rec)
}

fn keyring_error(store: KeyringStore, e: &keyring::Error) -> Error {
    match (store, e) {
        (KeyringStore::Keyutils, keyring::Error::NoEntry) => Error::VaultLocked(
            "the OS keyring has no key for this device (the kernel keyring forgets its keys at reboot, and is per login session): run in the session that made the keys, or restore access with 'shelldone key import' and your paper recovery key; nothing was changed".into(),
        ),
        (KeyringStore::SecretService, keyring::Error::NoEntry) => Error::VaultLocked(
            "the OS keyring (Secret Service) has no key for this device (the item was deleted, or this is another login keyring): restore access with 'shelldone key import' and your paper recovery key; nothing was changed".into(),
        ),
        (KeyringStore::SecretService, other) => secret_service_gone(&other.to_string()),
        (KeyringStore::Keyutils, other) => {
            Error::VaultLocked(format!("the OS keyring (kernel keyutils) failed: {other}"))
        }
    }
}

/// The keys are in the Secret Service, which does not answer here (`why`). Never a fall back
/// to another store: the keys are not there.
fn secret_service_gone(why: &str) -> Error {
    Error::VaultLocked(format!(
        "this device's keys are in the OS keyring's Secret Service, which does not answer here ({why}): run in the desktop session that made them (with its keyring unlocked), or restore access with 'shelldone key import' and your paper recovery key; nothing was changed"
    ))
}

/// This device's private keys, unlocked from where its record says they are. Checked against
/// the record's public keys, so a wrong identity is refused here, before anything is written.
///
/// # Errors
/// [`Error::VaultLocked`]: no keys yet, a wrong passphrase, a missing keyring entry, keys that
/// do not match the record.
pub fn device_keys(cx: &Context, unlock: &Unlock) -> Result<DeviceKeys> {
    let rec = require_record(cx)?;
    let keys = match rec.backend {
        Backend::Keyring => {
            let st = store_of(&rec);
            if st == KeyringStore::SecretService && !session_bus_set() {
                return Err(secret_service_gone(&format!(
                    "{SESSION_BUS_VAR} is not set"
                )));
            }
            let text = keyring_entry(st, &rec.age)?
                .get_password()
                .map_err(|e| keyring_error(st, &e))?;
            decode(&text, "the keyring entry")?
        }
        Backend::Passphrase => {
            let p = identity_path(cx);
            let ct = std::fs::read(&p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::VaultLocked(format!(
                        "{} is missing: this device's keys are gone; restore access with 'shelldone key import' and your paper recovery key",
                        p.display()
                    ))
                } else {
                    Error::file(e, "reading", &p, "vault")
                }
            })?;
            let pass = unlock.ask("unlocking this device's keys")?;
            let id = age::scrypt::Identity::new(SecretString::from(pass));
            let text = match decrypt_with(&ct, &[&id as &dyn age::Identity]) {
                Ok(t) => t,
                Err(DecryptFailure::NotForUs | DecryptFailure::Damaged(_)) => {
                    return Err(Error::VaultLocked(format!(
                        "wrong vault passphrase for {} (nothing was changed)",
                        p.display()
                    )));
                }
            };
            let text = String::from_utf8(text).map_err(|_| {
                Error::VaultLocked(format!("{} is not a device key file", p.display()))
            })?;
            decode(&text, &p.display().to_string())?
        }
    };
    if keys.age.to_public().to_string() != rec.age
        || ssh_public(&keys.signing.verifying_key(), "") != strip_comment(&rec.ssh)
    {
        return Err(Error::VaultLocked(
            "the unlocked keys are not this device's (its record names other public keys): wrong identity; nothing was changed".into(),
        ));
    }
    Ok(keys)
}

fn strip_comment(ssh: &str) -> String {
    ssh.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// After [`store`] replaced this device's keys: removes what held the `old` ones and is not
/// the new keys' (its keyring entry; its key file when the new keys are in the keyring). Best
/// effort: the new record no longer names them.
pub fn drop_old(cx: &Context, old: &DeviceRecord, new: &DeviceRecord) {
    if old.backend == Backend::Keyring
        && old.age != new.age
        && let Ok(e) = keyring_entry(store_of(old), &old.age)
    {
        let _ = e.delete_credential();
    }
    if old.backend == Backend::Passphrase && new.backend == Backend::Keyring {
        let _ = std::fs::remove_file(identity_path(cx));
    }
}

/// Why a decryption failed.
#[derive(Debug)]
pub(crate) enum DecryptFailure {
    /// None of the given identities is a recipient (or the passphrase is wrong).
    NotForUs,
    /// The file is not a well-formed age file, or its payload does not authenticate.
    Damaged(String),
}

/// Encrypts `plain` to `recipients` (the binary age format).
pub(crate) fn encrypt_to(recipients: &[&dyn age::Recipient], plain: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let enc = age::Encryptor::with_recipients(recipients.iter().copied())
        .map_err(|e| Error::Internal(format!("age encryption: {e}")))?;
    let mut out = Vec::with_capacity(plain.len() + 200 * recipients.len());
    let mut w = enc.wrap_output(&mut out)?;
    w.write_all(plain)?;
    w.finish()?;
    Ok(out)
}

/// Decrypts an age file with the first identity that opens it.
pub(crate) fn decrypt_with(
    ct: &[u8],
    ids: &[&dyn age::Identity],
) -> std::result::Result<Vec<u8>, DecryptFailure> {
    use std::io::Read;
    let d = age::Decryptor::new_buffered(ct).map_err(|e| DecryptFailure::Damaged(e.to_string()))?;
    let mut r = d.decrypt(ids.iter().copied()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys | age::DecryptError::KeyDecryptionFailed => {
            DecryptFailure::NotForUs
        }
        other => DecryptFailure::Damaged(other.to_string()),
    })?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .map_err(|e| DecryptFailure::Damaged(e.to_string()))?;
    Ok(out)
}

/// Creates `dir` (and its parents) and makes it 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    crate::store::durable::create_dir_all(dir).map_err(Error::at("creating", dir, "vault"))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::at("chmod", dir, "vault"))
}

/// Writes `data` to `target` atomically as a 0600 file: temp file (0600 from its creation) →
/// fsync → rename → fsync the folder.
pub(crate) fn write_private(target: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = crate::store::durable::tmp_path(dir);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, target)?;
        crate::store::durable::sync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(Error::at("writing", target, "vault"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_names_its_keyring_store_and_an_old_one_means_keyutils() {
        let old = r#"{"name":"a","backend":"keyring","age":"age1x","ssh":"ssh-ed25519 AAAA a"}"#;
        let rec: DeviceRecord = serde_json::from_str(old).unwrap();
        assert_eq!(rec.keyring_store(), Some(KeyringStore::Keyutils));
        assert_eq!(rec.version, 1, "a record without a version is version 1");
        let new = DeviceRecord {
            store: Some(KeyringStore::SecretService),
            ..rec.clone()
        };
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains(r#""store":"secret-service""#), "{json}");
        assert!(json.contains(r#""version":1"#), "{json}");
        let back: DeviceRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.keyring_store(), Some(KeyringStore::SecretService));
        let pass = DeviceRecord {
            backend: Backend::Passphrase,
            store: None,
            ..rec
        };
        assert_eq!(pass.keyring_store(), None);
        assert!(!serde_json::to_string(&pass).unwrap().contains("store"));
    }
}
