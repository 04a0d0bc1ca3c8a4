//! The made-up directories of the mount root, through which history is browsed:
//!
//! - `/.snapshots/<name>/`: every snapshot of the store, as its tree (read-only for `ro`
//!   snapshots, writable for `rw` and `rw-tracking` ones);
//! - `/.at/<container>/<when>/`: the container as of `<when>` — a bookmark name or a time
//!   (see [`crate::points`]) — read-only, created on lookup, nothing stored;
//! - `/.at/<container>/` lists the container's bookmarks.
//!
//! Invariant: these directories themselves never change through the mount (EROFS);
//! their node ids are fixed (view 0), and the trees below them use their own view numbers.

use super::*;
use crate::records::FileKind;

/// The virtual entries of the mount root, in listing order.
pub(crate) const ROOT_ENTRIES: [(&[u8], VirtualDir); 2] = [
    (b".at", VirtualDir::At),
    (b".snapshots", VirtualDir::Snapshots),
];

pub(crate) fn root_entry(name: &[u8]) -> Option<VirtualDir> {
    ROOT_ENTRIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

pub(crate) fn parent_of(v: VirtualDir) -> u64 {
    match v {
        VirtualDir::At | VirtualDir::Snapshots => ROOT_NODE,
        VirtualDir::AtContainer(_) => NodeRef::Virtual(VirtualDir::At).encode(),
    }
}

impl FsCore {
    pub(crate) fn virtual_attr(&self, v: VirtualDir) -> FsResult<Attr> {
        if let VirtualDir::AtContainer(c) = v {
            self.store.registry().get(c).ok_or(FsError::NotFound)?;
        }
        let mut a = self.root_attr()?;
        a.node = NodeRef::Virtual(v).encode();
        a.kind = FileKind::Directory;
        a.perm = 0o555;
        a.nlink = 2;
        a.size = 0;
        a.blocks = 0;
        Ok(a)
    }

    /// `..` of a tree's root directory.
    pub(crate) fn parent_of_tree_attr(&self, ci: &ContainerInfo) -> FsResult<Attr> {
        if ci.snapshot.is_some() {
            self.virtual_attr(VirtualDir::Snapshots)
        } else if ci.read_only {
            self.virtual_attr(VirtualDir::AtContainer(ci.id()))
        } else {
            self.root_attr()
        }
    }

    pub(crate) fn lookup_virtual(&self, v: VirtualDir, name: &[u8]) -> FsResult<Attr> {
        if name == b"." {
            return self.virtual_attr(v);
        }
        if name == b".." {
            return self.getattr(parent_of(v));
        }
        let name = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
        match v {
            VirtualDir::At => {
                let ci = self
                    .store
                    .registry()
                    .by_name(name)
                    .ok_or(FsError::NotFound)?;
                self.virtual_attr(VirtualDir::AtContainer(ci.id()))
            }
            VirtualDir::Snapshots => {
                let s = self
                    .store
                    .registry()
                    .snapshot_by_name(name)
                    .ok_or(FsError::NotFound)?;
                self.container_root_attr(&s)
            }
            VirtualDir::AtContainer(c) => {
                let ci = self.store.registry().get(c).ok_or(FsError::NotFound)?;
                let point = match crate::points::resolve(&self.store, &ci.rec, name) {
                    Ok(p) => p,
                    Err(e) => {
                        log::info!("time travel: {}/{name}: {e}", ci.rec.name);
                        return Err(FsError::NotFound);
                    }
                };
                let tree = self.time_view_on(&ci, point.branch, point.version)?;
                self.container_root_attr(&tree)
            }
        }
    }

    pub(crate) fn readdir_virtual(
        &self,
        v: VirtualDir,
        offset: u64,
        mut add: impl FnMut(DirEntry) -> bool,
    ) -> FsResult<()> {
        let entries: Vec<(u64, Vec<u8>)> = match v {
            VirtualDir::At => self
                .store
                .registry()
                .list()
                .iter()
                .map(|ci| {
                    (
                        NodeRef::Virtual(VirtualDir::AtContainer(ci.id())).encode(),
                        ci.rec.name.as_bytes().to_vec(),
                    )
                })
                .collect(),
            VirtualDir::Snapshots => self
                .store
                .registry()
                .snapshots()
                .iter()
                .filter_map(|s| {
                    let name = s.snapshot.as_ref()?.name.as_bytes().to_vec();
                    Some((Self::node_of(s, s.root()), name))
                })
                .collect(),
            VirtualDir::AtContainer(c) => {
                let ci = self.store.registry().get(c).ok_or(FsError::NotFound)?;
                let mut out = Vec::new();
                for b in crate::containers::bookmarks(&self.store, c)
                    .map_err(|e| FsError::Io(e.to_string()))?
                {
                    let tree = self.time_view_on(
                        &ci,
                        crate::ids::BranchId(b.branch),
                        crate::ids::Version(b.version),
                    )?;
                    out.push((Self::node_of(&tree, tree.root()), b.name.into_bytes()));
                }
                out
            }
        };
        for (i, (node, name)) in entries.into_iter().enumerate() {
            let cookie = 3 + i as u64;
            if cookie <= offset {
                continue;
            }
            if add(DirEntry {
                node,
                offset: cookie,
                kind: FileKind::Directory,
                name,
            }) {
                break;
            }
        }
        Ok(())
    }
}
