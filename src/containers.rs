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
    /// Where reads of the live tree look.
    pub read_point: ReadPoint,
}

impl ContainerInfo {
    pub fn id(&self) -> ContainerId {
        ContainerId(self.rec.id)
    }
    pub fn root(&self) -> Ino {
        Ino(self.rec.root)
    }
    pub fn branch(&self) -> BranchId {
        BranchId(self.rec.head)
    }
}

/// The containers and branches of a store.
#[derive(Default, Debug, Clone)]
pub struct Registry {
    by_id: BTreeMap<ContainerId, Arc<ContainerInfo>>,
    by_name: BTreeMap<String, ContainerId>,
    branches: HashMap<BranchId, BranchRecord>,
    /// Containers whose delete has not finished.
    deleting: Vec<ContainerRecord>,
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
        Ok(r)
    }

    fn insert(&mut self, c: ContainerRecord) {
        let id = ContainerId(c.id);
        let read_point = self.read_point(BranchId(c.head), Version::LATEST);
        self.by_name.insert(c.name.clone(), id);
        self.by_id
            .insert(id, Arc::new(ContainerInfo { rec: c, read_point }));
    }

    fn remove(&mut self, id: ContainerId) {
        if let Some(c) = self.by_id.remove(&id) {
            self.by_name.remove(&c.rec.name);
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

fn branch_range(b: BranchId) -> (Vec<u8>, Vec<u8>) {
    let lo = Enc::new().u64(b.0).finish();
    let hi = prefix_successor(&lo).unwrap_or_else(|| vec![0xff; 9]);
    (lo, hi)
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
        if keys.is_empty() {
            continue;
        }
        let n = keys.len() as u64;
        for k in keys {
            c.txn.delete(Cf::Extents, k);
        }
        let (txn, store, cont) = c.split(cid);
        chunks.add_refs(txn, cid, &deltas, store, cont)?;
        return Ok(PurgeProgress::Released(n));
    }
    for &b in branches {
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
    let (lo, hi) = {
        let lo = Enc::new().u32(rec.id).finish();
        let hi = prefix_successor(&lo).unwrap_or_else(|| vec![0xff; 5]);
        (lo, hi)
    };
    c.txn.delete_range(Cf::ContainerRefs, lo, hi);
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
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"compression":"zstd:3"}"#);
        assert_eq!(serde_json::from_str::<ContainerSettings>(&j).unwrap(), s);
        assert!(serde_json::from_str::<ContainerSettings>(r#"{"compression":"zstd:99"}"#).is_err());
    }
}
