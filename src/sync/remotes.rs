//! The configured remotes (`remotes.json`), opening one (git, or a directory or an S3 prefix
//! through the transfer), and renaming this device.

use std::path::PathBuf;

use fs_err as fs;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::remote::RemoteConfig;
use crate::remote::crypt::{Access, Encrypted, Mode};
use crate::remote::dir::DirRemote;
use crate::remote::git::GitRemote;
use crate::remote::gitblobs::GitBlobs;
use crate::remote::s3::{S3Remote, is_s3_url};
use crate::remote::sign::{Signed, Trust};
use crate::remote::{Backend, Remote, is_git_url};
use crate::store::durable;
use crate::store::refs::HEAD;
use crate::transfer::PlainRemote;

pub(super) fn remotes_path(st: &Context) -> PathBuf {
    st.snapshots_dir().join("remotes.json")
}

/// Configured remotes.
///
/// # Errors
/// Unreadable config.
pub fn remotes(cx: &Context) -> Result<Vec<RemoteConfig>> {
    match std::fs::read(remotes_path(cx)) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::corrupt_file(remotes_path(cx), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn write_remotes(cx: &Context, r: &[RemoteConfig]) -> Result<()> {
    durable::write_atomic(
        &remotes_path(cx),
        &serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?,
    )?;
    Ok(())
}

/// Adds a remote. A URL git understands (or a path to a git repository, or ending in
/// `.git`) is a git remote; `s3://bucket/prefix` an S3 remote; any other path a directory
/// remote.
///
/// # Errors
/// Duplicate or invalid name.
pub fn remote_add(cx: &Context, name: &str, url: &str, init: bool) -> Result<RemoteConfig> {
    remote_add_with(
        cx,
        name,
        url,
        &RemoteOptions {
            init,
            ..RemoteOptions::default()
        },
    )
}

/// How `remote add` sets a remote up.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// Create the directory or S3 remote.
    pub init: bool,
    /// Encrypt everything the remote receives (implies `require_signatures`).
    pub encrypt: bool,
    /// Refuse refs that are not signed by a trusted device.
    pub require_signatures: bool,
    /// An S3 remote's endpoint (over `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// An S3 remote's region (over `AWS_REGION`).
    pub region: Option<String>,
}

/// [`remote_add`] with `--encrypt` and `--require-signatures` (ADR 0010; both need this
/// device's keys, `shelldone key init`; a git URL takes signatures only with `--encrypt`: its
/// plain form keeps browsable commits), and an S3 remote's own endpoint and region. A directory
/// or S3 remote must exist already, or be created by `init`; an S3 remote is checked by reading
/// its marker, so wrong credentials or a wrong bucket are found here.
///
/// # Errors
/// Duplicate or invalid name, no device keys for a protected remote, S3 options for a remote
/// that is not S3, a remote that does not exist (without `init`), an unreachable S3 service.
pub fn remote_add_with(
    cx: &Context,
    name: &str,
    url: &str,
    opts: &RemoteOptions,
) -> Result<RemoteConfig> {
    let init = opts.init;
    if !crate::remote::dir::ref_component_ok(name) || name.contains('%') {
        return Err(Error::Usage(format!(
            "invalid remote name '{name}': use letters, digits, '.', '_', '-'"
        )));
    }
    let _lock = cx.lock("remote add")?;
    let mut all = remotes(cx)?;
    if all.iter().any(|r| r.name == name) {
        return Err(Error::Usage(format!(
            "remote '{name}' already exists; 'shelldone remote remove {name}' first"
        )));
    }
    let s3_url = is_s3_url(url);
    if !s3_url && (opts.endpoint.is_some() || opts.region.is_some()) {
        return Err(Error::Usage(format!(
            "--endpoint and --region are for S3 remotes (s3://BUCKET/PREFIX); '{url}' is not one"
        )));
    }
    let url = if s3_url {
        crate::remote::s3::S3Url::parse(url)?.to_string()
    } else if is_git_url(url) || url.contains("://") {
        url.to_owned()
    } else {
        std::path::absolute(url).map_or_else(|_| url.to_owned(), |p| p.display().to_string())
    };
    let kind = if s3_url {
        "s3"
    } else if is_git_url(&url) {
        "git"
    } else {
        "dir"
    };
    let require_signatures = opts.require_signatures || opts.encrypt;
    if require_signatures {
        if kind == "git" && !opts.encrypt {
            return Err(Error::Usage(format!(
                "--require-signatures on a git remote needs --encrypt: a plain git remote keeps browsable commits, whose refs are not signed records ('{url}'); nothing was added"
            )));
        }
        if crate::vault::keys::record(cx)?.is_none() {
            return Err(Error::Usage(
                "an encrypted or signed remote needs this device's keys: run 'shelldone key init' first (nothing was added)".into(),
            ));
        }
    }
    let rc = RemoteConfig {
        name: name.to_owned(),
        url: url.clone(),
        kind: kind.to_owned(),
        endpoint: opts.endpoint.clone(),
        region: opts.region.clone(),
        encrypt: opts.encrypt,
        require_signatures,
    };
    if kind == "dir" {
        // A directory remote is created on purpose, so that a typo or an unmounted disk
        // is an error rather than a new, empty remote.
        let d = DirRemote::new(name.to_owned(), PathBuf::from(&url));
        if init {
            d.init()?;
        } else if !d.exists()? {
            return Err(Error::Usage(format!(
                "{url} is not a shelldone directory remote; to create one there: 'shelldone remote add {name} {url} --init'"
            )));
        }
    } else if kind == "s3" {
        // The same for S3: a typo'd bucket or prefix is an error, never a new remote.
        let mut r = s3_backend(cx, &rc)?;
        if init {
            r.init()?;
        } else if !r.exists()? {
            return Err(Error::Usage(format!(
                "{url} is not a shelldone S3 remote; to create one there: 'shelldone remote add {name} {url} --init'"
            )));
        }
    }
    all.push(rc.clone());
    write_remotes(cx, &all)?;
    Ok(rc)
}

/// What `remote upgrade` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Upgraded {
    /// The remote's name.
    pub remote: String,
    /// Its layout version before.
    pub from: u32,
    /// Its layout version now.
    pub to: u32,
}

