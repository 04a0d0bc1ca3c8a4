//! Flushes: buffered writes become chunks and one commit per file, and syncs make them
//! durable. A flush re-chunks only the affected region: the dirty bytes extended to the
//! neighbouring extent boundaries (and, for an append, back over a tail chunk that was cut
//! only because the file ended there), so unchanged chunks keep their identity.
//!
//! Invariants: at every version, the visible extents of a file are disjoint and lie below
//! its size; a failed flush puts its bytes back (under any newer writes) and latches the
//! error, which the next write, fsync or close of the file reports.

use super::file_state::{FileState, PendingAttrs};
use super::read::rd_err;
use super::rechunk;
use super::*;
use crate::chunks::NewChunk;
use crate::ids::ChunkId;
use crate::records::ExtentRec;

/// Spans shorter than this are not taken by a streaming flush (the tail stays buffered).
const STREAM_TAKE_DIVISOR: usize = 2;

impl FsCore {
    /// Commits the file's buffered writes (those of the handle's branch) and makes
    /// everything durable. A file whose tree moved away (a rollback) or went away fails
    /// with ESTALE: what was written through it since the last commit has no tree to go
    /// to, and an fsync must never acknowledge that.
    pub fn fsync(&self, node: u64, fh: u64, _datasync: bool) -> FsResult<()> {
        let current = self.resolve_node(node);
        let key = match (self.handle(fh), &current) {
            (Ok(Handle::File { key, .. }), _) => Some(key),
            (_, Ok((ci, ino))) => Some((ci.branch(), *ino)),
            _ => None,
        };
        if let Some(key) = key {
            if self.files.lock().contains_key(&key) {
                self.flush_key(key, FlushMode::Force)?;
            }
        }
        match current {
            Ok((ci, _)) if key.is_none_or(|k| k.0 == ci.branch()) => {}
            Ok(_) | Err(FsError::Stale) => return Err(FsError::Stale),
            Err(_) => {}
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

    /// Bytes of writes buffered and not yet committed (all files).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The files whose buffered writes are still not committed (after a failed flush):
    /// where each is, how much it holds, and the error that stopped it.
    pub fn unflushed(&self) -> Vec<String> {
        let files: Vec<Arc<FileState>> = self.files.lock().values().cloned().collect();
        let mut out = Vec::new();
        for f in files {
            let (bytes, err) = {
                let g = f.inner.lock();
                (g.dirty.bytes(), g.error.clone())
            };
            if bytes == 0 {
                continue;
            }
            let where_ = match self.tree(f.view) {
                Some(t) => {
                    let path = crate::tree::path_of(
                        &self.store,
                        &t.read_point,
                        t.root(),
                        f.key.1,
                        200_000,
                    )
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| format!("/(inode {})", f.key.1));
                    format!("{}{path}", t.rec.name)
                }
                None => format!("inode {} of a tree that is gone", f.key.1),
            };
            out.push(format!(
                "{where_} lost {bytes} bytes written since its last commit{}",
                err.map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
        out
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
        if let Ok(true) = r {
            // Outside the flush lock: the kernel may be evicting this inode, writing
            // back its times through a request that needs that lock.
            self.data_committed(f.view, key.1);
        }
        let r = r.map(|_| ());
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

    /// Returns whether anything was committed.
    pub(super) fn flush_file(&self, f: &Arc<FileState>, mode: FlushMode) -> FsResult<bool> {
        let _fl = f.flush_lock.lock();
        let Some(ci) = self.tree_of_file(f) else {
            // The container or snapshot is gone, or was rolled back under the file: its
            // pending writes have no tree to go to. They are dropped, and the failure is
            // latched on the file so that its fsync and close report it. (A rollback
            // commits what is buffered before it switches and holds writers back while it
            // does, so this only meets writes made through handles opened before a
            // delete or rollback, which fail with ESTALE.)
            let mut g = f.inner.lock();
            let lost = g.dirty.bytes();
            let d = g.dirty.discard(0, u64::MAX);
            g.attrs = PendingAttrs::default();
            g.dirty_since = None;
            drop(g);
            self.adjust_buffered(d);
            if lost > 0 {
                log::warn!(
                    "dropped {lost} buffered bytes of inode {} of a tree that was deleted or rolled back",
                    f.key.1
                );
                return Err(FsError::Stale);
            }
            return Ok(false);
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
                return Ok(false);
            }
            g.inflight = spans.into_iter().map(|(o, v)| (o, Arc::new(v))).collect();
            let written = std::mem::take(&mut g.written);
            (g.inflight.clone(), g.size, (g.attrs, written))
        };
        let (attrs, written) = attrs;
        let taken: usize = spans.iter().map(|(_, d)| d.len()).sum();
        let result = self.flush_spans(f, &ci, &spans, size, mode, attrs, written);
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
            } else {
                g.written += written;
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
        result.map(|_| true)
    }

    /// Chunks and commits `spans`; returns the bytes to keep buffered (undecided tails).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn flush_spans(
        &self,
        f: &FileState,
        ci: &ContainerInfo,
        spans: &[(u64, Arc<Vec<u8>>)],
        size: u64,
        mode: FlushMode,
        attrs: PendingAttrs,
        written: u64,
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
            // A prediction is only a hint, but an index entry that does not read is an
            // error of this flush, not a missed hint.
            let bad = std::cell::RefCell::new(None);
            let successor = |id: ChunkId| match self.store.chunks.successor(id) {
                Ok(s) => s,
                Err(e) => {
                    bad.borrow_mut().get_or_insert(e);
                    None
                }
            };
            built.push(rechunk::cut(
                chunker,
                hasher,
                &successor,
                s,
                parts,
                !streaming_tail,
                size,
            ));
            if let Some(e) = bad.into_inner() {
                return Err(e.into());
            }
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
        let res = self.commit_in(ci, |c| {
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
            self.store.chunks.add_refs(c, ci.id(), &deltas)?;
            c.ingested(ci.id(), written);
            if rec.nlink > 0 {
                c.tree_delta(rp, 0, rec.size as i64 - old_size as i64);
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
    pub(super) fn replace_range(
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
}
