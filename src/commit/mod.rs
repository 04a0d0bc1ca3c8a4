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
//! - After a failed sync of pack data or of the metadata log the committer is *halted*:
//!   every later commit and sync fails with [`KvError::Halted`] naming the first failure,
//!   because what was acknowledged since the last good sync may not be on disk and a later
//!   sync that happens to succeed proves nothing about it (PostgreSQL's "fsyncgate"). Only
//!   reopening the store (which replays the log and starts new packs) clears it.
//! - Tree counters (live files and bytes per branch) are versioned records written by the
//!   commits that change them, so a tree read as of any version has its counts.
//!
//! Lock order: the registry writer lock, then a file's flush lock, then the commit lock
//! (`Committer::st`), then a file's state lock; the registry's published slot and the
//! sync lock are taken under it.

use crate::chunks::{ContainerCounters, StoreCounters};
use crate::clock::{ComplianceClock, TimeSource};
use crate::ids::{BranchId, ContainerId, Ino, Version};
use crate::keys::{self, MetaKey};
use crate::kv::{Cf, Kv, KvError, Txn};
use crate::mvcc::{self, ReadPoint};
use crate::records::{Timestamp, TreeCounters};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

mod timeline;

/// The (branch-local) object id under which a branch's tree counters are versioned.
const TREE_COUNTERS_INO: Ino = Ino(0);

/// Inode numbers below this are reserved (1 is the mount root).
pub const FIRST_INO: u64 = 16;
/// How far ahead of use the inode allocator's watermark is persisted.
const INO_BLOCK: u64 = 1024;

#[derive(Clone, Debug, PartialEq)]
struct CommitState {
    next_version: u64,
    last_time: Timestamp,
    next_ino: u64,
    /// The inode allocator's persisted watermark: every number below it may have been
    /// handed out, so a restart continues from here. Persisted a block ahead
    /// ([`INO_BLOCK`]), so most creates write no allocator record (a crash skips at most
    /// a block of numbers; nothing reads them).
    ino_reserved: u64,
    next_branch: u64,
    next_container: u32,
    store: StoreCounters,
    containers: HashMap<ContainerId, ContainerCounters>,
}

