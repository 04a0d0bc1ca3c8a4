//! Differences between two trees of one container (two read points): which paths were
//! added, removed or modified, and for modified regular files which byte ranges differ.
//!
//! Used by `rollback --dry-run`, `snapshot changes` and `snapshot apply`. Both trees share
//! inode numbers where they share history, so a file is "the same file" when its directory
//! entry names the same inode; its content differs where the extent maps differ (compared
//! chunk by chunk, so ranges are exact to the extent, never guessed). Cost: one walk of
//! both directory trees plus the extent maps of files whose inode record changed.

use crate::Result;
use dedupfs_core::containers::{ContainerInfo, SnapshotRecord};
use dedupfs_core::ids::{BranchId, Ino, Version};
use dedupfs_core::mvcc::ReadPoint;
use dedupfs_core::records::{DirentRec, FileKind, InodeRec};
use dedupfs_core::store::Store;
use dedupfs_core::tree;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Path inside the container, starting with '/'.
    pub path: String,
    pub kind: ChangeKind,
    /// "file", "dir", "symlink" or "special" ([`type_name`]; owned when read back).
    pub file_type: Cow<'static, str>,
    /// For modified regular files: the byte ranges [start, end) whose content differs;
    /// `None` when the whole file is to be taken (added, replaced, truncated to zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<(u64, u64)>>,
    /// Sizes before and after (regular files).
    pub size_before: u64,
    pub size_after: u64,
    /// Mode, owner or times changed.
    pub attrs: bool,
}

pub fn type_name(k: FileKind) -> &'static str {
    match k {
        FileKind::RegularFile => "file",
        FileKind::Directory => "dir",
        FileKind::Symlink => "symlink",
        _ => "special",
    }
}

/// A tree of a container: where to read it and its root directory.
#[derive(Clone, Debug)]
pub struct Tree {
    pub rp: ReadPoint,
    pub root: Ino,
}

impl Tree {
    /// What a container's live tree, a snapshot or a time-travel view shows now.
    pub fn of(t: &ContainerInfo) -> Tree {
        Tree {
            rp: t.read_point.clone(),
            root: t.root(),
        }
    }

    /// The container as of `version` on `branch` (the same root directory as `t`).
    pub fn at(store: &Store, t: &ContainerInfo, branch: BranchId, version: Version) -> Tree {
        Tree {
            rp: store.registry().read_point(branch, version),
            root: t.root(),
        }
    }

    /// The point a snapshot was taken from.
    pub fn base_of(store: &Store, s: &ContainerInfo, rec: &SnapshotRecord) -> Tree {
        Tree::at(
            store,
            s,
            BranchId(rec.base_branch),
            Version(rec.base_version),
        )
    }
}

pub(crate) fn inode(store: &Store, rp: &ReadPoint, ino: Ino) -> Result<Option<InodeRec>> {
    Ok(tree::inode(store, rp, ino)?)
}

pub(crate) fn entries(
    store: &Store,
    rp: &ReadPoint,
    dir: Ino,
) -> Result<BTreeMap<Vec<u8>, DirentRec>> {
    Ok(tree::entries(store, rp, dir)?)
}

/// Looks a path ("/a/b") up in a tree: its directory entry and inode.
pub(crate) fn resolve_path(
    store: &Store,
    t: &Tree,
    path: &str,
) -> Result<Option<(DirentRec, InodeRec)>> {
    let mut dir = t.root;
    let mut found = None;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let Some(d) = tree::dirent(store, &t.rp, dir, part.as_bytes())? else {
            return Ok(None);
        };
        let Some(rec) = inode(store, &t.rp, d.ino)? else {
            return Ok(None);
        };
        dir = d.ino;
        found = Some((d, rec));
    }
    Ok(found)
}

/// Attributes that matter to a user, ignoring atime and ctime.
fn same_attrs(a: &InodeRec, b: &InodeRec) -> bool {
    a.perm == b.perm && a.uid == b.uid && a.gid == b.gid && a.mtime == b.mtime
}

fn same_content(a: &InodeRec, b: &InodeRec) -> bool {
    a.size == b.size && a.data_gen == b.data_gen && a.target == b.target && a.rdev == b.rdev
}

