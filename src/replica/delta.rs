//! What changed between two trees of a container, keyed by inode (so hard links, renames
//! and attribute-only changes travel exactly): the sender's half of replication.
//!
//! A tree is walked once from its root ([`TreeState::load`]); two walks are compared inode
//! by inode in number order, which makes the change list of a pair of points the same on
//! every run (a resume skips a counted prefix of it).
//!
//! The rule that keeps this cheap: a change to a file's data, a directory's entries or an
//! inode's extended attributes always rewrites the inode record (its ctime moves, as POSIX
//! requires), so an inode whose record is identical in both trees is unchanged and its
//! extents and entries are not read. `replicate --verify` checks the whole trees and would
//! report a change this rule missed.

use super::Result;
use crate::ids::Ino;
use crate::mvcc::ReadPoint;
use crate::records::{DirentRec, ExtentRec, FileKind, InodeRec};
use crate::store::Store;
use crate::tree;
use std::collections::{BTreeMap, VecDeque};

/// Largest number of entries or extents in one change (bigger ones are split).
pub const MAX_PER_CHANGE: usize = 4096;
/// Largest amount of new file data one change names (a big file is split into parts).
pub const MAX_EXTENT_BYTES: u64 = 4 << 20;

/// Every inode of a tree reachable from its root.
pub struct TreeState {
    pub rp: ReadPoint,
    pub root: Ino,
    pub inodes: BTreeMap<Ino, InodeRec>,
}

impl TreeState {
    pub fn load(store: &Store, rp: ReadPoint, root: Ino) -> Result<TreeState> {
        let mut inodes = BTreeMap::new();
        let mut queue = VecDeque::from([root]);
        while let Some(ino) = queue.pop_front() {
            if inodes.contains_key(&ino) {
                continue;
            }
            let Some(rec) = tree::inode(store, &rp, ino)? else {
                return Err(crate::kv::KvError::Corrupt(format!(
                    "inode {ino} is named by a directory but has no record"
                ))
                .into());
            };
            if rec.kind == FileKind::Directory {
                for d in tree::entries(store, &rp, ino)?.values() {
                    if !inodes.contains_key(&d.ino) {
                        queue.push_back(d.ino);
                    }
                }
            }
            inodes.insert(ino, rec);
        }
        Ok(TreeState { rp, root, inodes })
    }

    /// The empty tree (the base of a full transfer).
    pub fn empty(root: Ino) -> TreeState {
        TreeState {
            rp: ReadPoint::single(crate::ids::BranchId(0), crate::ids::Version(0)),
            root,
            inodes: BTreeMap::new(),
        }
    }

    /// Logical bytes of the tree's regular files (each hard-linked file once).
    pub fn logical_bytes(&self) -> u64 {
        self.inodes
            .values()
            .filter(|r| r.kind == FileKind::RegularFile)
            .map(|r| r.size)
            .sum()
    }
}

/// One change, with the source's chunk ids (the sender turns them into wire ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Inode {
        ino: Ino,
        rec: InodeRec,
        xattrs: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    Dirents {
        dir: Ino,
        changes: Vec<(Vec<u8>, Option<DirentRec>)>,
    },
    Extents {
        ino: Ino,
        gen: u64,
        changes: Vec<(u64, Option<ExtentRec>)>,
    },
    Gone {
        ino: Ino,
    },
}

fn diff_maps<K: Ord + Clone, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> Vec<(K, Option<V>)> {
    let mut out = Vec::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            out.push((k.clone(), Some(v.clone())));
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.push((k.clone(), None));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The changes turning `old` into `new`, in inode order, given one at a time to `emit`.
pub fn changes(
    store: &Store,
    old: &TreeState,
    new: &TreeState,
    emit: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<()> {
    let mut inos: Vec<Ino> = new.inodes.keys().copied().collect();
    inos.extend(old.inodes.keys().filter(|i| !new.inodes.contains_key(i)));
    inos.sort();
    for ino in inos {
        let Some(rec) = new.inodes.get(&ino) else {
            emit(Change::Gone { ino })?;
            continue;
        };
        let before = old.inodes.get(&ino);
        if before == Some(rec) {
            continue;
        }
        // An inode that changed kind is a different object under a reused number; the
        // store never reuses numbers, but be strict: everything of it is sent again.
        let before = before.filter(|b| b.kind == rec.kind);
        let xattrs = if rec.xattrs > 0 || before.is_some_and(|b| b.xattrs > 0) {
            let n = tree::xattrs(store, &new.rp, ino)?;
            let o = match before {
                Some(_) => tree::xattrs(store, &old.rp, ino)?,
                None => BTreeMap::new(),
            };
            diff_maps(&o, &n)
        } else {
            Vec::new()
        };
        emit(Change::Inode {
            ino,
            rec: rec.clone(),
            xattrs,
        })?;
        match rec.kind {
            FileKind::Directory => {
                let n = tree::entries(store, &new.rp, ino)?;
                let o = match before {
                    Some(_) => tree::entries(store, &old.rp, ino)?,
                    None => BTreeMap::new(),
                };
                for part in diff_maps(&o, &n).chunks(MAX_PER_CHANGE) {
                    emit(Change::Dirents {
                        dir: ino,
                        changes: part.to_vec(),
                    })?;
                }
            }
            FileKind::RegularFile => {
                let gen = rec.data_gen;
                let n: BTreeMap<u64, ExtentRec> =
                    tree::extents(store, &new.rp, ino, gen, 0, rec.size)?
                        .into_iter()
                        .collect();
                let o: BTreeMap<u64, ExtentRec> = match before {
                    Some(b) if b.data_gen == gen => {
                        tree::extents(store, &old.rp, ino, gen, 0, b.size)?
                            .into_iter()
                            .collect()
                    }
                    _ => BTreeMap::new(),
                };
                // Parts of at most MAX_EXTENT_BYTES of new data, so that one part (with its
                // chunks) always fits in a batch, whatever the file's size.
                let mut part = Vec::new();
                let mut bytes = 0u64;
                for (off, x) in diff_maps(&o, &n) {
                    bytes += x.map(|x| x.len as u64).unwrap_or(0);
                    part.push((off, x));
                    if part.len() >= MAX_PER_CHANGE || bytes >= MAX_EXTENT_BYTES {
                        emit(Change::Extents {
                            ino,
                            gen,
                            changes: std::mem::take(&mut part),
                        })?;
                        bytes = 0;
                    }
                }
                if !part.is_empty() {
                    emit(Change::Extents {
                        ino,
                        gen,
                        changes: part,
                    })?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}
