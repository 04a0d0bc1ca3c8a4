//! File data: open and close, buffered writes, truncate, fallocate, `lseek` for data and
//! holes. Reads are in `read`, flushes in `flush`, copies between files in `clone`, the
//! state of open and dirty files in `file_state`.
//!
//! A write lands in the file's [`DirtyMap`]; it becomes chunks when a flush runs (a long
//! contiguous run while the writer streams, everything at fsync, close, age or memory
//! pressure).
//!
//! Invariant: truncate, fallocate and clones edit extents under the file's flush lock, as
//! flushes do, so a file's extents are edited by one party at a time.

use super::file_state::FileState;
use super::*;
use crate::records::{FileKind, Timestamp};

/// Largest file size (the kernel's limit for FUSE files is also 2^63-1).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

impl FsCore {
    /// The tree a file's writes go to, if it still exists and still writes to the
    /// file's branch (a rollback moves a container to a new branch).
    pub(super) fn tree_of_file(&self, f: &FileState) -> Option<Arc<ContainerInfo>> {
        self.tree(f.view).filter(|ci| ci.branch() == f.key.0)
    }

    pub(super) fn file_state(&self, ci: &ContainerInfo, ino: Ino, size: u64) -> Arc<FileState> {
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
    pub(super) fn maybe_evict(&self, key: FileKey) {
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

    pub(super) fn adjust_buffered(&self, delta: isize) {
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

    pub(super) fn release_state(&self, key: FileKey) -> FsResult<()> {
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
                self.commit_in(&ci, |c| {
                    if let Some(rec) = self.txn_inode(c, &ci.read_point, ino)? {
                        if rec.nlink == 0 {
                            self.put_inode(c, &ci.read_point, ino, None);
                        }
                    }
                    c.txn.delete(Cf::Orphans, crate::keys::orphan(branch, ino));
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
        if let Some(why) = self.store.committer.halted() {
            return Err(FsError::Io(format!("the store takes no writes: {why}")));
        }
        // A handle opened before a rollback writes to a branch that is no longer the tree's.
        let tree = match NodeRef::decode(node) {
            Some(NodeRef::Tree { view, .. }) => self
                .tree(view)
                .filter(|t| t.branch() == key.0)
                .ok_or(FsError::Stale)?,
            _ => return Err(FsError::Stale),
        };
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
        let now = Timestamp::now_coarse();
        let (delta, span) = self.under_barrier(&tree, || {
            let mut g = f.inner.lock();
            if let Some(e) = g.error.clone() {
                return Err(e);
            }
            let d = g.dirty.write(off, data);
            g.written += data.len() as u64;
            g.size = g.size.max(end);
            g.attrs.mtime = Some(now);
            g.attrs.ctime = Some(now);
            g.dirty_since.get_or_insert_with(Instant::now);
            Ok((d, g.dirty.run_len_at(off)))
        })??;
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
    pub(super) fn throttle(&self, key: FileKey) -> FsResult<()> {
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
        self.commit_in(ci, |c| {
            let mut rec = self.txn_inode(c, rp, ino)?.ok_or(FsError::NotFound)?;
            let old_size = rec.size;
            let now = c.file_time;
            let mut deltas = HashMap::new();
            match edit {
                Edit::Truncate(0) => {
                    // Never a generation the file had: a replica keeps its source's
                    // generation numbers, which this store's versions may reach later.
                    rec.data_gen = c.version.0.max(rec.data_gen + 1);
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
            self.store.chunks.add_refs(c, ci.id(), &deltas)?;
            if rec.nlink > 0 {
                c.tree_delta(rp, 0, rec.size as i64 - old_size as i64);
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
        let key = ci.buffer_key(ino);
        if let Some(k) = key.filter(|k| self.files.lock().contains_key(k)) {
            self.flush_key(k, FlushMode::Force)?;
        }
        let rec = self.inode(&ci.read_point, ino)?;
        let size = key
            .and_then(|k| self.files.lock().get(&k).map(|f| f.inner.lock().size))
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
