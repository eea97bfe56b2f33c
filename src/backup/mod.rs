//! Backups (issue #15): a snapshot and everything it reaches, as a self-contained bundle that
//! restores on a machine that has nothing else (format: `objects-format/SPEC.md` §13).
//!
//! A bundle is a directory `backups/<id>/` holding the data file (a pack of the objects the
//! snapshot reaches, zstd-compressed, age-encrypted to the recipients when there are any),
//! `manifest.sig` when signed, and `manifest.json` (format version, snapshot, time, device,
//! the checksum of every part). It is written through the transfer seam: the push of
//! `crate::transfer` (the store's one graph walk) into a [`bundle::BundleWriter`] backend; a
//! restore is the transfer's fetch from a [`bundle::BundleReader`] backend, then the live
//! restore of `crate::live::restore`.
//!
//! Crash safety, without a lock a crashed process could leave: a bundle is written in
//! `backups/<id>.partial/` (data file, then signature, then manifest, each synced), and only
//! then renamed to `backups/<id>/` and the directory synced; so a bundle directory without the
//! suffix is always complete, and `list` never shows a half-written one. Prune renames what it
//! drops to `<id>.pruned-<unix seconds>` and deletes those, and `.partial` directories, only
//! once they are older than [`GRACE`]: a writer or reader still busy with one has that long.
//!
//! The library takes keys as parameters: the recipients, the signing key, the trusted keys
//! (the CLI reads them from flags and the config file).

pub mod bundle;
pub mod manifest;
pub mod prune;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use fs_err as fs;
use objects_format::ObjectId;
use serde::Serialize;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::remote::RefUpdate;
use crate::store::{durable, now_ns};
pub use manifest::{Manifest, SignedBy, TrustedKey};
pub use prune::Policy;

/// How long a `.partial` or pruned bundle is left for a process that may still use it.
pub const GRACE: Duration = Duration::from_secs(3600);

/// The default bundle directory of a state dir.
#[must_use]
pub fn default_dir(cx: &Context) -> PathBuf {
    cx.paths().state_dir.join("backups")
}

/// What `backup run` does.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Revision to back up (default: head).
    pub rev: Option<String>,
    /// Bundle directory (default: [`default_dir`]).
    pub to: Option<PathBuf>,
    /// Encrypt to these (none: not encrypted).
    pub recipients: &'a [age::x25519::Recipient],
    /// Sign the manifest with this key.
    pub signer: Option<&'a SigningKey>,
    /// Only when the newest good bundle is older than this.
    pub if_older_than: Option<Duration>,
}

/// What `backup verify` and `backup restore` trust.
#[derive(Default, Clone, Copy)]
pub struct Trust<'a> {
    /// Identities that may decrypt.
    pub identities: &'a [age::x25519::Identity],
    /// Signing keys the caller knows, with their trust state.
    pub trusted: &'a [TrustedKey],
    /// Refuse a bundle not signed by a trusted, unrevoked key.
    pub require_signature: bool,
}

/// A bundle as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Bundle id.
    pub id: String,
    /// Its directory.
    pub path: PathBuf,
    /// When it was made (UTC).
    pub created: String,
    /// Nanoseconds since the epoch.
    #[serde(skip)]
    pub created_ns: i64,
    /// Snapshot (64 hex).
    pub snapshot: String,
    /// Total size of its files.
    pub size: u64,
    /// Encrypted to recipients.
    pub encrypted: bool,
    /// Who signed it.
    pub signed_by: SignedBy,
}

/// Outcome of `backup run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// The bundle written, or `None` when `if_older_than` found a recent one.
    pub bundle: Option<Listed>,
    /// Objects in it.
    pub objects: u64,
}

