//! Attributes: `getattr`, `setattr`, extended attributes and `statfs`.
//!
//! Permission checks are the kernel's (the mount always uses `default_permissions`); this
//! module stores what it is told. A size change is a truncate and goes through the data
//! path; every other field changes in one commit that also sets `ctime`.

use super::*;
use crate::records::{FileKind, Timestamp};
use std::ops::ControlFlow;

/// The mode bits left after a write, truncate or owner change that drops privileges:
/// setuid always goes; setgid only with group-execute (setgid without it marks mandatory
/// locking and stays), as the Linux VFS does.
pub(crate) fn kill_suid_sgid(perm: u16) -> u16 {
    let mut p = perm & !0o4000;
    if p & 0o010 != 0 {
        p &= !0o2000;
    }
    p
}

const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_SIZE_MAX: usize = 65536;

/// Where a node's records live.
pub(crate) struct Located {
    pub rp: ReadPoint,
    pub ino: Ino,
    pub key: Option<FileKey>,
    pub read_only: bool,
    /// The tree the node is in (`None`: the mount root or a virtual directory).
    pub tree: Option<Arc<ContainerInfo>>,
}

impl FsCore {
    /// Locates a node whose attributes are about to change.
    pub(crate) fn locate_mut(&self, node: u64) -> FsResult<Located> {
        self.check_writable()?;
        let l = self.locate(node)?;
        if l.read_only {
            return Err(FsError::ReadOnly);
        }
        Ok(l)
    }

    pub(crate) fn locate(&self, node: u64) -> FsResult<Located> {
        match self.resolve(node)? {
            Target::Root => Ok(Located {
                rp: Self::root_read_point(),
                ino: ROOT_INO,
                key: None,
                read_only: false,
                tree: None,
            }),
            // Virtual directories have the mount root's (empty) xattrs and never change.
            Target::Virtual(_) => Ok(Located {
                rp: Self::root_read_point(),
                ino: ROOT_INO,
                key: None,
                read_only: true,
                tree: None,
            }),
            Target::Node(ci, ino) => Ok(Located {
                rp: ci.read_point.clone(),
                ino,
                key: ci.buffer_key(ino),
                read_only: ci.read_only,
                tree: Some(ci),
            }),
        }
    }

    pub fn getattr(&self, node: u64) -> FsResult<Attr> {
        if let Some(NodeRef::Virtual(v)) = NodeRef::decode(node) {
            return self.virtual_attr(v);
        }
        let l = self.locate(node)?;
        let rec = self.inode(&l.rp, l.ino)?;
        let mut a = self.attr_of(node, l.key, &rec);
        if node == ROOT_NODE {
            a.nlink = a.nlink.max(2);
        }
        Ok(a)
    }

    pub fn setattr(&self, ctx: &Ctx, node: u64, set: SetAttr) -> FsResult<Attr> {
        let times_only = SetAttr {
            atime: None,
            mtime: None,
            ctime: None,
            ..set
        } == SetAttr::default();
        match self.set_attrs(ctx, node, set) {
            // The kernel writes back the cached times of a file after the file is gone
            // (its last unlink and close came first; `syncfs` flushes them): there is
            // nothing left to stamp, and failing would fail the caller's sync.
            Err(FsError::NotFound) if times_only => Ok(Attr {
                node,
                kind: FileKind::RegularFile,
                perm: 0,
                nlink: 0,
                uid: 0,
                gid: 0,
                size: 0,
                blocks: 0,
                atime: Timestamp::default(),
                mtime: Timestamp::default(),
                ctime: Timestamp::default(),
                btime: Timestamp::default(),
                rdev: 0,
                blksize: 4096,
                flags: 0,
            }),
            r => r,
        }
    }

