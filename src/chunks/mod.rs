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
//!   same content reuses it instead of storing it twice. A chunk a writer deduplicated
//!   against is held in `pending` too, until its commit, so garbage collection cannot delete
//!   it between the lookup and the commit that references it.
//! - Garbage collection changes the index only while holding the GC gate exclusively, and
//!   writers hold it shared from their lookups to their holds (and from each append to its
//!   `pending` entry). So when GC looks, every chunk a writer is about to reference is either
//!   in `pending` or not yet looked up, and every pack record is indexed, pending, or garbage.
//! - A read returns the chunk's exact bytes or an error: the record checksum, the decoded
//!   length and the keyed hash of the content are all checked.

use crate::cache::ChunkCache;
use crate::chunker::ChunkHasher;
use crate::commit::Commit;
use crate::ids::{ChunkId, ContainerId, PackId};
use crate::keys;
use crate::kv::{Cf, Kv, KvError, Txn};
use crate::pack::{PackError, PackReader, PackWriter, RecordLoc, RECORD_HEADER_LEN};
use crate::records::{ChunkRec, FrameSlot, COMPRESSION_FRAME, COMPRESSION_NONE, COMPRESSION_ZSTD};
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
mod read;

pub use compression::Compression;
use compression::{compress, encode_frame};
pub use maintenance::{Move, Placement};

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

/// How `prepare` stores a run of new chunks: one record each, or one frame for all.
enum Encoded {
    /// Per chunk: its encoding and compressed bytes (`None`: stored raw).
    Singles(Vec<(u8, Option<Vec<u8>>)>),
    /// The payload of one frame holding every chunk of the run.
    Frame(Vec<u8>),
}

