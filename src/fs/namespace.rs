//! Names: lookup, creation, removal, rename, hard links and directory listing.
//!
//! Each mutating operation reads what it must check and writes its changes inside one
//! commit, so concurrent operations see it entirely or not at all. At the mount root, the
//! entries are containers: `mkdir` creates one, `rmdir` of an empty one deletes it, and
//! `rename` between two root names renames it; other kinds of node cannot live there.

use super::*;
use crate::containers::{ContainerSettings, RootOwner};
use crate::keys::name_from_suffix as dirent_name_from_suffix;
use crate::records::FileKind;
use std::ops::ControlFlow;

pub(crate) const S_ISGID: u16 = 0o2000;

pub(crate) fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() {
        return Err(FsError::NotFound);
    }
    if name.len() > 255 {
        return Err(FsError::NameTooLong);
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(FsError::Invalid("name contains '/' or NUL"));
    }
    Ok(())
}

fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// What a new node is.
pub(crate) struct NewNode<'a> {
    pub kind: FileKind,
    pub perm: u16,
    pub rdev: u32,
    pub target: &'a [u8],
}

impl FsCore {
    /// Builds `stat` attributes from a committed record plus any buffered state.
    pub(crate) fn attr_of(&self, node: u64, key: Option<FileKey>, rec: &InodeRec) -> Attr {
        let mut rec = rec.clone();
        let mut size = rec.size;
        let mut data_bytes = rec.data_bytes;
        if let Some(k) = key {
            if let Some(f) = self.files.lock().get(&k).cloned() {
                let o = f.overlay_attrs();
                size = o.size;
                o.attrs.apply(&mut rec);
                data_bytes = data_bytes.saturating_add(o.buffered as u64).min(size);
            }
        }
        let (mtime, ctime) = (rec.mtime, rec.ctime);
        Attr {
            node,
            kind: rec.kind,
            perm: rec.perm,
            nlink: rec.nlink,
            uid: rec.uid,
            gid: rec.gid,
            size,
            blocks: data_bytes.div_ceil(512),
            atime: rec.atime,
            mtime,
            ctime,
            btime: rec.btime,
            rdev: rec.rdev,
            blksize: 1 << 17,
            flags: rec.flags,
        }
    }

    pub(crate) fn root_attr(&self) -> FsResult<Attr> {
        let rec = self.inode(&Self::root_read_point(), ROOT_INO)?;
        Ok(self.attr_of(ROOT_NODE, None, &rec))
    }

    pub(crate) fn container_root_attr(&self, ci: &ContainerInfo) -> FsResult<Attr> {
        let rec = self.inode(&ci.read_point, ci.root())?;
        let mut a = self.attr_of(Self::node_of(ci, ci.root()), None, &rec);
        a.nlink = a.nlink.max(2);
        Ok(a)
    }

    pub fn lookup(&self, _ctx: &Ctx, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > 255 {
            return Err(FsError::NameTooLong);
        }
        match self.resolve(parent)? {
            Target::Root => {
                if name == b"." || name == b".." {
                    return self.root_attr();
                }
                if let Some(v) = super::views::root_entry(name) {
                    return self.virtual_attr(v);
                }
                let name = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
                let ci = self
                    .store
                    .registry()
                    .by_name(name)
                    .ok_or(FsError::NotFound)?;
                self.container_root_attr(&ci)
            }
            Target::Virtual(v) => self.lookup_virtual(v, name),
            Target::Node(ci, dir) => {
                let rp = &ci.read_point;
                if name == b"." {
                    return self.getattr(parent);
                }
                if name == b".." {
                    let rec = self.inode(rp, dir)?;
                    if dir == ci.root() {
                        return self.parent_of_tree_attr(&ci);
                    }
                    return self.getattr(Self::node_of(&ci, rec.parent));
                }
                let suffix = crate::keys::name_suffix(name);
                let raw = mvcc::get_live(&**self.store.kv(), Cf::Dirents, rp, dir, &suffix)?
                    .ok_or(FsError::NotFound)?;
                let d = DirentRec::decode(&raw)?;
                let rec = self.inode(rp, d.ino)?;
                Ok(self.attr_of(Self::node_of(&ci, d.ino), ci.buffer_key(d.ino), &rec))
            }
        }
    }

