//! `copy_file_range`: copies between files of one tree share the source's chunk
//! references instead of moving bytes (a reflink, what `cp --reflink=auto` and synthetic
//! full backups ask for); other copies go through the read and write paths.
//!
//! A clone is one commit: the destination range is made to consist of the source's
//! extents, shifted, with the edge extents trimmed to the range (an extent may reference
//! part of a chunk, so no edge bytes are copied), and every new extent record takes one
//! chunk reference, exactly as a flush's do. Source holes stay holes. Nothing is stored;
//! history, rollback, GC and stats see ordinary extent versions.
//!
//! Invariants: the source's buffered writes are committed before its extents are read
//! (the copy sees every write that returned before it); the destination's buffered bytes
//! inside the range are dropped under its flush lock, so a write that returned before the
//! copy is overwritten by it and one that comes after lands on top of it.

use super::*;
use crate::records::{ExtentRec, FileKind, EXTENT_TAIL};

impl FsCore {
    /// Copies `len` bytes from `node_in` at `off_in` to `node_out` at `off_out`; returns
    /// how many were copied (fewer when the source ends first).
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
        self.check_writable()?;
        off_out
            .checked_add(len)
            .filter(|&e| e <= super::data::MAX_FILE_SIZE)
            .ok_or(FsError::FileTooLarge)?;
        let (src, ino_in) = self.resolve_node(node_in)?;
        let (dst, ino_out) = self.resolve_node_mut(node_out)?;
        if len > 0 && src.view == dst.view && src.branch() == dst.branch() {
            return self.clone_range(&dst, ino_in, off_in, ino_out, off_out, len);
        }
        // Between trees (another container, a snapshot): the bytes move through the read
        // and write paths.
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

    /// Shares the source extents of `[off_in, off_in+len)` into the destination, in one
    /// commit on tree `ci` (both files are in it).
    fn clone_range(
        &self,
        ci: &Arc<ContainerInfo>,
        ino_in: Ino,
        off_in: u64,
        ino_out: Ino,
        off_out: u64,
        len: u64,
    ) -> FsResult<u64> {
        let rp = &ci.read_point;
        let src = self.inode(rp, ino_in)?;
        let dst = self.inode(rp, ino_out)?;
        for k in [src.kind, dst.kind] {
            match k {
                FileKind::RegularFile => {}
                FileKind::Directory => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid("copy_file_range of a special file")),
            }
        }
        // The source's buffered writes first, so that its extents are the whole truth.
        // (Before the destination's flush lock is taken: the two may be one file.)
        if let Some(k) = ci.buffer_key(ino_in) {
            self.flush_key(k, FlushMode::Force)?; // nothing to do without a file state
        }
        let f = self.file_state(ci, ino_out, dst.size);
        let r = self.clone_into(&f, ci, ino_in, off_in, off_out, len);
        if let Ok(n) = r {
            if n > 0 {
                self.data_committed(ci.view, ino_out);
            }
        }
        let key = f.key;
        drop(f);
        self.maybe_evict(key);
        r
    }

    fn clone_into(
        &self,
        f: &Arc<file_state::FileState>,
        ci: &ContainerInfo,
        ino_in: Ino,
        off_in: u64,
        off_out: u64,
        len: u64,
    ) -> FsResult<u64> {
        let _fl = f.flush_lock.lock();
        let ino_out = f.key.1;
        let rp = &ci.read_point;
        let max = self.store.chunker.params().max as u64;
        let copied = self.commit_in(ci, |c| {
            let src = self.txn_inode(c, rp, ino_in)?.ok_or(FsError::NotFound)?;
            let n = len.min(src.size.saturating_sub(off_in));
            if n == 0 {
                return Ok(0);
            }
            let (from, to) = (off_in, off_in + n);
            let exts =
                crate::extents::overlapping(&c.txn, rp, ino_in, src.data_gen, from, to, max)?;
            let new: Vec<rechunk::NewExtent> = exts
                .iter()
                .filter_map(|(o, e)| {
                    let end = o + e.len as u64;
                    let (s, t) = ((*o).max(from), end.min(to));
                    (s < t).then(|| rechunk::NewExtent {
                        off: s - from + off_out,
                        rec: ExtentRec {
                            len: (t - s) as u32,
                            chunk: e.chunk,
                            chunk_off: e.chunk_off + (s - o) as u32,
                            // A trimmed end was not cut at a content boundary: an append
                            // next to it re-chunks from its start, as after a file end.
                            flags: if t < end { EXTENT_TAIL } else { e.flags },
                        },
                    })
                })
                .collect();
            let mut rec = self.txn_inode(c, rp, ino_out)?.ok_or(FsError::NotFound)?;
            let old_size = rec.size;
            let mut deltas = HashMap::new();
            let (rm, add) = Self::replace_range(
                c,
                rp,
                ino_out,
                rec.data_gen,
                off_out,
                off_out + n,
                &new,
                &mut deltas,
                self,
            )?;
            // `data_bytes` only feeds st_blocks; it is kept as flushes keep it.
            rec.data_bytes = rec.data_bytes.saturating_sub(rm) + add;
            rec.size = rec.size.max(off_out + n);
            rec.mtime = c.file_time;
            rec.ctime = c.file_time;
            self.put_inode(c, rp, ino_out, Some(&rec));
            self.store.chunks.add_refs(c, ci.id(), &deltas)?;
            // What the application asked to be written, though no byte was copied.
            c.ingested(ci.id(), n);
            if rec.nlink > 0 {
                c.tree_delta(rp, 0, rec.size as i64 - old_size as i64);
            }
            Ok(n)
        })?;
        if copied > 0 {
            // Buffered bytes of the range are older than the copy: it replaces them. The
            // buffered size and times are brought level with what was committed.
            let mut g = f.inner.lock();
            let d = g.dirty.discard(off_out, off_out + copied);
            g.size = g.size.max(off_out + copied);
            g.attrs.mtime = None;
            g.attrs.ctime = None;
            drop(g);
            self.adjust_buffered(d);
        }
        Ok(copied)
    }
}
