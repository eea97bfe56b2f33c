//! A git repository as a plain [`Backend`]: what an encrypted git remote stores (ADR 0010).
//!
//! The plain git remote maps snapshots to browsable commits and trees (ADR 0002); an encrypted
//! remote has nothing to browse, so its git repository only carries the objects and refs of a
//! plain backend — here the encrypting decorator's ciphertext — as git blobs:
//!
//! * one branch, `refs/heads/shelldone`, whose commit's tree holds
//!   `objects/<ab>/<cdef…>` (a tree per fan-out directory, a blob per stored object, named by
//!   its id in hex) and `refs/<namespace>/head`, `refs/<namespace>/sessions/<x>` (a blob
//!   holding the ref's value in hex);
//! * every push is one new commit on top of the fetched one, pushed with
//!   `git push --atomic --force-with-lease=refs/heads/shelldone:<fetched>`, never a `+`
//!   refspec: two devices pushing at once cannot both win, the loser gets a ref conflict and
//!   its next push goes on top;
//! * objects are written into the local mirror (`<state>/snapshots/remotes/<name>.git`) by
//!   [`Backend::put`] and reach the server with the ref update that needs them (objects and
//!   refs move in the same atomic push, so a ref never names something missing).
//!
//! The repository is valid (`git fsck --strict` is clean: it holds only blobs, trees and
//! commits git writes itself through gix), but not browsable.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gix::ObjectId as GitId;
use objects_format::ObjectId;

use super::gitmirror::{self, GitError, GitTreeEntry, Mode};
use super::verify::{Limits, MAX_RAW_OBJECT};
use super::{Backend, Outgoing, RefUpdate, ref_conflict};
use crate::error::{Error, Result};

/// The branch on the server.
pub const BRANCH: &str = "refs/heads/shelldone";
/// Where the mirror keeps the fetched branch.
const TRACK: &str = "refs/shelldone-blobs/tip";

/// A git repository holding a plain backend's objects and refs as blobs.
pub struct GitBlobs {
    name: String,
    url: String,
    mirror: PathBuf,
    repo: Option<gix::Repository>,
    push_timeout: Duration,
    fetch_timeout: Duration,
    limits: Limits,
    loaded: bool,
    tip: Option<GitId>,
    /// Every object on the branch (or written since): id → blob.
    objects: BTreeMap<ObjectId, GitId>,
    /// The fan-out trees as fetched, to reuse those no put touched.
    fans: HashMap<String, GitId>,
    /// Fan-out directories with objects put since the fetch.
    dirty: std::collections::BTreeSet<String>,
    refs: BTreeMap<String, ObjectId>,
}

impl std::fmt::Debug for GitBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitBlobs")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("tip", &self.tip)
            .finish_non_exhaustive()
    }
}

fn git_err(name: &str, e: GitError) -> Error {
    Error::remote_from(name, e.is_transient(), e)
}

impl GitBlobs {
    /// The remote `name` at `url`, mirrored in `mirror`.
    #[must_use]
    pub fn new(name: &str, url: &str, mirror: &Path, push: Duration, fetch: Duration) -> Self {
        GitBlobs {
            name: name.to_owned(),
            url: url.to_owned(),
            mirror: mirror.to_path_buf(),
            repo: None,
            push_timeout: push,
            fetch_timeout: fetch,
            limits: Limits::default(),
            loaded: false,
            tip: None,
            objects: BTreeMap::new(),
            fans: HashMap::new(),
            dirty: std::collections::BTreeSet::new(),
            refs: BTreeMap::new(),
        }
    }

    fn repo(&mut self) -> Result<&gix::Repository> {
        if self.repo.is_none() {
            let r =
                gitmirror::open_or_init_bare(&self.mirror).map_err(|e| git_err(&self.name, e))?;
            self.repo = Some(r);
        }
        Ok(self.repo.as_ref().expect("opened"))
    }

    fn bad(&self, why: impl Into<String>) -> Error {
        Error::remote(&self.name, why.into())
    }