    /// Creates a node of any kind in a container directory.
    pub(crate) fn create_node(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        n: NewNode<'_>,
    ) -> FsResult<Attr> {
        self.check_writable()?;
        check_name(name)?;
        let (ci, dir) = match self.resolve(parent)? {
            Target::Root if super::views::root_entry(name).is_some() => {
                return Err(FsError::Exists)
            }
            Target::Virtual(_) => return Err(FsError::ReadOnly),
            Target::Root if n.kind == FileKind::Directory => {
                return self.create_container(ctx, name, n.perm)
            }
            Target::Root => {
                return Err(
                    if self
                        .store
                        .registry()
                        .by_name(&String::from_utf8_lossy(name))
                        .is_some()
                    {
                        FsError::Exists
                    } else {
                        FsError::NotPermitted(
                            "only directories (containers) can be created at the mount root",
                        )
                    },
                )
            }
            Target::Node(ci, dir) => {
                Self::check_tree_writable(&ci)?;
                (ci, dir)
            }
        };
        if is_dot(name) {
            return Err(FsError::Exists);
        }
        if n.target.len() > 4095 {
            return Err(FsError::NameTooLong);
        }
        let (ino, rec) = self.commit_in(&ci, |c| {
            let rp = &ci.read_point;
            let mut p = self.txn_inode(c, rp, dir)?.ok_or(FsError::NotFound)?;
            if p.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            if p.nlink == 0 {
                return Err(FsError::NotFound);
            }
            if Self::txn_dirent(c, rp, dir, name)?.is_some() {
                return Err(FsError::Exists);
            }
            let ino = c.alloc_ino();
            if ino.0 > Ino::MAX {
                return Err(FsError::NoSpace);
            }
            let now = c.file_time;
            let mut perm = n.perm & 0o7777;
            let gid = if p.perm & S_ISGID != 0 {
                if n.kind == FileKind::Directory {
                    perm |= S_ISGID;
                }
                p.gid
            } else {
                ctx.gid
            };
            // As the kernel does for local filesystems: a non-root creator outside the
            // file's group cannot leave it setgid.
            if n.kind != FileKind::Directory
                && perm & S_ISGID != 0
                && ctx.uid != 0
                && gid != ctx.gid
            {
                perm &= !S_ISGID;
            }
            // The directory's default ACL, or else the umask, shapes the new mode.
            let default_acl = match (n.kind, p.xattrs) {
                (FileKind::Symlink, _) | (_, 0) => None,
                _ => Self::txn_xattr(c, rp, dir, acl::DEFAULT)?,
            };
            let mut inherited = Vec::new();
            if let Some(d) = default_acl {
                let (mode, access) = acl::Acl::parse(&d)?.inherit(perm);
                perm = mode;
                if let Some(a) = access {
                    inherited.push((acl::ACCESS, a.encode()));
                }
                if n.kind == FileKind::Directory {
                    inherited.push((acl::DEFAULT, d));
                }
            } else if n.kind != FileKind::Symlink {
                perm &= !(ctx.umask as u16 & 0o777);
            }
            for (name, v) in &inherited {
                Self::put_xattr(c, rp, ino, name, Some(v));
            }
            let rec = InodeRec {
                kind: n.kind,
                perm,
                uid: ctx.uid,
                gid,
                nlink: if n.kind == FileKind::Directory { 2 } else { 1 },
                size: if n.kind == FileKind::Symlink {
                    n.target.len() as u64
                } else {
                    0
                },
                atime: now,
                mtime: now,
                ctime: now,
                btime: now,
                rdev: n.rdev,
                parent: if n.kind == FileKind::Directory {
                    dir
                } else {
                    Ino(0)
                },
                data_gen: c.version.0,
                data_bytes: 0,
                flags: 0,
                xattrs: inherited.len() as u32,
                target: n.target.to_vec(),
            };
            self.put_inode(c, rp, ino, Some(&rec));
            Self::put_dirent(c, rp, dir, name, Some(&DirentRec { ino, kind: n.kind }));
            p.size += 1;
            if n.kind == FileKind::Directory {
                p.nlink += 1;
            }
            p.mtime = now;
            p.ctime = now;
            self.put_inode(c, rp, dir, Some(&p));
            if n.kind == FileKind::RegularFile {
                c.tree_delta(rp, 1, 0);
            }
            Ok((ino, rec))
        })?;
        Ok(self.attr_of(Self::node_of(&ci, ino), None, &rec))
    }

