//! The commit path: one atomic metadata batch per filesystem operation.
//!
//! Owns version assignment, the wall-clock timeline, id allocators and the statistics
//! counters. [`Committer::commit`] runs an operation's read-check-write closure under the
//! commit lock, stamps its writes with the next version, and applies them, with the new
//! counter and allocator values, as one batch.
//!
//! Invariants:
//! - Versions are committed in increasing order; `head()` is the newest committed version,
//!   and a read at `head()` sees a consistent state.
//! - Commit times never go backwards (a clock step back repeats the last time), so the
//!   timeline (millisecond → newest version) is monotonic in both columns.
//! - A closure that fails leaves no trace: its writes, allocations and counter changes are
//!   all discarded.
//!
//! Lock order: an inode's flush lock, then the commit lock, then an inode's state lock.

use crate::chunks::{ContainerCounters, StoreCounters};
use crate::codec::{Dec, Enc};
use crate::ids::{BranchId, ContainerId, Ino, Version};
use crate::kv::{Cf, Kv, KvError, Txn};
use crate::records::Timestamp;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const K_NEXT_VERSION: &[u8] = b"next_version";
const K_NEXT_INO: &[u8] = b"next_ino";
const K_NEXT_BRANCH: &[u8] = b"next_branch";
const K_NEXT_CONTAINER: &[u8] = b"next_container";
const K_STORE_COUNTERS: &[u8] = b"counters/store";
const K_CONTAINER_COUNTERS: &[u8] = b"counters/c/";

/// Inode numbers below this are reserved (1 is the mount root).
pub const FIRST_INO: u64 = 16;

#[derive(Clone, Debug, PartialEq)]
struct CommitState {
    next_version: u64,
    last_time: Timestamp,
    next_ino: u64,
    next_branch: u64,
    next_container: u32,
    store: StoreCounters,
    containers: HashMap<ContainerId, ContainerCounters>,
}

/// An operation's view while it builds its commit.
pub struct Commit<'a> {
    pub txn: Txn<'a>,
    pub version: Version,
    pub time: Timestamp,
    /// The time stamped on files changed by this commit: the kernel's coarse clock, which is
    /// what the kernel itself writes into a FUSE inode it updates (a hard link's ctime),
    /// so timestamps from either side never run backwards. `time` (the version's) stays
    /// fine-grained so that moments between two commits can be named.
    pub file_time: Timestamp,
    st: CommitState,
    after: Vec<Box<dyn FnOnce() + 'a>>,
}

impl<'a> Commit<'a> {
    /// Runs `f` once the batch is durable in the log, still under the commit lock (so in
    /// commit order); dropped if the commit fails. For caches of committed state.
    pub fn after_commit(&mut self, f: impl FnOnce() + 'a) {
        self.after.push(Box::new(f));
    }

    pub fn alloc_ino(&mut self) -> Ino {
        let i = self.st.next_ino;
        self.st.next_ino += 1;
        Ino(i)
    }
    pub fn alloc_branch(&mut self) -> BranchId {
        let b = self.st.next_branch;
        self.st.next_branch += 1;
        BranchId(b)
    }
    pub fn alloc_container(&mut self) -> ContainerId {
        let c = self.st.next_container;
        self.st.next_container += 1;
        ContainerId(c)
    }
    pub fn store_counters(&mut self) -> &mut StoreCounters {
        &mut self.st.store
    }
    pub fn container_counters(&mut self, c: ContainerId) -> &mut ContainerCounters {
        self.st.containers.entry(c).or_default()
    }
    /// The batch and both counter sets at once (for chunk reference updates).
    pub fn split(
        &mut self,
        c: ContainerId,
    ) -> (&mut Txn<'a>, &mut StoreCounters, &mut ContainerCounters) {
        (
            &mut self.txn,
            &mut self.st.store,
            self.st.containers.entry(c).or_default(),
        )
    }
    /// The batch and the store counters at once (for chunk index maintenance).
    pub fn txn_and_store(&mut self) -> (&mut Txn<'a>, &mut StoreCounters) {
        (&mut self.txn, &mut self.st.store)
    }
    /// Forgets a deleted container's counters.
    pub fn drop_container_counters(&mut self, c: ContainerId) {
        self.st.containers.remove(&c);
    }
}

pub struct Committer {
    kv: Arc<dyn Kv>,
    st: Mutex<CommitState>,
    head: AtomicU64,
    synced: Mutex<u64>,
}

