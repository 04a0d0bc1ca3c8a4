//! The filesystem core: POSIX operations on node ids, with no kernel in sight.
//!
//! Owns the live trees of the containers as the mount shows them, open-file state and the
//! background work that turns buffered writes into chunks. The FUSE adapter calls these
//! methods one-to-one and maps [`FsError`] to errno; tests call them directly.
//!
//! Submodules: `namespace` (lookup, create, unlink, rename, link, readdir), `attrs`
//! (getattr, setattr, xattrs, statfs), `data` (open, write, truncate, fallocate, lseek),
//! `read`, `flush` (flush, fsync), `clone` (copy_file_range, reflinks), `dirty` (write
//! buffers).
//!
//! Concurrency: namespace changes run entirely under the commit lock (read, check, write
//! in one batch). File data is buffered per file and committed by flushes, which hold the
//! file's flush lock for their duration; truncate and fallocate take the same lock, so the
//! extents of a file are only ever edited by one party at a time. Lock order: flush lock,
//! then commit lock, then a file's state lock; the files map and handle table locks are
//! leaves.

pub mod acl;
mod attrs;
mod clone;
mod data;
pub mod dirty;
pub mod error;
mod file_state;
mod flush;
mod icache;
mod namespace;
mod read;
mod rechunk;
pub mod types;
mod views;

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod view_tests;

pub use error::{FsError, FsResult};
pub use types::*;

use crate::commit::Commit;
use crate::containers::{ContainerInfo, ROOT_BRANCH, ROOT_INO};
use crate::ids::ContainerId;
use crate::ids::{BranchId, Ino, Version};
use crate::kv::Cf;
use crate::mvcc::{self, ReadPoint};
use crate::records::{DirentRec, InodeRec};
use crate::store::Store;
use parking_lot::{ArcRwLockWriteGuard, Condvar, Mutex, RawRwLock, RwLock};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lowers a count kept in an inode (a directory's entries or links, a file's links or
/// extended attributes). A count that would go below zero means the records disagree: the
/// operation stops with [`FsError::Corrupt`] naming the inode and the count, rather than
/// writing a clamped value (a directory whose entry count wrongly reached zero could be
/// removed with entries still in it).
pub(crate) trait CountDown: Sized {
    fn less(self, what: &str, ino: Ino) -> FsResult<Self>;
}

macro_rules! count_down {
    ($($t:ty),*) => {$(
        impl CountDown for $t {
            fn less(self, what: &str, ino: Ino) -> FsResult<$t> {
                self.checked_sub(1).ok_or_else(|| {
                    FsError::Corrupt(format!(
                        "inode {ino}: its {what} would go below zero (the metadata records disagree; run `dedupfs fsck`)"
                    ))
                })
            }
        }
    )*};
}
count_down!(u32, u64);

/// Tuning of the filesystem core.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// Refuse every change (mount -o ro).
    pub read_only: bool,
    /// Buffered write bytes (all files) above which writers wait for flushes.
    pub dirty_limit: usize,
    /// A contiguous run of buffered bytes this long is chunked without waiting for close.
    pub stream_trigger: usize,
    /// Buffered data older than this is flushed even if the file stays open.
    pub flush_age: Duration,
    /// Committed metadata and pack data are made durable at least this often.
    pub sync_interval: Duration,
    /// Threads that flush buffered writes.
    pub flush_threads: usize,
    /// Threads a flush uses to compress new chunks.
    pub compress_threads: usize,
    /// Run the flush and sync threads (tests may drive flushes by hand).
    pub background: bool,
    /// When opening a file to read it moves its atime (see [`Atime`]).
    pub atime: Atime,
}

/// atime updates, as the mount options of the same names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Atime {
    /// Only when atime is not newer than mtime or ctime, or is a day old (Linux default).
    #[default]
    Relatime,
    /// On every read.
    Strict,
    /// Never.
    Off,
}

impl Default for FsOptions {
    fn default() -> Self {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        FsOptions {
            read_only: false,
            dirty_limit: 48 << 20,
            stream_trigger: 8 << 20,
            flush_age: Duration::from_secs(5),
            sync_interval: Duration::from_secs(5),
            flush_threads: n.max(2),
            compress_threads: n,
            background: true,
            atime: Atime::Relatime,
        }
    }
}

