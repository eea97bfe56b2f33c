//! `shelldone backup run|list|verify|restore|prune` (issue #15).
//!
//! Keys come from the vault (issue #14, docs/keys.md) once this device has them (`key init`):
//! - every bundle is encrypted to `vault::recipients` (this device, each trusted and unrevoked
//!   device, the paper key) and to `--recipient` / `[backup] recipients`;
//! - it is signed with this device's Ed25519 key (`vault::device_keys`, unlocked as every vault
//!   command unlocks: the keyring, `SHELLDONE_VAULT_PASSPHRASE` or a prompt; exit 8 when it
//!   cannot be);
//! - verify and restore decrypt with this device's age identity besides `--identity FILE`, and
//!   judge signatures against `vault::trusted_signers`.
//!
//! Without device keys a bundle is encrypted only to the recipients given, and unsigned. The
//! hidden `--signing-key FILE` and `--trusted-keys FILE` override the vault's keys (tests and
//! scripts that hold raw keys).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::args::{BackupCmd, BackupKeys, Cli};
use super::open::{config, open};
use super::output::say;
use super::{documents, out};
use crate::backup::{self, Policy, RunOptions, Trust, TrustedKey};
use crate::{Error, Result};

/// `backup …`.
/// True for the backup commands the audit trail keeps (run, restore, prune).
pub(super) fn audited(bc: &BackupCmd) -> bool {
    matches!(
        bc,
        BackupCmd::Run { .. } | BackupCmd::Restore { .. } | BackupCmd::Prune { .. }
    )
}