    pub fn mkdir(&self, ctx: &Ctx, parent: u64, name: &[u8], mode: u32) -> FsResult<Attr> {
        self.create_node(
            ctx,
            parent,
            name,
            NewNode {
                kind: FileKind::Directory,
                perm: (mode & 0o7777) as u16,
                rdev: 0,
                target: &[],
            },
        )
    }

    pub fn mknod(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> FsResult<Attr> {
        let kind = FileKind::from_mode(mode).unwrap_or(FileKind::RegularFile);
        if kind == FileKind::Directory || kind == FileKind::Symlink {
            return Err(FsError::Invalid("mknod of a directory or symlink"));
        }
        self.create_node(
            ctx,
            parent,
            name,
            NewNode {
                kind,
                perm: (mode & 0o7777) as u16,
                rdev,
                target: &[],
            },
        )
    }

    pub fn symlink(&self, ctx: &Ctx, parent: u64, name: &[u8], target: &[u8]) -> FsResult<Attr> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        self.create_node(
            ctx,
            parent,
            name,
            NewNode {
                kind: FileKind::Symlink,
                perm: 0o777,
                rdev: 0,
                target,
            },
        )
    }

    pub fn readlink(&self, node: u64) -> FsResult<Vec<u8>> {
        let (ci, ino) = self.resolve_node(node)?;
        let rec = self.inode(&ci.read_point, ino)?;
        if rec.kind != FileKind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        Ok(rec.target)
    }

    fn create_container(&self, ctx: &Ctx, name: &[u8], perm: u16) -> FsResult<Attr> {
        let name = std::str::from_utf8(name)
            .map_err(|_| FsError::Invalid("container names must be UTF-8"))?;
        let owner = RootOwner {
            uid: ctx.uid,
            gid: ctx.gid,
            perm: perm & 0o7777 & !(ctx.umask as u16 & 0o777),
        };
        let rec =
            crate::admin::create_container(&self.store, name, ContainerSettings::default(), owner)?;
        let ci = self
            .store
            .registry()
            .get(crate::ids::ContainerId(rec.id))
            .ok_or(FsError::NotFound)?;
        self.container_root_attr(&ci)
    }

    /// Removes one name of an inode inside a commit: drops its link count, deleting it
    /// when the last name goes (or keeping it as an orphan while it is open).
    fn drop_link(
        &self,
        c: &mut Commit<'_>,
        ci: &ContainerInfo,
        ino: Ino,
        mut rec: InodeRec,
    ) -> FsResult<()> {
        let branch = ci.branch();
        let rp = &ci.read_point;
        let now = c.file_time;
        rec.ctime = now;
        if rec.kind == FileKind::Directory {
            rec.nlink = 0;
        } else {
            rec.nlink = rec.nlink.less("link count", ino)?;
        }
        if rec.nlink > 0 {
            self.put_inode(c, rp, ino, Some(&rec));
            return Ok(());
        }
        if rec.kind == FileKind::RegularFile {
            c.tree_delta(rp, -1, -(rec.size as i64));
        }
        // A directory removed while open keeps answering fstat (nlink 0) through its handle;
        // its record goes when the store is next opened, like any orphan.
        let dir_open = rec.kind == FileKind::Directory && {
            let node = Self::node_of(ci, ino);
            self.handles
                .lock()
                .values()
                .any(|h| matches!(h, super::Handle::Dir { node: n, .. } if *n == node))
        };
        let open = self.files.lock().get(&(branch, ino)).cloned();
        match open {
            _ if dir_open => {
                self.put_inode(c, rp, ino, Some(&rec));
                c.txn.put(
                    Cf::Orphans,
                    crate::keys::orphan(branch, ino),
                    crate::keys::orphan_value(ci.id()),
                );
            }
            Some(f) if f.mark_unlinked_if_open() => {
                self.put_inode(c, rp, ino, Some(&rec));
                c.txn.put(
                    Cf::Orphans,
                    crate::keys::orphan(branch, ino),
                    crate::keys::orphan_value(ci.id()),
                );
            }
            _ => self.put_inode(c, rp, ino, None),
        }
        Ok(())
    }

