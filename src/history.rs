//! The stored history of a branch, for retention: every version of every record, and the
//! deletion of versions nobody can see any more.
//!
//! The retention policy (what is kept) lives in the snapshot crate; this module owns how
//! versions are found and removed, so that no other crate reads or writes keys. Deleting an
//! extent version releases its chunk reference in the same commit.
//!
//! Invariant: a [`Pruning`] commits its deletions and the reference changes they imply as
//! one batch, so a crash never leaves a version gone with its reference still counted (or
//! the reverse).

use crate::chunks::ChunkError;
use crate::ids::{BranchId, ChunkId, ContainerId, Ino, Version};
use crate::keys::{self, ExtentKey, VersionedKey};
use crate::kv::{Cf, KvError};
use crate::mvcc;
use crate::records::ExtentRec;
use crate::store::{Store, StoreError};
use std::collections::HashMap;

/// The versioned families retention prunes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Inodes,
    Dirents,
    Xattrs,
    Extents,
    TreeCounters,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Inodes,
        Family::Dirents,
        Family::Xattrs,
        Family::Extents,
        Family::TreeCounters,
    ];

    fn cf(self) -> Cf {
        match self {
            Family::Inodes => Cf::Inodes,
            Family::Dirents => Cf::Dirents,
            Family::Xattrs => Cf::Xattrs,
            Family::Extents => Cf::Extents,
            Family::TreeCounters => Cf::TreeCounters,
        }
    }
}

/// One stored version of a record.
#[derive(Clone, Debug)]
pub struct StoredVersion {
    pub version: Version,
    /// For extents: the extent this version holds (`None` for a deletion).
    pub extent: Option<ExtentRec>,
    key: Vec<u8>,
}

/// Every stored version of one record, newest first.
#[derive(Clone, Debug)]
pub struct RecordHistory {
    pub family: Family,
    pub branch: BranchId,
    pub ino: Ino,
    /// For extents: the data generation the record belongs to.
    pub extent_gen: Option<u64>,
    pub versions: Vec<StoredVersion>,
}

/// Visits every record of branch `b` in `family`, with all its versions.
pub fn walk_branch<E: From<KvError>>(
    store: &Store,
    family: Family,
    b: BranchId,
    mut f: impl FnMut(&RecordHistory) -> Result<(), E>,
) -> Result<(), E> {
    let cf = family.cf();
    let (lo, hi) = keys::branch_range(b);
    let mut it = store.kv().iter(cf, Some(lo.clone()), Some(hi));
    it.seek(&lo);
    let mut cur: Option<(Vec<u8>, RecordHistory)> = None;
    while it.valid() {
        let bad = |e: &dyn std::fmt::Display| {
            KvError::Corrupt(format!(
                "{} record {}: {e}",
                cf.name(),
                crate::containers::purge::hex(it.key())
            ))
        };
        let k = VersionedKey::decode(it.key()).map_err(|e| bad(&e))?;
        let record = VersionedKey::record_of(it.key())
            .map_err(|e| bad(&e))?
            .to_vec();
        let extent_gen = match family {
            Family::Extents => Some(ExtentKey::decode(it.key()).map_err(|e| bad(&e))?.gen),
            _ => None,
        };
        let extent = match (family, mvcc::decode_value(it.value()).map_err(|e| bad(&e))?) {
            (Family::Extents, Some(p)) => Some(ExtentRec::decode(p).map_err(|e| bad(&e))?),
            _ => None,
        };
        let v = StoredVersion {
            version: k.version,
            extent,
            key: it.key().to_vec(),
        };
        match &mut cur {
            Some((r, h)) if *r == record => h.versions.push(v),
            _ => {
                if let Some((_, h)) = cur.take() {
                    f(&h)?;
                }
                cur = Some((
                    record,
                    RecordHistory {
                        family,
                        branch: k.branch,
                        ino: k.ino,
                        extent_gen,
                        versions: vec![v],
                    },
                ));
            }
        }
        it.next();
    }
    it.status()?;
    if let Some((_, h)) = cur {
        f(&h)?;
    }
    Ok(())
}

/// Versions to delete, committed in batches, for a prune that keeps every state from
/// `cutoff - 1` on (its plan; see `snapshot::retention`).
pub struct Pruning {
    deletes: Vec<(Cf, Vec<u8>)>,
    deltas: HashMap<ChunkId, i64>,
    cutoff: Version,
    /// The newest version collected.
    newest: Version,
}

impl Pruning {
    pub fn new(cutoff: Version) -> Pruning {
        Pruning {
            deletes: Vec::new(),
            deltas: HashMap::new(),
            cutoff,
            newest: Version(0),
        }
    }

    /// Deletes `v` of `rec` with the next commit; an extent version releases its chunk.
    pub fn drop_version(&mut self, rec: &RecordHistory, v: &StoredVersion) {
        if let Some(e) = v.extent {
            *self.deltas.entry(e.chunk).or_default() -= 1;
        }
        self.deletes.push((rec.family.cf(), v.key.clone()));
        self.newest = self.newest.max(v.version);
    }

    pub fn len(&self) -> usize {
        self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty()
    }

    /// Commits what was collected (chunk references count on `container`) and starts over.
    pub fn commit(&mut self, store: &Store, container: ContainerId) -> Result<(), StoreError> {
        if self.deletes.is_empty() {
            return Ok(());
        }
        let (deletes, deltas, newest, cutoff) = (
            std::mem::take(&mut self.deletes),
            std::mem::take(&mut self.deltas),
            std::mem::replace(&mut self.newest, Version(0)),
            self.cutoff,
        );
        store.committer.commit(|c| {
            // The last line of defence of a retention lock, checked under the commit lock
            // (so no lock can be set between the check and the batch): whatever the caller
            // decided, a batch is refused if its plan cuts into the window — unless the
            // container's recorded floor already covers it (the prune raised its floor,
            // checking the lock, before deleting anything; a lock set after that protects
            // from that floor on). The window only moves forward, so a check that passed
            // stays true.
            if let Some(ci) = store.registry().get(container) {
                if let Some(w) = crate::containers::lock::window(store, &ci.rec)? {
                    let allowed = w.cutoff().max(Version(ci.rec.history_floor));
                    if cutoff > allowed || newest >= allowed {
                        return Err(crate::containers::ContainerError::Locked {
                            name: ci.rec.name.clone(),
                            message: format!(
                                "pruning stopped: its plan (everything before v{}, up to \
                                 v{}) cuts into locked history (the {} lock keeps every \
                                 version from v{} on)",
                                cutoff.0,
                                newest.0,
                                w.mode.as_str(),
                                w.floor
                            ),
                        }
                        .into());
                    }
                }
            }
            for (cf, k) in deletes {
                c.txn.delete(cf, k);
            }
            store
                .chunks
                .add_refs(c, container, &deltas)
                .map_err(|e: ChunkError| StoreError::from(e))
        })
    }
}