    fn set_attrs(&self, ctx: &Ctx, node: u64, set: SetAttr) -> FsResult<Attr> {
        self.check_writable()?;
        let l = self.locate_mut(node)?;
        let mut set = set;
        // The kernel leaves clearing setuid/setgid to us (FUSE_HANDLE_KILLPRIV_V2): on a
        // change of owner of a non-directory, and on truncation by an unprivileged caller.
        if set.mode.is_none() {
            let cur = self.getattr(node)?;
            let chown = (set.uid.is_some() || set.gid.is_some()) && cur.kind != FileKind::Directory;
            let trunc = set.size.is_some() && ctx.uid != 0;
            if chown || trunc {
                let killed = kill_suid_sgid(cur.perm);
                if killed != cur.perm {
                    set.mode = Some(killed as u32);
                }
            }
        }
        if let Some(size) = set.size {
            self.truncate(node, size)?;
        }
        let others = SetAttr { size: None, ..set };
        if others != SetAttr::default() && others.flags.is_none() {
            // A file with uncommitted writes takes attribute changes with them (tar sets
            // times, owner and mode right after writing each file), except a mode change
            // of a file with an access ACL: that rewrites the ACL in the same commit.
            let f = l.key.and_then(|k| self.files.lock().get(&k).cloned());
            if let (Some(f), Some(tree)) = (
                f.filter(|_| others.mode.is_none() || self.getxattr(node, acl::ACCESS).is_err()),
                &l.tree,
            ) {
                let now = crate::records::Timestamp::now_coarse();
                if self.under_barrier(tree, || f.buffer_attrs(&others, now))? {
                    return self.getattr(node);
                }
            }
        }
        if others != SetAttr::default() {
            self.commit_located(&l, |c| {
                let mut rec = self.txn_inode(c, &l.rp, l.ino)?.ok_or(FsError::NotFound)?;
                let now = c.file_time;
                if let Some(mode) = set.mode {
                    rec.perm = (mode & 0o7777) as u16;
                    if rec.xattrs > 0 {
                        if let Some(v) = Self::txn_xattr(c, &l.rp, l.ino, acl::ACCESS)? {
                            let mut a = acl::Acl::parse(&v)?;
                            a.chmod(rec.perm);
                            Self::put_xattr(c, &l.rp, l.ino, acl::ACCESS, Some(&a.encode()));
                        }
                    }
                }
                if let Some(uid) = set.uid {
                    rec.uid = uid;
                }
                if let Some(gid) = set.gid {
                    rec.gid = gid;
                }
                match set.atime {
                    Some(SetTime::Now) => rec.atime = now,
                    Some(SetTime::At(t)) => rec.atime = t,
                    None => {}
                }
                match set.mtime {
                    Some(SetTime::Now) => rec.mtime = now,
                    Some(SetTime::At(t)) => rec.mtime = t,
                    None => {}
                }
                if let Some(f) = set.flags {
                    rec.flags = f;
                }
                rec.ctime = set.ctime.unwrap_or(now);
                self.put_inode(c, &l.rp, l.ino, Some(&rec));
                Ok::<_, FsError>(())
            })?;
        }
        self.getattr(node)
    }