    pub fn unlink(&self, _ctx: &Ctx, parent: u64, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        check_name(name)?;
        let (ci, dir) = match self.resolve(parent)? {
            Target::Root => {
                let n = String::from_utf8_lossy(name);
                return Err(if self.store.registry().by_name(&n).is_some() {
                    FsError::IsDir
                } else {
                    FsError::NotFound
                });
            }
            Target::Virtual(_) => return Err(FsError::ReadOnly),
            Target::Node(ci, dir) => {
                Self::check_tree_writable(&ci)?;
                (ci, dir)
            }
        };
        self.commit_in(&ci, |c| {
            let rp = &ci.read_point;
            let d = Self::txn_dirent(c, rp, dir, name)?.ok_or(FsError::NotFound)?;
            if d.kind == FileKind::Directory {
                return Err(FsError::IsDir);
            }
            let now = c.file_time;
            let mut p = self.txn_inode(c, rp, dir)?.ok_or(FsError::NotFound)?;
            p.size = p.size.less("entry count", dir)?;
            p.mtime = now;
            p.ctime = now;
            self.put_inode(c, rp, dir, Some(&p));
            Self::put_dirent(c, rp, dir, name, None);
            if let Some(rec) = self.txn_inode(c, rp, d.ino)? {
                self.drop_link(c, &ci, d.ino, rec)?;
            }
            Ok(())
        })
    }

    pub fn rmdir(&self, _ctx: &Ctx, parent: u64, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        check_name(name)?;
        if name == b"." {
            return Err(FsError::Invalid("rmdir of '.'"));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        let (ci, dir) = match self.resolve(parent)? {
            Target::Virtual(_) => return Err(FsError::ReadOnly),
            Target::Root if super::views::root_entry(name).is_some() => {
                return Err(FsError::ReadOnly)
            }
            Target::Root => {
                let n = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
                let ci = self.store.registry().by_name(n).ok_or(FsError::NotFound)?;
                let root = self.inode(&ci.read_point, ci.root())?;
                if root.size > 0 {
                    return Err(FsError::NotEmpty);
                }
                // A lock refuses whatever else is true (a file closed just before may still
                // count as open until the kernel's release arrives).
                crate::containers::lock::check_delete(
                    &self.store,
                    &ci.rec,
                    crate::containers::lock::Authority::Normal,
                )?;
                if self.open_handles_in(crate::ids::ContainerId(ci.view)) > 0 {
                    return Err(FsError::Busy(format!("container '{n}' has open files")));
                }
                crate::admin::delete_container(
                    &self.store,
                    n,
                    true,
                    crate::containers::lock::Authority::Normal,
                    &mut |_| {},
                )?;
                return Ok(());
            }
            Target::Node(ci, dir) => {
                Self::check_tree_writable(&ci)?;
                (ci, dir)
            }
        };
        self.commit_in(&ci, |c| {
            let rp = &ci.read_point;
            let d = Self::txn_dirent(c, rp, dir, name)?.ok_or(FsError::NotFound)?;
            if d.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            let rec = self.txn_inode(c, rp, d.ino)?.ok_or(FsError::NotFound)?;
            if rec.size > 0 {
                return Err(FsError::NotEmpty);
            }
            let now = c.file_time;
            let mut p = self.txn_inode(c, rp, dir)?.ok_or(FsError::NotFound)?;
            p.size = p.size.less("entry count", dir)?;
            p.nlink = p.nlink.less("link count", dir)?.max(2);
            p.mtime = now;
            p.ctime = now;
            self.put_inode(c, rp, dir, Some(&p));
            Self::put_dirent(c, rp, dir, name, None);
            self.drop_link(c, &ci, d.ino, rec)
        })
    }

    /// Whether `ancestor` is `dir` or one of its ancestors (walking `..` links).
    fn is_ancestor(
        &self,
        c: &Commit<'_>,
        ci: &ContainerInfo,
        ancestor: Ino,
        mut dir: Ino,
    ) -> FsResult<bool> {
        let root = ci.root();
        for _ in 0..100_000 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == root {
                return Ok(false);
            }
            let rec = self
                .txn_inode(c, &ci.read_point, dir)?
                .ok_or(FsError::NotFound)?;
            dir = rec.parent;
        }
        Err(FsError::Corrupt(
            "directory parent chain does not reach the container root".into(),
        ))
    }

