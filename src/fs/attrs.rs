//! Attributes: `getattr`, `setattr`, extended attributes and `statfs`.
//!
//! Permission checks are the kernel's (the mount always uses `default_permissions`); this
//! module stores what it is told. A size change is a truncate and goes through the data
//! path; every other field changes in one commit that also sets `ctime`.

use super::*;
use crate::records::FileKind;
use std::ops::ControlFlow;

const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_SIZE_MAX: usize = 65536;

/// Where a node's records live.
pub(crate) struct Located {
    pub rp: ReadPoint,
    pub ino: Ino,
    pub key: Option<FileKey>,
}

impl FsCore {
    pub(crate) fn locate(&self, node: u64) -> FsResult<Located> {
        match self.resolve(node)? {
            Target::Root => Ok(Located {
                rp: Self::root_read_point(),
                ino: ROOT_INO,
                key: None,
            }),
            Target::Node(ci, ino) => Ok(Located {
                rp: ci.read_point.clone(),
                ino,
                key: Some((ci.branch(), ino)),
            }),
        }
    }

    pub fn getattr(&self, node: u64) -> FsResult<Attr> {
        let l = self.locate(node)?;
        let rec = self.inode(&l.rp, l.ino)?;
        let mut a = self.attr_of(node, l.key, &rec);
        if node == ROOT_NODE {
            a.nlink = a.nlink.max(2);
        }
        Ok(a)
    }

    pub fn setattr(&self, ctx: &Ctx, node: u64, set: SetAttr) -> FsResult<Attr> {
        self.check_writable()?;
        let l = self.locate(node)?;
        if let Some(size) = set.size {
            self.truncate(node, size)?;
        }
        let others = SetAttr { size: None, ..set };
        if others != SetAttr::default() {
            let rec = self.store.committer.commit(|c| {
                let mut rec = Self::txn_inode(c, &l.rp, l.ino)?.ok_or(FsError::NotFound)?;
                let now = c.time;
                if let Some(mode) = set.mode {
                    rec.perm = (mode & 0o7777) as u16;
                }
                if let Some(uid) = set.uid {
                    rec.uid = uid;
                }
                if let Some(gid) = set.gid {
                    rec.gid = gid;
                }
                // A non-root owner change drops setuid/setgid, as on local filesystems.
                if (set.uid.is_some() || set.gid.is_some())
                    && ctx.uid != 0
                    && rec.kind != FileKind::Directory
                {
                    rec.perm &= !0o6000;
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
                Self::put_inode(c, &l.rp, l.ino, Some(&rec));
                Ok::<_, FsError>(rec)
            })?;
            if let Some(k) = l.key {
                if let Some(f) = self.files.lock().get(&k).cloned() {
                    f.times_committed(set.mtime.is_some(), Some(rec.ctime));
                }
            }
        }
        self.getattr(node)
    }

    pub fn setxattr(&self, node: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.check_writable()?;
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(FsError::Range);
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(FsError::TooBig);
        }
        let l = self.locate(node)?;
        let suffix = crate::codec::Enc::new().name(name).finish();
        self.store.committer.commit(|c| {
            let mut rec = Self::txn_inode(c, &l.rp, l.ino)?.ok_or(FsError::NotFound)?;
            let exists =
                mvcc::txn_get_live(&c.txn, Cf::Xattrs, &l.rp, l.ino, &suffix, c.version)?.is_some();
            if flags & XATTR_CREATE != 0 && exists {
                return Err(FsError::Exists);
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(FsError::NoAttr);
            }
            let v = c.version;
            mvcc::put(
                &mut c.txn,
                Cf::Xattrs,
                &l.rp,
                l.ino,
                &suffix,
                v,
                Some(value),
            );
            rec.ctime = c.time;
            Self::put_inode(c, &l.rp, l.ino, Some(&rec));
            Ok(())
        })
    }

    pub fn getxattr(&self, node: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(FsError::Range);
        }
        let l = self.locate(node)?;
        self.inode(&l.rp, l.ino)?;
        let suffix = crate::codec::Enc::new().name(name).finish();
        mvcc::get_live(&**self.store.kv(), Cf::Xattrs, &l.rp, l.ino, &suffix)?
            .ok_or(FsError::NoAttr)
    }

    pub fn listxattr(&self, node: u64) -> FsResult<Vec<Vec<u8>>> {
        let l = self.locate(node)?;
        self.inode(&l.rp, l.ino)?;
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
                match crate::codec::Dec::new(it.suffix, "xattr key").name() {
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
        let l = self.locate(node)?;
        let suffix = crate::codec::Enc::new().name(name).finish();
        self.store.committer.commit(|c| {
            let mut rec = Self::txn_inode(c, &l.rp, l.ino)?.ok_or(FsError::NotFound)?;
            if mvcc::txn_get_live(&c.txn, Cf::Xattrs, &l.rp, l.ino, &suffix, c.version)?.is_none() {
                return Err(FsError::NoAttr);
            }
            let v = c.version;
            mvcc::put(&mut c.txn, Cf::Xattrs, &l.rp, l.ino, &suffix, v, None);
            rec.ctime = c.time;
            Self::put_inode(c, &l.rp, l.ino, Some(&rec));
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
        let files: u64 = self
            .store
            .registry()
            .list()
            .iter()
            .map(|ci| self.store.committer.container_counters(ci.id()).files)
            .sum();
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
