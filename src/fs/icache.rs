//! A cache of committed inode records of live trees.
//!
//! Owns the hot path of `getattr`, `getxattr` and the read-check-write of namespace
//! operations, which otherwise each cost a metadata lookup. Filled only by commits (after
//! the batch is written, under the commit lock, so in commit order): an entry is always
//! the newest committed record, and a miss falls back to the store. Bounded; evicts
//! arbitrary entries.

use super::FileKey;
use crate::records::InodeRec;
use parking_lot::Mutex;
use std::collections::HashMap;

const SHARDS: usize = 16;

pub(crate) struct InodeCache {
    /// Cached inode records, sharded by key. Protects: each shard's map. Lock order: a leaf
    /// (filled by after-commit hooks, so taken under the commit lock).
    shards: Vec<Mutex<HashMap<FileKey, Option<InodeRec>>>>,
    per_shard: usize,
}

impl InodeCache {
    pub fn new(capacity: usize) -> InodeCache {
        InodeCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (capacity / SHARDS).max(1),
        }
    }

    fn shard(&self, k: &FileKey) -> &Mutex<HashMap<FileKey, Option<InodeRec>>> {
        &self.shards[(k.1 .0 as usize ^ k.0 .0 as usize) % SHARDS]
    }

    /// `Some(None)`: known deleted; `None`: not cached.
    pub fn get(&self, k: &FileKey) -> Option<Option<InodeRec>> {
        self.shard(k).lock().get(k).cloned()
    }

    /// Records the committed state of an inode (called by commits only).
    pub fn put(&self, k: FileKey, rec: Option<InodeRec>) {
        let mut s = self.shard(&k).lock();
        if s.len() >= self.per_shard && !s.contains_key(&k) {
            if let Some(victim) = s.keys().next().copied() {
                s.remove(&victim);
            }
        }
        s.insert(k, rec);
    }
}
