//! The FUSE adapter's state and conversions: the `DedupFuse` value the session serves
//! (options, the nodes the kernel holds, the notifier, the unmount slots), node-id
//! translation for `container=` mounts, and core → kernel conversions of attributes,
//! kinds, errors and cache lifetimes, and the metering of each request (`Metered`: its
//! count, latency and errno, for the metrics endpoint). The request handlers are in `fuse`.
//!
//! Invariants: every node handed to the kernel in an entry (LOOKUP, CREATE, READDIRPLUS,
//! ...) is counted once in `KnownNodes`, and FORGET takes exactly what the kernel says;
//! every errno a handler replies with goes through [`err`] (core errors) or [`fail`] (the
//! adapter's own refusals), so the request's meter counts it.

use crate::errno::errno;
use dedupfs_core::fs::{Attr, Ctx, Fs, FsError, SetTime};
use dedupfs_core::metrics;
use dedupfs_core::records::{FileKind, Timestamp};
use fuser::{
    Errno, FileAttr, FileType, Generation, INodeNo, ReplyEmpty, ReplyEntry, ReplyXattr, Request,
    TimeOrNow,
};
use std::sync::Arc;
use std::time::Duration;

/// How long the kernel caches names and attributes outside containers' live trees
/// (snapshots, time travel, the virtual directories), which change without telling it.
pub(crate) const SHORT_TTL: Duration = Duration::from_secs(1);

/// Kernel-facing settings of a mount.
#[derive(Clone, Debug)]
pub struct AdapterOptions {
    /// Cache lifetimes of attributes and names in containers' live trees.
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    pub writeback_cache: bool,
    /// Offer READDIRPLUS to the kernel (adaptive mode).
    pub readdirplus: bool,
    pub max_write: u32,
    /// Mount one container as the root of the mount (`container=NAME`).
    pub root_container: Option<String>,
    /// Threads serving the session (SEEK_DATA/SEEK_HOLE need a free one, see `lseek`).
    pub threads: usize,
}

impl Default for AdapterOptions {
    fn default() -> Self {
        AdapterOptions {
            attr_ttl: crate::options::LIVE_TTL,
            entry_ttl: crate::options::LIVE_TTL,
            writeback_cache: true,
            readdirplus: true,
            root_container: None,
            max_write: 1 << 20,
            threads: 4,
        }
    }
}

/// The adapter. With `root_container`, the kernel's root (node 1) stands for that
/// container's root directory: node ids are translated on the way in (`core`) and out
/// (`kernel`); the container is looked up per request, so a rollback that gives it a new
/// tree is followed.
pub struct DedupFuse {
    pub(crate) fs: Arc<Fs>,
    pub(crate) opts: AdapterOptions,
    pub(crate) known: Arc<KnownNodes>,
    pub(crate) notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// Session threads blocked in `lseek` waiting for the kernel to write back.
    pub(crate) seeking: std::sync::atomic::AtomicUsize,
    /// What the final flush at `destroy` could not commit (for the unmount report).
    /// Lock order: a leaf.
    pub(crate) shutdown: Arc<parking_lot::Mutex<Option<String>>>,
    /// Run once at `destroy`, before the final flush: the kernel has let go of the mount
    /// (its device number may already be another mount's). Lock order: a leaf.
    pub(crate) on_unmounted: Arc<parking_lot::Mutex<Option<UnmountHook>>>,
}

/// What the daemon does the moment the kernel lets go of the mount.
pub type UnmountHook = Box<dyn FnOnce() + Send>;

/// The node ids the kernel holds (looked up and not yet forgotten), so that a rollback
/// can invalidate exactly the cached inodes of the container it changed.
#[derive(Default)]
pub struct KnownNodes {
    /// Lookup counts the kernel holds. Protects: the map. Lock order: a leaf.
    counts: parking_lot::Mutex<std::collections::HashMap<u64, u64>>,
}

impl KnownNodes {
    pub(crate) fn add(&self, node: u64) {
        *self.counts.lock().entry(node).or_default() += 1;
    }
    pub(crate) fn forget(&self, node: u64, n: u64) {
        let mut m = self.counts.lock();
        if let Some(c) = m.get_mut(&node) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                m.remove(&node);
            }
        }
    }
    pub(crate) fn contains(&self, node: u64) -> bool {
        self.counts.lock().contains_key(&node)
    }
    /// Known nodes of a view (a container's live tree, a snapshot).
    pub fn of_view(&self, view: u32) -> Vec<u64> {
        self.counts
            .lock()
            .keys()
            .copied()
            .filter(|n| n >> dedupfs_core::ids::Ino::BITS == view as u64)
            .collect()
    }
}