    /// Fetches the branch once per handle and reads its tree.
    fn load(&mut self) -> Result<()> {
        if self.loaded {
            return Ok(());
        }
        let (url, timeout, max) = (self.url.clone(), self.fetch_timeout, self.limits.max_bytes);
        let spec = format!("+{BRANCH}:{TRACK}");
        let name = self.name.clone();
        let repo = self.repo()?.clone();
        let fetched = gitmirror::fetch_bounded(&repo, &url, &[&spec], timeout, max)
            .map_err(|e| git_err(&name, e))?;
        self.tip = fetched.into_iter().find(|(r, _)| r == TRACK).map(|f| f.1);
        if let Some(tip) = self.tip {
            let (tree, _, _) = gitmirror::read_commit(&repo, tip).map_err(|e| git_err(&name, e))?;
            for top in gitmirror::read_tree(&repo, tree).map_err(|e| git_err(&name, e))? {
                match (top.name.as_slice(), top.mode) {
                    (b"objects", Mode::Dir) => self.read_objects(&repo, top.oid)?,
                    (b"refs", Mode::Dir) => self.read_refs(&repo, top.oid, "")?,
                    _ => {
                        return Err(self.bad(format!(
                            "the branch {BRANCH} holds {:?}, which is not part of an encrypted remote",
                            String::from_utf8_lossy(&top.name)
                        )));
                    }
                }
            }
        }
        self.loaded = true;
        Ok(())
    }

    fn read_objects(&mut self, repo: &gix::Repository, tree: GitId) -> Result<()> {
        let name = self.name.clone();
        for fan in gitmirror::read_tree(repo, tree).map_err(|e| git_err(&name, e))? {
            let f = String::from_utf8_lossy(&fan.name).into_owned();
            if fan.mode != Mode::Dir || f.len() != 2 {
                return Err(self.bad(format!("objects/{f} is not a fan-out directory")));
            }
            for e in gitmirror::read_tree(repo, fan.oid).map_err(|e| git_err(&name, e))? {
                let hex = format!("{f}{}", String::from_utf8_lossy(&e.name));
                let id = ObjectId::from_hex(&hex).map_err(|_| {
                    self.bad(format!("objects/{f}/… holds a file that is not an object"))
                })?;
                if e.mode != Mode::File {
                    return Err(self.bad(format!("object {hex} is not a file")));
                }
                self.objects.insert(id, e.oid);
            }
            self.fans.insert(f, fan.oid);
        }
        Ok(())
    }

    fn read_refs(&mut self, repo: &gix::Repository, tree: GitId, prefix: &str) -> Result<()> {
        let name = self.name.clone();
        for e in gitmirror::read_tree(repo, tree).map_err(|e| git_err(&name, e))? {
            let n = format!("{prefix}{}", String::from_utf8_lossy(&e.name));
            if prefix.matches('/').count() > 3 {
                return Err(self.bad(format!("ref {n} is nested too deep")));
            }
            match e.mode {
                Mode::Dir => self.read_refs(repo, e.oid, &format!("{n}/"))?,
                Mode::File => {
                    let (_, data) =
                        gitmirror::read_object(repo, e.oid).map_err(|e| git_err(&name, e))?;
                    let s = std::str::from_utf8(&data).unwrap_or("");
                    let id = ObjectId::from_hex(s.trim_end())
                        .map_err(|_| self.bad(format!("ref {n} is malformed")))?;
                    self.refs.insert(n, id);
                }
                _ => return Err(self.bad(format!("ref {n} is not a file"))),
            }
        }
        Ok(())
    }

    /// The root tree of the next commit: the fan-out trees (rewritten where objects were
    /// added) and the refs.
    fn write_root(&mut self, refs: &BTreeMap<String, ObjectId>) -> Result<GitId> {
        let name = self.name.clone();
        let repo = self.repo()?.clone();
        let ge = |e| git_err(&name, e);
        for f in std::mem::take(&mut self.dirty) {
            let lo = ObjectId::from_hex(&format!("{f}{}", "0".repeat(62)))
                .map_err(|_| self.bad("fan"))?;
            let entries: Vec<GitTreeEntry> = self
                .objects
                .range(lo..)
                .take_while(|(id, _)| id.to_hex().starts_with(&f))
                .map(|(id, oid)| GitTreeEntry {
                    name: id.to_hex().as_bytes()[2..].to_vec(),
                    mode: Mode::File,
                    oid: *oid,
                })
                .collect();
            let t = gitmirror::write_tree(&repo, &entries).map_err(ge)?;
            self.fans.insert(f, t);
        }
        let fans: Vec<GitTreeEntry> = self
            .fans
            .iter()
            .map(|(f, t)| GitTreeEntry {
                name: f.as_bytes().to_vec(),
                mode: Mode::Dir,
                oid: *t,
            })
            .collect();
        let mut root = Vec::new();
        if !fans.is_empty() {
            root.push(GitTreeEntry {
                name: b"objects".to_vec(),
                mode: Mode::Dir,
                oid: gitmirror::write_tree(&repo, &fans).map_err(ge)?,
            });
        }
        // Refs: a tree per path component.
        #[derive(Default)]
        struct Dir(BTreeMap<String, Dir>, BTreeMap<String, ObjectId>);
        let mut top = Dir::default();
        for (n, v) in refs {
            let parts: Vec<&str> = n.split('/').collect();
            let mut d = &mut top;
            for p in &parts[..parts.len() - 1] {
                d = d.0.entry((*p).to_owned()).or_default();
            }
            d.1.insert(parts[parts.len() - 1].to_owned(), *v);
        }
        fn write(repo: &gix::Repository, d: &Dir) -> std::result::Result<GitId, GitError> {
            let mut entries = Vec::new();
            for (n, sub) in &d.0 {
                entries.push(GitTreeEntry {
                    name: n.as_bytes().to_vec(),
                    mode: Mode::Dir,
                    oid: write(repo, sub)?,
                });
            }
            for (n, v) in &d.1 {
                entries.push(GitTreeEntry {
                    name: n.as_bytes().to_vec(),
                    mode: Mode::File,
                    oid: gitmirror::write_blob(repo, format!("{}\n", v.to_hex()).as_bytes())?,
                });
            }
            gitmirror::write_tree(repo, &entries)
        }
        if !refs.is_empty() {
            root.push(GitTreeEntry {
                name: b"refs".to_vec(),
                mode: Mode::Dir,
                oid: write(&repo, &top).map_err(ge)?,
            });
        }
        gitmirror::write_tree(&repo, &root).map_err(ge)
    }
}

