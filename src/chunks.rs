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
use crate::records::{ChunkRec, COMPRESSION_NONE, COMPRESSION_ZSTD};
use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
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

/// How a container compresses the chunks it stores first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Compression {
    Off,
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(1)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Off => write!(f, "off"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for Compression {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" | "none" => Ok(Compression::Off),
            "zstd" => Ok(Compression::Zstd(1)),
            _ => {
                let level = s
                    .strip_prefix("zstd:")
                    .and_then(|l| l.parse::<i32>().ok())
                    .filter(|l| (1..=19).contains(l))
                    .ok_or_else(|| format!("invalid compression '{s}': expected 'off' or 'zstd:LEVEL' with LEVEL 1..19"))?;
                Ok(Compression::Zstd(level))
            }
        }
    }
}

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
    /// Pack bytes of the chunks this container stored first (what it added to the store).
    pub added_bytes: u64,
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

thread_local! {
    static ZSTD_C: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    static ZSTD_D: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Whether a chunk looks incompressible: the byte entropy of four 1 KiB samples spread
/// over it is close to 8 bits in every one. Random and already-compressed data (encrypted
/// backups, media, archives) then skip the compressor, which spends as long failing as it
/// spends succeeding elsewhere; a chunk that is only partly random is still compressed.
fn looks_incompressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 1024;
    if data.len() < 4 * SAMPLE {
        return false;
    }
    let step = (data.len() - SAMPLE) / 3;
    (0..4).all(|k| {
        let sample = &data[k * step..k * step + SAMPLE];
        let mut hist = [0u32; 256];
        for &b in sample {
            hist[b as usize] += 1;
        }
        let entropy: f64 = hist
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / SAMPLE as f64;
                -p * p.log2()
            })
            .sum();
        // 1 KiB of uniform random bytes measures about 7.8 bits (the sample is small
        // for 256 symbols); text and records stay below 6.5.
        entropy > 7.6
    })
}

/// Compresses one chunk; `None` when compression does not pay (stored raw instead).
fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if looks_incompressible(data) {
        return None;
    }
    ZSTD_C.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, comp) = c.as_mut()?;
        let out = comp.compress(data).ok()?;
        // Keep raw unless compression saves at least 1/32: decompressing costs reads.
        (out.len() < data.len() - data.len() / 32).then_some(out)
    })
}

fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    ZSTD_D.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let dec = d.as_mut().ok_or("no decompressor")?;
        dec.decompress(data, raw_len).map_err(|e| e.to_string())
    })
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
        let encoded: Vec<(u8, Option<Vec<u8>>)> =
            parallel_map(&to_store, threads, |c| match compression {
                Compression::Off => (COMPRESSION_NONE, None),
                Compression::Zstd(level) => match compress(c.data, level) {
                    Some(c) => (COMPRESSION_ZSTD, Some(c)),
                    None => (COMPRESSION_NONE, None),
                },
            });
        let result = (|| {
            let _gate = self.gc_gate.read();
            for (NewChunk { id, data, next }, (encoding, comp)) in
                to_store.iter().zip(encoded.iter())
            {
                let stored: &[u8] = comp.as_deref().unwrap_or(data);
                // Another writer may have stored it while we compressed.
                {
                    let mut p = self.pending.lock();
                    if let Some(e) = p.get_mut(id) {
                        e.users += 1;
                        claim.ids.push(*id);
                        continue;
                    }
                }
                let (loc, _) = self
                    .writer
                    .append(*id, *encoding, data.len() as u32, stored)?;
                self.pending.lock().insert(
                    *id,
                    Pending {
                        stored: Some(Stored {
                            loc,
                            stored_len: stored.len() as u32,
                            raw_len: data.len() as u32,
                            encoding: *encoding,
                            next: *next,
                        }),
                        users: 1,
                    },
                );
                claim.ids.push(*id);
            }
            self.writer.flush()?;
            Ok(())
        })();
        if let Err(e) = result {
            self.release(claim);
            return Err(e);
        }
        Ok(claim)
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
                    store.chunks += 1;
                    store.raw_bytes += p.raw_len as u64;
                    store.stored_bytes += RECORD_HEADER_LEN + p.stored_len as u64;
                    cont.added_bytes += RECORD_HEADER_LEN + p.stored_len as u64;
                    let rec = ChunkRec {
                        pack: p.loc.pack,
                        offset: p.loc.offset,
                        stored_len: p.stored_len,
                        raw_len: p.raw_len,
                        compression: p.encoding,
                        refs: 0,
                        owner: container.0,
                        next: p.next,
                    };
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
            let stored = RECORD_HEADER_LEN + rec.stored_len as u64;
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

    /// The content of a chunk.
    pub fn read(&self, id: ChunkId) -> Result<ChunkData, ChunkError> {
        if let Some(d) = self.cache.get(id) {
            return Ok(d);
        }
        let rec = self
            .lookup(id)?
            .ok_or(ChunkError::NotIndexed { chunk: id })?;
        match self.read_rec(id, &rec) {
            // GC may have moved the chunk (and, after its grace period, deleted the old
            // pack) between our lookup and our read: look again once.
            Err(e @ ChunkError::Damaged { .. }) => match self.lookup(id)? {
                Some(now) if (now.pack, now.offset) != (rec.pack, rec.offset) => {
                    self.read_rec(id, &now)
                }
                _ => Err(e),
            },
            r => r,
        }
    }

    /// Reads and checks one chunk from the index entry given (for scrub and GC copies).
    pub fn read_indexed(&self, id: ChunkId, rec: &ChunkRec) -> Result<ChunkData, ChunkError> {
        self.read_rec(id, rec)
    }

    /// Shuts writers out of chunk lookups and stores while GC changes the index; hold it
    /// across the commit of the change (lock order: this gate, then the commit lock).
    pub fn gc_gate(&self) -> RwLockWriteGuard<'_, ()> {
        self.gc_gate.write()
    }

    /// Whether a writer holds `id` until its commit (call with the GC gate held).
    pub fn is_held(&self, id: ChunkId) -> bool {
        self.pending.lock().contains_key(&id)
    }

    /// Packs holding chunks stored by writers that have not committed them yet (call with
    /// the GC gate held): GC must leave them alone.
    pub fn packs_with_pending(&self) -> std::collections::HashSet<PackId> {
        self.pending
            .lock()
            .values()
            .filter_map(|p| p.stored.map(|s| s.loc.pack))
            .collect()
    }

    /// Inside a commit, with the GC gate held: drops the index entries of chunks nothing
    /// references and no writer holds. Returns how many and their pack bytes.
    pub fn forget_dead(
        &self,
        c: &mut Commit<'_>,
        ids: &[ChunkId],
    ) -> Result<(u64, u64), ChunkError> {
        let (txn, store) = c.txn_and_store();
        let (mut n, mut bytes) = (0, 0);
        for &id in ids {
            if self.is_held(id) {
                continue;
            }
            let key = keys::chunk(id);
            let Some(v) = txn.get(Cf::Chunks, &key)? else {
                continue;
            };
            let rec = ChunkRec::decode(&v).map_err(|e| ChunkError::BadIndex {
                chunk: id,
                reason: e.to_string(),
            })?;
            if rec.refs != 0 {
                continue;
            }
            let stored = RECORD_HEADER_LEN + rec.stored_len as u64;
            stat_sub(&mut store.chunks, 1, "chunk count");
            stat_sub(&mut store.raw_bytes, rec.raw_len as u64, "unique bytes");
            stat_sub(&mut store.stored_bytes, stored, "stored bytes");
            stat_sub(&mut store.dead_chunks, 1, "dead chunk count");
            stat_sub(&mut store.dead_stored_bytes, stored, "dead stored bytes");
            txn.delete(Cf::Chunks, key);
            self.cache.remove(id);
            n += 1;
            bytes += stored;
        }
        Ok((n, bytes))
    }

    /// Inside a commit, with the GC gate held: points chunks at their copies, for those
    /// whose entry still names the old location. Returns how many moved.
    pub fn relocate(
        &self,
        c: &mut Commit<'_>,
        moves: &[(ChunkId, RecordLoc, RecordLoc)],
    ) -> Result<u64, ChunkError> {
        let txn = &mut c.txn;
        let mut n = 0;
        for &(id, old, new) in moves {
            let key = keys::chunk(id);
            let Some(v) = txn.get(Cf::Chunks, &key)? else {
                continue;
            };
            let rec = ChunkRec::decode(&v).map_err(|e| ChunkError::BadIndex {
                chunk: id,
                reason: e.to_string(),
            })?;
            if (rec.pack, rec.offset) != (old.pack, old.offset) {
                continue;
            }
            txn.put(
                Cf::Chunks,
                key,
                ChunkRec {
                    pack: new.pack,
                    offset: new.offset,
                    ..rec
                }
                .encode(),
            );
            n += 1;
        }
        Ok(n)
    }

    /// Up to `max` index entries after `after` (from the start if `None`), in chunk-id
    /// order. Scans page through the index so that their memory stays bounded; callers
    /// re-check under the GC gate whatever they act on.
    pub fn index_page(
        &self,
        after: Option<ChunkId>,
        max: usize,
    ) -> Result<Vec<(ChunkId, ChunkRec)>, ChunkError> {
        let lower = match after {
            None => vec![],
            Some(id) => keys::chunk_after(id),
        };
        let mut it = self.kv.iter(Cf::Chunks, Some(lower.clone()), None);
        it.seek(&lower);
        let mut out = Vec::with_capacity(max.min(65536));
        while it.valid() && out.len() < max {
            let id = keys::chunk_from(it.key()).map_err(|e| ChunkError::BadRefRecord {
                key: format!(
                    "chunk index key {}",
                    crate::containers::purge::hex(it.key())
                ),
                reason: e.to_string(),
            })?;
            let rec = ChunkRec::decode(it.value()).map_err(|e| ChunkError::BadIndex {
                chunk: id,
                reason: e.to_string(),
            })?;
            out.push((id, rec));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    fn read_rec(&self, id: ChunkId, rec: &ChunkRec) -> Result<ChunkData, ChunkError> {
        if let Some(d) = self.cache.get(id) {
            return Ok(d);
        }
        let damaged = |reason: String| ChunkError::Damaged {
            chunk: id,
            pack: rec.pack,
            offset: rec.offset,
            reason,
        };
        let r = self
            .reader
            .read(
                RecordLoc {
                    pack: rec.pack,
                    offset: rec.offset,
                },
                rec.stored_len,
            )
            .map_err(|e| match e {
                PackError::Missing { .. } | PackError::Corrupt { .. } => damaged(e.to_string()),
                other => ChunkError::Pack(other),
            })?;
        if r.chunk != id {
            return Err(damaged(format!("record holds chunk {}", r.chunk)));
        }
        // The content hash is the check; the record checksum only sharpens the message
        // when something is wrong.
        let explain = |r: &crate::pack::Record, what: String| match r.verify() {
            Err(e) => damaged(e.to_string()),
            Ok(()) => damaged(what),
        };
        let raw = match r.encoding {
            COMPRESSION_NONE => {
                if r.stored.len() != rec.raw_len as usize || self.hasher.id(&r.stored) != id {
                    return Err(explain(&r, "content does not match its hash".into()));
                }
                r.stored
            }
            COMPRESSION_ZSTD => {
                let raw = decompress(&r.stored, rec.raw_len as usize)
                    .map_err(|e| explain(&r, format!("zstd: {e}")))?;
                if raw.len() != rec.raw_len as usize {
                    return Err(explain(
                        &r,
                        format!("decoded {} bytes, expected {}", raw.len(), rec.raw_len),
                    ));
                }
                if self.hasher.id(&raw) != id {
                    return Err(explain(&r, "content does not match its hash".into()));
                }
                raw
            }
            other => return Err(damaged(format!("unknown encoding {other}"))),
        };
        let data: ChunkData = Arc::new(raw);
        self.cache.insert(id, data.clone());
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_parses() {
        assert_eq!("off".parse::<Compression>().unwrap(), Compression::Off);
        assert_eq!(
            "zstd:3".parse::<Compression>().unwrap(),
            Compression::Zstd(3)
        );
        assert!("zstd:0".parse::<Compression>().is_err());
        assert!("zstd:20".parse::<Compression>().is_err());
        assert!("lz4".parse::<Compression>().is_err());
        assert_eq!(
            Compression::Zstd(7)
                .to_string()
                .parse::<Compression>()
                .unwrap(),
            Compression::Zstd(7)
        );
    }

    #[test]
    fn incompressible_data_is_kept_raw() {
        let mut x = 1u64;
        let random: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(looks_incompressible(&random));
        assert!(compress(&random, 1).is_none());
        let text: Vec<u8> = random
            .iter()
            .map(|b| b"etaoinshrdlu ETAON.,;"[(*b % 21) as usize])
            .collect();
        assert!(
            !looks_incompressible(&text),
            "text-like bytes are compressed"
        );
        assert!(compress(&text, 1).is_some());
        let text = b"abcabcabc".repeat(1000);
        let c = compress(&text, 3).unwrap();
        assert_eq!(decompress(&c, text.len()).unwrap(), text);
    }

    #[test]
    fn parallel_map_keeps_order() {
        let v: Vec<u32> = (0..100).collect();
        assert_eq!(
            parallel_map(&v, 3, |x| x * 2),
            (0..100).map(|x| x * 2).collect::<Vec<_>>()
        );
    }
}
