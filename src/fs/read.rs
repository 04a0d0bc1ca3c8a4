//! Reads of file data: the extents overlapping a range (the committed state) with the
//! file's buffered and in-flight bytes on top, and read-ahead for sequential readers.
//!
//! Invariant: a read returns exactly the bytes the file holds as its writers see it, or an
//! error (damaged data is EIO with a log line naming the file, never wrong bytes).

use super::dirty::overlay_spans;
use super::file_state::FileState;
use super::*;
use crate::records::{ExtentRec, FileKind};

pub(super) fn rd_err(node_desc: &str, e: FsError) -> FsError {
    if let FsError::Corrupt(m) = &e {
        log::error!("{node_desc}: {m}");
    }
    e
}

impl FsCore {
    /// Visible extents of a file overlapping [from, to).
    pub(super) fn extents_overlapping(
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

    pub(super) fn bytes_of_extents(
        &self,
        exts: &[(u64, ExtentRec)],
        off: u64,
        len: usize,
    ) -> FsResult<Vec<u8>> {
        Ok(crate::extents::bytes(&self.store.chunks, exts, off, len)?)
    }

    /// For a sequential reader, queues the chunks of the next window for decompression on
    /// the read-ahead threads, so that they are in the cache when the reader gets there.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn read_ahead(
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

    pub(super) fn fill_from_extents(
        &self,
        exts: &[(u64, ExtentRec)],
        off: u64,
        buf: &mut [u8],
    ) -> FsResult<()> {
        Ok(crate::extents::fill(&self.store.chunks, exts, off, buf)?)
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
        // The file's state serves read-ahead in any tree; its buffered bytes and size
        // only where the tree is the one they were written to.
        let f = self.files.lock().get(&key).cloned();
        let buffered = f.as_ref().filter(|_| ci.buffer_key(ino).is_some());
        let (fsize, dirty, inflight) = match buffered {
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
}
