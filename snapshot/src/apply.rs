//! Replays what a read-write-tracking snapshot changed onto another tree: a container's
//! live tree or another read-write snapshot ("update a new vsnap with the writes of an
//! unmounted one").
//!
//! The changes are the differences between the snapshot's base point and the snapshot now
//! ([`crate::diff`]). Each is applied only if the target still holds at that path what the
//! base held — the same type, content, size, mode, owner and extended attributes (times
//! never count: reading a file moves its atime, and a file restored by a rollback or copied
//! back is the same file to the user) — otherwise it is a conflict: reported and left
//! alone, never merged, unless `force` takes the snapshot's side. Non-conflicting changes
//! are applied either way. Data is copied through the filesystem API, so it deduplicates
//! against what is stored and costs no new space for unchanged chunks.

use crate::diff::{self, Change, ChangeKind, Tree};
use crate::{HistoryError, Result};
use dedupfs_core::containers::{ContainerInfo, SnapshotMode};
use dedupfs_core::fs::{Ctx, FsCore, NodeRef, OpenFlags, SetAttr, SetTime};
use dedupfs_core::ids::Ino;
use dedupfs_core::records::{FileKind, InodeRec};
use dedupfs_core::store::Store;
use dedupfs_core::tree;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Whether two versions of a path are the same for conflict purposes: type, size, mode,
/// owner, extended attributes and content (extent by extent, else byte by byte). Times are
/// ignored, and so is the inode number (the same bytes restored under a new inode are the
/// same file to the user).
fn same_for_conflicts(
    store: &Store,
    a: (&Tree, Ino, &InodeRec),
    b: (&Tree, Ino, &InodeRec),
) -> Result<bool> {
    let ((ta, ia, ra), (tb, ib, rb)) = (a, b);
    if ra.kind != rb.kind || ra.perm != rb.perm || ra.uid != rb.uid || ra.gid != rb.gid {
        return Ok(false);
    }
    if ra.kind == FileKind::Directory {
        return Ok(true); // a directory's content is its entries, each a path of its own
    }
    if ra.size != rb.size || ra.target != rb.target || ra.rdev != rb.rdev {
        return Ok(false);
    }
    if (ra.xattrs, rb.xattrs) != (0, 0)
        && tree::xattrs(store, &ta.rp, ia)? != tree::xattrs(store, &tb.rp, ib)?
    {
        return Ok(false);
    }
    if ra.kind != FileKind::RegularFile {
        return Ok(true);
    }
    // Same extents: the usual case (the same file, or one restored by a rollback).
    let ea = tree::extents(store, &ta.rp, ia, ra.data_gen, 0, ra.size)?;
    let eb = tree::extents(store, &tb.rp, ib, rb.data_gen, 0, rb.size)?;
    if ea == eb {
        return Ok(true);
    }
    // Else the bytes (the same content cut differently, e.g. copied back by hand).
    const STEP: u64 = 1 << 20;
    let mut off = 0u64;
    while off < ra.size {
        let n = (ra.size - off).min(STEP) as usize;
        if tree::read(store, &ta.rp, ia, ra, off, n)? != tree::read(store, &tb.rp, ib, rb, off, n)?
        {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Conflict {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApplyReport {
    pub snapshot: String,
    pub onto: String,
    pub applied: Vec<Change>,
    /// Paths the target changed too, left as the target has them.
    pub conflicts: Vec<Conflict>,
    /// With `force`: paths the target changed too, replaced by the snapshot's version.
    pub forced: Vec<Conflict>,
    pub bytes_copied: u64,
    /// The target's view number and the (directory node, name) of every path changed, for
    /// the caller to drop what the kernel caches of them. Not part of the answer (a
    /// decoded report has neither).
    #[serde(skip)]
    pub target_view: u32,
    #[serde(skip)]
    pub touched: Vec<(u64, Vec<u8>)>,
}

/// The changes a tracking snapshot made since it was created.
pub fn changes(store: &Store, fs: Option<&FsCore>, name: &str) -> Result<Vec<Change>> {
    let s = crate::snapshot::get(store, name)?;
    let rec = s
        .snapshot
        .clone()
        .ok_or_else(|| HistoryError::NotFound(name.into()))?;
    if rec.mode != SnapshotMode::RwTracking {
        return Err(HistoryError::Invalid(format!(
            "snapshot '{name}' is {}, not rw-tracking: its changes are not tracked",
            rec.mode.as_str()
        )));
    }
    if let Some(fs) = fs {
        fs.flush_container(s.id())?;
    }
    diff::diff(store, &Tree::base_of(store, &s, &rec), &Tree::of(&s))
}

fn target_tree(store: &Store, onto: &str) -> Result<Arc<ContainerInfo>> {
    let reg = store.registry();
    if let Some(s) = reg.snapshot_by_name(onto) {
        if s.read_only {
            return Err(HistoryError::Invalid(format!(
                "snapshot '{onto}' is read-only; apply onto a container or a rw snapshot"
            )));
        }
        return Ok(s);
    }
    reg.by_name(onto)
        .ok_or_else(|| HistoryError::NotFound(format!("no container or snapshot named '{onto}'")))
}

fn root_node(t: &ContainerInfo) -> u64 {
    NodeRef::Tree {
        view: t.view,
        ino: t.root(),
    }
    .encode()
}

/// The node of a path's parent directory and the last name.
fn parent_of(fs: &FsCore, root: u64, path: &str) -> Result<(u64, Vec<u8>)> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (last, dirs) = parts
        .split_last()
        .ok_or_else(|| HistoryError::Invalid(format!("bad path '{path}'")))?;
    let mut node = root;
    for d in dirs {
        node = fs.lookup(&Ctx::root(), node, d.as_bytes())?.node;
    }
    Ok((node, last.as_bytes().to_vec()))
}

fn node_of(fs: &FsCore, root: u64, path: &str) -> Result<u64> {
    let (p, name) = parent_of(fs, root, path)?;
    Ok(fs.lookup(&Ctx::root(), p, &name)?.node)
}

fn copy_attrs(fs: &FsCore, from: u64, to: u64) -> Result<()> {
    let a = fs.getattr(from)?;
    fs.setattr(
        &Ctx::root(),
        to,
        SetAttr {
            mode: Some(a.perm as u32),
            uid: Some(a.uid),
            gid: Some(a.gid),
            mtime: Some(SetTime::At(a.mtime)),
            ..Default::default()
        },
    )?;
    Ok(())
}

/// Copies byte ranges of a regular file (all of it for `None`) and sets its size.
fn copy_data(
    fs: &FsCore,
    from: u64,
    to: u64,
    ranges: Option<&[(u64, u64)]>,
    size: u64,
) -> Result<u64> {
    let whole = [(0, size)];
    let ranges = ranges.unwrap_or(&whole);
    if ranges.as_ptr() == whole.as_ptr() {
        fs.setattr(
            &Ctx::root(),
            to,
            SetAttr {
                size: Some(0),
                ..Default::default()
            },
        )?;
    }
    let rfh = fs.open(&Ctx::root(), from, OpenFlags::read_only())?;
    let wfh = match fs.open(&Ctx::root(), to, OpenFlags::write_only()) {
        Ok(h) => h,
        Err(e) => {
            let _ = fs.release(rfh);
            return Err(e.into());
        }
    };
    let mut copied = 0u64;
    let mut result = Ok(());
    'ranges: for &(start, end) in ranges {
        let mut off = start;
        while off < end.min(size) {
            let n = (end.min(size) - off).min(1 << 20) as u32;
            let data = match fs.read(from, rfh, off, n) {
                Ok(d) => d,
                Err(e) => {
                    result = Err(e);
                    break 'ranges;
                }
            };
            if data.is_empty() {
                break;
            }
            if let Err(e) = fs.write(to, wfh, off, &data) {
                result = Err(e);
                break 'ranges;
            }
            off += data.len() as u64;
            copied += data.len() as u64;
        }
    }
    let _ = fs.release(rfh);
    let closed = fs.release(wfh);
    result?;
    closed?;
    fs.setattr(
        &Ctx::root(),
        to,
        SetAttr {
            size: Some(size),
            ..Default::default()
        },
    )?;
    Ok(copied)
}

/// Copies a node (and a directory's whole content) from `src` into `parent`/`name`.
fn copy_tree(fs: &FsCore, src: u64, parent: u64, name: &[u8]) -> Result<u64> {
    let a = fs.getattr(src)?;
    let ctx = Ctx::root();
    let mut copied = 0;
    let node = match a.kind {
        FileKind::Directory => {
            let d = fs.mkdir(&ctx, parent, name, a.perm as u32)?.node;
            let fh = fs.opendir(src)?;
            let mut kids = Vec::new();
            let r = fs.readdir(src, fh, 0, |e| {
                if e.name != b"." && e.name != b".." {
                    kids.push(e.name);
                }
                false
            });
            fs.releasedir(fh);
            r?;
            for k in kids {
                let child = fs.lookup(&ctx, src, &k)?.node;
                copied += copy_tree(fs, child, d, &k)?;
            }
            d
        }
        FileKind::Symlink => {
            let target = fs.readlink(src)?;
            fs.symlink(&ctx, parent, name, &target)?.node
        }
        FileKind::RegularFile => {
            let (attr, fh) =
                fs.create(&ctx, parent, name, a.perm as u32, OpenFlags::write_only())?;
            fs.release(fh)?;
            copied += copy_data(fs, src, attr.node, None, a.size)?;
            attr.node
        }
        _ => {
            fs.mknod(
                &ctx,
                parent,
                name,
                a.kind.mode_bits() | a.perm as u32,
                a.rdev,
            )?
            .node
        }
    };
    if a.kind != FileKind::Symlink {
        copy_attrs(fs, src, node)?;
    }
    Ok(copied)
}

fn remove_tree(fs: &FsCore, parent: u64, name: &[u8]) -> Result<()> {
    let ctx = Ctx::root();
    let a = fs.lookup(&ctx, parent, name)?;
    if a.kind == FileKind::Directory {
        let fh = fs.opendir(a.node)?;
        let mut kids = Vec::new();
        let r = fs.readdir(a.node, fh, 0, |e| {
            if e.name != b"." && e.name != b".." {
                kids.push(e.name);
            }
            false
        });
        fs.releasedir(fh);
        r?;
        for k in kids {
            remove_tree(fs, a.node, &k)?;
        }
        fs.rmdir(&ctx, parent, name)?;
    } else {
        fs.unlink(&ctx, parent, name)?;
    }
    Ok(())
}

/// Applies a tracking snapshot's changes onto `onto`. Conflicting paths are reported and
/// left alone, or with `force` replaced by the snapshot's version; every other change is
/// applied in either case.
pub fn apply(
    store: &Store,
    fs: &FsCore,
    snapshot: &str,
    onto: &str,
    force: bool,
) -> Result<ApplyReport> {
    let src = crate::snapshot::get(store, snapshot)?;
    let rec = src
        .snapshot
        .clone()
        .ok_or_else(|| HistoryError::NotFound(snapshot.into()))?;
    let target = target_tree(store, onto)?;
    if target.view == src.view {
        return Err(HistoryError::Invalid(format!(
            "cannot apply snapshot '{snapshot}' onto itself"
        )));
    }
    let list = changes(store, Some(fs), snapshot)?;
    fs.flush_container(target.id())?;
    let base = Tree::base_of(store, &src, &rec);
    let tgt = Tree::of(&target);
    let (src_root, tgt_root) = (root_node(&src), root_node(&target));
    let mut report = ApplyReport {
        snapshot: snapshot.into(),
        onto: onto.into(),
        applied: Vec::new(),
        conflicts: Vec::new(),
        forced: Vec::new(),
        bytes_copied: 0,
        target_view: target.view,
        touched: Vec::new(),
    };
    for ch in list {
        // A path is applied as is only where the target still holds what the base held.
        let b = diff::resolve_path(store, &base, &ch.path)?;
        let t = diff::resolve_path(store, &tgt, &ch.path)?;
        let unchanged = match (&b, &t) {
            (None, None) => true,
            (Some((bd, bi)), Some((td, ti))) => {
                same_for_conflicts(store, (&base, bd.ino, bi), (&tgt, td.ino, ti))?
            }
            _ => false,
        };
        // A removed-then-added pair at one path: the removal was checked; the addition
        // finds the target as the removal left it.
        let follows_removal = ch.kind == ChangeKind::Added
            && report
                .applied
                .last()
                .is_some_and(|l| l.path == ch.path && l.kind == ChangeKind::Removed);
        let conflict = (!unchanged && !follows_removal).then(|| Conflict {
            path: ch.path.clone(),
            reason: match (&b, &t) {
                (None, Some(_)) => "the target created this path too".into(),
                (Some(_), None) => "the target removed this path".into(),
                _ => "the target changed this path since the snapshot was taken".into(),
            },
        });
        let forced = match conflict {
            Some(c) if !force => {
                report.conflicts.push(c);
                continue;
            }
            Some(c) => {
                report.forced.push(c);
                true
            }
            None => false,
        };
        let (parent, name) = parent_of(fs, tgt_root, &ch.path)?;
        report.touched.push((parent, name.clone()));
        let present = fs.lookup(&Ctx::root(), parent, &name).is_ok();
        match ch.kind {
            ChangeKind::Removed => {
                if present {
                    remove_tree(fs, parent, &name)?;
                }
            }
            ChangeKind::Added => {
                if forced && present {
                    remove_tree(fs, parent, &name)?;
                }
                let from = node_of(fs, src_root, &ch.path)?;
                report.bytes_copied += copy_tree(fs, from, parent, &name)?;
            }
            ChangeKind::Modified => {
                let from = node_of(fs, src_root, &ch.path)?;
                let replace = forced
                    && (!present
                        || t.as_ref().is_some_and(|(_, ti)| {
                            ti.kind != FileKind::RegularFile || ch.file_type != "file"
                        }));
                if replace {
                    // The target's version is of another kind, or gone: take the
                    // snapshot's whole.
                    if present {
                        remove_tree(fs, parent, &name)?;
                    }
                    report.bytes_copied += copy_tree(fs, from, parent, &name)?;
                } else {
                    let to = fs.lookup(&Ctx::root(), parent, &name)?.node;
                    match &*ch.file_type {
                        "file" => {
                            // Over a changed target only whole files are exact.
                            let ranges = if forced { None } else { ch.ranges.as_deref() };
                            report.bytes_copied += copy_data(fs, from, to, ranges, ch.size_after)?;
                        }
                        "symlink" | "special" => {
                            remove_tree(fs, parent, &name)?;
                            report.bytes_copied += copy_tree(fs, from, parent, &name)?;
                        }
                        _ => {}
                    }
                    if ch.file_type != "symlink" {
                        let to = fs.lookup(&Ctx::root(), parent, &name)?.node;
                        copy_attrs(fs, from, to)?;
                    }
                }
            }
        }
        report.applied.push(ch);
    }
    fs.flush_container(target.id())?;
    log::info!(
        "applied snapshot '{snapshot}' onto '{onto}': {} changes, {} conflicts left alone, {} forced",
        report.applied.len(),
        report.conflicts.len(),
        report.forced.len()
    );
    Ok(report)
}
