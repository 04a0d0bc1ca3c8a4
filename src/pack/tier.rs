//! The remote tier of a store whose packs live in object storage: sealed packs are
//! uploaded by a background thread, and packs that left the local disk are read back
//! through the byte-range cache.
//!
//! A pack's life: written locally in `packs/` while open (fsync makes it durable there, as
//! for a local store) → sealed (rolled over, then synced) and queued → uploaded
//! create-if-absent → recorded as uploaded (`MetaKey::PackUploaded`, synced) → moved into
//! the cache (`cache/`), from where LRU eviction may delete it.
//!
//! Invariants:
//! - A local pack file is removed only after its upload is recorded durably, so every pack
//!   is at every moment in `packs/`, or in the bucket with a durable record, or both. A
//!   crash between upload and record leaves the local file; the next open queues it again
//!   and the create-if-absent upload accepts the identical object already there.
//! - Pack ids are never reused: `MetaKey::PackFloor` is raised past every uploaded id (GC
//!   deletes only uploaded packs, so every deleted id is below the floor).
//! - Writers wait while sealed-but-unuploaded bytes exceed `backlog`; after `wait` they fail
//!   with [`PackError::Backlog`] (EIO), naming the upload error that holds things up.
//!   Acknowledged data is never dropped: a failed upload is retried until it succeeds.

use super::cache::{CacheStats, RangeCache};
use super::remote::{Remote, RemoteError};
use super::{pack_path, PackError};
use crate::ids::PackId;
use crate::keys::MetaKey;
use crate::kv::{Batch, Cf, Kv, KvError};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The record of an uploaded pack.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Uploaded {
    pub size: u64,
    /// Unix seconds of the upload.
    pub at: i64,
}

/// How the tier behaves.
#[derive(Clone, Copy, Debug)]
pub struct TierOptions {
    /// Budget of `cache/`.
    pub cache_size: u64,
    /// Writers wait while more than this many sealed bytes await upload.
    pub backlog: u64,
    /// ... for at most this long, then fail with EIO.
    pub wait: Duration,
}

impl Default for TierOptions {
    fn default() -> Self {
        TierOptions {
            cache_size: 1 << 30,
            backlog: 4 << 30,
            wait: Duration::from_secs(600),
        }
    }
}

#[derive(Default)]
struct Queue {
    /// Sealed packs awaiting upload, with their sizes.
    pending: BTreeMap<PackId, u64>,
    in_flight: Option<(PackId, u64)>,
    /// The last upload failure, cleared by the next success.
    last_error: Option<String>,
    stop: bool,
    /// A writer is waiting on the backlog: retry a failed upload now rather than at the
    /// end of its backoff (the endpoint may be back). Cleared when a retry starts.
    nudged: bool,
    /// Failed packs and when each may be tried again; others go first meanwhile, so one
    /// pack that keeps failing never holds up the rest.
    retry_at: HashMap<PackId, Instant>,
    /// Packs GC deleted this session: never queued again.
    deleted: std::collections::HashSet<PackId>,
    uploaded_packs: u64,
    uploaded_bytes: u64,
}

impl Queue {
    fn backlog(&self) -> u64 {
        self.pending.values().sum::<u64>() + self.in_flight.map(|(_, n)| n).unwrap_or(0)
    }
}

/// What `stats` shows of the tier.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TierStats {
    pub url: String,
    pub pending_packs: u64,
    pub pending_bytes: u64,
    pub uploaded_packs: u64,
    pub uploaded_bytes: u64,
    pub last_error: Option<String>,
    pub cache: CacheStats,
}

