//! The local cache of remote pack bytes, bounded by `cache_size`.
//!
//! Owns `STORE/cache/`. An entry is one pack: either whole (`IIIIIIII.pack`: a pack just
//! uploaded, moved here from `packs/` so that what was just written stays hot), or sparse
//! (`IIIIIIII.part`: the blocks of `BLOCK` bytes fetched so far, with an in-memory map of
//! which are present). Reads fetch only the missing blocks a record spans; a pack read in
//! ascending order gets a read-ahead that doubles up to `MAX_AHEAD`.
//!
//! Invariants:
//! - A block is marked present only after its bytes were written to the entry's file, so a
//!   present block always holds the object's bytes (records are still checksummed on read).
//! - Sparse entries do not survive a restart (their maps are in memory): they are deleted at
//!   open. Whole entries do, when their size is the uploaded size.
//! - Used bytes stay within the budget after each insertion, by evicting least recently
//!   used entries; an entry being filled is never evicted by its own fill.
//! - No lock is held across a network request or a file write: two readers may fetch the
//!   same block at once, and both write the same bytes.

use crate::ids::PackId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Fetch unit: a ranged GET is at least one block.
pub const BLOCK: u64 = 1 << 20;
/// Largest read-ahead of a sequential reader.
pub const MAX_AHEAD: u64 = 16 << 20;

struct Entry {
    file: Arc<File>,
    path: PathBuf,
    /// `None`: whole.
    present: Option<Vec<bool>>,
    /// Blocks a reader is fetching now (others wait for them instead of fetching again).
    fetching: Vec<bool>,
    used: u64,
    last_use: u64,
    /// Where the last read ended (`None`: no read yet), and the current read-ahead.
    last_end: Option<u64>,
    ahead: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<PackId, Entry>,
    used: u64,
    tick: u64,
}

impl State {
    /// Makes `file` (`size` bytes, all present) the entry of `id`, replacing any other.
    fn insert_whole(&mut self, id: PackId, file: Arc<File>, path: PathBuf, size: u64) {
        self.tick += 1;
        if let Some(old) = self.entries.remove(&id) {
            self.used -= old.used;
            if old.path != path {
                let _ = std::fs::remove_file(&old.path);
            }
        }
        self.used += size;
        self.entries.insert(
            id,
            Entry {
                file,
                path,
                present: None,
                fetching: Vec::new(),
                used: size,
                last_use: self.tick,
                last_end: None,
                ahead: BLOCK,
            },
        );
    }
}

/// Counters for `stats` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    pub budget: u64,
    pub used: u64,
    pub hits: u64,
    pub misses: u64,
    pub fetched_bytes: u64,
}

pub struct RangeCache {
    dir: PathBuf,
    budget: u64,
    /// Entries and their accounting. Protects: `State`. Lock order: a leaf; never held
    /// across a fetch or a file write (see the module invariants). `fetched` wakes readers
    /// waiting for a block another reader is fetching.
    st: Mutex<State>,
    fetched: parking_lot::Condvar,
    /// Protects: the counters. Lock order: a leaf.
    stats: Mutex<CacheStats>,
}

fn name(id: PackId, whole: bool) -> String {
    format!("{:08x}.{}", id.0, if whole { "pack" } else { "part" })
}

impl RangeCache {
    /// Opens the cache directory, keeping whole entries that `keep` accepts (given the id
    /// and file size) and deleting everything else.
    pub fn open(
        dir: &Path,
        budget: u64,
        keep: impl Fn(PackId, u64) -> bool,
    ) -> std::io::Result<RangeCache> {
        if !dir.exists() {
            crate::store::perms::create_private_dir(dir)?;
        }
        let c = RangeCache {
            dir: dir.to_path_buf(),
            budget,
            st: Mutex::new(State::default()),
            fetched: parking_lot::Condvar::new(),
            stats: Mutex::new(CacheStats {
                budget,
                ..Default::default()
            }),
        };
        for f in std::fs::read_dir(dir)? {
            let f = f?;
            let path = f.path();
            let fname = f.file_name().to_string_lossy().into_owned();
            let id = fname
                .strip_suffix(".pack")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .map(PackId);
            let size = f.metadata()?.len();
            match id {
                Some(id) if keep(id, size) => {
                    let file = Arc::new(File::open(&path)?);
                    c.st.lock().insert_whole(id, file, path, size);
                }
                _ => std::fs::remove_file(&path)?,
            }
        }
        c.evict(None);
        Ok(c)
    }

