//! File data: open files, buffered writes, flushes into chunks, reads, truncate,
//! fallocate and `lseek` for data and holes.
//!
//! A write lands in the file's [`DirtyMap`]; it becomes chunks when a flush runs (a long
//! contiguous run while the writer streams, everything at fsync, close, age or memory
//! pressure). A flush re-chunks only the affected region: the dirty bytes extended to the
//! neighbouring extent boundaries (and, for an append, back over a tail chunk that was cut
//! only because the file ended there), so unchanged chunks keep their identity.
//!
//! Invariants:
//! - At every version, the visible extents of a file are disjoint and lie below its size.
//! - Bytes being flushed stay readable (in-flight overlay) until their commit is visible.
//! - A failed flush puts its bytes back (under any newer writes) and latches the error,
//!   which the next write, fsync or close of the file reports.

use super::dirty::{overlay_spans, DirtyMap};
use super::rechunk;
use super::*;
use crate::chunks::NewChunk;
use crate::ids::ChunkId;
use crate::records::{ExtentRec, FileKind, Timestamp};

/// Largest file size (the kernel's limit for FUSE files is also 2^63-1).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// Spans shorter than this are not taken by a streaming flush (the tail stays buffered).
const STREAM_TAKE_DIVISOR: usize = 2;

#[derive(Debug, Default)]
struct FileInner {
    size: u64,
    /// Attribute changes not yet committed (they go with the next flush).
    attrs: PendingAttrs,
    dirty: DirtyMap,
    inflight: Vec<(u64, Arc<Vec<u8>>)>,
    opens: u32,
    dirty_since: Option<Instant>,
    unlinked: bool,
    error: Option<FsError>,
    /// End of the last read, and how far chunks have been read ahead.
    last_read_end: u64,
    read_ahead_until: u64,
}

/// In-memory state of a file that is open or has buffered writes.
pub(crate) struct FileState {
    pub key: FileKey,
    /// The view (tree) the file was opened in.
    pub view: u32,
    flush_lock: Mutex<()>,
    inner: Mutex<FileInner>,
}

pub(crate) struct OverlayAttrs {
    pub size: u64,
    pub attrs: PendingAttrs,
    pub buffered: usize,
}

impl FileState {
    fn new(key: FileKey, view: u32, size: u64) -> FileState {
        FileState {
            key,
            view,
            flush_lock: Mutex::new(()),
            inner: Mutex::new(FileInner {
                size,
                ..Default::default()
            }),
        }
    }

    pub fn overlay_attrs(&self) -> OverlayAttrs {
        let g = self.inner.lock();
        OverlayAttrs {
            size: g.size,
            attrs: g.attrs,
            buffered: g.dirty.bytes() + g.inflight.iter().map(|(_, d)| d.len()).sum::<usize>(),
        }
    }

    pub fn mark_unlinked_if_open(&self) -> bool {
        let mut g = self.inner.lock();
        if g.opens > 0 {
            g.unlinked = true;
            true
        } else {
            false
        }
    }

    /// Takes an attribute change without a commit when the file has uncommitted state
    /// anyway (the next flush commits it); false when it must be committed now.
    pub fn buffer_attrs(&self, set: &SetAttr, now: Timestamp) -> bool {
        let mut g = self.inner.lock();
        if g.dirty.is_empty() && g.inflight.is_empty() && g.attrs.is_empty() {
            return false;
        }
        let a = &mut g.attrs;
        if let Some(m) = set.mode {
            a.perm = Some((m & 0o7777) as u16);
        }
        if set.uid.is_some() {
            a.uid = set.uid;
        }
        if set.gid.is_some() {
            a.gid = set.gid;
        }
        let at = |t: SetTime| match t {
            SetTime::Now => now,
            SetTime::At(x) => x,
        };
        if let Some(t) = set.atime {
            a.atime = Some(at(t));
        }
        if let Some(t) = set.mtime {
            a.mtime = Some(at(t));
        }
        a.ctime = Some(set.ctime.unwrap_or(now));
        g.dirty_since.get_or_insert_with(Instant::now);
        true
    }

    /// An atime update for a file whose attributes are still buffered (they would overwrite
    /// a committed one); ctime stays. False when nothing is buffered.
    pub fn buffer_atime(&self, t: Timestamp) -> bool {
        let mut g = self.inner.lock();
        if g.dirty.is_empty() && g.inflight.is_empty() && g.attrs.is_empty() {
            return false;
        }
        g.attrs.atime = Some(t);
        g.dirty_since.get_or_insert_with(Instant::now);
        true
    }

    pub fn dirty_since(&self) -> Option<Instant> {
        self.inner.lock().dirty_since
    }
}

fn rd_err(node_desc: &str, e: FsError) -> FsError {
    if let FsError::Corrupt(m) = &e {
        log::error!("{node_desc}: {m}");
    }
    e
}

