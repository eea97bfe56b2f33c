//! A bundle's manifest (`manifest.json`) and its signature (`manifest.sig`), SPEC §13.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `format` of every manifest.
pub const FORMAT: &str = "shelldone-backup";
/// The manifest version this shelldone writes (2: the data file is a store pack with blocks,
/// SPEC §13.2); it reads 1 too.
pub const VERSION: u32 = 2;
/// The oldest manifest version this shelldone reads.
pub const OLDEST: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The signature's file name.
pub const SIGNATURE: &str = "manifest.sig";

/// One file of a bundle (or the pack inside it), with its checksum.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    /// File name in the bundle directory (`pack` for the pack inside the data file).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 (plain hash, 64 lower-case hex).
    pub blake3: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The bundle's id (its directory's name).
    pub id: String,
    /// The snapshot backed up (64 hex).
    pub snapshot: String,
    /// When the backup was made: nanoseconds since the Unix epoch, UTC.
    pub created_ns: i64,
    /// The same, as `YYYY-MM-DDTHH:MM:SSZ`.
    pub created: String,
    /// The device that made it.
    pub device: String,
    /// Objects in the pack.
    pub objects: u64,
    /// The age recipients the data file is encrypted to (empty: not encrypted).
    pub recipients: Vec<String>,
    /// The data file.
    pub data: Part,
    /// The pack the data file holds, after decryption (version 1: and decompression).
    pub pack: Part,
}

/// `manifest.sig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignatureFile {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The verifying key (64 hex).
    pub key: String,
    /// The signature of the exact bytes of `manifest.json` (128 hex).
    pub signature: String,
}

/// A signing key the caller trusts (or has revoked).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Its name (a device name).
    pub name: String,
    /// The key.
    pub verifying: VerifyingKey,
    /// Revoked: its signatures are not trusted.
    pub revoked: bool,
}

/// Who signed a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SignedBy {
    /// No `manifest.sig`.
    Unsigned,
    /// A trusted key.
    Trusted {
        /// The key's name.
        name: String,
    },
    /// A valid signature by a key not in the trusted list.
    Untrusted {
        /// The key (hex).
        key: String,
    },
    /// A valid signature by a revoked key.
    Revoked {
        /// The key's name.
        name: String,
    },
}

impl SignedBy {
    /// For `list`: `-`, the name, or what is wrong.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            SignedBy::Unsigned => "-".into(),
            SignedBy::Trusted { name } => name.clone(),
            SignedBy::Untrusted { key } => format!("untrusted key {}", &key[..16.min(key.len())]),
            SignedBy::Revoked { name } => format!("{name} (revoked)"),
        }
    }
}

/// Signs `manifest` bytes.
#[must_use]
pub fn sign(key: &SigningKey, manifest: &[u8]) -> SignatureFile {
    SignatureFile {
        algorithm: "ed25519".into(),
        key: hex::encode(key.verifying_key().as_bytes()),
        signature: hex::encode(key.sign(manifest).to_bytes()),
    }
}

/// Who signed the manifest bytes of `bundle`, checked against `trusted`.
///
/// # Errors
/// [`Error::BackupSignature`] for a signature file that does not parse or does not verify.
pub fn signer(
    bundle: &Path,
    manifest: &[u8],
    sig: Option<&[u8]>,
    trusted: &[TrustedKey],
) -> Result<SignedBy> {
    let Some(sig) = sig else {
        return Ok(SignedBy::Unsigned);
    };
    let bad = |why: &str| Error::BackupSignature {
        bundle: bundle.to_path_buf(),
        why: why.into(),
    };
    let s: SignatureFile =
        serde_json::from_slice(sig).map_err(|_| bad("manifest.sig does not parse"))?;
    if s.algorithm != "ed25519" {
        return Err(bad("manifest.sig: unknown algorithm"));
    }
    let key: [u8; 32] = hex::decode(&s.key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| bad("manifest.sig: bad key"))?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("manifest.sig: bad key"))?;
    let sigb: [u8; 64] = hex::decode(&s.signature)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| bad("manifest.sig: bad signature"))?;
    key.verify(manifest, &Signature::from_bytes(&sigb))
        .map_err(|_| bad("the manifest's signature does not verify (the manifest was changed)"))?;
    Ok(match trusted.iter().find(|t| t.verifying == key) {
        Some(t) if t.revoked => SignedBy::Revoked {
            name: t.name.clone(),
        },
        Some(t) => SignedBy::Trusted {
            name: t.name.clone(),
        },
        None => SignedBy::Untrusted { key: s.key },
    })
}

/// Refuses a signer that is not trusted when signatures are required.
///
/// # Errors
/// [`Error::BackupSignature`].
pub fn require(bundle: &Path, signer: &SignedBy, required: bool) -> Result<()> {
    let why = match signer {
        SignedBy::Trusted { .. } => return Ok(()),
        _ if !required => return Ok(()),
        SignedBy::Unsigned => "the bundle is not signed, and [backup] require_signature is set",
        SignedBy::Untrusted { .. } => "the bundle is signed by a key this device does not trust",
        SignedBy::Revoked { .. } => "the bundle is signed by a revoked key",
    };
    Err(Error::BackupSignature {
        bundle: bundle.to_path_buf(),
        why: why.into(),
    })
}

/// Parses manifest bytes.
///
/// # Errors
/// [`Error::BackupDamaged`] when they do not parse or are another format or a newer version.
pub fn parse(bundle: &Path, bytes: &[u8]) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| super::bundle::damaged(bundle, format!("manifest.json: {e}")))?;
    if m.format != FORMAT {
        return Err(super::bundle::damaged(
            bundle,
            "manifest.json: not a shelldone backup",
        ));
    }
    if !(OLDEST..=VERSION).contains(&m.version) {
        return Err(super::bundle::damaged(
            bundle,
            format!(
                "manifest.json: version {} (this shelldone reads {OLDEST} to {VERSION}{})",
                m.version,
                if m.version > VERSION {
                    "; a newer shelldone wrote it"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(m)
}
