//! Containers: the top-level directories of the mount, each a backup target with its own
//! settings, history branch and statistics.
//!
//! Owns container and branch records and the in-memory registry built from them. A
//! container's live tree is the newest state of its head branch; its root directory is an
//! ordinary directory inode on that branch.
//!
//! Invariants:
//! - Names are unique, valid UTF-8, 1..=255 bytes, without '/' or NUL, and do not start
//!   with '.' (names starting with '.' at the mount root are reserved for virtual entries).
//! - A container marked `deleting` is invisible and is purged (its extents' chunk references
//!   released, then its records removed) in batches that each commit atomically, so an
//!   interrupted delete resumes where it stopped.

use crate::chunks::{ChunkError, Compression};
use crate::codec::{prefix_successor, Enc};
use crate::commit::Commit;
use crate::ids::{BranchId, ChunkId, ContainerId, Ino, Version};
use crate::kv::{Cf, Kv, KvError};
use crate::mvcc::{self, ReadPoint};
use crate::records::{ExtentRec, FileKind, InodeRec, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use thiserror::Error;

/// The branch and inode of the synthetic mount root.
pub const ROOT_BRANCH: BranchId = BranchId(0);
pub const ROOT_INO: Ino = Ino(1);

#[derive(Debug, Error)]
pub enum ContainerError {
    #[error("no container named '{0}'")]
    NotFound(String),
    #[error("a container named '{0}' already exists")]
    Exists(String),
    #[error("invalid container name '{name}': {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("container '{name}' is busy: {reason}")]
    Busy { name: String, reason: String },
    #[error("container '{name}' is not empty")]
    NotEmpty { name: String },
    #[error("too many containers (the limit is {0})")]
    TooMany(u32),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("container record {0}: {1}")]
    BadRecord(String, String),
}

/// Containers ids live in 18 bits of a node id (see the filesystem's view numbering).
pub const MAX_CONTAINERS: u32 = (1 << 18) - 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default)]
pub struct ContainerSettings {
    pub compression: Compression,
    /// The history retention policy (see the snapshot crate's `retention` module for the
    /// syntax); `None` keeps every change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: u32,
    pub name: String,
    /// Inode of the container's root directory.
    pub root: u64,
    /// Branch holding the live tree.
    pub head: u64,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    pub created_version: u64,
    pub settings: ContainerSettings,
    #[serde(default)]
    pub deleting: bool,
    /// Branches that were the head before a rollback, oldest first: (branch, last version
    /// at which it was the head). Reading the container as of a version uses the branch
    /// that was its head then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prev_heads: Vec<(u64, u64)>,
    /// History older than this version was pruned by retention (except kept points).
    #[serde(default)]
    pub history_floor: u64,
    /// The time of `history_floor`, seconds since the epoch.
    #[serde(default)]
    pub history_floor_time: i64,
    /// The view number of the live tree after a rollback (0: the container id). A rollback
    /// gives the live tree new node ids, so the kernel cannot mix cached inodes of the
    /// tree before it with the tree after it.
    #[serde(default)]
    pub live_view: u32,
    /// Points below `history_floor` that retention tiers keep: (time, version), oldest
    /// first. A time below the floor reads as the newest of these at or before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_points: Vec<(i64, u64)>,
}

impl ContainerRecord {
    pub fn view(&self) -> u32 {
        if self.live_view == 0 {
            self.id
        } else {
            self.live_view
        }
    }
    /// The branch that was the container's head at version `v`.
    pub fn branch_at(&self, v: Version) -> BranchId {
        for &(b, until) in &self.prev_heads {
            if v.0 <= until {
                return BranchId(b);
            }
        }
        BranchId(self.head)
    }
}

/// First view number of snapshots; below it, a view is a container id.
pub const SNAPSHOT_VIEW_BASE: u32 = 1 << 18;
/// First view number of time-travel views (allocated per mount, not stable).
pub const TIME_VIEW_BASE: u32 = 3 << 18;
/// One past the largest view number (node ids have 20 bits of view).
pub const VIEW_LIMIT: u32 = 1 << 20;