/// A file's identity in memory: its branch and inode.
pub(crate) type FileKey = (BranchId, Ino);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlushMode {
    /// Chunk only long runs, keeping the undecided tail buffered (a writer is streaming).
    Stream,
    /// Chunk and commit everything buffered.
    Force,
}

/// An open handle.
#[derive(Clone, Debug)]
pub(crate) enum Handle {
    File {
        key: FileKey,
        node: u64,
        flags: OpenFlags,
    },
    Dir {
        node: u64,
        cursor: Arc<Mutex<DirCursor>>,
    },
}

/// Where a directory listing continues: the cookies of recently delivered entries and
/// their keys, so that a listing resumes by seeking rather than rescanning. The kernel may
/// resume from any entry of its last reply (when the reader's buffer filled mid-reply).
#[derive(Debug, Default)]
pub(crate) struct DirCursor {
    pub recent: VecDeque<(u64, Vec<u8>)>,
}

impl DirCursor {
    const KEEP: usize = 1024;
    pub fn remember(&mut self, cookie: u64, suffix: &[u8]) {
        if self.recent.len() >= Self::KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back((cookie, suffix.to_vec()));
    }
    pub fn find(&self, cookie: u64) -> Option<&[u8]> {
        self.recent
            .iter()
            .rev()
            .find(|(c, _)| *c == cookie)
            .map(|(_, s)| s.as_slice())
    }
}

pub struct FsCore {
    pub(crate) store: Arc<Store>,
    pub(crate) opts: FsOptions,
    /// In-memory state of open or dirty files. Protects: the map (not the states, which
    /// have their own locks). Lock order: a leaf; a state's lock may be taken while it is
    /// held (to decide eviction), never the reverse.
    pub(crate) files: Mutex<HashMap<FileKey, Arc<file_state::FileState>>>,
    /// Open handles. Protects: the table. Lock order: a leaf.
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Bytes held by write buffers and in-flight flushes.
    pub(crate) buffered: AtomicUsize,
    /// Throttled writers wait on the condvar for `buffered` to fall. The mutex guards
    /// nothing but the wait. Lock order: a leaf (nothing else is held while waiting).
    pub(crate) space: (Mutex<()>, Condvar),
    /// Files waiting for a flusher thread. Protects: the queue. Lock order: a leaf.
    queue: Mutex<VecDeque<(FileKey, FlushMode)>>,
    queue_cv: Condvar,
    shutdown: AtomicBool,
    /// Wakes the ticker early at shutdown. The mutex guards nothing but the wait (leaf).
    tick: (Mutex<()>, Condvar),
    /// Set when a flush failed for lack of space; writers fail fast until a flush succeeds.
    pub(crate) out_of_space: AtomicBool,
    /// When the ticker last retried flushes while out of space (it backs off: each retry
    /// chunks and compresses the buffered data again, for nothing while the disk is full).
    /// Lock order: a leaf.
    nospace_retry: Mutex<Instant>,
    /// When the ticker last synced. Lock order: a leaf (released before the sync).
    last_sync: Mutex<Instant>,
    /// Recycled stream buffers for write buffering.
    pub(crate) pool: Arc<dirty::BufPool>,
    /// Committed inode records of live trees.
    icache: Arc<icache::InodeCache>,
    /// Decompresses chunks ahead of sequential readers (absent without background threads).
    pub(crate) readahead: Option<Arc<ReadAhead>>,
    /// Time-travel views opened in this mount. Protects: both maps. Lock order: before
    /// the registry slot (a view is built from the current registry while it is held).
    time_views: Mutex<TimeViews>,
    /// Per-container write barriers (see [`FsCore::quiesce`]). Protects: the map (the
    /// barriers are taken after it is released). Lock order of a barrier: before a file's
    /// flush lock and the commit lock (a rollback holds it exclusively across its flush and
    /// its commit; writers hold it shared only while they buffer).
    barriers: Mutex<HashMap<ContainerId, Arc<RwLock<()>>>>,
    /// Told the node of every file whose data a commit changed (a flush, a clone), after
    /// the commit: the mount drops the kernel's cached attributes (allocated blocks),
    /// which may then be cached for long. Set once by the mount.
    data_committed: std::sync::OnceLock<DataHook>,
}