    /// atime for a regular file being opened to read: with relatime it moves to now when it
    /// is not newer than mtime or ctime, or is a day old; with strictatime always; ctime
    /// stays. Returns whether it moved (so the caller can drop cached attributes). Views
    /// that cannot change, `noatime` and a failure to record it (a full disk) leave it
    /// alone: reading never fails for atime.
    pub fn touch_atime(&self, node: u64) -> bool {
        if self.opts.atime == Atime::Off || self.opts.read_only {
            return false;
        }
        let Ok(l) = self.locate(node) else {
            return false;
        };
        if l.read_only || l.key.is_none() {
            return false;
        }
        let Ok(a) = self.getattr(node) else {
            return false;
        };
        let now = crate::records::Timestamp::now_coarse();
        let stale = self.opts.atime == Atime::Strict
            || a.atime <= a.mtime
            || a.atime <= a.ctime
            || now.sec - a.atime.sec >= 86_400;
        if a.kind != FileKind::RegularFile || !stale {
            return false;
        }
        if let (Some(f), Some(tree)) = (
            l.key.and_then(|k| self.files.lock().get(&k).cloned()),
            &l.tree,
        ) {
            match self.under_barrier(tree, || f.buffer_atime(now)) {
                Ok(true) => return true,
                Ok(false) => {}
                Err(_) => return false,
            }
        }
        let r = self.commit_located(&l, |c| {
            let mut rec = self.txn_inode(c, &l.rp, l.ino)?.ok_or(FsError::NotFound)?;
            rec.atime = c.file_time;
            self.put_inode(c, &l.rp, l.ino, Some(&rec));
            Ok::<_, FsError>(())
        });
        match &r {
            // The read goes on either way; a halted store already said why, loudly.
            Err(FsError::Io(_) | FsError::Corrupt(_))
                if self.store.committer.halted().is_none() =>
            {
                log::warn!(
                    "atime of node {node} not updated: {}",
                    r.as_ref().err().map(|e| e.to_string()).unwrap_or_default()
                )
            }
            Err(e) => log::debug!("atime of node {node} not updated: {e}"),
            Ok(()) => {}
        }
        r.is_ok()
    }

    pub fn setxattr(&self, node: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.setxattr_ext(node, name, value, flags, false)
    }

