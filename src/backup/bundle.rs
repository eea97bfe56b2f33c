//! The bundle's data part as a [`Backend`] over one file (SPEC §13): the transfer's push writes
//! into a [`BundleWriter`], and its fetch reads a [`BundleReader`].
//!
//! Version 2 (written): the file is `objects.pack` (or `objects.pack.age` when encrypted), a
//! pack as the store keeps them (SPEC §7.2: `SDPACK\0\x02`, blocks and object entries) that the
//! store writes whole ([`crate::store::ObjectStore::export_pack`]: its blocks copied as they
//! are), and that a restore stages whole. Version 1 (read): `objects.pack.zst(.age)`, a pack of
//! object entries only, compressed as one zstd stream.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use objects_format::pack::{ENTRY_HEADER, PACK_MAGIC};
use objects_format::{Kind, ObjectId};

use crate::error::{Error, Result};
use crate::remote::verify::MAX_RAW_OBJECT;
use crate::remote::{Backend, Outgoing, RefUpdate};
use crate::store::{IndexedPack, durable};

/// The data part's file name, plain (version 2).
pub const DATA_PLAIN: &str = "objects.pack";
/// The data part's file name, age-encrypted (version 2).
pub const DATA_AGE: &str = "objects.pack.age";
/// Version 1's data file names (plain, encrypted): a zstd stream of the pack.
pub const DATA_V1: [&str; 2] = ["objects.pack.zst", "objects.pack.zst.age"];

/// Counts and hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: blake3::Hasher::new(),
            len: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Plain, or age-encrypted.
enum Cipher<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Write for Cipher<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Cipher::Plain(w) => w.write(buf),
            Cipher::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Cipher::Plain(w) => w.flush(),
            Cipher::Age(w) => w.flush(),
        }
    }
}

impl<W: Write> Cipher<W> {
    fn finish(self) -> std::io::Result<W> {
        match self {
            Cipher::Plain(w) => Ok(w),
            Cipher::Age(w) => w.finish(),
        }
    }
}

type Sink = Hashing<Cipher<Hashing<std::io::BufWriter<fs_err::File>>>>;

/// What a finished data part holds (the manifest's figures).
#[derive(Debug, Clone)]
pub struct Written {
    /// The file's name in the bundle.
    pub name: &'static str,
    /// The file's size.
    pub size: u64,
    /// BLAKE3 of the file.
    pub blake3: String,
    /// The size of the pack (after decryption).
    pub pack_size: u64,
    /// BLAKE3 of the pack.
    pub pack_blake3: String,
    /// The refs the push set (remote ref name → snapshot).
    pub refs: BTreeMap<String, ObjectId>,
}

/// A backend that takes what a push sends as one pack, into one bundle file.
pub struct BundleWriter {
    path: PathBuf,
    sink: Option<Sink>,
    refs: BTreeMap<String, ObjectId>,
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::File {
        op: "writing",
        path: path.to_path_buf(),
        during: "backup",
        source: e,
    }
}

impl BundleWriter {
    /// Creates the data file in `dir` (named for whether there are recipients).
    ///
    /// # Errors
    /// I/O errors.
    pub fn create(dir: &Path, recipients: &[age::x25519::Recipient]) -> Result<BundleWriter> {
        let name = if recipients.is_empty() {
            DATA_PLAIN
        } else {
            DATA_AGE
        };
        let path = dir.join(name);
        let file = durable::create(&path).map_err(io_at(&path))?;
        let file = Hashing::new(std::io::BufWriter::with_capacity(1 << 20, file));
        let cipher = if recipients.is_empty() {
            Cipher::Plain(file)
        } else {
            let enc = age::Encryptor::with_recipients(
                recipients.iter().map(|r| r as &dyn age::Recipient),
            )
            .map_err(|e| Error::Usage(format!("backup: cannot encrypt: {e}")))?;
            Cipher::Age(enc.wrap_output(file).map_err(io_at(&path))?)
        };
        Ok(BundleWriter {
            path,
            sink: Some(Hashing::new(cipher)),
            refs: BTreeMap::new(),
        })
    }