    pub fn stats(&self) -> CacheStats {
        let mut s = *self.stats.lock();
        s.used = self.st.lock().used;
        s
    }

    /// Where a whole pack is put by [`RangeCache::adopt`].
    pub fn whole_path(&self, id: PackId) -> PathBuf {
        self.dir.join(name(id, true))
    }

    /// Takes a just-uploaded local pack in whole: `local` is renamed into the cache.
    pub fn adopt(&self, id: PackId, local: &Path) -> std::io::Result<()> {
        let path = self.whole_path(id);
        std::fs::rename(local, &path)?;
        let size = std::fs::metadata(&path)?.len();
        let file = Arc::new(File::open(&path)?);
        self.st.lock().insert_whole(id, file, path, size);
        self.evict(Some(id));
        Ok(())
    }

    /// Drops a pack's entry (the pack was deleted).
    pub fn forget(&self, id: PackId) {
        let mut st = self.st.lock();
        if let Some(e) = st.entries.remove(&id) {
            st.used -= e.used;
            let _ = std::fs::remove_file(&e.path);
        }
    }

    /// Evicts least recently used entries (never `keep`) until within the budget.
    fn evict(&self, keep: Option<PackId>) {
        let mut st = self.st.lock();
        while st.used > self.budget {
            let victim = st
                .entries
                .iter()
                .filter(|(id, _)| Some(**id) != keep)
                .min_by_key(|(_, e)| e.last_use)
                .map(|(id, _)| *id);
            let Some(v) = victim else { break };
            if let Some(e) = st.entries.remove(&v) {
                st.used -= e.used;
                let _ = std::fs::remove_file(&e.path);
            }
        }
    }

    /// Reads `len` bytes at `off` of pack `id` (of `size` bytes), fetching missing blocks
    /// with `fetch(range)`.
    pub fn read(
        &self,
        id: PackId,
        size: u64,
        off: u64,
        len: u64,
        fetch: &dyn Fn(std::ops::Range<u64>) -> Result<Vec<u8>, super::PackError>,
    ) -> Result<Vec<u8>, super::PackError> {
        let end = (off + len).min(size);
        if off >= end {
            return Ok(Vec::new());
        }
        let mut first_pass = true;
        loop {
            match self.plan(id, size, off, end, first_pass)? {
                Plan::Hit(file) => {
                    self.stats.lock().hits += 1;
                    let mut buf = vec![0u8; (end - off) as usize];
                    file.read_exact_at(&mut buf, off)
                        .map_err(|e| super::PackError::io(id, off, e))?;
                    return Ok(buf);
                }
                Plan::Fetch(file, from, to) => {
                    let range = from * BLOCK..(to * BLOCK).min(size);
                    let want = range.end - range.start;
                    let got = fetch(range.clone()).and_then(|b| {
                        if b.len() as u64 == want {
                            Ok(b)
                        } else {
                            Err(super::PackError::Corrupt {
                                pack: id,
                                offset: range.start,
                                reason: format!(
                                    "object storage returned {} bytes for a {want}-byte range",
                                    b.len()
                                ),
                            })
                        }
                    });
                    let bytes = self.fill(id, &file, from, to, got)?;
                    if range.start <= off && end <= range.end {
                        // Served from the fetched bytes (the usual case).
                        let a = (off - range.start) as usize;
                        return Ok(bytes[a..a + (end - off) as usize].to_vec());
                    }
                    // The read spans more than this fetch: plan again.
                }
            }
            first_pass = false;
        }
    }