impl DedupFuse {
    pub fn new(fs: Arc<Fs>, opts: AdapterOptions) -> Self {
        let known = Arc::new(KnownNodes::default());
        let notifier: Arc<std::sync::OnceLock<fuser::Notifier>> = Arc::default();
        Self::drop_attrs_after_data_commits(&fs, known.clone(), notifier.clone());
        DedupFuse {
            fs,
            opts,
            known,
            notifier,
            seeking: Default::default(),
            shutdown: Arc::default(),
            on_unmounted: Arc::default(),
        }
    }

    /// A data commit changes a file's allocated blocks behind the kernel's back: its cached
    /// attributes are dropped (attributes only). From a thread of its own, so that the
    /// flush that committed never waits for the kernel (which may be evicting the inode
    /// through a request that waits for that flush's locks).
    pub(crate) fn drop_attrs_after_data_commits(
        fs: &Fs,
        known: Arc<KnownNodes>,
        notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let spawned = std::thread::Builder::new()
            .name("attr-inval".into())
            .spawn(move || {
                while let Ok(node) = rx.recv() {
                    if let (true, Some(n)) = (known.contains(node), notifier.get()) {
                        if let Err(e) = n.inval_inode(INodeNo(node), -1, 0) {
                            log::debug!("dropping cached attributes of {node}: {e}");
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => fs.on_data_committed(Box::new(move |node| {
                let _ = tx.send(node);
            })),
            Err(e) => log::warn!("no attribute invalidation thread ({e}); block counts may lag"),
        }
    }
    /// Where `destroy` leaves what its final flush could not commit.
    pub fn shutdown_slot(&self) -> Arc<parking_lot::Mutex<Option<String>>> {
        self.shutdown.clone()
    }
    /// Where the daemon puts what `destroy` runs first (see `on_unmounted`).
    pub fn unmount_hook_slot(&self) -> Arc<parking_lot::Mutex<Option<UnmountHook>>> {
        self.on_unmounted.clone()
    }
    pub fn known_nodes(&self) -> Arc<KnownNodes> {
        self.known.clone()
    }
    /// Where the daemon puts the session's notifier once the session exists.
    pub fn notifier_slot(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    /// With the writeback cache, data written through the page cache reaches us later, so
    /// SEEK_DATA/SEEK_HOLE would see it as a hole. Invalidating the file's pages from
    /// `offset` on makes the kernel write dirty ones back first (it launders them through
    /// FUSE_WRITE and waits), served by the other session threads while this one waits;
    /// so at least one thread is always left free, else the answer may miss unflushed data.
    pub(crate) fn write_back_from(&self, ino: INodeNo, offset: i64) {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(n) = self.notifier.get() else {
            return;
        };
        if !self.opts.writeback_cache {
            return;
        }
        if self.seeking.fetch_add(1, SeqCst) + 1 < self.opts.threads {
            if let Err(e) = n.inval_inode(ino, offset, 0) {
                log::debug!("write-back before lseek of {}: {e}", ino.0);
            }
        }
        self.seeking.fetch_sub(1, SeqCst);
    }

    /// Clears setuid/setgid after a data change by `req`'s caller; when the mode changed,
    /// the kernel's cached attributes are dropped.
    pub(crate) fn drop_privileges(&self, req: &Request, ino: INodeNo) -> Result<(), FsError> {
        let changed = self
            .fs
            .drop_privileges(self.core(ino), |gid| caller_in_group(req, gid))?;
        if changed {
            self.drop_cached_attrs(ino);
        }
        Ok(())
    }

    /// Makes the kernel forget its cached attributes of `ino` after we changed them on our
    /// own (offset -1: attributes only, no page-cache work and no inode lock, so it is safe
    /// inside a request).
    pub(crate) fn drop_cached_attrs(&self, ino: INodeNo) {
        if let Some(n) = self.notifier.get() {
            let _ = n.inval_inode(ino, -1, 0);
        }
    }

    pub(crate) fn root_node(&self) -> Option<u64> {
        self.opts
            .root_container
            .as_deref()
            .and_then(|c| self.fs.container_root_node(c))
    }

    /// A kernel node id as the core knows it.
    pub(crate) fn core(&self, ino: INodeNo) -> u64 {
        match ino.0 {
            1 => self.root_node().unwrap_or(1),
            n => n,
        }
    }

    /// A core node id as the kernel knows it.
    pub(crate) fn kernel(&self, node: u64) -> u64 {
        if node != 1 && Some(node) == self.root_node() {
            1
        } else {
            node
        }
    }

    pub(crate) fn attr(&self, a: &Attr) -> FileAttr {
        let mut f = file_attr(a);
        f.ino = INodeNo(self.kernel(a.node));
        f
    }
}

pub(crate) fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask: 0,
    }
}

/// For creations: with `FUSE_DONT_MASK` the kernel leaves the umask to us.
pub(crate) fn ctx_umask(req: &Request, umask: u32) -> Ctx {
    Ctx { umask, ..ctx(req) }
}

/// Whether the caller of `req` is a member of group `gid`: its primary group, or one of
/// its supplementary groups (from /proc, which the request does not carry). When /proc
/// cannot tell, the answer is "no", which only ever clears setgid.
pub(crate) fn caller_in_group(req: &Request, gid: u32) -> bool {
    if req.gid() == gid {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", req.pid())) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

pub(crate) fn err(e: &FsError) -> Errno {
    match e {
        FsError::Io(_) | FsError::Corrupt(_) => log::warn!("request failed: {e}"),
        _ => log::debug!("request failed: {e}"),
    }
    if let Some(k) = e.metric_kind() {
        metrics::count_error(k);
    }
    fail(errno(e))
}

/// The reply errno of a request that fails without a core error (an argument the adapter
/// refuses itself): counted for the request's [`Metered`] guard like any other.
pub(crate) fn fail(n: i32) -> Errno {
    REQUEST_ERRNO.set(Some(n));
    Errno::from_i32(n)
}

thread_local! {
    /// The errno the request this thread is serving failed with, for its [`Metered`]
    /// guard: a request is served start to finish on one thread, and `err` is the one
    /// place core errors become errnos.
    static REQUEST_ERRNO: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
}

/// Counts and times one FUSE request (`metrics::FUSE`) when dropped at the end of its
/// handler; an errno produced through [`err`] meanwhile counts as its failure.
pub(crate) struct Metered {
    op: usize,
    started: std::time::Instant,
}

pub(crate) fn metered(op: usize) -> Metered {
    REQUEST_ERRNO.set(None);
    Metered {
        op,
        started: std::time::Instant::now(),
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        let result = match REQUEST_ERRNO.take() {
            Some(n) => Err(n),
            None => Ok(()),
        };
        metrics::record(self.op, self.started.elapsed(), result);
    }
}

pub(crate) fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::Directory => FileType::Directory,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::RegularFile => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Socket => FileType::Socket,
    }
}

pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.node),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.to_system(),
        mtime: a.mtime.to_system(),
        ctime: a.ctime.to_system(),
        crtime: a.btime.to_system(),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: a.flags,
    }
}

