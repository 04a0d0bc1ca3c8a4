//! The in-memory state of a file that is open or has buffered writes: its write buffer
//! (`DirtyMap`), the bytes in flight to a commit, its size as writers see it, attribute
//! changes waiting for the next commit, and its open count.
//!
//! Invariant: bytes being flushed stay readable (the in-flight overlay) until their
//! commit is visible; a failed flush puts them back under any newer writes.

use super::dirty::DirtyMap;
use super::*;
use crate::records::Timestamp;

#[derive(Debug, Default)]
pub(crate) struct FileInner {
    pub(super) size: u64,
    /// Attribute changes not yet committed (they go with the next flush).
    pub(super) attrs: PendingAttrs,
    pub(super) dirty: DirtyMap,
    pub(super) inflight: Vec<(u64, Arc<Vec<u8>>)>,
    pub(super) opens: u32,
    pub(super) dirty_since: Option<Instant>,
    pub(super) unlinked: bool,
    pub(super) error: Option<FsError>,
    /// Bytes applications wrote since a commit last took this figure (the container's
    /// ingest counter `written_bytes`; rewrites of buffered bytes count again, as they
    /// were sent again).
    pub(super) written: u64,
    /// End of the last read, and how far chunks have been read ahead.
    pub(super) last_read_end: u64,
    pub(super) read_ahead_until: u64,
}

/// In-memory state of a file that is open or has buffered writes.
pub(crate) struct FileState {
    pub key: FileKey,
    /// The view (tree) the file was opened in.
    pub view: u32,
    /// One flush, truncate or punch of this file at a time. Protects: the file's extents
    /// (their edits). Lock order: after the container's write barrier and the GC gate,
    /// before the commit lock; held across the chunking, the pack appends and the commit of
    /// a flush (that is what it serialises).
    pub(super) flush_lock: Mutex<()>,
    /// Buffered writes, size, pending attributes, opens. Protects: `FileInner`. Lock order:
    /// a leaf, except that the files map may be held while taking it.
    pub(super) inner: Mutex<FileInner>,
}

pub(crate) struct OverlayAttrs {
    pub size: u64,
    pub attrs: PendingAttrs,
    pub buffered: usize,
}

impl FileState {
    pub(super) fn new(key: FileKey, view: u32, size: u64) -> FileState {
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