    /// Under the lock: the file to read if every block of [off, end) is present, else the
    /// blocks to fetch (marked as being fetched). Waits for blocks other readers fetch.
    fn plan(
        &self,
        id: PackId,
        size: u64,
        off: u64,
        end: u64,
        first_pass: bool,
    ) -> Result<Plan, super::PackError> {
        let io = |e: std::io::Error| super::PackError::io(id, off, e);
        let mut st = self.st.lock();
        st.tick += 1;
        let tick = st.tick;
        let mut counted = !first_pass;
        loop {
            if let std::collections::hash_map::Entry::Vacant(slot) = st.entries.entry(id) {
                let path = self.dir.join(name(id, false));
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                let blocks = size.div_ceil(BLOCK) as usize;
                slot.insert(Entry {
                    file: Arc::new(file),
                    path,
                    present: Some(vec![false; blocks]),
                    fetching: vec![false; blocks],
                    used: 0,
                    last_use: tick,
                    last_end: None,
                    ahead: BLOCK,
                });
            }
            let Some(e) = st.entries.get_mut(&id) else {
                return Err(io(std::io::Error::other("cache entry vanished")));
            };
            e.last_use = tick;
            let sequential = e
                .last_end
                .is_some_and(|l| off >= l.saturating_sub(BLOCK) && off <= l + BLOCK);
            if !counted {
                // Once per read, not per wait.
                counted = true;
                if !sequential {
                    e.ahead = BLOCK;
                }
                e.last_end = Some(end);
            }
            let first = off / BLOCK;
            let last = (end - 1) / BLOCK;
            let missing = match &e.present {
                None => None,
                Some(p) => (first..=last).find(|b| !p[*b as usize]),
            };
            let Some(m) = missing else {
                return Ok(Plan::Hit(e.file.clone()));
            };
            if e.fetching[m as usize] {
                // Another reader is fetching it: wait for that instead of fetching twice.
                self.fetched.wait(&mut st);
                continue;
            }
            let blocks = e.fetching.len() as u64;
            // From the first missing block to the end of the read plus the read-ahead,
            // stopping at the first block present or being fetched.
            let want_end =
                ((end + if sequential { e.ahead } else { 0 }).div_ceil(BLOCK)).min(blocks);
            // The read-ahead grows with each fetch of a sequential reader.
            if sequential {
                e.ahead = (e.ahead * 2).min(MAX_AHEAD);
            }
            let mut stop = m + 1;
            while stop < want_end
                && !e.present.as_ref().is_some_and(|p| p[stop as usize])
                && !e.fetching[stop as usize]
            {
                stop += 1;
            }
            for b in m..stop {
                e.fetching[b as usize] = true;
            }
            return Ok(Plan::Fetch(e.file.clone(), m, stop));
        }
    }

    /// Writes fetched blocks [from, to) into the entry's file and marks them present (if
    /// the entry is still the one they were fetched for); on any failure only clears the
    /// marks. Wakes readers waiting for them either way.
    fn fill(
        &self,
        id: PackId,
        file: &Arc<File>,
        from: u64,
        to: u64,
        got: Result<Vec<u8>, super::PackError>,
    ) -> Result<Vec<u8>, super::PackError> {
        let start = from * BLOCK;
        let written = got.and_then(|bytes| {
            file.write_all_at(&bytes, start)
                .map_err(|e| super::PackError::io(id, start, e))?;
            Ok(bytes)
        });
        let mut st = self.st.lock();
        let mut added = 0;
        if let Some(e) = st.entries.get_mut(&id) {
            // An entry evicted and made again meanwhile has another file: not ours to mark.
            if Arc::ptr_eq(&e.file, file) {
                for b in from..to {
                    if let Some(f) = e.fetching.get_mut(b as usize) {
                        *f = false;
                    }
                }
                if let (true, Some(p)) = (written.is_ok(), e.present.as_mut()) {
                    for b in from..to {
                        if !p[b as usize] {
                            p[b as usize] = true;
                            added += BLOCK;
                        }
                    }
                }
                e.used += added;
            }
        }
        st.used += added;
        drop(st);
        self.fetched.notify_all();
        let bytes = written?;
        {
            let mut s = self.stats.lock();
            s.misses += 1;
            s.fetched_bytes += bytes.len() as u64;
        }
        self.evict(Some(id));
        Ok(bytes)
    }
}

