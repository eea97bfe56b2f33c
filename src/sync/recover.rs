//! `key import --remote NAME`: a device whose keys are all lost gets back in through a remote
//! with the paper recovery key alone (docs/keys.md, "When a device is lost").
//!
//! An encrypted remote's key file is wrapped for the paper key as well as for every trusted
//! device (ADR 0010), so the paper key opens it: the pull reads the remote with it, which
//! brings the vault (`paper.pub`, the trust list, the secrets) here; `key import` then checks
//! the key against that vault, gives this device new keys and puts it on the trust list; last,
//! the remote's key file is re-wrapped for the new keys (still opened with the paper key), so
//! from then on this device pushes and pulls with its own keys like any other.

use super::pull::{PullOptions, PullReport, pull_with};
use super::remotes::{open_protected, remote_config};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::remote::Progress;
use crate::vault::{Backend, Imported, KeyringStore, Unlock};

/// What [`recover`] did.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The pull through the paper key.
    pub pull: PullReport,
    /// The import: this device's keys, and the secrets re-encrypted to include it.
    pub imported: Imported,
    /// The remote's key file was re-wrapped for this device (an encrypted remote).
    pub rewrapped: bool,
}

/// Pulls `remote` reading it with the paper key `paper`, imports the key (new device keys in
/// `backend`, unless this device has working ones), then re-wraps an encrypted remote's key
/// file for this device. A wrong paper key is refused when the key file does not open with it,
/// before anything is written; a plain remote is pulled as it is.
///
/// # Errors
/// [`Error::VaultLocked`] (a paper key the remote or the vault does not know), a remote that
/// requires signatures without being encrypted (the paper key cannot vouch for its signers),
/// the pull's and the import's errors.
pub fn recover(
    cx: &Context,
    remote: &str,
    paper: &str,
    backend: Backend,
    store: Option<KeyringStore>,
    unlock: &Unlock,
    progress: Progress<'_>,
) -> Result<Recovered> {
    let id = crate::vault::keys::parse_identity(paper)?;
    let rc = remote_config(cx, remote)?;
    if rc.require_signatures && !rc.encrypt {
        return Err(Error::Usage(format!(
            "remote '{remote}' requires signed refs but is not encrypted: the paper key does not open it, and a device without keys cannot check its signers. Run 'shelldone key init', 'shelldone key trust' a device you know, then 'shelldone sync pull {remote}' and 'shelldone key import'; nothing was changed"
        )));
    }
    let pull = pull_with(cx, remote, &PullOptions::default(), progress, Some(&id))?;
    let imported = crate::vault::import(cx, paper, backend, store, unlock)?;
    let rewrapped = if rc.encrypt {
        let _lock = cx.lock("key import")?;
        // Opening for a push re-wraps the key file for this device's (new) keys; nothing else
        // is written: no object, no ref.
        drop(open_protected(cx, &rc, true, Some(&id))?);
        true
    } else {
        false
    };
    Ok(Recovered {
        pull,
        imported,
        rewrapped,
    })
}
