//! The FUSE adapter: translates kernel requests into core calls and core results into
//! replies. No filesystem logic lives here.

use crate::errno::errno;
use dedupfs_core::fs::{
    self as core, Attr, Ctx, Fallocate, Fs, FsError, SeekWhence, SetAttr, SetTime,
};
use dedupfs_core::records::{FileKind, Timestamp};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long the kernel caches names and attributes outside containers' live trees
/// (snapshots, time travel, the virtual directories), which change without telling it.
const SHORT_TTL: Duration = Duration::from_secs(1);

/// Kernel-facing settings of a mount.
#[derive(Clone, Debug)]
pub struct AdapterOptions {
    /// Cache lifetimes of attributes and names in containers' live trees.
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    pub writeback_cache: bool,
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
    fs: Arc<Fs>,
    opts: AdapterOptions,
    known: Arc<KnownNodes>,
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// Session threads blocked in `lseek` waiting for the kernel to write back.
    seeking: std::sync::atomic::AtomicUsize,
    /// What the final flush at `destroy` could not commit (for the unmount report).
    /// Lock order: a leaf.
    shutdown: Arc<parking_lot::Mutex<Option<String>>>,
}

/// The node ids the kernel holds (looked up and not yet forgotten), so that a rollback
/// can invalidate exactly the cached inodes of the container it changed.
#[derive(Default)]
pub struct KnownNodes {
    /// Lookup counts the kernel holds. Protects: the map. Lock order: a leaf.
    counts: parking_lot::Mutex<std::collections::HashMap<u64, u64>>,
}

impl KnownNodes {
    fn add(&self, node: u64) {
        *self.counts.lock().entry(node).or_default() += 1;
    }
    fn forget(&self, node: u64, n: u64) {
        let mut m = self.counts.lock();
        if let Some(c) = m.get_mut(&node) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                m.remove(&node);
            }
        }
    }
    fn contains(&self, node: u64) -> bool {
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
        }
    }

    /// A data commit changes a file's allocated blocks behind the kernel's back: its cached
    /// attributes are dropped (attributes only). From a thread of its own, so that the
    /// flush that committed never waits for the kernel (which may be evicting the inode
    /// through a request that waits for that flush's locks).
    fn drop_attrs_after_data_commits(
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
    fn write_back_from(&self, ino: INodeNo, offset: i64) {
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
    fn drop_privileges(&self, req: &Request, ino: INodeNo) -> Result<(), FsError> {
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
    fn drop_cached_attrs(&self, ino: INodeNo) {
        if let Some(n) = self.notifier.get() {
            let _ = n.inval_inode(ino, -1, 0);
        }
    }

    fn root_node(&self) -> Option<u64> {
        self.opts
            .root_container
            .as_deref()
            .and_then(|c| self.fs.container_root_node(c))
    }

    /// A kernel node id as the core knows it.
    fn core(&self, ino: INodeNo) -> u64 {
        match ino.0 {
            1 => self.root_node().unwrap_or(1),
            n => n,
        }
    }

    /// A core node id as the kernel knows it.
    fn kernel(&self, node: u64) -> u64 {
        if node != 1 && Some(node) == self.root_node() {
            1
        } else {
            node
        }
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        let mut f = file_attr(a);
        f.ino = INodeNo(self.kernel(a.node));
        f
    }
}

fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask: 0,
    }
}

/// For creations: with `FUSE_DONT_MASK` the kernel leaves the umask to us.
fn ctx_umask(req: &Request, umask: u32) -> Ctx {
    Ctx { umask, ..ctx(req) }
}