    /// Ends the streams, makes the file durable and returns its figures.
    ///
    /// # Errors
    /// Nothing was written (no pack), I/O errors.
    pub fn finish(mut self) -> Result<Written> {
        let sink = self
            .sink
            .take()
            .ok_or_else(|| Error::Internal("bundle finished twice".into()))?;
        if sink.len == 0 {
            return Err(Error::Internal(
                "a bundle finished before its pack was written".into(),
            ));
        }
        let path = self.path.clone();
        let pack_size = sink.len;
        let pack_blake3 = sink.hasher.finalize().to_hex().to_string();
        let file = sink.inner.finish().map_err(io_at(&path))?;
        let size = file.len;
        let blake3 = file.hasher.finalize().to_hex().to_string();
        let f = file
            .inner
            .into_inner()
            .map_err(|e| io_at(&path)(e.into_error()))?;
        durable::sync_all(f.file(), &path).map_err(io_at(&path))?;
        let name = if path.ends_with(DATA_AGE) {
            DATA_AGE
        } else {
            DATA_PLAIN
        };
        Ok(Written {
            name,
            size,
            blake3,
            pack_size,
            pack_blake3,
            refs: std::mem::take(&mut self.refs),
        })
    }
}

impl Backend for BundleWriter {
    fn name(&self) -> &str {
        "backup bundle"
    }
    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        Ok(BTreeMap::new())
    }
    fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        Ok(vec![false; ids.len()])
    }
    fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
        Ok(vec![None; ids.len()])
    }
    fn put(&mut self, _objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
        Err(Error::Internal(
            "a backup bundle takes its objects as one pack (Backend::pack_sink)".into(),
        ))
    }
    fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()> {
        for u in updates {
            if let Some(new) = u.new {
                self.refs.insert(u.name.clone(), new);
            }
        }
        Ok(())
    }
    fn pack_sink(&mut self) -> Option<&mut dyn Write> {
        self.sink.as_mut().map(|s| s as &mut dyn Write)
    }
}

/// A bundle's data part, read, checked and indexed: a read-only backend.
pub struct BundleReader {
    inner: Inner,
    refs: BTreeMap<String, ObjectId>,
}

enum Inner {
    /// Version 1: the pack's bytes (object entries only) and where each object's frame lies.
    V1 {
        pack: Vec<u8>,
        index: HashMap<ObjectId, (usize, usize)>,
    },
    /// Version 2: the pack, every object verified; the fetch takes it whole.
    V2(IndexedPack),
}

/// The error of a damaged bundle.
pub fn damaged(bundle: &Path, why: impl Into<String>) -> Error {
    Error::BackupDamaged {
        bundle: bundle.to_path_buf(),
        why: why.into(),
    }
}

impl BundleReader {
    /// Reads the data file `data` of `bundle`, written by manifest `version` (1 or 2): checks
    /// its size and BLAKE3 against the manifest's, decrypts it with `identities` when it is
    /// encrypted (version 1: decompresses it), checks the pack's size and BLAKE3, and indexes
    /// every object by the id its bytes hash to.
    ///
    /// # Errors
    /// [`Error::BackupDamaged`] on any mismatch, [`Error::BackupKey`] when no identity opens it.
    pub fn open(
        bundle: &Path,
        version: u32,
        part: &super::manifest::Part,
        pack: &super::manifest::Part,
        identities: &[age::x25519::Identity],
        refs: BTreeMap<String, ObjectId>,
    ) -> Result<BundleReader> {
        let (plain_name, age_name) = if version == 1 {
            (DATA_V1[0], DATA_V1[1])
        } else {
            (DATA_PLAIN, DATA_AGE)
        };
        if part.name != plain_name && part.name != age_name {
            return Err(damaged(
                bundle,
                format!(
                    "manifest.json names the data file '{}' (version {version} has '{plain_name}' or '{age_name}')",
                    part.name
                ),
            ));
        }
        let path = bundle.join(&part.name);
        let bytes = fs_err::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                damaged(bundle, format!("{} is missing", part.name))
            } else {
                Error::File {
                    op: "reading",
                    path: path.clone(),
                    during: "backup",
                    source: e,
                }
            }
        })?;
        if bytes.len() as u64 != part.size {
            return Err(damaged(
                bundle,
                format!(
                    "{} is {} bytes, the manifest says {}",
                    part.name,
                    bytes.len(),
                    part.size
                ),
            ));
        }
        if blake3::hash(&bytes).to_hex().as_str() != part.blake3 {
            return Err(damaged(
                bundle,
                format!("{}: checksum mismatch (the file was changed)", part.name),
            ));
        }
        let plain: Box<dyn Read + '_> = if part.name == age_name {
            let dec = age::Decryptor::new_buffered(&bytes[..])
                .map_err(|e| damaged(bundle, format!("{}: not an age file: {e}", part.name)))?;
            let r = dec
                .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
                .map_err(|e| match e {
                    age::DecryptError::NoMatchingKeys => Error::BackupKey {
                        bundle: bundle.to_path_buf(),
                        why: if identities.is_empty() {
                            "the bundle is encrypted; give an identity (--identity FILE)".into()
                        } else {
                            "none of the given identities is a recipient of this bundle".into()
                        },
                    },
                    other => damaged(bundle, format!("{}: {other}", part.name)),
                })?;
            Box::new(r)
        } else {
            Box::new(&bytes[..])
        };
        let cap = usize::try_from(pack.size).unwrap_or(0).min(1 << 30);
        let mut out = Vec::with_capacity(cap);
        let read = if version == 1 {
            zstd::Decoder::new(plain).and_then(|mut d| d.read_to_end(&mut out))
        } else {
            // Never more than the manifest says: a longer stream is damage, not a reason to
            // read on.
            plain
                .take(pack.size.saturating_add(1))
                .read_to_end(&mut out)
        };
        read.map_err(|e| damaged(bundle, format!("{}: {e}", part.name)))?;
        drop(bytes);
        if out.len() as u64 != pack.size || blake3::hash(&out).to_hex().as_str() != pack.blake3 {
            return Err(damaged(bundle, "the pack's checksum does not match"));
        }
        let inner = if version == 1 {
            let index = index_pack(&out).map_err(|why| damaged(bundle, why))?;
            Inner::V1 { pack: out, index }
        } else {
            Inner::V2(IndexedPack::parse(out).map_err(|why| damaged(bundle, why))?)
        };
        Ok(BundleReader { inner, refs })
    }

    /// Objects in the pack.
    #[must_use]
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::V1 { index, .. } => index.len(),
            Inner::V2(p) => p.len(),
        }
    }

    /// True when the pack holds no object.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every object entry of a pack by id (SPEC §13: a bundle's pack holds object entries only).