/// See [`FsCore::on_data_committed`].
pub type DataHook = Box<dyn Fn(u64) + Send + Sync>;

/// Time-travel views of a mount: by view number (node ids) and by what they show.
#[derive(Default)]
pub(crate) struct TimeViews {
    by_view: HashMap<u32, TimeView>,
    by_point: HashMap<(crate::ids::ContainerId, crate::ids::BranchId, Version), u32>,
}

/// One time-travel view: the tree as of `version`, and the container's history floor it
/// was last known whole under (a prune moves the floor; the view is checked again then).
struct TimeView {
    ci: Arc<ContainerInfo>,
    version: Version,
    whole_under: u64,
}

/// A queue of chunks to load into the cache, served by background threads.
pub(crate) struct ReadAhead {
    /// Chunks to load. Protects: the queue. Lock order: a leaf.
    queue: Mutex<VecDeque<crate::ids::ChunkId>>,
    cv: Condvar,
    stop: AtomicBool,
}

impl ReadAhead {
    const MAX_QUEUED: usize = 1024;

    pub fn enqueue(&self, ids: impl Iterator<Item = crate::ids::ChunkId>) {
        let mut q = self.queue.lock();
        for id in ids {
            if q.len() >= Self::MAX_QUEUED {
                break;
            }
            q.push_back(id);
        }
        drop(q);
        self.cv.notify_all();
    }

    fn run(&self, store: &Store) {
        loop {
            let id = {
                let mut q = self.queue.lock();
                loop {
                    if self.stop.load(Ordering::Acquire) {
                        return;
                    }
                    if let Some(id) = q.pop_front() {
                        break id;
                    }
                    self.cv.wait_for(&mut q, Duration::from_millis(500));
                }
            };
            // Errors surface on the real read, with its context.
            let _ = store.chunks.read(id);
        }
    }
}

/// The filesystem: the core plus its background threads.
pub struct Fs {
    core: Arc<FsCore>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::ops::Deref for Fs {
    type Target = FsCore;
    fn deref(&self) -> &FsCore {
        &self.core
    }
}

/// What a node id resolves to.
pub(crate) enum Target {
    Root,
    Virtual(VirtualDir),
    Node(Arc<ContainerInfo>, Ino),
}

impl Fs {
    pub fn new(store: Arc<Store>, opts: FsOptions) -> Fs {
        let core = Arc::new(FsCore {
            store,
            opts: opts.clone(),
            files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            buffered: AtomicUsize::new(0),
            space: (Mutex::new(()), Condvar::new()),
            queue: Mutex::new(VecDeque::new()),
            queue_cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            tick: (Mutex::new(()), Condvar::new()),
            out_of_space: AtomicBool::new(false),
            nospace_retry: Mutex::new(Instant::now()),
            last_sync: Mutex::new(Instant::now()),
            pool: Arc::new(dirty::BufPool::new((opts.stream_trigger + (2 << 20)) * 3)),
            icache: Arc::new(icache::InodeCache::new(65536)),
            time_views: Mutex::new(TimeViews::default()),
            barriers: Mutex::new(HashMap::new()),
            data_committed: std::sync::OnceLock::new(),
            readahead: opts.background.then(|| {
                Arc::new(ReadAhead {
                    queue: Mutex::new(VecDeque::new()),
                    cv: Condvar::new(),
                    stop: AtomicBool::new(false),
                })
            }),
        });
        let mut threads = Vec::new();
        if opts.background {
            for i in 0..opts.flush_threads.max(1) {
                let c = core.clone();
                if let Ok(h) = std::thread::Builder::new()
                    .name(format!("flush-{i}"))
                    .spawn(move || c.flusher_loop())
                {
                    threads.push(h);
                }
            }
            let c = core.clone();
            if let Ok(h) = std::thread::Builder::new()
                .name("ticker".into())
                .spawn(move || c.ticker_loop())
            {
                threads.push(h);
            }
            if let Some(ra) = &core.readahead {
                for i in 0..opts.compress_threads.max(1) {
                    let (ra, store) = (ra.clone(), core.store.clone());
                    if let Ok(h) = std::thread::Builder::new()
                        .name(format!("readahead-{i}"))
                        .spawn(move || ra.run(&store))
                    {
                        threads.push(h);
                    }
                }
            }
        }
        Fs {
            core,
            threads: Mutex::new(threads),
        }
    }