/// Whether the caller of `req` is a member of group `gid`: its primary group, or one of
/// its supplementary groups (from /proc, which the request does not carry). When /proc
/// cannot tell, the answer is "no", which only ever clears setgid.
fn caller_in_group(req: &Request, gid: u32) -> bool {
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

fn err(e: &FsError) -> Errno {
    match e {
        FsError::Io(_) | FsError::Corrupt(_) => log::warn!("request failed: {e}"),
        _ => log::debug!("request failed: {e}"),
    }
    Errno::from_i32(errno(e))
}

fn file_type(k: FileKind) -> FileType {
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

fn file_attr(a: &Attr) -> FileAttr {
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

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(s) => SetTime::At(Timestamp::from_system(s)),
    }
}

impl DedupFuse {
    /// (attribute, entry) cache lifetimes for a core node: long in live trees, where the
    /// daemon tells the kernel of every change it does not make itself.
    fn ttls(&self, node: u64) -> (Duration, Duration) {
        if self.fs.is_live_tree_node(node) {
            (self.opts.attr_ttl, self.opts.entry_ttl)
        } else {
            (
                self.opts.attr_ttl.min(SHORT_TTL),
                self.opts.entry_ttl.min(SHORT_TTL),
            )
        }
    }

    fn entry(&self, reply: ReplyEntry, r: Result<Attr, FsError>) {
        match r {
            Ok(a) => {
                self.known.add(self.kernel(a.node));
                let (attr, entry) = self.ttls(a.node);
                reply.entry_with_ttls(&attr, &entry, &self.attr(&a), Generation(0))
            }
            Err(e) => reply.error(err(&e)),
        }
    }

    fn empty(reply: ReplyEmpty, r: Result<(), FsError>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(&e)),
        }
    }

    fn xattr_reply(reply: ReplyXattr, size: u32, data: Result<Vec<u8>, FsError>) {
        match data {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(err(&e)),
        }
    }
}

