//! dedupfs history: bookmarks, virtual snapshots, rollback, tracked changes and retention.
//!
//! The core versions every metadata record and keeps a timeline from wall-clock time to
//! version (see ARCHITECTURE.md), so every operation here is a few records, never a copy:
//! - a bookmark names a version of a container ([`bookmark`]);
//! - a snapshot pins `(branch, version)` (read-only) or forks a new branch from it
//!   (read-write) ([`snapshot`]);
//! - a rollback forks the container's head from the target point and keeps the old head
//!   as a read-only snapshot ([`rollback`]);
//! - [`diff`] compares two trees of a container; [`apply`] replays what a tracking snapshot
//!   changed onto another tree, refusing conflicting paths;
//! - [`retention`] decides which history a container keeps and prunes the rest.
//!
//! Every function works on an open [`Store`]; those that must see buffered writes take the
//! mounted filesystem core when there is one.

pub mod apply;
pub mod bookmark;
pub mod diff;
pub mod retention;
pub mod rollback;
pub mod snapshot;

use dedupfs_core::containers::ContainerError;
use dedupfs_core::fs::FsError;
use dedupfs_core::kv::KvError;
use dedupfs_core::points::PointError;
use dedupfs_core::store::StoreError;
use thiserror::Error;

pub use dedupfs_core::store::Store;

#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Point(#[from] PointError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("filesystem: {0}")]
    Fs(#[from] FsError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Chunk(#[from] dedupfs_core::chunks::ChunkError),
    #[error(transparent)]
    Replica(#[from] dedupfs_core::replica::ReplicaError),
}

pub type Result<T> = std::result::Result<T, HistoryError>;

/// Checks a bookmark or snapshot name: 1..=255 bytes, no '/' or NUL, not starting with '.',
/// and not readable as a time (it would shadow that time wherever times are accepted).
pub fn validate_point_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(HistoryError::Invalid(format!(
            "invalid name '{name}': {why}"
        )))
    };
    if name.is_empty() || name.len() > 255 {
        return bad("must be 1 to 255 bytes");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("contains '/' or NUL");
    }
    if name.starts_with('.') {
        return bad("names starting with '.' are reserved");
    }
    let now = dedupfs_core::records::Timestamp::now();
    if dedupfs_core::points::parse_time(name, now).is_some() {
        return bad("it reads as a time");
    }
    Ok(())
}

/// Serialises the operations that pick points of history (snapshot, rollback, bookmark)
/// with pruning, so a point chosen from history cannot be pruned while it is being pinned.
/// Taken before the registry and commit locks.
pub(crate) fn history_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn container(
    store: &Store,
    name: &str,
) -> Result<std::sync::Arc<dedupfs_core::containers::ContainerInfo>> {
    store
        .registry()
        .by_name(name)
        .ok_or_else(|| HistoryError::NotFound(format!("no container named '{name}'")))
}