/// Raises a remote's layout version (a directory or S3 remote's marker, a git remote's
/// `refs/shelldone/format/<N>` ref) to this shelldone's on purpose (docs/migrations.md,
/// "Remote versions"): until then a newer device writes the remote at the version it found, so
/// that older devices keep reading it.
///
/// # Errors
/// Unknown remote; an encrypted or signed git remote (its blobs layout has one version);
/// a remote newer than this binary ([`Error::NewerFormat`]); remote errors.
pub fn remote_upgrade(cx: &Context, name: &str) -> Result<Upgraded> {
    let rc = remote_config(cx, name)?;
    let (from, to) = match rc.kind.as_str() {
        "git" if rc.encrypt || rc.require_signatures => {
            return Err(Error::Usage(format!(
                "remote {name} is an encrypted or signed git remote: its layout has one version (docs/migrations.md), nothing to upgrade"
            )));
        }
        "git" => {
            clear_stale_git_locks(
                &cx.snapshots_dir()
                    .join("remotes")
                    .join(format!("{}.git", rc.name)),
            )?;
            let (push, fetch) = cx.git_timeouts;
            GitRemote::new(&rc.name, &rc.url, cx.snapshots_dir(), cx.device())?
                .with_options(crate::remote::git::GitOptions::configured(push, fetch)?)
                .upgrade()?
        }
        "s3" => s3_backend(cx, &rc)?.upgrade()?,
        _ => DirRemote::new(rc.name.clone(), PathBuf::from(&rc.url)).upgrade()?,
    };
    Ok(Upgraded {
        remote: rc.name,
        from,
        to,
    })
}

