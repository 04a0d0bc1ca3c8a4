//! The registry: the containers, branches and snapshots of a store, in memory, as one
//! immutable value that readers share and writers replace.
//!
//! Readers call [`RegistryCell::get`] and hold an `Arc<Registry>` as long as they like; no
//! lock is held while they use it, so a reader can never block a writer or itself (the
//! parking_lot `RwLock` this replaces deadlocked when a reader holding a read guard read
//! again behind a queued writer). Writers are serialised by the writer lock, change a
//! private copy, and publish it when — and only when — their commit is applied, still
//! under the commit lock ([`crate::store::Store::commit_registry`]). So every commit that
//! starts after a registry change sees it: a tree-writing commit can check that its tree is
//! still current (a rollback switches a container's head atomically with respect to it).
//!
//! Invariants: every branch's parent chain ends at a branch without a parent (checked at
//! load; a cycle or a missing parent is corruption); a container marked `deleting` is not
//! in `by_name`/`by_id`.

use super::records::*;
use super::ContainerError;
use crate::ids::{BranchId, ContainerId, Ino, Version};
use crate::kv::{Cf, Kv};
use crate::mvcc::ReadPoint;
use crate::sync::{Mutex, MutexGuard};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct ContainerInfo {
    pub rec: ContainerRecord,
    /// Where reads of the tree look.
    pub read_point: ReadPoint,
    /// The view number in node ids: the container id for its live tree, or a snapshot or
    /// time-travel view.
    pub view: u32,
    /// Nothing may change this tree (read-only snapshot, time travel).
    pub read_only: bool,
    /// The snapshot this tree is, if any.
    pub snapshot: Option<SnapshotRecord>,
}

impl ContainerInfo {
    /// The container the tree belongs to (chunk references are counted on it).
    pub fn id(&self) -> ContainerId {
        ContainerId(self.rec.id)
    }
    /// A read-only view of the container as of `v`.
    pub fn as_of(&self, reg: &Registry, v: Version, view: u32) -> ContainerInfo {
        self.as_of_on(reg, self.rec.branch_at(v), v, view)
    }
    /// A read-only view of branch `branch` of the container as of `v` (a point that names
    /// its branch: a replica's points were built on a branch that became the head later).
    pub fn as_of_on(
        &self,
        reg: &Registry,
        branch: BranchId,
        v: Version,
        view: u32,
    ) -> ContainerInfo {
        ContainerInfo {
            rec: self.rec.clone(),
            read_point: reg.read_point(branch, v),
            view,
            read_only: true,
            snapshot: None,
        }
    }
    pub fn root(&self) -> Ino {
        Ino(self.rec.root)
    }
    /// The branch this tree reads first and writes to (for a snapshot, its own branch;
    /// never the container's head unless this is the live tree).
    pub fn branch(&self) -> BranchId {
        self.read_point.branch()
    }
    /// The key of this tree's buffered (not yet committed) state of file `ino`, if it can
    /// have any: only a writable tree can. A read-only view (time travel, a read-only
    /// snapshot) reads its branch as of an older version, and the buffered writes under
    /// the same (branch, inode) are the live file's, never the view's.
    pub fn buffer_key(&self, ino: Ino) -> Option<(BranchId, Ino)> {
        (!self.read_only).then(|| (self.branch(), ino))
    }
}

/// The containers and branches of a store.
#[derive(Default, Debug, Clone)]
pub struct Registry {
    by_id: BTreeMap<ContainerId, Arc<ContainerInfo>>,
    /// Live trees that moved to a view of their own (after a rollback): view → container.
    live_views: HashMap<u32, ContainerId>,
    by_name: BTreeMap<String, ContainerId>,
    branches: HashMap<BranchId, BranchRecord>,
    /// Containers whose delete has not finished.
    deleting: Vec<ContainerRecord>,
    /// Snapshots by id, with their trees.
    snapshots: BTreeMap<u32, Arc<ContainerInfo>>,
}

impl Registry {
    pub fn load(kv: &dyn Kv) -> Result<Registry, ContainerError> {
        let mut r = Registry::default();
        for (k, v) in crate::kv::collect_range(kv, Cf::Branches, vec![], None)? {
            let b: BranchRecord = serde_json::from_slice(&v)
                .map_err(|e| ContainerError::BadRecord(format!("branch {k:?}"), e.to_string()))?;
            r.branches.insert(BranchId(b.id), b);
        }
        for (k, v) in crate::kv::collect_range(kv, Cf::Containers, vec![], None)? {
            let c: ContainerRecord = serde_json::from_slice(&v).map_err(|e| {
                ContainerError::BadRecord(format!("container {k:?}"), e.to_string())
            })?;
            if c.deleting {
                r.deleting.push(c);
            } else {
                r.insert(c);
            }
        }
        r.check_branches()?;
        let (lo, hi) = crate::keys::snapshots_range();
        for (k, v) in crate::kv::collect_range(kv, Cf::Points, lo, Some(hi))? {
            let s: SnapshotRecord = serde_json::from_slice(&v)
                .map_err(|e| ContainerError::BadRecord(format!("snapshot {k:?}"), e.to_string()))?;
            r.insert_snapshot(s);
        }
        Ok(r)
    }