/// Splits the chunks to store (in the order they are written) into runs: consecutive
/// compressible chunks are framed together up to [`compression::FRAME_TARGET`] bytes;
/// a chunk that looks incompressible is a run of its own (stored raw).
fn runs(chunks: &[NewChunk<'_>], compression: Compression) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    if matches!(compression, Compression::Off | Compression::ZstdChunk(_)) {
        return (0..chunks.len()).map(|i| i..i + 1).collect();
    }
    let (mut start, mut bytes) = (0, 0usize);
    for (i, c) in chunks.iter().enumerate() {
        if compression::looks_incompressible(c.data) {
            if start < i {
                out.push(start..i);
            }
            out.push(i..i + 1);
            (start, bytes) = (i + 1, 0);
            continue;
        }
        bytes += c.data.len();
        if bytes >= compression::FRAME_TARGET || i + 1 - start >= compression::FRAME_MAX_MEMBERS {
            out.push(start..i + 1);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < chunks.len() {
        out.push(start..chunks.len());
    }
    out
}

fn encode_run(run: &[NewChunk<'_>], compression: Compression) -> Encoded {
    let level = match compression {
        Compression::Off => return Encoded::Singles(vec![(COMPRESSION_NONE, None); run.len()]),
        Compression::Zstd(l) | Compression::ZstdChunk(l) => l,
    };
    if run.len() > 1 {
        let members: Vec<(ChunkId, &[u8])> = run.iter().map(|c| (c.id, c.data)).collect();
        return match encode_frame(&members, level) {
            Some(p) => Encoded::Frame(p),
            None => Encoded::Singles(vec![(COMPRESSION_NONE, None); run.len()]),
        };
    }
    Encoded::Singles(
        run.iter()
            .map(|c| match compress(c.data, level) {
                Some(z) => (COMPRESSION_ZSTD, Some(z)),
                None => (COMPRESSION_NONE, None),
            })
            .collect(),
    )
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Where a writer stored the chunk; `None` for a hold on a chunk already indexed.
    stored: Option<Stored>,
    users: u32,
}

/// A chunk handed to [`ChunkStore::prepare`]: identity, content, and the chunk that follows
/// it in the data being written (remembered as its successor if the chunk is new).
#[derive(Clone, Copy, Debug)]
pub struct NewChunk<'a> {
    pub id: ChunkId,
    pub data: &'a [u8],
    pub next: Option<(ChunkId, u32)>,
}

/// A set of chunks held pending by one writer until its commit (or failure) releases them.
#[must_use]
#[derive(Default, Debug)]
pub struct PendingClaim {
    ids: Vec<ChunkId>,
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
    /// Bytes applications wrote (every write(2), and the length of every reflink copy).
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
    /// Chunks stored or deduplicated against and not yet committed (see the module doc).
    /// Protects: the map. Lock order: a leaf (taken under the GC gate and the commit lock).
    pending: Mutex<HashMap<ChunkId, Pending>>,
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
            pending: Mutex::new(HashMap::new()),
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

    /// Makes every chunk of `chunks` (id and content) present in a pack, storing those the
    /// store does not hold yet. The returned claim must be released with [`Self::release`]
    /// after the commit that references them (whether it succeeded or not).
    pub fn prepare(
        &self,
        chunks: &[NewChunk<'_>],
        compression: Compression,
        threads: usize,
    ) -> Result<PendingClaim, ChunkError> {
        let mut claim = PendingClaim::default();
        let mut to_store: Vec<NewChunk<'_>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let gate = self.gc_gate.read();
        for &NewChunk { id, data, next } in chunks {
            if !seen.insert(id) {
                continue;
            }
            {
                let mut p = self.pending.lock();
                if let Some(e) = p.get_mut(&id) {
                    e.users += 1;
                    claim.ids.push(id);
                    continue;
                }
            }
            let found = match self.lookup(id) {
                Ok(f) => f,
                Err(e) => {
                    drop(gate);
                    self.release(claim);
                    return Err(e);
                }
            };
            if let Some(rec) = found {
                if self.verify_dedup {
                    let same = self.read_rec(id, &rec).map(|d| d.as_ref() == data);
                    if !matches!(same, Ok(true)) {
                        drop(gate);
                        self.release(claim);
                        return Err(same.err().unwrap_or(ChunkError::Collision { chunk: id }));
                    }
                }
                // Hold it until the commit: GC must not delete what we are about to reference.
                self.pending
                    .lock()
                    .entry(id)
                    .or_insert(Pending {
                        stored: None,
                        users: 0,
                    })
                    .users += 1;
                claim.ids.push(id);
                continue;
            }
            to_store.push(NewChunk { id, data, next });
        }
        drop(gate);
        let all_bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
        // Raw bytes of the chunks this call stored itself (not those another writer stored
        // while this one compressed them: those were deduplicated after all).
        let mut new_bytes = 0usize;
        let runs = runs(&to_store, compression);
        let encoded: Vec<Encoded> = parallel_map(&runs, threads, |r| {
            encode_run(&to_store[r.clone()], compression)
        });
        let result = (|| {
            let _gate = self.gc_gate.read();
            for (run, enc) in runs.iter().zip(encoded) {
                let run = &to_store[run.clone()];
                match enc {
                    Encoded::Singles(list) => {
                        for (c, (encoding, comp)) in run.iter().zip(list) {
                            let stored: &[u8] = comp.as_deref().unwrap_or(c.data);
                            if self.join_pending(c.id, &mut claim) {
                                continue;
                            }
                            let (loc, _) =
                                self.writer
                                    .append(c.id, encoding, c.data.len() as u32, stored)?;
                            new_bytes += c.data.len();
                            self.hold_stored(
                                c,
                                Stored {
                                    loc,
                                    stored_len: stored.len() as u32,
                                    raw_len: c.data.len() as u32,
                                    encoding,
                                    next: c.next,
                                    frame: None,
                                },
                                &mut claim,
                            );
                        }
                    }
                    Encoded::Frame(payload) => {
                        let raw: u32 = run.iter().map(|c| c.data.len() as u32).sum();
                        let (loc, _) =
                            self.writer
                                .append(run[0].id, COMPRESSION_FRAME, raw, &payload)?;
                        let raws: Vec<u32> = run.iter().map(|c| c.data.len() as u32).collect();
                        let shares = compression::frame_shares(
                            RECORD_HEADER_LEN + payload.len() as u64,
                            &raws,
                        );
                        let mut at = 0u32;
                        for (c, share) in run.iter().zip(shares) {
                            let slot = FrameSlot { at, share };
                            at += c.data.len() as u32;
                            // Stored by another writer while we compressed: that copy is
                            // the indexed one, ours is garbage inside the frame (GC drops
                            // it when it rewrites the frame).
                            if self.join_pending(c.id, &mut claim) {
                                continue;
                            }
                            new_bytes += c.data.len();
                            self.hold_stored(
                                c,
                                Stored {
                                    loc,
                                    stored_len: payload.len() as u32,
                                    raw_len: c.data.len() as u32,
                                    encoding: COMPRESSION_FRAME,
                                    next: c.next,
                                    frame: Some(slot),
                                },
                                &mut claim,
                            );
                        }
                    }
                }
            }
            self.writer.flush()?;
            Ok(())
        })();
        if let Err(e) = result {
            self.release(claim);
            return Err(e);
        }
        crate::metrics::INGEST_NEW_CHUNK_BYTES.add(new_bytes as u64);
        crate::metrics::INGEST_DEDUP_BYTES.add((all_bytes - new_bytes) as u64);
        Ok(claim)
    }

    /// Joins the hold of a chunk another writer has pending; false when there is none.
    fn join_pending(&self, id: ChunkId, claim: &mut PendingClaim) -> bool {
        let mut p = self.pending.lock();
        match p.get_mut(&id) {
            Some(e) => {
                e.users += 1;
                claim.ids.push(id);
                true
            }
            None => false,
        }
    }

    fn hold_stored(&self, c: &NewChunk<'_>, stored: Stored, claim: &mut PendingClaim) {
        self.pending.lock().insert(
            c.id,
            Pending {
                stored: Some(stored),
                users: 1,
            },
        );
        claim.ids.push(c.id);
    }

    /// Drops a writer's hold on pending chunks.
    pub fn release(&self, claim: PendingClaim) {
        let mut p = self.pending.lock();
        for id in claim.ids {
            if let Some(e) = p.get_mut(&id) {
                e.users -= 1;
                if e.users == 0 {
                    p.remove(&id);
                }
            }
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
                        .lock()
                        .get(id)
                        .and_then(|p| p.stored)
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
        if let Some(s) = self.pending.lock().get(&id).and_then(|p| p.stored) {
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
