//! The FUSE request handlers: each translates a kernel request into a core call and the
//! core's result into the reply (core errors through the one errno mapping in `errno`, via
//! `adapter::err`; the adapter's own refusals via `adapter::fail`). No
//! filesystem logic lives here; the adapter's state and conversions are in `adapter`.

use crate::adapter::{caller_in_group, ctx, ctx_umask, err, fail, file_type, metered, set_time};
pub use crate::adapter::{AdapterOptions, DedupFuse, KnownNodes};
use dedupfs_core::fs::{self as core, Fallocate, FsError, SeekWhence, SetAttr};
use dedupfs_core::metrics;
use dedupfs_core::records::Timestamp;
use fuser::{
    AccessFlags, CopyFileRangeFlags, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

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
        if self.opts.readdirplus {
            // READDIRPLUS_AUTO: the kernel asks for attributes with the names only when it
            // sees them looked up after a listing (ls -l, du, rsync), READDIR otherwise.
            want |= InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
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
        // Taken out first so the hook runs without the slot's lock held.
        let hook = self.on_unmounted.lock().take();
        if let Some(h) = hook {
            h();
        }
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
        let _m = metered(const { metrics::op("forget") });
        self.known.forget(ino.0, nlookup);
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _m = metered(const { metrics::op("lookup") });
        self.entry(
            reply,
            self.fs
                .lookup(&ctx(req), self.core(parent), name.as_bytes()),
        )
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _m = metered(const { metrics::op("getattr") });
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
        let _m = metered(const { metrics::op("setattr") });
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
        let _m = metered(const { metrics::op("readlink") });
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
        let _m = metered(const { metrics::op("mknod") });
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
        let _m = metered(const { metrics::op("mkdir") });
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
        let _m = metered(const { metrics::op("unlink") });
        Self::empty(
            reply,
            self.fs
                .unlink(&ctx(req), self.core(parent), name.as_bytes()),
        )
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _m = metered(const { metrics::op("rmdir") });
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
        let _m = metered(const { metrics::op("symlink") });
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
        let _m = metered(const { metrics::op("rename") });
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(fail(libc::EINVAL));
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
        let _m = metered(const { metrics::op("link") });
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
        let _m = metered(const { metrics::op("open") });
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
        let _m = metered(const { metrics::op("read") });
        match self.fs.read(self.core(ino), fh.0, offset, size) {
            Ok(d) => {
                metrics::READ_BYTES.add(d.len() as u64);
                reply.data(&d)
            }
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
        let _m = metered(const { metrics::op("write") });
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Err(e) = self.drop_privileges(req, ino) {
                return reply.error(err(&e));
            }
        }
        match self.fs.write(self.core(ino), fh.0, offset, data) {
            Ok(n) => {
                metrics::WRITE_BYTES.add(n as u64);
                reply.written(n)
            }
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
        let _m = metered(const { metrics::op("flush") });
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
        let _m = metered(const { metrics::op("release") });
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
        let _m = metered(const { metrics::op("fsync") });
        Self::empty(reply, self.fs.fsync(self.core(ino), fh.0, datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _m = metered(const { metrics::op("opendir") });
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
        let _m = metered(const { metrics::op("readdir") });
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

    /// READDIR with each entry's attributes, so that `ls -l`, `du`, `find -size` and
    /// rsync's compare pass see names and attributes in one round trip per buffer instead
    /// of a LOOKUP per entry. Each entry other than `.` and `..` counts as a lookup to the
    /// kernel (it sends FORGET for it later), so it is counted as one here.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _m = metered(const { metrics::op("readdirplus") });
        let mut added = 0usize;
        let mut failed = None;
        // Entries of a virtual directory (bookmarks, snapshots) vanish without a notice to
        // the kernel: a listing must not leave them cached, so their names live for this
        // reply only and the next use of one is a LOOKUP, as after a plain READDIR.
        let dir = self.core(ino);
        let transient = self.fs.is_virtual_node(dir);
        let r = self.fs.readdir(dir, fh.0, offset, |e| {
            let a = match self.fs.getattr(e.node) {
                Ok(a) => a,
                // Removed since the listing was read: it is not listed.
                Err(FsError::NotFound) => return false,
                Err(err) => {
                    failed = Some(err);
                    return true;
                }
            };
            let (attr_ttl, entry_ttl) = self.ttls(e.node);
            let ttl = if transient {
                Duration::ZERO
            } else {
                attr_ttl.min(entry_ttl)
            };
            let full = reply.add(
                INodeNo(self.kernel(e.node)),
                e.offset,
                OsStr::from_bytes(&e.name),
                &ttl,
                &self.attr(&a),
                Generation(0),
            );
            if !full {
                added += 1;
                if e.name != b"." && e.name != b".." {
                    self.known.add(self.kernel(e.node));
                }
            }
            full
        });
        match (r, failed) {
            (Err(e), _) => reply.error(err(&e)),
            // What was read goes out; the next call meets the failure again and reports it.
            (Ok(()), Some(e)) if added == 0 => reply.error(err(&e)),
            (Ok(()), _) => reply.ok(),
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
        let _m = metered(const { metrics::op("releasedir") });
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
        let _m = metered(const { metrics::op("fsyncdir") });
        Self::empty(reply, self.fs.fsyncdir(self.core(ino)))
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _m = metered(const { metrics::op("statfs") });
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
        let _m = metered(const { metrics::op("setxattr") });
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
        let _m = metered(const { metrics::op("getxattr") });
        Self::xattr_reply(
            reply,
            size,
            self.fs.getxattr(self.core(ino), name.as_bytes()),
        )
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _m = metered(const { metrics::op("listxattr") });
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
        let _m = metered(const { metrics::op("removexattr") });
        Self::empty(reply, self.fs.removexattr(self.core(ino), name.as_bytes()))
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _m = metered(const { metrics::op("access") });
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
        let _m = metered(const { metrics::op("create") });
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
        let _m = metered(const { metrics::op("fallocate") });
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let rest = mode & !libc::FALLOC_FL_KEEP_SIZE;
        let m = match rest {
            0 => Fallocate::Allocate { keep_size: keep },
            libc::FALLOC_FL_PUNCH_HOLE if keep => Fallocate::PunchHole,
            libc::FALLOC_FL_ZERO_RANGE => Fallocate::ZeroRange { keep_size: keep },
            _ => return reply.error(fail(libc::EOPNOTSUPP)),
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
        let _m = metered(const { metrics::op("lseek") });
        let w = match whence {
            libc::SEEK_DATA => SeekWhence::Data,
            libc::SEEK_HOLE => SeekWhence::Hole,
            _ => return reply.error(fail(libc::EINVAL)),
        };
        if offset < 0 {
            return reply.error(fail(libc::ENXIO));
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
        let _m = metered(const { metrics::op("copy_file_range") });
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
