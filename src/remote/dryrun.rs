//! `sync push --dry-run` as a decorator: [`DryRun`] wraps any [`Backend`]; reads pass through,
//! puts and ref updates are recorded and not performed. The transfer runs exactly as for a real
//! push (the same walk, the same "what does the other side lack", the same local reads and
//! verification of every object it would send), so what it records is what a push would send.

use std::collections::BTreeMap;

use objects_format::ObjectId;

use super::dir::check_remote_ref;
use super::{Backend, Outgoing, RefUpdate, TransferStats, ref_conflict};
use crate::error::Result;

/// What a push through [`DryRun`] would have done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Objects (and their stored bytes) it would have sent.
    pub sent: TransferStats,
    /// Ref updates it would have made, in order.
    pub refs: Vec<RefUpdate>,
}

/// A backend that records writes instead of making them.
#[derive(Debug)]
pub struct DryRun<B> {
    inner: B,
    recorded: Recorded,
}

impl<B: Backend> DryRun<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        DryRun {
            inner,
            recorded: Recorded::default(),
        }
    }

    /// What was recorded so far.
    #[must_use]
    pub fn recorded(&self) -> &Recorded {
        &self.recorded
    }

    /// The wrapped backend.
    #[must_use]
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: Backend> Backend for DryRun<B> {
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
        self.inner.get(ids)
    }

    fn get_ahead(&mut self, wanted: &[(ObjectId, u64)]) -> Vec<Option<Vec<u8>>> {
        self.inner.get_ahead(wanted)
    }

    /// Counts every object (each one read and verified by the sender, as for a real push).
    fn put(&mut self, objects: &mut dyn Iterator<Item = Result<Outgoing>>) -> Result<()> {
        for o in objects {
            let o = o?;
            self.recorded.sent.objects += 1;
            self.recorded.sent.bytes += o.raw.len() as u64;
        }
        Ok(())
    }

    /// Checks the names and the expected values against the backend's refs now, so a dry run
    /// meets the same conflicts as a push would, then records the updates.
    fn update_refs(&mut self, updates: &[RefUpdate]) -> Result<()> {
        for u in updates {
            check_remote_ref(&u.name)?;
        }
        let now = self.inner.list_refs()?;
        for u in updates {
            let found = now.get(&u.name).copied();
            if found != u.expected {
                return Err(ref_conflict(u, found));
            }
        }
        self.recorded.refs.extend_from_slice(updates);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::MemoryBackend;

    #[test]
    fn writes_are_recorded_not_made() {
        let mut mem = MemoryBackend::new("m");
        let id = ObjectId([3; 32]);
        let mut dry = DryRun::new(&mut mem);
        let mut one = std::iter::once(Ok(Outgoing {
            kind: objects_format::Kind::Blob,
            id,
            raw: vec![0; 10],
        }));
        dry.put(&mut one).expect("put");
        let up = RefUpdate {
            name: "d/head".into(),
            expected: None,
            new: Some(id),
        };
        dry.update_refs(std::slice::from_ref(&up)).expect("refs");
        assert_eq!(
            dry.recorded(),
            &Recorded {
                sent: TransferStats {
                    objects: 1,
                    bytes: 10
                },
                refs: vec![up.clone()],
            }
        );
        // A wrong expected value is the conflict a push would meet.
        let stale = RefUpdate {
            expected: Some(id),
            ..up
        };
        assert!(dry.update_refs(&[stale]).is_err());
        assert!(mem.objects().is_empty());
        assert!(mem.list_refs().expect("refs").is_empty());
    }
}
