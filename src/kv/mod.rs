//! The ordered key-value store underneath all metadata.
//!
//! Owns the column-family names and the narrow interface the rest of the core uses:
//! point gets, raw iterators with bounds, atomic batched writes and WAL sync. Two
//! implementations exist: [`rocks::RocksKv`], the product, and [`mem::MemKv`], an in-memory
//! map used by fast unit and model tests. Nothing outside this module names RocksDB.
//!
//! Invariant: a [`Batch`] is applied atomically — after a crash either all of its operations
//! are visible or none are.

pub mod mem;
pub mod rocks;

use std::collections::BTreeMap;
use thiserror::Error;

/// Errors of the metadata store.
#[derive(Debug, Error)]
pub enum KvError {
    #[error("metadata database: {0}")]
    Backend(String),
    #[error("metadata database is corrupt: {0}")]
    Corrupt(String),
    #[error("metadata database: no space left on device ({0})")]
    NoSpace(String),
    #[error("metadata database I/O error: {0}")]
    Io(String),
    /// A sync of pack data or of the metadata log failed earlier, so what was acknowledged
    /// since may not be on disk; the store takes no more changes until it is reopened.
    #[error(
        "the store stopped taking changes after a failed sync ({0}); unmount and mount it again"
    )]
    Halted(String),
}

/// Column families. Names are part of the on-disk format.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Cf {
    /// Store-wide singletons: counters, id allocators.
    Meta,
    /// Container records, keyed by container id.
    Containers,
    /// Branch records, keyed by branch id.
    Branches,
    /// Versioned inode attributes: (branch, ino, !version).
    Inodes,
    /// Versioned directory entries: (branch, dir ino, name, !version).
    Dirents,
    /// Versioned file extents: (branch, ino, data generation, offset, !version).
    Extents,
    /// Versioned extended attributes: (branch, ino, name, !version).
    Xattrs,
    /// Chunk index: chunk id -> pack location and reference count.
    Chunks,
    /// Per-container chunk references: (container, chunk id) -> count.
    ContainerRefs,
    /// Timeline: wall-clock millisecond -> newest version committed in it.
    Timeline,
    /// Inodes unlinked while open, deleted at last close or at the next open of the store.
    Orphans,
    /// The newest version of each record of `Inodes`, `Dirents`, `Xattrs`:
    /// (branch, ino, suffix) without the version, so live reads never walk history.
    InodesHead,
    DirentsHead,
    XattrsHead,
    /// The live extent map of each file, packed per 1 MiB segment:
    /// (branch, ino, generation, segment) -> the extents starting in it.
    ExtentSegments,
    /// Named points in history: snapshots (`S`, id) and bookmarks (`B`, container, name).
    Points,
    /// Versioned live-file counters of each branch's tree: (branch, 0, !version).
    TreeCounters,
}

impl Cf {
    pub const ALL: [Cf; 17] = [
        Cf::Meta,
        Cf::Containers,
        Cf::Branches,
        Cf::Inodes,
        Cf::Dirents,
        Cf::Extents,
        Cf::Xattrs,
        Cf::Chunks,
        Cf::ContainerRefs,
        Cf::Timeline,
        Cf::Orphans,
        Cf::InodesHead,
        Cf::DirentsHead,
        Cf::XattrsHead,
        Cf::ExtentSegments,
        Cf::Points,
        Cf::TreeCounters,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "default",
            Cf::Containers => "containers",
            Cf::Branches => "branches",
            Cf::Inodes => "inodes",
            Cf::Dirents => "dirents",
            Cf::Extents => "extents",
            Cf::Xattrs => "xattrs",
            Cf::Chunks => "chunks",
            Cf::ContainerRefs => "container_refs",
            Cf::Timeline => "timeline",
            Cf::Orphans => "orphans",
            Cf::InodesHead => "inodes_head",
            Cf::DirentsHead => "dirents_head",
            Cf::XattrsHead => "xattrs_head",
            Cf::ExtentSegments => "extent_segments",
            Cf::Points => "points",
            Cf::TreeCounters => "tree_counters",
        }
    }

    /// The family holding the newest version of each record of a versioned family.
    pub fn head(self) -> Option<Cf> {
        match self {
            Cf::Inodes => Some(Cf::InodesHead),
            Cf::Dirents => Some(Cf::DirentsHead),
            Cf::Xattrs => Some(Cf::XattrsHead),
            _ => None,
        }
    }
}

