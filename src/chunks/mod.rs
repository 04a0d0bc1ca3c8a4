//! The deduplicating chunk store: identity → location, with reference counts.
//!
//! Owns the chunk index (`Cf::Chunks`) and the pack writer/reader. Storing file data is two
//! phases: [`ChunkStore::prepare`] (outside the commit lock) looks each chunk up, compresses
//! and appends the new ones to a pack and hands the bytes to the kernel; then, inside the
//! metadata commit, [`ChunkStore::add_refs`] creates index entries for new chunks and adjusts
//! reference counts in the same batch as the extents that use them.
//!
//! Invariants:
//! - An index entry exists only for bytes already written to a pack.
//! - `refs` counts extent records (of every kept version) that name the chunk.
//! - A chunk prepared but not yet committed is in `pending`, so a concurrent writer of the
//!   same content reuses it instead of storing it twice (the claim protocol of `pending`
//!   and `prepare`: one writer claims, appends and publishes, the others join and wait).
//!   A chunk a writer deduplicated
//!   against is held in `pending` too, until its commit, so garbage collection cannot delete
//!   it between the lookup and the commit that references it.
//! - Garbage collection changes the index only while holding the GC gate exclusively, and
//!   writers hold it shared from their lookups to their holds (and from their claims to
//!   the publication of what they appended). So when GC looks, every chunk a writer is about to reference is either
//!   in `pending` or not yet looked up, and every pack record is indexed, pending, or garbage.
//! - A read returns the chunk's exact bytes or an error: the record checksum, the decoded
//!   length and the keyed hash of the content are all checked.

use crate::cache::ChunkCache;
use crate::chunker::ChunkHasher;
use crate::commit::Commit;
use crate::ids::{ChunkId, ContainerId, PackId};
use crate::keys;
use crate::kv::{Cf, Kv, KvError, Txn};
use crate::pack::{PackError, PackReader, PackWriter, RecordLoc};
use crate::records::{ChunkRec, FrameSlot};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ChunkError {
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("chunk {chunk} is not in the index")]
    NotIndexed { chunk: ChunkId },
    #[error("chunk {chunk} in pack {pack} at offset {offset}: {reason}")]
    Damaged {
        chunk: ChunkId,
        pack: PackId,
        offset: u64,
        reason: String,
    },
    #[error("chunk index entry {chunk}: {reason}")]
    BadIndex { chunk: ChunkId, reason: String },
    #[error("chunk {chunk} vanished before its first reference was committed")]
    Vanished { chunk: ChunkId },
    #[error(
        "chunk {chunk} was being stored by another write that failed; this write is kept \
         buffered and retried"
    )]
    StoredElsewhereFailed { chunk: ChunkId },
    #[error("two different chunks hash to {chunk} (verify_dedup caught a collision)")]
    Collision { chunk: ChunkId },
    #[error(
        "chunk {chunk} has {refs} references and this change removes {remove}: the chunk \
         index is corrupt (nothing was changed; run `dedupfs fsck`)"
    )]
    RefcountUnderflow {
        chunk: ChunkId,
        refs: u64,
        remove: u64,
    },
    #[error(
        "container {container} counts {count} references to chunk {chunk} and this change \
         removes {remove}: its reference records are corrupt (nothing was changed; run \
         `dedupfs fsck`)"
    )]
    ContainerRefUnderflow {
        container: ContainerId,
        chunk: ChunkId,
        count: u64,
        remove: u64,
    },
    #[error("reference record {key}: {reason}")]
    BadRefRecord { key: String, reason: String },
}

/// A chunk's decompressed bytes, shared with the cache.
pub type ChunkData = Arc<Vec<u8>>;

mod compression;
mod maintenance;
pub mod pending;
mod prepare;
mod read;

pub use compression::Compression;
pub use maintenance::{packs_named, Move, Placement};
pub use pending::PendingClaim;
pub use prepare::NewChunk;

/// What `prepare` found or did for one chunk.
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    pub id: ChunkId,
    pub raw_len: u32,
}

#[derive(Clone, Copy, Debug)]
struct Stored {
    loc: RecordLoc,
    stored_len: u32,
    raw_len: u32,
    encoding: u8,
    next: Option<(ChunkId, u32)>,
    frame: Option<FrameSlot>,
}

/// Changes of store-wide and per-container counters made by a commit.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreCounters {
    /// Chunks in the index.
    pub chunks: u64,
    /// Uncompressed bytes of those chunks.
    pub raw_bytes: u64,
    /// Bytes their records occupy in packs (headers included).
    pub stored_bytes: u64,
    /// Chunks whose reference count fell to zero (reclaimable by GC).
    pub dead_chunks: u64,
    /// Pack bytes of those chunks.
    pub dead_stored_bytes: u64,
    /// What writes brought in (flows, not state: fsck does not recount them).
    pub ingest: Ingest,
}