/// Removes a remote (and its tracking refs and git mirror).
///
/// # Errors
/// Unknown remote.
pub fn remote_remove(cx: &Context, name: &str) -> Result<()> {
    let _lock = cx.lock("remote remove")?;
    let mut all = remotes(cx)?;
    let before = all.len();
    all.retain(|r| r.name != name);
    if all.len() == before {
        return Err(Error::UnknownRemote(name.to_owned()));
    }
    write_remotes(cx, &all)?;
    for (r, _) in cx.refs.list(&format!("remotes/{name}/"))? {
        cx.refs.set(&r, None, "remote removed")?;
    }
    let mirror = cx
        .snapshots_dir()
        .join("remotes")
        .join(format!("{name}.git"));
    if mirror.exists() {
        fs::remove_dir_all(mirror)?;
    }
    let seen = cx
        .snapshots_dir()
        .join("remotes")
        .join(format!("{name}.signed-refs.json"));
    let verified = crate::remote::sign::cache_path(&seen);
    for cache in [
        seen.with_file_name(format!("{name}.encrypted-refs.json")),
        seen.with_file_name(format!("{name}.key-file")),
    ] {
        if cache.exists() {
            fs::remove_file(cache)?;
        }
    }
    if seen.exists() {
        fs::remove_file(seen)?;
    }
    if verified.exists() {
        fs::remove_file(verified)?;
    }
    Ok(())
}

pub(super) fn remote_config(cx: &Context, name: &str) -> Result<RemoteConfig> {
    remotes(cx)?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| Error::UnknownRemote(name.to_owned()))
}

/// Opens a configured remote: git is a graph-shaped target of its own; a directory is a plain
/// backend, which the transfer module drives. An encrypted or signed remote is its plain
/// backend wrapped in the decorators ([`open_protected`]); `write` says whether this is a push
/// (which may write the remote's key file and signs what it publishes).
pub(super) fn open_remote(cx: &Context, name: &str, write: bool) -> Result<Box<dyn Remote>> {
    open_remote_with(cx, name, write, None)
}

/// [`open_remote`], with the paper recovery key (`key import --remote`): it opens an encrypted
/// remote's key file too, and lets a device that has no keys yet read a protected remote.
pub(super) fn open_remote_with(
    cx: &Context,
    name: &str,
    write: bool,
    recovery: Option<&age::x25519::Identity>,
) -> Result<Box<dyn Remote>> {
    let rc = remote_config(cx, name)?;
    if rc.encrypt || rc.require_signatures {
        return open_protected(cx, &rc, write, recovery);
    }
    Ok(if rc.kind == "git" {
        clear_stale_git_locks(
            &cx.snapshots_dir()
                .join("remotes")
                .join(format!("{}.git", rc.name)),
        )?;
        let (push, fetch) = cx.git_timeouts;
        let r = GitRemote::new(&rc.name, &rc.url, cx.snapshots_dir(), cx.device())?
            .with_options(crate::remote::git::GitOptions::configured(push, fetch)?);
        Box::new(r)
    } else {
        Box::new(PlainRemote::new(open_backend(cx, &rc)?))
    })
}

/// A plain remote's backend (a directory or an S3 prefix); it must exist already.
pub(super) fn open_backend(cx: &Context, rc: &RemoteConfig) -> Result<Box<dyn Backend>> {
    Ok(if rc.kind == "s3" {
        let mut r = s3_backend(cx, rc)?;
        if !r.exists()? {
            return Err(Error::Remote {
                remote: rc.name.clone(),
                why: format!(
                    "{} is not a shelldone S3 remote (no {} object under the prefix: a wrong bucket, prefix or endpoint?); nothing was changed",
                    rc.url,
                    crate::remote::s3::MARKER
                ),
                transient: false,
                source: None,
            });
        }
        Box::new(r)
    } else {
        Box::new(open_dir(rc)?)
    })
}

/// An S3 remote's backend, with the AWS settings the command was given.
fn s3_backend(cx: &Context, rc: &RemoteConfig) -> Result<S3Remote> {
    S3Remote::open(
        rc.name.clone(),
        &rc.url,
        rc.endpoint.as_deref(),
        rc.region.as_deref(),
        &cx.aws,
    )
}

