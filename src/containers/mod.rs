//! Containers: the top-level directories of the mount, each a backup target with its own
//! settings, history branch and statistics.
//!
//! Owns container, branch, snapshot and bookmark records ([`records`]), the in-memory
//! registry built from them ([`registry`]) and container deletion ([`purge`]). A
//! container's live tree is the newest state of its head branch; its root directory is an
//! ordinary directory inode on that branch. Other crates change these records only through
//! the functions here, inside a [`Commit`].
//!
//! Invariants:
//! - Names are unique, valid UTF-8, 1..=255 bytes, without '/' or NUL, and do not start
//!   with '.' (names starting with '.' at the mount root are reserved for virtual entries).
//! - A container marked `deleting` is invisible and is purged (its extents' chunk references
//!   released, then its records removed) in batches that each commit atomically, so an
//!   interrupted delete resumes where it stopped.

pub mod lock;
pub mod purge;
pub mod records;
pub mod registry;

pub use purge::{drop_branch_records, purge_step, release_branch_extents, PurgeProgress};
pub use records::*;
pub use registry::{ContainerInfo, Registry, RegistryCell, RegistryEdit};

use crate::chunks::ChunkError;
use crate::commit::Commit;
use crate::ids::{BranchId, ContainerId, Ino, Version};
use crate::keys::{self, MetaKey};
use crate::kv::{Cf, KvError};
use crate::mvcc::{self, ReadPoint};
use crate::records::{FileKind, InodeRec, Timestamp};
use crate::store::Store;
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
    #[error("too many containers or snapshots (the limit is {0})")]
    TooMany(u32),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("metadata record {0} is corrupt: {1}")]
    BadRecord(String, String),
    /// A retention lock refuses the operation (the message says which and how long).
    #[error("container '{name}': {message}")]
    Locked { name: String, message: String },
    #[error("invalid retention lock: {0}")]
    BadLock(String),
}

/// Containers ids live in 18 bits of a node id (see the filesystem's view numbering).
pub const MAX_CONTAINERS: u32 = (1 << 18) - 1;

// Records are small and evolve with the product: JSON. Serialising our own plain structs
// cannot fail.
fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(v: &[u8], what: &str) -> Result<T, ContainerError> {
    serde_json::from_slice(v)
        .map_err(|e| ContainerError::BadRecord(what.to_string(), e.to_string()))
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
/// name is free and updates the registry (see [`crate::store::Store::commit_registry`]).
pub fn create_in(
    c: &mut Commit<'_>,
    name: &str,
    settings: ContainerSettings,
    owner: RootOwner,
) -> Result<ContainerRecord, ContainerError> {
    create_at(c, name, settings, owner, None)
}

/// Like [`create_in`], with the root directory at inode `root` when given (a replica keeps
/// its source's numbers; the allocator is raised past it) instead of a new number.
pub fn create_at(
    c: &mut Commit<'_>,
    name: &str,
    settings: ContainerSettings,
    owner: RootOwner,
    root: Option<Ino>,
) -> Result<ContainerRecord, ContainerError> {
    validate_name(name)?;
    let id = c.alloc_container();
    if id.0 > MAX_CONTAINERS {
        return Err(ContainerError::TooMany(MAX_CONTAINERS));
    }
    let branch = c.alloc_branch();
    let root = match root {
        Some(r) => {
            c.reserve_inos_through(r);
            r
        }
        None => c.alloc_ino(),
    };
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
        replica: None,
        promoted_from: None,
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
    put_branch(c, &b);
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
        keys::container(ContainerId(rec.id)),
        to_json(rec),
    );
}

pub fn put_branch(c: &mut Commit<'_>, b: &BranchRecord) {
    c.txn
        .put(Cf::Branches, keys::branch(BranchId(b.id)), to_json(b));
}

/// Allocates a snapshot id inside a commit.
pub fn alloc_snapshot_id(c: &mut Commit<'_>) -> Result<u32, ContainerError> {
    let key = MetaKey::NextSnapshot.encode();
    let next = match c.txn.get(Cf::Meta, &key)? {
        None => 1,
        Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
        Some(v) => {
            return Err(ContainerError::BadRecord(
                "snapshot id allocator".into(),
                format!("{} bytes, expected 4", v.len()),
            ))
        }
    };
    if next >= TIME_VIEW_BASE - SNAPSHOT_VIEW_BASE {
        return Err(ContainerError::TooMany(
            TIME_VIEW_BASE - SNAPSHOT_VIEW_BASE - 1,
        ));
    }
    c.txn.put(Cf::Meta, key, (next + 1).to_be_bytes().to_vec());
    Ok(next)
}

pub fn put_snapshot(c: &mut Commit<'_>, rec: &SnapshotRecord) {
    c.txn.put(Cf::Points, keys::snapshot(rec.id), to_json(rec));
}

pub fn delete_snapshot(c: &mut Commit<'_>, id: u32) {
    c.txn.delete(Cf::Points, keys::snapshot(id));
}

/// A container's bookmark as the commit sees it.
pub fn bookmark(
    c: &Commit<'_>,
    container: ContainerId,
    name: &str,
) -> Result<Option<BookmarkRecord>, ContainerError> {
    let key = keys::bookmark(container, name);
    match c.txn.get(Cf::Points, &key)? {
        None => Ok(None),
        Some(v) => from_json(&v, &format!("bookmark '{name}'")).map(Some),
    }
}

pub fn put_bookmark(c: &mut Commit<'_>, rec: &BookmarkRecord) {
    c.txn.put(
        Cf::Points,
        keys::bookmark(ContainerId(rec.container), &rec.name),
        to_json(rec),
    );
}

pub fn delete_bookmark(c: &mut Commit<'_>, container: ContainerId, name: &str) {
    c.txn.delete(Cf::Points, keys::bookmark(container, name));
}

/// The bookmarks of a container, in name order.
pub fn bookmarks(
    store: &Store,
    container: ContainerId,
) -> Result<Vec<BookmarkRecord>, ContainerError> {
    let (lo, hi) = keys::bookmarks_range(container);
    crate::kv::collect_range(&**store.kv(), Cf::Points, lo, Some(hi))?
        .iter()
        .map(|(k, v)| from_json(v, &format!("bookmark {}", String::from_utf8_lossy(k))))
        .collect()
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
    root.size = root.size.checked_sub(1).ok_or_else(|| {
        ContainerError::BadRecord(
            "mount root".into(),
            "entry count would go below zero".into(),
        )
    })?;
    root.nlink = root.nlink.saturating_sub(1).max(2);
    root.mtime = now;
    root.ctime = now;
    put_root_inode(c, &root);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunks::Compression;

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
            lock: None,
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"compression":"zstd:3"}"#);
        assert_eq!(serde_json::from_str::<ContainerSettings>(&j).unwrap(), s);
        assert!(serde_json::from_str::<ContainerSettings>(r#"{"compression":"zstd:99"}"#).is_err());
    }
}