/// One write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    /// Deletes every key in [start, end).
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

/// An atomic group of writes.
#[derive(Default, Debug, Clone)]
pub struct Batch {
    pub ops: Vec<WriteOp>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }
    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(WriteOp::Put(cf, key, value));
    }
    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.ops.push(WriteOp::Delete(cf, key));
    }
    pub fn delete_range(&mut self, cf: Cf, start: Vec<u8>, end: Vec<u8>) {
        self.ops.push(WriteOp::DeleteRange(cf, start, end));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A positioned cursor over one column family, in the style of RocksDB's raw iterator.
pub trait KvIter {
    /// Positions at the first key >= `key`.
    fn seek(&mut self, key: &[u8]);
    /// Positions at the last key <= `key`.
    fn seek_for_prev(&mut self, key: &[u8]);
    fn next(&mut self);
    fn prev(&mut self);
    fn valid(&self) -> bool;
    fn key(&self) -> &[u8];
    fn value(&self) -> &[u8];
    /// Reports an error that made the iterator invalid early.
    fn status(&self) -> Result<(), KvError>;
}

/// The metadata store interface.
pub trait Kv: Send + Sync {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// Applies `batch` atomically. With `sync`, returns only once it is durable.
    fn write(&self, batch: Batch, sync: bool) -> Result<(), KvError>;
    /// An iterator restricted to keys in [lower, upper) (either bound optional).
    fn iter(&self, cf: Cf, lower: Option<Vec<u8>>, upper: Option<Vec<u8>>) -> Box<dyn KvIter + '_>;
    /// Makes every write so far durable.
    fn sync(&self) -> Result<(), KvError>;
    /// Writes a consistent point-in-time copy of the whole database into `dir` (which
    /// must not exist), openable as a database of its own. For disaster-recovery uploads.
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), KvError> {
        Err(KvError::Backend(format!(
            "this metadata backend cannot make checkpoints ({})",
            dir.display()
        )))
    }
}

/// A key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// Collects every (key, value) in [lower, upper). For small ranges and tests.
pub fn collect_range(
    kv: &dyn Kv,
    cf: Cf,
    lower: Vec<u8>,
    upper: Option<Vec<u8>>,
) -> Result<Vec<KvPair>, KvError> {
    let mut it = kv.iter(cf, Some(lower.clone()), upper);
    it.seek(&lower);
    let mut out = Vec::new();
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next();
    }
    it.status()?;
    Ok(out)
}

/// A batch under construction whose point reads see its own pending writes.
///
/// Operations that read, check and then write (rename, refcount updates) build a `Txn` while
/// holding the commit lock, so the read-check-write sequence is isolated from other writers.
pub(crate) struct Txn<'a> {
    kv: &'a dyn Kv,
    pending: BTreeMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    ranges: Vec<WriteOp>,
}

impl<'a> Txn<'a> {
    pub fn new(kv: &'a dyn Kv) -> Self {
        Txn {
            kv,
            pending: BTreeMap::new(),
            ranges: Vec::new(),
        }
    }
    pub fn kv(&self) -> &'a dyn Kv {
        self.kv
    }
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(v) = self.pending.get(&(cf, key.to_vec())) {
            return Ok(v.clone());
        }
        self.kv.get(cf, key)
    }
    /// The pending write for `key`, if this transaction made one (`Some(None)` = deleted).
    pub fn pending(&self, cf: Cf, key: &[u8]) -> Option<Option<&Vec<u8>>> {
        self.pending.get(&(cf, key.to_vec())).map(|v| v.as_ref())
    }
    pub fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert((cf, key), Some(value));
    }
    pub fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.pending.insert((cf, key), None);
    }
    /// Range deletes are applied before the point writes of the same transaction.
    pub fn delete_range(&mut self, cf: Cf, start: Vec<u8>, end: Vec<u8>) {
        self.ranges.push(WriteOp::DeleteRange(cf, start, end));
    }
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.ranges.is_empty()
    }
    pub fn into_batch(self) -> Batch {
        let mut ops = self.ranges;
        ops.extend(self.pending.into_iter().map(|((cf, k), v)| match v {
            Some(v) => WriteOp::Put(cf, k, v),
            None => WriteOp::Delete(cf, k),
        }));
        Batch { ops }
    }
}