    pub fn rename(
        &self,
        _ctx: &Ctx,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: RenameFlags,
    ) -> FsResult<()> {
        self.check_writable()?;
        check_name(name)?;
        check_name(newname)?;
        if flags.noreplace && flags.exchange {
            return Err(FsError::Invalid("RENAME_NOREPLACE with RENAME_EXCHANGE"));
        }
        if is_dot(name) || is_dot(newname) {
            return Err(FsError::Invalid("rename of '.' or '..'"));
        }
        let (ci, sdir, ddir) = match (self.resolve(parent)?, self.resolve(newparent)?) {
            (Target::Root, Target::Root) => {
                if super::views::root_entry(name).is_some()
                    || super::views::root_entry(newname).is_some()
                {
                    return Err(FsError::ReadOnly);
                }
                return self.rename_container(name, newname, flags);
            }
            (Target::Virtual(_), _) | (_, Target::Virtual(_)) => return Err(FsError::ReadOnly),
            (Target::Node(a, s), Target::Node(b, d)) if a.view == b.view => {
                Self::check_tree_writable(&a)?;
                (a, s, d)
            }
            _ => return Err(FsError::CrossDevice),
        };
        self.commit_in(&ci, |c| {
            let rp = &ci.read_point;
            let src = Self::txn_dirent(c, rp, sdir, name)?.ok_or(FsError::NotFound)?;
            let mut sp = self.txn_inode(c, rp, sdir)?.ok_or(FsError::NotFound)?;
            let mut dp = if sdir == ddir {
                sp.clone()
            } else {
                self.txn_inode(c, rp, ddir)?.ok_or(FsError::NotFound)?
            };
            if dp.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            if dp.nlink == 0 {
                return Err(FsError::NotFound);
            }
            let dst = Self::txn_dirent(c, rp, ddir, newname)?;
            if sdir == ddir && name == newname {
                return Ok(());
            }
            if flags.noreplace && dst.is_some() {
                return Err(FsError::Exists);
            }
            if flags.exchange && dst.is_none() {
                return Err(FsError::NotFound);
            }
            // A directory cannot move below itself.
            if src.kind == FileKind::Directory
                && sdir != ddir
                && self.is_ancestor(c, &ci, src.ino, ddir)?
            {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            if flags.exchange {
                let dst = dst.ok_or(FsError::NotFound)?;
                if dst.kind == FileKind::Directory
                    && sdir != ddir
                    && self.is_ancestor(c, &ci, dst.ino, sdir)?
                {
                    return Err(FsError::Invalid("cannot move a directory into itself"));
                }
            }
            let now = c.file_time;
            let mut removed: Option<(Ino, InodeRec)> = None;
            if let (Some(d), false) = (dst, flags.exchange) {
                if d.ino == src.ino {
                    return Ok(()); // two names of one inode: POSIX says do nothing
                }
                let drec = self.txn_inode(c, rp, d.ino)?.ok_or(FsError::NotFound)?;
                match (
                    src.kind == FileKind::Directory,
                    d.kind == FileKind::Directory,
                ) {
                    (true, false) => return Err(FsError::NotDir),
                    (false, true) => return Err(FsError::IsDir),
                    (true, true) if drec.size > 0 => return Err(FsError::NotEmpty),
                    _ => {}
                }
                removed = Some((d.ino, drec));
            }
            // Entries.
            Self::put_dirent(c, rp, ddir, newname, Some(&src));
            if flags.exchange {
                let d = dst.ok_or(FsError::NotFound)?;
                Self::put_dirent(c, rp, sdir, name, Some(&d));
            } else {
                Self::put_dirent(c, rp, sdir, name, None);
            }
            // Moved directories change parent (and their parents' link counts).
            let fix_parent =
                |c: &mut Commit<'_>, ino: Ino, kind: FileKind, new_parent: Ino| -> FsResult<()> {
                    let mut r = self.txn_inode(c, rp, ino)?.ok_or(FsError::NotFound)?;
                    if kind == FileKind::Directory {
                        r.parent = new_parent;
                    }
                    r.ctime = now;
                    self.put_inode(c, rp, ino, Some(&r));
                    Ok(())
                };
            fix_parent(c, src.ino, src.kind, ddir)?;
            if flags.exchange {
                let d = dst.ok_or(FsError::NotFound)?;
                fix_parent(c, d.ino, d.kind, sdir)?;
                if sdir != ddir {
                    let sd = src.kind == FileKind::Directory;
                    let dd = d.kind == FileKind::Directory;
                    if sd && !dd {
                        sp.nlink = sp.nlink.less("link count", sdir)?;
                        dp.nlink += 1;
                    } else if dd && !sd {
                        sp.nlink += 1;
                        dp.nlink = dp.nlink.less("link count", ddir)?;
                    }
                }
            } else {
                if sdir != ddir && src.kind == FileKind::Directory {
                    sp.nlink = sp.nlink.less("link count", sdir)?;
                    dp.nlink += 1;
                }
                if sdir != ddir {
                    sp.size = sp.size.less("entry count", sdir)?;
                    if removed.is_none() {
                        dp.size += 1;
                    }
                } else if removed.is_some() {
                    sp.size = sp.size.less("entry count", sdir)?;
                }
                if let Some((_, r)) = &removed {
                    if r.kind == FileKind::Directory {
                        if sdir == ddir {
                            sp.nlink = sp.nlink.less("link count", sdir)?;
                        } else {
                            dp.nlink = dp.nlink.less("link count", ddir)?;
                        }
                    }
                }
            }
            sp.mtime = now;
            sp.ctime = now;
            if sdir == ddir {
                self.put_inode(c, rp, sdir, Some(&sp));
            } else {
                dp.mtime = now;
                dp.ctime = now;
                self.put_inode(c, rp, sdir, Some(&sp));
                self.put_inode(c, rp, ddir, Some(&dp));
            }
            if let Some((ino, r)) = removed {
                self.drop_link(c, &ci, ino, r)?;
            }
            Ok(())
        })
    }

