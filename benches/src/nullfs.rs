//! A null FUSE filesystem for benchmarks: it accepts files and discards their bytes, with
//! the same kernel settings as dedupfs (writeback cache, 1 MiB writes, the same number of
//! worker threads). Its ingest rate is the FUSE ceiling dedupfs is measured against.
//!
//! Usage: nullfs MOUNTPOINT   (runs in the foreground until unmounted)

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    names: HashMap<OsString, u64>,
    sizes: HashMap<u64, u64>,
    next: u64,
}

struct NullFs(Mutex<State>);

fn attr(ino: u64, size: u64) -> FileAttr {
    let dir = ino == 1;
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o777 } else { 0o644 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for NullFs {
    fn init(&mut self, _r: &Request, c: &mut KernelConfig) -> std::io::Result<()> {
        let want =
            (InitFlags::FUSE_WRITEBACK_CACHE | InitFlags::FUSE_PARALLEL_DIROPS) & c.capabilities();
        let _ = c.add_capabilities(want);
        let _ = c.set_max_write(1 << 20);
        let _ = c
            .set_max_readahead(1 << 20)
            .or_else(|m| c.set_max_readahead(m));
        let _ = c.set_max_background(64);
        Ok(())
    }
    fn lookup(&self, _r: &Request, p: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = self.0.lock().unwrap();
        match (p.0, s.names.get(name)) {
            (1, Some(&ino)) => reply.entry(&TTL, &attr(ino, s.sizes[&ino]), Generation(0)),
            _ => reply.error(Errno::ENOENT),
        }
    }
    fn getattr(&self, _r: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = self.0.lock().unwrap();
        match ino.0 {
            1 => reply.attr(&TTL, &attr(1, 0)),
            i => match s.sizes.get(&i) {
                Some(&sz) => reply.attr(&TTL, &attr(i, sz)),
                None => reply.error(Errno::ENOENT),
            },
        }
    }
    fn setattr(
        &self,
        _r: &Request,
        ino: INodeNo,
        _m: Option<u32>,
        _u: Option<u32>,
        _g: Option<u32>,
        size: Option<u64>,
        _a: Option<TimeOrNow>,
        _mt: Option<TimeOrNow>,
        _c: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _cr: Option<SystemTime>,
        _ch: Option<SystemTime>,
        _b: Option<SystemTime>,
        _f: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.0.lock().unwrap();
        if let Some(sz) = size {
            s.sizes.insert(ino.0, sz);
        }
        let sz = s.sizes.get(&ino.0).copied().unwrap_or(0);
        reply.attr(&TTL, &attr(ino.0, sz));
    }
    fn create(
        &self,
        _r: &Request,
        p: INodeNo,
        name: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: ReplyCreate,
    ) {
        if p.0 != 1 {
            return reply.error(Errno::EPERM);
        }
        let mut s = self.0.lock().unwrap();
        s.next = s.next.max(1) + 1;
        let ino = s.next;
        s.names.insert(name.to_os_string(), ino);
        s.sizes.insert(ino, 0);
        reply.created(
            &TTL,
            &attr(ino, 0),
            Generation(0),
            FileHandle(0),
            FopenFlags::empty(),
        );
    }
    fn open(&self, _r: &Request, _i: INodeNo, _f: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }
    fn write(
        &self,
        _r: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        off: u64,
        data: &[u8],
        _wf: WriteFlags,
        _f: OpenFlags,
        _l: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.0.lock().unwrap();
        let e = s.sizes.entry(ino.0).or_insert(0);
        *e = (*e).max(off + data.len() as u64);
        reply.written(data.len() as u32);
    }
    fn read(
        &self,
        _r: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _o: u64,
        size: u32,
        _f: OpenFlags,
        _l: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply.data(&vec![0u8; size as usize]);
    }
    fn flush(&self, _r: &Request, _i: INodeNo, _fh: FileHandle, _l: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }
    fn fsync(&self, _r: &Request, _i: INodeNo, _fh: FileHandle, _d: bool, reply: ReplyEmpty) {
        reply.ok();
    }
    fn unlink(&self, _r: &Request, _p: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.0.lock().unwrap();
        match s.names.remove(name) {
            Some(i) => {
                s.sizes.remove(&i);
                reply.ok()
            }
            None => reply.error(Errno::ENOENT),
        }
    }
    fn readdir(
        &self,
        _r: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if offset == 0 {
            let _ = reply.add(INodeNo(1), 1, FileType::Directory, ".");
        }
        reply.ok();
    }
}

fn main() {
    let mnt = std::env::args_os()
        .nth(1)
        .expect("usage: nullfs MOUNTPOINT");
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        fuser::MountOption::FSName("nullfs".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    c.acl = fuser::SessionACL::All;
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    c.n_threads = Some((n * 2).clamp(4, 16));
    c.clone_fd = true;
    if let Err(e) = fuser::mount(NullFs(Mutex::new(State::default())), &mnt, &c) {
        eprintln!("nullfs: {e}");
        std::process::exit(1);
    }
}