/// An operation's view while it builds its commit.
pub struct Commit<'a> {
    pub(crate) txn: Txn<'a>,
    pub version: Version,
    pub time: Timestamp,
    /// The time stamped on files changed by this commit: the kernel's coarse clock, which is
    /// what the kernel itself writes into a FUSE inode it updates (a hard link's ctime),
    /// so timestamps from either side never run backwards. `time` (the version's) stays
    /// fine-grained so that moments between two commits can be named.
    pub file_time: Timestamp,
    st: CommitState,
    after: Vec<Box<dyn FnOnce() + 'a>>,
    /// Changes of trees' counters: branch → (where the tree reads, files, bytes).
    trees: HashMap<BranchId, (ReadPoint, i64, i64)>,
    /// Branches whose counters this commit sets outright or stops writing: their cached
    /// values are dropped once it is applied.
    trees_reset: Vec<BranchId>,
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
    /// Makes every inode number allocated from now on larger than `ino` (a replica keeps
    /// its source's numbers, and a promoted replica must not hand them out again).
    pub fn reserve_inos_through(&mut self, ino: Ino) {
        self.st.next_ino = self.st.next_ino.max(ino.0 + 1);
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
    pub(crate) fn split(
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
    pub(crate) fn txn_and_store(&mut self) -> (&mut Txn<'a>, &mut StoreCounters) {
        (&mut self.txn, &mut self.st.store)
    }
    /// Counts `bytes` applications wrote into container `c` (the ingest figures of it and
    /// of the store; they start counting at their first commit, `ingest_since`).
    pub fn ingested(&mut self, c: ContainerId, bytes: u64) {
        let now = self.time.sec;
        self.st.store.ingest.wrote(bytes, now);
        self.st
            .containers
            .entry(c)
            .or_default()
            .ingest
            .wrote(bytes, now);
    }
    /// Forgets a deleted container's counters.
    pub fn drop_container_counters(&mut self, c: ContainerId) {
        self.st.containers.remove(&c);
    }
    /// Changes the live files and logical bytes of the tree `rp` writes to (its branch's
    /// counters, versioned with this commit).
    pub fn tree_delta(&mut self, rp: &ReadPoint, files: i64, logical_bytes: i64) {
        let e = self
            .trees
            .entry(rp.branch())
            .or_insert_with(|| (rp.clone(), 0, 0));
        e.1 += files;
        e.2 += logical_bytes;
    }
    /// Sets the counters of a new branch outright (a rollback to a point older than the
    /// counters' history, whose tree was counted instead).
    pub fn set_tree_counters(&mut self, rp: &ReadPoint, t: TreeCounters) {
        self.trees.remove(&rp.branch());
        self.trees_reset.push(rp.branch());
        let v = self.version;
        mvcc::put(
            &mut self.txn,
            Cf::TreeCounters,
            rp,
            TREE_COUNTERS_INO,
            &[],
            v,
            Some(&t.encode()),
        );
    }
    /// A purged branch's counters are not written any more.
    pub(crate) fn forget_tree_counters(&mut self, b: BranchId) {
        self.trees.remove(&b);
        self.trees_reset.push(b);
    }
}

/// The counters of a tree as of its read point (`None`: no record, e.g. a point older than
/// the store's format 2).
pub fn tree_counters(kv: &dyn Kv, rp: &ReadPoint) -> Result<Option<TreeCounters>, KvError> {
    match mvcc::get_live(kv, Cf::TreeCounters, rp, TREE_COUNTERS_INO, &[])? {
        None => Ok(None),
        Some(raw) => TreeCounters::decode(&raw)
            .map(Some)
            .map_err(|e| KvError::Corrupt(format!("tree counters of branch {}: {e}", rp.branch()))),
    }
}

pub struct Committer {
    kv: Arc<dyn Kv>,
    /// The commit lock: allocators, counters and the last commit time. Every metadata
    /// change holds it from its read-check-write through the batch write. Lock order:
    /// after the registry writer lock and a file's flush lock; before a file's state lock,
    /// the registry slot and the sync lock.
    st: Mutex<CommitState>,
    head: AtomicU64,
    /// The newest version known durable; held for the whole of a sync (across the
    /// fdatasyncs and the log sync: that is its purpose — concurrent callers wait and share
    /// one sync) so that syncs never overlap. Lock order: never taken with the commit lock
    /// (a sync runs without it, so commits go on meanwhile); before the pack writer's lock.
    synced: Mutex<u64>,
    /// Why the store stopped taking changes, once a sync failed.
    halted: OnceLock<String>,
    /// A tree counter would have gone below zero (kept at zero; `fsck --repair` recounts).
    counter_drift: AtomicBool,
    /// The newest counters of each branch written since open, as commits left them, so a
    /// commit that changes a tree adds to them without reading its record back (a versioned
    /// seek per create and unlink). Only commits write counter records of a live branch, and
    /// they update this after their batch is applied (a failed one changes nothing here).
    /// Lock order: a leaf, taken only under the commit lock.
    tree_cache: Mutex<HashMap<BranchId, TreeCounters>>,
    /// The compliance clock: commit times never fall behind it, so setting the system
    /// clock back cannot make new history look old to a retention lock.
    clock: ComplianceClock,
}

fn get_u64(kv: &dyn Kv, key: MetaKey, default: u64) -> Result<u64, KvError> {
    match kv.get(Cf::Meta, &key.encode())? {
        None => Ok(default),
        Some(v) => keys::decode_u64(&v, "allocator").map_err(|e| KvError::Corrupt(e.to_string())),
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
    MetaKey::ContainerCounters(c).encode()
}

pub use keys::timeline as timeline_key;

impl Committer {
    pub fn open(kv: Arc<dyn Kv>, time: Arc<dyn TimeSource>) -> Result<Committer, KvError> {
        let next_version = get_u64(&*kv, MetaKey::NextVersion, 1)?;
        let next_ino = get_u64(&*kv, MetaKey::NextIno, FIRST_INO)?;
        let next_branch = get_u64(&*kv, MetaKey::NextBranch, 1)?;
        let next_container = u32::try_from(get_u64(&*kv, MetaKey::NextContainer, 1)?)
            .map_err(|_| KvError::Corrupt("container id allocator out of range".into()))?;
        let store = match kv.get(Cf::Meta, &MetaKey::StoreCounters.encode())? {
            Some(b) => dec_json(&b, "store counters")?,
            None => StoreCounters::default(),
        };
        let mut containers = HashMap::new();
        let (lower, upper) = MetaKey::container_counters_range();
        for (k, v) in crate::kv::collect_range(&*kv, Cf::Meta, lower, Some(upper))? {
            let id = MetaKey::container_counters_from(&k)
                .map_err(|e| KvError::Corrupt(e.to_string()))?;
            containers.insert(id, dec_json(&v, "container counters")?);
        }
        // The last commit's time, so that times stay monotonic across restarts.
        let mut last_time = Timestamp::default();
        {
            let mut it = kv.iter(Cf::Timeline, None, None);
            it.seek_for_prev(&keys::TIMELINE_END);
            if it.valid() {
                last_time =
                    keys::timeline_from(it.key()).map_err(|e| KvError::Corrupt(e.to_string()))?;
            }
            it.status()?;
        }
        let clock = ComplianceClock::open(&*kv, time, last_time)?;
        Ok(Committer {
            kv,
            st: Mutex::new(CommitState {
                next_version,
                last_time,
                next_ino,
                ino_reserved: next_ino,
                next_branch,
                next_container,
                store,
                containers,
            }),
            head: AtomicU64::new(next_version - 1),
            synced: Mutex::new(0),
            halted: OnceLock::new(),
            counter_drift: AtomicBool::new(false),
            tree_cache: Mutex::new(HashMap::new()),
            clock,
        })
    }

    /// The store's compliance clock (retention locks).
    pub fn clock(&self) -> &ComplianceClock {
        &self.clock
    }

    /// Stops all further changes: a sync failed, so durability of what was acknowledged
    /// since the last good sync is unknown. The first reason is kept.
    pub fn halt(&self, reason: String) {
        if self.halted.set(reason.clone()).is_ok() {
            log::error!(
                "store halted: {reason}; writes now fail with EIO, reads keep working; \
                 unmount and mount again to recover (then run `dedupfs fsck --scrub`)"
            );
        }
    }

    /// Why the store takes no changes, if it was halted.
    pub fn halted(&self) -> Option<&str> {
        self.halted.get().map(String::as_str)
    }

    /// Whether a tree counter would have gone below zero since the store was opened.
    pub fn counters_drifted(&self) -> bool {
        self.counter_drift.load(Ordering::Relaxed)
    }

    fn check_halted(&self) -> Result<(), KvError> {
        match self.halted.get() {
            Some(r) => Err(KvError::Halted(r.clone())),
            None => Ok(()),
        }
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
        self.check_halted()?;
        // Timed from before the lock: what a caller waits for, lock queue included.
        let started = std::time::Instant::now();
        let mut guard = self.st.lock();
        let now = self.clock.wall().max(self.clock.now());
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
            trees: HashMap::new(),
            trees_reset: Vec::new(),
        };
        let r = f(&mut c)?;
        let Commit {
            mut txn,
            version,
            st,
            after,
            trees,
            trees_reset,
            ..
        } = c;
        let mut tree_updates: Vec<(BranchId, TreeCounters)> = Vec::new();
        for (_, (rp, files, bytes)) in trees {
            if files == 0 && bytes == 0 {
                continue;
            }
            let cached = self.tree_cache.lock().get(&rp.branch()).copied();
            let cur = match cached {
                Some(t) => t,
                None => match mvcc::txn_get_live(
                    &txn,
                    Cf::TreeCounters,
                    &rp,
                    TREE_COUNTERS_INO,
                    &[],
                    version,
                )? {
                    Some(raw) => TreeCounters::decode(&raw).map_err(|e| {
                        KvError::Corrupt(format!("tree counters of branch {}: {e}", rp.branch()))
                    })?,
                    None => TreeCounters::default(),
                },
            };
            let apply = |v: u64, d: i64, what: &str| -> u64 {
                match v.checked_add_signed(d) {
                    Some(n) => n,
                    None => {
                        // A statistic, not a reference count: nothing is freed or kept by
                        // it, so the operation goes on; the drift is reported, not hidden.
                        self.counter_drift.store(true, Ordering::Relaxed);
                        log::error!(
                            "{what} of branch {} would go below zero ({v} {d:+}); kept at 0 \
                             — run `dedupfs fsck --repair` to recount",
                            rp.branch()
                        );
                        0
                    }
                }
            };
            let next = TreeCounters {
                files: apply(cur.files, files, "live file count"),
                logical_bytes: apply(cur.logical_bytes, bytes, "logical byte count"),
            };
            mvcc::put(
                &mut txn,
                Cf::TreeCounters,
                &rp,
                TREE_COUNTERS_INO,
                &[],
                version,
                Some(&next.encode()),
            );
            tree_updates.push((rp.branch(), next));
        }
        if txn.is_empty() && st == *guard {
            let mut tc = self.tree_cache.lock();
            for b in &trees_reset {
                tc.remove(b);
            }
            drop(tc);
            for f in after {
                f();
            }
            return Ok(r);
        }
        txn.put(
            Cf::Meta,
            MetaKey::NextVersion.encode(),
            keys::encode_u64(version.0 + 1),
        );
        txn.put(
            Cf::Timeline,
            timeline_key(time),
            keys::encode_u64(version.0),
        );
        let mut ino_reserved = guard.ino_reserved;
        if st.next_ino > ino_reserved {
            ino_reserved = st.next_ino + INO_BLOCK;
            txn.put(
                Cf::Meta,
                MetaKey::NextIno.encode(),
                keys::encode_u64(ino_reserved),
            );
        }
        if st.next_branch != guard.next_branch {
            txn.put(
                Cf::Meta,
                MetaKey::NextBranch.encode(),
                keys::encode_u64(st.next_branch),
            );
        }
        if st.next_container != guard.next_container {
            txn.put(
                Cf::Meta,
                MetaKey::NextContainer.encode(),
                keys::encode_u64(st.next_container as u64),
            );
        }
        if st.store != guard.store {
            txn.put(
                Cf::Meta,
                MetaKey::StoreCounters.encode(),
                enc_json(&st.store),
            );
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
        {
            let mut tc = self.tree_cache.lock();
            for b in trees_reset {
                tc.remove(&b);
            }
            tc.extend(tree_updates);
        }
        crate::metrics::COMMITS.inc();
        crate::metrics::COMMIT_SECONDS.observe(started.elapsed());
        for f in after {
            f();
        }
        *guard = CommitState {
            next_version: version.0 + 1,
            last_time: time,
            ino_reserved,
            ..st
        };
        self.head.store(version.0, Ordering::Release);
        Ok(r)
    }

    /// Makes every commit so far durable, sharing the work with concurrent callers: `flush`
    /// runs first (the data the commits point at), then the metadata log is synced.
    ///
    /// A failure of the log sync halts the committer (see the module doc); `flush` halts it
    /// itself for failures of its own syncs (it knows which of its errors lost data).
    pub fn sync<E: From<KvError>>(&self, flush: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        self.check_halted()?;
        let wanted = self.head.load(Ordering::Acquire);
        let mut synced = self.synced.lock();
        if *synced >= wanted && wanted > 0 {
            return Ok(());
        }
        let upto = self.head.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        flush()?;
        self.check_halted()?;
        if let Err(e) = self.kv.sync() {
            self.halt(format!("sync of the metadata log failed: {e}"));
            return Err(e.into());
        }
        crate::metrics::SYNCS.inc();
        crate::metrics::SYNC_SECONDS.observe(started.elapsed());
        *synced = upto;
        Ok(())
    }
}

impl Drop for Committer {
    /// The clock's last reading goes to disk at close (best effort: a failure only makes
    /// locks last longer, and the store's own errors were already reported).
    fn drop(&mut self) {
        if self.halted.get().is_none() {
            if let Err(e) = self.clock.persist(&*self.kv) {
                log::warn!("the compliance clock could not be saved at close: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