pub(crate) fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(s) => SetTime::At(Timestamp::from_system(s)),
    }
}

impl DedupFuse {
    /// (attribute, entry) cache lifetimes for a core node: long in live trees, where the
    /// daemon tells the kernel of every change it does not make itself.
    pub(crate) fn ttls(&self, node: u64) -> (Duration, Duration) {
        if self.fs.is_live_tree_node(node) {
            (self.opts.attr_ttl, self.opts.entry_ttl)
        } else {
            (
                self.opts.attr_ttl.min(SHORT_TTL),
                self.opts.entry_ttl.min(SHORT_TTL),
            )
        }
    }

    pub(crate) fn entry(&self, reply: ReplyEntry, r: Result<Attr, FsError>) {
        match r {
            Ok(a) => {
                self.known.add(self.kernel(a.node));
                let (attr, entry) = self.ttls(a.node);
                reply.entry_with_ttls(&attr, &entry, &self.attr(&a), Generation(0))
            }
            Err(e) => reply.error(err(&e)),
        }
    }

    pub(crate) fn empty(reply: ReplyEmpty, r: Result<(), FsError>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(&e)),
        }
    }

    pub(crate) fn xattr_reply(reply: ReplyXattr, size: u32, data: Result<Vec<u8>, FsError>) {
        match data {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(fail(libc::ERANGE)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(err(&e)),
        }
    }
}