/// Ingest figures of the store or of a container, counted from `since` on: what
/// applications wrote and what of it the store had to keep. Flows, not state: deletes,
/// pruning and GC never lower them, so the ratios they give describe the data that
/// arrived and cannot fall below 1 because history is kept (the stored-state figures
/// beside them can).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ingest {
    /// Seconds since the epoch of the first commit that counted (0: none yet; stores made
    /// before these figures existed start counting at their first write after the upgrade).
    pub since: i64,
    /// Bytes of writes that reached the store (with the kernel's writeback cache, a page
    /// rewritten before it was written back counts once), and the length of every reflink
    /// copy.
    pub written_bytes: u64,
    /// Uncompressed bytes of the chunks those writes stored for the first time.
    pub new_bytes: u64,
    /// Pack bytes of those chunks (compressed, record headers included).
    pub new_stored_bytes: u64,
}

impl Ingest {
    /// Counts `written` bytes at time `now`.
    pub fn wrote(&mut self, written: u64, now: i64) {
        self.written_bytes += written;
        if self.since == 0 {
            self.since = now;
        }
    }
}

/// Chunk-level figures of a container (all its trees and kept history). Its live files and
/// logical bytes are tree counters ([`crate::records::TreeCounters`]), kept per branch.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerCounters {
    /// Distinct chunks referenced by the container (live state and kept history).
    pub chunks: u64,
    /// Uncompressed bytes of those chunks.
    pub unique_bytes: u64,
    /// Bytes those chunks occupy in packs.
    pub stored_bytes: u64,
    /// Pack bytes of the chunks this container stored first (what it added to the store),
    /// as they are stored now (GC's rewrites change it).
    pub added_bytes: u64,
    /// What this container's writes brought in.
    pub ingest: Ingest,
}

pub struct ChunkStore {
    kv: Arc<dyn Kv>,
    writer: PackWriter,
    reader: PackReader,
    cache: ChunkCache,
    hasher: ChunkHasher,
    /// Chunks stored or deduplicated against and not yet committed (see `pending`; its
    /// lock is a leaf, taken under the GC gate and the commit lock).
    pending: pending::PendingTable<Stored>,
    /// Writers hold it shared from a lookup to its hold (and from an append to its
    /// `pending` entry); GC holds it exclusively across its index commits. Protects: no
    /// data, the protocol. Lock order: before the commit lock, after a file's flush lock.
    gc_gate: RwLock<()>,
    verify_dedup: bool,
}

/// Lowers a statistics counter. Such counters only report (GC and reads never rely on
/// them), so one that would go below zero is logged as drift — `fsck` reports it and
/// `fsck --repair` recounts — and kept at zero rather than failing the user's operation.
fn stat_sub(v: &mut u64, n: u64, what: &str) {
    match v.checked_sub(n) {
        Some(x) => *v = x,
        None => {
            log::error!(
                "{what} would go below zero ({v} - {n}); kept at 0 — run `dedupfs fsck --repair`"
            );
            *v = 0;
        }
    }
}

/// Runs `f` over `items` on up to `threads` threads (the caller's included).
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i >= items.len() {
            break;
        }
        *results[i].lock() = Some(f(&items[i]));
    };
    std::thread::scope(|s| {
        for _ in 1..threads.min(items.len()) {
            s.spawn(work);
        }
        work();
    });
    results.into_iter().filter_map(|m| m.into_inner()).collect()
}

impl ChunkStore {
    pub fn new(
        kv: Arc<dyn Kv>,
        writer: PackWriter,
        reader: PackReader,
        cache_bytes: usize,
        hasher: ChunkHasher,
        verify_dedup: bool,
    ) -> Self {
        ChunkStore {
            kv,
            writer,
            reader,
            cache: ChunkCache::new(cache_bytes),
            hasher,
            pending: pending::PendingTable::new(),
            gc_gate: RwLock::new(()),
            verify_dedup,
        }
    }

    pub fn hasher(&self) -> &ChunkHasher {
        &self.hasher
    }

    pub fn writer(&self) -> &PackWriter {
        &self.writer
    }

    pub fn reader(&self) -> &PackReader {
        &self.reader
    }

    pub fn cache(&self) -> &ChunkCache {
        &self.cache
    }

    pub fn lookup(&self, id: ChunkId) -> Result<Option<ChunkRec>, ChunkError> {
        match self.kv.get(Cf::Chunks, &keys::chunk(id))? {
            None => Ok(None),
            Some(v) => ChunkRec::decode(&v)
                .map(Some)
                .map_err(|e| ChunkError::BadIndex {
                    chunk: id,
                    reason: e.to_string(),
                }),
        }
    }

    /// Inside a commit: applies reference-count changes, creating index entries for chunks
    /// referenced for the first time. Updates the store and container counters accordingly.
    pub fn add_refs(
        &self,
        c: &mut Commit<'_>,
        container: ContainerId,
        deltas: &HashMap<ChunkId, i64>,
    ) -> Result<(), ChunkError> {
        let (txn, store, cont) = c.split(container);
        self.apply_refs(txn, container, deltas, store, cont)
    }

