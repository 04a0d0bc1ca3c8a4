//! A null FUSE filesystem for benchmarks: it accepts files and discards their bytes, with
//! the same kernel settings as dedupfs (writeback cache, 1 MiB writes, the same number of
//! worker threads). Its ingest rate and its metadata rates (a tree of names, kinds, modes,
//! times and links, in memory) are the FUSE ceiling dedupfs is measured against.
//!
//! Usage: nullfs MOUNTPOINT   (runs in the foreground until unmounted)

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TTL: Duration = Duration::from_secs(1);

/// What the null filesystem keeps of a node: enough for tar, cp -al, rsync, find and du to
/// run over it (names, kinds, sizes, modes, owners, times, links); no bytes.
#[derive(Clone)]
struct Node {
    kind: FileType,
    size: u64,
    perm: u16,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: SystemTime,
    target: Vec<u8>,
}

struct State {
    /// (parent, name) → node: a BTreeMap so that a directory's entries are one range.
    entries: BTreeMap<(u64, OsString), u64>,
    nodes: HashMap<u64, Node>,
    next: u64,
}

impl Default for State {
    fn default() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(1, Node::new(FileType::Directory, 0o777, 0, 0));
        State {
            entries: BTreeMap::new(),
            nodes,
            next: 1,
        }
    }
}

