//! Pack files: append-only containers of compressed chunks.
//!
//! Owns the on-disk pack format and its I/O. A pack starts with a 32-byte header (magic,
//! format, pack id, store id); then records, each a 40-byte header (magic, encoding, raw and
//! stored length, chunk id, xxh3-64 of the stored bytes) followed by the stored bytes.
//!
//! Invariants:
//! - A pack is only ever appended to, by the session that created it; a new session starts a
//!   new pack, so a torn tail left by a crash is never written after.
//! - Bytes are handed to the kernel (`flush`) before any metadata that points at them is
//!   committed, so a killed daemon never leaves a reference to bytes it had not written.
//!   `sync` orders pack data before the metadata WAL for power-loss durability.
//! - Every read checks the record header and checksum; a mismatch is an error naming the pack
//!   and offset, never data.
//! - Pack data never takes the last `reserve` bytes of the filesystem (2 % of it, between
//!   8 MiB and 1 GiB): writers get ENOSPC while the metadata database still has room to
//!   record deletes, pruning and GC — which is how a full store is brought back.

pub mod cache;
mod read;
pub mod remote;
pub mod tier;

pub use read::PackReader;

use crate::codec::{Dec, Enc};
use crate::ids::{ChunkId, PackId};
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

const PACK_MAGIC: &[u8; 8] = b"DDFSPACK";
const PACK_FORMAT: u32 = 1;
pub const PACK_HEADER_LEN: u64 = 32;
const RECORD_MAGIC: u32 = 0x4348_4e4b; // "CHNK"
pub const RECORD_HEADER_LEN: u64 = 40;
const WRITE_BUFFER: usize = 4 << 20;
const MAX_OPEN_PACKS: usize = 256;

#[derive(Debug, Error)]
pub enum PackError {
    #[error("pack {pack} is missing ({path})")]
    Missing { pack: PackId, path: PathBuf },
    #[error("pack {pack}: I/O error at offset {offset}: {source}")]
    Io {
        pack: PackId,
        offset: u64,
        source: std::io::Error,
    },
    #[error("pack {pack} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        pack: PackId,
        offset: u64,
        reason: String,
    },
    #[error("no space left on device writing pack {pack}")]
    NoSpace { pack: PackId },
    /// An fdatasync of a pack (or of its directory) failed: its bytes may never reach the
    /// disk, and a later sync that succeeds would not prove otherwise.
    #[error("sync of pack {pack} failed: {source}")]
    SyncFailed {
        pack: PackId,
        source: std::io::Error,
    },
    /// A request to the remote pack store failed after its retries.
    #[error("pack {pack}: {source}")]
    Remote {
        pack: PackId,
        #[source]
        source: Box<remote::RemoteError>,
    },
    /// Writers waited for uploads to catch up and gave up (the mount answers EIO).
    #[error(
        "{bytes} bytes of sealed packs wait for upload (limit {limit}); waited {waited:?}: {cause}"
    )]
    Backlog {
        bytes: u64,
        limit: u64,
        waited: std::time::Duration,
        cause: String,
    },
    /// Reading or writing the remote tier's records in the metadata database failed.
    #[error("remote pack records: {0}")]
    Meta(String),
}

impl PackError {
    pub(crate) fn io(pack: PackId, offset: u64, e: std::io::Error) -> PackError {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            PackError::NoSpace { pack }
        } else {
            PackError::Io {
                pack,
                offset,
                source: e,
            }
        }
    }
}

/// Where a record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLoc {
    pub pack: PackId,
    pub offset: u64,
}

/// One decoded record.
#[derive(Debug)]
pub struct Record {
    pub chunk: ChunkId,
    pub encoding: u8,
    pub raw_len: u32,
    pub stored: Vec<u8>,
    /// xxh3-64 of `stored` as written.
    pub sum: u64,
    pub loc: RecordLoc,
}

