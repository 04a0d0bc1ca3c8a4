//! Storage statistics: what the containers hold and what it costs on disk.
//!
//! Owns the definitions of the figures `dedupfs stats` (and the metrics endpoint)
//! reports. Three kinds, shown apart because they answer different questions:
//!
//! - **Live** — what is there now: `files`, `logical_bytes` (sum of the sizes of the live
//!   regular files; what `du --apparent-size` of the container would say).
//! - **Held** — what the store keeps for a container or in all: `chunks`, `unique_bytes`
//!   (uncompressed bytes of the distinct chunks referenced by the live state *and* the
//!   history kept for time travel), `stored_bytes` (their pack bytes), `added_bytes` (pack
//!   bytes of the chunks this container stored first, as stored now). Store-wide also what
//!   it costs on disk: `physical_bytes` = packs + metadata + other files, each counted as
//!   `du` counts them (allocated blocks, `store::usage`), and `reclaimable_bytes` (dead
//!   chunks and garbage in packs, what GC can free).
//! - **Ingest** — what writes brought in, counted from `ingest.since` on (flows: deletes,
//!   pruning and GC never lower them): `written_bytes` applications wrote, `new_bytes`
//!   (uncompressed) and `new_stored_bytes` (pack bytes) of the chunks those writes stored
//!   for the first time. The ratios describe this flow: dedup = written / new, compression
//!   = new / new stored, reduction = written / new stored, savings = 1 − new stored /
//!   written. They cannot fall below 1 (savings below 0) because history is kept or
//!   files were deleted — only incompressible data's record headers can take compression
//!   a hair below 1. (Ratios of live bytes over held bytes could, and did: a container
//!   whose history outweighs its live data showed "dedup 0.4x" and "savings −300 %".)
//!
//! Counters are maintained by commits, so reading them costs nothing; the on-disk sizes
//! are measured when asked. History held only by history (no live tree reads it) is known
//! per container from GC's last plan (`history_held_bytes`), not maintained per commit.

use crate::chunks::Ingest;
use crate::containers::ContainerInfo;
use crate::ids::ContainerId;
use crate::records::TreeCounters;
use crate::store::{Store, StoreError};
use serde::{Deserialize, Deserializer, Serialize};

/// A ratio with nothing below it (all of it deduplicated) is infinite, which JSON writes as
/// `null`; read back, `null` is infinite again.
fn ratio_de<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// The ingest figures with their ratios.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestStats {
    /// Seconds since the epoch from which the figures count (0: nothing written yet).
    pub since: i64,
    pub written_bytes: u64,
    pub new_bytes: u64,
    pub new_stored_bytes: u64,
    #[serde(deserialize_with = "ratio_de")]
    pub dedup_ratio: f64,
    #[serde(deserialize_with = "ratio_de")]
    pub compression_ratio: f64,
    #[serde(deserialize_with = "ratio_de")]
    pub reduction_factor: f64,
    pub savings_pct: f64,
}