    fn rename_container(&self, name: &[u8], newname: &[u8], flags: RenameFlags) -> FsResult<()> {
        if flags.exchange {
            return Err(FsError::NotSupported("exchanging containers"));
        }
        let (a, b) = match (std::str::from_utf8(name), std::str::from_utf8(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Err(FsError::Invalid("container names must be UTF-8")),
        };
        if a == b {
            return Ok(());
        }
        crate::admin::rename_container(&self.store, a, b)?;
        Ok(())
    }

    pub fn link(&self, _ctx: &Ctx, node: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        self.check_writable()?;
        check_name(newname)?;
        if is_dot(newname) {
            return Err(FsError::Exists);
        }
        let (ci, ino, dir) = match (self.resolve(node)?, self.resolve(newparent)?) {
            (Target::Node(a, ino), Target::Node(b, dir)) if a.view == b.view => {
                Self::check_tree_writable(&a)?;
                (a, ino, dir)
            }
            (Target::Node(..), Target::Root) => {
                return Err(FsError::NotPermitted("no links at the mount root"))
            }
            (Target::Root, _) => return Err(FsError::NotPermitted("cannot link the mount root")),
            _ => return Err(FsError::CrossDevice),
        };
        let branch = ci.branch();
        let rec = self.commit_in(&ci, |c| {
            let rp = &ci.read_point;
            let mut rec = self.txn_inode(c, rp, ino)?.ok_or(FsError::NotFound)?;
            if rec.kind == FileKind::Directory {
                return Err(FsError::NotPermitted("hard links to directories"));
            }
            if rec.nlink == 0 {
                return Err(FsError::NotFound);
            }
            if rec.nlink >= u32::MAX - 1 {
                return Err(FsError::TooManyLinks);
            }
            let mut p = self.txn_inode(c, rp, dir)?.ok_or(FsError::NotFound)?;
            if p.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            if p.nlink == 0 {
                return Err(FsError::NotFound);
            }
            if Self::txn_dirent(c, rp, dir, newname)?.is_some() {
                return Err(FsError::Exists);
            }
            let now = c.file_time;
            rec.nlink += 1;
            rec.ctime = now;
            self.put_inode(c, rp, ino, Some(&rec));
            Self::put_dirent(
                c,
                rp,
                dir,
                newname,
                Some(&DirentRec {
                    ino,
                    kind: rec.kind,
                }),
            );
            p.size += 1;
            p.mtime = now;
            p.ctime = now;
            self.put_inode(c, rp, dir, Some(&p));
            Ok(rec)
        })?;
        Ok(self.attr_of(node, Some((branch, ino)), &rec))
    }

    pub fn opendir(&self, node: u64) -> FsResult<u64> {
        match self.resolve(node)? {
            Target::Root | Target::Virtual(_) => {}
            Target::Node(ci, ino) => {
                if self.inode(&ci.read_point, ino)?.kind != FileKind::Directory {
                    return Err(FsError::NotDir);
                }
            }
        }
        Ok(self.new_fh(Handle::Dir {
            node,
            cursor: Arc::new(Mutex::new(DirCursor::default())),
        }))
    }

    pub fn releasedir(&self, fh: u64) {
        self.drop_handle(fh);
    }

    /// Lists a directory from `offset` (0 = start, or the cookie of the last entry
    /// consumed). `add` returns true when the caller's buffer is full; that entry is then
    /// delivered again by the next call.
    pub fn readdir(
        &self,
        node: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry) -> bool,
    ) -> FsResult<()> {
        let cursor = match self.handle(fh)? {
            Handle::Dir { node: n, cursor } if n == node => cursor,
            _ => return Err(FsError::BadHandle),
        };
        let mut cur = cursor.lock();
        let target = self.resolve(node)?;
        let (self_node, parent_node) = match &target {
            Target::Root => (ROOT_NODE, ROOT_NODE),
            Target::Virtual(v) => (node, super::views::parent_of(*v)),
            Target::Node(ci, ino) => {
                let rec = self.inode(&ci.read_point, *ino)?;
                let parent = if *ino == ci.root() {
                    self.parent_of_tree_attr(ci)?.node
                } else {
                    Self::node_of(ci, rec.parent)
                };
                (node, parent)
            }
        };
        if offset < 1
            && add(DirEntry {
                node: self_node,
                offset: 1,
                kind: FileKind::Directory,
                name: b".".to_vec(),
            })
        {
            return Ok(());
        }
        if offset < 2
            && add(DirEntry {
                node: parent_node,
                offset: 2,
                kind: FileKind::Directory,
                name: b"..".to_vec(),
            })
        {
            return Ok(());
        }
        match target {
            Target::Virtual(v) => self.readdir_virtual(v, offset, add),
            Target::Root => {
                let mut entries: Vec<(u64, FileKind, Vec<u8>)> = super::views::ROOT_ENTRIES
                    .iter()
                    .map(|(n, v)| {
                        (
                            NodeRef::Virtual(*v).encode(),
                            FileKind::Directory,
                            n.to_vec(),
                        )
                    })
                    .collect();
                for ci in self.store.registry().list() {
                    entries.push((
                        Self::node_of(&ci, ci.root()),
                        FileKind::Directory,
                        ci.rec.name.as_bytes().to_vec(),
                    ));
                }
                for (i, (node, kind, name)) in entries.into_iter().enumerate() {
                    let cookie = 3 + i as u64;
                    if cookie <= offset {
                        continue;
                    }
                    let e = DirEntry {
                        node,
                        offset: cookie,
                        kind,
                        name,
                    };
                    if add(e) {
                        break;
                    }
                }
                Ok(())
            }
            Target::Node(ci, dir) => {
                // Resume after the last delivered entry when the kernel continues where we
                // stopped; otherwise (rewind, seekdir) rescan and skip.
                let resume = if offset >= 3 {
                    cur.find(offset).map(mvcc::after)
                } else {
                    None
                };
                let (from, mut cookie, skip) = match resume {
                    Some(from) => (from, offset, 0),
                    None => (Vec::new(), 2, offset.saturating_sub(2)),
                };
                let mut skipped = 0;
                let mut err = None;
                mvcc::scan(
                    &**self.store.kv(),
                    Cf::Dirents,
                    &ci.read_point,
                    dir,
                    &from,
                    None,
                    |it| {
                        if skipped < skip {
                            skipped += 1;
                            cookie += 1;
                            return ControlFlow::Continue(());
                        }
                        let name = match dirent_name_from_suffix(it.suffix) {
                            Ok(n) => n.to_vec(),
                            Err(e) => {
                                err = Some(FsError::from(e));
                                return ControlFlow::Break(());
                            }
                        };
                        let d = match DirentRec::decode(it.payload) {
                            Ok(d) => d,
                            Err(e) => {
                                err = Some(FsError::from(e));
                                return ControlFlow::Break(());
                            }
                        };
                        let e = DirEntry {
                            node: Self::node_of(&ci, d.ino),
                            offset: cookie + 1,
                            kind: d.kind,
                            name,
                        };
                        if add(e) {
                            return ControlFlow::Break(());
                        }
                        cookie += 1;
                        cur.remember(cookie, it.suffix);
                        ControlFlow::Continue(())
                    },
                )?;
                if let Some(e) = err {
                    return Err(e);
                }
                Ok(())
            }
        }
    }
}
