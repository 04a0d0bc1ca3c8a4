//! The table of chunks that writers hold between their lookup and their commit, and the
//! protocol by which concurrent writers of the same content store it once.
//!
//! An entry is `Indexed` (a hold on a chunk already in the index, so GC cannot delete it
//! before the holder's commit), `Storing` (claimed by one writer, which is appending it),
//! `Stored(location)` (appended and written to its pack file, not yet indexed) or `Failed`
//! (its writer could not store it). Every writer that holds an entry counts in `users`;
//! the entry goes when the last one releases it, which a writer does only after the commit
//! that indexed what it stored.
//!
//! Invariants (`src/shuttle_locks.rs` explores them under shuttle's scheduler, with the
//! locks of [`crate::sync`]):
//! - At most one writer claims a chunk: `claim` inserts `Storing` only where no entry is,
//!   and the claimer looks the chunk up in the index only after claiming it.
//! - A writer returns from [`PendingTable::wait_published`] only when none of its chunks is
//!   `Storing` any more; it gets an error for a `Failed` one.
//! - No cycle of waits: a writer publishes or fails everything it claimed before it waits,
//!   and waits holding no lock of this table or the GC gate (only its own file's flush
//!   lock, which no writer needs to publish a claim).
//!
//! Generic over the location type so that the protocol can be tested without packs.

use crate::ids::ChunkId;
use crate::sync::{Condvar, Mutex};
use std::collections::HashMap;

/// What an entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingState<L> {
    Indexed,
    Storing,
    Stored(L),
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Entry<L> {
    state: PendingState<L>,
    users: u32,
}

/// A set of chunks held by one writer until its commit (or failure) releases them.
#[must_use]
#[derive(Default, Debug)]
pub struct PendingClaim {
    pub(crate) ids: Vec<ChunkId>,
}

impl PendingClaim {
    pub fn ids(&self) -> &[ChunkId] {
        &self.ids
    }
}

pub struct PendingTable<L> {
    /// Protects: the entries. Lock order: a leaf (taken under the GC gate and the commit
    /// lock; nothing is taken while it is held).
    map: Mutex<HashMap<ChunkId, Entry<L>>>,
    /// Wakes writers waiting for a `Storing` entry to be published or failed.
    published: Condvar,
}

impl<L: Copy> Default for PendingTable<L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Copy> PendingTable<L> {
    pub fn new() -> Self {
        PendingTable {
            map: Mutex::new(HashMap::new()),
            published: Condvar::new(),
        }
    }

    /// Joins the entry some writer holds for `id`; false when there is none.
    pub fn join(&self, id: ChunkId, claim: &mut PendingClaim) -> bool {
        let mut m = self.map.lock();
        match m.get_mut(&id) {
            Some(e) => {
                e.users += 1;
                claim.ids.push(id);
                true
            }
            None => false,
        }
    }

    /// Holds a chunk found in the index (joining an entry another writer made meanwhile).
    pub fn hold_indexed(&self, id: ChunkId, claim: &mut PendingClaim) {
        self.map
            .lock()
            .entry(id)
            .or_insert(Entry {
                state: PendingState::Indexed,
                users: 0,
            })
            .users += 1;
        claim.ids.push(id);
    }

    /// For each chunk: joins the entry another writer made since the caller looked, or
    /// claims it (`Storing`). Returns, per chunk, whether the caller claimed it. The caller
    /// must then look the claimed chunks up in the index and [`Self::settle_indexed`] those
    /// it finds (a writer releases its hold only after the commit that indexed the chunk,
    /// so a claim made after that release sees the index entry; a claim made before it is
    /// refused): claiming first, then looking, leaves no moment in which another writer can
    /// store, commit and release the same chunk unseen.
    pub fn claim(&self, ids: &[ChunkId], claim: &mut PendingClaim) -> Vec<bool> {
        let mut m = self.map.lock();
        ids.iter()
            .map(|&id| {
                claim.ids.push(id);
                match m.get_mut(&id) {
                    Some(e) => {
                        e.users += 1;
                        false
                    }
                    None => {
                        m.insert(
                            id,
                            Entry {
                                state: PendingState::Storing,
                                users: 1,
                            },
                        );
                        true
                    }
                }
            })
            .collect()
    }