    pub fn core(&self) -> &Arc<FsCore> {
        &self.core
    }

    /// Stops background work, flushes every buffered write and makes it durable.
    pub fn shutdown(&self) -> FsResult<()> {
        self.core.shutdown.store(true, Ordering::SeqCst);
        self.core.queue_cv.notify_all();
        self.core.tick.1.notify_all();
        if let Some(ra) = &self.core.readahead {
            ra.stop.store(true, Ordering::Release);
            ra.cv.notify_all();
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        self.core.flush_all()?;
        self.core.store.sync()?;
        Ok(())
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!("flushing at shutdown failed: {e}");
        }
    }
}

impl FsCore {
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Registers the hook told of data commits (the first registration wins).
    pub fn on_data_committed(&self, f: DataHook) {
        let _ = self.data_committed.set(f);
    }

    /// Tells the hook; called with no lock held (the kernel may answer the notification
    /// only after requests that need a file's locks).
    pub(crate) fn data_committed(&self, view: u32, ino: Ino) {
        if let Some(f) = self.data_committed.get() {
            f(NodeRef::Tree { view, ino }.encode());
        }
    }

    /// Whether `node` is in a container's live tree: there every change either comes
    /// through the kernel or is announced to it (rollback, apply, container deletion,
    /// data commits), so the kernel may cache its names and attributes for long.
    /// Snapshots, time travel and the virtual directories are not.
    pub fn is_live_tree_node(&self, node: u64) -> bool {
        match NodeRef::decode(node) {
            Some(NodeRef::Tree { view, .. }) if view < crate::containers::TIME_VIEW_BASE => self
                .store
                .registry()
                .view(view)
                .is_some_and(|t| t.snapshot.is_none() && !t.read_only),
            _ => false,
        }
    }

    /// Whether `node` is one of the virtual directories (`.at`, `.snapshots` and those
    /// under them), whose entries — bookmarks, snapshots, time views — come and go without
    /// the kernel being told.
    pub fn is_virtual_node(&self, node: u64) -> bool {
        matches!(NodeRef::decode(node), Some(NodeRef::Virtual(_)))
    }