    /// `setxattr`; `kill_sgid` asks that setting an access ACL also clear setgid (the caller
    /// is neither in the file's group nor privileged, as the kernel's `setfacl` rule says).
    /// An access ACL also sets the mode's permission bits, and one that says no more than
    /// the mode is not stored (see `acl`).
    pub fn setxattr_ext(
        &self,
        node: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
        kill_sgid: bool,
    ) -> FsResult<()> {
        self.check_writable()?;
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(FsError::Range);
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(FsError::TooBig);
        }
        let parsed = if name == acl::ACCESS || name == acl::DEFAULT {
            Some(acl::Acl::parse(value)?)
        } else {
            None
        };
        let l = self.locate_mut(node)?;
        if name == acl::ACCESS {
            // An access ACL rewrites the mode: attribute changes still buffered with the
            // file's data (a chmod right after writing) must be committed first, or their
            // flush would later overwrite the mode the ACL sets.
            if let Some(k) = l.key.filter(|k| self.files.lock().contains_key(k)) {
                self.flush_key(k, FlushMode::Force)?;
            }
        }
        self.commit_located(&l, |c| {
            let mut rec = self.txn_inode(c, &l.rp, l.ino)?.ok_or(FsError::NotFound)?;
            let exists = Self::txn_xattr(c, &l.rp, l.ino, name)?.is_some();
            if flags & XATTR_CREATE != 0 && exists {
                return Err(FsError::Exists);
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(FsError::NoAttr);
            }
            if name == acl::DEFAULT && rec.kind != FileKind::Directory {
                return Err(FsError::Invalid("default ACL on a non-directory"));
            }
            let mut store_it = true;
            if let (true, Some(a)) = (name == acl::ACCESS, &parsed) {
                rec.perm = (rec.perm & !0o777) | a.mode_bits();
                store_it = !a.is_mode_equivalent();
                if kill_sgid {
                    rec.perm &= !namespace::S_ISGID;
                }
            }
            if store_it {
                Self::put_xattr(c, &l.rp, l.ino, name, Some(value));
                if !exists {
                    rec.xattrs += 1;
                }
            } else if exists {
                Self::put_xattr(c, &l.rp, l.ino, name, None);
                rec.xattrs = rec.xattrs.less("extended attribute count", l.ino)?;
            }
            rec.ctime = c.file_time;
            self.put_inode(c, &l.rp, l.ino, Some(&rec));
            Ok(())
        })
    }

    pub(crate) fn txn_xattr(
        c: &Commit<'_>,
        rp: &ReadPoint,
        ino: Ino,
        name: &[u8],
    ) -> FsResult<Option<Vec<u8>>> {
        let suffix = crate::keys::name_suffix(name);
        Ok(mvcc::txn_get_live(
            &c.txn,
            Cf::Xattrs,
            rp,
            ino,
            &suffix,
            c.version,
        )?)
    }

    /// Writes (or with `None` deletes) one xattr; the caller keeps `InodeRec::xattrs`.
    pub(crate) fn put_xattr(
        c: &mut Commit<'_>,
        rp: &ReadPoint,
        ino: Ino,
        name: &[u8],
        value: Option<&[u8]>,
    ) {
        let suffix = crate::keys::name_suffix(name);
        let v = c.version;
        mvcc::put(&mut c.txn, Cf::Xattrs, rp, ino, &suffix, v, value);
    }

    pub fn getxattr(&self, node: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(FsError::Range);
        }
        let l = self.locate(node)?;
        if self.inode(&l.rp, l.ino)?.xattrs == 0 {
            return Err(FsError::NoAttr);
        }
        let suffix = crate::keys::name_suffix(name);
        mvcc::get_live(&**self.store.kv(), Cf::Xattrs, &l.rp, l.ino, &suffix)?
            .ok_or(FsError::NoAttr)
    }

    pub fn listxattr(&self, node: u64) -> FsResult<Vec<Vec<u8>>> {
        let l = self.locate(node)?;
        if self.inode(&l.rp, l.ino)?.xattrs == 0 {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        let mut err = None;
        mvcc::scan(
            &**self.store.kv(),
            Cf::Xattrs,
            &l.rp,
            l.ino,
            &[],
            None,
            |it| {
                match crate::keys::name_from_suffix(it.suffix) {
                    Ok(n) => names.push(n.to_vec()),
                    Err(e) => {
                        err = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            },
        )?;
        if let Some(e) = err {
            return Err(e.into());
        }
        Ok(names)
    }

    pub fn removexattr(&self, node: u64, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(FsError::Range);
        }
        let l = self.locate_mut(node)?;
        let suffix = crate::keys::name_suffix(name);
        self.commit_located(&l, |c| {
            let mut rec = self.txn_inode(c, &l.rp, l.ino)?.ok_or(FsError::NotFound)?;
            if mvcc::txn_get_live(&c.txn, Cf::Xattrs, &l.rp, l.ino, &suffix, c.version)?.is_none() {
                return Err(FsError::NoAttr);
            }
            let v = c.version;
            mvcc::put(&mut c.txn, Cf::Xattrs, &l.rp, l.ino, &suffix, v, None);
            rec.xattrs = rec.xattrs.less("extended attribute count", l.ino)?;
            rec.ctime = c.file_time;
            self.put_inode(c, &l.rp, l.ino, Some(&rec));
            Ok(())
        })
    }

    /// Capacity and free space of the filesystem holding the store; file counts from the
    /// containers' counters.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let path = std::ffi::CString::new(self.store.root().as_os_str().as_encoded_bytes())
            .map_err(|_| FsError::Invalid("store path contains NUL"))?;
        // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(FsError::Io(format!(
                "statvfs of the store: {}",
                std::io::Error::last_os_error()
            )));
        }
        let frsize = st.f_frsize.max(1);
        let to4k = |blocks: u64| blocks.saturating_mul(frsize) / 4096;
        let mut files = 0u64;
        for ci in self.store.registry().list() {
            files += crate::stats::tree_counters(&self.store, &ci)?.files;
        }
        let ffree = Ino::MAX - files.min(Ino::MAX);
        Ok(StatFs {
            blocks: to4k(st.f_blocks as u64),
            bfree: to4k(st.f_bfree as u64),
            bavail: to4k(st.f_bavail as u64),
            files: files + ffree,
            ffree,
            bsize: 4096,
            namelen: 255,
            frsize: 4096,
        })
    }
}
