//! A backend in memory: the plain [`Backend`] with nothing but maps behind it, for tests of
//! the transfer module (and of decorators) without a folder, and for hostile remotes a test
//! builds by changing its objects or refs directly.

use std::collections::BTreeMap;

use objects_format::ObjectId;

use super::dir::check_remote_ref;
use super::{Backend, Outgoing, RefUpdate, ref_conflict};
use crate::error::Result;

/// Objects (stored frames, by id) and refs, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    name: String,
    objects: BTreeMap<ObjectId, Vec<u8>>,
    refs: BTreeMap<String, ObjectId>,
    /// Objects written by [`Backend::put`] so far.
    puts: u64,
}

impl MemoryBackend {
    /// An empty backend named `name` (for messages).
    pub fn new(name: impl Into<String>) -> Self {
        MemoryBackend {
            name: name.into(),
            ..MemoryBackend::default()
        }
    }

    /// The stored frames, by id.
    #[must_use]
    pub fn objects(&self) -> &BTreeMap<ObjectId, Vec<u8>> {
        &self.objects
    }

    /// The stored frames, to change behind the transfer's back (a hostile remote).
    pub fn objects_mut(&mut self) -> &mut BTreeMap<ObjectId, Vec<u8>> {
        &mut self.objects
    }

    /// The refs, to change behind the transfer's back.
    pub fn refs_mut(&mut self) -> &mut BTreeMap<String, ObjectId> {
        &mut self.refs
    }

    /// Objects written by puts so far (an object written twice counts twice).
    #[must_use]
    pub fn puts(&self) -> u64 {
        self.puts
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
        Ok(self.refs.clone())
    }

    fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        Ok(ids.iter().map(|id| self.objects.contains_key(id)).collect())
    }

    fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
        Ok(ids.iter().map(|id| self.objects.get(id).cloned()).collect())
    }

    /// All or nothing: an error from the iterator stores none of them.
    fn put(&mut self, objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
        let all: Vec<Outgoing> = objects.collect::<Result<_>>()?;
        self.puts += all.len() as u64;
        self.objects.extend(all.into_iter().map(|o| (o.id, o.raw)));
        Ok(())
    }

    fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()> {
        for u in updates {
            check_remote_ref(&u.name)?;
            let found = self.refs.get(&u.name).copied();
            if found != u.expected {
                return Err(ref_conflict(u, found));
            }
        }
        for u in updates {
            match u.new {
                Some(id) => self.refs.insert(u.name.clone(), id),
                None => self.refs.remove(&u.name),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) use counting::Counting;

#[cfg(test)]
mod counting {
    use std::collections::BTreeMap;

    use objects_format::ObjectId;

    use super::MemoryBackend;
    use crate::error::Result;
    use crate::remote::{Backend, Outgoing, RefUpdate};

    /// Counts the reads a decorator makes of the backend it wraps (rounds of `get`).
    pub(crate) struct Counting<'a> {
        pub(crate) inner: &'a mut MemoryBackend,
        pub(crate) gets: usize,
    }

    impl Backend for Counting<'_> {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn list_refs(&mut self) -> Result<BTreeMap<String, ObjectId>> {
            self.inner.list_refs()
        }
        fn has(&mut self, ids: &[ObjectId]) -> Result<Vec<bool>> {
            self.inner.has(ids)
        }
        fn get(&mut self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
            self.gets += 1;
            self.inner.get(ids)
        }
        fn put(&mut self, objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
            self.inner.put(objects)
        }
        fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()> {
            self.inner.update_refs(updates)
        }
    }
}