fn file_err<'p>(op: &'static str, path: &'p Path) -> impl Fn(std::io::Error) -> Error + 'p {
    move |e| Error::File {
        op,
        path: path.to_path_buf(),
        during: "backup",
        source: e,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of `ns`.
fn rfc3339(ns: i64) -> String {
    format!("{}Z", crate::history::utc(ns).replace(' ', "T"))
}

/// `YYYYMMDDTHHMMSSZ` of `ns`.
fn compact_utc(ns: i64) -> String {
    rfc3339(ns)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// Writes a bundle of the snapshot `opts.rev` names (see the module docs).
///
/// # Errors
/// Unknown revision, no snapshot, a missing or corrupt object, I/O.
pub fn run(cx: &Context, opts: &RunOptions<'_>) -> Result<RunOutcome> {
    let dir = opts.to.clone().unwrap_or_else(|| default_dir(cx));
    if let Some(age) = opts.if_older_than {
        let newest = list(&dir, &[])?.into_iter().map(|b| b.created_ns).max();
        if let Some(n) = newest
            && now_ns().saturating_sub(n) < i64::try_from(age.as_nanos()).unwrap_or(i64::MAX)
        {
            return Ok(RunOutcome {
                bundle: None,
                objects: 0,
            });
        }
    }
    // The store lock for the walk and the read: gc cannot repack or drop an object under it.
    let _lock = cx.lock("backup run")?;
    let snap = match &opts.rev {
        Some(r) => crate::history::resolve(cx, r)?,
        None => cx
            .refs()
            .get(crate::store::refs::HEAD)?
            .ok_or(Error::NoSnapshot)?,
    };
    durable::create_dir_all_durable(&dir).map_err(file_err("creating", &dir))?;
    let created_ns = now_ns();
    let mut id = format!("{}-{}", compact_utc(created_ns), snap.short(12));
    let mut n = 1;
    while dir.join(&id).exists() || dir.join(format!("{id}.partial")).exists() {
        n += 1;
        id = format!("{}-{}-{n}", compact_utc(created_ns), snap.short(12));
    }
    let partial = dir.join(format!("{id}.partial"));
    durable::create_dir(&partial).map_err(file_err("creating", &partial))?;
    let mut writer = bundle::BundleWriter::create(&partial, opts.recipients)?;
    let update = RefUpdate {
        name: format!("{}/head", cx.device()),
        expected: None,
        new: Some(snap),
    };
    let sent = crate::transfer::push::push(cx.objects(), &mut writer, &[update], &|_, _| {})?;
    let w = writer.finish()?;
    let m = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        id: id.clone(),
        snapshot: snap.to_hex(),
        created_ns,
        created: rfc3339(created_ns),
        device: cx.device().to_owned(),
        objects: sent.objects,
        recipients: opts.recipients.iter().map(ToString::to_string).collect(),
        data: manifest::Part {
            name: w.name.into(),
            size: w.size,
            blake3: w.blake3,
        },
        pack: manifest::Part {
            name: "pack".into(),
            size: w.pack_size,
            blake3: w.pack_blake3,
        },
    };
    let mut bytes = serde_json::to_vec_pretty(&m).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    if let Some(key) = opts.signer {
        let sig = manifest::sign(key, &bytes);
        let mut sb = serde_json::to_vec_pretty(&sig).map_err(std::io::Error::other)?;
        sb.push(b'\n');
        let p = partial.join(manifest::SIGNATURE);
        durable::write_atomic(&p, &sb).map_err(file_err("writing", &p))?;
    }
    let p = partial.join(manifest::MANIFEST);
    durable::write_atomic(&p, &bytes).map_err(file_err("writing", &p))?;
    let fin = dir.join(&id);
    durable::rename(&partial, &fin).map_err(file_err("renaming", &partial))?;
    durable::sync_dir(&dir).map_err(file_err("syncing", &dir))?;
    let listed = listed(&fin, &[])?;
    Ok(RunOutcome {
        bundle: Some(listed),
        objects: sent.objects,
    })
}

/// A read bundle: its manifest (bytes and parsed) and signature bytes.
struct Opened {
    manifest: Manifest,
    bytes: Vec<u8>,
    sig: Option<Vec<u8>>,
}

fn open_bundle(path: &Path) -> Result<Opened> {
    let mp = path.join(manifest::MANIFEST);
    if !path.is_dir() {
        return Err(Error::Usage(format!(
            "{}: not a backup bundle (a directory holding manifest.json)",
            path.display()
        )));
    }
    let bytes = fs::read(&mp).map_err(|_| bundle::damaged(path, "no manifest.json"))?;
    let manifest = manifest::parse(path, &bytes)?;
    let sp = path.join(manifest::SIGNATURE);
    let sig = match fs::read(&sp) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(file_err("reading", &sp)(e)),
    };
    Ok(Opened {
        manifest,
        bytes,
        sig,
    })
}

fn listed(path: &Path, trusted: &[TrustedKey]) -> Result<Listed> {
    let o = open_bundle(path)?;
    let signed_by = manifest::signer(path, &o.bytes, o.sig.as_deref(), trusted)?;
    let mut size = o.bytes.len() as u64 + o.sig.as_ref().map_or(0, |s| s.len() as u64);
    let dp = path.join(&o.manifest.data.name);
    let data_len = fs::metadata(&dp)
        .map_err(|_| bundle::damaged(path, format!("no {}", o.manifest.data.name)))?
        .len();
    if data_len != o.manifest.data.size {
        return Err(bundle::damaged(
            path,
            format!("{} has the wrong size", o.manifest.data.name),
        ));
    }
    size += data_len;
    Ok(Listed {
        id: o.manifest.id.clone(),
        path: path.to_path_buf(),
        created: o.manifest.created.clone(),
        created_ns: o.manifest.created_ns,
        snapshot: o.manifest.snapshot.clone(),
        size,
        encrypted: !o.manifest.recipients.is_empty(),
        signed_by,
    })
}

/// True for a directory name that is a finished bundle's (not `.partial`, not pruned, not
/// hidden).
fn is_bundle_name(name: &str) -> bool {
    !name.starts_with('.') && !name.contains('.')
}

/// The good bundles in `dir`, oldest first: a complete manifest whose data file has the size
/// it names and whose signature (if any) verifies. Half-written, pruned and damaged ones are
/// left out (`verify --all` reports damaged ones).
///
/// # Errors
/// I/O on `dir`.
pub fn list(dir: &Path, trusted: &[TrustedKey]) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_bundle_name(&name) {
            continue;
        }
        if let Ok(l) = listed(&e.path(), trusted) {
            out.push(l);
        }
    }
    out.sort_by(|a, b| (a.created_ns, &a.id).cmp(&(b.created_ns, &b.id)));
    Ok(out)
}

