//! Reads of committed trees, for the crates that compare, name and count files (history
//! diffs, fsck, rollback): inodes, directory entries, extents and extended attributes of a
//! tree at a [`ReadPoint`], decoded. No buffered writes are seen (callers flush first).
//!
//! Every record that does not decode is a [`KvError::Corrupt`] naming the record.

use crate::ids::Ino;
use crate::keys;
use crate::kv::{Cf, KvError};
use crate::mvcc::{self, ReadPoint};
use crate::records::{DirentRec, ExtentRec, FileKind, InodeRec, TreeCounters};
use crate::store::Store;
use std::collections::{BTreeMap, HashSet};

fn corrupt(what: String, e: impl std::fmt::Display) -> KvError {
    KvError::Corrupt(format!("{what}: {e}"))
}

/// An inode as the tree has it (`None`: no such inode there).
pub fn inode(store: &Store, rp: &ReadPoint, ino: Ino) -> Result<Option<InodeRec>, KvError> {
    match mvcc::get_live(&**store.kv(), Cf::Inodes, rp, ino, &[])? {
        Some(raw) => InodeRec::decode(&raw)
            .map(Some)
            .map_err(|e| corrupt(format!("inode {ino} of branch {}", rp.branch()), e)),
        None => Ok(None),
    }
}

/// One entry of a directory.
pub fn dirent(
    store: &Store,
    rp: &ReadPoint,
    dir: Ino,
    name: &[u8],
) -> Result<Option<DirentRec>, KvError> {
    let suffix = keys::name_suffix(name);
    match mvcc::get_live(&**store.kv(), Cf::Dirents, rp, dir, &suffix)? {
        Some(raw) => DirentRec::decode(&raw).map(Some).map_err(|e| {
            corrupt(
                format!(
                    "entry '{}' of directory {dir}",
                    String::from_utf8_lossy(name)
                ),
                e,
            )
        }),
        None => Ok(None),
    }
}

/// Every entry of a directory, by name.
pub fn entries(
    store: &Store,
    rp: &ReadPoint,
    dir: Ino,
) -> Result<BTreeMap<Vec<u8>, DirentRec>, KvError> {
    mvcc::scan_decoded(&**store.kv(), Cf::Dirents, rp, dir, &[], None, |it| {
        let name = keys::name_from_suffix(it.suffix)?.to_vec();
        Ok((name, DirentRec::decode(it.payload)?))
    })?
    .map_err(|e| corrupt(format!("directory {dir}"), e))
}

/// Extended attributes of an inode, by name.
pub fn xattrs(
    store: &Store,
    rp: &ReadPoint,
    ino: Ino,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, KvError> {
    mvcc::scan_decoded(&**store.kv(), Cf::Xattrs, rp, ino, &[], None, |it| {
        Ok((
            keys::name_from_suffix(it.suffix)?.to_vec(),
            it.payload.to_vec(),
        ))
    })?
    .map_err(|e| corrupt(format!("extended attributes of inode {ino}"), e))
}

/// The extents of data generation `gen` of a file overlapping [from, to), in offset order.
pub fn extents(
    store: &Store,
    rp: &ReadPoint,
    ino: Ino,
    gen: u64,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, ExtentRec)>, KvError> {
    let kv: &dyn crate::kv::Kv = &**store.kv();
    let max = store.config().chunking.max as u64;
    crate::extents::overlapping(&kv, rp, ino, gen, from, to, max)
}

/// `len` bytes of a file from `off` (holes and bytes past its size read as zeros).
pub fn read(
    store: &Store,
    rp: &ReadPoint,
    ino: Ino,
    rec: &InodeRec,
    off: u64,
    len: usize,
) -> Result<Vec<u8>, crate::chunks::ChunkError> {
    let exts = extents(store, rp, ino, rec.data_gen, off, off + len as u64)?;
    crate::extents::bytes(&store.chunks, &exts, off, len)
}

/// Counts a tree the way its counters do: distinct regular files reachable from `root`
/// (a hard-linked file once) and the sum of their sizes. O(entries).
pub fn count(store: &Store, rp: &ReadPoint, root: Ino) -> Result<TreeCounters, KvError> {
    let mut seen: HashSet<Ino> = HashSet::new();
    let mut t = TreeCounters::default();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for (_, d) in entries(store, rp, dir)? {
            match d.kind {
                FileKind::Directory => stack.push(d.ino),
                FileKind::RegularFile if seen.insert(d.ino) => {
                    if let Some(rec) = inode(store, rp, d.ino)? {
                        t.files += 1;
                        t.logical_bytes += rec.size;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(t)
}

/// A path of inode `ino` in the tree (a hard-linked file gets one of its paths), looking
/// at no more than `budget` entries; `None` if not found within it.
pub fn path_of(
    store: &Store,
    rp: &ReadPoint,
    root: Ino,
    ino: Ino,
    mut budget: usize,
) -> Result<Option<String>, KvError> {
    let mut stack = vec![(root, String::new())];
    while let Some((dir, path)) = stack.pop() {
        for (name, d) in entries(store, rp, dir)? {
            let p = format!("{path}/{}", String::from_utf8_lossy(&name));
            if d.ino == ino {
                return Ok(Some(p));
            }
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return Ok(None);
            }
            if d.kind == FileKind::Directory {
                stack.push((d.ino, p));
            }
        }
    }
    Ok(None)
}
