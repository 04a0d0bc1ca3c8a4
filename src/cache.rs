//! A bounded cache of decompressed chunks, sized in bytes.
//!
//! Owns the read path's memory: whatever the store holds, the cache never exceeds its byte
//! budget. Eviction is CLOCK (second chance) per shard, which keeps a sequential scan from
//! flushing chunks that are read repeatedly. Shards keep concurrent readers from contending.

use crate::ids::ChunkId;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

const SHARDS: usize = 16;

struct Entry {
    data: Arc<Vec<u8>>,
    referenced: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<ChunkId, Entry>,
    order: VecDeque<ChunkId>,
    bytes: usize,
}

pub struct ChunkCache {
    /// Decompressed chunks, sharded by id. Protects: each shard. Lock order: a leaf.
    shards: Vec<Mutex<Shard>>,
    shard_budget: usize,
}

impl ChunkCache {
    pub fn new(budget_bytes: usize) -> ChunkCache {
        ChunkCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_budget: budget_bytes / SHARDS,
        }
    }

    fn shard(&self, id: ChunkId) -> &Mutex<Shard> {
        &self.shards[(id.0 as usize) % SHARDS]
    }

    pub fn get(&self, id: ChunkId) -> Option<Arc<Vec<u8>>> {
        let mut s = self.shard(id).lock();
        let e = s.map.get_mut(&id)?;
        e.referenced = true;
        Some(e.data.clone())
    }

    /// Whether `id` is cached (without marking it used).
    pub fn contains(&self, id: ChunkId) -> bool {
        self.shard(id).lock().map.contains_key(&id)
    }

    pub fn insert(&self, id: ChunkId, data: Arc<Vec<u8>>) {
        if data.len() > self.shard_budget {
            return;
        }
        let mut s = self.shard(id).lock();
        if s.map.contains_key(&id) {
            return;
        }
        s.bytes += data.len();
        s.map.insert(
            id,
            Entry {
                data,
                referenced: false,
            },
        );
        s.order.push_back(id);
        while s.bytes > self.shard_budget {
            let Some(victim) = s.order.pop_front() else {
                break;
            };
            let second_chance = match s.map.get_mut(&victim) {
                Some(e) if e.referenced => {
                    e.referenced = false;
                    true
                }
                Some(_) => false,
                None => continue,
            };
            if second_chance {
                s.order.push_back(victim);
            } else if let Some(e) = s.map.remove(&victim) {
                s.bytes -= e.data.len();
            }
        }
    }

    pub fn remove(&self, id: ChunkId) {
        let mut s = self.shard(id).lock();
        if let Some(e) = s.map.remove(&id) {
            s.bytes -= e.data.len();
            s.order.retain(|x| *x != id);
        }
    }

    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget_and_keeps_hot_entries() {
        let c = ChunkCache::new(16 * 1000);
        let hot = ChunkId(0);
        c.insert(hot, Arc::new(vec![1u8; 100]));
        for i in 1..2000u128 {
            c.insert(ChunkId(i * SHARDS as u128), Arc::new(vec![0u8; 100]));
            assert!(c.get(hot).is_some(), "hot entry evicted at {i}");
        }
        assert!(c.bytes() <= 16 * 1000);
        c.remove(hot);
        assert!(c.get(hot).is_none());
    }
}