impl Record {
    /// Checks the payload against the checksum written with it.
    pub fn verify(&self) -> Result<(), PackError> {
        if xxh3_64(&self.stored) == self.sum {
            Ok(())
        } else {
            Err(PackError::Corrupt {
                pack: self.loc.pack,
                offset: self.loc.offset,
                reason: format!("checksum mismatch for chunk {}", self.chunk),
            })
        }
    }
}

pub fn pack_path(dir: &Path, id: PackId) -> PathBuf {
    dir.join(format!("{:05x}", id.0 >> 10))
        .join(format!("{:08x}.pack", id.0))
}

/// Lists the packs present under `dir` (used to pick the next id and by fsck/GC).
pub fn list_packs(dir: &Path) -> std::io::Result<Vec<(PackId, u64)>> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir)? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(shard.path())? {
            let f = f?;
            let name = f.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_suffix(".pack") {
                if let Ok(id) = u32::from_str_radix(hex, 16) {
                    out.push((PackId(id), f.metadata()?.len()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn record_header(chunk: ChunkId, encoding: u8, raw_len: u32, stored: &[u8]) -> Vec<u8> {
    Enc::with_capacity(RECORD_HEADER_LEN as usize)
        .u32(RECORD_MAGIC)
        .u8(encoding)
        .bytes(&[0, 0, 0])
        .u32(raw_len)
        .u32(stored.len() as u32)
        .u128(chunk.0)
        .u64(xxh3_64(stored))
        .finish()
}

struct OpenPack {
    id: PackId,
    file: Arc<File>,
    /// Bytes handed to the kernel.
    written: u64,
    buf: Vec<u8>,
}

struct WriterState {
    cur: Option<OpenPack>,
    next_id: u32,
    /// Closed packs with bytes not yet fdatasync'ed; each keeps its handle until a sync of
    /// it succeeded (never dropped before: a failed sync leaves them here).
    unsynced: Vec<(PackId, Arc<File>)>,
    /// Directory entries made (new packs, new shard directories), counted; those up to
    /// `entries_synced` had their directories fsync'ed.
    new_entries: u64,
    entries_synced: u64,
    /// When the last record was appended (an idle current pack is sealed for upload).
    last_append: Option<std::time::Instant>,
}

/// A hook run before each pack fdatasync; an error it returns is that sync's error.
/// For fault-injection tests (a disk that fails the nth sync).
pub type SyncHook = Arc<dyn Fn(PackId) -> std::io::Result<()> + Send + Sync>;

/// Appends records to the current pack, rolling over to a new pack at `target_size`.
pub struct PackWriter {
    dir: PathBuf,
    reserve: u64,
    store_id: [u8; 16],
    target_size: u64,
    /// The pack being appended to and the packs awaiting a sync. Protects: `WriterState`.
    /// Lock order: a leaf, except that it is held across the buffered `pwrite` of the
    /// current pack (appends must land in order; the write goes to the page cache) and
    /// never across an fdatasync.
    st: Mutex<WriterState>,
    /// Fault injection. Protects: the hook. Lock order: a leaf.
    sync_hook: Mutex<Option<SyncHook>>,
    /// GC copies in progress (see [`PackWriter::reserve_relief`]).
    relief: std::sync::atomic::AtomicUsize,
    /// The remote tier sealed packs go to (stores with packs in object storage).
    tier: std::sync::OnceLock<Arc<tier::RemoteTier>>,
}

/// While alive, pack writes may use half the space reserve.
pub struct ReserveRelief<'a>(&'a PackWriter);

impl Drop for ReserveRelief<'_> {
    fn drop(&mut self) {
        self.0
            .relief
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl PackWriter {
    pub fn new(dir: &Path, store_id: [u8; 16], target_size: u64, next_id: u32) -> PackWriter {
        let reserve = fs_space(dir)
            .map(|(total, _)| (total / 50).clamp(8 << 20, 1 << 30))
            .unwrap_or(8 << 20);
        PackWriter {
            dir: dir.to_path_buf(),
            reserve,
            store_id,
            target_size,
            st: Mutex::new(WriterState {
                cur: None,
                next_id,
                unsynced: Vec::new(),
                new_entries: 0,
                entries_synced: 0,
                last_append: None,
            }),
            sync_hook: Mutex::new(None),
            relief: std::sync::atomic::AtomicUsize::new(0),
            tier: std::sync::OnceLock::new(),
        }
    }

    /// Sends sealed packs to `tier` from now on.
    pub fn set_tier(&self, tier: Arc<tier::RemoteTier>) {
        let _ = self.tier.set(tier);
    }

    /// With packs in a bucket: waits while too much awaits upload (see
    /// [`tier::RemoteTier::wait_backlog`]). Called by writers before they take any lock a
    /// sync or GC needs (the GC gate, this writer's lock).
    pub fn wait_backlog(&self) -> Result<(), PackError> {
        match self.tier.get() {
            Some(t) => t.wait_backlog(),
            None => Ok(()),
        }
    }

    /// How long the current pack has gone without an append (`None`: no current pack).
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        let st = self.st.lock();
        st.cur.as_ref()?;
        st.last_append.map(|t| t.elapsed())
    }

    /// Installs a hook run before each fdatasync (fault-injection tests).
    pub fn set_sync_hook(&self, hook: Option<SyncHook>) {
        *self.sync_hook.lock() = hook;
    }

    fn open_new(&self, st: &mut WriterState) -> Result<(), PackError> {
        let id = PackId(st.next_id);
        let path = pack_path(&self.dir, id);
        if let Some(parent) = path.parent() {
            if !parent.exists() {
                crate::store::perms::create_private_dir(parent)
                    .map_err(|e| PackError::io(id, 0, e))?;
            }
        }
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| PackError::io(id, 0, e))?
        };
        st.next_id += 1;
        st.new_entries += 1; // the new directory entry needs a directory fsync
        let header = Enc::new()
            .bytes(PACK_MAGIC)
            .u32(PACK_FORMAT)
            .u32(id.0)
            .bytes(&self.store_id)
            .finish();
        let mut p = OpenPack {
            id,
            file: Arc::new(file),
            written: 0,
            buf: Vec::with_capacity(WRITE_BUFFER),
        };
        p.buf.extend_from_slice(&header);
        st.cur = Some(p);
        Ok(())
    }

    /// Refuses a write of `n` bytes that would eat into the reserve (half of it while GC
    /// copies live chunks out of packs it is about to delete: each copy lets a whole pack
    /// go, which is what the reserve is kept for).
    fn check_space(&self, pack: PackId, n: u64) -> Result<(), PackError> {
        let reserve = if self.relief.load(std::sync::atomic::Ordering::Acquire) > 0 {
            self.reserve / 2
        } else {
            self.reserve
        };
        match fs_space(&self.dir) {
            Ok((_, avail)) if avail < n + reserve => Err(PackError::NoSpace { pack }),
            _ => Ok(()),
        }
    }

    /// Lets writes use half the reserve until the guard is dropped (GC's copies).
    pub fn reserve_relief(&self) -> ReserveRelief<'_> {
        self.relief
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ReserveRelief(self)
    }

    /// Bytes free for pack data beyond the reserve, if the filesystem says.
    pub fn free_beyond_reserve(&self) -> Option<u64> {
        fs_space(&self.dir)
            .ok()
            .map(|(_, avail)| avail.saturating_sub(self.reserve))
    }

    fn flush_pack(&self, p: &mut OpenPack) -> Result<(), PackError> {
        if p.buf.is_empty() {
            return Ok(());
        }
        self.check_space(p.id, p.buf.len() as u64)?;
        // Positioned: a write that fails half-way is written again at the same offset, so
        // the offsets handed out for these records stay true.
        p.file
            .write_all_at(&p.buf, p.written)
            .map_err(|e| PackError::io(p.id, p.written, e))?;
        p.written += p.buf.len() as u64;
        p.buf.clear();
        Ok(())
    }

    /// Appends one record; returns its location and its total size on disk.
    pub fn append(
        &self,
        chunk: ChunkId,
        encoding: u8,
        raw_len: u32,
        stored: &[u8],
    ) -> Result<(RecordLoc, u64), PackError> {
        let mut st = self.st.lock();
        st.last_append = Some(std::time::Instant::now());
        let rec_len = RECORD_HEADER_LEN + stored.len() as u64;
        let need_new = match &st.cur {
            None => true,
            // Roll before exceeding the target, unless the pack holds nothing yet.
            Some(p) => {
                let size = p.written + p.buf.len() as u64;
                size > PACK_HEADER_LEN && size + rec_len > self.target_size
            }
        };
        if need_new {
            // Flushed in place first: if that fails, the pack (and the records other
            // writers appended to its buffer) stays current, to be written by a retry.
            if let Some(p) = st.cur.as_mut() {
                self.flush_pack(p)?;
            }
            if let Some(old) = st.cur.take() {
                st.unsynced.push((old.id, old.file));
            }
            self.open_new(&mut st)?;
        }
        let p = st.cur.as_mut().ok_or_else(|| PackError::Corrupt {
            pack: PackId(0),
            offset: 0,
            reason: "no open pack".into(),
        })?;
        let offset = p.written + p.buf.len() as u64;
        let header = record_header(chunk, encoding, raw_len, stored);
        if p.buf.len() + header.len() + stored.len() > WRITE_BUFFER {
            self.flush_pack(p)?;
        }
        if header.len() + stored.len() > WRITE_BUFFER {
            self.check_space(p.id, (header.len() + stored.len()) as u64)?;
            p.file
                .write_all_at(&header, offset)
                .map_err(|e| PackError::io(p.id, offset, e))?;
            p.file
                .write_all_at(stored, offset + header.len() as u64)
                .map_err(|e| PackError::io(p.id, offset, e))?;
            p.written += (header.len() + stored.len()) as u64;
        } else {
            p.buf.extend_from_slice(&header);
            p.buf.extend_from_slice(stored);
        }
        Ok((
            RecordLoc { pack: p.id, offset },
            RECORD_HEADER_LEN + stored.len() as u64,
        ))
    }

    /// Hands every appended byte to the kernel. Must precede committing references to them.
    pub fn flush(&self) -> Result<(), PackError> {
        let mut st = self.st.lock();
        match st.cur.as_mut() {
            Some(p) => self.flush_pack(p),
            None => Ok(()),
        }
    }

    /// Makes every byte handed to the kernel durable ([`Self::flush`] hands them over; every
    /// record a commit names was flushed before that commit, by the `prepare` that stored
    /// it, so the buffer is not written here: what is still in it is either a concurrent
    /// writer's, which that writer flushes and syncs itself, or garbage of a failed write —
    /// and on a full disk, trying to write that garbage would fail every sync).
    /// A closed pack leaves the unsynced list only once its own sync succeeded; any sync
    /// failure is returned as [`PackError::SyncFailed`] (the caller halts the store: see
    /// `Committer`). Callers do not run two syncs at once (the committer serialises them).
    pub fn sync(&self) -> Result<(), PackError> {
        let (cur, closed, dirs) = {
            let st = self.st.lock();
            let cur = st.cur.as_ref().map(|p| (p.id, p.file.clone()));
            let entries = (st.new_entries > st.entries_synced).then_some(st.new_entries);
            (cur, st.unsynced.clone(), entries)
        };
        let hook = self.sync_hook.lock().clone();
        let sync = |id: PackId, f: &File| -> Result<(), PackError> {
            let r = match &hook {
                Some(h) => h(id).and_then(|()| f.sync_data()),
                None => f.sync_data(),
            };
            r.map_err(|source| PackError::SyncFailed { pack: id, source })
        };
        for (id, f) in closed.iter().chain(cur.iter()) {
            sync(*id, f)?;
        }
        if dirs.is_some() {
            let id = cur.as_ref().map(|c| c.0).unwrap_or(PackId(0));
            sync_dir_tree(&self.dir)
                .map_err(|source| PackError::SyncFailed { pack: id, source })?;
        }
        let mut st = self.st.lock();
        // Only the packs this sync takes off the list are sealed by it (a concurrent sync
        // may have taken some already); they go to the remote tier before the writer lock
        // is released, so a checkpoint that syncs after this one finds them queued.
        let mut sealed = Vec::new();
        st.unsynced.retain(|(id, f)| {
            let done = closed.iter().any(|(d, _)| d == id);
            if done {
                sealed.push((*id, f.clone()));
            }
            !done
        });
        if let Some(n) = dirs {
            st.entries_synced = st.entries_synced.max(n);
        }
        if let Some(t) = self.tier.get() {
            let mut packs = Vec::with_capacity(sealed.len());
            for (id, f) in &sealed {
                let len = f
                    .metadata()
                    .map_err(|source| PackError::Io {
                        pack: *id,
                        offset: 0,
                        source,
                    })?
                    .len();
                packs.push((*id, len));
            }
            t.enqueue(&packs);
        }
        Ok(())
    }

    /// Closes the current pack (the next append starts a new one).
    pub fn roll(&self) -> Result<(), PackError> {
        let mut st = self.st.lock();
        if let Some(p) = st.cur.as_mut() {
            self.flush_pack(p)?;
        }
        if let Some(old) = st.cur.take() {
            st.unsynced.push((old.id, old.file));
        }
        Ok(())
    }

    /// The highest pack id handed out so far, if any.
    pub fn last_allocated(&self) -> Option<PackId> {
        let st = self.st.lock();
        (st.next_id > 1).then(|| PackId(st.next_id - 1))
    }

    /// The pack currently being appended to, if any.
    pub fn current(&self) -> Option<PackId> {
        self.st.lock().cur.as_ref().map(|p| p.id)
    }
}

/// (total, available to us) bytes of the filesystem holding `dir`.
pub fn fs_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs is plain old data; zeroed is a valid initial value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
}