fn get_u64(kv: &dyn Kv, key: &[u8], default: u64) -> Result<u64, KvError> {
    match kv.get(Cf::Meta, key)? {
        None => Ok(default),
        Some(v) => Dec::new(&v, "counter")
            .u64()
            .map_err(|e| KvError::Corrupt(e.to_string())),
    }
}

// Counters are small and evolve with the product, so they are stored as JSON (unknown
// fields of a newer build are rejected by the format version check, missing ones default).
fn enc_json<T: serde::Serialize>(c: &T) -> Vec<u8> {
    serde_json::to_vec(c).unwrap_or_default()
}

fn dec_json<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T, KvError> {
    serde_json::from_slice(b).map_err(|e| KvError::Corrupt(format!("{what}: {e}")))
}

fn container_counter_key(c: ContainerId) -> Vec<u8> {
    Enc::new().bytes(K_CONTAINER_COUNTERS).u32(c.0).finish()
}

/// The timeline key of a moment: milliseconds since the epoch, offset so that pre-1970
/// clocks still sort.
pub fn timeline_key(t: Timestamp) -> Vec<u8> {
    let ms = t
        .sec
        .saturating_mul(1000)
        .saturating_add((t.nsec / 1_000_000) as i64);
    Enc::new().u64((ms as u64) ^ (1 << 63)).finish()
}