fn index_pack(pack: &[u8]) -> std::result::Result<HashMap<ObjectId, (usize, usize)>, String> {
    if pack.get(..8) != Some(&PACK_MAGIC[..]) {
        return Err("the pack does not start with SDPACK\\0\\x02".into());
    }
    let mut at = 8usize;
    let mut index = HashMap::new();
    let header = usize::try_from(ENTRY_HEADER).map_err(|e| e.to_string())?;
    while at < pack.len() {
        let h = pack
            .get(at..at + header)
            .ok_or_else(|| format!("truncated entry header at {at}"))?;
        let kind =
            Kind::from_code(h[0]).ok_or_else(|| format!("bad entry code {} at {at}", h[0]))?;
        let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let start = at + header;
        let frame = pack
            .get(start..start + len)
            .ok_or_else(|| format!("truncated entry at {at}"))?;
        if frame.len() as u64 > MAX_RAW_OBJECT {
            return Err(format!("entry at {at} is over the object size limit"));
        }
        let canonical =
            crate::store::decompress(frame).map_err(|why| format!("entry at {at}: {why}"))?;
        let id = ObjectId::compute(kind, &canonical);
        index.insert(id, (start, len));
        at = start + len;
    }
    Ok(index)
}

impl Backend for BundleReader {
    fn name(&self) -> &str {
        "backup bundle"
    }
    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        Ok(self.refs.clone())
    }
    fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        Ok(match &self.inner {
            Inner::V1 { index, .. } => ids.iter().map(|i| index.contains_key(i)).collect(),
            Inner::V2(p) => ids.iter().map(|i| p.get(i).is_some()).collect(),
        })
    }
    fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
        match &self.inner {
            Inner::V1 { pack, index } => Ok(ids
                .iter()
                .map(|i| index.get(i).map(|&(s, l)| pack[s..s + l].to_vec()))
                .collect()),
            // The fetch takes a version-2 pack whole (`whole_pack`).
            Inner::V2(_) => Err(Error::Internal(
                "a version-2 bundle is fetched whole, not object by object".into(),
            )),
        }
    }
    fn put(&mut self, _objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
        Err(Error::Usage("a backup bundle is read-only".into()))
    }
    fn update_refs(&mut self, _updates: &[RefUpdate]) -> Result<()> {
        Err(Error::Usage("a backup bundle is read-only".into()))
    }
    fn whole_pack(&self) -> Option<&IndexedPack> {
        match &self.inner {
            Inner::V1 { .. } => None,
            Inner::V2(p) => Some(p),
        }
    }
}
