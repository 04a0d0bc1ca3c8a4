//! Deleting a container, or one branch of it (a read-write snapshot's), in bounded atomic
//! steps: first the extent records are released in batches (each batch drops its chunk
//! references in the same commit), then every other record goes at once.
//!
//! Invariant: a step either commits whole or not at all, so an interrupted delete resumes
//! where it stopped and never releases a reference twice.

use super::{ContainerError, ContainerRecord};
use crate::commit::Commit;
use crate::ids::{BranchId, ChunkId, ContainerId};
use crate::keys;
use crate::kv::Cf;
use crate::records::ExtentRec;
use std::collections::HashMap;

/// How far a purge got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeProgress {
    /// Released this many extent records; more remain.
    Released(u64),
    /// The container's records are gone.
    Done,
}

const PURGE_BATCH: usize = 20_000;

/// Releases up to a batch of the extent records of branch `b` (their chunk references
/// count on container `cid`) in commit `c`; returns how many it released (0: none left).
pub fn release_branch_extents(
    c: &mut Commit<'_>,
    chunks: &crate::chunks::ChunkStore,
    cid: ContainerId,
    b: BranchId,
) -> Result<u64, ContainerError> {
    let (lo, hi) = keys::branch_range(b);
    let mut it = c
        .txn
        .kv()
        .iter(Cf::Extents, Some(lo.clone()), Some(hi.clone()));
    it.seek(&lo);
    let mut deltas: HashMap<ChunkId, i64> = HashMap::new();
    let mut doomed = Vec::new();
    while it.valid() && doomed.len() < PURGE_BATCH {
        let bad = |e: String| ContainerError::BadRecord(format!("extent key {}", hex(it.key())), e);
        keys::ExtentKey::decode(it.key()).map_err(|e| bad(e.to_string()))?;
        if let Some(p) = crate::mvcc::decode_value(it.value()).map_err(|e| bad(e.to_string()))? {
            let e = ExtentRec::decode(p).map_err(|e| bad(e.to_string()))?;
            *deltas.entry(e.chunk).or_default() -= 1;
        }
        doomed.push(it.key().to_vec());
        it.next();
    }
    it.status()?;
    drop(it);
    let n = doomed.len() as u64;
    if n == 0 {
        return Ok(0);
    }
    for k in doomed {
        c.txn.delete(Cf::Extents, k);
    }
    chunks.add_refs(c, cid, &deltas)?;
    Ok(n)
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Removes every remaining record of branch `b` (after its extents were released).
pub fn drop_branch_records(c: &mut Commit<'_>, b: BranchId) {
    let (lo, hi) = keys::branch_range(b);
    for cf in [
        Cf::Inodes,
        Cf::Dirents,
        Cf::Xattrs,
        Cf::Orphans,
        Cf::InodesHead,
        Cf::DirentsHead,
        Cf::XattrsHead,
        Cf::ExtentSegments,
        Cf::TreeCounters,
    ] {
        c.txn.delete_range(cf, lo.clone(), hi.clone());
    }
    c.txn.delete(Cf::Branches, keys::branch(b));
    c.forget_tree_counters(b);
}

/// One atomic step of deleting a container: releases up to a batch of extent records of one
/// of its branches, or, once none remain, removes the remaining records.
pub fn purge_step(
    c: &mut Commit<'_>,
    chunks: &crate::chunks::ChunkStore,
    rec: &ContainerRecord,
    branches: &[BranchId],
) -> Result<PurgeProgress, ContainerError> {
    let cid = ContainerId(rec.id);
    for &b in branches {
        let n = release_branch_extents(c, chunks, cid, b)?;
        if n > 0 {
            return Ok(PurgeProgress::Released(n));
        }
    }
    for &b in branches {
        drop_branch_records(c, b);
    }
    let (lo, hi) = keys::container_refs_range(cid);
    c.txn.delete_range(Cf::ContainerRefs, lo, hi);
    // Bookmarks and snapshots of the container go with it.
    let (lo, hi) = keys::bookmarks_range(cid);
    c.txn.delete_range(Cf::Points, lo, hi);
    let (lo, hi) = keys::snapshots_range();
    for (k, v) in crate::kv::collect_range(c.txn.kv(), Cf::Points, lo, Some(hi))? {
        let s: super::SnapshotRecord = super::from_json(&v, &format!("snapshot {}", hex(&k)))?;
        if s.container == rec.id {
            c.txn.delete(Cf::Points, k);
        }
    }
    c.txn.delete(Cf::Containers, keys::container(cid));
    c.drop_container_counters(cid);
    Ok(PurgeProgress::Done)
}