/// How a tree may be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    /// Read-only.
    Ro,
    /// Writable; its writes stay in the snapshot.
    Rw,
    /// Writable, and its changes can be listed and replayed elsewhere.
    RwTracking,
}

impl SnapshotMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Ro => "ro",
            SnapshotMode::Rw => "rw",
            SnapshotMode::RwTracking => "rw-tracking",
        }
    }
    pub fn parse(s: &str) -> Option<SnapshotMode> {
        match s {
            "ro" => Some(SnapshotMode::Ro),
            "rw" => Some(SnapshotMode::Rw),
            "rw-tracking" => Some(SnapshotMode::RwTracking),
            _ => None,
        }
    }
}

/// A virtual snapshot: a container's tree as of one version, pinned (read-only) or forked
/// into its own branch (read-write). Creating one writes only this record (and a branch
/// record), whatever the size of the tree.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: u32,
    pub name: String,
    pub container: u32,
    pub mode: SnapshotMode,
    /// The tree the snapshot shows at creation: (branch, version).
    pub base_branch: u64,
    pub base_version: u64,
    /// The snapshot's own branch (read-write modes).
    pub branch: Option<u64>,
    /// Creation time (seconds since the epoch) and version.
    pub created: i64,
    pub created_version: u64,
    /// The moment the snapshot shows, seconds since the epoch.
    pub at_time: i64,
    /// Why it exists, e.g. "user" or "before rollback to …".
    pub origin: String,
}

impl SnapshotRecord {
    pub fn view(&self) -> u32 {
        SNAPSHOT_VIEW_BASE + self.id
    }
}

/// A named consistency point of a container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BookmarkRecord {
    pub name: String,
    pub container: u32,
    /// `app`, `fs` or `user`.
    pub kind: String,
    pub version: u64,
    /// Seconds and nanoseconds since the epoch.
    pub time: i64,
    pub time_nsec: u32,
    /// The branch that was the head when it was taken.
    pub branch: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BranchRecord {
    pub id: u64,
    pub container: u32,
    /// (parent branch, fork version): reads fall through to the parent as of that version.
    pub parent: Option<(u64, u64)>,
    pub created_version: u64,
    pub created: i64,
    pub purpose: String,
}