enum Plan {
    Hit(Arc<File>),
    Fetch(Arc<File>, u64, u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn fetches_missing_blocks_only_reads_ahead_and_stays_in_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RangeCache::open(&dir.path().join("c"), 4 * BLOCK, |_, _| false).unwrap();
        let size = 8 * BLOCK + 100;
        let object: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let fetched = AtomicU64::new(0);
        let calls = AtomicU64::new(0);
        let fetch = |r: std::ops::Range<u64>| {
            calls.fetch_add(1, Ordering::Relaxed);
            fetched.fetch_add(r.end - r.start, Ordering::Relaxed);
            Ok(object[r.start as usize..r.end as usize].to_vec())
        };
        let id = PackId(9);
        let got = cache.read(id, size, 100, 50, &fetch).unwrap();
        assert_eq!(got, &object[100..150]);
        assert_eq!(fetched.load(Ordering::Relaxed), BLOCK, "one block, no more");
        // a hit: no fetch
        assert_eq!(
            cache.read(id, size, 10, 20, &fetch).unwrap(),
            &object[10..30]
        );
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        // sequential reads fetch ahead
        let mut off = 150;
        while off < 3 * BLOCK {
            assert_eq!(
                cache.read(id, size, off, 4096, &fetch).unwrap(),
                &object[off as usize..off as usize + 4096]
            );
            off += 4096;
        }
        assert!(
            calls.load(Ordering::Relaxed) <= 3,
            "read-ahead took fewer GETs"
        );
        // the tail block is short and read whole
        assert_eq!(
            cache.read(id, size, size - 10, 100, &fetch).unwrap(),
            &object[(size - 10) as usize..]
        );
        // The entry being filled may pass the budget (it is not evicted by its own fill):
        // 1 block, then 2, then 3 read ahead, then the tail.
        assert_eq!(cache.stats().used, 7 * BLOCK);
        // another pack beyond the budget evicts the first
        let other = PackId(10);
        // (read backwards: no read-ahead)
        for b in (0..4).rev() {
            cache.read(other, size, b * BLOCK, 10, &fetch).unwrap();
        }
        assert!(cache.stats().used <= 4 * BLOCK, "{:?}", cache.stats());
        // a short answer from the server is an error, not data (and nothing is cached)
        let short = |_r: std::ops::Range<u64>| Ok(vec![0u8; 3]);
        assert!(cache.read(PackId(11), size, 0, 10, &short).is_err());
        assert_eq!(
            cache.read(PackId(11), size, 0, 10, &fetch).unwrap(),
            &object[..10],
            "a failed fetch leaves the block to be fetched again"
        );
    }

    #[test]
    fn readers_of_the_same_blocks_at_once_fetch_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RangeCache::open(&dir.path().join("c"), 64 * BLOCK, |_, _| false).unwrap();
        let size = 8 * BLOCK;
        let object: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let fetched = AtomicU64::new(0);
        let fetch = |r: std::ops::Range<u64>| {
            // Slow enough that the other readers arrive while it is in flight.
            std::thread::sleep(std::time::Duration::from_millis(20));
            fetched.fetch_add(r.end - r.start, Ordering::Relaxed);
            Ok(object[r.start as usize..r.end as usize].to_vec())
        };
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (cache, fetch, object) = (&cache, &fetch, &object);
                s.spawn(move || {
                    for b in 0..8u64 {
                        let off = b * BLOCK + t * 1000;
                        let got = cache.read(PackId(1), size, off, 5000, fetch).unwrap();
                        assert_eq!(got, &object[off as usize..off as usize + 5000]);
                    }
                });
            }
        });
        assert_eq!(
            fetched.load(Ordering::Relaxed),
            size,
            "every block fetched exactly once"
        );
    }
}