    pub(crate) fn check_writable(&self) -> FsResult<()> {
        if self.opts.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    pub(crate) fn resolve(&self, node: u64) -> FsResult<Target> {
        match NodeRef::decode(node) {
            Some(NodeRef::Root) => Ok(Target::Root),
            Some(NodeRef::Virtual(v)) => Ok(Target::Virtual(v)),
            Some(NodeRef::Tree { view, ino }) => {
                let ci = self.tree(view).ok_or(FsError::Stale)?;
                Ok(Target::Node(ci, ino))
            }
            None => Err(FsError::Stale),
        }
    }

    /// The tree of a view number, if it still exists.
    pub(crate) fn tree(&self, view: u32) -> Option<Arc<ContainerInfo>> {
        if view >= crate::containers::TIME_VIEW_BASE {
            return self.time_view_checked(view);
        }
        self.store.registry().view(view)
    }

    /// A time view, if the moment it shows is still whole: a prune that cut it (a shell
    /// or an open file kept it in use) makes it stale rather than half read. Checked
    /// again only when the container's floor has moved since; that check reads the
    /// container's bookmarks, outside the views' lock.
    fn time_view_checked(&self, view: u32) -> Option<Arc<ContainerInfo>> {
        let (ci, v, whole_under) = {
            let tv = self.time_views.lock();
            let t = tv.by_view.get(&view)?;
            (t.ci.clone(), t.version, t.whole_under)
        };
        let cur = self.store.registry().get(ci.id())?;
        let floor = cur.rec.history_floor;
        if floor == whole_under || v.0 + 1 >= floor {
            return Some(ci);
        }
        let kept = cur.rec.kept_points.iter().any(|&(_, k)| k == v.0)
            || self
                .store
                .registry()
                .snapshots()
                .iter()
                .filter_map(|s| s.snapshot.as_ref())
                .any(|s| s.container == cur.rec.id && s.base_version == v.0)
            || crate::containers::bookmarks(&self.store, ci.id())
                .map(|b| b.iter().any(|b| b.version == v.0))
                .unwrap_or(false);
        if !kept {
            log::info!(
                "time travel: '{}' as of v{} was pruned while in use; it is stale now",
                cur.rec.name,
                v.0
            );
            return None;
        }
        if let Some(t) = self.time_views.lock().by_view.get_mut(&view) {
            t.whole_under = floor;
        }
        Some(ci)
    }

    /// Resolves a node inside a tree that may be changed.
    pub(crate) fn resolve_node_mut(&self, node: u64) -> FsResult<(Arc<ContainerInfo>, Ino)> {
        self.check_writable()?;
        let (ci, ino) = self.resolve_node(node)?;
        Self::check_tree_writable(&ci)?;
        Ok((ci, ino))
    }

    /// Commits a change to tree `ci`, first checking — under the commit lock, where every
    /// switch of a tree is published — that the tree is still what `ci` says: a rollback
    /// that moved the container to a new branch, or the deletion of the snapshot or the
    /// container, makes the change fail with ESTALE instead of landing on a branch nobody
    /// reads (where it would be acknowledged and lost).
    pub(crate) fn commit_in<R>(
        &self,
        ci: &ContainerInfo,
        f: impl FnOnce(&mut Commit<'_>) -> FsResult<R>,
    ) -> FsResult<R> {
        self.store.committer.commit(|c| {
            self.check_current(ci)?;
            f(c)
        })
    }

    /// [`Self::commit_in`] for a located node (the mount root needs no check).
    pub(crate) fn commit_located<R>(
        &self,
        l: &attrs::Located,
        f: impl FnOnce(&mut Commit<'_>) -> FsResult<R>,
    ) -> FsResult<R> {
        match &l.tree {
            Some(ci) => self.commit_in(ci, f),
            None => self.store.committer.commit(f),
        }
    }

    /// Whether `ci` is still the tree of its view (same branch).
    pub(crate) fn check_current(&self, ci: &ContainerInfo) -> FsResult<()> {
        match self.store.registry().view(ci.view) {
            Some(t) if t.branch() == ci.branch() => Ok(()),
            _ => Err(FsError::Stale),
        }
    }

    /// The write barrier of container `c`: writers that buffer data or attributes for one
    /// of its trees hold it shared, and an operation that switches the container's head
    /// (rollback) holds it exclusively from its flush to its switch, so no write can land
    /// in a buffer after the flush and before the switch (where neither the state kept by
    /// the rollback nor the new live tree would have it).
    fn barrier_of(&self, c: ContainerId) -> Arc<RwLock<()>> {
        self.barriers.lock().entry(c).or_default().clone()
    }

    /// Runs `f` (which buffers something for tree `ci`) under the container's barrier,
    /// after checking that `ci` is still current.
    pub(crate) fn under_barrier<R>(
        &self,
        ci: &ContainerInfo,
        f: impl FnOnce() -> R,
    ) -> FsResult<R> {
        let b = self.barrier_of(ci.id());
        let _shared = b.read();
        self.check_current(ci)?;
        Ok(f())
    }

    /// Holds writers of container `c` back until the guard is dropped (see
    /// [`Self::barrier_of`]); the caller flushes, then switches.
    pub fn quiesce(&self, c: ContainerId) -> ArcRwLockWriteGuard<RawRwLock, ()> {
        self.barrier_of(c).write_arc()
    }

    pub(crate) fn check_tree_writable(ci: &ContainerInfo) -> FsResult<()> {
        if ci.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// A read-only view of a container as of version `v`, with a node-id view number that
    /// lasts as long as this mount.
    pub fn time_view(&self, ci: &ContainerInfo, v: Version) -> FsResult<Arc<ContainerInfo>> {
        self.time_view_on(ci, ci.rec.branch_at(v), v)
    }

    /// Like [`Self::time_view`], on a named branch (a bookmark names the branch it is on).
    pub fn time_view_on(
        &self,
        ci: &ContainerInfo,
        branch: crate::ids::BranchId,
        v: Version,
    ) -> FsResult<Arc<ContainerInfo>> {
        let mut tv = self.time_views.lock();
        let key = (ci.id(), branch, v);
        if let Some(t) = tv.by_point.get(&key).and_then(|view| tv.by_view.get(view)) {
            return Ok(t.ci.clone());
        }
        let n = crate::containers::TIME_VIEW_BASE as usize + tv.by_view.len();
        if n >= crate::containers::VIEW_LIMIT as usize {
            return Err(FsError::Invalid("too many time-travel views in this mount"));
        }
        let view = n as u32;
        let t = Arc::new(ci.as_of_on(&self.store.registry(), branch, v, view));
        tv.by_view.insert(
            view,
            TimeView {
                ci: t.clone(),
                version: v,
                whole_under: ci.rec.history_floor,
            },
        );
        tv.by_point.insert(key, view);
        Ok(t)
    }

    /// Resolves a node that must be inside a container.
    pub(crate) fn resolve_node(&self, node: u64) -> FsResult<(Arc<ContainerInfo>, Ino)> {
        match self.resolve(node)? {
            Target::Node(ci, ino) => Ok((ci, ino)),
            Target::Root => Err(FsError::NotPermitted(
                "the mount root holds only containers",
            )),
            Target::Virtual(_) => Err(FsError::ReadOnly),
        }
    }

    pub(crate) fn node_of(ci: &ContainerInfo, ino: Ino) -> u64 {
        NodeRef::Tree { view: ci.view, ino }.encode()
    }

    pub(crate) fn root_read_point() -> ReadPoint {
        ReadPoint::single(ROOT_BRANCH, Version::LATEST)
    }

    /// The committed inode record (no buffered-write overlay).
    pub(crate) fn inode(&self, rp: &ReadPoint, ino: Ino) -> FsResult<InodeRec> {
        if rp.levels[0].1 == Version::LATEST {
            if let Some(hit) = self.icache.get(&(rp.branch(), ino)) {
                return hit.ok_or(FsError::NotFound);
            }
        }
        let raw = mvcc::get_live(&**self.store.kv(), Cf::Inodes, rp, ino, &[])?
            .ok_or(FsError::NotFound)?;
        Ok(InodeRec::decode(&raw)?)
    }

    /// An inode as a commit sees it: its own pending write, else the committed record.
    pub(crate) fn txn_inode(
        &self,
        c: &Commit<'_>,
        rp: &ReadPoint,
        ino: Ino,
    ) -> FsResult<Option<InodeRec>> {
        let key = mvcc::version_key(rp.branch(), ino, &[], c.version);
        if c.txn.pending(Cf::Inodes, &key).is_none() && rp.levels[0].1 == Version::LATEST {
            if let Some(hit) = self.icache.get(&(rp.branch(), ino)) {
                return Ok(hit);
            }
        }
        match mvcc::txn_get_live(&c.txn, Cf::Inodes, rp, ino, &[], c.version)? {
            Some(raw) => Ok(Some(InodeRec::decode(&raw)?)),
            None => Ok(None),
        }
    }

    /// Writes an inode record (or deletes it) in a commit, and the cache once committed.
    pub(crate) fn put_inode(
        &self,
        c: &mut Commit<'_>,
        rp: &ReadPoint,
        ino: Ino,
        rec: Option<&InodeRec>,
    ) {
        let v = c.version;
        let enc = rec.map(|r| r.encode());
        mvcc::put(&mut c.txn, Cf::Inodes, rp, ino, &[], v, enc.as_deref());
        let key = (rp.branch(), ino);
        let rec = rec.cloned();
        let cache = self.icache.clone();
        c.after_commit(move || cache.put(key, rec));
    }

    pub(crate) fn txn_dirent(
        c: &Commit<'_>,
        rp: &ReadPoint,
        dir: Ino,
        name: &[u8],
    ) -> FsResult<Option<DirentRec>> {
        let suffix = crate::keys::name_suffix(name);
        match mvcc::txn_get_live(&c.txn, Cf::Dirents, rp, dir, &suffix, c.version)? {
            Some(raw) => Ok(Some(DirentRec::decode(&raw)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn put_dirent(
        c: &mut Commit<'_>,
        rp: &ReadPoint,
        dir: Ino,
        name: &[u8],
        d: Option<&DirentRec>,
    ) {
        let v = c.version;
        let suffix = crate::keys::name_suffix(name);
        let enc = d.map(|d| d.encode());
        mvcc::put(&mut c.txn, Cf::Dirents, rp, dir, &suffix, v, enc.as_deref());
    }

    fn new_fh(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, h);
        fh
    }

    pub(crate) fn handle(&self, fh: u64) -> FsResult<Handle> {
        self.handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    fn drop_handle(&self, fh: u64) -> Option<Handle> {
        self.handles.lock().remove(&fh)
    }

    /// The node of a container's root directory (for mounting one container as the root).
    pub fn container_root_node(&self, name: &str) -> Option<u64> {
        let ci = self.store.registry().by_name(name)?;
        Some(Self::node_of(&ci, ci.root()))
    }

    /// Node ids with open handles in a view.
    pub fn open_nodes_in(&self, view: u32) -> Vec<u64> {
        self.handles
            .lock()
            .values()
            .map(|h| match h {
                Handle::File { node, .. } | Handle::Dir { node, .. } => *node,
            })
            .filter(
                |n| matches!(NodeRef::decode(*n), Some(NodeRef::Tree { view: v, .. }) if v == view),
            )
            .collect()
    }

    /// Number of open handles in a container (a container with open files cannot be deleted).
    pub fn open_handles_in(&self, c: crate::ids::ContainerId) -> usize {
        self.handles
            .lock()
            .values()
            .filter(|h| {
                let node = match h {
                    Handle::File { node, .. } | Handle::Dir { node, .. } => *node,
                };
                matches!(NodeRef::decode(node), Some(NodeRef::Tree { view, .. }) if view == c.0)
            })
            .count()
    }

    pub(crate) fn enqueue(&self, key: FileKey, mode: FlushMode) {
        let mut q = self.queue.lock();
        if !q
            .iter()
            .any(|(k, m)| *k == key && (*m == mode || *m == FlushMode::Force))
        {
            q.push_back((key, mode));
        }
        drop(q);
        self.queue_cv.notify_one();
    }

    fn flusher_loop(self: Arc<Self>) {
        loop {
            let job = {
                let mut q = self.queue.lock();
                loop {
                    if let Some(j) = q.pop_front() {
                        break Some(j);
                    }
                    if self.shutdown.load(Ordering::SeqCst) {
                        break None;
                    }
                    self.queue_cv.wait_for(&mut q, Duration::from_millis(500));
                }
            };
            let Some((key, mode)) = job else { return };
            // Failures are latched on the file and reported to its next fsync or close.
            let _ = self.flush_key(key, mode);
        }
    }

    fn ticker_loop(self: Arc<Self>) {
        const NOSPACE_RETRY: Duration = Duration::from_secs(5);
        let tick = Duration::from_millis(250)
            .min(self.opts.flush_age / 2)
            .max(Duration::from_millis(10));
        while !self.shutdown.load(Ordering::SeqCst) {
            {
                let mut g = self.tick.0.lock();
                self.tick.1.wait_for(&mut g, tick);
            }
            let now = Instant::now();
            let back_off = self.out_of_space.load(Ordering::Acquire) && {
                let mut last = self.nospace_retry.lock();
                let wait = now.duration_since(*last) < NOSPACE_RETRY;
                if !wait {
                    *last = now;
                }
                wait
            };
            let old: Vec<FileKey> = if back_off {
                Vec::new()
            } else {
                self.files
                    .lock()
                    .iter()
                    .filter(|(_, f)| {
                        f.dirty_since()
                            .is_some_and(|t| now.duration_since(t) >= self.opts.flush_age)
                    })
                    .map(|(k, _)| *k)
                    .collect()
            };
            for k in old {
                self.enqueue(k, FlushMode::Force);
            }
            let due = self.last_sync.lock().elapsed() >= self.opts.sync_interval;
            if due {
                if let Err(e) = self.store.sync() {
                    log::error!("periodic sync failed: {e}");
                }
                *self.last_sync.lock() = Instant::now();
            }
        }
    }
}