impl Node {
    fn new(kind: FileType, perm: u16, uid: u32, gid: u32) -> Node {
        Node {
            kind,
            size: 0,
            perm,
            uid,
            gid,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            mtime: SystemTime::now(),
            target: Vec::new(),
        }
    }
    fn attr(&self, ino: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: self.size,
            blocks: self.size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: UNIX_EPOCH,
            kind: self.kind,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

struct NullFs(Mutex<State>);

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl NullFs {
    /// Adds `n` as `name` in `p`; returns its number and attributes.
    fn insert(s: &mut State, p: INodeNo, name: &OsStr, n: Node) -> Result<FileAttr, Errno> {
        if s.entries.contains_key(&(p.0, name.to_os_string())) {
            return Err(Errno::EEXIST);
        }
        s.next += 1;
        let ino = s.next;
        if n.kind == FileType::Directory {
            if let Some(d) = s.nodes.get_mut(&p.0) {
                d.nlink += 1;
            }
        }
        s.entries.insert((p.0, name.to_os_string()), ino);
        let a = n.attr(ino);
        s.nodes.insert(ino, n);
        Ok(a)
    }
    fn add(&self, r: &Request, p: INodeNo, name: &OsStr, mut n: Node, reply: ReplyEntry) {
        (n.uid, n.gid) = (r.uid(), r.gid());
        match Self::insert(&mut self.0.lock().unwrap(), p, name, n) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
    fn remove(&self, p: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let mut s = self.0.lock().unwrap();
        let key = (p.0, name.to_os_string());
        let Some(&ino) = s.entries.get(&key) else {
            return reply.error(Errno::ENOENT);
        };
        let is_dir = s.nodes[&ino].kind == FileType::Directory;
        if dir != is_dir {
            return reply.error(if dir { Errno::ENOTDIR } else { Errno::EISDIR });
        }
        if dir
            && s.entries
                .range((ino, OsString::new())..)
                .next()
                .is_some_and(|(k, _)| k.0 == ino)
        {
            return reply.error(Errno::ENOTEMPTY);
        }
        s.entries.remove(&key);
        let n = s.nodes.get_mut(&ino).expect("entry without node");
        n.nlink = n.nlink.saturating_sub(if dir { 2 } else { 1 });
        if n.nlink == 0 {
            s.nodes.remove(&ino);
        }
        if dir {
            if let Some(d) = s.nodes.get_mut(&p.0) {
                d.nlink -= 1;
            }
        }
        reply.ok()
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
        match s.entries.get(&(p.0, name.to_os_string())) {
            Some(&ino) => reply.entry(&TTL, &s.nodes[&ino].attr(ino), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }
    fn getattr(&self, _r: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = self.0.lock().unwrap();
        match s.nodes.get(&ino.0) {
            Some(n) => reply.attr(&TTL, &n.attr(ino.0)),
            None => reply.error(Errno::ENOENT),
        }
    }
    fn setattr(
        &self,
        _r: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _a: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _c: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _cr: Option<SystemTime>,
        _ch: Option<SystemTime>,
        _b: Option<SystemTime>,
        _f: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.0.lock().unwrap();
        // The kernel flushes cached times of a file after its last unlink (syncfs): such
        // a node is gone here, and the flush succeeds, as on a real filesystem.
        let Some(n) = s.nodes.get_mut(&ino.0) else {
            return reply.attr(
                &TTL,
                &Node::new(FileType::RegularFile, 0o644, 0, 0).attr(ino.0),
            );
        };
        if let Some(sz) = size {
            n.size = sz;
        }
        if let Some(m) = mode {
            n.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = uid {
            n.uid = u;
        }
        if let Some(g) = gid {
            n.gid = g;
        }
        if let Some(t) = mtime {
            n.mtime = time(t);
        }
        reply.attr(&TTL, &n.attr(ino.0));
    }
    fn mkdir(
        &self,
        r: &Request,
        p: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let n = Node::new(FileType::Directory, (mode & !umask & 0o7777) as u16, 0, 0);
        self.add(r, p, name, n, reply)
    }
    fn symlink(&self, r: &Request, p: INodeNo, name: &OsStr, target: &Path, reply: ReplyEntry) {
        let mut n = Node::new(FileType::Symlink, 0o777, 0, 0);
        n.target = target.as_os_str().as_bytes().to_vec();
        n.size = n.target.len() as u64;
        self.add(r, p, name, n, reply)
    }
    fn readlink(&self, _r: &Request, ino: INodeNo, reply: ReplyData) {
        let s = self.0.lock().unwrap();
        match s.nodes.get(&ino.0) {
            Some(n) => reply.data(&n.target),
            None => reply.error(Errno::ENOENT),
        }
    }
    fn link(&self, _r: &Request, ino: INodeNo, p: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.0.lock().unwrap();
        let key = (p.0, name.to_os_string());
        if s.entries.contains_key(&key) {
            return reply.error(Errno::EEXIST);
        }
        let Some(n) = s.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        n.nlink += 1;
        let a = n.attr(ino.0);
        s.entries.insert(key, ino.0);
        reply.entry(&TTL, &a, Generation(0));
    }
    fn rename(
        &self,
        _r: &Request,
        p: INodeNo,
        name: &OsStr,
        np: INodeNo,
        nn: &OsStr,
        _fl: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.0.lock().unwrap();
        let Some(ino) = s.entries.remove(&(p.0, name.to_os_string())) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(old) = s.entries.insert((np.0, nn.to_os_string()), ino) {
            if let Some(n) = s.nodes.get_mut(&old) {
                n.nlink = n.nlink.saturating_sub(1);
                if n.nlink == 0 {
                    s.nodes.remove(&old);
                }
            }
        }
        reply.ok()
    }
    fn create(
        &self,
        r: &Request,
        p: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _f: i32,
        reply: ReplyCreate,
    ) {
        let n = Node::new(
            FileType::RegularFile,
            (mode & !umask & 0o7777) as u16,
            r.uid(),
            r.gid(),
        );
        match Self::insert(&mut self.0.lock().unwrap(), p, name, n) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
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
        if let Some(n) = s.nodes.get_mut(&ino.0) {
            n.size = n.size.max(off + data.len() as u64);
        }
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
    fn unlink(&self, _r: &Request, p: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(p, name, false, reply)
    }
    fn rmdir(&self, _r: &Request, p: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(p, name, true, reply)
    }
    fn readdir(
        &self,
        _r: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Offsets are positions in the directory's (sorted) entries, after "." and "..".
        let s = self.0.lock().unwrap();
        let mut pos = offset;
        if pos == 0 {
            pos = 1;
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
        }
        if pos == 1 {
            pos = 2;
            if reply.add(ino, 2, FileType::Directory, "..") {
                return reply.ok();
            }
        }
        let children = s
            .entries
            .range((ino.0, OsString::new())..)
            .take_while(|(k, _)| k.0 == ino.0)
            .skip((pos - 2) as usize);
        for (i, ((_, name), child)) in children.enumerate() {
            let kind = s.nodes[child].kind;
            if reply.add(INodeNo(*child), pos + 1 + i as u64, kind, name) {
                break;
            }
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