impl Committer {
    pub fn open(kv: Arc<dyn Kv>) -> Result<Committer, KvError> {
        let next_version = get_u64(&*kv, K_NEXT_VERSION, 1)?;
        let next_ino = get_u64(&*kv, K_NEXT_INO, FIRST_INO)?;
        let next_branch = get_u64(&*kv, K_NEXT_BRANCH, 1)?;
        let next_container = get_u64(&*kv, K_NEXT_CONTAINER, 1)? as u32;
        let store = match kv.get(Cf::Meta, K_STORE_COUNTERS)? {
            Some(b) => dec_json(&b, "store counters")?,
            None => StoreCounters::default(),
        };
        let mut containers = HashMap::new();
        let lower = K_CONTAINER_COUNTERS.to_vec();
        let upper = crate::codec::prefix_successor(&lower);
        for (k, v) in crate::kv::collect_range(&*kv, Cf::Meta, lower, upper)? {
            let mut d = Dec::new(&k[K_CONTAINER_COUNTERS.len()..], "counter key");
            let id = d.u32().map_err(|e| KvError::Corrupt(e.to_string()))?;
            containers.insert(ContainerId(id), dec_json(&v, "container counters")?);
        }
        // The last commit's time, so that times stay monotonic across restarts.
        let mut last_time = Timestamp::default();
        {
            let mut it = kv.iter(Cf::Timeline, None, None);
            it.seek_for_prev(&[0xff; 9]);
            if it.valid() && it.key().len() == 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(it.key());
                let ms = (u64::from_be_bytes(b) ^ (1 << 63)) as i64;
                last_time = Timestamp {
                    sec: ms.div_euclid(1000),
                    nsec: (ms.rem_euclid(1000) * 1_000_000) as u32,
                };
            }
            it.status()?;
        }
        Ok(Committer {
            kv,
            st: Mutex::new(CommitState {
                next_version,
                last_time,
                next_ino,
                next_branch,
                next_container,
                store,
                containers,
            }),
            head: AtomicU64::new(next_version - 1),
            synced: Mutex::new(0),
        })
    }

    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    /// The newest committed version.
    pub fn head(&self) -> Version {
        Version(self.head.load(Ordering::Acquire))
    }

    pub fn store_counters(&self) -> StoreCounters {
        self.st.lock().store
    }

    pub fn container_counters(&self, c: ContainerId) -> ContainerCounters {
        self.st
            .lock()
            .containers
            .get(&c)
            .copied()
            .unwrap_or_default()
    }

    /// Runs `f` under the commit lock and commits what it wrote as one batch.
    pub fn commit<R, E>(&self, f: impl FnOnce(&mut Commit<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<KvError>,
    {
        let mut guard = self.st.lock();
        let now = Timestamp::now();
        let time = if now > guard.last_time {
            now
        } else {
            guard.last_time
        };
        let mut c = Commit {
            txn: Txn::new(&*self.kv),
            version: Version(guard.next_version),
            time,
            file_time: Timestamp::now_coarse(),
            st: guard.clone(),
            after: Vec::new(),
        };
        let r = f(&mut c)?;
        let Commit {
            mut txn,
            version,
            st,
            after,
            ..
        } = c;
        if txn.is_empty() && st == *guard {
            return Ok(r);
        }
        txn.put(
            Cf::Meta,
            K_NEXT_VERSION.to_vec(),
            Enc::new().u64(version.0 + 1).finish(),
        );
        txn.put(
            Cf::Timeline,
            timeline_key(time),
            Enc::new().u64(version.0).finish(),
        );
        if st.next_ino != guard.next_ino {
            txn.put(
                Cf::Meta,
                K_NEXT_INO.to_vec(),
                Enc::new().u64(st.next_ino).finish(),
            );
        }
        if st.next_branch != guard.next_branch {
            txn.put(
                Cf::Meta,
                K_NEXT_BRANCH.to_vec(),
                Enc::new().u64(st.next_branch).finish(),
            );
        }
        if st.next_container != guard.next_container {
            txn.put(
                Cf::Meta,
                K_NEXT_CONTAINER.to_vec(),
                Enc::new().u64(st.next_container as u64).finish(),
            );
        }
        if st.store != guard.store {
            txn.put(Cf::Meta, K_STORE_COUNTERS.to_vec(), enc_json(&st.store));
        }
        for (id, c) in &st.containers {
            if guard.containers.get(id) != Some(c) {
                txn.put(Cf::Meta, container_counter_key(*id), enc_json(c));
            }
        }
        for id in guard.containers.keys() {
            if !st.containers.contains_key(id) {
                txn.delete(Cf::Meta, container_counter_key(*id));
            }
        }
        self.kv.write(txn.into_batch(), false)?;
        for f in after {
            f();
        }
        *guard = CommitState {
            next_version: version.0 + 1,
            last_time: time,
            ..st
        };
        self.head.store(version.0, Ordering::Release);
        Ok(r)
    }

    /// Makes every commit so far durable, sharing the work with concurrent callers: `flush`
    /// runs first (the data the commits point at), then the metadata log is synced.
    pub fn sync<E: From<KvError>>(&self, flush: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        let wanted = self.head.load(Ordering::Acquire);
        let mut synced = self.synced.lock();
        if *synced >= wanted && wanted > 0 {
            return Ok(());
        }
        let upto = self.head.load(Ordering::Acquire);
        flush()?;
        self.kv.sync()?;
        *synced = upto;
        Ok(())
    }

    /// The newest version committed at or before `t`, if any.
    pub fn version_at(&self, t: Timestamp) -> Result<Option<Version>, KvError> {
        let mut it = self.kv.iter(Cf::Timeline, None, None);
        it.seek_for_prev(&timeline_key(t));
        let r = if it.valid() {
            Some(Version(
                Dec::new(it.value(), "timeline")
                    .u64()
                    .map_err(|e| KvError::Corrupt(e.to_string()))?,
            ))
        } else {
            None
        };
        it.status()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::mem::MemKv;

    #[test]
    fn versions_allocators_and_counters_persist() {
        let kv: Arc<dyn Kv> = Arc::new(MemKv::new());
        let c = Committer::open(kv.clone()).unwrap();
        assert_eq!(c.head(), Version(0));
        let ino = c
            .commit(|cm| {
                cm.txn.put(Cf::Meta, b"x".to_vec(), b"1".to_vec());
                cm.container_counters(ContainerId(3)).files += 2;
                Ok::<_, KvError>(cm.alloc_ino())
            })
            .unwrap();
        assert_eq!(ino, Ino(FIRST_INO));
        assert_eq!(c.head(), Version(1));
        // a failing closure leaves nothing behind
        let r: Result<(), KvError> = c.commit(|cm| {
            cm.alloc_ino();
            cm.txn.put(Cf::Meta, b"y".to_vec(), b"1".to_vec());
            Err(KvError::Backend("no".into()))
        });
        assert!(r.is_err());
        assert_eq!(kv.get(Cf::Meta, b"y").unwrap(), None);
        // an empty closure does not consume a version
        c.commit(|_| Ok::<_, KvError>(())).unwrap();
        assert_eq!(c.head(), Version(1));

        let c2 = Committer::open(kv.clone()).unwrap();
        assert_eq!(c2.head(), Version(1));
        assert_eq!(c2.container_counters(ContainerId(3)).files, 2);
        let ino2 = c2.commit(|cm| Ok::<_, KvError>(cm.alloc_ino())).unwrap();
        assert_eq!(
            ino2,
            Ino(FIRST_INO + 1),
            "allocator survived reopen; the failed allocation was not kept"
        );
        let t = Timestamp::now();
        assert_eq!(c2.version_at(t).unwrap(), Some(Version(2)));
        assert_eq!(c2.version_at(Timestamp { sec: 0, nsec: 0 }).unwrap(), None);
    }
}