impl FsCore {
    /// The tree a file's writes go to, if it still exists and still writes to the
    /// file's branch (a rollback moves a container to a new branch).
    fn tree_of_file(&self, f: &FileState) -> Option<Arc<ContainerInfo>> {
        self.tree(f.view).filter(|ci| ci.branch() == f.key.0)
    }

    fn file_state(&self, ci: &ContainerInfo, ino: Ino, size: u64) -> Arc<FileState> {
        let key = (ci.branch(), ino);
        self.files
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(FileState::new(key, ci.view, size)))
            .clone()
    }

    /// Drops the in-memory state of a file nobody has open and nothing buffered.
    ///
    /// Only when the map holds the sole reference: every other holder (an `open` between
    /// finding the state and counting itself, a read, a truncate, a flush) cloned it under
    /// the map lock we hold, so none can be left with a state the map no longer has (an
    /// open that did would buffer its writes where nobody reads or flushes them).
    fn maybe_evict(&self, key: FileKey) {
        let mut m = self.files.lock();
        if let Some(f) = m.get(&key) {
            if Arc::strong_count(f) > 1 {
                return;
            }
            let g = f.inner.lock();
            if g.opens == 0 && g.dirty.is_empty() && g.inflight.is_empty() && g.attrs.is_empty() {
                drop(g);
                m.remove(&key);
            }
        }
    }

    fn adjust_buffered(&self, delta: isize) {
        if delta >= 0 {
            self.buffered.fetch_add(delta as usize, Ordering::AcqRel);
        } else {
            self.buffered.fetch_sub((-delta) as usize, Ordering::AcqRel);
            self.space.1.notify_all();
        }
    }

    pub fn open(&self, _ctx: &Ctx, node: u64, flags: OpenFlags) -> FsResult<u64> {
        let (ci, ino) = if flags.write {
            self.resolve_node_mut(node)?
        } else {
            self.resolve_node(node)?
        };
        let rec = self.inode(&ci.read_point, ino)?;
        match rec.kind {
            FileKind::Directory if flags.write => return Err(FsError::IsDir),
            FileKind::RegularFile => {
                let f = self.file_state(&ci, ino, rec.size);
                f.inner.lock().opens += 1;
            }
            _ => {}
        }
        Ok(self.new_fh(Handle::File {
            key: (ci.branch(), ino),
            node,
            flags,
        }))
    }

    pub fn create(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: OpenFlags,
    ) -> FsResult<(Attr, u64)> {
        let attr = self.create_node(
            ctx,
            parent,
            name,
            namespace::NewNode {
                kind: FileKind::RegularFile,
                perm: (mode & 0o7777) as u16,
                rdev: 0,
                target: &[],
            },
        )?;
        let fh = self.open(
            ctx,
            attr.node,
            OpenFlags {
                write: flags.write,
                read: flags.read,
                ..flags
            },
        )?;
        Ok((attr, fh))
    }

    /// `close` of one file descriptor: reports a write error latched by a background flush.
    pub fn flush(&self, _node: u64, fh: u64) -> FsResult<()> {
        if let Handle::File { key, .. } = self.handle(fh)? {
            if let Some(f) = self.files.lock().get(&key).cloned() {
                if let Some(e) = f.inner.lock().error.clone() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Last close of a handle: buffered data is flushed in the background; an unlinked file
    /// is deleted once nobody has it open.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some(Handle::File { key, .. }) = self.drop_handle(fh) else {
            return Ok(());
        };
        self.release_state(key)?;
        self.maybe_evict(key);
        Ok(())
    }

    fn release_state(&self, key: FileKey) -> FsResult<()> {
        let Some(f) = self.files.lock().get(&key).cloned() else {
            return Ok(());
        };
        let (last, unlinked, dirty) = {
            let mut g = f.inner.lock();
            g.opens = g.opens.saturating_sub(1);
            (g.opens == 0, g.unlinked, !g.dirty.is_empty())
        };
        if last && unlinked {
            let _fl = f.flush_lock.lock();
            let delta = {
                let mut g = f.inner.lock();
                let d = -(g.dirty.bytes() as isize);
                g.dirty.discard(0, u64::MAX);
                g.dirty_since = None;
                d
            };
            self.adjust_buffered(delta);
            let (branch, ino) = key;
            let ci = self.tree_of_file(&f);
            if let Some(ci) = ci {
                self.store.committer.commit(|c| {
                    if let Some(rec) = self.txn_inode(c, &ci.read_point, ino)? {
                        if rec.nlink == 0 {
                            self.put_inode(c, &ci.read_point, ino, None);
                        }
                    }
                    c.txn
                        .delete(Cf::Orphans, crate::store::orphan_key(branch, ino));
                    Ok::<_, FsError>(())
                })?;
            }
        } else if last && dirty {
            if self.opts.background {
                self.enqueue(key, FlushMode::Force);
            } else {
                self.flush_key(key, FlushMode::Force)?;
            }
        }
        Ok(())
    }

    /// Clears setuid/setgid as a write by an unprivileged caller must (the kernel flags such
    /// writes and leaves this to us).
    /// Clears setuid/setgid after an unprivileged caller changed the file's data (a write
    /// the kernel flagged, a fallocate). Setgid without group-execute stays when the caller
    /// is in the file's group (`caller_in_group` is asked only then), as in the Linux VFS.
    /// Returns whether the mode changed, so the caller can tell the kernel.
    pub fn drop_privileges(
        &self,
        node: u64,
        caller_in_group: impl FnOnce(u32) -> bool,
    ) -> FsResult<bool> {
        let cur = self.getattr(node)?;
        let mut killed = super::attrs::kill_suid_sgid(cur.perm);
        if killed & namespace::S_ISGID != 0 && !caller_in_group(cur.gid) {
            killed &= !namespace::S_ISGID;
        }
        if killed == cur.perm {
            return Ok(false);
        }
        self.setattr(
            &Ctx::root(),
            node,
            SetAttr {
                mode: Some(killed as u32),
                ..Default::default()
            },
        )?;
        Ok(true)
    }

    pub fn write(&self, node: u64, fh: u64, off: u64, data: &[u8]) -> FsResult<u32> {
        self.check_writable()?;
        let key = match self.handle(fh)? {
            Handle::File { key, flags, .. } if flags.write => key,
            _ => return Err(FsError::BadHandle),
        };
        // A handle opened before a rollback writes to a branch that is no longer the tree's.
        match NodeRef::decode(node) {
            Some(NodeRef::Tree { view, .. })
                if self.tree(view).is_some_and(|t| t.branch() == key.0) => {}
            _ => return Err(FsError::Stale),
        }
        let end = off
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooLarge)?;
        let f = self
            .files
            .lock()
            .get(&key)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        let _ = node;
        let now = Timestamp::now_coarse();
        let (delta, span) = {
            let mut g = f.inner.lock();
            if let Some(e) = g.error.clone() {
                return Err(e);
            }
            let d = g.dirty.write(off, data);
            g.size = g.size.max(end);
            g.attrs.mtime = Some(now);
            g.attrs.ctime = Some(now);
            g.dirty_since.get_or_insert_with(Instant::now);
            (d, g.dirty.run_len_at(off))
        };
        self.adjust_buffered(delta);
        if span >= self.opts.stream_trigger {
            if self.opts.background {
                self.enqueue(key, FlushMode::Stream);
            } else {
                self.flush_key(key, FlushMode::Stream)?;
            }
        }
        self.throttle(key)?;
        Ok(data.len() as u32)
    }

    /// Holds a writer back while buffered data exceeds the limit.
    fn throttle(&self, key: FileKey) -> FsResult<()> {
        let limit = self.opts.dirty_limit;
        if self.buffered.load(Ordering::Acquire) <= limit {
            return Ok(());
        }
        if !self.opts.background {
            return self.flush_key(key, FlushMode::Force);
        }
        self.enqueue(key, FlushMode::Force);
        let mut g = self.space.0.lock();
        while self.buffered.load(Ordering::Acquire) > limit {
            if self.out_of_space.load(Ordering::Acquire) {
                return Err(FsError::NoSpace);
            }
            if self.shutdown.load(Ordering::Acquire) {
                break;
            }
            self.space.1.wait_for(&mut g, Duration::from_millis(100));
        }
        Ok(())
    }

    /// Visible extents of a file overlapping [from, to).
    fn extents_overlapping(
        &self,
        rp: &ReadPoint,
        ino: Ino,
        gen: u64,
        from: u64,
        to: u64,
    ) -> FsResult<Vec<(u64, ExtentRec)>> {
        let kv: &dyn crate::kv::Kv = &**self.store.kv();
        let max = self.store.chunker.params().max as u64;
        Ok(crate::extents::overlapping(
            &kv, rp, ino, gen, from, to, max,
        )?)
    }

    /// The `len` bytes from `off` described by sorted, disjoint `exts` (holes read as zeros),
    /// assembled in order without zero-filling first.
    fn bytes_of_extents(
        &self,
        exts: &[(u64, ExtentRec)],
        off: u64,
        len: usize,
    ) -> FsResult<Vec<u8>> {
        let end = off + len as u64;
        let mut out = Vec::with_capacity(len);
        for (o, e) in exts {
            let eend = o + e.len as u64;
            if eend <= off || *o >= end {
                continue;
            }
            let s = (*o).max(off);
            let t = eend.min(end);
            out.resize((s - off) as usize, 0);
            let data = self.store.chunks.read(e.chunk)?;
            let from = e.chunk_off as usize + (s - o) as usize;
            let src = data.get(from..from + (t - s) as usize).ok_or_else(|| {
                FsError::Corrupt(format!(
                    "extent at {o} reaches past the end of chunk {} ({} bytes)",
                    e.chunk,
                    data.len()
                ))
            })?;
            out.extend_from_slice(src);
        }
        out.resize(len, 0);
        Ok(out)
    }

    /// For a sequential reader, queues the chunks of the next window for decompression on
    /// the read-ahead threads, so that they are in the cache when the reader gets there.
    #[allow(clippy::too_many_arguments)]
    fn read_ahead(
        &self,
        f: &FileState,
        rp: &ReadPoint,
        ino: Ino,
        gen: u64,
        off: u64,
        len: u64,
        size: u64,
    ) {
        const WINDOW: u64 = 8 << 20;
        let from = {
            let mut g = f.inner.lock();
            let sequential =
                off <= g.last_read_end + (1 << 20) && off + (1 << 20) >= g.last_read_end;
            g.last_read_end = off + len;
            let want = (off + len + WINDOW).min(size);
            if !sequential || want <= g.read_ahead_until.max(off + len) {
                return;
            }
            let from = g.read_ahead_until.max(off + len);
            g.read_ahead_until = want;
            (from, want)
        };
        let Some(ra) = &self.readahead else { return };
        if let Ok(exts) = self.extents_overlapping(rp, ino, gen, from.0, from.1) {
            ra.enqueue(
                exts.into_iter()
                    .map(|(_, e)| e.chunk)
                    .filter(|c| self.store.chunks.cache().get(*c).is_none()),
            );
        }
    }

    /// Copies the bytes of `exts` that fall in [off, off+buf.len()) into `buf`.
    fn fill_from_extents(
        &self,
        exts: &[(u64, ExtentRec)],
        off: u64,
        buf: &mut [u8],
    ) -> FsResult<()> {
        let end = off + buf.len() as u64;
        for (o, e) in exts {
            let eend = o + e.len as u64;
            if eend <= off || *o >= end {
                continue;
            }
            let data = self.store.chunks.read(e.chunk)?;
            let s = (*o).max(off);
            let t = eend.min(end);
            let from = e.chunk_off as usize + (s - o) as usize;
            let to = from + (t - s) as usize;
            let src = data.get(from..to).ok_or_else(|| {
                FsError::Corrupt(format!(
                    "extent at {o} reaches past the end of chunk {} ({} bytes)",
                    e.chunk,
                    data.len()
                ))
            })?;
            buf[(s - off) as usize..(t - off) as usize].copy_from_slice(src);
        }
        Ok(())
    }

    pub fn read(&self, node: u64, fh: u64, off: u64, size: u32) -> FsResult<Vec<u8>> {
        let (ci, ino) = self.resolve_node(node)?;
        // A handle opened before a rollback belongs to the tree as it was; the kernel's
        // idea of that file's size may be stale, so it must reopen.
        if let Ok(Handle::File { key, .. }) = self.handle(fh) {
            if key.0 != ci.branch() {
                return Err(FsError::Stale);
            }
        }
        let rec = self.inode(&ci.read_point, ino)?;
        if rec.kind == FileKind::Directory {
            return Err(FsError::IsDir);
        }
        let key = (ci.branch(), ino);
        let f = self.files.lock().get(&key).cloned();
        let (fsize, dirty, inflight) = match &f {
            Some(f) => {
                let g = f.inner.lock();
                let end = off.saturating_add(size as u64);
                let dirty: Vec<(u64, Vec<u8>)> = g
                    .dirty
                    .spans()
                    .filter(|(o, v)| o + v.len() as u64 > off && *o < end)
                    .map(|(o, v)| {
                        let s = o.max(off);
                        let e = (o + v.len() as u64).min(end);
                        (s, v[(s - o) as usize..(e - o) as usize].to_vec())
                    })
                    .collect();
                (g.size, dirty, g.inflight.clone())
            }
            None => (rec.size, Vec::new(), Vec::new()),
        };
        if off >= fsize {
            return Ok(Vec::new());
        }
        let len = (size as u64).min(fsize - off) as usize;
        let covered = dirty.iter().map(|(_, d)| d.len()).sum::<usize>() == len;
        let mut buf = if covered {
            vec![0u8; len]
        } else {
            let exts =
                self.extents_overlapping(&ci.read_point, ino, rec.data_gen, off, off + len as u64)?;
            self.bytes_of_extents(&exts, off, len).map_err(|e| {
                rd_err(
                    &format!("read of inode {ino} in container '{}'", ci.rec.name),
                    e,
                )
            })?
        };
        if let Some(f) = &f {
            self.read_ahead(f, &ci.read_point, ino, rec.data_gen, off, len as u64, fsize);
        }
        overlay_spans(
            inflight.iter().map(|(o, d)| (*o, d.as_slice())),
            off,
            &mut buf,
        );
        overlay_spans(dirty.iter().map(|(o, d)| (*o, d.as_slice())), off, &mut buf);
        Ok(buf)
    }

    pub fn fsync(&self, node: u64, _fh: u64, _datasync: bool) -> FsResult<()> {
        if let Ok((ci, ino)) = self.resolve_node(node) {
            let key = (ci.branch(), ino);
            if self.files.lock().contains_key(&key) {
                self.flush_key(key, FlushMode::Force)?;
            }
        }
        self.store.sync()?;
        Ok(())
    }

    pub fn fsyncdir(&self, _node: u64) -> FsResult<()> {
        self.store.sync()?;
        Ok(())
    }

    /// Flushes the buffered writes of every file of a container's trees (live tree and
    /// snapshots), then makes all commits durable: a consistency point.
    pub fn flush_container(&self, c: crate::ids::ContainerId) -> FsResult<()> {
        let keys: Vec<FileKey> = self
            .files
            .lock()
            .iter()
            .filter(|(_, f)| self.tree(f.view).is_none_or(|t| t.id() == c))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.flush_key(k, FlushMode::Force)?;
        }
        self.store.sync()?;
        Ok(())
    }

    /// Flushes every file's buffered writes.
    pub fn flush_all(&self) -> FsResult<()> {
        let keys: Vec<FileKey> = self.files.lock().keys().copied().collect();
        let mut first = Ok(());
        for k in keys {
            if let Err(e) = self.flush_key(k, FlushMode::Force) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Flushes one file, latching a failure on it; wakes throttled writers.
    pub(crate) fn flush_key(&self, key: FileKey, mode: FlushMode) -> FsResult<()> {
        let Some(f) = self.files.lock().get(&key).cloned() else {
            return Ok(());
        };
        let r = self.flush_file(&f, mode);
        match &r {
            Err(e) => {
                log::warn!("flush of inode {} failed: {e}", key.1);
                if *e == FsError::NoSpace {
                    self.out_of_space.store(true, Ordering::Release);
                }
                f.inner.lock().error = Some(e.clone());
            }
            Ok(()) => {
                self.out_of_space.store(false, Ordering::Release);
                if mode == FlushMode::Force {
                    f.inner.lock().error = None;
                }
            }
        }
        self.space.1.notify_all();
        drop(f);
        self.maybe_evict(key);
        r
    }

    fn flush_file(&self, f: &Arc<FileState>, mode: FlushMode) -> FsResult<()> {
        let _fl = f.flush_lock.lock();
        let Some(ci) = self.tree_of_file(f) else {
            // The container or snapshot is gone, or was rolled back under the file: its
            // pending writes have no tree to go to.
            if f.inner.lock().dirty.bytes() > 0 {
                log::warn!(
                    "dropping buffered writes of inode {} of a tree that was deleted or rolled back",
                    f.key.1
                );
            }
            let mut g = f.inner.lock();
            let d = g.dirty.discard(0, u64::MAX);
            drop(g);
            self.adjust_buffered(d);
            return Ok(());
        };
        let (spans, size, attrs) = {
            let mut g = f.inner.lock();
            let spans = match mode {
                FlushMode::Force => g.dirty.take_all(),
                FlushMode::Stream => g
                    .dirty
                    .take_first_run(self.opts.stream_trigger / STREAM_TAKE_DIVISOR),
            };
            // Buffered attribute changes alone are committed by a forced flush.
            if spans.is_empty() && (mode == FlushMode::Stream || g.attrs.is_empty()) {
                return Ok(());
            }
            g.inflight = spans.into_iter().map(|(o, v)| (o, Arc::new(v))).collect();
            (g.inflight.clone(), g.size, g.attrs)
        };
        let taken: usize = spans.iter().map(|(_, d)| d.len()).sum();
        let result = self.flush_spans(f, &ci, &spans, size, mode, attrs);
        let mut delta = -(taken as isize);
        {
            let mut g = f.inner.lock();
            let back: Vec<(u64, Vec<u8>)> = match &result {
                Ok(rest) => rest.clone(),
                Err(_) => spans
                    .iter()
                    .map(|(o, d)| (*o, d.as_ref().clone()))
                    .collect(),
            };
            for (o, d) in back {
                delta += g.dirty.write_under(o, &d);
            }
            g.inflight.clear();
            if result.is_ok() {
                g.attrs.clear_committed(&attrs);
            }
            if g.dirty.is_empty() && g.attrs.is_empty() {
                g.dirty_since = None;
            } else if g.dirty_since.is_none() {
                g.dirty_since = Some(Instant::now());
            }
        }
        self.adjust_buffered(delta);
        for (_, a) in spans {
            if let Ok(v) = Arc::try_unwrap(a) {
                self.pool.put(v);
            }
        }
        result.map(|_| ())
    }

    /// Chunks and commits `spans`; returns the bytes to keep buffered (undecided tails).
    #[allow(clippy::too_many_arguments)]
    fn flush_spans(
        &self,
        f: &FileState,
        ci: &ContainerInfo,
        spans: &[(u64, Arc<Vec<u8>>)],
        size: u64,
        mode: FlushMode,
        attrs: PendingAttrs,
    ) -> FsResult<Vec<(u64, Vec<u8>)>> {
        let ino = f.key.1;
        let rp = &ci.read_point;
        let rec = match self.inode(rp, ino) {
            Ok(r) => r,
            Err(FsError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let gen = rec.data_gen;
        let lo = spans.first().map(|(o, _)| *o).unwrap_or(0);
        let hi = spans.last().map(|(o, d)| o + d.len() as u64).unwrap_or(0);
        let exts =
            self.extents_overlapping(rp, ino, gen, lo.saturating_sub(1), hi.saturating_add(1))?;

        let chunker = &self.store.chunker;
        let hasher = self.store.chunks.hasher();
        let regions = rechunk::plan(spans, &exts);
        let mut built: Vec<rechunk::Region> = Vec::with_capacity(regions.len());
        for (s, e) in regions {
            let parts = rechunk::assemble(s, e, spans, |off, buf| {
                self.fill_from_extents(&exts, off, buf).map_err(|err| {
                    rd_err(
                        &format!("re-chunking inode {ino} in container '{}'", ci.rec.name),
                        err,
                    )
                })
            })?;
            // While streaming, a region that ends where the written bytes end keeps its
            // undecided tail buffered (more bytes may follow); one widened to an old
            // extent's end is cut there, a boundary the old chunking already made.
            let dirty_end = spans
                .iter()
                .map(|(o, d)| o + d.len() as u64)
                .filter(|&x| x <= e)
                .max()
                .unwrap_or(0);
            let streaming_tail = mode == FlushMode::Stream && dirty_end == e;
            let successor = |id: ChunkId| self.store.chunks.successor(id);
            built.push(rechunk::cut(
                chunker,
                hasher,
                &successor,
                s,
                parts,
                !streaming_tail,
                size,
            ));
        }

        // Store new chunks (deduplicated, compressed in parallel), then commit.
        let all: Vec<NewChunk<'_>> = built
            .iter()
            .flat_map(|r| {
                (0..r.extents.len()).map(move |i| NewChunk {
                    id: r.extents[i].rec.chunk,
                    data: r.chunk(i),
                    next: r.next_of(i),
                })
            })
            .collect();
        let compression = ci.rec.settings.compression;
        let claim = self
            .store
            .chunks
            .prepare(&all, compression, self.opts.compress_threads)?;
        let flushed_end = built
            .iter()
            .map(|r| r.start + r.commit_len)
            .max()
            .unwrap_or(0);
        let everything = mode == FlushMode::Force;
        let res = self.store.committer.commit(|c| {
            let Some(mut rec) = self.txn_inode(c, rp, ino)? else {
                return Ok(());
            };
            if rec.data_gen != gen {
                return Ok(());
            }
            let mut deltas = HashMap::new();
            for r in &built {
                let (rm, add) = Self::replace_range(
                    c,
                    rp,
                    ino,
                    gen,
                    r.start,
                    r.start + r.commit_len,
                    &r.extents,
                    &mut deltas,
                    self,
                )?;
                rec.data_bytes = rec.data_bytes.saturating_sub(rm) + add;
            }
            let old_size = rec.size;
            rec.size = if everything {
                size.max(rec.size)
            } else {
                rec.size.max(flushed_end.min(size))
            };
            attrs.apply(&mut rec);
            self.put_inode(c, rp, ino, Some(&rec));
            let (txn, store, cont) = c.split(ci.id());
            self.store
                .chunks
                .add_refs(txn, ci.id(), &deltas, store, cont)?;
            if rec.nlink > 0 {
                let cc = c.container_counters(ci.account());
                cc.logical_bytes = (cc.logical_bytes + rec.size).saturating_sub(old_size);
            }
            Ok::<_, FsError>(())
        });
        self.store.chunks.release(claim);
        res?;
        Ok(built.into_iter().filter_map(|r| r.remainder).collect())
    }

    /// Inside a commit: makes [p, q) of the file consist of exactly `new` (holes
    /// elsewhere), trimming extents that straddle the edges. Returns (bytes removed, bytes
    /// added) of extent data and records reference changes in `deltas`.
    #[allow(clippy::too_many_arguments)]
    fn replace_range(
        c: &mut Commit<'_>,
        rp: &ReadPoint,
        ino: Ino,
        gen: u64,
        p: u64,
        q: u64,
        new: &[rechunk::NewExtent],
        deltas: &mut HashMap<ChunkId, i64>,
        fs: &FsCore,
    ) -> FsResult<(u64, u64)> {
        if p >= q && new.is_empty() {
            return Ok((0, 0));
        }
        let max = fs.store.chunker.params().max as u64;
        let old = crate::extents::overlapping(&c.txn, rp, ino, gen, p, q, max)?;
        let mut writes: std::collections::BTreeMap<u64, Option<ExtentRec>> =
            std::collections::BTreeMap::new();
        let mut removed = 0u64;
        for (o, e) in &old {
            let end = o + e.len as u64;
            if *o >= q {
                continue;
            }
            removed += end.min(q) - (*o).max(p);
            if *o < p {
                writes.insert(
                    *o,
                    Some(ExtentRec {
                        len: (p - o) as u32,
                        flags: 0,
                        ..*e
                    }),
                );
            } else {
                writes.insert(*o, None);
            }
            if end > q {
                writes.insert(
                    q,
                    Some(ExtentRec {
                        len: (end - q) as u32,
                        chunk_off: e.chunk_off + (q - o) as u32,
                        ..*e
                    }),
                );
            }
        }
        let mut added = 0u64;
        for n in new {
            writes.insert(n.off, Some(n.rec));
            added += n.rec.len as u64;
        }
        // Unchanged extents get no new version and no new reference.
        writes.retain(|off, w| old.iter().find(|(o, _)| o == off).map(|(_, e)| *e) != *w);
        for rec in writes.values().flatten() {
            *deltas.entry(rec.chunk).or_default() += 1;
        }
        let v = c.version;
        crate::extents::write(&mut c.txn, rp, ino, gen, v, &writes)?;
        Ok((removed, added))
    }

    /// Sets a file's size: drops buffered and stored bytes beyond it (a new, empty extent
    /// generation when it is zero, so this costs the same for any file size).
    pub fn truncate(&self, node: u64, size: u64) -> FsResult<()> {
        self.check_writable()?;
        if size > MAX_FILE_SIZE {
            return Err(FsError::FileTooLarge);
        }
        let (ci, ino) = self.resolve_node_mut(node)?;
        let rec = self.inode(&ci.read_point, ino)?;
        match rec.kind {
            FileKind::RegularFile => {}
            FileKind::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid("truncate of a special file")),
        }
        let f = self.file_state(&ci, ino, rec.size);
        let r = self.edit_range(&f, &ci, Edit::Truncate(size));
        let key = f.key;
        drop(f);
        self.maybe_evict(key);
        r
    }

    /// Applies a truncate or hole punch with the file's flush lock held.
    fn edit_range(&self, f: &Arc<FileState>, ci: &ContainerInfo, edit: Edit) -> FsResult<()> {
        let _fl = f.flush_lock.lock();
        let ino = f.key.1;
        let rp = &ci.read_point;
        let (from, to) = match edit {
            Edit::Truncate(size) => (size, u64::MAX),
            Edit::Zero { off, len, .. } => (off, off.saturating_add(len)),
        };
        {
            let mut g = f.inner.lock();
            let d = g.dirty.discard(from, to);
            if let Edit::Truncate(size) = edit {
                g.size = size;
                g.attrs.mtime = None;
                g.attrs.ctime = None;
            }
            if let Edit::Zero {
                grow_to: Some(end), ..
            } = edit
            {
                g.size = g.size.max(end);
            }
            drop(g);
            self.adjust_buffered(d);
        }
        let mem_size = f.inner.lock().size;
        self.store.committer.commit(|c| {
            let mut rec = self.txn_inode(c, rp, ino)?.ok_or(FsError::NotFound)?;
            let old_size = rec.size;
            let now = c.file_time;
            let mut deltas = HashMap::new();
            match edit {
                Edit::Truncate(0) => {
                    rec.data_gen = c.version.0;
                    rec.data_bytes = 0;
                    rec.size = 0;
                }
                Edit::Truncate(size) => {
                    if size < rec.size {
                        let (rm, _) = Self::replace_range(
                            c,
                            rp,
                            ino,
                            rec.data_gen,
                            size,
                            rec.size,
                            &[],
                            &mut deltas,
                            self,
                        )?;
                        rec.data_bytes = rec.data_bytes.saturating_sub(rm);
                    }
                    rec.size = size;
                }
                Edit::Zero { off, len, .. } => {
                    let end = off.saturating_add(len).min(rec.size);
                    if off < end {
                        let (rm, _) = Self::replace_range(
                            c,
                            rp,
                            ino,
                            rec.data_gen,
                            off,
                            end,
                            &[],
                            &mut deltas,
                            self,
                        )?;
                        rec.data_bytes = rec.data_bytes.saturating_sub(rm);
                    }
                    // The size is the file's current size (writes not yet flushed may have
                    // grown it; a zero-range may grow it further).
                    rec.size = mem_size;
                }
            }
            rec.mtime = now;
            rec.ctime = now;
            self.put_inode(c, rp, ino, Some(&rec));
            let (txn, store, cont) = c.split(ci.id());
            self.store
                .chunks
                .add_refs(txn, ci.id(), &deltas, store, cont)?;
            if rec.nlink > 0 {
                let cc = c.container_counters(ci.account());
                cc.logical_bytes = (cc.logical_bytes + rec.size).saturating_sub(old_size);
            }
            Ok(())
        })
    }

    pub fn fallocate(
        &self,
        node: u64,
        _fh: u64,
        off: u64,
        len: u64,
        mode: Fallocate,
    ) -> FsResult<()> {
        self.check_writable()?;
        let end = off
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooLarge)?;
        if len == 0 {
            return Err(FsError::Invalid("fallocate of zero bytes"));
        }
        let (ci, ino) = self.resolve_node_mut(node)?;
        let rec = self.inode(&ci.read_point, ino)?;
        if rec.kind != FileKind::RegularFile {
            return Err(if rec.kind == FileKind::Directory {
                FsError::IsDir
            } else {
                FsError::NotSupported("fallocate of a special file")
            });
        }
        if let Fallocate::Allocate { .. } = mode {
            // Nothing is reserved, but a request that the store's filesystem could never
            // hold (more than its free space plus what the file already stores) is refused
            // now rather than failing the writes that trust it later.
            let st = self.statfs()?;
            let free = st.bavail.saturating_mul(st.frsize as u64);
            if len.saturating_sub(rec.data_bytes) > free {
                return Err(FsError::NoSpace);
            }
        }
        let f = self.file_state(&ci, ino, rec.size);
        let r = match mode {
            Fallocate::Allocate { keep_size } => {
                // Space is not reserved (data is deduplicated on write); only the size moves.
                let cur = f.inner.lock().size;
                if !keep_size && end > cur {
                    self.edit_range(
                        &f,
                        &ci,
                        Edit::Zero {
                            off: cur,
                            len: 0,
                            grow_to: Some(end),
                        },
                    )
                } else {
                    Ok(())
                }
            }
            Fallocate::PunchHole => self.edit_range(
                &f,
                &ci,
                Edit::Zero {
                    off,
                    len,
                    grow_to: None,
                },
            ),
            Fallocate::ZeroRange { keep_size } => self.edit_range(
                &f,
                &ci,
                Edit::Zero {
                    off,
                    len,
                    grow_to: if keep_size { None } else { Some(end) },
                },
            ),
        };
        let key = f.key;
        drop(f);
        self.maybe_evict(key);
        r
    }

    /// SEEK_DATA / SEEK_HOLE. Buffered writes are flushed first so extents tell the truth.
    pub fn lseek(&self, node: u64, _fh: u64, off: u64, whence: SeekWhence) -> FsResult<u64> {
        let (ci, ino) = self.resolve_node(node)?;
        let key = (ci.branch(), ino);
        if self.files.lock().contains_key(&key) {
            self.flush_key(key, FlushMode::Force)?;
        }
        let rec = self.inode(&ci.read_point, ino)?;
        let size = self
            .files
            .lock()
            .get(&key)
            .map(|f| f.inner.lock().size)
            .unwrap_or(rec.size);
        if off >= size {
            return Err(FsError::OutOfRange);
        }
        let mut pos = off;
        loop {
            let exts = self.extents_overlapping(&ci.read_point, ino, rec.data_gen, pos, size)?;
            match whence {
                SeekWhence::Data => {
                    return exts
                        .first()
                        .map(|(o, _)| (*o).max(pos))
                        .ok_or(FsError::OutOfRange);
                }
                SeekWhence::Hole => {
                    let mut moved = false;
                    for (o, e) in &exts {
                        if *o <= pos && o + e.len as u64 > pos {
                            pos = o + e.len as u64;
                            moved = true;
                        } else if *o > pos {
                            return Ok(pos.min(size));
                        }
                    }
                    if !moved || pos >= size {
                        return Ok(pos.min(size));
                    }
                }
            }
        }
    }

    /// Copies bytes between files through the buffered write path.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_file_range(
        &self,
        node_in: u64,
        fh_in: u64,
        off_in: u64,
        node_out: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> FsResult<u64> {
        let mut done = 0u64;
        while done < len {
            let step = (len - done).min(1 << 20) as u32;
            let data = self.read(node_in, fh_in, off_in + done, step)?;
            if data.is_empty() {
                break;
            }
            self.write(node_out, fh_out, off_out + done, &data)?;
            done += data.len() as u64;
            if data.len() < step as usize {
                break;
            }
        }
        Ok(done)
    }
}

/// Attribute changes buffered for the next commit of a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PendingAttrs {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
}