pub struct RemoteTier {
    remote: Remote,
    cache: RangeCache,
    local_dir: PathBuf,
    kv: Arc<dyn Kv>,
    opts: TierOptions,
    /// Uploaded packs and their sizes. Protects: the map. Lock order: a leaf.
    uploaded: Mutex<HashMap<PackId, u64>>,
    /// The upload queue. Protects: `Queue`. Lock order: a leaf; never held across an
    /// upload or a metadata write. `cv` wakes the uploader and waiting writers.
    queue: Mutex<Queue>,
    cv: Condvar,
    /// The uploader thread. Protects: the handle. Lock order: a leaf.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The shortest pause between two attempts to upload after a failure.
const RETRY_MIN: Duration = Duration::from_millis(500);

fn now() -> i64 {
    crate::records::Timestamp::now().sec
}

impl RemoteTier {
    /// Opens the tier: loads the upload records, opens the cache (keeping whole entries
    /// of uploaded packs) and queues every local pack not yet uploaded except `current`
    /// (none at open). Call [`RemoteTier::start`] to begin uploading.
    pub fn open(
        remote: Remote,
        store_root: &Path,
        kv: Arc<dyn Kv>,
        opts: TierOptions,
    ) -> Result<Arc<RemoteTier>, PackError> {
        let uploaded = load_uploaded(&*kv).map_err(|e| PackError::Meta(e.to_string()))?;
        let sizes: HashMap<PackId, u64> = uploaded.iter().map(|(p, u)| (*p, u.size)).collect();
        let cache_dir = store_root.join("cache");
        let cache = RangeCache::open(&cache_dir, opts.cache_size, |id, n| {
            sizes.get(&id) == Some(&n)
        })
        .map_err(|e| PackError::io(PackId(0), 0, e))?;
        let local_dir = store_root.join(super::super::store::PACKS_DIR);
        let tier = Arc::new(RemoteTier {
            remote,
            cache,
            local_dir: local_dir.clone(),
            kv,
            opts,
            uploaded: Mutex::new(sizes),
            queue: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            thread: Mutex::new(None),
        });
        let local = super::list_packs(&local_dir).map_err(|e| PackError::io(PackId(0), 0, e))?;
        for (id, size) in local {
            if tier.is_uploaded(id) {
                // Uploaded and recorded, then a crash before it moved: move it now.
                tier.adopt(id);
            } else {
                tier.queue.lock().pending.insert(id, size);
            }
        }
        Ok(tier)
    }

    /// Starts the uploader thread.
    pub fn start(self: &Arc<Self>) -> Result<(), PackError> {
        let me = self.clone();
        let h = std::thread::Builder::new()
            .name("dedupfs-upload".into())
            .spawn(move || me.run())
            .map_err(|e| PackError::io(PackId(0), 0, e))?;
        *self.thread.lock() = Some(h);
        Ok(())
    }

    /// Stops the uploader after the upload in flight (packs still queued stay local and are
    /// queued again at the next open).
    pub fn stop(&self) {
        self.queue.lock().stop = true;
        self.cv.notify_all();
        if let Some(h) = self.thread.lock().take() {
            if h.join().is_err() {
                log::error!(
                    "the pack uploader panicked; queued packs are uploaded at the next open"
                );
            }
        }
    }

    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    pub fn is_uploaded(&self, id: PackId) -> bool {
        self.uploaded.lock().contains_key(&id)
    }

    /// Every uploaded pack and its size, as recorded.
    pub fn uploaded_packs(&self) -> Vec<(PackId, u64)> {
        self.uploaded.lock().iter().map(|(p, n)| (*p, *n)).collect()
    }

    pub fn uploaded_size(&self, id: PackId) -> Option<u64> {
        self.uploaded.lock().get(&id).copied()
    }

    /// The highest pack id known uploaded, and the never-reuse floor.
    pub fn id_floor(&self) -> Result<u32, PackError> {
        let floor = read_floor(&*self.kv).map_err(|e| PackError::Meta(e.to_string()))?;
        let max = self
            .uploaded
            .lock()
            .keys()
            .map(|p| p.0 + 1)
            .max()
            .unwrap_or(0);
        Ok(floor.max(max))
    }