fn sync_dir_tree(dir: &Path) -> std::io::Result<()> {
    for shard in std::fs::read_dir(dir)? {
        let shard = shard?;
        if shard.file_type()?.is_dir() {
            File::open(shard.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}

struct Header {
    encoding: u8,
    raw_len: u32,
    stored_len: u32,
    chunk: ChunkId,
    sum: u64,
}

fn parse_header(buf: &[u8], loc: RecordLoc) -> Result<Header, PackError> {
    let corrupt = |reason: String| PackError::Corrupt {
        pack: loc.pack,
        offset: loc.offset,
        reason,
    };
    let mut d = Dec::new(buf, "pack record");
    let magic = d.u32().map_err(|e| corrupt(e.to_string()))?;
    if magic != RECORD_MAGIC {
        return Err(corrupt(format!("bad record magic {magic:#x}")));
    }
    let encoding = d.u8().map_err(|e| corrupt(e.to_string()))?;
    d.bytes(3).map_err(|e| corrupt(e.to_string()))?;
    Ok(Header {
        encoding,
        raw_len: d.u32().map_err(|e| corrupt(e.to_string()))?,
        stored_len: d.u32().map_err(|e| corrupt(e.to_string()))?,
        chunk: ChunkId(d.u128().map_err(|e| corrupt(e.to_string()))?),
        sum: d.u64().map_err(|e| corrupt(e.to_string()))?,
    })
}

fn decode_record(buf: &[u8], loc: RecordLoc) -> Result<Record, PackError> {
    let h = parse_header(buf, loc)?;
    let end = RECORD_HEADER_LEN as usize + h.stored_len as usize;
    let stored = buf
        .get(RECORD_HEADER_LEN as usize..end)
        .ok_or_else(|| PackError::Corrupt {
            pack: loc.pack,
            offset: loc.offset,
            reason: "record shorter than its header says".into(),
        })?;
    let rec = Record {
        chunk: h.chunk,
        encoding: h.encoding,
        raw_len: h.raw_len,
        stored: stored.to_vec(),
        sum: h.sum,
        loc,
    };
    rec.verify()?;
    Ok(rec)
}

/// Walks every record of a pack file (for fsck and GC). Stops at the first undecodable
/// record and reports it with the offset where the valid prefix ends.
pub fn scan_pack(
    path: &Path,
    pack: PackId,
    mut visit: impl FnMut(RecordLoc, &Record),
) -> Result<u64, PackError> {
    let data = std::fs::read(path).map_err(|e| PackError::io(pack, 0, e))?;
    if data.len() < PACK_HEADER_LEN as usize || &data[..8] != PACK_MAGIC {
        return Err(PackError::Corrupt {
            pack,
            offset: 0,
            reason: "bad pack header".into(),
        });
    }
    let mut off = PACK_HEADER_LEN as usize;
    while off < data.len() {
        let loc = RecordLoc {
            pack,
            offset: off as u64,
        };
        if data.len() - off < RECORD_HEADER_LEN as usize {
            return Err(PackError::Corrupt {
                pack,
                offset: off as u64,
                reason: "torn record header".into(),
            });
        }
        let stored_len = u32::from_be_bytes([
            data[off + 12],
            data[off + 13],
            data[off + 14],
            data[off + 15],
        ]) as usize;
        let end = off + RECORD_HEADER_LEN as usize + stored_len;
        if end > data.len() {
            return Err(PackError::Corrupt {
                pack,
                offset: off as u64,
                reason: "torn record".into(),
            });
        }
        let rec = decode_record(&data[off..end], loc)?;
        visit(loc, &rec);
        off = end;
    }
    Ok(off as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_roll_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let w = PackWriter::new(dir.path(), [1; 16], 200, 1);
        let (a, _) = w.append(ChunkId(1), 0, 5, b"hello").unwrap();
        let (b, _) = w.append(ChunkId(2), 0, 5, b"world").unwrap();
        w.flush().unwrap();
        let (c, size) = w.append(ChunkId(3), 0, 200, &[7u8; 200]).unwrap();
        assert_eq!(size, 240);
        w.flush().unwrap();
        w.sync().unwrap();
        assert_eq!(a.pack, b.pack);
        assert_ne!(c.pack, a.pack, "rolled over past the target size");
        let r = PackReader::new(dir.path());
        let rec = r.read(b, 5).unwrap();
        assert_eq!(
            (rec.chunk, rec.stored.as_slice()),
            (ChunkId(2), &b"world"[..])
        );
        assert_eq!(r.read(c, 200).unwrap().stored, vec![7u8; 200]);
        let mut n = 0;
        scan_pack(&pack_path(dir.path(), a.pack), a.pack, |_, _| n += 1).unwrap();
        assert_eq!(n, 2);
        assert_eq!(list_packs(dir.path()).unwrap().len(), 2);

        // flip a payload bit: its checksum fails, naming the pack; a scan stops there
        let p = pack_path(dir.path(), a.pack);
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let r = PackReader::new(dir.path());
        let err = r.read(b, 5).unwrap().verify().unwrap_err();
        assert!(
            matches!(err, PackError::Corrupt { .. })
                && err.to_string().contains(&a.pack.to_string()),
            "{err}"
        );
        assert!(
            r.read(a, 5).unwrap().verify().is_ok(),
            "the other record is still readable"
        );
        assert!(scan_pack(&p, a.pack, |_, _| {}).is_err());
        // a damaged header is caught by the read itself
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[PACK_HEADER_LEN as usize] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(
            PackReader::new(dir.path()).read(a, 5),
            Err(PackError::Corrupt { .. })
        ));

        // a missing pack is reported as such
        std::fs::remove_file(&p).unwrap();
        let r = PackReader::new(dir.path());
        assert!(matches!(r.read(a, 5), Err(PackError::Missing { .. })));
    }
}