impl PendingAttrs {
    pub fn is_empty(&self) -> bool {
        *self == PendingAttrs::default()
    }

    pub fn apply(&self, rec: &mut InodeRec) {
        if let Some(p) = self.perm {
            rec.perm = p;
        }
        if let Some(u) = self.uid {
            rec.uid = u;
        }
        if let Some(g) = self.gid {
            rec.gid = g;
        }
        if let Some(t) = self.atime {
            rec.atime = t;
        }
        if let Some(t) = self.mtime {
            rec.mtime = t;
        }
        if let Some(t) = self.ctime {
            rec.ctime = t;
        }
    }

    /// Forgets the changes `done` committed, keeping any made since.
    pub fn clear_committed(&mut self, done: &PendingAttrs) {
        fn clear<T: PartialEq>(f: &mut Option<T>, d: &Option<T>) {
            if d.is_some() && *f == *d {
                *f = None;
            }
        }
        clear(&mut self.perm, &done.perm);
        clear(&mut self.uid, &done.uid);
        clear(&mut self.gid, &done.gid);
        clear(&mut self.atime, &done.atime);
        clear(&mut self.mtime, &done.mtime);
        clear(&mut self.ctime, &done.ctime);
    }
}

#[derive(Clone, Copy, Debug)]
enum Edit {
    Truncate(u64),
    /// Zero [off, off+len) (as a hole); optionally grow the size to `grow_to`.
    Zero {
        off: u64,
        len: u64,
        grow_to: Option<u64>,
    },
}