/// Every bundle directory name in `dir` that is not `.partial`/pruned (for `verify --all`).
///
/// # Errors
/// I/O on `dir`.
pub fn all_bundle_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd {
            let e = e?;
            if is_bundle_name(&e.file_name().to_string_lossy()) && e.path().is_dir() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A bundle named by id (in `dir`) or by path.
///
/// # Errors
/// [`Error::Usage`] when neither names a bundle.
pub fn locate(dir: &Path, id_or_path: &str) -> Result<PathBuf> {
    let p = Path::new(id_or_path);
    if p.join(manifest::MANIFEST).exists() {
        return Ok(p.to_path_buf());
    }
    if is_bundle_name(id_or_path) && dir.join(id_or_path).is_dir() {
        return Ok(dir.join(id_or_path));
    }
    let hits: Vec<PathBuf> = all_bundle_dirs(dir)?
        .into_iter()
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(id_or_path))
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Usage(format!(
            "no backup '{id_or_path}' (neither a bundle directory nor an id in {})",
            dir.display()
        ))),
        _ => Err(Error::Usage(format!(
            "backup '{id_or_path}' is ambiguous: it matches {} bundles",
            hits.len()
        ))),
    }
}

/// A bundle read and checked: checksums, signature, decryption, every object's id.
struct Loaded {
    manifest: Manifest,
    signed_by: SignedBy,
    reader: bundle::BundleReader,
    snapshot: ObjectId,
}