pub(super) fn run(cli: &Cli, bc: &BackupCmd) -> Result<ExitCode> {
    let st = open(cli)?;
    let cfg = config().backup;
    let dir_or = |d: &Option<PathBuf>| d.clone().unwrap_or_else(|| st.backup_dir());
    match bc {
        BackupCmd::Run {
            rev,
            to,
            if_due,
            recipient,
            signing_key,
        } => {
            let if_older_than = if *if_due {
                let h = cfg.every_hours.ok_or_else(|| {
                    Error::Usage(
                        "--if-due needs [backup] every_hours in the config file (docs/config.md)"
                            .into(),
                    )
                })?;
                Some(Duration::from_secs(u64::from(h) * 3600))
            } else {
                None
            };
            let mut recipients = parse_recipients(recipient.iter().chain(&cfg.recipients))?;
            let has_keys = crate::vault::keys::record(st.context())?.is_some();
            if has_keys {
                for r in crate::vault::recipients(st.context())? {
                    if !recipients.iter().any(|x| x.to_string() == r.to_string()) {
                        recipients.push(r);
                    }
                }
            }
            let signer = match signing_key {
                Some(f) => Some(read_signing_key(f)?),
                None if has_keys => Some(
                    crate::vault::device_keys(st.context(), &super::vault_cmd::unlock(true))?
                        .signing,
                ),
                None => None,
            };
            let o = st.backup_run(&RunOptions {
                rev: rev.clone(),
                to: to.clone(),
                recipients: &recipients,
                signer: signer.as_ref(),
                if_older_than,
            })?;
            if cli.json {
                documents::print(&o)?;
            } else {
                match &o.bundle {
                    Some(b) => say(format!(
                        "backed up {} to {} ({} objects, {} bytes{})",
                        &b.snapshot[..12],
                        b.path.display(),
                        o.objects,
                        b.size,
                        if b.encrypted { ", encrypted" } else { "" }
                    )),
                    None => say("backup not due yet (newer than [backup] every_hours)"),
                }
            }
        }
        BackupCmd::List { dir, keys } => {
            let trusted = read_trusted(&st, keys)?;
            let list = backup::list(&dir_or(dir), &trusted)?;
            if cli.json {
                documents::print(&list)?;
            } else if list.is_empty() {
                say("no backups");
            } else {
                for b in &list {
                    out(format!(
                        "{}  {}  {:>10}  {}  {}  {}",
                        b.id,
                        b.created,
                        b.size,
                        &b.snapshot[..12],
                        if b.encrypted {
                            "encrypted"
                        } else {
                            "plain    "
                        },
                        b.signed_by.describe()
                    ));
                }
            }
        }
        BackupCmd::Verify {
            id,
            all,
            full,
            dir,
            keys,
        } => {
            let d = dir_or(dir);
            let ids = read_identities(&st, keys)?;
            let trusted = read_trusted(&st, keys)?;
            let trust = Trust {
                identities: &ids,
                trusted: &trusted,
                require_signature: cfg.require_signature,
            };
            let bundles = if *all {
                backup::all_bundle_dirs(&d)?
            } else {
                vec![backup::locate(&d, id.as_deref().unwrap_or_default())?]
            };
            let scratch = st.paths().state_dir.join("backups");
            let mut done = Vec::new();
            let mut first_err = None;
            for b in &bundles {
                match backup::verify(b, trust, &scratch, *full) {
                    Ok(v) => {
                        if !cli.json {
                            say(format!(
                                "{}: ok ({} objects, {} of {} files round-tripped, signed by {})",
                                v.id,
                                v.objects,
                                v.files,
                                v.files_in_snapshot,
                                v.signed_by.describe()
                            ));
                        }
                        done.push(v);
                    }
                    Err(e) if first_err.is_none() => first_err = Some(e),
                    Err(e) => {
                        super::output::warn(cli, "backup", &b.to_string_lossy(), &e.to_string())
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
            if cli.json {
                documents::print(&done)?;
            }
        }
        BackupCmd::Restore {
            bundle,
            to,
            dir,
            keys,
        } => {
            let path = backup::locate(&dir_or(dir), bundle)?;
            let ids = read_identities(&st, keys)?;
            let trusted = read_trusted(&st, keys)?;
            let r = st.backup_restore(
                &path,
                Trust {
                    identities: &ids,
                    trusted: &trusted,
                    require_signature: cfg.require_signature,
                },
                to.clone(),
            )?;
            if cli.json {
                documents::print(&r)?;
            } else {
                say(format!(
                    "restored {} from {} ({} files changed)",
                    &r.snapshot[..12],
                    r.id,
                    r.changes
                ));
            }
        }
        BackupCmd::Prune {
            dir,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            dry_run,
        } => {
            let d = dir_or(dir);
            let pick = |flag: &Option<u32>, i: usize| flag.or(cfg.keep[i]).unwrap_or(0);
            let policy = Policy {
                last: pick(keep_last, 0),
                hourly: pick(keep_hourly, 1),
                daily: pick(keep_daily, 2),
                weekly: pick(keep_weekly, 3),
                monthly: pick(keep_monthly, 4),
            };
            if policy.is_empty() {
                return Err(Error::Usage(
                    "backup prune: no keep rule (give --keep-last … or set [backup] keep_*)".into(),
                ));
            }
            let list = backup::list(&d, &[])?;
            let mut p = backup::prune::prune(&d, &list, &policy, *dry_run, None)?;
            if !*dry_run {
                p.reflog_expired = st.backup_expire_reflog(&policy)?;
            }
            if cli.json {
                documents::print(&p)?;
            } else {
                let verb = if *dry_run { "would drop" } else { "dropped" };
                for id in &p.dropped {
                    out(format!("{verb} {id}"));
                }
                say(format!(
                    "kept {}, {verb} {}, deleted {} leftover(s) older than the grace period; {} reflog line(s) expired",
                    p.kept.len(),
                    p.dropped.len(),
                    p.deleted.len(),
                    p.reflog_expired
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_recipients<'a>(
    keys: impl Iterator<Item = &'a String>,
) -> Result<Vec<age::x25519::Recipient>> {
    keys.map(|k| {
        age::x25519::Recipient::from_str(k)
            .map_err(|e| Error::Usage(format!("bad age recipient '{k}': {e}")))
    })
    .collect()
}

fn read_text(path: &Path) -> Result<String> {
    fs_err::read_to_string(path).map_err(|e| Error::Usage(format!("{e}")))
}

/// The identities to decrypt with: every `AGE-SECRET-KEY-1…` line of each `--identity` file,
/// then this device's own age identity when it has keys and they unlock (when they do not, the
/// files given may still be enough: a bundle none of them opens is refused, exit 8).
fn read_identities(st: &crate::State, keys: &BackupKeys) -> Result<Vec<age::x25519::Identity>> {
    let mut ids = identity_files(keys)?;
    if crate::vault::keys::record(st.context())?.is_some() {
        match crate::vault::device_keys(st.context(), &super::vault_cmd::unlock(ids.is_empty())) {
            Ok(k) => ids.push(k.age),
            Err(e) if ids.is_empty() => return Err(e),
            Err(_) => {}
        }
    }
    Ok(ids)
}

/// An age identity file: every `AGE-SECRET-KEY-1…` line.
fn identity_files(keys: &BackupKeys) -> Result<Vec<age::x25519::Identity>> {
    let mut out = Vec::new();
    for f in &keys.identity {
        let text = read_text(f)?;
        let before = out.len();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(age::x25519::Identity::from_str(line).map_err(|e| {
                Error::Usage(format!("{}: not an age identity file: {e}", f.display()))
            })?);
        }
        if out.len() == before {
            return Err(Error::Usage(format!(
                "{}: no AGE-SECRET-KEY-1 line",
                f.display()
            )));
        }
    }
    Ok(out)
}

fn hex32(s: &str, what: &Path) -> Result<[u8; 32]> {
    hex::decode(s.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Usage(format!("{}: not 64 hex characters", what.display())))
}

/// A raw signing key file, 64 hex (the hidden `--signing-key`; the vault's key otherwise).
fn read_signing_key(path: &Path) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&hex32(&read_text(path)?, path)?))
}

/// The signing keys a bundle's signature is judged against: the vault's trust list
/// (`key trust`, `key revoke`), or the hidden `--trusted-keys FILE` (`NAME HEX [revoked]` a
/// line) when given.
fn read_trusted(st: &crate::State, keys: &BackupKeys) -> Result<Vec<TrustedKey>> {
    let Some(path) = &keys.trusted_keys else {
        let mut out: Vec<TrustedKey> = crate::vault::trusted_signers(st.context())?
            .into_iter()
            .map(|k| TrustedKey {
                name: k.name,
                verifying: k.verifying,
                revoked: k.revoked,
            })
            .collect();
        // This device trusts its own key, listed or not (a device that never ran `key trust`
        // still verifies its own bundles).
        if let Some(me) = crate::vault::keys::record(st.context())? {
            let verifying = crate::vault::keys::parse_ssh_public(&me.ssh)?;
            if !out.iter().any(|k| k.verifying == verifying) {
                out.push(TrustedKey {
                    name: me.name,
                    verifying,
                    revoked: false,
                });
            }
        }
        return Ok(out);
    };
    let mut out = Vec::new();
    for line in read_text(path)?.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (name, key, revoked) = match w.as_slice() {
            [] => continue,
            [n, k] => (n, k, false),
            [n, k, "revoked"] => (n, k, true),
            _ => {
                return Err(Error::Usage(format!(
                    "{}: want NAME HEX [revoked]",
                    path.display()
                )));
            }
        };
        let verifying = VerifyingKey::from_bytes(&hex32(key, path)?)
            .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
        out.push(TrustedKey {
            name: (*name).to_owned(),
            verifying,
            revoked,
        });
    }
    Ok(out)
}