impl IngestStats {
    pub fn of(i: &Ingest) -> IngestStats {
        IngestStats {
            since: i.since,
            written_bytes: i.written_bytes,
            new_bytes: i.new_bytes,
            new_stored_bytes: i.new_stored_bytes,
            dedup_ratio: ratio(i.written_bytes, i.new_bytes),
            compression_ratio: ratio(i.new_bytes, i.new_stored_bytes),
            reduction_factor: ratio(i.written_bytes, i.new_stored_bytes),
            savings_pct: savings(i.written_bytes, i.new_stored_bytes),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerStats {
    pub name: String,
    pub id: u32,
    pub compression: String,
    /// Live.
    pub files: u64,
    pub logical_bytes: u64,
    /// Held (live and history).
    pub chunks: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
    pub added_bytes: u64,
    /// Pack bytes only this container's history references, as GC's last run found them
    /// (what retention could release); absent before GC ever ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_held_bytes: Option<u64>,
    /// Ingest.
    pub ingest: IngestStats,
    /// The retention lock's window now, if the container is locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<crate::containers::lock::LockWindow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoreStats {
    pub store: String,
    pub containers: Vec<ContainerStats>,
    /// Live.
    pub files: u64,
    pub logical_bytes: u64,
    /// Held: every chunk the index holds.
    pub chunks: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
    /// On disk, as `du` counts it.
    pub pack_bytes: u64,
    pub packs: u64,
    pub metadata_bytes: u64,
    pub other_bytes: u64,
    pub physical_bytes: u64,
    pub reclaimable_bytes: u64,
    /// Live bytes per byte on disk (below 1 when kept history and dead space outweigh
    /// the live data — not a dedup ratio).
    #[serde(deserialize_with = "ratio_de")]
    pub live_ratio: f64,
    /// Ingest (store-wide, deleted containers' writes included).
    pub ingest: IngestStats,
    /// Whether the store takes changes: "ok", or "halted" after a failed sync.
    pub health: String,
    /// Why the store was halted (what failed, when), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
    /// A live-file counter went out of step since the store was opened (`fsck --repair`).
    pub counters_drifted: bool,
    /// The compliance clock retention locks are measured by, and the system clock.
    #[serde(default)]
    pub clock: crate::clock::ClockReading,
    /// Stores with packs in object storage: uploads, the local cache, the last checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteStats>,
}

/// The remote tier as `stats` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RemoteStats {
    #[serde(flatten)]
    pub tier: crate::pack::tier::TierStats,
    pub last_checkpoint: Option<crate::store::checkpoint::CheckpointRecord>,
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
    let gc = crate::reclaim::status(store)?;
    container_stats_with(store, id, &gc)
}

fn container_stats_with(
    store: &Store,
    id: ContainerId,
    gc: &crate::reclaim::GcStatus,
) -> Result<Option<ContainerStats>, StoreError> {
    let Some(ci) = store.registry().get(id) else {
        return Ok(None);
    };
    let c = store.committer.container_counters(id);
    let t = tree_counters(store, &ci)?;
    let history_held_bytes = (gc.runs > 0).then(|| {
        gc.history_held
            .iter()
            .find(|(n, _)| *n == ci.rec.name)
            .map(|x| x.1)
            .unwrap_or(0)
    });
    Ok(Some(ContainerStats {
        name: ci.rec.name.clone(),
        id: id.0,
        compression: ci.rec.settings.compression.to_string(),
        files: t.files,
        logical_bytes: t.logical_bytes,
        chunks: c.chunks,
        unique_bytes: c.unique_bytes,
        stored_bytes: c.stored_bytes,
        added_bytes: c.added_bytes,
        history_held_bytes,
        ingest: IngestStats::of(&c.ingest),
        lock: crate::containers::lock::window(store, &ci.rec)?,
    }))
}

pub fn store_stats(store: &Store) -> Result<StoreStats, StoreError> {
    let gc = crate::reclaim::status(store)?;
    let mut containers: Vec<ContainerStats> = Vec::new();
    for ci in store.registry().list() {
        containers.extend(container_stats_with(store, ci.id(), &gc)?);
    }
    let s = store.committer.store_counters();
    // Pack lengths (not allocation) against the index's stored bytes give the garbage.
    let (pack_len, pack_count) = store.pack_usage()?;
    let du = store.disk_usage()?;
    let logical: u64 = containers.iter().map(|c| c.logical_bytes).sum();
    let mut physical = du.total();
    let mut pack_bytes = du.packs;
    let remote = match store.tier() {
        None => None,
        Some(t) => {
            let tier = t.stats();
            // Packs count where they are kept (the bucket, or local until uploaded); the
            // cache holds copies.
            pack_bytes = pack_len;
            physical = pack_len + du.metadata + du.other.saturating_sub(tier.cache.used);
            Some(RemoteStats {
                tier,
                last_checkpoint: crate::store::checkpoint::last(store)?,
            })
        }
    };
    Ok(StoreStats {
        store: store.root().display().to_string(),
        logical_bytes: logical,
        files: containers.iter().map(|c| c.files).sum(),
        containers,
        chunks: s.chunks,
        unique_bytes: s.raw_bytes,
        stored_bytes: s.stored_bytes,
        pack_bytes,
        packs: pack_count,
        metadata_bytes: du.metadata,
        other_bytes: du.other,
        physical_bytes: physical,
        reclaimable_bytes: s.dead_stored_bytes
            + pack_len.saturating_sub(s.stored_bytes + pack_count * crate::pack::PACK_HEADER_LEN),
        live_ratio: ratio(logical, physical),
        ingest: IngestStats::of(&s.ingest),
        health: if store.committer.halted().is_some() {
            "halted".into()
        } else {
            "ok".into()
        },
        halted: store.committer.halted().map(str::to_string),
        counters_drifted: store.committer.counters_drifted(),
        clock: store.committer.clock().reading(),
        remote,
    })
}