fn load(path: &Path, trust: Trust<'_>) -> Result<Loaded> {
    let o = open_bundle(path)?;
    let signed_by = manifest::signer(path, &o.bytes, o.sig.as_deref(), trust.trusted)?;
    manifest::require(path, &signed_by, trust.require_signature)?;
    let snapshot = ObjectId::from_hex(&o.manifest.snapshot)
        .map_err(|_| bundle::damaged(path, "manifest.json: bad snapshot id"))?;
    let refs = [("bundle/head".to_owned(), snapshot)].into_iter().collect();
    let reader = bundle::BundleReader::open(
        path,
        o.manifest.version,
        &o.manifest.data,
        &o.manifest.pack,
        trust.identities,
        refs,
    )?;
    if reader.len() as u64 != o.manifest.objects {
        return Err(bundle::damaged(
            path,
            "the pack holds another number of objects than the manifest says",
        ));
    }
    Ok(Loaded {
        manifest: o.manifest,
        signed_by,
        reader,
        snapshot,
    })
}

/// Fetches every object of a loaded bundle into `cx`'s store (verified by the transfer);
/// `durable: false` for a scratch store deleted after use.
fn fetch_into(cx: &Context, l: &mut Loaded, durable: bool) -> Result<()> {
    let _lock = cx.lock("backup restore")?;
    let batch = cx.objects().batch()?;
    let batch = if durable { batch } else { batch.unsynced() };
    crate::transfer::fetch::fetch(
        cx.objects(),
        &batch,
        &mut l.reader,
        crate::remote::verify::Limits::default(),
        &[l.snapshot],
        false,
        &|_, _| {},
    )?;
    batch.commit()?;
    Ok(())
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// Bundle id.
    pub id: String,
    /// Snapshot.
    pub snapshot: String,
    /// Objects checked.
    pub objects: u64,
    /// Files restored and compared with the snapshot (all of them with `full`, else a sample).
    pub files: u64,
    /// Files in the snapshot.
    pub files_in_snapshot: u64,
    /// Who signed it.
    pub signed_by: SignedBy,
}

/// The round trip of a `verify` without `full` restores about one file in this many (at
/// least one), chosen anew on each run, so that repeated checks cover every file in time.
pub const SAMPLE_ONE_IN: u8 = 8;