/// The byte ranges where two versions of a file differ.
fn changed_ranges(
    store: &Store,
    a: (&ReadPoint, &InodeRec),
    b: (&ReadPoint, &InodeRec),
    ino: Ino,
) -> Result<Option<Vec<(u64, u64)>>> {
    if a.1.data_gen != b.1.data_gen {
        return Ok(None);
    }
    let gen = a.1.data_gen;
    let ea: BTreeMap<u64, _> = tree::extents(store, a.0, ino, gen, 0, a.1.size)?
        .into_iter()
        .collect();
    let eb: BTreeMap<u64, _> = tree::extents(store, b.0, ino, gen, 0, b.1.size)?
        .into_iter()
        .collect();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (off, e) in &eb {
        if ea.get(off) != Some(e) {
            ranges.push((*off, off + e.len as u64));
        }
    }
    for (off, e) in &ea {
        if eb.get(off) != Some(e) {
            ranges.push((*off, (off + e.len as u64).min(b.1.size)));
        }
    }
    if a.1.size != b.1.size {
        ranges.push((a.1.size.min(b.1.size), a.1.size.max(b.1.size).min(b.1.size)));
    }
    ranges.retain(|r| r.1 > r.0);
    ranges.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(l) if r.0 <= l.1 => l.1 = l.1.max(r.1),
            _ => merged.push(r),
        }
    }
    Ok(Some(merged))
}

/// Every difference from tree `a` to tree `b`, in path order. An added or removed
/// directory is one change (its content goes with it).
pub fn diff(store: &Store, a: &Tree, b: &Tree) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(store, a, b, a.root, b.root, "", &mut out)?;
    Ok(out)
}

fn walk(
    store: &Store,
    a: &Tree,
    b: &Tree,
    da: Ino,
    db: Ino,
    path: &str,
    out: &mut Vec<Change>,
) -> Result<()> {
    let ea = entries(store, &a.rp, da)?;
    let eb = entries(store, &b.rp, db)?;
    let mut names: Vec<&Vec<u8>> = ea.keys().chain(eb.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let p = format!("{path}/{}", String::from_utf8_lossy(name));
        let ra = match ea.get(name) {
            Some(d) => inode(store, &a.rp, d.ino)?.map(|r| (d.ino, r)),
            None => None,
        };
        let rb = match eb.get(name) {
            Some(d) => inode(store, &b.rp, d.ino)?.map(|r| (d.ino, r)),
            None => None,
        };
        let change = |kind, rec: &InodeRec, before: u64, after: u64| Change {
            path: p.clone(),
            kind,
            file_type: type_name(rec.kind).into(),
            ranges: None,
            size_before: before,
            size_after: after,
            attrs: false,
        };
        match (ra, rb) {
            (None, None) => {}
            (Some((_, x)), None) => out.push(change(ChangeKind::Removed, &x, x.size, 0)),
            (None, Some((_, y))) => out.push(change(ChangeKind::Added, &y, 0, y.size)),
            (Some((ia, x)), Some((ib, y))) if ia != ib || x.kind != y.kind => {
                out.push(change(ChangeKind::Removed, &x, x.size, 0));
                out.push(change(ChangeKind::Added, &y, 0, y.size));
            }
            (Some((ino, x)), Some((_, y))) => {
                if x.kind == FileKind::Directory {
                    if !same_attrs(&x, &y) {
                        let mut c = change(ChangeKind::Modified, &y, 0, 0);
                        c.attrs = true;
                        out.push(c);
                    }
                    walk(store, a, b, ino, ino, &p, out)?;
                    continue;
                }
                if x == y {
                    continue;
                }
                let mut c = change(ChangeKind::Modified, &y, x.size, y.size);
                c.attrs = !same_attrs(&x, &y);
                if x.kind == FileKind::RegularFile {
                    c.ranges = changed_ranges(store, (&a.rp, &x), (&b.rp, &y), ino)?;
                    if c.ranges.as_ref().is_some_and(|r| r.is_empty()) && !c.attrs {
                        continue;
                    }
                } else if same_content(&x, &y) && !c.attrs {
                    continue;
                }
                out.push(c);
            }
        }
    }
    Ok(())
}

/// The paths (in `tree`) of the inodes in `wanted`, by walking the tree. For reports that
/// name files (fsck, scrub); a hard-linked file gets one of its paths.
pub fn paths_of(
    store: &Store,
    tree: &Tree,
    wanted: &std::collections::HashSet<Ino>,
) -> Result<std::collections::HashMap<Ino, String>> {
    let mut out = std::collections::HashMap::new();
    let mut stack = vec![(tree.root, String::new())];
    while let Some((dir, path)) = stack.pop() {
        if out.len() == wanted.len() {
            break;
        }
        for (name, d) in entries(store, &tree.rp, dir)? {
            let p = format!("{path}/{}", String::from_utf8_lossy(&name));
            if wanted.contains(&d.ino) {
                out.entry(d.ino).or_insert_with(|| p.clone());
            }
            if d.kind == FileKind::Directory {
                stack.push((d.ino, p));
            }
        }
    }
    Ok(out)
}
