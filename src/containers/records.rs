//! The records that describe containers and their history: settings, the container record,
//! branches, snapshots and bookmarks (stored as JSON values; their keys are in
//! [`crate::keys`]).
//!
//! Invariant: a field added here is `#[serde(default)]`, so records written by an older
//! build still decode; a record that does not decode is corruption, reported by name.

use crate::chunks::Compression;
use crate::ids::{BranchId, Version};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default)]
pub struct ContainerSettings {
    pub compression: Compression,
    /// The history retention policy (see the snapshot crate's `retention` module for the
    /// syntax); `None` keeps every change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// The retention lock (see [`super::lock`]); `None`: unlocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<super::lock::RetentionLock>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: u32,
    pub name: String,
    /// Inode of the container's root directory.
    pub root: u64,
    /// Branch holding the live tree.
    pub head: u64,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    pub created_version: u64,
    pub settings: ContainerSettings,
    #[serde(default)]
    pub deleting: bool,
    /// Branches that were the head before a rollback, oldest first: (branch, last version
    /// at which it was the head). Reading the container as of a version uses the branch
    /// that was its head then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prev_heads: Vec<(u64, u64)>,
    /// History older than this version was pruned by retention (except kept points).
    #[serde(default)]
    pub history_floor: u64,
    /// The time of `history_floor`, seconds since the epoch.
    #[serde(default)]
    pub history_floor_time: i64,
    /// The view number of the live tree after a rollback (0: the container id). A rollback
    /// gives the live tree new node ids, so the kernel cannot mix cached inodes of the
    /// tree before it with the tree after it.
    #[serde(default)]
    pub live_view: u32,
    /// Points below `history_floor` that retention tiers keep: (time, version), oldest
    /// first. A time below the floor reads as the newest of these at or before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_points: Vec<(i64, u64)>,
    /// Set while the container is a replica of another store's container: read-only
    /// except to `receive` (see [`crate::replica`]) until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaInfo>,
    /// What this container was a replica of before it was promoted (failover); a later
    /// replication back to that store (failback) starts from its last point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<ReplicaInfo>,
}

/// Where a replica container's contents come from, and how far they got.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// The source store's id (`StoreConfig::store_id`).
    pub source_store: String,
    pub source_container: String,
    /// The newest point published here (`None` until the first receive completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<ReplicatedPoint>,
}

/// One point both stores hold: its coordinates on the source and here.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicatedPoint {
    pub source_branch: u64,
    pub source_version: u64,
    /// The source's time of the point, seconds since the epoch.
    pub source_time: i64,
    pub branch: u64,
    pub version: u64,
}

impl ContainerRecord {
    pub fn view(&self) -> u32 {
        if self.live_view == 0 {
            self.id
        } else {
            self.live_view
        }
    }
    /// The oldest moment (seconds since the epoch) the container can be read as of: its
    /// retention floor once history was pruned, else its creation.
    pub fn window_start(&self) -> i64 {
        if self.history_floor > 0 {
            self.history_floor_time
        } else {
            self.created
        }
    }
    /// The branch that was the container's head at version `v`.
    pub fn branch_at(&self, v: Version) -> BranchId {
        for &(b, until) in &self.prev_heads {
            if v.0 <= until {
                return BranchId(b);
            }
        }
        BranchId(self.head)
    }
}

/// First view number of snapshots; below it, a view is a container id.
pub const SNAPSHOT_VIEW_BASE: u32 = 1 << 18;
/// First view number of time-travel views (allocated per mount, not stable).
pub const TIME_VIEW_BASE: u32 = 3 << 18;
/// One past the largest view number (node ids have 20 bits of view).
pub const VIEW_LIMIT: u32 = 1 << 20;

/// How a tree may be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    /// Read-only.
    Ro,
    /// Writable; its writes stay in the snapshot.
    Rw,
    /// Writable, and its changes can be listed and replayed elsewhere.
    RwTracking,
}

impl SnapshotMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Ro => "ro",
            SnapshotMode::Rw => "rw",
            SnapshotMode::RwTracking => "rw-tracking",
        }
    }
    pub fn parse(s: &str) -> Option<SnapshotMode> {
        match s {
            "ro" => Some(SnapshotMode::Ro),
            "rw" => Some(SnapshotMode::Rw),
            "rw-tracking" => Some(SnapshotMode::RwTracking),
            _ => None,
        }
    }
}

/// A virtual snapshot: a container's tree as of one version, pinned (read-only) or forked
/// into its own branch (read-write). Creating one writes only this record (and a branch
/// record), whatever the size of the tree.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: u32,
    pub name: String,
    pub container: u32,
    pub mode: SnapshotMode,
    /// The tree the snapshot shows at creation: (branch, version).
    pub base_branch: u64,
    pub base_version: u64,
    /// The snapshot's own branch (read-write modes).
    pub branch: Option<u64>,
    /// Creation time (seconds since the epoch) and version.
    pub created: i64,
    pub created_version: u64,
    /// The moment the snapshot shows, seconds since the epoch.
    pub at_time: i64,
    /// Why it exists, e.g. "user" or "before rollback to …".
    pub origin: String,
}

impl SnapshotRecord {
    pub fn view(&self) -> u32 {
        SNAPSHOT_VIEW_BASE + self.id
    }
}

/// A named consistency point of a container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BookmarkRecord {
    pub name: String,
    pub container: u32,
    /// `app`, `fs` or `user`.
    pub kind: String,
    pub version: u64,
    /// Seconds and nanoseconds since the epoch.
    pub time: i64,
    pub time_nsec: u32,
    /// The branch that was the head when it was taken.
    pub branch: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BranchRecord {
    pub id: u64,
    pub container: u32,
    /// (parent branch, fork version): reads fall through to the parent as of that version.
    pub parent: Option<(u64, u64)>,
    pub created_version: u64,
    pub created: i64,
    pub purpose: String,
}