/// This device's keys, unlocked with the passphrase the caller installed, once per process.
fn device_keys(cx: &Context) -> Result<crate::vault::DeviceKeys> {
    type Kept = (age::x25519::Identity, ed25519_dalek::SigningKey);
    let record = crate::vault::keys::require_record(cx)?;
    if let Some(k) = cx
        .unlocked
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .and_then(|a| a.downcast::<Kept>().ok())
        && k.0.to_public().to_string() == record.age
    {
        return Ok(crate::vault::DeviceKeys {
            age: k.0.clone(),
            signing: k.1.clone(),
        });
    }
    let unlock = crate::vault::Unlock {
        passphrase: cx
            .passphrase
            .clone()
            .map(|p| Box::new(move |what: &str| (p.0)(what)) as Box<crate::vault::keys::Prompt>),
    };
    let k = crate::vault::device_keys(cx, &unlock)?;
    if let Ok(mut g) = cx.unlocked.lock() {
        let kept: Kept = (k.age.clone(), k.signing.clone());
        *g = Some(std::sync::Arc::new(kept));
    }
    Ok(k)
}

/// An encrypted and/or signed remote: the plain backend (a directory, or a git repository of
/// blobs), [`Encrypted`] over it for `--encrypt`, and [`Signed`] over that. With `recovery`
/// (the paper key) a device that has no keys yet may read it: the paper key opens the key
/// file, and the signers it names are trusted on first use, as on a joining device.
pub(super) fn open_protected(
    cx: &Context,
    rc: &RemoteConfig,
    write: bool,
    recovery: Option<&age::x25519::Identity>,
) -> Result<Box<dyn Remote>> {
    let plain: Box<dyn Backend> = if rc.kind == "git" {
        let mirror = cx
            .snapshots_dir()
            .join("remotes")
            .join(format!("{}.git", rc.name));
        clear_stale_git_locks(&mirror)?;
        let (push, fetch) = cx.git_timeouts;
        let o = crate::remote::git::GitOptions::configured(push, fetch)?;
        Box::new(GitBlobs::new(
            &rc.name,
            &rc.url,
            &mirror,
            o.idle_timeout,
            o.fetch_idle_timeout,
        ))
    } else {
        open_backend(cx, rc)?
    };
    // Without keys, only a read with the paper key: a push signs, so it needs them.
    let me = match recovery {
        Some(_) if !write => crate::vault::keys::record(cx)?,
        _ => Some(crate::vault::keys::require_record(cx)?),
    };
    let own = me
        .as_ref()
        .map(|m| crate::vault::keys::parse_ssh_public(&m.ssh))
        .transpose()?;
    let list = crate::vault::trust_list(cx)?;
    let mut trust = Trust {
        trusted: me
            .as_ref()
            .zip(own)
            .map(|(m, o)| (m.name.clone(), o))
            .into_iter()
            .collect(),
        revoked: Vec::new(),
    };
    for e in &list {
        let vk = crate::vault::keys::parse_ssh_public(&e.ssh)?;
        if e.revoked {
            trust.revoked.push((e.name.clone(), vk));
        } else if Some(vk) != own {
            trust.trusted.push((e.name.clone(), vk));
        }
    }
    // Keys are unlocked only when needed: to open an encrypted remote's key file, or to sign.
    let keys = if me.is_some() && (rc.encrypt || write) {
        match device_keys(cx) {
            Ok(k) => Some(k),
            // Keys that no longer unlock (a rebooted keyutils store): the paper key reads.
            Err(_) if recovery.is_some() && !write => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let seen = cx
        .snapshots_dir()
        .join("remotes")
        .join(format!("{}.signed-refs.json", rc.name));
    let backend: Box<dyn Backend> = match (&keys, rc.encrypt) {
        (_, true) => {
            let (identity, recovery) = match (&keys, recovery) {
                (Some(k), r) => (k.age.clone(), r.cloned()),
                (None, Some(r)) => (r.clone(), None),
                (None, None) => {
                    return Err(Error::Internal(
                        "an encrypted remote opened without keys nor a paper key".into(),
                    ));
                }
            };
            let access = Access {
                identity,
                recovery,
                signing: keys.as_ref().map(|k| k.signing.clone()),
                recipients: crate::vault::recipients(cx)?
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                revoked: list
                    .iter()
                    .filter(|e| e.revoked)
                    .map(|e| e.age.clone())
                    .collect(),
                signers: trust.trusted.clone(),
                revoked_signers: trust.revoked.iter().map(|r| r.1).collect(),
            };
            let mode = if write { Mode::Write } else { Mode::Read };
            let here = cx.snapshots_dir().join("remotes");
            let enc = Encrypted::open_cached(
                plain,
                &access,
                mode,
                Some(here.join(format!("{}.key-file", rc.name))),
            )?
            .with_cache(here.join(format!("{}.encrypted-refs.json", rc.name)));
            // The devices the key file names (it was signed by one this device trusts, or,
            // on a device joining, taken on first use) sign refs too.
            if let Some(k) = enc.keyring() {
                for (n, v) in &k.signers {
                    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(v) else {
                        continue;
                    };
                    let revoked =
                        trust.revoked.iter().any(|r| r.1 == vk) || k.revoked_signers.contains(v);
                    if !revoked && !trust.trusted.iter().any(|t| t.1 == vk) {
                        trust.trusted.push((n.clone(), vk));
                    }
                }
            }
            Box::new(enc)
        }
        _ => plain,
    };
    let signing = if write { keys.map(|k| k.signing) } else { None };
    let signed = Signed::open(backend, signing, trust, seen)?;
    Ok(Box::new(PlainRemote::new(signed)))
}

/// A directory remote's backend; it must exist already.
pub(super) fn open_dir(rc: &RemoteConfig) -> Result<DirRemote> {
    let d = DirRemote::new(rc.name.clone(), PathBuf::from(&rc.url));
    if !d.exists()? {
        return Err(Error::Remote {
            remote: rc.name.clone(),
            why: format!(
                "the directory remote at {} is missing or not initialised (an unmounted disk? a moved folder?); nothing was changed. If it really is gone: 'shelldone remote remove {}' then 'shelldone remote add {} PATH --init'",
                rc.url, rc.name, rc.name
            ),
            // An unmounted disk or an unreachable share may be back later.
            transient: true,
            source: None,
        });
    }
    Ok(d)
}

/// Renames this device (its refs on remotes are written under the new name from the next
/// push; the old name's refs become another device's, merged on the next pull).
///
/// # Errors
/// An invalid name, the current name, lock, I/O.
pub fn device_rename(cx: &mut Context, new: &str) -> Result<()> {
    if !crate::remote::dir::ref_component_ok(new) || new.contains('%') || new.len() > 64 {
        return Err(Error::Usage(format!(
            "invalid device name '{new}': use letters, digits, '.', '_', '-' (at most 64)"
        )));
    }
    if new == cx.device() {
        return Err(Error::Usage(format!(
            "this device is already named '{new}'"
        )));
    }
    let _lock = cx.lock("device rename")?;
    // The reflog first: it is what tells a renamed `device` file from a damaged one.
    if let Some(h) = cx.refs.get(HEAD)? {
        cx.refs.repair_log(
            &[(HEAD, Some(h), Some(h))],
            &format!("{}{} -> {new}", crate::context::DEVICE_RENAME, cx.device()),
        )?;
    }
    durable::write_atomic(
        &cx.snapshots_dir().join("device"),
        format!("{new}\n").as_bytes(),
    )?;
    cx.device = new.to_owned();
    Ok(())
}

/// Removes the `*.lock` files a killed process left in a git mirror: gix and `git push` take
/// them while they move the mirror's refs, and a kill leaves them behind, blocking every later
/// sync. Only called under the store lock, which every process that touches the mirror holds,
/// so a lock file found then is stale. Only the mirror's metadata is looked at (not objects/).
pub(super) fn clear_stale_git_locks(mirror: &std::path::Path) -> Result<()> {
    if !mirror.is_dir() {
        return Ok(());
    }
    let mut dirs = vec![mirror.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if d == mirror && e.file_name() == "objects" {
                    continue;
                }
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "lock") {
                fs::remove_file(&p)?;
            }
        }
    }
    Ok(())
}