    /// [`Self::claim`], then the index lookup it requires, in that order: `in_index` is
    /// asked for each chunk the caller claimed, and one found there is settled as indexed.
    /// Returns, per chunk, whether the caller is to store it. If `in_index` fails, what the
    /// caller claimed is failed (joiners must not wait for it) and the error returned.
    pub fn claim_unindexed<E>(
        &self,
        ids: &[ChunkId],
        claim: &mut PendingClaim,
        mut in_index: impl FnMut(ChunkId) -> Result<bool, E>,
    ) -> Result<Vec<bool>, E> {
        let mut mine = self.claim(ids, claim);
        for i in 0..ids.len() {
            if !mine[i] {
                continue;
            }
            match in_index(ids[i]) {
                Ok(true) => {
                    self.settle_indexed(ids[i]);
                    mine[i] = false;
                }
                Ok(false) => {}
                Err(e) => {
                    let claimed: Vec<ChunkId> = (0..ids.len())
                        .filter(|&j| mine[j])
                        .map(|j| ids[j])
                        .collect();
                    self.finish(&[], &claimed);
                    return Err(e);
                }
            }
        }
        Ok(mine)
    }

    /// A chunk the caller claimed turned out to be in the index: it is held as indexed, and
    /// writers that joined the claim stop waiting for it.
    pub fn settle_indexed(&self, id: ChunkId) {
        if let Some(e) = self.map.lock().get_mut(&id) {
            if matches!(e.state, PendingState::Storing) {
                e.state = PendingState::Indexed;
            }
        }
        self.published.notify_all();
    }

    /// Publishes where the caller stored what it claimed, or marks it failed; wakes waiters.
    pub fn finish(&self, stored: &[(ChunkId, L)], failed: &[ChunkId]) {
        {
            let mut m = self.map.lock();
            for (id, l) in stored {
                if let Some(e) = m.get_mut(id) {
                    e.state = PendingState::Stored(*l);
                }
            }
            for id in failed {
                if let Some(e) = m.get_mut(id) {
                    if matches!(e.state, PendingState::Storing) {
                        e.state = PendingState::Failed;
                    }
                }
            }
        }
        self.published.notify_all();
    }

    /// Waits until no chunk of `claim` is being stored by another writer; the first one
    /// whose writer failed is returned as the error.
    pub fn wait_published(&self, claim: &PendingClaim) -> Result<(), ChunkId> {
        let mut m = self.map.lock();
        for id in &claim.ids {
            loop {
                match m.get(id).map(|e| e.state) {
                    Some(PendingState::Storing) => m = self.published.wait(m),
                    Some(PendingState::Failed) => return Err(*id),
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Drops a writer's holds.
    pub fn release(&self, claim: PendingClaim) {
        let mut m = self.map.lock();
        for id in claim.ids {
            if let Some(e) = m.get_mut(&id) {
                e.users -= 1;
                if e.users == 0 {
                    m.remove(&id);
                }
            }
        }
    }

    /// The state of `id`'s entry, if a writer holds it.
    pub fn state(&self, id: ChunkId) -> Option<PendingState<L>> {
        self.map.lock().get(&id).map(|e| e.state)
    }

    /// Where a writer stored `id`, once published.
    pub fn stored(&self, id: ChunkId) -> Option<L> {
        match self.state(id) {
            Some(PendingState::Stored(l)) => Some(l),
            _ => None,
        }
    }

    /// Every published location.
    pub fn stored_all(&self) -> Vec<L> {
        self.map
            .lock()
            .values()
            .filter_map(|e| match e.state {
                PendingState::Stored(l) => Some(l),
                _ => None,
            })
            .collect()
    }
}