impl Backend for GitBlobs {
    fn name(&self) -> &str {
        &self.name
    }

    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        self.load()?;
        Ok(self.refs.clone())
    }

    fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        self.load()?;
        Ok(ids.iter().map(|id| self.objects.contains_key(id)).collect())
    }

    fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
        self.load()?;
        let name = self.name.clone();
        let repo = self.repo()?.clone();
        ids.iter()
            .map(|id| {
                let Some(oid) = self.objects.get(id) else {
                    return Ok(None);
                };
                let (kind, data) =
                    gitmirror::read_object(&repo, *oid).map_err(|e| git_err(&name, e))?;
                if kind != gix::objs::Kind::Blob || data.len() as u64 > MAX_RAW_OBJECT {
                    return Err(Error::CorruptObject {
                        id: *id,
                        why: format!("git object {oid} is not a blob within the size limit"),
                    });
                }
                Ok(Some(data))
            })
            .collect()
    }

    /// Written into the mirror; they reach the server with the next ref update.
    fn put(&mut self, objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
        self.load()?;
        let name = self.name.clone();
        let repo = self.repo()?.clone();
        for o in objects {
            let o = o?;
            if self.objects.contains_key(&o.id) {
                continue;
            }
            let oid = gitmirror::write_blob(&repo, &o.raw).map_err(|e| git_err(&name, e))?;
            self.dirty.insert(o.id.to_hex()[..2].to_owned());
            self.objects.insert(o.id, oid);
        }
        Ok(())
    }

    fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()> {
        self.load()?;
        let mut refs = self.refs.clone();
        for u in updates {
            let found = refs.get(&u.name).copied();
            if found != u.expected {
                return Err(ref_conflict(u, found));
            }
            match u.new {
                Some(v) => refs.insert(u.name.clone(), v),
                None => refs.remove(&u.name),
            };
        }
        let root = self.write_root(&refs)?;
        let name = self.name.clone();
        let repo = self.repo()?.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let parents: Vec<GitId> = self.tip.into_iter().collect();
        let commit = gitmirror::write_commit(
            &repo,
            root,
            &parents,
            "shelldone encrypted remote (not browsable: docs/sync.md)\n",
            now,
            "shelldone",
            "shelldone@localhost",
        )
        .map_err(|e| git_err(&name, e))?;
        let src = commit.to_string();
        let pushed = gitmirror::push_with_options(
            &self.mirror,
            &self.url,
            &[(src.as_str(), BRANCH, self.tip)],
            self.push_timeout,
            gitmirror::PushOptions {
                atomic: true,
                no_thin: false,
            },
        );
        match pushed {
            Ok(()) => {}
            Err(e) if e.is_stale_lease() => {
                return Err(Error::RefConflict {
                    name: BRANCH.into(),
                    expected: self.tip.map_or_else(|| "absent".into(), |t| t.to_string()),
                    found: "another device's push".into(),
                });
            }
            Err(e) => return Err(git_err(&name, e)),
        }
        gitmirror::set_ref(&repo, TRACK, commit).map_err(|e| git_err(&name, e))?;
        self.tip = Some(commit);
        self.refs = refs;
        Ok(())
    }
}
