//! Bringing a store made by an older build to the current format, at open.
//!
//! Format 1 → 2: format 1 kept each tree's live files and logical bytes in the container's
//! counters (`files`, `logical_bytes`), not per branch, so they went wrong after a rollback.
//! The upgrade writes them as the tree counters of each container's head branch and of each
//! read-write snapshot's branch (format 1 kept a snapshot's under its view number), then
//! records format 2. A rollback to a point from before the upgrade finds no counters there
//! and counts that tree instead (`snapshot::rollback`). `fsck` recounts every live tree.
//!
//! Format 2 → 3: chunk index entries gain a frame slot (layout 2) and packs may hold
//! compression frames. Entries and records written before still decode and read as they
//! are, so the upgrade only records the new format (older builds must not open a store
//! that may hold frames).
//!
//! Format 3 → 4: the store and container counter records gain the ingest figures (absent
//! reads as zero: they count from the first write after the upgrade, and `ingest.since`
//! says from when), and the inode allocator's record holds a watermark up to a block
//! ahead of use. Nothing to rewrite; the new number keeps older builds out, which would
//! drop the ingest figures the next time they rewrote a counter record.
//!
//! Format 4 → 5: container settings may hold a retention lock, and the store keeps a
//! compliance clock (`crate::clock`), started from the system clock (never before the
//! newest commit) the first time a build that has it opens the store. Older builds would
//! ignore a lock — and prune or delete locked history — so the new number keeps them out.
//!
//! Format 5 → 6: container records may name a replica (`replica`, `promoted_from`), and
//! the meta family holds replication keys (pair keys, wire-chunk map, receive staging).
//! Records written before read as they are (no replica), so nothing is rewritten; the new
//! number keeps older builds out, which would write into a replica container as into any
//! other and drop its replica fields the next time they rewrote the record.
//!
//! Invariant: the new records are committed and synced before `dedupfs.json` says 2, so an
//! interrupted upgrade is done again at the next open.

use super::{config, io_err, Store, StoreError};
use crate::containers::SNAPSHOT_VIEW_BASE;
use crate::ids::ContainerId;
use crate::keys::MetaKey;
use crate::kv::{Cf, KvError};
use crate::records::TreeCounters;

pub(super) fn to_current(store: &mut Store) -> Result<(), StoreError> {
    let from = store.config.format;
    if from == config::FORMAT_VERSION {
        return Ok(());
    }
    if from == 1 {
        tree_counters_from_v1(store)?;
    }
    store.sync()?;
    let mut cfg = store.config.clone();
    cfg.format = config::FORMAT_VERSION;
    config::write(&store.root, &cfg).map_err(io_err(&store.root))?;
    store.config = cfg;
    log::info!(
        "upgraded store {} from format {from} to {}",
        store.root.display(),
        config::FORMAT_VERSION
    );
    Ok(())
}

/// The `files` and `logical_bytes` a format-1 container counter record holds.
fn v1_counts(store: &Store, id: ContainerId) -> Result<Option<TreeCounters>, KvError> {
    let Some(raw) = store
        .kv
        .get(Cf::Meta, &MetaKey::ContainerCounters(id).encode())?
    else {
        return Ok(None);
    };
    #[derive(serde::Deserialize)]
    struct V1 {
        #[serde(default)]
        files: u64,
        #[serde(default)]
        logical_bytes: u64,
    }
    let v: V1 = serde_json::from_slice(&raw)
        .map_err(|e| KvError::Corrupt(format!("counters of container {id}: {e}")))?;
    Ok(Some(TreeCounters {
        files: v.files,
        logical_bytes: v.logical_bytes,
    }))
}

fn tree_counters_from_v1(store: &Store) -> Result<(), StoreError> {
    let reg = store.registry();
    let mut trees = Vec::new();
    for ci in reg.list() {
        trees.push((ci.read_point.clone(), v1_counts(store, ci.id())?));
    }
    for s in reg.snapshots() {
        let Some(rec) = &s.snapshot else { continue };
        if rec.branch.is_some() {
            trees.push((
                s.read_point.clone(),
                v1_counts(store, ContainerId(SNAPSHOT_VIEW_BASE + rec.id))?,
            ));
        }
    }
    store.committer.commit(|c| {
        for (rp, counts) in &trees {
            c.set_tree_counters(rp, counts.unwrap_or_default());
        }
        Ok::<_, StoreError>(())
    })
}