impl Filesystem for DedupFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // HANDLE_KILLPRIV_V2: we clear setuid/setgid ourselves, so the kernel need not ask
        // for security.capability before every write (a request per write otherwise).
        // POSIX_ACL + DONT_MASK: the kernel enforces ACLs; default-ACL inheritance, the
        // umask and the mode/ACL coupling are ours (core `acl`).
        let mut want = InitFlags::FUSE_EXPORT_SUPPORT
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DONT_MASK;
        if self.opts.writeback_cache {
            want |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        let supported = config.capabilities() & want;
        if supported != want {
            log::warn!("kernel lacks FUSE capabilities {:?}", want - supported);
        }
        let _ = config.add_capabilities(supported);
        let _ = config.set_max_write(self.opts.max_write);
        let _ = config
            .set_max_readahead(1 << 20)
            .or_else(|max| config.set_max_readahead(max));
        let _ = config.set_max_background(64);
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.shutdown() {
            let lost = self.fs.unflushed();
            let msg = if lost.is_empty() {
                format!("the final flush failed: {e}")
            } else {
                format!(
                    "buffered writes of {} file(s) could not be committed ({e}): {}; each keeps \
                     the contents of its last commit",
                    lost.len(),
                    lost.join(", ")
                )
            };
            log::error!("at unmount: {msg}");
            *self.shutdown.lock() = Some(msg);
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.known.forget(ino.0, nlookup);
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(
            reply,
            self.fs
                .lookup(&ctx(req), self.core(parent), name.as_bytes()),
        )
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(self.core(ino)) {
            Ok(a) => reply.attr(&self.ttls(a.node).0, &self.attr(&a)),
            Err(e) => reply.error(err(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(Timestamp::from_system),
            flags: None,
        };
        match self.fs.setattr(&ctx(req), self.core(ino), set) {
            Ok(a) => reply.attr(&self.ttls(a.node).0, &self.attr(&a)),
            Err(e) => reply.error(err(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(self.core(ino)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(err(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            self.fs.mknod(
                &ctx_umask(req, umask),
                self.core(parent),
                name.as_bytes(),
                mode,
                rdev,
            ),
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            self.fs.mkdir(
                &ctx_umask(req, umask),
                self.core(parent),
                name.as_bytes(),
                mode,
            ),
        )
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(
            reply,
            self.fs
                .unlink(&ctx(req), self.core(parent), name.as_bytes()),
        )
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(
            reply,
            self.fs.rmdir(&ctx(req), self.core(parent), name.as_bytes()),
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            self.fs.symlink(
                &ctx(req),
                self.core(parent),
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
            ),
        )
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::from_i32(libc::EINVAL));
        }
        let f = core::RenameFlags {
            noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
        };
        Self::empty(
            reply,
            self.fs.rename(
                &ctx(req),
                self.core(parent),
                name.as_bytes(),
                self.core(newparent),
                newname.as_bytes(),
                f,
            ),
        )
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry(
            reply,
            self.fs.link(
                &ctx(req),
                self.core(ino),
                self.core(newparent),
                newname.as_bytes(),
            ),
        )
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let f = core::OpenFlags::from_libc(flags.0);
        match self.fs.open(&ctx(req), self.core(ino), f) {
            Ok(fh) => {
                // Reads from the page cache never reach us, so relatime is applied at open;
                // the kernel's cached atime must then be dropped (attributes only).
                if f.read && !f.write && self.fs.touch_atime(self.core(ino)) {
                    self.drop_cached_attrs(ino);
                }
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Err(e) => reply.error(err(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(self.core(ino), fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(err(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Err(e) = self.drop_privileges(req, ino) {
                return reply.error(err(&e));
            }
        }
        match self.fs.write(self.core(ino), fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.fs.flush(self.core(ino), fh.0))
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.fs.release(fh.0))
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.fs.fsync(self.core(ino), fh.0, datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(self.core(ino)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(err(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.fs.readdir(self.core(ino), fh.0, offset, |e| {
            reply.add(
                INodeNo(self.kernel(e.node)),
                e.offset,
                file_type(e.kind),
                OsStr::from_bytes(&e.name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(reply, self.fs.fsyncdir(self.core(ino)))
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(err(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let node = self.core(ino);
        // Setting an access ACL clears setgid unless the caller is privileged or in the
        // file's group (the kernel's rule; it would say so only with SETXATTR_EXT).
        let kill_sgid = name.as_bytes() == core::acl::ACCESS
            && req.uid() != 0
            && self
                .fs
                .getattr(node)
                .is_ok_and(|a| a.perm & 0o2000 != 0 && !caller_in_group(req, a.gid));
        Self::empty(
            reply,
            self.fs
                .setxattr_ext(node, name.as_bytes(), value, flags, kill_sgid),
        )
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        Self::xattr_reply(
            reply,
            size,
            self.fs.getxattr(self.core(ino), name.as_bytes()),
        )
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let list = self.fs.listxattr(self.core(ino)).map(|names| {
            let mut out = Vec::new();
            for n in names {
                out.extend_from_slice(&n);
                out.push(0);
            }
            out
        });
        Self::xattr_reply(reply, size, list)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(reply, self.fs.removexattr(self.core(ino), name.as_bytes()))
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are enforced by the kernel (default_permissions); only existence here.
        Self::empty(reply, self.fs.getattr(self.core(ino)).map(|_| ()))
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.fs.create(
            &ctx_umask(req, umask),
            self.core(parent),
            name.as_bytes(),
            mode,
            core::OpenFlags::from_libc(flags),
        ) {
            Ok((a, fh)) => {
                self.known.add(self.kernel(a.node));
                reply.created(
                    &self.ttls(a.node).1,
                    &self.attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE,
                )
            }
            Err(e) => reply.error(err(&e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let rest = mode & !libc::FALLOC_FL_KEEP_SIZE;
        let m = match rest {
            0 => Fallocate::Allocate { keep_size: keep },
            libc::FALLOC_FL_PUNCH_HOLE if keep => Fallocate::PunchHole,
            libc::FALLOC_FL_ZERO_RANGE => Fallocate::ZeroRange { keep_size: keep },
            _ => return reply.error(Errno::from_i32(libc::EOPNOTSUPP)),
        };
        // With HANDLE_KILLPRIV_V2 the kernel asks nothing of us for fallocate, yet a change
        // of the data by an unprivileged caller must clear setuid/setgid as a write does.
        if req.uid() != 0 {
            if let Err(e) = self.drop_privileges(req, ino) {
                return reply.error(err(&e));
            }
        }
        Self::empty(
            reply,
            self.fs.fallocate(self.core(ino), fh.0, offset, length, m),
        )
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let w = match whence {
            libc::SEEK_DATA => SeekWhence::Data,
            libc::SEEK_HOLE => SeekWhence::Hole,
            _ => return reply.error(Errno::from_i32(libc::EINVAL)),
        };
        if offset < 0 {
            return reply.error(Errno::from_i32(libc::ENXIO));
        }
        self.write_back_from(ino, offset);
        match self.fs.lseek(self.core(ino), fh.0, offset as u64, w) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(err(&e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let len = len.min(u32::MAX as u64 & !0xfff);
        match self.fs.copy_file_range(
            self.core(ino_in),
            fh_in.0,
            offset_in,
            self.core(ino_out),
            fh_out.0,
            offset_out,
            len,
        ) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(err(&e)),
        }
    }
}