    fn apply_refs(
        &self,
        txn: &mut Txn<'_>,
        container: ContainerId,
        deltas: &HashMap<ChunkId, i64>,
        store: &mut StoreCounters,
        cont: &mut ContainerCounters,
    ) -> Result<(), ChunkError> {
        let mut ids: Vec<&ChunkId> = deltas.keys().collect();
        ids.sort();
        for id in ids {
            let d = deltas[id];
            if d == 0 {
                continue;
            }
            let key = keys::chunk(*id);
            let (rec, existed) = match txn.get(Cf::Chunks, &key)? {
                Some(v) => (
                    ChunkRec::decode(&v).map_err(|e| ChunkError::BadIndex {
                        chunk: *id,
                        reason: e.to_string(),
                    })?,
                    true,
                ),
                None => {
                    let p = self
                        .pending
                        .stored(*id)
                        .ok_or(ChunkError::Vanished { chunk: *id })?;
                    let rec = ChunkRec {
                        pack: p.loc.pack,
                        offset: p.loc.offset,
                        stored_len: p.stored_len,
                        raw_len: p.raw_len,
                        compression: p.encoding,
                        refs: 0,
                        owner: container.0,
                        next: p.next,
                        frame: p.frame,
                    };
                    store.chunks += 1;
                    store.raw_bytes += p.raw_len as u64;
                    store.stored_bytes += rec.disk_bytes();
                    cont.added_bytes += rec.disk_bytes();
                    for i in [&mut store.ingest, &mut cont.ingest] {
                        i.new_bytes += p.raw_len as u64;
                        i.new_stored_bytes += rec.disk_bytes();
                    }
                    (rec, false)
                }
            };
            // A count that would go below zero means the index lost track of references:
            // clamping it would let GC delete a chunk something still reads.
            let refs = rec
                .refs
                .checked_add_signed(d)
                .ok_or(ChunkError::RefcountUnderflow {
                    chunk: *id,
                    refs: rec.refs,
                    remove: d.unsigned_abs(),
                })?;
            let stored = rec.disk_bytes();
            if rec.refs > 0 && refs == 0 {
                store.dead_chunks += 1;
                store.dead_stored_bytes += stored;
            } else if existed && rec.refs == 0 && refs > 0 {
                // A dead chunk that new data deduplicated against lives again.
                stat_sub(&mut store.dead_chunks, 1, "dead chunk count");
                stat_sub(&mut store.dead_stored_bytes, stored, "dead stored bytes");
            }
            txn.put(Cf::Chunks, key, ChunkRec { refs, ..rec }.encode());

            let ckey = keys::container_ref(container, *id);
            let before = match txn.get(Cf::ContainerRefs, &ckey)? {
                Some(v) => keys::decode_u64(&v, "container reference count").map_err(|e| {
                    ChunkError::BadRefRecord {
                        key: format!("container {container} chunk {id}"),
                        reason: e.to_string(),
                    }
                })?,
                None => 0,
            };
            let after = before
                .checked_add_signed(d)
                .ok_or(ChunkError::ContainerRefUnderflow {
                    container,
                    chunk: *id,
                    count: before,
                    remove: d.unsigned_abs(),
                })?;
            if before == 0 && after > 0 {
                cont.chunks += 1;
                cont.unique_bytes += rec.raw_len as u64;
                cont.stored_bytes += stored;
            } else if before > 0 && after == 0 {
                stat_sub(&mut cont.chunks, 1, "container chunk count");
                stat_sub(
                    &mut cont.unique_bytes,
                    rec.raw_len as u64,
                    "container unique bytes",
                );
                stat_sub(&mut cont.stored_bytes, stored, "container stored bytes");
            }
            if after == 0 {
                txn.delete(Cf::ContainerRefs, ckey);
            } else {
                txn.put(Cf::ContainerRefs, ckey, keys::encode_u64(after));
            }
        }
        Ok(())
    }

    /// Inside a commit: sets a chunk's reference count outright (`fsck --repair`, after
    /// counting the extent records that name it).
    pub fn set_refs(&self, c: &mut Commit<'_>, id: ChunkId, refs: u64) -> Result<(), ChunkError> {
        let key = keys::chunk(id);
        let Some(v) = c.txn.get(Cf::Chunks, &key)? else {
            return Err(ChunkError::NotIndexed { chunk: id });
        };
        let rec = ChunkRec::decode(&v).map_err(|e| ChunkError::BadIndex {
            chunk: id,
            reason: e.to_string(),
        })?;
        c.txn
            .put(Cf::Chunks, key, ChunkRec { refs, ..rec }.encode());
        Ok(())
    }

    /// The chunk that followed `id` when it was first stored, if known.
    pub fn successor(&self, id: ChunkId) -> Result<Option<(ChunkId, u32)>, ChunkError> {
        if let Some(s) = self.pending.stored(id) {
            return Ok(s.next);
        }
        Ok(self.lookup(id)?.and_then(|r| r.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_order() {
        let v: Vec<u32> = (0..100).collect();
        assert_eq!(
            parallel_map(&v, 3, |x| x * 2),
            (0..100).map(|x| x * 2).collect::<Vec<_>>()
        );
    }
}