    /// Queues sealed, locally durable packs for upload.
    pub fn enqueue(&self, packs: &[(PackId, u64)]) {
        if packs.is_empty() {
            return;
        }
        // Already uploaded (a second sync saw it sealed): nothing to do. (Two leaf locks,
        // one after the other, never nested.)
        let fresh: Vec<(PackId, u64)> = {
            let uploaded = self.uploaded.lock();
            packs
                .iter()
                .filter(|(id, _)| !uploaded.contains_key(id))
                .copied()
                .collect()
        };
        let mut q = self.queue.lock();
        for (id, size) in &fresh {
            // Deleted by GC, or being uploaded now: nothing to do either.
            if q.deleted.contains(id) || q.in_flight.is_some_and(|f| f.0 == *id) {
                continue;
            }
            q.pending.insert(*id, *size);
        }
        drop(q);
        self.cv.notify_all();
    }

    /// Blocks a writer while the upload backlog is over its limit; after the wait limit,
    /// fails naming what holds uploads up.
    pub fn wait_backlog(&self) -> Result<(), PackError> {
        let mut q = self.queue.lock();
        if q.backlog() <= self.opts.backlog {
            return Ok(());
        }
        q.nudged = true;
        self.cv.notify_all();
        let deadline = Instant::now()
            .checked_add(self.opts.wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        while q.backlog() > self.opts.backlog && !q.stop {
            q.nudged = true;
            if self.cv.wait_until(&mut q, deadline).timed_out() {
                return Err(PackError::Backlog {
                    bytes: q.backlog(),
                    limit: self.opts.backlog,
                    waited: self.opts.wait,
                    cause: q
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "uploads are slower than writes".into()),
                });
            }
        }
        Ok(())
    }

    /// Waits until every pack up to `upto` that was queued has been uploaded, for at most
    /// `timeout`; returns what is still pending.
    pub fn wait_uploaded(
        &self,
        upto: Option<PackId>,
        timeout: Duration,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<(), String> {
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        let mut q = self.queue.lock();
        loop {
            let left = q
                .pending
                .keys()
                .chain(q.in_flight.iter().map(|(p, _)| p))
                .filter(|p| upto.is_none_or(|u| **p <= u))
                .count();
            if left == 0 {
                return Ok(());
            }
            let cancelled = cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Acquire));
            if q.stop || cancelled || Instant::now() >= deadline {
                return Err(format!(
                    "{left} packs still wait for upload to {}{}",
                    self.remote.url(),
                    q.last_error
                        .as_ref()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                ));
            }
            // Woken by uploads, and every 250 ms to look at `cancel`.
            let wake = deadline.min(Instant::now() + Duration::from_millis(250));
            let _ = self.cv.wait_until(&mut q, wake);
        }
    }

    pub fn stats(&self) -> TierStats {
        let q = self.queue.lock();
        TierStats {
            url: self.remote.url().to_string(),
            pending_packs: q.pending.len() as u64 + q.in_flight.is_some() as u64,
            pending_bytes: q.backlog(),
            uploaded_packs: q.uploaded_packs,
            uploaded_bytes: q.uploaded_bytes,
            last_error: q.last_error.clone(),
            cache: self.cache.stats(),
        }
    }