    /// Every parent chain ends: no cycle, no missing parent (so reads never loop).
    fn check_branches(&self) -> Result<(), ContainerError> {
        for b in self.branches.values() {
            let mut cur = b;
            let mut steps = 0usize;
            while let Some((p, _)) = cur.parent {
                steps += 1;
                cur = match self.branches.get(&BranchId(p)) {
                    Some(next) if steps <= self.branches.len() => next,
                    Some(_) => {
                        return Err(ContainerError::BadRecord(
                            format!("branch {}", b.id),
                            "its ancestry loops".into(),
                        ))
                    }
                    None => {
                        return Err(ContainerError::BadRecord(
                            format!("branch {}", b.id),
                            format!("ancestor branch {p} does not exist"),
                        ))
                    }
                };
            }
        }
        Ok(())
    }

    pub fn insert_snapshot(&mut self, s: SnapshotRecord) {
        let Some(ci) = self.get(ContainerId(s.container)) else {
            return; // its container is being deleted
        };
        let (read_point, read_only) = match s.branch {
            Some(b) => (self.read_point(BranchId(b), Version::LATEST), false),
            None => (
                self.read_point(BranchId(s.base_branch), Version(s.base_version)),
                true,
            ),
        };
        let info = ContainerInfo {
            rec: ci.rec.clone(),
            read_point,
            view: s.view(),
            read_only: read_only || s.mode == SnapshotMode::Ro,
            snapshot: Some(s.clone()),
        };
        self.snapshots.insert(s.id, Arc::new(info));
    }

    pub fn remove_snapshot(&mut self, id: u32) -> Option<Arc<ContainerInfo>> {
        self.snapshots.remove(&id)
    }

    pub fn snapshots(&self) -> Vec<Arc<ContainerInfo>> {
        let mut v: Vec<_> = self.snapshots.values().cloned().collect();
        v.sort_by(|a, b| {
            let (a, b) = (a.snapshot.as_ref(), b.snapshot.as_ref());
            a.map(|s| &s.name).cmp(&b.map(|s| &s.name))
        });
        v
    }

    pub fn snapshot_by_name(&self, name: &str) -> Option<Arc<ContainerInfo>> {
        self.snapshots
            .values()
            .find(|s| s.snapshot.as_ref().is_some_and(|r| r.name == name))
            .cloned()
    }

    /// The tree of a view number: a container's live tree or a snapshot.
    pub fn view(&self, view: u32) -> Option<Arc<ContainerInfo>> {
        if view < SNAPSHOT_VIEW_BASE {
            // A container rolled back has moved to another view: its old one is stale.
            self.get(ContainerId(view)).filter(|c| c.view == view)
        } else if view < TIME_VIEW_BASE {
            self.snapshots
                .get(&(view - SNAPSHOT_VIEW_BASE))
                .cloned()
                .or_else(|| self.get(*self.live_views.get(&view)?))
        } else {
            None
        }
    }

    pub fn branch(&self, b: BranchId) -> Option<&BranchRecord> {
        self.branches.get(&b)
    }

    pub fn add_branch(&mut self, b: BranchRecord) {
        self.branches.insert(BranchId(b.id), b);
    }

    pub fn forget_branch(&mut self, b: BranchId) {
        self.branches.remove(&b);
    }

    /// Applies a committed create or update of a container (and a new branch of it).
    pub fn upsert(&mut self, rec: ContainerRecord, branch: Option<BranchRecord>) {
        if let Some(b) = branch {
            self.branches.insert(BranchId(b.id), b);
        }
        self.remove(ContainerId(rec.id));
        if rec.deleting {
            self.deleting.retain(|d| d.id != rec.id);
            self.deleting.push(rec);
        } else {
            self.insert(rec);
        }
    }

    /// Forgets a container whose delete finished, with its snapshots and branches.
    pub fn forget(&mut self, id: ContainerId) {
        self.remove(id);
        self.snapshots.retain(|_, s| s.rec.id != id.0);
        self.deleting.retain(|d| d.id != id.0);
        self.branches.retain(|_, b| b.container != id.0);
    }