/// Verifies a bundle: manifest, signature (against `trust`), the data file's and the pack's
/// checksums, every object (its id, its format, and the structure: each link's kind and size,
/// symlink targets, nesting), and a round trip: the bundle is fetched into a new store in
/// `scratch`, and files of the snapshot (every one with `full`, else a sample of about one in
/// [`SAMPLE_ONE_IN`]) are restored into a temporary folder there and read back, and must be
/// the snapshot's.
///
/// # Errors
/// [`Error::BackupDamaged`], [`Error::BackupKey`], [`Error::BackupSignature`], I/O.
pub fn verify(path: &Path, trust: Trust<'_>, scratch: &Path, full: bool) -> Result<Verified> {
    use crate::snapshot::restore as plan;
    let mut l = load(path, trust)?;
    durable::create_dir_all(scratch).map_err(file_err("creating", scratch))?;
    let tmp = tempfile::Builder::new()
        .prefix(".verify-")
        .tempdir_in(scratch)
        .map_err(file_err("creating", scratch))?;
    let paths = crate::context::Paths {
        state_dir: tmp.path().join("state"),
        config_dir: tmp.path().join("config"),
    };
    let (tcx, _) = crate::recover::open(paths)?;
    fetch_into(&tcx, &mut l, false)?;
    let store = tcx.objects();
    let snap = store.read_snapshot(&l.snapshot)?;
    let want = crate::snapshot::flatten_snapshot(store, &snap)?;
    let total = want.leaves.len() as u64;
    // The sample: paths whose keyed hash falls in the first 1/SAMPLE_ONE_IN of the range, the
    // key new each run; never none of a snapshot that has files.
    let key = blake3::hash(&now_ns().to_le_bytes());
    let rank = |p: &[u8]| blake3::keyed_hash(key.as_bytes(), p).as_bytes()[0];
    let mut target = crate::snapshot::Flat {
        leaves: want
            .leaves
            .iter()
            .filter(|(p, _)| full || rank(p) < u8::MAX / SAMPLE_ONE_IN)
            .map(|(p, l)| (p.clone(), *l))
            .collect(),
        dirs: want.dirs.clone(),
    };
    if target.leaves.is_empty()
        && let Some((p, leaf)) = want.leaves.iter().min_by_key(|(p, _)| rank(p))
    {
        target.leaves.insert(p.clone(), *leaf);
    }
    let out = tmp.path().join("out");
    let layout = crate::snapshot::Layout::under(&out);
    let mut live = crate::snapshot::Flat::default();
    plan::apply_policy(store, &mut target, &mut live)?;
    let p = plan::plan(&target, &live);
    plan::apply_with(
        store,
        &layout,
        &target,
        &p,
        &crate::progress::Silent,
        plan::Durability::Unsynced,
    )?;
    let got = crate::snapshot::save::read_live(
        &layout,
        &|_| true,
        &mut crate::store::statcache::StatCache::default(),
        None,
        &crate::progress::Silent,
    )?
    .flat;
    for (p, leaf) in &target.leaves {
        let same = got.leaves.get(p).is_some_and(|g| g.same_content(leaf));
        if !same {
            return Err(bundle::damaged(
                path,
                format!(
                    "round trip: {} restored differs from the snapshot",
                    String::from_utf8_lossy(p)
                ),
            ));
        }
    }
    if let Some(p) = got.leaves.keys().find(|p| !target.leaves.contains_key(*p)) {
        return Err(bundle::damaged(
            path,
            format!(
                "round trip: {} restored is not in the snapshot",
                String::from_utf8_lossy(p)
            ),
        ));
    }
    Ok(Verified {
        id: l.manifest.id.clone(),
        snapshot: l.manifest.snapshot.clone(),
        objects: l.manifest.objects,
        files: target.leaves.len() as u64,
        files_in_snapshot: total,
        signed_by: l.signed_by.clone(),
    })
}

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// Bundle id.
    pub id: String,
    /// The snapshot restored.
    pub snapshot: String,
    /// Who signed the bundle.
    pub signed_by: SignedBy,
    /// Files written, changed or removed.
    pub changes: u64,
    /// The live state's snapshot before the restore, when it had unsaved changes.
    pub auto_saved: Option<String>,
}

/// Restores a bundle: its objects into `cx`'s store (each verified), then its snapshot into
/// the live state (atomically, by the live restore's intent) or into `to`.
///
/// # Errors
/// As [`verify`]; the live restore's errors.
pub fn restore(
    cx: &Context,
    path: &Path,
    trust: Trust<'_>,
    to: Option<PathBuf>,
) -> Result<Restored> {
    let mut l = load(path, trust)?;
    fetch_into(cx, &mut l, true)?;
    let out = crate::live::restore::restore(
        cx,
        &crate::live::RestoreOptions {
            rev: Some(l.snapshot.to_hex()),
            to,
            ..Default::default()
        },
    )?;
    Ok(Restored {
        id: l.manifest.id.clone(),
        snapshot: l.manifest.snapshot.clone(),
        signed_by: l.signed_by.clone(),
        changes: (out.plan.create.len() + out.plan.update.len() + out.plan.delete.len()) as u64,
        auto_saved: out.auto_saved.map(|i| i.to_hex()),
    })
}

/// Expires the reflog of `cx` by `policy` (the lines of each ref are kept as bundles are; each
/// ref's newest line always stays). Returns the number of lines dropped.
///
/// # Errors
/// Lock, I/O.
pub fn expire_reflog(cx: &Context, policy: &Policy) -> Result<usize> {
    if policy.is_empty() {
        return Ok(0);
    }
    let _lock = cx.lock("reflog expiry")?;
    cx.refs()
        .expire_reflog(&|times: &[i64]| prune::keep(policy, times))
}
