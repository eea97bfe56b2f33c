//! `shelldone backup run|list|verify|restore|prune` (issue #15).
//!
//! Keys, until the vault (issue #14) is merged: recipients come from `--recipient` and
//! `[backup] recipients`, identities from `--identity FILE`; the signing key and the trusted
//! keys from the hidden, test-only `--signing-key FILE` and `--trusted-keys FILE`. Once the
//! vault lands, the defaults come from `vault::recipients` (this device and the paper key),
//! `vault::device_keys(..).signing` and `vault::trusted_signers`.

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
            let recipients = parse_recipients(recipient.iter().chain(&cfg.recipients))?;
            let signer = signing_key.as_deref().map(read_signing_key).transpose()?;
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
            let trusted = read_trusted(keys)?;
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
        BackupCmd::Verify { id, all, dir, keys } => {
            let d = dir_or(dir);
            let ids = read_identities(keys)?;
            let trusted = read_trusted(keys)?;
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
                match backup::verify(b, trust, &scratch) {
                    Ok(v) => {
                        if !cli.json {
                            say(format!(
                                "{}: ok ({} objects, {} files round-tripped, signed by {})",
                                v.id,
                                v.objects,
                                v.files,
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
            let ids = read_identities(keys)?;
            let trusted = read_trusted(keys)?;
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

/// An age identity file: every `AGE-SECRET-KEY-1…` line.
fn read_identities(keys: &BackupKeys) -> Result<Vec<age::x25519::Identity>> {
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

/// TEST ONLY (until the vault): a signing key file, 64 hex.
fn read_signing_key(path: &Path) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&hex32(&read_text(path)?, path)?))
}

/// TEST ONLY (until the vault): trusted keys, `NAME HEX [revoked]` a line.
fn read_trusted(keys: &BackupKeys) -> Result<Vec<TrustedKey>> {
    let Some(path) = &keys.trusted_keys else {
        return Ok(Vec::new());
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