    fn insert(&mut self, c: ContainerRecord) {
        let id = ContainerId(c.id);
        let read_point = self.read_point(BranchId(c.head), Version::LATEST);
        self.by_name.insert(c.name.clone(), id);
        if c.view() != c.id {
            self.live_views.insert(c.view(), id);
        }
        self.by_id.insert(
            id,
            Arc::new(ContainerInfo {
                rec: c.clone(),
                read_point,
                view: c.view(),
                // A replica changes only by `receive`.
                read_only: c.replica.is_some(),
                snapshot: None,
            }),
        );
        // Snapshot trees carry the container record (settings, name): refresh them.
        let snaps: Vec<SnapshotRecord> = self
            .snapshots
            .values()
            .filter_map(|s| s.snapshot.clone())
            .filter(|s| s.container == c.id)
            .collect();
        for s in snaps {
            self.insert_snapshot(s);
        }
    }

    fn remove(&mut self, id: ContainerId) {
        if let Some(c) = self.by_id.remove(&id) {
            self.by_name.remove(&c.rec.name);
            self.live_views.remove(&c.view);
        }
    }

    /// The read chain of `branch` as of `at`, through its ancestors.
    pub fn read_point(&self, branch: BranchId, at: Version) -> ReadPoint {
        let mut levels = vec![(branch, at)];
        let mut cur = branch;
        let mut cap = at;
        while let Some((p, v)) = self.branches.get(&cur).and_then(|b| b.parent) {
            cap = cap.min(Version(v));
            levels.push((BranchId(p), cap));
            cur = BranchId(p);
            // Chains were checked at load and branches only ever fork off existing ones.
            debug_assert!(levels.len() <= self.branches.len() + 1, "branch cycle");
        }
        ReadPoint { levels }
    }

    pub fn get(&self, id: ContainerId) -> Option<Arc<ContainerInfo>> {
        self.by_id.get(&id).cloned()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<ContainerInfo>> {
        self.by_name.get(name).and_then(|id| self.get(*id))
    }

    /// Live containers in name order.
    pub fn list(&self) -> Vec<Arc<ContainerInfo>> {
        self.by_name
            .values()
            .filter_map(|id| self.get(*id))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn branches_of(&self, c: ContainerId) -> Vec<BranchId> {
        let mut v: Vec<BranchId> = self
            .branches
            .values()
            .filter(|b| b.container == c.0)
            .map(|b| BranchId(b.id))
            .collect();
        v.sort();
        v
    }

    pub fn pending_deletes(&self) -> Vec<ContainerRecord> {
        self.deleting.clone()
    }
}

/// The published registry and the lock that serialises its writers.
pub struct RegistryCell {
    /// The registry readers see. Protects only the pointer: readers clone the `Arc` and
    /// drop the lock at once. Lock order: a leaf (taken under the commit lock when a
    /// commit publishes; nothing is taken while it is held).
    current: Arc<Mutex<Arc<Registry>>>,
    /// Serialises writers from their checks through their commit, so two writers cannot
    /// both see a name free and both take it. Readers never take it. Lock order: before
    /// the commit lock (a writer holds it across its commit, which is what writers wait
    /// for; FUSE requests only read and never wait for it).
    writer: Mutex<()>,
}

impl RegistryCell {
    pub fn new(r: Registry) -> RegistryCell {
        RegistryCell {
            current: Arc::new(Mutex::new(Arc::new(r))),
            writer: Mutex::new(()),
        }
    }

    /// The current registry.
    pub fn get(&self) -> Arc<Registry> {
        self.current.lock().clone()
    }

    /// Starts a change: holds the writer lock and gives a private copy to change.
    pub fn edit(&self) -> RegistryEdit<'_> {
        let guard = self.writer.lock();
        RegistryEdit {
            next: (*self.get()).clone(),
            slot: self.current.clone(),
            _writer: guard,
        }
    }
}

/// A writer's private copy of the registry; readers see it once it is published.
pub struct RegistryEdit<'a> {
    next: Registry,
    slot: Arc<Mutex<Arc<Registry>>>,
    _writer: MutexGuard<'a, ()>,
}

impl RegistryEdit<'_> {
    /// The publication of the copy as it is now, to run when a commit is applied (so it
    /// happens under the commit lock, before any later commit starts).
    pub fn publisher(&self) -> impl FnOnce() + Send + 'static {
        let (slot, next) = (self.slot.clone(), Arc::new(self.next.clone()));
        move || *slot.lock() = next
    }

    /// Publishes the copy now (for changes no commit goes with, e.g. at open).
    pub fn publish(self) {
        *self.slot.lock() = Arc::new(self.next);
    }
}

impl std::ops::Deref for RegistryEdit<'_> {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        &self.next
    }
}

impl std::ops::DerefMut for RegistryEdit<'_> {
    fn deref_mut(&mut self) -> &mut Registry {
        &mut self.next
    }
}
