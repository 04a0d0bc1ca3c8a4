//! Storage statistics: what the containers hold and what it costs on disk.
//!
//! Owns the definitions of the figures `dedupfs stats` reports:
//! - logical bytes: sum of the sizes of live regular files;
//! - unique bytes: uncompressed bytes of the distinct chunks referenced (live data and the
//!   history kept for time travel);
//! - stored bytes: the pack bytes of those chunks (after compression, record headers
//!   included);
//! - physical bytes (store only): pack files on disk plus the metadata database, i.e. what
//!   `du` of the store would say, dead space included;
//! - ratios: dedup = logical / unique, compression = unique / stored, savings = 1 −
//!   physical / logical (for a container, 1 − added / logical, where added is what the
//!   container's writes added to the store).
//!
//! Counters are maintained by commits, so reading them costs nothing; the on-disk sizes
//! are measured when asked.

use crate::containers::ContainerInfo;
use crate::ids::ContainerId;
use crate::records::TreeCounters;
use crate::store::{Store, StoreError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ContainerStats {
    pub name: String,
    pub id: u32,
    pub compression: String,
    pub logical_bytes: u64,
    pub files: u64,
    pub chunks: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
    pub added_bytes: u64,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
    pub savings_pct: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoreStats {
    pub store: String,
    pub containers: Vec<ContainerStats>,
    pub logical_bytes: u64,
    pub files: u64,
    pub chunks: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
    pub pack_bytes: u64,
    pub packs: u64,
    pub metadata_bytes: u64,
    pub physical_bytes: u64,
    pub reclaimable_bytes: u64,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
    pub savings_pct: f64,
    pub reduction_factor: f64,
    /// Whether the store takes changes: "ok", or "halted" after a failed sync.
    pub health: String,
    /// Why the store was halted (what failed, when), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
    /// A live-file counter went out of step since the store was opened (`fsck --repair`).
    pub counters_drifted: bool,
}

/// The live files and logical bytes of a tree (a container's live tree or a snapshot).
/// A tree whose history predates the counters (an upgraded store rolled back past the
/// upgrade) has none recorded: it reads as zero until `fsck --repair` counts it.
pub fn tree_counters(store: &Store, ci: &ContainerInfo) -> Result<TreeCounters, StoreError> {
    Ok(tree_counters_at(store, &ci.read_point)?.unwrap_or_default())
}

/// The counters recorded for the tree at `rp`, if any were.
pub fn tree_counters_at(
    store: &Store,
    rp: &crate::mvcc::ReadPoint,
) -> Result<Option<TreeCounters>, StoreError> {
    Ok(crate::commit::tree_counters(&**store.kv(), rp)?)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        if a == 0 {
            1.0
        } else {
            f64::INFINITY
        }
    } else {
        a as f64 / b as f64
    }
}

fn savings(logical: u64, cost: u64) -> f64 {
    if logical == 0 {
        0.0
    } else {
        (1.0 - cost as f64 / logical as f64) * 100.0
    }
}

pub fn container_stats(
    store: &Store,
    id: ContainerId,
) -> Result<Option<ContainerStats>, StoreError> {
    let Some(ci) = store.registry().get(id) else {
        return Ok(None);
    };
    let c = store.committer.container_counters(id);
    let t = tree_counters(store, &ci)?;
    Ok(Some(ContainerStats {
        name: ci.rec.name.clone(),
        id: id.0,
        compression: ci.rec.settings.compression.to_string(),
        logical_bytes: t.logical_bytes,
        files: t.files,
        chunks: c.chunks,
        unique_bytes: c.unique_bytes,
        stored_bytes: c.stored_bytes,
        added_bytes: c.added_bytes,
        dedup_ratio: ratio(t.logical_bytes, c.unique_bytes),
        compression_ratio: ratio(c.unique_bytes, c.stored_bytes),
        savings_pct: savings(t.logical_bytes, c.added_bytes),
    }))
}

pub fn store_stats(store: &Store) -> Result<StoreStats, StoreError> {
    let mut containers: Vec<ContainerStats> = Vec::new();
    for ci in store.registry().list() {
        containers.extend(container_stats(store, ci.id())?);
    }
    let s = store.committer.store_counters();
    let (pack_bytes, packs) = store.pack_usage()?;
    let metadata_bytes = store.metadata_bytes();
    let logical: u64 = containers.iter().map(|c| c.logical_bytes).sum();
    let physical = pack_bytes + metadata_bytes;
    Ok(StoreStats {
        store: store.root().display().to_string(),
        logical_bytes: logical,
        files: containers.iter().map(|c| c.files).sum(),
        containers,
        chunks: s.chunks,
        unique_bytes: s.raw_bytes,
        stored_bytes: s.stored_bytes,
        pack_bytes,
        packs,
        metadata_bytes,
        physical_bytes: physical,
        reclaimable_bytes: s.dead_stored_bytes
            + pack_bytes.saturating_sub(s.stored_bytes + packs * crate::pack::PACK_HEADER_LEN),
        dedup_ratio: ratio(logical, s.raw_bytes),
        compression_ratio: ratio(s.raw_bytes, s.stored_bytes),
        savings_pct: savings(logical, physical),
        reduction_factor: ratio(logical, physical),
        health: if store.committer.halted().is_some() {
            "halted".into()
        } else {
            "ok".into()
        },
        halted: store.committer.halted().map(str::to_string),
        counters_drifted: store.committer.counters_drifted(),
    })
}