    fn run(&self) {
        // Consecutive failures, for the backoff (0.5 s doubling to 30 s).
        let mut failures = 0u32;
        // When the last attempt began: a nudge never retries sooner than RETRY_MIN after it.
        let mut last_attempt: Option<Instant> = None;
        loop {
            let (id, size) = {
                let mut q = self.queue.lock();
                loop {
                    if q.stop {
                        return;
                    }
                    let now = Instant::now();
                    let ready = q
                        .pending
                        .keys()
                        .find(|p| q.retry_at.get(p).is_none_or(|t| *t <= now))
                        .copied();
                    // A writer waiting on the backlog: retry the first failed pack early.
                    let nudge_at = last_attempt.map(|t| t + RETRY_MIN);
                    let nudge_ok = q.nudged && nudge_at.is_none_or(|t| t <= now);
                    let ready = ready
                        .or_else(|| nudge_ok.then(|| q.pending.keys().next().copied()).flatten());
                    if let Some(id) = ready {
                        let size = q.pending.remove(&id).unwrap_or(0);
                        q.retry_at.remove(&id);
                        q.nudged = false;
                        q.in_flight = Some((id, size));
                        break (id, size);
                    }
                    let mut wake = q.retry_at.values().min().copied();
                    if q.nudged {
                        wake = match (wake, nudge_at) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                    match wake {
                        Some(t) if !q.pending.is_empty() => {
                            let _ = self.cv.wait_until(&mut q, t);
                        }
                        _ => self.cv.wait(&mut q),
                    }
                }
            };
            last_attempt = Some(Instant::now());
            let result = self.upload_one(id);
            let mut q = self.queue.lock();
            q.in_flight = None;
            match result {
                Ok(n) => {
                    failures = 0;
                    q.last_error = None;
                    q.uploaded_packs += 1;
                    q.uploaded_bytes += n;
                }
                Err(UploadError::Gone) => {
                    // Deleted by GC while it waited or was in flight: nothing to upload.
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let backoff = RETRY_MIN
                        .saturating_mul(1 << failures.min(6))
                        .min(Duration::from_secs(30));
                    log::warn!(
                        "upload of pack {id} failed (kept locally, retried in {backoff:?}): {e}"
                    );
                    if !q.deleted.contains(&id) {
                        q.pending.insert(id, size);
                        q.retry_at.insert(id, Instant::now() + backoff);
                    }
                    q.last_error = Some(e.to_string());
                }
            }
            drop(q);
            self.cv.notify_all();
        }
    }

    /// Uploads one pack, records it, and moves the local file into the cache.
    fn upload_one(&self, id: PackId) -> Result<u64, UploadError> {
        let path = pack_path(&self.local_dir, id);
        if self.is_uploaded(id) {
            // Queued twice; the first upload already moved it.
            return Ok(0);
        }
        if test_hold_uploads() {
            return Err(UploadError::Held);
        }
        if self.queue.lock().deleted.contains(&id) {
            return Err(UploadError::Gone);
        }
        let size = self.remote.upload_pack(id, &path)?;
        // GC may have deleted it while it was being sent: then the object goes too, and
        // nothing is recorded. `delete` waits for an upload in flight, so from here on it
        // sees the record.
        if self.queue.lock().deleted.contains(&id) {
            self.remote.delete(&Remote::pack_key(id))?;
            return Err(UploadError::Gone);
        }
        self.record(id, size)?;
        self.uploaded.lock().insert(id, size);
        self.adopt(id);
        Ok(size)
    }

    /// Records an upload durably, raising the id floor.
    fn record(&self, id: PackId, size: u64) -> Result<(), KvError> {
        let floor = self
            .id_floor()
            .map_err(|e| KvError::Corrupt(e.to_string()))?;
        let mut b = Batch::new();
        put_uploaded(&mut b, id, Uploaded { size, at: now() });
        put_floor(&mut b, floor.max(id.0 + 1));
        self.kv.write(b, true)
    }

    /// Moves an uploaded local pack into the cache (or deletes it if that fails: it is in
    /// the bucket and recorded).
    fn adopt(&self, id: PackId) {
        let path = pack_path(&self.local_dir, id);
        if let Err(e) = self.cache.adopt(id, &path) {
            log::warn!("pack {id}: could not move it into the cache ({e}); removing it");
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Reads `len` bytes at `off` of an uploaded pack, through the cache.
    pub fn read(&self, id: PackId, off: u64, len: u64) -> Result<Vec<u8>, PackError> {
        let size = self.uploaded_size(id).ok_or(PackError::Missing {
            pack: id,
            path: PathBuf::from(self.remote.location(&Remote::pack_key(id))),
        })?;
        let key = Remote::pack_key(id);
        self.cache.read(id, size, off, len, &|range| {
            self.remote
                .get_range(&key, range.clone())
                .map_err(|e| PackError::Remote {
                    pack: id,
                    source: Box::new(e),
                })
        })
    }

    /// Deletes a pack everywhere (GC, after its grace period): the object, the local file
    /// if any, its cache entry, then its record.
    pub fn delete(&self, id: PackId) -> Result<(), PackError> {
        {
            // Never queued again; an upload in flight finishes (or notices) first.
            let mut q = self.queue.lock();
            q.deleted.insert(id);
            q.pending.remove(&id);
            q.retry_at.remove(&id);
            while q.in_flight.is_some_and(|f| f.0 == id) {
                self.cv.wait(&mut q);
            }
        }
        self.cv.notify_all();
        self.remote
            .delete(&Remote::pack_key(id))
            .map_err(|e| PackError::Remote {
                pack: id,
                source: Box::new(e),
            })?;
        let local = pack_path(&self.local_dir, id);
        match std::fs::remove_file(&local) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Left in place, it would be uploaded again at the next open.
            Err(e) => return Err(PackError::io(id, 0, e)),
        }
        self.cache.forget(id);
        let mut b = Batch::new();
        b.delete(Cf::Meta, MetaKey::PackUploaded(id).encode());
        self.kv
            .write(b, true)
            .map_err(|e| PackError::Meta(e.to_string()))?;
        self.uploaded.lock().remove(&id);
        Ok(())
    }

    /// Every pack in the bucket, with its size.
    pub fn list_remote(&self) -> Result<Vec<(PackId, u64)>, RemoteError> {
        self.remote.list_packs()
    }
}

impl Drop for RemoteTier {
    fn drop(&mut self) {
        self.queue.get_mut().stop = true;
    }
}

/// The recorded pack-id floor (0 if none); a record of the wrong size is corruption.
pub fn read_floor(kv: &dyn Kv) -> Result<u32, KvError> {
    match kv.get(Cf::Meta, &MetaKey::PackFloor.encode())? {
        None => Ok(0),
        Some(v) => <[u8; 4]>::try_from(v.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| {
                KvError::Corrupt(format!("pack id floor record is {} bytes, not 4", v.len()))
            }),
    }
}

/// Adds an upload record to `b`.
pub fn put_uploaded(b: &mut Batch, id: PackId, rec: Uploaded) {
    b.put(
        Cf::Meta,
        MetaKey::PackUploaded(id).encode(),
        serde_json::to_vec(&rec).unwrap_or_default(),
    );
}

/// Adds the pack-id floor to `b`.
pub fn put_floor(b: &mut Batch, floor: u32) {
    b.put(
        Cf::Meta,
        MetaKey::PackFloor.encode(),
        floor.to_be_bytes().to_vec(),
    );
}

/// Every upload record.
pub fn load_uploaded(kv: &dyn Kv) -> Result<Vec<(PackId, Uploaded)>, KvError> {
    let (lo, hi) = MetaKey::pack_uploaded_range();
    crate::kv::collect_range(kv, Cf::Meta, lo, Some(hi))?
        .iter()
        .map(|(k, v)| {
            let id = MetaKey::pack_uploaded_from(k)
                .map_err(|e| KvError::Corrupt(format!("uploaded-pack record key: {e}")))?;
            let u: Uploaded = serde_json::from_slice(v)
                .map_err(|e| KvError::Corrupt(format!("uploaded-pack record of pack {id}: {e}")))?;
            Ok((id, u))
        })
        .collect()
}

/// `DEDUPFS_TEST_HOLD_UPLOADS=1` keeps every upload failing (crash tests: a kill -9
/// between the local write and the upload). Read once.
fn test_hold_uploads() -> bool {
    static HOLD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HOLD.get_or_init(|| std::env::var_os("DEDUPFS_TEST_HOLD_UPLOADS").is_some_and(|v| v == "1"))
}

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("recording the upload: {0}")]
    Meta(#[from] KvError),
    #[error("uploads held by DEDUPFS_TEST_HOLD_UPLOADS")]
    Held,
    #[error("deleted by GC")]
    Gone,
}