/// A live container as the filesystem sees it.
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
    /// Where file and byte counters of this tree are kept: the container's own for its
    /// live tree, the snapshot's for a snapshot (so snapshots do not skew the container).
    pub fn account(&self) -> ContainerId {
        if self.snapshot.is_some() {
            ContainerId(self.view)
        } else {
            self.id()
        }
    }
    /// A read-only view of the container as of `v`.
    pub fn as_of(&self, reg: &Registry, v: Version, view: u32) -> ContainerInfo {
        ContainerInfo {
            rec: self.rec.clone(),
            read_point: reg.read_point(self.rec.branch_at(v), v),
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

/// Key prefixes of `Cf::Points`.
pub const POINT_SNAPSHOT: u8 = b'S';
pub const POINT_BOOKMARK: u8 = b'B';

pub fn snapshot_key(id: u32) -> Vec<u8> {
    Enc::new().u8(POINT_SNAPSHOT).u32(id).finish()
}

pub fn bookmark_prefix(container: ContainerId) -> Vec<u8> {
    Enc::new().u8(POINT_BOOKMARK).u32(container.0).finish()
}

pub fn bookmark_key(container: ContainerId, name: &str) -> Vec<u8> {
    Enc::new()
        .u8(POINT_BOOKMARK)
        .u32(container.0)
        .bytes(name.as_bytes())
        .finish()
}

/// The bookmarks of a container, in name order.
pub fn bookmarks(
    kv: &dyn Kv,
    container: ContainerId,
) -> Result<Vec<BookmarkRecord>, ContainerError> {
    let lo = bookmark_prefix(container);
    let hi = prefix_successor(&lo);
    let mut out = Vec::new();
    for (k, v) in crate::kv::collect_range(kv, Cf::Points, lo, hi)? {
        out.push(
            serde_json::from_slice(&v)
                .map_err(|e| ContainerError::BadRecord(format!("bookmark {k:?}"), e.to_string()))?,
        );
    }
    Ok(out)
}

pub fn branch_record_key(id: BranchId) -> Vec<u8> {
    branch_key(id)
}

fn container_key(id: ContainerId) -> Vec<u8> {
    Enc::new().u32(id.0).finish()
}

fn branch_key(id: BranchId) -> Vec<u8> {
    Enc::new().u64(id.0).finish()
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
        let lo = vec![POINT_SNAPSHOT];
        let hi = vec![POINT_SNAPSHOT + 1];
        for (k, v) in crate::kv::collect_range(kv, Cf::Points, lo, Some(hi))? {
            let s: SnapshotRecord = serde_json::from_slice(&v)
                .map_err(|e| ContainerError::BadRecord(format!("snapshot {k:?}"), e.to_string()))?;
            r.insert_snapshot(s);
        }
        Ok(r)
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
                read_only: false,
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
            if levels.len() > 10_000 {
                break; // a cycle would be corruption; never loop forever
            }
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

pub fn validate_name(name: &str) -> Result<(), ContainerError> {
    let bad = |reason| {
        Err(ContainerError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 255 {
        return bad("longer than 255 bytes");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("contains '/' or NUL");
    }
    if name.starts_with('.') {
        return bad("names starting with '.' are reserved");
    }
    Ok(())
}

/// Owner and mode of a new container's root directory.
#[derive(Clone, Copy, Debug)]
pub struct RootOwner {
    pub uid: u32,
    pub gid: u32,
    pub perm: u16,
}

impl Default for RootOwner {
    fn default() -> Self {
        RootOwner {
            uid: 0,
            gid: 0,
            perm: 0o755,
        }
    }
}

pub fn new_dir_inode(owner: RootOwner, parent: Ino, now: Timestamp) -> InodeRec {
    InodeRec {
        kind: FileKind::Directory,
        perm: owner.perm,
        uid: owner.uid,
        gid: owner.gid,
        nlink: 2,
        size: 0,
        atime: now,
        mtime: now,
        ctime: now,
        btime: now,
        rdev: 0,
        parent,
        data_gen: 0,
        data_bytes: 0,
        flags: 0,
        xattrs: 0,
        target: Vec::new(),
    }
}

/// Reads the mount root's inode inside a commit.
pub fn root_inode(c: &Commit<'_>) -> Result<InodeRec, ContainerError> {
    let rp = ReadPoint::single(ROOT_BRANCH, Version::LATEST);
    let raw = mvcc::txn_get_live(&c.txn, Cf::Inodes, &rp, ROOT_INO, &[], c.version)?.ok_or_else(
        || ContainerError::BadRecord("root".into(), "mount root inode missing".into()),
    )?;
    InodeRec::decode(&raw).map_err(|e| ContainerError::BadRecord("root".into(), e.to_string()))
}

pub fn put_root_inode(c: &mut Commit<'_>, rec: &InodeRec) {
    let v = c.version;
    mvcc::put(
        &mut c.txn,
        Cf::Inodes,
        &ReadPoint::single(ROOT_BRANCH, Version::LATEST),
        ROOT_INO,
        &[],
        v,
        Some(&rec.encode()),
    );
}

/// Writes a new container (record, branch, root directory) into `c`. The caller checks the
/// name is free and updates the registry after the commit.
pub fn create_in(
    c: &mut Commit<'_>,
    name: &str,
    settings: ContainerSettings,
    owner: RootOwner,
) -> Result<ContainerRecord, ContainerError> {
    validate_name(name)?;
    let id = c.alloc_container();
    if id.0 > MAX_CONTAINERS {
        return Err(ContainerError::TooMany(MAX_CONTAINERS));
    }
    let branch = c.alloc_branch();
    let root = c.alloc_ino();
    let now = c.time;
    let rec = ContainerRecord {
        id: id.0,
        name: name.to_string(),
        root: root.0,
        head: branch.0,
        created: now.sec,
        created_version: c.version.0,
        settings,
        deleting: false,
        prev_heads: Vec::new(),
        history_floor: 0,
        history_floor_time: 0,
        live_view: 0,
        kept_points: Vec::new(),
    };
    let b = BranchRecord {
        id: branch.0,
        container: id.0,
        parent: None,
        created_version: c.version.0,
        created: now.sec,
        purpose: "head".into(),
    };
    put_container(c, &rec);
    c.txn.put(
        Cf::Branches,
        branch_key(branch),
        serde_json::to_vec(&b).unwrap_or_default(),
    );
    let v = c.version;
    mvcc::put(
        &mut c.txn,
        Cf::Inodes,
        &ReadPoint::single(branch, Version::LATEST),
        root,
        &[],
        v,
        Some(&new_dir_inode(owner, ROOT_INO, now).encode()),
    );
    let mut r = root_inode(c)?;
    r.size += 1;
    r.nlink += 1;
    r.mtime = now;
    r.ctime = now;
    put_root_inode(c, &r);
    c.container_counters(id);
    Ok(rec)
}

pub fn put_container(c: &mut Commit<'_>, rec: &ContainerRecord) {
    c.txn.put(
        Cf::Containers,
        container_key(ContainerId(rec.id)),
        serde_json::to_vec(rec).unwrap_or_default(),
    );
}

/// Applies a committed create/update to the registry.
pub fn registry_upsert(reg: &mut Registry, rec: ContainerRecord, branch: Option<BranchRecord>) {
    if let Some(b) = branch {
        reg.branches.insert(BranchId(b.id), b);
    }
    reg.remove(ContainerId(rec.id));
    if rec.deleting {
        reg.deleting.retain(|d| d.id != rec.id);
        reg.deleting.push(rec);
    } else {
        reg.insert(rec);
    }
}

pub fn registry_forget(reg: &mut Registry, id: ContainerId) {
    reg.remove(id);
    reg.snapshots.retain(|_, s| s.rec.id != id.0);
    reg.deleting.retain(|d| d.id != id.0);
    reg.branches.retain(|_, b| b.container != id.0);
}

/// The branch record written by [`create_in`] (for the registry update).
pub fn head_branch_record(rec: &ContainerRecord) -> BranchRecord {
    BranchRecord {
        id: rec.head,
        container: rec.id,
        parent: None,
        created_version: rec.created_version,
        created: rec.created,
        purpose: "head".into(),
    }
}

/// Marks a container deleted: it leaves the namespace at once; [`purge_step`] then
/// releases its data.
pub fn mark_deleting(
    c: &mut Commit<'_>,
    rec: &ContainerRecord,
) -> Result<ContainerRecord, ContainerError> {
    let mut r = rec.clone();
    r.deleting = true;
    put_container(c, &r);
    let now = c.time;
    let mut root = root_inode(c)?;
    root.size = root.size.saturating_sub(1);
    root.nlink = root.nlink.saturating_sub(1).max(2);
    root.mtime = now;
    root.ctime = now;
    put_root_inode(c, &root);
    Ok(r)
}

/// How far a purge got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeProgress {
    /// Released this many extent records; more remain.
    Released(u64),
    /// The container's records are gone.
    Done,
}

const PURGE_BATCH: usize = 20_000;

/// The key range holding every record of a branch in a versioned family.
pub fn branch_range(b: BranchId) -> (Vec<u8>, Vec<u8>) {
    let lo = Enc::new().u64(b.0).finish();
    let hi = prefix_successor(&lo).unwrap_or_else(|| vec![0xff; 9]);
    (lo, hi)
}

/// Releases up to a batch of the extent records of branch `b` (their chunk references
/// count on container `cid`) in commit `c`; returns how many it released (0: none left).
pub fn release_branch_extents(
    c: &mut Commit<'_>,
    chunks: &crate::chunks::ChunkStore,
    cid: ContainerId,
    b: BranchId,
) -> Result<u64, ContainerError> {
    let (lo, hi) = branch_range(b);
    let mut it = c
        .txn
        .kv()
        .iter(Cf::Extents, Some(lo.clone()), Some(hi.clone()));
    it.seek(&lo);
    let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
    let mut keys = Vec::new();
    while it.valid() && keys.len() < PURGE_BATCH {
        let v = it.value();
        if v.first() == Some(&1) {
            let e = ExtentRec::decode(&v[1..])
                .map_err(|e| ContainerError::BadRecord("extent".into(), e.to_string()))?;
            *deltas.entry(e.chunk).or_default() -= 1;
        }
        keys.push(it.key().to_vec());
        it.next();
    }
    it.status()?;
    drop(it);
    let n = keys.len() as u64;
    if n == 0 {
        return Ok(0);
    }
    for k in keys {
        c.txn.delete(Cf::Extents, k);
    }
    let (txn, store, cont) = c.split(cid);
    chunks.add_refs(txn, cid, &deltas, store, cont)?;
    Ok(n)
}

/// Removes every remaining record of branch `b` (after its extents were released).
pub fn drop_branch_records(c: &mut Commit<'_>, b: BranchId) {
    let (lo, hi) = branch_range(b);
    for cf in [
        Cf::Inodes,
        Cf::Dirents,
        Cf::Xattrs,
        Cf::Orphans,
        Cf::InodesHead,
        Cf::DirentsHead,
        Cf::XattrsHead,
        Cf::ExtentSegments,
    ] {
        c.txn.delete_range(cf, lo.clone(), hi.clone());
    }
    c.txn.delete(Cf::Branches, branch_key(b));
}

/// One atomic step of deleting a container: releases up to a batch of extent records of one
/// of its branches, or, once none remain, removes the remaining records.
pub fn purge_step(
    c: &mut Commit<'_>,
    chunks: &crate::chunks::ChunkStore,
    rec: &ContainerRecord,
    branches: &[BranchId],
) -> Result<PurgeProgress, ContainerError> {
    let cid = ContainerId(rec.id);
    for &b in branches {
        let n = release_branch_extents(c, chunks, cid, b)?;
        if n > 0 {
            return Ok(PurgeProgress::Released(n));
        }
    }
    for &b in branches {
        drop_branch_records(c, b);
    }
    let (lo, hi) = {
        let lo = Enc::new().u32(rec.id).finish();
        let hi = prefix_successor(&lo).unwrap_or_else(|| vec![0xff; 5]);
        (lo, hi)
    };
    c.txn.delete_range(Cf::ContainerRefs, lo, hi);
    // Bookmarks and snapshots of the container go with it.
    let lo = bookmark_prefix(cid);
    let hi = prefix_successor(&lo).unwrap_or_else(|| vec![POINT_BOOKMARK + 1]);
    c.txn.delete_range(Cf::Points, lo, hi);
    let snaps: Vec<(Vec<u8>, SnapshotRecord)> = crate::kv::collect_range(
        c.txn.kv(),
        Cf::Points,
        vec![POINT_SNAPSHOT],
        Some(vec![POINT_SNAPSHOT + 1]),
    )?
    .into_iter()
    .filter_map(|(k, v)| Some((k, serde_json::from_slice::<SnapshotRecord>(&v).ok()?)))
    .filter(|(_, s)| s.container == rec.id)
    .collect();
    for (k, s) in snaps {
        c.txn.delete(Cf::Points, k);
        c.drop_container_counters(ContainerId(s.view()));
    }
    c.txn.delete(Cf::Containers, container_key(cid));
    c.drop_container_counters(cid);
    Ok(PurgeProgress::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("nightly").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(".at").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(256)).is_err());
        assert!(validate_name(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn settings_serialize_compression_as_text() {
        let s = ContainerSettings {
            compression: Compression::Zstd(3),
            retention: None,
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"compression":"zstd:3"}"#);
        assert_eq!(serde_json::from_str::<ContainerSettings>(&j).unwrap(), s);
        assert!(serde_json::from_str::<ContainerSettings>(r#"{"compression":"zstd:99"}"#).is_err());
    }
}
